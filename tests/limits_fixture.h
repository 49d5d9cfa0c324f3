/* limits_fixture.h - what the cross-process limit tests (test_queue_limits.c,
   test_queue_global_cap.c) share: worker processes (this program again, configured by an
   environment variable) that run the processor "slow" and count its simultaneous runs
   in Redis (INCR/DECR and a max, in one script), stopped through the key "stop", and a
   producer that submits to them, and the main that plays both parts. Include after
   am2z_resp.h, t.h, redis_harness.h, proc.h and fixture.h. */
#ifndef AM2Z_TEST_LIMITS_FIXTURE_H
#define AM2Z_TEST_LIMITS_FIXTURE_H

/* The program's state, in the test process and in each worker process alike. */
static int port;                   /* the private server's (a worker's: from its spec) */
static t_redis fx_server;          /* the test process's private redis-server */
static am2z_logger *g_quiet;       /* owned; the test process's quiet logger */
static am2z_redis_script *g_count; /* owned; a worker's fx_count_lua */

/* Counts one run in and out of "now:<tag>" (KEYS[1]), keeping "max:<tag>" (KEYS[2]). */
static const char fx_count_lua[] =
    "local n = redis.call('INCRBY', KEYS[1], ARGV[1])\n"
    "if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end\n"
    "return n\n";

/* Counts a run of tag in (d 1) or out (d -1) on the server at port, atomically; script
   (borrowed) is fx_count_lua. */
static inline void fx_count(int port, am2z_redis_script *script, const char *tag, int d) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    char now_k[160], max_k[160], ds[8];
    const char *argv[3];
    memset(&rep, 0, sizeof rep);
    if (!r) return;
    snprintf(now_k, sizeof now_k, "now:%s", tag);
    snprintf(max_k, sizeof max_k, "max:%s", tag);
    snprintf(ds, sizeof ds, "%d", d);
    argv[0] = now_k; argv[1] = max_k; argv[2] = ds;
    am2z_redis_evalsha(r, &rep, script, 2, 3, argv, NULL);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
}

/* In a worker process, once its runtime is up: says "ready" on stdout, then returns when
   the key "stop" exists on the server at port. */
static inline void fx_serve_until_stop(int port) {
    printf("ready\n");
    fflush(stdout);
    while (fx_redis_num(port, "EXISTS %s", "stop", NULL) == 0) tp_sleep_ms(50);
}

/* Spawns n workers, this program again with env ("NAME=value") added to the environment;
   1 once each said "ready" (within 20 s), 0 otherwise (the ones started are in w, for
   fx_end_workers). */
static inline int fx_start_workers(tp_proc *w, int n, const char *env) {
    const char *env_add[2];
    char *argv[2];
    char line[64];
    int i;
    env_add[0] = env;
    env_add[1] = NULL;
    argv[0] = (char *)"/proc/self/exe";
    argv[1] = NULL;
    for (i = 0; i < n; i++) {
        if (tp_spawn(&w[i], argv, env_add, 1) != 0) return 0;
        if (tp_readline(&w[i], line, sizeof line, 20000) != 1 || strcmp(line, "ready") != 0) return 0;
    }
    return 1;
}

/* Stops the workers (each exits 0 when it sees the key "stop"; one that does not within
   20 s fails the case and is killed); Redis keeps its other keys. */
static inline void fx_end_workers(int port, tp_proc *w, int n) {
    int i;
    fx_redis_do(port, "SET stop 1");
    for (i = 0; i < n; i++) {
        if (w[i].pid && tp_wait(&w[i], 20000) != 0) T_FAIL_("worker %d did not stop cleanly", i);
        tp_stop(&w[i], SIGKILL, 1000);
    }
    fx_redis_do(port, "DEL stop");
}

/* fx_end_workers, then FLUSHALL: the next case starts from an empty server. */
static inline void fx_stop_workers(int port, tp_proc *w, int n) {
    fx_end_workers(port, w, n);
    fx_flushall(port);
}

/* A runtime without workers (nor settings refresh) on the server at port that declared
   the queue of "slow"; logger borrowed. */
static inline am2z_runtime *fx_slow_producer(int port, am2z_logger *logger) {
    am2z_queue_desc d;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = port;
    d.concurrency = AM2Z_QUEUE_NO_WORKERS;
    d.settings_refresh_ms = -1;
    d.logger = logger;
    rt = am2z_queue_runtime_new(&d, NULL);
    if (rt) CHECK_INT(am2z_queue_declare(rt, "slow", NULL), AM2Z_STATUS_OK);
    return rt;
}

/* fx_start_workers, then fx_slow_producer (logger borrowed): the producer, or NULL with
   the case failed and the workers stopped (fx_stop_workers). */
static inline am2z_runtime *fx_workers_and_producer(int port, tp_proc *w, int n, const char *env,
                                                     am2z_logger *logger) {
    am2z_runtime *rt;
    if (!fx_start_workers(w, n, env)) {
        T_FAIL_("%s did not start", n > 1 ? "workers" : "worker");
        fx_stop_workers(port, w, n);
        return NULL;
    }
    rt = fx_slow_producer(port, logger);
    if (!rt) {
        T_FAIL_("producer: %s", am2z_status_detail());
        fx_stop_workers(port, w, n);
    }
    return rt;
}

/* In a worker process: a queue runtime with d's settings (the server at port, 8 worker
   threads and a quiet logger set here) serving the processor pd (named "slow" here; its
   fn counts with g_count, made here) until the key "stop" exists. The exit code: 0, or 1
   when it did not start. */
static inline int fx_limits_serve(am2z_queue_desc *d, am2z_processor_desc *pd) {
    am2z_runtime *rt;
    int rc = 1;
    g_count = am2z_redis_script_new(fx_count_lua, strlen(fx_count_lua), NULL);
    d->redis.host = "127.0.0.1";
    d->redis.port = port;
    d->concurrency = 8;
    d->logger = fx_quiet();
    rt = am2z_queue_runtime_new(d, NULL);
    am2z_logger_release(d->logger);
    pd->name = "slow";
    if (g_count && rt && am2z_runtime_register(rt, am2z_processor_new(pd, NULL)) == AM2Z_STATUS_OK) {
        fx_serve_until_stop(port);
        rc = 0;
    }
    am2z_runtime_free(rt);
    am2z_redis_script_free(g_count);
    return rc;
}

/* A queue runtime with d's settings (on the server at port, set here) is refused with
   AM2Z_STATUS_INVALID_ARGUMENT and a detail that names what. */
static inline void fx_check_refused(am2z_queue_desc *d, const char *what) {
    am2z_status s = AM2Z_STATUS_OK;
    d->redis.host = "127.0.0.1";
    d->redis.port = port;
    CHECK(am2z_queue_runtime_new(d, &s) == NULL);
    CHECK_INT(s, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), what) != NULL);
}

static inline void fx_limits_start_server(void) {
    T_REDIS_START(&fx_server, NULL);
    port = fx_server.port;
}

/* The main of a limits test: a worker process (the environment variable env holds its
   spec) returns worker(spec); the test process starts a private redis-server, runs
   cases (the test's T_RUN lines) against it and prints the closing line. */
static inline int fx_limits_main(const char *env, int (*worker)(const char *spec), void (*cases)(void)) {
    const char *spec = getenv(env);
    if (spec) return worker(spec);
    g_quiet = fx_quiet();
    T_RUN(fx_limits_start_server);
    if (port) {
        cases();
        t_redis_stop(&fx_server);
    }
    am2z_logger_release(g_quiet);
    return t_done();
}

#endif
