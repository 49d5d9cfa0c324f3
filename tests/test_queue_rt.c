/* test_queue_rt.c - the round trip's Redis work, cut without changing what it writes
   (issue 11; docs/ARCHITECTURE.md "Round trip: where the time goes"), against a private
   redis-server:
     a. a job handed to an idle thread is the RESP the worker reads, byte for byte what
        the job hash holds (name, data, opts, timestamp), locked with the thread's token;
     b. an in-process round trip that empties the queue settles it with one read of the
        queue: no slot or meta read of freed() (ZSCORE, a second HMGET), and the result,
        the completed set and the events stream are what they were (completed, drained).
   Crash recovery and the deadline of handed jobs: tests/test_queue_handoff.c, test_queue.c. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "proc.h"
#include "fixture.h"

static int port;
static t_redis server;
static am2z_logger *g_quiet;

static int g_runs; /* atomic: rt_echo's runs */

static am2z_result rt_echo(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    __atomic_add_fetch(&g_runs, 1, __ATOMIC_SEQ_CST);
    return am2z_ok(am2z_value_retain((am2z_state *)in));
}

static am2z_result rt_fail(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    (void)in;
    return am2z_fail(am2z_error_business("NOPE", AM2Z_SEVERITY_LOW, "fails on purpose"));
}

static am2z_runtime *worker_rt(int concurrency) {
    am2z_queue_desc d;
    am2z_processor_desc pd;
    am2z_runtime *rt;
    fx_queue_desc(&d, port, concurrency, g_quiet);
    rt = am2z_queue_runtime_new(&d, NULL);
    if (!rt || concurrency < 1) return rt;
    memset(&pd, 0, sizeof pd);
    pd.name = "rtq";
    pd.fn = rt_echo;
    if (am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)) != AM2Z_STATUS_OK) {
        am2z_runtime_free(rt);
        return NULL;
    }
    pd.name = "rtfail";
    pd.fn = rt_fail;
    if (am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)) != AM2Z_STATUS_OK) {
        am2z_runtime_free(rt);
        return NULL;
    }
    return rt;
}

/* Events named ev in stream key. */
static long long count_events(am2z_redis *r, const char *key, const char *ev) {
    am2z_reply rep;
    long long n = 0;
    size_t i;
    memset(&rep, 0, sizeof rep);
    am2z_redis_command(r, &rep, "XRANGE %s - +", key);
    for (i = 0; rep.type == AM2Z_REPLY_ARRAY && i < rep.len; i++)
        if (strcmp(am2z_reply_str(am2z_reply_at(am2z_reply_at(&rep.element[i], 1), 1)), ev) == 0) n++;
    am2z_reply_clear(&rep);
    return n;
}

/* A process that only adds (no worker thread of its own), after a worker published the
   processor's settings and stopped. */
static am2z_runtime *caller_rt(void) {
    am2z_runtime *w = worker_rt(1), *rt;
    am2z_runtime_free(w);
    if (!w) return NULL;
    rt = worker_rt(0);
    if (rt && am2z_queue_declare(rt, "rtq", NULL) != AM2Z_STATUS_OK) {
        am2z_runtime_free(rt);
        return NULL;
    }
    return rt;
}

static void idle_key(am2z_runtime *rt, char *key, size_t size) {
    snprintf(key, size, "bull:am2z~rtq:am2z:idle:%s", am2z_queue_instance_id(rt));
}

/* A registration of a thread that is not there, as a worker writes it. */
static void fake_register(am2z_redis *r, am2z_runtime *rt, const char *tok, char *member, size_t size) {
    am2z_reply rep;
    char key[160];
    memset(&rep, 0, sizeof rep);
    idle_key(rt, key, sizeof key);
    snprintf(member, size, "%s|30000|bull:am2z:ctl:%s:9", tok, am2z_queue_instance_id(rt));
    am2z_redis_command(r, &rep, "ZADD %s %lld %s", key, (long long)am2z_now_ms(), member);
    am2z_redis_command(r, &rep, "PEXPIRE %s 10000", key);
    am2z_reply_clear(&rep);
}

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

/* ---- a. the handed job, byte for byte ---- */

static int same_bulk(const am2z_reply *a, const am2z_reply *b) {
    return a && b && a->type == AM2Z_REPLY_BULK && b->type == AM2Z_REPLY_BULK && a->len == b->len &&
           memcmp(am2z_reply_str(a), am2z_reply_str(b), a->len) == 0;
}

