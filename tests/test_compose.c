/* Processors and composition (am2z.h sections 5 and 6): processor validation, retry
   delays, timeouts, the ctx functions, and chain / parallel + 3-way merge / router /
   batch. Every composition test runs twice: on the inline runtime (section 9: children
   run on the calling thread through the ctx ops, which proves the composites only need
   ctx->ops) and on the local pthread runtime (left out with AM2Z_NO_THREADS). */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include <math.h>
#ifndef AM2Z_NO_THREADS
#include <pthread.h>
#endif

/* The registry walk the runtimes use (private, exported by the implementation). */
size_t am2z__processor_children(const am2z_processor *p, am2z_processor *const **out);

static am2z_value *J(const char *text) {
    am2z_value *v = am2z_json_parse(text, AM2Z_NTS, NULL, NULL);
    if (!v) fprintf(stderr, "  bad JSON in test: %s\n", text);
    return v;
}

/* v (without its top-level "metadata") equals the JSON text want. */
static int data_is(const am2z_value *v, const char *want) {
    am2z_value *a = am2z_value_remove(am2z_value_retain(v), "metadata");
    am2z_value *b = J(want);
    int ok = a && b && am2z_value_equal(a, b);
    if (!ok) {
        char *text = am2z_json_write(a, AM2Z_JSON_COMPACT, NULL);
        fprintf(stderr, "  data = %s\n  want = %s\n", text ? text : "(null)", want);
        am2z_free(text);
    }
    am2z_value_release(a);
    am2z_value_release(b);
    return ok;
}

static int json_is(const am2z_value *v, const char *want) {
    am2z_value *b = J(want);
    int ok = v && b && am2z_value_equal(v, b);
    if (!ok) {
        char *text = am2z_json_write(v, AM2Z_JSON_COMPACT, NULL);
        fprintf(stderr, "  json = %s\n  want = %s\n", text ? text : "(null)", want);
        am2z_free(text);
    }
    am2z_value_release(b);
    return ok;
}

static am2z_state *S(const char *json) { return am2z_state_parse("s1", json, AM2Z_NTS, NULL); }

/* ---- test processors ----------------------------------------------------------------- */

/* A small edit script, so each branch of a test is data, not a new function. */
enum { E_SET = 1, E_APPEND, E_REMOVE, E_FAIL, E_ADD, E_MUL, E_NEITHER, E_BOTH, E_RAW_ERROR };
typedef struct edit { int op; const char *path; const char *json; } edit;

static int g_ran; /* counts executions of patch processors (atomically) */

static am2z_result patch_fn(am2z_ctx *ctx, const am2z_state *in) {
    const edit *e = (const edit *)am2z_ctx_user_data(ctx);
    am2z_value *s = am2z_value_retain(in);
    am2z_result r;
    __atomic_add_fetch(&g_ran, 1, __ATOMIC_RELAXED);
    for (; e && e->op; e++) {
        switch (e->op) {
        case E_SET: s = am2z_value_set(s, e->path, J(e->json)); break;
        case E_APPEND: s = am2z_value_append(s, e->path, J(e->json)); break;
        case E_REMOVE: s = am2z_value_remove(s, e->path); break;
        case E_ADD:
            s = am2z_value_set(s, e->path, am2z_value_int(am2z_value_get_int(s, e->path, 0) + atoi(e->json)));
            break;
        case E_MUL:
            s = am2z_value_set(s, e->path, am2z_value_int(am2z_value_get_int(s, e->path, 0) * atoi(e->json)));
            break;
        case E_FAIL:
            am2z_value_release(s);
            return am2z_fail(am2z_error_business(e->path, AM2Z_SEVERITY_DEFAULT, "%s", e->json));
        case E_NEITHER:
            am2z_value_release(s);
            r.state = NULL;
            r.error = NULL;
            return r;
        case E_BOTH:
            r.state = s;
            r.error = am2z_error_business("BOTH", AM2Z_SEVERITY_DEFAULT, "%s", e->json);
            return r;
        case E_RAW_ERROR: /* an error built without going through am2z_fail */
            am2z_value_release(s);
            r.state = NULL;
            r.error = am2z_error_validation(e->path, NULL, e->json);
            return r;
        }
    }
    return am2z_ok(s);
}

static am2z_processor *mk(const char *name, const edit *script) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = patch_fn;
    d.user_data = (void *)script;
    return am2z_processor_new(&d, NULL);
}

/* Retains ps[0..n) and returns ps: constructors consume what they are given, so a test
   that reuses processors hands over extra references. */
static am2z_processor **kept(am2z_processor **ps, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) am2z_processor_retain(ps[i]);
    return ps;
}

/* ---- the event log (handlers may run on several workers of the local runtime) ------- */

#ifdef AM2Z_NO_THREADS
typedef int t_mutex; /* one thread: nothing to lock */
#define t_mutex_init(m) ((void)(m))
#define t_mutex_lock(m) ((void)(m))
#define t_mutex_unlock(m) ((void)(m))
#define t_mutex_destroy(m) ((void)(m))
#else
typedef pthread_mutex_t t_mutex;
#define t_mutex_init(m) pthread_mutex_init((m), NULL)
#define t_mutex_lock(m) pthread_mutex_lock(m)
#define t_mutex_unlock(m) pthread_mutex_unlock(m)
#define t_mutex_destroy(m) pthread_mutex_destroy(m)
#endif

typedef struct ev_log {
    t_mutex mu;
    am2z_value *events; /* [{event, data}] */
} ev_log;

static void ev_add(ev_log *log, const char *event, const am2z_value *data) {
    am2z_value *e = am2z_value_set(am2z_value_object(), "event", am2z_value_string(event));
    e = am2z_value_set(e, "data", data ? am2z_value_retain(data) : am2z_value_null());
    t_mutex_lock(&log->mu);
    log->events = am2z_value_append(log->events, "", e);
    t_mutex_unlock(&log->mu);
}

/* The data of every event called `name`, as an array (new reference). */
static am2z_value *ev_all(ev_log *log, const char *name) {
    am2z_value *out = am2z_value_array();
    size_t i;
    t_mutex_lock(&log->mu);
    for (i = 0; i < am2z_value_len(log->events); i++) {
        const am2z_value *e = am2z_value_at(log->events, i);
        if (strcmp(am2z_value_get_string(e, "event", ""), name) == 0)
            out = am2z_value_append(out, "", am2z_value_retain(am2z_value_get(e, "data")));
    }
    t_mutex_unlock(&log->mu);
    return out;
}

/* ---- the environment a composition test runs in ------------------------------------- */

static int g_local; /* 0: the inline runtime (section 9), 1: am2z_local_runtime_new */

typedef struct env {
    am2z_runtime *rt;
    am2z_logger *logger;
    ev_log log;
} env;

static void on_event(const char *event, const am2z_value *data, void *user_data) {
    ev_add((ev_log *)user_data, event, data);
}

static void env_init(env *e) {
    am2z_logger_desc ld;
    memset(e, 0, sizeof *e);
    t_mutex_init(&e->log.mu);
    e->log.events = am2z_value_array();
    memset(&ld, 0, sizeof ld);
    ld.sink = AM2Z_SINK_SILENT;
    e->logger = am2z_logger_new(&ld, NULL);
    if (!g_local) {
        am2z_inline_desc d;
        memset(&d, 0, sizeof d);
        d.logger = e->logger;
        e->rt = am2z_inline_runtime_new(&d, NULL);
    } else {
#ifndef AM2Z_NO_THREADS
        am2z_local_desc d;
        memset(&d, 0, sizeof d);
        d.workers = 2;
        d.logger = e->logger;
        e->rt = am2z_local_runtime_new(&d, NULL);
#endif
    }
    CHECK(e->rt != NULL);
    if (e->rt) CHECK(am2z_runtime_on(e->rt, "*", on_event, &e->log) > 0);
}

/* Registers p (and its children), consuming it as am2z_runtime_register does. */
static void add(env *e, am2z_processor *p) {
    CHECK(p != NULL);
    if (p) CHECK_INT(am2z_runtime_register(e->rt, p), AM2Z_STATUS_OK);
}

/* Runs `name` on input (borrowed) as a top-level execution. */
static am2z_result env_run(env *e, const char *name, const am2z_state *input) {
    am2z_outcome out = am2z_runtime_execute_in_session(e->rt, name, input, "s1");
    return am2z_outcome_to_result(&out);
}

static void env_free(env *e) {
    if (e->rt) am2z_runtime_free(e->rt);
    am2z_logger_release(e->logger);
    am2z_value_release(e->log.events);
    t_mutex_destroy(&e->log.mu);
}

static const char *detail_str(const am2z_error *err, const char *key) {
    return err ? am2z_value_get_string(err->details, key, "(absent)") : "(no error)";
}
static int64_t detail_int(const am2z_error *err, const char *key) {
    return err ? am2z_value_get_int(err->details, key, -1) : -1;
}

/* ---- section 5: processors ----------------------------------------------------------- */

