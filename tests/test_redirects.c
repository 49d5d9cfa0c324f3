/* test_redirects.c - the two limits of a cluster connection's redirections (am2z_resp.h,
   CLUSTER): AM2Z_REDIS_MAX_REDIRECTS (ASK/MOVED hops of one command) and
   AM2Z_REDIS_CLUSTER_RETRY_MS (TRYAGAIN retried when the call has no deadline), plus ASK's
   ASKING and malformed redirections. Real nodes never loop or lie, so the nodes here are
   small RESP responders on loopback (a thread each, several connections) that answer
   CLUSTER SLOTS and ROLE like a master and every GET as the case needs. No redis-server.
   This program compiles its own private copy of the library (AM2Z_STATIC) with both
   limits lowered, which also proves they can be overridden; the copy in tests/impl.c,
   linked too, is unused. */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_STATIC
#define AM2Z_REDIS_MAX_REDIRECTS 5
#define AM2Z_REDIS_CLUSTER_RETRY_MS 500
#define AM2Z_RESP_IMPLEMENTATION
#include "../am2z_resp.h"
#include "t.h"
#include <pthread.h>
#include <poll.h>
#include <unistd.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#define KEY "{k}x"
#define NODE_CONNS 16

/* -- a responder: one listening socket and its connections, served by one thread -- */

enum {
    M_VALUE,     /* "$5 found" */
    M_MOVED,     /* -MOVED <slot> 127.0.0.1:<to> */
    M_ASK,       /* -ASK <slot> 127.0.0.1:<to> */
    M_IMPORTING, /* after ASKING `raw` (NULL: "found"), else -MOVED to <to> (a node
                    importing the slot) */
    M_TRYAGAIN,  /* -TRYAGAIN the first `tryagain` GETs (all when < 0), then "found" */
    M_RAW        /* `raw`, as given */
};

typedef struct rconn {
    int fd; /* -1: free */
    char in[4096];
    size_t len;
    int asking; /* ASKING came; cleared by the next command, as Redis does */
} rconn;

typedef struct node {
    int lfd, port;
    int mode, to, slot, tryagain;
    const char *raw;  /* borrowed */
    int gets;         /* GETs answered (atomic) */
    int asked;        /* of them, right after ASKING on that connection (atomic) */
    int stop;         /* atomic */
    int running;
    pthread_t th;
    rconn c[NODE_CONNS];
} node;

static int aload(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static void ainc(int *p) { __atomic_add_fetch(p, 1, __ATOMIC_SEQ_CST); }

static void put(int fd, const char *s, size_t len) {
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0) return;
        s += n;
        len -= (size_t)n;
    }
}

/* One command (an array of bulk strings) from c->in: its arguments in argv (at most 8,
   each cut to 255 bytes); the bytes it took, 0 when incomplete, -1 when not RESP. */
static long take_command(rconn *c, char argv[8][256], int *argc) {
    const char *p = c->in, *end = c->in + c->len;
    long n, i;
    char *e;
    if (p == end) return 0;
    if (*p != '*') return -1;
    if (!memchr(p, '\n', (size_t)(end - p))) return 0;
    n = strtol(p + 1, &e, 10);
    if (n < 1 || n > 8 || *e != '\r') return -1;
    p = e + 2;
    for (i = 0; i < n; i++) {
        long l;
        if (p >= end || !memchr(p, '\n', (size_t)(end - p))) return 0;
        if (*p != '$') return -1;
        l = strtol(p + 1, &e, 10);
        if (l < 0 || *e != '\r') return -1;
        p = e + 2;
        if (end - p < l + 2) return 0;
        snprintf(argv[i], 256, "%.*s", (int)(l > 255 ? 255 : l), p);
        p += l + 2;
    }
    *argc = (int)n;
    return (long)(p - c->in);
}

