/* fuzz_json.c - libFuzzer target for the JSON parser and writer of am2z.h.
   Every input is parsed with the default limits and with tight ones; whatever parses
   must write (compact, and pretty+sorted) to text that parses back to an equal value
   with the same hash, and writing that again must give the same text.
   Build and run (standalone: it compiles the implementation itself):
     clang -g -O1 -fsanitize=fuzzer,address,undefined -I. tests/fuzz_json.c -o build/fuzz_json -lm -pthread
     ./build/fuzz_json -max_total_time=60 tests/data/JSONTestSuite/test_parsing */
#define AM2Z_IMPLEMENTATION
#include "../am2z.h"
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz check failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

static void roundtrip(const am2z_value *v, int flags) {
    size_t n, n2;
    char *text = am2z_json_write(v, flags, &n), *again;
    am2z_status e;
    am2z_value *w;
    FUZZ_CHECK(text != NULL);
    FUZZ_CHECK(strlen(text) == n); /* NUL is always escaped */
    w = am2z_json_parse(text, n, NULL, &e);
    if (!w)
        fprintf(stderr, "re-parse failed at %lu: %s\n%s\n", (unsigned long)am2z_status_offset(),
                am2z_status_detail(), text);
    FUZZ_CHECK(w != NULL);
    FUZZ_CHECK(am2z_value_equal(v, w));
    FUZZ_CHECK(am2z_value_hash(v) == am2z_value_hash(w));
    again = am2z_json_write(w, flags, &n2);
    FUZZ_CHECK(again != NULL && n2 == n && memcmp(text, again, n) == 0);
    am2z_free(again);
    am2z_free(text);
    am2z_value_release(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    am2z_status e;
    am2z_json_limits tight;
    am2z_value *v;
    /* size is a length, also 0: the input is not NUL-terminated */
    v = am2z_json_parse((const char *)data, size, NULL, &e);
    if (!v) {
        FUZZ_CHECK(e != AM2Z_STATUS_OK && am2z_status_offset() <= size &&
                   strncmp(am2z_status_detail(), "json: ", 6) == 0);
    } else {
        roundtrip(v, AM2Z_JSON_COMPACT);
        roundtrip(v, AM2Z_JSON_PRETTY | AM2Z_JSON_SORTED);
        am2z_value_release(v);
    }
    /* Tight limits reach every limit path; a limit error never points past the input,
       except the size limit, which reports max_size. */
    memset(&tight, 0, sizeof tight);
    tight.max_depth = 3;
    tight.max_size = 4096;
    tight.max_string = 8;
    tight.max_elements = 4;
    v = am2z_json_parse((const char *)data, size, &tight, &e);
    if (v) am2z_value_release(v);
    else FUZZ_CHECK(e != AM2Z_STATUS_OK &&
                    (am2z_status_offset() <= size || (size > 4096 && am2z_status_offset() == 4096)));
    return 0;
}