static void test_processor_new_validation(void) {
    am2z_processor_desc d;
    am2z_processor *p, *dep, *q;
    am2z_processor *const *kids;
    am2z_status st = AM2Z_STATUS_OK;
    char name[AM2Z_NAME_MAX + 2];
    char buf[16];
    const char *bad[] = {"", "a b", "a/b", "a:b", "é", "x\n"};
    size_t i;

    CHECK(am2z_processor_new(NULL, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    memset(&d, 0, sizeof d);
    d.fn = patch_fn;
    CHECK(am2z_processor_new(&d, &st) == NULL); /* no name */
    CHECK_STR(am2z_status_detail(), "processor '(null)': no name");
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        d.name = bad[i];
        p = am2z_processor_new(&d, &st);
        if (p) fprintf(stderr, "  accepted bad name '%s'\n", bad[i]);
        CHECK(p == NULL);
        CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
        am2z_processor_release(p);
    }
    CHECK_STR(am2z_status_detail(), "processor 'x\n': name has a character outside [A-Za-z0-9_.-]");
    d.name = "a b";
    CHECK(am2z_processor_new(&d, NULL) == NULL);
    CHECK_STR(am2z_status_detail(), "processor 'a b': name has a character outside [A-Za-z0-9_.-]");
    memset(name, 'a', sizeof name);
    name[AM2Z_NAME_MAX] = '\0';
    d.name = name;
    st = AM2Z_STATUS_NO_MEMORY;
    p = am2z_processor_new(&d, &st); /* exactly the limit */
    CHECK(p != NULL);
    CHECK_INT(st, AM2Z_STATUS_OK); /* set on success too */
    am2z_processor_release(p);
    name[AM2Z_NAME_MAX] = 'a';
    name[AM2Z_NAME_MAX + 1] = '\0';
    CHECK(am2z_processor_new(&d, NULL) == NULL); /* one over */
    CHECK(strstr(am2z_status_detail(), "name is longer than AM2Z_NAME_MAX bytes") != NULL);

    d.name = "A-z_0.9";
    d.fn = NULL;
    CHECK(am2z_processor_new(&d, NULL) == NULL); /* plain processors need fn */
    CHECK_STR(am2z_status_detail(), "processor 'A-z_0.9': no fn");
    d.fn = patch_fn;
    d.timeout_ms = -1;
    CHECK(am2z_processor_new(&d, NULL) == NULL);
    CHECK_STR(am2z_status_detail(), "processor 'A-z_0.9': negative timeout_ms");
    d.timeout_ms = 0;
    d.retry.jitter = 1.5;
    CHECK(am2z_processor_new(&d, NULL) == NULL);
    d.retry.jitter = 0;
    d.retry.max_attempts = -2;
    CHECK(am2z_processor_new(&d, NULL) == NULL);
    d.retry.max_attempts = 0;
    d.queue.concurrency = -1;
    CHECK(am2z_processor_new(&d, NULL) == NULL);
    d.queue.concurrency = 0;
    dep = NULL;
    d.dependencies = &dep;
    d.dependency_count = 1;
    CHECK(am2z_processor_new(&d, &st) == NULL); /* NULL dependency */
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strncmp(am2z_status_detail(), "processor 'A-z_0.9': dependency 1 is NULL", 41) == 0);
    /* an invalid desc still consumes its dependencies (LeakSanitizer checks) */
    dep = mk("dep", NULL);
    d.timeout_ms = -1;
    CHECK(am2z_processor_new(&d, NULL) == NULL);
    d.timeout_ms = 0;

    /* the desc is copied: later changes to the caller's strings do not leak in, and
       the dependencies are taken over */
    dep = mk("dep", NULL);
    strcpy(buf, "orig");
    d.name = buf;
    d.description = "about";
    d.timeout_ms = 250;
    d.retry.max_attempts = 3;
    p = am2z_processor_new(&d, NULL);
    CHECK(p != NULL);
    strcpy(buf, "changed");
    if (!p) return;
    CHECK_STR(am2z_processor_name(p), "orig");
    CHECK_STR(am2z_processor_desc_of(p)->description, "about");
    CHECK_INT(am2z_processor_desc_of(p)->timeout_ms, 250);
    CHECK_INT(am2z_processor_desc_of(p)->retry.max_attempts, 3);
    CHECK_INT(am2z_processor_desc_of(p)->dependency_count, 1);
    CHECK_INT(am2z__processor_children(p, &kids), 1);
    CHECK(kids[0] == dep);
    CHECK_STR(am2z_processor_name(kids[0]), "dep"); /* alive through p */
    q = am2z_processor_retain(p);
    CHECK(q == p);
    am2z_processor_release(q);
    am2z_processor_release(p);
    CHECK(am2z_processor_retain(NULL) == NULL);
    am2z_processor_release(NULL);
    CHECK(am2z_processor_name(NULL) == NULL);
}

static int g_should_calls, g_should_attempt;
static int should_retry_odd(const am2z_error *err, int attempt, void *user_data) {
    (void)err;
    g_should_calls++;
    g_should_attempt = attempt;
    CHECK(user_data == (void *)&g_should_calls);
    return attempt % 2 == 1;
}

static void test_retry_delay(void) {
    am2z_retry_policy p;
    am2z_error *retryable = am2z_error_timeout("op", 10);     /* retryable */
    am2z_error *permanent = am2z_error_validation("f", NULL, "bad"); /* not retryable */
    int i, distinct = 0;
    int64_t d, first = -2, lo = INT64_MAX, hi = 0;
    CHECK(retryable && retryable->retryable);
    CHECK(permanent && !permanent->retryable);

    memset(&p, 0, sizeof p);
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 1), -1); /* max_attempts 0 means 1 */
    CHECK_INT(am2z_retry_delay_ms(NULL, retryable, 1), -1);
    p.max_attempts = 1;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 1), -1);

    /* defaults: exponential from 100 ms, factor 2 */
    p.max_attempts = 5;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 1), 100);
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 2), 200);
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 4), 800);
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 5), -1); /* attempts used up */
    CHECK_INT(am2z_retry_delay_ms(&p, permanent, 1), -1); /* default: only retryable errors */
    CHECK_INT(am2z_retry_delay_ms(&p, NULL, 1), -1);

    p.backoff = AM2Z_BACKOFF_FIXED;
    p.delay_ms = 40;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 1), 40);
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 3), 40);
    p.backoff = AM2Z_BACKOFF_LINEAR;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 1), 40);
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 3), 120);
    p.backoff = AM2Z_BACKOFF_EXPONENTIAL;
    p.multiplier = 3;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 1), 40);
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 3), 360);
    p.multiplier = 1.5;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 3), 90);

    /* the cap, also where the exponent overflows a double */
    p.multiplier = 2;
    p.max_delay_ms = 1000;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 4), 320);
    p.max_attempts = 1000000;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 6), 1000);
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 5000), 1000);
    p.max_delay_ms = 0;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 5000), 30000); /* default cap */
    p.backoff = AM2Z_BACKOFF_LINEAR;
    p.max_delay_ms = 100;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 3), 100);

    /* negative delay: retry at once */
    p.delay_ms = -1;
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 2), 0);

    /* jitter: within [d * (1 - j), d], and really random */
    p.backoff = AM2Z_BACKOFF_FIXED;
    p.delay_ms = 1000;
    p.max_delay_ms = 0;
    p.jitter = 0.25;
    for (i = 0; i < 2000; i++) {
        d = am2z_retry_delay_ms(&p, retryable, 1);
        if (d < lo) lo = d;
        if (d > hi) hi = d;
        if (first == -2) first = d;
        else if (d != first) distinct = 1;
    }
    CHECK(lo >= 750);
    CHECK(hi <= 1000);
    CHECK(distinct);
    CHECK(lo < 800);  /* 2000 samples cover the range */
    CHECK(hi > 950);
    p.jitter = 1;
    for (i = 0; i < 200; i++) {
        d = am2z_retry_delay_ms(&p, retryable, 1);
        CHECK(d >= 0 && d <= 1000);
    }
    p.jitter = 0;

    /* should_retry decides (also for a non-retryable error), attempts still bound it */
    p.should_retry = should_retry_odd;
    p.user_data = &g_should_calls;
    p.max_attempts = 4;
    CHECK_INT(am2z_retry_delay_ms(&p, permanent, 1), 1000);
    CHECK_INT(g_should_attempt, 1);
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 2), -1);
    CHECK_INT(g_should_attempt, 2);
    CHECK_INT(g_should_calls, 2);
    CHECK_INT(am2z_retry_delay_ms(&p, retryable, 4), -1); /* used up: not even asked */
    CHECK_INT(g_should_calls, 2);

    am2z_error_release(retryable);
    am2z_error_release(permanent);
}

#ifndef AM2Z_NO_THREADS
/* Four threads drawing jittered delays at once (TSan checks the generator). */
static void *jitter_thread(void *arg) {
    am2z_retry_policy p;
    am2z_error *err = am2z_error_timeout("op", 1);
    int i, *bad = (int *)arg;
    memset(&p, 0, sizeof p);
    p.max_attempts = 2;
    p.backoff = AM2Z_BACKOFF_FIXED;
    p.delay_ms = 100;
    p.jitter = 0.5;
    for (i = 0; i < 5000; i++) {
        int64_t d = am2z_retry_delay_ms(&p, err, 1);
        if (d < 50 || d > 100) (*bad)++;
    }
    am2z_error_release(err);
    return NULL;
}

