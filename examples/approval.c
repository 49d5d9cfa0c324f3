/* approval.c - a durable expense workflow on the local runtime with the file store, or
   on Redis (the queue runtime):
   validate -> wait for approval (a signal) -> pay (compensated by a refund) -> notify.
   The execution survives its process: the first command parks it in the journal and
   exits; a second command, later, delivers the approval and finishes it.
   Build: make examples (or cc -std=c99 -O2 -I. examples/approval.c -pthread -lm)
   Run:
     approval submit  JOURNAL ID AMOUNT        starts expense ID, parks it, exits
     approval approve JOURNAL ID [--notify-fails]   approves it and runs it to its end
     approval reject  JOURNAL ID               rejects it
     approval status  JOURNAL ID               prints its outcome if it finished
     approval                                  the demo: all of the above in a temporary
                                               journal; exit status 0 when it behaves
   JOURNAL "redis:HOST:PORT" runs the same commands on Redis instead: the execution is a
   job there, parked as a delayed job while it waits; `approve` signals it and its own
   workers (or those of any other process serving "expense") finish it.
   The two commands share the journal one after the other, not at once: the file store
   takes a lock, so while one command holds the journal the other says "busy". A signal
   sent to an execution that no process is running is stored in the journal and read by
   the wait step when the execution resumes; that is what `approve` does (signal, then
   am2z_runtime_resume). A service that stays up would call am2z_runtime_signal from its
   own request handler instead (any thread). */
#define AM2Z_RESP_IMPLEMENTATION
#include "am2z_resp.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int notify_fails; /* the demo's way to make the last step fail */

static am2z_result validate(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e;
    (void)ctx;
    if (am2z_value_get_double(in, "amount", 0) <= 0)
        return am2z_fail(am2z_error_validation("amount", am2z_value_get(in, "amount"), "must be positive"));
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "validated", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

static am2z_result pay(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e;
    if (!am2z_value_get_bool(in, "approval.approved", 0))
        return am2z_fail(am2z_error_business("REJECTED", AM2Z_SEVERITY_LOW, "expense rejected by %s",
                                             am2z_value_get_string(in, "approval.by", "?")));
    /* a real payment API gets the idempotency key, so a re-run after a crash pays once */
    printf("  pay %.2f (idempotency key %s)\n", am2z_value_get_double(in, "amount", 0),
           am2z_ctx_idempotency_key(ctx));
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "paid", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

static am2z_result refund(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e;
    printf("  refund %.2f (idempotency key %s)\n", am2z_value_get_double(in, "amount", 0),
           am2z_ctx_idempotency_key(ctx));
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "refunded", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

static am2z_result notify(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e;
    (void)ctx;
    if (notify_fails) return am2z_fail(am2z_error_network("mail.example", 503, NULL));
    printf("  notify: expense paid\n");
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "notified", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

static am2z_processor *plain(const char *name, am2z_processor_fn fn) {
    return am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = fn}, NULL);
}

/* Opens the journal and a runtime with the workflow registered; 0 on failure. */
static int open_all(const char *journal, am2z_store **store, am2z_runtime **rt) {
    am2z_status st;
    *rt = NULL;
    *store = NULL;
    if (!strncmp(journal, "redis:", 6)) { /* redis:HOST:PORT: the records live in Redis */
        char host[256];
        const char *colon = strrchr(journal + 6, ':');
        am2z_queue_desc qd;
        memset(&qd, 0, sizeof qd);
        snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - journal - 6) : 255, journal + 6);
        qd.redis.host = host;
        qd.redis.port = colon ? atoi(colon + 1) : 6379;
        qd.concurrency = 2;
        if (!(*rt = am2z_queue_runtime_new(&qd, &st))) {
            fprintf(stderr, "cannot start on Redis: %s\n", am2z_status_detail());
            return 0;
        }
    } else if (!(*store = am2z_file_store_new(&(am2z_file_store_desc){.path = journal}, &st))) {
        fprintf(stderr, "%s: %s\n", st == AM2Z_STATUS_CONFLICT ? "journal busy" : "cannot open the journal",
                am2z_status_detail());
        return 0;
    } else {
        *rt = am2z_local_runtime_new(&(am2z_local_desc){.workers = 2, .store = *store}, NULL);
    }
    st = *rt ? am2z_runtime_register(*rt, am2z_chain_new(&(am2z_chain_desc){
                   .name = "expense", .count = 4,
                   .steps = (am2z_processor *[]){
                       plain("validate", validate),
                       am2z_wait_signal_new(&(am2z_wait_signal_desc){.name = "await-approval", .signal = "approval",
                                                                     .merge_path = "approval",
                                                                     .timeout_ms = 7 * 24 * 3600 * 1000LL}, NULL),
                       plain("pay", pay), plain("notify", notify)},
                   .compensations = (am2z_processor *[]){NULL, NULL, plain("refund", refund), NULL}}, NULL))
             : AM2Z_STATUS_NO_MEMORY;
    if (st) {
        fprintf(stderr, "setup failed: %s\n", am2z_status_detail());
        return 0;
    }
    return 1;
}

