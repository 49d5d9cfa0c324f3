/* Runtime contracts under concurrency, re-entry and restarts (issue 9, local runtime):
   off is a barrier, stopping from inside, rate limits for nested calls, counters that
   settle before outcomes, per-session processor stats and the metrics event, unknown
   sessions. Each test failed before the change it proves (some only under ASan/TSan). */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include <pthread.h>
#include <time.h>

static int64_t now_ms(void) { return am2z_monotonic_ns() / 1000000; }

static void msleep(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static int ld(const int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static void st_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static void add(int *p, int v) { __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST); }

/* Waits (generously) for *flag to become non-zero. */
static int wait_flag(const int *flag) {
    int64_t end = now_ms() + 10000;
    while (!ld(flag) && now_ms() < end) msleep(1);
    return ld(flag) != 0;
}

static am2z_runtime *rt_with(am2z_local_desc d) {
    am2z_logger_desc ld_;
    am2z_logger *lg;
    am2z_runtime *rt;
    memset(&ld_, 0, sizeof ld_);
    ld_.sink = AM2Z_SINK_SILENT;
    lg = am2z_logger_new(&ld_, NULL);
    if (!d.logger) d.logger = lg;
    rt = am2z_local_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    return rt;
}

static am2z_runtime *rt_new(int workers) {
    am2z_local_desc d;
    memset(&d, 0, sizeof d);
    d.workers = workers;
    return rt_with(d);
}

static am2z_processor *proc(const char *name, am2z_processor_fn fn) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    return am2z_processor_new(&d, NULL);
}

static am2z_state *st(const char *json) { return am2z_state_parse("t", json, AM2Z_NTS, NULL); }

static am2z_result p_ident(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_retain(in));
}

/* ---- 1. am2z_runtime_off is a barrier ---- */

static int emit_stop;   /* the emitting processors return once set */
static int in_handler;  /* handlers running now */
static int slow_calls;  /* calls of the slow handler */

/* Emits "tick" until told to stop. */
static am2z_result p_ticker(am2z_ctx *ctx, const am2z_state *in) {
    while (!ld(&emit_stop) && !am2z_ctx_cancelled(ctx)) {
        am2z_ctx_emit(ctx, "tick", NULL);
        msleep(1);
    }
    return am2z_ok(am2z_value_retain(in));
}

/* Slow, and writes to its user_data after the sleep: a call that outlives off writes
   to memory the test has freed (ASan: heap-use-after-free). */
static void on_tick_slow(const char *ev, const am2z_value *data, void *ud) {
    int *counter = (int *)ud;
    (void)ev;
    (void)data;
    add(&in_handler, 1);
    add(&slow_calls, 1);
    msleep(5);
    add(counter, 1);
    add(&in_handler, -1);
}

