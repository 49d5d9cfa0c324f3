/* test_queue_durable.c - am2z.h section 7d on the queue runtime (am2z_resp.h 4.11)
   against a private redis-server: a 10-step durable chain whose worker process is
   killed with kill -9 at every step boundary (before step b, or after its side effect
   and before its checkpoint, alternately) is continued by a worker in another process
   to the state of an uninterrupted run, and a side-effect log (O_APPEND) shows each
   completed step ran once (the one in flight at most twice, never a third time by its
   orphaned child job); compensation across two processes; wait steps: approve (the
   parked execution a delayed job in Redis, its worker thread free), timeout, fallback,
   a signal before the wait, a signal from another process; 100 parked executions hold
   no thread and no connection; a job recovered after its worker recorded the outcome
   ends with that outcome; a store failure and a
   corrupted record fail the execution with a clear cause; bad input. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "fixture.h"
#include "durable_fixture.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STEPS FX_STEPS

static int port;
static t_redis server;
static char effects[128], result[128];

/* ---- worker processes ---- */

static int g_kill_step = -1;  /* the step that stops its process */
static int g_kill_after;      /* 0: at the step's start; 1: after its side effect */
static int g_pipe = -1;       /* tells the parent "kill me now" */

static void log_effect(const char *line) {
    int fd = open(effects, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;
    if (write(fd, line, strlen(line)) < 0) { /* a missing line fails the test */ }
    close(fd);
}

static am2z_result step_fn(am2z_ctx *ctx, const am2z_state *in) {
    int k = (int)(intptr_t)am2z_ctx_user_data(ctx);
    char line[256];
    const char *key = am2z_ctx_idempotency_key(ctx);
    if (k == g_kill_step && !g_kill_after) fx_stop_here(g_pipe);
    snprintf(line, sizeof line, "%d %s\n", k, key ? key : "-");
    log_effect(line);
    if (k == g_kill_step && g_kill_after) fx_stop_here(g_pipe);
    return fx_ten_step(in, k);
}

/* The saga: reserve (undone by release), pay (undone by refund), ship (fails, or stops
   its process when g_kill_step is 2). Each run logs "<name> <pid>". */
static am2z_result saga_fn(am2z_ctx *ctx, const am2z_state *in) {
    const char *name = (const char *)am2z_ctx_user_data(ctx);
    char line[128];
    if (!strcmp(name, "ship") && g_kill_step == 2) fx_stop_here(g_pipe);
    snprintf(line, sizeof line, "%s %ld\n", name, (long)getpid());
    log_effect(line);
    if (!strcmp(name, "ship")) return am2z_fail(am2z_error_with_retryable(
                                       am2z_error_business("NO_STOCK", AM2Z_SEVERITY_HIGH, "nothing to ship"), 0));
    return am2z_ok(am2z_value_set(am2z_value_retain(in), name, am2z_value_bool(1)));
}

static am2z_processor *proc(const char *name, am2z_processor_fn fn, void *ud) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = fn, .user_data = ud, .timeout_ms = 1000}, NULL);
}

static am2z_processor *saga_chain(void) {
    return am2z_chain_new(&(am2z_chain_desc){
        .name = "saga", .count = 3,
        .steps = (am2z_processor *[]){proc("reserve", saga_fn, (void *)"reserve"), proc("pay", saga_fn, (void *)"pay"),
                                      proc("ship", saga_fn, (void *)"ship")},
        .compensations = (am2z_processor *[]){proc("release", saga_fn, (void *)"release"),
                                              proc("refund", saga_fn, (void *)"refund"), NULL}}, NULL);
}

/* concurrency: worker threads, or AM2Z_QUEUE_NO_WORKERS. A lost worker's job is back
   in wait about 2.5 s after its death (lock 2 s, stalled scan every 300 ms). */
static am2z_runtime *rt_new(int concurrency) {
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = port;
    d.concurrency = concurrency;
    d.lock_duration_ms = 2000;
    d.stalled_interval_ms = 300;
    d.max_stalled_count = 5;
    d.logger = lg;
    rt = am2z_queue_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    return rt;
}

static am2z_state *state_of(const char *json) { return am2z_state_parse(NULL, json, AM2Z_NTS, NULL); }

