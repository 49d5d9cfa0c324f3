#!/bin/sh
# The operator tools end to end:
#   1. examples/metrics_server: curl scrapes /metrics (200, the 0.0.4 content type) and the
#      exposition passes the strict checker of tests/prom_check.h (`test_metrics --check`;
#      also `promtool check metrics` when installed), with the demo's processors, session
#      labels and histogram; other paths get 404; SIGTERM ends it with status 0.
#   2. examples/top against a private redis-server with a worker and a producer
#      (examples/worker.c, producer.c): `top --once` piped is plain text (no escape
#      codes) with the header, the workers alive and the checkout row with its counts,
#      and a session's row once jobs ran in it (test_queue_metrics --session-work);
#      in a tmux pane the live view shows the same, then refreshes to new counts after
#      more work; Ctrl-C ends it. The producer piped prints no progress line (no \r);
#      in a tmux pane its progress line ends as the summary.
# Ends with "N passed, N failed". Without curl, tmux or redis-server the part that needs
# it is skipped loudly (a failure under CI=true, where .ci/run installs them).
set -u
cd "$(dirname "$0")/.." || exit 2
B=build/t/tools
mkdir -p "$B"
PASSED=0 FAILED=0 SKIPPED=0
REDIS_PID="" PIDS="" TMUX_SOCK="am2z-tools-$$"

ok()   { PASSED=$((PASSED + 1)); echo "ok   $1"; }
bad()  { FAILED=$((FAILED + 1)); echo "FAIL $1" >&2; }
check() { # name, command...
    name=$1; shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}
