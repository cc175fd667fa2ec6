#!/usr/bin/env bash
# Load comparison: Gatehouse vs nginx vs HAProxy (vs no proxy), against the same upstream,
# on this machine, in one run, rounds interleaved. Prints medians and ratios to nginx.
#
#   benches/load.sh [ROUNDS] [SECONDS]        (defaults: 5 rounds of 10 s per target)
#   SCENARIOS="http https tls-handshake h2" TARGETS="direct gatehouse nginx haproxy"
#   CONNS=50 IDLE=2000
#   LIMITS=1: the route has a per-client rate and concurrency limit that never refuses
#   (Gatehouse `limit: { rps, connections }`, nginx `limit_req ... nodelay` + `limit_conn`),
#   to measure what checking them costs; HAProxy is left as it is.
#   AUTH=1: two more targets in the same rounds (http only), gh-auth (Gatehouse with
#   `auth: { basic }`) and ng-auth (nginx `auth_basic`), one apr1 user in one htpasswd file;
#   every request carries that user's Authorization header.
#   AFFINITY=1: two more targets in the same rounds (http only), gh-sticky (Gatehouse with
#   cookie affinity, `affinity: {}`) and ng-sticky (nginx `hash $cookie_INGRESSCOOKIE
#   consistent`, the nearest open-source nginx has); every request carries the cookie, as a
#   returning client's does, so the plain targets parse the same header.
#   UPSTREAM_TLS=1: two more targets (http only), gh-tlsup (Gatehouse, `protocol: https`)
#   and ng-tlsup (nginx `proxy_pass https://` with its session reuse), both to the same
#   upstream over TLS with a warm keep-alive pool, certificates not verified (both defaults).
#   H2UP=1: one more target (http only), gh-h2up: Gatehouse speaking HTTP/2 (h2c) to the
#   upstream, against the plain Gatehouse speaking HTTP/1.1 to it, for the same client load.
#
# Scenarios: http (keep-alive, wrk), https (keep-alive over TLS, wrk), tls-handshake (a new
# connection and full TLS handshake per request: wrk with Connection: close), h2 (HTTP/2
# over TLS, h2load, 10 streams per connection; h2load reports mean latency, not p99).
# Like with like: one worker each (Gatehouse workers: 1, nginx worker_processes 1, HAProxy
# nbthread 1), access logs off, upstream keep-alive pools on, the same ECDSA P-256
# certificate, the proxy pinned to CPU 0 and the load tool + the upstream to CPU 1. CPU per
# request is the proxy's own utime+stime from /proc.
# Needs: apt-get install -y wrk nginx-light haproxy nghttp2-client openssl python3
set -euo pipefail
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-10}
CONNS=${CONNS:-50}
IDLE=${IDLE:-2000}
read -r -a scenarios <<<"${SCENARIOS:-http https tls-handshake h2}"
read -r -a targets <<<"${TARGETS:-direct gatehouse nginx haproxy}"
COOKIE=()
if [ "${AFFINITY:-0}" = 1 ]; then
  targets+=(gh-sticky ng-sticky)
  COOKIE=(-H "Cookie: INGRESSCOOKIE=5f3a9c0e7d21b846")
fi
if [ "${UPSTREAM_TLS:-0}" = 1 ]; then
  targets+=(gh-tlsup ng-tlsup)
fi
if [ "${H2UP:-0}" = 1 ]; then
  targets+=(gh-h2up)
fi
if [ "${AUTH:-0}" = 1 ]; then
  targets+=(gh-auth ng-auth)
  COOKIE+=(-H "Authorization: Basic $(printf 'bench:bench-password' | base64)")
fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d /tmp/gatehouse-load.XXXXXX)
UP=18080 UP_TLS=18090 UP_H2=18091
declare -A PORT=([direct]=18080 [gatehouse]=18081 [nginx]=18082 [haproxy]=18083 [gh-sticky]=18084 [ng-sticky]=18085 [gh-auth]=18086 [ng-auth]=18087 [gh-tlsup]=18088 [ng-tlsup]=18089 [gh-h2up]=18092)
declare -A TLSPORT=([gatehouse]=18441 [nginx]=18442 [haproxy]=18443)
VHOST=bench.example.com
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# shellcheck source=load/common.sh
source "$here/load/common.sh"

