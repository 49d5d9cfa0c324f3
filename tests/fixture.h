/* fixture.h - what several test programs need from am2z itself: a silent logger, n
   submissions and their wait; with am2z_resp.h connections to the test's redis-server,
   one-line commands and a way to empty it (with redis_harness.h too: the failover tests'
   worker + producer pair and chaos callers). Include after am2z.h / am2z_resp.h (and
   after t.h, redis_harness.h, proc.h for what needs them). */
#ifndef AM2Z_TEST_FIXTURE_H
#define AM2Z_TEST_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A logger that writes nothing; release it with am2z_logger_release. */
static inline am2z_logger *fx_quiet(void) {
    am2z_logger_desc d;
    memset(&d, 0, sizeof d);
    d.sink = AM2Z_SINK_SILENT;
    return am2z_logger_new(&d, NULL);
}

/* Submits n executions of processor proc with input json (parsed each time), in session
   sid (NULL: none), into e[0..n) (owned by the caller: fx_wait_all frees them). */
static inline void fx_submit_n(am2z_runtime *rt, const char *proc, am2z_execution **e, int n, const char *sid,
                               const char *json) {
    am2z_submit_desc d;
    int i;
    memset(&d, 0, sizeof d);
    d.session_id = sid;
    for (i = 0; i < n; i++) {
        am2z_state *in = am2z_state_parse(NULL, json, strlen(json), NULL);
        e[i] = am2z_runtime_submit_with(rt, proc, in, &d, NULL);
        am2z_value_release(in);
    }
}

/* Waits up to ms for each of e[0..n), printing the errors, and frees them (e[i] NULL
   after); the count that ended without an error. */
static inline int fx_wait_all(am2z_execution **e, int n, int64_t ms) {
    int i, ok = 0;
    for (i = 0; i < n; i++) {
        am2z_outcome out;
        memset(&out, 0, sizeof out);
        if (e[i] && am2z_execution_wait(e[i], ms, &out) == AM2Z_STATUS_OK && !out.error) ok++;
        else if (out.error) fprintf(stderr, "job %d: %s\n", i, out.error->message);
        am2z_outcome_clear(&out);
        am2z_execution_free(e[i]);
        e[i] = NULL;
    }
    return ok;
}

#ifdef AM2Z_RESP_H_INCLUDED
/* *d for a queue runtime on the redis-server on 127.0.0.1:port with concurrency worker
   threads (AM2Z_QUEUE_NO_WORKERS: a producer); logger borrowed (NULL: the default); every
   other field zero (its default), for the caller to set. */
static inline void fx_queue_desc(am2z_queue_desc *d, int port, int concurrency, am2z_logger *logger) {
    memset(d, 0, sizeof *d);
    d->redis.host = "127.0.0.1";
    d->redis.port = port;
    d->concurrency = concurrency;
    d->logger = logger;
}

/* A queue runtime with fx_queue_desc's settings. */
static inline am2z_runtime *fx_queue_rt(int port, int concurrency, am2z_logger *logger) {
    am2z_queue_desc d;
    fx_queue_desc(&d, port, concurrency, logger);
    return am2z_queue_runtime_new(&d, NULL);
}

/* A connected client of the redis-server on 127.0.0.1:port with these connect and
   command timeouts (0: the defaults), or NULL. */
static inline am2z_redis *fx_conn_timeout(int port, int64_t connect_ms, int64_t command_ms) {
    am2z_redis_desc d;
    am2z_redis *r;
    memset(&d, 0, sizeof d);
    d.host = "127.0.0.1";
    d.port = port;
    d.connect_timeout_ms = connect_ms;
    d.command_timeout_ms = command_ms;
    r = am2z_redis_new(&d, NULL);
    if (r && am2z_redis_connect(r) != AM2Z_STATUS_OK) {
        am2z_redis_free(r);
        r = NULL;
    }
    return r;
}

/* A connected client of the redis-server on 127.0.0.1:port, or NULL. */
static inline am2z_redis *fx_conn(int port) { return fx_conn_timeout(port, 0, 0); }