skip() { # what is missing
    echo "SKIP test_tools: $1 not installed" >&2
    if [ "${CI:-}" = "true" ]; then bad "$1 installed"; else SKIPPED=$((SKIPPED + 1)); fi
}
have() { command -v "$1" >/dev/null 2>&1; }
cleanup() {
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    [ -n "$REDIS_PID" ] && kill -9 "$REDIS_PID" 2>/dev/null
    have tmux && tmux -L "$TMUX_SOCK" kill-server 2>/dev/null
    wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP PIPE
finish() {
    if [ "$FAILED" -gt 0 ]; then # what the programs showed, for the log
        for f in ms.err pane.txt prod.txt top.txt top2.txt worker.err; do
            [ -s "$B/$f" ] && { echo "== $B/$f" >&2; cat "$B/$f" >&2; }
        done
    fi
    if [ "$SKIPPED" -gt 0 ]; then echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
    else echo "$PASSED passed, $FAILED failed"; fi
    [ "$FAILED" -eq 0 ]
    exit $?
}
# Waits up to $1 seconds for the command to succeed.
wait_for() { # seconds, command...
    n=$(($1 * 20)); shift
    while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 0.05; n=$((n - 1)); done
    return 1
}

EX=build/examples
make -s "$EX/metrics_server" "$EX/top" "$EX/worker" "$EX/producer" >&2 || { bad "make the examples"; finish; }
cc -std=c99 -O1 -I. -o "$B/test_metrics" tests/test_metrics.c tests/impl.c -pthread -lm || { bad "build the checker"; finish; }
cc -std=c99 -O1 -I. -o "$B/session_work" tests/test_queue_metrics.c tests/impl.c -pthread -lm || { bad "build session_work"; finish; }

# ---- 1. metrics_server ----
if ! have curl; then skip curl; else
    "$EX/metrics_server" --port 0 >"$B/ms.out" 2>"$B/ms.err" &
    MS=$!
    PIDS="$PIDS $MS"
    listening() { grep -sq '^listening on 127.0.0.1:[0-9]' "$B/ms.out"; }
    if ! wait_for 10 listening; then bad "metrics_server listens"; cat "$B/ms.err" >&2; else
        URL="http://$(sed -n 's/^listening on //p' "$B/ms.out")"
        # the demo load finishes its first executions of both sessions (a declined charge
        # in tenant-b, a resize in tenant-a) within milliseconds; allow a slow machine
        scraped() {
            curl -s -D "$B/headers" -o "$B/metrics.txt" "$URL/metrics" &&
                grep -q '^am2z_executions_total{processor="charge",outcome="failed"} [1-9]' "$B/metrics.txt" &&
                grep -q '^am2z_session_executions_total{session="tenant-a",processor="resize",outcome="completed"} [1-9]' "$B/metrics.txt"
        }
        check "scrape shows finished executions" wait_for 30 scraped
        check "HTTP 200" grep -q '^HTTP/1.1 200 OK' "$B/headers"
        check "content type 0.0.4" grep -qi '^Content-Type: text/plain; version=0.0.4' "$B/headers"
        check "exposition passes the strict checker" "$B/test_metrics" --check "$B/metrics.txt"
        if have promtool; then
            check "promtool check metrics" sh -c "promtool check metrics < '$B/metrics.txt'"
        else
            echo "note: promtool not installed, the strict checker alone judged the exposition"
        fi
        check "histogram of resize" grep -q '^am2z_execution_duration_seconds_bucket{processor="resize",le="+Inf"} [1-9]' "$B/metrics.txt"
        check "session labels" grep -q '^am2z_session_submitted_total{session="tenant-b"} [1-9]' "$B/metrics.txt"
        check "HELP and TYPE" grep -q '^# TYPE am2z_executions_total counter$' "$B/metrics.txt"
        check "404 elsewhere" sh -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' '$URL/nope')\" = 404 ]"
    fi
    kill -TERM "$MS" 2>/dev/null
    gone() { ! kill -0 "$MS" 2>/dev/null; }
    if wait_for 10 gone; then wait "$MS"; check "SIGTERM: exit 0" [ $? -eq 0 ]; else bad "SIGTERM ends metrics_server"; fi
fi

# ---- 2. top ----
if ! have redis-server || ! have redis-cli; then skip redis-server; finish; fi
start_redis() { # a free port: try random ones until a server answers PING
    for try in 1 2 3 4 5 6 7 8 9 10; do
        PORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
        redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
            --logfile "$B/redis.log" >/dev/null 2>&1 &
        REDIS_PID=$!
        pong() { redis-cli -p "$PORT" ping 2>/dev/null | grep -q PONG || ! kill -0 "$REDIS_PID" 2>/dev/null; }
        wait_for 5 pong && kill -0 "$REDIS_PID" 2>/dev/null && return 0
        kill -9 "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; REDIS_PID=""
    done
    return 1
}
start_redis || { bad "start redis-server"; finish; }
export REDIS_HOST=127.0.0.1 REDIS_PORT="$PORT"
"$EX/worker" -c 2 >"$B/worker.out" 2>"$B/worker.err" &
WPID=$!
PIDS="$PIDS $WPID"
ready() { grep -sq '^ready' "$B/worker.out"; }
wait_for 20 ready || { bad "worker ready"; cat "$B/worker.err" >&2; finish; }
check "producer runs 40 orders" sh -c "'$EX/producer' -n 40 -w 8 >'$B/producer.out' 2>&1"
check "producer piped: no progress line" sh -c "! grep -q \"\$(printf '\\r')\" '$B/producer.out'"

"$EX/top" --once >"$B/top.txt" 2>"$B/top.err"
check "top --once exits 0" [ $? -eq 0 ]
cat "$B/top.txt"
check "no escape codes when piped" sh -c "! grep -q \"\$(printf '\\033')\" '$B/top.txt'"
check "header" grep -q "^am2z top  redis 127.0.0.1:$PORT  prefix am2z  .*workers alive: 2 threads in 1 processes$" "$B/top.txt"
check "column titles" grep -q '^PROCESSOR  *SESSION  *WAITING  *ACTIVE  *DELAYED  *COMPLETED  *FAILED  *JOBS/S  *P50 MS  *P99 MS$' "$B/top.txt"
# 40 orders: 40 completed checkouts, nothing waiting, active, delayed or failed
check "checkout row" grep -Eq '^checkout +- +0 +0 +0 +40 +0 +[0-9.]+ +[0-9.]+ +[0-9.]+$' "$B/top.txt"
check "tax row" grep -Eq '^tax +- +0 +0 +0 +40 +0 ' "$B/top.txt"
check "no review ran" grep -Eq '^review +- +0 +0 +0 +0 +0 +0.0 +- +-$' "$B/top.txt"
check "3 jobs in session tenant-7" "$B/session_work" --session-work "$PORT"
"$EX/top" --once >"$B/top2.txt" 2>&1
check "session row" grep -Eq '^ok +tenant-7 +0 +0 +0 +3 +0 +[0-9.]+ +[0-9.]+ +[0-9.]+$' "$B/top2.txt"

if ! have tmux; then skip tmux; else
    tmux -L "$TMUX_SOCK" new-session -d -s top -x 160 -y 30 \
        "REDIS_PORT=$PORT $EX/top --interval 0.2" || bad "tmux new-session"
    pane() { tmux -L "$TMUX_SOCK" capture-pane -p -t top > "$B/pane.txt" 2>/dev/null; }
    shows() { pane && grep -Eq "$1" "$B/pane.txt"; }
    check "tmux: the live view shows the checkout row" wait_for 20 shows '^checkout +- +0 +0 +0 +40 +0 '
    check "tmux: the frame starts at the top of the screen" sh -c "head -n 1 '$B/pane.txt' | grep -q '^am2z top '"
    check "producer runs 10 more orders" sh -c "'$EX/producer' -n 10 -w 8 >>'$B/producer.out' 2>&1"
    check "tmux: the view refreshes to 50" wait_for 20 shows '^checkout +- +0 +0 +0 +50 +0 '
    tmux -L "$TMUX_SOCK" new-window -d -t top -n prod "REDIS_PORT=$PORT $EX/producer -n 10 -w 8; sleep 60"
    prod() { tmux -L "$TMUX_SOCK" capture-pane -p -t top:prod > "$B/prod.txt" 2>/dev/null && grep -q '^producer: 10/10 ok' "$B/prod.txt"; }
    check "tmux: the producer's summary replaces its progress line" wait_for 20 prod
    check "tmux: the view refreshes to 60" wait_for 20 shows '^checkout +- +0 +0 +0 +60 +0 '
    tmux -L "$TMUX_SOCK" kill-window -t top:prod
    tmux -L "$TMUX_SOCK" send-keys -t top:0 C-c
    ended() { ! tmux -L "$TMUX_SOCK" has-session -t top 2>/dev/null; }
    check "tmux: Ctrl-C ends top" wait_for 10 ended
    cp "$B/pane.txt" "$B/pane-last.txt" 2>/dev/null
fi
kill -TERM "$WPID" 2>/dev/null
finish
