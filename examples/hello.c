#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>

static am2z_result greet(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    am2z_edit e = am2z_edit_begin(in);      // a working copy; the first failure sticks
    am2z_edit_set(&e, "greeting", am2z_value_stringf("hello, %s",
                  am2z_value_get_string(in, "name", "world")));
    return am2z_edit_end(&e);               // am2z_ok(state) or the failure
}

int main(void) {
    am2z_runtime *rt = am2z_local_runtime_new(NULL, NULL);
    am2z_status st = am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){
        .name = "greet", .fn = greet }, NULL));   // register takes the processor over
    if (st) { printf("setup failed: %s\n", am2z_status_detail()); return 1; }
    am2z_state *in = am2z_state_parse("demo", "{\"name\":\"am2z\"}", AM2Z_NTS, NULL);
    am2z_outcome out = am2z_runtime_execute(rt, "greet", in);
    int ok = out.error == NULL;
    if (ok) printf("%s (%.3f ms)\n", am2z_value_get_string(out.state, "greeting", ""),
                   out.duration_ms);
    else printf("failed: %s\n", out.error->message);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    return ok ? 0 : 1;
}
