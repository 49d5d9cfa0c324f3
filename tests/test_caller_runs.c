/* Tests of the local runtime's cooperative deadlines (section 8, DEADLINES): the caller's
   thread runs its execution, the timeout is cooperative, EXACT stays available per
   runtime and per processor, and every other contract holds in the new mode. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include <pthread.h>
#include <time.h>

/* ---- helpers ---- */

static int64_t now_ms(void) { return am2z_monotonic_ns() / 1000000; }

static void msleep(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static int ld(const int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static void st_int(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

static am2z_runtime *rt_mode(int workers, am2z_deadlines mode, int64_t spin_ns) {
    am2z_logger_desc ldesc;
    am2z_local_desc d;
    am2z_logger *lg;
    am2z_runtime *rt;
    memset(&ldesc, 0, sizeof ldesc);
    ldesc.sink = AM2Z_SINK_SILENT;
    lg = am2z_logger_new(&ldesc, NULL);
    memset(&d, 0, sizeof d);
    d.workers = workers;
    d.logger = lg;
    d.deadlines = mode;
    d.spin_ns = spin_ns;
    rt = am2z_local_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    return rt;
}

static am2z_runtime *rt_coop(int workers) { return rt_mode(workers, AM2Z_DEADLINES_COOPERATIVE, 0); }

static am2z_processor_desc desc_of(const char *name, am2z_processor_fn fn) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    return d;
}

static am2z_processor *proc(const char *name, am2z_processor_fn fn) {
    am2z_processor_desc d = desc_of(name, fn);
    return am2z_processor_new(&d, NULL);
}

static void reg(am2z_runtime *rt, am2z_processor *p) { CHECK_INT(am2z_runtime_register(rt, p), AM2Z_STATUS_OK); }

static am2z_state *st(const char *json) { return am2z_state_parse("t", json, AM2Z_NTS, NULL); }

/* ---- processors ---- */

static am2z_result p_ident(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_retain(in));
}

/* Records the thread it ran on in the pthread_t its user_data points to. */
static am2z_result p_where(am2z_ctx *ctx, const am2z_state *in) {
    *(pthread_t *)am2z_ctx_user_data(ctx) = pthread_self();
    return am2z_ok(am2z_value_retain(in));
}

static am2z_processor *where(const char *name, pthread_t *slot, am2z_deadlines mode) {
    am2z_processor_desc d = desc_of(name, p_where);
    d.user_data = slot;
    d.deadlines = mode;
    return am2z_processor_new(&d, NULL);
}

/* Sleeps up to ms, returning early (1) once the execution is cancelled. */
static int poll_sleep(am2z_ctx *ctx, int ms) {
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (am2z_ctx_cancelled(ctx)) return 1;
        msleep(1);
    }
    return 0;
}

static int saw_cancel;
static am2z_result p_watch(am2z_ctx *ctx, const am2z_state *in) {
    if (poll_sleep(ctx, 10000)) st_int(&saw_cancel, 1);
    return am2z_ok(am2z_value_retain(in));
}

static int late_done;
static am2z_result p_ignore(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    msleep(400);
    st_int(&late_done, 1);
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "late", am2z_value_string("discarded")));
}

static am2z_processor *timed(const char *name, am2z_processor_fn fn, int64_t ms, am2z_deadlines mode) {
    am2z_processor_desc d = desc_of(name, fn);
    d.timeout_ms = ms;
    d.deadlines = mode;
    return am2z_processor_new(&d, NULL);
}

/* ---- 1. where it runs ---- */