static void answer(node *nd, rconn *c, char argv[8][256], int argc) {
    char out[1024];
    int was_asking = c->asking;
    c->asking = 0;
    if (strcasecmp(argv[0], "CLUSTER") == 0) { /* every slot is ours */
        snprintf(out, sizeof out, "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:%d\r\n", nd->port);
    } else if (strcasecmp(argv[0], "ROLE") == 0) {
        snprintf(out, sizeof out, "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");
    } else if (strcasecmp(argv[0], "ASKING") == 0) {
        c->asking = 1;
        snprintf(out, sizeof out, "+OK\r\n");
    } else if (strcasecmp(argv[0], "GET") != 0 || argc != 2) {
        snprintf(out, sizeof out, "-ERR unexpected command '%.64s'\r\n", argv[0]);
    } else {
        int n = __atomic_add_fetch(&nd->gets, 1, __ATOMIC_SEQ_CST);
        if (was_asking) ainc(&nd->asked);
        switch (nd->mode) {
        case M_MOVED: snprintf(out, sizeof out, "-MOVED %d 127.0.0.1:%d\r\n", nd->slot, nd->to); break;
        case M_ASK: snprintf(out, sizeof out, "-ASK %d 127.0.0.1:%d\r\n", nd->slot, nd->to); break;
        case M_IMPORTING:
            if (was_asking && nd->raw) { put(c->fd, nd->raw, strlen(nd->raw)); return; }
            if (was_asking) snprintf(out, sizeof out, "$5\r\nfound\r\n");
            else snprintf(out, sizeof out, "-MOVED %d 127.0.0.1:%d\r\n", nd->slot, nd->to);
            break;
        case M_TRYAGAIN:
            if (nd->tryagain < 0 || n <= nd->tryagain)
                snprintf(out, sizeof out, "-TRYAGAIN Multiple keys request during rehashing of slot\r\n");
            else snprintf(out, sizeof out, "$5\r\nfound\r\n");
            break;
        case M_RAW: put(c->fd, nd->raw, strlen(nd->raw)); return;
        default: snprintf(out, sizeof out, "$5\r\nfound\r\n"); break;
        }
    }
    put(c->fd, out, strlen(out));
}

static void drop(rconn *c) {
    close(c->fd);
    c->fd = -1;
    c->len = 0;
    c->asking = 0;
}

static void *node_main(void *arg) {
    node *nd = (node *)arg;
    while (!aload(&nd->stop)) {
        struct pollfd p[NODE_CONNS + 1];
        int i, n = 0, map[NODE_CONNS + 1];
        p[n].fd = nd->lfd;
        p[n].events = POLLIN;
        map[n++] = -1;
        for (i = 0; i < NODE_CONNS; i++)
            if (nd->c[i].fd >= 0) {
                p[n].fd = nd->c[i].fd;
                p[n].events = POLLIN;
                map[n++] = i;
            }
        if (poll(p, (nfds_t)n, 20) <= 0) continue;
        for (i = 0; i < n; i++) {
            rconn *c;
            ssize_t got;
            if (!p[i].revents) continue;
            if (map[i] < 0) {
                int fd = accept(nd->lfd, NULL, NULL), k;
                for (k = 0; fd >= 0 && k < NODE_CONNS && nd->c[k].fd >= 0; k++) {}
                if (fd >= 0 && k == NODE_CONNS) close(fd); /* full: the client sees a reset */
                else if (fd >= 0) nd->c[k].fd = fd;
                continue;
            }
            c = &nd->c[map[i]];
            got = read(c->fd, c->in + c->len, sizeof c->in - 1 - c->len);
            if (got <= 0) {
                drop(c);
                continue;
            }
            c->len += (size_t)got;
            for (;;) {
                char argv[8][256];
                int argc = 0;
                long used = take_command(c, argv, &argc);
                if (used < 0 || (used == 0 && c->len == sizeof c->in - 1)) {
                    drop(c);
                    break;
                }
                if (used == 0) break;
                answer(nd, c, argv, argc);
                memmove(c->in, c->in + used, c->len - (size_t)used);
                c->len -= (size_t)used;
            }
        }
    }
    return NULL;
}

/* Listens on 127.0.0.1:0 (nd->port); node_run then serves it, so peers can name each
   other's port first. 0 on success. */
