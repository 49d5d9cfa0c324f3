#!/bin/sh
# The whole test suite (what `make test` and CI run). Builds every tests/test_*.c in each
# configuration, runs it, adds up the "N passed, N failed" lines, and stops at the first
# failure. Ends with one closing line in that format.
set -u
cd "$(dirname "$0")/.." || exit 2
B=build/t
mkdir -p "$B"
PASSED=0 FAILED=0 SKIPPED=0
WARN="-Wall -Wextra -Wpedantic -Werror"
JOBS=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}
START=$(date +%s)
elapsed() { echo "$(($(date +%s) - START)) s"; }
LIBS="-pthread -lm"

finish() {
    echo "(make test took $(elapsed))"
    if [ "$SKIPPED" -gt 0 ]; then echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    else echo "$PASSED passed, $FAILED failed"; fi
    [ "$FAILED" -eq 0 ] && exit 0 || exit 1
}
fail() { echo "FAILED: $*" >&2; FAILED=$((FAILED + 1)); finish; }

# Runs a program that prints the harness closing line; folds its counts into ours.
run_counted() { # name, command...
    name=$1; shift
    out=$("$@" 2>"$B/$name.err"); rc=$?
    echo "$out" > "$B/$name.out"
    line=$(echo "$out" | grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -z "$line" ]; then cat "$B/$name.err" >&2; fail "$name (exit $rc, no closing line)"; fi
    p=$(echo "$line" | sed -E 's/^([A-Za-z]+: )?([0-9]+) passed.*/\2/')
    f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    s=$(echo "$line" | sed -nE 's/.* ([0-9]+) skipped.*/\1/p')
    PASSED=$((PASSED + p)); SKIPPED=$((SKIPPED + ${s:-0}))
    echo "  $name: $line"
    if [ "$f" -ne 0 ] || [ "$rc" -ne 0 ]; then
        cat "$B/$name.err" >&2; FAILED=$((FAILED + f)); [ "$f" -eq 0 ] && FAILED=$((FAILED + 1))
        fail "$name (exit $rc)"
    fi
}
# A check that is one test: passes when the command exits 0.
run_check() { # name, command...
    name=$1; shift
    if "$@" >"$B/$name.log" 2>&1; then PASSED=$((PASSED + 1)); echo "  $name: ok"
    else cat "$B/$name.log" >&2; fail "$name"; fi
}

have() { command -v "$1" >/dev/null 2>&1; }

# Builds configuration cfg: tests/impl.c, then the test programs `jobs` at a time; with
# mode "check" each test program is only compiled (-fsyntax-only), not linked. Returns 1
# on a build failure (it may run in the background, where it cannot stop the script).
build_config() { # cfg, mode (link|check), jobs, compiler, flags...
    cfg=$1 mode=$2 jobs=$3 cc=$4; shift 4
    flags="$*"
    mkdir -p "$B/$cfg"
    $cc $flags $WARN -I. -c tests/impl.c -o "$B/$cfg/impl.o" || return 1
    if [ "$mode" = check ]; then
        ls tests/test_*.c | xargs -P "$jobs" -I{} $cc $flags $WARN -I. -fsyntax-only {} || return 1
    else
        ls tests/test_*.c | xargs -P "$jobs" -I{} sh -c \
            "$cc $flags $WARN -I. -o \"$B/$cfg/\$(basename {} .c)\" {} \"$B/$cfg/impl.o\" $LIBS" || return 1
    fi
}

# Runs every test program of a built configuration, one at a time (their timing must not
# depend on a neighbour).
run_config() { # cfg
    cfg=$1
    echo "== $cfg: running the tests [$(elapsed)]"
    for src in tests/test_*.c; do
        t=$(basename "$src" .c)
        # The kill -9 and failover tests (Redis Cluster, Sentinel, resharding, durable
        # workers killed at each step) are mostly waiting: the sanitizer builds run them.
        case "$t:$cfg" in
            test_queue_cluster:gcc-c11|test_queue_sentinel:gcc-c11|test_queue_reshard:gcc-c11|\
            test_queue_durable:gcc-c11|test_queue_durable_gaps:gcc-c11)
                echo "  $cfg-$t: built (runs in asan-ubsan and tsan)"; continue;;
        esac
        run_counted "$cfg-$t" "./$B/$cfg/$t"
    done
}

