/* test_json.c - section 1 of am2z.h: values, paths, copy-on-write editing, equality,
   hashing, JSON parsing (strict RFC 8259 with limits) and writing; failed edits that
   propagate with a detail naming operation, path and reason, AM2Z_NTS lengths, and the
   per-thread status detail. Also runs the whole JSONTestSuite from
   tests/data/JSONTestSuite/test_parsing (run from the repository root, as
   `make check T=json` does). */
#define _POSIX_C_SOURCE 200809L
/* 32-bit targets: readdir's 32-bit inode and offset overflow on a 64-bit host's file
   system (qemu-user, -m32), and readdir then ends early with EOVERFLOW. */
#define _FILE_OFFSET_BITS 64
#include "../am2z.h"
#include "t.h"
#include "oom.h"
#include <dirent.h>
#include <errno.h>
#include <locale.h>
#ifndef AM2Z_NO_THREADS
#include <pthread.h>
#include <sched.h>
#endif
#include <math.h>
#include <stdint.h>

/* Parses text or fails the test case. */
static am2z_value *P(const char *text) {
    am2z_status e;
    am2z_value *v = am2z_json_parse(text, AM2Z_NTS, NULL, &e);
    if (!v) fprintf(stderr, "parse failed at %lu: %s\n  in %s\n", (unsigned long)am2z_status_offset(), am2z_status_detail(), text);
    return v;
}

/* Compact JSON of v in a static buffer (tests are single-threaded). */
static const char *J(const am2z_value *v, int flags) {
    static char out[4096];
    char *s = am2z_json_write(v, flags, NULL);
    snprintf(out, sizeof out, "%s", s ? s : "(null)");
    am2z_free(s);
    return out;
}

static void test_constructors(void) {
    am2z_value *v;
    size_t n;
    const char *s;
    CHECK_INT(am2z_value_type(am2z_value_null()), AM2Z_TYPE_NULL);
    CHECK_INT(am2z_value_type(am2z_value_bool(7)), AM2Z_TYPE_BOOL);
    CHECK_INT(am2z_value_as_bool(am2z_value_bool(7), 0), 1);
    CHECK_INT(am2z_value_as_bool(am2z_value_bool(0), 1), 0);
    CHECK_INT(am2z_value_type(NULL), AM2Z_TYPE_NONE);
    CHECK_STR(am2z_type_name(AM2Z_TYPE_OBJECT), "object");
    CHECK_STR(am2z_type_name(AM2Z_TYPE_NONE), "none");

    v = am2z_value_int(42);
    CHECK_INT(am2z_value_type(v), AM2Z_TYPE_INT);
    CHECK_INT(am2z_value_as_int(v, 0), 42);
    CHECK_DBL(am2z_value_as_double(v, 0), 42.0, 0);
    CHECK_INT(am2z_value_as_bool(v, -1), -1); /* ints are not booleans */
    am2z_value_release(v);

    v = am2z_value_double(2.5);
    CHECK_INT(am2z_value_type(v), AM2Z_TYPE_DOUBLE);
    CHECK_DBL(am2z_value_as_double(v, 0), 2.5, 0);
    CHECK_INT(am2z_value_as_int(v, -7), -7); /* not an exact integer */
    am2z_value_release(v);
    v = am2z_value_double(3.0);
    CHECK_INT(am2z_value_as_int(v, -7), 3);
    am2z_value_release(v);
    v = am2z_value_double(1e300); /* integral but outside int64 */
    CHECK_INT(am2z_value_as_int(v, -7), -7);
    am2z_value_release(v);
    CHECK_INT(am2z_value_type(am2z_value_double(HUGE_VAL)), AM2Z_TYPE_NULL); /* no JSON spelling */
    CHECK_INT(am2z_value_type(am2z_value_double(-HUGE_VAL)), AM2Z_TYPE_NULL);
    CHECK_INT(am2z_value_type(am2z_value_double(nan(""))), AM2Z_TYPE_NULL);

    v = am2z_value_string_n("a\0b", 3);
    s = am2z_value_as_string(v, &n);
    CHECK_INT(n, 3);
    CHECK(s && memcmp(s, "a\0b", 4) == 0); /* NUL-terminated after the bytes */
    CHECK_INT(am2z_value_len(v), 3);
    CHECK_STR(J(v, 0), "\"a\\u0000b\"");
    am2z_value_release(v);

    v = am2z_value_stringf("%s-%d", "x", 12);
    CHECK_STR(am2z_value_as_string(v, NULL), "x-12");
    am2z_value_release(v);
    v = am2z_value_stringf("%0600d|", 7); /* longer than the stack buffer */
    CHECK_INT(am2z_value_len(v), 601);
    s = am2z_value_as_string(v, NULL);
    CHECK(s && s[0] == '0' && s[599] == '7' && s[600] == '|' && s[601] == 0);
    am2z_value_release(v);

    v = am2z_value_array();
    CHECK_INT(am2z_value_type(v), AM2Z_TYPE_ARRAY);
    CHECK_INT(am2z_value_len(v), 0);
    CHECK(am2z_value_at(v, 0) == NULL);
    am2z_value_release(v);
    v = am2z_value_object();
    CHECK_INT(am2z_value_type(v), AM2Z_TYPE_OBJECT);
    CHECK(am2z_value_key_at(v, 0, &n) == NULL && n == 0);
    am2z_value_release(v);
    CHECK(am2z_value_as_string(am2z_value_int(1), &n) == NULL && n == 0);
}

static void test_null_safety(void) {
    size_t n = 99;
    am2z_status e;
    am2z_value_release(NULL);
    CHECK(am2z_value_retain(NULL) == NULL);
    CHECK(am2z_value_string(NULL) == NULL);
    CHECK(am2z_value_string_n(NULL, 3) == NULL);
    CHECK(am2z_value_stringf(NULL) == NULL);
    CHECK_INT(am2z_value_as_int(NULL, 5), 5);
    CHECK_DBL(am2z_value_as_double(NULL, 1.5), 1.5, 0);
    CHECK_INT(am2z_value_as_bool(NULL, 1), 1);
    CHECK(am2z_value_as_string(NULL, &n) == NULL && n == 0);
    CHECK_INT(am2z_value_len(NULL), 0);
    CHECK(am2z_value_at(NULL, 0) == NULL);
    CHECK(am2z_value_member_at(NULL, 0) == NULL);
    CHECK(am2z_value_find(NULL, "a", 1) == NULL);
    CHECK(am2z_value_find(am2z_value_object(), NULL, AM2Z_NTS) == NULL);
    CHECK(am2z_value_get(NULL, "a") == NULL);
    CHECK(am2z_value_get(am2z_value_object(), NULL) == NULL);
    CHECK_STR(am2z_value_get_string(NULL, "a", "dflt"), "dflt");
    CHECK(am2z_value_set(am2z_value_object(), "a", NULL) == NULL);
    CHECK(am2z_value_set(am2z_value_object(), NULL, am2z_value_int(1)) == NULL);
    CHECK(am2z_value_append(am2z_value_object(), NULL, am2z_value_int(1)) == NULL);
    CHECK(am2z_value_remove(NULL, "a") == NULL);
    CHECK(am2z_value_remove_key(NULL, "a", AM2Z_NTS) == NULL);
    CHECK(am2z_json_write(NULL, 0, &n) == NULL && n == 0);
    CHECK(am2z_json_parse(NULL, AM2Z_NTS, NULL, &e) == NULL);
    CHECK(am2z_json_parse(NULL, AM2Z_NTS, NULL, NULL) == NULL);
    CHECK(am2z_value_equal(NULL, NULL));
    CHECK(!am2z_value_equal(NULL, am2z_value_null()));
    CHECK(am2z_value_hash(NULL) != am2z_value_hash(am2z_value_null()));
    CHECK(am2z_value_merge(am2z_value_int(1), NULL) == NULL); /* into must be an object */
}

