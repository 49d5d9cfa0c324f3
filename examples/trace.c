/* trace.c - the trace of one execution (am2z.h section 7f) on the local runtime: an
   order chain with a parallel inside (its branches run on two threads at once) and a
   payment step that fails once and is retried after 20 ms. Prints the ASCII timeline
   and a Mermaid Gantt chart; `trace FILE` also writes Chrome trace-event JSON to FILE
   (open it in https://ui.perfetto.dev or chrome://tracing).
   Build: make examples. Exit status 0 when the trace has the 8 expected steps. */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Works for user_data milliseconds, then marks its step done. */
static am2z_result step(am2z_ctx *ctx, const am2z_state *in) {
    long ms = (long)(intptr_t)am2z_ctx_user_data(ctx);
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    am2z_edit e = am2z_edit_begin(in);
    nanosleep(&ts, NULL);
    am2z_edit_set(&e, am2z_ctx_meta(ctx)->processor, am2z_value_bool(1));
    return am2z_edit_end(&e);
}

/* The card is declined on the first attempt (retryable), then charged. */
static am2z_result charge(am2z_ctx *ctx, const am2z_state *in) {
    if (am2z_ctx_meta(ctx)->attempt == 1) {
        am2z_result r = step(ctx, in); /* the gateway takes its time to say no */
        am2z_result_clear(&r);
        return am2z_fail(am2z_error_with_retryable(am2z_error_network("gateway", 503, NULL), 1));
    }
    return step(ctx, in);
}

static am2z_processor *S(const char *name, long ms) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = step, .user_data = (void *)(intptr_t)ms}, NULL);
}

int main(int argc, char **argv) {
    am2z_runtime *rt = am2z_local_runtime_new(&(am2z_local_desc){.workers = 2}, NULL);
    am2z_status st = am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){
        .name = "order", .count = 4, .steps = (am2z_processor *[]){
            S("validate", 2),
            am2z_parallel_new(&(am2z_parallel_desc){.name = "enrich", .count = 2,
                .branches = (am2z_processor *[]){S("price", 8), S("stock", 5)}}, NULL),
            am2z_processor_new(&(am2z_processor_desc){.name = "charge", .fn = charge, .user_data = (void *)(intptr_t)6,
                .retry = {.max_attempts = 3, .backoff = AM2Z_BACKOFF_FIXED, .delay_ms = 20}}, NULL),
            S("ship", 4)}}, NULL));
    am2z_state *in = am2z_state_parse("shop", "{\"order\":\"A-17\"}", AM2Z_NTS, NULL);
    am2z_outcome out;
    char *text = NULL;
    int ok;
    if (st) { printf("setup failed: %s\n", am2z_status_detail()); return 1; }
    out = am2z_runtime_execute_with(rt, "order", in, &(am2z_submit_desc){.trace = 1});
    ok = out.error == NULL && am2z_trace_count(out.trace) == 8;
    if (am2z_trace_ascii(out.trace, 48, &text, NULL) == AM2Z_STATUS_OK) printf("%s\n", text);
    am2z_free(text);
    text = NULL;
    if (am2z_trace_mermaid(out.trace, &text, NULL) == AM2Z_STATUS_OK) printf("```mermaid\n%s```\n", text);
    am2z_free(text);
    text = NULL;
    if (argc > 1 && am2z_trace_chrome(out.trace, &text, NULL) == AM2Z_STATUS_OK) {
        FILE *f = fopen(argv[1], "w");
        ok = ok && f && fputs(text, f) >= 0;
        if (f) fclose(f);
        printf("Chrome trace-event JSON written to %s\n", argv[1]);
    }
    am2z_free(text);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    if (!ok) printf("EXPECTATIONS FAILED\n");
    return ok ? 0 : 1;
}
