/* Traces (am2z.h section 7f) on the inline and local runtimes: a chain with a parallel
   inside and a retried step recorded span by span, the three renderers (the ASCII
   timeline of a virtual-clock run compared whole; Chrome JSON parsed back with am2z's
   parser; Mermaid checked line by line), the JSON round trip, limits, and the proof
   that tracing off allocates nothing. */
#include "../am2z.h"
#include "t.h"

#define T0 1700000000000LL

static am2z_logger *g_quiet;
static am2z_runtime *g_inline; /* set while an inline runtime runs: steps move its clock */

static am2z_state *S(const char *json) { return am2z_state_parse("s1", json, AM2Z_NTS, NULL); }

/* Takes user_data ms (on an inline runtime's clock; instantly elsewhere), sets its name. */
static am2z_result work(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    if (g_inline) am2z_inline_advance(g_inline, (int64_t)(intptr_t)am2z_ctx_user_data(ctx));
    am2z_edit_set(&e, am2z_ctx_meta(ctx)->processor, am2z_value_bool(1));
    am2z_edit_set(&e, "source", am2z_value_string(am2z_ctx_meta(ctx)->processor)); /* conflicts in a parallel */
    return am2z_edit_end(&e);
}

/* Fails its first attempt (retryable), then works like `work`. */
static am2z_result charge(am2z_ctx *ctx, const am2z_state *in) {
    if (am2z_ctx_meta(ctx)->attempt == 1) {
        if (g_inline) am2z_inline_advance(g_inline, 50);
        return am2z_fail(am2z_error_with_retryable(am2z_error_business("DECLINED", AM2Z_SEVERITY_LOW, "declined"), 1));
    }
    return work(ctx, in);
}

static am2z_processor *W(const char *name, intptr_t ms) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = work, .user_data = (void *)ms}, NULL);
}

/* order = chain [validate, enrich = parallel [price, stock], charge (retried after
   backoff_ms), ship]. */
static void register_order(am2z_runtime *rt, int64_t backoff_ms) {
    am2z_processor *branches[2], *steps[4];
    branches[0] = W("price", 200);
    branches[1] = W("stock", 100);
    steps[0] = W("validate", 100);
    steps[1] = am2z_parallel_new(&(am2z_parallel_desc){.name = "enrich", .branches = branches, .count = 2}, NULL);
    steps[2] = am2z_processor_new(&(am2z_processor_desc){.name = "charge", .fn = charge, .user_data = (void *)(intptr_t)100,
        .retry = {.max_attempts = 3, .backoff = AM2Z_BACKOFF_FIXED, .delay_ms = backoff_ms}}, NULL);
    steps[3] = W("ship", 100);
    CHECK_INT(am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){.name = "order", .steps = steps, .count = 4},
                                                       NULL)), AM2Z_STATUS_OK);
}

static am2z_runtime *inline_rt(int trace) {
    am2z_status st = AM2Z_STATUS_LIMIT;
    am2z_runtime *rt = am2z_inline_runtime_new(&(am2z_inline_desc){.virtual_clock_ms = T0, .logger = g_quiet,
                                                                   .trace = trace}, &st);
    CHECK_INT(st, AM2Z_STATUS_OK);
    g_inline = rt;
    register_order(rt, 1000);
    return rt;
}

static am2z_trace_span span(const am2z_trace *t, size_t i) {
    am2z_trace_span s;
    memset(&s, 0, sizeof s);
    CHECK_INT(am2z_trace_span_at(t, i, &s), AM2Z_STATUS_OK);
    return s;
}

/* The expected tree: (processor, parent processor or NULL, attempt, ok) in recording
   order, which is start order on the inline runtime. */
typedef struct want_span {
    const char *processor, *parent;
    int attempt, ok, depth;
} want_span;
static const want_span g_want[] = {
    {"order", NULL, 1, 1, 0},     {"validate", "order", 1, 1, 1}, {"enrich", "order", 1, 1, 1},
    {"price", "enrich", 1, 1, 2}, {"stock", "enrich", 1, 1, 2},   {"charge", "order", 1, 0, 1},
    {"charge", "order", 2, 1, 1}, {"ship", "order", 1, 1, 1},
};
#define NWANT (sizeof g_want / sizeof g_want[0])

