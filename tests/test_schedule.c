/* Schedules (am2z.h section 7e) on the inline runtime (slots fire on the virtual clock,
   so the times are exact) and on the local runtime (its timer thread): every_ms and cron
   slots, start/end/limit, upsert replacing, remove, missed slots skipped, bad input. */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include "../am2z.h"
#include "t.h"
#include <time.h>

#define T0 1700000000000LL /* 2023-11-14 22:13:20 UTC, a whole second */

static am2z_logger *g_quiet;
static am2z_runtime *g_rt;

/* What the "tick" processor saw, run by run. */
#define MAXRUNS 4096
static int64_t g_at[MAXRUNS];     /* am2z_ctx_now_ms at the start */
static int64_t g_val[MAXRUNS];    /* the input's "v" */
static char g_sess[MAXRUNS][32];
static int g_runs;                /* atomic: runs started (the local runtime's workers) */
static int g_done;                /* atomic: runs whose record is written */
static int64_t g_slow_ms;         /* the next run moves the virtual clock this much (once) */

static am2z_result tick(am2z_ctx *ctx, const am2z_state *in) {
    int n = __atomic_fetch_add(&g_runs, 1, __ATOMIC_SEQ_CST);
    if (n < MAXRUNS) {
        g_at[n] = am2z_ctx_now_ms(ctx);
        g_val[n] = am2z_value_get_int(in, "v", -1);
        snprintf(g_sess[n], sizeof g_sess[n], "%s", am2z_ctx_meta(ctx)->session_id);
    }
    __atomic_fetch_add(&g_done, 1, __ATOMIC_SEQ_CST); /* publishes the record */
    if (g_slow_ms) { /* work that takes long: the slots it passes are missed */
        int64_t ms = g_slow_ms;
        g_slow_ms = 0;
        CHECK_INT(am2z_inline_advance(g_rt, ms), AM2Z_STATUS_OK);
    }
    return am2z_ok(am2z_value_retain(in));
}

static void reset(void) {
    __atomic_store_n(&g_runs, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&g_done, 0, __ATOMIC_SEQ_CST);
    g_slow_ms = 0;
}

static int runs(void) { return __atomic_load_n(&g_done, __ATOMIC_SEQ_CST); }

static am2z_state *S(int v) {
    char text[64];
    snprintf(text, sizeof text, "{\"v\":%d}", v);
    return am2z_state_parse(NULL, text, AM2Z_NTS, NULL);
}

static am2z_runtime *vrt(void) {
    am2z_status st = AM2Z_STATUS_LIMIT;
    am2z_runtime *rt = am2z_inline_runtime_new(&(am2z_inline_desc){.virtual_clock_ms = T0, .logger = g_quiet}, &st);
    CHECK_INT(st, AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "tick", .fn = tick}, NULL)),
              AM2Z_STATUS_OK);
    g_rt = rt;
    reset();
    return rt;
}

static am2z_status upsert(am2z_runtime *rt, am2z_schedule_desc d) {
    am2z_state *in = S((int)d.limit);
    am2z_status st;
    if (!d.processor) d.processor = "tick";
    if (!d.input) d.input = in;
    st = am2z_runtime_schedule_upsert(rt, &d);
    am2z_value_release(in);
    return st;
}

/* The member key of schedule id in the list (-1: the schedule is not listed). */
static int64_t listed(am2z_runtime *rt, const char *id, const char *key) {
    am2z_value *l = am2z_runtime_schedule_list(rt);
    int64_t out = -1;
    size_t i;
    CHECK(l != NULL);
    for (i = 0; l && i < am2z_value_len(l); i++) {
        const am2z_value *s = am2z_value_at(l, i);
        if (strcmp(am2z_value_get_string(s, "id", ""), id) == 0) out = am2z_value_get_int(s, key, -2);
    }
    am2z_value_release(l);
    return out;
}

