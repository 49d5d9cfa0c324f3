#!/bin/sh
# Multi-process tests of the queue runtime with the example programs as the processes:
#   1. 3 worker processes (examples/worker.c) and a producer (examples/producer.c) run
#      10,000 checkout orders (a chain with a parallel inside: 7 jobs each); every caller
#      gets the right total and no job is left behind in Redis.
#   2. kill -9 of a worker holding jobs (lock 1000 ms, stalled check every 500 ms): its
#      jobs are recovered and finished by the other workers; every caller gets its result.
#      Once with plain jobs, once with chains (reviewed_checkout), whose parent or
#      children may be the ones that die.
#   3. SIGTERM stops a worker cleanly (exit 0).
# Starts its own redis-server on a free loopback port. Ends with "N passed, N failed".
# Without redis-server it says so and counts as skipped (failure under CI=true).
# Env: AM2Z_EXAMPLES_DIR (use this directory's worker and producer instead of make's),
# DIST_JOBS (executions, default 10000), DIST_CONC (threads per worker, default 4).
set -u
cd "$(dirname "$0")/.." || exit 2
B=build/t/distributed
mkdir -p "$B"
PASSED=0 FAILED=0
REDIS_PID="" PIDS=""

ok()   { PASSED=$((PASSED + 1)); echo "ok   $1"; }
bad()  { FAILED=$((FAILED + 1)); echo "FAIL $1" >&2; }
check() { # name, command...
    name=$1; shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}
cleanup() {
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    [ -n "$REDIS_PID" ] && kill -9 "$REDIS_PID" 2>/dev/null
    wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP PIPE
finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit $?
}

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "SKIP test_distributed: redis-server/redis-cli not installed" >&2
    if [ "${CI:-}" = "true" ]; then bad "redis-server installed"; finish; fi
    echo "0 passed, 0 failed, 1 skipped"
    exit 0
fi

# The examples as `make examples` builds them (a no-op when tests/run.sh already did), unless
# AM2Z_EXAMPLES_DIR names a directory holding worker and producer built another way (e.g.
# with sanitizers).
if [ -n "${AM2Z_EXAMPLES_DIR:-}" ]; then
    EX=$AM2Z_EXAMPLES_DIR
else
    EX=build/examples
    make -s "$EX/worker" "$EX/producer" >&2 || { bad "make examples (worker, producer)"; finish; }
fi
# A copy, so a later build can relink the originals while a leftover worker still runs.
rm -f "$B/worker" "$B/producer"
cp "$EX/worker" "$EX/producer" "$B/" || { bad "copy the examples"; finish; }

# A free port: try random ones until a server starts and answers PING.
start_redis() {
    for try in 1 2 3 4 5 6 7 8 9 10; do
        PORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
        redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
            --logfile "$B/redis.log" >/dev/null 2>&1 &
        REDIS_PID=$!
        i=0
        while [ $i -lt 100 ]; do
            if redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG; then return 0; fi
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.02; i=$((i + 1))
        done
        kill -9 "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; REDIS_PID=""
    done
    return 1
}
start_redis || { bad "start redis-server"; finish; }
export REDIS_HOST=127.0.0.1 REDIS_PORT="$PORT"
rcli() { redis-cli -p "$PORT" "$@"; }

# start_worker NAME ARGS...: runs a worker with stdout/stderr in $B/NAME.out/.err and
# waits for its "ready" line; sets WPID.
start_worker() {
    name=$1; shift
    "$B/worker" "$@" >"$B/$name.out" 2>"$B/$name.err" &
    WPID=$!
    PIDS="$PIDS $WPID"
    i=0
    while [ $i -lt 500 ]; do
        grep -q '^ready' "$B/$name.out" 2>/dev/null && return 0
        kill -0 "$WPID" 2>/dev/null || { cat "$B/$name.err" >&2; return 1; }
        sleep 0.01; i=$((i + 1))
    done
    return 1
}
# Runs a command with a time limit (seconds); its exit status, 124 on timeout.
run_limited() {
    limit=$1; shift
    "$@" &
    cpid=$!
    PIDS="$PIDS $cpid"
    ( sleep "$limit"; kill -9 "$cpid" 2>/dev/null ) &
    guard=$!
    wait "$cpid"; rc=$?
    kill "$guard" 2>/dev/null; wait "$guard" 2>/dev/null
    [ $rc -eq 137 ] && rc=124
    return $rc
}
# Waits for a background child up to a time limit (seconds); its status, 124 on timeout.
wait_limited() { # pid, seconds
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt $(($2 * 50)) ]; do sleep 0.02; i=$((i + 1)); done
    if kill -0 "$1" 2>/dev/null; then kill -9 "$1"; wait "$1" 2>/dev/null; return 124; fi
    wait "$1"
}
# Sum of a counter over every queue: LLEN of */wait etc. (lists) or ZCARD (zsets).
count_all() { # suffix, llen|zcard
    total=0
    for k in $(rcli --scan --pattern "*:$1"); do
        n=$(rcli "$2" "$k"); total=$((total + n))
    done
    echo "$total"
}

stop_workers() { # pids...: SIGTERM, then wait; returns non-zero if one did not exit 0
    rc=0
    for p in "$@"; do kill -TERM "$p" 2>/dev/null; done
    for p in "$@"; do wait "$p" || rc=1; done
    return $rc
}

