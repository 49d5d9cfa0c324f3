/* test_hostile.c - the queue runtime and the connection against hostile data and
   servers (issue 10 §3): job hashes with numbers out of range, a Redis still loading
   its data, a frozen Redis (SIGSTOP), ids whose job hash is gone, an outage's log lines,
   a reply line without CR LF, and handshake replies of the wrong type. A fake server
   (a forked child on a loopback socket) plays what a real redis-server cannot be made
   to send. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "fixture.h"

static int port;
static t_redis server;

/* -- helpers -- */

/* A logger that counts its entries of warn and above, and those that contain a word. */
typedef struct counting {
    int warn, info;
    int with_word;
    const char *word;
} counting;
static void count_entry(const am2z_log_entry *e, void *ud) {
    counting *c = (counting *)ud;
    if (e->level >= AM2Z_LOG_WARN) __atomic_add_fetch(&c->warn, 1, __ATOMIC_SEQ_CST);
    else __atomic_add_fetch(&c->info, 1, __ATOMIC_SEQ_CST);
    if (c->word && e->message && strstr(e->message, c->word)) __atomic_add_fetch(&c->with_word, 1, __ATOMIC_SEQ_CST);
}
static am2z_logger *counting_logger(counting *c) {
    am2z_logger_desc d;
    memset(&d, 0, sizeof d);
    d.sink = AM2Z_SINK_CALLBACK;
    d.min_level = AM2Z_LOG_INFO;
    d.callback = count_entry;
    d.user_data = c;
    return am2z_logger_new(&d, NULL);
}

static am2z_queue_desc qdesc(int p, int concurrency, am2z_logger *lg) {
    am2z_queue_desc d;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = p;
    d.concurrency = concurrency;
    d.lock_duration_ms = 2000;
    d.stalled_interval_ms = 500;
    d.logger = lg;
    return d;
}

static void cmd(am2z_redis *r, const char *fmt, const char *a, const char *b) {
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    am2z_redis_command(r, &rep, fmt, a, b);
    am2z_reply_clear(&rep);
}

static int64_t now_ms(void) { return am2z_monotonic_ns() / 1000000; }

/* A job written by hand into the queue of processor `name`, as a foreign producer (or
   an attacker) would: fields is "field value ..." split into HSET arguments. */
static void hand_job(am2z_redis *r, const char *name, const char *id, const char *data, const char *f, const char *v) {
    char key[128];
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    snprintf(key, sizeof key, "bull:am2z~%s:%s", name, id);
    am2z_redis_command(r, &rep, "HSET %s name %s data %s opts {} timestamp 1", key, name, data);
    am2z_reply_clear(&rep);
    if (f) { am2z_redis_command(r, &rep, "HSET %s %s %s", key, f, v); am2z_reply_clear(&rep); }
    snprintf(key, sizeof key, "bull:am2z~%s:wait", name);
    cmd(r, "LPUSH %s %s", key, id);
    snprintf(key, sizeof key, "bull:am2z~%s:marker", name);
    cmd(r, "ZADD %s 0 0", key, NULL);
}

/* Field of job id once it finished (finishedOn set), waiting up to ms; "" otherwise.
   The text is copied into buf. */
static const char *finished_field(am2z_redis *r, const char *name, const char *id, const char *field, int ms,
                                  char *buf, size_t size) {
    int64_t until = now_ms() + ms;
    am2z_reply rep;
    char key[128];
    snprintf(key, sizeof key, "bull:am2z~%s:%s", name, id);
    buf[0] = '\0';
    memset(&rep, 0, sizeof rep);
    while (now_ms() < until) {
        if (am2z_redis_command(r, &rep, "HGET %s finishedOn", key) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_BULK) {
            am2z_redis_command(r, &rep, "HGET %s %s", key, field);
            if (rep.type == AM2Z_REPLY_BULK) snprintf(buf, size, "%s", am2z_reply_str(&rep));
            am2z_reply_clear(&rep);
            return buf;
        }
        am2z_reply_clear(&rep);
        t_redis_sleep_ms(10);
    }
    return buf;
}

