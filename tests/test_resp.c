/* RESP reader and writer: every reader rule, limit and type, truncation at every byte
   offset, the writer's encoding and its injection-proof format, allocation counts. */
#include "../am2z_resp.h"
#include "t.h"
#include <math.h>

/* ---- helpers ---- */

/* A compact text form of a reply tree, for comparisons. */
static void dump_to(const am2z_reply *r, char *out, size_t cap) {
    size_t n = strlen(out), i;
    const char *sep = "";
    if (n + 64 >= cap) return;
    switch (r->type) {
    case AM2Z_REPLY_NONE: snprintf(out + n, cap - n, "none"); break;
    case AM2Z_REPLY_STRING: snprintf(out + n, cap - n, "+%s", am2z_reply_str(r)); break;
    case AM2Z_REPLY_ERROR: snprintf(out + n, cap - n, "-%s", am2z_reply_str(r)); break;
    case AM2Z_REPLY_INTEGER: snprintf(out + n, cap - n, ":%lld", (long long)r->integer); break;
    case AM2Z_REPLY_BULK: snprintf(out + n, cap - n, "$%zu:%.*s", r->len, (int)(r->len > 40 ? 40 : r->len), am2z_reply_str(r)); break;
    case AM2Z_REPLY_NIL: snprintf(out + n, cap - n, "nil"); break;
    case AM2Z_REPLY_DOUBLE: snprintf(out + n, cap - n, ",%g", r->number); break;
    case AM2Z_REPLY_BOOL: snprintf(out + n, cap - n, "#%s", r->integer ? "t" : "f"); break;
    case AM2Z_REPLY_BIGNUM: snprintf(out + n, cap - n, "(%s", am2z_reply_str(r)); break;
    case AM2Z_REPLY_VERBATIM: snprintf(out + n, cap - n, "=%s:%s", r->format, am2z_reply_str(r)); break;
    default: {
        const char *open = r->type == AM2Z_REPLY_ARRAY ? "[" : r->type == AM2Z_REPLY_MAP ? "{"
                         : r->type == AM2Z_REPLY_SET ? "~(" : ">(";
        snprintf(out + n, cap - n, "%s", open);
        for (i = 0; i < r->len; i++) {
            snprintf(out + strlen(out), cap - strlen(out), "%s", sep);
            dump_to(&r->element[i], out, cap);
            sep = r->type == AM2Z_REPLY_MAP && i % 2 == 0 ? "=" : ",";
        }
        snprintf(out + strlen(out), cap - strlen(out), "%s", r->type == AM2Z_REPLY_ARRAY ? "]" :
                 r->type == AM2Z_REPLY_MAP ? "}" : ")");
    }
    }
}

static const char *dump(const am2z_reply *r) {
    static char buf[4096];
    buf[0] = '\0';
    dump_to(r, buf, sizeof buf);
    return buf;
}

/* Parses one complete reply from bytes fed in one go; returns its dump or an error text. */
static const char *parse1(const char *bytes, size_t len, const am2z_resp_limits *lim) {
    static char out[4096];
    am2z_resp_reader *rd = am2z_resp_reader_new(lim, NULL);
    am2z_reply r = {0};
    am2z_status st;
    if (!rd) return "no memory";
    if (am2z_resp_reader_feed(rd, bytes, len) != AM2Z_STATUS_OK) {
        snprintf(out, sizeof out, "feed error: %s", am2z_status_detail());
    } else if ((st = am2z_resp_reader_next(rd, &r)) == AM2Z_STATUS_OK) {
        snprintf(out, sizeof out, "%s", dump(&r));
    } else if (st == AM2Z_STATUS_NEED_MORE) {
        snprintf(out, sizeof out, "more");
    } else {
        snprintf(out, sizeof out, "error %s @%zu: %s", am2z_status_string(st), am2z_status_offset(), am2z_status_detail());
    }
    am2z_reply_clear(&r);
    am2z_resp_reader_free(rd);
    return out;
}
#define P(s) parse1((s), sizeof(s) - 1, NULL)

/* The failure parsing s gives (OK if it parses or needs more); its reason and offset
   stay in am2z_status_detail() / am2z_status_offset(). */
static am2z_status perr(const char *s, size_t len, const am2z_resp_limits *lim) {
    am2z_resp_reader *rd = am2z_resp_reader_new(lim, NULL);
    am2z_reply r = {0};
    am2z_status st = am2z_resp_reader_feed(rd, s, len);
    while (st == AM2Z_STATUS_OK) st = am2z_resp_reader_next(rd, &r);
    am2z_reply_clear(&r);
    am2z_resp_reader_free(rd);
    return st == AM2Z_STATUS_NEED_MORE ? AM2Z_STATUS_OK : st;
}
/* A failure with this status, reason and stream offset. */
#define CHECK_FAIL(expr, st, detail, offset) do { CHECK_INT((expr), (st)); \
    CHECK_STR(am2z_status_detail(), (detail)); CHECK_INT(am2z_status_offset(), (offset)); } while (0)
#define PERR(s) perr((s), sizeof(s) - 1, NULL)
#define PERRL(s, lim) perr((s), sizeof(s) - 1, (lim))
#define PARSEL(s, lim) parse1((s), sizeof(s) - 1, (lim))
#define FEED(rd, lit) am2z_resp_reader_feed((rd), (lit), sizeof(lit) - 1)

/* ---- counting allocator ---- */
static size_t n_allocs, n_bytes;
static void *count_alloc(size_t n, void *u) { (void)u; n_allocs++; n_bytes += n; return malloc(n); }
static void *count_realloc(void *p, size_t n, void *u) { (void)u; n_allocs++; n_bytes += n; return realloc(p, n); }
static void count_free(void *p, void *u) { (void)u; free(p); }
static void counting_on(void) {
    am2z_allocator a;
    a.alloc_fn = count_alloc; a.realloc_fn = count_realloc; a.free_fn = count_free; a.user_data = NULL;
    am2z_set_allocator(&a);
    n_allocs = n_bytes = 0;
}
static void counting_off(void) { am2z_set_allocator(NULL); }

