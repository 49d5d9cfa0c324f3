#!/bin/sh
# Portability targets (issue 15): the unit tests that need no Redis, cross-compiled for
# 32-bit x86, armhf, aarch64 and big-endian s390x and run natively (-m32) or under
# qemu-user, with UBSan's alignment check; then the examples that need no Redis as fully
# static musl programs. Run from anywhere; `make portability` runs it and tests/run.sh
# folds its closing line ("N passed, N failed") into the suite's.
#
# qemu-user runs a program in the host's working directory, so the tests find tests/data
# by the same relative path as on the host. A target whose compiler or qemu is missing is
# left out with a notice and counted as skipped (.ci/run installs them all).
#
# Threads: qemu-user (7.2, Debian 12) runs guest threads as host threads; test_runtime and
# test_compose (the local pthread runtime) passed 15 runs out of 15 on each qemu target, so
# they run everywhere.
#
# PORTABILITY_TARGETS picks targets ("i386 armhf aarch64 s390x musl" by default);
# PORTABILITY_JOBS (default 2) is how many builds run at once; PORTABILITY_UBSAN replaces
# the sanitizer flags (e.g. "-fsanitize=undefined -fno-sanitize-recover=all").
set -u
cd "$(dirname "$0")/.." || exit 2
B=build/port
mkdir -p "$B"
PASSED=0 FAILED=0 SKIPPED=0
TARGETS=${PORTABILITY_TARGETS:-"i386 armhf aarch64 s390x musl"}
JOBS=${PORTABILITY_JOBS:-2}
WARN="-Wall -Wextra -Wpedantic -Werror"
LIBS="-pthread -lm"
UBSAN=${PORTABILITY_UBSAN:-"-fsanitize=alignment -fno-sanitize-recover=all"}
TESTS="test_json test_state test_errors test_logging test_sha256 test_resp test_compose test_runtime test_inline test_cron"

finish() {
    if [ "$SKIPPED" -gt 0 ]; then echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    else echo "$PASSED passed, $FAILED failed"; fi
    [ "$FAILED" -eq 0 ] && exit 0 || exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
# A failure line, on stdout and stderr (tests/run.sh shows stderr when this script fails).
bad() { echo "$1"; echo "$1" >&2; FAILED=$((FAILED + 1)); }

# Runs a program that prints the harness closing line and folds its counts into ours.
# Unlike tests/run.sh it goes on after a failure, so one run reports every target.
run_counted() { # name, command...
    name=$1; shift
    "$@" >"$B/$name.out" 2>"$B/$name.err"; rc=$?
    line=$(grep -E '^([A-Za-z]+: )?[0-9]+ passed, [0-9]+ failed' "$B/$name.out" | tail -n 1)
    if [ -z "$line" ]; then
        tail -n 20 "$B/$name.err" >&2; bad "  $name: FAILED (exit $rc, no closing line)"; return
    fi
    p=$(echo "$line" | sed -E 's/^([A-Za-z]+: )?([0-9]+) passed.*/\2/')
    f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    s=$(echo "$line" | sed -nE 's/.* ([0-9]+) skipped.*/\1/p')
    PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + ${s:-0}))
    if [ "$f" -ne 0 ] || [ "$rc" -ne 0 ]; then
        tail -n 20 "$B/$name.err" >&2; echo "  $name: $line (exit $rc) FAILED" >&2
        echo "  $name: $line (exit $rc) FAILED"; [ "$f" -eq 0 ] && FAILED=$((FAILED + 1))
    else echo "  $name: $line"; fi
}

# Builds the objects a target needs, at most $JOBS at once; prints what failed.
# Each line of stdin: output, then the compiler's arguments.
build_all() { # cc
    cc=$1
    xargs -P "$JOBS" -L 1 sh -c 'o=$1; shift; '"$cc"' "$@" -o "$o" 2>"$o.log" || echo "$o"' sh
}

