/* worker.c - the processing half of am2z's two-process example: registers an order
   pipeline with the Redis queue runtime and processes jobs until SIGINT or SIGTERM.
   Start as many as you like, on as many machines as you like; examples/producer.c sends
   the work and checks every result.

       cc -O2 -I. -o worker examples/worker.c -pthread -lm
       REDIS_HOST=127.0.0.1 REDIS_PORT=6379 ./worker -c 16

   Options: -c N  worker threads (default 16)
            -l MS lock duration (default: the runtime's, 30000)
            -s MS stalled-job check interval (default: the runtime's, 30000)
   The pipeline, all of it processors from am2z.h; every step runs as its own job, so the
   work of one order spreads over all worker processes:
       checkout          = chain(validate, price, quote, total)
       quote             = parallel(tax, shipping)
       reviewed_checkout = chain(validate, review, price, quote, total)
       review            = a manual review that takes input.review_ms (the crash test uses
                           it to kill a worker while it holds jobs)
   Prices are integer cents so every process computes exactly the same totals.
   Registering publishes each processor's settings (timeout, retries, queue options) in
   Redis: callers such as examples/producer.c only declare the names and run every
   execution with these settings; the newest registration wins when workers disagree. */
#define _POSIX_C_SOURCE 200809L /* getopt, sigwait, nanosleep under -std=c99 */
#define AM2Z_RESP_IMPLEMENTATION
#include "am2z_resp.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

/* Each step adds one integer field to its input; the edit helper turns a failed edit
   into a ValidationError naming the path. */
static am2z_result put_int(const am2z_state *in, const char *path, int64_t v) {
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, path, am2z_value_int(v));
    return am2z_edit_end(&e);
}

/* Every item needs qty >= 1 and price >= 0 (cents); a bad order fails for good (a
   validation error is not retryable), it never reaches pricing. */
static am2z_result validate(am2z_ctx *ctx, const am2z_state *in) {
    const am2z_value *items = am2z_value_get(in, "order.items");
    size_t i;
    (void)ctx;
    if (am2z_value_type(items) != AM2Z_TYPE_ARRAY || am2z_value_len(items) == 0)
        return am2z_fail(am2z_error_validation("order.items", items, "must be a non-empty array"));
    for (i = 0; i < am2z_value_len(items); i++) {
        const am2z_value *item = am2z_value_at(items, i);
        if (am2z_value_get_int(item, "qty", 0) < 1 || am2z_value_get_int(item, "price", -1) < 0)
            return am2z_fail(am2z_error_validation("order.items", item, "needs qty >= 1 and price >= 0"));
    }
    return put_int(in, "validated", 1);
}

static am2z_result price(am2z_ctx *ctx, const am2z_state *in) {
    const am2z_value *items = am2z_value_get(in, "order.items");
    int64_t subtotal = 0;
    size_t i;
    (void)ctx;
    for (i = 0; i < am2z_value_len(items); i++) {
        const am2z_value *item = am2z_value_at(items, i);
        subtotal += am2z_value_get_int(item, "qty", 0) * am2z_value_get_int(item, "price", 0);
    }
    return put_int(in, "subtotal", subtotal);
}

/* 20% VAT, rounded half up to the cent. */
static am2z_result tax(am2z_ctx *ctx, const am2z_state *in) {
    int64_t subtotal = am2z_value_get_int(in, "subtotal", 0);
    (void)ctx;
    return put_int(in, "tax", (subtotal * 20 + 50) / 100);
}

/* Free shipping from 50.00. */
static am2z_result shipping(am2z_ctx *ctx, const am2z_state *in) {
    int64_t subtotal = am2z_value_get_int(in, "subtotal", 0);
    (void)ctx;
    return put_int(in, "shipping", subtotal >= 5000 ? 0 : 499);
}

static am2z_result total(am2z_ctx *ctx, const am2z_state *in) {
    int64_t sum = am2z_value_get_int(in, "subtotal", 0) + am2z_value_get_int(in, "tax", 0) +
                  am2z_value_get_int(in, "shipping", 0);
    (void)ctx;
    return put_int(in, "total", sum);
}

/* Stands for a slow external step: holds the job for review_ms, in short slices so a
   cancelled job (timeout, stop) ends promptly. Records which process finished it: the
   crash test checks that reviews started by a killed worker were finished by another. */