/* The port the server on r's connection listens on (CONFIG GET port), 0 on failure. */
static inline int fx_server_port(am2z_redis *r) {
    am2z_reply rep;
    int port = 0;
    memset(&rep, 0, sizeof rep);
    if (am2z_redis_command(r, &rep, "CONFIG GET port") == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY &&
        rep.len == 2)
        port = atoi(am2z_reply_str(am2z_reply_at(&rep, 1)));
    am2z_reply_clear(&rep);
    return port;
}

/* 1 when the replica on 127.0.0.1:port has its link to its master up. */
static inline int fx_replica_up(int port) {
    am2z_redis *r = fx_conn_timeout(port, 1000, 2000);
    am2z_reply rep;
    int up = 0;
    memset(&rep, 0, sizeof rep);
    if (r && am2z_redis_command(r, &rep, "INFO replication") == AM2Z_STATUS_OK)
        up = strstr(am2z_reply_str(&rep), "master_link_status:up") != NULL;
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return up;
}

/* The integer (or number in a string) a command on the server at port answers, -1 on
   failure, 0 for nil. */
static inline long long fx_redis_num(int port, const char *fmt, const char *a, const char *b) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    long long v = -1;
    memset(&rep, 0, sizeof rep);
    if (!r) return -1;
    if (am2z_redis_command(r, &rep, fmt, a, b) == AM2Z_STATUS_OK)
        v = rep.type == AM2Z_REPLY_INTEGER ? rep.integer : rep.type == AM2Z_REPLY_NIL ? 0
            : strtoll(am2z_reply_str(&rep), NULL, 10);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return v;
}

/* One command without arguments on the server at port, its answer dropped. */
static inline void fx_redis_do(int port, const char *cmd) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    if (!r) return;
    am2z_redis_command(r, &rep, cmd);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
}

/* The calls= of a command in INFO commandstats (0 when it never ran). */
static inline long long fx_cmd_calls(am2z_redis *r, const char *cmd) {
    am2z_reply rep;
    char key[64];
    const char *p;
    long long n = 0;
    memset(&rep, 0, sizeof rep);
    snprintf(key, sizeof key, "cmdstat_%s:calls=", cmd);
    if (am2z_redis_command(r, &rep, "INFO commandstats") == AM2Z_STATUS_OK && (p = strstr(am2z_reply_str(&rep), key)))
        n = strtoll(p + strlen(key), NULL, 10);
    am2z_reply_clear(&rep);
    return n;
}

/* FLUSHALL, so each test case starts from an empty server. */
static inline void fx_flushall(int port) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    if (!r) return;
    am2z_redis_command(r, &rep, "FLUSHALL");
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
}
#endif

#if defined(AM2Z_RESP_H_INCLUDED) && defined(AM2Z_REDIS_HARNESS_H)
#include <pthread.h>

/* The failover tests' pair of queue runtimes on qd (its concurrency overwritten): a worker
   with 2 threads running processor name (fn, timeout_ms) and a producer that declared its
   queue. 1 when both are up; 0 (a failed case, nothing left to free) otherwise. */
