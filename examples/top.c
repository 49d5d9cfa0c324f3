/* top.c - a live view of a Redis deployment of am2z: one row per processor queue (the
   global one and each session's), refreshed every second. Read-only: it reads BullMQ's
   keys with am2z's RESP client and changes nothing, so it is safe against production.

       cc -O2 -I. -o top examples/top.c -pthread -lm
       ./top --host 10.0.0.5 --port 6379        # or -u redis://10.0.0.5:6379/0
       ./top --once | grep checkout             # one plain-text frame, for scripts

   Options: --host H, --port P (default REDIS_HOST / REDIS_PORT, else 127.0.0.1:6379),
            -u redis://host[:port][/db], --prefix P (am2z's, default "am2z"), --bull B
            (BullMQ's key prefix, default "bull"), --interval S (seconds between frames,
            default 1), --once (print one frame and exit).
   On a terminal each frame replaces the last (ANSI clear, nothing else: fine over ssh);
   when stdout is not a terminal frames are plain text, one after the other, without
   escape codes. Ctrl-C ends it.

   Columns, per queue <bull>:<prefix>~<processor>[~<session>]:
     WAITING    jobs in wait + prioritized        ACTIVE     jobs running now
     DELAYED    retries in backoff, delayed jobs  COMPLETED / FAILED  finished jobs kept
                                                  (the runtime keeps keep_completed, 100)
     JOBS/S     jobs finished in the last 10 s / 10, from the finish times of the kept
                jobs (so it saturates at about keep_completed / 10 s)
     P50 / P99  ms from start to finish of the last 100 completed jobs (processedOn to
                finishedOn, the last attempt)
   The header counts the workers alive: worker threads connected to Redis (connections
   named <bull>:<prefix>:<instance>:w<N>) and the processes (instances) they belong to.
   A worker serves every queue its process registered, so they are counted per
   deployment, not per row. */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_RESP_IMPLEMENTATION
#include "am2z_resp.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SAMPLE 100     /* completed jobs whose times give P50 / P99 */
#define WINDOW_MS 10000 /* JOBS/S looks back this far */

typedef struct row {
    char processor[AM2Z_NAME_MAX + 1], session[AM2Z_SESSION_ID_MAX + 1], queue[2 * AM2Z_NAME_MAX + 80];
    int64_t wait, prioritized, active, delayed, completed, failed, recent;
    double p50, p99; /* < 0: no sample */
} row;

typedef struct view {
    am2z_redis *r;
    const char *prefix, *bull;
    row *rows;
    size_t n, cap;
    int64_t now_ms;
    int threads, processes;
} view;

static volatile sig_atomic_t stopping;
static void on_signal(int sig) { (void)sig; stopping = 1; }

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static int cmp_row(const void *a, const void *b) {
    const row *x = (const row *)a, *y = (const row *)b;
    int c = strcmp(x->processor, y->processor);
    return c ? c : strcmp(x->session, y->session);
}

/* SMEMBERS key, sorted, as strings the caller frees (with the array); -1 on failure. */
static long members(view *v, const char *key, char ***out) {
    am2z_reply rep = {0};
    size_t i, n = 0;
    *out = NULL;
    if (am2z_redis_command(v->r, &rep, "SMEMBERS %s", key) != AM2Z_STATUS_OK || rep.type == AM2Z_REPLY_ERROR) {
        am2z_reply_clear(&rep);
        return -1;
    }
    if (rep.len && (*out = (char **)calloc(rep.len, sizeof **out)) != NULL)
        for (i = 0; i < rep.len; i++)
            if (((*out)[n] = strdup(am2z_reply_str(am2z_reply_at(&rep, i)))) != NULL) n++;
    am2z_reply_clear(&rep);
    if (n) qsort(*out, n, sizeof **out, cmp_str);
    return (long)n;
}

static void free_list(char **l, long n) {
    while (n > 0) free(l[--n]);
    free(l);
}

static row *add_row(view *v, const char *processor, const char *session, const char *queue) {
    row *w;
    if (v->n == v->cap) {
        size_t c = v->cap ? 2 * v->cap : 16;
        row *x = (row *)realloc(v->rows, c * sizeof *x);
        if (!x) return NULL;
        v->rows = x;
        v->cap = c;
    }
    w = &v->rows[v->n++];
    memset(w, 0, sizeof *w);
    snprintf(w->processor, sizeof w->processor, "%s", processor);
    snprintf(w->session, sizeof w->session, "%s", session);
    snprintf(w->queue, sizeof w->queue, "%s:%s", v->bull, queue);
    return w;
}

