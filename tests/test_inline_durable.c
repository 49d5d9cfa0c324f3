/* test_inline_durable.c - section 7d (durable executions) on the inline runtime
   (section 9): a 10-step durable chain interrupted at every step (a stopped session, then
   a fresh inline runtime over the same memory store; and a forked child killed with
   kill -9 at every step boundary, resumed over the file journal) resumes to the state of
   an uninterrupted run with completed steps not run again; compensation, and its
   progress across an interruption; approve / reject / time out / fallback on the virtual
   clock (a 1-hour and a 3-day wait pass in no wall time, at the exact virtual time);
   a wait's timeout kept across runtimes; a signal before the wait; a signal from another
   thread queued for the owner (threads only); a timed wait on the real clock; bad input
   and refusals. Also built with AM2Z_NO_THREADS (tests/run.sh). */
#define _DEFAULT_SOURCE /* usleep */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include "durable_fixture.h"
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
#ifndef AM2Z_NO_THREADS
#include <pthread.h>
#endif

#define STEPS FX_STEPS
#define T0 1700000000000 /* the virtual clock's start */

static char journal[128], effects[128];

static am2z_logger *g_quiet;
static am2z_logger *quiet(void) {
    if (!g_quiet) g_quiet = am2z_logger_new(&(am2z_logger_desc){.sink = AM2Z_SINK_SILENT}, NULL);
    return g_quiet;
}

static am2z_runtime *inline_on(am2z_store *store, int64_t clock_ms) {
    am2z_inline_desc d;
    memset(&d, 0, sizeof d);
    d.virtual_clock_ms = clock_ms;
    d.store = store;
    d.logger = quiet();
    return am2z_inline_runtime_new(&d, NULL);
}

static am2z_state *empty_state(void) { return am2z_state_new(NULL, am2z_value_object(), NULL); }

/* ---- the 10-step chain ---- */

static am2z_runtime *g_rt;      /* the runtime the steps run on */
static int g_stop_step = -1;    /* in-process: this step stops its session (once) */
static int g_kill_step = -1;    /* child: this step waits for the kill -9 */
static int g_kill_after;        /* 0: at the step's start; 1: after its side effect */
static int g_pipe = -1;         /* tells the parent "kill me now" */
static int g_runs[STEPS];

static am2z_result step_fn(am2z_ctx *ctx, const am2z_state *in) {
    int k = (int)(intptr_t)am2z_ctx_user_data(ctx);
    const char *key = am2z_ctx_idempotency_key(ctx);
    char line[128], want[64];
    int fd;
    if (k == g_kill_step && !g_kill_after) fx_stop_here(g_pipe);
    g_runs[k]++;
    snprintf(want, sizeof want, "job-1/0/%d", k);
    if (!key || strcmp(key, want) != 0) /* the idempotency key is the execution id + position */
        return am2z_fail(am2z_error_validation("key", NULL, "wrong idempotency key"));
    if (effects[0]) { /* the side effect: one line per run of the step */
        snprintf(line, sizeof line, "%d\n", k);
        fd = open(effects, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            if (write(fd, line, strlen(line)) < 0) k = -100;
            close(fd);
        }
    }
    if (k == g_kill_step && g_kill_after) fx_stop_here(g_pipe);
    if (k == g_stop_step) { /* an interruption: the session stops while this step runs */
        g_stop_step = -1;
        am2z_runtime_stop_session(g_rt, "default", 0);
    }
    return fx_ten_step(in, k);
}

static am2z_outcome run_ten(am2z_runtime *rt) {
    am2z_state *in = am2z_state_parse(NULL, "{\"sum\":0,\"trace\":[]}", AM2Z_NTS, NULL);
    am2z_outcome out = am2z_runtime_execute_with(rt, "ten", in, &(am2z_submit_desc){.durable = 1,
                                                                                     .execution_id = "job-1"});
    am2z_value_release(in);
    return out;
}

/* "ok <trace> <sum>" of an outcome, the comparison of runs. */
static void summary(const am2z_outcome *out, char *buf, size_t cap) {
    char *t;
    if (out->error) {
        snprintf(buf, cap, "failed %s", out->error->message);
        return;
    }
    t = am2z_json_write(am2z_value_get(out->state, "trace"), 0, NULL);
    snprintf(buf, cap, "ok %s %lld", t ? t : "?", (long long)am2z_value_get_int(out->state, "sum", -1));
    am2z_free(t);
}

