/* Circuit breakers (am2z_breaker_policy) on the local and inline runtimes: the policy
   checks, CircuitOpenError, opening after N counted failures, failing fast while open
   (calls counted: none reaches the processor), half-open probes that close or reopen,
   the events, and how retries treat an open breaker. The inline runtime runs on its
   virtual clock (instant); the local one on the real clock with short open times, its
   long-running probes held by a gate the test opens (no fixed sleeps). */
#define _POSIX_C_SOURCE 200809L /* nanosleep under -std=c99 */
#include "../am2z.h"
#include "t.h"
#include <time.h>

static void sleep_ms(int64_t ms) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* What the processor does: 0 succeed, 1 a retryable NetworkError, 2 a permanent
   ValidationError, 3 succeed once the gate opens (a slow probe), 4 fail with a
   NetworkError once the gate opens (a hung probe). */
static int g_mode;
static int g_calls; /* attempts that reached the processor (atomic) */
static int g_gate;  /* atomic: 1 lets modes 3 and 4 return */

/* Waits for the gate (at most 10 s: a test that forgot it fails, it does not hang). */
static void wait_gate(void) {
    int64_t until = am2z_now_ms() + 10000;
    while (!__atomic_load_n(&g_gate, __ATOMIC_SEQ_CST) && am2z_now_ms() < until) sleep_ms(1);
}
static void set_gate(int open) { __atomic_store_n(&g_gate, open, __ATOMIC_SEQ_CST); }

static am2z_result flaky(am2z_ctx *ctx, const am2z_state *in) {
    int mode = __atomic_load_n(&g_mode, __ATOMIC_SEQ_CST);
    (void)ctx;
    __atomic_add_fetch(&g_calls, 1, __ATOMIC_SEQ_CST);
    if (mode == 1) return am2z_fail(am2z_error_network("db:5432", 0, NULL));
    if (mode == 2) return am2z_fail(am2z_error_validation("id", NULL, "missing"));
    if (mode == 3) wait_gate();
    if (mode == 4) {
        wait_gate();
        return am2z_fail(am2z_error_network("db:5432", 0, NULL));
    }
    return am2z_ok(am2z_value_retain(in));
}

static int calls(void) { return __atomic_load_n(&g_calls, __ATOMIC_SEQ_CST); }
static void set_mode(int m) { __atomic_store_n(&g_mode, m, __ATOMIC_SEQ_CST); }

typedef struct evlog {
    int opened, half, closed; /* atomic counts */
    int64_t last_failures, last_probe, last_probes;
} evlog;

static void on_breaker(const char *event, const am2z_value *data, void *ud) {
    evlog *l = (evlog *)ud;
    if (strcmp(event, "processor:breaker:opened") == 0) {
        CHECK_STR(am2z_value_get_string(data, "processorName", ""), "flaky");
        l->last_failures = am2z_value_get_int(data, "failures", -1);
        l->last_probe = am2z_value_get_int(data, "probe", -1);
        CHECK(am2z_value_get_int(data, "retryAt", 0) > 0);
        __atomic_add_fetch(&l->opened, 1, __ATOMIC_SEQ_CST);
    } else if (strcmp(event, "processor:breaker:half-open") == 0) {
        l->last_probes = am2z_value_get_int(data, "probes", -1);
        __atomic_add_fetch(&l->half, 1, __ATOMIC_SEQ_CST);
    } else if (strcmp(event, "processor:breaker:closed") == 0) {
        __atomic_add_fetch(&l->closed, 1, __ATOMIC_SEQ_CST);
    }
}

static am2z_state *input(void) { return am2z_state_parse("s", "{\"n\":1}", AM2Z_NTS, NULL); }

/* One execute; returns the error kind (NONE on success) and its attempts. */
static am2z_error_kind run(am2z_runtime *rt, int *attempts) {
    am2z_state *in = input();
    am2z_outcome out = am2z_runtime_execute(rt, "flaky", in);
    am2z_error_kind k = out.error ? out.error->kind : AM2Z_ERROR_NONE;
    if (attempts) *attempts = out.attempts;
    if (out.error && out.error->kind == AM2Z_ERROR_CIRCUIT_OPEN) {
        CHECK_STR(out.error->processor, "flaky");
        CHECK(am2z_value_get_int(out.error->details, "retryAt", 0) > 0);
    }
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    return k;
}