/* The rows: each known processor's global queue, then every queue of every session. */
static int list_queues(view *v) {
    char key[512], **procs, **sessions, **queues;
    long np, ns, nq, i, k;
    snprintf(key, sizeof key, "%s:%s:processors", v->bull, v->prefix);
    if ((np = members(v, key, &procs)) < 0) return 0;
    for (i = 0; i < np; i++) {
        char q[2 * AM2Z_NAME_MAX + 8];
        snprintf(q, sizeof q, "%s~%s", v->prefix, procs[i]);
        add_row(v, procs[i], "-", q);
    }
    free_list(procs, np);
    snprintf(key, sizeof key, "%s:%s:sessions", v->bull, v->prefix);
    if ((ns = members(v, key, &sessions)) < 0) return 0;
    for (i = 0; i < ns; i++) {
        snprintf(key, sizeof key, "%s:%s:session:%s", v->bull, v->prefix, sessions[i]);
        if ((nq = members(v, key, &queues)) < 0) break;
        for (k = 0; k < nq; k++) { /* "<prefix>~<processor>~<session>" */
            const char *p = queues[k] + strlen(v->prefix) + 1, *e = strchr(p, '~');
            char proc[AM2Z_NAME_MAX + 1];
            if (strncmp(queues[k], v->prefix, strlen(v->prefix)) != 0 || !e || (size_t)(e - p) >= sizeof proc) continue;
            memcpy(proc, p, (size_t)(e - p));
            proc[e - p] = 0;
            add_row(v, proc, sessions[i], queues[k]);
        }
        free_list(queues, nq);
    }
    free_list(sessions, ns);
    return i == ns;
}

static int64_t read_int(view *v) {
    am2z_reply rep = {0};
    int64_t x = 0;
    if (am2z_redis_read(v->r, &rep) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER) x = rep.integer;
    am2z_reply_clear(&rep);
    return x;
}

/* Counts of every row in one pipeline. */
static void read_counts(view *v) {
    char since[32];
    size_t i;
    snprintf(since, sizeof since, "(%lld", (long long)(v->now_ms - WINDOW_MS));
    for (i = 0; i < v->n; i++) {
        const char *q = v->rows[i].queue;
        am2z_redis_append(v->r, "LLEN %s:wait", q);
        am2z_redis_append(v->r, "ZCARD %s:prioritized", q);
        am2z_redis_append(v->r, "LLEN %s:active", q);
        am2z_redis_append(v->r, "ZCARD %s:delayed", q);
        am2z_redis_append(v->r, "ZCARD %s:completed", q);
        am2z_redis_append(v->r, "ZCARD %s:failed", q);
        am2z_redis_append(v->r, "ZCOUNT %s:completed %s +inf", q, since);
        am2z_redis_append(v->r, "ZCOUNT %s:failed %s +inf", q, since);
    }
    for (i = 0; i < v->n; i++) {
        row *w = &v->rows[i];
        w->wait = read_int(v);
        w->prioritized = read_int(v);
        w->active = read_int(v);
        w->delayed = read_int(v);
        w->completed = read_int(v);
        w->failed = read_int(v);
        w->recent = read_int(v);
        w->recent += read_int(v);
    }
}