static void test_off_is_barrier(void) {
    am2z_runtime *rt = rt_new(3);
    am2z_state *in = st("{}");
    am2z_execution *e[3];
    int round, i;
    CHECK_INT(am2z_runtime_register(rt, proc("ticker", p_ticker)), AM2Z_STATUS_OK);
    st_int(&emit_stop, 0);
    for (i = 0; i < 3; i++) e[i] = am2z_runtime_submit(rt, "ticker", in, NULL, NULL);
    for (round = 0; round < 20; round++) {
        int *counter = (int *)malloc(sizeof *counter);
        int id, after;
        *counter = 0;
        st_int(&slow_calls, 0);
        id = am2z_runtime_on(rt, "tick", on_tick_slow, counter);
        CHECK(id > 0);
        CHECK(wait_flag(&slow_calls));
        CHECK(wait_flag(&in_handler)); /* a call is in progress when off starts */
        am2z_runtime_off(rt, id);
        CHECK_INT(ld(&in_handler), 0); /* not running once off returned... */
        after = ld(&slow_calls);
        free(counter);
        msleep(3);
        CHECK_INT(ld(&slow_calls), after); /* ...and never again */
    }
    st_int(&emit_stop, 1);
    for (i = 0; i < 3; i++) {
        am2z_outcome out = {0};
        CHECK_INT(am2z_execution_wait(e[i], -1, &out), AM2Z_STATUS_OK);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
        am2z_execution_free(e[i]);
    }
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* A handler removing itself: off returns at once (it does not wait for the very call
   it is made from), and the handler is not called again. */
static am2z_runtime *self_rt;
static int self_id, self_calls, self_off_done;

static void on_tick_self_off(const char *ev, const am2z_value *data, void *ud) {
    (void)ev;
    (void)data;
    (void)ud;
    if (__atomic_add_fetch(&self_calls, 1, __ATOMIC_SEQ_CST) == 1) {
        am2z_runtime_off(self_rt, ld(&self_id));
        st_int(&self_off_done, 1);
    }
}

static void test_off_from_inside(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_state *in = st("{}");
    am2z_execution *e;
    am2z_outcome out = {0};
    int calls;
    self_rt = rt;
    st_int(&self_calls, 0);
    st_int(&self_off_done, 0);
    st_int(&emit_stop, 0);
    CHECK_INT(am2z_runtime_register(rt, proc("ticker", p_ticker)), AM2Z_STATUS_OK);
    st_int(&self_id, am2z_runtime_on(rt, "tick", on_tick_self_off, NULL));
    e = am2z_runtime_submit(rt, "ticker", in, NULL, NULL);
    CHECK(wait_flag(&self_off_done));
    calls = ld(&self_calls);
    msleep(20);
    CHECK_INT(ld(&self_calls), calls);
    CHECK_INT(calls, 1); /* one worker emits: no call started before off */
    st_int(&emit_stop, 1);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- 2. stopping from inside ---- */

typedef struct inside_result {
    am2z_status stop, start, stop_again;
    char detail[256];
    int done;
} inside_result;

static inside_result inside;

static void inside_try(am2z_runtime *rt) {
    inside.stop = am2z_runtime_stop(rt, 0);
    snprintf(inside.detail, sizeof inside.detail, "%s", am2z_status_detail());
    inside.start = am2z_runtime_start(rt);
    am2z_runtime_free(rt); /* forbidden from inside: logged and ignored */
    inside.stop_again = am2z_runtime_stop(rt, 1000);
    st_int(&inside.done, 1);
}

static am2z_result p_stopper(am2z_ctx *ctx, const am2z_state *in) {
    inside_try(ctx->runtime);
    return am2z_ok(am2z_value_retain(in));
}

static int free_logged;

static void log_capture(const am2z_log_entry *e, void *ud) {
    (void)ud;
    if (e->level == AM2Z_LOG_ERROR && strstr(e->message, "am2z_runtime_free")) add(&free_logged, 1);
}

static am2z_runtime *rt_logged(int workers) {
    am2z_logger_desc ld_;
    am2z_local_desc d;
    am2z_logger *lg;
    am2z_runtime *rt;
    memset(&ld_, 0, sizeof ld_);
    ld_.sink = AM2Z_SINK_CALLBACK;
    ld_.callback = log_capture;
    lg = am2z_logger_new(&ld_, NULL);
    memset(&d, 0, sizeof d);
    d.workers = workers;
    d.logger = lg;
    rt = am2z_local_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    return rt;
}

static void check_inside_refused(am2z_runtime *rt) {
    am2z_state *in = st("{\"n\":1}");
    am2z_outcome out = {0};
    CHECK_INT(inside.stop, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(inside.detail, "inside") != NULL);
    CHECK_INT(inside.start, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(inside.stop_again, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(ld(&free_logged) >= 1);
    CHECK(am2z_runtime_is_started(rt));
    /* still whole: it runs, then stops, restarts and frees from outside */
    out = am2z_runtime_execute(rt, "ident", in);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_stop(rt, 1000), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "ident", in);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
}

static void test_stop_from_processor(void) {
    am2z_runtime *rt = rt_logged(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    memset(&inside, 0, sizeof inside);
    st_int(&free_logged, 0);
    CHECK_INT(am2z_runtime_register(rt, proc("stopper", p_stopper)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc("ident", p_ident)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "stopper", in);
    CHECK(out.error == NULL); /* the refused calls left the execution alone */
    am2z_outcome_clear(&out);
    CHECK(ld(&inside.done));
    check_inside_refused(rt);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void on_started_stop(const char *ev, const am2z_value *data, void *ud) {
    (void)ev;
    (void)data;
    if (!ld(&inside.done)) inside_try((am2z_runtime *)ud);
}

static void test_stop_from_handler(void) {
    am2z_runtime *rt = rt_logged(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    int id;
    memset(&inside, 0, sizeof inside);
    st_int(&free_logged, 0);
    CHECK_INT(am2z_runtime_register(rt, proc("ident", p_ident)), AM2Z_STATUS_OK);
    id = am2z_runtime_on(rt, "processor:job:started", on_started_stop, rt);
    out = am2z_runtime_execute(rt, "ident", in);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    CHECK(ld(&inside.done));
    am2z_runtime_off(rt, id);
    check_inside_refused(rt);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* "session:cleanup" is emitted by stop itself, on the stopping thread: a handler that
   stops again must not deadlock on the stop in progress. */
static void on_cleanup_stop(const char *ev, const am2z_value *data, void *ud) {
    (void)ev;
    (void)data;
    if (!ld(&inside.done)) inside_try((am2z_runtime *)ud);
}

static void test_stop_from_cleanup_handler(void) {
    am2z_runtime *rt = rt_logged(1);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    memset(&inside, 0, sizeof inside);
    st_int(&free_logged, 0);
    CHECK_INT(am2z_runtime_register(rt, proc("ident", p_ident)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "ident", in);
    am2z_outcome_clear(&out);
    am2z_runtime_on(rt, "session:cleanup", on_cleanup_stop, rt);
    CHECK_INT(am2z_runtime_stop(rt, 0), AM2Z_STATUS_OK);
    CHECK(ld(&inside.done));
    CHECK_INT(inside.stop, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(inside.start, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(ld(&free_logged) >= 1);
    CHECK(!am2z_runtime_is_started(rt));
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "ident", in);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* stop_session of the session the caller runs in: the others get the grace period,
   the caller's own execution is cancelled at once instead of waiting for itself. */
static am2z_status own_stop_status;
static int64_t own_stop_ms;
static int own_stop_done;

static am2z_result p_stop_own_session(am2z_ctx *ctx, const am2z_state *in) {
    int64_t t0 = now_ms();
    own_stop_status = am2z_runtime_stop_session(ctx->runtime, am2z_ctx_meta(ctx)->session_id, 5000);
    own_stop_ms = now_ms() - t0;
    CHECK(am2z_ctx_cancelled(ctx));
    st_int(&own_stop_done, 1); /* the caller may hold the outcome before this returns */
    return am2z_ok(am2z_value_retain(in));
}

static void test_stop_own_session(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    am2z_value *s;
    CHECK_INT(am2z_runtime_register(rt, proc("self-stop", p_stop_own_session)), AM2Z_STATUS_OK);
    own_stop_ms = -1;
    st_int(&own_stop_done, 0);
    out = am2z_runtime_execute_in_session(rt, "self-stop", in, "own");
    CHECK(wait_flag(&own_stop_done));
    CHECK_INT(own_stop_status, AM2Z_STATUS_OK);
    CHECK(own_stop_ms >= 0 && own_stop_ms < 2500); /* not the 5 s grace */
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
    if (out.error) CHECK(strstr(out.error->message, "Session own stopped") != NULL);
    am2z_outcome_clear(&out);
    s = am2z_runtime_session_stats(rt, "own");
    CHECK(s == NULL); /* forgotten */
    am2z_value_release(s);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- 3. rate limits hold for nested calls ---- */

static int64_t limited_starts[8];
static int limited_n;

static am2z_result p_limited(am2z_ctx *ctx, const am2z_state *in) {
    int i = __atomic_fetch_add(&limited_n, 1, __ATOMIC_SEQ_CST);
    (void)ctx;
    if (i < 8) limited_starts[i] = am2z_monotonic_ns();
    return am2z_ok(am2z_value_retain(in));
}

static am2z_result p_fan3(am2z_ctx *ctx, const am2z_state *in) {
    const char *names[3] = {"limited", "limited", "limited"};
    const am2z_state *ins[3];
    am2z_result r[3];
    int i, ok = 1;
    ins[0] = ins[1] = ins[2] = in;
    am2z_ctx_call_many(ctx, names, ins, 3, r);
    for (i = 0; i < 3; i++) {
        ok &= r[i].state != NULL;
        am2z_result_clear(&r[i]);
    }
    return ok ? am2z_ok(am2z_value_retain(in)) : am2z_fail(am2z_error_business("X", AM2Z_SEVERITY_LOW, "a call failed"));
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_rate_limit_nested(void) {
    int workers;
    for (workers = 1; workers <= 2; workers++) {
        am2z_runtime *rt = rt_new(workers);
        am2z_processor_desc d;
        am2z_state *in = st("{}");
        am2z_outcome out = {0};
        int i;
        memset(&d, 0, sizeof d);
        d.name = "limited";
        d.fn = p_limited;
        d.queue.rate_limit_per_minute = 300; /* one start every 200 ms */
        CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
        CHECK_INT(am2z_runtime_register(rt, proc("fan3", p_fan3)), AM2Z_STATUS_OK);
        st_int(&limited_n, 0);
        out = am2z_runtime_execute(rt, "fan3", in);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
        CHECK_INT(ld(&limited_n), 3);
        qsort(limited_starts, 3, sizeof limited_starts[0], cmp_i64);
        for (i = 1; i < 3; i++) {
            int64_t gap_ms = (limited_starts[i] - limited_starts[i - 1]) / 1000000;
            if (gap_ms < 190) T_FAIL_("workers %d: starts %d and %d are %lld ms apart", workers, i - 1, i,
                                      (long long)gap_ms);
        }
        am2z_value_release(in);
        am2z_runtime_free(rt);
    }
}

/* Top-level executions too. Two workers: one runs the first start (which takes
   450 ms), the other reserves the next two starts (+200, +400 ms) and then runs
   "hold" until +500 ms, so both reserved starts are overdue when a worker frees up;
   they still start 200 ms apart. */
static am2z_result p_limited_first_slow(am2z_ctx *ctx, const am2z_state *in) {
    int i = __atomic_fetch_add(&limited_n, 1, __ATOMIC_SEQ_CST);
    (void)ctx;
    if (i < 8) limited_starts[i] = am2z_monotonic_ns();
    if (i == 0) msleep(450);
    return am2z_ok(am2z_value_retain(in));
}

static am2z_result p_hold(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    msleep(480);
    return am2z_ok(am2z_value_retain(in));
}

static void test_rate_limit_late_starts(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_processor_desc d;
    am2z_state *in = st("{}");
    am2z_execution *e[4];
    am2z_outcome out = {0};
    int i;
    memset(&d, 0, sizeof d);
    d.name = "limited";
    d.fn = p_limited_first_slow;
    d.queue.rate_limit_per_minute = 300;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc("hold", p_hold)), AM2Z_STATUS_OK);
    st_int(&limited_n, 0);
    for (i = 0; i < 3; i++) e[i] = am2z_runtime_submit(rt, "limited", in, NULL, NULL);
    msleep(20);
    e[3] = am2z_runtime_submit(rt, "hold", in, NULL, NULL);
    for (i = 0; i < 4; i++) {
        CHECK_INT(am2z_execution_wait(e[i], -1, &out), AM2Z_STATUS_OK);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
        am2z_execution_free(e[i]);
    }
    CHECK_INT(ld(&limited_n), 3);
    qsort(limited_starts, 3, sizeof limited_starts[0], cmp_i64);
    for (i = 1; i < 3; i++) {
        int64_t gap_ms = (limited_starts[i] - limited_starts[i - 1]) / 1000000;
        if (gap_ms < 190) T_FAIL_("starts %d and %d are %lld ms apart", i - 1, i, (long long)gap_ms);
    }
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- 4. counters settle before outcomes ---- */

/* Longer than the caller's spin, so the caller blocks and the worker's wake-up may
   hand the CPU straight to it before the worker's next instruction. */
static am2z_result p_nap(am2z_ctx *ctx, const am2z_state *in) {
    struct timespec ts = {0, 300000};
    (void)ctx;
    nanosleep(&ts, NULL);
    return am2z_ok(am2z_value_retain(in));
}

static void test_counters_settle(void) {
    am2z_runtime *rt;
    am2z_state *in = st("{}");
    int i, round, bad_session = 0, bad_global = 0;
    for (round = 0; round < 2; round++) {
        rt = rt_new(round ? 2 : 1);
        CHECK_INT(am2z_runtime_register(rt, proc("ident", round ? p_ident : p_nap)), AM2Z_STATUS_OK);
        for (i = 0; i < 2000; i++) {
            am2z_outcome out = am2z_runtime_execute_in_session(rt, "ident", in, "settle");
            am2z_value *s = am2z_runtime_session_stats(rt, "settle");
            if (am2z_value_get_int(s, "running", -1) != 0 || am2z_value_get_int(s, "completed", -1) != i + 1) {
                if (!bad_session++)
                    T_FAIL_("round %d: session running %lld completed %lld", i,
                            (long long)am2z_value_get_int(s, "running", -1),
                            (long long)am2z_value_get_int(s, "completed", -1));
            }
            am2z_value_release(s);
            s = am2z_runtime_stats(rt);
            if (am2z_value_get_int(s, "running", -1) != 0 || am2z_value_get_int(s, "completed", -1) != i + 1) {
                if (!bad_global++)
                    T_FAIL_("round %d: global running %lld completed %lld", i,
                            (long long)am2z_value_get_int(s, "running", -1),
                            (long long)am2z_value_get_int(s, "completed", -1));
            }
            am2z_value_release(s);
            CHECK(out.error == NULL);
            am2z_outcome_clear(&out);
        }
        am2z_runtime_free(rt);
    }
    CHECK_INT(bad_session, 0);
    CHECK_INT(bad_global, 0);
    am2z_value_release(in);
}

/* ---- 5. stats users ask for ---- */

static am2z_result p_fail(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    (void)in;
    return am2z_fail(am2z_error_business("NOPE", AM2Z_SEVERITY_LOW, "not today"));
}

static am2z_result p_calls_ident(am2z_ctx *ctx, const am2z_state *in) {
    return am2z_ctx_call(ctx, "ident", in);
}

static void test_session_processor_stats(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    const am2z_state *many[3];
    am2z_outcome out = {0}, outs[3];
    am2z_value *s;
    int i;
    CHECK_INT(am2z_runtime_register(rt, proc("ident", p_ident)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc("bad", p_fail)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc("outer", p_calls_ident)), AM2Z_STATUS_OK);
    for (i = 0; i < 2; i++) {
        out = am2z_runtime_execute_in_session(rt, "ident", in, "sa");
        am2z_outcome_clear(&out);
    }
    out = am2z_runtime_execute_in_session(rt, "bad", in, "sa");
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute_in_session(rt, "outer", in, "sa"); /* + one nested ident */
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute_in_session(rt, "ident", in, "sb");
    am2z_outcome_clear(&out);
    many[0] = many[1] = many[2] = in;
    memset(outs, 0, sizeof outs);
    CHECK_INT(am2z_runtime_execute_many(rt, "ident", many, 3, "sb", outs), AM2Z_STATUS_OK);
    for (i = 0; i < 3; i++) am2z_outcome_clear(&outs[i]);
    s = am2z_runtime_session_stats(rt, "sa");
    CHECK_INT(am2z_value_get_int(s, "/processors/ident/completed", -1), 3);
    CHECK_INT(am2z_value_get_int(s, "/processors/ident/failed", -1), 0);
    CHECK_INT(am2z_value_get_int(s, "/processors/bad/failed", -1), 1);
    CHECK_INT(am2z_value_get_int(s, "/processors/bad/completed", -1), 0);
    CHECK_INT(am2z_value_get_int(s, "/processors/outer/completed", -1), 1);
    CHECK_INT(am2z_value_get_int(s, "/processors/outer/retried", -1), 0);
    am2z_value_release(s);
    s = am2z_runtime_session_stats(rt, "sb");
    CHECK_INT(am2z_value_get_int(s, "/processors/ident/completed", -1), 4);
    CHECK(am2z_value_find(am2z_value_get(s, "processors"), "bad", 3) == NULL);
    am2z_value_release(s);
    /* another processor under the same name adds to the same entry */
    CHECK_INT(am2z_runtime_unregister(rt, "ident"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc("ident", p_ident)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute_in_session(rt, "ident", in, "sb");
    am2z_outcome_clear(&out);
    s = am2z_runtime_session_stats(rt, "sb");
    CHECK_INT(am2z_value_get_int(s, "/processors/ident/completed", -1), 5);
    am2z_value_release(s);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_registered_processor_in_stats(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_value *s, *p;
    CHECK_INT(am2z_runtime_register(rt, proc("fresh", p_ident)), AM2Z_STATUS_OK);
    s = am2z_runtime_stats(rt);
    CHECK_INT(am2z_value_get_int(s, "/processors/fresh/completed", -1), 0);
    CHECK_INT(am2z_value_get_int(s, "/processors/fresh/failed", -1), 0);
    CHECK_INT(am2z_value_get_int(s, "/processors/fresh/retried", -1), 0);
    am2z_value_release(s);
    p = am2z_runtime_processor_stats(rt, "fresh");
    CHECK(p != NULL);
    CHECK_INT(am2z_value_get_int(p, "completed", -1), 0);
    CHECK_DBL(am2z_value_get_double(p, "p50Ms", -1), 0, 0);
    am2z_value_release(p);
    CHECK(am2z_runtime_processor_stats(rt, "never-registered") == NULL);
    am2z_runtime_free(rt);
}

static int metrics_events, metrics_ok, busy_started, busy_release;

static void on_metrics(const char *ev, const am2z_value *data, void *ud) {
    (void)ud;
    if (strcmp(ev, "metrics") != 0) return;
    if (am2z_value_get(data, "processors") && am2z_value_get_int(data, "workers", -1) == 2) add(&metrics_ok, 1);
    add(&metrics_events, 1);
}

/* Holds a worker until released. */
static am2z_result p_busy(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    add(&busy_started, 1);
    while (!ld(&busy_release)) msleep(1);
    return am2z_ok(am2z_value_retain(in));
}

static void test_metrics_event(void) {
    am2z_local_desc d;
    am2z_runtime *rt;
    am2z_state *in = st("{}");
    am2z_execution *e[2];
    int i, during;
    int64_t end;
    /* off by default */
    memset(&d, 0, sizeof d);
    d.workers = 2;
    rt = rt_with(d);
    CHECK_INT(am2z_runtime_config(rt).metrics_interval_ms, 0);
    st_int(&metrics_events, 0);
    am2z_runtime_on(rt, "metrics", on_metrics, NULL);
    msleep(150);
    CHECK_INT(ld(&metrics_events), 0);
    am2z_runtime_free(rt);
    /* every 20 ms, from a thread that is not a worker: events keep coming while both
       workers are busy */
    memset(&d, 0, sizeof d);
    d.workers = 2;
    d.metrics_interval_ms = 20;
    rt = rt_with(d);
    CHECK_INT(am2z_runtime_config(rt).metrics_interval_ms, 20);
    CHECK_INT(am2z_runtime_register(rt, proc("busy", p_busy)), AM2Z_STATUS_OK);
    st_int(&metrics_events, 0);
    st_int(&metrics_ok, 0);
    st_int(&busy_started, 0);
    st_int(&busy_release, 0);
    am2z_runtime_on(rt, "metrics", on_metrics, NULL);
    for (i = 0; i < 2; i++) e[i] = am2z_runtime_submit(rt, "busy", in, NULL, NULL);
    end = now_ms() + 10000;
    while (ld(&busy_started) < 2 && now_ms() < end) msleep(1);
    CHECK_INT(ld(&busy_started), 2);
    during = ld(&metrics_events);
    end = now_ms() + 10000;
    while (ld(&metrics_events) < during + 3 && now_ms() < end) msleep(5);
    CHECK(ld(&metrics_events) >= during + 3);
    CHECK_INT(ld(&metrics_ok), ld(&metrics_events));
    st_int(&busy_release, 1);
    for (i = 0; i < 2; i++) {
        am2z_outcome out = {0};
        CHECK_INT(am2z_execution_wait(e[i], -1, &out), AM2Z_STATUS_OK);
        am2z_outcome_clear(&out);
        am2z_execution_free(e[i]);
    }
    /* stopped: no more events; restarted: they resume */
    CHECK_INT(am2z_runtime_stop(rt, 100), AM2Z_STATUS_OK);
    during = ld(&metrics_events);
    msleep(80);
    CHECK_INT(ld(&metrics_events), during);
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    end = now_ms() + 10000;
    while (ld(&metrics_events) == during && now_ms() < end) msleep(5);
    CHECK(ld(&metrics_events) > during);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- 6. unknown sessions ---- */

static void test_unknown_session(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    CHECK_INT(am2z_runtime_register(rt, proc("ident", p_ident)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_stop_session(rt, "never", 0), AM2Z_STATUS_NOT_FOUND);
    CHECK(strstr(am2z_status_detail(), "never") != NULL);
    CHECK(am2z_runtime_session_stats(rt, "never") == NULL);
    CHECK(strstr(am2z_status_detail(), "session_stats 'never'") != NULL);
    CHECK(am2z_runtime_session_stats(rt, "default") == NULL); /* not used yet */
    CHECK_INT(am2z_runtime_stop_session(rt, "default", 0), AM2Z_STATUS_NOT_FOUND);
    /* a stopped session is forgotten: unknown again */
    out = am2z_runtime_execute_in_session(rt, "ident", in, "once");
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_stop_session(rt, "once", 0), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_stop_session(rt, "once", 0), AM2Z_STATUS_NOT_FOUND);
    CHECK(am2z_runtime_session_stats(rt, "once") == NULL);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- 7. spin as a runtime option ---- */

static int64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void test_spin_setting(void) {
    am2z_local_desc d;
    am2z_runtime *rt;
    am2z_state *in = st("{\"n\":1}");
    am2z_status status;
    int64_t c0, used;
    int i;
    /* resolved and reported: default, explicit, off; out of range is invalid */
    memset(&d, 0, sizeof d);
    d.workers = 2;
    rt = rt_with(d);
    CHECK_INT(am2z_runtime_config(rt).spin_ns, AM2Z_LOCAL_SPIN_NS);
    am2z_runtime_free(rt);
    d.spin_ns = 50000;
    rt = rt_with(d);
    CHECK_INT(am2z_runtime_config(rt).spin_ns, 50000);
    am2z_runtime_free(rt);
    d.spin_ns = -2;
    CHECK(am2z_local_runtime_new(&d, &status) == NULL);
    CHECK_INT(status, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "spin_ns") != NULL);
    d.spin_ns = AM2Z_LOCAL_SPIN_OFF;
    rt = rt_with(d);
    CHECK_INT(am2z_runtime_config(rt).spin_ns, 0);
    /* without spinning, executions still complete (every wait blocks) */
    CHECK_INT(am2z_runtime_register(rt, proc("ident", p_ident)), AM2Z_STATUS_OK);
    for (i = 0; i < 200; i++) {
        am2z_outcome out = am2z_runtime_execute(rt, "ident", in);
        CHECK(out.error == NULL && out.state != NULL);
        am2z_outcome_clear(&out);
    }
    /* idle without spinning: (almost) no CPU. Generous bound: 50 ms over 500 ms. */
    msleep(20);
    c0 = cpu_ns();
    msleep(500);
    used = cpu_ns() - c0;
    if (used >= 50000000) fprintf(stderr, "idle runtime used %lld ns of CPU\n", (long long)used);
    CHECK(used < 50000000);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* `test_contracts NAME` runs only the tests whose name contains NAME. */
static const char *only;
#define RUN(fn) do { if (!only || strstr(#fn, only)) T_RUN(fn); } while (0)

int main(int argc, char **argv) {
    only = argc > 1 ? argv[1] : NULL;
    RUN(test_off_is_barrier);
    RUN(test_off_from_inside);
    RUN(test_stop_from_processor);
    RUN(test_stop_from_handler);
    RUN(test_stop_from_cleanup_handler);
    RUN(test_stop_own_session);
    RUN(test_rate_limit_nested);
    RUN(test_rate_limit_late_starts);
    RUN(test_counters_settle);
    RUN(test_session_processor_stats);
    RUN(test_registered_processor_in_stats);
    RUN(test_metrics_event);
    RUN(test_unknown_session);
    RUN(test_spin_setting);
    return t_done();
}