/* -- processors -- */

static int flaky_runs;
static am2z_result p_flaky(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx; (void)in;
    __atomic_add_fetch(&flaky_runs, 1, __ATOMIC_SEQ_CST);
    return am2z_fail(am2z_error_network("flaky", 0, NULL));
}
static int retry_all(const am2z_error *e, int attempt, void *ud) { (void)e; (void)attempt; (void)ud; return 1; }

static am2z_result p_inc(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "count",
                                  am2z_value_int(am2z_value_get_int(in, "count", 0) + 1)));
}
static am2z_processor *plain(const char *name, am2z_processor_fn fn) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    return am2z_processor_new(&d, NULL);
}

/* -- 1. numbers of a job hash -- */

static void test_attempts_out_of_range(void) {
    /* a processor allowed 3 attempts runs at most 3 times, whatever atm the hash holds;
       before, atm=-1000 gave it ~1000 runs and 2147483647 overflowed an int */
    static const char *const atms[] = {"-1000", "2147483647", "1e30", "-1e300", "nan", "abc", "99999999999999999999999"};
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d = qdesc(port, 1, lg);
    am2z_runtime *rt = am2z_queue_runtime_new(&d, NULL);
    am2z_redis *r = fx_conn(port);
    am2z_processor_desc pd;
    size_t i;
    CHECK(rt && r);
    if (!rt || !r) goto out;
    memset(&pd, 0, sizeof pd);
    pd.name = "flaky";
    pd.fn = p_flaky;
    pd.retry.max_attempts = 3;
    pd.retry.delay_ms = -1;
    pd.retry.should_retry = retry_all;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)), AM2Z_STATUS_OK);
    for (i = 0; i < sizeof atms / sizeof atms[0]; i++) {
        char id[16], buf[64];
        const char *atm;
        __atomic_store_n(&flaky_runs, 0, __ATOMIC_SEQ_CST);
        snprintf(id, sizeof id, "h%u", (unsigned)i);
        hand_job(r, "flaky", id, "{\"n\":1}", "atm", atms[i]);
        atm = finished_field(r, "flaky", id, "atm", 5000, buf, sizeof buf);
        if (__atomic_load_n(&flaky_runs, __ATOMIC_SEQ_CST) < 1 || __atomic_load_n(&flaky_runs, __ATOMIC_SEQ_CST) > 3)
            T_FAIL_("atm=%s: %d runs of a processor allowed 3 attempts", atms[i], flaky_runs);
        /* the attempts it records are a count in range again */
        CHECK(atm[0] >= '1' && atm[0] <= '9' && strlen(atm) <= 7);
    }
