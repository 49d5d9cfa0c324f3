/* test_queue_handoff.c - an add hands its job straight to an idle am2z worker (HAND-OFF
   in am2z_resp.h 4.4), against a private redis-server:
     a. in one process, sequential executions are handed off: no fetch ever takes a job
        from wait (no LTRIM in any script), two script calls per job (add, complete)
        where a fetch made it three, and the job hash is BullMQ's as before;
     b. a process killed (SIGKILL) while its own thread runs a job handed to it (never in
        wait): the job's lock expires, the stalled scan puts it back and another worker
        process completes it;
     c. only the adding process's threads are handed jobs: another process's idle worker
        is not (the job is fetched from wait);
     d. a Node BullMQ worker still gets the jobs when no am2z worker is idle: the am2z
        worker of the queue busy with a job handed to it, then freed (its registration
        goes with it).
   The worker processes are this program again (AM2Z_HANDOFF_WORKER in the environment).
   Without node, npm the Node case says so and counts as skipped (under CI=true it fails). */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "proc.h"
#include "fixture.h"
#include "limits_fixture.h"

static int port;
static t_redis server;
static am2z_logger *g_quiet;
static char g_node_path[1024]; /* NODE_PATH entry for the BullMQ peer, "" when unavailable */

/* The idle key of processor proc for runtime rt's instance (a static buffer). */
static const char *idle_key(am2z_runtime *rt, const char *proc) {
    static char key[160];
    snprintf(key, sizeof key, "bull:am2z~%s:am2z:idle:%s", proc, am2z_queue_instance_id(rt));
    return key;
}

/* {"pid": the running process} over the input; with "hold": first sets the key
   "running", then waits until the key "release" exists (at most 20 s). */
static am2z_result hecho(am2z_ctx *ctx, const am2z_state *in) {
    am2z_state *out = am2z_value_set(am2z_value_retain((am2z_state *)in), "pid", am2z_value_int((int64_t)getpid()));
    (void)ctx;
    if (am2z_value_get_int(in, "hold", 0)) {
        long long t0 = tp_now_ms();
        fx_redis_do(port, "SET running 1");
        while (fx_redis_num(port, "EXISTS %s", "release", NULL) == 0 && tp_now_ms() - t0 < 20000) tp_sleep_ms(20);
        out = am2z_value_set(out, "by", am2z_value_string("am2z"));
    }
    return am2z_ok(out);
}

static am2z_runtime *worker_rt(int concurrency, long long lock_ms, const char *name) {
    am2z_queue_desc d;
    am2z_processor_desc pd;
    am2z_runtime *rt;
    fx_queue_desc(&d, port, concurrency, g_quiet);
    d.lock_duration_ms = lock_ms;
    d.stalled_interval_ms = lock_ms ? lock_ms / 2 : 0;
    rt = am2z_queue_runtime_new(&d, NULL);
    if (!rt) return NULL;
    memset(&pd, 0, sizeof pd);
    pd.name = name;
    pd.fn = hecho;
    if (am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)) != AM2Z_STATUS_OK) {
        am2z_runtime_free(rt);
        return NULL;
    }
    return rt;
}

/* Env: AM2Z_HANDOFF_WORKER=<port>:<lock ms>:<mode>. One worker thread serving "hecho";
   mode 1: once idle, it submits {"hold":1} itself (handed to its own thread) and prints
   the job id before "ready". */
static int worker_main(const char *spec) {
    long long lock = 0;
    int mode = 0;
    am2z_runtime *rt;
    if (sscanf(spec, "%d:%lld:%d", &port, &lock, &mode) != 3) return 2;
    g_quiet = fx_quiet();
    rt = worker_rt(1, lock, "hecho");
    if (!rt) return 1;
    if (mode == 1) {
        am2z_state *hold = am2z_state_parse(NULL, "{\"hold\":1}", AM2Z_NTS, NULL);
        am2z_execution *e;
        am2z_state *warm = am2z_state_parse(NULL, "{}", AM2Z_NTS, NULL);
        am2z_outcome out = am2z_runtime_execute(rt, "hecho", warm); /* this process adds to the queue: its thread registers */
        long long t0 = tp_now_ms();
        am2z_outcome_clear(&out);
        am2z_value_release(warm);
        while (fx_redis_num(port, "ZCARD %s", idle_key(rt, "hecho"), NULL) < 1 && tp_now_ms() - t0 < 10000) tp_sleep_ms(10);
        /* the parent's command counts are the held job's alone: the warm-up came from wait,
           or was handed when the thread began a wait (and registered) as it was being added */
        fx_redis_do(port, "CONFIG RESETSTAT");
        e = am2z_runtime_submit(rt, "hecho", hold, NULL, NULL);
        printf("%s\n", am2z_execution_id(e));
        fflush(stdout);
        am2z_execution_detach(e);
        am2z_value_release(hold);
    }
    fx_serve_until_stop(port);
    am2z_runtime_free(rt);
    am2z_logger_release(g_quiet);
    return 0;
}

