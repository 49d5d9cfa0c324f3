/* SHA-256: every vector of tests/data/sha256_vectors.txt, one-shot and in odd-sized
   chunks, with each block function this CPU can run: portable C and SHA-NI. */
#include "../am2z_resp.h"
#include "t.h"

typedef struct vec {
    size_t len;
    unsigned char *msg;
    char md[65];
} vec;

static vec *vecs;
static size_t nvecs;
static char million_md[65];

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static FILE *open_data(const char *name) {
    char path[512];
    const char *slash = strrchr(__FILE__, '/');
    FILE *f;
    snprintf(path, sizeof path, "tests/data/%s", name);
    if ((f = fopen(path, "r")) != NULL) return f;
    /* Run from elsewhere: look next to this source file. */
    snprintf(path, sizeof path, "%.*sdata/%s", slash ? (int)(slash - __FILE__ + 1) : 0, __FILE__, name);
    return fopen(path, "r");
}

/* Reads "Len = n / Msg = hex / MD = hex" records and the MD_MILLION_A line. */
static int load_vectors(void) {
    static char line[300000];
    FILE *f = open_data("sha256_vectors.txt");
    size_t cap = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        size_t n = strcspn(line, "\r\n");
        line[n] = '\0';
        if (strncmp(line, "Len = ", 6) == 0) {
            if (nvecs == cap) {
                cap = cap ? cap * 2 : 64;
                vecs = (vec *)realloc(vecs, cap * sizeof *vecs);
                if (!vecs) return 0;
            }
            memset(&vecs[nvecs], 0, sizeof vecs[nvecs]);
            vecs[nvecs++].len = (size_t)strtoul(line + 6, NULL, 10);
        } else if (strncmp(line, "Msg = ", 6) == 0 && nvecs) {
            vec *v = &vecs[nvecs - 1];
            size_t i;
            if (strlen(line + 6) != 2 * v->len) return 0;
            v->msg = (unsigned char *)malloc(v->len + 1);
            for (i = 0; i < v->len; i++)
                v->msg[i] = (unsigned char)(hexval(line[6 + 2 * i]) * 16 + hexval(line[7 + 2 * i]));
        } else if (strncmp(line, "MD = ", 5) == 0 && nvecs) {
            snprintf(vecs[nvecs - 1].md, 65, "%.64s", line + 5);
        } else if (strncmp(line, "MD_MILLION_A = ", 15) == 0) {
            snprintf(million_md, sizeof million_md, "%.64s", line + 15);
        }
    }
    fclose(f);
    return 1;
}

static void chunked_hex(const unsigned char *msg, size_t len, const size_t *steps, size_t nsteps,
                        char hex[65]) {
    am2z_sha256_ctx c;
    unsigned char d[AM2Z_SHA256_SIZE];
    size_t off = 0, k = 0;
    am2z_sha256_init(&c);
    while (off < len) {
        size_t n = steps[k++ % nsteps];
        if (n > len - off) n = len - off;
        am2z_sha256_update(&c, msg + off, n);
        off += n;
    }
    am2z_sha256_final(&c, d);
    am2z_sha256_to_hex(d, hex);
}

static void check_all_vectors(void) {
    static const size_t odd[] = {1, 3, 7, 13, 63, 65, 127, 2, 64, 129};
    static const size_t one[] = {1};
    size_t i;
    CHECK(nvecs >= 300);
    for (i = 0; i < nvecs; i++) {
        char hex[65];
        const unsigned char *msg = vecs[i].msg ? vecs[i].msg : (const unsigned char *)"";
        am2z_sha256_hex(msg, vecs[i].len, hex);
        if (strcmp(hex, vecs[i].md) != 0) T_FAIL_("one-shot, len %zu: %s != %s", vecs[i].len, hex, vecs[i].md);
        chunked_hex(msg, vecs[i].len, odd, sizeof odd / sizeof odd[0], hex);
        if (strcmp(hex, vecs[i].md) != 0) T_FAIL_("odd chunks, len %zu: %s != %s", vecs[i].len, hex, vecs[i].md);
        if (vecs[i].len <= 4097) {
            chunked_hex(msg, vecs[i].len, one, 1, hex);
            if (strcmp(hex, vecs[i].md) != 0) T_FAIL_("byte by byte, len %zu", vecs[i].len);
        }
    }
}

