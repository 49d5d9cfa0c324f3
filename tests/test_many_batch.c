/* test_many_batch.c - the per-item savings of COOPERATIVE execute_many on the caller's
   thread (am2z.h section 8, am2z__lr_run_solo) keep every contract around them:
   - "running" counts the chunk's item in progress (it is added per chunk, not per item)
     and settles to 0, with failing items, NULL inputs and a stop_session mid-chunk; a
     nested call an item makes counts as its own attempt, as on the job path;
   - each item's execution id is its own: the "<processor>-<ms>-" prefix is kept per
     millisecond and only the random tail is written per item, so the id's millisecond
     must still be the item's start (outcome.started_at) across millisecond changes,
     and a forked child's random tails are not its parent's;
   - outcomes are filled field by field and the caller's pre-clear skips empty ones: a
     second call into the same array releases what the first one left (ASan would see
     a leak), and a failing item still reports its error, its attempts and its
     attempt_errors;
   - stats count every item. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include "many_fixture.h"
#include <sys/wait.h>
#include <unistd.h>

static int running_low;
static am2z_runtime *the_rt;

static int64_t running_now_of(am2z_runtime *rt) {
    am2z_value *st = am2z_runtime_stats(rt);
    int64_t r = am2z_value_get_int(st, "running", -1);
    am2z_value_release(st);
    return r;
}

/* n + 1; fails for i % 10 == 9 */
static am2z_result p_inc(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    note_thread();
    if (am2z_value_get_int(in, "i", 0) % 10 == 9) return am2z_fail(am2z_error_validation("i", NULL, "nine"));
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "n", am2z_value_int(am2z_value_get_int(in, "n", 0) + 1)));
}

/* 1 us of work, so that a batch spans several milliseconds and its items stay short */
static am2z_result p_spin(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    note_thread();
    spin_us(1);
    return am2z_ok(am2z_value_retain(in));
}

/* reads the runtime's "running" while it runs: its own attempt is in progress */
static am2z_result p_running(am2z_ctx *ctx, const am2z_state *in) {
    am2z_value *st = am2z_runtime_stats(the_rt);
    (void)ctx;
    note_thread();
    if (am2z_value_get_int(st, "running", -1) < 1) __atomic_add_fetch(&running_low, 1, __ATOMIC_SEQ_CST);
    am2z_value_release(st);
    return am2z_ok(am2z_value_retain(in));
}

/* item 40 asks for the session's stop and waits (bounded) until it is cancelled */
static am2z_result p_stoppable(am2z_ctx *ctx, const am2z_state *in) {
    int k;
    if (am2z_value_get_int(in, "i", -1) == 40) {
        __atomic_store_n(&stop_asked, 1, __ATOMIC_SEQ_CST);
        for (k = 0; k < 4000 && !am2z_ctx_cancelled(ctx); k++) msleep(1);
    }
    return am2z_ok(am2z_value_retain(in));
}

/* the nested call of "outer": "running" counts the caller's attempt and its own */
static int nested_running_min = 100;
static am2z_result p_inner(am2z_ctx *ctx, const am2z_state *in) {
    int64_t r = running_now_of(the_rt);
    int old = __atomic_load_n(&nested_running_min, __ATOMIC_SEQ_CST);
    (void)ctx;
    while (r < old && !__atomic_compare_exchange_n(&nested_running_min, &old, (int)r, 0, __ATOMIC_SEQ_CST,
                                                   __ATOMIC_SEQ_CST)) {
    }
    return am2z_ok(am2z_value_retain(in));
}

static am2z_result p_outer(am2z_ctx *ctx, const am2z_state *in) {
    note_thread();
    return am2z_ctx_call(ctx, "inner", in);
}

static am2z_runtime *rt_coop(void) {
    am2z_runtime *rt = rt_coop_new();
    CHECK(rt != NULL);
    CHECK_INT(am2z_runtime_register(rt, proc_new("inc", p_inc, 0)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc_new("spin", p_spin, 0)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc_new("running", p_running, 0)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc_new("stoppable", p_stoppable, 0)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc_new("inner", p_inner, 0)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc_new("outer", p_outer, 0)), AM2Z_STATUS_OK);
    the_rt = rt;
    return rt;
}

