/* workflow_test.c - a unit test of a workflow on the inline runtime (am2z.h section 9): a
   virtual clock, so 1 s retry backoffs take no time; a stub in place of the payment
   gateway; checks on the outcome, on the recorded calls, and on the execution's trace
   (section 7d: the tree of steps, with each retry's backoff), which it also prints as an
   ASCII timeline.
   Build: make examples, or without threads (no -pthread):
          cc -std=c99 -DAM2Z_NO_THREADS -I. examples/workflow_test.c -lm
   Exit status 0 when every expectation holds. */
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <string.h>

/* The workflow under test: reserve the stock, then charge the card (3 attempts, 1 s apart). */
static am2z_result reserve(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "reservedAt", am2z_value_int(am2z_ctx_now_ms(ctx))); // the runtime's clock
    return am2z_edit_end(&e);
}

static am2z_result charge(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    (void)in;
    return am2z_fail(am2z_error_configuration("gateway", "no real gateway in a unit test"));
}

#define EXPECT(c) do { if (!(c)) { printf("FAILED line %d: %s\n", __LINE__, #c); failures++; } } while (0)

int main(void) {
    int failures = 0;
    am2z_runtime *rt = am2z_inline_runtime_new(&(am2z_inline_desc){
        .virtual_clock_ms = 1700000000000, .record_calls = 1}, NULL);
    am2z_status st = am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){
        .name = "checkout", .count = 2, .steps = (am2z_processor *[]){
            am2z_processor_new(&(am2z_processor_desc){.name = "reserve", .fn = reserve}, NULL),
            am2z_processor_new(&(am2z_processor_desc){.name = "charge", .fn = charge, .retry = {
                .max_attempts = 3, .backoff = AM2Z_BACKOFF_FIXED, .delay_ms = 1000}}, NULL)}}, NULL));
    if (st) { printf("setup failed: %s\n", am2z_status_detail()); return 1; }

    /* the gateway is busy twice, then says paid */
    am2z_error *busy = am2z_error_network("gateway", 503, NULL);
    am2z_value *paid = am2z_json_parse("{\"paid\":true}", AM2Z_NTS, NULL, NULL);
    st = am2z_inline_stub(rt, "charge", &(am2z_inline_stub_desc){
        .error = busy, .fail_times = 2, .state = paid});
    EXPECT(st == AM2Z_STATUS_OK);

    am2z_state *in = am2z_state_parse("test", "{\"order\":\"A-1\"}", AM2Z_NTS, NULL);
    am2z_outcome out = am2z_runtime_execute(rt, "checkout", in);
    EXPECT(out.error == NULL && am2z_value_get_bool(out.state, "paid", 0));
    EXPECT(out.duration_ms == 2000);                 // two 1 s backoffs of virtual time
    EXPECT(am2z_value_get_int(out.state, "reservedAt", 0) == 1700000000000);

    am2z_value *calls = am2z_inline_calls(rt);       // reserve, charge x3, checkout
    EXPECT(am2z_value_len(calls) == 5);
    EXPECT(strcmp(am2z_value_get_string(calls, "[1].error", ""), "NetworkError") == 0);
    EXPECT(am2z_value_get_int(calls, "[3].attempt", 0) == 3);
    EXPECT(am2z_value_get_int(calls, "[3].startedAt", 0) == 1700000002000);

    /* the same run traced: a tree of spans to assert on, and a timeline to read */
    am2z_outcome_clear(&out);
    st = am2z_inline_stub(rt, "charge", &(am2z_inline_stub_desc){.error = busy, .fail_times = 2, .state = paid});
    out = am2z_runtime_execute_with(rt, "checkout", in, &(am2z_submit_desc){.trace = 1});
    am2z_trace_span s;
    EXPECT(am2z_trace_count(out.trace) == 5);        // checkout, reserve, charge x3
    EXPECT(am2z_trace_span_at(out.trace, 2, &s) == AM2Z_STATUS_OK);
    EXPECT(strcmp(s.processor, "charge") == 0 && s.parent == 1 && s.status == AM2Z_TRACE_FAILED);
    EXPECT(strcmp(s.error_kind, "NetworkError") == 0 && s.retry_delay_ms == 1000);
    EXPECT(am2z_trace_span_at(out.trace, 4, &s) == AM2Z_STATUS_OK);
    EXPECT(s.attempt == 3 && s.status == AM2Z_TRACE_OK && s.retry_delay_ms == -1);
    char *timeline = NULL;
    EXPECT(am2z_trace_ascii(out.trace, 40, &timeline, NULL) == AM2Z_STATUS_OK);
    if (timeline) printf("%s", timeline);
    am2z_free(timeline);

    am2z_value_release(calls);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_value_release(paid);
    am2z_error_release(busy);
    am2z_runtime_free(rt);
    printf("%s\n", failures ? "EXPECTATIONS FAILED" : "all expectations met");
    return failures ? 1 : 0;
}
