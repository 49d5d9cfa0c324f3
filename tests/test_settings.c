/* test_settings.c - processor settings have one source of truth, the workers (am2z_resp.h
   section 4.3, SETTINGS), against a private redis-server:
     - a caller that only declares a name gets the workers' timeout and retry policy;
     - a rate limit declared by the workers holds for the jobs of every producer;
     - explicit per-call overrides of a declaration win over the workers' settings;
     - a declared name nobody published fails clearly; an undeclared one is not found;
     - broken or absurd published settings fail clearly or are clamped;
     - disagreeing workers: the newest registration wins, with a warning;
     - a Node producer's opts.attempts, backoff, delay and priority are honoured (the
       real BullMQ through tests/interop/peer.js; skipped loudly without node, failed
       under CI). */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "proc.h"
#include "fixture.h"

static int port;
static t_redis server;
static am2z_logger *g_quiet;
static char g_node_path[1024]; /* NODE_PATH of the BullMQ peer, "" when unavailable */
static char g_port_s[16];

/* -- helpers -- */

static am2z_runtime *rt_new(int concurrency, int64_t refresh_ms, am2z_logger *lg) {
    am2z_queue_desc d;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = port;
    d.concurrency = concurrency;
    d.foreign_poll_ms = 50;
    d.settings_refresh_ms = refresh_ms;
    d.logger = lg ? lg : g_quiet;
    return am2z_queue_runtime_new(&d, NULL);
}

/* An integer reply of a one-argument command on key ("ZCARD %s"), -1 on failure; for
   string replies (HGET) the number in them, 0 when nil. */
static long long redis_int(const char *fmt, const char *key) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep = {0};
    long long v = -1;
    if (!r) return -1;
    if (am2z_redis_command(r, &rep, fmt, key) == AM2Z_STATUS_OK)
        v = rep.type == AM2Z_REPLY_INTEGER ? rep.integer : rep.type == AM2Z_REPLY_NIL ? 0
            : strtoll(am2z_reply_str(&rep), NULL, 10);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return v;
}

/* "<bull>:<queue>:<suffix>" of processor name. */
static void qkey(am2z_runtime *rt, const char *name, const char *suffix, char *buf, size_t size) {
    char q[256];
    if (am2z_queue_name(rt, name, NULL, q, sizeof q) != AM2Z_STATUS_OK) q[0] = '\0';
    snprintf(buf, size, "bull:%s:%s", q, suffix);
}

static int reg(am2z_runtime *rt, const char *name, am2z_processor_fn fn, int64_t timeout_ms,
               const am2z_retry_policy *retry, const am2z_queue_config *queue) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    d.timeout_ms = timeout_ms;
    if (retry) d.retry = *retry;
    if (queue) d.queue = *queue;
    return am2z_runtime_register(rt, am2z_processor_new(&d, NULL)) == AM2Z_STATUS_OK;
}

static am2z_state *input(int x) {
    return am2z_state_new("default", am2z_value_set(am2z_value_object(), "x", am2z_value_int(x)), NULL);
}

/* -- processors (run by the worker runtimes) -- */

/* Sleeps input.sleep_ms without looking at cancellation: only the timeout can end its
   execution early for the caller. A test that has seen what it needs releases the runs
   still sleeping (release_stubborn), so freeing the runtime does not wait them out. */
static int g_released; /* atomic; RUN resets it */
static am2z_result stubborn(am2z_ctx *ctx, const am2z_state *in) {
    int64_t ms = am2z_value_get_int(in, "sleep_ms", 0), t;
    (void)ctx;
    for (t = 0; t < ms && !__atomic_load_n(&g_released, __ATOMIC_SEQ_CST); t += 5) tp_sleep_ms(5);
    return am2z_ok(am2z_value_retain(in));
}
static void release_stubborn(void) { __atomic_store_n(&g_released, 1, __ATOMIC_SEQ_CST); }

