/* test_queue_durable_gaps.c - three contracts of durable executions on the queue runtime
   (am2z_resp.h 4.11) against a private redis-server:
   - crashes and max_stalled_count: with the default max_stalled_count (1), a 10-step
     durable chain whose worker process is killed with kill -9 at three successive steps
     ends as an uninterrupted run (each step once in the side-effect log), because each
     stall came after new checkpoints; a step that crashes its worker every time still
     fails at the limit, and that failure is the execution's recorded outcome;
   - keep: a finished execution's records expire after durable_keep_ms (the id is then
     unknown and runs afresh), a parked one's never, nor a finished one's when a late
     submit's start record write comes after it; the default keep, "forever" (< 0) and
     the cap;
   - stop_session: the session's durable executions (parked, running) end cancelled,
     recorded, with only their done record left; a finished one keeps its outcome; one
     in another session is untouched. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "fixture.h"
#include "durable_fixture.h"
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int port;
static t_redis server;
static char effects[128], result[128];

/* ---- worker processes (the 10-step chain "ten", execution "job-1") ---- */

static int g_kill_steps[4] = {-1, -1, -1, -1}; /* the steps that stop this process */
static int g_pipe = -1;                        /* tells the parent "kill me now" */

static void log_effect(const char *line) {
    int fd = open(effects, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;
    if (write(fd, line, strlen(line)) < 0) { /* a missing line fails the test */ }
    close(fd);
}

/* Stops its process at the start of a step in g_kill_steps, else logs
   "<k> <idempotency key>" and does step k's work. */
static am2z_result step_fn(am2z_ctx *ctx, const am2z_state *in) {
    int k = (int)(intptr_t)am2z_ctx_user_data(ctx), i;
    char line[256];
    const char *key = am2z_ctx_idempotency_key(ctx);
    for (i = 0; i < 4; i++)
        if (k == g_kill_steps[i]) fx_stop_here(g_pipe);
    snprintf(line, sizeof line, "%d %s\n", k, key ? key : "-");
    log_effect(line);
    return fx_ten_step(in, k);
}

/* concurrency: worker threads, or AM2Z_QUEUE_NO_WORKERS; max_stalled_count and
   durable_keep_ms left to their defaults unless keep != 0. A lost worker's job is back
   in wait about 2.5 s after its death (lock 2 s, stalled scan every 300 ms). */
static am2z_runtime *rt_new(int concurrency, int64_t keep) {
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d;
    am2z_runtime *rt;
    fx_queue_desc(&d, port, concurrency, lg);
    d.lock_duration_ms = 2000;
    d.stalled_interval_ms = 300;
    d.durable_keep_ms = keep;
    rt = am2z_queue_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    return rt;
}

static am2z_state *state_of(const char *json) { return am2z_state_parse(NULL, json, AM2Z_NTS, NULL); }

/* A worker process for "ten": submits job-1 (submit = 1) or only serves, then waits
   for the recorded outcome and writes it to the result file. */
static void child_main(int submit) {
    am2z_runtime *rt = rt_new(2, 0);
    am2z_outcome out;
    am2z_status st;
    memset(&out, 0, sizeof out);
    /* steps time out after 1 s: the orphaned child job of a step in flight in a killed
       worker is past its deadline when the stalled scan puts it back, so it never runs */
    if (!rt || am2z_runtime_register(rt, fx_ten_chain(step_fn, 1000))) _exit(10);
    if (submit) {
        am2z_state *in = state_of("{\"sum\":0,\"trace\":[]}");
        am2z_execution *e = am2z_runtime_submit_with(rt, "ten", in, &(am2z_submit_desc){.durable = 1, .execution_id = "job-1"},
                                                     &st);
        am2z_value_release(in);
        if (!e) _exit(11);
        am2z_execution_detach(e);
    }
    st = am2z_runtime_durable_outcome(rt, "job-1", 60000, &out);
    if (st != AM2Z_STATUS_OK) _exit(12);
    fx_write_result(result, &out);
    am2z_outcome_clear(&out);
    am2z_runtime_free(rt);
    _exit(0);
}

/* A child that stops at each of steps (up to 4, -1 ends them). */
static pid_t spawn(int submit, const int *steps, int *pipe_rd) {
    pid_t pid = fx_fork_piped(pipe_rd, &g_pipe); /* this process has no threads: fork is safe */
    if (pid == 0) {
        int i;
        for (i = 0; i < 4 && steps && steps[i] >= 0; i++) g_kill_steps[i] = steps[i];
        child_main(submit);
    }
    return pid;
}

/* Waits up to timeout_ms for the child to ask to be killed (then kills it: 'k') or to
   exit (its exit code, 100 + a signal). */
static int ask_or_exit(pid_t pid, int fd, int timeout_ms) {
    struct pollfd pf;
    char c;
    pf.fd = fd;
    pf.events = POLLIN;
    if (poll(&pf, 1, timeout_ms) == 1 && read(fd, &c, 1) == 1) {
        kill(pid, SIGKILL);
        fx_wait_exit(pid);
        return 'k';
    }
    kill(pid, SIGKILL); /* exited (EOF): nothing; hung: no leftover */
    return fx_wait_exit(pid);
}

static void fresh(void) {
    fx_flushall(port);
    unlink(effects);
    unlink(result);
}

/* The job hash field of job-1's job in queue am2z~ten into buf ("" when missing). */
static void job_field(const char *field, char *buf, size_t cap) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    char job[AM2Z_EXECUTION_ID_SIZE] = "";
    memset(&rep, 0, sizeof rep);
    buf[0] = '\0';
    if (!r) return;
    if (am2z_redis_command(r, &rep, "ZRANGE bull:am2z~ten:completed 0 -1") == AM2Z_STATUS_OK && rep.len == 1)
        snprintf(job, sizeof job, "%s", am2z_reply_str(am2z_reply_at(&rep, 0)));
    if (!*job && am2z_redis_command(r, &rep, "ZRANGE bull:am2z~ten:failed 0 -1") == AM2Z_STATUS_OK && rep.len == 1)
        snprintf(job, sizeof job, "%s", am2z_reply_str(am2z_reply_at(&rep, 0)));
    if (*job && am2z_redis_command(r, &rep, "HGET bull:am2z~ten:%s %s", job, field) == AM2Z_STATUS_OK &&
        rep.type != AM2Z_REPLY_NIL)
        snprintf(buf, cap, "%s", am2z_reply_str(&rep));
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
}

