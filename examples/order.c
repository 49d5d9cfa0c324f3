/* order.c - order processing with am2z: validate -> check inventory -> payment (with
   retries) -> parallel fulfilment (reserve stock || send email || create invoice), then
   an order that fails, to show the error chain and the partial state.
   Build: make examples (or cc -std=c99 -O2 -I. examples/order.c -pthread -lm)
   Run:   make demo          Exit status 0 when every expectation below holds. */
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <string.h>

/* A tiny warehouse. */
static const struct { const char *sku; int64_t stock; } warehouse[] = {
    {"book", 12}, {"mug", 3}, {"lamp", 0},
};

static int64_t stock_of(const char *sku) {
    size_t i;
    for (i = 0; i < sizeof warehouse / sizeof *warehouse; i++)
        if (strcmp(warehouse[i].sku, sku) == 0) return warehouse[i].stock;
    return -1;
}

/* validate: an order needs a customer email and at least one item; computes the total. */
static am2z_result validate(am2z_ctx *ctx, const am2z_state *in) {
    const am2z_value *items = am2z_value_get(in, "items");
    double total = 0;
    size_t i;
    if (!strchr(am2z_value_get_string(in, "customer.email", ""), '@'))
        return am2z_fail(am2z_error_validation("customer.email", am2z_value_get(in, "customer.email"),
                                               "must be an email address"));
    if (am2z_value_len(items) == 0)
        return am2z_fail(am2z_error_validation("items", items, "an order needs at least one item"));
    for (i = 0; i < am2z_value_len(items); i++) {
        const am2z_value *it = am2z_value_at(items, i);
        total += am2z_value_get_double(it, "price", 0) * (double)am2z_value_get_int(it, "qty", 0);
    }
    am2z_log_info(am2z_ctx_logger(ctx), "order %s: %zu items, total %.2f",
                  am2z_value_get_string(in, "id", "?"), am2z_value_len(items), total);
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "total", am2z_value_double(total));
    return am2z_edit_end(&e);
}

/* check-inventory: every item must be in stock (a business rule, never retried). */
static am2z_result check_inventory(am2z_ctx *ctx, const am2z_state *in) {
    const am2z_value *items = am2z_value_get(in, "items");
    size_t i;
    (void)ctx;
    for (i = 0; i < am2z_value_len(items); i++) {
        const char *sku = am2z_value_get_string(am2z_value_at(items, i), "sku", "");
        int64_t want = am2z_value_get_int(am2z_value_at(items, i), "qty", 0);
        if (stock_of(sku) < want)
            return am2z_fail(am2z_error_business("OUT_OF_STOCK", AM2Z_SEVERITY_MEDIUM,
                                                 "'%s' is out of stock (%lld wanted)", sku, (long long)want));
    }
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "inventory.checked", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

/* payment: the gateway is busy twice, then captures. A business error is permanent by
   default; with_retryable marks this one temporary, so the retry policy below turns two
   failures into a success (no should_retry callback needed). */
static am2z_result charge(am2z_ctx *ctx, const am2z_state *in) {
    const am2z_meta *meta = am2z_ctx_meta(ctx);
    if (meta->attempt <= 2) {
        printf("    payment attempt %d: gateway busy\n", meta->attempt);
        return am2z_fail(am2z_error_with_retryable(
            am2z_error_business("GATEWAY_BUSY", AM2Z_SEVERITY_LOW, "payment gateway busy, try again"), 1));
    }
    printf("    payment attempt %d: captured %.2f\n", meta->attempt, am2z_value_get_double(in, "total", 0));
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "payment.status", am2z_value_string("captured"));
    am2z_edit_set(&e, "payment.attempts", am2z_value_int(meta->attempt));
    am2z_edit_set(&e, "payment.transactionId", am2z_value_stringf("tx-%s", meta->execution_id));
    return am2z_edit_end(&e);
}

/* The three fulfilment branches each change their own part of the order and append to
   the shared "log" array; the default 3-way merge keeps all three entries. */
static am2z_result reserve_stock(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "fulfilment.reserved", am2z_value_bool(1));
    am2z_edit_append(&e, "log", am2z_value_string("stock reserved"));
    return am2z_edit_end(&e);
}

static am2z_result send_email(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "notifications.email",
                  am2z_value_stringf("sent to %s", am2z_value_get_string(in, "customer.email", "")));
    am2z_edit_append(&e, "log", am2z_value_string("confirmation email sent"));
    return am2z_edit_end(&e);
}

static am2z_result create_invoice(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "invoice.number", am2z_value_stringf("INV-%s", am2z_value_get_string(in, "id", "?")));
    am2z_edit_set(&e, "invoice.amount", am2z_value_double(am2z_value_get_double(in, "total", 0)));
    am2z_edit_append(&e, "log", am2z_value_string("invoice created"));
    return am2z_edit_end(&e);
}

static void on_event(const char *event, const am2z_value *data, void *user_data) {
    (void)user_data;
    if (strcmp(event, "processor:completed") == 0 && am2z_value_get(data, "chainName"))
        printf("  step %lld/%lld done: %s\n", (long long)am2z_value_get_int(data, "chainPosition", 0),
               (long long)am2z_value_get_int(data, "totalProcessors", 0),
               am2z_value_get_string(data, "processorName", "?"));
    else if (strcmp(event, "processor:job:retrying") == 0)
        printf("    retrying %s\n", am2z_value_get_string(data, "processorName", "?"));
}