/* Checks t against g_want: every span once, parents by name, attempts, outcomes, the
   retry delay of the failed charge, the merge conflict of enrich, children inside their
   parents' time. */
static void check_tree(const am2z_trace *t, int64_t backoff_ms, const char *exec_id) {
    size_t i, k;
    int seen[NWANT];
    memset(seen, 0, sizeof seen);
    CHECK_INT(am2z_trace_count(t), NWANT);
    CHECK_INT(am2z_trace_dropped(t), 0);
    for (i = 0; i < am2z_trace_count(t); i++) {
        am2z_trace_span s = span(t, i), p;
        CHECK_INT(s.id, i + 1);
        for (k = 0; k < NWANT; k++)
            if (!strcmp(g_want[k].processor, s.processor) && g_want[k].attempt == s.attempt) break;
        if (k == NWANT) {
            T_FAIL_("unexpected span %s #%d", s.processor, s.attempt);
            continue;
        }
        seen[k]++;
        CHECK_INT(s.call_depth, g_want[k].depth);
        CHECK_STR(s.session_id, "default");
        CHECK_STR(s.worker, "");
        CHECK(s.end_ns >= s.start_ns && s.start_ns > 0);
        CHECK_INT(s.status, g_want[k].ok ? AM2Z_TRACE_OK : AM2Z_TRACE_FAILED);
        if (g_want[k].ok) CHECK(s.error_kind == NULL);
        else CHECK_STR(s.error_kind, "BusinessError");
        CHECK_INT(s.retry_delay_ms, g_want[k].ok ? -1 : backoff_ms);
        CHECK_INT(s.merge_conflicts, !strcmp(s.processor, "enrich") ? 1 : 0);
        if (!g_want[k].parent) {
            CHECK_INT(s.parent, 0);
            CHECK_STR(s.execution_id, exec_id);
            continue;
        }
        p = span(t, s.parent - 1);
        CHECK_STR(p.processor, g_want[k].parent);
        CHECK(s.start_ns >= p.start_ns && s.end_ns <= p.end_ns);
        CHECK(strcmp(s.execution_id, exec_id) != 0); /* a nested call has its own id */
    }
    for (k = 0; k < NWANT; k++) CHECK_INT(seen[k], 1);
    /* the two attempts of charge share their call's execution id */
    for (i = 0; i + 1 < am2z_trace_count(t); i++) {
        am2z_trace_span a = span(t, i), b = span(t, i + 1);
        if (!strcmp(a.processor, "charge") && !strcmp(b.processor, "charge")) CHECK_STR(a.execution_id, b.execution_id);
    }
}

/* The whole timeline of the virtual-clock run: every duration and position is exact. */
static const char *g_ascii =
    "step         outcome       |0                                 1.65 s|\n"
    "order        ok            |========================================| 1.65 s\n"
    "  validate   ok            |==                                      | 100.00 ms\n"
    "  enrich     ok            |  ========                              | 300.00 ms  1 merge conflict\n"
    "    price    ok            |  =====                                 | 200.00 ms\n"
    "    stock    ok            |       ===                              | 100.00 ms\n"
    "  charge     BusinessError |         !!                             | 50.00 ms  retry +1000 ms\n"
    "  charge #2  ok            |                                   ===  | 100.00 ms\n"
    "  ship       ok            |                                     ===| 100.00 ms\n";

