/* Traces (am2z.h section 7f) on the queue runtime (am2z_resp.h, TRACES in 4.3): an
   execution submitted by a caller-only process runs as jobs on a worker in another
   process (this program run with --worker), and its outcome holds every step's span,
   collected by execution id from Redis, with the tree, retry and merge conflict intact
   and the worker's instance id on each span; a second runtime instance in this process
   (runtime-wide option) the same. (test_queue* names run in the Redis configurations of
   tests/run.sh.) */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "proc.h"

static t_redis server;
static int port;

static am2z_result work(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, am2z_ctx_meta(ctx)->processor, am2z_value_bool(1));
    am2z_edit_set(&e, "source", am2z_value_string(am2z_ctx_meta(ctx)->processor)); /* conflicts in a parallel */
    return am2z_edit_end(&e);
}

static am2z_result charge(am2z_ctx *ctx, const am2z_state *in) {
    if (am2z_ctx_meta(ctx)->attempt == 1)
        return am2z_fail(am2z_error_with_retryable(am2z_error_business("DECLINED", AM2Z_SEVERITY_LOW, "declined"), 1));
    return work(ctx, in);
}

static am2z_processor *W(const char *name) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = work}, NULL);
}

/* order = chain [validate, enrich = parallel [price, stock], charge (one retry after
   5 ms), ship], as in tests/test_trace.c. */
static am2z_status register_order(am2z_runtime *rt) {
    am2z_processor *branches[2], *steps[4];
    branches[0] = W("price");
    branches[1] = W("stock");
    steps[0] = W("validate");
    steps[1] = am2z_parallel_new(&(am2z_parallel_desc){.name = "enrich", .branches = branches, .count = 2}, NULL);
    steps[2] = am2z_processor_new(&(am2z_processor_desc){.name = "charge", .fn = charge,
        .retry = {.max_attempts = 3, .backoff = AM2Z_BACKOFF_FIXED, .delay_ms = 5}}, NULL);
    steps[3] = W("ship");
    return am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){.name = "order", .steps = steps, .count = 4},
                                                    NULL));
}

static am2z_runtime *rt_new(int concurrency, int trace) {
    am2z_logger *lg = am2z_logger_new(&(am2z_logger_desc){.sink = AM2Z_SINK_SILENT}, NULL);
    am2z_queue_desc d;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = port;
    d.concurrency = concurrency;
    d.logger = lg;
    d.trace = trace;
    rt = am2z_queue_runtime_new(&d, NULL);
    am2z_logger_release(lg);
    return rt;
}

/* --worker PORT: serves the order workflow until killed; prints "ready <instance>". */
static int worker_main(int worker_port) {
    am2z_runtime *rt;
    port = worker_port;
    rt = rt_new(2, 0);
    if (!rt || register_order(rt) != AM2Z_STATUS_OK) return 2;
    printf("ready %s\n", am2z_queue_instance_id(rt));
    fflush(stdout);
    t_redis_sleep_ms(120000);
    am2z_runtime_free(rt);
    return 0;
}

static const struct {
    const char *processor, *parent;
    int attempt, ok, depth;
} g_want[] = {
    {"order", NULL, 1, 1, 0},     {"validate", "order", 1, 1, 1}, {"enrich", "order", 1, 1, 1},
    {"price", "enrich", 1, 1, 2}, {"stock", "enrich", 1, 1, 2},   {"charge", "order", 1, 0, 1},
    {"charge", "order", 2, 1, 1}, {"ship", "order", 1, 1, 1},
};
#define NWANT (sizeof g_want / sizeof g_want[0])

static am2z_trace_span span(const am2z_trace *t, size_t i) {
    am2z_trace_span s;
    memset(&s, 0, sizeof s);
    CHECK_INT(am2z_trace_span_at(t, i, &s), AM2Z_STATUS_OK);
    return s;
}

/* Every step once, under the right parent, with its worker; children within their
   parent's time (one clock: all on this machine). */
static void check_tree(const am2z_trace *t, const char *exec_id, const char *session, const char *worker) {
    size_t i, k;
    int seen[NWANT];
    memset(seen, 0, sizeof seen);
    CHECK_INT(am2z_trace_count(t), NWANT);
    for (i = 0; i < am2z_trace_count(t); i++) {
        am2z_trace_span s = span(t, i), p;
        for (k = 0; k < NWANT; k++)
            if (!strcmp(g_want[k].processor, s.processor) && g_want[k].attempt == s.attempt) break;
        if (k == NWANT) {
            T_FAIL_("unexpected span %s #%d", s.processor, s.attempt);
            continue;
        }
        seen[k]++;
        CHECK_INT(s.call_depth, g_want[k].depth);
        CHECK_STR(s.session_id, session);
        CHECK_STR(s.worker, worker);
        CHECK(s.end_ns >= s.start_ns && s.start_ns > 0);
        CHECK_INT(s.status, g_want[k].ok ? AM2Z_TRACE_OK : AM2Z_TRACE_FAILED);
        if (!g_want[k].ok) CHECK_STR(s.error_kind, "BusinessError");
        CHECK_INT(s.retry_delay_ms, g_want[k].ok ? -1 : 5);
        CHECK_INT(s.merge_conflicts, !strcmp(s.processor, "enrich") ? 1 : 0);
        if (!g_want[k].parent) {
            CHECK_INT(s.parent, 0);
            CHECK_STR(s.execution_id, exec_id);
            continue;
        }
        CHECK(s.parent >= 1 && s.parent <= am2z_trace_count(t));
        p = span(t, s.parent - 1);
        CHECK_STR(p.processor, g_want[k].parent);
        CHECK(s.start_ns >= p.start_ns && s.end_ns <= p.end_ns);
    }
    for (k = 0; k < NWANT; k++) CHECK_INT(seen[k], 1);
}