static void close_all(am2z_store *store, am2z_runtime *rt) {
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

/* Prints an outcome; returns 0 (completed), 1 (failed), 2 (still waiting). */
static int report(const char *id, const am2z_outcome *out) {
    char *s;
    if (!out->error) {
        s = am2z_json_write(out->state, 0, NULL);
        printf("%s: completed %s\n", id, s ? s : "");
        am2z_free(s);
        return 0;
    }
    if (!strcmp(am2z_error_root_cause(out->error)->code, "AM2Z_WAITING")) {
        printf("%s: waiting for approval\n", id);
        return 2;
    }
    s = am2z_json_write(out->error->details, 0, NULL);
    printf("%s: failed: %s\n  details %s\n", id, am2z_error_root_cause(out->error)->message, s ? s : "");
    am2z_free(s);
    return 1;
}

static int cmd_submit(const char *journal, const char *id, double amount) {
    am2z_store *store;
    am2z_runtime *rt;
    am2z_state *in;
    am2z_outcome out;
    int rc;
    if (!open_all(journal, &store, &rt)) return 3;
    in = am2z_state_new(NULL, am2z_value_set(am2z_value_object(), "amount", am2z_value_double(amount)), NULL);
    out = am2z_runtime_execute_with(rt, "expense", in, &(am2z_submit_desc){.durable = 1, .execution_id = id});
    rc = report(id, &out);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    close_all(store, rt);
    return rc == 2 ? 0 : rc;
}

static int cmd_decide(const char *journal, const char *id, int approved) {
    am2z_store *store;
    am2z_runtime *rt;
    am2z_outcome out;
    am2z_value *payload;
    am2z_status st;
    int rc = 3;
    if (!open_all(journal, &store, &rt)) return 3;
    payload = am2z_value_set(am2z_value_object(), "approved", am2z_value_bool(approved));
    payload = am2z_value_set(payload, "by", am2z_value_string("the manager"));
    memset(&out, 0, sizeof out);
    /* stored in the journal first, then the execution resumes in this process and its
       wait step finds the payload (on Redis the signal moves the job to wait, resume
       does nothing more, and this process's workers take it) */
    if ((st = am2z_runtime_signal(rt, id, "approval", payload)) != AM2Z_STATUS_OK ||
        (st = am2z_runtime_resume(rt, id, NULL)) != AM2Z_STATUS_OK ||
        (st = am2z_runtime_durable_outcome(rt, id, 60000, &out)) != AM2Z_STATUS_OK)
        fprintf(stderr, "%s: %s\n", id, am2z_status_detail());
    else
        rc = report(id, &out);
    am2z_outcome_clear(&out);
    am2z_value_release(payload);
    close_all(store, rt);
    return rc;
}

static int cmd_status(const char *journal, const char *id) {
    am2z_store *store;
    am2z_runtime *rt;
    am2z_outcome out;
    am2z_status st;
    int rc = 3;
    if (!open_all(journal, &store, &rt)) return 3;
    memset(&out, 0, sizeof out);
    st = am2z_runtime_durable_outcome(rt, id, 0, &out);
    if (st == AM2Z_STATUS_OK) rc = report(id, &out);
    else printf("%s: %s\n", id, st == AM2Z_STATUS_TIMEOUT ? "not finished" : am2z_status_detail());
    am2z_outcome_clear(&out);
    close_all(store, rt);
    return rc;
}

/* The demo: each command as it would run from a shell, one after the other. */
static int demo(void) {
    char journal[64];
    int ok = 1;
    snprintf(journal, sizeof journal, "/tmp/am2z_approval_%d.journal", (int)getpid());
    unlink(journal);
    printf("$ approval submit J exp-1 120\n");
    ok &= cmd_submit(journal, "exp-1", 120) == 0;
    printf("$ approval approve J exp-1\n");
    ok &= cmd_decide(journal, "exp-1", 1) == 0;
    printf("$ approval submit J exp-2 80; approval reject J exp-2\n");
    ok &= cmd_submit(journal, "exp-2", 80) == 0;
    ok &= cmd_decide(journal, "exp-2", 0) == 1;
    printf("$ approval submit J exp-3 45; approval approve J exp-3 --notify-fails\n");
    ok &= cmd_submit(journal, "exp-3", 45) == 0;
    notify_fails = 1;
    ok &= cmd_decide(journal, "exp-3", 1) == 1; /* paid, notify failed: refunded */
    notify_fails = 0;
    printf("$ approval status J exp-1\n");
    ok &= cmd_status(journal, "exp-1") == 0;
    unlink(journal);
    printf(ok ? "demo ok\n" : "demo FAILED\n");
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 1) return demo();
    if (argc >= 5 && !strcmp(argv[1], "submit")) return cmd_submit(argv[2], argv[3], atof(argv[4]));
    if (argc >= 4 && (!strcmp(argv[1], "approve") || !strcmp(argv[1], "reject"))) {
        notify_fails = argc >= 5 && !strcmp(argv[4], "--notify-fails");
        return cmd_decide(argv[2], argv[3], !strcmp(argv[1], "approve"));
    }
    if (argc >= 4 && !strcmp(argv[1], "status")) return cmd_status(argv[2], argv[3]);
    fprintf(stderr, "usage: approval [submit JOURNAL ID AMOUNT | approve JOURNAL ID [--notify-fails] | "
                    "reject JOURNAL ID | status JOURNAL ID]\n");
    return 2;
}