static void check_times(const int64_t *want, int n) {
    int i;
    CHECK_INT(runs(), n);
    for (i = 0; i < n && i < runs(); i++)
        if (g_at[i] != T0 + want[i]) T_FAIL_("run %d at T0%+lld, want T0%+lld", i, (long long)(g_at[i] - T0), (long long)want[i]);
}

/* ---- inline runtime: exact slots on the virtual clock ---- */

static void test_inline_every(void) {
    am2z_runtime *rt = vrt();
    static const int64_t want[] = {0, 1000, 2000, 3000};
    am2z_value *l;
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "beat", .every_ms = 1000, .session_id = "tenant-1"}), AM2Z_STATUS_OK);
    CHECK_INT(runs(), 0); /* nothing runs before the clock moves */
    CHECK_INT(am2z_inline_advance(rt, 0), AM2Z_STATUS_OK); /* T0 is a multiple of 1000: due now */
    CHECK_INT(am2z_inline_advance(rt, 3500), AM2Z_STATUS_OK);
    check_times(want, 4);
    CHECK_STR(g_sess[0], "tenant-1");
    CHECK_INT(am2z_inline_now_ms(rt), T0 + 3500);
    l = am2z_runtime_schedule_list(rt);
    CHECK_INT(am2z_value_len(l), 1);
    CHECK_STR(am2z_value_get_string(am2z_value_at(l, 0), "processor", ""), "tick");
    CHECK_STR(am2z_value_get_string(am2z_value_at(l, 0), "sessionId", ""), "tenant-1");
    CHECK_INT(am2z_value_get_int(am2z_value_at(l, 0), "everyMs", 0), 1000);
    CHECK_INT(am2z_value_get_int(am2z_value_at(l, 0), "runs", 0), 4);
    CHECK_INT(am2z_value_get_int(am2z_value_at(l, 0), "nextAt", 0), T0 + 4000);
    am2z_value_release(l);
    am2z_runtime_free(rt);
}

static void test_inline_cron(void) {
    am2z_runtime *rt = vrt();
    /* T0 is 22:13:20: the next 5th minute is 22:15:00 (T0 + 100 s), then every 5 min */
    static const int64_t want[] = {100000, 400000, 700000};
    am2z_value *l;
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "five", .cron = "*/5 * * * *"}), AM2Z_STATUS_OK);
    CHECK_INT(listed(rt, "five", "nextAt"), T0 + 100000);
    CHECK_INT(am2z_inline_advance(rt, 16 * 60000), AM2Z_STATUS_OK);
    check_times(want, 3);
    l = am2z_runtime_schedule_list(rt);
    CHECK_STR(am2z_value_get_string(am2z_value_at(l, 0), "cron", ""), "*/5 * * * *");
    am2z_value_release(l);
    /* names of days: Mondays 09:00; T0 is a Tuesday, so the next is 2023-11-20 09:00 */
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "mon", .cron = "0 9 * * MON"}), AM2Z_STATUS_OK);
    CHECK_INT(listed(rt, "mon", "nextAt"), 1700470800000LL);
    am2z_runtime_free(rt);
}