static void check_million_a(void) {
    static const size_t odd[] = {999, 1, 4093, 61};
    unsigned char *a = (unsigned char *)malloc(1000000);
    char hex[65];
    CHECK(a != NULL);
    if (!a) return;
    memset(a, 'a', 1000000);
    CHECK_INT(strlen(million_md), 64);
    am2z_sha256_hex(a, 1000000, hex);
    CHECK_STR(hex, million_md);
    chunked_hex(a, 1000000, odd, 4, hex);
    CHECK_STR(hex, million_md);
    CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

static void test_portable_vectors(void) {
    CHECK_INT(am2z_sha256_select(AM2Z_SHA256_PORTABLE), AM2Z_STATUS_OK);
    CHECK_INT(am2z_sha256_active(), AM2Z_SHA256_PORTABLE);
    check_all_vectors();
    check_million_a();
    CHECK_INT(am2z_sha256_select(AM2Z_SHA256_AUTO), AM2Z_STATUS_OK);
}

static void test_shani_vectors(void) {
    if (am2z_sha256_select(AM2Z_SHA256_SHANI) != AM2Z_STATUS_OK) {
        if (strcmp(am2z_status_detail(), "sha256: the CPU or the build has no SHA extensions") != 0)
            T_FAIL_("SHA-NI refused without its reason: \"%s\"", am2z_status_detail());
        else
            T_SKIP("this CPU or build has no SHA extensions: the SHA-NI path was not tested");
        return;
    }
    CHECK_INT(am2z_sha256_active(), AM2Z_SHA256_SHANI);
    check_all_vectors();
    check_million_a();
    CHECK_INT(am2z_sha256_select(AM2Z_SHA256_AUTO), AM2Z_STATUS_OK);
}

/* Every available path agrees with the portable one on pseudo-random data of every
   length up to 1100 bytes, from varying alignments. */
static void test_paths_agree(void) {
    static const am2z_sha256_impl others[] = {AM2Z_SHA256_SHANI};
    unsigned char buf[1200];
    uint32_t x = 12345;
    size_t len, i, k, compared = 0;
    for (i = 0; i < sizeof buf; i++) { x = x * 1103515245u + 12345u; buf[i] = (unsigned char)(x >> 16); }
    for (k = 0; k < sizeof others / sizeof others[0]; k++) {
        if (am2z_sha256_select(others[k]) != AM2Z_STATUS_OK) continue;
        compared++;
        for (len = 0; len <= 1100; len++) {
            unsigned char d1[32], d2[32];
            const unsigned char *p = buf + (len % 8);
            am2z_sha256_select(others[k]);
            am2z_sha256(p, len, d1);
            am2z_sha256_select(AM2Z_SHA256_PORTABLE);
            am2z_sha256(p, len, d2);
            if (memcmp(d1, d2, 32) != 0) T_FAIL_("path %d disagrees at len %zu", (int)others[k], len);
        }
    }
    am2z_sha256_select(AM2Z_SHA256_AUTO);
    if (!compared) T_SKIP("only the portable path exists here: nothing to compare");
}

static void test_context_reuse_and_select(void) {
    am2z_sha256_ctx c;
    unsigned char d[32];
    char hex[65];
    am2z_sha256_init(&c);
    am2z_sha256_update(&c, "ab", 2);
    am2z_sha256_update(&c, NULL, 0);
    am2z_sha256_update(&c, "c", 1);
    am2z_sha256_final(&c, d);
    am2z_sha256_to_hex(d, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* final leaves the context ready for a new message */
    am2z_sha256_final(&c, d);
    am2z_sha256_to_hex(d, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK_INT(am2z_sha256_select((am2z_sha256_impl)42), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "sha256: no implementation 42");
    CHECK_INT(am2z_sha256_select(AM2Z_SHA256_AUTO), AM2Z_STATUS_OK);
    CHECK(am2z_sha256_active() != AM2Z_SHA256_AUTO);
    /* AUTO takes the fastest available */
    if (am2z_sha256_select(AM2Z_SHA256_SHANI) == AM2Z_STATUS_OK) {
        am2z_sha256_select(AM2Z_SHA256_AUTO);
        CHECK_INT(am2z_sha256_active(), AM2Z_SHA256_SHANI);
    }
}

int main(void) {
    size_t i;
    if (!load_vectors()) {
        fprintf(stderr, "cannot read tests/data/sha256_vectors.txt\n");
        return 1;
    }
    T_RUN(test_portable_vectors);
    T_RUN(test_shani_vectors);
    T_RUN(test_paths_agree);
    T_RUN(test_context_reuse_and_select);
    for (i = 0; i < nvecs; i++) free(vecs[i].msg);
    free(vecs);
    return t_done();
}
