/* The inline runtime (am2z.h section 9): the section 7 calls on one thread, the virtual
   clock, stubs, the recorded calls, and the order example's workflow with 1 s retry
   backoff. Uses no threads, so it also runs in the AM2Z_NO_THREADS build
   (tests/run.sh). */
#include "../am2z.h"
#include "t.h"

#define T0 1700000000000LL /* the virtual clock's start in these tests */

static am2z_value *J(const char *text) { return am2z_json_parse(text, AM2Z_NTS, NULL, NULL); }

/* v equals the JSON text want (printed when not). */
static int json_is(const am2z_value *v, const char *want) {
    am2z_value *b = J(want);
    int ok = v && b && am2z_value_equal(v, b);
    if (!ok) {
        char *text = am2z_json_write(v, AM2Z_JSON_COMPACT, NULL);
        fprintf(stderr, "  json = %s\n  want = %s\n", text ? text : "(null)", want);
        am2z_free(text);
    }
    am2z_value_release(b);
    return ok;
}

static am2z_state *S(const char *json) { return am2z_state_parse("s1", json, AM2Z_NTS, NULL); }

static double wall_ms(void) { return (double)am2z_monotonic_ns() / 1e6; }

static am2z_logger *g_quiet;
static am2z_runtime *g_rt; /* the runtime under test, for processors that move its clock */

/* A virtual-clock runtime recording its calls (desc fields over these defaults). */
static am2z_runtime *vrt(int max_depth) {
    am2z_status st = AM2Z_STATUS_LIMIT;
    am2z_runtime *rt = am2z_inline_runtime_new(&(am2z_inline_desc){
        .virtual_clock_ms = T0, .record_calls = 1, .max_call_depth = max_depth, .logger = g_quiet}, &st);
    CHECK_INT(st, AM2Z_STATUS_OK);
    g_rt = rt;
    return rt;
}

/* ---- processors ---- */

/* Sets key (user_data) to true and appends it to "log". */
static am2z_result mark(am2z_ctx *ctx, const am2z_state *in) {
    const char *key = (const char *)am2z_ctx_user_data(ctx);
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, key, am2z_value_bool(1));
    am2z_edit_append(&e, "log", am2z_value_string(key));
    return am2z_edit_end(&e);
}

static am2z_processor *P(const char *name, am2z_processor_fn fn, void *user_data) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = fn, .user_data = user_data}, NULL);
}

/* Fails (retryable) while the attempt is below *(int *)user_data, then succeeds. */
static am2z_result flaky(am2z_ctx *ctx, const am2z_state *in) {
    const am2z_meta *m = am2z_ctx_meta(ctx);
    am2z_edit e;
    if (m->attempt < *(const int *)am2z_ctx_user_data(ctx))
        return am2z_fail(am2z_error_with_retryable(am2z_error_business("BUSY", AM2Z_SEVERITY_LOW, "busy"), 1));
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "attempt", am2z_value_int(m->attempt));
    am2z_edit_set(&e, "at", am2z_value_int(am2z_ctx_now_ms(ctx)));
    return am2z_edit_end(&e);
}

/* Works in 100 ms steps (on the runtime's clock) until cancelled, then returns its count:
   the cooperative timeout. */
static am2z_result slow(am2z_ctx *ctx, const am2z_state *in) {
    int steps = 0;
    am2z_edit e;
    while (!am2z_ctx_cancelled(ctx) && steps < 1000) {
        am2z_inline_advance(g_rt, 100);
        steps++;
    }
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "steps", am2z_value_int(steps));
    return am2z_edit_end(&e);
}

/* Reports the time left before its deadline. */
static am2z_result remaining(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "left", am2z_value_int(am2z_ctx_remaining_ms(ctx)));
    return am2z_edit_end(&e);
}

/* Spins on the real clock until its deadline says cancelled. */
static am2z_result spin_until_cancelled(am2z_ctx *ctx, const am2z_state *in) {
    while (!am2z_ctx_cancelled(ctx)) {
    }
    return am2z_ok(am2z_value_retain(in));
}

/* Calls itself until a call fails, and returns that call's result. */
static am2z_result recurse(am2z_ctx *ctx, const am2z_state *in) { return am2z_ctx_call(ctx, "recurse", in); }

/* ---- the section 7 calls ---- */