/* A worker process for chain `name` (execution "job-1"): submits it (submit = 1) or
   only serves, then waits for the recorded outcome and writes it. */
static void child_main(const char *name, int submit) {
    am2z_runtime *rt = rt_new(2);
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    am2z_status st;
    memset(&out, 0, sizeof out);
    if (!rt || am2z_runtime_register(rt, !strcmp(name, "ten") ? fx_ten_chain(step_fn, 1000) : saga_chain()))
        _exit(10);
    if (submit) {
        am2z_state *in = state_of("{\"sum\":0,\"trace\":[]}");
        am2z_execution *e = am2z_runtime_submit_with(rt, name, in, &(am2z_submit_desc){.durable = 1, .execution_id = "job-1"},
                                                     &st);
        am2z_value_release(in);
        if (!e) _exit(11);
        am2z_execution_detach(e);
    }
    st = am2z_runtime_durable_outcome(rt, "job-1", 60000, &out);
    if (st != AM2Z_STATUS_OK) _exit(12);
    fx_write_result(result, &out);
    if (out.error) { /* the saga: its compensations, in order */
        char *d = am2z_json_write(am2z_value_get(out.error->details, "compensations"), AM2Z_JSON_COMPACT, NULL);
        FILE *f = fopen(result, "a");
        if (f && d) fprintf(f, "\n%s", d);
        if (f) fclose(f);
        am2z_free(d);
    }
    am2z_outcome_clear(&out);
    am2z_runtime_free(rt);
    _exit(0);
}

static pid_t spawn(const char *name, int submit, int kill_step, int kill_after, int *pipe_rd) {
    pid_t pid = fx_fork_piped(pipe_rd, &g_pipe); /* this process has no threads: fork is safe */
    if (pid == 0) {
        g_kill_step = kill_step;
        g_kill_after = kill_after;
        child_main(name, submit);
    }
    return pid;
}

static void fresh(void) {
    fx_flushall(port);
    unlink(effects);
    unlink(result);
}

/* The uninterrupted run, then a kill -9 at every step boundary b: before step b (its
   predecessors checkpointed) for even b, after step b's side effect (before its
   checkpoint) for odd b; another process's worker finishes it. */
static void test_kill9_every_boundary(void) {
    char expect[256];
    int fd, b, bad_key = 0;
    pid_t pid;
    fresh();
    pid = spawn("ten", 1, -1, 0, &fd);
    CHECK_INT(fx_wait_exit(pid), 0);
    close(fd);
    fx_read_file(result, expect, sizeof expect);
    CHECK_STR(expect, "ok [0,1,2,3,4,5,6,7,8,9] 285");
    for (b = 0; b < STEPS; b++) {
        int after = b % 2;
        fresh();
        pid = spawn("ten", 1, b, after, &fd);
        CHECK(fx_kill_when_asked(pid, fd, 60000));
        close(fd);
        pid = spawn("ten", 0, -1, 0, &fd); /* another process: serves and asks by id */
        CHECK_INT(fx_wait_exit(pid), 0);
        close(fd);
        fx_check_ten_resumed(result, effects, expect, b, after, &bad_key);
    }
    CHECK(!bad_key);
}

/* Compensation across processes: the first worker reserves and pays and dies in
   ship; the second runs ship (which fails) and the compensations, in reverse, with
   the state the first one checkpointed. */
static void test_compensation_across_processes(void) {
    char got[1024], log[1024], line[160];
    int fd;
    pid_t a, b;
    fresh();
    a = spawn("saga", 1, 2, 0, &fd);
    CHECK(fx_kill_when_asked(a, fd, 60000));
    close(fd);
    b = spawn("saga", 0, -1, 0, &fd);
    CHECK_INT(fx_wait_exit(b), 0);
    close(fd);
    fx_read_file(result, got, sizeof got);
    CHECK(strncmp(got, "failed ", 7) == 0);
    CHECK(strstr(got, "\"step\":1,\"processor\":\"refund\",\"ok\":true") != NULL);
    CHECK(strstr(got, "\"step\":0,\"processor\":\"release\",\"ok\":true") != NULL);
    CHECK(strstr(got, "refund") < strstr(got, "release"));
    fx_read_file(effects, log, sizeof log);
    snprintf(line, sizeof line, "reserve %ld\npay %ld\nship %ld\nrefund %ld\nrelease %ld\n", (long)a, (long)a, (long)b,
             (long)b, (long)b);
    CHECK_STR(log, line);
}

