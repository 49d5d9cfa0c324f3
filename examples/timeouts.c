/* timeouts.c - timeouts and cancellation on the local runtime:
   1. a processor that watches am2z_ctx_cancelled stops at its deadline;
   2. one that ignores cancellation still gives the caller its TimeoutError at the
      deadline (its late result is discarded when it finally returns);
   3. a timeout is retryable: a call that hangs once succeeds on its second attempt;
   4. a parallel whose branch hangs times out as a whole and cancels the branch;
   5. am2z_execution_wait with its own limit, then am2z_execution_free to give up.
   Build: make examples (or cc -std=c99 -O2 -I. examples/timeouts.c -pthread -lm)
   Exit status 0 when every expectation below holds. */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <string.h>
#include <time.h>

static int failures;
#define EXPECT(c)                                                        \
    do {                                                                 \
        if (!(c)) {                                                      \
            fprintf(stderr, "expectation failed: %s (line %d)\n", #c, __LINE__); \
            failures++;                                                  \
        }                                                                \
    } while (0)

static void sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static int64_t ms_now(void) { return am2z_monotonic_ns() / 1000000; }

/* Polls a slow "download" in 1 ms steps, giving up when the runtime cancels it. */
static int polite_stopped;
static am2z_result polite(am2z_ctx *ctx, const am2z_state *in) {
    int i;
    for (i = 0; i < 2000; i++) {
        if (am2z_ctx_cancelled(ctx)) {
            __atomic_store_n(&polite_stopped, 1, __ATOMIC_SEQ_CST);
            return am2z_fail(am2z_error_cancelled("download abandoned"));
        }
        sleep_ms(1);
    }
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "downloaded", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

/* Ignores cancellation entirely. */
static int stubborn_returned;
static am2z_result stubborn(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    sleep_ms(300);
    __atomic_store_n(&stubborn_returned, 1, __ATOMIC_SEQ_CST);
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "late", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

/* Hangs on its first attempt only. */
static int flaky_calls;
static am2z_result flaky(am2z_ctx *ctx, const am2z_state *in) {
    if (__atomic_add_fetch(&flaky_calls, 1, __ATOMIC_SEQ_CST) == 1) {
        while (!am2z_ctx_cancelled(ctx)) sleep_ms(1);
        return am2z_fail(am2z_error_cancelled("first attempt gave up"));
    }
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "answer", am2z_value_int(42));
    return am2z_edit_end(&e);
}

static am2z_result quick(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "quick", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

static am2z_processor *make(const char *name, am2z_processor_fn fn, int64_t timeout_ms, int attempts) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    d.timeout_ms = timeout_ms;
    d.retry.max_attempts = attempts;
    d.retry.backoff = AM2Z_BACKOFF_FIXED;
    d.retry.delay_ms = 10;
    return am2z_processor_new(&d, NULL);
}

/* ms: what the caller waited; out->duration_ms: what the runtime measured, from the
   first attempt's start to the final outcome. */
static void show(const char *what, const am2z_outcome *out, int64_t ms) {
    if (out->error)
        printf("%-10s %4lld ms (%6.2f)  %s: %s\n", what, (long long)ms, out->duration_ms, out->error->name,
               out->error->message);
    else printf("%-10s %4lld ms (%6.2f)  ok after %d attempt(s)\n", what, (long long)ms, out->duration_ms,
                out->attempts);
}

int main(void) {
    am2z_local_desc rd;
    am2z_runtime *rt;
    am2z_processor *branches[2];
    am2z_parallel_desc pd;
    am2z_state *in = am2z_state_parse("timeouts", "{}", AM2Z_NTS, NULL);
    am2z_outcome out = {0};
    am2z_execution *e;
    int64_t t0, el;
    int i;

    memset(&rd, 0, sizeof rd);
    rd.workers = 3;
    rt = am2z_local_runtime_new(&rd, NULL);
    branches[0] = make("quick", quick, 0, 0);
    branches[1] = make("hangs", polite, 0, 0);
    memset(&pd, 0, sizeof pd);
    pd.name = "fanout";
    pd.branches = branches; /* consumed by parallel_new */
    pd.count = 2;
    pd.timeout_ms = 40;
    /* register_many consumes all four, also when one of them failed to build */
    if (am2z_runtime_register_many(rt, (am2z_processor *[]){
            make("polite", polite, 50, 0), make("stubborn", stubborn, 50, 0), make("flaky", flaky, 30, 2),
            am2z_parallel_new(&pd, NULL)}, 4) != AM2Z_STATUS_OK || !in) {
        fprintf(stderr, "setup failed: %s\n", am2z_status_detail());
        return 1;
    }

    /* 1 */
    t0 = ms_now();
    out = am2z_runtime_execute(rt, "polite", in);
    el = ms_now() - t0;
    show("polite", &out, el);
    EXPECT(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT && el >= 50 && el < 90);
    am2z_outcome_clear(&out);
    for (i = 0; i < 500 && !__atomic_load_n(&polite_stopped, __ATOMIC_SEQ_CST); i++) sleep_ms(1);
    EXPECT(polite_stopped);

    /* 2 */
    t0 = ms_now();
    out = am2z_runtime_execute(rt, "stubborn", in);
    el = ms_now() - t0;
    show("stubborn", &out, el);
    EXPECT(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT && el < 90);
    EXPECT(!__atomic_load_n(&stubborn_returned, __ATOMIC_SEQ_CST)); /* still sleeping */
    EXPECT(am2z_value_get(out.state, "late") == NULL);
    am2z_outcome_clear(&out);

    /* 3 */
    t0 = ms_now();
    out = am2z_runtime_execute(rt, "flaky", in);
    el = ms_now() - t0;
    show("flaky", &out, el);
    EXPECT(out.error == NULL && out.attempts == 2 && out.attempt_error_count == 1);
    EXPECT(out.attempt_error_count == 1 && out.attempt_errors[0]->kind == AM2Z_ERROR_TIMEOUT);
    EXPECT(am2z_value_get_int(out.state, "answer", 0) == 42);
    am2z_outcome_clear(&out);

    /* 4 */
    polite_stopped = 0;
    t0 = ms_now();
    out = am2z_runtime_execute(rt, "fanout", in);
    el = ms_now() - t0;
    show("fanout", &out, el);
    EXPECT(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT && el < 80);
    am2z_outcome_clear(&out);
    for (i = 0; i < 500 && !__atomic_load_n(&polite_stopped, __ATOMIC_SEQ_CST); i++) sleep_ms(1);
    EXPECT(polite_stopped); /* the hanging branch was cancelled with its parent */

    /* 5 */
    e = am2z_runtime_submit(rt, "polite", in, NULL, NULL);
    EXPECT(e != NULL);
    EXPECT(am2z_execution_wait(e, 5, &out) == AM2Z_STATUS_TIMEOUT); /* not yet */
    printf("%-10s wait(5 ms) -> %s; freeing the handle cancels it\n", "submit",
           am2z_status_string(AM2Z_STATUS_TIMEOUT));
    am2z_execution_free(e);

    am2z_value_release(in);
    am2z_runtime_free(rt); /* waits for "stubborn" to return, then discards its result */
    EXPECT(stubborn_returned);
    printf(failures ? "FAILED\n" : "ok\n");
    return failures ? 1 : 0;
}
