/* Idempotency keys and per-call delays (am2z_submit_desc, issue 13) on the local and the
   inline runtime. Built with AM2Z_NO_THREADS too (tests/run.sh): the inline part then. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#ifndef AM2Z_NO_THREADS
#include <pthread.h>
#endif
#include <time.h>
#include "fixture.h"

static int g_runs; /* processor runs, counted with atomics */

static int runs(void) { return __atomic_load_n(&g_runs, __ATOMIC_SEQ_CST); }

static void msleep(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* Counts its run; sleeps "sleep" ms (real clock; stops early when cancelled); fails when
   "fail" is set; answers {"run": its run number}. */
static am2z_result p_count(am2z_ctx *ctx, const am2z_state *in) {
    int n = __atomic_add_fetch(&g_runs, 1, __ATOMIC_SEQ_CST);
    int64_t i, sleep = am2z_value_get_int(in, "sleep", 0);
    for (i = 0; i < sleep && !am2z_ctx_cancelled(ctx); i++) msleep(1);
    if (am2z_value_get_bool(in, "fail", 0))
        return am2z_fail(am2z_error_business("NOPE", AM2Z_SEVERITY_LOW, "run %d failed", n));
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "run", am2z_value_int(n)));
}

/* rt with the processor "count"; the run count starts afresh. */
static am2z_runtime *with_count(am2z_runtime *rt) {
    am2z_processor_desc pd;
    memset(&pd, 0, sizeof pd);
    pd.name = "count";
    pd.fn = p_count;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)), AM2Z_STATUS_OK);
    __atomic_store_n(&g_runs, 0, __ATOMIC_SEQ_CST);
    return rt;
}

#ifndef AM2Z_NO_THREADS
static am2z_runtime *local_new(void) {
    am2z_local_desc d;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.workers = 4;
    d.logger = fx_quiet();
    rt = am2z_local_runtime_new(&d, NULL);
    am2z_logger_release(d.logger); /* the runtime holds its own reference */
    return with_count(rt);
}
#endif

static am2z_runtime *inline_new(void) {
    am2z_inline_desc d;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.virtual_clock_ms = 1700000000000LL;
    d.logger = fx_quiet();
    rt = am2z_inline_runtime_new(&d, NULL);
    am2z_logger_release(d.logger);
    return with_count(rt);
}

static am2z_state *st(const char *json) { return am2z_state_parse("t", json, AM2Z_NTS, NULL); }

static am2z_submit_desc keyed(const char *key) {
    am2z_submit_desc d;
    memset(&d, 0, sizeof d);
    d.idempotency_key = key;
    return d;
}

/* execute_with key; returns the run number it got (-1: a failure), the id into id. */
static int64_t exec_key(am2z_runtime *rt, const char *key, const char *json, int64_t keep_ms, int forget,
                        char id[AM2Z_EXECUTION_ID_SIZE]) {
    am2z_state *in = st(json);
    am2z_submit_desc d = keyed(key);
    am2z_outcome out;
    int64_t n;
    d.keep_ms = keep_ms;
    d.forget_failures = forget;
    out = am2z_runtime_execute_with(rt, "count", in, &d);
    n = out.error ? -1 : am2z_value_get_int(out.state, "run", -2);
    if (id) memcpy(id, out.execution_id, AM2Z_EXECUTION_ID_SIZE);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    return n;
}

/* ---- local runtime ---- */
#ifndef AM2Z_NO_THREADS

typedef struct {
    am2z_runtime *rt;
    am2z_outcome out;
} caller;

static void *call_same_key(void *arg) {
    caller *c = (caller *)arg;
    am2z_state *in = st("{\"sleep\":200}");
    am2z_submit_desc d = keyed("order-42");
    c->out = am2z_runtime_execute_with(c->rt, "count", in, &d);
    am2z_value_release(in);
    return NULL;
}

