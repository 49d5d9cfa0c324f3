/* test_queue_reshard.c - a live resharding of a Redis Cluster slot, invisible to callers
   (am2z_resp.h section 3, CLUSTER: ASK, MOVED and TRYAGAIN are followed), against a
   3-master cluster started here (tests/cluster_harness.h, as tests/test_queue_cluster.c):
     - ASK: while a slot migrates, a plain GET of a key already moved is answered (ASKING
       on the importing node), one still on the source too, a pipeline mixing both and a
       new key (created on the importing node) as well;
     - TRYAGAIN: a command naming moved and unmoved keys is retried until the call's
       deadline (command_timeout_ms), then returns the TRYAGAIN reply (SERVER) with a
       detail saying so, within the bound; a keyless script (whose keys are by name) is
       refused before it runs for as long as the slot migrates (its counter unchanged),
       and runs exactly once when the migration ends while it is being retried;
     - MOVED after SETSLOT NODE: followed, then the connection reconnects to the new
       owner by itself;
     - the queue runtime ({am2z} prefix, cluster seeds) with 3 caller threads and a worker
       runtime running continuously while the runtime's slot is migrated key by key with
       MIGRATE to another master, then SETSLOT NODE: lost 0, wrong 0, duplicated 0 (each
       input's processor runs counted), no call failed, and no call took longer than the
       migration window plus 10 s (the bound: calls wait, they do not fail). */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "fixture.h"
#include "cluster_harness.h"
#include <pthread.h>

/* private (am2z_resp.h section 3): a failed call as the queue runtime reports it */
am2z_error *am2z__redis_error(const am2z_redis *r, am2z_status st);

#define NNODES FX_CLUSTER_NODES

static t_redis node0, node1, node2;
static fx_cluster cl = {{&node0, &node1, &node2}, {"", "", ""}, {NULL, NULL, NULL}};
static am2z_logger *g_quiet;

static long long now_ms(void) { return am2z_monotonic_ns() / 1000000; }

/* One admin command on the node at port; 0 when it answered OK-ish (not an error). */
static int admin(int port, am2z_reply *rep, const char *fmt, const char *a, const char *b) {
    am2z_redis *r = fx_cluster_conn(port);
    int rc = -1;
    if (r && am2z_redis_command(r, rep, fmt, a, b) == AM2Z_STATUS_OK) rc = 0;
    else if (getenv("RESHARD_VERBOSE")) fprintf(stderr, "  admin on %d: %s\n", port, am2z_reply_str(rep));
    am2z_redis_free(r);
    return rc;
}

/* The migration of slot from port `from` to port `to`, in its three steps. */
static void migration_open(int slot, int from, int to) {
    char s[16], from_id[64], to_id[64];
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    snprintf(s, sizeof s, "%d", slot);
    fx_node_id(from, from_id, sizeof from_id);
    fx_node_id(to, to_id, sizeof to_id);
    /* the target first, so it accepts ASKING before the source sends anyone there */
    if (admin(to, &rep, "CLUSTER SETSLOT %s IMPORTING %s", s, from_id)) T_FAIL_("IMPORTING: %s", am2z_reply_str(&rep));
    if (admin(from, &rep, "CLUSTER SETSLOT %s MIGRATING %s", s, to_id)) T_FAIL_("MIGRATING: %s", am2z_reply_str(&rep));
    am2z_reply_clear(&rep);
}

/* MIGRATE of one key from the node at from to the one at to; 0 on OK or NOKEY. */
static int migrate_key(am2z_redis *src, int to, const char *key, size_t len) {
    am2z_reply rep;
    char port[16];
    int rc;
    memset(&rep, 0, sizeof rep);
    snprintf(port, sizeof port, "%d", to);
    rc = am2z_redis_command(src, &rep, "MIGRATE 127.0.0.1 %s %b 0 5000", port, key, len) == AM2Z_STATUS_OK ? 0 : -1;
    if (rc) T_FAIL_("MIGRATE %.*s: %s", (int)len, key, am2z_reply_str(&rep));
    am2z_reply_clear(&rep);
    return rc;
}

/* Every node told the slot lives on `to`, the target first, then the source (as redis-cli
   --cluster reshard does). */
static void migration_close(int slot, int from, int to) {
    char s[16], to_id[64];
    int i;
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    snprintf(s, sizeof s, "%d", slot);
    fx_node_id(to, to_id, sizeof to_id);
    if (admin(to, &rep, "CLUSTER SETSLOT %s NODE %s", s, to_id)) T_FAIL_("NODE on target: %s", am2z_reply_str(&rep));
    if (admin(from, &rep, "CLUSTER SETSLOT %s NODE %s", s, to_id)) T_FAIL_("NODE on source: %s", am2z_reply_str(&rep));
    for (i = 0; i < NNODES; i++)
        if (cl.nodes[i]->port != from && cl.nodes[i]->port != to) admin(cl.nodes[i]->port, &rep, "CLUSTER SETSLOT %s NODE %s", s, to_id);
    am2z_reply_clear(&rep);
}

