/* test_durable.c - section 7d of am2z.h on the local runtime: a 10-step durable chain
   in a child process killed with kill -9 at every step boundary (before a step, and
   after a step's side effect but before its checkpoint) resumes in a new child to the
   state of an uninterrupted run, and a side-effect log (O_APPEND) shows each completed
   step ran once (the one in flight at most twice); a stopped runtime's execution
   resumes in the next one; compensation order, a failing compensation, durable
   compensation progress; wait steps: approve, reject, timeout, fallback, a signal before
   the wait, a signal from another thread and from another process (through the
   journal), 1,000 parked executions holding no thread; a
   corrupted journal tail detected and cut; bad input refused with a clear status. */
#define _DEFAULT_SOURCE /* usleep */
#define _POSIX_C_SOURCE 200809L
#include "../am2z.h"
#include "t.h"
#include "durable_fixture.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STEPS FX_STEPS

static char dir[64];
static char journal[128], effects[128], result[128];

/* ---- the 10-step chain ---- */

static int g_kill_step = -1;  /* the step that stops the child */
static int g_kill_after;      /* 0: at the step's start; 1: after its side effect */
static int g_pipe = -1;       /* tells the parent "kill me now" */

static am2z_result step_fn(am2z_ctx *ctx, const am2z_state *in) {
    int k = (int)(intptr_t)am2z_ctx_user_data(ctx);
    char line[256];
    const char *key = am2z_ctx_idempotency_key(ctx);
    int fd;
    if (k == g_kill_step && !g_kill_after) fx_stop_here(g_pipe);
    /* the side effect: one line per run of the step, with its idempotency key */
    snprintf(line, sizeof line, "%d %s\n", k, key ? key : "-");
    fd = open(effects, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        if (write(fd, line, strlen(line)) < 0) k = -100;
        close(fd);
    }
    if (k == g_kill_step && g_kill_after) fx_stop_here(g_pipe);
    return fx_ten_step(in, k);
}

static am2z_store *open_journal(void) {
    am2z_file_store_desc d;
    memset(&d, 0, sizeof d);
    d.path = journal;
    return am2z_file_store_new(&d, NULL);
}

static am2z_logger *g_quiet;
static am2z_logger *quiet(void) {
    if (!g_quiet) g_quiet = am2z_logger_new(&(am2z_logger_desc){.sink = AM2Z_SINK_SILENT}, NULL);
    return g_quiet;
}

static am2z_runtime *runtime_on(am2z_store *store) {
    am2z_local_desc d;
    memset(&d, 0, sizeof d);
    d.workers = 2;
    d.store = store;
    d.logger = quiet();
    return am2z_local_runtime_new(&d, NULL);
}

/* Child: run (resume = 0) or resume (1) execution "job-1" on the journal; exits 0 when
   it got an outcome. */
static void child_run(int resume) {
    am2z_store *store = open_journal();
    am2z_runtime *rt = store ? runtime_on(store) : NULL;
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    am2z_status st;
    size_t n = 0;
    if (!rt || am2z_runtime_register(rt, fx_ten_chain(step_fn, 0))) _exit(10);
    memset(&out, 0, sizeof out);
    if (!resume) {
        am2z_state *in = am2z_state_parse(NULL, "{\"sum\":0,\"trace\":[]}", AM2Z_NTS, NULL);
        out = am2z_runtime_execute_with(rt, "ten", in, &(am2z_submit_desc){.durable = 1, .execution_id = "job-1"});
        am2z_value_release(in);
    } else {
        if (am2z_runtime_resume(rt, NULL, &n) != AM2Z_STATUS_OK || n != 1) _exit(11);
        st = am2z_runtime_durable_outcome(rt, "job-1", 10000, &out);
        if (st != AM2Z_STATUS_OK) _exit(12);
    }
    fx_write_result(result, &out);
    am2z_outcome_clear(&out);
    am2z_runtime_free(rt);
    am2z_store_free(store);
    _exit(0);
}

static pid_t spawn(int resume, int kill_step, int kill_after, int *pipe_rd) {
    pid_t pid = fx_fork_piped(pipe_rd, &g_pipe);
    if (pid == 0) {
        g_kill_step = kill_step;
        g_kill_after = kill_after;
        child_run(resume);
    }
    return pid;
}

static void fresh_files(void) {
    unlink(journal);
    unlink(effects);
    unlink(result);
}