out:
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_numbers_of_other_fields(void) {
    /* a queue's meta concurrency that is no number, a stalled job whose stall counter is
       text, deadlines beyond any clock: each job still runs (before: the fetch and the
       stalled scan failed for the whole queue on every try, and the deadline arithmetic
       overflowed) */
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d = qdesc(port, 1, lg);
    am2z_runtime *rt = am2z_queue_runtime_new(&d, NULL);
    am2z_redis *r = fx_conn(port);
    char buf[256];
    am2z_value *v;
    CHECK(rt && r);
    if (!rt || !r) goto out;
    CHECK_INT(am2z_runtime_register(rt, plain("inc", p_inc)), AM2Z_STATUS_OK);
    cmd(r, "HSET bull:am2z~inc:meta concurrency %s", "not a number", NULL);
    hand_job(r, "inc", "m1", "{\"count\":1}", NULL, NULL);
    v = am2z_json_parse(finished_field(r, "inc", "m1", "returnvalue", 5000, buf, sizeof buf), AM2Z_NTS, NULL, NULL);
    CHECK_INT(am2z_value_get_int(v, "count", 0), 2);
    am2z_value_release(v);
    cmd(r, "HSET bull:am2z~inc:meta concurrency %s", "100", NULL); /* the stalled scan wants a meta key */
    /* in active without a lock, as after a crash: the stalled scan puts it back */
    cmd(r, "HSET bull:am2z~inc:s1 name inc data {\"count\":5} opts {} timestamp 1 stc %s", "many", NULL);
    cmd(r, "LPUSH bull:am2z~inc:active %s", "s1", NULL);
    v = am2z_json_parse(finished_field(r, "inc", "s1", "returnvalue", 8000, buf, sizeof buf), AM2Z_NTS, NULL, NULL);
    CHECK_INT(am2z_value_get_int(v, "count", 0), 6);
    am2z_value_release(v);
    /* an am2z envelope whose deadline is far beyond any clock, and one below any */
    hand_job(r, "inc", "d1", "{\"am2z\":1,\"deadline\":9223372036854775807,\"state\":{\"count\":7}}", NULL, NULL);
    v = am2z_json_parse(finished_field(r, "inc", "d1", "returnvalue", 5000, buf, sizeof buf), AM2Z_NTS, NULL, NULL);
    CHECK_INT(am2z_value_get_int(v, "count", 0), 8);
    am2z_value_release(v);
    hand_job(r, "inc", "d2", "{\"am2z\":1,\"deadline\":-9223372036854775807,\"state\":{\"count\":7}}", "timestamp",
             "-9223372036854775808");
    v = am2z_json_parse(finished_field(r, "inc", "d2", "returnvalue", 5000, buf, sizeof buf), AM2Z_NTS, NULL, NULL);
    CHECK_INT(am2z_value_get_int(v, "count", 0), 8);
    am2z_value_release(v);
out:
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

/* -- 7a. callDepth -- */

static void test_call_depth_validated(void) {
    /* a negative or huge callDepth is a broken job (ValidationError), not a deep one; before,
       -7 gave "Maximum call depth exceeded: -7 >= 10" and 4294967296 ran as depth 0 */
    static const char *const depths[] = {"-7", "4294967296", "1.5", "\"3\"", "1e30"};
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d = qdesc(port, 1, lg);
    am2z_runtime *rt = am2z_queue_runtime_new(&d, NULL);
    am2z_redis *r = fx_conn(port);
    size_t i;
    CHECK(rt && r);
    if (!rt || !r) goto out;
    CHECK_INT(am2z_runtime_register(rt, plain("inc", p_inc)), AM2Z_STATUS_OK);
    for (i = 0; i < sizeof depths / sizeof depths[0]; i++) {
        char id[16], data[128], buf[512];
        const char *why;
        snprintf(id, sizeof id, "c%u", (unsigned)i);
        snprintf(data, sizeof data, "{\"am2z\":1,\"callDepth\":%s,\"state\":{\"count\":1}}", depths[i]);
        hand_job(r, "inc", id, data, NULL, NULL);
        why = finished_field(r, "inc", id, "failedReason", 5000, buf, sizeof buf);
        if (!strstr(why, "callDepth") || strstr(why, "Maximum call depth"))
            T_FAIL_("callDepth %s: failedReason \"%s\"", depths[i], why);
    }
out:
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

/* -- 4. an id whose hash is gone -- */

static int missing_events;
static void on_missing(const char *event, const am2z_value *data, void *ud) {
    (void)event; (void)ud;
    if (strcmp(am2z_value_get_string(data, "jobId", ""), "ghost1") == 0)
        __atomic_add_fetch(&missing_events, 1, __ATOMIC_SEQ_CST);
}

static void test_missing_hash_visible(void) {
    counting c;
    am2z_logger *lg;
    am2z_queue_desc d;
    am2z_runtime *rt;
    am2z_redis *r = fx_conn(port);
    am2z_value *stats;
    char buf[64];
    memset(&c, 0, sizeof c);
    c.word = "ghost";
    lg = counting_logger(&c);
    d = qdesc(port, 1, lg);
    rt = am2z_queue_runtime_new(&d, NULL);
    __atomic_store_n(&missing_events, 0, __ATOMIC_SEQ_CST);
    CHECK(rt && r);
    if (!rt || !r) goto out;
    CHECK_INT(am2z_runtime_register(rt, plain("inc", p_inc)), AM2Z_STATUS_OK);
    CHECK(am2z_runtime_on(rt, "queue:job:missing", on_missing, NULL) != 0);
    cmd(r, "LPUSH bull:am2z~inc:wait %s", "ghost1", NULL);
    cmd(r, "LPUSH bull:am2z~inc:wait %s", "ghost2", NULL);
    /* a real job behind them: once it finished, the worker has seen both ghosts */
    hand_job(r, "inc", "real1", "{\"count\":1}", NULL, NULL);
    CHECK(finished_field(r, "inc", "real1", "returnvalue", 5000, buf, sizeof buf)[0] != '\0');
    CHECK_INT(__atomic_load_n(&missing_events, __ATOMIC_SEQ_CST), 1);
    stats = am2z_runtime_stats(rt);
    CHECK_INT(am2z_value_get_int(stats, "missing", -1), 2);
    am2z_value_release(stats);
    CHECK_INT(__atomic_load_n(&c.with_word, __ATOMIC_SEQ_CST), 1); /* logged once */
out:
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

/* -- 5. an outage's log lines -- */

static void test_outage_logs_state_changes(void) {
    /* ~2 s without Redis: a few lines (lost, restored), not one per thread per 100 ms
       reconnect attempt (before: some 80 here) */
    t_redis s;
    counting c;
    am2z_logger *lg;
    am2z_queue_desc d;
    am2z_runtime *rt = NULL;
    am2z_state *in = NULL;
    am2z_outcome out;
    int64_t until;
    int warn;
    T_REDIS_START(&s, NULL);
    memset(&c, 0, sizeof c);
    c.word = "restored";
    lg = counting_logger(&c);
    d = qdesc(s.port, 2, lg);
    rt = am2z_queue_runtime_new(&d, NULL);
    CHECK(rt != NULL);
    if (!rt) goto out;
    CHECK_INT(am2z_runtime_register(rt, plain("inc", p_inc)), AM2Z_STATUS_OK);
    t_redis_sleep_ms(100);
    __atomic_store_n(&c.warn, 0, __ATOMIC_SEQ_CST);
    t_redis_kill(&s);
    t_redis_sleep_ms(2000);
    CHECK_INT(t_redis_restart(&s, 0), 0);
    /* it works again, and says so once */
    in = am2z_state_new("t", am2z_value_set(am2z_value_object(), "count", am2z_value_int(1)), NULL);
    until = now_ms() + 10000;
    do {
        out = am2z_runtime_execute(rt, "inc", in);
        if (!out.error) break;
        am2z_outcome_clear(&out);
        t_redis_sleep_ms(50);
    } while (now_ms() < until);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    until = now_ms() + 5000;
    while (__atomic_load_n(&c.with_word, __ATOMIC_SEQ_CST) == 0 && now_ms() < until) t_redis_sleep_ms(10);
    warn = __atomic_load_n(&c.warn, __ATOMIC_SEQ_CST);
    if (warn < 1 || warn > 6) T_FAIL_("%d warnings during a 2 s outage (want the loss, once)", warn);
    CHECK_INT(__atomic_load_n(&c.with_word, __ATOMIC_SEQ_CST), 1);
out:
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
    t_redis_stop(&s);
}

/* -- 3. a frozen Redis (SIGSTOP): every call keeps its own bound -- */

static int64_t elapsed_since(int64_t t0) { return now_ms() - t0; }

static void test_frozen_execute_and_free(void) {
    /* a processor with a 300 ms timeout: execute returns by its deadline, not after the
       5 s command timeout; free returns after the stop's 500 ms for its last commands,
       not after the command timeouts of every thread (before: 5 s and more than 10 s) */
    t_redis s;
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d;
    am2z_runtime *rt = NULL;
    am2z_processor_desc pd;
    am2z_state *in = am2z_state_new("t", am2z_value_set(am2z_value_object(), "count", am2z_value_int(1)), NULL);
    am2z_outcome out;
    int64_t t0, took;
    T_REDIS_START(&s, NULL);
    d = qdesc(s.port, 1, lg);
    d.redis.command_timeout_ms = 5000;
    rt = am2z_queue_runtime_new(&d, NULL);
    CHECK(rt != NULL);
    if (!rt) goto out;
    memset(&pd, 0, sizeof pd);
    pd.name = "inc";
    pd.fn = p_inc;
    pd.timeout_ms = 300;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)), AM2Z_STATUS_OK);
    out = am2z_runtime_execute(rt, "inc", in); /* warm: pooled connections exist */
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    t_redis_freeze(&s);
    t0 = now_ms();
    out = am2z_runtime_execute(rt, "inc", in);
    took = elapsed_since(t0);
    t_redis_thaw(&s);
    CHECK(out.error != NULL && strcmp(out.error->name, "TimeoutError") == 0);
    if (took > 2500) T_FAIL_("execute of a 300 ms processor took %lld ms on a frozen Redis", (long long)took);
    am2z_outcome_clear(&out);
    t_redis_freeze(&s);
    t0 = now_ms();
    am2z_runtime_free(rt);
    took = elapsed_since(t0);
    t_redis_thaw(&s);
    rt = NULL;
    if (took > 3000) T_FAIL_("free took %lld ms on a frozen Redis", (long long)took);
out:
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
    t_redis_stop(&s);
}

