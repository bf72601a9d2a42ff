#!/usr/bin/env bash
# run.sh — runs one fuzz harness for ctest and writes its reliability line.
#
#   run.sh replay BIN TEST CLASS CORPUS   every corpus input once (any build)
#   run.sh fuzz   BIN TEST CLASS CORPUS   libFuzzer for RG_FUZZ_SECONDS (15)
#                                         from seed RG_SEED (default: random)
#
# The fuzz mode starts from a copy of CORPUS in $RG_FUZZ_WORK/<TEST> (new
# inputs go there, never into the source tree); a crash leaves its input in
# $RG_FUZZ_WORK/<TEST>/crash-*, prints how to replay it, and fails. The line
# "CLASS<TAB>how<TAB>executions<TAB>pass|FAIL: ..." goes to
# $RG_RELIABILITY_DIR/<TEST>.tsv (issue 5 item 7).
set -uo pipefail

mode=$1 bin=$2 test=$3 class=$4 corpus=$5
work=${RG_FUZZ_WORK:-${TMPDIR:-/tmp}/rg-fuzz}/$test
rel=${RG_RELIABILITY_DIR:-}
mkdir -p "$work"
[ -n "$rel" ] && mkdir -p "$rel"

report() { # HOW CASES RESULT
  [ -n "$rel" ] && printf '%s\t%s\t%s\t%s\n' "$class" "$1" "$2" "$3" > "$rel/$test.tsv"
  echo "$test: $3 ($2 cases: $1)"
}

case $mode in
replay)
  "$bin" "$corpus" > "$work/out" 2> "$work/err"
  rc=$?
  cases=$(sed -n 's/^replayed \([0-9]*\) inputs$/\1/p' "$work/out")
  files=$(find "$corpus" -maxdepth 1 -type f | wc -l)
  how="replay of tests/fuzz/corpus/$(basename "$corpus") ($files inputs), ${RG_FUZZ_BUILD:-this} build"
  if ((rc != 0)) || [ "${cases:-0}" != "$files" ]; then
    cat "$work/err" "$work/out"
    report "$how" "${cases:-0}" "FAIL: exit $rc after ${cases:-0} of $files inputs"
    exit 1
  fi
  report "$how" "$cases" pass
  ;;
fuzz)
  seconds=${RG_FUZZ_SECONDS:-15}
  seed=${RG_SEED:-$(( (RANDOM << 15 | RANDOM) + 1 ))}
  if ! [ "$seconds" -gt 0 ] 2>/dev/null; then # libFuzzer reads 0 as "forever"
    report "libFuzzer, not run (RG_FUZZ_SECONDS=$seconds)" 0 skipped
    exit 0
  fi
  echo "$test: fuzzing for $seconds s, seed $seed (RG_SEED=$seed to repeat)"
  rm -rf "$work/corpus" "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*
  mkdir -p "$work/corpus"
  cp "$corpus"/* "$work/corpus/"
  # -max_len: room for the largest seed (the shipped conf is ~8 KiB).
  # rg's WARN/ERROR lines about the damaged inputs are expected: filtered.
  "$bin" -seed="$seed" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
         -max_len=16384 -print_final_stats=1 -artifact_prefix="$work/" \
         "$work/corpus" > "$work/log" 2>&1
  rc=$?
  grep -Ev '^(ERROR|WARN|INFO) (\[[^]]*\] )?(wal|ledger at)' "$work/log" | tail -n 60
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\)$/\1/p' "$work/log" | tail -n 1)
  how="libFuzzer + ASan/UBSan (clang), ${seconds} s, seed $seed"
  if ((rc != 0)); then
    crash=$(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null | head -n 1)
    echo "$test: FAILED (exit $rc); input: ${crash:-none saved}"
    [ -n "$crash" ] && echo "$test: replay with: $bin $crash   (or the *_replay binary of any tree)"
    report "$how" "${execs:-0}" "FAIL: exit $rc, input ${crash:-?}"
    exit 1
  fi
  report "$how" "${execs:-0}" pass
  ;;
*)
  echo "run.sh: unknown mode $mode" >&2
  exit 2
  ;;
esac
