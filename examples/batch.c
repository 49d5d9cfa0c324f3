/* batch.c - one processor over many payloads. A shipping-quote processor runs for every
   parcel of a shipment, concurrently; the quotes land back in the shipment state in
   parcel order. Fail-fast stops the shipment at the first bad parcel; settle-all quotes
   everything it can and lists the failures per parcel. A build-time batch re-prices a
   fixed list of reference parcels. On a terminal a progress line (batches run, parcels
   quoted, counted from "processor:job:completed" events) follows each batch; piped
   output has none.
   Build: make examples. Exit status 0 when every expectation below holds. */
#define _POSIX_C_SOURCE 200809L /* isatty */
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int quoted; /* parcels quoted so far (atomic: handlers run on worker threads) */
static int tty;

static void count_quote(const char *event, const am2z_value *data, void *user_data) {
    (void)event, (void)user_data;
    if (strcmp(am2z_value_get_string(data, "processorName", ""), "quote") == 0)
        __atomic_add_fetch(&quoted, 1, __ATOMIC_RELAXED);
}

/* The progress line, on a terminal only; the next section's output overwrites it. */
static void progress(int done, int total) {
    if (!tty) return;
    printf("\r[%d/%d batches, %d parcels quoted]", done, total, __atomic_load_n(&quoted, __ATOMIC_RELAXED));
    fflush(stdout);
    printf("\r\033[K");
}

/* Quotes one parcel: 4.50 base + 1.20 per kg; parcels over 30 kg cannot be shipped. */
static am2z_result quote(am2z_ctx *ctx, const am2z_state *in) {
    double kg = am2z_value_get_double(in, "kg", -1);
    (void)ctx;
    if (kg <= 0)
        return am2z_fail(am2z_error_validation("kg", am2z_value_get(in, "kg"), "must be a positive weight"));
    if (kg > 30)
        return am2z_fail(am2z_error_business("TOO_HEAVY", AM2Z_SEVERITY_LOW, "%.1f kg is over the 30 kg limit", kg));
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "price", am2z_value_double(4.5 + 1.2 * kg));
    am2z_edit_set(&e, "carrier", am2z_value_string(kg > 10 ? "freight" : "post"));
    return am2z_edit_end(&e);
}

static void print_parcels(const am2z_value *parcels) {
    size_t i;
    for (i = 0; i < am2z_value_len(parcels); i++) {
        const am2z_value *p = am2z_value_at(parcels, i);
        if (am2z_value_type(p) == AM2Z_TYPE_NULL)
            printf("  parcel %zu: (failed)\n", i);
        else
            printf("  parcel %zu: %-8s %5.1f kg  %-7s %6.2f\n", i, am2z_value_get_string(p, "ref", "?"),
                   am2z_value_get_double(p, "kg", 0), am2z_value_get_string(p, "carrier", "?"),
                   am2z_value_get_double(p, "price", 0));
    }
}