/* ---- 1. crashes vs max_stalled_count ---- */

/* Killed before steps 2, 5 and 8 in three worker processes in turn (default
   max_stalled_count 1: three stalls), a fourth finishes it: the uninterrupted run's
   outcome, each step once in the side-effect log with its own key. Before the fix the
   second stall failed the job ("stalled more than allowable limit"). */
static void test_crashes_with_progress(void) {
    static const int at[3] = {2, 5, 8};
    char log[4096], stc[32];
    int fd, i, k, bad_key = 0;
    pid_t pid;
    fresh();
    for (i = 0; i < 3; i++) {
        int steps[2];
        steps[0] = at[i];
        steps[1] = -1;
        pid = spawn(i == 0, steps, &fd);
        CHECK_INT(ask_or_exit(pid, fd, 60000), 'k');
        close(fd);
    }
    pid = spawn(0, NULL, &fd);
    CHECK_INT(ask_or_exit(pid, fd, 90000), 0);
    close(fd);
    fx_read_file(result, log, sizeof log);
    CHECK_STR(log, "ok [0,1,2,3,4,5,6,7,8,9] 285");
    fx_read_file(effects, log, sizeof log);
    for (k = 0; k < FX_STEPS; k++) {
        int n = fx_runs_of(log, k, &bad_key);
        if (n != 1) T_FAIL_("step %d ran %d times", k, n);
    }
    if (bad_key) T_FAIL_("a step ran with another step's key:\n%s", log);
    job_field("stc", stc, sizeof stc);
    CHECK_STR(stc, "1"); /* each stall started the count again */
    job_field("am2zPg", stc, sizeof stc);
    CHECK_STR(stc, "8:"); /* the progress mark of the last stall: 8 checkpoints */
}

