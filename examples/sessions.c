/* sessions.c - multi-tenant sessions on the local runtime: every tenant's executions run
   in its own session (per-session stats, "session:created" on first use), and
   am2z_runtime_stop_session shuts one tenant down - its in-flight work is cancelled with
   a clear error - while the other tenant carries on. The stopped tenant can come back.
   Build: make examples (or cc -std=c99 -O2 -I. examples/sessions.c -pthread -lm)
   Exit status 0 when every expectation below holds. */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_IMPLEMENTATION
#include "am2z.h"
#include <stdio.h>
#include <string.h>
#include <time.h>

static int failures;
#define EXPECT(c)                                                        \
    do {                                                                 \
        if (!(c)) {                                                      \
            fprintf(stderr, "expectation failed: %s (line %d)\n", #c, __LINE__); \
            failures++;                                                  \
        }                                                                \
    } while (0)

static void sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* "ingest": imports a tenant's documents, 1 ms each, and stops early when cancelled. */
static am2z_result ingest(am2z_ctx *ctx, const am2z_state *in) {
    int64_t docs = am2z_value_get_int(in, "docs", 10), i;
    for (i = 0; i < docs; i++) {
        if (am2z_ctx_cancelled(ctx)) {
            am2z_log_info(am2z_ctx_logger(ctx), "stopping after %lld of %lld documents", (long long)i,
                          (long long)docs);
            return am2z_fail(am2z_error_cancelled("ingest interrupted"));
        }
        sleep_ms(1);
    }
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "ingested", am2z_value_int(docs));
    return am2z_edit_end(&e);
}

/* Session lifecycle events, printed as they happen (handlers run on the emitting thread). */
static int created, cleaned;

static void on_session(const char *event, const am2z_value *data, void *user_data) {
    (void)user_data;
    printf("  event %-16s %s\n", event, am2z_value_get_string(data, "sessionId", "?"));
    if (strcmp(event, "session:created") == 0) __atomic_add_fetch(&created, 1, __ATOMIC_SEQ_CST);
    else __atomic_add_fetch(&cleaned, 1, __ATOMIC_SEQ_CST);
}

static am2z_state *tenant_job(const char *tenant, int docs) {
    char json[96];
    snprintf(json, sizeof json, "{\"tenant\":\"%s\",\"docs\":%d}", tenant, docs);
    return am2z_state_parse(tenant, json, AM2Z_NTS, NULL);
}

int main(void) {
    am2z_logger_desc ld;
    am2z_logger *log;
    am2z_local_desc rd;
    am2z_runtime *rt;
    am2z_processor_desc pd;
    am2z_execution *acme[3], *globex[3];
    am2z_outcome out = {0};
    am2z_value *stats, *active;
    am2z_state *small, *big;
    char *json;
    int i, cancelled = 0;

    memset(&ld, 0, sizeof ld);
    ld.min_level = AM2Z_LOG_WARN; /* keep the demo's output readable */
    log = am2z_logger_new(&ld, NULL);
    memset(&rd, 0, sizeof rd);
    rd.workers = 4;
    rd.logger = log;
    rt = am2z_local_runtime_new(&rd, NULL);
    am2z_logger_release(log); /* the runtime keeps its own reference */
    memset(&pd, 0, sizeof pd);
    pd.name = "ingest";
    pd.fn = ingest;
    if (am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)) != AM2Z_STATUS_OK) {
        fprintf(stderr, "setup failed: %s\n", am2z_status_detail());
        return 1;
    }
    am2z_runtime_on(rt, "session:created", on_session, NULL);
    am2z_runtime_on(rt, "session:cleanup", on_session, NULL);

    printf("two tenants submit work:\n");
    small = tenant_job("acme", 20);
    big = tenant_job("globex", 5000); /* would take 5 s */
    for (i = 0; i < 3; i++) {
        acme[i] = am2z_runtime_submit(rt, "ingest", small, "acme", NULL);
        globex[i] = am2z_runtime_submit(rt, "ingest", big, "globex", NULL);
        EXPECT(acme[i] && globex[i]);
        EXPECT(strncmp(am2z_execution_id(acme[i]), "ingest-", 7) == 0); /* known at once */
    }
    active = am2z_runtime_active_sessions(rt);
    json = am2z_json_write(active, AM2Z_JSON_COMPACT, NULL);
    printf("active sessions: %s\n", json ? json : "?");
    am2z_free(json);
    EXPECT(am2z_value_len(active) == 2);
    am2z_value_release(active);

    sleep_ms(30);
    printf("globex is shut down (grace 10 ms):\n");
    EXPECT(am2z_runtime_stop_session(rt, "globex", 10) == AM2Z_STATUS_OK);
    for (i = 0; i < 3; i++) {
        EXPECT(am2z_execution_wait(globex[i], 1000, &out) == AM2Z_STATUS_OK);
        EXPECT(strcmp(out.execution_id, am2z_execution_id(globex[i])) == 0);
        if (out.error) {
            printf("  globex #%d: %s: %s\n", i, out.error->name, out.error->message);
            cancelled += out.error->kind == AM2Z_ERROR_CANCELLED &&
                         strstr(out.error->message, "Session globex stopped") != NULL;
        }
        am2z_outcome_clear(&out);
        am2z_execution_free(globex[i]);
    }
    EXPECT(cancelled == 3);
    EXPECT(am2z_runtime_session_stats(rt, "globex") == NULL); /* forgotten */

    printf("acme is not affected:\n");
    for (i = 0; i < 3; i++) {
        EXPECT(am2z_execution_wait(acme[i], -1, &out) == AM2Z_STATUS_OK);
        EXPECT(out.error == NULL && am2z_value_get_int(out.state, "ingested", 0) == 20);
        EXPECT(strcmp(out.session_id, "acme") == 0);
        am2z_outcome_clear(&out);
        am2z_execution_free(acme[i]);
    }
    /* Counters settle before outcomes: with every outcome in hand, nothing runs. */
    stats = am2z_runtime_session_stats(rt, "acme");
    json = am2z_json_write(stats, AM2Z_JSON_COMPACT, NULL);
    printf("  acme stats: %s\n", json ? json : "?");
    am2z_free(json);
    EXPECT(am2z_value_get_int(stats, "completed", 0) == 3);
    EXPECT(am2z_value_get_int(stats, "running", -1) == 0);
    am2z_value_release(stats);

    printf("globex comes back with a small job:\n");
    am2z_value_release(big);
    big = tenant_job("globex", 3);
    out = am2z_runtime_execute_in_session(rt, "ingest", big, "globex");
    EXPECT(out.error == NULL);
    am2z_outcome_clear(&out);
    EXPECT(created == 3); /* acme, globex, globex again */
    EXPECT(cleaned == 1);

    am2z_value_release(small);
    am2z_value_release(big);
    am2z_runtime_free(rt); /* ends the remaining sessions: two more cleanups */
    EXPECT(cleaned == 3);
    printf(failures ? "FAILED\n" : "ok\n");
    return failures ? 1 : 0;
}
