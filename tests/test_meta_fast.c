/* test_meta_fast.c - the metadata fast path (am2z.h section 2): states whose "metadata"
   has the layout am2z_state_new makes are read and bumped by position, every other
   layout by key; both must give the same answers, and a bump of a shared state must
   leave the original as it was. Also the local runtime's bump clock (lastUpdated from
   its monotonic-anchored wall clock). */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include <string.h>

static am2z_state *P(const char *json) { return am2z_state_parse("dflt", json, AM2Z_NTS, NULL); }

/* the canonical layout, shared: the bump copies, the original keeps its metadata */
static void test_canonical_shared(void) {
    am2z_state *s = am2z_state_new("s1", am2z_value_set(am2z_value_object(), "x", am2z_value_int(1)), NULL), *b;
    int64_t created = am2z_state_created_at(s), updated = am2z_state_last_updated(s);
    CHECK_INT(am2z_state_version(s), 1);
    CHECK_STR(am2z_state_session_id(s), "s1");
    b = am2z_state_bump(am2z_value_retain(s));
    CHECK(b != NULL && b != s);
    CHECK_INT(am2z_state_version(b), 2);
    CHECK_INT(am2z_state_version(s), 1); /* immutable: the shared original is untouched */
    CHECK_INT(am2z_state_last_updated(s), updated);
    CHECK_STR(am2z_state_session_id(b), "s1");
    CHECK_INT(am2z_state_created_at(b), created);
    CHECK(am2z_state_last_updated(b) >= updated);
    CHECK(am2z_value_get(b, "x") == am2z_value_get(s, "x"));
    /* sole owner: in place, same block */
    {
        am2z_state *c = am2z_state_bump(b);
        CHECK(c == b);
        CHECK_INT(am2z_state_version(c), 3);
        am2z_value_release(c);
    }
    am2z_value_release(s);
}

/* other layouts take the key path and agree: reordered fields, metadata not first,
   an extra field (kept by the bump), a version beyond a tagged integer */
static void test_other_layouts(void) {
    static const char *const in[] = {
        "{\"metadata\":{\"sessionId\":\"a\",\"version\":3,\"createdAt\":1,\"lastUpdated\":2},\"k\":1}",
        "{\"k\":1,\"metadata\":{\"version\":3,\"sessionId\":\"a\",\"createdAt\":1,\"lastUpdated\":2}}",
        "{\"metadata\":{\"version\":3,\"sessionId\":\"a\",\"createdAt\":1,\"lastUpdated\":2,\"extra\":true},\"k\":1}",
    };
    size_t i;
    for (i = 0; i < sizeof in / sizeof *in; i++) {
        am2z_state *s = P(in[i]), *b;
        CHECK(s != NULL);
        CHECK_INT(am2z_state_version(s), 3);
        CHECK_STR(am2z_state_session_id(s), "a");
        b = am2z_state_bump(am2z_value_retain(s));
        CHECK_INT(am2z_state_version(b), 4);
        CHECK_INT(am2z_state_version(s), 3);
        CHECK_STR(am2z_state_session_id(b), "a");
        CHECK_INT(am2z_state_created_at(b), 1);
        CHECK(am2z_state_last_updated(b) > 2);
        CHECK_INT(am2z_value_get_int(b, "k", 0), 1);
        if (i == 2) CHECK(am2z_value_get_bool(b, "metadata.extra", 0));
        am2z_value_release(b);
        am2z_value_release(s);
    }
    {
        am2z_state *s = P("{\"metadata\":{\"version\":4611686018427387904,\"sessionId\":\"a\",\"createdAt\":1,"
                          "\"lastUpdated\":2}}"), *b;
        CHECK_INT(am2z_state_version(s), 4611686018427387904LL);
        b = am2z_state_bump(s);
        CHECK_INT(am2z_state_version(b), 4611686018427387905LL);
        am2z_value_release(b);
    }
}

#ifndef AM2Z_NO_THREADS
static am2z_result add1(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "n", am2z_value_int(am2z_value_get_int(in, "n", 0) + 1)));
}

/* both deadline modes: a chain of 3 bumps 3 times, lastUpdated on the wall clock, the
   input unchanged */
static void test_runtime_bump(void) {
    int mode;
    for (mode = 0; mode < 2; mode++) {
        am2z_local_desc rd;
        am2z_processor_desc pd;
        am2z_chain_desc cd;
        am2z_processor *steps[3];
        am2z_runtime *rt;
        am2z_state *in = am2z_state_parse("default", "{\"n\":0}", AM2Z_NTS, NULL);
        int64_t before, after, v0 = am2z_state_version(in);
        am2z_outcome o;
        int i;
        memset(&rd, 0, sizeof rd);
        rd.deadlines = mode ? AM2Z_DEADLINES_COOPERATIVE : AM2Z_DEADLINES_EXACT;
        rt = am2z_local_runtime_new(&rd, NULL);
        for (i = 0; i < 3; i++) {
            char name[16];
            snprintf(name, sizeof name, "s%d", i);
            memset(&pd, 0, sizeof pd);
            pd.name = name;
            pd.fn = add1;
            steps[i] = am2z_processor_new(&pd, NULL);
        }
        memset(&cd, 0, sizeof cd);
        cd.name = "c3";
        cd.steps = steps;
        cd.count = 3;
        CHECK_INT(am2z_runtime_register(rt, am2z_chain_new(&cd, NULL)), AM2Z_STATUS_OK);
        before = am2z_now_ms();
        o = am2z_runtime_execute(rt, "c3", in);
        after = am2z_now_ms();
        CHECK(o.error == NULL);
        CHECK_INT(am2z_value_get_int(o.state, "n", -1), 3);
        CHECK_INT(am2z_state_version(o.state), v0 + 4); /* 3 steps and the chain */
        CHECK_INT(am2z_state_version(in), v0);
        CHECK_INT(am2z_value_get_int(in, "n", -1), 0);
        /* the runtime's wall clock is anchored at its start: within a millisecond */
        CHECK(am2z_state_last_updated(o.state) >= before - 1 && am2z_state_last_updated(o.state) <= after + 1);
        am2z_outcome_clear(&o);
        am2z_value_release(in);
        am2z_runtime_free(rt);
    }
}
#endif

int main(void) {
    T_RUN(test_canonical_shared);
    T_RUN(test_other_layouts);
#ifndef AM2Z_NO_THREADS
    T_RUN(test_runtime_bump);
#endif
    return t_done();
}