/* Interrupted at step b (its session stopped while it runs), then a fresh inline
   runtime over the same memory store resumes: the same final state, steps before b
   ran once, b twice (it was in flight), the rest once. */
static void test_interrupt_every_step_fresh_runtime(void) {
    char got[256];
    int b, k;
    for (b = 0; b < STEPS; b++) {
        am2z_store *store = am2z_memory_store_new(NULL);
        am2z_runtime *rt = inline_on(store, T0);
        am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
        size_t n = 0;
        memset(g_runs, 0, sizeof g_runs);
        g_rt = rt;
        g_stop_step = b;
        CHECK_INT(am2z_runtime_register(rt, fx_ten_chain(step_fn, 0)), AM2Z_STATUS_OK);
        out = run_ten(rt);
        CHECK(out.error && out.error->kind == AM2Z_ERROR_CANCELLED);
        am2z_outcome_clear(&out);
        CHECK_INT(am2z_runtime_durable_outcome(rt, "job-1", 0, &out), AM2Z_STATUS_TIMEOUT); /* not finished */
        am2z_runtime_free(rt);
        rt = g_rt = inline_on(store, T0);
        CHECK_INT(am2z_runtime_register(rt, fx_ten_chain(step_fn, 0)), AM2Z_STATUS_OK);
        CHECK_INT(am2z_runtime_resume(rt, NULL, &n), AM2Z_STATUS_OK);
        CHECK_INT(n, 1);
        /* the resume ran at once, on this thread */
        CHECK_INT(am2z_runtime_durable_outcome(rt, "job-1", 0, &out), AM2Z_STATUS_OK);
        summary(&out, got, sizeof got);
        if (strcmp(got, "ok [0,1,2,3,4,5,6,7,8,9] 285") != 0) T_FAIL_("stopped at %d: %s", b, got);
        CHECK_STR(out.execution_id, "job-1");
        for (k = 0; k < STEPS; k++)
            if (g_runs[k] != (k == b ? 2 : 1)) T_FAIL_("stopped at %d: step %d ran %d times", b, k, g_runs[k]);
        am2z_outcome_clear(&out);
        am2z_runtime_free(rt);
        am2z_store_free(store);
    }
    g_rt = NULL;
}

static int runs_in_log(const char *log, int k) {
    const char *p;
    int n = 0;
    for (p = log; *p; p = strchr(p, '\n') + 1) {
        if (atoi(p) == k) n++;
        if (!strchr(p, '\n')) break;
    }
    return n;
}

static am2z_store *open_journal(void) {
    am2z_file_store_desc d;
    memset(&d, 0, sizeof d);
    d.path = journal;
    return am2z_file_store_new(&d, NULL);
}

/* Child: the 10-step chain on an inline runtime over the journal, stopped for the kill. */
static pid_t spawn_child(int kill_step, int kill_after, int *pipe_rd) {
    pid_t pid = fx_fork_piped(pipe_rd, &g_pipe);
    if (pid == 0) {
        am2z_store *store;
        am2z_runtime *rt;
        am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
        g_kill_step = kill_step;
        g_kill_after = kill_after;
        store = open_journal();
        rt = store ? inline_on(store, T0) : NULL;
        if (!rt || am2z_runtime_register(rt, fx_ten_chain(step_fn, 0))) _exit(10);
        out = run_ten(rt);
        _exit(out.error ? 11 : 12); /* not reached: killed at the step */
    }
    return pid;
}

/* kill -9 before step b (its predecessors checkpointed) and after step b's side effect
   (before its checkpoint), for every b; a fresh inline runtime in this process resumes
   over the journal. */
