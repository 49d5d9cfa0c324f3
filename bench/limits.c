/* bench/limits.c - what the queue runtime's limits cost Redis per job: the fetch,
   complete, fail, retry and stalled scripts with the processor-wide global_concurrency
   (its slot zset) against the same scripts of another build, on one private
   redis-server per round.

       plain      4 worker threads in the process, N no-op jobs of a processor without a
                  cap on its global queue (what every job pays for the cap's existence);
       capped     the same with global_concurrency 2 on its global queue (both builds
                  enforce the same cap there);
       sessions   the same over 4 sessions' queues (the slot zset, the blocked list and
                  the wake-ups at work; a build that capped each queue alone ran up to
                  4 x 2 at once there, so it did less limiting).

   For each: Redis's CPU time per job (INFO cpu, user + sys, all commands) and
   jobs/s from the first submit to the last result. `limits --vs OTHER` runs 3 rounds,
   this build and OTHER (the same source built against another commit's headers, e.g.
   the merge base: -DAM2Z_BENCH_HDR='"/tmp/base/am2z_resp.h"') interleaved, and prints
   the medians side by side with the load average; `limits` alone measures this build
   once. Size: AM2Z_BENCH_N (jobs per line, 4000). */
#include "../tests/proc.h"
#define AM2Z_RESP_IMPLEMENTATION
#ifndef AM2Z_BENCH_HDR
#define AM2Z_BENCH_HDR "../am2z_resp.h"
#endif
#include AM2Z_BENCH_HDR
#include "bench.h"

static int g_port;

static am2z_result noop(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_retain(in));
}

static am2z_redis *conn(void) {
    am2z_redis_desc d;
    am2z_redis *r;
    memset(&d, 0, sizeof d);
    d.host = "127.0.0.1";
    d.port = g_port;
    r = am2z_redis_new(&d, NULL);
    if (r && am2z_redis_connect(r) != AM2Z_STATUS_OK) { am2z_redis_free(r); r = NULL; }
    return r;
}

/* Redis's own CPU time so far (INFO cpu: user + sys, in us): what the jobs cost the
   server, preemption by other processes not included (EVALSHA's usec in commandstats
   is wall time, which a loaded machine inflates). -1 on failure. */
static double redis_cpu_us(void) {
    am2z_redis *r = conn();
    am2z_reply rep;
    double us = -1;
    const char *u, *y;
    memset(&rep, 0, sizeof rep);
    if (r && am2z_redis_command(r, &rep, "INFO cpu") == AM2Z_STATUS_OK &&
        (u = strstr(am2z_reply_str(&rep), "used_cpu_user:")) != NULL &&
        (y = strstr(am2z_reply_str(&rep), "used_cpu_sys:")) != NULL)
        us = (atof(u + 14) + atof(y + 13)) * 1e6;
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return us;
}

/* Runs n jobs of name (spread over nsess sessions, 0: the global queue): fills *us (Redis
   CPU us per job) and *rate (jobs/s); 0 when a job failed. */
static int line(am2z_runtime *rt, const char *name, int nsess, int n, double *us, double *rate) {
    static const char *const sess[4] = {"t-a", "t-b", "t-c", "t-d"};
    am2z_execution **e = (am2z_execution **)calloc((size_t)n, sizeof *e);
    am2z_state *in = am2z_state_parse(NULL, "{\"x\":1}", AM2Z_NTS, NULL);
    int64_t t0;
    double cpu0 = redis_cpu_us();
    int i, ok = 0;
    if (!e || !in) return 0;
    t0 = am2z_monotonic_ns();
    for (i = 0; i < n; i++) {
        const char *sid = nsess ? sess[i % nsess] : NULL;
        e[i] = am2z_runtime_submit(rt, name, in, sid, NULL);
    }
    for (i = 0; i < n; i++) {
        am2z_outcome out;
        memset(&out, 0, sizeof out);
        if (e[i] && am2z_execution_wait(e[i], 120000, &out) == AM2Z_STATUS_OK && !out.error) ok++;
        am2z_outcome_clear(&out);
        am2z_execution_free(e[i]);
    }
    *rate = (double)n / ((double)(am2z_monotonic_ns() - t0) / 1e9);
    *us = (redis_cpu_us() - cpu0) / n;
    am2z_value_release(in);
    free(e);
    return ok == n;
}