int main(void) {
    int failures = 0;
    am2z_logger *logger = am2z_logger_new(&(am2z_logger_desc){.min_level = AM2Z_LOG_WARN}, NULL);
    am2z_runtime *rt = am2z_local_runtime_new(&(am2z_local_desc){.logger = logger}, NULL);
    am2z_processor *q = am2z_processor_new(&(am2z_processor_desc){.name = "quote", .fn = quote}, NULL);
    am2z_value *reference = am2z_json_parse("[{\"ref\":\"small\",\"kg\":1},{\"ref\":\"medium\",\"kg\":8},"
                                            "{\"ref\":\"large\",\"kg\":25}]", AM2Z_NTS, NULL, NULL);
    /* Three batches share the target q: each constructor consumes the reference it is
       given, so each gets its own (retain) and ours is released below. register_many
       consumes all three batches (and registers "quote" with the first). */
    am2z_status st = am2z_runtime_register_many(rt, (am2z_processor *[]){
        am2z_batch_new(&(am2z_batch_desc){
            .name = "quote-shipment", .target = am2z_processor_retain(q), .items_path = "shipment.parcels"}, NULL),
        am2z_batch_new(&(am2z_batch_desc){
            .name = "quote-what-you-can", .target = am2z_processor_retain(q), .items_path = "shipment.parcels",
            .results_path = "shipment.quotes", .mode = AM2Z_BATCH_SETTLE_ALL}, NULL),
        am2z_batch_new(&(am2z_batch_desc){
            .name = "price-list", .target = am2z_processor_retain(q), .payloads = reference,
            .results_path = "priceList"}, NULL)}, 3);
    am2z_processor *fast = am2z_runtime_lookup(rt, "quote-shipment");
    am2z_processor *fixed = am2z_runtime_lookup(rt, "price-list");
    am2z_state *ok_in = am2z_state_parse("depot", "{\"shipment\":{\"id\":\"S-1\",\"parcels\":["
        "{\"ref\":\"A\",\"kg\":2.5},{\"ref\":\"B\",\"kg\":12},{\"ref\":\"C\",\"kg\":0.4}]}}", AM2Z_NTS, NULL);
    am2z_state *mixed = am2z_state_parse("depot", "{\"shipment\":{\"id\":\"S-2\",\"parcels\":["
        "{\"ref\":\"D\",\"kg\":3},{\"ref\":\"E\",\"kg\":42},{\"ref\":\"F\",\"kg\":5},{\"ref\":\"G\"}]}}", AM2Z_NTS, NULL);
    am2z_state *empty = am2z_state_parse("depot", "{}", AM2Z_NTS, NULL);
    am2z_outcome out = {0};
    const am2z_value *errs;
    size_t i;

    tty = isatty(STDOUT_FILENO);
    am2z_runtime_on(rt, "processor:job:completed", count_quote, NULL);
    am2z_processor_release(q);     /* the batches keep their own references */
    am2z_value_release(reference);
    if (st != AM2Z_STATUS_OK) {
        fprintf(stderr, "setup failed: %s\n", am2z_status_detail());
        return 1;
    }

    printf("%s, shipment S-1:\n", am2z_processor_desc_of(fast)->description);
    out = am2z_runtime_execute(rt, "quote-shipment", ok_in);
    if (out.error) failures++;
    else {
        print_parcels(am2z_value_get(out.state, "shipment.parcels"));
        if (am2z_value_len(am2z_value_get(out.state, "shipment.parcels")) != 3) failures++;
        if (strcmp(am2z_value_get_string(out.state, "shipment.parcels[1].carrier", ""), "freight") != 0) failures++;
        if (strcmp(am2z_value_get_string(out.state, "shipment.id", ""), "S-1") != 0) failures++;
    }
    am2z_outcome_clear(&out);
    progress(1, 4);

    printf("\nfail fast, shipment S-2:\n");
    out = am2z_runtime_execute(rt, "quote-shipment", mixed);
    if (!out.error) failures++;
    else {
        printf("  %s (parcel %lld)\n", out.error->message, (long long)am2z_value_get_int(out.error->details, "batchIndex", -1));
        if (am2z_value_get_int(out.error->details, "batchIndex", -1) != 1) failures++;
    }
    am2z_outcome_clear(&out);
    progress(2, 4);

    printf("\nsettle all, shipment S-2:\n");
    out = am2z_runtime_execute(rt, "quote-what-you-can", mixed);
    if (out.error) failures++;
    else {
        print_parcels(am2z_value_get(out.state, "shipment.quotes"));
        errs = am2z_value_get(out.state, "shipment.quotesErrors");
        for (i = 0; i < am2z_value_len(errs); i++)
            printf("  parcel %lld failed: %s\n", (long long)am2z_value_get_int(am2z_value_at(errs, i), "index", -1),
                   am2z_value_get_string(am2z_value_at(errs, i), "error.message", "?"));
        if (am2z_value_len(errs) != 2) failures++;
        if (am2z_value_get_int(errs, "[1].index", -1) != 3) failures++;
        if (am2z_value_get_double(out.state, "shipment.quotes[2].price", 0) != 4.5 + 1.2 * 5) failures++;
    }
    am2z_outcome_clear(&out);
    progress(3, 4);

    printf("\n%s:\n", am2z_processor_desc_of(fixed)->description);
    out = am2z_runtime_execute(rt, "price-list", empty);
    if (out.error) failures++;
    else {
        print_parcels(am2z_value_get(out.state, "priceList"));
        if (am2z_value_len(am2z_value_get(out.state, "priceList")) != 3) failures++;
    }
    am2z_outcome_clear(&out);
    progress(4, 4);

    am2z_value_release(ok_in);
    am2z_value_release(mixed);
    am2z_value_release(empty);
    am2z_processor_release(fast); /* the references lookup gave */
    am2z_processor_release(fixed);
    am2z_runtime_free(rt);
    am2z_logger_release(logger);
    printf("%s\n", failures ? "EXPECTATIONS FAILED" : "all expectations met");
    return failures ? 1 : 0;
}