/* The uninterrupted run, then a kill -9 at every boundary: before step b (its
   predecessors checkpointed), and after step b's side effect (before its checkpoint). */
static void test_kill9_every_boundary(void) {
    char expect[256];
    int fd = -1, b, after, bad_key = 0;
    pid_t pid;
    fresh_files();
    pid = spawn(0, -1, 0, &fd);
    CHECK_INT(fx_wait_exit(pid), 0);
    close(fd);
    fx_read_file(result, expect, sizeof expect);
    CHECK_STR(expect, "ok [0,1,2,3,4,5,6,7,8,9] 285");
    for (after = 0; after <= 1; after++)
        for (b = 0; b < STEPS; b++) {
            fresh_files();
            pid = spawn(0, b, after, &fd);
            CHECK(fx_kill_when_asked(pid, fd, 10000));
            close(fd);
            pid = spawn(1, -1, 0, &fd);
            CHECK_INT(fx_wait_exit(pid), 0);
            close(fd);
            fx_check_ten_resumed(result, effects, expect, b, after, &bad_key);
        }
    CHECK(!bad_key);
}

/* ---- in-process tests ---- */

static am2z_runtime *mem_runtime(am2z_store **store) {
    *store = am2z_memory_store_new(NULL);
    return runtime_on(*store);
}

static am2z_state *empty_state(void) { return am2z_state_new(NULL, am2z_value_object(), NULL); }

static int g_block_step = -1, g_runs[STEPS];
static am2z_result counting_fn(am2z_ctx *ctx, const am2z_state *in) {
    int k = (int)(intptr_t)am2z_ctx_user_data(ctx);
    am2z_edit e;
    __atomic_add_fetch(&g_runs[k], 1, __ATOMIC_SEQ_CST);
    while (k == __atomic_load_n(&g_block_step, __ATOMIC_SEQ_CST) && !am2z_ctx_cancelled(ctx)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    if (am2z_ctx_cancelled(ctx)) return am2z_fail(am2z_error_cancelled("stopped"));
    e = am2z_edit_begin(in);
    am2z_edit_append(&e, "trace", am2z_value_int(k));
    return am2z_edit_end(&e);
}

static am2z_processor *counting_chain(const char *name) {
    am2z_processor *steps[4];
    char n[32];
    int k;
    for (k = 0; k < 4; k++) {
        snprintf(n, sizeof n, "%s%d", name, k);
        steps[k] = am2z_processor_new(&(am2z_processor_desc){.name = n, .fn = counting_fn,
                                                             .user_data = (void *)(intptr_t)k}, NULL);
    }
    return am2z_chain_new(&(am2z_chain_desc){.name = name, .steps = steps, .count = 4}, NULL);
}

/* A runtime stopped while step 2 runs leaves the execution unfinished; the next runtime
   on the same store resumes it without running steps 0 and 1 again. Also: a finished id
   is refused, its outcome is readable, forget frees the id. */
static void test_stop_and_resume(void) {
    am2z_store *store;
    am2z_runtime *rt = mem_runtime(&store);
    am2z_execution *e;
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    am2z_state *in = empty_state();
    am2z_submit_desc d;
    size_t n = 0;
    int k;
    memset(&d, 0, sizeof d);
    d.durable = 1;
    d.execution_id = "stop-1";
    memset(g_runs, 0, sizeof g_runs);
    memset(&out, 0, sizeof out);
    CHECK_INT(am2z_runtime_register(rt, counting_chain("c")), AM2Z_STATUS_OK);
    g_block_step = 2;
    e = am2z_runtime_submit_with(rt, "c", in, &d, NULL);
    CHECK(e != NULL);
    CHECK_STR(am2z_execution_id(e), "stop-1");
    for (k = 0; k < 5000 && __atomic_load_n(&g_runs[2], __ATOMIC_SEQ_CST) == 0; k++) usleep(1000);
    CHECK(am2z_runtime_submit_with(rt, "c", in, &d, NULL) == NULL); /* running: refused */
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_EXISTS);
    am2z_runtime_stop(rt, 0);
    CHECK_INT(am2z_execution_wait(e, 5000, &out), AM2Z_STATUS_OK);
    CHECK(out.error != NULL);
    am2z_execution_free(e);
    am2z_runtime_free(rt);
    g_block_step = -1;
    rt = runtime_on(store);
    CHECK_INT(am2z_runtime_register(rt, counting_chain("c")), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_resume(rt, NULL, &n), AM2Z_STATUS_OK);
    CHECK_INT(n, 1);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "stop-1", 5000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_STR(out.execution_id, "stop-1");
    CHECK_INT(am2z_value_len(am2z_value_get(out.state, "trace")), 4);
    CHECK_INT(g_runs[0], 1);
    CHECK_INT(g_runs[1], 1);
    CHECK_INT(g_runs[2], 2); /* in flight when stopped: ran again */
    CHECK_INT(g_runs[3], 1);
    /* finished: refused, resumable no more, readable, forgettable */
    CHECK(am2z_runtime_submit_with(rt, "c", in, &d, NULL) == NULL);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_EXISTS);
    CHECK(strstr(am2z_status_detail(), "has finished") != NULL);
    CHECK_INT(am2z_runtime_resume(rt, "stop-1", NULL), AM2Z_STATUS_NOT_FOUND);
    CHECK_INT(am2z_runtime_resume(rt, NULL, &n), AM2Z_STATUS_OK);
    CHECK_INT(n, 0);
    CHECK_INT(am2z_runtime_forget(rt, "stop-1"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "stop-1", 0, &out), AM2Z_STATUS_NOT_FOUND);
    am2z_outcome_clear(&out);
    out = am2z_runtime_execute_with(rt, "c", in, &d);
    CHECK(out.error == NULL);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