for tool in wrk nginx haproxy h2load openssl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y wrk nginx-light haproxy nghttp2-client openssl" >&2; exit 2; }
done
(cd "$root" && cargo build --release --bin gatehouse -q)

# One certificate for all three proxies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$work/key.pem" -out "$work/cert.pem" -subj "/CN=$VHOST" \
  -addext "subjectAltName=DNS:$VHOST" -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/haproxy.pem"

mkdir -p "$work/up" "$work/ng"
# The upstream: nginx answering a fixed 100-byte body, on CPU 1 with the load tool.
cat > "$work/up/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/up/nginx.pid; error_log $work/up/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_session_cache shared:UP:10m;
  server { listen 127.0.0.1:$UP; listen 127.0.0.1:$UP_TLS ssl; listen 127.0.0.1:$UP_H2 http2;
    location / { return 200 "$(printf 'x%.0s' $(seq 1 100))"; } } }
CONF
taskset -c 1 nginx -p "$work/up" -c "$work/up/nginx.conf" & pids+=($!)

GH_LIMIT="" NG_LIMIT_ZONES="" NG_LIMITS=""
if [ "${LIMITS:-0}" = 1 ]; then
  GH_LIMIT="limit: { rps: 1000000, connections: 60000 }, "
  NG_LIMIT_ZONES="limit_req_zone \$binary_remote_addr zone=rps:10m rate=1000000r/s; limit_conn_zone \$binary_remote_addr zone=conn:10m;"
  NG_LIMITS="limit_req zone=rps burst=5000000 nodelay; limit_conn conn 60000;"
fi
cat > "$work/gatehouse.yaml" <<CONF
listen: { http: "127.0.0.1:${PORT[gatehouse]}", https: "127.0.0.1:${TLSPORT[gatehouse]}" }
access_log: off
workers: 1
timeouts: { idle: 300s }
tls: [{ cert: "$work/cert.pem", key: "$work/key.pem", default: true }]
services: { up: { endpoints: ["127.0.0.1:$UP"] } }
default_service: up
routes: [{ host: $VHOST, ${GH_LIMIT}paths: [{ path: /, service: up }] }]
CONF
taskset -c 0 "${GATEHOUSE_BIN:-$root/target/release/gatehouse}" run --config "$work/gatehouse.yaml" 2>"$work/gatehouse.log" & pids+=($!)
GH_PID=$!
GS_PID="" NS_PID=""
if [ "${AFFINITY:-0}" = 1 ]; then
  cat > "$work/gh-sticky.yaml" <<CONF
listen: { http: "127.0.0.1:${PORT[gh-sticky]}" }
access_log: off
workers: 1
timeouts: { idle: 300s }
services: { up: { endpoints: ["127.0.0.1:$UP"], affinity: {} } }
default_service: up
routes: [{ host: $VHOST, paths: [{ path: /, service: up }] }]
CONF
  taskset -c 0 "${GATEHOUSE_BIN:-$root/target/release/gatehouse}" run --config "$work/gh-sticky.yaml" 2>"$work/gh-sticky.log" & pids+=($!)
  GS_PID=$!
fi

cat > "$work/ng/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $work/ng/nginx.pid; error_log $work/ng/error.log;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
  ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  $NG_LIMIT_ZONES
  server { listen 127.0.0.1:${PORT[nginx]}; listen 127.0.0.1:${TLSPORT[nginx]} ssl http2; server_name $VHOST;
    location / { $NG_LIMITS proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Real-IP \$remote_addr;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Forwarded-Port \$server_port; } } }
CONF
taskset -c 0 nginx -p "$work/ng" -c "$work/ng/nginx.conf" & pids+=($!)
NG_PID=$!

