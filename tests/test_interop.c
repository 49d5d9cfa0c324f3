/* test_interop.c - the queue runtime against the real BullMQ (npm bullmq 6.7.0 + ioredis,
   driven through tests/interop/peer.js) on a private redis-server:
     a. a job added by Node's Queue.add runs on an am2z worker, and Node's
        job.waitUntilFinished() returns the am2z result (and a failure's reason);
     b. a job submitted by am2z runs on a Node Worker, and the am2z caller gets its result;
     c. Node's Queue.getJobCounts() agrees with am2z_runtime_stats() for every state;
   and Node's Queue.pause() keeps am2z workers off a queue until Queue.resume().
   The Node peer is installed once into a cache by tests/interop/setup.sh. Without node,
   npm or redis-server the cases say so and count as skipped (under CI=true they fail). */
#include "proc.h"
#include "t.h"
#include "../am2z_resp.h"
#include "fixture.h"

static int g_port;                 /* redis-server of this run, 0 when unavailable */
static char g_node_path[1024];     /* NODE_PATH entry for the peer, "" when unavailable */
static char g_port_s[16];

static int in_ci(void) {
    const char *ci = getenv("CI");
    return ci && strcmp(ci, "true") == 0;
}

/* The case is skipped (or failed under CI) when the environment lacks a piece. */
#define NEED_PEER() do { \
        if (!g_port || !g_node_path[0]) { \
            if (in_ci()) { CHECK(g_port && g_node_path[0]); return; } \
            T_SKIP("%s", !g_port ? "redis-server not available" : "node/npm not available"); \
        } } while (0)

static am2z_logger *g_quiet; /* warnings and errors only: keeps the test log readable */

static am2z_runtime *new_runtime(int concurrency) {
    am2z_queue_desc d;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = g_port;
    d.concurrency = concurrency;
    d.foreign_poll_ms = 20; /* jobs finished by Node are seen by polling their hash */
    d.logger = g_quiet;
    return am2z_queue_runtime_new(&d, NULL);
}

/* Registers a plain processor; 1 on success. */
static int add_processor(am2z_runtime *rt, const char *name, am2z_processor_fn fn,
                         const am2z_queue_config *queue) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    if (queue) d.queue = *queue;
    return am2z_runtime_register(rt, am2z_processor_new(&d, NULL)) == AM2Z_STATUS_OK; /* NULL fails too */
}

/* Starts `node peer.js args...`; 1 on success. */
static int peer_start(tp_proc *p, const char *const *args) {
    char *argv[16];
    char env_path[1100];
    const char *env[2];
    size_t n = 0;
    argv[n++] = (char *)"node";
    argv[n++] = (char *)"tests/interop/peer.js";
    while (*args && n < 15) argv[n++] = (char *)*args++;
    argv[n] = NULL;
    snprintf(env_path, sizeof env_path, "NODE_PATH=%s", g_node_path);
    env[0] = env_path;
    env[1] = NULL;
    return tp_spawn(p, argv, env, 1) == 0;
}

/* The next line of the peer parsed as JSON (NULL on timeout, end, or bad JSON). The line
   "ready" is returned as the JSON string "ready". */
static am2z_value *peer_json(tp_proc *p, long timeout_ms) {
    char line[16384];
    if (tp_readline(p, line, sizeof line, timeout_ms) != 1) return NULL;
    if (strcmp(line, "ready") == 0) return am2z_value_string("ready");
    return am2z_json_parse(line, AM2Z_NTS, NULL, NULL);
}

/* Waits for the peer to leave by itself; its exit code (killed after 10 s: non-zero). */
static int peer_finish(tp_proc *p) {
    int code = tp_wait(p, 10000);
    tp_stop(p, SIGKILL, 1000);
    return code;
}

static int peer_ready(tp_proc *p) {
    am2z_value *v = peer_json(p, 15000);
    const char *s = am2z_value_as_string(v, NULL);
    int ok = s && strcmp(s, "ready") == 0;
    am2z_value_release(v);
    return ok;
}

/* Runs a peer command to completion and returns its last JSON line. */
static am2z_value *peer_run(const char *const *args) {
    tp_proc p;
    am2z_value *last = NULL, *v;
    if (!peer_start(&p, args)) return NULL;
    while ((v = peer_json(&p, 15000)) != NULL) {
        am2z_value_release(last);
        last = v;
    }
    if (peer_finish(&p) != 0) {
        am2z_value_release(last);
        return NULL;
    }
    return last;
}

