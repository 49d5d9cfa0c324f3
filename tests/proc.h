/* proc.h - child processes for the tests and benchmarks that drive other programs (the
   BullMQ peer in Node, am2z worker processes): spawn with extra environment variables and
   the child's stdout on a pipe, read its output line by line with a deadline, stop it.
   Everything is static; include it from one test or bench file. POSIX only.

   Why posix_spawn and not fork: the callers have threads (the am2z runtime), and after a
   fork only async-signal-safe calls are allowed in the child; posix_spawn does it right. */
#ifndef AM2Z_TESTS_PROC_H
#define AM2Z_TESTS_PROC_H

#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

extern char **environ;

/* Each includer uses a different subset; unused helpers must not warn. */
#define TP_FN static __attribute__((unused))

typedef struct tp_proc {
    pid_t pid;        /* 0 when not running */
    int out;          /* read end of the child's stdout, -1 when not captured */
    char buf[16384];  /* bytes read but not yet returned as lines */
    size_t len;
    int status;       /* waitpid status once reaped */
    int reaped;
} tp_proc;

TP_FN long long tp_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

TP_FN void tp_sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Starts argv[0] (searched in PATH) with environ plus env_add ("NAME=value" strings,
   NULL-terminated, may be NULL; later entries win). capture: 1 to pipe the child's stdout
   to p->out, 0 to inherit ours. stderr is always inherited so failures show in the log.
   Returns 0, or -1 with errno set. */
TP_FN int tp_spawn(tp_proc *p, char *const argv[], const char *const *env_add, int capture) {
    int fds[2] = {-1, -1};
    size_t n_env = 0, n_add = 0, i, k;
    char **envp;
    posix_spawn_file_actions_t fa;
    int rc;

    memset(p, 0, sizeof *p);
    p->out = -1;
    while (environ[n_env]) n_env++;
    while (env_add && env_add[n_add]) n_add++;
    envp = (char **)calloc(n_env + n_add + 1, sizeof *envp);
    if (!envp) return -1;
    k = 0;
    for (i = 0; i < n_env; i++) {
        /* Drop inherited entries that env_add overrides. */
        size_t j, overridden = 0;
        const char *eq = strchr(environ[i], '=');
        size_t name_len = eq ? (size_t)(eq - environ[i]) + 1 : strlen(environ[i]);
        for (j = 0; j < n_add; j++)
            if (strncmp(env_add[j], environ[i], name_len) == 0) overridden = 1;
        if (!overridden) envp[k++] = environ[i];
    }
    for (i = 0; i < n_add; i++) envp[k++] = (char *)env_add[i];
    envp[k] = NULL;

    if (capture && pipe(fds) != 0) { free(envp); return -1; }
    posix_spawn_file_actions_init(&fa);
    if (capture) {
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        posix_spawn_file_actions_addclose(&fa, fds[0]);
        posix_spawn_file_actions_addclose(&fa, fds[1]);
    }
    rc = posix_spawnp(&p->pid, argv[0], &fa, NULL, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    free(envp);
    if (capture) close(fds[1]);
    if (rc != 0) {
        if (capture) close(fds[0]);
        p->pid = 0;
        errno = rc;
        return -1;
    }
    if (capture) {
        p->out = fds[0];
        fcntl(p->out, F_SETFD, FD_CLOEXEC); /* later children must not hold our pipe open */
    }
    return 0;
}

/* Reads one line of the child's stdout into line (NUL-terminated, newline removed, cut to
   size - 1). Returns 1 for a line, 0 at end of output, -1 when timeout_ms passed first. */
TP_FN int tp_readline(tp_proc *p, char *line, size_t size, long timeout_ms) {
    long long deadline = tp_now_ms() + timeout_ms;
    for (;;) {
        char *nl = (char *)memchr(p->buf, '\n', p->len);
        struct pollfd pf;
        long long left;
        ssize_t got;
        if (nl || p->len == sizeof p->buf) {
            size_t n = nl ? (size_t)(nl - p->buf) : p->len;
            size_t copy = n < size - 1 ? n : size - 1;
            size_t used = nl ? n + 1 : n;
            memcpy(line, p->buf, copy);
            line[copy] = '\0';
            memmove(p->buf, p->buf + used, p->len - used);
            p->len -= used;
            return 1;
        }
        if (p->out < 0) return 0;
        left = deadline - tp_now_ms();
        if (left <= 0) return -1;
        pf.fd = p->out;
        pf.events = POLLIN;
        pf.revents = 0;
        if (poll(&pf, 1, (int)left) < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        if (!pf.revents) continue;
        got = read(p->out, p->buf + p->len, sizeof p->buf - p->len);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
            close(p->out);
            p->out = -1;
            if (p->len) { /* a last line without newline */
                size_t copy = p->len < size - 1 ? p->len : size - 1;
                memcpy(line, p->buf, copy);
                line[copy] = '\0';
                p->len = 0;
                return 1;
            }
            return 0;
        }
        p->len += (size_t)got;
    }
}

/* Waits up to timeout_ms for the child to exit. Returns its exit code (128 + signal when
   killed), or -1 on timeout (the child keeps running). */
TP_FN int tp_wait(tp_proc *p, long timeout_ms) {
    long long deadline = tp_now_ms() + timeout_ms;
    if (!p->pid) return -1;
    while (!p->reaped) {
        pid_t r = waitpid(p->pid, &p->status, WNOHANG);
        if (r == p->pid) { p->reaped = 1; break; }
        if (r < 0 && errno != EINTR) return -1;
        if (tp_now_ms() >= deadline) return -1;
        tp_sleep_ms(2);
    }
    if (WIFEXITED(p->status)) return WEXITSTATUS(p->status);
    if (WIFSIGNALED(p->status)) return 128 + WTERMSIG(p->status);
    return -1;
}

/* Sends sig, waits up to grace_ms, then SIGKILL; always reaps and closes the pipe. */
TP_FN int tp_stop(tp_proc *p, int sig, long grace_ms) {
    int code = -1;
    if (p->pid && !p->reaped) {
        kill(p->pid, sig);
        code = tp_wait(p, grace_ms);
        if (code < 0) {
            kill(p->pid, SIGKILL);
            code = tp_wait(p, 10000);
        }
    } else if (p->reaped) {
        code = tp_wait(p, 0);
    }
    if (p->out >= 0) { close(p->out); p->out = -1; }
    return code;
}

/* The first line a command prints (popen), trimmed; "" on failure. Returns the exit code. */
TP_FN int tp_capture(const char *cmd, char *line, size_t size) {
    FILE *f = popen(cmd, "r");
    int rc;
    line[0] = '\0';
    if (!f) return -1;
    if (fgets(line, (int)size, f)) {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    }
    while (fgetc(f) != EOF) {}
    rc = pclose(f);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* ---- a private redis-server on a free loopback port ------------------------------------ */

/* 1 when 127.0.0.1:port answers PING with +PONG. */
TP_FN int tp_redis_ping(int port) {
    struct sockaddr_in a;
    char reply[16];
    ssize_t got;
    int ok = 0, fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, "PING\r\n", 6) == 6) {
        got = read(fd, reply, sizeof reply - 1);
        ok = got >= 5 && memcmp(reply, "+PONG", 5) == 0;
    }
    close(fd);
    return ok;
}