static void test_execute(void) {
    am2z_runtime *rt = vrt(0);
    am2z_state *in = S("{\"x\":1}");
    am2z_outcome out = {0};
    am2z_runtime_settings set = am2z_runtime_config(rt);
    CHECK_STR(set.kind, "inline");
    CHECK_INT(set.workers, 0);
    CHECK_INT(set.max_call_depth, AM2Z_MAX_CALL_DEPTH);
    CHECK_INT(set.default_timeout_ms, 60000);
    CHECK_INT(am2z_runtime_is_started(rt), 1);
    CHECK_INT(am2z_runtime_register(rt, P("a", mark, (void *)"a")), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "a", in);
    CHECK(out.error == NULL);
    CHECK(am2z_value_get_bool(out.state, "a", 0));
    CHECK_INT(am2z_state_version(out.state), am2z_state_version(in) + 1);
    CHECK_STR(out.session_id, "default");
    CHECK_STR(am2z_state_session_id(out.state), "default"); /* rewritten from "s1" */
    CHECK_STR(out.execution_id, "a-1700000000000-1");     /* deterministic on the virtual clock */
    CHECK_INT(out.attempts, 1);
    CHECK_INT(out.started_at, T0);
    CHECK_DBL(out.duration_ms, 0, 0);
    am2z_outcome_clear(&out);
    /* execute_many: outcomes in input order */
    {
        am2z_state *ins[3] = {S("{\"i\":0}"), S("{\"i\":1}"), S("{\"i\":2}")};
        am2z_outcome outs[3] = {{0}, {0}, {0}};
        int i;
        CHECK_INT(am2z_runtime_execute_many(rt, "a", (const am2z_state *const *)ins, 3, "s2", outs), AM2Z_STATUS_OK);
        for (i = 0; i < 3; i++) {
            CHECK(outs[i].error == NULL);
            CHECK_INT(am2z_value_get_int(outs[i].state, "i", -1), i);
            CHECK_STR(outs[i].session_id, "s2");
            am2z_outcome_clear(&outs[i]);
            am2z_value_release(ins[i]);
        }
    }
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static const char *pick(const am2z_state *in, void *user_data) {
    (void)user_data;
    return am2z_value_get_string(in, "kind", NULL);
}

static void test_composites(void) {
    am2z_runtime *rt = vrt(0);
    am2z_state *in = S("{\"log\":[],\"kind\":\"b\",\"items\":[{\"n\":1},{\"n\":2}]}");
    am2z_outcome out = {0};
    am2z_value *calls;
    CHECK_INT(am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){.name = "ch", .count = 2,
        .steps = (am2z_processor *[]){P("c1", mark, (void *)"c1"), P("c2", mark, (void *)"c2")}}, NULL)),
        AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, am2z_parallel_new(&(am2z_parallel_desc){.name = "par", .count = 2,
        .branches = (am2z_processor *[]){P("p1", mark, (void *)"p1"), P("p2", mark, (void *)"p2")}}, NULL)),
        AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, am2z_router_new(&(am2z_router_desc){.name = "rt", .select = pick, .count = 2,
        .routes = (am2z_route[]){{"b", P("rb", mark, (void *)"rb")}, {NULL, P("rf", mark, (void *)"rf")}}}, NULL)),
        AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, am2z_batch_new(&(am2z_batch_desc){.name = "bat",
        .target = P("item", mark, (void *)"done"), .items_path = "items"}, NULL)), AM2Z_STATUS_OK);

    out = am2z_runtime_execute(rt, "ch", in);
    CHECK(out.error == NULL);
    CHECK(json_is(am2z_value_get(out.state, "log"), "[\"c1\",\"c2\"]"));
    CHECK_INT(am2z_state_version(out.state), am2z_state_version(in) + 3); /* two steps + the chain */
    am2z_outcome_clear(&out);

    out = am2z_runtime_execute(rt, "par", in); /* the 3-way merge keeps both appends, in order */
    CHECK(out.error == NULL);
    CHECK(json_is(am2z_value_get(out.state, "log"), "[\"p1\",\"p2\"]"));
    am2z_outcome_clear(&out);

    out = am2z_runtime_execute(rt, "rt", in);
    CHECK(out.error == NULL && am2z_value_get_bool(out.state, "rb", 0) && !am2z_value_get(out.state, "rf"));
    am2z_outcome_clear(&out);

    out = am2z_runtime_execute(rt, "bat", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_len(am2z_value_get(out.state, "items")), 2);
    CHECK(am2z_value_get_bool(out.state, "items[1].done", 0));
    CHECK_INT(am2z_value_get_int(out.state, "items[1].n", 0), 2);
    am2z_outcome_clear(&out);

    /* children ran inline, one after another, at depth 1, in declaration order */
    calls = am2z_inline_calls(rt);
    CHECK_INT(am2z_value_len(calls), 3 + 3 + 2 + 3);
    CHECK_STR(am2z_value_get_string(calls, "[3].processor", ""), "p1");
    CHECK_STR(am2z_value_get_string(calls, "[4].processor", ""), "p2");
    CHECK_STR(am2z_value_get_string(calls, "[5].processor", ""), "par");
    CHECK_INT(am2z_value_get_int(calls, "[4].callDepth", -1), 1);
    CHECK_INT(am2z_value_get_int(calls, "[5].callDepth", -1), 0);
    am2z_value_release(calls);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_nested_depth_limit(void) {
    am2z_runtime *rt = vrt(3);
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    am2z_value *calls;
    const am2z_error *root;
    CHECK_INT(am2z_runtime_register(rt, P("recurse", recurse, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "recurse", in);
    CHECK(out.error != NULL);
    root = am2z_error_root_cause(out.error);
    CHECK(root && root->kind == AM2Z_ERROR_CALL_DEPTH);
    calls = am2z_inline_calls(rt); /* depths 3, 2, 1, 0 end in that order; depth 4 never ran */
    CHECK_INT(am2z_value_len(calls), 4);
    CHECK_INT(am2z_value_get_int(calls, "[0].callDepth", -1), 3);
    CHECK_INT(am2z_value_get_int(calls, "[3].callDepth", -1), 0);
    CHECK_STR(am2z_value_get_string(calls, "[3].error", ""), "CallDepthExceededError");
    am2z_value_release(calls);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- the virtual clock ---- */

static void test_retries_virtual_clock(void) {
    static const int succeed_at = 3;
    am2z_runtime *rt = vrt(0);
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    am2z_value *calls;
    double t = wall_ms();
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "pay", .fn = flaky,
        .user_data = (void *)&succeed_at, .retry = {.max_attempts = 5, .backoff = AM2Z_BACKOFF_FIXED,
        .delay_ms = 1000}}, NULL)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "exp", .fn = flaky,
        .user_data = (void *)&succeed_at, .retry = {.max_attempts = 5, .delay_ms = 100, .multiplier = 3}}, NULL)),
        AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "pay", in);
    t = wall_ms() - t;
    CHECK(out.error == NULL);
    CHECK_INT(out.attempts, 3);
    CHECK_INT(out.attempt_error_count, 2);
    CHECK_DBL(out.duration_ms, 2000, 0);     /* two 1 s backoffs, exactly, in virtual time */
    CHECK(t < 2000);                          /* ...and none of it slept */
    CHECK_INT(am2z_inline_now_ms(rt), T0 + 2000);
    CHECK_INT(am2z_value_get_int(out.state, "at", 0), T0 + 2000); /* am2z_ctx_now_ms is virtual */
    calls = am2z_inline_calls(rt);
    CHECK(json_is(calls, "[{\"processor\":\"pay\",\"executionId\":\"pay-1700000000000-1\",\"sessionId\":\"default\","
                         "\"attempt\":1,\"callDepth\":0,\"startedAt\":1700000000000,\"endedAt\":1700000000000,"
                         "\"ok\":false,\"error\":\"BusinessError\",\"stubbed\":false},"
                         "{\"processor\":\"pay\",\"executionId\":\"pay-1700000000000-1\",\"sessionId\":\"default\","
                         "\"attempt\":2,\"callDepth\":0,\"startedAt\":1700000001000,\"endedAt\":1700000001000,"
                         "\"ok\":false,\"error\":\"BusinessError\",\"stubbed\":false},"
                         "{\"processor\":\"pay\",\"executionId\":\"pay-1700000000000-1\",\"sessionId\":\"default\","
                         "\"attempt\":3,\"callDepth\":0,\"startedAt\":1700000002000,\"endedAt\":1700000002000,"
                         "\"ok\":true,\"stubbed\":false}]"));
    am2z_value_release(calls);
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute(rt, "exp", in); /* exponential: 100 + 300 */
    CHECK(out.error == NULL);
    CHECK_DBL(out.duration_ms, 400, 0);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_cooperative_timeout(void) {
    am2z_runtime *rt = vrt(0), *real;
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    am2z_value *calls;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "slow", .fn = slow,
        .timeout_ms = 450}, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "slow", in);
    CHECK(out.error != NULL && out.error->kind == AM2Z_ERROR_TIMEOUT); /* its late result is discarded */
    CHECK_DBL(out.duration_ms, 500, 0); /* it noticed at the first 100 ms step past 450 */
    CHECK_INT(out.attempts, 1);
    calls = am2z_inline_calls(rt);
    CHECK_STR(am2z_value_get_string(calls, "[0].error", ""), "TimeoutError");
    CHECK_INT(am2z_value_get_int(calls, "[0].endedAt", 0), T0 + 500);
    am2z_value_release(calls);
    am2z_outcome_clear(&out);
    /* the deadline is on the virtual clock: no time has passed inside the attempt */
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "left", .fn = remaining,
        .timeout_ms = 700}, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "left", in);
    CHECK_INT(am2z_value_get_int(out.state, "left", -1), 700);
    am2z_outcome_clear(&out);
    am2z_runtime_free(rt);

    /* the real clock: a deadline passing in real time cancels too */
    real = am2z_inline_runtime_new(&(am2z_inline_desc){.logger = g_quiet}, NULL);
    CHECK(real != NULL);
    CHECK_INT(am2z_runtime_register(real, am2z_processor_new(&(am2z_processor_desc){.name = "spin",
        .fn = spin_until_cancelled, .timeout_ms = 20}, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(real, "spin", in);
    CHECK(out.error != NULL && out.error->kind == AM2Z_ERROR_TIMEOUT);
    CHECK(out.duration_ms >= 20);
    am2z_outcome_clear(&out);
    am2z_runtime_free(real);
    am2z_value_release(in);
}

static void test_delay_and_rate_limit(void) {
    am2z_runtime *rt = vrt(0);
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    am2z_value *calls;
    int i;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "late", .fn = mark,
        .user_data = (void *)"late", .queue = {.delay_ms = 300}}, NULL)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "limited", .fn = mark,
        .user_data = (void *)"limited", .queue = {.rate_limit_per_minute = 60}}, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "late", in);
    CHECK(out.error == NULL);
    CHECK_INT(out.started_at, T0 + 300); /* waiting out the delay is not part of the duration */
    CHECK_DBL(out.duration_ms, 0, 0);
    am2z_outcome_clear(&out);
    am2z_inline_calls_clear(rt);
    for (i = 0; i < 3; i++) {
        out = am2z_runtime_execute(rt, "limited", in);
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
    }
    calls = am2z_inline_calls(rt); /* one start per second */
    CHECK_INT(am2z_value_get_int(calls, "[0].startedAt", 0), T0 + 300);
    CHECK_INT(am2z_value_get_int(calls, "[1].startedAt", 0), T0 + 1300);
    CHECK_INT(am2z_value_get_int(calls, "[2].startedAt", 0), T0 + 2300);
    am2z_value_release(calls);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* The same workflow on two fresh runtimes gives the same outcomes, ids and trace. */