static void test_frozen_register(void) {
    /* register's Redis work shares one command timeout (1.5 s here; before it waited one
       per step: 3 s with workers) */
    t_redis s;
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d;
    am2z_runtime *rt = NULL;
    int64_t t0, took;
    T_REDIS_START(&s, NULL);
    d = qdesc(s.port, 2, lg);
    d.redis.command_timeout_ms = 1500;
    rt = am2z_queue_runtime_new(&d, NULL);
    CHECK(rt != NULL);
    if (!rt) goto out;
    t_redis_sleep_ms(50);
    t_redis_freeze(&s);
    t0 = now_ms();
    CHECK_INT(am2z_runtime_register(rt, plain("inc", p_inc)), AM2Z_STATUS_OK);
    took = elapsed_since(t0);
    t_redis_thaw(&s);
    if (took > 2400) T_FAIL_("register took %lld ms on a frozen Redis (bound: 1500 ms)", (long long)took);
out:
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
    t_redis_stop(&s);
}

/* -- 2. a Redis still loading its data -- */

/* The last command of this instance's result receiver (CLIENT LIST's cmd=), into buf. */
static const char *receiver_cmd(am2z_redis *r, const char *instance, char *buf, size_t size) {
    am2z_reply rep;
    char name[96];
    const char *line, *c;
    memset(&rep, 0, sizeof rep);
    buf[0] = '\0';
    snprintf(name, sizeof name, "%s:results ", instance);
    if (am2z_redis_command(r, &rep, "CLIENT LIST") == AM2Z_STATUS_OK && (line = strstr(am2z_reply_str(&rep), name)) &&
        (c = strstr(line, " cmd=")) != NULL)
        snprintf(buf, size, "%.*s", (int)strcspn(c + 5, " \n"), c + 5);
    am2z_reply_clear(&rep);
    return buf;
}

