/* bench/queue.c - the queue runtime against BullMQ 6.7.0, both measured in this run on
   one private redis-server (`make bench-vs-bullmq`, or `make bench`):

       round trip      one caller executes a no-op and waits for it, sequentially; p50 and
                       p99. "in-process": the worker (1 thread) lives in the caller's
                       process; "2 processes": the worker is another process.
       throughput      two worker processes with concurrency 1, 4, then 64; one caller process
                       executes N no-op jobs at once and receives every result; jobs/s from
                       the first submit to the last result. (The BullMQ caller polls the
                       completed count instead: its QueueEvents loses events at this rate,
                       so the baseline is spared the per-result work.)
       worker RSS      peak RSS (VmHWM) of the larger of the two concurrency-64 workers.
       session         a session created, used for one no-op job, and stopped (its keys
                       deleted): am2z execute_in_session + stop_session; BullMQ a Queue,
                       Worker and QueueEvents on a fresh queue, one job, close + obliterate.

       Redis CPU       Redis's CPU time per job (INFO cpu) in each throughput run: on
                       two cores shared with the workers, it is what bounds throughput.

   The BullMQ side is bench/bullmq/bench.js (same measurements with Queue / Worker /
   QueueEvents), installed by tests/interop/setup.sh. Without node the am2z numbers are
   printed alone. Sizes: AM2Z_BENCH_RT (round trips, 2000), AM2Z_BENCH_N (jobs per
   throughput run, 20000), AM2Z_BENCH_SESSIONS (200).
   `queue --idem` runs only the idempotency line: the in-process round trip p50 with a
   fresh idempotency key per execute (the add script's key lookup, then a run) against a
   plain one, interleaved over 3 rounds (median each), as a ratio, with the load average.
   The full run prints it too.
   `queue --quick` prints am2z's round trips and throughputs on one line (bench/ab.sh runs
   two builds of it interleaved); `queue --cost [rt1|rt2|c1|c4|c64]` counts what Redis does
   per job (see "Redis cost per job" below; bench/redis-cost.sh adds callgrind's
   instruction count).
   `queue --floor` measures the floor under those figures (see "the floor" below) beside
   am2z's, interleaved, with Redis's CPU time per job. `queue --soak` runs a million jobs
   (AM2Z_BENCH_SOAK) and prints the caller's, the workers' and Redis's memory as it goes.
   Internal modes: `queue worker PORT CONCURRENCY` is one worker process, `queue
   floorworker PORT CONCURRENCY` one floor worker process. */
#include "../tests/proc.h"
#define AM2Z_RESP_IMPLEMENTATION
#include "../am2z_resp.h"
#include "bench.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <strings.h>
#include <pthread.h>

static int g_port;
static am2z_logger *g_quiet;

static am2z_result noop(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_retain(in));
}

static am2z_runtime *runtime(int concurrency) {
    am2z_queue_desc d;
    am2z_processor_desc pd;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = g_port;
    d.concurrency = concurrency;
    d.logger = g_quiet;
    rt = am2z_queue_runtime_new(&d, NULL);
    if (!rt) {
        fprintf(stderr, "bench: %s\n", am2z_status_detail());
        return NULL;
    }
    memset(&pd, 0, sizeof pd);
    pd.name = "noop";
    pd.fn = noop;
    if (am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)) != AM2Z_STATUS_OK) {
        fprintf(stderr, "bench: %s\n", am2z_status_detail());
        am2z_runtime_free(rt);
        return NULL;
    }
    return rt;
}

/* ---- worker process ------------------------------------------------------------------- */

static int worker_main(int concurrency) {
    sigset_t stop;
    int sig;
    am2z_runtime *rt;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* before the runtime's threads exist */
    rt = runtime(concurrency);
    if (!rt) return 1;
    printf("ready\n");
    fflush(stdout);
    sigwait(&stop, &sig);
    am2z_runtime_free(rt);
    return 0;
}

/* Starts this program as a worker process of the given role ("worker": am2z's,
   "floorworker": the floor's) and waits for its "ready". */
static int start_role(tp_proc *p, const char *role, int concurrency) {
    char port_s[16], conc_s[16], line[64];
    char *argv[5];
    snprintf(port_s, sizeof port_s, "%d", g_port);
    snprintf(conc_s, sizeof conc_s, "%d", concurrency);
    argv[0] = (char *)"/proc/self/exe";
    argv[1] = (char *)role;
    argv[2] = port_s;
    argv[3] = conc_s;
    argv[4] = NULL;
    if (tp_spawn(p, argv, NULL, 1) != 0) return 0;
    return tp_readline(p, line, sizeof line, 10000) == 1 && strcmp(line, "ready") == 0;
}

static int start_worker(tp_proc *p, int concurrency) { return start_role(p, "worker", concurrency); }

/* A memory line of /proc/PID/status ("VmHWM:" the peak, "VmRSS:" now) in MB, -1 when
   unreadable. */
static double proc_mb(pid_t pid, const char *field) {
    char path[64], line[256];
    FILE *f;
    double mb = -1;
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    if (!(f = fopen(path, "r"))) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, strlen(field)) == 0) mb = atof(line + strlen(field)) / 1024.0;
    fclose(f);
    return mb;
}

/* ---- measurements ------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void flushall(void) {
    am2z_redis_desc d;
    am2z_redis *r;
    am2z_reply rep;
    memset(&d, 0, sizeof d);
    d.host = "127.0.0.1";
    d.port = g_port;
    r = am2z_redis_new(&d, NULL);
    memset(&rep, 0, sizeof rep);
    if (r && am2z_redis_connect(r) == AM2Z_STATUS_OK) am2z_redis_command(r, &rep, "FLUSHALL");
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
}

/* Sequential executions of noop through rt; p50/p99 in ms. */
static int round_trip(am2z_runtime *rt, int n, double *p50, double *p99) {
    double *t = (double *)calloc((size_t)n, sizeof *t);
    am2z_state *in = am2z_state_new("default", am2z_value_object(), NULL);
    int i, warm = n < 200 ? n : 200, ok = 1;
    if (!t || !in) { free(t); am2z_value_release(in); return 0; }
    for (i = 0; i < n + warm && ok; i++) {
        int64_t t0 = am2z_monotonic_ns();
        am2z_outcome out = am2z_runtime_execute(rt, "noop", in);
        if (out.error) {
            fprintf(stderr, "bench: round trip failed: %s\n", out.error->message);
            ok = 0;
        }
        am2z_outcome_clear(&out);
        if (i >= warm) t[i - warm] = (double)(am2z_monotonic_ns() - t0) / 1e6;
    }
    if (ok) {
        qsort(t, (size_t)n, sizeof *t, cmp_double);
        *p50 = t[n / 2];
        *p99 = t[(size_t)(0.99 * n) < (size_t)n ? (size_t)(0.99 * n) : (size_t)n - 1];
    }
    free(t);
    am2z_value_release(in);
    return ok;
}