static void test_int_extremes(void) {
    /* Around the boundary between integers kept in the pointer and boxed ones. */
    static const int64_t vals[] = {0, 1, -1, ((int64_t)1 << 62) - 1, (int64_t)1 << 62,
                                   -((int64_t)1 << 62), -((int64_t)1 << 62) - 1, INT64_MAX, INT64_MIN,
                                   INT64_MAX - 1, INT64_MIN + 1, 1795625716543};
    size_t i;
    char text[64];
    for (i = 0; i < sizeof vals / sizeof *vals; i++) {
        am2z_value *v = am2z_value_int(vals[i]), *w;
        CHECK_INT(am2z_value_type(v), AM2Z_TYPE_INT);
        CHECK(am2z_value_as_int(v, 0) == vals[i]);
        snprintf(text, sizeof text, "%lld", (long long)vals[i]);
        CHECK_STR(J(v, 0), text);
        w = P(text);
        CHECK_INT(am2z_value_type(w), AM2Z_TYPE_INT);
        CHECK(am2z_value_as_int(w, 0) == vals[i]);
        CHECK(am2z_value_equal(v, w));
        CHECK(am2z_value_hash(v) == am2z_value_hash(w));
        am2z_value_release(v);
        am2z_value_release(w);
    }
    {
        am2z_value *v = P("9223372036854775808"); /* INT64_MAX + 1: a double */
        CHECK_INT(am2z_value_type(v), AM2Z_TYPE_DOUBLE);
        CHECK_DBL(am2z_value_as_double(v, 0), 9223372036854775808.0, 0);
        am2z_value_release(v);
        v = P("-9223372036854775809");
        CHECK_INT(am2z_value_type(v), AM2Z_TYPE_DOUBLE);
        am2z_value_release(v);
        v = P("123456789012345678901234567890");
        CHECK_INT(am2z_value_type(v), AM2Z_TYPE_DOUBLE);
        CHECK_DBL(am2z_value_as_double(v, 0), 1.2345678901234568e29, 1e14);
        am2z_value_release(v);
        v = P("-0"); /* keeps its sign: a double */
        CHECK_INT(am2z_value_type(v), AM2Z_TYPE_DOUBLE);
        CHECK_STR(J(v, 0), "-0.0");
        am2z_value_release(v);
        v = P("0");
        CHECK_INT(am2z_value_type(v), AM2Z_TYPE_INT);
        am2z_value_release(v);
        v = P("1.0");
        CHECK_INT(am2z_value_type(v), AM2Z_TYPE_DOUBLE);
        CHECK_STR(J(v, 0), "1.0");
        am2z_value_release(v);
    }
}

static const char *doc =
    "{\"order\":{\"id\":\"A-1\",\"items\":[{\"sku\":\"x\",\"price\":2.5,\"qty\":3},"
    "{\"sku\":\"y\",\"price\":10,\"qty\":1}],\"paid\":true},"
    "\"a/b\":1,\"m~n\":2,\"dot.key\":3,\"\":4,\"br[0]\":5,\"0\":\"zero\"}";

static void test_paths(void) {
    am2z_value *v = P(doc);
    static const char *bad[] = {"order..id", ".order", "order.", "order[", "order[x]", "order[01]",
                                "order.items[-1]", "order.items[1", "order.items[0]x", "/order/~2",
                                "/order~", "order\\", "[", "]x", "order.items.[0]"};
    size_t i;
    CHECK(v != NULL);
    CHECK(am2z_value_get(v, "") == v);
    CHECK_STR(am2z_value_get_string(v, "order.id", ""), "A-1");
    CHECK_DBL(am2z_value_get_double(v, "order.items[0].price", 0), 2.5, 0);
    CHECK_INT(am2z_value_get_int(v, "order.items[1].price", 0), 10);
    CHECK_DBL(am2z_value_get_double(v, "order.items[1].price", 0), 10.0, 0); /* int converts */
    CHECK_INT(am2z_value_get_int(v, "order.items[0].price", -1), -1);       /* 2.5 does not */
    CHECK_INT(am2z_value_get_bool(v, "order.paid", 0), 1);
    CHECK_INT(am2z_value_get_bool(v, "order.id", 7), 7); /* wrong type: default */
    CHECK_STR(am2z_value_get_string(v, "order.nothing", "dflt"), "dflt");
    CHECK_INT(am2z_value_get_int(v, "order.items.1.qty", 0), 1);  /* digits index arrays */
    CHECK_STR(am2z_value_get_string(v, "0", ""), "zero");         /* ... and name keys */
    CHECK(am2z_value_get(v, "order.items[2]") == NULL);
    CHECK(am2z_value_get(v, "order.id.x") == NULL);
    CHECK(am2z_value_get(v, "order[0]") == NULL); /* [n] on an object */
    /* JSON Pointer (RFC 6901) */
    CHECK_STR(am2z_value_get_string(v, "/order/items/0/sku", ""), "x");
    CHECK_INT(am2z_value_get_int(v, "/a~1b", 0), 1);
    CHECK_INT(am2z_value_get_int(v, "/m~0n", 0), 2);
    CHECK_INT(am2z_value_get_int(v, "/dot.key", 0), 3);
    CHECK_INT(am2z_value_get_int(v, "/", 0), 4); /* the empty key */
    CHECK(am2z_value_get(v, "/order/items/01") == NULL);
    CHECK(am2z_value_get(v, "/order/items/-") == NULL);
    /* escapes in the dot form */
    CHECK_INT(am2z_value_get_int(v, "dot\\.key", 0), 3);
    CHECK_INT(am2z_value_get_int(v, "br\\[0]", 0), 5);
    CHECK_INT(am2z_value_get_int(v, "a/b", 0), 1); /* '/' is plain in the dot form */
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (am2z_value_get(v, bad[i]) != NULL) T_FAIL_("bad path '%s' found something", bad[i]);
    }
    /* A malformed path also fails an edit, and releases the input. */
    CHECK(am2z_value_set(am2z_value_retain(v), "order..id", am2z_value_int(1)) == NULL);
    CHECK(am2z_value_remove(am2z_value_retain(v), "order[") == NULL);
    /* long escaped keys take the heap path of the key decoder */
    {
        char key[300], path[700];
        size_t k, p = 0;
        am2z_value *w;
        for (k = 0; k < 299; k++) key[k] = (char)(k % 3 == 0 ? '.' : 'a' + (int)(k % 26));
        key[299] = 0;
        for (k = 0; k < 299; k++) {
            if (key[k] == '.') path[p++] = '\\';
            path[p++] = key[k];
        }
        path[p] = 0;
        w = am2z_value_set_key(am2z_value_object(), key, AM2Z_NTS, am2z_value_int(9));
        CHECK_INT(am2z_value_get_int(w, path, 0), 9);
        w = am2z_value_set(w, path, am2z_value_int(10));
        CHECK_INT(am2z_value_len(w), 1);
        CHECK_INT(am2z_value_as_int(am2z_value_find(w, key, AM2Z_NTS), 0), 10);
        am2z_value_release(w);
    }
    am2z_value_release(v);
}

static void test_edit(void) {
    am2z_value *v = am2z_value_object(), *w;
    v = am2z_value_set(v, "a.b.c", am2z_value_int(1)); /* creates objects */
    CHECK_STR(J(v, 0), "{\"a\":{\"b\":{\"c\":1}}}");
    v = am2z_value_set(v, "a.list[0]", am2z_value_string("x")); /* [n] creates an array */
    v = am2z_value_set(v, "a.list[1]", am2z_value_string("y"));   /* index == len appends */
    v = am2z_value_set(v, "a.list[0]", am2z_value_string("X"));   /* replaces */
    CHECK_STR(J(v, 0), "{\"a\":{\"b\":{\"c\":1},\"list\":[\"X\",\"y\"]}}");
    v = am2z_value_append(v, "a.list", am2z_value_int(3));
    v = am2z_value_append(v, "log", am2z_value_string("created")); /* creates the array */
    v = am2z_value_set(v, "/a/list/-", am2z_value_bool(1));         /* pointer "-" appends */
    v = am2z_value_set(v, "/p/q", am2z_value_null());
    CHECK_STR(J(v, 0), "{\"a\":{\"b\":{\"c\":1},\"list\":[\"X\",\"y\",3,true]},\"log\":[\"created\"],\"p\":{\"q\":null}}");
    /* failures release both inputs and return NULL */
    CHECK(am2z_value_set(am2z_value_retain(v), "a.list[9]", am2z_value_int(1)) == NULL); /* out of range */
    CHECK(am2z_value_set(am2z_value_retain(v), "a.b.c.d", am2z_value_int(1)) == NULL);   /* through an int */
    CHECK(am2z_value_set(am2z_value_retain(v), "a.list.x", am2z_value_int(1)) == NULL);  /* key on an array */
    CHECK(am2z_value_set(am2z_value_retain(v), "a[0]", am2z_value_int(1)) == NULL);      /* index on an object */
    CHECK(am2z_value_append(am2z_value_retain(v), "a.b", am2z_value_int(1)) == NULL);    /* not an array */
    CHECK(am2z_value_append(am2z_value_int(3), "", am2z_value_int(1)) == NULL);
    /* remove */
    v = am2z_value_remove(v, "a.list[1]");
    v = am2z_value_remove(v, "a.b");
    v = am2z_value_remove(v, "/p");
    CHECK_STR(J(v, 0), "{\"a\":{\"list\":[\"X\",3,true]},\"log\":[\"created\"]}");
    w = am2z_value_remove(v, "a.nothing.deeper"); /* absent: unchanged */
    CHECK(w == v);
    v = am2z_value_remove(v, "a.list[7]");
    CHECK_STR(J(v, 0), "{\"a\":{\"list\":[\"X\",3,true]},\"log\":[\"created\"]}");
    CHECK(am2z_value_remove(am2z_value_retain(v), "") == NULL);
    /* "" replaces the whole value */
    v = am2z_value_set(v, "", am2z_value_int(5));
    CHECK_INT(am2z_value_as_int(v, 0), 5);
    /* keys that paths cannot spell */
    v = am2z_value_set_key(am2z_value_object(), "x.y[0]/z", AM2Z_NTS, am2z_value_int(1));
    v = am2z_value_set_key(v, "x.y[0]/z", AM2Z_NTS, am2z_value_int(2));
    v = am2z_value_set_key(v, "k\0bin", 5, am2z_value_int(3));
    CHECK_INT(am2z_value_len(v), 2);
    CHECK_INT(am2z_value_as_int(am2z_value_find(v, "x.y[0]/z", AM2Z_NTS), 0), 2);
    CHECK_INT(am2z_value_as_int(am2z_value_find(v, "k\0bin", 5), 0), 3);
    CHECK(am2z_value_find(v, "k", 1) == NULL);
    v = am2z_value_remove_key(v, "x.y[0]/z", AM2Z_NTS);
    v = am2z_value_remove_key(v, "absent", AM2Z_NTS);
    CHECK_INT(am2z_value_len(v), 1);
    CHECK(am2z_value_set_key(am2z_value_array(), "a", AM2Z_NTS, am2z_value_int(1)) == NULL);
    am2z_value_release(v);
}

