#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>

static am2z_result greet(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    const char *who = am2z_value_get_string(in, "name", "world");
    char line[128];
    snprintf(line, sizeof line, "hello, %s", who);
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "greeting",
                                  am2z_value_string(line)));
}

int main(void) {
    am2z_runtime *rt = am2z_local_runtime_new(NULL);
    am2z_processor *p = am2z_processor_new(&(am2z_processor_desc){
        .name = "greet", .fn = greet });
    am2z_runtime_register(rt, p);
    am2z_processor_release(p);
    am2z_state *in = am2z_state_parse("demo", "{\"name\":\"am2z\"}", AM2Z_NTS, NULL);
    am2z_outcome out = am2z_runtime_execute(rt, "greet", in);
    if (out.error) printf("failed: %s\n", out.error->message);
    else printf("%s\n", am2z_value_get_string(out.state, "greeting", ""));
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    return 0;
}
