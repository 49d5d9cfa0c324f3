/* fixture.h - what several test programs need from am2z itself: a silent logger, and
   with am2z_resp.h a connection to the test's redis-server and a way to empty it.
   Include after am2z.h / am2z_resp.h (and after proc.h for fx_node_peer). */
#ifndef AM2Z_TEST_FIXTURE_H
#define AM2Z_TEST_FIXTURE_H

#include <string.h>

/* A logger that writes nothing; release it with am2z_logger_release. */
static inline am2z_logger *fx_quiet(void) {
    am2z_logger_desc d;
    memset(&d, 0, sizeof d);
    d.sink = AM2Z_SINK_SILENT;
    return am2z_logger_new(&d, NULL);
}

#ifdef AM2Z_RESP_H_INCLUDED
/* A connected client of the redis-server on 127.0.0.1:port, or NULL. */
static inline am2z_redis *fx_conn(int port) {
    am2z_redis_desc d;
    am2z_redis *r;
    memset(&d, 0, sizeof d);
    d.host = "127.0.0.1";
    d.port = port;
    r = am2z_redis_new(&d, NULL);
    if (r && am2z_redis_connect(r) != AM2Z_STATUS_OK) {
        am2z_redis_free(r);
        r = NULL;
    }
    return r;
}

/* FLUSHALL, so each test case starts from an empty server. */
static inline void fx_flushall(int port) {
    am2z_redis *r = fx_conn(port);
    am2z_reply rep;
    memset(&rep, 0, sizeof rep);
    if (!r) return;
    am2z_redis_command(r, &rep, "FLUSHALL");
    am2z_reply_clear(&rep);
    am2z_redis_free(r);
}
#endif

#ifdef AM2Z_TESTS_PROC_H
/* Installs the BullMQ peer (tests/interop/setup.sh) and writes its NODE_PATH entry to
   path; "" (and a line on stderr naming who) when node/npm are missing or the install
   failed, so the caller skips or, under CI, fails the Node cases. */
static inline void fx_node_peer(char *path, size_t size, const char *who) {
    int rc = tp_capture("sh tests/interop/setup.sh", path, size);
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", who, rc == 2 ? "node or npm missing" : "installing the BullMQ peer failed");
        path[0] = '\0';
    }
}
#endif

#endif
