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