/* A step that kills its worker every time: the first stall (after steps 0-2
   checkpointed) counts 1, the second (no new checkpoint) 2 > 1: the next worker fails the
   job without running anything, and the execution's recorded outcome is that failure. */
static void test_crash_loop_fails_at_limit(void) {
    static const int three[2] = {3, -1};
    char got[512], log[4096];
    int fd, k, bad_key = 0;
    pid_t pid;
    fresh();
    pid = spawn(1, three, &fd);
    CHECK_INT(ask_or_exit(pid, fd, 60000), 'k');
    close(fd);
    pid = spawn(0, three, &fd);
    CHECK_INT(ask_or_exit(pid, fd, 60000), 'k');
    close(fd);
    pid = spawn(0, three, &fd); /* must not reach step 3 */
    CHECK_INT(ask_or_exit(pid, fd, 60000), 0);
    close(fd);
    fx_read_file(result, got, sizeof got);
    CHECK(strncmp(got, "failed ", 7) == 0);
    CHECK(strstr(got, "stalled more than allowable limit") != NULL);
    fx_read_file(effects, log, sizeof log);
    for (k = 0; k < FX_STEPS; k++) {
        int n = fx_runs_of(log, k, &bad_key), want = k < 3 ? 1 : 0;
        if (n != want) T_FAIL_("step %d ran %d times", k, n);
    }
    CHECK(!bad_key);
    job_field("stc", got, sizeof got);
    CHECK_STR(got, "2");
    CHECK_INT(fx_redis_num(port, "HEXISTS bull:am2z:x:%s %s", "job-1", "done"), 1);
}

/* ---- shared by the in-process tests ---- */

static am2z_result validate_fn(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "validated", am2z_value_bool(1)));
}

static am2z_result pay_fn(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "paid", am2z_value_bool(1)));
}

static am2z_result quick_fn(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "done", am2z_value_bool(1)));
}

static int g_blocking; /* atomic: the blocking step runs */

/* Runs until its run is cancelled (10 s at most). */
static am2z_result block_fn(am2z_ctx *ctx, const am2z_state *in) {
    int i;
    __atomic_store_n(&g_blocking, 1, __ATOMIC_SEQ_CST);
    for (i = 0; i < 1000 && !am2z_ctx_cancelled(ctx); i++) t_redis_sleep_ms(10);
    return am2z_ok(am2z_value_retain(in));
}

static am2z_processor *chain1(const char *name, const char *step, am2z_processor_fn fn) {
    return am2z_chain_new(&(am2z_chain_desc){
        .name = name, .count = 1,
        .steps = (am2z_processor *[]){am2z_processor_new(&(am2z_processor_desc){.name = step, .fn = fn,
                                                                              .timeout_ms = 20000}, NULL)}}, NULL);
}

static am2z_outcome run_in(am2z_runtime *rt, const char *proc, const char *id, const char *session) {
    am2z_state *in = state_of("{}");
    am2z_outcome out = am2z_runtime_execute_with(rt, proc, in, &(am2z_submit_desc){.durable = 1, .execution_id = id,
                                                                                  .session_id = session});
    am2z_value_release(in);
    return out;
}

static long long pttl(const char *id) { return fx_redis_num(port, "PTTL bull:am2z:x:%s%s", id, ""); }

/* ---- 2. keep ---- */