/* ---- compensation ---- */

static char g_log[256];
static pthread_mutex_t g_log_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_fail_refund, g_fail_ship_once;
static void log_add(const char *s) {
    pthread_mutex_lock(&g_log_mu);
    if (g_log[0]) strcat(g_log, ",");
    strcat(g_log, s);
    pthread_mutex_unlock(&g_log_mu);
}

static am2z_result saga_fn(am2z_ctx *ctx, const am2z_state *in) {
    const char *name = am2z_ctx_meta(ctx)->processor;
    if (!strcmp(name, "ship") && (!g_fail_ship_once || g_fail_ship_once-- == 1)) {
        log_add("ship!");
        return am2z_fail(am2z_error_business("NO_STOCK", AM2Z_SEVERITY_DEFAULT, "out of stock"));
    }
    if (!strcmp(name, "refund") && g_fail_refund) {
        log_add("refund!");
        return am2z_fail(am2z_error_business("BANK_DOWN", AM2Z_SEVERITY_DEFAULT, "bank down"));
    }
    return fx_saga_step(in, name, log_add); /* a compensation sees the state after its step */
}

static void test_compensation(void) {
    am2z_store *store;
    am2z_runtime *rt = mem_runtime(&store);
    am2z_state *in = empty_state();
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    CHECK_INT(am2z_runtime_register(rt, fx_saga_chain(saga_fn)), AM2Z_STATUS_OK);
    /* the refund and the release run in reverse, each with the state after its step */
    g_log[0] = '\0';
    out = am2z_runtime_execute(rt, "order", in);
    CHECK_STR(g_log, "reserve,charge,ship!,refund,release");
    fx_check_saga_compensated(&out);
    am2z_outcome_clear(&out);
    /* a failing compensation is reported and the others still run */
    g_log[0] = '\0';
    g_fail_refund = 1;
    out = am2z_runtime_execute(rt, "order", in);
    CHECK_STR(g_log, "reserve,charge,ship!,refund!,release");
    if (out.error) {
        CHECK_INT(am2z_value_get_bool(out.error->details, "compensated", 1), 0);
        CHECK_INT(am2z_value_get_bool(fx_comp_at(&out, 0), "ok", 1), 0);
        CHECK_STR(am2z_value_get_string(fx_comp_at(&out, 0), "error.code", ""), "BANK_DOWN");
        CHECK_INT(am2z_value_get_bool(fx_comp_at(&out, 1), "ok", 0), 1);
    }
    am2z_outcome_clear(&out);
    g_fail_refund = 0;
    /* durable: the outcome with its compensations is recorded; a re-run of the chain
       (resume) neither runs a step nor a compensation again */
    g_log[0] = '\0';
    out = am2z_runtime_execute_with(rt, "order", in, &(am2z_submit_desc){.durable = 1, .execution_id = "saga-1"});
    CHECK_STR(g_log, "reserve,charge,ship!,refund,release");
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "saga-1", 0, &out), AM2Z_STATUS_OK);
    CHECK(out.error != NULL);
    if (out.error) CHECK_INT(am2z_value_get_bool(out.error->details, "compensated", 0), 1);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