static void test_retry_delay_threads(void) {
    pthread_t t[4];
    int bad[4] = {0, 0, 0, 0}, i;
    for (i = 0; i < 4; i++) CHECK_INT(pthread_create(&t[i], NULL, jitter_thread, &bad[i]), 0);
    for (i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_INT(bad[i], 0);
    }
}
#endif

static am2z_processor *mk_timeout(const char *name, int64_t ms) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = patch_fn;
    d.timeout_ms = ms;
    return am2z_processor_new(&d, NULL);
}

static void test_timeout_derivation(void) {
    am2z_processor *a = mk_timeout("a", 100), *b = mk_timeout("b", 0), *c = mk_timeout("c", 200);
    am2z_processor *steps[3], *ch, *ch2, *par, *nest[2], *par2, *rt, *bt;
    am2z_chain_desc cd;
    am2z_parallel_desc pd;
    am2z_router_desc rd;
    am2z_batch_desc bd;
    am2z_route routes[1];
    CHECK_INT(am2z_processor_timeout_ms(a, 50), 100);
    CHECK_INT(am2z_processor_timeout_ms(b, 50), 50);
    CHECK_INT(am2z_processor_timeout_ms(NULL, 7), 7);
    /* each constructor consumes what it is given: hand over extra references to reuse
       a, b and c */
    steps[0] = am2z_processor_retain(a), steps[1] = am2z_processor_retain(b), steps[2] = am2z_processor_retain(c);
    memset(&cd, 0, sizeof cd);
    cd.name = "ch";
    cd.steps = steps;
    cd.count = 3;
    ch = am2z_chain_new(&cd, NULL);
    CHECK_INT(am2z_processor_timeout_ms(ch, 50), 350); /* 100 + default 50 + 200 */
    cd.name = "ch2";
    cd.timeout_ms = 20;
    steps[0] = am2z_processor_retain(a), steps[1] = am2z_processor_retain(b), steps[2] = am2z_processor_retain(c);
    ch2 = am2z_chain_new(&cd, NULL);
    CHECK_INT(am2z_processor_timeout_ms(ch2, 50), 20); /* explicit wins */
    memset(&pd, 0, sizeof pd);
    pd.name = "par";
    pd.branches = steps;
    pd.count = 3;
    steps[0] = am2z_processor_retain(a), steps[1] = am2z_processor_retain(b), steps[2] = am2z_processor_retain(c);
    par = am2z_parallel_new(&pd, NULL);
    CHECK_INT(am2z_processor_timeout_ms(par, 50), 200);
    CHECK_INT(am2z_processor_timeout_ms(par, 500), 500); /* b's default is the largest */
    nest[0] = am2z_processor_retain(ch), nest[1] = am2z_processor_retain(c);
    pd.name = "par2";
    pd.branches = nest;
    pd.count = 2;
    par2 = am2z_parallel_new(&pd, NULL);
    CHECK_INT(am2z_processor_timeout_ms(par2, 50), 350);
    CHECK_INT(am2z_processor_timeout_ms(par2, INT64_MAX), INT64_MAX); /* saturates */
    memset(&rd, 0, sizeof rd);
    routes[0].key = "k";
    routes[0].target = am2z_processor_retain(c);
    rd.name = "rt";
    rd.select = NULL;
    rd.routes = routes;
    rd.count = 1;
    CHECK(am2z_router_new(&rd, NULL) == NULL); /* select required */
    memset(&bd, 0, sizeof bd);
    bd.name = "bt";
    bd.target = am2z_processor_retain(c);
    bd.items_path = "items";
    bt = am2z_batch_new(&bd, NULL);
    CHECK_INT(am2z_processor_timeout_ms(bt, 50), 50); /* explicit only */
    bd.name = "bt2";
    bd.timeout_ms = 75;
    bd.target = am2z_processor_retain(c);
    rt = am2z_batch_new(&bd, NULL);
    CHECK_INT(am2z_processor_timeout_ms(rt, 50), 75);
    am2z_processor_release(rt);
    am2z_processor_release(bt);
    am2z_processor_release(par2);
    am2z_processor_release(par);
    am2z_processor_release(ch2);
    am2z_processor_release(ch);
    am2z_processor_release(a);
    am2z_processor_release(b);
    am2z_processor_release(c);
}

static ev_log g_ctx_log;
static void rec_emit(am2z_ctx *ctx, const char *event, am2z_value *data) {
    (void)ctx;
    ev_add(&g_ctx_log, event, data);
    am2z_value_release(data);
}
static int yes_cancelled(const am2z_ctx *ctx) {
    (void)ctx;
    return 1;
}
static int wants_only_custom(const am2z_ctx *ctx, const char *event) {
    (void)ctx;
    return strncmp(event, "custom:", 7) == 0;
}
static am2z_logger *g_ops_logger;
static const am2z_logger *ops_logger(const am2z_ctx *ctx) {
    (void)ctx;
    return g_ops_logger;
}

static void test_ctx_functions(void) {
    static const edit none[] = {{0, NULL, NULL}};
    am2z_processor *p = mk("ctxp", none);
    am2z_ctx_ops ops;
    am2z_ctx ctx;
    am2z_result r;
    am2z_value *ev;
    am2z_state *in = S("{}");
    memset(&ops, 0, sizeof ops);
    memset(&ctx, 0, sizeof ctx);
    t_mutex_init(&g_ctx_log.mu);
    g_ctx_log.events = am2z_value_array();

    /* NULL ctx: defaults, no crash */
    CHECK(am2z_ctx_meta(NULL) == NULL);
    CHECK(am2z_ctx_logger(NULL) == NULL);
    CHECK(am2z_ctx_user_data(NULL) == NULL);
    CHECK_INT(am2z_ctx_cancelled(NULL), 0);
    CHECK(am2z_ctx_remaining_ms(NULL) == INT64_MAX);
    am2z_ctx_emit(NULL, "x", am2z_value_int(1)); /* data still released (ASan) */
    am2z_ctx_progress(NULL, 0.5);
    r = am2z_ctx_call(NULL, "ctxp", in);
    CHECK(r.error != NULL && r.state == NULL);
    am2z_result_clear(&r);

    ctx.processor = p;
    ctx.meta.processor = "ctxp";
    ctx.meta.execution_id = "ctxp-1";
    ctx.meta.attempt = 2;
    CHECK(am2z_ctx_user_data(&ctx) == (void *)none);
    CHECK_INT(am2z_ctx_meta(&ctx)->attempt, 2);
    CHECK(am2z_ctx_remaining_ms(&ctx) == INT64_MAX);
    CHECK_INT(am2z_ctx_cancelled(&ctx), 0);

    /* a context without a runtime cannot call, and emit just releases */
    r = am2z_ctx_call(&ctx, "ctxp", in);
    CHECK(r.error != NULL && r.error->kind == AM2Z_ERROR_CONFIGURATION);
    am2z_result_clear(&r);
    am2z_ctx_emit(&ctx, "x", am2z_value_int(1));

    /* deadlines */
    ctx.deadline_ns = am2z_monotonic_ns() + 5000000000LL;
    CHECK(am2z_ctx_remaining_ms(&ctx) > 4000 && am2z_ctx_remaining_ms(&ctx) <= 5000);
    CHECK_INT(am2z_ctx_cancelled(&ctx), 0);
    ctx.deadline_ns = am2z_monotonic_ns() - 1;
    CHECK_INT(am2z_ctx_remaining_ms(&ctx), 0);
    CHECK_INT(am2z_ctx_cancelled(&ctx), 1);
    ctx.deadline_ns = 0;
    ops.cancelled = yes_cancelled;
    ctx.ops = &ops;
    CHECK_INT(am2z_ctx_cancelled(&ctx), 1);

    /* progress and custom events go through ops->emit */
    ops.emit = rec_emit;
    am2z_ctx_progress(&ctx, 0.25);
    am2z_ctx_emit(&ctx, "custom:thing", am2z_value_string("hi"));
    am2z_ctx_emit(&ctx, "custom:null", NULL);
    ev = ev_all(&g_ctx_log, "processor:progress");
    CHECK(json_is(ev, "[{\"processorName\":\"ctxp\",\"executionId\":\"ctxp-1\",\"progress\":0.25}]"));
    am2z_value_release(ev);
    ev = ev_all(&g_ctx_log, "custom:thing");
    CHECK(json_is(ev, "[\"hi\"]"));
    am2z_value_release(ev);
    ev = ev_all(&g_ctx_log, "custom:null");
    CHECK(json_is(ev, "[null]"));
    am2z_value_release(ev);

    /* the runtime's hints: payloads nobody wants are not built, the lazy logger */
    ops.wants = wants_only_custom;
    am2z_ctx_progress(&ctx, 0.75);
    am2z_ctx_emit(&ctx, "custom:thing", am2z_value_string("again"));
    ev = ev_all(&g_ctx_log, "processor:progress");
    CHECK_INT(am2z_value_len(ev), 1); /* still only the first */
    am2z_value_release(ev);
    ev = ev_all(&g_ctx_log, "custom:thing");
    CHECK_INT(am2z_value_len(ev), 2);
    am2z_value_release(ev);
    ctx.logger = NULL;
    g_ops_logger = am2z_logger_new(NULL, NULL);
    CHECK(am2z_ctx_logger(&ctx) == NULL);
    ops.logger = ops_logger;
    CHECK(am2z_ctx_logger(&ctx) == g_ops_logger);
    am2z_logger_release(g_ops_logger);

    am2z_value_release(g_ctx_log.events);
    t_mutex_destroy(&g_ctx_log.mu);
    am2z_value_release(in);
    am2z_processor_release(p);
}