# Another nginx like the one above (plain HTTP on target T's port, its own directory DIR),
# changed by the sed expressions given, started on CPU 0; prints its pid.
nginx_variant() {
  local dir=$1 t=$2; shift 2
  mkdir -p "$work/$dir"
  sed -e "s#$work/ng/#$work/$dir/#g" \
    -e "s#listen 127.0.0.1:${PORT[nginx]}; listen 127.0.0.1:${TLSPORT[nginx]} ssl http2;#listen 127.0.0.1:${PORT[$t]};#" \
    "$@" "$work/ng/nginx.conf" > "$work/$dir/nginx.conf"
  taskset -c 0 nginx -p "$work/$dir" -c "$work/$dir/nginx.conf" >/dev/null 2>&1 &
  echo $!
}
if [ "${AFFINITY:-0}" = 1 ]; then
  NS_PID=$(nginx_variant ns ng-sticky -e 's#upstream up { server#upstream up { hash $cookie_INGRESSCOOKIE consistent; server#')
  pids+=("$NS_PID")
fi

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 3s
  timeout client 300s
  timeout server 60s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:${PORT[haproxy]}
  bind 127.0.0.1:${TLSPORT[haproxy]} ssl crt $work/haproxy.pem alpn h2,http/1.1
  option forwardfor
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  default_backend be
backend be
  server up 127.0.0.1:$UP
CONF
taskset -c 0 haproxy -f "$work/haproxy.cfg" -db 2>"$work/haproxy.log" & pids+=($!)
HA_PID=$!
GA_PID="" NA_PID=""
if [ "${AUTH:-0}" = 1 ]; then
  echo "bench:$(openssl passwd -apr1 bench-password)" > "$work/htpasswd"
  # nginx's worker runs as an unprivileged user: it must be able to read the file.
  chmod 755 "$work" && chmod 644 "$work/htpasswd"
  cat > "$work/gh-auth.yaml" <<CONF
listen: { http: "127.0.0.1:${PORT[gh-auth]}" }
access_log: off
workers: 1
timeouts: { idle: 300s }
services: { up: { endpoints: ["127.0.0.1:$UP"] } }
routes: [{ host: $VHOST, auth: { basic: { htpasswd: "$work/htpasswd", realm: bench } }, paths: [{ path: /, service: up }] }]
CONF
  taskset -c 0 "${GATEHOUSE_BIN:-$root/target/release/gatehouse}" run --config "$work/gh-auth.yaml" 2>"$work/gh-auth.log" & pids+=($!)
  GA_PID=$!
  NA_PID=$(nginx_variant na ng-auth -e "s#location / {#location / { auth_basic bench; auth_basic_user_file $work/htpasswd;#")
  pids+=("$NA_PID")
fi
GT_PID="" NT_PID="" G2_PID=""
# A Gatehouse like the plain one on target T's port, its service `up` given SETTINGS
# (inside its braces); prints its pid.
gatehouse_variant() {
  local t=$1 settings=$2
  cat > "$work/$t.yaml" <<CONF
listen: { http: "127.0.0.1:${PORT[$t]}" }
access_log: off
workers: 1
timeouts: { idle: 300s }
services: { up: { $settings } }
default_service: up
routes: [{ host: $VHOST, paths: [{ path: /, service: up }] }]
CONF
  taskset -c 0 "${GATEHOUSE_BIN:-$root/target/release/gatehouse}" run --config "$work/$t.yaml" 2>"$work/$t.log" >/dev/null &
  echo $!
}
if [ "${UPSTREAM_TLS:-0}" = 1 ]; then
  GT_PID=$(gatehouse_variant gh-tlsup "endpoints: [\"127.0.0.1:$UP_TLS\"], protocol: https")
  pids+=("$GT_PID")
  NT_PID=$(nginx_variant nt ng-tlsup -e "s#server 127.0.0.1:$UP;#server 127.0.0.1:$UP_TLS;#" -e "s#proxy_pass http://up;#proxy_pass https://up; proxy_ssl_session_reuse on;#")
  pids+=("$NT_PID")
fi
if [ "${H2UP:-0}" = 1 ]; then
  G2_PID=$(gatehouse_variant gh-h2up "endpoints: [\"127.0.0.1:$UP_H2\"], protocol: h2c")
  pids+=("$G2_PID")
fi
declare -A PID=([direct]="" [gatehouse]=$GH_PID [nginx]=$NG_PID [haproxy]=$HA_PID [gh-sticky]=$GS_PID [ng-sticky]=$NS_PID [gh-auth]=$GA_PID [ng-auth]=$NA_PID [gh-tlsup]=$GT_PID [ng-tlsup]=$NT_PID [gh-h2up]=$G2_PID)

