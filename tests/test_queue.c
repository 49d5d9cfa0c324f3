/* test_queue.c - the queue runtime (am2z_resp.h section 4) against a private redis-server:
   the runtime-interface behaviours of the local runtime again, plus what only the
   distributed runtime has (cross-instance results, sessions in Redis, the state manager,
   bad jobs, stalled recovery). Single process; the multi-process and BullMQ tests live in
   their own programs. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "proc.h"
#include "fixture.h"

static int port;
static t_redis server;

/* -- helpers -- */

static am2z_queue_desc qdesc(int concurrency) {
    am2z_queue_desc d;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = port;
    d.concurrency = concurrency;
    d.lock_duration_ms = 2000;
    d.stalled_interval_ms = 500;
    d.foreign_poll_ms = 100;
    return d;
}

static am2z_runtime *rt_new(int concurrency, am2z_logger *lg) {
    am2z_queue_desc d = qdesc(concurrency);
    d.logger = lg;
    return am2z_queue_runtime_new(&d, NULL);
}

/* Number of keys matching pattern (SCAN). */
static long scan_count(am2z_redis *r, const char *pattern) {
    char cursor[32] = "0";
    long n = 0;
    do {
        am2z_reply rep;
        memset(&rep, 0, sizeof rep);
        if (am2z_redis_command(r, &rep, "SCAN %s MATCH %s COUNT 1000", cursor, pattern) != AM2Z_STATUS_OK ||
            rep.type != AM2Z_REPLY_ARRAY || rep.len != 2) {
            am2z_reply_clear(&rep);
            return -1;
        }
        snprintf(cursor, sizeof cursor, "%s", am2z_reply_str(am2z_reply_at(&rep, 0)));
        n += (long)am2z_reply_at(&rep, 1)->len;
        am2z_reply_clear(&rep);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

static long long cmd_int(am2z_redis *r, const char *fmt, const char *a) {
    am2z_reply rep;
    long long v = -1;
    memset(&rep, 0, sizeof rep);
    if (am2z_redis_command(r, &rep, fmt, a) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER) v = rep.integer;
    am2z_reply_clear(&rep);
    return v;
}

static am2z_state *st_count(int64_t n) {
    return am2z_state_new("t", am2z_value_set(am2z_value_object(), "count", am2z_value_int(n)), NULL);
}

/* -- processors -- */

static am2z_result p_inc(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "count",
                                  am2z_value_int(am2z_value_get_int(in, "count", 0) + 1)));
}
static am2z_result p_double(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "count",
                                  am2z_value_int(am2z_value_get_int(in, "count", 0) * 2)));
}
static am2z_result p_add10(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "count",
                                  am2z_value_int(am2z_value_get_int(in, "count", 0) + 10)));
}

/* Calls itself until "depth" levels were made. */
static am2z_result p_rec(am2z_ctx *ctx, const am2z_state *in) {
    int64_t left = am2z_value_get_int(in, "left", 0);
    am2z_state *next;
    am2z_result r;
    if (left <= 0) return am2z_ok(am2z_value_set(am2z_value_retain(in), "depth",
                                                 am2z_value_int(am2z_ctx_meta(ctx)->call_depth)));
    next = am2z_value_set(am2z_value_retain(in), "left", am2z_value_int(left - 1));
    r = am2z_ctx_call(ctx, "rec", next);
    am2z_value_release(next);
    return r;
}

static int flaky_calls;
static am2z_result p_flaky(am2z_ctx *ctx, const am2z_state *in) {
    int n = __atomic_add_fetch(&flaky_calls, 1, __ATOMIC_SEQ_CST);
    if (am2z_ctx_meta(ctx)->attempt < 3)
        return am2z_fail(am2z_error_network("svc", 503, NULL));
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "calls", am2z_value_int(n)));
}
static am2z_result p_always_fail(am2z_ctx *ctx, const am2z_state *in) {
    (void)in;
    return am2z_fail(am2z_error_business("NOPE", AM2Z_SEVERITY_LOW, "attempt %d failed", am2z_ctx_meta(ctx)->attempt));
}
static int invalid_calls;
static am2z_result p_invalid(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    (void)in;
    __atomic_add_fetch(&invalid_calls, 1, __ATOMIC_SEQ_CST);
    return am2z_fail(am2z_error_validation("x", NULL, "bad input"));
}

static int saw_cancel;
/* Waits for cancellation (up to 5 s). */
static am2z_result p_wait_cancel(am2z_ctx *ctx, const am2z_state *in) {
    int64_t t0 = am2z_now_ms();
    while (!am2z_ctx_cancelled(ctx) && am2z_now_ms() - t0 < 5000) t_redis_sleep_ms(2);
    if (am2z_ctx_cancelled(ctx)) __atomic_add_fetch(&saw_cancel, 1, __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_retain(in));
}
static am2z_result p_call_waiter(am2z_ctx *ctx, const am2z_state *in) {
    return am2z_ctx_call(ctx, "waitcancel", in);
}
static am2z_result p_slow(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    t_redis_sleep_ms(150);
    return am2z_ok(am2z_value_retain(in));
}

static am2z_processor *plain(const char *name, am2z_processor_fn fn) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    return am2z_processor_new(&d, NULL);
}
/* Registers p, which register consumes. */
static void reg(am2z_runtime *rt, am2z_processor *p) {
    CHECK_INT(am2z_runtime_register(rt, p), AM2Z_STATUS_OK);
}

/* -- tests -- */