static void test_inline_start_end_limit(void) {
    am2z_runtime *rt = vrt();
    static const int64_t want[] = {500, 1500, 2500};
    /* start_at anchors the slots; end_at is the last one allowed */
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "window", .every_ms = 1000, .start_at = T0 + 500, .end_at = T0 + 2500}),
              AM2Z_STATUS_OK);
    CHECK_INT(am2z_inline_advance(rt, 10000), AM2Z_STATUS_OK);
    check_times(want, 3);
    CHECK_INT(listed(rt, "window", "runs"), -1); /* done: gone from the list */
    /* limit: two runs, then gone */
    reset();
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "twice", .every_ms = 100, .limit = 2}), AM2Z_STATUS_OK);
    CHECK_INT(listed(rt, "twice", "limit"), 2);
    CHECK_INT(am2z_inline_advance(rt, 1000), AM2Z_STATUS_OK);
    CHECK_INT(runs(), 2);
    CHECK_INT(g_val[0], 2); /* upsert() puts the limit in the input */
    CHECK_INT(listed(rt, "twice", "runs"), -1);
    /* a start in the future: nothing before it */
    reset();
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "later", .every_ms = 60000, .start_at = T0 + 3600000, .limit = 1}),
              AM2Z_STATUS_OK);
    CHECK_INT(am2z_inline_advance(rt, 3599000 - 11000), AM2Z_STATUS_OK);
    CHECK_INT(runs(), 0);
    CHECK_INT(am2z_inline_advance(rt, 1000), AM2Z_STATUS_OK);
    CHECK_INT(runs(), 1);
    CHECK_INT(g_at[0], T0 + 3600000);
    am2z_runtime_free(rt);
}

static void test_inline_upsert_replaces(void) {
    am2z_runtime *rt = vrt();
    am2z_state *in7 = S(7);
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "job", .every_ms = 1000}), AM2Z_STATUS_OK);
    CHECK_INT(am2z_inline_advance(rt, 2000), AM2Z_STATUS_OK);
    CHECK_INT(runs(), 3);
    CHECK_INT(listed(rt, "job", "runs"), 3);
    /* same id: replaced (new period, new input, count from 0), slots from now on */
    CHECK_INT(am2z_runtime_schedule_upsert(rt, &(am2z_schedule_desc){.id = "job", .processor = "tick", .input = in7,
                                                                    .every_ms = 300}),
              AM2Z_STATUS_OK);
    am2z_value_release(in7);
    CHECK_INT(listed(rt, "job", "runs"), 0);
    CHECK_INT(listed(rt, "job", "nextAt"), T0 + 2200); /* the first multiple of 300 at or after T0 + 2000 */
    reset();
    CHECK_INT(am2z_inline_advance(rt, 1000), AM2Z_STATUS_OK); /* to T0 + 3000: 2200 2500 2800 */
    CHECK_INT(runs(), 3);
    CHECK_INT(g_at[0], T0 + 2200);
    CHECK_INT(g_val[0], 7);
    {
        am2z_value *l = am2z_runtime_schedule_list(rt);
        CHECK_INT(am2z_value_len(l), 1); /* one schedule, not two */
        am2z_value_release(l);
    }
    am2z_runtime_free(rt);
}

static void test_inline_remove(void) {
    am2z_runtime *rt = vrt();
    am2z_value *l;
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "b", .every_ms = 1000}), AM2Z_STATUS_OK);
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "a", .every_ms = 1000, .start_at = T0 + 10}), AM2Z_STATUS_OK);
    l = am2z_runtime_schedule_list(rt); /* sorted by id */
    CHECK_INT(am2z_value_len(l), 2);
    CHECK_STR(am2z_value_get_string(am2z_value_at(l, 0), "id", ""), "a");
    CHECK_INT(am2z_value_get_int(am2z_value_at(l, 0), "startAt", 0), T0 + 10);
    am2z_value_release(l);
    CHECK_INT(am2z_inline_advance(rt, 1000), AM2Z_STATUS_OK); /* b: 0, 1000; a: 10 */
    CHECK_INT(runs(), 3);
    CHECK_INT(am2z_runtime_schedule_remove(rt, "b"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_schedule_remove(rt, "b"), AM2Z_STATUS_NOT_FOUND);
    CHECK(strstr(am2z_status_detail(), "no such schedule") != NULL);
    CHECK_INT(am2z_runtime_schedule_remove(rt, "a"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_inline_advance(rt, 5000), AM2Z_STATUS_OK);
    CHECK_INT(runs(), 3); /* nothing after the removes */
    l = am2z_runtime_schedule_list(rt);
    CHECK_INT(am2z_value_len(l), 0);
    am2z_value_release(l);
    am2z_runtime_free(rt);
}

/* A run that takes 3.5 slots: the slot due meanwhile runs once, late; the two others
   that passed never run. */
static void test_inline_missed_slots_skipped(void) {
    am2z_runtime *rt = vrt();
    static const int64_t want[] = {0, 3500, 4000, 5000};
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "slow", .every_ms = 1000}), AM2Z_STATUS_OK);
    g_slow_ms = 3500;
    CHECK_INT(am2z_inline_advance(rt, 5000), AM2Z_STATUS_OK);
    check_times(want, 4);
    CHECK_INT(listed(rt, "slow", "runs"), 4);
    CHECK_INT(listed(rt, "slow", "nextAt"), T0 + 6000);
    /* a stopped runtime fires nothing; after start the one late slot runs, not ten */
    reset();
    CHECK_INT(am2z_runtime_stop(rt, 0), AM2Z_STATUS_OK);
    CHECK_INT(am2z_inline_advance(rt, 10000), AM2Z_STATUS_OK);
    CHECK_INT(runs(), 0);
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    CHECK_INT(am2z_inline_advance(rt, 0), AM2Z_STATUS_OK);
    CHECK_INT(runs(), 1);
    CHECK_INT(g_at[0], T0 + 15000);
    CHECK_INT(listed(rt, "slow", "nextAt"), T0 + 16000);
    am2z_runtime_free(rt);
}

