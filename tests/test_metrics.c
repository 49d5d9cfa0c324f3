/* Tests of am2z_runtime_metrics_text (section 7) on the local runtime (section 8) and on a
   runtime of the test's own whose stats carry names that need escaping; the exposition is
   read back by the strict checker of tests/prom_check.h.
   `test_metrics --check FILE` checks FILE (a scrape, in tests/test_tools.sh) and exits. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include "prom_check.h"
#include "oom.h"
#include <pthread.h>
#include <time.h>

/* ---- helpers ---- */

static am2z_runtime *rt_new(int workers, int64_t metrics_ms) {
    am2z_logger_desc ld;
    am2z_local_desc d;
    am2z_runtime *rt;
    memset(&ld, 0, sizeof ld);
    ld.sink = AM2Z_SINK_SILENT;
    memset(&d, 0, sizeof d);
    d.workers = workers;
    d.logger = am2z_logger_new(&ld, NULL);
    d.metrics_interval_ms = metrics_ms;
    rt = am2z_local_runtime_new(&d, NULL);
    am2z_logger_release(d.logger);
    return rt;
}

static am2z_result p_ok(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_retain(in));
}
static am2z_result p_bad(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx, (void)in;
    return am2z_fail(am2z_error_business("NOPE", AM2Z_SEVERITY_LOW, "not today"));
}
static am2z_result p_flaky(am2z_ctx *ctx, const am2z_state *in) { /* retryable, always */
    (void)ctx, (void)in;
    return am2z_fail(am2z_error_network("http://flaky", 503, NULL));
}
static am2z_result p_slow(am2z_ctx *ctx, const am2z_state *in) {
    struct timespec ts = {0, 3000000}; /* 3 ms: never faster, however loaded the machine */
    (void)ctx;
    nanosleep(&ts, NULL);
    return am2z_ok(am2z_value_retain(in));
}

static void reg(am2z_runtime *rt, const char *name, am2z_processor_fn fn, int attempts) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    d.retry.max_attempts = attempts;
    d.retry.delay_ms = -1; /* retry at once */
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
}

static void run(am2z_runtime *rt, const char *proc, const char *session, int times) {
    am2z_state *in = am2z_state_parse("t", "{\"n\":1}", AM2Z_NTS, NULL);
    am2z_outcome out = {0};
    int i;
    for (i = 0; i < times; i++) {
        out = am2z_runtime_execute_in_session(rt, proc, in, session);
        am2z_outcome_clear(&out);
    }
    am2z_value_release(in);
}

/* The exposition of rt, checked; NULL (and a failed check) when it is not valid. */
static char *render(am2z_runtime *rt, const char *prefix) {
    char *text = NULL, err[256];
    size_t len = 0;
    CHECK_INT(am2z_runtime_metrics_text(rt, prefix, &text, &len), AM2Z_STATUS_OK);
    if (!text) return NULL;
    CHECK_INT(len, strlen(text));
    if (!pc_check(text, err, sizeof err)) {
        T_FAIL_("exposition rejected: %s\n%s", err, text);
        am2z_free(text);
        return NULL;
    }
    return text;
}

#define CHECK_SAMPLE(text, series, want) CHECK_DBL(pc_get(text, series), (double)(want), 1e-9)

/* ---- tests ---- */

