/* test_queue_limits.c - concurrency limits that hold across processes (issue 13 section
   4) on the queue runtime, against a private redis-server:
     - global_concurrency: two worker processes with 8 worker threads each, a processor
       with global_concurrency 3: at most 3 of its jobs run at once in both together,
       the cap is reached, both processes ran jobs, and no job waits forever (a slot
       freed in one process wakes the other's workers);
     - the cap is the workers' setting: it lands in the queue's meta "concurrency"
       (BullMQ's global concurrency) and goes away when re-registered without it;
     - session_concurrency: each session's jobs of a processor run at most N at once
       across both processes, while two sessions run side by side;
     - bad values are refused.
   The worker processes are this program again (AM2Z_LIMITS_WORKER in the environment);
   they count simultaneous runs in Redis (INCR/DECR and a max, in one script). */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "proc.h"
#include "fixture.h"
#include "limits_fixture.h"

/* ---- the worker process ---- */

/* A slow job: counted for the whole cap ("all"), per session and per process. */
static am2z_result slow(am2z_ctx *ctx, const am2z_state *in) {
    char pid_tag[32];
    const char *sid = am2z_ctx_meta(ctx)->session_id;
    snprintf(pid_tag, sizeof pid_tag, "pid%d", (int)getpid());
    fx_count(port, g_count, "all", 1);
    fx_count(port, g_count, sid, 1);
    fx_count(port, g_count, pid_tag, 1);
    tp_sleep_ms(am2z_value_get_int(in, "ms", 50));
    fx_count(port, g_count, pid_tag, -1);
    fx_count(port, g_count, sid, -1);
    fx_count(port, g_count, "all", -1);
    if (am2z_value_get_int(in, "fail", 0))
        return am2z_fail(am2z_error_business("NOPE", AM2Z_SEVERITY_DEFAULT, "fails on purpose"));
    return am2z_ok(am2z_value_retain((am2z_state *)in));
}

/* Env: AM2Z_LIMITS_WORKER=<port>:<global>:<session>:<per process>. Registers "slow"
   with that global_concurrency and concurrency, serves until the key "stop" exists. */
static int worker_main(const char *spec) {
    int global = 0, session = 0, local = 0;
    am2z_queue_desc d;
    am2z_processor_desc pd;
    if (sscanf(spec, "%d:%d:%d:%d", &port, &global, &session, &local) != 4) return 2;
    memset(&d, 0, sizeof d);
    d.session_concurrency = session;
    memset(&pd, 0, sizeof pd);
    pd.fn = slow;
    pd.timeout_ms = 30000;
    pd.queue.global_concurrency = global;
    pd.queue.concurrency = local;
    return fx_limits_serve(&d, &pd);
}

/* ---- the test process ---- */

/* The workers' environment (a static buffer, valid until the next call). */
static const char *worker_env(int global, int session, int local) {
    static char env[96];
    snprintf(env, sizeof env, "AM2Z_LIMITS_WORKER=%d:%d:%d:%d", port, global, session, local);
    return env;
}

static void test_global_concurrency_two_processes(void) {
    tp_proc w[2];
    am2z_execution *e[40];
    am2z_runtime *rt;
    char pk[64];
    int i, ran = 0;
    memset(w, 0, sizeof w);
    rt = fx_workers_and_producer(port, w, 2, worker_env(3, 0, 0), g_quiet);
    if (!rt) return;
    CHECK_INT(fx_redis_num(port, "HGET %s %s", "bull:am2z~slow:meta", "concurrency"), 3);
    fx_submit_n(rt, "slow", e, 40, NULL, "{\"ms\":60}");
    CHECK_INT(fx_wait_all(e, 40, 60000), 40);
    printf("  2 processes x 8 threads, global_concurrency 3: max %lld at once\n",
           fx_redis_num(port, "GET %s", "max:all", NULL));
    /* 16 worker threads, at most 3 at once: reached, never exceeded */
    CHECK_INT(fx_redis_num(port, "GET %s", "max:all", NULL), 3);
    CHECK_INT(fx_redis_num(port, "GET %s", "now:all", NULL), 0);
    am2z_runtime_free(rt);
    fx_stop_workers(port, w, 2);
    /* each process may run 2 (concurrency, per process): 2 + 2 without the shared cap,
       3 with it, and both processes run jobs */
    memset(w, 0, sizeof w);
    rt = fx_workers_and_producer(port, w, 2, worker_env(3, 0, 2), g_quiet);
    if (!rt) return;
    fx_submit_n(rt, "slow", e, 40, NULL, "{\"ms\":60}");
    CHECK_INT(fx_wait_all(e, 40, 60000), 40);
    CHECK_INT(fx_redis_num(port, "GET %s", "max:all", NULL), 3);
    for (i = 0; i < 2; i++) {
        snprintf(pk, sizeof pk, "max:pid%d", (int)w[i].pid);
        if (fx_redis_num(port, "GET %s", pk, NULL) > 0) ran++;
    }
    CHECK_INT(ran, 2);
    am2z_runtime_free(rt);
    /* the workers' setting: re-registered without a cap, the meta's goes away */
    fx_end_workers(port, w, 2);
    memset(w, 0, sizeof w);
    if (!fx_start_workers(w, 1, worker_env(0, 0, 0))) {
        T_FAIL_("worker did not start");
        fx_stop_workers(port, w, 1);
        return;
    }
    CHECK_INT(fx_redis_num(port, "HEXISTS %s %s", "bull:am2z~slow:meta", "concurrency"), 0);
    fx_stop_workers(port, w, 1);
}

