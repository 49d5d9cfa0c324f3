/* test_queue_global_cap.c - the processor-wide cap and the session rate on the queue
   runtime (issue 13 section 4), against a private redis-server:
     - global_concurrency counts a processor's jobs in its global queue AND all its
       session queues: two worker processes x 8 threads, 4 sessions plus the global
       queue, cap 3 -> at most 3 run at once across everything (per queue it was up to
       5 x 3), the cap is reached, every job finishes and the slot set ends empty;
     - a worker killed (SIGKILL) with the cap full does not leak the slots: another
       worker gets the full cap again once its locks expired (stalled check);
     - session_rate: tenant A at 10 per second does not delay tenant B, and A's
       throughput stays within its rate (generous bounds);
     - bad session_rate values are refused with a detail.
   The worker processes are this program again (AM2Z_CAP_WORKER in the environment);
   they count simultaneous runs in Redis (INCR/DECR and a max, in one script). */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "proc.h"
#include "fixture.h"
#include "limits_fixture.h"

/* ---- the worker process ---- */

/* A job of {"ms"} (or, with "hold", for as long as the key "hold" exists, at most 60 s),
   counted for the whole processor ("all") and per session; "done:<session>" counts the
   finished ones. */
static am2z_result slow(am2z_ctx *ctx, const am2z_state *in) {
    const char *sid = am2z_ctx_meta(ctx)->session_id;
    char done_k[160];
    fx_count(port, g_count, "all", 1);
    fx_count(port, g_count, sid, 1);
    if (am2z_value_get_int(in, "hold", 0)) {
        long long t0 = tp_now_ms();
        while (fx_redis_num(port, "EXISTS %s", "hold", NULL) == 1 && tp_now_ms() - t0 < 60000) tp_sleep_ms(20);
    } else {
        tp_sleep_ms(am2z_value_get_int(in, "ms", 50));
    }
    fx_count(port, g_count, sid, -1);
    fx_count(port, g_count, "all", -1);
    snprintf(done_k, sizeof done_k, "done:%s", sid);
    fx_redis_num(port, "INCR %s", done_k, NULL);
    return am2z_ok(am2z_value_retain((am2z_state *)in));
}

/* Env: AM2Z_CAP_WORKER=<port>:<global>:<rate max>:<rate per ms>:<lock ms>. Registers
   "slow" with that global_concurrency (the session rate in the runtime desc), serves
   until the key "stop" exists. */
static int worker_main(const char *spec) {
    int global = 0, rmax = 0;
    long long rper = 0, lock = 0;
    am2z_queue_desc d;
    am2z_processor_desc pd;
    if (sscanf(spec, "%d:%d:%d:%lld:%lld", &port, &global, &rmax, &rper, &lock) != 5) return 2;
    memset(&d, 0, sizeof d);
    d.session_rate.max = rmax;
    d.session_rate.per_ms = rper;
    d.lock_duration_ms = lock;
    d.stalled_interval_ms = lock ? lock / 2 : 0;
    d.max_stalled_count = 5;
    memset(&pd, 0, sizeof pd);
    pd.fn = slow;
    pd.timeout_ms = 90000;
    pd.queue.global_concurrency = global;
    return fx_limits_serve(&d, &pd);
}

/* ---- the test process ---- */

/* The workers' environment (a static buffer, valid until the next call). */
static const char *worker_env(int global, int rmax, long long rper, long long lock) {
    static char env[128];
    snprintf(env, sizeof env, "AM2Z_CAP_WORKER=%d:%d:%d:%lld:%lld", port, global, rmax, rper, lock);
    return env;
}

static const char *const g_sessions[4] = {"s-a", "s-b", "s-c", "s-d"};

static void test_cap_spans_sessions(void) {
    tp_proc w[2];
    am2z_execution *e[5][8];
    am2z_runtime *rt;
    int i, ok = 0;
    memset(w, 0, sizeof w);
    rt = fx_workers_and_producer(port, w, 2, worker_env(3, 0, 0, 0), g_quiet);
    if (!rt) return;
    for (i = 0; i < 5; i++) fx_submit_n(rt, "slow", e[i], 8, i < 4 ? g_sessions[i] : NULL, "{\"ms\":60}");
    for (i = 0; i < 5; i++) ok += fx_wait_all(e[i], 8, 60000);
    CHECK_INT(ok, 40);
    printf("  2 processes x 8 threads, 4 sessions + the global queue, global_concurrency 3: max %lld at once\n",
           fx_redis_num(port, "GET %s", "max:all", NULL));
    /* 16 threads, 5 queues: at most 3 at once in all of them, and the cap is reached */
    CHECK_INT(fx_redis_num(port, "GET %s", "max:all", NULL), 3);
    CHECK_INT(fx_redis_num(port, "GET %s", "now:all", NULL), 0);
    for (i = 0; i < 4; i++) CHECK_INT(fx_redis_num(port, "GET done:%s", g_sessions[i], NULL), 8);
    /* every slot given back, nobody left blocked */
    CHECK_INT(fx_redis_num(port, "ZCARD %s", "bull:am2z~slow:am2z:running", NULL), 0);
    CHECK_INT(fx_redis_num(port, "ZCARD %s", "bull:am2z~slow:am2z:blocked", NULL), 0);
    am2z_runtime_free(rt);
    fx_stop_workers(port, w, 2);
}