static void test_done_record_expires(void) {
    am2z_runtime *rt = rt_new(2, 1500);
    am2z_outcome out;
    long long t;
    int i, gone = 0;
    memset(&out, 0, sizeof out);
    fresh();
    CHECK(rt != NULL);
    if (!rt) return;
    CHECK_INT(am2z_runtime_register(rt, chain1("q1", "q1.s", quick_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, validate_fn, pay_fn)), AM2Z_STATUS_OK);
    out = run_in(rt, "q1", "keep-1", NULL);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    out = run_in(rt, "exp", "keep-parked", NULL);
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    t = pttl("keep-1");
    CHECK(t > 0 && t <= 1500);
    CHECK_INT(pttl("keep-parked"), -1); /* an unfinished execution's records never expire */
    CHECK_INT(am2z_runtime_durable_outcome(rt, "keep-1", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL && am2z_value_get_bool(out.state, "done", 0));
    am2z_outcome_clear(&out);
    for (i = 0; i < 100 && !gone; i++) { /* 5 s at most */
        t_redis_sleep_ms(50);
        gone = pttl("keep-1") == -2;
    }
    CHECK(gone);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "keep-1", 0, &out), AM2Z_STATUS_NOT_FOUND);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "keep-parked", 0, &out), AM2Z_STATUS_TIMEOUT);
    CHECK_INT(pttl("keep-parked"), -1);
    out = run_in(rt, "q1", "keep-1", NULL); /* an expired id runs afresh, as a forgotten one */
    CHECK(out.error == NULL && am2z_value_get_bool(out.state, "done", 0));
    am2z_outcome_clear(&out);
    CHECK(pttl("keep-1") > 0);
    /* the parked one finishes: its keep starts then */
    CHECK_INT(am2z_runtime_signal(rt, "keep-parked", "approval", NULL), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "keep-parked", 20000, &out), AM2Z_STATUS_OK);
    am2z_outcome_clear(&out);
    t = pttl("keep-parked");
    CHECK(t > 0 && t <= 1500);
    am2z_runtime_free(rt);
}

/* A signal stored before its execution starts expires after durable_keep_ms unless the
   execution starts (a mistyped id must not stay forever); the start makes the records
   permanent again, as an unfinished execution's are. */
