/* Errors and Results (am2z.h section 3): the taxonomy of the original with its codes,
   messages and details, the retryable and no-double-wrap rules, chains, JSON round
   trips (with hostile input), copy-on-write setters and the Result helpers; the edit
   helper (am2z_edit) and the processors of edit_cases.h, am2z_ok(NULL) with the
   failing edit's reason, error_with_retryable and error_from_status. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include "oom.h"
#include "edit_cases.h"
#ifndef AM2Z_NO_THREADS
#include <pthread.h>
#endif

static am2z_value *J(const char *text) { return am2z_json_parse(text, AM2Z_NTS, NULL, NULL); }

static am2z_error *from_text(const char *text) {
    am2z_value *v = J(text);
    am2z_error *e;
    CHECK(v != NULL);
    e = am2z_error_from_json(v);
    am2z_value_release(v);
    return e;
}

/* details[key] as compact JSON text, compared with want. */
static int detail_is(const am2z_error *e, const char *key, const char *want) {
    const am2z_value *v = am2z_value_find(e->details, key, strlen(key));
    char *text = v ? am2z_json_write(v, AM2Z_JSON_COMPACT, NULL) : NULL;
    int ok = text && strcmp(text, want) == 0;
    if (!ok) fprintf(stderr, "  details.%s = %s, want %s\n", key, text ? text : "(absent)", want);
    am2z_free(text);
    return ok;
}

static int json_is(const am2z_value *v, const char *want) {
    char *text = am2z_json_write(v, AM2Z_JSON_COMPACT, NULL);
    int ok = text && strcmp(text, want) == 0;
    if (!ok) fprintf(stderr, "  json = %s, want %s\n", text ? text : "(null)", want);
    am2z_free(text);
    return ok;
}

static void check_kind(const am2z_error *e, am2z_error_kind kind, const char *name, const char *code,
                       am2z_error_category cat, am2z_severity sev, int retryable) {
    CHECK(e != NULL);
    if (!e) return;
    CHECK_INT(e->kind, kind);
    CHECK_STR(e->name, name);
    CHECK_STR(e->code, code);
    CHECK_INT(e->category, cat);
    CHECK_INT(e->severity, sev);
    CHECK_INT(e->retryable, retryable);
    CHECK(am2z_value_type(e->details) == AM2Z_TYPE_OBJECT);
    CHECK(e->created_at > 1600000000000LL);
}

static void test_names(void) {
    CHECK_STR(am2z_error_kind_name(AM2Z_ERROR_NONE), "Error");
    CHECK_STR(am2z_error_kind_name(AM2Z_ERROR_VALIDATION), "ValidationError");
    CHECK_STR(am2z_error_kind_name(AM2Z_ERROR_CALL_DEPTH), "CallDepthExceededError");
    CHECK_STR(am2z_error_kind_name(AM2Z_ERROR_CANCELLED), "CancelledError");
    CHECK_STR(am2z_error_kind_name((am2z_error_kind)99), "Error");
    CHECK_STR(am2z_error_category_name(AM2Z_CATEGORY_VALIDATION), "validation");
    CHECK_STR(am2z_error_category_name(AM2Z_CATEGORY_CONFIGURATION), "configuration");
    CHECK_STR(am2z_error_category_name(AM2Z_CATEGORY_AUTH), "auth");
    CHECK_STR(am2z_error_category_name(AM2Z_CATEGORY_BUSINESS), "business");
    CHECK_STR(am2z_error_category_name((am2z_error_category)42), "none");
    CHECK_STR(am2z_severity_name(AM2Z_SEVERITY_LOW), "low");
    CHECK_STR(am2z_severity_name(AM2Z_SEVERITY_CRITICAL), "critical");
    CHECK_STR(am2z_severity_name(AM2Z_SEVERITY_DEFAULT), "medium");
    CHECK_STR(am2z_severity_name((am2z_severity)-3), "medium");
}

static void test_validation(void) {
    am2z_value *v = am2z_value_int(-5);
    am2z_error *e = am2z_error_validation("age", v, "must be positive");
    check_kind(e, AM2Z_ERROR_VALIDATION, "ValidationError", "VALIDATION_FAILED", AM2Z_CATEGORY_VALIDATION,
               AM2Z_SEVERITY_LOW, 0);
    CHECK_STR(e->message, "Validation failed for field 'age': must be positive");
    CHECK(json_is(e->details, "{\"field\":\"age\",\"value\":-5,\"reason\":\"must be positive\"}"));
    CHECK(e->cause == NULL && e->partial_state == NULL && e->processor == NULL && e->execution_id == NULL);
    am2z_error_release(e);
    am2z_value_release(v);

    e = am2z_error_validation(NULL, NULL, NULL);
    CHECK_STR(e->message, "Validation failed for field 'unknown': no reason given");
    CHECK(json_is(e->details, "{\"field\":\"unknown\",\"reason\":\"no reason given\"}"));
    am2z_error_release(e);
}

static void test_not_found(void) {
    am2z_value *names = J("[\"a\",\"b\",\"c\"]");
    am2z_error *e = am2z_error_not_found("zz", names);
    check_kind(e, AM2Z_ERROR_PROCESSOR_NOT_FOUND, "ProcessorNotFoundError", "PROCESSOR_NOT_FOUND",
               AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_HIGH, 0);
    CHECK_STR(e->message, "Processor 'zz' not found. Available: a, b, c");
    CHECK(detail_is(e, "processorName", "\"zz\""));
    CHECK(detail_is(e, "availableProcessors", "[\"a\",\"b\",\"c\"]"));
    am2z_error_release(e);
    am2z_value_release(names);

    e = am2z_error_not_found("zz", NULL);
    CHECK_STR(e->message, "Processor 'zz' not found. Available: ");
    CHECK(detail_is(e, "availableProcessors", "[]"));
    am2z_error_release(e);

    /* Non-strings are listed as JSON; a long list grows the message buffer. */
    names = J("[1,{\"x\":null},\"name-with-a-fairly-long-text-to-force-growth-of-the-list-buffer\"]");
    e = am2z_error_not_found("p", names);
    CHECK_STR(e->message, "Processor 'p' not found. Available: 1, {\"x\":null}, "
                          "name-with-a-fairly-long-text-to-force-growth-of-the-list-buffer");
    am2z_error_release(e);
    am2z_value_release(names);
}

