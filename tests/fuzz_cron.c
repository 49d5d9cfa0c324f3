/* libFuzzer target for the cron parser and am2z_cron_next. The first 8 bytes pick the
   start time; the rest is the expression. Checks: a parse never writes *out on failure
   and always leaves a detail; a parsed schedule's next time is a whole minute, later
   than the start, and matches every field of the schedule. Build and run: sh
   tests/fuzz.sh (make fuzz). */
#define AM2Z_IMPLEMENTATION
#include "../am2z.h"
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    am2z_cron c, before;
    int64_t start = 0, next = 0;
    uint64_t u = 0;
    size_t i;
    if (size < 8) return 0;
    for (i = 0; i < 8; i++) u = u << 8 | data[i];
    start = (int64_t)(u % (300ull * 365 * 86400000)) + 946684800000LL - 150ll * 365 * 86400000; /* ~1850-2150 */
    memset(&c, 0x5A, sizeof c);
    before = c;
    if (am2z_cron_parse((const char *)data + 8, size - 8, &c) != AM2Z_STATUS_OK) {
        if (memcmp(&c, &before, sizeof c) != 0 || !am2z_status_detail()[0]) __builtin_trap();
        return 0;
    }
    if (am2z_cron_next(&c, start, &next) == AM2Z_STATUS_OK) {
        /* floor divisions: next may be before 1970 */
        int64_t minute = next >= 0 ? next / 60000 : (next - 59999) / 60000;
        int64_t day = minute >= 0 ? minute / 1440 : (minute - 1439) / 1440, y;
        int h = (int)((minute - day * 1440) / 60), mi = (int)((minute - day * 1440) % 60);
        int m, d, w = (int)(((day + 4) % 7 + 7) % 7);
        int dom, dow;
        if (next <= start || next % 60000 != 0) __builtin_trap();
        am2z__civil_from_days(day, &y, &m, &d);
        dom = (int)(c.days >> d & 1);
        dow = c.weekdays >> w & 1;
        if (!(c.minutes >> mi & 1) || !(c.hours >> h & 1) || !(c.months >> m & 1)) __builtin_trap();
        if (!(c.days_restricted && c.weekdays_restricted ? dom || dow : dom && dow)) __builtin_trap();
    }
    return 0;
}
