/* test_queue_sentinel.c - Redis Sentinel (am2z_resp.h section 3, SENTINEL): connections
   find the master through the sentinels, check it with ROLE, and follow a failover.
   Started here on free loopback ports: 1 master + 1 replica (tests/redis_harness.h) and
   3 sentinels (redis-server <conf> --sentinel, each with its own writable config, small
   down-after-milliseconds and failover-timeout), plus in-process fake sentinels for the
   failure paths:
     - bad sentinel descs are refused with a detail (no server needed);
     - sentinels that refuse or never answer fail the connect within
       n_sentinels x connect_timeout_ms, naming the master and the last reason;
     - a sentinel that names a replica: ROLE says slave, the next sentinel is asked, the
       connection lands on the master; with only that sentinel the connect fails clearly;
     - a queue runtime (a producer and a worker runtime, both through the sentinels) runs
       jobs from 3 caller threads while the master is killed with kill -9: every call
       returns (a result or a clear error; lost = 0), results are right, and the jobs
       submitted after the failover all succeed on the promoted replica. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include <pthread.h>
#include <poll.h>
#include "fixture.h"

#define NSENT 3
#define MASTER_NAME "m1"

static t_redis master, replica;
static am2z_logger *g_quiet;

typedef struct sentinel_proc {
    int port;
    pid_t pid;
    char dir[64];
} sentinel_proc;
static sentinel_proc sents[NSENT];
static char sent_spec[NSENT][32];
static const char *sent_list[NSENT];

static long long now_ms(void) { return am2z_monotonic_ns() / 1000000; }

/* -- helpers -- */

/* The master port sentinel s names, 0 when it names none or does not answer. */
static int sentinel_master_port(int sport) {
    am2z_redis *r = fx_conn_timeout(sport, 1000, 2000);
    am2z_reply rep;
    int port = 0;
    memset(&rep, 0, sizeof rep);
    if (r && am2z_redis_command(r, &rep, "SENTINEL get-master-addr-by-name %s", MASTER_NAME) == AM2Z_STATUS_OK &&
        rep.type == AM2Z_REPLY_ARRAY && rep.len == 2)
        port = atoi(am2z_reply_str(am2z_reply_at(&rep, 1)));
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return port;
}

/* A field of SENTINEL MASTER (a flat name, value array) as a number, -1 when missing. */
static long sentinel_field(int sport, const char *field) {
    am2z_redis *r = fx_conn_timeout(sport, 1000, 2000);
    am2z_reply rep;
    long v = -1;
    size_t i;
    memset(&rep, 0, sizeof rep);
    if (r && am2z_redis_command(r, &rep, "SENTINEL MASTER %s", MASTER_NAME) == AM2Z_STATUS_OK &&
        rep.type == AM2Z_REPLY_ARRAY)
        for (i = 0; i + 1 < rep.len; i += 2)
            if (strcmp(am2z_reply_str(am2z_reply_at(&rep, i)), field) == 0)
                v = atol(am2z_reply_str(am2z_reply_at(&rep, i + 1)));
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return v;
}

static int sentinel_start(sentinel_proc *s, int master_port) {
    char conf[128], text[1024], port[16];
    FILE *f;
    int attempt;
    snprintf(s->dir, sizeof s->dir, "/tmp/am2z-sentinel-XXXXXX");
    if (!mkdtemp(s->dir)) return -1;
    snprintf(conf, sizeof conf, "%s/sentinel.conf", s->dir);
    for (attempt = 0; attempt < 5; attempt++) {
        pid_t pid;
        s->port = t_redis_free_port();
        snprintf(port, sizeof port, "%d", s->port);
        /* written again each try: a sentinel rewrites its config as it learns */
        snprintf(text, sizeof text,
                 "port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\nlogfile %s/sentinel.log\n"
                 "sentinel monitor %s 127.0.0.1 %d 2\n"
                 "sentinel down-after-milliseconds %s 1000\n"
                 "sentinel failover-timeout %s 5000\n"
                 "sentinel parallel-syncs %s 1\n",
                 s->port, s->dir, s->dir, MASTER_NAME, master_port, MASTER_NAME, MASTER_NAME, MASTER_NAME);
        if (!(f = fopen(conf, "w"))) return -1;
        fputs(text, f);
        fclose(f);
        fflush(NULL);
        pid = fork();
        if (pid < 0) return -1;
        if (pid == 0) {
            int devnull = open("/dev/null", O_RDWR);
#ifdef __linux__
            prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
            if (devnull >= 0) { dup2(devnull, 0); dup2(devnull, 1); dup2(devnull, 2); }
            execlp("redis-server", "redis-server", conf, "--sentinel", (char *)NULL);
            _exit(127);
        }
        s->pid = pid;
        {
            t_redis probe; /* t_redis_wait_ready pings the port and watches the pid */
            memset(&probe, 0, sizeof probe);
            probe.port = s->port;
            probe.pid = pid;
            if (t_redis_wait_ready(&probe) == 0) return 0;
            t_redis_reap(&probe, SIGKILL);
            s->pid = 0;
        }
    }
    return -1;
}