static void test_execution(void) {
    am2z_error *e = am2z_error_execution("step", "step-1-abc", NULL, NULL), *c;
    am2z_state *partial;
    check_kind(e, AM2Z_ERROR_EXECUTION, "ProcessorExecutionError", "PROCESSOR_EXECUTION_FAILED",
               AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_HIGH, 1);
    CHECK_STR(e->message, "Processor 'step' execution failed");
    CHECK_STR(e->processor, "step");
    CHECK_STR(e->execution_id, "step-1-abc");
    CHECK(json_is(e->details, "{\"processorName\":\"step\",\"executionId\":\"step-1-abc\","
                              "\"failedProcessor\":\"step\"}"));
    am2z_error_release(e);

    /* Retryable follows the cause: a timeout may pass on retry ... */
    partial = J("{\"n\":1}");
    e = am2z_error_execution("step", NULL, am2z_error_timeout("fetch", 250), partial);
    CHECK_INT(e->retryable, 1);
    CHECK_STR(e->message, "Processor 'step' execution failed: Operation 'fetch' timed out after 250ms");
    CHECK(e->partial_state == partial);
    CHECK(e->execution_id == NULL);
    CHECK(detail_is(e, "causeType", "\"TimeoutError\""));
    CHECK(detail_is(e, "causeMessage", "\"Operation 'fetch' timed out after 250ms\""));
    CHECK(e->cause && e->cause->kind == AM2Z_ERROR_TIMEOUT);
    am2z_error_release(e);

    /* ... a validation failure never will (the original said retryable anyway). */
    c = am2z_error_validation("x", NULL, "bad");
    e = am2z_error_execution("step", "id", c, NULL);
    CHECK_INT(e->retryable, 0);
    CHECK(e->cause == c);
    am2z_error_release(e);

    e = am2z_error_execution(NULL, NULL, NULL, NULL);
    CHECK_STR(e->message, "Processor 'unknown' execution failed");
    CHECK(e->processor == NULL);
    am2z_error_release(e);
}

static void test_execution_no_double_wrap(void) {
    am2z_error *inner = am2z_error_execution("step", NULL, am2z_error_timeout("t", 5), NULL);
    am2z_error *again, *outer, *other;
    am2z_state *p1 = J("{\"a\":1}");
    /* Same processor: the same error comes back, with the execution id filled in and
       the partial state attached; no second layer, no repeated message. */
    again = am2z_error_execution("step", "x-1", inner, p1);
    CHECK(again == inner);
    CHECK_STR(again->execution_id, "x-1");
    CHECK(again->partial_state == p1);
    CHECK_STR(again->message, "Processor 'step' execution failed: Operation 't' timed out after 5ms");
    CHECK(again->cause && again->cause->kind == AM2Z_ERROR_TIMEOUT && again->cause->cause == NULL);

    /* A different processor adds a layer: the chain records the composition path. */
    outer = am2z_error_execution("chain", "c-1", am2z_error_retain(again), NULL);
    CHECK(outer != again && outer->cause == again);
    CHECK_STR(outer->message, "Processor 'chain' execution failed: Processor 'step' execution failed: "
                              "Operation 't' timed out after 5ms");
    CHECK_INT(outer->retryable, 1);
    am2z_error_release(outer);

    /* Same processor, another execution (a recursive call): also a new layer. */
    other = am2z_error_execution("step", "x-2", am2z_error_retain(again), NULL);
    CHECK(other != again && other->cause == again);
    am2z_error_release(other);

    /* A shared cause is copied, never edited under its other holders. */
    outer = am2z_error_execution("step", "x-1", am2z_error_retain(again), J("{\"b\":2}"));
    CHECK(outer != again);
    CHECK(again->partial_state == p1);
    CHECK(json_is(outer->partial_state, "{\"b\":2}"));
    am2z_error_release(outer);
    am2z_error_release(again);
}

static void test_other_kinds(void) {
    am2z_error *e, *c;
    e = am2z_error_timeout("load", 1500);
    check_kind(e, AM2Z_ERROR_TIMEOUT, "TimeoutError", "OPERATION_TIMEOUT", AM2Z_CATEGORY_TIMEOUT,
               AM2Z_SEVERITY_MEDIUM, 1);
    CHECK_STR(e->message, "Operation 'load' timed out after 1500ms");
    CHECK(json_is(e->details, "{\"operation\":\"load\",\"timeoutMs\":1500}"));
    am2z_error_release(e);

    e = am2z_error_resource("memory", 100, 140);
    check_kind(e, AM2Z_ERROR_RESOURCE, "ResourceError", "RESOURCE_EXHAUSTED", AM2Z_CATEGORY_RESOURCE,
               AM2Z_SEVERITY_HIGH, 1);
    CHECK_STR(e->message, "Resource 'memory' exhausted: 140/100");
    CHECK(json_is(e->details, "{\"resource\":\"memory\",\"limit\":100,\"current\":140}"));
    am2z_error_release(e);

    e = am2z_error_network("redis://x", 503, NULL);
    check_kind(e, AM2Z_ERROR_NETWORK, "NetworkError", "NETWORK_ERROR", AM2Z_CATEGORY_NETWORK,
               AM2Z_SEVERITY_MEDIUM, 1);
    CHECK_STR(e->message, "Network error for endpoint 'redis://x' (503)");
    CHECK(json_is(e->details, "{\"endpoint\":\"redis://x\",\"statusCode\":503}"));
    am2z_error_release(e);
    c = am2z_error_timeout("connect", 10);
    e = am2z_error_network("api", 0, c);
    CHECK_STR(e->message, "Network error for endpoint 'api'");
    CHECK(json_is(e->details, "{\"endpoint\":\"api\"}"));
    CHECK(e->cause == c);
    am2z_error_release(e);

    e = am2z_error_configuration("workers", "must be > 0");
    check_kind(e, AM2Z_ERROR_CONFIGURATION, "ConfigurationError", "INVALID_CONFIGURATION",
               AM2Z_CATEGORY_CONFIGURATION, AM2Z_SEVERITY_CRITICAL, 0);
    CHECK_STR(e->message, "Configuration error for 'workers': must be > 0");
    CHECK(json_is(e->details, "{\"configKey\":\"workers\",\"reason\":\"must be > 0\"}"));
    am2z_error_release(e);

    e = am2z_error_business("OUT_OF_STOCK", AM2Z_SEVERITY_HIGH, "item %d: only %s left", 7, "two");
    check_kind(e, AM2Z_ERROR_BUSINESS, "BusinessError", "OUT_OF_STOCK", AM2Z_CATEGORY_BUSINESS,
               AM2Z_SEVERITY_HIGH, 0);
    CHECK_STR(e->message, "item 7: only two left");
    CHECK_INT(am2z_value_len(e->details), 0);
    am2z_error_release(e);
    e = am2z_error_business(NULL, AM2Z_SEVERITY_DEFAULT, NULL);
    check_kind(e, AM2Z_ERROR_BUSINESS, "BusinessError", "BUSINESS_ERROR", AM2Z_CATEGORY_BUSINESS,
               AM2Z_SEVERITY_MEDIUM, 0);
    CHECK_STR(e->message, "");
    am2z_error_release(e);
    e = am2z_error_business("X", (am2z_severity)77, "%s", "m");
    CHECK_INT(e->severity, AM2Z_SEVERITY_MEDIUM);
    am2z_error_release(e);

    e = am2z_error_call_depth(10, 10);
    check_kind(e, AM2Z_ERROR_CALL_DEPTH, "CallDepthExceededError", "CALL_DEPTH_EXCEEDED",
               AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_HIGH, 0);
    CHECK_STR(e->message, "Maximum call depth exceeded: 10 >= 10");
    CHECK(json_is(e->details, "{\"maxDepth\":10,\"currentDepth\":10}"));
    am2z_error_release(e);

    e = am2z_error_cancelled("session stopped");
    check_kind(e, AM2Z_ERROR_CANCELLED, "CancelledError", "EXECUTION_CANCELLED", AM2Z_CATEGORY_EXECUTION,
               AM2Z_SEVERITY_MEDIUM, 0);
    CHECK_STR(e->message, "Execution cancelled: session stopped");
    CHECK(json_is(e->details, "{\"reason\":\"session stopped\"}"));
    am2z_error_release(e);
    e = am2z_error_cancelled(NULL);
    CHECK_STR(e->message, "Execution cancelled");
    CHECK_INT(am2z_value_len(e->details), 0);
    am2z_error_release(e);
}

