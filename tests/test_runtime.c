/* Tests of sections 7 (runtime interface) and 8 (local runtime). */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include "fixture.h"
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

/* Sleeps up to ms, returning early (1) once the execution is cancelled. */
static int poll_sleep(am2z_ctx *ctx, int ms) {
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (am2z_ctx_cancelled(ctx)) return 1;
        msleep(1);
    }
    return 0;
}

static am2z_runtime *rt_new(int workers) {
    am2z_logger *lg = fx_quiet();
    am2z_local_desc d;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.workers = workers;
    d.logger = lg;
    rt = am2z_local_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    return rt;
}

static am2z_processor *proc(const char *name, am2z_processor_fn fn) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    return am2z_processor_new(&d, NULL);
}

static am2z_processor *proc_desc(am2z_processor_desc d) { return am2z_processor_new(&d, NULL); }

/* Registers p, which register consumes. */
static void reg(am2z_runtime *rt, am2z_processor *p) {
    CHECK_INT(am2z_runtime_register(rt, p), AM2Z_STATUS_OK);
}

static am2z_state *st(const char *json) { return am2z_state_parse("t", json, AM2Z_NTS, NULL); }

/* ---- processors ---- */

static am2z_result p_inc(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "n", am2z_value_int(am2z_value_get_int(in, "n", 0) + 1)));
}

static am2z_result p_ident(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_retain(in));
}

static am2z_result p_business_fail(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    (void)in;
    return am2z_fail(am2z_error_business("NOPE", AM2Z_SEVERITY_LOW, "not today"));
}

/* ---- registry ---- */

static void test_register_basics(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_processor *a = proc("a", p_inc), *a2 = proc("a", p_inc), *b = proc("b", p_inc), *got;
    am2z_value *names;
    /* register consumes: the test hands over extra references to keep using a, a2, b */
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_retain(a)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_retain(a)), AM2Z_STATUS_OK); /* same object: no-op */
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_retain(a2)), AM2Z_STATUS_EXISTS); /* same name */
    CHECK_STR(am2z_status_detail(), "register 'a': another processor is registered as 'a'");
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_retain(b)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(am2z_runtime_is_registered(rt, "a"));
    CHECK(!am2z_runtime_is_registered(rt, "zz"));
    got = am2z_runtime_lookup(rt, "b");
    CHECK(got == b);
    am2z_processor_release(got);
    names = am2z_runtime_list(rt);
    CHECK_INT(am2z_value_len(names), 2);
    CHECK_STR(am2z_value_as_string(am2z_value_at(names, 0), NULL), "a");
    CHECK_STR(am2z_value_as_string(am2z_value_at(names, 1), NULL), "b");
    am2z_value_release(names);
    CHECK_INT(am2z_runtime_unregister(rt, "a"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_unregister(rt, "a"), AM2Z_STATUS_NOT_FOUND);
    CHECK(!am2z_runtime_is_registered(rt, "a"));
    CHECK(am2z_runtime_is_registered(rt, "b"));
    /* replace = unregister + register */
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_retain(a2)), AM2Z_STATUS_OK);
    names = am2z_runtime_list(rt);
    CHECK_STR(am2z_value_as_string(am2z_value_at(names, 0), NULL), "b");
    CHECK_STR(am2z_value_as_string(am2z_value_at(names, 1), NULL), "a");
    am2z_value_release(names);
    am2z_processor_release(a);
    am2z_processor_release(a2);
    am2z_processor_release(b);
    am2z_runtime_free(rt);
}

/* chain(x) or chain(x, y); consumes x and y. */
static am2z_processor *chain2(const char *name, am2z_processor *x, am2z_processor *y) {
    am2z_processor *steps[2];
    am2z_chain_desc d;
    memset(&d, 0, sizeof d);
    steps[0] = x;
    steps[1] = y;
    d.name = name;
    d.steps = steps;
    d.count = y ? 2 : 1;
    return am2z_chain_new(&d, NULL);
}

static void test_register_children_and_many(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_processor *x = proc("x", p_inc), *c = chain2("c", am2z_processor_retain(x), proc("y", p_inc));
    am2z_processor *many[2];
    am2z_processor_desc dd;
    am2z_processor *deps[1];
    am2z_value *names;
    CHECK_INT(am2z_runtime_register(rt, c), AM2Z_STATUS_OK);
    CHECK(am2z_runtime_is_registered(rt, "x"));
    CHECK(am2z_runtime_is_registered(rt, "y"));
    names = am2z_runtime_list(rt); /* children first */
    CHECK_INT(am2z_value_len(names), 3);
    CHECK_STR(am2z_value_as_string(am2z_value_at(names, 2), NULL), "c");
    am2z_value_release(names);
    /* dependencies are registered with their processor */
    memset(&dd, 0, sizeof dd);
    deps[0] = proc("d", p_inc);
    dd.name = "withdep";
    dd.fn = p_inc;
    dd.dependencies = deps;
    dd.dependency_count = 1;
    many[0] = am2z_processor_new(&dd, NULL);
    many[1] = x; /* already there: fine */
    CHECK_INT(am2z_runtime_register_many(rt, many, 2), AM2Z_STATUS_OK);
    CHECK(am2z_runtime_is_registered(rt, "d"));
    CHECK(am2z_runtime_is_registered(rt, "withdep"));
    am2z_runtime_free(rt);
}

static void test_register_cycle(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_processor *direct = chain2("loop", proc("loop", p_inc), NULL);
    am2z_processor *outer = chain2("outer", chain2("mid", proc("outer", p_inc), NULL), NULL);
    am2z_processor *both = chain2("both", proc("other", p_inc), proc("other", p_ident));
    CHECK_INT(am2z_runtime_register(rt, direct), AM2Z_STATUS_CYCLE);
    CHECK_STR(am2z_status_detail(), "register 'loop': 'loop' contains a processor with its own name");
    CHECK_INT(am2z_runtime_register(rt, outer), AM2Z_STATUS_CYCLE);
    CHECK(!am2z_runtime_is_registered(rt, "mid")); /* all or nothing */
    CHECK(!am2z_runtime_is_registered(rt, "loop"));
    CHECK_INT(am2z_runtime_register(rt, both), AM2Z_STATUS_EXISTS); /* two "other"s */
    CHECK(!am2z_runtime_is_registered(rt, "other"));
    am2z_runtime_free(rt); /* each failed register released its processor (LSan checks) */
}

static void test_register_depth_limit(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_processor *cur = proc("leaf", p_inc);
    char name[32];
    int i;
    /* leaf at depth AM2Z_REGISTER_MAX_DEPTH - 1 below the top: allowed */
    for (i = 1; i < AM2Z_REGISTER_MAX_DEPTH; i++) {
        snprintf(name, sizeof name, "lvl%d", i);
        cur = chain2(name, cur, NULL);
    }
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_retain(cur)), AM2Z_STATUS_OK);
    cur = chain2("toodeep", cur, NULL);
    /* registered subtrees are not walked again, so a fresh runtime sees the full depth */
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_retain(cur)), AM2Z_STATUS_OK);
    am2z_runtime_free(rt);
    rt = rt_new(1);
    CHECK_INT(am2z_runtime_register(rt, cur), AM2Z_STATUS_LIMIT);
    CHECK(!am2z_runtime_is_registered(rt, "toodeep"));
    CHECK(!am2z_runtime_is_registered(rt, "leaf"));
    am2z_runtime_free(rt);
}

/* ---- execute ---- */

