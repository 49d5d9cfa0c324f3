/* bench/local.c - the local runtime against a direct C call doing the same JSON edit.
   Build and run: make bench (or cc -std=c99 -O2 -I. bench/local.c -pthread -lm && ./a.out)
   Prints, per case, the median and p99 of one operation and the ratio to the baseline
   measured in the same run; then execute_many throughput and the resident memory before
   and after 10 M executions. AM2Z_BENCH_SCALE=0.1 runs a tenth of the iterations.
   AM2Z_BENCH_SPIN_NS sets am2z_local_desc.spin_ns (-1: no spin); the "idle" and "sparse"
   lines give the CPU time the process uses while the runtime idles 1 s, and while it
   runs one trivial execute every 2 ms for 1 s: the price of spinning.
   The handoff floor line is a bare two-thread ping-pong on an atomic: no runtime can hand
   work to another thread and get the answer back faster on this machine.
   glibc trims freed heap back to the kernel and, on a VM where a page fault costs tens
   of microseconds, refaulting a million results dominates execute_many; the bench keeps
   the heap (mallopt) unless AM2Z_BENCH_DEFAULT_MALLOC is set. The runtime itself makes
   no allocation per execute_many item beyond the processor's JSON edit and the outcome. */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <pthread.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

static double scale = 1.0;

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

/* CPU time used while the runtime idles 1 s, then while it runs one execute every 2 ms. */
static void run_cpu(am2z_runtime *rt, const am2z_state *in) {
    int64_t c0, w0, c1;
    int k;
    sleep_ns(50000000L); /* let the last spinners block */
    c0 = cpu_ns();
    sleep_ns(1000000000L);
    c1 = cpu_ns();
    printf("%-22s %8.2f ms CPU in 1 s\n", "idle", (double)(c1 - c0) / 1e6);
    c0 = cpu_ns();
    w0 = am2z_monotonic_ns();
    for (k = 0; k < 500; k++) {
        am2z_outcome o = am2z_runtime_execute(rt, "trivial", in);
        am2z_outcome_clear(&o);
        sleep_ns(2000000L);
    }
    c1 = cpu_ns();
    printf("%-22s %8.2f ms CPU in %.0f ms (500 executes, one per 2 ms)\n", "sparse", (double)(c1 - c0) / 1e6,
           (double)(am2z_monotonic_ns() - w0) / 1e6);
}