/* ---- wait steps ---- */

static am2z_result pay_fn(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    if (!am2z_value_get_bool(in, "approval.approved", 0))
        return am2z_fail(am2z_error_with_retryable(am2z_error_business("REJECTED", AM2Z_SEVERITY_LOW, "rejected"), 0));
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "paid", am2z_value_bool(1)));
}

/* The score of the durable job of id in the delayed set of queue am2z~<name> (its due
   time, ms), -1 when it is not there. */
static long long delayed_due(const char *name, const char *id) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    char key[128], job[AM2Z_EXECUTION_ID_SIZE];
    long long due = -1;
    memset(&rep, 0, sizeof rep);
    if (!r) return -2;
    snprintf(key, sizeof key, "bull:am2z~%s:delayed", name);
    snprintf(job, sizeof job, "%s-i-", id);
    {
        am2z_reply z;
        size_t i;
        memset(&z, 0, sizeof z);
        if (am2z_redis_command(r, &z, "ZRANGE %s 0 -1 WITHSCORES", key) == AM2Z_STATUS_OK)
            for (i = 0; i + 1 < z.len; i += 2)
                if (!strncmp(am2z_reply_str(am2z_reply_at(&z, i)), job, strlen(job)))
                    due = (long long)(atof(am2z_reply_str(am2z_reply_at(&z, i + 1))) / 4096);
        am2z_reply_clear(&z);
    }
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return due;
}

static am2z_result quick_fn(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_retain(in));
}

/* A signal from another process: this child waits for "go", then signals with a
   producer-only runtime (no workers, nothing registered or declared). */
static void signaller(int go) {
    char c;
    am2z_runtime *rt;
    am2z_value *yes;
    char json[96];
    if (read(go, &c, 1) != 1) _exit(20);
    if (!(rt = rt_new(AM2Z_QUEUE_NO_WORKERS))) _exit(21);
    snprintf(json, sizeof json, "{\"approved\":true,\"by\":%ld}", (long)getpid());
    yes = am2z_json_parse(json, AM2Z_NTS, NULL, NULL);
    if (am2z_runtime_signal(rt, "exp-remote", "approval", yes) != AM2Z_STATUS_OK) _exit(22);
    am2z_value_release(yes);
    am2z_runtime_free(rt);
    _exit(0);
}

