/* prom_check.h - a strict checker of Prometheus text exposition (format 0.0.4), for the
   metrics tests (tests/test_metrics.c, and through `test_metrics --check FILE` the scrape
   of examples/metrics_server in tests/test_tools.sh). Stricter than the format where
   am2z's own conventions are meant: every sample's family has # HELP then # TYPE before
   its first sample, a family's samples are contiguous, counters end in _total, no series
   appears twice, no blank lines, and each histogram's buckets are cumulative with le
   rising to +Inf, which equals _count. Returns 1 when text passes; otherwise 0 with the
   reason and line number in err. Static; include it from one file. */
#ifndef AM2Z_TESTS_PROM_CHECK_H
#define AM2Z_TESTS_PROM_CHECK_H
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PC_MAX_FAMILIES 256
#define PC_MAX_SERIES 4096
#define PC_LINE 1024

typedef struct pc_family {
    char name[128], type[16];
    int has_help, has_type, sampled, closed;
} pc_family;

typedef struct pc_hist { /* the histogram series being read (one label set) */
    char key[2 * PC_LINE]; /* family name + labels without le */
    double last_le, last_count, inf_count;
    int buckets, has_inf, has_count;
} pc_hist;

typedef struct pc_state {
    pc_family fam[PC_MAX_FAMILIES];
    int nfam;
    char *series[PC_MAX_SERIES];
    int nseries, line;
    char *err;
    size_t errsize;
} pc_state;

static int pc_fail(pc_state *s, const char *fmt, ...) {
    va_list ap;
    int n = snprintf(s->err, s->errsize, "line %d: ", s->line);
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < s->errsize) vsnprintf(s->err + n, s->errsize - (size_t)n, fmt, ap);
    va_end(ap);
    return 0;
}

static int pc_name_char(char c, int first, int colon) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
           (!first && c >= '0' && c <= '9');
}

/* Reads a metric (colon 1) or label (colon 0) name at *p into out; 0 when there is none. */
static int pc_name(const char **p, char *out, size_t size, int colon) {
    size_t n = 0;
    if (!pc_name_char(**p, 1, colon)) return 0;
    while (pc_name_char(**p, n == 0, colon)) {
        if (n + 1 >= size) return 0;
        out[n++] = *(*p)++;
    }
    out[n] = 0;
    return 1;
}

/* A value as Go's ParseFloat reads it (what Prometheus uses): digits, '.', exponent,
   or +Inf / -Inf / NaN. */
static int pc_value(const char *s, double *v) {
    char *end;
    if (strcmp(s, "+Inf") == 0) return *v = HUGE_VAL, 1;
    if (strcmp(s, "-Inf") == 0) return *v = -HUGE_VAL, 1;
    if (strcmp(s, "NaN") == 0) return *v = 0, 1;
    if (!*s || strspn(s, "+-0123456789.eE") != strlen(s)) return 0;
    *v = strtod(s, &end);
    return *end == 0;
}

static pc_family *pc_find(pc_state *s, const char *name) {
    int i;
    for (i = 0; i < s->nfam; i++)
        if (strcmp(s->fam[i].name, name) == 0) return &s->fam[i];
    return NULL;
}

