/* bench/bench.h - what the benches share: the load average printed next to every figure
   (a figure measured next to a busy build is not a figure) and their sizes from the
   environment. Header-only, static inline functions. */
#ifndef AM2Z_BENCH_H
#define AM2Z_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The 1-minute load average, or -1 when /proc/loadavg cannot be read. */
static inline double bench_loadavg(void) {
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

/* The whole line of /proc/loadavg (1, 5, 15 minutes, tasks) into buf of n bytes, without
   its newline; "?" when it cannot be read. */
static inline void bench_loadavg_line(char *buf, size_t n) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f || !fgets(buf, (int)n, f)) snprintf(buf, n, "?");
    if (f) fclose(f);
    buf[strcspn(buf, "\n")] = 0;
}

/* The environment variable name as a positive int, or def when unset or not positive. */
static inline int bench_env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : def;
}

/* AM2Z_BENCH_SCALE (a factor on every iteration count), 1 when unset or not positive. */
static inline double bench_scale(void) {
    const char *v = getenv("AM2Z_BENCH_SCALE");
    return v && atof(v) > 0 ? atof(v) : 1.0;
}

#endif
