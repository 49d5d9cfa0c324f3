/* The queue runtime's schedule timer when nothing is due (am2z_resp.h 4.10): it waits in
   Redis (XREAD BLOCK on <bull>:<prefix>:schedules:wake) instead of polling, so an idle
   worker process sends a handful of commands, not ~20 a second; a schedule upserted by
   another process still ends that wait at once and its first slot runs on time; and a stop
   cuts the wait loose instead of giving up on Redis. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "proc.h"
#include "fixture.h"

static t_redis server;
static int port;
static am2z_logger *g_quiet;
static am2z_redis *g_rec; /* atomic: where runs are recorded (the worker process's) */


/* Records when it ran (epoch ms) in the hash test:at under its execution id. */
static am2z_result tick(am2z_ctx *ctx, const am2z_state *in) {
    am2z_reply rep;
    am2z_redis *rec = __atomic_load_n(&g_rec, __ATOMIC_SEQ_CST);
    char at[24];
    memset(&rep, 0, sizeof rep);
    snprintf(at, sizeof at, "%lld", (long long)am2z_now_ms());
    if (rec) am2z_redis_command(rec, &rep, "HSET test:at %s %s", am2z_ctx_meta(ctx)->execution_id, at);
    am2z_reply_clear(&rep);
    return am2z_ok(am2z_value_retain(in));
}

static am2z_processor *tick_proc(void) {
    return am2z_processor_new(&(am2z_processor_desc){.name = "tick", .fn = tick}, NULL);
}

/* ---- the worker process: one worker thread, then idle until killed ---- */

static int worker_main(int p) {
    am2z_runtime *rt;
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    alarm(60); /* never left behind */
    port = p;
    g_quiet = fx_quiet();
    __atomic_store_n(&g_rec, fx_conn(port), __ATOMIC_SEQ_CST);
    rt = fx_queue_rt(port, 1, g_quiet);
    if (!rt || !g_rec || am2z_runtime_register(rt, tick_proc()) != AM2Z_STATUS_OK) {
        fprintf(stderr, "worker: setup failed: %s\n", am2z_status_detail());
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) tp_sleep_ms(1000);
}


/* ---- helpers ---- */

/* Calls of each command so far (INFO commandstats): what the schedule timer sends
   (ZRANGEBYSCORE, ZRANGE, XREAD, XREVRANGE), and all but INFO (this test's own). */
typedef struct { int64_t timer, total; } calls;

static calls commandstats(am2z_redis *r) {
    calls c = {0, 0};
    am2z_reply rep;
    const char *p;
    memset(&rep, 0, sizeof rep);
    if (am2z_redis_command(r, &rep, "INFO commandstats") != AM2Z_STATUS_OK) return c;
    for (p = strstr(am2z_reply_str(&rep), "cmdstat_"); p; p = strstr(p + 1, "cmdstat_")) {
        char name[64];
        long long n;
        if (sscanf(p, "cmdstat_%63[^:]:calls=%lld", name, &n) != 2) continue;
        if (!strcmp(name, "info")) continue;
        c.total += n;
        if (!strcmp(name, "zrangebyscore") || !strcmp(name, "zrange") || !strcmp(name, "xread") ||
            !strcmp(name, "xrevrange"))
            c.timer += n;
    }
    am2z_reply_clear(&rep);
    return c;
}

static int64_t hget_int(am2z_redis *r, const char *key, const char *field) {
    am2z_reply rep;
    int64_t v = -1;
    memset(&rep, 0, sizeof rep);
    if (am2z_redis_command(r, &rep, "HGET %s %s", key, field) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_BULK)
        v = atoll(am2z_reply_str(&rep));
    am2z_reply_clear(&rep);
    return v;
}

/* ---- tests ---- */

/* An idle worker process for 2 s: its schedule timer sends at most one wait's commands
   (it polled every 100 ms before: ~40), the whole process a handful. Then a schedule
   upserted by this process (a producer) 3 s after the worker started, long before the
   worker's wait would end by itself (AM2Z_QUEUE_SCHEDULE_POLL_MS, 10 s), runs at its
   first slot. */
