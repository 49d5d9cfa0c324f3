/* Tests of the concurrency limits on the local runtime (issue 13 section 4):
   am2z_local_desc.session_concurrency (a tenant cannot starve the others, the cap is
   never exceeded) and am2z_queue_config.global_concurrency (one process: a cap). The
   queue runtime's cross-process limits are in test_queue_limits.c. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include <pthread.h>
#include <time.h>
#include "fixture.h"

static void msleep(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static am2z_runtime *rt_new(int workers, int session_concurrency, am2z_deadlines dl) {
    am2z_logger *lg = fx_quiet();
    am2z_local_desc d;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.workers = workers;
    d.logger = lg;
    d.session_concurrency = session_concurrency;
    d.deadlines = dl;
    rt = am2z_local_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    return rt;
}

static am2z_state *st(const char *json) { return am2z_state_parse(NULL, json, strlen(json), NULL); }

/* ---- a processor that counts how many of it run at once, per tenant ---- */

#define TENANTS 4
static int g_now[TENANTS], g_max[TENANTS], g_all_now, g_all_max; /* atomics */
static int g_seq;                                                  /* finish order */
static int g_done_at[TENANTS][128];                                /* finish seq of item i */
static int g_sleep_ms = 20;
static int g_fail_first; /* every execution's first attempt fails (retryable) */