static void test_desc_limits(void) {
    am2z_queue_desc d = qdesc(AM2Z_QUEUE_MAX_WORKERS + 1);
    am2z_logger *lg = fx_quiet();
    am2z_status st = AM2Z_STATUS_OK;
    d.logger = lg;
    CHECK(am2z_queue_runtime_new(&d, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "above AM2Z_QUEUE_MAX_WORKERS") != NULL);
    d = qdesc(1);
    d.logger = lg;
    d.prefix = "bad:prefix";
    CHECK(am2z_queue_runtime_new(&d, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    d = qdesc(1);
    d.logger = lg;
    d.redis.port = 1; /* nothing listens there */
    d.redis.connect_timeout_ms = 200;
    d.redis.reconnect_attempts = 1;
    CHECK(am2z_queue_runtime_new(&d, &st) == NULL);
    CHECK(st != AM2Z_STATUS_OK);
    CHECK(strstr(am2z_status_detail(), "cannot connect to Redis") != NULL); /* not only in the log */
    am2z_logger_release(lg);
}

static void test_execute_and_layout(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_state *in = st_count(41);
    am2z_outcome out = {0};
    am2z_redis *r = fx_conn(port);
    char qn[128], key[256];
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    CHECK(rt != NULL && r != NULL);
    if (!rt || !r) { am2z_runtime_free(rt); am2z_redis_free(r); am2z_logger_release(lg); return; }
    reg(rt, plain("inc", p_inc));
    CHECK_INT(am2z_queue_name(rt, "inc", NULL, qn, sizeof qn), AM2Z_STATUS_OK);
    CHECK_STR(qn, "am2z~inc");
    CHECK_INT(am2z_queue_name(rt, "inc", "s-1", qn, sizeof qn), AM2Z_STATUS_OK);
    CHECK_STR(qn, "am2z~inc~s-1");
    CHECK_INT(am2z_queue_name(rt, "in:c", NULL, qn, sizeof qn), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_queue_name(rt, "inc", NULL, qn, 4), AM2Z_STATUS_LIMIT);
    out = am2z_runtime_execute(rt, "inc", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "count", 0), 42);
    CHECK_INT(out.attempts, 1);
    CHECK(strncmp(out.execution_id, "inc-", 4) == 0);
    /* the BullMQ layout: completed zset, job hash with JSON fields */
    snprintf(key, sizeof key, "bull:am2z~inc:%s", out.execution_id);
    CHECK(am2z_redis_command(r, &rep, "HMGET %s name returnvalue finishedOn atm ats opts data", key) == AM2Z_STATUS_OK);
    if (rep.type == AM2Z_REPLY_ARRAY && rep.len == 7) {
        am2z_value *rv = am2z_json_parse(am2z_reply_str(am2z_reply_at(&rep, 1)), AM2Z_NTS, NULL, NULL);
        am2z_value *opts = am2z_json_parse(am2z_reply_str(am2z_reply_at(&rep, 5)), AM2Z_NTS, NULL, NULL);
        am2z_value *data = am2z_json_parse(am2z_reply_str(am2z_reply_at(&rep, 6)), AM2Z_NTS, NULL, NULL);
        CHECK_STR(am2z_reply_str(am2z_reply_at(&rep, 0)), "inc");
        CHECK_INT(am2z_value_get_int(rv, "count", 0), 42);
        CHECK(am2z_reply_at(&rep, 2)->type == AM2Z_REPLY_BULK);
        CHECK_STR(am2z_reply_str(am2z_reply_at(&rep, 3)), "1");
        CHECK_STR(am2z_reply_str(am2z_reply_at(&rep, 4)), "1");
        CHECK_INT(am2z_value_get_int(opts, "attempts", 0), 1);
        CHECK_STR(am2z_value_get_string(opts, "jobId", ""), out.execution_id);
        CHECK_INT(am2z_value_get_int(data, "state.count", 0), 41);
        CHECK_STR(am2z_value_get_string(data, "processorName", ""), "inc");
        am2z_value_release(rv);
        am2z_value_release(opts);
        am2z_value_release(data);
    } else {
        CHECK(0);
    }
    am2z_reply_clear(&rep);
    CHECK_INT(cmd_int(r, "ZCARD %s", "bull:am2z~inc:completed"), 1);
    CHECK_INT(cmd_int(r, "XLEN %s", "bull:am2z~inc:events"), 2); /* completed drained (added, waiting and active too while a QueueEvents listens) */
    am2z_outcome_clear(&out);
    /* unknown processor: a clear error, no job */
    out = am2z_runtime_execute(rt, "nope", in);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_PROCESSOR_NOT_FOUND);
    CHECK(am2z_value_equal(out.state, in));
    am2z_outcome_clear(&out);
    /* a bad session id */
    out = am2z_runtime_execute_in_session(rt, "inc", in, "bad:session");
    CHECK(out.error != NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_submit_wait_many(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_state *in = st_count(1);
    am2z_execution *e;
    am2z_outcome out = {0};
    am2z_state *ins[300];
    am2z_outcome outs[300] = {{0}};
    size_t i;
    int ok = 1;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    reg(rt, plain("inc", p_inc));
    reg(rt, plain("slow", p_slow));
    e = am2z_runtime_submit(rt, "slow", in, NULL, NULL);
    CHECK(e != NULL);
    CHECK_INT(am2z_execution_wait(e, 10, &out), AM2Z_STATUS_TIMEOUT);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL && out.attempts == 1);
    CHECK(out.duration_ms >= 100);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_INVALID_ARGUMENT); /* taken already */
    am2z_execution_free(e);
    /* freeing an unfinished execution is fine */
    e = am2z_runtime_submit(rt, "slow", in, NULL, NULL);
    am2z_execution_free(e);
    CHECK(am2z_runtime_submit(rt, "nope", in, NULL, NULL) == NULL);
    for (i = 0; i < 300; i++) ins[i] = st_count((int64_t)i);
    CHECK_INT(am2z_runtime_execute_many(rt, "inc", (const am2z_state *const *)ins, 300, NULL, outs), AM2Z_STATUS_OK);
    for (i = 0; i < 300; i++) {
        if (outs[i].error || am2z_value_get_int(outs[i].state, "count", -1) != (int64_t)i + 1) ok = 0;
        am2z_outcome_clear(&outs[i]);
        am2z_value_release(ins[i]);
    }
    CHECK(ok);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_two_instances(void) {
    /* a pure producer and a worker runtime: results travel through the reply list */
    am2z_logger *lg = fx_quiet();
    am2z_runtime *prod = rt_new(AM2Z_QUEUE_NO_WORKERS, lg), *work = rt_new(2, lg);
    am2z_state *in = st_count(5);
    am2z_outcome out = {0};
    am2z_value *stats;
    CHECK(prod && work);
    if (!prod || !work) { am2z_runtime_free(prod); am2z_runtime_free(work); am2z_logger_release(lg); am2z_value_release(in); return; }
    CHECK(strcmp(am2z_queue_instance_id(prod), am2z_queue_instance_id(work)) != 0);
    reg(prod, plain("double", p_double));
    reg(work, plain("double", p_double));
    out = am2z_runtime_execute(prod, "double", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "count", 0), 10);
    am2z_outcome_clear(&out);
    stats = am2z_runtime_stats(prod);
    CHECK_INT(am2z_value_get_int(am2z_value_find(am2z_value_find(stats, "queues", 6), "am2z~double", 11), "completed", -1), 1);
    CHECK_INT(am2z_value_get_int(stats, "workers", -1), 0);
    CHECK_INT(am2z_value_get_int(stats, "completed", -1), 0);
    am2z_value_release(stats);
    stats = am2z_runtime_stats(work);
    CHECK_INT(am2z_value_get_int(stats, "completed", -1), 1);
    am2z_value_release(stats);
    am2z_value_release(in);
    am2z_runtime_free(prod);
    am2z_runtime_free(work);
    am2z_logger_release(lg);
}

static void test_nested_depth(void) {
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d = qdesc(2);
    am2z_runtime *rt;
    am2z_state *in;
    am2z_outcome out = {0};
    d.logger = lg;
    d.max_call_depth = 4;
    rt = am2z_queue_runtime_new(&d, NULL);
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); return; }
    reg(rt, plain("rec", p_rec));
    in = am2z_state_new("t", am2z_value_set(am2z_value_object(), "left", am2z_value_int(4)), NULL);
    out = am2z_runtime_execute(rt, "rec", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "depth", -1), 4);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    in = am2z_state_new("t", am2z_value_set(am2z_value_object(), "left", am2z_value_int(5)), NULL);
    out = am2z_runtime_execute(rt, "rec", in);
    CHECK(out.error != NULL);
    CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_CALL_DEPTH);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_retries(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_processor_desc pd;
    am2z_state *in = st_count(0);
    am2z_outcome out = {0};
    int64_t t0;
    size_t i;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    memset(&pd, 0, sizeof pd);
    pd.name = "flaky";
    pd.fn = p_flaky;
    pd.retry.max_attempts = 3;
    pd.retry.delay_ms = 20;
    reg(rt, am2z_processor_new(&pd, NULL));
    pd.name = "fails";
    pd.fn = p_always_fail;
    pd.retry.should_retry = NULL;
    reg(rt, am2z_processor_new(&pd, NULL));
    pd.name = "invalid";
    pd.fn = p_invalid;
    reg(rt, am2z_processor_new(&pd, NULL));
    t0 = am2z_now_ms();
    out = am2z_runtime_execute(rt, "flaky", in);
    CHECK(out.error == NULL);
    CHECK_INT(out.attempts, 3);
    CHECK_INT(out.attempt_error_count, 2);
    for (i = 0; i < out.attempt_error_count; i++) CHECK(out.attempt_errors[i]->kind == AM2Z_ERROR_NETWORK);
    CHECK(am2z_now_ms() - t0 >= 20 + 40); /* the backoffs were honoured */
    am2z_outcome_clear(&out);
    /* business errors are not retryable by default */
    out = am2z_runtime_execute(rt, "fails", in);
    CHECK(out.error != NULL);
    CHECK_INT(out.attempts, 1);
    CHECK_INT(out.attempt_error_count, 1);
    CHECK(out.error && strstr(out.error->message, "attempt 1 failed") != NULL);
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute(rt, "invalid", in);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_VALIDATION);
    CHECK_INT(out.attempts, 1);
    CHECK_INT(invalid_calls, 1);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static int retry_all(const am2z_error *e, int attempt, void *ud) {
    (void)e; (void)attempt; (void)ud;
    return 1;
}

