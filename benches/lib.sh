# Shared by the benchmark scripts (source it after setting WORK, a scratch directory).

# measure LABEL COMMAND...: run COMMAND with a cold page cache; print "seconds maxrss_kb".
measure() {
  local label=$1; shift
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f "%e %M" -o "$WORK/time.$label" "$@" >/dev/null 2>"$WORK/err.$label" || { cat "$WORK/err.$label" >&2; exit 1; }
  cat "$WORK/time.$label"
}

# median NUMBERS...: the median (the lower middle one for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