static void bump_max(int *max, int v) {
    int m = __atomic_load_n(max, __ATOMIC_SEQ_CST);
    while (v > m && !__atomic_compare_exchange_n(max, &m, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
}

static void reset_counts(void) {
    memset(g_now, 0, sizeof g_now);
    memset(g_max, 0, sizeof g_max);
    memset(g_done_at, 0, sizeof g_done_at);
    g_all_now = g_all_max = g_seq = 0;
    g_fail_first = 0;
}

static am2z_result p_slow(am2z_ctx *ctx, const am2z_state *in) {
    int t = (int)am2z_value_get_int(in, "t", 0), i = (int)am2z_value_get_int(in, "i", 0);
    int n = __atomic_add_fetch(&g_now[t], 1, __ATOMIC_SEQ_CST);
    bump_max(&g_max[t], n);
    bump_max(&g_all_max, __atomic_add_fetch(&g_all_now, 1, __ATOMIC_SEQ_CST));
    msleep(g_sleep_ms);
    __atomic_sub_fetch(&g_all_now, 1, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(&g_now[t], 1, __ATOMIC_SEQ_CST);
    if (g_fail_first && am2z_ctx_meta(ctx)->attempt == 1)
        return am2z_fail(am2z_error_network("flaky", 503, NULL));
    if (i >= 0 && i < 128) __atomic_store_n(&g_done_at[t][i], __atomic_add_fetch(&g_seq, 1, __ATOMIC_SEQ_CST), __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_retain((am2z_state *)in));
}

static void reg_slow(am2z_runtime *rt, const char *name, int concurrency, int global, int attempts) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = p_slow;
    d.queue.concurrency = concurrency;
    d.queue.global_concurrency = global;
    d.retry.max_attempts = attempts;
    d.retry.delay_ms = 5;
    d.retry.backoff = AM2Z_BACKOFF_FIXED;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
}

static am2z_execution *submit(am2z_runtime *rt, const char *proc, const char *sid, int t, int i) {
    char json[64];
    am2z_submit_desc d;
    am2z_state *in;
    am2z_execution *e;
    snprintf(json, sizeof json, "{\"t\":%d,\"i\":%d}", t, i);
    in = st(json);
    memset(&d, 0, sizeof d);
    d.session_id = sid;
    e = am2z_runtime_submit_with(rt, proc, in, &d, NULL);
    am2z_value_release(in);
    return e;
}

static int wait_ok(am2z_execution *e) {
    am2z_outcome out = {0};
    int ok = e && am2z_execution_wait(e, 60000, &out) == AM2Z_STATUS_OK && !out.error;
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    return ok;
}

/* Tenant A floods 100 slow jobs with a cap of 2; tenant B's 5 jobs, submitted after,
   finish long before A's: B runs on the workers A may not use. Without the cap B would
   queue behind all of A (finishing at positions 101-105). */
static void test_tenant_does_not_starve_others(void) {
    am2z_runtime *rt = rt_new(4, 2, AM2Z_DEADLINES_DEFAULT);
    am2z_execution *a[100], *b[5];
    int i, ok = 1, last_b = 0;
    reset_counts();
    reg_slow(rt, "slow", 0, 0, 0);
    for (i = 0; i < 100; i++) a[i] = submit(rt, "slow", "tenant-a", 0, i);
    for (i = 0; i < 5; i++) b[i] = submit(rt, "slow", "tenant-b", 1, i);
    for (i = 0; i < 5; i++) ok &= wait_ok(b[i]);
    for (i = 0; i < 100; i++) ok &= wait_ok(a[i]);
    CHECK(ok);
    for (i = 0; i < 5; i++)
        if (g_done_at[1][i] > last_b) last_b = g_done_at[1][i];
    /* A finishes ~2 per 20 ms, B ~2 per 20 ms beside it: B is done by ~position 10 */
    printf("  tenant B (5 jobs) done at finish position %d of 105, tenant A max %d at once (cap 2)\n", last_b,
           g_max[0]);
    if (last_b > 30) T_FAIL_("tenant B's last job finished at position %d of 105", last_b);
    CHECK_INT(g_max[0], 2); /* the cap, reached and never exceeded */
    CHECK(g_max[1] <= 2);
    CHECK(g_all_max <= 4);
    am2z_runtime_free(rt);
}

/* The cap holds under many sessions, caller threads, retries (a slot is freed during
   the backoff and taken again) and a processor concurrency beside it. */
typedef struct { am2z_runtime *rt; int t; const char *proc; } caller_arg;

static void *caller(void *p) {
    caller_arg *c = (caller_arg *)p;
    char sid[16];
    int i;
    snprintf(sid, sizeof sid, "s%d", c->t);
    for (i = 0; i < 12; i++) {
        char json[64];
        am2z_submit_desc d;
        am2z_outcome out;
        am2z_state *in;
        snprintf(json, sizeof json, "{\"t\":%d,\"i\":%d}", c->t, i);
        in = st(json);
        memset(&d, 0, sizeof d);
        d.session_id = sid;
        out = am2z_runtime_execute_with(c->rt, c->proc, in, &d);
        if (out.error) __atomic_add_fetch(&g_seq, 100000, __ATOMIC_SEQ_CST); /* marks a failure */
        am2z_outcome_clear(&out);
        am2z_value_release(in);
    }
    return NULL;
}

static void run_callers(am2z_runtime *rt, const char *proc, int threads_per_tenant) {
    pthread_t th[TENANTS * 4];
    caller_arg args[TENANTS * 4];
    int k, n = 0;
    for (k = 0; k < TENANTS * threads_per_tenant; k++) {
        args[k].rt = rt;
        args[k].t = k % TENANTS;
        args[k].proc = proc;
        if (pthread_create(&th[k], NULL, caller, &args[k]) == 0) n++;
        else break;
    }
    for (k = 0; k < n; k++) pthread_join(th[k], NULL);
}

static void test_cap_never_exceeded(void) {
    am2z_runtime *rt = rt_new(8, 3, AM2Z_DEADLINES_DEFAULT);
    int t;
    reset_counts();
    g_sleep_ms = 5;
    g_fail_first = 1;
    reg_slow(rt, "flaky", 5, 0, 2);
    run_callers(rt, "flaky", 4); /* 4 threads per tenant, each 12 executions of 2 attempts */
    CHECK(g_seq < 100000);       /* every execution succeeded (second attempt) */
    for (t = 0; t < TENANTS; t++) {
        if (g_max[t] > 3) T_FAIL_("session s%d ran %d at once (cap 3)", t, g_max[t]);
        CHECK(g_max[t] >= 1);
    }
    CHECK(g_all_max <= 5); /* the processor's own concurrency */
    CHECK(g_all_max >= 4); /* sessions ran side by side */
    g_sleep_ms = 20;
    am2z_runtime_free(rt);
}

/* COOPERATIVE deadlines run an execution on its caller's thread: with a session cap it
   goes through the queue instead, so the cap holds for concurrent callers too. */
static void test_cap_cooperative(void) {
    am2z_runtime *rt = rt_new(4, 1, AM2Z_DEADLINES_COOPERATIVE);
    int t;
    reset_counts();
    g_sleep_ms = 3;
    reg_slow(rt, "coop", 0, 0, 0);
    run_callers(rt, "coop", 3);
    CHECK(g_seq < 100000);
    for (t = 0; t < TENANTS; t++)
        if (g_max[t] != 1) T_FAIL_("session s%d ran %d at once (cap 1)", t, g_max[t]);
    g_sleep_ms = 20;
    am2z_runtime_free(rt);
}

/* execute_many in a capped session goes through the job queue: the cap holds. */
static void test_cap_execute_many(void) {
    am2z_runtime *rt = rt_new(6, 2, AM2Z_DEADLINES_DEFAULT);
    am2z_state *ins[20];
    am2z_outcome outs[20];
    int i, ok = 1;
    reset_counts();
    g_sleep_ms = 5;
    reg_slow(rt, "many", 0, 0, 0);
    memset(outs, 0, sizeof outs);
    for (i = 0; i < 20; i++) ins[i] = st("{\"t\":2,\"i\":0}");
    CHECK_INT(am2z_runtime_execute_many(rt, "many", (const am2z_state *const *)ins, 20, "bulk", outs), AM2Z_STATUS_OK);
    for (i = 0; i < 20; i++) {
        ok &= outs[i].error == NULL;
        am2z_outcome_clear(&outs[i]);
        am2z_value_release(ins[i]);
    }
    CHECK(ok);
    CHECK_INT(g_max[2], 2);
    g_sleep_ms = 20;
    am2z_runtime_free(rt);
}

/* global_concurrency on the local runtime (one process) caps like concurrency, and the
   smaller of the two holds. */
static void test_global_concurrency_local(void) {
    am2z_runtime *rt = rt_new(6, 0, AM2Z_DEADLINES_DEFAULT);
    am2z_execution *e[24];
    int i, ok = 1;
    reset_counts();
    g_sleep_ms = 5;
    reg_slow(rt, "g2", 0, 2, 0);
    reg_slow(rt, "g3c4", 4, 3, 0);
    for (i = 0; i < 12; i++) e[i] = submit(rt, "g2", NULL, 0, i);
    for (i = 0; i < 12; i++) ok &= wait_ok(e[i]);
    CHECK_INT(g_max[0], 2);
    for (i = 0; i < 24; i++) e[i] = submit(rt, "g3c4", NULL, 1, i);
    for (i = 0; i < 24; i++) ok &= wait_ok(e[i]);
    CHECK_INT(g_max[1], 3);
    CHECK(ok);
    g_sleep_ms = 20;
    am2z_runtime_free(rt);
}

/* Jobs waiting for their session's slot are cancelled by stop_session and by a runtime
   free like any queued job (no leak, no hang: ASan checks the memory), and a stopped
   session's slots do not leak to its next use. */
static void test_parked_jobs_stop(void) {
    am2z_runtime *rt = rt_new(3, 1, AM2Z_DEADLINES_DEFAULT);
    am2z_execution *a[30], *b[30];
    am2z_outcome out = {0};
    int i, cancelled = 0;
    reset_counts();
    g_sleep_ms = 10;
    reg_slow(rt, "p", 0, 0, 0);
    for (i = 0; i < 30; i++) a[i] = submit(rt, "p", "stopme", 0, i);
    msleep(15);
    CHECK_INT(am2z_runtime_stop_session(rt, "stopme", 1000), AM2Z_STATUS_OK);
    for (i = 0; i < 30; i++) {
        CHECK_INT(am2z_execution_wait(a[i], 10000, &out), AM2Z_STATUS_OK);
        if (out.error && out.error->kind == AM2Z_ERROR_CANCELLED) cancelled++;
        am2z_outcome_clear(&out);
        am2z_execution_free(a[i]);
    }
    CHECK(cancelled >= 25);
    /* the session again: a fresh cap of 1, so its jobs still run one at a time */
    for (i = 0; i < 4; i++) a[i] = submit(rt, "p", "stopme", 1, i);
    for (i = 0; i < 4; i++) CHECK(wait_ok(a[i]));
    CHECK_INT(g_max[1], 1);
    /* parked jobs at stop: cancelled; the session's next use after a restart starts
       with free slots */
    for (i = 0; i < 30; i++) b[i] = submit(rt, "p", "freeme", 2, i);
    msleep(5);
    CHECK_INT(am2z_runtime_stop(rt, 0), AM2Z_STATUS_OK);
    cancelled = 0;
    for (i = 0; i < 30; i++) {
        CHECK_INT(am2z_execution_wait(b[i], 10000, &out), AM2Z_STATUS_OK);
        if (out.error && out.error->kind == AM2Z_ERROR_CANCELLED) cancelled++;
        am2z_outcome_clear(&out);
        am2z_execution_free(b[i]);
    }
    CHECK(cancelled >= 28);
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    for (i = 0; i < 3; i++) b[i] = submit(rt, "p", "freeme", 3, i);
    for (i = 0; i < 3; i++) CHECK(wait_ok(b[i]));
    CHECK_INT(g_max[3], 1);
    /* and at free, with executions detached (their handles freed first) */
    for (i = 0; i < 10; i++) am2z_execution_free(submit(rt, "p", "gone", 0, i));
    am2z_runtime_free(rt);
    g_sleep_ms = 20;
}

/* Bad values are refused with a detail naming the option. */
static void test_bad_values(void) {
    am2z_local_desc d;
    am2z_processor_desc pd;
    am2z_status s = AM2Z_STATUS_OK;
    memset(&d, 0, sizeof d);
    d.session_concurrency = -1;
    CHECK(am2z_local_runtime_new(&d, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "session_concurrency") != NULL);
    d.session_concurrency = AM2Z_MAX_CONCURRENCY + 1;
    CHECK(am2z_local_runtime_new(&d, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_INVALID_ARGUMENT);
    memset(&pd, 0, sizeof pd);
    pd.name = "bad";
    pd.fn = p_slow;
    pd.queue.global_concurrency = -2;
    CHECK(am2z_processor_new(&pd, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "global_concurrency") != NULL);
    pd.queue.global_concurrency = AM2Z_MAX_CONCURRENCY + 1;
    CHECK(am2z_processor_new(&pd, &s) == NULL);
    pd.queue.global_concurrency = AM2Z_MAX_CONCURRENCY;
    {
        am2z_processor *p = am2z_processor_new(&pd, &s);
        CHECK(p != NULL);
        am2z_processor_release(p);
    }
}

int main(void) {
    T_RUN(test_tenant_does_not_starve_others);
    T_RUN(test_cap_never_exceeded);
    T_RUN(test_cap_cooperative);
    T_RUN(test_cap_execute_many);
    T_RUN(test_global_concurrency_local);
    T_RUN(test_parked_jobs_stop);
    T_RUN(test_bad_values);
    return t_done();
}
