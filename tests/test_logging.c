/* Logging (am2z.h section 4): level filtering, child loggers (context merge, source),
   the callback, JSON and human sinks, colour, the message size limit, and whole lines
   when 8 threads log to one stream at once. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include "oom.h"
#include <time.h>
#ifndef AM2Z_NO_THREADS
#include <pthread.h>
#endif

static am2z_value *J(const char *text) { return am2z_json_parse(text, AM2Z_NTS, NULL, NULL); }

static int json_is(const am2z_value *v, const char *want) {
    char *text = am2z_json_write(v, AM2Z_JSON_COMPACT, NULL);
    int ok = text && strcmp(text, want) == 0;
    if (!ok) fprintf(stderr, "  json = %s, want %s\n", text ? text : "(null)", want);
    am2z_free(text);
    return ok;
}

/* A callback sink that keeps copies of what it receives. */
typedef struct seen {
    int count;
    am2z_log_level level[16];
    char message[16][128];
    char source[16][32];
    char context[16][256];
    int64_t ts[16];
} seen;

static void record(const am2z_log_entry *en, void *ud) {
    seen *s = (seen *)ud;
    char *ctx = am2z_json_write(en->context, AM2Z_JSON_COMPACT, NULL);
    if (s->count < 16) {
        s->level[s->count] = en->level;
        snprintf(s->message[s->count], 128, "%s", en->message);
        snprintf(s->source[s->count], 32, "%s", en->source ? en->source : "(none)");
        snprintf(s->context[s->count], 256, "%s", ctx ? ctx : "(null)");
        s->ts[s->count] = en->logged_at;
    }
    s->count++;
    am2z_free(ctx);
}

static am2z_logger *recorder(seen *s, am2z_log_level min) {
    am2z_logger_desc d;
    memset(&d, 0, sizeof d);
    memset(s, 0, sizeof *s);
    d.min_level = min;
    d.sink = AM2Z_SINK_CALLBACK;
    d.callback = record;
    d.user_data = s;
    return am2z_logger_new(&d, NULL);
}

