/* test_queue_cluster.c - the Redis Cluster building blocks of am2z_resp.h (section 3,
   CLUSTER) and the hash-tagged layout, against a 3-master cluster started here
   (redis-server --cluster-enabled yes x 3 on free loopback ports + redis-cli --cluster
   create --cluster-yes):
     - am2z_redis_key_slot: the spec's CRC16 test vector ("123456789" -> 0x31C3), the
       hash-tag rules, and the same slot as CLUSTER KEYSLOT for 2,000 keys;
     - am2z_redis_parse_redirect: MOVED and ASK as the cluster sends them (a real MOVED
       names the node CLUSTER SLOTS gives for the slot), malformed ones refused;
     - a queue runtime with bull_prefix "{am2z}", connected to the master that owns that
       slot, runs jobs (a session included) on the cluster: every key it wrote lies in
       that one slot, so its Lua scripts run on a cluster node;
     - cluster_nodes + cluster_key: bad descs refused; a connect finds the slot's master
       from seeds (a dead seed skipped); after the slot is given to another master a
       command's MOVED is followed, the connection closes, and the next connect lands on
       the new owner;
     - a queue runtime given only the seeds runs jobs from 3 caller threads while the
       slot's master is killed with kill -9 and its replica (added here) takes over:
       every call answered (lost 0, wrong 0), and the calls after the failover succeed.
   One slot for the whole runtime: see README "Redis Cluster" for what remains. */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"
#include "fixture.h"
#include "cluster_harness.h"

#define NNODES FX_CLUSTER_NODES

static t_redis node0, node1, node2, node3; /* node3: the replica test_cluster_failover adds */
static fx_cluster cl = {{&node0, &node1, &node2}, {"", "", ""}, {NULL, NULL, NULL}};
static am2z_logger *g_quiet;

/* -- tests without a server -- */

static void test_slot_vectors(void) {
    CHECK_INT(am2z_redis_key_slot("123456789", AM2Z_NTS), 0x31C3); /* the spec's CRC16 check value */
    CHECK_INT(am2z_redis_key_slot("", 0), 0);
    /* hash tags, the cluster spec's examples */
    CHECK_INT(am2z_redis_key_slot("{user1000}.following", AM2Z_NTS), am2z_redis_key_slot("user1000", AM2Z_NTS));
    CHECK_INT(am2z_redis_key_slot("{user1000}.followers", AM2Z_NTS), am2z_redis_key_slot("user1000", AM2Z_NTS));
    CHECK_INT(am2z_redis_key_slot("foo{}{bar}", AM2Z_NTS), am2z_redis_key_slot("foo{}{bar}", 10));
    CHECK(am2z_redis_key_slot("foo{}{bar}", AM2Z_NTS) != am2z_redis_key_slot("bar", AM2Z_NTS));
    CHECK_INT(am2z_redis_key_slot("foo{{bar}}zap", AM2Z_NTS), am2z_redis_key_slot("{bar", AM2Z_NTS));
    CHECK_INT(am2z_redis_key_slot("foo{bar}{zap}", AM2Z_NTS), am2z_redis_key_slot("bar", AM2Z_NTS));
    CHECK_INT(am2z_redis_key_slot("{am2z}:am2z~greet:wait", AM2Z_NTS), am2z_redis_key_slot("am2z", 4));
    /* len counts: a tag past len is no tag, bytes after NUL count */
    CHECK_INT(am2z_redis_key_slot("ab{c}", 2), am2z_redis_key_slot("ab", AM2Z_NTS));
    CHECK(am2z_redis_key_slot("a\0b", 3) != am2z_redis_key_slot("a", AM2Z_NTS));
}