static int other_master(int port) {
    int i;
    for (i = 0; i < NNODES; i++)
        if (cl.nodes[i]->port != port) return cl.nodes[i]->port;
    return 0;
}

static am2z_redis *cluster_conn(const char *key, int64_t command_timeout_ms) {
    am2z_redis_desc d;
    am2z_redis *r;
    memset(&d, 0, sizeof d);
    d.cluster_nodes = cl.seeds;
    d.n_cluster_nodes = NNODES;
    d.cluster_key = key;
    d.connect_timeout_ms = 2000;
    d.command_timeout_ms = command_timeout_ms;
    r = am2z_redis_new(&d, NULL);
    if (r && am2z_redis_connect(r) != AM2Z_STATUS_OK) {
        T_FAIL_("cluster connect: %s", am2z_status_detail());
        am2z_redis_free(r);
        r = NULL;
    }
    return r;
}

/* -- the connection layer, one slot mid-migration -- */

#define TAG "{rs-unit}"
static const char *const counter_script = "return redis.call('INCR', ARGV[1])"; /* its key by name, not in KEYS */

typedef struct script_call {
    am2z_redis_script *s;
    am2z_status st;
    long long value, ms;
    char err[160];
} script_call;

static void *script_main(void *arg) {
    script_call *c = (script_call *)arg;
    am2z_redis *r = cluster_conn(TAG, 10000);
    am2z_reply rep;
    const char *argv[1] = {TAG ":count"};
    long long t0 = now_ms();
    memset(&rep, 0, sizeof rep);
    c->st = r ? am2z_redis_evalsha(r, &rep, c->s, 0, 1, argv, NULL) : AM2Z_STATUS_IO;
    c->ms = now_ms() - t0;
    c->value = rep.type == AM2Z_REPLY_INTEGER ? rep.integer : -1;
    snprintf(c->err, sizeof c->err, "%s", c->st == AM2Z_STATUS_OK ? "" : am2z_status_detail());
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return NULL;
}

