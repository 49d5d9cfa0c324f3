/* size.c - the smallest program that uses one part of am2z, for `make size`
   (tests/size.sh). AM2Z_SIZE_PART picks the parts, each adding to the one before:
     0  nothing of am2z (the baseline that is subtracted)
     1  JSON: parse a text and write it back
     2  + the local runtime: register one processor and execute it
     3  + the RESP client: one command to a Redis
     4  + the queue runtime: one execute through a Redis */
#ifndef AM2Z_SIZE_PART
#define AM2Z_SIZE_PART 1
#endif
#if AM2Z_SIZE_PART >= 3
#define AM2Z_RESP_IMPLEMENTATION
#include "../../am2z_resp.h"
#elif AM2Z_SIZE_PART >= 1
#define AM2Z_IMPLEMENTATION
#include "../../am2z.h"
#endif
#include <stdio.h>

#if AM2Z_SIZE_PART >= 2
static am2z_result step(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "done", am2z_value_bool(1)));
}

/* Registers step on rt and executes it; 0 when it ran. */
static int run(am2z_runtime *rt, const am2z_state *in) {
    am2z_processor_desc d = {0};
    am2z_outcome out;
    int ok;
    d.name = "step";
    d.fn = step;
    if (am2z_runtime_register(rt, am2z_processor_new(&d, NULL)) != AM2Z_STATUS_OK) return 1;
    out = am2z_runtime_execute(rt, "step", in);
    ok = out.error == NULL;
    am2z_outcome_clear(&out);
    return ok ? 0 : 1;
}
#endif

int main(int argc, char **argv) {
    int rc = 0;
#if AM2Z_SIZE_PART >= 1
    am2z_value *v = am2z_json_parse(argc > 1 ? argv[1] : "{\"a\":[1,2.5,\"x\"]}", AM2Z_NTS, NULL, NULL);
    char *text = am2z_json_write(v, 0, NULL);
    rc |= puts(text ? text : "(invalid)") < 0;
    am2z_free(text);
#else
    (void)argv;
    rc |= puts(argc > 1 ? "(invalid)" : "") < 0;
#endif
#if AM2Z_SIZE_PART >= 2
    {
        am2z_runtime *rt = am2z_local_runtime_new(NULL, NULL);
        am2z_state *in = am2z_state_new("size", am2z_value_retain(v), NULL);
        rc |= run(rt, in);
        am2z_value_release(in);
        am2z_runtime_free(rt);
    }
#endif
#if AM2Z_SIZE_PART >= 3
    {
        am2z_redis *r = am2z_redis_new(NULL, NULL);
        am2z_reply reply = {0};
        rc |= am2z_redis_command(r, &reply, "PING") != AM2Z_STATUS_OK;
        am2z_reply_clear(&reply);
        am2z_redis_free(r);
    }
#endif
#if AM2Z_SIZE_PART >= 4
    {
        am2z_runtime *rt = am2z_queue_runtime_new(NULL, NULL);
        am2z_state *in = am2z_state_new("size", am2z_value_retain(v), NULL);
        rc |= !rt || run(rt, in);
        am2z_value_release(in);
        am2z_runtime_free(rt);
    }
#endif
#if AM2Z_SIZE_PART >= 1
    am2z_value_release(v);
#endif
    return rc;
}