static long trace_keys(void) {
    am2z_redis *r = am2z_redis_new(&(am2z_redis_desc){.host = "127.0.0.1", .port = port}, NULL);
    am2z_reply rep = {0};
    long n = -1;
    if (r && am2z_redis_connect(r) == AM2Z_STATUS_OK &&
        am2z_redis_command(r, &rep, "KEYS %s", "bull:am2z:trace:*") == AM2Z_STATUS_OK)
        n = (long)rep.len;
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return n;
}

/* The steps run in another process: a caller without workers gets the whole tree. */
static void test_across_processes(void) {
    tp_proc child;
    char self[512], port_s[16], line[256], *text = NULL;
    char *argv[4];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    am2z_runtime *rt = NULL;
    am2z_state *in = am2z_state_parse("t", "{}", AM2Z_NTS, NULL);
    am2z_outcome out = {0};
    CHECK(n > 0);
    if (n <= 0) return;
    self[n] = 0;
    snprintf(port_s, sizeof port_s, "%d", port);
    argv[0] = self; argv[1] = (char *)"--worker"; argv[2] = port_s; argv[3] = NULL;
    CHECK_INT(tp_spawn(&child, argv, NULL, 1), 0);
    CHECK_INT(tp_readline(&child, line, sizeof line, 20000), 1);
    CHECK(strncmp(line, "ready ", 6) == 0);
    rt = rt_new(AM2Z_QUEUE_NO_WORKERS, 0);
    CHECK(rt != NULL);
    if (rt) CHECK_INT(am2z_queue_declare(rt, "order", NULL), AM2Z_STATUS_OK);
    if (rt) out = am2z_runtime_execute_with(rt, "order", in, &(am2z_submit_desc){.session_id = "tq", .trace = 1});
    CHECK(out.error == NULL);
    CHECK(out.trace != NULL);
    if (out.trace) {
        check_tree(out.trace, out.execution_id, "tq", line + 6);
        CHECK_INT(am2z_trace_ascii(out.trace, 0, &text, NULL), AM2Z_STATUS_OK);
        CHECK(text && strstr(text, "\n    price ") && strstr(text, "retry +5 ms"));
        CHECK(text && strstr(text, line + 6)); /* "@<instance>" on the remote steps */
        am2z_free(text);
        CHECK_INT(am2z_trace_chrome(out.trace, &text, NULL), AM2Z_STATUS_OK);
        CHECK(text && strstr(text, "\"pid\":2") && strstr(text, line + 6));
        am2z_free(text);
    }
    am2z_outcome_clear(&out);
    CHECK_INT(trace_keys(), 0); /* collected and deleted */
    /* untraced: no trace, no key */
    if (rt) out = am2z_runtime_execute(rt, "order", in);
    CHECK(out.error == NULL && out.trace == NULL);
    am2z_outcome_clear(&out);
    CHECK_INT(trace_keys(), 0);
    am2z_runtime_free(rt);
    tp_stop(&child, SIGKILL, 1000);
    am2z_value_release(in);
}

/* The runtime-wide option on a runtime whose own workers run every step: spans say
   worker "" (this process); submitted handles give the trace too. */
static void test_runtime_option_in_process(void) {
    am2z_runtime *rt = rt_new(2, 1);
    am2z_state *in = am2z_state_parse("t", "{}", AM2Z_NTS, NULL);
    am2z_outcome out = {0};
    am2z_execution *e;
    CHECK(rt != NULL);
    if (!rt) return;
    CHECK_INT(register_order(rt), AM2Z_STATUS_OK);
    e = am2z_runtime_submit(rt, "order", in, NULL, NULL);
    CHECK(e != NULL);
    if (e) CHECK_INT(am2z_execution_wait(e, 20000, &out), AM2Z_STATUS_OK);
    am2z_execution_free(e);
    CHECK(out.error == NULL && out.trace != NULL);
    if (out.trace) check_tree(out.trace, out.execution_id, "default", "");
    am2z_outcome_clear(&out);
    CHECK_INT(trace_keys(), 0);
    am2z_runtime_free(rt);
    am2z_value_release(in);
}

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--worker") == 0) return worker_main(atoi(argv[2]));
    T_RUN(start_server);
    if (!port) return t_done();
    T_RUN(test_across_processes);
    T_RUN(test_runtime_option_in_process);
    t_redis_stop(&server);
    return t_done();
}