static void test_loading_keeps_blmove(void) {
    /* the receiver reconnects while Redis loads its data (-LOADING for 1-2 s): it keeps
       BLMOVE, which only "unknown command" may give up; before, it fell back to BRPOPLPUSH for
       good */
    static const char *const extra[] = {"--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024", NULL};
    t_redis s;
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d;
    am2z_runtime *rt = NULL;
    am2z_redis *r = NULL;
    am2z_reply rep;
    char buf[32];
    int64_t until;
    int saw_loading = 0;
    memset(&rep, 0, sizeof rep);
    T_REDIS_START(&s, (const char *const *)extra);
    r = fx_conn(s.port);
    CHECK(r != NULL);
    if (!r) goto out;
    am2z_redis_command(r, &rep, "EVAL %s 0", "for i = 1, 2000 do redis.call('SET', 'k' .. i, i) end");
    am2z_redis_command(r, &rep, "SAVE");
    CHECK_STR(am2z_reply_str(&rep), "OK");
    am2z_reply_clear(&rep);
    d = qdesc(s.port, AM2Z_QUEUE_NO_WORKERS, lg);
    rt = am2z_queue_runtime_new(&d, NULL);
    CHECK(rt != NULL);
    if (!rt) goto out;
    until = now_ms() + 3000;
    while (strcmp(receiver_cmd(r, am2z_queue_instance_id(rt), buf, sizeof buf), "blmove") != 0 && now_ms() < until)
        t_redis_sleep_ms(20);
    CHECK_STR(buf, "blmove");
    am2z_redis_free(r);
    r = NULL;
    t_redis_kill(&s);
    CHECK_INT(t_redis_restart(&s, 0), 0);
    /* the receiver comes back while Redis is still loading (it retries every 100 ms) */
    r = am2z_redis_new(&(am2z_redis_desc){.host = "127.0.0.1", .port = s.port}, NULL);
    until = now_ms() + 10000;
    while (now_ms() < until) {
        am2z_status st = am2z_redis_connect(r);
        if (st == AM2Z_STATUS_OK) st = am2z_redis_command(r, &rep, "PING");
        if (st == AM2Z_STATUS_SERVER && strncmp(am2z_reply_str(&rep), "LOADING", 7) == 0) saw_loading = 1;
        am2z_reply_clear(&rep);
        if (st == AM2Z_STATUS_OK) break;
        t_redis_sleep_ms(20);
    }
    if (!saw_loading) goto out;
    /* loaded: the receiver's next round (BLMOVE waits 1 s) names its command */
    t_redis_sleep_ms(1500);
    until = now_ms() + 3000;
    while (strcmp(receiver_cmd(r, am2z_queue_instance_id(rt), buf, sizeof buf), "blmove") != 0 && now_ms() < until)
        t_redis_sleep_ms(50);
    CHECK_STR(buf, "blmove");
out:
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
    t_redis_stop(&s);
    if (!saw_loading && !t_case_failed) T_SKIP("Redis loaded its data before anyone saw -LOADING: this case did NOT run");
}

