/* test_cron.c - section 6b of am2z.h: 5-field cron expressions. A table of expressions
   and next fire times (month ends, leap years, the day-of-month/day-of-week OR rule,
   names, steps, macros, the year range), every kind of bad expression with the field
   and offset its detail names, and a cross-check of am2z_cron_next against a
   minute-by-minute scan that uses the C library's own calendar (timegm/gmtime_r). */
#define _DEFAULT_SOURCE /* timegm */
/* 32-bit glibc: a 64-bit time_t for the calendar this test compares with (the table
   reaches 9999; am2z's cron itself uses int64_t milliseconds, no time_t) */
#define _TIME_BITS 64
#define _FILE_OFFSET_BITS 64
#include "../am2z.h"
#include "t.h"
#include <time.h>

/* "YYYY-MM-DDTHH:MM:SS" (UTC) in ms since the epoch, by the C library's calendar. */
static int64_t at(const char *iso) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (sscanf(iso, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec) != 6)
        abort();
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000;
}

static const char *iso(int64_t ms) {
    static char buf[64];
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return buf;
}

/* The next fire time of expr after `after`, as an ISO string, or the status's name. */
static const char *next_of(const char *expr, const char *after) {
    static char buf[96];
    am2z_cron c;
    int64_t next = 0;
    am2z_status st = am2z_cron_parse(expr, AM2Z_NTS, &c);
    if (st != AM2Z_STATUS_OK) {
        snprintf(buf, sizeof buf, "parse: %s", am2z_status_detail());
        return buf;
    }
    st = am2z_cron_next(&c, at(after), &next);
    if (st != AM2Z_STATUS_OK) return am2z_status_string(st);
    snprintf(buf, sizeof buf, "%s", iso(next));
    return buf;
}

