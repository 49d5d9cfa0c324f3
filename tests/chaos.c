/* chaos.c - the two halves of the chaos run (tests/chaos.sh): worker processes that get
   killed with kill -9, and a producer that must still get every answer right while its
   workers die and Redis itself is killed and restarted from its AOF.

       chaos worker RUNLOG                 runs the "chaos" chain until killed; appends one
                                           line per step it runs to RUNLOG (O_APPEND)
       chaos producer N WINDOW DEADLINE_MS submits N executions, at most WINDOW in flight,
                                           waits for each up to DEADLINE_MS, prints the report

   The chain is three steps (add, mul, mix), each appending its name to "trail" and
   transforming "x"; every step takes 0-2 ms so kills land inside jobs. A correct answer
   has the expected x and the trail exactly [add, mul, mix]: a step whose effect reached
   the result twice shows up as a longer trail ("duplicated"). Steps that ran again after
   a worker died (at-least-once) are counted from the run logs by the script ("reruns"):
   they are expected, and harmless here because a rerun starts from its input again.

   Report line (parsed by chaos.sh):
       chaos: submitted S answered A ok K wrong W failed F lost L duplicated D resubmits R */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_RESP_IMPLEMENTATION
#include "am2z_resp.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int runlog = -1;

static void nap_us(long us) {
    struct timespec ts;
    ts.tv_sec = 0;
    ts.tv_nsec = us * 1000L;
    nanosleep(&ts, NULL);
}

/* One step: x = f(x), trail += name, one run-log line (a single write, so lines from
   the threads of this process never interleave). */
static am2z_result step(am2z_ctx *ctx, const am2z_state *in, const char *name, int64_t x) {
    char line[128];
    int n = snprintf(line, sizeof line, "%s %s\n", am2z_value_get_string(in, "id", "?"), name);
    am2z_edit e;
    (void)ctx;
    if (runlog >= 0 && n > 0 && write(runlog, line, (size_t)n) != n)
        return am2z_fail(am2z_error_configuration("runlog", "write failed"));
    nap_us((long)((unsigned)(x * 2654435761u) % 2000)); /* 0-2 ms, varied per job and step */
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "x", am2z_value_int(x));
    am2z_edit_append(&e, "trail", am2z_value_string(name));
    return am2z_edit_end(&e);
}

static am2z_result add(am2z_ctx *ctx, const am2z_state *in) {
    return step(ctx, in, "add", am2z_value_get_int(in, "x", 0) + 7);
}
static am2z_result mul(am2z_ctx *ctx, const am2z_state *in) {
    return step(ctx, in, "mul", am2z_value_get_int(in, "x", 0) * 3);
}
static am2z_result mix(am2z_ctx *ctx, const am2z_state *in) {
    return step(ctx, in, "mix", am2z_value_get_int(in, "x", 0) % 1000003 + 11);
}
static int64_t expected(int64_t i) { return ((i + 7) * 3) % 1000003 + 11; }

static am2z_processor *plain(const char *name, am2z_processor_fn fn) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = fn}, NULL);
}

static am2z_status register_chain(am2z_runtime *rt) {
    return am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){
        .name = "chaos", .count = 3,
        .steps = (am2z_processor *[]){plain("add", add), plain("mul", mul), plain("mix", mix)}}, NULL));
}

static int worker(const char *log_path) {
    am2z_queue_desc desc;
    am2z_runtime *rt;
    am2z_status st;
    runlog = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (runlog < 0) { perror(log_path); return 1; }
    memset(&desc, 0, sizeof desc);
    desc.concurrency = 4;
    desc.lock_duration_ms = 1000; /* a dead worker's jobs are recovered within ~1.5 s */
    desc.stalled_interval_ms = 500;
    desc.max_stalled_count = 1000; /* the run kills workers on purpose: never give up a job */
    rt = am2z_queue_runtime_new(&desc, &st);
    if (!rt || register_chain(rt) != AM2Z_STATUS_OK) {
        fprintf(stderr, "chaos worker: %s\n", am2z_status_detail());
        am2z_runtime_free(rt);
        return 1;
    }
    printf("ready %ld\n", (long)getpid());
    fflush(stdout);
    for (;;) pause(); /* until killed */
}

static int producer(int n, int window, int64_t deadline_ms) {
    am2z_queue_desc desc;
    am2z_runtime *rt;
    am2z_status st;
    am2z_execution **inflight = (am2z_execution **)calloc((size_t)n, sizeof *inflight);
    int head = 0, submitted = 0, answered = 0, ok = 0, wrong = 0, failed = 0, lost = 0, dup = 0, resubmits = 0;
    if (!inflight) return 1;
    memset(&desc, 0, sizeof desc);
    desc.concurrency = AM2Z_QUEUE_NO_WORKERS;
    rt = am2z_queue_runtime_new(&desc, &st);
    if (!rt || register_chain(rt) != AM2Z_STATUS_OK) {
        fprintf(stderr, "chaos producer: %s\n", am2z_status_detail());
        am2z_runtime_free(rt);
        return 1;
    }
    while (head < n) {
        am2z_outcome out = {0};
        while (submitted < n && submitted - head < window) {
            char id[32];
            am2z_state *in;
            snprintf(id, sizeof id, "c%d", submitted);
            in = am2z_state_new("default", am2z_value_set(am2z_value_set(am2z_value_object(), "id",
                am2z_value_string(id)), "x", am2z_value_int(submitted)), NULL);
            /* While Redis is down a submit fails; a caller would try again, so do we. */
            while (!(inflight[submitted] = am2z_runtime_submit(rt, "chaos", in, NULL, &st))) {
                if (++resubmits % 50 == 1)
                    fprintf(stderr, "chaos producer: submit %s: %s (retrying)\n", id, am2z_status_detail());
                nap_us(100000);
            }
            am2z_value_release(in);
            submitted++;
        }
        if (am2z_execution_wait(inflight[head], deadline_ms, &out) != AM2Z_STATUS_OK) {
            fprintf(stderr, "chaos producer: c%d: no answer within %lld ms\n", head, (long long)deadline_ms);
            lost++;
        } else {
            const am2z_value *trail = am2z_value_get(out.state, "trail");
            answered++;
            if (out.error) {
                fprintf(stderr, "chaos producer: c%d failed: %s\n", head, out.error->message);
                failed++;
            } else if (am2z_value_len(trail) > 3) {
                dup++;
            } else if (am2z_value_get_int(out.state, "x", -1) != expected(head) || am2z_value_len(trail) != 3) {
                wrong++;
            } else {
                ok++;
            }
        }
        am2z_outcome_clear(&out);
        am2z_execution_free(inflight[head]);
        head++;
    }
    printf("chaos: submitted %d answered %d ok %d wrong %d failed %d lost %d duplicated %d resubmits %d\n",
           submitted, answered, ok, wrong, failed, lost, dup, resubmits);
    free(inflight);
    am2z_runtime_free(rt);
    return ok == n ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "worker") == 0) return worker(argv[2]);
    if (argc == 5 && strcmp(argv[1], "producer") == 0 && atoi(argv[2]) > 0 && atoi(argv[3]) > 0)
        return producer(atoi(argv[2]), atoi(argv[3]), atoll(argv[4]));
    fprintf(stderr, "usage: %s worker RUNLOG | producer N WINDOW DEADLINE_MS\n", argv[0]);
    return 2;
}