static void test_root_cause_and_chain(void) {
    am2z_error *e = am2z_error_execution(
        "chain", NULL, am2z_error_execution("step", NULL, am2z_error_timeout("io", 3), NULL), NULL);
    const am2z_error *root = am2z_error_root_cause(e);
    char *s;
    CHECK(root && root->kind == AM2Z_ERROR_TIMEOUT);
    CHECK(am2z_error_root_cause(root) == root);
    CHECK(am2z_error_root_cause(NULL) == NULL);
    s = am2z_error_chain(e);
    CHECK_STR(s, "ProcessorExecutionError: Processor 'chain' execution failed: Processor 'step' execution "
                 "failed: Operation 'io' timed out after 3ms -> ProcessorExecutionError: Processor 'step' "
                 "execution failed: Operation 'io' timed out after 3ms -> TimeoutError: Operation 'io' timed "
                 "out after 3ms");
    am2z_free(s);
    s = am2z_error_chain(root);
    CHECK_STR(s, "TimeoutError: Operation 'io' timed out after 3ms");
    am2z_free(s);
    s = am2z_error_chain(NULL);
    CHECK_STR(s, "");
    am2z_free(s);
    am2z_error_release(e);
}

/* Releasing a long chain walks it in a loop: no recursion to overflow the stack. */
static void test_long_chain(void) {
    am2z_error *e = am2z_error_timeout("root", 1);
    size_t n = 0;
    const am2z_error *it;
    int i;
    char *s;
    for (i = 0; i < 20000 && e; i++) e = am2z_error_network("hop", 0, e);
    CHECK(e != NULL);
    for (it = e; it; it = it->cause) n++;
    CHECK_INT(n, 20001);
    CHECK(am2z_error_root_cause(e)->kind == AM2Z_ERROR_TIMEOUT);
    s = am2z_error_chain(e);
    CHECK(s && strstr(s, "-> TimeoutError: Operation 'root' timed out after 1ms") != NULL);
    am2z_free(s);
    am2z_error_release(e);
}

static void check_same(const am2z_error *a, const am2z_error *b) {
    while (a && b) {
        CHECK_INT(a->kind, b->kind);
        CHECK_STR(a->name, b->name);
        CHECK_STR(a->code, b->code);
        CHECK_STR(a->message, b->message);
        CHECK_INT(a->category, b->category);
        CHECK_INT(a->severity, b->severity);
        CHECK_INT(a->retryable, b->retryable);
        CHECK((a->processor == NULL) == (b->processor == NULL));
        if (a->processor && b->processor) CHECK_STR(a->processor, b->processor);
        CHECK((a->execution_id == NULL) == (b->execution_id == NULL));
        if (a->execution_id && b->execution_id) CHECK_STR(a->execution_id, b->execution_id);
        CHECK(am2z_value_equal(a->details, b->details));
        CHECK((a->partial_state == NULL) == (b->partial_state == NULL));
        if (a->partial_state) CHECK(am2z_value_equal(a->partial_state, b->partial_state));
        CHECK_INT(a->created_at, b->created_at);
        a = a->cause;
        b = b->cause;
    }
    CHECK(a == NULL && b == NULL);
}

/* to_json -> text -> parse -> from_json gives the same error, kind included. */
static void round_trip(am2z_error *e) {
    am2z_value *j = am2z_error_to_json(e), *back;
    char *text = am2z_json_write(j, AM2Z_JSON_COMPACT, NULL);
    am2z_error *r;
    CHECK(text != NULL);
    back = J(text);
    r = am2z_error_from_json(back);
    CHECK(r != NULL);
    if (r) check_same(e, r);
    am2z_error_release(r);
    am2z_value_release(back);
    am2z_free(text);
    am2z_value_release(j);
    am2z_error_release(e);
}

static void test_json_round_trip_every_kind(void) {
    am2z_value *v = J("{\"deep\":[1,2.5,\"x\"]}");
    am2z_error *e;
    round_trip(am2z_error_validation("f", v, "r"));
    {
        am2z_value *names = J("[\"a\"]");
        round_trip(am2z_error_not_found("p", names));
        am2z_value_release(names);
    }
    round_trip(am2z_error_execution("p", "p-1", NULL, NULL));
    round_trip(am2z_error_timeout("op", 9));
    round_trip(am2z_error_resource("r", 1, 2));
    round_trip(am2z_error_network("e", 404, NULL));
    round_trip(am2z_error_configuration("k", "r"));
    round_trip(am2z_error_business("MINE", AM2Z_SEVERITY_CRITICAL, "boom"));
    round_trip(am2z_error_call_depth(3, 3));
    round_trip(am2z_error_cancelled("bye"));
    /* a cause chain with a non-retryable root, partial states and locations */
    e = am2z_error_execution("chain", "c-9",
                             am2z_error_execution("step", "s-1", am2z_error_validation("f", NULL, "r"),
                                                  J("{\"metadata\":{\"version\":2},\"k\":[true]}")),
                             J("{\"k\":1}"));
    CHECK_INT(e->retryable, 0);
    round_trip(e);
    e = am2z_error_with_details(am2z_error_timeout("x", 1), v);
    round_trip(e);
    am2z_value_release(v);
}