# target name, runner ("" = native), compiler, extra flags
run_target() {
    t=$1 runner=$2 cc=$3; shift 3
    extra="$*"
    flags="-std=c99 -O2 $extra $UBSAN $WARN -I."
    qemu=$(echo "$runner" | tr ' ' '\n' | grep '^qemu-')
    if ! have "$cc" || { [ -n "$qemu" ] && ! have "$qemu"; }; then
        set -- $TESTS
        echo "== $t: $cc${qemu:+ or $qemu} not installed, target left out"
        SKIPPED=$((SKIPPED + $#)); return
    fi
    echo "== $t ($cc${extra:+ $extra}${runner:+, run by $runner})"
    d="$B/$t"; mkdir -p "$d"
    bad=$( { echo "$d/impl.o -c $flags tests/impl.c"
             for x in $TESTS; do echo "$d/$x.o -c $flags tests/$x.c"; done; } | build_all "$cc")
    for x in $TESTS; do
        case " $bad " in *" $d/impl.o "*|*" $d/$x.o "*)
            cat "$d/impl.o.log" "$d/$x.o.log" 2>/dev/null | head -n 20 >&2
            bad "  $t-$x: FAILED (build)"; continue;;
        esac
        if ! $cc $flags -o "$d/$x" "$d/$x.o" "$d/impl.o" $LIBS 2>"$d/$x.link.log"; then
            head -n 20 "$d/$x.link.log" >&2; bad "  $t-$x: FAILED (link)"; continue
        fi
        # shellcheck disable=SC2086
        run_counted "$t-$x" $runner "./$d/$x"
    done
}

# The examples that need no Redis, each a fully static musl program, run.
run_musl() {
    if ! have musl-gcc; then
        echo "== musl: musl-gcc not installed, target left out"; SKIPPED=$((SKIPPED + 1)); return
    fi
    echo "== musl (musl-gcc -static, examples)"
    d="$B/musl"; mkdir -p "$d"
    for src in examples/*.c; do
        e=$(basename "$src" .c)
        case "$e" in worker|producer|top|metrics_server) continue;; esac   # need a Redis or serve until stopped
        echo "$d/$e -std=c99 -O2 $WARN -I. -static $src $LIBS"
    done | build_all musl-gcc >"$d/bad"
    for src in examples/*.c; do
        e=$(basename "$src" .c)
        case "$e" in worker|producer|top|metrics_server) continue;; esac
        if grep -qx "$d/$e" "$d/bad"; then
            head -n 20 "$d/$e.log" >&2; bad "  musl-$e: FAILED (build)"
        elif readelf -l "$d/$e" | grep -q INTERP; then   # a dynamic loader: not static
            bad "  musl-$e: FAILED (not statically linked)"
        elif "./$d/$e" >"$d/$e.out" 2>&1; then
            echo "  musl-$e: ok"; PASSED=$((PASSED + 1))
        else
            tail -n 20 "$d/$e.out" >&2; bad "  musl-$e: FAILED (run)"
        fi
    done
}

for t in $TARGETS; do
    case $t in
        i386)    # gcc-12-multilib, not gcc-multilib: that one conflicts with the cross
                 # compilers, and it is what brings the <asm/...> link, made here instead
                 mkdir -p "$B/m32-include"
                 ln -sfn /usr/include/x86_64-linux-gnu/asm "$B/m32-include/asm"
                 run_target i386 "" gcc -m32 -idirafter "$B/m32-include" ;;
        armhf)   run_target armhf "qemu-arm -L /usr/arm-linux-gnueabihf" arm-linux-gnueabihf-gcc ;;
        aarch64) run_target aarch64 "qemu-aarch64 -L /usr/aarch64-linux-gnu" aarch64-linux-gnu-gcc ;;
        s390x)   # glibc's locale files are byte-order specific: a big-endian de_DE for
                 # test_json's decimal-comma test (without it that one case is skipped)
                 mkdir -p "$B/locale-be"
                 [ -d "$B/locale-be/de_DE.UTF-8" ] || localedef --big-endian -i de_DE -f UTF-8 \
                     "$B/locale-be/de_DE.UTF-8" >/dev/null 2>&1 || rm -rf "$B/locale-be"
                 run_target s390x "env LOCPATH=$B/locale-be qemu-s390x -L /usr/s390x-linux-gnu" \
                     s390x-linux-gnu-gcc ;;
        musl)    run_musl ;;
        *)       bad "unknown target $t" ;;
    esac
done
finish