# Waits for a background build; its log and a failure when it failed.
join_build() { # name, pid
    if wait "$2"; then PASSED=$((PASSED + 1)); echo "  $1: ok [$(elapsed)]"
    else cat "$B/$1.log" >&2; fail "$1"; fi
}

echo "== compile checks [$(elapsed)]"
run_check cxx-header   g++ -std=c++11 -x c++ $WARN -I. -c tests/impl.c -o "$B/impl_cxx.o"
have clang++ && run_check clangxx-header clang++ -std=c++11 -x c++ $WARN -I. -c tests/impl.c -o "$B/impl_clangxx.o"
run_check two-tu       sh -c "cc -std=c99 $WARN -I. -o $B/two_tu tests/compile/tu_a.c tests/compile/tu_b.c $LIBS && ./$B/two_tu"
run_check static-build sh -c "cc -std=c99 $WARN -I. -o $B/static tests/compile/static.c $LIBS && ./$B/static"
run_check include-order sh -c "! cc -std=c99 -I. -c tests/compile/late_posix.c -o $B/late_posix.o 2>$B/late_posix.err && grep -q 'D_POSIX_C_SOURCE=200809L' $B/late_posix.err"
run_check nothreads-local sh -c "! cc -std=c99 -I. -c tests/compile/nothreads_local.c -o $B/nothreads_local.o 2>$B/nothreads_local.err && grep -q 'am2z_local_runtime_needs_threads_undefine_AM2Z_NO_THREADS' $B/nothreads_local.err"
run_check nothreads-resp sh -c "! cc -std=c99 -I. -c tests/compile/nothreads_resp.c -o $B/nothreads_resp.o 2>$B/nothreads_resp.err && grep -q 'queue runtime needs threads' $B/nothreads_resp.err"
run_check symbols      sh tests/symbols.sh cc
run_check examples     sh -c "make -s -j2 examples CC=cc"

# AM2Z_NO_THREADS: the tests of the parts that need no threads, built without -pthread.
# No pthread symbol may be referenced: checked on the implementation's object and on each
# test program (glibc 2.34+ has pthreads in libc, so linking alone would not tell).
NOTHREADS_TESTS="test_json test_errors test_state test_plain_key test_logging test_compose test_inline test_cron test_store test_idem test_trace test_inline_durable"
echo "== no-threads (cc -std=c99 -DAM2Z_NO_THREADS, no -pthread) [$(elapsed)]"
mkdir -p "$B/nothreads"
cc -std=c99 $WARN -O2 -DAM2Z_NO_THREADS -I. -c tests/impl_nothreads.c -o "$B/nothreads/impl.o" ||
    fail "nothreads: build tests/impl_nothreads.c"
run_check nothreads-impl-no-pthread sh -c "nm -u $B/nothreads/impl.o > $B/nothreads/impl.syms && ! grep -i pthread $B/nothreads/impl.syms"
for t in $NOTHREADS_TESTS; do
    cc -std=c99 $WARN -O2 -DAM2Z_NO_THREADS -I. -o "$B/nothreads/$t" "tests/$t.c" "$B/nothreads/impl.o" -lm ||
        fail "nothreads: build $t"
    run_check "nothreads-$t-no-pthread" sh -c "nm -u $B/nothreads/$t > $B/nothreads/$t.syms && ! grep -i pthread $B/nothreads/$t.syms"
    run_counted "nothreads-$t" "./$B/nothreads/$t"
done
# the README's "Without threads" command, as written there
run_check nothreads-example sh -c "cc -std=c99 $WARN -DAM2Z_NO_THREADS -I. examples/workflow_test.c -lm -o $B/nothreads/workflow_test && ./$B/nothreads/workflow_test && nm -u $B/nothreads/workflow_test > $B/nothreads/workflow_test.syms && ! grep -i pthread $B/nothreads/workflow_test.syms"
run_check nothreads-example-approval sh -c "cc -std=c99 $WARN -DAM2Z_NO_THREADS -I. examples/approval_test.c -lm -o $B/nothreads/approval_test && ./$B/nothreads/approval_test"