/* The checker is strict: each of these breaks one rule and must be refused. */
static void test_checker_refuses_bad_text(void) {
    static const char *const bad[] = {
        "a_total 1\n",                                                      /* no HELP/TYPE */
        "# HELP a_total x\n# TYPE a_total counter\na_total 1",              /* no final newline */
        "# HELP a x\n# TYPE a counter\na 1\n",                              /* counter without _total */
        "# HELP g x\n# TYPE g gauge\ng{p=\"a\"b\"} 1\n",                    /* unescaped quote */
        "# HELP g x\n# TYPE g gauge\ng{p=\"a\\qb\"} 1\n",                   /* bad escape */
        "# HELP g x\n# TYPE g gauge\ng{p=\"a\n\"} 1\n",                     /* raw newline */
        "# HELP g x\n# TYPE g gauge\ng 1\n# HELP h x\n# TYPE h gauge\nh 1\ng{a=\"1\"} 2\n", /* split */
        "# HELP g x\n# TYPE g gauge\ng 1\ng 2\n",                           /* duplicate series */
        "# HELP g x\n# TYPE g gauge\ng one\n",                              /* bad value */
        "# HELP g x\n# TYPE g gauge\n9g 1\n",                               /* bad name */
        "# HELP g x\n# TYPE g gauge\ng{a=\"1\",a=\"2\"} 1\n",               /* label twice */
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\n"
        "h_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",                    /* not cumulative */
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
        "h_sum 1\nh_count 3\n",                                             /* _count != +Inf */
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", /* no +Inf */
        "# TYPE g gauge\n# HELP g x\ng 1\n",                                /* HELP after TYPE */
        "# HELP g x\n# TYPE g gauge\n\ng 1\n",                              /* blank line */
    };
    char err[256];
    size_t i;
    CHECK(pc_check("# HELP g x\n# TYPE g gauge\ng{a=\"\\\"\\\\\\n\"} 1.5e-3\n", err, sizeof err));
    CHECK(pc_check("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                   "h_sum 1.5\nh_count 2\n", err, sizeof err));
    for (i = 0; i < sizeof bad / sizeof *bad; i++)
        if (pc_check(bad[i], err, sizeof err)) T_FAIL_("checker accepted bad text %d:\n%s", (int)i, bad[i]);
}

/* Successes, failures and retries in two sessions: every count in the text is the one
   in the stats, per processor and per session. */
static void test_local_counts_match_stats(void) {
    am2z_runtime *rt = rt_new(2, 0);
    am2z_value *st, *s1;
    char *t;
    reg(rt, "ok", p_ok, 0);
    reg(rt, "bad", p_bad, 0);
    reg(rt, "flaky", p_flaky, 2);
    run(rt, "ok", "s1", 3);
    run(rt, "bad", "s1", 1);
    run(rt, "ok", "s2", 2);
    run(rt, "bad", "s2", 2);
    run(rt, "flaky", "s2", 1);
    t = render(rt, NULL);
    st = am2z_runtime_stats(rt);
    s1 = am2z_runtime_session_stats(rt, "s1");
    if (t && st && s1) {
        CHECK_SAMPLE(t, "am2z_workers", 2);
        CHECK_SAMPLE(t, "am2z_registered_processors", 3);
        CHECK_SAMPLE(t, "am2z_executions_total{processor=\"ok\",outcome=\"completed\"}", 5);
        CHECK_SAMPLE(t, "am2z_executions_total{processor=\"ok\",outcome=\"failed\"}", 0);
        CHECK_SAMPLE(t, "am2z_executions_total{processor=\"bad\",outcome=\"failed\"}", 3);
        CHECK_SAMPLE(t, "am2z_executions_total{processor=\"flaky\",outcome=\"failed\"}", 1);
        CHECK_SAMPLE(t, "am2z_retries_total{processor=\"flaky\"}", am2z_value_get_int(st, "processors.flaky.retried", -1));
        CHECK_SAMPLE(t, "am2z_retries_total{processor=\"flaky\"}", 1);
        CHECK_SAMPLE(t, "am2z_runtime_executions_total{outcome=\"completed\"}", am2z_value_get_int(st, "completed", -1));
        CHECK_SAMPLE(t, "am2z_runtime_executions_total{outcome=\"failed\"}", am2z_value_get_int(st, "failed", -1));
        CHECK_SAMPLE(t, "am2z_runtime_retries_total", am2z_value_get_int(st, "retried", -1));
        CHECK_SAMPLE(t, "am2z_queued", 0);
        CHECK_SAMPLE(t, "am2z_running", 0);
        /* every attempt that finished is in the histogram: 5 + 0 for ok */
        CHECK_SAMPLE(t, "am2z_execution_duration_seconds_count{processor=\"ok\"}", 5);
        CHECK_SAMPLE(t, "am2z_execution_duration_seconds_bucket{processor=\"ok\",le=\"+Inf\"}", 5);
        CHECK_SAMPLE(t, "am2z_execution_duration_seconds_count{processor=\"bad\"}", 3);
        CHECK(pc_get(t, "am2z_execution_duration_seconds_sum{processor=\"ok\"}") > 0);
        CHECK_SAMPLE(t, "am2z_session_submitted_total{session=\"s1\"}", am2z_value_get_int(s1, "submitted", -1));
        CHECK_SAMPLE(t, "am2z_session_submitted_total{session=\"s1\"}", 4);
        CHECK_SAMPLE(t, "am2z_session_submitted_total{session=\"s2\"}", 5);
        CHECK_SAMPLE(t, "am2z_session_running{session=\"s1\"}", 0);
        CHECK_SAMPLE(t, "am2z_session_cancelled_total{session=\"s2\"}", 0);
        CHECK_SAMPLE(t, "am2z_session_executions_total{session=\"s1\",processor=\"ok\",outcome=\"completed\"}", 3);
        CHECK_SAMPLE(t, "am2z_session_executions_total{session=\"s1\",processor=\"bad\",outcome=\"failed\"}", 1);
        CHECK_SAMPLE(t, "am2z_session_executions_total{session=\"s2\",processor=\"ok\",outcome=\"completed\"}", 2);
        CHECK_SAMPLE(t, "am2z_session_executions_total{session=\"s2\",processor=\"bad\",outcome=\"failed\"}", 2);
        CHECK_SAMPLE(t, "am2z_session_retries_total{session=\"s2\",processor=\"flaky\"}", 1);
        CHECK(pc_get(t, "am2z_uptime_seconds") >= 0);
        CHECK(strstr(t, "# TYPE am2z_execution_duration_seconds histogram\n") != NULL);
        CHECK(strstr(t, "# TYPE am2z_executions_total counter\n") != NULL);
        CHECK(strstr(t, "am2z_awaiting") == NULL); /* a queue runtime's family */
        CHECK(strstr(t, "am2z_queue_jobs") == NULL);
    }
    am2z_value_release(st);
    am2z_value_release(s1);
    am2z_free(t);
    /* a stopped session is no longer listed */
    CHECK_INT(am2z_runtime_stop_session(rt, "s1", 1000), AM2Z_STATUS_OK);
    t = render(rt, NULL);
    if (t) {
        CHECK(strstr(t, "session=\"s1\"") == NULL);
        CHECK_SAMPLE(t, "am2z_session_submitted_total{session=\"s2\"}", 5);
    }
    am2z_free(t);
    am2z_runtime_free(rt);
}

/* Executions of at least 3 ms: none below the 1.048576 ms bound, all below 68.7 s; the
   stats' "latency" member holds the same counts. */
static void test_histogram_buckets(void) {
    am2z_runtime *rt = rt_new(1, 0);
    am2z_value *ps;
    char *t;
    reg(rt, "slow", p_slow, 0);
    run(rt, "slow", NULL, 3);
    t = render(rt, NULL);
    ps = am2z_runtime_processor_stats(rt, "slow");
    if (t && ps) {
        CHECK_SAMPLE(t, "am2z_execution_duration_seconds_bucket{processor=\"slow\",le=\"0.000001024\"}", 0);
        CHECK_SAMPLE(t, "am2z_execution_duration_seconds_bucket{processor=\"slow\",le=\"0.001048576\"}", 0);
        CHECK_SAMPLE(t, "am2z_execution_duration_seconds_bucket{processor=\"slow\",le=\"68.719476736\"}", 3);
        CHECK_SAMPLE(t, "am2z_execution_duration_seconds_count{processor=\"slow\"}", 3);
        CHECK(pc_get(t, "am2z_execution_duration_seconds_sum{processor=\"slow\"}") >= 0.009);
        CHECK_INT(am2z_value_len(am2z_value_get(ps, "latency.buckets")), 14);
        CHECK_INT(am2z_value_get_int(ps, "latency.count", -1), 3);
        CHECK_INT(am2z_value_get_int(ps, "latency.buckets[13][1]", -1), 3);
        CHECK_DBL(am2z_value_get_double(ps, "latency.buckets[0][0]", -1), 0.001024, 1e-12);
        CHECK(am2z_value_get_double(ps, "latency.sumMs", 0) >= 9);
    }
    am2z_value_release(ps);
    am2z_free(t);
    am2z_runtime_free(rt);
}

/* ---- a runtime of our own whose names need escaping ---- */

static const char *weird = "we\"ird\\name\nx";

static am2z_execution *fake_submit(am2z_runtime *rt, const char *p, const am2z_state *in, const am2z_submit_desc *sid,
                                   am2z_status *status) {
    (void)rt, (void)p, (void)in, (void)sid;
    *status = AM2Z_STATUS_INVALID_ARGUMENT;
    return NULL;
}
static am2z_status fake_wait(am2z_execution *e, int64_t ms, am2z_outcome *out) {
    (void)e, (void)ms, (void)out;
    return AM2Z_STATUS_INVALID_ARGUMENT;
}
static void fake_free(am2z_execution *e) { (void)e; }
static am2z_value *fake_stats(am2z_runtime *rt) {
    am2z_value *p = am2z_value_set(am2z_value_object(), "completed", am2z_value_int(7));
    (void)rt;
    p = am2z_value_set(p, "failed", am2z_value_int(2));
    p = am2z_value_set(p, "retried", am2z_value_double(1.5)); /* doubles pass through */
    p = am2z_value_set(p, "latency", am2z_json_parse("{\"count\":2,\"sumMs\":1.5e-7,\"buckets\":[[0.5,1],[\"x\",9]]}",
                                                    AM2Z_NTS, NULL, NULL)); /* a bucket that is not a number is left out */
    return am2z_value_set(am2z_value_set(am2z_value_object(), "workers", am2z_value_int(1)), "processors",
                          am2z_value_set_key(am2z_value_object(), weird, AM2Z_NTS, p));
}
static am2z_value *fake_session_stats(am2z_runtime *rt, const char *sid) {
    am2z_value *p = am2z_value_set(am2z_value_object(), "completed", am2z_value_int(4));
    (void)rt;
    p = am2z_value_set(am2z_value_object(), "processors", am2z_value_set_key(am2z_value_object(), weird, AM2Z_NTS, p));
    p = am2z_value_set(p, "sessionId", am2z_value_string(sid));
    return am2z_value_set(p, "submitted", am2z_value_string("seven")); /* not a number: left out */
}
static am2z_value *fake_active(am2z_runtime *rt) {
    (void)rt;
    return am2z_value_append(am2z_value_array(), "", am2z_value_string(weird));
}

static void test_label_escaping(void) {
    static am2z_runtime_ops ops;
    am2z_runtime_settings set;
    am2z_runtime *rt;
    char *t;
    memset(&ops, 0, sizeof ops);
    ops.submit = fake_submit;
    ops.wait = fake_wait;
    ops.free_execution = fake_free;
    ops.detach = fake_free;
    ops.stats = fake_stats;
    ops.session_stats = fake_session_stats;
    ops.active_sessions = fake_active;
    memset(&set, 0, sizeof set);
    set.kind = "fake";
    rt = am2z_runtime_new(&ops, NULL, NULL, &set);
    CHECK(rt != NULL);
    if (!rt) return;
    t = render(rt, "x");
    if (t) {
        CHECK_SAMPLE(t, "x_executions_total{processor=\"we\\\"ird\\\\name\\nx\",outcome=\"completed\"}", 7);
        CHECK_SAMPLE(t, "x_executions_total{processor=\"we\\\"ird\\\\name\\nx\",outcome=\"failed\"}", 2);
        CHECK_SAMPLE(t, "x_retries_total{processor=\"we\\\"ird\\\\name\\nx\"}", 1.5);
        CHECK_SAMPLE(t, "x_session_executions_total{session=\"we\\\"ird\\\\name\\nx\",processor=\"we\\\"ird\\\\name\\nx\","
                        "outcome=\"completed\"}", 4);
        CHECK(strstr(t, "x_session_submitted_total") == NULL);
        CHECK_SAMPLE(t, "x_execution_duration_seconds_bucket{processor=\"we\\\"ird\\\\name\\nx\",le=\"0.0005\"}", 1);
        CHECK_SAMPLE(t, "x_execution_duration_seconds_bucket{processor=\"we\\\"ird\\\\name\\nx\",le=\"+Inf\"}", 2);
        CHECK(strstr(t, "_sum{processor=\"we\\\"ird\\\\name\\nx\"} 1.5e-10\n") != NULL);
        CHECK(strstr(t, "x_uptime_seconds") == NULL); /* not in these stats */
    }
    am2z_free(t);
    am2z_runtime_free(rt);
}

/* Every allocation failure inside metrics_text (and the stats it reads) returns cleanly,
   leaks nothing, and the run without one gives the full text. */
static am2z_runtime *oom_rt;
static const char *oom_want;
static int op_metrics(void) {
    char *t = NULL;
    am2z_status st = am2z_runtime_metrics_text(oom_rt, "x", &t, NULL);
    int done = st == AM2Z_STATUS_OK && t && strcmp(t, oom_want) == 0;
    if (st != AM2Z_STATUS_OK && (st != AM2Z_STATUS_NO_MEMORY || t)) T_FAIL_("status %d", (int)st);
    am2z_free(t);
    return done;
}
static void test_out_of_memory(void) {
    static am2z_runtime_ops ops;
    am2z_runtime_settings set;
    char *want = NULL;
    memset(&ops, 0, sizeof ops);
    ops.submit = fake_submit;
    ops.wait = fake_wait;
    ops.free_execution = fake_free;
    ops.detach = fake_free;
    ops.stats = fake_stats;
    ops.session_stats = fake_session_stats;
    ops.active_sessions = fake_active;
    memset(&set, 0, sizeof set);
    set.kind = "fake";
    oom_rt = am2z_runtime_new(&ops, NULL, NULL, &set);
    CHECK_INT(am2z_runtime_metrics_text(oom_rt, "x", &want, NULL), AM2Z_STATUS_OK);
    oom_want = want;
    if (want) CHECK(oom_sweep("metrics_text", op_metrics) > 10);
    am2z_free(want);
    am2z_runtime_free(oom_rt);
}

static void test_arguments_and_prefix(void) {
    am2z_runtime *rt = rt_new(1, 0);
    char *t = (char *)"unchanged", p64[AM2Z_METRICS_PREFIX_MAX + 2];
    size_t len = 99;
    static const char *const bad[] = {"", "9lives", "a-b", "a b", "caf\xc3\xa9"};
    size_t i;
    CHECK_INT(am2z_runtime_metrics_text(NULL, NULL, &t, &len), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(t == NULL);
    CHECK_INT(len, 0);
    CHECK_INT(am2z_runtime_metrics_text(rt, NULL, NULL, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "NULL") != NULL);
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_INT(am2z_runtime_metrics_text(rt, bad[i], &t, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK(t == NULL);
        CHECK(strstr(am2z_status_detail(), "prefix") != NULL);
    }
    memset(p64, 'p', sizeof p64);
    p64[AM2Z_METRICS_PREFIX_MAX + 1] = 0; /* one byte over the limit */
    CHECK_INT(am2z_runtime_metrics_text(rt, p64, &t, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    p64[AM2Z_METRICS_PREFIX_MAX] = 0; /* at the limit */
    CHECK_INT(am2z_runtime_metrics_text(rt, p64, &t, NULL), AM2Z_STATUS_OK);
    CHECK(t && strncmp(t, "# HELP pppp", 11) == 0);
    am2z_free(t);
    t = render(rt, "my:app_2");
    CHECK(t && strstr(t, "\nmy:app_2_workers 1\n") != NULL);
    CHECK(t && strstr(t, "am2z_") == NULL);
    am2z_free(t);
    am2z_runtime_free(rt);
}

/* The periodic "metrics" event carries the stats with the latency histogram, which
   renders as the same text a scrape gives. */
static pthread_mutex_t metrics_mu = PTHREAD_MUTEX_INITIALIZER;
static am2z_value *metrics_data; /* under metrics_mu */
static void on_metrics(const char *event, const am2z_value *data, void *ud) {
    (void)event, (void)ud;
    pthread_mutex_lock(&metrics_mu);
    if (!metrics_data && am2z_value_get_int(data, "processors.ok.latency.count", 0) >= 1)
        metrics_data = am2z_value_retain(data);
    pthread_mutex_unlock(&metrics_mu);
}
static int have_metrics(void) {
    int yes;
    pthread_mutex_lock(&metrics_mu);
    yes = metrics_data != NULL;
    pthread_mutex_unlock(&metrics_mu);
    return yes;
}
static void test_metrics_event_has_histogram(void) {
    am2z_runtime *rt = rt_new(1, 10);
    int id, i;
    reg(rt, "ok", p_ok, 0);
    id = am2z_runtime_on(rt, "metrics", on_metrics, NULL);
    CHECK(id > 0);
    run(rt, "ok", NULL, 1);
    for (i = 0; i < 10000 && !have_metrics(); i++) { /* up to 10 s */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    am2z_runtime_off(rt, id);
    CHECK(have_metrics());
    CHECK_INT(am2z_value_len(am2z_value_get(metrics_data, "processors.ok.latency.buckets")), 14);
    am2z_value_release(metrics_data);
    am2z_runtime_free(rt);
}

static int check_file(const char *path) {
    static char text[1 << 20];
    char err[256];
    FILE *f = fopen(path, "rb");
    size_t n;
    if (!f) return fprintf(stderr, "cannot open %s\n", path), 2;
    n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    if (!pc_check(text, err, sizeof err)) return fprintf(stderr, "%s: %s\n", path, err), 1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--check") == 0) return check_file(argv[2]);
    oom_install();
    T_RUN(test_checker_refuses_bad_text);
    T_RUN(test_local_counts_match_stats);
    T_RUN(test_histogram_buckets);
    T_RUN(test_label_escaping);
    T_RUN(test_out_of_memory);
    T_RUN(test_arguments_and_prefix);
    T_RUN(test_metrics_event_has_histogram);
    return t_done();
}