static void test_json_shape(void) {
    am2z_error *e = from_text("{\"name\":\"TimeoutError\",\"message\":\"Operation 'op' timed out after 7ms\","
                              "\"details\":{\"operation\":\"op\",\"timeoutMs\":7},"
                              "\"timestamp\":\"2024-02-29T23:59:59.123Z\"}");
    am2z_value *j;
    CHECK_INT(e->created_at, 1709251199123LL);
    j = am2z_error_to_json(e);
    CHECK(json_is(j, "{\"name\":\"TimeoutError\",\"code\":\"OPERATION_TIMEOUT\",\"message\":\"Operation 'op' "
                     "timed out after 7ms\",\"category\":\"timeout\",\"severity\":\"medium\",\"retryable\":true,"
                     "\"details\":{\"operation\":\"op\",\"timeoutMs\":7},\"timestamp\":\"2024-02-29T23:59:59.123Z\"}"));
    am2z_value_release(j);
    am2z_error_release(e);
    CHECK(am2z_error_to_json(NULL) == NULL);

    /* the ISO writer clamps to years 0000..9999 and handles times before 1970 */
    e = from_text("{\"timestamp\":-1}");
    j = am2z_error_to_json(e);
    CHECK_STR(am2z_value_get_string(j, "timestamp", ""), "1969-12-31T23:59:59.999Z");
    am2z_value_release(j);
    am2z_error_release(e);
    e = from_text("{\"timestamp\":9223372036854775807}");
    j = am2z_error_to_json(e);
    CHECK_STR(am2z_value_get_string(j, "timestamp", ""), "9999-12-31T23:59:59.999Z");
    am2z_value_release(j);
    am2z_error_release(e);
}

/* The limit: AM2Z_ERROR_MAX_CAUSES levels below the top survive JSON, deeper ones drop. */
static void test_json_cause_limit(void) {
    am2z_error *e = am2z_error_timeout("root", 1), *r;
    am2z_value *j;
    const am2z_value *level;
    const am2z_error *it;
    int i, n = 0;
    for (i = 0; i < AM2Z_ERROR_MAX_CAUSES + 8; i++) e = am2z_error_network("hop", 0, e);
    j = am2z_error_to_json(e);
    for (i = 0, level = j; (level = am2z_value_find(level, "cause", 5)) != NULL; i++) {}
    CHECK_INT(i, AM2Z_ERROR_MAX_CAUSES);
    r = am2z_error_from_json(j);
    for (it = r; it; it = it->cause) n++;
    CHECK_INT(n, AM2Z_ERROR_MAX_CAUSES + 1);
    am2z_error_release(r);
    am2z_value_release(j);
    am2z_error_release(e);
}

static void test_from_json_hostile(void) {
    static const char *non_objects[] = {"null", "true", "1", "2.5", "\"ValidationError\"", "[]",
                                        "[{\"name\":\"TimeoutError\"}]"};
    am2z_error *e;
    size_t i;
    char *deep;
    CHECK(am2z_error_from_json(NULL) == NULL);
    for (i = 0; i < sizeof non_objects / sizeof non_objects[0]; i++) {
        e = from_text(non_objects[i]);
        CHECK(e == NULL);
        am2z_error_release(e);
    }
    e = from_text("{}");
    check_kind(e, AM2Z_ERROR_NONE, "Error", "UNKNOWN_ERROR", AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_MEDIUM, 0);
    CHECK_STR(e->message, "An unknown error occurred");
    am2z_error_release(e);

    /* every field of the wrong type: the kind's defaults, no crash */
    e = from_text("{\"name\":7,\"code\":[],\"message\":{},\"category\":1,\"severity\":\"extreme\","
                  "\"retryable\":\"yes\",\"details\":\"x\",\"cause\":5,\"partialState\":[1],"
                  "\"timestamp\":\"yesterday\",\"processor\":1,\"executionId\":null}");
    check_kind(e, AM2Z_ERROR_NONE, "Error", "UNKNOWN_ERROR", AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_MEDIUM, 0);
    CHECK(e->cause == NULL && e->partial_state == NULL && e->processor == NULL && e->execution_id == NULL);
    CHECK_INT(am2z_value_len(e->details), 0);
    am2z_error_release(e);

    /* the kind by code when the name is foreign; a foreign code is kept */
    e = from_text("{\"name\":\"Whatever\",\"code\":\"OPERATION_TIMEOUT\",\"message\":\"m\"}");
    check_kind(e, AM2Z_ERROR_TIMEOUT, "TimeoutError", "OPERATION_TIMEOUT", AM2Z_CATEGORY_TIMEOUT,
               AM2Z_SEVERITY_MEDIUM, 1);
    am2z_error_release(e);
    e = from_text("{\"name\":\"TypeError\",\"code\":\"E_WEIRD\",\"severity\":\"critical\",\"retryable\":true}");
    check_kind(e, AM2Z_ERROR_NONE, "Error", "E_WEIRD", AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_CRITICAL, 1);
    am2z_error_release(e);

    /* the original's ErrorDetails shape: context, stack, ISO timestamp */
    e = from_text("{\"name\":\"ValidationError\",\"code\":\"VALIDATION_FAILED\",\"message\":\"Validation failed "
                  "for field 'a': b\",\"category\":\"validation\",\"severity\":\"low\",\"retryable\":false,"
                  "\"context\":{\"field\":\"a\",\"reason\":\"b\"},\"stack\":\"Error\\n at x\","
                  "\"timestamp\":\"2024-02-29T23:59:59.123456Z\"}");
    check_kind(e, AM2Z_ERROR_VALIDATION, "ValidationError", "VALIDATION_FAILED", AM2Z_CATEGORY_VALIDATION,
               AM2Z_SEVERITY_LOW, 0);
    CHECK(detail_is(e, "field", "\"a\""));
    CHECK_INT(e->created_at, 1709251199123LL);
    am2z_error_release(e);

    /* timestamps: ms integers accepted, malformed ISO text ignored (now is kept) */
    e = from_text("{\"timestamp\":12345}");
    CHECK_INT(e->created_at, 12345);
    am2z_error_release(e);
    e = from_text("{\"timestamp\":\"2024-13-01T00:00:00Z\"}");
    CHECK(e->created_at > 1600000000000LL);
    am2z_error_release(e);
    e = from_text("{\"timestamp\":\"2024-01-01T00:00:00\"}");
    CHECK(e->created_at > 1600000000000LL);
    am2z_error_release(e);
    e = from_text("{\"timestamp\":\"1970-01-01T00:00:00Z\"}");
    CHECK_INT(e->created_at, 0);
    am2z_error_release(e);

    /* causes nested 200 deep: read up to the limit, the rest dropped, no recursion blow-up */
    {
        size_t n = 200, k, len = 0;
        const am2z_error *it;
        int count = 0;
        deep = (char *)malloc(n * 40 + 64);
        for (k = 0; k < n; k++) len += (size_t)sprintf(deep + len, "{\"name\":\"TimeoutError\",\"cause\":");
        len += (size_t)sprintf(deep + len, "{}");
        for (k = 0; k < n; k++) deep[len++] = '}';
        deep[len] = '\0';
        e = from_text(deep);
        for (it = e; it; it = it->cause) count++;
        CHECK_INT(count, AM2Z_ERROR_MAX_CAUSES + 1);
        am2z_error_release(e);
        free(deep);
    }
}