static void test_signals(void) {
    am2z_runtime *rt;
    am2z_value *yes = am2z_json_parse("{\"approved\":true,\"by\":\"ann\"}", AM2Z_NTS, NULL, NULL);
    am2z_value *fb = am2z_json_parse("{\"approved\":true,\"auto\":true}", AM2Z_NTS, NULL, NULL);
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    am2z_state *in;
    int go[2];
    pid_t sig;
    am2z_status st;
    long long due;
    int64_t t0;
    fresh();
    CHECK_INT(pipe(go), 0);
    if ((sig = fork()) == 0) { /* before this process has threads */
        close(go[1]);
        signaller(go[0]);
    }
    close(go[0]);
    rt = rt_new(1); /* one worker thread: a parked execution must not hold it */
    CHECK(rt != NULL);
    if (!rt) return;
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("expt", 300, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("expf", 300, fb, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc("quick", quick_fn, NULL)), AM2Z_STATUS_OK);

    /* approve: parked as a delayed job (no timeout: due a year on), the thread free */
    out = fx_run_durable(rt, "exp", "exp-1");
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    due = delayed_due("exp", "exp-1");
    CHECK(due > am2z_now_ms() + 300LL * 86400000);
    in = state_of("{\"x\":1}");
    out = am2z_runtime_execute(rt, "quick", in); /* the only worker thread runs it */
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-1", 0, &out), AM2Z_STATUS_TIMEOUT);
    CHECK_INT(am2z_runtime_forget(rt, "exp-1"), AM2Z_STATUS_CONFLICT); /* parked: not finished */
    CHECK_INT(am2z_runtime_signal(rt, "exp-1", "approval", yes), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-1", 20000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_STR(am2z_value_get_string(out.state, "approval.by", ""), "ann");
    CHECK(am2z_value_get_bool(out.state, "paid", 0) && am2z_value_get_bool(out.state, "validated", 0));
    am2z_outcome_clear(&out);
    CHECK_INT(delayed_due("exp", "exp-1"), -1);
    /* finished: a second submit is refused, signals too; forget frees the id */
    in = state_of("{}");
    CHECK(am2z_runtime_submit_with(rt, "exp", in, &(am2z_submit_desc){.durable = 1, .execution_id = "exp-1"}, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_EXISTS);
    CHECK(strstr(am2z_status_detail(), "has finished") != NULL);
    am2z_value_release(in);
    CHECK_INT(am2z_runtime_signal(rt, "exp-1", "approval", yes), AM2Z_STATUS_NOT_FOUND);
    CHECK_INT(am2z_runtime_forget(rt, "exp-1"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-1", 0, &out), AM2Z_STATUS_NOT_FOUND);
    out = fx_run_durable(rt, "exp", "exp-1"); /* a forgotten id runs afresh */
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);

    /* timeout: TimeoutError, or the fallback; the job was due at the wait's end */
    t0 = am2z_now_ms();
    out = fx_run_durable(rt, "expt", "exp-2");
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    due = delayed_due("expt", "exp-2");
    CHECK(due >= t0 + 300 && due < t0 + 10000);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-2", 20000, &out), AM2Z_STATUS_OK);
    CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_TIMEOUT);
    am2z_outcome_clear(&out);
    out = fx_run_durable(rt, "expf", "exp-3");
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-3", 20000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL && am2z_value_get_bool(out.state, "approval.auto", 0) &&
          am2z_value_get_bool(out.state, "paid", 0));
    am2z_outcome_clear(&out);

    /* a signal before the execution exists is kept: the wait finds it, nothing parks */
    CHECK_INT(am2z_runtime_signal(rt, "exp-4", "approval", yes), AM2Z_STATUS_OK);
    out = fx_run_durable(rt, "exp", "exp-4");
    CHECK(out.error == NULL && am2z_value_get_bool(out.state, "paid", 0));
    am2z_outcome_clear(&out);

    /* resume of a parked id moves it to wait: it looks again and parks again */
    out = fx_run_durable(rt, "exp", "exp-5");
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    {
        size_t n = 9;
        CHECK_INT(am2z_runtime_resume(rt, "exp-5", &n), AM2Z_STATUS_OK);
        CHECK_INT(n, 1);
        CHECK_INT(am2z_runtime_resume(rt, NULL, &n), AM2Z_STATUS_OK);
        CHECK_INT(n, 0);
    }

    /* from another process */
    out = fx_run_durable(rt, "exp", "exp-remote");
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    CHECK_INT(write(go[1], "g", 1), 1);
    close(go[1]);
    CHECK_INT(fx_wait_exit(sig), 0);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-remote", 20000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL && am2z_value_get_int(out.state, "approval.by", 0) == (int64_t)sig);
    am2z_outcome_clear(&out);

    am2z_value_release(yes);
    am2z_value_release(fb);
    am2z_runtime_free(rt);
}

/* ---- many parked ---- */

static int thread_count(void) {
    char path[64], line[256];
    int n = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%ld/status", (long)getpid());
    if (!(f = fopen(path, "r"))) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Threads:", 8)) n = atoi(line + 8);
    fclose(f);
    return n;
}

static long long redis_int(const char *cmd) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    long long v = -1;
    memset(&rep, 0, sizeof rep);
    if (r && am2z_redis_command(r, &rep, cmd) == AM2Z_STATUS_OK) {
        if (rep.type == AM2Z_REPLY_INTEGER) v = rep.integer;
        else { /* CLIENT LIST: one line per connection */
            const char *p = am2z_reply_str(&rep);
            for (v = 0; (p = strchr(p, '\n')) != NULL; p++) v++;
        }
    }
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return v;
}

/* 100 parked executions: 100 delayed jobs, not one more thread or connection, and the
   one worker thread still runs other work. */