static void sentinel_stop(sentinel_proc *s) {
    char path[160];
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR) {}
    }
    s->pid = 0;
    if (!s->dir[0]) return;
    snprintf(path, sizeof path, "%s/sentinel.conf", s->dir); unlink(path);
    snprintf(path, sizeof path, "%s/sentinel.log", s->dir); unlink(path);
    rmdir(s->dir);
    s->dir[0] = 0;
}

/* A fake sentinel on a loopback port: answers every request with [127.0.0.1, port]
   (the address it is told to name) and closes; or, with answer_port 0, a socket that is
   listened on but never accepted (connects succeed, nothing is answered). */
typedef struct fake_sentinel {
    int fd, port, answer_port, stop;
    pthread_t thread;
    int running;
} fake_sentinel;

static void *fake_main(void *arg) {
    fake_sentinel *f = (fake_sentinel *)arg;
    char reply[128], buf[512];
    int n = snprintf(reply, sizeof reply, "*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%d\r\n",
                     f->answer_port >= 10000 ? 5 : f->answer_port >= 1000 ? 4 : 3, f->answer_port);
    while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd p;
        int c;
        p.fd = f->fd;
        p.events = POLLIN;
        if (poll(&p, 1, 50) <= 0) continue;
        if ((c = accept(f->fd, NULL, NULL)) < 0) continue;
        p.fd = c;
        if (poll(&p, 1, 2000) > 0 && read(c, buf, sizeof buf) > 0 && write(c, reply, (size_t)n) == n) {}
        close(c);
    }
    return NULL;
}