static void test_ill_formed_results(void) {
    static const edit neither[] = {{E_NEITHER, NULL, NULL}, {0, NULL, NULL}};
    static const edit both[] = {{E_BOTH, NULL, "both set"}, {0, NULL, NULL}};
    static const edit raw[] = {{E_RAW_ERROR, "field", "raw"}, {0, NULL, NULL}};
    env e;
    am2z_state *in = S("{\"n\":1}");
    am2z_result r;
    char *chain;
    env_init(&e);
    add(&e, mk("neither", neither));
    add(&e, mk("both", both));
    add(&e, mk("raw", raw));

    r = env_run(&e, "neither", in);
    CHECK(r.state == NULL && r.error != NULL);
    if (r.error) {
        CHECK_INT(r.error->kind, AM2Z_ERROR_EXECUTION);
        CHECK_STR(r.error->processor, "neither");
        CHECK(strstr(r.error->message, "returned neither a state nor an error") != NULL);
        CHECK(r.error->execution_id != NULL);
        CHECK_INT(r.error->retryable, 0); /* retrying a broken processor does not help */
    }
    am2z_result_clear(&r);

    r = env_run(&e, "both", in);
    CHECK(r.state == NULL && r.error != NULL);
    if (r.error) CHECK_STR(am2z_error_root_cause(r.error)->message, "both set");
    am2z_result_clear(&r);

    /* an error without location gets the processor and execution id */
    r = env_run(&e, "raw", in);
    CHECK(r.error != NULL);
    if (r.error) {
        CHECK_INT(r.error->kind, AM2Z_ERROR_VALIDATION);
        CHECK_STR(r.error->processor, "raw");
        CHECK(r.error->execution_id != NULL && strncmp(r.error->execution_id, "raw-", 4) == 0);
        chain = am2z_error_chain(r.error);
        CHECK(chain && strstr(chain, "raw") != NULL);
        am2z_free(chain);
    }
    am2z_result_clear(&r);
    am2z_value_release(in);
    env_free(&e);
}

/* ---- chain ----------------------------------------------------------------------------- */

static const edit inc1[] = {{E_ADD, "count", "1"}, {0, NULL, NULL}};
static const edit dbl[] = {{E_MUL, "count", "2"}, {0, NULL, NULL}};
static const edit add10[] = {{E_ADD, "count", "10"}, {0, NULL, NULL}};
static const edit boom[] = {{E_FAIL, "BOOM", "step two broke"}, {0, NULL, NULL}};

static am2z_processor *chain_of(const char *name, am2z_processor **steps, size_t n) {
    am2z_chain_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.steps = steps;
    d.count = n;
    return am2z_chain_new(&d, NULL);
}

static void test_chain_success(void) {
    env e;
    am2z_processor *s[3], *ch;
    am2z_state *in = S("{\"count\":5}");
    am2z_result r;
    am2z_value *ev;
    env_init(&e);
    s[0] = mk("plus1", inc1), s[1] = mk("times2", dbl), s[2] = mk("plus10", add10);
    ch = chain_of("calc", s, 3);
    CHECK(ch != NULL);
    if (ch) CHECK_STR(am2z_processor_desc_of(ch)->description, "Sequential chain: plus1 -> times2 -> plus10");
    add(&e, ch);
    r = env_run(&e, "calc", in);
    CHECK(r.state != NULL);
    CHECK_INT(am2z_value_get_int(r.state, "count", -1), 22);
    CHECK_STR(am2z_state_session_id(r.state), "s1");
    am2z_result_clear(&r);
    ev = ev_all(&e.log, "processor:completed");
    CHECK(json_is(ev, "[{\"processorName\":\"plus1\",\"chainName\":\"calc\",\"chainPosition\":1,"
                      "\"totalProcessors\":3,\"stepCompleted\":true},"
                      "{\"processorName\":\"times2\",\"chainName\":\"calc\",\"chainPosition\":2,"
                      "\"totalProcessors\":3,\"stepCompleted\":true},"
                      "{\"processorName\":\"plus10\",\"chainName\":\"calc\",\"chainPosition\":3,"
                      "\"totalProcessors\":3,\"stepCompleted\":true}]"));
    am2z_value_release(ev);
    am2z_value_release(in);
    env_free(&e);
}

static void test_chain_failure(void) {
    env e;
    am2z_processor *s[3];
    am2z_state *in = S("{\"count\":0}");
    am2z_result r;
    am2z_value *ev;
    env_init(&e);
    s[0] = mk("first", inc1), s[1] = mk("second", boom), s[2] = mk("third", add10);
    add(&e, chain_of("ch", s, 3));
    __atomic_store_n(&g_ran, 0, __ATOMIC_SEQ_CST);
    r = env_run(&e, "ch", in);
    CHECK(r.state == NULL && r.error != NULL);
    CHECK_INT(__atomic_load_n(&g_ran, __ATOMIC_SEQ_CST), 2); /* third never ran */
    if (r.error) {
        CHECK_INT(r.error->kind, AM2Z_ERROR_EXECUTION);
        CHECK_STR(r.error->processor, "ch");
        CHECK_STR(r.error->message, "Processor 'ch' execution failed: step two broke");
        CHECK(r.error->cause != NULL);
        if (r.error->cause) {
            CHECK_STR(r.error->cause->code, "BOOM");
            CHECK_STR(r.error->cause->processor, "second");
        }
        CHECK(r.error->partial_state != NULL);
        CHECK_INT(am2z_value_get_int(r.error->partial_state, "count", -1), 1);
        CHECK_STR(detail_str(r.error, "failedProcessor"), "second");
        CHECK_INT(detail_int(r.error, "failedStep"), 1);
        CHECK_INT(detail_int(r.error, "completedSteps"), 1);
        CHECK_INT(r.error->retryable, 0); /* a business error stays permanent */
    }
    am2z_result_clear(&r);
    ev = ev_all(&e.log, "processor:completed");
    CHECK_INT(am2z_value_len(ev), 1); /* only the first step completed */
    am2z_value_release(ev);

    /* failing at step 0: partial state is the input */
    s[0] = mk("bad0", boom);
    add(&e, chain_of("ch0", s, 1));
    r = env_run(&e, "ch0", in);
    CHECK(r.error != NULL);
    if (r.error) {
        CHECK_INT(detail_int(r.error, "failedStep"), 0);
        CHECK_INT(detail_int(r.error, "completedSteps"), 0);
        CHECK(r.error->partial_state && data_is(r.error->partial_state, "{\"count\":0}"));
    }
    am2z_result_clear(&r);
    am2z_value_release(in);
    env_free(&e);
}

