/* tests/many_fixture.h - what the COOPERATIVE execute_many tests (test_many_solo.c,
   test_many_batch.c) share: which thread ran an item, short spins and sleeps, a
   cooperative local runtime, numbered inputs, and a thread that stops the "bulk"
   session once an item asks it to. Static functions, for one test program each. */
#ifndef AM2Z_MANY_FIXTURE_H
#define AM2Z_MANY_FIXTURE_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Under the sanitizers an item takes about AM2Z__LR_SHORT_NS (5 us) or more, so which
   thread runs it depends on the machine's load there and is not asserted (an ASan run
   beside make test's background builds sent a 1 us item's chunks to the workers);
   everything else is. The gcc -O2 build asserts it. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define SLOW_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SLOW_BUILD 1
#endif
#endif
#ifndef SLOW_BUILD
#define SLOW_BUILD 0
#endif

static __thread int on_caller; /* set on the thread that calls execute_many */
static int ran_here, ran_elsewhere;
static int stop_asked; /* an item asks stop_bulk to stop the "bulk" session */

static inline void note_thread(void) {
    __atomic_add_fetch(on_caller ? &ran_here : &ran_elsewhere, 1, __ATOMIC_SEQ_CST);
}

static inline void spin_us(int64_t us) {
    int64_t end = am2z_monotonic_ns() + us * 1000;
    while (am2z_monotonic_ns() < end) {
    }
}

static inline void msleep(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static inline am2z_processor *proc_new(const char *name, am2z_processor_fn fn, int64_t timeout_ms) {
    am2z_processor_desc d;
    memset(&d, 0, sizeof d);
    d.name = name;
    d.fn = fn;
    d.timeout_ms = timeout_ms;
    return am2z_processor_new(&d, NULL);
}

/* A silent local runtime with 2 workers and COOPERATIVE deadlines, nothing registered. */
static inline am2z_runtime *rt_coop_new(void) {
    am2z_local_desc d;
    am2z_logger_desc ld;
    am2z_runtime *rt;
    memset(&ld, 0, sizeof ld);
    ld.sink = AM2Z_SINK_SILENT;
    memset(&d, 0, sizeof d);
    d.workers = 2;
    d.deadlines = AM2Z_DEADLINES_COOPERATIVE;
    d.logger = am2z_logger_new(&ld, NULL);
    rt = am2z_local_runtime_new(&d, NULL);
    am2z_logger_release(d.logger);
    return rt;
}

/* n states {"i": i, "n": 0} of session "bulk" (calloc'd array; release_all frees). */
static inline am2z_state **numbered(int n) {
    am2z_state **ins = (am2z_state **)calloc((size_t)n, sizeof *ins);
    char buf[48];
    int i;
    for (i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "{\"i\":%d,\"n\":0}", i);
        ins[i] = am2z_state_parse("bulk", buf, AM2Z_NTS, NULL);
    }
    return ins;
}

static inline void release_all(am2z_state **ins, am2z_outcome *outs, int n) {
    int i;
    for (i = 0; i < n; i++) {
        am2z_outcome_clear(&outs[i]);
        am2z_value_release(ins[i]);
    }
    free(ins);
    free(outs);
}

/* A thread (stop_bulk) that waits (4 s at most) for stop_asked, then stops "bulk". */
typedef struct stopper { am2z_runtime *rt; am2z_status st; } stopper;
static inline void *stop_bulk(void *arg) {
    stopper *s = (stopper *)arg;
    int k;
    for (k = 0; k < 4000 && !__atomic_load_n(&stop_asked, __ATOMIC_SEQ_CST); k++) msleep(1);
    s->st = am2z_runtime_stop_session(s->rt, "bulk", 0);
    return NULL;
}

#endif