static void test_kill9_every_boundary(void) {
    char got[256], log[4096];
    int b, after, k, fd = -1;
    for (after = 0; after <= 1; after++)
        for (b = 0; b < STEPS; b++) {
            am2z_store *store;
            am2z_runtime *rt;
            am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
            pid_t pid;
            size_t n = 0;
            unlink(journal);
            unlink(effects);
            pid = spawn_child(b, after, &fd);
            CHECK(pid > 0);
            CHECK(fx_kill_when_asked(pid, fd, 20000));
            close(fd);
            store = open_journal();
            CHECK(store != NULL);
            if (!store) return;
            rt = inline_on(store, T0);
            CHECK_INT(am2z_runtime_register(rt, fx_ten_chain(step_fn, 0)), AM2Z_STATUS_OK);
            CHECK_INT(am2z_runtime_resume(rt, NULL, &n), AM2Z_STATUS_OK);
            CHECK_INT(n, 1);
            memset(&out, 0, sizeof out);
            CHECK_INT(am2z_runtime_durable_outcome(rt, "job-1", 0, &out), AM2Z_STATUS_OK);
            summary(&out, got, sizeof got);
            if (strcmp(got, "ok [0,1,2,3,4,5,6,7,8,9] 285") != 0) T_FAIL_("kill at %d (after=%d): %s", b, after, got);
            am2z_outcome_clear(&out);
            am2z_runtime_free(rt);
            am2z_store_free(store);
            fx_read_file(effects, log, sizeof log);
            for (k = 0; k < STEPS; k++) {
                int want = after && k == b ? 2 : 1, runs = runs_in_log(log, k);
                if (runs != want) T_FAIL_("kill at %d (after=%d): step %d ran %d times", b, after, k, runs);
            }
        }
    unlink(journal);
    unlink(effects);
}

/* ---- compensation ---- */

static char g_log[256];
static int g_fail_refund, g_stop_in_refund;
static void log_add(const char *s) {
    if (g_log[0]) strcat(g_log, ",");
    strcat(g_log, s);
}

static am2z_result saga_fn(am2z_ctx *ctx, const am2z_state *in) {
    const char *name = am2z_ctx_meta(ctx)->processor;
    if (!strcmp(name, "ship")) {
        log_add("ship!");
        return am2z_fail(am2z_error_business("NO_STOCK", AM2Z_SEVERITY_DEFAULT, "out of stock"));
    }
    if (!strcmp(name, "refund") && g_stop_in_refund) {
        g_stop_in_refund = 0;
        log_add("refund-stopped");
        am2z_runtime_stop_session(g_rt, "default", 0);
    }
    if (!strcmp(name, "refund") && g_fail_refund) {
        log_add("refund!");
        return am2z_fail(am2z_error_business("BANK_DOWN", AM2Z_SEVERITY_DEFAULT, "bank down"));
    }
    return fx_saga_step(in, name, log_add); /* a compensation sees the state after its step */
}

static void test_compensation(void) {
    am2z_store *store = am2z_memory_store_new(NULL);
    am2z_runtime *rt = g_rt = inline_on(store, T0);
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    size_t n = 0;
    CHECK_INT(am2z_runtime_register(rt, fx_saga_chain(saga_fn)), AM2Z_STATUS_OK);
    /* reverse order, each with the state after its step; recorded as the outcome */
    g_log[0] = '\0';
    out = fx_run_durable(rt, "order", "saga-1");
    CHECK_STR(g_log, "reserve,charge,ship!,refund,release");
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "saga-1", 0, &out), AM2Z_STATUS_OK);
    fx_check_saga_compensated(&out);
    am2z_outcome_clear(&out);
    /* a failing compensation is reported and the others still run */
    g_log[0] = '\0';
    g_fail_refund = 1;
    out = fx_run_durable(rt, "order", "saga-2");
    g_fail_refund = 0;
    CHECK_STR(g_log, "reserve,charge,ship!,refund!,release");
    if (out.error) {
        CHECK_INT(am2z_value_get_bool(out.error->details, "compensated", 1), 0);
        CHECK_STR(am2z_value_get_string(fx_comp_at(&out, 0), "error.code", ""), "BANK_DOWN");
        CHECK_INT(am2z_value_get_bool(fx_comp_at(&out, 1), "ok", 0), 1);
    }
    am2z_outcome_clear(&out);
    /* interrupted inside the refund: a fresh runtime resumes the compensations, it runs
       neither a step nor the failed step again */
    g_log[0] = '\0';
    g_stop_in_refund = 1;
    out = fx_run_durable(rt, "order", "saga-3");
    CHECK(out.error != NULL);
    am2z_outcome_clear(&out);
    CHECK_STR(g_log, "reserve,charge,ship!,refund-stopped,refund");
    am2z_runtime_free(rt);
    g_log[0] = '\0';
    rt = g_rt = inline_on(store, T0);
    CHECK_INT(am2z_runtime_register(rt, fx_saga_chain(saga_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_resume(rt, "saga-3", &n), AM2Z_STATUS_OK);
    CHECK_INT(n, 1);
    CHECK_STR(g_log, "refund,release");
    CHECK_INT(am2z_runtime_durable_outcome(rt, "saga-3", 0, &out), AM2Z_STATUS_OK);
    if (out.error) {
        CHECK_STR(am2z_error_root_cause(out.error)->code, "NO_STOCK");
        CHECK_INT(am2z_value_len(am2z_value_get(out.error->details, "compensations")), 2);
    }
    CHECK(out.error != NULL);
    am2z_outcome_clear(&out);
    am2z_runtime_free(rt);
    am2z_store_free(store);
    g_rt = NULL;
}

/* ---- waiting for a signal on the virtual clock ---- */

static int g_pays;
static am2z_result pay_fn(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e;
    g_pays++;
    if (!am2z_value_get_bool(in, "approval.approved", 0))
        return am2z_fail(am2z_error_business("REJECTED", AM2Z_SEVERITY_LOW, "expense rejected"));
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "paidAt", am2z_value_int(am2z_ctx_now_ms(ctx)));
    return am2z_edit_end(&e);
}