static am2z_processor *flaky_proc(int threshold, int64_t window_ms, int64_t open_ms, int probes, int max_attempts) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = "flaky";
    d.fn = flaky;
    d.retry.max_attempts = max_attempts;
    d.retry.delay_ms = 5;
    d.breaker.failure_threshold = threshold;
    d.breaker.window_ms = window_ms;
    d.breaker.open_ms = open_ms;
    d.breaker.half_open_probes = probes;
    return am2z_processor_new(&d, NULL);
}

/* virtual: an inline runtime on a virtual clock (time moves by advance), else local. */
static am2z_runtime *make_rt(int virt) {
    if (virt) {
        am2z_inline_desc d;
        memset(&d, 0, sizeof d);
        d.virtual_clock_ms = 1700000000000;
        return am2z_inline_runtime_new(&d, NULL);
    }
    return am2z_local_runtime_new(NULL, NULL);
}
static void pass_time(am2z_runtime *rt, int virt, int64_t ms) {
    if (virt) CHECK_INT(am2z_inline_advance(rt, ms), AM2Z_STATUS_OK);
    else sleep_ms(ms);
}

/* The whole life of a breaker on one runtime. */
static void lifecycle(int virt) {
    int64_t open_ms = virt ? 5000 : 400; /* local: 10 fail-fast calls take a few ms of it */
    am2z_runtime *rt = make_rt(virt);
    evlog l;
    int i, att = 0;
    memset(&l, 0, sizeof l);
    g_calls = 0;
    set_mode(1);
    CHECK_INT(am2z_runtime_register(rt, flaky_proc(3, 60000, open_ms, 1, 1)), AM2Z_STATUS_OK);
    CHECK(am2z_runtime_on(rt, "*", on_breaker, &l) > 0);
    /* closed: the first two failures run and do not open it */
    for (i = 0; i < 2; i++) CHECK_INT(run(rt, NULL), AM2Z_ERROR_NETWORK);
    CHECK_INT(l.opened, 0);
    /* the third opens it */
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NETWORK);
    CHECK_INT(calls(), 3);
    CHECK_INT(l.opened, 1);
    CHECK_INT(l.last_failures, 3);
    CHECK_INT(l.last_probe, 0);
    /* open: fail fast, no call reaches the processor, even with it healthy again */
    set_mode(0);
    for (i = 0; i < 10; i++) {
        CHECK_INT(run(rt, &att), AM2Z_ERROR_CIRCUIT_OPEN);
        CHECK_INT(att, 1);
    }
    CHECK_INT(calls(), 3);
    /* after the open time: one probe runs; its success closes the breaker */
    pass_time(rt, virt, open_ms + (virt ? 0 : 100));
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NONE);
    CHECK_INT(calls(), 4);
    CHECK_INT(l.half, 1);
    CHECK_INT(l.last_probes, 1);
    CHECK_INT(l.closed, 1);
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NONE);
    CHECK_INT(calls(), 5);
    /* closing started the count afresh: two failures do not reopen it, a third does */
    set_mode(1);
    for (i = 0; i < 3; i++) CHECK_INT(run(rt, NULL), AM2Z_ERROR_NETWORK);
    CHECK_INT(l.opened, 2);
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK_INT(calls(), 8);
    /* a failed probe reopens it for another open time */
    pass_time(rt, virt, open_ms + (virt ? 0 : 100));
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NETWORK);
    CHECK_INT(calls(), 9);
    CHECK_INT(l.half, 2);
    CHECK_INT(l.opened, 3);
    CHECK_INT(l.last_probe, 1);
    CHECK_INT(l.last_failures, 1);
    set_mode(0);
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK_INT(calls(), 9);
    CHECK_INT(l.closed, 1);
    am2z_runtime_free(rt);
}
static void test_lifecycle_inline(void) { lifecycle(1); }
static void test_lifecycle_local(void) { lifecycle(0); }

