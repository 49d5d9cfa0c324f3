/* cluster_harness.h - a 3-master Redis Cluster for a test (redis-server --cluster-enabled
   yes x 3 on free loopback ports + redis-cli --cluster create --cluster-yes), as
   tests/test_queue_cluster.c and tests/test_queue_reshard.c use it. Include after
   am2z_resp.h, t.h, redis_harness.h and fixture.h.

       static t_redis node0, node1, node2;
       static fx_cluster cl = {{&node0, &node1, &node2}, {"", "", ""}, {NULL, NULL, NULL}};
       if (fx_cluster_require(&cl, "test_x", 2)) { ... cl.nodes[i]->port, cl.seeds ... }
       fx_cluster_stop(&cl);

   The nodes are separate t_redis objects named by pointer: gcc's -Wrestrict misreads an
   indexed array of them. */
#ifndef AM2Z_TEST_CLUSTER_HARNESS_H
#define AM2Z_TEST_CLUSTER_HARNESS_H

#define FX_CLUSTER_NODES 3

typedef struct fx_cluster {
    t_redis *nodes[FX_CLUSTER_NODES];            /* borrowed, set by the test */
    char seed_spec[FX_CLUSTER_NODES][32];        /* "127.0.0.1:port" of each node */
    const char *seeds[FX_CLUSTER_NODES];         /* the specs, for cluster_nodes */
} fx_cluster;

/* The redis-server arguments of a cluster node (static: t_redis borrows them). */
static inline const char *const *fx_cluster_node_args(void) {
    static const char *const extra[] = {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                        "--cluster-node-timeout", "2000", NULL};
    return extra;
}

/* A connection to one node (a 2 s connect timeout: a killed node is skipped fast). */
static inline am2z_redis *fx_cluster_conn(int port) { return fx_conn_timeout(port, 2000, 0); }

/* The port of the master that serves slot (CLUSTER SLOTS asked of the first node that
   answers; a killed one is skipped), 0 if none. */
static inline int fx_slot_owner(const fx_cluster *c, int slot) {
    am2z_redis *r = NULL;
    am2z_reply rep;
    size_t i;
    int port = 0, k;
    for (k = 0; k < FX_CLUSTER_NODES && !r; k++) r = fx_cluster_conn(c->nodes[k]->port);
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

/* 1 when the node at port says cluster_state:ok. */
static inline int fx_cluster_ok(int port) {
    am2z_redis *r = fx_cluster_conn(port);
    am2z_reply rep;
    int ok = 0;
    memset(&rep, 0, sizeof rep);
    if (r && am2z_redis_command(r, &rep, "CLUSTER INFO") == AM2Z_STATUS_OK)
        ok = strstr(am2z_reply_str(&rep), "cluster_state:ok") != NULL;
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
    return ok;
}

/* The node id of the node at port (CLUSTER MYID) into id, "" on failure. */
static inline void fx_node_id(int port, char *id, size_t size) {
    am2z_redis *r = fx_cluster_conn(port);
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    id[0] = 0;
    if (r && am2z_redis_command(r, &rep, "CLUSTER MYID") == AM2Z_STATUS_OK) snprintf(id, size, "%s", am2z_reply_str(&rep));
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
}

/* 0 once the 3 masters form one cluster with every slot served (within 15 s), the seeds
   set; -1 otherwise (the nodes started so far keep running for fx_cluster_stop). */
static inline int fx_cluster_start(fx_cluster *c) {
    char cmd[512];
    int i, n;
    long long until;
    for (i = 0; i < FX_CLUSTER_NODES; i++)
        if (t_redis_start(c->nodes[i], fx_cluster_node_args()) != 0) return -1;
    n = snprintf(cmd, sizeof cmd, "redis-cli --cluster create");
    for (i = 0; i < FX_CLUSTER_NODES; i++)
        n += snprintf(cmd + n, sizeof cmd - (size_t)n, " 127.0.0.1:%d", c->nodes[i]->port);
    snprintf(cmd + n, sizeof cmd - (size_t)n, " --cluster-yes >%s/create.log 2>&1", c->nodes[0]->dir);
    if (system(cmd) != 0) return -1;
    until = am2z_monotonic_ns() / 1000000 + 15000;
    while ((long long)(am2z_monotonic_ns() / 1000000) < until) {
        int ok = 1;
        for (i = 0; i < FX_CLUSTER_NODES && ok; i++) ok = fx_cluster_ok(c->nodes[i]->port);
        if (ok) {
            for (i = 0; i < FX_CLUSTER_NODES; i++) {
                snprintf(c->seed_spec[i], sizeof c->seed_spec[i], "127.0.0.1:%d", c->nodes[i]->port);
                c->seeds[i] = c->seed_spec[i];
            }
            return 0;
        }
        t_redis_sleep_ms(100);
    }
    return -1;
}

/* Starts the cluster unless redis-server or redis-cli is missing; 1 when it formed and
   the test's cluster cases may run. Missing: a loud skip of n_cases cases (a failure
   under CI, which installs both); not formed: a failure. */
static inline int fx_cluster_require(fx_cluster *c, const char *test, int n_cases) {
    int rc = t_redis_installed() && system("command -v redis-cli >/dev/null 2>&1") == 0 ? fx_cluster_start(c)
                                                                                        : T_REDIS_MISSING;
    if (rc == T_REDIS_MISSING && getenv("CI")) {
        fprintf(stderr, "FAIL: redis-server or redis-cli is not installed, and CI is set\n");
        t_failed++;
    } else if (rc == T_REDIS_MISSING) {
        fprintf(stderr, "SKIP %s: redis-server or redis-cli is not installed: the cluster tests did NOT run\n", test);
        t_skipped += n_cases;
    } else if (rc != 0) {
        fprintf(stderr, "FAIL: the 3-master cluster did not form (see %s/create.log)\n", c->nodes[0]->dir);
        t_failed++;
    }
    return rc == 0;
}

/* Kills one cluster node and removes its files (the cluster's and redis-cli's logs). */
static inline void fx_cluster_node_stop(t_redis *n) {
    char path[256];
    t_redis_reap(n, SIGKILL);
    snprintf(path, sizeof path, "%s/nodes.conf", n->dir); unlink(path);
    snprintf(path, sizeof path, "%s/create.log", n->dir); unlink(path);
    snprintf(path, sizeof path, "%s/add.log", n->dir); unlink(path);
    t_redis_stop(n);
}

static inline void fx_cluster_stop(fx_cluster *c) {
    int i;
    for (i = 0; i < FX_CLUSTER_NODES; i++) fx_cluster_node_stop(c->nodes[i]);
}

#endif