/* Compensation progress is checkpointed: a chain whose undo record says "refund done,
   release next" (a process that died between the two) runs only the release. */
static void test_compensation_progress(void) {
    am2z_store *store;
    am2z_runtime *rt = mem_runtime(&store);
    am2z_state *in = empty_state();
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    char rec[512];
    memset(&out, 0, sizeof out);
    CHECK_INT(am2z_runtime_register(rt, fx_saga_chain(saga_fn)), AM2Z_STATUS_OK);
    /* what a run that died after the refund left behind */
    snprintf(rec, sizeof rec, "%s", "{\"processor\":\"order\",\"input\":{},\"sessionId\":\"default\",\"startedAt\":1}");
    CHECK_INT(am2z_store_put(store, "x/saga-2/start", rec, strlen(rec)), AM2Z_STATUS_OK);
    snprintf(rec, sizeof rec, "%s", "{\"reserved\":true}");
    CHECK_INT(am2z_store_put(store, "x/saga-2/c/0/0", rec, strlen(rec)), AM2Z_STATUS_OK);
    snprintf(rec, sizeof rec, "%s", "{\"reserved\":true,\"charged\":true}");
    CHECK_INT(am2z_store_put(store, "x/saga-2/c/0/1", rec, strlen(rec)), AM2Z_STATUS_OK);
    snprintf(rec, sizeof rec, "%s",
             "{\"failedStep\":2,\"error\":{\"name\":\"BusinessError\",\"code\":\"NO_STOCK\",\"message\":\"out of "
             "stock\"},\"next\":0,\"results\":[{\"step\":1,\"processor\":\"refund\",\"ok\":true}]}");
    CHECK_INT(am2z_store_put(store, "x/saga-2/c/0/undo", rec, strlen(rec)), AM2Z_STATUS_OK);
    g_log[0] = '\0';
    CHECK_INT(am2z_runtime_resume(rt, "saga-2", NULL), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "saga-2", 5000, &out), AM2Z_STATUS_OK);
    CHECK_STR(g_log, "release");
    fx_check_saga_compensated(&out); /* the refund's result kept from the first process */
    if (out.error) CHECK_INT(am2z_value_len(am2z_value_get(out.error->details, "compensations")), 2);
    am2z_outcome_clear(&out);
    am2z_value_release(in);
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

/* ---- signals ---- */