/* The whole content of a stream written by a test. */
static char *slurp(FILE *f, size_t *len) {
    long n;
    char *buf;
    fflush(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = (char *)malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    return buf;
}

static void test_levels(void) {
    seen s;
    am2z_logger *lg = recorder(&s, AM2Z_LOG_WARN);
    CHECK(lg != NULL);
    CHECK(!am2z_logger_enabled(lg, AM2Z_LOG_DEBUG));
    CHECK(!am2z_logger_enabled(lg, AM2Z_LOG_INFO));
    CHECK(am2z_logger_enabled(lg, AM2Z_LOG_WARN));
    CHECK(am2z_logger_enabled(lg, AM2Z_LOG_ERROR));
    CHECK(!am2z_logger_enabled(lg, AM2Z_LOG_OFF));
    CHECK(!am2z_logger_enabled(lg, (am2z_log_level)42));
    am2z_log_debug(lg, "d");
    am2z_log_info(lg, "i");
    am2z_log_warn(lg, "w %d", 1);
    am2z_log_error(lg, "e %s", "x");
    am2z_log(lg, AM2Z_LOG_OFF, NULL, "never");
    am2z_log(lg, (am2z_log_level)-1, NULL, "never");
    CHECK_INT(s.count, 2);
    CHECK_INT(s.level[0], AM2Z_LOG_WARN);
    CHECK_STR(s.message[0], "w 1");
    CHECK_INT(s.level[1], AM2Z_LOG_ERROR);
    CHECK_STR(s.message[1], "e x");
    am2z_logger_release(lg);

    /* default level is info; level DEFAULT logs as info */
    lg = recorder(&s, AM2Z_LOG_DEFAULT);
    am2z_log_debug(lg, "d");
    am2z_log(lg, AM2Z_LOG_DEFAULT, NULL, "as info");
    CHECK_INT(s.count, 1);
    CHECK_INT(s.level[0], AM2Z_LOG_INFO);
    am2z_logger_release(lg);

    lg = recorder(&s, AM2Z_LOG_OFF);
    am2z_log_error(lg, "nothing");
    CHECK(!am2z_logger_enabled(lg, AM2Z_LOG_ERROR));
    CHECK_INT(s.count, 0);
    am2z_logger_release(lg);

    /* NULL logger: no-op; enabled says 0 */
    am2z_log_error(NULL, "dropped");
    CHECK(!am2z_logger_enabled(NULL, AM2Z_LOG_ERROR));
    am2z_logger_release(NULL);
    CHECK(am2z_logger_retain(NULL) == NULL);
    CHECK(am2z_logger_child(NULL, NULL, "x") == NULL);

    CHECK_STR(am2z_log_level_name(AM2Z_LOG_DEBUG), "debug");
    CHECK_STR(am2z_log_level_name(AM2Z_LOG_INFO), "info");
    CHECK_STR(am2z_log_level_name(AM2Z_LOG_WARN), "warn");
    CHECK_STR(am2z_log_level_name(AM2Z_LOG_ERROR), "error");
}

static void test_invalid_desc_and_silent(void) {
    am2z_logger_desc d;
    am2z_logger *lg;
    memset(&d, 0, sizeof d);
    d.sink = AM2Z_SINK_CALLBACK; /* without a callback */
    CHECK(am2z_logger_new(&d, NULL) == NULL);
    d.sink = (am2z_log_sink)99;
    CHECK(am2z_logger_new(&d, NULL) == NULL);
    d.sink = AM2Z_SINK_HUMAN;
    d.min_level = (am2z_log_level)99;
    CHECK(am2z_logger_new(&d, NULL) == NULL);

    memset(&d, 0, sizeof d);
    d.sink = AM2Z_SINK_SILENT;
    lg = am2z_logger_new(&d, NULL);
    CHECK(lg != NULL);
    CHECK(!am2z_logger_enabled(lg, AM2Z_LOG_ERROR));
    am2z_log_error(lg, "goes nowhere");
    am2z_logger_release(lg);

    lg = am2z_logger_new(NULL, NULL); /* info, human, stderr */
    CHECK(lg != NULL);
    CHECK(am2z_logger_enabled(lg, AM2Z_LOG_INFO) && !am2z_logger_enabled(lg, AM2Z_LOG_DEBUG));
    am2z_logger_release(lg);
}

static void test_callback_entry(void) {
    seen s;
    am2z_logger *lg = recorder(&s, AM2Z_LOG_DEBUG);
    am2z_value *f = J("{\"k\":[1,2]}");
    int64_t before = am2z_now_ms(), after;
    am2z_log(lg, AM2Z_LOG_DEBUG, f, "hello %s #%d", "world", 3);
    after = am2z_now_ms();
    CHECK_INT(s.count, 1);
    CHECK_INT(s.level[0], AM2Z_LOG_DEBUG);
    CHECK_STR(s.message[0], "hello world #3");
    CHECK_STR(s.source[0], "(none)");
    CHECK_STR(s.context[0], "{\"k\":[1,2]}");
    CHECK(s.ts[0] >= before && s.ts[0] <= after);
    /* no fields, NULL or empty: an empty context object, never NULL */
    am2z_log(lg, AM2Z_LOG_INFO, NULL, "plain");
    CHECK_STR(s.context[1], "{}");
    am2z_log(lg, AM2Z_LOG_INFO, NULL, NULL);
    CHECK_STR(s.message[2], "");
    am2z_value_release(f);
    am2z_logger_release(lg);
}

static void test_child_context(void) {
    seen s;
    am2z_logger *root = recorder(&s, AM2Z_LOG_DEBUG);
    am2z_value *pf = J("{\"a\":1,\"b\":1}"), *cf = J("{\"b\":2,\"c\":3}"), *call = J("{\"c\":4,\"d\":5}");
    am2z_logger *parent = am2z_logger_child(root, pf, "runtime");
    am2z_logger *child = am2z_logger_child(parent, cf, NULL);
    am2z_logger *renamed = am2z_logger_child(child, NULL, "processor:step");
    am2z_logger_release(root); /* children keep writing to the same sink */
    am2z_log_info(parent, "p");
    am2z_log(child, AM2Z_LOG_INFO, call, "c");
    am2z_log_info(renamed, "r");
    CHECK_INT(s.count, 3);
    CHECK_STR(s.source[0], "runtime");
    CHECK_STR(s.context[0], "{\"a\":1,\"b\":1}");
    CHECK_STR(s.source[1], "runtime"); /* NULL source keeps the parent's */
    CHECK_STR(s.context[1], "{\"a\":1,\"b\":2,\"c\":4,\"d\":5}"); /* child over parent, call over child */
    CHECK_STR(s.source[2], "processor:step");
    CHECK_STR(s.context[2], "{\"a\":1,\"b\":2,\"c\":3}");
    /* creating the child did not change the parent */
    am2z_log_info(parent, "p2");
    CHECK_STR(s.context[3], "{\"a\":1,\"b\":1}");
    /* a non-object fields value is ignored */
    {
        am2z_value *arr = J("[1]");
        am2z_logger *odd = am2z_logger_child(parent, arr, NULL);
        am2z_log(odd, AM2Z_LOG_INFO, arr, "odd");
        CHECK_STR(s.context[4], "{\"a\":1,\"b\":1}");
        am2z_logger_release(odd);
        am2z_value_release(arr);
    }
    /* a child inherits the level */
    am2z_log_debug(renamed, "debug passes");
    CHECK_INT(s.count, 6);
    CHECK(am2z_logger_retain(child) == child);
    am2z_logger_release(child);
    am2z_logger_release(child);
    am2z_logger_release(renamed);
    am2z_logger_release(parent);
    am2z_value_release(pf);
    am2z_value_release(cf);
    am2z_value_release(call);
}

static am2z_logger *stream_logger(FILE *f, am2z_log_sink sink, int color, const char *source) {
    am2z_logger_desc d;
    memset(&d, 0, sizeof d);
    d.sink = sink;
    d.stream = f;
    d.color = color;
    d.source = source;
    d.min_level = AM2Z_LOG_DEBUG;
    return am2z_logger_new(&d, NULL);
}

static int is_iso_utc(const char *s) {
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    size_t i;
    if (!s || strlen(s) != sizeof shape - 1) return 0;
    for (i = 0; i < sizeof shape - 1; i++)
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i]) return 0;
    return 1;
}