static void test_chain_invalid(void) {
    am2z_processor *steps[2];
    am2z_processor_desc bd;
    am2z_chain_desc d;
    am2z_status st = AM2Z_STATUS_OK;
    memset(&d, 0, sizeof d);
    CHECK(am2z_chain_new(NULL, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    d.name = "c";
    CHECK(am2z_chain_new(&d, NULL) == NULL); /* no steps */
    CHECK_STR(am2z_status_detail(), "chain 'c': no children");
    steps[0] = mk("a", inc1), steps[1] = NULL;
    d.steps = steps;
    d.count = 0;
    CHECK(am2z_chain_new(&d, NULL) == NULL); /* empty: nothing handed over */
    d.count = 2;
    CHECK(am2z_chain_new(&d, &st) == NULL); /* NULL step: "a" is released with it */
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    d.count = 1;
    d.name = "bad name";
    steps[0] = mk("a", inc1);
    CHECK(am2z_chain_new(&d, NULL) == NULL);
    CHECK_STR(am2z_status_detail(), "chain 'bad name': name has a character outside [A-Za-z0-9_.-]");
    d.name = "c";
    d.timeout_ms = -5;
    steps[0] = mk("a", inc1);
    CHECK(am2z_chain_new(&d, NULL) == NULL);
    CHECK_STR(am2z_status_detail(), "chain 'c': negative timeout_ms");

    /* a failed child's detail survives into the composite's */
    memset(&bd, 0, sizeof bd);
    bd.name = "b";
    steps[0] = mk("a", inc1);
    steps[1] = am2z_processor_new(&bd, NULL); /* no fn */
    d.name = "checkout";
    d.timeout_ms = 0;
    d.count = 2;
    CHECK(am2z_chain_new(&d, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "chain 'checkout': step 2 is NULL (processor 'b': no fn)");
}

static const char *select_none(const am2z_state *input, void *user_data) {
    (void)input;
    (void)user_data;
    return NULL;
}

/* A pipeline is one expression: every constructor takes NULL children (a constructor
   that failed), fails with that failure's detail and releases the rest; nothing leaks
   (LeakSanitizer checks) and the one check at the end names the first failure. */
static void test_consume_null_children(void) {
    am2z_processor_desc good, broken;
    am2z_route routes[3];
    am2z_processor *p, *deps[2];
    am2z_status st = AM2Z_STATUS_OK;
    memset(&good, 0, sizeof good);
    good.name = "ok";
    good.fn = patch_fn;
    memset(&broken, 0, sizeof broken);
    broken.name = "broken";

    p = am2z_parallel_new(&(am2z_parallel_desc){
        .name = "fan", .count = 3,
        .branches = (am2z_processor *[]){
            am2z_processor_new(&good, NULL),
            am2z_chain_new(&(am2z_chain_desc){.name = "inner", .count = 2,
                .steps = (am2z_processor *[]){am2z_processor_new(&good, NULL),
                                              am2z_processor_new(&broken, NULL)}}, NULL),
            am2z_processor_new(&good, NULL)}}, &st);
    CHECK(p == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(),
              "parallel 'fan': branch 2 is NULL (chain 'inner': step 2 is NULL (processor 'broken': no fn))");

    routes[0].key = "x", routes[0].target = am2z_processor_new(&good, NULL);
    routes[1].key = "y", routes[1].target = am2z_processor_new(&broken, NULL);
    routes[2].key = NULL, routes[2].target = am2z_processor_new(&good, NULL);
    CHECK(am2z_router_new(&(am2z_router_desc){.name = "r", .select = select_none, .routes = routes, .count = 3},
                          &st) == NULL);
    CHECK_STR(am2z_status_detail(), "router 'r': route target 2 is NULL (processor 'broken': no fn)");
    /* a fallback whose constructor failed is a failure, not "no fallback" */
    routes[0].target = am2z_processor_new(&good, NULL), routes[1].target = am2z_processor_new(&good, NULL);
    routes[2].target = am2z_processor_new(&broken, NULL);
    CHECK(am2z_router_new(&(am2z_router_desc){.name = "r", .select = select_none, .routes = routes, .count = 3},
                          &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "router 'r': route target 3 is NULL (processor 'broken': no fn)");

    CHECK(am2z_batch_new(&(am2z_batch_desc){.name = "bt", .items_path = "items",
                                            .target = am2z_processor_new(&broken, NULL)}, &st) == NULL);
    CHECK_STR(am2z_status_detail(), "batch 'bt': target 1 is NULL (processor 'broken': no fn)");

    deps[0] = am2z_processor_new(&good, NULL), deps[1] = am2z_processor_new(&broken, NULL);
    good.name = "with_deps";
    good.dependencies = deps;
    good.dependency_count = 2;
    CHECK(am2z_processor_new(&good, &st) == NULL);
    CHECK_STR(am2z_status_detail(), "processor 'with_deps': dependency 2 is NULL (processor 'broken': no fn)");
}

/* ---- parallel -------------------------------------------------------------------------- */

static am2z_processor *par_of(const char *name, am2z_processor **b, size_t n, am2z_merge_fn merge, void *ud) {
    am2z_parallel_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.branches = b;
    d.count = n;
    d.merge = merge;
    d.merge_user_data = ud;
    return am2z_parallel_new(&d, NULL);
}

/* Runs a parallel of branches built from the scripts on input, returns the result. */
static am2z_result run_par(env *e, const char *input, const edit *const *scripts, size_t n) {
    am2z_processor *b[8], *p;
    char name[32];
    size_t i;
    am2z_state *in = S(input);
    am2z_result r;
    for (i = 0; i < n; i++) {
        snprintf(name, sizeof name, "b%lu", (unsigned long)i);
        b[i] = mk(name, scripts[i]);
    }
    p = par_of("par", b, n, NULL, NULL);
    add(e, p);
    r = env_run(e, "par", in);
    am2z_value_release(in);
    return r;
}

static void test_parallel_appends(void) {
    static const edit a[] = {{E_APPEND, "items", "\"A\""}, {0, NULL, NULL}};
    static const edit b[] = {{E_APPEND, "items", "\"B\""}, {0, NULL, NULL}};
    static const edit c[] = {{E_APPEND, "items", "\"C\""}, {E_APPEND, "items", "\"C2\""}, {0, NULL, NULL}};
    static const edit x[] = {{E_APPEND, "log", "\"a\""}, {0, NULL, NULL}};
    static const edit y[] = {{E_APPEND, "log", "\"b\""}, {E_SET, "tags", "[\"t1\"]"}, {0, NULL, NULL}};
    static const edit z[] = {{E_SET, "tags", "[\"t2\"]"}, {0, NULL, NULL}};
    const edit *s1[3], *s2[3];
    env e;
    am2z_result r;
    am2z_value *ev;
    s1[0] = a, s1[1] = b, s1[2] = c;
    env_init(&e);
    r = run_par(&e, "{\"items\":[]}", s1, 3);
    CHECK(r.state && data_is(r.state, "{\"items\":[\"A\",\"B\",\"C\",\"C2\"]}"));
    am2z_result_clear(&r);
    ev = ev_all(&e.log, "merge:conflict");
    CHECK_INT(am2z_value_len(ev), 0);
    am2z_value_release(ev);
    ev = ev_all(&e.log, "processor:completed");
    CHECK_INT(am2z_value_len(ev), 3);
    CHECK(json_is(am2z_value_at(ev, 1), "{\"processorName\":\"b1\",\"parallelName\":\"par\","
                                        "\"parallelPosition\":2,\"totalProcessors\":3,\"stepCompleted\":true}"));
    am2z_value_release(ev);
    env_free(&e);

    /* a shared prefix is kept once; a new array added by two branches collects both */
    s2[0] = x, s2[1] = y, s2[2] = z;
    env_init(&e);
    r = run_par(&e, "{\"log\":[\"x\"]}", s2, 3);
    CHECK(r.state && data_is(r.state, "{\"log\":[\"x\",\"a\",\"b\"],\"tags\":[\"t1\",\"t2\"]}"));
    am2z_result_clear(&r);
    env_free(&e);
}

static void test_parallel_nested_edits(void) {
    static const edit a[] = {{E_SET, "user.address.city", "\"Y\""}, {0, NULL, NULL}};
    static const edit b[] = {{E_SET, "user.name", "\"bob\""}, {E_SET, "user.prefs.theme", "\"dark\""},
                             {0, NULL, NULL}};
    static const edit c[] = {{E_SET, "n", "2"}, {E_SET, "user.prefs.lang", "\"fr\""}, {0, NULL, NULL}};
    const edit *s[3];
    env e;
    am2z_result r;
    am2z_value *ev;
    s[0] = a, s[1] = b, s[2] = c;
    env_init(&e);
    r = run_par(&e, "{\"user\":{\"name\":\"al\",\"address\":{\"city\":\"X\",\"zip\":\"1\"}},\"n\":1}", s, 3);
    CHECK(r.state && data_is(r.state, "{\"user\":{\"name\":\"bob\",\"address\":{\"city\":\"Y\",\"zip\":\"1\"},"
                                      "\"prefs\":{\"theme\":\"dark\",\"lang\":\"fr\"}},\"n\":2}"));
    am2z_result_clear(&r);
    ev = ev_all(&e.log, "merge:conflict");
    CHECK_INT(am2z_value_len(ev), 0);
    am2z_value_release(ev);
    env_free(&e);
}

static void test_parallel_conflicts(void) {
    static const edit a[] = {{E_SET, "status", "\"x\""}, {E_SET, "same", "7"}, {0, NULL, NULL}};
    static const edit b[] = {{E_SET, "status", "\"y\""}, {E_SET, "same", "7"}, {E_SET, "o.k", "1"},
                             {0, NULL, NULL}};
    static const edit c[] = {{E_SET, "status", "\"z\""}, {E_SET, "o.k", "{\"deep\":true}"}, {0, NULL, NULL}};
    static const edit rm[] = {{E_REMOVE, "temp", NULL}, {0, NULL, NULL}};
    static const edit ch[] = {{E_SET, "temp", "5"}, {0, NULL, NULL}};
    static const edit add[] = {{E_SET, "/k~1~0", "true"}, {0, NULL, NULL}};
    const edit *s[3];
    env e;
    am2z_result r;
    am2z_value *ev;
    s[0] = a, s[1] = b, s[2] = c;
    env_init(&e);
    r = run_par(&e, "{\"status\":\"new\",\"same\":0,\"o\":{}}", s, 3);
    CHECK(r.state && data_is(r.state, "{\"status\":\"z\",\"same\":7,\"o\":{\"k\":{\"deep\":true}}}"));
    am2z_result_clear(&r);
    ev = ev_all(&e.log, "merge:conflict");
    CHECK(json_is(ev, "[{\"processorName\":\"par\",\"path\":\"/status\",\"values\":[\"x\",\"y\",\"z\"],"
                      "\"resolved\":\"z\"},"
                      "{\"processorName\":\"par\",\"path\":\"/o/k\",\"values\":[1,{\"deep\":true}],"
                      "\"resolved\":{\"deep\":true}}]"));
    am2z_value_release(ev);
    env_free(&e);

    /* removal: applied; removal vs change of the same member is a conflict (last wins) */
    s[0] = rm, s[1] = add;
    env_init(&e);
    r = run_par(&e, "{\"temp\":1,\"keep\":2}", s, 2);
    CHECK(r.state && data_is(r.state, "{\"keep\":2,\"k/~\":true}"));
    am2z_result_clear(&r);
    ev = ev_all(&e.log, "merge:conflict");
    CHECK_INT(am2z_value_len(ev), 0);
    am2z_value_release(ev);
    env_free(&e);

    s[0] = ch, s[1] = rm;
    env_init(&e);
    r = run_par(&e, "{\"temp\":1}", s, 2);
    CHECK(r.state && data_is(r.state, "{}"));
    am2z_result_clear(&r);
    ev = ev_all(&e.log, "merge:conflict");
    CHECK(json_is(ev, "[{\"processorName\":\"par\",\"path\":\"/temp\",\"values\":[5,null],\"resolved\":null}]"));
    am2z_value_release(ev);
    env_free(&e);

    s[0] = rm, s[1] = ch;
    env_init(&e);
    r = run_par(&e, "{\"temp\":1}", s, 2);
    CHECK(r.state && data_is(r.state, "{\"temp\":5}"));
    am2z_result_clear(&r);
    ev = ev_all(&e.log, "merge:conflict");
    CHECK_INT(am2z_value_len(ev), 1);
    am2z_value_release(ev);
    env_free(&e);
}

/* The merge function directly: metadata is the input's, replacement arrays, errors. */
static void test_merge_3way_direct(void) {
    am2z_state *in = am2z_state_parse("s1", "{\"a\":[1,2,3],\"b\":1}", AM2Z_NTS, NULL);
    am2z_state *o1 = am2z_state_bump(am2z_value_set(am2z_value_retain(in), "a", J("[3,2,1]")));
    am2z_state *o2 = am2z_value_set(am2z_state_bump(am2z_value_retain(in)), "b", am2z_value_int(2));
    am2z_value *notobj = am2z_value_int(3);
    const am2z_state *outs[2];
    am2z_result r;
    outs[0] = o1, outs[1] = o2;
    r = am2z_merge_3way(NULL, in, outs, 2, NULL); /* NULL ctx: conflicts are not reported */
    CHECK(r.state && data_is(r.state, "{\"a\":[3,2,1],\"b\":2}"));
    CHECK_INT(am2z_state_version(r.state), am2z_state_version(in));
    am2z_result_clear(&r);
    r = am2z_merge_3way(NULL, in, outs, 0, NULL);
    CHECK(r.state && am2z_value_equal(r.state, in));
    am2z_result_clear(&r);
    outs[1] = notobj;
    r = am2z_merge_3way(NULL, in, outs, 2, NULL);
    CHECK(r.error && r.error->kind == AM2Z_ERROR_VALIDATION);
    am2z_result_clear(&r);
    r = am2z_merge_3way(NULL, notobj, outs, 1, NULL);
    CHECK(r.error && r.error->kind == AM2Z_ERROR_VALIDATION);
    am2z_result_clear(&r);
    am2z_value_release(notobj);
    am2z_value_release(o1);
    am2z_value_release(o2);
    am2z_value_release(in);
}

static void test_parallel_failure(void) {
    static const edit ok[] = {{E_SET, "a", "1"}, {0, NULL, NULL}};
    static const edit f2[] = {{E_FAIL, "F2", "branch two failed"}, {0, NULL, NULL}};
    static const edit f3[] = {{E_FAIL, "F3", "branch three failed"}, {0, NULL, NULL}};
    const edit *s[3];
    env e;
    am2z_result r;
    s[0] = ok, s[1] = f2, s[2] = f3;
    env_init(&e);
    r = run_par(&e, "{}", s, 3);
    CHECK(r.state == NULL && r.error != NULL);
    if (r.error) {
        CHECK_INT(r.error->kind, AM2Z_ERROR_EXECUTION);
        CHECK_STR(r.error->processor, "par");
        CHECK_STR(r.error->message, "Processor 'par' execution failed: branch two failed");
        CHECK(r.error->cause && strcmp(r.error->cause->code, "F2") == 0);
        CHECK_STR(detail_str(r.error, "failedProcessor"), "b1");
        CHECK_INT(detail_int(r.error, "failedBranch"), 1);
        CHECK(json_is(am2z_value_get(r.error->details, "branches"),
                      "[{\"processor\":\"b0\",\"ok\":true},"
                      "{\"processor\":\"b1\",\"ok\":false,\"error\":\"branch two failed\"},"
                      "{\"processor\":\"b2\",\"ok\":false,\"error\":\"branch three failed\"}]"));
    }
    am2z_result_clear(&r);
    env_free(&e);
}

static am2z_result sum_merge(am2z_ctx *ctx, const am2z_state *input, const am2z_state *const *outputs,
                             size_t count, void *user_data) {
    int64_t total = 0;
    size_t i;
    (void)ctx;
    if (strcmp((const char *)user_data, "fail") == 0)
        return am2z_fail(am2z_error_business("MERGE", AM2Z_SEVERITY_DEFAULT, "cannot merge"));
    if (strcmp((const char *)user_data, "neither") == 0) {
        am2z_result r;
        r.state = NULL;
        r.error = NULL;
        return r;
    }
    for (i = 0; i < count; i++) total += am2z_value_get_int(outputs[i], "n", 0);
    return am2z_ok(am2z_value_set(am2z_value_retain(input), "total", am2z_value_int(total)));
}

static void test_custom_merge(void) {
    static const edit n1[] = {{E_SET, "n", "1"}, {0, NULL, NULL}};
    static const edit n2[] = {{E_SET, "n", "2"}, {0, NULL, NULL}};
    static const edit n3[] = {{E_SET, "n", "3"}, {0, NULL, NULL}};
    env e;
    am2z_processor *b[3];
    am2z_state *in = S("{\"n\":0}");
    am2z_result r;
    env_init(&e);
    b[0] = mk("n1", n1), b[1] = mk("n2", n2), b[2] = mk("n3", n3);
    add(&e, par_of("sum", kept(b, 3), 3, sum_merge, (void *)"sum"));
    add(&e, par_of("sumfail", kept(b, 3), 3, sum_merge, (void *)"fail"));
    add(&e, par_of("sumbad", kept(b, 3), 3, sum_merge, (void *)"neither"));
    am2z_processor_release(b[0]), am2z_processor_release(b[1]), am2z_processor_release(b[2]);
    r = env_run(&e, "sum", in);
    CHECK(r.state && data_is(r.state, "{\"n\":0,\"total\":6}"));
    am2z_result_clear(&r);
    r = env_run(&e, "sumfail", in);
    CHECK(r.error && strcmp(am2z_error_root_cause(r.error)->message, "cannot merge") == 0);
    if (r.error) CHECK_STR(r.error->processor, "sumfail");
    am2z_result_clear(&r);
    r = env_run(&e, "sumbad", in);
    CHECK(r.error && strstr(r.error->message, "returned neither a state nor an error") != NULL);
    am2z_result_clear(&r);
    am2z_value_release(in);
    env_free(&e);
}

/* ---- router ---------------------------------------------------------------------------- */

static int g_router_marker;
static const char *select_kind(const am2z_state *input, void *user_data) {
    CHECK(user_data == (void *)&g_router_marker);
    return am2z_value_get_string(input, "kind", NULL);
}

static void test_router(void) {
    static const edit ta[] = {{E_SET, "by", "\"text\""}, {0, NULL, NULL}};
    static const edit tb[] = {{E_SET, "by", "\"image\""}, {0, NULL, NULL}};
    static const edit fb[] = {{E_SET, "by", "\"fallback\""}, {0, NULL, NULL}};
    static const edit bad[] = {{E_FAIL, "VIDEO", "no codec"}, {0, NULL, NULL}};
    env e;
    am2z_processor *a = mk("text", ta), *b = mk("image", tb), *f = mk("other", fb), *v = mk("video", bad);
    am2z_processor *r1, *r2, *r3;
    am2z_processor *const *kids;
    am2z_route routes[4];
    am2z_router_desc d;
    am2z_state *in;
    am2z_result r;
    env_init(&e);
    /* every router below consumes its targets: each gets references of its own */
    routes[0].key = "text", routes[0].target = am2z_processor_retain(a);
    routes[1].key = "image", routes[1].target = am2z_processor_retain(b);
    routes[2].key = "video", routes[2].target = am2z_processor_retain(v);
    memset(&d, 0, sizeof d);
    d.name = "route";
    d.select = select_kind;
    d.user_data = &g_router_marker;
    routes[3].key = NULL, routes[3].target = am2z_processor_retain(f); /* the fallback */
    d.routes = routes;
    d.count = 4;
    r1 = am2z_router_new(&d, NULL);
    CHECK(r1 != NULL);
    if (r1) {
        CHECK_STR(am2z_processor_desc_of(r1)->description, "Router: text | image | video | *");
        CHECK_INT(am2z__processor_children(r1, &kids), 4);
        CHECK(kids[3] == f);
    }
    d.name = "strict";
    d.count = 2;
    routes[0].target = am2z_processor_retain(a), routes[1].target = am2z_processor_retain(b);
    r2 = am2z_router_new(&d, NULL);
    add(&e, r1);
    add(&e, r2);

    in = S("{\"kind\":\"image\"}");
    r = env_run(&e, "route", in);
    CHECK(r.state && data_is(r.state, "{\"kind\":\"image\",\"by\":\"image\"}"));
    am2z_result_clear(&r);
    am2z_value_release(in);

    in = S("{\"kind\":\"audio\"}");
    r = env_run(&e, "route", in);
    CHECK(r.state && data_is(r.state, "{\"kind\":\"audio\",\"by\":\"fallback\"}"));
    am2z_result_clear(&r);
    r = env_run(&e, "strict", in);
    CHECK(r.error != NULL);
    if (r.error) {
        CHECK_STR(r.error->message, "Processor 'strict' execution failed: No route found for: audio");
        CHECK_STR(am2z_error_root_cause(r.error)->message, "No route found for: audio");
        CHECK_STR(detail_str(r.error, "routeKey"), "audio");
        CHECK_INT(r.error->retryable, 0);
    }
    am2z_result_clear(&r);
    am2z_value_release(in);

    /* NULL key: fallback, or "no key" */
    in = S("{}");
    r = env_run(&e, "route", in);
    CHECK(r.state && strcmp(am2z_value_get_string(r.state, "by", ""), "fallback") == 0);
    am2z_result_clear(&r);
    r = env_run(&e, "strict", in);
    CHECK(r.error && strcmp(am2z_error_root_cause(r.error)->message, "No route found for: (no key)") == 0);
    am2z_result_clear(&r);
    am2z_value_release(in);

    /* the target's error is the router's result, unchanged */
    in = S("{\"kind\":\"video\"}");
    r = env_run(&e, "route", in);
    CHECK(r.error != NULL);
    if (r.error) {
        CHECK_STR(r.error->code, "VIDEO");
        CHECK_STR(r.error->processor, "video");
    }
    am2z_result_clear(&r);
    am2z_value_release(in);

    /* invalid descs */
    d.name = "dup";
    routes[1].key = "text";
    routes[0].target = am2z_processor_retain(a), routes[1].target = am2z_processor_retain(b);
    CHECK(am2z_router_new(&d, NULL) == NULL);
    CHECK_STR(am2z_status_detail(), "router 'dup': two routes with the same key");
    d.name = "two-fallbacks";
    routes[0].key = NULL, routes[1].key = NULL;
    routes[0].target = am2z_processor_retain(a), routes[1].target = am2z_processor_retain(b);
    CHECK(am2z_router_new(&d, NULL) == NULL);
    CHECK_STR(am2z_status_detail(), "router 'two-fallbacks': two fallback routes (key NULL)");
    d.name = "empty";
    d.count = 0;
    CHECK(am2z_router_new(&d, NULL) == NULL); /* nothing to route to */
    d.name = "only-fallback";
    d.count = 1;
    routes[0].target = am2z_processor_retain(f);
    r3 = am2z_router_new(&d, NULL);
    CHECK(r3 != NULL);
    if (r3) CHECK_STR(am2z_processor_desc_of(r3)->description, "Router: *");
    am2z_processor_release(r3);
    am2z_processor_release(a), am2z_processor_release(b), am2z_processor_release(f), am2z_processor_release(v);
    env_free(&e);
}

/* ---- batch ----------------------------------------------------------------------------- */

static const edit dbl_n[] = {{E_MUL, "n", "2"}, {0, NULL, NULL}};

/* Fails for even n. */
static am2z_result odd_only(am2z_ctx *ctx, const am2z_state *in) {
    int64_t n = am2z_value_get_int(in, "n", 0);
    (void)ctx;
    if (n % 2 == 0) return am2z_fail(am2z_error_business("EVEN", AM2Z_SEVERITY_DEFAULT, "%d is even", (int)n));
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "ok", am2z_value_bool(1)));
}

/* Returns its input's session id as a field. */
static am2z_result session_of(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "session", am2z_value_string(am2z_state_session_id(in))));
}

