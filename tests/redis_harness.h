/* redis_harness.h - starts a private redis-server for a test, on a free loopback port,
   without persistence, and stops, restarts or kills it. Include after t.h.

       t_redis s;
       T_REDIS_START(&s, NULL);                 // or a NULL-terminated list of extra args
       ... connect to 127.0.0.1:s.port or s.unix_path ...
       t_redis_stop(&s);

   t_redis_freeze / t_redis_thaw stop and continue the server process (SIGSTOP/SIGCONT):
   it keeps its sockets, so connects succeed and commands get no answer. A test that
   freezes must thaw on every path; stop and kill end a frozen server too.

   T_REDIS_REQUIRE(rc) applies the same skip/fail rule to the result of t_redis_start,
   for a server shared by several test cases.

   When redis-server is not installed the test is skipped loudly, or fails when the CI
   environment variable is set (CI installs it, so a missing server there is a bug).
   The server dies with the test process (PR_SET_PDEATHSIG on Linux) and its files live
   in a temporary directory removed by t_redis_stop. */
#ifndef AM2Z_REDIS_HARNESS_H
#define AM2Z_REDIS_HARNESS_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define T_REDIS_MAX_ARGS 32
#define T_REDIS_MISSING (-2)

typedef struct t_redis {
    int port;
    pid_t pid;                 /* 0 when not running */
    char dir[128];             /* temporary directory: log, unix socket */
    char unix_path[160];
    const char *extra[T_REDIS_MAX_ARGS];
    int nextra;
} t_redis;

static inline int t_redis_installed(void) {
    const char *path = getenv("PATH");
    char buf[1024];
    while (path && *path) {
        size_t n = strcspn(path, ":");
        snprintf(buf, sizeof buf, "%.*s/redis-server", (int)n, path);
        if (access(buf, X_OK) == 0) return 1;
        path += n + (path[n] == ':');
    }
    return 0;
}

static inline int t_redis_free_port(void) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
    if (fd < 0) return 0;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static inline void t_redis_sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Forks redis-server; the child first sleeps delay_ms (to test clients that wait for a
   server coming back). Does not wait for it to answer. */
static inline int t_redis_spawn(t_redis *s, int delay_ms) {
    char port[16];
    const char *argv[T_REDIS_MAX_ARGS + 24];
    int argc = 0, i;
    pid_t pid;
    snprintf(port, sizeof port, "%d", s->port);
    argv[argc++] = "redis-server";
    argv[argc++] = "--port"; argv[argc++] = port;
    argv[argc++] = "--bind"; argv[argc++] = "127.0.0.1"; argv[argc++] = "-::1";
    argv[argc++] = "--save"; argv[argc++] = "";
    argv[argc++] = "--appendonly"; argv[argc++] = "no";
    argv[argc++] = "--daemonize"; argv[argc++] = "no";
    argv[argc++] = "--dir"; argv[argc++] = s->dir;
    argv[argc++] = "--logfile"; argv[argc++] = "redis.log";
    argv[argc++] = "--unixsocket"; argv[argc++] = s->unix_path;
    argv[argc++] = "--unixsocketperm"; argv[argc++] = "700";
    for (i = 0; i < s->nextra; i++) argv[argc++] = s->extra[i];
    argv[argc] = NULL;
    fflush(NULL);
    pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        if (devnull >= 0) { dup2(devnull, 0); dup2(devnull, 1); dup2(devnull, 2); }
        if (delay_ms > 0) t_redis_sleep_ms(delay_ms);
        execvp("redis-server", (char *const *)(void *)argv);
        _exit(127);
    }
    s->pid = pid;
    return 0;
}

/* 0 once the server answers PING (any reply, +PONG or -NOAUTH), -1 if it died or did
   not answer within 5 s. */
static inline int t_redis_wait_ready(t_redis *s) {
    int i;
    for (i = 0; i < 500; i++) {
        struct sockaddr_in a;
        int fd, status;
        char buf[64];
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return -1;
        }
        fd = socket(AF_INET, SOCK_STREAM, 0);
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((unsigned short)s->port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
            write(fd, "PING\r\n", 6) == 6 && read(fd, buf, sizeof buf) > 0 && (buf[0] == '+' || buf[0] == '-')) {
            close(fd);
            return 0;
        }
        if (fd >= 0) close(fd);
        t_redis_sleep_ms(10);
    }
    return -1;
}