static void test_json_sink(void) {
    FILE *f = tmpfile();
    am2z_logger *lg = stream_logger(f, AM2Z_SINK_JSON, 0, "svc");
    am2z_logger *plain = stream_logger(f, AM2Z_SINK_JSON, 0, NULL);
    am2z_value *fields = J("{\"n\":1,\"s\":\"q\\\"uote\"}");
    char *text, *line, *nl;
    size_t len;
    int lines = 0;
    am2z_log(lg, AM2Z_LOG_WARN, fields, "disk %d%% full", 91);
    am2z_log_error(plain, "line\nbreak");
    text = slurp(f, &len);
    for (line = text; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        am2z_status err;
        am2z_value *v = am2z_json_parse(line, (size_t)(nl - line), NULL, &err);
        CHECK(v != NULL);
        if (!v) break;
        CHECK(am2z_value_type(v) == AM2Z_TYPE_OBJECT);
        CHECK(is_iso_utc(am2z_value_get_string(v, "timestamp", NULL)));
        if (lines == 0) {
            CHECK_STR(am2z_value_get_string(v, "level", ""), "warn");
            CHECK_STR(am2z_value_get_string(v, "message", ""), "disk 91% full");
            CHECK_STR(am2z_value_get_string(v, "source", ""), "svc");
            CHECK(am2z_value_equal(am2z_value_get(v, "context"), fields));
            CHECK_STR(am2z_value_key_at(v, 0, NULL), "level");
            CHECK_STR(am2z_value_key_at(v, 1, NULL), "message");
            CHECK_STR(am2z_value_key_at(v, 2, NULL), "timestamp");
        } else {
            CHECK_STR(am2z_value_get_string(v, "level", ""), "error");
            CHECK_STR(am2z_value_get_string(v, "message", ""), "line\nbreak");
            CHECK(am2z_value_get(v, "source") == NULL);
            CHECK(json_is(am2z_value_get(v, "context"), "{}"));
        }
        am2z_value_release(v);
        lines++;
    }
    CHECK_INT(lines, 2);
    CHECK(*line == '\0'); /* nothing after the last newline */
    free(text);
    am2z_value_release(fields);
    am2z_logger_release(lg);
    am2z_logger_release(plain);
    fclose(f);
}

