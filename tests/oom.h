/* oom.h - a test allocator that counts allocations and can fail the Nth one.
   Call oom_install() at the start of main, before any other am2z call (as
   am2z_set_allocator documents). oom_count counts allocations and reallocations, so a
   test can check the header's cost model; oom_sweep() runs an operation with the 1st,
   2nd, ... allocation failing until one run needs no failure: every run must return
   cleanly and leave nothing allocated, and the last must succeed. */
#ifndef AM2Z_OOM_H
#define AM2Z_OOM_H
#include "../am2z.h"
#include "t.h"

static long oom_live;    /* blocks not yet freed */
static long oom_count;   /* allocations and reallocations so far */
static long oom_fail_at; /* the oom_count that fails; 0: none */

/* Counters are atomic: tests share values and loggers between threads. */
static int oom_fails(void) {
    long n = __atomic_add_fetch(&oom_count, 1, __ATOMIC_RELAXED);
    return oom_fail_at && n == oom_fail_at;
}
static void *oom_alloc(size_t n, void *ud) {
    void *p;
    (void)ud;
    if (oom_fails()) return NULL;
    p = malloc(n);
    if (p) __atomic_add_fetch(&oom_live, 1, __ATOMIC_RELAXED);
    return p;
}
static void *oom_realloc(void *ptr, size_t n, void *ud) {
    if (!ptr) return oom_alloc(n, ud);
    return oom_fails() ? NULL : realloc(ptr, n);
}
static void oom_free(void *ptr, void *ud) {
    (void)ud;
    if (ptr) __atomic_sub_fetch(&oom_live, 1, __ATOMIC_RELAXED);
    free(ptr);
}

static void oom_install(void) {
    am2z_allocator a;
    a.alloc_fn = oom_alloc;
    a.realloc_fn = oom_realloc;
    a.free_fn = oom_free;
    a.user_data = NULL;
    am2z_set_allocator(&a);
}

/* op returns 1 when the whole operation succeeded. Returns how many allocations a
   successful run of op makes (-1 after a failed check). */
static long oom_sweep(const char *what, int (*op)(void)) {
    long at;
    for (at = 1; at < 100000; at++) {
        long live = oom_live;
        int done;
        oom_count = 0;
        oom_fail_at = at;
        done = op();
        oom_fail_at = 0;
        if (oom_live != live) {
            T_FAIL_("%s: failing allocation %ld leaked %ld blocks", what, at, oom_live - live);
            return -1;
        }
        if (oom_count < at) { /* no allocation failed: the op ran to the end */
            if (!done) T_FAIL_("%s: did not succeed without a failing allocation", what);
            return done ? oom_count : -1;
        }
    }
    T_FAIL_("%s: the oom sweep did not finish", what);
    return -1;
}
#endif
