# Sourced by benchmark scripts: in_pairs FN SPEC... runs `FN SPEC` for each SPEC two at a time (two lanes of one
# torch thread on the 2-core box) and waits for each pair. A SPEC is word-split, so it may carry several arguments.
in_pairs() {
  local fn=$1
  shift
  while [ $# -gt 0 ]; do
    # shellcheck disable=SC2086
    "$fn" $1 &
    # shellcheck disable=SC2086
    [ $# -gt 1 ] && "$fn" $2 &
    wait
    shift $(($# > 1 ? 2 : 1))
  done
}

# compare_arms DIR BASE PREFIX "METRICS" ARM...: `stillroom compare DIR` (a results_summary.csv of variants by seed)
# of variant PREFIX<ARM> against variant BASE on each metric, paired by seed; an ARM whose variant is BASE is skipped.
compare_arms() {
  local dir=$1 base=$2 prefix=$3 metrics=$4 a m
  shift 4
  for a in "$@"; do
    [ "$prefix$a" = "$base" ] && continue
    for m in $metrics; do
      echo "== $m: $prefix$a vs $base"
      ${SL:-stillroom} compare "$dir" --metric "$m" --a "$base" --b "$prefix$a" || true
    done
  done
}