/* "HH:MM:SS.mmm " then the rest; returns the rest or NULL when the clock is malformed. */
static const char *after_clock(const char *line) {
    static const char shape[] = "dd:dd:dd.ddd ";
    size_t i;
    for (i = 0; i < sizeof shape - 1; i++)
        if (shape[i] == 'd' ? !(line[i] >= '0' && line[i] <= '9') : line[i] != shape[i]) return NULL;
    return line + sizeof shape - 1;
}

static void test_human_sink(void) {
    FILE *f = tmpfile();
    am2z_logger *lg = stream_logger(f, AM2Z_SINK_HUMAN, -1, "api");
    am2z_logger *bare = stream_logger(f, AM2Z_SINK_DEFAULT, -1, NULL);
    am2z_value *fields = J("{\"user\":\"ann\",\"n\":2}");
    char *text;
    const char *rest;
    size_t len;
    am2z_log(lg, AM2Z_LOG_INFO, fields, "signed in");
    am2z_log_debug(bare, "tick");
    am2z_log_warn(bare, "w");
    am2z_log_error(bare, "e");
    text = slurp(f, &len);
    rest = after_clock(text);
    CHECK(rest != NULL);
    if (rest) {
        static const char want[] = "[api] INFO  signed in {\"user\":\"ann\",\"n\":2}\n"; /* level padded to 5 */
        CHECK(strncmp(rest, want, sizeof want - 1) == 0);
        rest = after_clock(rest + sizeof want - 1);
    }
    CHECK(rest && strncmp(rest, "DEBUG tick\n", 11) == 0);
    rest = rest ? after_clock(rest + 11) : NULL;
    CHECK(rest && strncmp(rest, "WARN  w\n", 8) == 0);
    rest = rest ? after_clock(rest + 8) : NULL;
    CHECK(rest && strcmp(rest, "ERROR e\n") == 0);
    CHECK(strchr(text, '\x1b') == NULL);
    free(text);
    am2z_value_release(fields);
    am2z_logger_release(lg);
    am2z_logger_release(bare);
    fclose(f);
}

/* The clock is local time of day: it matches localtime_r of the moment of the call. */
static void test_human_clock(void) {
    FILE *f = tmpfile();
    am2z_logger *lg = stream_logger(f, AM2Z_SINK_HUMAN, -1, NULL);
    int64_t before = am2z_now_ms(), after;
    char want_a[16], want_b[16], *text;
    size_t len;
    time_t t;
    struct tm tm;
    am2z_log_info(lg, "now");
    after = am2z_now_ms();
    t = (time_t)(before / 1000);
    localtime_r(&t, &tm);
    snprintf(want_a, sizeof want_a, "%02d:%02d:%02d.", tm.tm_hour, tm.tm_min, tm.tm_sec);
    t = (time_t)(after / 1000);
    localtime_r(&t, &tm);
    snprintf(want_b, sizeof want_b, "%02d:%02d:%02d.", tm.tm_hour, tm.tm_min, tm.tm_sec);
    text = slurp(f, &len);
    CHECK(strncmp(text, want_a, 9) == 0 || strncmp(text, want_b, 9) == 0);
    free(text);
    am2z_logger_release(lg);
    fclose(f);
}