/* Fails (retryable) until its third attempt. */
static am2z_result flaky(am2z_ctx *ctx, const am2z_state *in) {
    if (am2z_ctx_meta(ctx)->attempt < 3)
        return am2z_fail(am2z_error_with_retryable(am2z_error_business("FLAKY", AM2Z_SEVERITY_DEFAULT,
                                                                       "attempt %d", am2z_ctx_meta(ctx)->attempt), 1));
    return am2z_ok(am2z_value_retain(in));
}

static am2z_result echo(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_retain(in));
}

/* The outcome's error kind, -1 for a success. */
static int kind_of(const am2z_outcome *out) { return out->error ? (int)out->error->kind : -1; }

static am2z_state *with_sleep(int64_t ms) {
    return am2z_state_new("default", am2z_value_set(am2z_value_object(), "sleep_ms", am2z_value_int(ms)), NULL);
}

/* -- 1. a declaring caller gets the workers' timeout and retries -- */

static void test_declared_caller_gets_worker_settings(void) {
    am2z_runtime *work = rt_new(2, 0, NULL), *call = rt_new(AM2Z_QUEUE_NO_WORKERS, 0, NULL);
    am2z_retry_policy three;
    am2z_state *in = with_sleep(2500);
    am2z_outcome out;
    am2z_value *pub;
    am2z_status st;
    CHECK(work && call);
    if (!work || !call) { am2z_runtime_free(call); am2z_runtime_free(work); am2z_value_release(in); return; }
    memset(&three, 0, sizeof three);
    three.max_attempts = 3;
    three.backoff = AM2Z_BACKOFF_FIXED;
    three.delay_ms = 20;
    CHECK(reg(work, "slow", stubborn, 300, NULL, NULL));
    CHECK(reg(work, "flaky", flaky, 0, &three, NULL));
    CHECK_INT(am2z_queue_declare(call, "slow", NULL), AM2Z_STATUS_OK);
    CHECK_INT(am2z_queue_declare(call, "flaky", NULL), AM2Z_STATUS_OK);

    /* What the workers published, with the publishing instance. */
    pub = am2z_queue_settings(call, "slow", &st);
    CHECK_INT(st, AM2Z_STATUS_OK);
    CHECK_INT(am2z_value_get_int(pub, "version", 0), 1);
    CHECK_STR(am2z_value_get_string(pub, "instance", NULL), am2z_queue_instance_id(work));
    CHECK_INT(am2z_value_get_int(pub, "settings.timeoutMs", 0), 300);
    am2z_value_release(pub);

    /* The 300 ms timeout of the workers ends the caller's wait long before the 2.5 s the
       processor takes (it ignores cancellation); the bound is loose on purpose. */
    out = am2z_runtime_execute(call, "slow", in);
    CHECK(out.error != NULL);
    CHECK_INT(kind_of(&out), AM2Z_ERROR_TIMEOUT);
    CHECK(out.duration_ms < 2000);
    fprintf(stderr, "  declared caller: timeout after %.0f ms (workers: 300 ms)\n", out.duration_ms);
    am2z_outcome_clear(&out);
    release_stubborn();

    /* The workers' three attempts, not the caller's default of one. */
    out = am2z_runtime_execute(call, "flaky", in);
    CHECK(out.error == NULL);
    CHECK_INT(out.attempts, 3);
    CHECK_INT(out.attempt_error_count, 2);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(call);
    am2z_runtime_free(work);
}

/* -- 2. the workers' rate limit holds for every producer -- */