static am2z_result pay_fn(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e;
    (void)ctx;
    if (!am2z_value_get_bool(in, "approval.approved", 0))
        return am2z_fail(am2z_error_business("REJECTED", AM2Z_SEVERITY_LOW, "expense rejected"));
    e = am2z_edit_begin(in);
    am2z_edit_set(&e, "paid", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

static am2z_runtime *g_sig_rt;
static void *signal_later(void *arg) {
    am2z_value *yes = am2z_json_parse("{\"approved\":true,\"by\":\"thread\"}", AM2Z_NTS, NULL, NULL);
    (void)arg;
    usleep(50000);
    am2z_runtime_signal(g_sig_rt, "exp-thread", "approval", yes);
    am2z_value_release(yes);
    return NULL;
}

static void test_signals(void) {
    am2z_store *store;
    am2z_runtime *rt = mem_runtime(&store);
    am2z_value *yes = am2z_json_parse("{\"approved\":true,\"by\":\"ann\"}", AM2Z_NTS, NULL, NULL);
    am2z_value *no = am2z_json_parse("{\"approved\":false}", AM2Z_NTS, NULL, NULL);
    am2z_value *fb = am2z_json_parse("{\"approved\":true,\"auto\":true}", AM2Z_NTS, NULL, NULL);
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    pthread_t th;
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("expt", 150, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("expf", 150, fb, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    /* approve */
    fx_check_signalled(rt, "exp-ok", yes, 5000, &out);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_bool(out.state, "paid", 0), 1);
    CHECK_STR(am2z_value_get_string(out.state, "approval.by", ""), "ann");
    CHECK_INT(am2z_value_get_bool(out.state, "validated", 0), 1);
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_signal(rt, "exp-ok", "approval", yes), AM2Z_STATUS_NOT_FOUND); /* finished */
    /* reject */
    fx_check_signalled(rt, "exp-no", no, 5000, &out);
    CHECK(out.error && !strcmp(am2z_error_root_cause(out.error)->code, "REJECTED"));
    am2z_outcome_clear(&out);
    /* time out: TimeoutError, or the fallback */
    fx_check_parks(rt, "expt", "exp-late");
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-late", 5000, &out), AM2Z_STATUS_OK);
    CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_TIMEOUT);
    am2z_outcome_clear(&out);
    out = fx_run_durable(rt, "expf", "exp-fb");
    am2z_outcome_clear(&out);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-fb", 5000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_bool(out.state, "approval.auto", 0), 1);
    am2z_outcome_clear(&out);
    /* a signal sent before the execution even starts is kept: no park at all */
    CHECK_INT(am2z_runtime_signal(rt, "exp-early", "approval", yes), AM2Z_STATUS_OK);
    out = fx_run_durable(rt, "exp", "exp-early");
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_bool(out.state, "paid", 0), 1);
    am2z_outcome_clear(&out);
    /* from another thread */
    g_sig_rt = rt;
    out = fx_run_durable(rt, "exp", "exp-thread");
    am2z_outcome_clear(&out);
    CHECK_INT(pthread_create(&th, NULL, signal_later, NULL), 0);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "exp-thread", 5000, &out), AM2Z_STATUS_OK);
    pthread_join(th, NULL);
    CHECK_STR(am2z_value_get_string(out.state, "approval.by", ""), "thread");
    am2z_outcome_clear(&out);
    /* a wait step outside a durable execution fails clearly */
    {
        am2z_state *in = empty_state();
        out = am2z_runtime_execute(rt, "exp", in);
        CHECK(out.error && am2z_error_root_cause(out.error)->kind == AM2Z_ERROR_VALIDATION);
        CHECK(out.error && strstr(am2z_error_root_cause(out.error)->message, "durable") != NULL);
        am2z_outcome_clear(&out);
        am2z_value_release(in);
    }
    am2z_value_release(yes);
    am2z_value_release(no);
    am2z_value_release(fb);
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

/* Child: phase 0 starts expense "xp-1" in the journal (it parks) and exits; phase 1, in
   another process, signals it and resumes it: the file store's lock admits one process
   at a time, so a signal from another program goes through the journal. */
static void child_expense(int phase) {
    am2z_store *store = open_journal();
    am2z_runtime *rt = store ? runtime_on(store) : NULL;
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    int rc = 0;
    if (!rt || am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn))) _exit(10);
    if (phase == 0) {
        out = fx_run_durable(rt, "exp", "xp-1");
        rc = fx_is_waiting(&out) ? 0 : 11;
    } else {
        am2z_value *yes = am2z_json_parse("{\"approved\":true,\"by\":\"other process\"}", AM2Z_NTS, NULL, NULL);
        memset(&out, 0, sizeof out);
        if (am2z_runtime_signal(rt, "xp-1", "approval", yes) || am2z_runtime_resume(rt, "xp-1", NULL) ||
            am2z_runtime_durable_outcome(rt, "xp-1", 10000, &out))
            rc = 12;
        else if (out.error || !am2z_value_get_bool(out.state, "paid", 0) ||
                 strcmp(am2z_value_get_string(out.state, "approval.by", ""), "other process") != 0)
            rc = 13;
        am2z_value_release(yes);
    }
    am2z_outcome_clear(&out);
    am2z_runtime_free(rt);
    am2z_store_free(store);
    _exit(rc);
}

static void test_signal_from_another_process(void) {
    pid_t pid;
    fresh_files();
    if ((pid = fork()) == 0) child_expense(0);
    CHECK_INT(fx_wait_exit(pid), 0);
    if ((pid = fork()) == 0) child_expense(1);
    CHECK_INT(fx_wait_exit(pid), 0);
}

