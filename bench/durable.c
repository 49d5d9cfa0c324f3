/* bench/durable.c - the cost of durability (section 7d): one 10-step chain executed on
   the local runtime, plain and durable with the memory store, the file store without
   fsync and the file store with fsync, in the same run (the cases interleave over 3
   rounds; the median round is printed). Every case goes through submit + wait (a
   durable execute does), so the differences are the durability's.
   Build and run: make bench (or cc -std=c99 -O2 -I. bench/durable.c -pthread -lm && ./a.out)
   A durable execution writes 12 records (start, 10 checkpoints, done) and removes 11,
   so the file store with fsync pays ~23 fsyncs per execution: its figure is the disk's.
   The queue runtime's pair (plain submit + wait, durable) runs against a private
   redis-server (left out when none is installed): there every step is a child job and a
   durable execution adds its records' round trips (start, 10 checkpoints, done, the
   removal) to Redis.
   AM2Z_BENCH_SCALE=0.1 runs a tenth of the iterations; AM2Z_BENCH_DIR picks the
   journal's directory (default /tmp). */
#define _POSIX_C_SOURCE 200809L
#include "../tests/proc.h"
#define AM2Z_RESP_IMPLEMENTATION
#include "../am2z_resp.h"
#include "bench.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ROUNDS 3
#define CASES 6
#define QUEUE_CASE 4 /* cases from here on run on the queue runtime */

static const char *const case_name[CASES] = {"plain (submit + wait)", "durable, memory store",
                                             "durable, file store, no fsync", "durable, file store, fsync",
                                             "Redis: plain (submit + wait)", "Redis: durable"};
static const int case_iters[CASES] = {20000, 5000, 2000, 60, 300, 300};
static int g_port; /* the private redis-server's; 0: none */

static am2z_result step(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "n", am2z_value_int(am2z_value_get_int(in, "n", 0) + 1));
    return am2z_edit_end(&e);
}

static am2z_processor *chain10(void) {
    am2z_processor *steps[10];
    char name[8];
    int k;
    for (k = 0; k < 10; k++) {
        snprintf(name, sizeof name, "s%d", k);
        steps[k] = am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = step}, NULL);
    }
    return am2z_chain_new(&(am2z_chain_desc){.name = "chain10", .steps = steps, .count = 10}, NULL);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Microseconds per execution of case c over n executions; -1 on a failure. */
static double run_case(int c, int n, int round, const char *journal) {
    am2z_store *store = NULL;
    am2z_runtime *rt;
    am2z_state *in = am2z_state_new(NULL, am2z_value_object(), NULL);
    am2z_file_store_desc fd;
    char id[64];
    int64_t t0, t1;
    int i, bad = 0;
    memset(&fd, 0, sizeof fd);
    fd.path = journal;
    fd.no_fsync = c == 2;
    unlink(journal);
    if (c == 1) store = am2z_memory_store_new(NULL);
    if (c == 2 || c == 3) store = am2z_file_store_new(&fd, NULL);
    if (c >= QUEUE_CASE) {
        am2z_queue_desc qd;
        memset(&qd, 0, sizeof qd);
        qd.redis.host = "127.0.0.1";
        qd.redis.port = g_port;
        qd.concurrency = 2;
        rt = am2z_queue_runtime_new(&qd, NULL);
    } else {
        rt = am2z_local_runtime_new(&(am2z_local_desc){.workers = 2, .store = store}, NULL);
    }
    if ((c && c < QUEUE_CASE && !store) || !rt || am2z_runtime_register(rt, chain10())) return -1;
    t0 = am2z_monotonic_ns();
    for (i = 0; i < n; i++) {
        am2z_outcome out;
        snprintf(id, sizeof id, "r%d-%d", round, i);
        if (c == 0 || c == QUEUE_CASE) { /* submit + wait: the path a durable execute takes, without the store */
            am2z_execution *e = am2z_runtime_submit(rt, "chain10", in, NULL, NULL);
            memset(&out, 0, sizeof out);
            if (!e || am2z_execution_wait(e, -1, &out) != AM2Z_STATUS_OK) bad = 1;
            am2z_execution_free(e);
        } else out = am2z_runtime_execute_with(rt, "chain10", in, &(am2z_submit_desc){.durable = 1, .execution_id = id});
        bad |= out.error != NULL || am2z_value_get_int(out.state, "n", 0) != 10;
        am2z_outcome_clear(&out);
    }
    t1 = am2z_monotonic_ns();
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_store_free(store);
    unlink(journal);
    return bad ? -1 : (double)(t1 - t0) / 1e3 / n;
}

int main(void) {
    const char *dir = getenv("AM2Z_BENCH_DIR");
    double scale = bench_scale(), us[CASES][ROUNDS];
    char journal[256];
    int c, r;
    snprintf(journal, sizeof journal, "%s/am2z_bench_durable_%d.journal", dir ? dir : "/tmp", (int)getpid());
    static tp_proc redis;
    if (!(g_port = tp_redis_start(&redis)))
        fprintf(stderr, "bench: no redis-server: the queue runtime's lines are left out\n");
    printf("10-step chain on the local runtime (2 workers) and the queue runtime (2 workers, private "
           "redis-server), execute one at a time; load average %.2f\n", bench_loadavg());
    for (r = 0; r < ROUNDS; r++)
        for (c = 0; c < CASES; c++) {
            int n = (int)(case_iters[c] * scale);
            if (c >= QUEUE_CASE && !g_port) continue;
            us[c][r] = run_case(c, n < 5 ? 5 : n, r, journal);
            if (us[c][r] < 0) {
                fprintf(stderr, "%s: failed\n", case_name[c]);
                if (g_port) tp_stop(&redis, SIGKILL, 2000);
                return 1;
            }
        }
    for (c = 0; c < CASES; c++) {
        int base = c >= QUEUE_CASE ? QUEUE_CASE : 0; /* each runtime against its own plain case */
        if (c >= QUEUE_CASE && !g_port) continue;
        qsort(us[c], ROUNDS, sizeof us[c][0], cmp_double);
        printf("  %-32s %10.1f us per execution  (x%.1f of plain; rounds %.1f .. %.1f)\n", case_name[c],
               us[c][1], us[c][1] / us[base][1], us[c][0], us[c][ROUNDS - 1]);
    }
    if (g_port) tp_stop(&redis, SIGKILL, 2000);
    printf("load average at the end: %.2f (2 cores shared with other work: above ~1 the figures are disturbed)\n",
           bench_loadavg());
    return 0;
}