static am2z_processor *mk_fn(const char *name, am2z_processor_fn fn) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    return am2z_processor_new(&d, NULL);
}

static am2z_processor *batch_of(const char *name, am2z_processor *target, const am2z_value *payloads,
                                const char *items_path, const char *results_path, am2z_batch_mode mode) {
    am2z_batch_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.target = target;
    d.payloads = payloads;
    d.items_path = items_path;
    d.results_path = results_path;
    d.mode = mode;
    return am2z_batch_new(&d, NULL);
}

static void test_batch_build_time(void) {
    env e;
    am2z_processor *t = mk("double", dbl_n), *b;
    am2z_processor *const *kids;
    am2z_value *payloads = J("[{\"n\":1},{\"n\":2},{\"n\":3}]");
    am2z_state *in = S("{\"x\":1}");
    am2z_result r;
    env_init(&e);
    b = batch_of("bt", t, payloads, NULL, NULL, AM2Z_BATCH_DEFAULT);
    am2z_value_release(payloads); /* the batch keeps its own reference */
    CHECK(b != NULL);
    if (b) {
        CHECK_STR(am2z_processor_desc_of(b)->description, "Batch execution: double x3");
        CHECK_INT(am2z__processor_children(b, &kids), 1);
        CHECK(kids[0] == t);
    }
    add(&e, b);
    r = env_run(&e, "bt", in);
    CHECK(r.state && data_is(r.state, "{\"x\":1,\"results\":[{\"n\":2},{\"n\":4},{\"n\":6}]}"));
    am2z_result_clear(&r);
    am2z_value_release(in);
    env_free(&e);
}