static void test_color(void) {
    FILE *f = tmpfile();
    am2z_logger *on = stream_logger(f, AM2Z_SINK_HUMAN, 1, NULL);
    am2z_logger *tty = stream_logger(f, AM2Z_SINK_HUMAN, 0, NULL); /* a tmpfile is not a TTY */
    char *text;
    size_t len;
    am2z_log_debug(on, "d");
    am2z_log_info(on, "i");
    am2z_log_warn(on, "w");
    am2z_log_error(on, "e");
    am2z_log_error(tty, "plain");
    text = slurp(f, &len);
    CHECK(strstr(text, " \x1b[36mDEBUG\x1b[0m d\n") != NULL);
    CHECK(strstr(text, " \x1b[34mINFO \x1b[0m i\n") != NULL);
    CHECK(strstr(text, " \x1b[33mWARN \x1b[0m w\n") != NULL);
    CHECK(strstr(text, " \x1b[31mERROR\x1b[0m e\n") != NULL);
    CHECK(strstr(text, " ERROR plain\n") != NULL);
    free(text);
    am2z_logger_release(on);
    am2z_logger_release(tty);
    fclose(f);
}

/* Messages longer than the stack buffer are kept whole; beyond AM2Z_LOG_MAX_MESSAGE
   they are cut with a visible mark. */
static void test_long_messages(void) {
    FILE *f = tmpfile();
    am2z_logger *lg = stream_logger(f, AM2Z_SINK_HUMAN, -1, NULL);
    size_t big = (size_t)AM2Z_LOG_MAX_MESSAGE + 5000, mid = 5000, len, i;
    char *msg = (char *)malloc(big + 1), *text, *nl;
    const char *rest;
    static const char mark[] = "... [truncated]";
    for (i = 0; i < big; i++) msg[i] = (char)('a' + i % 26);
    msg[mid] = '\0';
    am2z_log_info(lg, "%s", msg);
    msg[mid] = (char)('a' + mid % 26);
    msg[big] = '\0';
    am2z_log_info(lg, "%s", msg);
    msg[AM2Z_LOG_MAX_MESSAGE] = '\0';
    am2z_log_info(lg, "%s", msg); /* exactly at the limit: kept whole */
    text = slurp(f, &len);

    rest = after_clock(text);
    CHECK(rest && strncmp(rest, "INFO  ", 6) == 0);
    nl = strchr(text, '\n');
    CHECK(nl && (size_t)(nl - (rest + 6)) == mid && memcmp(rest + 6, msg, mid) == 0);

    rest = nl ? after_clock(nl + 1) : NULL;
    CHECK(rest != NULL);
    nl = rest ? strchr(rest, '\n') : NULL;
    CHECK(nl && (size_t)(nl - (rest + 6)) == (size_t)AM2Z_LOG_MAX_MESSAGE);
    CHECK(nl && memcmp(nl - (sizeof mark - 1), mark, sizeof mark - 1) == 0);
    CHECK(rest && memcmp(rest + 6, msg, (size_t)AM2Z_LOG_MAX_MESSAGE - (sizeof mark - 1)) == 0);

    rest = nl ? after_clock(nl + 1) : NULL;
    nl = rest ? strchr(rest, '\n') : NULL;
    CHECK(nl && (size_t)(nl - (rest + 6)) == (size_t)AM2Z_LOG_MAX_MESSAGE);
    CHECK(rest && memcmp(rest + 6, msg, (size_t)AM2Z_LOG_MAX_MESSAGE) == 0);
    CHECK(nl && nl[1] == '\0');
    free(text);
    free(msg);
    am2z_logger_release(lg);
    fclose(f);
}

/* ---- out of memory (tests/oom.h fails each allocation in turn) ---- */

static FILE *oom_stream;
static seen oom_seen;

