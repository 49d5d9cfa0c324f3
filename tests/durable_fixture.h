/* durable_fixture.h - what the durable-execution tests (test_durable.c on the local
   runtime, test_inline_durable.c on the inline one, test_queue_durable.c on the queue
   one) share: the 10-step chain and its side-effect log, the expense approval chain,
   the order saga, a child killed with kill -9 at a step boundary, and the checks on
   their outcomes. Include after am2z.h (or am2z_resp.h) and t.h; needs no threads. */
#ifndef AM2Z_TEST_DURABLE_FIXTURE_H
#define AM2Z_TEST_DURABLE_FIXTURE_H

#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define FX_STEPS 10

/* ---- the 10-step chain "ten": step k adds k*k to "sum" and appends k to "trace" ---- */

/* In a child that is to die at a step boundary: tells the parent "kill me now" through
   the pipe fd and waits for its kill -9. */
static inline void fx_stop_here(int fd) {
    char c = 'k';
    if (write(fd, &c, 1) != 1) _exit(3);
    for (;;) pause();
}

/* fork() with a pipe from the child to this process: in the child (0 returned) *pipe_wr
   is the pipe's write end (for fx_stop_here); here *pipe_rd its read end (close it). */
static inline pid_t fx_fork_piped(int *pipe_rd, int *pipe_wr) {
    int fds[2];
    pid_t pid;
    *pipe_rd = -1;
    if (pipe(fds) != 0) return -1;
    pid = fork();
    if (pid == 0) {
        close(fds[0]);
        *pipe_wr = fds[1];
        return 0;
    }
    close(fds[1]);
    *pipe_rd = fds[0];
    return pid;
}

/* Step k's work on in: {"sum": sum + k*k, "trace": [..., k]}. */
static inline am2z_result fx_ten_step(const am2z_state *in, int k) {
    am2z_edit e = am2z_edit_begin(in);
    am2z_edit_set(&e, "sum", am2z_value_int(am2z_value_get_int(in, "sum", 0) + (int64_t)k * k));
    am2z_edit_append(&e, "trace", am2z_value_int(k));
    return am2z_edit_end(&e);
}

/* The chain "ten" of steps s0..s9, each fn with user_data k (its position), each with
   timeout_ms (0: none). */
static inline am2z_processor *fx_ten_chain(am2z_processor_fn fn, int64_t timeout_ms) {
    am2z_processor *steps[FX_STEPS];
    char name[16];
    int k;
    for (k = 0; k < FX_STEPS; k++) {
        snprintf(name, sizeof name, "s%d", k);
        steps[k] = am2z_processor_new(&(am2z_processor_desc){.name = name, .fn = fn, .user_data = (void *)(intptr_t)k,
                                                             .timeout_ms = timeout_ms}, NULL);
    }
    return am2z_chain_new(&(am2z_chain_desc){.name = "ten", .steps = steps, .count = FX_STEPS}, NULL);
}

/* The runs of step k in a side-effect log of lines "<k> job-1/0/<k>" (execution "job-1"),
   and *bad_key set when a line carries another step's idempotency key. */
static inline int fx_runs_of(const char *log, int k, int *bad_key) {
    char want[64];
    const char *p = log;
    int n = 0;
    snprintf(want, sizeof want, "%d job-1/0/%d\n", k, k);
    while ((p = strstr(p, want)) != NULL) {
        if (p == log || p[-1] == '\n') n++;
        p += strlen(want);
    }
    for (p = log; *p; p = strchr(p, '\n') + 1) { /* every line carries its step's key */
        int s = atoi(p);
        char line[64];
        snprintf(line, sizeof line, "%d job-1/0/%d\n", s, s);
        if (strncmp(p, line, strlen(line)) != 0) *bad_key = 1;
        if (!strchr(p, '\n')) break;
    }
    return n;
}

