/* bench/trace.c - what tracing (am2z.h section 7f) costs per step, on vs off in the same
   run. A chain of 10 trivial steps (11 spans per execution: the chain and its steps) on
   the inline runtime (one thread: no hand-off noise) and on the local runtime in
   COOPERATIVE mode (the caller's thread runs it); each measured as the median over 7
   interleaved rounds (off first in odd rounds, on first in even ones) of the mean CPU
   time of the calling thread per execution over a batch, then divided by 11 steps. CPU
   time, not wall time: on a shared machine the wall time of a batch varies by more than
   tracing costs (both run on the calling thread). A traced execution also builds
   its trace and frees it (am2z_outcome_clear): both are in the "on" figure.
   Build and run: make bench (or cc -std=c99 -O2 -I. bench/trace.c -pthread -lm && ./a.out)
   AM2Z_BENCH_SCALE=0.1 runs a tenth of the iterations. */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUNDS 7
#define STEPS 10
#define SPANS (STEPS + 1)

#include <time.h>

static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static am2z_result step(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "n", am2z_value_int(am2z_value_get_int(in, "n", 0) + 1));
    return am2z_edit_end(&e);
}

static void setup(am2z_runtime *rt) {
    am2z_processor *steps[STEPS];
    char name[16];
    int i;
    for (i = 0; i < STEPS; i++) {
        snprintf(name, sizeof name, "s%d", i);
        steps[i] = am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = step}, NULL);
    }
    if (am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){.name = "chain10", .steps = steps, .count = STEPS},
                                                 NULL)) != AM2Z_STATUS_OK) {
        fprintf(stderr, "setup: %s\n", am2z_status_detail());
        exit(1);
    }
}

/* Mean ns per execution over iters executions. */
static double batch(am2z_runtime *rt, const am2z_state *in, size_t iters, int trace) {
    int64_t t0;
    size_t i;
    t0 = thread_cpu_ns();
    for (i = 0; i < iters; i++) {
        am2z_outcome out = am2z_runtime_execute(rt, "chain10", in);
        if (out.error || am2z_value_get_int(out.state, "n", 0) != STEPS || (trace && am2z_trace_count(out.trace) != SPANS)) {
            fprintf(stderr, "bad outcome\n");
            exit(1);
        }
        am2z_outcome_clear(&out);
    }
    return (double)(thread_cpu_ns() - t0) / (double)iters;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* rt without tracing, rt_on the same runtime with desc.trace. */
static void run(const char *label, am2z_runtime *rt, am2z_runtime *rt_on, size_t iters) {
    am2z_state *in = am2z_state_parse("b", "{\"n\":0}", AM2Z_NTS, NULL);
    double off[ROUNDS], on[ROUNDS], moff, mon;
    int r;
    setup(rt);
    setup(rt_on);
    batch(rt_on, in, iters / 10 + 1, 1); /* warm up */
    batch(rt, in, iters / 10 + 1, 0);
    for (r = 0; r < ROUNDS; r++) {
        if (r % 2 == 0) {
            off[r] = batch(rt, in, iters, 0);
            on[r] = batch(rt_on, in, iters, 1);
        } else {
            on[r] = batch(rt_on, in, iters, 1);
            off[r] = batch(rt, in, iters, 0);
        }
    }
    qsort(off, ROUNDS, sizeof *off, cmp);
    qsort(on, ROUNDS, sizeof *on, cmp);
    moff = off[ROUNDS / 2];
    mon = on[ROUNDS / 2];
    printf("%-22s off %6.0f ns/step  on %6.0f ns/step  tracing %+5.0f ns/step (%+.0f%%)\n", label, moff / SPANS,
           mon / SPANS, (mon - moff) / SPANS, 100.0 * (mon - moff) / moff);
    am2z_value_release(in);
}

int main(void) {
    size_t iters = (size_t)(20000 * bench_scale());
    char la[64];
    am2z_logger *quiet = am2z_logger_new(&(am2z_logger_desc){.sink = AM2Z_SINK_SILENT}, NULL);
    am2z_runtime *rt, *rt_on;
    bench_loadavg_line(la, sizeof la);
    printf("trace cost per step, CPU time (chain of %d: %d spans/execution), %zu executions x %d rounds, load %s\n", STEPS,
           SPANS, iters, ROUNDS, la);
    rt = am2z_inline_runtime_new(&(am2z_inline_desc){.logger = quiet}, NULL);
    rt_on = am2z_inline_runtime_new(&(am2z_inline_desc){.logger = quiet, .trace = 1}, NULL);
    run("inline", rt, rt_on, iters);
    am2z_runtime_free(rt);
    am2z_runtime_free(rt_on);
    rt = am2z_local_runtime_new(&(am2z_local_desc){.workers = 2, .logger = quiet,
                                                   .deadlines = AM2Z_DEADLINES_COOPERATIVE}, NULL);
    rt_on = am2z_local_runtime_new(&(am2z_local_desc){.workers = 2, .logger = quiet, .trace = 1,
                                                      .deadlines = AM2Z_DEADLINES_COOPERATIVE}, NULL);
    run("local (cooperative)", rt, rt_on, iters);
    am2z_runtime_free(rt);
    am2z_runtime_free(rt_on);
    am2z_logger_release(quiet);
    return 0;
}