static void test_handed_payload(void) {
    am2z_runtime *rt = caller_rt();
    am2z_redis *r = fx_conn(port);
    /* a state with bytes that need care: quotes, CR LF, a NUL escaped, non-ASCII */
    am2z_state *in = am2z_state_parse(NULL, "{\"s\":\"a\\\"b\\r\\n\\u0000 \\u00e9\"}", AM2Z_NTS, NULL);
    am2z_execution *e = NULL;
    am2z_reply rep, job, pay;
    am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
    char key[160], member[256], ctl[160], jk[200];
    const char *id;
    long long pttl;
    memset(&rep, 0, sizeof rep);
    memset(&job, 0, sizeof job);
    memset(&pay, 0, sizeof pay);
    CHECK(rt && r && in && rd);
    if (!rt || !r || !in || !rd) goto done;
    idle_key(rt, key, sizeof key);
    snprintf(ctl, sizeof ctl, "bull:am2z:ctl:%s:9", am2z_queue_instance_id(rt));
    fake_register(r, rt, "tokD", member, sizeof member);
    e = am2z_runtime_submit(rt, "rtq", in, NULL, NULL);
    CHECK(e != NULL);
    if (!e) goto done;
    id = am2z_execution_id(e);
    snprintf(jk, sizeof jk, "bull:am2z~rtq:%s", id);
    CHECK_INT(fx_redis_num(port, "EXISTS %s", key, NULL), 0); /* the registration was taken */
    CHECK_INT(fx_redis_num(port, "LLEN %s", "bull:am2z~rtq:wait", NULL), 0);
    CHECK_INT(fx_redis_num(port, "LPOS bull:am2z~rtq:active %s", id, NULL), 0);
    pttl = fx_redis_num(port, "PTTL %s:lock", jk, NULL);
    CHECK(pttl > 0 && pttl <= 30000);
    pttl = fx_redis_num(port, "PTTL %s", ctl, NULL);
    CHECK(pttl > 0 && pttl <= 30000);
    CHECK_INT(am2z_redis_command(r, &rep, "GET %s:lock", jk), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "tokD");
    CHECK_INT(am2z_redis_command(r, &job, "HMGET %s name data opts timestamp processedOn ats", jk), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_command(r, &rep, "ZRANGE %s 0 -1", ctl), AM2Z_STATUS_OK);
    CHECK(rep.type == AM2Z_REPLY_ARRAY && rep.len == 1);
    if (rep.type != AM2Z_REPLY_ARRAY || rep.len != 1 || job.type != AM2Z_REPLY_ARRAY || job.len != 6) goto done;
    /* one whole RESP value: {P, token, {1, id, 1, 0, name, data, opts, nil x4, timestamp}} */
    CHECK_INT(am2z_resp_reader_feed(rd, am2z_reply_str(&rep.element[0]), rep.element[0].len), AM2Z_STATUS_OK);
    CHECK_INT(am2z_resp_reader_next(rd, &pay), AM2Z_STATUS_OK);
    CHECK_INT(am2z_resp_reader_next(rd, &rep), AM2Z_STATUS_NEED_MORE); /* nothing after it */
    CHECK(pay.type == AM2Z_REPLY_ARRAY && pay.len == 3);
    if (pay.type != AM2Z_REPLY_ARRAY || pay.len != 3) goto done;
    CHECK_STR(am2z_reply_str(&pay.element[0]), "bull:am2z~rtq:");
    CHECK_STR(am2z_reply_str(&pay.element[1]), "tokD");
    CHECK(pay.element[2].type == AM2Z_REPLY_ARRAY && pay.element[2].len == 12);
    if (pay.element[2].type != AM2Z_REPLY_ARRAY || pay.element[2].len != 12) goto done;
    {
        const am2z_reply *j = &pay.element[2];
        int k;
        CHECK_INT(j->element[0].integer, 1);
        CHECK_STR(am2z_reply_str(&j->element[1]), id);
        CHECK_INT(j->element[2].integer, 1);
        CHECK_INT(j->element[3].integer, 0);
        CHECK(same_bulk(&j->element[4], &job.element[0]));  /* name */
        CHECK(same_bulk(&j->element[5], &job.element[1]));  /* data, the state's bytes in it */
        CHECK(same_bulk(&j->element[6], &job.element[2]));  /* opts */
        for (k = 7; k < 11; k++) CHECK(j->element[k].type == AM2Z_REPLY_NIL);
        CHECK(same_bulk(&j->element[11], &job.element[3])); /* timestamp */
        CHECK(strstr(am2z_reply_str(&j->element[5]), "\\u0000") != NULL);
    }
    CHECK(job.element[4].type == AM2Z_REPLY_BULK); /* processedOn */
    CHECK_STR(am2z_reply_str(&job.element[5]), "1");
done:
    am2z_execution_detach(e); /* its lock and key expire with the test's server */
    am2z_resp_reader_free(rd);
    am2z_reply_clear(&pay);
    am2z_reply_clear(&job);
    am2z_reply_clear(&rep);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    fx_flushall(port);
}

