/* am2z_resp.h - v0.1 - SHA-256, a RESP (Redis protocol) client and the distributed queue
   runtime for am2z.h. MIT licence at the end of am2z.h.

   Do this:
       #define AM2Z_RESP_IMPLEMENTATION
   before you include this file in ONE C or C++ file. It implies AM2Z_IMPLEMENTATION, so
   that file compiles the implementation of both headers. Link with -pthread.

   RECIPE (a Redis client; compiles as pasted: cc -std=c99 -O2 -pthread redis.c)

       #define AM2Z_RESP_IMPLEMENTATION
       #include "am2z_resp.h"
       #include <stdio.h>

       int main(void) {
           am2z_redis_desc desc = {0};
           desc.host = "127.0.0.1"; desc.port = 6379;
           am2z_redis *r = am2z_redis_new(&desc, NULL);
           am2z_reply reply = {0};                   // start zeroed; each call clears it
           if (!r || am2z_redis_connect(r) != AM2Z_STATUS_OK) {
               fprintf(stderr, "%s\n", am2z_status_detail()); // "redis 127.0.0.1:6379: connect: ..."
               am2z_redis_free(r);
               return 1;
           }
           am2z_redis_command(r, &reply, "SET greeting %s", "hello world"); // one argument
           if (am2z_redis_command(r, &reply, "GET greeting") == AM2Z_STATUS_OK)
               printf("%s\n", am2z_reply_str(&reply));
           for (int i = 0; i < 100; i++) am2z_redis_append(r, "INCR counter");
           for (int i = 0; i < 100; i++) am2z_redis_read(r, &reply);
           am2z_reply_clear(&reply);
           am2z_redis_free(r);
           return 0;
       }

   CONTENTS (each is a banner "==== N. name ====", first as declarations, then again
   inside the implementation)
       1  SHA-256      streaming and one-shot digests, hex; SHA-NI when the CPU has it
       2  RESP         reply objects, the incremental reader, the command writer
       3  connection   TCP/Unix connections, pipelines, blocking commands, scripts, pool
       4  queue runtime the distributed runtime (BullMQ v6 layout), Redis state manager;
                        its own table lists 4.1 layout, 4.2 scripts, 4.3 execution across
                        processes, 4.4 workers, 4.5 delivery, 4.6 sessions, 4.7 stats,
                        4.8 lifecycle, 4.9 state manager ("---- 4.N ----" banners)

   OPTIONS (define before including the implementation; limits protect against a hostile
   or broken peer and can also be lowered per reader with am2z_resp_limits)
       AM2Z_RESP_MAX_DEPTH     nested aggregates in one reply (default 64)
       AM2Z_RESP_MAX_ELEMENTS  entries of one aggregate, a map counting 2 per pair
                               (default 16,777,216)
       AM2Z_RESP_MAX_BULK      bytes of one string (default 512 MiB, as Redis's
                               proto-max-bulk-len)
       AM2Z_RESP_MAX_BUFFER    bytes fed to a reader and not yet parsed (default 64 MiB);
                               string payloads are moved out as they arrive, so this
                               bounds unterminated lines and unread data, not values
       AM2Z_REDIS_MAX_SENTINELS  entries of am2z_redis_desc.sentinels and of its
                               cluster_nodes (default 16)
       AM2Z_REDIS_MAX_BUFFER   the same bound for a connection's reader, whose desc.limits
                               leave max_buffer 0 (default 1 MiB): a server sending a line
                               without CR LF costs a connection at most this much
       AM2Z_REDIS_MAX_REDIRECTS  ASK and MOVED hops one command of a cluster connection
                               follows before its last redirection is returned (default 16)
       AM2Z_REDIS_CLUSTER_RETRY_MS  how long a cluster connection retries a TRYAGAIN when
                               the call has no deadline of its own (default 30000)
       AM2Z_SHA256_PORTABLE_ONLY  build only the portable C SHA-256 (no cpuid, no
                               x86 code paths)
       AM2Z_QUEUE_MAX_WORKERS  worker threads of one queue runtime (default 1024)
       AM2Z_QUEUE_BATCH        jobs a worker takes at once from a deep queue (default 16)
       AM2Z_QUEUE_STATE_RETRIES compare-and-set rounds of am2z_queue_state_update (default 10)
       AM2Z_QUEUE_SCHEDULE_ID_MAX bytes of a schedule id on the queue runtime (default 40)
       AM2Z_QUEUE_SCHEDULE_POLL_MS longest wait of a process's schedule timer in Redis
                               (default 10000; an upsert anywhere ends it at once)
       AM2Z_QUEUE_PARK_MAX_MS  how long a durable execution waiting for a signal without a
                               timeout stays parked before it looks again (default 365 days)
       AM2Z_QUEUE_DURABLE_KEEP_MS  default am2z_queue_desc.durable_keep_ms: how long a finished
                               durable execution's outcome stays in Redis (default 7 days)
       AM2Z_QUEUE_DURABLE_KEEP_MAX_MS  the longest durable_keep_ms (default 100 years; more
                               is taken as this)

   RESP READER RULES
       Lines end in CR LF; a lone CR or LF in a line is a PROTOCOL failure. Integers are an
       optional '-' and 1 to 19 digits that fit int64; lengths and counts are -1 (nil) or >= 0.
       Memory follows the bytes that arrived, never a declared length or count: strings
       grow as their payload comes in, element arrays in capped steps. Parsing uses an
       explicit stack (no recursion). A failure is sticky: its status, reason and stream
       offset are reported again by every later call until a reset. Streamed RESP3
       strings/aggregates ($?, *?) are refused: Redis does not send them.

   THREADING
       SHA-256 contexts, readers, buffers, replies and connections belong to one thread at
       a time; they have no locks. Share scripts freely (immutable). The pool is
       thread-safe. am2z_sha256_select is process-wide: call it before other threads hash.
       The detail of a failure is the failing thread's: read it on that thread.

   OWNERSHIP
       As in am2z.h: _clear empties a caller-owned struct, _free frees a heap object.
       am2z_reply and am2z_resp_buf are caller-owned: start them zeroed; a function that
       fills a reply clears what it held first, am2z_reply_clear frees its whole tree,
       am2z_resp_buf_clear the buffer's storage. Connections free with am2z_redis_free,
       readers with am2z_resp_reader_free, scripts with am2z_redis_script_free, pools
       with am2z_redis_pool_free.

   FAILURES
       As in am2z.h: a failing call returns an am2z_status (a constructor: NULL and the
       status in its optional last argument) and leaves the reason in
       am2z_status_detail(), the stream offset of a RESP parse failure in
       am2z_status_offset(). The RESP reader's "need more bytes" is AM2Z_STATUS_NEED_MORE.
       An error reply from the server is data: a reply of type AM2Z_REPLY_ERROR, which the
       connection also reports as AM2Z_STATUS_SERVER.
*/
#ifdef AM2Z_NO_THREADS
#error "am2z_resp.h: the Redis queue runtime needs threads (its workers and its result receiver are threads), so it cannot be built with AM2Z_NO_THREADS. Remove -DAM2Z_NO_THREADS, or use am2z.h alone (its inline runtime needs no threads)."
#endif
#if defined(AM2Z_RESP_IMPLEMENTATION) && !defined(AM2Z_IMPLEMENTATION)
#define AM2Z_IMPLEMENTATION
#endif
#include "am2z.h"

#ifndef AM2Z_RESP_H_INCLUDED
#define AM2Z_RESP_H_INCLUDED

#ifndef AM2Z_RESP_MAX_DEPTH
#define AM2Z_RESP_MAX_DEPTH 64
#endif
#ifndef AM2Z_RESP_MAX_ELEMENTS
#define AM2Z_RESP_MAX_ELEMENTS ((size_t)1 << 24)
#endif
#ifndef AM2Z_RESP_MAX_BULK
#define AM2Z_RESP_MAX_BULK ((size_t)512 << 20)
#endif
#ifndef AM2Z_RESP_MAX_BUFFER
#define AM2Z_RESP_MAX_BUFFER ((size_t)64 << 20)
#endif
#ifndef AM2Z_REDIS_MAX_BUFFER
#define AM2Z_REDIS_MAX_BUFFER ((size_t)1 << 20)
#endif
#ifndef AM2Z_REDIS_MAX_SENTINELS
#define AM2Z_REDIS_MAX_SENTINELS 16
#endif
#ifndef AM2Z_REDIS_MAX_REDIRECTS
#define AM2Z_REDIS_MAX_REDIRECTS 16
#endif
#ifndef AM2Z_REDIS_CLUSTER_RETRY_MS
#define AM2Z_REDIS_CLUSTER_RETRY_MS 30000
#endif

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ==== 1. SHA-256 ====================================================================== */
/* FIPS 180-4 SHA-256. No allocation, no I/O; a context is used by one thread at a time,
   the one-shot functions are thread-safe. */

#define AM2Z_SHA256_SIZE 32 /* digest bytes; the hex form has 64 characters + NUL */

typedef struct am2z_sha256_ctx {
    uint32_t state[8];
    uint64_t total;              /* bytes hashed so far */
    unsigned char block[64];     /* a partial block waiting for more input */
    size_t used;                 /* bytes in block */
} am2z_sha256_ctx;

AM2Z_API void am2z_sha256_init(am2z_sha256_ctx *ctx);
AM2Z_API void am2z_sha256_update(am2z_sha256_ctx *ctx, const void *data, size_t len);
/* Writes the digest and leaves ctx initialised again for a new message. */
AM2Z_API void am2z_sha256_final(am2z_sha256_ctx *ctx, unsigned char digest[AM2Z_SHA256_SIZE]);
AM2Z_API void am2z_sha256(const void *data, size_t len, unsigned char digest[AM2Z_SHA256_SIZE]);
/* Lower-case hex of the digest of data, NUL-terminated (65 bytes). */
AM2Z_API void am2z_sha256_hex(const void *data, size_t len, char hex[2 * AM2Z_SHA256_SIZE + 1]);
AM2Z_API void am2z_sha256_to_hex(const unsigned char digest[AM2Z_SHA256_SIZE],
                                 char hex[2 * AM2Z_SHA256_SIZE + 1]);

/* Which block function runs. AUTO (the default) uses the x86-64 SHA extensions when the
   CPU has them (checked once with cpuid) and the portable C otherwise. */
typedef enum am2z_sha256_impl {
    AM2Z_SHA256_AUTO = 0,
    AM2Z_SHA256_PORTABLE,  /* plain C99, any CPU */
    AM2Z_SHA256_SHANI      /* x86 SHA extensions (intrinsics; x86-64 and 32-bit x86) */
} am2z_sha256_impl;
/* Selects the implementation for the whole process (call it before hashing starts on
   other threads). Returns AM2Z_STATUS_OK, or AM2Z_STATUS_NOT_FOUND when the CPU or the build
   lacks it (the selection is then unchanged). */
AM2Z_API am2z_status am2z_sha256_select(am2z_sha256_impl impl);
AM2Z_API am2z_sha256_impl am2z_sha256_active(void); /* the one in use, never AUTO */

/* ==== 2. RESP reader/writer =========================================================== */
/* The Redis protocol: RESP2 and the RESP3 types Redis 7 sends. The reader is an I/O-free
   state machine: feed it bytes as they arrive, take replies out.
   Words: an "error" is only AM2Z_REPLY_ERROR, an error reply the server sent (data, like
   any other reply); a call that does not succeed "fails" and reports an am2z_status, with
   the reason in am2z_status_detail() (section 0 of am2z.h), as everywhere in am2z.
   Every function that fills an am2z_reply (the reader's _next and the connection's
   _command, _read, _blocking and _evalsha families) clears what it still holds first, so
   one reply can be reused without am2z_reply_clear in between; it must start zeroed
   (`am2z_reply reply = {0};` or memset). */

typedef enum am2z_reply_type {
    AM2Z_REPLY_NONE = 0,  /* an empty (cleared) reply */
    AM2Z_REPLY_STRING,    /* +simple string */
    AM2Z_REPLY_ERROR,     /* -error or !blob error: the message, e.g. "ERR unknown command" */
    AM2Z_REPLY_INTEGER,   /* :integer -> integer */
    AM2Z_REPLY_BULK,      /* $bulk string (binary-safe) */
    AM2Z_REPLY_ARRAY,     /* *array */
    AM2Z_REPLY_NIL,       /* $-1, *-1 and RESP3 _ */
    AM2Z_REPLY_DOUBLE,    /* ,double -> number, and its text as the string */
    AM2Z_REPLY_BOOL,      /* #t / #f -> integer 1 / 0 */
    AM2Z_REPLY_MAP,       /* %map: element holds key, value, key, value ... (len = 2 * pairs) */
    AM2Z_REPLY_SET,       /* ~set */
    AM2Z_REPLY_PUSH,      /* >push (out-of-band data in RESP3) */
    AM2Z_REPLY_BIGNUM,    /* (big number: its decimal text as the string */
    AM2Z_REPLY_VERBATIM   /* =verbatim string: format ("txt") and the text after "txt:" */
} am2z_reply_type;

/* One reply, possibly a tree. The caller owns the storage of the struct (often on the
   stack); am2z_reply_clear frees everything the reply holds, children included. Strings
   shorter than 32 bytes live inside the struct, so integers, nil, booleans, doubles and
   short strings ("OK", "QUEUED", small values) cost no allocation. A reply may be moved
   by plain assignment (then clear only one of the copies); read its text with
   am2z_reply_str. RESP3 attributes (|) are parsed and dropped. Start it zeroed: the
   functions that fill it clear it first. */
typedef struct am2z_reply {
    am2z_reply_type type;
    char format[4];               /* VERBATIM: "txt", "mkd"; otherwise "" */
    size_t len;                   /* string types: bytes; aggregates: entries in element */
    int64_t integer;              /* INTEGER; BOOL: 1 or 0 */
    double number;                /* DOUBLE */
    struct am2z_reply *element;   /* ARRAY, MAP, SET, PUSH: len entries (NULL when len is 0) */
    char *ext;                    /* private: string storage of 32 bytes or more */
    char small[32];               /* private: shorter strings, NUL-terminated */
} am2z_reply;

/* The bytes of a STRING, ERROR, BULK, DOUBLE, BIGNUM or VERBATIM reply, NUL-terminated
   (the string may contain NUL; the length is r->len). Borrowed from r; "" for other types. */
AM2Z_API const char *am2z_reply_str(const am2z_reply *r);
/* Element i of an aggregate (borrowed), NULL when out of range or not an aggregate. */
AM2Z_API const am2z_reply *am2z_reply_at(const am2z_reply *r, size_t i);
/* Frees what r holds (the whole tree) and zeroes it; r itself is not freed. */
AM2Z_API void am2z_reply_clear(am2z_reply *r);
AM2Z_API const char *am2z_reply_type_name(am2z_reply_type type); /* "bulk", ...; static */

/* Reader limits; each zero field takes its compile-time default (see OPTIONS). */
typedef struct am2z_resp_limits {
    int max_depth;          /* nested aggregates; AM2Z_RESP_MAX_DEPTH */
    size_t max_elements;    /* entries of one aggregate (a map counts 2 per pair); AM2Z_RESP_MAX_ELEMENTS */
    size_t max_bulk;        /* bytes of one string; AM2Z_RESP_MAX_BULK */
    size_t max_buffer;      /* bytes fed but not yet parsed; AM2Z_RESP_MAX_BUFFER */
} am2z_resp_limits;

typedef struct am2z_resp_reader am2z_resp_reader;

/* limits (borrowed, copied; NULL: all defaults). NULL on failure with *status (optional;
   set on success too): INVALID_ARGUMENT for a negative max_depth, NO_MEMORY. Free with
   am2z_resp_reader_free. */
AM2Z_API am2z_resp_reader *am2z_resp_reader_new(const am2z_resp_limits *limits, am2z_status *status);
AM2Z_API void am2z_resp_reader_free(am2z_resp_reader *rd);
/* Copies len bytes of data (borrowed) into the reader. AM2Z_STATUS_OK, or LIMIT when
   max_buffer would be exceeded, NO_MEMORY, or the sticky failure of an earlier call. */
AM2Z_API am2z_status am2z_resp_reader_feed(am2z_resp_reader *rd, const void *data, size_t len);
/* Parses the next reply into *out (which must start zeroed; a reply it still holds is
   cleared first). Returns
     AM2Z_STATUS_OK         *out owns a reply
     AM2Z_STATUS_NEED_MORE  no complete reply yet: feed more bytes (not a failure)
     PROTOCOL, LIMIT, NO_MEMORY  a failure, with the reason and the stream offset in
                            am2z_status_detail() / am2z_status_offset() ("resp: bulk length
                            -2 is invalid", "resp: depth limit 7 exceeded"). It is sticky:
                            every later call reports it again, until _reset.
   On every status but OK *out is left empty. */
AM2Z_API am2z_status am2z_resp_reader_next(am2z_resp_reader *rd, am2z_reply *out);
/* Drops buffered bytes, any half-parsed reply and the sticky failure. */
AM2Z_API void am2z_resp_reader_reset(am2z_resp_reader *rd);

/* Writer: commands as RESP arrays of bulk strings, appended to a growable buffer.
   Zero-initialise the buffer (caller-owned); empty it with am2z_resp_buf_clear. On
   failure the buffer keeps its previous contents and the detail says why. */
typedef struct am2z_resp_buf {
    char *data;
    size_t len;
    size_t cap;
} am2z_resp_buf;

/* argv[i] (borrowed) has argvlen[i] bytes (binary-safe), AM2Z_NTS for a C string;
   argvlen NULL: every argument is a C string. */
AM2Z_API am2z_status am2z_resp_append_argv(am2z_resp_buf *b, size_t argc, const char *const *argv,
                                           const size_t *argvlen);
/* printf-like, but injection-proof: the FORMAT's own spaces and tabs separate arguments;
   a substituted value is always part of exactly one argument, whatever bytes it holds.
   Directives: %s (const char *), %b (const void *, size_t: binary; AM2Z_NTS for a C
   string), %d (int), %ld (long), %lld (long long), %u (unsigned), %zu (size_t), %f
   (double: the shortest of 15 to 17 significant digits that reads back exactly, with a
   '.' whatever the locale), %%.
   Text and directives that touch form one argument: "user:%d" is one argument.
   An unknown directive gives AM2Z_STATUS_INVALID_ARGUMENT. */
AM2Z_API am2z_status am2z_resp_append_fmt(am2z_resp_buf *b, const char *fmt, ...);
AM2Z_API am2z_status am2z_resp_append_vfmt(am2z_resp_buf *b, const char *fmt, va_list ap);
/* Frees the buffer's storage and zeroes it; b itself is not freed. */
AM2Z_API void am2z_resp_buf_clear(am2z_resp_buf *b);

/* ==== 3. connection =================================================================== */
/* A synchronous Redis connection. One connection is used by one thread at a time (no
   internal locking); give each thread its own or share them through am2z_redis_pool.
   Sockets are non-blocking and every wait is a poll() bounded by a timeout; TCP_NODELAY
   is set, and writes use MSG_NOSIGNAL (SO_NOSIGPIPE where that exists) so a server that
   went away fails the call with IO, never raises SIGPIPE. Pub/sub is not supported: a
   subscribed RESP2 connection would take messages for replies, and in RESP3 they go to
   on_push.
   Failures: every call that fails returns its status and leaves the reason in
   am2z_status_detail() on the calling thread: "redis 127.0.0.1:6379: connect: Connection
   refused", "redis 127.0.0.1:6379: read timed out after 50 ms", "redis 127.0.0.1:6379:
   resp: bad integer" (am2z_status_offset() then gives the stream offset), or, for
   AM2Z_STATUS_SERVER, the server's message itself ("WRONGTYPE Operation against ..."). */

/* Transport hook, e.g. TLS from your own library. am2z opens the TCP or Unix socket
   (non-blocking), then calls open() once per (re)connect and uses read/write/close on
   what it returned. read/write return the bytes moved (> 0), 0 for end of stream (read),
   AM2Z_IO_WANT_READ / AM2Z_IO_WANT_WRITE when they need the socket to become readable /
   writable (am2z polls and calls again), or -1 with errno set on failure. */
#define AM2Z_IO_WANT_READ (-2)
#define AM2Z_IO_WANT_WRITE (-3)
typedef struct am2z_redis_transport {
    /* Handshake on the connected socket fd within timeout_ms; returns the transport's
       connection (NULL on failure). May be NULL: then user_data is used as it. */
    void *(*open)(int fd, const char *host, int64_t timeout_ms, void *user_data);
    ptrdiff_t (*read)(void *conn, void *buf, size_t len);
    ptrdiff_t (*write)(void *conn, const void *buf, size_t len);
    void (*close)(void *conn);  /* may be NULL; am2z closes fd afterwards */
    void *user_data;
} am2z_redis_transport;

typedef void (*am2z_redis_push_fn)(const am2z_reply *push, void *user_data);

/* Zero fields take the defaults. Strings are copied. */
typedef struct am2z_redis_desc {
    const char *host;             /* name, IPv4 or IPv6 literal; default "127.0.0.1" */
    int port;                     /* default 6379 */
    const char *unix_path;        /* a Unix socket path; when set host and port are unused */
    const char *user;             /* ACL user (AUTH user password); NULL: AUTH password */
    const char *password;         /* NULL: no AUTH */
    int db;                       /* SELECT db when > 0 */
    const char *client_name;      /* CLIENT SETNAME when set */
    int resp3;                    /* non-zero: HELLO 3 (and AUTH/SETNAME through it) */
    int64_t connect_timeout_ms;   /* default 5000; < 0: none */
    int64_t command_timeout_ms;   /* per reply; default 30000; < 0: none */
    int reconnect_attempts;       /* am2z_redis_reconnect tries; default 10 */
    int64_t reconnect_base_ms;    /* first backoff delay, doubled each try; default 50 */
    int64_t reconnect_max_ms;     /* backoff cap; default 2000 (each delay has jitter) */
    int auto_reconnect;           /* non-zero: a command on a broken connection reconnects first (one try) */
    am2z_redis_push_fn on_push;   /* RESP3 pushes arriving between replies; default: dropped */
    void *push_user_data;
    am2z_redis_transport transport; /* read == NULL: plain socket */
    am2z_resp_limits limits;      /* the reply reader's; max_buffer 0: AM2Z_REDIS_MAX_BUFFER
                                     (1 MiB), which bounds what an unterminated line or
                                     unparsed replies cost; string values are not counted */
    /* Sentinel (SENTINEL below): with n_sentinels > 0 every connect finds the master
       through the sentinels; host, port and unix_path are then unused. */
    const char *const *sentinels; /* n_sentinels "host:port" ("[::1]:26379"); borrowed, copied */
    int n_sentinels;              /* 0: no Sentinel; 1..AM2Z_REDIS_MAX_SENTINELS */
    const char *sentinel_master;  /* the master name the sentinels monitor; required with them */
    const char *sentinel_user;    /* AUTH to the sentinels (their own ACL); NULL: AUTH password */
    const char *sentinel_password;/* NULL: no AUTH to the sentinels */
    /* Cluster (CLUSTER below): with n_cluster_nodes > 0 every connect finds the master
       serving the slot of cluster_key; host, port and unix_path are then unused. */
    const char *const *cluster_nodes; /* n_cluster_nodes "host:port" seeds; borrowed, copied */
    int n_cluster_nodes;          /* 0: no Cluster; 1..AM2Z_REDIS_MAX_SENTINELS */
    const char *cluster_key;      /* the key ("{am2z}") whose slot the connection serves;
                                     required with cluster_nodes (the queue runtime sets
                                     its bull_prefix) */
} am2z_redis_desc;

typedef struct am2z_redis am2z_redis;

/* Allocates a connection without doing I/O. desc (borrowed; NULL: all defaults) is
   copied. NULL on failure with *status (optional; set on success too): INVALID_ARGUMENT
   for a bad desc (port outside 0..65535, db < 0, a transport with read but no write, bad
   limits), NO_MEMORY. Free with am2z_redis_free. */
AM2Z_API am2z_redis *am2z_redis_new(const am2z_redis_desc *desc, am2z_status *status);
/* Closes any current socket and connects: socket (each address getaddrinfo gives, IPv4
   or IPv6), transport open, then AUTH or HELLO 3, CLIENT SETNAME and SELECT sent as one
   pipeline. AM2Z_STATUS_OK; otherwise IO (refused, reset, unknown host), TIMEOUT, SERVER
   (AUTH or SELECT refused; the detail is the server's message), or PROTOCOL (a reply of
   the wrong type: HELLO must answer a map, the others +OK), and r is not connected.
   Bound: connect_timeout_ms for the whole of it (socket, transport and handshake), once
   the name is resolved: name resolution is not covered (getaddrinfo has none). */
AM2Z_API am2z_status am2z_redis_connect(am2z_redis *r);
/* SENTINEL (desc.n_sentinels > 0). A connect asks the sentinels in turn, starting with
   the one whose answer last led to the master, SENTINEL get-master-addr-by-name
   <sentinel_master>, connects to the address the first one answers (as above: AUTH,
   SETNAME, SELECT) and sends ROLE: an instance that is not the master (a sentinel that
   has not seen the failover yet, a demoted master) is dropped and the next sentinel is
   asked; an address that failed once in a connect is not tried again in it. OK once a
   master answers ROLE "master"; otherwise the last failure, its detail prefixed with
   "redis sentinel <name>: no master through N sentinels; last: ", and r is not
   connected: IO when no sentinel answered, none knew the name (nil) or no answered
   address was a reachable master, TIMEOUT, SERVER (a sentinel or the master refused
   AUTH), PROTOCOL (a sentinel's answer is not [host, port]). am2z_redis_reconnect and
   auto_reconnect go through the sentinels again, so after a failover they find the new
   master once a sentinel names it (down-after-milliseconds + the election, ~1-3 s with
   small settings). The sentinels reconfigure a demoted master as a replica and close its
   clients' connections (CLIENT KILL), so connections made before the failover fail with
   IO and are made again by their owners (the queue runtime's threads do so by
   themselves). A sentinel connection uses the desc's transport, connect timeout and
   limits, sentinel_user/sentinel_password, no db and no name.
   Bound: connect_timeout_ms for each sentinel asked (its connect, its answer, the
   master's connect and ROLE together), so at most n_sentinels x connect_timeout_ms, and
   always the caller's deadline (a pool's cap) and the abort of a stopping owner. */
/* Connects with up to desc.reconnect_attempts tries while they fail with IO or TIMEOUT,
   sleeping between tries: reconnect_base_ms, doubled each time up to reconnect_max_ms,
   each sleep cut by a random amount of up to half (jitter). Other failures (a refused
   AUTH) return at once. */
AM2Z_API am2z_status am2z_redis_reconnect(am2z_redis *r);
AM2Z_API int am2z_redis_is_connected(const am2z_redis *r);
AM2Z_API int am2z_redis_fd(const am2z_redis *r);  /* -1 when not connected */
/* Closes the socket and frees r (NULL is fine). */
AM2Z_API void am2z_redis_free(am2z_redis *r);

/* Commands. Each sends one command and reads its reply into *reply (cleared first, see
   section 2), which the caller then owns. Returns AM2Z_STATUS_OK, or
   AM2Z_STATUS_SERVER with the error reply in *reply, or IO /
   TIMEOUT / PROTOCOL / LIMIT / NO_MEMORY with *reply empty: then the connection is
   closed, because the stream is in an unknown place (a late or half-read reply must
   never be taken for the next command's), and must reconnect. A failed command is never
   re-sent automatically (a cluster connection re-sends a command a node redirected, which
   did not run: CLUSTER below). INVALID_ARGUMENT (a bad format, or replies of appended
   commands still unread) leaves the connection as it was. */
AM2Z_API am2z_status am2z_redis_command(am2z_redis *r, am2z_reply *reply, const char *fmt, ...);
AM2Z_API am2z_status am2z_redis_vcommand(am2z_redis *r, am2z_reply *reply, const char *fmt, va_list ap);
AM2Z_API am2z_status am2z_redis_command_argv(am2z_redis *r, am2z_reply *reply, size_t argc,
                                             const char *const *argv, const size_t *argvlen);
/* Blocking commands (BLPOP, BZPOPMIN, XREAD BLOCK ...): like _command but the reply may
   take timeout_ms (< 0: forever; 0: the command timeout). Pass the server-side timeout
   plus a margin: when ours fires first the connection is closed (see above). */
AM2Z_API am2z_status am2z_redis_blocking(am2z_redis *r, am2z_reply *reply, int64_t timeout_ms,
                                         const char *fmt, ...);
AM2Z_API am2z_status am2z_redis_blocking_argv(am2z_redis *r, am2z_reply *reply, int64_t timeout_ms,
                                              size_t argc, const char *const *argv,
                                              const size_t *argvlen);

/* Pipelines: append any number of commands (buffered, nothing sent), then read their
   replies in order; the first read sends everything in one go. A failure that closes
   the connection also drops the buffered commands and the count of owed replies. */
AM2Z_API am2z_status am2z_redis_append(am2z_redis *r, const char *fmt, ...);
AM2Z_API am2z_status am2z_redis_append_argv(am2z_redis *r, size_t argc, const char *const *argv,
                                            const size_t *argvlen);
AM2Z_API am2z_status am2z_redis_flush(am2z_redis *r);  /* sends buffered commands */
/* The next reply of an appended command; status as for _command (INVALID_ARGUMENT
   when none is owed). read_timeout: timeout_ms as for _blocking. */
AM2Z_API am2z_status am2z_redis_read(am2z_redis *r, am2z_reply *reply);
AM2Z_API am2z_status am2z_redis_read_timeout(am2z_redis *r, am2z_reply *reply, int64_t timeout_ms);
AM2Z_API size_t am2z_redis_pending(const am2z_redis *r); /* replies appended but not read */

/* Lua scripts. Redis names a script by the SHA-1 of its source (not SHA-256), so a
   script object computes that name once; EVALSHA runs it, and on NOSCRIPT (a fresh or
   flushed server) am2z sends EVAL with the source instead, which also caches it.
   A script is immutable: share it between threads and connections freely. */
typedef struct am2z_redis_script am2z_redis_script;
/* Copies len bytes of source (borrowed; AM2Z_NTS for a C string). NULL on failure with
   *status (optional; set on success too): INVALID_ARGUMENT for a NULL source, NO_MEMORY.
   Free with am2z_redis_script_free. */
AM2Z_API am2z_redis_script *am2z_redis_script_new(const char *source, size_t len, am2z_status *status);
AM2Z_API void am2z_redis_script_free(am2z_redis_script *s);
AM2Z_API const char *am2z_redis_script_sha(const am2z_redis_script *s); /* 40 hex chars; borrowed */
/* EVALSHA sha numkeys keys... args...: argv holds the numkeys keys, then the arguments
   (argc in total); status as for _command. On a cluster connection numkeys 0 declares
   the slot's two guard keys instead (CLUSTER, SCRIPTS below). */
AM2Z_API am2z_status am2z_redis_evalsha(am2z_redis *r, am2z_reply *reply, const am2z_redis_script *s,
                                        size_t numkeys, size_t argc, const char *const *argv,
                                        const size_t *argvlen);
/* For pipelines: SCRIPT LOAD once, then append EVALSHA calls (no fallback inside a
   pipeline: a NOSCRIPT reply comes back as an error reply). */
AM2Z_API am2z_status am2z_redis_script_load(am2z_redis *r, const am2z_redis_script *s);
AM2Z_API am2z_status am2z_redis_append_evalsha(am2z_redis *r, const am2z_redis_script *s,
                                               size_t numkeys, size_t argc, const char *const *argv,
                                               const size_t *argvlen);

/* A bounded, thread-safe pool: threads borrow a connection, use it alone, give it back. */
typedef struct am2z_redis_pool am2z_redis_pool;
/* Connections are made lazily, at most max_size (0: 8) at a time. desc as for
   am2z_redis_new (copied). NULL on failure with *status (optional; set on success too):
   INVALID_ARGUMENT for a bad desc or a negative max_size, NO_MEMORY. */
AM2Z_API am2z_redis_pool *am2z_redis_pool_new(const am2z_redis_desc *desc, int max_size, am2z_status *status);
/* A connected connection (an idle one, or a new one while fewer than max_size exist),
   waiting up to timeout_ms (< 0: forever) for one to be returned. NULL on failure with
   *status (optional; set on success too): TIMEOUT, or the connect failure with its
   detail. Give it back with _put. */
AM2Z_API am2z_redis *am2z_redis_pool_get(am2z_redis_pool *p, int64_t timeout_ms, am2z_status *status);
/* Returns r (consumed) to the pool. A broken connection, or one with unread pipeline
   replies, is closed and replaced by a fresh one on a later get. */
AM2Z_API void am2z_redis_pool_put(am2z_redis_pool *p, am2z_redis *r);
/* Frees the pool and its idle connections; every connection must have been put back. */
AM2Z_API void am2z_redis_pool_free(am2z_redis_pool *p);

/* CLUSTER, one slot per connection (desc.n_cluster_nodes > 0). Redis Cluster puts key k
   in slot CRC16(k) mod 16384 (CRC16-CCITT/XMODEM), where k is only the part between the
   first '{' and the next '}' when that part is not empty (a hash tag): keys sharing a tag
   share a slot, which every key of one Lua script must. A connection serves the slot of
   desc.cluster_key: a connect asks the seed nodes in turn (CLUSTER SLOTS), starting with
   the one that last led to the master, for the master serving that slot, connects and
   checks ROLE, as SENTINEL does (same bound: connect_timeout_ms per node asked, the
   caller's deadline, the owner's abort; same failures, "redis cluster: no master for
   slot N through N nodes; last: ..."). Redirections are followed, so a live resharding
   of the slot (CLUSTER SETSLOT IMPORTING / MIGRATING, MIGRATE of its keys, SETSLOT NODE)
   is invisible to the caller. A node that answers MOVED, ASK or TRYAGAIN did not run the
   command (Redis checks the keys a command names before it runs it: the cluster
   specification's "ASK redirection" and the TRYAGAIN error reference), so re-sending it
   cannot run it twice; the connection keeps a copy of every command whose reply is owed
   (pipelines too) for that:
     ASK      ASKING + the command to the node named (a second connection of r, kept for
              the next redirection); its reply is the command's;
     MOVED    the command to the node named, as ASK without ASKING; and r closes once the
              replies owed are read, so its next command (or connect) reads the slot map
              again and reconnects (one try, auto_reconnect or not);
     TRYAGAIN (a command naming several keys of the slot, some moved already) sent again
              to the node that answered, after 2 ms doubling to 100 ms (with jitter),
              until the call's deadline (its timeout and the caller's), or
              AM2Z_REDIS_CLUSTER_RETRY_MS when it has none; then the TRYAGAIN reply is
              returned (SERVER, the detail saying how long it was retried and until
              which bound), as soon as the next pause would pass that time (so up to
              100 ms before it).
   At most AM2Z_REDIS_MAX_REDIRECTS ASK/MOVED hops per command: the command is sent at
   most 1 + AM2Z_REDIS_MAX_REDIRECTS times, then the last redirection is returned (SERVER,
   *reply holding it, the detail naming AM2Z_REDIS_MAX_REDIRECTS). A malformed
   redirection (am2z_redis_parse_redirect's PROTOCOL) is not followed: PROTOCOL, the
   detail naming it and the node, *reply empty, and r closes (a node that breaks the
   cluster protocol is not trusted further). A redirected command of a pipeline runs
   after the later commands of that pipeline that needed no redirection. A failure of
   the second connection fails the command as any I/O failure does (r closes).
   SCRIPTS on a cluster connection: EVALSHA (and its EVAL fallback) with numkeys 0 is
   sent with two declared keys of r's slot that are never written ("<cluster_key>~am2z-
   guard-1", "-2" when cluster_key has a hash tag). A script that declares no keys but
   reaches keys of the slot by name (the queue runtime's do) would otherwise run on the
   migrating node and fail halfway at the first key already moved, keeping the writes it
   made before (Redis does not roll a script back); with the guard keys Redis refuses it
   before it runs (ASK, then TRYAGAIN at the importing node) for as long as the slot is
   being migrated, and the retry above runs it once the migration ends. KEYS is then
   {guard1, guard2}; ARGV is unchanged. A script with numkeys > 0 is sent as given.
   The queue runtime
   (cluster_nodes in its desc.redis) serves the slot of its bull prefix, which must start
   with a tag ("{am2z}": every key it writes then lies in one slot, BullMQ's advice for
   Cluster). One slot means one master does all the runtime's work: see README "Redis
   Cluster" for what one slot per queue needs. */
#define AM2Z_REDIS_SLOTS 16384
/* The slot (0..16383) of the len bytes of key (borrowed; AM2Z_NTS for a C string). */
AM2Z_API int am2z_redis_key_slot(const char *key, size_t len);
/* A redirection a cluster node answered instead of running the command. */
typedef struct am2z_redis_redirect {
    int ask;          /* 1: ASK (send ASKING then the command to that node, once);
                         0: MOVED (the slot lives there now: refresh the slot map) */
    int slot;         /* 0..16383 */
    char host[256];   /* "" when the node announced none: the host of the node that answered */
    int port;         /* 1..65535 */
} am2z_redis_redirect;
/* Parses an error reply "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>" (IPv6
   hosts as Redis sends them, the port after the last ':') into *out. AM2Z_STATUS_OK;
   NOT_FOUND when reply is no redirection (another error, another type); PROTOCOL when it
   starts like one but is malformed (a bare "MOVED", slot outside 0..16383, no port, a port
   outside 1..65535, a host over 255 bytes). */
AM2Z_API am2z_status am2z_redis_parse_redirect(const am2z_reply *reply, am2z_redis_redirect *out);

#ifdef __cplusplus
}
#endif

/* ==== 4. queue runtime ================================================================ */
/* The distributed runtime: the same processors, registered by name in many processes,
   run as jobs in Redis. am2z_queue_runtime_new() returns an am2z_runtime, so swapping
   am2z_local_runtime_new() for it is the only change a program needs:

       am2z_queue_desc qd = {0};
       qd.redis.host = "10.0.0.5";                  // or REDIS_HOST / REDIS_PORT ...
       am2z_runtime *rt = am2z_queue_runtime_new(&qd, NULL);
       am2z_runtime_register(rt, p);                // workers register (and publish settings)
       am2z_queue_declare(rt, "greet", NULL);       // or: a caller-only process declares
       am2z_outcome out = am2z_runtime_execute(rt, "greet", in);

   CONTENTS of this section. The prose and declarations below, and the implementation,
   follow this order, each part under a banner "---- 4.N name ----":
       4.1 layout       queue names, keys, job hash and job data; am2z_queue_name
       4.2 scripts      one Lua script per transition: add, fetch, complete, fail, retry,
                        extend, stalled, claim, drop, cancelq, due, remove, state
       4.3 execution across processes  waiters, adding jobs, deadlines, retries; submit,
                        wait, free, execute, execute_many
       4.4 workers      the job runner (decode, resolve, attempt, finish), fetching and
                        serving queues, hand-off to idle workers, ctx calls (children),
                        the worker threads
       4.5 delivery     at-least-once: the receiver, lock renewal, cancel keys, stalled
                        scans, jobs finished by foreign workers, due times
       4.6 sessions     execute_in_session, stop_session, session stats
       4.7 stats        am2z_runtime_stats
       4.8 lifecycle    am2z_queue_desc, am2z_queue_runtime_new, register (workers publish
                        settings), am2z_queue_declare, am2z_queue_settings, start, stop, free
       4.9 state manager  am2z_queue_state_get / set / update / delete
       4.10 schedules   am2z.h section 7e in Redis: BullMQ's job schedulers, slots
                        claimed once across processes
       4.11 durable     am2z.h section 7d in Redis: checkpoints next to the job, a
                        stalled durable job continued elsewhere, parked waits
*/

#ifdef __cplusplus
extern "C" {
#endif

/* ---- 4.1 layout ---------------------------------------------------------------------- */
/* LAYOUT (BullMQ v6; Node's Queue, Worker, QueueEvents and Bull Board read and write it)
       queue name   <prefix>~<processor>            e.g. "am2z~greet"
                    <prefix>~<processor>~<session>  e.g. "am2z~greet~tenant-7"
                    '~' is outside the name alphabet [A-Za-z0-9_.-], so names never
                    collide and never contain ':'; bad names are refused with
                    AM2Z_STATUS_INVALID_ARGUMENT. am2z_queue_name() builds it.
       queue keys   <bull>:<queue>:{wait,active,prioritized,pc,delayed,completed,failed,
                    marker,events,meta,stalled,stalled-check,<id>,<id>:lock,<id>:logs}
                    with <bull> = bull_prefix ("bull"). Job id = execution id
                    ("<processor>-<ms>-<random>"), stable across attempts: use it as the
                    idempotency key of side effects. With am2z_submit_desc.idempotency_key:
                    "<processor>-i-<32 hex of SHA-256(processor, session, key)>" (am2z.h 7,
                    IDEMPOTENCY; opts then carry am2zKeepMs and am2zForget); the add script
                    finds such a job instead of adding it again (event "duplicated", as
                    BullMQ's add of an existing custom id).
       job hash     name (processor), data, opts (JSON: attempts, backoff, priority, delay,
                    jobId, removeOnComplete, removeOnFail), timestamp, delay, priority,
                    processedOn, ats, atm, stc, finishedOn, returnvalue (the output state as
                    JSON), failedReason (plain "<error name>: <message>", what Node and
                    Bull Board show), stacktrace (JSON array: one am2z_error_to_json text
                    per failed attempt: the structured errors am2z reads back), progress
                    (JSON number, from am2z_ctx_progress), defa.
       job data     {"am2z":1,"processorName","executionId","sessionId","callDepth",
                    "deadline" (epoch ms),"replyTo","parentExecutionId"?,"state":{...}}.
                    A job without the "am2z" member (Node's Queue.add(name, data)) is run
                    with data as its input state, session "default", depth 0; its job name
                    must be the processor's name.
       settings     <bull>:<prefix>~<processor>:am2z:settings  hash {version, settings
                    (JSON), instance, publishedAt}: what the workers of the processor
                    published (SETTINGS in 4.3); the rate limit and global concurrency
                    go to its queue's meta (max/duration, concurrency: BullMQ's fields)
       slots        <bull>:<prefix>~<processor>:am2z:running  zset of '<queue key prefix><job
                    id>' (score: when last seen alive) and ...:am2z:blocked  zset of the
                    queues waiting for a slot (session id, '' for the global queue): the
                    processor-wide global_concurrency (LIMITS in 4.3)
       breaker      <bull>:<prefix>~<processor>:am2z:breaker  hash {state, gen, until,
                    probes, fails}: the processor's circuit breaker (BREAKERS in 4.4)
       am2z keys    <bull>:<prefix>:reply:<instance>  results for one runtime instance
                    <bull>:<prefix>:cancel:<execution id>  cancel flag (with TTL)
                    <bull>:<queue>:<id>:callers  an idempotent job's callers of other
                    processes (their reply lists), answered and deleted when it finishes
                    <bull>:<prefix>:wake:<processor>  zset: sessions with new jobs
                    <bull>:<prefix>:ctl:<instance>:<n>  wakes worker thread n of an instance,
                    and holds the jobs handed to it (HAND-OFF in 4.4)
                    <bull>:<queue>:am2z:idle:<instance>  zset: the worker threads of an
                    instance idle on a global queue ('<token>|<lock ms>|<their ctl key>',
                    score: when registered; the key expires 10 s after the last one)
                    <bull>:<prefix>:sessions, session:<id> (its queues), state:<id>,
                    processors, queues
       events       (desc.events) what Node's QueueEvents listens to, BullMQ's fields:
                    added {jobId, name}, waiting {jobId[, prev delayed|active]},
                    delayed {jobId, delay (due, epoch ms)}, active {jobId, prev},
                    progress {jobId, data (JSON)}, completed {jobId, returnvalue (JSON),
                    prev}, failed {jobId, failedReason, prev} (final failures only),
                    retries-exhausted {jobId, attemptsMade}, stalled {jobId}, drained {},
                    removed {jobId, prev}. completed and failed written by am2z carry one
                    more field, am2z "1": its caller gets the result as a reply (4.3).
                    added, waiting (on add and after delayed) and active, three entries
                    per job, are written while a Node QueueEvents listens to the queue
                    (its connection <bull>:<base64(queue)>:qe, found by CLIENT LIST every
                    2 s), or always with desc.events > 0; without a listener they would
                    cost Redis ~15-20% more time per job. Trimmed approximately to meta
                    opts.maxLenEvents (default 10000).
       client names worker presence (4.4): <bull>:<base64(queue)>:w:am2z-<instance>, as
                    BullMQ names a worker named "am2z-<instance>"; other connections
                    <bull>:<prefix>:<instance>:<role>. */

/* The BullMQ queue name of processor in session (NULL: the global queue) into buf;
   AM2Z_STATUS_INVALID_ARGUMENT for a bad name, AM2Z_STATUS_LIMIT when size is too small.
   rt must be a queue runtime. */
AM2Z_API am2z_status am2z_queue_name(am2z_runtime *rt, const char *processor, const char *session_id,
                                     char *buf, size_t size);
/* This runtime instance's id (borrowed, 16 hex digits): part of its reply key. */
AM2Z_API const char *am2z_queue_instance_id(am2z_runtime *rt);

/* ---- 4.2 scripts --------------------------------------------------------------------- */
/* SCRIPTS
       Every transition (add, fetch, complete, fail, retry, claim, lock renewal, stalled
       recovery, session cancel and drop, a due job's wake-up, a freed execution's job
       removal, state compare-and-set) is one Lua script of am2z's own, run by EVALSHA.
       A producer adds up to 128 jobs per call; a worker completes its finished jobs and
       takes the next ones of the queue in one call, up to AM2Z_QUEUE_BATCH jobs at a time
       while the queue is deep and the jobs are quick (under 1 ms each; one at a time
       again once they take over 5 ms); a thread woken for a queue takes as many as the
       last round there ended with. Each script carries only the definitions of the
       shared Lua library it uses (Redis runs a script's whole text on every call). */

/* ---- 4.3 execution across processes -------------------------------------------------- */
/* EXECUTION ACROSS PROCESSES
       Any process can execute; a process with workers (desc.concurrency >= 0) processes
       the queues of the processors it registered. The caller registers its waiter before
       the job is added; the finishing worker pushes the outcome to the caller's reply list
       (or hands it over directly when it runs in the caller's process), which the
       caller's receiver reads without ever taking a result out of Redis before it is
       delivered (KEYS OF AN INSTANCE), so a Redis killed mid-read loses no result. A job finished by
       a foreign worker (Node) is noticed through its queue's events stream (its
       completed or failed entry, so also when the Node worker removes the job): one
       reader thread per process follows, with one connection made on first use, the
       streams of the queues that have callers waiting and a BullMQ worker (found by a
       CLIENT LIST at the first submission to each queue, then every 2 s;
       every waited queue when CLIENT LIST is refused), from just before the first
       waiting caller's submission, so no finish is missed. am2z workers' results do not
       take this path (their replies are faster). The hash is also polled as a backstop
       (desc.foreign_poll_ms).
       Deadline: an execution may take timeout x attempts plus the backoff delays (and
       the queue delay), counted from submission; each attempt is bounded by the
       processor's timeout, and a child by its parent's remaining time. At the deadline
       the caller gets a TimeoutError and the job is told to cancel (its cancel key,
       polled every cancel_poll_ms by the worker and read by am2z_ctx_cancelled); its
       children are cancelled with it. A job fetched after its deadline fails without
       running. Deadlines are wall-clock (epoch ms) in the job: keep the clocks of the
       machines in sync (NTP). Retries: should_retry and the backoff are evaluated by the
       worker that ran the failed attempt; the retry waits in the delayed set; the caller
       gets the final outcome with every attempt's error.
       Per call (am2z_submit_desc): delay_ms / run_at_ms put the job in the delayed set
       (its deadline moves with it); an idempotency key makes the job id (LAYOUT), so one
       job runs per key across processes: the add script finds it, answers a finished one
       from its hash, or registers the caller on a running one, which the complete and
       fail scripts answer too (am2z.h section 7, IDEMPOTENCY).
       Queue options: priority (0, the default, runs first, then 1, 2, ...; FIFO within a
       priority) and delay_ms map to BullMQ's prioritized and delayed sets;
       rate_limit_per_minute to the queue's limiter (meta max/duration, written by the
       workers when they register, so it holds for every producer's jobs, Node's too);
       concurrency limits the jobs of a processor per process
       (children run inline by a waiting parent do not count, so they cannot deadlock);
       global_concurrency and session_concurrency hold across processes (LIMITS).
       Retention: keep_* by count and age (seconds, as BullMQ), or the job's own
       removeOnComplete/removeOnFail; count trimming runs in batches of count/16.
       Children (ctx calls, composites) are jobs on the queues of their processors (the
       session's queues inside a session). The parent runs the first child itself (it is
       added already locked for it), the others wait in their queues for any worker, and
       a parent waiting for children claims the ones nobody took yet and runs them too,
       so a pool never starves, even with one worker thread. Call depth travels in the job.
   SETTINGS: ONE SOURCE OF TRUTH, THE WORKERS
       A processor's timeout, retry policy (attempts, backoff, delay, multiplier, cap,
       jitter), priority, delay and rate limit are what its workers registered. A
       runtime with workers (concurrency >= 1) publishes them when it registers the
       processor: the settings hash of its queue (LAYOUT) gets the settings JSON
       {"timeoutMs","attempts","backoff":{"type","delay","multiplier","maxDelay","jitter"},
       "priority","delay","rateLimitPerMinute"[,"globalConcurrency"][,"sessionConcurrency"]}
       (the last two only when set), the publishing instance and time, and a
       version that counts the changes (the same settings published again change
       nothing); the rate limit is written to the queue's meta max/duration and
       global_concurrency to its meta concurrency, as BullMQ keeps them (each removed
       when settings that had one are replaced by settings without). When workers
       disagree (a rolling deploy), the newest registration wins: it replaces the
       settings for every caller and job, and its process logs a warning
       naming both settings and the instance it replaced. Settings stay in Redis when
       workers stop; a restarted worker publishes again. should_retry and concurrency
       are code and per process: they stay the worker's own.
       A caller that only calls declares the names it uses (am2z_queue_declare): no
       stand-in function, no copied settings. An undeclared, unregistered name fails
       with ProcessorNotFoundError. A declared name whose settings nobody published yet
       fails at submit (AM2Z_STATUS_NOT_FOUND; execute: a ConfigurationError that says
       so): with no worker ever registered, nothing could run the job, and the caller
       could not know its deadline. Callers keep the settings in a cache and check
       their version (one HGET) at most every desc.settings_refresh_ms, reading the JSON
       only when the version moved; a check Redis does not answer within 50 ms keeps
       the cached settings, so it never holds a call past its deadline. A process that registers a processor uses the
       published settings too, and its own desc only while nothing is published (e.g.
       a runtime without workers that registers the real processor, as before).
       Which settings a job gets: the caller resolves them when it adds the job
       (declared overrides, field by field, over the published settings) and writes
       them into the job: opts.attempts, opts.backoff, opts.priority, opts.delay as
       BullMQ names them, and the per-attempt timeout as "timeoutMs" in the job data.
       The worker follows the job: a job's explicit opts.attempts (> 0) and
       opts.backoff (a number: fixed delay; or {type fixed|exponential|linear, delay,
       jitter, multiplier, maxDelay}) win over the published settings, so a Node
       producer's Queue.add(name, data, {attempts, backoff, delay, priority}) is
       honoured (delay and priority by where BullMQ's add puts the job); what the job
       does not say (a Node job's timeout, its attempts when 0) comes from the
       published settings.
   LIMITS THAT HOLD ACROSS PROCESSES
       global_concurrency (am2z_queue_config) caps the running jobs of a processor in
       all processes together and in all its queues: its global queue (executions
       without a session, Node's jobs) and every session queue. The workers publish it
       (SETTINGS) into the global queue's meta "concurrency", BullMQ's global
       concurrency, and the fetch script (the one atomic move to active, run by every
       am2z worker) takes a job of any of the processor's queues only while the
       processor has a free slot, at most that many in one batch. The slots are a
       zset per processor, <bull>:<prefix>~<processor>:am2z:running, of the jobs a
       fetch took under the cap; finishing, failing, retrying and stalled recovery
       remove a job from it. It cannot drift: a job's lock is its lease, and an entry
       whose lock is gone (a worker killed mid-job: its locks expire after
       lock_duration_ms) frees its slot the next time the set is found full, or at the
       next stalled scan, whichever comes first; only entries not seen alive for a lock
       duration are looked at, so a fetch below the cap costs one ZCARD.
       A queue that finds the cap full goes into <bull>:<prefix>~<processor>:am2z:blocked
       (by time) and gets the next free slots, oldest first: a slot freed by a job of
       session B wakes a worker for session A's queue, and a worker that just finished
       a job takes the next one of its own queue only when no queue is blocked before
       it, so a tenant with a backlog cannot keep the slots from the others. Node
       workers on the global queue see the same meta field but count only that queue's
       active list (BullMQ's rule), so their jobs are not in the processor-wide count.
       A Node Queue.setGlobalConcurrency on the global queue is the same field; the
       workers' registration overwrites it when they set a cap.
       session_concurrency (am2z_queue_desc, a tenant limit) caps the running jobs of
       each session queue (<prefix>~<processor>~<session>: one per processor and
       session): the caller writes min(global_concurrency, session_concurrency) of the
       published settings into the session queue's meta concurrency when it adds jobs
       (removed when both are 0), which the fetch script checks against the queue's
       active list. session_rate (am2z_queue_desc, {max, per_ms}) caps the starts of a
       processor's jobs in one session: BullMQ's rate limiter on the session queue
       (meta max/duration, its "limiter" key: a fixed window opened by the first start
       after the last one closed), written by the caller at each add like the session
       cap; the processor's own rate_limit_per_minute still limits its global queue
       (and the session queues of a processor whose workers set no session_rate).
       Fairness: sessions never share a queue, so one session's backlog never sits in
       front of another's jobs; workers take the queues that have work in turn (wake
       keys, then each queue's marker), and a session at its cap or rate is skipped
       until one of its jobs ends or its window opens.
       A job that cannot start stays in wait (or prioritized); nothing polls. A worker
       that finds the queue full goes back to BZPOPMIN on the markers, having used up
       the marker; the script that frees a slot (complete, final fail, a retry's
       backoff, stalled recovery) adds the marker (and the wake key) again when jobs
       wait and a slot is free, and a worker that just finished a job takes the next
       one itself in the same script call. A fetch that fills the last slot does not
       wake another worker.
       Not counted: children the waiting parent runs itself (its first child and the
       ones it claims), which run in the parent's turn so a parent cannot deadlock on
       its own cap. Bounds: 0..AM2Z_MAX_CONCURRENCY; session_rate max 1..AM2Z_RATE_MAX,
       per_ms 1..AM2Z_RATE_MAX_PER_MS (or both 0); other values are refused. The
       per-process concurrency still applies on top.
       Cost in Redis: bench/limits (README, "Limits and known gaps").
   TRACES (am2z.h 7f; am2z_submit_desc.trace or am2z_queue_desc.trace)
       A traced execution's job carries "traceRoot" (its execution id) in its envelope,
       and every job it causes carries it too, with "traceParent" = "<execution id of
       the calling job>#<its attempt>". The worker that runs an attempt of such a job
       pushes the attempt's span, {gid "<execution id>#<attempt>", pgid, worker (its
       instance id), span}, to the list <C>trace:<root> (its TTL: cancel_ttl_ms) before
       it completes, retries or fails the job, so the span is there before the result can
       reach a caller. The caller's wait then reads the list, rebuilds the tree (parents
       by gid), puts it in outcome.trace and deletes the list: one RPUSH per traced
       attempt (+ PEXPIRE on the first), one LRANGE and DEL per traced execution; an
       untraced job costs nothing. Jobs of Node producers carry no traceRoot.
   FREEING AN EXECUTION (am2z_execution_free of a handle whose outcome was not taken)
       ends the wait with a CancelledError and, when no worker has taken its job yet
       (wait, prioritized or delayed, a retry's backoff included), removes the job and its
       hash (event "removed"): no worker runs or fails it later. A job already running is
       told to cancel (its cancel key), as at the deadline. am2z_execution_detach leaves
       the job alone. */

/* ---- 4.4 workers --------------------------------------------------------------------- */
/* WORKERS AND THREADS
       concurrency worker threads (one connection each) serve every queue of the process;
       one receiver thread (one connection) takes results; one maintenance thread (one
       connection) renews locks, polls cancel keys and runs stalled scans; one events
       reader thread (one connection, made when first needed) takes results of foreign
       workers; callers borrow pool connections. Event handlers run on the worker thread
       that ran the job.
       A process with workers also holds one idle connection per registered processor,
       named as BullMQ names a worker of its global queue, so Node's Queue.getWorkers()
       and Bull Board list it (session queues are not listed). am2z_ctx_progress writes
       the job's progress field and a progress event (a pooled connection).
   HAND-OFF
       A job added to an empty global queue (nothing waiting or prioritized, no priority,
       delay, cap, rate limit or pause) goes straight to an idle worker thread of the
       process that adds it, when it has one: the add script moves it to active, locked
       with that thread's token and lock duration (as a fetch would), and puts it in the
       thread's wake-up key, on which the thread waits; the thread runs it without a
       fetch, so an in-process round trip costs the add, the wake-up and the complete
       (BullMQ's marker and fetch are skipped; Node sees the same job hash and events:
       added, waiting, active, completed). A thread is idle on the global queue it last
       emptied (or its only one), when its process added a job to that queue in the last
       10 s: it registers in <bull>:<queue>:am2z:idle:<instance> in
       the same write as the complete of a handed job (which takes no next job) or as
       its wait (at most every second), never while it may still take jobs, and takes the registration out in the write of its next fetch and at
       stop; the add takes the newest one registered within the last 5 s (a thread that
       waits refreshes it at least every 2 s); at most 4 threads of a process register
       on one queue. Only the adding process's own threads: a job handed to another
       process that died since it registered would wait for its lock to expire and a
       stalled scan (up to lock_duration_ms + 2 x stalled_interval_ms), while a process
       that dies takes the callers of its own jobs with it (its handed jobs are
       recovered like any job it was running: DELIVERY, 4.5). Not handed: jobs of other
       processes' callers and of Node producers, session queues' jobs, a processor's
       with a per-process concurrency limit, and any job while no thread is idle: those
       wait as BullMQ jobs do, for any worker (Node's too). A job handed to a thread
       that is stopping is recovered by the stalled scan too. A thread busy elsewhere
       when a job was handed to it (woken for another queue as the add ran) runs it
       when it next waits; a handed job that waited past half its lock is first checked
       (its lock renewed if still the thread's, else it is not run: the stalled scan
       gave it to another worker), and the wake-up key that holds it is never given a
       life shorter than the lock.
   DUE TIMES
       A delayed job (delay_ms, a retry's backoff) starts within a few ms of its due time:
       the maintenance thread of each process with workers sleeps until the earliest due
       time it knows of and then wakes a worker through the queue's marker (BullMQ's
       {due, "1"} entry). Workers do not rely on Redis ending their blocking commands on
       time: Redis does that only as precisely as its hz (100 ms by default).
   BREAKERS (am2z_breaker_policy in am2z.h)
       A processor's breaker is shared by every process that runs it: one hash per
       processor (LAYOUT), across its sessions, that a small script reads and writes
       atomically on the worker's connection: once before each attempt (closed: run;
       open: the attempt fails with a CircuitOpenError without running the processor;
       half-open: take a probe slot or fail fast) and once after it (a counted failure,
       a timeout included, a probe's end). That is two round trips per attempt, for
       processors with a breaker only. Each process passes its own policy, so give
       every worker of a processor the same one. Times are the workers' clocks:
       keep them in sync. A failed fast attempt is a failed attempt of the job (Node and
       Bull Board show "CircuitOpenError: ..."); the retry policy ends the execution
       unless its backoff outlasts the open time, and within the execution's deadline.
       When Redis does not answer the breaker script, the attempt runs unguarded (an
       outage is logged, not failed on the breaker's account). The events go to the
       handlers of the process whose attempt made the change. The hash expires after
       2 x (window_ms + open_ms) + 60 s without a change. */

/* ---- 4.5 delivery -------------------------------------------------------------------- */
/* DELIVERY IS AT-LEAST-ONCE
       A worker that dies mid-job leaves a lock that expires after lock_duration_ms; a
       stalled scan (every stalled_interval_ms, one per queue across all processes) puts
       the job back, up to max_stalled_count times, then fails it ("job stalled more than
       allowable limit"; a durable job's stalls count only while it makes no progress,
       4.11). So a processor can run more than once for one execution: make
       side effects idempotent by keying them on am2z_ctx_meta(ctx)->execution_id. */

/* ---- 4.6 sessions -------------------------------------------------------------------- */
/* SESSIONS
       execute_in_session puts the job and its children on the session's queues; any
       process with workers discovers them through the wake key. stop_session pauses them,
       tells every caller of their jobs "cancelled" and sets the running jobs' cancel keys,
       waits up to grace_ms for those to end, then deletes every key of the session
       (queues, jobs, locks, results, state). No connection is made per session. Using the
       session id again later starts a new session.
       A session exists from its first job (or its first stored state) until it is
       stopped. stop_session of a session that does not exist (never used, or stopped
       already) returns AM2Z_STATUS_NOT_FOUND, deletes nothing and emits no
       "session:cleanup"; session_stats of it is NULL. */

/* ---- 4.7 stats ----------------------------------------------------------------------- */
/* STATS
       am2z_runtime_stats: {instanceId, uptimeMs, workers, running, completed, failed,
       retried, awaiting (this process), queues: {<queue name>: {waiting, active, delayed,
       prioritized, completed, failed, waiting-children}}, processors: {<registered
       processor>: the counts of its global queue} (am2z_runtime_processor_stats reads
       one), queueNames, sessions, knownProcessors, registeredProcessors}; the counts are
       read from Redis, for the registered processors' queues and every session's.
       am2z_runtime_session_stats:
       {sessionId, queues: {<processor>: {...}}}. am2z_runtime_active_sessions: every
       process's sessions.
       running, completed, failed and retried count the jobs this runtime instance ran.
       They settle before outcomes: a job is counted completed or failed (and no longer
       running) before its result can reach its caller, in this process or another, so a
       caller holding an outcome never sees its job still running.
       missing counts the job ids this instance's workers took from a queue whose job
       hash was gone (deleted by hand, a broken client): such an id is dropped, the first
       one is logged, and each is emitted as "queue:job:missing" {queue, jobId, missing}. */

/* ---- 4.8 lifecycle ------------------------------------------------------------------- */
/* STOP AND FREE
       Stopping a runtime (am2z_runtime_stop, _free) gives the jobs still running after
       the grace period back to their queues, the attempt not counted. Stop does not wake
       its threads through Redis: those waiting in a blocking command are cut loose (their
       sockets shut down), so stop and free return after the grace period and the running
       processors' own return, whether Redis answers, restarted (milliseconds, not the
       2 s a blocking command waits) or went away. The last commands (a finished job's,
       a give-back, deleting the instance's keys) get 500 ms after the grace period; a
       Redis that accepts connections but never answers is then given up on (every wait
       of the runtime's connections fails at once, logged once), and stalled-job recovery
       puts back what could not be given back.
   BOUNDS WHEN REDIS STOPS ANSWERING (a frozen or hung server: connects succeed, replies
   never come; "ct" is desc.redis.command_timeout_ms, "cn" desc.redis.connect_timeout_ms)
       am2z_queue_runtime_new     cn for each connection it makes: concurrency + 3 of them
       am2z_runtime_register,     ct in all (the bookkeeping sets and the workers'
         _unregister              wake-up share one deadline); the processor is
                                  registered (served) either way
       am2z_runtime_execute,      the execution's deadline (timeout x attempts + backoffs,
         _submit + _wait          see 4.3) plus a few ms: adding the job ends by it, and
                                  the cancel key at the deadline is set by the
                                  maintenance thread, not the caller
       am2z_runtime_stop, _free   grace_ms (0 for free) + the running processors' return
                                  + 500 ms
       execute_many, stop_session, ct per command (execute_many: per batch of 512 jobs)
         stats, execution_free,
         the state manager
       The runtime's threads log an outage by its changes: "connection lost", "still down
       after N s" (10 s, then doubling), "restored after N ms" (info), not each try.
   MEMORY OF ITS CONNECTIONS
       A runtime holds concurrency + 2 connections (workers, receiver, maintenance) and
       up to 16 pooled ones, each with a reply reader that buffers at most
       desc.redis.limits.max_buffer bytes (AM2Z_REDIS_MAX_BUFFER, 1 MiB, when 0). So the
       bytes buffered for replies not yet parsed are at most
           (concurrency + 18) x max_buffer      (19 MiB at concurrency 1 by default)
       whatever a server sends; the values of parsed replies (job data, results) come on
       top, bounded by limits.max_bulk per string and by the runtime's batch sizes. On a
       Redis Cluster each connection may hold a second one, to the node an ASK or MOVED
       named (section 3, CLUSTER), with a reader of its own: twice that bound, plus a
       copy of each command sent and not yet answered (a batch's adds at most).
   KEYS OF AN INSTANCE
       A runtime instance owns three kinds of keys: its reply list (reply:<instance>), the
       list of results its receiver took from it (reply:<instance>:taken, read again
       after a reconnect, so a result is never only in flight: a Redis or a connection
       that dies mid-read loses none) and its worker threads' wake-up keys
       (ctl:<instance>:<n>). free (and stop) deletes them. After a crash (kill -9)
       nobody does: a wake-up key expires 2 s after it was set (lock_duration_ms after a
       job was handed to it), its idle registrations 10 s after they were written, and
       the two lists, which
       exist only while results wait for the instance, expire reply_ttl_ms after they
       were created. No other key depends on an instance:
       locks, cancel keys and stalled jobs have their own TTLs and recovery. */

#define AM2Z_QUEUE_NO_WORKERS (-1) /* desc.concurrency: a pure producer */
#define AM2Z_QUEUE_KEEP_ALL (-1)   /* desc.keep_*: keep every finished job */
#define AM2Z_QUEUE_KEEP_NONE (-2)  /* desc.keep_*: delete a job as soon as it finishes */

#ifndef AM2Z_QUEUE_MAX_WORKERS
#define AM2Z_QUEUE_MAX_WORKERS 1024 /* worker threads per runtime */
#endif
#ifndef AM2Z_QUEUE_BATCH
#define AM2Z_QUEUE_BATCH 16 /* jobs a worker thread takes at once from a deep queue of quick jobs */
#endif
#ifndef AM2Z_QUEUE_STATE_RETRIES
#define AM2Z_QUEUE_STATE_RETRIES 10 /* compare-and-set rounds of am2z_queue_state_update */
#endif
#if AM2Z_SESSION_ID_MAX > AM2Z_NAME_MAX
#error "the queue runtime checks session ids as names: AM2Z_SESSION_ID_MAX must not exceed AM2Z_NAME_MAX"
#endif

/* Zero fields take the defaults. Strings are copied. */
typedef struct am2z_queue_desc {
    am2z_redis_desc redis;        /* host, port, unix_path, user, password, db, timeouts,
                                     limits (see MEMORY in 4.8), or sentinels or
                                     cluster_nodes (section 3, SENTINEL and CLUSTER: each
                                     connect then takes up to n x connect_timeout_ms);
                                     unset host/port/password/db come from REDIS_HOST,
                                     REDIS_PORT, REDIS_PASSWORD, REDIS_DB when set */
    const char *prefix;           /* am2z prefix of queue names; default "am2z" */
    const char *bull_prefix;      /* BullMQ key prefix; default "bull" */
    int concurrency;              /* worker threads; default: number of CPUs;
                                     AM2Z_QUEUE_NO_WORKERS: execute only */
    int64_t lock_duration_ms;     /* job lock TTL, renewed every third of it; default 30000 */
    int64_t stalled_interval_ms;  /* stalled scan period; default 30000 */
    int max_stalled_count;        /* recoveries before a job fails; default 1; < 0: 0 */
    int64_t keep_completed;       /* finished jobs kept per queue; default 100 */
    int64_t keep_completed_age_s; /* and for at most this long (s); default 86400; < 0: no limit */
    int64_t keep_failed;          /* default 1000 */
    int64_t keep_failed_age_s;    /* default 604800 (7 days); < 0: no limit */
    int events;                   /* BullMQ events stream entries: default: the finishes (completed,
                                     failed, retries-exhausted, delayed, progress, stalled,
                                     drained, removed, waiting after a retry), and added, waiting
                                     and active too while a Node QueueEvents listens to the
                                     queue; > 0: all of them always; < 0: none */
    int64_t default_timeout_ms;   /* for processors without one; default 60000 */
    int max_call_depth;           /* default AM2Z_MAX_CALL_DEPTH */
    int64_t cancel_poll_ms;       /* how often running jobs look at their cancel key; default 100 */
    int64_t foreign_poll_ms;      /* how often a waiting caller reads its job's hash (a backstop
                                     for jobs finished by non-am2z workers, which the events
                                     stream brings within ms); default 10000; < 0: never */
    int64_t reply_ttl_ms;         /* TTL of a reply list, set when it is created; default 86400000 */
    int64_t cancel_ttl_ms;        /* TTL of a cancel key; default 600000 */
    am2z_logger *logger;          /* borrowed (retained); default: info to stderr */
    int64_t settings_refresh_ms;  /* how old cached published settings may get before a
                                     call checks their version; default 1000; < 0: every call */
    int session_concurrency;      /* max jobs of one processor in one session running at once
                                     in all processes (LIMITS in 4.3); 0 = unlimited, at most
                                     AM2Z_MAX_CONCURRENCY. Published by the workers with the
                                     settings of each processor they register */
    int trace;                    /* non-zero: trace every execution this process submits
                                     (am2z.h 7f; TRACES in 4.3) */
    am2z_rate session_rate;       /* starts of one processor's jobs in one session, in all
                                     processes (LIMITS in 4.3); {0, 0}: none. Published by
                                     the workers with the settings like session_concurrency */
    int64_t durable_keep_ms;      /* how long the records of a finished durable execution
                                     (its done record) stay in Redis (4.11); default
                                     AM2Z_QUEUE_DURABLE_KEEP_MS (7 days, keep_failed_age_s's
                                     default); < 0: until am2z_runtime_forget; at most
                                     AM2Z_QUEUE_DURABLE_KEEP_MAX_MS */
} am2z_queue_desc;

/* Connects (one connection) and starts the threads. desc NULL: all defaults. Free with
   am2z_runtime_free. NULL with *status (may be NULL; AM2Z_STATUS_OK on success)
   AM2Z_STATUS_INVALID_ARGUMENT (bad prefix, concurrency > AM2Z_QUEUE_MAX_WORKERS),
   AM2Z_STATUS_NO_MEMORY, or the connection's status when Redis is unreachable; the
   detail says which. Takes up to connect_timeout_ms per connection it opens when Redis
   does not answer (BOUNDS in 4.8). */
AM2Z_API am2z_runtime *am2z_queue_runtime_new(const am2z_queue_desc *desc, am2z_status *status);

/* What a caller may decide for itself about a declared processor (SETTINGS in 4.3).
   Zero fields take the workers' published settings. */
typedef struct am2z_call_overrides {
    int64_t timeout_ms;           /* each attempt's timeout, e.g. a shorter deadline */
    int max_attempts;             /* total attempts */
    am2z_backoff backoff;         /* AM2Z_BACKOFF_DEFAULT: the workers' */
    int64_t retry_delay_ms;       /* base backoff delay */
    int priority;                 /* 1, 2, ...: after the jobs of priority 0 */
    int64_t delay_ms;             /* start each execution this much later */
} am2z_call_overrides;

/* Declares that processor name runs in other processes (the workers that register it),
   so this process can execute it and ctx_call it without registering it. Its settings
   are the ones the workers published, with each non-zero field of overrides (may be
   NULL; copied) in their place; declaring again replaces the overrides. The workers of
   this process never serve a declared name. Thread-safe. AM2Z_STATUS_OK;
   INVALID_ARGUMENT (rt not a queue runtime, a bad name, a negative override, an
   unknown backoff); NO_MEMORY. */
AM2Z_API am2z_status am2z_queue_declare(am2z_runtime *rt, const char *name, const am2z_call_overrides *overrides);

/* What the workers of name published, read from Redis now (no cache): a new object
   {"version","instance","publishedAt","settings":{...}} with *status (may be NULL)
   AM2Z_STATUS_OK, or NULL with NOT_FOUND (nothing published), INVALID_ARGUMENT (bad
   name, not a queue runtime), PROTOCOL (broken JSON) or the connection's status. */
AM2Z_API am2z_value *am2z_queue_settings(am2z_runtime *rt, const char *name, am2z_status *status);

/* ---- 4.9 state manager --------------------------------------------------------------- */
/* State manager: the latest state of a session in <bull>:<prefix>:state:<session>, a hash
   {state (JSON), version, hash (SHA-256 hex of the canonical JSON: sorted keys),
   updatedAt}. Thread-safe. ttl_ms > 0 sets the key's TTL on every write.
   Failures record a detail (am2z_status_detail) naming the session and the reason.
   get: AM2Z_STATUS_OK with *out (a new reference) and *version; AM2Z_STATUS_NOT_FOUND; or
   AM2Z_STATUS_PROTOCOL when the stored JSON is broken or its hash does not match (the
   detail says which). */
AM2Z_API am2z_status am2z_queue_state_get(am2z_runtime *rt, const char *session_id, am2z_state **out,
                                          int64_t *version);
/* Stores state (borrowed) as the next version; *version (if not NULL) gets it. */
AM2Z_API am2z_status am2z_queue_state_set(am2z_runtime *rt, const char *session_id, const am2z_state *state,
                                          int64_t ttl_ms, int64_t *version);
/* Optimistic update: reads (with the integrity check), calls fn with the current state
   (NULL when there is none), and writes what fn returns only if nobody wrote in between;
   otherwise reads again, up to AM2Z_QUEUE_STATE_RETRIES rounds, then AM2Z_STATUS_CONFLICT.
   fn returns a new reference, or NULL to give up (AM2Z_STATUS_CANCELLED). *out (may be
   NULL) gets the stored state. */
typedef am2z_state *(*am2z_state_update_fn)(const am2z_state *current, void *user_data);
AM2Z_API am2z_status am2z_queue_state_update(am2z_runtime *rt, const char *session_id,
                                             am2z_state_update_fn fn, void *user_data, int64_t ttl_ms,
                                             am2z_state **out, int64_t *version);
AM2Z_API am2z_status am2z_queue_state_delete(am2z_runtime *rt, const char *session_id);

/* ---- 4.10 schedules ------------------------------------------------------------------ */
/* SCHEDULES (am2z_runtime_schedule_upsert / _remove / _list, am2z.h section 7e)
       Schedules live in Redis, so any process (a producer too) upserts, removes and lists
       them and they outlive every process. The layout is BullMQ v6's job schedulers, in
       the queue of the schedule's processor (its session's queue for a session other
       than "default"), so Bull Board counts and lists them:
           <bull>:<queue>:repeat          zset: schedule id -> next slot (epoch ms)
           <bull>:<queue>:repeat:<id>     hash: name (processor), every | pattern + tz
                                          "UTC", startDate, endDate, limit, ic (runs so
                                          far), data (the input state, JSON), opts "{}",
                                          and am2z's am2z.sessionId, am2z.v (the
                                          definition's version)
           <bull>:<queue>:repeat:<id>:<slot ms>  the job of one slot ("rjk" = id)
       plus two keys of am2z's own: <bull>:<prefix>:schedules (hash: id -> queue, so an
       id is unique per prefix) and <bull>:<prefix>:schedules:due (zset: id -> next
       slot, what the claimers watch).
       EXACTLY ONCE PER SLOT  Every process with workers runs a timer thread that waits in
       Redis (XREAD BLOCK on the stream <bull>:<prefix>:schedules:wake, to which every
       upsert and remove adds an entry) until the earliest next slot, at most
       AM2Z_QUEUE_SCHEDULE_POLL_MS, so an idle timer sends three commands per that time and
       a schedule upserted by any process is seen at once; it claims the due ones with one
       script: only when the
       schedule's next slot and version are still the ones it read (a compare-and-set) does
       it add the slot's job (deterministic id repeat:<id>:<slot>, added only if absent),
       count the run and move the schedule to its next slot. Of many processes claiming a
       slot one adds its job; the job then runs as any job does (at-least-once delivery,
       4.5: a worker killed mid-job has its job recovered as stalled). A process claims
       only schedules of processors it registered or declared (it needs their settings
       for the job's deadline). With no worker process up, slots wait: the first process
       back claims the last due slot once, late, and continues from now (MISSED SLOTS ARE
       SKIPPED, section 7e). Only schedules made by am2z are run: a scheduler made by
       Node's upsertJobScheduler in the same queue is listed by Bull Board, not by am2z.
       Ids are at most AM2Z_QUEUE_SCHEDULE_ID_MAX bytes, so a slot's job id fits an
       execution id (AM2Z_EXECUTION_ID_SIZE). */
#ifndef AM2Z_QUEUE_SCHEDULE_ID_MAX
#define AM2Z_QUEUE_SCHEDULE_ID_MAX 40 /* "repeat:" + id + ":" + 15 digits < AM2Z_EXECUTION_ID_SIZE */
#endif
#ifndef AM2Z_QUEUE_SCHEDULE_POLL_MS
#define AM2Z_QUEUE_SCHEDULE_POLL_MS 10000 /* longest wait of a process's schedule timer in Redis */
#endif

/* ---- 4.11 durable executions --------------------------------------------------------- */
/* DURABLE EXECUTIONS (am2z.h section 7d) on the queue runtime: submit with
   am2z_submit_desc{.durable = 1, .execution_id = "order-42"} (no id: one is generated;
   not with idempotency_key or trace). No store to configure: the records live in Redis,
   in the hash <bull>:<prefix>:x:<execution id> (field = the record's name after
   "x/<id>/", value = SHA-256 hex of the bytes, then the bytes; a mismatch fails the read
   with AM2Z_STATUS_PROTOCOL), in the slot of every other key of the runtime.
       Job      one per execution: "<id, cut to 28>-i-<32 hex of SHA-256(id)>". A second
                submit of a running id joins it (its caller gets the same outcome); a
                finished id is refused (AM2Z_STATUS_EXISTS). The job carries no
                deadline: the caller's handle still ends with a TimeoutError at the
                usual deadline, but nothing is cancelled, and the execution goes on.
       Crashes  a worker killed mid-execution leaves its job active; the stalled scan
                (4.5) puts it back and another worker continues from the last
                checkpoint. A recovery counts toward max_stalled_count (default 1)
                only while the execution makes no progress: a stall after a new
                checkpoint (or compensation progress) since the job's previous stall
                starts the count again at 1, so an execution survives any number of
                crashes as long as each one comes after a step it had not completed
                before. A step that crashes every time still fails at the limit: the
                job fails with JOB_STALLED "job stalled more than allowable limit",
                and that failure is the execution's recorded outcome. (max 0: the
                first stall fails it, progress or not.) The mark is the job hash's
                field am2zPg.
       Waits    a parked execution is its job in the delayed set (Bull Board shows it
                delayed), due at the wait's timeout (no timeout:
                AM2Z_QUEUE_PARK_MAX_MS, after which it parks again); it holds no thread
                and no connection. am2z_runtime_signal from any process stores the
                payload, then moves the job to wait (or marks a running one, whose
                park then goes straight back to wait), so a signal is never lost.
                At the due time a worker runs it: the wait ends with TimeoutError or
                its fallback.
       Resume   automatic (the workers). am2z_runtime_resume(rt, NULL) does nothing
                (0); with an id it moves that execution's parked job to wait now (its
                wait step looks again): *resumed 1 when it did.
       Outcome  am2z_runtime_durable_outcome reads the done record from Redis in any
                process (polling every 100 ms while it waits); am2z_runtime_forget
                deletes the records of a finished id (CONFLICT while it has a start
                record and no done record).
       Keep     a finished execution's hash (its done record) expires
                durable_keep_ms after it finished (default 7 days, the default of
                keep_failed_age_s; < 0: kept until forgotten). After that the id is
                unknown: durable_outcome says NOT_FOUND and a submit runs it afresh,
                as after am2z_runtime_forget. The records of an unfinished execution
                (running, parked, stalled) never expire. A signal stored for an id
                that has not started expires after durable_keep_ms too (a mistyped
                id leaves nothing behind for good); the execution's start makes its
                records permanent again.
       Sessions stop_session deletes a session's jobs; each durable execution among
                them (waiting, running, parked, delayed for a retry) then ends
                cancelled: its done record says ok false with a CancelledError "the
                session was stopped" (unless its outcome was recorded first: the
                first recorded outcome of an execution always stays), its other
                records go, its keep starts. So a
                caller asking by id gets that outcome (not a TIMEOUT that never
                ends); the id is finished (a new submit is refused until forgotten).
                On the local runtime stop_session leaves durable executions
                resumable (am2z.h 7d): its store is not the session's. */
#ifndef AM2Z_QUEUE_PARK_MAX_MS
#define AM2Z_QUEUE_PARK_MAX_MS ((int64_t)31536000000) /* 365 days: a wait without timeout parks this long, then again */
#endif
#ifndef AM2Z_QUEUE_DURABLE_KEEP_MS
#define AM2Z_QUEUE_DURABLE_KEEP_MS ((int64_t)604800000) /* 7 days: a finished durable execution's outcome in Redis */
#endif
#ifndef AM2Z_QUEUE_DURABLE_KEEP_MAX_MS
#define AM2Z_QUEUE_DURABLE_KEEP_MAX_MS ((int64_t)3155760000000) /* 100 years: the longest durable_keep_ms */
#endif

#ifdef __cplusplus
}
#endif

#endif /* AM2Z_RESP_H_INCLUDED */

/* ==================================================================================== */
/*                                   IMPLEMENTATION                                     */
/* ==================================================================================== */
#ifdef AM2Z_RESP_IMPLEMENTATION
#ifndef AM2Z_RESP_IMPLEMENTATION_INCLUDED
#define AM2Z_RESP_IMPLEMENTATION_INCLUDED

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#if !defined(AM2Z_SHA256_PORTABLE_ONLY) && (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 5))
#define AM2Z__SHA_X86 1 /* SHA-NI code, chosen at run time */
#include <cpuid.h>
#include <immintrin.h>
#endif

#ifdef __cplusplus
extern "C" { /* private functions keep C names in a C++ build too */
#endif

/* ==== 1. SHA-256 ====================================================================== */


static const uint32_t am2z__sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define am2z__ror32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static uint32_t am2z__load_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void am2z__store_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

/* One round with the working variables renamed instead of moved: the macro is expanded
   with the names rotated, so no register shuffling happens between rounds. The message
   schedule lives in a 16-word ring that is extended in place from round 16 on. */
#define am2z__S0(x) (am2z__ror32(x, 2) ^ am2z__ror32(x, 13) ^ am2z__ror32(x, 22))
#define am2z__S1(x) (am2z__ror32(x, 6) ^ am2z__ror32(x, 11) ^ am2z__ror32(x, 25))
#define am2z__s0(x) (am2z__ror32(x, 7) ^ am2z__ror32(x, 18) ^ ((x) >> 3))
#define am2z__s1(x) (am2z__ror32(x, 17) ^ am2z__ror32(x, 19) ^ ((x) >> 10))
#define am2z__W(i) (w[(i) & 15] += am2z__s1(w[((i) - 2) & 15]) + w[((i) - 7) & 15] + am2z__s0(w[((i) - 15) & 15]))
#define am2z__RND(a, b, c, d, e, f, g, h, i, wi) do { \
        h += am2z__S1(e) + (g ^ (e & (f ^ g))) + am2z__sha256_k[i] + (wi); \
        d += h; \
        h += am2z__S0(a) + (b ^ ((a ^ b) & (b ^ c))); \
    } while (0)
#define am2z__RND8(i, W) do { \
        am2z__RND(a, b, c, d, e, f, g, h, (i) + 0, W((i) + 0)); \
        am2z__RND(h, a, b, c, d, e, f, g, (i) + 1, W((i) + 1)); \
        am2z__RND(g, h, a, b, c, d, e, f, (i) + 2, W((i) + 2)); \
        am2z__RND(f, g, h, a, b, c, d, e, (i) + 3, W((i) + 3)); \
        am2z__RND(e, f, g, h, a, b, c, d, (i) + 4, W((i) + 4)); \
        am2z__RND(d, e, f, g, h, a, b, c, (i) + 5, W((i) + 5)); \
        am2z__RND(c, d, e, f, g, h, a, b, (i) + 6, W((i) + 6)); \
        am2z__RND(b, c, d, e, f, g, h, a, (i) + 7, W((i) + 7)); \
    } while (0)
#define am2z__W0(i) (w[i])

static void am2z__sha256_blocks_c(uint32_t st[8], const unsigned char *p, size_t nblocks) {
    uint32_t w[16];
    while (nblocks--) {
        uint32_t a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
        int i;
        for (i = 0; i < 16; i++) w[i] = am2z__load_be32(p + 4 * i);
        am2z__RND8(0, am2z__W0);
        am2z__RND8(8, am2z__W0);
        am2z__RND8(16, am2z__W);
        am2z__RND8(24, am2z__W);
        am2z__RND8(32, am2z__W);
        am2z__RND8(40, am2z__W);
        am2z__RND8(48, am2z__W);
        am2z__RND8(56, am2z__W);
        st[0] += a; st[1] += b; st[2] += c; st[3] += d;
        st[4] += e; st[5] += f; st[6] += g; st[7] += h;
        p += 64;
    }
}

#ifdef AM2Z__SHA_X86
/* The x86 SHA extensions keep the state as two vectors, ABEF and CDGH; each
   sha256rnds2 does two rounds, msg1/msg2 extend the message schedule four words at a
   time. Group i (rounds 4i..4i+3) keeps its words in m<i mod 4>. */
__attribute__((target("sha,sse4.1")))
static void am2z__sha256_blocks_shani(uint32_t st[8], const unsigned char *p, size_t nblocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i dcba = _mm_loadu_si128((const __m128i *)(const void *)&st[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)(const void *)&st[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    while (nblocks--) {
        __m128i m0, m1, m2, m3, t;
        __m128i abef0 = abef, cdgh0 = cdgh;
        m0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 0)), bswap);
        m1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16)), bswap);
        m2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 32)), bswap);
        m3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 48)), bswap);
        /* a: words of group i; b, c, d: the slots of groups i+1 (= i-3), i-2 and i-1 */
#define am2z__G(i, a, b, c, d) do { \
            if ((i) >= 4) a = _mm_sha256msg2_epu32(_mm_add_epi32(a, _mm_alignr_epi8(d, c, 4)), d); \
            t = _mm_add_epi32(a, _mm_loadu_si128((const __m128i *)(const void *)&am2z__sha256_k[4 * (i)])); \
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, t); \
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(t, 0x0E)); \
            if ((i) >= 3 && (i) < 15) b = _mm_sha256msg1_epu32(b, c); \
        } while (0)
        am2z__G(0, m0, m1, m2, m3); am2z__G(1, m1, m2, m3, m0); am2z__G(2, m2, m3, m0, m1); am2z__G(3, m3, m0, m1, m2);
        am2z__G(4, m0, m1, m2, m3); am2z__G(5, m1, m2, m3, m0); am2z__G(6, m2, m3, m0, m1); am2z__G(7, m3, m0, m1, m2);
        am2z__G(8, m0, m1, m2, m3); am2z__G(9, m1, m2, m3, m0); am2z__G(10, m2, m3, m0, m1); am2z__G(11, m3, m0, m1, m2);
        am2z__G(12, m0, m1, m2, m3); am2z__G(13, m1, m2, m3, m0); am2z__G(14, m2, m3, m0, m1); am2z__G(15, m3, m0, m1, m2);
#undef am2z__G
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
        p += 64;
    }
    {
        __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
        __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        _mm_storeu_si128((__m128i *)(void *)&st[0], _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128((__m128i *)(void *)&st[4], _mm_alignr_epi8(dchg, feba, 8));
    }
}

#endif

/* Whether this CPU (and build) can run impl. */
static int am2z__sha256_supported(am2z_sha256_impl impl) {
#ifdef AM2Z__SHA_X86
    unsigned a, b, c, d;
    if (impl == AM2Z_SHA256_PORTABLE) return 1;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (impl != AM2Z_SHA256_SHANI || !((b >> 29) & 1)) return 0;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 19)) && (c & (1u << 9)); /* SSE4.1, SSSE3 */
#else
    return impl == AM2Z_SHA256_PORTABLE;
#endif
}

/* 0 = not chosen yet; otherwise an am2z_sha256_impl. Read on every update, so relaxed. */
static int am2z__sha256_mode;

static int am2z__sha256_resolve(void) {
    int mode = am2z__atomic_load(&am2z__sha256_mode, AM2Z__MO_RELAXED);
    if (mode == 0) {
        mode = am2z__sha256_supported(AM2Z_SHA256_SHANI) ? AM2Z_SHA256_SHANI : AM2Z_SHA256_PORTABLE;
        am2z__atomic_store(&am2z__sha256_mode, mode, AM2Z__MO_RELAXED);
    }
    return mode;
}

static void am2z__sha256_blocks(uint32_t st[8], const unsigned char *p, size_t nblocks) {
#ifdef AM2Z__SHA_X86
    if (am2z__sha256_resolve() == AM2Z_SHA256_SHANI) {
        am2z__sha256_blocks_shani(st, p, nblocks);
        return;
    }
#endif
    am2z__sha256_blocks_c(st, p, nblocks);
}

AM2Z_API am2z_status am2z_sha256_select(am2z_sha256_impl impl) {
    if (impl == AM2Z_SHA256_AUTO) {
        am2z__atomic_store(&am2z__sha256_mode, 0, AM2Z__MO_RELAXED);
        am2z__sha256_resolve();
        return AM2Z_STATUS_OK;
    }
    if (impl != AM2Z_SHA256_PORTABLE && impl != AM2Z_SHA256_SHANI)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "sha256: no implementation %d", (int)impl);
    if (!am2z__sha256_supported(impl))
        return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "sha256: the CPU or the build has no SHA extensions");
    am2z__atomic_store(&am2z__sha256_mode, (int)impl, AM2Z__MO_RELAXED);
    return AM2Z_STATUS_OK;
}

AM2Z_API am2z_sha256_impl am2z_sha256_active(void) {
    return (am2z_sha256_impl)am2z__sha256_resolve();
}

AM2Z_API void am2z_sha256_init(am2z_sha256_ctx *ctx) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(ctx->state, iv, sizeof iv);
    ctx->total = 0;
    ctx->used = 0;
}

AM2Z_API void am2z_sha256_update(am2z_sha256_ctx *ctx, const void *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    if (len == 0) return;
    ctx->total += len;
    if (ctx->used) {
        size_t take = 64 - ctx->used;
        if (take > len) take = len;
        memcpy(ctx->block + ctx->used, p, take);
        ctx->used += take;
        p += take;
        len -= take;
        if (ctx->used < 64) return;
        am2z__sha256_blocks(ctx->state, ctx->block, 1);
        ctx->used = 0;
    }
    if (len >= 64) {
        am2z__sha256_blocks(ctx->state, p, len / 64);
        p += len & ~(size_t)63;
        len &= 63;
    }
    if (len) {
        memcpy(ctx->block, p, len);
        ctx->used = len;
    }
}

AM2Z_API void am2z_sha256_final(am2z_sha256_ctx *ctx, unsigned char digest[AM2Z_SHA256_SIZE]) {
    uint64_t bits = ctx->total * 8;
    int i;
    ctx->block[ctx->used++] = 0x80;
    if (ctx->used > 56) {
        memset(ctx->block + ctx->used, 0, 64 - ctx->used);
        am2z__sha256_blocks(ctx->state, ctx->block, 1);
        ctx->used = 0;
    }
    memset(ctx->block + ctx->used, 0, 56 - ctx->used);
    am2z__store_be32(ctx->block + 56, (uint32_t)(bits >> 32));
    am2z__store_be32(ctx->block + 60, (uint32_t)bits);
    am2z__sha256_blocks(ctx->state, ctx->block, 1);
    for (i = 0; i < 8; i++) am2z__store_be32(digest + 4 * i, ctx->state[i]);
    am2z_sha256_init(ctx);
}

AM2Z_API void am2z_sha256(const void *data, size_t len, unsigned char digest[AM2Z_SHA256_SIZE]) {
    am2z_sha256_ctx ctx;
    am2z_sha256_init(&ctx);
    am2z_sha256_update(&ctx, data, len);
    am2z_sha256_final(&ctx, digest);
}

static void am2z__hex(const unsigned char *bytes, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

AM2Z_API void am2z_sha256_to_hex(const unsigned char digest[AM2Z_SHA256_SIZE],
                                 char hex[2 * AM2Z_SHA256_SIZE + 1]) {
    am2z__hex(digest, AM2Z_SHA256_SIZE, hex);
}

AM2Z_API void am2z_sha256_hex(const void *data, size_t len, char hex[2 * AM2Z_SHA256_SIZE + 1]) {
    unsigned char digest[AM2Z_SHA256_SIZE];
    am2z_sha256(data, len, digest);
    am2z__hex(digest, AM2Z_SHA256_SIZE, hex);
}

/* SHA-1 (FIPS 180-4), only because Redis names Lua scripts by the SHA-1 of their source:
   computing it here lets EVALSHA go out before the server has seen the script. */
static void am2z__sha1_hex(const void *data, size_t len, char hex[41]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    const unsigned char *p = (const unsigned char *)data;
    unsigned char block[64], digest[20];
    uint64_t bits = (uint64_t)len * 8;
    size_t done = 0;
    int stage = 0, i; /* 0: data blocks, 1: a block holding only the length, 2: done */
    while (stage != 2) {
        uint32_t w[80], a, b, c, d, e;
        if (stage == 0 && len - done >= 64) {
            memcpy(block, p + done, 64);
            done += 64;
        } else {
            /* The tail: the rest of the data, the 0x80 marker, and the bit length in the
               last 8 bytes when there is room for it (otherwise in one more block). */
            memset(block, 0, 64);
            if (stage == 0) {
                memcpy(block, p + done, len - done);
                block[len - done] = 0x80;
            }
            if (stage == 1 || len - done < 56) {
                am2z__store_be32(block + 56, (uint32_t)(bits >> 32));
                am2z__store_be32(block + 60, (uint32_t)bits);
                stage = 2;
            } else {
                stage = 1;
            }
        }
        for (i = 0; i < 16; i++) w[i] = am2z__load_be32(block + 4 * i);
        for (i = 16; i < 80; i++) {
            uint32_t x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
            w[i] = (x << 1) | (x >> 31);
        }
        a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4];
        for (i = 0; i < 80; i++) {
            uint32_t f, k, t;
            if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else { f = b ^ c ^ d; k = 0xCA62C1D6; }
            t = ((a << 5) | (a >> 27)) + f + e + k + w[i];
            e = d; d = c; c = (b << 30) | (b >> 2); b = a; a = t;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
    }
    for (i = 0; i < 5; i++) am2z__store_be32(digest + 4 * i, h[i]);
    am2z__hex(digest, 20, hex);
}

/* ==== 2. RESP reader/writer =========================================================== */

#define am2z__IS_AGGREGATE(t) ((t) == AM2Z_REPLY_ARRAY || (t) == AM2Z_REPLY_MAP || \
                               (t) == AM2Z_REPLY_SET || (t) == AM2Z_REPLY_PUSH)

AM2Z_API const char *am2z_reply_str(const am2z_reply *r) {
    if (!r) return "";
    switch (r->type) {
    case AM2Z_REPLY_STRING: case AM2Z_REPLY_ERROR: case AM2Z_REPLY_BULK:
    case AM2Z_REPLY_DOUBLE: case AM2Z_REPLY_BIGNUM: case AM2Z_REPLY_VERBATIM:
        return r->ext ? r->ext : r->small;
    default:
        return "";
    }
}

AM2Z_API const am2z_reply *am2z_reply_at(const am2z_reply *r, size_t i) {
    if (!r || !am2z__IS_AGGREGATE(r->type) || i >= r->len) return NULL;
    return &r->element[i];
}

/* Frees a whole tree without recursion and without allocating: while a node's children
   are visited, its unused `ext` field holds its parent and `integer` the next child to
   visit, so the walk needs no stack of its own. */
AM2Z_API void am2z_reply_clear(am2z_reply *r) {
    am2z_reply *cur = r;
    if (!r) return;
    if (r->element) {
        r->ext = NULL; /* the root has no parent */
        r->integer = 0;
    }
    while (cur) {
        am2z_reply *parent;
        size_t i = (size_t)cur->integer;
        if (cur->element) {
            for (; i < cur->len; i++) {
                am2z_reply *c = &cur->element[i];
                if (c->element) break;
                am2z__free(c->ext);
            }
            if (i < cur->len) {
                am2z_reply *c = &cur->element[i];
                cur->integer = (int64_t)i + 1;
                c->ext = (char *)(void *)cur;
                c->integer = 0;
                cur = c;
                continue;
            }
            am2z__free(cur->element);
            cur->element = NULL;
            parent = (am2z_reply *)(void *)cur->ext;
            cur->ext = NULL;
        } else {
            am2z__free(cur->ext);
            cur->ext = NULL;
            parent = NULL;
        }
        cur = (cur == r) ? NULL : parent;
    }
    memset(r, 0, sizeof *r);
}

AM2Z_API const char *am2z_reply_type_name(am2z_reply_type type) {
    switch (type) {
    case AM2Z_REPLY_NONE: return "none";
    case AM2Z_REPLY_STRING: return "string";
    case AM2Z_REPLY_ERROR: return "error";
    case AM2Z_REPLY_INTEGER: return "integer";
    case AM2Z_REPLY_BULK: return "bulk";
    case AM2Z_REPLY_ARRAY: return "array";
    case AM2Z_REPLY_NIL: return "nil";
    case AM2Z_REPLY_DOUBLE: return "double";
    case AM2Z_REPLY_BOOL: return "bool";
    case AM2Z_REPLY_MAP: return "map";
    case AM2Z_REPLY_SET: return "set";
    case AM2Z_REPLY_PUSH: return "push";
    case AM2Z_REPLY_BIGNUM: return "bignum";
    case AM2Z_REPLY_VERBATIM: return "verbatim";
    }
    return "unknown";
}

/* An aggregate being filled. node->len counts the entries started (the last one may be
   in progress), done the ones complete. */
typedef struct am2z__resp_frame {
    am2z_reply *node;
    size_t expected;
    size_t done;
    size_t cap;          /* entries allocated in node->element */
    int attribute;       /* a RESP3 attribute map: dropped when complete */
} am2z__resp_frame;

struct am2z_resp_reader {
    am2z_resp_limits lim;
    char *buf;                /* unparsed bytes are buf[start, end) */
    size_t start, end, cap;
    size_t base;              /* stream offset of buf[0] */
    size_t scanned;           /* bytes after the type byte already checked for CR/LF */
    am2z__resp_frame *stack;
    int depth, stack_cap;
    am2z_reply root;          /* the reply being built */
    am2z_reply *slot;         /* where the value being parsed goes, NULL between values */
    size_t bulk_len, bulk_got, bulk_cap; /* a string payload in progress (slot != NULL) */
    int in_bulk;
    am2z_status failed;       /* the sticky failure (OK: none), its reason and offset */
    size_t fail_offset;
    char reason[96];
};

/* Reports the sticky failure again, as the status detail of the calling thread. */
static am2z_status am2z__resp_refail(const am2z_resp_reader *rd) {
    return am2z__fail(rd->failed, rd->fail_offset, "%s", rd->reason);
}

/* Makes a failure sticky: its reason and the stream offset of buf[at] are kept. */
static am2z_status am2z__resp_fail(am2z_resp_reader *rd, am2z_status st, size_t at, const char *fmt, ...)
    AM2Z_PRINTF(4, 5);
static am2z_status am2z__resp_fail(am2z_resp_reader *rd, am2z_status st, size_t at, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rd->reason, sizeof rd->reason, fmt, ap);
    va_end(ap);
    rd->failed = st;
    rd->fail_offset = rd->base + at;
    return am2z__resp_refail(rd);
}

AM2Z_API am2z_resp_reader *am2z_resp_reader_new(const am2z_resp_limits *limits, am2z_status *status) {
    am2z_resp_reader *rd;
    if (limits && limits->max_depth < 0)
        return (am2z_resp_reader *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "resp: limits.max_depth %d is negative", limits->max_depth));
    rd = (am2z_resp_reader *)am2z__malloc(sizeof *rd);
    if (!rd)
        return (am2z_resp_reader *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS,
                                                                       "resp: out of memory"));
    memset(rd, 0, sizeof *rd);
    if (limits) rd->lim = *limits;
    if (rd->lim.max_depth <= 0) rd->lim.max_depth = AM2Z_RESP_MAX_DEPTH;
    if (rd->lim.max_elements == 0) rd->lim.max_elements = AM2Z_RESP_MAX_ELEMENTS;
    if (rd->lim.max_bulk == 0) rd->lim.max_bulk = AM2Z_RESP_MAX_BULK;
    if (rd->lim.max_buffer == 0) rd->lim.max_buffer = AM2Z_RESP_MAX_BUFFER;
    if (status) *status = AM2Z_STATUS_OK;
    return rd;
}

AM2Z_API void am2z_resp_reader_reset(am2z_resp_reader *rd) {
    if (!rd) return;
    am2z_reply_clear(&rd->root);
    rd->base += rd->end;
    rd->start = rd->end = 0;
    rd->scanned = 0;
    rd->depth = 0;
    rd->slot = NULL;
    rd->in_bulk = 0;
    rd->failed = AM2Z_STATUS_OK;
}

AM2Z_API void am2z_resp_reader_free(am2z_resp_reader *rd) {
    if (!rd) return;
    am2z_reply_clear(&rd->root);
    am2z__free(rd->buf);
    am2z__free(rd->stack);
    am2z__free(rd);
}

/* Free space for at least `want` more bytes at buf + end, moving unparsed bytes to the
   front and growing the buffer as needed, within max_buffer. The connection reads
   straight into it. Returns the space, or NULL with the failure reported (sticky). */
static char *am2z__resp_reader_space(am2z_resp_reader *rd, size_t want, size_t *avail) {
    size_t pending = rd->end - rd->start;
    if (rd->failed) {
        am2z__resp_refail(rd);
        return NULL;
    }
    if (want > rd->lim.max_buffer || pending > rd->lim.max_buffer - want) {
        am2z__resp_fail(rd, AM2Z_STATUS_LIMIT, rd->end, "resp: buffer limit %zu exceeded", rd->lim.max_buffer);
        return NULL;
    }
    if (rd->cap - rd->end < want && rd->start > 0) {
        memmove(rd->buf, rd->buf + rd->start, pending);
        rd->base += rd->start;
        rd->start = 0;
        rd->end = pending;
    }
    if (rd->cap - rd->end < want) {
        size_t ncap = rd->cap ? rd->cap : 4096;
        char *nb;
        while (ncap - rd->end < want) ncap = ncap > (size_t)-1 / 2 ? rd->end + want : ncap * 2;
        if (ncap > rd->lim.max_buffer && rd->end + want <= rd->lim.max_buffer) ncap = rd->lim.max_buffer;
        nb = (char *)am2z__realloc(rd->buf, ncap);
        if (!nb) {
            am2z__resp_fail(rd, AM2Z_STATUS_NO_MEMORY, rd->end, "resp: out of memory");
            return NULL;
        }
        rd->buf = nb;
        rd->cap = ncap;
    }
    *avail = rd->cap - rd->end;
    return rd->buf + rd->end;
}

AM2Z_API am2z_status am2z_resp_reader_feed(am2z_resp_reader *rd, const void *data, size_t len) {
    size_t avail;
    char *space;
    if (!rd || (!data && len))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "resp: feed without a reader or data");
    if (rd->failed) return am2z__resp_refail(rd);
    if (len == 0) return AM2Z_STATUS_OK;
    if (rd->start == rd->end) {
        rd->base += rd->end;
        rd->start = rd->end = 0;
    }
    space = am2z__resp_reader_space(rd, len, &avail);
    if (!space) return rd->failed;
    memcpy(space, data, len);
    rd->end += len;
    return AM2Z_STATUS_OK;
}

/* Strict RESP integers: an optional '-' and 1 to 19 digits, within int64. */
static int am2z__resp_int(const char *p, size_t n, int64_t *out) {
    size_t i = 0;
    int neg = 0;
    uint64_t v = 0, lim;
    if (n > 0 && p[0] == '-') neg = 1, i = 1;
    if (i == n || n - i > 19) return 0;
    lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)p[i] - '0';
        if (d > 9) return 0;
        if (v > (lim - d) / 10) return 0;
        v = v * 10 + d;
    }
    /* -v computed in unsigned arithmetic, then converted: no signed overflow for INT64_MIN */
    *out = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
    return 1;
}

/* Sets a string reply's bytes (copied), inline when short. */
static int am2z__reply_set_str(am2z_reply *r, const char *p, size_t n) {
    if (n < sizeof r->small) {
        memcpy(r->small, p, n);
        r->small[n] = '\0';
    } else {
        r->ext = (char *)am2z__malloc(n + 1);
        if (!r->ext) return 0;
        memcpy(r->ext, p, n);
        r->ext[n] = '\0';
    }
    r->len = n;
    return 1;
}

/* RESP3 doubles: "inf", "-inf", "nan", or a decimal number with optional exponent. strtod
   follows the C locale's decimal point, so a '.' is swapped for the current one first. */
static int am2z__resp_double(const char *p, size_t n, double *out) {
    char tmp[128];
    char *end;
    size_t i;
    const char *dp;
    if (n == 3 && memcmp(p, "inf", 3) == 0) { *out = HUGE_VAL; return 1; }
    if (n == 4 && memcmp(p, "-inf", 4) == 0) { *out = -HUGE_VAL; return 1; }
    if (n == 3 && memcmp(p, "nan", 3) == 0) { *out = NAN; return 1; }
    if (n == 0 || n >= sizeof tmp) return 0;
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+')) return 0;
    }
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    dp = localeconv()->decimal_point;
    if (dp && dp[0] && dp[0] != '.' && !dp[1]) {
        char *dot = strchr(tmp, '.');
        if (dot) *dot = dp[0];
    }
    errno = 0;
    *out = strtod(tmp, &end);
    return end == tmp + n;
}

/* The slot the next value goes to: the root, or a new entry of the innermost aggregate.
   Entry arrays start at 8 entries and double only when full, so memory stays within a
   constant factor of the values that arrived (each took at least 3 bytes), whatever
   count the peer declared. */
static am2z_reply *am2z__resp_slot(am2z_resp_reader *rd) {
    am2z__resp_frame *f;
    am2z_reply *node;
    if (rd->depth == 0) return &rd->root;
    f = &rd->stack[rd->depth - 1];
    node = f->node;
    if (node->len == f->cap) {
        size_t ncap = f->cap ? f->cap * 2 : 8;
        am2z_reply *ne;
        if (ncap > f->expected) ncap = f->expected;
        if (ncap > (size_t)-1 / sizeof *ne) return NULL;
        ne = (am2z_reply *)am2z__realloc(node->element, ncap * sizeof *ne);
        if (!ne) return NULL;
        memset(ne + f->cap, 0, (ncap - f->cap) * sizeof *ne);
        node->element = ne;
        f->cap = ncap;
    }
    return &node->element[node->len++];
}

/* For a large string payload with nothing buffered, room to read it straight into the
   string (the connection skips the copy through the buffer). The string grows at most
   to twice what arrived (and at least by min_chunk), never to the declared length alone.
   Returns NULL when this does not apply or memory runs out (then the normal path runs
   and reports it). */
static char *am2z__resp_bulk_space(am2z_resp_reader *rd, size_t min_chunk, size_t *avail) {
    am2z_reply *r = rd->slot;
    size_t need, want;
    if (rd->failed || !rd->in_bulk || rd->start != rd->end || rd->bulk_len < sizeof r->small) return NULL;
    need = rd->bulk_len - rd->bulk_got;
    if (need < min_chunk) return NULL;
    if (rd->bulk_cap == 0 || rd->bulk_cap - 1 - rd->bulk_got < min_chunk) {
        size_t ncap = rd->bulk_got + (rd->bulk_got > min_chunk ? rd->bulk_got : min_chunk) + 1;
        char *nb;
        if (ncap > rd->bulk_len + 1) ncap = rd->bulk_len + 1;
        nb = (char *)am2z__realloc(r->ext, ncap);
        if (!nb) return NULL;
        r->ext = nb;
        rd->bulk_cap = ncap;
    }
    want = rd->bulk_cap - 1 - rd->bulk_got;
    *avail = want < need ? want : need;
    return r->ext + rd->bulk_got;
}

/* Copies the payload bytes that have arrived into the string; then its CR LF. */
static am2z_status am2z__resp_bulk(am2z_resp_reader *rd) {
    am2z_reply *r = rd->slot;
    size_t avail = rd->end - rd->start, need = rd->bulk_len - rd->bulk_got;
    size_t take = avail < need ? avail : need;
    if (take) {
        char *dst;
        if (rd->bulk_len < sizeof r->small) {
            dst = r->small;
        } else {
            if (rd->bulk_got + take + 1 > rd->bulk_cap) {
                /* grow to what arrived, at least doubling, never past the declared length */
                size_t ncap = rd->bulk_cap * 2;
                char *nb;
                if (ncap < rd->bulk_got + take + 1) ncap = rd->bulk_got + take + 1;
                if (ncap > rd->bulk_len + 1) ncap = rd->bulk_len + 1;
                nb = (char *)am2z__realloc(r->ext, ncap);
                if (!nb) return am2z__resp_fail(rd, AM2Z_STATUS_NO_MEMORY, rd->start, "resp: out of memory");
                r->ext = nb;
                rd->bulk_cap = ncap;
            }
            dst = r->ext;
        }
        memcpy(dst + rd->bulk_got, rd->buf + rd->start, take);
        rd->bulk_got += take;
        rd->start += take;
        avail -= take;
    }
    if (rd->bulk_got < rd->bulk_len) return AM2Z_STATUS_NEED_MORE;
    if (avail < 2) {
        if (avail == 1 && rd->buf[rd->start] != '\r')
            return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, rd->start, "resp: string payload not followed by CR LF");
        return AM2Z_STATUS_NEED_MORE;
    }
    if (rd->buf[rd->start] != '\r' || rd->buf[rd->start + 1] != '\n')
        return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, rd->start, "resp: string payload not followed by CR LF");
    rd->start += 2;
    (r->ext ? r->ext : r->small)[rd->bulk_len] = '\0';
    r->len = rd->bulk_len;
    rd->in_bulk = 0;
    if (r->type == AM2Z_REPLY_VERBATIM) {
        /* "txt:..." : the format goes to r->format, the text stays */
        char *s = r->ext ? r->ext : r->small;
        if (r->len < 4 || s[3] != ':')
            return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, rd->start - 2 - r->len, "resp: verbatim string without format");
        memcpy(r->format, s, 3);
        r->format[3] = '\0';
        memmove(s, s + 4, r->len - 4 + 1);
        r->len -= 4;
    }
    return AM2Z_STATUS_OK;
}

static void am2z__resp_line_too_long(am2z_resp_reader *rd, int bulk) {
    if (bulk) am2z__resp_fail(rd, AM2Z_STATUS_LIMIT, rd->start, "resp: bulk limit %zu exceeded", rd->lim.max_bulk);
    else am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, rd->start, "resp: line too long for its type");
}

/* Finds the CR LF closing the line at rd->start, which may hold max_len bytes: a string
   line (bulk) within the bulk limit, other lines within 20 bytes. Returns the index of its
   CR, or (size_t)-1 when more bytes are needed, or (size_t)-2 after failing. */
static size_t am2z__resp_line(am2z_resp_reader *rd, size_t max_len, int bulk) {
    size_t from = rd->start + 1 + rd->scanned, n = rd->end - from;
    const char *p = rd->buf + from;
    const char *cr = (const char *)memchr(p, '\r', n);
    const char *lf = (const char *)memchr(p, '\n', cr ? (size_t)(cr - p) : n);
    if (lf) {
        am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, (size_t)(lf - rd->buf), "resp: LF without CR");
        return (size_t)-2;
    }
    if (cr && (size_t)(cr - rd->buf) + 1 < rd->end) {
        if (cr[1] != '\n') {
            am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, (size_t)(cr - rd->buf), "resp: CR without LF");
            return (size_t)-2;
        }
        if ((size_t)(cr - rd->buf) - rd->start - 1 > max_len) {
            am2z__resp_line_too_long(rd, bulk);
            return (size_t)-2;
        }
        return (size_t)(cr - rd->buf);
    }
    /* no complete line yet: remember how far it was checked (a final CR is rechecked) */
    rd->scanned = (size_t)((cr ? cr : p + n) - rd->buf) - rd->start - 1;
    if (rd->scanned > max_len) {
        am2z__resp_line_too_long(rd, bulk);
        return (size_t)-2;
    }
    return (size_t)-1;
}

/* The names of types for failure reasons. */
static const char *am2z__resp_type_word(int type) {
    switch (type) {
    case '$': return "bulk";
    case '!': return "blob error";
    case '=': return "verbatim";
    case '*': return "array";
    case '~': return "set";
    case '%': return "map";
    case '>': return "push";
    default: return "attribute";
    }
}

/* The length of a bulk-like type or the count of an aggregate, from its header line.
   -1 is RESP2's null bulk string / null array and valid only for '$' and '*'; streamed
   ("?") types are refused. */
static am2z_status am2z__resp_count(am2z_resp_reader *rd, const char *p, size_t n, int type, size_t at,
                                    int64_t *count) {
    int bulk = type == '$' || type == '!' || type == '=';
    const char *what = bulk ? "length" : "count";
    if (n == 1 && p[0] == '?')
        return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, at, "resp: streamed %s are not supported",
                               bulk ? "strings" : "aggregates");
    if (!am2z__resp_int(p, n, count))
        return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, at, "resp: bad %s %s", am2z__resp_type_word(type), what);
    if (*count < -1 || (*count == -1 && type != '$' && type != '*'))
        return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, at, "resp: %s %s %lld is invalid",
                               am2z__resp_type_word(type), what, (long long)*count);
    return AM2Z_STATUS_OK;
}

AM2Z_API am2z_status am2z_resp_reader_next(am2z_resp_reader *rd, am2z_reply *out) {
    if (out) am2z_reply_clear(out);
    if (!rd || !out) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "resp: next without a reader or reply");
    if (rd->failed) return am2z__resp_refail(rd);
    for (;;) {
        am2z_reply *node;
        size_t cr, n, at;
        const char *p;
        int type;
        int64_t count;
        am2z_status st;
        if (rd->in_bulk) {
            if ((st = am2z__resp_bulk(rd)) != AM2Z_STATUS_OK) return st;
            goto value_done;
        }
        if (rd->start == rd->end) return AM2Z_STATUS_NEED_MORE;
        if (!rd->slot) {
            rd->slot = am2z__resp_slot(rd);
            if (!rd->slot) return am2z__resp_fail(rd, AM2Z_STATUS_NO_MEMORY, rd->start, "resp: out of memory");
        }
        node = rd->slot;
        at = rd->start;
        type = (unsigned char)rd->buf[at];
        switch (type) {
        case '+': case '-': case ',': case '(':
            cr = am2z__resp_line(rd, rd->lim.max_bulk, 1);
            break;
        case ':': case '$': case '!': case '=': case '*': case '~': case '%': case '>': case '|':
        case '_': case '#':
            cr = am2z__resp_line(rd, 20, 0);
            break;
        default:
            return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, at, "resp: unknown type byte 0x%02x", (unsigned)type);
        }
        if (cr == (size_t)-1) return AM2Z_STATUS_NEED_MORE;
        if (cr == (size_t)-2) return rd->failed;
        rd->scanned = 0;
        p = rd->buf + at + 1;
        n = cr - at - 1;
        switch (type) {
        case '+': case '-': case '(':
            if (type == '(') {
                size_t i = (n > 0 && p[0] == '-');
                if (i == n) return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, at, "resp: bad big number");
                for (; i < n; i++)
                    if (p[i] < '0' || p[i] > '9')
                        return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, at, "resp: bad big number");
            }
            node->type = type == '+' ? AM2Z_REPLY_STRING : type == '-' ? AM2Z_REPLY_ERROR : AM2Z_REPLY_BIGNUM;
            if (!am2z__reply_set_str(node, p, n))
                return am2z__resp_fail(rd, AM2Z_STATUS_NO_MEMORY, at, "resp: out of memory");
            break;
        case ',':
            if (!am2z__resp_double(p, n, &node->number))
                return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, at, "resp: bad double");
            node->type = AM2Z_REPLY_DOUBLE;
            if (!am2z__reply_set_str(node, p, n))
                return am2z__resp_fail(rd, AM2Z_STATUS_NO_MEMORY, at, "resp: out of memory");
            break;
        case ':':
            if (!am2z__resp_int(p, n, &node->integer))
                return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, at, "resp: bad integer");
            node->type = AM2Z_REPLY_INTEGER;
            break;
        case '_':
            if (n != 0) return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, at, "resp: bad null");
            node->type = AM2Z_REPLY_NIL;
            break;
        case '#':
            if (n != 1 || (p[0] != 't' && p[0] != 'f'))
                return am2z__resp_fail(rd, AM2Z_STATUS_PROTOCOL, at, "resp: bad boolean");
            node->type = AM2Z_REPLY_BOOL;
            node->integer = p[0] == 't';
            break;
        case '$': case '!': case '=':
            if ((st = am2z__resp_count(rd, p, n, type, at, &count)) != AM2Z_STATUS_OK) return st;
            if (count == -1) {
                node->type = AM2Z_REPLY_NIL;
                break;
            }
            if ((uint64_t)count > (uint64_t)rd->lim.max_bulk)
                return am2z__resp_fail(rd, AM2Z_STATUS_LIMIT, at, "resp: bulk limit %zu exceeded", rd->lim.max_bulk);
            node->type = type == '$' ? AM2Z_REPLY_BULK : type == '!' ? AM2Z_REPLY_ERROR : AM2Z_REPLY_VERBATIM;
            rd->start = cr + 2;
            rd->in_bulk = 1;
            rd->bulk_len = (size_t)count;
            rd->bulk_got = 0;
            rd->bulk_cap = 0;
            continue;
        default: /* '*', '~', '%', '>', '|' */
            if ((st = am2z__resp_count(rd, p, n, type, at, &count)) != AM2Z_STATUS_OK) return st;
            if (count == -1) {
                node->type = AM2Z_REPLY_NIL;
                break;
            }
            if ((uint64_t)count > (uint64_t)rd->lim.max_elements / ((type == '%' || type == '|') ? 2 : 1))
                return am2z__resp_fail(rd, AM2Z_STATUS_LIMIT, at, "resp: element limit %zu exceeded", rd->lim.max_elements);
            node->type = type == '*' ? AM2Z_REPLY_ARRAY : type == '~' ? AM2Z_REPLY_SET
                       : type == '>' ? AM2Z_REPLY_PUSH : AM2Z_REPLY_MAP;
            if (type == '%' || type == '|') count *= 2;
            if (count == 0) {
                if (type == '|') { /* an empty attribute: nothing to keep, the value follows */
                    node->type = AM2Z_REPLY_NONE;
                    rd->start = cr + 2;
                    continue;
                }
                break;
            }
            if (rd->depth >= rd->lim.max_depth)
                return am2z__resp_fail(rd, AM2Z_STATUS_LIMIT, at, "resp: depth limit %d exceeded", rd->lim.max_depth);
            if (rd->depth == rd->stack_cap) {
                int ncap = rd->stack_cap ? rd->stack_cap * 2 : 8;
                am2z__resp_frame *ns;
                if (ncap > rd->lim.max_depth) ncap = rd->lim.max_depth;
                ns = (am2z__resp_frame *)am2z__realloc(rd->stack, (size_t)ncap * sizeof *ns);
                if (!ns) return am2z__resp_fail(rd, AM2Z_STATUS_NO_MEMORY, at, "resp: out of memory");
                rd->stack = ns;
                rd->stack_cap = ncap;
            }
            rd->stack[rd->depth].node = node;
            rd->stack[rd->depth].expected = (size_t)count;
            rd->stack[rd->depth].done = 0;
            rd->stack[rd->depth].cap = 0;
            rd->stack[rd->depth].attribute = type == '|';
            rd->depth++;
            rd->start = cr + 2;
            rd->slot = NULL;
            continue;
        }
        rd->start = cr + 2;
    value_done:
        /* The value in rd->slot is complete: count it in its parent, closing every
           aggregate this completes. */
        rd->slot = NULL;
        for (;;) {
            am2z__resp_frame *f;
            if (rd->depth == 0) {
                *out = rd->root;
                memset(&rd->root, 0, sizeof rd->root);
                return AM2Z_STATUS_OK;
            }
            f = &rd->stack[rd->depth - 1];
            if (++f->done < f->expected) break;
            rd->depth--;
            if (f->attribute) {
                /* Dropped: its slot receives the value the attribute describes. */
                am2z_reply_clear(f->node);
                if (rd->depth > 0) rd->stack[rd->depth - 1].node->len--;
                break;
            }
        }
    }
}

/* ---- writer ---- */

static int am2z__buf_reserve(am2z_resp_buf *b, size_t extra) {
    size_t need, ncap;
    char *nd;
    if (extra > (size_t)-1 - b->len) return 0;
    need = b->len + extra;
    if (need <= b->cap) return 1;
    ncap = b->cap < 64 ? 64 : b->cap;
    while (ncap < need) ncap = ncap > (size_t)-1 / 2 ? need : ncap * 2;
    nd = (char *)am2z__realloc(b->data, ncap);
    if (!nd) return 0;
    b->data = nd;
    b->cap = ncap;
    return 1;
}

/* Decimal digits of v at p (no NUL); returns how many. */
static size_t am2z__u64_str(char *p, uint64_t v) {
    char tmp[20];
    size_t n = 0, i;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (i = 0; i < n; i++) p[i] = tmp[n - 1 - i];
    return n;
}

/* "<c><n>\r\n" at p; returns its length (at most 23). */
static size_t am2z__resp_header(char *p, char c, uint64_t n) {
    size_t k;
    p[0] = c;
    k = 1 + am2z__u64_str(p + 1, n);
    p[k] = '\r';
    p[k + 1] = '\n';
    return k + 2;
}

static size_t am2z__resp_arglen(const char *arg, size_t len) { return len == AM2Z_NTS ? strlen(arg) : len; }

/* One command: the npre prefix arguments (EVALSHA sha numkeys ...), then argv. */
static am2z_status am2z__resp_append2(am2z_resp_buf *b, size_t npre, const char *const *pre,
                                      const size_t *prelen, size_t argc, const char *const *argv,
                                      const size_t *argvlen) {
    size_t total = 23, i, k;
    char *p;
    if (!b || (argc && !argv) || argc > (size_t)-1 - npre)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "resp: append without a buffer or arguments");
    for (k = 0; k < 2; k++) {
        size_t n_k = k ? argc : npre;
        const char *const *v = k ? argv : pre;
        const size_t *l = k ? argvlen : prelen;
        for (i = 0; i < n_k; i++) {
            size_t n;
            if (!v[i] && (!l || l[i]))
                return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "resp: argument %zu is NULL", i);
            n = am2z__resp_arglen(v[i], l ? l[i] : AM2Z_NTS);
            if (n > (size_t)-1 - total - 25) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "resp: command too large");
            total += n + 25; /* "$" + up to 20 digits + CR LF, the bytes, CR LF */
        }
    }
    if (!am2z__buf_reserve(b, total)) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "resp: out of memory");
    p = b->data + b->len;
    p += am2z__resp_header(p, '*', npre + argc);
    for (k = 0; k < 2; k++) {
        size_t n_k = k ? argc : npre;
        const char *const *v = k ? argv : pre;
        const size_t *l = k ? argvlen : prelen;
        for (i = 0; i < n_k; i++) {
            size_t n = am2z__resp_arglen(v[i], l ? l[i] : AM2Z_NTS);
            p += am2z__resp_header(p, '$', n);
            if (n) memcpy(p, v[i], n);
            p += n;
            *p++ = '\r';
            *p++ = '\n';
        }
    }
    b->len = (size_t)(p - b->data);
    return AM2Z_STATUS_OK;
}

AM2Z_API am2z_status am2z_resp_append_argv(am2z_resp_buf *b, size_t argc, const char *const *argv,
                                           const size_t *argvlen) {
    return am2z__resp_append2(b, 0, NULL, NULL, argc, argv, argvlen);
}

static int am2z__fmt_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Length of the directive at fmt (which points just after '%'), or 0 if unknown. */
static size_t am2z__fmt_directive(const char *f) {
    switch (f[0]) {
    case 's': case 'b': case 'd': case 'u': case 'f': case '%': return 1;
    case 'z': return f[1] == 'u' ? 2 : 0;
    case 'l':
        if (f[1] == 'd') return 2;
        if (f[1] == 'l' && f[2] == 'd') return 3;
        return 0;
    default: return 0;
    }
}

static int am2z__buf_put(am2z_resp_buf *b, const void *p, size_t n) {
    if (!am2z__buf_reserve(b, n)) return 0;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 1;
}

AM2Z_API am2z_status am2z_resp_append_vfmt(am2z_resp_buf *b, const char *fmt, va_list ap) {
    size_t argc = 0, old_len;
    const char *f;
    char hdr[24];
    if (!b || !fmt) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "resp: append without a buffer or format");
    /* First pass: the argument count follows from the format alone. */
    for (f = fmt; *f;) {
        if (am2z__fmt_space(*f)) { f++; continue; }
        argc++;
        while (*f && !am2z__fmt_space(*f)) {
            if (*f == '%') {
                size_t k = am2z__fmt_directive(f + 1);
                if (!k)
                    return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                      "resp: unknown directive at byte %zu of the format \"%.40s\"", (size_t)(f - fmt), fmt);
                f += 1 + k;
            } else {
                f++;
            }
        }
    }
    old_len = b->len;
    if (!am2z__buf_put(b, hdr, am2z__resp_header(hdr, '*', argc))) goto nomem;
    for (f = fmt; *f;) {
        size_t start;
        if (am2z__fmt_space(*f)) { f++; continue; }
        /* The argument is built 23 bytes ahead, where its "$<len>\r\n" header will fit. */
        if (!am2z__buf_reserve(b, 23)) goto nomem;
        b->len += 23;
        start = b->len;
        while (*f && !am2z__fmt_space(*f)) {
            const char *lit = f;
            char num[64];
            const void *src = num;
            size_t n = 0;
            if (*f != '%') {
                while (*f && *f != '%' && !am2z__fmt_space(*f)) f++;
                if (!am2z__buf_put(b, lit, (size_t)(f - lit))) goto nomem;
                continue;
            }
            f++;
            switch (*f) {
            case 's': {
                const char *s = va_arg(ap, const char *);
                if (!s) goto invalid;
                src = s;
                n = strlen(s);
                break;
            }
            case 'b':
                src = va_arg(ap, const void *);
                n = va_arg(ap, size_t);
                if (!src && n) goto invalid;
                if (n == AM2Z_NTS) n = strlen((const char *)src);
                break;
            case 'd': n = (size_t)snprintf(num, sizeof num, "%d", va_arg(ap, int)); break;
            case 'u': n = (size_t)snprintf(num, sizeof num, "%u", va_arg(ap, unsigned)); break;
            case 'z': n = am2z__u64_str(num, (uint64_t)va_arg(ap, size_t)); break;
            case 'l':
                if (f[1] == 'l') n = (size_t)snprintf(num, sizeof num, "%lld", va_arg(ap, long long));
                else n = (size_t)snprintf(num, sizeof num, "%ld", va_arg(ap, long));
                break;
            case 'f': {
                const char *dp = localeconv()->decimal_point;
                double v = va_arg(ap, double);
                int prec;
                /* the shortest of 15..17 digits that reads back as the same double */
                for (prec = 15; prec <= 17; prec++) {
                    n = (size_t)snprintf(num, sizeof num, "%.*g", prec, v);
                    if (strtod(num, NULL) == v) break;
                }
                /* Redis reads '.', whatever the C locale says */
                if (dp && dp[0] && dp[0] != '.' && !dp[1]) {
                    char *q = strchr(num, dp[0]);
                    if (q) *q = '.';
                }
                break;
            }
            default: /* '%' */
                num[0] = '%';
                n = 1;
                break;
            }
            f += am2z__fmt_directive(f);
            if (!am2z__buf_put(b, src, n)) goto nomem;
        }
        {
            size_t n = b->len - start, h = am2z__resp_header(hdr, '$', n);
            memcpy(b->data + start - 23, hdr, h);
            memmove(b->data + start - 23 + h, b->data + start, n);
            b->len = start - 23 + h + n;
            if (!am2z__buf_put(b, "\r\n", 2)) goto nomem;
        }
    }
    return AM2Z_STATUS_OK;
nomem:
    b->len = old_len;
    return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "resp: out of memory");
invalid:
    b->len = old_len;
    return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "resp: NULL argument for the format \"%.40s\"", fmt);
}

AM2Z_API am2z_status am2z_resp_append_fmt(am2z_resp_buf *b, const char *fmt, ...) {
    va_list ap;
    am2z_status st;
    va_start(ap, fmt);
    st = am2z_resp_append_vfmt(b, fmt, ap);
    va_end(ap);
    return st;
}

AM2Z_API void am2z_resp_buf_clear(am2z_resp_buf *b) {
    if (!b) return;
    am2z__free(b->data);
    memset(b, 0, sizeof *b);
}

/* ==== 3. connection =================================================================== */

#ifdef MSG_NOSIGNAL
#define AM2Z__SEND_FLAGS MSG_NOSIGNAL /* a peer that went away gives EPIPE, not SIGPIPE */
#else
#define AM2Z__SEND_FLAGS 0            /* SO_NOSIGPIPE is set on the socket instead */
#endif

#define AM2Z__READ_CHUNK 16384    /* bytes asked of each read into the reader's buffer */
#define AM2Z__DIRECT_CHUNK 65536  /* string payloads at least this long are read in place */

struct am2z_redis {
    am2z_redis_desc desc;      /* defaults resolved; its strings point at the copies below */
    char *host, *unix_path, *user, *password, *client_name;
    int fd;                    /* -1 when not connected */
    void *tconn;               /* the transport's connection */
    am2z_resp_reader *rd;
    am2z_resp_buf out;         /* commands not yet written */
    size_t out_sent;           /* bytes of out already written */
    size_t pending;            /* replies still to read */
    int just_sent;             /* a request just went out: wait before trying to read */
    int64_t last_timeout_ms;   /* of the last wait, for failure reasons and TimeoutError */
    int64_t cap_ns;            /* a caller's deadline (monotonic ns) every wait ends by; 0: none */
    int abort_fd;              /* readable: every wait fails at once (an owner stopping); -1: none */
    char endpoint[300];
    uint64_t rng;              /* backoff jitter */
    char **sentinels;          /* one block, the array then the strings: copies of desc.sentinels */
    char *sentinel_master, *sentinel_user, *sentinel_password;
    int sentinel_next;         /* the sentinel asked first: the last whose answer was the master */
    char **cnodes;             /* as sentinels, copies of desc.cluster_nodes */
    char *cluster_key;
    int cluster_slot;          /* of cluster_key */
    int cnode_next;            /* the seed asked first: the last whose answer was the master */
    int moved;                 /* a MOVED came: closed once the replies owed are read */
    /* cluster redirections (CLUSTER in the declarations; cnodes set) */
    am2z_resp_buf sent;        /* copies of the commands whose replies are owed, oldest first,
                                  each a size_t length then its bytes; empty while none is owed */
    size_t sent_at;            /* offset in sent of the oldest command still owed */
    am2z_redis *side;          /* owned: the node the last ASK/MOVED named (or ours, for a
                                  TRYAGAIN while replies are owed); NULL: none */
    int reconnect_once;        /* closed after a MOVED: the next command reconnects first */
    char guard[2][300];        /* two never-written keys of cluster_slot, declared by keyless scripts */
};

struct am2z_redis_script {
    char sha[41];
    size_t len;
    char *source;
};

static void am2z__redis_sleep_ms(int64_t ms) {
    struct timespec ts;
    if (ms <= 0) return;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static int64_t am2z__deadline(int64_t timeout_ms) {
    int64_t now;
    if (timeout_ms < 0) return -1;
    now = am2z_monotonic_ns();
    /* a timeout of centuries means none, rather than an overflow */
    return timeout_ms > (INT64_MAX - now) / 1000000 ? -1 : now + timeout_ms * 1000000;
}

/* Drops the socket and everything tied to the stream: buffered commands, the count of
   replies owed and any half-read reply, so nothing leaks into the next command. */
static void am2z__redis_close(am2z_redis *r) {
    if (r->fd >= 0) {
        if (r->desc.transport.read && r->desc.transport.close && r->tconn) r->desc.transport.close(r->tconn);
        close(r->fd);
    }
    r->fd = -1;
    r->tconn = NULL;
    r->out.len = 0;
    r->out_sent = 0;
    r->pending = 0;
    r->just_sent = 0;
    if (r->rd) am2z_resp_reader_reset(r->rd);
    r->sent.len = 0;
    r->sent_at = 0;
    if (r->side) {
        am2z_redis_free(r->side);
        r->side = NULL;
    }
}

/* Records a failure as the thread's status detail, "redis <endpoint>: <what>", followed
   by strerror(err) when err is set. Every status but SERVER and INVALID_ARGUMENT leaves
   the stream in an unknown place, so the connection is closed. */
static am2z_status am2z__redis_fail(am2z_redis *r, am2z_status st, int err, const char *fmt, ...)
    AM2Z_PRINTF(4, 5);
static am2z_status am2z__redis_fail(am2z_redis *r, am2z_status st, int err, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (st != AM2Z_STATUS_SERVER && st != AM2Z_STATUS_INVALID_ARGUMENT) am2z__redis_close(r);
    if (err) return am2z__fail(st, AM2Z_NTS, "redis %s: %s: %s", r->endpoint, what, strerror(err));
    return am2z__fail(st, AM2Z_NTS, "redis %s: %s", r->endpoint, what);
}

/* Waits until fd is ready for `events` or the deadline (-1: none) passes. */
static am2z_status am2z__redis_wait(am2z_redis *r, short events, int64_t deadline, const char *what) {
    int capped = r->cap_ns > 0 && (deadline < 0 || r->cap_ns < deadline);
    if (capped) deadline = r->cap_ns;
    for (;;) {
        struct pollfd pfd[2];
        int ms = -1, n;
        if (deadline >= 0) {
            int64_t left = deadline - am2z_monotonic_ns();
            if (left <= 0 && capped)
                return am2z__redis_fail(r, AM2Z_STATUS_TIMEOUT, 0, "%s timed out at the caller's deadline", what);
            if (left <= 0)
                return am2z__redis_fail(r, AM2Z_STATUS_TIMEOUT, 0, "%s timed out after %lld ms", what,
                                        (long long)r->last_timeout_ms);
            ms = left / 1000000 >= INT_MAX ? INT_MAX : (int)((left + 999999) / 1000000);
        }
        pfd[0].fd = r->fd;
        pfd[0].events = events;
        pfd[0].revents = 0;
        pfd[1].fd = r->abort_fd;
        pfd[1].events = POLLIN;
        pfd[1].revents = 0;
        n = poll(pfd, r->abort_fd >= 0 ? 2 : 1, ms);
        if (n > 0 && pfd[1].revents)
            return am2z__redis_fail(r, AM2Z_STATUS_IO, 0, "%s cut loose: its owner is stopping", what);
        if (n > 0) return AM2Z_STATUS_OK; /* readable, writable, or an error/hangup the next call reports */
        if (n < 0 && errno != EINTR) return am2z__redis_fail(r, AM2Z_STATUS_IO, errno, "poll");
    }
}

static ptrdiff_t am2z__redis_io(am2z_redis *r, int writing, void *buf, size_t len) {
    ptrdiff_t n;
    if (r->desc.transport.read)
        return writing ? r->desc.transport.write(r->tconn, buf, len) : r->desc.transport.read(r->tconn, buf, len);
    do {
        n = writing ? (ptrdiff_t)send(r->fd, buf, len, AM2Z__SEND_FLAGS) : (ptrdiff_t)recv(r->fd, buf, len, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return writing ? AM2Z_IO_WANT_WRITE : AM2Z_IO_WANT_READ;
    return n;
}

static am2z_status am2z__redis_flush(am2z_redis *r, int64_t deadline) {
    while (r->out_sent < r->out.len) {
        ptrdiff_t n = am2z__redis_io(r, 1, r->out.data + r->out_sent, r->out.len - r->out_sent);
        if (n > 0) {
            r->out_sent += (size_t)n;
        } else if (n == AM2Z_IO_WANT_READ || n == AM2Z_IO_WANT_WRITE) {
            am2z_status st = am2z__redis_wait(r, n == AM2Z_IO_WANT_READ ? POLLIN : POLLOUT, deadline, "write");
            if (st != AM2Z_STATUS_OK) return st;
        } else {
            return am2z__redis_fail(r, AM2Z_STATUS_IO, n < 0 ? errno : EPIPE, "write");
        }
    }
    if (r->out.len) r->just_sent = 1;
    r->out.len = 0;
    r->out_sent = 0;
    return AM2Z_STATUS_OK;
}

/* The reader failed (its detail and stream offset are the thread's): the stream cannot be
   trusted, so the connection closes; the detail gains the endpoint, keeps the offset. */
static am2z_status am2z__redis_reader_failed(am2z_redis *r, am2z_status st) {
    size_t offset = am2z_status_offset();
    am2z__redis_close(r);
    return am2z__fail(st, offset, "redis %s: %s", r->endpoint, am2z_status_detail());
}

/* Reads one reply owed by an earlier command. RESP3 pushes in between go to on_push.
   am2z__redis_read (CLUSTER, at the end of this section) also follows redirections. */
static am2z_status am2z__redis_read1(am2z_redis *r, am2z_reply *reply, int64_t deadline) {
    for (;;) {
        am2z_status st = am2z_resp_reader_next(r->rd, reply);
        if (st == AM2Z_STATUS_OK) {
            if (reply->type == AM2Z_REPLY_PUSH) {
                if (r->desc.on_push) r->desc.on_push(reply, r->desc.push_user_data);
                am2z_reply_clear(reply);
                continue;
            }
            r->pending--;
            if (reply->type == AM2Z_REPLY_ERROR) /* the detail is the server's message itself */
                return am2z__fail(AM2Z_STATUS_SERVER, AM2Z_NTS, "%.*s", (int)(reply->len > 255 ? 255 : reply->len),
                                  am2z_reply_str(reply));
            return AM2Z_STATUS_OK;
        }
        if (st != AM2Z_STATUS_NEED_MORE) return am2z__redis_reader_failed(r, st);
        if (r->just_sent) {
            /* the reply cannot be there yet: poll first, which saves a failed read */
            am2z_status st = am2z__redis_wait(r, POLLIN, deadline, "read");
            r->just_sent = 0;
            if (st != AM2Z_STATUS_OK) return st;
        }
        {
            size_t avail;
            char *direct = am2z__resp_bulk_space(r->rd, AM2Z__DIRECT_CHUNK, &avail);
            /* no more than max_buffer leaves room for, so a small limit still reads */
            size_t room = r->rd->lim.max_buffer - (r->rd->end - r->rd->start);
            char *space = direct ? direct : am2z__resp_reader_space(r->rd, room && room < AM2Z__READ_CHUNK ? room
                                                                                      : AM2Z__READ_CHUNK, &avail);
            ptrdiff_t n;
            if (!space) return am2z__redis_reader_failed(r, r->rd->failed);
            n = am2z__redis_io(r, 0, space, avail);
            if (n > 0) {
                if (direct) r->rd->bulk_got += (size_t)n;
                else r->rd->end += (size_t)n;
            } else if (n == AM2Z_IO_WANT_READ || n == AM2Z_IO_WANT_WRITE) {
                am2z_status st = am2z__redis_wait(r, n == AM2Z_IO_WANT_READ ? POLLIN : POLLOUT, deadline, "read");
                if (st != AM2Z_STATUS_OK) return st;
            } else if (n == 0) {
                return am2z__redis_fail(r, AM2Z_STATUS_IO, 0, "connection closed by the server");
            } else {
                return am2z__redis_fail(r, AM2Z_STATUS_IO, errno, "read");
            }
        }
    }
}

static am2z_status am2z__redis_read(am2z_redis *r, am2z_reply *reply, int64_t deadline);

/* One more reply is owed, for the command encoded in r->out from offset `from`; a
   cluster connection keeps a copy of it, to send it again if a node redirects it. On
   NO_MEMORY the command is taken back out of r->out (the stream is intact). */
static am2z_status am2z__redis_owe(am2z_redis *r, size_t from) {
    if (r->cnodes) {
        size_t n = r->out.len - from;
        if (!am2z__buf_reserve(&r->sent, sizeof n + n)) {
            r->out.len = from;
            return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "redis %s: out of memory", r->endpoint);
        }
        memcpy(r->sent.data + r->sent.len, &n, sizeof n);
        memcpy(r->sent.data + r->sent.len + sizeof n, r->out.data + from, n);
        r->sent.len += sizeof n + n;
    }
    r->pending++;
    return AM2Z_STATUS_OK;
}

static char *am2z__redis_dup(const char *s, int *ok) {
    char *d;
    if (!s) return NULL;
    d = am2z__strdup(s);
    if (!d) *ok = 0;
    return d;
}

static void am2z__redis_set_endpoint(am2z_redis *r) {
    if (r->unix_path) snprintf(r->endpoint, sizeof r->endpoint, "unix:%s", r->unix_path);
    else if (strchr(r->host, ':')) snprintf(r->endpoint, sizeof r->endpoint, "[%s]:%d", r->host, r->desc.port);
    else snprintf(r->endpoint, sizeof r->endpoint, "%s:%d", r->host, r->desc.port);
}

/* "host:port" or "[v6]:port" into host (size bytes) and *port (1..65535); 0 if malformed. */
static int am2z__redis_hostport(const char *s, char *host, size_t size, int *port) {
    const char *colon = s ? strrchr(s, ':') : NULL, *h = s, *end = colon;
    long v = 0;
    int digits = 0;
    if (!colon) return 0;
    if (*s == '[') {
        if (colon == s || colon[-1] != ']') return 0;
        h = s + 1;
        end = colon - 1;
    } else if (memchr(s, ':', (size_t)(colon - s))) {
        return 0; /* an IPv6 literal needs brackets: which colon starts the port? */
    }
    for (colon++; *colon >= '0' && *colon <= '9' && v <= 65535; colon++, digits++) v = v * 10 + (*colon - '0');
    if (*colon || !digits || v < 1 || v > 65535 || end == h || (size_t)(end - h) >= size) return 0;
    memcpy(host, h, (size_t)(end - h));
    host[end - h] = 0;
    *port = (int)v;
    return 1;
}

/* INVALID_ARGUMENT with a detail naming what is wrong with desc's sentinel fields. */
static am2z_status am2z__redis_sentinel_check(const am2z_redis_desc *d) {
    char host[256];
    int i, port;
    if (d->n_sentinels < 0 || d->n_sentinels > AM2Z_REDIS_MAX_SENTINELS)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "redis: n_sentinels %d is outside 0..AM2Z_REDIS_MAX_SENTINELS (%d)", d->n_sentinels,
                          AM2Z_REDIS_MAX_SENTINELS);
    if (!d->sentinels)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: n_sentinels is %d but sentinels is NULL",
                          d->n_sentinels);
    if (!d->sentinel_master || !*d->sentinel_master)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "redis: sentinels given without sentinel_master (the name they monitor)");
    for (i = 0; i < d->n_sentinels; i++)
        if (!am2z__redis_hostport(d->sentinels[i], host, sizeof host, &port))
            return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                              "redis: sentinel %d \"%.200s\" is not host:port (port 1..65535, [IPv6]:port)", i,
                              d->sentinels[i] ? d->sentinels[i] : "(null)");
    return AM2Z_STATUS_OK;
}

/* As am2z__redis_sentinel_check, for the cluster fields. */
static am2z_status am2z__redis_cluster_check(const am2z_redis_desc *d) {
    char host[256];
    int i, port;
    if (d->n_cluster_nodes < 0 || d->n_cluster_nodes > AM2Z_REDIS_MAX_SENTINELS)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "redis: n_cluster_nodes %d is outside 0..AM2Z_REDIS_MAX_SENTINELS (%d)", d->n_cluster_nodes,
                          AM2Z_REDIS_MAX_SENTINELS);
    if (!d->cluster_nodes)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: n_cluster_nodes is %d but cluster_nodes is NULL",
                          d->n_cluster_nodes);
    if (d->n_sentinels)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: both sentinels and cluster_nodes are set");
    if (!d->cluster_key)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "redis: cluster_nodes given without cluster_key (the key whose slot to serve)");
    for (i = 0; i < d->n_cluster_nodes; i++)
        if (!am2z__redis_hostport(d->cluster_nodes[i], host, sizeof host, &port))
            return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                              "redis: cluster node %d \"%.200s\" is not host:port (port 1..65535, [IPv6]:port)", i,
                              d->cluster_nodes[i] ? d->cluster_nodes[i] : "(null)");
    return AM2Z_STATUS_OK;
}

/* n strings copied into one block: the array, then the strings; NULL clears *ok. */
static char **am2z__redis_list_dup(const char *const *list, int n, int *ok) {
    size_t bytes = (size_t)n * sizeof(char *);
    char **out, *at;
    int i;
    for (i = 0; i < n; i++) bytes += strlen(list[i]) + 1;
    out = (char **)am2z__malloc(bytes);
    if (!out) {
        *ok = 0;
        return NULL;
    }
    at = (char *)(out + n);
    for (i = 0; i < n; i++) {
        size_t len = strlen(list[i]) + 1;
        out[i] = at;
        memcpy(at, list[i], len);
        at += len;
    }
    return out;
}

/* Two keys of r's slot nobody writes, which keyless scripts declare (CLUSTER, SCRIPTS in
   the declarations): the cluster key with a suffix when that keeps its slot (a hash tag
   decides it), else "{am2z-guard-N}" for the first N that hashes to the slot (about
   16,384 tries, once per connection; every slot has one below 2^18, 255,793 being the
   largest first N). */
static void am2z__redis_guard_keys(am2z_redis *r) {
    size_t n = strlen(r->cluster_key);
    char tag[32];
    unsigned i;
    int g;
    if (n + 20 < sizeof r->guard[0]) {
        for (g = 0; g < 2; g++) snprintf(r->guard[g], sizeof r->guard[g], "%s~am2z-guard-%d", r->cluster_key, g + 1);
        if (am2z_redis_key_slot(r->guard[0], AM2Z_NTS) == r->cluster_slot &&
            am2z_redis_key_slot(r->guard[1], AM2Z_NTS) == r->cluster_slot)
            return;
    }
    for (i = 0; i < (1u << 18); i++) {
        snprintf(tag, sizeof tag, "am2z-guard-%u", i);
        if (am2z_redis_key_slot(tag, AM2Z_NTS) == r->cluster_slot) break;
    }
    for (g = 0; g < 2; g++) snprintf(r->guard[g], sizeof r->guard[g], "{%s}~%d", tag, g + 1);
}

static void am2z__redis_cluster_copy(am2z_redis *r, int *ok) {
    r->cnodes = am2z__redis_list_dup(r->desc.cluster_nodes, r->desc.n_cluster_nodes, ok);
    r->cluster_key = am2z__redis_dup(r->desc.cluster_key, ok);
    r->cluster_slot = am2z_redis_key_slot(r->desc.cluster_key, AM2Z_NTS);
    r->desc.cluster_nodes = (const char *const *)r->cnodes;
    r->desc.cluster_key = r->cluster_key;
    if (r->cluster_key) am2z__redis_guard_keys(r);
}

/* Copies the checked sentinel fields of r->desc into r (one block for the list), pointing
   r->desc at the copies; clears *ok when out of memory. */
static void am2z__redis_sentinel_copy(am2z_redis *r, int *ok) {
    r->sentinels = am2z__redis_list_dup(r->desc.sentinels, r->desc.n_sentinels, ok);
    r->sentinel_master = am2z__redis_dup(r->desc.sentinel_master, ok);
    r->sentinel_user = am2z__redis_dup(r->desc.sentinel_user, ok);
    r->sentinel_password = am2z__redis_dup(r->desc.sentinel_password, ok);
    r->desc.sentinels = (const char *const *)r->sentinels;
    r->desc.sentinel_master = r->sentinel_master;
    r->desc.sentinel_user = r->sentinel_user;
    r->desc.sentinel_password = r->sentinel_password;
}

AM2Z_API am2z_redis *am2z_redis_new(const am2z_redis_desc *desc, am2z_status *status) {
    am2z_redis *r;
    am2z_status st = AM2Z_STATUS_OK;
    int ok = 1;
    if (desc && desc->transport.read && !desc->transport.write)
        return (am2z_redis *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "redis: the transport has read but no write"));
    if (desc && (desc->port < 0 || desc->port > 65535))
        return (am2z_redis *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "redis: port %d is outside 0..65535", desc->port));
    if (desc && desc->db < 0)
        return (am2z_redis *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "redis: db %d is negative", desc->db));
    if (desc && desc->n_sentinels && am2z__redis_sentinel_check(desc) != AM2Z_STATUS_OK)
        return (am2z_redis *)am2z__put_status(status, AM2Z_STATUS_INVALID_ARGUMENT);
    if (desc && desc->n_cluster_nodes && am2z__redis_cluster_check(desc) != AM2Z_STATUS_OK)
        return (am2z_redis *)am2z__put_status(status, AM2Z_STATUS_INVALID_ARGUMENT);
    r = (am2z_redis *)am2z__malloc(sizeof *r);
    if (!r) return (am2z_redis *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "redis: out of memory"));
    memset(r, 0, sizeof *r);
    if (desc) r->desc = *desc;
    r->fd = -1;
    r->abort_fd = -1;
    r->host = am2z__redis_dup(r->desc.host ? r->desc.host : "127.0.0.1", &ok);
    r->unix_path = am2z__redis_dup(r->desc.n_sentinels > 0 || r->desc.n_cluster_nodes > 0 ? NULL : r->desc.unix_path, &ok);
    if (r->desc.n_sentinels > 0) am2z__redis_sentinel_copy(r, &ok);
    if (r->desc.n_cluster_nodes > 0) am2z__redis_cluster_copy(r, &ok);
    r->user = am2z__redis_dup(r->desc.user, &ok);
    r->password = am2z__redis_dup(r->desc.password, &ok);
    r->client_name = am2z__redis_dup(r->desc.client_name, &ok);
    if (r->desc.limits.max_buffer == 0) r->desc.limits.max_buffer = AM2Z_REDIS_MAX_BUFFER;
    if (ok) r->rd = am2z_resp_reader_new(&r->desc.limits, &st);
    if (!ok || !r->rd) {
        am2z_redis_free(r);
        if (!ok) st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "redis: out of memory");
        return (am2z_redis *)am2z__put_status(status, st); /* else the reader's status and detail */
    }
    r->desc.host = r->host;
    r->desc.unix_path = r->unix_path;
    r->desc.user = r->user;
    r->desc.password = r->password;
    r->desc.client_name = r->client_name;
    if (r->desc.port == 0) r->desc.port = 6379;
    if (r->desc.connect_timeout_ms == 0) r->desc.connect_timeout_ms = 5000;
    if (r->desc.command_timeout_ms == 0) r->desc.command_timeout_ms = 30000;
    if (r->desc.reconnect_attempts <= 0) r->desc.reconnect_attempts = 10;
    if (r->desc.reconnect_base_ms <= 0) r->desc.reconnect_base_ms = 50;
    if (r->desc.reconnect_max_ms <= 0) r->desc.reconnect_max_ms = 2000;
    if (r->sentinels) snprintf(r->endpoint, sizeof r->endpoint, "%s (sentinel)", r->sentinel_master);
    else if (r->cnodes) snprintf(r->endpoint, sizeof r->endpoint, "cluster slot %d", r->cluster_slot);
    else am2z__redis_set_endpoint(r);
    r->rng = (uint64_t)am2z_monotonic_ns() ^ (uint64_t)(uintptr_t)r ^ 0x9E3779B97F4A7C15ull;
    if (status) *status = AM2Z_STATUS_OK;
    return r;
}

AM2Z_API void am2z_redis_free(am2z_redis *r) {
    if (!r) return;
    am2z__redis_close(r);
    am2z_resp_reader_free(r->rd);
    am2z_resp_buf_clear(&r->out);
    am2z__free(r->host);
    am2z__free(r->unix_path);
    am2z__free(r->user);
    am2z__free(r->password);
    am2z__free(r->client_name);
    am2z__free(r->sentinels);
    am2z__free(r->sentinel_master);
    am2z__free(r->sentinel_user);
    am2z__free(r->sentinel_password);
    am2z__free(r->cnodes);
    am2z__free(r->cluster_key);
    am2z_resp_buf_clear(&r->sent);
    am2z__free(r);
}

/* Non-blocking connect of one address within the deadline. */
static am2z_status am2z__redis_connect_addr(am2z_redis *r, int family, const struct sockaddr *addr,
                                            socklen_t addrlen, int64_t deadline) {
    int fd, err = 0, one = 1;
    socklen_t elen = sizeof err;
    fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) return am2z__redis_fail(r, AM2Z_STATUS_IO, errno, "socket");
    (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        err = errno;
        close(fd);
        return am2z__redis_fail(r, AM2Z_STATUS_IO, err, "socket");
    }
#ifdef SO_NOSIGPIPE
    (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    if (family != AF_UNIX) (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    r->fd = fd;
    if (connect(fd, addr, addrlen) != 0) {
        am2z_status st;
        /* EAGAIN is no "in progress": a full Unix socket backlog or no free local port */
        if (errno != EINPROGRESS && errno != EINTR)
            return am2z__redis_fail(r, AM2Z_STATUS_IO, errno, "connect");
        st = am2z__redis_wait(r, POLLOUT, deadline, "connect");
        if (st != AM2Z_STATUS_OK) return st;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) err = errno;
        if (err) return am2z__redis_fail(r, AM2Z_STATUS_IO, err, "connect");
    }
    return AM2Z_STATUS_OK;
}

static am2z_status am2z__redis_open_socket(am2z_redis *r, int64_t deadline) {
    if (r->unix_path) {
        struct sockaddr_un sa;
        size_t n = strlen(r->unix_path);
        memset(&sa, 0, sizeof sa);
        if (n >= sizeof sa.sun_path)
            return am2z__redis_fail(r, AM2Z_STATUS_INVALID_ARGUMENT, 0, "unix socket path too long");
        sa.sun_family = AF_UNIX;
        memcpy(sa.sun_path, r->unix_path, n + 1);
        return am2z__redis_connect_addr(r, AF_UNIX, (const struct sockaddr *)(const void *)&sa, (socklen_t)sizeof sa,
                                        deadline);
    } else {
        struct addrinfo hints, *res = NULL, *ai;
        char port[16];
        int rc;
        am2z_status st = AM2Z_STATUS_IO;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        snprintf(port, sizeof port, "%d", r->desc.port);
        /* name resolution blocks outside the connect timeout (getaddrinfo has none) */
        rc = getaddrinfo(r->host, port, &hints, &res);
        if (rc != 0)
            return am2z__redis_fail(r, AM2Z_STATUS_IO, rc == EAI_SYSTEM ? errno : 0, "resolve: %s", gai_strerror(rc));
        for (ai = res; ai; ai = ai->ai_next) {
            st = am2z__redis_connect_addr(r, ai->ai_family, ai->ai_addr, ai->ai_addrlen, deadline);
            if (st == AM2Z_STATUS_OK || st == AM2Z_STATUS_TIMEOUT) break;
        }
        freeaddrinfo(res);
        return st;
    }
}

static am2z_status am2z__redis_connect_direct(am2z_redis *r) {
    int64_t deadline;
    am2z_status st;
    am2z_reply reply;
    const char *sent[3]; /* the handshake commands, to check each reply */
    size_t i, n = 0;
    if (!r) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: connect without a connection");
    am2z__redis_close(r);
    deadline = am2z__deadline(r->desc.connect_timeout_ms);
    r->last_timeout_ms = r->desc.connect_timeout_ms;
    st = am2z__redis_open_socket(r, deadline);
    if (st != AM2Z_STATUS_OK) return st;
    if (r->desc.transport.read) {
        int64_t left = deadline < 0 ? -1 : (deadline - am2z_monotonic_ns()) / 1000000;
        r->tconn = r->desc.transport.open ? r->desc.transport.open(r->fd, r->host, left, r->desc.transport.user_data)
                                          : r->desc.transport.user_data;
        if (!r->tconn) {
            /* nothing was opened, so there is nothing for the transport to close */
            close(r->fd);
            r->fd = -1;
            return am2z__redis_fail(r, AM2Z_STATUS_IO, 0, "transport handshake failed");
        }
    }
    /* The handshake commands go out as one pipeline. */
    {
        const char *argv[8];
        size_t argc = 0;
        char db[16];
        if (r->desc.resp3) {
            argv[argc++] = "HELLO";
            argv[argc++] = "3";
            if (r->password) {
                argv[argc++] = "AUTH";
                argv[argc++] = r->user ? r->user : "default";
                argv[argc++] = r->password;
            }
            if (r->client_name) {
                argv[argc++] = "SETNAME";
                argv[argc++] = r->client_name;
            }
            if (am2z_resp_append_argv(&r->out, argc, argv, NULL) != AM2Z_STATUS_OK) goto nomem;
            sent[n++] = "HELLO";
        } else {
            if (r->password) {
                argv[0] = "AUTH";
                argv[1] = r->user ? r->user : r->password;
                argv[2] = r->password;
                if (am2z_resp_append_argv(&r->out, r->user ? 3 : 2, argv, NULL) != AM2Z_STATUS_OK) goto nomem;
                sent[n++] = "AUTH";
            }
            if (r->client_name) {
                argv[0] = "CLIENT";
                argv[1] = "SETNAME";
                argv[2] = r->client_name;
                if (am2z_resp_append_argv(&r->out, 3, argv, NULL) != AM2Z_STATUS_OK) goto nomem;
                sent[n++] = "CLIENT SETNAME";
            }
        }
        if (r->desc.db > 0) {
            snprintf(db, sizeof db, "%d", r->desc.db);
            argv[0] = "SELECT";
            argv[1] = db;
            if (am2z_resp_append_argv(&r->out, 2, argv, NULL) != AM2Z_STATUS_OK) goto nomem;
            sent[n++] = "SELECT";
        }
    }
    r->pending = n;
    st = am2z__redis_flush(r, deadline);
    memset(&reply, 0, sizeof reply);
    for (i = 0; i < n && st == AM2Z_STATUS_OK; i++) {
        /* HELLO answers a map, the others +OK: anything else is not a Redis we can talk
           to, and taking it for success would leave the wrong db or protocol selected */
        int hello = strcmp(sent[i], "HELLO") == 0;
        st = am2z__redis_read(r, &reply, deadline);
        if (st == AM2Z_STATUS_OK && (hello ? reply.type != AM2Z_REPLY_MAP
                                           : reply.type != AM2Z_REPLY_STRING || strcmp(am2z_reply_str(&reply), "OK") != 0))
            st = am2z__redis_fail(r, AM2Z_STATUS_PROTOCOL, 0, "connect: %s answered a%s %s reply, not %s", sent[i],
                                  reply.type == AM2Z_REPLY_ARRAY ? "n" : "", am2z_reply_type_name(reply.type),
                                  hello ? "a map" : "+OK");
    }
    am2z_reply_clear(&reply);
    /* refused (wrong password, bad db): the detail is the server's message */
    if (st == AM2Z_STATUS_SERVER) am2z__redis_close(r);
    return st;
nomem:
    return am2z__redis_fail(r, AM2Z_STATUS_NO_MEMORY, 0, "out of memory");
}

/* ---- sentinel and cluster: finding the master ---- */

/* A connection to a sentinel or a seed node ("host:port", checked by am2z_redis_new):
   r's transport, limits and connect timeout (also per reply), every wait ending by cap
   (monotonic ns; 0: none) or r's abort. NULL with the status when it cannot connect. */
static am2z_redis *am2z__redis_side(am2z_redis *r, const char *spec, const char *user, const char *password,
                                    int64_t cap, am2z_status *st) {
    am2z_redis_desc d;
    am2z_redis *s;
    char host[256];
    memset(&d, 0, sizeof d);
    (void)am2z__redis_hostport(spec, host, sizeof host, &d.port);
    d.host = host;
    d.user = user;
    d.password = password;
    d.connect_timeout_ms = r->desc.connect_timeout_ms;
    d.command_timeout_ms = r->desc.connect_timeout_ms;
    d.transport = r->desc.transport;
    d.limits = r->desc.limits;
    if (!(s = am2z_redis_new(&d, st))) return NULL;
    s->cap_ns = cap;
    s->abort_fd = r->abort_fd;
    if ((*st = am2z_redis_connect(s)) != AM2Z_STATUS_OK) {
        am2z_redis_free(s);
        return NULL;
    }
    return s;
}

/* Copies a [host, port] pair (bulk strings, or a bulk and an integer) into host/port. */
static int am2z__redis_addr_of(const am2z_reply *h, const am2z_reply *p, char *host, size_t size, int *port) {
    long v = 0;
    char *end = NULL;
    if (!h || !p || h->type != AM2Z_REPLY_BULK || h->len >= size) return 0;
    if (p->type == AM2Z_REPLY_INTEGER) v = p->integer > 0 && p->integer <= 65535 ? (long)p->integer : 0;
    else if (p->type == AM2Z_REPLY_BULK && (v = strtol(am2z_reply_str(p), &end, 10)) != 0 && *end) v = 0;
    if (v < 1 || v > 65535) return 0;
    memcpy(host, am2z_reply_str(h), h->len + 1);
    *port = (int)v;
    return 1;
}

/* Asks sentinel i for the master's address; OK with host (size bytes) and *port. */
static am2z_status am2z__redis_sentinel_ask(am2z_redis *r, int i, int64_t cap, char *host, size_t size, int *port) {
    am2z_reply rep;
    am2z_status st;
    const char *argv[3];
    am2z_redis *s = am2z__redis_side(r, r->sentinels[i], r->sentinel_user, r->sentinel_password, cap, &st);
    if (!s) return st;
    memset(&rep, 0, sizeof rep);
    argv[0] = "SENTINEL";
    argv[1] = "get-master-addr-by-name";
    argv[2] = r->sentinel_master;
    st = am2z_redis_command_argv(s, &rep, 3, argv, NULL);
    if (st == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_NIL)
        st = am2z__fail(AM2Z_STATUS_IO, AM2Z_NTS, "redis sentinel %s: does not know master '%s'", s->endpoint,
                        r->sentinel_master);
    else if (st == AM2Z_STATUS_OK && (rep.type != AM2Z_REPLY_ARRAY || rep.len != 2 ||
                                      !am2z__redis_addr_of(am2z_reply_at(&rep, 0), am2z_reply_at(&rep, 1), host, size, port)))
        st = am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS,
                        "redis sentinel %s: get-master-addr-by-name answered a %s, not [host, port]", s->endpoint,
                        am2z_reply_type_name(rep.type));
    am2z_reply_clear(&rep);
    am2z_redis_free(s);
    return st;
}

/* Asks seed node i (CLUSTER SLOTS) which master serves r's slot; OK with host/port. A
   master announced without an address ("") is on the seed's host. */
static am2z_status am2z__redis_cluster_ask(am2z_redis *r, int i, int64_t cap, char *host, size_t size, int *port) {
    am2z_reply rep;
    am2z_status st;
    const char *argv[2];
    size_t k;
    int found = 0;
    am2z_redis *s = am2z__redis_side(r, r->cnodes[i], r->user, r->password, cap, &st);
    if (!s) return st;
    memset(&rep, 0, sizeof rep);
    argv[0] = "CLUSTER";
    argv[1] = "SLOTS";
    st = am2z_redis_command_argv(s, &rep, 2, argv, NULL);
    for (k = 0; st == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY && k < rep.len && !found; k++) {
        /* [start, end, [host, port, id, ...] (the master), replicas...] */
        const am2z_reply *e = am2z_reply_at(&rep, k), *m = am2z_reply_at(e, 2);
        const am2z_reply *lo = am2z_reply_at(e, 0), *hi = am2z_reply_at(e, 1);
        if (!lo || !hi || lo->type != AM2Z_REPLY_INTEGER || hi->type != AM2Z_REPLY_INTEGER ||
            lo->integer > r->cluster_slot || r->cluster_slot > hi->integer)
            continue;
        found = am2z__redis_addr_of(am2z_reply_at(m, 0), am2z_reply_at(m, 1), host, size, port) ? 1 : -1;
        if (found > 0 && !host[0]) snprintf(host, size, "%s", s->host);
    }
    if (st == AM2Z_STATUS_OK && found < 0)
        st = am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "redis cluster node %s: CLUSTER SLOTS names no [host, port] "
                        "for slot %d", s->endpoint, r->cluster_slot);
    else if (st == AM2Z_STATUS_OK && !found)
        st = am2z__fail(AM2Z_STATUS_IO, AM2Z_NTS, "redis cluster node %s: no master serves slot %d", s->endpoint,
                        r->cluster_slot);
    am2z_reply_clear(&rep);
    am2z_redis_free(s);
    return st;
}

/* Connects r to host:port and checks that it is a master (ROLE). */
static am2z_status am2z__redis_connect_master(am2z_redis *r, const char *host, int port) {
    am2z_status st;
    am2z_reply rep;
    const char *argv[1];
    const am2z_reply *role;
    if (strcmp(host, r->host) != 0) {
        char *h = am2z__strdup(host);
        if (!h) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "redis: out of memory");
        am2z__free(r->host);
        r->host = h;
        r->desc.host = h;
    }
    r->desc.port = port;
    am2z__redis_set_endpoint(r);
    st = am2z__redis_connect_direct(r);
    if (st != AM2Z_STATUS_OK) return st;
    memset(&rep, 0, sizeof rep);
    argv[0] = "ROLE";
    st = am2z_redis_command_argv(r, &rep, 1, argv, NULL);
    role = am2z_reply_at(&rep, 0);
    if (st == AM2Z_STATUS_OK && (!role || strcmp(am2z_reply_str(role), "master") != 0))
        st = am2z__redis_fail(r, AM2Z_STATUS_IO, 0, "ROLE is '%.32s', not master (a %s not yet told of a "
                              "failover, or a demoted master)", role ? am2z_reply_str(role) : "?",
                              r->sentinels ? "sentinel" : "node");
    else if (st == AM2Z_STATUS_SERVER)
        am2z__redis_close(r); /* ROLE refused (ACL): the role is unknown, so not trusted */
    am2z_reply_clear(&rep);
    return st;
}

/* Asks the sentinels (or seed nodes) in turn, from the one that last led to the master,
   and connects to the first master named; see SENTINEL and CLUSTER in the declarations. */
static am2z_status am2z__redis_find_master(am2z_redis *r) {
    am2z_status st, failed = AM2Z_STATUS_IO;
    int64_t cap = r->cap_ns;
    int n = r->sentinels ? r->desc.n_sentinels : r->desc.n_cluster_nodes;
    int *next = r->sentinels ? &r->sentinel_next : &r->cnode_next;
    char host[256], tried[AM2Z_REDIS_MAX_SENTINELS][64], last[512];
    int k, port = 0, ntried = 0;
    am2z__redis_close(r);
    r->moved = 0;
    last[0] = 0;
    for (k = 0; k < n; k++) {
        int i = (*next + k) % n, j;
        int64_t step = am2z__deadline(r->desc.connect_timeout_ms);
        struct pollfd pfd;
        pfd.fd = r->abort_fd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (k > 0 && ((cap > 0 && am2z_monotonic_ns() >= cap) || (r->abort_fd >= 0 && poll(&pfd, 1, 0) > 0)))
            break; /* the caller's deadline passed or its owner stops: last says why */
        if (step < 0 || (cap > 0 && cap < step)) step = cap > 0 ? cap : 0;
        st = r->sentinels ? am2z__redis_sentinel_ask(r, i, step, host, sizeof host, &port)
                          : am2z__redis_cluster_ask(r, i, step, host, sizeof host, &port);
        if (st == AM2Z_STATUS_OK) {
            char addr[64];
            snprintf(addr, sizeof addr, "%.40s:%d", host, port);
            for (j = 0; j < ntried && strcmp(tried[j], addr) != 0; j++) {}
            if (j < ntried) continue; /* failed already in this connect; last keeps why */
            memcpy(tried[ntried++], addr, sizeof addr);
            r->cap_ns = step;
            st = am2z__redis_connect_master(r, host, port);
            r->cap_ns = cap;
            if (st == AM2Z_STATUS_OK) {
                *next = i;
                return st;
            }
        }
        failed = st;
        snprintf(last, sizeof last, "%s", am2z_status_detail());
    }
    am2z__redis_close(r);
    if (r->sentinels) {
        snprintf(r->endpoint, sizeof r->endpoint, "%s (sentinel)", r->sentinel_master);
        return am2z__fail(failed, AM2Z_NTS, "redis sentinel %s: no master through %d sentinel%s; last: %s",
                          r->sentinel_master, n, n == 1 ? "" : "s", last);
    }
    snprintf(r->endpoint, sizeof r->endpoint, "cluster slot %d", r->cluster_slot);
    return am2z__fail(failed, AM2Z_NTS, "redis cluster: no master for slot %d through %d node%s; last: %s",
                      r->cluster_slot, n, n == 1 ? "" : "s", last);
}

AM2Z_API am2z_status am2z_redis_connect(am2z_redis *r) {
    am2z_status st;
    if (!r || !(r->sentinels || r->cnodes)) return am2z__redis_connect_direct(r);
    if ((st = am2z__redis_find_master(r)) == AM2Z_STATUS_OK) r->reconnect_once = 0;
    return st;
}

static uint64_t am2z__redis_rand(am2z_redis *r) {
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return r->rng;
}

AM2Z_API am2z_status am2z_redis_reconnect(am2z_redis *r) {
    int attempt;
    int64_t delay;
    am2z_status st;
    if (!r) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: reconnect without a connection");
    st = AM2Z_STATUS_IO; /* reconnect_attempts is at least 1 */
    delay = r->desc.reconnect_base_ms;
    for (attempt = 0; attempt < r->desc.reconnect_attempts; attempt++) {
        if (attempt > 0) {
            /* base * 2^(attempt-1), capped, then cut by a random amount of up to half, so
               clients that lost the same server do not all come back in lockstep */
            int64_t d = delay < r->desc.reconnect_max_ms ? delay : r->desc.reconnect_max_ms;
            am2z__redis_sleep_ms(d - (int64_t)(am2z__redis_rand(r) % (uint64_t)(d / 2 + 1)));
            if (delay < r->desc.reconnect_max_ms) delay *= 2;
        }
        st = am2z_redis_connect(r);
        /* only a transport failure is worth another try; a refused AUTH is not */
        if (st != AM2Z_STATUS_IO && st != AM2Z_STATUS_TIMEOUT) return st;
    }
    return st;
}

AM2Z_API int am2z_redis_is_connected(const am2z_redis *r) { return r && r->fd >= 0; }
AM2Z_API int am2z_redis_fd(const am2z_redis *r) { return r ? r->fd : -1; }

/* Names the endpoint in a failure the encoder reported (bad arguments, no memory): the
   stream is intact and the connection stays usable. */
static am2z_status am2z__redis_encode_failed(const am2z_redis *r, am2z_status st) {
    return am2z__fail(st, AM2Z_NTS, "redis %s: %s", r->endpoint, am2z_status_detail());
}

/* Checks that a command may be queued: connected (reconnecting once when the desc asks
   for it) and, unless appending to a pipeline, no unread replies. */
static am2z_status am2z__redis_ready(am2z_redis *r, int appending) {
    if (r->fd < 0) {
        /* closed after a MOVED: the slot map is read again (CLUSTER) */
        if (!r->desc.auto_reconnect && !r->reconnect_once) return am2z__redis_fail(r, AM2Z_STATUS_IO, 0, "not connected");
        return am2z_redis_connect(r);
    }
    if (!appending && r->pending)
        return am2z__redis_fail(r, AM2Z_STATUS_INVALID_ARGUMENT, 0, "%zu pipelined replies not read yet", r->pending);
    return AM2Z_STATUS_OK;
}

/* Sends what is queued (the one command just encoded) and reads its reply. */
static am2z_status am2z__redis_roundtrip(am2z_redis *r, am2z_reply *reply, int64_t timeout_ms) {
    int64_t deadline = am2z__deadline(timeout_ms);
    am2z_status st;
    r->last_timeout_ms = timeout_ms;
    if ((st = am2z__redis_owe(r, 0)) != AM2Z_STATUS_OK) return st;
    st = am2z__redis_flush(r, deadline);
    if (st != AM2Z_STATUS_OK) return st;
    return am2z__redis_read(r, reply, deadline);
}

static am2z_status am2z__redis_argv(am2z_redis *r, am2z_reply *reply, int64_t timeout_ms, size_t npre,
                                    const char *const *pre, const size_t *prelen, size_t argc,
                                    const char *const *argv, const size_t *argvlen) {
    am2z_status st;
    am2z_reply_clear(reply);
    if (!r || !reply) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: command without a connection or reply");
    if ((st = am2z__redis_ready(r, 0)) != AM2Z_STATUS_OK) return st;
    st = am2z__resp_append2(&r->out, npre, pre, prelen, argc, argv, argvlen);
    if (st != AM2Z_STATUS_OK) return am2z__redis_encode_failed(r, st);
    return am2z__redis_roundtrip(r, reply, timeout_ms);
}

static am2z_status am2z__redis_vfmt(am2z_redis *r, am2z_reply *reply, int64_t timeout_ms, const char *fmt,
                                    va_list ap) {
    am2z_status st;
    am2z_reply_clear(reply);
    if (!r || !reply || !fmt)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: command without a connection, reply or format");
    if ((st = am2z__redis_ready(r, 0)) != AM2Z_STATUS_OK) return st;
    st = am2z_resp_append_vfmt(&r->out, fmt, ap);
    if (st != AM2Z_STATUS_OK) return am2z__redis_encode_failed(r, st);
    return am2z__redis_roundtrip(r, reply, timeout_ms);
}

AM2Z_API am2z_status am2z_redis_vcommand(am2z_redis *r, am2z_reply *reply, const char *fmt, va_list ap) {
    return am2z__redis_vfmt(r, reply, r ? r->desc.command_timeout_ms : 0, fmt, ap);
}

AM2Z_API am2z_status am2z_redis_command(am2z_redis *r, am2z_reply *reply, const char *fmt, ...) {
    va_list ap;
    am2z_status st;
    va_start(ap, fmt);
    st = am2z__redis_vfmt(r, reply, r ? r->desc.command_timeout_ms : 0, fmt, ap);
    va_end(ap);
    return st;
}

AM2Z_API am2z_status am2z_redis_command_argv(am2z_redis *r, am2z_reply *reply, size_t argc,
                                             const char *const *argv, const size_t *argvlen) {
    return am2z__redis_argv(r, reply, r ? r->desc.command_timeout_ms : 0, 0, NULL, NULL, argc, argv, argvlen);
}

static int64_t am2z__redis_timeout(const am2z_redis *r, int64_t timeout_ms) {
    return timeout_ms == 0 && r ? r->desc.command_timeout_ms : timeout_ms;
}

AM2Z_API am2z_status am2z_redis_blocking(am2z_redis *r, am2z_reply *reply, int64_t timeout_ms,
                                         const char *fmt, ...) {
    va_list ap;
    am2z_status st;
    va_start(ap, fmt);
    st = am2z__redis_vfmt(r, reply, am2z__redis_timeout(r, timeout_ms), fmt, ap);
    va_end(ap);
    return st;
}

AM2Z_API am2z_status am2z_redis_blocking_argv(am2z_redis *r, am2z_reply *reply, int64_t timeout_ms,
                                              size_t argc, const char *const *argv,
                                              const size_t *argvlen) {
    return am2z__redis_argv(r, reply, am2z__redis_timeout(r, timeout_ms), 0, NULL, NULL, argc, argv, argvlen);
}

AM2Z_API am2z_status am2z_redis_append(am2z_redis *r, const char *fmt, ...) {
    va_list ap;
    am2z_status st;
    if (!r || !fmt) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: append without a connection or format");
    size_t from;
    if ((st = am2z__redis_ready(r, 1)) != AM2Z_STATUS_OK) return st;
    from = r->out.len;
    va_start(ap, fmt);
    st = am2z_resp_append_vfmt(&r->out, fmt, ap);
    va_end(ap);
    if (st != AM2Z_STATUS_OK) return am2z__redis_encode_failed(r, st);
    return am2z__redis_owe(r, from);
}

AM2Z_API am2z_status am2z_redis_append_argv(am2z_redis *r, size_t argc, const char *const *argv,
                                            const size_t *argvlen) {
    am2z_status st;
    size_t from;
    if (!r) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: append without a connection");
    if ((st = am2z__redis_ready(r, 1)) != AM2Z_STATUS_OK) return st;
    from = r->out.len;
    st = am2z__resp_append2(&r->out, 0, NULL, NULL, argc, argv, argvlen);
    if (st != AM2Z_STATUS_OK) return am2z__redis_encode_failed(r, st);
    return am2z__redis_owe(r, from);
}

AM2Z_API am2z_status am2z_redis_flush(am2z_redis *r) {
    if (!r) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: flush without a connection");
    if (r->fd < 0) return am2z__redis_fail(r, AM2Z_STATUS_IO, 0, "not connected");
    r->last_timeout_ms = r->desc.command_timeout_ms;
    return am2z__redis_flush(r, am2z__deadline(r->desc.command_timeout_ms));
}

AM2Z_API am2z_status am2z_redis_read_timeout(am2z_redis *r, am2z_reply *reply, int64_t timeout_ms) {
    int64_t deadline;
    am2z_status st;
    am2z_reply_clear(reply);
    if (!r || !reply) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: read without a connection or reply");
    if (r->fd < 0) return am2z__redis_fail(r, AM2Z_STATUS_IO, 0, "not connected");
    if (r->pending == 0) return am2z__redis_fail(r, AM2Z_STATUS_INVALID_ARGUMENT, 0, "no reply pending");
    timeout_ms = am2z__redis_timeout(r, timeout_ms);
    r->last_timeout_ms = timeout_ms;
    deadline = am2z__deadline(timeout_ms);
    if ((st = am2z__redis_flush(r, deadline)) != AM2Z_STATUS_OK) return st;
    return am2z__redis_read(r, reply, deadline);
}

AM2Z_API am2z_status am2z_redis_read(am2z_redis *r, am2z_reply *reply) {
    return am2z_redis_read_timeout(r, reply, 0);
}

AM2Z_API size_t am2z_redis_pending(const am2z_redis *r) { return r ? r->pending : 0; }

/* ---- errors ---- */

static int am2z__redis_prefix_is(const char *msg, const char *const *words) {
    size_t n = strcspn(msg, " ");
    for (; *words; words++)
        if (strlen(*words) == n && memcmp(msg, *words, n) == 0) return 1;
    return 0;
}

/* A failed call of r as a processor error, for the queue runtime: st is the call's
   status, the thread's detail its reason. A new reference (NULL when st is OK); its
   details hold {"reason": detail, "status": ...}.
     IO, PROTOCOL, LIMIT, NO_MEMORY  NetworkError for the endpoint (retryable)
     TIMEOUT                         TimeoutError ("redis <endpoint>", the timeout)
     SERVER, NOAUTH/WRONGPASS/NOPERM ConfigurationError "redis.auth" with the message
     SERVER, LOADING/BUSY/TRYAGAIN/MASTERDOWN/CLUSTERDOWN   NetworkError (transient)
     SERVER, any other               BusinessError, code "REDIS_<first word>" (e.g.
                                     "REDIS_WRONGTYPE"), message = the server's */
AM2Z__PRIVATE am2z_error *am2z__redis_error(const am2z_redis *r, am2z_status st);
AM2Z__PRIVATE am2z_error *am2z__redis_error(const am2z_redis *r, am2z_status st) {
    static const char *const transient[] = {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", NULL};
    static const char *const auth[] = {"NOAUTH", "WRONGPASS", "NOPERM", NULL};
    char why[256]; /* copied: building the error may record details of its own */
    am2z_error *e;
    am2z_value *details;
    if (!r || st == AM2Z_STATUS_OK) return NULL;
    snprintf(why, sizeof why, "%s", am2z_status_detail());
    if (st == AM2Z_STATUS_TIMEOUT) {
        char op[sizeof r->endpoint + 16];
        snprintf(op, sizeof op, "redis %s", r->endpoint);
        e = am2z_error_timeout(op, r->last_timeout_ms);
    } else if (st == AM2Z_STATUS_SERVER && am2z__redis_prefix_is(why, auth)) {
        e = am2z_error_configuration("redis.auth", why);
    } else if (st == AM2Z_STATUS_SERVER && !am2z__redis_prefix_is(why, transient)) {
        char code[48];
        snprintf(code, sizeof code, "REDIS_%.*s", (int)strcspn(why, " "), why);
        e = am2z_error_business(code, AM2Z_SEVERITY_HIGH, "%s", why);
    } else {
        e = am2z_error_network(r->endpoint, 0, NULL);
    }
    details = am2z_value_object();
    details = am2z_value_set(details, "reason", am2z_value_string(why));
    details = am2z_value_set(details, "status", am2z_value_string(am2z_status_string(st)));
    if (e && details) e = am2z_error_with_details(e, details);
    am2z_value_release(details);
    return e;
}

/* ---- scripts ---- */

AM2Z_API am2z_redis_script *am2z_redis_script_new(const char *source, size_t len, am2z_status *status) {
    am2z_redis_script *s;
    if (!source)
        return (am2z_redis_script *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                                        "redis script: NULL source"));
    if (len == AM2Z_NTS) len = strlen(source);
    s = len <= (size_t)-1 - sizeof *s - 1 ? (am2z_redis_script *)am2z__malloc(sizeof *s + len + 1) : NULL;
    if (!s)
        return (am2z_redis_script *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS,
                                                                        "redis script: out of memory"));
    s->source = (char *)(s + 1);
    memcpy(s->source, source, len);
    s->source[len] = '\0';
    s->len = len;
    am2z__sha1_hex(source, len, s->sha);
    if (status) *status = AM2Z_STATUS_OK;
    return s;
}

AM2Z_API void am2z_redis_script_free(am2z_redis_script *s) { am2z__free(s); }

AM2Z_API const char *am2z_redis_script_sha(const am2z_redis_script *s) { return s ? s->sha : ""; }

/* The arguments before a script call's keys: EVALSHA sha (eval: EVAL source) numkeys,
   and for a keyless script on a cluster connection its two guard keys declared
   (CLUSTER, SCRIPTS in the declarations). nk: 24 bytes for numkeys. Returns how many. */
static size_t am2z__redis_script_pre(const am2z_redis *r, int eval, const am2z_redis_script *s, size_t numkeys,
                                     char *nk, const char **pre, size_t *prelen) {
    int guard = r->cnodes && numkeys == 0;
    pre[0] = eval ? "EVAL" : "EVALSHA";
    prelen[0] = eval ? 4 : 7;
    pre[1] = eval ? s->source : s->sha;
    prelen[1] = eval ? s->len : 40;
    pre[2] = nk;
    prelen[2] = am2z__u64_str(nk, guard ? 2 : numkeys);
    if (!guard) return 3;
    pre[3] = r->guard[0];
    prelen[3] = strlen(r->guard[0]);
    pre[4] = r->guard[1];
    prelen[4] = strlen(r->guard[1]);
    return 5;
}

AM2Z_API am2z_status am2z_redis_evalsha(am2z_redis *r, am2z_reply *reply, const am2z_redis_script *s,
                                        size_t numkeys, size_t argc, const char *const *argv,
                                        const size_t *argvlen) {
    char nk[24];
    const char *pre[5];
    size_t prelen[5], npre;
    am2z_status st;
    am2z_reply_clear(reply);
    if (!r || !reply || !s || numkeys > argc)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "redis: evalsha without a connection, reply or script, or numkeys %zu > argc %zu", numkeys, argc);
    npre = am2z__redis_script_pre(r, 0, s, numkeys, nk, pre, prelen);
    st = am2z__redis_argv(r, reply, r->desc.command_timeout_ms, npre, pre, prelen, argc, argv, argvlen);
    if (st == AM2Z_STATUS_SERVER && reply->len >= 8 && memcmp(am2z_reply_str(reply), "NOSCRIPT", 8) == 0) {
        /* the server does not know the script (new, restarted or flushed, or a cluster
           node the slot just moved to): EVAL sends the source and caches it, so the next
           EVALSHA succeeds */
        am2z_reply_clear(reply);
        npre = am2z__redis_script_pre(r, 1, s, numkeys, nk, pre, prelen);
        st = am2z__redis_argv(r, reply, r->desc.command_timeout_ms, npre, pre, prelen, argc, argv, argvlen);
    }
    return st;
}

AM2Z_API am2z_status am2z_redis_script_load(am2z_redis *r, const am2z_redis_script *s) {
    const char *pre[3];
    size_t prelen[3];
    am2z_reply reply;
    am2z_status st;
    if (!r || !s) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: script load without a connection or script");
    memset(&reply, 0, sizeof reply);
    pre[0] = "SCRIPT"; prelen[0] = 6;
    pre[1] = "LOAD"; prelen[1] = 4;
    pre[2] = s->source; prelen[2] = s->len;
    st = am2z__redis_argv(r, &reply, r->desc.command_timeout_ms, 3, pre, prelen, 0, NULL, NULL);
    if (st == AM2Z_STATUS_OK && (reply.len != 40 || memcmp(am2z_reply_str(&reply), s->sha, 40) != 0))
        st = am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "redis %s: SCRIPT LOAD answered another SHA-1", r->endpoint);
    am2z_reply_clear(&reply);
    return st;
}

AM2Z_API am2z_status am2z_redis_append_evalsha(am2z_redis *r, const am2z_redis_script *s,
                                               size_t numkeys, size_t argc, const char *const *argv,
                                               const size_t *argvlen) {
    char nk[24];
    const char *pre[5];
    size_t prelen[5], npre, from;
    am2z_status st;
    if (!r || !s || numkeys > argc)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "redis: evalsha without a connection or script, or numkeys %zu > argc %zu", numkeys, argc);
    if ((st = am2z__redis_ready(r, 1)) != AM2Z_STATUS_OK) return st;
    npre = am2z__redis_script_pre(r, 0, s, numkeys, nk, pre, prelen);
    from = r->out.len;
    st = am2z__resp_append2(&r->out, npre, pre, prelen, argc, argv, argvlen);
    if (st != AM2Z_STATUS_OK) return am2z__redis_encode_failed(r, st);
    return am2z__redis_owe(r, from);
}

/* ---- pool ---- */

struct am2z_redis_pool {
    am2z_redis *proto;        /* holds the desc (and its string copies); never connected */
    am2z__mutex mu;
    am2z__cond cv;        /* signalled when a connection or a slot comes back */
    am2z_redis **idle;
    int nidle, total, max;
    int abort_fd;             /* given to every connection it makes (am2z__redis_abort_fd) */
};

AM2Z_API am2z_redis_pool *am2z_redis_pool_new(const am2z_redis_desc *desc, int max_size, am2z_status *status) {
    am2z_redis_pool *p;
    am2z_status st = AM2Z_STATUS_OK;
    if (max_size < 0)
        return (am2z_redis_pool *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "redis pool: max_size %d is negative", max_size));
    p = (am2z_redis_pool *)am2z__malloc(sizeof *p);
    if (!p)
        return (am2z_redis_pool *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS,
                                                                      "redis pool: out of memory"));
    memset(p, 0, sizeof *p);
    p->max = max_size > 0 ? max_size : 8;
    p->proto = am2z_redis_new(desc, &st);
    p->idle = p->proto ? (am2z_redis **)am2z__malloc((size_t)p->max * sizeof *p->idle) : NULL;
    if (!p->proto || !p->idle) {
        if (p->proto) st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "redis pool: out of memory");
        am2z_redis_free(p->proto);
        am2z__free(p);
        return (am2z_redis_pool *)am2z__put_status(status, st); /* else the status and detail of am2z_redis_new */
    }
    am2z__mutex_init(&p->mu);
    am2z__cond_init(&p->cv);
    p->abort_fd = -1;
    if (status) *status = AM2Z_STATUS_OK;
    return p;
}

/* Every wait of r fails with IO as soon as fd is readable (-1: never). The queue runtime
   passes a pipe it writes to when a stop must not wait any longer for a Redis that
   stopped answering. fd must stay open while r lives. */
static void am2z__redis_abort_fd(am2z_redis *r, int fd) {
    if (r) r->abort_fd = fd;
}

/* Points d's sentinel and cluster fields at the pool's copies, which live as long as the pool. */
static void am2z__redis_pool_keep_sentinels(const am2z_redis_pool *p, am2z_redis_desc *d) {
    d->sentinels = p->proto->desc.sentinels;
    d->sentinel_master = p->proto->desc.sentinel_master;
    d->sentinel_user = p->proto->desc.sentinel_user;
    d->sentinel_password = p->proto->desc.sentinel_password;
    d->cluster_nodes = p->proto->desc.cluster_nodes;
    d->cluster_key = p->proto->desc.cluster_key;
}

/* Connections the pool hands out from now on get am2z__redis_abort_fd(fd). Call it
   before the pool is shared between threads. */
static void am2z__redis_pool_abort_fd(am2z_redis_pool *p, int fd) {
    if (p) p->abort_fd = fd;
}

/* am2z_redis_pool_get, where every wait of the connection handed out (and of its
   connect) also ends by cap_ns (monotonic ns; 0: no cap), so a caller with a deadline is
   never held past it by a server that stopped answering; the cap goes with the put. */
static am2z_redis *am2z__redis_pool_get(am2z_redis_pool *p, int64_t timeout_ms, int64_t cap_ns,
                                        am2z_status *status) {
    am2z_redis *r = NULL;
    am2z_status st = AM2Z_STATUS_OK;
    int64_t until_ns = INT64_MAX;
    int slot = 0; /* this call holds one of the max slots */
    if (!p)
        return (am2z_redis *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                                 "redis pool: get without a pool"));
    if (timeout_ms >= 0) {
        int64_t now = am2z_monotonic_ns();
        if (timeout_ms < (INT64_MAX - now) / 1000000) until_ns = now + timeout_ms * 1000000;
    }
    if (cap_ns > 0 && cap_ns < until_ns) until_ns = cap_ns;
    am2z__mutex_lock(&p->mu);
    while (p->nidle == 0 && p->total >= p->max && st == AM2Z_STATUS_OK) {
        if (am2z__cond_wait_until(&p->cv, &p->mu, until_ns) && p->nidle == 0 && p->total >= p->max)
            st = am2z__fail(AM2Z_STATUS_TIMEOUT, AM2Z_NTS, "redis pool: all %d connections busy after %lld ms", p->max,
                            (long long)timeout_ms);
    }
    if (st == AM2Z_STATUS_OK) {
        slot = 1;
        if (p->nidle > 0) r = p->idle[--p->nidle];
        else p->total++; /* the slot is ours; connect outside the lock */
    }
    am2z__mutex_unlock(&p->mu);
    if (st == AM2Z_STATUS_OK && !r) r = am2z_redis_new(&p->proto->desc, &st);
    if (r) r->cap_ns = cap_ns;
    if (r) r->abort_fd = p->abort_fd;
    if (st == AM2Z_STATUS_OK && r->fd < 0) st = am2z_redis_connect(r);
    if (st != AM2Z_STATUS_OK) {
        am2z_redis_free(r);
        r = NULL;
        am2z__mutex_lock(&p->mu);
        if (slot) p->total--; /* a connect that timed out gives its slot back too */
        am2z__cond_signal(&p->cv);
        am2z__mutex_unlock(&p->mu);
    }
    if (status) *status = st;
    return r;
}

AM2Z_API am2z_redis *am2z_redis_pool_get(am2z_redis_pool *p, int64_t timeout_ms, am2z_status *status) {
    return am2z__redis_pool_get(p, timeout_ms, 0, status);
}

AM2Z_API void am2z_redis_pool_put(am2z_redis_pool *p, am2z_redis *r) {
    if (!p || !r) return;
    r->cap_ns = 0;
    if (r->fd < 0 || r->pending || r->out.len) {
        /* broken or mid-pipeline: its stream cannot be trusted by the next user */
        am2z_redis_free(r);
        r = NULL;
    }
    am2z__mutex_lock(&p->mu);
    if (r) p->idle[p->nidle++] = r;
    else p->total--;
    am2z__cond_signal(&p->cv);
    am2z__mutex_unlock(&p->mu);
}

AM2Z_API void am2z_redis_pool_free(am2z_redis_pool *p) {
    int i;
    if (!p) return;
    for (i = 0; i < p->nidle; i++) am2z_redis_free(p->idle[i]);
    am2z__free(p->idle);
    am2z_redis_free(p->proto);
    am2z__mutex_destroy(&p->mu);
    am2z__cond_destroy(&p->cv);
    am2z__free(p);
}

/* ---- cluster ---- */

AM2Z_API int am2z_redis_key_slot(const char *key, size_t len) {
    size_t i, start = 0, end;
    unsigned crc = 0;
    if (!key) return 0;
    if (len == AM2Z_NTS) len = strlen(key);
    end = len;
    for (i = 0; i < len && key[i] != '{'; i++) {}
    if (i < len) { /* a tag: the bytes up to the next '}', when there are any */
        size_t j;
        for (j = i + 1; j < len && key[j] != '}'; j++) {}
        if (j < len && j > i + 1) {
            start = i + 1;
            end = j;
        }
    }
    for (i = start; i < end; i++) { /* CRC16-CCITT (XMODEM): poly 0x1021, init 0, no reflection */
        int b;
        crc ^= (unsigned)(unsigned char)key[i] << 8;
        for (b = 0; b < 8; b++) crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
        crc &= 0xFFFF;
    }
    return (int)(crc & (AM2Z_REDIS_SLOTS - 1));
}

/* 1 when s starts with the word w (then a space or its end). */
static int am2z__redis_word(const char *s, const char *w) {
    size_t n = strlen(w);
    return strncmp(s, w, n) == 0 && (s[n] == ' ' || !s[n]);
}

AM2Z_API am2z_status am2z_redis_parse_redirect(const am2z_reply *reply, am2z_redis_redirect *out) {
    const char *s, *sp, *colon;
    long slot = 0, port = 0;
    size_t hlen;
    int ask;
    if (!reply || !out) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis: parse_redirect of NULL");
    s = reply->ext ? reply->ext : reply->small; /* not am2z_reply_str: its "" for other types trips gcc's
                                                   -Wstring-compare once inlined */
    ask = reply->type == AM2Z_REPLY_ERROR && am2z__redis_word(s, "ASK");
    if (reply->type != AM2Z_REPLY_ERROR || (!ask && !am2z__redis_word(s, "MOVED")))
        return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "redis: not a MOVED or ASK redirection");
    s += ask ? 3 : 5;
    if (*s == ' ') s++; /* a bare "MOVED" is malformed, not another error */
    for (sp = s; *sp >= '0' && *sp <= '9' && slot < AM2Z_REDIS_SLOTS; sp++) slot = slot * 10 + (*sp - '0');
    colon = *sp == ' ' ? strrchr(sp + 1, ':') : NULL;
    if (sp == s || slot >= AM2Z_REDIS_SLOTS || !colon)
        return am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "redis: malformed redirection \"%.100s\"", am2z_reply_str(reply));
    hlen = (size_t)(colon - (sp + 1));
    for (s = colon + 1; *s >= '0' && *s <= '9' && port <= 65535; s++) port = port * 10 + (*s - '0');
    if (*s || s == colon + 1 || port < 1 || port > 65535 || hlen >= sizeof out->host)
        return am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "redis: malformed redirection \"%.100s\"", am2z_reply_str(reply));
    out->ask = ask;
    out->slot = (int)slot;
    memcpy(out->host, sp + 1, hlen);
    out->host[hlen] = 0;
    out->port = (int)port;
    return AM2Z_STATUS_OK;
}

/* ---- cluster: following redirections (CLUSTER in the declarations) ---- */

static int am2z__redis_redirected(const am2z_reply *reply) {
    const char *m = am2z_reply_str(reply);
    return reply->type == AM2Z_REPLY_ERROR &&
           (am2z__redis_word(m, "ASK") || am2z__redis_word(m, "MOVED") || am2z__redis_word(m, "TRYAGAIN"));
}

/* Sleeps ms, cut short when r's owner aborts; 0 when it did. */
static int am2z__redis_pause(am2z_redis *r, int64_t ms) {
    struct pollfd pfd;
    if (r->abort_fd < 0) {
        am2z__redis_sleep_ms(ms);
        return 1;
    }
    pfd.fd = r->abort_fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    return !(poll(&pfd, 1, (int)ms) > 0 && pfd.revents);
}

/* r->side connected to host:port (made again when it serves another node or broke), with
   r's desc (protocol, AUTH, name, transport, timeouts, limits) minus the cluster fields;
   its waits end by cap (monotonic ns; 0: none) and r's abort. NULL with *st on failure. */
static am2z_redis *am2z__redis_side_for(am2z_redis *r, const char *host, int port, int64_t cap, am2z_status *st) {
    am2z_redis *s = r->side;
    if (s && (s->fd < 0 || s->desc.port != port || strcmp(s->host, host) != 0)) {
        am2z_redis_free(s);
        r->side = s = NULL;
    }
    if (!s) {
        am2z_redis_desc d = r->desc;
        d.host = host;
        d.port = port;
        d.unix_path = NULL;
        d.cluster_nodes = NULL;
        d.n_cluster_nodes = 0;
        d.cluster_key = NULL;
        d.auto_reconnect = 0;
        if (!(s = am2z_redis_new(&d, st))) return NULL;
        s->cap_ns = cap;
        s->abort_fd = r->abort_fd;
        if ((*st = am2z_redis_connect(s)) != AM2Z_STATUS_OK) {
            am2z_redis_free(s);
            return NULL;
        }
        r->side = s;
    }
    s->cap_ns = cap;
    s->abort_fd = r->abort_fd;
    return s;
}

/* Sends the encoded command cmd (len bytes) on c, which owes no reply, after ASKING when
   asking, and reads its reply. */
static am2z_status am2z__redis_send_raw(am2z_redis *c, int asking, const char *cmd, size_t len, int64_t deadline,
                                        am2z_reply *reply) {
    static const char ask[] = "*1\r\n$6\r\nASKING\r\n";
    am2z_status st;
    if ((asking && !am2z__buf_put(&c->out, ask, sizeof ask - 1)) || !am2z__buf_put(&c->out, cmd, len)) {
        c->out.len = 0;
        return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "redis %s: out of memory", c->endpoint);
    }
    c->pending += asking ? 2 : 1;
    st = am2z__redis_flush(c, deadline);
    if (st == AM2Z_STATUS_OK && asking) {
        /* an ASKING refused leaves the command's own reply to say why (a MOVED) */
        st = am2z__redis_read1(c, reply, deadline);
        if (st == AM2Z_STATUS_SERVER) st = AM2Z_STATUS_OK;
        am2z_reply_clear(reply);
    }
    return st == AM2Z_STATUS_OK ? am2z__redis_read1(c, reply, deadline) : st;
}

/* *reply, the answer to cmd (len bytes, r's copy of it), is a redirection: follows ASK
   and MOVED, waits and sends again on TRYAGAIN, until an answer that is none, the hop
   limit or the deadline (ns; -1: none) or r's cap; *reply and the status are then the
   last answer's. Sending again is safe: a node that redirects did not run the command. */
static am2z_status am2z__redis_redo(am2z_redis *r, am2z_reply *reply, const char *cmd, size_t len,
                                    int64_t deadline) {
    char host[256];
    int port = r->desc.port, asking = 0, hops = 0, sends = 1;
    int64_t cap = r->cap_ns > 0 && (deadline < 0 || r->cap_ns < deadline) ? r->cap_ns : deadline > 0 ? deadline : 0;
    int64_t start = am2z_monotonic_ns(), pause = 2;
    int64_t until = cap > 0 ? cap : start + (int64_t)AM2Z_REDIS_CLUSTER_RETRY_MS * 1000000;
    am2z_status st = AM2Z_STATUS_SERVER;
    snprintf(host, sizeof host, "%s", r->host);
    for (;;) {
        const char *m = am2z_reply_str(reply);
        am2z_redis_redirect rd;
        am2z_redis *c = r;
        if (am2z__redis_word(m, "TRYAGAIN")) {
            int64_t d = pause - (int64_t)(am2z__redis_rand(r) % (uint64_t)(pause / 2 + 1));
            if (am2z_monotonic_ns() + d * 1000000 >= until)
                return am2z__fail(AM2Z_STATUS_SERVER, AM2Z_NTS, "%.*s (slot %d is being migrated: sent %d times in "
                                  "%lld ms, until %s)", (int)(reply->len > 100 ? 100 : reply->len), m, r->cluster_slot,
                                  sends, (long long)((am2z_monotonic_ns() - start) / 1000000),
                                  cap > 0 ? "the call's deadline" : "AM2Z_REDIS_CLUSTER_RETRY_MS");
            if (!am2z__redis_pause(r, d)) {
                am2z_reply_clear(reply);
                return am2z__redis_fail(r, AM2Z_STATUS_IO, 0, "TRYAGAIN retry cut loose: its owner is stopping");
            }
            pause = pause * 2 < 100 ? pause * 2 : 100; /* 2, 4, ... 64, then 100 (not 128) */
        } else if (!am2z__redis_redirected(reply)) {
            return st; /* the command's own answer (its detail set by the read) */
        } else if (am2z_redis_parse_redirect(reply, &rd) != AM2Z_STATUS_OK) {
            /* a node that breaks the cluster protocol is not trusted further: as a reply
               of the wrong type, the reply is dropped and r closes */
            char why[104];
            snprintf(why, sizeof why, "%.*s", (int)(reply->len > 100 ? 100 : reply->len), m);
            am2z_reply_clear(reply);
            am2z__redis_close(r);
            return am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "redis %s:%d: malformed redirection \"%s\" (slot %d): "
                              "not followed", host, port, why, r->cluster_slot);
        } else {
            if (++hops > AM2Z_REDIS_MAX_REDIRECTS)
                return am2z__fail(AM2Z_STATUS_SERVER, AM2Z_NTS, "%.*s (slot %d: %d redirections followed, "
                                  "AM2Z_REDIS_MAX_REDIRECTS)", (int)(reply->len > 100 ? 100 : reply->len), m,
                                  r->cluster_slot, hops - 1);
            if (rd.host[0]) memcpy(host, rd.host, sizeof host); /* "": the node that answered */
            port = rd.port;
            asking = rd.ask;
            if (!rd.ask) r->moved = 1; /* the slot map changed: r closes once the replies owed are read */
        }
        am2z_reply_clear(reply);
        /* r itself while it owes nothing and still serves that node; else the side connection */
        if (asking || port != r->desc.port || strcmp(host, r->host) != 0 || r->fd < 0 || r->pending || r->moved)
            c = am2z__redis_side_for(r, host, port, cap, &st);
        if (c) st = am2z__redis_send_raw(c, asking, cmd, len, deadline, reply);
        else if (st == AM2Z_STATUS_SERVER) st = AM2Z_STATUS_IO; /* the node refused AUTH: no reply to give */
        sends++;
        if (st == AM2Z_STATUS_OK) return st;
        if (st != AM2Z_STATUS_SERVER) {
            /* as any failed command: r closes (the detail, already recorded, names the node) */
            char why[300];
            snprintf(why, sizeof why, "%s", am2z_status_detail());
            am2z__redis_close(r);
            return am2z__fail(st, AM2Z_NTS, "%s", why);
        }
    }
}

/* Reads one reply owed (am2z__redis_read1); on a cluster connection takes the copy of its
   command off r->sent and follows a redirection (am2z__redis_redo). */
static am2z_status am2z__redis_read(am2z_redis *r, am2z_reply *reply, int64_t deadline) {
    am2z_status st = am2z__redis_read1(r, reply, deadline);
    const char *cmd = NULL;
    size_t len = 0;
    if (!r->cnodes || (st != AM2Z_STATUS_OK && st != AM2Z_STATUS_SERVER)) return st;
    if (r->sent_at < r->sent.len) { /* none for the connect's own commands */
        memcpy(&len, r->sent.data + r->sent_at, sizeof len);
        cmd = r->sent.data + r->sent_at + sizeof len;
        r->sent_at += sizeof len + len;
    }
    if (st == AM2Z_STATUS_SERVER && strncmp(am2z_reply_str(reply), "MOVED ", 6) == 0) r->moved = 1;
    if (st == AM2Z_STATUS_SERVER && cmd && am2z__redis_redirected(reply)) st = am2z__redis_redo(r, reply, cmd, len, deadline);
    if (r->fd >= 0 && !r->pending) {
        r->sent.len = 0;
        r->sent_at = 0;
        if (r->moved) {
            /* the slot moved: the next command or connect asks the nodes where it went */
            r->moved = 0;
            r->reconnect_once = 1;
            am2z__redis_close(r);
        }
    }
    return st;
}

#undef AM2Z__SEND_FLAGS
#undef AM2Z__READ_CHUNK
#undef AM2Z__DIRECT_CHUNK

#undef am2z__ror32
#undef am2z__S0
#undef am2z__S1
#undef am2z__s0
#undef am2z__s1
#undef am2z__W
#undef am2z__W0
#undef am2z__RND
#undef am2z__RND8
#undef am2z__IS_AGGREGATE
#undef AM2Z__SHA_X86

/* ==== 4. queue runtime ================================================================ */
/* Design (the why; the header's section 4 prose has the what, in the same parts 4.1-4.9):
   - A waiter (am2z__qwait) is registered in a hash table keyed by execution id before its
     job is added. Whoever delivers (a worker of this process, the receiver thread, the
     foreign poll, a timeout, a cancel) first TAKES it out of the table under the table
     lock; only the taker writes the result and signals, so a result is delivered once
     and a late one finds nothing and is dropped. The waiter is reference counted between
     the table and its owner.
   - Worker threads keep a snapshot of the served queues (refcounted queue objects) and
     refresh it when the generation counter moves; a session queue is served once this
     process used it or a wake key named it.
   - A job that runs here is a am2z__qrun on the running thread's stack, linked in a list
     the maintenance thread reads (under runmu) to renew locks and poll cancel keys; it
     flags runs by pointer and token, so a finished run is never touched.
   - Scripts never create a queue's keys except when adding a job, so a stopped session's
     late finishes, renewals and scans leave nothing behind.
   - Stop never waits on Redis to wake its threads: each thread publishes a dup of its
     socket while it sits in a blocking command (am2z__qguard), and stop shuts those
     sockets down. Waking through Redis took a blocking command's whole timeout whenever
     Redis had restarted (the pooled connection that carried the wake-up was stale).
   - Due times are kept by the maintenance thread (a condition variable, ms precise),
     not by Redis's timeouts of blocked commands (only as precise as its hz). */

/* ---- 4.1 layout: names, keys and the runtime's objects ------------------------------- */

#define AM2Z__QMAGIC 0x51754531u
#define AM2Z__QBUCKETS 1024
#define AM2Z__QCTL_TTL_MS 2000 /* life of a worker wake-up key nobody popped */
/* following events streams for jobs finished by foreign workers (4.5) */
#define AM2Z__QEV_LINGER_MS 5000   /* a queue stays followed this long after its last waiter */
#define AM2Z__QEV_FOREIGN_MS 10000 /* ... while a BullMQ worker of it was seen this recently */
#define AM2Z__QEV_SLACK_MS 1000    /* a cursor starts this long before its first waiter */
#define AM2Z__QEV_BLOCK_MS 100     /* the reader's XREAD BLOCK: how soon it follows a new queue */
#define AM2Z__QEV_COUNT 512        /* entries per XREAD */
#define AM2Z__QCLIENTS_MS 2000     /* CLIENT LIST scan period */
#define AM2Z__QEV_LISTENER_MS 10000 /* added/waiting/active written while a QueueEvents was seen this recently */


/* -- growable string (JSON and keys); any failure is sticky in bad -- */
typedef struct am2z__qsb { char *p; size_t n, cap; int bad; } am2z__qsb;

/* Zeroed structs that C and C++ both accept as initialisers. */
static am2z__qsb am2z__qsb0(void) { am2z__qsb b; memset(&b, 0, sizeof b); return b; }
static am2z_reply am2z__qrep0(void) { am2z_reply r; memset(&r, 0, sizeof r); return r; }

static void am2z__qsb_put(am2z__qsb *b, const char *s, size_t n) {
    if (b->bad) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        char *np;
        while (cap < b->n + n + 1) {
            if (cap > ((size_t)-1) / 4) { b->bad = 1; return; }
            cap *= 2;
        }
        np = (char *)am2z__realloc(b->p, cap);
        if (!np) { b->bad = 1; return; }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void am2z__qsb_str(am2z__qsb *b, const char *s) { am2z__qsb_put(b, s, strlen(s)); }
static void am2z__qsb_i64(am2z__qsb *b, int64_t v) {
    char t[24];
    snprintf(t, sizeof t, "%lld", (long long)v);
    am2z__qsb_str(b, t);
}
/* s as a JSON string literal. */
static void am2z__qsb_jstr(am2z__qsb *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    const char *run = s;
    am2z__qsb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        am2z__qsb_put(b, run, (size_t)(s - run));
        if (c == '"') am2z__qsb_put(b, "\\\"", 2);
        else if (c == '\\') am2z__qsb_put(b, "\\\\", 2);
        else {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            am2z__qsb_put(b, e, 6);
        }
        run = s + 1;
    }
    am2z__qsb_put(b, run, (size_t)(s - run));
    am2z__qsb_put(b, "\"", 1);
}
/* A value's compact JSON ("null" for NULL). */
static void am2z__qsb_json(am2z__qsb *b, const am2z_value *v) {
    size_t n = 0;
    char *t;
    if (!v) { am2z__qsb_str(b, "null"); return; }
    t = am2z_json_write(v, AM2Z_JSON_COMPACT, &n);
    if (!t) { b->bad = 1; return; }
    am2z__qsb_put(b, t, n);
    am2z__free(t);
}
static void am2z__qsb_free(am2z__qsb *b) { am2z__free(b->p); memset(b, 0, sizeof *b); }

/* Processor and session names: 1..AM2Z_NAME_MAX bytes of [A-Za-z0-9_.-]. */
static int am2z__qname_ok(const char *s) {
    size_t n = 0;
    if (!s || !*s) return 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return 0;
        if (n >= AM2Z_NAME_MAX) return 0;
    }
    return 1;
}
/* The BullMQ prefix: printable, no spaces. */
static int am2z__qprefix_ok(const char *s) {
    if (!s || !*s || strlen(s) > AM2Z_NAME_MAX) return 0;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f) return 0;
    return 1;
}

static char *am2z__qcat(const char *a, const char *b, const char *c, const char *d) {
    am2z__qsb s = am2z__qsb0();
    am2z__qsb_str(&s, a);
    if (b) am2z__qsb_str(&s, b);
    if (c) am2z__qsb_str(&s, c);
    if (d) am2z__qsb_str(&s, d);
    if (s.bad) { am2z__qsb_free(&s); return NULL; }
    if (!s.p) return am2z__strdup("");
    return s.p;
}

static void am2z__qsleep_ms(int64_t ms) {
    struct timespec ts;
    if (ms <= 0) return;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms % 1000) * 1000000);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* -- the runtime's objects -- */

/* What this process knows about a registered processor. */
typedef struct am2z__qproc {
    int refs;                   /* atomic */
    struct am2z__qproc *next;
    char *name;
    char *wake_key;             /* <C>wake:<name>: sessions of it with new jobs */
    int limit;                  /* per-process concurrency; 0 = none */
    int running;                /* atomic: slots taken */
} am2z__qproc;

/* One BullMQ queue: a processor's global queue, or its queue in one session. */
typedef struct am2z__qqueue {
    int refs;                   /* atomic */
    struct am2z__qqueue *hnext;
    char *name;                 /* <prefix>~<proc>[~<session>] */
    char *P;                    /* <bull>:<name>: */
    char *marker;
    char *proc;
    char *session;              /* NULL: global */
    char *wk, *wm;              /* wake key and member; "" for a global queue */
    char *sset;                 /* <C>session:<sid>, "" for a global queue */
    int served;                 /* workers of this process block on it (under q->mu) */
    int64_t next_due;           /* atomic: earliest delayed job we know of (ms), 0: none */
    int64_t last_promote;       /* atomic */
    int64_t woke_due;           /* atomic: the next_due the maintenance thread woke a worker for */
    /* following its events stream for jobs finished by foreign workers (4.5) */
    int nwait;                  /* atomic: waiters of this process on its jobs */
    int64_t wait_since;         /* atomic: when nwait last left 0 (ms) */
    int64_t last_wait;          /* atomic: the latest waiter's submission (ms) */
    int64_t foreign_ms;         /* atomic: when a BullMQ worker of it was last seen (ms), 0 never */
    int64_t listened_ms;        /* atomic: when a QueueEvents of it was last seen (ms), 0 never */
    int scanned;                /* atomic: its first waiter had CLIENT LIST looked at */
    char cursor[48];            /* the events reader's: last stream id read ("" not followed) */
    int64_t take_k;             /* atomic: jobs per round the last thread serving it ended with
                                   (0: none yet); a woken thread takes at most this many */
    int nidle;                  /* atomic: threads of this process registered idle on it (HAND-OFF) */
    int64_t added_ms;           /* atomic: when this process last added a job to it (ms), 0 never */
} am2z__qqueue;

typedef struct am2z__qnotify { am2z__mutex mu; am2z__cond cv; } am2z__qnotify;

struct am2z__qrt;

/* A caller waiting for one execution (a top-level submit or a child of a running job). */
typedef struct am2z__qwait {
    struct am2z_execution base; /* what submit hands out */
    struct am2z__qrt *q;
    int refs;                   /* atomic: the waiter table's and the owner's */
    struct am2z__qwait *hnext;  /* table chain (under q->wmu) */
    am2z__qnotify *nt;          /* signalled on delivery: own, or a call_many group's */
    am2z__qnotify own;
    int done;                   /* under nt->mu */
    char id[64];
    am2z__qqueue *qu;           /* retained */
    char *session;
    am2z_state *input;          /* retained: the failure state when there is no partial one */
    int64_t submitted_ms, started_ns, deadline_ns;
    int taken;                  /* the owner has taken the outcome */
    /* the outcome: handed over directly, or as JSON from another process */
    am2z_state *state;
    am2z_error *error;
    am2z_error **errs;
    size_t nerrs;
    int attempts;
    char *raw;
    size_t raw_len;
    int trace;                  /* top-level and traced: collect its spans (TRACES) */
    size_t trace_max;           /* am2z_submit_desc.trace_max_spans */
    int durable;                /* a durable execution (4.11): its deadline cancels nothing */
} am2z__qwait;

struct am2z__qworker;

/* Why a running job ends early (am2z__qrun.cancelled, am2z__qrun_cancelled). */
typedef enum am2z__qcancel {
    AM2Z__QCANCEL_NONE = 0,
    AM2Z__QCANCEL_KEY,          /* its cancel key is set: the caller gave up, its session or parent stopped */
    AM2Z__QCANCEL_LOCK_LOST,    /* its lock is not ours any more: another worker owns the job */
    AM2Z__QCANCEL_STOPPING,     /* this runtime is stopping: the job goes back to its queue */
    AM2Z__QCANCEL_DEADLINE      /* the attempt's timeout or the execution's deadline passed */
} am2z__qcancel;

/* A job running on this process (for lock renewal and cancellation). */
typedef struct am2z__qrun {
    struct am2z__qrun *next, *prev;
    struct am2z__qrun *parent;  /* the run that claimed this child inline */
    struct am2z__qworker *w;
    am2z__qqueue *qu;
    const char *id;
    const char *exec_id;
    const char *session;
    char token[64];
    int cancelled;              /* atomic am2z__qcancel, set once (NONE -> a reason) */
    int64_t deadline_ns;        /* this attempt's; 0 none */
    int depth;
    am2z_logger *child;         /* the ctx's child logger, made on first use */
    am2z_ctx ctx;
    const char *trace_root;     /* the traced execution this run belongs to, or NULL */
} am2z__qrun;

/* A success waiting for the next complete call (several jobs finish in one call). */
typedef struct am2z__qdone {
    char *id, *token, *rv, *rkey, *head;
    size_t rvn, headn;
    char atm[24], kc[24], ka[24];
    char exec_id[64];
    am2z_state *state;          /* handed over in-process after the call when direct */
    am2z_error **errs;
    size_t nerrs;
    int attempts, direct;
} am2z__qdone;

typedef struct am2z__qbatch {
    am2z__qdone d[AM2Z_QUEUE_BATCH];
    size_t n;
} am2z__qbatch;

/* A thread's connection that stop can cut loose: while the thread waits in a blocking
   command (BZPOPMIN, BLMPOP) it publishes a dup of its socket here, and stop shuts that
   socket down, so the wait ends at once whatever Redis does (restarted, gone, hung).
   Under q->cutmu. The dup stays open until the thread leaves the wait, so stop never
   shuts down a descriptor number that was reused meanwhile. */
typedef struct am2z__qguard {
    int fd;                     /* the dup while waiting; -1 otherwise */
    int cut;                    /* stop began: no new wait */
} am2z__qguard;

typedef struct am2z__qworker {
    struct am2z__qrt *q;
    int index;
    am2z__thread thread;
    am2z_redis *conn;
    char *ctl;                  /* <C>ctl:<instance>:<index> */
    am2z__qguard guard;
    am2z__qqueue **snap;        /* served queues, retained */
    size_t nsnap;
    am2z__qproc **procs;        /* registered processors, retained */
    size_t nprocs;
    unsigned gen;
    size_t rot;
    size_t k;                   /* jobs taken per round (adaptive, 1..AM2Z_QUEUE_BATCH) */
    am2z__qbatch batch;
    /* HAND-OFF (4.4): the queue this thread last emptied (retained), where it registers as
       idle when it blocks; its registration now (reg_key owned, NULL: none; reg_member
       "<token>|<ctl>"); a reader for the jobs handed to it (owned, made on first use) */
    am2z__qqueue *idle_qu;
    am2z__qqueue *reg_qu;       /* retained while registered */
    char *reg_key;
    char reg_member[192];       /* "<token>|<lock ms>|<ctl>": the job's lock is this worker's */
    int64_t reg_ms;             /* when the registration was last written (epoch ms) */
    int handed;                 /* the job am2z__qblock took was handed to this thread */
    am2z_resp_reader *hrd;
} am2z__qworker;

typedef struct am2z__qrt {
    uint32_t magic;
    am2z_runtime *rt;
    am2z_logger *logger;
    /* configuration */
    am2z_redis_desc rdesc;
    char *r_host, *r_unix, *r_user, *r_pass;
    char *prefix, *bull;
    char *C;                    /* <bull>:<prefix>: */
    char *reply_key;
    char *taken_key;            /* results the receiver took and may not have delivered yet */
    char *sessions_key;
    char instance[17];
    int nworkers;
    int64_t lock_ms, stalled_ms, cancel_poll_ms, foreign_poll_ms, reply_ttl_ms, cancel_ttl_ms;
    int max_stalled, max_depth;
    int events;                 /* 0 none, 1 finishes (all while a QueueEvents listens), 2 all */
    int64_t default_timeout_ms;
    int64_t keep_c, keep_c_age, keep_f, keep_f_age;
    char lock_s[24], reply_ttl_s[24];
    am2z_redis_pool *pool;
    am2z_redis_script *s_add, *s_fetch, *s_complete, *s_fail, *s_retry, *s_extend, *s_stalled,
        *s_claim, *s_drop, *s_cancelq, *s_state, *s_due, *s_remove, *s_take;
    /* registry of queues and processors (mu) */
    am2z__mutex mu;
    am2z__qqueue *queues[AM2Z__QBUCKETS];
    am2z__qproc *procs;
    char **sessions;            /* sessions used from this process (for session:created) */
    size_t nsessions, capsessions;
    unsigned gen;               /* atomic: bumped when the served set changes */
    /* waiters (wmu) */
    am2z__mutex wmu;
    am2z__qwait *waiters[AM2Z__QBUCKETS];
    size_t nwaiters;
    /* running jobs (runmu) */
    am2z__mutex runmu;
    am2z__qrun runs;            /* list head */
    int nruns;
    /* threads */
    int running;                /* atomic: 1 between start and stop */
    int rx_stop;                /* atomic: receiver and maintenance end (after the workers) */
    am2z__qworker *workers;
    am2z__thread receiver, maint;
    int have_threads;
    am2z__mutex cutmu;      /* the guards */
    am2z__qguard rguard;        /* the receiver's */
    am2z_redis *rconn, *mconn;
    am2z__qnotify mnt;          /* wakes the maintenance thread */
    int due_changed;            /* under mnt.mu: a queue's next_due moved earlier */
    uint64_t token_seq;         /* atomic */
    int64_t started_ms;
    int64_t n_completed, n_failed, n_retried, n_running; /* atomic counters */
    /* published settings: the cache of every processor used or declared here (setmu) */
    am2z__mutex setmu;
    struct am2z__qpub *pubs;
    int64_t settings_refresh_ms;
    am2z_redis_script *s_settings;
    int64_t n_missing;          /* atomic: ids taken from a queue whose job hash was gone */
    int64_t down_since, down_next; /* atomic: outage start (monotonic ns; 0: up), next report (s) */
    int abort_pipe[2];          /* written when a stop gives up on Redis: every wait then fails */
    int aborted;                /* the stopping thread's: abort_pipe holds a byte */
    int64_t n_live_workers, n_live_aux; /* atomic: worker threads, receiver + maintenance + events reader still running */
    char **late;                /* under mnt.mu: cancel keys for the maintenance thread to set */
    size_t nlate, caplate;
    /* BullMQ parity (4.5): the events reader, worker presence, progress */
    am2z_redis_script *s_progress;
    am2z__thread evreader;
    am2z_redis *econn;          /* the events reader's (blocking) */
    am2z__qguard eguard;
    am2z__qnotify ent;          /* wakes the events reader when it follows nothing */
    int64_t skew_ms;            /* Redis's clock minus ours, measured by the reader */
    int clients_denied;         /* atomic: CLIENT LIST refused: follow every waited queue */
    am2z_redis **pconn;         /* presence connections, one per registered processor's queue */
    char **pname;               /* their client names */
    size_t npres;               /* maintenance thread only */
    int64_t last_wait_ms;       /* atomic: the latest waiter's submission */
    int64_t clients_ms;         /* atomic: the last CLIENT LIST scan (ms) */
    /* schedules (4.10) */
    am2z__sched_timer *sched_timer; /* processes with workers: claims due slots */
    am2z_redis_script *s_sched[3];  /* atomic: upsert, remove, claim; made on first use */
    int session_conc;           /* desc.session_concurrency (published with the settings) */
    am2z_rate session_rate;     /* desc.session_rate (published with the settings) */
    am2z_redis_script *s_breaker; /* circuit breakers (4.4) */
    int trace;                  /* desc.trace */
    /* the schedule timer's (4.10): its connection (blocks in XREAD), guard, and the id of
       the last <C>schedules:wake entry it saw ("": not read yet) */
    am2z_redis *sconn;
    am2z__qguard sguard;
    char sched_cursor[48];
    /* durable executions (4.11) */
    am2z_store *dx_store;       /* the records in Redis; the registry (rt->dreg) uses it */
    am2z_redis_script *s_park, *s_dwake;
    int64_t dx_keep_ms;         /* desc.durable_keep_ms resolved: > 0 the done record's TTL, 0 none */
    am2z_redis_script *s_dput;  /* the done record's write, with its keep */
} am2z__qrt;

static uint32_t am2z__qhash(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 16777619u; }
    return h;
}

static int am2z__qnotify_init(am2z__qnotify *n) {
    return am2z__mutex_cond_init(&n->mu, &n->cv) == 0;
}
static void am2z__qnotify_destroy(am2z__qnotify *n) {
    am2z__cond_destroy(&n->cv);
    am2z__mutex_destroy(&n->mu);
}

static void am2z__qguard_init(am2z__qguard *g) { g->fd = -1; g->cut = 0; }

/* Before a blocking command on r: publishes a dup of its socket. 0 when stop already
   began (the caller skips the wait). */
static int am2z__qguard_enter(am2z__qrt *q, am2z__qguard *g, const am2z_redis *r) {
    int fd = am2z_redis_fd(r), ok;
    am2z__mutex_lock(&q->cutmu);
    ok = !g->cut;
    if (ok) g->fd = fd >= 0 ? dup(fd) : -1;
    am2z__mutex_unlock(&q->cutmu);
    return ok;
}
static void am2z__qguard_leave(am2z__qrt *q, am2z__qguard *g) {
    am2z__mutex_lock(&q->cutmu);
    if (g->fd >= 0) close(g->fd);
    g->fd = -1;
    am2z__mutex_unlock(&q->cutmu);
}
/* Ends g's thread's blocking wait now (its command fails with IO) and refuses new ones. */
static void am2z__qguard_cut(am2z__qrt *q, am2z__qguard *g) {
    am2z__mutex_lock(&q->cutmu);
    g->cut = 1;
    if (g->fd >= 0) shutdown(g->fd, SHUT_RDWR);
    am2z__mutex_unlock(&q->cutmu);
}

/* Notes that qu has a delayed job (or a rate-limit window) due at due (epoch ms); when
   that is the earliest known, the maintenance thread recomputes when to wake a worker. */
static void am2z__qnote_due(am2z__qrt *q, am2z__qqueue *qu, int64_t due) {
    int64_t cur = am2z__atomic_load(&qu->next_due, AM2Z__MO_ACQUIRE);
    if (due <= 0) return;
    while (!cur || due < cur)
        if (am2z__atomic_cas(&qu->next_due, &cur, due, AM2Z__MO_ACQ_REL, AM2Z__MO_ACQUIRE)) {
            am2z__mutex_lock(&q->mnt.mu);
            q->due_changed = 1;
            am2z__cond_broadcast(&q->mnt.cv);
            am2z__mutex_unlock(&q->mnt.mu);
            return;
        }
}

/* The events argument of the scripts for qu: "0" none; "1" the finishes and the rare
   events; "2" also added, waiting and active (three per job), written while a Node
   QueueEvents listens to qu (CLIENT LIST, 4.5), or always with desc.events > 0. */
static const char *am2z__qev_level(am2z__qrt *q, am2z__qqueue *qu) {
    int64_t l;
    if (!q->events) return "0";
    if (q->events == 2 || am2z__atomic_load(&q->clients_denied, AM2Z__MO_ACQUIRE)) return "2";
    l = am2z__atomic_load(&qu->listened_ms, AM2Z__MO_ACQUIRE);
    return l && am2z_now_ms() - l <= AM2Z__QEV_LISTENER_MS ? "2" : "1";
}

static am2z__qrt *am2z__qof(am2z_runtime *rt) {
    am2z__qrt *q = rt ? (am2z__qrt *)am2z_runtime_impl(rt) : NULL;
    return q && q->magic == AM2Z__QMAGIC ? q : NULL;
}

static void am2z__qproc_release(am2z__qproc *p) {
    if (p && am2z__atomic_dec(&p->refs) == 0) {
        am2z__free(p->name);
        am2z__free(p->wake_key);
        am2z__free(p);
    }
}
static void am2z__qqueue_release(am2z__qqueue *u) {
    if (u && am2z__atomic_dec(&u->refs) == 0) {
        am2z__free(u->name); am2z__free(u->P); am2z__free(u->marker); am2z__free(u->proc);
        am2z__free(u->session); am2z__free(u->wk); am2z__free(u->wm); am2z__free(u->sset);
        am2z__free(u);
    }
}

/* Queue name into buf; 0 when it does not fit. */
static int am2z__qqname(const am2z__qrt *q, const char *proc, const char *session, char *buf, size_t size) {
    int n = session ? snprintf(buf, size, "%s~%s~%s", q->prefix, proc, session)
                    : snprintf(buf, size, "%s~%s", q->prefix, proc);
    return n > 0 && (size_t)n < size;
}

/* The queue object of (proc, session): found or made, retained. serve: mark it served
   (workers of this process block on it). NULL when out of memory. */
static am2z__qqueue *am2z__qqueue_get(am2z__qrt *q, const char *proc, const char *session, int serve) {
    char name[3 * AM2Z_NAME_MAX + 8];
    uint32_t b;
    am2z__qqueue *u;
    if (!am2z__qqname(q, proc, session, name, sizeof name)) return NULL;
    b = am2z__qhash(name, strlen(name)) % AM2Z__QBUCKETS;
    am2z__mutex_lock(&q->mu);
    for (u = q->queues[b]; u; u = u->hnext)
        if (strcmp(u->name, name) == 0) break;
    if (!u) {
        u = (am2z__qqueue *)am2z__malloc(sizeof *u);
        if (u) {
            memset(u, 0, sizeof *u);
            u->refs = 1;
            u->name = am2z__strdup(name);
            u->P = am2z__qcat(q->bull, ":", name, ":");
            u->marker = am2z__qcat(q->bull, ":", name, ":marker");
            u->proc = am2z__strdup(proc);
            u->session = session ? am2z__strdup(session) : NULL;
            u->wk = session ? am2z__qcat(q->C, "wake:", proc, NULL) : am2z__strdup("");
            u->wm = am2z__strdup(session ? session : "");
            u->sset = session ? am2z__qcat(q->C, "session:", session, NULL) : am2z__strdup("");
            if (!u->name || !u->P || !u->marker || !u->proc || (session && !u->session) || !u->wk ||
                !u->wm || !u->sset) {
                am2z__qqueue_release(u);
                u = NULL;
            } else {
                u->hnext = q->queues[b];
                q->queues[b] = u;
            }
        }
    }
    if (u) {
        if (serve && !u->served && q->nworkers > 0) {
            u->served = 1;
            am2z__atomic_inc(&q->gen);
        }
        am2z__atomic_inc(&u->refs);
    }
    am2z__mutex_unlock(&q->mu);
    return u;
}

/* Forgets a queue (stop_session, unregister); holders keep their references. */
static void am2z__qqueue_forget(am2z__qrt *q, const char *name) {
    uint32_t b = am2z__qhash(name, strlen(name)) % AM2Z__QBUCKETS;
    am2z__qqueue **pp, *u = NULL;
    am2z__mutex_lock(&q->mu);
    for (pp = &q->queues[b]; *pp; pp = &(*pp)->hnext)
        if (strcmp((*pp)->name, name) == 0) { u = *pp; *pp = u->hnext; break; }
    if (u && u->served) am2z__atomic_inc(&q->gen);
    am2z__mutex_unlock(&q->mu);
    am2z__qqueue_release(u);
}

static am2z__qproc *am2z__qproc_find(am2z__qrt *q, const char *name) {
    am2z__qproc *p;
    am2z__mutex_lock(&q->mu);
    for (p = q->procs; p; p = p->next)
        if (strcmp(p->name, name) == 0) { am2z__atomic_inc(&p->refs); break; }
    am2z__mutex_unlock(&q->mu);
    return p;
}

/* Takes a concurrency slot of p; 0 when it is at its limit. */
static int am2z__qproc_reserve(am2z__qproc *p) {
    if (!p || p->limit <= 0) return 1;
    if (am2z__atomic_inc(&p->running) <= p->limit) return 1;
    am2z__atomic_dec(&p->running);
    return 0;
}
static void am2z__qproc_unreserve(am2z__qproc *p) {
    if (p && p->limit > 0) am2z__atomic_dec(&p->running);
}
static int am2z__qproc_full(am2z__qproc *p) {
    return p && p->limit > 0 && am2z__atomic_load(&p->running, AM2Z__MO_ACQUIRE) >= p->limit;
}

/* A fetched job: the script's reply {1, id, ats, cancel, name, data, opts, atm, stc,
   defa, stacktrace, timestamp}, the queue and the lock token. */
typedef struct am2z__qjob {
    am2z_reply rep;
    am2z__qqueue *qu;
    char token[64];
} am2z__qjob;

enum { AM2Z__QJ_ID = 1, AM2Z__QJ_ATS, AM2Z__QJ_CANCEL, AM2Z__QJ_NAME, AM2Z__QJ_DATA, AM2Z__QJ_OPTS,
       AM2Z__QJ_ATM, AM2Z__QJ_STC, AM2Z__QJ_DEFA, AM2Z__QJ_STACK, AM2Z__QJ_TS, AM2Z__QJ_COUNT };

static const char *am2z__qel(const am2z_reply *r, size_t i, size_t *len) {
    const am2z_reply *e = am2z_reply_at(r, i);
    if (!e || (e->type != AM2Z_REPLY_BULK && e->type != AM2Z_REPLY_STRING && e->type != AM2Z_REPLY_VERBATIM)) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = e->len;
    return am2z_reply_str(e);
}
/* Every number read from Redis may have been written by anyone (a hand-made job, a
   broken client): it is parsed whole (decimal, or a number with a fraction or exponent
   as Lua writes big ones), clamped into lo..hi, and def when it is no number at all. */
#define AM2Z__QMAX_MS ((int64_t)253402300799999) /* epoch ms of the last moment of 9999 */
#define AM2Z__QMAX_COUNT ((int64_t)1000000)      /* attempts, stalls: more than any policy allows */
static int64_t am2z__qnum(const char *s, size_t n, int64_t lo, int64_t hi, int64_t def) {
    char buf[64], *end = NULL;
    double d;
    size_t i = s && n && (s[0] == '-' || s[0] == '+') ? 1 : 0;
    int64_t v = 0;
    if (!s || n == 0 || n >= sizeof buf) return def;
    if (i < n && s[i] >= '0' && s[i] <= '9') {
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            v = v > (INT64_MAX - 9) / 10 ? INT64_MAX : v * 10 + (s[i] - '0');
        if (i == n) {
            if (s[0] == '-') v = -v; /* -INT64_MAX at worst: no overflow */
            return v < lo ? lo : v > hi ? hi : v;
        }
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    d = strtod(buf, &end);
    if (end != buf + n || d != d) return def;
    /* compared as doubles first: converting an out-of-range double is undefined */
    if (d <= (double)lo) return lo;
    if (d >= (double)hi) return hi;
    return (int64_t)d;
}
static int64_t am2z__qel_num(const am2z_reply *r, size_t i, int64_t lo, int64_t hi, int64_t def) {
    const am2z_reply *e = am2z_reply_at(r, i);
    if (!e) return def;
    if (e->type == AM2Z_REPLY_INTEGER) return e->integer < lo ? lo : e->integer > hi ? hi : e->integer;
    if (e->type == AM2Z_REPLY_BULK || e->type == AM2Z_REPLY_STRING) return am2z__qnum(am2z_reply_str(e), e->len, lo, hi, def);
    return def;
}
/* A number of our own scripts' replies (codes, counts): any int64, 0 when none. */
static int64_t am2z__qel_int(const am2z_reply *r, size_t i) { return am2z__qel_num(r, i, INT64_MIN, INT64_MAX, 0); }

AM2Z_API am2z_status am2z_queue_name(am2z_runtime *rt, const char *processor, const char *session_id, char *buf,
                                     size_t size) {
    am2z__qrt *q = am2z__qof(rt);
    if (!q || !buf || !am2z__qname_ok(processor) || (session_id && !am2z__qname_ok(session_id)))
        return AM2Z_STATUS_INVALID_ARGUMENT;
    return am2z__qqname(q, processor, session_id, buf, size) ? AM2Z_STATUS_OK : AM2Z_STATUS_LIMIT;
}

AM2Z_API const char *am2z_queue_instance_id(am2z_runtime *rt) {
    am2z__qrt *q = am2z__qof(rt);
    return q ? q->instance : NULL;
}

/* ---- 4.2 scripts: one Lua script per transition, and how they run -------------------- */

/* The Lua scripts, one line per string (C99 compilers need only accept 4095-byte
   literals). Each script is lib + its body; the C side passes ARGV in the documented order.
   A job's states are BullMQ's: wait / prioritized / delayed -> active (locked) ->
   completed / failed, or back to wait / delayed (retry, stalled). */
/* The library every script below starts with: num, bulk, jobkeys; ready (-> wait or
   prioritized), wake (marker and wake key), promote (due delayed -> ready), delaymark;
   take (lock a job now in active), fetch (wait / prioritized -> active); release (a
   finishing job's lock); keep (retention); reply (to a caller's list); event (the BullMQ
   events stream); dropsession (every key of a session). */
static const char *const am2z__qlua_lib[] = {
    "local function num(x) return string.format('%.0f', x) end",
    "-- A count read from a hash another client may have written: an integer in 0..hi, or",
    "-- nil when it is no number at all (nan, inf and text included).",
    "local function int(x, hi)",
    "  local n = tonumber(x)",
    "  if not n or n ~= n or n == math.huge or n == -math.huge then return nil end",
    "  return math.min(math.max(math.floor(n), 0), hi)",
    "end",
    "-- An entry of the queue's events stream (BullMQ's field names), trimmed as BullMQ trims:",
    "-- approximately, to meta opts.maxLenEvents (read once per queue and script call).",
    "local EVMAX = {}",
    "local function event(P, on, ...)",
    "  if on ~= '1' and on ~= '2' then return end",
    "  local m = EVMAX[P]",
    "  if not m then",
    "    m = int(redis.call('HGET', P .. 'meta', 'opts.maxLenEvents'), 1000000000) or 10000",
    "    EVMAX[P] = m",
    "  end",
    "  redis.call('XADD', P .. 'events', 'MAXLEN', '~', m, '*', 'event', ...)",
    "end",
    "-- added, waiting and active: three entries per job, only at level '2' (a listener).",
    "local function busy(P, on, ...)",
    "  if on == '2' then event(P, on, ...) end",
    "end",
    "-- cmd [key] list..., 500 arguments per call (unpack has a small stack).",
    "local function bulk(cmd, key, list)",
    "  for i = 1, #list, 500 do",
    "    local j = math.min(i + 499, #list)",
    "    if key then redis.call(cmd, key, unpack(list, i, j)) else redis.call(cmd, unpack(list, i, j)) end",
    "  end",
    "end",
    "local function jobkeys(P, C, ids, out)",
    "  for i = 1, #ids do",
    "    local id = ids[i]",
    "    out[#out + 1] = P .. id",
    "    out[#out + 1] = P .. id .. ':lock'",
    "    out[#out + 1] = P .. id .. ':logs'",
    "    out[#out + 1] = C .. 'cancel:' .. id",
    "  end",
    "end",
    "local function ready(P, id, prio)",
    "  if prio > 0 then",
    "    local pc = redis.call('INCR', P .. 'pc') % 4294967296",
    "    redis.call('ZADD', P .. 'prioritized', num(prio * 4294967296 + pc), id)",
    "  else",
    "    redis.call('LPUSH', P .. 'wait', id)",
    "  end",
    "end",
    "-- Numbers passed to redis.call cost Redis a printf each (Redis 7.0): constants are strings.",
    "local function wake(P, wk, wm)",
    "  redis.call('ZADD', P .. 'marker', '0', '0')",
    "  if wk ~= '' then redis.call('ZADD', wk, '0', wm) end",
    "end",
    "-- A job left active: with a global concurrency (meta concurrency) a worker that found",
    "-- the queue full went back to sleep, so a freed slot wakes one while jobs wait.",
    "local blocked -- (P, wm): the queue waits for a processor slot (PROCESSOR-WIDE CAP below)",
    "local function freed(P, wk, wm)",
    "  if blocked(P, wm) then return end -- a freed processor slot wakes it (give), not its own",
    "  local m = redis.call('HMGET', P .. 'meta', 'paused', 'concurrency')",
    "  local cap = int(m[2], 1000000)",
    "  if m[1] or not cap or redis.call('LLEN', P .. 'active') >= cap then return end",
    "  if redis.call('LLEN', P .. 'wait') > 0 or redis.call('EXISTS', P .. 'prioritized') == 1 then wake(P, wk, wm) end",
    "end",
    "-- PROCESSOR-WIDE CAP (LIMITS in 4.3): a processor's global concurrency (its global queue's",
    "-- meta concurrency) counts its jobs in all its queues, session queues included. G..",
    "-- 'am2z:running' (zset, score: when last seen alive) holds '<queue P><id>' of each job a",
    "-- fetch took under the cap; the job's lock is its lease, so an entry whose lock is gone",
    "-- frees its slot although no script removed it (a worker killed mid-job): the set",
    "-- cannot drift. G..'am2z:blocked' (zset by time) holds the queues (session id, '' for",
    "-- G) that found the cap full: they get the next free slots, oldest first.",
    "local SLOTS = {}",
    "local function slots(P)",
    "  local s = SLOTS[P]",
    "  if s == nil then",
    "    local b, pre, proc = string.match(P, '^(.*:)([%w_.-]+)~([%w_.-]+)[^:]*:$')",
    "    s = false",
    "    if b then",
    "      local G = b .. pre .. '~' .. proc .. ':'",
    "      s = {G = G, run = G .. 'am2z:running', blk = G .. 'am2z:blocked', wk = b .. pre .. ':wake:' .. proc}",
    "    end",
    "    SLOTS[P] = s",
    "  end",
    "  return s",
    "end",
    "blocked = function(P, wm)",
    "  local s = slots(P)",
    "  return s and redis.call('ZSCORE', s.blk, wm) ~= false",
    "end",
    "local function squeue(s, sid) if sid == '' then return s.G end return string.sub(s.G, 1, -2) .. '~' .. sid .. ':' end",
    "-- Entries not seen alive for ms have their lock looked at: gone, the slot is freed.",
    "-- Returns how many were freed.",
    "local function reap(s, now, ms)",
    "  local old = redis.call('ZRANGEBYSCORE', s.run, '-inf', num(now - ms), 'LIMIT', 0, 1000)",
    "  local n = 0",
    "  for i = 1, #old do",
    "    if redis.call('EXISTS', old[i] .. ':lock') == 1 then redis.call('ZADD', s.run, now, old[i])",
    "    else redis.call('ZREM', s.run, old[i]); n = n + 1 end",
    "  end",
    "  return n",
    "end",
    "-- Slots in use; a full set is reaped first (so a fetch below the cap pays one ZCARD).",
    "local function inuse(s, cap, now, lockms)",
    "  local n = redis.call('ZCARD', s.run)",
    "  if n < cap then return n end",
    "  return n - reap(s, now, lockms)",
    "end",
    "-- The first n blocked queues that could start a job now (not paused, below their own",
    "-- cap and rate, jobs waiting); the others leave the list (their own wake-ups remain).",
    "local function heads(s, n)",
    "  local out = {}",
    "  while #out < n do",
    "    local b = redis.call('ZRANGE', s.blk, #out, n - 1)",
    "    if #b == 0 then break end",
    "    for j = 1, #b do",
    "      local Q = squeue(s, b[j])",
    "      local m = redis.call('HMGET', Q .. 'meta', 'paused', 'concurrency', 'max')",
    "      local c, mx = int(m[2], 1000000), int(m[3], 1000000000)",
    "      if not m[1] and (not c or redis.call('LLEN', Q .. 'active') < c) and",
    "         (not mx or (int(redis.call('GET', Q .. 'limiter'), 1000000000) or 0) < mx) and",
    "         (redis.call('LLEN', Q .. 'wait') > 0 or redis.call('EXISTS', Q .. 'prioritized') == 1) then",
    "        out[#out + 1] = b[j]",
    "      else redis.call('ZREM', s.blk, b[j]) end",
    "    end",
    "  end",
    "  return out",
    "end",
    "-- How many of k jobs queue P (session wm) may take under its processor's cap: the free",
    "-- slots not owed to queues blocked before it. 0 puts it in the blocked list.",
    "local function gate(P, wm, k, now, lockms, own)",
    "  local s = slots(P)",
    "  local cap = own -- the global queue's own meta concurrency, read by fetch already",
    "  if s and wm ~= '' then cap = int(redis.call('HGET', s.G .. 'meta', 'concurrency'), 1000000) end",
    "  if not s or not cap then return k end",
    "  local free = cap - inuse(s, cap, tonumber(now), tonumber(lockms))",
    "  if free > 0 and redis.call('EXISTS', s.blk) == 1 then",
    "    local h = heads(s, free)",
    "    local ahead = #h",
    "    for i = 1, #h do if h[i] == wm then ahead = i - 1; break end end",
    "    free = free - ahead",
    "    -- they are woken again (a marker is set once), so a lost wake-up cannot hold slots",
    "    if free <= 0 then for i = 1, ahead do wake(squeue(s, h[i]), h[i] == '' and '' or s.wk, h[i]) end end",
    "  end",
    "  if free <= 0 then redis.call('ZADD', s.blk, 'NX', now, wm); return 0, true end",
    "  return math.min(k, free), true",
    "end",
    "-- Jobs of queue P (session wm) took slots of its processor's cap (gate said there is one).",
    "local function held(P, wm, ids, now)",
    "  local s = slots(P)",
    "  local sc = {}",
    "  for i = 1, #ids do sc[#sc + 1] = now; sc[#sc + 1] = P .. ids[i] end",
    "  redis.call('ZADD', s.run, unpack(sc))",
    "  redis.call('ZREM', s.blk, wm)",
    "end",
    "-- n slots were freed: the first n blocked queues that can use one are woken.",
    "local function give(s, n)",
    "  if n == 0 or redis.call('EXISTS', s.blk) == 0 then return end",
    "  local h = heads(s, n)",
    "  for i = 1, #h do wake(squeue(s, h[i]), h[i] == '' and '' or s.wk, h[i]) end",
    "end",
    "-- Jobs of queue P left active: their slots go to the blocked queues, oldest first (a",
    "-- worker of session A is woken by a job of session B that ended).",
    "local function unslot(P, ids)",
    "  local s = slots(P)",
    "  if not s or #ids == 0 then return end",
    "  local keys = {}",
    "  for i = 1, #ids do keys[i] = P .. ids[i] end",
    "  local n = 0",
    "  for i = 1, #keys, 500 do n = n + redis.call('ZREM', s.run, unpack(keys, i, math.min(i + 499, #keys))) end",
    "  give(s, n)",
    "end",
    "-- The stalled scan's repair: slots of dead workers (leases gone) go to blocked queues",
    "-- even when no fetch comes to reap them.",
    "local function reslot(P, now, ms)",
    "  local s = slots(P)",
    "  if s then give(s, reap(s, now, ms)) end",
    "end",
    "local function promote(P, now, wk, wm, ev)",
    "  local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', 0, num((now + 1) * 4096 - 1), 'LIMIT', 0, 1000)",
    "  if #due == 0 then return end",
    "  redis.call('ZREM', P .. 'delayed', unpack(due))",
    "  for i = 1, #due do",
    "    local id = due[i]",
    "    ready(P, id, int(redis.call('HGET', P .. id, 'priority'), 2097152) or 0)",
    "    redis.call('HSET', P .. id, 'delay', 0)",
    "    busy(P, ev, 'waiting', 'jobId', id, 'prev', 'delayed')",
    "  end",
    "  wake(P, wk, wm)",
    "end",
    "local function delaymark(P)",
    "  local first = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')",
    "  if #first > 0 then",
    "    redis.call('ZADD', P .. 'marker', num(math.floor(tonumber(first[2]) / 4096)), '1')",
    "  end",
    "end",
    "local FIELDS = {'name', 'data', 'opts', 'atm', 'stc', 'defa', 'stacktrace', 'timestamp', 'ats'}",
    "-- Locks a job that is now in active; returns what the C side decodes:",
    "-- {1, id, ats, cancelled, name, data, opts, atm, stc, defa, stacktrace, timestamp}, or",
    "-- {2, id} for an id without a hash (dropped). C '' skips the cancel-key check.",
    "local function take(P, C, id, tok, lockms, now, ev)",
    "  local jk = P .. id",
    "  local f = redis.call('HMGET', jk, unpack(FIELDS))",
    "  if not f[1] and not f[2] then",
    "    redis.call('LREM', P .. 'active', -1, id)",
    "    return {2, id}",
    "  end",
    "  local ats = (int(f[9], 1000000) or 0) + 1",
    "  redis.call('SET', jk .. ':lock', tok, 'PX', lockms)",
    "  redis.call('HSET', jk, 'processedOn', now, 'ats', ats)",
    "  busy(P, ev, 'active', 'jobId', id, 'prev', 'waiting')",
    "  local cancelled = 0",
    "  if C ~= '' then cancelled = redis.call('EXISTS', C .. 'cancel:' .. id) end",
    "  return {1, id, ats, cancelled, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]}",
    "end",
    "-- Takes up to k jobs, oldest first: {3, job...} (each job as take returns it, locked with",
    "-- token tok.<n>), or {0} / {0, due ms of the next delayed job or rate-limit window}.",
    "local function fetch(P, C, tok, lockms, now, prom, wk, wm, k, ev)",
    "  if prom == '1' then promote(P, tonumber(now), wk, wm, ev) end",
    "  local m = redis.call('HMGET', P .. 'meta', 'paused', 'concurrency', 'max', 'duration')",
    "  if m[1] then return {0} end",
    "  local cap = int(m[2], 1000000)",
    "  if cap then",
    "    k = math.min(k, cap - redis.call('LLEN', P .. 'active'))",
    "    if k <= 0 then return {0} end",
    "  end",
    "  local lk = P .. 'limiter'",
    "  local max = int(m[3], 1000000000)",
    "  if max then",
    "    local used = int(redis.call('GET', lk), 1000000000) or 0",
    "    if used >= max then",
    "      local due = num(tonumber(now) + math.max(redis.call('PTTL', lk), 1))",
    "      redis.call('ZADD', P .. 'marker', due, '1')",
    "      return {0, due}",
    "    end",
    "    k = math.min(k, max - used)",
    "  end",
    "  local capped",
    "  k, capped = gate(P, wm, k, now, lockms, cap)",
    "  if k <= 0 then return {0} end",
    "  local order = {}",
    "  local w = redis.call('LRANGE', P .. 'wait', -k, '-1')",
    "  if #w > 0 then redis.call('LTRIM', P .. 'wait', '0', -#w - 1) end",
    "  for i = #w, 1, -1 do order[#order + 1] = w[i] end",
    "  if #order < k then",
    "    local z = redis.call('ZPOPMIN', P .. 'prioritized', k - #order)",
    "    for i = 1, #z, 2 do order[#order + 1] = z[i] end",
    "  end",
    "  if #order == 0 then",
    "    local d = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')",
    "    if #d > 0 then return {0, num(math.floor(tonumber(d[2]) / 4096))} end",
    "    return {0}",
    "  end",
    "  redis.call('LPUSH', P .. 'active', unpack(order))",
    "  if capped then held(P, wm, order, now) end",
    "  if max and redis.call('INCRBY', lk, #order) == #order then",
    "    redis.call('PEXPIRE', lk, math.max(int(m[4], 86400000) or 60000, 1))",
    "  end",
    "  -- more waiting and a free slot: wake the next worker (a full queue is woken by freed)",
    "  if (not cap or redis.call('LLEN', P .. 'active') < cap) and",
    "     (redis.call('LLEN', P .. 'wait') > 0 or redis.call('EXISTS', P .. 'prioritized') == 1) then wake(P, wk, wm) end",
    "  -- one EXISTS for the batch's cancel keys; each job's own only when one is set",
    "  if C ~= '' then",
    "    local ck = {}",
    "    for i = 1, #order do ck[i] = C .. 'cancel:' .. order[i] end",
    "    if redis.call('EXISTS', unpack(ck)) == 0 then C = '' end",
    "  end",
    "  local out = {3}",
    "  for i = 1, #order do out[#out + 1] = take(P, C, order[i], tok .. '.' .. i, lockms, now, ev) end",
    "  return out",
    "end",
    "-- Releases the lock of a finishing job; false when it is no longer ours. It leaves the",
    "-- stalled set too, so no scanner (ours or BullMQ's) can take it for a stalled job.",
    "local function release(P, id, tok)",
    "  local lk = P .. id .. ':lock'",
    "  if redis.call('GET', lk) ~= tok then return false end",
    "  redis.call('DEL', lk)",
    "  redis.call('SREM', P .. 'stalled', id)",
    "  unslot(P, {id})",
    "  return redis.call('LREM', P .. 'active', -1, id) == 1",
    "end",
    "-- After a finish: freed() while jobs wait, else BullMQ's 'drained' when nothing runs",
    "-- either. One read of the queue serves both: freed() has nothing to wake in an empty",
    "-- queue (its slot and meta reads would be wasted on every job of a round trip).",
    "local function settle(P, ev, wk, wm)",
    "  if redis.call('LLEN', P .. 'wait') > 0 or redis.call('EXISTS', P .. 'prioritized') == 1 then return freed(P, wk, wm) end",
    "  if ev ~= '0' and redis.call('LLEN', P .. 'active') == 0 then event(P, ev, 'drained') end",
    "end",
    "-- Retention of jobs just finished into set (their fields written by the caller): count 0",
    "-- deletes them, count < 0 keeps all, age in seconds. One ZADD and ZCARD per batch of",
    "-- jobs; both trims run in batches too (count: when count/16 extra jobs gathered; age:",
    "-- every 16 jobs), so one DEL serves many jobs.",
    "local function keep(P, C, set, ids, now, count, age)",
    "  if count == 0 then",
    "    local keys = {}",
    "    for i = 1, #ids do keys[#keys + 1] = P .. ids[i]; keys[#keys + 1] = P .. ids[i] .. ':logs' end",
    "    bulk('DEL', nil, keys)",
    "    return",
    "  end",
    "  local sc = {}",
    "  for i = 1, #ids do sc[#sc + 1] = now; sc[#sc + 1] = ids[i] end",
    "  bulk('ZADD', P .. set, sc)",
    "  if count < 0 and age <= 0 then return end",
    "  local n = redis.call('ZCARD', P .. set)",
    "  if age > 0 and math.floor(n / 16) ~= math.floor((n - #ids) / 16) then",
    "    local old = redis.call('ZRANGEBYSCORE', P .. set, '-inf', num(tonumber(now) - age * 1000), 'LIMIT', 0, 1000)",
    "    if #old > 0 then",
    "      local keys = {}",
    "      jobkeys(P, C, old, keys)",
    "      bulk('DEL', nil, keys)",
    "      bulk('ZREM', P .. set, old)",
    "      n = n - #old",
    "    end",
    "  end",
    "  if count > 0 and n > count + math.floor(count / 16) then",
    "    local old = redis.call('ZRANGE', P .. set, 0, n - count - 1)",
    "    local keys = {}",
    "    jobkeys(P, C, old, keys)",
    "    bulk('DEL', nil, keys)",
    "    redis.call('ZREMRANGEBYRANK', P .. set, 0, n - count - 1)",
    "  end",
    "end",
    "-- Pushes results (a list) to a caller's reply list; the TTL is set when the list is",
    "-- created (its owner empties it, so it is recreated, with a TTL, all the time).",
    "local function reply(key, msgs, ttl)",
    "  for i = 1, #msgs, 500 do",
    "    local j = math.min(i + 499, #msgs)",
    "    if redis.call('LPUSH', key, unpack(msgs, i, j)) == j then redis.call('PEXPIRE', key, ttl) end",
    "  end",
    "end",
    "-- An idempotent job's id: '<processor>-i-<hex>' (no execution id has that shape).",
    "local function idem(id) return string.find(id, '%-i%-%x+$') ~= nil end",
    "-- An idempotent job: callers of other processes that joined it (the add script put their",
    "-- reply lists in <id>:callers) get its result msg too.",
    "local function callers(P, id, msg, ttl)",
    "  local ks = redis.call('SMEMBERS', P .. id .. ':callers')",
    "  for i = 1, #ks do reply(ks[i], {msg}, ttl) end",
    "  if #ks > 0 then redis.call('DEL', P .. id .. ':callers') end",
    "end",
    "-- Deletes every key of a session: its queues (names) with every job in them, its state,",
    "-- its registrations. Returns the number of keys deleted (at least 2).",
    "local function dropsession(C, B, sid, sessions, state, sset, names)",
    "  local keys = {}",
    "  for n = 1, #names do",
    "    local P = B .. ':' .. names[n] .. ':'",
    "    local proc = string.match(names[n], '^[^~]*~(.*)~[^~]*$')",
    "    if proc then redis.call('ZREM', C .. 'wake:' .. proc, sid) end",
    "    local ids = {}",
    "    for _, l in ipairs({'wait', 'active', 'paused'}) do",
    "      local x = redis.call('LRANGE', P .. l, 0, -1)",
    "      for i = 1, #x do ids[#ids + 1] = x[i] end",
    "    end",
    "    for _, z in ipairs({'prioritized', 'delayed', 'completed', 'failed'}) do",
    "      local x = redis.call('ZRANGE', P .. z, 0, -1)",
    "      for i = 1, #x do ids[#ids + 1] = x[i] end",
    "    end",
    "    local x = redis.call('SMEMBERS', P .. 'stalled')",
    "    for i = 1, #x do ids[#ids + 1] = x[i] end",
    "    jobkeys(P, C, ids, keys)",
    "    for _, s in ipairs({'wait', 'active', 'paused', 'prioritized', 'pc', 'delayed', 'completed', 'failed',",
    "                        'marker', 'events', 'meta', 'stalled', 'stalled-check', 'id', 'limiter'}) do",
    "      keys[#keys + 1] = P .. s",
    "    end",
    "  end",
    "  keys[#keys + 1] = state",
    "  keys[#keys + 1] = sset",
    "  bulk('DEL', nil, keys)",
    "  redis.call('SREM', sessions, sid)",
    "  return #keys",
    "end",
    NULL
};
/* Script "add": new jobs -> wait, prioritized or delayed; with a take token the first
   goes straight to active, locked for its caller (a parent running its first child). */
static const char *const am2z__qlua_add[] = {
    "-- ARGV: P name timestamp delay priority events wakekey wakemember sessionqueues queue",
    "--       sessions sid child ratemax ('max' per minute or 'max:per_ms') taketoken lockms",
    "--       concurrency ('': leave meta's, '0':",
    "--       remove it), then (id data opts) per job.",
    "-- Returns the number of jobs added, or -1 (a child's session is gone). With a take token",
    "-- the first job goes straight to active, locked for the caller (a parent running its",
    "-- first child itself), and the reply is {count, job as take returns it}.",
    "-- Ids are unique execution ids, or an idempotent job's ('<processor>-i-<hex>', sent alone):",
    "-- when that job exists it is not added again; the reply is {'done', finishedOn, returnvalue,",
    "-- failedReason, atm, stacktrace} while its outcome is kept (opts am2zKeepMs, am2zForget),",
    "-- else {'joined'} with the caller's reply list (data replyTo) in <id>:callers, which the",
    "-- finish scripts answer. An expired one is deleted and the job added afresh.",
    "local P, ts, delay = ARGV[1], ARGV[3], tonumber(ARGV[4])",
    "-- HAND-OFF (4.4): a job that would wait in an empty global queue without priority, cap or rate",
    "-- goes to an idle worker thread of the adding process (its instance, from the job's replyTo)",
    "-- instead: P..'am2z:idle:'..instance (zset, score: when registered) holds '<token>|<its",
    "-- lock ms>|<its wake-up key>' of threads blocked on that key; the newest one registered",
    "-- within 5 s gets the job active and locked with its token, as RESP {P, token, job as",
    "-- take returns it} in its wake-up key, so it runs it without a fetch. Only the adding",
    "-- process's own threads: one that died took its caller with it (and the job's lock",
    "-- expires: the stalled scan puts it back), never a caller's job sent to a dead process.",
    "local function handoff(m, id, data, opts, ev, prio)",
    "  if prio ~= '0' or m[3] or m[4] or ARGV[14] ~= '' or ARGV[17] ~= '' then return false end",
    "  -- the instance: the last 16 characters of replyTo (<C>reply:<instance>); plain finds,",
    "  -- as a pattern tried at every position of data cost Redis ~17k instructions a job",
    "  local _, e = string.find(data, '\"replyTo\":\"', 1, true)",
    "  local q = e and string.find(data, '\"', e + 1, true)",
    "  if not q or q - e <= 16 then return false end",
    "  local ik = P .. 'am2z:idle:' .. string.sub(data, q - 16, q - 1)",
    "  if redis.call('EXISTS', ik) == 0 or redis.call('LLEN', P .. 'wait') > 0 or",
    "     redis.call('EXISTS', P .. 'prioritized') == 1 then return false end",
    "  local z = redis.call('ZPOPMAX', ik)",
    "  if tonumber(z[2]) < tonumber(ts) - 5000 then redis.call('DEL', ik); return false end",
    "  local tok, lockms, key = string.match(z[1], '^([^|]+)|(%d+)|(.+)$')",
    "  if not tok then return false end",
    "  busy(P, ev, 'waiting', 'jobId', id)",
    "  redis.call('LPUSH', P .. 'active', id)",
    "  -- what take() does and returns, for a job just written (its first attempt)",
    "  redis.call('SET', P .. id .. ':lock', tok, 'PX', lockms)",
    "  redis.call('HSET', P .. id, 'processedOn', ts, 'ats', '1')",
    "  busy(P, ev, 'active', 'jobId', id, 'prev', 'waiting')",
    "  -- {1, id, ats 1, not cancelled, name, data, opts, atm, stc, defa, stacktrace (none yet), timestamp}",
    "  -- one format builds it ('%d': a float's text costs Redis a printf of '%.14g'; %s of a",
    "  -- string under 100 bytes stops at a NUL: P, tok, id, name and ts have none)",
    "  local nm = ARGV[2]",
    "  redis.call('ZADD', key, ts, string.format('*3\\r\\n$%d\\r\\n%s\\r\\n$%d\\r\\n%s\\r\\n*12\\r\\n:1\\r\\n$%d\\r\\n%s\\r\\n:1\\r\\n:0\\r\\n$%d\\r\\n%s\\r\\n$%d\\r\\n%s\\r\\n$%d\\r\\n%s\\r\\n$-1\\r\\n$-1\\r\\n$-1\\r\\n$-1\\r\\n$%d\\r\\n%s\\r\\n',",
    "    #P, P, #tok, tok, #id, id, #nm, nm, #data, data, #opts, opts, #ts, ts))",
    "  -- scored by when it was handed: a worker checks a late one's lock before it runs it",
    "  redis.call('PEXPIRE', key, lockms)",
    "  return true",
    "end",
    "if ARGV[13] == '1' and redis.call('SISMEMBER', ARGV[11], ARGV[12]) == 0 then return -1 end",
    "if #ARGV == 20 and idem(ARGV[18]) then",
    "  local id = ARGV[18]",
    "  local f = redis.call('HMGET', P .. id, 'name', 'finishedOn', 'returnvalue', 'failedReason', 'atm', 'stacktrace', 'opts')",
    "  if f[1] and f[2] then",
    "    local ok, o = pcall(cjson.decode, f[7] or '{}')",
    "    if not ok or type(o) ~= 'table' then o = {} end",
    "    if tonumber(ts) - (tonumber(f[2]) or 0) < (tonumber(o.am2zKeepMs) or 0) and (f[3] or o.am2zForget ~= 1) then",
    "      event(P, ARGV[6], 'duplicated', 'jobId', id)",
    "      return {'done', f[2], f[3] or false, f[4] or false, f[5] or false, f[6] or false}",
    "    end",
    "    redis.call('ZREM', P .. 'completed', id)",
    "    redis.call('ZREM', P .. 'failed', id)",
    "    redis.call('DEL', P .. id, P .. id .. ':lock', P .. id .. ':logs', P .. id .. ':callers')",
    "  elseif f[1] then",
    "    local ok, d = pcall(cjson.decode, ARGV[19])",
    "    if ok and type(d) == 'table' and type(d.replyTo) == 'string' then",
    "      redis.call('SADD', P .. id .. ':callers', d.replyTo)",
    "      redis.call('PEXPIREAT', P .. id .. ':callers', num((tonumber(d.deadline) or tonumber(ts)) + 60000))",
    "    end",
    "    event(P, ARGV[6], 'duplicated', 'jobId', id)",
    "    return {'joined'}",
    "  end",
    "end",
    "local ids = {}",
    "for i = 18, #ARGV, 3 do",
    "  local id = ARGV[i]",
    "  redis.call('HSET', P .. id, 'name', ARGV[2], 'data', ARGV[i + 1], 'opts', ARGV[i + 2], 'timestamp', ts,",
    "             'delay', ARGV[4], 'priority', ARGV[5])",
    "  ids[#ids + 1] = id",
    "end",
    "local m = redis.call('HMGET', P .. 'meta', 'paused', 'opts.maxLenEvents', 'concurrency', 'max')",
    "if not m[2] then redis.call('HSET', P .. 'meta', 'opts.maxLenEvents', 10000) end",
    "EVMAX[P] = tonumber(m[2]) or 10000",
    "for i = 1, #ids do busy(P, ARGV[6], 'added', 'jobId', ids[i], 'name', ARGV[2]) end",
    "if ARGV[14] ~= '' then",
    "  local mx, per = string.match(ARGV[14], '^(%d+):?(%d*)$')",
    "  redis.call('HSET', P .. 'meta', 'max', mx or 1, 'duration', tonumber(per) or 60000)",
    "end",
    "if ARGV[17] == '0' then redis.call('HDEL', P .. 'meta', 'concurrency')",
    "elseif ARGV[17] ~= '' then redis.call('HSET', P .. 'meta', 'concurrency', ARGV[17]) end",
    "if ARGV[9] ~= '' then",
    "  redis.call('SADD', ARGV[9], ARGV[10])",
    "  redis.call('SADD', ARGV[11], ARGV[12])",
    "end",
    "local taken = nil",
    "local first = 1",
    "if ARGV[15] ~= '' and delay <= 0 and not m[1] then",
    "  redis.call('LPUSH', P .. 'active', ids[1])",
    "  taken = take(P, '', ids[1], ARGV[15], ARGV[16], ts, ARGV[6])",
    "  first = 2",
    "end",
    "if not taken and delay <= 0 and not m[1] and handoff(m, ids[1], ARGV[19], ARGV[20], ARGV[6], ARGV[5]) then first = 2 end",
    "if delay > 0 then",
    "  local due = tonumber(ts) + delay",
    "  for i = 1, #ids do",
    "    redis.call('ZADD', P .. 'delayed', num(due * 4096), ids[i])",
    "    event(P, ARGV[6], 'delayed', 'jobId', ids[i], 'delay', num(due))",
    "  end",
    "  if not m[1] then delaymark(P) end",
    "elseif first <= #ids then",
    "  local prio = tonumber(ARGV[5])",
    "  if prio > 0 then",
    "    for i = first, #ids do ready(P, ids[i], prio) end",
    "  else",
    "    bulk('LPUSH', P .. 'wait', {unpack(ids, first)})",
    "  end",
    "  for i = first, #ids do busy(P, ARGV[6], 'waiting', 'jobId', ids[i]) end",
    "  if not m[1] then wake(P, ARGV[7], ARGV[8]) end",
    "end",
    "if taken then return {#ids, taken} end",
    "return #ids",
    NULL
};
/* Script "fetch": due delayed jobs promoted, then wait / prioritized -> active, locked. */
static const char *const am2z__qlua_fetch[] = {
    "-- ARGV: P C token lockms now promote wakekey wakemember count events",
    "return fetch(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10])",
    NULL
};
/* Script "complete": finished jobs active -> completed (returnvalue, retention, replies
   to their callers), then the queue's next jobs wait -> active, as fetch does. */
static const char *const am2z__qlua_complete[] = {
    "-- ARGV: P C now events replyttl fetchcount newtoken lockms promote wakekey wakemember, then",
    "-- per completed job: id token returnvalue replykey replyhead attemptsmade keepcount keepage.",
    "-- Finishes the jobs that are still ours and fetches the next ones of the queue:",
    "-- returns {ids whose lock was lost, fetch result}.",
    "-- release() for the whole batch: one DEL, SREM, ZADD, ZCARD and LPUSH per batch.",
    "local P, C, now = ARGV[1], ARGV[2], ARGV[3]",
    "local lost, mine, locks, ids = {}, {}, {}, {}",
    "for i = 12, #ARGV, 8 do",
    "  local lk = P .. ARGV[i] .. ':lock'",
    "  if redis.call('GET', lk) == ARGV[i + 1] then",
    "    mine[#mine + 1] = i",
    "    locks[#locks + 1] = lk",
    "    ids[#ids + 1] = ARGV[i]",
    "  else",
    "    lost[#lost + 1] = ARGV[i]",
    "  end",
    "end",
    "if #mine > 0 then",
    "  bulk('DEL', nil, locks)",
    "  bulk('SREM', P .. 'stalled', ids)",
    "  local groups, order, replies, rkeys = {}, {}, {}, {}",
    "  for j = 1, #mine do",
    "    local i = mine[j]",
    "    local id, rv, rk = ARGV[i], ARGV[i + 2], ARGV[i + 3]",
    "    if redis.call('LREM', P .. 'active', -1, id) == 1 then",
    "      local g = groups[ARGV[i + 6] .. ' ' .. ARGV[i + 7]]",
    "      if not g then",
    "        g = {tonumber(ARGV[i + 6]), tonumber(ARGV[i + 7]), {}}",
    "        groups[ARGV[i + 6] .. ' ' .. ARGV[i + 7]] = g",
    "        order[#order + 1] = g",
    "      end",
    "      g[3][#g[3] + 1] = id",
    "      if g[1] ~= 0 then redis.call('HSET', P .. id, 'returnvalue', rv, 'finishedOn', now, 'atm', ARGV[i + 5]) end",
    "      event(P, ARGV[4], 'completed', 'jobId', id, 'returnvalue', rv, 'prev', 'active', 'am2z', '1')",
    "      if rk ~= '' then",
    "        if not replies[rk] then replies[rk] = {}; rkeys[#rkeys + 1] = rk end",
    "        replies[rk][#replies[rk] + 1] = ARGV[i + 4] .. rv .. '}'",
    "      end",
    "      if ARGV[i + 4] ~= '' and idem(id) then callers(P, id, ARGV[i + 4] .. rv .. '}', ARGV[5]) end",
    "    else",
    "      lost[#lost + 1] = id",
    "    end",
    "  end",
    "  for j = 1, #order do keep(P, C, 'completed', order[j][3], now, order[j][1], order[j][2]) end",
    "  for j = 1, #rkeys do reply(rkeys[j], replies[rkeys[j]], ARGV[5]) end",
    "  unslot(P, ids)",
    "end",
    "local k = tonumber(ARGV[6])",
    "local nxt = {0}",
    "if k > 0 then nxt = fetch(P, C, ARGV[7], ARGV[8], now, ARGV[9], ARGV[10], ARGV[11], k, ARGV[4]) end",
    "if #mine > 0 and nxt[1] == 0 then settle(P, ARGV[4], ARGV[10], ARGV[11]) end",
    "return {lost, nxt}",
    NULL
};
/* Script "fail": a job active -> failed (failedReason, stacktrace, retention, reply). */
static const char *const am2z__qlua_fail[] = {
    "-- ARGV: P C id token now failedreason stacktrace replykey replymsg keepcount keepage events",
    "--       replyttl attemptsmade exhausted (1: its attempts are used up) wakekey wakemember:",
    "--       returns 1, or -1 when the job is no longer ours",
    "local P, C, id, now = ARGV[1], ARGV[2], ARGV[3], ARGV[5]",
    "if not release(P, id, ARGV[4]) then return -1 end",
    "local count = tonumber(ARGV[10])",
    "if count ~= 0 then",
    "  redis.call('HDEL', P .. id, 'defa')",
    "  redis.call('HSET', P .. id, 'failedReason', ARGV[6], 'stacktrace', ARGV[7], 'finishedOn', now, 'atm', ARGV[14])",
    "end",
    "keep(P, C, 'failed', {id}, now, count, tonumber(ARGV[11]))",
    "event(P, ARGV[12], 'failed', 'jobId', id, 'failedReason', ARGV[6], 'prev', 'active', 'am2z', '1')",
    "if ARGV[15] == '1' then event(P, ARGV[12], 'retries-exhausted', 'jobId', id, 'attemptsMade', ARGV[14]) end",
    "if ARGV[8] ~= '' then reply(ARGV[8], {ARGV[9]}, ARGV[13]) end",
    "if ARGV[9] ~= '' and idem(id) then callers(P, id, ARGV[9], ARGV[13]) end",
    "settle(P, ARGV[12], ARGV[16], ARGV[17])",
    "return 1",
    NULL
};
/* Script "retry": a job active -> delayed (a backoff) or -> wait (no delay; also a job a
   stopping worker gives back). */
static const char *const am2z__qlua_retry[] = {
    "-- ARGV: P C id token now delay failedreason stacktrace events wakekey wakemember",
    "--       attemptsmade: returns 1, or -1 when the job is no longer ours",
    "local P, C, id, now = ARGV[1], ARGV[2], ARGV[3], ARGV[5]",
    "if not release(P, id, ARGV[4]) then return -1 end",
    "local jk = P .. id",
    "local delay = tonumber(ARGV[6])",
    "redis.call('HSET', jk, 'failedReason', ARGV[7], 'stacktrace', ARGV[8], 'delay', delay, 'atm', ARGV[12])",
    "local paused = redis.call('HEXISTS', P .. 'meta', 'paused') == 1",
    "if delay > 0 then",
    "  local due = tonumber(now) + delay",
    "  redis.call('ZADD', P .. 'delayed', num(due * 4096), id)",
    "  if not paused then delaymark(P); freed(P, ARGV[10], ARGV[11]) end",
    "  event(P, ARGV[9], 'delayed', 'jobId', id, 'delay', num(due))",
    "else",
    "  ready(P, id, int(redis.call('HGET', jk, 'priority'), 2097152) or 0)",
    "  if not paused then wake(P, ARGV[10], ARGV[11]) end",
    "  event(P, ARGV[9], 'waiting', 'jobId', id, 'prev', 'active')",
    "end",
    "return 1",
    NULL
};
/* Script "extend": lock renewal of running jobs; reports the locks lost. */
static const char *const am2z__qlua_extend[] = {
    "-- ARGV: lockms then (P id token) triples; returns the ids whose lock is no longer ours",
    "local bad = {}",
    "for i = 2, #ARGV, 3 do",
    "  local P, id, tok = ARGV[i], ARGV[i + 1], ARGV[i + 2]",
    "  local lk = P .. id .. ':lock'",
    "  if redis.call('GET', lk) == tok then",
    "    redis.call('SET', lk, tok, 'PX', ARGV[1])",
    "    redis.call('SREM', P .. 'stalled', id)",
    "  else",
    "    bad[#bad + 1] = id",
    "  end",
    "end",
    "return bad",
    NULL
};
/* Script "stalled": active jobs whose lock expired -> wait (marked to fail past
   max_stalled_count); due delayed jobs promoted; one scan per interval per queue. A
   durable job (4.11) that checkpointed since its last stall starts counting again. */
static const char *const am2z__qlua_stalled[] = {
    "-- ARGV: P C now interval maxstalled events wakekey wakemember",
    "local P, C, now = ARGV[1], ARGV[2], ARGV[3]",
    "-- a durable job's progress: its checkpoints (c/...) and compensation progress; nil: not durable",
    "local function dxprogress(id)",
    "  local d = redis.call('HGET', P .. id, 'data')",
    "  if not d or not string.find(d, '\"durableId\"', 1, true) then return nil end",
    "  local ok, o = pcall(cjson.decode, d)",
    "  if not ok or type(o) ~= 'table' or type(o.durableId) ~= 'string' then return nil end",
    "  local h, n, u = C .. 'x:' .. o.durableId, 0, {}",
    "  for _, f in ipairs(redis.call('HKEYS', h)) do",
    "    if string.sub(f, 1, 2) == 'c/' then",
    "      n = n + 1",
    "      if string.sub(f, -5) == '/undo' then u[#u + 1] = string.sub(redis.call('HGET', h, f) or '', 1, 16) end",
    "    end",
    "  end",
    "  table.sort(u)",
    "  return n .. ':' .. table.concat(u, ',')",
    "end",
    "if redis.call('EXISTS', P .. 'meta') == 0 then return -1 end",
    "if not redis.call('SET', P .. 'stalled-check', now, 'PX', ARGV[4], 'NX') then return {} end",
    "promote(P, tonumber(now), ARGV[7], ARGV[8], ARGV[6])",
    "local out = {}",
    "local st = redis.call('SMEMBERS', P .. 'stalled')",
    "for i = 1, #st do",
    "  local id = st[i]",
    "  if redis.call('EXISTS', P .. id .. ':lock') == 0 and redis.call('LREM', P .. 'active', 1, id) > 0 then",
    "    local stc = (int(redis.call('HGET', P .. id, 'stc'), 1000000) or 0) + 1",
    "    local pg = dxprogress(id)",
    "    if pg and pg ~= redis.call('HGET', P .. id, 'am2zPg') then",
    "      redis.call('HSET', P .. id, 'am2zPg', pg)",
    "      stc = 1",
    "    end",
    "    redis.call('HSET', P .. id, 'stc', stc)",
    "    if stc > tonumber(ARGV[5]) then",
    "      redis.call('HSET', P .. id, 'defa', 'job stalled more than allowable limit')",
    "    end",
    "    redis.call('RPUSH', P .. 'wait', id)",
    "    event(P, ARGV[6], 'waiting', 'jobId', id, 'prev', 'active')",
    "    event(P, ARGV[6], 'stalled', 'jobId', id)",
    "    out[#out + 1] = id",
    "  end",
    "end",
    "if #out > 0 and redis.call('HEXISTS', P .. 'meta', 'paused') == 0 then wake(P, ARGV[7], ARGV[8]) end",
    "unslot(P, out)",
    "reslot(P, tonumber(now), tonumber(ARGV[4]))",
    "redis.call('DEL', P .. 'stalled')",
    "local act = redis.call('LRANGE', P .. 'active', 0, -1)",
    "bulk('SADD', P .. 'stalled', act)",
    "return out",
    NULL
};
/* Script "claim": a parent's child nobody took yet (wait, prioritized or due delayed)
   -> active, locked for the parent. */
static const char *const am2z__qlua_claim[] = {
    "-- ARGV: C token lockms now events then (P id) pairs: takes the first of these jobs that",
    "-- is still waiting (a parent running its own children)",
    "local C, tok, lockms, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]",
    "local limit = (tonumber(now) + 1) * 4096",
    "for i = 6, #ARGV, 2 do",
    "  local P, id = ARGV[i], ARGV[i + 1]",
    "  local jk = P .. id",
    "  if redis.call('EXISTS', jk .. ':lock') == 0 and redis.call('HEXISTS', P .. 'meta', 'paused') == 0 then",
    "    local got = redis.call('ZREM', P .. 'prioritized', id) == 1",
    "    if not got then",
    "      local s = redis.call('ZSCORE', P .. 'delayed', id)",
    "      if s then",
    "        if tonumber(s) < limit then",
    "          redis.call('ZREM', P .. 'delayed', id)",
    "          redis.call('HSET', jk, 'delay', 0)",
    "          got = true",
    "        end",
    "      elseif redis.call('HEXISTS', jk, 'finishedOn') == 0 and redis.call('EXISTS', jk) == 1 then",
    "        got = redis.call('LREM', P .. 'wait', 1, id) == 1",
    "      end",
    "    end",
    "    if got then",
    "      redis.call('LPUSH', P .. 'active', id)",
    "      local r = take(P, C, id, tok, lockms, now, ARGV[5])",
    "      r[#r + 1] = P",
    "      return r",
    "    end",
    "  end",
    "end",
    "return {0}",
    NULL
};
/* Script "drop": a stopped session's keys deleted (queues, jobs, state, registrations). */
static const char *const am2z__qlua_drop[] = {
    "-- ARGV: C bull sid sessions state sessionqueues, then queue names",
    "local names = {}",
    "for n = 7, #ARGV do names[#names + 1] = ARGV[n] end",
    "return dropsession(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], names)",
    NULL
};
/* Script "cancelq": a session stopping: its queues paused, its running jobs' cancel keys
   set, its callers told "cancelled"; dropped at once when none of its jobs runs. It
   also lists the durable executions among the jobs (4.11: they end cancelled). */
static const char *const am2z__qlua_cancelq[] = {
    "-- ARGV: C bull sessionqueues ttl errorjson replyttl sid sessions state, then the queue",
    "-- names this process knows: pauses every queue of a session, sets the cancel key of its",
    "-- running jobs and tells the caller of every job that it was cancelled; when none runs it",
    "-- also drops the session (saves stop_session a round trip). Returns {running jobs,",
    "-- dropped (1/0), existed (1/0), {durable ids of its jobs (4.11)}, queue names...}; a",
    "-- session that does not exist (not",
    "-- registered, no queues, no state, unknown to this process) is left alone: {0, 0, 0}.",
    "local C, B, ttl, ej, rttl = ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6]",
    "local names = redis.call('SMEMBERS', ARGV[3])",
    "if #names == 0 and #ARGV < 10 and redis.call('SISMEMBER', ARGV[8], ARGV[7]) == 0 and",
    "   redis.call('EXISTS', ARGV[9]) == 0 then return {0, 0, 0} end",
    "local active, dx, dxseen = 0, {}, {}",
    "for n = 1, #names do",
    "  local P = B .. ':' .. names[n] .. ':'",
    "  if redis.call('EXISTS', P .. 'meta') == 1 then",
    "    redis.call('HSET', P .. 'meta', 'paused', 1)",
    "    redis.call('DEL', P .. 'marker')",
    "    local w = redis.call('LRANGE', P .. 'active', 0, -1)",
    "    active = active + #w",
    "    for i = 1, #w do redis.call('SET', C .. 'cancel:' .. w[i], '1', 'PX', ttl) end",
    "    local x = redis.call('LRANGE', P .. 'wait', 0, -1)",
    "    for i = 1, #x do w[#w + 1] = x[i] end",
    "    for _, z in ipairs({'prioritized', 'delayed'}) do",
    "      x = redis.call('ZRANGE', P .. z, 0, -1)",
    "      for i = 1, #x do w[#w + 1] = x[i] end",
    "    end",
    "    for i = 1, #w do",
    "      local d = redis.call('HGET', P .. w[i], 'data')",
    "      local ok, o = pcall(cjson.decode, d or '')",
    "      if ok and type(o) == 'table' and type(o.replyTo) == 'string' and type(o.executionId) == 'string' then",
    "        reply(o.replyTo, {o.executionId .. ' {\"ok\":false,\"attempts\":0,\"errors\":[],\"error\":' .. ej .. '}'}, rttl)",
    "      end",
    "      if ok and type(o) == 'table' and type(o.durableId) == 'string' and not dxseen[o.durableId] then",
    "        dxseen[o.durableId] = true",
    "        dx[#dx + 1] = o.durableId",
    "      end",
    "    end",
    "  end",
    "end",
    "local out = {active, 0, 1, dx}",
    "for n = 1, #names do out[#out + 1] = names[n] end",
    "if active == 0 then",
    "  local all, seen = {}, {}",
    "  for n = 5, #out do seen[out[n]] = true; all[#all + 1] = out[n] end",
    "  for n = 10, #ARGV do if not seen[ARGV[n]] then seen[ARGV[n]] = true; all[#all + 1] = ARGV[n] end end",
    "  dropsession(C, B, ARGV[7], ARGV[8], ARGV[9], ARGV[3], all)",
    "  out[2] = 1",
    "end",
    "return out",
    NULL
};
/* Script "due": a worker woken for a queue's due delayed job (or rate-limit window), by
   its marker entry {due, "1"}, BullMQ's way; nothing for a queue that is gone. */
static const char *const am2z__qlua_due[] = {
    "-- ARGV: P due",
    "if redis.call('EXISTS', ARGV[1] .. 'meta') == 0 then return 0 end",
    "redis.call('ZADD', ARGV[1] .. 'marker', ARGV[2], '1')",
    "return 1",
    NULL
};
/* Script "take": the receiver's reliable read of its results. Results are taken from the
   reply list into the instance's "taken" list, which this call first empties (the
   previous batch was delivered by then), so a result whose reply never reached the
   receiver (a connection or a Redis that died after the move) is read again from there. */
static const char *const am2z__qlua_take[] = {
    "-- ARGV: reply taken n ttl: returns up to n results, oldest first",
    "redis.call('DEL', ARGV[2])",
    "local items = redis.call('LRANGE', ARGV[1], -tonumber(ARGV[3]), -1)",
    "if #items == 0 then return items end",
    "redis.call('LTRIM', ARGV[1], 0, -#items - 1)",
    "redis.call('RPUSH', ARGV[2], unpack(items))",
    "redis.call('PEXPIRE', ARGV[2], ARGV[4])",
    "return items",
    NULL
};
/* Script "remove": a job no worker took yet (wait, prioritized, delayed) removed with its
   hash, because its caller freed the execution; a job already taken (active) or
   finished is told to cancel instead (its cancel key). */
static const char *const am2z__qlua_remove[] = {
    "-- ARGV: P C id events cancelttl: returns 1 (removed) or 0 (cancel key set)",
    "local P, C, id = ARGV[1], ARGV[2], ARGV[3]",
    "local n = redis.call('ZREM', P .. 'prioritized', id) + redis.call('ZREM', P .. 'delayed', id)",
    "if n == 0 then n = redis.call('LREM', P .. 'wait', -1, id) end",
    "if n == 0 then n = redis.call('LREM', P .. 'paused', -1, id) end",
    "if n == 0 then",
    "  if redis.call('EXISTS', P .. id) == 1 then redis.call('SET', C .. 'cancel:' .. id, '1', 'PX', ARGV[5]) end",
    "  return 0",
    "end",
    "redis.call('DEL', P .. id, P .. id .. ':logs', C .. 'cancel:' .. id)",
    "event(P, ARGV[4], 'removed', 'jobId', id, 'prev', 'waiting')",
    "return 1",
    NULL
};
/* Script "state": the state manager's compare-and-set write (version + 1). */
static const char *const am2z__qlua_state[] = {
    "-- ARGV: key json hash ttlms now expected ('' = any): returns the new version or -1 (conflict)",
    "local k = ARGV[1]",
    "local cur = tonumber(redis.call('HGET', k, 'version') or '0') or 0",
    "if ARGV[6] ~= '' and cur ~= tonumber(ARGV[6]) then return -1 end",
    "redis.call('HSET', k, 'state', ARGV[2], 'version', cur + 1, 'hash', ARGV[3], 'updatedAt', ARGV[5])",
    "if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', k, ARGV[4]) end",
    "return cur + 1",
    NULL
};
/* Script "settings": a worker publishes a processor's settings (SETTINGS in 4.3). */
static const char *const am2z__qlua_settings[] = {
    "-- ARGV: settingskey metakey settings instance now ratelimit globalconcurrency. Returns",
    "-- {version, 1 when it",
    "-- replaced different settings, the replaced settings, their instance} ('' when none).",
    "local k, meta, s = ARGV[1], ARGV[2], ARGV[3]",
    "local old = redis.call('HMGET', k, 'settings', 'instance', 'version')",
    "local rate = tonumber(ARGV[6]) or 0",
    "local conc = tonumber(ARGV[7]) or 0",
    "if rate > 0 then redis.call('HSET', meta, 'max', rate, 'duration', 60000) end",
    "if conc > 0 then redis.call('HSET', meta, 'concurrency', conc) end",
    "if old[1] == s then return {tonumber(old[3]) or 0, 0, '', ''} end",
    "if (rate <= 0 or conc <= 0) and old[1] then",
    "  -- only a limit that published settings set is removed: BullMQ's own stays",
    "  local ok, o = pcall(cjson.decode, old[1])",
    "  if ok and type(o) == 'table' then",
    "    if rate <= 0 and (tonumber(o.rateLimitPerMinute) or 0) > 0 then redis.call('HDEL', meta, 'max', 'duration') end",
    "    if conc <= 0 and (tonumber(o.globalConcurrency) or 0) > 0 then redis.call('HDEL', meta, 'concurrency') end",
    "  end",
    "end",
    "local v = redis.call('HINCRBY', k, 'version', 1)",
    "redis.call('HSET', k, 'settings', s, 'instance', ARGV[4], 'publishedAt', ARGV[5])",
    "if old[1] then return {v, 1, old[1], old[2] or ''} end",
    "return {v, 0, '', ''}",
    NULL
};

/* Script "progress": a running job's progress, as BullMQ's updateProgress writes it: the
   hash's progress field (JSON) and a "progress" event; nothing for a job that is gone. */
static const char *const am2z__qlua_progress[] = {
    "-- ARGV: P id data(JSON) events: returns 1, or 0 when the job is gone",
    "if redis.call('EXISTS', ARGV[1] .. ARGV[2]) == 0 then return 0 end",
    "redis.call('HSET', ARGV[1] .. ARGV[2], 'progress', ARGV[3])",
    "event(ARGV[1], ARGV[4], 'progress', 'jobId', ARGV[2], 'data', ARGV[3])",
    "return 1",
    NULL
};
/* A script carries only the lib definitions it uses: Redis runs a script's whole text on
   every call, and each definition costs it a closure (the full lib is ~19k instructions
   per call, more than a small script's own work). A definition is a top-level
   "local function NAME" or "local NAME =" with the lines up to the next top-level
   "local"; it is kept when NAME appears as a word in the body or in a kept definition
   after it (the lib defines before use; comment lines do not count). Kept always: any
   other "local" statement, and a definition followed by a top-level line that is not
   its closing end, } or ) nor a comment (a statement of its own). */
static int am2z__qident(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
static int am2z__qword(const char *line, const char *name, size_t n) {
    const char *p = line;
    while (*p == ' ') p++;
    if (p[0] == '-' && p[1] == '-') return 0; /* a comment line */
    for (p = strstr(line, name); p; p = strstr(p + 1, name))
        if (!am2z__qident(p > line ? p[-1] : ' ') && !am2z__qident(p[n])) return 1;
    return 0;
}
static int am2z__qlib_name(const char *line, char *name, size_t size) {
    const char *p = line + 6, *e;
    if (strncmp(line, "local ", 6) != 0) return 0;
    if (strncmp(p, "function ", 9) == 0) p += 9;
    for (e = p; am2z__qident(*e); e++) {}
    if (e == p || (size_t)(e - p) >= size || (*e != '(' && strncmp(e, " =", 2) != 0)) return 0;
    memcpy(name, p, (size_t)(e - p));
    name[e - p] = 0;
    return 1;
}
static int am2z__qlib_cont(const char *line) { return strncmp(line, "local ", 6) != 0; }
static int am2z__qlib_stmt(const char *line) { /* a top-level line that is no closing one */
    return line[0] != ' ' && strncmp(line, "end", 3) != 0 && line[0] != '}' && line[0] != ')' &&
           strncmp(line, "--", 2) != 0;
}
static am2z_redis_script *am2z__qscript(const char *const *body) {
    am2z__qsb b = am2z__qsb0();
    const char *const *l;
    am2z_redis_script *s = NULL;
    size_t n = 0, i, j, k;
    unsigned char *keep;
    char name[64];
    while (am2z__qlua_lib[n]) n++;
    if (!(keep = (unsigned char *)am2z__malloc(n + 1))) return NULL;
    memset(keep, 0, n + 1);
    for (i = n; i-- > 0;) { /* the definitions starting at line i, last first */
        const char *line = am2z__qlua_lib[i];
        if (strncmp(line, "local ", 6) != 0) continue; /* a comment, or inside a definition */
        keep[i] = 1;
        if (!am2z__qlib_name(line, name, sizeof name)) continue; /* not a definition: kept */
        for (j = i + 1; j < n && am2z__qlib_cont(am2z__qlua_lib[j]); j++)
            if (am2z__qlib_stmt(am2z__qlua_lib[j])) break;
        if (j < n && am2z__qlib_cont(am2z__qlua_lib[j])) continue; /* a statement of its own: kept */
        keep[i] = 0;
        for (l = body; *l && !keep[i]; l++) keep[i] = (unsigned char)am2z__qword(*l, name, strlen(name));
        for (j = i + 1; j < n && !keep[i]; j++) {
            if (!keep[j]) continue;
            for (k = j + 1; k < n && am2z__qlib_cont(am2z__qlua_lib[k]); k++) {}
            for (; j < k && !keep[i]; j++) keep[i] = (unsigned char)am2z__qword(am2z__qlua_lib[j], name, strlen(name));
            j--;
        }
    }
    for (i = 0; i < n; i++) {
        if (!keep[i]) continue;
        for (j = i; j < n && (j == i || am2z__qlib_cont(am2z__qlua_lib[j])); j++) {
            am2z__qsb_str(&b, am2z__qlua_lib[j]);
            am2z__qsb_put(&b, "\n", 1);
        }
        i = j - 1;
    }
    am2z__free(keep);
    for (l = body; *l; l++) { am2z__qsb_str(&b, *l); am2z__qsb_put(&b, "\n", 1); }
    if (!b.bad) s = am2z_redis_script_new(b.p, b.n, NULL);
    am2z__qsb_free(&b);
    return s;
}

static am2z_status am2z__qeval(am2z_redis *r, am2z_reply *rep, const am2z_redis_script *s, size_t argc,
                               const char *const *argv, const size_t *lens) {
    return am2z_redis_evalsha(r, rep, s, 0, argc, argv, lens);
}

/* An outage is logged by its changes, not per failed try: every thread of the runtime
   reports its failures here; the first one logs "lost", later ones only "still down
   after N s" (10 s, then doubling), and the first success after it logs "answers again".
   Without this each thread logged each 100 ms reconnect attempt. what: the failure. */
static void am2z__qdown(am2z__qrt *q, const char *what) {
    int64_t now = am2z_monotonic_ns(), since = am2z__atomic_load(&q->down_since, AM2Z__MO_ACQUIRE);
    int64_t next = am2z__atomic_load(&q->down_next, AM2Z__MO_ACQUIRE);
    if (since == 0) {
        am2z__atomic_store(&q->down_next, 10, AM2Z__MO_RELEASE);
        if (am2z__atomic_cas(&q->down_since, &since, now, AM2Z__MO_ACQ_REL, AM2Z__MO_ACQUIRE))
            am2z_log_warn(q->logger, "queue runtime: Redis connection lost: %s (retrying quietly)", what);
    } else if (now - since >= next * 1000000000 &&
               am2z__atomic_cas(&q->down_next, &next, next < 3600 ? next * 2 : next, AM2Z__MO_ACQ_REL, AM2Z__MO_ACQUIRE)) {
        am2z_log_warn(q->logger, "queue runtime: Redis still down after %lld s: %s", (long long)next, what);
    }
}
/* A command went through: ends an outage (logged once). */
static void am2z__qup(am2z__qrt *q) {
    int64_t since;
    if (am2z__atomic_load(&q->down_since, AM2Z__MO_ACQUIRE) == 0) return;
    since = am2z__atomic_exchange(&q->down_since, 0, AM2Z__MO_ACQ_REL);
    if (since)
        am2z_log_info(q->logger, "queue runtime: Redis connection restored after %lld ms",
                      (long long)((am2z_monotonic_ns() - since) / 1000000));
}

/* A connection of this runtime named <bull>:<prefix>:<instance>:<role>; connected when
   Redis answers (the threads reconnect later otherwise). NULL when out of memory. */
static am2z_redis *am2z__qconn(am2z__qrt *q, const char *role) {
    am2z_redis_desc d = q->rdesc;
    char name[256];
    am2z_redis *r;
    snprintf(name, sizeof name, "%s%s:%s", q->C, q->instance, role);
    d.client_name = name;
    r = am2z_redis_new(&d, NULL);
    am2z__redis_abort_fd(r, q->abort_pipe[0]);
    if (r && am2z_redis_connect(r) != AM2Z_STATUS_OK) am2z__qdown(q, am2z_status_detail());
    return r;
}

/* Makes sure r is connected: one attempt (the runtime's threads retry in their loops,
   where a stop is noticed at once). */
static int am2z__qensure(am2z__qrt *q, am2z_redis *r) {
    if (am2z_redis_is_connected(r)) return 1;
    if (am2z_redis_connect(r) == AM2Z_STATUS_OK) return 1;
    am2z__qdown(q, am2z_status_detail());
    return 0;
}

/* A pooled connection whose every wait also ends by cap_ns (monotonic; 0: no cap). */
static am2z_redis *am2z__qborrow_until(am2z__qrt *q, int64_t cap_ns, am2z_status *st) {
    am2z_status s = AM2Z_STATUS_OK;
    am2z_redis *r = am2z__redis_pool_get(q->pool, q->rdesc.connect_timeout_ms > 0 ? q->rdesc.connect_timeout_ms * 2 : 10000,
                                         cap_ns, &s);
    if (!r && st) *st = s;
    return r;
}
static am2z_redis *am2z__qborrow(am2z__qrt *q, am2z_status *st) { return am2z__qborrow_until(q, 0, st); }

/* Sets the cancel keys of ids (best effort). */
static void am2z__qcancel_keys(am2z__qrt *q, am2z_redis *conn, const char *const *ids, size_t n) {
    am2z_redis *r = conn;
    am2z_reply rep = am2z__qrep0();
    size_t i, sent = 0;
    if (n == 0) return;
    if (!r && !(r = am2z__qborrow(q, NULL))) return;
    for (i = 0; i < n; i++)
        if (am2z_redis_append(r, "SET %s%s%s 1 PX %lld", q->C, "cancel:", ids[i], (long long)q->cancel_ttl_ms) == AM2Z_STATUS_OK)
            sent++;
    for (i = 0; i < sent; i++) {
        if (am2z_redis_read(r, &rep) != AM2Z_STATUS_OK && !am2z_redis_is_connected(r)) { am2z_reply_clear(&rep); break; }
        am2z_reply_clear(&rep);
    }
    if (!conn) am2z_redis_pool_put(q->pool, r);
}

/* durable executions (4.11), used by submit */
static void am2z__qdx_job_id(const char *id, char out[AM2Z_EXECUTION_ID_SIZE]);
static am2z_status am2z__qdx_prep(am2z__qrt *q, const char *proc, const am2z_state *input, const am2z_submit_desc *desc,
                                  am2z_submit_desc *dd, char gen[AM2Z_EXECUTION_ID_SIZE]);
static int am2z__qdx_init(am2z__qrt *q);
static void am2z__qdx_free(am2z__qrt *q);
/* and by stop_session */
static am2z_value *am2z__qdx_session_ids(am2z__qrt *q, const am2z_reply *ids);
static am2z_status am2z__qdx_session_stopped(am2z__qrt *q, const am2z_value *ids, const char *sid);

/* ---- 4.3 execution across processes: waiters, adding jobs, submit and wait ----------- */

/* -- waiters -- */

static void am2z__qwait_release(am2z__qwait *w) {
    size_t i;
    if (!w || am2z__atomic_dec(&w->refs) != 0) return;
    am2z__qnotify_destroy(&w->own);
    am2z__qqueue_release(w->qu);
    am2z__free(w->session);
    am2z_value_release(w->input);
    am2z_value_release(w->state);
    am2z_error_release(w->error);
    for (i = 0; i < w->nerrs; i++) am2z_error_release(w->errs[i]);
    am2z__free(w->errs);
    am2z__free(w->raw);
    am2z__free(w);
}

static void am2z__qmaint_wake(am2z__qrt *q);

static void am2z__qwait_insert(am2z__qrt *q, am2z__qwait *w) {
    uint32_t b = am2z__qhash(w->id, strlen(w->id)) % AM2Z__QBUCKETS;
    am2z__atomic_inc(&w->refs);
    /* wait_since is stored before anything that makes the events reader follow the queue
       (nwait, last_wait, the scan for BullMQ workers): the reader starts its cursor there. */
    if (am2z__atomic_load(&w->qu->nwait, AM2Z__MO_ACQUIRE) == 0)
        am2z__atomic_store(&w->qu->wait_since, w->submitted_ms, AM2Z__MO_RELEASE);
    am2z__atomic_store(&w->qu->last_wait, w->submitted_ms, AM2Z__MO_RELEASE);
    am2z__atomic_store(&q->last_wait_ms, w->submitted_ms, AM2Z__MO_RELEASE);
    if (!am2z__atomic_exchange(&w->qu->scanned, 1, AM2Z__MO_ACQ_REL)) {
        am2z__atomic_store(&q->clients_ms, 0, AM2Z__MO_RELEASE); /* the first caller of a queue: */
        am2z__qmaint_wake(q);                                    /* look for its BullMQ workers now */
    }
    if (am2z__atomic_inc(&w->qu->nwait) == 1) {
        if (am2z__atomic_load(&w->qu->foreign_ms, AM2Z__MO_ACQUIRE)) { /* the events reader may sleep */
            am2z__mutex_lock(&q->ent.mu);
            am2z__cond_broadcast(&q->ent.cv);
            am2z__mutex_unlock(&q->ent.mu);
        }
    }
    am2z__mutex_lock(&q->wmu);
    w->hnext = q->waiters[b];
    q->waiters[b] = w;
    q->nwaiters++;
    am2z__mutex_unlock(&q->wmu);
}

/* Removes the waiter of id from the table: the caller gets the table's reference.
   NULL when nobody waits (any more). */
static am2z__qwait *am2z__qwait_take(am2z__qrt *q, const char *id, size_t n) {
    uint32_t b = am2z__qhash(id, n) % AM2Z__QBUCKETS;
    am2z__qwait **pp, *w = NULL;
    am2z__mutex_lock(&q->wmu);
    for (pp = &q->waiters[b]; *pp; pp = &(*pp)->hnext)
        if (strlen((*pp)->id) == n && memcmp((*pp)->id, id, n) == 0) {
            w = *pp;
            *pp = w->hnext;
            q->nwaiters--;
            break;
        }
    am2z__mutex_unlock(&q->wmu);
    if (w) am2z__atomic_dec(&w->qu->nwait);
    return w;
}

/* Marks a taken waiter delivered, wakes its owner and drops the table's reference. */
static void am2z__qwait_signal(am2z__qwait *w) {
    am2z__qnotify *nt = w->nt;
    am2z__mutex_lock(&nt->mu);
    w->done = 1;
    am2z__cond_broadcast(&nt->cv);
    am2z__mutex_unlock(&nt->mu);
    am2z__qwait_release(w);
}

/* Hands a result over in-process; errs (count n) and the rest are borrowed. */
static void am2z__qdeliver(am2z__qrt *q, const char *id, const am2z_state *state, const am2z_error *error,
                           am2z_error *const *errs, size_t n, int attempts) {
    am2z__qwait *w = am2z__qwait_take(q, id, strlen(id));
    size_t i;
    if (!w) return;
    w->state = am2z_value_retain(state);
    w->error = am2z_error_retain(error);
    w->attempts = attempts;
    if (n) {
        w->errs = (am2z_error **)am2z__malloc(n * sizeof *w->errs);
        if (w->errs) {
            for (i = 0; i < n; i++) w->errs[i] = am2z_error_retain(errs[i]);
            w->nerrs = n;
        }
    }
    am2z__qwait_signal(w);
}

/* Hands over a result that came as JSON from another process ("<id> <json>"). */
static void am2z__qdeliver_raw(am2z__qrt *q, const char *msg, size_t len) {
    const char *sp = (const char *)memchr(msg, ' ', len);
    am2z__qwait *w;
    if (!sp) return;
    w = am2z__qwait_take(q, msg, (size_t)(sp - msg));
    if (!w) return;
    len -= (size_t)(sp + 1 - msg);
    w->raw = (char *)am2z__malloc(len + 1);
    if (w->raw) {
        memcpy(w->raw, sp + 1, len);
        w->raw[len] = 0;
        w->raw_len = len;
    } else {
        w->error = am2z_error_resource("memory", 0, (int64_t)len);
    }
    am2z__qwait_signal(w);
}

/* Waits until w is delivered or until_ns (monotonic; < 0: no limit). */
static int am2z__qwait_for(am2z__qwait *w, int64_t until_ns) {
    int done;
    am2z__mutex_lock(&w->nt->mu);
    while (!w->done) {
        int64_t wake = am2z_monotonic_ns() + 1000000000; /* re-check once a second */
        if (until_ns >= 0) {
            if (until_ns <= am2z_monotonic_ns()) break;
            if (until_ns < wake) wake = until_ns;
        }
        am2z__cond_wait_until(&w->nt->cv, &w->nt->mu, wake);
    }
    done = w->done;
    am2z__mutex_unlock(&w->nt->mu);
    return done;
}

/* The error text of a stacktrace entry or a reply: am2z error JSON, else a plain message. */
static am2z_error *am2z__qerror_from_text(const char *proc, const char *id, const char *text, size_t len) {
    am2z_value *v = am2z_json_parse(text, len, NULL, NULL);
    am2z_error *e = NULL;
    if (v && am2z_value_type(v) == AM2Z_TYPE_OBJECT && am2z_value_find(v, "name", 4))
        e = am2z_error_from_json(v);
    am2z_value_release(v);
    if (!e) {
        am2z_error *cause = am2z_error_business("JOB_FAILED", AM2Z_SEVERITY_HIGH, "%.*s", (int)(len > 4000 ? 4000 : len), text);
        e = am2z_error_execution(proc, id, cause, NULL);
    }
    return e;
}

/* Decodes a reply JSON ({"ok","attempts","errors","error","state"}) into w. */
static void am2z__qwait_parse(am2z__qwait *w) {
    am2z_value *v = am2z_json_parse(w->raw, w->raw_len, NULL, NULL);
    const am2z_value *errs, *st, *e;
    size_t i, n;
    if (!v || am2z_value_type(v) != AM2Z_TYPE_OBJECT) {
        w->error = am2z_error_execution(w->qu ? w->qu->proc : NULL, w->id,
                                        am2z_error_validation("reply", NULL, "the result of this execution is not valid JSON"), NULL);
        am2z_value_release(v);
        return;
    }
    {
        int64_t a = am2z_value_get_int(v, "attempts", 0);
        w->attempts = (int)(a < 0 ? 0 : a > AM2Z__QMAX_COUNT ? AM2Z__QMAX_COUNT : a);
    }
    errs = am2z_value_find(v, "errors", 6);
    n = am2z_value_len(errs);
    if (am2z_value_type(errs) == AM2Z_TYPE_ARRAY && n) {
        w->errs = (am2z_error **)am2z__malloc(n * sizeof *w->errs);
        if (w->errs)
            for (i = 0; i < n; i++) {
                am2z_error *x = am2z_error_from_json(am2z_value_at(errs, i));
                if (x) w->errs[w->nerrs++] = x;
            }
    }
    if (am2z_value_get_bool(v, "ok", 0)) {
        st = am2z_value_find(v, "state", 5);
        if (am2z_value_type(st) == AM2Z_TYPE_OBJECT) w->state = am2z_value_retain(st);
        else w->error = am2z_error_execution(w->qu ? w->qu->proc : NULL, w->id,
                                             am2z_error_validation("state", st, "the result state is not an object"), NULL);
    } else {
        e = am2z_value_find(v, "error", 5);
        w->error = e ? am2z_error_from_json(e) : NULL;
        if (!w->error) w->error = am2z_error_execution(w->qu ? w->qu->proc : NULL, w->id, NULL, NULL);
    }
    am2z_value_release(v);
}

/* Moves w's result into out (overwritten: callers pass an empty or scratch one; w keeps
   nothing). */
static void am2z__qwait_outcome(am2z__qwait *w, am2z_outcome *out) {
    memset(out, 0, sizeof *out);
    if (w->raw) {
        am2z__qwait_parse(w);
        am2z__free(w->raw);
        w->raw = NULL;
    }
    snprintf(out->execution_id, sizeof out->execution_id, "%s", w->id);
    am2z__outcome_session(out, w->session);
    out->started_at = w->submitted_ms;
    out->duration_ms = (double)(am2z_monotonic_ns() - w->started_ns) / 1e6;
    out->attempts = w->attempts;
    out->attempt_errors = w->errs;
    out->attempt_error_count = w->nerrs;
    w->errs = NULL;
    w->nerrs = 0;
    if (w->error) {
        out->error = w->error;
        w->error = NULL;
        am2z_value_release(w->state);
        w->state = NULL;
        out->state = out->error->partial_state ? am2z_value_retain(out->error->partial_state)
                                               : am2z_value_retain(w->input);
    } else {
        out->state = w->state;
        w->state = NULL;
    }
}

/* -- settings: published by workers, cached by callers (SETTINGS in 4.3) -- */

/* A processor's settings as workers publish them and as a job carries them. */
typedef struct am2z__qset {
    int64_t timeout_ms;         /* each attempt's */
    am2z_retry_policy retry;    /* should_retry stays NULL: it is the worker's code */
    int priority;
    int64_t delay_ms;
    int rate;                   /* rate limit per minute, 0: none */
    int global_conc;            /* am2z_queue_config.global_concurrency, 0: none */
    int session_conc;           /* the workers' am2z_queue_desc.session_concurrency, 0: none */
    am2z_rate session_rate;     /* the workers' am2z_queue_desc.session_rate, max 0: none */
} am2z__qset;

/* What this process knows about one processor's published settings. */
typedef struct am2z__qpub {
    struct am2z__qpub *next;
    char *name, *key;           /* key: <bull>:<prefix>~<name>:am2z:settings */
    int declared;               /* am2z_queue_declare named it; ov holds its overrides */
    am2z_call_overrides ov;
    int have;                   /* published settings known (set, version) */
    am2z__qset set;
    int64_t version;
    int64_t checked_ns;         /* last version check (monotonic); 0: never */
} am2z__qpub;

static void am2z__qset_of(const am2z__qrt *q, const am2z_processor *p, am2z__qset *s) {
    const am2z_processor_desc *d = am2z_processor_desc_of(p);
    memset(s, 0, sizeof *s);
    s->timeout_ms = am2z_processor_timeout_ms(p, q->default_timeout_ms);
    s->retry = d->retry;
    s->retry.should_retry = NULL;
    s->retry.user_data = NULL;
    s->priority = d->queue.priority;
    s->delay_ms = d->queue.delay_ms;
    s->rate = d->queue.rate_limit_per_minute;
    s->global_conc = d->queue.global_concurrency;
    s->session_conc = q->session_conc;
    s->session_rate = q->session_rate;
}

/* A non-negative number with up to 6 decimals, independent of the C locale. */
static void am2z__qsb_num(am2z__qsb *b, double v) {
    int64_t whole, frac;
    char t[48];
    if (!(v > 0)) v = 0;
    if (v > 1e15) v = 1e15;
    whole = (int64_t)v;
    frac = (int64_t)((v - (double)whole) * 1e6 + 0.5);
    if (frac >= 1000000) { whole++; frac = 0; }
    if (!frac) snprintf(t, sizeof t, "%lld", (long long)whole);
    else {
        size_t n = (size_t)snprintf(t, sizeof t, "%lld.%06lld", (long long)whole, (long long)frac);
        while (n > 0 && t[n - 1] == '0') t[--n] = 0;
    }
    am2z__qsb_str(b, t);
}

/* {"type","delay","multiplier","maxDelay","jitter"} with the defaults resolved; delay 0
   means "retry at once" (a negative delay_ms). */
static void am2z__qsb_backoff(am2z__qsb *b, const am2z_retry_policy *rp) {
    am2z__qsb_str(b, "{\"type\":\"");
    am2z__qsb_str(b, rp->backoff == AM2Z_BACKOFF_FIXED ? "fixed" : rp->backoff == AM2Z_BACKOFF_LINEAR ? "linear"
                                                                                                 : "exponential");
    am2z__qsb_str(b, "\",\"delay\":");
    am2z__qsb_i64(b, rp->delay_ms > 0 ? rp->delay_ms : rp->delay_ms < 0 ? 0 : 100);
    am2z__qsb_str(b, ",\"multiplier\":");
    am2z__qsb_num(b, rp->multiplier > 0 ? rp->multiplier : 2.0);
    am2z__qsb_str(b, ",\"maxDelay\":");
    am2z__qsb_i64(b, rp->max_delay_ms > 0 ? rp->max_delay_ms : 30000);
    am2z__qsb_str(b, ",\"jitter\":");
    am2z__qsb_num(b, rp->jitter);
    am2z__qsb_str(b, "}");
}

static void am2z__qsb_settings(am2z__qsb *b, const am2z__qset *s) {
    am2z__qsb_str(b, "{\"timeoutMs\":");
    am2z__qsb_i64(b, s->timeout_ms);
    am2z__qsb_str(b, ",\"attempts\":");
    am2z__qsb_i64(b, s->retry.max_attempts > 0 ? s->retry.max_attempts : 1);
    am2z__qsb_str(b, ",\"backoff\":");
    am2z__qsb_backoff(b, &s->retry);
    am2z__qsb_str(b, ",\"priority\":");
    am2z__qsb_i64(b, s->priority);
    am2z__qsb_str(b, ",\"delay\":");
    am2z__qsb_i64(b, s->delay_ms);
    am2z__qsb_str(b, ",\"rateLimitPerMinute\":");
    am2z__qsb_i64(b, s->rate);
    /* the limits only when set, so settings without them read as before */
    if (s->global_conc > 0) { am2z__qsb_str(b, ",\"globalConcurrency\":"); am2z__qsb_i64(b, s->global_conc); }
    if (s->session_conc > 0) { am2z__qsb_str(b, ",\"sessionConcurrency\":"); am2z__qsb_i64(b, s->session_conc); }
    if (s->session_rate.max > 0) {
        am2z__qsb_str(b, ",\"sessionRate\":{\"max\":");
        am2z__qsb_i64(b, s->session_rate.max);
        am2z__qsb_str(b, ",\"perMs\":");
        am2z__qsb_i64(b, s->session_rate.per_ms);
        am2z__qsb_str(b, "}");
    }
    am2z__qsb_str(b, "}");
}

/* Member k of o as a number in 0..max (published settings are data from Redis). */
static int64_t am2z__qget_nonneg(const am2z_value *o, const char *k, int64_t dflt) {
    int64_t v = am2z_value_as_int(am2z_value_find(o, k, strlen(k)), dflt);
    return v < 0 ? dflt : v;
}
static int am2z__qget_int(const am2z_value *o, const char *k, int dflt) {
    int64_t v = am2z__qget_nonneg(o, k, dflt);
    return v > INT_MAX ? INT_MAX : (int)v;
}

/* BullMQ's backoff (a number: a fixed delay; or {type, delay, jitter} plus our
   multiplier and maxDelay) into rp; fields it lacks stay. 0 when bo says nothing. */
static int am2z__qbackoff_parse(const am2z_value *bo, am2z_retry_policy *rp) {
    const char *type;
    int64_t delay;
    double x;
    if (am2z_value_type(bo) == AM2Z_TYPE_INT || am2z_value_type(bo) == AM2Z_TYPE_DOUBLE) {
        delay = am2z_value_as_int(bo, 0);
        rp->backoff = AM2Z_BACKOFF_FIXED;
        rp->delay_ms = delay > 0 ? delay : -1;
        return 1;
    }
    if (am2z_value_type(bo) != AM2Z_TYPE_OBJECT) return 0;
    type = am2z_value_get_string(bo, "type", "");
    if (strcmp(type, "fixed") == 0) rp->backoff = AM2Z_BACKOFF_FIXED;
    else if (strcmp(type, "linear") == 0) rp->backoff = AM2Z_BACKOFF_LINEAR;
    else if (strcmp(type, "exponential") == 0) rp->backoff = AM2Z_BACKOFF_EXPONENTIAL;
    if (am2z_value_find(bo, "delay", 5)) {
        delay = am2z__qget_nonneg(bo, "delay", 0);
        rp->delay_ms = delay > 0 ? delay : -1;
    }
    if ((x = am2z_value_as_double(am2z_value_find(bo, "multiplier", 10), 0)) > 0) rp->multiplier = x < 1e6 ? x : 1e6;
    if ((delay = am2z__qget_nonneg(bo, "maxDelay", 0)) > 0) rp->max_delay_ms = delay;
    x = am2z_value_as_double(am2z_value_find(bo, "jitter", 6), 0);
    rp->jitter = x > 0 ? (x < 1 ? x : 1) : 0;
    return 1;
}

/* Published {"max","perMs"} into r when valid (data from Redis); else r stays none. */
static void am2z__qset_rate_parse(const am2z_value *o, am2z_rate *r) {
    am2z_rate x;
    x.max = am2z__qget_int(o, "max", 0);
    x.per_ms = am2z__qget_nonneg(o, "perMs", 0);
    if (x.max > 0 && !am2z__rate_bad(&x)) *r = x;
}

/* Published settings JSON into s; 0 when it is not an object. */
static int am2z__qset_parse(const char *json, size_t len, am2z__qset *s) {
    am2z_value *v = am2z_json_parse(json, len, NULL, NULL);
    int ok = am2z_value_type(v) == AM2Z_TYPE_OBJECT;
    memset(s, 0, sizeof *s);
    if (ok) {
        s->timeout_ms = am2z__qget_nonneg(v, "timeoutMs", 0);
        s->retry.max_attempts = am2z__qget_int(v, "attempts", 1);
        am2z__qbackoff_parse(am2z_value_find(v, "backoff", 7), &s->retry);
        s->priority = am2z__qget_int(v, "priority", 0);
        s->delay_ms = am2z__qget_nonneg(v, "delay", 0);
        s->rate = am2z__qget_int(v, "rateLimitPerMinute", 0);
        s->global_conc = am2z__qget_int(v, "globalConcurrency", 0);
        s->session_conc = am2z__qget_int(v, "sessionConcurrency", 0);
        if (s->global_conc > AM2Z_MAX_CONCURRENCY) s->global_conc = AM2Z_MAX_CONCURRENCY;
        if (s->session_conc > AM2Z_MAX_CONCURRENCY) s->session_conc = AM2Z_MAX_CONCURRENCY;
        am2z__qset_rate_parse(am2z_value_find(v, "sessionRate", 11), &s->session_rate);
    }
    am2z_value_release(v);
    return ok;
}

/* The cache entry of name, or NULL; under setmu. */
static am2z__qpub *am2z__qpub_find(am2z__qrt *q, const char *name) {
    am2z__qpub *e;
    for (e = q->pubs; e; e = e->next)
        if (strcmp(e->name, name) == 0) return e;
    return NULL;
}

/* The cache entry of name, made when missing (only for names registered or declared
   here, so the cache stays as small as the registry); under setmu. NULL when out of
   memory. */
static am2z__qpub *am2z__qpub_get(am2z__qrt *q, const char *name) {
    am2z__qpub *e = am2z__qpub_find(q, name);
    if (e) return e;
    e = (am2z__qpub *)am2z__malloc(sizeof *e);
    if (!e) return NULL;
    memset(e, 0, sizeof *e);
    e->name = am2z__strdup(name);
    e->key = am2z__qcat(q->bull, ":", q->prefix, "~");
    if (e->key) {
        char *k = am2z__qcat(e->key, name, ":am2z:settings", NULL);
        am2z__free(e->key);
        e->key = k;
    }
    if (!e->name || !e->key) {
        am2z__free(e->name);
        am2z__free(e->key);
        am2z__free(e);
        return NULL;
    }
    e->next = q->pubs;
    q->pubs = e;
    return e;
}

static void am2z__qpubs_free(am2z__qrt *q) {
    while (q->pubs) {
        am2z__qpub *e = q->pubs;
        q->pubs = e->next;
        am2z__free(e->name);
        am2z__free(e->key);
        am2z__free(e);
    }
}

/* Reads the published version of key and, when it is not known_version, the settings:
   1 with *version and *s (version 0: nothing published), 0 when Redis did not answer. */
static int am2z__qpub_read(am2z__qrt *q, const char *key, int64_t known_version, int64_t *version, am2z__qset *s,
                           int *have, int64_t cap_ns) {
    am2z_redis *r = am2z__qborrow_until(q, cap_ns, NULL);
    am2z_reply rep = am2z__qrep0();
    int ok = 0;
    if (!r) return 0;
    if (am2z_redis_command(r, &rep, "HGET %s version", key) == AM2Z_STATUS_OK) {
        ok = 1;
        *version = rep.type == AM2Z_REPLY_BULK ? am2z__qnum(am2z_reply_str(&rep), rep.len, 0, INT64_MAX, 0) : 0;
        *have = *version > 0;
        if (*have && *version != known_version) {
            ok = am2z_redis_command(r, &rep, "HGET %s settings", key) == AM2Z_STATUS_OK &&
                 (rep.type == AM2Z_REPLY_BULK || rep.type == AM2Z_REPLY_STRING);
            if (ok && !am2z__qset_parse(am2z_reply_str(&rep), rep.len, s)) {
                am2z_log_warn(q->logger, "queue runtime: the settings in %s are not a JSON object; ignored", key);
                *have = 0;
            }
        }
    }
    am2z_reply_clear(&rep);
    am2z_redis_pool_put(q->pool, r);
    return ok;
}

/* Each non-zero override in place of the workers' setting. */
static void am2z__qset_override(am2z__qset *s, const am2z_call_overrides *ov) {
    if (ov->timeout_ms > 0) s->timeout_ms = ov->timeout_ms;
    if (ov->max_attempts > 0) s->retry.max_attempts = ov->max_attempts;
    if (ov->backoff != AM2Z_BACKOFF_DEFAULT) s->retry.backoff = ov->backoff;
    if (ov->retry_delay_ms > 0) s->retry.delay_ms = ov->retry_delay_ms;
    if (ov->priority > 0) s->priority = ov->priority;
    if (ov->delay_ms > 0) s->delay_ms = ov->delay_ms;
}

/* The settings a job of proc gets here: the published ones (refreshed when the cache is
   older than settings_refresh_ms), else the desc of the processor registered here, with
   a declaration's overrides on top. AM2Z_STATUS_NOT_FOUND when proc is neither
   registered nor declared, or declared with nothing published (am2z__qnot_found says
   which). */
#define AM2Z__QSETTINGS_CHECK_NS 50000000 /* 50 ms for a version check of cached settings */
static am2z_status am2z__qsettings(am2z__qrt *q, const char *proc, am2z__qset *out) {
    am2z_processor *p = am2z_runtime_lookup(q->rt, proc);
    am2z__qpub *e;
    am2z__qset fresh;
    char *key = NULL;
    int64_t now = am2z_monotonic_ns(), known = 0, version = 0, cap = 0;
    int round, have = 0, found = 0;
    /* round 0 refreshes a stale entry (outside the lock) and goes round once more */
    for (round = 0; round < 2; round++) {
        am2z__mutex_lock(&q->setmu);
        e = p ? am2z__qpub_get(q, proc) : am2z__qpub_find(q, proc);
        if (e && !p && !e->declared) e = NULL; /* neither registered nor declared (any more) */
        if (e && round == 0 && (!e->checked_ns || (!e->have && !p) || q->settings_refresh_ms < 0 ||
                                now - e->checked_ns >= q->settings_refresh_ms * 1000000)) {
            /* one thread refreshes; the others use what is cached meanwhile, but with
               nothing cached for a declared name each reads: concurrent first calls were
               told "not published" */
            e->checked_ns = now;
            known = e->have ? e->version : 0;
            /* with settings cached, a Redis that does not answer at once keeps them: the
               check must not hold a call past its deadline (the first read has to wait) */
            cap = e->have ? now + AM2Z__QSETTINGS_CHECK_NS : 0;
            key = am2z__strdup(e->key);
        }
        if (!key && (found = e && (p || e->have))) {
            if (e->have) *out = e->set;
            else am2z__qset_of(q, p, out);
            if (e->declared) am2z__qset_override(out, &e->ov);
        }
        am2z__mutex_unlock(&q->setmu);
        if (!key) break;
        if (am2z__qpub_read(q, key, known, &version, &fresh, &have, cap)) {
            am2z__mutex_lock(&q->setmu);
            if ((e = am2z__qpub_find(q, proc)) != NULL && (!have || version != known)) {
                e->have = have;
                e->version = version;
                if (have) e->set = fresh;
            }
            am2z__mutex_unlock(&q->setmu);
        }
        am2z__free(key);
        key = NULL;
    }
    am2z_processor_release(p);
    return found ? AM2Z_STATUS_OK : AM2Z_STATUS_NOT_FOUND;
}

/* Why a job of proc could not be added with NOT_FOUND, as the caller's error. */
static am2z_error *am2z__qnot_found(am2z__qrt *q, const char *proc) {
    am2z__qpub *e;
    int declared = 0;
    char why[AM2Z_NAME_MAX + 200];
    am2z__mutex_lock(&q->setmu);
    for (e = q->pubs; e; e = e->next)
        if (strcmp(e->name, proc) == 0) { declared = e->declared; break; }
    am2z__mutex_unlock(&q->setmu);
    if (!declared) return am2z__runtime_not_found(q->rt, proc);
    snprintf(why, sizeof why, "'%s' is declared, but no worker has published its settings yet: start a worker "
             "that registers it", proc);
    return am2z_error_configuration(proc, why);
}

/* Records the submit failure of proc (am2z__submit_fail, with the reason a declared
   name without published settings has); returns st. */
static am2z_status am2z__qsubmit_fail(am2z__qrt *q, am2z_status st, const char *proc, const char *session) {
    am2z_error *e;
    if (st != AM2Z_STATUS_NOT_FOUND || !proc) return am2z__submit_fail(st, proc, session);
    e = am2z__qnot_found(q, proc);
    if (e && e->kind == AM2Z_ERROR_CONFIGURATION) st = am2z__fail(st, AM2Z_NTS, "submit '%s': %s", proc, e->message);
    else st = am2z__submit_fail(st, proc, session);
    am2z_error_release(e);
    return st;
}

/* A worker publishes the settings of p (registered here) and seeds its cache with them;
   its Redis work ends by cap_ns (register's one command timeout). */
static void am2z__qpublish(am2z__qrt *q, const am2z_processor *p, int64_t cap_ns) {
    const char *name = am2z_processor_name(p);
    am2z__qsb js = am2z__qsb0();
    am2z__qset set;
    am2z__qpub *e;
    am2z_reply rep = am2z__qrep0();
    am2z_redis *r;
    char *key = NULL, *meta = NULL, now[24], rate[24], conc[24];
    const char *argv[7];
    am2z__qset_of(q, p, &set);
    am2z__qsb_settings(&js, &set);
    am2z__mutex_lock(&q->setmu);
    e = am2z__qpub_get(q, name);
    key = e ? am2z__strdup(e->key) : NULL;
    am2z__mutex_unlock(&q->setmu);
    meta = am2z__qcat(q->bull, ":", q->prefix, "~");
    if (meta) {
        char *m = am2z__qcat(meta, name, ":meta", NULL);
        am2z__free(meta);
        meta = m;
    }
    if (js.bad || !key || !meta || !(r = am2z__qborrow_until(q, cap_ns, NULL))) {
        am2z_log_warn(q->logger, "queue runtime: cannot publish the settings of '%s' (out of memory or no Redis)", name);
        am2z__qsb_free(&js); am2z__free(key); am2z__free(meta);
        return;
    }
    snprintf(now, sizeof now, "%lld", (long long)am2z_now_ms());
    snprintf(rate, sizeof rate, "%d", set.rate);
    snprintf(conc, sizeof conc, "%d", set.global_conc);
    argv[0] = key; argv[1] = meta; argv[2] = js.p; argv[3] = q->instance; argv[4] = now; argv[5] = rate;
    argv[6] = conc;
    if (am2z__qeval(r, &rep, q->s_settings, 7, argv, NULL) != AM2Z_STATUS_OK || rep.type != AM2Z_REPLY_ARRAY ||
        rep.len != 4) {
        am2z_log_warn(q->logger, "queue runtime: publishing the settings of '%s' failed: %s", name,
                      rep.type == AM2Z_REPLY_ERROR ? am2z_reply_str(&rep) : am2z_status_detail());
    } else {
        int64_t version = am2z__qel_int(&rep, 0);
        if (am2z__qel_int(&rep, 1) == 1)
            am2z_log_warn(q->logger, "queue runtime: '%s': these settings %s replace %.400s, published by instance "
                          "%.64s; the newest registration wins (version %lld)", name, js.p, am2z__qel(&rep, 2, NULL),
                          am2z__qel(&rep, 3, NULL), (long long)version);
        am2z__mutex_lock(&q->setmu);
        if ((e = am2z__qpub_find(q, name)) != NULL) {
            e->have = 1;
            e->version = version;
            e->set = set;
            e->checked_ns = am2z_monotonic_ns();
        }
        am2z__mutex_unlock(&q->setmu);
    }
    am2z_reply_clear(&rep);
    am2z_redis_pool_put(q->pool, r);
    am2z__qsb_free(&js);
    am2z__free(key);
    am2z__free(meta);
}

AM2Z_API am2z_status am2z_queue_declare(am2z_runtime *rt, const char *name, const am2z_call_overrides *overrides) {
    am2z__qrt *q = am2z__qof(rt);
    am2z__qpub *e;
    if (!q) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "declare: not a queue runtime");
    if (!am2z__qname_ok(name))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "declare: the name must be 1..%d bytes of [A-Za-z0-9_.-]", AM2Z_NAME_MAX);
    if (overrides && (overrides->timeout_ms < 0 || overrides->max_attempts < 0 || overrides->retry_delay_ms < 0 ||
                      overrides->priority < 0 || overrides->delay_ms < 0))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "declare '%s': an override is negative", name);
    if (overrides && (overrides->backoff < AM2Z_BACKOFF_DEFAULT || overrides->backoff > AM2Z_BACKOFF_EXPONENTIAL))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "declare '%s': unknown backoff %d", name,
                          (int)overrides->backoff);
    am2z__mutex_lock(&q->setmu);
    e = am2z__qpub_get(q, name);
    if (e) {
        e->declared = 1;
        if (overrides) e->ov = *overrides;
        else memset(&e->ov, 0, sizeof e->ov);
    }
    am2z__mutex_unlock(&q->setmu);
    return e ? AM2Z_STATUS_OK : am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "declare '%s': out of memory", name);
}

AM2Z_API am2z_value *am2z_queue_settings(am2z_runtime *rt, const char *name, am2z_status *status) {
    am2z__qrt *q = am2z__qof(rt);
    am2z_redis *r;
    am2z_reply rep = am2z__qrep0();
    am2z_value *out = NULL, *set;
    am2z_status st = AM2Z_STATUS_OK;
    char key[3 * AM2Z_NAME_MAX + 64];
    if (!q || !am2z__qname_ok(name))
        return (am2z_value *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "settings: %s", q ? "bad processor name" : "not a queue runtime"));
    snprintf(key, sizeof key, "%s:%s~%s:am2z:settings", q->bull, q->prefix, name);
    if (!(r = am2z__qborrow(q, &st)))
        return (am2z_value *)am2z__put_status(status, am2z__fail(st, AM2Z_NTS, "settings '%s': no connection", name));
    st = am2z_redis_command(r, &rep, "HMGET %s version instance publishedAt settings", key);
    am2z_redis_pool_put(q->pool, r);
    if (st == AM2Z_STATUS_OK && (rep.type != AM2Z_REPLY_ARRAY || rep.len != 4 || !am2z__qel(&rep, 3, NULL)))
        st = am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "settings '%s': nothing published in %s", name, key);
    else if (st != AM2Z_STATUS_OK)
        st = am2z__fail(st, AM2Z_NTS, "settings '%s': %s", name, am2z_status_detail());
    if (st == AM2Z_STATUS_OK) {
        size_t n = 0;
        const char *js = am2z__qel(&rep, 3, &n);
        set = am2z_json_parse(js, n, NULL, NULL);
        if (am2z_value_type(set) != AM2Z_TYPE_OBJECT) {
            am2z_value_release(set);
            st = am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "settings '%s': %s holds no JSON object", name, key);
        } else {
            out = am2z_value_set(am2z_value_object(), "version", am2z_value_int(am2z__qel_int(&rep, 0)));
            out = am2z_value_set(out, "instance", am2z_value_string(am2z__qel(&rep, 1, NULL) ? am2z__qel(&rep, 1, NULL) : ""));
            out = am2z_value_set(out, "publishedAt", am2z_value_int(am2z__qel_int(&rep, 2)));
            out = am2z_value_set(out, "settings", set);
            if (!out) st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "settings '%s': out of memory", name);
        }
    }
    am2z_reply_clear(&rep);
    if (status) *status = st;
    return out;
}

/* -- producing jobs -- */

/* An upper bound of the backoff before attempt + 1 (the documented formula, no jitter). */
static int64_t am2z__qbackoff_bound(const am2z_retry_policy *rp, int attempt) {
    double base = rp->delay_ms > 0 ? (double)rp->delay_ms : 100.0;
    double mult = rp->multiplier > 0 ? rp->multiplier : 2.0;
    double cap = rp->max_delay_ms > 0 ? (double)rp->max_delay_ms : 30000.0;
    double d = base;
    int i;
    if (rp->backoff == AM2Z_BACKOFF_LINEAR) d = base * attempt;
    else if (rp->backoff != AM2Z_BACKOFF_FIXED)
        for (i = 1; i < attempt && d < cap; i++) d *= mult;
    return (int64_t)(d < cap ? d : cap);
}

static int64_t am2z__qsat(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }

/* ms as monotonic nanoseconds, negative as 0 and capped at ~3 years (as the local
   runtime caps deadlines), so a deadline of absurd length cannot overflow int64. */
#define AM2Z__QMAX_WAIT_MS ((int64_t)100000000000)
static int64_t am2z__qns(int64_t ms) {
    return (ms < 0 ? 0 : ms > AM2Z__QMAX_WAIT_MS ? AM2Z__QMAX_WAIT_MS : ms) * 1000000;
}

/* How long one execution with settings s may take from submission: every attempt's
   timeout, the backoffs between them and the queue delay. */
static int64_t am2z__qbudget(const am2z__qrt *q, const am2z__qset *s) {
    int64_t t = s->timeout_ms > 0 ? s->timeout_ms : q->default_timeout_ms, total = 0;
    int att = s->retry.max_attempts > 0 ? s->retry.max_attempts : 1, i;
    for (i = 1; i <= att && total < AM2Z__QMAX_WAIT_MS; i++) { /* attempts may be INT_MAX */
        total = am2z__qsat(total, t);
        if (i < att) total = am2z__qsat(total, am2z__qbackoff_bound(&s->retry, i));
    }
    if (s->delay_ms > 0) total = am2z__qsat(total, s->delay_ms);
    return total;
}

static void am2z__qkeep_json(am2z__qsb *b, int64_t count, int64_t age) {
    if (count == AM2Z_QUEUE_KEEP_NONE) { am2z__qsb_str(b, "true"); return; }
    if (count == AM2Z_QUEUE_KEEP_ALL && age < 0) { am2z__qsb_str(b, "false"); return; }
    am2z__qsb_str(b, "{");
    if (count >= 0) { am2z__qsb_str(b, "\"count\":"); am2z__qsb_i64(b, count); }
    if (age >= 0) { am2z__qsb_str(b, count >= 0 ? ",\"age\":" : "\"age\":"); am2z__qsb_i64(b, age); }
    am2z__qsb_str(b, "}");
}

/* -- idempotent jobs (am2z_submit_desc.idempotency_key; IDEMPOTENCY in am2z.h 7) -- */

/* The job id of a key: "<processor, cut to fit>-i-<32 hex of SHA-256(processor NUL
   session NUL key)>": the same in every process, and never an execution id's shape. */
/* "<name, cut to fit>-i-<the first 32 hex of c's digest>" into id (c is finished). */
static void am2z__qidem_shape(const char *name, am2z_sha256_ctx *c, char id[AM2Z_EXECUTION_ID_SIZE]) {
    unsigned char dg[AM2Z_SHA256_SIZE];
    char hex[2 * AM2Z_SHA256_SIZE + 1];
    size_t n = strlen(name), max = AM2Z_EXECUTION_ID_SIZE - 1 - 3 - 32;
    am2z_sha256_final(c, dg);
    am2z_sha256_to_hex(dg, hex);
    if (n > max) n = max;
    memcpy(id, name, n);
    memcpy(id + n, "-i-", 3);
    memcpy(id + n + 3, hex, 32);
    id[n + 35] = '\0';
}

static void am2z__qidem_id(const char *proc, const char *session, const char *key, char id[AM2Z_EXECUTION_ID_SIZE]) {
    am2z_sha256_ctx c;
    am2z_sha256_init(&c);
    am2z_sha256_update(&c, proc, strlen(proc) + 1);
    am2z_sha256_update(&c, session, strlen(session) + 1);
    am2z_sha256_update(&c, key, strlen(key));
    am2z__qidem_shape(proc, &c, id);
}

/* Non-zero for an idempotent job's id (what the scripts match as '%-i%-%x+$'). */
static int am2z__qidem_is(const char *id) {
    size_t n = strlen(id), i;
    if (n < 35 || memcmp(id + n - 35, "-i-", 3) != 0) return 0;
    for (i = n - 32; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return 0;
    return 1;
}

/* One prepared add: the waiter (in the table) and the script's arguments. Adds of the
   same queue are sent together: argv[0..AM2Z__QADD_SHARED) is shared, then (id, data, opts)
   per job. */
#define AM2Z__QADD_SHARED 17
#define AM2Z__QADD_GROUP 128 /* jobs per add script call */
typedef struct am2z__qadd {
    am2z__qwait *w;
    am2z__qsb data, opts;
    char ts[24], delay[24], prio[24], rate[48], child[2], conc[24];
    char take[64];              /* set: the job goes straight to the caller (locked) */
    const char *argv[AM2Z__QADD_SHARED];
} am2z__qadd;

static void am2z__qadd_free(am2z__qadd *a) {
    am2z__qsb_free(&a->data);
    am2z__qsb_free(&a->opts);
}

/* The meta concurrency an add writes (the add script's ARGV[17]): a session queue gets
   the smaller of global_concurrency and session_concurrency ("0": none, removed); the
   global queue's is the workers' (the settings script), so an add leaves it (""). */
static void am2z__qadd_conc(const am2z__qset *set, int session_queue, char out[24]) {
    int cap = set->global_conc;
    if (set->session_conc > 0 && (cap <= 0 || set->session_conc < cap)) cap = set->session_conc;
    if (session_queue) snprintf(out, 24, "%d", cap > 0 ? cap : 0);
    else out[0] = 0;
}

/* -- traces (TRACES) -- */

/* The trace fields of a job's envelope: a traced top-level execution names itself as
   the root; a call from a traced run names the root and the calling attempt
   ("<execution id>#<attempt>"), under which the callee's span goes. */
static void am2z__qtrace_envelope(am2z__qrt *q, am2z__qadd *a, am2z__qwait *w, const am2z__qrun *parent,
                                  const am2z_submit_desc *desc) {
    char gid[96];
    if (parent ? !parent->trace_root : !q->trace && !(desc && desc->trace)) return;
    am2z__qsb_str(&a->data, ",\"traceRoot\":");
    am2z__qsb_jstr(&a->data, parent ? parent->trace_root : w->id);
    if (!parent) {
        w->trace = 1;
        w->trace_max = desc ? desc->trace_max_spans : 0;
        return;
    }
    snprintf(gid, sizeof gid, "%s#%d", parent->exec_id, parent->ctx.meta.attempt);
    am2z__qsb_str(&a->data, ",\"traceParent\":");
    am2z__qsb_jstr(&a->data, gid);
}

typedef struct am2z__qtspan {
    am2z_value *v;      /* the pushed item {gid, pgid, worker, span} */
    int64_t depth, start;
} am2z__qtspan;

static int am2z__qtspan_cmp(const void *a, const void *b) {
    const am2z__qtspan *x = (const am2z__qtspan *)a, *y = (const am2z__qtspan *)b;
    if (x->depth != y->depth) return x->depth < y->depth ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* The spans the workers pushed for traced execution w, as its outcome's trace (parents
   first: sorted by depth, then start), and the list deleted. A span that cannot be read
   is left out; so is a part of the tree whose attempt still runs. */
static void am2z__qtrace_collect(am2z__qwait *w, am2z_outcome *out) {
    am2z__qrt *q = w->q;
    char *key = am2z__qcat(q->C, "trace:", w->id, NULL);
    am2z_redis *r = key ? am2z__qborrow(q, NULL) : NULL;
    am2z_reply rep = am2z__qrep0(), del = am2z__qrep0();
    am2z__qtspan *sp = NULL;
    am2z_value *arr = am2z_value_array();
    size_t i, k, n = 0;
    out->trace = am2z_trace_new(w->trace_max);
    if (r && am2z_redis_command(r, &rep, "LRANGE %s 0 -1", key) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY) {
        am2z_redis_command(r, &del, "DEL %s", key);
        if (rep.len) sp = (am2z__qtspan *)am2z__malloc(rep.len * sizeof *sp);
        for (i = 0; sp && i < rep.len; i++) {
            am2z_value *v = am2z_json_parse(am2z_reply_str(&rep.element[i]), rep.element[i].len, NULL, NULL);
            if (am2z_value_type(am2z_value_get(v, "span")) != AM2Z_TYPE_OBJECT || !am2z_value_get_string(v, "gid", NULL)) {
                am2z_value_release(v);
                continue;
            }
            sp[n].v = v;
            sp[n].depth = am2z_value_get_int(v, "span.callDepth", 0);
            sp[n].start = am2z_value_get_int(v, "span.startNs", 0);
            n++;
        }
        if (n) qsort(sp, n, sizeof *sp, am2z__qtspan_cmp);
    }
    if (r) am2z_redis_pool_put(q->pool, r);
    for (i = 0; i < n; i++) { /* renumbered 1..n, parents by gid */
        const char *pgid = am2z_value_get_string(sp[i].v, "pgid", ""), *wk = am2z_value_get_string(sp[i].v, "worker", "");
        am2z_value *s = am2z_value_retain(am2z_value_get(sp[i].v, "span"));
        int64_t parent = 0;
        for (k = 0; k < i && !parent; k++)
            if (!strcmp(pgid, am2z_value_get_string(sp[k].v, "gid", ""))) parent = (int64_t)k + 1;
        s = am2z_value_set(s, "id", am2z_value_int((int64_t)i + 1));
        s = am2z_value_set(s, "parent", am2z_value_int(parent));
        s = am2z_value_set(s, "worker", am2z_value_string(strcmp(wk, q->instance) ? wk : ""));
        arr = am2z_value_append(arr, "", s);
    }
    if (out->trace && arr) am2z_trace_add_json(out->trace, arr, 0, NULL);
    for (i = 0; i < n; i++) am2z_value_release(sp[i].v);
    am2z__free(sp);
    am2z_value_release(arr);
    am2z_reply_clear(&rep);
    am2z_reply_clear(&del);
    am2z__free(key);
}

/* Registers the waiter of a new execution and prepares its job. parent: the running job
   that calls (NULL for a top-level execution); group: the notify of a call_many (NULL:
   the waiter's own). Returns AM2Z_STATUS_OK, or NOT_FOUND (neither registered nor
   declared here, or no settings published), INVALID_ARGUMENT (bad session name),
   NO_MEMORY. */
static am2z_status am2z__qadd_prep(am2z__qrt *q, am2z__qadd *a, const char *proc, const am2z_state *input,
                                   const char *session, const am2z__qrun *parent, am2z__qnotify *group,
                                   const am2z_submit_desc *desc) {
    am2z__qset set;
    am2z__qwait *w;
    const char *meta_session;
    int64_t now = am2z_now_ms(), budget, deadline, delay, call_delay = 0;
    int prio;
    am2z_status st;
    memset(a, 0, sizeof *a);
    if (!am2z__qname_ok(proc)) return AM2Z_STATUS_NOT_FOUND;
    if (session && !am2z__qname_ok(session)) return AM2Z_STATUS_INVALID_ARGUMENT;
    if ((st = am2z__qsettings(q, proc, &set)) != AM2Z_STATUS_OK) return st;
    w = (am2z__qwait *)am2z__malloc(sizeof *w);
    if (!w) return AM2Z_STATUS_NO_MEMORY;
    memset(w, 0, sizeof *w);
    if (!am2z__qnotify_init(&w->own)) { am2z__free(w); return AM2Z_STATUS_NO_MEMORY; }
    w->base.rt = q->rt;
    w->base.id = w->id;
    w->q = q;
    w->refs = 1;
    w->nt = group ? group : &w->own;
    meta_session = session ? session : parent ? parent->session : "default";
    if (desc && desc->idempotency_key) am2z__qidem_id(proc, meta_session, desc->idempotency_key, w->id);
    else if (desc && desc->durable) am2z__qdx_job_id(desc->execution_id, w->id);
    else am2z_execution_id_generate(proc, w->id);
    w->durable = desc && desc->durable;
    w->session = am2z__strdup(meta_session);
    w->input = am2z_value_retain(input);
    w->submitted_ms = now;
    w->started_ns = am2z_monotonic_ns();
    budget = am2z__qbudget(q, &set);
    if (desc && (call_delay = am2z__submit_delay(desc, now)) > 0) /* the call's delay replaces the processor's */
        budget = am2z__qsat(budget, call_delay - (set.delay_ms > 0 ? set.delay_ms : 0));
    deadline = am2z__qsat(now, budget);
    if (parent && parent->deadline_ns) {
        int64_t left = (parent->deadline_ns - w->started_ns) / 1000000;
        if (now + left < deadline) deadline = now + left;
    }
    w->deadline_ns = w->started_ns + am2z__qns(deadline - now);
    w->qu = am2z__qqueue_get(q, proc, session, 1);
    if (!w->session || !w->qu) {
        am2z__qwait_release(w);
        return AM2Z_STATUS_NO_MEMORY;
    }
    am2z__atomic_store(&w->qu->added_ms, now, AM2Z__MO_RELAXED); /* its idle threads register (HAND-OFF) */
    /* data: the envelope, with the state last */
    am2z__qsb_str(&a->data, "{\"am2z\":1,\"processorName\":");
    am2z__qsb_jstr(&a->data, proc);
    am2z__qsb_str(&a->data, ",\"executionId\":");
    am2z__qsb_jstr(&a->data, w->id);
    am2z__qsb_str(&a->data, ",\"sessionId\":");
    am2z__qsb_jstr(&a->data, meta_session);
    am2z__qsb_str(&a->data, ",\"callDepth\":");
    am2z__qsb_i64(&a->data, parent ? parent->depth + 1 : 0);
    am2z__qsb_str(&a->data, ",\"deadline\":");
    am2z__qsb_i64(&a->data, w->durable ? 0 : deadline); /* durable: run however late (4.11) */
    am2z__qsb_str(&a->data, ",\"timeoutMs\":");
    am2z__qsb_i64(&a->data, set.timeout_ms > 0 ? set.timeout_ms : q->default_timeout_ms);
    am2z__qsb_str(&a->data, ",\"replyTo\":");
    am2z__qsb_jstr(&a->data, q->reply_key);
    if (parent) {
        am2z__qsb_str(&a->data, ",\"parentExecutionId\":");
        am2z__qsb_jstr(&a->data, parent->exec_id);
    }
    if (w->durable) {
        am2z__qsb_str(&a->data, ",\"durableId\":");
        am2z__qsb_jstr(&a->data, desc->execution_id);
    }
    am2z__qtrace_envelope(q, a, w, parent, desc);
    am2z__qsb_str(&a->data, ",\"state\":");
    am2z__qsb_json(&a->data, input);
    am2z__qsb_str(&a->data, "}");
    /* opts, as BullMQ names them */
    prio = set.priority > 0 ? set.priority : 0;
    if (prio > 2097151) prio = 2097151;
    delay = call_delay > 0 ? call_delay : set.delay_ms > 0 ? set.delay_ms : 0;
    am2z__qsb_str(&a->opts, "{\"attempts\":");
    am2z__qsb_i64(&a->opts, set.retry.max_attempts > 0 ? set.retry.max_attempts : 1);
    am2z__qsb_str(&a->opts, ",\"backoff\":");
    am2z__qsb_backoff(&a->opts, &set.retry);
    am2z__qsb_str(&a->opts, ",\"priority\":");
    am2z__qsb_i64(&a->opts, prio);
    am2z__qsb_str(&a->opts, ",\"delay\":");
    am2z__qsb_i64(&a->opts, delay);
    am2z__qsb_str(&a->opts, ",\"jobId\":");
    am2z__qsb_jstr(&a->opts, w->id);
    am2z__qsb_str(&a->opts, ",\"removeOnComplete\":");
    am2z__qkeep_json(&a->opts, q->keep_c, q->keep_c_age);
    am2z__qsb_str(&a->opts, ",\"removeOnFail\":");
    am2z__qkeep_json(&a->opts, q->keep_f, q->keep_f_age);
    if (desc && (desc->idempotency_key || w->durable)) { /* read by the add script when the key comes again */
        am2z__qsb_str(&a->opts, ",\"am2zKeepMs\":");
        /* durable: the done record answers a finished id; a forgotten one runs afresh */
        am2z__qsb_i64(&a->opts, w->durable || desc->keep_ms < 0 ? 0 : desc->keep_ms ? desc->keep_ms
                                                                                   : AM2Z_IDEMPOTENCY_KEEP_MS);
        am2z__qsb_str(&a->opts, desc->forget_failures ? ",\"am2zForget\":1" : ",\"am2zForget\":0");
    }
    am2z__qsb_str(&a->opts, "}");
    if (a->data.bad || a->opts.bad) {
        am2z__qadd_free(a);
        am2z__qwait_release(w);
        return AM2Z_STATUS_NO_MEMORY;
    }
    snprintf(a->ts, sizeof a->ts, "%lld", (long long)now);
    snprintf(a->delay, sizeof a->delay, "%lld", (long long)delay);
    snprintf(a->prio, sizeof a->prio, "%d", prio);
    a->child[0] = parent && session ? '1' : '0';
    if (set.rate > 0) snprintf(a->rate, sizeof a->rate, "%d", set.rate);
    if (session && set.session_rate.max > 0) /* the session queue's limiter: "max:per_ms" */
        snprintf(a->rate, sizeof a->rate, "%d:%lld", set.session_rate.max, (long long)set.session_rate.per_ms);
    am2z__qadd_conc(&set, session != NULL, a->conc);
    a->argv[0] = w->qu->P;
    a->argv[1] = w->qu->proc;
    a->argv[2] = a->ts;
    a->argv[3] = a->delay;
    a->argv[4] = a->prio;
    a->argv[5] = am2z__qev_level(q, w->qu);
    a->argv[6] = w->qu->wk;
    a->argv[7] = w->qu->wm;
    a->argv[8] = w->qu->sset;
    a->argv[9] = w->qu->name;
    a->argv[10] = session ? q->sessions_key : "";
    a->argv[11] = session ? session : "";
    a->argv[12] = a->child;
    a->argv[13] = a->rate;
    a->argv[14] = a->take;
    a->argv[15] = q->lock_s;
    a->argv[16] = a->conc;
    a->w = w;
    am2z__qwait_insert(q, w);
    return AM2Z_STATUS_OK;
}

/* The add script's answer for a group of n: n added (or {n, taken job}); -1 the session
   is gone. */
static am2z_status am2z__qadd_result(am2z__qrt *q, am2z_status st, const am2z_reply *rep, am2z_redis *r, size_t n) {
    const am2z_reply *c = rep->type == AM2Z_REPLY_ARRAY ? am2z_reply_at(rep, 0) : rep;
    if (st == AM2Z_STATUS_OK && c && c->type == AM2Z_REPLY_INTEGER && c->integer == (int64_t)n) return AM2Z_STATUS_OK;
    if (st == AM2Z_STATUS_OK && c && c->type == AM2Z_REPLY_INTEGER && c->integer == -1) return AM2Z_STATUS_CANCELLED;
    if (st == AM2Z_STATUS_OK) st = am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "redis %s: unexpected answer", r->endpoint);
    am2z_log_warn(q->logger, "queue runtime: adding jobs failed: %s",
                  rep->type == AM2Z_REPLY_ERROR ? am2z_reply_str(rep) : am2z_status_detail());
    return st;
}

/* Moves the job an add took for its caller ({n, job}) into *taken. */
static void am2z__qadd_taken(am2z_reply *rep, const am2z__qadd *a, am2z__qjob *taken) {
    if (!taken || rep->type != AM2Z_REPLY_ARRAY || rep->len != 2) return;
    if (rep->element[1].type != AM2Z_REPLY_ARRAY || am2z__qel_int(&rep->element[1], 0) != 1) return;
    taken->rep = rep->element[1];
    memset(&rep->element[1], 0, sizeof rep->element[1]);
    snprintf(taken->token, sizeof taken->token, "%s", a->take);
    am2z__atomic_inc(&a->w->qu->refs);
    taken->qu = a->w->qu;
}

/* The argument vector of adds a[0..n) (all of one queue), in a fresh array. */
static const char **am2z__qadd_argv(const am2z__qadd *a, size_t n, size_t **lens_out) {
    size_t argc = AM2Z__QADD_SHARED + 3 * n, i;
    const char **argv = (const char **)am2z__malloc(argc * sizeof *argv);
    size_t *lens = (size_t *)am2z__malloc(argc * sizeof *lens);
    if (!argv || !lens) { am2z__free(argv); am2z__free(lens); return NULL; }
    for (i = 0; i < AM2Z__QADD_SHARED; i++) { argv[i] = a[0].argv[i]; lens[i] = strlen(argv[i]); }
    for (i = 0; i < n; i++) {
        size_t k = AM2Z__QADD_SHARED + 3 * i;
        argv[k] = a[i].w->id; lens[k] = strlen(a[i].w->id);
        argv[k + 1] = a[i].data.p; lens[k + 1] = a[i].data.n;
        argv[k + 2] = a[i].opts.p; lens[k + 2] = a[i].opts.n;
    }
    *lens_out = lens;
    return argv;
}

/* Sends n prepared adds on r: consecutive adds of one queue go in one script call, the
   calls in one pipeline; st[i] gets each one's status. Waiters of failed adds are taken
   out of the table (their owner still holds them). When a[0].take is set, *taken gets
   that job, locked (its qu is NULL when it could not be taken). */
static void am2z__qadd_send(am2z__qrt *q, am2z_redis *r, am2z__qadd *a, size_t n, am2z_status *st,
                            am2z__qjob *taken) {
    size_t i, j, k, g, ngroups = 0, *gstart, *glen, total = n;
    am2z_reply rep = am2z__qrep0();
    int noscript = 0;
    gstart = (size_t *)am2z__malloc((n + 1) * sizeof *gstart);
    glen = (size_t *)am2z__malloc((n + 1) * sizeof *glen);
    if (!gstart || !glen) {
        for (i = 0; i < n; i++) st[i] = AM2Z_STATUS_NO_MEMORY;
        n = 0;
    }
    for (i = 0; i < n; i = j) {
        for (j = i + 1; j < n && j - i < AM2Z__QADD_GROUP && a[j].w->qu == a[i].w->qu &&
                        a[j].child[0] == a[i].child[0]; j++) {}
        gstart[ngroups] = i;
        glen[ngroups++] = j - i;
    }
    for (g = 0; g < ngroups; g++) {
        size_t *lens = NULL;
        const char **argv = am2z__qadd_argv(a + gstart[g], glen[g], &lens);
        am2z_status s = argv ? am2z_redis_append_evalsha(r, q->s_add, 0, AM2Z__QADD_SHARED + 3 * glen[g], argv, lens)
                             : AM2Z_STATUS_NO_MEMORY;
        am2z__free(argv);
        am2z__free(lens);
        for (k = 0; k < glen[g]; k++) st[gstart[g] + k] = s;
        if (s != AM2Z_STATUS_OK) { ngroups = g; break; }
    }
    for (g = 0; g < ngroups; g++) {
        am2z_status s = am2z_redis_read(r, &rep);
        if (s == AM2Z_STATUS_SERVER && rep.type == AM2Z_REPLY_ERROR && strncmp(am2z_reply_str(&rep), "NOSCRIPT", 8) == 0) {
            noscript = 1;
            s = AM2Z_STATUS_NOT_FOUND;
        } else {
            s = am2z__qadd_result(q, s, &rep, r, glen[g]);
            if (s == AM2Z_STATUS_OK && gstart[g] == 0) am2z__qadd_taken(&rep, &a[0], taken);
        }
        am2z_reply_clear(&rep);
        for (k = 0; k < glen[g]; k++) st[gstart[g] + k] = s;
        if (!am2z_redis_is_connected(r)) {
            for (g++; g < ngroups; g++)
                for (k = 0; k < glen[g]; k++) st[gstart[g] + k] = AM2Z_STATUS_IO;
            break;
        }
    }
    /* a fresh server: EVALSHA with its EVAL fallback loads the script */
    for (g = 0; noscript && g < ngroups; g++) {
        size_t *lens = NULL;
        const char **argv;
        am2z_status s;
        if (st[gstart[g]] != AM2Z_STATUS_NOT_FOUND) continue;
        argv = am2z__qadd_argv(a + gstart[g], glen[g], &lens);
        s = argv ? am2z__qeval(r, &rep, q->s_add, AM2Z__QADD_SHARED + 3 * glen[g], argv, lens) : AM2Z_STATUS_NO_MEMORY;
        s = am2z__qadd_result(q, s, &rep, r, glen[g]);
        if (s == AM2Z_STATUS_OK && gstart[g] == 0) am2z__qadd_taken(&rep, &a[0], taken);
        am2z_reply_clear(&rep);
        am2z__free(argv);
        am2z__free(lens);
        for (k = 0; k < glen[g]; k++) st[gstart[g] + k] = s;
    }
    am2z__free(gstart);
    am2z__free(glen);
    for (i = 0; i < total; i++)
        if (st[i] != AM2Z_STATUS_OK) {
            am2z__qwait *t = am2z__qwait_take(q, a[i].w->id, strlen(a[i].w->id));
            if (t) am2z__qwait_release(t);
        }
}

static void am2z__qforeign_deliver(am2z__qwait *t, const char *rv, size_t rvn, const char *fr, size_t frn,
                                   const char *stk, size_t stn, int atm);

/* Sends the add of an idempotent job (alone in its script call). The script adds it, or
   finds it: finished and kept ({'done', ...}: the outcome from its hash, delivered now)
   or not finished ({'joined'}: the finish scripts answer this caller). */
static am2z_status am2z__qidem_send(am2z__qrt *q, am2z_redis *r, am2z__qadd *a) {
    size_t *lens = NULL;
    const char **argv = am2z__qadd_argv(a, 1, &lens);
    am2z_reply rep = am2z__qrep0();
    am2z_status st = argv ? am2z__qeval(r, &rep, q->s_add, AM2Z__QADD_SHARED + 3, argv, lens) : AM2Z_STATUS_NO_MEMORY;
    const char *tag = st == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY ? am2z__qel(&rep, 0, NULL) : NULL;
    if (tag && strcmp(tag, "done") == 0 && rep.len == 6) {
        size_t rvn = 0, frn = 0, stn = 0;
        const char *rv = am2z__qel(&rep, 2, &rvn), *fr = am2z__qel(&rep, 3, &frn), *stk = am2z__qel(&rep, 5, &stn);
        am2z__qwait *t = am2z__qwait_take(q, a->w->id, strlen(a->w->id));
        if (t) am2z__qforeign_deliver(t, rv, rvn, fr, frn, stk, stn, (int)am2z__qel_num(&rep, 4, 0, AM2Z__QMAX_COUNT, 0));
    } else if (!tag || strcmp(tag, "joined") != 0) {
        st = am2z__qadd_result(q, st, &rep, r, 1);
    }
    am2z_reply_clear(&rep);
    am2z__free(argv);
    am2z__free(lens);
    if (st != AM2Z_STATUS_OK) {
        am2z__qwait *t = am2z__qwait_take(q, a->w->id, strlen(a->w->id));
        if (t) am2z__qwait_release(t);
    }
    return st;
}

/* Emits session:created the first time this process uses a session. */
static void am2z__qsession_used(am2z__qrt *q, const char *session) {
    size_t i;
    int fresh = 1;
    am2z_value *data;
    am2z__mutex_lock(&q->mu);
    for (i = 0; i < q->nsessions; i++)
        if (strcmp(q->sessions[i], session) == 0) { fresh = 0; break; }
    if (fresh) {
        char *s = am2z__strdup(session);
        if (s && q->nsessions == q->capsessions) {
            size_t cap = q->capsessions ? q->capsessions * 2 : 16;
            char **ns = (char **)am2z__realloc(q->sessions, cap * sizeof *ns);
            if (ns) { q->sessions = ns; q->capsessions = cap; }
        }
        if (s && q->nsessions < q->capsessions) q->sessions[q->nsessions++] = s;
        else { am2z__free(s); fresh = 0; }
    }
    am2z__mutex_unlock(&q->mu);
    if (!fresh) return;
    data = am2z_value_set(am2z_value_object(), "sessionId", am2z_value_string(session));
    am2z_runtime_emit(q->rt, "session:created", data);
    am2z_value_release(data);
}


/* Hands id's cancel key to the maintenance thread (or the end of a stop), so a caller
   at its deadline does not wait for Redis. Out of memory: the job runs to its end. */
static void am2z__qcancel_later(am2z__qrt *q, const char *id) {
    char *c = am2z__strdup(id);
    am2z__mutex_lock(&q->mnt.mu);
    if (c && q->nlate == q->caplate) {
        size_t cap = q->caplate ? q->caplate * 2 : 16;
        char **nl = (char **)am2z__realloc(q->late, cap * sizeof *nl);
        if (nl) { q->late = nl; q->caplate = cap; }
    }
    if (c && q->nlate < q->caplate) { q->late[q->nlate++] = c; c = NULL; }
    am2z__cond_broadcast(&q->mnt.cv);
    am2z__mutex_unlock(&q->mnt.mu);
    am2z__free(c);
}
/* Sets the cancel keys handed over by am2z__qcancel_later, on conn. */
static void am2z__qcancel_flush(am2z__qrt *q, am2z_redis *conn) {
    char **ids;
    size_t n, i;
    am2z__mutex_lock(&q->mnt.mu);
    ids = q->late;
    n = q->nlate;
    q->late = NULL;
    q->nlate = q->caplate = 0;
    am2z__mutex_unlock(&q->mnt.mu);
    if (conn) am2z__qcancel_keys(q, conn, (const char *const *)ids, n);
    for (i = 0; i < n; i++) am2z__free(ids[i]);
    am2z__free(ids);
}

/* Ends a waiter that is still waiting with err (consumed); tells its job to cancel. */
static void am2z__qexpire(am2z__qwait *w, am2z_error *err) {
    am2z__qwait *t = am2z__qwait_take(w->q, w->id, strlen(w->id));
    if (!t) { am2z_error_release(err); return; }
    t->error = err;
    if (!t->durable) am2z__qcancel_later(w->q, w->id);
    am2z__qwait_signal(t);
}

static am2z_execution *am2z__qop_submit(am2z_runtime *rt, const char *proc, const am2z_state *input,
                                        const am2z_submit_desc *desc, am2z_status *status) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    const char *session = desc->session_id;
    am2z__qadd a;
    am2z_status st;
    am2z_redis *r;
    am2z_submit_desc dd;        /* a durable desc with its execution id */
    char gen[AM2Z_EXECUTION_ID_SIZE];
    if (!am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE))
        return (am2z_execution *)am2z__put_status(status, am2z__submit_fail(AM2Z_STATUS_NOT_STARTED, proc, session));
    if ((desc->durable || desc->execution_id) && (st = am2z__qdx_prep(q, proc, input, desc, &dd, gen)) != AM2Z_STATUS_OK)
        return (am2z_execution *)am2z__put_status(status, st);
    if (desc->durable) desc = &dd;
    st = !proc || !input ? AM2Z_STATUS_INVALID_ARGUMENT : am2z__qadd_prep(q, &a, proc, input, session, NULL, NULL, desc);
    if (st != AM2Z_STATUS_OK) return (am2z_execution *)am2z__put_status(status, am2z__qsubmit_fail(q, st, proc, session));
    /* adding the job ends by the execution's deadline too: a Redis that stopped answering
       cannot hold the caller past it */
    if (!(r = am2z__qborrow_until(q, a.w->deadline_ns, &st))) {
        am2z__qwait *t = am2z__qwait_take(q, a.w->id, strlen(a.w->id));
        if (t) am2z__qwait_release(t);
        if (st != AM2Z_STATUS_TIMEOUT) st = AM2Z_STATUS_IO;
    } else {
        if (desc->idempotency_key || desc->durable) st = am2z__qidem_send(q, r, &a);
        else am2z__qadd_send(q, r, &a, 1, &st, NULL);
        am2z_redis_pool_put(q->pool, r);
    }
    am2z__qadd_free(&a);
    if (st != AM2Z_STATUS_OK) {
        am2z__qwait_release(a.w);
        return (am2z_execution *)am2z__put_status(status,
                am2z__fail(st, AM2Z_NTS, "submit '%s': cannot add the job to Redis (%s)", proc,
                           am2z_status_string(st)));
    }
    if (session) am2z__qsession_used(q, session);
    if (status) *status = AM2Z_STATUS_OK;
    return &a.w->base;
}

static am2z_status am2z__qop_wait(am2z_execution *e, int64_t timeout_ms, am2z_outcome *out) {
    am2z__qwait *w = (am2z__qwait *)e;
    int64_t until = timeout_ms < 0 ? -1 : am2z_monotonic_ns() + am2z__qns(timeout_ms);
    int64_t eff = until < 0 || w->deadline_ns < until ? w->deadline_ns : until;
    if (!out || w->taken) return AM2Z_STATUS_INVALID_ARGUMENT;
    if (!am2z__qwait_for(w, eff)) {
        if (am2z_monotonic_ns() < w->deadline_ns) return AM2Z_STATUS_TIMEOUT;
        am2z__qexpire(w, am2z_error_with_location(
                             am2z_error_timeout(w->qu->proc, (w->deadline_ns - w->started_ns) / 1000000),
                             w->qu->proc, w->id));
        am2z__qwait_for(w, -1);
    }
    am2z__qwait_outcome(w, out);
    w->taken = 1;
    if (w->trace) am2z__qtrace_collect(w, out);
    return AM2Z_STATUS_OK;
}

/* Frees a handle. An execution still waiting for its outcome is ended; its job is
   removed when no worker took it yet (remove script), or told to cancel. An idempotent
   job is left alone: callers of other processes may have joined it. */
static void am2z__qop_free_execution(am2z_execution *e) {
    am2z__qwait *w = (am2z__qwait *)e, *t;
    if (!w) return;
    if ((t = am2z__qwait_take(w->q, w->id, strlen(w->id))) != NULL) {
        am2z__qrt *q = w->q;
        am2z_redis *r = am2z__qidem_is(w->id) ? NULL : am2z__qborrow(q, NULL);
        t->error = am2z_error_cancelled("the execution was freed before it finished");
        if (r) {
            am2z_reply rep = am2z__qrep0();
            char ttl[24];
            const char *argv[5];
            snprintf(ttl, sizeof ttl, "%lld", (long long)q->cancel_ttl_ms);
            argv[0] = w->qu->P; argv[1] = q->C; argv[2] = w->id; argv[3] = am2z__qev_level(q, w->qu); argv[4] = ttl;
            if (am2z__qeval(r, &rep, q->s_remove, 5, argv, NULL) != AM2Z_STATUS_OK)
                am2z_log_warn(q->logger, "queue runtime: removing job %s of %s failed: %s", w->id, w->qu->name,
                              rep.type == AM2Z_REPLY_ERROR ? am2z_reply_str(&rep) : am2z_status_detail());
            am2z_reply_clear(&rep);
            am2z_redis_pool_put(q->pool, r);
        }
        am2z__qwait_signal(t);
    }
    am2z__qwait_release(w);
}

/* The job runs on; the waiter table keeps the waiter until the outcome arrives (or the
   session or runtime ends) and drops it then. */
static void am2z__qop_detach(am2z_execution *e) { am2z__qwait_release((am2z__qwait *)e); }

/* The outcome of an execution that could not be submitted. */
static void am2z__qfailed_outcome(am2z__qrt *q, am2z_outcome *out, const char *proc, const char *session,
                                  const am2z_state *input, am2z_status st) {
    am2z_error *e;
    memset(out, 0, sizeof *out);
    am2z_execution_id_generate(proc && am2z__qname_ok(proc) ? proc : "unknown", out->execution_id);
    am2z__outcome_session(out, session ? session : "default");
    out->started_at = am2z_now_ms();
    if (st == AM2Z_STATUS_NOT_FOUND) {
        e = proc ? am2z__qnot_found(q, proc) : am2z__runtime_not_found(q->rt, "(null)");
    } else if (st == AM2Z_STATUS_NOT_STARTED) {
        e = am2z_error_configuration("runtime", "the runtime is stopped; call am2z_runtime_start first");
    } else if (st == AM2Z_STATUS_INVALID_ARGUMENT) {
        e = am2z_error_validation("sessionId", NULL, "session ids are 1..AM2Z_SESSION_ID_MAX bytes of [A-Za-z0-9_.-]");
    } else if (st == AM2Z_STATUS_NO_MEMORY) {
        e = am2z_error_resource("memory", 0, 0);
    } else if (st == AM2Z_STATUS_TIMEOUT) {
        /* Redis did not take the job within the execution's deadline */
        am2z__qset set; /* the settings the submit resolved (cached by then) */
        e = am2z_error_timeout(proc ? proc : "submit",
                               proc && am2z__qsettings(q, proc, &set) == AM2Z_STATUS_OK ? am2z__qbudget(q, &set) : 0);
    } else {
        e = am2z_error_network(q->rdesc.host ? q->rdesc.host : "redis", 0, NULL);
    }
    out->error = am2z_error_with_location(e, proc, out->execution_id);
    out->state = am2z_value_retain(input);
}

static am2z_outcome am2z__qop_execute(am2z_runtime *rt, const char *proc, const am2z_state *input, const char *session) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    am2z_outcome out;
    am2z_status st = AM2Z_STATUS_OK;
    am2z_submit_desc d;
    am2z_execution *e;
    memset(&d, 0, sizeof d);
    d.session_id = session;
    e = am2z__qop_submit(rt, proc, input, &d, &st);
    memset(&out, 0, sizeof out);
    if (!e) { am2z__qfailed_outcome(q, &out, proc, session, input, st); return out; }
    am2z__qop_wait(e, -1, &out);
    am2z__qwait_release((am2z__qwait *)e);
    return out;
}

#define AM2Z__QMANY_BATCH 512 /* execute_many: jobs added per pipeline; two batches in flight */

/* Prepares and sends items [from, to) (at most one batch) into slot; failures get their
   outcome at once. */
static void am2z__qmany_send(am2z__qrt *q, am2z_redis **r, const char *proc, const am2z_state *const *inputs,
                             size_t from, size_t to, const char *session, am2z_outcome *outs, am2z__qadd *adds,
                             am2z_status *sts, am2z_status *ret) {
    size_t i, j, n = to - from;
    for (i = 0; i < n; i++) {
        sts[i] = am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE) ? am2z__qadd_prep(q, &adds[i], proc, inputs[from + i], session, NULL, NULL, NULL)
                                                : AM2Z_STATUS_NOT_STARTED;
        if (sts[i] != AM2Z_STATUS_OK) adds[i].w = NULL;
    }
    for (i = 0; i < n; i = j) {
        size_t k, m = 0;
        for (j = i; j < n && sts[j] == AM2Z_STATUS_OK; j++) m++;
        if (m == 0) { j = i + 1; continue; }
        if (!*r && !(*r = am2z__qborrow(q, NULL))) {
            for (k = i; k < j; k++) {
                am2z__qwait *t = am2z__qwait_take(q, adds[k].w->id, strlen(adds[k].w->id));
                if (t) am2z__qwait_release(t);
                sts[k] = AM2Z_STATUS_IO;
            }
        } else {
            am2z__qadd_send(q, *r, adds + i, m, sts + i, NULL);
        }
        for (k = i; k < j; k++) am2z__qadd_free(&adds[k]);
    }
    for (i = 0; i < n; i++)
        if (sts[i] != AM2Z_STATUS_OK) {
            if (adds[i].w) { am2z__qwait_release(adds[i].w); adds[i].w = NULL; }
            am2z__qfailed_outcome(q, &outs[from + i], proc, session, inputs[from + i], sts[i]);
            if (*ret == AM2Z_STATUS_OK) *ret = sts[i];
        }
}

static void am2z__qmany_wait(am2z__qadd *adds, size_t n, am2z_outcome *outs) {
    size_t i;
    for (i = 0; i < n; i++)
        if (adds[i].w) {
            am2z__qop_wait(&adds[i].w->base, -1, &outs[i]);
            am2z__qwait_release(adds[i].w);
            adds[i].w = NULL;
        }
}

static am2z_status am2z__qop_execute_many(am2z_runtime *rt, const char *proc, const am2z_state *const *inputs,
                                          size_t count, const char *session, am2z_outcome *outs) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    am2z__qadd *adds;
    am2z_status *sts, ret = AM2Z_STATUS_OK;
    am2z_redis *r = NULL;
    size_t i, b = AM2Z__QMANY_BATCH, cur, nxt;
    if (count == 0) return AM2Z_STATUS_OK;
    if (!outs || !inputs) return AM2Z_STATUS_INVALID_ARGUMENT;
    adds = (am2z__qadd *)am2z__malloc(2 * b * sizeof *adds);
    sts = (am2z_status *)am2z__malloc(b * sizeof *sts);
    if (!adds || !sts) {
        am2z__free(adds);
        am2z__free(sts);
        for (i = 0; i < count; i++) am2z__qfailed_outcome(q, &outs[i], proc, session, inputs[i], AM2Z_STATUS_NO_MEMORY);
        return AM2Z_STATUS_NO_MEMORY;
    }
    if (session) am2z__qsession_used(q, session);
    /* batch k waits while batch k + 1 is already queued, so workers never run dry */
    am2z__qmany_send(q, &r, proc, inputs, 0, count < b ? count : b, session, outs, adds, sts, &ret);
    for (cur = 0; cur < count; cur = nxt) {
        size_t ncur = count - cur < b ? count - cur : b, slot = (cur / b) % 2;
        nxt = cur + ncur;
        if (nxt < count) {
            size_t nn = count - nxt < b ? count - nxt : b;
            am2z__qmany_send(q, &r, proc, inputs, nxt, nxt + nn, session, outs, adds + ((slot + 1) % 2) * b, sts, &ret);
            if (r) { am2z_redis_pool_put(q->pool, r); r = NULL; }
        }
        am2z__qmany_wait(adds + slot * b, ncur, outs + cur);
    }
    if (r) am2z_redis_pool_put(q->pool, r);
    am2z__free(adds);
    am2z__free(sts);
    return ret;
}

/* ---- 4.4 workers: the job runner, finishing, fetching, ctx calls, threads ------------ */

/* -- running jobs -- */

static void am2z__qjob_clear(am2z__qjob *j) {
    am2z_reply_clear(&j->rep);
    am2z__qqueue_release(j->qu);
    j->qu = NULL;
}

static void am2z__qtoken(am2z__qrt *q, char *buf) {
    unsigned long long n = (unsigned long long)am2z__atomic_inc(&q->token_seq);
    snprintf(buf, 64, "%s:%llu", q->instance, n);
}

static void am2z__qrun_add(am2z__qrt *q, am2z__qrun *r) {
    am2z__mutex_lock(&q->runmu);
    r->next = q->runs.next;
    r->prev = &q->runs;
    q->runs.next->prev = r;
    q->runs.next = r;
    q->nruns++;
    am2z__mutex_unlock(&q->runmu);
}
static void am2z__qrun_remove(am2z__qrt *q, am2z__qrun *r) {
    am2z__mutex_lock(&q->runmu);
    r->prev->next = r->next;
    r->next->prev = r->prev;
    q->nruns--;
    am2z__mutex_unlock(&q->runmu);
}

/* Why r (or the parent that runs it inline) must end: an am2z__qcancel. */
static int am2z__qrun_cancelled(const am2z__qrun *r) {
    int64_t now = am2z_monotonic_ns();
    for (; r; r = r->parent) {
        int c = am2z__atomic_load(&r->cancelled, AM2Z__MO_ACQUIRE);
        if (c != AM2Z__QCANCEL_NONE) return c;
        if (r->deadline_ns && now >= r->deadline_ns) return AM2Z__QCANCEL_DEADLINE;
    }
    return AM2Z__QCANCEL_NONE;
}

static int am2z__qctx_cancelled(const am2z_ctx *ctx) {
    return am2z__qrun_cancelled((const am2z__qrun *)ctx->runtime_data) != 0;
}

static void am2z__qprogress(am2z__qrun *run, const am2z_value *data);

static void am2z__qctx_emit(am2z_ctx *ctx, const char *event, am2z_value *data) {
    am2z__qrun *run = (am2z__qrun *)ctx->runtime_data;
    if (run->w->q->events && strcmp(event, "processor:progress") == 0) am2z__qprogress(run, data);
    am2z_runtime_emit(ctx->runtime, event, data);
    am2z_value_release(data);
}

static void am2z__qcall_many(am2z_ctx *ctx, const char *const *names, const am2z_state *const *inputs,
                             size_t count, am2z_result *results);

static int am2z__qctx_wants(const am2z_ctx *ctx, const char *event) {
    const am2z__qrun *run = (const am2z__qrun *)ctx->runtime_data;
    if (run->w->q->events && strcmp(event, "processor:progress") == 0) return 1; /* the job's progress */
    return am2z__runtime_has_handlers(ctx->runtime, event);
}

/* The execution's child logger (processor, execution and session id), made on first use. */
static const am2z_logger *am2z__qctx_logger(const am2z_ctx *ctx) {
    am2z__qrun *run = (am2z__qrun *)ctx->runtime_data;
    if (!run->child) {
        am2z_value *f = am2z_value_object();
        f = am2z_value_set(f, "processor", am2z_value_string(run->ctx.meta.processor));
        f = am2z_value_set(f, "executionId", am2z_value_string(run->exec_id));
        f = am2z_value_set(f, "sessionId", am2z_value_string(run->session));
        run->child = f ? am2z_logger_child(run->w->q->logger, f, run->ctx.meta.processor) : NULL;
        am2z_value_release(f);
    }
    return run->child ? run->child : ctx->logger;
}

static const am2z_ctx_ops am2z__qctx_ops = {am2z__qcall_many, am2z__qctx_emit, am2z__qctx_cancelled,
                                            am2z__qctx_wants, am2z__qctx_logger, NULL};

/* Event payload {processorName, executionId, jobId, sessionId, ...}. */
static am2z_value *am2z__qevent(const char *proc, const char *exec_id, const char *job_id, const char *session) {
    am2z_value *v = am2z_value_object();
    v = am2z_value_set(v, "processorName", am2z_value_string(proc));
    v = am2z_value_set(v, "executionId", am2z_value_string(exec_id));
    v = am2z_value_set(v, "jobId", am2z_value_string(job_id));
    v = am2z_value_set(v, "sessionId", am2z_value_string(session));
    return v;
}

/* Retention for one finish: the job's own opts win over the runtime's (BullMQ). count 0
   deletes, < 0 keeps all; age in seconds, 0 none. */
static void am2z__qkeep(const am2z__qrt *q, const char *opts, size_t optsn, int failed, char *count, char *age) {
    int64_t c = failed ? q->keep_f : q->keep_c, a = failed ? q->keep_f_age : q->keep_c_age;
    const char *key = failed ? "removeOnFail" : "removeOnComplete";
    c = c == AM2Z_QUEUE_KEEP_NONE ? 0 : c == AM2Z_QUEUE_KEEP_ALL ? -1 : c;
    if (opts && optsn && strstr(opts, key)) {
        am2z_value *o = am2z_json_parse(opts, optsn, NULL, NULL);
        const am2z_value *k = am2z_value_find(o, key, strlen(key));
        switch (am2z_value_type(k)) {
        case AM2Z_TYPE_BOOL: c = am2z_value_as_bool(k, 0) ? 0 : -1; a = -1; break;
        case AM2Z_TYPE_INT: case AM2Z_TYPE_DOUBLE: c = am2z_value_as_int(k, -1); a = -1; break;
        case AM2Z_TYPE_OBJECT:
            c = am2z_value_get_int(k, "count", -1);
            a = am2z_value_get_int(k, "age", -1);
            break;
        default: break;
        }
        am2z_value_release(o);
    }
    snprintf(count, 24, "%lld", (long long)c);
    snprintf(age, 24, "%lld", (long long)(a > 0 ? a : 0));
}

/* The stacktrace field: one error JSON text per failed attempt. */
static char *am2z__qstack_json(am2z_error *const *errs, size_t n, size_t *len) {
    am2z_value *arr = am2z_value_array();
    char *t;
    size_t i;
    for (i = 0; i < n && arr; i++) {
        am2z_value *e = am2z_error_to_json(errs[i]);
        char *s = e ? am2z_json_write(e, AM2Z_JSON_COMPACT, NULL) : NULL;
        am2z_value_release(e);
        if (!s) { am2z_value_release(arr); return NULL; }
        arr = am2z_value_append(arr, "", am2z_value_string(s));
        am2z__free(s);
    }
    t = arr ? am2z_json_write(arr, AM2Z_JSON_COMPACT, len) : NULL;
    am2z_value_release(arr);
    return t;
}

/* "<id> {"ok":..,"attempts":n,"errors":[...]" (the caller closes it). */
static void am2z__qreply_head(am2z__qsb *b, const char *exec_id, int ok, int attempts, am2z_error *const *errs, size_t n) {
    size_t i;
    am2z__qsb_str(b, exec_id);
    am2z__qsb_str(b, ok ? " {\"ok\":true,\"attempts\":" : " {\"ok\":false,\"attempts\":");
    am2z__qsb_i64(b, attempts);
    am2z__qsb_str(b, ",\"errors\":[");
    for (i = 0; i < n; i++) {
        am2z_value *e = am2z_error_to_json(errs[i]);
        if (i) am2z__qsb_put(b, ",", 1);
        if (!e) b->bad = 1;
        am2z__qsb_json(b, e);
        am2z_value_release(e);
    }
    am2z__qsb_str(b, "]");
}

static void am2z__qdone_clear(am2z__qdone *d) {
    size_t i;
    am2z__free(d->id); am2z__free(d->token); am2z__free(d->rv); am2z__free(d->rkey); am2z__free(d->head);
    am2z_value_release(d->state);
    for (i = 0; i < d->nerrs; i++) am2z_error_release(d->errs[i]);
    am2z__free(d->errs);
    memset(d, 0, sizeof *d);
}

static size_t am2z__qfetch_parse(am2z__qrt *q, am2z__qqueue *qu, am2z_reply *rep, const char *token, am2z__qjob *jobs,
                                 size_t max);

static am2z_status am2z__qeval_w(am2z__qworker *w, am2z_reply *rep, const am2z_redis_script *s, size_t argc,
                                 const char *const *argv, const size_t *lens, am2z__qqueue *reg);
static int am2z__qidle_ok(am2z__qworker *w, am2z__qqueue *u);

/* Completes the batch's jobs (one script call) and takes up to k next jobs of qu into
   jobs (k 0: none); returns how many were taken. Callers in this process get their
   results directly once the call is done. idle: this round took fewer jobs than it
   asked for (a short queue) or was handed its job, so the thread registers for a
   hand-off right after the script when it may (HAND-OFF in 4.4). */
static size_t am2z__qcomplete(am2z__qworker *w, am2z__qqueue *qu, am2z__qbatch *b, size_t k, am2z__qjob *jobs,
                              int idle) {
    am2z__qrt *q = w->q;
    const char *argv[11 + 8 * AM2Z_QUEUE_BATCH];
    size_t lens[11 + 8 * AM2Z_QUEUE_BATCH], i, j, argc = 11, got = 0;
    char now_s[24], ks[24], tok[64];
    am2z_reply rep = am2z__qrep0();
    am2z_status st;
    snprintf(now_s, sizeof now_s, "%lld", (long long)am2z_now_ms());
    snprintf(ks, sizeof ks, "%lu", (unsigned long)k);
    am2z__qtoken(q, tok);
    argv[0] = qu->P; argv[1] = q->C; argv[2] = now_s; argv[3] = am2z__qev_level(q, qu);
    argv[4] = q->reply_ttl_s; argv[5] = ks; argv[6] = tok; argv[7] = q->lock_s; argv[8] = "0";
    argv[9] = qu->wk; argv[10] = qu->wm;
    for (i = 0; i < 11; i++) lens[i] = strlen(argv[i]);
    for (i = 0; i < b->n; i++) {
        am2z__qdone *d = &b->d[i];
        argv[argc] = d->id; argv[argc + 1] = d->token; argv[argc + 2] = d->rv; argv[argc + 3] = d->rkey;
        argv[argc + 4] = d->head ? d->head : ""; argv[argc + 5] = d->atm; argv[argc + 6] = d->kc; argv[argc + 7] = d->ka;
        for (j = 0; j < 8; j++) lens[argc + j] = strlen(argv[argc + j]);
        lens[argc + 2] = d->rvn;
        lens[argc + 4] = d->headn;
        argc += 8;
    }
    st = am2z__qeval_w(w, &rep, q->s_complete, argc, argv, lens, idle && am2z__qidle_ok(w, qu) ? qu : NULL);
    if (st != AM2Z_STATUS_OK || rep.type != AM2Z_REPLY_ARRAY || rep.len != 2) {
        /* the jobs stay locked and come back through the stalled scan */
        am2z_log_warn(q->logger, "queue runtime: completing %lu job(s) of %s failed: %s", (unsigned long)b->n, qu->name,
                      rep.type == AM2Z_REPLY_ERROR ? am2z_reply_str(&rep) : am2z_status_detail());
    } else {
        const am2z_reply *lost = am2z_reply_at(&rep, 0);
        for (i = 0; i < b->n; i++) {
            am2z__qdone *d = &b->d[i];
            int gone = 0;
            for (j = 0; lost && j < lost->len; j++)
                if (strcmp(am2z_reply_str(am2z_reply_at(lost, j)), d->id) == 0) gone = 1;
            if (gone)
                am2z_log_warn(q->logger, "queue runtime: job %s of %s lost its lock (stalled or its session was stopped)",
                              d->id, qu->name);
            else if (d->direct)
                am2z__qdeliver(q, d->exec_id, d->state, NULL, d->errs, d->nerrs, d->attempts);
        }
        if (k) got = am2z__qfetch_parse(q, qu, &rep.element[1], tok, jobs, k);
    }
    for (i = 0; i < b->n; i++) am2z__qdone_clear(&b->d[i]);
    b->n = 0;
    am2z_reply_clear(&rep);
    return got;
}

/* Runs a fail or retry script; logs when the job was no longer ours. */
static void am2z__qfinish(am2z__qworker *w, const am2z_redis_script *s, const char *const *argv, const size_t *lens,
                          size_t argc, const am2z__qqueue *qu) {
    am2z__qrt *q = w->q;
    am2z_reply rep = am2z__qrep0();
    am2z_status st = am2z__qeval(w->conn, &rep, s, argc, argv, lens);
    if (st != AM2Z_STATUS_OK)
        am2z_log_warn(q->logger, "queue runtime: finishing job %s of %s failed: %s", argv[2], qu->name,
                      rep.type == AM2Z_REPLY_ERROR ? am2z_reply_str(&rep) : am2z_status_detail());
    else if (rep.type == AM2Z_REPLY_INTEGER && rep.integer == -1)
        am2z_log_warn(q->logger, "queue runtime: job %s of %s lost its lock (stalled or its session was stopped)",
                      argv[2], qu->name);
    am2z_reply_clear(&rep);
}

/* -- the job runner: one fetched job, in named steps --
   decode (fields, earlier attempts' errors) -> resolve (everything that fails a job
   before it runs: stalled too often, bad data, wrong queue, depth, deadline, cancel
   flag) -> attempt (the processor runs) -> finish: complete (success), give back (this
   runtime is stopping), or retry / fail. */

/* One job on its way through the runner. */
typedef struct am2z__qjobrun {
    am2z__qworker *w;
    am2z__qjob *job;
    am2z__qrun *parent;         /* the run that claimed it inline, or NULL */
    am2z__qbatch *batch;        /* where a success waits for the next complete call; NULL: now */
    am2z__qqueue *qu;
    const char *id, *name, *data, *opts, *defa, *stack; /* fields of the fetched job */
    size_t namen, datan, optsn, defan, stackn;
    char exec_id[64], now_s[24], atm_s[24];
    int attempt, depth;
    int ran;                    /* the processor was invoked */
    int cancelled;              /* am2z__qcancel: why it ended early, or NONE */
    int64_t deadline_ms, t0, timeout_ms;
    int64_t job_timeout_ms;     /* the "timeoutMs" its am2z caller wrote; 0: none */
    int from_am2z;              /* the job data is an am2z envelope */
    const char *session, *reply_to; /* borrowed from env */
    int direct;                 /* the caller is this runtime instance: hand the result over */
    const char *rkey;           /* another instance's reply list, or "" */
    am2z_value *env;            /* the job data, parsed */
    am2z_processor *p;
    am2z_state *input, *out_state;
    am2z_error *err;            /* this attempt's failure */
    am2z_error **errs;          /* every attempt's error (room for one more) */
    size_t nerrs;
    int breaker;                /* the breaker admitted the attempt: report its end */
    int64_t breaker_ticket;     /* 0: closed, > 0: a half-open probe of that generation */
    const char *trace_root, *trace_parent; /* from env (TRACES), or NULL */
    am2z_trace *trace;          /* this attempt's span until pushed */
    uint32_t trace_span;
    am2z__dx *dx;               /* a durable job's run (4.11), or NULL; owned */
} am2z__qjobrun;

/* durable executions (4.11) */
static void am2z__qdx_begin(am2z__qjobrun *jr);
static void am2z__qdx_end(am2z__qjobrun *jr, const am2z_state *state, const am2z_error *err);
static int am2z__qdx_park(am2z__qjobrun *jr);
static void am2z__qdx_stalled(am2z__qjobrun *jr);

static void am2z__qjr_clear(am2z__qjobrun *jr) {
    size_t i;
    am2z_value_release(jr->out_state);
    am2z_value_release(jr->input);
    am2z_value_release(jr->env);
    am2z_error_release(jr->err);
    for (i = 0; i < jr->nerrs; i++) am2z_error_release(jr->errs[i]);
    am2z__free(jr->errs);
    am2z_processor_release(jr->p);
    am2z_trace_release(jr->trace);
    if (jr->dx) am2z__dur_abort(jr->dx); /* not final: the next attempt continues it */
    am2z__qjob_clear(jr->job);
}

/* TRACES: a traced attempt's span goes to the root's list before its result can reach
   anyone (so its caller finds it there), with the backoff when a retry follows (delay
   >= 0). Once per attempt: the trace is released here. */
static void am2z__qtrace_push(am2z__qjobrun *jr, int64_t delay) {
    am2z__qrt *q = jr->w->q;
    am2z_value *all, *item;
    am2z_redis *r;
    am2z_reply rep = am2z__qrep0();
    char gid[96], *key, *text;
    size_t n = 0;
    if (!jr->trace) return;
    if (delay >= 0) am2z_trace_retry(jr->trace, jr->trace_span, delay);
    all = am2z_trace_to_json(jr->trace);
    am2z_trace_release(jr->trace);
    jr->trace = NULL;
    snprintf(gid, sizeof gid, "%s#%d", jr->exec_id, jr->attempt);
    item = am2z_value_set(am2z_value_object(), "gid", am2z_value_string(gid));
    item = am2z_value_set(item, "pgid", am2z_value_string(jr->trace_parent ? jr->trace_parent : ""));
    item = am2z_value_set(item, "worker", am2z_value_string(q->instance));
    item = am2z_value_set(item, "span", am2z_value_retain(am2z_value_get(all, "spans[0]")));
    text = am2z_json_write(item, AM2Z_JSON_COMPACT, &n);
    key = am2z__qcat(q->C, "trace:", jr->trace_root, NULL);
    if (text && key && am2z_value_get(all, "spans[0]") && (r = am2z__qborrow(q, NULL)) != NULL) {
        /* the list lives as long as a cancel key: long enough for any caller to read it */
        if (am2z_redis_command(r, &rep, "RPUSH %s %b", key, text, n) == AM2Z_STATUS_OK && rep.integer == 1) {
            char ttl[24];
            snprintf(ttl, sizeof ttl, "%lld", (long long)q->cancel_ttl_ms);
            am2z_redis_command(r, &rep, "PEXPIRE %s %s", key, ttl);
        }
        am2z_redis_pool_put(q->pool, r);
    }
    am2z_reply_clear(&rep);
    am2z__free(key);
    am2z_free(text);
    am2z_value_release(item);
    am2z_value_release(all);
}

/* Step 1: the fields of the fetched job and the errors of its earlier attempts (they
   travel in the stacktrace field). 0 when nothing can be recorded (no id, out of
   memory): the job was cleared and its lock expires, so it is recovered later. */
static int am2z__qjr_decode(am2z__qjobrun *jr, am2z__qworker *w, am2z__qjob *job, am2z__qrun *parent,
                            am2z__qbatch *batch) {
    const am2z_reply *r = &job->rep;
    size_t idn = 0, i;
    memset(jr, 0, sizeof *jr);
    jr->w = w;
    jr->job = job;
    jr->parent = parent;
    jr->batch = batch;
    jr->qu = job->qu;
    jr->t0 = am2z_monotonic_ns();
    jr->session = "default";
    jr->rkey = "";
    jr->id = am2z__qel(r, AM2Z__QJ_ID, &idn);
    jr->name = am2z__qel(r, AM2Z__QJ_NAME, &jr->namen);
    jr->data = am2z__qel(r, AM2Z__QJ_DATA, &jr->datan);
    jr->opts = am2z__qel(r, AM2Z__QJ_OPTS, &jr->optsn);
    jr->defa = am2z__qel(r, AM2Z__QJ_DEFA, &jr->defan);
    jr->stack = am2z__qel(r, AM2Z__QJ_STACK, &jr->stackn);
    jr->attempt = (int)am2z__qel_num(r, AM2Z__QJ_ATM, 0, AM2Z__QMAX_COUNT, 0) + 1;
    if (!jr->id) { am2z__qjob_clear(job); return 0; }
    snprintf(jr->exec_id, sizeof jr->exec_id, "%s", jr->id);
    if (jr->stack && jr->stackn) {
        am2z_value *sv = am2z_json_parse(jr->stack, jr->stackn, NULL, NULL);
        size_t n = am2z_value_type(sv) == AM2Z_TYPE_ARRAY ? am2z_value_len(sv) : 0;
        jr->errs = (am2z_error **)am2z__malloc((n + 1) * sizeof *jr->errs);
        for (i = 0; jr->errs && i < n; i++) {
            size_t el = 0;
            const char *et = am2z_value_as_string(am2z_value_at(sv, i), &el);
            am2z_error *e = et ? am2z__qerror_from_text(jr->qu->proc, jr->exec_id, et, el) : NULL;
            if (e) jr->errs[jr->nerrs++] = e;
        }
        am2z_value_release(sv);
    } else {
        jr->errs = (am2z_error **)am2z__malloc(sizeof *jr->errs);
    }
    if (!jr->errs) {
        am2z_log_error(w->q->logger, "queue runtime: out of memory running job %s of %s", jr->id, jr->qu->name);
        for (i = 0; i < jr->nerrs; i++) am2z_error_release(jr->errs[i]);
        am2z__qjob_clear(job);
        return 0;
    }
    return 1;
}

/* The job data into jr->input: an am2z envelope (its execution, session, depth,
   deadline and caller), or a foreign job's plain data as the state. */
static void am2z__qjr_envelope(am2z__qjobrun *jr) {
    if (!jr->data) { jr->err = am2z_error_validation("data", NULL, "the job has no data field"); return; }
    jr->env = am2z_json_parse(jr->data, jr->datan, NULL, NULL);
    if (!jr->env) {
        char why[160];
        snprintf(why, sizeof why, "job data is not valid JSON (%.100s at byte %lu)", am2z_status_detail(),
                 (unsigned long)am2z_status_offset());
        jr->err = am2z_error_validation("data", NULL, why);
    } else if (am2z_value_type(jr->env) != AM2Z_TYPE_OBJECT) {
        jr->err = am2z_error_validation("data", NULL, "job data must be a JSON object");
    } else if (am2z_value_find(jr->env, "am2z", 4)) {
        const char *s = am2z_value_get_string(jr->env, "executionId", NULL);
        const am2z_value *st = am2z_value_find(jr->env, "state", 5);
        const am2z_value *cd = am2z_value_find(jr->env, "callDepth", 9);
        int64_t depth = cd ? am2z_value_as_int(cd, -1) : 0;
        if (s && strlen(s) < sizeof jr->exec_id) snprintf(jr->exec_id, sizeof jr->exec_id, "%s", s);
        s = am2z_value_get_string(jr->env, "sessionId", NULL);
        if (s && am2z__qname_ok(s)) jr->session = s;
        jr->deadline_ms = am2z_value_get_int(jr->env, "deadline", 0);
        if (jr->deadline_ms < 0) jr->deadline_ms = 0; /* none */
        if (jr->deadline_ms > AM2Z__QMAX_MS) jr->deadline_ms = AM2Z__QMAX_MS;
        jr->job_timeout_ms = am2z_value_get_int(jr->env, "timeoutMs", 0);
        if (jr->job_timeout_ms < 0) jr->job_timeout_ms = 0; /* none: the published settings */
        if (jr->job_timeout_ms > AM2Z__QMAX_MS) jr->job_timeout_ms = AM2Z__QMAX_MS;
        jr->from_am2z = 1;
        jr->reply_to = am2z_value_get_string(jr->env, "replyTo", NULL);
        jr->trace_root = am2z_value_get_string(jr->env, "traceRoot", NULL);
        jr->trace_parent = am2z_value_get_string(jr->env, "traceParent", NULL);
        if (depth < 0 || depth > INT_MAX) {
            /* no depth a runtime hands out: a broken or forged job, not a deep one */
            jr->err = am2z_error_validation("callDepth", cd, "callDepth must be an integer >= 0");
            return;
        }
        jr->depth = (int)depth;
        if (am2z_value_type(st) != AM2Z_TYPE_OBJECT)
            jr->err = am2z_error_validation("state", st, "job data has no \"state\" object");
        else if (am2z_value_find(st, "metadata", 8))
            jr->input = jr->depth ? am2z_value_retain(st) : am2z__state_in_session(am2z_value_retain(st), jr->session);
        else
            jr->input = am2z_state_new(jr->session, am2z_value_retain(st), NULL);
    } else {
        jr->input = am2z__state_in_session(am2z_state_parse(jr->session, jr->data, jr->datan, NULL), jr->session);
    }
    if (!jr->err && !jr->input) jr->err = am2z_error_resource("memory", 0, 0);
}

/* Step 2: everything that fails a job before it runs; jr->err says why (with the
   processor and execution as its location), jr->p is the processor otherwise. */
static void am2z__qjr_resolve(am2z__qjobrun *jr) {
    am2z__qrt *q = jr->w->q;
    am2z__qqueue *qu = jr->qu;
    if (jr->defa)
        jr->err = am2z_error_execution(qu->proc, jr->exec_id,
                                       am2z_error_business("JOB_STALLED", AM2Z_SEVERITY_HIGH, "%.*s", (int)jr->defan,
                                                           jr->defa), NULL);
    if (!jr->err) am2z__qjr_envelope(jr);
    if (!jr->err && (!jr->name || jr->namen != strlen(qu->proc) || memcmp(jr->name, qu->proc, jr->namen) != 0)) {
        char nm[AM2Z_NAME_MAX + 1];
        snprintf(nm, sizeof nm, "%.*s", (int)(jr->namen > AM2Z_NAME_MAX ? AM2Z_NAME_MAX : jr->namen),
                 jr->name ? jr->name : "");
        jr->err = am2z__runtime_not_found(q->rt, nm);
        if (jr->err) {
            am2z_value *why = am2z_value_set(am2z_value_object(), "queue", am2z_value_string(qu->name));
            jr->err = am2z_error_with_details(jr->err, why);
            am2z_value_release(why);
        }
    }
    if (!jr->err && !(jr->p = am2z_runtime_lookup(q->rt, qu->proc))) jr->err = am2z__runtime_not_found(q->rt, qu->proc);
    if (!jr->err && (jr->depth < 0 || jr->depth > q->max_depth)) jr->err = am2z_error_call_depth(q->max_depth, jr->depth);
    if (!jr->err && jr->deadline_ms && am2z_now_ms() >= jr->deadline_ms)
        jr->err = am2z_error_timeout(qu->proc, jr->deadline_ms - am2z__qel_num(&jr->job->rep, AM2Z__QJ_TS, 0,
                                                                                jr->deadline_ms, 0));
    if (!jr->err && am2z__qel_int(&jr->job->rep, AM2Z__QJ_CANCEL)) {
        jr->err = am2z_error_cancelled("the execution was cancelled before it started");
        jr->cancelled = AM2Z__QCANCEL_KEY;
    }
    if (jr->err) jr->err = am2z_error_with_location(jr->err, qu->proc, jr->exec_id);
}

/* A job's settings (SETTINGS in 4.3): what its producer wrote into it, else what the
   workers published, else the desc registered here. The per-attempt timeout: */
static int64_t am2z__qjr_timeout(const am2z__qjobrun *jr) {
    am2z__qrt *q = jr->w->q;
    am2z__qset s;
    if (jr->job_timeout_ms > 0) return jr->job_timeout_ms;
    if (am2z__qsettings(q, jr->qu->proc, &s) == AM2Z_STATUS_OK && s.timeout_ms > 0) return s.timeout_ms;
    return am2z_processor_timeout_ms(jr->p, q->default_timeout_ms);
}

/* The retry policy: the worker's should_retry (code stays local) with the job's
   opts.attempts (> 0) and opts.backoff, which am2z callers always write and Node
   producers may; the published settings fill in what a Node job leaves out. */
static am2z_retry_policy am2z__qjr_policy(const am2z__qjobrun *jr) {
    am2z_retry_policy rp = am2z_processor_desc_of(jr->p)->retry;
    am2z__qset s;
    am2z_value *o;
    int64_t attempts;
    if (!jr->from_am2z && am2z__qsettings(jr->w->q, jr->qu->proc, &s) == AM2Z_STATUS_OK) {
        s.retry.should_retry = rp.should_retry;
        s.retry.user_data = rp.user_data;
        rp = s.retry;
    }
    if (!jr->opts || !jr->optsn) return rp;
    o = am2z_json_parse(jr->opts, jr->optsn, NULL, NULL);
    attempts = am2z_value_as_int(am2z_value_find(o, "attempts", 8), 0);
    if (attempts > 0) rp.max_attempts = attempts > INT_MAX ? INT_MAX : (int)attempts;
    am2z__qbackoff_parse(am2z_value_find(o, "backoff", 7), &rp);
    am2z_value_release(o);
    return rp;
}

/* Step 3: runs the processor once, registered as a run the maintenance thread renews
   and flags. Leaves jr->out_state or jr->err. 0 when the job's lock was lost while it
   ran: another worker owns the job now, so nothing is finished here. */
static int am2z__qjr_attempt(am2z__qjobrun *jr) {
    am2z__qrt *q = jr->w->q;
    am2z__qqueue *qu = jr->qu;
    am2z__qrun run;
    am2z_result res;
    int64_t now_ms = am2z_now_ms(), t0 = jr->t0;
    jr->timeout_ms = am2z__qjr_timeout(jr);
    memset(&run, 0, sizeof run);
    run.parent = jr->parent;
    run.w = jr->w;
    run.qu = qu;
    run.id = jr->id;
    run.exec_id = jr->exec_id;
    run.session = jr->session;
    run.depth = jr->depth;
    snprintf(run.token, sizeof run.token, "%s", jr->job->token);
    run.deadline_ns = jr->timeout_ms > 0 ? t0 + am2z__qns(jr->timeout_ms) : 0;
    if (jr->deadline_ms && (!run.deadline_ns || t0 + am2z__qns(jr->deadline_ms - now_ms) < run.deadline_ns))
        run.deadline_ns = t0 + am2z__qns(jr->deadline_ms - now_ms);
    run.ctx.ops = &am2z__qctx_ops;
    run.ctx.runtime_data = &run;
    run.ctx.runtime = q->rt;
    run.ctx.processor = jr->p;
    run.ctx.logger = q->logger;
    run.ctx.meta.processor = am2z_processor_name(jr->p);
    run.ctx.meta.execution_id = jr->exec_id;
    run.ctx.meta.session_id = jr->session;
    run.ctx.meta.attempt = jr->attempt;
    run.ctx.meta.call_depth = jr->depth;
    run.ctx.meta.started_at = now_ms;
    run.ctx.deadline_ns = run.deadline_ns;
    if (jr->trace_root && (jr->trace = am2z_trace_new(0)) != NULL) {
        run.ctx.trace = jr->trace;
        run.trace_root = jr->trace_root;
    }
    am2z__qrun_add(q, &run);
    am2z__atomic_inc(&q->n_running);
    if (am2z__runtime_has_handlers(q->rt, "processor:job:started")) {
        am2z_value *ev = am2z_value_set(am2z__qevent(qu->proc, jr->exec_id, jr->id, jr->session), "attempt",
                                        am2z_value_int(jr->attempt));
        am2z_runtime_emit(q->rt, "processor:job:started", ev);
        am2z_value_release(ev);
    }
    if (jr->depth == 0) { /* a top-level attempt: its durable scope, or none (am2z.h 7d) */
        am2z__dscope root;
        void *outer = am2z__dur_enter_root(&root, jr->dx);
        res = am2z_processor_invoke(jr->p, &run.ctx, jr->input);
        am2z__dur_swap(outer);
    } else {
        res = am2z_processor_invoke(jr->p, &run.ctx, jr->input);
    }
    jr->trace_span = run.ctx.trace_span;
    am2z__atomic_dec(&q->n_running);
    am2z__qrun_remove(q, &run);
    am2z_logger_release(run.child);
    jr->ran = 1;
    jr->cancelled = am2z__qrun_cancelled(&run);
    switch (jr->cancelled) {
    case AM2Z__QCANCEL_LOCK_LOST:
        am2z_result_clear(&res);
        am2z_log_warn(q->logger, "queue runtime: job %s of %s lost its lock while running", jr->id, qu->name);
        return 0;
    case AM2Z__QCANCEL_DEADLINE:
        am2z_result_clear(&res);
        jr->err = am2z_error_with_location(am2z_error_timeout(qu->proc, jr->timeout_ms), qu->proc, jr->exec_id);
        break;
    case AM2Z__QCANCEL_KEY:
    case AM2Z__QCANCEL_STOPPING:
        am2z_result_clear(&res);
        jr->err = am2z_error_with_location(am2z_error_cancelled("the execution was cancelled"), qu->proc, jr->exec_id);
        break;
    default:
        if (res.error) {
            jr->err = res.error;
        } else {
            jr->out_state = am2z_state_bump(res.state);
            if (jr->depth == 0) jr->out_state = am2z__state_in_session(jr->out_state, jr->session);
            if (!jr->out_state) jr->err = am2z_error_resource("memory", 0, 0);
        }
    }
    if (jr->err) am2z_trace_fail(jr->trace, jr->trace_span, am2z_error_kind_name(jr->err->kind));
    return 1;
}

/* Step 4a, a success: queued in the batch (or completed at once without one). This
   process counts it completed before the result can reach its caller. When it cannot
   be recorded (out of memory), jr->err is set instead. */
static void am2z__qjr_complete(am2z__qjobrun *jr) {
    am2z__qrt *q = jr->w->q;
    am2z__qqueue *qu = jr->qu;
    am2z__qbatch one;
    am2z__qbatch *b = jr->batch ? jr->batch : &one;
    am2z__qdone *d;
    am2z__qsb head = am2z__qsb0();
    double exec_ms = (double)(am2z_monotonic_ns() - jr->t0) / 1e6;
    am2z__qdx_end(jr, jr->out_state, NULL); /* recorded before its callers can hold it */
    one.n = 0;
    d = &b->d[b->n];
    memset(d, 0, sizeof *d);
    d->rv = am2z_json_write(jr->out_state, AM2Z_JSON_COMPACT, &d->rvn);
    if (*jr->rkey || am2z__qidem_is(jr->id)) { /* idempotent: for the callers that joined */
        am2z__qreply_head(&head, jr->exec_id, 1, jr->attempt, jr->errs, jr->nerrs);
        am2z__qsb_str(&head, ",\"state\":");
    }
    d->id = am2z__strdup(jr->id);
    d->token = am2z__strdup(jr->job->token);
    d->rkey = am2z__strdup(jr->rkey);
    d->head = head.p;
    d->headn = head.n;
    if (!d->rv || head.bad || !d->id || !d->token || !d->rkey) {
        am2z__qdone_clear(d);
        am2z_value_release(jr->out_state);
        jr->out_state = NULL;
        jr->err = am2z_error_with_location(am2z_error_resource("memory", 0, 0), qu->proc, jr->exec_id);
        return;
    }
    am2z__qkeep(q, jr->opts, jr->optsn, 0, d->kc, d->ka);
    snprintf(d->atm, sizeof d->atm, "%s", jr->atm_s);
    snprintf(d->exec_id, sizeof d->exec_id, "%s", jr->exec_id);
    d->attempts = jr->attempt;
    d->direct = jr->direct;
    if (jr->direct) {
        d->state = jr->out_state;
        jr->out_state = NULL;
        d->errs = jr->errs;
        d->nerrs = jr->nerrs;
        jr->errs = NULL;
        jr->nerrs = 0;
    }
    b->n++;
    am2z__atomic_inc(&q->n_completed); /* counted before its caller can hold the outcome */
    if (!jr->batch) am2z__qcomplete(jr->w, qu, &one, 0, NULL, 0);
    if (am2z__runtime_has_handlers(q->rt, "processor:job:completed")) {
        am2z_value *ev = am2z_value_set(am2z__qevent(qu->proc, jr->exec_id, jr->id, jr->session), "attempts",
                                        am2z_value_int(jr->attempt));
        ev = am2z_value_set(ev, "executionTime", am2z_value_double(exec_ms));
        am2z_runtime_emit(q->rt, "processor:job:completed", ev);
        am2z_value_release(ev);
    }
}

/* Step 4b, this runtime is stopping: the job goes back to its queue for another worker,
   the interrupted attempt not counted. */
static void am2z__qjr_give_back(am2z__qjobrun *jr) {
    am2z__qrt *q = jr->w->q;
    am2z__qqueue *qu = jr->qu;
    size_t stn = 0, i;
    char *stj = am2z__qstack_json(jr->errs, jr->nerrs, &stn), prev[24];
    const char *argv[12];
    size_t lens[12];
    snprintf(prev, sizeof prev, "%d", jr->attempt - 1);
    argv[0] = qu->P; argv[1] = q->C; argv[2] = jr->id; argv[3] = jr->job->token; argv[4] = jr->now_s;
    argv[5] = "0"; argv[6] = "the worker stopped"; argv[7] = stj ? stj : "[]"; argv[8] = am2z__qev_level(q, qu);
    argv[9] = qu->wk; argv[10] = qu->wm; argv[11] = prev;
    for (i = 0; i < 12; i++) lens[i] = strlen(argv[i]);
    if (stj) lens[7] = stn;
    am2z__qfinish(jr->w, q->s_retry, argv, lens, 12, qu);
    am2z__free(stj);
    am2z_error_release(jr->err);
    jr->err = NULL;
}

/* Step 4c, a retry: back to the queue after the backoff delay (retry script). */
static void am2z__qjr_retry(am2z__qjobrun *jr, int64_t delay, const char *reason, const char *stj, size_t stn) {
    am2z__qrt *q = jr->w->q;
    am2z__qqueue *qu = jr->qu;
    char ds[24];
    const char *argv[12];
    size_t lens[12], i;
    snprintf(ds, sizeof ds, "%lld", (long long)delay);
    argv[0] = qu->P; argv[1] = q->C; argv[2] = jr->id; argv[3] = jr->job->token; argv[4] = jr->now_s;
    argv[5] = ds; argv[6] = reason; argv[7] = stj; argv[8] = am2z__qev_level(q, qu);
    argv[9] = qu->wk; argv[10] = qu->wm; argv[11] = jr->atm_s;
    for (i = 0; i < 12; i++) lens[i] = strlen(argv[i]);
    lens[7] = stn;
    am2z__qfinish(jr->w, q->s_retry, argv, lens, 12, qu);
    am2z__atomic_inc(&q->n_retried);
    if (delay > 0) am2z__qnote_due(q, qu, am2z_now_ms() + delay);
    if (am2z__runtime_has_handlers(q->rt, "processor:job:retrying")) {
        am2z_value *ev = am2z_value_set(am2z__qevent(qu->proc, jr->exec_id, jr->id, jr->session), "attempt",
                                        am2z_value_int(jr->attempt));
        ev = am2z_value_set(ev, "delayMs", am2z_value_int(delay));
        ev = am2z_value_set(ev, "error", am2z_error_to_json(jr->errs[jr->nerrs - 1]));
        am2z_runtime_emit(q->rt, "processor:job:retrying", ev);
        am2z_value_release(ev);
    }
}

/* Step 4d, the final failure (fail script: failed set, reply to the caller). This
   process counts it failed before the result can reach its caller. */
static void am2z__qjr_fail(am2z__qjobrun *jr, const char *reason, const char *stj, size_t stn) {
    am2z__qrt *q = jr->w->q;
    am2z__qqueue *qu = jr->qu;
    am2z__qsb msg = am2z__qsb0();
    const char *argv[17];
    size_t lens[17], i;
    char kc[24], ka[24];
    am2z_value *ej = am2z_error_to_json(jr->errs[jr->nerrs - 1]);
    int max_attempts = jr->p ? am2z_processor_desc_of(jr->p)->retry.max_attempts : 1;
    am2z__qdx_end(jr, NULL, jr->errs[jr->nerrs - 1]);
    am2z__qkeep(q, jr->opts, jr->optsn, 1, kc, ka);
    if (*jr->rkey || am2z__qidem_is(jr->id)) { /* idempotent: for the callers that joined */
        am2z__qreply_head(&msg, jr->exec_id, 0, jr->attempt, jr->errs, jr->nerrs);
        am2z__qsb_str(&msg, ",\"error\":");
        am2z__qsb_json(&msg, ej);
        am2z__qsb_str(&msg, "}");
    }
    argv[0] = qu->P; argv[1] = q->C; argv[2] = jr->id; argv[3] = jr->job->token; argv[4] = jr->now_s;
    argv[5] = reason; argv[6] = stj; argv[7] = msg.bad ? "" : jr->rkey; argv[8] = msg.p ? msg.p : "";
    argv[9] = kc; argv[10] = ka; argv[11] = am2z__qev_level(q, qu); argv[12] = q->reply_ttl_s;
    argv[13] = jr->atm_s;
    argv[14] = jr->attempt >= (max_attempts > 0 ? max_attempts : 1) ? "1" : "0"; /* retries-exhausted */
    argv[15] = qu->wk; argv[16] = qu->wm; /* a freed global-concurrency slot wakes a worker */
    for (i = 0; i < 17; i++) lens[i] = strlen(argv[i]);
    lens[6] = stn;
    lens[8] = msg.n;
    am2z__atomic_inc(&q->n_failed); /* counted before its caller can hold the outcome */
    am2z__qfinish(jr->w, q->s_fail, argv, lens, 17, qu);
    am2z__qsb_free(&msg);
    if (jr->direct) am2z__qdeliver(q, jr->exec_id, NULL, jr->errs[jr->nerrs - 1], jr->errs, jr->nerrs, jr->attempt);
    if (am2z__runtime_has_handlers(q->rt, "processor:job:failed")) {
        am2z_value *ev = am2z_value_set(am2z__qevent(qu->proc, jr->exec_id, jr->id, jr->session), "attempts",
                                        am2z_value_int(jr->attempt));
        ev = am2z_value_set(ev, "error", ej);
        ej = NULL;
        am2z_runtime_emit(q->rt, "processor:job:failed", ev);
        am2z_value_release(ev);
    }
    am2z_value_release(ej);
}

/* Step 4, a failed attempt: retried when the processor's policy says so and the
   execution's deadline leaves room for the backoff, failed otherwise. */
static void am2z__qjr_retry_or_fail(am2z__qjobrun *jr) {
    int64_t delay = -1;
    am2z__qsb reason = am2z__qsb0();
    size_t stn = 0;
    char *stj;
    /* failedReason is what Node and Bull Board show: "Kind: message", plain text; the
       structured errors travel in stacktrace and in the caller's reply */
    am2z__qsb_str(&reason, jr->err->name ? jr->err->name : "Error");
    am2z__qsb_str(&reason, ": ");
    am2z__qsb_str(&reason, jr->err->message ? jr->err->message : "failed");
    jr->errs[jr->nerrs++] = jr->err;
    jr->err = NULL;
    if (jr->ran && jr->cancelled == AM2Z__QCANCEL_NONE && jr->p) {
        am2z_retry_policy rp = am2z__qjr_policy(jr);
        delay = am2z_retry_delay_ms(&rp, jr->errs[jr->nerrs - 1], jr->attempt);
        if (delay >= 0 && jr->deadline_ms && am2z_now_ms() + delay >= jr->deadline_ms) delay = -1;
    }
    am2z__qtrace_push(jr, delay);
    stj = am2z__qstack_json(jr->errs, jr->nerrs, &stn);
    if (!stj) { stj = am2z__strdup("[]"); stn = 2; }
    if (stj && delay >= 0) am2z__qjr_retry(jr, delay, reason.bad ? "failed" : reason.p, stj, stn);
    else if (stj) am2z__qjr_fail(jr, reason.bad ? "failed" : reason.p, stj, stn);
    am2z__free(stj);
    am2z__qsb_free(&reason);
}

/* -- circuit breakers, shared by every process (am2z_breaker_policy; BREAKERS in 4.4) --
   The breaker of a processor is one hash, <bull>:<prefix>~<processor>:am2z:breaker
   {state closed|open|half-open, gen, until, probes, fails}, read and written only by
   the script below: "enter" before an attempt, "leave" after it, each atomic, so two
   processes never both take the last probe slot nor both open it. The state machine is
   the in-process one of am2z.h (section 7's breakers), step for step. Times are the
   callers' clocks (epoch ms), as the other scripts' "now". */
static const char *const am2z__qlua_breaker[] = {
    "-- ARGV: key op(enter|leave) now threshold window_ms open_ms probes ticket outcome(0 ok, 1 counted failure, 2 other)",
    "-- enter: {1, ticket (0: closed, > 0: a probe), 0, change} or {0, 0, retryAt, change}",
    "-- leave: {0, 0, retryAt, change}; change: '' | opened | reopened | half-open | closed",
    "local k, now = ARGV[1], tonumber(ARGV[3])",
    "local th, win, om, maxp = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])",
    "local h = redis.call('HMGET', k, 'state', 'gen', 'until', 'probes', 'fails')",
    "local st, gen, til, probes = h[1] or 'closed', tonumber(h[2] or '1'), tonumber(h[3] or '0'), tonumber(h[4] or '0')",
    "local ttl = 2 * (win + om) + 60000",
    "local function set(s, u)",
    "  redis.call('HSET', k, 'state', s, 'gen', gen + 1, 'until', u, 'probes', 0, 'fails', '')",
    "  redis.call('PEXPIRE', k, ttl)",
    "end",
    "if ARGV[2] == 'enter' then",
    "  if st == 'closed' then return {1, 0, 0, ''} end",
    "  local change = ''",
    "  if now >= til then",
    "    if st == 'open' then change = 'half-open' end",
    "    set('half-open', now + om)",
    "    gen, til, probes = gen + 1, now + om, 0",
    "  end",
    "  if st == 'open' and change == '' then return {0, 0, til, ''} end",
    "  if probes >= maxp then return {0, 0, til, change} end",
    "  redis.call('HSET', k, 'probes', probes + 1)",
    "  return {1, gen, 0, change}",
    "end",
    "local ticket, outcome = tonumber(ARGV[8]), ARGV[9]",
    "if ticket > 0 then",
    "  if st ~= 'half-open' or gen ~= ticket then return {0, 0, 0, ''} end",
    "  if outcome == '1' then set('open', now + om) return {0, 0, now + om, 'reopened'} end",
    "  if outcome == '0' then set('closed', 0) return {0, 0, 0, 'closed'} end",
    "  if probes > 0 then redis.call('HSET', k, 'probes', probes - 1) end",
    "  return {0, 0, 0, ''}",
    "end",
    "if outcome ~= '1' or st ~= 'closed' then return {0, 0, 0, ''} end",
    "local t = {}",
    "for x in string.gmatch(h[5] or '', '%d+') do t[#t + 1] = x end",
    "t[#t + 1] = ARGV[3]",
    "while #t > th do table.remove(t, 1) end",
    "if #t >= th and now - tonumber(t[1]) <= win then set('open', now + om) return {0, 0, now + om, 'opened'} end",
    "redis.call('HSET', k, 'fails', table.concat(t, ' '))",
    "redis.call('PEXPIRE', k, ttl)",
    "return {0, 0, 0, ''}",
    NULL
};

/* Runs the breaker script for jr's processor; 1 with *rep filled, 0 when Redis did not
   answer (logged as an outage: the attempt then runs unguarded, a breaker must not fail
   calls by itself). */
static int am2z__qbreaker_eval(am2z__qjobrun *jr, const char *op, int64_t ticket, int outcome, am2z_reply *rep) {
    am2z__qrt *q = jr->w->q;
    const am2z_breaker_policy *pol = &am2z_processor_desc_of(jr->p)->breaker;
    char key[3 * AM2Z_NAME_MAX + 64], now[24], th[24], win[24], om[24], pr[24], tk[24], oc[4];
    const char *argv[9];
    snprintf(key, sizeof key, "%s:%s~%s:am2z:breaker", q->bull, q->prefix, jr->qu->proc);
    snprintf(now, sizeof now, "%lld", (long long)am2z_now_ms());
    snprintf(th, sizeof th, "%d", pol->failure_threshold);
    snprintf(win, sizeof win, "%lld", (long long)pol->window_ms);
    snprintf(om, sizeof om, "%lld", (long long)pol->open_ms);
    snprintf(pr, sizeof pr, "%d", pol->half_open_probes);
    snprintf(tk, sizeof tk, "%lld", (long long)ticket);
    snprintf(oc, sizeof oc, "%d", outcome);
    argv[0] = key; argv[1] = op; argv[2] = now; argv[3] = th; argv[4] = win; argv[5] = om; argv[6] = pr;
    argv[7] = tk; argv[8] = oc;
    if (am2z__qeval(jr->w->conn, rep, q->s_breaker, 9, argv, NULL) != AM2Z_STATUS_OK || rep->type != AM2Z_REPLY_ARRAY ||
        rep->len != 4) {
        am2z__qdown(q, rep->type == AM2Z_REPLY_ERROR ? am2z_reply_str(rep) : am2z_status_detail());
        am2z_reply_clear(rep);
        return 0;
    }
    return 1;
}

/* The change the script reported, as section 7's event (this process only). */
static void am2z__qbreaker_event(am2z__qjobrun *jr, const am2z_reply *rep) {
    const am2z_breaker_policy *pol = &am2z_processor_desc_of(jr->p)->breaker;
    size_t n = 0;
    const char *ch = am2z__qel(rep, 3, &n);
    am2z__br_change c;
    memset(&c, 0, sizeof c);
    c.retry_at = am2z__qel_int(rep, 2);
    if (!ch || !n) return;
    if (n == 6 && memcmp(ch, "opened", 6) == 0) {
        c.event = "processor:breaker:opened";
        c.failures = pol->failure_threshold;
    } else if (n == 8 && memcmp(ch, "reopened", 8) == 0) {
        c.event = "processor:breaker:opened";
        c.failures = c.probe = 1;
    } else if (n == 9 && memcmp(ch, "half-open", 9) == 0) {
        c.event = "processor:breaker:half-open";
        c.probes = pol->half_open_probes;
        c.retry_at = am2z_now_ms() + pol->open_ms;
    } else if (n == 6 && memcmp(ch, "closed", 6) == 0) {
        c.event = "processor:breaker:closed";
    }
    am2z__breaker_emit(jr->w->q->rt, jr->qu->proc, pol, &c);
}

/* Before the attempt: an open breaker fails it with a CircuitOpenError (jr->err; it
   then goes through the retry policy as any failed attempt, which does not retry it
   unless the backoff outlasts the open time). */
static void am2z__qbreaker_enter(am2z__qjobrun *jr) {
    am2z_reply rep = am2z__qrep0();
    int64_t now, retry_at;
    if (!jr->p || am2z_processor_desc_of(jr->p)->breaker.failure_threshold <= 0) return;
    if (!am2z__qbreaker_eval(jr, "enter", 0, 0, &rep)) return;
    am2z__qbreaker_event(jr, &rep);
    if (am2z__qel_int(&rep, 0) == 1) {
        jr->breaker = 1;
        jr->breaker_ticket = am2z__qel_int(&rep, 1);
    } else {
        now = am2z_now_ms();
        retry_at = am2z__qel_int(&rep, 2);
        jr->err = am2z_error_with_location(am2z_error_circuit_open(jr->qu->proc, retry_at, retry_at - now), jr->qu->proc,
                                           jr->exec_id);
        if (!jr->err) jr->err = am2z_error_with_location(am2z_error_resource("memory", 0, 0), jr->qu->proc, jr->exec_id);
        jr->ran = 1; /* the retry policy decides, as after any attempt */
    }
    am2z_reply_clear(&rep);
}

/* After the attempt enter admitted: its outcome, timeouts counted (am2z_breaker_policy). */
static void am2z__qbreaker_leave(am2z__qjobrun *jr) {
    am2z_reply rep = am2z__qrep0();
    const am2z_error *e = jr->err;
    int outcome;
    if (!jr->breaker) return;
    if (!e) outcome = 0;
    else if (jr->cancelled == AM2Z__QCANCEL_DEADLINE || e->kind == AM2Z_ERROR_TIMEOUT ||
             (e->retryable && e->kind != AM2Z_ERROR_CIRCUIT_OPEN && e->kind != AM2Z_ERROR_CANCELLED))
        outcome = 1;
    else outcome = 2;
    if (jr->cancelled == AM2Z__QCANCEL_KEY || jr->cancelled == AM2Z__QCANCEL_STOPPING) outcome = 2;
    if (!am2z__qbreaker_eval(jr, "leave", jr->breaker_ticket, outcome, &rep)) return;
    am2z__qbreaker_event(jr, &rep);
    am2z_reply_clear(&rep);
}

/* Runs the fetched job (consumed) on worker w and finishes it. parent: the run that
   claimed it inline, or NULL. batch: where a success waits for the next complete call
   (NULL: complete it now); failures and retries are finished at once. */
static void am2z__qrun_job(am2z__qworker *w, am2z__qjob *job, am2z__qrun *parent, am2z__qbatch *batch) {
    am2z__qjobrun jr;
    if (!am2z__qjr_decode(&jr, w, job, parent, batch)) return;
    am2z__qjr_resolve(&jr);
    if (!jr.err) am2z__qdx_begin(&jr); /* may end it with its recorded outcome */
    else if (jr.defa) am2z__qdx_stalled(&jr); /* a durable one records its failure */
    if (!jr.err && !jr.out_state) am2z__qbreaker_enter(&jr);
    if (!jr.err && !jr.out_state && !am2z__qjr_attempt(&jr)) { am2z__qjr_clear(&jr); return; }
    am2z__qbreaker_leave(&jr);
    snprintf(jr.now_s, sizeof jr.now_s, "%lld", (long long)am2z_now_ms());
    snprintf(jr.atm_s, sizeof jr.atm_s, "%d", jr.attempt);
    jr.direct = jr.reply_to && strcmp(jr.reply_to, w->q->reply_key) == 0;
    jr.rkey = jr.reply_to && !jr.direct ? jr.reply_to : "";
    if (am2z__qdx_park(&jr)) { am2z__qjr_clear(&jr); return; }
    if (!jr.err) am2z__qtrace_push(&jr, -1); /* before the result can reach its caller */
    if (!jr.err) am2z__qjr_complete(&jr);
    if (jr.err && jr.cancelled == AM2Z__QCANCEL_STOPPING) am2z__qjr_give_back(&jr);
    if (jr.err) am2z__qjr_retry_or_fail(&jr);
    am2z__qjr_clear(&jr);
}

/* An id in a queue without its job hash (deleted by hand, a broken client): the fetch
   script dropped it from active. Counted (stats "missing"), logged the first time, and
   told to handlers as "queue:job:missing" {queue, jobId, missing}. */
static void am2z__qmissing(am2z__qrt *q, am2z__qqueue *qu, const am2z_reply *e) {
    size_t idn = 0;
    const char *id = am2z__qel(e, 1, &idn);
    int64_t n = am2z__atomic_inc(&q->n_missing);
    char idb[AM2Z_NAME_MAX + 1];
    snprintf(idb, sizeof idb, "%.*s", (int)(idn > AM2Z_NAME_MAX ? AM2Z_NAME_MAX : idn), id ? id : "");
    if (n == 1)
        am2z_log_warn(q->logger, "queue runtime: job %s of %s has no hash: dropped (logged once; stats \"missing\" "
                      "counts them)", idb, qu->name);
    if (am2z__runtime_has_handlers(q->rt, "queue:job:missing")) {
        am2z_value *ev = am2z_value_set(am2z_value_object(), "queue", am2z_value_string(qu->name));
        ev = am2z_value_set(ev, "jobId", am2z_value_string(idb));
        ev = am2z_value_set(ev, "missing", am2z_value_int(n));
        am2z_runtime_emit(q->rt, "queue:job:missing", ev);
        am2z_value_release(ev);
    }
}

/* Moves the jobs of a fetch-shaped reply {3, job...} into jobs (at most max; job n gets
   token <token>.<n>); {0, due} notes the next delayed job on qu. Returns the count. */
static size_t am2z__qfetch_parse(am2z__qrt *q, am2z__qqueue *qu, am2z_reply *rep, const char *token, am2z__qjob *jobs,
                                 size_t max) {
    size_t i, n = 0;
    int64_t code = am2z__qel_int(rep, 0);
    if (rep->type == AM2Z_REPLY_ARRAY && code == 3) {
        for (i = 1; i < rep->len && n < max; i++) {
            am2z_reply *e = &rep->element[i];
            if (e->type == AM2Z_REPLY_ARRAY && am2z__qel_int(e, 0) == 2) am2z__qmissing(q, qu, e);
            if (e->type != AM2Z_REPLY_ARRAY || am2z__qel_int(e, 0) != 1 || e->len < AM2Z__QJ_COUNT) continue;
            memset(&jobs[n], 0, sizeof jobs[n]);
            jobs[n].rep = *e;
            memset(e, 0, sizeof *e);
            snprintf(jobs[n].token, sizeof jobs[n].token, "%s.%lu", token, (unsigned long)i);
            am2z__atomic_inc(&qu->refs);
            jobs[n].qu = qu;
            n++;
        }
    } else if (rep->type == AM2Z_REPLY_ARRAY && code == 0 && rep->len >= 2) {
        am2z__qnote_due(q, qu, am2z__qel_int(rep, 1));
    }
    return n;
}

/* -- hand-off: an add gives a job straight to an idle worker (HAND-OFF in 4.4) -- */

/* A registration is refreshed by a wait this long after it was written; the add script
   takes registrations up to 5000 ms old, and a wait lasts 2000 ms at most. */
#define AM2Z__QIDLE_REFRESH_MS 1000
#define AM2Z__QIDLE_PER_QUEUE 4 /* threads of a process registered idle on one queue at once */
#define AM2Z__QIDLE_TTL_MS 10000 /* life of an instance's idle key after its last registration */
#define AM2Z__QIDLE_RECENT_MS 10000 /* threads register on a queue this process added to this lately */

/* Appends the ZREM of this thread's registration (it is about to work): pipelined with
   the next command, so it costs no round trip. Returns the replies owed (0 or 1). */
static void am2z__qidle_forget(am2z__qworker *w) {
    am2z__free(w->reg_key);
    w->reg_key = NULL;
    if (w->reg_qu) am2z__atomic_dec(&w->reg_qu->nidle);
    am2z__qqueue_release(w->reg_qu);
    w->reg_qu = NULL;
}
static size_t am2z__qidle_drop(am2z__qworker *w) {
    size_t owed;
    if (!w->reg_key) return 0;
    owed = am2z_redis_append(w->conn, "ZREM %s %s", w->reg_key, w->reg_member) == AM2Z_STATUS_OK;
    am2z__qidle_forget(w);
    return owed;
}

/* am2z__qeval on the worker's connection, its registration dropped in the same write;
   with reg, the thread registers on reg right after the script (also in that write), so
   a caller told of the script's outcome finds the thread registered already. */
static size_t am2z__qidle_register(am2z__qworker *w, am2z__qqueue *u);
static am2z_status am2z__qeval_w(am2z__qworker *w, am2z_reply *rep, const am2z_redis_script *s, size_t argc,
                                 const char *const *argv, const size_t *lens, am2z__qqueue *reg) {
    size_t before = am2z__qidle_drop(w), after = 0;
    am2z_status st, rst = AM2Z_STATUS_OK;
    if (!before && !reg) return am2z__qeval(w->conn, rep, s, argc, argv, lens);
    st = am2z_redis_append_evalsha(w->conn, s, 0, argc, argv, lens);
    if (st == AM2Z_STATUS_OK && reg) after = am2z__qidle_register(w, reg);
    while (before-- > 0)
        if (am2z_redis_read(w->conn, rep) != AM2Z_STATUS_OK && !am2z_redis_is_connected(w->conn)) return AM2Z_STATUS_IO;
    if (st != AM2Z_STATUS_OK) return am2z__qeval(w->conn, rep, s, argc, argv, lens);
    st = am2z_redis_read(w->conn, rep);
    if (st != AM2Z_STATUS_OK && !am2z_redis_is_connected(w->conn)) return st; /* the pipeline went with it */
    while (after-- > 0 && rst == AM2Z_STATUS_OK) {
        am2z_reply z = am2z__qrep0();
        rst = am2z_redis_read(w->conn, &z);
        if (rst == AM2Z_STATUS_SERVER) rst = AM2Z_STATUS_OK; /* a refused registration: no hand-off, no harm */
        am2z_reply_clear(&z);
    }
    if (rst != AM2Z_STATUS_OK && !am2z_redis_is_connected(w->conn)) { am2z_reply_clear(rep); return rst; }
    /* a pipeline has no NOSCRIPT fallback: a fresh server gets the script's source now */
    if (st == AM2Z_STATUS_SERVER && strncmp(am2z_reply_str(rep), "NOSCRIPT", 8) == 0)
        return am2z__qeval(w->conn, rep, s, argc, argv, lens);
    return st;
}

/* Whether this thread may register on u: a global queue (a session's queues come and go
   with the session, so no key of theirs is left behind) served here, to which this
   process added a job lately (only its own adds hand jobs to it), whose processor has no
   per-process concurrency limit (a handed job takes no slot first). */
static int am2z__qidle_ok(am2z__qworker *w, am2z__qqueue *u) {
    size_t i;
    int served = 0;
    if (!u || am2z_now_ms() - am2z__atomic_load(&u->added_ms, AM2Z__MO_RELAXED) > AM2Z__QIDLE_RECENT_MS) return 0;
    for (i = 0; !u->session && i < w->nsnap && !served; i++) served = w->snap[i] == u;
    for (i = 0; served && i < w->nprocs; i++)
        if (strcmp(w->procs[i]->name, u->proc) == 0) return w->procs[i]->limit <= 0;
    return 0;
}

/* The queue this thread registers on before it blocks: the one it last emptied, or its
   only served queue; NULL when it may not (am2z__qidle_ok). */
static am2z__qqueue *am2z__qidle_queue(am2z__qworker *w) {
    am2z__qqueue *u = w->idle_qu ? w->idle_qu : w->nsnap == 1 ? w->snap[0] : NULL;
    return am2z__qidle_ok(w, u) ? u : NULL;
}

/* Appends this thread's registration on u (a new token when it registers afresh; the
   same entry, with a fresh score, while it stays registered there): how many replies are
   owed (an old registration elsewhere is dropped first). */
static size_t am2z__qidle_register(am2z__qworker *w, am2z__qqueue *u) {
    size_t owed = 0;
    char tok[64];
    if (w->reg_key && w->reg_qu != u) owed += am2z__qidle_drop(w);
    if (!w->reg_key) {
        /* enough threads of this process idle there already: more would only add
           registrations to write and drop at every wake-up of a busy queue */
        if (am2z__atomic_inc(&u->nidle) > AM2Z__QIDLE_PER_QUEUE) { am2z__atomic_dec(&u->nidle); return owed; }
        am2z__qtoken(w->q, tok);
        /* a prefix too long for the entry: this thread is never handed a job */
        if ((size_t)snprintf(w->reg_member, sizeof w->reg_member, "%s|%s|%s", tok, w->q->lock_s, w->ctl) >=
                sizeof w->reg_member ||
            !(w->reg_key = am2z__qcat(u->P, "am2z:idle:", w->q->instance, NULL))) {
            am2z__atomic_dec(&u->nidle);
            return owed;
        }
        am2z__atomic_inc(&u->refs);
        w->reg_qu = u;
    }
    w->reg_ms = am2z_now_ms();
    if (am2z_redis_append(w->conn, "ZADD %s %lld %s", w->reg_key, (long long)w->reg_ms, w->reg_member) == AM2Z_STATUS_OK)
        owed++;
    /* the key of a crashed instance goes by itself */
    if (am2z_redis_append(w->conn, "PEXPIRE %s %d", w->reg_key, AM2Z__QIDLE_TTL_MS) == AM2Z_STATUS_OK) owed++;
    return owed;
}

/* Whether the lock of a job handed at handed_ms is still this thread's: a job that
   waited past half its lock (its thread was busy, or the wake-up key outlived it) is
   checked and its lock renewed first, so one the stalled scan gave to another worker
   meanwhile is not run a second time. */
static int am2z__qhanded_lock_ok(am2z__qworker *w, const char *P, const char *id, const char *tok, int64_t handed_ms) {
    am2z__qrt *q = w->q;
    am2z_reply rep = am2z__qrep0();
    const char *argv[4];
    int ok;
    if (am2z_now_ms() - handed_ms <= q->lock_ms / 2) return 1;
    argv[0] = q->lock_s; argv[1] = P; argv[2] = id; argv[3] = tok;
    ok = am2z__qeval(w->conn, &rep, q->s_extend, 4, argv, NULL) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY &&
         rep.len == 0; /* extend returns the ids whose lock is not ours */
    am2z_reply_clear(&rep);
    return ok;
}

/* A job an add handed to this thread at handed_ms (the member of its wake-up key: RESP
   {P, token, job as take returns it}) into jobs[0], with a slot of its processor: 1, or
   0 when it cannot run here (a queue no longer served: its lock expires and the stalled
   scan puts it back, as for a worker that died; or its lock is no longer ours). */
static int am2z__qhanded(am2z__qworker *w, const char *msg, size_t len, int64_t handed_ms, am2z__qjob *jobs) {
    am2z_reply h = am2z__qrep0();
    am2z__qqueue *u = NULL;
    am2z__qproc *pr;
    const char *P, *tok, *id;
    size_t i, tn = 0;
    int r = 0;
    if (!w->hrd && !(w->hrd = am2z_resp_reader_new(NULL, NULL))) return 0;
    am2z_resp_reader_reset(w->hrd);
    if (am2z_resp_reader_feed(w->hrd, msg, len) != AM2Z_STATUS_OK || am2z_resp_reader_next(w->hrd, &h) != AM2Z_STATUS_OK ||
        h.type != AM2Z_REPLY_ARRAY || h.len != 3 || h.element[2].type != AM2Z_REPLY_ARRAY ||
        am2z__qel_int(&h.element[2], 0) != 1 || h.element[2].len < AM2Z__QJ_COUNT)
        goto done;
    P = am2z__qel(&h, 0, NULL);
    tok = am2z__qel(&h, 1, &tn);
    id = am2z__qel(&h.element[2], 1, NULL);
    if (!P || !tok || !id || tn >= sizeof jobs[0].token) goto done;
    /* the add consumed this registration (another one's job may come late: the thread
       then stays registered, and a job handed meanwhile waits until it blocks again) */
    if (w->reg_key && strncmp(w->reg_member, tok, tn) == 0 && w->reg_member[tn] == '|') am2z__qidle_forget(w);
    for (i = 0; i < w->nsnap && !u; i++)
        if (strcmp(w->snap[i]->P, P) == 0) u = w->snap[i];
    if (!u) goto done;
    if (!am2z__qhanded_lock_ok(w, P, id, tok, handed_ms)) {
        r = -1; /* another worker has it (or Redis is away): nothing to run, nothing to warn */
        goto done;
    }
    pr = am2z__qproc_find(w->q, u->proc);
    if (!pr || !am2z__qproc_reserve(pr)) { am2z__qproc_release(pr); goto done; }
    am2z__qproc_release(pr);
    memset(&jobs[0], 0, sizeof jobs[0]);
    jobs[0].rep = h.element[2];
    memset(&h.element[2], 0, sizeof h.element[2]);
    memcpy(jobs[0].token, tok, tn + 1);
    am2z__atomic_inc(&u->refs);
    jobs[0].qu = u;
    w->handed = 1;
    r = 1;
done:
    if (!r) am2z_log_warn(w->q->logger, "queue runtime: a job handed to this worker cannot run here; the stalled scan puts it back");
    am2z_reply_clear(&h);
    return r > 0;
}

/* Fetches up to k jobs of qu: how many (0 none), or -1 on a connection or server failure. */
static int am2z__qfetch(am2z__qworker *w, am2z__qqueue *qu, int promote, size_t k, am2z__qjob *jobs) {
    am2z__qrt *q = w->q;
    am2z_reply rep = am2z__qrep0();
    char now_s[24], ks[24], tok[64];
    const char *argv[10];
    int64_t now = am2z_now_ms();
    am2z_status st;
    size_t n;
    if (!promote && now - am2z__atomic_load(&qu->last_promote, AM2Z__MO_ACQUIRE) >= 250) promote = 1;
    if (promote) am2z__atomic_store(&qu->last_promote, now, AM2Z__MO_RELEASE);
    snprintf(now_s, sizeof now_s, "%lld", (long long)now);
    snprintf(ks, sizeof ks, "%lu", (unsigned long)k);
    am2z__qtoken(q, tok);
    argv[0] = qu->P; argv[1] = q->C; argv[2] = tok; argv[3] = q->lock_s; argv[4] = now_s;
    argv[5] = promote ? "1" : "0"; argv[6] = qu->wk; argv[7] = qu->wm; argv[8] = ks; argv[9] = am2z__qev_level(q, qu);
    st = am2z__qeval_w(w, &rep, q->s_fetch, 10, argv, NULL, NULL);
    if (st != AM2Z_STATUS_OK) {
        if (am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE) && !am2z_redis_is_connected(w->conn))
            am2z__qdown(q, am2z_status_detail());
        else if (am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE))
            am2z_log_warn(q->logger, "queue runtime: fetch from %s failed: %s", qu->name,
                          rep.type == AM2Z_REPLY_ERROR ? am2z_reply_str(&rep) : am2z_status_detail());
        am2z_reply_clear(&rep);
        return -1;
    }
    n = am2z__qfetch_parse(q, qu, &rep, tok, jobs, k);
    am2z_reply_clear(&rep);
    return (int)n;
}

/* Fetch with a concurrency slot of the queue's processor (kept while the jobs run, one
   after the other on this thread) into jobs (room for AM2Z_QUEUE_BATCH): as many as a
   round of this queue last took (qu->take_k, learned by am2z__qserve: one once its jobs
   are slow) and this thread takes (w->k), one for a processor with a concurrency limit.
   The count, 0 none, -1 error. Taking a round's worth at once, not one, matters when many
   threads serve a deep queue: each woken thread that took one job woke the next one. */
static int am2z__qtake(am2z__qworker *w, am2z__qqueue *qu, int promote, am2z__qjob *jobs) {
    am2z__qproc *pr = am2z__qproc_find(w->q, qu->proc);
    int64_t k;
    int r;
    if (!pr) return 0;
    if (!am2z__qproc_reserve(pr)) { am2z__qproc_release(pr); return 0; }
    k = am2z__atomic_load(&qu->take_k, AM2Z__MO_ACQUIRE);
    if (pr->limit > 0 || k < 1) k = 1;
    if ((size_t)k > w->k) k = (int64_t)w->k;
    r = am2z__qfetch(w, qu, promote, k < 1 ? 1 : (size_t)k, jobs);
    if (r < 1) am2z__qproc_unreserve(pr);
    am2z__qproc_release(pr);
    return r;
}

/* Runs the n jobs taken with am2z__qtake, then keeps serving their queue for a few rounds: each
   round's successes complete in one script call that also takes the next jobs. A thread
   takes more jobs per round (up to AM2Z_QUEUE_BATCH) while the queue is deep and its jobs
   are quick, and goes back to one at a time as soon as they are not. A processor with a
   concurrency limit is served one job at a time. Then gives the slot back. */
static void am2z__qserve(am2z__qworker *w, am2z__qjob *first, size_t n) {
    am2z__qrt *q = w->q;
    am2z__qqueue *qu = first->qu;
    am2z__qproc *pr = am2z__qproc_find(q, qu->proc);
    am2z__qjob jobs[AM2Z_QUEUE_BATCH];
    am2z__qbatch *b = &w->batch;
    size_t i, k;
    int rounds = 0, handed = w->handed;
    w->handed = 0;
    am2z__atomic_inc(&qu->refs);
    for (i = 0; i < n; i++) jobs[i] = first[i];
    for (;;) {
        int64_t t0 = am2z_monotonic_ns(), per_job;
        b->n = 0;
        for (i = 0; i < n; i++) am2z__qrun_job(w, &jobs[i], NULL, b);
        per_job = (am2z_monotonic_ns() - t0) / (int64_t)n;
        if (pr && pr->limit > 0) w->k = 1;
        else if (per_job > 5000000) w->k = 1;
        else if (per_job < 1000000 && n >= w->k && w->k < AM2Z_QUEUE_BATCH) w->k *= 2;
        if (w->k > AM2Z_QUEUE_BATCH) w->k = AM2Z_QUEUE_BATCH;
        k = rounds < 32 && am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE) ? w->k : 0;
        /* a handed job came to an empty queue: its complete takes nothing next (a job
           added since was handed too, or marked the queue, which wakes this thread), so
           the thread registers as idle in that write. A complete that may take jobs
           must not: a job handed to a thread busy with them would wait, its lock
           unrenewed (the thread registers when it blocks instead, in that write). */
        if (b->n) n = am2z__qcomplete(w, qu, b, handed ? 0 : k, jobs, handed);
        else if (k) { int r = am2z__qfetch(w, qu, 0, k, jobs); n = r > 0 ? (size_t)r : 0; }
        else n = 0;
        handed = 0;
        if (!n) {
            if (k && w->idle_qu != qu) { /* qu is empty: this thread waits for its next job (HAND-OFF) */
                am2z__qqueue_release(w->idle_qu);
                am2z__atomic_inc(&qu->refs);
                w->idle_qu = qu;
            }
            break;
        }
        rounds++;
    }
    am2z__atomic_store(&qu->take_k, (int64_t)w->k, AM2Z__MO_RELEASE);
    am2z__qqueue_release(qu);
    am2z__qproc_unreserve(pr);
    am2z__qproc_release(pr);
}

/* -- ctx calls: children are jobs; the parent runs the ones nobody took yet -- */

static void am2z__qcall_many(am2z_ctx *ctx, const char *const *names, const am2z_state *const *inputs,
                             size_t count, am2z_result *results) {
    am2z__qrun *run = (am2z__qrun *)ctx->runtime_data;
    am2z__qworker *w = run->w;
    am2z__qrt *q = w->q;
    am2z__qnotify group;
    am2z__qadd *adds;
    am2z_status *sts;
    am2z__qwait **kids;
    am2z__qjob first;
    size_t i, j;
    int64_t backoff = 1;
    if (count == 0) return;
    if (run->depth >= q->max_depth) {
        for (i = 0; i < count; i++)
            results[i] = am2z_fail(am2z_error_call_depth(q->max_depth, run->depth + 1));
        return;
    }
    adds = (am2z__qadd *)am2z__malloc(count * sizeof *adds);
    sts = (am2z_status *)am2z__malloc(count * sizeof *sts);
    kids = (am2z__qwait **)am2z__malloc(count * sizeof *kids);
    if (!adds || !sts || !kids || !am2z__qnotify_init(&group)) {
        am2z__free(adds); am2z__free(sts); am2z__free(kids);
        for (i = 0; i < count; i++) results[i] = am2z_fail(am2z_error_resource("memory", 0, (int64_t)count));
        return;
    }
    /* 1. register a waiter per child, add the jobs (pipelined) */
    for (i = 0; i < count; i++) {
        sts[i] = am2z__qadd_prep(q, &adds[i], names[i], inputs[i], run->qu->session, run, &group, NULL);
        kids[i] = sts[i] == AM2Z_STATUS_OK ? adds[i].w : NULL;
    }
    if (!am2z_redis_is_connected(w->conn)) am2z__qensure(q, w->conn);
    /* the first child goes straight to this thread (nobody else can take it), the others
       wait in their queues for any worker */
    memset(&first, 0, sizeof first);
    if (sts[0] == AM2Z_STATUS_OK) am2z__qtoken(q, adds[0].take);
    for (i = 0; i < count; i = j) {
        am2z__qadd *batch = adds + i;
        am2z_status *bst = sts + i;
        size_t n = 0, k;
        /* gather a run of prepared adds */
        for (j = i; j < count && n < 256; j++, n++) {
            if (sts[j] != AM2Z_STATUS_OK) break;
        }
        if (n == 0) { j = i + 1; continue; }
        am2z__qadd_send(q, w->conn, batch, n, bst, i == 0 ? &first : NULL);
        for (k = 0; k < n; k++) am2z__qadd_free(&batch[k]);
    }
    for (i = 0; i < count; i++) {
        if (sts[i] == AM2Z_STATUS_OK) continue;
        if (kids[i]) { am2z__qwait_release(kids[i]); kids[i] = NULL; }
        if (sts[i] == AM2Z_STATUS_NOT_FOUND) {
            results[i] = am2z_fail(names[i] ? am2z__qnot_found(q, names[i]) : am2z__runtime_not_found(q->rt, "(null)"));
        } else if (sts[i] == AM2Z_STATUS_CANCELLED) {
            results[i] = am2z_fail(am2z_error_cancelled("the session was stopped"));
        } else if (sts[i] == AM2Z_STATUS_NO_MEMORY) {
            results[i] = am2z_fail(am2z_error_resource("memory", 0, 0));
        } else {
            results[i] = am2z_fail(am2z_error_network(q->rdesc.host ? q->rdesc.host : "redis", 0, am2z__redis_error(w->conn, sts[i])));
        }
    }
    /* 2. run the first child here, then wait, running the children nobody took yet */
    if (first.qu) am2z__qrun_job(w, &first, run, NULL);
    for (;;) {
        const char *argv[5 + 2 * 64];
        char tok[64], now_s[24];
        size_t argc = 5, pending = 0;
        size_t still = 0;
        int c = am2z__qrun_cancelled(run);
        am2z__mutex_lock(&group.mu);
        for (i = 0; i < count; i++)
            if (kids[i] && !kids[i]->done) pending++;
        am2z__mutex_unlock(&group.mu);
        if (!pending) break;
        if (c) {
            const char **ids = (const char **)am2z__malloc(count * sizeof *ids);
            size_t n = 0;
            for (i = 0; i < count; i++) {
                am2z__qwait *t;
                if (!kids[i] || !(t = am2z__qwait_take(q, kids[i]->id, strlen(kids[i]->id)))) continue;
                t->error = am2z_error_with_location(
                    c == AM2Z__QCANCEL_DEADLINE ? am2z_error_timeout(t->qu->proc, (run->deadline_ns - t->started_ns) / 1000000)
                           : am2z_error_cancelled("the parent execution was cancelled"),
                    t->qu->proc, t->id);
                if (ids) ids[n++] = t->id;
                am2z__qwait_signal(t);
            }
            if (c != AM2Z__QCANCEL_LOCK_LOST) am2z__qcancel_keys(q, w->conn, ids, n);
            am2z__free(ids);
            continue;
        }
        am2z__qtoken(q, tok);
        snprintf(now_s, sizeof now_s, "%lld", (long long)am2z_now_ms());
        argv[0] = q->C; argv[1] = tok; argv[2] = q->lock_s; argv[3] = now_s; argv[4] = "0";
        am2z__mutex_lock(&group.mu);
        for (i = 0; i < count && argc + 2 <= sizeof argv / sizeof argv[0]; i++)
            if (kids[i] && !kids[i]->done) {
                const char *lv = am2z__qev_level(q, kids[i]->qu);
                if (strcmp(lv, argv[4]) > 0) argv[4] = lv; /* the most any of the queues wants */
                argv[argc++] = kids[i]->qu->P;
                argv[argc++] = kids[i]->id;
            }
        am2z__mutex_unlock(&group.mu);
        if (am2z_redis_is_connected(w->conn) || am2z__qensure(q, w->conn)) {
            am2z_reply rep = am2z__qrep0();
            if (am2z__qeval(w->conn, &rep, q->s_claim, argc, argv, NULL) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY &&
                am2z__qel_int(&rep, 0) == 1 && rep.len > AM2Z__QJ_COUNT) {
                size_t idn = 0;
                const char *id = am2z__qel(&rep, AM2Z__QJ_ID, &idn);
                am2z__qjob job;
                memset(&job, 0, sizeof job);
                snprintf(job.token, sizeof job.token, "%s", tok);
                for (i = 0; i < count; i++)
                    if (kids[i] && id && strlen(kids[i]->id) == idn && memcmp(kids[i]->id, id, idn) == 0) {
                        job.qu = kids[i]->qu;
                        am2z__atomic_inc(&job.qu->refs);
                        break;
                    }
                job.rep = rep;
                if (job.qu) {
                    am2z__qrun_job(w, &job, run, NULL);
                    backoff = 1;
                    continue;
                }
                am2z__qjob_clear(&job);
            } else {
                am2z_reply_clear(&rep);
            }
        }
        /* nothing to run here: wait for a delivery (or poll again: a child may come back
           from a retry or a stalled worker) */
        am2z__mutex_lock(&group.mu);
        for (i = 0; i < count; i++)
            if (kids[i] && !kids[i]->done) still++;
        if (still == pending) {
            am2z__cond_wait_until(&group.cv, &group.mu, am2z_monotonic_ns() + (int64_t)backoff * 1000000);
        }
        am2z__mutex_unlock(&group.mu);
        if (backoff < 50) backoff *= 2;
    }
    /* 3. results in order */
    for (i = 0; i < count; i++) {
        am2z_outcome out;
        if (!kids[i]) continue;
        am2z__qwait_outcome(kids[i], &out);
        if (out.error) { results[i].error = out.error; out.error = NULL; }
        else if (out.state) { results[i].state = out.state; out.state = NULL; }
        else results[i] = am2z_fail(am2z_error_resource("memory", 0, 0));
        am2z_outcome_clear(&out);
        am2z__qwait_release(kids[i]);
    }
    am2z__qnotify_destroy(&group);
    am2z__free(adds);
    am2z__free(sts);
    am2z__free(kids);
}

/* -- worker threads -- */

static void am2z__qsnap_release(am2z__qworker *w) {
    size_t i;
    for (i = 0; i < w->nsnap; i++) am2z__qqueue_release(w->snap[i]);
    for (i = 0; i < w->nprocs; i++) am2z__qproc_release(w->procs[i]);
    am2z__free(w->snap);
    am2z__free(w->procs);
    w->snap = NULL;
    w->procs = NULL;
    w->nsnap = w->nprocs = 0;
}

/* Copies the served queues and registered processors when they changed. */
static void am2z__qsnap(am2z__qworker *w) {
    am2z__qrt *q = w->q;
    unsigned g = am2z__atomic_load(&q->gen, AM2Z__MO_ACQUIRE);
    size_t i, n = 0, np = 0;
    am2z__qqueue *u;
    am2z__qproc *p;
    if (g == w->gen && w->snap) return;
    am2z__qsnap_release(w);
    am2z__mutex_lock(&q->mu);
    for (i = 0; i < AM2Z__QBUCKETS; i++)
        for (u = q->queues[i]; u; u = u->hnext) n += u->served;
    for (p = q->procs; p; p = p->next) np++;
    w->snap = (am2z__qqueue **)am2z__malloc((n + 1) * sizeof *w->snap);
    w->procs = (am2z__qproc **)am2z__malloc((np + 1) * sizeof *w->procs);
    if (w->snap && w->procs) {
        for (i = 0; i < AM2Z__QBUCKETS; i++)
            for (u = q->queues[i]; u; u = u->hnext)
                if (u->served) { am2z__atomic_inc(&u->refs); w->snap[w->nsnap++] = u; }
        for (p = q->procs; p; p = p->next) { am2z__atomic_inc(&p->refs); w->procs[w->nprocs++] = p; }
        w->gen = g;
    }
    am2z__mutex_unlock(&q->mu);
}

/* Takes jobs (am2z__qtake) from a queue whose delayed job is due: how many. */
static int am2z__qpoll_due(am2z__qworker *w, am2z__qjob *jobs) {
    int64_t now = am2z_now_ms();
    size_t i;
    for (i = 0; i < w->nsnap; i++) {
        am2z__qqueue *u = w->snap[i];
        int64_t due = am2z__atomic_load(&u->next_due, AM2Z__MO_ACQUIRE);
        if (due && due <= now && am2z__atomic_cas(&u->next_due, &due, 0, AM2Z__MO_ACQ_REL, AM2Z__MO_ACQUIRE)) {
            int r = am2z__qtake(w, u, 1, jobs);
            if (r > 0) return r;
        }
    }
    return 0;
}

/* Blocks on the markers of every served queue (and the wake keys of the processors and
   this thread's control key) until one shows work; then takes jobs (am2z__qtake): how
   many, 0 none, -1 error. */
static int am2z__qblock(am2z__qworker *w, am2z__qjob *jobs) {
    am2z__qrt *q = w->q;
    size_t argc = 0, i, n = w->nsnap;
    const char **argv = (const char **)am2z__malloc((n + w->nprocs + 3) * sizeof *argv);
    char tmo[32];
    int64_t now = am2z_now_ms(), wait_ms = 2000;
    am2z_reply rep = am2z__qrep0();
    am2z_status st;
    am2z__qqueue *u0;
    int r = 0, reg_fresh = 0;
    if (!argv) { am2z__qsleep_ms(10); return 0; }
    argv[argc++] = "BZPOPMIN";
    argv[argc++] = w->ctl;
    for (i = 0; i < w->nprocs; i++)
        if (!am2z__qproc_full(w->procs[i])) argv[argc++] = w->procs[i]->wake_key;
    w->rot++;
    for (i = 0; i < n; i++) {
        am2z__qqueue *u = w->snap[(i + w->rot) % n];
        int64_t due = am2z__atomic_load(&u->next_due, AM2Z__MO_ACQUIRE);
        am2z__qproc *pr = NULL;
        size_t k;
        for (k = 0; k < w->nprocs; k++)
            if (strcmp(w->procs[k]->name, u->proc) == 0) { pr = w->procs[k]; break; }
        if (!pr || am2z__qproc_full(pr)) continue;
        argv[argc++] = u->marker;
        if (due && due - now < wait_ms) wait_ms = due - now;
    }
    if (wait_ms < 5) wait_ms = 5;
    snprintf(tmo, sizeof tmo, "%.3f", (double)wait_ms / 1000.0);
    argv[argc++] = tmo;
    if (!am2z__qguard_enter(q, &w->guard, w->conn)) { am2z__free(argv); return 0; } /* stopping */
    u0 = am2z__qidle_queue(w);
    if (u0 && u0 == w->reg_qu && now - w->reg_ms < AM2Z__QIDLE_REFRESH_MS) u0 = NULL, reg_fresh = 1;
    if (u0 || (w->reg_key && !reg_fresh)) {
        /* registered as idle in the same write as the wait (HAND-OFF) */
        size_t owed = u0 ? am2z__qidle_register(w, u0) : am2z__qidle_drop(w);
        st = am2z_redis_append_argv(w->conn, argc, argv, NULL);
        while (owed-- > 0)
            if (am2z_redis_read(w->conn, &rep) != AM2Z_STATUS_OK && !am2z_redis_is_connected(w->conn)) break;
        if (st == AM2Z_STATUS_OK && am2z_redis_is_connected(w->conn))
            st = am2z_redis_read_timeout(w->conn, &rep, wait_ms + 5000);
        else if (st == AM2Z_STATUS_OK)
            st = AM2Z_STATUS_IO;
    } else {
        st = am2z_redis_blocking_argv(w->conn, &rep, wait_ms + 5000, argc, argv, NULL);
    }
    am2z__qguard_leave(q, &w->guard);
    am2z__free(argv);
    if (st != AM2Z_STATUS_OK) {
        if (am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE)) am2z__qdown(q, am2z_status_detail());
        am2z_reply_clear(&rep);
        return -1;
    }
    am2z__qup(q);
    if (rep.type == AM2Z_REPLY_ARRAY && rep.len >= 3) {
        size_t kn = 0, mn = 0;
        const char *key = am2z__qel(&rep, 0, &kn), *member = am2z__qel(&rep, 1, &mn);
        const am2z_reply *sc = am2z_reply_at(&rep, 2);
        int64_t score = sc && sc->type == AM2Z_REPLY_DOUBLE
                            ? (sc->number >= 0 && sc->number < (double)AM2Z__QMAX_MS ? (int64_t)sc->number : 0)
                            : am2z__qel_num(&rep, 2, 0, AM2Z__QMAX_MS, 0);
        if (key && strcmp(key, w->ctl) == 0 && member && mn > 0 && member[0] == '*') {
            r = am2z__qhanded(w, member, mn, score, jobs);
        } else if (key && strcmp(key, w->ctl) != 0) {
            size_t cl = strlen(q->C);
            if (kn > cl + 5 && memcmp(key, q->C, cl) == 0 && memcmp(key + cl, "wake:", 5) == 0) {
                /* a session queue of this processor has work */
                if (member && am2z__qname_ok(member) && am2z__qname_ok(key + cl + 5)) {
                    am2z__qqueue *u = am2z__qqueue_get(q, key + cl + 5, member, 1);
                    if (u) { r = am2z__qtake(w, u, 0, jobs); am2z__qqueue_release(u); }
                }
            } else {
                for (i = 0; i < n; i++)
                    if (strcmp(w->snap[i]->marker, key) == 0) break;
                if (i < n) {
                    am2z__qqueue *u = w->snap[i];
                    if (member && mn == 1 && member[0] == '1') {
                        /* a delayed job (or a rate-limit window) due at score */
                        if (score <= am2z_now_ms()) {
                            am2z__atomic_store(&u->next_due, 0, AM2Z__MO_RELEASE);
                            r = am2z__qtake(w, u, 1, jobs);
                        } else {
                            am2z__qnote_due(q, u, score);
                        }
                    } else {
                        r = am2z__qtake(w, u, 0, jobs);
                    }
                }
            }
        }
    }
    am2z_reply_clear(&rep);
    return r;
}

static void *am2z__qworker_main(void *arg) {
    am2z__qworker *w = (am2z__qworker *)arg;
    am2z__qrt *q = w->q;
    am2z__qjob jobs[AM2Z_QUEUE_BATCH];
    while (am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE)) {
        int got;
        if (!am2z_redis_is_connected(w->conn) && !am2z__qensure(q, w->conn)) {
            am2z__qsleep_ms(100);
            continue;
        }
        am2z__qsnap(w);
        got = am2z__qpoll_due(w, jobs);
        if (!got) got = am2z__qblock(w, jobs);
        if (got < 0) {
            if (am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE)) am2z__qsleep_ms(20); /* else: cut loose by stop */
            continue;
        }
        if (got > 0) am2z__qserve(w, jobs, (size_t)got);
    }
    am2z__qqueue_release(w->idle_qu);
    w->idle_qu = NULL;
    if (w->reg_qu) am2z__atomic_dec(&w->reg_qu->nidle);
    am2z__qqueue_release(w->reg_qu); /* reg_key stays: stop takes the registration out */
    w->reg_qu = NULL;
    am2z__qsnap_release(w);
    am2z__atomic_dec(&q->n_live_workers);
    return NULL;
}

/* ---- 4.5 delivery: the receiver and the maintenance thread --------------------------- */

/* -- the receiver: results for this instance from other processes -- */

/* Delivers every result in a list reply (a script's answer or LRANGE). */
static void am2z__qdeliver_list(am2z__qrt *q, const am2z_reply *list) {
    size_t i;
    if (!list || list->type != AM2Z_REPLY_ARRAY) return;
    for (i = 0; i < list->len; i++) {
        const am2z_reply *m = am2z_reply_at(list, i);
        if (m && m->len) am2z__qdeliver_raw(q, am2z_reply_str(m), m->len);
    }
}

/* Results are read without ever being only in flight: the blocking command waits for the
   first one by rotating it within the reply list (BLMOVE reply reply: nothing leaves the
   list) and delivers it at once; the "take" script then moves a batch to the taken list,
   from which a reconnected receiver reads again whatever it may have missed. A result
   delivered twice finds no waiter the second time and is dropped, so at-least-once
   reading gives exactly-once delivery. */
static void *am2z__qreceiver_main(void *arg) {
    am2z__qrt *q = (am2z__qrt *)arg;
    am2z_redis *r = q->rconn;
    int blmove = 1; /* BLMOVE (Redis 6.2); else BRPOPLPUSH */
    int recover = 1; /* after a (re)connect: first deliver what the taken list holds */
    char batch[16], ttl[24];
    snprintf(batch, sizeof batch, "%d", 255);
    snprintf(ttl, sizeof ttl, "%lld", (long long)q->reply_ttl_ms);
    while (!am2z__atomic_load(&q->rx_stop, AM2Z__MO_ACQUIRE)) {
        am2z_reply rep = am2z__qrep0();
        am2z_status st;
        if (!am2z_redis_is_connected(r)) {
            if (!am2z__qensure(q, r)) { am2z__qsleep_ms(100); continue; }
            recover = 1;
        }
        if (recover) {
            st = am2z_redis_command(r, &rep, "LRANGE %s 0 -1", q->taken_key);
            if (st == AM2Z_STATUS_OK) {
                am2z__qdeliver_list(q, &rep);
                recover = 0;
            }
            am2z_reply_clear(&rep);
            if (st != AM2Z_STATUS_OK) {
                if (am2z__atomic_load(&q->rx_stop, AM2Z__MO_ACQUIRE)) break;
                am2z__qdown(q, am2z_status_detail());
                am2z__qsleep_ms(20);
                continue;
            }
        }
        if (!am2z__qguard_enter(q, &q->rguard, r)) break; /* stopping */
        if (blmove)
            st = am2z_redis_blocking(r, &rep, 6000, "BLMOVE %s %s RIGHT LEFT 1", q->reply_key, q->reply_key);
        else
            st = am2z_redis_blocking(r, &rep, 6000, "BRPOPLPUSH %s %s 1", q->reply_key, q->reply_key);
        am2z__qguard_leave(q, &q->rguard);
        if (st == AM2Z_STATUS_SERVER && blmove && strncmp(am2z_reply_str(&rep), "ERR unknown command", 19) == 0) {
            /* only a server without the command downgrades: -LOADING, -BUSY and the like
               pass, and a Redis that answered one of them must keep BLMOVE */
            blmove = 0;
            am2z_reply_clear(&rep);
            continue;
        }
        if (st != AM2Z_STATUS_OK) {
            am2z_reply_clear(&rep);
            if (am2z__atomic_load(&q->rx_stop, AM2Z__MO_ACQUIRE)) break; /* cut loose by stop */
            am2z__qdown(q, am2z_status_detail());
            am2z__qsleep_ms(20);
            continue;
        }
        am2z__qup(q);
        if (rep.type == AM2Z_REPLY_NIL || !rep.len) { /* nothing for 1 s */
            am2z_reply_clear(&rep);
            continue;
        }
        am2z__qdeliver_raw(q, am2z_reply_str(&rep), rep.len); /* the first one at once */
        am2z_reply_clear(&rep);
        {
            const char *argv[4];
            argv[0] = q->reply_key;
            argv[1] = q->taken_key;
            argv[2] = batch;
            argv[3] = ttl;
            st = am2z__qeval(r, &rep, q->s_take, 4, argv, NULL);
        }
        if (st == AM2Z_STATUS_OK) am2z__qdeliver_list(q, &rep);
        am2z_reply_clear(&rep);
    }
    am2z__atomic_dec(&q->n_live_aux);
    return NULL;
}

/* -- the maintenance thread: cancel keys, lock renewal, stalled scans, foreign results -- */

typedef struct am2z__qsnaprun {
    am2z__qrun *run;
    char *a, *b;              /* cancel key, or queue prefix and job id */
    char token[64];
} am2z__qsnaprun;

/* Copies what the maintenance thread needs of the running jobs (under runmu). */
static size_t am2z__qruns_snapshot(am2z__qrt *q, am2z__qsnaprun **out, int renew) {
    am2z__qsnaprun *s;
    am2z__qrun *r;
    size_t n = 0;
    *out = NULL;
    am2z__mutex_lock(&q->runmu);
    if (q->nruns > 0 && (s = (am2z__qsnaprun *)am2z__malloc((size_t)q->nruns * sizeof *s)) != NULL) {
        for (r = q->runs.next; r != &q->runs; r = r->next) {
            s[n].run = r;
            s[n].a = renew ? am2z__strdup(r->qu->P) : am2z__qcat(q->C, "cancel:", r->exec_id, NULL);
            s[n].b = am2z__strdup(renew ? r->id : r->exec_id);
            snprintf(s[n].token, sizeof s[n].token, "%s", r->token);
            if (!s[n].a || !s[n].b) { am2z__free(s[n].a); am2z__free(s[n].b); continue; }
            n++;
        }
        *out = s;
    }
    am2z__mutex_unlock(&q->runmu);
    return n;
}

static void am2z__qruns_free(am2z__qsnaprun *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) { am2z__free(s[i].a); am2z__free(s[i].b); }
    am2z__free(s);
}

/* Flags the run s (if it still runs the same job) with reason c (an am2z__qcancel). */
static void am2z__qruns_flag(am2z__qrt *q, const am2z__qsnaprun *s, int renew, int c) {
    am2z__qrun *r;
    am2z__mutex_lock(&q->runmu);
    for (r = q->runs.next; r != &q->runs; r = r->next)
        if (r == s->run && strcmp(renew ? r->id : r->exec_id, s->b) == 0 && strcmp(r->token, s->token) == 0) {
            int zero = 0;
            am2z__atomic_cas(&r->cancelled, &zero, c, AM2Z__MO_ACQ_REL, AM2Z__MO_ACQUIRE);
            break;
        }
    am2z__mutex_unlock(&q->runmu);
}

static void am2z__qmaint_cancel(am2z__qrt *q, am2z_redis *conn) {
    am2z__qsnaprun *s;
    size_t n = am2z__qruns_snapshot(q, &s, 0), i;
    const char **argv;
    am2z_reply rep = am2z__qrep0();
    if (!n) { am2z__free(s); return; }
    argv = (const char **)am2z__malloc((n + 1) * sizeof *argv);
    if (argv) {
        argv[0] = "MGET";
        for (i = 0; i < n; i++) argv[i + 1] = s[i].a;
        if (am2z_redis_command_argv(conn, &rep, n + 1, argv, NULL) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY)
            for (i = 0; i < n && i < rep.len; i++)
                if (am2z_reply_at(&rep, i)->type != AM2Z_REPLY_NIL) am2z__qruns_flag(q, &s[i], 0, AM2Z__QCANCEL_KEY);
        am2z_reply_clear(&rep);
        am2z__free(argv);
    }
    am2z__qruns_free(s, n);
}

static void am2z__qmaint_renew(am2z__qrt *q, am2z_redis *conn) {
    am2z__qsnaprun *s;
    size_t n = am2z__qruns_snapshot(q, &s, 1), i, k;
    const char **argv;
    am2z_reply rep = am2z__qrep0();
    if (!n) { am2z__free(s); return; }
    argv = (const char **)am2z__malloc((3 * n + 1) * sizeof *argv);
    if (argv) {
        argv[0] = q->lock_s;
        for (i = 0; i < n; i++) {
            argv[1 + 3 * i] = s[i].a;
            argv[2 + 3 * i] = s[i].b;
            argv[3 + 3 * i] = s[i].token;
        }
        if (am2z__qeval(conn, &rep, q->s_extend, 3 * n + 1, argv, NULL) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY)
            for (k = 0; k < rep.len; k++) {
                const char *bad = am2z__qel(&rep, k, NULL);
                for (i = 0; bad && i < n; i++)
                    if (strcmp(s[i].b, bad) == 0) am2z__qruns_flag(q, &s[i], 1, AM2Z__QCANCEL_LOCK_LOST);
            }
        am2z_reply_clear(&rep);
        am2z__free(argv);
    }
    am2z__qruns_free(s, n);
}

/* One stalled scan per served queue (the stalled-check key keeps it to one per interval
   across all processes); session queues whose keys are gone are forgotten. */
static void am2z__qmaint_stalled(am2z__qrt *q, am2z_redis *conn) {
    am2z__qworker tmp;
    char now_s[24], iv[24], ms[24];
    size_t i, sent = 0;
    am2z_reply rep = am2z__qrep0();
    memset(&tmp, 0, sizeof tmp);
    tmp.q = q;
    am2z__qsnap(&tmp);
    snprintf(now_s, sizeof now_s, "%lld", (long long)am2z_now_ms());
    snprintf(iv, sizeof iv, "%lld", (long long)q->stalled_ms);
    snprintf(ms, sizeof ms, "%d", q->max_stalled);
    for (i = 0; i < tmp.nsnap; i++) {
        const char *argv[8];
        am2z__qqueue *u = tmp.snap[i];
        argv[0] = u->P; argv[1] = q->C; argv[2] = now_s; argv[3] = iv; argv[4] = ms;
        argv[5] = am2z__qev_level(q, u); argv[6] = u->wk; argv[7] = u->wm;
        if (am2z_redis_append_evalsha(conn, q->s_stalled, 0, 8, argv, NULL) != AM2Z_STATUS_OK) break;
        sent++;
    }
    for (i = 0; i < sent; i++) {
        am2z_status st = am2z_redis_read(conn, &rep);
        if (st == AM2Z_STATUS_SERVER && strncmp(am2z_reply_str(&rep), "NOSCRIPT", 8) == 0) {
            am2z_reply_clear(&rep);
            am2z_redis_script_load(conn, q->s_stalled);
            continue;
        }
        if (st == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER && rep.integer == -1 && tmp.snap[i]->session) {
            /* the session was stopped elsewhere: stop serving it, unless this process
               is adding to it right now (the next add brings it back anyway) */
            am2z__qqueue_forget(q, tmp.snap[i]->name);
        } else if (st == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY && rep.len) {
            am2z_log_warn(q->logger, "queue runtime: %lu stalled job(s) of %s put back", (unsigned long)rep.len,
                          tmp.snap[i]->name);
        }
        am2z_reply_clear(&rep);
        if (!am2z_redis_is_connected(conn)) break;
    }
    am2z__qsnap_release(&tmp);
}

/* Hands a job finished by a foreign worker (Node) to its waiter t (taken from the table):
   the returnvalue (JSON) of a success, or the failedReason and the stacktrace (am2z error
   JSON texts, when an am2z worker ran earlier attempts) of a failure. */
static void am2z__qforeign_deliver(am2z__qwait *t, const char *rv, size_t rvn, const char *fr, size_t frn,
                                   const char *stk, size_t stn, int atm) {
    size_t k;
    if (rv) {
        am2z_value *v = am2z_json_parse(rv, rvn, NULL, NULL);
        if (am2z_value_type(v) == AM2Z_TYPE_OBJECT && am2z_value_find(v, "metadata", 8)) t->state = am2z_value_retain(v);
        else if (am2z_value_type(v) == AM2Z_TYPE_OBJECT) t->state = am2z_state_new(t->session, am2z_value_retain(v), NULL);
        else if (v) t->state = am2z_state_new(t->session, am2z_value_set(am2z_value_object(), "returnvalue", am2z_value_retain(v)), NULL);
        am2z_value_release(v);
        if (!t->state) t->error = am2z_error_validation("returnvalue", NULL, "the job's returnvalue is not valid JSON");
    }
    if (stk && stn) {
        am2z_value *sv = am2z_json_parse(stk, stn, NULL, NULL);
        size_t m = am2z_value_type(sv) == AM2Z_TYPE_ARRAY ? am2z_value_len(sv) : 0;
        t->errs = m ? (am2z_error **)am2z__malloc(m * sizeof *t->errs) : NULL;
        for (k = 0; t->errs && k < m; k++) {
            size_t el = 0;
            const char *et = am2z_value_as_string(am2z_value_at(sv, k), &el);
            if (et) t->errs[t->nerrs++] = am2z__qerror_from_text(t->qu->proc, t->id, et, el);
            if (t->nerrs && !t->errs[t->nerrs - 1]) t->nerrs--;
        }
        am2z_value_release(sv);
    }
    if (!rv && !t->error) {
        if (t->nerrs && t->errs[t->nerrs - 1]->name && strcmp(t->errs[t->nerrs - 1]->name, "ProcessorExecutionError") != 0)
            t->error = am2z_error_retain(t->errs[t->nerrs - 1]);
        else
            t->error = am2z__qerror_from_text(t->qu->proc, t->id, fr ? fr : "failed", fr ? frn : 6);
    }
    t->attempts = atm > 0 ? atm : 1;
    am2z__qwait_signal(t);
}

/* Outcome of a job finished without an am2z reply (a Node worker), from its hash. */
static void am2z__qmaint_foreign(am2z__qrt *q, am2z_redis *conn) {
    am2z__qwait *ws[256];
    size_t n = 0, i, sent = 0;
    int64_t old = am2z_now_ms() - q->foreign_poll_ms;
    am2z_reply rep = am2z__qrep0();
    am2z__mutex_lock(&q->wmu);
    for (i = 0; i < AM2Z__QBUCKETS && n < 256; i++) {
        am2z__qwait *w;
        for (w = q->waiters[i]; w && n < 256; w = w->hnext)
            if (w->submitted_ms <= old) { am2z__atomic_inc(&w->refs); ws[n++] = w; }
    }
    am2z__mutex_unlock(&q->wmu);
    for (i = 0; i < n; i++) {
        if (am2z_redis_append(conn, "HMGET %s%s finishedOn returnvalue failedReason atm stacktrace", ws[i]->qu->P,
                              ws[i]->id) != AM2Z_STATUS_OK)
            break;
        sent++;
    }
    for (i = 0; i < sent; i++) {
        am2z_status st = am2z_redis_read(conn, &rep);
        if (st == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY && rep.len == 5 && am2z__qel(&rep, 0, NULL)) {
            size_t rvn = 0, frn = 0, stn = 0;
            const char *rv = am2z__qel(&rep, 1, &rvn), *fr = am2z__qel(&rep, 2, &frn), *stk = am2z__qel(&rep, 3 + 1, &stn);
            am2z__qwait *t = am2z__qwait_take(q, ws[i]->id, strlen(ws[i]->id));
            if (t) am2z__qforeign_deliver(t, rv, rvn, fr, frn, stk, stn, (int)am2z__qel_num(&rep, 3, 0, AM2Z__QMAX_COUNT, 0));
        }
        am2z_reply_clear(&rep);
        if (st != AM2Z_STATUS_OK && !am2z_redis_is_connected(conn)) break;
    }
    for (i = 0; i < n; i++) am2z__qwait_release(ws[i]);
}

/* Wakes a worker for every served queue whose earliest delayed job (or rate-limit
   window) is due now. Workers also block with that due time as their timeout, but Redis
   ends blocked commands only as precisely as its hz allows (100 ms by default); this
   thread sleeps on a condition variable and wakes within a ms. Returns the next due
   time still ahead (epoch ms), 0 when none. */
static int64_t am2z__qmaint_due(am2z__qrt *q, am2z_redis *conn, am2z__qworker *snap) {
    int64_t now = am2z_now_ms(), next = 0;
    size_t i;
    am2z__qsnap(snap);
    for (i = 0; i < snap->nsnap; i++) {
        am2z__qqueue *u = snap->snap[i];
        int64_t due = am2z__atomic_load(&u->next_due, AM2Z__MO_ACQUIRE);
        if (!due || due == am2z__atomic_load(&u->woke_due, AM2Z__MO_ACQUIRE)) continue;
        if (due <= now) {
            am2z_reply rep = am2z__qrep0();
            char due_s[24];
            const char *argv[2];
            snprintf(due_s, sizeof due_s, "%lld", (long long)due);
            argv[0] = u->P;
            argv[1] = due_s;
            am2z__qeval(conn, &rep, q->s_due, 2, argv, NULL);
            am2z_reply_clear(&rep);
            am2z__atomic_store(&u->woke_due, due, AM2Z__MO_RELEASE);
        } else if (!next || due < next) {
            next = due;
        }
    }
    return next;
}

/* -- BullMQ parity: progress, worker presence, jobs finished by foreign workers --
   Node's QueueEvents, Queue.getWorkers() and Bull Board follow am2z through the same
   wire they use for Node: the events stream (written by the scripts), client names, and
   the job hash. Jobs finished by a Node worker come back through the events stream. */

/* A running job's progress (am2z_ctx_progress): the job hash's progress field and a
   "progress" event (jobId, data), on a pooled connection: the processor may report from
   any thread. */
static void am2z__qprogress(am2z__qrun *run, const am2z_value *data) {
    am2z__qrt *q = run->w->q;
    const am2z_value *p = am2z_value_find(data, "progress", 8);
    am2z__qsb js = am2z__qsb0();
    am2z_reply rep = am2z__qrep0();
    am2z_redis *r;
    const char *argv[4];
    if (!p) return;
    am2z__qsb_json(&js, p);
    if (!js.bad && (r = am2z__qborrow(q, NULL)) != NULL) {
        argv[0] = run->qu->P; argv[1] = run->id; argv[2] = js.p; argv[3] = "1";
        if (am2z__qeval(r, &rep, q->s_progress, 4, argv, NULL) != AM2Z_STATUS_OK)
            am2z_log_warn(q->logger, "queue runtime: progress of job %s of %s: %s", run->id, run->qu->name,
                          rep.type == AM2Z_REPLY_ERROR ? am2z_reply_str(&rep) : am2z_status_detail());
        am2z_reply_clear(&rep);
        am2z_redis_pool_put(q->pool, r);
    }
    am2z__qsb_free(&js);
}

/* s in base64 (RFC 4648, padded, as Node's Buffer.toString('base64')); NULL when out of
   memory. */
static char *am2z__qb64(const char *s) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i, o = 0;
    char *out = (char *)am2z__malloc(4 * ((n + 2) / 3) + 1);
    if (!out) return NULL;
    for (i = 0; i + 2 < n; i += 3) {
        out[o++] = t[u[i] >> 2];
        out[o++] = t[((u[i] & 3) << 4) | (u[i + 1] >> 4)];
        out[o++] = t[((u[i + 1] & 15) << 2) | (u[i + 2] >> 6)];
        out[o++] = t[u[i + 2] & 63];
    }
    if (i < n) {
        out[o++] = t[u[i] >> 2];
        out[o++] = t[((u[i] & 3) << 4) | (i + 1 < n ? u[i + 1] >> 4 : 0)];
        out[o++] = i + 1 < n ? t[(u[i + 1] & 15) << 2] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
    return out;
}

/* The client name BullMQ gives a worker of queue (getWorkers() and Bull Board list the
   connections so named): <bull>:<base64(queue)>, plus suffix. NULL when out of memory. */
static char *am2z__qclient_name(const am2z__qrt *q, const char *queue, const char *suffix) {
    char *b = am2z__qb64(queue), *name = b ? am2z__qcat(q->bull, ":", b, suffix) : NULL;
    am2z__free(b);
    return name;
}

/* Worker presence: one idle connection per registered processor's (global) queue, named
   <bull>:<base64(queue)>:w:am2z-<instance>, while this process has workers; made and
   dropped as processors are registered and unregistered, and reconnected (check set)
   after Redis restarted. */
static void am2z__qmaint_presence(am2z__qrt *q, am2z__qworker *snap, int check) {
    am2z_redis **conns = NULL;
    char **names = NULL, suffix[48], qn[2 * AM2Z_NAME_MAX + 8];
    size_t n = 0, i, k;
    if (q->nworkers <= 0) return;
    snprintf(suffix, sizeof suffix, ":w:am2z-%s", q->instance);
    if (snap->nprocs) {
        conns = (am2z_redis **)am2z__malloc(snap->nprocs * sizeof *conns);
        names = (char **)am2z__malloc(snap->nprocs * sizeof *names);
        if (!conns || !names) { am2z__free(conns); am2z__free(names); return; }
    }
    for (i = 0; i < snap->nprocs; i++) {
        char *name;
        if (!am2z__qqname(q, snap->procs[i]->name, NULL, qn, sizeof qn) || !(name = am2z__qclient_name(q, qn, suffix)))
            continue;
        for (k = 0; k < q->npres; k++)
            if (q->pname[k] && strcmp(q->pname[k], name) == 0) break;
        if (k < q->npres) { /* kept */
            conns[n] = q->pconn[k];
            q->pconn[k] = NULL;
            am2z__free(q->pname[k]);
            q->pname[k] = NULL;
        } else {
            am2z_redis_desc d = q->rdesc;
            d.client_name = name;
            conns[n] = am2z_redis_new(&d, NULL);
            if (!conns[n]) { am2z__free(name); continue; }
            am2z__redis_abort_fd(conns[n], q->abort_pipe[0]); /* a stop that gives up on Redis ends its connect */
            check = 1;
        }
        names[n++] = name;
    }
    for (k = 0; k < q->npres; k++) { am2z_redis_free(q->pconn[k]); am2z__free(q->pname[k]); }
    am2z__free(q->pconn);
    am2z__free(q->pname);
    q->pconn = conns;
    q->pname = names;
    q->npres = n;
    for (i = 0; check && i < n; i++) {
        am2z_reply rep = am2z__qrep0();
        if (am2z_redis_is_connected(conns[i])) am2z_redis_command(conns[i], &rep, "PING");
        am2z_reply_clear(&rep);
        if (!am2z_redis_is_connected(conns[i])) am2z_redis_connect(conns[i]);
    }
}

/* Closes the presence connections (the maintenance thread is gone, or never ran). */
static void am2z__qpresence_drop(am2z__qrt *q) {
    size_t i;
    for (i = 0; i < q->npres; i++) { am2z_redis_free(q->pconn[i]); am2z__free(q->pname[i]); }
    am2z__free(q->pconn);
    am2z__free(q->pname);
    q->pconn = NULL;
    q->pname = NULL;
    q->npres = 0;
}

/* The queue object named name, retained, or NULL. */
static am2z__qqueue *am2z__qqueue_find(am2z__qrt *q, const char *name, size_t len) {
    uint32_t b = am2z__qhash(name, len) % AM2Z__QBUCKETS;
    am2z__qqueue *u;
    am2z__mutex_lock(&q->mu);
    for (u = q->queues[b]; u; u = u->hnext)
        if (strlen(u->name) == len && memcmp(u->name, name, len) == 0) { am2z__atomic_inc(&u->refs); break; }
    am2z__mutex_unlock(&q->mu);
    return u;
}

/* Decodes base64 s (n bytes) into out (size bytes, NUL-terminated); 0 when it is not
   base64 or does not fit. */
static int am2z__qb64_decode(const char *s, size_t n, char *out, size_t size) {
    size_t i, o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (i = 0; i < n && s[i] != '='; i++) {
        const char c = s[i];
        int v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 : c >= '0' && c <= '9' ? c - '0' + 52
              : c == '+' ? 62 : c == '/' ? 63 : -1;
        if (v < 0) return 0;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o + 1 >= size) return 0;
            out[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[o] = 0;
    return o > 0;
}

/* Finds the BullMQ workers (CLIENT LIST names <bull>:<base64(queue)>[:w:<name>], not
   am2z's) of the queues this process knows, whose events are then followed, and their
   QueueEvents listeners (<bull>:<base64(queue)>:qe), for whom every event is written. */
static void am2z__qmaint_clients(am2z__qrt *q, am2z_redis *conn) {
    am2z_reply rep = am2z__qrep0();
    am2z_status st = am2z_redis_command(conn, &rep, "CLIENT LIST TYPE normal");
    const char *p, *end;
    size_t bl = strlen(q->bull);
    int64_t now = am2z_now_ms();
    if (st == AM2Z_STATUS_SERVER) am2z__atomic_store(&q->clients_denied, 1, AM2Z__MO_RELEASE); /* follow all */
    if (st != AM2Z_STATUS_OK || (rep.type != AM2Z_REPLY_BULK && rep.type != AM2Z_REPLY_VERBATIM &&
                                 rep.type != AM2Z_REPLY_STRING)) {
        am2z_reply_clear(&rep);
        return;
    }
    for (p = am2z_reply_str(&rep), end = p + rep.len; p && p < end; p = (const char *)memchr(p, '\n', (size_t)(end - p)), p = p ? p + 1 : NULL) {
        const char *nm = strstr(p, " name="), *e, *b64, *b64e;
        char qn[3 * AM2Z_NAME_MAX + 8];
        am2z__qqueue *u;
        int listener;
        if (!nm) break;
        nm += 6;
        for (e = nm; e < end && *e != ' ' && *e != '\n' && *e != '\r'; e++) {}
        if ((size_t)(e - nm) <= bl + 1 || memcmp(nm, q->bull, bl) != 0 || nm[bl] != ':') continue;
        b64 = nm + bl + 1;
        for (b64e = b64; b64e < e && *b64e != ':'; b64e++) {}
        /* a worker: no suffix, or ":w:<name>" that is not an am2z process's; a listener: ":qe" */
        listener = e - b64e == 3 && memcmp(b64e, ":qe", 3) == 0;
        if (!listener && b64e < e && ((size_t)(e - b64e) < 3 || memcmp(b64e, ":w:", 3) != 0 ||
                                      ((size_t)(e - b64e) >= 8 && memcmp(b64e, ":w:am2z-", 8) == 0)))
            continue;
        if (!am2z__qb64_decode(b64, (size_t)(b64e - b64), qn, sizeof qn)) continue;
        if ((u = am2z__qqueue_find(q, qn, strlen(qn))) != NULL) {
            am2z__atomic_store(listener ? &u->listened_ms : &u->foreign_ms, now, AM2Z__MO_RELEASE);
            am2z__qqueue_release(u);
        }
    }
    am2z_reply_clear(&rep);
}

/* The queues whose events the reader follows now, retained: those with waiters (or
   waiters a moment ago) and a BullMQ worker. A queue that starts being followed reads
   from just before its first waiter's submission (Redis's clock), so no finish is missed. */
static size_t am2z__qev_followed(am2z__qrt *q, am2z__qqueue ***out) {
    am2z__qqueue *u, **v = NULL;
    size_t n = 0, cap = 0, i;
    int64_t now = am2z_now_ms();
    int all = am2z__atomic_load(&q->clients_denied, AM2Z__MO_ACQUIRE);
    am2z__mutex_lock(&q->mu);
    for (i = 0; i < AM2Z__QBUCKETS; i++)
        for (u = q->queues[i]; u; u = u->hnext) {
            int64_t fm = am2z__atomic_load(&u->foreign_ms, AM2Z__MO_ACQUIRE);
            int waited = am2z__atomic_load(&u->nwait, AM2Z__MO_ACQUIRE) > 0 ||
                         now - am2z__atomic_load(&u->last_wait, AM2Z__MO_ACQUIRE) < AM2Z__QEV_LINGER_MS;
            if (!waited || (!all && (!fm || now - fm > AM2Z__QEV_FOREIGN_MS))) { u->cursor[0] = 0; continue; }
            if (n == cap) {
                size_t nc = cap ? 2 * cap : 8;
                am2z__qqueue **nv = (am2z__qqueue **)am2z__realloc(v, nc * sizeof *nv);
                if (!nv) continue;
                v = nv;
                cap = nc;
            }
            if (!u->cursor[0]) {
                /* a stream id is never negative: an id Redis refuses would stall the queue's
                   followers until it is no longer followed */
                int64_t since = am2z__atomic_load(&u->wait_since, AM2Z__MO_ACQUIRE);
                int64_t from = (since > 0 ? since : now) + q->skew_ms - AM2Z__QEV_SLACK_MS;
                snprintf(u->cursor, sizeof u->cursor, "%lld-0", (long long)(from > 0 ? from : 0));
            }
            am2z__atomic_inc(&u->refs);
            v[n++] = u;
        }
    am2z__mutex_unlock(&q->mu);
    *out = v;
    return n;
}

/* One entry of u's stream: a completed or failed job without am2z's mark (a foreign
   worker finished it) goes to its waiter here, if any. */
static void am2z__qev_entry(am2z__qrt *q, const am2z_reply *fields) {
    const char *ev = NULL, *id = NULL, *rv = NULL, *fr = NULL;
    size_t evn = 0, idn = 0, rvn = 0, frn = 0, i;
    am2z__qwait *t;
    if (!fields || fields->len % 2) return;
    for (i = 0; i + 1 < fields->len; i += 2) {
        size_t kn = 0, vn = 0;
        const char *k = am2z__qel(fields, i, &kn), *val = am2z__qel(fields, i + 1, &vn);
        if (!k || !val) continue;
        if (kn == 5 && memcmp(k, "event", 5) == 0) { ev = val; evn = vn; }
        else if (kn == 5 && memcmp(k, "jobId", 5) == 0) { id = val; idn = vn; }
        else if (kn == 11 && memcmp(k, "returnvalue", 11) == 0) { rv = val; rvn = vn; }
        else if (kn == 12 && memcmp(k, "failedReason", 12) == 0) { fr = val; frn = vn; }
        else if (kn == 4 && memcmp(k, "am2z", 4) == 0) return; /* an am2z worker replied to its caller */
    }
    if (!ev || !id) return;
    if (!(evn == 9 && memcmp(ev, "completed", 9) == 0) && !(evn == 6 && memcmp(ev, "failed", 6) == 0)) return;
    if ((t = am2z__qwait_take(q, id, idn)) == NULL) return;
    if (evn == 9) am2z__qforeign_deliver(t, rv ? rv : "null", rv ? rvn : 4, NULL, 0, NULL, 0, 1);
    else am2z__qforeign_deliver(t, NULL, 0, fr, frn, NULL, 0, 1);
}

/* One XREAD round over the followed queues; 0 when it failed (the connection, or Redis
   refused it). *failing carries the last round's failure, so a lasting one warns once. */
static int am2z__qev_read(am2z__qrt *q, am2z_redis *r, am2z__qqueue **v, size_t n, int *failing) {
    const char **argv = (const char **)am2z__malloc((6 + 2 * n) * sizeof *argv);
    char **keys = (char **)am2z__malloc((n + 1) * sizeof *keys), cnt[16], blk[16];
    am2z_reply rep = am2z__qrep0();
    am2z_status st = AM2Z_STATUS_NO_MEMORY;
    size_t argc = 0, i, s, e;
    if (argv && keys) {
        snprintf(cnt, sizeof cnt, "%d", AM2Z__QEV_COUNT);
        snprintf(blk, sizeof blk, "%d", AM2Z__QEV_BLOCK_MS);
        argv[argc++] = "XREAD"; argv[argc++] = "COUNT"; argv[argc++] = cnt;
        argv[argc++] = "BLOCK"; argv[argc++] = blk; argv[argc++] = "STREAMS";
        for (i = 0; i < n; i++) argv[argc++] = keys[i] = am2z__qcat(v[i]->P, "events", NULL, NULL);
        for (i = 0; i < n; i++) argv[argc++] = v[i]->cursor;
        for (i = 0; i < n; i++)
            if (!keys[i]) break;
        if (i == n && am2z__qguard_enter(q, &q->eguard, r)) {
            st = am2z_redis_blocking_argv(r, &rep, AM2Z__QEV_BLOCK_MS + 5000, argc, argv, NULL);
            am2z__qguard_leave(q, &q->eguard);
        }
    }
    /* RESP2: [[key, entries]...]; RESP3: {key: entries}. An entry is [id, [field, value...]]. */
    for (s = 0; st == AM2Z_STATUS_OK && s < rep.len; s++) {
        const am2z_reply *key = NULL, *entries = NULL;
        size_t k;
        if (rep.type == AM2Z_REPLY_MAP) {
            if (s % 2) continue;
            key = am2z_reply_at(&rep, s);
            entries = am2z_reply_at(&rep, s + 1);
        } else if (rep.type == AM2Z_REPLY_ARRAY) {
            key = am2z_reply_at(am2z_reply_at(&rep, s), 0);
            entries = am2z_reply_at(am2z_reply_at(&rep, s), 1);
        }
        if (!key || !entries) continue;
        for (k = 0; k < n; k++)
            if (keys[k] && strcmp(keys[k], am2z_reply_str(key)) == 0) break;
        if (k == n) continue;
        for (e = 0; e < entries->len; e++) {
            const am2z_reply *en = am2z_reply_at(entries, e);
            size_t idl = 0;
            const char *eid = am2z__qel(en, 0, &idl);
            if (eid && idl < sizeof v[k]->cursor) snprintf(v[k]->cursor, sizeof v[k]->cursor, "%s", eid);
            am2z__qev_entry(q, am2z_reply_at(en, 1));
        }
    }
    if (st == AM2Z_STATUS_SERVER) /* refused (a cursor, the key's type, an ACL): start over from each waiter */
        for (i = 0; i < n; i++) v[i]->cursor[0] = 0;
    if (st != AM2Z_STATUS_OK && st != AM2Z_STATUS_NO_MEMORY && !*failing &&
        !am2z__atomic_load(&q->rx_stop, AM2Z__MO_ACQUIRE))
        am2z_log_warn(q->logger, "queue runtime: events reader: %s", am2z_status_detail());
    *failing = st != AM2Z_STATUS_OK && st != AM2Z_STATUS_NO_MEMORY;
    am2z_reply_clear(&rep);
    for (i = 0; keys && i < n; i++) am2z__free(keys[i]);
    am2z__free(keys);
    am2z__free(argv);
    return st == AM2Z_STATUS_OK || st == AM2Z_STATUS_NO_MEMORY;
}

/* Redis's clock minus ours (ms): stream ids carry Redis's time. */
static void am2z__qev_skew(am2z__qrt *q, am2z_redis *r) {
    am2z_reply rep = am2z__qrep0();
    int64_t t0 = am2z_now_ms();
    if (am2z_redis_command(r, &rep, "TIME") == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY && rep.len == 2)
        q->skew_ms = am2z__qel_int(&rep, 0) * 1000 + am2z__qel_int(&rep, 1) / 1000 - (t0 + am2z_now_ms()) / 2;
    am2z_reply_clear(&rep);
}

/* The events reader: one thread and one connection per runtime, connected on first use,
   for every caller of the process. */
static void *am2z__qevreader_main(void *arg) {
    am2z__qrt *q = (am2z__qrt *)arg;
    am2z_redis *r = q->econn;
    int failing = 0;
    while (!am2z__atomic_load(&q->rx_stop, AM2Z__MO_ACQUIRE)) {
        am2z__qqueue **v = NULL;
        size_t n = am2z__qev_followed(q, &v), i;
        if (!n) {
            am2z__mutex_lock(&q->ent.mu);
            if (!am2z__atomic_load(&q->rx_stop, AM2Z__MO_ACQUIRE))
                am2z__cond_wait_until(&q->ent.cv, &q->ent.mu, am2z_monotonic_ns() + (int64_t)AM2Z__QEV_BLOCK_MS * 1000000);
            am2z__mutex_unlock(&q->ent.mu);
        } else if (!am2z_redis_is_connected(r)) {
            if (am2z_redis_connect(r) == AM2Z_STATUS_OK) am2z__qev_skew(q, r);
            else am2z__qsleep_ms(100);
            for (i = 0; i < n; i++) v[i]->cursor[0] = 0; /* the skew may have moved */
        } else if (!am2z__qev_read(q, r, v, n, &failing)) {
            am2z__qsleep_ms(20);
        }
        for (i = 0; i < n; i++) am2z__qqueue_release(v[i]);
        am2z__free(v);
    }
    am2z__atomic_dec(&q->n_live_aux);
    return NULL;
}

/* Wakes the maintenance thread now (the registered processors changed). */
static void am2z__qmaint_wake(am2z__qrt *q) {
    am2z__mutex_lock(&q->mnt.mu);
    q->due_changed = 1;
    am2z__cond_broadcast(&q->mnt.cv);
    am2z__mutex_unlock(&q->mnt.mu);
}

static void *am2z__qmaint_main(void *arg) {
    am2z__qrt *q = (am2z__qrt *)arg;
    am2z_redis *r = q->mconn;
    int64_t now = am2z_now_ms();
    int64_t renew_every = q->lock_ms / 3 > 10 ? q->lock_ms / 3 : 10;
    int64_t t_cancel = now, t_renew = now + renew_every, t_stalled = now, t_foreign = now + q->foreign_poll_ms;
    int64_t t_presence = now + q->stalled_ms;
    unsigned pgen = 0;
    am2z__qworker snap; /* the served queues, for due times */
    memset(&snap, 0, sizeof snap);
    snap.q = q;
    while (!am2z__atomic_load(&q->rx_stop, AM2Z__MO_ACQUIRE)) {
        int64_t next, t_due = 0;
        size_t waiting;
        now = am2z_now_ms();
        if (!am2z_redis_is_connected(r) && !am2z__qensure(q, r)) { am2z__qsleep_ms(100); continue; }
        am2z__qcancel_flush(q, r);
        am2z__qsnap(&snap);
        if (snap.gen != pgen || now >= t_presence) {
            am2z__qmaint_presence(q, &snap, now >= t_presence);
            pgen = snap.gen;
            if (now >= t_presence) t_presence = now + q->stalled_ms;
        }
        am2z__mutex_lock(&q->wmu);
        waiting = q->nwaiters;
        am2z__mutex_unlock(&q->wmu);
        if (now - am2z__atomic_load(&q->last_wait_ms, AM2Z__MO_ACQUIRE) < AM2Z__QEV_LINGER_MS) waiting = 1;
        if ((waiting || q->events == 1) && now - am2z__atomic_load(&q->clients_ms, AM2Z__MO_ACQUIRE) > AM2Z__QCLIENTS_MS) {
            am2z__atomic_store(&q->clients_ms, now, AM2Z__MO_RELEASE);
            am2z__qmaint_clients(q, r);
            am2z__mutex_lock(&q->ent.mu); /* the events reader follows what was found */
            am2z__cond_broadcast(&q->ent.cv);
            am2z__mutex_unlock(&q->ent.mu);
        }
        if (now >= t_cancel) { am2z__qmaint_cancel(q, r); t_cancel = now + q->cancel_poll_ms; }
        if (now >= t_renew) { am2z__qmaint_renew(q, r); t_renew = now + renew_every; }
        if (q->nworkers > 0 && now >= t_stalled) { am2z__qmaint_stalled(q, r); t_stalled = now + q->stalled_ms; }
        if (q->foreign_poll_ms >= 0 && now >= t_foreign) {
            am2z__qmaint_foreign(q, r);
            t_foreign = now + (q->foreign_poll_ms > 10 ? q->foreign_poll_ms : 10);
        }
        if (q->nworkers > 0) t_due = am2z__qmaint_due(q, r, &snap);
        next = t_cancel < t_renew ? t_cancel : t_renew;
        if (q->nworkers > 0 && t_stalled < next) next = t_stalled;
        if (q->foreign_poll_ms >= 0 && t_foreign < next) next = t_foreign;
        if (t_due && t_due < next) next = t_due;
        am2z__mutex_lock(&q->mnt.mu);
        if (!am2z__atomic_load(&q->rx_stop, AM2Z__MO_ACQUIRE) && !q->due_changed && !q->nlate) {
            int64_t left_ms = next - am2z_now_ms();
            am2z__cond_wait_until(&q->mnt.cv, &q->mnt.mu, am2z_monotonic_ns() + (left_ms > 0 ? left_ms : 0) * 1000000);
        }
        q->due_changed = 0;
        am2z__mutex_unlock(&q->mnt.mu);
    }
    am2z__qsnap_release(&snap);
    am2z__atomic_dec(&q->n_live_aux);
    return NULL;
}

/* ---- 4.6 sessions -------------------------------------------------------------------- */

/* Counts of the BullMQ queues names[0..n) into an object {name: {waiting, ...}} keyed by
   keys[i]. */
static am2z_value *am2z__qcounts(am2z__qrt *q, am2z_redis *r, char *const *names, char *const *keys, size_t n) {
    static const char *const what[] = {"waiting", "active", "delayed", "prioritized", "completed", "failed",
                                       "waiting-children"};
    static const char *const cmd[] = {"LLEN", "LLEN", "ZCARD", "ZCARD", "ZCARD", "ZCARD", "ZCARD"};
    static const char *const suffix[] = {"wait", "active", "delayed", "prioritized", "completed", "failed",
                                         "waiting-children"};
    am2z_value *out = am2z_value_object();
    size_t i, k, sent = 0;
    am2z_reply rep = am2z__qrep0();
    for (i = 0; i < n; i++)
        for (k = 0; k < 7; k++)
            if (am2z_redis_append(r, "%s %s:%s:%s", cmd[k], q->bull, names[i], suffix[k]) == AM2Z_STATUS_OK) sent++;
    for (i = 0; i < n; i++) {
        am2z_value *c = am2z_value_object();
        for (k = 0; k < 7; k++) {
            int64_t v = 0;
            if (sent) {
                if (am2z_redis_read(r, &rep) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER) v = rep.integer;
                am2z_reply_clear(&rep);
                sent--;
            }
            c = am2z_value_set(c, what[k], am2z_value_int(v));
        }
        out = am2z_value_set_key(out, keys[i], strlen(keys[i]), c); /* literal: queue names may hold '.' */
    }
    while (sent--) { am2z_redis_read(r, &rep); am2z_reply_clear(&rep); }
    return out;
}

/* SMEMBERS key as an array of strings (empty on failure). */
static am2z_value *am2z__qmembers(am2z_redis *r, const char *key) {
    am2z_value *a = am2z_value_array();
    am2z_reply rep = am2z__qrep0();
    size_t i;
    if (am2z_redis_command(r, &rep, "SMEMBERS %s", key) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY)
        for (i = 0; i < rep.len; i++) {
            const char *s = am2z__qel(&rep, i, NULL);
            if (s) a = am2z_value_append(a, "", am2z_value_string(s));
        }
    am2z_reply_clear(&rep);
    return a;
}

/* names (an array of strings, consumed) with name appended unless it is there already. */
static am2z_value *am2z__qname_add(am2z_value *names, const char *name) {
    size_t k;
    for (k = 0; k < am2z_value_len(names); k++)
        if (strcmp(am2z_value_as_string(am2z_value_at(names, k), NULL), name) == 0) return names;
    return am2z_value_append(names, "", am2z_value_string(name));
}

/* Adds the queues of session sid this process knows to names (consumed); returns it. */
static am2z_value *am2z__qlocal_queues(am2z__qrt *q, const char *sid, am2z_value *names) {
    am2z__qqueue *u;
    size_t i;
    am2z__mutex_lock(&q->mu);
    for (i = 0; i < AM2Z__QBUCKETS; i++)
        for (u = q->queues[i]; u; u = u->hnext)
            if (u->session && strcmp(u->session, sid) == 0) names = am2z__qname_add(names, u->name);
    am2z__mutex_unlock(&q->mu);
    return names;
}

/* Session queue names of sid, from Redis and from this process. */
static am2z_value *am2z__qsession_queues(am2z__qrt *q, am2z_redis *r, const char *sid) {
    char *key = am2z__qcat(q->C, "session:", sid, NULL);
    am2z_value *names = key ? am2z__qmembers(r, key) : am2z_value_array();
    am2z__free(key);
    return am2z__qlocal_queues(q, sid, names);
}

/* The processor part of a session queue name "<prefix>~<proc>~<sid>" into buf. */
static int am2z__qproc_of(const am2z__qrt *q, const char *name, char *buf, size_t size) {
    size_t pl = strlen(q->prefix);
    const char *s, *e;
    if (strncmp(name, q->prefix, pl) != 0 || name[pl] != '~') return 0;
    s = name + pl + 1;
    e = strchr(s, '~');
    if (!e) e = s + strlen(s);
    if ((size_t)(e - s) >= size || e == s) return 0;
    memcpy(buf, s, (size_t)(e - s));
    buf[e - s] = 0;
    return 1;
}

/* Forgets that this process used the session (session:created fires again on its next use). */
static void am2z__qsession_forget(am2z__qrt *q, const char *session) {
    size_t i;
    am2z__mutex_lock(&q->mu);
    for (i = 0; i < q->nsessions; i++)
        if (strcmp(q->sessions[i], session) == 0) {
            am2z__free(q->sessions[i]);
            q->sessions[i] = q->sessions[--q->nsessions];
            break;
        }
    am2z__mutex_unlock(&q->mu);
}

static am2z_status am2z__qop_stop_session(am2z_runtime *rt, const char *sid, int64_t grace_ms) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    am2z_redis *r;
    am2z_value *names, *ej, *ev, *dxids = NULL;
    am2z_error *ce;
    char *ejs, *sset, *skey, ttl[24];
    const char **argv;
    size_t n, i, sent;
    am2z_reply rep = am2z__qrep0();
    am2z_status st = AM2Z_STATUS_OK;
    int64_t until = am2z_monotonic_ns() + am2z__qns(grace_ms), active = 0;
    int dropped = 0, existed = 1;
    if (!am2z__qname_ok(sid)) return AM2Z_STATUS_INVALID_ARGUMENT;
    if (!(r = am2z__qborrow(q, &st))) return st;
    ce = am2z_error_cancelled("the session was stopped");
    ej = ce ? am2z_error_to_json(ce) : NULL;
    ejs = ej ? am2z_json_write(ej, AM2Z_JSON_COMPACT, NULL) : NULL;
    am2z_value_release(ej);
    sset = am2z__qcat(q->C, "session:", sid, NULL);
    skey = am2z__qcat(q->C, "state:", sid, NULL);
    names = am2z_value_array();
    if (!ejs || !sset || !skey || !names) {
        am2z__free(ejs); am2z__free(sset); am2z__free(skey); am2z_value_release(names); am2z_error_release(ce);
        am2z_redis_pool_put(q->pool, r);
        return AM2Z_STATUS_NO_MEMORY;
    }
    /* 1. pause every queue of the session, cancel its jobs, tell their callers; drop the
       session at once when none of its jobs runs */
    names = am2z__qlocal_queues(q, sid, names);
    n = am2z_value_len(names);
    argv = (const char **)am2z__malloc((n + 9) * sizeof *argv);
    if (argv) {
        snprintf(ttl, sizeof ttl, "%lld", (long long)q->cancel_ttl_ms);
        argv[0] = q->C; argv[1] = q->bull; argv[2] = sset; argv[3] = ttl; argv[4] = ejs; argv[5] = q->reply_ttl_s;
        argv[6] = sid; argv[7] = q->sessions_key; argv[8] = skey;
        for (i = 0; i < n; i++) argv[9 + i] = am2z_value_as_string(am2z_value_at(names, i), NULL);
        if (am2z__qeval(r, &rep, q->s_cancelq, n + 9, argv, NULL) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_ARRAY &&
            rep.len >= 3) {
            active = am2z__qel_int(&rep, 0);
            dropped = am2z__qel_int(&rep, 1) == 1;
            existed = am2z__qel_int(&rep, 2) == 1;
            dxids = am2z__qdx_session_ids(q, am2z_reply_at(&rep, 3));
            for (i = 4; i < rep.len; i++) {
                const char *nm = am2z__qel(&rep, i, NULL);
                if (nm) names = am2z__qname_add(names, nm);
            }
        } else {
            st = AM2Z_STATUS_IO;
        }
        am2z_reply_clear(&rep);
        am2z__free(argv);
    } else {
        st = AM2Z_STATUS_NO_MEMORY;
    }
    if (!existed) {
        /* nothing to stop: no event, nothing deleted */
        am2z_redis_pool_put(q->pool, r);
        am2z__free(ejs); am2z__free(sset); am2z__free(skey); am2z_value_release(names); am2z_error_release(ce);
        am2z_value_release(dxids);
        return AM2Z_STATUS_NOT_FOUND;
    }
    n = am2z_value_len(names);
    /* 2. in this process: cancel its runs, end its waiters */
    {
        am2z__qrun *x;
        am2z__mutex_lock(&q->runmu);
        for (x = q->runs.next; x != &q->runs; x = x->next)
            if (x->qu->session && strcmp(x->qu->session, sid) == 0) {
                int zero = 0;
                am2z__atomic_cas(&x->cancelled, &zero, AM2Z__QCANCEL_KEY, AM2Z__MO_ACQ_REL, AM2Z__MO_ACQUIRE);
            }
        am2z__mutex_unlock(&q->runmu);
    }
    for (;;) {
        am2z__qwait *w = NULL, *t;
        am2z__mutex_lock(&q->wmu);
        for (i = 0; i < AM2Z__QBUCKETS && !w; i++)
            for (t = q->waiters[i]; t; t = t->hnext)
                if (t->qu->session && strcmp(t->qu->session, sid) == 0) { w = t; am2z__atomic_inc(&w->refs); break; }
        am2z__mutex_unlock(&q->wmu);
        if (!w) break;
        if ((t = am2z__qwait_take(q, w->id, strlen(w->id))) != NULL) {
            t->error = am2z_error_with_location(am2z_error_retain(ce), t->qu->proc, t->id);
            am2z__qwait_signal(t);
        }
        am2z__qwait_release(w);
    }
    /* 3. wait for running jobs to end, within the grace period */
    while (!dropped && active > 0 && am2z_monotonic_ns() < until && am2z_redis_is_connected(r)) {
        am2z__qsleep_ms(5);
        active = 0;
        sent = 0;
        for (i = 0; i < n; i++)
            if (am2z_redis_append(r, "LLEN %s:%s:active", q->bull, am2z_value_as_string(am2z_value_at(names, i), NULL)) ==
                AM2Z_STATUS_OK)
                sent++;
        for (i = 0; i < sent; i++) {
            if (am2z_redis_read(r, &rep) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER) active += rep.integer;
            am2z_reply_clear(&rep);
        }
    }
    /* 4. delete every key of the session (one script), unless step 1 did */
    if (!dropped) {
        argv = (const char **)am2z__malloc((n + 6) * sizeof *argv);
        if (argv) {
            argv[0] = q->C; argv[1] = q->bull; argv[2] = sid; argv[3] = q->sessions_key; argv[4] = skey; argv[5] = sset;
            for (i = 0; i < n; i++) argv[6 + i] = am2z_value_as_string(am2z_value_at(names, i), NULL);
            if (am2z__qeval(r, &rep, q->s_drop, n + 6, argv, NULL) != AM2Z_STATUS_OK) st = AM2Z_STATUS_IO;
            am2z_reply_clear(&rep);
            am2z__free(argv);
        } else {
            st = AM2Z_STATUS_NO_MEMORY;
        }
    }
    for (i = 0; i < n; i++) am2z__qqueue_forget(q, am2z_value_as_string(am2z_value_at(names, i), NULL));
    am2z_redis_pool_put(q->pool, r);
    { /* 5. its durable executions end cancelled (4.11) */
        am2z_status ds = am2z__qdx_session_stopped(q, dxids, sid);
        if (st == AM2Z_STATUS_OK) st = ds;
        am2z_value_release(dxids);
    }
    am2z__free(ejs);
    am2z__free(sset);
    am2z__free(skey);
    am2z_error_release(ce);
    am2z_value_release(names);
    am2z__qsession_forget(q, sid);
    ev = am2z_value_set(am2z_value_object(), "sessionId", am2z_value_string(sid));
    am2z_runtime_emit(rt, "session:cleanup", ev);
    am2z_value_release(ev);
    return st;
}

static am2z_value *am2z__qop_active_sessions(am2z_runtime *rt) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    am2z_redis *r = am2z__qborrow(q, NULL);
    am2z_value *v;
    if (!r) return am2z_value_array();
    v = am2z__qmembers(r, q->sessions_key);
    am2z_redis_pool_put(q->pool, r);
    return v;
}

/* Whether session sid without queues exists all the same: registered, or with a stored
   state (the cancelq script applies the same test). */
static int am2z__qsession_exists(am2z__qrt *q, am2z_redis *r, const char *sid) {
    am2z_reply rep = am2z__qrep0();
    int yes = 0;
    if (am2z_redis_append(r, "SISMEMBER %s %s", q->sessions_key, sid) == AM2Z_STATUS_OK &&
        am2z_redis_append(r, "EXISTS %sstate:%s", q->C, sid) == AM2Z_STATUS_OK) {
        if (am2z_redis_read(r, &rep) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER && rep.integer > 0) yes = 1;
        am2z_reply_clear(&rep);
        if (am2z_redis_read(r, &rep) == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER && rep.integer > 0) yes = 1;
        am2z_reply_clear(&rep);
    }
    return yes;
}

static am2z_value *am2z__qop_session_stats(am2z_runtime *rt, const char *sid) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    am2z_redis *r;
    am2z_value *names, *v;
    char **ns, **keys;
    size_t n, i;
    if (!am2z__qname_ok(sid) || !(r = am2z__qborrow(q, NULL))) return NULL;
    names = am2z__qsession_queues(q, r, sid);
    n = am2z_value_len(names);
    if (n == 0 && !am2z__qsession_exists(q, r, sid)) {
        am2z_value_release(names);
        am2z_redis_pool_put(q->pool, r);
        return NULL;
    }
    ns = (char **)am2z__malloc((n + 1) * sizeof *ns);
    keys = (char **)am2z__malloc((n + 1) * sizeof *keys);
    v = am2z_value_set(am2z_value_object(), "sessionId", am2z_value_string(sid));
    if (ns && keys) {
        for (i = 0; i < n; i++) {
            char proc[AM2Z_NAME_MAX + 1];
            ns[i] = (char *)am2z_value_as_string(am2z_value_at(names, i), NULL);
            keys[i] = am2z__strdup(am2z__qproc_of(q, ns[i], proc, sizeof proc) ? proc : ns[i]);
        }
        v = am2z_value_set(v, "queues", am2z__qcounts(q, r, ns, keys, n));
        for (i = 0; i < n; i++) am2z__free(keys[i]);
    }
    am2z__free(ns);
    am2z__free(keys);
    am2z_value_release(names);
    am2z_redis_pool_put(q->pool, r);
    return v;
}

/* ---- 4.7 stats ----------------------------------------------------------------------- */

static am2z_value *am2z__qop_stats(am2z_runtime *rt) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    am2z_redis *r = am2z__qborrow(q, NULL);
    am2z_value *v = am2z_value_object(), *reg = am2z_runtime_list(rt), *sessions, *all;
    char **ns, **keys;
    size_t n = 0, i, k, cap;
    v = am2z_value_set(v, "instanceId", am2z_value_string(q->instance));
    v = am2z_value_set(v, "uptimeMs", am2z_value_int(am2z_now_ms() - q->started_ms));
    v = am2z_value_set(v, "running", am2z_value_int(am2z__atomic_load(&q->n_running, AM2Z__MO_ACQUIRE)));
    v = am2z_value_set(v, "completed", am2z_value_int(am2z__atomic_load(&q->n_completed, AM2Z__MO_ACQUIRE)));
    v = am2z_value_set(v, "failed", am2z_value_int(am2z__atomic_load(&q->n_failed, AM2Z__MO_ACQUIRE)));
    v = am2z_value_set(v, "retried", am2z_value_int(am2z__atomic_load(&q->n_retried, AM2Z__MO_ACQUIRE)));
    v = am2z_value_set(v, "missing", am2z_value_int(am2z__atomic_load(&q->n_missing, AM2Z__MO_ACQUIRE)));
    v = am2z_value_set(v, "workers", am2z_value_int(q->nworkers));
    am2z__mutex_lock(&q->wmu);
    n = q->nwaiters;
    am2z__mutex_unlock(&q->wmu);
    v = am2z_value_set(v, "awaiting", am2z_value_int((int64_t)n));
    n = 0;
    if (!r) return am2z_value_set(v, "registeredProcessors", reg);
    sessions = am2z__qmembers(r, q->sessions_key);
    all = am2z_value_array();
    for (i = 0; i < am2z_value_len(reg); i++) {
        char name[2 * AM2Z_NAME_MAX + 8];
        if (am2z__qqname(q, am2z_value_as_string(am2z_value_at(reg, i), NULL), NULL, name, sizeof name))
            all = am2z_value_append(all, "", am2z_value_string(name));
    }
    for (i = 0; i < am2z_value_len(sessions); i++) {
        am2z_value *sq = am2z__qsession_queues(q, r, am2z_value_as_string(am2z_value_at(sessions, i), NULL));
        for (k = 0; k < am2z_value_len(sq); k++) all = am2z_value_append(all, "", am2z_value_retain(am2z_value_at(sq, k)));
        am2z_value_release(sq);
    }
    cap = am2z_value_len(all);
    ns = (char **)am2z__malloc((cap + 1) * sizeof *ns);
    if (ns) {
        for (i = 0; i < cap; i++) ns[n++] = (char *)am2z_value_as_string(am2z_value_at(all, i), NULL);
        keys = ns;
        v = am2z_value_set(v, "queues", am2z__qcounts(q, r, ns, keys, n));
    }
    am2z__free(ns);
    {
        /* each registered processor's global queue by its own name (literal keys: names
           may contain '.'), for am2z_runtime_processor_stats */
        const am2z_value *queues = am2z_value_find(v, "queues", 6);
        am2z_value *procs = am2z_value_object();
        for (i = 0; i < am2z_value_len(reg); i++) {
            char name[2 * AM2Z_NAME_MAX + 8];
            const char *pn = am2z_value_as_string(am2z_value_at(reg, i), NULL);
            const am2z_value *c;
            if (!am2z__qqname(q, pn, NULL, name, sizeof name)) continue;
            c = am2z_value_find(queues, name, strlen(name));
            if (c) procs = am2z_value_set_key(procs, pn, strlen(pn), am2z_value_retain(c));
        }
        v = am2z_value_set(v, "processors", procs);
    }
    v = am2z_value_set(v, "queueNames", all);
    v = am2z_value_set(v, "sessions", sessions);
    {
        char *pk = am2z__qcat(q->C, "processors", NULL, NULL);
        if (pk) v = am2z_value_set(v, "knownProcessors", am2z__qmembers(r, pk));
        am2z__free(pk);
    }
    am2z_redis_pool_put(q->pool, r);
    return am2z_value_set(v, "registeredProcessors", reg);
}

/* ---- 4.8 lifecycle: registration, start, stop, free, construction -------------------- */

/* Wakes every worker thread of this process (the served queues changed). A wake-up key
   lives only until its worker pops it, or AM2Z__QCTL_TTL_MS: a worker that was busy
   takes a fresh snapshot before it blocks again anyway, so a lost wake-up costs
   nothing, and a crashed instance leaves no key behind for long. */
static void am2z__qwake_workers(am2z__qrt *q, int64_t cap_ns) {
    am2z_redis *r;
    am2z_reply rep = am2z__qrep0();
    int i, sent = 0;
    if (!q->workers || !(r = am2z__qborrow_until(q, cap_ns, NULL))) return;
    for (i = 0; i < q->nworkers; i++) {
        if (am2z_redis_append(r, "ZADD %s 0 w", q->workers[i].ctl) == AM2Z_STATUS_OK) sent++;
        /* never shorter than a lock: the key may hold a job handed to that thread */
        if (am2z_redis_append(r, "PEXPIRE %s %lld", q->workers[i].ctl,
                              (long long)(q->lock_ms > AM2Z__QCTL_TTL_MS ? q->lock_ms : AM2Z__QCTL_TTL_MS)) == AM2Z_STATUS_OK)
            sent++;
    }
    for (i = 0; i < sent; i++) { am2z_redis_read(r, &rep); am2z_reply_clear(&rep); }
    am2z_redis_pool_put(q->pool, r);
}

/* Deletes the keys this instance owns (its reply list, its workers' wake-up keys), once
   its threads are gone. A pooled connection may be stale after a Redis restart: one
   more try on a fresh one. */
static void am2z__qdel_own_keys(am2z__qrt *q, int64_t cap_ns) {
    const char **argv = (const char **)am2z__malloc(((size_t)q->nworkers + 3) * sizeof *argv);
    size_t argc = 0, attempt;
    int i;
    if (!argv) return;
    argv[argc++] = "DEL";
    argv[argc++] = q->reply_key;
    argv[argc++] = q->taken_key;
    for (i = 0; q->workers && i < q->nworkers; i++)
        if (q->workers[i].ctl) argv[argc++] = q->workers[i].ctl;
    for (attempt = 0; attempt < 2; attempt++) {
        am2z_reply rep = am2z__qrep0();
        am2z_redis *r = am2z__qborrow_until(q, cap_ns, NULL);
        am2z_status st;
        if (!r) break;
        for (i = 0; q->workers && i < q->nworkers; i++) /* no job is handed to them any more */
            if (q->workers[i].reg_key && am2z_redis_command(r, &rep, "ZREM %s %s", q->workers[i].reg_key,
                                                            q->workers[i].reg_member) == AM2Z_STATUS_OK) {
                am2z__free(q->workers[i].reg_key);
                q->workers[i].reg_key = NULL;
            }
        st = am2z_redis_command_argv(r, &rep, argc, argv, NULL);
        am2z_reply_clear(&rep);
        am2z_redis_pool_put(q->pool, r);
        if (st != AM2Z_STATUS_IO) break;
    }
    am2z__free(argv);
}

/* Register and unregister: all of their Redis work (the bookkeeping sets, the workers'
   wake-up) shares one command timeout, so a Redis that stopped answering holds them
   that long at most. */
static int64_t am2z__qcmd_cap(const am2z__qrt *q) {
    return q->rdesc.command_timeout_ms > 0 ? am2z_monotonic_ns() + am2z__qns(q->rdesc.command_timeout_ms) : 0;
}

static void am2z__qop_registered(am2z_runtime *rt, am2z_processor *p) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    const char *name = am2z_processor_name(p);
    const am2z_processor_desc *d = am2z_processor_desc_of(p);
    am2z__qproc *pr, *x;
    am2z__qqueue *u;
    am2z_redis *r;
    int64_t cap = am2z__qcmd_cap(q);
    if (!am2z__qname_ok(name)) return;
    pr = (am2z__qproc *)am2z__malloc(sizeof *pr);
    if (!pr) return;
    memset(pr, 0, sizeof *pr);
    pr->refs = 1;
    pr->name = am2z__strdup(name);
    pr->wake_key = am2z__qcat(q->C, "wake:", name, NULL);
    pr->limit = d->queue.concurrency > 0 ? d->queue.concurrency : 0;
    if (!pr->name || !pr->wake_key) { am2z__qproc_release(pr); return; }
    am2z__mutex_lock(&q->mu);
    for (x = q->procs; x; x = x->next)
        if (strcmp(x->name, name) == 0) break;
    if (x) {
        x->limit = pr->limit;
    } else {
        pr->next = q->procs;
        q->procs = pr;
        pr = NULL;
        am2z__atomic_inc(&q->gen);
    }
    am2z__mutex_unlock(&q->mu);
    am2z__qproc_release(pr);
    u = am2z__qqueue_get(q, name, NULL, 1);
    if ((r = am2z__qborrow_until(q, cap, NULL)) != NULL) {
        am2z_reply rep = am2z__qrep0();
        am2z_redis_append(r, "SADD %sprocessors %s", q->C, name);
        am2z_redis_append(r, "SADD %squeues %s", q->C, u ? u->name : name);
        am2z_redis_read(r, &rep); am2z_reply_clear(&rep);
        am2z_redis_read(r, &rep); am2z_reply_clear(&rep);
        am2z_redis_pool_put(q->pool, r);
    }
    am2z__qqueue_release(u);
    if (q->nworkers > 0) am2z__qpublish(q, p, cap);
    if (am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE)) am2z__qwake_workers(q, cap);
    am2z__qmaint_wake(q); /* names the queue's worker presence now */
}

static void am2z__qop_unregistered(am2z_runtime *rt, const char *name) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    am2z__qproc **pp, *pr = NULL;
    am2z__mutex_lock(&q->mu);
    for (pp = &q->procs; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->name, name) == 0) { pr = *pp; *pp = pr->next; break; }
    am2z__atomic_inc(&q->gen);
    am2z__mutex_unlock(&q->mu);
    am2z__qproc_release(pr);
    /* forget every queue of it, one at a time (forget takes the lock itself) */
    for (;;) {
        char *qn = NULL;
        size_t i;
        am2z__qqueue *u;
        am2z__mutex_lock(&q->mu);
        for (i = 0; i < AM2Z__QBUCKETS && !qn; i++)
            for (u = q->queues[i]; u; u = u->hnext)
                if (strcmp(u->proc, name) == 0) { qn = am2z__strdup(u->name); break; }
        am2z__mutex_unlock(&q->mu);
        if (!qn) break;
        am2z__qqueue_forget(q, qn);
        am2z__free(qn);
    }
    if (am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE)) am2z__qwake_workers(q, am2z__qcmd_cap(q));
    am2z__qmaint_wake(q);
}

static void am2z__qsched_start(am2z__qrt *q); /* 4.10 */

static am2z_status am2z__qop_start(am2z_runtime *rt) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    int i;
    if (q->have_threads) return AM2Z_STATUS_OK;
    if (!q->rconn) q->rconn = am2z__qconn(q, "results");
    if (!q->mconn) q->mconn = am2z__qconn(q, "maintenance");
    if (!q->econn) { /* connected by its thread when a queue is followed */
        am2z_redis_desc d = q->rdesc;
        char name[256];
        snprintf(name, sizeof name, "%s%s:events", q->C, q->instance);
        d.client_name = name;
        q->econn = am2z_redis_new(&d, NULL);
        am2z__redis_abort_fd(q->econn, q->abort_pipe[0]); /* a stop that gives up on Redis ends its waits */
    }
    if (!q->rconn || !q->mconn || !q->econn) return AM2Z_STATUS_NO_MEMORY;
    if (q->nworkers > 0 && !q->workers) {
        q->workers = (am2z__qworker *)am2z__malloc((size_t)q->nworkers * sizeof *q->workers);
        if (!q->workers) return AM2Z_STATUS_NO_MEMORY;
        memset(q->workers, 0, (size_t)q->nworkers * sizeof *q->workers);
        for (i = 0; i < q->nworkers; i++) {
            char role[32], idx[16];
            am2z__qworker *w = &q->workers[i];
            snprintf(role, sizeof role, "w%d", i);
            snprintf(idx, sizeof idx, "%d", i);
            w->q = q;
            w->index = i;
            w->conn = am2z__qconn(q, role);
            w->ctl = am2z__qcat(q->C, "ctl:", q->instance, ":");
            if (w->ctl) {
                char *c = am2z__qcat(w->ctl, idx, NULL, NULL);
                am2z__free(w->ctl);
                w->ctl = c;
            }
            if (!w->conn || !w->ctl) return AM2Z_STATUS_NO_MEMORY;
        }
    }
    am2z__atomic_store(&q->running, 1, AM2Z__MO_RELEASE);
    am2z__atomic_store(&q->rx_stop, 0, AM2Z__MO_RELEASE);
    am2z__atomic_store(&q->n_live_workers, q->nworkers, AM2Z__MO_RELEASE);
    am2z__atomic_store(&q->n_live_aux, 3, AM2Z__MO_RELEASE); /* receiver, maintenance, events reader */
    am2z__qguard_init(&q->rguard);
    for (i = 0; i < q->nworkers; i++) {
        am2z__qworker *w = &q->workers[i];
        w->gen = 0;
        w->k = 1;
        am2z__qguard_init(&w->guard);
        if (am2z__thread_create(&w->thread, am2z__qworker_main, w) != 0) {
            am2z__atomic_store(&q->running, 0, AM2Z__MO_RELEASE);
            while (i-- > 0) am2z__thread_join(q->workers[i].thread);
            return AM2Z_STATUS_NO_MEMORY;
        }
    }
    if (am2z__thread_create(&q->receiver, am2z__qreceiver_main, q) != 0) {
        am2z__atomic_store(&q->running, 0, AM2Z__MO_RELEASE);
        am2z__atomic_store(&q->rx_stop, 1, AM2Z__MO_RELEASE);
        for (i = 0; i < q->nworkers; i++) am2z__thread_join(q->workers[i].thread);
        return AM2Z_STATUS_NO_MEMORY;
    }
    if (am2z__thread_create(&q->maint, am2z__qmaint_main, q) != 0) {
        am2z__atomic_store(&q->running, 0, AM2Z__MO_RELEASE);
        am2z__atomic_store(&q->rx_stop, 1, AM2Z__MO_RELEASE);
        for (i = 0; i < q->nworkers; i++) am2z__thread_join(q->workers[i].thread);
        am2z__thread_join(q->receiver);
        return AM2Z_STATUS_NO_MEMORY;
    }
    am2z__qguard_init(&q->eguard);
    if (am2z__thread_create(&q->evreader, am2z__qevreader_main, q) != 0) {
        am2z__atomic_store(&q->running, 0, AM2Z__MO_RELEASE);
        am2z__atomic_store(&q->rx_stop, 1, AM2Z__MO_RELEASE);
        for (i = 0; i < q->nworkers; i++) am2z__thread_join(q->workers[i].thread);
        am2z__qguard_cut(q, &q->rguard);
        am2z__thread_join(q->receiver);
        am2z__mutex_lock(&q->mnt.mu);
        am2z__cond_broadcast(&q->mnt.cv);
        am2z__mutex_unlock(&q->mnt.mu);
        am2z__thread_join(q->maint);
        return AM2Z_STATUS_NO_MEMORY;
    }
    q->have_threads = 1;
    am2z__qsched_start(q);
    return AM2Z_STATUS_OK;
}

#define AM2Z__QSTOP_SLACK_MS 500 /* a stop's last commands, after the grace period */

/* Waits until *live (atomic) is 0 or until (monotonic ns); 1 when it reached 0. */
static int am2z__qlive_wait(int64_t *live, int64_t until) {
    while (am2z__atomic_load(live, AM2Z__MO_ACQUIRE) > 0) {
        if (am2z_monotonic_ns() >= until) return 0;
        am2z__qsleep_ms(2);
    }
    return 1;
}
/* A stop gives up on Redis: every wait of this runtime's connections fails at once
   (am2z__redis_abort_fd), so its threads end without their last commands. */
static void am2z__qabort(am2z__qrt *q) {
    char c = 1;
    if (q->aborted) return;
    q->aborted = write(q->abort_pipe[1], &c, 1) == 1;
    am2z_log_warn(q->logger, "queue runtime: Redis did not answer within the stop's grace period: its last "
                  "commands were given up (stalled-job recovery puts running jobs back)");
}
/* After the stop: connections wait normally again. */
static void am2z__qunabort(am2z__qrt *q) {
    char buf[16];
    while (q->aborted && read(q->abort_pipe[0], buf, sizeof buf) > 0) {}
    q->aborted = 0;
}

static am2z_status am2z__qop_stop(am2z_runtime *rt, int64_t grace_ms) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    int64_t until = am2z_monotonic_ns() + am2z__qns(grace_ms);
    am2z__qrun *x;
    int i;
    if (!q->have_threads) return AM2Z_STATUS_OK;
    /* let running jobs finish within the grace period (workers take nothing new); the
       workers waiting in Redis are cut loose, not woken through Redis, so a Redis that
       restarted or went away cannot delay the stop */
    am2z__atomic_store(&q->running, 0, AM2Z__MO_RELEASE);
    for (i = 0; i < q->nworkers; i++) am2z__qguard_cut(q, &q->workers[i].guard);
    am2z__qguard_cut(q, &q->sguard); /* the schedule timer's wait in Redis */
    while (am2z__atomic_load(&q->n_running, AM2Z__MO_ACQUIRE) > 0 && am2z_monotonic_ns() < until) am2z__qsleep_ms(2);
    am2z__mutex_lock(&q->runmu);
    for (x = q->runs.next; x != &q->runs; x = x->next) {
        int zero = 0;
        am2z__atomic_cas(&x->cancelled, &zero, AM2Z__QCANCEL_STOPPING, AM2Z__MO_ACQ_REL, AM2Z__MO_ACQUIRE);
    }
    am2z__mutex_unlock(&q->runmu);
    /* once the processors returned, their last commands (a finished job's, a give-back,
       the cleanup below) share AM2Z__QSTOP_SLACK_MS; past it a Redis that stopped
       answering is given up on. Each step gets at least 100 ms of it. */
    while (am2z__atomic_load(&q->n_running, AM2Z__MO_ACQUIRE) > 0) am2z__qsleep_ms(2);
    until = am2z_monotonic_ns() + am2z__qns(AM2Z__QSTOP_SLACK_MS);
    if (!am2z__qlive_wait(&q->n_live_workers, until) || !am2z__sched_timer_quiesce(q->sched_timer, until))
        am2z__qabort(q);
    for (i = 0; i < q->nworkers; i++) am2z__thread_join(q->workers[i].thread);
    am2z__sched_timer_stop(q->sched_timer); /* after a possible abort: a tick stuck in Redis ends */
    am2z__atomic_store(&q->rx_stop, 1, AM2Z__MO_RELEASE);
    am2z__qguard_cut(q, &q->rguard);
    am2z__qguard_cut(q, &q->eguard);
    am2z__mutex_lock(&q->mnt.mu);
    am2z__cond_broadcast(&q->mnt.cv);
    am2z__mutex_unlock(&q->mnt.mu);
    am2z__mutex_lock(&q->ent.mu);
    am2z__cond_broadcast(&q->ent.cv);
    am2z__mutex_unlock(&q->ent.mu);
    if (until < am2z_monotonic_ns() + am2z__qns(100)) until = am2z_monotonic_ns() + am2z__qns(100);
    if (!am2z__qlive_wait(&q->n_live_aux, until)) am2z__qabort(q);
    am2z__thread_join(q->receiver);
    am2z__thread_join(q->maint);
    am2z__thread_join(q->evreader);
    am2z__qpresence_drop(q); /* a stopped runtime is no worker */
    q->have_threads = 0;
    if (until < am2z_monotonic_ns() + am2z__qns(100)) until = am2z_monotonic_ns() + am2z__qns(100);
    /* late results and pending wake-ups have nobody to read them now */
    if (!q->aborted) am2z__qdel_own_keys(q, until);
    /* executions still waiting cannot get their result any more */
    for (;;) {
        am2z__qwait *w = NULL;
        size_t b;
        am2z__mutex_lock(&q->wmu);
        for (b = 0; b < AM2Z__QBUCKETS && !w; b++)
            if (q->waiters[b]) { w = q->waiters[b]; am2z__atomic_inc(&w->refs); }
        am2z__mutex_unlock(&q->wmu);
        if (!w) break;
        am2z__qexpire(w, am2z_error_with_location(am2z_error_cancelled("the runtime was stopped"), w->qu->proc, w->id));
        am2z__qwait_release(w);
    }
    /* the cancel keys the maintenance thread did not set */
    {
        am2z_redis *r = q->aborted ? NULL : am2z__qborrow_until(q, until, NULL);
        am2z__qcancel_flush(q, r);
        if (r) am2z_redis_pool_put(q->pool, r);
    }
    am2z__qunabort(q);
    return AM2Z_STATUS_OK;
}

static void am2z__qfree(am2z__qrt *q) {
    size_t i;
    int k;
    am2z__sched_timer_free(q->sched_timer);
    am2z_redis_free(q->sconn);
    for (k = 0; k < 3; k++) am2z_redis_script_free(q->s_sched[k]);
    for (k = 0; q->workers && k < q->nworkers; k++) {
        am2z_redis_free(q->workers[k].conn);
        am2z__free(q->workers[k].ctl);
        am2z__free(q->workers[k].reg_key);
        am2z_resp_reader_free(q->workers[k].hrd);
    }
    am2z__free(q->workers);
    am2z_redis_free(q->rconn);
    am2z_redis_free(q->mconn);
    am2z__qcancel_flush(q, NULL);
    if (q->abort_pipe[0] >= 0) close(q->abort_pipe[0]);
    if (q->abort_pipe[1] >= 0) close(q->abort_pipe[1]);
    am2z_redis_free(q->econn);
    am2z__qpresence_drop(q);
    am2z_redis_script_free(q->s_progress);
    am2z_redis_script_free(q->s_breaker);
    am2z__qnotify_destroy(&q->ent);
    for (i = 0; i < AM2Z__QBUCKETS; i++)
        while (q->queues[i]) {
            am2z__qqueue *u = q->queues[i];
            q->queues[i] = u->hnext;
            am2z__qqueue_release(u);
        }
    while (q->procs) {
        am2z__qproc *p = q->procs;
        q->procs = p->next;
        am2z__qproc_release(p);
    }
    for (i = 0; i < q->nsessions; i++) am2z__free(q->sessions[i]);
    am2z__free(q->sessions);
    if (q->pool) am2z_redis_pool_free(q->pool);
    am2z_redis_script_free(q->s_add); am2z_redis_script_free(q->s_fetch); am2z_redis_script_free(q->s_complete);
    am2z_redis_script_free(q->s_fail); am2z_redis_script_free(q->s_retry); am2z_redis_script_free(q->s_extend);
    am2z_redis_script_free(q->s_stalled); am2z_redis_script_free(q->s_claim); am2z_redis_script_free(q->s_drop);
    am2z_redis_script_free(q->s_cancelq); am2z_redis_script_free(q->s_state); am2z_redis_script_free(q->s_due);
    am2z_redis_script_free(q->s_remove);
    am2z_redis_script_free(q->s_take);
    am2z_redis_script_free(q->s_settings);
    am2z__qpubs_free(q);
    am2z__mutex_destroy(&q->setmu);
    am2z__mutex_destroy(&q->mu);
    am2z__mutex_destroy(&q->wmu);
    am2z__mutex_destroy(&q->runmu);
    am2z__mutex_destroy(&q->cutmu);
    am2z__qnotify_destroy(&q->mnt);
    am2z__free(q->r_host); am2z__free(q->r_unix); am2z__free(q->r_user); am2z__free(q->r_pass);
    am2z__free(q->prefix); am2z__free(q->bull); am2z__free(q->C); am2z__free(q->reply_key); am2z__free(q->taken_key);
    am2z__free(q->sessions_key);
    am2z_logger_release(q->logger);
    q->magic = 0;
    am2z__free(q);
}

static void am2z__qop_destroy(am2z_runtime *rt) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    if (!q) return;
    if (q->have_threads) am2z__qop_stop(rt, 0);
    am2z__qdx_free(q);
    am2z__qfree(q);
}

static am2z_status am2z__qop_schedule_upsert(am2z_runtime *rt, const am2z_schedule_desc *d); /* 4.10 */
static am2z_status am2z__qop_schedule_remove(am2z_runtime *rt, const char *id);
static am2z_value *am2z__qop_schedule_list(am2z_runtime *rt);

static const am2z_runtime_ops am2z__qops = {
    am2z__qop_start, am2z__qop_stop, am2z__qop_submit, am2z__qop_wait, am2z__qop_free_execution, am2z__qop_detach,
    am2z__qop_execute, am2z__qop_execute_many, am2z__qop_stop_session, am2z__qop_stats,
    am2z__qop_session_stats, am2z__qop_active_sessions, am2z__qop_registered, am2z__qop_unregistered,
    am2z__qop_destroy, am2z__qop_schedule_upsert, am2z__qop_schedule_remove, am2z__qop_schedule_list};

/* -- construction -- */

static char *am2z__qenv(const char *given, const char *env) {
    const char *e = given ? given : getenv(env);
    return e && *e ? am2z__strdup(e) : NULL;
}

AM2Z_API am2z_runtime *am2z_queue_runtime_new(const am2z_queue_desc *desc, am2z_status *status) {
    am2z_queue_desc d;
    am2z_runtime_settings set;
    am2z__qrt *q;
    am2z_logger *lg;
    am2z_runtime *rt;
    am2z_redis *probe;
    am2z_status st = AM2Z_STATUS_OK, pool_st = AM2Z_STATUS_OK;
    char seed[128];
    char hex[2 * AM2Z_SHA256_SIZE + 1];
    static int counter;
    const char *e;
    int i;
    if (desc) d = *desc;
    else memset(&d, 0, sizeof d);
    if (d.redis.n_cluster_nodes > 0 &&
        (!d.bull_prefix || d.bull_prefix[0] != '{' || !strchr(d.bull_prefix + 1, '}') || d.bull_prefix[1] == '}'))
        return (am2z_runtime *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "queue runtime: with cluster_nodes the bull prefix must start with a "
                                                   "hash tag (\"{am2z}\"), so that every key lies in one slot"));
    if ((d.prefix && !am2z__qname_ok(d.prefix)) || (d.bull_prefix && !am2z__qprefix_ok(d.bull_prefix)))
        return (am2z_runtime *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "queue runtime: the prefix must be 1..%d bytes of [A-Za-z0-9_.-] "
                                                   "(bull prefix: no spaces)", AM2Z_NAME_MAX));
    if (d.concurrency > AM2Z_QUEUE_MAX_WORKERS)
        return (am2z_runtime *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "queue runtime: concurrency %d is above AM2Z_QUEUE_MAX_WORKERS (%d)",
                                                   d.concurrency, AM2Z_QUEUE_MAX_WORKERS));
    if (d.session_concurrency < 0 || d.session_concurrency > AM2Z_MAX_CONCURRENCY)
        return (am2z_runtime *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "queue runtime: session_concurrency %d is outside "
                                                   "0..AM2Z_MAX_CONCURRENCY (%d)", d.session_concurrency,
                                                   AM2Z_MAX_CONCURRENCY));
    if (am2z__rate_bad(&d.session_rate))
        return (am2z_runtime *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "queue runtime: session_rate.%s", am2z__rate_bad(&d.session_rate)));
    lg = d.logger ? am2z_logger_retain(d.logger) : am2z_logger_new(NULL, NULL);
    q = lg ? (am2z__qrt *)am2z__malloc(sizeof *q) : NULL;
    if (!q) {
        am2z_logger_release(lg);
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "queue runtime: out of memory"));
    }
    memset(q, 0, sizeof *q);
    q->magic = AM2Z__QMAGIC;
    q->logger = lg;
    q->abort_pipe[0] = q->abort_pipe[1] = -1;
    q->rdesc = d.redis;
    q->r_host = am2z__qenv(d.redis.host, d.redis.unix_path ? "AM2Z__NONE" : "REDIS_HOST");
    q->r_unix = am2z__qenv(d.redis.unix_path, "AM2Z__NONE");
    q->r_user = am2z__qenv(d.redis.user, "AM2Z__NONE");
    q->r_pass = am2z__qenv(d.redis.password, "REDIS_PASSWORD");
    q->rdesc.host = q->r_host;
    q->rdesc.unix_path = q->r_unix;
    q->rdesc.user = q->r_user;
    q->rdesc.password = q->r_pass;
    q->rdesc.client_name = NULL;
    if (!q->rdesc.port && (e = getenv("REDIS_PORT")) != NULL) q->rdesc.port = atoi(e);
    if (!q->rdesc.db && (e = getenv("REDIS_DB")) != NULL) q->rdesc.db = atoi(e);
    q->prefix = am2z__strdup(d.prefix ? d.prefix : "am2z");
    q->bull = am2z__strdup(d.bull_prefix ? d.bull_prefix : "bull");
    if (d.concurrency == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        d.concurrency = n > 0 ? (int)(n < 64 ? n : 64) : 1;
    }
    q->nworkers = d.concurrency > 0 ? d.concurrency : 0;
    q->lock_ms = d.lock_duration_ms > 0 ? d.lock_duration_ms : 30000;
    q->stalled_ms = d.stalled_interval_ms > 0 ? d.stalled_interval_ms : 30000;
    q->max_stalled = d.max_stalled_count > 0 ? d.max_stalled_count : d.max_stalled_count < 0 ? 0 : 1;
    q->keep_c = d.keep_completed ? d.keep_completed : 100;
    q->dx_keep_ms = d.durable_keep_ms < 0 ? 0 : !d.durable_keep_ms ? AM2Z_QUEUE_DURABLE_KEEP_MS
                  : d.durable_keep_ms > AM2Z_QUEUE_DURABLE_KEEP_MAX_MS ? AM2Z_QUEUE_DURABLE_KEEP_MAX_MS : d.durable_keep_ms;
    q->keep_c_age = d.keep_completed_age_s ? d.keep_completed_age_s : 86400;
    q->keep_f = d.keep_failed ? d.keep_failed : 1000;
    q->keep_f_age = d.keep_failed_age_s ? d.keep_failed_age_s : 604800;
    q->events = d.events < 0 ? 0 : d.events > 0 ? 2 : 1;
    q->default_timeout_ms = d.default_timeout_ms > 0 ? d.default_timeout_ms : 60000;
    q->max_depth = d.max_call_depth > 0 ? d.max_call_depth : AM2Z_MAX_CALL_DEPTH;
    q->cancel_poll_ms = d.cancel_poll_ms > 0 ? d.cancel_poll_ms : 100;
    q->foreign_poll_ms = d.foreign_poll_ms > 0 ? d.foreign_poll_ms : d.foreign_poll_ms < 0 ? -1 : 10000;
    q->reply_ttl_ms = d.reply_ttl_ms > 0 ? d.reply_ttl_ms : 86400000;
    q->cancel_ttl_ms = d.cancel_ttl_ms > 0 ? d.cancel_ttl_ms : 600000;
    q->session_conc = d.session_concurrency;
    q->session_rate = d.session_rate;
    q->trace = d.trace != 0;
    q->settings_refresh_ms = d.settings_refresh_ms > AM2Z__QMAX_WAIT_MS ? AM2Z__QMAX_WAIT_MS
                             : d.settings_refresh_ms > 0 ? d.settings_refresh_ms : d.settings_refresh_ms < 0 ? -1 : 1000;
    snprintf(q->lock_s, sizeof q->lock_s, "%lld", (long long)q->lock_ms);
    snprintf(q->reply_ttl_s, sizeof q->reply_ttl_s, "%lld", (long long)q->reply_ttl_ms);
    q->started_ms = am2z_now_ms();
    snprintf(seed, sizeof seed, "%ld:%lld:%lld:%p:%d", (long)getpid(), (long long)am2z_monotonic_ns(),
             (long long)q->started_ms, (void *)q, am2z__atomic_inc(&counter));
    am2z_sha256_hex(seed, strlen(seed), hex);
    memcpy(q->instance, hex, 16);
    q->instance[16] = 0;
    q->C = q->prefix && q->bull ? am2z__qcat(q->bull, ":", q->prefix, ":") : NULL;
    q->reply_key = q->C ? am2z__qcat(q->C, "reply:", q->instance, NULL) : NULL;
    q->taken_key = q->C ? am2z__qcat(q->C, "reply:", q->instance, ":taken") : NULL;
    q->sessions_key = q->C ? am2z__qcat(q->C, "sessions", NULL, NULL) : NULL;
    q->runs.next = q->runs.prev = &q->runs;
    am2z__mutex_init(&q->mu);
    am2z__mutex_init(&q->wmu);
    am2z__mutex_init(&q->runmu);
    am2z__mutex_init(&q->cutmu);
    am2z__mutex_init(&q->setmu);
    am2z__qguard_init(&q->rguard);
    am2z__qguard_init(&q->sguard);
    am2z__qnotify_init(&q->mnt);
    am2z__qnotify_init(&q->ent);
    q->s_add = am2z__qscript(am2z__qlua_add);
    q->s_fetch = am2z__qscript(am2z__qlua_fetch);
    q->s_complete = am2z__qscript(am2z__qlua_complete);
    q->s_fail = am2z__qscript(am2z__qlua_fail);
    q->s_retry = am2z__qscript(am2z__qlua_retry);
    q->s_extend = am2z__qscript(am2z__qlua_extend);
    q->s_stalled = am2z__qscript(am2z__qlua_stalled);
    q->s_claim = am2z__qscript(am2z__qlua_claim);
    q->s_drop = am2z__qscript(am2z__qlua_drop);
    q->s_cancelq = am2z__qscript(am2z__qlua_cancelq);
    q->s_state = am2z__qscript(am2z__qlua_state);
    q->s_due = am2z__qscript(am2z__qlua_due);
    q->s_remove = am2z__qscript(am2z__qlua_remove);
    q->s_take = am2z__qscript(am2z__qlua_take);
    q->s_settings = am2z__qscript(am2z__qlua_settings);
    q->s_progress = am2z__qscript(am2z__qlua_progress);
    q->s_breaker = am2z__qscript(am2z__qlua_breaker);
    if (q->rdesc.n_cluster_nodes > 0 && !q->rdesc.cluster_key) q->rdesc.cluster_key = q->bull; /* its one slot */
    q->pool = am2z_redis_pool_new(&q->rdesc, 16, &pool_st);
    if (q->pool) am2z__redis_pool_keep_sentinels(q->pool, &q->rdesc); /* the caller's list may go */
    if (pipe(q->abort_pipe) == 0) {
        for (i = 0; i < 2; i++) {
            (void)fcntl(q->abort_pipe[i], F_SETFD, FD_CLOEXEC);
            (void)fcntl(q->abort_pipe[i], F_SETFL, fcntl(q->abort_pipe[i], F_GETFL) | O_NONBLOCK);
        }
        am2z__redis_pool_abort_fd(q->pool, q->abort_pipe[0]);
    } else {
        q->abort_pipe[0] = q->abort_pipe[1] = -1;
    }
    rt = NULL;
    if (!q->pool && pool_st == AM2Z_STATUS_INVALID_ARGUMENT) {
        st = pool_st; /* a bad desc.redis, with its detail */
    } else if (!q->prefix || !q->bull || !q->C || !q->reply_key || !q->sessions_key || !q->s_add || !q->s_fetch ||
        !q->s_complete || !q->s_fail || !q->s_retry || !q->s_extend || !q->s_stalled || !q->s_claim || !q->s_drop ||
        !q->s_cancelq || !q->s_state || !q->s_due || !q->s_remove || !q->s_settings || !q->pool || !q->s_progress ||
        !q->s_take || !q->taken_key || !q->s_breaker) {
        st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "queue runtime: out of memory");
    } else if (q->abort_pipe[0] < 0) {
        st = am2z__fail(AM2Z_STATUS_IO, AM2Z_NTS, "queue runtime: pipe: %s", strerror(errno));
    } else if (!(probe = am2z__qborrow(q, &st)) && q->rdesc.n_sentinels > 0) {
        st = am2z__fail(st, AM2Z_NTS, "queue runtime: cannot connect to Redis: %s", am2z_status_detail());
    } else if (!probe) {
        st = am2z__fail(st, AM2Z_NTS, "queue runtime: cannot connect to Redis at %s:%d: %s",
                        q->rdesc.unix_path ? q->rdesc.unix_path : q->rdesc.host ? q->rdesc.host : "127.0.0.1",
                        q->rdesc.port ? q->rdesc.port : 6379, am2z_status_string(st));
    } else {
        am2z_redis_pool_put(q->pool, probe);
        memset(&set, 0, sizeof set);
        set.kind = "queue";
        set.workers = q->nworkers;
        set.default_timeout_ms = q->default_timeout_ms;
        set.max_call_depth = q->max_depth;
        rt = am2z_runtime_new(&am2z__qops, q, lg, &set);
        if (rt) {
            q->rt = rt;
            if (!am2z__qdx_init(q) || am2z_runtime_start(rt) != AM2Z_STATUS_OK) {
                am2z_runtime_free(rt);
                return (am2z_runtime *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS,
                                                           "queue runtime: cannot start its threads"));
            }
            if (status) *status = AM2Z_STATUS_OK;
            return rt;
        }
        st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "queue runtime: out of memory");
    }
    am2z__qfree(q);
    return (am2z_runtime *)am2z__put_status(status, st);
}

/* ---- 4.9 state manager --------------------------------------------------------------- */

static am2z_status am2z__qstate_read(am2z__qrt *q, am2z_redis *r, const char *sid, am2z_state **out,
                                     int64_t *version) {
    am2z_reply rep = am2z__qrep0();
    am2z_status st = am2z_redis_command(r, &rep, "HMGET %sstate:%s state version hash", q->C, sid);
    size_t sn = 0, hn = 0;
    const char *s, *h;
    am2z_value *v;
    char *canon;
    size_t cn = 0;
    char hex[2 * AM2Z_SHA256_SIZE + 1];
    if (st != AM2Z_STATUS_OK) { am2z_reply_clear(&rep); return st == AM2Z_STATUS_SERVER ? st : AM2Z_STATUS_IO; }
    s = am2z__qel(&rep, 0, &sn);
    h = am2z__qel(&rep, 2, &hn);
    if (!s) {
        am2z_reply_clear(&rep);
        return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "state '%s': none stored", sid);
    }
    if (version) *version = am2z__qel_int(&rep, 1);
    v = am2z_json_parse(s, sn, NULL, NULL);
    if (!v || am2z_value_type(v) != AM2Z_TYPE_OBJECT) {
        am2z_value_release(v);
        am2z_reply_clear(&rep);
        return am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "state '%s': the stored state is not a JSON object", sid);
    }
    canon = am2z_json_write(v, AM2Z_JSON_SORTED, &cn);
    if (!canon) { am2z_value_release(v); am2z_reply_clear(&rep); return AM2Z_STATUS_NO_MEMORY; }
    am2z_sha256_hex(canon, cn, hex);
    am2z__free(canon);
    if (h && (hn != 2 * AM2Z_SHA256_SIZE || memcmp(h, hex, hn) != 0)) {
        am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "state '%s': integrity check failed (stored hash %.*s, computed %s)",
                   sid, (int)(hn > 64 ? 64 : hn), h, hex);
        am2z_value_release(v);
        am2z_reply_clear(&rep);
        return AM2Z_STATUS_PROTOCOL;
    }
    am2z_reply_clear(&rep);
    if (out) {
        *out = am2z_value_find(v, "metadata", 8) ? am2z_value_retain(v) : am2z_state_new(sid, am2z_value_retain(v), NULL);
        if (!*out) { am2z_value_release(v); return AM2Z_STATUS_NO_MEMORY; }
    }
    am2z_value_release(v);
    return AM2Z_STATUS_OK;
}

/* Writes state if the stored version is expected (< 0: any): OK, CONFLICT, or a failure. */
static am2z_status am2z__qstate_write(am2z__qrt *q, am2z_redis *r, const char *sid, const am2z_state *state,
                                      int64_t ttl_ms, int64_t expected, int64_t *version) {
    size_t cn = 0;
    char *canon = am2z_json_write(state, AM2Z_JSON_SORTED, &cn);
    char hex[2 * AM2Z_SHA256_SIZE + 1], ttl[24], now_s[24], exp_s[24];
    char *key = am2z__qcat(q->C, "state:", sid, NULL);
    const char *argv[6];
    size_t lens[6], i;
    am2z_reply rep = am2z__qrep0();
    am2z_status st;
    if (!canon || !key) { am2z__free(canon); am2z__free(key); return AM2Z_STATUS_NO_MEMORY; }
    am2z_sha256_hex(canon, cn, hex);
    snprintf(ttl, sizeof ttl, "%lld", (long long)(ttl_ms > 0 ? ttl_ms : 0));
    snprintf(now_s, sizeof now_s, "%lld", (long long)am2z_now_ms());
    if (expected >= 0) snprintf(exp_s, sizeof exp_s, "%lld", (long long)expected);
    else exp_s[0] = 0;
    argv[0] = key; argv[1] = canon; argv[2] = hex; argv[3] = ttl; argv[4] = now_s; argv[5] = exp_s;
    for (i = 0; i < 6; i++) lens[i] = strlen(argv[i]);
    lens[1] = cn;
    st = am2z__qeval(r, &rep, q->s_state, 6, argv, lens);
    if (st == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER) {
        if (rep.integer < 0) st = AM2Z_STATUS_CONFLICT;
        else if (version) *version = rep.integer;
    } else if (st == AM2Z_STATUS_OK) {
        st = AM2Z_STATUS_PROTOCOL;
    }
    am2z_reply_clear(&rep);
    am2z__free(canon);
    am2z__free(key);
    return st;
}

/* The status of a state manager call with a bad runtime or session id. */
static am2z_status am2z__qstate_bad(const am2z__qrt *q, const char *session_id) {
    if (!q) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "state: not a queue runtime");
    return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                      "state '%s': session ids are 1..AM2Z_SESSION_ID_MAX bytes of [A-Za-z0-9_.-]",
                      session_id ? session_id : "(null)");
}

AM2Z_API am2z_status am2z_queue_state_get(am2z_runtime *rt, const char *session_id, am2z_state **out,
                                          int64_t *version) {
    am2z__qrt *q = am2z__qof(rt);
    am2z_redis *r;
    am2z_status st = AM2Z_STATUS_OK;
    if (out) *out = NULL;
    if (!q || !am2z__qname_ok(session_id)) return am2z__qstate_bad(q, session_id);
    if (!(r = am2z__qborrow(q, &st))) return st;
    st = am2z__qstate_read(q, r, session_id, out, version);
    am2z_redis_pool_put(q->pool, r);
    return st;
}

AM2Z_API am2z_status am2z_queue_state_set(am2z_runtime *rt, const char *session_id, const am2z_state *state,
                                          int64_t ttl_ms, int64_t *version) {
    am2z__qrt *q = am2z__qof(rt);
    am2z_redis *r;
    am2z_status st = AM2Z_STATUS_OK;
    if (!q || !am2z__qname_ok(session_id)) return am2z__qstate_bad(q, session_id);
    if (am2z_value_type(state) != AM2Z_TYPE_OBJECT)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "state '%s': not an object", session_id);
    if (!(r = am2z__qborrow(q, &st))) return st;
    st = am2z__qstate_write(q, r, session_id, state, ttl_ms, -1, version);
    am2z_redis_pool_put(q->pool, r);
    return st;
}

AM2Z_API am2z_status am2z_queue_state_update(am2z_runtime *rt, const char *session_id, am2z_state_update_fn fn,
                                             void *user_data, int64_t ttl_ms, am2z_state **out, int64_t *version) {
    am2z__qrt *q = am2z__qof(rt);
    am2z_redis *r;
    am2z_status st = AM2Z_STATUS_OK;
    int round;
    if (out) *out = NULL;
    if (!q || !am2z__qname_ok(session_id)) return am2z__qstate_bad(q, session_id);
    if (!fn) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "state '%s': no update function", session_id);
    if (!(r = am2z__qborrow(q, &st))) return st;
    for (round = 0; round < AM2Z_QUEUE_STATE_RETRIES; round++) {
        am2z_state *cur = NULL, *next;
        int64_t ver = 0;
        st = am2z__qstate_read(q, r, session_id, &cur, &ver);
        if (st == AM2Z_STATUS_NOT_FOUND) { st = AM2Z_STATUS_OK; ver = 0; }
        if (st != AM2Z_STATUS_OK) break;
        next = fn(cur, user_data);
        am2z_value_release(cur);
        if (!next) {
            st = am2z__fail(AM2Z_STATUS_CANCELLED, AM2Z_NTS, "state '%s': the update function gave up", session_id);
            break;
        }
        st = am2z__qstate_write(q, r, session_id, next, ttl_ms, ver, version);
        if (st == AM2Z_STATUS_CONFLICT) { am2z_value_release(next); continue; }
        if (st == AM2Z_STATUS_OK && out) *out = next;
        else am2z_value_release(next);
        break;
    }
    if (round == AM2Z_QUEUE_STATE_RETRIES)
        st = am2z__fail(AM2Z_STATUS_CONFLICT, AM2Z_NTS,
                        "state '%s': not updated after %d rounds due to concurrent modifications", session_id,
                        AM2Z_QUEUE_STATE_RETRIES);
    am2z_redis_pool_put(q->pool, r);
    return st;
}

AM2Z_API am2z_status am2z_queue_state_delete(am2z_runtime *rt, const char *session_id) {
    am2z__qrt *q = am2z__qof(rt);
    am2z_redis *r;
    am2z_reply rep = am2z__qrep0();
    am2z_status st = AM2Z_STATUS_OK;
    if (!q || !am2z__qname_ok(session_id)) return am2z__qstate_bad(q, session_id);
    if (!(r = am2z__qborrow(q, &st))) return st;
    st = am2z_redis_command(r, &rep, "DEL %sstate:%s", q->C, session_id);
    am2z_reply_clear(&rep);
    am2z_redis_pool_put(q->pool, r);
    return st;
}

/* ---- 4.10 schedules: BullMQ's job schedulers, each slot claimed once ---------------- */

#define AM2Z__QSCHED_BATCH 64 /* due schedules one tick claims; the rest on the next tick */
#define AM2Z__QSCHED_RETRY_MS 100 /* the timer's next try after Redis failed it */
#define AM2Z__QSCHED_WAKE_LEN 16 /* entries kept in <C>schedules:wake (timers need the last) */

/* The scripts; each starts with the library (num, busy, ready, wake). */
static const char *const am2z__qlua_sched_upsert[] = {
    "-- ARGV: C B id queue P next max, then the scheduler hash's field/value pairs.",
    "-- Creates or replaces schedule id (its old definition may be in another queue):",
    "-- returns 1 created, 2 replaced, -1 when max schedules exist already.",
    "local C, B, id, qn, P, nxt = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]",
    "local idx = C .. 'schedules'",
    "local old = redis.call('HGET', idx, id)",
    "if not old and redis.call('HLEN', idx) >= tonumber(ARGV[7]) then return -1 end",
    "if old then",
    "  redis.call('ZREM', B .. ':' .. old .. ':repeat', id)",
    "  redis.call('DEL', B .. ':' .. old .. ':repeat:' .. id)",
    "end",
    "redis.call('HSET', idx, id, qn)",
    "redis.call('ZADD', C .. 'schedules:due', nxt, id)",
    "redis.call('ZADD', P .. 'repeat', nxt, id)",
    "redis.call('HSET', P .. 'repeat:' .. id, unpack(ARGV, 8))",
    "if old then return 2 end",
    "return 1",
    NULL
};
static const char *const am2z__qlua_sched_remove[] = {
    "-- ARGV: C B id [gone]: returns 1, or 0 when there is no such schedule. With gone '1'",
    "-- only a schedule whose scheduler hash was deleted by another client (Bull Board).",
    "local idx = ARGV[1] .. 'schedules'",
    "local old = redis.call('HGET', idx, ARGV[3])",
    "if not old then return 0 end",
    "if ARGV[4] == '1' and redis.call('EXISTS', ARGV[2] .. ':' .. old .. ':repeat:' .. ARGV[3]) == 1 then return 0 end",
    "redis.call('HDEL', idx, ARGV[3])",
    "redis.call('ZREM', ARGV[1] .. 'schedules:due', ARGV[3])",
    "redis.call('ZREM', ARGV[2] .. ':' .. old .. ':repeat', ARGV[3])",
    "redis.call('DEL', ARGV[2] .. ':' .. old .. ':repeat:' .. ARGV[3])",
    "return 1",
    NULL
};
static const char *const am2z__qlua_sched_claim[] = {
    "-- ARGV: C P id version slot next now events wakekey wakemember sessionqueues queue",
    "--       sessions sid priority name data opts",
    "-- Claims slot of schedule id if it is still the schedule's next slot under that version",
    "-- (the compare-and-set that makes each slot run once, whoever else claims it): adds the",
    "-- job repeat:<id>:<slot> to wait unless it exists, counts the run (ic) and moves the",
    "-- schedule to next (0: done, deleted). Returns 1 (job added), 2 (it existed), 0 (not ours).",
    "local C, P, id, slot, nxt, now = ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7]",
    "local hk = P .. 'repeat:' .. id",
    "local sc = redis.call('ZSCORE', C .. 'schedules:due', id)",
    "if not sc or tonumber(sc) ~= tonumber(slot) or redis.call('HGET', hk, 'am2z.v') ~= ARGV[4] then return 0 end",
    "local jid = 'repeat:' .. id .. ':' .. slot",
    "local out = 2",
    "if redis.call('EXISTS', P .. jid) == 0 then",
    "  redis.call('HSET', P .. jid, 'name', ARGV[16], 'data', ARGV[17], 'opts', ARGV[18], 'timestamp', now,",
    "             'delay', 0, 'priority', ARGV[15], 'rjk', id)",
    "  local m = redis.call('HMGET', P .. 'meta', 'paused', 'opts.maxLenEvents')",
    "  if not m[2] then redis.call('HSET', P .. 'meta', 'opts.maxLenEvents', 10000) end",
    "  busy(P, ARGV[8], 'added', 'jobId', jid, 'name', ARGV[16])",
    "  if ARGV[11] ~= '' then",
    "    redis.call('SADD', ARGV[11], ARGV[12])",
    "    redis.call('SADD', ARGV[13], ARGV[14])",
    "  end",
    "  ready(P, jid, tonumber(ARGV[15]))",
    "  busy(P, ARGV[8], 'waiting', 'jobId', jid)",
    "  if not m[1] then wake(P, ARGV[9], ARGV[10]) end",
    "  out = 1",
    "end",
    "if nxt == '0' then",
    "  redis.call('HDEL', C .. 'schedules', id)",
    "  redis.call('ZREM', C .. 'schedules:due', id)",
    "  redis.call('ZREM', P .. 'repeat', id)",
    "  redis.call('DEL', hk)",
    "else",
    "  redis.call('HINCRBY', hk, 'ic', 1)",
    "  redis.call('ZADD', C .. 'schedules:due', nxt, id)",
    "  redis.call('ZADD', P .. 'repeat', nxt, id)",
    "end",
    "return out",
    NULL
};

/* The three scripts, made on first use (a producer upserts without ever starting a
   timer); 0 when memory ran out. */
static int am2z__qsched_scripts(am2z__qrt *q) {
    static const char *const *const bodies[3] = {am2z__qlua_sched_upsert, am2z__qlua_sched_remove, am2z__qlua_sched_claim};
    int i;
    for (i = 0; i < 3; i++) {
        am2z_redis_script *none = NULL, *s;
        if (am2z__atomic_load(&q->s_sched[i], AM2Z__MO_ACQUIRE)) continue;
        if (!(s = am2z__qscript(bodies[i]))) return 0;
        if (!am2z__atomic_cas(&q->s_sched[i], &none, s, AM2Z__MO_ACQ_REL, AM2Z__MO_ACQUIRE)) am2z_redis_script_free(s);
    }
    return 1;
}

/* The global queue for session "default", else the session's (retained; NULL: memory). */
static am2z__qqueue *am2z__qsched_queue(am2z__qrt *q, const char *proc, const char *session) {
    return am2z__qqueue_get(q, proc, session && strcmp(session, "default") != 0 ? session : NULL, 0);
}

static am2z_status am2z__qsched_fail(am2z_status st, const char *id, const char *what) {
    return am2z__fail(st, AM2Z_NTS, "schedule '%s': %s (%s)", id, what, am2z_status_detail());
}

/* Ends the timers' waits in every process (am2z__qsched_wait) after an upsert or remove.
   Best effort: a timer that misses it looks again within AM2Z_QUEUE_SCHEDULE_POLL_MS. */
static void am2z__qsched_wake(am2z__qrt *q, am2z_redis *r) {
    am2z_reply rep = am2z__qrep0();
    if (am2z_redis_command(r, &rep, "XADD %s%s MAXLEN %d * w 1", q->C, "schedules:wake", AM2Z__QSCHED_WAKE_LEN) !=
        AM2Z_STATUS_OK)
        am2z_log_warn(q->logger, "queue runtime: schedules: waking the other processes' timers failed (%s): they "
                      "see the change within AM2Z_QUEUE_SCHEDULE_POLL_MS", am2z_status_detail());
    am2z_reply_clear(&rep);
}

static am2z_status am2z__qop_schedule_upsert(am2z_runtime *rt, const am2z_schedule_desc *d) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    am2z__qset set;
    am2z__sched s;
    am2z__qqueue *qu;
    am2z_reply rep = am2z__qrep0();
    am2z_redis *r;
    char *data, ver[AM2Z_EXECUTION_ID_SIZE], next_s[24], max_s[24], start_s[24], end_s[24], limit_s[24], every_s[24];
    const char *argv[32];
    size_t argc = 0;
    am2z_status st;
    if (strlen(d->id) > AM2Z_QUEUE_SCHEDULE_ID_MAX)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "schedule '%s': the queue runtime takes ids of up to %d bytes (its job ids are "
                          "repeat:<id>:<slot>, and execution ids %d)", d->id, AM2Z_QUEUE_SCHEDULE_ID_MAX,
                          AM2Z_EXECUTION_ID_SIZE - 1);
    if (!am2z__qname_ok(d->processor) || am2z__qsettings(q, d->processor, &set) != AM2Z_STATUS_OK)
        return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS,
                          "schedule '%s': processor '%s' is neither registered nor declared here (or has no "
                          "published settings)", d->id, d->processor);
    if (d->session_id && !am2z__qname_ok(d->session_id))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule '%s': bad session id", d->id);
    if ((st = am2z__sched_init(&s, d, am2z_now_ms())) != AM2Z_STATUS_OK) return st;
    if (!am2z__qsched_scripts(q) || !(qu = am2z__qsched_queue(q, d->processor, d->session_id)))
        return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "schedule '%s': out of memory", d->id);
    if (!(data = am2z_json_write(d->input, AM2Z_JSON_COMPACT, NULL))) {
        am2z__qqueue_release(qu);
        return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "schedule '%s': out of memory", d->id);
    }
    am2z_execution_id_generate("v", ver); /* this definition's version: claims check it */
    snprintf(next_s, sizeof next_s, "%lld", (long long)s.next_at);
    snprintf(max_s, sizeof max_s, "%d", AM2Z_SCHEDULE_MAX);
    argv[argc++] = q->C; argv[argc++] = q->bull; argv[argc++] = d->id; argv[argc++] = qu->name;
    argv[argc++] = qu->P; argv[argc++] = next_s; argv[argc++] = max_s;
    /* BullMQ's scheduler hash (name, every | pattern + tz, startDate, endDate, limit, ic,
       data, opts), and am2z's own fields */
    argv[argc++] = "name"; argv[argc++] = d->processor;
    if (d->every_ms) {
        snprintf(every_s, sizeof every_s, "%lld", (long long)d->every_ms);
        argv[argc++] = "every"; argv[argc++] = every_s;
    } else {
        argv[argc++] = "pattern"; argv[argc++] = d->cron;
        argv[argc++] = "tz"; argv[argc++] = "UTC";
    }
    if (d->start_at) {
        snprintf(start_s, sizeof start_s, "%lld", (long long)d->start_at);
        argv[argc++] = "startDate"; argv[argc++] = start_s;
    }
    if (d->end_at) {
        snprintf(end_s, sizeof end_s, "%lld", (long long)d->end_at);
        argv[argc++] = "endDate"; argv[argc++] = end_s;
    }
    if (d->limit) {
        snprintf(limit_s, sizeof limit_s, "%lld", (long long)d->limit);
        argv[argc++] = "limit"; argv[argc++] = limit_s;
    }
    argv[argc++] = "ic"; argv[argc++] = "0";
    argv[argc++] = "data"; argv[argc++] = data;
    argv[argc++] = "opts"; argv[argc++] = "{}";
    argv[argc++] = "am2z.sessionId"; argv[argc++] = s.session;
    argv[argc++] = "am2z.v"; argv[argc++] = ver;
    if (!(r = am2z__qborrow(q, &st))) {
        st = am2z__qsched_fail(AM2Z_STATUS_IO, d->id, "no Redis connection");
    } else {
        st = am2z__qeval(r, &rep, am2z__atomic_load(&q->s_sched[0], AM2Z__MO_ACQUIRE), argc, argv, NULL);
        if (st == AM2Z_STATUS_OK) am2z__qsched_wake(q, r);
        am2z_redis_pool_put(q->pool, r);
        if (st != AM2Z_STATUS_OK) st = am2z__qsched_fail(st, d->id, "Redis refused the upsert");
        else if (rep.type == AM2Z_REPLY_INTEGER && rep.integer == -1)
            st = am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "schedule '%s': %d schedules exist already (AM2Z_SCHEDULE_MAX)",
                            d->id, AM2Z_SCHEDULE_MAX);
    }
    am2z_reply_clear(&rep);
    am2z_free(data);
    am2z__qqueue_release(qu);
    if (st == AM2Z_STATUS_OK && q->sched_timer) am2z__sched_timer_kick(q->sched_timer);
    return st;
}

static am2z_status am2z__qop_schedule_remove(am2z_runtime *rt, const char *id) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    am2z_reply rep = am2z__qrep0();
    const char *argv[3];
    am2z_redis *r;
    am2z_status st;
    if (!am2z__qsched_scripts(q)) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "schedule '%s': out of memory", id);
    if (!(r = am2z__qborrow(q, &st))) return am2z__qsched_fail(AM2Z_STATUS_IO, id, "no Redis connection");
    argv[0] = q->C; argv[1] = q->bull; argv[2] = id;
    st = am2z__qeval(r, &rep, am2z__atomic_load(&q->s_sched[1], AM2Z__MO_ACQUIRE), 3, argv, NULL);
    if (st == AM2Z_STATUS_OK) am2z__qsched_wake(q, r);
    am2z_redis_pool_put(q->pool, r);
    if (st != AM2Z_STATUS_OK) st = am2z__qsched_fail(st, id, "Redis refused the remove");
    else if (rep.type != AM2Z_REPLY_INTEGER || rep.integer != 1)
        st = am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "schedule '%s': no such schedule", id);
    am2z_reply_clear(&rep);
    return st;
}

/* Schedule id as stored in Redis: its scheduler hash (HGETALL of B:<queue>:repeat:<id>)
   into *s, the processor's name, the definition's version and its data (borrowed from
   rep); 0 when the hash is gone or broken. */
static int am2z__qsched_read(const am2z_reply *rep, const char *id, am2z__sched *s, const char **ver,
                             const char **data, size_t *datan) {
    size_t i, n;
    memset(s, 0, sizeof *s);
    *ver = *data = NULL;
    snprintf(s->id, sizeof s->id, "%s", id);
    snprintf(s->session, sizeof s->session, "default");
    for (i = 0; rep->type == AM2Z_REPLY_ARRAY && i + 1 < rep->len; i += 2) {
        const char *k = am2z__qel(rep, i, NULL), *v = am2z__qel(rep, i + 1, &n);
        if (!k || !v) continue;
        if (!strcmp(k, "name")) snprintf(s->processor, sizeof s->processor, "%s", v);
        else if (!strcmp(k, "every")) s->every_ms = am2z__qnum(v, n, 0, AM2Z__QMAX_MS, 0);
        else if (!strcmp(k, "pattern")) {
            snprintf(s->cron_text, sizeof s->cron_text, "%s", v);
            if (am2z_cron_parse(v, n, &s->cron) != AM2Z_STATUS_OK) return 0;
        } else if (!strcmp(k, "startDate")) s->start_at = am2z__qnum(v, n, 0, AM2Z__QMAX_MS, 0);
        else if (!strcmp(k, "endDate")) s->end_at = am2z__qnum(v, n, 0, AM2Z__QMAX_MS, 0);
        else if (!strcmp(k, "limit")) s->limit = am2z__qnum(v, n, 0, INT64_MAX, 0);
        else if (!strcmp(k, "ic")) s->runs = am2z__qnum(v, n, 0, INT64_MAX, 0);
        else if (!strcmp(k, "am2z.sessionId") && am2z__qname_ok(v)) snprintf(s->session, sizeof s->session, "%s", v);
        else if (!strcmp(k, "am2z.v")) *ver = v;
        else if (!strcmp(k, "data")) { *data = v; *datan = n; }
    }
    /* every_ms schedules of other clients may be shorter: not ours to run */
    return s->processor[0] && *ver && *data && (s->cron_text[0] || s->every_ms >= AM2Z_SCHEDULE_MIN_EVERY_MS);
}

/* Claims slot (due at now) of schedule id for this process, if nobody did. */
static void am2z__qsched_claim_one(am2z__qrt *q, am2z_redis *r, const char *id, int64_t slot, int64_t now) {
    am2z_reply rep = am2z__qrep0(), hrep = am2z__qrep0(), crep = am2z__qrep0(); /* hrep: ver, data */
    am2z__sched s;
    am2z__qset set;
    am2z__qqueue *qu = NULL;
    am2z__qsb env = am2z__qsb0(), opts = am2z__qsb0();
    const char *qn, *ver, *data, *argv[18];
    char jid[AM2Z_EXECUTION_ID_SIZE], slot_s[24], next_s[24], now_s[24], prio_s[24];
    size_t datan = 0, lens[18], i;
    int64_t deadline;
    int prio;
    if (am2z_redis_command(r, &rep, "HGET %s%s %s", q->C, "schedules", id) != AM2Z_STATUS_OK ||
        rep.type != AM2Z_REPLY_BULK || !(qn = am2z_reply_str(&rep)) || strchr(qn, ':'))
        goto done;
    if (am2z_redis_command(r, &hrep, "HGETALL %s:%s:repeat:%s", q->bull, qn, id) != AM2Z_STATUS_OK) goto done;
    if (hrep.type == AM2Z_REPLY_ARRAY && hrep.len == 0) { /* removed by another client: forget it */
        const char *gone[4];
        gone[0] = q->C; gone[1] = q->bull; gone[2] = id; gone[3] = "1";
        am2z__qeval(r, &crep, am2z__atomic_load(&q->s_sched[1], AM2Z__MO_ACQUIRE), 4, gone, NULL);
        goto done;
    }
    if (!am2z__qsched_read(&hrep, id, &s, &ver, &data, &datan)) goto done;
    /* a processor this process neither registered nor declared: its settings (the
       deadline) are unknown here; a process that knows it claims the slot */
    if (am2z__qsettings(q, s.processor, &set) != AM2Z_STATUS_OK) goto done;
    if (!(qu = am2z__qsched_queue(q, s.processor, s.session)) || strcmp(qu->name, qn) != 0) goto done;
    s.next_at = slot;
    am2z__sched_claim(&s, now);
    snprintf(jid, sizeof jid, "repeat:%s:%lld", id, (long long)slot);
    deadline = am2z__qsat(now, am2z__qbudget(q, &set));
    /* the job: an am2z envelope without a caller (detached), as am2z__qadd_prep writes one */
    am2z__qsb_str(&env, "{\"am2z\":1,\"processorName\":");
    am2z__qsb_jstr(&env, s.processor);
    am2z__qsb_str(&env, ",\"executionId\":");
    am2z__qsb_jstr(&env, jid);
    am2z__qsb_str(&env, ",\"sessionId\":");
    am2z__qsb_jstr(&env, s.session);
    am2z__qsb_str(&env, ",\"callDepth\":0,\"deadline\":");
    am2z__qsb_i64(&env, deadline);
    am2z__qsb_str(&env, ",\"timeoutMs\":");
    am2z__qsb_i64(&env, set.timeout_ms > 0 ? set.timeout_ms : q->default_timeout_ms);
    am2z__qsb_str(&env, ",\"state\":");
    am2z__qsb_put(&env, data, datan);
    am2z__qsb_str(&env, "}");
    prio = set.priority > 0 ? (set.priority > 2097151 ? 2097151 : set.priority) : 0;
    am2z__qsb_str(&opts, "{\"attempts\":");
    am2z__qsb_i64(&opts, set.retry.max_attempts > 0 ? set.retry.max_attempts : 1);
    am2z__qsb_str(&opts, ",\"backoff\":");
    am2z__qsb_backoff(&opts, &set.retry);
    am2z__qsb_str(&opts, ",\"priority\":");
    am2z__qsb_i64(&opts, prio);
    am2z__qsb_str(&opts, ",\"jobId\":");
    am2z__qsb_jstr(&opts, jid);
    am2z__qsb_str(&opts, ",\"repeatJobKey\":");
    am2z__qsb_jstr(&opts, id);
    am2z__qsb_str(&opts, ",\"removeOnComplete\":");
    am2z__qkeep_json(&opts, q->keep_c, q->keep_c_age);
    am2z__qsb_str(&opts, ",\"removeOnFail\":");
    am2z__qkeep_json(&opts, q->keep_f, q->keep_f_age);
    am2z__qsb_str(&opts, "}");
    if (env.bad || opts.bad) goto done;
    snprintf(slot_s, sizeof slot_s, "%lld", (long long)slot);
    snprintf(next_s, sizeof next_s, "%lld", (long long)s.next_at);
    snprintf(now_s, sizeof now_s, "%lld", (long long)now);
    snprintf(prio_s, sizeof prio_s, "%d", prio);
    argv[0] = q->C; argv[1] = qu->P; argv[2] = id; argv[3] = ver; argv[4] = slot_s; argv[5] = next_s;
    argv[6] = now_s; argv[7] = am2z__qev_level(q, qu); argv[8] = qu->wk; argv[9] = qu->wm; argv[10] = qu->sset;
    argv[11] = qu->name; argv[12] = qu->session ? q->sessions_key : ""; argv[13] = qu->session ? qu->session : "";
    argv[14] = prio_s; argv[15] = s.processor; argv[16] = env.p; argv[17] = opts.p;
    for (i = 0; i < 18; i++) lens[i] = strlen(argv[i]);
    lens[16] = env.n;
    lens[17] = opts.n;
    if (am2z__qeval(r, &crep, am2z__atomic_load(&q->s_sched[2], AM2Z__MO_ACQUIRE), 18, argv, lens) != AM2Z_STATUS_OK)
        am2z_log_warn(q->logger, "queue runtime: schedule '%s': claiming slot %lld failed: %s", id, (long long)slot,
                      crep.type == AM2Z_REPLY_ERROR ? am2z_reply_str(&crep) : am2z_status_detail());
done:
    am2z__qsb_free(&env);
    am2z__qsb_free(&opts);
    am2z__qqueue_release(qu);
    am2z_reply_clear(&rep);
    am2z_reply_clear(&hrep);
    am2z_reply_clear(&crep);
}

/* The id of the last entry of <C>schedules:wake ("0-0": none) into q->sched_cursor, so
   the timer's first wait sees every wake-up after its first look at the schedules. */
static int am2z__qsched_cursor(am2z__qrt *q, am2z_redis *r) {
    am2z_reply rep = am2z__qrep0();
    const char *id;
    size_t n = 0;
    int ok = am2z_redis_command(r, &rep, "XREVRANGE %s%s + - COUNT 1", q->C, "schedules:wake") == AM2Z_STATUS_OK &&
             rep.type == AM2Z_REPLY_ARRAY;
    if (ok) {
        id = am2z__qel(am2z_reply_at(&rep, 0), 0, &n);
        snprintf(q->sched_cursor, sizeof q->sched_cursor, "%s", id && n < sizeof q->sched_cursor ? id : "0-0");
    }
    am2z_reply_clear(&rep);
    return ok;
}

/* Waits in Redis up to wait_ms for an entry of <C>schedules:wake after the cursor (an
   upsert or remove in any process), or until stop cuts the wait; 0 when Redis failed. */
static int am2z__qsched_wait(am2z__qrt *q, am2z_redis *r, int64_t wait_ms) {
    am2z_reply rep = am2z__qrep0();
    const am2z_reply *entries = NULL;
    char blk[24], cnt[16], key[512];
    const char *argv[8];
    am2z_status st;
    snprintf(blk, sizeof blk, "%lld", (long long)wait_ms);
    snprintf(cnt, sizeof cnt, "%d", AM2Z__QSCHED_WAKE_LEN);
    if ((size_t)snprintf(key, sizeof key, "%s%s", q->C, "schedules:wake") >= sizeof key) return 0;
    argv[0] = "XREAD"; argv[1] = "COUNT"; argv[2] = cnt; argv[3] = "BLOCK"; argv[4] = blk;
    argv[5] = "STREAMS"; argv[6] = key; argv[7] = q->sched_cursor;
    if (!am2z__qguard_enter(q, &q->sguard, r)) return 1; /* stopping */
    st = am2z_redis_blocking_argv(r, &rep, wait_ms + 5000, 8, argv, NULL);
    am2z__qguard_leave(q, &q->sguard);
    /* RESP2: [[key, entries]]; RESP3: {key: entries}. An entry is [id, [field, value]]. */
    if (rep.type == AM2Z_REPLY_MAP) entries = am2z_reply_at(&rep, 1);
    else if (rep.type == AM2Z_REPLY_ARRAY) entries = am2z_reply_at(am2z_reply_at(&rep, 0), 1);
    if (entries && entries->len > 0) {
        size_t n = 0;
        const char *id = am2z__qel(am2z_reply_at(entries, entries->len - 1), 0, &n);
        if (id && n < sizeof q->sched_cursor) snprintf(q->sched_cursor, sizeof q->sched_cursor, "%s", id);
    }
    am2z_reply_clear(&rep);
    return st == AM2Z_STATUS_OK;
}

/* The timer's tick (processes with workers), on the timer's own connection: claims every
   due slot, then waits in Redis until the earliest next slot, at most
   AM2Z_QUEUE_SCHEDULE_POLL_MS, or until a wake-up (am2z__qsched_wake); returns now (tick
   again at once), or 0 when Redis failed (the timer retries after AM2Z__QSCHED_RETRY_MS). */
static int64_t am2z__qsched_tick(void *user_data, int64_t now) {
    am2z__qrt *q = (am2z__qrt *)user_data;
    am2z_reply rep = am2z__qrep0();
    am2z_redis *r = q->sconn;
    int64_t next = 0, wait_ms;
    size_t i, claimed = 0;
    int ok;
    if (!am2z__atomic_load(&q->running, AM2Z__MO_ACQUIRE) || !am2z__qsched_scripts(q) || !r || !am2z__qensure(q, r) ||
        (!q->sched_cursor[0] && !am2z__qsched_cursor(q, r)))
        return 0;
    ok = am2z_redis_command(r, &rep, "ZRANGEBYSCORE %s%s -inf %lld WITHSCORES LIMIT 0 %d", q->C, "schedules:due",
                            (long long)now, AM2Z__QSCHED_BATCH) == AM2Z_STATUS_OK;
    for (i = 0; ok && rep.type == AM2Z_REPLY_ARRAY && i + 1 < rep.len; i += 2) {
        const char *id = am2z__qel(&rep, i, NULL);
        int64_t slot = am2z__qel_num(&rep, i + 1, 0, AM2Z__QMAX_MS, 0);
        if (id && slot > 0 && am2z__sched_id_ok(id)) am2z__qsched_claim_one(q, r, id, slot, now);
        claimed++;
    }
    am2z_reply_clear(&rep);
    if (!ok || !am2z_redis_is_connected(r)) return 0; /* a claim lost the connection: retry soon */
    if (claimed == AM2Z__QSCHED_BATCH) return now;     /* more than a batch due: go on at once */
    /* the next slot after now: a due schedule this process cannot claim (an unknown
       processor) is looked at again at the next wake-up, not in a busy loop */
    if (am2z_redis_command(r, &rep, "ZRANGEBYSCORE %s%s (%lld +inf WITHSCORES LIMIT 0 1", q->C, "schedules:due",
                           (long long)now) != AM2Z_STATUS_OK) {
        am2z_reply_clear(&rep);
        return 0;
    }
    next = am2z__qel_num(&rep, 1, 0, AM2Z__QMAX_MS, 0);
    am2z_reply_clear(&rep);
    wait_ms = next ? next - am2z_now_ms() : AM2Z_QUEUE_SCHEDULE_POLL_MS;
    if (wait_ms > AM2Z_QUEUE_SCHEDULE_POLL_MS) wait_ms = AM2Z_QUEUE_SCHEDULE_POLL_MS;
    if (wait_ms > 0 && !am2z__qsched_wait(q, r, wait_ms)) return 0;
    return now;
}

/* Starts the timer of a process with workers (from start); stop ends it. */
static void am2z__qsched_start(am2z__qrt *q) {
    am2z__qguard_init(&q->sguard); /* stop cuts it, timer or not */
    if (q->nworkers <= 0) return;
    if (!q->sconn) q->sconn = am2z__qconn(q, "schedules");
    if (!q->sched_timer) q->sched_timer = am2z__sched_timer_new(am2z__qsched_tick, q, AM2Z__QSCHED_RETRY_MS);
    if (!q->sconn || !q->sched_timer || am2z__sched_timer_start(q->sched_timer) != AM2Z_STATUS_OK)
        am2z_log_error(q->logger, "queue runtime: no thread for schedules: this process claims no slots");
}

static int am2z__qsched_cmp(const void *a, const void *b) {
    return strcmp(am2z_value_get_string(*(const am2z_value *const *)a, "id", ""),
                  am2z_value_get_string(*(const am2z_value *const *)b, "id", ""));
}

static am2z_value *am2z__qop_schedule_list(am2z_runtime *rt) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    am2z_reply idx = am2z__qrep0(), rep = am2z__qrep0();
    am2z_value **items = NULL, *out = NULL;
    am2z_redis *r;
    am2z_status st;
    size_t i, n = 0;
    if (!(r = am2z__qborrow(q, &st))) {
        am2z__fail(AM2Z_STATUS_IO, AM2Z_NTS, "schedule_list: no Redis connection (%s)", am2z_status_detail());
        return NULL;
    }
    if ((st = am2z_redis_command(r, &idx, "HGETALL %s%s", q->C, "schedules")) != AM2Z_STATUS_OK) {
        am2z_redis_pool_put(q->pool, r);
        am2z__fail(st, AM2Z_NTS, "schedule_list: %s", am2z_status_detail());
        return NULL;
    }
    items = (am2z_value **)am2z__malloc((idx.len / 2 + 1) * sizeof *items);
    for (i = 0; items && i + 1 < idx.len; i += 2) {
        const char *id = am2z__qel(&idx, i, NULL), *qn = am2z__qel(&idx, i + 1, NULL), *ver, *data;
        am2z__sched s;
        size_t datan;
        if (!id || !qn || !am2z__sched_id_ok(id)) continue;
        if (am2z_redis_command(r, &rep, "HGETALL %s:%s:repeat:%s", q->bull, qn, id) == AM2Z_STATUS_OK &&
            am2z__qsched_read(&rep, id, &s, &ver, &data, &datan)) {
            am2z_reply_clear(&rep);
            if (am2z_redis_command(r, &rep, "ZSCORE %s%s %s", q->C, "schedules:due", id) == AM2Z_STATUS_OK)
                s.next_at = am2z__qnum(am2z_reply_str(&rep), rep.len, 0, AM2Z__QMAX_MS, 0);
            if ((items[n] = am2z__sched_json(&s)) != NULL) n++;
        }
        am2z_reply_clear(&rep);
    }
    am2z_redis_pool_put(q->pool, r);
    am2z_reply_clear(&idx);
    if (items) {
        qsort(items, n, sizeof *items, am2z__qsched_cmp);
        out = am2z_value_array();
        for (i = 0; i < n; i++) {
            if (out) out = am2z_value_append(out, "", items[i]);
            else am2z_value_release(items[i]);
        }
    }
    am2z__free(items);
    if (!out) am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "schedule_list: out of memory");
    return out;
}

#undef AM2Z__QMAGIC
#undef AM2Z__QMAX_WAIT_MS
/* ---- 4.11 durable executions: am2z.h 7d with its records in Redis ------------------- */
/* The mechanism is am2z.h 7d's (the thread-local scope am2z__chain_run reads, the
   records x/<id>/..., compensation progress, wait steps, the registry that refuses a
   second run of an id in this process); this part gives it a store in Redis and the
   three moves only a queue can make: the job of an execution, its park in the delayed
   set, and a signal that moves it back to wait.
   - Store: record "x/<id>/<rest>" is field <rest> of the hash <C>x:<id> (every key of a
     runtime starts with the bull prefix, the hash tag of a cluster: one slot with the
     jobs). A value is stored as the 64 hex digits of its SHA-256 and its bytes; a get
     that finds them disagreeing fails with AM2Z_STATUS_PROTOCOL naming the record.
   - Job: one per execution, id "<id cut to 28>-i-<32 hex of SHA-256(NUL-salted id)>",
     an idempotent job's shape, so the add script never adds it twice: a second submit
     joins the running job (its finish answers every caller), as an idempotency key
     does. Its data carries "durableId" and no deadline: a job recovered from a dead
     worker is run however late; each attempt keeps its timeout.
   - Worker: at depth 0 a job with "durableId" begins the run (claim in this process,
     start record written by the submit), runs under the root scope, and ends it: done
     record on the final outcome, nothing on a retry, a give-back or a lost lock (the
     next attempt continues from the checkpoints), a park when a wait step parked it.
   - Park: the park script moves the job active -> delayed with the wait's timeout as
     due time (no timeout: AM2Z_QUEUE_PARK_MAX_MS), unless a signal came while it ran
     (field am2zSig of the job hash), then -> wait at once. The callers get the
     "AM2Z_WAITING" outcome, as on the local runtime.
   - Signal / resume(id): the payload is stored first (am2z.h), then the wake script moves
     a delayed job to wait, or marks a running one (am2zSig). The job's queue is found
     from the start record (processor, queue session). */

typedef struct am2z__qstore { am2z__qrt *q; } am2z__qstore;

/* "x/<id>/<rest>" -> the hash key <C>x:<id> (hkey, cap bytes) and *field = <rest>. */
static am2z_status am2z__qstore_split(const am2z__qrt *q, const char *key, char *hkey, size_t cap,
                                      const char **field) {
    const char *id = key + 2, *slash;
    int n;
    if (strncmp(key, "x/", 2) != 0 || !(slash = strchr(id, '/')) || slash == id)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "redis store: key '%s' is not x/<id>/<name>", key);
    n = snprintf(hkey, cap, "%sx:%.*s", q->C, (int)(slash - id), id);
    if (n <= 0 || (size_t)n >= cap) return am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "redis store: key too long");
    *field = slash + 1;
    return AM2Z_STATUS_OK;
}

/* One command on a pooled connection; the status with a detail naming what and key. */
static am2z_status am2z__qstore_run(am2z__qrt *q, am2z_reply *rep, size_t argc, const char *const *argv,
                                    const size_t *lens, const char *what, const char *key) {
    am2z_status st;
    am2z_redis *r = am2z__qborrow(q, &st);
    if (!r) return am2z__fail(st, AM2Z_NTS, "redis store: %s '%s': no connection (%s)", what, key, am2z_status_string(st));
    st = am2z_redis_command_argv(r, rep, argc, argv, lens);
    am2z_redis_pool_put(q->pool, r);
    if (st != AM2Z_STATUS_OK)
        return am2z__fail(st, AM2Z_NTS, "redis store: %s '%s': %s", what, key,
                          rep->type == AM2Z_REPLY_ERROR ? am2z_reply_str(rep) : am2z_status_string(st));
    return AM2Z_STATUS_OK;
}

/* cmd ("HGET", "HDEL", or "HSET" with the value v of vlen bytes) on the hash field of
   record key. */
static am2z_status am2z__qstore_field(am2z__qrt *q, am2z_reply *rep, const char *cmd, const char *key,
                                      const char *v, size_t vlen, const char *what) {
    char hkey[AM2Z_STORE_MAX_KEY + 256];
    const char *argv[4];
    size_t lens[4];
    am2z_status st = am2z__qstore_split(q, key, hkey, sizeof hkey, &argv[2]);
    if (st != AM2Z_STATUS_OK) return st;
    argv[0] = cmd; argv[1] = hkey; argv[3] = v;
    lens[0] = strlen(cmd); lens[1] = strlen(hkey); lens[2] = strlen(argv[2]); lens[3] = vlen;
    return am2z__qstore_run(q, rep, v ? 4 : 3, argv, lens, what, key);
}

/* Script "dput": a record whose write also decides how long its execution's hash lives,
   both in one step so no hash is left with the wrong TTL. */
static const char *const am2z__qlua_dput[] = {
    "-- ARGV: hash field value keepms mode; returns 1 (written) or 0 (mode d or p, not written)",
    "-- d: the done record, only when there is none (the first outcome stays); the hash then",
    "--    expires after keepms (> 0)",
    "-- s: a signal; while the execution has not started (no start field) the hash expires",
    "--    after keepms, so a signal for an id that never starts does not stay forever",
    "-- p: the start record; the hash persists (an unfinished execution's records never expire).",
    "--    Not written once there is a done record: a submit that found neither record may",
    "--    write after a run in another process started and finished, and the finished",
    "--    execution must keep its TTL (its worker then ends the job with the outcome)",
    "if ARGV[5] == 'd' then",
    "  if redis.call('HSETNX', ARGV[1], ARGV[2], ARGV[3]) == 0 then return 0 end",
    "  if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', ARGV[1], ARGV[4]) end",
    "  return 1",
    "end",
    "if ARGV[5] == 'p' and redis.call('HEXISTS', ARGV[1], 'done') == 1 then return 0 end",
    "redis.call('HSET', ARGV[1], ARGV[2], ARGV[3])",
    "if ARGV[5] == 'p' then",
    "  redis.call('PERSIST', ARGV[1])",
    "elseif tonumber(ARGV[4]) > 0 and redis.call('HEXISTS', ARGV[1], 'start') == 0 then",
    "  redis.call('PEXPIRE', ARGV[1], ARGV[4])",
    "end",
    "return 1",
    NULL
};

/* The dput mode of record key ("x/<id>/<rest>"; ids hold no '/'): 'd' the done record,
   's' a signal ("s/<name>"), 'p' the start record, 0 any other (a plain HSET). */
static char am2z__qdx_put_mode(const char *key) {
    const char *slash = strncmp(key, "x/", 2) ? NULL : strchr(key + 2, '/');
    if (!slash) return 0;
    return !strcmp(slash, "/done") ? 'd' : !strncmp(slash, "/s/", 3) ? 's' : !strcmp(slash, "/start") ? 'p' : 0;
}

/* Record key with its stored value v (digest + bytes) through the dput script in mode
   ('d', 's' or 'p', above); *written (may be NULL) says whether it was written. */
static am2z_status am2z__qdx_put(am2z__qrt *q, const char *key, const char *v, size_t vlen, char mode,
                                 int *written) {
    char hkey[AM2Z_STORE_MAX_KEY + 256], keep[24], m[2];
    const char *argv[5];
    size_t lens[5], i;
    am2z_reply rep = am2z__qrep0();
    am2z_redis *r;
    am2z_status st = am2z__qstore_split(q, key, hkey, sizeof hkey, &argv[1]);
    if (written) *written = 0;
    if (st != AM2Z_STATUS_OK) return st;
    snprintf(keep, sizeof keep, "%lld", (long long)q->dx_keep_ms);
    m[0] = mode;
    m[1] = 0;
    argv[0] = hkey; argv[2] = v; argv[3] = keep; argv[4] = m;
    for (i = 0; i < 5; i++) lens[i] = i == 2 ? vlen : strlen(argv[i]); /* v: not NUL-terminated */
    if (!(r = am2z__qborrow(q, &st)))
        return am2z__fail(st, AM2Z_NTS, "redis store: write '%s': no connection (%s)", key, am2z_status_string(st));
    st = am2z__qeval(r, &rep, q->s_dput, 5, argv, lens);
    am2z_redis_pool_put(q->pool, r);
    if (st != AM2Z_STATUS_OK)
        st = am2z__fail(st, AM2Z_NTS, "redis store: write '%s': %s", key,
                        rep.type == AM2Z_REPLY_ERROR ? am2z_reply_str(&rep) : am2z_status_string(st));
    else if (written)
        *written = rep.type == AM2Z_REPLY_INTEGER && rep.integer == 1;
    am2z_reply_clear(&rep);
    return st;
}

static am2z_status am2z__qstore_put(void *ud, const char *key, const void *value, size_t len) {
    char *v = (char *)am2z__malloc(len + 2 * AM2Z_SHA256_SIZE + 1);
    am2z_reply rep = am2z__qrep0();
    am2z__qrt *q = ((am2z__qstore *)ud)->q;
    am2z_status st;
    if (!v) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "redis store: out of memory");
    am2z_sha256_hex(value, len, v); /* the digest first: a read checks the bytes after it */
    if (len) memcpy(v + 2 * AM2Z_SHA256_SIZE, value, len);
    if (am2z__qdx_put_mode(key)) /* the records that decide the hash's TTL (dput) */
        st = am2z__qdx_put(q, key, v, len + 2 * AM2Z_SHA256_SIZE, am2z__qdx_put_mode(key), NULL);
    else st = am2z__qstore_field(q, &rep, "HSET", key, v, len + 2 * AM2Z_SHA256_SIZE, "write");
    am2z__free(v);
    am2z_reply_clear(&rep);
    return st;
}

/* A stored value (digest + bytes) checked and copied into *value (NUL-terminated). */
static am2z_status am2z__qstore_value(const char *key, const char *s, size_t n, void **value, size_t *len) {
    char hex[2 * AM2Z_SHA256_SIZE + 1];
    char *out;
    if (n < 2 * AM2Z_SHA256_SIZE)
        return am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "redis store: record '%s' is too short to hold its digest", key);
    am2z_sha256_hex(s + 2 * AM2Z_SHA256_SIZE, n - 2 * AM2Z_SHA256_SIZE, hex);
    if (memcmp(hex, s, 2 * AM2Z_SHA256_SIZE) != 0)
        return am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "redis store: record '%s' does not match its SHA-256", key);
    n -= 2 * AM2Z_SHA256_SIZE;
    if (!(out = (char *)am2z__malloc(n + 1))) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "redis store: out of memory");
    if (n) memcpy(out, s + 2 * AM2Z_SHA256_SIZE, n);
    out[n] = '\0';
    *value = out;
    *len = n;
    return AM2Z_STATUS_OK;
}

static am2z_status am2z__qstore_get(void *ud, const char *key, void **value, size_t *len) {
    am2z_reply rep = am2z__qrep0();
    am2z_status st = am2z__qstore_field(((am2z__qstore *)ud)->q, &rep, "HGET", key, NULL, 0, "read");
    *value = NULL;
    *len = 0;
    if (st == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_NIL) st = AM2Z_STATUS_NOT_FOUND;
    else if (st == AM2Z_STATUS_OK && rep.type != AM2Z_REPLY_BULK && rep.type != AM2Z_REPLY_STRING)
        st = am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "redis store: read '%s': not a string", key);
    else if (st == AM2Z_STATUS_OK) st = am2z__qstore_value(key, am2z_reply_str(&rep), rep.len, value, len);
    am2z_reply_clear(&rep);
    return st;
}

static am2z_status am2z__qstore_remove(void *ud, const char *key) {
    am2z_reply rep = am2z__qrep0();
    am2z_status st = am2z__qstore_field(((am2z__qstore *)ud)->q, &rep, "HDEL", key, NULL, 0, "remove");
    am2z_reply_clear(&rep);
    return st;
}

/* The records of one hash whose key starts with prefix, to fn. 1 when fn stopped. */
static int am2z__qstore_scan_hash(am2z__qrt *q, const char *hkey, const char *prefix, am2z_store_scan_fn fn,
                                  void *fn_data, am2z_status *st) {
    const char *argv[2];
    am2z_reply rep = am2z__qrep0();
    size_t i, cn = strlen(q->C) + 2;
    int stop = 0;
    argv[0] = "HGETALL"; argv[1] = hkey;
    *st = am2z__qstore_run(q, &rep, 2, argv, NULL, "scan", hkey);
    for (i = 0; *st == AM2Z_STATUS_OK && !stop && i + 1 < rep.len; i += 2) {
        size_t fl = 0, vl = 0;
        const char *f = am2z__qel(&rep, i, &fl), *v = am2z__qel(&rep, i + 1, &vl);
        char key[AM2Z_STORE_MAX_KEY + 1];
        void *val = NULL;
        size_t len = 0;
        int n;
        if (!f || !v) continue;
        n = snprintf(key, sizeof key, "x/%s/%.*s", hkey + cn, (int)fl, f);
        if (n <= 0 || (size_t)n >= sizeof key || strncmp(key, prefix, strlen(prefix)) != 0) continue;
        *st = am2z__qstore_value(key, v, vl, &val, &len);
        if (*st == AM2Z_STATUS_OK) stop = fn(key, val, len, fn_data);
        am2z__free(val);
    }
    am2z_reply_clear(&rep);
    return stop;
}

/* prefix "x/<id>/...": that execution's hash; otherwise every x:<id> hash (SCAN). */
static am2z_status am2z__qstore_scan(void *ud, const char *prefix, am2z_store_scan_fn fn, void *fn_data) {
    am2z__qrt *q = ((am2z__qstore *)ud)->q;
    char hkey[AM2Z_STORE_MAX_KEY + 256], cursor[32] = "0", *match;
    const char *field, *argv[6];
    am2z_status st = AM2Z_STATUS_OK;
    if (!prefix) prefix = "";
    if (strncmp(prefix, "x/", 2) == 0 && strchr(prefix + 2, '/')) {
        if ((st = am2z__qstore_split(q, prefix, hkey, sizeof hkey, &field)) != AM2Z_STATUS_OK) return st;
        am2z__qstore_scan_hash(q, hkey, prefix, fn, fn_data, &st);
        return st;
    }
    if (!(match = am2z__qcat(q->C, "x:*", NULL, NULL)))
        return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "redis store: out of memory");
    do {
        am2z_reply rep = am2z__qrep0();
        const am2z_reply *keys;
        size_t i, cl = 0;
        const char *c;
        int stop = 0;
        argv[0] = "SCAN"; argv[1] = cursor; argv[2] = "MATCH"; argv[3] = match; argv[4] = "COUNT"; argv[5] = "200";
        st = am2z__qstore_run(q, &rep, 6, argv, NULL, "scan", prefix);
        c = st == AM2Z_STATUS_OK ? am2z__qel(&rep, 0, &cl) : NULL;
        keys = am2z_reply_at(&rep, 1);
        if (st == AM2Z_STATUS_OK && (!c || cl >= sizeof cursor || !keys))
            st = am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "redis store: unexpected SCAN answer");
        if (st == AM2Z_STATUS_OK) snprintf(cursor, sizeof cursor, "%s", c);
        for (i = 0; st == AM2Z_STATUS_OK && !stop && keys && i < keys->len; i++) {
            size_t kl = 0;
            const char *k = am2z__qel(keys, i, &kl);
            if (k && kl < sizeof hkey) stop = am2z__qstore_scan_hash(q, k, prefix, fn, fn_data, &st);
        }
        am2z_reply_clear(&rep);
        if (stop) break;
    } while (st == AM2Z_STATUS_OK && strcmp(cursor, "0") != 0);
    am2z__free(match);
    return st;
}

static void am2z__qstore_close(void *ud) { am2z__free(ud); }

static const am2z_store_ops am2z__qstore_ops = {am2z__qstore_put, am2z__qstore_get, am2z__qstore_remove,
                                                am2z__qstore_scan, am2z__qstore_close};

/* Script "park": a durable job whose wait step parked it, active -> delayed until the
   wait's timeout, or -> wait when a signal came while it ran; answers its callers. */
static const char *const am2z__qlua_park[] = {
    "-- ARGV: P C id token now due events wakekey wakemember replykey replymsg replyttl:",
    "-- returns 1 (parked), 2 (signalled meanwhile: back in wait), -1 (no longer ours)",
    "local P, id = ARGV[1], ARGV[3]",
    "if not release(P, id, ARGV[4]) then return -1 end",
    "if ARGV[10] ~= '' then reply(ARGV[10], {ARGV[11]}, ARGV[12]) end",
    "if ARGV[11] ~= '' then callers(P, id, ARGV[11], ARGV[12]) end",
    "local paused = redis.call('HEXISTS', P .. 'meta', 'paused') == 1",
    "if redis.call('HDEL', P .. id, 'am2zSig') == 1 then",
    "  ready(P, id, int(redis.call('HGET', P .. id, 'priority'), 2097152) or 0)",
    "  if not paused then wake(P, ARGV[8], ARGV[9]) end",
    "  event(P, ARGV[7], 'waiting', 'jobId', id, 'prev', 'active')",
    "  return 2",
    "end",
    "local due = tonumber(ARGV[6])",
    "redis.call('HSET', P .. id, 'delay', num(due - tonumber(ARGV[5])))",
    "redis.call('ZADD', P .. 'delayed', num(due * 4096), id)",
    "if not paused then delaymark(P); freed(P, ARGV[8], ARGV[9]) end",
    "event(P, ARGV[7], 'delayed', 'jobId', id, 'delay', num(due))",
    "return 1",
    NULL
};
/* Script "wake": a signal for a durable job: delayed (parked) -> wait, or a running one
   marked (am2zSig) so its park goes back to wait. */
static const char *const am2z__qlua_wake[] = {
    "-- ARGV: P id events wakekey wakemember: returns 1 (moved to wait), 2 (marked), 0",
    "local P, id = ARGV[1], ARGV[2]",
    "if redis.call('EXISTS', P .. id) == 0 then return 0 end",
    "if redis.call('ZREM', P .. 'delayed', id) == 1 then",
    "  ready(P, id, int(redis.call('HGET', P .. id, 'priority'), 2097152) or 0)",
    "  redis.call('HSET', P .. id, 'delay', 0)",
    "  if redis.call('HEXISTS', P .. 'meta', 'paused') == 0 then wake(P, ARGV[4], ARGV[5]) end",
    "  event(P, ARGV[3], 'waiting', 'jobId', id, 'prev', 'delayed')",
    "  return 1",
    "end",
    "if redis.call('EXISTS', P .. id .. ':lock') == 1 then",
    "  redis.call('HSET', P .. id, 'am2zSig', 1)",
    "  return 2",
    "end",
    "return 0",
    NULL
};

/* The job id of durable execution id (see above): the same in every process. */
static void am2z__qdx_job_id(const char *id, char out[AM2Z_EXECUTION_ID_SIZE]) {
    static const char salt[] = "am2z durable"; /* with its NUL: no idempotency key hashes alike */
    am2z_sha256_ctx c;
    am2z_sha256_init(&c);
    am2z_sha256_update(&c, salt, sizeof salt);
    am2z_sha256_update(&c, id, strlen(id));
    am2z__qidem_shape(id, &c, out);
}

/* The wake hook of the registry (am2z.h 7d): the job of id, found through its start
   record, moved from delayed to wait (1) or marked while it runs (0). */
static int am2z__qdx_wake(am2z_runtime *rt, const char *id, am2z_status *st) {
    am2z__qrt *q = (am2z__qrt *)am2z_runtime_impl(rt);
    char key[AM2Z_STORE_MAX_KEY + 1], job[AM2Z_EXECUTION_ID_SIZE];
    am2z_value *rec = NULL;
    am2z__qqueue *qu = NULL;
    am2z_reply rep = am2z__qrep0();
    const char *proc, *qs, *argv[5];
    am2z_redis *r;
    int moved = 0;
    am2z__dur_key_of(key, id, "start");
    *st = am2z__dur_get_json(rt->dreg->store, key, &rec);
    if (*st == AM2Z_STATUS_NOT_FOUND) { /* not started yet: the payload waits for it */
        *st = AM2Z_STATUS_OK;
        return 0;
    }
    if (*st != AM2Z_STATUS_OK) return 0;
    proc = am2z_value_get_string(rec, "processor", "");
    qs = am2z_value_get_string(rec, "queueSession", "");
    if (!am2z__qname_ok(proc) || (*qs && !am2z__qname_ok(qs))) {
        *st = am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "durable execution '%s': corrupt start record", id);
    } else if (!(qu = am2z__qqueue_get(q, proc, *qs ? qs : NULL, 0))) {
        *st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "durable: out of memory");
    } else if ((r = am2z__qborrow(q, st)) != NULL) {
        am2z__qdx_job_id(id, job);
        argv[0] = qu->P; argv[1] = job; argv[2] = am2z__qev_level(q, qu); argv[3] = qu->wk; argv[4] = qu->wm;
        *st = am2z__qeval(r, &rep, q->s_dwake, 5, argv, NULL);
        am2z_redis_pool_put(q->pool, r);
        if (*st != AM2Z_STATUS_OK)
            *st = am2z__fail(*st, AM2Z_NTS, "durable execution '%s': moving its job on: %s", id,
                             rep.type == AM2Z_REPLY_ERROR ? am2z_reply_str(&rep) : am2z_status_string(*st));
        moved = *st == AM2Z_STATUS_OK && rep.type == AM2Z_REPLY_INTEGER && rep.integer == 1;
        if (moved) am2z__qnote_due(q, qu, am2z_now_ms());
    } else {
        *st = am2z__fail(*st, AM2Z_NTS, "durable execution '%s': no connection to Redis", id);
    }
    am2z_reply_clear(&rep);
    if (qu) am2z__qqueue_release(qu);
    am2z_value_release(rec);
    return moved;
}

/* The registry's resubmit (used only by its timer and local signals, which the wake
   hook replaces here): a wake. */
static am2z_status am2z__qdx_resubmit(am2z_runtime *rt, const char *id) {
    am2z_status st = AM2Z_STATUS_OK;
    am2z__qdx_wake(rt, id, &st);
    return st;
}

/* Made with the runtime: the store, the registry and the two scripts. 0: out of memory. */
static int am2z__qdx_init(am2z__qrt *q) {
    am2z__qstore *ud = (am2z__qstore *)am2z__malloc(sizeof *ud);
    if (!ud) return 0;
    ud->q = q;
    q->dx_store = am2z_store_new(&am2z__qstore_ops, ud, NULL);
    if (!q->dx_store) {
        am2z__free(ud);
        return 0;
    }
    q->s_park = am2z__qscript(am2z__qlua_park);
    q->s_dwake = am2z__qscript(am2z__qlua_wake);
    q->s_dput = am2z__qscript(am2z__qlua_dput);
    q->rt->dreg = am2z__dreg_new(q->rt, q->dx_store, am2z__qdx_resubmit);
    if (q->rt->dreg) q->rt->dreg->wake = am2z__qdx_wake;
    return q->s_park && q->s_dwake && q->s_dput && q->rt->dreg;
}

static void am2z__qdx_free(am2z__qrt *q) {
    if (q->rt) {
        am2z__dreg_free(q->rt->dreg);
        q->rt->dreg = NULL;
    }
    am2z_store_free(q->dx_store);
    am2z_redis_script_free(q->s_park);
    am2z_redis_script_free(q->s_dwake);
    am2z_redis_script_free(q->s_dput);
    q->dx_store = NULL;
    q->s_park = q->s_dwake = q->s_dput = NULL;
}

/* Submit side: the start record of execution id (written once: a second submit of a
   running id must name the same processor), refused when it has finished. */
static am2z_status am2z__qdx_start(am2z__qrt *q, const char *id, const char *proc, const am2z_state *input,
                                   const char *session) {
    am2z__dreg *g = q->rt->dreg;
    char key[AM2Z_STORE_MAX_KEY + 1];
    am2z_value *rec = NULL;
    am2z_status st;
    if (!g) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "durable: out of memory");
    if (!am2z__dur_id_ok(id))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "durable: execution_id '%s' is not 1..%d bytes of [A-Za-z0-9_.:-]", id, AM2Z_DURABLE_MAX_ID);
    am2z__dur_key_of(key, id, "done");
    st = am2z__dur_has(g->store, key);
    if (st == AM2Z_STATUS_OK)
        return am2z__fail(AM2Z_STATUS_EXISTS, AM2Z_NTS,
                          "durable execution '%s' has finished: am2z_runtime_durable_outcome reads its outcome", id);
    if (st != AM2Z_STATUS_NOT_FOUND) return st;
    am2z__dur_key_of(key, id, "start");
    st = am2z__dur_get_json(g->store, key, &rec);
    if (st == AM2Z_STATUS_OK) {
        const char *rn = am2z_value_get_string(rec, "processor", "");
        if (strcmp(rn, proc) != 0)
            st = am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "durable execution '%s' runs processor '%s', not '%s'",
                            id, rn, proc);
    } else if (st == AM2Z_STATUS_NOT_FOUND) {
        rec = am2z_value_set(am2z_value_object(), "processor", am2z_value_string(proc));
        rec = am2z_value_set(rec, "input", am2z_value_retain(input));
        rec = am2z_value_set(rec, "sessionId", am2z_value_string(session ? session : "default"));
        rec = am2z_value_set(rec, "queueSession", am2z_value_string(session ? session : ""));
        rec = am2z_value_set(rec, "startedAt", am2z_value_int(am2z_now_ms()));
        st = rec ? am2z__dur_put_json(g->store, key, rec) : AM2Z_STATUS_NO_MEMORY;
    }
    am2z_value_release(rec);
    return st;
}

/* Submit side: checks a durable desc, fills dd (its id generated into gen when it has
   none) and writes the start record. */
static am2z_status am2z__qdx_prep(am2z__qrt *q, const char *proc, const am2z_state *input, const am2z_submit_desc *desc,
                                  am2z_submit_desc *dd, char gen[AM2Z_EXECUTION_ID_SIZE]) {
    if (!desc->durable)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "submit '%s': execution_id is only for durable",
                          proc ? proc : "(null)");
    if (desc->idempotency_key || desc->trace) /* the key would pick the job id too; a resume is no trace root */
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "submit '%s': idempotency_key / trace are not supported with durable (queue runtime)",
                          proc ? proc : "(null)");
    if (!proc || !input) return am2z__submit_fail(AM2Z_STATUS_INVALID_ARGUMENT, proc, desc->session_id);
    if (!am2z__qname_ok(proc)) return am2z__qsubmit_fail(q, AM2Z_STATUS_NOT_FOUND, proc, desc->session_id);
    *dd = *desc;
    if (!dd->execution_id) {
        am2z_execution_id_generate(proc, gen);
        dd->execution_id = gen;
    }
    return am2z__qdx_start(q, dd->execution_id, proc, input, desc->session_id);
}

/* Worker side, after resolve: a top-level job with "durableId" begins its run (the
   claim in this process and the start record). A failure fails the job with why. */
static void am2z__qdx_begin(am2z__qjobrun *jr) {
    am2z__qrt *q = jr->w->q;
    const char *id = jr->env && jr->depth == 0 ? am2z_value_get_string(jr->env, "durableId", NULL) : NULL;
    char name[AM2Z_NAME_MAX + 1], sid[AM2Z_SESSION_ID_MAX + 1];
    am2z_state *rin = NULL;
    am2z_status st = AM2Z_STATUS_OK;
    if (!id) return;
    if (!q->rt->dreg) st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "durable: out of memory");
    else jr->dx = am2z__dur_begin(q->rt->dreg, jr->qu->proc, jr->input, jr->session, id, 0, &rin, name, sid, &st);
    am2z_value_release(rin); /* the job's own input is the recorded one */
    if (!jr->dx && st == AM2Z_STATUS_EXISTS) { /* its worker died between the done record and the job's end */
        am2z_outcome o;
        memset(&o, 0, sizeof o);
        if (am2z_runtime_durable_outcome(q->rt, id, 0, &o) == AM2Z_STATUS_OK) { /* end the job with it */
            jr->out_state = o.state;
            jr->err = am2z_error_with_retryable(o.error, 0); /* final: it was recorded */
            o.state = NULL;
            o.error = NULL;
            am2z_outcome_clear(&o);
            return;
        }
        am2z_outcome_clear(&o);
    }
    if (!jr->dx) {
        char what[160];
        snprintf(what, sizeof what, "durable execution '%.80s' cannot run here", id);
        jr->err = am2z_error_with_location(am2z_error_with_retryable(am2z_error_from_status(st, what), 0),
                                           jr->qu->proc, jr->exec_id);
    }
}

/* The final outcome of a durable job (complete, fail): recorded, the run ended. */
static void am2z__qdx_end(am2z__qjobrun *jr, const am2z_state *state, const am2z_error *err) {
    if (!jr->dx) return;
    am2z__dur_end(jr->dx, state, err, 0, jr->attempt, (double)(am2z_monotonic_ns() - jr->t0) / 1e6,
                  am2z_now_ms() - (am2z_monotonic_ns() - jr->t0) / 1000000, jr->session);
    am2z__dx_release(jr->dx);
    jr->dx = NULL;
}

/* After the attempt: a durable job a wait step parked goes to the delayed set until the
   wait's timeout (park script); 1 when it did (nothing else finishes the job). */
static int am2z__qdx_park(am2z__qjobrun *jr) {
    am2z__qrt *q = jr->w->q;
    am2z__qqueue *qu = jr->qu;
    am2z__qsb msg = am2z__qsb0();
    am2z_value *ej;
    int64_t until, now = am2z_now_ms();
    char due[24];
    const char *argv[12];
    size_t lens[12], i;
    if (!jr->dx || !jr->err || !am2z__atomic_load(&jr->dx->parked, AM2Z__MO_SEQ_CST) || !am2z__dur_is_waiting(jr->err))
        return 0;
    until = am2z__atomic_load(&jr->dx->park_until, AM2Z__MO_SEQ_CST);
    if (!until || until - now > AM2Z_QUEUE_PARK_MAX_MS) until = now + AM2Z_QUEUE_PARK_MAX_MS;
    if (until <= now) until = now + 1;
    snprintf(due, sizeof due, "%lld", (long long)until);
    ej = am2z_error_to_json(jr->err);
    am2z__qreply_head(&msg, jr->exec_id, 0, jr->attempt, &jr->err, 1);
    am2z__qsb_str(&msg, ",\"error\":");
    am2z__qsb_json(&msg, ej);
    am2z__qsb_str(&msg, "}");
    am2z_value_release(ej);
    argv[0] = qu->P; argv[1] = q->C; argv[2] = jr->id; argv[3] = jr->job->token; argv[4] = jr->now_s;
    argv[5] = due; argv[6] = am2z__qev_level(q, qu); argv[7] = qu->wk; argv[8] = qu->wm;
    argv[9] = msg.bad ? "" : jr->rkey; argv[10] = msg.bad ? "" : msg.p; argv[11] = q->reply_ttl_s;
    for (i = 0; i < 12; i++) lens[i] = strlen(argv[i]);
    am2z__qfinish(jr->w, q->s_park, argv, lens, 12, qu);
    am2z__qsb_free(&msg);
    am2z__qnote_due(q, qu, until);
    if (jr->direct) am2z__qdeliver(q, jr->exec_id, NULL, jr->err, &jr->err, 1, jr->attempt);
    return 1;
}

/* A durable job the stalled scan failed (stalled past max_stalled_count with no
   progress): its run is begun so that the failure is recorded as its outcome (the fail
   path's am2z__qdx_end); without it the execution would stay unfinished forever. */
static void am2z__qdx_stalled(am2z__qjobrun *jr) {
    am2z__qrt *q = jr->w->q;
    am2z_value *env = jr->data && q->rt->dreg ? am2z_json_parse(jr->data, jr->datan, NULL, NULL) : NULL;
    const char *id = am2z_value_get_string(env, "durableId", NULL);
    char name[AM2Z_NAME_MAX + 1], sid[AM2Z_SESSION_ID_MAX + 1];
    am2z_state *rin = NULL;
    am2z_status st = AM2Z_STATUS_OK;
    if (id && am2z_value_get_int(env, "callDepth", 0) == 0 && !jr->dx) {
        jr->dx = am2z__dur_begin(q->rt->dreg, jr->qu->proc, NULL, NULL, id, 0, &rin, name, sid, &st);
        if (!jr->dx && st != AM2Z_STATUS_EXISTS) /* EXISTS: finished already, nothing to record */
            am2z_log_error(q->logger, "durable execution '%s' stalled too often; its failure not recorded: %s", id,
                           am2z_status_detail());
    }
    am2z_value_release(rin);
    am2z_value_release(env);
}

/* stop_session: the durable execution ids of the session's jobs, as the cancel script
   listed them before the jobs could go (ids: its array; a new array of strings). */
static am2z_value *am2z__qdx_session_ids(am2z__qrt *q, const am2z_reply *ids) {
    am2z_value *out = am2z_value_array();
    size_t i;
    for (i = 0; out && ids && ids->type == AM2Z_REPLY_ARRAY && i < ids->len; i++) {
        const char *id = am2z__qel(ids, i, NULL);
        if (id && am2z__dur_id_ok(id)) out = am2z_value_append(out, "", am2z_value_string(id));
    }
    if (!out) am2z_log_error(q->logger, "queue runtime: stop_session: out of memory: its durable executions stay "
                                        "unfinished");
    return out;
}

/* stop_session, once the session's jobs are gone: durable execution id ends cancelled
   (its done record, unless it has one: a run that finished in the grace period keeps
   its outcome), then its other records go. OK, or the failure (detail set). */
static am2z_status am2z__qdx_session_end(am2z__qrt *q, const char *id, const char *sid) {
    char key[AM2Z_STORE_MAX_KEY + 1];
    am2z_value *start = NULL, *rec;
    am2z_error *e;
    char *text, *v = NULL;
    size_t len = 0;
    int written = 0;
    int64_t t0;
    am2z_status st;
    am2z__dur_key_of(key, id, "start");
    st = am2z__dur_get_json(q->dx_store, key, &start);
    if (st == AM2Z_STATUS_NOT_FOUND) return AM2Z_STATUS_OK; /* forgotten meanwhile */
    if (st != AM2Z_STATUS_OK) return st;
    t0 = am2z_value_get_int(start, "startedAt", 0);
    e = am2z_error_with_location(am2z_error_cancelled("the session was stopped"),
                                 am2z_value_get_string(start, "processor", ""), id);
    rec = am2z_value_set(am2z_value_object(), "ok", am2z_value_bool(0));
    rec = am2z_value_set(rec, "error", am2z_error_to_json(e));
    rec = am2z_value_set(rec, "attempts", am2z_value_int(0));
    rec = am2z_value_set(rec, "durationMs", am2z_value_double(t0 ? (double)(am2z_now_ms() - t0) : 0));
    rec = am2z_value_set(rec, "startedAt", am2z_value_int(t0));
    rec = am2z_value_set(rec, "sessionId", am2z_value_string(am2z_value_get_string(start, "sessionId", sid)));
    am2z_error_release(e);
    am2z_value_release(start);
    text = rec ? am2z_json_write(rec, 0, &len) : NULL;
    am2z_value_release(rec);
    if (text && (v = (char *)am2z__malloc(len + 2 * AM2Z_SHA256_SIZE + 1)) != NULL) {
        am2z_sha256_hex(text, len, v);
        memcpy(v + 2 * AM2Z_SHA256_SIZE, text, len);
    }
    am2z__free(text);
    if (!v) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "durable execution '%s': out of memory", id);
    am2z__dur_key_of(key, id, "done");
    st = am2z__qdx_put(q, key, v, len + 2 * AM2Z_SHA256_SIZE, 'd', &written);
    am2z__free(v);
    if (st == AM2Z_STATUS_OK && written) st = am2z__dur_remove_all(q->dx_store, id, key);
    return st;
}

/* stop_session, once the session's jobs are gone: each of ids (from
   am2z__qdx_session_ids) ends cancelled. OK, or the first failure (each logged). */
static am2z_status am2z__qdx_session_stopped(am2z__qrt *q, const am2z_value *ids, const char *sid) {
    am2z_status first = AM2Z_STATUS_OK;
    size_t i;
    for (i = 0; i < am2z_value_len(ids); i++) {
        const char *id = am2z_value_as_string(am2z_value_at(ids, i), NULL);
        am2z_status st = am2z__qdx_session_end(q, id, sid);
        if (st == AM2Z_STATUS_OK) continue;
        am2z_log_warn(q->logger, "queue runtime: stop_session '%s': durable execution '%s' not ended: %s", sid, id,
                      am2z_status_detail());
        if (first == AM2Z_STATUS_OK) first = st;
    }
    return first;
}

#undef AM2Z__QBUCKETS
#undef AM2Z__QCTL_TTL_MS
#undef AM2Z__QADD_SHARED
#undef AM2Z__QADD_GROUP
#undef AM2Z__QMANY_BATCH
#undef AM2Z__QMAX_MS
#undef AM2Z__QMAX_COUNT
#undef AM2Z__QSTOP_SLACK_MS
#undef AM2Z__QSCHED_BATCH
#undef AM2Z__QSCHED_RETRY_MS
#undef AM2Z__QSCHED_WAKE_LEN

#ifdef __cplusplus
}
#endif
#undef AM2Z__PRIVATE
#undef am2z__atomic_inc
#undef am2z__atomic_dec
#undef am2z__atomic_load
#undef am2z__atomic_store
#undef am2z__atomic_add
#undef am2z__atomic_sub
#undef am2z__atomic_fetch_add
#undef am2z__atomic_exchange
#undef am2z__atomic_cas
#undef AM2Z__MO_RELAXED
#undef AM2Z__MO_ACQUIRE
#undef AM2Z__MO_RELEASE
#undef AM2Z__MO_ACQ_REL
#undef AM2Z__MO_SEQ_CST
#endif /* AM2Z_RESP_IMPLEMENTATION_INCLUDED */
#endif /* AM2Z_RESP_IMPLEMENTATION */