static void test_redirect_parse(void) {
    am2z_reply rep;
    am2z_redis_redirect rd;
    const char *bad[] = {"MOVED 16384 127.0.0.1:7000", "MOVED x 127.0.0.1:7000", "MOVED 12 127.0.0.1", "MOVED 12 h:0",
                         "MOVED 12 h:65536", "MOVED 12 h:70x", "MOVED 12", "ASK  1 h:1", "MOVED 12 h:"};
    size_t i;
    memset(&rep, 0, sizeof rep);
    rep.type = AM2Z_REPLY_ERROR;
    snprintf(rep.small, sizeof rep.small, "MOVED 3999 127.0.0.1:6381");
    rep.len = strlen(rep.small);
    CHECK_INT(am2z_redis_parse_redirect(&rep, &rd), AM2Z_STATUS_OK);
    CHECK_INT(rd.ask, 0);
    CHECK_INT(rd.slot, 3999);
    CHECK_STR(rd.host, "127.0.0.1");
    CHECK_INT(rd.port, 6381);
    snprintf(rep.small, sizeof rep.small, "ASK 16383 ::1:7002");
    CHECK_INT(am2z_redis_parse_redirect(&rep, &rd), AM2Z_STATUS_OK);
    CHECK_INT(rd.ask, 1);
    CHECK_INT(rd.slot, 16383);
    CHECK_STR(rd.host, "::1");
    CHECK_INT(rd.port, 7002);
    snprintf(rep.small, sizeof rep.small, "MOVED 0 :7005"); /* no announced host: the one that answered */
    CHECK_INT(am2z_redis_parse_redirect(&rep, &rd), AM2Z_STATUS_OK);
    CHECK_STR(rd.host, "");
    CHECK_INT(rd.port, 7005);
    snprintf(rep.small, sizeof rep.small, "ERR unknown command");
    CHECK_INT(am2z_redis_parse_redirect(&rep, &rd), AM2Z_STATUS_NOT_FOUND);
    rep.type = AM2Z_REPLY_STRING; /* an error's text, but not an error */
    snprintf(rep.small, sizeof rep.small, "MOVED 1 h:1");
    CHECK_INT(am2z_redis_parse_redirect(&rep, &rd), AM2Z_STATUS_NOT_FOUND);
    rep.type = AM2Z_REPLY_ERROR;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(rep.small, sizeof rep.small, "%s", bad[i]);
        if (am2z_redis_parse_redirect(&rep, &rd) != AM2Z_STATUS_PROTOCOL) T_FAIL_("accepted \"%s\"", bad[i]);
        else if (!strstr(am2z_status_detail(), "malformed redirection")) T_FAIL_("detail: %s", am2z_status_detail());
    }
    CHECK_INT(am2z_redis_parse_redirect(NULL, &rd), AM2Z_STATUS_INVALID_ARGUMENT);
}

/* -- against the cluster -- */

static void test_slot_matches_cluster(void) {
    am2z_redis *r = fx_cluster_conn(cl.nodes[0]->port);
    am2z_reply rep;
    char keys[2000][24];
    int i, bad = 0;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    memset(&rep, 0, sizeof rep);
    CHECK(r != NULL);
    if (!r) return;
    for (i = 0; i < 2000; i++) {
        int j, n = 1 + (int)(x % 20);
        for (j = 0; j < n; j++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            keys[i][j] = "ab{}:~x0Z9_-.{}"[x % 15];
        }
        keys[i][n] = 0;
        am2z_redis_append(r, "CLUSTER KEYSLOT %s", keys[i]);
    }
    for (i = 0; i < 2000; i++) {
        if (am2z_redis_read(r, &rep) != AM2Z_STATUS_OK) { bad++; continue; }
        if (rep.integer != am2z_redis_key_slot(keys[i], AM2Z_NTS) && bad++ < 5)
            T_FAIL_("\"%s\": Redis %lld, am2z %d", keys[i], (long long)rep.integer, am2z_redis_key_slot(keys[i], AM2Z_NTS));
    }
    CHECK_INT(bad, 0);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
}