# Configurations. gcc -O2 and clang's two sanitizer builds run every test; the language
# mode matters to the compiler, not to what the tests do, so the C99 builds and clang -O2
# are compiled warning-free and not run. Test runs mostly wait (Redis, timers, child
# processes), so the next builds compile in the background while they run: make test's
# target is 20 minutes on 2 cores.
ASAN_FLAGS="-std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
TSAN_FLAGS="-std=c11 -O1 -g -fsanitize=thread"
echo "== gcc-c11 (gcc -std=c11 -O2) [$(elapsed)]"
run_check build-gcc-c11 build_config gcc-c11 link "$JOBS" gcc -std=c11 -O2
if have clang; then
    echo "  building asan-ubsan (clang $ASAN_FLAGS) and tsan (clang $TSAN_FLAGS) in the background"
    ( build_config asan-ubsan link "$JOBS" clang $ASAN_FLAGS && build_config tsan link "$JOBS" clang $TSAN_FLAGS ) \
        >"$B/build-sanitizers.log" 2>&1 &
    SANITIZERS=$!
fi
run_config gcc-c11
if have clang; then
    join_build build-sanitizers "$SANITIZERS"
    echo "  building gcc-c99, clang-c99 and clang-c11 (compile only) in the background"
    ( build_config gcc-c99 check 1 gcc -std=c99 -O2 && build_config clang-c99 check 1 clang -std=c99 -O2 &&
      build_config clang-c11 check 1 clang -std=c11 -O2 ) >"$B/build-compile-only.log" 2>&1 &
    COMPILE_ONLY=$!
    run_config asan-ubsan
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" export TSAN_OPTIONS
    run_config tsan
    join_build build-compile-only "$COMPILE_ONLY"
else
    echo "== clang not installed: the sanitizer builds and clang's compile checks left out"
    run_check build-gcc-c99 build_config gcc-c99 check "$JOBS" gcc -std=c99 -O2
fi

echo "== examples [$(elapsed)]"
for e in build/examples/*; do
    [ -x "$e" ] || continue
    case "$(basename "$e")" in worker|producer|top|metrics_server) continue;; esac  # need a Redis or serve until stopped; run by their own tests
    run_check "example-$(basename "$e")" "./$e"
done

VALGRIND_TESTS=${VALGRIND_TESTS:-"test_json test_state test_errors test_logging test_resp test_sha256 test_compose test_runtime test_contracts test_cron test_store test_inline test_metrics"}
if have valgrind; then
    echo "== valgrind (leak check) [$(elapsed)]"
    for t in $VALGRIND_TESTS; do
        [ -x "$B/gcc-c11/$t" ] || continue
        run_counted "valgrind-$t" valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
            --error-exitcode=99 "./$B/gcc-c11/$t"
    done
else
    echo "== valgrind not installed: leak checks left out [$(elapsed)]"
fi

for s in tests/test_*.sh; do
    [ -f "$s" ] || continue
    echo "== $s [$(elapsed)]"
    run_counted "$(basename "$s" .sh)" sh "$s"
done

# The chaos run's short form (make chaos runs the long one): workers killed with kill -9
# every second and Redis killed and restarted from its AOF (at 2 s) while 6,000
# executions run (about 6 s on this 2-vCPU VM: 3,000 once ended before the Redis kill).
echo "== chaos, short form (tests/chaos.sh) [$(elapsed)]"
run_counted chaos env CHAOS_JOBS=6000 CHAOS_KILL_EVERY=1 CHAOS_REDIS_KILLS=1 sh tests/chaos.sh

# The unit tests that need no Redis cross-compiled and run under qemu-user: here the short
# form, armhf (32-bit) and s390x (big-endian); make portability runs the whole matrix (i386,
# aarch64 and the static musl examples too). A target whose toolchain is missing is a skip.
echo "== portability, short form (tests/portability.sh) [$(elapsed)]"
run_counted portability env PORTABILITY_TARGETS="${PORTABILITY_TARGETS:-armhf s390x}" sh tests/portability.sh

if have clang; then
    echo "== fuzz smoke (corpus replay) [$(elapsed)]"
    run_check fuzz-smoke sh tests/fuzz.sh smoke
else
    echo "== clang not installed: fuzz corpus replay left out [$(elapsed)]"
fi
finish
