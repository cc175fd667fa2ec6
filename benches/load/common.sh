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
# "operations rate latency errors": errors are failed or non-2xx operations, so a target
# that fails fast cannot pass for a fast one) and `per_op S CPU_SECONDS OPERATIONS` (prints
# the CPU figure); each run's "S T rate latency cpu errors" goes to $work/results for `col`.
run_rounds() {
  local r s t before after ops rate lat errs cpu
  for r in $(seq 1 "$ROUNDS"); do
    for s in "${scenarios[@]}"; do
      for t in "${targets[@]}"; do
        applies "$s" "$t" || continue
        before=$(cpu_ticks "${PID[$t]}")
        read -r ops rate lat errs < <(load "$s" "$t" "$SECONDS_PER_RUN")
        after=$(cpu_ticks "${PID[$t]}")
        cpu=$(per_op "$s" "$(awk -v d=$((after - before)) -v hz="$HZ" 'BEGIN { print d / hz }')" "$ops")
        echo "$s $t $rate $lat $cpu ${errs:-?}" >> "$work/results"
        printf 'round %d %-13s %-9s %12s  latency %8s ms  cpu %8s  errors %s\n' "$r" "$s" "$t" "$rate" "$lat" "$cpu" "${errs:-?}"
      done
    done
  done
}

# Sum of the errors column (6) for scenario S and target T over every round ("?" when a
# run's output could not be read).
errors_of() { awk -v s="$1" -v t="$2" '$1 == s && $2 == t { if ($6 == "?") u = 1; else n += $6 } END { print u ? "?" : n + 0 }' "$work/results"; }

# After the tables: every run must have succeeded, or the figures mean nothing. Prints
# which scenario and target failed, and exits 1.
check_errors() {
  local bad
  bad=$(awk '$6 == "?" || $6 > 0 { print "  " $1 " " $2 ": " $6 " errors in one run" }' "$work/results" | sort | uniq -c)
  if [ -n "$bad" ]; then
    echo
    echo "FAILED: some runs had failed or non-2xx requests (or unreadable output); their figures are not comparable:"
    echo "$bad"
    exit 1
  fi
  echo
  echo "Every request of every run succeeded (no socket errors, timeouts or non-2xx answers)."
}
