/* test_queue_idem.c - idempotency keys and per-call delays on the queue runtime against a
   private redis-server: one run per key across processes (3 processes x 50 threads), a
   finished key answered from Redis by another instance, expiry, failures remembered or
   not, and delayed jobs in BullMQ's delayed set. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include <pthread.h>
#include <fcntl.h>
#include <sys/stat.h>
#include "fixture.h"

static int port;
static t_redis server;
static char runs_path[256]; /* a file that gets one byte per processor run (any process) */

static long runs(void) {
    struct stat sb;
    return stat(runs_path, &sb) == 0 ? (long)sb.st_size : -1;
}

static void msleep(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* Counts its run in the file (O_APPEND: atomic across processes); sleeps "sleep" ms;
   fails when "fail" is set; answers {"run": runs so far, "pid", "at": its start, epoch ms}. */
static am2z_result p_once(am2z_ctx *ctx, const am2z_state *in) {
    int fd = open(runs_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
    int64_t i, sleep = am2z_value_get_int(in, "sleep", 0);
    long n;
    if (fd >= 0) {
        if (write(fd, "x", 1) != 1) { /* counted as no run: the test fails */ }
        close(fd);
    }
    n = runs();
    for (i = 0; i < sleep && !am2z_ctx_cancelled(ctx); i += 5) msleep(5);
    if (am2z_value_get_bool(in, "fail", 0))
        return am2z_fail(am2z_error_business("NOPE", AM2Z_SEVERITY_LOW, "run %ld failed", n));
    return am2z_ok(am2z_value_set(am2z_value_set(am2z_value_set(am2z_value_retain(in), "run", am2z_value_int(n)), "pid",
                                                 am2z_value_int((int64_t)getpid())), "at", am2z_value_int(am2z_now_ms())));
}

/* concurrency 0: a caller only (no workers), which cannot run the job itself. */
static am2z_runtime *rt_new(int concurrency) {
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d;
    am2z_processor_desc pd;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = port;
    d.concurrency = concurrency ? concurrency : AM2Z_QUEUE_NO_WORKERS;
    d.lock_duration_ms = 5000;
    d.stalled_interval_ms = 2000;
    d.logger = lg;
    rt = am2z_queue_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    if (!rt) return NULL;
    memset(&pd, 0, sizeof pd);
    pd.name = "once";
    pd.fn = p_once;
    pd.timeout_ms = 20000;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)), AM2Z_STATUS_OK);
    return rt;
}

static void reset(void) {
    fx_flushall(port);
    unlink(runs_path);
}

/* "<execution id>|<error message or ->|<state JSON>": what must be identical. */
static void outcome_line(const am2z_outcome *o, char *buf, size_t size) {
    size_t n = 0;
    char *js = o->state ? am2z_json_write(o->state, AM2Z_JSON_COMPACT, &n) : NULL;
    snprintf(buf, size, "%s|%s|%s", o->execution_id, o->error ? o->error->message : "-", js ? js : "null");
    am2z_free(js);
}

static am2z_submit_desc keyed(const char *key) {
    am2z_submit_desc d;
    memset(&d, 0, sizeof d);
    d.idempotency_key = key;
    return d;
}

/* ---- 50 threads x 3 processes, one key ---- */

typedef struct {
    am2z_runtime *rt;
    char line[1024];
} caller;

static void *call_key(void *arg) {
    caller *c = (caller *)arg;
    am2z_state *in = am2z_state_parse("t", "{\"sleep\":400}", AM2Z_NTS, NULL);
    am2z_submit_desc d = keyed("order-1");
    am2z_outcome out = am2z_runtime_execute_with(c->rt, "once", in, &d);
    outcome_line(&out, c->line, sizeof c->line);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    return NULL;
}

/* A child process: a runtime with 2 workers; waits for "go" (EOF on fd go), runs 50
   threads with the one key, writes their 50 outcome lines to fd out. */
static int child(int go, int ready, int out) {
    am2z_runtime *rt = rt_new(2);
    caller c[50];
    pthread_t th[50];
    char b;
    int i;
    if (!rt) return 3;
    if (write(ready, "r", 1) != 1) return 4;
    while (read(go, &b, 1) > 0) {}
    for (i = 0; i < 50; i++) {
        c[i].rt = rt;
        c[i].line[0] = 0;
        if (pthread_create(&th[i], NULL, call_key, &c[i]) != 0) return 5;
    }
    for (i = 0; i < 50; i++) pthread_join(th[i], NULL);
    for (i = 0; i < 50; i++) {
        size_t n = strlen(c[i].line);
        c[i].line[n] = '\n';
        if (write(out, c[i].line, n + 1) != (ssize_t)(n + 1)) return 6;
    }
    am2z_runtime_free(rt);
    return 0;
}