static int64_t running_now(am2z_runtime *rt) { return running_now_of(rt); }

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* every item sees itself counted in "running"; 0 once the call returned */
static void test_running_counts_the_item_in_progress(void) {
    enum { N = 200 };
    am2z_runtime *rt = rt_coop();
    am2z_state **ins = numbered(N);
    am2z_outcome *outs = (am2z_outcome *)calloc(N, sizeof *outs);
    am2z_value *ps;
    int i, good = 0;
    on_caller = 1;
    ran_here = ran_elsewhere = running_low = 0;
    CHECK_INT(am2z_runtime_execute_many(rt, "running", (const am2z_state *const *)ins, N, "bulk", outs),
              AM2Z_STATUS_OK);
    on_caller = 0;
    for (i = 0; i < N; i++) good += outs[i].error == NULL;
    CHECK_INT(good, N);
    CHECK_INT(ran_here + ran_elsewhere, N);
    CHECK(ran_here >= 4); /* the first chunk at least (a stats call may make items long) */
    CHECK_INT(__atomic_load_n(&running_low, __ATOMIC_SEQ_CST), 0);
    CHECK_INT(running_now(rt), 0);
    ps = am2z_runtime_processor_stats(rt, "running");
    CHECK_INT(am2z_value_get_int(ps, "completed", -1), N);
    am2z_value_release(ps);
    release_all(ins, outs, N);
    am2z_runtime_free(rt);
}

/* a nested call made by an item run on the caller's thread is an attempt of its own:
   "running" counts it beside the item's, as it does for an item run by a worker */
static void test_running_counts_nested_calls(void) {
    enum { N = 4 }; /* the first chunk of a processor with no estimate yet: all on the caller */
    am2z_runtime *rt = rt_coop();
    am2z_state **ins = numbered(N);
    am2z_outcome *outs = (am2z_outcome *)calloc(N, sizeof *outs);
    int i, good = 0;
    on_caller = 1;
    ran_here = ran_elsewhere = 0;
    nested_running_min = 100;
    CHECK_INT(am2z_runtime_execute_many(rt, "outer", (const am2z_state *const *)ins, N, "bulk", outs),
              AM2Z_STATUS_OK);
    on_caller = 0;
    for (i = 0; i < N; i++) good += outs[i].error == NULL;
    CHECK_INT(good, N);
    CHECK_INT(ran_here, N);
    CHECK_INT(__atomic_load_n(&nested_running_min, __ATOMIC_SEQ_CST), 2);
    CHECK_INT(running_now(rt), 0);
    am2z_outcome_clear(&outs[0]);
    nested_running_min = 100;
    outs[0] = am2z_runtime_execute_in_session(rt, "outer", ins[0], "bulk"); /* the same on the job path */
    CHECK(outs[0].error == NULL);
    CHECK_INT(__atomic_load_n(&nested_running_min, __ATOMIC_SEQ_CST), 2);
    CHECK_INT(running_now(rt), 0);
    release_all(ins, outs, N);
    am2z_runtime_free(rt);
}

/* failing items and NULL inputs: their errors and attempts, stats for every item,
   "running" back to 0; a second call into the same outcomes releases the first's */