static int fake_start(fake_sentinel *f, int answer_port) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    memset(f, 0, sizeof *f);
    f->answer_port = answer_port;
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (f->fd < 0 || bind(f->fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(f->fd, 16) != 0 ||
        getsockname(f->fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    f->port = ntohs(a.sin_port);
    if (answer_port && pthread_create(&f->thread, NULL, fake_main, f) != 0) return -1;
    f->running = answer_port != 0;
    return 0;
}

static void fake_stop(fake_sentinel *f) {
    __atomic_store_n(&f->stop, 1, __ATOMIC_RELEASE);
    if (f->running) pthread_join(f->thread, NULL);
    if (f->fd >= 0) close(f->fd);
}

static am2z_redis_desc sentinel_desc(const char *const *list, int n, int64_t connect_ms) {
    am2z_redis_desc d;
    memset(&d, 0, sizeof d);
    d.sentinels = list;
    d.n_sentinels = n;
    d.sentinel_master = MASTER_NAME;
    d.connect_timeout_ms = connect_ms;
    d.command_timeout_ms = 3000;
    return d;
}

/* Master, replica and the 3 sentinels, all knowing each other; 0 or -1 (the servers
   started so far keep running for teardown). */
static int cluster_start(void) {
    const char *extra[4];
    char mport[16];
    long long until;
    int i, ready = 0;
    if (t_redis_start(&master, NULL) != 0) return -1;
    snprintf(mport, sizeof mport, "%d", master.port);
    extra[0] = "--replicaof"; extra[1] = "127.0.0.1"; extra[2] = mport; extra[3] = NULL;
    /* replica's args are copied into it by pointer: keep them alive (static below) */
    {
        static char keep[16];
        static const char *rextra[4];
        memcpy(keep, mport, sizeof keep);
        rextra[0] = extra[0]; rextra[1] = extra[1]; rextra[2] = keep; rextra[3] = NULL;
        if (t_redis_start(&replica, rextra) != 0) return -1;
    }
    for (i = 0; i < NSENT; i++) {
        if (sentinel_start(&sents[i], master.port) != 0) return -1;
        snprintf(sent_spec[i], sizeof sent_spec[i], "127.0.0.1:%d", sents[i].port);
        sent_list[i] = sent_spec[i];
    }
    until = now_ms() + 20000;
    while (now_ms() < until && !ready) {
        ready = fx_replica_up(replica.port);
        for (i = 0; i < NSENT && ready; i++)
            ready = sentinel_field(sents[i].port, "num-other-sentinels") >= NSENT - 1 &&
                    sentinel_field(sents[i].port, "num-slaves") >= 1;
        if (!ready) t_redis_sleep_ms(100);
    }
    return ready ? 0 : -1;
}

static void cluster_stop(void) {
    int i;
    for (i = 0; i < NSENT; i++) sentinel_stop(&sents[i]);
    t_redis_stop(&replica);
    t_redis_stop(&master);
}

/* -- tests -- */

static void test_desc_checks(void) {
    const char *good[1] = {"127.0.0.1:26379"};
    const char *const *lists[6];
    const char *bads[6][1] = {{"127.0.0.1"}, {"host:0"}, {"host:70000"}, {"::1:26379"}, {":26379"}, {"h:2x"}};
    am2z_redis_desc d = sentinel_desc(good, 1, 500);
    am2z_status st = AM2Z_STATUS_OK;
    am2z_redis *r;
    am2z_queue_desc qd;
    int i;
    d.sentinel_master = NULL;
    CHECK(am2z_redis_new(&d, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "sentinel_master") != NULL);
    d = sentinel_desc(NULL, 1, 500);
    CHECK(am2z_redis_new(&d, &st) == NULL);
    CHECK(strstr(am2z_status_detail(), "sentinels is NULL") != NULL);
    d = sentinel_desc(good, AM2Z_REDIS_MAX_SENTINELS + 1, 500);
    CHECK(am2z_redis_new(&d, &st) == NULL);
    CHECK(strstr(am2z_status_detail(), "AM2Z_REDIS_MAX_SENTINELS") != NULL);
    for (i = 0; i < 6; i++) {
        lists[i] = bads[i];
        d = sentinel_desc(lists[i], 1, 500);
        st = AM2Z_STATUS_OK;
        CHECK(am2z_redis_new(&d, &st) == NULL);
        CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
        if (!strstr(am2z_status_detail(), "is not host:port")) T_FAIL_("case %d: %s", i, am2z_status_detail());
    }
    /* IPv6 in brackets is fine; the list is copied (the caller's may go away) */
    {
        char spec[32] = "[::1]:26379";
        const char *v6[1];
        v6[0] = spec;
        d = sentinel_desc(v6, 1, 500);
        r = am2z_redis_new(&d, &st);
        CHECK(r != NULL);
        memset(spec, 'x', sizeof spec - 1);
        am2z_redis_free(r);
    }
    /* the queue runtime passes the desc's own reason on */
    memset(&qd, 0, sizeof qd);
    qd.redis = sentinel_desc(lists[0], 1, 500);
    qd.concurrency = AM2Z_QUEUE_NO_WORKERS;
    qd.logger = g_quiet;
    CHECK(am2z_queue_runtime_new(&qd, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "is not host:port") != NULL);
}

/* Refused and silent sentinels: the connect fails within n x connect_timeout_ms, and
   the detail names the master and the last reason. */
static void test_no_sentinel_answers(void) {
    fake_sentinel silent;
    char spec[3][32];
    const char *list[3];
    am2z_redis_desc d;
    am2z_redis *r;
    am2z_status st;
    long long t0, took;
    int i;
    CHECK_INT(fake_start(&silent, 0), 0);
    snprintf(spec[0], sizeof spec[0], "127.0.0.1:%d", t_redis_free_port()); /* nothing listens */
    snprintf(spec[1], sizeof spec[1], "127.0.0.1:%d", silent.port);
    snprintf(spec[2], sizeof spec[2], "127.0.0.1:%d", silent.port);
    for (i = 0; i < 3; i++) list[i] = spec[i];
    d = sentinel_desc(list, 3, 300);
    r = am2z_redis_new(&d, NULL);
    CHECK(r != NULL);
    t0 = now_ms();
    st = am2z_redis_connect(r);
    took = now_ms() - t0;
    CHECK_INT(st, AM2Z_STATUS_TIMEOUT); /* the last sentinel asked timed out */
    CHECK(!am2z_redis_is_connected(r));
    if (!strstr(am2z_status_detail(), "redis sentinel " MASTER_NAME ": no master through 3 sentinels; last: "))
        T_FAIL_("detail: %s", am2z_status_detail());
    CHECK(took >= 500);   /* both silent sentinels were waited for ... */
    CHECK(took < 3 * 300 + 1500); /* ... each within the connect timeout */
    am2z_redis_free(r);
    fake_stop(&silent);
}

/* A sentinel that names the replica: ROLE says slave, so the next sentinel is asked and
   the connection ends on the master; alone, it fails the connect clearly. */
static void test_role_check(void) {
    fake_sentinel liar;
    char spec[32];
    const char *list[2];
    am2z_redis_desc d;
    am2z_redis *r;
    am2z_reply rep;
    am2z_status st;
    CHECK_INT(fake_start(&liar, replica.port), 0);
    snprintf(spec, sizeof spec, "127.0.0.1:%d", liar.port);
    list[0] = spec;
    list[1] = sent_list[0];
    d = sentinel_desc(list, 2, 2000);
    r = am2z_redis_new(&d, NULL);
    st = am2z_redis_connect(r);
    if (st != AM2Z_STATUS_OK) T_FAIL_("connect: %s", am2z_status_detail());
    CHECK_INT(fx_server_port(r), master.port);
    memset(&rep, 0, sizeof rep);
    CHECK_INT(am2z_redis_command(r, &rep, "SET sentinel-test yes"), AM2Z_STATUS_OK); /* writable: the master */
    am2z_reply_clear(&rep);
    /* a reconnect asks the sentinel that led to the master first (the liar is not asked) */
    CHECK_INT(am2z_redis_connect(r), AM2Z_STATUS_OK);
    CHECK_INT(fx_server_port(r), master.port);
    am2z_redis_free(r);
    d = sentinel_desc(list, 1, 2000);
    r = am2z_redis_new(&d, NULL);
    st = am2z_redis_connect(r);
    CHECK_INT(st, AM2Z_STATUS_IO);
    if (!strstr(am2z_status_detail(), "ROLE is 'slave', not master")) T_FAIL_("detail: %s", am2z_status_detail());
    CHECK(!am2z_redis_is_connected(r));
    am2z_redis_free(r);
    fake_stop(&liar);
}

/* -- the failover -- */

static am2z_result p_square(am2z_ctx *ctx, const am2z_state *in) {
    int64_t n = am2z_value_get_int(in, "n", 0);
    (void)ctx;
    t_redis_sleep_ms(5);
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "sq", am2z_value_int(n * n)));
}