static void test_copy_on_write(void) {
    am2z_error *e = am2z_error_timeout("op", 1), *shared, *e2;
    am2z_value *extra = J("{\"attempt\":2,\"operation\":\"renamed\"}");
    am2z_state *p;
    /* sole owner: edited in place */
    e2 = am2z_error_with_details(e, extra);
    CHECK(e2 == e);
    CHECK(json_is(e2->details, "{\"operation\":\"renamed\",\"timeoutMs\":1,\"attempt\":2}"));
    e = e2;

    /* shared: a copy is edited, the original stays as it was */
    shared = am2z_error_retain(e);
    {
        am2z_value *zz = J("{\"zz\":1}");
        e2 = am2z_error_with_details(am2z_error_retain(shared), zz);
        CHECK(e2 != shared && detail_is(e2, "zz", "1"));
        CHECK(am2z_value_find(shared->details, "zz", 2) == NULL);
        am2z_error_release(e2);
        am2z_value_release(zz);
    }
    e2 = am2z_error_with_location(am2z_error_retain(shared), "proc", "id-1");
    CHECK(e2 != shared);
    CHECK(shared->processor == NULL && shared->execution_id == NULL);
    CHECK_STR(e2->processor, "proc");
    CHECK_STR(e2->execution_id, "id-1");
    CHECK_STR(e2->message, shared->message);
    CHECK_INT(e2->created_at, shared->created_at);
    CHECK(json_is(shared->details, "{\"operation\":\"renamed\",\"timeoutMs\":1,\"attempt\":2}"));
    /* with_location: NULL leaves a field as it is */
    e2 = am2z_error_with_location(e2, NULL, "id-2");
    CHECK_STR(e2->processor, "proc");
    CHECK_STR(e2->execution_id, "id-2");
    am2z_error_release(e2);

    p = J("{\"s\":1}");
    e2 = am2z_error_with_partial(am2z_error_retain(shared), p);
    CHECK(e2 != shared && e2->partial_state == p && shared->partial_state == NULL);
    e2 = am2z_error_with_partial(e2, NULL);
    CHECK(e2->partial_state == NULL);
    am2z_error_release(e2);

    /* arguments may alias the error's own fields, shared or not */
    e2 = am2z_error_with_location(am2z_error_retain(shared), "own", "own-id");
    e2 = am2z_error_with_location(e2, e2->execution_id, e2->processor); /* sole owner: in place */
    CHECK_STR(e2->processor, "own-id");
    CHECK_STR(e2->execution_id, "own");
    e2 = am2z_error_with_details(e2, e2->details);
    CHECK(json_is(e2->details, "{\"operation\":\"renamed\",\"timeoutMs\":1,\"attempt\":2}"));
    {
        /* a member of the error's own details, which the merge replaces */
        am2z_value *sub = J("{\"sub\":{\"sub\":1}}");
        am2z_error *e3 = am2z_error_with_details(am2z_error_validation("f", NULL, "r"), sub);
        am2z_value_release(sub);
        e3 = am2z_error_with_details(e3, am2z_value_get(e3->details, "sub"));
        CHECK(e3 && am2z_value_get_int(e3->details, "sub", 0) == 1);
        am2z_error_release(e3);
    }
    {
        am2z_error *third = am2z_error_retain(e2);
        am2z_error *e3 = am2z_error_with_location(third, e2->execution_id, NULL); /* copy */
        CHECK(e3 != e2);
        CHECK_STR(e3->processor, "own");
        CHECK_STR(e2->processor, "own-id");
        am2z_error_release(e3);
    }
    am2z_error_release(e2);

    /* non-object or empty details change nothing */
    e2 = am2z_error_with_details(am2z_error_retain(shared), NULL);
    CHECK(e2 == shared);
    am2z_error_release(e2);

    /* NULL errors are accepted everywhere */
    CHECK(am2z_error_with_details(NULL, extra) == NULL);
    CHECK(am2z_error_with_location(NULL, "a", "b") == NULL);
    CHECK(am2z_error_with_partial(NULL, J("{}")) == NULL);
    CHECK(am2z_error_retain(NULL) == NULL);
    am2z_error_release(NULL);

    am2z_error_release(shared);
    am2z_error_release(e);
    am2z_value_release(extra);
}

/* ---- Results ---- */

static void test_ok_fail(void) {
    am2z_state *s = J("{\"a\":1}");
    am2z_result r = am2z_ok(s);
    CHECK(am2z_result_is_ok(&r));
    CHECK(r.state == s && r.error == NULL);
    am2z_result_clear(&r);
    CHECK(r.state == NULL && r.error == NULL);
    CHECK(!am2z_result_is_ok(&r));
    CHECK(!am2z_result_is_ok(NULL));
    am2z_result_clear(NULL);

    r = am2z_fail(am2z_error_timeout("x", 1));
    CHECK(!am2z_result_is_ok(&r));
    CHECK(r.state == NULL && r.error && r.error->kind == AM2Z_ERROR_TIMEOUT);
    am2z_result_clear(&r);

    /* ill-formed input is a clear failure, not a crash */
    r = am2z_ok(NULL);
    CHECK(!am2z_result_is_ok(&r));
    CHECK(r.error && r.error->kind == AM2Z_ERROR_EXECUTION && r.error->retryable == 0);
    CHECK(r.error && strstr(r.error->message, "am2z_ok(NULL): ") != NULL);
    am2z_result_clear(&r);
    r = am2z_fail(NULL);
    CHECK(r.state == NULL && r.error && r.error->kind == AM2Z_ERROR_EXECUTION);
    CHECK(r.error && strstr(r.error->message, "am2z_fail() was given a NULL error") != NULL);
    am2z_result_clear(&r);
}

static am2z_result add_one(am2z_state *s, void *ud) {
    int64_t n = am2z_value_get_int(s, "n", 0);
    (*(int *)ud)++;
    return am2z_ok(am2z_value_set(s, "n", am2z_value_int(n + 1)));
}
static am2z_result refuse(am2z_state *s, void *ud) {
    (void)ud;
    am2z_value_release(s);
    return am2z_fail(am2z_error_validation("n", NULL, "refused"));
}
static am2z_result ill_formed(am2z_state *s, void *ud) {
    am2z_result r;
    (void)ud;
    am2z_value_release(s);
    r.state = NULL;
    r.error = NULL;
    return r;
}
static am2z_result both_set(am2z_state *s, void *ud) {
    am2z_result r;
    (void)ud;
    r.state = s;
    r.error = am2z_error_cancelled("both");
    return r;
}
static am2z_state *double_n(am2z_state *s, void *ud) {
    (void)ud;
    return am2z_value_set(s, "n", am2z_value_int(2 * am2z_value_get_int(s, "n", 0)));
}
static am2z_state *drop(am2z_state *s, void *ud) {
    (void)ud;
    am2z_value_release(s);
    return NULL;
}
static am2z_error *to_business(am2z_error *e, void *ud) {
    am2z_error *b = am2z_error_business("WRAPPED", AM2Z_SEVERITY_LOW, "%s (%s)", e->message, (const char *)ud);
    am2z_error_release(e);
    return b;
}
static am2z_error *lose(am2z_error *e, void *ud) {
    (void)ud;
    am2z_error_release(e);
    return NULL;
}