/* Polls until the command answers want (up to ms); the last answer. */
static long long wait_num(const char *fmt, const char *a, long long want, long long ms) {
    long long t0 = tp_now_ms(), v;
    while ((v = fx_redis_num(port, fmt, a, NULL)) != want && tp_now_ms() - t0 < ms) tp_sleep_ms(20);
    return v;
}

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

/* ---- a. in one process: handed off, no fetch ---- */

static void test_handoff_in_process(void) {
    am2z_runtime *rt = worker_rt(1, 0, "hecho");
    am2z_redis *r = fx_conn(port);
    am2z_state *in = am2z_state_parse(NULL, "{\"x\":7}", AM2Z_NTS, NULL);
    am2z_outcome out;
    am2z_reply rep;
    char id[AM2Z_EXECUTION_ID_SIZE] = "", key[160];
    long long evalsha, ltrim, popped;
    int i, bad = 0;
    const int n = 50;
    memset(&rep, 0, sizeof rep);
    CHECK(rt && r && in);
    if (!rt || !r || !in) goto done;
    out = am2z_runtime_execute(rt, "hecho", in); /* the worker emptied the queue once */
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    CHECK_INT(wait_num("ZCARD %s", idle_key(rt, "hecho"), 1, 5000), 1);
    CHECK_INT(am2z_redis_command(r, &rep, "CONFIG RESETSTAT"), AM2Z_STATUS_OK);
    for (i = 0; i < n; i++) {
        out = am2z_runtime_execute(rt, "hecho", in);
        if (out.error || am2z_value_get_int(out.state, "x", 0) != 7) bad++;
        snprintf(id, sizeof id, "%s", out.execution_id);
        am2z_outcome_clear(&out);
    }
    CHECK_INT(bad, 0);
    evalsha = fx_cmd_calls(r, "evalsha");
    ltrim = fx_cmd_calls(r, "ltrim");
    popped = fx_cmd_calls(r, "zpopmax");
    printf("  %d executions: %lld script calls, %lld hand-offs, %lld takes from wait\n", n, evalsha, popped, ltrim);
    /* no job fetched from wait, every add found the idle worker (2 spared for a registration
       that a very busy machine delivers after the caller's next add; without the hand-off
       these are n and 0) */
    CHECK(ltrim <= 2);
    CHECK(popped >= n - 2);
    CHECK(evalsha <= 2 * n + 10); /* add + complete (a timer's script may add a few); a fetch made 3 per job */
    /* the job hash as BullMQ keeps it */
    CHECK_INT(am2z_redis_command(r, &rep, "HMGET bull:am2z~hecho:%s processedOn finishedOn ats returnvalue", id),
              AM2Z_STATUS_OK);
    CHECK(rep.type == AM2Z_REPLY_ARRAY && rep.len == 4);
    if (rep.type == AM2Z_REPLY_ARRAY && rep.len == 4) {
        CHECK(rep.element[0].type == AM2Z_REPLY_BULK && rep.element[1].type == AM2Z_REPLY_BULK);
        CHECK_STR(am2z_reply_str(&rep.element[2]), "1");
        CHECK(strstr(am2z_reply_str(&rep.element[3]), "\"x\":7") != NULL);
    }
    CHECK_INT(fx_redis_num(port, "LLEN %s", "bull:am2z~hecho:active", NULL), 0);
    CHECK_INT(fx_redis_num(port, "ZSCORE bull:am2z~hecho:completed %s", id, NULL) > 0, 1);
    snprintf(key, sizeof key, "%s", idle_key(rt, "hecho"));
    am2z_runtime_free(rt);
    rt = NULL;
    CHECK_INT(fx_redis_num(port, "EXISTS %s", key, NULL), 0); /* freed: no longer registered */
done:
    am2z_reply_clear(&rep);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    fx_flushall(port);
}