static void test_execute_basic_and_unknown(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{\"n\":1}");
    am2z_outcome out = {0};
    const char *id, *dash;
    reg(rt, proc("inc", p_inc));
    out = am2z_runtime_execute(rt, "inc", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "n", 0), 2);
    CHECK_INT(am2z_state_version(out.state), 2); /* bumped once */
    CHECK_INT(out.attempts, 1);
    CHECK_INT(out.attempt_error_count, 0);
    CHECK(out.started_at > 0);
    id = out.execution_id;
    CHECK(strncmp(id, "inc-", 4) == 0);
    dash = strrchr(id, '-');
    CHECK(dash && strlen(dash + 1) == 10);
    am2z_outcome_clear(&out);
    CHECK(out.state == NULL && out.error == NULL);
    out = am2z_runtime_execute(rt, "missing", in);
    CHECK(out.error != NULL);
    if (out.error) {
        CHECK_INT(out.error->kind, AM2Z_ERROR_PROCESSOR_NOT_FOUND);
        CHECK(strstr(out.error->message, "missing") != NULL);
        CHECK(strstr(out.error->message, "inc") != NULL); /* lists what is available */
    }
    CHECK(out.state == in || am2z_value_equal(out.state, in)); /* the input comes back */
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute(rt, NULL, in);
    CHECK(out.error != NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_execution_id(void) {
    char a[64], b[64], lg[200];
    int i, same = 0;
    am2z_execution_id_generate("proc", a);
    CHECK(strncmp(a, "proc-", 5) == 0);
    for (i = 0; i < 2000; i++) {
        am2z_execution_id_generate("proc", b);
        same += strcmp(a, b) == 0;
    }
    CHECK_INT(same, 0);
    memset(lg, 'x', sizeof lg - 1);
    lg[sizeof lg - 1] = '\0';
    am2z_execution_id_generate(lg, a);
    CHECK(strlen(a) <= 63);
    CHECK(strncmp(a, "xxxxxxxx", 8) == 0);
}

static int slow_started;

static am2z_result p_slow_poll(am2z_ctx *ctx, const am2z_state *in) {
    int ms = (int)am2z_value_get_int(in, "ms", 100);
    __atomic_store_n(&slow_started, 1, __ATOMIC_SEQ_CST);
    if (poll_sleep(ctx, ms)) return am2z_fail(am2z_error_cancelled("saw cancel"));
    return am2z_ok(am2z_value_retain(in));
}

static void test_submit_wait_timeout(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{\"ms\":80}");
    am2z_execution *e;
    am2z_outcome out = {0};
    reg(rt, proc("slow", p_slow_poll));
    e = am2z_runtime_submit(rt, "slow", in, NULL, NULL);
    CHECK(e != NULL);
    memset(&out, 0, sizeof out);
    CHECK_INT(am2z_execution_wait(e, 5, &out), AM2Z_STATUS_TIMEOUT);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK(out.duration_ms >= 70);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_execution_wait(e, 0, &out), AM2Z_STATUS_OK); /* again: a fresh copy */
    CHECK(out.error == NULL && out.state != NULL);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    CHECK(am2z_runtime_submit(rt, "nope", in, NULL, NULL) == NULL);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* The options desc: NULL and a zeroed desc are plain submit; session_id is honoured by
   both the handle path and the blocking one. */
static void test_submit_with_desc(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{\"n\":1}");
    am2z_submit_desc d;
    am2z_outcome out = {0};
    am2z_execution *e;
    am2z_status status = AM2Z_STATUS_IO;
    reg(rt, proc("inc", p_inc));
    e = am2z_runtime_submit_with(rt, "inc", in, NULL, &status);
    CHECK(e != NULL);
    CHECK_INT(status, AM2Z_STATUS_OK);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK_STR(out.session_id, "default");
    CHECK_INT(am2z_value_get_int(out.state, "n", 0), 2);
    am2z_execution_free(e);
    memset(&d, 0, sizeof d);
    d.session_id = "tenant-7";
    e = am2z_runtime_submit_with(rt, "inc", in, &d, NULL);
    CHECK(e != NULL);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK_STR(out.session_id, "tenant-7");
    am2z_execution_free(e);
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute_with(rt, "inc", in, &d);
    CHECK(out.error == NULL);
    CHECK_STR(out.session_id, "tenant-7");
    am2z_outcome_clear(&out);
    d.session_id = "bad id with spaces";
    CHECK(am2z_runtime_submit_with(rt, "inc", in, &d, &status) == NULL);
    CHECK_INT(status, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(am2z_runtime_submit_with(NULL, "inc", in, &d, &status) == NULL);
    CHECK_INT(status, AM2Z_STATUS_INVALID_ARGUMENT);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_execute_many_order(void) {
    am2z_runtime *rt = rt_new(2);
    enum { N = 1000 };
    am2z_state **ins = (am2z_state **)malloc(N * sizeof *ins);
    am2z_outcome *outs = (am2z_outcome *)calloc(N, sizeof *outs); /* outcomes start zeroed */
    am2z_retry_policy rp;
    am2z_processor_desc d;
    char buf[64];
    int i, bad = 0;
    reg(rt, proc("inc", p_inc));
    for (i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "{\"n\":%d}", i);
        ins[i] = st(buf);
    }
    CHECK_INT(am2z_runtime_execute_many(rt, "inc", (const am2z_state *const *)ins, N, NULL, outs), AM2Z_STATUS_OK);
    for (i = 0; i < N; i++) {
        bad += outs[i].error != NULL || am2z_value_get_int(outs[i].state, "n", -1) != i + 1;
        am2z_outcome_clear(&outs[i]);
    }
    CHECK_INT(bad, 0);
    /* a processor with a retry policy takes the generic (job) path */
    memset(&d, 0, sizeof d);
    memset(&rp, 0, sizeof rp);
    rp.max_attempts = 2;
    d.name = "inc2";
    d.fn = p_inc;
    d.retry = rp;
    reg(rt, proc_desc(d));
    CHECK_INT(am2z_runtime_execute_many(rt, "inc2", (const am2z_state *const *)ins, 300, "s", outs), AM2Z_STATUS_OK);
    for (i = 0; i < 300; i++) {
        bad += outs[i].error != NULL || am2z_value_get_int(outs[i].state, "n", -1) != i + 1;
        am2z_outcome_clear(&outs[i]);
    }
    CHECK_INT(bad, 0);
    /* unknown processor: every outcome says so */
    CHECK_INT(am2z_runtime_execute_many(rt, "nope", (const am2z_state *const *)ins, 3, NULL, outs), AM2Z_STATUS_OK);
    for (i = 0; i < 3; i++) {
        CHECK(outs[i].error && outs[i].error->kind == AM2Z_ERROR_PROCESSOR_NOT_FOUND);
        am2z_outcome_clear(&outs[i]);
    }
    CHECK_INT(am2z_runtime_execute_many(rt, "inc", NULL, 3, NULL, outs), AM2Z_STATUS_INVALID_ARGUMENT);
    for (i = 0; i < N; i++) am2z_value_release(ins[i]);
    free(ins);
    free(outs);
    am2z_runtime_free(rt);
}

/* ---- nesting, deadlock freedom, depth ---- */

static int max_depth_seen;

/* Calls itself until "left" reaches 0; on the way uses a parallel of two "leaf"s. */
static am2z_result p_recurse(am2z_ctx *ctx, const am2z_state *in) {
    int64_t left = am2z_value_get_int(in, "left", 0);
    const am2z_meta *m = am2z_ctx_meta(ctx);
    am2z_result r;
    am2z_state *next;
    if (m->call_depth > __atomic_load_n(&max_depth_seen, __ATOMIC_RELAXED))
        __atomic_store_n(&max_depth_seen, m->call_depth, __ATOMIC_RELAXED);
    if (left <= 0) return am2z_ctx_call(ctx, "par", in);
    next = am2z_value_set(am2z_value_retain(in), "left", am2z_value_int(left - 1));
    r = am2z_ctx_call(ctx, "rec", next);
    am2z_value_release(next);
    if (!r.state) return r;
    return am2z_ok(am2z_value_set(r.state, "levels", am2z_value_int(am2z_value_get_int(r.state, "levels", 0) + 1)));
}

static am2z_result p_leaf(am2z_ctx *ctx, const am2z_state *in) {
    const char *name = am2z_ctx_meta(ctx)->processor;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), name, am2z_value_bool(1)));
}