static void test_and_then_map(void) {
    int calls = 0;
    am2z_result r = am2z_result_and_then(am2z_ok(J("{\"n\":1}")), add_one, &calls);
    r = am2z_result_and_then(r, add_one, &calls);
    CHECK(am2z_result_is_ok(&r));
    CHECK_INT(am2z_value_get_int(r.state, "n", 0), 3);
    r = am2z_result_map(r, double_n, NULL);
    CHECK_INT(am2z_value_get_int(r.state, "n", 0), 6);
    r = am2z_result_and_then(r, NULL, NULL); /* NULL fn passes r through */
    CHECK_INT(am2z_value_get_int(r.state, "n", 0), 6);
    r = am2z_result_map_error(r, to_business, (void *)"x"); /* success untouched */
    CHECK(am2z_result_is_ok(&r));
    r = am2z_result_and_then(r, refuse, NULL);
    CHECK(!am2z_result_is_ok(&r) && r.error->kind == AM2Z_ERROR_VALIDATION);
    r = am2z_result_and_then(r, add_one, &calls); /* failure skips fn */
    r = am2z_result_map(r, double_n, NULL);
    CHECK_INT(calls, 2);
    CHECK(r.error && r.error->kind == AM2Z_ERROR_VALIDATION);
    r = am2z_result_map_error(r, to_business, (void *)"mapped");
    CHECK(r.error && r.error->kind == AM2Z_ERROR_BUSINESS);
    CHECK_STR(r.error->message, "Validation failed for field 'n': refused (mapped)");
    CHECK_STR(r.error->code, "WRAPPED");
    am2z_result_clear(&r);

    /* functions that misbehave give clear failures */
    r = am2z_result_and_then(am2z_ok(J("{}")), ill_formed, NULL);
    CHECK(r.error && r.state == NULL && strstr(r.error->message, "neither state nor error"));
    am2z_result_clear(&r);
    r = am2z_result_and_then(am2z_ok(J("{}")), both_set, NULL);
    CHECK(r.error && r.state == NULL && r.error->kind == AM2Z_ERROR_CANCELLED);
    am2z_result_clear(&r);
    r = am2z_result_map(am2z_ok(J("{}")), drop, NULL);
    CHECK(r.error && r.state == NULL && strstr(r.error->message, "NULL state"));
    am2z_result_clear(&r);
    r = am2z_result_map_error(am2z_fail(am2z_error_cancelled(NULL)), lose, NULL);
    CHECK(r.error && r.error->kind == AM2Z_ERROR_EXECUTION && strstr(r.error->message, "NULL error"));
    am2z_result_clear(&r);
    {
        am2z_result empty;
        empty.state = NULL;
        empty.error = NULL;
        r = am2z_result_map(empty, double_n, NULL);
        CHECK(r.error && r.state == NULL);
        am2z_result_clear(&r);
    }
}

static void test_combine(void) {
    am2z_result rs[4];
    am2z_result r;
    size_t i;
    rs[0] = am2z_ok(J("{\"i\":0}"));
    rs[1] = am2z_ok(J("{\"i\":1}"));
    rs[2] = am2z_ok(J("{\"i\":2}"));
    r = am2z_result_combine(rs, 3);
    CHECK(am2z_result_is_ok(&r));
    CHECK(json_is(r.state, "[{\"i\":0},{\"i\":1},{\"i\":2}]"));
    for (i = 0; i < 3; i++) CHECK(rs[i].state == NULL && rs[i].error == NULL);
    am2z_result_clear(&r);

    /* the first failure in order wins; everything else is released */
    rs[0] = am2z_ok(J("{\"i\":0}"));
    rs[1] = am2z_fail(am2z_error_timeout("first", 1));
    rs[2] = am2z_ok(J("{\"i\":2}"));
    rs[3] = am2z_fail(am2z_error_timeout("second", 1));
    r = am2z_result_combine(rs, 4);
    CHECK(r.state == NULL && r.error && strstr(r.error->message, "'first'"));
    for (i = 0; i < 4; i++) CHECK(rs[i].state == NULL && rs[i].error == NULL);
    am2z_result_clear(&r);

    r = am2z_result_combine(rs, 0);
    CHECK(am2z_result_is_ok(&r) && json_is(r.state, "[]"));
    am2z_result_clear(&r);
    r = am2z_result_combine(NULL, 0);
    CHECK(am2z_result_is_ok(&r) && json_is(r.state, "[]"));
    am2z_result_clear(&r);
    r = am2z_result_combine(NULL, 2);
    CHECK(!am2z_result_is_ok(&r) && r.error != NULL);
    am2z_result_clear(&r);

    /* an ill-formed member is a failure */
    rs[0] = am2z_ok(J("{}"));
    rs[1].state = NULL;
    rs[1].error = NULL;
    r = am2z_result_combine(rs, 2);
    CHECK(r.error && strstr(r.error->message, "neither state nor error"));
    am2z_result_clear(&r);
}

/* ---- out of memory (tests/oom.h fails each allocation in turn) ---- */

