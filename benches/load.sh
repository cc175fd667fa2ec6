#!/usr/bin/env bash
# Load comparison: Gatehouse vs nginx vs HAProxy vs no proxy, against the same upstream,
# on this machine, in one run, rounds interleaved. Prints medians and ratios to nginx.
#
#   benches/load.sh [ROUNDS] [SECONDS]        (defaults: 5 rounds of 10 s per target)
#   CONNS=50 IDLE=2000 benches/load.sh
#
# Like with like: one worker each (Gatehouse workers: 1, nginx worker_processes 1, HAProxy
# nbthread 1), access logs off, upstream keep-alive pools on, the proxy pinned to CPU 0 and
# wrk + the upstream to CPU 1. CPU per request is the proxy's own utime+stime from /proc.
# Needs: wrk, nginx, haproxy, python3 (apt-get install -y wrk nginx-light haproxy).
set -euo pipefail
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-10}
CONNS=${CONNS:-50}
IDLE=${IDLE:-2000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d /tmp/gatehouse-load.XXXXXX)
UP=18080 GH=18081 NG=18082 HA=18083
VHOST=bench.example.com
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

for tool in wrk nginx haproxy python3 taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk nginx-light haproxy" >&2; exit 2; }
done
(cd "$root" && cargo build --release --bin gatehouse -q)

mkdir -p "$work/up" "$work/ng"
# The upstream: nginx answering a fixed 100-byte body, on CPU 1 with the load tool.
cat > "$work/up/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/up/nginx.pid; error_log $work/up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server { listen 127.0.0.1:$UP; location / { return 200 "$(printf 'x%.0s' $(seq 1 100))"; } } }
CONF
taskset -c 1 nginx -p "$work/up" -c "$work/up/nginx.conf" & pids+=($!)

cat > "$work/gatehouse.yaml" <<CONF
listen: { http: "127.0.0.1:$GH" }
access_log: off
workers: 1
timeouts: { idle: 300s }
services: { up: { endpoints: ["127.0.0.1:$UP"] } }
routes: [{ host: $VHOST, paths: [{ path: /, service: up }] }]
CONF
taskset -c 0 "${GATEHOUSE_BIN:-$root/target/release/gatehouse}" run --config "$work/gatehouse.yaml" 2>"$work/gatehouse.log" & pids+=($!)
GH_PID=$!

cat > "$work/ng/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/ng/nginx.pid; error_log $work/ng/error.log;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:$NG; server_name $VHOST;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Forwarded-Port \$server_port; } } }
CONF
taskset -c 0 nginx -p "$work/ng" -c "$work/ng/nginx.conf" & pids+=($!)
NG_PID=$!

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 3s
  timeout client 300s
  timeout server 60s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HA
  option forwardfor
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  default_backend be
backend be
  server up 127.0.0.1:$UP
CONF
taskset -c 0 haproxy -f "$work/haproxy.cfg" -db & pids+=($!)
HA_PID=$!

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
for p in $UP $GH $NG $HA; do wait_port "$p"; done

# Process tree CPU ticks and RSS (nginx: master + worker).
tree() { echo "$1" $(pgrep -P "$1" || true); }
cpu_ticks() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
rss_kib() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
HZ=$(getconf CLK_TCK)

declare -A PORT=([direct]=$UP [gatehouse]=$GH [nginx]=$NG [haproxy]=$HA)
declare -A PID=([direct]="" [gatehouse]=$GH_PID [nginx]=$NG_PID [haproxy]=$HA_PID)
read -r -a targets <<<"${TARGETS:-direct gatehouse nginx haproxy}"

to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }

# Warm up every target (pools, caches) before measuring.
for t in "${targets[@]}"; do taskset -c 1 wrk -t1 -c"$CONNS" -d2s -H "Host: $VHOST" "http://127.0.0.1:${PORT[$t]}/" >/dev/null; done

echo "rounds=$ROUNDS seconds=$SECONDS_PER_RUN connections=$CONNS (proxy on CPU 0; wrk and upstream on CPU 1)"
for r in $(seq 1 "$ROUNDS"); do
  for t in "${targets[@]}"; do
    before=0; [ -n "${PID[$t]}" ] && before=$(cpu_ticks "${PID[$t]}")
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency -H "Host: $VHOST" "http://127.0.0.1:${PORT[$t]}/")
    after=0; [ -n "${PID[$t]}" ] && after=$(cpu_ticks "${PID[$t]}")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    cpu_us=$(awk -v d=$((after - before)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", n ? d / hz * 1e6 / n : 0 }')
    echo "$t $rps $p99 $cpu_us" >> "$work/results"
    printf 'round %d %-9s %10s req/s  p99 %8s ms  cpu %6s us/req %s\n' "$r" "$t" "$rps" "$p99" "$cpu_us" "$errs"
  done
done

# Idle connections: RSS growth per held keep-alive connection.
declare -A IDLE_KIB
for t in "${targets[@]}"; do
  [ "$t" = direct ] && continue
  before=$(rss_kib "${PID[$t]}")
  coproc HOLD { taskset -c 1 python3 "$here/load/idle_conns.py" 127.0.0.1 "${PORT[$t]}" "$IDLE" "$VHOST"; }
  read -r ready n <&"${HOLD[0]}"
  sleep 1
  after=$(rss_kib "${PID[$t]}")
  IDLE_KIB[$t]=$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN { printf "%.2f", (a - b) / n }')
  exec {HOLD[1]}>&-
  wait "$HOLD_PID" 2>/dev/null || true
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v t="$1" -v c="$2" '$1 == t { print $c }' "$work/results" | median; }
declare -A RPS P99 CPU
for t in "${targets[@]}"; do RPS[$t]=$(col "$t" 2); P99[$t]=$(col "$t" 3); CPU[$t]=$(col "$t" 4); done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

echo
echo "Medians of $ROUNDS rounds; ratio = target / nginx (req/s: higher is better; p99, CPU, RSS: lower is better)"
printf '| %-9s | %10s | %5s | %9s | %5s | %11s | %5s | %13s | %5s |\n' target "req/s" ratio "p99 ms" ratio "CPU us/req" ratio "KiB/idle conn" ratio
printf '|%s|\n' "-----------|------------|-------|-----------|-------|-------------|-------|---------------|-------"
for t in "${targets[@]}"; do
  idle=${IDLE_KIB[$t]:--}
  printf '| %-9s | %10s | %5s | %9s | %5s | %11s | %5s | %13s | %5s |\n' "$t" \
    "${RPS[$t]}" "$(ratio "${RPS[$t]}" "${RPS[nginx]}")" \
    "${P99[$t]}" "$(ratio "${P99[$t]}" "${P99[nginx]}")" \
    "${CPU[$t]}" "$( [ "$t" = direct ] && echo - || ratio "${CPU[$t]}" "${CPU[nginx]}")" \
    "$idle" "$( [ "$idle" = - ] && echo - || ratio "$idle" "${IDLE_KIB[nginx]}")"
done
