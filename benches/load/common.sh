# Helpers shared by benches/load.sh and benches/l4.sh (sourced, not run).

# Waits for a TCP port on 127.0.0.1 to accept connections.
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# A process and its children (nginx: master + worker).
tree() { echo "$1" $(pgrep -P "$1" || true); }
# utime+stime ticks of a process tree (0 for no process: the "direct" baseline).
cpu_ticks() { local t=0; [ -z "$1" ] && { echo 0; return; }; for p in $(tree "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
rss_kib() { local t=0; for p in $(tree "$1"); do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo $t; }
HZ=$(getconf CLK_TCK)

# Median of numbers on stdin; column C of the results rows for scenario S and target T.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t { print $c }' "$work/results" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "" || a == "-") print "-"; else printf "%.2f", a / b }'; }

# The measurement loop both scripts share: ROUNDS interleaved rounds of every scenario and
# target for which `applies S T` holds. The script defines `load S T SECS` (prints
# "operations rate latency") and `per_op S CPU_SECONDS OPERATIONS` (prints the CPU figure);
# each run's "S T rate latency cpu" goes to $work/results for `col`.
run_rounds() {
  local r s t before after ops rate lat cpu
  for r in $(seq 1 "$ROUNDS"); do
    for s in "${scenarios[@]}"; do
      for t in "${targets[@]}"; do
        applies "$s" "$t" || continue
        before=$(cpu_ticks "${PID[$t]}")
        read -r ops rate lat < <(load "$s" "$t" "$SECONDS_PER_RUN")
        after=$(cpu_ticks "${PID[$t]}")
        cpu=$(per_op "$s" "$(awk -v d=$((after - before)) -v hz="$HZ" 'BEGIN { print d / hz }')" "$ops")
        echo "$s $t $rate $lat $cpu" >> "$work/results"
        printf 'round %d %-13s %-9s %12s  latency %8s ms  cpu %8s\n' "$r" "$s" "$t" "$rate" "$lat" "$cpu"
      done
    done
  done
}
