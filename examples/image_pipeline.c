/* image_pipeline.c - a parallel fan-out whose results are merged: load -> (thumbnail ||
   watermark || extract-exif || palette) -> publish. Every branch appends a rendition to
   the same "renditions" array and edits its own fields; the default 3-way merge keeps
   all of it. Two branches also disagree on "status", which the merge resolves to the
   last branch and reports in a "merge:conflict" event.
   Build: make examples. Exit status 0 when every expectation below holds. */
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <string.h>

static am2z_result load(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    /* pretend to decode the file header */
    am2z_edit_set(&e, "image.width", am2z_value_int(4000));
    am2z_edit_set(&e, "image.height", am2z_value_int(3000));
    am2z_edit_set(&e, "status", am2z_value_string("loaded"));
    return am2z_edit_end(&e);
}

/* Appends {kind, width, url} to "renditions". A value built from a constructor by edits
   is NULL if any of them failed, and appending NULL fails the edit: nothing is lost. */
static void rendition(am2z_edit *e, const am2z_state *in, const char *kind, int64_t width) {
    am2z_value *r = am2z_value_set(am2z_value_object(), "kind", am2z_value_string(kind));
    r = am2z_value_set(r, "width", am2z_value_int(width));
    r = am2z_value_set(r, "url", am2z_value_stringf("https://cdn.example.com/%s/%s",
                                                    kind, am2z_value_get_string(in, "file", "x")));
    am2z_edit_append(e, "renditions", r);
}

static am2z_result thumbnail(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    rendition(&e, in, "thumb", 200);
    return am2z_edit_end(&e);
}

static am2z_result watermark(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    rendition(&e, in, "watermarked", am2z_value_get_int(in, "image.width", 0));
    am2z_edit_set(&e, "image.watermark", am2z_value_string("(c) example"));
    am2z_edit_set(&e, "status", am2z_value_string("watermarked"));
    return am2z_edit_end(&e);
}

static am2z_result extract_exif(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "image.exif.camera", am2z_value_string("X100V"));
    am2z_edit_set(&e, "image.exif.iso", am2z_value_int(200));
    return am2z_edit_end(&e);
}

static am2z_result palette(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    rendition(&e, in, "swatch", 64);
    am2z_edit_set(&e, "image.palette",
                  am2z_json_parse("[\"#1d3557\",\"#e63946\",\"#f1faee\"]", AM2Z_NTS, NULL, NULL));
    am2z_edit_set(&e, "status", am2z_value_string("analysed"));
    am2z_ctx_progress(ctx, 1.0);
    return am2z_edit_end(&e);
}

static am2z_result publish(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "published", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

static int conflicts;
static void on_conflict(const char *event, const am2z_value *data, void *user_data) {
    char *values = am2z_json_write(am2z_value_get(data, "values"), AM2Z_JSON_COMPACT, NULL);
    (void)event;
    (void)user_data;
    printf("merge conflict at %s: %s -> kept %s\n", am2z_value_get_string(data, "path", "?"),
           values ? values : "", am2z_value_get_string(data, "resolved", "?"));
    am2z_free(values);
    conflicts++;
}

static am2z_processor *plain(const char *name, am2z_processor_fn fn) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = fn}, NULL);
}

int main(void) {
    int failures = 0;
    size_t i;
    am2z_logger *logger = am2z_logger_new(&(am2z_logger_desc){.min_level = AM2Z_LOG_WARN}, NULL);
    am2z_runtime *rt = am2z_local_runtime_new(&(am2z_local_desc){.logger = logger}, NULL);
    /* one expression, one check: the constructors and register take the processors over */
    am2z_status st = am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){
        .name = "image-pipeline", .count = 3, .steps = (am2z_processor *[]){
            plain("load", load),
            am2z_parallel_new(&(am2z_parallel_desc){
                .name = "process-image", .count = 4, .branches = (am2z_processor *[]){
                    plain("thumbnail", thumbnail), plain("watermark", watermark),
                    plain("extract-exif", extract_exif), plain("palette", palette)}}, NULL),
            plain("publish", publish)}}, NULL));
    am2z_processor *pipeline = am2z_runtime_lookup(rt, "image-pipeline");
    am2z_processor *fan = am2z_runtime_lookup(rt, "process-image");
    am2z_state *in = am2z_state_parse("gallery", "{\"file\":\"sunset.jpg\",\"renditions\":[]}", AM2Z_NTS, NULL);
    am2z_outcome out = {0};
    const am2z_value *r;

    if (st != AM2Z_STATUS_OK) {
        fprintf(stderr, "setup failed: %s\n", am2z_status_detail());
        return 1;
    }
    am2z_runtime_on(rt, "merge:conflict", on_conflict, NULL);
    printf("%s\n%s\n", am2z_processor_desc_of(pipeline)->description, am2z_processor_desc_of(fan)->description);
    am2z_processor_release(pipeline); /* the references lookup gave */
    am2z_processor_release(fan);

    out = am2z_runtime_execute(rt, "image-pipeline", in);
    if (out.error) {
        char *chain = am2z_error_chain(out.error);
        printf("failed: %s\n", chain ? chain : "");
        am2z_free(chain);
        failures++;
    } else {
        r = am2z_value_get(out.state, "renditions");
        printf("renditions (%zu):\n", am2z_value_len(r));
        for (i = 0; i < am2z_value_len(r); i++)
            printf("  %-12s %5lld px  %s\n", am2z_value_get_string(am2z_value_at(r, i), "kind", ""),
                   (long long)am2z_value_get_int(am2z_value_at(r, i), "width", 0),
                   am2z_value_get_string(am2z_value_at(r, i), "url", ""));
        printf("done in %.2f ms; camera %s, %zu palette colours, status \"%s\", published %s\n",
               out.duration_ms, am2z_value_get_string(out.state, "image.exif.camera", "?"),
               am2z_value_len(am2z_value_get(out.state, "image.palette")),
               am2z_value_get_string(out.state, "status", "?"),
               am2z_value_get_bool(out.state, "published", 0) ? "yes" : "no");
        /* the three appended renditions in branch order, every branch's own fields */
        if (am2z_value_len(r) != 3) failures++;
        if (strcmp(am2z_value_get_string(out.state, "renditions[0].kind", ""), "thumb") != 0) failures++;
        if (strcmp(am2z_value_get_string(out.state, "renditions[2].kind", ""), "swatch") != 0) failures++;
        if (!am2z_value_get(out.state, "image.watermark") || !am2z_value_get(out.state, "image.exif.iso")) failures++;
        if (am2z_value_get_int(out.state, "image.width", 0) != 4000) failures++;
        if (strcmp(am2z_value_get_string(out.state, "status", ""), "analysed") != 0) failures++;
        if (conflicts != 1) failures++;
    }
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_logger_release(logger);
    printf("%s\n", failures ? "EXPECTATIONS FAILED" : "all expectations met");
    return failures ? 1 : 0;
}