static void test_ask_tryagain_moved(void) {
    int slot = am2z_redis_key_slot(TAG, AM2Z_NTS), from = fx_slot_owner(&cl, slot), to = other_master(from);
    am2z_redis *src = fx_cluster_conn(from), *r = NULL, *q = NULL;
    am2z_reply rep;
    am2z_status st;
    script_call call;
    pthread_t th;
    const char *argv[1] = {TAG ":count"};
    long long t0, ms;
    memset(&rep, 0, sizeof rep);
    memset(&call, 0, sizeof call);
    CHECK(from > 0 && to > 0 && src != NULL);
    if (!src) return;
    CHECK_INT(am2z_redis_command(src, &rep, "SET %s 1", TAG ":a"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_command(src, &rep, "SET %s 2", TAG ":b"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_command(src, &rep, "SET %s 0", TAG ":count"), AM2Z_STATUS_OK);
    r = cluster_conn(TAG, 400);
    call.s = am2z_redis_script_new(counter_script, AM2Z_NTS, NULL);
    if (!r || !call.s) goto done;
    CHECK_INT(fx_server_port(r), from);
    migration_open(slot, from, to);
    migrate_key(src, to, TAG ":a", strlen(TAG ":a"));
    migrate_key(src, to, TAG ":count", strlen(TAG ":count"));

    /* ASK: a moved key answered through ASKING, an unmoved one by the source */
    CHECK_INT(am2z_redis_command(r, &rep, "GET %s", TAG ":a"), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "1");
    CHECK_INT(am2z_redis_command(r, &rep, "GET %s", TAG ":b"), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "2");
    CHECK(am2z_redis_is_connected(r));
    /* in a pipeline, with a new key, which the importing node gets */
    CHECK_INT(am2z_redis_append(r, "GET %s", TAG ":a"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_append(r, "SET %s 3", TAG ":c"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_append(r, "GET %s", TAG ":b"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_append(r, "GET %s", TAG ":c"), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_read(r, &rep), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "1");
    CHECK_INT(am2z_redis_read(r, &rep), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "OK");
    CHECK_INT(am2z_redis_read(r, &rep), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "2");
    CHECK_INT(am2z_redis_read(r, &rep), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "3");
    CHECK_INT(am2z_redis_command(src, &rep, "EXISTS %s", TAG ":c"), AM2Z_STATUS_SERVER); /* ASK: not on the source */
    CHECK(strncmp(am2z_reply_str(&rep), "ASK ", 4) == 0);

    /* TRYAGAIN: one key moved, one not; retried until the 400 ms command timeout */
    t0 = now_ms();
    st = am2z_redis_command(r, &rep, "MGET %s %s", TAG ":a", TAG ":b");
    ms = now_ms() - t0;
    CHECK_INT(st, AM2Z_STATUS_SERVER);
    CHECK(strncmp(am2z_reply_str(&rep), "TRYAGAIN", 8) == 0);
    if (!strstr(am2z_status_detail(), "is being migrated") || !strstr(am2z_status_detail(), "until the call's deadline"))
        T_FAIL_("detail: %s", am2z_status_detail());
    if (ms < 250 || ms > 3000) T_FAIL_("TRYAGAIN retried for %lld ms; the deadline was 400 ms", ms);
    CHECK(am2z_redis_is_connected(r)); /* an error reply: the stream is intact */
    {
        am2z_error *e = am2z__redis_error(r, st); /* the runtime's view: transient, retryable */
        CHECK(e != NULL);
        if (e) {
            CHECK_STR(e->name, "NetworkError");
            CHECK(e->retryable);
        }
        am2z_error_release(e);
    }
    /* a keyless script naming its key by ARGV is refused before it runs while the slot
       migrates (the guard keys): no INCR happened */
    t0 = now_ms();
    st = am2z_redis_evalsha(r, &rep, call.s, 0, 1, argv, NULL);
    ms = now_ms() - t0;
    CHECK_INT(st, AM2Z_STATUS_SERVER);
    CHECK(strncmp(am2z_reply_str(&rep), "TRYAGAIN", 8) == 0);
    if (ms < 250 || ms > 3000) T_FAIL_("script retried for %lld ms; the deadline was 400 ms", ms);
    q = fx_cluster_conn(to);
    CHECK(q != NULL);
    if (q) {
        CHECK_INT(am2z_redis_append(q, "ASKING"), AM2Z_STATUS_OK);
        CHECK_INT(am2z_redis_append(q, "GET %s", TAG ":count"), AM2Z_STATUS_OK);
        am2z_redis_read(q, &rep);
        CHECK_INT(am2z_redis_read(q, &rep), AM2Z_STATUS_OK);
        CHECK_STR(am2z_reply_str(&rep), "0");
    }

    /* the same script called while the migration ends: it runs once, when it can */
    if (pthread_create(&th, NULL, script_main, &call) != 0) { T_FAIL_("thread"); goto done; }
    t_redis_sleep_ms(300);
    migrate_key(src, to, TAG ":b", strlen(TAG ":b"));
    migration_close(slot, from, to);
    pthread_join(th, NULL);
    if (call.st != AM2Z_STATUS_OK) T_FAIL_("script across the end of the migration: %s", call.err);
    CHECK_INT(call.value, 1);
    CHECK(call.ms >= 250);
    if (q) {
        CHECK_INT(am2z_redis_command(q, &rep, "GET %s", TAG ":count"), AM2Z_STATUS_OK);
        CHECK_STR(am2z_reply_str(&rep), "1");
    }

    /* MOVED: r still talks to the source; followed, then r reconnects to the new owner */
    CHECK_INT(am2z_redis_command(r, &rep, "GET %s", TAG ":b"), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "2");
    CHECK(!am2z_redis_is_connected(r)); /* closed after the MOVED: the next command asks the seeds */
    CHECK_INT(am2z_redis_command(r, &rep, "GET %s", TAG ":c"), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "3");
    CHECK_INT(fx_server_port(r), to);
done:
    am2z_reply_clear(&rep);
    am2z_redis_script_free(call.s);
    am2z_redis_free(q);
    am2z_redis_free(r);
    am2z_redis_free(src);
}

/* -- the queue runtime while its slot migrates -- */

#define MAX_CALLS 100000
static fx_call calls[MAX_CALLS];
static int runs[MAX_CALLS]; /* processor runs per call index: more than 1 is a duplicate */

static am2z_result p_twice(am2z_ctx *ctx, const am2z_state *in) {
    int64_t n = am2z_value_get_int(in, "n", 0);
    (void)ctx;
    if (n % 1000000 < MAX_CALLS) __atomic_add_fetch(&runs[n % 1000000], 1, __ATOMIC_ACQ_REL);
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "n", am2z_value_int(2 * n)));
}

static int twice_right(const am2z_state *out, int64_t n) { return am2z_value_get_int(out, "n", -1) == 2 * n; }

/* Keys of slot on the node at port (CLUSTER COUNTKEYSINSLOT). */
static long long keys_in_slot(int port, int slot) {
    am2z_redis *r = fx_cluster_conn(port);
    am2z_reply rep;
    char s[16];
    long long n = -1;
    memset(&rep, 0, sizeof rep);
    snprintf(s, sizeof s, "%d", slot);
    if (r && am2z_redis_command(r, &rep, "CLUSTER COUNTKEYSINSLOT %s", s) == AM2Z_STATUS_OK) n = rep.integer;
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return n;
}

static void test_queue_reshard(void) {
    int slot = am2z_redis_key_slot("{am2z}", AM2Z_NTS), from = fx_slot_owner(&cl, slot), to = other_master(from);
    int i, dup = 0, total, overlapped = 0;
    long long until, t_open, t_close, longest = 0, moved = 0;
    char s[16];
    am2z_queue_desc qd;
    am2z_runtime *worker;
    am2z_redis *src;
    am2z_runtime *producer;
    fx_callers cs;
    fx_tally tally;
    snprintf(s, sizeof s, "%d", slot);
    memset(&qd, 0, sizeof qd);
    qd.redis.cluster_nodes = cl.seeds;
    qd.redis.n_cluster_nodes = NNODES;
    qd.redis.connect_timeout_ms = 2000;
    qd.bull_prefix = "{am2z}";
    qd.logger = g_quiet;
    /* 20 s: the calls' deadline, well past the migration window */
    if (!fx_worker_producer(&qd, "twice", p_twice, 20000, &worker, &producer)) return;
    fx_callers_start(&cs, producer, "twice", twice_right, calls, MAX_CALLS, "RESHARD_VERBOSE");
    until = now_ms() + 15000;
    while (fx_callers_ok_after(&cs, 0) < 100 && now_ms() < until) t_redis_sleep_ms(20);
    CHECK(fx_callers_ok_after(&cs, 0) >= 100);

    /* the migration, key by key, while the callers run */
    src = fx_cluster_conn(from);
    CHECK(src != NULL);
    t_open = now_ms();
    migration_open(slot, from, to);
    while (src) {
        am2z_reply rep;
        size_t k;
        int got;
        memset(&rep, 0, sizeof rep);
        if (am2z_redis_command(src, &rep, "CLUSTER GETKEYSINSLOT %s 10", s) != AM2Z_STATUS_OK || rep.type != AM2Z_REPLY_ARRAY) {
            T_FAIL_("GETKEYSINSLOT: %s", am2z_reply_str(&rep));
            am2z_reply_clear(&rep);
            break;
        }
        got = (int)rep.len;
        for (k = 0; k < rep.len; k++) {
            const am2z_reply *key = am2z_reply_at(&rep, k);
            if (migrate_key(src, to, am2z_reply_str(key), key->len) == 0) moved++;
            t_redis_sleep_ms(5); /* the callers run between the keys: a longer window */
        }
        am2z_reply_clear(&rep);
        if (!got || t_case_failed) break;
    }
    migration_close(slot, from, to);
    t_close = now_ms();
    fprintf(stderr, "  %lld keys migrated one by one in %lld ms\n", moved, t_close - t_open);
    CHECK(moved >= 10);
    CHECK_INT(keys_in_slot(from, slot), 0);
    CHECK_INT(fx_slot_owner(&cl, slot), to);
    am2z_redis_free(src);

    until = now_ms() + 20000;
    while (fx_callers_ok_after(&cs, t_close + 500) < 100 && now_ms() < until) t_redis_sleep_ms(50);
    fx_callers_stop(&cs, "test_queue_reshard", 30000);
    tally = fx_callers_tally(&cs, t_open, t_close);
    total = cs.ncalls < MAX_CALLS ? cs.ncalls : MAX_CALLS;
    for (i = 0; i < total; i++) {
        if (!calls[i].start_ms) continue;
        if (runs[i] > 1) dup++;
        if (calls[i].end_ms && calls[i].end_ms - calls[i].start_ms > longest) longest = calls[i].end_ms - calls[i].start_ms;
        if (calls[i].start_ms <= t_close && calls[i].end_ms >= t_open) overlapped++;
    }
    fprintf(stderr, "  duplicated %d; %d overlapped the migration; longest call %lld ms (window %lld ms)\n", dup,
            overlapped, longest, t_close - t_open);
    CHECK_INT(tally.lost, 0);
    CHECK_INT(tally.wrong, 0);
    CHECK_INT(dup, 0);
    CHECK_INT(tally.err, 0);
    CHECK(overlapped >= FX_CALLERS);
    CHECK(longest <= t_close - t_open + 10000);
    CHECK(fx_callers_ok_after(&cs, t_close + 500) >= 100);
    am2z_runtime_free(producer);
    am2z_runtime_free(worker);
}

int main(void) {
    g_quiet = fx_quiet();
    if (fx_cluster_require(&cl, "test_queue_reshard", 2)) {
        T_RUN(test_ask_tryagain_moved);
        T_RUN(test_queue_reshard);
    }
    fx_cluster_stop(&cl);
    am2z_logger_release(g_quiet);
    return t_done();
}