static void test_depth_limit(void) {
    am2z_value *v = am2z_value_array(), *w;
    int i;
    /* Nest arrays up to the limit; one more level fails and releases everything. */
    for (i = 1; i < AM2Z_VALUE_MAX_DEPTH; i++) {
        w = am2z_value_append(am2z_value_array(), "", v);
        if (!w) break;
        v = w;
    }
    CHECK_INT(i, AM2Z_VALUE_MAX_DEPTH);
    v = am2z_value_append(am2z_value_array(), "", v);
    CHECK(v == NULL);
    /* A path longer than the depth limit fails too. */
    {
        char path[4 * AM2Z_VALUE_MAX_DEPTH + 8];
        size_t p = 0;
        for (i = 0; i < AM2Z_VALUE_MAX_DEPTH + 1; i++) {
            if (i) path[p++] = '.';
            path[p++] = 'k';
        }
        path[p] = 0;
        CHECK(am2z_value_set(am2z_value_object(), path, am2z_value_int(1)) == NULL);
    }
}

static void test_cow(void) {
    am2z_value *base = P("{\"a\":{\"x\":1,\"y\":[1,2]},\"b\":{\"z\":\"keep\"},\"c\":[{\"d\":1}]}");
    am2z_value *copy, *edited;
    const am2z_value *b_before = am2z_value_find(base, "b", AM2Z_NTS), *y_before = am2z_value_get(base, "a.y");
    const am2z_value *c_before = am2z_value_find(base, "c", AM2Z_NTS);
    char *before = am2z_json_write(base, 0, NULL);

    /* Editing a shared value copies the spine a -> x and leaves the original alone. */
    edited = am2z_value_set(am2z_value_retain(base), "a.x", am2z_value_int(2));
    CHECK(edited != base);
    CHECK_STR(J(base, 0), before);
    CHECK_INT(am2z_value_get_int(edited, "a.x", 0), 2);
    CHECK(am2z_value_find(edited, "b", AM2Z_NTS) == b_before);     /* sibling shared, not copied */
    CHECK(am2z_value_get(edited, "a.y") == y_before);       /* sibling inside the spine too */
    CHECK(am2z_value_find(edited, "c", AM2Z_NTS) == c_before);
    CHECK(am2z_value_find(edited, "a", AM2Z_NTS) != am2z_value_find(base, "a", AM2Z_NTS));

    /* The edited value is now held once: further edits happen in place. */
    copy = edited;
    edited = am2z_value_set(edited, "a.x", am2z_value_int(3));
    CHECK(edited == copy);
    {
        const am2z_value *a = am2z_value_find(edited, "a", AM2Z_NTS);
        edited = am2z_value_set(edited, "a.x", am2z_value_int(4));
        CHECK(am2z_value_find(edited, "a", AM2Z_NTS) == a); /* the inner object is edited in place too */
        edited = am2z_value_set(edited, "a.w", am2z_value_int(5)); /* may grow (move) its block */
        CHECK_INT(am2z_value_get_int(edited, "a.w", 0), 5);
    }
    /* Appending in place to an array that is shared with base copies that array only. */
    edited = am2z_value_append(edited, "a.y", am2z_value_int(3));
    CHECK_STR(J(base, 0), before);
    CHECK_STR(J(am2z_value_get(edited, "a.y"), 0), "[1,2,3]");
    CHECK(am2z_value_get(edited, "a.y") != y_before);
    CHECK(am2z_value_at(am2z_value_get(edited, "a.y"), 0) == am2z_value_at(y_before, 0));
    /* Edit inside an array element. */
    edited = am2z_value_set(edited, "c[0].d", am2z_value_int(9));
    CHECK_INT(am2z_value_get_int(base, "c[0].d", 0), 1);
    CHECK_INT(am2z_value_get_int(edited, "c[0].d", 0), 9);
    /* Remove from a shared value. */
    copy = am2z_value_remove(am2z_value_retain(base), "b.z");
    CHECK_STR(J(base, 0), before);
    CHECK_STR(J(copy, 0), "{\"a\":{\"x\":1,\"y\":[1,2]},\"b\":{},\"c\":[{\"d\":1}]}");
    am2z_value_release(copy);
    /* A failed edit of a shared value leaves the other holder's value intact. */
    CHECK(am2z_value_set(am2z_value_retain(base), "a.y.k", am2z_value_int(1)) == NULL);
    CHECK_STR(J(base, 0), before);

    am2z_free(before);
    am2z_value_release(edited);
    am2z_value_release(base);
}

static void test_merge(void) {
    am2z_value *a = P("{\"x\":1,\"y\":{\"deep\":1},\"z\":3}");
    am2z_value *b = P("{\"y\":{\"other\":2},\"w\":4,\"x\":10}");
    am2z_value *m = am2z_value_merge(am2z_value_retain(a), b);
    CHECK_STR(J(m, 0), "{\"x\":10,\"y\":{\"other\":2},\"z\":3,\"w\":4}"); /* shallow, into's order */
    CHECK_STR(J(a, 0), "{\"x\":1,\"y\":{\"deep\":1},\"z\":3}");          /* a was shared */
    CHECK(am2z_value_find(m, "y", AM2Z_NTS) == am2z_value_find(b, "y", AM2Z_NTS));   /* members shared */
    am2z_value_release(m);
    m = am2z_value_merge(am2z_value_object(), b);
    CHECK(am2z_value_equal(m, b));
    am2z_value_release(m);
    m = am2z_value_merge(am2z_value_retain(a), NULL);
    CHECK(m == a);
    am2z_value_release(m);
    CHECK(am2z_value_merge(am2z_value_retain(a), am2z_value_int(1)) == NULL);
    m = am2z_value_merge(am2z_value_retain(a), a); /* with itself */
    CHECK(am2z_value_equal(m, a));
    am2z_value_release(m);
    am2z_value_release(a);
    am2z_value_release(b);
    /* from may live inside into (hoisting a member's fields), even when into is edited
       in place and the merge replaces the very member from is */
    m = P("{\"sub\":{\"sub\":1,\"x\":2,\"k01\":1,\"k02\":1,\"k03\":1,\"k04\":1,\"k05\":1,\"k06\":1,"
          "\"k07\":1,\"k08\":1,\"k09\":1,\"k10\":1,\"k11\":1,\"k12\":1,\"k13\":1,\"k14\":1,\"k15\":1}}");
    m = am2z_value_merge(m, am2z_value_get(m, "sub"));
    CHECK_INT(am2z_value_len(m), 17);
    CHECK_INT(am2z_value_get_int(m, "sub", 0), 1);
    CHECK_INT(am2z_value_get_int(m, "k15", 0), 1);
    am2z_value_release(m);
}

