/* am2z_runtime_metrics_text (am2z.h section 7) on the queue runtime (am2z_resp.h section
   4) against a private redis-server: the queue counts become queue_jobs gauges with
   processor, session and state labels, equal to the stats, and the text passes the
   strict checker of tests/prom_check.h. (test_queue* names run in the Redis
   configurations of tests/run.sh.) `test_queue_metrics --session-work PORT` leaves a
   session's finished jobs in a Redis for tests/test_tools.sh. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "prom_check.h"

static t_redis server;
static int port;

static am2z_result p_ok(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_retain(in));
}
static am2z_result p_bad(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx, (void)in;
    return am2z_fail(am2z_error_business("NOPE", AM2Z_SEVERITY_LOW, "not today"));
}

static void reg(am2z_runtime *rt, const char *name, am2z_processor_fn fn) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
}

static void run(am2z_runtime *rt, const char *proc, const char *session, int times) {
    am2z_state *in = am2z_state_parse("t", "{\"n\":1}", AM2Z_NTS, NULL);
    am2z_outcome out = {0};
    int i;
    for (i = 0; i < times; i++) {
        out = am2z_runtime_execute_in_session(rt, proc, in, session);
        am2z_outcome_clear(&out);
    }
    am2z_value_release(in);
}

#define CHECK_SAMPLE(text, series, want) CHECK_DBL(pc_get(text, series), (double)(want), 1e-9)

static void test_queue_exposition(void) {
    am2z_logger_desc ld;
    am2z_queue_desc d;
    am2z_runtime *rt;
    am2z_value *st = NULL, *ss = NULL;
    char *t = NULL, err[256];
    memset(&ld, 0, sizeof ld);
    ld.sink = AM2Z_SINK_SILENT;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = port;
    d.concurrency = 2;
    d.logger = am2z_logger_new(&ld, NULL);
    rt = am2z_queue_runtime_new(&d, NULL);
    am2z_logger_release(d.logger);
    CHECK(rt != NULL);
    if (!rt) return;
    reg(rt, "ok", p_ok);
    reg(rt, "bad", p_bad);
    run(rt, "ok", NULL, 3);
    run(rt, "bad", NULL, 1);
    run(rt, "ok", "s1", 2);
    run(rt, "bad", "s1", 2);
    CHECK_INT(am2z_runtime_metrics_text(rt, NULL, &t, NULL), AM2Z_STATUS_OK);
    st = am2z_runtime_stats(rt);
    ss = am2z_runtime_session_stats(rt, "s1");
    if (t && !pc_check(t, err, sizeof err)) T_FAIL_("exposition rejected: %s\n%s", err, t);
    if (t && st && ss) {
        CHECK_SAMPLE(t, "am2z_workers", 2);
        CHECK_SAMPLE(t, "am2z_awaiting", 0);
        CHECK_SAMPLE(t, "am2z_registered_processors", 2);
        CHECK_SAMPLE(t, "am2z_runtime_executions_total{outcome=\"completed\"}", am2z_value_get_int(st, "completed", -1));
        CHECK_SAMPLE(t, "am2z_runtime_executions_total{outcome=\"failed\"}", am2z_value_get_int(st, "failed", -1));
        CHECK_SAMPLE(t, "am2z_runtime_executions_total{outcome=\"completed\"}", 5);
        CHECK_SAMPLE(t, "am2z_runtime_executions_total{outcome=\"failed\"}", 3);
        /* the global queues: no session label */
        CHECK_SAMPLE(t, "am2z_queue_jobs{processor=\"ok\",state=\"completed\"}",
                     am2z_value_get_int(st, "processors.ok.completed", -1));
        CHECK_SAMPLE(t, "am2z_queue_jobs{processor=\"ok\",state=\"completed\"}", 3);
        CHECK_SAMPLE(t, "am2z_queue_jobs{processor=\"bad\",state=\"failed\"}", 1);
        CHECK_SAMPLE(t, "am2z_queue_jobs{processor=\"ok\",state=\"waiting\"}", 0);
        CHECK_SAMPLE(t, "am2z_queue_jobs{processor=\"ok\",state=\"delayed\"}", 0);
        /* the session's queues */
        CHECK_SAMPLE(t, "am2z_queue_jobs{session=\"s1\",processor=\"ok\",state=\"completed\"}",
                     am2z_value_get_int(ss, "queues.ok.completed", -1));
        CHECK_SAMPLE(t, "am2z_queue_jobs{session=\"s1\",processor=\"ok\",state=\"completed\"}", 2);
        CHECK_SAMPLE(t, "am2z_queue_jobs{session=\"s1\",processor=\"bad\",state=\"failed\"}", 2);
        CHECK(strstr(t, "# TYPE am2z_queue_jobs gauge\n") != NULL);
        CHECK(strstr(t, "am2z_execution_duration_seconds") == NULL); /* the queue runtime keeps no latencies */
        CHECK(strstr(t, "am2z_queued") == NULL);                     /* a local runtime's family */
    }
    am2z_value_release(st);
    am2z_value_release(ss);
    am2z_free(t);
    am2z_runtime_free(rt);
}

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

/* For tests/test_tools.sh: runs 3 executions of "ok" in session "tenant-7" against the
   redis-server on port and leaves them there (free keeps a session's keys), so top has a
   session row to show. */
static int session_work(int p) {
    am2z_queue_desc d;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = p;
    d.concurrency = 1;
    if (!(rt = am2z_queue_runtime_new(&d, NULL))) return 1;
    reg(rt, "ok", p_ok);
    run(rt, "ok", "tenant-7", 3);
    am2z_runtime_free(rt);
    return t_failed || t_case_failed;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--session-work") == 0) return session_work(atoi(argv[2]));
    T_RUN(start_server);
    if (!port) return t_done();
    T_RUN(test_queue_exposition);
    t_redis_stop(&server);
    return t_done();
}