static void test_retries_exhausted(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(1, lg);
    am2z_processor_desc pd;
    am2z_state *in = st_count(0);
    am2z_outcome out = {0};
    am2z_redis *r = fx_conn(port);
    char key[200];
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    CHECK(rt && r);
    if (!rt || !r) { am2z_runtime_free(rt); am2z_redis_free(r); am2z_logger_release(lg); am2z_value_release(in); return; }
    memset(&pd, 0, sizeof pd);
    pd.name = "fails3";
    pd.fn = p_always_fail;
    pd.retry.max_attempts = 3;
    pd.retry.delay_ms = 5;
    pd.retry.should_retry = retry_all;
    reg(rt, am2z_processor_new(&pd, NULL));
    out = am2z_runtime_execute(rt, "fails3", in);
    CHECK(out.error && strstr(out.error->message, "attempt 3 failed") != NULL);
    CHECK_INT(out.attempts, 3);
    CHECK_INT(out.attempt_error_count, 3);
    if (out.attempt_error_count == 3) CHECK(strstr(out.attempt_errors[0]->message, "attempt 1 failed") != NULL);
    snprintf(key, sizeof key, "bull:am2z~fails3:%s", out.execution_id);
    CHECK(am2z_redis_command(r, &rep, "HMGET %s failedReason stacktrace atm", key) == AM2Z_STATUS_OK);
    if (rep.type == AM2Z_REPLY_ARRAY && rep.len == 3) {
        am2z_value *st = am2z_json_parse(am2z_reply_str(am2z_reply_at(&rep, 1)), AM2Z_NTS, NULL, NULL);
        CHECK(strstr(am2z_reply_str(am2z_reply_at(&rep, 0)), "attempt 3 failed") != NULL);
        CHECK_INT(am2z_value_len(st), 3);
        CHECK_INT(am2z_value_type(am2z_value_at(st, 0)), AM2Z_TYPE_STRING);
        CHECK_STR(am2z_reply_str(am2z_reply_at(&rep, 2)), "3");
        am2z_value_release(st);
    }
    am2z_reply_clear(&rep);
    CHECK_INT(cmd_int(r, "ZCARD %s", "bull:am2z~fails3:failed"), 1);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_timeout_cancel(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_processor_desc pd;
    am2z_state *in = st_count(0);
    am2z_outcome out = {0};
    int64_t t0;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    memset(&pd, 0, sizeof pd);
    pd.name = "waitcancel";
    pd.fn = p_wait_cancel;
    pd.timeout_ms = 200;
    reg(rt, am2z_processor_new(&pd, NULL));
    t0 = am2z_now_ms();
    out = am2z_runtime_execute(rt, "waitcancel", in);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT);
    CHECK(am2z_now_ms() - t0 >= 190 && am2z_now_ms() - t0 < 1000);
    am2z_outcome_clear(&out);
    t_redis_sleep_ms(100);
    CHECK_INT(__atomic_load_n(&saw_cancel, __ATOMIC_SEQ_CST), 1);
    /* a child of a timed-out parent is cancelled too */
    pd.name = "callwaiter";
    pd.fn = p_call_waiter;
    pd.timeout_ms = 300;
    reg(rt, am2z_processor_new(&pd, NULL));
    t0 = am2z_now_ms();
    out = am2z_runtime_execute(rt, "callwaiter", in);
    CHECK(out.error != NULL);
    CHECK(am2z_now_ms() - t0 < 1500);
    am2z_outcome_clear(&out);
    t_redis_sleep_ms(150);
    CHECK_INT(__atomic_load_n(&saw_cancel, __ATOMIC_SEQ_CST), 2);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_composites(int concurrency) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(concurrency, lg);
    am2z_processor *inc = plain("inc", p_inc), *dbl = plain("double", p_double), *add = plain("add10", p_add10);
    am2z_processor *steps[3], *chain, *par, *outer, *branches[3];
    am2z_chain_desc cd;
    am2z_parallel_desc pdsc;
    am2z_state *in = st_count(5);
    am2z_outcome out = {0};
    am2z_redis *r = fx_conn(port);
    CHECK(rt && r);
    if (!rt || !r) { am2z_runtime_free(rt); am2z_redis_free(r); am2z_logger_release(lg); return; }
    /* constructors consume: inc is used three times, dbl twice */
    steps[0] = am2z_processor_retain(inc); steps[1] = am2z_processor_retain(dbl); steps[2] = add;
    memset(&cd, 0, sizeof cd);
    cd.name = "chain3";
    cd.steps = steps;
    cd.count = 3;
    chain = am2z_chain_new(&cd, NULL);
    branches[0] = chain; branches[1] = am2z_processor_retain(inc); branches[2] = dbl;
    memset(&pdsc, 0, sizeof pdsc);
    pdsc.name = "par3";
    pdsc.branches = branches;
    pdsc.count = 3;
    par = am2z_parallel_new(&pdsc, NULL);
    steps[0] = par; steps[1] = inc;
    cd.name = "outer";
    cd.steps = steps;
    cd.count = 2;
    outer = am2z_chain_new(&cd, NULL);
    CHECK(chain && par && outer);
    CHECK_INT(am2z_runtime_register(rt, outer), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "chain3", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "count", 0), 22); /* (5+1)*2+10 */
    am2z_outcome_clear(&out);
    /* the steps ran as jobs on their own queues */
    CHECK(cmd_int(r, "ZCARD %s", "bull:am2z~double:completed") >= 1);
    out = am2z_runtime_execute(rt, "outer", in);
    CHECK(out.error == NULL);
    CHECK(out.state != NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}
static void test_composites_spread(void) { test_composites(3); }
static void test_concurrency_one(void) { test_composites(1); }

static int ev_started, ev_completed, ev_created, ev_cleanup;
static void on_event(const char *event, const am2z_value *data, void *ud) {
    (void)ud;
    if (strcmp(event, "processor:job:started") == 0) __atomic_add_fetch(&ev_started, 1, __ATOMIC_SEQ_CST);
    if (strcmp(event, "processor:job:completed") == 0) {
        /* executionTime: ms as a double, as on the local runtime */
        CHECK(am2z_value_type(am2z_value_find(data, "executionTime", 13)) == AM2Z_TYPE_DOUBLE);
        __atomic_add_fetch(&ev_completed, 1, __ATOMIC_SEQ_CST);
    }
    if (strcmp(event, "session:created") == 0) __atomic_add_fetch(&ev_created, 1, __ATOMIC_SEQ_CST);
    if (strcmp(event, "session:cleanup") == 0) __atomic_add_fetch(&ev_cleanup, 1, __ATOMIC_SEQ_CST);
}

static long client_count(am2z_redis *r) {
    am2z_reply rep;
    long n = -1;
    const char *s;
    memset(&rep, 0, sizeof rep);
    if (am2z_redis_command(r, &rep, "CLIENT LIST") == AM2Z_STATUS_OK) {
        n = 0;
        for (s = am2z_reply_str(&rep); (s = strchr(s, '\n')) != NULL; s++) n++;
    }
    am2z_reply_clear(&rep);
    return n;
}