/* A key of a slot another master serves is answered MOVED to the master CLUSTER SLOTS
   names; the parser reads what Redis sends. */
static void test_moved_from_cluster(void) {
    am2z_redis *r = fx_cluster_conn(cl.nodes[0]->port);
    am2z_reply rep;
    am2z_redis_redirect rd;
    char key[32];
    int i, slot;
    memset(&rep, 0, sizeof rep);
    CHECK(r != NULL);
    if (!r) return;
    for (i = 0; i < 1000; i++) { /* a key that lives elsewhere */
        snprintf(key, sizeof key, "k%d", i);
        if (fx_slot_owner(&cl, am2z_redis_key_slot(key, AM2Z_NTS)) != cl.nodes[0]->port) break;
    }
    slot = am2z_redis_key_slot(key, AM2Z_NTS);
    CHECK_INT(am2z_redis_command(r, &rep, "GET %s", key), AM2Z_STATUS_SERVER);
    CHECK_INT(am2z_redis_parse_redirect(&rep, &rd), AM2Z_STATUS_OK);
    CHECK_INT(rd.ask, 0);
    CHECK_INT(rd.slot, slot);
    CHECK_INT(rd.port, fx_slot_owner(&cl, slot));
    CHECK(rd.port != cl.nodes[0]->port);
    CHECK_STR(rd.host, "127.0.0.1");
    CHECK(am2z_redis_is_connected(r)); /* a redirection is data: the stream is intact */
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
}

static am2z_result p_twice(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    return am2z_ok(am2z_value_set(am2z_value_retain(in), "n", am2z_value_int(2 * am2z_value_get_int(in, "n", 0))));
}

/* Every key the runtime wrote, with its slot; -1 when a key is outside want. */
static int keys_outside(am2z_redis *r, int want, long *total) {
    char cursor[32] = "0";
    int outside = 0;
    *total = 0;
    do {
        am2z_reply rep;
        const am2z_reply *list;
        size_t i;
        memset(&rep, 0, sizeof rep);
        if (am2z_redis_command(r, &rep, "SCAN %s COUNT 1000", cursor) != AM2Z_STATUS_OK || rep.type != AM2Z_REPLY_ARRAY) {
            am2z_reply_clear(&rep);
            return -1;
        }
        snprintf(cursor, sizeof cursor, "%s", am2z_reply_str(am2z_reply_at(&rep, 0)));
        list = am2z_reply_at(&rep, 1);
        for (i = 0; list && i < list->len; i++) {
            const am2z_reply *k = am2z_reply_at(list, i);
            (*total)++;
            if (am2z_redis_key_slot(am2z_reply_str(k), k->len) != want && outside++ < 3)
                fprintf(stderr, "  key outside the slot: %s\n", am2z_reply_str(k));
        }
        am2z_reply_clear(&rep);
    } while (strcmp(cursor, "0") != 0);
    return outside;
}

static void test_tagged_runtime_on_cluster(void) {
    int slot = am2z_redis_key_slot("{am2z}", AM2Z_NTS), owner = fx_slot_owner(&cl, slot), i;
    am2z_queue_desc qd;
    am2z_runtime *rt;
    am2z_processor_desc pd;
    am2z_redis *r;
    long total = 0;
    CHECK(owner > 0);
    memset(&qd, 0, sizeof qd);
    qd.redis.host = "127.0.0.1";
    qd.redis.port = owner; /* the master of the tag's slot: no redirection needed */
    qd.bull_prefix = "{am2z}";
    qd.concurrency = 2;
    qd.logger = g_quiet;
    rt = am2z_queue_runtime_new(&qd, NULL);
    if (!rt) { T_FAIL_("runtime: %s", am2z_status_detail()); return; }
    memset(&pd, 0, sizeof pd);
    pd.name = "twice";
    pd.fn = p_twice;
    CHECK_INT(am2z_runtime_register(rt, am2z_processor_new(&pd, NULL)), AM2Z_STATUS_OK);
    for (i = 0; i < 20; i++) {
        am2z_state *in = am2z_state_new("t", am2z_value_set(am2z_value_object(), "n", am2z_value_int(i)), NULL);
        am2z_outcome out = i % 2 ? am2z_runtime_execute(rt, "twice", in)
                                 : am2z_runtime_execute_in_session(rt, "twice", in, "s1");
        if (out.error) T_FAIL_("job %d: %s: %s", i, out.error->name, out.error->message);
        else CHECK_INT(am2z_value_get_int(out.state, "n", -1), 2 * i);
        am2z_outcome_clear(&out);
        am2z_value_release(in);
    }
    r = fx_cluster_conn(owner);
    CHECK(r != NULL);
    if (r) {
        CHECK_INT(keys_outside(r, slot, &total), 0);
        CHECK(total >= 10); /* queues, jobs, settings, sessions, replies: the runtime wrote here */
        am2z_redis_free(r);
    }
    am2z_runtime_free(rt);
}