/* The count of `field` for queue q in am2z's stats (-1 when absent). */
static int64_t count_of(const am2z_value *stats, const char *q, const char *field) {
    const am2z_value *queues = am2z_value_find(stats, "queues", 6);
    const am2z_value *one = am2z_value_find(queues, q, strlen(q));
    return am2z_value_as_int(am2z_value_find(one, field, strlen(field)), -1);
}

/* ---- processors run by the am2z side ---------------------------------------------- */

static am2z_result double_x(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "doubled",
                                  am2z_value_int(2 * am2z_value_get_int(in, "x", 0))));
}

static am2z_result out_of_stock(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_fail(am2z_error_business("OUT_OF_STOCK", AM2Z_SEVERITY_DEFAULT, "sku %s is out of stock",
                                         am2z_value_get_string(in, "sku", "?")));
}

static am2z_result must_not_run(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    (void)in;
    return am2z_fail(am2z_error_business("WRONG_SIDE", AM2Z_SEVERITY_DEFAULT, "ran in am2z, not in Node"));
}

/* Holds its job (active) until cancelled or 10 s. */
static am2z_result hold(am2z_ctx *ctx, const am2z_state *in) {
    int i;
    for (i = 0; i < 1000 && !am2z_ctx_cancelled(ctx); i++) tp_sleep_ms(10);
    return am2z_ok(am2z_value_retain(in));
}

/* ---- a. Node Queue.add -> am2z worker -> Node waitUntilFinished ---------------------- */

static void test_node_job_runs_on_am2z_worker(void) {
    am2z_runtime *rt;
    char q[256];
    tp_proc p;
    am2z_value *res, *job;
    const char *id;
    NEED_PEER();
    rt = new_runtime(2);
    CHECK(rt != NULL);
    if (!rt) return;
    CHECK(add_processor(rt, "double", double_x, NULL));
    CHECK(add_processor(rt, "stock", out_of_stock, NULL));
    CHECK_INT(am2z_queue_name(rt, "double", NULL, q, sizeof q), AM2Z_STATUS_OK);

    {
        const char *args[] = {"add-and-wait", g_port_s, q, "double", "{\"x\":21,\"note\":\"from node\"}",
                              "bull", "10000", NULL};
        CHECK(peer_start(&p, args));
    }
    CHECK(peer_ready(&p));
    res = peer_json(&p, 15000);
    CHECK(res != NULL);
    CHECK_INT(am2z_value_get_int(res, "returnvalue.doubled", -1), 42);
    CHECK_INT(am2z_value_get_int(res, "returnvalue.x", -1), 21);
    CHECK_STR(am2z_value_get_string(res, "returnvalue.note", NULL), "from node");
    CHECK(am2z_value_get(res, "failedReason") == NULL);
    CHECK_INT(peer_finish(&p), 0);

    /* What BullMQ (and so Bull Board) reads back from the job am2z finished. */
    id = am2z_value_get_string(res, "id", "");
    {
        const char *args[] = {"job", g_port_s, q, id, "bull", NULL};
        job = peer_run(args);
    }
    CHECK(job != NULL);
    CHECK_STR(am2z_value_get_string(job, "state", NULL), "completed");
    CHECK_STR(am2z_value_get_string(job, "name", NULL), "double");
    CHECK_INT(am2z_value_get_int(job, "attemptsMade", -1), 1);
    CHECK_INT(am2z_value_get_int(job, "attemptsStarted", -1), 1);
    CHECK_INT(am2z_value_get_int(job, "returnvalue.doubled", -1), 42);
    CHECK(am2z_value_get_int(job, "finishedOn", 0) >= am2z_value_get_int(job, "processedOn", 1));
    CHECK(am2z_value_get_int(job, "processedOn", 0) > 0);
    am2z_value_release(job);
    am2z_value_release(res);

    /* A failure reaches Node as the rejection of waitUntilFinished, with our message. */
    CHECK_INT(am2z_queue_name(rt, "stock", NULL, q, sizeof q), AM2Z_STATUS_OK);
    {
        const char *args[] = {"add-and-wait", g_port_s, q, "stock", "{\"sku\":\"A-7\"}", "bull", "10000", NULL};
        CHECK(peer_start(&p, args));
    }
    CHECK(peer_ready(&p));
    res = peer_json(&p, 15000);
    CHECK(res != NULL);
    CHECK(am2z_value_get(res, "returnvalue") == NULL);
    CHECK(strstr(am2z_value_get_string(res, "failedReason", ""), "sku A-7 is out of stock") != NULL);
    if (!strstr(am2z_value_get_string(res, "failedReason", ""), "sku A-7 is out of stock"))
        fprintf(stderr, "failedReason: %s\n", am2z_value_get_string(res, "failedReason", "(none)"));
    CHECK_INT(peer_finish(&p), 0);
    am2z_value_release(res);

    /* A job whose name is no registered processor fails clearly; the worker goes on. */
    CHECK_INT(am2z_queue_name(rt, "double", NULL, q, sizeof q), AM2Z_STATUS_OK);
    {
        const char *args[] = {"add-and-wait", g_port_s, q, "no-such-processor", "{\"x\":1}", "bull", "10000", NULL};
        CHECK(peer_start(&p, args));
    }
    CHECK(peer_ready(&p));
    res = peer_json(&p, 15000);
    CHECK(res != NULL);
    CHECK(strstr(am2z_value_get_string(res, "failedReason", ""), "no-such-processor") != NULL);
    CHECK_INT(peer_finish(&p), 0);
    am2z_value_release(res);
    {
        const char *args[] = {"add-and-wait", g_port_s, q, "double", "{\"x\":-4}", "bull", "10000", NULL};
        CHECK(peer_start(&p, args));
    }
    CHECK(peer_ready(&p));
    res = peer_json(&p, 15000);
    CHECK_INT(am2z_value_get_int(res, "returnvalue.doubled", 0), -8);
    CHECK_INT(peer_finish(&p), 0);
    am2z_value_release(res);
    am2z_runtime_free(rt);
}