/* -- a fake server: a forked child that answers one connection with canned bytes -- */

typedef struct fake {
    int port;
    pid_t pid;
} fake;

/* Serves one connection: reads until `until` appeared in what the client sent (or 5 s),
   writes reply (len bytes), then holds the connection open until the client closes it. */
static int fake_start(fake *f, const char *until, const char *reply, size_t len) {
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    memset(f, 0, sizeof *f);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0) return -1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 4) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        close(lfd);
        return -1;
    }
    f->port = ntohs(a.sin_port);
    fflush(NULL);
    f->pid = fork();
    if (f->pid < 0) { close(lfd); return -1; }
    if (f->pid == 0) {
        char in[4096];
        size_t got = 0, off = 0;
        int fd;
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        alarm(10); /* a test that fails never leaves it behind */
        fd = accept(lfd, NULL, NULL);
        if (fd < 0) _exit(1);
        while (got < sizeof in - 1) {
            ssize_t n = read(fd, in + got, sizeof in - 1 - got);
            if (n <= 0) _exit(0);
            got += (size_t)n;
            in[got] = '\0';
            if (strstr(in, until)) break;
        }
        while (off < len) {
            ssize_t n = send(fd, reply + off, len - off, MSG_NOSIGNAL);
            if (n <= 0) _exit(0);
            off += (size_t)n;
        }
        while (read(fd, in, sizeof in) > 0) {}
        _exit(0);
    }
    close(lfd);
    return 0;
}
static void fake_stop(fake *f) {
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        while (waitpid(f->pid, NULL, 0) < 0 && errno == EINTR) {}
    }
    f->pid = 0;
}

/* -- 7b. handshake replies of the wrong type -- */