static int pc_comment(pc_state *s, const char *l) {
    char name[128], kind[8];
    const char *p = l + 2, *rest;
    pc_family *f;
    if (strncmp(l, "# HELP ", 7) != 0 && strncmp(l, "# TYPE ", 7) != 0) return 1; /* other comments */
    memcpy(kind, l + 2, 4);
    kind[4] = 0;
    p = l + 7;
    if (!pc_name(&p, name, sizeof name, 1) || *p != ' ') return pc_fail(s, "bad %s line", kind);
    rest = p + 1;
    if (!(f = pc_find(s, name))) {
        if (s->nfam == PC_MAX_FAMILIES) return pc_fail(s, "too many families");
        f = &s->fam[s->nfam++];
        memset(f, 0, sizeof *f);
        strcpy(f->name, name);
    }
    if (f->sampled) return pc_fail(s, "%s of %s after its samples", kind, name);
    if (strcmp(kind, "HELP") == 0) {
        if (f->has_help++ || f->has_type) return pc_fail(s, "HELP of %s twice or after TYPE", name);
        for (; *rest; rest++)
            if (*rest == '\\' && rest[1] != '\\' && rest[1] != 'n') return pc_fail(s, "bad escape in HELP");
            else if (*rest == '\\') rest++;
        return 1;
    }
    if (f->has_type++) return pc_fail(s, "TYPE of %s twice", name);
    if (strcmp(rest, "counter") && strcmp(rest, "gauge") && strcmp(rest, "histogram") && strcmp(rest, "summary") &&
        strcmp(rest, "untyped"))
        return pc_fail(s, "unknown type '%s'", rest);
    strcpy(f->type, rest);
    if (strcmp(rest, "counter") == 0 && (strlen(name) < 6 || strcmp(name + strlen(name) - 6, "_total") != 0))
        return pc_fail(s, "counter %s does not end in _total", name);
    return 1;
}

/* The family a sample name belongs to (histogram suffixes stripped), or NULL. */
static pc_family *pc_family_of(pc_state *s, const char *name, const char **suffix) {
    static const char *const sfx[3] = {"_bucket", "_sum", "_count"};
    char base[128];
    pc_family *f = pc_find(s, name);
    int i;
    *suffix = "";
    if (f && strcmp(f->type, "histogram") != 0) return f;
    for (i = 0; i < 3; i++) {
        size_t n = strlen(name), k = strlen(sfx[i]);
        if (n > k && strcmp(name + n - k, sfx[i]) == 0 && n - k < sizeof base) {
            memcpy(base, name, n - k);
            base[n - k] = 0;
            if ((f = pc_find(s, base)) && strcmp(f->type, "histogram") == 0) {
                *suffix = sfx[i];
                return f;
            }
        }
    }
    return NULL;
}