static void test_early_signal_expires(void) {
    am2z_runtime *rt = rt_new(2, 1500);
    am2z_outcome out;
    long long t;
    int i, gone = 0;
    memset(&out, 0, sizeof out);
    fresh();
    CHECK(rt != NULL);
    if (!rt) return;
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_signal(rt, "early-never", "approval", NULL), AM2Z_STATUS_OK);
    t = pttl("early-never");
    CHECK(t > 0 && t <= 1500);
    /* a signal it does not wait for, then the start: parked, its records without a TTL */
    CHECK_INT(am2z_runtime_signal(rt, "early-parked", "nudge", NULL), AM2Z_STATUS_OK);
    CHECK(pttl("early-parked") > 0);
    out = run_in(rt, "exp", "early-parked", NULL);
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    CHECK_INT(pttl("early-parked"), -1);
    /* the signal it waits for, stored first: it runs through, and its keep starts */
    CHECK_INT(am2z_runtime_signal(rt, "early-ran", "approval", NULL), AM2Z_STATUS_OK);
    out = run_in(rt, "exp", "early-ran", NULL);
    CHECK(out.error == NULL && !fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    t = pttl("early-ran");
    CHECK(t > 0 && t <= 1500);
    for (i = 0; i < 100 && !gone; i++) { /* 5 s at most */
        t_redis_sleep_ms(50);
        gone = pttl("early-never") == -2;
    }
    CHECK(gone);
    CHECK_INT(pttl("early-parked"), -1); /* past the keep, still there */
    CHECK_INT(am2z_runtime_signal(rt, "early-parked", "approval", NULL), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "early-parked", 20000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    am2z_runtime_free(rt);
}

/* A submit reads the done record (none yet), then the start record (none: another
   process's run of the id started and already finished, its start record removed with
   its other records), then writes its start record. That write must not revive the
   finished execution: its records keep their TTL, and no start record is left beside
   the done one. The other run is played by raw commands queued behind CLIENT PAUSE
   WRITE (reads go on, writes wait in arrival order): the run's end first, then the
   submit's start record write. */
typedef struct raw_call {
    const char *argv[6];
    size_t argc;
    am2z_status st;
} raw_call;

static void *raw_call_main(void *arg) {
    raw_call *c = (raw_call *)arg;
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    c->st = r ? am2z_redis_command_argv(r, &rep, c->argc, c->argv, NULL) : AM2Z_STATUS_IO;
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return NULL;
}

typedef struct submitter {
    am2z_runtime *rt;
    const char *id;
    am2z_status st;
} submitter;

static void *submit_main(void *arg) {
    submitter *s = (submitter *)arg;
    am2z_state *in = state_of("{}");
    am2z_execution *e = am2z_runtime_submit_with(s->rt, "q1", in, &(am2z_submit_desc){.durable = 1,
                                                 .execution_id = s->id}, &s->st);
    if (e) am2z_execution_detach(e);
    am2z_value_release(in);
    return NULL;
}

/* Waits (5 s at most) until a client waits behind the pause with command cmd. */
static int paused_client(am2z_redis *admin, const char *cmd) {
    char want[32];
    int i, ok = 0;
    snprintf(want, sizeof want, " cmd=%s ", cmd);
    for (i = 0; i < 500 && !ok; i++) {
        am2z_reply rep;
        memset(&rep, 0, sizeof rep);
        if (am2z_redis_command(admin, &rep, "CLIENT LIST") == AM2Z_STATUS_OK) {
            const char *line = am2z_reply_str(&rep);
            while (line && *line && !ok) { /* a postponed client: flags with b(locked) */
                const char *eol = strchr(line, '\n'), *c = strstr(line, want), *f = strstr(line, " flags=");
                size_t n = eol ? (size_t)(eol - line) : strlen(line);
                ok = c && f && c < line + n && f < line + n && memchr(f + 7, 'b', strcspn(f + 7, " ")) != NULL;
                line = eol ? eol + 1 : NULL;
            }
        }
        am2z_reply_clear(&rep);
        if (!ok) t_redis_sleep_ms(10);
    }
    return ok;
}

static void test_start_after_finish_keeps_ttl(void) {
    static const char json[] = "{\"ok\":true,\"state\":{},\"attempts\":1,\"durationMs\":1,\"startedAt\":1,"
                               "\"sessionId\":\"default\"}";
    am2z_runtime *rt = rt_new(AM2Z_QUEUE_NO_WORKERS, 60000);
    am2z_redis *admin = fx_conn(port);
    am2z_reply rep;
    char done[2 * AM2Z_SHA256_SIZE + sizeof json];
    raw_call end;
    submitter sub;
    am2z_outcome out;
    pthread_t te, ts;
    long long t;
    memset(&rep, 0, sizeof rep);
    memset(&out, 0, sizeof out);
    fresh();
    CHECK(rt != NULL && admin != NULL);
    if (!rt || !admin) return;
    CHECK_INT(am2z_runtime_register(rt, chain1("q1", "q1.s", quick_fn)), AM2Z_STATUS_OK);
    am2z_sha256_hex(json, strlen(json), done); /* a done record as dput stores it: digest + JSON */
    memcpy(done + 2 * AM2Z_SHA256_SIZE, json, sizeof json);
    /* the other run's end: its done record with the keep as TTL, its start record gone */
    end.argv[0] = "EVAL";
    end.argv[1] = "redis.call('HSET', KEYS[1], 'done', ARGV[1]); redis.call('PEXPIRE', KEYS[1], ARGV[2]);"
                  "redis.call('HDEL', KEYS[1], 'start')";
    end.argv[2] = "1";
    end.argv[3] = "bull:am2z:x:race-1";
    end.argv[4] = done;
    end.argv[5] = "60000";
    end.argc = 6;
    end.st = AM2Z_STATUS_IO;
    sub.rt = rt;
    sub.id = "race-warm";
    sub.st = AM2Z_STATUS_IO;
    submit_main(&sub); /* another id first: the submit's connections and scripts are ready */
    CHECK_INT(sub.st, AM2Z_STATUS_OK);
    sub.id = "race-1";
    sub.st = AM2Z_STATUS_IO;
    CHECK_INT(am2z_redis_command(admin, &rep, "CLIENT PAUSE 10000 WRITE"), AM2Z_STATUS_OK);
    CHECK(pthread_create(&te, NULL, raw_call_main, &end) == 0);
    CHECK(paused_client(admin, "eval"));
    CHECK(pthread_create(&ts, NULL, submit_main, &sub) == 0); /* reads both records, waits to write */
    CHECK(paused_client(admin, "evalsha"));
    CHECK_INT(am2z_redis_command(admin, &rep, "CLIENT UNPAUSE"), AM2Z_STATUS_OK);
    pthread_join(te, NULL);
    pthread_join(ts, NULL);
    CHECK_INT(end.st, AM2Z_STATUS_OK);
    CHECK_INT(sub.st, AM2Z_STATUS_OK);
    t = pttl("race-1");
    CHECK(t > 0 && t <= 60000);
    CHECK_INT(fx_redis_num(port, "HEXISTS bull:am2z:x:%s %s", "race-1", "start"), 0);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "race-1", 0, &out), AM2Z_STATUS_OK); /* the other run's */
    CHECK(out.error == NULL && out.attempts == 1);
    am2z_outcome_clear(&out);
    am2z_reply_clear(&rep);
    am2z_redis_free(admin);
    am2z_runtime_free(rt);
}