/* A thread that may still take jobs is not registered idle. One worker thread: a round
   trip empties the queue (the thread registers); a handed job sleeps while a second
   job is added (to wait: the thread is busy); the thread fetches it after the first,
   and it adds a slow one, to wait too. The complete of the second job takes the slow
   one and must not register the thread: else the next add hands a job to a thread busy
   for as long as the slow job runs, its lock unrenewed (it came back through the
   stalled scan with stc=1, no worker having died). */
static am2z_runtime *g_busy_rt;
static am2z_result hbusy(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    if (am2z_value_get_int(in, "sleep", 0)) tp_sleep_ms(300);
    if (am2z_value_get_int(in, "sub", 0)) { /* while this thread is busy: into wait */
        am2z_state *s = am2z_state_parse(NULL, "{\"hold\":1}", AM2Z_NTS, NULL);
        am2z_execution_detach(am2z_runtime_submit(g_busy_rt, "hbusy", s, NULL, NULL));
        am2z_value_release(s);
    }
    return hecho(ctx, in);
}

static void test_busy_thread_not_registered(void) {
    am2z_queue_desc d;
    am2z_processor_desc pd;
    am2z_state *plain = am2z_state_parse(NULL, "{\"f\":1}", AM2Z_NTS, NULL);
    am2z_state *sub = am2z_state_parse(NULL, "{\"sub\":1}", AM2Z_NTS, NULL);
    am2z_state *sleepy = am2z_state_parse(NULL, "{\"sleep\":1}", AM2Z_NTS, NULL);
    am2z_execution *e;
    am2z_outcome out;
    long long t0;
    memset(&out, 0, sizeof out);
    fx_flushall(port);
    fx_queue_desc(&d, port, 1, g_quiet);
    d.lock_duration_ms = 1500;
    d.stalled_interval_ms = 750;
    g_busy_rt = am2z_queue_runtime_new(&d, NULL);
    CHECK(g_busy_rt != NULL);
    if (!g_busy_rt) return;
    memset(&pd, 0, sizeof pd);
    pd.name = "hbusy";
    pd.fn = hbusy;
    pd.timeout_ms = 60000;
    CHECK_INT(am2z_runtime_register(g_busy_rt, am2z_processor_new(&pd, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(g_busy_rt, "hbusy", plain); /* the thread empties the queue once */
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    t0 = tp_now_ms();
    while (fx_redis_num(port, "ZCARD %s", idle_key(g_busy_rt, "hbusy"), NULL) < 1 && tp_now_ms() - t0 < 10000)
        tp_sleep_ms(10);
    e = am2z_runtime_submit(g_busy_rt, "hbusy", sleepy, NULL, NULL); /* handed; sleeps 300 ms */
    tp_sleep_ms(50);
    am2z_execution_detach(am2z_runtime_submit(g_busy_rt, "hbusy", sub, NULL, NULL)); /* to wait */
    CHECK_INT(am2z_execution_wait(e, 20000, &out), AM2Z_STATUS_OK);
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    t0 = tp_now_ms();
    while (fx_redis_num(port, "EXISTS %s", "running", NULL) == 0 && tp_now_ms() - t0 < 10000) tp_sleep_ms(10);
    CHECK_INT(fx_redis_num(port, "EXISTS %s", "running", NULL), 1);
    CHECK_INT(fx_redis_num(port, "ZCARD %s", idle_key(g_busy_rt, "hbusy"), NULL), 0); /* busy: not idle */
    e = am2z_runtime_submit(g_busy_rt, "hbusy", plain, NULL, NULL); /* waits for the thread, in wait */
    tp_sleep_ms(100);
    fx_redis_do(port, "SET release 1");
    CHECK_INT(am2z_execution_wait(e, 20000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_INT(fx_redis_num(port, "HGET bull:am2z~hbusy:%s stc", out.execution_id, NULL), 0); /* never stalled */
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    am2z_runtime_free(g_busy_rt);
    fx_redis_do(port, "DEL running release"); /* the next cases hold jobs with them */
    am2z_value_release(plain);
    am2z_value_release(sub);
    am2z_value_release(sleepy);
}

/* ---- b. a process killed while its thread runs a job handed to it ---- */

static void test_killed_process_job_recovered(void) {
    tp_proc w[2];
    char env[64], env2[64], id[AM2Z_EXECUTION_ID_SIZE + 8] = "", rv[256] = "", pid_s[32];
    char *argv[2];
    const char *env_add[2];
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    long long t_kill, t0;
    memset(w, 0, sizeof w);
    memset(&rep, 0, sizeof rep);
    CHECK(r != NULL);
    if (!r) return;
    snprintf(env, sizeof env, "AM2Z_HANDOFF_WORKER=%d:1000:1", port);
    snprintf(env2, sizeof env2, "AM2Z_HANDOFF_WORKER=%d:1000:0", port);
    argv[0] = (char *)"/proc/self/exe";
    argv[1] = NULL;
    env_add[0] = env;
    env_add[1] = NULL;
    if (tp_spawn(&w[0], argv, env_add, 1) != 0 || tp_readline(&w[0], id, sizeof id, 20000) != 1 || !id[0]) {
        T_FAIL_("worker did not start");
        goto done;
    }
    /* its own thread runs the job it was handed: active and locked, never taken from wait */
    CHECK_INT(wait_num("EXISTS %s", "running", 1, 10000), 1);
    CHECK_INT(fx_cmd_calls(r, "zpopmax"), 1); /* the held job was handed, never fetched */
    CHECK_INT(fx_cmd_calls(r, "ltrim"), 0);
    CHECK_INT(fx_redis_num(port, "EXISTS bull:am2z~hecho:%s:lock", id, NULL), 1);
    tp_stop(&w[0], SIGKILL, 1000);
    t_kill = tp_now_ms();
    fx_redis_do(port, "SET release 1");
    /* another worker process completes it once the lock expired and the scan put it back */
    if (!fx_start_workers(w + 1, 1, env2)) { T_FAIL_("second worker did not start"); goto done; }
    t0 = tp_now_ms();
    while (fx_redis_num(port, "HEXISTS bull:am2z~hecho:%s finishedOn", id, NULL) != 1 && tp_now_ms() - t0 < 20000)
        tp_sleep_ms(20);
    CHECK_INT(am2z_redis_command(r, &rep, "HGET bull:am2z~hecho:%s returnvalue", id), AM2Z_STATUS_OK);
    snprintf(rv, sizeof rv, "%s", am2z_reply_str(&rep));
    snprintf(pid_s, sizeof pid_s, "\"pid\":%ld", (long)w[1].pid);
    CHECK(strstr(rv, pid_s) != NULL);
    CHECK_INT(fx_redis_num(port, "HGET bull:am2z~hecho:%s stc", id, NULL), 1);
    printf("  job handed to a killed process's thread completed by another %lld ms after the kill (lock 1000 ms)\n",
           tp_now_ms() - t_kill);
done:
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    tp_stop(&w[0], SIGKILL, 1000);
    fx_stop_workers(port, w + 1, 1);
}

/* ---- c. only the adding process's threads ---- */

static void test_other_process_not_handed(void) {
    tp_proc w[1];
    char env[64];
    am2z_runtime *rt;
    am2z_state *in = am2z_state_parse(NULL, "{\"x\":2}", AM2Z_NTS, NULL);
    am2z_outcome out;
    am2z_redis *r = fx_conn(port);
    memset(w, 0, sizeof w);
    snprintf(env, sizeof env, "AM2Z_HANDOFF_WORKER=%d:0:0", port);
    rt = fx_workers_and_producer(port, w, 1, env, g_quiet);
    CHECK(r != NULL);
    if (!rt || !r) goto done;
    CHECK_INT(am2z_queue_declare(rt, "hecho", NULL), AM2Z_STATUS_OK);
    fx_redis_do(port, "CONFIG RESETSTAT");
    out = am2z_runtime_execute(rt, "hecho", in);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "pid", 0), w[0].pid);
    am2z_outcome_clear(&out);
    CHECK_INT(fx_cmd_calls(r, "zpopmax"), 0); /* no registration of this instance to take */
    CHECK(fx_cmd_calls(r, "ltrim") >= 1);     /* the worker fetched it from wait */
done:
    am2z_runtime_free(rt);
    am2z_redis_free(r);
    am2z_value_release(in);
    fx_stop_workers(port, w, 1);
}

/* ---- d. a Node worker gets the jobs no idle am2z worker takes ---- */

static int in_ci(void) {
    const char *ci = getenv("CI");
    return ci && strcmp(ci, "true") == 0;
}

static int node_start(tp_proc *p) {
    char *argv[8];
    char env_path[1100], port_s[16], line[256];
    const char *env[2];
    snprintf(port_s, sizeof port_s, "%d", port);
    argv[0] = (char *)"node";
    argv[1] = (char *)"tests/interop/events.js";
    argv[2] = (char *)"worker";
    argv[3] = port_s;
    argv[4] = (char *)"bull";
    argv[5] = (char *)"am2z~nodesum";
    argv[6] = NULL;
    snprintf(env_path, sizeof env_path, "NODE_PATH=%s", g_node_path);
    env[0] = env_path;
    env[1] = NULL;
    if (tp_spawn(p, argv, env, 1) != 0) return 0;
    return tp_readline(p, line, sizeof line, 20000) == 1 && strcmp(line, "ready") == 0;
}

static void test_node_worker_when_none_idle(void) {
    am2z_runtime *wrt, *rt;
    am2z_execution *held;
    am2z_state *hold, *in;
    am2z_outcome out;
    tp_proc node;
    char key[160];
    int i;
    if (!g_node_path[0]) {
        if (in_ci()) { CHECK(g_node_path[0]); return; }
        T_SKIP("node/npm not available");
    }
    memset(&out, 0, sizeof out);
    memset(&node, 0, sizeof node);
    wrt = worker_rt(1, 0, "nodesum");
    rt = fx_queue_rt(port, AM2Z_QUEUE_NO_WORKERS, g_quiet);
    hold = am2z_state_parse(NULL, "{\"hold\":1}", AM2Z_NTS, NULL);
    in = am2z_state_parse(NULL, "{\"a\":1,\"b\":2}", AM2Z_NTS, NULL);
    CHECK(wrt && rt && am2z_queue_declare(rt, "nodesum", NULL) == AM2Z_STATUS_OK);
    if (!wrt || !rt) goto done;
    snprintf(key, sizeof key, "%s", idle_key(wrt, "nodesum"));
    out = am2z_runtime_execute(wrt, "nodesum", in); /* wrt adds to the queue: its thread registers */
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    CHECK_INT(wait_num("ZCARD %s", key, 1, 5000), 1);
    /* the am2z worker is handed a job (of its own process) that holds it */
    held = am2z_runtime_submit(wrt, "nodesum", hold, NULL, NULL);
    CHECK_INT(wait_num("EXISTS %s", "running", 1, 10000), 1);
    CHECK_INT(fx_redis_num(port, "ZCARD %s", key, NULL), 0);
    CHECK(node_start(&node));
    /* nobody idle in am2z: the jobs wait where BullMQ's worker takes them */
    for (i = 0; i < 3; i++) {
        out = am2z_runtime_execute(rt, "nodesum", in);
        CHECK(out.error == NULL);
        CHECK_STR(am2z_value_get_string(out.state, "by", NULL), "bullmq");
        CHECK_INT(am2z_value_get_int(out.state, "sum", -1), 3);
        am2z_outcome_clear(&out);
    }
    fx_redis_do(port, "SET release 1");
    CHECK_INT(am2z_execution_wait(held, 20000, &out), AM2Z_STATUS_OK);
    CHECK_STR(am2z_value_get_string(out.state, "by", NULL), "am2z");
    am2z_outcome_clear(&out);
    am2z_execution_free(held);
    /* freed, the am2z worker is no longer registered: every job goes to Node */
    am2z_runtime_free(wrt);
    wrt = NULL;
    CHECK_INT(fx_redis_num(port, "EXISTS %s", key, NULL), 0);
    for (i = 0; i < 3; i++) {
        out = am2z_runtime_execute(rt, "nodesum", in);
        CHECK(out.error == NULL);
        CHECK_STR(am2z_value_get_string(out.state, "by", NULL), "bullmq");
        am2z_outcome_clear(&out);
    }
done:
    if (node.pid) tp_stop(&node, SIGKILL, 1000);
    am2z_runtime_free(wrt);
    am2z_runtime_free(rt);
    am2z_value_release(hold);
    am2z_value_release(in);
    fx_flushall(port);
}

int main(int argc, char **argv) {
    const char *spec = getenv("AM2Z_HANDOFF_WORKER");
    (void)argc;
    (void)argv;
    if (spec) return worker_main(spec);
    g_quiet = fx_quiet();
    fx_node_peer(g_node_path, sizeof g_node_path, "test_queue_handoff");
    T_RUN(start_server);
    if (port) {
        T_RUN(test_handoff_in_process);
        T_RUN(test_busy_thread_not_registered);
        T_RUN(test_killed_process_job_recovered);
        T_RUN(test_other_process_not_handed);
        T_RUN(test_node_worker_when_none_idle);
        t_redis_stop(&server);
    }
    am2z_logger_release(g_quiet);
    return t_done();
}