static int pc_sample(pc_state *s, const char *l, pc_family **last, pc_hist *h) {
    char name[128], lname[128], labels[PC_LINE] = "", le[64] = "", seen[PC_LINE] = ",", key[2 * PC_LINE], vtext[64];
    const char *p = l, *suffix;
    double v;
    pc_family *f;
    size_t n;
    int i;
    if (!pc_name(&p, name, sizeof name, 1)) return pc_fail(s, "bad metric name");
    if (*p == '{') {
        p++;
        while (*p != '}') {
            char val[PC_LINE];
            size_t vn = 0;
            if (!pc_name(&p, lname, sizeof lname, 0) || *p != '=' || p[1] != '"') return pc_fail(s, "bad label");
            p += 2;
            for (; *p != '"'; p++) {
                if (!*p || vn + 2 >= sizeof val) return pc_fail(s, "unterminated label value");
                if (*p == '\\') {
                    p++;
                    if (*p != '\\' && *p != '"' && *p != 'n') return pc_fail(s, "bad escape in label value");
                    val[vn++] = *p == 'n' ? '\n' : *p;
                } else {
                    val[vn++] = *p;
                }
            }
            val[vn] = 0;
            p++;
            {
                char probe[140];
                snprintf(probe, sizeof probe, ",%s,", lname);
                if (strstr(seen, probe)) return pc_fail(s, "label %s twice", lname);
                if (strlen(seen) + strlen(lname) + 2 >= sizeof seen) return pc_fail(s, "too many labels");
                strcat(seen, lname);
                strcat(seen, ",");
            }
            if (strcmp(lname, "le") == 0) {
                if (vn >= sizeof le) return pc_fail(s, "le too long");
                memcpy(le, val, vn + 1);
            } else if (strlen(labels) + strlen(lname) + vn + 4 < sizeof labels) {
                strcat(labels, lname);
                strcat(labels, "=");
                strcat(labels, val);
                strcat(labels, ";");
            }
            if (*p == ',') p++;
            else if (*p != '}') return pc_fail(s, "expected , or } after a label");
        }
        p++;
    }
    if (*p != ' ') return pc_fail(s, "expected one space before the value");
    p++;
    n = strcspn(p, " ");
    if (n == 0 || n >= sizeof vtext) return pc_fail(s, "missing value");
    memcpy(vtext, p, n);
    vtext[n] = 0;
    if (!pc_value(vtext, &v)) return pc_fail(s, "bad value '%s'", vtext);
    if (p[n] == ' ' && strspn(p + n + 1, "-0123456789") != strlen(p + n + 1)) return pc_fail(s, "bad timestamp");
    if (!(f = pc_family_of(s, name, &suffix)) || !f->has_help || !f->has_type)
        return pc_fail(s, "sample %s without # HELP and # TYPE before it", name);
    if (f->closed) return pc_fail(s, "samples of %s are not contiguous", f->name);
    if (*last && *last != f) (*last)->closed = 1;
    *last = f;
    f->sampled = 1;
    snprintf(key, sizeof key, "%s{%s|le=%s}", name, labels, le);
    for (i = 0; i < s->nseries; i++)
        if (strcmp(s->series[i], key) == 0) return pc_fail(s, "series %s twice", key);
    if (s->nseries == PC_MAX_SERIES) return pc_fail(s, "too many series");
    s->series[s->nseries++] = strdup(key);
    if (strcmp(f->type, "histogram") != 0) return 1;
    snprintf(key, sizeof key, "%s{%s}", f->name, labels);
    if (strcmp(suffix, "_bucket") == 0) {
        double lev;
        if (!*le || !pc_value(le, &lev)) return pc_fail(s, "bucket without a valid le");
        if (strcmp(h->key, key) != 0) {
            if (h->buckets) return pc_fail(s, "histogram %s: buckets of another series before its _count", h->key);
            memset(h, 0, sizeof *h);
            snprintf(h->key, sizeof h->key, "%s", key);
        } else if (h->has_inf || lev <= h->last_le || v < h->last_count) {
            return pc_fail(s, "histogram %s: le not rising or counts not cumulative", key);
        }
        h->buckets++;
        h->last_le = lev;
        h->last_count = v;
        if (lev == HUGE_VAL) h->has_inf = 1, h->inf_count = v;
        return 1;
    }
    if (*le) return pc_fail(s, "le on a non-bucket sample");
    if (strcmp(suffix, "_count") == 0) {
        if (strcmp(h->key, key) != 0 || !h->has_inf) return pc_fail(s, "histogram %s: _count without a +Inf bucket", key);
        if (v != h->inf_count) return pc_fail(s, "histogram %s: _count %g != +Inf bucket %g", key, v, h->inf_count);
        h->buckets = 0;
        h->key[0] = 0;
    }
    return 1;
}

static int pc_check(const char *text, char *err, size_t errsize) {
    static pc_state s; /* large: not on the stack */
    pc_family *last = NULL;
    pc_hist h;
    const char *p = text;
    int ok = 1, i;
    memset(&s, 0, sizeof s);
    memset(&h, 0, sizeof h);
    s.err = err;
    s.errsize = errsize;
    err[0] = 0;
    if (!*text) return pc_fail(&s, "empty text");
    while (ok && *p) {
        char l[PC_LINE];
        const char *nl = strchr(p, '\n');
        size_t n;
        s.line++;
        if (!nl) { ok = pc_fail(&s, "last line does not end in a newline"); break; }
        n = (size_t)(nl - p);
        if (n >= sizeof l) { ok = pc_fail(&s, "line too long"); break; }
        memcpy(l, p, n);
        l[n] = 0;
        p = nl + 1;
        if (n == 0) ok = pc_fail(&s, "blank line");
        else if (l[0] == '#') ok = pc_comment(&s, l);
        else ok = pc_sample(&s, l, &last, &h);
    }
    if (ok && h.buckets) ok = pc_fail(&s, "histogram %s ends without _count", h.key);
    for (i = 0; i < s.nseries; i++) free(s.series[i]);
    return ok;
}

/* The value of the series written exactly as series (name{labels} as am2z writes them),
   or NAN when text has no such line. */
static double pc_get(const char *text, const char *series) {
    size_t n = strlen(series);
    const char *p = text;
    while (p && *p) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NAN;
}
#endif