/* ---- c. a handed job that waited past half its lock ---- */

/* A job handed long ago (its wake-up key outlived the lock, or its thread was busy) runs
   only while its lock is still the handed token: a worker pops it, finds the lock
   another worker's (the stalled scan gave the job away meanwhile) and does not run it;
   with the lock still its own it renews it and runs the job. */
static void test_late_handed_job_checks_its_lock(void) {
    am2z_runtime *rt = caller_rt(), *w = NULL;
    am2z_redis *r = fx_conn(port);
    am2z_state *in = am2z_state_parse(NULL, "{\"late\":1}", AM2Z_NTS, NULL);
    am2z_execution *e = NULL;
    am2z_reply rep, tmp;
    char key[160], member[256], ctl[160], wctl[160], jk[200], old_ms[32];
    const char *argv[4];
    size_t lens[4];
    long long t0;
    int round, runs;
    memset(&rep, 0, sizeof rep);
    memset(&tmp, 0, sizeof tmp);
    CHECK(rt && r && in);
    if (!rt || !r || !in) goto done;
    idle_key(rt, key, sizeof key);
    snprintf(ctl, sizeof ctl, "bull:am2z:ctl:%s:9", am2z_queue_instance_id(rt));
    fake_register(r, rt, "tokL", member, sizeof member);
    e = am2z_runtime_submit(rt, "rtq", in, NULL, NULL);
    CHECK(e != NULL);
    if (!e) goto done;
    snprintf(jk, sizeof jk, "bull:am2z~rtq:%s", am2z_execution_id(e));
    CHECK_INT(am2z_redis_command(r, &rep, "ZRANGE %s 0 -1", ctl), AM2Z_STATUS_OK); /* the handed member */
    CHECK(rep.type == AM2Z_REPLY_ARRAY && rep.len == 1);
    if (rep.type != AM2Z_REPLY_ARRAY || rep.len != 1) goto done;
    w = worker_rt(1);
    CHECK(w != NULL);
    if (!w) goto done;
    snprintf(wctl, sizeof wctl, "bull:am2z:ctl:%s:0", am2z_queue_instance_id(w));
    snprintf(old_ms, sizeof old_ms, "%lld", (long long)am2z_now_ms() - 60000); /* a minute ago */
    for (round = 0; round < 2; round++) {
        /* round 0: the stalled scan gave the job to another worker; round 1: still ours */
        CHECK_INT(am2z_redis_command(r, &tmp, "SET %s:lock %s PX 30000", jk, round ? "tokL" : "other"),
                  AM2Z_STATUS_OK);
        runs = __atomic_load_n(&g_runs, __ATOMIC_SEQ_CST);
        argv[0] = "ZADD"; argv[1] = wctl; argv[2] = old_ms; argv[3] = am2z_reply_str(&rep.element[0]);
        lens[0] = 4; lens[1] = strlen(wctl); lens[2] = strlen(old_ms); lens[3] = rep.element[0].len;
        CHECK_INT(am2z_redis_command_argv(r, &tmp, 4, argv, lens), AM2Z_STATUS_OK);
        t0 = tp_now_ms();
        while (fx_redis_num(port, "EXISTS %s", wctl, NULL) == 1 && tp_now_ms() - t0 < 5000) tp_sleep_ms(10);
        CHECK_INT(fx_redis_num(port, "EXISTS %s", wctl, NULL), 0); /* the worker popped it */
        if (round == 0) {
            tp_sleep_ms(300);
            CHECK_INT(__atomic_load_n(&g_runs, __ATOMIC_SEQ_CST), runs); /* not run */
            CHECK_INT(fx_redis_num(port, "HEXISTS %s finishedOn", jk, NULL), 0);
            CHECK_INT(am2z_redis_command(r, &tmp, "GET %s:lock", jk), AM2Z_STATUS_OK);
            CHECK_STR(am2z_reply_str(&tmp), "other"); /* left to its owner */
        } else {
            t0 = tp_now_ms();
            while (fx_redis_num(port, "HEXISTS %s finishedOn", jk, NULL) != 1 && tp_now_ms() - t0 < 5000) tp_sleep_ms(10);
            CHECK_INT(fx_redis_num(port, "HEXISTS %s finishedOn", jk, NULL), 1); /* renewed and run */
            CHECK_INT(__atomic_load_n(&g_runs, __ATOMIC_SEQ_CST), runs + 1);
        }
    }
done:
    am2z_execution_detach(e);
    am2z_reply_clear(&tmp);
    am2z_reply_clear(&rep);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(w);
    am2z_runtime_free(rt);
    fx_flushall(port);
}

