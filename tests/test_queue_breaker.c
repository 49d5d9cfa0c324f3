/* test_queue_breaker.c - circuit breakers on the queue runtime against a private
   redis-server: the breaker is a hash in Redis shared by every process, so failures in
   one process open it for another (a child process spawned from this binary), whose
   attempts then fail fast without calling its processor, and whose probe closes it; a
   failed probe reopens it; an open breaker does not spend the retry policy's attempts;
   the job of a failed fast attempt is a failed BullMQ job. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "proc.h"
#include "fixture.h"

static int port;
static t_redis server;

static am2z_runtime *rt_new(am2z_logger *lg) {
    am2z_queue_desc d;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = port;
    d.concurrency = 2;
    d.logger = lg;
    return am2z_queue_runtime_new(&d, NULL);
}
/* HGET key field into buf ("" when absent). */
static const char *hget(const char *key, const char *field, char *buf, size_t size) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    buf[0] = 0;
    if (r && am2z_redis_command(r, &rep, "HGET %s %s", key, field) == AM2Z_STATUS_OK && (rep.type == AM2Z_REPLY_BULK || rep.type == AM2Z_REPLY_STRING))
        snprintf(buf, size, "%s", am2z_reply_str(&rep));
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return buf;
}
#define BREAKER_KEY "bull:am2z~dep:am2z:breaker"

/* The processor: mode 0 succeeds, 1 fails with a retryable NetworkError. */
static int g_mode, g_calls;
static am2z_result dep(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    __atomic_add_fetch(&g_calls, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&g_mode, __ATOMIC_SEQ_CST)) return am2z_fail(am2z_error_network("api.example:443", 503, NULL));
    return am2z_ok(am2z_value_retain(in));
}
static am2z_processor *dep_proc(int threshold, int64_t open_ms, int max_attempts) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = "dep";
    d.fn = dep;
    d.timeout_ms = 5000;
    d.retry.max_attempts = max_attempts;
    d.retry.delay_ms = 10;
    d.breaker.failure_threshold = threshold;
    d.breaker.window_ms = 60000;
    d.breaker.open_ms = open_ms;
    return am2z_processor_new(&d, NULL);
}

typedef struct evlog { int opened, half, closed, last_probe; } evlog;
static void on_breaker(const char *event, const am2z_value *data, void *ud) {
    evlog *l = (evlog *)ud;
    if (strcmp(event, "processor:breaker:opened") == 0) {
        l->last_probe = (int)am2z_value_get_int(data, "probe", -1);
        __atomic_add_fetch(&l->opened, 1, __ATOMIC_SEQ_CST);
    } else if (strcmp(event, "processor:breaker:half-open") == 0) {
        __atomic_add_fetch(&l->half, 1, __ATOMIC_SEQ_CST);
    } else if (strcmp(event, "processor:breaker:closed") == 0) {
        __atomic_add_fetch(&l->closed, 1, __ATOMIC_SEQ_CST);
    }
}

/* One execute of dep: the error kind (NONE: success); *out_err gets a reference to the
   error when asked. */
static am2z_error_kind run(am2z_runtime *rt, int *attempts, am2z_error **out_err, char *exec_id) {
    am2z_state *in = am2z_state_parse("s", "{\"n\":1}", AM2Z_NTS, NULL);
    am2z_outcome out = am2z_runtime_execute(rt, "dep", in);
    am2z_error_kind k = out.error ? out.error->kind : AM2Z_ERROR_NONE;
    if (attempts) *attempts = out.attempts;
    if (out_err) *out_err = am2z_error_retain(out.error);
    if (exec_id) memcpy(exec_id, out.execution_id, AM2Z_EXECUTION_ID_SIZE);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    return k;
}

/* The child (process B): the breaker process A opened is open here too; its attempts
   fail fast without calling dep; once the open time is over (A ends it early: it moves
   the breaker's end to now and sets test:go, rather than both waiting 8 s), its probe
   succeeds and closes it. Prints "open <fail-fast count> calls <calls>", then
   "probe <kind> calls <calls> half <n> closed <n>". */
static int child(int child_port) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt;
    am2z_error *e = NULL;
    evlog l;
    int i, fast = 0;
    int64_t until = am2z_now_ms() + 20000;
    char go[8];
    port = child_port;
    memset(&l, 0, sizeof l);
    rt = rt_new(lg);
    if (!rt || am2z_runtime_register(rt, dep_proc(3, 8000, 1)) != AM2Z_STATUS_OK) return 2;
    am2z_runtime_on(rt, "*", on_breaker, &l);
    for (i = 0; i < 5; i++) {
        if (run(rt, NULL, &e, NULL) == AM2Z_ERROR_CIRCUIT_OPEN && am2z_value_get_int(e->details, "retryAt", 0) > 0)
            fast++;
        am2z_error_release(e);
        e = NULL;
    }
    printf("open %d calls %d\n", fast, __atomic_load_n(&g_calls, __ATOMIC_SEQ_CST));
    fflush(stdout);
    while (!hget("test:go", "go", go, sizeof go)[0] && am2z_now_ms() < until) t_redis_sleep_ms(5);
    i = (int)run(rt, NULL, NULL, NULL);
    printf("probe %d calls %d half %d closed %d\n", i, __atomic_load_n(&g_calls, __ATOMIC_SEQ_CST), l.half, l.closed);
    fflush(stdout);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
    return 0;
}

