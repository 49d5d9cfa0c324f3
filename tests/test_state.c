/* test_state.c - section 2 of am2z.h: states (a JSON object with "metadata"
   {version, sessionId, createdAt, lastUpdated}), bumping, serialisation, sharing of
   members between versions, and values shared between threads (run under TSan by
   `make check-tsan T=state`). */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include "oom.h"
#ifndef AM2Z_NO_THREADS
#include <pthread.h>
#endif

static const char *J(const am2z_value *v, int flags) {
    static char out[4096];
    char *s = am2z_json_write(v, flags, NULL);
    snprintf(out, sizeof out, "%s", s ? s : "(null)");
    am2z_free(s);
    return out;
}

static void test_new(void) {
    int64_t before = am2z_now_ms(), after;
    am2z_value *data = am2z_value_set(am2z_value_object(), "x", am2z_value_int(1));
    am2z_state *s = am2z_state_new("sess-1", data, NULL);
    size_t klen;
    after = am2z_now_ms();
    CHECK(s != NULL);
    CHECK_INT(am2z_state_version(s), 1);
    CHECK_STR(am2z_state_session_id(s), "sess-1");
    CHECK(am2z_state_created_at(s) >= before && am2z_state_created_at(s) <= after);
    CHECK_INT(am2z_state_last_updated(s), am2z_state_created_at(s));
    CHECK_STR(am2z_value_key_at(s, 0, &klen), "metadata"); /* first, as the original spreads it */
    CHECK_STR(am2z_value_key_at(s, 1, NULL), "x");
    CHECK_STR(am2z_value_key_at(am2z_value_get(s, "metadata"), 0, NULL), "version");
    CHECK_STR(am2z_value_key_at(am2z_value_get(s, "metadata"), 1, NULL), "sessionId");
    CHECK_STR(am2z_value_key_at(am2z_value_get(s, "metadata"), 2, NULL), "createdAt");
    CHECK_STR(am2z_value_key_at(am2z_value_get(s, "metadata"), 3, NULL), "lastUpdated");
    CHECK_INT(am2z_value_get_int(s, "x", 0), 1);
    am2z_value_release(s);

    s = am2z_state_new(NULL, am2z_value_object(), NULL); /* empty data, default session */
    CHECK_STR(am2z_state_session_id(s), "default");
    CHECK_INT(am2z_value_len(s), 1);
    am2z_value_release(s);

    CHECK(am2z_state_new("s", am2z_value_int(3), NULL) == NULL);
    CHECK(am2z_state_new("s", am2z_value_array(), NULL) == NULL);

    /* A well-formed metadata member in data is kept (the original lets
       extra.metadata replace its block); a malformed one is replaced in place. */
    data = am2z_json_parse("{\"a\":1,\"metadata\":{\"version\":7,\"sessionId\":\"old\",\"createdAt\":5,"
                           "\"lastUpdated\":6}}", AM2Z_NTS, NULL, NULL);
    s = am2z_state_new("new", data, NULL);
    CHECK_INT(am2z_state_version(s), 7);
    CHECK_STR(am2z_state_session_id(s), "old");
    CHECK_INT(am2z_state_created_at(s), 5);
    CHECK_INT(am2z_state_last_updated(s), 6);
    CHECK_STR(am2z_value_key_at(s, 0, NULL), "a");
    am2z_value_release(s);
    data = am2z_json_parse("{\"a\":1,\"metadata\":{\"version\":\"7\"}}", AM2Z_NTS, NULL, NULL);
    s = am2z_state_new("new", data, NULL);
    CHECK_INT(am2z_state_version(s), 1);
    CHECK_STR(am2z_state_session_id(s), "new");
    CHECK_STR(am2z_value_key_at(s, 1, NULL), "metadata");
    CHECK_INT(am2z_value_len(s), 2);
    am2z_value_release(s);

    /* readers on things that are not states */
    CHECK_INT(am2z_state_version(NULL), 0);
    CHECK_STR(am2z_state_session_id(NULL), "");
    CHECK_INT(am2z_state_created_at(am2z_value_int(1)), 0);
}