/* Builds loggers and logs through every sink; returns 1 when nothing failed. */
static int op_log(void) {
    am2z_logger_desc d;
    am2z_logger *js, *hu, *cb, *child;
    am2z_value *f = am2z_value_set(am2z_value_object(), "k", am2z_value_string("v"));
    char big[2000];
    int ok;
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memset(&d, 0, sizeof d);
    d.stream = oom_stream;
    d.sink = AM2Z_SINK_JSON;
    js = am2z_logger_new(&d, NULL);
    d.sink = AM2Z_SINK_HUMAN;
    d.color = -1;
    hu = am2z_logger_new(&d, NULL);
    memset(&oom_seen, 0, sizeof oom_seen);
    d.sink = AM2Z_SINK_CALLBACK;
    d.callback = record;
    d.user_data = &oom_seen;
    cb = am2z_logger_new(&d, NULL);
    child = am2z_logger_child(cb, f, "child");
    am2z_log(js, AM2Z_LOG_INFO, f, "json %s", big);
    am2z_log(hu, AM2Z_LOG_INFO, f, "human %s", big);
    am2z_log(child, AM2Z_LOG_WARN, f, "cb %s", big);
    ok = js && hu && cb && child && f && oom_seen.count == 1;
    am2z_logger_release(js);
    am2z_logger_release(hu);
    am2z_logger_release(cb);
    am2z_logger_release(child);
    am2z_value_release(f);
    return ok;
}

/* Every allocation in turn fails: no crash, no leak, and once none fails all works. */
static void test_out_of_memory(void) {
    oom_stream = tmpfile();
    CHECK(oom_sweep("log", op_log) > 5);
    fclose(oom_stream);
}

/* A message that cannot grow past the stack buffer keeps what fitted, marked as cut. */
static void keep_message(const am2z_log_entry *en, void *ud) {
    snprintf((char *)ud, 600, "%s", en->message);
}
static void test_out_of_memory_message(void) {
    static const char mark[] = "... [truncated]";
    char big[2000], got[600] = "";
    am2z_logger_desc d;
    am2z_logger *lg;
    size_t n;
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memset(&d, 0, sizeof d);
    d.sink = AM2Z_SINK_CALLBACK;
    d.callback = keep_message;
    d.user_data = got;
    lg = am2z_logger_new(&d, NULL);
    oom_count = 0;
    oom_fail_at = 1; /* the message's first heap block */
    am2z_log_info(lg, "%s", big);
    oom_fail_at = 0;
    n = strlen(got);
    CHECK(n > sizeof mark && n < sizeof big - 1);
    CHECK(n > sizeof mark && strcmp(got + n - (sizeof mark - 1), mark) == 0);
    CHECK(n > sizeof mark && got[0] == 'b' && got[n - sizeof mark] == 'b');
    am2z_logger_release(lg);
}

#ifndef AM2Z_NO_THREADS /* needs threads */
/* 8 threads x 1000 entries through per-thread child loggers onto one stream: exactly
   8000 whole lines, each thread's in its own order. */
#define T_THREADS 8
#define T_LINES 1000

typedef struct worker { am2z_logger *lg; int id; } worker;

static void *log_lines(void *arg) {
    worker *w = (worker *)arg;
    char pad[201];
    int i;
    memset(pad, 'x', 200);
    pad[200] = '\0';
    for (i = 0; i < T_LINES; i++) am2z_log_info(w->lg, "t%d line %d %s", w->id, i, pad);
    return NULL;
}

static void run_threads(am2z_log_sink sink, char **text_out) {
    FILE *f = tmpfile();
    am2z_logger *root = stream_logger(f, sink, -1, NULL);
    pthread_t th[T_THREADS];
    worker w[T_THREADS];
    size_t len;
    int i;
    for (i = 0; i < T_THREADS; i++) {
        char src[16];
        am2z_value *fields = am2z_value_set(am2z_value_object(), "thread", am2z_value_int(i));
        snprintf(src, sizeof src, "w%d", i);
        w[i].lg = am2z_logger_child(root, fields, src);
        w[i].id = i;
        am2z_value_release(fields);
    }
    for (i = 0; i < T_THREADS; i++) CHECK_INT(pthread_create(&th[i], NULL, log_lines, &w[i]), 0);
    for (i = 0; i < T_THREADS; i++) pthread_join(th[i], NULL);
    for (i = 0; i < T_THREADS; i++) am2z_logger_release(w[i].lg);
    am2z_logger_release(root);
    *text_out = slurp(f, &len);
    fclose(f);
}

