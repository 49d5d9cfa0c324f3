/* metrics_server.c - serves a running runtime's stats to Prometheus: GET /metrics answers
   am2z_runtime_metrics_text, over plain sockets, on the loopback address by default. The
   runtime here is a local one with a small demo load in two sessions (an image step that
   takes 1-4 ms and a payment step that declines one charge in five), so there is
   something to scrape; in a real program, serve the runtime it already has.

       cc -O2 -I. -o metrics_server examples/metrics_server.c -pthread -lm
       ./metrics_server --port 9464 &
       curl -s http://127.0.0.1:9464/metrics

   Options: --host ADDR   IPv4 address to listen on (default 127.0.0.1; 0.0.0.0 exposes
                          it to the network: put it behind a firewall)
            --port N      port (default 9464; 0: any free port)
            --requests N  exit after answering N requests (default: serve until SIGINT or
                          SIGTERM)
   Prints "listening on ADDR:PORT" once it accepts connections. One request at a time; a
   client gets 5 s to send its request line and headers (at most 8 KiB). */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_IMPLEMENTATION
#include "am2z.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_MAX 8192

static volatile sig_atomic_t stopping;
static void on_signal(int sig) { (void)sig; stopping = 1; }

/* ---- the demo load ---- */

static void sleep_ms(long ms) {
    struct timespec ts = {0, 0};
    ts.tv_nsec = ms * 1000000L;
    nanosleep(&ts, NULL);
}

static am2z_result resize(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    sleep_ms(1 + am2z_value_get_int(in, "n", 0) % 4);
    return am2z_ok(am2z_value_retain(in));
}

static am2z_result charge(am2z_ctx *ctx, const am2z_state *in) {
    (void)ctx;
    if (am2z_value_get_int(in, "n", 0) % 5 == 0)
        return am2z_fail(am2z_error_business("DECLINED", AM2Z_SEVERITY_LOW, "card declined"));
    return am2z_ok(am2z_value_retain(in));
}

typedef struct load {
    am2z_runtime *rt;
    pthread_mutex_t mu;
    int stop; /* under mu */
} load;

static int load_stopped(load *l) {
    int s;
    pthread_mutex_lock(&l->mu);
    s = l->stop;
    pthread_mutex_unlock(&l->mu);
    return s;
}

/* One execution of each step every 20 ms, alternating between two sessions. */
static void *load_main(void *arg) {
    load *l = (load *)arg;
    int n;
    for (n = 0; !load_stopped(l); n++) {
        am2z_state *in = am2z_value_set(am2z_value_object(), "n", am2z_value_int(n));
        const char *session = n % 2 ? "tenant-a" : "tenant-b";
        am2z_outcome out = am2z_runtime_execute_in_session(l->rt, "resize", in, session);
        am2z_outcome_clear(&out);
        out = am2z_runtime_execute_in_session(l->rt, "charge", in, session);
        am2z_outcome_clear(&out);
        am2z_value_release(in);
        sleep_ms(20);
    }
    return NULL;
}

/* ---- HTTP ---- */

static void send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) continue;
            return; /* the client went away */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void respond(int fd, const char *status, const char *type, const char *body, size_t len) {
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %lu\r\n"
                     "Connection: close\r\n\r\n", status, type, (unsigned long)len);
    send_all(fd, head, (size_t)n);
    send_all(fd, body, len);
}

/* Reads the request head (up to the blank line) and answers it. */
static void serve(int fd, am2z_runtime *rt) {
    char req[REQUEST_MAX + 1];
    size_t n = 0;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (n < REQUEST_MAX) {
        ssize_t r = recv(fd, req + n, REQUEST_MAX - n, 0);
        if (r < 0 && errno == EINTR && !stopping) continue;
        if (r <= 0) return; /* closed, timed out or stopping: nothing to answer */
        n += (size_t)r;
        req[n] = 0;
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n")) break;
    }
    req[n] = 0;
    if (n == REQUEST_MAX && !strstr(req, "\r\n\r\n")) {
        respond(fd, "431 Request Header Fields Too Large", "text/plain", "request too large\n", 18);
    } else if (strncmp(req, "GET ", 4) != 0) {
        respond(fd, "405 Method Not Allowed", "text/plain", "only GET\n", 9);
    } else if (strncmp(req + 4, "/metrics", 8) != 0 || (req[12] != ' ' && req[12] != '?')) {
        respond(fd, "404 Not Found", "text/plain", "try /metrics\n", 13);
    } else {
        char *text = NULL;
        size_t len = 0;
        if (am2z_runtime_metrics_text(rt, NULL, &text, &len) != AM2Z_STATUS_OK) {
            const char *d = am2z_status_detail();
            respond(fd, "500 Internal Server Error", "text/plain", d, strlen(d));
        } else {
            respond(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
        }
        am2z_free(text);
    }
}

static int listen_on(const char *host, int port) {
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    if (fd < 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "metrics_server: bad address %s\n", host);
        if (fd >= 0) close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        fprintf(stderr, "metrics_server: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    printf("listening on %s:%d\n", host, ntohs(a.sin_port));
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 9464, fd, i;
    long requests = -1, served = 0;
    am2z_processor_desc pd;
    struct sigaction sa;
    sigset_t sigs;
    pthread_t th;
    load l;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--host") == 0) host = argv[i + 1];
        else if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--requests") == 0) requests = atol(argv[i + 1]);
        else break;
    }
    if (i != argc || port < 0 || port > 65535) {
        fprintf(stderr, "usage: %s [--host ADDR] [--port N] [--requests N]\n", argv[0]);
        return 2;
    }

    /* The runtime's threads inherit a mask without SIGINT/SIGTERM; only main takes them,
       and its handler (no SA_RESTART) ends a waiting accept with EINTR. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    l.rt = am2z_local_runtime_new(NULL, NULL);
    memset(&pd, 0, sizeof pd);
    pd.name = "resize";
    pd.fn = resize;
    am2z_runtime_register(l.rt, am2z_processor_new(&pd, NULL));
    pd.name = "charge";
    pd.fn = charge;
    if (am2z_runtime_register(l.rt, am2z_processor_new(&pd, NULL)) != AM2Z_STATUS_OK ||
        !am2z_runtime_is_registered(l.rt, "resize")) {
        fprintf(stderr, "metrics_server: setup failed: %s\n", am2z_status_detail());
        am2z_runtime_free(l.rt);
        return 1;
    }
    pthread_mutex_init(&l.mu, NULL);
    l.stop = 0;
    pthread_create(&th, NULL, load_main, &l);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);

    fd = listen_on(host, port);
    while (fd >= 0 && !stopping && (requests < 0 || served < requests)) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue; /* EINTR (a signal: the loop checks stopping) or a failed client */
        serve(c, l.rt);
        close(c);
        served++;
    }
    if (fd >= 0) close(fd);
    pthread_mutex_lock(&l.mu);
    l.stop = 1;
    pthread_mutex_unlock(&l.mu);
    pthread_join(th, NULL);
    pthread_mutex_destroy(&l.mu);
    am2z_runtime_free(l.rt);
    return fd >= 0 ? 0 : 1;
}
