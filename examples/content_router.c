/* content_router.c - route incoming content by its "type": articles are summarised,
   images captioned, videos transcoded, anything else archived by the fallback (the route
   whose key is NULL). A second router without a fallback shows the "No route found" error. The items run
   concurrently with am2z_runtime_execute_many.
   Build: make examples. Exit status 0 when every expectation below holds. */
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <string.h>

static const char *by_type(const am2z_state *in, void *user_data) {
    (void)user_data;
    return am2z_value_get_string(in, "type", NULL); /* NULL (no type) -> fallback */
}

/* The input with who handled it and what came out. */
static am2z_edit handled(const am2z_state *in, const char *by, const char *what) {
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "handledBy", am2z_value_string(by));
    am2z_edit_set(&e, "result", am2z_value_string(what));
    return e;
}

static am2z_result summarise(am2z_ctx *ctx, const am2z_state *in) {
    size_t len = 0;
    am2z_edit e;
    (void)ctx;
    am2z_value_as_string(am2z_value_get(in, "body"), &len);
    e = handled(in, "summarise", "summary ready");
    am2z_edit_set(&e, "words", am2z_value_int((int64_t)len / 6));
    return am2z_edit_end(&e);
}

static am2z_result caption(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = handled(in, "caption", "caption: a cat on a keyboard");
    (void)ctx;
    return am2z_edit_end(&e);
}

static am2z_result transcode(am2z_ctx *ctx, const am2z_state *in) {
    int64_t seconds = am2z_value_get_int(in, "seconds", 0);
    (void)ctx;
    if (seconds > 3600)
        return am2z_fail(am2z_error_resource("transcoder minutes", 60, seconds / 60));
    am2z_edit e = handled(in, "transcode", "720p and 1080p renditions");
    return am2z_edit_end(&e);
}

static am2z_result archive(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = handled(in, "archive", "stored for later review");
    (void)ctx;
    return am2z_edit_end(&e);
}

static am2z_processor *plain(const char *name, am2z_processor_fn fn) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = fn}, NULL);
}

int main(void) {
    static const char *inbox[] = {
        "{\"id\":1,\"type\":\"article\",\"body\":\"am2z composes processors into workflows.\"}",
        "{\"id\":2,\"type\":\"image\",\"file\":\"cat.png\"}",
        "{\"id\":3,\"type\":\"video\",\"seconds\":95}",
        "{\"id\":4,\"type\":\"podcast\"}",
        "{\"id\":5}",
        "{\"id\":6,\"type\":\"video\",\"seconds\":7200}",
    };
    static const char *expect[] = {"summarise", "caption", "transcode", "archive", "archive", NULL};
    enum { N = sizeof inbox / sizeof *inbox };
    int failures = 0;
    size_t i;
    am2z_logger *logger = am2z_logger_new(&(am2z_logger_desc){.min_level = AM2Z_LOG_WARN}, NULL);
    am2z_runtime *rt = am2z_local_runtime_new(&(am2z_local_desc){.logger = logger}, NULL);
    am2z_processor *summary = plain("summarise", summarise), *image = plain("caption", caption),
                   *video = plain("transcode", transcode), *router;
    /* Both routers take over the targets they are given; the three they share get one more
       reference each for the first. The fallback is the route whose key is NULL. */
    am2z_processor *content = am2z_router_new(&(am2z_router_desc){
        .name = "content", .select = by_type, .count = 4, .routes = (am2z_route[]){
            {"article", am2z_processor_retain(summary)}, {"image", am2z_processor_retain(image)},
            {"video", am2z_processor_retain(video)}, {NULL, plain("archive", archive)}}}, NULL);
    am2z_status st = am2z_runtime_register_many(rt, (am2z_processor *[]){content,
        am2z_router_new(&(am2z_router_desc){
            .name = "content-strict", .select = by_type, .count = 3, .routes = (am2z_route[]){
                {"article", summary}, {"image", image}, {"video", video}}}, NULL)}, 2);
    am2z_state *items[N];
    am2z_outcome outs[N] = {{0}}, out = {0};

    if (st != AM2Z_STATUS_OK) {
        fprintf(stderr, "setup failed: %s\n", am2z_status_detail());
        return 1;
    }
    router = am2z_runtime_lookup(rt, "content"); /* a new reference, to print its description */
    printf("%s\n\n", am2z_processor_desc_of(router)->description);
    am2z_processor_release(router);

    for (i = 0; i < N; i++) items[i] = am2z_state_parse("inbox", inbox[i], AM2Z_NTS, NULL);
    if (am2z_runtime_execute_many(rt, "content", (const am2z_state *const *)items, N, "inbox", outs) != AM2Z_STATUS_OK)
        return 1;
    for (i = 0; i < N; i++) {
        const char *type = am2z_value_get_string(items[i], "type", "(none)");
        if (outs[i].error) {
            printf("#%zu %-8s -> failed: %s\n", i + 1, type, am2z_error_root_cause(outs[i].error)->message);
            if (expect[i]) failures++;
        } else {
            printf("#%zu %-8s -> %-9s %s\n", i + 1, type, am2z_value_get_string(outs[i].state, "handledBy", "?"),
                   am2z_value_get_string(outs[i].state, "result", ""));
            if (!expect[i] || strcmp(expect[i], am2z_value_get_string(outs[i].state, "handledBy", "")) != 0)
                failures++;
        }
        am2z_outcome_clear(&outs[i]);
    }

    /* without a fallback, unknown content is an error that says why */
    out = am2z_runtime_execute_in_session(rt, "content-strict", items[3], "inbox");
    printf("\ncontent-strict on a podcast: %s\n", out.error ? out.error->message : "(no error?)");
    if (!out.error || strcmp(am2z_error_root_cause(out.error)->message, "No route found for: podcast") != 0)
        failures++;
    am2z_outcome_clear(&out);

    for (i = 0; i < N; i++) am2z_value_release(items[i]);
    am2z_runtime_free(rt);
    am2z_logger_release(logger);
    printf("%s\n", failures ? "EXPECTATIONS FAILED" : "all expectations met");
    return failures ? 1 : 0;
}