static void test_batch_run_time(void) {
    env e;
    am2z_processor *t = mk("double", dbl_n), *s = mk_fn("sess", session_of);
    am2z_state *in = S("{\"order\":{\"id\":7,\"items\":[{\"n\":5},{\"n\":6}]}}");
    am2z_state *in2;
    am2z_result r;
    env_init(&e);
    add(&e, batch_of("inplace", am2z_processor_retain(t), NULL, "order.items", NULL, AM2Z_BATCH_DEFAULT));
    add(&e, batch_of("aside", t, NULL, "order.items", "/order/doubled", AM2Z_BATCH_FAIL_FAST));
    add(&e, batch_of("sessions", s, NULL, "items", NULL, AM2Z_BATCH_DEFAULT));
    r = env_run(&e, "inplace", in);
    CHECK(r.state && data_is(r.state, "{\"order\":{\"id\":7,\"items\":[{\"n\":10},{\"n\":12}]}}"));
    am2z_result_clear(&r);
    r = env_run(&e, "aside", in);
    CHECK(r.state && data_is(r.state, "{\"order\":{\"id\":7,\"items\":[{\"n\":5},{\"n\":6}],"
                                      "\"doubled\":[{\"n\":10},{\"n\":12}]}}"));
    am2z_result_clear(&r);

    /* plain payloads run in the parent's session; states keep their metadata */
    in2 = am2z_state_parse("s1", "{\"items\":[{\"n\":1},{\"n\":2,\"metadata\":{\"version\":3,"
                                 "\"sessionId\":\"other\",\"createdAt\":1,\"lastUpdated\":1}}]}", AM2Z_NTS, NULL);
    r = env_run(&e, "sessions", in2);
    CHECK(r.state != NULL);
    if (r.state) {
        CHECK_STR(am2z_value_get_string(r.state, "items[0].session", ""), "s1");
        CHECK(am2z_value_get(r.state, "items[0].metadata") == NULL);
        CHECK_STR(am2z_value_get_string(r.state, "items[1].session", ""), "other");
        CHECK(am2z_value_get(r.state, "items[1].metadata") != NULL);
    }
    am2z_result_clear(&r);
    am2z_value_release(in2);
    am2z_value_release(in);
    env_free(&e);
}

static void test_batch_modes(void) {
    env e;
    am2z_processor *t = mk_fn("odd", odd_only);
    am2z_state *in = S("{\"items\":[{\"n\":1},{\"n\":2},{\"n\":3},{\"n\":4}]}");
    am2z_result r;
    const am2z_value *errs;
    env_init(&e);
    add(&e, batch_of("fast", am2z_processor_retain(t), NULL, "items", NULL, AM2Z_BATCH_DEFAULT));
    add(&e, batch_of("settle", t, NULL, "items", NULL, AM2Z_BATCH_SETTLE_ALL));

    r = env_run(&e, "fast", in);
    CHECK(r.error != NULL);
    if (r.error) {
        CHECK_STR(r.error->processor, "fast");
        CHECK_STR(r.error->message, "Processor 'fast' execution failed: 2 is even");
        CHECK_INT(detail_int(r.error, "batchIndex"), 1); /* the first failure by index */
        CHECK_STR(detail_str(r.error, "failedProcessor"), "odd");
    }
    am2z_result_clear(&r);

    r = env_run(&e, "settle", in);
    CHECK(r.state != NULL);
    if (r.state) {
        CHECK(json_is(am2z_value_get(r.state, "items"),
                      "[{\"n\":1,\"ok\":true},null,{\"n\":3,\"ok\":true},null]"));
        errs = am2z_value_get(r.state, "itemsErrors");
        CHECK_INT(am2z_value_len(errs), 2);
        CHECK_INT(am2z_value_get_int(errs, "[0].index", -1), 1);
        CHECK_STR(am2z_value_get_string(errs, "[0].error.message", ""), "2 is even");
        CHECK_STR(am2z_value_get_string(errs, "[0].error.code", ""), "EVEN");
        CHECK_INT(am2z_value_get_int(errs, "[1].index", -1), 3);
    }
    am2z_result_clear(&r);
    am2z_value_release(in);

    /* all succeed: the errors list is there and empty */
    in = S("{\"items\":[{\"n\":1}]}");
    r = env_run(&e, "settle", in);
    CHECK(r.state && data_is(r.state, "{\"items\":[{\"n\":1,\"ok\":true}],\"itemsErrors\":[]}"));
    am2z_result_clear(&r);
    am2z_value_release(in);
    env_free(&e);
}

