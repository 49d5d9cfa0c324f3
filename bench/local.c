/* bench/local.c - the local runtime in both deadline modes, against the original
   TypeScript framework's figures and against a direct C call doing the same JSON edit.
   Build and run: make bench (or cc -std=c99 -O2 -I. bench/local.c -pthread -lm && ./a.out)
       ./build/bench/local             a quiet machine
       ./build/bench/local --contend   two CPU-bound threads per CPU run beside the bench
   Prints, per case and mode (exact: a worker runs each top-level execution; cooperative:
   the caller's thread does), the median over 3 rounds of the p50 and p99 of one
   operation, the original's p50 measured on the same 2-vCPU machine (bun 1.2.19,
   2026-11) and the speed-up over it; then execute_many throughput per mode with
   its floor (the edit and the bump alone, one thread), the CPU
   price of spinning (idle, sparse), and the resident memory at start, before and after
   a long run of 10 M executions. The rounds interleave the modes (exact first in odd
   rounds, cooperative first in even ones): a single run varies +-50% on a shared VM.
   AM2Z_BENCH_SCALE=0.1 runs a tenth of the iterations (the long run included).
       ./build/bench/local --idem      only the idempotency line: the p50 of a trivial
                                       execute_with a fresh idempotency key (a run) and
                                       with a finished key (an answer, no run) against
                                       a plain execute in the same rounds, as ratios
   AM2Z_BENCH_SPIN_NS sets am2z_local_desc.spin_ns (-1: no spin).
   The handoff floor is a bare two-thread ping-pong on an atomic: no runtime can hand work
   to another thread and get the answer back faster on this machine.
   glibc trims freed heap back to the kernel and, on a VM where a page fault costs tens
   of microseconds, refaulting a million results dominates execute_many; the bench keeps
   the heap (mallopt) unless AM2Z_BENCH_DEFAULT_MALLOC is set. */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <pthread.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#define ROUNDS 3
#define MODES 2
#define CASES 4

static double scale = 1.0;

/* The original's p50 per case, microseconds (bun 1.2.19, same VM, 2026-11, quiet). */
static const char *const case_name[CASES] = {"trivial execute", "chain of 3", "chain of 10", "parallel of 3"};
static const char *const case_proc[CASES] = {"trivial", "chain3", "chain10", "par3"};
static const double original_us[CASES] = {7.4, 21.6, 60.0, 22.5};
static const int case_steps[CASES] = {1, 3, 10, 1}; /* expected "n" of the outcome */
static const int case_direct[CASES] = {1, 3, 10, 3}; /* edits of the direct baseline */
static const size_t case_iters[CASES] = {200000, 100000, 50000, 50000};
static const char *const mode_name[MODES] = {"exact", "cooperative"};

static int64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ns(long ns) {
    struct timespec ts;
    ts.tv_sec = ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    nanosleep(&ts, NULL);
}