for t in "${targets[@]}"; do wait_port "${PORT[$t]}"; done
for p in "${TLSPORT[@]}"; do wait_port "$p"; done

to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }

# Errors in wrk's output: socket errors (connect, read, write, timeout) plus non-2xx/3xx
# answers; "?" when wrk printed no summary at all.
wrk_errors() {
  awk '/requests in/ { ok = 1 }
       /Socket errors:/ { gsub(",", ""); e += $4 + $6 + $8 + $10 }
       /Non-2xx or 3xx responses:/ { e += $5 }
       END { if (ok) print e + 0; else print "?" }'
}

# Prints "requests req/s latency_ms errors" for one run of a scenario against a target.
load() {
  local scenario=$1 t=$2 secs=$3 out
  case $scenario in
    http)
      out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${secs}s" --latency -H "Host: $VHOST" "${COOKIE[@]}" "http://127.0.0.1:${PORT[$t]}/") ;;
    https)
      out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${secs}s" --latency -H "Host: $VHOST" "https://127.0.0.1:${TLSPORT[$t]}/") ;;
    tls-handshake)
      out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${secs}s" --latency -H "Host: $VHOST" -H "Connection: close" "https://127.0.0.1:${TLSPORT[$t]}/") ;;
    h2)
      out=$(taskset -c 1 h2load -c"$CONNS" -m10 -D"$secs" "https://127.0.0.1:${TLSPORT[$t]}/" 2>&1)
      # Errors: every request that did not succeed (h2load's "failed" already includes
      # errors, timeouts and 4xx/5xx answers).
      awk '/^requests:/ { gsub(",", ""); n = $2; e = $2 - $8; seen = 1 }
        /finished in/ { gsub(",", ""); r = $4 } /time for request:/ { m = $5 } END {
        v = m + 0; if (m ~ /us$/) v /= 1000; else if (m ~ /ms$/) v += 0; else if (m ~ /s$/) v *= 1000
        printf "%s %s %.3f %s\n", n, r, v, seen ? e + 0 : "?" }' <<<"$out"
      return ;;
  esac
  echo "$(awk '/requests in/ {print $1}' <<<"$out") $(awk '/Requests\/sec/ {print $2}' <<<"$out") $(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")") $(wrk_errors <<<"$out")"
}

applies() { case $2 in direct | gh-sticky | ng-sticky | gh-auth | ng-auth | gh-tlsup | ng-tlsup | gh-h2up) [ "$1" = http ] ;; *) true ;; esac; }

# Idle connections first, on fresh processes: RSS growth per held keep-alive connection.
declare -A IDLE_KIB
for t in "${targets[@]}"; do
  case $t in direct | gh-sticky | ng-sticky | gh-auth | ng-auth | gh-tlsup | ng-tlsup | gh-h2up) continue ;; esac
  before=$(rss_kib "${PID[$t]}")
  coproc HOLD { taskset -c 1 python3 "$here/load/idle_conns.py" 127.0.0.1 "${PORT[$t]}" "$IDLE" "$VHOST"; }
  read -r _ n <&"${HOLD[0]}"
  sleep 1
  after=$(rss_kib "${PID[$t]}")
  IDLE_KIB[$t]=$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN { printf "%.2f", (a - b) / n }')
  exec {HOLD[1]}>&-
  wait "$HOLD_PID" 2>/dev/null || true
done

# Warm up every target (pools, caches, TLS session caches) before measuring.
for s in "${scenarios[@]}"; do for t in "${targets[@]}"; do applies "$s" "$t" && load "$s" "$t" 2 >/dev/null; done; done

echo "rounds=$ROUNDS seconds=$SECONDS_PER_RUN connections=$CONNS (proxy on CPU 0; load tool and upstream on CPU 1)"
# CPU per request, µs.
per_op() { awk -v sec="$2" -v n="$3" 'BEGIN { printf "%.2f", n ? sec * 1e6 / n : 0 }'; }
run_rounds