/* ---- reader: types ---- */

static void test_resp2_types(void) {
    CHECK_STR(P("+OK\r\n"), "+OK");
    CHECK_STR(P("+\r\n"), "+");
    CHECK_STR(P("-ERR unknown command 'FOO'\r\n"), "-ERR unknown command 'FOO'");
    CHECK_STR(P(":0\r\n"), ":0");
    CHECK_STR(P(":-42\r\n"), ":-42");
    CHECK_STR(P(":9223372036854775807\r\n"), ":9223372036854775807");
    CHECK_STR(P(":-9223372036854775808\r\n"), ":-9223372036854775808");
    CHECK_STR(P("$5\r\nhello\r\n"), "$5:hello");
    CHECK_STR(P("$0\r\n\r\n"), "$0:");
    CHECK_STR(P("$-1\r\n"), "nil");
    CHECK_STR(P("*-1\r\n"), "nil");
    CHECK_STR(P("*0\r\n"), "[]");
    CHECK_STR(P("*3\r\n:1\r\n$1\r\nx\r\n*2\r\n+a\r\n$-1\r\n"), "[:1,$1:x,[+a,nil]]");
    {
        /* binary payload with NUL and CR LF inside, longer than the inline storage */
        static const char msg[] = "$40\r\n\r\n\0abc\r\n01234567890123456789012345678901\r\n";
        am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
        am2z_reply r = {0};
        CHECK_INT(am2z_resp_reader_feed(rd, msg, sizeof msg - 1), AM2Z_STATUS_OK);
        CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
        CHECK_INT(r.type, AM2Z_REPLY_BULK);
        CHECK_INT(r.len, 40);
        if (r.len == 40) {
            CHECK(memcmp(am2z_reply_str(&r), "\r\n\0abc\r\n0123", 12) == 0);
            CHECK_INT(am2z_reply_str(&r)[40], 0);
        }
        am2z_reply_clear(&r);
        am2z_resp_reader_free(rd);
    }
}

static void test_resp3_types(void) {
    CHECK_STR(P("_\r\n"), "nil");
    CHECK_STR(P(",1.5\r\n"), ",1.5");
    CHECK_STR(P(",-2.5e3\r\n"), ",-2500");
    CHECK_STR(P(",10\r\n"), ",10");
    CHECK_STR(P(",inf\r\n"), ",inf");
    CHECK_STR(P(",-inf\r\n"), ",-inf");
    CHECK_STR(P("#t\r\n"), "#t");
    CHECK_STR(P("#f\r\n"), "#f");
    CHECK_STR(P("(3492890328409238509324850943850943825024385\r\n"), "(3492890328409238509324850943850943825024385");
    CHECK_STR(P("(-12\r\n"), "(-12");
    CHECK_STR(P("=15\r\ntxt:Some string\r\n"), "=txt:Some string");
    CHECK_STR(P("=4\r\nmkd:\r\n"), "=mkd:");
    CHECK_STR(P("%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n"), "{+first=:1,+second=:2}");
    CHECK_STR(P("~3\r\n+a\r\n+b\r\n#t\r\n"), "~(+a,+b,#t)");
    CHECK_STR(P(">3\r\n+message\r\n+chan\r\n$2\r\nhi\r\n"), ">(+message,+chan,$2:hi)");
    CHECK_STR(P("!21\r\nSYNTAX invalid syntax\r\n"), "-SYNTAX invalid syntax");
    CHECK_STR(P("%0\r\n"), "{}");
    CHECK_STR(P("~0\r\n"), "~()");
    /* attributes are parsed and dropped: at the top and inside an aggregate */
    CHECK_STR(P("|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n"),
              "[:2039123,:9543892]");
    CHECK_STR(P("*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:2\r\n"), "[:1,:2]");
    CHECK_STR(P("|0\r\n:7\r\n"), ":7");
    {
        am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
        am2z_reply r = {0};
        FEED(rd, ",nan\r\n,3.25\r\n");
        CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
        CHECK(r.type == AM2Z_REPLY_DOUBLE && r.number != r.number);
        CHECK_STR(am2z_reply_str(&r), "nan");
        am2z_reply_clear(&r);
        CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
        CHECK_DBL(r.number, 3.25, 0);
        CHECK_STR(am2z_reply_str(&r), "3.25");
        am2z_reply_clear(&r);
        am2z_resp_reader_free(rd);
    }
}

/* ---- reader: rules ---- */

static void test_bad_integers(void) {
    static const char *bad[] = {":\r\n", ":+5\r\n", ": 5\r\n", ":5 \r\n", ":5a\r\n", ":--5\r\n", ":-\r\n",
                                ":9223372036854775808\r\n", ":-9223372036854775809\r\n", ":1.0\r\n",
                                ":0x10\r\n", ":99999999999999999999\r\n", "$\r\n", "$abc\r\n", "*1x\r\n",
                                "$+1\r\nx\r\n", "*\r\n", "%-\r\n", ":123456789012345678901234567890"};
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        am2z_status e = perr(bad[i], strlen(bad[i]), NULL);
        if (e != AM2Z_STATUS_PROTOCOL) T_FAIL_("%s: error %d, expected protocol error", bad[i], (int)e);
    }
}

