/* test_session_rate.c - am2z_local_desc.session_rate on the local runtime (issue 13
   section 4): a tenant's starts are capped per window, the other tenants are not held
   behind its backlog, it combines with session_concurrency, and bad values are refused.
   The queue runtime's session rate is in test_queue_global_cap.c. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include <time.h>
#include "fixture.h"

static int64_t now_ms(void) { return am2z_monotonic_ns() / 1000000; }

static void msleep(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static int g_done[2];          /* atomics: finished per tenant */
static int g_now[2], g_max[2]; /* atomics: running per tenant, and the most seen */

static am2z_result p_work(am2z_ctx *ctx, const am2z_state *in) {
    int t = strcmp(am2z_ctx_meta(ctx)->session_id, "tenant-b") == 0;
    int n = __atomic_add_fetch(&g_now[t], 1, __ATOMIC_SEQ_CST), m = __atomic_load_n(&g_max[t], __ATOMIC_SEQ_CST);
    while (n > m && !__atomic_compare_exchange_n(&g_max[t], &m, n, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    msleep((int)am2z_value_get_int(in, "ms", 2));
    __atomic_sub_fetch(&g_now[t], 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&g_done[t], 1, __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_retain((am2z_state *)in));
}

static am2z_runtime *rt_new(int max, int64_t per_ms, int session_concurrency) {
    am2z_logger *lg = fx_quiet();
    am2z_local_desc d;
    am2z_runtime *rt;
    am2z_processor_desc pd;
    memset(&d, 0, sizeof d);
    d.workers = 4;
    d.logger = lg;
    d.session_rate.max = max;
    d.session_rate.per_ms = per_ms;
    d.session_concurrency = session_concurrency;
    rt = am2z_local_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    memset(&pd, 0, sizeof pd);
    pd.name = "work";
    pd.fn = p_work;
    pd.timeout_ms = 30000;
    if (rt) CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)), AM2Z_STATUS_OK);
    memset(g_done, 0, sizeof g_done);
    memset(g_now, 0, sizeof g_now);
    memset(g_max, 0, sizeof g_max);
    return rt;
}

/* 5 starts per 200 ms (25 a second): tenant A's 40 executions take about 1.6 s; tenant
   B's 5 are not behind them; A stays within its windows. */
static void test_rate_per_tenant(void) {
    am2z_runtime *rt = rt_new(5, 200, 0);
    am2z_execution *a[40], *b[5];
    int64_t t0, tb, t500;
    int done_b_at, done_a_at_b, done_a_500;
    CHECK(rt != NULL);
    if (!rt) return;
    t0 = now_ms();
    fx_submit_n(rt, "work", a, 40, "tenant-a", "{\"ms\":2}");
    fx_submit_n(rt, "work", b, 5, "tenant-b", "{\"ms\":2}");
    CHECK_INT(fx_wait_all(b, 5, 30000), 5);
    tb = now_ms() - t0;
    done_b_at = __atomic_load_n(&g_done[1], __ATOMIC_SEQ_CST);
    done_a_at_b = __atomic_load_n(&g_done[0], __ATOMIC_SEQ_CST);
    while (now_ms() - t0 < 500) msleep(5);
    done_a_500 = __atomic_load_n(&g_done[0], __ATOMIC_SEQ_CST);
    t500 = now_ms() - t0; /* late on a loaded machine: the windows begun by then count */
    printf("  session_rate 5/200 ms: tenant B's 5 in %lld ms (A had %d done), A ran %d in 500 ms\n", (long long)tb,
           done_a_at_b, done_a_500);
    CHECK_INT(done_b_at, 5);
    CHECK(tb < 1000);            /* A's backlog alone takes 1.6 s */
    CHECK(done_a_at_b < 40);
    CHECK(done_a_500 <= 5 * (1 + t500 / 200)); /* 3 windows of 5 begin in 500 ms */
    CHECK(done_a_500 >= 5);      /* and A runs */
    CHECK_INT(fx_wait_all(a, 40, 30000), 40);
    CHECK(now_ms() - t0 >= 7 * 200 - 50); /* 40 starts need 8 windows: 7 of them waited out */
    am2z_runtime_free(rt);
}

/* With session_concurrency 1 too: one at a time and within the rate. */
static void test_rate_with_concurrency(void) {
    am2z_runtime *rt = rt_new(3, 100, 1);
    am2z_execution *a[9];
    int64_t t0;
    CHECK(rt != NULL);
    if (!rt) return;
    t0 = now_ms();
    fx_submit_n(rt, "work", a, 9, "tenant-a", "{\"ms\":5}");
    CHECK_INT(fx_wait_all(a, 9, 30000), 9);
    CHECK_INT(__atomic_load_n(&g_max[0], __ATOMIC_SEQ_CST), 1);
    CHECK(now_ms() - t0 >= 2 * 100 - 20); /* 9 starts: 3 windows */
    am2z_runtime_free(rt);
}

static void test_bad_values(void) {
    am2z_local_desc d;
    am2z_status s = AM2Z_STATUS_OK;
    memset(&d, 0, sizeof d);
    d.session_rate.max = 10;
    CHECK(am2z_local_runtime_new(&d, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "session_rate.per_ms") != NULL);
    d.session_rate.max = 0;
    d.session_rate.per_ms = 1000;
    CHECK(am2z_local_runtime_new(&d, &s) == NULL);
    CHECK(strstr(am2z_status_detail(), "session_rate.max") != NULL);
    d.session_rate.max = AM2Z_RATE_MAX;
    d.session_rate.per_ms = AM2Z_RATE_MAX_PER_MS + 1;
    CHECK(am2z_local_runtime_new(&d, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_INVALID_ARGUMENT);
    d.session_rate.max = AM2Z_RATE_MAX + 1;
    d.session_rate.per_ms = AM2Z_RATE_MAX_PER_MS;
    CHECK(am2z_local_runtime_new(&d, &s) == NULL);
    CHECK(strstr(am2z_status_detail(), "session_rate.max") != NULL);
    d.session_rate.max = AM2Z_RATE_MAX; /* the limits themselves are accepted */
    {
        am2z_runtime *rt = am2z_local_runtime_new(&d, &s);
        CHECK(rt != NULL);
        am2z_runtime_free(rt);
    }
}

int main(void) {
    T_RUN(test_rate_per_tenant);
    T_RUN(test_rate_with_concurrency);
    T_RUN(test_bad_values);
    return t_done();
}