#define MAX_CALLS 20000
static fx_call calls[MAX_CALLS];

static int square_right(const am2z_state *out, int64_t n) { return am2z_value_get_int(out, "sq", -1) == n * n; }

static void test_failover(void) {
    am2z_queue_desc qd;
    am2z_runtime *worker;
    am2z_runtime *producer;
    fx_callers cs;
    fx_tally tally;
    long long t_kill, t_new = 0, until;
    int i, j, odd = 0, new_port = 0;
    memset(&qd, 0, sizeof qd);
    qd.redis = sentinel_desc(sent_list, NSENT, 1000);
    qd.lock_duration_ms = 2000;
    qd.stalled_interval_ms = 500;
    qd.logger = g_quiet;
    /* 3 s: a job lost with the master answers its caller by then */
    if (!fx_worker_producer(&qd, "square", p_square, 3000, &worker, &producer)) return;
    fx_callers_start(&cs, producer, "square", square_right, calls, MAX_CALLS, "SENTINEL_VERBOSE");
    CHECK_INT(cs.started, FX_CALLERS);
    until = now_ms() + 15000;
    while (fx_callers_ok_after(&cs, 0) < 30 && now_ms() < until) t_redis_sleep_ms(20);
    CHECK(fx_callers_ok_after(&cs, 0) >= 30);
    t_kill = now_ms();
    if (getenv("SENTINEL_VERBOSE")) fprintf(stderr, "  %lld kill\n", t_kill);
    t_redis_kill(&master); /* kill -9 mid-run */
    until = now_ms() + 30000;
    while (now_ms() < until) {
        for (j = 0; j < NSENT && !new_port; j++)
            if (sentinel_master_port(sents[j].port) == replica.port) new_port = replica.port;
        if (new_port) break;
        t_redis_sleep_ms(100);
    }
    CHECK_INT(new_port, replica.port);
    t_new = now_ms();
    if (getenv("SENTINEL_VERBOSE")) fprintf(stderr, "  %lld new master\n", t_new);
    fprintf(stderr, "  sentinels named the new master %lld ms after the kill\n", t_new - t_kill);
    /* callers keep going: wait for results from calls that began after the failover */
    until = now_ms() + 20000;
    while (fx_callers_ok_after(&cs, t_new + 2000) < 60 && now_ms() < until) t_redis_sleep_ms(50);
    /* every caller must come back: an execution is bounded by its 3 s deadline */
    fx_callers_stop(&cs, "test_failover", 20000);
    tally = fx_callers_tally(&cs, t_kill, t_new);
    /* the errors say what happened: Redis unreachable, or a job lost with the master */
    for (i = 0; i < MAX_CALLS && i < cs.ncalls; i++)
        if (calls[i].end_ms && calls[i].ok == 0 && strcmp(calls[i].err, "NetworkError") != 0 &&
            strcmp(calls[i].err, "TimeoutError") != 0)
            odd++;
    CHECK_INT(tally.lost, 0);
    CHECK_INT(tally.wrong, 0);
    CHECK_INT(tally.late_fail, 0); /* a call begun well after the sentinels named the new master must succeed */
    CHECK_INT(tally.early_fail, 0);
    CHECK_INT(odd, 0);
    CHECK(fx_callers_ok_after(&cs, t_new + 2000) >= 60);
    /* and new work submitted now runs on the promoted replica */
    for (i = 0; i < 20; i++) {
        am2z_state *in = am2z_state_new("t", am2z_value_set(am2z_value_object(), "n", am2z_value_int(i)), NULL);
        am2z_outcome out = am2z_runtime_execute(producer, "square", in);
        if (out.error) T_FAIL_("after the failover: %s: %s", out.error->name, out.error->message);
        else CHECK_INT(am2z_value_get_int(out.state, "sq", -1), i * i);
        am2z_outcome_clear(&out);
        am2z_value_release(in);
    }
    am2z_runtime_free(producer);
    am2z_runtime_free(worker);
}

int main(void) {
    int rc;
    g_quiet = fx_quiet();
    T_RUN(test_desc_checks);
    T_RUN(test_no_sentinel_answers);
    rc = t_redis_installed() ? cluster_start() : T_REDIS_MISSING;
    if (rc == T_REDIS_MISSING && getenv("CI")) {
        fprintf(stderr, "FAIL: redis-server is not installed, and CI is set\n");
        t_failed++;
    } else if (rc == T_REDIS_MISSING) {
        fprintf(stderr, "SKIP test_queue_sentinel: redis-server is not installed: the Sentinel tests did NOT run\n");
        t_skipped += 2;
    } else if (rc != 0) {
        fprintf(stderr, "FAIL: master, replica and sentinels did not come up\n");
        t_failed++;
    } else {
        T_RUN(test_role_check);
        T_RUN(test_failover);
    }
    cluster_stop();
    am2z_logger_release(g_quiet);
    return t_done();
}