static am2z_value *run_once(void) {
    static const int succeed_at = 2;
    am2z_runtime *rt = vrt(0);
    am2z_state *in = am2z_state_parse("d", "{\"metadata\":{\"version\":1,\"sessionId\":\"d\",\"createdAt\":1,"
                                      "\"lastUpdated\":1}}", AM2Z_NTS, NULL);
    am2z_outcome out = {0};
    am2z_value *calls, *all;
    am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){.name = "w", .count = 2, .steps =
        (am2z_processor *[]){P("m", mark, (void *)"m"), am2z_processor_new(&(am2z_processor_desc){.name = "f",
        .fn = flaky, .user_data = (void *)&succeed_at, .retry = {.max_attempts = 2, .delay_ms = 250}}, NULL)}}, NULL));
    out = am2z_runtime_execute_in_session(rt, "w", in, "d");
    calls = am2z_inline_calls(rt);
    all = am2z_value_set(am2z_value_object(), "calls", calls);
    all = am2z_value_set(all, "id", am2z_value_string(out.execution_id));
    all = am2z_value_set(all, "state", am2z_value_retain(out.state));
    all = am2z_value_set(all, "ms", am2z_value_double(out.duration_ms));
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    return all;
}

static void test_deterministic(void) {
    am2z_value *a = run_once(), *b = run_once();
    char *ta = am2z_json_write(a, AM2Z_JSON_COMPACT, NULL);
    CHECK(a && b && json_is(b, ta));
    am2z_free(ta);
    CHECK_DBL(am2z_value_get_double(a, "ms", 0), 250, 0);
    CHECK_INT(am2z_value_get_int(a, "state.metadata.lastUpdated", 0), T0 + 250); /* the virtual clock */
    CHECK_INT(am2z_value_len(am2z_value_get(a, "calls")), 4); /* m, f (fails), f, w */
    am2z_value_release(a);
    am2z_value_release(b);
}