static inline void t_redis_reap(t_redis *s, int sig) {
    if (s->pid > 0) {
        kill(s->pid, sig);
        kill(s->pid, SIGCONT); /* a frozen server acts on SIGTERM only once it runs */
        while (waitpid(s->pid, NULL, 0) < 0 && errno == EINTR) {}
    }
    s->pid = 0;
}

/* extra: NULL or a NULL-terminated list of extra redis-server arguments (borrowed for
   the life of s). Returns 0, T_REDIS_MISSING, or -1 when the server would not start. */
static inline int t_redis_start(t_redis *s, const char *const *extra) {
    int attempt;
    memset(s, 0, sizeof *s);
    if (!t_redis_installed()) return T_REDIS_MISSING;
    while (extra && extra[s->nextra] && s->nextra < T_REDIS_MAX_ARGS) {
        s->extra[s->nextra] = extra[s->nextra];
        s->nextra++;
    }
    snprintf(s->dir, sizeof s->dir, "/tmp/am2z-redis-XXXXXX");
    if (!mkdtemp(s->dir)) return -1;
    snprintf(s->unix_path, sizeof s->unix_path, "%s/redis.sock", s->dir);
    /* the free port can be taken between the probe and the bind: try a few */
    for (attempt = 0; attempt < 5; attempt++) {
        s->port = t_redis_free_port();
        if (s->port && t_redis_spawn(s, 0) == 0 && t_redis_wait_ready(s) == 0) return 0;
        t_redis_reap(s, SIGKILL);
    }
    return -1;
}

static inline void t_redis_cleanup_dir(t_redis *s) {
    char path[256];
    if (!s->dir[0]) return;
    snprintf(path, sizeof path, "%s/redis.log", s->dir); unlink(path);
    snprintf(path, sizeof path, "%s/dump.rdb", s->dir); unlink(path);
    unlink(s->unix_path);
    rmdir(s->dir);
    s->dir[0] = '\0';
}

/* Graceful stop (SIGTERM), files removed. */
static inline void t_redis_stop(t_redis *s) {
    t_redis_reap(s, SIGTERM);
    t_redis_cleanup_dir(s);
}

/* A server that stops answering without closing anything (as a hung host would). */
static inline void t_redis_freeze(t_redis *s) { if (s->pid > 0) kill(s->pid, SIGSTOP); }
static inline void t_redis_thaw(t_redis *s) { if (s->pid > 0) kill(s->pid, SIGCONT); }

/* Like a crash: SIGKILL, files kept for a restart. */
static inline void t_redis_kill(t_redis *s) { t_redis_reap(s, SIGKILL); }

/* Starts the server again on the same port with the same arguments (after stop or
   kill); with delay_ms > 0 it comes up only after that long and this returns at once. */
static inline int t_redis_restart(t_redis *s, int delay_ms) {
    if (s->pid) t_redis_reap(s, SIGTERM);
    if (t_redis_spawn(s, delay_ms) != 0) return -1;
    return delay_ms > 0 ? 0 : t_redis_wait_ready(s);
}

/* Ends the calling test case unless rc (from t_redis_start) is 0. */
#define T_REDIS_REQUIRE(rc) do { \
        if ((rc) == T_REDIS_MISSING) { \
            if (getenv("CI")) { T_FAIL_("redis-server is not installed, and CI is set"); return; } \
            T_SKIP("redis-server is not installed: this Redis test did NOT run"); \
        } \
        if ((rc) != 0) { T_FAIL_("redis-server did not start"); return; } \
    } while (0)

/* A private server for this test case (stop it with t_redis_stop). */
#define T_REDIS_START(s, extra) do { \
        int t_rc_ = t_redis_start((s), (extra)); \
        if (t_rc_ != 0) t_redis_stop(s); \
        T_REDIS_REQUIRE(t_rc_); \
    } while (0)

#endif