static am2z_processor *parallel_of(const char *name, am2z_processor **branches, size_t n) {
    am2z_parallel_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.branches = branches;
    d.count = n;
    return am2z_parallel_new(&d, NULL);
}

static void test_no_deadlock_one_worker(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_processor *br[3];
    am2z_state *in = st("{\"left\":7}");
    am2z_outcome out = {0};
    br[0] = proc("leafa", p_leaf);
    br[1] = proc("leafb", p_leaf);
    br[2] = proc("leafc", p_leaf);
    reg(rt, parallel_of("par", br, 3));
    reg(rt, proc("rec", p_recurse));
    max_depth_seen = 0;
    out = am2z_runtime_execute(rt, "rec", in); /* depth 0..7, then the parallel at 8 */
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "levels", 0), 7);
    CHECK(am2z_value_get_bool(out.state, "leafa", 0) && am2z_value_get_bool(out.state, "leafb", 0) &&
          am2z_value_get_bool(out.state, "leafc", 0));
    CHECK_INT(max_depth_seen, 7);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_depth_limit(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{\"left\":50}");
    am2z_outcome out = {0};
    reg(rt, proc("rec", p_recurse));
    reg(rt, proc("par", p_leaf));
    max_depth_seen = 0;
    out = am2z_runtime_execute(rt, "rec", in);
    CHECK(out.error != NULL);
    if (out.error) CHECK_INT(am2z_error_root_cause(out.error)->kind, AM2Z_ERROR_CALL_DEPTH);
    CHECK_INT(max_depth_seen, 10); /* depth 11 was refused */
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* A processor that submits a top-level execution and waits for it, on one worker. */
static am2z_result p_submitter(am2z_ctx *ctx, const am2z_state *in) {
    am2z_outcome o = am2z_runtime_execute(ctx->runtime, "inc", in);
    am2z_result r;
    if (o.error) r = am2z_fail(am2z_error_retain(o.error));
    else r = am2z_ok(am2z_value_retain(o.state));
    am2z_outcome_clear(&o);
    return r;
}

static void test_execute_from_processor(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_state *in = st("{\"n\":5}");
    am2z_outcome out = {0};
    reg(rt, proc("inc", p_inc));
    reg(rt, proc("sub", p_submitter));
    out = am2z_runtime_execute(rt, "sub", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "n", 0), 6);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- timeouts and cancellation ---- */

static int saw_cancel, watch_started;

/* Waits (up to 2 s) until flag is set. */
static int wait_flag(int *flag) {
    int i;
    for (i = 0; i < 2000 && !__atomic_load_n(flag, __ATOMIC_SEQ_CST); i++) msleep(1);
    return __atomic_load_n(flag, __ATOMIC_SEQ_CST);
}

static am2z_result p_sleep_watch(am2z_ctx *ctx, const am2z_state *in) {
    __atomic_store_n(&watch_started, 1, __ATOMIC_SEQ_CST);
    if (poll_sleep(ctx, 10000)) __atomic_store_n(&saw_cancel, 1, __ATOMIC_SEQ_CST); /* long: only a cancel ends it early */
    return am2z_ok(am2z_value_retain(in));
}

static int late_done;

static am2z_result p_sleep_ignore(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    msleep(250);
    __atomic_store_n(&late_done, 1, __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "late", am2z_value_string("this result is discarded")));
}

static am2z_processor *timed(const char *name, am2z_processor_fn fn, int64_t ms) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    d.timeout_ms = ms;
    return am2z_processor_new(&d, NULL);
}

static void test_timeout(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    int64_t t0, el;
    int i;
    reg(rt, timed("sleepy", p_sleep_watch, 50));
    reg(rt, timed("stubborn", p_sleep_ignore, 30));
    saw_cancel = 0;
    t0 = now_ms();
    out = am2z_runtime_execute(rt, "sleepy", in);
    el = now_ms() - t0;
    CHECK(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT);
    /* A correctness bound, not a benchmark: loaded 2-core CI machines under TSan add
       scheduling delay; it still proves the caller does not wait for the processor. */
    CHECK(el >= 50 && el < 50 + 100);
    CHECK_INT(out.attempts, 1);
    am2z_outcome_clear(&out);
    for (i = 0; i < 200 && !__atomic_load_n(&saw_cancel, __ATOMIC_SEQ_CST); i++) msleep(1);
    CHECK_INT(saw_cancel, 1);
    /* ignores cancellation: the caller still gets the error at the deadline */
    late_done = 0;
    t0 = now_ms();
    out = am2z_runtime_execute(rt, "stubborn", in);
    el = now_ms() - t0;
    CHECK(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT);
    CHECK(el >= 30 && el < 30 + 100); /* the processor sleeps 250 ms */
    CHECK(!__atomic_load_n(&late_done, __ATOMIC_SEQ_CST));
    CHECK(am2z_value_get(out.state, "late") == NULL);
    am2z_outcome_clear(&out);
    for (i = 0; i < 1000 && !__atomic_load_n(&late_done, __ATOMIC_SEQ_CST); i++) msleep(1);
    CHECK_INT(late_done, 1); /* its result is released by the runtime (ASan/LSan check) */
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* A parallel whose branch hangs: the top-level timeout cancels the branch too. */
static void test_timeout_cancels_children(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_processor *br[2], *par;
    am2z_parallel_desc d;
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    int i;
    br[0] = proc("quick", p_leaf);
    br[1] = proc("hang", p_sleep_watch);
    memset(&d, 0, sizeof d);
    d.name = "fan";
    d.branches = br;
    d.count = 2;
    d.timeout_ms = 40;
    par = am2z_parallel_new(&d, NULL);
    reg(rt, par);
    saw_cancel = 0;
    out = am2z_runtime_execute(rt, "fan", in);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT);
    am2z_outcome_clear(&out);
    for (i = 0; i < 300 && !__atomic_load_n(&saw_cancel, __ATOMIC_SEQ_CST); i++) msleep(1);
    CHECK_INT(saw_cancel, 1);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_free_unfinished(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    am2z_execution *e;
    int i;
    reg(rt, proc("watch", p_sleep_watch));
    saw_cancel = watch_started = 0;
    e = am2z_runtime_submit(rt, "watch", in, NULL, NULL);
    CHECK(e != NULL);
    CHECK(wait_flag(&watch_started));
    am2z_execution_free(e); /* cancels and discards */
    for (i = 0; i < 300 && !__atomic_load_n(&saw_cancel, __ATOMIC_SEQ_CST); i++) msleep(1);
    CHECK_INT(saw_cancel, 1);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static am2z_result p_hang_item(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    if (am2z_value_get_int(in, "i", 0) == 3) msleep(200);
    return am2z_ok(am2z_value_retain(in));
}

static void test_execute_many_timeout(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *ins[40];
    am2z_outcome outs[40] = {{0}};
    char buf[32];
    int64_t t0, el;
    int i, ok = 0;
    reg(rt, timed("hangs", p_hang_item, 40));
    for (i = 0; i < 40; i++) {
        snprintf(buf, sizeof buf, "{\"i\":%d}", i);
        ins[i] = st(buf);
    }
    t0 = now_ms();
    CHECK_INT(am2z_runtime_execute_many(rt, "hangs", (const am2z_state *const *)ins, 40, NULL, outs), AM2Z_STATUS_OK);
    el = now_ms() - t0;
    CHECK(el < 180); /* before the stuck item (200 ms) finishes */
    CHECK(outs[3].error && outs[3].error->kind == AM2Z_ERROR_TIMEOUT);
    for (i = 0; i < 40; i++) {
        if (i != 3) ok += outs[i].error == NULL && am2z_value_get_int(outs[i].state, "i", -1) == i;
        am2z_outcome_clear(&outs[i]);
    }
    CHECK_INT(ok, 39);
    for (i = 0; i < 40; i++) am2z_value_release(ins[i]);
    am2z_runtime_free(rt); /* waits for the stuck worker */
}

static am2z_result p_two_ms(am2z_ctx *ctx, const am2z_state *in) {
    if (poll_sleep(ctx, 2)) return am2z_fail(am2z_error_cancelled("stopped early"));
    return am2z_ok(am2z_value_retain(in));
}

typedef struct many_arg {
    am2z_runtime *rt;
    const am2z_state **ins;
    am2z_outcome *outs;
    size_t n;
    int started;
} many_arg;

static void *run_many(void *arg) {
    many_arg *a = (many_arg *)arg;
    __atomic_store_n(&a->started, 1, __ATOMIC_SEQ_CST);
    CHECK_INT(am2z_runtime_execute_many(a->rt, "two", a->ins, a->n, "bulk", a->outs), AM2Z_STATUS_OK);
    return NULL;
}

/* stop_session while an execute_many runs in that session: every outcome is filled,
   the ones not finished say the session stopped. */
static void test_execute_many_stop_session(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    enum { N = 400 };
    const am2z_state *ins[N];
    static am2z_outcome outs[N]; /* zeroed, as outcomes must start */
    many_arg a;
    pthread_t th;
    int i, ok = 0, stopped = 0, other = 0;
    reg(rt, proc("two", p_two_ms));
    for (i = 0; i < N; i++) ins[i] = in;
    a.rt = rt;
    a.ins = ins;
    a.outs = outs;
    a.n = N;
    a.started = 0;
    CHECK(pthread_create(&th, NULL, run_many, &a) == 0);
    CHECK(wait_flag(&a.started));
    msleep(30);
    CHECK_INT(am2z_runtime_stop_session(rt, "bulk", 0), AM2Z_STATUS_OK);
    pthread_join(th, NULL);
    for (i = 0; i < N; i++) {
        if (!outs[i].error) ok++;
        else if (outs[i].error->kind == AM2Z_ERROR_CANCELLED && strstr(outs[i].error->message, "bulk")) stopped++;
        else other++;
        CHECK(outs[i].state != NULL);
        am2z_outcome_clear(&outs[i]);
    }
    CHECK(ok > 0 && stopped > 0);
    CHECK_INT(ok + stopped, N);
    CHECK_INT(other, 0);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- retries ---- */

static int tries;

static am2z_result p_flaky(am2z_ctx *ctx, const am2z_state *in) {
    int n = __atomic_add_fetch(&tries, 1, __ATOMIC_SEQ_CST);
    char ep[16];
    CHECK_INT(am2z_ctx_meta(ctx)->attempt, n);
    if (n <= 2) {
        snprintf(ep, sizeof ep, "fail%d", n);
        return am2z_fail(am2z_error_network(ep, 503, NULL)); /* retryable */
    }
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "ok", am2z_value_bool(1)));
}

static am2z_result p_always_net(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    (void)in;
    __atomic_add_fetch(&tries, 1, __ATOMIC_SEQ_CST);
    return am2z_fail(am2z_error_network("down", 0, NULL));
}

static am2z_processor *retrying(const char *name, am2z_processor_fn fn, int max, am2z_backoff bo, int64_t delay) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    d.retry.max_attempts = max;
    d.retry.backoff = bo;
    d.retry.delay_ms = delay;
    return am2z_processor_new(&d, NULL);
}