static void test_hundred_parked(void) {
    am2z_runtime *rt;
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    am2z_state *in = state_of("{}");
    int waiting = 0, threads;
    long long conns;
    fresh();
    rt = rt_new(1);
    CHECK(rt != NULL);
    if (!rt) return;
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, proc("quick", quick_fn, NULL)), AM2Z_STATUS_OK);
    out = fx_run_durable(rt, "exp", "many-0"); /* the runtime's threads and pool warmed up */
    waiting += fx_is_waiting(&out);
    am2z_outcome_clear(&out);
    threads = thread_count();
    conns = redis_int("CLIENT LIST");
    waiting += fx_park_many(rt, "exp", "many", 1, 100);
    CHECK_INT(waiting, 100);
    CHECK_INT(redis_int("ZCARD bull:am2z~exp:delayed"), 100);
    CHECK_INT(thread_count(), threads);
    CHECK(redis_int("CLIENT LIST") <= conns + 1); /* this count's own connection at most */
    out = am2z_runtime_execute(rt, "quick", in);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* A worker that died after recording the outcome and before finishing the job: the
   stalled scan puts the job back in wait, and the next worker ends it with the recorded
   outcome instead of running anything again (or failing it as "has finished"). The
   death is staged: the finished job moved back from completed to wait by hand. */
static int g_counted_runs;

static am2z_result counted_fn(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    __atomic_fetch_add(&g_counted_runs, 1, __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "done", am2z_value_bool(1)));
}

static void test_recorded_outcome_ends_a_recovered_job(void) {
    am2z_runtime *rt = rt_new(1);
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    char job[AM2Z_EXECUTION_ID_SIZE + 1] = "";
    int i, back = 0;
    memset(&rep, 0, sizeof rep);
    fresh();
    CHECK(rt && r);
    if (!rt || !r) return;
    CHECK_INT(am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){
        .name = "once", .count = 1, .steps = (am2z_processor *[]){proc("once.count", counted_fn, NULL)}}, NULL)),
              AM2Z_STATUS_OK);
    out = fx_run_durable(rt, "once", "rec-1");
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    CHECK_INT(__atomic_load_n(&g_counted_runs, __ATOMIC_SEQ_CST), 1);
    CHECK_INT(am2z_redis_command(r, &rep, "ZRANGE bull:am2z~once:completed 0 -1"), AM2Z_STATUS_OK);
    CHECK_INT((long long)rep.len, 1);
    if (rep.len == 1) snprintf(job, sizeof job, "%s", am2z_reply_str(am2z_reply_at(&rep, 0)));
    CHECK(strncmp(job, "rec-1-i-", 8) == 0);
    CHECK_INT(am2z_redis_command(r, &rep, "ZREM bull:am2z~once:completed %s", job), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_command(r, &rep, "HDEL bull:am2z~once:%s finishedOn returnvalue", job), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_command(r, &rep, "LPUSH bull:am2z~once:wait %s", job), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_command(r, &rep, "ZADD bull:am2z~once:marker 0 0"), AM2Z_STATUS_OK);
    for (i = 0; i < 200 && !back; i++) { /* 10 s at most */
        CHECK_INT(am2z_redis_command(r, &rep, "ZSCORE bull:am2z~once:completed %s", job), AM2Z_STATUS_OK);
        back = rep.type != AM2Z_REPLY_NIL;
        if (!back) t_redis_sleep_ms(50);
    }
    CHECK(back);
    CHECK_INT(am2z_redis_command(r, &rep, "ZSCORE bull:am2z~once:failed %s", job), AM2Z_STATUS_OK);
    CHECK(rep.type == AM2Z_REPLY_NIL);
    CHECK_INT(am2z_redis_command(r, &rep, "HGET bull:am2z~once:%s returnvalue", job), AM2Z_STATUS_OK);
    CHECK(rep.type == AM2Z_REPLY_BULK && strstr(am2z_reply_str(&rep), "\"done\":true") != NULL);
    CHECK_INT(__atomic_load_n(&g_counted_runs, __ATOMIC_SEQ_CST), 1);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
}

/* ---- failures ---- */

static am2z_result sabotage_fn(am2z_ctx *ctx, const am2z_state *in) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    (void)ctx;
    memset(&rep, 0, sizeof rep);
    if (r) { /* the execution's record hash becomes a string: every write to it fails */
        am2z_redis_command(r, &rep, "DEL bull:am2z:x:sab-1");
        am2z_redis_command(r, &rep, "SET bull:am2z:x:sab-1 oops");
        am2z_reply_clear(&rep);
        am2z_redis_free(r);
    }
    return am2z_ok(am2z_value_retain(in));
}