static void test_rate_limit_across_producers(void) {
    am2z_runtime *work = rt_new(4, 0, NULL);
    am2z_runtime *p1 = rt_new(AM2Z_QUEUE_NO_WORKERS, 0, NULL), *p2 = rt_new(AM2Z_QUEUE_NO_WORKERS, 0, NULL);
    am2z_runtime *old = rt_new(AM2Z_QUEUE_NO_WORKERS, 0, NULL);
    am2z_queue_config two, many;
    am2z_execution *e[5] = {0};
    am2z_state *in = input(1);
    char completed[300], wait[300], meta[300];
    long long done = 0;
    int i;
    CHECK(work && p1 && p2 && old);
    if (!work || !p1 || !p2 || !old) goto out;
    memset(&two, 0, sizeof two);
    two.rate_limit_per_minute = 2;
    memset(&many, 0, sizeof many);
    many.rate_limit_per_minute = 1000;
    CHECK(reg(work, "limited", echo, 0, NULL, &two));
    qkey(work, "limited", "completed", completed, sizeof completed);
    qkey(work, "limited", "wait", wait, sizeof wait);
    qkey(work, "limited", "meta", meta, sizeof meta);
    /* queue-level, as BullMQ keeps it, written when the workers registered */
    CHECK_INT(redis_int("HGET %s max", meta), 2);
    CHECK_INT(redis_int("HGET %s duration", meta), 60000);

    CHECK_INT(am2z_queue_declare(p1, "limited", NULL), AM2Z_STATUS_OK);
    CHECK_INT(am2z_queue_declare(p2, "limited", NULL), AM2Z_STATUS_OK);
    /* an old-style producer registering a stand-in with other settings changes nothing:
       only workers publish */
    CHECK(reg(old, "limited", echo, 0, NULL, &many));
    for (i = 0; i < 2; i++) {
        e[i] = am2z_runtime_submit(p1, "limited", in, NULL, NULL);
        e[2 + i] = am2z_runtime_submit(p2, "limited", in, NULL, NULL);
    }
    e[4] = am2z_runtime_submit(old, "limited", in, NULL, NULL);
    for (i = 0; i < 5; i++) CHECK(e[i] != NULL);
    CHECK_INT(redis_int("HGET %s max", meta), 2);
    for (i = 0; i < 1000 && done < 2; i++) {
        tp_sleep_ms(10);
        done = redis_int("ZCARD %s", completed);
    }
    CHECK_INT(done, 2);
    tp_sleep_ms(1000); /* any of the other 3 would have started by now without the limit */
    CHECK_INT(redis_int("ZCARD %s", completed), 2);
    CHECK_INT(redis_int("LLEN %s", wait), 3);
    fprintf(stderr, "  rate limit 2/min, 5 jobs from 3 producers: %lld ran in 1 s+\n",
            redis_int("ZCARD %s", completed));
    for (i = 0; i < 5; i++) am2z_execution_free(e[i]);
out:
    am2z_value_release(in);
    am2z_runtime_free(old);
    am2z_runtime_free(p2);
    am2z_runtime_free(p1);
    am2z_runtime_free(work);
}

/* -- 3. explicit overrides of a declaration -- */