static inline int fx_worker_producer(am2z_queue_desc *qd, const char *name, am2z_processor_fn fn,
                                     int64_t timeout_ms, am2z_runtime **worker, am2z_runtime **producer) {
    am2z_processor_desc pd;
    qd->concurrency = 2;
    *worker = am2z_queue_runtime_new(qd, NULL);
    qd->concurrency = AM2Z_QUEUE_NO_WORKERS;
    *producer = am2z_queue_runtime_new(qd, NULL);
    if (!*worker || !*producer) {
        T_FAIL_("runtime: %s", am2z_status_detail());
        am2z_runtime_free(*worker);
        am2z_runtime_free(*producer);
        *worker = *producer = NULL;
        return 0;
    }
    memset(&pd, 0, sizeof pd);
    pd.name = name;
    pd.fn = fn;
    pd.timeout_ms = timeout_ms;
    CHECK_INT(am2z_runtime_register(*worker, am2z_processor_new(&pd, NULL)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_queue_declare(*producer, name, NULL), AM2Z_STATUS_OK);
    return 1;
}

/* Chaos callers, for the failover tests: FX_CALLERS threads that execute processor proc
   on rt in a loop, call k of caller i with the input {"n": i * 1000000 + k}, and record
   every call (start, end, right / error / wrong), so the test can count calls lost (never
   returned), wrong and failed around its failover. check says whether out is the right
   result for n. Between a failed call and the next: 20 ms (no spinning while Redis is
   away). */
#define FX_CALLERS 3
typedef struct fx_call {
    long long start_ms, end_ms; /* monotonic; end_ms (atomic) 0 while the call runs */
    int ok;                     /* 1 right result, 0 error, -1 wrong result */
    char err[48];               /* the error's name */
} fx_call;
struct fx_callers;
typedef struct fx_caller_arg { struct fx_callers *c; int id; } fx_caller_arg;
typedef struct fx_callers {
    am2z_runtime *rt;           /* borrowed */
    const char *proc;           /* borrowed */
    int (*check)(const am2z_state *out, int64_t n);
    const char *verbose_env;    /* when this variable is set, every error is printed */
    fx_call *calls;             /* borrowed array of max records */
    int max;
    int ncalls, stop, done;     /* atomic */
    int started;
    pthread_t th[FX_CALLERS];
    fx_caller_arg args[FX_CALLERS];
} fx_callers;

static inline long long fx_now_ms(void) { return (long long)(am2z_monotonic_ns() / 1000000); }

static inline void *fx_caller_main(void *arg) {
    fx_caller_arg *a = (fx_caller_arg *)arg;
    fx_callers *c = a->c;
    int64_t base = (int64_t)a->id * 1000000;
    while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
        int k = __atomic_fetch_add(&c->ncalls, 1, __ATOMIC_ACQ_REL);
        int64_t n = base + k;
        fx_call *r = &c->calls[k];
        am2z_state *in;
        am2z_outcome out;
        if (k >= c->max) break;
        in = am2z_state_new("t", am2z_value_set(am2z_value_object(), "n", am2z_value_int(n)), NULL);
        r->start_ms = fx_now_ms();
        out = am2z_runtime_execute(c->rt, c->proc, in);
        if (!out.error) {
            r->ok = c->check(out.state, n) ? 1 : -1;
        } else {
            r->ok = 0;
            snprintf(r->err, sizeof r->err, "%s", out.error->name ? out.error->name : "?");
            if (c->verbose_env && getenv(c->verbose_env))
                fprintf(stderr, "  %lld %s: %s\n", fx_now_ms(), out.error->name, out.error->message);
        }
        __atomic_store_n(&r->end_ms, fx_now_ms(), __ATOMIC_RELEASE); /* publishes the record */
        am2z_outcome_clear(&out);
        am2z_value_release(in);
        if (!r->ok) t_redis_sleep_ms(20);
    }
    __atomic_add_fetch(&c->done, 1, __ATOMIC_ACQ_REL);
    return NULL;
}

/* Starts the callers of proc on rt into calls[max] (borrowed, zeroed); their errors are
   printed when the variable verbose_env is set. */
static inline void fx_callers_start(fx_callers *c, am2z_runtime *rt, const char *proc,
                                    int (*check)(const am2z_state *, int64_t), fx_call *calls, int max,
                                    const char *verbose_env) {
    int i;
    memset(c, 0, sizeof *c);
    c->rt = rt;
    c->proc = proc;
    c->check = check;
    c->calls = calls;
    c->max = max;
    c->verbose_env = verbose_env;
    for (i = 0; i < FX_CALLERS; i++) {
        c->args[i].c = c;
        c->args[i].id = i + 1;
        c->started += pthread_create(&c->th[c->started], NULL, fx_caller_main, &c->args[i]) == 0;
    }
}

/* Calls begun at or after t (monotonic ms) that returned the right result. */
static inline int fx_callers_ok_after(const fx_callers *c, long long t) {
    int i, n = 0, total = __atomic_load_n(&c->ncalls, __ATOMIC_ACQUIRE);
    if (total > c->max) total = c->max;
    for (i = 0; i < total; i++)
        if (__atomic_load_n(&c->calls[i].end_ms, __ATOMIC_ACQUIRE) && c->calls[i].start_ms >= t && c->calls[i].ok == 1)
            n++;
    return n;
}