/* Starts redis-server (no persistence) on a random free port; returns the port, or 0 when
   redis-server is missing or would not start (the reason is on stderr). */
TP_FN int tp_redis_start(tp_proc *p) {
    int attempt;
    srand((unsigned)getpid() ^ (unsigned)tp_now_ms());
    for (attempt = 0; attempt < 10; attempt++) {
        int port = 20000 + rand() % 40000, i;
        char port_s[16];
        char *argv[14];
        argv[0] = (char *)"redis-server"; argv[1] = (char *)"--port"; argv[2] = port_s;
        argv[3] = (char *)"--bind"; argv[4] = (char *)"127.0.0.1"; argv[5] = (char *)"--save";
        argv[6] = (char *)""; argv[7] = (char *)"--appendonly"; argv[8] = (char *)"no";
        argv[9] = (char *)"--loglevel"; argv[10] = (char *)"warning";
        argv[11] = (char *)"--logfile"; argv[12] = (char *)"/dev/null"; argv[13] = NULL;
        if (tp_redis_ping(port)) continue; /* someone else's server */
        snprintf(port_s, sizeof port_s, "%d", port);
        if (tp_spawn(p, argv, NULL, 0) != 0) return 0;
        for (i = 0; i < 250; i++) {
            if (tp_redis_ping(port)) return port;
            if (tp_wait(p, 0) >= 0) break; /* exited: port taken, try another */
            tp_sleep_ms(4);
        }
        tp_stop(p, SIGKILL, 1000);
    }
    return 0;
}

#endif
