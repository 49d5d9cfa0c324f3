/* libFuzzer target for the RESP reader (and the writer, on what the reader returns).
   The first byte picks limits and how the rest is cut into chunks, so limit errors and
   every split point are reached. Build and run: sh tests/fuzz.sh (make fuzz). */
#define AM2Z_RESP_IMPLEMENTATION
#include "../am2z_resp.h"

/* Checks the invariants of a reply tree, iteratively, and re-encodes its strings. */
static void check_tree(const am2z_reply *root, am2z_resp_buf *b) {
    const am2z_reply *stack[AM2Z_RESP_MAX_DEPTH + 2];
    size_t idx[AM2Z_RESP_MAX_DEPTH + 2];
    int top = 0;
    stack[0] = root;
    idx[0] = 0;
    for (;;) {
        const am2z_reply *r = stack[top];
        if (idx[top] == 0) {
            switch (r->type) {
            case AM2Z_REPLY_STRING: case AM2Z_REPLY_ERROR: case AM2Z_REPLY_BULK:
            case AM2Z_REPLY_DOUBLE: case AM2Z_REPLY_BIGNUM: case AM2Z_REPLY_VERBATIM: {
                const char *s = am2z_reply_str(r);
                size_t n = r->len;
                if (s[n] != '\0') __builtin_trap();
                if (am2z_resp_append_argv(b, 1, &s, &n) != AM2Z_STATUS_OK) __builtin_trap();
                break;
            }
            case AM2Z_REPLY_ARRAY: case AM2Z_REPLY_MAP: case AM2Z_REPLY_SET: case AM2Z_REPLY_PUSH:
                if (r->len && !r->element) __builtin_trap();
                if (r->type == AM2Z_REPLY_MAP && r->len % 2) __builtin_trap();
                break;
            case AM2Z_REPLY_BOOL:
                if (r->integer != 0 && r->integer != 1) __builtin_trap();
                break;
            case AM2Z_REPLY_INTEGER: case AM2Z_REPLY_NIL:
                break;
            default:
                __builtin_trap(); /* NONE never comes out of the reader */
            }
        }
        if (r->element && idx[top] < r->len) {
            if (top + 1 > AM2Z_RESP_MAX_DEPTH) __builtin_trap();
            stack[top + 1] = &r->element[idx[top]++];
            idx[++top] = 0;
            continue;
        }
        if (top == 0) break;
        top--;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    am2z_resp_limits lim = {0, 0, 0, 0};
    am2z_resp_reader *rd;
    am2z_resp_buf b = {NULL, 0, 0};
    am2z_reply r = {0};
    size_t off = 1;
    unsigned cfg, seed;
    if (size == 0) return 0;
    cfg = data[0];
    seed = cfg * 2654435761u;
    if (cfg & 1) { /* small limits, so each is hit */
        lim.max_depth = 1 + (int)(cfg >> 5);
        lim.max_elements = 1 + ((cfg >> 1) & 7);
        lim.max_bulk = 1 + ((cfg >> 2) & 63);
        lim.max_buffer = 16 + (cfg & 0xF0);
    }
    rd = am2z_resp_reader_new(&lim, NULL);
    if (!rd) return 0;
    while (off < size) {
        size_t n;
        am2z_status st;
        seed = seed * 1103515245u + 12345u;
        n = (cfg & 2) ? 1 + (seed >> 16) % 7 : size - off; /* tiny chunks or all at once */
        if (n > size - off) n = size - off;
        if ((st = am2z_resp_reader_feed(rd, data + off, n)) != AM2Z_STATUS_OK) {
            if (st != AM2Z_STATUS_LIMIT && st != AM2Z_STATUS_NO_MEMORY && st != AM2Z_STATUS_PROTOCOL) __builtin_trap();
            if (!*am2z_status_detail()) __builtin_trap();
            break;
        }
        off += n;
        /* the reply is reused: every call clears it first (not clearing on odd configs) */
        while ((st = am2z_resp_reader_next(rd, &r)) == AM2Z_STATUS_OK) {
            b.len = 0;
            check_tree(&r, &b);
            if (cfg & 4) continue;
            am2z_reply_clear(&r);
            if (r.type != AM2Z_REPLY_NONE || r.element || r.ext) __builtin_trap();
        }
        if (r.type != AM2Z_REPLY_NONE) __builtin_trap(); /* NEED_MORE and failures leave *out empty */
        if (st != AM2Z_STATUS_NEED_MORE) {
            if (st != AM2Z_STATUS_LIMIT && st != AM2Z_STATUS_NO_MEMORY && st != AM2Z_STATUS_PROTOCOL) __builtin_trap();
            if (!*am2z_status_detail() || am2z_status_offset() > size) __builtin_trap();
            if (am2z_resp_reader_next(rd, &r) != st) __builtin_trap(); /* sticky */
            break;
        }
    }
    am2z_resp_buf_clear(&b);
    am2z_resp_reader_free(rd); /* frees any half-built reply */
    return 0;
}
