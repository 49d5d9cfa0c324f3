/* bench/resp - the am2z Redis client against redis-benchmark on the same private
   redis-server (started here on a free loopback port), in the same run:
     - sequential SET and GET round trips per second on one connection
       (redis-benchmark -c 1 -n N -t set,get);
     - pipelined SET per second in batches of 100 on one connection
       (redis-benchmark -c 1 -P 100 -n N -t set).
   Both sides use 3-byte values and keys like redis-benchmark's "key:__rand_int__".
   Each figure is the best of 3 alternating rounds (the machine may be shared).
   It also counts allocations per reply on the sequential path (the target is 0).
   libhiredis is not compared: it is not a dependency and not installed here.
   Build and run: make bench (needs redis-server and redis-benchmark). */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_RESP_IMPLEMENTATION
#include "../am2z_resp.h"
#include "../tests/redis_harness.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double now_s(void) { return (double)am2z_monotonic_ns() / 1e9; }

static size_t n_allocs;
static void *count_alloc(size_t n, void *u) { (void)u; n_allocs++; return malloc(n); }
static void *count_realloc(void *p, size_t n, void *u) { (void)u; n_allocs++; return realloc(p, n); }
static void count_free(void *p, void *u) { (void)u; free(p); }

/* Sequential round trips per second of "SET key:i xxx" (or GET). */
static double sequential(am2z_redis *r, int n, int get) {
    am2z_reply rep = {0}; /* start zeroed: each call clears it first */
    double t0 = now_s();
    int i;
    for (i = 0; i < n; i++) {
        char key[32];
        const char *argv[3];
        size_t len[3];
        len[1] = (size_t)snprintf(key, sizeof key, "key:%012d", i % 100000);
        argv[0] = get ? "GET" : "SET"; len[0] = 3;
        argv[1] = key;
        argv[2] = "xxx"; len[2] = 3;
        if (am2z_redis_command_argv(r, &rep, get ? 2 : 3, argv, len) != AM2Z_STATUS_OK) {
            fprintf(stderr, "command failed: %s\n", am2z_status_detail());
            return 0;
        }
        am2z_reply_clear(&rep);
    }
    return n / (now_s() - t0);
}

/* Pipelined SETs per second, in batches of `batch`. */
static double pipelined(am2z_redis *r, int n, int batch) {
    am2z_reply rep = {0}; /* start zeroed: each call clears it first */
    double t0 = now_s();
    int i, k;
    for (i = 0; i < n; i += batch) {
        for (k = 0; k < batch; k++) {
            char key[32];
            const char *argv[3];
            size_t len[3];
            len[1] = (size_t)snprintf(key, sizeof key, "key:%012d", (i + k) % 100000);
            argv[0] = "SET"; len[0] = 3;
            argv[1] = key;
            argv[2] = "xxx"; len[2] = 3;
            am2z_redis_append_argv(r, 3, argv, len);
        }
        for (k = 0; k < batch; k++) {
            if (am2z_redis_read(r, &rep) != AM2Z_STATUS_OK) {
                fprintf(stderr, "pipeline failed: %s\n", am2z_status_detail());
                return 0;
            }
            am2z_reply_clear(&rep);
        }
    }
    return n / (now_s() - t0);
}

/* Runs redis-benchmark and returns the requests/s it printed for `test` ("SET", "GET"). */
static double redis_benchmark(int port, const char *args, const char *test) {
    char cmd[256], line[512];
    double best = 0;
    FILE *p;
    snprintf(cmd, sizeof cmd, "redis-benchmark -p %d -c 1 -r 100000 -d 3 -q %s 2>/dev/null", port, args);
    p = popen(cmd, "r");
    if (!p) return 0;
    while (fgets(line, sizeof line, p)) {
        /* "SET: 12345.67 requests per second, p50=0.063 msec" (possibly after \r progress) */
        char *s = strrchr(line, '\r');
        char name[16];
        double rate;
        s = s ? s + 1 : line;
        if (sscanf(s, "%15[^:]: %lf requests per second", name, &rate) == 2 && strcmp(name, test) == 0)
            best = rate;
    }
    pclose(p);
    return best;
}

int main(void) {
    t_redis s;
    am2z_redis_desc d;
    am2z_redis *r;
    int round, n_seq = 20000, n_pipe = 400000;
    double set = 0, get = 0, pipe = 0, b_set = 0, b_get = 0, b_pipe = 0, x;
    char args[128];
    int rc = t_redis_start(&s, NULL);
    if (rc != 0) {
        printf("bench/resp: SKIPPED, %s\n", rc == T_REDIS_MISSING ? "redis-server is not installed" : "redis-server did not start");
        return getenv("CI") ? 1 : 0;
    }
    memset(&d, 0, sizeof d);
    d.port = s.port;
    r = am2z_redis_new(&d, NULL);
    if (!r || am2z_redis_connect(r) != AM2Z_STATUS_OK) {
        printf("connect failed: %s\n", am2z_status_detail());
        t_redis_stop(&s);
        return 1;
    }
    sequential(r, 2000, 0); /* warm up */
    for (round = 0; round < 3; round++) {
        if ((x = sequential(r, n_seq, 0)) > set) set = x;
        if ((x = sequential(r, n_seq, 1)) > get) get = x;
        snprintf(args, sizeof args, "-n %d -t set,get", n_seq);
        if ((x = redis_benchmark(s.port, args, "SET")) > b_set) b_set = x;
        if ((x = redis_benchmark(s.port, args, "GET")) > b_get) b_get = x;
        if ((x = pipelined(r, n_pipe, 100)) > pipe) pipe = x;
        snprintf(args, sizeof args, "-n %d -P 100 -t set", n_pipe);
        if ((x = redis_benchmark(s.port, args, "SET")) > b_pipe) b_pipe = x;
    }
    /* allocations per reply on the sequential path */
    {
        am2z_allocator a;
        size_t before;
        a.alloc_fn = count_alloc; a.realloc_fn = count_realloc; a.free_fn = count_free; a.user_data = NULL;
        am2z_set_allocator(&a);
        n_allocs = 0;
        before = n_allocs;
        sequential(r, 10000, 0);
        sequential(r, 10000, 1);
        am2z_set_allocator(NULL);
        printf("allocations per reply (SET +OK, GET 3-byte bulk): %.3f\n", (double)(n_allocs - before) / 20000);
    }
    printf("one connection, redis-server on loopback, best of 3 rounds\n");
    printf("%-24s %12s %16s %8s\n", "", "am2z ops/s", "redis-benchmark", "ratio");
    printf("%-24s %12.0f %16.0f %8.2f\n", "SET sequential", set, b_set, b_set > 0 ? set / b_set : 0);
    printf("%-24s %12.0f %16.0f %8.2f\n", "GET sequential", get, b_get, b_get > 0 ? get / b_get : 0);
    printf("%-24s %12.0f %16.0f %8.2f\n", "SET pipelined (100)", pipe, b_pipe, b_pipe > 0 ? pipe / b_pipe : 0);
    printf("targets: sequential ratio >= 0.90; pipelined >= 500000 SET/s\n");
    am2z_redis_free(r);
    t_redis_stop(&s);
    return 0;
}
