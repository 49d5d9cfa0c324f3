/* producer.c - the calling half of am2z's two-process example: executes N orders through
   the "checkout" pipeline that examples/worker.c processes, keeping up to W executions in
   flight, and checks every result against a total computed here. Any process can
   execute; the result reaches this process whichever worker ran the job. This process
   runs no job itself (AM2Z_QUEUE_NO_WORKERS).

       REDIS_HOST=127.0.0.1 REDIS_PORT=6379 ./producer -n 10000 -w 256

   Options: -n N   executions (default 1000)
            -w W   executions in flight (default 256)
            -k K   what to run: "checkout" (default), "review" (a review step alone) or
                   "reviewed_checkout" (checkout with a review step)
            -r MS  how long a review takes (default 300)
            -t MS  give up on one execution after MS (default 60000)
   Prints one summary line (on a terminal a progress line counts up before it); with a review also "done <order> <pid>" per order (the pid of
   the worker that finished its review). Exit status 0 only when every execution returned
   the right result.
   The producer registers no processor and copies no settings: it declares the names it
   calls (am2z_queue_declare), and each execution gets the timeout and retry policy the
   workers published when they registered the pipeline. */
#define _POSIX_C_SOURCE 200809L /* getopt under -std=c99 */
#define AM2Z_RESP_IMPLEMENTATION
#include "am2z_resp.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct order {
    am2z_state *input;
    int64_t expected_total;
    char id[32];
} order;

/* Order i: 1-3 items with deterministic quantities and prices, so a wrong total anywhere
   in the pipeline (lost branch, stale merge, duplicated step) shows up; review_ms > 0 asks
   for a review of that length. Edits propagate failure (NULL in, NULL out), so one check
   of the finished state covers every step that built it. */
static int make_order(order *o, int i, int64_t review_ms) {
    am2z_value *items = am2z_value_array();
    am2z_value *data = am2z_value_object();
    int64_t subtotal = 0, tax, ship;
    int k, n_items = 1 + i % 3;

    snprintf(o->id, sizeof o->id, "order-%d", i);
    for (k = 0; k < n_items; k++) {
        int64_t qty = 1 + (i + k) % 4, cents = 99 + ((int64_t)i * 37 + k * 1013) % 4900;
        am2z_value *item = am2z_value_object();
        item = am2z_value_set(item, "sku", am2z_value_stringf("sku-%d", (i * 7 + k) % 500));
        item = am2z_value_set(item, "qty", am2z_value_int(qty));
        items = am2z_value_append(items, "", am2z_value_set(item, "price", am2z_value_int(cents)));
        subtotal += qty * cents;
    }
    data = am2z_value_set(data, "order.id", am2z_value_string(o->id));
    data = am2z_value_set(data, "order.items", items);
    if (review_ms > 0) data = am2z_value_set(data, "review_ms", am2z_value_int(review_ms));
    o->input = am2z_state_new("default", data, NULL);
    tax = (subtotal * 20 + 50) / 100;
    ship = subtotal >= 5000 ? 0 : 499;
    o->expected_total = subtotal + tax + ship;
    return o->input != NULL;
}