/* Permanent errors and successes do not count; failures spread wider than the window
   do not open it (virtual clock). */
static void test_what_counts(void) {
    am2z_runtime *rt = make_rt(1);
    evlog l;
    int i;
    memset(&l, 0, sizeof l);
    g_calls = 0;
    CHECK_INT(am2z_runtime_register(rt, flaky_proc(2, 1000, 5000, 0, 0)), AM2Z_STATUS_OK);
    am2z_runtime_on(rt, "*", on_breaker, &l);
    set_mode(2);
    for (i = 0; i < 10; i++) CHECK_INT(run(rt, NULL), AM2Z_ERROR_VALIDATION);
    CHECK_INT(l.opened, 0);
    for (i = 0; i < 5; i++) { /* 1.5 s apart with a 1 s window: never two inside it */
        set_mode(1);
        CHECK_INT(run(rt, NULL), AM2Z_ERROR_NETWORK);
        pass_time(rt, 1, 1500);
    }
    CHECK_INT(l.opened, 0);
    CHECK_INT(calls(), 15);
    /* two within the window open it */
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NETWORK);
    pass_time(rt, 1, 999);
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NETWORK);
    CHECK_INT(l.opened, 1);
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK_INT(calls(), 17);
    am2z_runtime_free(rt);
}

/* A timeout counts, the runtime sees it (inline: a processor that takes longer than
   its timeout on the virtual clock). */