static void test_handshake_reply_types(void) {
    /* an array where SELECT (or CLIENT SETNAME) answers +OK, and where HELLO answers a
       map, is no success: before, connect took any non-error reply */
    static const char arr[] = "*1\r\n$2\r\nOK\r\n";
    struct { int resp3, db; const char *name, *until; } cases[] = {
        {0, 3, NULL, "SELECT\r\n$1\r\n3\r\n"},
        {0, 0, "me", "SETNAME\r\n$2\r\nme\r\n"},
        {1, 0, NULL, "HELLO\r\n$1\r\n3\r\n"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake f;
        am2z_redis_desc d;
        am2z_redis *r;
        am2z_status st;
        memset(&d, 0, sizeof d);
        if (fake_start(&f, cases[i].until, arr, sizeof arr - 1) != 0) { T_FAIL_("fake server"); return; }
        d.host = "127.0.0.1";
        d.port = f.port;
        d.db = cases[i].db;
        d.resp3 = cases[i].resp3;
        d.client_name = cases[i].name;
        d.connect_timeout_ms = 3000;
        r = am2z_redis_new(&d, NULL);
        st = am2z_redis_connect(r);
        if (st != AM2Z_STATUS_PROTOCOL) T_FAIL_("case %u: %s (%s)", (unsigned)i, am2z_status_string(st), am2z_status_detail());
        else CHECK(strstr(am2z_status_detail(), "array") != NULL);
        CHECK(!am2z_redis_is_connected(r));
        am2z_redis_free(r);
        fake_stop(&f);
    }
}

/* -- 6. a reply line without CR LF -- */

static void test_reply_buffer_bounded(void) {
    /* 2 MiB of a simple string that never ends: a connection gives up at its 1 MiB
       default (LIMIT) instead of buffering up to 64 MiB; desc.limits.max_buffer raises it */
    size_t len = (size_t)2 << 20;
    char *line = (char *)malloc(len);
    int pass;
    CHECK(line != NULL);
    if (!line) return;
    memset(line, 'a', len);
    line[0] = '+';
    for (pass = 0; pass < 2; pass++) {
        fake f;
        am2z_redis_desc d;
        am2z_redis *r;
        am2z_reply rep;
        am2z_status st;
        memset(&rep, 0, sizeof rep);
        if (fake_start(&f, "PING\r\n", line, len) != 0) { T_FAIL_("fake server"); break; }
        memset(&d, 0, sizeof d);
        d.host = "127.0.0.1";
        d.port = f.port;
        d.command_timeout_ms = pass == 0 ? 5000 : 300;
        if (pass == 1) d.limits.max_buffer = (size_t)4 << 20;
        r = am2z_redis_new(&d, NULL);
        CHECK_INT(am2z_redis_connect(r), AM2Z_STATUS_OK);
        st = am2z_redis_command(r, &rep, "PING");
        if (pass == 0) {
            CHECK_INT(st, AM2Z_STATUS_LIMIT);
            CHECK(strstr(am2z_status_detail(), "buffer limit 1048576") != NULL);
        } else {
            CHECK_INT(st, AM2Z_STATUS_TIMEOUT); /* all 2 MiB fit: it waits for the line's end */
        }
        CHECK(!am2z_redis_is_connected(r));
        am2z_redis_free(r);
        fake_stop(&f);
    }
    free(line);
}

static void test_pool_slot_after_connect_timeout(void) {
    /* a pooled connect whose handshake timed out gives its slot back: before, a pool of
       one was "all 1 connections busy" for good after it */
    fake f;
    am2z_redis_desc d;
    am2z_redis_pool *p;
    am2z_status st = AM2Z_STATUS_OK;
    int i;
    if (fake_start(&f, "never sent", "", 0) != 0) { T_FAIL_("fake server"); return; }
    memset(&d, 0, sizeof d);
    d.host = "127.0.0.1";
    d.port = f.port;
    d.db = 1; /* a handshake: SELECT, which the fake server never answers */
    d.connect_timeout_ms = 100;
    p = am2z_redis_pool_new(&d, 1, NULL);
    for (i = 0; i < 2; i++) {
        /* the first times out in SELECT; the fake server is gone for the second (IO) */
        CHECK(am2z_redis_pool_get(p, 1000, &st) == NULL);
        CHECK(st == AM2Z_STATUS_TIMEOUT || (i == 1 && st == AM2Z_STATUS_IO));
        if (strstr(am2z_status_detail(), "busy")) T_FAIL_("get %d: %s", i, am2z_status_detail());
    }
    am2z_redis_pool_free(p);
    fake_stop(&f);
}

#define RUN(fn) do { fx_flushall(port); T_RUN(fn); } while (0)

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

static am2z_result never_runs(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_retain(in));
}