static long rss_kb(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static size_t iters(size_t n) {
    size_t k = (size_t)((double)n * scale);
    return k < 10 ? 10 : k;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median3(double *v) {
    qsort(v, ROUNDS, sizeof *v, cmp_dbl);
    return v[ROUNDS / 2];
}

typedef struct { double p50, p99; } lat;

static lat summarize(int64_t *ns, size_t n) {
    lat l;
    qsort(ns, n, sizeof *ns, cmp_i64);
    l.p50 = (double)ns[n / 2];
    l.p99 = (double)ns[(size_t)((double)n * 0.99)];
    return l;
}

/* ---- contention: CPU-bound threads beside the bench ---- */

static volatile int hog_quit;
static void *hog(void *arg) {
    volatile uint64_t x = 0;
    (void)arg;
    while (!hog_quit) x = x * 6364136223846793005ull + 1;
    return NULL;
}

/* ---- the work ---- */

/* n + 1 on a small state (copy-on-write of the shared input). */
static am2z_state *edit(const am2z_state *in) {
    return am2z_value_set(am2z_value_retain(in), "n", am2z_value_int(am2z_value_get_int(in, "n", 0) + 1));
}

static am2z_result trivial(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(edit(in));
}

/* Baseline: k direct edits in sequence, each feeding the next. */
static lat baseline(const am2z_state *in, int k, size_t n, int64_t *ns) {
    size_t i;
    int j;
    for (i = 0; i < n; i++) {
        int64_t t0 = am2z_monotonic_ns();
        am2z_state *s = am2z_value_retain(in), *x;
        for (j = 0; j < k; j++) {
            x = edit(s);
            am2z_value_release(s);
            s = x;
        }
        am2z_value_release(s);
        ns[i] = am2z_monotonic_ns() - t0;
    }
    return summarize(ns, n);
}

static lat run_execute(am2z_runtime *rt, const char *name, const am2z_state *in, size_t n, int64_t *ns,
                       int64_t expect_n) {
    size_t i, bad = 0;
    for (i = 0; i < n; i++) {
        int64_t t0 = am2z_monotonic_ns();
        am2z_outcome out = am2z_runtime_execute(rt, name, in);
        ns[i] = am2z_monotonic_ns() - t0;
        bad += out.error != NULL || (expect_n >= 0 && am2z_value_get_int(out.state, "n", -1) != expect_n);
        am2z_outcome_clear(&out);
    }
    if (bad) fprintf(stderr, "%s: %zu bad outcomes\n", name, bad);
    return summarize(ns, n);
}

/* p50 (ns) of n execute_with of "trivial" with mode 0: no key, 1: a fresh key each
   (keep_ms < 0, so the table stays small: the key's own cost, then a run), 2: one
   finished key (answered from the table, no run). */
static double run_keyed(am2z_runtime *rt, const am2z_state *in, size_t n, int64_t *ns, int mode) {
    static unsigned long fresh;
    size_t i, bad = 0;
    char key[32];
    am2z_submit_desc d;
    memset(&d, 0, sizeof d);
    d.keep_ms = mode == 1 ? -1 : 0;
    if (mode == 2) {
        am2z_outcome o;
        d.idempotency_key = "bench-finished";
        o = am2z_runtime_execute_with(rt, "trivial", in, &d);
        am2z_outcome_clear(&o);
    }
    for (i = 0; i < n; i++) {
        int64_t t0;
        am2z_outcome out;
        if (mode == 1) {
            snprintf(key, sizeof key, "k%lu", fresh++);
            d.idempotency_key = key;
        }
        t0 = am2z_monotonic_ns();
        out = mode ? am2z_runtime_execute_with(rt, "trivial", in, &d) : am2z_runtime_execute(rt, "trivial", in);
        ns[i] = am2z_monotonic_ns() - t0;
        bad += out.error != NULL;
        am2z_outcome_clear(&out);
    }
    if (bad) fprintf(stderr, "keyed mode %d: %zu bad outcomes\n", mode, bad);
    return summarize(ns, n).p50;
}

/* The idempotency line of one mode: medians over ROUNDS interleaved rounds. */
static void run_idem(am2z_runtime *rt, const char *mode, const am2z_state *in, int64_t *ns) {
    double v[3][ROUNDS];
    size_t n = iters(50000);
    int r, m;
    char la[128];
    run_keyed(rt, in, n / 4, ns, 0); /* warm-up */
    for (r = 0; r < ROUNDS; r++)
        for (m = 0; m < 3; m++) v[(m + r) % 3][r] = run_keyed(rt, in, n, ns, (m + r) % 3) / 1e3;
    bench_loadavg_line(la, sizeof la);
    printf("%-16s %-12s plain p50 %.2f us, fresh key %.2f us (%.2fx), finished key %.2f us (%.3fx); "
           "load average %s\n", "idempotent exec", mode, median3(v[0]), median3(v[1]), median3(v[1]) / median3(v[0]), median3(v[2]),
           median3(v[2]) / median3(v[0]), la);
}

/* Executions per second of one execute_many over many inputs. */
static double run_many(am2z_runtime *rt, const am2z_state **ins, am2z_outcome *outs, size_t many) {
    size_t i, bad = 0;
    int64_t t0 = am2z_monotonic_ns(), total;
    am2z_runtime_execute_many(rt, "trivial", ins, many, NULL, outs);
    total = am2z_monotonic_ns() - t0;
    for (i = 0; i < many; i++) {
        bad += outs[i].error != NULL;
        am2z_outcome_clear(&outs[i]);
    }
    if (bad) fprintf(stderr, "execute_many: %zu failed\n", bad);
    return (double)many / ((double)total / 1e9);
}

/* CPU time used while the runtime idles 1 s, then while it runs one execute every 2 ms. */
static void run_cpu(am2z_runtime *rt, const char *mode, const am2z_state *in) {
    int64_t c0, w0, c1;
    int k;
    sleep_ns(50000000L); /* let the last spinners block */
    c0 = cpu_ns();
    sleep_ns(1000000000L);
    c1 = cpu_ns();
    printf("%-16s %-12s %8.2f ms CPU in 1 s\n", "idle", mode, (double)(c1 - c0) / 1e6);
    c0 = cpu_ns();
    w0 = am2z_monotonic_ns();
    for (k = 0; k < 500; k++) {
        am2z_outcome o = am2z_runtime_execute(rt, "trivial", in);
        am2z_outcome_clear(&o);
        sleep_ns(2000000L);
    }
    c1 = cpu_ns();
    printf("%-16s %-12s %8.2f ms CPU in %.0f ms (500 executes, one per 2 ms)\n", "sparse", mode,
           (double)(c1 - c0) / 1e6, (double)(am2z_monotonic_ns() - w0) / 1e6);
}

/* Median round trip of a flag bounced between two spinning threads. */
static int pp_flag;
static void *pp_peer(void *arg) {
    (void)arg;
    for (;;) {
        int v;
        while ((v = __atomic_load_n(&pp_flag, __ATOMIC_ACQUIRE)) == 0 || v == 2) {
        }
        if (v == 3) return NULL;
        __atomic_store_n(&pp_flag, 2, __ATOMIC_RELEASE);
    }
}
static lat handoff_floor(int64_t *ns, size_t n) {
    pthread_t th;
    size_t i;
    pthread_create(&th, NULL, pp_peer, NULL);
    for (i = 0; i < n; i++) {
        int64_t t0 = am2z_monotonic_ns();
        __atomic_store_n(&pp_flag, 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(&pp_flag, __ATOMIC_ACQUIRE) != 2) {
        }
        ns[i] = am2z_monotonic_ns() - t0;
    }
    __atomic_store_n(&pp_flag, 3, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    __atomic_store_n(&pp_flag, 0, __ATOMIC_RELEASE);
    return summarize(ns, n);
}

/* ---- processors ---- */

static am2z_processor *plain(const char *name) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = trivial;
    return am2z_processor_new(&d, NULL);
}

static am2z_processor *chain_of(const char *name, int k) {
    am2z_processor *steps[10];
    am2z_chain_desc d;
    char step[32];
    int i;
    for (i = 0; i < k; i++) {
        snprintf(step, sizeof step, "%s_s%d", name, i);
        steps[i] = plain(step);
    }
    memset(&d, 0, sizeof d);
    d.name = name;
    d.steps = steps;
    d.count = (size_t)k;
    return am2z_chain_new(&d, NULL); /* takes over the steps */
}

static am2z_processor *parallel_of(const char *name, int k) {
    am2z_processor *br[3];
    am2z_parallel_desc d;
    char b[32];
    int i;
    for (i = 0; i < k; i++) {
        snprintf(b, sizeof b, "%s_b%d", name, i);
        br[i] = plain(b);
    }
    memset(&d, 0, sizeof d);
    d.name = name;
    d.branches = br;
    d.count = (size_t)k;
    return am2z_parallel_new(&d, NULL); /* takes over the branches */
}

static am2z_runtime *runtime(am2z_deadlines mode) {
    am2z_logger_desc ld;
    am2z_logger *lg;
    am2z_local_desc rd;
    am2z_runtime *rt;
    memset(&ld, 0, sizeof ld);
    ld.sink = AM2Z_SINK_SILENT;
    lg = am2z_logger_new(&ld, NULL);
    memset(&rd, 0, sizeof rd); /* workers: one per CPU */
    rd.logger = lg;
    rd.deadlines = mode;
    if (getenv("AM2Z_BENCH_SPIN_NS")) rd.spin_ns = atol(getenv("AM2Z_BENCH_SPIN_NS"));
    rt = am2z_local_runtime_new(&rd, NULL);
    am2z_logger_release(lg);
    if (!rt) return NULL;
    if (am2z_runtime_register(rt, plain("trivial")) != AM2Z_STATUS_OK ||
        am2z_runtime_register(rt, chain_of("chain3", 3)) != AM2Z_STATUS_OK ||
        am2z_runtime_register(rt, chain_of("chain10", 10)) != AM2Z_STATUS_OK ||
        am2z_runtime_register(rt, parallel_of("par3", 3)) != AM2Z_STATUS_OK) {
        fprintf(stderr, "bench: register: %s\n", am2z_status_detail());
        am2z_runtime_free(rt);
        return NULL;
    }
    return rt;
}

int main(int argc, char **argv) {
    am2z_runtime *rt[MODES];
    am2z_state *in;
    size_t i, many, chunk, longrun, done = 0, ran = 0;
    int64_t *ns, t0;
    const am2z_state **ins;
    am2z_outcome *outs;
    lat base[CASES], l;
    double p50[CASES][MODES][ROUNDS], p99[CASES][MODES][ROUNDS], rate[MODES][ROUNDS];
    long rss_start = rss_kb(), rss0, rss1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int contend = argc > 1 && strcmp(argv[1], "--contend") == 0, nhogs = 0, r, m, c, k;
    int idem_only = argc > 1 && strcmp(argv[1], "--idem") == 0;
    pthread_t hogs[512];
    char la[128];

    if (argc > 1 && !contend && !idem_only) {
        fprintf(stderr, "usage: %s [--contend | --idem]\n", argv[0]);
        return 2;
    }
    scale = bench_scale();
#if defined(__GLIBC__) && defined(M_TRIM_THRESHOLD)
    if (!getenv("AM2Z_BENCH_DEFAULT_MALLOC")) {
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
        mallopt(M_TOP_PAD, 64 << 20);
    }
#endif
    rt[0] = runtime(AM2Z_DEADLINES_EXACT);
    rt[1] = runtime(AM2Z_DEADLINES_COOPERATIVE);
    /* the input belongs to the session it runs in ("default"), as a program's states do;
       a state from another session is rewritten on the way in and out (two copies) */
    in = am2z_state_parse("default", "{\"n\":0,\"user\":{\"id\":7,\"name\":\"ada\"},\"tags\":[\"a\",\"b\"]}", AM2Z_NTS, NULL);
    ns = (int64_t *)malloc(iters(200000) * sizeof *ns);
    many = iters(1000000);
    ins = (const am2z_state **)malloc(many * sizeof *ins);
    outs = (am2z_outcome *)calloc(many, sizeof *outs); /* outcomes start zeroed */
    if (!rt[0] || !rt[1] || !in || !ns || !ins || !outs) return 1;
    for (i = 0; i < many; i++) ins[i] = in;
    if (idem_only) {
        run_idem(rt[0], mode_name[0], in, ns);
        run_idem(rt[1], mode_name[1], in, ns);
        free(ns);
        free(ins);
        free(outs);
        am2z_value_release(in);
        am2z_runtime_free(rt[0]);
        am2z_runtime_free(rt[1]);
        return 0;
    }

    bench_loadavg_line(la, sizeof la);
    printf("am2z local runtime, %ld CPUs, %d workers, spin %lld ns, %s, load average %s\n", ncpu,
           am2z_runtime_config(rt[0]).workers, (long long)am2z_runtime_config(rt[0]).spin_ns,
           contend ? "--contend" : "no --contend", la);
    if (contend) {
        for (k = 0; k < 2 * ncpu && k < 512; k++)
            if (pthread_create(&hogs[k], NULL, hog, NULL) == 0) nhogs++;
        printf("contention: %d CPU-bound threads beside the bench\n", nhogs);
        sleep_ns(300000000L); /* let the scheduler see them */
    }
    l = handoff_floor(ns, iters(100000));
    printf("%-16s p50 %8.2f us  p99 %8.2f us   (two threads, one atomic)\n", "handoff floor", l.p50 / 1e3,
           l.p99 / 1e3);
    for (c = 0; c < CASES; c++) base[c] = baseline(in, case_direct[c], iters(case_iters[c]), ns);
    for (m = 0; m < MODES; m++) {
        run_execute(rt[m], "trivial", in, iters(20000), ns, 1); /* warm-up */
        run_execute(rt[m], "par3", in, iters(2000), ns, 1);
        done += iters(20000) + iters(2000);
    }
    for (r = 0; r < ROUNDS; r++) {
        for (k = 0; k < MODES; k++) {
            m = r % 2 ? k : MODES - 1 - k;
            for (c = 0; c < CASES; c++) {
                l = run_execute(rt[m], case_proc[c], in, iters(case_iters[c]), ns, case_steps[c]);
                p50[c][m][r] = l.p50 / 1e3;
                p99[c][m][r] = l.p99 / 1e3;
                done += iters(case_iters[c]);
            }
            rate[m][r] = run_many(rt[m], ins, outs, many);
            done += many;
        }
    }
    printf("%-16s %-12s %9s %9s %14s %9s %10s\n", "case", "mode", "p50 us", "p99 us", "original p50", "speed-up",
           "direct p50");
    for (c = 0; c < CASES; c++)
        for (m = 0; m < MODES; m++) {
            double a = median3(p50[c][m]), b = median3(p99[c][m]);
            printf("%-16s %-12s %9.2f %9.2f %11.1f us %8.1fx %7.3f us\n", case_name[c], mode_name[m], a, b,
                   original_us[c], original_us[c] / a, base[c].p50 / 1e3);
        }
    for (m = 0; m < MODES; m++)
        printf("%-16s %-12s %8.2f M/s  (%zu executions per round, median of %d)\n", "execute_many", mode_name[m],
               median3(rate[m]) / 1e6, many, ROUNDS);
    t0 = am2z_monotonic_ns();
    for (i = 0; i < many; i++) am2z_value_release(edit(in));
    printf("%-16s %-12s %8.2f M/s  (one thread, direct)\n", "baseline loop", "",
           (double)many / ((double)(am2z_monotonic_ns() - t0) / 1e9) / 1e6);
    {
        /* execute_many's floor on one thread: the processor's edit and the version bump
           of every step, the results kept alive as execute_many's outcomes are (outs is
           cleared: its memory holds the pointers, then it is zeroed again) */
        am2z_state **keep = (am2z_state **)(void *)outs;
        t0 = am2z_monotonic_ns();
        for (i = 0; i < many; i++) keep[i] = am2z_state_bump(edit(in));
        printf("%-16s %-12s %8.2f M/s  (one thread, edit + bump, %zu results kept)\n", "floor loop", "",
               (double)many / ((double)(am2z_monotonic_ns() - t0) / 1e9) / 1e6, many);
        for (i = 0; i < many; i++) am2z_value_release(keep[i]);
        memset(outs, 0, many * sizeof *outs);
    }
    run_idem(rt[0], mode_name[0], in, ns);
    run_idem(rt[1], mode_name[1], in, ns);
    bench_loadavg_line(la, sizeof la);
    printf("load average after the rounds: %s\n", la);
    if (!contend) {
        run_cpu(rt[0], mode_name[0], in);
        run_cpu(rt[1], mode_name[1], in);
    }

    /* memory under sustained load: 10 M executions (scaled) in execute_many chunks plus
       single executes, both modes, after the rounds above warmed everything up */
    chunk = many < 100000 ? many : 100000;
    longrun = (size_t)(10000000 * scale);
    rss0 = rss_kb();
    t0 = am2z_monotonic_ns();
    for (i = 0; ran < longrun || i < 2; i++) {
        size_t j;
        m = (int)(i % 2);
        am2z_runtime_execute_many(rt[m], "trivial", ins, chunk, NULL, outs);
        for (j = 0; j < chunk; j++) am2z_outcome_clear(&outs[j]);
        for (j = 0; j < 100; j++) {
            am2z_outcome o = am2z_runtime_execute(rt[m], case_proc[j % CASES], in);
            am2z_outcome_clear(&o);
        }
        ran += chunk + 100;
    }
    rss1 = rss_kb();
    printf("%-16s at start %ld KiB; before the long run %ld KiB, after %ld KiB (%+ld KiB): %zu executions "
           "in %.1f s (%zu before it)\n", "memory (RSS)", rss_start, rss0, rss1, rss1 - rss0, ran,
           (double)(am2z_monotonic_ns() - t0) / 1e9, done);
    hog_quit = 1;
    for (k = 0; k < nhogs; k++) pthread_join(hogs[k], NULL);
    free(ns);
    free(ins);
    free(outs);
    am2z_value_release(in);
    am2z_runtime_free(rt[0]);
    am2z_runtime_free(rt[1]);
    return 0;
}