/* p50 (ms) of n sequential executes of noop, each with a fresh idempotency key (keyed)
   or none. */
static double keyed_p50(am2z_runtime *rt, int n, int keyed) {
    static unsigned long fresh;
    double *t = (double *)calloc((size_t)n, sizeof *t), p50 = -1;
    am2z_state *in = am2z_state_new("default", am2z_value_object(), NULL);
    am2z_submit_desc d;
    char key[32];
    int i, ok = 1;
    memset(&d, 0, sizeof d);
    d.keep_ms = keyed ? 60000 : 0; /* plain: a zeroed desc, the runtime's own execute */
    for (i = 0; t && in && i < n && ok; i++) {
        int64_t t0;
        am2z_outcome out;
        snprintf(key, sizeof key, "bench-%lu", fresh++);
        d.idempotency_key = keyed ? key : NULL;
        t0 = am2z_monotonic_ns();
        out = am2z_runtime_execute_with(rt, "noop", in, &d);
        t[i] = (double)(am2z_monotonic_ns() - t0) / 1e6;
        if (out.error) {
            fprintf(stderr, "bench: keyed round trip failed: %s\n", out.error->message);
            ok = 0;
        }
        am2z_outcome_clear(&out);
    }
    if (ok && t && in) {
        qsort(t, (size_t)n, sizeof *t, cmp_double);
        p50 = t[n / 2];
    }
    free(t);
    am2z_value_release(in);
    return p50;
}


/* The idempotency line (see the top): 0 when a measurement failed. */
static int idem_line(int n) {
    am2z_runtime *rt = runtime(1);
    double v[2][3], tmp;
    int r, k, ok = rt != NULL;
    for (r = 0; r < 3 && ok; r++)
        for (k = 0; k < 2; k++) {
            int keyed = (k + r) % 2;
            v[keyed][r] = keyed_p50(rt, n, keyed);
            ok &= v[keyed][r] >= 0;
        }
    am2z_runtime_free(rt);
    if (!ok) return 0;
    for (k = 0; k < 2; k++) { /* median of 3 */
        if (v[k][0] > v[k][1]) { tmp = v[k][0]; v[k][0] = v[k][1]; v[k][1] = tmp; }
        if (v[k][1] > v[k][2]) { tmp = v[k][1]; v[k][1] = v[k][2]; v[k][2] = tmp; }
        if (v[k][0] > v[k][1]) { tmp = v[k][0]; v[k][0] = v[k][1]; v[k][1] = tmp; }
    }
    printf("idempotent execute, in-process round trip p50: plain %.3f ms, fresh key %.3f ms (%.2fx); "
           "load average %.2f\n", v[0][1], v[1][1], v[1][1] / v[0][1], bench_loadavg());
    return 1;
}