static void test_idle_worker_then_upsert_elsewhere(void) {
    am2z_runtime *prod = fx_queue_rt(port, AM2Z_QUEUE_NO_WORKERS, g_quiet);
    am2z_state *in = am2z_state_parse(NULL, "{}", AM2Z_NTS, NULL);
    am2z_redis *r = fx_conn(port);
    tp_proc w;
    calls a, b;
    char id[64];
    int64_t slot, ran, until;
    memset(&w, 0, sizeof w);
    CHECK(prod && in && r);
    CHECK(fx_spawn_ready(&w, "worker", port));
    tp_sleep_ms(500); /* its start-up commands */
    a = commandstats(r);
    tp_sleep_ms(2000);
    b = commandstats(r);
    printf("  idle worker process over 2 s: %lld commands, %lld of them the schedule timer's\n",
           (long long)(b.total - a.total), (long long)(b.timer - a.timer));
    CHECK(b.timer - a.timer <= 3);
    CHECK(b.total - a.total <= 12);
    /* a schedule from another process: the worker's timer wakes and claims its first slot */
    CHECK_INT(am2z_queue_declare(prod, "tick", NULL), AM2Z_STATUS_OK);
    slot = am2z_now_ms() + 500;
    CHECK_INT(am2z_runtime_schedule_upsert(prod, &(am2z_schedule_desc){.id = "wake", .processor = "tick", .input = in,
                                                                      .every_ms = 3600000, .start_at = slot}),
              AM2Z_STATUS_OK);
    snprintf(id, sizeof id, "repeat:wake:%lld", (long long)slot);
    until = slot + 5000;
    while ((ran = hget_int(r, "test:at", id)) < 0 && am2z_now_ms() < until) tp_sleep_ms(10);
    printf("  first slot ran %lld ms after it was due\n", (long long)(ran - slot));
    CHECK(ran >= slot);
    CHECK(ran < slot + 2000); /* its wait would have ended ~7 s later */
    /* a remove wakes it too, and it stays idle after */
    CHECK_INT(am2z_runtime_schedule_remove(prod, "wake"), AM2Z_STATUS_OK);
    tp_stop(&w, SIGKILL, 2000);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(prod);
}

static int g_gave_up; /* atomic: the stop logged that it gave up on Redis */

static void count_give_up(const am2z_log_entry *e, void *user_data) {
    (void)user_data;
    if (e->message && strstr(e->message, "did not answer within the stop's grace period"))
        __atomic_add_fetch(&g_gave_up, 1, __ATOMIC_SEQ_CST);
}

/* A stop while the timer waits in Redis cuts the wait loose: quick, and without giving
   up on a Redis that answers (that would skip the stop's last commands); a restarted
   runtime's timer waits and wakes again. */
static void test_stop_cuts_the_wait(void) {
    am2z_logger_desc ld;
    am2z_logger *lg;
    am2z_runtime *rt;
    am2z_state *in = am2z_state_parse(NULL, "{}", AM2Z_NTS, NULL);
    am2z_redis *r = fx_conn(port), *rec = fx_conn(port); /* rec: the worker thread's */
    int64_t t0, slot, ran = -1, until;
    char id[64];
    memset(&ld, 0, sizeof ld);
    ld.sink = AM2Z_SINK_CALLBACK;
    ld.min_level = AM2Z_LOG_WARN;
    ld.callback = count_give_up;
    lg = am2z_logger_new(&ld, NULL);
    rt = fx_queue_rt(port, 1, lg);
    __atomic_store_n(&g_rec, rec, __ATOMIC_SEQ_CST);
    CHECK(lg && rt && r && rec);
    CHECK_INT(am2z_runtime_register(rt, tick_proc()), AM2Z_STATUS_OK);
    tp_sleep_ms(300); /* the timer waits in Redis now */
    t0 = am2z_now_ms();
    CHECK_INT(am2z_runtime_stop(rt, 0), AM2Z_STATUS_OK);
    printf("  stop took %lld ms\n", (long long)(am2z_now_ms() - t0));
    CHECK(am2z_now_ms() - t0 < 2000);
    CHECK_INT(__atomic_load_n(&g_gave_up, __ATOMIC_SEQ_CST), 0);
    /* started again: the upsert from this process ends the new wait */
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    tp_sleep_ms(300);
    slot = am2z_now_ms() + 300;
    CHECK_INT(am2z_runtime_schedule_upsert(rt, &(am2z_schedule_desc){.id = "again", .processor = "tick", .input = in,
                                                                    .every_ms = 3600000, .start_at = slot}),
              AM2Z_STATUS_OK);
    snprintf(id, sizeof id, "repeat:again:%lld", (long long)slot);
    until = slot + 5000;
    while (am2z_now_ms() < until && (ran = hget_int(r, "test:at", id)) < 0) tp_sleep_ms(10);
    CHECK(ran >= slot && ran < slot + 2000);
    t0 = am2z_now_ms();
    am2z_runtime_free(rt);
    CHECK(am2z_now_ms() - t0 < 2000);
    CHECK_INT(__atomic_load_n(&g_gave_up, __ATOMIC_SEQ_CST), 0);
    __atomic_store_n(&g_rec, NULL, __ATOMIC_SEQ_CST);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_redis_free(rec);
    am2z_logger_release(lg);
}

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

#define RUN(fn) do { fx_flushall(port); T_RUN(fn); } while (0)

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "worker") == 0) return worker_main(atoi(argv[2]));
    g_quiet = fx_quiet();
    T_RUN(start_server);
    if (port) {
        RUN(test_idle_worker_then_upsert_elsewhere);
        RUN(test_stop_cuts_the_wait);
        t_redis_stop(&server);
    }
    am2z_logger_release(g_quiet);
    return t_done();
}