static am2z_result review(am2z_ctx *ctx, const am2z_state *in) {
    int64_t left = am2z_value_get_int(in, "review_ms", 100);
    am2z_log_info(am2z_ctx_logger(ctx), "review %s started in pid %ld",
                  am2z_value_get_string(in, "order.id", "?"), (long)getpid());
    while (left > 0 && !am2z_ctx_cancelled(ctx)) {
        struct timespec ts;
        int64_t step = left < 10 ? left : 10;
        ts.tv_sec = 0;
        ts.tv_nsec = (long)step * 1000000L;
        nanosleep(&ts, NULL);
        left -= step;
    }
    if (am2z_ctx_cancelled(ctx)) return am2z_fail(am2z_error_cancelled("review cancelled"));
    return put_int(in, "reviewed_by", (int64_t)getpid());
}

static am2z_processor *plain(const char *name, am2z_processor_fn fn) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = fn}, NULL);
}

/* Builds the pipeline and registers it; the composites register their children. Every
   constructor takes over the processors it is given and register_many takes over both
   chains, also on failure, so there is one status to check and nothing to release. The
   four steps both chains share get one more reference each for checkout. */
static am2z_status register_pipeline(am2z_runtime *rt) {
    am2z_processor *v = plain("validate", validate), *pr = plain("price", price), *t = plain("total", total);
    am2z_processor *quote = am2z_parallel_new(&(am2z_parallel_desc){
        .name = "quote", .count = 2, .branches = (am2z_processor *[]){plain("tax", tax), plain("shipping", shipping)}},
        NULL);
    am2z_processor *checkout = am2z_chain_new(&(am2z_chain_desc){
        .name = "checkout", .count = 4, .steps = (am2z_processor *[]){
            am2z_processor_retain(v), am2z_processor_retain(pr), am2z_processor_retain(quote),
            am2z_processor_retain(t)}}, NULL);
    return am2z_runtime_register_many(rt, (am2z_processor *[]){checkout, am2z_chain_new(&(am2z_chain_desc){
        .name = "reviewed_checkout", .count = 5, .steps = (am2z_processor *[]){
            v, am2z_processor_new(&(am2z_processor_desc){.name = "review", .fn = review, .timeout_ms = 10000,
                                                         .retry = {.max_attempts = 2}}, NULL),
            pr, quote, t}}, NULL)}, 2);
}

int main(int argc, char **argv) {
    am2z_queue_desc desc;
    am2z_runtime *rt;
    am2z_status st;
    sigset_t stop_signals;
    int sig = 0, opt;

    memset(&desc, 0, sizeof desc); /* zero = default; REDIS_HOST, REDIS_PORT, ... apply */
    desc.concurrency = 16;
    while ((opt = getopt(argc, argv, "c:l:s:")) != -1) {
        switch (opt) {
        case 'c': desc.concurrency = atoi(optarg); break;
        case 'l': desc.lock_duration_ms = atoll(optarg); break;
        case 's': desc.stalled_interval_ms = atoll(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-c concurrency] [-l lock_ms] [-s stalled_ms]\n", argv[0]);
            return 2;
        }
    }

    /* Block the stop signals before any runtime thread exists, so every thread inherits
       the mask and main() alone receives them in sigwait. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);

    rt = am2z_queue_runtime_new(&desc, &st);
    if (!rt) {
        fprintf(stderr, "worker: %s: %s\n", am2z_status_string(st), am2z_status_detail());
        return 1;
    }
    if ((st = register_pipeline(rt)) != AM2Z_STATUS_OK) {
        fprintf(stderr, "worker: cannot register the pipeline: %s\n", am2z_status_detail());
        am2z_runtime_free(rt);
        return 1;
    }
    printf("ready %ld\n", (long)getpid()); /* the test waits for this line */
    fflush(stdout);

    sigwait(&stop_signals, &sig);
    /* Finish what is running (up to 5 s); what is still running then is cancelled. */
    am2z_runtime_stop(rt, 5000);
    {
        am2z_value *stats = am2z_runtime_stats(rt); /* "completed": jobs this process finished */
        fprintf(stderr, "worker %ld: stopped by signal %d after %lld jobs (%lld failed)\n", (long)getpid(),
                sig, (long long)am2z_value_get_int(stats, "completed", 0),
                (long long)am2z_value_get_int(stats, "failed", 0));
        am2z_value_release(stats);
    }
    am2z_runtime_free(rt);
    return 0;
}