static void expect_bad(am2z_runtime *rt, am2z_schedule_desc d, am2z_status want, const char *detail) {
    am2z_status st = am2z_runtime_schedule_upsert(rt, &d);
    CHECK_INT(st, want);
    if (!strstr(am2z_status_detail(), detail)) T_FAIL_("detail \"%s\" lacks \"%s\"", am2z_status_detail(), detail);
}

static void test_bad_input(void) {
    am2z_runtime *rt = vrt(), *real;
    am2z_state *in = S(1);
    char id[AM2Z_SCHEDULE_ID_MAX + 2];
    am2z_value *l;
    int i;
    memset(id, 'x', sizeof id - 1);
    id[sizeof id - 1] = 0;
    CHECK_INT(am2z_runtime_schedule_upsert(rt, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_runtime_schedule_upsert(NULL, &(am2z_schedule_desc){.id = "x"}), AM2Z_STATUS_INVALID_ARGUMENT);
    expect_bad(rt, (am2z_schedule_desc){.processor = "tick", .input = in, .every_ms = 100}, AM2Z_STATUS_INVALID_ARGUMENT, "id");
    expect_bad(rt, (am2z_schedule_desc){.id = "a:b", .processor = "tick", .input = in, .every_ms = 100},
               AM2Z_STATUS_INVALID_ARGUMENT, "[A-Za-z0-9_.-]");
    expect_bad(rt, (am2z_schedule_desc){.id = id, .processor = "tick", .input = in, .every_ms = 100},
               AM2Z_STATUS_INVALID_ARGUMENT, "id");
    id[AM2Z_SCHEDULE_ID_MAX] = 0; /* exactly the limit: fine */
    CHECK_INT(am2z_runtime_schedule_upsert(rt, &(am2z_schedule_desc){.id = id, .processor = "tick", .input = in, .every_ms = 100}),
              AM2Z_STATUS_OK);
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .input = in, .every_ms = 100}, AM2Z_STATUS_INVALID_ARGUMENT, "no processor");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "nope", .input = in, .every_ms = 100},
               AM2Z_STATUS_NOT_FOUND, "'nope' is not registered");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .every_ms = 100}, AM2Z_STATUS_INVALID_ARGUMENT, "no input");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in}, AM2Z_STATUS_INVALID_ARGUMENT,
               "exactly one of every_ms and cron");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in, .every_ms = 100, .cron = "* * * * *"},
               AM2Z_STATUS_INVALID_ARGUMENT, "exactly one");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in, .every_ms = -5},
               AM2Z_STATUS_INVALID_ARGUMENT, "under");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in, .every_ms = AM2Z_SCHEDULE_MIN_EVERY_MS - 1},
               AM2Z_STATUS_INVALID_ARGUMENT, "under");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in, .cron = "*/5 24 * * *"},
               AM2Z_STATUS_INVALID_ARGUMENT, "hour: \"24\" is out of range");
    CHECK_INT(am2z_status_offset(), 4);
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in, .every_ms = 100, .limit = -1},
               AM2Z_STATUS_INVALID_ARGUMENT, "limit is negative");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in, .every_ms = 100, .start_at = T0,
                                        .end_at = T0 - 1},
               AM2Z_STATUS_INVALID_ARGUMENT, "end_at is before start_at");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in, .every_ms = 100, .end_at = T0 - 1},
               AM2Z_STATUS_INVALID_ARGUMENT, "no slot left");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in, .cron = "0 0 30 2 *"},
               AM2Z_STATUS_INVALID_ARGUMENT, "no slot left");
    expect_bad(rt, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in, .every_ms = 100, .session_id = ""},
               AM2Z_STATUS_INVALID_ARGUMENT, "session");
    CHECK_INT(am2z_runtime_schedule_remove(rt, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_runtime_schedule_remove(rt, "s"), AM2Z_STATUS_NOT_FOUND);
    CHECK_INT(am2z_runtime_schedule_remove(rt, "bad:id"), AM2Z_STATUS_NOT_FOUND);
    CHECK(am2z_runtime_schedule_list(NULL) == NULL);
    /* nothing refused was stored */
    l = am2z_runtime_schedule_list(rt);
    CHECK_INT(am2z_value_len(l), 1);
    am2z_value_release(l);
    /* AM2Z_SCHEDULE_MAX: the next new id is refused, replacing one still works */
    for (i = 1; i < AM2Z_SCHEDULE_MAX; i++) {
        char name[32];
        snprintf(name, sizeof name, "s%d", i);
        if (am2z_runtime_schedule_upsert(rt, &(am2z_schedule_desc){.id = name, .processor = "tick", .input = in,
                                                                  .every_ms = 1000}) != AM2Z_STATUS_OK) {
            T_FAIL_("upsert %d: %s", i, am2z_status_detail());
            break;
        }
    }
    expect_bad(rt, (am2z_schedule_desc){.id = "one-more", .processor = "tick", .input = in, .every_ms = 1000},
               AM2Z_STATUS_LIMIT, "AM2Z_SCHEDULE_MAX");
    CHECK_INT(am2z_runtime_schedule_upsert(rt, &(am2z_schedule_desc){.id = "s1", .processor = "tick", .input = in,
                                                                    .every_ms = 2000}),
              AM2Z_STATUS_OK);
    am2z_runtime_free(rt);
    /* the inline runtime on the real clock has no time of its own to fire at */
    real = am2z_inline_runtime_new(&(am2z_inline_desc){.logger = g_quiet}, NULL);
    CHECK_INT(am2z_runtime_register(real, am2z_processor_new(&(am2z_processor_desc){.name = "tick", .fn = tick}, NULL)),
              AM2Z_STATUS_OK);
    expect_bad(real, (am2z_schedule_desc){.id = "s", .processor = "tick", .input = in, .every_ms = 100},
               AM2Z_STATUS_INVALID_ARGUMENT, "virtual clock");
    am2z_runtime_free(real);
    am2z_value_release(in);
}