static int thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* 1,000 parked executions hold no thread each; all finish once signalled. */
static void test_thousand_parked(void) {
    am2z_store *store;
    am2z_runtime *rt = mem_runtime(&store);
    am2z_value *yes = am2z_json_parse("{\"approved\":true}", AM2Z_NTS, NULL, NULL);
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    char id[32];
    int i, before, paid = 0;
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    out = fx_run_durable(rt, "exp", "park-first"); /* anything started lazily is started now */
    am2z_outcome_clear(&out);
    before = thread_count();
    CHECK(before > 0);
    CHECK_INT(fx_park_many(rt, "exp", "park", 0, 1000), 1000);
    CHECK_INT(thread_count(), before);
    for (i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "park-%d", i);
        CHECK_INT(am2z_runtime_signal(rt, id, "approval", yes), AM2Z_STATUS_OK);
    }
    for (i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "park-%d", i);
        am2z_status st = am2z_runtime_durable_outcome(rt, id, 10000, &out);
        if (st == AM2Z_STATUS_OK && !out.error) paid += am2z_value_get_bool(out.state, "paid", 0);
        else fprintf(stderr, "%s: %s %s\n", id, am2z_status_string(st), out.error ? out.error->message : "");
        am2z_outcome_clear(&out);
    }
    CHECK_INT(paid, 1000);
    am2z_value_release(yes);
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

/* A parked execution in the file journal; a torn record appended to the journal is
   detected and cut at the next open, and the execution still resumes and finishes. */
static void test_corrupt_tail(void) {
    am2z_store *store;
    am2z_runtime *rt;
    am2z_value *yes = am2z_json_parse("{\"approved\":true}", AM2Z_NTS, NULL, NULL);
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    size_t n = 0;
    int fd;
    fresh_files();
    store = open_journal();
    rt = runtime_on(store);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    fx_check_parks(rt, "exp", "torn-1");
    am2z_runtime_free(rt);
    am2z_store_free(store);
    /* half a record: a write cut by a crash */
    fd = open(journal, O_WRONLY | O_APPEND);
    CHECK(fd >= 0);
    CHECK_INT(write(fd, "\x41\x4d\x32\x5a\x01\x02\x03garbage", 14), 14);
    close(fd);
    store = open_journal();
    CHECK(store != NULL);
    if (!store) return;
    CHECK(am2z_file_store_info_get(store).torn_bytes_cut > 0);
    rt = runtime_on(store);
    CHECK_INT(am2z_runtime_register(rt, fx_expense_chain("exp", 0, NULL, fx_validate_fn, pay_fn)), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_resume(rt, NULL, &n), AM2Z_STATUS_OK);
    CHECK_INT(n, 1);
    CHECK_INT(am2z_runtime_signal(rt, "torn-1", "approval", yes), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "torn-1", 5000, &out), AM2Z_STATUS_OK);
    CHECK(out.error == NULL);
    CHECK_INT(am2z_value_get_bool(out.state, "paid", 0), 1);
    am2z_outcome_clear(&out);
    am2z_value_release(yes);
    am2z_runtime_free(rt);
    am2z_store_free(store);
}

/* A store that fails every put after the first n: the execution fails clearly. */
static int g_puts_left;
static am2z_store *g_inner;
static am2z_status flaky_put(void *ud, const char *key, const void *v, size_t len) {
    (void)ud;
    if (__atomic_sub_fetch(&g_puts_left, 1, __ATOMIC_SEQ_CST) < 0) {
        return AM2Z_STATUS_IO;
    }
    return am2z_store_put(g_inner, key, v, len);
}
static am2z_status flaky_get(void *ud, const char *key, void **v, size_t *len) {
    (void)ud;
    return am2z_store_get(g_inner, key, v, len);
}
static am2z_status flaky_remove(void *ud, const char *key) {
    (void)ud;
    return am2z_store_remove(g_inner, key);
}
static am2z_status flaky_scan(void *ud, const char *prefix, am2z_store_scan_fn fn, void *fd) {
    (void)ud;
    return am2z_store_scan(g_inner, prefix, fn, fd);
}
static const am2z_store_ops flaky_ops = {flaky_put, flaky_get, flaky_remove, flaky_scan, NULL};