static am2z_runtime *g_rt;
static am2z_result slow(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    __atomic_add_fetch(&g_calls, 1, __ATOMIC_SEQ_CST);
    am2z_inline_advance(g_rt, 100);
    return am2z_ok(am2z_value_retain(in));
}
static void test_timeouts_count(void) {
    am2z_processor_desc d;
    am2z_state *in = input();
    am2z_outcome out = {0};
    int i;
    g_rt = make_rt(1);
    g_calls = 0;
    memset(&d, 0, sizeof d);
    d.name = "slow";
    d.fn = slow;
    d.timeout_ms = 50;
    d.breaker.failure_threshold = 2;
    CHECK_INT(am2z_runtime_register(g_rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
    for (i = 0; i < 2; i++) {
        out = am2z_runtime_execute(g_rt, "slow", in);
        CHECK(out.error && out.error->kind == AM2Z_ERROR_TIMEOUT);
        am2z_outcome_clear(&out);
    }
    out = am2z_runtime_execute(g_rt, "slow", in);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK_INT(calls(), 2);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(g_rt);
}

/* Retries: a CircuitOpenError is not retried while the backoff is shorter than the
   open time; an execution whose backoff outlasts it retries and gets through. */
static void test_retries(void) {
    am2z_runtime *rt = make_rt(1);
    am2z_processor_desc d;
    int att = 0;
    g_calls = 0;
    set_mode(1);
    CHECK_INT(am2z_runtime_register(rt, flaky_proc(1, 1000, 1000, 0, 5)), AM2Z_STATUS_OK);
    /* the first attempt fails and opens it; the retry 5 ms later meets the open
       breaker and ends the execution: 2 attempts, not 5 */
    CHECK_INT(run(rt, &att), AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK_INT(att, 2);
    CHECK_INT(calls(), 1);
    CHECK_INT(run(rt, &att), AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK_INT(att, 1);
    am2z_runtime_free(rt);
    /* backoff 2 s > open 1 s: the retry waits it out and runs as a probe */
    rt = make_rt(1);
    g_calls = 0;
    memset(&d, 0, sizeof d);
    d.name = "flaky";
    d.fn = flaky;
    d.retry.max_attempts = 3;
    d.retry.backoff = AM2Z_BACKOFF_FIXED;
    d.retry.delay_ms = 2000;
    d.breaker.failure_threshold = 1;
    d.breaker.open_ms = 1000;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
    set_mode(1);
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NETWORK); /* 3 attempts: fail, probe fails, probe fails */
    CHECK_INT(calls(), 3);
    am2z_runtime_free(rt);
}

/* am2z_retry_delay_ms and the error itself. */
static void test_error_kind(void) {
    am2z_error *e = am2z_error_circuit_open("pay", 1700000001000, 1500), *back;
    am2z_retry_policy rp;
    am2z_value *j;
    CHECK(e != NULL);
    CHECK_INT(e->kind, AM2Z_ERROR_CIRCUIT_OPEN);
    CHECK_STR(e->name, "CircuitOpenError");
    CHECK_STR(e->code, "CIRCUIT_OPEN");
    CHECK_INT(e->category, AM2Z_CATEGORY_RESOURCE);
    CHECK(e->retryable);
    CHECK_STR(e->processor, "pay");
    CHECK_STR(e->message, "Circuit breaker of processor 'pay' is open; retry after 1500ms");
    CHECK_INT(am2z_value_get_int(e->details, "retryAt", 0), 1700000001000);
    CHECK_STR(am2z_error_kind_name(AM2Z_ERROR_CIRCUIT_OPEN), "CircuitOpenError");
    j = am2z_error_to_json(e);
    back = am2z_error_from_json(j);
    CHECK(back && back->kind == AM2Z_ERROR_CIRCUIT_OPEN && back->retryable);
    CHECK_INT(am2z_value_get_int(back->details, "retryAfterMs", 0), 1500);
    memset(&rp, 0, sizeof rp);
    rp.max_attempts = 5;
    rp.backoff = AM2Z_BACKOFF_FIXED;
    rp.delay_ms = 1000;
    CHECK_INT(am2z_retry_delay_ms(&rp, e, 1), -1); /* 1 s backoff, open 1.5 s more */
    rp.delay_ms = 2000;
    CHECK_INT(am2z_retry_delay_ms(&rp, e, 1), 2000);
    rp.delay_ms = -1; /* "retry at once" does not retry into an open breaker */
    CHECK_INT(am2z_retry_delay_ms(&rp, e, 1), -1);
    am2z_value_release(j);
    am2z_error_release(back);
    am2z_error_release(e);
}

static void refused(am2z_breaker_policy b, const char *needle) {
    am2z_processor_desc d;
    am2z_status st = AM2Z_STATUS_OK;
    am2z_processor *p;
    memset(&d, 0, sizeof d);
    d.name = "x";
    d.fn = flaky;
    d.breaker = b;
    p = am2z_processor_new(&d, &st);
    CHECK(p == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    if (!strstr(am2z_status_detail(), needle)) T_FAIL_("detail \"%s\" lacks \"%s\"", am2z_status_detail(), needle);
    am2z_processor_release(p);
}
static void test_bad_policies(void) {
    am2z_breaker_policy b;
    am2z_processor *p;
    memset(&b, 0, sizeof b); b.failure_threshold = -1; refused(b, "negative breaker");
    memset(&b, 0, sizeof b); b.failure_threshold = 1; b.open_ms = -5; refused(b, "negative breaker");
    memset(&b, 0, sizeof b); b.window_ms = 1000; refused(b, "without failure_threshold");
    memset(&b, 0, sizeof b); b.half_open_probes = 2; refused(b, "without failure_threshold");
    memset(&b, 0, sizeof b); b.failure_threshold = AM2Z_BREAKER_MAX_THRESHOLD + 1; refused(b, "AM2Z_BREAKER_MAX_THRESHOLD");
    memset(&b, 0, sizeof b); b.failure_threshold = 1; b.half_open_probes = AM2Z_BREAKER_MAX_THRESHOLD + 1;
    refused(b, "AM2Z_BREAKER_MAX_THRESHOLD");
    memset(&b, 0, sizeof b); b.failure_threshold = 1; b.window_ms = AM2Z_BREAKER_MAX_MS + 1; refused(b, "AM2Z_BREAKER_MAX_MS");
    /* the limits themselves are accepted, and the defaults resolved */
    p = flaky_proc(AM2Z_BREAKER_MAX_THRESHOLD, AM2Z_BREAKER_MAX_MS, 0, 0, 0);
    CHECK(p != NULL);
    CHECK_INT(am2z_processor_desc_of(p)->breaker.open_ms, 30000);
    CHECK_INT(am2z_processor_desc_of(p)->breaker.half_open_probes, 1);
    am2z_processor_release(p);
    p = flaky_proc(1, 0, 0, 0, 0);
    CHECK_INT(am2z_processor_desc_of(p)->breaker.window_ms, 60000);
    am2z_processor_release(p);
}

/* Local runtime: a breaker (threshold 1, one probe, open_ms) that one failure opened;
   its events go to *l. */
static am2z_runtime *opened_local(int64_t open_ms, evlog *l) {
    am2z_runtime *rt = make_rt(0);
    memset(l, 0, sizeof *l);
    g_calls = 0;
    set_mode(1);
    set_gate(0);
    CHECK_INT(am2z_runtime_register(rt, flaky_proc(1, 60000, open_ms, 1, 1)), AM2Z_STATUS_OK);
    am2z_runtime_on(rt, "*", on_breaker, l);
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NETWORK);
    CHECK_INT(l->opened, 1);
    return rt;
}

/* Past the open time, submits a probe that runs in mode (3 or 4: held by the gate) and
   returns once it reached the processor. */
static am2z_execution *probe_started(am2z_runtime *rt, int64_t open_ms, int mode, const am2z_state *in) {
    am2z_execution *e;
    int64_t t0;
    sleep_ms(open_ms + 50);
    set_mode(mode);
    e = am2z_runtime_submit(rt, "flaky", in, NULL, NULL);
    CHECK(e != NULL);
    t0 = am2z_now_ms();
    while (calls() < 2 && am2z_now_ms() - t0 < 5000) sleep_ms(1);
    CHECK_INT(calls(), 2);
    return e;
}

/* Local runtime, concurrent: while one probe runs, other attempts fail fast; the
   probe's success closes it. */
static void test_probe_limit_local(void) {
    am2z_state *in = input();
    am2z_outcome out = {0};
    evlog l;
    am2z_runtime *rt = opened_local(300, &l); /* the check below runs within 300 ms of the probe's start */
    am2z_execution *e = probe_started(rt, 300, 3, in);
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_CIRCUIT_OPEN); /* the one probe slot is taken */
    CHECK_INT(calls(), 2);
    set_gate(1);
    CHECK_INT(am2z_execution_wait(e, 10000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_INT(l.closed, 1);
    set_mode(0);
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NONE);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* A probe that outlives the open time frees its slot: the next attempt probes (and
   closes the breaker), and the hung probe's late failure is ignored. */
static void test_hung_probe_local(void) {
    am2z_state *in = input();
    am2z_outcome out = {0};
    evlog l;
    am2z_runtime *rt = opened_local(200, &l);
    am2z_execution *e = probe_started(rt, 200, 4, in); /* the probe that hangs until the gate opens */
    set_mode(0);
    sleep_ms(250); /* its slot expired with the open time */
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NONE); /* a new probe, which closes it */
    CHECK_INT(l.closed, 1);
    set_gate(1);
    CHECK_INT(am2z_execution_wait(e, 10000, &out), AM2Z_STATUS_OK);
    CHECK(out.error && out.error->kind == AM2Z_ERROR_NETWORK);
    CHECK_INT(l.opened, 1); /* the late failure of the old round changed nothing */
    CHECK_INT(run(rt, NULL), AM2Z_ERROR_NONE);
    CHECK_INT(calls(), 4);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

int main(void) {
    T_RUN(test_error_kind);
    T_RUN(test_bad_policies);
    T_RUN(test_lifecycle_inline);
    T_RUN(test_lifecycle_local);
    T_RUN(test_what_counts);
    T_RUN(test_timeouts_count);
    T_RUN(test_retries);
    T_RUN(test_probe_limit_local);
    T_RUN(test_hung_probe_local);
    return t_done();
}