/* Each returns 1 when the whole operation succeeded. */
static int op_execution(void) {
    am2z_value *v = am2z_value_int(3);
    am2z_error *e = am2z_error_execution("p", "id", am2z_error_validation("f", v, "r"),
                                         am2z_value_object());
    int ok = e != NULL && e->cause != NULL && e->partial_state != NULL;
    am2z_error_release(e);
    am2z_value_release(v);
    return ok;
}
static int op_not_found(void) {
    am2z_value *names = am2z_value_append(am2z_value_array(), "", am2z_value_string("a"));
    am2z_error *e;
    int ok;
    names = am2z_value_append(names, "", am2z_value_int(1));
    e = am2z_error_not_found("x", names);
    ok = names && e && strcmp(e->message, "Processor 'x' not found. Available: a, 1") == 0;
    am2z_error_release(e);
    am2z_value_release(names);
    return ok;
}
static int op_json_round_trip(void) {
    am2z_error *e = am2z_error_execution("p", "id", am2z_error_network("n", 500, am2z_error_cancelled("r")),
                                         NULL);
    am2z_value *j = am2z_error_to_json(e);
    am2z_error *r = am2z_error_from_json(j);
    char *chain = am2z_error_chain(r);
    int ok = e && j && r && chain && r->cause && r->cause->cause;
    am2z_free(chain);
    am2z_error_release(r);
    am2z_value_release(j);
    am2z_error_release(e);
    return ok;
}
static int op_setters(void) {
    am2z_error *e = am2z_error_timeout("t", 1), *shared = am2z_error_retain(e);
    am2z_value *d = am2z_value_set(am2z_value_object(), "k", am2z_value_int(1));
    int ok;
    e = am2z_error_with_location(e, "p", "x");
    e = am2z_error_with_details(e, d);
    e = am2z_error_with_partial(e, am2z_value_object());
    ok = e && d && e->processor && e->partial_state && am2z_value_find(e->details, "k", 1);
    am2z_error_release(e);
    am2z_error_release(shared);
    am2z_value_release(d);
    return ok;
}
static int op_results(void) {
    am2z_result rs[3];
    am2z_result r;
    int ok;
    rs[0] = am2z_ok(am2z_value_object());
    rs[1] = am2z_ok(NULL);
    rs[2] = am2z_ok(am2z_value_object());
    r = am2z_result_combine(rs, 3);
    ok = r.error != NULL;
    am2z_result_clear(&r);
    rs[0] = am2z_ok(am2z_value_object());
    rs[1] = am2z_ok(am2z_value_object());
    r = am2z_result_combine(rs, 2);
    ok = ok && am2z_result_is_ok(&r);
    am2z_result_clear(&r);
    r = am2z_fail(NULL);
    ok = ok && r.error != NULL && r.state == NULL;
    am2z_result_clear(&r);
    return ok;
}

static void test_out_of_memory(void) {
    oom_sweep("execution", op_execution);
    oom_sweep("not_found", op_not_found);
    oom_sweep("json round trip", op_json_round_trip);
    oom_sweep("setters", op_setters);
    oom_sweep("results", op_results);
}

#ifndef AM2Z_NO_THREADS /* needs threads */
/* Refcounts are atomic: threads sharing one error retain and release it freely. */
static void *hammer(void *arg) {
    am2z_error *e = (am2z_error *)arg;
    int i;
    for (i = 0; i < 20000; i++) {
        am2z_error *x = am2z_error_retain(e);
        am2z_error_release(x);
    }
    return NULL;
}

static void test_threads_share(void) {
    am2z_error *e = am2z_error_execution("p", "id", am2z_error_timeout("op", 1), NULL);
    pthread_t th[4];
    int i;
    for (i = 0; i < 4; i++) CHECK_INT(pthread_create(&th[i], NULL, hammer, e), 0);
    for (i = 0; i < 4; i++) pthread_join(th[i], NULL);
    CHECK_STR(e->message, "Processor 'p' execution failed: Operation 'op' timed out after 1ms");
    am2z_error_release(e);
}
#endif

/* ---- API 1.0: the failure channel reaches results ---- */

/* The bare-value idiom: am2z_ok(NULL) after a failed edit names the edit and the reason
   (v0.1: a generic "was given a NULL state"). */
static void test_ok_null_carries_detail(void) {
    am2z_value *in = J("{\"total\":5}");
    am2z_value *out = am2z_value_set(am2z_value_retain(in), "total.cents", am2z_value_int(5));
    am2z_result r;
    out = am2z_value_set(out, "status", am2z_value_string("paid"));
    r = am2z_ok(out);
    CHECK(!am2z_result_is_ok(&r));
    CHECK_STR(r.error ? r.error->message : NULL, "am2z_ok(NULL): set 'total.cents': 'total' is a number");
    am2z_result_clear(&r);
    am2z_value_release(in);
}

/* am2z_edit: the first failure sticks and becomes a ValidationError naming path and
   reason; later edits are no-ops that release what they are given (ASan: no leak). */
static void test_edit_helper(void) {
    am2z_value *in = J("{\"total\":5,\"items\":[]}");
    am2z_edit e = am2z_edit_begin(in);
    am2z_result r;
    CHECK_INT(am2z_edit_set(&e, "status", am2z_value_string("new")), 1);
    CHECK_INT(am2z_edit_append(&e, "items", am2z_value_stringf("sku-%d", 1)), 1);
    CHECK_INT(am2z_edit_set(&e, "total.cents", am2z_value_stringf("%d", 500)), 0);
    CHECK(e.state == NULL && e.error != NULL);
    CHECK_INT(am2z_edit_set(&e, "later", am2z_value_stringf("heap %d", 1)), 0);
    CHECK_INT(am2z_edit_append(&e, "items", am2z_value_stringf("heap %d", 2)), 0);
    CHECK_INT(am2z_edit_remove(&e, "status"), 0);
    CHECK_INT(am2z_edit_merge(&e, in), 0);
    CHECK_INT(am2z_edit_fail(&e, am2z_error_business("X", AM2Z_SEVERITY_DEFAULT, "ignored")), 0);
    r = am2z_edit_end(&e);
    CHECK(e.state == NULL && e.error == NULL);
    CHECK(!am2z_result_is_ok(&r) && r.error && r.error->kind == AM2Z_ERROR_VALIDATION);
    if (r.error) {
        CHECK_STR(r.error->message,
                  "Validation failed for field 'total.cents': set 'total.cents': 'total' is a number");
        CHECK_STR(am2z_value_get_string(r.error->details, "field", ""), "total.cents");
        CHECK_STR(am2z_value_get_string(r.error->details, "reason", ""), "set 'total.cents': 'total' is a number");
        CHECK_INT(r.error->retryable, 0);
    }
    am2z_result_clear(&r);
    /* success: the edits, on a copy (the input is borrowed and unchanged) */
    e = am2z_edit_begin(in);
    CHECK_INT(am2z_edit_set(&e, "total", am2z_value_int(6)), 1);
    CHECK_INT(am2z_edit_append(&e, "items", am2z_value_string("a")), 1);
    CHECK_INT(am2z_edit_remove(&e, "absent"), 1);
    CHECK_INT(am2z_edit_merge(&e, NULL), 1);
    r = am2z_edit_end(&e);
    CHECK(am2z_result_is_ok(&r));
    CHECK_INT(am2z_value_get_int(r.state, "total", 0), 6);
    CHECK_INT(am2z_value_len(am2z_value_get(r.state, "items")), 1);
    CHECK_INT(am2z_value_get_int(in, "total", 0), 5);
    am2z_result_clear(&r);
    /* a NULL input (a failed constructor) is the first failure */
    e = am2z_edit_begin(NULL);
    CHECK_INT(am2z_edit_set(&e, "a", am2z_value_stringf("x%d", 1)), 0);
    r = am2z_edit_end(&e);
    CHECK(!am2z_result_is_ok(&r) && r.error && strstr(r.error->message, "NULL input"));
    am2z_result_clear(&r);
    am2z_value_release(in);
}