/* P50 / P99 of one row from its last SAMPLE completed jobs' hashes. */
static void read_latency(view *v, row *w) {
    am2z_reply ids = {0}, rep = {0};
    double ms[SAMPLE];
    size_t i, n = 0;
    w->p50 = w->p99 = -1;
    if (am2z_redis_command(v->r, &ids, "ZREVRANGE %s:completed 0 %d", w->queue, SAMPLE - 1) != AM2Z_STATUS_OK ||
        ids.type != AM2Z_REPLY_ARRAY || ids.len == 0) {
        am2z_reply_clear(&ids);
        return;
    }
    for (i = 0; i < ids.len && i < SAMPLE; i++)
        am2z_redis_append(v->r, "HMGET %s:%s processedOn finishedOn", w->queue, am2z_reply_str(am2z_reply_at(&ids, i)));
    for (i = 0; i < ids.len && i < SAMPLE; i++) {
        if (am2z_redis_read(v->r, &rep) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY && rep.len == 2 &&
            am2z_reply_at(&rep, 0)->type == AM2Z_REPLY_BULK && am2z_reply_at(&rep, 1)->type == AM2Z_REPLY_BULK) {
            double d = atof(am2z_reply_str(am2z_reply_at(&rep, 1))) - atof(am2z_reply_str(am2z_reply_at(&rep, 0)));
            if (d >= 0) ms[n++] = d;
        }
        am2z_reply_clear(&rep);
    }
    am2z_reply_clear(&ids);
    if (!n) return;
    qsort(ms, n, sizeof *ms, cmp_dbl);
    w->p50 = ms[(n * 50 + 99) / 100 - 1];
    w->p99 = ms[(n * 99 + 99) / 100 - 1];
}

/* Worker threads alive: connections named <bull>:<prefix>:<instance>:w<N>. */
static void read_workers(view *v) {
    am2z_reply rep = {0};
    char want[256], seen[64][32];
    const char *p;
    int nseen = 0, i;
    size_t wl = (size_t)snprintf(want, sizeof want, "name=%s:%s:", v->bull, v->prefix);
    v->threads = v->processes = 0;
    if (am2z_redis_command(v->r, &rep, "CLIENT LIST") != AM2Z_STATUS_OK) {
        am2z_reply_clear(&rep);
        return;
    }
    for (p = am2z_reply_str(&rep); (p = strstr(p, want)) != NULL; p += wl) {
        const char *inst = p + wl, *colon = strchr(inst, ':');
        if (!colon || colon - inst >= 32 || colon[1] != 'w' || colon[2] < '0' || colon[2] > '9') continue;
        v->threads++;
        for (i = 0; i < nseen && strncmp(seen[i], inst, (size_t)(colon - inst)) != 0; i++) {
        }
        if (i == nseen && nseen < 64) {
            memcpy(seen[nseen], inst, (size_t)(colon - inst));
            seen[nseen++][colon - inst] = 0;
        }
    }
    v->processes = nseen;
    am2z_reply_clear(&rep);
}

static int64_t server_ms(view *v) {
    am2z_reply rep = {0};
    int64_t ms = 0;
    if (am2z_redis_command(v->r, &rep, "TIME") == AM2Z_STATUS_OK && rep.len == 2)
        ms = atoll(am2z_reply_str(am2z_reply_at(&rep, 0))) * 1000 + atoll(am2z_reply_str(am2z_reply_at(&rep, 1))) / 1000;
    am2z_reply_clear(&rep);
    return ms;
}

/* One frame's data; 0 (with the reason in am2z_status_detail) when Redis fails. */
static int collect(view *v) {
    size_t i;
    v->n = 0;
    if (!am2z_redis_is_connected(v->r) && am2z_redis_connect(v->r) != AM2Z_STATUS_OK) return 0;
    if (!(v->now_ms = server_ms(v)) || !list_queues(v)) return 0;
    if (v->n) qsort(v->rows, v->n, sizeof *v->rows, cmp_row);
    read_counts(v);
    for (i = 0; i < v->n; i++) read_latency(v, &v->rows[i]);
    read_workers(v);
    return am2z_redis_is_connected(v->r);
}

static void ms_cell(char *buf, size_t size, double ms) {
    if (ms < 0) snprintf(buf, size, "-");
    else snprintf(buf, size, "%.1f", ms);
}