/* CPU seconds (user + system) of process pid so far; -1 when unknown. */
static double proc_cpu(pid_t pid) {
    char path[64], buf[1024], *p;
    FILE *f;
    unsigned long ut = 0, st = 0;
    size_t n;
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    if (!(f = fopen(path, "r"))) return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* fields after the command's closing parenthesis: state is 3, utime 14, stime 15 */
    if (!(p = strrchr(buf, ')')) || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double g_workers_cpu, g_caller_cpu; /* of the last throughput run, CPU seconds */

/* Two worker processes with `concurrency` each; n executions from this process. */
static int throughput(int concurrency, int n, double *jobs_per_s, double *rss_mb) {
    tp_proc w[2];
    am2z_runtime *caller = NULL;
    am2z_state *in = NULL;
    const am2z_state **inputs = NULL;
    am2z_outcome *outs = NULL;
    int i, ok = 0, failed = 0;
    int64_t t0;
    memset(w, 0, sizeof w);
    if (!start_worker(&w[0], concurrency) || !start_worker(&w[1], concurrency)) {
        fprintf(stderr, "bench: worker processes did not start\n");
        goto done;
    }
    caller = runtime(AM2Z_QUEUE_NO_WORKERS);
    in = am2z_state_new("default", am2z_value_object(), NULL);
    inputs = (const am2z_state **)calloc((size_t)n, sizeof *inputs);
    outs = (am2z_outcome *)calloc((size_t)n, sizeof *outs);
    if (!caller || !in || !inputs || !outs) goto done;
    for (i = 0; i < n; i++) inputs[i] = in;
    t0 = am2z_monotonic_ns();
    if (am2z_runtime_execute_many(caller, "noop", inputs, (size_t)n, NULL, outs) != AM2Z_STATUS_OK) {
        fprintf(stderr, "bench: execute_many failed\n");
        goto done;
    }
    *jobs_per_s = n / ((double)(am2z_monotonic_ns() - t0) / 1e9);
    g_workers_cpu = proc_cpu(w[0].pid) + proc_cpu(w[1].pid);
    g_caller_cpu = proc_cpu(getpid());
    for (i = 0; i < n; i++) {
        if (outs[i].error) failed++;
        am2z_outcome_clear(&outs[i]);
    }
    if (failed) fprintf(stderr, "bench: %d of %d executions failed\n", failed, n);
    *rss_mb = proc_mb(w[0].pid, "VmHWM:");
    if (proc_mb(w[1].pid, "VmHWM:") > *rss_mb) *rss_mb = proc_mb(w[1].pid, "VmHWM:");
    ok = failed == 0;
done:
    am2z_runtime_free(caller);
    am2z_value_release(in);
    free(inputs);
    free(outs);
    for (i = 0; i < 2; i++) tp_stop(&w[i], SIGTERM, 10000);
    return ok;
}

/* One session: a job in it, then stop_session (deletes its keys). Mean ms. */
static int sessions(am2z_runtime *rt, int n, double *ms) {
    am2z_state *in = am2z_state_new("default", am2z_value_object(), NULL);
    int i, ok = 1;
    int64_t t0;
    char sid[64];
    if (!in) return 0;
    t0 = am2z_monotonic_ns();
    for (i = 0; i < n && ok; i++) {
        am2z_outcome out;
        snprintf(sid, sizeof sid, "bench-session-%d", i);
        out = am2z_runtime_execute_in_session(rt, "noop", in, sid);
        if (out.error) {
            fprintf(stderr, "bench: session job failed: %s\n", out.error->message);
            ok = 0;
        }
        am2z_outcome_clear(&out);
        if (am2z_runtime_stop_session(rt, sid, 1000) != AM2Z_STATUS_OK) {
            fprintf(stderr, "bench: stop_session failed\n");
            ok = 0;
        }
    }
    *ms = (double)(am2z_monotonic_ns() - t0) / 1e6 / n;
    am2z_value_release(in);
    return ok;
}

/* ---- Redis cost per job (`queue --cost`) ------------------------------------------------ */
/* What Redis does per job, counted rather than timed: before a scenario the stats are reset
   and every command is logged (slowlog-log-slower-than 0; AM2Z_BENCH_SLOWLOG=2 leaves it
   off); after it, INFO commandstats gives the commands run per job (those inside scripts
   included) and SLOWLOG the calls from clients (round trips) and their server time per
   script, scripts' own commands apart (their client is Lua's, without an address). Redis's own time per
   call is noisy on a shared machine; the counts are exact. bench/redis-cost.sh runs the
   same under callgrind for instructions per job. */

static am2z_redis *admin(void) {
    am2z_redis_desc d;
    am2z_redis *r;
    memset(&d, 0, sizeof d);
    d.host = "127.0.0.1";
    d.port = g_port;
    d.command_timeout_ms = 600000; /* a server under callgrind is ~50x slower */
    r = am2z_redis_new(&d, NULL);
    if (r && am2z_redis_connect(r) != AM2Z_STATUS_OK) { am2z_redis_free(r); r = NULL; }
    return r;
}

typedef struct cost_row { char name[48]; double calls, usec, inner; } cost_row; /* inner: commands a script ran */

static void cost_add(cost_row *rows, int *n, int max, const char *name, double calls, double usec,
                     double inner) {
    int i;
    for (i = 0; i < *n; i++)
        if (strcmp(rows[i].name, name) == 0) break;
    if (i == *n) {
        if (*n == max) return;
        snprintf(rows[i].name, sizeof rows[i].name, "%s", name);
        rows[i].calls = rows[i].usec = rows[i].inner = 0;
        (*n)++;
    }
    rows[i].calls += calls;
    rows[i].usec += usec;
    rows[i].inner += inner;
}

static int cost_cmp(const void *a, const void *b) {
    const cost_row *x = (const cost_row *)a, *y = (const cost_row *)b;
    return x->calls < y->calls ? 1 : x->calls > y->calls ? -1 : strcmp(x->name, y->name);
}

/* The name of the script with this SHA (am2z's own scripts), else the SHA's start. */
static void script_name(const char *sha, char *out, size_t size) {
    static const struct { const char *name; const char *const *body; } s[] = {
        {"add", am2z__qlua_add}, {"fetch", am2z__qlua_fetch}, {"complete", am2z__qlua_complete},
        {"fail", am2z__qlua_fail}, {"retry", am2z__qlua_retry}, {"extend", am2z__qlua_extend},
        {"stalled", am2z__qlua_stalled}, {"claim", am2z__qlua_claim}, {"drop", am2z__qlua_drop},
        {"cancelq", am2z__qlua_cancelq}, {"state", am2z__qlua_state}, {"due", am2z__qlua_due},
        {"remove", am2z__qlua_remove}, {"take", am2z__qlua_take}, {"settings", am2z__qlua_settings},
        {"progress", am2z__qlua_progress}, {"breaker", am2z__qlua_breaker}};
    size_t i;
    for (i = 0; i < sizeof s / sizeof s[0]; i++) {
        am2z_redis_script *sc = am2z__qscript(s[i].body);
        int same = sc && strcmp(am2z_redis_script_sha(sc), sha) == 0;
        am2z_redis_script_free(sc);
        if (same) { snprintf(out, size, "script %s", s[i].name); return; }
    }
    snprintf(out, size, "script %.8s", sha);
}

/* Redis's CPU seconds (user + system) so far. */
static double redis_cpu(am2z_redis *r) {
    am2z_reply rep;
    double cpu = -1;
    memset(&rep, 0, sizeof rep);
    if (am2z_redis_command(r, &rep, "INFO cpu") == AM2Z_STATUS_OK) {
        const char *u = strstr(am2z_reply_str(&rep), "used_cpu_user:"), *s = strstr(am2z_reply_str(&rep), "used_cpu_sys:");
        cpu = (u ? atof(u + 14) : 0) + (s ? atof(s + 13) : 0);
    }
    am2z_reply_clear(&rep);
    return cpu;
}

static double g_cpu0; /* redis_cpu at the start of a scenario */

static void cost_begin(am2z_redis *r) {
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    g_cpu0 = redis_cpu(r);
    am2z_redis_command(r, &rep, "FLUSHALL");
    am2z_redis_command(r, &rep, "CONFIG SET slowlog-max-len 2000000");
    /* the slowlog costs Redis work of its own: bench/redis-cost.sh turns it off */
    if (bench_env_int("AM2Z_BENCH_SLOWLOG", 1) != 2)
        am2z_redis_command(r, &rep, "CONFIG SET slowlog-log-slower-than 0");
    am2z_redis_command(r, &rep, "SLOWLOG RESET");
    am2z_redis_command(r, &rep, "CONFIG RESETSTAT");
    am2z_reply_clear(&rep);
}

/* Prints the per-job table of the scenario just run (jobs: how many ran). */
static void cost_end(am2z_redis *r, const char *scenario, int jobs) {
    enum { MAX = 64 };
    static cost_row top[MAX], all[MAX];
    int ntop = 0, nall = 0, i;
    double tcalls = 0, tusec = 0, acalls = 0, cpu = 0, nested = 0;
    am2z_reply rep;
    const char *p;
    memset(&rep, 0, sizeof rep);
    am2z_redis_command(r, &rep, "CONFIG SET slowlog-log-slower-than 10000");
    /* The slowlog, oldest first: a script's own commands (client "?:0") are logged before
       the script's entry, so they are counted for the next script entry. The bench's own
       admin commands are left out. */
    if (am2z_redis_command(r, &rep, "SLOWLOG GET -1") == AM2Z_STATUS_OK)
        for (i = (int)rep.len - 1; i >= 0; i--) {
            const am2z_reply *e = am2z_reply_at(&rep, (size_t)i), *args = am2z_reply_at(e, 3);
            const char *cmd = am2z_reply_str(am2z_reply_at(args, 0));
            char name[48];
            double us = (double)am2z_reply_at(e, 2)->integer;
            size_t k;
            if (!args || args->len == 0) continue;
            if (strcasecmp(cmd, "config") == 0 || strcasecmp(cmd, "slowlog") == 0) continue;
            if (strcmp(am2z_reply_str(am2z_reply_at(e, 4)), "?:0") == 0) {
                nested++;
                continue;
            }
            if (strcasecmp(cmd, "evalsha") == 0 && args->len > 1)
                script_name(am2z_reply_str(am2z_reply_at(args, 1)), name, sizeof name);
            else
                snprintf(name, sizeof name, "%s", cmd);
            for (k = 0; name[k]; k++) name[k] = (char)tolower((unsigned char)name[k]);
            cost_add(top, &ntop, MAX, name, 1, us, nested);
            nested = 0;
            tcalls += 1;
            tusec += us;
        }
    if (am2z_redis_command(r, &rep, "INFO commandstats") == AM2Z_STATUS_OK)
        for (p = am2z_reply_str(&rep); (p = strstr(p, "cmdstat_")) != NULL;) {
            char name[48];
            double calls = 0, usec = 0;
            if (sscanf(p, "cmdstat_%47[^:]:calls=%lf,usec=%lf", name, &calls, &usec) == 3 &&
                strcmp(name, "config") != 0 && strcmp(name, "slowlog") != 0 && strcmp(name, "info") != 0 &&
                strcmp(name, "flushall") != 0) {
                cost_add(all, &nall, MAX, name, calls, usec, 0);
                acalls += calls;
            }
            p += 8;
        }
    am2z_reply_clear(&rep);
    cpu = redis_cpu(r) - g_cpu0;
    qsort(top, (size_t)ntop, sizeof top[0], cost_cmp);
    qsort(all, (size_t)nall, sizeof all[0], cost_cmp);
    printf("\n%s: %d jobs; per job: %.2f calls from clients (%.1f us in Redis), %.2f commands counting "
           "those inside scripts; Redis CPU %.1f us (user + system, with the slowlog's own); load average %.2f\n",
           scenario, jobs, tcalls / jobs, tusec / jobs, acalls / jobs, cpu * 1e6 / jobs, bench_loadavg());
    printf("  %-22s %10s %10s %10s %14s\n", "from clients", "calls/job", "us/job", "us/call", "commands/call");
    for (i = 0; i < ntop; i++)
        printf("  %-22s %10.3f %10.2f %10.2f %14.1f\n", top[i].name, top[i].calls / jobs, top[i].usec / jobs,
               top[i].usec / top[i].calls, top[i].inner / top[i].calls);
    printf("  %-22s %10s\n", "all commands", "calls/job");
    for (i = 0; i < nall; i++)
        if (all[i].calls / jobs >= 0.01) printf("  %-22s %10.3f\n", all[i].name, all[i].calls / jobs);
    fflush(stdout);
}

/* `queue --cost [SCENARIO]`: rt1 (in-process round trips), rt2 (across processes), c1, c4,
   c64 (throughput with 2 worker processes); all when none is named. */
static int cost_main(const char *only, int n_rt, int n) {
    static const char *const names[] = {"rt1", "rt2", "c1", "c4", "c64"};
    am2z_redis *r = admin();
    int i, ok = r != NULL;
    for (i = 0; i < 5 && ok; i++) {
        double a, b;
        if (only && strcmp(only, names[i]) != 0) continue;
        cost_begin(r);
        if (i == 0) {
            am2z_runtime *rt = runtime(1);
            ok = rt && round_trip(rt, n_rt, &a, &b);
            am2z_runtime_free(rt);
            cost_end(r, names[i], n_rt + (n_rt < 200 ? n_rt : 200));
        } else if (i == 1) {
            tp_proc w;
            am2z_runtime *caller = NULL;
            ok = start_worker(&w, 1) && (caller = runtime(AM2Z_QUEUE_NO_WORKERS)) != NULL &&
                 round_trip(caller, n_rt, &a, &b);
            am2z_runtime_free(caller);
            tp_stop(&w, SIGTERM, 60000);
            cost_end(r, names[i], n_rt + (n_rt < 200 ? n_rt : 200));
        } else {
            ok = throughput(i == 2 ? 1 : i == 3 ? 4 : 64, n, &a, &b);
            printf("\n%s: %.0f jobs/s; CPU per job: workers %.1f us, caller %.1f us (start-up included)",
                   names[i], a, g_workers_cpu * 1e6 / n, g_caller_cpu * 1e6 / n);
            cost_end(r, names[i], n);
        }
    }
    am2z_redis_free(r);
    return ok;
}

/* ---- the floor: the same Redis round trips with nothing in them ----------------------- */

/* `queue --floor` answers "how close is am2z to what this machine and Redis allow?". A
   floor job is the least any Redis queue with one script per add and per finish must do:
   the caller runs a one-LPUSH script (the add), a worker blocked in BLPOP takes it (the
   wake-up that delivers the job), the worker runs a one-LPUSH script (the finish), and the
   caller learns of it: in-process by a condition variable (as am2z's in-process caller
   does), across processes by its own BLPOP of the finish list. Each figure is measured
   interleaved with am2z's (A B A B A B, medians), with Redis's CPU time per job. */

static const char g_floor_lua[] = "return redis.call('LPUSH', KEYS[1], ARGV[1])";

/* One floor script call: LPUSH key id. */
static int floor_push(am2z_redis *r, const am2z_redis_script *s, const char *key, const char *id) {
    const char *argv[2];
    am2z_reply rep;
    int ok;
    argv[0] = key;
    argv[1] = id;
    memset(&rep, 0, sizeof rep);
    ok = am2z_redis_evalsha(r, &rep, s, 1, 2, argv, NULL) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER;
    am2z_reply_clear(&rep);
    return ok;
}

/* BLMPOP key for up to wait_ms, taking up to 16 jobs into *rep; the array of their ids
   (borrowed from *rep), an empty reply on a timeout, NULL on a failure. */
static const am2z_reply *floor_pop(am2z_redis *r, const char *key, int wait_ms, am2z_reply *rep) {
    static const am2z_reply none;
    char secs[32];
    snprintf(secs, sizeof secs, "%.3f", wait_ms / 1000.0);
    am2z_reply_clear(rep);
    if (am2z_redis_blocking(r, rep, wait_ms + 2000, "BLMPOP %s 1 %s LEFT COUNT 16", secs, key) != AM2Z_STATUS_OK)
        return NULL;
    if (rep->type == AM2Z_REPLY_ARRAY && rep->len == 2 && am2z_reply_at(rep, 1)->type == AM2Z_REPLY_ARRAY)
        return am2z_reply_at(rep, 1);
    return rep->type == AM2Z_REPLY_NIL ? &none : NULL;
}

typedef struct floor_worker {
    pthread_t thread;
    am2z_redis_script *script;
    volatile int *stop;
    /* in-process only: the finish is signalled to the caller */
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    long *finished;
} floor_worker;

/* A floor worker thread: take up to 16 jobs from floor:q, run the finish script
   (LPUSH floor:r) for each, repeat. */
static void *floor_worker_main(void *arg) {
    floor_worker *w = (floor_worker *)arg;
    am2z_redis *r = admin();
    am2z_reply rep;
    const am2z_reply *ids;
    size_t i;
    int ok = r != NULL;
    memset(&rep, 0, sizeof rep);
    while (ok && !*w->stop && (ok = (ids = floor_pop(r, "floor:q", 200, &rep)) != NULL)) {
        for (i = 0; i < ids->len && ok; i++) {
            ok = floor_push(r, w->script, "floor:r", am2z_reply_str(am2z_reply_at(ids, i)));
            if (ok && w->mu) {
                pthread_mutex_lock(w->mu);
                (*w->finished)++;
                pthread_cond_signal(w->cv);
                pthread_mutex_unlock(w->mu);
            }
        }
    }
    if (w->mu) { /* the caller must not wait for a worker that has stopped */
        pthread_mutex_lock(w->mu);
        *w->finished = LONG_MAX;
        pthread_cond_signal(w->cv);
        pthread_mutex_unlock(w->mu);
    }
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return NULL;
}

static volatile int g_floor_stop;

/* `queue floorworker PORT CONCURRENCY`: a process of floor worker threads, until SIGTERM. */
static int floor_worker_process(int concurrency) {
    sigset_t stop;
    int sig, i, n = 0;
    floor_worker *w = (floor_worker *)calloc((size_t)concurrency, sizeof *w);
    am2z_redis_script *s = am2z_redis_script_new(g_floor_lua, AM2Z_NTS, NULL);
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    if (!w || !s) return 1;
    for (i = 0; i < concurrency; i++) {
        w[i].script = s;
        w[i].stop = &g_floor_stop;
        if (pthread_create(&w[i].thread, NULL, floor_worker_main, &w[i]) == 0) n++;
    }
    printf("ready\n");
    fflush(stdout);
    sigwait(&stop, &sig);
    g_floor_stop = 1;
    for (i = 0; i < n; i++) pthread_join(w[i].thread, NULL);
    am2z_redis_script_free(s);
    free(w);
    return 0;
}

/* p50 (ms) of n sequential floor round trips: the worker is a thread of this process
   (in_process) or a floor worker process. */
static double floor_round_trip(int n, int in_process) {
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    volatile int stop = 0;
    long finished = 0;
    floor_worker w;
    tp_proc proc;
    am2z_redis *r = admin();
    am2z_redis_script *s = am2z_redis_script_new(g_floor_lua, AM2Z_NTS, NULL);
    double *t = (double *)calloc((size_t)n, sizeof *t), p50 = -1;
    int i, warm = n < 200 ? n : 200, started = 0, ok = r && s && t;
    char id[64];
    memset(&w, 0, sizeof w);
    if (ok && in_process) {
        w.script = s;
        w.stop = &stop;
        w.mu = &mu;
        w.cv = &cv;
        w.finished = &finished;
        ok = started = pthread_create(&w.thread, NULL, floor_worker_main, &w) == 0;
    } else if (ok) {
        ok = started = start_role(&proc, "floorworker", 1);
    }
    for (i = 0; i < n + warm && ok; i++) {
        int64_t t0 = am2z_monotonic_ns();
        snprintf(id, sizeof id, "%d", i);
        ok = floor_push(r, s, "floor:q", id);
        if (ok && in_process) {
            pthread_mutex_lock(&mu);
            while (finished <= i) pthread_cond_wait(&cv, &mu);
            ok = finished != LONG_MAX;
            pthread_mutex_unlock(&mu);
        } else if (ok) {
            am2z_reply rep;
            memset(&rep, 0, sizeof rep);
            const am2z_reply *ids = floor_pop(r, "floor:r", 5000, &rep);
            ok = ids && ids->len == 1;
            am2z_reply_clear(&rep);
        }
        if (i >= warm) t[i - warm] = (double)(am2z_monotonic_ns() - t0) / 1e6;
    }
    if (started && in_process) {
        stop = 1;
        pthread_join(w.thread, NULL);
    } else if (started) {
        tp_stop(&proc, SIGTERM, 10000);
    }
    if (ok) {
        qsort(t, (size_t)n, sizeof *t, cmp_double);
        p50 = t[n / 2];
    } else {
        fprintf(stderr, "bench: the floor round trip failed\n");
    }
    free(t);
    am2z_redis_script_free(s);
    am2z_redis_free(r);
    return p50;
}

/* Floor throughput (jobs/s): two floor worker processes of `concurrency` threads; this
   process adds n jobs in pipelined batches of 256 and collects the n finishes. */
static double floor_throughput(int concurrency, int n) {
    tp_proc w[2];
    am2z_redis *r = admin();
    am2z_redis_script *s = am2z_redis_script_new(g_floor_lua, AM2Z_NTS, NULL);
    am2z_reply rep;
    double rate = -1;
    int i, got = 0, started = 0, ok = r && s;
    int64_t t0;
    char id[16];
    memset(&rep, 0, sizeof rep);
    for (i = 0; i < 2 && ok; i++) ok = started = start_role(&w[i], "floorworker", concurrency) ? i + 1 : 0;
    ok = ok && am2z_redis_script_load(r, s) == AM2Z_STATUS_OK;
    t0 = am2z_monotonic_ns();
    for (i = 0; i < n && ok; i++) {
        const char *argv[2];
        snprintf(id, sizeof id, "%d", i);
        argv[0] = "floor:q";
        argv[1] = id;
        ok = am2z_redis_append_evalsha(r, s, 1, 2, argv, NULL) == AM2Z_STATUS_OK;
        if (ok && (i % 256 == 255 || i == n - 1))
            while (ok && am2z_redis_pending(r) > 0) {
                ok = am2z_redis_read(r, &rep) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER;
                am2z_reply_clear(&rep);
            }
    }
    while (ok && got < n) {
        ok = am2z_redis_blocking(r, &rep, 7000, "BLMPOP 5 1 floor:r LEFT COUNT 1000") == AM2Z_STATUS_OK &&
             rep.type == AM2Z_REPLY_ARRAY && rep.len == 2;
        if (ok) got += (int)am2z_reply_at(&rep, 1)->len;
        am2z_reply_clear(&rep);
    }
    if (ok) rate = n / ((double)(am2z_monotonic_ns() - t0) / 1e9);
    else fprintf(stderr, "bench: the floor throughput (x%d) failed after %d of %d\n", concurrency, got, n);
    for (i = 0; i < started; i++) tp_stop(&w[i], SIGTERM, 10000);
    am2z_redis_script_free(s);
    am2z_redis_free(r);
    return rate;
}

static void sort3(double *v) { qsort(v, 3, sizeof *v, cmp_double); }

/* `queue --floor`: am2z against the floor, interleaved over 3 rounds, medians. Redis's CPU
   per job (µs, from INFO cpu) is printed for the throughput runs. */
static int floor_main(int n_rt, int n) {
    enum { ROUNDS = 3, FIGS = 5 };
    static const char *names[FIGS] = {"round trip p50, in-process (ms)", "round trip p50, 2 processes (ms)",
                                      "throughput, 2 workers x 1 (jobs/s)", "throughput, 2 workers x 4 (jobs/s)",
                                      "throughput, 2 workers x 64 (jobs/s)"};
    static const int conc[3] = {1, 4, 64};
    double ours[FIGS][ROUNDS], floor[FIGS][ROUNDS], cpu_ours[3][ROUNDS], cpu_floor[3][ROUNDS];
    double ping[ROUNDS], p99, rss, la0 = bench_loadavg();
    am2z_redis *ad = admin();
    int rd, f, ok = ad != NULL;
    for (rd = 0; rd < ROUNDS && ok; rd++) {
        am2z_runtime *rt = NULL;
        tp_proc w;
        am2z_reply rep;
        int64_t t0;
        int i;
        memset(&rep, 0, sizeof rep);
        t0 = am2z_monotonic_ns();
        for (i = 0; i < n_rt && ok; i++) {
            ok = am2z_redis_command(ad, &rep, "PING") == AM2Z_STATUS_OK;
            am2z_reply_clear(&rep);
        }
        ping[rd] = (double)(am2z_monotonic_ns() - t0) / 1e6 / n_rt;
        flushall();
        ok = ok && (rt = runtime(1)) != NULL && round_trip(rt, n_rt, &ours[0][rd], &p99);
        am2z_runtime_free(rt);
        rt = NULL;
        flushall();
        floor[0][rd] = floor_round_trip(n_rt, 1);
        flushall();
        if (ok && start_worker(&w, 1)) {
            ok = (rt = runtime(AM2Z_QUEUE_NO_WORKERS)) != NULL && round_trip(rt, n_rt, &ours[1][rd], &p99);
            am2z_runtime_free(rt);
            tp_stop(&w, SIGTERM, 10000);
        } else {
            ok = 0;
        }
        flushall();
        floor[1][rd] = floor_round_trip(n_rt, 0);
        for (i = 0; i < 3 && ok; i++) {
            double c0;
            flushall();
            c0 = redis_cpu(ad);
            ok = throughput(conc[i], n, &ours[2 + i][rd], &rss);
            cpu_ours[i][rd] = (redis_cpu(ad) - c0) * 1e6 / n;
            flushall();
            c0 = redis_cpu(ad);
            floor[2 + i][rd] = floor_throughput(conc[i], n);
            cpu_floor[i][rd] = (redis_cpu(ad) - c0) * 1e6 / n;
        }
        for (f = 0; f < FIGS; f++) ok = ok && floor[f][rd] > 0;
        printf("round %d: load %.2f\n", rd + 1, bench_loadavg());
        fflush(stdout);
    }
    am2z_redis_free(ad);
    if (!ok) { fprintf(stderr, "bench: the floor comparison failed\n"); return 0; }
    sort3(ping);
    printf("\nfloor: one-LPUSH scripts for add and finish, BLMPOP wake-ups; medians of %d interleaved rounds\n", ROUNDS);
    printf("PING round trip on one connection: %.3f ms\n", ping[1]);
    printf("%-38s %10s %10s %10s\n", "", "am2z", "floor", "am2z/floor");
    for (f = 0; f < FIGS; f++) {
        sort3(ours[f]);
        sort3(floor[f]);
        printf("%-38s %10.*f %10.*f %10.2f\n", names[f], f < 2 ? 3 : 0, ours[f][1], f < 2 ? 3 : 0,
               floor[f][1], ours[f][1] / floor[f][1]);
    }
    for (f = 0; f < 3; f++) {
        sort3(cpu_ours[f]);
        sort3(cpu_floor[f]);
        printf("Redis CPU per job, 2 workers x %-2d      %7.1f us %7.1f us %10.2f\n", conc[f], cpu_ours[f][1],
               cpu_floor[f][1], cpu_ours[f][1] / cpu_floor[f][1]);
    }
    printf("load average: %.2f at the start, %.2f at the end (2 cores)\n", la0, bench_loadavg());
    return 1;
}

/* ---- memory over a million jobs -------------------------------------------------------- */

/* Redis's used_memory in MB, -1 when unreadable. */
static double redis_mb(am2z_redis *r) {
    am2z_reply rep;
    double mb = -1;
    const char *m;
    memset(&rep, 0, sizeof rep);
    if (am2z_redis_command(r, &rep, "INFO memory") == AM2Z_STATUS_OK &&
        (m = strstr(am2z_reply_str(&rep), "used_memory:")) != NULL)
        mb = atof(m + 12) / (1024.0 * 1024.0);
    am2z_reply_clear(&rep);
    return mb;
}

/* `queue --soak`: `total` no-op jobs (AM2Z_BENCH_SOAK, 1,000,000) through two worker
   processes of concurrency 4, executed from this process in chunks of 100,000; the RSS of
   the caller and of both workers and Redis's used_memory after the first chunk and after
   the last. Growth between the two is a leak (or an unbounded cache). */
static int soak_main(int total) {
    enum { CHUNK = 100000 };
    tp_proc w[2];
    am2z_runtime *caller = NULL;
    am2z_state *in = am2z_state_new("default", am2z_value_object(), NULL);
    const am2z_state **inputs = (const am2z_state **)calloc(CHUNK, sizeof *inputs);
    am2z_outcome *outs = (am2z_outcome *)calloc(CHUNK, sizeof *outs);
    am2z_redis *ad = admin();
    double first[4] = {0, 0, 0, 0};
    int i, done = 0, failed = 0, started = 0, ok = in && inputs && outs && ad;
    int64_t t0 = am2z_monotonic_ns();
    memset(w, 0, sizeof w);
    for (i = 0; i < 2 && ok; i++) ok = started = start_worker(&w[i], 4) ? i + 1 : 0;
    ok = ok && (caller = runtime(AM2Z_QUEUE_NO_WORKERS)) != NULL;
    for (i = 0; i < CHUNK && ok; i++) inputs[i] = in;
    printf("soak: %d jobs, 2 workers x 4, chunks of %d; load average %.2f\n", total, CHUNK, bench_loadavg());
    printf("%10s %12s %12s %12s %12s\n", "jobs", "caller MB", "worker1 MB", "worker2 MB", "redis MB");
    while (ok && done < total) {
        int n = total - done < CHUNK ? total - done : CHUNK;
        double now[4];
        ok = am2z_runtime_execute_many(caller, "noop", inputs, (size_t)n, NULL, outs) == AM2Z_STATUS_OK;
        for (i = 0; i < n && ok; i++) {
            if (outs[i].error) failed++;
            am2z_outcome_clear(&outs[i]);
        }
        done += n;
        now[0] = proc_mb(getpid(), "VmRSS:");
        now[1] = proc_mb(w[0].pid, "VmRSS:");
        now[2] = proc_mb(w[1].pid, "VmRSS:");
        now[3] = redis_mb(ad);
        if (done == n) memcpy(first, now, sizeof first);
        printf("%10d %12.1f %12.1f %12.1f %12.1f\n", done, now[0], now[1], now[2], now[3]);
        fflush(stdout);
        if (ok && done >= total)
            printf("growth after the first chunk: caller %+.1f MB, workers %+.1f / %+.1f MB, redis %+.1f MB; "
                   "%d failed; %.0f jobs/s; load average %.2f\n", now[0] - first[0], now[1] - first[1],
                   now[2] - first[2], now[3] - first[3], failed, done / ((double)(am2z_monotonic_ns() - t0) / 1e9),
                   bench_loadavg());
    }
    am2z_runtime_free(caller);
    for (i = 0; i < started; i++) tp_stop(&w[i], SIGTERM, 10000);
    am2z_redis_free(ad);
    am2z_value_release(in);
    free(inputs);
    free(outs);
    if (!ok) fprintf(stderr, "bench: the soak failed after %d jobs\n", done);
    return ok && failed == 0;
}

/* `queue --quick`: am2z's figures alone, one line (for bench/ab.sh, which interleaves two
   builds): round trip p50 in-process and across processes (ms), throughput with 2 workers
   x 1, 4, 64 (jobs/s), and the load average. */
static int quick_main(int n_rt, int n) {
    double rt1 = -1, rt2 = -1, c[3] = {-1, -1, -1}, p99, rss;
    am2z_runtime *rt;
    tp_proc w;
    int ok = 1, i;
    flushall();
    if ((rt = runtime(1)) != NULL) ok &= round_trip(rt, n_rt, &rt1, &p99);
    am2z_runtime_free(rt);
    flushall();
    if (start_worker(&w, 1)) {
        if ((rt = runtime(AM2Z_QUEUE_NO_WORKERS)) != NULL) ok &= round_trip(rt, n_rt, &rt2, &p99);
        am2z_runtime_free(rt);
        tp_stop(&w, SIGTERM, 10000);
    }
    for (i = 0; i < 3; i++) {
        flushall();
        ok &= throughput(i == 0 ? 1 : i == 1 ? 4 : 64, n, &c[i], &rss);
    }
    printf("rt1_ms %.3f rt2_ms %.3f c1 %.0f c4 %.0f c64 %.0f load %.2f\n", rt1, rt2, c[0], c[1], c[2], bench_loadavg());
    return ok;
}

/* ---- BullMQ baseline ------------------------------------------------------------------ */

typedef struct figures {
    double rt_p50, rt_p99, rt2_p50, rt2_p99, tput_c1, tput_c4, tput_c64, rss_c64, session_ms;
    double cpu_c1, cpu_c4, cpu_c64; /* Redis's CPU per job in the throughput runs, us */
} figures;

static int bullmq(int n_rt, int n, int n_sessions, figures *f, char *version, size_t vsize) {
    char node_path[1024], env_path[1100], line[4096], a1[16], a2[16], a3[16], a4[16];
    char *argv[8];
    const char *env[2];
    tp_proc p;
    am2z_value *v = NULL;
    int rc;
    if ((rc = tp_capture("sh tests/interop/setup.sh", node_path, sizeof node_path)) != 0) {
        fprintf(stderr, "bench: BullMQ peer unavailable (%s); printing am2z alone\n",
                rc == 2 ? "node or npm missing" : "npm install failed");
        return 0;
    }
    snprintf(env_path, sizeof env_path, "NODE_PATH=%s", node_path);
    env[0] = env_path;
    env[1] = NULL;
    snprintf(a1, sizeof a1, "%d", g_port);
    snprintf(a2, sizeof a2, "%d", n_rt);
    snprintf(a3, sizeof a3, "%d", n);
    snprintf(a4, sizeof a4, "%d", n_sessions);
    argv[0] = (char *)"node";
    argv[1] = (char *)"bench/bullmq/bench.js";
    argv[2] = a1; argv[3] = a2; argv[4] = a3; argv[5] = a4; argv[6] = NULL;
    if (tp_spawn(&p, argv, env, 1) != 0) return 0;
    while (tp_readline(&p, line, sizeof line, 300000) == 1) {
        am2z_value_release(v);
        v = am2z_json_parse(line, AM2Z_NTS, NULL, NULL);
    }
    if (tp_stop(&p, SIGTERM, 5000) != 0 || !v) {
        fprintf(stderr, "bench: the BullMQ run failed; printing am2z alone\n");
        am2z_value_release(v);
        return 0;
    }
    f->rt_p50 = am2z_value_get_double(v, "rt_p50_ms", NAN);
    f->rt_p99 = am2z_value_get_double(v, "rt_p99_ms", NAN);
    f->rt2_p50 = am2z_value_get_double(v, "rt2_p50_ms", NAN);
    f->rt2_p99 = am2z_value_get_double(v, "rt2_p99_ms", NAN);
    f->tput_c1 = am2z_value_get_double(v, "tput_c1", NAN);
    f->tput_c4 = am2z_value_get_double(v, "tput_c4", NAN);
    f->tput_c64 = am2z_value_get_double(v, "tput_c64", NAN);
    f->rss_c64 = am2z_value_get_double(v, "rss_c64_mb", NAN);
    f->cpu_c1 = am2z_value_get_double(v, "cpu_c1_us", NAN);
    f->cpu_c4 = am2z_value_get_double(v, "cpu_c4_us", NAN);
    f->cpu_c64 = am2z_value_get_double(v, "cpu_c64_us", NAN);
    f->session_ms = am2z_value_get_double(v, "session_ms", NAN);
    snprintf(version, vsize, "BullMQ %s", am2z_value_get_string(v, "bullmq", "?"));
    am2z_value_release(v);
    return 1;
}

/* ---- report ---------------------------------------------------------------------------- */

/* higher: 1 when a larger figure is better. */
static void row(const char *name, const char *unit, double ours, double theirs, int have_theirs,
                int higher, double target) {
    char ratio[32] = "", tgt[32] = "";
    const char *verdict = "";
    if (have_theirs && ours > 0 && theirs > 0)
        snprintf(ratio, sizeof ratio, "%.1fx %s", higher ? ours / theirs : theirs / ours,
                 higher ? "more" : !strcmp(unit, "MB") ? "smaller" : !strcmp(unit, "us") ? "less" : "faster");
    if (target > 0) {
        snprintf(tgt, sizeof tgt, "%s %g", higher ? ">=" : "<=", target);
        verdict = (higher ? ours >= target : ours <= target) ? "met" : "MISSED";
    }
    printf("%-30s %-7s %12.3f %12.3f  %-16s %-10s %s\n", name, unit, ours,
           have_theirs ? theirs : NAN, ratio, tgt, verdict);
}

int main(int argc, char **argv) {
    static tp_proc redis;
    figures ours, theirs;
    char version[64] = "BullMQ";
    int n_rt = bench_env_int("AM2Z_BENCH_RT", 2000), n = bench_env_int("AM2Z_BENCH_N", 20000);
    int n_sessions = bench_env_int("AM2Z_BENCH_SESSIONS", 200), have_theirs, ok = 1;
    am2z_runtime *rt;
    am2z_logger_desc ld;

    memset(&ld, 0, sizeof ld);
    ld.min_level = AM2Z_LOG_WARN;
    g_quiet = am2z_logger_new(&ld, NULL);
    if (argc == 4 && strcmp(argv[1], "worker") == 0) {
        int rc;
        g_port = atoi(argv[2]);
        rc = worker_main(atoi(argv[3]));
        am2z_logger_release(g_quiet);
        return rc;
    }
    if (argc == 4 && strcmp(argv[1], "floorworker") == 0) {
        g_port = atoi(argv[2]);
        am2z_logger_release(g_quiet);
        return floor_worker_process(atoi(argv[3]));
    }

    if (argc >= 2 && strcmp(argv[1], "--cost") == 0) { /* AM2Z_BENCH_PORT: a server of yours */
        int ext = bench_env_int("AM2Z_BENCH_PORT", 0);
        if (!(g_port = ext ? ext : tp_redis_start(&redis))) {
            fprintf(stderr, "bench: redis-server is needed\n");
            return 1;
        }
        ok = cost_main(argc >= 3 ? argv[2] : NULL, bench_env_int("AM2Z_BENCH_RT", 1000), bench_env_int("AM2Z_BENCH_N", 5000));
        if (!ext) tp_stop(&redis, SIGKILL, 2000);
        am2z_logger_release(g_quiet);
        return ok ? 0 : 1;
    }
    if (!(g_port = tp_redis_start(&redis))) {
        fprintf(stderr, "bench: redis-server is needed\n");
        return 1;
    }
    if (argc == 2 && strcmp(argv[1], "--quick") == 0) {
        ok = quick_main(n_rt, n);
        tp_stop(&redis, SIGKILL, 2000);
        am2z_logger_release(g_quiet);
        return ok ? 0 : 1;
    }
    if (argc == 2 && strcmp(argv[1], "--soak") == 0) {
        ok = soak_main(bench_env_int("AM2Z_BENCH_SOAK", 1000000));
        tp_stop(&redis, SIGKILL, 2000);
        am2z_logger_release(g_quiet);
        return ok ? 0 : 1;
    }
    if (argc == 2 && strcmp(argv[1], "--floor") == 0) {
        ok = floor_main(n_rt, n);
        tp_stop(&redis, SIGKILL, 2000);
        am2z_logger_release(g_quiet);
        return ok ? 0 : 1;
    }
    if (argc == 2 && strcmp(argv[1], "--idem") == 0) {
        flushall();
        ok = idem_line(n_rt / 2 > 10 ? n_rt / 2 : 10);
        tp_stop(&redis, SIGKILL, 2000);
        am2z_logger_release(g_quiet);
        return ok ? 0 : 1;
    }
    memset(&ours, 0, sizeof ours);
    memset(&theirs, 0, sizeof theirs);
    printf("queue bench: redis-server 127.0.0.1:%d, %d round trips, %d jobs per throughput run, "
           "%d sessions; load average %.2f\n", g_port, n_rt, n, n_sessions, bench_loadavg());
    fflush(stdout);
    have_theirs = bullmq(n_rt, n, n_sessions, &theirs, version, sizeof version);

    flushall();
    if ((rt = runtime(1)) != NULL) {
        ok &= round_trip(rt, n_rt, &ours.rt_p50, &ours.rt_p99);
        am2z_runtime_free(rt);
    } else {
        ok = 0;
    }
    flushall();
    {
        tp_proc w;
        am2z_runtime *caller;
        if (start_worker(&w, 1) && (caller = runtime(AM2Z_QUEUE_NO_WORKERS)) != NULL) {
            ok &= round_trip(caller, n_rt, &ours.rt2_p50, &ours.rt2_p99);
            am2z_runtime_free(caller);
        } else {
            ok = 0;
        }
        tp_stop(&w, SIGTERM, 10000);
    }
    {
        static const int conc[3] = {1, 4, 64};
        double *tput[3], *cpu[3], rss_small, c0;
        am2z_redis *ad = admin();
        int i;
        tput[0] = &ours.tput_c1; tput[1] = &ours.tput_c4; tput[2] = &ours.tput_c64;
        cpu[0] = &ours.cpu_c1; cpu[1] = &ours.cpu_c4; cpu[2] = &ours.cpu_c64;
        for (i = 0; i < 3; i++) {
            flushall();
            c0 = ad ? redis_cpu(ad) : 0;
            ok &= throughput(conc[i], n, tput[i], i == 2 ? &ours.rss_c64 : &rss_small);
            *cpu[i] = ad ? (redis_cpu(ad) - c0) * 1e6 / n : NAN;
        }
        am2z_redis_free(ad);
    }
    flushall();
    if ((rt = runtime(1)) != NULL) {
        ok &= sessions(rt, n_sessions, &ours.session_ms);
        am2z_runtime_free(rt);
    } else {
        ok = 0;
    }
    flushall();

    printf("\n%-30s %-7s %12s %12s  %-16s %-10s %s\n", "", "unit", "am2z", version, "am2z is",
           "target", "");
    row("round trip p50, in-process", "ms", ours.rt_p50, theirs.rt_p50, have_theirs, 0, 0.12);
    row("round trip p99, in-process", "ms", ours.rt_p99, theirs.rt_p99, have_theirs, 0, 0);
    row("round trip p50, 2 processes", "ms", ours.rt2_p50, theirs.rt2_p50, have_theirs, 0, 0.15);
    row("round trip p99, 2 processes", "ms", ours.rt2_p99, theirs.rt2_p99, have_theirs, 0, 0);
    row("throughput, 2 workers x 1", "jobs/s", ours.tput_c1, theirs.tput_c1, have_theirs, 1, 0);
    row("throughput, 2 workers x 4", "jobs/s", ours.tput_c4, theirs.tput_c4, have_theirs, 1, 0);
    row("throughput, 2 workers x 64", "jobs/s", ours.tput_c64, theirs.tput_c64, have_theirs, 1, 40000);
    row("Redis CPU/job, 2 workers x 1", "us", ours.cpu_c1, theirs.cpu_c1, have_theirs, 0, 0);
    row("Redis CPU/job, 2 workers x 4", "us", ours.cpu_c4, theirs.cpu_c4, have_theirs, 0, 0);
    row("Redis CPU/job, 2 workers x 64", "us", ours.cpu_c64, theirs.cpu_c64, have_theirs, 0, 0);
    row("worker peak RSS, concurrency 64", "MB", ours.rss_c64, theirs.rss_c64, have_theirs, 0, 16);
    row("session create + job + stop", "ms", ours.session_ms, theirs.session_ms, have_theirs, 0, 0.5);
    flushall();
    ok &= idem_line(n_rt / 2 > 10 ? n_rt / 2 : 10);
    printf("load average at the end: %.2f (2 cores; above ~0.5 the figures are disturbed)\n", bench_loadavg());
    if (!ok) fprintf(stderr, "bench: some am2z measurements failed (see above)\n");

    tp_stop(&redis, SIGKILL, 2000);
    am2z_logger_release(g_quiet);
    return ok ? 0 : 1;
}