/* Stops the callers: every one must come back within timeout_ms (each call is bounded by
   its deadline); a caller that does not is a lost call, and, as a hung thread cannot be
   joined, the test program ends there (exit 1, the servers die with it). */
static inline void fx_callers_stop(fx_callers *c, const char *test, long long timeout_ms) {
    long long until = fx_now_ms() + timeout_ms;
    int i;
    __atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&c->done, __ATOMIC_ACQUIRE) < c->started && fx_now_ms() < until) t_redis_sleep_ms(20);
    if (__atomic_load_n(&c->done, __ATOMIC_ACQUIRE) < c->started) {
        fprintf(stderr, "FAIL %s: %d caller(s) never returned (lost)\n", test,
                c->started - __atomic_load_n(&c->done, __ATOMIC_ACQUIRE));
        _exit(1);
    }
    for (i = 0; i < c->started; i++) pthread_join(c->th[i], NULL);
}

/* The count of the stopped callers' calls around a failover: the node was killed at
   t_kill and the new one serves from t_new (monotonic ms). late_fail: failed calls begun
   2 s or more after t_new; early_fail: failed calls that ended before t_kill. errs: the
   error names seen, once each. */
typedef struct fx_tally {
    int ok, err, wrong, lost, late_fail, early_fail;
    char errs[256];
} fx_tally;
static inline fx_tally fx_callers_tally(const fx_callers *c, long long t_kill, long long t_new) {
    fx_tally t;
    int i, total = c->ncalls < c->max ? c->ncalls : c->max;
    memset(&t, 0, sizeof t);
    for (i = 0; i < total; i++) {
        const fx_call *r = &c->calls[i];
        if (!r->start_ms) continue; /* a number taken when stopping, not a call */
        if (!r->end_ms) t.lost++;
        else if (r->ok == 1) t.ok++;
        else if (r->ok < 0) t.wrong++;
        else {
            t.err++;
            if (!strstr(t.errs, r->err) && strlen(t.errs) + strlen(r->err) + 2 < sizeof t.errs) {
                strcat(t.errs, r->err);
                strcat(t.errs, " ");
            }
            if (r->start_ms >= t_new + 2000) t.late_fail++;
            if (r->end_ms < t_kill) t.early_fail++;
        }
    }
    fprintf(stderr, "  calls %d: ok %d, errors %d (%s), wrong %d, lost %d; ok from 2 s after the disruption ended %d\n",
            t.ok + t.err + t.wrong + t.lost, t.ok, t.err, t.errs, t.wrong, t.lost, fx_callers_ok_after(c, t_new + 2000));
    return t;
}
#endif /* AM2Z_RESP_H_INCLUDED && AM2Z_REDIS_HARNESS_H */

#ifdef AM2Z_TESTS_PROC_H
/* Runs this program again as "<role> <port>", its stdout captured into w; 1 once it
   printed "ready" (within 10 s). */
static inline int fx_spawn_ready(tp_proc *w, const char *role, int port) {
    char port_s[16], line[64];
    char *argv[4];
    snprintf(port_s, sizeof port_s, "%d", port);
    argv[0] = (char *)"/proc/self/exe";
    argv[1] = (char *)role;
    argv[2] = port_s;
    argv[3] = NULL;
    if (tp_spawn(w, argv, NULL, 1) != 0) return 0;
    return tp_readline(w, line, sizeof line, 10000) > 0 && strcmp(line, "ready") == 0;
}

/* Installs the BullMQ peer (tests/interop/setup.sh) and writes its NODE_PATH entry to
   path; "" (and a line on stderr naming who) when node/npm are missing or the install
   failed, so the caller skips or, under CI, fails the Node cases. */
static inline void fx_node_peer(char *path, size_t size, const char *who) {
    int rc = tp_capture("sh tests/interop/setup.sh", path, size);
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", who, rc == 2 ? "node or npm missing" : "installing the BullMQ peer failed");
        path[0] = '\0';
    }
}
#endif

#endif