static void test_overrides(void) {
    am2z_runtime *work = rt_new(2, 0, NULL), *call = rt_new(AM2Z_QUEUE_NO_WORKERS, 0, NULL);
    am2z_retry_policy three;
    am2z_call_overrides ov;
    am2z_state *in = with_sleep(1500), *in2 = with_sleep(400);
    am2z_outcome out;
    am2z_runtime *local = am2z_local_runtime_new(NULL, NULL);
    CHECK(work && call && local);
    if (!work || !call || !local) goto out;
    memset(&three, 0, sizeof three);
    three.max_attempts = 3;
    three.delay_ms = -1;
    CHECK(reg(work, "patient", stubborn, 10000, NULL, NULL));
    CHECK(reg(work, "flaky2", flaky, 0, &three, NULL));

    /* a shorter deadline than the workers' 10 s */
    memset(&ov, 0, sizeof ov);
    ov.timeout_ms = 200;
    CHECK_INT(am2z_queue_declare(call, "patient", &ov), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(call, "patient", in);
    CHECK_INT(kind_of(&out), AM2Z_ERROR_TIMEOUT);
    am2z_outcome_clear(&out);
    /* declaring again replaces the overrides: the workers' 10 s again (a run of 400 ms
       would time out under the 200 ms) */
    CHECK_INT(am2z_queue_declare(call, "patient", NULL), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(call, "patient", in2);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    release_stubborn(); /* the first run, which the caller left at 200 ms */

    /* one attempt instead of the workers' three */
    memset(&ov, 0, sizeof ov);
    ov.max_attempts = 1;
    CHECK_INT(am2z_queue_declare(call, "flaky2", &ov), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(call, "flaky2", in);
    CHECK(out.error != NULL);
    CHECK_INT(out.attempts, 1);
    am2z_outcome_clear(&out);

    /* bad declarations */
    ov.max_attempts = -1;
    CHECK_INT(am2z_queue_declare(call, "flaky2", &ov), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "negative") != NULL);
    memset(&ov, 0, sizeof ov);
    ov.backoff = (am2z_backoff)42;
    CHECK_INT(am2z_queue_declare(call, "flaky2", &ov), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_queue_declare(call, "no:colons", NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_queue_declare(call, NULL, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_queue_declare(local, "patient", NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_queue_declare(NULL, "patient", NULL), AM2Z_STATUS_INVALID_ARGUMENT);
out:
    am2z_value_release(in);
    am2z_value_release(in2);
    am2z_runtime_free(local);
    am2z_runtime_free(call);
    am2z_runtime_free(work);
}

/* -- 4. a declared name nobody published; an undeclared name -- */

static void test_declared_without_publisher(void) {
    am2z_runtime *call = rt_new(AM2Z_QUEUE_NO_WORKERS, 50, NULL), *work = NULL;
    am2z_state *in = input(7);
    am2z_outcome out;
    am2z_execution *e;
    am2z_status st = AM2Z_STATUS_OK;
    CHECK(call != NULL);
    if (!call) { am2z_value_release(in); return; }
    CHECK_INT(am2z_queue_declare(call, "ghost", NULL), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(call, "ghost", in);
    CHECK_INT(kind_of(&out), AM2Z_ERROR_CONFIGURATION);
    CHECK(out.error && strstr(out.error->message, "no worker has published") != NULL);
    am2z_outcome_clear(&out);
    e = am2z_runtime_submit(call, "ghost", in, NULL, &st);
    CHECK(e == NULL);
    CHECK_INT(st, AM2Z_STATUS_NOT_FOUND);
    CHECK(strstr(am2z_status_detail(), "published") != NULL);
    am2z_execution_free(e);
    CHECK(am2z_queue_settings(call, "ghost", &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_NOT_FOUND);

    /* once a worker registers it, the same caller runs it (its cache is refreshed) */
    work = rt_new(1, 0, NULL);
    CHECK(work && reg(work, "ghost", echo, 0, NULL, NULL));
    tp_sleep_ms(120);
    out = am2z_runtime_execute(call, "ghost", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "x", 0), 7);
    am2z_outcome_clear(&out);
    am2z_runtime_free(work);
    am2z_runtime_free(call);
    am2z_value_release(in);
}

static void test_undeclared_not_found(void) {
    am2z_runtime *work = rt_new(1, 0, NULL), *call = rt_new(AM2Z_QUEUE_NO_WORKERS, 0, NULL);
    am2z_state *in = input(1);
    am2z_outcome out;
    CHECK(work && call);
    if (!work || !call) { am2z_runtime_free(call); am2z_runtime_free(work); am2z_value_release(in); return; }
    /* published by a worker, but never declared here: still not found */
    CHECK(reg(work, "published", echo, 0, NULL, NULL));
    out = am2z_runtime_execute(call, "published", in);
    CHECK_INT(kind_of(&out), AM2Z_ERROR_PROCESSOR_NOT_FOUND);
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute(call, "nobody", in);
    CHECK_INT(kind_of(&out), AM2Z_ERROR_PROCESSOR_NOT_FOUND);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(call);
    am2z_runtime_free(work);
}

/* Published settings are data from Redis: broken or absurd ones fail clearly or are
   clamped, never crash or hang a caller. */
static void test_hostile_settings(void) {
    am2z_runtime *call = rt_new(AM2Z_QUEUE_NO_WORKERS, -1, NULL);
    am2z_redis *r = fx_conn(port);
    am2z_reply rep = {0};
    am2z_state *in = input(1);
    am2z_outcome out;
    am2z_execution *e;
    am2z_status st;
    char key[300], opts[300];
    am2z_value *o;
    CHECK(call && r);
    if (!call || !r) goto out;
    CHECK_INT(am2z_queue_declare(call, "bad", NULL), AM2Z_STATUS_OK);
    qkey(call, "bad", "am2z:settings", key, sizeof key);
    CHECK_INT(am2z_redis_command(r, &rep, "HSET %s version 5 settings %s", key, "not json {"), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(call, "bad", in);
    CHECK_INT(kind_of(&out), AM2Z_ERROR_CONFIGURATION);
    am2z_outcome_clear(&out);
    CHECK(am2z_queue_settings(call, "bad", &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_PROTOCOL);

    CHECK_INT(am2z_redis_command(r, &rep, "HSET %s version 6 settings %s", key,
                                 "{\"timeoutMs\":-5,\"attempts\":99999999999,\"backoff\":{\"type\":\"fixed\","
                                 "\"delay\":-3,\"multiplier\":1e300,\"maxDelay\":1e300,\"jitter\":7},"
                                 "\"priority\":99999999999,\"delay\":-1,\"rateLimitPerMinute\":\"x\"}"), AM2Z_STATUS_OK);
    e = am2z_runtime_submit(call, "bad", in, NULL, &st);
    CHECK(e != NULL);
    if (e) {
        snprintf(opts, sizeof opts, "bull:am2z~bad:%s", am2z_execution_id(e));
        CHECK_INT(am2z_redis_command(r, &rep, "HGET %s opts", opts), AM2Z_STATUS_OK);
        o = am2z_json_parse(am2z_reply_str(&rep), rep.len, NULL, NULL);
        CHECK_INT(am2z_value_get_int(o, "attempts", 0), 2147483647);
        CHECK_INT(am2z_value_get_int(o, "priority", 0), 2097151);
        CHECK_INT(am2z_value_get_int(o, "delay", -1), 0);
        CHECK_STR(am2z_value_get_string(o, "backoff.type", NULL), "fixed");
        am2z_value_release(o);
    }
    am2z_execution_free(e);
out:
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    am2z_value_release(in);
    am2z_runtime_free(call);
}

/* -- 5. disagreeing workers: the newest registration wins, with a warning -- */

static int g_warned; /* atomic: warnings naming the rule */
static void count_warnings(const am2z_log_entry *en, void *ud) {
    (void)ud;
    if (en->level == AM2Z_LOG_WARN && strstr(en->message, "the newest registration wins"))
        __atomic_add_fetch(&g_warned, 1, __ATOMIC_SEQ_CST);
}

static void test_disagreeing_workers(void) {
    am2z_logger_desc ld;
    am2z_logger *lg;
    am2z_runtime *a, *b = NULL, *c = NULL, *d = NULL, *call;
    am2z_state *in = with_sleep(500); /* > 300 ms: only the 5 s timeout lets it finish */
    am2z_outcome out;
    am2z_value *pub;
    int i;
    memset(&ld, 0, sizeof ld);
    ld.sink = AM2Z_SINK_CALLBACK;
    ld.callback = count_warnings;
    ld.min_level = AM2Z_LOG_WARN;
    lg = am2z_logger_new(&ld, NULL);
    __atomic_store_n(&g_warned, 0, __ATOMIC_SEQ_CST);
    a = rt_new(2, 50, lg);
    call = rt_new(AM2Z_QUEUE_NO_WORKERS, 50, NULL);
    CHECK(a && call);
    if (!a || !call) goto out;
    CHECK_INT(am2z_queue_declare(call, "dis", NULL), AM2Z_STATUS_OK);
    CHECK(reg(a, "dis", stubborn, 300, NULL, NULL));
    CHECK_INT(__atomic_load_n(&g_warned, __ATOMIC_SEQ_CST), 0);
    out = am2z_runtime_execute(call, "dis", in);
    CHECK_INT(kind_of(&out), AM2Z_ERROR_TIMEOUT);
    am2z_outcome_clear(&out);

    /* b registers a 5 s timeout later: it wins, for every caller and every worker (a
       runs jobs with the timeout the job carries), and says so */
    b = rt_new(2, 50, lg);
    CHECK(b && reg(b, "dis", stubborn, 5000, NULL, NULL));
    CHECK_INT(__atomic_load_n(&g_warned, __ATOMIC_SEQ_CST), 1);
    pub = am2z_queue_settings(call, "dis", NULL);
    CHECK_INT(am2z_value_get_int(pub, "version", 0), 2);
    CHECK_STR(am2z_value_get_string(pub, "instance", NULL), b ? am2z_queue_instance_id(b) : "");
    CHECK_INT(am2z_value_get_int(pub, "settings.timeoutMs", 0), 5000);
    am2z_value_release(pub);
    tp_sleep_ms(120); /* past the callers' refresh period */
    for (i = 0; i < 4; i++) {
        /* a's own calls too: it registered 300 ms, the newest registration says 5 s */
        out = am2z_runtime_execute(i % 2 ? a : call, "dis", in);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
    }

    /* the same settings published again change nothing (no new version, no warning) */
    d = rt_new(1, 50, lg);
    CHECK(d && reg(d, "dis", stubborn, 5000, NULL, NULL));
    CHECK_INT(__atomic_load_n(&g_warned, __ATOMIC_SEQ_CST), 1);
    pub = am2z_queue_settings(call, "dis", NULL);
    CHECK_INT(am2z_value_get_int(pub, "version", 0), 2);
    am2z_value_release(pub);

    /* and a newer registration of 300 ms wins again */
    c = rt_new(1, 50, lg);
    CHECK(c && reg(c, "dis", stubborn, 300, NULL, NULL));
    CHECK_INT(__atomic_load_n(&g_warned, __ATOMIC_SEQ_CST), 2);
    tp_sleep_ms(120);
    out = am2z_runtime_execute(call, "dis", in);
    CHECK_INT(kind_of(&out), AM2Z_ERROR_TIMEOUT);
    am2z_outcome_clear(&out);
out:
    release_stubborn();
    am2z_value_release(in);
    am2z_runtime_free(call);
    am2z_runtime_free(d);
    am2z_runtime_free(c);
    am2z_runtime_free(b);
    am2z_runtime_free(a);
    am2z_logger_release(lg);
}

/* -- 6. a Node producer's opts -- */

/* The case is skipped (or failed under CI) without node. */
#define NEED_NODE() do { \
        if (!g_node_path[0]) { \
            if (getenv("CI")) { T_FAIL_("node/npm or the BullMQ peer is missing, and CI is set"); return; } \
            T_SKIP("node/npm or the BullMQ peer is missing: this Node test did NOT run"); \
        } } while (0)

/* Runs `node peer.js add ...` and returns its JSON line (NULL on failure). */
static am2z_value *node_add(const char *const *args) {
    char *argv[24], env_path[1100], line[4096];
    const char *env[2];
    size_t n = 0;
    tp_proc p;
    am2z_value *v = NULL;
    argv[n++] = (char *)"node";
    argv[n++] = (char *)"tests/interop/peer.js";
    argv[n++] = (char *)"add";
    argv[n++] = g_port_s;
    while (*args && n < 23) argv[n++] = (char *)*args++;
    argv[n] = NULL;
    snprintf(env_path, sizeof env_path, "NODE_PATH=%s", g_node_path);
    env[0] = env_path;
    env[1] = NULL;
    if (tp_spawn(&p, argv, env, 1) != 0) return NULL;
    if (tp_readline(&p, line, sizeof line, 15000) == 1) v = am2z_json_parse(line, AM2Z_NTS, NULL, NULL);
    if (tp_wait(&p, 10000) != 0) { am2z_value_release(v); v = NULL; }
    tp_stop(&p, SIGKILL, 1000);
    return v;
}

static int64_t g_starts[8];  /* epoch ms of each attempt of the Node job */
static int g_nstarts;        /* atomic */
static am2z_result node_flaky(am2z_ctx *ctx, const am2z_state *in) {
    int i = __atomic_fetch_add(&g_nstarts, 1, __ATOMIC_SEQ_CST);
    if (i < 8) __atomic_store_n(&g_starts[i], am2z_now_ms(), __ATOMIC_SEQ_CST);
    if (am2z_ctx_meta(ctx)->attempt < 3)
        return am2z_fail(am2z_error_with_retryable(am2z_error_business("FLAKY", AM2Z_SEVERITY_DEFAULT, "not yet"), 1));
    return am2z_ok(am2z_value_retain(in));
}

static char g_order[16];     /* input.tag of each job run by prio, in order */
static int g_norder;         /* atomic */
static am2z_result record_order(am2z_ctx *ctx, const am2z_state *in) {
    int i = __atomic_fetch_add(&g_norder, 1, __ATOMIC_SEQ_CST);
    (void)ctx;
    if (i < 15) __atomic_store_n(&g_order[i], am2z_value_get_string(in, "tag", "?")[0], __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_retain(in));
}

static void test_node_job_opts(void) {
    am2z_runtime *work = NULL, *work2 = NULL;
    am2z_value *res;
    char q[256], jobkey[400], prefix[300];
    long long fin = 0, ts;
    int64_t starts[3];
    char order[5];
    const char *id;
    int i;
    NEED_NODE();
    /* the workers say one attempt; the Node job asks for three, 300 ms apart, 200 ms late */
    work = rt_new(2, 50, NULL);
    CHECK(work && reg(work, "nflaky", node_flaky, 0, NULL, NULL));
    if (!work) return;
    __atomic_store_n(&g_nstarts, 0, __ATOMIC_SEQ_CST);
    CHECK_INT(am2z_queue_name(work, "nflaky", NULL, q, sizeof q), AM2Z_STATUS_OK);
    {
        const char *args[] = {q, "bull", "nflaky", "{\"x\":1}",
                              "{\"attempts\":3,\"backoff\":{\"type\":\"fixed\",\"delay\":300},\"delay\":200}", NULL};
        res = node_add(args);
    }
    CHECK(res != NULL);
    id = am2z_value_as_string(am2z_value_at(am2z_value_find(res, "ids", 3), 0), NULL);
    snprintf(jobkey, sizeof jobkey, "bull:%s:%s", q, id ? id : "");
    am2z_value_release(res);
    for (i = 0; i < 1500 && fin <= 0; i++) {
        tp_sleep_ms(10);
        fin = redis_int("HGET %s finishedOn", jobkey);
    }
    CHECK(fin > 0);
    CHECK_INT(redis_int("HGET %s atm", jobkey), 3);
    snprintf(prefix, sizeof prefix, "bull:%s:completed", q);
    CHECK_INT(redis_int("ZCARD %s", prefix), 1);
    CHECK_INT(__atomic_load_n(&g_nstarts, __ATOMIC_SEQ_CST), 3);
    for (i = 0; i < 3; i++) starts[i] = __atomic_load_n(&g_starts[i], __ATOMIC_SEQ_CST);
    ts = redis_int("HGET %s timestamp", jobkey);
    CHECK(starts[0] - ts >= 200);                 /* opts.delay */
    CHECK(starts[1] - starts[0] >= 300);        /* opts.backoff */
    CHECK(starts[2] - starts[1] >= 300);
    fprintf(stderr, "  node job: delay %lld ms, backoff gaps %lld and %lld ms (asked 200, 300, 300)\n",
            (long long)(starts[0] - ts), (long long)(starts[1] - starts[0]),
            (long long)(starts[2] - starts[1]));

    /* priority: jobs added while no worker serves the queue run in priority order once one
       does (1 before 3 before 5; a job without priority first, as in BullMQ) */
    __atomic_store_n(&g_norder, 0, __ATOMIC_SEQ_CST);
    CHECK_INT(am2z_queue_name(work, "nprio", NULL, q, sizeof q), AM2Z_STATUS_OK);
    {
        const char *args[] = {q, "bull", "nprio", "{\"tag\":\"e\"}", "{\"priority\":5}",
                              "nprio", "{\"tag\":\"a\"}", "{\"priority\":1}",
                              "nprio", "{\"tag\":\"c\"}", "{\"priority\":3}",
                              "nprio", "{\"tag\":\"0\"}", "{}", NULL};
        res = node_add(args);
    }
    CHECK(res != NULL);
    am2z_value_release(res);
    work2 = rt_new(1, 0, NULL);
    CHECK(work2 && reg(work2, "nprio", record_order, 0, NULL, NULL));
    for (i = 0; i < 1000 && __atomic_load_n(&g_norder, __ATOMIC_SEQ_CST) < 4; i++) tp_sleep_ms(10);
    CHECK_INT(__atomic_load_n(&g_norder, __ATOMIC_SEQ_CST), 4);
    for (i = 0; i < 4; i++) order[i] = __atomic_load_n(&g_order[i], __ATOMIC_SEQ_CST);
    order[4] = '\0';
    CHECK_STR(order, "0ace");
    am2z_runtime_free(work2);

    /* what a Node job leaves out (its timeout) comes from the published settings, not from
       the registration of the worker that runs it: work registered 5 s, a newer worker
       (gone since) published 300 ms */
    CHECK(reg(work, "nslow", stubborn, 5000, NULL, NULL));
    work2 = rt_new(1, 0, NULL);
    CHECK(work2 && reg(work2, "nslow", stubborn, 300, NULL, NULL));
    am2z_runtime_free(work2);
    tp_sleep_ms(120); /* past work's refresh period */
    CHECK_INT(am2z_queue_name(work, "nslow", NULL, q, sizeof q), AM2Z_STATUS_OK);
    {
        const char *args[] = {q, "bull", "nslow", "{\"sleep_ms\":800}", "{}", NULL};
        res = node_add(args);
    }
    CHECK(res != NULL);
    id = am2z_value_as_string(am2z_value_at(am2z_value_find(res, "ids", 3), 0), NULL);
    snprintf(jobkey, sizeof jobkey, "bull:%s:%s", q, id ? id : "");
    am2z_value_release(res);
    for (i = 0, fin = 0; i < 1500 && fin <= 0; i++) {
        tp_sleep_ms(10);
        fin = redis_int("HGET %s finishedOn", jobkey);
    }
    snprintf(prefix, sizeof prefix, "bull:%s:failed", q);
    CHECK_INT(redis_int("ZCARD %s", prefix), 1);
    {
        am2z_redis *r = fx_conn(port);
        am2z_reply rep = {0};
        CHECK(r && am2z_redis_command(r, &rep, "HGET %s failedReason", jobkey) == AM2Z_STATUS_OK);
        CHECK(strstr(am2z_reply_str(&rep), "timed out after 300ms") != NULL);
        am2z_reply_clear(&rep);
        am2z_redis_free(r);
    }
    release_stubborn();
    am2z_runtime_free(work);
}

#define RUN(fn) do { fx_flushall(port); __atomic_store_n(&g_released, 0, __ATOMIC_SEQ_CST); T_RUN(fn); } while (0)

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

int main(void) {
    am2z_logger_desc ld;
    memset(&ld, 0, sizeof ld);
    ld.min_level = AM2Z_LOG_ERROR;
    g_quiet = am2z_logger_new(&ld, NULL);
    T_RUN(start_server);
    if (!port) { am2z_logger_release(g_quiet); return t_done(); }
    snprintf(g_port_s, sizeof g_port_s, "%d", port);
    fx_node_peer(g_node_path, sizeof g_node_path, "test_settings");
    RUN(test_declared_caller_gets_worker_settings);
    RUN(test_rate_limit_across_producers);
    RUN(test_overrides);
    RUN(test_declared_without_publisher);
    RUN(test_undeclared_not_found);
    RUN(test_hostile_settings);
    RUN(test_disagreeing_workers);
    RUN(test_node_job_opts);
    t_redis_stop(&server);
    am2z_logger_release(g_quiet);
    return t_done();
}