/* ---- stubs and recorded calls ---- */

static void test_stubs(void) {
    am2z_runtime *rt = vrt(0);
    am2z_state *in = S("{\"log\":[]}");
    am2z_value *st = J("{\"paid\":true,\"metadata\":{\"version\":99}}");
    am2z_error *busy = am2z_error_network("gateway", 503, NULL);
    am2z_outcome out = {0};
    am2z_value *calls;
    CHECK_INT(am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){.name = "flow", .count = 2,
        .steps = (am2z_processor *[]){P("first", mark, (void *)"first"), am2z_processor_new(&(am2z_processor_desc){
            .name = "pay", .fn = mark, .user_data = (void *)"pay", .timeout_ms = 1000,
            .retry = {.max_attempts = 4, .backoff = AM2Z_BACKOFF_FIXED, .delay_ms = 1000}}, NULL)}}, NULL)),
        AM2Z_STATUS_OK);

    /* a state: merged into the input, metadata skipped; the chain runs the stub */
    CHECK_INT(am2z_inline_stub(rt, "pay", &(am2z_inline_stub_desc){.state = st}), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "flow", in);
    CHECK(out.error == NULL);
    CHECK(am2z_value_get_bool(out.state, "paid", 0));
    CHECK(!am2z_value_get(out.state, "pay")); /* the real function did not run */
    CHECK_INT(am2z_state_version(out.state), am2z_state_version(in) + 3);
    am2z_outcome_clear(&out);

    /* an error, every attempt: the processor's own retry policy still applies */
    CHECK_INT(am2z_inline_stub(rt, "pay", &(am2z_inline_stub_desc){.error = busy}), AM2Z_STATUS_OK);
    am2z_inline_calls_clear(rt);
    out = am2z_runtime_execute(rt, "flow", in);
    CHECK(out.error != NULL);
    CHECK(am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_NETWORK);
    calls = am2z_inline_calls(rt); /* first, pay x4 (stubbed), flow */
    CHECK_INT(am2z_value_len(calls), 6);
    CHECK_INT(am2z_value_get_bool(calls, "[0].stubbed", 1), 0);
    CHECK_INT(am2z_value_get_bool(calls, "[4].stubbed", 0), 1);
    CHECK_INT(am2z_value_get_int(calls, "[4].attempt", 0), 4);
    CHECK_STR(am2z_value_get_string(calls, "[4].error", ""), "NetworkError");
    am2z_value_release(calls);
    am2z_outcome_clear(&out);

    /* fail twice, then succeed: two 1 s backoffs of virtual time */
    CHECK_INT(am2z_inline_stub(rt, "pay", &(am2z_inline_stub_desc){.error = busy, .fail_times = 2, .state = st}),
              AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "flow", in);
    CHECK(out.error == NULL && am2z_value_get_bool(out.state, "paid", 0));
    CHECK_DBL(out.duration_ms, 2000, 0);
    am2z_outcome_clear(&out);

    /* a duration past the processor's timeout */
    CHECK_INT(am2z_inline_stub(rt, "pay", &(am2z_inline_stub_desc){.duration_ms = 1500}), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "pay", in);
    CHECK(out.error != NULL && out.error->kind == AM2Z_ERROR_TIMEOUT);
    CHECK_INT(out.attempts, 4); /* a timeout is retryable */
    am2z_outcome_clear(&out);

    /* removed: the real function again */
    CHECK_INT(am2z_inline_stub(rt, "pay", NULL), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "pay", in);
    CHECK(out.error == NULL && am2z_value_get_bool(out.state, "pay", 0));
    am2z_outcome_clear(&out);

    /* bad stubs */
    CHECK_INT(am2z_inline_stub(rt, "nope", &(am2z_inline_stub_desc){0}), AM2Z_STATUS_NOT_FOUND);
    CHECK(strstr(am2z_status_detail(), "'nope'") != NULL);
    CHECK_INT(am2z_inline_stub(rt, "pay", &(am2z_inline_stub_desc){.fail_times = 1}), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "fail_times needs an error") != NULL);
    CHECK_INT(am2z_inline_stub(rt, "pay", &(am2z_inline_stub_desc){.state = am2z_value_at(am2z_value_get(in, "log"), 0)}),
              AM2Z_STATUS_OK); /* a NULL (absent) state is "pass the input on" */
    {
        am2z_value *arr = J("[1]");
        CHECK_INT(am2z_inline_stub(rt, "pay", &(am2z_inline_stub_desc){.state = arr}), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK(strstr(am2z_status_detail(), "not an object") != NULL);
        am2z_value_release(arr);
    }
    CHECK_INT(am2z_inline_stub(rt, "pay", &(am2z_inline_stub_desc){.duration_ms = -1}), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_inline_stub(NULL, "pay", NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_inline_stub(rt, NULL, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    am2z_error_release(busy);
    am2z_value_release(st);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_recording_off(void) {
    am2z_runtime *rt = am2z_inline_runtime_new(&(am2z_inline_desc){.virtual_clock_ms = T0, .logger = g_quiet}, NULL);
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    am2z_value *calls;
    am2z_runtime_register(rt, P("a", mark, (void *)"a"));
    out = am2z_runtime_execute(rt, "a", in);
    CHECK(out.error == NULL);
    calls = am2z_inline_calls(rt);
    CHECK(json_is(calls, "[]"));
    am2z_value_release(calls);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- submit, wait, sessions, events ---- */

static int g_counter;
static am2z_result count(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    g_counter++;
    return am2z_ok(am2z_value_retain(in));
}

static am2z_execution *g_self;
static am2z_status g_self_wait;
static am2z_result wait_self(am2z_ctx *ctx, const am2z_state *in) {
    am2z_outcome o = {0};
    (void)ctx;
    g_self_wait = am2z_execution_wait(g_self, -1, &o);
    am2z_outcome_clear(&o);
    return am2z_ok(am2z_value_retain(in));
}

static void test_submit_wait(void) {
    am2z_runtime *rt = vrt(0);
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    am2z_execution *a, *b, *c;
    am2z_status st = AM2Z_STATUS_LIMIT;
    am2z_value *calls, *stats;
    am2z_runtime_register(rt, P("n", count, NULL));
    am2z_runtime_register(rt, P("self", wait_self, NULL));
    g_counter = 0;
    a = am2z_runtime_submit(rt, "n", in, NULL, &st);
    CHECK_INT(st, AM2Z_STATUS_OK);
    b = am2z_runtime_submit(rt, "n", in, "s1", NULL);
    c = am2z_runtime_submit(rt, "n", in, NULL, NULL);
    CHECK(a && b && c);
    CHECK_STR(am2z_execution_id(a), "n-1700000000000-1");
    CHECK_INT(g_counter, 0); /* recorded, not run */
    stats = am2z_runtime_stats(rt);
    CHECK_INT(am2z_value_get_int(stats, "queued", -1), 3);
    am2z_value_release(stats);
    CHECK_INT(am2z_execution_wait(b, 0, &out), AM2Z_STATUS_OK); /* the wait runs it */
    CHECK_INT(g_counter, 1);
    CHECK_STR(out.execution_id, am2z_execution_id(b));
    CHECK_STR(out.session_id, "s1");
    CHECK_INT(am2z_execution_wait(b, 0, &out), AM2Z_STATUS_OK); /* again: the same outcome */
    CHECK_INT(g_counter, 1);
    am2z_execution_free(c); /* never started: cancelled, never runs */
    am2z_execution_detach(a); /* runs now */
    CHECK_INT(g_counter, 2);
    am2z_execution_free(b);
    calls = am2z_inline_calls(rt); /* b ran first, then a */
    CHECK_STR(am2z_value_get_string(calls, "[0].executionId", ""), "n-1700000000000-2");
    CHECK_STR(am2z_value_get_string(calls, "[1].executionId", ""), "n-1700000000000-1");
    CHECK_INT(am2z_value_len(calls), 2);
    am2z_value_release(calls);
    stats = am2z_runtime_session_stats(rt, "default");
    CHECK(json_is(stats, "{\"sessionId\":\"default\",\"createdAt\":1700000000000,\"running\":0,\"submitted\":2,"
                         "\"completed\":1,\"failed\":0,\"cancelled\":1}"));
    am2z_value_release(stats);

    /* an execution waiting for itself is told so instead of hanging */
    g_self = am2z_runtime_submit(rt, "self", in, NULL, NULL);
    CHECK_INT(am2z_execution_wait(g_self, -1, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_INT(g_self_wait, AM2Z_STATUS_TIMEOUT);
    am2z_execution_free(g_self);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* Frees its own (running) handle, then tries to stub a processor: the execution is
   cancelled (its result discarded) and the stub refused, without a crash or a leak. */
static am2z_status g_inside_stub;
static int g_saw_freed;
static am2z_result free_self(am2z_ctx *ctx, const am2z_state *in) {
    am2z_execution_free(g_self);
    g_saw_freed = am2z_ctx_cancelled(ctx);
    g_inside_stub = am2z_inline_stub(g_rt, "n", NULL);
    return am2z_ok(am2z_value_retain(in));
}

static void test_handles_from_inside(void) {
    am2z_runtime *rt = vrt(0);
    am2z_state *in = S("{}");
    am2z_value *stats, *calls;
    am2z_runtime_register(rt, P("n", count, NULL));
    am2z_runtime_register(rt, P("free_self", free_self, NULL));
    g_self = am2z_runtime_submit(rt, "free_self", in, NULL, NULL);
    am2z_execution_detach(g_self); /* runs now; frees its handle while running */
    CHECK_INT(g_saw_freed, 1);
    CHECK_INT(g_inside_stub, AM2Z_STATUS_INVALID_ARGUMENT);
    calls = am2z_inline_calls(rt);
    CHECK_STR(am2z_value_get_string(calls, "[0].error", ""), "CancelledError");
    am2z_value_release(calls);
    stats = am2z_runtime_session_stats(rt, "default");
    CHECK_INT(am2z_value_get_int(stats, "cancelled", -1), 1);
    CHECK_INT(am2z_value_get_int(stats, "running", -1), 0);
    am2z_value_release(stats);

    /* stubbing again restarts the count of failures */
    {
        am2z_error *err = am2z_error_timeout("x", 1);
        am2z_outcome out = {0};
        int i;
        for (i = 0; i < 2; i++) {
            CHECK_INT(am2z_inline_stub(rt, "n", &(am2z_inline_stub_desc){.error = err, .fail_times = 1}),
                      AM2Z_STATUS_OK);
            out = am2z_runtime_execute(rt, "n", in); /* no retry policy: the one attempt fails */
            CHECK(out.error != NULL && out.error->kind == AM2Z_ERROR_TIMEOUT);
            am2z_outcome_clear(&out);
        }
        out = am2z_runtime_execute(rt, "n", in); /* the second stub has failed once: now it succeeds */
        CHECK(out.error == NULL);
        am2z_outcome_clear(&out);
        am2z_error_release(err);
    }
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* On the real clock a backoff is slept. */
static void test_real_clock_backoff(void) {
    static const int succeed_at = 2;
    am2z_runtime *rt = am2z_inline_runtime_new(&(am2z_inline_desc){.logger = g_quiet}, NULL);
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    double t = wall_ms();
    am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "f", .fn = flaky,
        .user_data = (void *)&succeed_at, .retry = {.max_attempts = 2, .delay_ms = 30}}, NULL));
    out = am2z_runtime_execute(rt, "f", in);
    t = wall_ms() - t;
    CHECK(out.error == NULL);
    CHECK(out.duration_ms >= 30);
    CHECK(t >= 30);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static int g_saw_cancel;
static am2z_result stop_own_session(am2z_ctx *ctx, const am2z_state *in) {
    CHECK_INT(am2z_runtime_stop_session(g_rt, am2z_ctx_meta(ctx)->session_id, 1000), AM2Z_STATUS_OK);
    g_saw_cancel = am2z_ctx_cancelled(ctx);
    return am2z_ok(am2z_value_retain(in));
}

static void on_event(const char *event, const am2z_value *data, void *user_data) {
    am2z_value **log = (am2z_value **)user_data;
    am2z_value *e = am2z_value_set(am2z_value_object(), "event", am2z_value_string(event));
    e = am2z_value_set(e, "data", am2z_value_retain(data));
    *log = am2z_value_append(*log, "", e);
}

/* The events named `name` in log (a new array). */
static am2z_value *events(const am2z_value *log, const char *name) {
    am2z_value *out = am2z_value_array();
    size_t i;
    for (i = 0; i < am2z_value_len(log); i++)
        if (strcmp(am2z_value_get_string(am2z_value_at(log, i), "event", ""), name) == 0)
            out = am2z_value_append(out, "", am2z_value_retain(am2z_value_get(am2z_value_at(log, i), "data")));
    return out;
}

/* A session:created handler that stops the new session at once. */
static void stop_on_create(const char *event, const am2z_value *data, void *user_data) {
    (void)event;
    (void)user_data;
    CHECK_INT(am2z_runtime_stop_session(g_rt, am2z_value_get_string(data, "sessionId", ""), 0), AM2Z_STATUS_OK);
}

/* The execution keeps the session it was submitted to alive (ASan: no use after free). */
static void test_session_stopped_on_create(void) {
    am2z_runtime *rt = vrt(0);
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    am2z_runtime_register(rt, P("n", count, NULL));
    CHECK(am2z_runtime_on(rt, "session:created", stop_on_create, NULL) > 0);
    out = am2z_runtime_execute_in_session(rt, "n", in, "brief");
    CHECK(out.error == NULL);
    CHECK_STR(out.session_id, "brief");
    am2z_outcome_clear(&out);
    CHECK(am2z_runtime_session_stats(rt, "brief") == NULL); /* forgotten */
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_sessions_events(void) {
    static const int succeed_at = 2;
    am2z_runtime *rt = vrt(0);
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    am2z_execution *pending;
    am2z_value *log = am2z_value_array(), *ev, *active;
    int id;
    am2z_runtime_register(rt, P("n", count, NULL));
    am2z_runtime_register(rt, P("stopper", stop_own_session, NULL));
    am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "f", .fn = flaky,
        .user_data = (void *)&succeed_at, .retry = {.max_attempts = 2, .delay_ms = 1500}}, NULL));
    id = am2z_runtime_on(rt, "*", on_event, &log);
    CHECK(id > 0);

    out = am2z_runtime_execute_in_session(rt, "f", in, "s1");
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    ev = events(log, "processor:job:retrying");
    CHECK_INT(am2z_value_len(ev), 1);
    CHECK_STR(am2z_value_get_string(ev, "[0].executionId", ""), "f-1700000000000-1");
    CHECK_INT(am2z_value_get_int(ev, "[0].attempt", 0), 1);
    CHECK_INT(am2z_value_get_int(ev, "[0].delayMs", 0), 1500);
    CHECK_STR(am2z_value_get_string(ev, "[0].error.code", ""), "BUSY");
    am2z_value_release(ev);
    ev = events(log, "processor:job:completed");
    CHECK_INT(am2z_value_len(ev), 1);
    CHECK_DBL(am2z_value_get_double(ev, "[0].executionTime", 0), 1500, 0); /* virtual */
    CHECK_INT(am2z_value_get_int(ev, "[0].attempts", 0), 2);
    am2z_value_release(ev);
    ev = events(log, "processor:job:started");
    CHECK_INT(am2z_value_len(ev), 2);
    am2z_value_release(ev);
    ev = events(log, "session:created");
    CHECK(json_is(ev, "[{\"sessionId\":\"s1\"}]"));
    am2z_value_release(ev);

    /* stop_session: the unstarted execution is cancelled, the session forgotten */
    pending = am2z_runtime_submit(rt, "n", in, "s1", NULL);
    active = am2z_runtime_active_sessions(rt);
    CHECK(json_is(active, "[\"s1\"]"));
    am2z_value_release(active);
    CHECK_INT(am2z_runtime_stop_session(rt, "s1", 0), AM2Z_STATUS_OK);
    CHECK_INT(am2z_execution_wait(pending, -1, &out), AM2Z_STATUS_OK);
    CHECK(out.error != NULL && out.error->kind == AM2Z_ERROR_CANCELLED);
    CHECK(out.error && strcmp(out.error->message, "Execution cancelled: Session s1 stopped") == 0);
    CHECK_INT(out.attempts, 0);
    am2z_execution_free(pending);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_stop_session(rt, "s1", 0), AM2Z_STATUS_NOT_FOUND);
    CHECK(strstr(am2z_status_detail(), "no such session") != NULL);
    CHECK(am2z_runtime_session_stats(rt, "s1") == NULL);
    ev = events(log, "session:cleanup");
    CHECK(json_is(ev, "[{\"sessionId\":\"s1\"}]"));
    am2z_value_release(ev);

    /* from inside the session it stops: the caller's own execution ends cancelled */
    g_saw_cancel = 0;
    out = am2z_runtime_execute_in_session(rt, "stopper", in, "s2");
    CHECK(out.error != NULL && out.error->kind == AM2Z_ERROR_CANCELLED);
    CHECK_INT(g_saw_cancel, 1);
    am2z_outcome_clear(&out);
    active = am2z_runtime_active_sessions(rt);
    CHECK(json_is(active, "[]"));
    am2z_value_release(active);

    am2z_runtime_off(rt, id);
    am2z_value_release(log);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_stats_stop(void) {
    am2z_runtime *rt = vrt(0);
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    am2z_execution *e;
    am2z_value *stats;
    am2z_status st;
    am2z_runtime_register(rt, P("n", count, NULL));
    am2z_runtime_register(rt, P("unused", count, NULL));
    out = am2z_runtime_execute(rt, "n", in);
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute(rt, "missing", in);
    CHECK(out.error != NULL && out.error->kind == AM2Z_ERROR_PROCESSOR_NOT_FOUND);
    am2z_outcome_clear(&out);
    am2z_inline_advance(rt, 1234);
    stats = am2z_runtime_stats(rt);
    CHECK_INT(am2z_value_get_int(stats, "completed", -1), 1);
    CHECK_INT(am2z_value_get_int(stats, "uptimeMs", -1), 1234);
    CHECK(json_is(am2z_value_get(stats, "processors"),
                  "{\"n\":{\"completed\":1,\"failed\":0,\"retried\":0},\"unused\":{\"completed\":0,\"failed\":0,"
                  "\"retried\":0}}"));
    am2z_value_release(stats);

    /* stop cancels what has not started and refuses new work; start again */
    e = am2z_runtime_submit(rt, "n", in, NULL, NULL);
    CHECK_INT(am2z_runtime_stop(rt, 0), AM2Z_STATUS_OK);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK(out.error && strcmp(out.error->message, "Execution cancelled: Runtime stopped") == 0);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    CHECK(am2z_runtime_submit(rt, "n", in, NULL, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_NOT_STARTED);
    CHECK_INT(am2z_runtime_start(rt), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "n", in);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_bad_input(void) {
    am2z_status st = AM2Z_STATUS_OK;
    am2z_runtime *rt;
    am2z_state *in = S("{}");
    am2z_outcome out = {0};
    CHECK(am2z_inline_runtime_new(&(am2z_inline_desc){.virtual_clock_ms = -1}, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "inline runtime: virtual_clock_ms is negative");
    CHECK(am2z_inline_runtime_new(&(am2z_inline_desc){.max_call_depth = -2}, &st) == NULL);
    CHECK_STR(am2z_status_detail(), "inline runtime: max_call_depth is negative");
    CHECK(am2z_inline_runtime_new(&(am2z_inline_desc){.default_timeout_ms = -2}, NULL) == NULL);
    CHECK(am2z_inline_runtime_new(&(am2z_inline_desc){.virtual_clock_ms = INT64_MAX}, NULL) == NULL);
    CHECK(strstr(am2z_status_detail(), "range") != NULL);

    rt = am2z_inline_runtime_new(&(am2z_inline_desc){.logger = g_quiet}, &st); /* the real clock */
    CHECK_INT(st, AM2Z_STATUS_OK);
    CHECK_INT(am2z_inline_advance(rt, 10), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "real clock") != NULL);
    CHECK(am2z_inline_now_ms(rt) > 1600000000000LL); /* the real time */
    am2z_runtime_free(rt);

    rt = vrt(0);
    CHECK_INT(am2z_inline_advance(rt, -1), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_inline_advance(rt, INT64_MAX), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_inline_now_ms(rt), T0);
    CHECK_INT(am2z_inline_advance(NULL, 1), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_inline_now_ms(NULL), 0);
    CHECK(am2z_inline_calls(NULL) == NULL);
    CHECK(strstr(am2z_status_detail(), "NULL runtime") != NULL);
    am2z_inline_calls_clear(NULL);
    am2z_runtime_register(rt, P("n", count, NULL));
    CHECK(am2z_runtime_submit(rt, "n", NULL, NULL, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(am2z_runtime_submit(rt, "n", in, "bad id!", &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "session id") != NULL);
    CHECK(am2z_runtime_submit(rt, "nope", in, NULL, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_NOT_FOUND);
    out = am2z_runtime_execute(rt, NULL, in);
    CHECK(out.error != NULL && out.error->kind == AM2Z_ERROR_VALIDATION);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* ---- the order example (examples/order.c) with 1 s backoff ---- */

static am2z_result validate(am2z_ctx *ctx, const am2z_state *in) {
    const am2z_value *items = am2z_value_get(in, "items");
    double total = 0;
    size_t i;
    am2z_edit e;
    (void)ctx;
    if (!strchr(am2z_value_get_string(in, "customer.email", ""), '@'))
        return am2z_fail(am2z_error_validation("customer.email", NULL, "must be an email address"));
    for (i = 0; i < am2z_value_len(items); i++)
        total += am2z_value_get_double(am2z_value_at(items, i), "price", 0) *
                 (double)am2z_value_get_int(am2z_value_at(items, i), "qty", 0);
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "total", am2z_value_double(total));
    return am2z_edit_end(&e);
}

static am2z_result check_inventory(am2z_ctx *ctx, const am2z_state *in) {
    const am2z_value *items = am2z_value_get(in, "items");
    size_t i;
    am2z_edit e;
    (void)ctx;
    for (i = 0; i < am2z_value_len(items); i++)
        if (strcmp(am2z_value_get_string(am2z_value_at(items, i), "sku", ""), "lamp") == 0)
            return am2z_fail(am2z_error_business("OUT_OF_STOCK", AM2Z_SEVERITY_MEDIUM, "'lamp' is out of stock"));
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "inventory.checked", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

/* The gateway is busy twice, then captures. */
static am2z_result charge(am2z_ctx *ctx, const am2z_state *in) {
    const am2z_meta *m = am2z_ctx_meta(ctx);
    am2z_edit e;
    if (m->attempt <= 2)
        return am2z_fail(am2z_error_with_retryable(
            am2z_error_business("GATEWAY_BUSY", AM2Z_SEVERITY_LOW, "payment gateway busy, try again"), 1));
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "payment.status", am2z_value_string("captured"));
    am2z_edit_set(&e, "payment.attempts", am2z_value_int(m->attempt));
    am2z_edit_set(&e, "payment.capturedAt", am2z_value_int(am2z_ctx_now_ms(ctx)));
    return am2z_edit_end(&e);
}

static am2z_processor *plain(const char *name, am2z_processor_fn fn, void *key) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = fn, .timeout_ms = 2000, .user_data = key},
                              NULL);
}

static void test_order_workflow(void) {
    am2z_runtime *rt = vrt(0);
    am2z_state *good = am2z_state_parse("shop", "{\"id\":\"A-100\",\"customer\":{\"email\":\"ada@example.com\"},"
        "\"items\":[{\"sku\":\"book\",\"qty\":2,\"price\":12.5},{\"sku\":\"mug\",\"qty\":1,\"price\":8}],\"log\":[]}",
        AM2Z_NTS, NULL);
    am2z_state *bad = am2z_state_parse("shop", "{\"id\":\"A-101\",\"customer\":{\"email\":\"bob@example.com\"},"
        "\"items\":[{\"sku\":\"lamp\",\"qty\":1,\"price\":40}],\"log\":[]}", AM2Z_NTS, NULL);
    am2z_outcome out = {0};
    am2z_value *calls;
    double t;
    am2z_status st = am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){
        .name = "process-order", .count = 4, .steps = (am2z_processor *[]){
            plain("validate", validate, NULL), plain("check-inventory", check_inventory, NULL),
            am2z_processor_new(&(am2z_processor_desc){.name = "payment", .fn = charge, .timeout_ms = 2000,
                .retry = {.max_attempts = 4, .backoff = AM2Z_BACKOFF_FIXED, .delay_ms = 1000}}, NULL),
            am2z_parallel_new(&(am2z_parallel_desc){.name = "fulfilment", .count = 3, .branches = (am2z_processor *[]){
                plain("reserve-stock", mark, (void *)"reserved"), plain("send-email", mark, (void *)"emailed"),
                plain("create-invoice", mark, (void *)"invoiced")}}, NULL)}}, NULL));
    CHECK_INT(st, AM2Z_STATUS_OK);

    t = wall_ms();
    out = am2z_runtime_execute_in_session(rt, "process-order", good, "shop");
    t = wall_ms() - t;
    CHECK(out.error == NULL);
    CHECK_DBL(out.duration_ms, 2000, 0); /* two 1 s backoffs of virtual time */
    CHECK(t < 2000);                      /* in far less wall time than one backoff pair */
    CHECK_STR(am2z_value_get_string(out.state, "payment.status", ""), "captured");
    CHECK_INT(am2z_value_get_int(out.state, "payment.attempts", 0), 3);
    CHECK_INT(am2z_value_get_int(out.state, "payment.capturedAt", 0), T0 + 2000);
    CHECK(json_is(am2z_value_get(out.state, "log"), "[\"reserved\",\"emailed\",\"invoiced\"]"));
    CHECK_DBL(am2z_value_get_double(out.state, "total", 0), 33.0, 0);
    CHECK_STR(am2z_state_session_id(out.state), "shop");
    am2z_outcome_clear(&out);
    calls = am2z_inline_calls(rt); /* validate, inventory, payment x3, 3 branches, fulfilment, chain */
    CHECK_INT(am2z_value_len(calls), 10);
    CHECK_STR(am2z_value_get_string(calls, "[3].processor", ""), "payment");
    CHECK_INT(am2z_value_get_int(calls, "[3].attempt", 0), 2);
    CHECK_INT(am2z_value_get_int(calls, "[3].startedAt", 0), T0 + 1000);
    am2z_value_release(calls);

    /* the failing order stops at the inventory check, with the partial state */
    out = am2z_runtime_execute_in_session(rt, "process-order", bad, "shop");
    CHECK(out.error != NULL);
    CHECK_STR(am2z_error_root_cause(out.error)->code, "OUT_OF_STOCK");
    CHECK_INT(am2z_value_get_int(out.error->details, "failedStep", -1), 1);
    CHECK_DBL(am2z_value_get_double(out.error->partial_state, "total", -1), 40.0, 0);
    CHECK_INT(out.attempts, 1);
    am2z_outcome_clear(&out);

    /* the same workflow with the payment stubbed to fail for good */
    {
        am2z_error *declined = am2z_error_business("DECLINED", AM2Z_SEVERITY_HIGH, "card declined");
        CHECK_INT(am2z_inline_stub(rt, "payment", &(am2z_inline_stub_desc){.error = declined}), AM2Z_STATUS_OK);
        out = am2z_runtime_execute_in_session(rt, "process-order", good, "shop");
        CHECK(out.error != NULL);
        CHECK_STR(am2z_error_root_cause(out.error)->code, "DECLINED");
        CHECK_STR(am2z_value_get_string(out.error->details, "failedProcessor", ""), "payment");
        am2z_outcome_clear(&out);
        am2z_error_release(declined);
    }
    am2z_value_release(good);
    am2z_value_release(bad);
    am2z_runtime_free(rt);
}

int main(void) {
    g_quiet = am2z_logger_new(&(am2z_logger_desc){.sink = AM2Z_SINK_SILENT}, NULL);
    T_RUN(test_execute);
    T_RUN(test_composites);
    T_RUN(test_nested_depth_limit);
    T_RUN(test_retries_virtual_clock);
    T_RUN(test_cooperative_timeout);
    T_RUN(test_delay_and_rate_limit);
    T_RUN(test_deterministic);
    T_RUN(test_stubs);
    T_RUN(test_recording_off);
    T_RUN(test_submit_wait);
    T_RUN(test_handles_from_inside);
    T_RUN(test_real_clock_backoff);
    T_RUN(test_sessions_events);
    T_RUN(test_session_stopped_on_create);
    T_RUN(test_stats_stop);
    T_RUN(test_bad_input);
    T_RUN(test_order_workflow);
    am2z_logger_release(g_quiet);
    return t_done();
}
