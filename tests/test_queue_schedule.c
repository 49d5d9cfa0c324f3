/* Schedules on the queue runtime (am2z_resp.h 4.10) against a real redis-server: BullMQ's
   job-scheduler layout, upsert / list / remove from any process, and, with three worker
   processes (this program run again as "worker <port>"), each slot of a 200 ms schedule
   run exactly once, across a kill -9 of a worker and a restart of them all. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "proc.h"
#include "fixture.h"

static t_redis server;
static int port;
static am2z_logger *g_quiet;
static am2z_redis *g_rec; /* atomic: the connection runs are recorded on (one worker thread) */

static void set_rec(am2z_redis *r) { __atomic_store_n(&g_rec, r, __ATOMIC_SEQ_CST); }

static am2z_runtime *rt_new(int concurrency) { return fx_queue_rt(port, concurrency, g_quiet); }

/* Counts its run in the hash test:runs under its execution id (repeat:<id>:<slot>). */
static am2z_result tick(am2z_ctx *ctx, const am2z_state *in) {
    am2z_reply rep;
    am2z_redis *rec = __atomic_load_n(&g_rec, __ATOMIC_SEQ_CST);
    memset(&rep, 0, sizeof rep);
    if (rec) {
        am2z_redis_command(rec, &rep, "HINCRBY test:runs %s 1", am2z_ctx_meta(ctx)->execution_id);
        am2z_reply_clear(&rep);
        am2z_redis_command(rec, &rep, "HSET test:session %s %s", am2z_ctx_meta(ctx)->execution_id,
                           am2z_ctx_meta(ctx)->session_id);
        am2z_reply_clear(&rep);
    }
    return am2z_ok(am2z_value_retain(in));
}

static am2z_processor *tick_proc(void) {
    return am2z_processor_new(&(am2z_processor_desc){.name = "tick", .fn = tick}, NULL);
}

/* ---- the worker process ---- */

static int worker_main(int p) {
    am2z_logger_desc ld;
    am2z_runtime *rt;
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    alarm(120); /* never left behind */
    port = p;
    memset(&ld, 0, sizeof ld);
    ld.min_level = AM2Z_LOG_ERROR;
    g_quiet = am2z_logger_new(&ld, NULL);
    set_rec(fx_conn(port));
    rt = rt_new(1);
    if (!rt || !g_rec || am2z_runtime_register(rt, tick_proc()) != AM2Z_STATUS_OK) {
        fprintf(stderr, "worker: setup failed: %s\n", am2z_status_detail());
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) tp_sleep_ms(1000); /* until killed */
}


/* ---- helpers ---- */

static int64_t redis_int(am2z_redis *r, const char *fmt, const char *a, const char *b) {
    am2z_reply rep;
    int64_t v = -1;
    memset(&rep, 0, sizeof rep);
    if (am2z_redis_command(r, &rep, fmt, a, b) == AM2Z_STATUS_OK) {
        if (rep.type == AM2Z_REPLY_INTEGER) v = rep.integer;
        else if (rep.type == AM2Z_REPLY_BULK || rep.type == AM2Z_REPLY_STRING) v = atoll(am2z_reply_str(&rep));
    }
    am2z_reply_clear(&rep);
    return v;
}

static void sleep_until_ms(int64_t t) {
    int64_t now = am2z_now_ms();
    if (t > now) tp_sleep_ms((long)(t - now));
}

/* ---- tests ---- */

