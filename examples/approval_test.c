/* approval_test.c - a unit test of a durable approval workflow (am2z.h section 7d) on the
   inline runtime's virtual clock (section 9): validate -> wait 3 days for an approval
   (a signal) -> pay. Approved, rejected, and timed out after 3 days: the three days
   pass in microseconds, and the test asserts the exact virtual time the payment ran.
   The same processors run durably on the local runtime with a file store
   (examples/approval.c); here a memory store is enough.
   Build: make examples, or without threads (no -pthread):
          cc -std=c99 -DAM2Z_NO_THREADS -I. examples/approval_test.c -lm
   Exit status 0 when every expectation holds. */
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <string.h>

#define T0 1700000000000      /* the virtual clock's start, ms since the epoch */
#define DAY (24 * 3600000LL)

static am2z_result validate(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    if (am2z_value_get_double(in, "amount", 0) <= 0)
        return am2z_fail(am2z_error_validation("amount", am2z_value_get(in, "amount"), "must be positive"));
    return am2z_ok(am2z_value_retain(in));
}

static am2z_result pay(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e;
    if (!am2z_value_get_bool(in, "approval.approved", 0))
        return am2z_fail(am2z_error_business("REJECTED", AM2Z_SEVERITY_LOW, "expense rejected"));
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "paidAt", am2z_value_int(am2z_ctx_now_ms(ctx)));
    return am2z_edit_end(&e);
}

#define EXPECT(c) do { if (!(c)) { printf("FAILED line %d: %s\n", __LINE__, #c); failures++; } } while (0)

static am2z_outcome submit(am2z_runtime *rt, const char *id) {
    am2z_state *in = am2z_state_parse(NULL, "{\"amount\":120}", AM2Z_NTS, NULL);
    am2z_outcome out = am2z_runtime_execute_with(rt, "expense", in, &(am2z_submit_desc){.durable = 1,
                                                                                        .execution_id = id});
    am2z_value_release(in);
    return out;
}

static const char *code_of(const am2z_outcome *out) {
    return out->error && am2z_error_root_cause(out->error)->code ? am2z_error_root_cause(out->error)->code : "";
}

int main(void) {
    int failures = 0;
    int64_t wall = am2z_monotonic_ns();
    am2z_store *store = am2z_memory_store_new(NULL);
    am2z_runtime *rt = am2z_inline_runtime_new(&(am2z_inline_desc){.virtual_clock_ms = T0, .store = store}, NULL);
    am2z_value *yes = am2z_json_parse("{\"approved\":true,\"by\":\"ann\"}", AM2Z_NTS, NULL, NULL);
    am2z_value *no = am2z_json_parse("{\"approved\":false}", AM2Z_NTS, NULL, NULL);
    am2z_value *auto_ok = am2z_json_parse("{\"approved\":true,\"by\":\"timeout\"}", AM2Z_NTS, NULL, NULL);
    am2z_status st = am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){
        .name = "expense", .count = 3, .steps = (am2z_processor *[]){
            am2z_processor_new(&(am2z_processor_desc){.name = "validate", .fn = validate}, NULL),
            am2z_wait_signal_new(&(am2z_wait_signal_desc){.name = "await-approval", .signal = "approval",
                                 .merge_path = "approval", .timeout_ms = 3 * DAY, .fallback = auto_ok}, NULL),
            am2z_processor_new(&(am2z_processor_desc){.name = "pay", .fn = pay}, NULL)}}, NULL));
    if (st) { printf("setup failed: %s\n", am2z_status_detail()); return 1; }

    /* approved after 2 hours: the signal resumes it at once, on this thread */
    am2z_outcome out = submit(rt, "exp-1");
    EXPECT(strcmp(code_of(&out), "AM2Z_WAITING") == 0);   // parked: no thread held
    am2z_outcome_clear(&out);
    EXPECT(am2z_inline_advance(rt, 2 * 3600000) == AM2Z_STATUS_OK);
    EXPECT(am2z_runtime_signal(rt, "exp-1", "approval", yes) == AM2Z_STATUS_OK);
    EXPECT(am2z_runtime_durable_outcome(rt, "exp-1", 0, &out) == AM2Z_STATUS_OK);
    EXPECT(out.error == NULL && am2z_value_get_int(out.state, "paidAt", 0) == T0 + 2 * 3600000);
    am2z_outcome_clear(&out);

    /* rejected */
    out = submit(rt, "exp-2");
    am2z_outcome_clear(&out);
    EXPECT(am2z_runtime_signal(rt, "exp-2", "approval", no) == AM2Z_STATUS_OK);
    EXPECT(am2z_runtime_durable_outcome(rt, "exp-2", 0, &out) == AM2Z_STATUS_OK);
    EXPECT(strcmp(code_of(&out), "REJECTED") == 0);
    am2z_outcome_clear(&out);

    /* nobody answers: 3 days later the fallback approves it (without a fallback the
       wait would end in a TimeoutError); the week passes in one call */
    int64_t started = am2z_inline_now_ms(rt);
    out = submit(rt, "exp-3");
    am2z_outcome_clear(&out);
    EXPECT(am2z_inline_advance(rt, 7 * DAY) == AM2Z_STATUS_OK);
    EXPECT(am2z_runtime_durable_outcome(rt, "exp-3", 0, &out) == AM2Z_STATUS_OK);
    EXPECT(out.error == NULL);
    EXPECT(strcmp(am2z_value_get_string(out.state, "approval.by", ""), "timeout") == 0);
    EXPECT(am2z_value_get_int(out.state, "paidAt", 0) == started + 3 * DAY);   // at its own time
    am2z_outcome_clear(&out);

    double wall_ms = (double)(am2z_monotonic_ns() - wall) / 1e6;
    printf("a week and 2 hours of virtual time in %.3f ms of wall time\n", wall_ms);
    am2z_value_release(yes);
    am2z_value_release(no);
    am2z_value_release(auto_ok);
    am2z_runtime_free(rt);
    am2z_store_free(store);
    printf("%s\n", failures ? "EXPECTATIONS FAILED" : "all expectations met");
    return failures ? 1 : 0;
}
