/* test_plain_key.c - am2z_value_get / am2z_value_set with a plain key ("n": no '.',
   '[', '\\', not a pointer), which skip the path parser (am2z__plain_key): the answers,
   copy-on-write, the depth limit and the failure details must be those of the general
   path. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include <string.h>

static am2z_value *J(const char *json) { return am2z_json_parse(json, AM2Z_NTS, NULL, NULL); }

static void test_get(void) {
    am2z_value *v = J("{\"n\":1,\"0\":\"zero\",\"a\":{\"b\":2},\"x y\":3,\"k/1\":4,\"t\":[5]}");
    CHECK_INT(am2z_value_get_int(v, "n", -1), 1);
    CHECK_STR(am2z_value_get_string(v, "0", NULL), "zero"); /* an index-like key names a member */
    CHECK_INT(am2z_value_get_int(v, "x y", -1), 3);
    CHECK_INT(am2z_value_get_int(v, "k/1", -1), 4);           /* '/' inside a plain key */
    CHECK_INT(am2z_value_get_int(v, "a.b", -1), 2);           /* paths still parse */
    CHECK_INT(am2z_value_get_int(v, "t[0]", -1), 5);
    CHECK(am2z_value_get(v, "missing") == NULL);
    CHECK(am2z_value_get(v, "") == v);                        /* the empty path: the value itself */
    CHECK(am2z_value_get(am2z_value_get(v, "t"), "0") != NULL); /* arrays: not a plain-key lookup */
    am2z_value_release(v);
}

static void test_set_copy_on_write(void) {
    am2z_value *v = J("{\"n\":1,\"s\":\"old\",\"o\":{\"p\":1}}"), *w, *u;
    /* shared: a copy, the original untouched */
    w = am2z_value_set(am2z_value_retain(v), "s", am2z_value_string("new"));
    CHECK(w != NULL && w != v);
    CHECK_STR(am2z_value_get_string(v, "s", NULL), "old");
    CHECK_STR(am2z_value_get_string(w, "s", NULL), "new");
    CHECK(am2z_value_get(w, "o") == am2z_value_get(v, "o")); /* members shared, not copied */
    /* sole owner: in place, the old member released (ASan: no leak, no double free) */
    u = am2z_value_set(w, "s", am2z_value_int(7));
    CHECK(u == w);
    CHECK_INT(am2z_value_get_int(u, "s", -1), 7);
    /* the depth grows with a deeper member */
    u = am2z_value_set(u, "n", J("{\"a\":{\"b\":{}}}"));
    CHECK(am2z_value_get(u, "n.a.b") != NULL);
    {
        char *s = am2z_json_write(u, 0, NULL);
        CHECK_STR(s, "{\"n\":{\"a\":{\"b\":{}}},\"s\":7,\"o\":{\"p\":1}}");
        free(s);
    }
    /* an absent key: added (the general path) */
    u = am2z_value_set(u, "added", am2z_value_bool(1));
    CHECK(am2z_value_get_bool(u, "added", 0));
    am2z_value_release(u);
    am2z_value_release(v);
}

/* a member as deep as the limit allows: refused as by the general path */
static void test_set_depth_limit(void) {
    am2z_value *deep = am2z_value_array(), *v = J("{\"n\":1}"), *r;
    int i;
    for (i = 1; i < AM2Z_VALUE_MAX_DEPTH; i++) deep = am2z_value_append(am2z_value_array(), "", deep);
    CHECK(deep != NULL);
    r = am2z_value_set(am2z_value_retain(v), "n", deep); /* depth MAX + 1 */
    CHECK(r == NULL);
    CHECK(strstr(am2z_status_detail(), "depth limit") != NULL);
    CHECK(strstr(am2z_status_detail(), "'n'") != NULL);
    CHECK_INT(am2z_value_get_int(v, "n", -1), 1);
    am2z_value_release(v);
}

int main(void) {
    T_RUN(test_get);
    T_RUN(test_set_copy_on_write);
    T_RUN(test_set_depth_limit);
    return t_done();
}