/* Upsert, list and remove from a producer (no workers), the BullMQ layout, bad input. */
static void test_layout_list_remove(void) {
    am2z_runtime *work = rt_new(1), *prod = rt_new(AM2Z_QUEUE_NO_WORKERS);
    am2z_state *in = am2z_state_parse(NULL, "{\"n\":1}", AM2Z_NTS, NULL);
    am2z_redis *r = fx_conn(port);
    am2z_value *l;
    am2z_reply rep;
    char longid[AM2Z_QUEUE_SCHEDULE_ID_MAX + 2];
    memset(&rep, 0, sizeof rep);
    CHECK(work && prod && r);
    CHECK_INT(am2z_runtime_register(work, tick_proc()), AM2Z_STATUS_OK);
    /* the producer has neither registered nor declared it */
    CHECK_INT(am2z_runtime_schedule_upsert(prod, &(am2z_schedule_desc){.id = "nightly", .processor = "tick", .input = in,
                                                                      .cron = "0 3 * * *"}),
              AM2Z_STATUS_NOT_FOUND);
    CHECK_INT(am2z_queue_declare(prod, "tick", NULL), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_schedule_upsert(prod, &(am2z_schedule_desc){.id = "nightly", .processor = "tick", .input = in,
                                                                      .cron = "0 3 * * *", .limit = 3}),
              AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_schedule_upsert(prod, &(am2z_schedule_desc){.id = "tenant", .processor = "tick", .input = in,
                                                                      .every_ms = 3600000, .session_id = "t-9"}),
              AM2Z_STATUS_OK);
    /* BullMQ's job-scheduler layout: what Bull Board counts and lists */
    CHECK_INT(redis_int(r, "ZCARD %s%s", "bull:am2z~tick:", "repeat"), 1);
    CHECK_INT(redis_int(r, "ZCARD %s%s", "bull:am2z~tick~t-9:", "repeat"), 1);
    CHECK(am2z_redis_command(r, &rep, "HGET bull:am2z~tick:repeat:nightly pattern") == AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "0 3 * * *");
    am2z_reply_clear(&rep);
    CHECK(am2z_redis_command(r, &rep, "HGET bull:am2z~tick:repeat:nightly data") == AM2Z_STATUS_OK);
    CHECK(strstr(am2z_reply_str(&rep), "\"n\":1") != NULL);
    am2z_reply_clear(&rep);
    CHECK_INT(redis_int(r, "HGET bull:am2z~tick:repeat:%s %s", "nightly", "limit"), 3);
    CHECK_INT(redis_int(r, "HGET bull:am2z~tick~t-9:repeat:%s %s", "tenant", "every"), 3600000);
    /* any process lists them, sorted by id, with the next slot (03:00 UTC: a whole hour) */
    l = am2z_runtime_schedule_list(work);
    CHECK(l && am2z_value_len(l) == 2);
    if (l && am2z_value_len(l) == 2) {
        const am2z_value *a = am2z_value_at(l, 0), *b = am2z_value_at(l, 1);
        CHECK_STR(am2z_value_get_string(a, "id", ""), "nightly");
        CHECK_STR(am2z_value_get_string(a, "cron", ""), "0 3 * * *");
        CHECK_INT(am2z_value_get_int(a, "limit", 0), 3);
        CHECK_INT(am2z_value_get_int(a, "runs", -1), 0);
        CHECK_INT(am2z_value_get_int(a, "nextAt", 0) % 86400000, 3 * 3600000);
        CHECK_INT(redis_int(r, "ZSCORE %s %s", "bull:am2z~tick:repeat", "nightly"), am2z_value_get_int(a, "nextAt", 0));
        CHECK_STR(am2z_value_get_string(b, "sessionId", ""), "t-9");
        CHECK_INT(am2z_value_get_int(b, "everyMs", 0), 3600000);
    }
    am2z_value_release(l);
    /* upsert by id: the same id moved to another session's queue is still one schedule */
    CHECK_INT(am2z_runtime_schedule_upsert(work, &(am2z_schedule_desc){.id = "tenant", .processor = "tick", .input = in,
                                                                      .every_ms = 60000}),
              AM2Z_STATUS_OK);
    CHECK_INT(redis_int(r, "ZCARD %s%s", "bull:am2z~tick~t-9:", "repeat"), 0);
    CHECK_INT(redis_int(r, "EXISTS bull:am2z~tick~t-9:repeat:%s%s", "tenant", ""), 0);
    CHECK_INT(redis_int(r, "ZCARD %s%s", "bull:am2z~tick:", "repeat"), 2);
    l = am2z_runtime_schedule_list(prod);
    CHECK_INT(am2z_value_len(l), 2);
    am2z_value_release(l);
    /* remove from another process */
    CHECK_INT(am2z_runtime_schedule_remove(prod, "tenant"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_schedule_remove(work, "tenant"), AM2Z_STATUS_NOT_FOUND);
    CHECK_INT(redis_int(r, "ZCARD %s%s", "bull:am2z~tick:", "repeat"), 1);
    /* the queue runtime's own limit on ids, and the shared checks */
    memset(longid, 'k', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    CHECK_INT(am2z_runtime_schedule_upsert(work, &(am2z_schedule_desc){.id = longid, .processor = "tick", .input = in,
                                                                      .every_ms = 1000}),
              AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "up to") != NULL);
    CHECK_INT(am2z_runtime_schedule_upsert(work, &(am2z_schedule_desc){.id = "x", .processor = "tick", .input = in,
                                                                      .cron = "* * * 13 *"}),
              AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_runtime_schedule_remove(work, "nightly"), AM2Z_STATUS_OK);
    l = am2z_runtime_schedule_list(work);
    CHECK_INT(am2z_value_len(l), 0);
    am2z_value_release(l);
    /* AM2Z_SCHEDULE_MAX holds per prefix in Redis: the next new id is refused */
    {
        int i, made = 0;
        am2z_status st = AM2Z_STATUS_OK;
        for (i = 0; i <= AM2Z_SCHEDULE_MAX && st == AM2Z_STATUS_OK; i++) {
            char id[32];
            snprintf(id, sizeof id, "m%d", i);
            st = am2z_runtime_schedule_upsert(prod, &(am2z_schedule_desc){.id = id, .processor = "tick", .input = in,
                                                                         .every_ms = 3600000});
            if (st == AM2Z_STATUS_OK) made++;
        }
        CHECK_INT(st, AM2Z_STATUS_LIMIT);
        CHECK_INT(made, AM2Z_SCHEDULE_MAX);
        CHECK(strstr(am2z_status_detail(), "AM2Z_SCHEDULE_MAX") != NULL);
        CHECK_INT(am2z_runtime_schedule_upsert(prod, &(am2z_schedule_desc){.id = "m0", .processor = "tick", .input = in,
                                                                          .every_ms = 60000}),
                  AM2Z_STATUS_OK); /* replacing one still works */
    }
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(prod);
    am2z_runtime_free(work);
}

/* One process, its own timer: a limit of 3 runs of a 100 ms schedule in a session. */
static void test_limit_in_session(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_state *in = am2z_state_parse(NULL, "{}", AM2Z_NTS, NULL);
    am2z_redis *r = fx_conn(port), *rec = fx_conn(port);
    am2z_value *l;
    int64_t until = am2z_now_ms() + 5000;
    set_rec(rec);
    CHECK_INT(am2z_runtime_register(rt, tick_proc()), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_schedule_upsert(rt, &(am2z_schedule_desc){.id = "three", .processor = "tick", .input = in,
                                                                    .every_ms = 100, .limit = 3, .session_id = "s-3"}),
              AM2Z_STATUS_OK);
    while (redis_int(r, "HLEN %s%s", "test:runs", "") < 3 && am2z_now_ms() < until) tp_sleep_ms(20);
    tp_sleep_ms(400); /* no fourth */
    CHECK_INT(redis_int(r, "HLEN %s%s", "test:runs", ""), 3);
    l = am2z_runtime_schedule_list(rt); /* done: gone */
    CHECK_INT(am2z_value_len(l), 0);
    am2z_value_release(l);
    CHECK_INT(redis_int(r, "ZCARD %s%s", "bull:am2z~tick~s-3:", "repeat"), 0);
    {   /* the runs were in the session, with the slot's job id as execution id */
        am2z_reply rep;
        size_t i;
        memset(&rep, 0, sizeof rep);
        CHECK(am2z_redis_command(r, &rep, "HGETALL test:session") == AM2Z_STATUS_OK);
        for (i = 0; i + 1 < rep.len; i += 2) {
            CHECK(strncmp(am2z_reply_str(&rep.element[i]), "repeat:three:", 13) == 0);
            CHECK_STR(am2z_reply_str(&rep.element[i + 1]), "s-3");
        }
        am2z_reply_clear(&rep);
    }
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    set_rec(NULL);
    am2z_redis_free(rec);
}

/* A scheduler removed the way Bull Board removes one (ZREM repeat + DEL of its hash) is
   forgotten by am2z too: no more runs, not listed. */
static void test_removed_by_another_client(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_state *in = am2z_state_parse(NULL, "{}", AM2Z_NTS, NULL);
    am2z_redis *r = fx_conn(port), *rec = fx_conn(port);
    am2z_reply rep;
    am2z_value *l;
    int64_t n, until = am2z_now_ms() + 5000;
    memset(&rep, 0, sizeof rep);
    set_rec(rec);
    CHECK_INT(am2z_runtime_register(rt, tick_proc()), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_schedule_upsert(rt, &(am2z_schedule_desc){.id = "gone", .processor = "tick", .input = in,
                                                                    .every_ms = 50}),
              AM2Z_STATUS_OK);
    while (redis_int(r, "HLEN %s%s", "test:runs", "") < 2 && am2z_now_ms() < until) tp_sleep_ms(10);
    CHECK(am2z_redis_command(r, &rep, "ZREM bull:am2z~tick:repeat gone") == AM2Z_STATUS_OK);
    am2z_reply_clear(&rep);
    CHECK(am2z_redis_command(r, &rep, "DEL bull:am2z~tick:repeat:gone") == AM2Z_STATUS_OK);
    am2z_reply_clear(&rep);
    tp_sleep_ms(300);
    n = redis_int(r, "HLEN %s%s", "test:runs", "");
    tp_sleep_ms(300);
    CHECK_INT(redis_int(r, "HLEN %s%s", "test:runs", ""), n);
    CHECK_INT(redis_int(r, "HLEN %s%s", "bull:am2z:schedules", ""), 0);
    CHECK_INT(redis_int(r, "ZCARD %s%s", "bull:am2z:schedules:due", ""), 0);
    l = am2z_runtime_schedule_list(rt);
    CHECK_INT(am2z_value_len(l), 0);
    am2z_value_release(l);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    set_rec(NULL);
    am2z_redis_free(rec);
}

/* Three worker processes, a 200 ms schedule for 5 s: every slot runs exactly once; a
   worker killed (-9) and replaced changes nothing; all workers killed for 0.7 s: the
   slots missed are skipped but one, run late by the first worker back, then every slot
   runs once again. */
static void test_three_workers_each_slot_once(void) {
    am2z_runtime *prod = rt_new(AM2Z_QUEUE_NO_WORKERS);
    am2z_state *in = am2z_state_parse(NULL, "{}", AM2Z_NTS, NULL);
    am2z_redis *r = fx_conn(port);
    tp_proc w[5];
    int64_t t0, first, end, down_from, down_to, slot;
    am2z_status st = AM2Z_STATUS_NOT_FOUND;
    int i, missing = 0, twice = 0, outage_runs = 0, bad_ids = 0;
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    memset(w, 0, sizeof w);
    CHECK(prod && r);
    for (i = 0; i < 3; i++) CHECK(fx_spawn_ready(&w[i], "worker", port));
    CHECK_INT(am2z_queue_declare(prod, "tick", NULL), AM2Z_STATUS_OK);
    /* start on a whole second, so the phases below fall between slots */
    t0 = (am2z_now_ms() / 1000 + 1) * 1000;
    sleep_until_ms(t0 - 50);
    end = t0 + 5000;
    for (i = 0; i < 50 && st != AM2Z_STATUS_OK; i++) { /* the workers' settings may still be on the way */
        st = am2z_runtime_schedule_upsert(prod, &(am2z_schedule_desc){.id = "beat", .processor = "tick", .input = in,
                                                                     .every_ms = 200, .start_at = t0, .end_at = end});
        if (st != AM2Z_STATUS_OK) tp_sleep_ms(10);
    }
    CHECK_INT(st, AM2Z_STATUS_OK);
    first = t0;
    /* a worker killed (-9) between two slots, another started */
    sleep_until_ms(t0 + 1300);
    CHECK_INT(redis_int(r, "ZCARD %s%s", "bull:am2z~tick:", "repeat"), 1); /* Bull Board's count */
    tp_stop(&w[0], SIGKILL, 2000);
    CHECK(fx_spawn_ready(&w[3], "worker", port));
    /* every worker killed for a while, then one new one */
    sleep_until_ms(t0 + 2500);
    down_from = am2z_now_ms();
    tp_stop(&w[1], SIGKILL, 2000);
    tp_stop(&w[2], SIGKILL, 2000);
    tp_stop(&w[3], SIGKILL, 2000);
    sleep_until_ms(t0 + 3200);
    CHECK(fx_spawn_ready(&w[4], "worker", port));
    down_to = am2z_now_ms();
    sleep_until_ms(end + 1500); /* the last slot's run is done */
    /* count the runs of every slot */
    for (slot = first; slot <= end; slot += 200) {
        char id[64];
        int64_t n;
        snprintf(id, sizeof id, "repeat:beat:%lld", (long long)slot);
        n = redis_int(r, "HGET test:runs %s%s", id, "");
        if (n < 0) n = 0;
        if (n > 1) twice++;
        if (slot >= down_from - 50 && slot < down_to) { /* the outage: skipped, but for one late run */
            outage_runs += (int)n;
        } else if (slot < down_to + 250) { /* the first slots after the restart: the late run's neighbours */
            if (n > 1) twice++;
        } else if (n != 1) {
            missing++;
            fprintf(stderr, "  slot t0%+lld ran %lld times\n", (long long)(slot - t0), (long long)n);
        }
    }
    /* nothing but those slots ran */
    CHECK(am2z_redis_command(r, &rep, "HGETALL test:runs") == AM2Z_STATUS_OK);
    for (i = 0; i + 1 < (int)rep.len; i += 2) {
        long long s = 0;
        if (sscanf(am2z_reply_str(&rep.element[i]), "repeat:beat:%lld", &s) != 1 || (s - t0) % 200 != 0 || s < first ||
            s > end)
            bad_ids++;
    }
    am2z_reply_clear(&rep);
    printf("  %d slots, outage %lld ms: %d runs in it\n", (int)((end - first) / 200 + 1), (long long)(down_to - down_from),
           outage_runs);
    CHECK_INT(twice, 0);
    CHECK_INT(missing, 0);
    CHECK_INT(bad_ids, 0);
    CHECK_INT(outage_runs, 1); /* the slot due when the workers died, run late by the first one back */
    /* the last slot was end: the schedule is done and gone from Redis */
    CHECK_INT(redis_int(r, "ZCARD %s%s", "bull:am2z~tick:", "repeat"), 0);
    CHECK_INT(redis_int(r, "HLEN %s%s", "bull:am2z:schedules", ""), 0);
    /* each slot's job carries the scheduler id, as BullMQ's do */
    {
        char key[96];
        snprintf(key, sizeof key, "bull:am2z~tick:repeat:beat:%lld", (long long)first);
        CHECK(am2z_redis_command(r, &rep, "HGET %s rjk", key) == AM2Z_STATUS_OK);
        CHECK_STR(am2z_reply_str(&rep), "beat");
        am2z_reply_clear(&rep);
    }
    tp_stop(&w[4], SIGKILL, 2000);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(prod);
}

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

#define RUN(fn) do { fx_flushall(port); T_RUN(fn); } while (0)

int main(int argc, char **argv) {
    am2z_logger_desc ld;
    if (argc == 3 && strcmp(argv[1], "worker") == 0) return worker_main(atoi(argv[2]));
    memset(&ld, 0, sizeof ld);
    ld.min_level = AM2Z_LOG_ERROR;
    g_quiet = am2z_logger_new(&ld, NULL);
    T_RUN(start_server);
    if (port) {
        RUN(test_layout_list_remove);
        RUN(test_limit_in_session);
        RUN(test_removed_by_another_client);
        RUN(test_three_workers_each_slot_once);
        t_redis_stop(&server);
    }
    am2z_logger_release(g_quiet);
    return t_done();
}