static int retry_events;
static int64_t retry_attempt_sum;

static void on_retry(const char *ev, const am2z_value *data, void *ud) {
    (void)ud;
    if (strcmp(ev, "processor:job:retrying") != 0) return;
    __atomic_add_fetch(&retry_events, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&retry_attempt_sum, am2z_value_get_int(data, "attempt", 0), __ATOMIC_SEQ_CST);
    CHECK_INT(am2z_value_get_int(data, "delayMs", -1), 20);
    CHECK(am2z_value_get(data, "error") != NULL);
    CHECK(am2z_value_get_string(data, "executionId", NULL) != NULL);
    CHECK_STR(am2z_value_get_string(data, "processorName", NULL), "flaky");
}

static void test_retries_final_outcome(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    int64_t t0, el;
    int h;
    reg(rt, retrying("flaky", p_flaky, 3, AM2Z_BACKOFF_FIXED, 20));
    h = am2z_runtime_on(rt, "processor:job:retrying", on_retry, NULL);
    CHECK(h > 0);
    tries = 0;
    retry_events = 0;
    retry_attempt_sum = 0;
    t0 = now_ms();
    out = am2z_runtime_execute(rt, "flaky", in);
    el = now_ms() - t0;
    CHECK(out.error == NULL);
    CHECK(am2z_value_get_bool(out.state, "ok", 0));
    CHECK_INT(out.attempts, 3);
    CHECK_INT(out.attempt_error_count, 2);
    if (out.attempt_error_count == 2) {
        CHECK(strstr(out.attempt_errors[0]->message, "fail1") != NULL);
        CHECK(strstr(out.attempt_errors[1]->message, "fail2") != NULL);
    }
    CHECK(el >= 40); /* two 20 ms backoffs */
    CHECK_INT(retry_events, 2);
    CHECK_INT(retry_attempt_sum, 3); /* attempts 1 and 2 failed */
    am2z_outcome_clear(&out);
    am2z_runtime_off(rt, h);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_retries_non_retryable_and_backoff(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    int64_t t0, el;
    reg(rt, retrying("biz", p_business_fail, 5, AM2Z_BACKOFF_FIXED, 1));
    reg(rt, retrying("down", p_always_net, 3, AM2Z_BACKOFF_EXPONENTIAL, 15));
    out = am2z_runtime_execute(rt, "biz", in);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_BUSINESS);
    CHECK_INT(out.attempts, 1); /* not retryable */
    CHECK_INT(out.attempt_error_count, 1);
    am2z_outcome_clear(&out);
    tries = 0;
    t0 = now_ms();
    out = am2z_runtime_execute(rt, "down", in);
    el = now_ms() - t0;
    CHECK(out.error && out.error->kind == AM2Z_ERROR_NETWORK);
    CHECK_INT(out.attempts, 3);
    CHECK_INT(tries, 3);
    CHECK_INT(out.attempt_error_count, 3);
    CHECK(el >= 15 + 30); /* 15 then 30 ms */
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_nested_retry(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_processor *flaky = retrying("flaky", p_flaky, 3, AM2Z_BACKOFF_FIXED, 20), *c;
    am2z_processor *inc = proc("inc", p_inc);
    am2z_state *in = st("{\"n\":0}");
    am2z_outcome out = {0};
    c = chain2("ch", inc, flaky);
    reg(rt, c);
    tries = 0;
    out = am2z_runtime_execute(rt, "ch", in);
    CHECK(out.error == NULL);
    CHECK_INT(tries, 3);
    CHECK_INT(am2z_value_get_int(out.state, "n", 0), 1);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- sessions ---- */

static int created_n, cleanup_n;
static char last_created[32], last_cleanup[32];
static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_session(const char *ev, const am2z_value *data, void *ud) {
    (void)ud;
    pthread_mutex_lock(&ev_mu);
    if (strcmp(ev, "session:created") == 0) {
        created_n++;
        snprintf(last_created, sizeof last_created, "%s", am2z_value_get_string(data, "sessionId", "?"));
    } else if (strcmp(ev, "session:cleanup") == 0) {
        cleanup_n++;
        snprintf(last_cleanup, sizeof last_cleanup, "%s", am2z_value_get_string(data, "sessionId", "?"));
    }
    pthread_mutex_unlock(&ev_mu);
}

static void test_stop_session(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}"), *quick = st("{\"n\":1}");
    am2z_execution *e;
    am2z_outcome out = {0};
    am2z_value *ss, *act;
    int i;
    reg(rt, proc("watch", p_sleep_watch));
    reg(rt, proc("inc", p_inc));
    am2z_runtime_on(rt, "*", on_session, NULL);
    created_n = cleanup_n = 0;
    saw_cancel = watch_started = 0;
    e = am2z_runtime_submit(rt, "watch", in, "tenant-a", NULL);
    CHECK(e != NULL);
    out = am2z_runtime_execute_in_session(rt, "inc", quick, "tenant-b");
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    pthread_mutex_lock(&ev_mu);
    CHECK_INT(created_n, 2);
    pthread_mutex_unlock(&ev_mu);
    act = am2z_runtime_active_sessions(rt);
    CHECK_INT(am2z_value_len(act), 2);
    am2z_value_release(act);
    ss = am2z_runtime_session_stats(rt, "tenant-b");
    CHECK_INT(am2z_value_get_int(ss, "completed", -1), 1);
    CHECK_STR(am2z_value_get_string(ss, "sessionId", NULL), "tenant-b");
    am2z_value_release(ss);
    CHECK(wait_flag(&watch_started));
    CHECK_INT(am2z_runtime_stop_session(rt, "tenant-a", 0), AM2Z_STATUS_OK);
    CHECK_INT(am2z_execution_wait(e, 1000, &out), AM2Z_STATUS_OK);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
    if (out.error) CHECK(strstr(out.error->message, "Session tenant-a stopped") != NULL);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    for (i = 0; i < 300 && !__atomic_load_n(&saw_cancel, __ATOMIC_SEQ_CST); i++) msleep(1);
    CHECK_INT(saw_cancel, 1);
    pthread_mutex_lock(&ev_mu);
    CHECK_INT(cleanup_n, 1);
    CHECK_STR(last_cleanup, "tenant-a");
    pthread_mutex_unlock(&ev_mu);
    CHECK(am2z_runtime_session_stats(rt, "tenant-a") == NULL);
    CHECK_INT(am2z_runtime_stop_session(rt, "tenant-a", 0), AM2Z_STATUS_NOT_FOUND);
    /* used again: created afresh */
    out = am2z_runtime_execute_in_session(rt, "inc", quick, "tenant-a");
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    pthread_mutex_lock(&ev_mu);
    CHECK_INT(created_n, 3);
    CHECK_STR(last_created, "tenant-a");
    pthread_mutex_unlock(&ev_mu);
    ss = am2z_runtime_session_stats(rt, "tenant-b"); /* untouched */
    CHECK(ss != NULL);
    am2z_value_release(ss);
    am2z_value_release(in);
    am2z_value_release(quick);
    am2z_runtime_free(rt);
}

static int blocker_go, blocker_started;

static am2z_result p_blocker(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    __atomic_store_n(&blocker_started, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&blocker_go, __ATOMIC_SEQ_CST)) msleep(1);
    return am2z_ok(am2z_value_retain(in));
}