static void test_runs_on_caller(void) {
    am2z_runtime *rt = rt_coop(2), *ex = rt_mode(2, AM2Z_DEADLINES_DEFAULT, 0);
    pthread_t t1, t2, t3;
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    CHECK_INT(am2z_runtime_config(rt).deadlines, AM2Z_DEADLINES_COOPERATIVE);
    CHECK_INT(am2z_runtime_config(ex).deadlines, AM2Z_DEADLINES_EXACT); /* the default */
    reg(rt, where("where", &t1, AM2Z_DEADLINES_DEFAULT));
    reg(ex, where("where", &t2, AM2Z_DEADLINES_DEFAULT));
    reg(ex, where("where-coop", &t3, AM2Z_DEADLINES_COOPERATIVE));
    out = am2z_runtime_execute(rt, "where", in);
    CHECK(out.error == NULL);
    CHECK(pthread_equal(t1, pthread_self()));
    am2z_outcome_clear(&out);
    /* exact (the default): a worker runs it */
    out = am2z_runtime_execute(ex, "where", in);
    CHECK(out.error == NULL);
    CHECK(!pthread_equal(t2, pthread_self()));
    am2z_outcome_clear(&out);
    /* a processor asking for cooperative deadlines on an exact runtime */
    out = am2z_runtime_execute(ex, "where-coop", in);
    CHECK(out.error == NULL);
    CHECK(pthread_equal(t3, pthread_self()));
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_runtime_free(ex);
}

static pthread_t many_threads[8];
static int many_i;
static am2z_result p_many_where(am2z_ctx *ctx, const am2z_state *in) {
    int i = __atomic_fetch_add(&many_i, 1, __ATOMIC_SEQ_CST);
    (void)ctx;
    if (i < 8) many_threads[i] = pthread_self();
    return am2z_ok(am2z_value_retain(in));
}

/* execute_many runs short items on the calling thread when no worker is awake (spin off,
   workers asleep): it wakes them only for more than one chunk of items. */