#define HOUR 3600000
#define DAY (24 * (int64_t)HOUR)

static void test_approve_reject_timeout_virtual_clock(void) {
    am2z_store *store = am2z_memory_store_new(NULL);
    am2z_runtime *rt = inline_on(store, T0);
    am2z_value *yes = am2z_json_parse("{\"approved\":true,\"by\":\"ann\"}", AM2Z_NTS, NULL, NULL);
    am2z_value *no = am2z_json_parse("{\"approved\":false}", AM2Z_NTS, NULL, NULL);
    am2z_value *fb = am2z_json_parse("{\"approved\":true,\"auto\":true}", AM2Z_NTS, NULL, NULL);
    int64_t wall0 = am2z_monotonic_ns();
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", HOUR, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("expf", 3 * DAY, fb, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    g_pays = 0;
    /* approve: parked, then the signal resumes it at once on this thread */
    fx_check_parked(rt, "exp-ok");
    CHECK_INT(am2z_runtime_signal(rt, "exp-ok", "approval", yes), AM2Z_STATUS_OK);
    CHECK_INT(g_pays, 1);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-ok", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_STR(am2z_value_get_string(out.state, "approval.by", ""), "ann");
    CHECK_INT(am2z_value_get_int(out.state, "paidAt", 0), T0); /* no virtual time passed */
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_signal(rt, "exp-ok", "approval", yes), AM2Z_STATUS_NOT_FOUND); /* finished */
    /* reject */
    fx_check_signalled(rt, "exp-no", no, 0, &out);
    CHECK(out.error && !strcmp(am2z_error_root_cause(out.error)->code, "REJECTED"));
    am2z_outcome_clear(&out);
    /* a 1-hour timeout: one ms short it still waits, at the hour it ends in TimeoutError */
    g_pays = 0;
    fx_check_parks(rt, "exp", "exp-late");
    CHECK_INT(am2z_inline_advance(rt, HOUR - 1), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-late", 0, &out), AM2Z_STATUS_TIMEOUT);
    CHECK_INT(am2z_inline_advance(rt, 1), AM2Z_STATUS_OK);
    CHECK_INT(am2z_inline_now_ms(rt), T0 + HOUR);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-late", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_TIMEOUT);
    CHECK_INT(g_pays, 0);
    am2z_outcome_clear(&out);
    /* a 3-day wait with a fallback, passed by one advance of 5 days: the resume runs at
       the wait's own time, exactly 3 days after it started */
    fx_check_parks(rt, "expf", "exp-fb");
    CHECK_INT(am2z_inline_advance(rt, 5 * DAY), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-fb", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_bool(out.state, "approval.auto", 0), 1);
    CHECK_INT(am2z_value_get_int(out.state, "paidAt", 0), T0 + HOUR + 3 * DAY);
    CHECK_INT(am2z_inline_now_ms(rt), T0 + HOUR + 5 * DAY);
    am2z_outcome_clear(&out);
    /* forget frees a finished id */
    CHECK_INT(am2z_runtime_forget(rt, "exp-fb"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-fb", 0, &out), AM2Z_STATUS_NOT_FOUND);
    /* days of virtual time took (loosely) no wall time */
    CHECK((am2z_monotonic_ns() - wall0) / 1000000 < 5000);
    am2z_value_release(yes);
    am2z_value_release(no);
    am2z_value_release(fb);
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

/* A signal sent before the execution starts is kept: the wait finds it and never
   parks. A wait's timeout counts from its first run, across runtimes. */
static void test_signal_before_and_restart(void) {
    am2z_store *store = am2z_memory_store_new(NULL);
    am2z_runtime *rt = inline_on(store, T0);
    am2z_value *yes = am2z_json_parse("{\"approved\":true}", AM2Z_NTS, NULL, NULL);
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    size_t n = 0;
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", HOUR, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_signal(rt, "early", "approval", yes), AM2Z_STATUS_OK);
    out = fx_run_durable(rt, "exp", "early");
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_bool(out.state, "approval.approved", 0), 1);
    am2z_outcome_clear(&out);
    /* parked in one runtime, approved through the next one */
    fx_check_parks(rt, "exp", "restart-ok");
    /* parked in one runtime, timed out in the next one (its clock 2 hours later) */
    fx_check_parks(rt, "exp", "restart-late");
    am2z_runtime_free(rt);
    rt = inline_on(store, T0 + 2 * HOUR);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", HOUR, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_signal(rt, "restart-ok", "approval", yes), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_resume(rt, NULL, &n), AM2Z_STATUS_OK);
    CHECK_INT(n, 2);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "restart-ok", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "restart-late", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_TIMEOUT);
    am2z_outcome_clear(&out);
    am2z_value_release(yes);
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

/* The real clock: an expired wait resumes at the next durable_outcome (its poll). */
static void test_real_clock_timeout(void) {
    am2z_store *store = am2z_memory_store_new(NULL);
    am2z_runtime *rt = inline_on(store, 0);
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 20, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    fx_check_parks(rt, "exp", "real-1");
    usleep(60000);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "real-1", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_TIMEOUT);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_inline_advance(rt, 1), AM2Z_STATUS_INVALID_ARGUMENT); /* still no virtual clock */
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

#ifndef AM2Z_NO_THREADS
/* A signal from another thread never runs the inline runtime there: it is stored and
   queued, and the owner's next durable_outcome (or advance) runs the execution. */
static am2z_runtime *g_sig_rt;
static int g_sig_delay_ms;
static void *signal_from_thread(void *arg) {
    am2z_value *yes = am2z_json_parse("{\"approved\":true,\"by\":\"thread\"}", AM2Z_NTS, NULL, NULL);
    if (g_sig_delay_ms) usleep(g_sig_delay_ms * 1000);
    *(am2z_status *)arg = am2z_runtime_signal(g_sig_rt, "thr-1", "approval", yes);
    am2z_value_release(yes);
    return NULL;
}

static void test_signal_from_another_thread(void) {
    am2z_store *store = am2z_memory_store_new(NULL);
    am2z_runtime *rt = g_sig_rt = inline_on(store, T0);
    am2z_status st = AM2Z_STATUS_PROTOCOL;
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    pthread_t th;
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    g_pays = 0;
    fx_check_parks(rt, "exp", "thr-1");
    g_sig_delay_ms = 0;
    CHECK_INT(pthread_create(&th, NULL, signal_from_thread, &st), 0);
    pthread_join(th, NULL);
    CHECK_INT(st, AM2Z_STATUS_OK);
    CHECK_INT(g_pays, 0); /* queued, not run on the signalling thread */
    CHECK_INT(am2z_runtime_durable_outcome(rt, "thr-1", 0, &out), AM2Z_STATUS_OK);
    CHECK_INT(g_pays, 1);
    CHECK_STR(am2z_value_get_string(out.state, "approval.by", ""), "thread");
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_forget(rt, "thr-1"), AM2Z_STATUS_OK);
    /* the owner waits in durable_outcome; a signal 50 ms later wakes it and it runs */
    fx_check_parks(rt, "exp", "thr-1");
    g_sig_delay_ms = 50;
    st = AM2Z_STATUS_PROTOCOL;
    CHECK_INT(pthread_create(&th, NULL, signal_from_thread, &st), 0);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "thr-1", 20000, &out), AM2Z_STATUS_OK);
    pthread_join(th, NULL);
    CHECK_INT(st, AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    /* queued, then run by the owner's next advance */
    CHECK_INT(am2z_runtime_forget(rt, "thr-1"), AM2Z_STATUS_OK);
    out = fx_run_durable(rt, "exp", "thr-1");
    am2z_outcome_clear(&out);
    g_sig_delay_ms = 0;
    CHECK_INT(pthread_create(&th, NULL, signal_from_thread, &st), 0);
    pthread_join(th, NULL);
    g_pays = 0;
    CHECK_INT(am2z_inline_advance(rt, 0), AM2Z_STATUS_OK);
    CHECK_INT(g_pays, 1);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "thr-1", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    am2z_runtime_free(rt);
    am2z_store_free(store);
}
#endif