/* -- following the slot (cluster_nodes, cluster_key) -- */

static am2z_redis_desc cluster_desc(const char *const *list, int n, const char *key) {
    am2z_redis_desc d;
    memset(&d, 0, sizeof d);
    d.cluster_nodes = list;
    d.n_cluster_nodes = n;
    d.cluster_key = key;
    d.connect_timeout_ms = 1000;
    return d;
}

static void test_cluster_desc_checks(void) {
    const char *good[1] = {"127.0.0.1:7000"}, *bad[1] = {"127.0.0.1"};
    am2z_redis_desc d = cluster_desc(good, 1, NULL);
    am2z_queue_desc qd;
    am2z_status st = AM2Z_STATUS_OK;
    CHECK(am2z_redis_new(&d, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "without cluster_key") != NULL);
    d = cluster_desc(bad, 1, "{k}");
    CHECK(am2z_redis_new(&d, &st) == NULL);
    CHECK(strstr(am2z_status_detail(), "is not host:port") != NULL);
    d = cluster_desc(good, 1, "{k}");
    d.sentinels = good;
    d.n_sentinels = 1;
    d.sentinel_master = "m";
    CHECK(am2z_redis_new(&d, &st) == NULL);
    CHECK(strstr(am2z_status_detail(), "both sentinels and cluster_nodes") != NULL);
    d = cluster_desc(NULL, 1, "{k}");
    CHECK(am2z_redis_new(&d, &st) == NULL);
    CHECK(strstr(am2z_status_detail(), "cluster_nodes is NULL") != NULL);
    /* a queue runtime on a cluster needs its keys in one slot: a tag in the bull prefix */
    memset(&qd, 0, sizeof qd);
    qd.redis = cluster_desc(good, 1, NULL);
    qd.concurrency = AM2Z_QUEUE_NO_WORKERS;
    qd.logger = g_quiet;
    CHECK(am2z_queue_runtime_new(&qd, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(am2z_status_detail(), "hash tag") != NULL);
    qd.bull_prefix = "{}x";
    CHECK(am2z_queue_runtime_new(&qd, &st) == NULL);
    CHECK_INT(st, AM2Z_STATUS_INVALID_ARGUMENT);
}

/* Finds the slot's master from seeds (a dead one first); follows a MOVED to the next
   owner after the (empty) slot is given to another master. */
static void test_cluster_connect_and_moved(void) {
    char dead[32], to_id[64];
    const char *list[NNODES + 1];
    const char *key = "{am2z-moving}";
    int slot = am2z_redis_key_slot(key, AM2Z_NTS), owner = fx_slot_owner(&cl, slot), to = 0, i;
    am2z_redis_desc d;
    am2z_redis *r;
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    snprintf(dead, sizeof dead, "127.0.0.1:%d", t_redis_free_port());
    list[0] = dead;
    for (i = 0; i < NNODES; i++) list[i + 1] = cl.seeds[i];
    d = cluster_desc(list, NNODES + 1, key);
    r = am2z_redis_new(&d, NULL);
    CHECK(r != NULL);
    if (!r) return;
    if (am2z_redis_connect(r) != AM2Z_STATUS_OK) T_FAIL_("connect: %s", am2z_status_detail());
    CHECK_INT(fx_server_port(r), owner);
    CHECK_INT(am2z_redis_command(r, &rep, "SET %s:a 1", key), AM2Z_STATUS_OK);
    CHECK_INT(am2z_redis_command(r, &rep, "DEL %s:a", key), AM2Z_STATUS_OK); /* the slot must be empty to move */
    /* give the slot to another master: every node is told (SETSLOT NODE) */
    for (i = 0; i < NNODES && !to; i++)
        if (cl.nodes[i]->port != owner) to = cl.nodes[i]->port;
    fx_node_id(to, to_id, sizeof to_id);
    {
        int order[NNODES], n = 0;
        order[n++] = to;
        order[n++] = owner;
        for (i = 0; i < NNODES; i++)
            if (cl.nodes[i]->port != owner && cl.nodes[i]->port != to) order[n++] = cl.nodes[i]->port;
        for (i = 0; i < n; i++) {
            am2z_redis *a = fx_cluster_conn(order[i]);
            char s[16];
            snprintf(s, sizeof s, "%d", slot);
            if (!a || am2z_redis_command(a, &rep, "CLUSTER SETSLOT %s NODE %s", s, to_id) != AM2Z_STATUS_OK)
                T_FAIL_("SETSLOT on %d: %s", order[i], am2z_reply_str(&rep));
            am2z_redis_free(a);
        }
    }
    /* the MOVED is followed to the new owner (test_queue_reshard.c has the details) */
    CHECK_INT(am2z_redis_command(r, &rep, "SET %s:a 2", key), AM2Z_STATUS_OK);
    CHECK(!am2z_redis_is_connected(r)); /* closed once the MOVED was read: the next connect asks */
    CHECK_INT(am2z_redis_connect(r), AM2Z_STATUS_OK);
    CHECK_INT(fx_server_port(r), to);
    CHECK_INT(am2z_redis_command(r, &rep, "SET %s:a 3", key), AM2Z_STATUS_OK);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    /* no seed answers: a clear failure within the bound */
    list[1] = dead;
    d = cluster_desc(list, 2, key);
    r = am2z_redis_new(&d, NULL);
    CHECK_INT(am2z_redis_connect(r), AM2Z_STATUS_IO);
    if (!strstr(am2z_status_detail(), "redis cluster: no master for slot")) T_FAIL_("detail: %s", am2z_status_detail());
    am2z_redis_free(r);
}

/* -- a failover of the runtime's slot while jobs run -- */

#define MAX_CALLS 100000
static fx_call calls[MAX_CALLS];

static long long now_ms(void) { return am2z_monotonic_ns() / 1000000; }

static int twice_right(const am2z_state *out, int64_t n) { return am2z_value_get_int(out, "n", -1) == 2 * n; }

static void test_cluster_failover(void) {
    int slot = am2z_redis_key_slot("{am2z}", AM2Z_NTS), owner = fx_slot_owner(&cl, slot), i;
    char id[64], cmd[512];
    t_redis *victim = NULL;
    am2z_queue_desc qd;
    am2z_runtime *worker;
    am2z_runtime *producer;
    fx_callers cs;
    fx_tally tally;
    long long until, t_kill, t_new = 0;
    for (i = 0; i < NNODES; i++)
        if (cl.nodes[i]->port == owner) victim = cl.nodes[i];
    CHECK(victim != NULL);
    if (!victim) return;
    /* a replica for the slot's master */
    fx_node_id(owner, id, sizeof id);
    if (t_redis_start(&node3, fx_cluster_node_args()) != 0) { T_FAIL_("replica node did not start"); return; }
    snprintf(cmd, sizeof cmd, "redis-cli --cluster add-node 127.0.0.1:%d 127.0.0.1:%d --cluster-slave "
             "--cluster-master-id %s >%s/add.log 2>&1", node3.port, owner, id, node3.dir);
    if (system(cmd) != 0) { T_FAIL_("add-node failed: see %s/add.log", node3.dir); return; }
    until = now_ms() + 20000;
    while (!fx_replica_up(node3.port) && now_ms() < until) t_redis_sleep_ms(100);
    CHECK(fx_replica_up(node3.port));
    memset(&qd, 0, sizeof qd);
    qd.redis = cluster_desc(cl.seeds, NNODES, NULL);
    qd.bull_prefix = "{am2z}";
    qd.logger = g_quiet;
    qd.lock_duration_ms = 2000;
    qd.stalled_interval_ms = 500;
    if (!fx_worker_producer(&qd, "twice", p_twice, 3000, &worker, &producer)) return;
    fx_callers_start(&cs, producer, "twice", twice_right, calls, MAX_CALLS, "CLUSTER_VERBOSE");
    until = now_ms() + 15000;
    while (fx_callers_ok_after(&cs, 0) < 30 && now_ms() < until) t_redis_sleep_ms(20);
    CHECK(fx_callers_ok_after(&cs, 0) >= 30);
    t_kill = now_ms();
    t_redis_kill(victim); /* kill -9 the slot's master mid-run */
    until = now_ms() + 30000;
    while (now_ms() < until && fx_slot_owner(&cl, slot) != node3.port) t_redis_sleep_ms(100);
    CHECK_INT(fx_slot_owner(&cl, slot), node3.port);
    t_new = now_ms();
    fprintf(stderr, "  the replica took the slot %lld ms after the kill\n", t_new - t_kill);
    until = now_ms() + 20000;
    while (fx_callers_ok_after(&cs, t_new + 2000) < 60 && now_ms() < until) t_redis_sleep_ms(50);
    fx_callers_stop(&cs, "test_cluster_failover", 20000);
    tally = fx_callers_tally(&cs, t_kill, t_new);
    CHECK_INT(tally.lost, 0);
    CHECK_INT(tally.wrong, 0);
    CHECK_INT(tally.late_fail, 0);
    CHECK_INT(tally.early_fail, 0);
    CHECK(fx_callers_ok_after(&cs, t_new + 2000) >= 60);
    for (i = 0; i < 20; i++) {
        am2z_state *in = am2z_state_new("t", am2z_value_set(am2z_value_object(), "n", am2z_value_int(i)), NULL);
        am2z_outcome out = am2z_runtime_execute(producer, "twice", in);
        if (out.error) T_FAIL_("after the failover: %s: %s", out.error->name, out.error->message);
        else CHECK_INT(am2z_value_get_int(out.state, "n", -1), 2 * i);
        am2z_outcome_clear(&out);
        am2z_value_release(in);
    }
    am2z_runtime_free(producer);
    am2z_runtime_free(worker);
}

int main(void) {
    g_quiet = fx_quiet();
    T_RUN(test_slot_vectors);
    T_RUN(test_redirect_parse);
    T_RUN(test_cluster_desc_checks);
    /* redis-cli forms the cluster: without it the cluster tests cannot run */
    if (fx_cluster_require(&cl, "test_queue_cluster", 5)) {
        T_RUN(test_slot_matches_cluster);
        T_RUN(test_moved_from_cluster);
        T_RUN(test_tagged_runtime_on_cluster);
        T_RUN(test_cluster_connect_and_moved);
        T_RUN(test_cluster_failover); /* last: it kills a master */
    }
    fx_cluster_stop(&cl);
    fx_cluster_node_stop(&node3);
    am2z_logger_release(g_quiet);
    return t_done();
}