static void test_equal_hash(void) {
    am2z_value *a = P("{\"a\":1,\"b\":[1,2,{\"c\":null}],\"d\":\"s\",\"e\":{\"f\":true,\"g\":2.5}}");
    am2z_value *b = P("{\"e\":{\"g\":2.5,\"f\":true},\"d\":\"s\",\"b\":[1,2,{\"c\":null}],\"a\":1}");
    am2z_value *c = P("{\"a\":1,\"b\":[2,1,{\"c\":null}],\"d\":\"s\",\"e\":{\"f\":true,\"g\":2.5}}");
    am2z_value *i1 = am2z_value_int(1), *d1 = am2z_value_double(1.0);
    am2z_value *z = am2z_value_double(0.0), *nz = am2z_value_double(-0.0);
    CHECK(am2z_value_equal(a, b));
    CHECK(am2z_value_hash(a) == am2z_value_hash(b)); /* key order does not matter */
    CHECK(!am2z_value_equal(a, c));                  /* array order does */
    CHECK(am2z_value_hash(a) != am2z_value_hash(c));
    CHECK(!am2z_value_equal(i1, d1));                /* 1 and 1.0 differ */
    CHECK(am2z_value_hash(i1) != am2z_value_hash(d1));
    CHECK(am2z_value_equal(z, nz));
    CHECK(am2z_value_hash(z) == am2z_value_hash(nz));
    CHECK(!am2z_value_equal(am2z_value_object(), am2z_value_array()));
    CHECK(am2z_value_hash(am2z_value_object()) != am2z_value_hash(am2z_value_array()));
    CHECK(am2z_value_hash(am2z_value_bool(1)) != am2z_value_hash(am2z_value_bool(0)));
    /* Stable across processes and runs: a fixed value has a fixed hash. */
    /* Stable across processes, runs and machines: this value always hashes the same. */
    CHECK(am2z_value_hash(a) == 0xca30c71fefb91165ULL);
    {
        am2z_value *s1 = am2z_value_string("abc"), *s2 = am2z_value_string_n("abcd", 3);
        CHECK(am2z_value_equal(s1, s2));
        CHECK(am2z_value_hash(s1) == am2z_value_hash(s2));
        am2z_value_release(s1);
        am2z_value_release(s2);
    }
    /* Big objects (hash-indexed) compare as maps too. */
    {
        am2z_value *x = am2z_value_object(), *y = am2z_value_object();
        char k[32];
        int i;
        for (i = 0; i < 300; i++) {
            snprintf(k, sizeof k, "k%d", i);
            x = am2z_value_set_key(x, k, AM2Z_NTS, am2z_value_int(i));
            snprintf(k, sizeof k, "k%d", 299 - i);
            y = am2z_value_set_key(y, k, AM2Z_NTS, am2z_value_int(299 - i));
        }
        CHECK(am2z_value_equal(x, y));
        CHECK(am2z_value_hash(x) == am2z_value_hash(y));
        y = am2z_value_set_key(y, "k150", AM2Z_NTS, am2z_value_int(-1));
        CHECK(!am2z_value_equal(x, y));
        CHECK(am2z_value_hash(x) != am2z_value_hash(y));
        am2z_value_release(x);
        am2z_value_release(y);
    }
    am2z_value_release(a);
    am2z_value_release(b);
    am2z_value_release(c);
    am2z_value_release(d1);
    am2z_value_release(z);
    am2z_value_release(nz);
}