static void test_stop_session_grace(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_state *in = st("{\"ms\":30}");
    am2z_execution *running, *queued;
    am2z_outcome out = {0};
    memset(&out, 0, sizeof out);
    reg(rt, proc("slow", p_slow_poll));
    slow_started = 0;
    running = am2z_runtime_submit(rt, "slow", in, "g", NULL);
    CHECK(wait_flag(&slow_started));
    queued = am2z_runtime_submit(rt, "slow", in, "g", NULL); /* behind it on the one worker */
    CHECK(running && queued);
    CHECK_INT(am2z_runtime_stop_session(rt, "g", 1000), AM2Z_STATUS_OK); /* the running one finishes */
    /* counters settle before outcomes, so stop_session may return just before the
       outcome is handed over (seen under qemu on a loaded machine): wait for it */
    CHECK_INT(am2z_execution_wait(running, 5000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_execution_wait(queued, 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
    CHECK_INT(out.attempts, 0);
    am2z_outcome_clear(&out);
    am2z_execution_free(running);
    am2z_execution_free(queued);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- queue options ---- */

static int cur_running, max_running;

static am2z_result p_counted(am2z_ctx *ctx, const am2z_state *in) {
    int n = __atomic_add_fetch(&cur_running, 1, __ATOMIC_SEQ_CST), m;
    (void)ctx;
    while ((m = __atomic_load_n(&max_running, __ATOMIC_SEQ_CST)) < n &&
           !__atomic_compare_exchange_n(&max_running, &m, n, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    msleep(4);
    __atomic_sub_fetch(&cur_running, 1, __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_retain(in));
}

/* Calls itself once: with concurrency 1 this must not deadlock. */
static am2z_result p_self_once(am2z_ctx *ctx, const am2z_state *in) {
    if (am2z_ctx_meta(ctx)->call_depth == 0) return am2z_ctx_call(ctx, "self", in);
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "inner", am2z_value_bool(1)));
}

static void test_concurrency_limit(void) {
    am2z_runtime *rt = rt_new(4);
    am2z_processor_desc d;
    am2z_execution *e[6];
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    int i;
    memset(&d, 0, sizeof d);
    d.name = "one";
    d.fn = p_counted;
    d.queue.concurrency = 1;
    reg(rt, proc_desc(d));
    d.name = "self";
    d.fn = p_self_once;
    reg(rt, proc_desc(d));
    cur_running = max_running = 0;
    for (i = 0; i < 6; i++) e[i] = am2z_runtime_submit(rt, "one", in, NULL, NULL);
    for (i = 0; i < 6; i++) {
        CHECK(e[i] && am2z_execution_wait(e[i], -1, &out) == AM2Z_STATUS_OK && out.error == NULL);
        am2z_outcome_clear(&out);
        am2z_execution_free(e[i]);
    }
    CHECK_INT(max_running, 1);
    out = am2z_runtime_execute(rt, "self", in);
    CHECK(out.error == NULL && am2z_value_get_bool(out.state, "inner", 0));
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static char order_buf[64];
static int order_len;

static am2z_result p_record(am2z_ctx *ctx, const am2z_state *in) {
    const char *n = am2z_ctx_meta(ctx)->processor;
    order_buf[order_len++] = n[strlen(n) - 1]; /* one worker: no race */
    return am2z_ok(am2z_value_retain(in));
}

static void test_priorities(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_processor_desc d;
    am2z_execution *blk, *e[5];
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    const char *names[5] = {"pr3", "pr1", "pr2", "pr0", "px1"};
    int prios[5] = {3, 1, 2, 0, 1}, i;
    memset(&d, 0, sizeof d);
    d.fn = p_record;
    for (i = 0; i < 5; i++) {
        d.name = names[i];
        d.queue.priority = prios[i];
        reg(rt, proc_desc(d));
    }
    reg(rt, proc("blk", p_blocker));
    blocker_go = blocker_started = 0;
    order_len = 0;
    blk = am2z_runtime_submit(rt, "blk", in, NULL, NULL);
    CHECK(wait_flag(&blocker_started));
    for (i = 0; i < 5; i++) e[i] = am2z_runtime_submit(rt, names[i], in, NULL, NULL);
    __atomic_store_n(&blocker_go, 1, __ATOMIC_SEQ_CST);
    for (i = 0; i < 5; i++) {
        CHECK(am2z_execution_wait(e[i], -1, &out) == AM2Z_STATUS_OK);
        am2z_outcome_clear(&out);
        am2z_execution_free(e[i]);
    }
    CHECK(am2z_execution_wait(blk, -1, &out) == AM2Z_STATUS_OK);
    am2z_outcome_clear(&out);
    am2z_execution_free(blk);
    order_buf[order_len] = '\0';
    CHECK_STR(order_buf, "01123"); /* 0 first (BullMQ), then 1 (FIFO), 2, 3 */
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static int64_t starts[8];
static int nstarts;

static am2z_result p_stamp(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    starts[__atomic_fetch_add(&nstarts, 1, __ATOMIC_SEQ_CST)] = now_ms();
    return am2z_ok(am2z_value_retain(in));
}

static void test_rate_limit_and_delay(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_processor_desc d;
    am2z_execution *e[4];
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    int64_t t0;
    int i;
    memset(&d, 0, sizeof d);
    d.name = "limited";
    d.fn = p_stamp;
    d.queue.rate_limit_per_minute = 1200; /* one start every 50 ms */
    reg(rt, proc_desc(d));
    memset(&d, 0, sizeof d);
    d.name = "later";
    d.fn = p_stamp;
    d.queue.delay_ms = 40;
    reg(rt, proc_desc(d));
    nstarts = 0;
    for (i = 0; i < 4; i++) e[i] = am2z_runtime_submit(rt, "limited", in, NULL, NULL);
    for (i = 0; i < 4; i++) {
        CHECK(am2z_execution_wait(e[i], -1, &out) == AM2Z_STATUS_OK && out.error == NULL);
        am2z_outcome_clear(&out);
        am2z_execution_free(e[i]);
    }
    CHECK_INT(nstarts, 4);
    /* starts are granted 50 ms apart; the processor stamps a little after its grant
       (up to ~15 ms under valgrind on a loaded machine) */
    for (i = 1; i < 4; i++) CHECK(starts[i] - starts[i - 1] >= 35);
    CHECK(starts[3] - starts[0] >= 135); /* each stamp may lag its grant as above */
    nstarts = 0;
    t0 = now_ms();
    out = am2z_runtime_execute(rt, "later", in);
    CHECK(out.error == NULL);
    CHECK(starts[0] - t0 >= 40);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_queue_capacity_and_desc_limits(void) {
    am2z_logger *lg = fx_quiet();
    am2z_local_desc ld;
    am2z_runtime *rt;
    am2z_execution *blk, *q1, *q2, *q3;
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    am2z_status st = AM2Z_STATUS_OK;
    memset(&ld, 0, sizeof ld);
    ld.workers = AM2Z_LOCAL_MAX_WORKERS + 1;
    CHECK(am2z_local_runtime_new(&ld, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "outside 0..AM2Z_LOCAL_MAX_WORKERS") != NULL);
    ld.workers = -1;
    CHECK(am2z_local_runtime_new(&ld, NULL) == NULL);
    ld.workers = 1;
    ld.queue_capacity = 2;
    ld.logger = lg;
    rt = am2z_local_runtime_new(&ld, &st);
    CHECK_INT(st, AM2Z_STATUS_OK);
    am2z_logger_release(lg);
    reg(rt, proc("blk", p_blocker));
    blocker_go = blocker_started = 0;
    blk = am2z_runtime_submit(rt, "blk", in, NULL, NULL);
    CHECK(wait_flag(&blocker_started)); /* running: no longer waiting in the queue */
    q1 = am2z_runtime_submit(rt, "blk", in, NULL, NULL);
    q2 = am2z_runtime_submit(rt, "blk", in, NULL, NULL);
    q3 = am2z_runtime_submit(rt, "blk", in, NULL, &st);
    CHECK(blk && q1 && q2);
    CHECK(q3 == NULL);
    CHECK_INT(st, AM2Z_STATUS_LIMIT);
    CHECK_STR(am2z_status_detail(), "submit 'blk': the queue is full");
    out = am2z_runtime_execute(rt, "blk", in);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_RESOURCE);
    am2z_outcome_clear(&out);
    __atomic_store_n(&blocker_go, 1, __ATOMIC_SEQ_CST);
    am2z_execution_free(blk);
    am2z_execution_free(q1);
    am2z_execution_free(q2);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- versions, stats, restart, events ---- */

static void test_version_bump(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_processor *a = proc("a", p_inc), *b = proc("b", p_inc), *c3;
    am2z_processor *steps[3];
    am2z_chain_desc d;
    am2z_state *in = st("{\"n\":0}");
    am2z_outcome out = {0};
    steps[0] = a;
    steps[1] = b;
    steps[2] = am2z_processor_retain(a); /* a is a step twice */
    memset(&d, 0, sizeof d);
    d.name = "c3";
    d.steps = steps;
    d.count = 3;
    c3 = am2z_chain_new(&d, NULL);
    reg(rt, c3);
    out = am2z_runtime_execute(rt, "c3", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "n", 0), 3);
    CHECK_INT(am2z_state_version(out.state), 5); /* three steps and the chain itself */
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute(rt, "a", in);
    CHECK_INT(am2z_state_version(out.state), 2);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_stats(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    am2z_value *s;
    int i;
    reg(rt, proc("ok.proc", p_ident));
    reg(rt, proc("bad", p_business_fail));
    reg(rt, retrying("flaky", p_flaky, 3, AM2Z_BACKOFF_FIXED, 1));
    for (i = 0; i < 5; i++) {
        out = am2z_runtime_execute(rt, "ok.proc", in);
        am2z_outcome_clear(&out);
    }
    out = am2z_runtime_execute(rt, "bad", in);
    am2z_outcome_clear(&out);
    tries = 0;
    out = am2z_runtime_execute(rt, "flaky", in);
    am2z_outcome_clear(&out);
    s = am2z_runtime_stats(rt);
    CHECK(s != NULL);
    CHECK_INT(am2z_value_len(am2z_value_get(s, "registeredProcessors")), 3);
    CHECK_INT(am2z_value_get_int(s, "completed", -1), 6);
    CHECK_INT(am2z_value_get_int(s, "failed", -1), 1);
    CHECK_INT(am2z_value_get_int(s, "retried", -1), 2);
    CHECK_INT(am2z_value_get_int(s, "running", -1), 0);
    CHECK(am2z_value_get_int(s, "uptimeMs", -1) >= 0);
    CHECK_INT(am2z_value_get_int(s, "/processors/ok.proc/completed", -1), 5);
    CHECK_INT(am2z_value_get_int(s, "/processors/bad/failed", -1), 1);
    CHECK_INT(am2z_value_get_int(s, "/processors/flaky/retried", -1), 2);
    CHECK(am2z_value_get_double(s, "/processors/ok.proc/p50Ms", -1) > 0);
    CHECK(am2z_value_get_double(s, "/processors/ok.proc/p99Ms", -1) >=
          am2z_value_get_double(s, "/processors/ok.proc/p50Ms", -1));
    am2z_value_release(s);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_restart(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{\"n\":1}");
    am2z_outcome out = {0};
    reg(rt, proc("inc", p_inc));
    CHECK_INT(am2z_runtime_stop(rt, 100), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_stop(rt, 100), AM2Z_STATUS_OK); /* idempotent */
    out = am2z_runtime_execute(rt, "inc", in);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CONFIGURATION);
    am2z_outcome_clear(&out);
    CHECK(am2z_runtime_submit(rt, "inc", in, NULL, NULL) == NULL);
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "inc", in);
    CHECK(out.error == NULL && am2z_value_get_int(out.state, "n", 0) == 2);
    am2z_outcome_clear(&out);
    CHECK(am2z_runtime_is_registered(rt, "inc"));
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_stop_cancels_running(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    am2z_execution *e;
    am2z_outcome out = {0};
    int64_t t0;
    reg(rt, proc("watch", p_sleep_watch));
    watch_started = 0;
    e = am2z_runtime_submit(rt, "watch", in, NULL, NULL);
    CHECK(wait_flag(&watch_started));
    t0 = now_ms();
    CHECK_INT(am2z_runtime_stop(rt, 20), AM2Z_STATUS_OK);
    CHECK(now_ms() - t0 < 500);
    CHECK_INT(am2z_execution_wait(e, 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static int ev_started, ev_completed, ev_failed, ev_star, ev_custom;

static void on_job(const char *ev, const am2z_value *data, void *ud) {
    (void)ud;
    if (strcmp(ev, "processor:job:started") == 0) {
        const char *who = am2z_value_get_string(data, "processorName", "");
        CHECK_INT(am2z_value_get_int(data, "attempt", 0), 1);
        CHECK_INT(am2z_value_get_int(data, "callDepth", -1), 0);
        CHECK_STR(am2z_value_get_string(data, "sessionId", NULL), strcmp(who, "bad") == 0 ? "evs2" : "evs");
        __atomic_add_fetch(&ev_started, 1, __ATOMIC_SEQ_CST);
    } else if (strcmp(ev, "processor:job:completed") == 0) {
        CHECK(am2z_value_get_string(data, "executionId", NULL) != NULL);
        CHECK(am2z_value_get_double(data, "executionTime", -1) >= 0);
        CHECK(am2z_value_type(am2z_value_find(data, "executionTime", 13)) == AM2Z_TYPE_DOUBLE); /* ms, measured */
        __atomic_add_fetch(&ev_completed, 1, __ATOMIC_SEQ_CST);
    } else if (strcmp(ev, "processor:job:failed") == 0) {
        CHECK_STR(am2z_value_get_string(data, "/error/code", NULL), "NOPE");
        __atomic_add_fetch(&ev_failed, 1, __ATOMIC_SEQ_CST);
    }
}

static void on_star(const char *ev, const am2z_value *data, void *ud) {
    (void)ud;
    __atomic_add_fetch(&ev_star, 1, __ATOMIC_SEQ_CST);
    if (strcmp(ev, "my:event") == 0) {
        CHECK_INT(am2z_value_get_int(data, "x", 0), 42);
        __atomic_add_fetch(&ev_custom, 1, __ATOMIC_SEQ_CST);
    }
}

static am2z_result p_emitter(am2z_ctx *ctx, const am2z_state *in) {
    am2z_ctx_emit(ctx, "my:event", am2z_value_set(am2z_value_object(), "x", am2z_value_int(42)));
    return am2z_ok(am2z_value_retain(in));
}

static void test_events(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    int h1, h2, h3, h4;
    reg(rt, proc("emitter", p_emitter));
    reg(rt, proc("bad", p_business_fail));
    ev_started = ev_completed = ev_failed = ev_star = ev_custom = 0;
    h1 = am2z_runtime_on(rt, "processor:job:started", on_job, NULL);
    h2 = am2z_runtime_on(rt, "processor:job:completed", on_job, NULL);
    h3 = am2z_runtime_on(rt, "processor:job:failed", on_job, NULL);
    h4 = am2z_runtime_on(rt, "*", on_star, NULL);
    CHECK(h1 > 0 && h2 > h1 && h3 > h2 && h4 > h3);
    CHECK_INT(am2z_runtime_on(rt, NULL, on_star, NULL), 0);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "on: the event name is NULL");
    CHECK_INT(am2z_runtime_on(rt, "x", NULL, NULL), 0);
    CHECK_STR(am2z_status_detail(), "on: the handler function is NULL");
    out = am2z_runtime_execute_in_session(rt, "emitter", in, "evs");
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute_in_session(rt, "bad", in, "evs2");
    am2z_outcome_clear(&out);
    CHECK_INT(ev_started, 2);
    CHECK_INT(ev_completed, 1);
    CHECK_INT(ev_failed, 1);
    CHECK_INT(ev_custom, 1);
    CHECK(ev_star >= 7); /* 2 created, 2 started, completed, failed, custom */
    am2z_runtime_off(rt, h4);
    ev_star = 0;
    out = am2z_runtime_execute_in_session(rt, "emitter", in, "evs");
    am2z_outcome_clear(&out);
    CHECK_INT(ev_star, 0);
    CHECK_INT(ev_custom, 1);
    am2z_runtime_off(rt, h1);
    am2z_runtime_off(rt, h2);
    am2z_runtime_off(rt, h3);
    am2z_runtime_off(rt, 12345); /* unknown id: ignored */
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- API 1.0: handing over, status, outcomes, handles, queries ---- */

/* register takes NULL (a constructor that failed) and keeps its detail; register_many
   consumes every processor, also those after a failure (LeakSanitizer checks). */
static void test_register_consumes_null(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_processor_desc none;
    am2z_processor *many[3];
    am2z_status st;
    memset(&none, 0, sizeof none);
    none.name = "b";
    st = am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){.name = "ab", .count = 2,
        .steps = (am2z_processor *[]){proc("a", p_inc), am2z_processor_new(&none, NULL)}}, NULL));
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "register: the processor is NULL (chain 'ab': step 2 is NULL (processor 'b': no fn))");
    CHECK(!am2z_runtime_is_registered(rt, "a"));
    many[0] = proc("m1", p_inc), many[1] = proc("m1", p_ident), many[2] = proc("m3", p_inc);
    CHECK_INT(am2z_runtime_register_many(rt, many, 3), AM2Z_STATUS_EXISTS);
    CHECK(am2z_runtime_is_registered(rt, "m1"));
    CHECK(!am2z_runtime_is_registered(rt, "m3")); /* stops at the first failure */
    am2z_runtime_free(rt);
}

static void test_submit_status(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_state *in = st("{}");
    am2z_status s = AM2Z_STATUS_OK;
    char sid[AM2Z_SESSION_ID_MAX + 2];
    am2z_execution *e;
    am2z_outcome out = {0};
    reg(rt, proc("inc", p_inc));
    CHECK(am2z_runtime_submit(rt, "nope", in, NULL, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_NOT_FOUND);
    CHECK_STR(am2z_status_detail(), "submit 'nope': processor not registered");
    CHECK(am2z_runtime_submit(rt, "inc", NULL, NULL, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "submit 'inc': no input state");
    /* session ids: 1..AM2Z_SESSION_ID_MAX bytes of [A-Za-z0-9_.-], as on the queue runtime */
    memset(sid, 's', sizeof sid);
    sid[AM2Z_SESSION_ID_MAX] = '\0';
    e = am2z_runtime_submit(rt, "inc", in, sid, &s);
    CHECK(e != NULL);
    CHECK_INT(s, AM2Z_STATUS_OK);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK_STR(out.session_id, sid); /* the longest id fits the outcome */
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    sid[AM2Z_SESSION_ID_MAX] = 's';
    sid[AM2Z_SESSION_ID_MAX + 1] = '\0';
    CHECK(am2z_runtime_submit(rt, "inc", in, sid, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(am2z_runtime_submit(rt, "inc", in, "a b", &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "session id") != NULL);
    out = am2z_runtime_execute_in_session(rt, "inc", in, "a b");
    CHECK(out.error && out.error->kind == AM2Z_ERROR_VALIDATION);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_stop(rt, 0), AM2Z_STATUS_OK);
    CHECK(am2z_runtime_submit(rt, "inc", in, NULL, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_NOT_STARTED);
    CHECK(strncmp(am2z_status_detail(), "submit 'inc': the runtime is stopped", 36) == 0);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* The outcome and the handle name the execution and the session, and the output state
   carries the session it ran in, whatever the input said. */
static void test_outcome_names_execution_and_session(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = am2z_state_parse("elsewhere", "{\"ms\":30}", AM2Z_NTS, NULL);
    const am2z_state *ins[2];
    am2z_outcome out = {0}, outs[2] = {{0}};
    am2z_execution *e;
    char id[AM2Z_EXECUTION_ID_SIZE];
    reg(rt, proc("slow", p_slow_poll));
    e = am2z_runtime_submit(rt, "slow", in, "tenant-7", NULL);
    CHECK(e != NULL);
    if (!e) return;
    snprintf(id, sizeof id, "%s", am2z_execution_id(e)); /* readable before it finishes */
    CHECK(strncmp(id, "slow-", 5) == 0);
    CHECK_INT(am2z_execution_wait(e, 0, &out), AM2Z_STATUS_TIMEOUT);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK_STR(out.execution_id, id);
    CHECK_STR(out.session_id, "tenant-7");
    CHECK_STR(am2z_state_session_id(out.state), "tenant-7");
    CHECK(out.duration_ms >= 25 && out.duration_ms < 5000);
    CHECK(out.started_at > 1700000000000LL);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    out = am2z_runtime_execute(rt, "slow", in);
    CHECK_STR(out.session_id, "default");
    CHECK_STR(am2z_state_session_id(out.state), "default");
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute(rt, "missing", in); /* never ran: still says where */
    CHECK_STR(out.session_id, "default");
    CHECK(strncmp(out.execution_id, "missing-", 8) == 0);
    am2z_outcome_clear(&out);
    ins[0] = ins[1] = in;
    CHECK_INT(am2z_runtime_execute_many(rt, "slow", ins, 2, "bulk", outs), AM2Z_STATUS_OK);
    CHECK_STR(outs[1].session_id, "bulk");
    CHECK_STR(am2z_state_session_id(outs[1].state), "bulk");
    CHECK(strcmp(outs[0].execution_id, outs[1].execution_id) != 0);
    am2z_outcome_clear(&outs[0]);
    am2z_outcome_clear(&outs[1]);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* Functions that fill an outcome clear what it held: reuse without clear does not leak
   (LeakSanitizer checks). */
static void test_outcome_reuse(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{\"n\":1}");
    const am2z_state *ins[1];
    am2z_outcome out = {0}, outs[1] = {{0}};
    am2z_execution *e;
    am2z_result r;
    reg(rt, proc("inc", p_inc));
    reg(rt, retrying("biz", p_business_fail, 2, AM2Z_BACKOFF_FIXED, 1));
    e = am2z_runtime_submit(rt, "biz", in, NULL, NULL);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK(out.error != NULL);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK); /* no clear in between */
    CHECK(out.error != NULL);
    am2z_execution_free(e);
    ins[0] = in;
    CHECK_INT(am2z_runtime_execute_many(rt, "inc", ins, 1, NULL, outs), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_execute_many(rt, "inc", ins, 1, NULL, outs), AM2Z_STATUS_OK);
    CHECK_INT(am2z_value_get_int(outs[0].state, "n", 0), 2);
    am2z_outcome_clear(&outs[0]);
    /* outcome_to_result moves the error (or the state) and clears the outcome */
    r = am2z_outcome_to_result(&out);
    CHECK(r.error && !r.state && r.error->kind == AM2Z_ERROR_BUSINESS);
    CHECK(out.error == NULL && out.state == NULL && out.attempt_errors == NULL && out.execution_id[0] == '\0');
    am2z_result_clear(&r);
    out = am2z_runtime_execute(rt, "inc", in);
    r = am2z_outcome_to_result(&out);
    CHECK(r.state && !r.error && am2z_value_get_int(r.state, "n", 0) == 2);
    am2z_result_clear(&r);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static int detached_done, detached_cancelled;

static am2z_result p_finisher(am2z_ctx *ctx, const am2z_state *in) {
    if (poll_sleep(ctx, 60)) __atomic_store_n(&detached_cancelled, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&detached_done, 1, __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_retain(in));
}

/* detach lets the execution run to completion; free cancels it. */
static void test_detach_and_free(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    am2z_execution *e;
    am2z_value *ps;
    reg(rt, proc("fin", p_finisher));
    detached_done = detached_cancelled = 0;
    e = am2z_runtime_submit(rt, "fin", in, NULL, NULL);
    CHECK(e != NULL);
    am2z_execution_detach(e);
    CHECK(wait_flag(&detached_done));
    CHECK_INT(detached_cancelled, 0);
    msleep(20); /* the stats count it just after the outcome */
    ps = am2z_runtime_processor_stats(rt, "fin");
    CHECK_INT(am2z_value_get_int(ps, "completed", -1), 1);
    am2z_value_release(ps);
    detached_done = detached_cancelled = 0;
    e = am2z_runtime_submit(rt, "fin", in, NULL, NULL);
    CHECK(e != NULL);
    msleep(10);
    am2z_execution_free(e);
    CHECK(wait_flag(&detached_done));
    CHECK_INT(detached_cancelled, 1);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* Stats of a processor whose name has dots: no dot path needed. */
static void test_processor_stats_dotted_name(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_state *in = st("{}");
    am2z_outcome out = {0};
    am2z_value *ps;
    reg(rt, proc("img.resize", p_ident));
    out = am2z_runtime_execute(rt, "img.resize", in);
    am2z_outcome_clear(&out);
    msleep(5);
    ps = am2z_runtime_processor_stats(rt, "img.resize");
    CHECK(ps != NULL);
    CHECK_INT(am2z_value_get_int(ps, "completed", -1), 1);
    CHECK(am2z_value_type(am2z_value_find(ps, "p50Ms", 5)) == AM2Z_TYPE_DOUBLE);
    CHECK(am2z_value_get_double(ps, "p50Ms", -1) > 0 && am2z_value_get_double(ps, "p50Ms", -1) < 1000);
    am2z_value_release(ps);
    CHECK(am2z_runtime_processor_stats(rt, "img") == NULL);
    CHECK(am2z_runtime_processor_stats(rt, NULL) == NULL);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_runtime_queries(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_runtime_settings c = am2z_runtime_config(rt);
    am2z_state *in = st("{}");
    am2z_execution *a, *b;
    am2z_outcome out = {0};
    am2z_value *active;
    CHECK_STR(c.kind, "local");
    CHECK_INT(c.workers, 2);
    CHECK_INT(c.default_timeout_ms, 60000);
    CHECK_INT(c.max_call_depth, AM2Z_MAX_CALL_DEPTH);
    CHECK_INT(c.queue_capacity, 65536);
    c = am2z_runtime_config(NULL);
    CHECK(c.kind == NULL && c.workers == 0);
    CHECK(am2z_runtime_is_started(rt));
    CHECK(!am2z_runtime_is_started(NULL));
    /* stop_all_sessions: every session's executions end, the runtime keeps running */
    reg(rt, proc("watch", p_sleep_watch));
    a = am2z_runtime_submit(rt, "watch", in, "s1", NULL);
    b = am2z_runtime_submit(rt, "watch", in, "s2", NULL);
    CHECK(a && b);
    CHECK_INT(am2z_runtime_stop_all_sessions(rt, 0), AM2Z_STATUS_OK);
    CHECK_INT(am2z_execution_wait(a, 2000, &out), AM2Z_STATUS_OK);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
    CHECK_INT(am2z_execution_wait(b, 2000, &out), AM2Z_STATUS_OK);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
    am2z_outcome_clear(&out);
    am2z_execution_free(a);
    am2z_execution_free(b);
    active = am2z_runtime_active_sessions(rt);
    CHECK_INT(am2z_value_len(active), 0);
    am2z_value_release(active);
    CHECK(am2z_runtime_is_started(rt));
    CHECK_INT(am2z_runtime_stop(rt, 0), AM2Z_STATUS_OK);
    CHECK(!am2z_runtime_is_started(rt));
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    CHECK(am2z_runtime_is_started(rt));
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

int main(void) {

    T_RUN(test_register_basics);
    T_RUN(test_register_children_and_many);
    T_RUN(test_register_cycle);
    T_RUN(test_register_depth_limit);
    T_RUN(test_execute_basic_and_unknown);
    T_RUN(test_execution_id);
    T_RUN(test_submit_wait_timeout);
    T_RUN(test_submit_with_desc);
    T_RUN(test_execute_many_order);
    T_RUN(test_no_deadlock_one_worker);
    T_RUN(test_depth_limit);
    T_RUN(test_execute_from_processor);
    T_RUN(test_timeout);
    T_RUN(test_timeout_cancels_children);
    T_RUN(test_free_unfinished);
    T_RUN(test_execute_many_timeout);
    T_RUN(test_execute_many_stop_session);
    T_RUN(test_retries_final_outcome);
    T_RUN(test_retries_non_retryable_and_backoff);
    T_RUN(test_nested_retry);
    T_RUN(test_stop_session);
    T_RUN(test_stop_session_grace);
    T_RUN(test_concurrency_limit);
    T_RUN(test_priorities);
    T_RUN(test_rate_limit_and_delay);
    T_RUN(test_queue_capacity_and_desc_limits);
    T_RUN(test_version_bump);
    T_RUN(test_stats);
    T_RUN(test_restart);
    T_RUN(test_stop_cancels_running);
    T_RUN(test_events);
    T_RUN(test_register_consumes_null);
    T_RUN(test_submit_status);
    T_RUN(test_outcome_names_execution_and_session);
    T_RUN(test_outcome_reuse);
    T_RUN(test_detach_and_free);
    T_RUN(test_processor_stats_dotted_name);
    T_RUN(test_runtime_queries);
    return t_done();
}