static void test_inline_chain_parallel_retry(void) {
    am2z_runtime *rt = inline_rt(0);
    am2z_state *in = S("{\"id\":1}");
    am2z_outcome out = am2z_runtime_execute_with(rt, "order", in, &(am2z_submit_desc){.trace = 1});
    char *text = NULL;
    size_t len = 0;
    CHECK(out.error == NULL);
    CHECK(out.trace != NULL);
    check_tree(out.trace, 1000, out.execution_id);
    /* times on the virtual clock: order starts at T0 and takes validate 100 + enrich
       (200 + 100) + charge 50 + backoff 1000 + charge 100 + ship 100 ms */
    CHECK_INT(span(out.trace, 0).start_ns, T0 * 1000000);
    CHECK_INT(span(out.trace, 0).end_ns - span(out.trace, 0).start_ns, 1650 * (int64_t)1000000);
    CHECK_INT(am2z_trace_ascii(out.trace, 40, &text, &len), AM2Z_STATUS_OK);
    CHECK_STR(text, g_ascii);
    CHECK_INT(len, strlen(g_ascii));
    if (text && strcmp(text, g_ascii) != 0) fprintf(stderr, "%s", text);
    am2z_free(text);
    am2z_outcome_clear(&out);
    CHECK(out.trace == NULL);
    /* untraced executions have none */
    out = am2z_runtime_execute(rt, "order", in);
    CHECK(out.error == NULL && out.trace == NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    g_inline = NULL;
}

/* The runtime-level option traces every execution; the trace outlives the outcome and
   the runtime when retained. */
static void test_inline_runtime_option(void) {
    am2z_runtime *rt = inline_rt(1);
    am2z_state *in = S("{}");
    am2z_execution *e = am2z_runtime_submit(rt, "order", in, "s9", NULL);
    am2z_outcome out;
    am2z_trace *kept;
    memset(&out, 0, sizeof out);
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    am2z_execution_free(e);
    CHECK(out.trace != NULL);
    CHECK_INT(am2z_trace_count(out.trace), NWANT);
    CHECK_STR(span(out.trace, 3).session_id, "s9");
    kept = am2z_trace_retain(out.trace);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    g_inline = NULL;
    CHECK_STR(span(kept, 7).processor, "ship"); /* strings belong to the trace */
    am2z_trace_release(kept);
}

/* Section 9's "assert on the recorded trace": a timeout the runtime decides after the
   processor returned is the span's outcome, and a stubbed failure shows in the tree. */
static am2z_result dawdle(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    am2z_inline_advance(g_inline, 500); /* ignores its 100 ms timeout */
    return am2z_ok(am2z_value_retain(in));
}

static void test_inline_late_timeout(void) {
    am2z_runtime *rt = inline_rt(1);
    am2z_state *in = S("{}");
    am2z_outcome out;
    am2z_processor *steps[2];
    steps[0] = am2z_processor_new(&(am2z_processor_desc){.name = "dawdle", .fn = dawdle, .timeout_ms = 100}, NULL);
    steps[1] = W("after", 1);
    CHECK_INT(am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){.name = "late", .steps = steps, .count = 2,
                                                                          .timeout_ms = 5000}, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "late", in);
    CHECK(out.error != NULL);
    CHECK_INT(am2z_trace_count(out.trace), 2);
    CHECK_STR(span(out.trace, 1).processor, "dawdle");
    CHECK_INT(span(out.trace, 1).status, AM2Z_TRACE_FAILED);
    CHECK_STR(span(out.trace, 1).error_kind, "TimeoutError");
    CHECK_INT(span(out.trace, 0).status, AM2Z_TRACE_FAILED);
    CHECK_STR(span(out.trace, 0).error_kind, "ProcessorExecutionError");
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    g_inline = NULL;
}

/* ---- renderers ---- */

static am2z_trace *inline_trace(void) {
    am2z_runtime *rt = inline_rt(1);
    am2z_state *in = S("{}");
    am2z_outcome out = am2z_runtime_execute(rt, "order", in);
    am2z_trace *t = am2z_trace_retain(out.trace);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    g_inline = NULL;
    return t;
}

/* Chrome trace-event JSON read back with am2z_json_parse: the fields Perfetto needs, on
   a microsecond scale, and the events of one (pid, tid) nest. */