/* The default keep (7 days), < 0 (until forgotten), and the cap (100 years). */
static void test_keep_settings(void) {
    static const int64_t keeps[3] = {0, -1, INT64_MAX};
    int i;
    fresh();
    for (i = 0; i < 3; i++) {
        am2z_runtime *rt = rt_new(1, keeps[i]);
        am2z_outcome out;
        long long t;
        char id[32];
        memset(&out, 0, sizeof out);
        CHECK(rt != NULL);
        if (!rt) return;
        snprintf(id, sizeof id, "keep-s%d", i);
        CHECK_INT(am2z_runtime_register(rt, chain1("q1", "q1.s", quick_fn)), AM2Z_STATUS_OK);
        out = run_in(rt, "q1", id, NULL);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
        t = pttl(id);
        if (i == 0) CHECK(t > AM2Z_QUEUE_DURABLE_KEEP_MS - 60000 && t <= AM2Z_QUEUE_DURABLE_KEEP_MS);
        if (i == 1) CHECK_INT(t, -1);
        if (i == 2) CHECK(t > AM2Z_QUEUE_DURABLE_KEEP_MAX_MS - 60000 && t <= AM2Z_QUEUE_DURABLE_KEEP_MAX_MS);
        CHECK_INT(am2z_runtime_forget(rt, id), AM2Z_STATUS_OK);
        CHECK_INT(pttl(id), -2);
        am2z_runtime_free(rt);
    }
}

/* ---- 3. stop_session ---- */