static void test_failures_and_reused_outcomes(void) {
    enum { N = 500 };
    am2z_runtime *rt = rt_coop();
    am2z_state **ins = numbered(N);
    am2z_outcome *outs = (am2z_outcome *)calloc(N, sizeof *outs);
    am2z_state *kept[3] = {NULL, NULL, NULL};
    char first_id[AM2Z_EXECUTION_ID_SIZE];
    am2z_value *ps;
    int i, round, ok, failed, nulls;
    am2z_value_release(ins[5]);
    ins[5] = NULL; /* an item without a state */
    on_caller = 1;
    ran_here = ran_elsewhere = 0;
    for (round = 0; round < 2; round++) { /* round 1 reuses outs without clearing them */
        CHECK_INT(am2z_runtime_execute_many(rt, "inc", (const am2z_state *const *)ins, N, "bulk", outs),
                  AM2Z_STATUS_OK);
        ok = failed = nulls = 0;
        for (i = 0; i < N; i++) {
            const am2z_outcome *o = &outs[i];
            CHECK_INT(o->attempts, 1);
            CHECK_STR(o->session_id, "bulk");
            CHECK(o->execution_id[0] != 0 && o->trace == NULL);
            if (i == 5) {
                nulls += o->error && o->error->kind == AM2Z_ERROR_VALIDATION && o->state == NULL &&
                         o->attempt_error_count == 1 && o->attempt_errors[0] == o->error;
            } else if (i % 10 == 9) {
                failed += o->error && o->error->kind == AM2Z_ERROR_VALIDATION && o->state == ins[i] &&
                          o->attempt_error_count == 1 && o->attempt_errors[0] == o->error &&
                          strstr(o->error->message, "nine") != NULL; /* the processor's own error */
            } else {
                ok += o->error == NULL && o->attempt_errors == NULL && o->attempt_error_count == 0 &&
                      am2z_value_get_int(o->state, "n", -1) == 1 && am2z_value_get_int(o->state, "i", -1) == i &&
                      am2z_state_version(o->state) == 2;
            }
        }
        CHECK_INT(nulls, 1);
        CHECK_INT(failed, N / 10);
        CHECK_INT(ok, N - N / 10 - 1);
        if (round == 0) {
            memcpy(first_id, outs[0].execution_id, sizeof first_id);
            kept[0] = am2z_value_retain(outs[0].state); /* watched: the second call drops its reference */
            kept[1] = am2z_value_retain(outs[1].state);
            kept[2] = am2z_value_retain(outs[2].state);
        } else {
            CHECK(strcmp(first_id, outs[0].execution_id) != 0);
            CHECK(outs[0].state != kept[0]); /* a new state, the old one released by the call */
        }
        CHECK_INT(running_now(rt), 0);
    }
    on_caller = 0;
    CHECK_INT(ran_here + ran_elsewhere, 2 * (N - 1));
    if (!SLOW_BUILD) CHECK(ran_elsewhere <= 2 * N / 10);
    ps = am2z_runtime_processor_stats(rt, "inc");
    CHECK_INT(am2z_value_get_int(ps, "completed", -1), 2 * (N - N / 10 - 1));
    CHECK_INT(am2z_value_get_int(ps, "failed", -1), 2 * (N / 10 + 1));
    CHECK_INT(am2z_value_get_int(ps, "latency.count", -1), 2 * N);
    am2z_value_release(ps);
    for (i = 0; i < 3; i++) am2z_value_release(kept[i]);
    release_all(ins, outs, N);
    am2z_runtime_free(rt);
}

/* ids across millisecond changes: distinct, "spin-<ms>-<10 base-36 chars>", and the
   millisecond is the item's start */
static void test_ids_follow_the_millisecond(void) {
    enum { N = 3000 };
    am2z_runtime *rt = rt_coop();
    am2z_state **ins = numbered(N);
    am2z_outcome *outs = (am2z_outcome *)calloc(N, sizeof *outs);
    const char **ids = (const char **)calloc(N, sizeof *ids);
    int i, good = 0, distinct = 1, millis = 1;
    on_caller = 1;
    ran_here = ran_elsewhere = 0;
    CHECK_INT(am2z_runtime_execute_many(rt, "spin", (const am2z_state *const *)ins, N, "bulk", outs), AM2Z_STATUS_OK);
    on_caller = 0;
    for (i = 0; i < N; i++) {
        const char *id = outs[i].execution_id, *dash;
        char *end;
        long long ms;
        size_t k, len = strlen(id);
        int tail_ok = len > 16 && id[len - 11] == '-';
        for (k = len - 10; tail_ok && k < len; k++)
            tail_ok = (id[k] >= '0' && id[k] <= '9') || (id[k] >= 'a' && id[k] <= 'z');
        ms = strtoll(id + 5, &end, 10);
        dash = end;
        good += outs[i].error == NULL && strncmp(id, "spin-", 5) == 0 && tail_ok && dash == id + len - 11 &&
                ms == (long long)outs[i].started_at;
        ids[i] = id;
        if (i && outs[i].started_at != outs[i - 1].started_at) millis++;
    }
    CHECK_INT(good, N);
    qsort(ids, N, sizeof *ids, cmp_str);
    for (i = 1; i < N; i++)
        if (strcmp(ids[i], ids[i - 1]) == 0) distinct = 0;
    CHECK(distinct);
    CHECK(millis >= 2); /* 3 ms of work: the prefix changed on the way */
    if (!SLOW_BUILD) CHECK(ran_elsewhere <= N / 10);
    free(ids);
    release_all(ins, outs, N);
    am2z_runtime_free(rt);
}

/* stop_session in the middle of a chunk: the rest are CancelledErrors, the stats count
   every item and "running" settles to 0 */