/* Every processor of edit_cases.h, run directly: each fails, and says why. */
static void test_edit_cases(void) {
    am2z_value *in = J("{\"metadata\":{\"version\":1,\"sessionId\":\"s\",\"createdAt\":1,\"lastUpdated\":1},"
                       "\"total\":{\"cents\":1}}");
    size_t i;
    CHECK_INT(edit_case_count, 11);
    for (i = 0; i < edit_case_count; i++) {
        am2z_result r = edit_cases[i].fn(NULL, in);
        if (am2z_result_is_ok(&r))
            T_FAIL_("%s: succeeded", edit_cases[i].name);
        else if (!r.error || !strstr(r.error->message, edit_cases[i].expected_message_part))
            T_FAIL_("%s: \"%s\" lacks \"%s\"", edit_cases[i].name, r.error ? r.error->message : "(null)",
                    edit_cases[i].expected_message_part);
        am2z_result_clear(&r);
    }
    CHECK_INT(am2z_value_get_int(in, "total.cents", 0), 1); /* the input is untouched */
    am2z_value_release(in);
}

/* The caller decides retryability, both ways, without touching a shared error. */
static void test_with_retryable(void) {
    am2z_error *b = am2z_error_business("TEMPORARILY_CLOSED", AM2Z_SEVERITY_DEFAULT, "shop closed for %d min", 5);
    am2z_error *shared, *n;
    CHECK_INT(b->retryable, 0);
    b = am2z_error_with_retryable(b, 1);
    CHECK(b && b->retryable == 1 && strcmp(b->message, "shop closed for 5 min") == 0);
    n = am2z_error_network("db", 0, NULL);
    CHECK_INT(n->retryable, 1);
    shared = am2z_error_retain(n);
    n = am2z_error_with_retryable(n, 0);
    CHECK(n != shared && n->retryable == 0 && shared->retryable == 1); /* shared: copied */
    CHECK_STR(n->message, shared->message);
    CHECK(am2z_error_with_retryable(NULL, 1) == NULL);
    {
        /* the retry policy follows it without a should_retry callback */
        am2z_retry_policy p;
        memset(&p, 0, sizeof p);
        p.max_attempts = 3;
        p.delay_ms = -1;
        CHECK(am2z_retry_delay_ms(&p, b, 1) >= 0);
        CHECK_INT(am2z_retry_delay_ms(&p, n, 1), -1);
    }
    am2z_error_release(b);
    am2z_error_release(n);
    am2z_error_release(shared);
}

/* A library failure becomes a processor failure in one call, by the documented table. */
static void test_error_from_status(void) {
    static const struct {
        am2z_status st;
        am2z_error_kind kind;
        int retryable;
        const char *code;
    } table[] = {
        {AM2Z_STATUS_TIMEOUT, AM2Z_ERROR_TIMEOUT, 1, "OPERATION_TIMEOUT"},
        {AM2Z_STATUS_IO, AM2Z_ERROR_NETWORK, 1, "NETWORK_ERROR"},
        {AM2Z_STATUS_NO_MEMORY, AM2Z_ERROR_RESOURCE, 1, "RESOURCE_EXHAUSTED"},
        {AM2Z_STATUS_LIMIT, AM2Z_ERROR_RESOURCE, 1, "RESOURCE_EXHAUSTED"},
        {AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_ERROR_VALIDATION, 0, "VALIDATION_FAILED"},
        {AM2Z_STATUS_NOT_FOUND, AM2Z_ERROR_VALIDATION, 0, "VALIDATION_FAILED"},
        {AM2Z_STATUS_EXISTS, AM2Z_ERROR_CONFIGURATION, 0, "INVALID_CONFIGURATION"},
        {AM2Z_STATUS_CYCLE, AM2Z_ERROR_CONFIGURATION, 0, "INVALID_CONFIGURATION"},
        {AM2Z_STATUS_NOT_STARTED, AM2Z_ERROR_CONFIGURATION, 0, "INVALID_CONFIGURATION"},
        {AM2Z_STATUS_CANCELLED, AM2Z_ERROR_CANCELLED, 0, "EXECUTION_CANCELLED"},
        {AM2Z_STATUS_SERVER, AM2Z_ERROR_BUSINESS, 1, "AM2Z_SERVER"},
        {AM2Z_STATUS_PROTOCOL, AM2Z_ERROR_BUSINESS, 1, "AM2Z_PROTOCOL"},
        {AM2Z_STATUS_CONFLICT, AM2Z_ERROR_BUSINESS, 1, "AM2Z_CONFLICT"},
        {AM2Z_STATUS_OK, AM2Z_ERROR_EXECUTION, 0, "PROCESSOR_EXECUTION_FAILED"},
    };
    am2z_status st = AM2Z_STATUS_OK;
    am2z_error *e;
    size_t i;
    /* the detail of the failing call is in the message, the offset in the details */
    CHECK(am2z_json_parse("[1,", AM2Z_NTS, NULL, &st) == NULL);
    e = am2z_error_from_status(st, "parse order");
    CHECK(e && e->kind == AM2Z_ERROR_VALIDATION);
    if (e) {
        CHECK_STR(e->message, "parse order: json: unexpected end of input");
        CHECK_INT(am2z_value_get_int(e->details, "offset", -1), 3);
        CHECK_STR(am2z_value_get_string(e->details, "status", ""), "invalid argument");
    }
    am2z_error_release(e);
    for (i = 0; i < sizeof table / sizeof table[0]; i++) {
        e = am2z_error_from_status(table[i].st, NULL);
        if (!e) {
            T_FAIL_("status %s gave NULL", am2z_status_string(table[i].st));
            continue;
        }
        if (e->kind != table[i].kind || e->retryable != table[i].retryable || strcmp(e->code, table[i].code) != 0)
            T_FAIL_("status %s: %s/%s retryable %d", am2z_status_string(table[i].st), e->name, e->code, e->retryable);
        CHECK(strncmp(e->message, "am2z: ", 6) == 0);
        am2z_error_release(e);
    }
}

int main(void) {
    oom_install();
    T_RUN(test_names);
    T_RUN(test_validation);
    T_RUN(test_not_found);
    T_RUN(test_execution);
    T_RUN(test_execution_no_double_wrap);
    T_RUN(test_other_kinds);
    T_RUN(test_root_cause_and_chain);
    T_RUN(test_long_chain);
    T_RUN(test_json_round_trip_every_kind);
    T_RUN(test_json_shape);
    T_RUN(test_json_cause_limit);
    T_RUN(test_from_json_hostile);
    T_RUN(test_copy_on_write);
    T_RUN(test_ok_fail);
    T_RUN(test_and_then_map);
    T_RUN(test_combine);
    T_RUN(test_out_of_memory);
#ifndef AM2Z_NO_THREADS
    T_RUN(test_threads_share);
#endif
    T_RUN(test_ok_null_carries_detail);
    T_RUN(test_edit_helper);
    T_RUN(test_edit_cases);
    T_RUN(test_with_retryable);
    T_RUN(test_error_from_status);
    return t_done();
}