/* ---- b. a round trip that empties the queue settles it with one read ---- */

static void test_round_trip_settles_once(void) {
    am2z_runtime *rt = worker_rt(1);
    am2z_redis *r = fx_conn(port);
    am2z_state *in = am2z_state_parse(NULL, "{\"x\":7}", AM2Z_NTS, NULL);
    const char *ev = "bull:am2z~rtq:events", *fev = "bull:am2z~rtfail:events";
    am2z_outcome out;
    am2z_reply rep;
    char key[160], id[AM2Z_EXECUTION_ID_SIZE] = "";
    long long t0, drained0, completed0, evalsha;
    int i, bad = 0;
    const int n = 20;
    memset(&rep, 0, sizeof rep);
    CHECK(rt && r && in);
    if (!rt || !r || !in) goto done;
    idle_key(rt, key, sizeof key);
    out = am2z_runtime_execute(rt, "rtq", in); /* the worker emptied the queue once */
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    t0 = tp_now_ms();
    while (fx_redis_num(port, "ZCARD %s", key, NULL) < 1 && tp_now_ms() - t0 < 5000) tp_sleep_ms(10);
    completed0 = fx_redis_num(port, "ZCARD %s", "bull:am2z~rtq:completed", NULL);
    drained0 = count_events(r, ev, "drained");
    am2z_redis_command(r, &rep, "CONFIG RESETSTAT");
    for (i = 0; i < n; i++) {
        out = am2z_runtime_execute(rt, "rtq", in);
        if (out.error || am2z_value_get_int(out.state, "x", 0) != 7) bad++;
        snprintf(id, sizeof id, "%s", out.execution_id);
        am2z_outcome_clear(&out);
    }
    CHECK_INT(bad, 0);
    evalsha = fx_cmd_calls(r, "evalsha");
    /* freed()'s reads (the blocked list's ZSCORE, the meta HMGET) are not made: the
       queue was found empty; the add's own HMGET of meta remains, one per job */
    CHECK_INT(fx_cmd_calls(r, "zscore"), 0);
    CHECK(fx_cmd_calls(r, "hmget") <= n + 2);
    CHECK(evalsha >= 2 * n && evalsha <= 2 * n + 10); /* add + complete per job */
    /* what the complete wrote is unchanged: the job completed, its events, drained */
    CHECK_INT(fx_redis_num(port, "ZCARD %s", "bull:am2z~rtq:completed", NULL), completed0 + n);
    CHECK(fx_redis_num(port, "ZSCORE bull:am2z~rtq:completed %s", id, NULL) > 0);
    CHECK_INT(fx_redis_num(port, "LLEN %s", "bull:am2z~rtq:active", NULL), 0);
    CHECK_INT(count_events(r, ev, "drained") - drained0, n);
    CHECK(count_events(r, ev, "completed") >= n + 1);
    /* a final failure settles its queue the same way: failed, then drained */
    am2z_redis_command(r, &rep, "CONFIG RESETSTAT");
    out = am2z_runtime_execute(rt, "rtfail", in);
    CHECK(out.error != NULL);
    am2z_outcome_clear(&out);
    CHECK_INT(fx_cmd_calls(r, "zscore"), 0);
    CHECK_INT(count_events(r, fev, "failed"), 1);
    CHECK_INT(count_events(r, fev, "drained"), 1);
    CHECK_INT(fx_redis_num(port, "ZCARD %s", "bull:am2z~rtfail:failed", NULL), 1);
done:
    am2z_reply_clear(&rep);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    fx_flushall(port);
}

int main(void) {
    g_quiet = fx_quiet();
    T_RUN(start_server);
    if (port) {
        T_RUN(test_handed_payload);
        T_RUN(test_round_trip_settles_once);
        T_RUN(test_late_handed_job_checks_its_lock);
        t_redis_stop(&server);
    }
    am2z_logger_release(g_quiet);
    return t_done();
}