static void test_execute_many_on_caller(void) {
    am2z_runtime *rt = rt_mode(2, AM2Z_DEADLINES_COOPERATIVE, AM2Z_LOCAL_SPIN_OFF);
    am2z_state *in = st("{}");
    const am2z_state *ins[4];
    am2z_outcome outs[4], out = {0};
    int i;
    memset(outs, 0, sizeof outs);
    reg(rt, proc("mw", p_many_where));
    out = am2z_runtime_execute(rt, "mw", in); /* its duration is known from now on */
    am2z_outcome_clear(&out);
    msleep(20);
    st_int(&many_i, 0);
    for (i = 0; i < 4; i++) ins[i] = in;
    CHECK_INT(am2z_runtime_execute_many(rt, "mw", ins, 4, NULL, outs), AM2Z_STATUS_OK);
    CHECK_INT(ld(&many_i), 4);
    for (i = 0; i < 4; i++) {
        CHECK(outs[i].error == NULL);
        CHECK(pthread_equal(many_threads[i], pthread_self()));
        am2z_outcome_clear(&outs[i]);
    }
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- 2. cooperative deadlines ---- */

static void test_cooperative_deadline(void) {
    am2z_runtime *rt = rt_coop(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    am2z_execution *e;
    int64_t t0, el;
    reg(rt, timed("watch", p_watch, 50, AM2Z_DEADLINES_DEFAULT));
    reg(rt, timed("stubborn", p_ignore, 30, AM2Z_DEADLINES_DEFAULT));
    /* a processor that polls cancellation: a TimeoutError at its deadline */
    st_int(&saw_cancel, 0);
    t0 = now_ms();
    out = am2z_runtime_execute(rt, "watch", in);
    el = now_ms() - t0;
    CHECK(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT);
    CHECK(el >= 50 && el < 5000); /* not the 10 s it would sleep */
    CHECK_INT(ld(&saw_cancel), 1); /* it ran here, so it saw the cancel before we returned */
    CHECK_INT(out.attempts, 1);
    am2z_outcome_clear(&out);
    /* one that ignores it: the caller waits for it (documented), still gets the error,
       and the late result is discarded */
    st_int(&late_done, 0);
    t0 = now_ms();
    out = am2z_runtime_execute(rt, "stubborn", in);
    el = now_ms() - t0;
    CHECK(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT);
    CHECK(el >= 400);
    CHECK_INT(ld(&late_done), 1);
    CHECK(am2z_value_get(out.state, "late") == NULL);
    am2z_outcome_clear(&out);
    /* submit + wait: the same contract */
    st_int(&saw_cancel, 0);
    e = am2z_runtime_submit(rt, "watch", in, NULL, NULL);
    CHECK(e != NULL);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* A processor marked EXACT on a cooperative runtime keeps the exact deadline. */
static void test_exact_override(void) {
    am2z_runtime *rt = rt_coop(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    am2z_processor_desc bad = desc_of("bad", p_ident);
    am2z_local_desc ldesc;
    am2z_status status = AM2Z_STATUS_OK;
    int64_t t0, el;
    int i;
    reg(rt, timed("stubborn", p_ignore, 30, AM2Z_DEADLINES_EXACT));
    st_int(&late_done, 0);
    t0 = now_ms();
    out = am2z_runtime_execute(rt, "stubborn", in);
    el = now_ms() - t0;
    CHECK(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT);
    CHECK(el >= 30);
    CHECK(!ld(&late_done)); /* returned before the processor did */
    CHECK(am2z_value_get(out.state, "late") == NULL);
    am2z_outcome_clear(&out);
    for (i = 0; i < 2000 && !ld(&late_done); i++) msleep(1);
    CHECK_INT(ld(&late_done), 1);
    /* values outside the enum are refused with a detail */
    bad.deadlines = (am2z_deadlines)7;
    CHECK(am2z_processor_new(&bad, &status) == NULL);
    CHECK_INT(status, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "deadlines") != NULL);
    memset(&ldesc, 0, sizeof ldesc);
    ldesc.deadlines = (am2z_deadlines)-1;
    CHECK(am2z_local_runtime_new(&ldesc, &status) == NULL);
    CHECK_INT(status, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "deadlines") != NULL);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- 3. parallel branches ---- */

static int active, max_active;
static pthread_t branch_thread[3];

static am2z_result p_branch_long(am2z_ctx *ctx, const am2z_state *in) {
    int a = __atomic_add_fetch(&active, 1, __ATOMIC_SEQ_CST), m = ld(&max_active);
    while (a > m && !__atomic_compare_exchange_n(&max_active, &m, a, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    poll_sleep(ctx, 100);
    __atomic_sub_fetch(&active, 1, __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_retain(in));
}

static am2z_result p_tag0(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    branch_thread[0] = pthread_self();
    return am2z_ok(am2z_value_retain(in));
}
static am2z_result p_tag1(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    branch_thread[1] = pthread_self();
    return am2z_ok(am2z_value_retain(in));
}
static am2z_result p_tag2(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    branch_thread[2] = pthread_self();
    return am2z_ok(am2z_value_retain(in));
}

static am2z_processor *parallel3(const char *name, am2z_processor *a, am2z_processor *b, am2z_processor *c) {
    am2z_processor *br[3];
    am2z_parallel_desc d;
    br[0] = a;
    br[1] = b;
    br[2] = c;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.branches = br;
    d.count = 3;
    return am2z_parallel_new(&d, NULL);
}

/* Long branches still run concurrently when the workers are idle (asleep: spin off),
   each time; short ones, once measured, run on the caller's thread. */
static void test_parallel(void) {
    am2z_runtime *rt = rt_mode(2, AM2Z_DEADLINES_COOPERATIVE, AM2Z_LOCAL_SPIN_OFF);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    int round, i;
    reg(rt, parallel3("slow3", proc("l0", p_branch_long), proc("l1", p_branch_long), proc("l2", p_branch_long)));
    reg(rt, parallel3("fast3", proc("f0", p_tag0), proc("f1", p_tag1), proc("f2", p_tag2)));
    for (round = 0; round < 2; round++) {
        msleep(20); /* the workers block */
        st_int(&max_active, 0);
        out = am2z_runtime_execute(rt, "slow3", in);
        CHECK(out.error == NULL);
        CHECK(ld(&max_active) >= 2);
        am2z_outcome_clear(&out);
    }
    out = am2z_runtime_execute(rt, "fast3", in); /* measures them */
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute(rt, "fast3", in);
    CHECK(out.error == NULL);
    for (i = 0; i < 3; i++) CHECK(pthread_equal(branch_thread[i], pthread_self()));
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- 4. the other contracts in the new mode ---- */

static am2z_result p_inc(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "n", am2z_value_int(am2z_value_get_int(in, "n", 0) + 1)));
}

static am2z_result p_calls_inc(am2z_ctx *ctx, const am2z_state *in) { return am2z_ctx_call(ctx, "inc", in); }

static am2z_result p_recurse(am2z_ctx *ctx, const am2z_state *in) { return am2z_ctx_call(ctx, "recurse", in); }

static int flaky_calls;
static am2z_result p_flaky(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    if (__atomic_add_fetch(&flaky_calls, 1, __ATOMIC_SEQ_CST) < 3)
        return am2z_fail(am2z_error_with_retryable(am2z_error_business("BUSY", AM2Z_SEVERITY_LOW, "busy"), 1));
    return am2z_ok(am2z_value_retain(in));
}

static void test_nested_and_retries(void) {
    am2z_logger_desc ldesc;
    am2z_local_desc d;
    am2z_logger *lg;
    am2z_runtime *rt;
    am2z_processor_desc fd = desc_of("flaky", p_flaky);
    am2z_state *in = st("{\"n\":1}");
    am2z_outcome out = {0};
    memset(&ldesc, 0, sizeof ldesc);
    ldesc.sink = AM2Z_SINK_SILENT;
    lg = am2z_logger_new(&ldesc, NULL);
    memset(&d, 0, sizeof d);
    d.workers = 1;
    d.logger = lg;
    d.deadlines = AM2Z_DEADLINES_COOPERATIVE;
    d.max_call_depth = 3;
    rt = am2z_local_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    reg(rt, proc("inc", p_inc));
    reg(rt, proc("calls-inc", p_calls_inc));
    reg(rt, proc("recurse", p_recurse));
    fd.retry.max_attempts = 3;
    fd.retry.delay_ms = 5;
    fd.retry.backoff = AM2Z_BACKOFF_FIXED;
    reg(rt, am2z_processor_new(&fd, NULL));
    out = am2z_runtime_execute(rt, "calls-inc", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "n", 0), 2);
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute(rt, "recurse", in);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CALL_DEPTH);
    am2z_outcome_clear(&out);
    st_int(&flaky_calls, 0);
    out = am2z_runtime_execute(rt, "flaky", in);
    CHECK(out.error == NULL);
    CHECK_INT(out.attempts, 3);
    CHECK_INT(out.attempt_error_count, 2);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* stop_session of the caller's own session from a processor running on the caller's
   thread: the execution is cancelled, stop_session does not wait for itself. */
static am2z_status own_status;
static int own_cancelled;
static am2z_result p_stop_own(am2z_ctx *ctx, const am2z_state *in) {
    own_status = am2z_runtime_stop_session(ctx->runtime, am2z_ctx_meta(ctx)->session_id, 5000);
    st_int(&own_cancelled, am2z_ctx_cancelled(ctx));
    return am2z_ok(am2z_value_retain(in));
}

/* CALLBACKS: start, stop and free are refused from inside a processor, also when it
   runs on the caller's thread. */
static am2z_status in_stop, in_start;
static am2z_result p_stopper(am2z_ctx *ctx, const am2z_state *in) {
    in_stop = am2z_runtime_stop(ctx->runtime, 0);
    in_start = am2z_runtime_start(ctx->runtime);
    am2z_runtime_free(ctx->runtime); /* logged and ignored */
    return am2z_ok(am2z_value_retain(in));
}

/* stop from another thread cancels a cooperative execution running on its caller. */
static int stop_started;
static am2z_result p_wait_stop(am2z_ctx *ctx, const am2z_state *in) {
    st_int(&stop_started, 1);
    poll_sleep(ctx, 10000);
    return am2z_ok(am2z_value_retain(in));
}

static void *stop_later(void *arg) {
    int i;
    for (i = 0; i < 5000 && !ld(&stop_started); i++) msleep(1);
    am2z_runtime_stop((am2z_runtime *)arg, 10);
    return NULL;
}

static void test_stop_rules(void) {
    am2z_runtime *rt = rt_coop(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    am2z_value *s;
    pthread_t th;
    reg(rt, proc("stop-own", p_stop_own));
    reg(rt, proc("stopper", p_stopper));
    reg(rt, proc("wait-stop", p_wait_stop));
    reg(rt, proc("ident", p_ident));
    st_int(&own_cancelled, 0);
    out = am2z_runtime_execute_in_session(rt, "stop-own", in, "own");
    CHECK_INT(own_status, AM2Z_STATUS_OK);
    CHECK_INT(ld(&own_cancelled), 1);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
    am2z_outcome_clear(&out);
    s = am2z_runtime_session_stats(rt, "own");
    CHECK(s == NULL); /* forgotten */
    am2z_value_release(s);
    out = am2z_runtime_execute(rt, "stopper", in);
    CHECK(out.error == NULL);
    CHECK_INT(in_stop, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(in_start, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(am2z_runtime_is_started(rt));
    am2z_outcome_clear(&out);
    st_int(&stop_started, 0);
    CHECK(pthread_create(&th, NULL, stop_later, rt) == 0);
    out = am2z_runtime_execute(rt, "wait-stop", in);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
    if (out.error) CHECK(strstr(out.error->message, "Runtime stopped") != NULL);
    am2z_outcome_clear(&out);
    pthread_join(th, NULL);
    CHECK(!am2z_runtime_is_started(rt));
    out = am2z_runtime_execute(rt, "ident", in); /* refused while stopped */
    CHECK(out.error != NULL);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "ident", in);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* Counters settle before outcomes: execute, execute_many, and a parallel whose branches
   may run on workers. */
static void test_counters_settle(void) {
    am2z_runtime *rt = rt_coop(2);
    am2z_state *in = st("{}");
    const am2z_state *ins[40];
    am2z_outcome outs[40];
    int i, k, bad = 0;
    reg(rt, proc("ident", p_ident));
    reg(rt, parallel3("par", proc("a", p_ident), proc("b", p_ident), proc("c", p_ident)));
    for (i = 0; i < 40; i++) ins[i] = in;
    memset(outs, 0, sizeof outs);
    for (i = 0; i < 300; i++) {
        am2z_outcome out = am2z_runtime_execute_in_session(rt, i % 2 ? "par" : "ident", in, "settle");
        am2z_value *s = am2z_runtime_session_stats(rt, "settle"), *g;
        am2z_value *ps = am2z_runtime_processor_stats(rt, "ident");
        if (am2z_value_get_int(s, "running", -1) != 0 || am2z_value_get_int(s, "completed", -1) != i + 1) bad++;
        if (am2z_value_get_int(ps, "completed", -1) != (i + 2) / 2) bad++;
        g = am2z_runtime_stats(rt);
        if (am2z_value_get_int(g, "running", -1) != 0) bad++;
        am2z_value_release(g);
        am2z_value_release(s);
        am2z_value_release(ps);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
    }
    CHECK_INT(bad, 0);
    CHECK_INT(am2z_runtime_execute_many(rt, "ident", ins, 40, "settle", outs), AM2Z_STATUS_OK);
    {
        am2z_value *s = am2z_runtime_session_stats(rt, "settle");
        CHECK_INT(am2z_value_get_int(s, "running", -1), 0);
        CHECK_INT(am2z_value_get_int(s, "completed", -1), 340);
        am2z_value_release(s);
    }
    for (k = 0; k < 40; k++) {
        CHECK(outs[k].error == NULL);
        am2z_outcome_clear(&outs[k]);
    }
    CHECK_INT(am2z_runtime_stop_session(rt, "settle", 0), AM2Z_STATUS_OK);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

int main(void) {
    T_RUN(test_runs_on_caller);
    T_RUN(test_execute_many_on_caller);
    T_RUN(test_cooperative_deadline);
    T_RUN(test_exact_override);
    T_RUN(test_parallel);
    T_RUN(test_nested_and_retries);
    T_RUN(test_stop_rules);
    T_RUN(test_counters_settle);
    return t_done();
}