/* Node's Queue.pause() (meta.paused, v6: jobs stay in wait) holds am2z's workers off the
   queue; Queue.resume() lets them run it. */
static void test_node_pause_is_respected(void) {
    am2z_runtime *rt;
    char q[256];
    tp_proc p;
    am2z_value *res, *stats;
    NEED_PEER();
    rt = new_runtime(2);
    CHECK(rt != NULL);
    if (!rt) return;
    CHECK(add_processor(rt, "paused", double_x, NULL));
    CHECK_INT(am2z_queue_name(rt, "paused", NULL, q, sizeof q), AM2Z_STATUS_OK);
    {
        const char *args[] = {"pause", g_port_s, q, "bull", NULL};
        res = peer_run(args);
        CHECK(am2z_value_get_bool(res, "paused", 0));
        am2z_value_release(res);
    }
    {
        const char *args[] = {"add-and-wait", g_port_s, q, "paused", "{\"x\":5}", "bull", "10000", NULL};
        CHECK(peer_start(&p, args));
    }
    CHECK(peer_ready(&p));
    tp_sleep_ms(300); /* time enough for an idle worker that ignored the flag */
    stats = am2z_runtime_stats(rt);
    CHECK_INT(count_of(stats, q, "waiting"), 1);
    CHECK_INT(count_of(stats, q, "completed"), 0);
    am2z_value_release(stats);
    {
        const char *args[] = {"resume", g_port_s, q, "bull", NULL};
        res = peer_run(args);
        CHECK(res && !am2z_value_get_bool(res, "paused", 1));
        am2z_value_release(res);
    }
    res = peer_json(&p, 15000);
    CHECK_INT(am2z_value_get_int(res, "returnvalue.doubled", 0), 10);
    CHECK_INT(peer_finish(&p), 0);
    am2z_value_release(res);
    am2z_runtime_free(rt);
}

/* ---- b. am2z submit -> Node Worker -> am2z caller ------------------------------------ */

