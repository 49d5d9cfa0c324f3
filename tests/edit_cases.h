/* edit_cases.h - processors that reproduce issue 8's defect: an edit fails (a path
   through a number, say), more edits follow, and the processor returns. Against v0.1
   the value idiom turned that into a success with a fresh {} for a state; now every
   case must end in a failure whose message names the first failing edit and its reason.
   One processor per value edit (the bare-value idiom, `return am2z_ok(out)`) and per
   am2z_edit_* function (`return am2z_edit_end(&e)`). Each works on any object input:
   it makes "total" a number (or "items" an object) itself before failing through it.
   Include it after am2z.h; run every entry of edit_cases[] directly (test_errors.c) or
   register them on a runtime. */
#ifndef AM2Z_EDIT_CASES_H
#define AM2Z_EDIT_CASES_H

/* ---- the value idiom ---- */

static am2z_result edit_case_set(am2z_ctx *ctx, const am2z_state *in) {
    am2z_value *out;
    (void)ctx;
    out = am2z_value_set(am2z_value_retain(in), "total", am2z_value_int(5));
    out = am2z_value_set(out, "total.cents", am2z_value_int(500)); /* total is a number */
    out = am2z_value_set(out, "status", am2z_value_string("paid"));
    return am2z_ok(out);
}

static am2z_result edit_case_append(am2z_ctx *ctx, const am2z_state *in) {
    am2z_value *out;
    (void)ctx;
    out = am2z_value_set(am2z_value_retain(in), "items", am2z_value_object());
    out = am2z_value_append(out, "items", am2z_value_string("sku-1")); /* items is an object */
    out = am2z_value_append(out, "log", am2z_value_string("added"));
    return am2z_ok(out);
}

static am2z_result edit_case_remove(am2z_ctx *ctx, const am2z_state *in) {
    am2z_value *out;
    (void)ctx;
    out = am2z_value_remove(am2z_value_retain(in), "draft..notes"); /* malformed path */
    out = am2z_value_set(out, "status", am2z_value_string("clean"));
    return am2z_ok(out);
}

static am2z_result edit_case_set_key(am2z_ctx *ctx, const am2z_state *in) {
    am2z_value *out, *total;
    (void)ctx;
    out = am2z_value_set(am2z_value_retain(in), "total", am2z_value_int(5));
    total = am2z_value_set_key(am2z_value_retain(am2z_value_get(out, "total")), "cents", AM2Z_NTS,
                               am2z_value_int(500)); /* total is a number */
    out = am2z_value_set(out, "total", total);
    out = am2z_value_set(out, "status", am2z_value_string("paid"));
    return am2z_ok(out);
}

static am2z_result edit_case_remove_key(am2z_ctx *ctx, const am2z_state *in) {
    am2z_value *out, *total;
    (void)ctx;
    out = am2z_value_set(am2z_value_retain(in), "total", am2z_value_int(5));
    total = am2z_value_remove_key(am2z_value_retain(am2z_value_get(out, "total")), "cents", AM2Z_NTS);
    out = am2z_value_set(out, "total", total);
    out = am2z_value_set(out, "status", am2z_value_string("paid"));
    return am2z_ok(out);
}

static am2z_result edit_case_merge(am2z_ctx *ctx, const am2z_state *in) {
    am2z_value *out, *five = am2z_value_int(5);
    (void)ctx;
    out = am2z_value_merge(am2z_value_retain(in), five); /* from is not an object */
    out = am2z_value_set(out, "status", am2z_value_string("merged"));
    am2z_value_release(five);
    return am2z_ok(out);
}

/* ---- the am2z_edit helper ---- */

static am2z_result edit_case_edit_set(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "total", am2z_value_int(5));
    am2z_edit_set(&e, "total.cents", am2z_value_int(500));
    am2z_edit_set(&e, "status", am2z_value_string("paid"));
    return am2z_edit_end(&e);
}

static am2z_result edit_case_edit_append(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "items", am2z_value_object());
    am2z_edit_append(&e, "items", am2z_value_string("sku-1"));
    am2z_edit_append(&e, "log", am2z_value_string("added"));
    return am2z_edit_end(&e);
}

static am2z_result edit_case_edit_remove(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_remove(&e, "draft..notes");
    am2z_edit_set(&e, "status", am2z_value_string("clean"));
    return am2z_edit_end(&e);
}

static am2z_result edit_case_edit_merge(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    am2z_value *list = am2z_value_append(am2z_value_array(), "", am2z_value_int(1));
    (void)ctx;
    am2z_edit_merge(&e, list);
    am2z_edit_set(&e, "status", am2z_value_string("merged"));
    am2z_value_release(list);
    return am2z_edit_end(&e);
}

static am2z_result edit_case_edit_fail(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "reserved", am2z_value_bool(1));
    am2z_edit_fail(&e, am2z_error_business("OUT_OF_STOCK", AM2Z_SEVERITY_DEFAULT, "sku-1 is out of stock"));
    am2z_edit_fail(&e, am2z_error_business("LATER", AM2Z_SEVERITY_DEFAULT, "a second failure"));
    am2z_edit_set(&e, "status", am2z_value_string("reserved"));
    return am2z_edit_end(&e);
}

typedef struct edit_case {
    const char *name;
    am2z_processor_fn fn;
    const char *expected_message_part;
} edit_case;

static const edit_case edit_cases[] = {
    {"edit-value-set", edit_case_set, "am2z_ok(NULL): set 'total.cents': 'total' is a number"},
    {"edit-value-append", edit_case_append, "am2z_ok(NULL): append 'items': 'items' is an object"},
    {"edit-value-remove", edit_case_remove, "am2z_ok(NULL): remove 'draft..notes': malformed path"},
    {"edit-value-set-key", edit_case_set_key, "am2z_ok(NULL): set_key 'cents': the value is a number"},
    {"edit-value-remove-key", edit_case_remove_key, "am2z_ok(NULL): remove_key 'cents': the value is a number"},
    {"edit-value-merge", edit_case_merge, "am2z_ok(NULL): merge: the source is a number"},
    {"edit-helper-set", edit_case_edit_set,
     "Validation failed for field 'total.cents': set 'total.cents': 'total' is a number"},
    {"edit-helper-append", edit_case_edit_append,
     "Validation failed for field 'items': append 'items': 'items' is an object"},
    {"edit-helper-remove", edit_case_edit_remove,
     "Validation failed for field 'draft..notes': remove 'draft..notes': malformed path"},
    {"edit-helper-merge", edit_case_edit_merge, "Validation failed for field '(merge)': merge: the source is an array"},
    {"edit-helper-fail", edit_case_edit_fail, "sku-1 is out of stock"},
};
static const size_t edit_case_count = sizeof edit_cases / sizeof edit_cases[0];

#endif