static void test_stop_mid_chunk(void) {
    enum { N = 100 };
    am2z_runtime *rt = rt_coop();
    am2z_state **ins = numbered(N);
    am2z_outcome *outs = (am2z_outcome *)calloc(N, sizeof *outs);
    am2z_value *ps;
    stopper s;
    pthread_t th;
    int i, ok = 0, cancelled = 0;
    /* a first call makes the estimate short: the next runs in chunks of 32 from its start */
    CHECK_INT(am2z_runtime_execute_many(rt, "stoppable", (const am2z_state *const *)ins, 8, "bulk", outs),
              AM2Z_STATUS_OK);
    for (i = 0; i < 8; i++) am2z_outcome_clear(&outs[i]);
    stop_asked = 0;
    s.rt = rt;
    s.st = AM2Z_STATUS_NOT_FOUND;
    CHECK(pthread_create(&th, NULL, stop_bulk, &s) == 0);
    CHECK_INT(am2z_runtime_execute_many(rt, "stoppable", (const am2z_state *const *)ins, N, "bulk", outs),
              AM2Z_STATUS_OK);
    pthread_join(th, NULL);
    CHECK_INT(s.st, AM2Z_STATUS_OK);
    for (i = 0; i < N; i++) {
        ok += outs[i].error == NULL;
        cancelled += outs[i].error && outs[i].error->kind == AM2Z_ERROR_CANCELLED && outs[i].attempts <= 1;
    }
    CHECK_INT(ok + cancelled, N);
    CHECK(outs[40].error && outs[40].error->kind == AM2Z_ERROR_CANCELLED);
    if (!SLOW_BUILD) CHECK_INT(ok, 40); /* items 0-39 ran before it, on the caller */
    ps = am2z_runtime_processor_stats(rt, "stoppable");
    CHECK_INT(am2z_value_get_int(ps, "completed", -1) + am2z_value_get_int(ps, "failed", -1), 8 + N);
    am2z_value_release(ps);
    /* item 40 run by a worker is abandoned by the cancel and counts in "running" until
       its processor returns (section 8: stats' one exception) */
    if (SLOW_BUILD)
        for (i = 0; i < 20000 && running_now(rt) != 0; i++) msleep(1);
    CHECK_INT(running_now(rt), 0);
    release_all(ins, outs, N);
    am2z_runtime_free(rt);
}

/* a forked child does not make its parent's ids: the thread that forked had seeded its
   generator, which the child inherits (a pre-fork server's workers share one Redis,
   where ids name jobs) */
static void test_ids_after_fork(void) {
    enum { K = 64 };
    char mine[K][AM2Z_EXECUTION_ID_SIZE], theirs[K][AM2Z_EXECUTION_ID_SIZE];
    int fd[2], i, j, same = 0;
    size_t got = 0;
    ssize_t n;
    pid_t pid;
    am2z_execution_id_generate("f", mine[0]); /* this thread's generator is seeded */
    CHECK(pipe(fd) == 0);
    pid = fork();
    if (pid == 0) {
        for (i = 0; i < K; i++) am2z_execution_id_generate("f", theirs[i]);
        _exit(write(fd[1], theirs, sizeof theirs) == (ssize_t)sizeof theirs ? 0 : 1);
    }
    CHECK(pid > 0);
    for (i = 0; i < K; i++) am2z_execution_id_generate("f", mine[i]);
    while (got < sizeof theirs && (n = read(fd[0], (char *)theirs + got, sizeof theirs - got)) > 0) got += (size_t)n;
    waitpid(pid, NULL, 0);
    close(fd[0]);
    close(fd[1]);
    CHECK_INT((long)got, (long)sizeof theirs);
    for (i = 0; i < K; i++) /* the random tails: the millisecond may well be the same */
        for (j = 0; j < K; j++) same += strcmp(mine[i] + strlen(mine[i]) - 10, theirs[j] + strlen(theirs[j]) - 10) == 0;
    CHECK_INT(same, 0);
}

int main(void) {
    T_RUN(test_ids_after_fork); /* first: no thread of a runtime has run yet */
    T_RUN(test_running_counts_the_item_in_progress);
    T_RUN(test_running_counts_nested_calls);
    T_RUN(test_failures_and_reused_outcomes);
    T_RUN(test_ids_follow_the_millisecond);
    T_RUN(test_stop_mid_chunk);
    return t_done();
}