/* ---- local runtime: the timer thread ---- */

static void sleep_ms(int64_t ms) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000;
    nanosleep(&ts, NULL);
}

/* Waits up to 5 s for at least n runs. */
static int wait_runs(int n) {
    int64_t until = am2z_now_ms() + 5000;
    while (runs() < n && am2z_now_ms() < until) sleep_ms(5);
    return runs() >= n;
}

static am2z_runtime *lrt(void) {
    am2z_runtime *rt = am2z_local_runtime_new(&(am2z_local_desc){.workers = 2, .logger = g_quiet}, NULL);
    CHECK(rt != NULL);
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "tick", .fn = tick}, NULL)),
              AM2Z_STATUS_OK);
    reset();
    return rt;
}

static void test_local_every_limit(void) {
    am2z_runtime *rt = lrt();
    int64_t t0 = am2z_now_ms();
    int i;
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "five", .every_ms = 40, .limit = 5, .session_id = "s-1"}), AM2Z_STATUS_OK);
    CHECK(wait_runs(5));
    sleep_ms(200); /* the limit holds: no sixth run */
    CHECK_INT(runs(), 5);
    CHECK_INT(listed(rt, "five", "runs"), -1);
    /* slots are the multiples of 40 ms: five of them take at least 4 periods */
    CHECK(g_at[4] - t0 >= 4 * 40 - 40);
    for (i = 0; i < 5; i++) CHECK_STR(g_sess[i], "s-1");
    am2z_runtime_free(rt);
}