/* Up to cap - 1 bytes of the file at path into buf ("" when it cannot be read). */
static inline void fx_read_file(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

/* After a kill -9 at step b (after: once its side effect was logged) and the resume in
   another process: the result file reads expect, and the side-effect log shows each
   completed step ran once, the one in flight twice when killed after its effect;
   *bad_key set when a line carries another step's key. */
static inline void fx_check_ten_resumed(const char *result_path, const char *effects_path, const char *expect, int b,
                                        int after, int *bad_key) {
    char got[256], log[4096];
    int k;
    fx_read_file(result_path, got, sizeof got);
    if (strcmp(got, expect) != 0) T_FAIL_("kill at step %d (after=%d): \"%s\"", b, after, got);
    fx_read_file(effects_path, log, sizeof log);
    for (k = 0; k < FX_STEPS; k++) {
        int n = fx_runs_of(log, k, bad_key), want = after && k == b ? 2 : 1;
        if (n != want) T_FAIL_("kill at step %d (after=%d): step %d ran %d times", b, after, k, n);
    }
}

/* Writes a child's outcome to path as one line: "ok <trace> <sum>" or "failed <message>". */
static inline void fx_write_result(const char *path, const am2z_outcome *out) {
    FILE *f = fopen(path, "w");
    if (!f) return;
    if (out->error) {
        fprintf(f, "failed %s", out->error->message);
    } else {
        char *t = am2z_json_write(am2z_value_get(out->state, "trace"), 0, NULL);
        fprintf(f, "ok %s %lld", t ? t : "?", (long long)am2z_value_get_int(out->state, "sum", -1));
        am2z_free(t);
    }
    fclose(f);
}

/* The child's exit code, 100 + the signal that ended it, or -1. */
static inline int fx_wait_exit(pid_t pid) {
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Waits up to timeout_ms for the child's "kill me" byte on fd, kills it with SIGKILL and
   reaps it; 1 when it asked and died of the SIGKILL. */
static inline int fx_kill_when_asked(pid_t pid, int fd, int timeout_ms) {
    struct pollfd pf;
    char c;
    int ok;
    pf.fd = fd;
    pf.events = POLLIN;
    ok = poll(&pf, 1, timeout_ms) == 1 && read(fd, &c, 1) == 1;
    kill(pid, SIGKILL);
    return fx_wait_exit(pid) == 100 + SIGKILL && ok;
}

/* ---- outcomes ---- */

/* 1 when out is a parked execution (its root cause AM2Z_WAITING). */
static inline int fx_is_waiting(const am2z_outcome *out) {
    const am2z_error *root = out->error ? am2z_error_root_cause(out->error) : NULL;
    return root && root->code && !strcmp(root->code, "AM2Z_WAITING");
}

/* Runs processor proc durably as execution id, on the input {}. */
static inline am2z_outcome fx_run_durable(am2z_runtime *rt, const char *proc, const char *id) {
    am2z_state *in = am2z_state_new(NULL, am2z_value_object(), NULL);
    am2z_outcome out = am2z_runtime_execute_with(rt, proc, in, &(am2z_submit_desc){.durable = 1, .execution_id = id});
    am2z_value_release(in);
    return out;
}

/* Runs processor proc durably as execution id and checks that it parked. */
static inline void fx_check_parks(am2z_runtime *rt, const char *proc, const char *id) {
    am2z_outcome out = fx_run_durable(rt, proc, id);
    CHECK(fx_is_waiting(&out));
    am2z_outcome_clear(&out);
}

/* Execution id of the chain "exp" (fx_expense_chain) parks: no outcome yet, and it
   cannot be forgotten. */
static inline void fx_check_parked(am2z_runtime *rt, const char *id) {
    am2z_outcome out = {0}; /* durable_outcome clears what *out holds */
    fx_check_parks(rt, "exp", id);
    CHECK_INT(am2z_runtime_durable_outcome(rt, id, 0, &out), AM2Z_STATUS_TIMEOUT);
    CHECK_INT(am2z_runtime_forget(rt, id), AM2Z_STATUS_CONFLICT); /* parked: not finished */
    am2z_outcome_clear(&out);
}

/* fx_check_parked, then the signal "approval" with v (borrowed) resumes it: its outcome
   in *out (cleared first) within wait_ms (0 on the inline runtime, where the signal runs
   it on the caller's thread). */
static inline void fx_check_signalled(am2z_runtime *rt, const char *id, const am2z_value *v, int64_t wait_ms,
                                      am2z_outcome *out) {
    fx_check_parked(rt, id);
    CHECK_INT(am2z_runtime_signal(rt, id, "approval", v), AM2Z_STATUS_OK);
    CHECK_INT(am2z_runtime_durable_outcome(rt, id, wait_ms, out), AM2Z_STATUS_OK);
}

/* Runs proc durably as the executions "<prefix>-<i>" for i from..to-1: how many parked. */
static inline int fx_park_many(am2z_runtime *rt, const char *proc, const char *prefix, int from, int to) {
    char id[64];
    int i, waiting = 0;
    for (i = from; i < to; i++) {
        am2z_outcome out;
        snprintf(id, sizeof id, "%s-%d", prefix, i);
        out = fx_run_durable(rt, proc, id);
        waiting += fx_is_waiting(&out);
        am2z_outcome_clear(&out);
    }
    return waiting;
}

/* Compensation i of a failed saga's outcome (its details' "compensations"), or NULL. */
static inline const am2z_value *fx_comp_at(const am2z_outcome *out, size_t i) {
    return am2z_value_at(am2z_value_get(out->error->details, "compensations"), i);
}

/* ---- the expense chain: "<name>.validate", "<name>.wait" for the signal "approval"
   (merged at "approval"; timeout_ms and fallback as given, fallback borrowed), "<name>.pay" ---- */

/* The expense chain's validate step: marks the state "validated". */
static inline am2z_result fx_validate_fn(am2z_ctx *ctx, const am2z_state *in) {
    am2z_edit e = am2z_edit_begin(in);
    (void)ctx;
    am2z_edit_set(&e, "validated", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

static inline am2z_processor *fx_expense_chain(const char *name, int64_t timeout_ms, const am2z_value *fallback,
                                               am2z_processor_fn validate_fn, am2z_processor_fn pay_fn) {
    char v[32], w[32], p[32];
    snprintf(v, sizeof v, "%s.validate", name);
    snprintf(w, sizeof w, "%s.wait", name);
    snprintf(p, sizeof p, "%s.pay", name);
    return am2z_chain_new(&(am2z_chain_desc){
        .name = name, .count = 3,
        .steps = (am2z_processor *[]){
            am2z_processor_new(&(am2z_processor_desc){.name = v, .fn = validate_fn}, NULL),
            am2z_wait_signal_new(&(am2z_wait_signal_desc){.name = w, .signal = "approval", .merge_path = "approval",
                                                          .timeout_ms = timeout_ms, .fallback = fallback}, NULL),
            am2z_processor_new(&(am2z_processor_desc){.name = p, .fn = pay_fn}, NULL)}}, NULL);
}

/* ---- the order saga: reserve, charge, ship (undone by release, refund) ---- */

/* The saga steps' common part, after each test's failures: a compensation must see the
   state after its step ("<name>-saw-wrong-state" logged otherwise), the step is logged,
   and charge / reserve mark the state. */
static inline am2z_result fx_saga_step(const am2z_state *in, const char *name, void (*log_add)(const char *)) {
    am2z_edit e;
    if (!strcmp(name, "refund") && !am2z_value_get_bool(in, "charged", 0)) log_add("refund-saw-wrong-state");
    if (!strcmp(name, "release") && am2z_value_get_bool(in, "charged", 0)) log_add("release-saw-wrong-state");
    log_add(name);
    e = am2z_edit_begin(in);
    if (!strcmp(name, "charge")) am2z_edit_set(&e, "charged", am2z_value_bool(1));
    if (!strcmp(name, "reserve")) am2z_edit_set(&e, "reserved", am2z_value_bool(1));
    return am2z_edit_end(&e);
}

/* out is the order saga's failure at "ship" (NO_STOCK), compensated: the refund (of step
   1, "charge") ran first and the release after it, both fine. */
static inline void fx_check_saga_compensated(const am2z_outcome *out) {
    CHECK(out->error != NULL);
    if (!out->error) return;
    CHECK_STR(am2z_error_root_cause(out->error)->code, "NO_STOCK");
    CHECK_INT(am2z_value_get_int(out->error->details, "failedStep", -1), 2);
    CHECK_INT(am2z_value_get_bool(out->error->details, "compensated", 0), 1);
    CHECK_STR(am2z_value_get_string(fx_comp_at(out, 0), "processor", ""), "refund");
    CHECK_INT(am2z_value_get_int(fx_comp_at(out, 0), "step", -1), 1);
    CHECK_STR(am2z_value_get_string(fx_comp_at(out, 1), "processor", ""), "release");
    CHECK_INT(am2z_value_get_bool(fx_comp_at(out, 1), "ok", 0), 1);
}

/* The chain "order", every step and compensation fn (it tells them apart by name). */
static inline am2z_processor *fx_saga_chain(am2z_processor_fn fn) {
    const char *const names[5] = {"reserve", "charge", "ship", "release", "refund"};
    am2z_processor *p[5];
    int i;
    for (i = 0; i < 5; i++) p[i] = am2z_processor_new(&(am2z_processor_desc){.name = names[i], .fn = fn}, NULL);
    return am2z_chain_new(&(am2z_chain_desc){.name = "order", .count = 3, .steps = p,
                                             .compensations = (am2z_processor *[]){p[3], p[4], NULL}}, NULL);
}

#endif
