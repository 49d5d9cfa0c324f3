/* bench_json.c - cost of am2z values and states, each next to a baseline measured in
   the same run:
     1. allocations to build a 5-field state    vs a node-per-value tree (one malloc
                                                   per node and per key, as tree JSON
                                                   libraries do)
     2. edit one field of a 20-field state      vs copying a 20-field C struct and
        (shared: copy-on-write; sole owner:        assigning one field
        in place), ns and allocations
     3. parse + write of a ~1 KB state, MB/s    vs memcpy of the same text
   Build: make bench (or cc -O2 -I. bench/bench_json.c -lm -pthread). */
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t n_alloc;
static void *count_alloc(size_t n, void *ud) { (void)ud; n_alloc++; return malloc(n); }
static void *count_realloc(void *p, size_t n, void *ud) { (void)ud; n_alloc++; return realloc(p, n); }
static void count_free(void *p, void *ud) { (void)ud; free(p); }

static volatile uint64_t sink;

/* ---- baseline 1: a tree with one node per value and a copied key per member ---- */
typedef struct tnode {
    int type;
    char *key;
    int64_t i;
    char *s;
    struct tnode *child, *next;
} tnode;
static tnode *tnew(int type) {
    tnode *n = (tnode *)calloc(1, sizeof *n);
    n_alloc++;
    n->type = type;
    return n;
}
static char *tstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)malloc(n);
    n_alloc++;
    memcpy(d, s, n);
    return d;
}
static void tadd(tnode *obj, const char *key, tnode *v) {
    tnode **p = &obj->child;
    while (*p) p = &(*p)->next;
    v->key = tstrdup(key);
    *p = v;
}
static tnode *tint(int64_t i) {
    tnode *n = tnew(1);
    n->i = i;
    return n;
}
static void tfree(tnode *n) {
    while (n) {
        tnode *next = n->next;
        tfree(n->child);
        free(n->key);
        free(n->s);
        free(n);
        n = next;
    }
}
static tnode *tree_state(void) {
    tnode *s = tnew(0), *m = tnew(0), *sid = tnew(2);
    sid->s = tstrdup("session-42");
    tadd(m, "version", tint(1));
    tadd(m, "sessionId", sid);
    tadd(m, "createdAt", tint(1795625716543));
    tadd(m, "lastUpdated", tint(1795625716543));
    tadd(s, "metadata", m);
    tadd(s, "orderId", tint(1001));
    tadd(s, "qty", tint(2));
    tadd(s, "paid", tint(0));
    tadd(s, "total", tint(4999));
    tadd(s, "notes", tnew(3));
    return s;
}
static am2z_state *am2z_state5(void) {
    am2z_value *d = am2z_value_set(am2z_value_object(), "orderId", am2z_value_int(1001));
    d = am2z_value_set(d, "qty", am2z_value_int(2));
    d = am2z_value_set(d, "paid", am2z_value_bool(0));
    d = am2z_value_set(d, "total", am2z_value_int(4999));
    d = am2z_value_set(d, "notes", am2z_value_null());
    return am2z_state_new("session-42", d, NULL);
}

/* ---- baseline 2: a plain struct of 20 fields ---- */
typedef struct rec20 { int64_t f[20]; } rec20;