/* One round on a fresh redis-server: prints Redis CPU us/job and jobs/s of each line. */
static int one(int n) {
    tp_proc redis;
    am2z_queue_desc d;
    am2z_processor_desc pd;
    am2z_logger_desc ld;
    am2z_logger *quiet;
    am2z_runtime *rt;
    double v[6] = {0, 0, 0, 0, 0, 0};
    int ok;
    if (!(g_port = tp_redis_start(&redis))) return 0;
    memset(&ld, 0, sizeof ld);
    ld.min_level = AM2Z_LOG_ERROR;
    quiet = am2z_logger_new(&ld, NULL);
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = g_port;
    d.concurrency = 4;
    d.logger = quiet;
    rt = am2z_queue_runtime_new(&d, NULL);
    memset(&pd, 0, sizeof pd);
    pd.name = "plain";
    pd.fn = noop;
    ok = rt && am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)) == AM2Z_STATUS_OK;
    pd.name = "capped";
    pd.queue.global_concurrency = 2;
    ok = ok && am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)) == AM2Z_STATUS_OK;
    ok = ok && line(rt, "plain", 0, n, &v[0], &v[1]);
    ok = ok && line(rt, "capped", 0, n, &v[2], &v[3]);
    ok = ok && line(rt, "capped", 4, n, &v[4], &v[5]);
    am2z_runtime_free(rt);
    am2z_logger_release(quiet);
    tp_stop(&redis, SIGKILL, 2000);
    if (ok) printf("%.2f %.0f %.2f %.0f %.2f %.0f\n", v[0], v[1], v[2], v[3], v[4], v[5]);
    return ok;
}

/* Runs exe --one n and reads its six numbers; 0 on failure. */
static int run_round(const char *exe, int n, double *v) {
    tp_proc p;
    char ns[16], out[128];
    char *argv[4];
    snprintf(ns, sizeof ns, "%d", n);
    argv[0] = (char *)exe;
    argv[1] = (char *)"--one";
    argv[2] = ns;
    argv[3] = NULL;
    if (tp_spawn(&p, argv, NULL, 1) != 0) return 0;
    if (tp_readline(&p, out, sizeof out, 300000) != 1) { tp_stop(&p, SIGKILL, 1000); return 0; }
    tp_wait(&p, 10000);
    return sscanf(out, "%lf %lf %lf %lf %lf %lf", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) == 6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median3(double a, double b, double c) {
    double t[3];
    t[0] = a; t[1] = b; t[2] = c;
    qsort(t, 3, sizeof t[0], cmp_double);
    return t[1];
}

int main(int argc, char **argv) {
    int n = bench_env_int("AM2Z_BENCH_N", 4000), i, k;
    double ours[3][6], theirs[3][6];
    char self[1024];
    ssize_t len;
    static const char *const names[6] = {"plain: Redis CPU us/job", "plain: jobs/s", "capped 2: Redis CPU us/job",
                                         "capped 2: jobs/s", "capped 2, 4 sessions: CPU us/job",
                                         "capped 2, 4 sessions: jobs/s"};
    if (argc == 3 && strcmp(argv[1], "--one") == 0) return one(atoi(argv[2])) ? 0 : 1;
    if (argc != 3 || strcmp(argv[1], "--vs") != 0) {
        printf("limits bench: %d jobs per line, load average %.2f\n", n, bench_loadavg());
        printf("Redis CPU us/job and jobs/s: plain, capped 2, capped 2 over 4 sessions\n");
        fflush(stdout);
        return one(n) ? 0 : 1;
    }
    len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) return 1;
    self[len] = 0;
    printf("limits bench: %d jobs per line, 3 interleaved rounds, load average %.2f\n", n, bench_loadavg());
    for (i = 0; i < 3; i++) {
        if (!run_round(self, n, ours[i]) || !run_round(argv[2], n, theirs[i])) {
            fprintf(stderr, "limits bench: round %d failed\n", i);
            return 1;
        }
    }
    printf("%-30s %12s %12s\n", "(medians)", "this build", "other");
    for (k = 0; k < 6; k++)
        printf("%-30s %12.2f %12.2f\n", names[k], median3(ours[0][k], ours[1][k], ours[2][k]),
               median3(theirs[0][k], theirs[1][k], theirs[2][k]));
    printf("load average at the end %.2f\n", bench_loadavg());
    return 0;
}