static void test_local_remove_stop_start(void) {
    am2z_runtime *rt = lrt();
    int n;
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "fast", .every_ms = 20}), AM2Z_STATUS_OK);
    CHECK(wait_runs(3));
    /* stopped: no slot fires; restarted: at most one late run, then the normal pace */
    CHECK_INT(am2z_runtime_stop(rt, 1000), AM2Z_STATUS_OK);
    n = runs();
    sleep_ms(300); /* 15 slots pass */
    CHECK_INT(runs(), n);
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    CHECK(wait_runs(n + 1));
    sleep_ms(60);
    /* a burst would be 15 + 3; the pace gives 1 late + ~3 (generous for a loaded machine) */
    if (runs() - n > 10) T_FAIL_("%d runs within ~60 ms of the restart: missed slots were not skipped", runs() - n);
    CHECK(listed(rt, "fast", "nextAt") > am2z_now_ms() - 1000);
    /* removed: nothing more */
    CHECK_INT(am2z_runtime_schedule_remove(rt, "fast"), AM2Z_STATUS_OK);
    sleep_ms(20); /* a run submitted just before the remove may still be starting */
    n = runs();
    sleep_ms(200);
    CHECK_INT(runs(), n);
    /* cron on the local runtime: the next slot is a whole minute */
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "minute", .cron = "* * * * *"}), AM2Z_STATUS_OK);
    CHECK_INT(listed(rt, "minute", "nextAt") % 60000, 0);
    CHECK_INT(am2z_runtime_schedule_remove(rt, "minute"), AM2Z_STATUS_OK);
    am2z_runtime_free(rt);
}

/* Schedules left in a runtime are freed with it, while the timer may be firing. */
static void test_local_free_with_schedules(void) {
    am2z_runtime *rt = lrt();
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "x", .every_ms = 10}), AM2Z_STATUS_OK);
    CHECK_INT(upsert(rt, (am2z_schedule_desc){.id = "y", .every_ms = 10, .session_id = "other"}), AM2Z_STATUS_OK);
    CHECK(wait_runs(2));
    am2z_runtime_free(rt);
}

int main(void) {
    g_quiet = am2z_logger_new(&(am2z_logger_desc){.sink = AM2Z_SINK_SILENT}, NULL);
    T_RUN(test_inline_every);
    T_RUN(test_inline_cron);
    T_RUN(test_inline_start_end_limit);
    T_RUN(test_inline_upsert_replaces);
    T_RUN(test_inline_remove);
    T_RUN(test_inline_missed_slots_skipped);
    T_RUN(test_bad_input);
    T_RUN(test_local_every_limit);
    T_RUN(test_local_remove_stop_start);
    T_RUN(test_local_free_with_schedules);
    am2z_logger_release(g_quiet);
    return t_done();
}