static void test_crlf_misuse(void) {
    CHECK_INT(PERR("+OK\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("+OK\rX\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("+O\rK\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("+O\nK\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR(":1\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR(":1\r\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("$3\r\nabcX\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("$3\r\nabc\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("$3\r\nabc\rX"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("$3\r\nabcd"), AM2Z_STATUS_PROTOCOL); /* found as soon as the byte arrives */
    CHECK_INT(PERR("$3\nabc\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("*1\r\n:1\n"), AM2Z_STATUS_PROTOCOL);
    /* a CR at the very end is not yet an error: the LF may follow */
    CHECK_STR(P("+OK\r"), "more");
    CHECK_STR(P("$3\r\nabc\r"), "more");
}

static void test_negative_lengths_and_bad_types(void) {
    CHECK_INT(PERR("$-2\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("*-2\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("$-9223372036854775808\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("!-1\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("=-1\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("%-1\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("~-1\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR(">-1\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("|-1\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("@foo\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("hello\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("$?\r\n;4\r\nHell\r\n;0\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("*?\r\n:1\r\n.\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR(",\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR(",abc\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR(", 1\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR(",0x10\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR(",1.5.5\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR(",infinity\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("#x\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("#tt\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("#\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("_x\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("(\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("(-\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("(12a\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("=3\r\nabc\r\n"), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(PERR("=5\r\ntxt-x\r\n"), AM2Z_STATUS_PROTOCOL);
}

static void test_error_reason_offset_sticky(void) {
    am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
    am2z_reply r = {0};
    CHECK_INT(FEED(rd, "+OK\r\n:12x\r\n+after\r\n"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
    am2z_reply_clear(&r);
    CHECK_FAIL(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_PROTOCOL, "resp: bad integer", 5);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_PROTOCOL);
    CHECK_INT(r.type, AM2Z_REPLY_NONE);
    /* sticky: the rest of the stream is not trusted; every call reports it again, even
       after another failure replaced the thread's detail */
    CHECK_INT(am2z_resp_reader_feed(NULL, "x", 1), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_FAIL(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_PROTOCOL, "resp: bad integer", 5);
    CHECK_INT(am2z_resp_reader_feed(NULL, "x", 1), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_FAIL(FEED(rd, "+x\r\n"), AM2Z_STATUS_PROTOCOL, "resp: bad integer", 5);
    /* reset starts over */
    am2z_resp_reader_reset(rd);
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_NEED_MORE);
    CHECK_INT(FEED(rd, "+again\r\n"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&r), "again");
    am2z_reply_clear(&r);
    /* the offset counts the whole stream, across buffer moves */
    CHECK_INT(FEED(rd, ":1\r\n"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
    CHECK_INT(FEED(rd, "*1\r\n$2\r\nabX"), AM2Z_STATUS_OK);
    CHECK_FAIL(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_PROTOCOL, "resp: string payload not followed by CR LF",
               19 + 8 + 4 + 10);
    am2z_resp_reader_free(rd);
}

/* v0.1 reported "need more" as a separate result type; now it is a status, and not a
   failure: it leaves the thread's last failure alone. */
static void test_need_more_is_a_status(void) {
    am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
    am2z_reply r = {0};
    CHECK_INT(am2z_resp_reader_feed(NULL, "x", 1), AM2Z_STATUS_INVALID_ARGUMENT); /* a known last failure */
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_NEED_MORE);
    CHECK_INT(FEED(rd, "$5\r\nhel"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_NEED_MORE);
    CHECK_INT(r.type, AM2Z_REPLY_NONE);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "resp: feed without a reader or data");
    CHECK_INT(am2z_status_offset(), AM2Z_NTS);
    CHECK_INT(FEED(rd, "lo\r\n"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&r), "hello");
    am2z_reply_clear(&r);
    am2z_resp_reader_free(rd);
}

/* Each failure names its cause, with numbers, and the offset of the line it is on. */
static void test_failure_details(void) {
    CHECK_FAIL(PERR("$-2\r\n"), AM2Z_STATUS_PROTOCOL, "resp: bulk length -2 is invalid", 0);
    CHECK_FAIL(PERR("+OK\r\n*-3\r\n"), AM2Z_STATUS_PROTOCOL, "resp: array count -3 is invalid", 5);
    CHECK_FAIL(PERR("%-1\r\n"), AM2Z_STATUS_PROTOCOL, "resp: map count -1 is invalid", 0);
    CHECK_FAIL(PERR("!x\r\n"), AM2Z_STATUS_PROTOCOL, "resp: bad blob error length", 0);
    CHECK_FAIL(PERR(":1\r\n@foo\r\n"), AM2Z_STATUS_PROTOCOL, "resp: unknown type byte 0x40", 4);
    CHECK_FAIL(PERR("+OK\r\n+O\nK\r\n"), AM2Z_STATUS_PROTOCOL, "resp: LF without CR", 7);
    CHECK_FAIL(PERR("+O\rK\r\n"), AM2Z_STATUS_PROTOCOL, "resp: CR without LF", 2);
    CHECK_FAIL(PERR("=5\r\ntxt-x\r\n"), AM2Z_STATUS_PROTOCOL, "resp: verbatim string without format", 4);
}

/* Valid messages covering every type; each prefix must ask for more and never fail. */
static const char *const corpus[] = {
    "+OK\r\n", "-ERR x\r\n", ":-123\r\n", "$5\r\nhello\r\n", "$0\r\n\r\n", "$-1\r\n", "*-1\r\n", "*0\r\n",
    "$40\r\n0123456789012345678901234567890123456789\r\n",
    "*3\r\n:1\r\n*2\r\n$3\r\nfoo\r\n+bar\r\n$-1\r\n",
    "_\r\n", ",3.14\r\n", ",-inf\r\n", "#t\r\n", "(123456789012345678901234567890\r\n",
    "=15\r\ntxt:Some string\r\n", "!10\r\nERR broken\r\n",
    "%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n~2\r\n#f\r\n_\r\n",
    ">2\r\n+pubsub\r\n$40\r\n0123456789012345678901234567890123456789\r\n",
    "|1\r\n+meta\r\n:1\r\n*2\r\n|1\r\n+x\r\n+y\r\n:5\r\n:6\r\n",
};

static void test_truncated_every_offset(void) {
    size_t c;
    for (c = 0; c < sizeof corpus / sizeof corpus[0]; c++) {
        const char *msg = corpus[c];
        size_t len = strlen(msg), k;
        char whole[4096];
        snprintf(whole, sizeof whole, "%s", parse1(msg, len, NULL));
        CHECK(whole[0] != 'e' && strcmp(whole, "more") != 0);
        for (k = 0; k < len; k++) {
            am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
            am2z_reply r = {0};
            am2z_status res;
            am2z_resp_reader_feed(rd, msg, k);
            res = am2z_resp_reader_next(rd, &r);
            if (res != AM2Z_STATUS_NEED_MORE) T_FAIL_("corpus %zu prefix %zu: outcome %d", c, k, (int)res);
            am2z_resp_reader_feed(rd, msg + k, len - k);
            res = am2z_resp_reader_next(rd, &r);
            if (res != AM2Z_STATUS_OK || strcmp(dump(&r), whole) != 0)
                T_FAIL_("corpus %zu split at %zu: %s vs %s", c, k, res == AM2Z_STATUS_OK ? dump(&r) : "-", whole);
            am2z_reply_clear(&r);
            CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_NEED_MORE);
            am2z_resp_reader_free(rd); /* also frees half-built trees of the MORE case */
        }
    }
}

/* The whole corpus as one stream, fed one byte at a time, then in one go. */
static void test_stream_byte_by_byte(void) {
    char stream[8192] = "";
    size_t c, i, len, got = 0;
    am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
    am2z_reply r = {0};
    for (c = 0; c < sizeof corpus / sizeof corpus[0]; c++) strcat(stream, corpus[c]);
    len = strlen(stream);
    for (i = 0; i < len; i++) {
        CHECK_INT(am2z_resp_reader_feed(rd, stream + i, 1), AM2Z_STATUS_OK);
        for (;;) {
            am2z_status res = am2z_resp_reader_next(rd, &r);
            if (res == AM2Z_STATUS_NEED_MORE) break;
            CHECK_INT(res, AM2Z_STATUS_OK);
            if (res != AM2Z_STATUS_OK) break;
            {
                char expect[4096];
                snprintf(expect, sizeof expect, "%s", dump(&r));
                CHECK_STR(expect, parse1(corpus[got], strlen(corpus[got]), NULL));
            }
            am2z_reply_clear(&r);
            got++;
        }
    }
    CHECK_INT(got, sizeof corpus / sizeof corpus[0]);
    am2z_resp_reader_feed(rd, stream, len);
    for (got = 0; am2z_resp_reader_next(rd, &r) == AM2Z_STATUS_OK; got++) am2z_reply_clear(&r);
    CHECK_INT(got, sizeof corpus / sizeof corpus[0]);
    am2z_resp_reader_free(rd);
}

/* ---- limits ---- */

static void test_depth_limit(void) {
    am2z_resp_limits lim = {3, 0, 0, 0};
    char deep[2048] = "";
    int i;
    CHECK_INT(PERRL("*1\r\n*1\r\n*1\r\n:1\r\n", &lim), AM2Z_STATUS_OK);
    CHECK_FAIL(PERRL("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: depth limit 3 exceeded", 12);
    CHECK_FAIL(PERRL("*1\r\n%1\r\n~1\r\n>1\r\n:1\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: depth limit 3 exceeded", 12);
    CHECK_STR(PARSEL("*1\r\n*1\r\n*1\r\n*0\r\n", &lim), "[[[[]]]]"); /* empty aggregates nest nothing */
    /* the compile-time default */
    CHECK_INT(AM2Z_RESP_MAX_DEPTH, 64);
    for (i = 0; i < AM2Z_RESP_MAX_DEPTH; i++) strcat(deep, "*1\r\n");
    strcat(deep, ":1\r\n");
    CHECK_INT(perr(deep, strlen(deep), NULL), AM2Z_STATUS_OK);
    deep[0] = '\0';
    for (i = 0; i <= AM2Z_RESP_MAX_DEPTH; i++) strcat(deep, "*1\r\n");
    CHECK_FAIL(perr(deep, strlen(deep), NULL), AM2Z_STATUS_LIMIT, "resp: depth limit 64 exceeded", 4 * 64);
}

static void test_element_limit(void) {
    am2z_resp_limits lim = {0, 4, 0, 0};
    char msg[64];
    CHECK_INT(PERRL("*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n", &lim), AM2Z_STATUS_OK);
    CHECK_FAIL(PERRL("*5\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: element limit 4 exceeded", 0);
    CHECK_FAIL(PERRL("~5\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: element limit 4 exceeded", 0);
    CHECK_FAIL(PERRL(">5\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: element limit 4 exceeded", 0);
    CHECK_INT(PERRL("%2\r\n", &lim), AM2Z_STATUS_OK);
    CHECK_FAIL(PERRL("%3\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: element limit 4 exceeded", 0); /* 6 entries */
    CHECK_FAIL(PERRL("|3\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: element limit 4 exceeded", 0);
    CHECK_FAIL(PERRL("*9223372036854775807\r\n", NULL), AM2Z_STATUS_LIMIT, "resp: element limit 16777216 exceeded", 0);
    CHECK_FAIL(PERRL("%9223372036854775807\r\n", NULL), AM2Z_STATUS_LIMIT, "resp: element limit 16777216 exceeded", 0);
    snprintf(msg, sizeof msg, "*%zu\r\n", (size_t)AM2Z_RESP_MAX_ELEMENTS + 1);
    CHECK_FAIL(perr(msg, strlen(msg), NULL), AM2Z_STATUS_LIMIT, "resp: element limit 16777216 exceeded", 0);
    snprintf(msg, sizeof msg, "*%zu\r\n", (size_t)AM2Z_RESP_MAX_ELEMENTS);
    CHECK_STR(parse1(msg, strlen(msg), NULL), "more");
}

static void test_bulk_limit(void) {
    am2z_resp_limits lim = {0, 0, 10, 0};
    char msg[64];
    CHECK_STR(PARSEL("$10\r\n0123456789\r\n", &lim), "$10:0123456789");
    CHECK_FAIL(PERRL("$11\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: bulk limit 10 exceeded", 0);
    CHECK_FAIL(PERRL("!11\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: bulk limit 10 exceeded", 0);
    CHECK_FAIL(PERRL("=11\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: bulk limit 10 exceeded", 0);
    /* simple lines obey the same limit, even before their end arrives */
    CHECK_INT(PERRL("+0123456789\r\n", &lim), AM2Z_STATUS_OK);
    CHECK_FAIL(PERRL("+0123456789A", &lim), AM2Z_STATUS_LIMIT, "resp: bulk limit 10 exceeded", 0);
    CHECK_FAIL(PERRL("-0123456789A\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: bulk limit 10 exceeded", 0);
    CHECK_FAIL(PERRL("(01234567890\r\n", &lim), AM2Z_STATUS_LIMIT, "resp: bulk limit 10 exceeded", 0);
    /* the compile-time default: 512 MiB, as Redis */
    CHECK_INT(AM2Z_RESP_MAX_BULK, 512 * 1024 * 1024);
    snprintf(msg, sizeof msg, "$%zu\r\n", (size_t)AM2Z_RESP_MAX_BULK + 1);
    CHECK_FAIL(perr(msg, strlen(msg), NULL), AM2Z_STATUS_LIMIT, "resp: bulk limit 536870912 exceeded", 0);
    snprintf(msg, sizeof msg, "$%zu\r\nab", (size_t)AM2Z_RESP_MAX_BULK);
    CHECK_STR(parse1(msg, strlen(msg), NULL), "more");
}

static void test_buffer_limit(void) {
    am2z_resp_limits lim = {0, 0, 0, 64};
    am2z_resp_reader *rd = am2z_resp_reader_new(&lim, NULL);
    char big[65];
    am2z_reply r = {0};
    memset(big, 'x', sizeof big);
    big[0] = '+';
    CHECK_INT(am2z_resp_reader_feed(rd, big, 40), AM2Z_STATUS_OK);
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_NEED_MORE);
    CHECK_INT(am2z_resp_reader_feed(rd, big + 1, 24), AM2Z_STATUS_OK); /* 64 bytes waiting */
    CHECK_FAIL(am2z_resp_reader_feed(rd, big + 1, 1), AM2Z_STATUS_LIMIT, "resp: buffer limit 64 exceeded", 64);
    CHECK_FAIL(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_LIMIT, "resp: buffer limit 64 exceeded", 64);
    am2z_resp_reader_free(rd);
    /* parsed bytes do not count: a long stream through a small buffer is fine */
    rd = am2z_resp_reader_new(&lim, NULL);
    {
        int i, n = 0;
        for (i = 0; i < 1000; i++) {
            CHECK_INT(FEED(rd, "$40\r\n0123456789012345678901234567890123456789\r\n"), AM2Z_STATUS_OK);
            while (am2z_resp_reader_next(rd, &r) == AM2Z_STATUS_OK) { n++; am2z_reply_clear(&r); }
        }
        CHECK_INT(n, 1000);
    }
    CHECK_FAIL(am2z_resp_reader_feed(rd, big, 65), AM2Z_STATUS_LIMIT, "resp: buffer limit 64 exceeded", 47 * 1000);
    am2z_resp_reader_free(rd);
    CHECK_INT(AM2Z_RESP_MAX_BUFFER, 64 * 1024 * 1024);
}

/* ---- memory ---- */

static void test_no_allocation_for_small_replies(void) {
    am2z_resp_reader *rd;
    am2z_reply r = {0};
    int i, n = 0;
    counting_on();
    rd = am2z_resp_reader_new(NULL, NULL);
    FEED(rd, "+warm\r\n"); /* the first feed allocates the buffer */
    am2z_resp_reader_next(rd, &r);
    n_allocs = 0;
    for (i = 0; i < 1000; i++) {
        static const char msgs[] = "+OK\r\n:12345\r\n$5\r\nhello\r\n_\r\n,1.5\r\n#t\r\n$-1\r\n+QUEUED\r\n-ERR short\r\n(12\r\n";
        CHECK_INT(am2z_resp_reader_feed(rd, msgs, sizeof msgs - 1), AM2Z_STATUS_OK);
        while (am2z_resp_reader_next(rd, &r) == AM2Z_STATUS_OK) { n++; am2z_reply_clear(&r); }
    }
    CHECK_INT(n, 10000);
    CHECK_INT(n_allocs, 0);
    /* a long string costs exactly one allocation */
    FEED(rd, "$40\r\n0123456789012345678901234567890123456789\r\n");
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
    CHECK_INT(n_allocs, 1);
    am2z_reply_clear(&r);
    am2z_resp_reader_free(rd);
    counting_off();
}

static void test_never_allocates_declared_sizes(void) {
    am2z_resp_reader *rd;
    am2z_reply r = {0};
    counting_on();
    rd = am2z_resp_reader_new(NULL, NULL);
    /* a 512 MiB string announced, 10 bytes sent */
    FEED(rd, "$536870912\r\n0123456789");
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_NEED_MORE);
    CHECK(n_bytes < 16384);
    am2z_resp_reader_reset(rd);
    /* 16M elements announced, 3 sent */
    n_bytes = 0;
    FEED(rd, "*16777216\r\n:1\r\n:2\r\n:3\r\n");
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_NEED_MORE);
    CHECK(n_bytes < 4096);
    /* a map of 8M pairs nested in arrays: the same */
    am2z_resp_reader_reset(rd);
    n_bytes = 0;
    FEED(rd, "*1000000\r\n*1000000\r\n%8388608\r\n+k\r\n");
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_NEED_MORE);
    CHECK(n_bytes < 4096);
    am2z_resp_reader_free(rd);
    counting_off();
}

static void test_big_aggregate_and_string_incremental(void) {
    /* 100,000 elements and a 1 MiB string fed in 777-byte pieces */
    size_t n = 100000, i, len = 0, off;
    size_t cap = n * 16 + (1 << 20) + 64;
    char *msg = (char *)malloc(cap);
    am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
    am2z_reply r = {0};
    am2z_status res = AM2Z_STATUS_NEED_MORE;
    len += (size_t)sprintf(msg + len, "*%zu\r\n", n + 1);
    for (i = 0; i < n; i++) len += (size_t)sprintf(msg + len, ":%zu\r\n", i);
    len += (size_t)sprintf(msg + len, "$%d\r\n", 1 << 20);
    memset(msg + len, 'z', 1 << 20);
    len += 1 << 20;
    memcpy(msg + len, "\r\n", 2);
    len += 2;
    for (off = 0; off < len && res == AM2Z_STATUS_NEED_MORE; off += 777) {
        am2z_resp_reader_feed(rd, msg + off, len - off < 777 ? len - off : 777);
        res = am2z_resp_reader_next(rd, &r);
    }
    CHECK_INT(res, AM2Z_STATUS_OK);
    CHECK_INT(off >= len, 1);
    CHECK_INT(r.len, n + 1);
    CHECK_INT(r.element[99999].integer, 99999);
    CHECK_INT(r.element[n].len, 1 << 20);
    CHECK_INT(am2z_reply_str(&r.element[n])[(1 << 20) - 1], 'z');
    CHECK(am2z_reply_at(&r, n + 1) == NULL);
    CHECK(am2z_reply_at(&r, 5)->integer == 5);
    am2z_reply_clear(&r);
    CHECK_INT(r.type, AM2Z_REPLY_NONE);
    am2z_resp_reader_free(rd);
    free(msg);
}

static void test_reply_helpers(void) {
    am2z_reply r = {0}, moved;
    am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
    CHECK_STR(am2z_reply_type_name(AM2Z_REPLY_BULK), "bulk");
    CHECK_STR(am2z_reply_type_name(AM2Z_REPLY_MAP), "map");
    CHECK_STR(am2z_reply_str(NULL), "");
    CHECK(am2z_reply_at(NULL, 0) == NULL);
    am2z_reply_clear(NULL);
    am2z_reply_clear(&r);
    {
        static const char msgs[] = ":5\r\n*2\r\n+short\r\n$33\r\n012345678901234567890123456789012\r\n";
        am2z_resp_reader_feed(rd, msgs, sizeof msgs - 1);
    }
    am2z_resp_reader_next(rd, &r);
    CHECK_STR(am2z_reply_str(&r), ""); /* integers have no text */
    CHECK(am2z_reply_at(&r, 0) == NULL);
    am2z_reply_clear(&r);
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
    /* a reply moves by assignment: no pointers into itself */
    moved = r;
    memset(&r, 0, sizeof r);
    CHECK_STR(am2z_reply_str(&moved.element[0]), "short");
    CHECK_STR(am2z_reply_str(&moved.element[1]), "012345678901234567890123456789012");
    am2z_reply_clear(&moved);
    am2z_resp_reader_free(rd);
    am2z_resp_reader_free(NULL);
    CHECK_INT(am2z_resp_reader_next(NULL, &r), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_resp_reader_feed(NULL, "x", 1), AM2Z_STATUS_INVALID_ARGUMENT);
}

/* ---- writer ---- */

/* Reads the command in b back with the reader and checks its arguments. */
static void check_args(const am2z_resp_buf *b, size_t argc, const char *const *argv, const size_t *lens) {
    am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
    am2z_reply r = {0};
    size_t i;
    am2z_resp_reader_feed(rd, b->data, b->len);
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
    CHECK_INT(r.type, AM2Z_REPLY_ARRAY);
    CHECK_INT(r.len, argc);
    for (i = 0; i < argc && i < r.len; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);
        CHECK_INT(r.element[i].type, AM2Z_REPLY_BULK);
        CHECK_INT(r.element[i].len, n);
        if (r.element[i].len == n && memcmp(am2z_reply_str(&r.element[i]), argv[i], n) != 0)
            T_FAIL_("argument %zu differs", i);
    }
    am2z_reply_clear(&r);
    CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_NEED_MORE); /* exactly one command */
    am2z_resp_reader_free(rd);
}

static void test_writer_argv(void) {
    am2z_resp_buf b = {NULL, 0, 0};
    const char *argv[] = {"SET", "key", "a\0b\r\nc"};
    size_t lens[] = {3, 3, 6};
    static const char expect[] = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$6\r\na\0b\r\nc\r\n";
    CHECK_INT(am2z_resp_append_argv(&b, 3, argv, lens), AM2Z_STATUS_OK);
    CHECK_INT(b.len, sizeof expect - 1);
    CHECK(memcmp(b.data, expect, sizeof expect - 1) == 0);
    b.len = 0;
    CHECK_INT(am2z_resp_append_argv(&b, 2, argv, NULL), AM2Z_STATUS_OK); /* strlen */
    CHECK_INT(b.len, 22);
    CHECK(memcmp(b.data, "*2\r\n$3\r\nSET\r\n$3\r\nkey\r\n", 22) == 0);
    b.len = 0;
    CHECK_INT(am2z_resp_append_argv(&b, 0, NULL, NULL), AM2Z_STATUS_OK);
    CHECK_INT(b.len, 4);
    CHECK(memcmp(b.data, "*0\r\n", 4) == 0);
    {
        const char *nul[] = {"GET", NULL};
        size_t len = b.len;
        CHECK_INT(am2z_resp_append_argv(&b, 2, nul, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK_INT(b.len, len);
        CHECK_INT(am2z_resp_append_argv(NULL, 0, NULL, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    }
    b.len = 0;
    {
        /* a large argument */
        size_t big = 100000;
        char *v = (char *)malloc(big);
        const char *a2[2];
        size_t l2[2];
        memset(v, 'q', big);
        a2[0] = "SET"; a2[1] = v; l2[0] = 3; l2[1] = big;
        CHECK_INT(am2z_resp_append_argv(&b, 2, a2, l2), AM2Z_STATUS_OK);
        check_args(&b, 2, a2, l2);
        free(v);
    }
    am2z_resp_buf_clear(&b);
    CHECK(b.data == NULL && b.len == 0);
}

/* am2z_resp_buf_clear (v0.1: _free, for a struct the caller owns) empties the buffer,
   which stays usable; (pointer, length) pairs take AM2Z_NTS for C strings. */
static void test_buf_clear_and_nts(void) {
    am2z_resp_buf b = {NULL, 0, 0};
    const char *argv[] = {"SET", "key", "a\0b"};
    size_t lens[] = {AM2Z_NTS, AM2Z_NTS, 3};
    static const char expect[] = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$3\r\na\0b\r\n";
    CHECK_INT(am2z_resp_append_argv(&b, 3, argv, lens), AM2Z_STATUS_OK);
    CHECK_INT(b.len, sizeof expect - 1);
    CHECK(b.len == sizeof expect - 1 && memcmp(b.data, expect, sizeof expect - 1) == 0);
    am2z_resp_buf_clear(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
    am2z_resp_buf_clear(&b); /* twice is fine, and NULL */
    am2z_resp_buf_clear(NULL);
    CHECK_INT(am2z_resp_append_fmt(&b, "SET %b %b", "key", AM2Z_NTS, "a\0b", (size_t)3), AM2Z_STATUS_OK);
    CHECK(b.len == sizeof expect - 1 && memcmp(b.data, expect, sizeof expect - 1) == 0);
    /* writer failures say why */
    CHECK_INT(am2z_resp_append_fmt(&b, "GET %q", 1), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "resp: unknown directive at byte 4 of the format \"GET %q\"");
    argv[1] = NULL;
    CHECK_INT(am2z_resp_append_argv(&b, 3, argv, lens), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "resp: argument 1 is NULL");
    CHECK_INT(b.len, sizeof expect - 1);
    am2z_resp_buf_clear(&b);
}

static void test_writer_format(void) {
    am2z_resp_buf b = {NULL, 0, 0};
    {
        const char *a[] = {"SET", "a b c", "x y"};
        CHECK_INT(am2z_resp_append_fmt(&b, "SET %s %s", "a b c", "x y"), AM2Z_STATUS_OK);
        check_args(&b, 3, a, NULL);
    }
    {
        /* injection attempts: the value stays one argument, byte for byte */
        const char *evil = "x\r\n*1\r\n$8\r\nFLUSHALL\r\n";
        const char *a[] = {"GET", "x\r\n*1\r\n$8\r\nFLUSHALL\r\n"};
        b.len = 0;
        CHECK_INT(am2z_resp_append_fmt(&b, "GET %s", evil), AM2Z_STATUS_OK);
        check_args(&b, 2, a, NULL);
    }
    {
        const char *a[] = {"GET", "%s %d"};
        b.len = 0;
        CHECK_INT(am2z_resp_append_fmt(&b, "GET %s", "%s %d"), AM2Z_STATUS_OK); /* no re-expansion */
        check_args(&b, 2, a, NULL);
    }
    {
        const char *a[] = {"HSET", "user:42:profile", "bin", "\0\r\n\0", ""};
        size_t l[] = {4, 15, 3, 4, 0};
        b.len = 0;
        CHECK_INT(am2z_resp_append_fmt(&b, "  HSET\tuser:%d:profile  %s %b %s  ", 42, "bin", "\0\r\n\0", (size_t)4, ""),
                  AM2Z_STATUS_OK);
        check_args(&b, 5, a, l);
    }
    {
        const char *a[] = {"X", "-7", "-8", "-9", "10", "11", "0.5", "100%", "1e+300", "a%b", "0.1",
                           "0.30000000000000004", "-inf"};
        /* the double nearest 0.1 + 0.2, as a literal: x87 (-m32) rounds that sum twice to 0.3 */
        b.len = 0;
        CHECK_INT(am2z_resp_append_fmt(&b, "X %d %ld %lld %u %zu %f 100%% %f a%%b %f %f %f", -7, -8L, -9LL, 10u,
                                       (size_t)11, 0.5, 1e300, 0.1, 0.30000000000000004, -HUGE_VAL),
                  AM2Z_STATUS_OK);
        check_args(&b, 13, a, NULL);
    }
    {
        const char *a[] = {"PING"};
        size_t before;
        b.len = 0;
        CHECK_INT(am2z_resp_append_fmt(&b, "PING"), AM2Z_STATUS_OK);
        check_args(&b, 1, a, NULL);
        before = b.len;
        CHECK_INT(am2z_resp_append_fmt(&b, "GET %x", 1), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK_INT(am2z_resp_append_fmt(&b, "GET %", 1), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK_INT(am2z_resp_append_fmt(&b, "GET %l", 1), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK_INT(am2z_resp_append_fmt(&b, "GET %s", (const char *)NULL), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK_INT(am2z_resp_append_fmt(&b, "SET a %b", (const void *)NULL, (size_t)3), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK_INT(b.len, before); /* failures leave the buffer as it was */
        CHECK_INT(am2z_resp_append_fmt(&b, "   "), AM2Z_STATUS_OK);
        CHECK_INT(b.len - before, 4); /* "*0\r\n" */
    }
    am2z_resp_buf_clear(&b);
}

/* Script names are the SHA-1 of the source (what Redis's SCRIPT LOAD answers). */
static void test_script_sha1(void) {
    char *million = (char *)malloc(1000000);
    am2z_redis_script *s;
    s = am2z_redis_script_new("abc", AM2Z_NTS, NULL);
    CHECK_STR(am2z_redis_script_sha(s), "a9993e364706816aba3e25717850c26c9cd0d89d");
    am2z_redis_script_free(s);
    s = am2z_redis_script_new("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", AM2Z_NTS, NULL);
    CHECK_STR(am2z_redis_script_sha(s), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    am2z_redis_script_free(s);
    s = am2z_redis_script_new("x", AM2Z_NTS, NULL);
    CHECK_STR(am2z_redis_script_sha(s), "11f6ad8ec52a2984abaafd7c3b516503785c2072");
    am2z_redis_script_free(s);
    if (million) {
        memset(million, 'a', 1000000);
        s = am2z_redis_script_new(million, 1000000, NULL);
        CHECK_STR(am2z_redis_script_sha(s), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
        am2z_redis_script_free(s);
        /* the padding boundaries: 55 bytes fit one block with the length, 56 need a
           second block, 64 fill one exactly (digests from Python's hashlib) */
        s = am2z_redis_script_new(million, 55, NULL);
        CHECK_STR(am2z_redis_script_sha(s), "c1c8bbdc22796e28c0e15163d20899b65621d65a");
        am2z_redis_script_free(s);
        s = am2z_redis_script_new(million, 56, NULL);
        CHECK_STR(am2z_redis_script_sha(s), "c2db330f6083854c99d4b5bfb6e8f29f201be699");
        am2z_redis_script_free(s);
        s = am2z_redis_script_new(million, 64, NULL);
        CHECK_STR(am2z_redis_script_sha(s), "0098ba824b5c16427bd7a1122a5a442a25ec644d");
        am2z_redis_script_free(s);
    }
    CHECK(am2z_redis_script_new(NULL, 0, NULL) == NULL);
    free(million);
}

/* Lengths are lengths: 0 is an empty script (v0.1 took it for strlen), a length shorter
   than the string hashes only that prefix, AM2Z_NTS takes strlen. */
static void test_script_lengths_and_status(void) {
    am2z_status st = AM2Z_STATUS_IO;
    am2z_redis_script *s = am2z_redis_script_new("abcdef", 0, &st);
    CHECK_INT(st, AM2Z_STATUS_OK);
    CHECK_STR(am2z_redis_script_sha(s), "da39a3ee5e6b4b0d3255bfef95601890afd80709"); /* SHA-1 of "" */
    am2z_redis_script_free(s);
    s = am2z_redis_script_new("abcdef", 3, NULL);
    CHECK_STR(am2z_redis_script_sha(s), "a9993e364706816aba3e25717850c26c9cd0d89d"); /* "abc" */
    am2z_redis_script_free(s);
    s = am2z_redis_script_new("abc", AM2Z_NTS, NULL);
    CHECK_STR(am2z_redis_script_sha(s), "a9993e364706816aba3e25717850c26c9cd0d89d");
    am2z_redis_script_free(s);
    st = AM2Z_STATUS_OK;
    CHECK(am2z_redis_script_new(NULL, AM2Z_NTS, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "redis script: NULL source");
}

/* A constructor reports why it failed through its status out-parameter and the detail;
   the status is set on success too. */
static void test_reader_new_status(void) {
    am2z_resp_limits bad = {-1, 0, 0, 0};
    am2z_status st = AM2Z_STATUS_OK;
    am2z_resp_reader *rd = am2z_resp_reader_new(&bad, &st);
    CHECK(rd == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_STR(am2z_status_detail(), "resp: limits.max_depth -1 is negative");
    CHECK_INT(am2z_status_offset(), AM2Z_NTS);
    st = AM2Z_STATUS_IO;
    bad.max_depth = 0; /* zero: the default */
    rd = am2z_resp_reader_new(&bad, &st);
    CHECK(rd != NULL);
    CHECK_INT(st, AM2Z_STATUS_OK);
    am2z_resp_reader_free(rd);
}

/* A reply read into again without am2z_reply_clear is cleared first: v0.1 overwrote it
   and leaked its strings and elements (LeakSanitizer: 41 bytes). This case leaks under
   ASan/valgrind if any path forgets. */
static void test_reply_reuse_without_clear(void) {
    static const char msgs[] = "$40\r\n0123456789012345678901234567890123456789\r\n"
                               "*3\r\n$33\r\n012345678901234567890123456789012\r\n+ok\r\n%1\r\n+k\r\n*1\r\n$32\r\n"
                               "01234567890123456789012345678901\r\n"
                               "-ERR a long error message that does not fit inline\r\n:7\r\n";
    am2z_reply r = {0};
    int i, n = 0;
    for (i = 0; i < 1000; i++) {
        am2z_resp_reader *rd = am2z_resp_reader_new(NULL, NULL);
        CHECK_INT(am2z_resp_reader_feed(rd, msgs, sizeof msgs - 1), AM2Z_STATUS_OK);
        while (am2z_resp_reader_next(rd, &r) == AM2Z_STATUS_OK) n++; /* never cleared in between */
        CHECK_INT(r.type, AM2Z_REPLY_NONE); /* NEED_MORE left it empty, freeing the last reply */
        if (i % 2) { /* and a reply that still holds a tree when its reader is gone */
            CHECK_INT(FEED(rd, "*1\r\n$40\r\n0123456789012345678901234567890123456789\r\n"), AM2Z_STATUS_OK);
            CHECK_INT(am2z_resp_reader_next(rd, &r), AM2Z_STATUS_OK);
        }
        am2z_resp_reader_free(rd);
    }
    CHECK_INT(n, 4000);
    am2z_reply_clear(&r);
}

int main(void) {
    T_RUN(test_resp2_types);
    T_RUN(test_resp3_types);
    T_RUN(test_bad_integers);
    T_RUN(test_crlf_misuse);
    T_RUN(test_negative_lengths_and_bad_types);
    T_RUN(test_error_reason_offset_sticky);
    T_RUN(test_need_more_is_a_status);
    T_RUN(test_failure_details);
    T_RUN(test_truncated_every_offset);
    T_RUN(test_stream_byte_by_byte);
    T_RUN(test_depth_limit);
    T_RUN(test_element_limit);
    T_RUN(test_bulk_limit);
    T_RUN(test_buffer_limit);
    T_RUN(test_no_allocation_for_small_replies);
    T_RUN(test_never_allocates_declared_sizes);
    T_RUN(test_big_aggregate_and_string_incremental);
    T_RUN(test_reply_helpers);
    T_RUN(test_writer_argv);
    T_RUN(test_writer_format);
    T_RUN(test_script_sha1);
    T_RUN(test_script_lengths_and_status);
    T_RUN(test_reader_new_status);
    T_RUN(test_reply_reuse_without_clear);
    T_RUN(test_buf_clear_and_nts);
    return t_done();
}