/* A result the receiver took from Redis but never got (Redis died after the move, before
   its answer arrived) is read again after the reconnect: found by the 100,000-execution
   chaos run, where one caller of 100,000 waited out its deadline. Played here without a
   crash: a result put in the receiver's taken list, and its connection killed. */
static void test_taken_result_read_again(void) {
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d = qdesc(port, AM2Z_QUEUE_NO_WORKERS, lg);
    am2z_runtime *rt = am2z_queue_runtime_new(&d, NULL);
    am2z_redis *r = fx_conn(port);
    am2z_state *in = am2z_state_parse("default", "{\"x\":1}", AM2Z_NTS, NULL);
    am2z_execution *e = NULL;
    am2z_outcome out = {0};
    am2z_reply rep;
    char key[256], msg[512], name[128];
    const char *line, *id;
    memset(&rep, 0, sizeof rep);
    CHECK(rt && r && in);
    if (!rt || !r || !in) goto done;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){.name = "taken", .fn = never_runs},
                                                          NULL)), AM2Z_STATUS_OK);
    e = am2z_runtime_submit(rt, "taken", in, NULL, NULL); /* no worker anywhere: no reply comes */
    CHECK(e != NULL);
    if (!e) goto done;
    snprintf(key, sizeof key, "bull:am2z:reply:%s:taken", am2z_queue_instance_id(rt));
    snprintf(msg, sizeof msg, "%s {\"ok\":true,\"attempts\":1,\"errors\":[],\"state\":{\"metadata\":"
             "{\"version\":2,\"sessionId\":\"default\",\"createdAt\":1,\"lastUpdated\":1},\"x\":42}}",
             am2z_execution_id(e));
    cmd(r, "RPUSH %s %s", key, msg);
    /* the receiver's connection dies: it reconnects and reads its taken list first */
    snprintf(name, sizeof name, "%s:results ", am2z_queue_instance_id(rt));
    CHECK_INT(am2z_redis_command(r, &rep, "CLIENT LIST"), AM2Z_STATUS_OK);
    line = strstr(am2z_reply_str(&rep), name);
    id = line ? line : NULL;
    while (id && id > am2z_reply_str(&rep) && id[-1] != '\n') id--;
    CHECK(id && strncmp(id, "id=", 3) == 0);
    if (id && strncmp(id, "id=", 3) == 0) {
        char idbuf[32];
        snprintf(idbuf, sizeof idbuf, "%.*s", (int)strcspn(id + 3, " "), id + 3);
        cmd(r, "CLIENT KILL ID %s", idbuf, NULL);
    }
    am2z_reply_clear(&rep);
    CHECK_INT(am2z_execution_wait(e, 10000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_int(out.state, "x", 0), 42);
done:
    am2z_outcome_clear(&out);
    am2z_execution_free(e);
    am2z_value_release(in);
    am2z_redis_free(r);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

int main(void) {
    T_RUN(test_handshake_reply_types);
    T_RUN(test_reply_buffer_bounded);
    T_RUN(test_pool_slot_after_connect_timeout);
    T_RUN(start_server);
    if (!port) return t_done();
    RUN(test_attempts_out_of_range);
    RUN(test_numbers_of_other_fields);
    RUN(test_call_depth_validated);
    RUN(test_missing_hash_visible);
    RUN(test_taken_result_read_again);
    T_RUN(test_outage_logs_state_changes);
    T_RUN(test_frozen_execute_and_free);
    T_RUN(test_frozen_register);
    T_RUN(test_loading_keeps_blmove);
    t_redis_stop(&server);
    return t_done();
}
