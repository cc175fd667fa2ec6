#!/usr/bin/env bash
# L4 comparison: Gatehouse vs nginx (stream) vs HAProxy (TCP only; it has no UDP proxy) vs
# no proxy, on this machine, in one run, rounds interleaved. Prints medians and ratios to
# nginx.
#
#   benches/l4.sh [ROUNDS] [SECONDS]          (defaults: 5 rounds of 5 s per target)
#   SCENARIOS="throughput conn udp" TARGETS="direct gatehouse nginx haproxy" CONNS=50
#
# throughput: one TCP stream, iperf3 through the proxy (Gbit/s; CPU per GiB moved).
# conn: new connections per second (connect, one byte there and back, close), CONNS at once.
# udp: request/response datagrams per second (32 bytes), CONNS clients each with its socket.
# Like with like: half-close passed through by both (nginx proxy_half_close on), one worker each (Gatehouse workers: 1, nginx worker_processes 1, HAProxy
# nbthread 1), logs off, the proxy pinned to CPU 0 and the load tool + upstreams to CPU 1.
# CPU is the proxy's own utime+stime from /proc.
# Needs: apt-get install -y nginx-light libnginx-mod-stream haproxy iperf3 python3
set -euo pipefail
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-5}
CONNS=${CONNS:-50}
read -r -a scenarios <<<"${SCENARIOS:-throughput conn udp}"
read -r -a targets <<<"${TARGETS:-direct gatehouse nginx haproxy}"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d /tmp/gatehouse-l4.XXXXXX)
IPERF=19200 ECHO_TCP=19201 ECHO_UDP=19202
# Per target: throughput port, conn port, udp port (direct = the upstreams themselves).
declare -A TP=([direct]=$IPERF [gatehouse]=19211 [nginx]=19221 [haproxy]=19231)
declare -A CP=([direct]=$ECHO_TCP [gatehouse]=19212 [nginx]=19222 [haproxy]=19232)
declare -A UP=([direct]=$ECHO_UDP [gatehouse]=19213 [nginx]=19223)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# shellcheck source=load/common.sh
source "$here/load/common.sh"

for tool in nginx haproxy iperf3 python3 taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y nginx-light libnginx-mod-stream haproxy iperf3" >&2; exit 2; }
done
STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
[ -f "$STREAM_MODULE" ] || { echo "missing nginx stream module: apt-get install -y libnginx-mod-stream" >&2; exit 2; }
(cd "$root" && cargo build --release --bin gatehouse -q)
LOADER=$(cd "$root" && cargo bench --bench l4load --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("executable") and "l4load" in m["executable"]]' | tail -1)

# Upstreams on CPU 1, with the load tools.
taskset -c 1 iperf3 -s -p $IPERF >/dev/null 2>&1 & pids+=($!)
taskset -c 1 "$LOADER" echo-tcp 127.0.0.1:$ECHO_TCP & pids+=($!)
taskset -c 1 "$LOADER" echo-udp 127.0.0.1:$ECHO_UDP & pids+=($!)

cat > "$work/gatehouse.yaml" <<CONF
access_log: off
workers: 1
services:
  iperf: { endpoints: ["127.0.0.1:$IPERF"] }
  echo_tcp: { endpoints: ["127.0.0.1:$ECHO_TCP"] }
  echo_udp: { endpoints: ["127.0.0.1:$ECHO_UDP"] }
l4:
  - { listen: "127.0.0.1:${TP[gatehouse]}", protocol: tcp, service: iperf }
  - { listen: "127.0.0.1:${CP[gatehouse]}", protocol: tcp, service: echo_tcp }
  - { listen: "127.0.0.1:${UP[gatehouse]}", protocol: udp, service: echo_udp, idle: 30s }
CONF
taskset -c 0 "${GATEHOUSE_BIN:-$root/target/release/gatehouse}" run --config "$work/gatehouse.yaml" 2>"$work/gatehouse.log" & pids+=($!)
GH_PID=$!