static void test_parse(void) {
    am2z_status e;
    am2z_state *s = am2z_state_parse("p", "{\"order\":{\"id\":\"A\"},\"n\":[1,2]}", AM2Z_NTS, &e);
    CHECK(s != NULL);
    CHECK_INT(am2z_state_version(s), 1);
    CHECK_STR(am2z_state_session_id(s), "p");
    CHECK_STR(am2z_value_get_string(s, "order.id", ""), "A");
    CHECK_STR(am2z_value_key_at(s, 0, NULL), "metadata");
    am2z_value_release(s);
    /* metadata in the text is kept, its sessionId wins */
    s = am2z_state_parse("arg", "{\"metadata\":{\"version\":3,\"sessionId\":\"text\",\"createdAt\":10,"
                                "\"lastUpdated\":20},\"k\":true}", AM2Z_NTS, &e);
    CHECK_INT(am2z_state_version(s), 3);
    CHECK_STR(am2z_state_session_id(s), "text");
    CHECK_INT(am2z_state_last_updated(s), 20);
    am2z_value_release(s);
    /* errors */
    CHECK(am2z_state_parse("p", "[1,2]", AM2Z_NTS, &e) == NULL);
    CHECK_STR(am2z_status_detail(), "state: a state must be a JSON object, not an array");
    CHECK_INT(e, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(am2z_state_parse("p", "{\"a\":", AM2Z_NTS, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 5);
    CHECK(am2z_state_parse("p", NULL, AM2Z_NTS, &e) == NULL);
    CHECK(am2z_state_parse("p", "[]", AM2Z_NTS, NULL) == NULL); /* err may be NULL */
    s = am2z_state_parse("p", "{}", AM2Z_NTS, NULL);
    CHECK_INT(am2z_state_version(s), 1);
    am2z_value_release(s);
}

static void test_bump(void) {
    am2z_state *s = am2z_state_parse("b", "{\"v\":1}", AM2Z_NTS, NULL), *s1, *old;
    int64_t created = am2z_state_created_at(s), updated = am2z_state_last_updated(s);
    s1 = s;
    s = am2z_state_bump(s);
    CHECK(s == s1); /* sole owner: in place */
    CHECK_INT(am2z_state_version(s), 2);
    CHECK_INT(am2z_state_created_at(s), created);
    CHECK(am2z_state_last_updated(s) >= updated);
    /* bumping a shared state leaves the other holder's version alone */
    old = am2z_value_retain(s);
    s = am2z_state_bump(s);
    CHECK(s != old);
    CHECK_INT(am2z_state_version(old), 2);
    CHECK_INT(am2z_state_version(s), 3);
    CHECK(am2z_value_find(s, "v", AM2Z_NTS) == am2z_value_find(old, "v", AM2Z_NTS));
    am2z_value_release(old);
    /* a value without metadata gets it, continuing from version 0 */
    s1 = am2z_state_bump(am2z_value_set(am2z_value_object(), "plain", am2z_value_int(1)));
    CHECK_INT(am2z_state_version(s1), 1);
    CHECK_STR(am2z_state_session_id(s1), "default");
    CHECK_STR(am2z_value_key_at(s1, 0, NULL), "metadata");
    am2z_value_release(s1);
    /* malformed metadata is repaired, its session id kept when it has one */
    s1 = am2z_state_bump(am2z_json_parse("{\"metadata\":{\"version\":4,\"sessionId\":\"m\"}}", AM2Z_NTS, NULL, NULL));
    CHECK_INT(am2z_state_version(s1), 5);
    CHECK_STR(am2z_state_session_id(s1), "m");
    CHECK(am2z_state_created_at(s1) > 0);
    am2z_value_release(s1);
    CHECK(am2z_state_bump(NULL) == NULL);
    CHECK(am2z_state_bump(am2z_value_string("x")) == NULL);
    am2z_value_release(s);
}

static void test_roundtrip(void) {
    am2z_state *s = am2z_state_parse("rt", "{\"z\":1,\"a\":{\"list\":[1,2.5,\"x\",null,true]},\"m\":\"\\u00e9\"}", AM2Z_NTS, NULL);
    am2z_state *back;
    char *text, *sorted1, *sorted2;
    s = am2z_state_bump(s);
    text = am2z_json_write(s, 0, NULL);
    back = am2z_state_parse("other", text, AM2Z_NTS, NULL);
    CHECK(am2z_value_equal(s, back));
    CHECK_INT(am2z_state_version(back), 2);
    CHECK_STR(am2z_state_session_id(back), "rt");
    CHECK_STR(J(back, 0), text); /* same text, same key order */
    sorted1 = am2z_json_write(s, AM2Z_JSON_SORTED, NULL);
    sorted2 = am2z_json_write(back, AM2Z_JSON_SORTED, NULL);
    CHECK_STR(sorted1, sorted2);
    CHECK(sorted1 && strncmp(sorted1, "{\"a\":", 5) == 0);
    CHECK(am2z_value_hash(s) == am2z_value_hash(back));
    am2z_free(text);
    am2z_free(sorted1);
    am2z_free(sorted2);
    am2z_value_release(s);
    am2z_value_release(back);
}

/* Editing one field of a 20-field state shares the other 19 (and the metadata). */
static void test_share_20(void) {
    am2z_value *data = am2z_value_object();
    am2z_state *s, *t;
    const am2z_value *before[21];
    char k[32];
    int i, shared = 0;
    for (i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "field%d", i);
        data = am2z_value_set(data, k, i % 2 ? am2z_value_stringf("value %d", i)
                                             : am2z_json_parse("{\"nested\":[1,2,3]}", AM2Z_NTS, NULL, NULL));
    }
    s = am2z_state_new("share", data, NULL);
    for (i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "field%d", i);
        before[i] = am2z_value_find(s, k, AM2Z_NTS);
    }
    before[20] = am2z_value_find(s, "metadata", AM2Z_NTS);
    t = am2z_value_set(am2z_value_retain(s), "field7", am2z_value_int(7));
    CHECK(t != s);
    for (i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "field%d", i);
        if (i != 7 && am2z_value_find(t, k, AM2Z_NTS) == before[i]) shared++;
    }
    CHECK_INT(shared, 19);
    CHECK(am2z_value_find(t, "metadata", AM2Z_NTS) == before[20]);
    CHECK(am2z_value_find(s, "field7", AM2Z_NTS) == before[7]); /* the original is unchanged */
    CHECK_INT(am2z_value_get_int(t, "field7", 0), 7);
    /* a deeper edit copies the spine only: field0 is new, its sibling array is not */
    {
        const am2z_value *arr = am2z_value_get(s, "field0.nested");
        am2z_state *u = am2z_value_set(am2z_value_retain(s), "field0.extra", am2z_value_int(1));
        CHECK(am2z_value_find(u, "field0", AM2Z_NTS) != before[0]);
        CHECK(am2z_value_get(u, "field0.nested") == arr);
        CHECK(am2z_value_find(u, "field1", AM2Z_NTS) == before[1]);
        am2z_value_release(u);
    }
    am2z_value_release(t);
    am2z_value_release(s);
}