static void test_writer(void) {
    static const char raw[] = "q\" b\\ n\n t\t r\r f\f b\b c\x01 d\x1f del\x7f /";
    am2z_value *v = am2z_value_string_n(raw, sizeof raw - 1);
    CHECK_STR(J(v, 0), "\"q\\\" b\\\\ n\\n t\\t r\\r f\\f b\\b c\\u0001 d\\u001f del\x7f /\"");
    am2z_value_release(v);
    v = am2z_value_string("h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"); /* é € 😀 pass through */
    CHECK_STR(J(v, 0), "\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    am2z_value_release(v);
    /* Invalid UTF-8 (stray continuation, overlong, surrogate, truncated) becomes U+FFFD. */
    v = am2z_value_string("a\x80" "b\xc0\xaf" "c\xed\xa0\x80" "d\xe2\x82");
    CHECK_STR(J(v, 0), "\"a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd" "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                       "d\xef\xbf\xbd\xef\xbf\xbd\"");
    am2z_value_release(v);

    v = P("{\"b\":[1,{},[],{\"z\":null,\"a\":false}],\"a\":\"x\",\"c\":{}}");
    CHECK_STR(J(v, 0), "{\"b\":[1,{},[],{\"z\":null,\"a\":false}],\"a\":\"x\",\"c\":{}}");
    CHECK_STR(J(v, AM2Z_JSON_SORTED), "{\"a\":\"x\",\"b\":[1,{},[],{\"a\":false,\"z\":null}],\"c\":{}}");
    CHECK_STR(J(v, AM2Z_JSON_PRETTY),
              "{\n"
              "  \"b\": [\n"
              "    1,\n"
              "    {},\n"
              "    [],\n"
              "    {\n"
              "      \"z\": null,\n"
              "      \"a\": false\n"
              "    }\n"
              "  ],\n"
              "  \"a\": \"x\",\n"
              "  \"c\": {}\n"
              "}");
    CHECK_STR(J(v, AM2Z_JSON_PRETTY | AM2Z_JSON_SORTED),
              "{\n  \"a\": \"x\",\n  \"b\": [\n    1,\n    {},\n    [],\n    {\n      \"a\": false,\n"
              "      \"z\": null\n    }\n  ],\n  \"c\": {}\n}");
    am2z_value_release(v);
    /* Sorting is bytewise ("B" < "a" < "aa" < "b" < "\xc3\xa9") and handles big objects. */
    {
        am2z_value *o = am2z_value_object();
        char k[32], *text;
        size_t len, i;
        int ok = 1, n;
        o = am2z_value_set_key(o, "b", AM2Z_NTS, am2z_value_int(1));
        o = am2z_value_set_key(o, "\xc3\xa9", AM2Z_NTS, am2z_value_int(2));
        o = am2z_value_set_key(o, "aa", AM2Z_NTS, am2z_value_int(3));
        o = am2z_value_set_key(o, "B", AM2Z_NTS, am2z_value_int(4));
        o = am2z_value_set_key(o, "a", AM2Z_NTS, am2z_value_int(5));
        CHECK_STR(J(o, AM2Z_JSON_SORTED), "{\"B\":4,\"a\":5,\"aa\":3,\"b\":1,\"\xc3\xa9\":2}");
        am2z_value_release(o);
        o = am2z_value_object();
        for (n = 0; n < 1000; n++) {
            snprintf(k, sizeof k, "%04d", (n * 7919) % 1000); /* a permutation of 0000..0999 */
            o = am2z_value_set_key(o, k, AM2Z_NTS, am2z_value_int(n));
        }
        text = am2z_json_write(o, AM2Z_JSON_SORTED, &len);
        CHECK(text != NULL);
        for (i = 0, n = 0; text && n < 1000; n++) {
            char *at;
            snprintf(k, sizeof k, "\"%04d\"", n);
            at = strstr(text + i, k);
            if (!at) {
                ok = 0;
                break;
            }
            i = (size_t)(at - text) + 6;
        }
        CHECK(ok);
        am2z_free(text);
        am2z_value_release(o);
    }
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void test_double_roundtrip(void) {
    static const struct { double d; const char *text; } fixed[] = {
        {1.0, "1.0"}, {-2.0, "-2.0"}, {0.1, "0.1"}, {0.5, "0.5"}, {1e300, "1e+300"},
        {0.30000000000000004, "0.30000000000000004"}, {123456.789, "123456.789"},
        {1e-7, "1e-07"}, {9007199254740993.0, "9007199254740992.0"}, {1e16, "1e+16"},
        {123456789012345.0, "123456789012345.0"}, {1234567890123456.0, "1234567890123456.0"},
        {5e-324, "4.94065645841247e-324"}, {1.7976931348623157e308, "1.7976931348623157e+308"},
        {2.2250738585072014e-308, "2.2250738585072014e-308"}, {-0.0, "-0.0"}, {0.0, "0.0"}};
    size_t i, fails = 0;
    char text[64];
    for (i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        am2z_value *v = am2z_value_double(fixed[i].d), *w;
        CHECK_STR(J(v, 0), fixed[i].text);
        w = P(J(v, 0));
        CHECK_INT(am2z_value_type(w), AM2Z_TYPE_DOUBLE);
        CHECK(same_bits(am2z_value_as_double(w, 1), fixed[i].d));
        am2z_value_release(v);
        am2z_value_release(w);
    }
    /* Random bit patterns cover every exponent; random short decimals cover the parser's
       exact fast path. Write, parse, compare the bits. */
    for (i = 0; i < 100000; i++) {
        uint64_t bits = rng();
        double d, back;
        am2z_value *v, *w;
        char *s;
        if (i % 2) {
            memcpy(&d, &bits, sizeof d);
            if (!(d - d == 0.0)) continue; /* NaN, infinity */
        } else {
            snprintf(text, sizeof text, "%lld.%llde%d", (long long)(bits % 2000000) - 1000000,
                     (long long)((bits >> 24) % 1000), (int)((bits >> 40) % 60) - 30);
            d = strtod(text, NULL);
        }
        v = am2z_value_double(d);
        s = am2z_json_write(v, 0, NULL);
        /* the text is exactly the reference: shortest of %.15g/%.16g/%.17g ("1.0" style) */
        if (s && d != 0.0) {
            char ref[64];
            int p;
            for (p = 15; p <= 17; p++) {
                snprintf(ref, sizeof ref, "%.*g", p, d);
                if (strtod(ref, NULL) == d) break;
            }
            if (!strchr(ref, '.') && !strchr(ref, 'e')) strcat(ref, ".0");
            if (strcmp(ref, s) != 0 && fails++ < 5) T_FAIL_("%.17g written as %s, want %s", d, s, ref);
        }
        w = am2z_json_parse(s, AM2Z_NTS, NULL, NULL);
        back = am2z_value_as_double(w, 12345.0);
        if (am2z_value_type(w) != AM2Z_TYPE_DOUBLE || !same_bits(back, d)) {
            if (fails++ < 5) T_FAIL_("round trip of %.17g gave %s -> %.17g", d, s ? s : "(null)", back);
        }
        am2z_free(s);
        am2z_value_release(v);
        am2z_value_release(w);
        if (i % 2 == 0) { /* the parser must agree with strtod on decimal text */
            w = am2z_json_parse(text, AM2Z_NTS, NULL, NULL);
            if (!w || !same_bits(am2z_value_as_double(w, 0), d)) {
                if (fails++ < 5) T_FAIL_("parse of %s differs from strtod", text);
            }
            am2z_value_release(w);
        }
    }
    CHECK_INT(fails, 0);
}

/* Decimal point of another locale: output must keep '.', input must still parse. */
static void test_locale(void) {
    static const char *names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8", "de_DE", "fr_FR"};
    size_t i;
    const char *got = NULL;
    am2z_value *v, *w;
    for (i = 0; i < sizeof names / sizeof *names && !got; i++) got = setlocale(LC_NUMERIC, names[i]);
    if (!got || strcmp(localeconv()->decimal_point, ",") != 0) {
        setlocale(LC_NUMERIC, "C");
        T_SKIP("no locale with a decimal comma is installed (e.g. de_DE.UTF-8)");
    }
    v = am2z_value_double(0.30000000000000004);
    CHECK_STR(J(v, 0), "0.30000000000000004");
    am2z_value_release(v);
    v = am2z_value_double(2.5);
    CHECK_STR(J(v, 0), "2.5");
    am2z_value_release(v);
    w = P("[1.2345678901234567, 2.5, 1e-400, 7.25e3]"); /* slow (strtod) and fast paths */
    CHECK_DBL(am2z_value_as_double(am2z_value_at(w, 0), 0), 1.2345678901234567, 0);
    CHECK_DBL(am2z_value_as_double(am2z_value_at(w, 1), 0), 2.5, 0);
    CHECK_DBL(am2z_value_as_double(am2z_value_at(w, 3), 0), 7250.0, 0);
    am2z_value_release(w);
    setlocale(LC_NUMERIC, "C");
}

/* Each malformed text is rejected with the right offset. */
static void test_parse_errors(void) {
    static const struct { const char *text; size_t offset; const char *msg; } cases[] = {
        {"", 0, "empty input"},
        {"   ", 3, "unexpected end"},
        {"[1,2", 4, "unexpected end"},
        {"[1,2,]", 5, "unexpected character ']'"},
        {"{\"a\":1,}", 7, "expected a string key"},
        {"{\"a\" 1}", 5, "expected ':'"},
        {"{\"a\":1 \"b\":2}", 7, "expected ',' or '}'"},
        {"[1 2]", 3, "expected ',' or ']'"},
        {"[01]", 2, "expected ',' or ']'"},
        {"-", 0, "invalid number"},
        {"1.", 0, "invalid number"},
        {"1e+", 0, "invalid number"},
        {".5", 0, "unexpected character '.'"},
        {"+1", 0, "unexpected character '+'"},
        {"1e999", 0, "number out of range"},
        {"-1e999", 0, "number out of range"},
        {"tru", 0, "unexpected character 't'"},
        {"nulll", 4, "unexpected data"},
        {"\"ab", 3, "unterminated string"},
        {"\"a\\x\"", 2, "invalid escape"},
        {"\"\\u12G4\"", 1, "invalid \\u escape"},
        {"\"\\ud800\"", 1, "lone high surrogate"},
        {"\"\\ud800\\u0041\"", 1, "lone high surrogate"},
        {"\"ok\\udc00\"", 3, "lone low surrogate"},
        {"\"a\tb\"", 2, "control character"},
        {"\"\xc0\xaf\"", 1, "invalid UTF-8"},          /* overlong '/' */
        {"\"\xed\xa0\x80\"", 1, "invalid UTF-8"},      /* encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", 1, "invalid UTF-8"},  /* above U+10FFFF */
        {"\"ab\xe2\x82\"", 3, "invalid UTF-8"},        /* truncated */
        {"\xef\xbb\xbf{}", 0, "unexpected byte 0xef"}, /* byte-order mark */
        {"{} {}", 3, "unexpected data"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        am2z_status e;
        am2z_value *v = am2z_json_parse(cases[i].text, strlen(cases[i].text), NULL, &e);
        if (strlen(cases[i].text) == 0) v = am2z_json_parse(cases[i].text, AM2Z_NTS, NULL, &e);
        if (v) {
            T_FAIL_("accepted %s", cases[i].text);
            am2z_value_release(v);
            continue;
        }
        if (am2z_status_offset() != cases[i].offset || !strstr(am2z_status_detail(), cases[i].msg))
            T_FAIL_("%s: got offset %lu \"%s\", want %lu \"%s\"", cases[i].text, (unsigned long)am2z_status_offset(),
                    am2z_status_detail(), (unsigned long)cases[i].offset, cases[i].msg);
    }
    /* An explicit length allows NUL bytes in strings and rejects them outside. */
    {
        am2z_status e;
        am2z_value *v = am2z_json_parse("\"a\\u0000b\"", 10, NULL, &e);
        CHECK_INT(am2z_value_len(v), 3);
        am2z_value_release(v);
        CHECK(am2z_json_parse("[1]\0", 4, NULL, &e) == NULL);
        CHECK_INT(am2z_status_offset(), 3);
        v = am2z_json_parse("[1]\0garbage", 3, NULL, &e); /* len stops before the NUL */
        CHECK_STR(J(v, 0), "[1]");
        am2z_value_release(v);
    }
}

static void test_limits(void) {
    am2z_json_limits lim;
    am2z_status e;
    am2z_value *v;
    char buf[2048];
    int i;
    /* depth: 4 levels pass with max_depth 4, the fifth '[' (offset 4) fails */
    memset(&lim, 0, sizeof lim);
    lim.max_depth = 4;
    v = am2z_json_parse("[[[[1]]]]", AM2Z_NTS, &lim, &e);
    CHECK(v != NULL);
    am2z_value_release(v);
    CHECK(am2z_json_parse("[[[[[1]]]]]", AM2Z_NTS, &lim, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 4);
    CHECK_STR(am2z_status_detail(), "json: depth limit 4 exceeded");
    CHECK(am2z_json_parse("{\"a\":{\"b\":[{\"c\":[[]]}]}}", AM2Z_NTS, &lim, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 16);
    /* the default depth (256) and its cap (AM2Z_VALUE_MAX_DEPTH) */
    for (i = 0; i < 257; i++) buf[i] = '[';
    for (i = 0; i < 257; i++) buf[257 + i] = ']';
    CHECK(am2z_json_parse(buf, 514, NULL, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 256);
    v = am2z_json_parse(buf + 1, 512, NULL, &e);
    CHECK(v != NULL);
    am2z_value_release(v);
    lim.max_depth = 1 << 20;
    {
        size_t n = 2 * (AM2Z_VALUE_MAX_DEPTH + 1);
        char *deep = (char *)malloc(n);
        memset(deep, '[', n / 2);
        memset(deep + n / 2, ']', n / 2);
        CHECK(am2z_json_parse(deep, n, &lim, &e) == NULL);
        CHECK_INT(am2z_status_offset(), AM2Z_VALUE_MAX_DEPTH);
        free(deep);
    }
    /* size */
    memset(&lim, 0, sizeof lim);
    lim.max_size = 8;
    CHECK(am2z_json_parse("[1,2,3,4]", AM2Z_NTS, &lim, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 8);
    CHECK_STR(am2z_status_detail(), "json: input size limit 8 exceeded");
    v = am2z_json_parse("[1,2,34]", AM2Z_NTS, &lim, &e);
    CHECK(v != NULL);
    am2z_value_release(v);
    /* string length: values and keys, plain and escaped, limit is inclusive */
    memset(&lim, 0, sizeof lim);
    lim.max_string = 4;
    v = am2z_json_parse("[\"abcd\",\"\\u00e9\\u00e9\",{\"wxyz\":1}]", AM2Z_NTS, &lim, &e);
    CHECK(v != NULL);
    am2z_value_release(v);
    CHECK(am2z_json_parse("[1, \"abcde\"]", AM2Z_NTS, &lim, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 4);
    CHECK_STR(am2z_status_detail(), "json: string length limit 4 exceeded");
    CHECK(am2z_json_parse("[\"ab\\ncde\"]", AM2Z_NTS, &lim, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 1);
    CHECK(am2z_json_parse("[\"\\u00e9\\u00e9\\u00e9\"]", AM2Z_NTS, &lim, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 1);
    CHECK(am2z_json_parse("{\"ok\":1,\"abcde\":2}", AM2Z_NTS, &lim, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 8);
    /* elements per container */
    memset(&lim, 0, sizeof lim);
    lim.max_elements = 3;
    v = am2z_json_parse("[[1,2,3],{\"a\":1,\"b\":2,\"c\":3}]", AM2Z_NTS, &lim, &e);
    CHECK(v != NULL);
    am2z_value_release(v);
    CHECK(am2z_json_parse("[1,2,3,44]", AM2Z_NTS, &lim, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 7);
    CHECK_STR(am2z_status_detail(), "json: element limit 3 exceeded");
    CHECK(am2z_json_parse("{\"a\":1,\"b\":2,\"c\":3,\"d\":4}", AM2Z_NTS, &lim, &e) == NULL);
    CHECK_INT(am2z_status_offset(), 19);
}

/* Large objects use a hash index; duplicates keep the first position, last value. */
static void test_big_object(void) {
    am2z_value *o = am2z_value_object(), *p;
    char k[32], *text;
    int i, ok = 1;
    for (i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        o = am2z_value_set_key(o, k, AM2Z_NTS, am2z_value_int(i));
    }
    CHECK_INT(am2z_value_len(o), 5000);
    for (i = 0; i < 5000; i += 7) {
        snprintf(k, sizeof k, "key-%d", i);
        if (am2z_value_as_int(am2z_value_find(o, k, AM2Z_NTS), -1) != i) ok = 0;
    }
    CHECK(ok);
    CHECK(am2z_value_find(o, "key-5000", AM2Z_NTS) == NULL);
    for (i = 0; i < 5000; i += 2) { /* remove the even keys */
        snprintf(k, sizeof k, "key-%d", i);
        o = am2z_value_remove_key(o, k, AM2Z_NTS);
    }
    CHECK_INT(am2z_value_len(o), 2500);
    for (i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        if ((am2z_value_find(o, k, AM2Z_NTS) != NULL) != (i % 2 == 1)) ok = 0;
    }
    CHECK(ok);
    CHECK_STR(am2z_value_key_at(o, 0, NULL), "key-1");
    CHECK_STR(am2z_value_key_at(o, 2499, NULL), "key-4999");
    /* round trip through text */
    text = am2z_json_write(o, 0, NULL);
    p = P(text);
    CHECK(am2z_value_equal(o, p));
    am2z_free(text);
    am2z_value_release(p);
    am2z_value_release(o);
    /* duplicated keys in a big parsed object */
    {
        char doc2[2048];
        size_t n = 0;
        n += (size_t)snprintf(doc2 + n, sizeof doc2 - n, "{");
        for (i = 0; i < 40; i++) n += (size_t)snprintf(doc2 + n, sizeof doc2 - n, "\"k%d\":%d,", i % 20, i);
        snprintf(doc2 + n - 1, sizeof doc2 - n + 1, "}");
        p = P(doc2);
        CHECK_INT(am2z_value_len(p), 20);
        CHECK_STR(am2z_value_key_at(p, 0, NULL), "k0");
        CHECK_INT(am2z_value_get_int(p, "k0", 0), 20);
        CHECK_INT(am2z_value_get_int(p, "k19", 0), 39);
        am2z_value_release(p);
        p = P("{\"a\":1,\"b\":2,\"a\":3}");
        CHECK_STR(J(p, 0), "{\"a\":3,\"b\":2}");
        am2z_value_release(p);
    }
}

/* The cost model promised in the header (tests/oom.h counts the allocations). */
static void test_allocations(void) {
    am2z_value *v, *w;
    long before;
    char *text;
    oom_count = 0;
    v = am2z_value_object();
    v = am2z_value_set(v, "id", am2z_value_int(7));
    v = am2z_value_set(v, "qty", am2z_value_int(3));
    v = am2z_value_set(v, "ok", am2z_value_bool(1));
    v = am2z_value_set(v, "note", am2z_value_null());
    v = am2z_value_set(v, "items", am2z_value_array());
    CHECK_INT(oom_count, 1); /* one block for the object; the members cost nothing */
    before = oom_count;
    v = am2z_value_set(v, "qty", am2z_value_int(4)); /* sole owner: in place */
    CHECK_INT(oom_count - before, 0);
    w = am2z_value_retain(v);
    before = oom_count;
    w = am2z_value_set(w, "qty", am2z_value_int(5)); /* shared: one new block */
    CHECK_INT(oom_count - before, 1);
    CHECK_INT(am2z_value_get_int(v, "qty", 0), 4);
    am2z_value_release(w);
    before = oom_count;
    w = P("{\"a\":1,\"b\":[1,2,3],\"c\":{\"d\":\"e\"},\"f\":true}");
    CHECK_INT(oom_count - before, 4); /* object, array, object, string */
    before = oom_count;
    text = am2z_json_write(w, 0, NULL);
    CHECK_INT(oom_count - before, 1);
    am2z_free(text);
    am2z_value_release(w);
    am2z_value_release(v);
}

/* Out of memory: every allocation in turn fails (tests/oom.h). Each operation returns
   NULL or a whole result, leaks nothing, and a failed parse says why. */
static int op_parse(void) {
    /* a boxed int, doubles, escaped and plain strings longer than the parser's stack
       buffers, an object with a hash index, a repeated key, nesting */
    static const char text[] =
        "{\"big\":4611686018427387904,\"d\":[2.5,-0,1e300,12345678901234567890],"
        "\"s\":\"caf\\u00e9 \\n\",\"long\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\t\","
        "\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,"
        "\"k10\":10,\"k11\":11,\"k12\":12,\"k13\":13,\"k14\":14,\"k15\":15,\"k16\":{\"k\":[[[null]]]},"
        "\"k1\":true}";
    am2z_status e;
    am2z_value *v = am2z_json_parse(text, AM2Z_NTS, NULL, &e);
    char *out;
    int ok;
    if (!v) {
        CHECK_INT(e, AM2Z_STATUS_NO_MEMORY);
        return 0;
    }
    out = am2z_json_write(v, AM2Z_JSON_PRETTY | AM2Z_JSON_SORTED, NULL);
    ok = out && am2z_value_get_bool(v, "k1", 0) && am2z_value_len(v) == 20;
    am2z_free(out);
    am2z_value_release(v);
    return ok;
}
static int op_edit(void) {
    am2z_value *v = am2z_value_stringf("%0300d", 7), *w, *x;
    char key[16];
    int i, ok;
    v = am2z_value_set(am2z_value_object(), "long", v);
    for (i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "key%d", i);
        v = am2z_value_set(v, key, am2z_value_int(i));
    }
    v = am2z_value_set(v, "a.b[0].c", am2z_value_string("s"));
    v = am2z_value_append(v, "/list/-", am2z_value_double(0.5));
    w = am2z_value_retain(v); /* shared: the edits below copy */
    w = am2z_value_set(w, "a.b[0].d", am2z_value_int(-1));
    w = am2z_value_append(w, "a.b", am2z_value_null());
    w = am2z_value_remove(w, "key3");
    w = am2z_value_remove_key(w, "key4", AM2Z_NTS);
    x = am2z_value_merge(am2z_value_retain(v), w);
    ok = v && w && x && am2z_value_get_int(x, "a.b[0].d", 0) == -1 && !am2z_value_find(w, "key3", AM2Z_NTS);
    am2z_value_release(v);
    am2z_value_release(w);
    am2z_value_release(x);
    return ok;
}

static void test_out_of_memory(void) {
    CHECK(oom_sweep("parse", op_parse) > 5);
    CHECK(oom_sweep("edit", op_edit) > 5);
}

/* JSONTestSuite: y_ must parse, n_ must fail, i_ may do either; none may crash or
   leak, and every accepted text must survive a write and a re-parse unchanged. */
static void test_json_suite(void) {
    const char *dir = "tests/data/JSONTestSuite/test_parsing";
    DIR *d = opendir(dir);
    struct dirent *ent;
    int counts[3][2] = {{0, 0}, {0, 0}, {0, 0}}; /* [y,n,i][accepted,rejected] */
    int files = 0;
    if (!d) T_SKIP("cannot open %s (run from the repository root)", dir);
    for (errno = 0; (ent = readdir(d)) != NULL; errno = 0) {
        char path[1024], *buf;
        FILE *f;
        long size;
        int kind;
        am2z_value *v;
        am2z_status e;
        const char *name = ent->d_name;
        if (strlen(name) < 6 || strcmp(name + strlen(name) - 5, ".json") != 0) continue;
        kind = name[0] == 'y' ? 0 : name[0] == 'n' ? 1 : name[0] == 'i' ? 2 : -1;
        if (kind < 0 || name[1] != '_') continue;
        snprintf(path, sizeof path, "%s/%s", dir, name);
        f = fopen(path, "rb");
        if (!f) {
            T_FAIL_("cannot read %s", path);
            continue;
        }
        fseek(f, 0, SEEK_END);
        size = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = (char *)malloc((size_t)size + 1);
        if (fread(buf, 1, (size_t)size, f) != (size_t)size) size = 0;
        fclose(f);
        files++;
        /* len 0 means strlen, so the empty file is given as an empty C string */
        v = am2z_json_parse(size ? buf : "", (size_t)size, NULL, &e);
        counts[kind][v ? 0 : 1]++;
        if (kind == 0 && !v) T_FAIL_("%s rejected: %s at %lu", name, am2z_status_detail(), (unsigned long)am2z_status_offset());
        if (kind == 1 && v) T_FAIL_("%s accepted", name);
        if (!v && am2z_status_offset() > (size_t)size) T_FAIL_("%s: offset %lu beyond the input", name, (unsigned long)am2z_status_offset());
        if (v) {
            size_t n;
            char *text = am2z_json_write(v, 0, &n);
            am2z_value *w = am2z_json_parse(text, n, NULL, &e);
            if (!w || !am2z_value_equal(v, w)) T_FAIL_("%s: does not round-trip (%s)", name, text);
            am2z_free(text);
            am2z_value_release(w);
            am2z_value_release(v);
        }
        free(buf);
    }
    if (errno) T_FAIL_("readdir %s: %s", dir, strerror(errno));
    closedir(d);
    CHECK(files >= 300);
    printf("JSONTestSuite: %d files; y_ %d accepted %d rejected; n_ %d accepted %d rejected; "
           "i_ %d accepted %d rejected\n", files, counts[0][0], counts[0][1], counts[1][0], counts[1][1],
           counts[2][0], counts[2][1]);
}

/* ---- API 1.0: failed edits propagate, with a reason ---- */

/* Per edit function: a failed edit followed by more edits ends in NULL (v0.1: the next
   edit took NULL for "missing" and built a fresh {}), and the thread's status and
   detail still name the first failure. */
static void test_failed_edit_propagates(void) {
    am2z_value *base = P("{\"total\":5,\"items\":{\"a\":1},\"list\":[1,2]}");
    am2z_value *v;
    am2z_result r;
    /* set */
    v = am2z_value_set(am2z_value_retain(base), "total.cents", am2z_value_int(1));
    CHECK(v == NULL);
    v = am2z_value_set(v, "status", am2z_value_string("paid"));
    v = am2z_value_set(v, "", am2z_value_int(1));
    CHECK(v == NULL);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "set 'total.cents': 'total' is a number");
    r = am2z_ok(v);
    CHECK(r.error && strcmp(r.error->message, "am2z_ok(NULL): set 'total.cents': 'total' is a number") == 0);
    am2z_result_clear(&r);
    /* append */
    v = am2z_value_append(am2z_value_retain(base), "items", am2z_value_int(1));
    v = am2z_value_append(v, "log", am2z_value_string("x"));
    CHECK(v == NULL);
    CHECK_STR(am2z_status_detail(), "append 'items': 'items' is an object");
    /* remove */
    v = am2z_value_remove(am2z_value_retain(base), "list..x");
    v = am2z_value_remove(v, "total");
    CHECK(v == NULL);
    CHECK_STR(am2z_status_detail(), "remove 'list..x': malformed path");
    /* set_key */
    v = am2z_value_set_key(am2z_value_int(5), "cents", AM2Z_NTS, am2z_value_int(1));
    v = am2z_value_set_key(v, "status", AM2Z_NTS, am2z_value_string("paid"));
    CHECK(v == NULL);
    CHECK_STR(am2z_status_detail(), "set_key 'cents': the value is a number");
    /* remove_key */
    v = am2z_value_remove_key(am2z_value_array(), "a", AM2Z_NTS);
    v = am2z_value_remove_key(v, "b", AM2Z_NTS);
    v = am2z_value_set_key(v, "c", AM2Z_NTS, am2z_value_int(1));
    CHECK(v == NULL);
    CHECK_STR(am2z_status_detail(), "remove_key 'a': the value is an array");
    /* merge */
    v = am2z_value_merge(am2z_value_retain(base), am2z_value_get(base, "list"));
    v = am2z_value_merge(v, base);
    CHECK(v == NULL);
    CHECK_STR(am2z_status_detail(), "merge: the source is an array");
    v = am2z_value_merge(am2z_value_string("s"), base);
    CHECK(v == NULL);
    CHECK_STR(am2z_status_detail(), "merge: the target is a string");
    am2z_value_release(base);
}

/* Only constructors make containers: NULL given to an edit, with no failed edit before
   it, is reported as such (v0.1: set, set_key and merge built {}, append built []). */
static void test_null_container(void) {
    am2z_result r = am2z_ok(NULL); /* reports (and so forgets) any earlier edit failure */
    am2z_result_clear(&r);
    CHECK(am2z_value_set(NULL, "a", am2z_value_int(1)) == NULL);
    CHECK_STR(am2z_status_detail(), "set 'a': no container (an earlier call failed)");
    r = am2z_ok(NULL);
    am2z_result_clear(&r);
    CHECK(am2z_value_append(NULL, "", am2z_value_string("x")) == NULL);
    CHECK_STR(am2z_status_detail(), "append '': no container (an earlier call failed)");
    r = am2z_ok(NULL);
    am2z_result_clear(&r);
    CHECK(am2z_value_set_key(NULL, "k", 1, am2z_value_stringf("%d", 1)) == NULL);
    CHECK_STR(am2z_status_detail(), "set_key 'k': no container (an earlier call failed)");
    r = am2z_ok(NULL);
    am2z_result_clear(&r);
    CHECK(am2z_value_merge(NULL, am2z_value_object()) == NULL);
    CHECK_STR(am2z_status_detail(), "merge: no container (an earlier call failed)");
    r = am2z_ok(NULL);
    am2z_result_clear(&r);
    CHECK(am2z_value_set(am2z_value_object(), "a", NULL) == NULL);
    CHECK_STR(am2z_status_detail(), "set 'a': no value (an earlier call failed)");
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_INVALID_ARGUMENT);
    r = am2z_ok(NULL);
    am2z_result_clear(&r);
    CHECK(am2z_value_remove(NULL, "a") == NULL);
    CHECK_STR(am2z_status_detail(), "remove 'a': no container (an earlier call failed)");
    r = am2z_ok(NULL);
    am2z_result_clear(&r);
    CHECK(am2z_value_remove_key(NULL, "a", AM2Z_NTS) == NULL);
    CHECK_STR(am2z_status_detail(), "remove_key 'a': no container (an earlier call failed)");
}

/* Each kind of edit failure names operation, path and reason, with its status. */
static void test_edit_failure_details(void) {
    static const struct {
        const char *path;
        int append;
        am2z_status st;
        const char *detail;
    } cases[] = {
        {"x[5]", 0, AM2Z_STATUS_INVALID_ARGUMENT, "set 'x[5]': index 5 out of range (length 2)"},
        {"/x/7", 0, AM2Z_STATUS_INVALID_ARGUMENT, "set '/x/7': index 7 out of range (length 2)"},
        {"a..b", 0, AM2Z_STATUS_INVALID_ARGUMENT, "set 'a..b': malformed path"},
        {"o[0]", 0, AM2Z_STATUS_INVALID_ARGUMENT, "set 'o[0]': 'o' is an object"},
        {"x.name", 0, AM2Z_STATUS_INVALID_ARGUMENT, "set 'x.name': 'x' is an array"},
        {"o.s.t", 0, AM2Z_STATUS_INVALID_ARGUMENT, "set 'o.s.t': 'o.s' is a string"},
        {"n.k", 0, AM2Z_STATUS_INVALID_ARGUMENT, "set 'n.k': 'n' is null"},
        {"o.s", 1, AM2Z_STATUS_INVALID_ARGUMENT, "append 'o.s': 'o.s' is a string"},
    };
    am2z_value *base = P("{\"x\":[1,2],\"o\":{\"s\":\"str\"},\"n\":null}"), *v;
    size_t i;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        am2z_result r = am2z_ok(NULL); /* a fresh chain */
        am2z_result_clear(&r);
        v = cases[i].append ? am2z_value_append(am2z_value_retain(base), cases[i].path, am2z_value_int(1))
                            : am2z_value_set(am2z_value_retain(base), cases[i].path, am2z_value_int(1));
        CHECK(v == NULL);
        am2z_value_release(v);
        CHECK_INT(am2z_status_last(), cases[i].st);
        CHECK_STR(am2z_status_detail(), cases[i].detail);
    }
    CHECK(am2z_value_set(am2z_value_int(3), "a", am2z_value_int(1)) == NULL);
    CHECK_STR(am2z_status_detail(), "set 'a': the value is a number");
    CHECK(am2z_value_remove(am2z_value_retain(base), "") == NULL);
    CHECK_STR(am2z_status_detail(), "remove '': the value itself cannot be removed");
    /* a path deeper than the depth limit */
    {
        char path[4 * AM2Z_VALUE_MAX_DEPTH + 8];
        size_t p = 0;
        int k;
        for (k = 0; k < AM2Z_VALUE_MAX_DEPTH + 1; k++) {
            if (k) path[p++] = '.';
            path[p++] = 'k';
        }
        path[p] = 0;
        CHECK(am2z_value_set(am2z_value_object(), path, am2z_value_int(1)) == NULL);
        CHECK_INT(am2z_status_last(), AM2Z_STATUS_LIMIT);
        CHECK(strstr(am2z_status_detail(), "depth limit") != NULL);
    }
    am2z_value_release(base);
}

/* Lengths are lengths: AM2Z_NTS for a C string, 0 for empty, and an explicit length
   never reads past it (the buffers below have no NUL; ASan would catch a strlen). */
static void test_lengths(void) {
    char *key = (char *)malloc(3), *json = (char *)malloc(7);
    am2z_value *o = am2z_value_object(), *v;
    am2z_status st = AM2Z_STATUS_CYCLE;
    memcpy(key, "abc", 3);
    memcpy(json, "{\"k\":1}", 7);
    o = am2z_value_set_key(o, key, 2, am2z_value_int(1));      /* "ab" */
    o = am2z_value_set_key(o, "", 0, am2z_value_int(2));       /* the empty key, not strlen */
    o = am2z_value_set_key(o, "abc", AM2Z_NTS, am2z_value_int(3));
    CHECK_INT(am2z_value_len(o), 3);
    CHECK_INT(am2z_value_as_int(am2z_value_find(o, key, 2), 0), 1);
    CHECK_INT(am2z_value_as_int(am2z_value_find(o, key, 3), 0), 3);
    CHECK_INT(am2z_value_as_int(am2z_value_find(o, "", 0), 0), 2);
    CHECK_INT(am2z_value_as_int(am2z_value_find(o, "abc", AM2Z_NTS), 0), 3);
    o = am2z_value_remove_key(o, "", 0);
    CHECK_INT(am2z_value_len(o), 2);
    CHECK(am2z_value_find(o, "", 0) == NULL);
    o = am2z_value_remove_key(o, key, 2);
    CHECK_INT(am2z_value_len(o), 1);
    am2z_value_release(o);
    v = am2z_json_parse(json, 7, NULL, &st);
    CHECK(v != NULL && st == AM2Z_STATUS_OK);
    CHECK_INT(am2z_value_get_int(v, "k", 0), 1);
    am2z_value_release(v);
    CHECK(am2z_json_parse(json, 0, NULL, &st) == NULL); /* 0 bytes: empty input */
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "json: empty input");
    v = am2z_value_string_n("xyz", AM2Z_NTS);
    CHECK_INT(am2z_value_len(v), 3);
    am2z_value_release(v);
    CHECK(am2z_value_string_n(NULL, AM2Z_NTS) == NULL); /* not "" */
    CHECK_STR(am2z_status_detail(), "value_string_n: NULL bytes");
    free(key);
    free(json);
}

/* One failure channel: parse failures give a status, the detail "json: ..." and the
   offset, on the calling thread; success sets the status to OK. */
static void test_parse_status(void) {
    am2z_status st = AM2Z_STATUS_CYCLE;
    am2z_json_limits lim;
    am2z_value *v = am2z_json_parse("[1, tru]", AM2Z_NTS, NULL, &st);
    CHECK(v == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "json: unexpected character 't'");
    CHECK_INT(am2z_status_offset(), 4);
    memset(&lim, 0, sizeof lim);
    lim.max_depth = 2;
    CHECK(am2z_json_parse("[[[]]]", AM2Z_NTS, &lim, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_LIMIT);
    CHECK_STR(am2z_status_detail(), "json: depth limit 2 exceeded");
    CHECK_INT(am2z_status_offset(), 2);
    v = am2z_json_parse("{}", AM2Z_NTS, NULL, &st);
    CHECK(v != NULL && st == AM2Z_STATUS_OK);
    CHECK_STR(am2z_status_detail(), "json: depth limit 2 exceeded"); /* left alone by success */
    am2z_value_release(v);
    /* a failing edit's detail has no offset */
    CHECK(am2z_value_set(am2z_value_int(1), "a", am2z_value_int(1)) == NULL);
    CHECK(am2z_status_offset() == AM2Z_NTS);
}

#ifndef AM2Z_NO_THREADS /* needs threads */
/* The detail is per thread: two threads failing differently each read their own. */
static int g_detail_arrived;
static void *detail_thread(void *arg) {
    int which = *(int *)arg, ok = 1, i;
    for (i = 0; i < 200 && ok; i++) {
        if (which) ok = am2z_json_parse("[1,", AM2Z_NTS, NULL, NULL) == NULL;
        else ok = am2z_value_set(am2z_value_int(1), "a.b", am2z_value_int(2)) == NULL;
        if (i == 0) { /* both have failed before either reads */
            __atomic_add_fetch(&g_detail_arrived, 1, __ATOMIC_SEQ_CST);
            while (__atomic_load_n(&g_detail_arrived, __ATOMIC_SEQ_CST) < 2) sched_yield();
        }
        if (which) ok = ok && strcmp(am2z_status_detail(), "json: unexpected end of input") == 0 &&
                        am2z_status_offset() == 3;
        else ok = ok && strcmp(am2z_status_detail(), "set 'a.b': the value is a number") == 0 &&
                  am2z_status_offset() == AM2Z_NTS;
    }
    *(int *)arg = ok;
    return NULL;
}
static void test_detail_per_thread(void) {
    pthread_t a, b;
    int wa = 0, wb = 1;
    g_detail_arrived = 0;
    CHECK_INT(pthread_create(&a, NULL, detail_thread, &wa), 0);
    CHECK_INT(pthread_create(&b, NULL, detail_thread, &wb), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK_INT(wa, 1);
    CHECK_INT(wb, 1);
}
#endif

int main(void) {
    oom_install();
    T_RUN(test_constructors);
    T_RUN(test_null_safety);
    T_RUN(test_int_extremes);
    T_RUN(test_paths);
    T_RUN(test_edit);
    T_RUN(test_depth_limit);
    T_RUN(test_cow);
    T_RUN(test_merge);
    T_RUN(test_equal_hash);
    T_RUN(test_writer);
    T_RUN(test_double_roundtrip);
    T_RUN(test_locale);
    T_RUN(test_parse_errors);
    T_RUN(test_limits);
    T_RUN(test_big_object);
    T_RUN(test_allocations);
    T_RUN(test_out_of_memory);
    T_RUN(test_json_suite);
    T_RUN(test_failed_edit_propagates);
    T_RUN(test_null_container);
    T_RUN(test_edit_failure_details);
    T_RUN(test_lengths);
    T_RUN(test_parse_status);
#ifndef AM2Z_NO_THREADS
    T_RUN(test_detail_per_thread);
#endif
    return t_done();
}