static void test_next_table(void) {
    static const char *const cases[][3] = {
        /* expression, after, next (2026-12-02 is a Wednesday) */
        {"*/5 * * * *", "2026-12-02T10:31:20", "2026-12-02T10:35:00"},
        {"*/5 * * * *", "2026-12-02T10:35:00", "2026-12-02T10:40:00"}, /* strictly after */
        {"* * * * *", "2026-12-02T10:35:59", "2026-12-02T10:36:00"},
        {"0 9 * * MON-FRI", "2026-12-04T09:00:00", "2026-12-07T09:00:00"}, /* Friday -> Monday */
        {"0 9 * * mon-fri", "2026-12-02T08:59:00", "2026-12-02T09:00:00"},
        {"0 0 31 * *", "2026-01-31T00:00:00", "2026-03-31T00:00:00"},      /* no February 31st */
        {"0 0 31 * *", "2026-04-01T00:00:00", "2026-05-31T00:00:00"},      /* nor April 31st */
        {"0 12 29 2 *", "2026-03-01T00:00:00", "2028-02-29T12:00:00"},     /* leap year */
        {"0 0 29 2 *", "2096-03-01T00:00:00", "2104-02-29T00:00:00"},      /* 2100 is not leap */
        {"0 0 29 2 *", "1999-01-01T00:00:00", "2000-02-29T00:00:00"},      /* 2000 is */
        {"0 0 30 2 *", "2026-01-01T00:00:00", "not found"},
        {"0 0 13 * FRI", "2026-12-02T00:00:00", "2026-12-04T00:00:00"},    /* either day field */
        {"0 0 13 * FRI", "2026-12-11T00:00:00", "2026-12-13T00:00:00"},
        {"0 0 */2 * *", "2026-12-02T00:00:00", "2026-12-03T00:00:00"},
        {"0 0 */2 * MON", "2026-12-02T00:00:00", "2026-12-07T00:00:00"},   /* "*" field: both */
        {"@hourly", "2026-12-02T10:59:59", "2026-12-02T11:00:00"},
        {"@daily", "2026-12-02T10:00:00", "2026-12-03T00:00:00"},
        {"@midnight", "2026-12-02T10:00:00", "2026-12-03T00:00:00"},
        {"@weekly", "2026-12-02T10:00:00", "2026-12-06T00:00:00"},
        {"@monthly", "2026-12-02T10:00:00", "2027-01-01T00:00:00"},
        {"@yearly", "2026-12-02T10:00:00", "2027-01-01T00:00:00"},
        {"@annually", "2027-01-01T00:00:00", "2028-01-01T00:00:00"},
        {"59 23 31 12 *", "2026-12-31T23:59:00", "2027-12-31T23:59:00"},
        {"0 0 1 JAN,jul *", "2026-02-01T00:00:00", "2026-07-01T00:00:00"},
        {"0 0 1 feb-MAR *", "2026-02-01T00:00:00", "2026-03-01T00:00:00"},
        {"15-45/10 * * * *", "2026-12-02T10:46:00", "2026-12-02T11:15:00"},
        {"5/20 * * * *", "2026-12-02T10:46:00", "2026-12-02T11:05:00"},
        {"0 0 * * 7", "2026-12-02T00:00:00", "2026-12-06T00:00:00"},       /* 7 is Sunday */
        {"0 0 * * 0", "2026-12-02T00:00:00", "2026-12-06T00:00:00"},
        {"0 0 * * SAT-SUN", "2026-12-02T00:00:00", "2026-12-05T00:00:00"},
        {"0 0 * * 5-7", "2026-12-05T00:00:00", "2026-12-06T00:00:00"},
        {"0,30 8-10 * * *", "2026-12-02T10:30:00", "2026-12-03T08:00:00"},
        {"  0   0  1  1  *  ", "2026-06-01T00:00:00", "2027-01-01T00:00:00"}, /* spaces */
        {"0\t0\t1\t1\t*", "2026-06-01T00:00:00", "2027-01-01T00:00:00"},      /* tabs */
        {"0 0 1 1 *", "1969-06-01T00:00:00", "1970-01-01T00:00:00"},         /* before the epoch */
        {"0 0 1 1 *", "1960-01-01T00:00:30", "1961-01-01T00:00:00"},
        {"0 0 1 1 *", "9999-06-01T00:00:00", "not found"},                   /* past 9999 */
        {"59 23 31 12 *", "9999-06-01T00:00:00", "9999-12-31T23:59:00"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = next_of(cases[i][0], cases[i][1]);
        if (strcmp(got, cases[i][2]) != 0)
            T_FAIL_("\"%s\" after %s: got %s, expected %s", cases[i][0], cases[i][1], got, cases[i][2]);
    }
}

/* expression, offset of the culprit (AM2Z_NTS when none), words the detail must hold */
static void bad(const char *expr, size_t offset, const char *words) {
    am2z_cron c, untouched;
    am2z_status st;
    memset(&c, 0xA5, sizeof c);
    untouched = c;
    st = am2z_cron_parse(expr, AM2Z_NTS, &c);
    if (st != AM2Z_STATUS_INVALID_ARGUMENT) {
        T_FAIL_("\"%s\": status %s, expected invalid argument", expr, am2z_status_string(st));
        return;
    }
    if (!strstr(am2z_status_detail(), words))
        T_FAIL_("\"%s\": detail \"%s\" lacks \"%s\"", expr, am2z_status_detail(), words);
    if (offset != am2z_status_offset())
        T_FAIL_("\"%s\": offset %zu, expected %zu (%s)", expr, am2z_status_offset(), offset, am2z_status_detail());
    if (memcmp(&c, &untouched, sizeof c) != 0) T_FAIL_("\"%s\": *out written on failure", expr);
}

static void test_bad_expressions(void) {
    char longer[AM2Z_CRON_MAX_LENGTH + 8];
    bad("", 0, "0 fields, expected 5");
    bad("   ", 0, "0 fields, expected 5");
    bad("* * * *", 7, "4 fields, expected 5");
    bad("* * * * * *", 10, "more than 5 fields");
    bad("60 * * * *", 0, "minute: \"60\" is out of range 0-59");
    bad("* 24 * * *", 2, "hour: \"24\" is out of range 0-23");
    bad("* * 0 * *", 4, "day of month: \"0\" is out of range 1-31");
    bad("* * 32 * *", 4, "day of month: \"32\"");
    bad("* * * 13 *", 6, "month: \"13\" is out of range 1-12");
    bad("* * * * 8", 8, "day of week: \"8\" is out of range 0-7");
    bad("1-70 * * * *", 0, "minute: \"1-70\" is out of range");
    bad("5-1 * * * *", 0, "minute: range 5-1 is reversed");
    bad("* * * DEC-JAN *", 6, "month: range 12-1 is reversed");
    bad("*/0 * * * *", 2, "minute: step \"0\" is not a number 1-59");
    bad("*/ * * * *", 2, "minute: step \"\"");
    bad("*/x * * * *", 2, "minute: step \"x\"");
    bad("*/60 * * * *", 2, "minute: step \"60\"");
    bad("1,,2 * * * *", 2, "minute: expected a number or \"*\"");
    bad("1, * * * *", 1, "minute: unexpected \",\"");
    bad("1-* * * * *", 2, "minute: a range needs an end");
    bad("1-2-3 * * * *", 3, "minute: unexpected \"-3\"");
    bad("a * * * *", 0, "minute: expected a number or \"*\"");
    bad("* * * FOO *", 6, "month: expected a number, a month name or \"*\"");
    bad("* * * * MONDAY", 8, "day of week: expected a number, a day name");
    bad("* * * * JAN", 8, "day of week");    /* a month name in the weekday field */
    bad("* * * MON *", 6, "month");          /* and the other way round */
    bad("* * JAN * *", 4, "day of month: expected a number or \"*\"");
    bad("*5 * * * *", 1, "minute: unexpected \"5\"");
    bad("99999999999 * * * *", 0, "out of range 0-59");  /* no overflow */
    bad("* * * * 1/99999999999", 10, "day of week: step");
    bad("-1 * * * *", 0, "minute: expected a number");
    bad("L * * * *", 0, "minute: expected a number");
    bad("@every 5m", 0, "unknown macro \"@every 5m\"");
    bad("@HOURLY", 0, "unknown macro");
    bad("* * * * * # comment", 10, "more than 5 fields");
    memset(longer, '*', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    bad(longer, AM2Z_CRON_MAX_LENGTH, "longer than 256 bytes");
    {
        am2z_cron c;
        int64_t next;
        CHECK_INT(am2z_cron_parse(NULL, AM2Z_NTS, &c), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK_INT(am2z_cron_parse("* * * * *", AM2Z_NTS, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK_INT(am2z_cron_next(NULL, 0, &next), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK_INT(am2z_cron_parse("* * * * *", AM2Z_NTS, &c), AM2Z_STATUS_OK);
        CHECK_INT(am2z_cron_next(&c, 0, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK_INT(am2z_cron_next(&c, INT64_MIN, &next), AM2Z_STATUS_INVALID_ARGUMENT);
        CHECK(strstr(am2z_status_detail(), "before the year 1") != NULL);
        CHECK_INT(am2z_cron_next(&c, INT64_MAX, &next), AM2Z_STATUS_NOT_FOUND);
        /* a length cuts the expression: only "0 0 1 1 *" of the text is read */
        CHECK_INT(am2z_cron_parse("0 0 1 1 * trailing", 9, &c), AM2Z_STATUS_OK);
        CHECK_INT(c.months, 1 << 1);
    }
}

/* A matcher written from the definition, on the C library's calendar. */
static int matches(const am2z_cron *c, int64_t ms) {
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    int dom, dow;
    gmtime_r(&t, &tm);
    if (!(c->minutes >> tm.tm_min & 1) || !(c->hours >> tm.tm_hour & 1) || !(c->months >> (tm.tm_mon + 1) & 1))
        return 0;
    dom = (int)(c->days >> tm.tm_mday & 1);
    dow = c->weekdays >> tm.tm_wday & 1;
    return c->days_restricted && c->weekdays_restricted ? dom || dow : dom && dow;
}

static void test_cross_check_with_libc(void) {
    static const char *const exprs[] = {
        "*/7 * * * *", "0 */3 * * *", "15 10 * * 1-5", "0 0 1,15 * *", "30 6 * * SUN", "0 0 31 * *",
        "0 12 13 * FRI", "*/10 9-17 * * MON-FRI", "0 0 */2 * TUE", "5/20 1-23/2 * * *", "0 0 29-31 * *",
        "45 23 28-31 2 *", "0 0 1 */3 *"};
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    size_t e;
    int k;
    for (e = 0; e < sizeof exprs / sizeof exprs[0]; e++) {
        am2z_cron c;
        CHECK_INT(am2z_cron_parse(exprs[e], AM2Z_NTS, &c), AM2Z_STATUS_OK);
        for (k = 0; k < 20; k++) {
            int64_t after, next = 0, m;
            rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
            after = at("2000-01-01T00:00:00") + (int64_t)(rng % (64ull * 365 * 86400000)); /* 2000-2063 */
            if (am2z_cron_next(&c, after, &next) != AM2Z_STATUS_OK) {
                T_FAIL_("\"%s\" after %s: %s", exprs[e], iso(after), am2z_status_detail());
                continue;
            }
            if (next <= after || next % 60000 != 0 || !matches(&c, next)) {
                T_FAIL_("\"%s\" after %s: %s is not a later matching minute", exprs[e], iso(after), iso(next));
                continue;
            }
            /* nothing in between matches (the scan is bounded: every table entry fires
               within ~120 days) */
            for (m = (after / 60000 + 1) * 60000; m < next; m += 60000)
                if (matches(&c, m)) {
                    T_FAIL_("\"%s\" after %s: %s matches before %s", exprs[e], iso(after), iso(m), iso(next));
                    break;
                }
        }
    }
}

int main(void) {
    T_RUN(test_next_table);
    T_RUN(test_bad_expressions);
    T_RUN(test_cross_check_with_libc);
    return t_done();
}
