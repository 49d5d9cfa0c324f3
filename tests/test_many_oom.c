/* test_many_oom.c - an execution whose attempt fails for want of memory before its
   processor runs (the input moved into the call's session) still reports a sane
   duration: every allocation the caller's thread makes during the call is failed in
   turn, on the job path (execute_in_session) and on the shared execute_many path
   (am2z__lr_run_item), and each outcome must say it took 0..60 s, not minus the
   machine's uptime. And an attempt that fails that way does not keep a half-open
   circuit breaker's probe: the next call is admitted. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include "many_fixture.h"

static __thread int armed;   /* this thread's allocations are counted */
static __thread long count;  /* allocations so far while armed */
static __thread long fail_at; /* the count that fails */
static __thread int failed;  /* one did */

static void *a_alloc(size_t n, void *ud) {
    (void)ud;
    if (armed && ++count == fail_at) {
        failed = 1;
        return NULL;
    }
    return malloc(n);
}
static void *a_realloc(void *p, size_t n, void *ud) {
    (void)ud;
    if (armed && ++count == fail_at) {
        failed = 1;
        return NULL;
    }
    return realloc(p, n);
}
/* From now on this thread's allocation number k fails. */
static void arm(long k) {
    count = 0;
    fail_at = k;
    failed = 0;
    armed = 1;
}

static void a_free(void *p, void *ud) {
    (void)ud;
    free(p);
}

/* sleeps 50 us: long enough that execute_many publishes its items (no solo run) */
static am2z_result p_slow(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    note_thread();
    spin_us(50);
    return am2z_ok(am2z_value_retain(in));
}

static int duration_sane(const am2z_outcome *o) { return o->duration_ms >= 0 && o->duration_ms < 60000; }

static void test_job_path(void) {
    am2z_runtime *rt = rt_coop_new();
    am2z_state *in = am2z_state_parse("other", "{\"i\":1}", AM2Z_NTS, NULL);
    long k;
    int bad = 0, runs = 0;
    CHECK_INT(am2z_runtime_register(rt, proc_new("slow", p_slow, 0)), AM2Z_STATUS_OK);
    for (k = 1; k < 2000; k++) {
        am2z_outcome o;
        arm(k);
        o = am2z_runtime_execute_in_session(rt, "slow", in, "bulk");
        armed = 0;
        runs++;
        if (!duration_sane(&o)) {
            if (!bad) fprintf(stderr, "allocation %ld failed: duration_ms %f\n", k, o.duration_ms);
            bad++;
        }
        am2z_outcome_clear(&o);
        if (!failed) break; /* a run with no failure: every allocation was tried */
    }
    CHECK(runs > 1 && runs < 2000);
    CHECK_INT(bad, 0);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_batch_path(void) {
    enum { N = 2 };
    am2z_runtime *rt = rt_coop_new();
    am2z_state *ins[N];
    am2z_outcome outs[N];
    long k;
    int i, bad = 0, runs = 0;
    memset(outs, 0, sizeof outs);
    for (i = 0; i < N; i++) ins[i] = am2z_state_parse("other", "{\"i\":1}", AM2Z_NTS, NULL);
    CHECK_INT(am2z_runtime_register(rt, proc_new("slow", p_slow, 0)), AM2Z_STATUS_OK);
    /* the estimate first: long items, so the calls below publish them and the caller
       runs them through the shared path */
    CHECK_INT(am2z_runtime_execute_many(rt, "slow", (const am2z_state *const *)ins, N, "other", outs), AM2Z_STATUS_OK);
    for (k = 1; k < 2000; k++) {
        arm(k);
        CHECK_INT(am2z_runtime_execute_many(rt, "slow", (const am2z_state *const *)ins, N, "bulk", outs),
                  AM2Z_STATUS_OK);
        armed = 0;
        runs++;
        for (i = 0; i < N; i++)
            if (!duration_sane(&outs[i])) {
                if (!bad) fprintf(stderr, "allocation %ld failed: item %d duration_ms %f\n", k, i, outs[i].duration_ms);
                bad++;
            }
        if (!failed) break;
    }
    CHECK(runs > 1 && runs < 2000);
    CHECK_INT(bad, 0);
    for (i = 0; i < N; i++) {
        am2z_outcome_clear(&outs[i]);
        am2z_value_release(ins[i]);
    }
    am2z_runtime_free(rt);
}

/* fails with a NetworkError (counted by a breaker) when the input says "fail" */
static am2z_result p_guarded(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    if (am2z_value_get_int(in, "fail", 0)) return am2z_fail(am2z_error_network("db:5432", 0, NULL));
    return am2z_ok(am2z_value_retain(in));
}

static am2z_error_kind kind_of(am2z_runtime *rt, const am2z_state *in) {
    am2z_outcome o = am2z_runtime_execute_in_session(rt, "guarded", in, "bulk");
    am2z_error_kind k = o.error ? o.error->kind : AM2Z_ERROR_NONE;
    am2z_outcome_clear(&o);
    return k;
}

/* Each allocation of a half-open breaker's probe attempt is failed in turn; whatever the
   failed call returned, the call after it is not refused as CIRCUIT_OPEN (one probe per
   round: an attempt that kept its probe would refuse it for open_ms). */
static void test_half_open_probe_given_back(void) {
    am2z_state *bad = am2z_state_parse("other", "{\"fail\":1}", AM2Z_NTS, NULL);
    am2z_state *good = am2z_state_parse("other", "{\"fail\":0}", AM2Z_NTS, NULL);
    am2z_processor_desc d;
    long k;
    int refused = 0, runs = 0, memory = 0;
    memset(&d, 0, sizeof d);
    d.name = "guarded";
    d.fn = p_guarded;
    d.retry.max_attempts = 1; /* a retry would take the probe and hide a kept one */
    d.breaker.failure_threshold = 1;
    d.breaker.window_ms = 60000;
    d.breaker.open_ms = 30;
    d.breaker.half_open_probes = 1;
    for (k = 1; k < 500; k++) {
        am2z_runtime *rt = rt_coop_new();
        am2z_error_kind first;
        CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
        CHECK_INT(kind_of(rt, bad), AM2Z_ERROR_NETWORK); /* opens the breaker */
        msleep(40);                                      /* past open_ms: half-open next */
        arm(k);
        first = kind_of(rt, good);
        armed = 0;
        runs++;
        if (first == AM2Z_ERROR_RESOURCE) memory++;
        if (kind_of(rt, good) == AM2Z_ERROR_CIRCUIT_OPEN) {
            if (!refused) fprintf(stderr, "allocation %ld failed: the next call was refused\n", k);
            refused++;
        }
        am2z_runtime_free(rt);
        if (!failed) break;
    }
    CHECK(runs > 1 && runs < 500);
    CHECK(memory > 0); /* some failed allocation did fail the attempt */
    CHECK_INT(refused, 0);
    am2z_value_release(bad);
    am2z_value_release(good);
}

int main(void) {
    am2z_allocator a;
    a.alloc_fn = a_alloc;
    a.realloc_fn = a_realloc;
    a.free_fn = a_free;
    a.user_data = NULL;
    am2z_set_allocator(&a);
    T_RUN(test_job_path);
    T_RUN(test_batch_path);
    T_RUN(test_half_open_probe_given_back);
    return t_done();
}
