/* t.h - the test harness of am2z: assertions that print file:line and both
   values, and one closing line per binary ("N passed, N failed").
   Usage: one test file = one program; write `static void test_x(void)` functions,
   then `int main(void) { T_RUN(test_x); ...; return t_done(); }`. */
#ifndef AM2Z_T_H
#define AM2Z_T_H
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

static int t_passed, t_failed, t_skipped, t_case_failed;

#define T_FAIL_(...) do { t_case_failed = 1; fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } while (0)
#define CHECK(c) do { if (!(c)) T_FAIL_("CHECK(%s) failed", #c); } while (0)
#define CHECK_INT(a, b) do { long long t_a = (long long)(a), t_b = (long long)(b); \
    if (t_a != t_b) T_FAIL_("%s == %s: %lld != %lld", #a, #b, t_a, t_b); } while (0)
#define CHECK_DBL(a, b, eps) do { double t_a = (double)(a), t_b = (double)(b); \
    if (!(t_a - t_b <= (eps) && t_b - t_a <= (eps))) T_FAIL_("%s ~= %s: %.17g != %.17g", #a, #b, t_a, t_b); } while (0)
#define CHECK_STR(a, b) do { const char *t_a = (a), *t_b = (b); \
    if (!t_a || !t_b || strcmp(t_a, t_b) != 0) T_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, \
        t_a ? t_a : "(null)", t_b ? t_b : "(null)"); } while (0)
/* Marks the running case skipped with a loud reason; a skip never counts as a pass. */
#define T_SKIP(...) do { fprintf(stderr, "SKIP %s: ", __func__); fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); t_case_failed = -1; return; } while (0)

#define T_RUN(fn) do { t_case_failed = 0; fn(); \
    if (t_case_failed > 0) { t_failed++; fprintf(stderr, "FAIL %s\n", #fn); } \
    else if (t_case_failed < 0) t_skipped++; else t_passed++; } while (0)

static int t_done(void) {
    if (t_skipped) printf("%d passed, %d failed, %d skipped\n", t_passed, t_failed, t_skipped);
    else printf("%d passed, %d failed\n", t_passed, t_failed);
    return t_failed ? 1 : 0;
}
#endif