/* 50 threads execute one key at once: one run, 50 identical outcomes. */
static void test_local_50_threads_one_run(void) {
    am2z_runtime *rt = local_new();
    caller c[50];
    pthread_t th[50];
    int i;
    for (i = 0; i < 50; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].rt = rt;
        CHECK_INT(pthread_create(&th[i], NULL, call_same_key, &c[i]), 0);
    }
    for (i = 0; i < 50; i++) pthread_join(th[i], NULL);
    CHECK_INT(runs(), 1);
    for (i = 0; i < 50; i++) {
        CHECK(c[i].out.error == NULL);
        CHECK_INT(am2z_value_get_int(c[i].out.state, "run", 0), 1);
        CHECK_STR(c[i].out.execution_id, c[0].out.execution_id);
        CHECK(am2z_value_equal(c[i].out.state, c[0].out.state));
        CHECK_INT(c[i].out.started_at, c[0].out.started_at);
    }
    for (i = 0; i < 50; i++) am2z_outcome_clear(&c[i].out);
    am2z_runtime_free(rt);
}

/* Different keys, sessions or processors run apart; no key runs every time. */
static void test_local_different_keys(void) {
    am2z_runtime *rt = local_new();
    am2z_state *in = st("{}");
    am2z_submit_desc d = keyed("a");
    am2z_outcome out;
    CHECK_INT(exec_key(rt, "a", "{}", 0, 0, NULL), 1);
    CHECK_INT(exec_key(rt, "b", "{}", 0, 0, NULL), 2);
    CHECK_INT(exec_key(rt, "a", "{}", 0, 0, NULL), 1);
    d.session_id = "tenant-2"; /* same key, another session */
    out = am2z_runtime_execute_with(rt, "count", in, &d);
    CHECK_INT(am2z_value_get_int(out.state, "run", 0), 3);
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute(rt, "count", in);
    CHECK_INT(am2z_value_get_int(out.state, "run", 0), 4);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* A key answers keep_ms after its run ended, then runs again; keep_ms < 0 only joins a
   run in progress. */
static void test_local_expiry(void) {
    am2z_runtime *rt = local_new();
    char id1[AM2Z_EXECUTION_ID_SIZE], id2[AM2Z_EXECUTION_ID_SIZE];
    CHECK_INT(exec_key(rt, "k", "{}", 300, 0, id1), 1);
    CHECK_INT(exec_key(rt, "k", "{}", 300, 0, id2), 1);
    CHECK_STR(id1, id2);
    msleep(500);
    CHECK_INT(exec_key(rt, "k", "{}", 300, 0, id2), 2);
    CHECK(strcmp(id1, id2) != 0);
    CHECK_INT(exec_key(rt, "gone", "{}", -1, 0, NULL), 3);
    CHECK_INT(exec_key(rt, "gone", "{}", -1, 0, NULL), 4);
    am2z_runtime_free(rt);
}

/* A failure is remembered by default (the same failure again, no run); with
   forget_failures the next call runs again. */
static void test_local_failures(void) {
    am2z_runtime *rt = local_new();
    am2z_state *in = st("{\"fail\":true}");
    am2z_submit_desc d = keyed("f");
    am2z_outcome a, b;
    a = am2z_runtime_execute_with(rt, "count", in, &d);
    b = am2z_runtime_execute_with(rt, "count", in, &d);
    CHECK(a.error && b.error);
    CHECK_STR(a.error->message, "run 1 failed");
    CHECK_STR(b.error->message, "run 1 failed");
    CHECK_STR(a.execution_id, b.execution_id);
    CHECK_INT(runs(), 1);
    am2z_outcome_clear(&a);
    am2z_outcome_clear(&b);
    d = keyed("g");
    d.forget_failures = 1;
    a = am2z_runtime_execute_with(rt, "count", in, &d);
    b = am2z_runtime_execute_with(rt, "count", in, &d);
    CHECK(a.error && b.error);
    CHECK_STR(a.error->message, "run 2 failed");
    CHECK_STR(b.error->message, "run 3 failed");
    CHECK_INT(runs(), 3);
    am2z_outcome_clear(&a);
    am2z_outcome_clear(&b);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* Handles: freeing the only handle of an unfinished run cancels it and forgets the key;
   a detached run keeps answering its key. A wait with a timeout on a running key. */
static void test_local_free_and_detach(void) {
    am2z_runtime *rt = local_new();
    am2z_state *slow = st("{\"sleep\":300}");
    am2z_submit_desc d = keyed("x");
    am2z_execution *e, *e2;
    am2z_outcome out = {0};
    e = am2z_runtime_submit_with(rt, "count", slow, &d, NULL);
    CHECK(e != NULL);
    e2 = am2z_runtime_submit_with(rt, "count", slow, &d, NULL);
    CHECK_STR(am2z_execution_id(e2), am2z_execution_id(e));
    CHECK_INT(am2z_execution_wait(e2, 20, &out), AM2Z_STATUS_TIMEOUT);
    am2z_execution_free(e2);                 /* not the last handle: e still runs */
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_INT(runs(), 1);
    am2z_execution_free(e);
    d = keyed("y");
    e = am2z_runtime_submit_with(rt, "count", slow, &d, NULL);
    msleep(50);
    am2z_execution_free(e);                  /* the last handle: cancelled, key forgotten */
    CHECK_INT(exec_key(rt, "y", "{}", 0, 0, NULL), 3);
    d = keyed("z");
    e = am2z_runtime_submit_with(rt, "count", slow, &d, NULL);
    am2z_execution_detach(e);                /* runs on, answers its key */
    CHECK_INT(exec_key(rt, "z", "{}", 0, 0, NULL), 4);
    CHECK_INT(runs(), 4);
    am2z_outcome_clear(&out);
    am2z_value_release(slow);
    am2z_runtime_free(rt);
}

/* delay_ms and run_at_ms hold the first attempt back (generous bounds: a loaded host). */
static void test_local_delay(void) {
    am2z_runtime *rt = local_new();
    am2z_state *in = st("{}");
    am2z_submit_desc d;
    am2z_outcome out;
    int64_t t0;
    memset(&d, 0, sizeof d);
    d.delay_ms = 200;
    t0 = am2z_now_ms();
    out = am2z_runtime_execute_with(rt, "count", in, &d);
    CHECK(out.error == NULL);
    CHECK(out.started_at - t0 >= 195);
    CHECK(out.started_at - t0 < 5000);
    am2z_outcome_clear(&out);
    d.delay_ms = 0;
    t0 = am2z_now_ms();
    d.run_at_ms = t0 + 250;
    out = am2z_runtime_execute_with(rt, "count", in, &d);
    CHECK(out.error == NULL);
    CHECK(out.started_at >= t0 + 245);
    CHECK(out.started_at < t0 + 5000);
    am2z_outcome_clear(&out);
    d.run_at_ms = 1; /* in the past: now */
    t0 = am2z_now_ms();
    out = am2z_runtime_execute_with(rt, "count", in, &d);
    CHECK(out.error == NULL);
    CHECK(out.started_at - t0 < 1000);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

#endif

/* Bad per-call options: a clear status and a detail naming the field; no run. */
static void check_bad(am2z_runtime *rt, am2z_submit_desc d, const char *field) {
    am2z_state *in = st("{}");
    am2z_status status = AM2Z_STATUS_OK;
    am2z_outcome out;
    CHECK(am2z_runtime_submit_with(rt, "count", in, &d, &status) == NULL);
    CHECK_INT(status, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), field) != NULL);
    out = am2z_runtime_execute_with(rt, "count", in, &d);
    CHECK(out.error != NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
}

static void test_bad_input(am2z_runtime *rt) {
    char big[AM2Z_IDEMPOTENCY_KEY_MAX + 2];
    am2z_submit_desc d;
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = 0;
    check_bad(rt, keyed(big), "idempotency_key");
    check_bad(rt, keyed(""), "idempotency_key");
    big[AM2Z_IDEMPOTENCY_KEY_MAX] = 0; /* exactly the limit: fine */
    CHECK_INT(exec_key(rt, big, "{}", 0, 0, NULL), runs());
    memset(&d, 0, sizeof d);
    d.delay_ms = -1;
    check_bad(rt, d, "delay_ms is negative");
    d.delay_ms = AM2Z_SUBMIT_DELAY_MAX_MS + 1;
    check_bad(rt, d, "delay_ms");
    d.delay_ms = 0;
    d.run_at_ms = -5;
    check_bad(rt, d, "run_at_ms is negative");
    d.run_at_ms = am2z_now_ms() + 10;
    d.delay_ms = 10;
    check_bad(rt, d, "not both");
    d.delay_ms = 0;
    d.run_at_ms = 4102444800000LL * 2; /* far beyond the limit (also from a virtual clock) */
    check_bad(rt, d, "run_at_ms");
}

#ifndef AM2Z_NO_THREADS
static void test_local_bad_input(void) {
    am2z_runtime *rt = local_new();
    test_bad_input(rt);
    CHECK_INT(runs(), 1);
    am2z_runtime_free(rt);
}
#endif

/* ---- inline runtime (virtual clock: delays and expiry take no real time) ---- */

/* 50 handles on one key, waited in turn: one run, 50 identical outcomes. */
static void test_inline_50_one_run(void) {
    am2z_runtime *rt = inline_new();
    am2z_state *in = st("{}");
    am2z_submit_desc d = keyed("order-42");
    am2z_execution *e[50];
    am2z_outcome out[50];
    int i;
    for (i = 0; i < 50; i++) {
        e[i] = am2z_runtime_submit_with(rt, "count", in, &d, NULL);
        CHECK(e[i] != NULL);
        memset(&out[i], 0, sizeof out[i]);
    }
    for (i = 0; i < 50; i++) {
        CHECK_INT(am2z_execution_wait(e[i], -1, &out[i]), AM2Z_STATUS_OK);
        am2z_execution_free(e[i]);
    }
    CHECK_INT(runs(), 1);
    for (i = 0; i < 50; i++) {
        CHECK(out[i].error == NULL);
        CHECK_STR(out[i].execution_id, out[0].execution_id);
        CHECK(am2z_value_equal(out[i].state, out[0].state));
    }
    for (i = 0; i < 50; i++) am2z_outcome_clear(&out[i]);
    CHECK_INT(exec_key(rt, "order-43", "{}", 0, 0, NULL), 2); /* another key runs */
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* Expiry on the virtual clock: exactly keep_ms after the run ended. */
static void test_inline_expiry(void) {
    am2z_runtime *rt = inline_new();
    CHECK_INT(exec_key(rt, "k", "{}", 1000, 0, NULL), 1);
    CHECK_INT(am2z_inline_advance(rt, 999), AM2Z_STATUS_OK);
    CHECK_INT(exec_key(rt, "k", "{}", 1000, 0, NULL), 1);
    CHECK_INT(am2z_inline_advance(rt, 1), AM2Z_STATUS_OK);
    CHECK_INT(exec_key(rt, "k", "{}", 1000, 0, NULL), 2);
    /* the default keep: an hour */
    CHECK_INT(exec_key(rt, "d", "{}", 0, 0, NULL), 3);
    CHECK_INT(am2z_inline_advance(rt, AM2Z_IDEMPOTENCY_KEEP_MS - 1), AM2Z_STATUS_OK);
    CHECK_INT(exec_key(rt, "d", "{}", 0, 0, NULL), 3);
    CHECK_INT(am2z_inline_advance(rt, 1), AM2Z_STATUS_OK);
    CHECK_INT(exec_key(rt, "d", "{}", 0, 0, NULL), 4);
    am2z_runtime_free(rt);
}

static void test_inline_failures(void) {
    am2z_runtime *rt = inline_new();
    CHECK_INT(exec_key(rt, "f", "{\"fail\":true}", 0, 0, NULL), -1);
    CHECK_INT(exec_key(rt, "f", "{\"fail\":true}", 0, 0, NULL), -1);
    CHECK_INT(runs(), 1);
    CHECK_INT(exec_key(rt, "g", "{\"fail\":true}", 0, 1, NULL), -1);
    CHECK_INT(exec_key(rt, "g", "{\"fail\":true}", 0, 1, NULL), -1);
    CHECK_INT(runs(), 3);
    am2z_runtime_free(rt);
}

/* Delays on the virtual clock: exact, instant. */
static void test_inline_delay(void) {
    am2z_runtime *rt = inline_new();
    am2z_state *in = st("{}");
    am2z_submit_desc d;
    am2z_outcome out;
    int64_t t0 = am2z_inline_now_ms(rt), real = am2z_monotonic_ns();
    am2z_execution *e;
    memset(&d, 0, sizeof d);
    d.delay_ms = 3600000;
    out = am2z_runtime_execute_with(rt, "count", in, &d);
    CHECK(out.error == NULL);
    CHECK_INT(out.started_at, t0 + 3600000);
    am2z_outcome_clear(&out);
    d.delay_ms = 0;
    d.run_at_ms = am2z_inline_now_ms(rt) + 5000;
    e = am2z_runtime_submit_with(rt, "count", in, &d, NULL);
    CHECK_INT(am2z_inline_now_ms(rt), t0 + 3600000); /* nothing ran yet */
    CHECK_INT(am2z_execution_wait(e, -1, &out), AM2Z_STATUS_OK);
    CHECK_INT(out.started_at, d.run_at_ms);
    am2z_execution_free(e);
    am2z_outcome_clear(&out);
    CHECK((am2z_monotonic_ns() - real) / 1000000 < 2000);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* A run that executes its own key waits for itself: the inline runtime says so. */
static am2z_result p_self(am2z_ctx *ctx, const am2z_state *in) {
    am2z_submit_desc d = keyed("self");
    am2z_outcome out = am2z_runtime_execute_with(ctx->runtime, "self", in, &d);
    am2z_value *v = am2z_value_set(am2z_value_retain(in), "inner", am2z_value_bool(out.error != NULL));
    am2z_outcome_clear(&out);
    return am2z_ok(v);
}

static void test_inline_own_key(void) {
    am2z_runtime *rt = inline_new();
    am2z_processor_desc pd;
    am2z_state *in = st("{}");
    am2z_submit_desc d = keyed("self");
    am2z_outcome out;
    memset(&pd, 0, sizeof pd);
    pd.name = "self";
    pd.fn = p_self;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute_with(rt, "self", in, &d);
    CHECK(out.error == NULL);
    CHECK(am2z_value_get_bool(out.state, "inner", 0)); /* the inner call failed, no hang */
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

/* The table is bounded: AM2Z_IDEMPOTENCY_MAX_KEYS live keys, then AM2Z_STATUS_LIMIT until
   some expire. */
static void test_inline_key_limit(void) {
    am2z_runtime *rt = inline_new();
    am2z_state *in = st("{}");
    am2z_submit_desc d;
    am2z_status status = AM2Z_STATUS_OK;
    char key[32];
    int i, ok = 1;
    for (i = 0; i < AM2Z_IDEMPOTENCY_MAX_KEYS && ok; i++) {
        snprintf(key, sizeof key, "k%d", i);
        ok = exec_key(rt, key, "{}", 1000, 0, NULL) == i + 1;
    }
    CHECK(ok);
    d = keyed("one-too-many");
    CHECK(am2z_runtime_submit_with(rt, "count", in, &d, &status) == NULL);
    CHECK_INT(status, AM2Z_STATUS_LIMIT);
    CHECK(strstr(am2z_status_detail(), "AM2Z_IDEMPOTENCY_MAX_KEYS") != NULL);
    CHECK_INT(exec_key(rt, "k0", "{}", 1000, 0, NULL), 1); /* a live key still answers */
    CHECK_INT(am2z_inline_advance(rt, 1000), AM2Z_STATUS_OK);
    CHECK_INT(exec_key(rt, "one-too-many", "{}", 0, 0, NULL), AM2Z_IDEMPOTENCY_MAX_KEYS + 1);
    am2z_value_release(in);
    am2z_runtime_free(rt);
}

static void test_inline_bad_input(void) {
    am2z_runtime *rt = inline_new();
    test_bad_input(rt);
    CHECK_INT(runs(), 1);
    am2z_runtime_free(rt);
}

int main(void) {
#ifndef AM2Z_NO_THREADS
    T_RUN(test_local_50_threads_one_run);
    T_RUN(test_local_different_keys);
    T_RUN(test_local_expiry);
    T_RUN(test_local_failures);
    T_RUN(test_local_free_and_detach);
    T_RUN(test_local_delay);
    T_RUN(test_local_bad_input);
#endif
    T_RUN(test_inline_50_one_run);
    T_RUN(test_inline_expiry);
    T_RUN(test_inline_failures);
    T_RUN(test_inline_delay);
    T_RUN(test_inline_own_key);
    T_RUN(test_inline_key_limit);
    T_RUN(test_inline_bad_input);
    return t_done();
}