static void test_stop_session_cancels(void) {
    am2z_runtime *rt = rt_new(2, 0);
    am2z_outcome out;
    am2z_execution *run;
    am2z_state *in = state_of("{}");
    am2z_status st;
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    int i;
    memset(&out, 0, sizeof out);
    memset(&rep, 0, sizeof rep);
    fresh();
    CHECK(rt && r);
    if (!rt || !r) return;
    CHECK_INT(am2z_runtime_register(rt, chain1("q1", "q1.s", quick_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, chain1("blk", "blk.s", block_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, validate_fn, pay_fn)), AM2Z_STATUS_OK);
    out = run_in(rt, "exp", "ss-park", "s1"); /* parked: a delayed job of the session */
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    out = run_in(rt, "q1", "ss-done", "s1"); /* finished before the stop */
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    out = run_in(rt, "exp", "ss-other", "s2"); /* another session */
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    run = am2z_runtime_submit_with(rt, "blk", in, &(am2z_submit_desc){.durable = 1, .execution_id = "ss-run",
                                                                      .session_id = "s1"}, &st);
    CHECK(run != NULL);
    for (i = 0; i < 400 && !__atomic_load_n(&g_blocking, __ATOMIC_SEQ_CST); i++) t_redis_sleep_ms(25);
    CHECK(__atomic_load_n(&g_blocking, __ATOMIC_SEQ_CST));
    CHECK_INT(fx_redis_num(port, "HEXISTS bull:am2z:x:%s %s", "ss-park", "c/0/0"), 1);

    CHECK_INT(am2z_runtime_stop_session(rt, "s1", 5000), AM2Z_STATUS_OK);

    /* parked: cancelled, recorded, only the done record left, with its keep */
    CHECK_INT(am2z_runtime_durable_outcome(rt, "ss-park", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_CANCELLED);
    CHECK(out.error && strstr(am2z_error_root_cause(out.error)->message, "the session was stopped") != NULL);
    CHECK_STR(out.session_id, "s1");
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_redis_command(r, &rep, "HKEYS bull:am2z:x:ss-park"), AM2Z_STATUS_OK);
    CHECK_INT((long long)rep.len, 1);
    if (rep.len == 1) CHECK_STR(am2z_reply_str(am2z_reply_at(&rep, 0)), "done");
    CHECK(pttl("ss-park") > AM2Z_QUEUE_DURABLE_KEEP_MS - 60000);
    /* running: cancelled too (by its worker or by the stop, whichever recorded first) */
    CHECK_INT(am2z_runtime_durable_outcome(rt, "ss-run", 10000, &out), AM2Z_STATUS_OK);
    CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_CANCELLED);
    am2z_outcome_clear(&out);
    if (run) {
        CHECK_INT(am2z_execution_wait(run, 10000, &out), AM2Z_STATUS_OK);
        CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_CANCELLED);
        am2z_outcome_clear(&out);
        am2z_execution_free(run);
    }
    /* finished before: its outcome stays; the other session's still waits */
    CHECK_INT(am2z_runtime_durable_outcome(rt, "ss-done", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL && am2z_value_get_bool(out.state, "done", 0));
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "ss-other", 0, &out), AM2Z_STATUS_TIMEOUT);
    CHECK_INT(pttl("ss-other"), -1);
    /* the cancelled id is finished: refused until forgotten, then it runs afresh */
    CHECK(am2z_runtime_submit_with(rt, "exp", in, &(am2z_submit_desc){.durable = 1, .execution_id = "ss-park"}, &st) ==
          NULL);
    CHECK_INT(st, AM2Z_STATUS_EXISTS);
    CHECK_INT(am2z_runtime_signal(rt, "ss-park", "approval", NULL), AM2Z_STATUS_NOT_FOUND);
    CHECK_INT(am2z_runtime_forget(rt, "ss-park"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "ss-park", 0, &out), AM2Z_STATUS_NOT_FOUND);
    out = run_in(rt, "exp", "ss-park", "s3");
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    /* a session that does not exist: nothing to end */
    CHECK_INT(am2z_runtime_stop_session(rt, "s1", 1000), AM2Z_STATUS_NOT_FOUND);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

int main(void) {
    snprintf(effects, sizeof effects, "/tmp/am2z-qdgap-effects-%ld", (long)getpid());
    snprintf(result, sizeof result, "/tmp/am2z-qdgap-result-%ld", (long)getpid());
    T_RUN(start_server);
    if (!port) return t_done();
    T_RUN(test_crashes_with_progress); /* first: these fork while this process has no threads */
    T_RUN(test_crash_loop_fails_at_limit);
    T_RUN(test_done_record_expires);
    T_RUN(test_early_signal_expires);
    T_RUN(test_start_after_finish_keeps_ttl);
    T_RUN(test_keep_settings);
    T_RUN(test_stop_session_cancels);
    unlink(effects);
    unlink(result);
    t_redis_stop(&server);
    return t_done();
}