/* A worker thread serves a queue for at most 32 jobs in a row, then sleeps again; the
   job it ends with (here a failure, the fail script) frees the slot without taking the
   next job: the freed slot must wake a sleeping worker, or the queue stalls with jobs
   waiting (its marker was used up by a fetch that found the queue full). */
static void test_failed_jobs_free_their_slot(void) {
    tp_proc w[1];
    am2z_execution *e[40];
    am2z_runtime *rt;
    int i, failed = 0;
    long long t0;
    memset(w, 0, sizeof w);
    rt = fx_workers_and_producer(port, w, 1, worker_env(1, 0, 0), g_quiet);
    if (!rt) return;
    for (i = 0; i < 40; i++) {
        am2z_state *in = am2z_state_parse(NULL, "{\"ms\":5,\"fail\":1}", AM2Z_NTS, NULL);
        e[i] = am2z_runtime_submit(rt, "slow", in, NULL, NULL);
        am2z_value_release(in);
    }
    t0 = tp_now_ms();
    for (i = 0; i < 40; i++) {
        am2z_outcome out = {0};
        if (e[i] && am2z_execution_wait(e[i], 15000, &out) == AM2Z_STATUS_OK && out.error) failed++;
        am2z_outcome_clear(&out);
        am2z_execution_free(e[i]);
    }
    CHECK_INT(failed, 40);
    if (tp_now_ms() - t0 > 10000) T_FAIL_("40 jobs of 5 ms took %lld ms", tp_now_ms() - t0);
    CHECK_INT(fx_redis_num(port, "GET %s", "max:all", NULL), 1);
    am2z_runtime_free(rt);
    fx_stop_workers(port, w, 1);
}

static void test_session_concurrency_two_processes(void) {
    tp_proc w[2];
    am2z_execution *a[20], *b[20];
    am2z_runtime *rt;
    memset(w, 0, sizeof w);
    rt = fx_workers_and_producer(port, w, 2, worker_env(0, 2, 0), g_quiet);
    if (!rt) return;
    fx_submit_n(rt, "slow", a, 20, "tenant-a", "{\"ms\":50}");
    fx_submit_n(rt, "slow", b, 20, "tenant-b", "{\"ms\":50}");
    CHECK_INT(fx_wait_all(a, 20, 60000), 20);
    CHECK_INT(fx_wait_all(b, 20, 60000), 20);
    CHECK_INT(fx_redis_num(port, "GET %s", "max:tenant-a", NULL), 2);
    CHECK_INT(fx_redis_num(port, "GET %s", "max:tenant-b", NULL), 2);
    CHECK(fx_redis_num(port, "GET %s", "max:all", NULL) >= 3); /* the two sessions ran side by side */
    CHECK_INT(fx_redis_num(port, "HGET %s %s", "bull:am2z~slow~tenant-a:meta", "concurrency"), 2);
    am2z_runtime_free(rt);
    fx_stop_workers(port, w, 2);
}

static void test_bad_values(void) {
    am2z_queue_desc d;
    memset(&d, 0, sizeof d);
    d.session_concurrency = -1;
    fx_check_refused(&d, "session_concurrency");
    d.session_concurrency = AM2Z_MAX_CONCURRENCY + 1;
    fx_check_refused(&d, "session_concurrency");
}

static void cases(void) {
    T_RUN(test_global_concurrency_two_processes);
    T_RUN(test_failed_jobs_free_their_slot);
    T_RUN(test_session_concurrency_two_processes);
    T_RUN(test_bad_values);
}

int main(void) {
    return fx_limits_main("AM2Z_LIMITS_WORKER", worker_main, cases);
}