static void test_killed_worker_gives_slots_back(void) {
    tp_proc w[2];
    am2z_execution *held[3], *e[12];
    am2z_runtime *rt;
    long long t0;
    memset(w, 0, sizeof w);
    /* locks of 1 s (stalled check every 0.5 s), so a dead worker's jobs expire quickly */
    rt = fx_workers_and_producer(port, w, 1, worker_env(3, 0, 0, 1000), g_quiet);
    if (!rt) return;
    fx_redis_do(port, "SET hold 1");
    fx_submit_n(rt, "slow", held, 1, "s-a", "{\"hold\":1}");
    fx_submit_n(rt, "slow", held + 1, 1, "s-b", "{\"hold\":1}");
    fx_submit_n(rt, "slow", held + 2, 1, NULL, "{\"hold\":1}");
    t0 = tp_now_ms();
    while (fx_redis_num(port, "GET %s", "now:all", NULL) < 3 && tp_now_ms() - t0 < 20000) tp_sleep_ms(20);
    CHECK_INT(fx_redis_num(port, "GET %s", "now:all", NULL), 3);
    CHECK_INT(fx_redis_num(port, "ZCARD %s", "bull:am2z~slow:am2z:running", NULL), 3);
    /* killed with the cap full: nothing removes its three slots but their leases */
    tp_stop(&w[0], SIGKILL, 1000);
    memset(&w[0], 0, sizeof w[0]);
    fx_redis_do(port, "DEL hold now:all max:all");
    if (!fx_start_workers(w, 1, worker_env(3, 0, 0, 1000))) {
        T_FAIL_("worker did not start");
        fx_stop_workers(port, w, 1);
        return;
    }
    /* new work in the sessions of the held jobs (the new worker serves, and so scans,
       the session queues it is woken for) and in others */
    fx_submit_n(rt, "slow", e, 3, "s-a", "{\"ms\":100}");
    fx_submit_n(rt, "slow", e + 3, 3, "s-b", "{\"ms\":100}");
    fx_submit_n(rt, "slow", e + 6, 3, "s-c", "{\"ms\":100}");
    fx_submit_n(rt, "slow", e + 9, 3, NULL, "{\"ms\":100}");
    CHECK_INT(fx_wait_all(e, 12, 60000), 12);
    CHECK_INT(fx_wait_all(held, 3, 60000), 3); /* recovered by the stalled check, run again */
    printf("  after a kill -9 with 3 slots taken: max %lld at once in the next worker\n",
           fx_redis_num(port, "GET %s", "max:all", NULL));
    CHECK_INT(fx_redis_num(port, "GET %s", "max:all", NULL), 3); /* the full cap again */
    CHECK_INT(fx_redis_num(port, "ZCARD %s", "bull:am2z~slow:am2z:running", NULL), 0);
    am2z_runtime_free(rt);
    fx_stop_workers(port, w, 1);
}

static void test_session_rate(void) {
    tp_proc w[1];
    am2z_execution *a[40], *b[5];
    am2z_runtime *rt;
    long long t0, tb, t2, done_a_at_b, done_a_2s;
    memset(w, 0, sizeof w);
    rt = fx_workers_and_producer(port, w, 1, worker_env(0, 10, 1000, 0), g_quiet);
    if (!rt) return;
    t0 = tp_now_ms();
    fx_submit_n(rt, "slow", a, 40, "tenant-a", "{\"ms\":5}");
    fx_submit_n(rt, "slow", b, 5, "tenant-b", "{\"ms\":5}");
    CHECK_INT(fx_wait_all(b, 5, 30000), 5);
    tb = tp_now_ms() - t0;
    done_a_at_b = fx_redis_num(port, "GET %s", "done:tenant-a", NULL);
    while (tp_now_ms() - t0 < 2000) tp_sleep_ms(10);
    done_a_2s = fx_redis_num(port, "GET %s", "done:tenant-a", NULL);
    t2 = tp_now_ms() - t0; /* late on a loaded machine: the windows begun by then count */
    printf("  session_rate 10/s: tenant B's 5 jobs in %lld ms (A had %lld done then), A ran %lld in 2 s\n", tb,
           done_a_at_b, done_a_2s);
    /* B is not behind A's backlog: done long before A's 40 jobs could be (4 s at 10/s) */
    CHECK(tb < 3000);
    CHECK(done_a_at_b < 40);
    /* A within its rate: 3 windows of 10 begin in 2 s (fixed windows), and it runs */
    CHECK(done_a_2s <= 10 * (1 + t2 / 1000));
    CHECK(done_a_2s >= 5);
    CHECK_INT(fx_redis_num(port, "HGET %s %s", "bull:am2z~slow~tenant-a:meta", "max"), 10);
    CHECK_INT(fx_redis_num(port, "HGET %s %s", "bull:am2z~slow~tenant-a:meta", "duration"), 1000);
    CHECK_INT(fx_wait_all(a, 40, 60000), 40);
    am2z_runtime_free(rt);
    fx_stop_workers(port, w, 1);
}

static void test_bad_rate(void) {
    am2z_queue_desc d;
    memset(&d, 0, sizeof d);
    d.session_rate.max = 10; /* no window */
    fx_check_refused(&d, "session_rate.per_ms");
    d.session_rate.max = -1;
    d.session_rate.per_ms = 1000;
    fx_check_refused(&d, "session_rate.max");
    d.session_rate.max = 1;
    d.session_rate.per_ms = AM2Z_RATE_MAX_PER_MS + 1;
    fx_check_refused(&d, "session_rate.per_ms");
}

static void cases(void) {
    T_RUN(test_cap_spans_sessions);
    T_RUN(test_killed_worker_gives_slots_back);
    T_RUN(test_session_rate);
    T_RUN(test_bad_rate);
}

int main(void) {
    return fx_limits_main("AM2Z_CAP_WORKER", worker_main, cases);
}