static char *error_text(const am2z_error *e) {
    am2z_value *v = e ? am2z_error_to_json(e) : NULL;
    char *s = v ? am2z_json_write(v, 0, NULL) : NULL;
    am2z_value_release(v);
    return s;
}

static void test_store_failures(void) {
    am2z_runtime *rt = rt_new(2);
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    am2z_state *in = state_of("{}");
    am2z_status st;
    char *js;
    memset(&rep, 0, sizeof rep);
    fresh();
    CHECK(rt && r);
    if (!rt || !r) return;
    CHECK_INT(am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){
        .name = "sab", .count = 2,
        .steps = (am2z_processor *[]){proc("sab.break", sabotage_fn, NULL), proc("sab.after", quick_fn, NULL)}}, NULL)),
              AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    /* a checkpoint that cannot be written fails the execution, naming the record */
    out = fx_run_durable(rt, "sab", "sab-1");
    CHECK(out.error != NULL);
    js = error_text(out.error);
    CHECK(js && strstr(js, "durable checkpoint 'x/sab-1/c/0/0'") && strstr(js, "WRONGTYPE"));
    am2z_free(js);
    am2z_outcome_clear(&out);
    /* a submit whose records cannot be read is refused with why */
    CHECK(am2z_runtime_submit_with(rt, "sab", in, &(am2z_submit_desc){.durable = 1, .execution_id = "sab-1"}, &st) == NULL);
    CHECK(st != AM2Z_STATUS_OK && strstr(am2z_status_detail(), "x/sab-1/done") != NULL);
    /* a corrupted checkpoint (its SHA-256 no longer matches) fails the resumed run */
    out = fx_run_durable(rt, "exp", "exp-c");
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_redis_command(r, &rep, "HGET bull:am2z:x:exp-c c/0/0"), AM2Z_STATUS_OK);
    CHECK(rep.len > 64);
    CHECK_INT(am2z_redis_command(r, &rep, "HSET bull:am2z:x:exp-c c/0/0 %s",
                                 "0000000000000000000000000000000000000000000000000000000000000000{}"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_signal(rt, "exp-c", "approval", NULL), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-c", 20000, &out), AM2Z_STATUS_OK);
    js = error_text(out.error);
    CHECK(js && strstr(js, "x/exp-c/c/0/0") && strstr(js, "SHA-256"));
    am2z_free(js);
    am2z_outcome_clear(&out);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_bad_input(void) {
    am2z_runtime *rt = rt_new(AM2Z_QUEUE_NO_WORKERS);
    am2z_state *in = state_of("{}");
    am2z_status st;
    CHECK(rt != NULL);
    if (!rt) return;
    CHECK(am2z_runtime_submit_with(rt, "ten", in, &(am2z_submit_desc){.execution_id = "x"}, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "only for durable") != NULL);
    CHECK(am2z_runtime_submit_with(rt, "ten", in, &(am2z_submit_desc){.durable = 1, .idempotency_key = "k"}, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "idempotency_key") != NULL);
    CHECK(am2z_runtime_submit_with(rt, "ten", in, &(am2z_submit_desc){.durable = 1, .execution_id = "a/b"}, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_runtime_signal(rt, "a/b", "approval", NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_runtime_forget(rt, "never-ran"), AM2Z_STATUS_OK);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

int main(void) {
    snprintf(effects, sizeof effects, "/tmp/am2z-qdur-effects-%ld", (long)getpid());
    snprintf(result, sizeof result, "/tmp/am2z-qdur-result-%ld", (long)getpid());
    T_RUN(start_server);
    if (!port) return t_done();
    T_RUN(test_kill9_every_boundary); /* first: these fork while this process has no threads */
    T_RUN(test_compensation_across_processes);
    T_RUN(test_signals);
    T_RUN(test_hundred_parked);
    T_RUN(test_recorded_outcome_ends_a_recovered_job);
    T_RUN(test_store_failures);
    T_RUN(test_bad_input);
    unlink(effects);
    unlink(result);
    t_redis_stop(&server);
    return t_done();
}