static void check_chrome(const am2z_trace *t, size_t spans) {
    char *text = NULL;
    am2z_value *doc;
    const am2z_value *ev;
    size_t i, k, x = 0, meta = 0;
    CHECK_INT(am2z_trace_chrome(t, &text, NULL), AM2Z_STATUS_OK);
    doc = am2z_json_parse(text, AM2Z_NTS, NULL, NULL);
    CHECK(doc != NULL);
    CHECK_STR(am2z_value_get_string(doc, "displayTimeUnit", ""), "ms");
    ev = am2z_value_get(doc, "traceEvents");
    CHECK_INT(am2z_value_type(ev), AM2Z_TYPE_ARRAY);
    for (i = 0; i < am2z_value_len(ev); i++) {
        const am2z_value *e = am2z_value_at(ev, i);
        const char *ph = am2z_value_get_string(e, "ph", "");
        CHECK_INT(am2z_value_type(am2z_value_get(e, "name")), AM2Z_TYPE_STRING);
        CHECK_INT(am2z_value_type(am2z_value_get(e, "pid")), AM2Z_TYPE_INT);
        CHECK_INT(am2z_value_type(am2z_value_get(e, "tid")), AM2Z_TYPE_INT);
        CHECK_INT(am2z_value_type(am2z_value_get(e, "args")), AM2Z_TYPE_OBJECT);
        if (!strcmp(ph, "M")) {
            meta++;
            CHECK_STR(am2z_value_get_string(e, "name", ""), "process_name");
            continue;
        }
        CHECK_STR(ph, "X");
        x++;
        CHECK_STR(am2z_value_get_string(e, "cat", ""), "am2z");
        CHECK(am2z_value_get_double(e, "ts", -1) >= 0);
        CHECK(am2z_value_get_double(e, "dur", -1) >= 0);
        CHECK_STR(am2z_value_get_string(e, "name", ""), am2z_value_get_string(e, "args.processor", "?"));
        CHECK(am2z_value_get_int(e, "args.id", 0) >= 1);
        /* ts and dur are microseconds: dur is (endNs - startNs) / 1000 */
        CHECK_DBL(am2z_value_get_double(e, "dur", 0),
                  (double)(am2z_value_get_int(e, "args.endNs", 0) - am2z_value_get_int(e, "args.startNs", 0)) / 1e3, 1e-3);
        for (k = 0; k < i; k++) { /* same lane: nested or disjoint */
            const am2z_value *o = am2z_value_at(ev, k);
            double a0 = am2z_value_get_double(e, "ts", 0), a1 = a0 + am2z_value_get_double(e, "dur", 0);
            double b0 = am2z_value_get_double(o, "ts", 0), b1 = b0 + am2z_value_get_double(o, "dur", 0);
            if (strcmp(am2z_value_get_string(o, "ph", ""), "X") || am2z_value_get_int(o, "pid", 0) != am2z_value_get_int(e, "pid", 0) ||
                am2z_value_get_int(o, "tid", 0) != am2z_value_get_int(e, "tid", 0))
                continue;
            if (!(a1 <= b0 || b1 <= a0 || (a0 >= b0 && a1 <= b1) || (b0 >= a0 && b1 <= a1)))
                T_FAIL_("events %zu and %zu overlap on one lane", k, i);
        }
    }
    CHECK_INT(x, spans);
    CHECK(meta >= 1);
    am2z_value_release(doc);
    am2z_free(text);
}

static void test_chrome_json(void) {
    am2z_trace *t = inline_trace();
    check_chrome(t, NWANT);
    am2z_trace_release(t);
}

/* Mermaid: a gantt with dateFormat x, a section per top-level attempt, one task per
   span in tree order, failed ones crit, times in ms from the first start. */
static void test_mermaid(void) {
    am2z_trace *t = inline_trace();
    static const char *tasks[] = {"order :s1, 0, 1650", "validate :s2, 0, 100", "enrich :s3, 100, 400",
                                  "price :s4, 100, 300", "stock :s5, 300, 400",
                                  "charge BusinessError :crit, s6, 400, 450", "charge attempt 2 :s7, 1450, 1550",
                                  "ship :s8, 1550, 1650"};
    char *text = NULL, *line;
    size_t n = 0, k = 0;
    CHECK_INT(am2z_trace_mermaid(t, &text, &n), AM2Z_STATUS_OK);
    CHECK_INT(n, strlen(text));
    for (line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (k == 0) CHECK_STR(line, "gantt");
        else if (k == 1) CHECK_STR(line, "    dateFormat x");
        else if (k == 2) CHECK(!strncmp(line, "    axisFormat ", 15));
        else if (k == 3) CHECK(!strncmp(line, "    title order-", 16));
        else if (k == 4) CHECK_STR(line, "    section order");
        else if (k - 5 < sizeof tasks / sizeof *tasks) {
            CHECK(!strncmp(line, "    ", 4));
            CHECK_STR(line + 4, tasks[k - 5]);
        }
        k++;
    }
    CHECK_INT(k, 5 + sizeof tasks / sizeof *tasks);
    am2z_free(text);
    am2z_trace_release(t);
}

