/* limits_fixture.h - what the cross-process limit tests (test_queue_limits.c,
   test_queue_global_cap.c) share: worker processes (this program again, configured by an
   environment variable) that run the processor "slow" and count its simultaneous runs
   in Redis (INCR/DECR and a max, in one script), stopped through the key "stop", and a
   producer that submits to them. Include after am2z_resp.h, t.h, redis_harness.h,
   proc.h and fixture.h. */
#ifndef AM2Z_TEST_LIMITS_FIXTURE_H
#define AM2Z_TEST_LIMITS_FIXTURE_H

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

#endif