echo
echo "Medians of $ROUNDS rounds; ratio = target / nginx (req/s: higher is better; latency, CPU, RSS: lower is better)"
echo "latency: p99 (wrk) or mean (h2load, h2 rows)"
printf '| %-13s | %-9s | %10s | %5s | %10s | %5s | %10s | %5s | %6s |\n' scenario target "req/s" ratio "latency ms" ratio "CPU us/req" ratio errors
printf '|%s|\n' "---------------|-----------|------------|-------|------------|-------|------------|-------|--------"
for s in "${scenarios[@]}"; do
  for t in "${targets[@]}"; do
    applies "$s" "$t" || continue
    rps=$(col "$s" "$t" 3); lat=$(col "$s" "$t" 4); cpu=$(col "$s" "$t" 5)
    nrps=$(col "$s" nginx 3); nlat=$(col "$s" nginx 4); ncpu=$(col "$s" nginx 5)
    printf '| %-13s | %-9s | %10s | %5s | %10s | %5s | %10s | %5s | %6s |\n' "$s" "$t" \
      "$rps" "$(ratio "$rps" "$nrps")" "$lat" "$(ratio "$lat" "$nlat")" \
      "$( [ "$t" = direct ] && echo - || echo "$cpu")" "$( [ "$t" = direct ] && echo - || ratio "$cpu" "$ncpu")" \
      "$(errors_of "$s" "$t")"
  done
done
echo
printf '| %-9s | %13s | %5s |\n' target "KiB/idle conn" ratio
printf '|%s|\n' "-----------|---------------|-------"
for t in "${targets[@]}"; do
  [ -n "${IDLE_KIB[$t]:-}" ] || continue
  printf '| %-9s | %13s | %5s |\n' "$t" "${IDLE_KIB[$t]}" "$(ratio "${IDLE_KIB[$t]}" "${IDLE_KIB[nginx]:-}")"
done
if [ "${AUTH:-0}" = 1 ]; then
  echo
  echo "Basic auth on vs off, CPU us/req (medians, http): Gatehouse $(col http gh-auth 5) vs $(col http gatehouse 5) = $(ratio "$(col http gh-auth 5)" "$(col http gatehouse 5)"); nginx $(col http ng-auth 5) vs $(col http nginx 5) = $(ratio "$(col http ng-auth 5)" "$(col http nginx 5)"); Gatehouse auth / nginx auth = $(ratio "$(col http gh-auth 5)" "$(col http ng-auth 5)")"
fi
if [ "${UPSTREAM_TLS:-0}" = 1 ]; then
  echo
  echo "TLS to the upstream vs plain, CPU us/req (medians, http, warm pools): Gatehouse $(col http gh-tlsup 5) vs $(col http gatehouse 5) = $(ratio "$(col http gh-tlsup 5)" "$(col http gatehouse 5)"); nginx $(col http ng-tlsup 5) vs $(col http nginx 5) = $(ratio "$(col http ng-tlsup 5)" "$(col http nginx 5)"); Gatehouse / nginx over TLS = $(ratio "$(col http gh-tlsup 5)" "$(col http ng-tlsup 5)")"
fi
if [ "${H2UP:-0}" = 1 ]; then
  echo
  echo "HTTP/2 vs HTTP/1.1 to the upstream (Gatehouse, medians, http): req/s $(col http gh-h2up 3) vs $(col http gatehouse 3) = $(ratio "$(col http gh-h2up 3)" "$(col http gatehouse 3)"); CPU us/req $(col http gh-h2up 5) vs $(col http gatehouse 5) = $(ratio "$(col http gh-h2up 5)" "$(col http gatehouse 5)")"
fi
if [ "${AFFINITY:-0}" = 1 ]; then
  echo
  echo "Affinity on vs off, CPU us/req (medians, http): Gatehouse $(col http gh-sticky 5) vs $(col http gatehouse 5) = $(ratio "$(col http gh-sticky 5)" "$(col http gatehouse 5)"); nginx $(col http ng-sticky 5) vs $(col http nginx 5) = $(ratio "$(col http ng-sticky 5)" "$(col http nginx 5)"); sticky Gatehouse / sticky nginx = $(ratio "$(col http gh-sticky 5)" "$(col http ng-sticky 5)")"
fi
check_errors