static void print_frame(view *v, const char *where, int ok) {
    time_t t = time(NULL);
    char when[32], p50[32], p99[32];
    size_t i, pw = 9, sw = 7;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
    if (!ok) {
        printf("am2z top  %s  %s\nredis: %s\n", where, when, am2z_status_detail());
        return;
    }
    for (i = 0; i < v->n; i++) {
        if (strlen(v->rows[i].processor) > pw) pw = strlen(v->rows[i].processor);
        if (strlen(v->rows[i].session) > sw) sw = strlen(v->rows[i].session);
    }
    if (pw > 40) pw = 40;
    if (sw > 24) sw = 24;
    printf("am2z top  %s  prefix %s  %s  workers alive: %d threads in %d processes\n", where, v->prefix, when,
           v->threads, v->processes);
    printf("%-*s %-*s %8s %7s %7s %9s %7s %7s %8s %8s\n", (int)pw, "PROCESSOR", (int)sw, "SESSION", "WAITING",
           "ACTIVE", "DELAYED", "COMPLETED", "FAILED", "JOBS/S", "P50 MS", "P99 MS");
    for (i = 0; i < v->n; i++) {
        const row *w = &v->rows[i];
        ms_cell(p50, sizeof p50, w->p50);
        ms_cell(p99, sizeof p99, w->p99);
        printf("%-*.*s %-*.*s %8lld %7lld %7lld %9lld %7lld %7.1f %8s %8s\n", (int)pw, (int)pw, w->processor, (int)sw,
               (int)sw, w->session, (long long)(w->wait + w->prioritized), (long long)w->active, (long long)w->delayed,
               (long long)w->completed, (long long)w->failed, (double)w->recent * 1000.0 / WINDOW_MS, p50, p99);
    }
    if (!v->n) printf("(no processors known under %s:%s:processors yet)\n", v->bull, v->prefix);
}

/* -u redis://host[:port][/db] into d (pointing into url, which it edits). */
static int parse_url(char *url, am2z_redis_desc *d) {
    char *h, *c, *s;
    if (strncmp(url, "redis://", 8) != 0) return 0;
    h = url + 8;
    if ((s = strchr(h, '/')) != NULL) {
        *s = 0;
        d->db = atoi(s + 1);
    }
    if ((c = strrchr(h, ':')) != NULL) {
        *c = 0;
        d->port = atoi(c + 1);
    }
    if (*h) d->host = h;
    return 1;
}

int main(int argc, char **argv) {
    am2z_redis_desc d;
    view v;
    char where[300];
    double interval = 1;
    int once = 0, i, tty = isatty(STDOUT_FILENO), ok;
    struct sigaction sa;

    memset(&d, 0, sizeof d);
    memset(&v, 0, sizeof v);
    d.host = getenv("REDIS_HOST") ? getenv("REDIS_HOST") : "127.0.0.1";
    d.port = getenv("REDIS_PORT") ? atoi(getenv("REDIS_PORT")) : 6379;
    d.connect_timeout_ms = 2000;
    d.command_timeout_ms = 5000;
    v.prefix = "am2z";
    v.bull = "bull";
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--once") == 0) { once = 1; continue; }
        if (!val) break;
        if (strcmp(a, "--host") == 0) d.host = val;
        else if (strcmp(a, "--port") == 0) d.port = atoi(val);
        else if (strcmp(a, "-u") == 0 && parse_url(argv[i + 1], &d)) {}
        else if (strcmp(a, "--prefix") == 0) v.prefix = val;
        else if (strcmp(a, "--bull") == 0) v.bull = val;
        else if (strcmp(a, "--interval") == 0 && (interval = atof(val)) > 0) {}
        else break;
        i++;
    }
    if (i < argc) {
        fprintf(stderr, "usage: %s [--host H] [--port P] [-u redis://host:port/db] [--prefix P] [--bull B] "
                        "[--interval S] [--once]\n", argv[0]);
        return 2;
    }
    if (!(v.r = am2z_redis_new(&d, NULL))) {
        fprintf(stderr, "top: %s\n", am2z_status_detail());
        return 2;
    }
    snprintf(where, sizeof where, "redis %s:%d", d.host, d.port);
    if (tty) setvbuf(stdout, NULL, _IOFBF, 1 << 16); /* a frame reaches the screen in one write */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    for (;;) {
        ok = collect(&v);
        if (tty && !once) printf("\033[H\033[2J"); /* home, clear: one frame per screen */
        print_frame(&v, where, ok);
        fflush(stdout);
        if (once || stopping) break;
        if (!tty) putchar('\n');
        {
            struct timespec ts;
            ts.tv_sec = (time_t)interval;
            ts.tv_nsec = (long)((interval - (double)ts.tv_sec) * 1e9);
            nanosleep(&ts, NULL); /* a signal ends it early */
        }
        if (stopping) break;
    }
    am2z_redis_free(v.r);
    free(v.rows);
    return ok ? 0 : 1;
}