static size_t iters(size_t n) {
    size_t k = (size_t)((double)n * scale);
    return k < 10 ? 10 : k;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

typedef struct { double p50, p99; } lat;

static lat summarize(int64_t *ns, size_t n) {
    lat l;
    qsort(ns, n, sizeof *ns, cmp_i64);
    l.p50 = (double)ns[n / 2];
    l.p99 = (double)ns[(size_t)((double)n * 0.99)];
    return l;
}

/* The work: n + 1 on a small state (copy-on-write of the shared input). */
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

static void report(const char *what, lat l, lat base) {
    printf("%-22s p50 %8.2f us  p99 %8.2f us   x%6.1f of baseline (p50 %.3f us)\n", what, l.p50 / 1e3,
           l.p99 / 1e3, l.p50 / base.p50, base.p50 / 1e3);
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
    lat l;
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
    l = summarize(ns, n);
    return l;
}

static long rss_kb(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

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

int main(void) {
    const char *sc = getenv("AM2Z_BENCH_SCALE");
    am2z_logger_desc ld;
    am2z_logger *lg;
    am2z_local_desc rd;
    am2z_runtime *rt;
    am2z_state *in;
    size_t n, i, many, chunk;
    int64_t *ns, t0, total;
    const am2z_state **ins;
    am2z_outcome *outs;
    lat b1, b3, b10, l;
    long rss0, rss1;
    double rate;
    size_t bad = 0;

    if (sc) scale = atof(sc) > 0 ? atof(sc) : 1.0;
#if defined(__GLIBC__) && defined(M_TRIM_THRESHOLD)
    if (!getenv("AM2Z_BENCH_DEFAULT_MALLOC")) {
        mallopt(M_TRIM_THRESHOLD, 1 << 30);
        mallopt(M_TOP_PAD, 64 << 20);
    }
#endif
    memset(&ld, 0, sizeof ld);
    ld.sink = AM2Z_SINK_SILENT;
    lg = am2z_logger_new(&ld, NULL);
    memset(&rd, 0, sizeof rd); /* workers: one per CPU */
    rd.logger = lg;
    if (getenv("AM2Z_BENCH_SPIN_NS")) rd.spin_ns = atol(getenv("AM2Z_BENCH_SPIN_NS"));
    rt = am2z_local_runtime_new(&rd, NULL);
    am2z_logger_release(lg);
    in = am2z_state_parse("bench", "{\"n\":0,\"user\":{\"id\":7,\"name\":\"ada\"},\"tags\":[\"a\",\"b\"]}", AM2Z_NTS, NULL);
    if (!rt || !in) return 1;
    if (am2z_runtime_register(rt, plain("trivial")) != AM2Z_STATUS_OK ||
        am2z_runtime_register(rt, chain_of("chain3", 3)) != AM2Z_STATUS_OK ||
        am2z_runtime_register(rt, chain_of("chain10", 10)) != AM2Z_STATUS_OK ||
        am2z_runtime_register(rt, parallel_of("par3", 3)) != AM2Z_STATUS_OK) {
        fprintf(stderr, "bench: register: %s\n", am2z_status_detail());
        return 1;
    }

    {
        am2z_value *st = am2z_runtime_stats(rt);
        printf("am2z local runtime, %ld CPUs, %d workers, spin %lld ns\n", sysconf(_SC_NPROCESSORS_ONLN),
               (int)am2z_value_get_int(st, "workers", 0), (long long)am2z_runtime_config(rt).spin_ns);
        am2z_value_release(st);
    }
    n = iters(200000);
    ns = (int64_t *)malloc(n * sizeof *ns);
    if (!ns) return 1;
    b1 = baseline(in, 1, n, ns);
    b3 = baseline(in, 3, iters(100000), ns);
    b10 = baseline(in, 10, iters(50000), ns);
    l = handoff_floor(ns, iters(100000));
    printf("%-22s p50 %8.2f us  p99 %8.2f us   (two threads, one atomic)\n", "handoff floor", l.p50 / 1e3,
           l.p99 / 1e3);
    run_execute(rt, "trivial", in, iters(20000), ns, 1); /* warm-up */
    l = run_execute(rt, "trivial", in, n, ns, 1);
    report("trivial execute", l, b1);
    l = run_execute(rt, "chain3", in, iters(100000), ns, 3);
    report("chain of 3", l, b3);
    l = run_execute(rt, "chain10", in, iters(50000), ns, 10);
    report("chain of 10", l, b10);
    l = run_execute(rt, "par3", in, iters(50000), ns, 1);
    report("parallel of 3", l, b3);
    free(ns);
    run_cpu(rt, in);

    /* execute_many: 1 M inputs (one shared state) */
    many = iters(1000000);
    ins = (const am2z_state **)malloc(many * sizeof *ins);
    outs = (am2z_outcome *)calloc(many, sizeof *outs); /* outcomes start zeroed */
    if (!ins || !outs) return 1;
    for (i = 0; i < many; i++) ins[i] = in;
    t0 = am2z_monotonic_ns();
    for (i = 0; i < many; i++) {
        am2z_state *s = edit(in);
        am2z_value_release(s);
    }
    total = am2z_monotonic_ns() - t0;
    printf("%-22s %8.2f M/s  (one thread, direct)\n", "baseline loop", (double)many / ((double)total / 1e9) / 1e6);
    {
        int round;
        for (round = 0; round < 2; round++) {
            t0 = am2z_monotonic_ns();
            am2z_runtime_execute_many(rt, "trivial", ins, many, NULL, outs);
            total = am2z_monotonic_ns() - t0;
            for (i = 0; i < many; i++) {
                bad += outs[i].error != NULL;
                am2z_outcome_clear(&outs[i]);
            }
            rate = (double)many / ((double)total / 1e9);
            printf("%-22s %8.2f M/s  (%zu executions in %.0f ms, %zu failed)\n",
                   round ? "execute_many (again)" : "execute_many", rate / 1e6, many, (double)total / 1e6, bad);
        }
    }

    /* memory under sustained load: 10 M executions in execute_many chunks plus 200 k
       single executes, after a warm-up of the same */
    chunk = many < 100000 ? many : 100000;
    for (i = 0; i < 10; i++) {
        size_t k;
        am2z_runtime_execute_many(rt, "trivial", ins, chunk, NULL, outs);
        for (k = 0; k < chunk; k++) am2z_outcome_clear(&outs[k]);
    }
    rss0 = rss_kb();
    t0 = am2z_monotonic_ns();
    for (i = 0; i < (size_t)(10000000 * scale) / chunk; i++) {
        size_t k;
        am2z_runtime_execute_many(rt, "trivial", ins, chunk, NULL, outs);
        for (k = 0; k < chunk; k++) am2z_outcome_clear(&outs[k]);
        if (i % 10 == 0) {
            am2z_outcome o = am2z_runtime_execute(rt, "chain3", in);
            am2z_outcome_clear(&o);
        }
    }
    rss1 = rss_kb();
    printf("%-22s before %ld KiB, after %ld KiB (%+ld KiB) over %zu executions in %.1f s\n", "memory (RSS)", rss0,
           rss1, rss1 - rss0, i * chunk, (double)(am2z_monotonic_ns() - t0) / 1e9);
    free(ins);
    free(outs);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    return 0;
}
