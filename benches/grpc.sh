#!/usr/bin/env bash
# gRPC load: Gatehouse (`protocol: grpc`) vs nginx (`grpc_pass`), unary calls over h2c
# from a tonic client (benches/load/grpcload.rs) to a tonic upstream, on this machine, in
# one run, rounds interleaved. Prints medians and ratios to nginx.
#
#   benches/grpc.sh [ROUNDS] [SECONDS]        (defaults: 5 rounds of 10 s per target)
#   IN_FLIGHT=50: calls in flight at once (over 4 client connections)
#
# Like with like: one worker each (Gatehouse workers: 1, nginx worker_processes 1), access
# logs off, a kept-alive upstream connection (Gatehouse: one shared HTTP/2 connection;
# nginx: `keepalive` in the upstream block), the proxy pinned to CPU 0 and the load client +
# the upstream to CPU 1. CPU per call is the proxy's own utime+stime from /proc.
# Needs: apt-get install -y nginx-light python3
set -euo pipefail
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-10}
IN_FLIGHT=${IN_FLIGHT:-50}
scenarios=(grpc)
targets=(gatehouse nginx)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d /tmp/gatehouse-grpc.XXXXXX)
UP=18190
declare -A PORT=([gatehouse]=18191 [nginx]=18192)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# shellcheck source=load/common.sh
source "$here/load/common.sh"

for tool in nginx python3 taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y nginx-light" >&2; exit 2; }
done
(cd "$root" && cargo build --release --bin gatehouse -q)
LOADER=$(cd "$root" && cargo bench --bench grpcload --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("executable") and "grpcload" in m["executable"]]' | tail -1)

taskset -c 1 "$LOADER" server "127.0.0.1:$UP" & pids+=($!)

cat > "$work/gatehouse.yaml" <<CONF
listen: { http: "127.0.0.1:${PORT[gatehouse]}" }
access_log: off
workers: 1
timeouts: { idle: 300s }
services: { up: { endpoints: ["127.0.0.1:$UP"], protocol: grpc } }
default_service: up
CONF
taskset -c 0 "${GATEHOUSE_BIN:-$root/target/release/gatehouse}" run --config "$work/gatehouse.yaml" 2>"$work/gatehouse.log" & pids+=($!)
GH_PID=$!

mkdir -p "$work/ng"
cat > "$work/ng/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/ng/nginx.pid; error_log $work/ng/error.log;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:${PORT[nginx]} http2;
    location / { grpc_pass grpc://up; } } }
CONF
taskset -c 0 nginx -p "$work/ng" -c "$work/ng/nginx.conf" & pids+=($!)
NG_PID=$!
declare -A PID=([gatehouse]=$GH_PID [nginx]=$NG_PID)
for t in "${targets[@]}"; do wait_port "${PORT[$t]}"; done
wait_port "$UP"

applies() { true; }
# Prints "calls rate p99_ms errors" for one run against a target.
load() { taskset -c 1 "$LOADER" client "127.0.0.1:${PORT[$2]}" "$3" "$IN_FLIGHT"; }
per_op() { awk -v sec="$2" -v n="$3" 'BEGIN { printf "%.2f", n ? sec * 1e6 / n : 0 }'; }

# Warm up both (connections, pools).
for t in "${targets[@]}"; do load grpc "$t" 2 >/dev/null; done
echo "rounds=$ROUNDS seconds=$SECONDS_PER_RUN calls in flight=$IN_FLIGHT (proxy on CPU 0; client and upstream on CPU 1)"
run_rounds

echo
echo "Medians of $ROUNDS rounds; ratio = target / nginx (calls/s: higher is better; p99, CPU: lower is better)"
printf '| %-9s | %10s | %5s | %10s | %5s | %11s | %5s | %6s |\n' target "calls/s" ratio "p99 ms" ratio "CPU us/call" ratio errors
printf '|%s|\n' "-----------|------------|-------|------------|-------|-------------|-------|--------"
for t in "${targets[@]}"; do
  rps=$(col grpc "$t" 3); lat=$(col grpc "$t" 4); cpu=$(col grpc "$t" 5)
  printf '| %-9s | %10s | %5s | %10s | %5s | %11s | %5s | %6s |\n' "$t" \
    "$rps" "$(ratio "$rps" "$(col grpc nginx 3)")" "$lat" "$(ratio "$lat" "$(col grpc nginx 4)")" \
    "$cpu" "$(ratio "$cpu" "$(col grpc nginx 5)")" "$(errors_of grpc "$t")"
done
check_errors
