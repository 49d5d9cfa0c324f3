#!/bin/sh
# Fuzzing: builds every tests/fuzz_<name>.c as a libFuzzer target with clang
# (-fsanitize=fuzzer,address,undefined) and runs it with its seed corpus
# tests/data/fuzz/<name>/ (created empty if missing).
#
#   sh tests/fuzz.sh           each target for FUZZ_SECONDS seconds (default 60);
#                              new inputs go to build/fuzz/corpus_<name>/, crashes to
#                              build/fuzz/crash-* (the seed corpus is left untouched)
#   sh tests/fuzz.sh smoke     each target over its seed corpus once (what `make test` runs)
#
# Prints one line per target: executions and crashes. Exits non-zero on any crash or
# build failure. Without clang it says so and fails when CI is set, otherwise skips.
set -u
cd "$(dirname "$0")/.." || exit 1
mode=${1:-run}
secs=${FUZZ_SECONDS:-60}
out=build/fuzz
CLANG=${FUZZ_CC:-clang}

if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "fuzz: SKIPPED, $CLANG not found (install clang to fuzz)"
    [ -n "${CI:-}" ] && exit 1
    exit 0
fi
mkdir -p "$out"
status=0
# The targets are built side by side (each compiles the whole implementation with the
# sanitizers, the slow part of a smoke run), then run one after another.
for src in tests/fuzz_*.c; do
    [ -e "$src" ] || continue
    name=$(basename "$src" .c)
    ( "$CLANG" -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
          -I. -o "$out/$name" "$src" -pthread -lm || rm -f "$out/$name" ) &
done
wait
for src in tests/fuzz_*.c; do
    [ -e "$src" ] || continue
    name=$(basename "$src" .c)
    name=${name#fuzz_}
    bin=$out/fuzz_$name
    seeds=tests/data/fuzz/$name
    log=$out/fuzz_$name.log
    mkdir -p "$seeds"
    if [ ! -x "$bin" ]; then
        echo "fuzz_$name: BUILD FAILED"
        status=1
        continue
    fi
    if [ "$mode" = smoke ]; then
        "$bin" -runs=0 -print_final_stats=1 "$seeds" >"$log" 2>&1
    else
        mkdir -p "$out/corpus_$name"
        "$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$out/" \
            "$out/corpus_$name" "$seeds" >"$log" 2>&1
    fi
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ $rc -ne 0 ]; then
        echo "fuzz_$name: CRASH after ${execs:-?} executions (exit $rc); see $log"
        tail -n 30 "$log"
        status=1
    else
        echo "fuzz_$name: ${execs:-0} executions, 0 crashes ($mode)"
    fi
done
exit $status