/* Returns 1 when the outcome is the right one for o; prints why not otherwise. */
static int check(const order *o, const am2z_outcome *out, const char *kind) {
    const char *id;
    if (out->error) {
        char *chain = am2z_error_chain(out->error);
        fprintf(stderr, "producer: %s failed: %s\n", o->id, chain ? chain : out->error->message);
        am2z_free(chain);
        return 0;
    }
    id = am2z_value_get_string(out->state, "order.id", "");
    if (strcmp(id, o->id) != 0) {
        fprintf(stderr, "producer: %s came back as %s\n", o->id, id);
        return 0;
    }
    if (strcmp(kind, "checkout") != 0)
        printf("done %s %lld\n", o->id, (long long)am2z_value_get_int(out->state, "reviewed_by", 0));
    if (strcmp(kind, "review") == 0) return 1;
    if (am2z_value_get_int(out->state, "total", -1) != o->expected_total) {
        fprintf(stderr, "producer: %s total %lld, expected %lld\n", o->id,
                (long long)am2z_value_get_int(out->state, "total", -1), (long long)o->expected_total);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    int n = 1000, window = 256, opt, ok = 0, failed = 0;
    int64_t review_ms = 300, timeout_ms = 60000, t0;
    const char *kind = "checkout";
    int tty = isatty(STDOUT_FILENO); /* a progress line only on a terminal */
    int64_t shown;
    am2z_queue_desc desc;
    am2z_runtime *rt;
    am2z_status st;
    order *orders;
    am2z_execution **inflight;
    int head = 0, submitted = 0;

    while ((opt = getopt(argc, argv, "n:w:k:r:t:")) != -1) {
        switch (opt) {
        case 'n': n = atoi(optarg); break;
        case 'w': window = atoi(optarg); break;
        case 'k': kind = optarg; break;
        case 'r': review_ms = atoll(optarg); break;
        case 't': timeout_ms = atoll(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-n N] [-w in_flight] [-k checkout|review|reviewed_checkout] "
                    "[-r review_ms] [-t timeout_ms]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n < 1 || window < 1 ||
        (strcmp(kind, "checkout") != 0 && strcmp(kind, "review") != 0 && strcmp(kind, "reviewed_checkout") != 0)) {
        fprintf(stderr, "producer: bad arguments\n");
        return 2;
    }

    /* A producer only calls: no worker threads, the workers are other processes. */
    memset(&desc, 0, sizeof desc);
    desc.concurrency = AM2Z_QUEUE_NO_WORKERS;
    rt = am2z_queue_runtime_new(&desc, &st);
    if (!rt) {
        fprintf(stderr, "producer: %s: %s\n", am2z_status_string(st), am2z_status_detail());
        return 1;
    }
    /* The code and the settings of these processors live in the worker processes. */
    if (am2z_queue_declare(rt, kind, NULL) != AM2Z_STATUS_OK) {
        fprintf(stderr, "producer: cannot declare %s: %s\n", kind, am2z_status_detail());
        am2z_runtime_free(rt);
        return 1;
    }
    orders = (order *)calloc((size_t)n, sizeof *orders);
    inflight = (am2z_execution **)calloc((size_t)n, sizeof *inflight);
    if (!orders || !inflight) {
        fprintf(stderr, "producer: out of memory\n");
        return 1;
    }

    /* A sliding window: submit until W are in flight, then collect the oldest. Results
       arrive in any order; waiting on the oldest first keeps the code simple and the
       window full because the others keep running meanwhile. */
    t0 = shown = am2z_now_ms();
    while (head < n) {
        am2z_outcome out = {0};
        while (submitted < n && submitted - head < window) {
            if (!make_order(&orders[submitted], submitted, strcmp(kind, "checkout") != 0 ? review_ms : 0)) {
                fprintf(stderr, "producer: out of memory\n");
                return 1;
            }
            inflight[submitted] = am2z_runtime_submit(rt, kind, orders[submitted].input, NULL, &st);
            if (!inflight[submitted]) {
                fprintf(stderr, "producer: cannot submit %s: %s: %s\n", orders[submitted].id,
                        am2z_status_string(st), am2z_status_detail());
                failed++;
            }
            submitted++;
        }
        if (inflight[head]) {
            if (am2z_execution_wait(inflight[head], timeout_ms, &out) != AM2Z_STATUS_OK) {
                fprintf(stderr, "producer: %s: no result within %lld ms\n", orders[head].id,
                        (long long)timeout_ms);
                failed++;
            } else if (check(&orders[head], &out, kind)) {
                ok++;
            } else {
                failed++;
            }
            am2z_outcome_clear(&out);
            am2z_execution_free(inflight[head]);
        }
        am2z_value_release(orders[head].input);
        head++;
        if (tty && (am2z_now_ms() - shown >= 100 || head == n)) { /* progress, on a terminal only */
            printf("\rproducer: %d/%d done, %d failed", head, n, failed);
            fflush(stdout);
            shown = am2z_now_ms();
        }
    }
    if (tty) printf("\r\033[K"); /* the summary replaces the progress line */
    {
        double secs = (double)(am2z_now_ms() - t0) / 1000.0;
        printf("producer: %d/%d ok, %d failed, %.2f s, %.0f executions/s\n", ok, n, failed, secs,
               secs > 0 ? n / secs : 0.0);
    }
    free(orders);
    free(inflight);
    am2z_runtime_free(rt);
    return failed == 0 && ok == n ? 0 : 1;
}