static am2z_processor *plain(const char *name, am2z_processor_fn fn) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = fn, .timeout_ms = 2000}, NULL);
}

int main(void) {
    int failures = 0;
    am2z_logger *logger = am2z_logger_new(&(am2z_logger_desc){.min_level = AM2Z_LOG_WARN}, NULL);
    am2z_runtime *rt = am2z_local_runtime_new(&(am2z_local_desc){.logger = logger}, NULL);
    am2z_state *good, *bad;
    am2z_outcome out = {0};
    char *chain;

    /* The whole pipeline is one expression: each constructor takes over the processors it
       is given, register takes over the chain (and registers every step in it), and a
       failure anywhere reaches the one check below with its reason. Nothing to release. */
    am2z_status st = am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){
        .name = "process-order", .count = 4, .steps = (am2z_processor *[]){
            plain("validate", validate), plain("check-inventory", check_inventory),
            am2z_processor_new(&(am2z_processor_desc){.name = "payment", .fn = charge, .timeout_ms = 2000, .retry = {
                .max_attempts = 4, .backoff = AM2Z_BACKOFF_EXPONENTIAL, .delay_ms = 20, .multiplier = 2}}, NULL),
            am2z_parallel_new(&(am2z_parallel_desc){.name = "fulfilment", .count = 3, .branches = (am2z_processor *[]){
                plain("reserve-stock", reserve_stock), plain("send-email", send_email),
                plain("create-invoice", create_invoice)}}, NULL)}}, NULL));
    if (st != AM2Z_STATUS_OK) {
        fprintf(stderr, "setup failed: %s\n", am2z_status_detail());
        return 1;
    }
    am2z_processor *order = am2z_runtime_lookup(rt, "process-order"); /* a new reference */
    printf("%s\n", am2z_processor_desc_of(order)->description);
    am2z_processor_release(order);
    am2z_runtime_on(rt, "*", on_event, NULL);

    /* 1. an order that goes through */
    printf("\norder A-100:\n");
    good = am2z_state_parse("shop", "{\"id\":\"A-100\",\"customer\":{\"email\":\"ada@example.com\"},"
                                    "\"items\":[{\"sku\":\"book\",\"qty\":2,\"price\":12.5},"
                                    "{\"sku\":\"mug\",\"qty\":1,\"price\":8}],\"log\":[]}", AM2Z_NTS, NULL);
    out = am2z_runtime_execute_in_session(rt, "process-order", good, "shop");
    if (out.error) {
        chain = am2z_error_chain(out.error);
        printf("  unexpected failure: %s\n", chain ? chain : out.error->message);
        am2z_free(chain);
        failures++;
    } else {
        char *json = am2z_json_write(out.state, AM2Z_JSON_PRETTY, NULL);
        printf("  %s in session %s: done in %.2f ms, state version %lld:\n%s\n", out.execution_id,
               out.session_id, out.duration_ms, (long long)am2z_state_version(out.state), json ? json : "");
        am2z_free(json);
        if (strcmp(out.session_id, "shop") != 0 || strcmp(am2z_state_session_id(out.state), "shop") != 0)
            failures++;
        if (strcmp(am2z_value_get_string(out.state, "payment.status", ""), "captured") != 0) failures++;
        if (am2z_value_get_int(out.state, "payment.attempts", 0) != 3) failures++;
        if (am2z_value_len(am2z_value_get(out.state, "log")) != 3) failures++; /* all branches kept */
        if (!am2z_value_get_bool(out.state, "fulfilment.reserved", 0)) failures++;
        if (am2z_value_get_double(out.state, "invoice.amount", 0) != 33.0) failures++;
    }
    am2z_outcome_clear(&out);

    /* 2. an order that fails at the inventory check */
    printf("\norder A-101:\n");
    bad = am2z_state_parse("shop", "{\"id\":\"A-101\",\"customer\":{\"email\":\"bob@example.com\"},"
                                   "\"items\":[{\"sku\":\"lamp\",\"qty\":1,\"price\":40}],\"log\":[]}", AM2Z_NTS, NULL);
    out = am2z_runtime_execute_in_session(rt, "process-order", bad, "shop");
    if (!out.error) {
        printf("  unexpected success\n");
        failures++;
    } else {
        chain = am2z_error_chain(out.error);
        printf("  failed: %s\n", chain ? chain : "");
        printf("  failed step: %s (index %lld), completed steps: %lld\n",
               am2z_value_get_string(out.error->details, "failedProcessor", "?"),
               (long long)am2z_value_get_int(out.error->details, "failedStep", -1),
               (long long)am2z_value_get_int(out.error->details, "completedSteps", -1));
        printf("  partial state total: %.2f, retryable: %s\n",
               am2z_value_get_double(out.error->partial_state, "total", -1), out.error->retryable ? "yes" : "no");
        if (strcmp(am2z_error_root_cause(out.error)->code, "OUT_OF_STOCK") != 0) failures++;
        if (am2z_value_get_int(out.error->details, "failedStep", -1) != 1) failures++;
        if (am2z_value_get_double(out.error->partial_state, "total", -1) != 40.0) failures++;
        am2z_free(chain);
    }
    am2z_outcome_clear(&out);

    am2z_value_release(good);
    am2z_value_release(bad);
    am2z_runtime_free(rt);
    am2z_logger_release(logger);
    printf("\n%s\n", failures ? "EXPECTATIONS FAILED" : "all expectations met");
    return failures ? 1 : 0;
}