static void test_batch_bad_input(void) {
    env e;
    am2z_processor *t = mk("double", dbl_n);
    am2z_value *bad = J("[{\"n\":1},3]"), *empty = J("[]"), *good = J("[{}]");
    const char *inputs[] = {"{}", "{\"items\":{}}", "{\"items\":[{\"n\":1},2]}", "{\"items\":\"x\"}"};
    am2z_state *in;
    am2z_result r;
    size_t i;
    env_init(&e);
    add(&e, batch_of("bt", am2z_processor_retain(t), NULL, "items", NULL, AM2Z_BATCH_DEFAULT));
    for (i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        in = S(inputs[i]);
        r = env_run(&e, "bt", in);
        CHECK(r.error && r.error->kind == AM2Z_ERROR_VALIDATION);
        am2z_result_clear(&r);
        am2z_value_release(in);
    }
    in = S("{\"items\":[]}");
    r = env_run(&e, "bt", in);
    CHECK(r.state && data_is(r.state, "{\"items\":[]}"));
    am2z_result_clear(&r);
    am2z_value_release(in);

    /* invalid descs */
    /* each failing constructor consumed its reference to t (LeakSanitizer checks) */
    CHECK(am2z_batch_new(NULL, NULL) == NULL);
    CHECK(batch_of("b1", NULL, NULL, "items", NULL, AM2Z_BATCH_DEFAULT) == NULL);   /* no target */
    CHECK(batch_of("b2", am2z_processor_retain(t), NULL, NULL, NULL, AM2Z_BATCH_DEFAULT) == NULL); /* no source */
    CHECK_STR(am2z_status_detail(), "batch 'b2': needs exactly one of payloads and items_path");
    CHECK(batch_of("b3", am2z_processor_retain(t), good, "items", NULL, AM2Z_BATCH_DEFAULT) == NULL); /* two */
    CHECK(batch_of("b4", am2z_processor_retain(t), bad, NULL, NULL, AM2Z_BATCH_DEFAULT) == NULL); /* non-object */
    CHECK(batch_of("b5", am2z_processor_retain(t), empty, NULL, NULL, AM2Z_BATCH_DEFAULT) == NULL); /* empty */
    CHECK(batch_of("b6", am2z_processor_retain(t), NULL, "items", "out[0]", AM2Z_BATCH_DEFAULT) == NULL);
    CHECK(batch_of("b7", am2z_processor_retain(t), NULL, "items", NULL, (am2z_batch_mode)9) == NULL);
    CHECK(batch_of("b 8", t, NULL, "items", NULL, AM2Z_BATCH_DEFAULT) == NULL);
    CHECK_STR(am2z_status_detail(), "batch 'b 8': name has a character outside [A-Za-z0-9_.-]");
    am2z_value_release(bad);
    am2z_value_release(empty);
    am2z_value_release(good);
    env_free(&e);
}

/* ---- nesting --------------------------------------------------------------------------- */

static int g_depth_seen[16];
static am2z_result depth_probe(am2z_ctx *ctx, const am2z_state *in) {
    int d = am2z_ctx_meta(ctx)->call_depth;
    if (d >= 0 && d < 16) __atomic_add_fetch(&g_depth_seen[d], 1, __ATOMIC_RELAXED);
    return am2z_ok(am2z_value_append(am2z_value_retain(in), "trail", am2z_value_int(d)));
}

static void test_nesting(void) {
    /* outer = chain(plus1, par(inner = chain(times2, plus10), probe), plus1) */
    env e;
    am2z_processor *p1 = mk("plus1", inc1), *t2 = mk("times2", dbl), *a10 = mk("plus10", add10);
    am2z_processor *probe = mk_fn("probe", depth_probe);
    am2z_processor *steps[3], *inner, *par, *outer, *branches[2];
    am2z_state *in = S("{\"count\":1,\"trail\":[]}");
    am2z_result r;
    env_init(&e);
    steps[0] = t2, steps[1] = a10;
    inner = chain_of("inner", steps, 2);
    branches[0] = inner, branches[1] = probe;
    par = par_of("fan", branches, 2, NULL, NULL);
    steps[0] = p1, steps[1] = par, steps[2] = am2z_processor_retain(p1); /* used twice */
    outer = chain_of("outer", steps, 3);
    add(&e, outer);
    memset(g_depth_seen, 0, sizeof g_depth_seen);
    r = env_run(&e, "outer", in);
    /* (1+1)*2+10 = 14 from the inner chain, then +1; probe ran at depth 2 */
    CHECK(r.state && data_is(r.state, "{\"count\":15,\"trail\":[2]}"));
    CHECK_INT(g_depth_seen[2], 1);
    am2z_result_clear(&r);

    /* a failure deep inside names the path it took */
    am2z_value_release(in);
    in = S("{\"count\":\"x\",\"trail\":5}"); /* probe cannot append to a number */
    r = env_run(&e, "outer", in);
    CHECK(r.error != NULL);
    if (r.error) {
        CHECK_STR(r.error->processor, "outer");
        CHECK_STR(detail_str(r.error, "failedProcessor"), "fan");
        CHECK(r.error->cause && strcmp(r.error->cause->processor, "fan") == 0);
        if (r.error->cause) CHECK_STR(detail_str(r.error->cause, "failedProcessor"), "probe");
    }
    am2z_result_clear(&r);
    am2z_value_release(in);
    env_free(&e);
}

/* Composites nest through ctx calls, so the runtime's depth limit (10) applies: ten
   chains around a step put it at depth 10 (allowed), eleven at 11 (refused). */
static void test_nesting_depth_limit(void) {
    env e;
    am2z_processor *cur = mk("leaf", inc1), *next;
    am2z_state *in = S("{\"count\":0}");
    am2z_result r;
    char name[32];
    int i;
    env_init(&e);
    for (i = 1; i <= 11; i++) {
        snprintf(name, sizeof name, "nest%d", i);
        next = chain_of(name, &cur, 1);
        cur = next;
        if (i == 10) add(&e, am2z_processor_retain(cur)); /* nest11 still wraps it */
    }
    add(&e, cur);
    r = env_run(&e, "nest10", in);
    CHECK(r.state && am2z_value_get_int(r.state, "count", -1) == 1);
    am2z_result_clear(&r);
    r = env_run(&e, "nest11", in);
    CHECK(r.error != NULL);
    if (r.error) {
        CHECK_INT(am2z_error_root_cause(r.error)->kind, AM2Z_ERROR_CALL_DEPTH);
        CHECK_STR(r.error->processor, "nest11");
    }
    am2z_result_clear(&r);
    am2z_value_release(in);
    env_free(&e);
}

static void test_parallel_wide(void) {
    /* 40 branches, each appending its own element: all kept, in branch order */
    static edit scripts[40][2];
    static char json[40][8];
    am2z_processor *b[40], *p;
    am2z_state *in = S("{\"xs\":[]}");
    am2z_result r;
    env e;
    char name[32];
    size_t i;
    env_init(&e);
    for (i = 0; i < 40; i++) {
        snprintf(json[i], sizeof json[i], "%d", (int)i);
        scripts[i][0].op = E_APPEND, scripts[i][0].path = "xs", scripts[i][0].json = json[i];
        scripts[i][1].op = 0;
        snprintf(name, sizeof name, "w%lu", (unsigned long)i);
        b[i] = mk(name, scripts[i]);
    }
    p = par_of("wide", b, 40, NULL, NULL);
    add(&e, p);
    r = env_run(&e, "wide", in);
    CHECK_INT(am2z_value_len(am2z_value_get(r.state, "xs")), 40);
    for (i = 0; i < 40; i++)
        CHECK_INT(am2z_value_as_int(am2z_value_at(am2z_value_get(r.state, "xs"), i), -1), (int64_t)i);
    am2z_result_clear(&r);
    am2z_value_release(in);
    env_free(&e);
}

static void run_composition(void) {
    T_RUN(test_ill_formed_results);
    T_RUN(test_chain_success);
    T_RUN(test_chain_failure);
    T_RUN(test_parallel_appends);
    T_RUN(test_parallel_nested_edits);
    T_RUN(test_parallel_conflicts);
    T_RUN(test_parallel_failure);
    T_RUN(test_custom_merge);
    T_RUN(test_router);
    T_RUN(test_batch_build_time);
    T_RUN(test_batch_run_time);
    T_RUN(test_batch_modes);
    T_RUN(test_batch_bad_input);
    T_RUN(test_nesting);
    T_RUN(test_nesting_depth_limit);
    T_RUN(test_parallel_wide);
}

int main(void) {
    T_RUN(test_processor_new_validation);
    T_RUN(test_retry_delay);
#ifndef AM2Z_NO_THREADS
    T_RUN(test_retry_delay_threads);
#endif
    T_RUN(test_timeout_derivation);
    T_RUN(test_ctx_functions);
    T_RUN(test_chain_invalid);
    T_RUN(test_consume_null_children);
    T_RUN(test_merge_3way_direct);
    g_local = 0;
    run_composition();
#ifndef AM2Z_NO_THREADS
    g_local = 1;
    fprintf(stderr, "(composition again on the local runtime)\n");
    run_composition();
#endif
    return t_done();
}