int main(void) {
    am2z_allocator counting = {count_alloc, count_realloc, count_free, NULL};
    size_t a_am2z, a_tree, i, iters;
    int64_t t0, t1;
    double ns_cow, ns_inplace, ns_struct, allocs_cow, allocs_inplace;

    /* 1. allocations to build a 5-field state */
    am2z_set_allocator(&counting);
    n_alloc = 0;
    {
        am2z_state *s = am2z_state5();
        a_am2z = n_alloc;
        am2z_value_release(s);
    }
    am2z_set_allocator(NULL);
    n_alloc = 0;
    {
        tnode *t = tree_state();
        a_tree = n_alloc;
        tfree(t);
    }
    printf("build a 5-field state:      %3lu allocations   node-per-value tree: %3lu   ratio %.2f\n",
           (unsigned long)a_am2z, (unsigned long)a_tree, (double)a_am2z / (double)a_tree);

    /* 2. edit one field of a 20-field state */
    {
        am2z_value *d = am2z_value_object();
        am2z_state *s, *e;
        char key[32];
        rec20 r, copy;
        int k;
        for (k = 0; k < 20; k++) {
            snprintf(key, sizeof key, "field%02d", k);
            d = am2z_value_set(d, key, k % 2 ? am2z_value_stringf("value number %d", k) : am2z_value_int(k));
        }
        s = am2z_state_new("bench", d, NULL);
        iters = 2000000;
        am2z_set_allocator(&counting);
        n_alloc = 0;
        t0 = am2z_monotonic_ns();
        for (i = 0; i < iters; i++) { /* s stays shared: each edit copies the top object */
            e = am2z_value_set(am2z_value_retain(s), "field07", am2z_value_int((int64_t)i));
            sink += (uint64_t)am2z_value_len(e);
            am2z_value_release(e);
        }
        t1 = am2z_monotonic_ns();
        ns_cow = (double)(t1 - t0) / (double)iters;
        allocs_cow = (double)n_alloc / (double)iters;
        n_alloc = 0;
        e = am2z_value_set(am2z_value_retain(s), "field07", am2z_value_int(0));
        n_alloc = 0;
        t0 = am2z_monotonic_ns();
        for (i = 0; i < iters; i++) { /* sole owner: in place */
            e = am2z_value_set(e, "field07", am2z_value_int((int64_t)i));
        }
        t1 = am2z_monotonic_ns();
        sink += (uint64_t)am2z_value_get_int(e, "field07", 0);
        ns_inplace = (double)(t1 - t0) / (double)iters;
        allocs_inplace = (double)n_alloc / (double)iters;
        am2z_set_allocator(NULL);
        am2z_value_release(e);
        am2z_value_release(s);
        for (k = 0; k < 20; k++) r.f[k] = k;
        t0 = am2z_monotonic_ns();
        for (i = 0; i < iters; i++) {
            copy = r;
            copy.f[7] = (int64_t)i;
            sink += (uint64_t)copy.f[(i & 15)];
            r.f[i & 15] ^= 1; /* keep the copy from being hoisted out of the loop */
        }
        t1 = am2z_monotonic_ns();
        ns_struct = (double)(t1 - t0) / (double)iters;
        printf("edit 1 of 20 fields, shared: %6.1f ns, %.2f allocations   struct copy+assign: %5.1f ns   ratio %.1f\n",
               ns_cow, allocs_cow, ns_struct, ns_cow / ns_struct);
        printf("edit 1 of 20 fields, owned:  %6.1f ns, %.2f allocations   struct copy+assign: %5.1f ns   ratio %.1f\n",
               ns_inplace, allocs_inplace, ns_struct, ns_inplace / ns_struct);
    }

    /* 3. parse + write a ~1 KB state */
    {
        const char *text =
            "{\"metadata\":{\"version\":12,\"sessionId\":\"session-7f3a9c\",\"createdAt\":1795625716543,"
            "\"lastUpdated\":1795625719876},\"order\":{\"id\":\"ORD-2024-000193\",\"customer\":{\"id\":48213,"
            "\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\",\"tier\":\"gold\"},\"items\":["
            "{\"sku\":\"A-100\",\"name\":\"Widget\",\"qty\":2,\"price\":19.99},"
            "{\"sku\":\"B-220\",\"name\":\"Gadget \\u00e9l\\u00e9gant\",\"qty\":1,\"price\":149.5},"
            "{\"sku\":\"C-310\",\"name\":\"Doohickey\",\"qty\":12,\"price\":0.35}],"
            "\"shipping\":{\"method\":\"express\",\"cost\":12.5,\"address\":{\"street\":\"12 Analytical Row\","
            "\"city\":\"London\",\"zip\":\"NW1 6XE\",\"country\":\"GB\"}},\"discount\":null,\"paid\":true},"
            "\"validation\":{\"passed\":true,\"checks\":[\"stock\",\"fraud\",\"address\"],\"score\":0.982},"
            "\"audit\":[{\"at\":1795625716600,\"step\":\"validate\",\"ok\":true},"
            "{\"at\":1795625717100,\"step\":\"price\",\"ok\":true},"
            "{\"at\":1795625719800,\"step\":\"charge\",\"ok\":true,\"ref\":\"ch_3NfG2k\"}],"
            "\"tags\":[\"priority\",\"repeat-customer\",\"eu\"],\"notes\":\"Leave at the door; ring twice.\"}";
        size_t len = strlen(text), n, total = 0;
        char *copybuf = (char *)malloc(len + 1);
        double mbs_am2z, mbs_memcpy, secs;
        iters = 100000;
        t0 = am2z_monotonic_ns();
        for (i = 0; i < iters; i++) {
            am2z_value *v = am2z_json_parse(text, len, NULL, NULL);
            char *out = am2z_json_write(v, 0, &n);
            total += n;
            am2z_free(out);
            am2z_value_release(v);
        }
        t1 = am2z_monotonic_ns();
        secs = (double)(t1 - t0) / 1e9;
        mbs_am2z = (double)len * (double)iters / secs / 1e6;
        sink += total;
        t0 = am2z_monotonic_ns();
        for (i = 0; i < iters * 20; i++) {
            memcpy(copybuf, text, len + 1);
            copybuf[i % len] ^= 1;
            sink += (uint64_t)copybuf[(i * 7) % len];
        }
        t1 = am2z_monotonic_ns();
        secs = (double)(t1 - t0) / 1e9;
        mbs_memcpy = (double)len * (double)(iters * 20) / secs / 1e6;
        printf("parse+write a %lu-byte state: %7.1f MB/s   memcpy: %8.1f MB/s   ratio %.3f\n",
               (unsigned long)len, mbs_am2z, mbs_memcpy, mbs_am2z / mbs_memcpy);
        free(copybuf);
    }
    return sink == 42 ? 1 : 0;
}