# ---- 1. three workers, one producer, 10,000 executions ---------------------------------
N=${DIST_JOBS:-10000}
W1= W2= W3=
start_worker w1 -c ${DIST_CONC:-4} && W1=$WPID && start_worker w2 -c ${DIST_CONC:-4} && W2=$WPID &&
    start_worker w3 -c ${DIST_CONC:-4} && W3=$WPID
check "three workers started" [ -n "$W3" ]
t0=$(date +%s)
run_limited 45 "$B/producer" -n "$N" -w 512 >"$B/producer.out" 2>"$B/producer.err"
prc=$?
t1=$(date +%s)
cat "$B/producer.out"
[ $prc -eq 0 ] || head -20 "$B/producer.err" >&2
check "producer: every one of $N executions returned the right total (exit $prc, $((t1 - t0)) s)" \
    grep -q "^producer: $N/$N ok, 0 failed" "$B/producer.out"
check "no job left waiting" [ "$(count_all wait llen)" -eq 0 ]
check "no job left active" [ "$(count_all active llen)" -eq 0 ]
check "no job left delayed or prioritized" \
    [ "$(( $(count_all delayed zcard) + $(count_all prioritized zcard) ))" -eq 0 ]
check "no job failed" [ "$(count_all failed zcard)" -eq 0 ]
for p in $W1 $W2 $W3; do
    kill -0 "$p" 2>/dev/null || bad "worker $p died during the run"
done
check "SIGTERM stops the workers with exit 0" stop_workers $W1 $W2 $W3
PIDS=""
# Each of the three took part: the jobs really spread across processes. A worker prints
# "stopped by signal 15 after N jobs" when it leaves.
total_jobs=0
for w in w1 w2 w3; do
    jobs=$(sed -n 's/.*stopped by signal [0-9]* after \([0-9]*\) jobs.*/\1/p' "$B/$w.err")
    check "worker $w processed jobs (${jobs:-none})" [ "${jobs:-0}" -gt 0 ]
    total_jobs=$((total_jobs + ${jobs:-0}))
done
# checkout = chain(validate, price, quote = parallel(tax, shipping), total): 7 jobs. With
# no crash, each ran exactly once: nothing lost, nothing run twice.
check "exactly 7 jobs per execution ran ($total_jobs for $N)" [ "$total_jobs" -eq $((7 * N)) ]

# ---- 2. kill -9 a worker that holds jobs ----------------------------------------------
# crash_round KIND N: 3 workers x 4 threads (lock 1000 ms, stalled scan every 500 ms); the
# producer runs N executions of KIND whose review step holds its job for 400 ms; the first
# worker is killed with SIGKILL as soon as it has started a review. Every execution must
# come back right, and the reviews the dead worker held must have been finished by others.
crash_round() {
    kind=$1 n=$2
    rcli flushall >/dev/null
    K1= K2= K3=
    start_worker k1 -c 4 -l 1000 -s 500 && K1=$WPID && start_worker k2 -c 4 -l 1000 -s 500 &&
        K2=$WPID && start_worker k3 -c 4 -l 1000 -s 500 && K3=$WPID
    check "$kind: three workers started" [ -n "$K3" ]
    "$B/producer" -k "$kind" -n "$n" -w "$n" -r 400 -t 30000 >"$B/crash.out" 2>"$B/crash.err" &
    PP=$!
    PIDS="$PIDS $PP"
    i=0
    while [ $i -lt 500 ] && ! grep -q 'review order-' "$B/k1.err"; do sleep 0.01; i=$((i + 1)); done
    kill -9 "$K1"
    wait "$K1" 2>/dev/null
    started_k1=$(grep -o 'review order-[0-9]*' "$B/k1.err" | sed 's/review //' | sort -u)
    check "$kind: the killed worker was holding jobs" [ -n "$started_k1" ]
    wait_limited "$PP" 30
    prc=$?
    [ $prc -eq 0 ] || head -20 "$B/crash.err" >&2
    check "$kind: all $n executions right after the crash (exit $prc)" \
        grep -q "^producer: $n/$n ok, 0 failed" "$B/crash.out"
    lost=0 recovered=0
    for o in $started_k1; do
        pid=$(awk -v o="$o" '$1 == "done" && $2 == o { print $3 }' "$B/crash.out")
        if [ -z "$pid" ]; then lost=$((lost + 1))
        elif [ "$pid" != "$K1" ]; then recovered=$((recovered + 1)); fi
    done
    check "$kind: no job of the killed worker lost" [ "$lost" -eq 0 ]
    check "$kind: reviews of the killed worker finished by another worker ($recovered)" [ "$recovered" -gt 0 ]
    check "$kind: each caller got exactly one result" [ "$(grep -c '^done ' "$B/crash.out")" -eq "$n" ]
    # A child whose parent died is orphaned; it is recovered like any stalled job and may
    # still be finishing (for no caller) when the callers are done: allow lock + 2 scans.
    i=0
    while [ $i -lt 50 ] && [ "$(( $(count_all active llen) + $(count_all wait llen) ))" -ne 0 ]; do
        sleep 0.1; i=$((i + 1))
    done
    check "$kind: no job left active or waiting after recovery" \
        [ "$(( $(count_all active llen) + $(count_all wait llen) ))" -eq 0 ]
    check "$kind: the other workers stop with exit 0" stop_workers $K2 $K3
    PIDS=""
}
# Plain jobs, then chains whose parent or children may be on the dead worker.
crash_round review 36
crash_round reviewed_checkout 24
finish