mkdir -p "$work/ng"
cat > "$work/ng/nginx.conf" <<CONF
load_module $STREAM_MODULE;
worker_processes 1; daemon off; pid $work/ng/nginx.pid; error_log $work/ng/error.log;
events { worker_connections 16384; }
stream {
  # Half-close passes through, as in Gatehouse (nginx's default closes both sides at the first EOF).
  proxy_half_close on;
  server { listen 127.0.0.1:${TP[nginx]}; proxy_pass 127.0.0.1:$IPERF; }
  server { listen 127.0.0.1:${CP[nginx]}; proxy_pass 127.0.0.1:$ECHO_TCP; }
  server { listen 127.0.0.1:${UP[nginx]} udp; proxy_pass 127.0.0.1:$ECHO_UDP; proxy_timeout 30s; }
}
CONF
taskset -c 0 nginx -p "$work/ng" -c "$work/ng/nginx.conf" & pids+=($!)
NG_PID=$!

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 3s
  timeout client 600s
  timeout server 600s
listen iperf
  bind 127.0.0.1:${TP[haproxy]}
  server up 127.0.0.1:$IPERF
listen echo
  bind 127.0.0.1:${CP[haproxy]}
  server up 127.0.0.1:$ECHO_TCP
CONF
taskset -c 0 haproxy -f "$work/haproxy.cfg" -db 2>"$work/haproxy.log" & pids+=($!)
HA_PID=$!
declare -A PID=([direct]="" [gatehouse]=$GH_PID [nginx]=$NG_PID [haproxy]=$HA_PID)

for t in "${targets[@]}"; do wait_port "${TP[$t]}"; wait_port "${CP[$t]}"; done


applies() { [ "$1" != udp ] || [ -n "${UP[$2]:-}" ]; }

# Prints "operations rate p99_ms errors" (throughput: "bytes Gbit/s - errors", where an
# iperf3 run that reports an error counts one).
load() {
  local scenario=$1 t=$2 secs=$3
  case $scenario in
    throughput)
      taskset -c 1 iperf3 -c 127.0.0.1 -p "${TP[$t]}" -t "$secs" -J 2>/dev/null | python3 -c '
import json, sys
try:
    report = json.load(sys.stdin)
    e = report["end"]["sum_received"]
    print(int(e["bytes"]), "%.2f" % (e["bits_per_second"] / 1e9), "-", 1 if report.get("error") else 0)
except (ValueError, KeyError):
    print(0, 0, "-", "?")' ;;
    conn) taskset -c 1 "$LOADER" conn "127.0.0.1:${CP[$t]}" "$secs" "$CONNS" | awk '{print $1, $2, $3, $4}' ;;
    udp) taskset -c 1 "$LOADER" udp "127.0.0.1:${UP[$t]}" "$secs" "$CONNS" | awk '{print $1, $2, $3, $4}' ;;
  esac
}

for s in "${scenarios[@]}"; do for t in "${targets[@]}"; do applies "$s" "$t" && load "$s" "$t" 1 >/dev/null; done; done

echo "rounds=$ROUNDS seconds=$SECONDS_PER_RUN clients=$CONNS (proxy on CPU 0; load tool and upstreams on CPU 1)"
# CPU per operation: ms per GiB moved (throughput), µs per connection or datagram pair.
per_op() {
  awk -v sec="$2" -v n="$3" -v s="$1" 'BEGIN {
    if (!n) { print 0; exit }
    if (s == "throughput") printf "%.1f", sec * 1000 / (n / 1073741824); else printf "%.2f", sec * 1e6 / n }'
}
run_rounds

echo
echo "Medians of $ROUNDS rounds; ratio = target / nginx. Rate: Gbit/s (throughput), connections/s (conn), request/response pairs/s (udp)."
echo "CPU: the proxy's ms per GiB moved (throughput) or µs per connection / per datagram pair."
printf '| %-10s | %-9s | %10s | %5s | %8s | %5s | %10s | %5s | %6s |\n' scenario target rate ratio "p99 ms" ratio CPU ratio errors
printf '|%s|\n' "------------|-----------|------------|-------|----------|-------|------------|-------|--------"
for s in "${scenarios[@]}"; do
  for t in "${targets[@]}"; do
    applies "$s" "$t" || continue
    rate=$(col "$s" "$t" 3); p99=$(col "$s" "$t" 4); cpu=$(col "$s" "$t" 5)
    printf '| %-10s | %-9s | %10s | %5s | %8s | %5s | %10s | %5s | %6s |\n' "$s" "$t" \
      "$rate" "$(ratio "$rate" "$(col "$s" nginx 3)")" "$p99" "$(ratio "$p99" "$(col "$s" nginx 4)")" \
      "$( [ "$t" = direct ] && echo - || echo "$cpu")" "$( [ "$t" = direct ] && echo - || ratio "$cpu" "$(col "$s" nginx 5)")" \
      "$(errors_of "$s" "$t")"
  done
done
check_errors