static void test_am2z_job_runs_on_node_worker(void) {
    am2z_runtime *rt;
    char q[256];
    tp_proc p;
    am2z_value *seen;
    am2z_state *in;
    am2z_outcome out = {0};
    NEED_PEER();
    /* This process only calls: the processor's code lives in Node. */
    rt = new_runtime(AM2Z_QUEUE_NO_WORKERS);
    CHECK(rt != NULL);
    if (!rt) return;
    CHECK(add_processor(rt, "nodejob", must_not_run, NULL));
    CHECK_INT(am2z_queue_name(rt, "nodejob", NULL, q, sizeof q), AM2Z_STATUS_OK);
    {
        const char *args[] = {"worker", g_port_s, q, "2", "bull", NULL};
        CHECK(peer_start(&p, args));
    }
    CHECK(peer_ready(&p));

    in = am2z_state_parse("default", "{\"a\":1,\"b\":2,\"label\":\"am2z\"}", AM2Z_NTS, NULL);
    CHECK(in != NULL);
    out = am2z_runtime_execute(rt, "nodejob", in);
    CHECK(out.error == NULL);
    if (out.error) fprintf(stderr, "nodejob failed: %s\n", out.error->message);
    CHECK_STR(am2z_value_get_string(out.state, "by", NULL), "bullmq");
    CHECK_STR(am2z_value_get_string(out.state, "name", NULL), "nodejob");
    CHECK_INT(am2z_value_get_int(out.state, "sum", -1), 3);
    CHECK_STR(am2z_value_get_string(out.state, "input.label", NULL), "am2z");
    CHECK(out.execution_id[0] != '\0');

    /* The job as the Node Worker received it: our envelope around the input state. */
    seen = peer_json(&p, 5000);
    CHECK(seen != NULL);
    CHECK_STR(am2z_value_get_string(seen, "name", NULL), "nodejob");
    CHECK_INT(am2z_value_get_int(seen, "data.am2z", 0), 1);
    CHECK_INT(am2z_value_get_int(seen, "data.state.a", 0), 1);
    CHECK_STR(am2z_value_get_string(seen, "data.executionId", NULL), out.execution_id);
    CHECK_STR(am2z_value_get_string(seen, "id", NULL), out.execution_id);
    CHECK_INT(am2z_value_type(am2z_value_get(seen, "opts")), AM2Z_TYPE_OBJECT);
    am2z_value_release(seen);
    am2z_outcome_clear(&out);

    /* A second one through submit + wait. */
    {
        am2z_execution *e = am2z_runtime_submit(rt, "nodejob", in, NULL, NULL);
        CHECK(e != NULL);
        if (e) {
            memset(&out, 0, sizeof out);
            CHECK_INT(am2z_execution_wait(e, 10000, &out), AM2Z_STATUS_OK);
            CHECK_INT(am2z_value_get_int(out.state, "sum", -1), 3);
            am2z_outcome_clear(&out);
            am2z_execution_free(e);
        }
    }
    am2z_value_release(peer_json(&p, 5000)); /* the second job's line */
    CHECK_INT(peer_finish(&p), 0); /* the peer leaves after 2 jobs */
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- c. Node getJobCounts() == am2z stats -------------------------------------------- */

static void test_job_counts_agree(void) {
    static const char *const fields[] = {"waiting", "active", "delayed", "prioritized", "completed", "failed",
                                         "waiting-children"};
    static const char *const procs[] = {"ok", "bad", "hold", "idle", "later", "urgent"};
    am2z_runtime *work, *call;
    am2z_queue_config delayed_cfg, urgent_cfg;
    am2z_execution *pending[8] = {0};
    char q[6][256];
    am2z_value *stats = NULL, *counts = NULL;
    am2z_state *in;
    size_t i, k, n_pending = 0;
    NEED_PEER();

    work = new_runtime(2);
    call = new_runtime(AM2Z_QUEUE_NO_WORKERS);
    CHECK(work && call);
    if (!work || !call) { am2z_runtime_free(work); am2z_runtime_free(call); return; }
    memset(&delayed_cfg, 0, sizeof delayed_cfg);
    delayed_cfg.delay_ms = 600000;
    memset(&urgent_cfg, 0, sizeof urgent_cfg);
    urgent_cfg.priority = 2;
    /* The working process serves ok/bad/hold; the calling one knows the others, which no
       process serves, so their jobs stay waiting, delayed or prioritized. */
    CHECK(add_processor(work, "ok", double_x, NULL));
    CHECK(add_processor(work, "bad", out_of_stock, NULL));
    CHECK(add_processor(work, "hold", hold, NULL));
    CHECK(add_processor(call, "ok", double_x, NULL));
    CHECK(add_processor(call, "bad", out_of_stock, NULL));
    CHECK(add_processor(call, "hold", hold, NULL));
    CHECK(add_processor(call, "idle", must_not_run, NULL));
    CHECK(add_processor(call, "later", must_not_run, &delayed_cfg));
    CHECK(add_processor(call, "urgent", must_not_run, &urgent_cfg));
    for (i = 0; i < 6; i++) CHECK_INT(am2z_queue_name(call, procs[i], NULL, q[i], sizeof q[i]), AM2Z_STATUS_OK);

    in = am2z_state_parse("default", "{\"x\":1}", AM2Z_NTS, NULL);
    for (i = 0; i < 3; i++) {
        am2z_outcome out = am2z_runtime_execute(call, "ok", in);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
    }
    for (i = 0; i < 2; i++) {
        am2z_outcome out = am2z_runtime_execute(call, "bad", in);
        CHECK(out.error != NULL);
        am2z_outcome_clear(&out);
    }
    pending[n_pending++] = am2z_runtime_submit(call, "hold", in, NULL, NULL);
    for (i = 0; i < 4; i++) pending[n_pending++] = am2z_runtime_submit(call, "idle", in, NULL, NULL);
    pending[n_pending++] = am2z_runtime_submit(call, "later", in, NULL, NULL);
    for (i = 0; i < 2; i++) pending[n_pending++] = am2z_runtime_submit(call, "urgent", in, NULL, NULL);
    for (i = 0; i < n_pending; i++) CHECK(pending[i] != NULL);

    /* Wait (up to 5 s) until the hold job is active, then compare. */
    for (i = 0; i < 500; i++) {
        am2z_value_release(stats);
        stats = am2z_runtime_stats(call);
        if (count_of(stats, q[2], "active") == 1) break;
        tp_sleep_ms(10);
    }
    {
        const char *args[] = {"counts", g_port_s, "bull", q[0], q[1], q[2], q[3], q[4], q[5], NULL};
        counts = peer_run(args);
    }
    CHECK(counts != NULL);
    CHECK(stats != NULL);
    for (i = 0; i < 6; i++) {
        const am2z_value *node = am2z_value_find(counts, q[i], strlen(q[i]));
        CHECK(node != NULL);
        for (k = 0; k < sizeof fields / sizeof fields[0]; k++) {
            int64_t ours = count_of(stats, q[i], fields[k]);
            int64_t theirs = am2z_value_as_int(am2z_value_find(node, fields[k], strlen(fields[k])), -2);
            if (ours != theirs)
                fprintf(stderr, "%s %s: am2z %lld, BullMQ %lld\n", q[i], fields[k], (long long)ours,
                        (long long)theirs);
            CHECK_INT(ours, theirs);
        }
    }
    /* And the expected numbers, so "both zero everywhere" cannot pass. */
    CHECK_INT(count_of(stats, q[0], "completed"), 3);
    CHECK_INT(count_of(stats, q[1], "failed"), 2);
    CHECK_INT(count_of(stats, q[2], "active"), 1);
    CHECK_INT(count_of(stats, q[3], "waiting"), 4);
    CHECK_INT(count_of(stats, q[4], "delayed"), 1);
    CHECK_INT(count_of(stats, q[5], "prioritized"), 2);

    for (i = 0; i < n_pending; i++) am2z_execution_free(pending[i]);
    am2z_value_release(counts);
    am2z_value_release(stats);
    am2z_value_release(in);
    am2z_runtime_free(call);
    am2z_runtime_free(work);
}

int main(void) {
    static tp_proc redis;
    am2z_logger_desc ld;
    memset(&ld, 0, sizeof ld);
    ld.min_level = AM2Z_LOG_WARN;
    g_quiet = am2z_logger_new(&ld, NULL);

    g_port = tp_redis_start(&redis);
    if (!g_port) fprintf(stderr, "test_interop: could not start redis-server\n");
    snprintf(g_port_s, sizeof g_port_s, "%d", g_port);
    fx_node_peer(g_node_path, sizeof g_node_path, "test_interop");

    T_RUN(test_node_job_runs_on_am2z_worker);
    T_RUN(test_node_pause_is_respected);
    T_RUN(test_am2z_job_runs_on_node_worker);
    T_RUN(test_job_counts_agree);

    if (g_port) tp_stop(&redis, SIGKILL, 2000);
    am2z_logger_release(g_quiet);
    return t_done();
}