/* to_json, then add_json into an empty trace, gives the same spans; add_json under a
   span renumbers and shifts depths; malformed spans add nothing. */
static void test_json_round_trip(void) {
    am2z_trace *t = inline_trace(), *u = am2z_trace_new(0);
    am2z_value *j = am2z_trace_to_json(t), *j2, *bad;
    size_t i;
    CHECK_INT(am2z_value_len(am2z_value_get(j, "spans")), NWANT);
    CHECK_STR(am2z_value_get_string(j, "spans[5].errorKind", ""), "BusinessError");
    CHECK_INT(am2z_value_get_int(j, "spans[5].retryDelayMs", 0), 1000);
    CHECK_INT(am2z_value_get_int(j, "spans[2].mergeConflicts", 0), 1);
    CHECK_INT(am2z_trace_add_json(u, j, 0, NULL), AM2Z_STATUS_OK);
    j2 = am2z_trace_to_json(u);
    CHECK(am2z_value_equal(j, j2));
    am2z_value_release(j2);
    /* the same spans again, under span 3 (enrich), from worker "w1" */
    CHECK_INT(am2z_trace_add_json(u, j, 3, "w1"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_trace_count(u), 2 * NWANT);
    CHECK_INT(span(u, NWANT).parent, 3);
    CHECK_INT(span(u, NWANT).call_depth, 2);
    CHECK_STR(span(u, NWANT).worker, "w1");
    CHECK_INT(span(u, NWANT + 3).parent, NWANT + 3); /* price under the copy of enrich */
    CHECK_INT(span(u, NWANT + 3).call_depth, 4);
    for (i = 0; i < NWANT; i++) CHECK_STR(span(u, i).worker, "");
    check_chrome(u, 2 * NWANT);
    /* malformed: a parent after the span, a missing processor, a bad status */
    bad = am2z_json_parse("[{\"id\":1,\"parent\":2,\"processor\":\"a\",\"attempt\":1,\"callDepth\":0,\"startNs\":1,"
                          "\"endNs\":2,\"status\":\"ok\"}]", AM2Z_NTS, NULL, NULL);
    CHECK_INT(am2z_trace_add_json(u, bad, 0, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "span 0") != NULL);
    am2z_value_release(bad);
    bad = am2z_json_parse("[{\"id\":1,\"parent\":0,\"attempt\":1,\"callDepth\":0,\"startNs\":1,\"endNs\":2,"
                          "\"status\":\"ok\"}]", AM2Z_NTS, NULL, NULL);
    CHECK_INT(am2z_trace_add_json(u, bad, 0, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "processor") != NULL);
    am2z_value_release(bad);
    bad = am2z_json_parse("[{\"id\":1,\"parent\":0,\"processor\":\"a\",\"attempt\":1,\"callDepth\":0,\"startNs\":1,"
                          "\"endNs\":2,\"status\":\"done\"}]", AM2Z_NTS, NULL, NULL);
    CHECK_INT(am2z_trace_add_json(u, bad, 0, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "status") != NULL);
    am2z_value_release(bad);
    CHECK_INT(am2z_trace_add_json(u, NULL, 0, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_trace_count(u), 2 * NWANT);
    am2z_value_release(j);
    am2z_trace_release(u);
    am2z_trace_release(t);
}

/* Limits and bad arguments: max spans keeps the first ones and counts the rest; the
   renderers refuse NULL and a width out of range; an empty trace renders. */
static void test_limits_and_arguments(void) {
    am2z_runtime *rt = inline_rt(0);
    am2z_state *in = S("{}");
    am2z_outcome out = am2z_runtime_execute_with(rt, "order", in, &(am2z_submit_desc){.trace = 1, .trace_max_spans = 3});
    am2z_trace *empty = am2z_trace_new(0);
    am2z_trace_span s;
    char *text = (char *)"x";
    CHECK(out.error == NULL);
    CHECK_INT(am2z_trace_count(out.trace), 3);
    CHECK_INT(am2z_trace_dropped(out.trace), NWANT - 3);
    CHECK_INT(am2z_trace_span_at(out.trace, 3, &s), AM2Z_STATUS_NOT_FOUND);
    CHECK_INT(am2z_trace_span_at(NULL, 0, &s), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_trace_ascii(out.trace, 1001, &text, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(text == NULL);
    CHECK(strstr(am2z_status_detail(), "width") != NULL);
    CHECK_INT(am2z_trace_ascii(NULL, 0, &text, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_trace_mermaid(out.trace, NULL, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_trace_chrome(NULL, &text, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_trace_ascii(out.trace, 20, &text, NULL), AM2Z_STATUS_OK); /* a partial tree still renders */
    CHECK(text && strstr(text, "\n  enrich ") != NULL && strstr(text, "price") == NULL);
    am2z_free(text);
    CHECK_INT(am2z_trace_ascii(empty, 0, &text, NULL), AM2Z_STATUS_OK);
    CHECK(text && strstr(text, "(no steps)") != NULL);
    am2z_free(text);
    CHECK_INT(am2z_trace_chrome(empty, &text, NULL), AM2Z_STATUS_OK);
    am2z_free(text);
    CHECK_INT(am2z_trace_mermaid(empty, &text, NULL), AM2Z_STATUS_OK);
    am2z_free(text);
    CHECK_INT(am2z_trace_count(NULL), 0);
    am2z_trace_release(NULL);
    am2z_trace_release(empty);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    g_inline = NULL;
}

/* ---- zero allocations when off ---- */

static long g_allocs;
static void *count_alloc(size_t n, void *u) { (void)u; g_allocs++; return malloc(n); }
static void *count_realloc(void *p, size_t n, void *u) { (void)u; if (!p) g_allocs++; return realloc(p, n); }
static void count_free(void *p, void *u) { (void)u; free(p); }

/* Allocations of one traced or untraced run of the order workflow (inline runtime:
   deterministic), from submit to the cleared outcome. */
static long allocs_of_run(am2z_runtime *rt, const am2z_state *in, int trace) {
    long before = g_allocs;
    am2z_outcome out = am2z_runtime_execute_with(rt, "order", in, &(am2z_submit_desc){.session_id = "s", .trace = trace});
    CHECK(out.error == NULL);
    CHECK((out.trace != NULL) == (trace != 0));
    am2z_outcome_clear(&out);
    return g_allocs - before;
}

/* Tracing off is the baseline path with one pointer test more: its allocation count is
   the same run after run, and a traced run makes exactly the trace's own three blocks
   more (the trace, its span array, one string chunk), so the untraced run allocates
   nothing for tracing. */
static void test_off_allocates_nothing(void) {
    am2z_allocator a = {count_alloc, count_realloc, count_free, NULL};
    am2z_runtime *rt;
    am2z_state *in;
    long off1, on, off2;
    am2z_set_allocator(&a);
    rt = inline_rt(0);
    in = S("{}");
    allocs_of_run(rt, in, 0); /* warm up: session, counters */
    allocs_of_run(rt, in, 1);
    off1 = allocs_of_run(rt, in, 0);
    on = allocs_of_run(rt, in, 1);
    off2 = allocs_of_run(rt, in, 0);
    CHECK(off1 > 0);
    CHECK_INT(off2, off1);
    CHECK_INT(on - off1, 3);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    g_inline = NULL;
    am2z_set_allocator(NULL);
}

/* ---- the local runtime ---- */

#ifndef AM2Z_NO_THREADS
static am2z_runtime *local_rt(int trace, int workers) {
    am2z_status st = AM2Z_STATUS_LIMIT;
    am2z_runtime *rt = am2z_local_runtime_new(&(am2z_local_desc){.workers = workers, .logger = g_quiet,
                                                                 .trace = trace}, &st);
    CHECK_INT(st, AM2Z_STATUS_OK);
    register_order(rt, 5);
    return rt;
}

static void test_local_chain_parallel_retry(void) {
    am2z_runtime *rt = local_rt(0, 2);
    am2z_state *in = S("{}");
    am2z_outcome out = am2z_runtime_execute_with(rt, "order", in, &(am2z_submit_desc){.trace = 1});
    char *text = NULL;
    CHECK(out.error == NULL);
    check_tree(out.trace, 5, out.execution_id);
    check_chrome(out.trace, NWANT);
    CHECK_INT(am2z_trace_ascii(out.trace, 0, &text, NULL), AM2Z_STATUS_OK);
    CHECK(text && strstr(text, "\n  charge     BusinessError |") && strstr(text, "retry +5 ms"));
    CHECK(text && strstr(text, "\n    stock ") && strstr(text, "\n  charge #2 "));
    am2z_free(text);
    am2z_outcome_clear(&out);
    /* handles give it too; untraced ones don't */
    {
        am2z_execution *e = am2z_runtime_submit_with(rt, "order", in, &(am2z_submit_desc){.trace = 1}, NULL);
        CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
        CHECK_INT(am2z_trace_count(out.trace), NWANT);
        am2z_execution_free(e);
        am2z_outcome_clear(&out);
        out = am2z_runtime_execute(rt, "order", in);
        CHECK(out.trace == NULL);
        am2z_outcome_clear(&out);
    }
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* Runtime-wide tracing, both deadline modes, many executions at once: each outcome has
   its own complete tree. */
static void test_local_runtime_option(void) {
    am2z_runtime *rt = local_rt(1, 2);
    am2z_state *in = S("{}");
    am2z_execution *e[8];
    am2z_outcome out;
    size_t i;
    memset(&out, 0, sizeof out);
    for (i = 0; i < 8; i++) e[i] = am2z_runtime_submit(rt, "order", in, NULL, NULL);
    for (i = 0; i < 8; i++) {
        CHECK_INT(am2z_execution_wait(e[i], -1, &out), AM2Z_STATUS_OK);
        check_tree(out.trace, 5, out.execution_id);
        am2z_execution_free(e[i]);
    }
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* A nested call that ignores its timeout: the late result is discarded, and the span
   says TimeoutError although the processor returned a state. */
static am2z_result sleeper(am2z_ctx *ctx, const am2z_state *in) {
    int64_t until = am2z_monotonic_ns() + 60 * 1000000;
    (void)ctx;
    while (am2z_monotonic_ns() < until) {} /* ignores cancellation */
    return am2z_ok(am2z_value_retain(in));
}

static void test_local_late_timeout(void) {
    am2z_runtime *rt = local_rt(1, 2);
    am2z_state *in = S("{}");
    am2z_processor *steps[1];
    am2z_outcome out;
    steps[0] = am2z_processor_new(&(am2z_processor_desc){.name = "sleeper", .fn = sleeper, .timeout_ms = 20}, NULL);
    CHECK_INT(am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){.name = "wrap", .steps = steps, .count = 1,
                                                                          .timeout_ms = 5000}, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "wrap", in);
    CHECK(out.error != NULL);
    CHECK_INT(am2z_trace_count(out.trace), 2);
    CHECK_STR(span(out.trace, 1).processor, "sleeper");
    CHECK_INT(span(out.trace, 1).status, AM2Z_TRACE_FAILED);
    CHECK_STR(span(out.trace, 1).error_kind, "TimeoutError");
    CHECK(span(out.trace, 1).end_ns - span(out.trace, 1).start_ns >= 50 * 1000000);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}
#endif

int main(void) {
    g_quiet = am2z_logger_new(&(am2z_logger_desc){.sink = AM2Z_SINK_SILENT}, NULL);
    T_RUN(test_inline_chain_parallel_retry);
    T_RUN(test_inline_runtime_option);
    T_RUN(test_inline_late_timeout);
    T_RUN(test_chrome_json);
    T_RUN(test_mermaid);
    T_RUN(test_json_round_trip);
    T_RUN(test_limits_and_arguments);
    T_RUN(test_off_allocates_nothing);
#ifndef AM2Z_NO_THREADS
    T_RUN(test_local_chain_parallel_retry);
    T_RUN(test_local_runtime_option);
    T_RUN(test_local_late_timeout);
#endif
    am2z_logger_release(g_quiet);
    return t_done();
}