static void test_allocations(void) {
    am2z_state *s;
    long before, stamp;
    /* A timestamp is a tagged integer on 64-bit targets; beyond +-2^30 (32-bit ones)
       it is boxed, which costs one block per metadata timestamp. */
    oom_count = 0;
    am2z_value_release(am2z_value_int(am2z_now_ms()));
    stamp = oom_count;
    oom_count = 0;
    s = am2z_value_set(am2z_value_object(), "orderId", am2z_value_int(1001));
    s = am2z_value_set(s, "qty", am2z_value_int(2));
    s = am2z_value_set(s, "paid", am2z_value_bool(0));
    s = am2z_value_set(s, "total", am2z_value_int(4999));
    s = am2z_value_set(s, "notes", am2z_value_null());
    s = am2z_state_new("session-42", s, NULL);
    /* the object, the metadata object, the session id string (+ createdAt, lastUpdated) */
    CHECK_INT(oom_count, 3 + 2 * stamp);
    before = oom_count;
    s = am2z_state_bump(s);
    s = am2z_value_set(s, "qty", am2z_value_int(3));
    CHECK_INT(oom_count - before, stamp); /* sole owner: in place (but a new boxed lastUpdated) */
    am2z_value_release(s);
}

/* Out of memory: every allocation in turn fails (tests/oom.h); each call returns NULL or
   a whole state, and nothing leaks. */
static int op_state(void) {
    am2z_status e;
    am2z_state *s = am2z_state_parse("sid", "{\"x\":1,\"y\":[1,2.5]}", AM2Z_NTS, &e), *t, *u;
    int ok;
    if (!s) CHECK_INT(e, AM2Z_STATUS_NO_MEMORY);
    t = am2z_state_bump(am2z_value_retain(s)); /* shared: copies the spine */
    s = am2z_state_bump(s);
    u = am2z_state_new(NULL, am2z_value_set(am2z_value_object(), "metadata", am2z_value_int(1)), NULL); /* repaired */
    u = am2z_value_remove(u, "metadata");
    u = am2z_state_bump(u); /* fresh metadata, version 0 + 1 */
    ok = s && t && u && am2z_state_version(s) == 2 && am2z_state_version(t) == 2 &&
         am2z_state_version(u) == 1;
    am2z_value_release(s);
    am2z_value_release(t);
    am2z_value_release(u);
    return ok;
}

static void test_out_of_memory(void) { CHECK(oom_sweep("state", op_state) > 5); }

#ifndef AM2Z_NO_THREADS /* needs threads */
/* Threads share one state: they retain, read, serialise, hash, compare, edit their own
   copies (copy-on-write) and release, all at once. */
typedef struct { const am2z_state *shared; const char *expect; uint64_t hash; int errors; } worker_arg;