static void test_three_processes_one_run(void) {
    int go[2], ready[2], out[2], i, got = 0, status;
    pid_t pids[3];
    char buf[200000], *line, *save = NULL, first[1024] = "";
    size_t len = 0;
    ssize_t k;
    reset();
    CHECK_INT(pipe(go), 0);
    CHECK_INT(pipe(ready), 0);
    CHECK_INT(pipe(out), 0);
    for (i = 0; i < 3; i++) {
        pids[i] = fork(); /* this process has no threads yet: fork is safe */
        if (pids[i] == 0) {
            close(go[1]);
            close(ready[0]);
            close(out[0]);
            _exit(child(go[0], ready[1], out[1]));
        }
    }
    close(go[0]);
    close(ready[1]);
    close(out[1]);
    for (i = 0; i < 3; i++) {
        char b;
        if (read(ready[0], &b, 1) != 1) break;
    }
    close(go[1]); /* all three go at once */
    while (len < sizeof buf - 1 && (k = read(out[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)k;
    buf[len] = 0;
    close(out[0]);
    close(ready[0]);
    for (i = 0; i < 3; i++) {
        CHECK(waitpid(pids[i], &status, 0) == pids[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!got) snprintf(first, sizeof first, "%s", line);
        CHECK_STR(line, first);
        got++;
    }
    CHECK_INT(got, 150);
    CHECK_INT(runs(), 1);
    CHECK(strstr(first, "|-|") != NULL); /* a success */
    CHECK(strstr(first, "-i-") != NULL); /* the id derived from the key */
}

/* ---- one process, two instances (what two processes see), Redis as the record ---- */

static int64_t exec_key(am2z_runtime *rt, const char *key, const char *json, int64_t keep_ms, int forget,
                        char line[1024]) {
    am2z_state *in = am2z_state_parse("t", json, AM2Z_NTS, NULL);
    am2z_submit_desc d = keyed(key);
    am2z_outcome out;
    int64_t n;
    d.keep_ms = keep_ms;
    d.forget_failures = forget;
    out = am2z_runtime_execute_with(rt, "once", in, &d);
    n = out.error ? -1 : am2z_value_get_int(out.state, "run", -2);
    if (line) outcome_line(&out, line, 1024);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    return n;
}

/* A finished key is answered from Redis to another instance (no run), until keep_ms;
   then it runs again. Failures: remembered by default, run again with forget_failures. */
static void test_finished_key_across_instances(void) {
    am2z_runtime *a, *b;
    char la[1024], lb[1024];
    reset();
    a = rt_new(1);
    b = rt_new(0);
    if (!a || !b) {
        CHECK(0);
        am2z_runtime_free(a);
        am2z_runtime_free(b);
        return;
    }
    CHECK_INT(exec_key(a, "k", "{}", 1500, 0, la), 1);
    CHECK_INT(exec_key(b, "k", "{}", 1500, 0, lb), 1);
    CHECK_STR(lb, la);
    CHECK_INT(runs(), 1);
    msleep(1700);
    CHECK_INT(exec_key(b, "k", "{}", 1500, 0, lb), 2); /* expired: runs again */
    CHECK_INT(exec_key(b, "other", "{}", 0, 0, NULL), 3);
    /* failures */
    CHECK_INT(exec_key(a, "f", "{\"fail\":true}", 0, 0, la), -1);
    CHECK_INT(exec_key(b, "f", "{\"fail\":true}", 0, 0, lb), -1);
    *strrchr(la, '|') = *strrchr(lb, '|') = 0; /* a failure's state is each caller's input */
    CHECK_STR(lb, la);
    CHECK_INT(runs(), 4);
    CHECK_INT(exec_key(a, "g", "{\"fail\":true}", 0, 1, la), -1);
    CHECK_INT(exec_key(b, "g", "{\"fail\":true}", 0, 1, lb), -1);
    CHECK(strcmp(la, lb) != 0);
    CHECK_INT(runs(), 6);
    am2z_runtime_free(b);
    am2z_runtime_free(a);
}

/* A running key joined by another instance: both get the one outcome. */
static void test_join_running_across_instances(void) {
    am2z_runtime *a, *b;
    am2z_state *in;
    am2z_submit_desc d = keyed("slow");
    am2z_execution *ea, *eb;
    am2z_outcome oa, ob;
    char la[1024], lb[1024];
    reset();
    a = rt_new(1);
    b = rt_new(0);
    in = am2z_state_parse("t", "{\"sleep\":500}", AM2Z_NTS, NULL);
    ea = am2z_runtime_submit_with(a, "once", in, &d, NULL);
    msleep(100);
    eb = am2z_runtime_submit_with(b, "once", in, &d, NULL);
    CHECK(ea && eb);
    memset(&oa, 0, sizeof oa);
    memset(&ob, 0, sizeof ob);
    if (ea && eb) {
        CHECK_INT(am2z_execution_wait(eb, 10000, &ob), AM2Z_STATUS_OK);
        CHECK_INT(am2z_execution_wait(ea, 10000, &oa), AM2Z_STATUS_OK);
        outcome_line(&oa, la, sizeof la);
        outcome_line(&ob, lb, sizeof lb);
        CHECK_STR(lb, la);
        CHECK(oa.error == NULL);
    }
    CHECK_INT(runs(), 1);
    am2z_outcome_clear(&oa);
    am2z_outcome_clear(&ob);
    am2z_execution_free(ea);
    am2z_execution_free(eb);
    am2z_value_release(in);
    am2z_runtime_free(b);
    am2z_runtime_free(a);
}

/* ---- delays: BullMQ's delayed set, so Bull Board shows the job ---- */

static void test_delayed_job(void) {
    am2z_runtime *rt;
    am2z_redis *r;
    am2z_state *in = am2z_state_parse("t", "{}", AM2Z_NTS, NULL);
    am2z_submit_desc d;
    am2z_execution *e;
    am2z_outcome out;
    am2z_reply rep;
    int64_t t0;
    int i;
    reset();
    rt = rt_new(1);
    r = fx_conn(port);
    CHECK(rt && r);
    if (!rt || !r) {
        am2z_runtime_free(rt);
        am2z_redis_free(r);
        am2z_value_release(in);
        return;
    }
    for (i = 0; i < 2; i++) {
        memset(&d, 0, sizeof d);
        t0 = am2z_now_ms();
        if (i == 0) d.delay_ms = 1500;
        else d.run_at_ms = t0 + 1500;
        e = am2z_runtime_submit_with(rt, "once", in, &d, NULL);
        CHECK(e != NULL);
        if (!e) break;
        memset(&rep, 0, sizeof rep);
        CHECK_INT(am2z_redis_command(r, &rep, "ZSCORE bull:am2z~once:delayed %s", am2z_execution_id(e)), AM2Z_STATUS_OK);
        CHECK(rep.type == AM2Z_REPLY_BULK || rep.type == AM2Z_REPLY_DOUBLE);
        if (rep.type == AM2Z_REPLY_BULK) { /* score = due ms x 4096 (BullMQ) */
            double due = atof(am2z_reply_str(&rep)) / 4096.0;
            CHECK(due >= (double)(t0 + 1490) && due <= (double)(t0 + 1600));
        }
        am2z_reply_clear(&rep);
        memset(&out, 0, sizeof out);
        CHECK_INT(am2z_execution_wait(e, 20000, &out), AM2Z_STATUS_OK);
        CHECK(out.error == NULL);
        CHECK(am2z_value_get_int(out.state, "at", 0) >= t0 + 1490); /* the run, not before its time */
        CHECK(am2z_value_get_int(out.state, "at", 0) < t0 + 10000);
        am2z_outcome_clear(&out);
        am2z_execution_free(e);
    }
    CHECK_INT(runs(), 2);
    am2z_redis_free(r);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_bad_input(void) {
    am2z_runtime *rt = rt_new(0);
    am2z_state *in = am2z_state_parse("t", "{}", AM2Z_NTS, NULL);
    am2z_submit_desc d;
    am2z_status status = AM2Z_STATUS_OK;
    memset(&d, 0, sizeof d);
    d.delay_ms = -1;
    CHECK(am2z_runtime_submit_with(rt, "once", in, &d, &status) == NULL);
    CHECK_INT(status, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "delay_ms") != NULL);
    d = keyed("");
    CHECK(am2z_runtime_submit_with(rt, "once", in, &d, &status) == NULL);
    CHECK_INT(status, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "idempotency_key") != NULL);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

int main(void) {
    snprintf(runs_path, sizeof runs_path, "/tmp/am2z-test-idem-runs-%ld", (long)getpid());
    T_RUN(start_server);
    if (!port) return t_done();
    T_RUN(test_three_processes_one_run); /* first: forks before this process has threads */
    T_RUN(test_finished_key_across_instances);
    T_RUN(test_join_running_across_instances);
    T_RUN(test_delayed_job);
    T_RUN(test_bad_input);
    unlink(runs_path);
    t_redis_stop(&server);
    return t_done();
}
