/* bench/sha256 - SHA-256 throughput of am2z (portable C and, where the CPU has them, the
   SHA extensions) for 64 B, 1 KiB and 1 MiB inputs, against OpenSSL measured in the
   same run on the same sizes:
     - `openssl speed -bytes N sha256`, once as is (OpenSSL uses SHA-NI when present) and
       once with OPENSSL_ia32cap=":~0x20000000", which hides the SHA extensions from
       OpenSSL so it runs its best non-SHA assembly (the "non-accelerated" baseline);
     - `openssl dgst -sha256` and `sha256sum` on a 64 MiB file, against am2z on the same
       bytes (wall time of the whole command, so their start-up and file reading count
       against them; the digests are compared too).
   Like `openssl speed` (which divides by CPU user time unless given -elapsed), am2z is
   timed in process CPU time, so other load on the machine skews both sides less. Each
   figure is the best of 3 rounds, am2z and OpenSSL alternating. Build: make bench. */
#define _POSIX_C_SOURCE 200809L
#define AM2Z_RESP_IMPLEMENTATION
#include "../am2z_resp.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double now_s(void) { return (double)am2z_monotonic_ns() / 1e9; }

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* MB/s of hashing `size`-byte messages for ~0.2 s of CPU time, best of 3. */
static double sha256_rate(const unsigned char *buf, size_t size) {
    double best = 0;
    int rep;
    for (rep = 0; rep < 3; rep++) {
        unsigned char d[32];
        size_t iters = 0, bytes = 0;
        double t0 = cpu_s(), t;
        do {
            size_t k;
            for (k = 0; k < 64; k++) {
                am2z_sha256(buf, size, d);
                bytes += size;
            }
            iters += 64;
        } while ((t = cpu_s() - t0) < 0.2 && iters < 100000000);
        if (bytes / t / 1e6 > best) best = bytes / t / 1e6;
        if (d[0] == 0 && d[1] == 0 && d[2] == 0 && d[3] == 0) best += 0; /* keep d alive */
    }
    return best;
}

/* `openssl speed` for one size; MB/s, or 0 when openssl is not available. */
static double openssl_speed(size_t size, int no_shani) {
    char cmd[256], line[512];
    double rate = 0, k;
    FILE *p;
    snprintf(cmd, sizeof cmd, "%sopenssl speed -seconds 1 -bytes %zu sha256 2>/dev/null",
             no_shani ? "OPENSSL_ia32cap=':~0x20000000' " : "", size);
    p = popen(cmd, "r");
    if (!p) return 0;
    while (fgets(line, sizeof line, p))
        if (sscanf(line, "sha256 %lfk", &k) == 1) rate = k * 1000 / 1e6;
    pclose(p);
    return rate;
}

/* Runs cmd on the file; returns its wall time and the first word of its output. */
static double run_tool(const char *cmd, char *digest, size_t cap) {
    char line[512];
    double t0 = now_s(), t;
    FILE *p = popen(cmd, "r");
    digest[0] = '\0';
    if (!p) return 0;
    if (fgets(line, sizeof line, p)) {
        /* "SHA2-256(file)= hex" (openssl) or "hex  file" (sha256sum) */
        char *eq = strstr(line, "= ");
        snprintf(digest, cap, "%.64s", eq ? eq + 2 : line);
    }
    t = now_s() - t0;
    return pclose(p) == 0 ? t : 0;
}

int main(void) {
    static const size_t sizes[3] = {64, 1024, 1 << 20};
    static const char *const names[3] = {"64 B", "1 KiB", "1 MiB"};
    size_t big = (size_t)64 << 20, i;
    unsigned char *buf = (unsigned char *)malloc(big);
    int has_shani = am2z_sha256_select(AM2Z_SHA256_SHANI) == AM2Z_STATUS_OK;
    char path[] = "/tmp/am2z-sha-bench-XXXXXX";
    int s;
    if (!buf) return 1;
    for (i = 0; i < big; i++) buf[i] = (unsigned char)(i * 2654435761u >> 13);

    printf("SHA-256 throughput in MB/s (CPU time; ratios against OpenSSL on the same size)\n");
    printf("%-6s %9s %9s %7s | %9s %9s %7s\n", "size", "portable", "openssl*", "ratio", "SHA-NI", "openssl",
           "ratio");
    for (s = 0; s < 3; s++) {
        double port = 0, ni = 0, ossl_plain = 0, ossl = 0, x;
        int round;
        for (round = 0; round < 3; round++) {
            am2z_sha256_select(AM2Z_SHA256_PORTABLE);
            if ((x = sha256_rate(buf, sizes[s])) > port) port = x;
            if ((x = openssl_speed(sizes[s], 1)) > ossl_plain) ossl_plain = x;
            if (has_shani) {
                am2z_sha256_select(AM2Z_SHA256_SHANI);
                if ((x = sha256_rate(buf, sizes[s])) > ni) ni = x;
                if ((x = openssl_speed(sizes[s], 0)) > ossl) ossl = x;
            }
        }
        printf("%-6s %9.0f %9.0f %7.2f | %9.0f %9.0f %7.2f\n", names[s], port, ossl_plain,
               ossl_plain > 0 ? port / ossl_plain : 0, ni, ossl, ossl > 0 && ni > 0 ? ni / ossl : 0);
    }
    printf("  openssl* = OpenSSL without the SHA extensions (OPENSSL_ia32cap=:~0x20000000), i.e. its\n"
           "  AVX2/BMI2 assembly; target: portable >= 0.80 of it. SHA-NI columns are 0 where the\n"
           "  CPU lacks the extensions.\n\n");

    /* the same 64 MiB through the command-line tools */
    {
        int fd = mkstemp(path);
        FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
        char hex[65], tool[80], cmd[256];
        double t_am2z, t;
        static const char *const tools[2] = {"openssl dgst -sha256", "sha256sum"};
        int k;
        if (!f || fwrite(buf, 1, big, f) != big) {
            printf("cannot write %s\n", path);
            return 1;
        }
        fclose(f);
        am2z_sha256_select(AM2Z_SHA256_AUTO);
        t_am2z = now_s();
        am2z_sha256_hex(buf, big, hex);
        t_am2z = now_s() - t_am2z;
        printf("64 MiB file (wall time): am2z (%s) %.0f MB/s\n",
               am2z_sha256_active() == AM2Z_SHA256_SHANI ? "SHA-NI" : "portable", big / t_am2z / 1e6);
        for (k = 0; k < 2; k++) {
            snprintf(cmd, sizeof cmd, "%s %s 2>/dev/null", tools[k], path);
            t = run_tool(cmd, tool, sizeof tool);
            if (t <= 0) {
                printf("  %-22s not available\n", tools[k]);
                continue;
            }
            printf("  %-22s %6.0f MB/s (whole command)  am2z/it = %.2f  digest %s\n", tools[k], big / t / 1e6,
                   t / t_am2z, strcmp(tool, hex) == 0 ? "equal" : "DIFFERENT");
        }
        remove(path);
    }
    free(buf);
    return 0;
}