static void test_store_failure_and_bad_input(void) {
    am2z_store *store;
    am2z_runtime *rt;
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    am2z_state *in = empty_state();
    am2z_runtime *plain = am2z_local_runtime_new(&(am2z_local_desc){.workers = 1, .logger = quiet()},
                                                 NULL);
    am2z_runtime *il = am2z_inline_runtime_new(NULL, NULL);
    g_inner = am2z_memory_store_new(NULL);
    store = am2z_store_new(&flaky_ops, NULL, NULL);
    rt = runtime_on(store);
    memset(g_runs, 0, sizeof g_runs);
    CHECK_INT(am2z_runtime_register(rt, counting_chain("f")), AM2Z_STATUS_OK);
    g_puts_left = 2; /* the start record and step 0's checkpoint */
    out = am2z_runtime_execute_with(rt, "f", in, &(am2z_submit_desc){.durable = 1, .execution_id = "flaky"});
    CHECK(out.error != NULL);
    if (out.error) {
        const am2z_error *root = am2z_error_root_cause(out.error);
        CHECK(strstr(root->message, "durable checkpoint 'x/flaky/c/0/1'") != NULL);
        CHECK_INT(root->retryable, 0);
    }
    CHECK_INT(g_runs[1], 1);
    CHECK_INT(g_runs[2], 0); /* never past a checkpoint that was not written */
    am2z_outcome_clear(&out);
    /* a saga whose step 1 ran but could not be checkpointed: it is compensated too */
    CHECK_INT(am2z_runtime_register(rt, fx_saga_chain(saga_fn)), AM2Z_STATUS_OK);
    g_puts_left = 2; /* the start record and step 0's checkpoint */
    g_log[0] = '\0';
    out = am2z_runtime_execute_with(rt, "order", in, &(am2z_submit_desc){.durable = 1, .execution_id = "flaky-saga"});
    CHECK_STR(g_log, "reserve,charge,refund,release");
    CHECK(out.error && strstr(am2z_error_root_cause(out.error)->message, "x/flaky-saga/c/0/1") != NULL);
    am2z_outcome_clear(&out);
    g_puts_left = 0; /* the start record cannot be written: submit fails */
    CHECK(am2z_runtime_submit_with(rt, "f", in, &(am2z_submit_desc){.durable = 1, .execution_id = "flaky2"},
                                   NULL) == NULL);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_IO);
    g_puts_left = 1000;
    /* bad input */
    CHECK(am2z_runtime_submit_with(rt, "f", in, &(am2z_submit_desc){.durable = 1, .execution_id = "a/b"}, NULL) == NULL);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(am2z_runtime_submit_with(rt, "f", in, &(am2z_submit_desc){.execution_id = "x1"}, NULL) == NULL);
    CHECK_INT(am2z_status_last(), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "execution_id") != NULL);
    CHECK(am2z_runtime_submit_with(plain, "f", in, &(am2z_submit_desc){.durable = 1}, NULL) == NULL);
    CHECK(strstr(am2z_status_detail(), "store") != NULL);
    CHECK(am2z_runtime_submit_with(il, "f", in, &(am2z_submit_desc){.durable = 1}, NULL) == NULL);
    CHECK(strstr(am2z_status_detail(), "inline") != NULL);
    CHECK_INT(am2z_runtime_signal(plain, "x", "approval", NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_runtime_signal(rt, "x", "bad name", NULL), AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK_INT(am2z_runtime_durable_outcome(rt, "nobody", 0, &out), AM2Z_STATUS_NOT_FOUND);
    CHECK_INT(am2z_runtime_resume(rt, "nobody", NULL), AM2Z_STATUS_NOT_FOUND);
    CHECK(am2z_wait_signal_new(&(am2z_wait_signal_desc){.name = "w", .signal = "a b", .merge_path = "x"}, NULL) == NULL);
    CHECK(am2z_wait_signal_new(&(am2z_wait_signal_desc){.name = "w", .signal = "ok"}, NULL) == NULL);
    CHECK(strstr(am2z_status_detail(), "merge_path") != NULL);
    am2z_value_release(in);
    am2z_runtime_free(il);
    am2z_runtime_free(plain);
    am2z_runtime_free(rt);
    am2z_store_free(store);
    am2z_store_free(g_inner);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/am2z_durable_%d", (int)getpid());
    mkdir(dir, 0700);
    snprintf(journal, sizeof journal, "%s/journal", dir);
    snprintf(effects, sizeof effects, "%s/effects", dir);
    snprintf(result, sizeof result, "%s/result", dir);
    T_RUN(test_kill9_every_boundary); /* first: these fork while this process has no threads */
    T_RUN(test_signal_from_another_process);
    T_RUN(test_stop_and_resume);
    T_RUN(test_compensation);
    T_RUN(test_compensation_progress);
    T_RUN(test_signals);
    T_RUN(test_thousand_parked);
    T_RUN(test_corrupt_tail);
    T_RUN(test_store_failure_and_bad_input);
    fresh_files();
    rmdir(dir);
    am2z_logger_release(g_quiet);
    return t_done();
}
