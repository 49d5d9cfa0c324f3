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
       that one slot, so its Lua scripts run on a cluster node.
   The runtime does not follow a cluster by itself yet (no slot map, no redirection):
   see README "Redis Cluster". */
#define _POSIX_C_SOURCE 200809L
#include "../am2z_resp.h"
#include "t.h"
#include "redis_harness.h"

#define NNODES 3

static t_redis node0, node1, node2; /* separate objects: gcc's -Wrestrict misreads an indexed array */
static t_redis *const nodes[NNODES] = {&node0, &node1, &node2};
static const char *node_extra[] = {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                   "--cluster-node-timeout", "2000", NULL};
static am2z_logger *g_quiet;

static am2z_redis *conn_port(int port) {
    am2z_redis_desc d;
    am2z_redis *r;
    memset(&d, 0, sizeof d);
    d.host = "127.0.0.1";
    d.port = port;
    d.connect_timeout_ms = 2000;
    r = am2z_redis_new(&d, NULL);
    if (r && am2z_redis_connect(r) != AM2Z_STATUS_OK) { am2z_redis_free(r); r = NULL; }
    return r;
}

/* The port of the master that serves slot (CLUSTER SLOTS asked of any node), 0 if none. */
static int slot_owner(int slot) {
    am2z_redis *r = conn_port(nodes[0]->port);
    am2z_reply rep;
    size_t i;
    int port = 0;
    memset(&rep, 0, sizeof rep);
    if (r && am2z_redis_command(r, &rep, "CLUSTER SLOTS") == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY)
        for (i = 0; i < rep.len; i++) {
            const am2z_reply *e = am2z_reply_at(&rep, i), *m = am2z_reply_at(e, 2);
            if (e && m && am2z_reply_at(e, 0)->integer <= slot && slot <= am2z_reply_at(e, 1)->integer)
                port = (int)am2z_reply_at(m, 1)->integer;
        }
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return port;
}

static int cluster_ok(int port) {
    am2z_redis *r = conn_port(port);
    am2z_reply rep;
    int ok = 0;
    memset(&rep, 0, sizeof rep);
    if (r && am2z_redis_command(r, &rep, "CLUSTER INFO") == AM2Z_STATUS_OK)
        ok = strstr(am2z_reply_str(&rep), "cluster_state:ok") != NULL;
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return ok;
}

/* 0 once the 3 masters form one cluster with every slot served; -1 otherwise. */
static int cluster_start(void) {
    char cmd[512];
    int i, n = 0;
    long long until;
    for (i = 0; i < NNODES; i++)
        if (t_redis_start(nodes[i], node_extra) != 0) return -1;
    n = snprintf(cmd, sizeof cmd, "redis-cli --cluster create");
    for (i = 0; i < NNODES; i++) n += snprintf(cmd + n, sizeof cmd - (size_t)n, " 127.0.0.1:%d", nodes[i]->port);
    snprintf(cmd + n, sizeof cmd - (size_t)n, " --cluster-yes >%s/create.log 2>&1", nodes[0]->dir);
    if (system(cmd) != 0) return -1;
    until = am2z_monotonic_ns() / 1000000 + 15000;
    while (am2z_monotonic_ns() / 1000000 < until) {
        int ok = 1;
        for (i = 0; i < NNODES && ok; i++) ok = cluster_ok(nodes[i]->port);
        if (ok) return 0;
        t_redis_sleep_ms(100);
    }
    return -1;
}

static void cluster_stop(void) {
    int i;
    char path[256];
    for (i = 0; i < NNODES; i++) {
        t_redis_reap(nodes[i], SIGKILL);
        snprintf(path, sizeof path, "%s/nodes.conf", nodes[i]->dir); unlink(path);
        snprintf(path, sizeof path, "%s/create.log", nodes[i]->dir); unlink(path);
        t_redis_stop(nodes[i]);
    }
}

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
    am2z_redis *r = conn_port(nodes[0]->port);
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
    am2z_redis *r = conn_port(nodes[0]->port);
    am2z_reply rep;
    am2z_redis_redirect rd;
    char key[32];
    int i, slot;
    memset(&rep, 0, sizeof rep);
    CHECK(r != NULL);
    if (!r) return;
    for (i = 0; i < 1000; i++) { /* a key that lives elsewhere */
        snprintf(key, sizeof key, "k%d", i);
        if (slot_owner(am2z_redis_key_slot(key, AM2Z_NTS)) != nodes[0]->port) break;
    }
    slot = am2z_redis_key_slot(key, AM2Z_NTS);
    CHECK_INT(am2z_redis_command(r, &rep, "GET %s", key), AM2Z_STATUS_SERVER);
    CHECK_INT(am2z_redis_parse_redirect(&rep, &rd), AM2Z_STATUS_OK);
    CHECK_INT(rd.ask, 0);
    CHECK_INT(rd.slot, slot);
    CHECK_INT(rd.port, slot_owner(slot));
    CHECK(rd.port != nodes[0]->port);
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
    int slot = am2z_redis_key_slot("{am2z}", AM2Z_NTS), owner = slot_owner(slot), i;
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
    r = conn_port(owner);
    CHECK(r != NULL);
    if (r) {
        CHECK_INT(keys_outside(r, slot, &total), 0);
        CHECK(total >= 10); /* queues, jobs, settings, sessions, replies: the runtime wrote here */
        am2z_redis_free(r);
    }
    am2z_runtime_free(rt);
}

int main(void) {
    int rc;
    g_quiet = am2z_logger_new(&(am2z_logger_desc){.sink = AM2Z_SINK_SILENT}, NULL);
    T_RUN(test_slot_vectors);
    T_RUN(test_redirect_parse);
    rc = t_redis_installed() ? cluster_start() : T_REDIS_MISSING;
    if (rc == T_REDIS_MISSING && getenv("CI")) {
        fprintf(stderr, "FAIL: redis-server is not installed, and CI is set\n");
        t_failed++;
    } else if (rc == T_REDIS_MISSING) {
        fprintf(stderr, "SKIP test_queue_cluster: redis-server is not installed: the cluster tests did NOT run\n");
        t_skipped += 3;
    } else if (rc != 0) {
        fprintf(stderr, "FAIL: the 3-master cluster did not form (see %s/create.log)\n", nodes[0]->dir);
        t_failed++;
    } else {
        T_RUN(test_slot_matches_cluster);
        T_RUN(test_moved_from_cluster);
        T_RUN(test_tagged_runtime_on_cluster);
    }
    cluster_stop();
    am2z_logger_release(g_quiet);
    return t_done();
}