static void test_sessions(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_processor *inc = plain("inc", p_inc), *dbl = plain("double", p_double), *steps[2], *chain;
    am2z_chain_desc cd;
    am2z_state *in = st_count(1);
    am2z_outcome out = {0};
    am2z_redis *r = fx_conn(port);
    am2z_value *v;
    long clients0, keys0;
    int i, bad = 0;
    CHECK(rt && r);
    if (!rt || !r) { am2z_runtime_free(rt); am2z_redis_free(r); am2z_logger_release(lg); return; }
    am2z_runtime_on(rt, "*", on_event, NULL);
    steps[0] = inc; steps[1] = dbl;
    memset(&cd, 0, sizeof cd);
    cd.name = "incdbl";
    cd.steps = steps;
    cd.count = 2;
    chain = am2z_chain_new(&cd, NULL);
    CHECK_INT(am2z_runtime_register(rt, chain), AM2Z_STATUS_OK);
    out = am2z_runtime_execute_in_session(rt, "incdbl", in, "tenant-7");
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "count", 0), 4);
    am2z_outcome_clear(&out);
    /* the children ran on the session's queues */
    CHECK(cmd_int(r, "ZCARD %s", "bull:am2z~inc~tenant-7:completed") == 1);
    CHECK(cmd_int(r, "ZCARD %s", "bull:am2z~double~tenant-7:completed") == 1);
    CHECK_INT(cmd_int(r, "ZCARD %s", "bull:am2z~inc:completed"), 0);
    CHECK_INT(ev_created, 1);
    CHECK(ev_started >= 3 && ev_completed >= 3);
    v = am2z_runtime_active_sessions(rt);
    CHECK_INT(am2z_value_len(v), 1);
    CHECK_STR(am2z_value_as_string(am2z_value_at(v, 0), NULL), "tenant-7");
    am2z_value_release(v);
    v = am2z_runtime_session_stats(rt, "tenant-7");
    CHECK_INT(am2z_value_get_int(v, "queues.inc.completed", -1), 1);
    am2z_value_release(v);
    CHECK(am2z_queue_state_set(rt, "tenant-7", in, 0, NULL) == AM2Z_STATUS_OK);
    CHECK(scan_count(r, "*tenant-7*") > 0);
    CHECK_INT(am2z_runtime_stop_session(rt, "tenant-7", 1000), AM2Z_STATUS_OK);
    CHECK_INT(scan_count(r, "*tenant-7*"), 0);
    CHECK_INT(ev_cleanup, 1);
    v = am2z_runtime_active_sessions(rt);
    CHECK_INT(am2z_value_len(v), 0);
    am2z_value_release(v);
    /* 200 create/stop cycles: no connection and no key is left behind */
    clients0 = client_count(r);
    keys0 = scan_count(r, "*");
    for (i = 0; i < 200; i++) {
        char sid[32];
        snprintf(sid, sizeof sid, "cyc-%d", i);
        out = am2z_runtime_execute_in_session(rt, "inc", in, sid);
        if (out.error || am2z_value_get_int(out.state, "count", 0) != 2) bad++;
        am2z_outcome_clear(&out);
        if (am2z_runtime_stop_session(rt, sid, 1000) != AM2Z_STATUS_OK) bad++;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(scan_count(r, "*cyc-*"), 0);
    /* a leak per session would add 200; the runtime's pool may legitimately grow to its
       16 connections when threads borrow at once (seen on a loaded CI machine) */
    CHECK(client_count(r) <= clients0 + 16);
    CHECK(scan_count(r, "*") <= keys0);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_stop_session_cancels(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(1, lg);
    am2z_processor_desc pd;
    am2z_state *in = st_count(0);
    am2z_execution *e1, *e2;
    am2z_outcome out = {0};
    am2z_redis *r = fx_conn(port);
    int before = __atomic_load_n(&saw_cancel, __ATOMIC_SEQ_CST);
    CHECK(rt && r);
    if (!rt || !r) { am2z_runtime_free(rt); am2z_redis_free(r); am2z_logger_release(lg); am2z_value_release(in); return; }
    memset(&pd, 0, sizeof pd);
    pd.name = "waitcancel";
    pd.fn = p_wait_cancel;
    reg(rt, am2z_processor_new(&pd, NULL));
    e1 = am2z_runtime_submit(rt, "waitcancel", in, "sx", NULL);
    e2 = am2z_runtime_submit(rt, "waitcancel", in, "sx", NULL); /* queued behind e1 (one worker) */
    CHECK(e1 && e2);
    t_redis_sleep_ms(100);
    CHECK_INT(am2z_runtime_stop_session(rt, "sx", 2000), AM2Z_STATUS_OK);
    CHECK_INT(am2z_execution_wait(e1, 2000, &out), AM2Z_STATUS_OK);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_execution_wait(e2, 2000, &out), AM2Z_STATUS_OK);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
    am2z_outcome_clear(&out);
    am2z_execution_free(e1);
    am2z_execution_free(e2);
    CHECK_INT(__atomic_load_n(&saw_cancel, __ATOMIC_SEQ_CST), before + 1);
    CHECK_INT(scan_count(r, "*sx*"), 0);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static am2z_state *upd_inc(const am2z_state *cur, void *ud) {
    (void)ud;
    return am2z_value_set(cur ? am2z_value_retain(cur) : am2z_state_new("st", am2z_value_object(), NULL), "n",
                          am2z_value_int(am2z_value_get_int(cur, "n", 0) + 1));
}
/* Writes behind the updater's back every round, so its compare-and-set always loses. */
static am2z_state *upd_racing(const am2z_state *cur, void *ud) {
    am2z_runtime *rt = (am2z_runtime *)ud;
    am2z_queue_state_set(rt, "st", cur, 0, NULL);
    return upd_inc(cur, NULL);
}
static am2z_state *upd_none(const am2z_state *cur, void *ud) {
    (void)cur; (void)ud;
    return NULL;
}

static void test_state_manager(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(AM2Z_QUEUE_NO_WORKERS, lg);
    am2z_state *s = NULL, *in = am2z_state_parse("st", "{\"b\":1,\"a\":[1,2]}", AM2Z_NTS, NULL);
    int64_t ver = 0;
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    int i;
    memset(&rep, 0, sizeof rep);
    CHECK(rt && r && in);
    if (!rt || !r) { am2z_runtime_free(rt); am2z_redis_free(r); am2z_logger_release(lg); am2z_value_release(in); return; }
    CHECK_INT(am2z_queue_state_get(rt, "st", &s, &ver), AM2Z_STATUS_NOT_FOUND);
    CHECK_STR(am2z_status_detail(), "state 'st': none stored");
    CHECK_INT(am2z_queue_state_get(rt, "bad id", &s, &ver), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_queue_state_set(rt, "st", in, 0, &ver), AM2Z_STATUS_OK);
    CHECK_INT(ver, 1);
    CHECK_INT(am2z_queue_state_get(rt, "st", &s, &ver), AM2Z_STATUS_OK);
    CHECK(am2z_value_equal(s, in));
    CHECK_INT(ver, 1);
    am2z_value_release(s);
    for (i = 0; i < 3; i++) CHECK_INT(am2z_queue_state_update(rt, "st", upd_inc, NULL, 0, NULL, &ver), AM2Z_STATUS_OK);
    CHECK_INT(ver, 4);
    CHECK_INT(am2z_queue_state_get(rt, "st", &s, NULL), AM2Z_STATUS_OK);
    CHECK_INT(am2z_value_get_int(s, "n", 0), 3);
    am2z_value_release(s);
    /* lose every race: a conflict after AM2Z_QUEUE_STATE_RETRIES rounds, with a clear error */
    CHECK_INT(am2z_queue_state_update(rt, "st", upd_racing, rt, 0, NULL, &ver), AM2Z_STATUS_CONFLICT);
    CHECK(strstr(am2z_status_detail(), "concurrent modifications") != NULL);
    CHECK_INT(am2z_queue_state_update(rt, "st", upd_none, NULL, 0, NULL, &ver), AM2Z_STATUS_CANCELLED);
    /* TTL */
    CHECK_INT(am2z_queue_state_set(rt, "st", in, 60000, &ver), AM2Z_STATUS_OK);
    CHECK(cmd_int(r, "PTTL %s", "bull:am2z:state:st") > 50000);
    /* integrity: a tampered state is refused */
    am2z_redis_command(r, &rep, "HSET bull:am2z:state:st state %s", "{\"a\":[1,2],\"b\":2}");
    am2z_reply_clear(&rep);
    CHECK_INT(am2z_queue_state_get(rt, "st", &s, &ver), AM2Z_STATUS_PROTOCOL);
    CHECK(strncmp(am2z_status_detail(), "state 'st': integrity check failed", 34) == 0);
    CHECK_INT(am2z_queue_state_delete(rt, "st"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_queue_state_get(rt, "st", &s, &ver), AM2Z_STATUS_NOT_FOUND);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

/* Adds a raw job (as a foreign producer would) and waits until it is finished. */
static void raw_job(am2z_redis *r, const char *id, const char *name, const char *data) {
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    if (data) am2z_redis_command(r, &rep, "HSET bull:am2z~inc:%s name %s data %s opts {} timestamp 1", id, name, data);
    else am2z_redis_command(r, &rep, "HSET bull:am2z~inc:%s name %s opts {} timestamp 1", id, name);
    am2z_reply_clear(&rep);
    am2z_redis_command(r, &rep, "LPUSH bull:am2z~inc:wait %s", id);
    am2z_reply_clear(&rep);
    am2z_redis_command(r, &rep, "ZADD bull:am2z~inc:marker 0 0");
    am2z_reply_clear(&rep);
}
static const char *raw_field(am2z_redis *r, const char *id, const char *field, am2z_reply *rep) {
    int i;
    for (i = 0; i < 200; i++) {
        memset(rep, 0, sizeof *rep);
        if (am2z_redis_command(r, rep, "HGET bull:am2z~inc:%s finishedOn", id) == AM2Z_STATUS_OK && rep->type == AM2Z_REPLY_BULK) {
            am2z_reply_clear(rep);
            am2z_redis_command(r, rep, "HGET bull:am2z~inc:%s %s", id, field);
            return rep->type == AM2Z_REPLY_BULK ? am2z_reply_str(rep) : "";
        }
        am2z_reply_clear(rep);
        t_redis_sleep_ms(10);
    }
    return "";
}

static void test_bad_and_foreign_jobs(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(1, lg);
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    am2z_value *v;
    CHECK(rt && r);
    if (!rt || !r) { am2z_runtime_free(rt); am2z_redis_free(r); am2z_logger_release(lg); return; }
    reg(rt, plain("inc", p_inc));
    raw_job(r, "bad1", "inc", "not json");
    CHECK(strstr(raw_field(r, "bad1", "failedReason", &rep), "not valid JSON") != NULL);
    am2z_reply_clear(&rep);
    raw_job(r, "bad2", "inc", NULL);
    CHECK(strstr(raw_field(r, "bad2", "failedReason", &rep), "no data") != NULL);
    am2z_reply_clear(&rep);
    raw_job(r, "bad3", "other", "{}");
    CHECK(strstr(raw_field(r, "bad3", "failedReason", &rep), "other") != NULL);
    am2z_reply_clear(&rep);
    raw_job(r, "bad4", "inc", "{\"am2z\":1,\"state\":5}");
    CHECK(strstr(raw_field(r, "bad4", "failedReason", &rep), "state") != NULL);
    am2z_reply_clear(&rep);
    /* the worker is still alive, and a foreign job (plain data) is run with data as state */
    raw_job(r, "node1", "inc", "{\"count\":20}");
    v = am2z_json_parse(raw_field(r, "node1", "returnvalue", &rep), AM2Z_NTS, NULL, NULL);
    CHECK_INT(am2z_value_get_int(v, "count", 0), 21);
    am2z_value_release(v);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_foreign_finish(void) {
    /* a job finished by someone else (no am2z reply): the caller reads the job hash */
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(AM2Z_QUEUE_NO_WORKERS, lg);
    am2z_redis *r = fx_conn(port);
    am2z_state *in = st_count(1);
    am2z_execution *e;
    am2z_outcome out = {0};
    am2z_reply rep;
    const char *id;
    memset(&rep, 0, sizeof rep);
    CHECK(rt && r);
    if (!rt || !r) { am2z_runtime_free(rt); am2z_redis_free(r); am2z_logger_release(lg); am2z_value_release(in); return; }
    reg(rt, plain("inc", p_inc));
    e = am2z_runtime_submit(rt, "inc", in, NULL, NULL);
    CHECK(e != NULL);
    am2z_redis_command(r, &rep, "RPOP bull:am2z~inc:wait");
    id = am2z_reply_str(&rep);
    {
        am2z_reply r2;
        memset(&r2, 0, sizeof r2);
        am2z_redis_command(r, &r2, "HSET bull:am2z~inc:%s returnvalue {\"count\":99} finishedOn 1 atm 1", id);
        am2z_reply_clear(&r2);
    }
    am2z_reply_clear(&rep);
    CHECK_INT(am2z_execution_wait(e, 3000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "count", 0), 99);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_stalled_recovery(void) {
    /* a job left active with an expired lock (a dead worker) is recovered and run */
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt;
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    int i;
    memset(&rep, 0, sizeof rep);
    CHECK(r != NULL);
    if (!r) { am2z_logger_release(lg); return; }
    am2z_redis_command(r, &rep, "HSET bull:am2z~inc:dead1 name inc data {\"count\":1} opts {} timestamp 1");
    am2z_reply_clear(&rep);
    am2z_redis_command(r, &rep, "HSET bull:am2z~inc:meta opts.maxLenEvents 10000");
    am2z_reply_clear(&rep);
    am2z_redis_command(r, &rep, "LPUSH bull:am2z~inc:active dead1");
    am2z_reply_clear(&rep);
    rt = rt_new(1, lg);
    CHECK(rt != NULL);
    if (rt) {
        reg(rt, plain("inc", p_inc));
        for (i = 0; i < 400; i++) {
            am2z_redis_command(r, &rep, "HGET bull:am2z~inc:dead1 returnvalue");
            if (rep.type == AM2Z_REPLY_BULK) break;
            am2z_reply_clear(&rep);
            t_redis_sleep_ms(10);
        }
        CHECK(rep.type == AM2Z_REPLY_BULK && strstr(am2z_reply_str(&rep), "\"count\":2") != NULL);
        am2z_reply_clear(&rep);
        CHECK_INT(cmd_int(r, "HGET %s stc", "bull:am2z~inc:dead1") == -1, 1); /* a bulk, not an integer */
    }
    am2z_runtime_free(rt);
    am2z_redis_free(r);
    am2z_logger_release(lg);
}

static void test_rate_limit(void) {
    /* 2 per minute: two run at once, the third waits for the window (BullMQ's limiter key) */
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_processor_desc pd;
    am2z_state *in = st_count(0);
    am2z_execution *e[3];
    am2z_outcome out = {0};
    am2z_redis *r = fx_conn(port);
    int i;
    CHECK(rt && r);
    if (!rt || !r) { am2z_runtime_free(rt); am2z_redis_free(r); am2z_logger_release(lg); am2z_value_release(in); return; }
    memset(&pd, 0, sizeof pd);
    pd.name = "limited";
    pd.fn = p_inc;
    pd.queue.rate_limit_per_minute = 2;
    reg(rt, am2z_processor_new(&pd, NULL));
    for (i = 0; i < 3; i++) e[i] = am2z_runtime_submit(rt, "limited", in, NULL, NULL);
    for (i = 0; i < 2; i++) {
        CHECK_INT(am2z_execution_wait(e[i], 2000, &out), AM2Z_STATUS_OK);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
    }
    CHECK_INT(am2z_execution_wait(e[2], 300, &out), AM2Z_STATUS_TIMEOUT);
    CHECK_INT(cmd_int(r, "GET %s", "bull:am2z~limited:limiter") == -1, 1); /* a bulk "2" */
    CHECK(cmd_int(r, "PTTL %s", "bull:am2z~limited:limiter") > 1000);
    for (i = 0; i < 3; i++) am2z_execution_free(e[i]);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static am2z_result p_nap(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    t_redis_sleep_ms(200); /* ignores cancellation on purpose */
    return p_inc(ctx, in);
}

static void test_stop_puts_jobs_back(void) {
    /* a worker that stops mid-job gives the job back (attempt not counted); another
       worker finishes it and the caller in a third runtime gets the result */
    am2z_logger *lg = fx_quiet();
    am2z_runtime *prod = rt_new(AM2Z_QUEUE_NO_WORKERS, lg), *a = rt_new(1, lg), *b;
    am2z_state *in = st_count(1);
    am2z_execution *e;
    am2z_outcome out = {0};
    CHECK(prod && a);
    if (!prod || !a) { am2z_runtime_free(prod); am2z_runtime_free(a); am2z_logger_release(lg); am2z_value_release(in); return; }
    reg(prod, plain("nap", p_nap));
    reg(a, plain("nap", p_nap));
    e = am2z_runtime_submit(prod, "nap", in, NULL, NULL);
    CHECK(e != NULL);
    t_redis_sleep_ms(80); /* a is inside the job now */
    am2z_runtime_free(a);
    b = rt_new(1, lg);
    CHECK(b != NULL);
    if (b) reg(b, plain("nap", p_nap));
    CHECK_INT(am2z_execution_wait(e, 3000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "count", 0), 2);
    CHECK_INT(out.attempts, 1);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    am2z_runtime_free(b);
    am2z_runtime_free(prod);
    am2z_value_release(in);
    am2z_logger_release(lg);
}

static long long evalsha_calls(am2z_redis *r) {
    am2z_reply rep;
    const char *p;
    long long n = -1;
    memset(&rep, 0, sizeof rep);
    if (am2z_redis_command(r, &rep, "INFO commandstats") == AM2Z_STATUS_OK && (p = strstr(am2z_reply_str(&rep), "cmdstat_evalsha:calls=")))
        n = atoll(p + 22);
    am2z_reply_clear(&rep);
    return n;
}

static void test_batching(void) {
    /* a deep queue of quick jobs is served AM2Z_QUEUE_BATCH jobs per script call */
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(1, lg);
    am2z_redis *r = fx_conn(port);
    am2z_state *ins[400];
    am2z_outcome outs[400] = {{0}};
    am2z_reply rep;
    long long calls;
    size_t i;
    int ok = 1;
    memset(&rep, 0, sizeof rep);
    CHECK(rt && r);
    if (!rt || !r) { am2z_runtime_free(rt); am2z_redis_free(r); am2z_logger_release(lg); return; }
    reg(rt, plain("inc", p_inc));
    for (i = 0; i < 400; i++) ins[i] = st_count((int64_t)i);
    am2z_redis_command(r, &rep, "CONFIG RESETSTAT");
    am2z_reply_clear(&rep);
    CHECK_INT(am2z_runtime_execute_many(rt, "inc", (const am2z_state *const *)ins, 400, NULL, outs), AM2Z_STATUS_OK);
    calls = evalsha_calls(r);
    for (i = 0; i < 400; i++) {
        if (outs[i].error || am2z_value_get_int(outs[i].state, "count", -1) != (int64_t)i + 1) ok = 0;
        am2z_outcome_clear(&outs[i]);
        am2z_value_release(ins[i]);
    }
    CHECK(ok);
    /* one job per call would take >= 400 calls (plus 4 for the adds) */
    CHECK(calls > 0 && calls < 400 / 4);
    if (calls >= 400 / 4) fprintf(stderr, "evalsha calls for 400 jobs: %lld\n", calls);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_restart(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(1, lg);
    am2z_state *in = st_count(1);
    am2z_outcome out = {0};
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    reg(rt, plain("inc", p_inc));
    CHECK_INT(am2z_runtime_stop(rt, 100), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "inc", in);
    CHECK(out.error != NULL);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "inc", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "count", 0), 2);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_retention(void) {
    /* keep_completed by count, and KEEP_NONE, hold while jobs complete in batches */
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d = qdesc(2);
    am2z_runtime *rt;
    am2z_redis *r = fx_conn(port);
    am2z_state *ins[300];
    am2z_outcome outs[300] = {{0}};
    size_t i;
    int pass, ok = 1;
    CHECK(r != NULL);
    for (i = 0; i < 300; i++) ins[i] = st_count((int64_t)i);
    for (pass = 0; pass < 2 && r; pass++) {
        d.logger = lg;
        d.keep_completed = pass == 0 ? 10 : AM2Z_QUEUE_KEEP_NONE;
        rt = am2z_queue_runtime_new(&d, NULL);
        CHECK(rt != NULL);
        if (!rt) break;
        reg(rt, plain("inc", p_inc));
        CHECK_INT(am2z_runtime_execute_many(rt, "inc", (const am2z_state *const *)ins, 300, NULL, outs), AM2Z_STATUS_OK);
        for (i = 0; i < 300; i++) {
            if (outs[i].error || am2z_value_get_int(outs[i].state, "count", -1) != (int64_t)i + 1) ok = 0;
            am2z_outcome_clear(&outs[i]);
        }
        CHECK(ok);
        CHECK_INT(cmd_int(r, "ZCARD %s", "bull:am2z~inc:completed"), pass == 0 ? 10 : 0);
        CHECK_INT(scan_count(r, "bull:am2z~inc:inc-*"), pass == 0 ? 10 : 0);
        CHECK_INT(cmd_int(r, "LLEN %s", "bull:am2z~inc:active"), 0);
        am2z_runtime_free(rt);
        fx_flushall(port);
    }
    for (i = 0; i < 300; i++) am2z_value_release(ins[i]);
    am2z_redis_free(r);
    am2z_logger_release(lg);
}

static void test_stop_idle_session(void) {
    /* stopping a session none of whose jobs runs is one script call (cancel and drop
       together), and still deletes every key of it */
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d = qdesc(1);
    am2z_runtime *rt;
    am2z_redis *r = fx_conn(port);
    am2z_state *in = st_count(1);
    am2z_reply rep;
    am2z_outcome out = {0};
    int i;
    d.stalled_interval_ms = 60000; /* no background scan script during the count */
    d.logger = lg;
    rt = am2z_queue_runtime_new(&d, NULL);
    memset(&rep, 0, sizeof rep);
    CHECK(rt && r);
    if (rt && r) {
        reg(rt, plain("inc", p_inc));
        for (i = 0; i < 2; i++) { /* the first round loads the scripts */
            out = am2z_runtime_execute_in_session(rt, "inc", in, "idle-s");
            CHECK(out.error == NULL);
            am2z_outcome_clear(&out);
            CHECK(am2z_queue_state_set(rt, "idle-s", in, 0, NULL) == AM2Z_STATUS_OK);
            /* the worker may still pop the session's second wake entry and fetch nothing */
            t_redis_sleep_ms(200);
            am2z_redis_command(r, &rep, "CONFIG RESETSTAT");
            am2z_reply_clear(&rep);
            CHECK_INT(am2z_runtime_stop_session(rt, "idle-s", 1000), AM2Z_STATUS_OK);
            if (i == 1) CHECK_INT(evalsha_calls(r), 1);
            CHECK_INT(scan_count(r, "*idle-s*"), 0);
        }
    }
    am2z_runtime_free(rt);
    am2z_redis_free(r);
    am2z_value_release(in);
    am2z_logger_release(lg);
}

static void test_stop_without_redis(void) {
    /* Q2 F3: a runtime whose Redis died must still stop within its grace period (it
       took ~8 s: the threads retried connecting with a backoff stop did not interrupt) */
    static t_redis gone;
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d = qdesc(4);
    am2z_runtime *rt;
    am2z_state *in = st_count(1);
    am2z_outcome out = {0};
    int64_t t0;
    if (t_redis_start(&gone, NULL) != 0) { CHECK(!"second redis-server"); am2z_value_release(in); am2z_logger_release(lg); return; }
    d.redis.port = gone.port;
    d.logger = lg;
    rt = am2z_queue_runtime_new(&d, NULL);
    CHECK(rt != NULL);
    if (rt) {
        reg(rt, plain("inc", p_inc));
        out = am2z_runtime_execute(rt, "inc", in);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
        t_redis_kill(&gone);
        t_redis_sleep_ms(300); /* the threads notice and start reconnecting */
        t0 = am2z_now_ms();
        CHECK_INT(am2z_runtime_stop(rt, 200), AM2Z_STATUS_OK);
        CHECK(am2z_now_ms() - t0 < 1500);
        if (am2z_now_ms() - t0 >= 1500) fprintf(stderr, "stop without redis: %lld ms\n", (long long)(am2z_now_ms() - t0));
        am2z_runtime_free(rt);
    }
    t_redis_stop(&gone);
    am2z_value_release(in);
    am2z_logger_release(lg);
}

/* -- API 1.0: the runtime interface as on the local runtime -- */

static int marked, marked_cancelled;
static am2z_result p_mark(am2z_ctx *ctx, const am2z_state *in) {
    int64_t t0 = am2z_now_ms();
    while (!am2z_ctx_cancelled(ctx) && am2z_now_ms() - t0 < 150) t_redis_sleep_ms(2);
    if (am2z_ctx_cancelled(ctx)) __atomic_store_n(&marked_cancelled, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&marked, 1, __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_retain(in));
}

static int wait_set(int *flag, int ms) {
    int i;
    for (i = 0; i < ms && !__atomic_load_n(flag, __ATOMIC_SEQ_CST); i++) t_redis_sleep_ms(1);
    return __atomic_load_n(flag, __ATOMIC_SEQ_CST);
}

/* submit's status and detail, the handle's id, the outcome's execution and session,
   and metadata.sessionId of the output. */
static void test_api_submit_and_outcome(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_state *in = st_count(1);
    am2z_processor_desc none;
    am2z_execution *e;
    am2z_outcome out = {0};
    am2z_status s = AM2Z_STATUS_OK;
    char id[AM2Z_EXECUTION_ID_SIZE];
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    memset(&none, 0, sizeof none);
    none.name = "broken";
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&none, NULL)), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "register: the processor is NULL (processor 'broken': no fn)");
    reg(rt, plain("inc", p_inc));
    CHECK(am2z_runtime_submit(rt, "nope", in, NULL, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_NOT_FOUND);
    CHECK_STR(am2z_status_detail(), "submit 'nope': processor not registered");
    CHECK(am2z_runtime_submit(rt, "inc", in, "a b", &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_INVALID_ARGUMENT);
    e = am2z_runtime_submit(rt, "inc", in, "tenant-9", &s);
    CHECK(e != NULL);
    CHECK_INT(s, AM2Z_STATUS_OK);
    if (e) {
        snprintf(id, sizeof id, "%s", am2z_execution_id(e));
        CHECK(strncmp(id, "inc-", 4) == 0);
        CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
        CHECK(out.error == NULL);
        CHECK_STR(out.execution_id, id);
        CHECK_STR(out.session_id, "tenant-9");
        CHECK_STR(am2z_state_session_id(out.state), "tenant-9"); /* the input said "t" */
        CHECK(out.duration_ms > 0 && out.started_at > 1700000000000LL);
        am2z_outcome_clear(&out);
        am2z_execution_free(e);
    }
    out = am2z_runtime_execute(rt, "inc", in);
    CHECK_STR(out.session_id, "default");
    CHECK_STR(am2z_state_session_id(out.state), "default");
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_stop(rt, 0), AM2Z_STATUS_OK);
    CHECK(am2z_runtime_submit(rt, "inc", in, NULL, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_NOT_STARTED);
    CHECK(strncmp(am2z_status_detail(), "submit 'inc': the runtime is stopped", 36) == 0);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_api_detach_and_free(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_state *in = st_count(1);
    am2z_execution *e;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    reg(rt, plain("mark", p_mark));
    marked = marked_cancelled = 0;
    e = am2z_runtime_submit(rt, "mark", in, NULL, NULL);
    CHECK(e != NULL);
    am2z_execution_detach(e);
    CHECK(wait_set(&marked, 3000));
    CHECK_INT(marked_cancelled, 0); /* ran to completion */
    marked = marked_cancelled = 0;
    e = am2z_runtime_submit(rt, "mark", in, NULL, NULL);
    CHECK(e != NULL);
    t_redis_sleep_ms(40);
    am2z_execution_free(e);
    CHECK(wait_set(&marked, 3000));
    CHECK_INT(marked_cancelled, 1); /* free cancels */
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

/* Reusing outcomes without clearing them does not leak (LeakSanitizer checks). */
static void test_api_outcome_reuse(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_state *in = st_count(1);
    const am2z_state *ins[2];
    am2z_outcome out = {0}, outs[2] = {{0}};
    am2z_execution *e;
    am2z_result r;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    reg(rt, plain("inc", p_inc));
    ins[0] = ins[1] = in;
    CHECK_INT(am2z_runtime_execute_many(rt, "inc", ins, 2, "bulk", outs), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_execute_many(rt, "inc", ins, 2, "bulk", outs), AM2Z_STATUS_OK);
    CHECK_STR(outs[1].session_id, "bulk");
    CHECK_INT(am2z_value_get_int(outs[1].state, "count", 0), 2);
    am2z_outcome_clear(&outs[0]);
    am2z_outcome_clear(&outs[1]);
    out = am2z_runtime_execute(rt, "inc", in);
    e = am2z_runtime_submit(rt, "inc", in, NULL, NULL);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK); /* out held the first */
    am2z_execution_free(e);
    r = am2z_outcome_to_result(&out);
    CHECK(r.state && !r.error && am2z_value_get_int(r.state, "count", 0) == 2);
    CHECK(out.state == NULL && out.execution_id[0] == '\0');
    am2z_result_clear(&r);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

/* is_started, the resolved configuration, per-processor stats by a dotted name,
   stop_all_sessions. */
/* CALLBACKS (section 7 of am2z.h) hold on the queue runtime too: a processor that stops
   or frees its own runtime is refused with a status and a detail, and the runtime keeps
   working. */
static am2z_result p_stop_self(am2z_ctx *ctx, const am2z_state *in) {
    am2z_runtime *rt = (am2z_runtime *)am2z_ctx_user_data(ctx);
    am2z_status stop = am2z_runtime_stop(rt, 0), start = am2z_runtime_start(rt);
    am2z_value *seen = am2z_value_object();
    am2z_runtime_free(rt); /* refused: logged, nothing freed */
    seen = am2z_value_set(seen, "stop", am2z_value_int(stop));
    seen = am2z_value_set(seen, "start", am2z_value_int(start));
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "seen", seen));
}

static void test_callbacks_refused(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(1, lg);
    am2z_state *in = st_count(1);
    am2z_processor_desc d;
    am2z_outcome out;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    memset(&d, 0, sizeof d);
    d.name = "stop-self";
    d.fn = p_stop_self;
    d.user_data = rt;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "stop-self", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "seen.stop", -1), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_value_get_int(out.state, "seen.start", -1), AM2Z_STATUS_INVALID_ARGUMENT);
    am2z_outcome_clear(&out);
    CHECK(am2z_runtime_is_started(rt));
    out = am2z_runtime_execute(rt, "stop-self", in); /* still serving */
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    am2z_runtime_free(rt);
    am2z_value_release(in);
    am2z_logger_release(lg);
}

/* Durations of absurd length (a wait, a processor timeout, a grace period of INT64_MAX
   ms) are capped, not multiplied into a signed overflow (UBSan stops the test otherwise). */
static void test_huge_durations(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(1, lg);
    am2z_state *in = st_count(1);
    am2z_processor_desc d;
    am2z_execution *e;
    am2z_outcome out = {0};
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    memset(&d, 0, sizeof d);
    d.name = "forever";
    d.fn = p_inc;
    d.timeout_ms = INT64_MAX / 2;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
    e = am2z_runtime_submit(rt, "forever", in, NULL, NULL);
    CHECK(e != NULL);
    if (e) {
        CHECK_INT(am2z_execution_wait(e, INT64_MAX, &out), AM2Z_STATUS_OK);
        CHECK(out.error == NULL && am2z_value_get_int(out.state, "count", 0) == 2);
        am2z_outcome_clear(&out);
        am2z_execution_free(e);
    }
    CHECK_INT(am2z_runtime_stop(rt, INT64_MAX), AM2Z_STATUS_OK);
    am2z_runtime_free(rt);
    am2z_value_release(in);
    am2z_logger_release(lg);
}

static void test_api_queries(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_state *in = st_count(1);
    am2z_runtime_settings c;
    am2z_outcome out = {0};
    am2z_execution *a, *b;
    am2z_value *ps;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    c = am2z_runtime_config(rt);
    CHECK_STR(c.kind, "queue");
    CHECK_INT(c.workers, 2);
    CHECK_INT(c.default_timeout_ms, 60000);
    CHECK_INT(c.max_call_depth, AM2Z_MAX_CALL_DEPTH);
    CHECK(am2z_runtime_is_started(rt));
    reg(rt, plain("img.resize", p_inc));
    out = am2z_runtime_execute(rt, "img.resize", in);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    ps = am2z_runtime_processor_stats(rt, "img.resize");
    CHECK(ps != NULL);
    CHECK_INT(am2z_value_get_int(ps, "completed", -1), 1);
    am2z_value_release(ps);
    CHECK(am2z_runtime_processor_stats(rt, "img") == NULL);
    reg(rt, plain("waitcancel", p_wait_cancel));
    a = am2z_runtime_submit(rt, "waitcancel", in, "sa", NULL);
    b = am2z_runtime_submit(rt, "waitcancel", in, "sb", NULL);
    CHECK(a && b);
    t_redis_sleep_ms(100);
    CHECK_INT(am2z_runtime_stop_all_sessions(rt, 0), AM2Z_STATUS_OK);
    if (a) {
        CHECK_INT(am2z_execution_wait(a, 3000, &out), AM2Z_STATUS_OK);
        CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
        am2z_execution_free(a);
    }
    if (b) {
        CHECK_INT(am2z_execution_wait(b, 3000, &out), AM2Z_STATUS_OK);
        CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
        am2z_execution_free(b);
    }
    am2z_outcome_clear(&out);
    CHECK(am2z_runtime_is_started(rt));
    CHECK_INT(am2z_runtime_stop(rt, 0), AM2Z_STATUS_OK);
    CHECK(!am2z_runtime_is_started(rt));
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

/* -- issue 9: runtime contracts under restarts and crashes -- */

/* Item 7: the keys of a runtime instance (worker wake-up keys ctl:<instance>:<n>, its
   reply list) are gone after free: the key count stays where the first cycle left it
   over 100 create/free cycles, some of them with results travelling through a reply
   list (a producer instance and a worker instance). */
static void test_instance_keys_freed(void) {
    am2z_logger *lg = fx_quiet();
    am2z_redis *r = fx_conn(port);
    am2z_state *in = st_count(1);
    am2z_queue_desc d = qdesc(2);
    long keys1 = -1, keys;
    int i, bad = 0;
    CHECK(r != NULL);
    if (!r) { am2z_logger_release(lg); am2z_value_release(in); return; }
    d.logger = lg;
    d.keep_completed = AM2Z_QUEUE_KEEP_NONE; /* no job hash stays: only the layout's keys */
    d.stalled_interval_ms = 60000;
    for (i = 0; i < 100; i++) {
        am2z_runtime *rt = am2z_queue_runtime_new(&d, NULL), *prod = NULL;
        if (!rt) { bad++; continue; }
        reg(rt, plain("inc", p_inc)); /* wakes the workers (ZADD ctl:<instance>:<n>) */
        if (i % 10 == 0) {
            am2z_queue_desc pd = d;
            am2z_outcome out = {0};
            pd.concurrency = AM2Z_QUEUE_NO_WORKERS;
            prod = am2z_queue_runtime_new(&pd, NULL);
            if (prod) {
                reg(prod, plain("inc", p_inc));
                out = am2z_runtime_execute(prod, "inc", in); /* the result comes through reply:<instance> */
                if (out.error) bad++;
                am2z_outcome_clear(&out);
            }
            am2z_runtime_free(prod);
        }
        am2z_runtime_free(rt);
        if (i == 0) keys1 = scan_count(r, "*");
    }
    CHECK_INT(bad, 0);
    CHECK_INT(scan_count(r, "bull:am2z:ctl:*"), 0);
    CHECK_INT(scan_count(r, "bull:am2z:reply:*"), 0);
    keys = scan_count(r, "*");
    CHECK(keys1 > 0 && keys <= keys1 + 1); /* + 1: the stalled-check key comes and goes */
    if (keys > keys1 + 1) fprintf(stderr, "keys: %ld after the first cycle, %ld after 100\n", keys1, keys);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_logger_release(lg);
}

/* The child process of test_instance_keys_after_crash: a runtime with one worker thread
   held busy by a job while a registration wakes the workers, so a wake-up key is
   pending when the parent kills it. Prints "ready <instance>". */
static int hold_started;
static am2z_result p_hold(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    __atomic_store_n(&hold_started, 1, __ATOMIC_SEQ_CST);
    t_redis_sleep_ms(30000);
    return am2z_ok(am2z_value_retain(in));
}
static int crash_child(int child_port) {
    am2z_logger *lg;
    am2z_runtime *rt;
    am2z_execution *e;
    am2z_state *in = st_count(1);
    port = child_port;
    lg = fx_quiet();
    rt = rt_new(1, lg);
    if (!rt) return 2;
    am2z_runtime_register(rt, plain("hold", p_hold));
    e = am2z_runtime_submit(rt, "hold", in, NULL, NULL);
    if (!e || !wait_set(&hold_started, 5000)) return 3;
    am2z_runtime_register(rt, plain("inc", p_inc)); /* the only worker is busy: its wake-up waits */
    printf("ready %s\n", am2z_queue_instance_id(rt));
    fflush(stdout);
    t_redis_sleep_ms(30000);
    return 0;
}

static void test_instance_keys_after_crash(void) {
    tp_proc child;
    char self[512], port_s[16], line[256], pat[128];
    char *argv[4];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    am2z_redis *r = fx_conn(port);
    long left = -1;
    int64_t t0;
    CHECK(n > 0 && r != NULL);
    if (n <= 0 || !r) { am2z_redis_free(r); return; }
    self[n] = 0;
    snprintf(port_s, sizeof port_s, "%d", port);
    argv[0] = self; argv[1] = (char *)"--crash-child"; argv[2] = port_s; argv[3] = NULL;
    CHECK_INT(tp_spawn(&child, argv, NULL, 1), 0);
    CHECK_INT(tp_readline(&child, line, sizeof line, 20000), 1);
    CHECK(strncmp(line, "ready ", 6) == 0);
    snprintf(pat, sizeof pat, "bull:am2z:ctl:%.16s:*", line + 6);
    CHECK(scan_count(r, pat) >= 1); /* the pending wake-up of the busy worker */
    tp_stop(&child, SIGKILL, 1000);
    t0 = am2z_now_ms();
    while (am2z_now_ms() - t0 < 10000 && (left = scan_count(r, pat)) != 0) t_redis_sleep_ms(50);
    CHECK_INT(left, 0);
    if (left == 0) fprintf(stderr, "  wake-up keys of a killed instance gone after %lld ms\n", (long long)(am2z_now_ms() - t0));
    snprintf(pat, sizeof pat, "bull:am2z:reply:%.16s", line + 6);
    CHECK(cmd_int(r, "PTTL %s", pat) < 0 || cmd_int(r, "PTTL %s", pat) <= 86400000); /* none, or it expires */
    am2z_redis_free(r);
}

/* Item 8: an execution freed before a worker took its job removes the job: nothing
   is left waiting, and no worker runs or fails it later. */
static int counted_calls;
static am2z_result p_counted(am2z_ctx *ctx, const am2z_state *in) {
    __atomic_add_fetch(&counted_calls, 1, __ATOMIC_SEQ_CST);
    return p_inc(ctx, in);
}
static void test_free_before_start(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *prod = rt_new(AM2Z_QUEUE_NO_WORKERS, lg), *work;
    am2z_redis *r = fx_conn(port);
    am2z_state *in = st_count(1);
    am2z_execution *e[3];
    int i;
    CHECK(prod && r);
    if (!prod || !r) { am2z_runtime_free(prod); am2z_redis_free(r); am2z_logger_release(lg); am2z_value_release(in); return; }
    reg(prod, plain("counted", p_counted));
    for (i = 0; i < 3; i++) e[i] = am2z_runtime_submit(prod, "counted", in, i == 2 ? "fb-s" : NULL, NULL);
    CHECK(e[0] && e[1] && e[2]);
    CHECK_INT(cmd_int(r, "LLEN %s", "bull:am2z~counted:wait"), 2);
    for (i = 0; i < 3; i++) am2z_execution_free(e[i]);
    CHECK_INT(cmd_int(r, "LLEN %s", "bull:am2z~counted:wait"), 0);
    CHECK_INT(cmd_int(r, "LLEN %s", "bull:am2z~counted~fb-s:wait"), 0);
    CHECK_INT(scan_count(r, "bull:am2z~counted*:counted-*"), 0); /* no job hash */
    CHECK_INT(scan_count(r, "bull:am2z:cancel:*"), 0);
    /* a worker that comes later finds nothing to run or fail */
    work = rt_new(1, lg);
    CHECK(work != NULL);
    if (work) reg(work, plain("counted", p_counted));
    t_redis_sleep_ms(300);
    CHECK_INT(__atomic_load_n(&counted_calls, __ATOMIC_SEQ_CST), 0);
    CHECK_INT(cmd_int(r, "ZCARD %s", "bull:am2z~counted:failed"), 0);
    am2z_runtime_free(work);
    am2z_runtime_free(prod);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_logger_release(lg);
}

/* Item 9: am2z_runtime_free stays prompt after Redis restarted under the runtime. */
static void test_free_after_redis_restart(void) {
    static t_redis srv;
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d = qdesc(4);
    am2z_runtime *rt;
    am2z_state *in = st_count(1);
    am2z_outcome out = {0};
    int64_t t0, took;
    if (t_redis_start(&srv, NULL) != 0) { CHECK(!"second redis-server"); am2z_value_release(in); am2z_logger_release(lg); return; }
    d.redis.port = srv.port;
    d.logger = lg;
    rt = am2z_queue_runtime_new(&d, NULL);
    CHECK(rt != NULL);
    if (rt) {
        reg(rt, plain("inc", p_inc));
        out = am2z_runtime_execute(rt, "inc", in);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
        CHECK_INT(t_redis_restart(&srv, 0), 0);
        t_redis_sleep_ms(300); /* the threads notice and reconnect */
        t0 = am2z_now_ms();
        am2z_runtime_free(rt);
        took = am2z_now_ms() - t0;
        CHECK(took < 500);
        fprintf(stderr, "  free after a Redis restart: %lld ms\n", (long long)took);
    }
    t_redis_stop(&srv);
    am2z_value_release(in);
    am2z_logger_release(lg);
}

/* Item 9: a retry starts within a few ms of its backoff (100, 200, 400 ms). */
static int64_t attempt_at[8];
static am2z_result p_backoff(am2z_ctx *ctx, const am2z_state *in) {
    int a = am2z_ctx_meta(ctx)->attempt;
    if (a >= 1 && a <= 8) attempt_at[a - 1] = am2z_monotonic_ns();
    if (a < 4) return am2z_fail(am2z_error_network("svc", 503, NULL));
    return am2z_ok(am2z_value_retain(in));
}
static void test_retry_delay_precise(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg);
    am2z_processor_desc pd;
    am2z_state *in = st_count(0);
    am2z_outcome out = {0};
    int round, i;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    memset(&pd, 0, sizeof pd);
    pd.name = "backoff";
    pd.fn = p_backoff;
    pd.retry.max_attempts = 4;
    pd.retry.delay_ms = 100; /* 100, 200, 400 */
    reg(rt, am2z_processor_new(&pd, NULL));
    for (round = 0; round < 2; round++) {
        int64_t worst = 0;
        memset(attempt_at, 0, sizeof attempt_at);
        out = am2z_runtime_execute(rt, "backoff", in);
        CHECK(out.error == NULL);
        CHECK_INT(out.attempts, 4);
        am2z_outcome_clear(&out);
        for (i = 0; i < 3; i++) {
            int64_t gap = (attempt_at[i + 1] - attempt_at[i]) / 1000000, want = 100 << i;
            CHECK(gap >= want - 2);
            CHECK(gap <= want + 50);
            if (gap - want > worst) worst = gap - want;
            fprintf(stderr, "  retry %d: %lld ms (backoff %lld)\n", i + 1, (long long)gap, (long long)want);
        }
    }
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

/* Item 6: stop_session and session_stats of a session that never existed (or was
   stopped) say so: NOT_FOUND and NULL. */
static void test_unknown_session(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(1, lg);
    am2z_state *in = st_count(1);
    am2z_outcome out = {0};
    am2z_value *v;
    CHECK(rt != NULL);
    if (!rt) { am2z_logger_release(lg); am2z_value_release(in); return; }
    reg(rt, plain("inc", p_inc));
    ev_cleanup = 0;
    am2z_runtime_on(rt, "*", on_event, NULL);
    CHECK_INT(am2z_runtime_stop_session(rt, "never-was", 100), AM2Z_STATUS_NOT_FOUND);
    CHECK_STR(am2z_status_detail(), "stop_session 'never-was': no such session");
    v = am2z_runtime_session_stats(rt, "never-was");
    CHECK(v == NULL);
    am2z_value_release(v);
    CHECK_INT(ev_cleanup, 0); /* nothing was cleaned up */
    out = am2z_runtime_execute_in_session(rt, "inc", in, "was");
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    v = am2z_runtime_session_stats(rt, "was");
    CHECK(v != NULL);
    am2z_value_release(v);
    CHECK_INT(am2z_runtime_stop_session(rt, "was", 100), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_stop_session(rt, "was", 100), AM2Z_STATUS_NOT_FOUND);
    v = am2z_runtime_session_stats(rt, "was");
    CHECK(v == NULL);
    am2z_value_release(v);
    /* a session that only has a stored state exists too (stop deletes the state) */
    CHECK_INT(am2z_queue_state_set(rt, "state-only", in, 0, NULL), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_stop_session(rt, "state-only", 100), AM2Z_STATUS_OK);
    CHECK_INT(am2z_queue_state_get(rt, "state-only", NULL, NULL), AM2Z_STATUS_NOT_FOUND);
    CHECK_INT(am2z_runtime_stop_all_sessions(rt, 100), AM2Z_STATUS_OK);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

/* Item 4: when the caller holds an outcome, this process's stats already count it:
   completed or failed, and no longer running; on one runtime, and on a worker runtime
   whose results reach a producer runtime of the same process. */
static am2z_result p_fail_once(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx; (void)in;
    return am2z_fail(am2z_error_business("NO", AM2Z_SEVERITY_LOW, "no"));
}
static int64_t stat_of(am2z_runtime *rt, const char *what) {
    am2z_value *s = am2z_runtime_stats(rt);
    int64_t v = am2z_value_get_int(s, what, -1);
    am2z_value_release(s);
    return v;
}
static void test_stats_settled(void) {
    am2z_logger *lg = fx_quiet();
    am2z_runtime *rt = rt_new(2, lg), *prod = rt_new(AM2Z_QUEUE_NO_WORKERS, lg);
    am2z_state *in = st_count(1);
    int i, bad = 0;
    CHECK(rt && prod);
    if (!rt || !prod) { am2z_runtime_free(rt); am2z_runtime_free(prod); am2z_logger_release(lg); am2z_value_release(in); return; }
    reg(rt, plain("inc", p_inc));
    reg(rt, plain("no", p_fail_once));
    reg(prod, plain("inc", p_inc));
    reg(prod, plain("no", p_fail_once));
    for (i = 0; i < 200; i++) {
        am2z_runtime *caller = i % 2 ? prod : rt;
        const char *proc = i % 4 < 2 ? "inc" : "no";
        int64_t c0 = stat_of(rt, "completed"), f0 = stat_of(rt, "failed");
        am2z_outcome out = am2z_runtime_execute(caller, proc, in);
        int64_t c1 = stat_of(rt, "completed"), f1 = stat_of(rt, "failed"), run = stat_of(rt, "running");
        if ((out.error == NULL) != (proc[0] == 'i')) bad++;
        if (proc[0] == 'i' && c1 != c0 + 1) bad++;
        if (proc[0] == 'n' && f1 != f0 + 1) bad++;
        if (run != 0) bad++;
        am2z_outcome_clear(&out);
    }
    CHECK_INT(bad, 0);
    am2z_value_release(in);
    am2z_runtime_free(prod);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

#define RUN(fn) do { fx_flushall(port); T_RUN(fn); } while (0)

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--crash-child") == 0) return crash_child(atoi(argv[2]));
    T_RUN(start_server);
    if (!port) return t_done();
    RUN(test_desc_limits);
    RUN(test_execute_and_layout);
    RUN(test_submit_wait_many);
    RUN(test_two_instances);
    RUN(test_nested_depth);
    RUN(test_retries);
    RUN(test_retries_exhausted);
    RUN(test_timeout_cancel);
    RUN(test_composites_spread);
    RUN(test_concurrency_one);
    RUN(test_sessions);
    RUN(test_stop_session_cancels);
    RUN(test_state_manager);
    RUN(test_bad_and_foreign_jobs);
    RUN(test_foreign_finish);
    RUN(test_stalled_recovery);
    RUN(test_rate_limit);
    RUN(test_batching);
    RUN(test_retention);
    RUN(test_stop_idle_session);
    RUN(test_stop_puts_jobs_back);
    RUN(test_restart);
    RUN(test_stop_without_redis);
    RUN(test_api_submit_and_outcome);
    RUN(test_api_detach_and_free);
    RUN(test_api_outcome_reuse);
    RUN(test_api_queries);
    RUN(test_instance_keys_freed);
    RUN(test_instance_keys_after_crash);
    RUN(test_free_before_start);
    RUN(test_free_after_redis_restart);
    RUN(test_retry_delay_precise);
    RUN(test_unknown_session);
    RUN(test_stats_settled);
    RUN(test_huge_durations);
    RUN(test_callbacks_refused);
    t_redis_stop(&server);
    return t_done();
}
