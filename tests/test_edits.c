/* test_edits.c - issue 8's defect on both runtimes: a processor whose edit fails (a path
   through a number, say) and that goes on editing and returns must end in a failure
   outcome whose message names the first failing edit and its reason, never in a success
   with a fresh state. One processor per value edit and per am2z_edit_* function
   (tests/edit_cases.h), run through am2z_runtime_execute on the local runtime and on the
   queue runtime against a private redis-server. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "fixture.h"
#include "edit_cases.h"

static t_redis server;
static int port;

/* Registers every edit case on rt, runs each in session "shop" on a state that carries
   an order, and checks the outcome: a failure with the expected message, a single
   attempt (an edit failure is not retryable), and never a state that lost the input's
   session or order id. */
static void run_cases(am2z_runtime *rt) {
    am2z_state *in = am2z_state_parse("shop", "{\"id\":\"A-1\",\"total\":{\"cents\":100}}", AM2Z_NTS, NULL);
    size_t i;
    CHECK(in != NULL);
    for (i = 0; i < edit_case_count; i++) {
        am2z_processor_desc d;
        memset(&d, 0, sizeof d);
        d.name = edit_cases[i].name;
        d.fn = edit_cases[i].fn;
        d.retry.max_attempts = 3; /* would retry a retryable failure: edits must not be */
        d.retry.delay_ms = -1;
        CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&d, NULL)), AM2Z_STATUS_OK);
    }
    for (i = 0; i < edit_case_count; i++) {
        am2z_outcome out = am2z_runtime_execute_in_session(rt, edit_cases[i].name, in, "shop");
        if (!out.error) {
            T_FAIL_("%s: a failed edit became a success", edit_cases[i].name);
        } else if (!strstr(out.error->message, edit_cases[i].expected_message_part)) {
            T_FAIL_("%s: message \"%s\" lacks \"%s\"", edit_cases[i].name, out.error->message,
                    edit_cases[i].expected_message_part);
        }
        if (strcmp(edit_cases[i].name, "edit-helper-fail") != 0) CHECK_INT(out.attempts, 1);
        CHECK_STR(out.session_id, "shop");
        if (out.state) {
            CHECK_STR(am2z_state_session_id(out.state), "shop");
            CHECK_STR(am2z_value_get_string(out.state, "id", ""), "A-1");
        }
        am2z_outcome_clear(&out);
    }
    am2z_value_release(in);
}

static void test_local_runtime(void) {
    am2z_logger *lg = fx_quiet();
    am2z_local_desc d;
    am2z_runtime *rt;
    memset(&d, 0, sizeof d);
    d.workers = 2;
    d.logger = lg;
    rt = am2z_local_runtime_new(&d, NULL);
    CHECK(rt != NULL);
    if (rt) run_cases(rt);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void test_queue_runtime(void) {
    am2z_logger *lg = fx_quiet();
    am2z_queue_desc d;
    am2z_runtime *rt;
    if (!port) T_SKIP("no redis-server");
    memset(&d, 0, sizeof d);
    d.redis.host = "127.0.0.1";
    d.redis.port = port;
    d.concurrency = 2;
    d.logger = lg;
    rt = am2z_queue_runtime_new(&d, NULL);
    CHECK(rt != NULL);
    if (rt) run_cases(rt);
    am2z_runtime_free(rt);
    am2z_logger_release(lg);
}

static void start_server(void) {
    T_REDIS_START(&server, NULL);
    port = server.port;
}

int main(void) {
    T_RUN(test_local_runtime);
    T_RUN(start_server);
    T_RUN(test_queue_runtime);
    t_redis_stop(&server);
    return t_done();
}