/* ---- refusals ---- */

static void test_refusals(void) {
    am2z_store *store = am2z_memory_store_new(NULL);
    am2z_runtime *plain = inline_on(NULL, T0), *rt = inline_on(store, T0);
    am2z_state *in = empty_state();
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    am2z_execution *e, *e2;
    int64_t t0 = am2z_monotonic_ns();
    CHECK_INT(am2z_runtime_register(plain, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    /* no store: refused, the detail says what is missing */
    CHECK(am2z_runtime_submit_with(plain, "exp", in, &(am2z_submit_desc){.durable = 1}, NULL) == NULL);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "am2z_inline_desc.store") != NULL);
    CHECK_INT(am2z_runtime_signal(plain, "x", "approval", NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_runtime_resume(plain, NULL, NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    /* options a resume could not honour, an id without durable, a bad id */
    CHECK(am2z_runtime_submit_with(rt, "exp", in, &(am2z_submit_desc){.execution_id = "a"}, NULL) == NULL);
    CHECK(strstr(am2z_status_detail(), "execution_id is only for durable") != NULL);
    CHECK(am2z_runtime_submit_with(rt, "exp", in, &(am2z_submit_desc){.durable = 1, .delay_ms = 5}, NULL) == NULL);
    CHECK(strstr(am2z_status_detail(), "delay_ms") != NULL);
    CHECK(am2z_runtime_submit_with(rt, "exp", in, &(am2z_submit_desc){.durable = 1, .execution_id = "a/b"}, NULL) ==
          NULL);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(am2z_runtime_submit_with(rt, "nope", in, &(am2z_submit_desc){.durable = 1, .execution_id = "n"}, NULL) ==
          NULL);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_NOT_FOUND);
    /* a submitted, not yet run id is claimed: a second run is refused; freeing the
       unstarted handle leaves it resumable */
    e = am2z_runtime_submit_with(rt, "exp", in, &(am2z_submit_desc){.durable = 1, .execution_id = "dup"}, NULL);
    CHECK(e != NULL);
    if (e) CHECK_STR(am2z_execution_id(e), "dup");
    e2 = am2z_runtime_submit_with(rt, "exp", in, &(am2z_submit_desc){.durable = 1, .execution_id = "dup"}, NULL);
    CHECK(e2 == NULL);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_EXISTS);
    am2z_execution_free(e);
    CHECK_INT(am2z_runtime_resume(rt, "dup", NULL), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "dup", 0, &out), AM2Z_STATUS_TIMEOUT); /* parked at the wait */
    /* durable_outcome's wait is bounded; without threads nothing could finish it, so it
       does not wait at all */
    CHECK_INT(am2z_runtime_durable_outcome(rt, "dup", 30, &out), AM2Z_STATUS_TIMEOUT);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "unknown", 0, &out), AM2Z_STATUS_NOT_FOUND);
    /* no execution_id: on the virtual clock the generated one is the inline runtime's
       deterministic "<processor>-<virtual ms>-<n>" */
    e = am2z_runtime_submit_with(rt, "exp", in, &(am2z_submit_desc){.durable = 1}, NULL);
    CHECK(e != NULL);
    if (e) CHECK(strncmp(am2z_execution_id(e), "exp-1700000000000-", 18) == 0);
    am2z_execution_free(e);
    /* a wait step outside a durable chain fails with a ValidationError */
    out = am2z_runtime_execute(rt, "exp", in);
    CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_VALIDATION);
    am2z_outcome_clear(&out);
    CHECK((am2z_monotonic_ns() - t0) / 1000000 < 5000);
    am2z_value_release(in);
    am2z_runtime_free(plain);
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

int main(void) {
    snprintf(journal, sizeof journal, "/tmp/am2z_ildur_%d.journal", (int)getpid());
    snprintf(effects, sizeof effects, "/tmp/am2z_ildur_%d.effects", (int)getpid());
    T_RUN(test_interrupt_every_step_fresh_runtime);
    T_RUN(test_kill9_every_boundary);
    effects[0] = '\0'; /* the other tests log no side effects */
    T_RUN(test_compensation);
    T_RUN(test_approve_reject_timeout_virtual_clock);
    T_RUN(test_signal_before_and_restart);
    T_RUN(test_real_clock_timeout);
#ifndef AM2Z_NO_THREADS
    T_RUN(test_signal_from_another_thread);
#endif
    T_RUN(test_refusals);
    am2z_logger_release(g_quiet);
    return t_done();
}