static int node_listen(node *nd, int mode) {
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    int i, one = 1;
    memset(nd, 0, sizeof *nd);
    for (i = 0; i < NODE_CONNS; i++) nd->c[i].fd = -1;
    nd->mode = mode;
    nd->slot = am2z_redis_key_slot(KEY, AM2Z_NTS);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if ((nd->lfd = socket(AF_INET, SOCK_STREAM, 0)) < 0) return -1;
    setsockopt(nd->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(nd->lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(nd->lfd, 16) != 0 ||
        getsockname(nd->lfd, (struct sockaddr *)&a, &alen) != 0) {
        close(nd->lfd);
        return -1;
    }
    nd->port = ntohs(a.sin_port);
    nd->to = nd->port;
    return 0;
}
/* Two listening nodes that name each other (a's redirections point at b and b's at a).
   0 on success; on a failure nothing is left open. */
static int node_pair(node *a, int mode_a, node *b, int mode_b) {
    if (node_listen(a, mode_a) != 0) return -1;
    if (node_listen(b, mode_b) != 0) { close(a->lfd); return -1; }
    a->to = b->port;
    b->to = a->port;
    return 0;
}
static int node_run(node *nd) {
    nd->running = pthread_create(&nd->th, NULL, node_main, nd) == 0;
    return nd->running ? 0 : -1;
}
static void node_stop(node *nd) {
    int i;
    __atomic_store_n(&nd->stop, 1, __ATOMIC_SEQ_CST);
    if (nd->running) pthread_join(nd->th, NULL);
    nd->running = 0;
    for (i = 0; i < NODE_CONNS; i++)
        if (nd->c[i].fd >= 0) drop(&nd->c[i]);
    close(nd->lfd);
}

/* A free loopback port nothing listens on (bound, then closed). */
static int closed_port(void) {
    node nd;
    if (node_listen(&nd, M_VALUE) != 0) return 0;
    close(nd.lfd);
    return nd.port;
}

/* A cluster connection whose seed is port, serving KEY's slot; connected. */
static am2z_redis *client(int port, int64_t command_ms) {
    char seed[32];
    const char *nodes[1];
    am2z_redis_desc d;
    am2z_redis *r;
    am2z_status st;
    snprintf(seed, sizeof seed, "127.0.0.1:%d", port);
    nodes[0] = seed;
    memset(&d, 0, sizeof d);
    d.cluster_nodes = nodes;
    d.n_cluster_nodes = 1;
    d.cluster_key = "{k}";
    d.connect_timeout_ms = 3000;
    d.command_timeout_ms = command_ms;
    r = am2z_redis_new(&d, &st);
    if (!r) {
        T_FAIL_("new: %s", am2z_status_detail());
        return NULL;
    }
    if ((st = am2z_redis_connect(r)) != AM2Z_STATUS_OK) {
        T_FAIL_("connect: %s (%s)", am2z_status_string(st), am2z_status_detail());
        am2z_redis_free(r);
        return NULL;
    }
    return r;
}

static int64_t now_ms(void) { return am2z_monotonic_ns() / 1000000; }

/* -- AM2Z_REDIS_MAX_REDIRECTS -- */

/* The contract (CLUSTER): at most AM2Z_REDIS_MAX_REDIRECTS hops, then the last
   redirection is returned: SERVER, *reply holding it, the detail naming the limit; the
   command was sent 1 + AM2Z_REDIS_MAX_REDIRECTS times. */
static void check_hop_limit(am2z_status st, const am2z_reply *rep, const char *word) {
    char want[64];
    CHECK_INT(st, AM2Z_STATUS_SERVER);
    CHECK_INT(rep->type, AM2Z_REPLY_ERROR);
    CHECK(strncmp(am2z_reply_str(rep), word, strlen(word)) == 0);
    snprintf(want, sizeof want, "%d redirections followed, AM2Z_REDIS_MAX_REDIRECTS", AM2Z_REDIS_MAX_REDIRECTS);
    if (!strstr(am2z_status_detail(), want) || strncmp(am2z_status_detail(), word, strlen(word)) != 0)
        T_FAIL_("detail: %s", am2z_status_detail());
}

static void test_moved_to_itself(void) {
    /* a node that answers every command with MOVED to itself: 6 sends, then the MOVED;
       a second command (the connection reconnected through CLUSTER SLOTS) the same */
    node a;
    am2z_redis *r;
    am2z_reply rep;
    int round;
    memset(&rep, 0, sizeof rep);
    if (node_listen(&a, M_MOVED) != 0 || node_run(&a) != 0) { T_FAIL_("responder"); return; }
    if (!(r = client(a.port, 5000))) goto out;
    CHECK(AM2Z_REDIS_MAX_REDIRECTS == 5); /* this program's override is the one in force */
    for (round = 1; round <= 2; round++) {
        am2z_status st = am2z_redis_command(r, &rep, "GET %s", KEY);
        check_hop_limit(st, &rep, "MOVED ");
        CHECK_INT(aload(&a.gets), round * (AM2Z_REDIS_MAX_REDIRECTS + 1));
        CHECK(!am2z_redis_is_connected(r)); /* a MOVED came: the slot map is read again */
    }
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
out:
    node_stop(&a);
}

static void test_moved_ping_pong(void) {
    /* two nodes that send each other's clients MOVED, then the same with ASK: the hops
       alternate a, b, a, ... and stop at the limit; every ASK hop came after ASKING */
    int mode;
    for (mode = M_MOVED; mode <= M_ASK; mode++) {
        node a, b;
        am2z_redis *r;
        am2z_reply rep;
        am2z_status st;
        int sends = AM2Z_REDIS_MAX_REDIRECTS + 1;
        memset(&rep, 0, sizeof rep);
        if (node_pair(&a, mode, &b, mode) != 0) { T_FAIL_("responder"); return; }
        if (node_run(&a) != 0 || node_run(&b) != 0) { T_FAIL_("responder"); goto out; }
        if (!(r = client(a.port, 5000))) goto out;
        st = am2z_redis_command(r, &rep, "GET %s", KEY);
        check_hop_limit(st, &rep, mode == M_MOVED ? "MOVED " : "ASK ");
        CHECK_INT(aload(&a.gets) + aload(&b.gets), sends);
        CHECK_INT(aload(&a.gets), (sends + 1) / 2);
        CHECK_INT(aload(&b.gets), sends / 2);
        if (mode == M_ASK) { /* all but the first send (to a, on r itself) */
            CHECK_INT(aload(&a.asked) + aload(&b.asked), sends - 1);
            CHECK(am2z_redis_is_connected(r)); /* ASK leaves the slot map as it was */
        }
        am2z_reply_clear(&rep);
        am2z_redis_free(r);
    out:
        node_stop(&a);
        node_stop(&b);
    }
}

/* -- ASK: ASKING first -- */

static void test_ask_sends_asking_first(void) {
    /* a migrating node answers ASK to an importing one, which (like Redis) answers only
       a command that follows ASKING on its connection and MOVED back otherwise */
    node a, b;
    am2z_redis *r;
    am2z_reply rep;
    int round;
    memset(&rep, 0, sizeof rep);
    if (node_pair(&a, M_ASK, &b, M_IMPORTING) != 0) { T_FAIL_("responder"); return; }
    if (node_run(&a) != 0 || node_run(&b) != 0) { T_FAIL_("responder"); goto out; }
    if (!(r = client(a.port, 5000))) goto out;
    for (round = 1; round <= 2; round++) {
        /* ASK holds for one command: the next one asks a first again */
        am2z_status st = am2z_redis_command(r, &rep, "GET %s", KEY);
        if (st != AM2Z_STATUS_OK) T_FAIL_("round %d: %s (%s)", round, am2z_status_string(st), am2z_status_detail());
        CHECK_STR(am2z_reply_str(&rep), "found");
        CHECK_INT(aload(&a.gets), round);
        CHECK_INT(aload(&b.gets), round);
        CHECK_INT(aload(&b.asked), round); /* none came without ASKING */
        CHECK(am2z_redis_is_connected(r));
    }
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
out:
    node_stop(&a);
    node_stop(&b);
}

static void test_error_after_ask_keeps_its_detail(void) {
    /* the command's own error from the node an ASK named is returned as it came: its
       detail is the server's message (it read "redis: not a MOVED or ASK redirection"
       before, which also made the queue runtime's error code "REDIS_redis:") */
    static const char wrongtype[] = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
    node a, b;
    am2z_redis *r;
    am2z_reply rep;
    am2z_status st;
    memset(&rep, 0, sizeof rep);
    if (node_pair(&a, M_ASK, &b, M_IMPORTING) != 0) { T_FAIL_("responder"); return; }
    b.raw = wrongtype;
    if (node_run(&a) != 0 || node_run(&b) != 0) { T_FAIL_("responder"); goto out; }
    if (!(r = client(a.port, 5000))) goto out;
    st = am2z_redis_command(r, &rep, "GET %s", KEY);
    CHECK_INT(st, AM2Z_STATUS_SERVER);
    CHECK_STR(am2z_reply_str(&rep), "WRONGTYPE Operation against a key holding the wrong kind of value");
    CHECK_STR(am2z_status_detail(), "WRONGTYPE Operation against a key holding the wrong kind of value");
    CHECK_INT(aload(&b.asked), 1);
    CHECK(am2z_redis_is_connected(r));
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
out:
    node_stop(&a);
    node_stop(&b);
}

/* -- TRYAGAIN: the caller's deadline, or AM2Z_REDIS_CLUSTER_RETRY_MS -- */

/* TRYAGAIN forever: the call (call_ms < 0: am2z_redis_command; else blocking with that
   bound) on a client with command_timeout_ms gives up within [lo, hi] ms, naming its
   bound (why), after at least min_gets sends. */
static void check_tryagain_bounded(int64_t command_timeout_ms, int64_t call_ms, const char *why, int64_t lo,
                                   int64_t hi, int min_gets) {
    node a;
    am2z_redis *r;
    am2z_reply rep;
    am2z_status st;
    int64_t t0, took;
    memset(&rep, 0, sizeof rep);
    if (node_listen(&a, M_TRYAGAIN) != 0) { T_FAIL_("responder"); return; }
    a.tryagain = -1;
    if (node_run(&a) != 0) { T_FAIL_("responder"); goto out; }
    if (!(r = client(a.port, command_timeout_ms))) goto out;
    t0 = now_ms();
    st = call_ms < 0 ? am2z_redis_command(r, &rep, "GET %s", KEY) : am2z_redis_blocking(r, &rep, call_ms, "GET %s", KEY);
    took = now_ms() - t0;
    CHECK_INT(st, AM2Z_STATUS_SERVER);
    CHECK(strncmp(am2z_reply_str(&rep), "TRYAGAIN", 8) == 0);
    if (!strstr(am2z_status_detail(), why)) T_FAIL_("detail: %s", am2z_status_detail());
    if (took < lo || took > hi) T_FAIL_("took %lld ms", (long long)took);
    CHECK(aload(&a.gets) >= min_gets); /* it did retry */
    CHECK(am2z_redis_is_connected(r)); /* TRYAGAIN is an answer: the stream is intact */
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
out:
    node_stop(&a);
}

static void test_tryagain_until_deadline(void) {
    /* a 300 ms call: the retries (pauses of up to 100 ms) stop when the next would pass
       the deadline, so the call returns in 200..300 ms (bounded loosely here: a loaded
       machine), far from the 30 s default or this program's 500 */
    check_tryagain_bounded(30000, 300, "until the call's deadline", 200, 3000, 3);
}

static void test_tryagain_retry_limit(void) {
    /* no deadline at all (command_timeout_ms < 0): AM2Z_REDIS_CLUSTER_RETRY_MS (500 here)
       bounds it instead */
    check_tryagain_bounded(-1, -1, "until AM2Z_REDIS_CLUSTER_RETRY_MS", AM2Z_REDIS_CLUSTER_RETRY_MS - 100,
                           AM2Z_REDIS_CLUSTER_RETRY_MS + 3000, 5);
}

static void test_tryagain_then_answer(void) {
    /* three TRYAGAIN, then the answer: the caller sees only the answer */
    node a;
    am2z_redis *r;
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    if (node_listen(&a, M_TRYAGAIN) != 0) { T_FAIL_("responder"); return; }
    a.tryagain = 3;
    if (node_run(&a) != 0) { T_FAIL_("responder"); goto out; }
    if (!(r = client(a.port, 5000))) goto out;
    CHECK_INT(am2z_redis_command(r, &rep, "GET %s", KEY), AM2Z_STATUS_OK);
    CHECK_STR(am2z_reply_str(&rep), "found");
    CHECK_INT(aload(&a.gets), 4);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
out:
    node_stop(&a);
}

/* -- malformed redirections -- */

static void test_malformed_redirects(void) {
    /* each is refused without being followed: PROTOCOL naming it, *reply empty, the
       connection closed (a node that breaks the cluster protocol is not trusted), and the
       command was sent once; then the same from the second hop (a MOVED to a node that
       answers the malformed one) */
    char longhost[400], bad[8][512];
    size_t i, n = 0;
    int hop;
    memset(longhost, 'h', 300);
    longhost[300] = 0;
    snprintf(bad[n++], sizeof bad[0], "-MOVED\r\n");
    snprintf(bad[n++], sizeof bad[0], "-MOVED 3999\r\n");
    snprintf(bad[n++], sizeof bad[0], "-MOVED 3999 127.0.0.1\r\n");
    snprintf(bad[n++], sizeof bad[0], "-MOVED 3999 127.0.0.1:99999\r\n");
    snprintf(bad[n++], sizeof bad[0], "-MOVED 3999 127.0.0.1:0\r\n");
    snprintf(bad[n++], sizeof bad[0], "-ASK 16384 127.0.0.1:7000\r\n");
    snprintf(bad[n++], sizeof bad[0], "-ASK 3999 127.0.0.1:70x0\r\n");
    snprintf(bad[n++], sizeof bad[0], "-MOVED 3999 %s:7000\r\n", longhost);
    for (hop = 0; hop < 2; hop++)
        for (i = 0; i < n; i++) {
            node a, b;
            am2z_redis *r;
            am2z_reply rep;
            am2z_status st;
            memset(&rep, 0, sizeof rep);
            if (node_pair(&a, hop ? M_MOVED : M_RAW, &b, M_RAW) != 0) { T_FAIL_("responder"); return; }
            a.raw = b.raw = bad[i];
            if (node_run(&a) != 0 || node_run(&b) != 0) { T_FAIL_("responder"); goto next; }
            if (!(r = client(a.port, 5000))) goto next;
            st = am2z_redis_command(r, &rep, "GET %s", KEY);
            if (st != AM2Z_STATUS_PROTOCOL || !strstr(am2z_status_detail(), "malformed redirection") ||
                !strstr(am2z_status_detail(), "not followed"))
                T_FAIL_("hop %d, %.40s: %s (%s)", hop, bad[i], am2z_status_string(st), am2z_status_detail());
            CHECK_INT(rep.type, AM2Z_REPLY_NONE); /* empty */
            CHECK(!am2z_redis_is_connected(r));
            CHECK_INT(aload(&a.gets), 1);
            CHECK_INT(aload(&b.gets), hop);
            /* the connection is usable again after a connect */
            CHECK_INT(am2z_redis_connect(r), AM2Z_STATUS_OK);
            am2z_reply_clear(&rep);
            am2z_redis_free(r);
        next:
            node_stop(&a);
            node_stop(&b);
        }
}

static void test_redirect_to_nothing(void) {
    /* a well-formed MOVED to a port nothing listens on: IO naming that node, the
       connection closed, nothing hangs */
    node a;
    am2z_redis *r;
    am2z_reply rep;
    am2z_status st;
    char want[64];
    memset(&rep, 0, sizeof rep);
    if (node_listen(&a, M_MOVED) != 0) { T_FAIL_("responder"); return; }
    a.to = closed_port();
    if (node_run(&a) != 0) { T_FAIL_("responder"); goto out; }
    if (!(r = client(a.port, 5000))) goto out;
    st = am2z_redis_command(r, &rep, "GET %s", KEY);
    snprintf(want, sizeof want, "127.0.0.1:%d", a.to);
    if (st != AM2Z_STATUS_IO || !strstr(am2z_status_detail(), want))
        T_FAIL_("%s (%s)", am2z_status_string(st), am2z_status_detail());
    CHECK(!am2z_redis_is_connected(r));
    CHECK_INT(aload(&a.gets), 1);
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
out:
    node_stop(&a);
}

int main(void) {
    T_RUN(test_moved_to_itself);
    T_RUN(test_moved_ping_pong);
    T_RUN(test_ask_sends_asking_first);
    T_RUN(test_error_after_ask_keeps_its_detail);
    T_RUN(test_tryagain_until_deadline);
    T_RUN(test_tryagain_retry_limit);
    T_RUN(test_tryagain_then_answer);
    T_RUN(test_malformed_redirects);
    T_RUN(test_redirect_to_nothing);
    return t_done();
}