static void test_shared_across_processes(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(lg);
    evlog l;
    tp_proc proc;
    char self[512], port_s[16], line[256], buf[512], key[256], id[AM2Z_EXECUTION_ID_SIZE];
    char *argv[4];
    ssize_t n;
    int i, att = 0;
    memset(&l, 0, sizeof l);
    g_calls = 0;
    g_mode = 1;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); return; }
    CHECK_INT(am2z_runtime_register(rt, dep_proc(3, 8000, 1)), AM2Z_STATUS_OK);
    am2z_runtime_on(rt, "*", on_breaker, &l);
    /* process A: three failures open the breaker, in Redis */
    for (i = 0; i < 3; i++) CHECK_INT(run(rt, NULL, NULL, NULL), AM2Z_ERROR_NETWORK);
    CHECK_INT(g_calls, 3);
    CHECK_INT(l.opened, 1);
    CHECK_STR(hget(BREAKER_KEY, "state", buf, sizeof buf), "open");
    /* fails fast in A too; its job is a failed BullMQ job saying why */
    CHECK_INT(run(rt, &att, NULL, id), AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK_INT(att, 1);
    CHECK_INT(g_calls, 3);
    snprintf(key, sizeof key, "bull:am2z~dep:%s", id);
    CHECK(strncmp(hget(key, "failedReason", buf, sizeof buf), "CircuitOpenError: ", 18) == 0);
    am2z_runtime_free(rt); /* from now on only process B runs dep */
    am2z_logger_release(lg);
    /* process B observes it */
    n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0);
    if (n <= 0) return;
    self[n] = 0;
    snprintf(port_s, sizeof port_s, "%d", port);
    argv[0] = self; argv[1] = (char *)"--child"; argv[2] = port_s; argv[3] = NULL;
    CHECK_INT(tp_spawn(&proc, argv, NULL, 1), 0);
    CHECK_INT(tp_readline(&proc, line, sizeof line, 30000), 1);
    CHECK_STR(line, "open 5 calls 0");
    {   /* the open time ends now (the breaker's "until"), and B goes on */
        am2z_redis *r = fx_conn(port);
        am2z_reply rep;
        memset(&rep, 0, sizeof rep);
        CHECK(r && am2z_redis_command(r, &rep, "HSET %s until %lld", BREAKER_KEY, (long long)am2z_now_ms()) ==
                       AM2Z_STATUS_OK);
        am2z_reply_clear(&rep);
        CHECK(r && am2z_redis_command(r, &rep, "HSET test:go go 1") == AM2Z_STATUS_OK);
        am2z_reply_clear(&rep);
        am2z_redis_free(r);
    }
    CHECK_INT(tp_readline(&proc, line, sizeof line, 30000), 1);
    CHECK_STR(line, "probe 0 calls 1 half 1 closed 1");
    CHECK_INT(tp_wait(&proc, 20000), 0);
    tp_stop(&proc, SIGKILL, 1000);
    CHECK_STR(hget(BREAKER_KEY, "state", buf, sizeof buf), "closed");
}

/* A failed probe reopens it; meanwhile nothing reaches the processor. */
static void test_probe_failure_reopens(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(lg);
    am2z_error *e = NULL;
    char buf[64];
    evlog l;
    memset(&l, 0, sizeof l);
    g_calls = 0;
    g_mode = 1;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); return; }
    CHECK_INT(am2z_runtime_register(rt, dep_proc(2, 600, 1)), AM2Z_STATUS_OK); /* 3 runs take a few ms of it */
    am2z_runtime_on(rt, "*", on_breaker, &l);
    CHECK_INT(run(rt, NULL, NULL, NULL), AM2Z_ERROR_NETWORK);
    CHECK_INT(run(rt, NULL, NULL, NULL), AM2Z_ERROR_NETWORK);
    CHECK_INT(l.opened, 1);
    CHECK_INT(run(rt, NULL, &e, NULL), AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK(e && am2z_value_get_int(e->details, "retryAfterMs", -1) > 0);
    am2z_error_release(e);
    t_redis_sleep_ms(700);
    CHECK_INT(run(rt, NULL, NULL, NULL), AM2Z_ERROR_NETWORK); /* the probe ran and failed */
    CHECK_INT(g_calls, 3);
    CHECK_INT(l.half, 1);
    CHECK_INT(l.opened, 2);
    CHECK_INT(l.last_probe, 1);
    CHECK_STR(hget(BREAKER_KEY, "state", buf, sizeof buf), "open");
    g_mode = 0;
    CHECK_INT(run(rt, NULL, NULL, NULL), AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK_INT(g_calls, 3);
    CHECK_INT(l.closed, 0);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

/* The retry policy's attempts are not spent on an open breaker: 2 attempts of 5. */
static void test_retries_not_spent(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(lg);
    int att = 0;
    g_calls = 0;
    g_mode = 1;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); return; }
    CHECK_INT(am2z_runtime_register(rt, dep_proc(1, 10000, 5)), AM2Z_STATUS_OK);
    CHECK_INT(run(rt, &att, NULL, NULL), AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK_INT(att, 2);
    CHECK_INT(g_calls, 1);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

#define RUN(fn) do { fx_flushall(port); T_RUN(fn); } while (0)

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--child") == 0) return child(atoi(argv[2]));
    T_RUN(start_server);
    if (!port) return t_done();
    RUN(test_shared_across_processes);
    RUN(test_probe_failure_reopens);
    RUN(test_retries_not_spent);
    t_redis_stop(&server);
    return t_done();
}