static void *worker(void *p) {
    worker_arg *w = (worker_arg *)p;
    int i;
    for (i = 0; i < 2000; i++) {
        am2z_state *mine = am2z_value_retain(w->shared);
        char *text;
        if (am2z_value_get_int(mine, "counter", -1) != 0) w->errors++;
        if (strcmp(am2z_value_get_string(mine, "items[1].name", ""), "b") != 0) w->errors++;
        if (am2z_value_hash(mine) != w->hash) w->errors++;
        if (i % 50 == 0) {
            text = am2z_json_write(mine, AM2Z_JSON_SORTED, NULL);
            if (!text || strcmp(text, w->expect) != 0) w->errors++;
            am2z_free(text);
        }
        mine = am2z_value_set(mine, "counter", am2z_value_int(i + 1)); /* copies: shared */
        mine = am2z_value_append(mine, "items", am2z_value_int(i));
        mine = am2z_state_bump(mine);
        if (am2z_value_get_int(mine, "counter", -1) != i + 1) w->errors++;
        if (am2z_value_get(mine, "items[0]") != am2z_value_get(w->shared, "items[0]")) w->errors++;
        am2z_value_release(mine);
    }
    return NULL;
}

static void test_threads(void) {
    enum { N = 4 };
    pthread_t th[N];
    worker_arg args[N];
    am2z_state *s = am2z_state_parse("threads", "{\"counter\":0,\"items\":[{\"name\":\"a\"},{\"name\":\"b\"}]}", AM2Z_NTS, NULL);
    char *expect = am2z_json_write(s, AM2Z_JSON_SORTED, NULL);
    int i, errors = 0;
    for (i = 0; i < N; i++) {
        args[i].shared = s;
        args[i].expect = expect;
        args[i].hash = am2z_value_hash(s);
        args[i].errors = 0;
        CHECK_INT(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        errors += args[i].errors;
    }
    CHECK_INT(errors, 0);
    CHECK_STR(J(s, AM2Z_JSON_SORTED), expect); /* nobody changed the shared state */
    CHECK_INT(am2z_state_version(s), 1);
    am2z_free(expect);
    am2z_value_release(s);
}
#endif

/* A failed edit cannot become a fresh state: NULL data fails with a status and detail
   (v0.1: NULL data meant {}, so am2z_state_new(sid, failed_edit) was a success). */
static void test_new_status(void) {
    am2z_status st = AM2Z_STATUS_CYCLE;
    am2z_value *data = am2z_value_set(am2z_value_int(1), "a", am2z_value_int(2)); /* fails */
    am2z_state *s = am2z_state_new("s", data, &st);
    am2z_result r;
    CHECK(s == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "set 'a': the value is a number"); /* the first reason */
    r = am2z_ok(NULL);
    am2z_result_clear(&r);
    CHECK(am2z_state_new("s", NULL, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "state: no data (an earlier call failed)");
    CHECK(am2z_state_new("s", am2z_value_array(), &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "state: a state must be a JSON object, not an array");
    s = am2z_state_new("s", am2z_value_object(), &st);
    CHECK(s != NULL && st == AM2Z_STATUS_OK);
    am2z_value_release(s);
    r = am2z_ok(NULL);
    am2z_result_clear(&r);
}

/* (pointer, length): AM2Z_NTS for a C string; an explicit length never reads past the
   buffer (no NUL here: ASan would catch a strlen); 0 bytes is empty input. */
static void test_parse_lengths(void) {
    static const char text[] = "{\"a\":1}{\"b\":2}";
    char *buf = (char *)malloc(7);
    am2z_status st = AM2Z_STATUS_CYCLE;
    am2z_state *s;
    memcpy(buf, text, 7);
    s = am2z_state_parse("p", buf, 7, &st);
    CHECK(s != NULL && st == AM2Z_STATUS_OK);
    CHECK_INT(am2z_value_get_int(s, "a", 0), 1);
    am2z_value_release(s);
    s = am2z_state_parse("p", text, 7, NULL); /* the first of two texts */
    CHECK_INT(am2z_value_get_int(s, "a", 0), 1);
    am2z_value_release(s);
    CHECK(am2z_state_parse("p", text, AM2Z_NTS, &st) == NULL); /* both: trailing data */
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "json: unexpected data after the JSON value");
    CHECK_INT(am2z_status_offset(), 7);
    CHECK(am2z_state_parse("p", buf, 0, &st) == NULL);
    CHECK_STR(am2z_status_detail(), "json: empty input");
    free(buf);
}

int main(void) {
    oom_install();
    T_RUN(test_new);
    T_RUN(test_parse);
    T_RUN(test_bump);
    T_RUN(test_roundtrip);
    T_RUN(test_share_20);
    T_RUN(test_allocations);
    T_RUN(test_out_of_memory);
#ifndef AM2Z_NO_THREADS
    T_RUN(test_threads);
#endif
    T_RUN(test_new_status);
    T_RUN(test_parse_lengths);
    return t_done();
}