static void test_concurrent_json(void) {
    char *text, *line, *nl;
    int next[T_THREADS] = {0}, lines = 0, bad = 0;
    run_threads(AM2Z_SINK_JSON, &text);
    for (line = text; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        am2z_value *v = am2z_json_parse(line, (size_t)(nl - line), NULL, NULL);
        int64_t t = am2z_value_get_int(v, "context.thread", -1);
        int id, n;
        const char *msg = am2z_value_get_string(v, "message", "");
        lines++;
        if (!v || t < 0 || t >= T_THREADS || sscanf(msg, "t%d line %d", &id, &n) != 2 || id != t ||
            n != next[t]) {
            bad++;
        } else {
            next[t]++;
        }
        am2z_value_release(v);
    }
    CHECK_INT(lines, T_THREADS * T_LINES);
    CHECK_INT(bad, 0);
    CHECK(*line == '\0');
    free(text);
}

static void test_concurrent_human(void) {
    char *text, *line, *nl;
    int next[T_THREADS] = {0}, lines = 0, bad = 0;
    run_threads(AM2Z_SINK_HUMAN, &text);
    for (line = text; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        /* "HH:MM:SS.mmm [wN] INFO  tN line K <200 x> {"thread":N}" */
        const char *rest = after_clock(line);
        char tail[256];
        int src = -1, id = -2, n = -1, used = 0;
        lines++;
        *nl = '\0';
        if (rest) sscanf(rest, "[w%d] INFO  t%d line %d %n", &src, &id, &n, &used);
        snprintf(tail, sizeof tail, "%0200d {\"thread\":%d}", 0, src);
        memset(tail, 'x', 200);
        if (!rest || used == 0 || src != id || src < 0 || src >= T_THREADS || n != next[src] ||
            strcmp(rest + used, tail) != 0) {
            bad++;
            continue;
        }
        next[src]++;
    }
    CHECK_INT(lines, T_THREADS * T_LINES);
    CHECK_INT(bad, 0);
    free(text);
}
#endif

/* One failure channel: an invalid desc gives a status and a detail saying what is
   wrong (v0.1: a bare NULL, the same as out of memory). */
static void test_new_status(void) {
    am2z_logger_desc d;
    am2z_status st = AM2Z_STATUS_CYCLE;
    am2z_logger *lg;
    memset(&d, 0, sizeof d);
    d.sink = AM2Z_SINK_CALLBACK;
    CHECK(am2z_logger_new(&d, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "logger_new: AM2Z_SINK_CALLBACK without a callback");
    d.sink = AM2Z_SINK_SILENT;
    d.min_level = (am2z_log_level)42;
    CHECK(am2z_logger_new(&d, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "logger_new: level or sink out of range");
    d.min_level = AM2Z_LOG_DEFAULT;
    lg = am2z_logger_new(&d, &st);
    CHECK(lg != NULL && st == AM2Z_STATUS_OK);
    am2z_logger_release(lg);
}

int main(void) {
    oom_install();
    T_RUN(test_levels);
    T_RUN(test_invalid_desc_and_silent);
    T_RUN(test_callback_entry);
    T_RUN(test_child_context);
    T_RUN(test_json_sink);
    T_RUN(test_human_sink);
    T_RUN(test_human_clock);
    T_RUN(test_color);
    T_RUN(test_long_messages);
    T_RUN(test_out_of_memory);
    T_RUN(test_out_of_memory_message);
#ifndef AM2Z_NO_THREADS
    T_RUN(test_concurrent_json);
    T_RUN(test_concurrent_human);
#endif
    T_RUN(test_new_status);
    return t_done();
}
