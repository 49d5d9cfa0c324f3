/* am2z.h - v0.1 - composable, failure-resilient processor workflows for C.
   MIT licence at the end of this file.

   Do this:
       #define AM2Z_IMPLEMENTATION
   before you include this file in ONE C or C++ file to create the implementation.
   Every other file includes it without the define. Link with -pthread (not needed
   with AM2Z_NO_THREADS, see OPTIONS).
   Under a strict -std=c99/c11 the implementation needs POSIX declarations: include it
   before any system header (it then defines _POSIX_C_SOURCE itself) or compile that
   file with -D_POSIX_C_SOURCE=200809L (or -std=gnu99). Otherwise it stops at once with
   an #error that says this, instead of a page of implicit-declaration errors.

   RECIPE (compiles as pasted: cc -std=c99 -O2 -pthread hello.c; it is examples/hello.c)

       #define AM2Z_IMPLEMENTATION
       #include "am2z.h"
       #include <stdio.h>

       static am2z_result greet(am2z_ctx *ctx, const am2z_state *in) {
           (void)ctx;
           am2z_edit e = am2z_edit_begin(in);      // a working copy; the first failure sticks
           am2z_edit_set(&e, "greeting", am2z_value_stringf("hello, %s",
                         am2z_value_get_string(in, "name", "world")));
           return am2z_edit_end(&e);               // am2z_ok(state) or the failure
       }

       int main(void) {
           am2z_runtime *rt = am2z_local_runtime_new(NULL, NULL);
           am2z_status st = am2z_runtime_register(rt, am2z_processor_new(&(am2z_processor_desc){
               .name = "greet", .fn = greet }, NULL));   // register takes the processor over
           if (st) { printf("setup failed: %s\n", am2z_status_detail()); return 1; }
           am2z_state *in = am2z_state_parse("demo", "{\"name\":\"am2z\"}", AM2Z_NTS, NULL);
           am2z_outcome out = am2z_runtime_execute(rt, "greet", in);
           int ok = out.error == NULL;
           if (ok) printf("%s (%.3f ms)\n", am2z_value_get_string(out.state, "greeting", ""),
                          out.duration_ms);
           else printf("failed: %s\n", out.error->message);
           am2z_outcome_clear(&out);
           am2z_value_release(in);
           am2z_runtime_free(rt);
           return ok ? 0 : 1;
       }

   CONTENTS (each is a banner "==== N. name ====" below, first as declarations,
   then again inside the implementation)
       0  options, status codes, allocator
       1  values       immutable JSON values: build, read, edit (copy-on-write), parse, write
       2  state        a JSON object with "metadata" {version, sessionId, createdAt, lastUpdated}
       3  errors       the error taxonomy and Results
       4  logging      levels, child loggers, human/JSON/silent/callback sinks
       5  processors   named state transforms with timeout, retry policy, queue config
       6  composition  chain, parallel + merge, route + fallback, batch
       6b cron         5-field cron expressions (UTC) for schedules: parse, next fire time
       7  runtime      the interface both runtimes implement (execute, submit, sessions, events)
       7b runtime implementers: not needed by users (ops table, contexts, invoke;
          declarations only, implemented with 7)
       7c stores       durable key-value storage: the interface, a memory store and a
                       crash-safe file journal (checkpoints of durable executions)
       7d durable      durable executions: checkpoint and resume, signals, wait steps
       7e schedules    run a processor every N ms or on a cron expression: upsert,
                       remove, list (local, inline on its virtual clock, queue)
       7f traces       opt-in record of every step of an execution tree; walk it or
                       render it (ASCII timeline, Mermaid Gantt, Chrome trace JSON)
       8  local        the pthread worker-pool runtime
       9  inline       the single-threaded runtime: same API, runs on the calling thread,
                       optional virtual clock, stubs and recorded calls for unit tests
       (am2z_resp.h adds SHA-256, a RESP client and the Redis queue runtime.)

   OPTIONS (define before including the implementation)
       AM2Z_STATIC            make every function static (private copy per translation unit)
       AM2Z_API               decorate public functions (default: extern, or static with AM2Z_STATIC)
       AM2Z_MALLOC(sz), AM2Z_REALLOC(p, sz), AM2Z_FREE(p)
                              compile-time allocator (define all three or none); a run-time
                              hook with user_data is am2z_set_allocator()
       AM2Z_ASSERT(c)         internal invariant checks (default: assert from <assert.h>)
       AM2Z_MAX_CALL_DEPTH    default limit of nested ctx calls (default 10)
       AM2Z_NO_FILE_STORE     leave out am2z_file_store_new (for targets without POSIX files)
       AM2Z_NO_THREADS        build without threads (define it for every file that includes
                              am2z.h): no <pthread.h>, no -pthread. Values, state, errors,
                              logging, processors, composition and the inline runtime
                              (section 9) work; the local runtime is left out (a use of
                              am2z_local_runtime_new fails to compile, naming this option)
                              and am2z_resp.h stops with an #error. Atomics stay the
                              GCC/Clang __atomic builtins, which need no library on common
                              targets.

   LIMITS (each a #ifndef default; they protect against hostile input and runaway programs)
       AM2Z_JSON_MAX_DEPTH    parser nesting default (256; at most AM2Z_VALUE_MAX_DEPTH, 512)
       AM2Z_JSON_MAX_SIZE     parser input default (64 MiB)
       AM2Z_JSON_MAX_STRING   parser default for one decoded string (16 MiB)
       AM2Z_JSON_MAX_ELEMENTS parser default for members of one container (1,000,000)
       AM2Z_VALUE_MAX_DEPTH   deepest value the writer, equality and hash accept (512)
       AM2Z_ERROR_MAX_CAUSES  cause-chain levels kept by error JSON round trips (32)
       AM2Z_LOG_MAX_MESSAGE   bytes of one formatted log message; longer ones are cut (65536)
       AM2Z_NAME_MAX          bytes of a processor name (128)
       AM2Z_SESSION_ID_MAX    bytes of a session id (128; outcomes hold a copy)
       AM2Z_REGISTER_MAX_DEPTH composite nesting that registration walks (64)
       AM2Z_CRON_MAX_LENGTH   bytes of a cron expression (256)
       AM2Z_SCHEDULE_ID_MAX   bytes of a schedule id (128)
       AM2Z_SCHEDULE_MAX      schedules per runtime (queue: per prefix in Redis) (1024)
       AM2Z_SCHEDULE_MIN_EVERY_MS  shortest every_ms of a schedule (10)
       AM2Z_IDEMPOTENCY_KEY_MAX bytes of an idempotency key (256)
       AM2Z_IDEMPOTENCY_MAX_KEYS keys a runtime remembers in one process (10000)
       AM2Z_IDEMPOTENCY_KEEP_MS default am2z_submit_desc.keep_ms (3600000, 1 h)
       AM2Z_SUBMIT_DELAY_MAX_MS how far ahead delay_ms / run_at_ms may reach (366 days)
       AM2Z_BREAKER_MAX_THRESHOLD  a breaker's failure_threshold, half_open_probes (1000)
       AM2Z_BREAKER_MAX_MS    a breaker's window_ms and open_ms (365 days)
       AM2Z_STORE_MAX_KEY     bytes of a store key (1024)
       AM2Z_STORE_MAX_VALUE   bytes of a store value (64 MiB)
       AM2Z_METRICS_PREFIX_MAX bytes of am2z_runtime_metrics_text's metric prefix (64)
       AM2Z_TRACE_MAX_SPANS   spans one trace keeps by default; later ones are counted as
                              dropped (100000; am2z_submit_desc.trace_max_spans per call)
       AM2Z_LOCAL_MAX_WORKERS worker threads of one local runtime (256)
       AM2Z_MAX_CONCURRENCY   largest global_concurrency / session_concurrency (1,000,000)
       AM2Z_RATE_MAX          largest am2z_rate.max, a session_rate's starts (1,000,000,000)
       AM2Z_RATE_MAX_PER_MS   longest am2z_rate.per_ms, a session_rate's window (1 day)
       AM2Z_LOCAL_SPIN_NS     default am2z_local_desc.spin_ns: how long a waiting thread
                              spins before it blocks (200 us)

   THREADING
       Values, states, errors, processors and loggers are immutable once built and carry
       atomic reference counts: share them between threads freely, retain/release from any
       thread. A runtime is thread-safe: any thread may execute, submit, register or read
       stats. An am2z_ctx belongs to the one execution it was given to.
       Number parsing reads the locale's decimal point (localeconv) on its slow path, so
       a program must not call setlocale while other threads parse JSON.
       An inline runtime (section 9) belongs to the thread that created it.
       With AM2Z_NO_THREADS the library is for one thread: locks do nothing, the status
       detail and other per-thread data are plain statics, reference counts stay atomic.

   OWNERSHIP (the one rule)
       A function that returns a pointer gives the caller one reference, which the caller
       releases with the matching _release or _free function, unless its comment says "borrowed".
       A parameter marked "consumed" takes over the caller's reference, also on failure.
       Every other pointer parameter is borrowed for the duration of the call.
       Constructors are _new; heap objects with one owner are freed by _free, reference
       counted ones by _release; caller-owned structs (am2z_outcome) are emptied by _clear.
       Processors handed to a composite constructor, a desc's dependencies or
       am2z_runtime_register are consumed, NULL included (a failed constructor), so a
       pipeline is one expression with one status check (section 5, HANDING OVER).

   TIME
       Timestamps are int64_t milliseconds since the Unix epoch, named *_at. Durations are
       milliseconds, named *_ms: int64_t for what you configure (timeouts, delays, grace
       periods), double for what am2z measures (outcome durations, event executionTime,
       stats percentiles), so sub-millisecond times keep their precision.
*/
#if defined(AM2Z_IMPLEMENTATION) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime, pthreads under -std=c99 */
#endif

#ifndef AM2Z_H_INCLUDED
#define AM2Z_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef AM2Z_API
#  if defined(AM2Z_STATIC) && (defined(__GNUC__) || defined(__clang__))
#    define AM2Z_API static __attribute__((unused)) /* a program uses only some of them */
#  elif defined(AM2Z_STATIC)
#    define AM2Z_API static
#  else
#    define AM2Z_API extern
#  endif
#endif

#if defined(__GNUC__) || defined(__clang__)
#  define AM2Z_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#  define AM2Z_PRINTF(fmt, args)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== 0. options, status codes, allocator ============================================ */

#define AM2Z_VERSION "0.1.0"

/* ONE FAILURE CHANNEL. Every library call that can fail reports an am2z_status: it
   returns one, or (a constructor that returns a pointer) returns NULL and stores one in
   its optional `am2z_status *status` out-parameter. What failed and why, and the byte
   offset for parse failures, is then readable on the same thread with
   am2z_status_detail() and am2z_status_offset() (errno-like: per thread, set by the
   failing call, left alone by successful ones). Processor failures are not library
   failures: they are data (am2z_error inside am2z_result / am2z_outcome, section 3). */
typedef enum am2z_status {
    AM2Z_STATUS_OK = 0,
    AM2Z_STATUS_INVALID_ARGUMENT, /* NULL where a value is required, bad name, bad option */
    AM2Z_STATUS_NO_MEMORY,
    AM2Z_STATUS_NOT_FOUND,        /* no such processor, session, key */
    AM2Z_STATUS_EXISTS,           /* a different processor is registered under that name */
    AM2Z_STATUS_CYCLE,            /* registering would create a composition cycle */
    AM2Z_STATUS_LIMIT,            /* a documented size, depth or count limit was reached */
    AM2Z_STATUS_TIMEOUT,          /* a wait ended before the operation finished */
    AM2Z_STATUS_NOT_STARTED,      /* the runtime is stopped */
    AM2Z_STATUS_CANCELLED,
    AM2Z_STATUS_IO,               /* socket or system call failure (errno kept) */
    AM2Z_STATUS_PROTOCOL,         /* the peer sent bytes that break the protocol */
    AM2Z_STATUS_SERVER,           /* the server answered with an error reply */
    AM2Z_STATUS_CONFLICT,         /* optimistic update lost too many races */
    AM2Z_STATUS_NEED_MORE         /* an incremental reader needs more bytes (not a failure) */
} am2z_status;

/* Static text, never NULL. */
AM2Z_API const char *am2z_status_string(am2z_status status);
/* The status of the last failing am2z call on the calling thread (AM2Z_STATUS_OK when
   none), for calls whose failure is a NULL (value edits) rather than a status. */
AM2Z_API am2z_status am2z_status_last(void);
/* The detail of the last failing am2z call on the calling thread, e.g.
   "json: invalid escape" or "set 'total.cents': 'total' is a number"; "" when none.
   Borrowed: valid until the thread's next failing am2z call. */
AM2Z_API const char *am2z_status_detail(void);
/* The byte offset that detail refers to when the failure was a parse (JSON, RESP);
   AM2Z_NTS otherwise. */
AM2Z_API size_t am2z_status_offset(void);

/* Length of a NUL-terminated string, for every (pointer, length) parameter. A length
   is always a length: 0 means empty, never "call strlen". */
#define AM2Z_NTS ((size_t)-1)

/* Run-time allocator hook. Install it before any other am2z call; every function
   receives user_data and may be called from many threads at once. realloc_fn and
   free_fn must accept NULL like the C library's. Passing NULL restores malloc. */
typedef struct am2z_allocator {
    void *(*alloc_fn)(size_t size, void *user_data);
    void *(*realloc_fn)(void *ptr, size_t size, void *user_data);
    void (*free_fn)(void *ptr, void *user_data);
    void *user_data;
} am2z_allocator;
AM2Z_API void am2z_set_allocator(const am2z_allocator *allocator);
/* Frees memory the library handed out as plain bytes (JSON text, chain strings). */
AM2Z_API void am2z_free(void *ptr);

/* Milliseconds since the Unix epoch (wall clock) and a monotonic clock in nanoseconds. */
AM2Z_API int64_t am2z_now_ms(void);
AM2Z_API int64_t am2z_monotonic_ns(void);

/* ==== 1. values ======================================================================= */
/* An am2z_value is an immutable JSON value with an atomic reference count. NULL is
   never a valid value: readers given NULL treat it as absent, edits given NULL fail
   (it is what a failed edit or constructor returned), and nothing crashes.
   Editing functions follow copy-on-write: they consume the container, edit it in place
   when the caller held the only reference, and otherwise copy only the spine that
   changes (children are shared, never deep-copied).
   Cost model: null, booleans, [] and {} are static, integers within +-2^62 (+-2^30 on
   32-bit machines) are stored in the pointer itself; every other value is one
   allocation (a string with its bytes, an array with its items, an object with its
   members, key bytes and, above 16 members, a hash index, so that a key lookup stays
   O(1) in states with thousands of keys). Borrowed pointers stay valid as long as the
   value they came from. */

/* Limits (protection against hostile input; define before including the implementation). */
#ifndef AM2Z_VALUE_MAX_DEPTH
#define AM2Z_VALUE_MAX_DEPTH 512      /* nesting of any value; edits that go deeper fail */
#endif
#ifndef AM2Z_JSON_MAX_DEPTH
#define AM2Z_JSON_MAX_DEPTH 256       /* parser default (capped at AM2Z_VALUE_MAX_DEPTH) */
#endif
#ifndef AM2Z_JSON_MAX_SIZE
#define AM2Z_JSON_MAX_SIZE ((size_t)64 << 20)      /* parser default: bytes of input */
#endif
#ifndef AM2Z_JSON_MAX_STRING
#define AM2Z_JSON_MAX_STRING ((size_t)16 << 20)    /* parser default: bytes of one string */
#endif
#ifndef AM2Z_JSON_MAX_ELEMENTS
#define AM2Z_JSON_MAX_ELEMENTS ((size_t)1000000)   /* parser default: members of one container */
#endif

typedef struct am2z_value am2z_value;

typedef enum am2z_type {
    AM2Z_TYPE_NONE = 0,  /* what am2z_value_type(NULL) answers */
    AM2Z_TYPE_NULL,
    AM2Z_TYPE_BOOL,
    AM2Z_TYPE_INT,       /* int64, exact */
    AM2Z_TYPE_DOUBLE,
    AM2Z_TYPE_STRING,    /* UTF-8, length-counted, may contain NUL */
    AM2Z_TYPE_ARRAY,
    AM2Z_TYPE_OBJECT     /* keys keep insertion order */
} am2z_type;

/* Constructors: each returns a new reference, or NULL when out of memory (the detail,
   am2z_status_detail(), then says so). Only constructors make containers: an edit given
   NULL fails. */
AM2Z_API am2z_value *am2z_value_null(void);
AM2Z_API am2z_value *am2z_value_bool(int b);
AM2Z_API am2z_value *am2z_value_int(int64_t i);
AM2Z_API am2z_value *am2z_value_double(double d); /* NaN and infinities become null */
AM2Z_API am2z_value *am2z_value_string(const char *s);          /* NUL-terminated, copied */
AM2Z_API am2z_value *am2z_value_string_n(const char *s, size_t len); /* copied; len may be AM2Z_NTS */
AM2Z_API am2z_value *am2z_value_stringf(const char *fmt, ...) AM2Z_PRINTF(1, 2);
AM2Z_API am2z_value *am2z_value_array(void);
AM2Z_API am2z_value *am2z_value_object(void);

/* Returns v (a new reference to the same value); NULL stays NULL. */
AM2Z_API am2z_value *am2z_value_retain(const am2z_value *v);
AM2Z_API void am2z_value_release(am2z_value *v);

/* Reading. Scalar readers return the default when v has another type. */
AM2Z_API am2z_type am2z_value_type(const am2z_value *v);
AM2Z_API const char *am2z_type_name(am2z_type t); /* "null", "object", ...; static */
AM2Z_API int am2z_value_as_bool(const am2z_value *v, int def);
AM2Z_API int64_t am2z_value_as_int(const am2z_value *v, int64_t def);    /* doubles with an exact int64 value convert */
AM2Z_API double am2z_value_as_double(const am2z_value *v, double def); /* ints convert */
/* Borrowed, NUL-terminated (may also contain NUL; *len gets the length if len != NULL). */
AM2Z_API const char *am2z_value_as_string(const am2z_value *v, size_t *len);
AM2Z_API size_t am2z_value_len(const am2z_value *v);   /* elements, members, or bytes; 0 otherwise */
AM2Z_API const am2z_value *am2z_value_at(const am2z_value *array, size_t i);    /* borrowed */
AM2Z_API const char *am2z_value_key_at(const am2z_value *object, size_t i, size_t *len); /* borrowed */
AM2Z_API const am2z_value *am2z_value_member_at(const am2z_value *object, size_t i); /* borrowed */
/* Looks a key up (key_len AM2Z_NTS for a C string; 0 is the empty key); borrowed,
   NULL if absent. */
AM2Z_API const am2z_value *am2z_value_find(const am2z_value *object, const char *key, size_t key_len);

/* Paths. "order.items[2].price" (dot keys and [index]) or a JSON Pointer
   "/order/items/2/price" (leading '/', "~0" and "~1" escapes). "" is v itself.
   In the dot form a backslash takes the next character literally ("a\\.b" is the key
   "a.b"), and a key of digits also indexes an array ("items.2"). Malformed paths
   ("a..b", "a[", "[x]", "[01]", "~2") find nothing. */
AM2Z_API const am2z_value *am2z_value_get(const am2z_value *v, const char *path); /* borrowed, NULL if absent */
AM2Z_API int64_t am2z_value_get_int(const am2z_value *v, const char *path, int64_t def);
AM2Z_API double am2z_value_get_double(const am2z_value *v, const char *path, double def);
AM2Z_API int am2z_value_get_bool(const am2z_value *v, const char *path, int def);
AM2Z_API const char *am2z_value_get_string(const am2z_value *v, const char *path, const char *def); /* borrowed */

/* Editing: v and x are consumed; the result is the edited value (a new reference), or
   NULL on failure, in which case both inputs have been released. A failure propagates:
   every edit given a NULL container (an earlier edit or constructor failed) fails too,
   so a chain of edits ends in NULL and never in a fresh {}. Every failure sets the
   thread's status (am2z_status_last: INVALID_ARGUMENT, NO_MEMORY, LIMIT) and a detail
   naming operation, path and reason, e.g. "set 'total.cents': 'total' is a number",
   "set 'x[5]': index 5 out of range (length 2)", "set 'a..b': malformed path". An edit
   given NULL after a failed edit keeps that first detail, so the first reason survives
   the chain (am2z_ok(NULL) reports it). set creates missing containers below v (an
   array before "[n]" or "/-", else an object); an index equal to the array length (or
   "-") appends; path "" replaces v by x. */
AM2Z_API am2z_value *am2z_value_set(am2z_value *v, const char *path, am2z_value *x);
/* v consumed. Removing a path that does not exist returns v unchanged; "" or a
   malformed path fails. */
AM2Z_API am2z_value *am2z_value_remove(am2z_value *v, const char *path);
/* v and x consumed. Appends x to the array at path (created when missing below v; ""
   is v itself). */
AM2Z_API am2z_value *am2z_value_append(am2z_value *v, const char *path, am2z_value *x);
/* By key, for keys that a path cannot spell (".", "[", "/"); key_len AM2Z_NTS for a C
   string (0 is the empty key). Failures as for set.
   set_key: object and x consumed. remove_key: object consumed; an absent key returns
   it unchanged. */
AM2Z_API am2z_value *am2z_value_set_key(am2z_value *object, const char *key, size_t key_len, am2z_value *x);
AM2Z_API am2z_value *am2z_value_remove_key(am2z_value *object, const char *key, size_t key_len);
/* Shallow merge: every member of `from` (borrowed) is set on object `into` (consumed),
   keeping into's key order and appending new keys in from's order. NULL from leaves
   into unchanged; NULL into or a non-object on either side fails as the edits do. */
AM2Z_API am2z_value *am2z_value_merge(am2z_value *into, const am2z_value *from);

/* Deep equality (objects compare as unordered maps; 1 and 1.0 are not equal; 0.0 and
   -0.0 are equal) and a hash that is the same for equal values in every process and
   run (it does not depend on key order; NULL == NULL). */
AM2Z_API int am2z_value_equal(const am2z_value *a, const am2z_value *b);
AM2Z_API uint64_t am2z_value_hash(const am2z_value *v);

/* JSON (RFC 8259). Limits protect against hostile input; zero fields take the default. */
typedef struct am2z_json_limits {
    int max_depth;          /* nesting of arrays/objects; default AM2Z_JSON_MAX_DEPTH (256),
                               never above AM2Z_VALUE_MAX_DEPTH */
    size_t max_size;        /* bytes of input; default AM2Z_JSON_MAX_SIZE (64 MiB) */
    size_t max_string;      /* bytes of one decoded string or key; default 16 MiB */
    size_t max_elements;    /* members of one array or object; default 1,000,000 */
} am2z_json_limits;

/* Parses exactly one JSON text of len bytes (AM2Z_NTS: a C string; 0 bytes is "empty
   input", an error). Returns a new value, or NULL with *status (status may be NULL)
   INVALID_ARGUMENT (malformed text), LIMIT or NO_MEMORY, and the thread's detail
   "json: <message>" ("json: invalid escape", "json: depth limit 256 exceeded") with
   am2z_status_offset() where the problem is: the opening '"' of a string over the
   length limit, the '[' or '{' one level too deep, the first byte of the element over
   the count limit, max_size for input over the size limit, else the offending byte.
   *status is AM2Z_STATUS_OK on success. Invalid UTF-8 (overlong forms, encoded
   surrogates, above U+10FFFF) and lone \u surrogates are rejected, as are a byte-order
   mark and numbers that overflow a double (1e999). Integers that do not fit int64
   become doubles; "-0" is the double -0.0 (so its sign survives a round trip). A
   repeated key keeps its first position and takes the last value, as JavaScript's
   JSON.parse. */
AM2Z_API am2z_value *am2z_json_parse(const char *text, size_t len, const am2z_json_limits *limits,
                                     am2z_status *status);

enum { AM2Z_JSON_COMPACT = 0, AM2Z_JSON_PRETTY = 1, AM2Z_JSON_SORTED = 2 };
/* Serialises v; doubles use the shortest of 15, 16 or 17 significant digits that reads
   back to the same bits, always with '.' (whatever the locale) and always looking like
   a double ("1.0", "-0.0"), so the type survives a round trip. Control characters,
   '"' and '\\' are escaped; bytes that are not valid UTF-8 are written as U+FFFD.
   Returns NUL-terminated text that the caller frees with am2z_free, or NULL when v is
   NULL or out of memory (with the thread's detail set); *len (if len != NULL) gets
   its length. AM2Z_JSON_PRETTY indents by two spaces ("key": value, no final newline);
   AM2Z_JSON_SORTED sorts object keys (bytewise, at every level), giving a canonical
   form for hashing. */
AM2Z_API char *am2z_json_write(const am2z_value *v, int flags, size_t *len);

/* ==== 2. state ======================================================================== */
/* A state is a JSON object value whose "metadata" member holds
   {"version": int, "sessionId": string, "createdAt": ms, "lastUpdated": ms}, the
   shape the original AM2Z stores, so states cross threads, processes and Redis as JSON.
   Every am2z_value_* function works on a state. */

typedef am2z_value am2z_state;

/* data (consumed) must be an object; its members become the state's fields, after a
   new "metadata" member (version 1, createdAt = lastUpdated = now, sessionId =
   session_id, "default" when NULL). A well-formed "metadata" already in data is kept,
   as the original lets extra.metadata replace it (well-formed: an object with integer
   version >= 0, string sessionId, integer createdAt and lastUpdated).
   Returns the state, or NULL with *status (may be NULL) INVALID_ARGUMENT when data is
   not an object or NULL (a failed edit, whose detail is kept: pass am2z_value_object()
   for an empty state), or NO_MEMORY, and the detail set. */
AM2Z_API am2z_state *am2z_state_new(const char *session_id, am2z_value *data, am2z_status *status);
/* Parses len bytes of JSON text (AM2Z_NTS: a C string) as the state's data, as
   am2z_state_new does: a well-formed "metadata" member in the text is kept (its
   sessionId wins over session_id), so serialised states read back unchanged. NULL with
   *status (may be NULL) and the detail set as by am2z_json_parse, or INVALID_ARGUMENT
   with "state: a state must be a JSON object, not <type>". */
AM2Z_API am2z_state *am2z_state_parse(const char *session_id, const char *json, size_t len,
                                      am2z_status *status);
/* Metadata readers: 0 (or "") when s has no such field. */
AM2Z_API int64_t am2z_state_version(const am2z_state *s);
AM2Z_API const char *am2z_state_session_id(const am2z_state *s); /* borrowed */
AM2Z_API int64_t am2z_state_created_at(const am2z_state *s);
AM2Z_API int64_t am2z_state_last_updated(const am2z_state *s);
/* s consumed; returns the state with version + 1 and lastUpdated = now (the runtimes
   bump after every successful step with their own clock: the local runtime's is the
   wall clock read at its start plus the monotonic time since, as for started_at; the
   inline runtime's may be virtual). In place, without allocating, when the
   caller holds the only reference to s and to its metadata object (a copy of a state
   shares the metadata until one of them is bumped); a state without well-formed
   metadata gets fresh metadata that continues its version. NULL when s is not an
   object or out of memory. */
AM2Z_API am2z_state *am2z_state_bump(am2z_state *s);

/* ==== 3. errors & results ============================================================= */
/* The original AM2Z's error classes, as immutable reference-counted values. The kind
   fixes name, code, category, severity and the default `retryable` (table below);
   `details` holds the fields the original keeps in its context object. */

typedef enum am2z_error_kind {
    AM2Z_ERROR_NONE = 0,            /* "Error", UNKNOWN_ERROR: a foreign error read from JSON */
    AM2Z_ERROR_VALIDATION,          /* VALIDATION_FAILED          validation  low      no  */
    AM2Z_ERROR_PROCESSOR_NOT_FOUND, /* PROCESSOR_NOT_FOUND        execution   high     no  */
    AM2Z_ERROR_EXECUTION,           /* PROCESSOR_EXECUTION_FAILED execution   high     yes */
    AM2Z_ERROR_TIMEOUT,             /* OPERATION_TIMEOUT          timeout     medium   yes */
    AM2Z_ERROR_RESOURCE,            /* RESOURCE_EXHAUSTED         resource    high     yes */
    AM2Z_ERROR_NETWORK,             /* NETWORK_ERROR              network     medium   yes */
    AM2Z_ERROR_CONFIGURATION,       /* INVALID_CONFIGURATION      configuration critical no */
    AM2Z_ERROR_BUSINESS,            /* caller's code              business    caller's no  */
    AM2Z_ERROR_CALL_DEPTH,          /* CALL_DEPTH_EXCEEDED        execution   high     no  */
    AM2Z_ERROR_CANCELLED,           /* EXECUTION_CANCELLED        execution   medium   no  */
    AM2Z_ERROR_CIRCUIT_OPEN         /* CIRCUIT_OPEN               resource    medium   yes */
} am2z_error_kind;

typedef enum am2z_error_category {
    AM2Z_CATEGORY_NONE = 0, AM2Z_CATEGORY_VALIDATION, AM2Z_CATEGORY_EXECUTION,
    AM2Z_CATEGORY_TIMEOUT, AM2Z_CATEGORY_RESOURCE, AM2Z_CATEGORY_NETWORK,
    AM2Z_CATEGORY_CONFIGURATION, AM2Z_CATEGORY_AUTH, AM2Z_CATEGORY_BUSINESS
} am2z_error_category;

typedef enum am2z_severity {
    AM2Z_SEVERITY_DEFAULT = 0, AM2Z_SEVERITY_LOW, AM2Z_SEVERITY_MEDIUM,
    AM2Z_SEVERITY_HIGH, AM2Z_SEVERITY_CRITICAL
} am2z_severity;

/* Immutable once built, reference counted. Fields are read-only for callers. */
typedef struct am2z_error {
    am2z_error_kind kind;
    const char *name;          /* "ValidationError", ... (static) */
    const char *code;          /* "VALIDATION_FAILED", ... or the business code */
    const char *message;
    am2z_error_category category;
    am2z_severity severity;
    int retryable;
    const char *processor;     /* where known, else NULL */
    const char *execution_id;  /* where known, else NULL */
    const am2z_value *details; /* JSON object, never NULL */
    const struct am2z_error *cause;  /* NULL or the error this one wraps */
    const am2z_state *partial_state; /* NULL or the state reached before failing */
    int64_t created_at;        /* epoch ms when it was built (or the JSON's "timestamp") */
} am2z_error;

/* Constructors, with the original's messages and details members. Each returns a new
   reference, or NULL when out of memory. Strings are copied; a NULL name reads
   "unknown" and a NULL reason "no reason given". Values passed in are borrowed.
     validation     "Validation failed for field '<field>': <reason>"
                    details {field, value (when value != NULL), reason}
     not_found      "Processor '<name>' not found. Available: a, b" (available_names: an
                    array, may be NULL) details {processorName, availableProcessors}
     execution      "Processor '<name>' execution failed" + ": <cause message>"
                    details {processorName, executionId?, causeType?, causeMessage?,
                    failedProcessor}; sets the error's processor and execution_id
     timeout        "Operation '<operation>' timed out after <ms>ms"  {operation, timeoutMs}
     resource       "Resource '<resource>' exhausted: <current>/<limit>" {resource, limit, current}
     network        "Network error for endpoint '<endpoint>'" + " (<status>)" when status != 0
                    {endpoint, statusCode?}
     configuration  "Configuration error for '<key>': <reason>"  {configKey, reason}
     business       the formatted message, code (NULL: "BUSINESS_ERROR"), severity
                    (DEFAULT: medium)  {}
     call_depth     "Maximum call depth exceeded: <current> >= <max>"  {maxDepth, currentDepth}
     cancelled      "Execution cancelled" + ": <reason>"  {reason?}
     circuit_open   "Circuit breaker of processor '<name>' is open; retry after <ms>ms"
                    {processorName, retryAt (epoch ms), retryAfterMs}: retryable, but
                    not before retryAt (see am2z_breaker_policy, RETRIES); sets processor */
AM2Z_API am2z_error *am2z_error_validation(const char *field, const am2z_value *value, const char *reason);
AM2Z_API am2z_error *am2z_error_not_found(const char *processor, const am2z_value *available_names);
/* cause and partial_state are consumed (both may be NULL). retryable = the cause's
   retryable (a wrapped ValidationError stays permanent), or 1 without a cause.
   No double wrap: when cause is already a ProcessorExecutionError of the same processor
   (and the same execution id where both have one), cause itself is returned, with a
   missing execution id filled in and partial_state (when not NULL) replacing its own.
   A different processor gets a new layer: the chain of names is the path the failure
   took through composition. */
AM2Z_API am2z_error *am2z_error_execution(const char *processor, const char *execution_id,
                                          am2z_error *cause, am2z_state *partial_state);
AM2Z_API am2z_error *am2z_error_timeout(const char *operation, int64_t timeout_ms);
AM2Z_API am2z_error *am2z_error_resource(const char *resource, int64_t limit, int64_t current);
AM2Z_API am2z_error *am2z_error_network(const char *endpoint, int status_code, am2z_error *cause /* consumed */);
AM2Z_API am2z_error *am2z_error_configuration(const char *key, const char *reason);
AM2Z_API am2z_error *am2z_error_business(const char *code, am2z_severity severity, const char *fmt, ...)
    AM2Z_PRINTF(3, 4);
AM2Z_API am2z_error *am2z_error_call_depth(int max_depth, int current_depth);
AM2Z_API am2z_error *am2z_error_cancelled(const char *reason);
/* retry_after_ms < 0 reads 0. */
AM2Z_API am2z_error *am2z_error_circuit_open(const char *processor, int64_t retry_at, int64_t retry_after_ms);

/* Copy-on-write setters: err is consumed and the edited error returned: err itself,
   edited in place, when the caller held the only reference, else a copy (the shared
   original is untouched). NULL only when out of memory, with err released.
   with_details merges the members of the object `details` (borrowed) over err's;
   with_location sets the fields whose argument is not NULL; with_partial replaces the
   partial state (NULL removes it); with_retryable overrides the kind's default, so a
   temporary failure with your own message (a business error, say) is retried without a
   should_retry callback, and a NetworkError you know to be permanent is not. */
AM2Z_API am2z_error *am2z_error_with_details(am2z_error *err, const am2z_value *details);
AM2Z_API am2z_error *am2z_error_with_location(am2z_error *err, const char *processor,
                                              const char *execution_id);
AM2Z_API am2z_error *am2z_error_with_partial(am2z_error *err, am2z_state *partial_state /* consumed */);
AM2Z_API am2z_error *am2z_error_with_retryable(am2z_error *err, int retryable);

/* Turns a failed library call into a processor failure, in one call: the error for
   status st, whose message is "<operation>: <am2z_status_detail()>" (the status name
   when the thread has no detail). NULL operation reads "am2z". A new reference, or NULL
   when out of memory. OK and NEED_MORE are not failures: they give a permanent
   ProcessorExecutionError "<operation>: not a failure", so misuse stays visible.
     TIMEOUT                         TimeoutError        (retryable)
     IO                              NetworkError        (retryable)
     NO_MEMORY, LIMIT                ResourceError       (retryable)
     INVALID_ARGUMENT, NOT_FOUND     ValidationError     (permanent)
     EXISTS, CYCLE, NOT_STARTED      ConfigurationError  (permanent)
     CANCELLED                       CancelledError      (permanent)
     SERVER, PROTOCOL, CONFLICT      BusinessError with code "AM2Z_SERVER",
                                     "AM2Z_PROTOCOL", "AM2Z_CONFLICT" (retryable)
   details {operation, status: "<am2z_status_string>", detail, offset?}. */
AM2Z_API am2z_error *am2z_error_from_status(am2z_status st, const char *operation);

AM2Z_API am2z_error *am2z_error_retain(const am2z_error *err);  /* NULL stays NULL */
AM2Z_API void am2z_error_release(am2z_error *err);              /* NULL is a no-op */

AM2Z_API const am2z_error *am2z_error_root_cause(const am2z_error *err); /* borrowed; err itself without a cause */
/* "ProcessorExecutionError: msg -> TimeoutError: msg" (every level); caller frees with
   am2z_free. NULL err gives ""; NULL only when out of memory. */
AM2Z_API char *am2z_error_chain(const am2z_error *err);

/* Cause levels to_json writes and from_json reads below the top error; deeper causes are
   dropped, so hostile JSON cannot nest errors without bound. */
#ifndef AM2Z_ERROR_MAX_CAUSES
#define AM2Z_ERROR_MAX_CAUSES 32
#endif
/* {name, code, message, category, severity, retryable, processor?, executionId?,
   details, cause?, partialState?, timestamp (ISO 8601 UTC, like the original)}: a new
   reference (NULL for NULL err or out of memory). JSON is how errors cross Redis. */
AM2Z_API am2z_value *am2z_error_to_json(const am2z_error *err);
/* The inverse of to_json; the kind is kept across the round trip (found by "name", else
   by "code"; neither known gives kind NONE with "code" kept). category, severity,
   retryable, timestamp (ISO text or ms) come from the JSON when valid, else the kind's
   defaults; "context" (the original's field) is read when "details" is absent; a missing
   message reads "An unknown error occurred". A non-object gives NULL. */
AM2Z_API am2z_error *am2z_error_from_json(const am2z_value *json);
AM2Z_API const char *am2z_error_kind_name(am2z_error_kind kind);        /* static */
AM2Z_API const char *am2z_error_category_name(am2z_error_category c);  /* static */
AM2Z_API const char *am2z_severity_name(am2z_severity s);              /* static; DEFAULT reads "medium" */

/* A processor's result: success carries a state, failure an error (and the error may
   carry a partial state). A result owns the references inside it: whoever holds the
   result passes it on (every helper below consumes it) or clears it. */
typedef struct am2z_result {
    am2z_state *state;  /* success: non-NULL */
    am2z_error *error;  /* failure: non-NULL, and state is NULL */
} am2z_result;

/* Misuse never crashes: am2z_ok(NULL) (typically a failed edit), am2z_fail(NULL) and a
   result with neither state nor error become failures whose ProcessorExecutionError
   (not retryable) says what happened; am2z_ok(NULL)'s message carries the thread's
   detail, e.g. "am2z_ok(NULL): set 'total.cents': 'total' is a number", so the
   bare-value idiom `return am2z_ok(am2z_value_set(...))` fails loudly with the reason.
   Only when memory runs out while building that error is a failure {NULL, NULL}: test
   with am2z_result_is_ok, not `error != NULL`. */
AM2Z_API am2z_result am2z_ok(am2z_state *state);  /* consumed */
AM2Z_API am2z_result am2z_fail(am2z_error *error); /* consumed */
AM2Z_API int am2z_result_is_ok(const am2z_result *r); /* state set, error NULL */
AM2Z_API void am2z_result_clear(am2z_result *r);  /* releases both and zeroes r; NULL ok */

typedef am2z_result (*am2z_result_fn)(am2z_state *state /* consumed */, void *user_data);
typedef am2z_state *(*am2z_state_map_fn)(am2z_state *state /* consumed */, void *user_data);
typedef am2z_error *(*am2z_error_map_fn)(am2z_error *error /* consumed */, void *user_data);
/* r is consumed by all three; a failure passes through and_then and map untouched, a
   success through map_error. and_then runs fn on success (fn returns a Result); map
   runs a state->state function (NULL from it becomes a failure); map_error rewrites the
   error of a failure. A NULL fn passes r through. */
AM2Z_API am2z_result am2z_result_and_then(am2z_result r, am2z_result_fn fn, void *user_data);
AM2Z_API am2z_result am2z_result_map(am2z_result r, am2z_state_map_fn fn, void *user_data);
AM2Z_API am2z_result am2z_result_map_error(am2z_result r, am2z_error_map_fn fn, void *user_data);
/* All successes: a success whose state is the array of the states in order (count 0:
   an empty array). Otherwise the first failure in order. results[] are all consumed
   and left zeroed. */
AM2Z_API am2z_result am2z_result_combine(am2z_result *results, size_t count);

/* The edit helper for processors: a working state plus the first failure, which sticks.
       am2z_edit e = am2z_edit_begin(in);
       am2z_edit_set(&e, "total.cents", am2z_value_int(500));
       am2z_edit_append(&e, "log", am2z_value_string("priced"));
       return am2z_edit_end(&e);
   Each edit applies to e->state as the am2z_value_* edit of the same name does and
   returns 1 while no edit has failed, else 0. The first failure releases the working
   state and becomes a ValidationError whose field is the path and whose reason is the
   detail: "Validation failed for field 'total.cents': set 'total.cents': 'total' is a
   number". After it, edits are no-ops that release what they were given (so nothing
   leaks and nothing needs checking until the end). A caller-owned struct, used by one
   thread; am2z_edit_end empties it. */
typedef struct am2z_edit {
    am2z_state *state;  /* the working state, owned; NULL after a failure */
    am2z_error *error;  /* the first failure, owned; NULL while none */
} am2z_edit;
/* input borrowed (retained; edits copy only what they change). NULL input is the first
   failure. */
AM2Z_API am2z_edit am2z_edit_begin(const am2z_state *input);
AM2Z_API int am2z_edit_set(am2z_edit *e, const char *path, am2z_value *x);    /* x consumed */
AM2Z_API int am2z_edit_append(am2z_edit *e, const char *path, am2z_value *x); /* x consumed */
AM2Z_API int am2z_edit_remove(am2z_edit *e, const char *path);
/* Shallow merge of the object `from` (borrowed) into the state; its failure's field is
   "(merge)". */
AM2Z_API int am2z_edit_merge(am2z_edit *e, const am2z_value *from);
/* Records your own failure (err consumed; ignored when a failure is already recorded).
   Returns 0. */
AM2Z_API int am2z_edit_fail(am2z_edit *e, am2z_error *err);
/* am2z_ok(state) or am2z_fail(first error); e is left empty ({NULL, NULL}). */
AM2Z_API am2z_result am2z_edit_end(am2z_edit *e);

/* Session ids are 1..AM2Z_SESSION_ID_MAX bytes of [A-Za-z0-9_.-] on every runtime (the
   queue runtime puts them in Redis key names); execution ids are shorter than
   AM2Z_EXECUTION_ID_SIZE. */
#ifndef AM2Z_SESSION_ID_MAX
#define AM2Z_SESSION_ID_MAX 128
#endif
#define AM2Z_EXECUTION_ID_SIZE 64

/* The final outcome of one execution (after all retries). A caller-owned struct: start
   it zeroed (= {0}); every function that fills one clears what it held first, so
   reusing it never leaks; am2z_outcome_clear empties it. */
typedef struct am2z_outcome {
    am2z_state *state;           /* success: the final state; failure: partial or input, may be NULL */
    am2z_error *error;           /* NULL on success */
    int attempts;                /* attempts made */
    am2z_error **attempt_errors; /* the error of each failed attempt, in order */
    size_t attempt_error_count;
    double duration_ms;          /* from the first attempt's start to the final outcome */
    int64_t started_at;          /* when the first attempt started (submission if none ran) */
    char execution_id[AM2Z_EXECUTION_ID_SIZE];
    char session_id[AM2Z_SESSION_ID_MAX + 1];
    struct am2z_trace *trace;    /* the execution's trace when tracing was on (section 7f),
                                    else NULL; a reference released by am2z_outcome_clear */
} am2z_outcome;
AM2Z_API void am2z_outcome_clear(am2z_outcome *out);
/* The outcome as a processor result, in one call (e.g. to return what a submitted
   execution produced): its error, else its state, moved into the result; out is
   cleared. A processor returns it as it is. */
AM2Z_API am2z_result am2z_outcome_to_result(am2z_outcome *out);

/* ==== 4. logging ====================================================================== */
/* Loggers are immutable and reference counted; any thread may log through any logger.
   Each entry is formatted into one buffer and written with a single fwrite under
   flockfile(stream), so lines from different threads (and from different loggers on
   the same stream) never interleave. Sinks:
     human     "HH:MM:SS.mmm [source] LEVEL message {context}" (local time, level
               padded to 5, ANSI colour on the level: debug cyan, info blue, warn
               yellow, error red; context as compact JSON when not empty)
     JSON      {"level":"info","message":...,"timestamp":"<ISO 8601 UTC>","source":...,
               "context":{...}} per line ("source" only when set)
     silent    nothing (am2z_logger_enabled answers 0)
     callback  fn(entry, user_data) on the logging thread, possibly concurrently */

/* Bytes of one formatted message; a longer one is cut to this size and ends with
   "... [truncated]" so the loss is visible. */
#ifndef AM2Z_LOG_MAX_MESSAGE
#define AM2Z_LOG_MAX_MESSAGE 65536
#endif

typedef enum am2z_log_level {
    AM2Z_LOG_DEFAULT = 0, /* info */
    AM2Z_LOG_DEBUG, AM2Z_LOG_INFO, AM2Z_LOG_WARN, AM2Z_LOG_ERROR,
    AM2Z_LOG_OFF          /* as a minimum level: nothing is logged */
} am2z_log_level;

typedef enum am2z_log_sink {
    AM2Z_SINK_DEFAULT = 0, /* human */
    AM2Z_SINK_HUMAN,       /* "12:00:01.123 [source] INFO  message {context}" */
    AM2Z_SINK_JSON,        /* one JSON object per line */
    AM2Z_SINK_SILENT,
    AM2Z_SINK_CALLBACK
} am2z_log_sink;

typedef struct am2z_log_entry {
    am2z_log_level level;
    const char *message;
    const char *source;         /* may be NULL */
    const am2z_value *context;  /* object: the logger's fields, then the call's */
    int64_t logged_at;          /* epoch ms */
} am2z_log_entry;

/* Called from any thread, possibly concurrently; all pointers are borrowed for the call. */
typedef void (*am2z_log_fn)(const am2z_log_entry *entry, void *user_data);

typedef struct am2z_logger_desc {
    am2z_log_level min_level;
    am2z_log_sink sink;
    FILE *stream;           /* default stderr */
    int color;              /* 0: when stream is a TTY, 1: always, -1: never */
    const char *source;
    am2z_log_fn callback;   /* with AM2Z_SINK_CALLBACK */
    void *user_data;
} am2z_logger_desc;

typedef struct am2z_logger am2z_logger;

/* NULL desc: info level, human sink on stderr. The stream must outlive the logger and
   its children. Returns NULL with *status (may be NULL) INVALID_ARGUMENT when the desc
   is invalid (a level or sink out of range, AM2Z_SINK_CALLBACK without callback) or
   NO_MEMORY, and the detail set. */
AM2Z_API am2z_logger *am2z_logger_new(const am2z_logger_desc *desc, am2z_status *status);
/* A logger writing where the parent writes, at the parent's level, with more context
   fields (fields borrowed: the members of that object are copied over the parent's; a
   non-object is ignored) and, if source != NULL, another source. The child does not
   keep the parent alive. NULL parent or out of memory gives NULL. */
AM2Z_API am2z_logger *am2z_logger_child(const am2z_logger *parent, const am2z_value *fields,
                                        const char *source);
AM2Z_API am2z_logger *am2z_logger_retain(const am2z_logger *logger);  /* NULL stays NULL */
AM2Z_API void am2z_logger_release(am2z_logger *logger);               /* NULL is a no-op */
/* Non-zero when am2z_log at this level would write something: check it before
   building an expensive fields object. NULL logger: 0. */
AM2Z_API int am2z_logger_enabled(const am2z_logger *logger, am2z_log_level level);
/* One entry, written whole. NULL logger: no-op. Level DEFAULT means info. fields
   (borrowed, may be NULL) are merged over the logger's context, the call's fields
   winning. Out of memory degrades the entry (the context dropped, or the message cut
   and marked "... [truncated]") rather than failing. */
AM2Z_API void am2z_log(const am2z_logger *logger, am2z_log_level level, const am2z_value *fields,
                       const char *fmt, ...) AM2Z_PRINTF(4, 5);
AM2Z_API const char *am2z_log_level_name(am2z_log_level level); /* "debug", "info", ...; static */
#define am2z_log_debug(lg, ...) am2z_log((lg), AM2Z_LOG_DEBUG, NULL, __VA_ARGS__)
#define am2z_log_info(lg, ...)  am2z_log((lg), AM2Z_LOG_INFO, NULL, __VA_ARGS__)
#define am2z_log_warn(lg, ...)  am2z_log((lg), AM2Z_LOG_WARN, NULL, __VA_ARGS__)
#define am2z_log_error(lg, ...) am2z_log((lg), AM2Z_LOG_ERROR, NULL, __VA_ARGS__)

/* ==== 5. processors =================================================================== */

typedef struct am2z_ctx am2z_ctx;
typedef struct am2z_processor am2z_processor;

/* HANDING OVER PROCESSORS. Every function that takes a processor to keep it consumes
   the caller's reference, also when it fails: am2z_processor_desc.dependencies, the
   composite constructors of section 6 and am2z_runtime_register. Each accepts NULL (a
   constructor that failed) and then fails with AM2Z_STATUS_INVALID_ARGUMENT, keeping
   the first failure's detail, so a pipeline is one expression with one check:
       st = am2z_runtime_register(rt, am2z_chain_new(&(am2z_chain_desc){
                .name = "ab", .count = 2, .steps = (am2z_processor *[]){
                    am2z_processor_new(&a, NULL), am2z_processor_new(&b, NULL)}}, NULL));
       if (st) fprintf(stderr, "%s\n", am2z_status_detail());
   A processor used in two places is retained once more by its author. */

/* A processor function. input is borrowed (valid for the call). Edit it with am2z_edit
   (am2z_edit_begin(input) ... return am2z_edit_end(&e)), or return am2z_ok with a state
   you own, or am2z_fail. A result with neither state nor error becomes a clear
   ProcessorExecutionError. */
typedef am2z_result (*am2z_processor_fn)(am2z_ctx *ctx, const am2z_state *input);

typedef enum am2z_backoff {
    AM2Z_BACKOFF_DEFAULT = 0, /* exponential */
    AM2Z_BACKOFF_FIXED,       /* delay */
    AM2Z_BACKOFF_LINEAR,      /* delay * attempt */
    AM2Z_BACKOFF_EXPONENTIAL  /* delay * multiplier^(attempt-1) */
} am2z_backoff;

/* attempt is the attempt that just failed (1-based). Return non-zero to retry. */
typedef int (*am2z_should_retry_fn)(const am2z_error *error, int attempt, void *user_data);

typedef struct am2z_retry_policy {
    int max_attempts;      /* total attempts; 0 means 1 (no retry) */
    am2z_backoff backoff;
    int64_t delay_ms;      /* base delay; default 100; negative: retry at once */
    double multiplier;     /* exponential factor; default 2 */
    int64_t max_delay_ms;  /* cap; default 30000 */
    double jitter;         /* 0..1: the delay is reduced by up to this fraction at random,
                              so it lies in [delay * (1 - jitter), delay] */
    am2z_should_retry_fn should_retry; /* default: retry when error->retryable */
    void *user_data;
} am2z_retry_policy;

/* A circuit breaker: am2z_processor_desc.breaker; all zero means none.
   CLOSED  attempts run; failed attempts are counted: an attempt that timed out, or whose
           error is retryable (a transient failure: network, resource, timeout, or any
           error marked with am2z_error_with_retryable). Permanent errors (validation,
           business, cancelled, ...) say nothing about a dependency's health and are not
           counted; successes do not reset the count. failure_threshold failures within
           window_ms (the last failure_threshold failure times are kept) open it.
   OPEN    for open_ms every attempt fails at once with a CircuitOpenError (details
           retryAt, retryAfterMs) and the processor is not called.
   HALF-OPEN  then up to half_open_probes attempts run at a time as probes: a probe's
           success closes the breaker (the count starts afresh), its counted failure opens
           it again for open_ms, any other end (a permanent error, a cancel) frees its
           slot. Attempts beyond the probes fail fast (retryAt: when the probes' slots
           expire). A probe that does not end within open_ms (a hung processor, a crashed
           worker) frees its slot then; its late end is ignored.
   SCOPE   one breaker per runtime and processor name, checked before each attempt
           (top-level, nested or execute_many) and fed by its end, timeouts included.
           Local and inline runtimes keep it in the process (inline: on its virtual
           clock, so tests need not wait); the queue runtime keeps it in Redis, shared
           by every process (am2z_resp.h, BREAKERS). Composites have none of their own:
           put it on the processor that calls the dependency.
   RETRIES A CircuitOpenError is not retried within its execution unless the backoff
           before the next attempt reaches past retryAt (am2z_retry_delay_ms returns -1
           otherwise): the execution fails fast instead of spending its attempts on a
           breaker that is still open; its caller may try again at retryAt.
   EVENTS  (section 7) processor:breaker:opened, processor:breaker:half-open,
           processor:breaker:closed. */
#ifndef AM2Z_BREAKER_MAX_THRESHOLD
#define AM2Z_BREAKER_MAX_THRESHOLD 1000 /* failure_threshold and half_open_probes at most */
#endif
#ifndef AM2Z_BREAKER_MAX_MS
#define AM2Z_BREAKER_MAX_MS ((int64_t)365 * 24 * 3600 * 1000) /* window_ms and open_ms at most */
#endif
typedef struct am2z_breaker_policy {
    int failure_threshold;  /* counted failures within window_ms that open it; 0: no breaker */
    int64_t window_ms;      /* the rolling window; 0: 60000 */
    int64_t open_ms;        /* how long it stays open before probing; 0: 30000 */
    int half_open_probes;   /* probes allowed at a time while half-open; 0: 1 */
} am2z_breaker_policy;

typedef struct am2z_queue_config {
    int concurrency;       /* max simultaneous executions of this processor; 0 = unlimited */
    int priority;          /* 0 (default) runs first, then 1, 2, ... (FIFO within a
                              priority), as in BullMQ */
    int rate_limit_per_minute; /* 0 = unlimited */
    int64_t delay_ms;      /* start each execution this much later */
    int global_concurrency; /* max simultaneous executions of this processor in ALL
                              processes and sessions together; 0 = unlimited, at most
                              AM2Z_MAX_CONCURRENCY. Queue runtime: BullMQ's global
                              concurrency (the global queue's meta "concurrency"),
                              counted over the processor's global and session queues
                              atomically when a job moves to active (LIMITS in 4.3 of
                              am2z_resp.h). Local runtime: one process, so it caps like
                              concurrency (the smaller one holds). Inline: one at a time */
} am2z_queue_config;

#ifndef AM2Z_MAX_CONCURRENCY
/* Largest global_concurrency / session_concurrency accepted (as BullMQ, whose scripts
   read the queue's meta concurrency as a number; larger values are refused). */
#define AM2Z_MAX_CONCURRENCY 1000000
#endif

/* A rate limit: at most max starts in each window of per_ms, a fixed window opened by
   the first start after the previous one closed (BullMQ's limiter). {0, 0}: none; max
   in 1..AM2Z_RATE_MAX with per_ms in 1..AM2Z_RATE_MAX_PER_MS, anything else is refused.
   am2z_local_desc.session_rate and am2z_queue_desc.session_rate use it per session. */
typedef struct am2z_rate {
    int max;                /* starts per window */
    int64_t per_ms;         /* the window */
} am2z_rate;
#ifndef AM2Z_RATE_MAX
#define AM2Z_RATE_MAX 1000000000 /* largest am2z_rate.max (the limiter scripts clamp to it) */
#endif
#ifndef AM2Z_RATE_MAX_PER_MS
#define AM2Z_RATE_MAX_PER_MS 86400000 /* longest am2z_rate.per_ms: one day */
#endif

/* Who enforces a top-level execution's timeout (am2z_processor_desc.deadlines,
   am2z_local_desc.deadlines; the local runtime's section 8 says what each costs). */
typedef enum am2z_deadlines {
    AM2Z_DEADLINES_DEFAULT = 0,  /* processor: the runtime's choice; runtime: EXACT */
    AM2Z_DEADLINES_EXACT,        /* a worker runs it, the caller returns at the deadline
                                    even when the processor ignores cancellation */
    AM2Z_DEADLINES_COOPERATIVE   /* the caller's thread may run it: am2z_ctx_cancelled()
                                    turns true at the deadline, a late result becomes a
                                    TimeoutError when the processor returns */
} am2z_deadlines;

typedef struct am2z_processor_desc {
    const char *name;            /* required; [A-Za-z0-9_.-], 1..AM2Z_NAME_MAX bytes */
    am2z_processor_fn fn;        /* required for a plain processor */
    const char *description;
    int64_t timeout_ms;          /* 0: the runtime's default; exact, nothing added */
    am2z_retry_policy retry;
    am2z_queue_config queue;
    am2z_processor *const *dependencies; /* registered with it; each consumed (NULL ok) */
    size_t dependency_count;
    void *user_data;             /* am2z_ctx_user_data() */
    am2z_deadlines deadlines;    /* top-level timeouts of this processor: DEFAULT follows
                                    the runtime (am2z_local_desc.deadlines); EXACT for a
                                    processor that may ignore cancellation. Composites
                                    follow the runtime */
    am2z_breaker_policy breaker; /* zero: no circuit breaker (see am2z_breaker_policy) */
} am2z_processor_desc;

#ifndef AM2Z_NAME_MAX
#define AM2Z_NAME_MAX 128
#endif

/* Copies the desc (strings duplicated) and takes over the dependencies (consumed, also
   on failure). Returns the processor with *status (may be NULL) AM2Z_STATUS_OK, or NULL
   with AM2Z_STATUS_INVALID_ARGUMENT when the desc is invalid (no name, a name with other
   characters or longer than AM2Z_NAME_MAX, no fn, a negative timeout / count / delay /
   priority, jitter outside 0..1, a NULL dependency, a breaker field negative or above
   its limit, or set without failure_threshold) or AM2Z_STATUS_NO_MEMORY; the detail
   names the processor and the reason. Processors are immutable: share them freely. */
AM2Z_API am2z_processor *am2z_processor_new(const am2z_processor_desc *desc, am2z_status *status);
AM2Z_API am2z_processor *am2z_processor_retain(const am2z_processor *p); /* NULL stays NULL */
AM2Z_API void am2z_processor_release(am2z_processor *p);                 /* NULL is a no-op */
AM2Z_API const char *am2z_processor_name(const am2z_processor *p); /* borrowed */
/* Borrowed. For a composite: name, description (given or generated), timeout_ms as
   given, an internal fn, zero retry and queue options, no dependencies. */
AM2Z_API const am2z_processor_desc *am2z_processor_desc_of(const am2z_processor *p); /* borrowed */

/* Delay before the attempt after `attempt` (1-based) failed with err, or -1 when the
   policy says stop: attempts used up (max_attempts <= 0 counts as 1), should_retry
   says no, or (without should_retry) err is NULL or not retryable. Otherwise, before
   jitter: FIXED delay, LINEAR delay * attempt, EXPONENTIAL / DEFAULT
   delay * multiplier^(attempt-1), each capped at max_delay_ms. A CircuitOpenError
   whose details.retryAfterMs exceeds that delay gives -1 (see am2z_breaker_policy,
   RETRIES). Thread-safe (jitter
   uses a lock-free generator, not rand()). Both runtimes use it. */
AM2Z_API int64_t am2z_retry_delay_ms(const am2z_retry_policy *policy, const am2z_error *err, int attempt);

/* What a processor learns about its execution (the original's ctx.meta). */
typedef struct am2z_meta {
    const char *processor;
    const char *execution_id;  /* stable across the attempts of one execution */
    const char *session_id;
    int attempt;               /* 1-based */
    int call_depth;            /* 0 for a top-level execution */
    int64_t started_at;        /* epoch ms when this attempt started */
} am2z_meta;

/* All pointers returned by ctx functions are borrowed for the execution. The ctx
   functions are called by the execution's own thread; a NULL ctx gives NULL / 0. */
AM2Z_API const am2z_meta *am2z_ctx_meta(const am2z_ctx *ctx);
AM2Z_API const am2z_logger *am2z_ctx_logger(const am2z_ctx *ctx);
AM2Z_API void *am2z_ctx_user_data(const am2z_ctx *ctx); /* the processor desc's user_data */
/* Non-zero once the execution was cancelled (timeout, stop_session, stop, parent) or
   its deadline has passed. Long-running processors should poll it. */
AM2Z_API int am2z_ctx_cancelled(const am2z_ctx *ctx);
/* Milliseconds left before the deadline (0 once passed); INT64_MAX without a deadline. */
AM2Z_API int64_t am2z_ctx_remaining_ms(const am2z_ctx *ctx);
/* Now, in milliseconds since the Unix epoch, on the clock of the runtime running the
   execution: am2z_now_ms() on the real clock, the virtual time on an inline runtime
   with a virtual clock (section 9). A processor that reads the time through it can be
   tested at any instant without waiting. am2z_now_ms() for a NULL ctx. */
AM2Z_API int64_t am2z_ctx_now_ms(const am2z_ctx *ctx);
/* Runs another registered processor with this execution's session, depth + 1 and the
   remaining budget. Fails with CallDepthExceededError beyond the runtime's limit. The
   result is yours (input borrowed); it holds exactly one of state / error. */
AM2Z_API am2z_result am2z_ctx_call(am2z_ctx *ctx, const char *processor, const am2z_state *input);
/* Runs count calls concurrently; results[i] gets the outcome of names[i](inputs[i]).
   inputs borrowed; every results[i] is yours to clear. */
AM2Z_API void am2z_ctx_call_many(am2z_ctx *ctx, const char *const *processors,
                                 const am2z_state *const *inputs, size_t count, am2z_result *results);
/* Emits a runtime event; data is consumed (may be NULL). */
AM2Z_API void am2z_ctx_emit(am2z_ctx *ctx, const char *event, am2z_value *data);
/* Emits "processor:progress" {processorName, executionId, progress}. */
AM2Z_API void am2z_ctx_progress(am2z_ctx *ctx, double progress);

/* ==== 6. composition ================================================================== */
/* Each composite is a processor: register it (its children are registered with it),
   nest it in another, call it. Every constructor consumes the child references in its
   desc (steps, branches, route targets including the fallback, batch target), also on failure;
   see HANDING OVER PROCESSORS in section 5. A composite runs its children by name
   through the context (am2z_ctx_call_many), so it behaves the same on every runtime;
   each child is a nested call (depth + 1, same session, the parent's remaining time).
   Every constructor returns NULL with *status (may be NULL) AM2Z_STATUS_INVALID_ARGUMENT
   for an invalid desc (bad name, no or NULL children, negative timeout; the detail says
   which, e.g. "chain 'checkout': step 2 is NULL (processor 'b': no fn)") or
   AM2Z_STATUS_NO_MEMORY, and sets it to AM2Z_STATUS_OK on success. Without a
   description one is generated:
   "Sequential chain: a -> b", "Parallel execution: a || b", "Router: k1 | k2 | *"
   ("*" = fallback), "Batch execution: t x3" / "Batch execution: t over items". */

/* Runs the steps in order, each output feeding the next; after each step emits
   "processor:completed" {processorName, chainName, chainPosition (1-based),
   totalProcessors, stepCompleted: true}. The first failure stops the chain with a
   ProcessorExecutionError of the chain: cause = the step's error, partial_state = the
   state before that step, details {failedProcessor, failedStep (0-based),
   completedSteps}. A cancelled chain stops before its next step the same way.
   COMPENSATION (saga): when step k fails (after its own retries) and the chain is not
   cancelled, the compensations of steps k-1 .. 0 that exist run in that order, each
   called (a nested call, with its processor's retries) with the state as it was after
   its step; a failing compensation is reported and the others still run. The chain's
   error is then the same ProcessorExecutionError (cause = step k's error) whose details
   add "compensations": [{step, processor, ok, error?: am2z_error_to_json}...] in the
   order they ran and "compensated": true when every one succeeded. In a durable
   execution (section 7d) compensation progress is checkpointed: a resumed chain goes
   on with the next compensation and never runs a step again. */
typedef struct am2z_chain_desc {
    const char *name;
    am2z_processor *const *steps;  /* at least one; each consumed */
    size_t count;
    int64_t timeout_ms;            /* 0: the sum of the steps' timeouts (compensations
                                      included) */
    const char *description;
    /* Saga: NULL, or count entries: compensations[k] undoes step k (NULL: nothing to
       undo); each consumed, registered with the chain. See COMPENSATION below. */
    am2z_processor *const *compensations;
} am2z_chain_desc;
AM2Z_API am2z_processor *am2z_chain_new(const am2z_chain_desc *desc, am2z_status *status);

/* A parallel runs every branch on the same input concurrently (one call_many) and emits
   "processor:completed" {processorName, parallelName, parallelPosition, totalProcessors,
   stepCompleted} per branch. If any branch fails, the result is a ProcessorExecutionError
   of the parallel whose cause is the first failure in declaration order, with details
   {failedProcessor, failedBranch, branches: [{processor, ok, error?: message}...]}.
   Otherwise the merge function's result.
   outputs[i] is branch i's state; return the merged state (a new reference) or a failure. */
typedef am2z_result (*am2z_merge_fn)(am2z_ctx *ctx, const am2z_state *input,
                                     const am2z_state *const *outputs, size_t count, void *user_data);
typedef struct am2z_parallel_desc {
    const char *name;
    am2z_processor *const *branches; /* at least one; each consumed */
    size_t count;
    int64_t timeout_ms;            /* 0: the largest of the branches' timeouts */
    am2z_merge_fn merge;           /* NULL: am2z_merge_3way */
    void *merge_user_data;
    const char *description;
} am2z_parallel_desc;
AM2Z_API am2z_processor *am2z_parallel_new(const am2z_parallel_desc *desc, am2z_status *status);
/* The default merge: a 3-way merge of each output against the input, in branch order,
   starting from the input. What a branch changed relative to the input is applied:
   added, changed and removed members, recursing into objects both sides changed. An
   array a branch only appended to (the input's elements are its prefix) contributes
   its new elements after those of earlier branches (input [x], branches [x,a] and
   [x,b] give [x,a,b]); any other array change is a replacement. Different writes to
   the same member resolve to the last branch and emit one "merge:conflict" event per
   member: {processorName, path (JSON Pointer), values: [each write in branch order;
   null for a removal], resolved}. The top-level "metadata" stays the input's (the
   runtime bumps the version). Members whose key contains NUL keep the input's value.
   Fails with ValidationError when the input or an output is not an object. */
AM2Z_API am2z_result am2z_merge_3way(am2z_ctx *ctx, const am2z_state *input,
                                     const am2z_state *const *outputs, size_t count, void *user_data);

/* A router runs the route whose key equals select(input), else the fallback: the
   route whose key is NULL (at most one). The fallback is a route like the others, so a
   fallback whose constructor failed (NULL target) fails router_new like any NULL
   target instead of silently meaning "no fallback". The target's result is the
   router's result, unchanged. Without a target the router fails with a
   ProcessorExecutionError whose cause (code NO_ROUTE, not retryable) says
   "No route found for: <key>" ("(no key)" for NULL), details {routeKey}.
   select returns a route key (borrowed until the next call) or NULL for the fallback;
   it is called on the execution's thread, possibly from several executions at once. */
typedef const char *(*am2z_route_fn)(const am2z_state *input, void *user_data);
typedef struct am2z_route {
    const char *key;               /* copied; NULL: the fallback */
    am2z_processor *target;        /* consumed */
} am2z_route;
typedef struct am2z_router_desc {
    const char *name;
    am2z_route_fn select;          /* required */
    void *user_data;
    const am2z_route *routes;      /* at least one; keys unique */
    size_t count;
    int64_t timeout_ms;            /* 0: the runtime's default */
    const char *description;
} am2z_router_desc;
AM2Z_API am2z_processor *am2z_router_new(const am2z_router_desc *desc, am2z_status *status);

/* A batch runs target once per payload, concurrently (one call_many), and returns its
   input with the outputs, in payload order, as an array at results_path. A payload
   object without "metadata" runs as a new state of the execution's session and its
   output is written back without "metadata" (plain in, plain out); a payload that is a
   state runs as it is and comes back whole.
   Fail fast: the first failure by index fails the batch with a ProcessorExecutionError
   (cause = that item's error, details {failedProcessor, batchIndex}). Settle all: the
   batch succeeds; a failed item's slot in the results is null and
   "<results_path>Errors" gets [{index, error (am2z_error_to_json)}...] ([] when none).
   A run-time items_path that is missing or not an array of objects fails the batch
   with ValidationError; an empty array gives empty results. */
typedef enum am2z_batch_mode {
    AM2Z_BATCH_DEFAULT = 0,   /* fail fast */
    AM2Z_BATCH_FAIL_FAST,     /* the first failure by index fails the batch */
    AM2Z_BATCH_SETTLE_ALL     /* every item runs; failures are listed per item */
} am2z_batch_mode;
typedef struct am2z_batch_desc {
    const char *name;
    am2z_processor *target;       /* registered with the batch; consumed */
    const am2z_value *payloads;   /* non-empty array of objects fixed at build time (retained), or */
    const char *items_path;       /* path of an array in the input read at run time (exactly one) */
    const char *results_path;     /* where outputs go; default items_path, else "results";
                                     must name an object member (not end in "]" or "/") */
    am2z_batch_mode mode;
    int64_t timeout_ms;           /* 0: the runtime's default */
    const char *description;
} am2z_batch_desc;
AM2Z_API am2z_processor *am2z_batch_new(const am2z_batch_desc *desc, am2z_status *status);

/* ==== 6b. cron expressions ============================================================ */
/* The standard 5-field cron syntax, for schedules: "minute hour day-of-month month
   day-of-week", e.g. "0-59/5 * * * *" (every 5 minutes; also written with "*" before the "/5"),
   "0 9 * * MON-FRI", "0 0 1,15 * *".
   Each field is "*", a number, a range "a-b", any of those with a step "/n", or a comma
   list of them. Ranges: minute 0-59, hour 0-23, day 1-31, month 1-12 or JAN-DEC, weekday
   0-7 or SUN-SAT (0 and 7 are Sunday; "SUN" ending a range is 7, so "FRI-SUN" works);
   names are case-insensitive. A single value with a step, "5/20", runs from the value to
   the end of the range.
   "@yearly" (= "@annually"), "@monthly", "@weekly", "@daily" (= "@midnight") and
   "@hourly" stand for their usual expressions.
   As in Vixie cron and BullMQ: when both day fields are restricted, a day matches if
   EITHER matches ("0 0 13 * FRI" fires on every 13th and every Friday); a field starting
   with "*" counts as unrestricted.
   Times are UTC: no time-zone database is needed and a schedule fires the same on every
   machine (a local-time schedule would skip or repeat slots at DST changes).
   Strict: anything else fails with AM2Z_STATUS_INVALID_ARGUMENT and a detail naming the
   field and the offset (am2z_status_offset) of the bad character, e.g.
   "cron: hour: 24 is out of range 0-23". At most AM2Z_CRON_MAX_LENGTH bytes. */
#ifndef AM2Z_CRON_MAX_LENGTH
#define AM2Z_CRON_MAX_LENGTH 256
#endif
typedef struct am2z_cron {
    uint64_t minutes;           /* bit m: minute m matches */
    uint32_t hours;             /* bit h */
    uint32_t days;              /* bit d, 1-31 */
    uint16_t months;            /* bit m, 1-12 */
    uint8_t weekdays;           /* bit w, 0-6 (Sunday 0) */
    uint8_t days_restricted;    /* day-of-month field did not start with "*" */
    uint8_t weekdays_restricted;
} am2z_cron;
/* Parses expr (len bytes, or AM2Z_NTS) into *out (written only on success). */
AM2Z_API am2z_status am2z_cron_parse(const char *expr, size_t len, am2z_cron *out);
/* The first time the schedule fires strictly after after_ms (ms since the epoch, UTC), on
   a whole minute; AM2Z_STATUS_OK with *next_ms, or AM2Z_STATUS_NOT_FOUND when it never
   fires within AM2Z_CRON_SEARCH_YEARS years (e.g. "0 0 30 2 *": February 30th) or would
   pass year 9999. */
#ifndef AM2Z_CRON_SEARCH_YEARS
#define AM2Z_CRON_SEARCH_YEARS 9 /* a February 29th fires at most 8 years apart (2096-2104) */
#endif
AM2Z_API am2z_status am2z_cron_next(const am2z_cron *cron, int64_t after_ms, int64_t *next_ms);

/* ==== 7. runtime interface ============================================================ */
/* A runtime runs registered processors. The runtimes (sections 8 and 9, am2z_resp.h) share
   this interface, so moving from local to distributed changes one constructor call.

   REGISTRY  am2z_runtime_register(rt, p) takes over the caller's reference to p (also on
   failure; NULL fails with AM2Z_STATUS_INVALID_ARGUMENT and the detail of the
   constructor that failed) and registers p and, recursively, every processor it
   contains (composite children, batch target, dependencies); the registry keeps a
   reference to each. Registering the same object again is a no-op (AM2Z_STATUS_OK);
   another processor under a registered name gives AM2Z_STATUS_EXISTS (unregister first
   to replace one); a processor containing, directly or not, a processor with its own
   name gives AM2Z_STATUS_CYCLE (calls by name would recurse forever); nesting deeper
   than AM2Z_REGISTER_MAX_DEPTH gives AM2Z_STATUS_LIMIT. On failure nothing is
   registered and the detail names the culprit. Unregister removes that one name
   (children stay). Lookups take a shared read lock.

   EVENTS  Handlers run synchronously on the thread that emits: the worker running the
   execution for job, composite, progress and custom events; the calling thread for
   "session:created" (first use), "session:cleanup" (stop_session, stop) and for a
   TimeoutError the waiting caller detects; a thread of the runtime's own, which runs
   no processor, for "metrics". A handler may run on several threads at once. A slow
   handler delays only that thread and the execution it serves. A handler may call
   on/off (see am2z_runtime_off) and anything but start, stop and free of its own
   runtime, which refuse (see CALLBACKS). data is borrowed for the call and is always
   an object. Names and payloads:
     processor:job:started    {processorName, executionId, sessionId, attempt, callDepth}
     processor:job:completed  {processorName, executionId, sessionId, attempts, callDepth,
                               executionTime (ms, a double)}
     processor:job:failed     {... same ..., error}      (final failures only)
     processor:job:retrying   {processorName, executionId, sessionId, attempt (the one
                               that failed), delayMs, error}
     session:created, session:cleanup  {sessionId}
     processor:breaker:opened {processorName, failures (counted ones that opened it: the
                               threshold, or 1 when a probe failed), probe (0/1), windowMs,
                               openMs, retryAt (epoch ms)}
     processor:breaker:half-open  {processorName, probes (allowed at a time), retryAt}
     processor:breaker:closed {processorName}
                              (am2z_breaker_policy; emitted by the thread whose attempt
                              made the change; on a queue runtime, in that process only)
     processor:completed, merge:conflict, processor:progress  (section 6 / am2z_ctx_*)
     metrics                  the am2z_runtime_stats snapshot, every metrics interval
                              (local runtime: am2z_local_desc.metrics_interval_ms; off
                              by default); skipped while nobody listens
   plus anything passed to am2z_ctx_emit. "*" receives every event.

   CALLBACKS  Processors and event handlers of a runtime run on its threads, which
   start, stop and free join or wait for. Called from inside a processor or an event
   handler of that same runtime (on any thread, nested calls included), start and stop
   return AM2Z_STATUS_INVALID_ARGUMENT with a detail and change nothing, and free does
   nothing but log an error and record that detail: each would wait for the very
   callback it is called from. Stop a runtime from another thread (a processor can set
   a flag that the main thread watches). stop_session from inside the session it stops
   is allowed: see am2z_runtime_stop_session.

   THREADING  Every function may be called from any thread, concurrently, except
   am2z_runtime_free, which must be the last call. */

typedef struct am2z_runtime am2z_runtime;

#ifndef AM2Z_REGISTER_MAX_DEPTH
#define AM2Z_REGISTER_MAX_DEPTH 64 /* composite nesting walked by register */
#endif


typedef struct am2z_execution am2z_execution; /* a submitted execution */

/* An event handler (see EVENTS above); data is borrowed for the call. */
typedef void (*am2z_event_fn)(const char *event, const am2z_value *data, void *user_data);

/* Consumes p (see REGISTRY). A queue runtime writes to Redis here, for at most its
   redis.command_timeout_ms in all (am2z_resp.h 4.8, BOUNDS). */
AM2Z_API am2z_status am2z_runtime_register(am2z_runtime *rt, am2z_processor *p);
/* Registers ps[0..count) in order, stopping at the first failure; consumes every one. */
AM2Z_API am2z_status am2z_runtime_register_many(am2z_runtime *rt, am2z_processor *const *ps, size_t count);
AM2Z_API am2z_status am2z_runtime_unregister(am2z_runtime *rt, const char *name);
AM2Z_API int am2z_runtime_is_registered(am2z_runtime *rt, const char *name);
AM2Z_API am2z_value *am2z_runtime_list(am2z_runtime *rt); /* array of names */

/* Starts a stopped runtime (AM2Z_STATUS_OK if it runs already). From inside one of
   rt's processors or handlers: AM2Z_STATUS_INVALID_ARGUMENT (see CALLBACKS). */
AM2Z_API am2z_status am2z_runtime_start(am2z_runtime *rt);
/* Waits up to grace_ms for running executions, then cancels the rest; when it returns,
   none of rt's processors or handlers runs on its threads any more. From inside one of
   rt's processors or handlers: AM2Z_STATUS_INVALID_ARGUMENT, nothing stopped (see
   CALLBACKS); so is a restart (stop + start) from there. Returns within grace_ms after
   the running processors return (a queue runtime: + 500 ms, whatever Redis does). */
AM2Z_API am2z_status am2z_runtime_stop(am2z_runtime *rt, int64_t grace_ms);
/* Non-zero between a successful start (constructors start their runtime) and stop. */
AM2Z_API int am2z_runtime_is_started(am2z_runtime *rt);

/* The configuration a runtime resolved from its desc (defaults filled in). */
typedef struct am2z_runtime_settings {
    const char *kind;           /* "local", "queue" or "inline" (static) */
    int workers;                /* worker threads of this process (0: none, a producer) */
    int64_t default_timeout_ms; /* for processors without a timeout */
    int max_call_depth;         /* nested ctx calls allowed */
    size_t queue_capacity;      /* top-level executions that may wait; 0: no limit */
    int64_t metrics_interval_ms; /* period of the "metrics" event; 0: off */
    int64_t spin_ns;            /* local: how long waiters spin before blocking; 0: never */
    am2z_deadlines deadlines;   /* local: EXACT or COOPERATIVE (resolved); queue: DEFAULT */
} am2z_runtime_settings;
/* rt's settings; all zero for NULL. */
AM2Z_API am2z_runtime_settings am2z_runtime_config(am2z_runtime *rt);

/* Blocking; input borrowed. Session "default" when session_id is NULL. The outcome
   names its execution and session; its state's metadata.sessionId is that session.
   A queue runtime returns by the execution's deadline (timeout x attempts + backoffs)
   plus a few ms, whatever Redis does (a TimeoutError when Redis does not answer). */
AM2Z_API am2z_outcome am2z_runtime_execute(am2z_runtime *rt, const char *processor, const am2z_state *input);
AM2Z_API am2z_outcome am2z_runtime_execute_in_session(am2z_runtime *rt, const char *processor,
                                                      const am2z_state *input, const char *session_id);
/* Starts an execution and returns its handle, to wait on and then free, or to detach.
   NULL when it cannot be submitted, with *status (may be NULL; AM2Z_STATUS_OK on
   success) and a detail naming the processor: AM2Z_STATUS_NOT_FOUND (not registered),
   AM2Z_STATUS_NOT_STARTED (stopped runtime), AM2Z_STATUS_CANCELLED (session stopping),
   AM2Z_STATUS_INVALID_ARGUMENT (no name or input, bad session id), AM2Z_STATUS_LIMIT
   (full queue), AM2Z_STATUS_NO_MEMORY, AM2Z_STATUS_IO (queue runtime). input borrowed. */
AM2Z_API am2z_execution *am2z_runtime_submit(am2z_runtime *rt, const char *processor,
                                             const am2z_state *input, const char *session_id,
                                             am2z_status *status);
/* Per-call options for am2z_runtime_submit_with and am2z_runtime_execute_with; zero
   means default, so a zeroed desc is am2z_runtime_submit's behaviour. New options are
   added here rather than as new entry points. A runtime refuses an option it does not
   honour (AM2Z_STATUS_INVALID_ARGUMENT, the detail names the option and the runtime);
   it never ignores one. */
typedef struct am2z_submit_desc {
    const char *session_id;      /* NULL: "default" */
    /* -- idempotency (issue 13): see IDEMPOTENCY below -- */
    const char *idempotency_key; /* borrowed for the call; NULL: none. 1..AM2Z_IDEMPOTENCY_KEY_MAX
                                    bytes, any but NUL. Scope: (processor, session, key) */
    int64_t keep_ms;             /* how long a finished run keeps answering its key, from its
                                    end: 0: AM2Z_IDEMPOTENCY_KEEP_MS (1 h); < 0: not at all (the
                                    key only joins a run in progress). The running call's counts */
    int forget_failures;         /* 0 (default): a failed run is remembered like a success (its
                                    failure is the answer until keep_ms); 1: a failure is not
                                    kept, the next call with the key runs again. The running
                                    call's counts */
    /* -- running later (issue 13 section 2) -- */
    int64_t delay_ms;            /* start the first attempt this much later (>= 0; replaces the
                                    processor's queue.delay_ms for this call when > 0) */
    int64_t run_at_ms;           /* or at this epoch ms (the runtime's clock: virtual on an
                                    inline runtime with one); in the past: now. Not with delay_ms */
    /* Durable executions (section 7d; local / inline runtime with a desc .store, queue
       runtime with its records in Redis): */
    const char *execution_id;    /* copied; the durable execution's id, [A-Za-z0-9_.:-],
                                    1..AM2Z_DURABLE_MAX_ID bytes; NULL: a generated one.
                                    Only with durable */
    int durable;                 /* non-zero: checkpoint every chain step through the
                                    runtime's store, resumable after a crash (7d) */
    int trace;                   /* non-zero: record the execution's trace into
                                    outcome.trace (section 7f); the runtime's own trace
                                    option turns it on for every execution */
    size_t trace_max_spans;      /* spans the trace keeps; 0: AM2Z_TRACE_MAX_SPANS */
} am2z_submit_desc;
/* IDEMPOTENCY  While a run with the same (processor, session, idempotency_key) runs, or
   within its keep_ms after it finished, a submit or execute with the key does not run the
   processor again: it gets a handle on that run and the same outcome (its wait waits for
   the run if it still runs; the handle's id is the run's execution id). Its input and
   other options are not looked at. Different keys, sessions or processors run apart.
     Local and inline runtimes (and any runtime built on 7b): a table per runtime. A
   finished key is dropped when it is looked up after it expired, and every expired key
   when the table holds AM2Z_IDEMPOTENCY_MAX_KEYS keys; a table full of live keys refuses
   a new key with AM2Z_STATUS_LIMIT. Freeing the last handle of an unfinished run cancels
   it (as am2z_execution_free does) and forgets the key; detaching it lets it run, and its
   outcome answers the key from when it is collected (by the next call with the key, or
   when the table is full) until keep_ms after it ended. A run that waits for its own key
   waits for itself (the inline runtime says so: AM2Z_STATUS_TIMEOUT).
     Queue runtime: the same in one process, and across processes atomically: the job id
   is derived from the key ("<processor>-i-<32 hex of SHA-256(session, key)>"), so the add
   script finds the existing job and adds none; a caller of another process is registered
   on that job and the finishing script answers it too. The job hash is the record: the
   queue's retention (keep_completed / keep_failed) may remove it before keep_ms ends,
   after which the key runs again; keep retention >= keep_ms for keys you rely on.
   Bad input (AM2Z_STATUS_INVALID_ARGUMENT, the detail names the field): an empty or too
   long key, a negative delay_ms or run_at_ms, both set, a time more than
   AM2Z_SUBMIT_DELAY_MAX_MS ahead. */
#ifndef AM2Z_IDEMPOTENCY_KEY_MAX
#define AM2Z_IDEMPOTENCY_KEY_MAX 256 /* bytes of an idempotency key */
#endif
#ifndef AM2Z_IDEMPOTENCY_MAX_KEYS
#define AM2Z_IDEMPOTENCY_MAX_KEYS 10000 /* keys one runtime (one process) remembers */
#endif
#ifndef AM2Z_IDEMPOTENCY_KEEP_MS
#define AM2Z_IDEMPOTENCY_KEEP_MS 3600000 /* default keep_ms: 1 h */
#endif
#ifndef AM2Z_SUBMIT_DELAY_MAX_MS
#define AM2Z_SUBMIT_DELAY_MAX_MS 31622400000LL /* delay_ms / run_at_ms at most 366 days ahead */
#endif
/* am2z_runtime_submit with options; desc NULL is a zeroed desc. Same ownership, status
   and failures as am2z_runtime_submit. */
AM2Z_API am2z_execution *am2z_runtime_submit_with(am2z_runtime *rt, const char *processor,
                                                  const am2z_state *input, const am2z_submit_desc *desc,
                                                  am2z_status *status);
/* Blocking am2z_runtime_submit_with + wait; input borrowed, the outcome is yours (as
   am2z_runtime_execute_in_session, which it is for a desc with only session_id). */
AM2Z_API am2z_outcome am2z_runtime_execute_with(am2z_runtime *rt, const char *processor,
                                                const am2z_state *input, const am2z_submit_desc *desc);
/* The execution's id (borrowed from the handle; "" for NULL), readable at once;
   outcome.execution_id and events carry the same id. */
AM2Z_API const char *am2z_execution_id(const am2z_execution *e);
/* AM2Z_STATUS_OK with *out filled (clearing what it held; see am2z_outcome), or
   AM2Z_STATUS_TIMEOUT (still running; wait again, free or detach). timeout_ms < 0 waits
   without a limit. One thread at a time may wait on a handle. */
AM2Z_API am2z_status am2z_execution_wait(am2z_execution *e, int64_t timeout_ms, am2z_outcome *out);
/* Frees the handle; an unfinished execution is cancelled and its result discarded. */
AM2Z_API void am2z_execution_free(am2z_execution *e);
/* Fire and forget: frees the handle and lets the execution run to completion (retries
   included); its outcome is discarded (events and stats still see it). stop_session
   still cancels it, and stopping the runtime ends it as it ends every execution. */
AM2Z_API void am2z_execution_detach(am2z_execution *e);
/* Runs count executions (concurrently, or on the calling thread where the runtime
   finds that cheaper: section 8, COOPERATIVE); outs[i] (filled for every i, clearing what it
   held; clear each after) belongs to inputs[i] (borrowed). AM2Z_STATUS_INVALID_ARGUMENT
   for NULL arrays; otherwise AM2Z_STATUS_OK and failures are in the outcomes. */
AM2Z_API am2z_status am2z_runtime_execute_many(am2z_runtime *rt, const char *processor,
                                               const am2z_state *const *inputs, size_t count,
                                               const char *session_id, am2z_outcome *outs);

/* Stops a session: new executions in it are rejected while it stops, those not started
   are cancelled, running ones get up to grace_ms, the rest are cancelled
   (CancelledError "Session <id> stopped"); then it is forgotten ("session:cleanup") and
   its next use creates it afresh. AM2Z_STATUS_NOT_FOUND (with a detail) for a session
   that was never used or is already forgotten. Called from inside the session it stops
   (a processor running in it, or a handler called from one), it does not wait for the
   caller's own execution: the others get the grace period, then the caller's execution
   is cancelled with the rest (its outcome is that CancelledError and
   am2z_ctx_cancelled turns true) and stop_session returns (local runtime). */
AM2Z_API am2z_status am2z_runtime_stop_session(am2z_runtime *rt, const char *session_id, int64_t grace_ms);
/* Stops every active session (am2z_runtime_active_sessions) as stop_session does, each
   with grace_ms; the runtime stays started. The first failure's status, else OK. */
AM2Z_API am2z_status am2z_runtime_stop_all_sessions(am2z_runtime *rt, int64_t grace_ms);
/* JSON snapshots (new references; shapes in each runtime's section). session_stats is
   NULL for a session never used or already forgotten (detail "session_stats '<id>': no
   such session"); active_sessions is an array of ids. Counts settle before outcomes on
   the local runtime (section 8): a caller holding an outcome sees it counted. */
AM2Z_API am2z_value *am2z_runtime_stats(am2z_runtime *rt);
/* The stats of one processor (a new reference; NULL when it has none: on the local
   runtime, neither registered nor run): the member of stats' "processors" named exactly
   name, so names with '.' need no escaping. */
AM2Z_API am2z_value *am2z_runtime_processor_stats(am2z_runtime *rt, const char *name);
AM2Z_API am2z_value *am2z_runtime_session_stats(am2z_runtime *rt, const char *session_id);
AM2Z_API am2z_value *am2z_runtime_active_sessions(am2z_runtime *rt);

#ifndef AM2Z_METRICS_PREFIX_MAX
#define AM2Z_METRICS_PREFIX_MAX 64 /* bytes of am2z_runtime_metrics_text's prefix */
#endif
/* The stats of rt (am2z_runtime_stats, and session_stats of every active session) as
   Prometheus text exposition (format 0.0.4; serve it as "text/plain; version=0.0.4").
   Every metric is named <prefix>_<name> (prefix NULL: "am2z"; otherwise 1 to
   AM2Z_METRICS_PREFIX_MAX bytes of [A-Za-z0-9_:] not starting with a digit) and has
   its # HELP and # TYPE lines before its samples; label values are escaped (\\, \",
   \n). A family is left out when the runtime's stats have nothing for it. Families:
     uptime_seconds, workers, running, registered_processors       gauges (both)
     queued (local), awaiting (queue)                               gauges
     runtime_executions_total{outcome}, runtime_retries_total      this process's counts
     executions_total{processor,outcome}, retries_total{processor}  local, all sessions
     execution_duration_seconds{processor}  local: histogram, le at the stats' latency
                                            buckets (x4 apart, 1.024 us to 68.7 s)
     session_running{session}, session_submitted_total{session},
     session_cancelled_total{session}, session_executions_total{session,processor,
     outcome}, session_retries_total{session,processor}             local
     queue_jobs{[session,]processor,state}  queue: jobs in each BullMQ list or set (no
                                            session label on a processor's global queue)
   outcome is "completed" or "failed". On AM2Z_STATUS_OK *out is a NUL-terminated text
   that the caller frees with am2z_free, and *len (len may be NULL) its length. On
   failure *out is NULL: AM2Z_STATUS_INVALID_ARGUMENT (NULL rt or out, bad prefix),
   AM2Z_STATUS_NO_MEMORY (also when the runtime's stats are NULL). Thread-safe as
   am2z_runtime_stats; a session that ends while the text is built is left out. */
AM2Z_API am2z_status am2z_runtime_metrics_text(am2z_runtime *rt, const char *prefix, char **out, size_t *len);

/* Calls fn for event ("*": every event) from now on, on the emitting threads (see
   EVENTS). Returns a handler id > 0, or 0 on failure (a NULL argument, no memory,
   ids used up) with the reason in am2z_status_detail(). */
AM2Z_API int am2z_runtime_on(am2z_runtime *rt, const char *event, am2z_event_fn fn, void *user_data);
/* Removes a handler, as a barrier: once off returns, the handler is not running on
   another thread and is never called again, so its user_data may be freed. off waits
   for the calls in progress (a slow handler delays it). From inside that handler, off
   does not wait for the call it is made from (nor for the calls of it this thread is
   nested in): it returns at once, and no call starts after it. Two handlers that
   remove each other while both run wait for each other forever: don't. An unknown or
   already removed id is ignored. */
AM2Z_API void am2z_runtime_off(am2z_runtime *rt, int handler_id);
/* Stops (grace 0) if running and frees everything. The last call on rt, made from
   outside its processors and handlers: from inside (see CALLBACKS) it frees nothing,
   logs an error with rt's logger and records the detail. Bounded as stop is. */
AM2Z_API void am2z_runtime_free(am2z_runtime *rt);

/* ==== 7b. runtime implementers: not needed by users =================================== */
/* The queue runtime in am2z_resp.h is built on this part; a program that only uses
   runtimes never needs it. The shared part of a runtime (processor registry with
   dependency registration and cycle detection, event handlers, logger, settings) lives
   in am2z_runtime; a runtime supplies the execution side through am2z_runtime_ops. */

/* The head of every runtime's execution struct (its first member): the generic
   am2z_execution_* functions find the runtime's ops and the id through it. */
struct am2z_execution {
    am2z_runtime *rt;
    const char *id;             /* the runtime's storage, valid while the handle lives */
    const struct am2z_runtime_ops *ops; /* NULL (what a runtime leaves): rt's ops; the runtime
                                           layer's own for handles it makes (idempotency) */
};

typedef struct am2z_schedule_desc am2z_schedule_desc; /* section 7e */

typedef struct am2z_runtime_ops {
    am2z_status (*start)(am2z_runtime *rt);
    am2z_status (*stop)(am2z_runtime *rt, int64_t grace_ms);
    /* Required. desc is never NULL; an option the runtime does not honour is refused
       (see am2z_submit_desc). Returns NULL with *status set on failure. */
    am2z_execution *(*submit)(am2z_runtime *rt, const char *processor, const am2z_state *input,
                              const am2z_submit_desc *desc, am2z_status *status);
    /* Required. out is empty (the caller cleared it). */
    am2z_status (*wait)(am2z_execution *e, int64_t timeout_ms, am2z_outcome *out);
    void (*free_execution)(am2z_execution *e); /* required; cancels an unfinished one */
    void (*detach)(am2z_execution *e);         /* required; frees, lets it run */
    /* Optional fast paths; NULL means built from submit + wait. */
    am2z_outcome (*execute)(am2z_runtime *rt, const char *processor, const am2z_state *input,
                            const char *session_id);
    am2z_status (*execute_many)(am2z_runtime *rt, const char *processor, const am2z_state *const *inputs,
                                size_t count, const char *session_id, am2z_outcome *outs /* empty */);
    am2z_status (*stop_session)(am2z_runtime *rt, const char *session_id, int64_t grace_ms);
    am2z_value *(*stats)(am2z_runtime *rt);
    am2z_value *(*session_stats)(am2z_runtime *rt, const char *session_id);
    am2z_value *(*active_sessions)(am2z_runtime *rt);
    /* Told after the registry changed (may be NULL). */
    void (*registered)(am2z_runtime *rt, am2z_processor *p);
    void (*unregistered)(am2z_runtime *rt, const char *name);
    void (*destroy)(am2z_runtime *rt); /* frees the runtime's own data, not rt */
    /* Optional schedules (section 7e; NULL: AM2Z_STATUS_INVALID_ARGUMENT "not supported
       by this runtime"). desc is checked already (am2z__sched_check): the runtime checks
       only what it alone knows (the processor, its own limits). list returns an array
       sorted by id (NULL with a detail on failure). */
    am2z_status (*schedule_upsert)(am2z_runtime *rt, const am2z_schedule_desc *desc);
    am2z_status (*schedule_remove)(am2z_runtime *rt, const char *id);
    am2z_value *(*schedule_list)(am2z_runtime *rt);
} am2z_runtime_ops;

/* ops and settings->kind are borrowed for the runtime's lifetime (settings is copied);
   impl is the runtime's own data. The runtime is not started: the implementation calls
   am2z_runtime_start. NULL when ops lack a required function or memory runs out. */
AM2Z_API am2z_runtime *am2z_runtime_new(const am2z_runtime_ops *ops, void *impl, am2z_logger *logger,
                                        const am2z_runtime_settings *settings);
AM2Z_API void *am2z_runtime_impl(const am2z_runtime *rt);
AM2Z_API const am2z_logger *am2z_runtime_logger(const am2z_runtime *rt); /* borrowed */
/* A new reference to the registered processor, or NULL. */
AM2Z_API am2z_processor *am2z_runtime_lookup(am2z_runtime *rt, const char *name);
/* Delivers an event to the handlers (data borrowed) on the calling thread, with the
   off barrier and the CALLBACKS guard: the one way a runtime calls handlers. One atomic
   load when no handler is registered. */
AM2Z_API void am2z_runtime_emit(am2z_runtime *rt, const char *event, const am2z_value *data);
/* A new execution id "<processor>-<ms>-<random>", written to buf. The random part comes
   from a per-thread generator seeded from the clock, the thread and the pid; a child
   process seeds again after fork (not in AM2Z_NO_THREADS builds, which have no fork
   hook), so processes forked from one parent do not repeat its ids in a shared Redis. */
AM2Z_API void am2z_execution_id_generate(const char *processor, char buf[AM2Z_EXECUTION_ID_SIZE]);

/* How a runtime serves the ctx functions of the executions it runs. */
typedef struct am2z_ctx_ops {
    void (*call_many)(am2z_ctx *ctx, const char *const *processors, const am2z_state *const *inputs,
                      size_t count, am2z_result *results);
    void (*emit)(am2z_ctx *ctx, const char *event, am2z_value *data /* consumed */);
    int (*cancelled)(const am2z_ctx *ctx);
    /* Optional (NULL = assume yes): non-zero when some handler would receive event, so
       callers skip building payloads nobody reads. */
    int (*wants)(const am2z_ctx *ctx, const char *event);
    /* Optional (NULL = ctx->logger): the execution's child logger, made on first use. */
    const am2z_logger *(*logger)(const am2z_ctx *ctx);
    /* Optional (NULL = the real clocks): the runtime's own clock, in nanoseconds since
       the Unix epoch. When set, deadline_ns is on this clock, and am2z_ctx_cancelled,
       am2z_ctx_remaining_ms and am2z_ctx_now_ms read it (a virtual clock). */
    int64_t (*now_ns)(const am2z_ctx *ctx);
} am2z_ctx_ops;

/* Runtimes place contexts where they like (often on the stack); users only see the
   am2z_ctx_* functions. */
struct am2z_ctx {
    const am2z_ctx_ops *ops;
    void *runtime_data;          /* the runtime's per-execution data */
    am2z_runtime *runtime;
    const am2z_processor *processor;
    const am2z_logger *logger;
    am2z_meta meta;
    int64_t deadline_ns;         /* am2z_monotonic_ns() deadline (ops->now_ns's when set);
                                    0 = none */
    /* Tracing (section 7f), all zero when off. The runtime sets trace (borrowed: the
       execution holds it) and trace_parent (the calling attempt's span, 0 at the top
       level); am2z_processor_invoke records the attempt's span and leaves its id in
       trace_span (0: none), the parent of the calls the attempt makes. */
    struct am2z_trace *trace;
    uint32_t trace_parent;
    uint32_t trace_span;
};

/* Runs one attempt of p (any kind: composites run their children through ctx->ops)
   on the calling thread: calls the function, turns an ill-formed result into a
   ProcessorExecutionError (neither state nor error: "returned neither a state nor an
   error", not retryable; both: the state is dropped), and fills in the error's processor
   and execution id when the error has none. ctx->processor must be p and ctx->meta
   filled in. No retry, timeout, version bump or job event: that is the runtime's part.
   input borrowed; the result holds exactly one of state / error (both NULL only when
   memory ran out). */
AM2Z_API am2z_result am2z_processor_invoke(const am2z_processor *p, am2z_ctx *ctx, const am2z_state *input);
/* The timeout a runtime applies to p: its own when set; else a chain's is the sum and a
   parallel's the largest of its children's (each child: its own, derived, or default_ms;
   the sum saturates at INT64_MAX); else default_ms (plain, router, batch). */
AM2Z_API int64_t am2z_processor_timeout_ms(const am2z_processor *p, int64_t default_ms);

/* ==== 7c. stores ====================================================================== */
/* Durable key-value storage, the interface durable executions checkpoint through (and
   any program may use directly). Keys are C strings of 1..AM2Z_STORE_MAX_KEY bytes
   without NUL; values are byte strings of 0..AM2Z_STORE_MAX_VALUE bytes.

   INTERFACE  A store is an ops table plus its user_data; write your own (a database, a
   flash page) by filling in am2z_store_ops and calling am2z_store_new. Every op returns
   AM2Z_STATUS_OK or a failure with a detail; none may half-apply: after a failed put the
   key holds its old value or the new one, never a mix. Every op may be called from any
   thread: the built-in stores lock; a custom one must be thread-safe itself.

   BUILT-IN   am2z_memory_store_new: a hash map, lost at exit (tests, caches).
              am2z_file_store_new: a crash-safe append-only journal with the whole live
              data also in memory (gets never touch the disk). Each put/remove appends one
              record [magic, CRC-32C, lengths, key, value] and (by default) fsyncs before
              it returns, so an acknowledged write survives kill -9 and power loss. On open
              the journal is replayed: a torn last record (a crash mid-write) is detected
              by its checksum or length and cut off with a warning; a bad record with
              valid data after it is corruption, not a torn write, and the open fails with
              AM2Z_STATUS_PROTOCOL naming its offset (set repair to cut the journal there
              instead). When the journal grows past compact_ratio times the live data it
              is rewritten to a temporary file, fsynced and renamed over the old one, so a
              crash during compaction leaves one complete journal. One process at a time:
              a second open of the same path fails with AM2Z_STATUS_CONFLICT (a POSIX
              record lock, released when the process dies). Memory: the live keys and
              values plus ~48 bytes per key. Needs POSIX files (open, fsync, rename,
              fcntl); AM2Z_NO_FILE_STORE leaves it out. */
#ifndef AM2Z_STORE_MAX_KEY
#define AM2Z_STORE_MAX_KEY 1024
#endif
#ifndef AM2Z_STORE_MAX_VALUE
#define AM2Z_STORE_MAX_VALUE (64u << 20) /* 64 MiB */
#endif

typedef struct am2z_store am2z_store;
/* Called by scan for each key (borrowed for the call) in no particular order; return
   non-zero to stop. It must not call the store it scans. */
typedef int (*am2z_store_scan_fn)(const char *key, const void *value, size_t len, void *user_data);
typedef struct am2z_store_ops {
    /* value borrowed; copies it */
    am2z_status (*put)(void *user_data, const char *key, const void *value, size_t len);
    /* *value: a new allocation the caller frees with am2z_free (NUL-terminated, not
       counted in *len); AM2Z_STATUS_NOT_FOUND when the key is absent */
    am2z_status (*get)(void *user_data, const char *key, void **value, size_t *len);
    am2z_status (*remove)(void *user_data, const char *key); /* absent: AM2Z_STATUS_OK */
    am2z_status (*scan)(void *user_data, const char *prefix, am2z_store_scan_fn fn, void *fn_data);
    void (*close)(void *user_data); /* optional: frees user_data's resources */
} am2z_store_ops;

/* A store over ops (borrowed for the store's lifetime) and user_data (owned: ops->close
   gets it at am2z_store_free). NULL with *status when ops lack put, get, remove or scan. */
AM2Z_API am2z_store *am2z_store_new(const am2z_store_ops *ops, void *user_data, am2z_status *status);
AM2Z_API void am2z_store_free(am2z_store *store); /* NULL: nothing */
/* The operations, with the argument checks every store shares (NULL store or key, key
   length, value size: AM2Z_STATUS_INVALID_ARGUMENT / AM2Z_STATUS_LIMIT with a detail). */
AM2Z_API am2z_status am2z_store_put(am2z_store *store, const char *key, const void *value, size_t len);
AM2Z_API am2z_status am2z_store_get(am2z_store *store, const char *key, void **value, size_t *len);
AM2Z_API am2z_status am2z_store_remove(am2z_store *store, const char *key);
/* prefix NULL or "": every key. */
AM2Z_API am2z_status am2z_store_scan(am2z_store *store, const char *prefix, am2z_store_scan_fn fn, void *fn_data);

AM2Z_API am2z_store *am2z_memory_store_new(am2z_status *status);

#ifndef AM2Z_NO_FILE_STORE
typedef struct am2z_file_store_desc {
    const char *path;           /* the journal file; created if missing (required) */
    int no_fsync;               /* non-zero: writes reach the OS but not the disk before a
                                   put returns (survive kill -9, not power loss); ~100x faster */
    int repair;                 /* non-zero: cut the journal at a bad record in the middle
                                   instead of refusing to open (data after it is lost) */
    double compact_ratio;       /* rewrite when journal > ratio x live bytes; default 2.0 */
    int64_t compact_min_bytes;  /* never rewrite a journal smaller than this; default 1 MiB */
    am2z_logger *logger;        /* borrowed; warnings (torn tail cut); default: stderr */
} am2z_file_store_desc;
/* Opens (replays) or creates the journal. NULL with *status: AM2Z_STATUS_INVALID_ARGUMENT
   (no path), AM2Z_STATUS_IO (cannot open/read/write; the detail has strerror),
   AM2Z_STATUS_CONFLICT (another process has it open), AM2Z_STATUS_PROTOCOL (corrupt, see
   above; am2z_status_offset() is the bad record's offset), AM2Z_STATUS_NO_MEMORY. */
AM2Z_API am2z_store *am2z_file_store_new(const am2z_file_store_desc *desc, am2z_status *status);
/* Rewrites the journal now (what a put does by itself past compact_ratio). */
AM2Z_API am2z_status am2z_file_store_compact(am2z_store *store);
typedef struct am2z_file_store_info {
    int64_t journal_bytes;      /* file size now */
    int64_t live_bytes;         /* what a compacted journal would hold */
    int64_t keys;
    int64_t torn_bytes_cut;     /* cut off the tail at open (0: clean) */
    int64_t compactions;        /* since open */
} am2z_file_store_info;
/* All zero when store is not a file store. */
AM2Z_API am2z_file_store_info am2z_file_store_info_get(am2z_store *store);
#endif

/* ==== 7d. durable executions ========================================================== */
/* A durable execution survives the death of its process: run it with
   am2z_submit_desc{.durable = 1, .execution_id = "order-42"} on a local runtime that has
   a store (am2z_local_desc.store: am2z_file_store_new for crashes, the memory store for
   tests). Also on the inline runtime (am2z_inline_desc.store; section 9, DURABLE) and on
   a queue runtime (am2z_resp.h 4.11: records in Redis, resumed by the workers of any
   process).

   RECORDS (keys of the store; <id> is the execution id, <P> a chain's position)
     x/<id>/start        {processor, input, sessionId, startedAt}, written before it runs
     x/<id>/c/<P>/<k>    the state after step k of the chain at P, written (fsync with
                         the file store) after step k succeeds and before step k+1 starts
     x/<id>/c/<P>/undo   compensation progress of that chain {failedStep, error, next,
                         results}
     x/<id>/w/<P>/<k>    a wait step's {signal, until}
     x/<id>/s/<name>     a signal's payload
     x/<id>/done         the outcome {ok, state, error?, attempts, durationMs, startedAt,
                         sessionId}; written when the execution ends, the other records
                         of <id> are then removed. It stays until am2z_runtime_forget
                         (queue runtime: or its keep, am2z_resp.h 4.11).
   <P> is "0" for the chain the execution runs (or the first one it reaches), and
   "<parent P>.<step>.<n>" for the n-th chain reached from inside step <step>: the same
   processors given the same input reach the same positions, so a resumed run finds its
   checkpoints. Chains reached through a parallel or a batch branch are not
   checkpointed: the parallel or batch is one step of its enclosing durable chain.

   RESUME  Running an execution again with the same id is resuming it: its recorded
   processor and input are used, a chain skips the steps it has checkpoints for (their
   recorded state feeds the next step) and continues. am2z_runtime_resume does that at
   start-up for one id or every unfinished one.

   GUARANTEES (plainly)
   - A chain step whose checkpoint was written never runs again for that execution:
     at most once after it completed.
   - The step that was running when the process died runs again on resume: at least
     once, at most twice per crash. Its side effects therefore need an idempotency key:
     am2z_ctx_idempotency_key(ctx) is "<id>/<P>/<k>" (and "<id>/<P>/<k>/undo" in a
     compensation), the same in every run of that step.
   - A processor that is not a chain (or a chain in a parallel/batch branch) is one unit:
     it runs again as a whole when the process dies inside it.
   - A store failure fails the execution with a permanent ProcessorExecutionError whose
     cause says which record could not be written; a step never runs on after a
     checkpoint that was not written.
   - Cancelling a durable execution (am2z_runtime_stop, stop_session, freeing its handle)
     does not finish it: no done record, so resume continues it (queue runtime:
     stop_session deletes its job and ends it cancelled, am2z_resp.h 4.11). Every other
     outcome (success, failure, TimeoutError) is final and recorded.
   - A durable chain that compensated stays failed: a re-run of it (a retry of what
     encloses it, a resume) returns the same failure without running anything.
   - Two runs of one id at once in one runtime are refused (AM2Z_STATUS_EXISTS). The
     file store admits one process per journal, so two processes never run one id; a
     custom store shared between processes gives no such guarantee.

   SIGNALS  am2z_wait_signal_new makes a chain step that waits for a named signal. With
   no payload stored yet it records its wait and parks the execution: the attempt
   returns at once, no thread is held, the execution's handle finishes with a
   BusinessError code "AM2Z_WAITING" (not final: no done record; read the final outcome
   with am2z_runtime_durable_outcome). am2z_runtime_signal stores the payload (so a
   signal sent before the wait, even before the execution starts, is never lost) and
   resumes a parked execution on the runtime's workers; the wait step merges the payload
   at its merge_path. Past its timeout (counted from the first time the step ran, kept
   across restarts) a resume ends the wait with TimeoutError or the step's fallback; one
   timer thread per runtime, started on the first timed wait, does those resumes (on
   the inline runtime am2z_inline_advance does, see section 9). A
   signal name holds one payload per execution (a second signal replaces an unread one);
   use one name per wait. */
#ifndef AM2Z_DURABLE_MAX_ID
#define AM2Z_DURABLE_MAX_ID 63      /* bytes of a durable execution id */
#endif
#ifndef AM2Z_DURABLE_MAX_PATH
#define AM2Z_DURABLE_MAX_PATH 128   /* bytes of a chain position <P> (nesting depth) */
#endif

/* Resumes the unfinished durable executions of rt's store (execution_id NULL: every
   one with a start record and no done record that is not running; else that one) on
   rt's workers, detached. *resumed (may be NULL) gets how many were started.
   AM2Z_STATUS_INVALID_ARGUMENT (no store on rt, a bad id), AM2Z_STATUS_NOT_FOUND (that
   id has no start record or is finished), the store's failure, or the first submit
   failure (the others are still tried). */
AM2Z_API am2z_status am2z_runtime_resume(am2z_runtime *rt, const char *execution_id, size_t *resumed);
/* Delivers signal `name` (a processor-name-like string) with payload (borrowed; any JSON
   value, NULL: null) to the durable execution execution_id: stored first (fsync), then
   a parked execution is resumed. Thread-safe. AM2Z_STATUS_INVALID_ARGUMENT (no store,
   bad id or name), AM2Z_STATUS_NOT_FOUND (the execution has finished), or the store's
   failure. */
AM2Z_API am2z_status am2z_runtime_signal(am2z_runtime *rt, const char *execution_id, const char *name,
                                         const am2z_value *payload);
/* The recorded outcome of a finished durable execution, waiting up to timeout_ms (< 0:
   no limit) for it to finish. AM2Z_STATUS_OK with *out filled (cleared first; clear it
   after), AM2Z_STATUS_TIMEOUT (not finished yet), AM2Z_STATUS_NOT_FOUND (the store
   knows nothing of that id), AM2Z_STATUS_INVALID_ARGUMENT, the store's failure. */
AM2Z_API am2z_status am2z_runtime_durable_outcome(am2z_runtime *rt, const char *execution_id, int64_t timeout_ms,
                                                  am2z_outcome *out);
/* Removes every record of a finished execution (its done record included), so the id
   may be used again. AM2Z_STATUS_CONFLICT while it runs or is parked. */
AM2Z_API am2z_status am2z_runtime_forget(am2z_runtime *rt, const char *execution_id);
/* The idempotency key of the durable chain step (or compensation) being run, borrowed for
   the call: "<execution id>/<P>/<k>" (see GUARANTEES); NULL outside a durable chain step. */
AM2Z_API const char *am2z_ctx_idempotency_key(const am2z_ctx *ctx);

typedef struct am2z_wait_signal_desc {
    const char *name;           /* the step's processor name (required) */
    const char *signal;         /* the signal it waits for (required; a name) */
    const char *merge_path;     /* where the payload goes in the state (required, a path) */
    int64_t timeout_ms;         /* 0: waits forever */
    const am2z_value *fallback; /* retained: merged at merge_path on timeout instead of
                                   failing with TimeoutError; NULL: TimeoutError */
    const char *description;
} am2z_wait_signal_desc;
/* A processor that is a wait step (see SIGNALS). Outside a durable chain it fails with a
   ValidationError. NULL with *status AM2Z_STATUS_INVALID_ARGUMENT (bad name, signal or
   path, negative timeout) or AM2Z_STATUS_NO_MEMORY. */
AM2Z_API am2z_processor *am2z_wait_signal_new(const am2z_wait_signal_desc *desc, am2z_status *status);

/* ==== 7e. schedules =================================================================== */
/* A schedule runs a processor on a fixed input again and again: every N ms, or at the
   times of a cron expression (section 6b), between a start and an end, at most limit
   times. Each run is a detached execution (am2z_execution_detach): its outcome goes
   nowhere, events and stats see it as any other. Schedules are kept by id: upsert
   creates or replaces one, remove deletes it, list shows them.

   SLOTS  A schedule fires at slots, times in ms since the Unix epoch, UTC:
     every_ms   start_at + k x every_ms when start_at is set, else the multiples of
                every_ms since the epoch (so every process computes the same slots);
     cron       each minute the expression matches (UTC, no time-zone database).
   The first slot is the first one at or after max(start_at, the upsert's time); no slot
   after end_at fires; after limit runs the schedule is done and disappears from list.
   Upserting an existing id replaces it: the new definition's slots from now on, its run
   count back to 0.
   MISSED SLOTS ARE SKIPPED  After each run the next slot is the first one after both the
   slot just run and the time it was claimed. A slot that passed while nothing could run
   it (a stopped runtime, every worker down, a clock jump) runs once, late, when the
   schedule is next looked at; the others that passed meanwhile never run: no burst of
   catch-up runs.
   RUNTIMES
     local   a thread of the runtime's own (made at the first upsert, stopped with the
             runtime, made again by start) claims each slot on time and submits it.
     inline  slots fire while am2z_inline_advance moves the virtual clock: each at its
             own time, in order, run at once on the calling thread (a run that moves the
             clock makes the slots it passes late, as above). Needs a virtual clock
             (am2z_inline_desc.virtual_clock_ms): on the real clock upsert refuses.
     queue   schedules live in Redis (am2z_resp.h 4.10), in BullMQ v6's job-scheduler
             layout, so Bull Board lists them and any process may upsert, remove or list
             them; every process with workers claims due slots, each exactly once.
   Schedules of a local or inline runtime live in memory: gone with the runtime.
   THREADING  Thread-safe as the rest of section 7 (inline: its one thread). Upsert and
   remove from inside a processor or handler are allowed. */
#ifndef AM2Z_SCHEDULE_ID_MAX
#define AM2Z_SCHEDULE_ID_MAX 128 /* bytes of a schedule id */
#endif
#ifndef AM2Z_SCHEDULE_MAX
#define AM2Z_SCHEDULE_MAX 1024 /* schedules of one runtime (queue: of one prefix in Redis) */
#endif
#ifndef AM2Z_SCHEDULE_MIN_EVERY_MS
#define AM2Z_SCHEDULE_MIN_EVERY_MS 10 /* a shorter period is refused: a timer, not a spin loop */
#endif

/* What a schedule runs and when; zero fields take the defaults. Every pointer is borrowed
   for the call: the runtime keeps its own copies (a reference to input). */
struct am2z_schedule_desc {
    const char *id;             /* required: 1..AM2Z_SCHEDULE_ID_MAX bytes of [A-Za-z0-9_.-]
                                   (no ':', so the queue runtime's job ids stay parseable) */
    const char *processor;      /* required: registered (queue runtime: or declared) */
    const am2z_state *input;    /* required: the input of every run */
    const char *session_id;     /* NULL: "default" */
    int64_t every_ms;           /* > 0: a slot every every_ms (>= AM2Z_SCHEDULE_MIN_EVERY_MS) */
    const char *cron;           /* or: a 5-field cron expression (section 6b), UTC */
    int64_t start_at;           /* epoch ms: no slot before; 0: from now (every_ms: the
                                   slots are then the multiples of every_ms) */
    int64_t end_at;             /* epoch ms: no slot after; 0: no end */
    int64_t limit;              /* at most this many runs; 0: no limit */
};

/* Creates the schedule desc->id, or replaces the one with that id. AM2Z_STATUS_OK;
   AM2Z_STATUS_INVALID_ARGUMENT (the detail says what: a missing field, a bad id, both
   or neither of every_ms and cron, every_ms under AM2Z_SCHEDULE_MIN_EVERY_MS, a bad
   cron expression (with its field and am2z_status_offset), a negative time or limit,
   end_at before start_at, no slot left before end_at, a runtime without schedules);
   AM2Z_STATUS_NOT_FOUND (processor neither registered nor declared); AM2Z_STATUS_LIMIT
   (AM2Z_SCHEDULE_MAX schedules exist already); AM2Z_STATUS_NO_MEMORY; a queue runtime
   also the connection's status. */
AM2Z_API am2z_status am2z_runtime_schedule_upsert(am2z_runtime *rt, const am2z_schedule_desc *desc);
/* Deletes schedule id: no slot of it is claimed after this returns (a slot claimed just
   before, and a run already started, go on). AM2Z_STATUS_NOT_FOUND when there is none. */
AM2Z_API am2z_status am2z_runtime_schedule_remove(am2z_runtime *rt, const char *id);
/* Every live schedule, sorted by id (a new reference; NULL with a detail on failure):
   [{id, processor, sessionId, everyMs | cron, startAt?, endAt?, limit?, runs (slots
   claimed since the upsert), nextAt (the next slot, epoch ms)}]. */
AM2Z_API am2z_value *am2z_runtime_schedule_list(am2z_runtime *rt);

/* ==== 7f. traces ====================================================================== */
/* A trace records every step of one execution tree: each attempt of the top-level
   processor and of everything it calls (composite children, am2z_ctx_call), with its
   parent, attempt, session, start and end, outcome, error kind, the backoff before the
   next attempt and the merge conflicts its merge saw. Opt in per execution
   (am2z_submit_desc.trace) or per runtime (the `trace` field of am2z_local_desc,
   am2z_inline_desc, am2z_queue_desc): the outcome then holds the trace
   (am2z_outcome.trace, a reference released by am2z_outcome_clear; retain it to keep
   it). Off, it costs a few pointer tests per attempt and no allocation.
   - SPANS  One span per attempt. id counts from 1 in recording order; parent is the
     span of the attempt that made the call (0 for the top-level attempts). Times are
     nanoseconds since the Unix epoch on the runtime's clock (the virtual clock on an
     inline runtime that has one). A span whose processor still runs (a late attempt
     after a timeout) has status AM2Z_TRACE_RUNNING and end_ns 0, until it returns.
     An attempt whose late result the runtime discarded is FAILED with "TimeoutError".
   - QUEUE RUNTIME  Every step runs as a job, maybe in another process; each attempt's
     span is collected by execution id through Redis (am2z_resp.h, TRACES) into the
     caller's outcome, with `worker` naming the instance that ran it ("" for this
     process). Spans of attempts still running when the outcome arrives (a late child
     after its caller's timeout) are not in it.
   - WALK  am2z_trace_count + am2z_trace_span_at (by value; its strings borrowed from
     the trace), or am2z_trace_to_json.
   - RENDER  am2z_trace_ascii (a terminal timeline), am2z_trace_mermaid (a Gantt chart
     for Markdown), am2z_trace_chrome (trace-event JSON for Perfetto / chrome://tracing).
   THREADING  A trace is reference counted and locked: reading it while the execution
   still runs is safe (a snapshot of the spans so far). */

typedef struct am2z_trace am2z_trace;

#ifndef AM2Z_TRACE_MAX_SPANS
#define AM2Z_TRACE_MAX_SPANS 100000 /* default spans kept per trace; more are counted, dropped */
#endif

typedef enum am2z_trace_status {
    AM2Z_TRACE_RUNNING = 0, /* not ended yet */
    AM2Z_TRACE_OK,
    AM2Z_TRACE_FAILED
} am2z_trace_status;

typedef struct am2z_trace_span {
    uint32_t id;                /* 1.. in recording order */
    uint32_t parent;            /* the calling attempt's span; 0: top level */
    const char *processor;      /* borrowed from the trace, like every string here */
    const char *execution_id;   /* the call's id, shared by its attempts */
    const char *session_id;
    const char *worker;         /* "" in the process that holds the trace, else the
                                   worker id of the process that ran it (queue) */
    int attempt;                /* 1-based */
    int call_depth;             /* 0 for the top level */
    int64_t start_ns, end_ns;   /* ns since the Unix epoch, runtime clock; end 0: running */
    am2z_trace_status status;
    const char *error_kind;     /* "TimeoutError", ...; NULL unless FAILED */
    int64_t retry_delay_ms;     /* -1: no retry followed; else the backoff before the next
                                   attempt */
    int merge_conflicts;        /* members of this attempt's merge set by several branches */
} am2z_trace_span;

/* A new empty trace (refcount 1) keeping at most max_spans spans (0: AM2Z_TRACE_MAX_SPANS);
   runtimes make one per traced execution; a program needs it only to build one by hand
   (am2z_trace_add_json). NULL when memory runs out. */
AM2Z_API am2z_trace *am2z_trace_new(size_t max_spans);
AM2Z_API am2z_trace *am2z_trace_retain(am2z_trace *t); /* NULL stays NULL */
AM2Z_API void am2z_trace_release(am2z_trace *t);
/* Spans recorded (0 for NULL), and spans dropped because max_spans was reached or
   memory ran out. */
AM2Z_API size_t am2z_trace_count(const am2z_trace *t);
AM2Z_API size_t am2z_trace_dropped(const am2z_trace *t);
/* Copies span i (0 <= i < count, recording order) into *out. AM2Z_STATUS_NOT_FOUND
   past the end, AM2Z_STATUS_INVALID_ARGUMENT for NULL. */
AM2Z_API am2z_status am2z_trace_span_at(const am2z_trace *t, size_t i, am2z_trace_span *out);
/* The trace as JSON (a new reference; NULL when memory runs out or t is NULL):
   {"spans": [{id, parent, processor, executionId, sessionId, worker, attempt,
   callDepth, startNs, endNs, status ("running"|"ok"|"failed"), errorKind (failed only),
   retryDelayMs (when retried), mergeConflicts (when > 0)}, ...], "dropped": n}. */
AM2Z_API am2z_value *am2z_trace_to_json(const am2z_trace *t);
/* Adds the spans of a to_json value (or of its "spans" array) to t, renumbered after
   t's, their top-level spans (parent 0) under span `parent` of t (0: top level) with
   call_depth shifted below it, and `worker` set where they have none. How a queue
   runtime joins the spans of a remote job. AM2Z_STATUS_INVALID_ARGUMENT (detail names
   the member) for a malformed span: nothing is added then. */
AM2Z_API am2z_status am2z_trace_add_json(am2z_trace *t, const am2z_value *spans, uint32_t parent,
                                         const char *worker);

/* The renderers: NUL-terminated text the caller frees with am2z_free, *len (len may be
   NULL) its length. AM2Z_STATUS_INVALID_ARGUMENT for NULL t or out, AM2Z_STATUS_NO_MEMORY.
   Steps are shown in tree order: children under their parent, by start time. */
/* One line per span: the processor indented two spaces per level (with #attempt after
   the first), the outcome ("ok", the error kind, "running"), a bar of '=' ('!' when
   failed) on a common time scale, the duration, "retry +N ms" when one followed.
   width: the bar's columns (0: 50; at most 1000). */
AM2Z_API am2z_status am2z_trace_ascii(const am2z_trace *t, int width, char **out, size_t *len);
/* A Mermaid Gantt chart ("gantt", dateFormat x, ms from the first start), one section
   per top-level attempt, one task per span (failed: crit); paste it in a ```mermaid
   block. */
AM2Z_API am2z_status am2z_trace_mermaid(const am2z_trace *t, char **out, size_t *len);
/* Chrome trace-event JSON: {"traceEvents":[{"name","cat":"am2z","ph":"X","ts","dur"
   (microseconds, ts from the first start),"pid","tid","args":{span fields}}, ...],
   "displayTimeUnit":"ms"}, plus "M" metadata events naming each process. pid 1 is this
   process, 2.. the remote workers; tids are lanes in which the spans nest. */
AM2Z_API am2z_status am2z_trace_chrome(const am2z_trace *t, char **out, size_t *len);

/* For runtime implementers (7b): am2z_processor_invoke opens and closes a span for a
   ctx with a trace; runtimes set ctx->trace and ctx->trace_parent and read the span id
   back from ctx->trace_span. Each does nothing for NULL t or span 0. */
/* Records that the attempt of span `span` failed with kind (a late result discarded). */
AM2Z_API void am2z_trace_fail(am2z_trace *t, uint32_t span, const char *error_kind);
/* Records the backoff before the next attempt of span's call. */
AM2Z_API void am2z_trace_retry(am2z_trace *t, uint32_t span, int64_t delay_ms);

/* ==== 8. local runtime ================================================================ */
/* The local runtime runs processors on a pthread worker pool in this process.
   - DEADLINES: who runs a top-level execution, and so how exact its timeout is. Chosen
     per runtime (am2z_local_desc.deadlines) and per processor (its desc.deadlines, which
     wins; composites follow the runtime):
     EXACT (the default): every top-level execution (execute, submit, execute_many) runs
     on a worker while the caller waits with the attempt's deadline, so the caller gets
     a TimeoutError at the deadline (timed waits, ~0.1 ms late) even when the processor
     ignores cancellation; the processor sees am2z_ctx_cancelled() turn true and
     whatever it returns late is discarded. The price is a hand-off to another thread
     per execution: ~2 us on a quiet 2-vCPU VM, and a wake-up (60-115 us, often more)
     when the machine is busy and the worker is not running.
     COOPERATIVE: execute, execute_many (its share of the items) and
     am2z_execution_wait on an execution no worker has started run the processor on the
     calling thread: no hand-off, no wake-up, ~1 us for a trivial execute also on a
     loaded machine. execute_many of a processor whose items are short (under 5 us last
     time, or not measured yet) runs them all on the calling thread, the workers taking
     part only once a chunk of 32 shows its items mostly longer: for short items another
     thread costs more than it gives (states sharing their input make every thread
     write the same reference counts). The timeout is then cooperative: am2z_ctx_cancelled() turns true
     at the deadline and the outcome is a TimeoutError, but only once the processor
     returns; one that ignores cancellation holds its caller until then (and stop, from
     another thread, cancels it but cannot end it). Retries run on the waiting thread
     after their backoff. A processor with queue options (concurrency, priority,
     rate_limit_per_minute, delay_ms) always goes through the queue (exact). A submitted
     execution that a worker starts first keeps the exact deadline.
     Exact stays the default because it is the safe contract (a caller never waits past
     its timeout); choose COOPERATIVE for a runtime of processors that poll
     am2z_ctx_cancelled (or finish quickly), and mark the odd one that may block EXACT.
     Measured on a shared 2-vCPU VM (bench/local, medians of 3 interleaved rounds,
     2026-12): cooperative trivial execute / chain of 3 / chain of 10 / parallel of 3
     p50 0.65 / 2.4 / 6.4 / 2.8 us at load average 7 (1.2 / 4.0 / 11 / 5.6 in a slower
     run), and 0.69 / 2.3 / 6.8 / 3.0 us, p99 1.3 / 4.3 / 22 / 5.8 us, with 4 CPU-bound
     threads beside it (load 11); exact took 5-90 us p50 at load 7 and 0.1-8 ms with
     the threads, because each execution waits for a worker to get a CPU.
     An attempt's time starts when it starts: waiting in the queue (behind other work, a
     concurrency limit, the rate limit, delay_ms) is not counted. Nested calls
     (am2z_ctx_call, composite steps) run on the calling thread: their own timeouts are
     cooperative (cancelled() turns true and a late result becomes a TimeoutError when
     the call returns) inside the top-level deadline. Cancelling an execution cancels
     everything it called.
   - No deadlock, no waiting on a wake-up: a call_many (parallel, batch) runs its first
     call inline and queues the others for idle workers, except calls known to be short
     (under 5 us last time), which it runs itself; only calls known to be long (over
     100 us) or not yet measured wake a sleeping worker. The waiting parent (a worker or
     a caller) runs every queued call nobody took, and helps with queued calls of others
     while it waits. A processor that waits for an execution it submitted runs it itself
     when no worker has.
   - Retries follow the processor's policy (am2z_retry_delay_ms). A top-level retry is
     rescheduled after its backoff (no worker sleeps; an attempt that the waiting thread
     ran itself is retried by it); the caller gets the final outcome
     with attempts and every failed attempt's error in order. A nested call retries on
     the calling worker, running queued calls of other executions while it waits.
   - Queue options: priority orders waiting top-level executions: 0 (default) runs
     first, then 1, 2, ... (FIFO within a priority), as in BullMQ. concurrency caps the
     processor's simultaneous top-level executions; nested calls run inside their
     caller's turn and never wait for a slot, so a processor calling itself cannot
     deadlock. global_concurrency caps them the same way here (one process holds
     them all; the smaller of the two holds).
     rate_limit_per_minute spaces starts at least 60000/rate ms apart, measured between
     real starts (a one-token bucket; executions wait in line, never fail), nested calls
     included, also when a waiting call runs other queued calls meanwhile. delay_ms
     postpones the first attempt of a top-level execution and each nested call.
   - SESSION LIMITS: session_concurrency caps the top-level executions of one session
     (tenant) that run at once; 0 (default) = no cap. An execution holds a session slot
     while an attempt runs (not during a retry's backoff); nested calls run in their
     caller's slot and never wait for one. Fairness: an execution whose session is at
     its cap leaves the run queue and waits in its session's own line (FIFO), so the
     queued work of every other session runs first, in submission order; when a slot of
     the session frees, its next waiting execution goes to the front of the queue. A
     session slot is taken before a processor slot (concurrency, global_concurrency), so
     a session at its cap never holds a processor slot another session could use. Two
     bypasses, both to avoid deadlock, as for concurrency: a processor waiting for an
     execution it submitted itself runs it (in its own slot), and a cap also makes
     COOPERATIVE executions and execute_many go through the queue. The inline runtime
     runs one execution at a time, so every cap >= 1 holds there.
     session_rate {max, per_ms} caps the starts of one session's top-level attempts:
     at most max in each window of per_ms, a fixed window opened by the first start
     after the last one closed (BullMQ's limiter); an execution over it waits for the
     next window in the delayed heap (no worker sleeps), holding its session slot but
     no processor slot, so only its own session waits. {0, 0}: none; bad values are
     refused (am2z_rate). Not on the inline runtime (its desc has no session limits).
   - Sessions: NULL means "default"; first use emits "session:created"; see
     am2z_runtime_stop_session. A top-level input whose metadata.sessionId names
     another session runs with it rewritten, so an outcome's state always names the
     session it ran in.
   - stop(grace_ms) refuses new executions, waits up to grace_ms, cancels the rest
     (CancelledError "Runtime stopped"), joins the workers and the metrics thread (a
     processor ignoring cancellation, or a slow handler, delays it until it returns) and
     ends every session ("session:cleanup"). A COOPERATIVE execution running on a
     caller's thread is cancelled like the others but not waited for: stop returns, the
     caller gets the CancelledError when its processor returns (free only after that). Registrations and stats survive;
     am2z_runtime_start starts it again. start, stop and free refuse to run inside the
     runtime's processors and handlers (section 7, CALLBACKS); stop_session of the
     caller's own session cancels the caller's execution instead of waiting for it.
   - Every successful execution, nested ones and composites included, returns its state
     through am2z_state_bump, so metadata.version counts the steps that produced it.
   - Stats: {registeredProcessors, running (attempts executing now), completed, failed,
     retried (executions incl. nested), queued, workers, uptimeMs, processors: {<name>:
     {completed, failed, retried, p50Ms, p99Ms, latency}}} (am2z_runtime_processor_stats
     reads one; a processor is listed, with zeros, from its registration on); latency
     percentiles come from a log histogram (4 buckets per doubling, so within ~10%).
     latency: {count, sumMs, buckets: [[leMs, n], ...]}, n the executions (completed or
     failed) that took under leMs, cumulative, at 14 bounds x4 apart from 2^10 ns
     (0.001024 ms) to 2^36 ns (~68.7 s): the Prometheus histogram of
     am2z_runtime_metrics_text.
     session_stats: {sessionId, createdAt, running (unfinished top-level executions;
     an execute_many call counts once), submitted, completed, failed, cancelled,
     stopping, processors: {<name>: {completed, failed, retried}}}, the processors'
     counts as in stats (nested calls included, a cancellation counts as failed) for the
     executions of that session.
   - Counters settle before outcomes: when a caller holds an outcome (execute, wait,
     execute_many), every count that includes it, in stats and session_stats, is
     updated, so session_stats or stop_session right after the last outcome sees
     nothing running. One exception: stats' "running" counts attempts executing, and an
     attempt resolved without it (timed out or cancelled) while its processor ignores
     cancellation stays in it until the processor returns.
   - metrics_interval_ms > 0 emits "metrics" with the stats snapshot that often, from a
     thread of the runtime's own (never a worker, so busy workers do not delay it),
     while the runtime is started and someone listens.
   - Waiting callers and idle workers spin up to spin_ns (default AM2Z_LOCAL_SPIN_NS,
     200 us) before they block, because waking a blocked thread costs far more than a
     short spin; a spinner yields its CPU now and then when the thread it waits for may
     need that CPU (a caller whose execution has not started after 20 us, an idle worker
     after 50 us). The price is CPU time under sparse load. Measured on a 2-vCPU VM
     (bench/local, AM2Z_BENCH_SCALE=0.1, load average < 0.5), spin 200 us vs off:
     trivial execute p50 1.6 us vs 23 us; one execute every 2 ms costs 119-128 ms vs
     19-22 ms of CPU per second; an idle runtime uses ~0.05 ms of CPU per second either
     way (spinning stops 200 us after the last work; 2 ms after waking a blocked caller);
     execute_many throughput is the same. With COOPERATIVE deadlines nothing waits for a
     worker on the execute path, so the spin costs little: one execute every 2 ms used
     12.6 ms of CPU per second vs 129 ms with EXACT (same run, load average 6).
     Why 200 us stays the default, also for embedded users: the spin costs CPU only
     around work, at most ~200 us per EXACT execution (the figures above: ~100 ms/s
     extra at 500 executions/s), so a device handling 10 events a second pays ~2 ms/s
     (0.2% of a core) and an idle one nothing, while a blocked hand-off would make every
     execution ~15x slower. At sustained rates on a battery or a shared core, use
     COOPERATIVE, or set spin_ns to AM2Z_LOCAL_SPIN_OFF (or build with
     -DAM2Z_LOCAL_SPIN_NS=0); a program without threads uses the inline runtime
     (section 9), which never spins. */

#ifndef AM2Z_LOCAL_MAX_WORKERS
#define AM2Z_LOCAL_MAX_WORKERS 256 /* am2z_local_desc.workers above this is invalid */
#endif
#ifndef AM2Z_LOCAL_SPIN_NS
/* How long a waiting caller or an idle worker spins before it blocks. It must outlast
   the wake-up of a blocked thread (60-110 us measured on a 2-vCPU VM), otherwise a
   caller and a worker fall into a cycle of waking each other (~115 us per execute). */
#define AM2Z_LOCAL_SPIN_NS 200000
#endif
#define AM2Z_LOCAL_SPIN_OFF (-1)          /* am2z_local_desc.spin_ns: block at once */
#define AM2Z_LOCAL_MAX_SPIN_NS 100000000  /* am2z_local_desc.spin_ns above this is invalid */
#ifndef AM2Z_MAX_CALL_DEPTH
#define AM2Z_MAX_CALL_DEPTH 10
#endif

typedef struct am2z_local_desc {
    int workers;                /* default: number of CPUs */
    int64_t default_timeout_ms; /* for processors without one; default 60000 */
    int max_call_depth;         /* default AM2Z_MAX_CALL_DEPTH (10) */
    size_t queue_capacity;      /* top-level executions waiting to start; default 65536.
                                   Full: execute fails with ResourceError, submit with
                                   AM2Z_STATUS_LIMIT */
    am2z_logger *logger;        /* borrowed (retained); default: info to stderr */
    int64_t metrics_interval_ms; /* "metrics" event period; default 0: no event */
    int64_t spin_ns;            /* how long a waiting caller or idle worker spins before it
                                   blocks; default AM2Z_LOCAL_SPIN_NS, AM2Z_LOCAL_SPIN_OFF
                                   (-1): never spin. Nanoseconds, not ms: useful values
                                   are 10-1000 us. At most AM2Z_LOCAL_MAX_SPIN_NS */
    am2z_deadlines deadlines;   /* top-level timeouts (see DEADLINES above): default
                                   EXACT; COOPERATIVE runs processors on the caller's
                                   thread. A processor's own desc.deadlines overrides it */
    am2z_store *store;          /* borrowed, must outlive the runtime: where durable
                                   executions checkpoint (section 7d); NULL: a durable
                                   submit fails with AM2Z_STATUS_INVALID_ARGUMENT */
    int session_concurrency;    /* max top-level executions of one session running at once
                                   (a tenant limit, see SESSION LIMITS above); 0 = unlimited,
                                   at most AM2Z_MAX_CONCURRENCY */
    int trace;                  /* non-zero: trace every top-level execution (section 7f;
                                   not the items of an execute_many of a processor
                                   without retries or queue options, which skip jobs) */
    am2z_rate session_rate;     /* starts of top-level executions of one session (a tenant
                                   limit, see SESSION LIMITS above); {0, 0}: none */
} am2z_local_desc;

/* NULL desc: all defaults. The runtime is started. Free with am2z_runtime_free.
   NULL with *status (may be NULL; AM2Z_STATUS_OK on success) AM2Z_STATUS_INVALID_ARGUMENT
   when desc is invalid (negative values, workers > AM2Z_LOCAL_MAX_WORKERS; the detail
   says which) or AM2Z_STATUS_NO_MEMORY (memory or threads).
   Not available with AM2Z_NO_THREADS: the name then expands to a parenthesised
   undeclared identifier that says why, so every use fails to compile (not a mere
   implicit-declaration warning); use section 9's runtime there. */
#ifndef AM2Z_NO_THREADS
AM2Z_API am2z_runtime *am2z_local_runtime_new(const am2z_local_desc *desc, am2z_status *status);
#else
#define am2z_local_runtime_new (am2z_local_runtime_needs_threads_undefine_AM2Z_NO_THREADS)
#endif

/* ==== 9. inline runtime =============================================================== */
/* A runtime without threads: every execution runs on the calling thread, with the same
   processors, composition and section 7 calls as the local runtime. It is what
   AM2Z_NO_THREADS builds offer, and, with its virtual clock, a deterministic runtime
   for unit tests of workflows (see the README, "Testing your workflows").
   - execute runs the processor on the calling thread; composites run their children
     inline through the ctx ops, one after another in declaration order (a parallel's
     branches too), so the same inputs give the same run order and outcomes.
   - submit records the execution and returns its handle without running it; it runs
     when it is waited for (am2z_execution_wait, whatever timeout_ms) or detached (at
     once). So waits decide the run order. execute and execute_many are submit + wait.
     Freeing an unstarted handle cancels it: it never runs.
   - Timeouts are cooperative: am2z_ctx_cancelled() turns true once the attempt's
     deadline has passed, and a result returned at or after the deadline becomes a
     TimeoutError (a processor that never returns cannot be interrupted).
   - Retries follow the processor's policy (am2z_retry_delay_ms), waiting out the
     backoff; queue.delay_ms waits before the first attempt of every call and
     rate_limit_per_minute spaces starts (both, like the backoff, instantly on the
     virtual clock). concurrency and priority change nothing: one thing runs at a time.
   - Nested calls deeper than max_call_depth fail with CallDepthExceededError.
   - Sessions, stop_session, events, stats and metadata.version follow section 8, with
     these differences: stop_session cancels the session's unstarted executions and
     marks its running ones (the callers on this thread's stack) cancelled at once, so
     grace_ms is unused; stop cancels every unstarted execution. Stats: {kind "inline",
     registeredProcessors, running (attempts on the stack), queued (submitted, not
     started), completed, failed, retried, uptimeMs, processors: {<name>: {completed,
     failed, retried}}}; session_stats: {sessionId, createdAt, running (submitted, not
     finished), submitted, completed, failed, cancelled}.
   - Clock (am2z_inline_desc.virtual_clock_ms): the real clock by default, where waits
     sleep. With a virtual clock time only moves when the runtime waits (backoff,
     delay_ms, rate limit) or am2z_inline_advance moves it, instantly; outcome
     started_at and duration_ms, event times, metadata.lastUpdated of the states it
     produces, ctx deadlines, am2z_ctx_now_ms and the recorded calls all read it.
     Execution ids are then "<processor>-<virtual ms>-<n>", n counting the runtime's
     executions and calls from 1, so a rerun gives the same ids (an execute that cannot
     even be submitted, e.g. an unknown processor, gets a random id as on every runtime).
     Still real: error timestamps and retry jitter (use jitter 0 where a test checks
     times).
   - Stubs (am2z_inline_stub) replace what a registered processor does, by name, keeping
     its timeout and retry policy; recorded calls (am2z_inline_calls) list every attempt.
   - Traces (section 7f; am2z_inline_desc.trace or am2z_submit_desc.trace): the tree of
     an execution's attempts in its outcome. On a virtual clock every time in it is
     exact, so a test can assert on the spans or compare am2z_trace_ascii's timeline whole.
   - Durable executions (am2z_inline_desc.store): section 7d as on the local runtime
     (same records: a store written by one runtime resumes on the other), on one
     thread. A durable submit runs when waited for or detached like any execution; a
     resume (am2z_runtime_resume, a signal to a parked execution, a signal that came
     while it ran) runs at once, detached, before the call returns. No timer thread:
     on a virtual clock a wait's timeout is virtual time and am2z_inline_advance
     resumes each expired wait at its own time (a 3-day wait in microseconds); on the
     real clock an expired wait resumes at the next am2z_runtime_durable_outcome or
     resume.
   THREADING  Unlike section 7's runtimes, an inline runtime belongs to one thread: make
   every call on it from the thread that created it. One exception, am2z_runtime_signal
   to a durable execution: from another thread it stores the payload and queues the
   resume, never runs it there; the owner's next am2z_inline_advance,
   am2z_runtime_durable_outcome, resume or signal runs it (durable_outcome's timeout_ms
   waits for such a signal; without threads it does not wait). */

typedef struct am2z_inline_desc {
    int64_t virtual_clock_ms;   /* 0 (default): the real clock. > 0: a virtual clock that
                                   starts at this time (ms since the Unix epoch) */
    int64_t default_timeout_ms; /* for processors without one; default 60000 */
    int max_call_depth;         /* default AM2Z_MAX_CALL_DEPTH (10) */
    int record_calls;           /* non-zero: record every attempt for am2z_inline_calls
                                   (one small object each, kept until cleared) */
    am2z_logger *logger;        /* borrowed (retained); default: info to stderr */
    int trace;                  /* non-zero: trace every execution (section 7f) */
    am2z_store *store;          /* borrowed, outlives the runtime; NULL: no durable
                                   executions. Set: section 7d works here (see above) */
} am2z_inline_desc;

/* NULL desc: all defaults. The runtime is started; free it with am2z_runtime_free.
   NULL with *status (may be NULL; AM2Z_STATUS_OK on success) AM2Z_STATUS_INVALID_ARGUMENT
   for a negative field (the detail names it) or AM2Z_STATUS_NO_MEMORY. */
AM2Z_API am2z_runtime *am2z_inline_runtime_new(const am2z_inline_desc *desc, am2z_status *status);

/* The runtime's time in ms since the Unix epoch (virtual or real); 0 for a runtime
   that is not an inline runtime. */
AM2Z_API int64_t am2z_inline_now_ms(am2z_runtime *rt);
/* Moves the virtual clock ms (>= 0) forward, instantly; from a processor it stands for
   work that takes that long (its deadline may pass). On the way it runs every schedule
   slot (section 7e) due up to the new time, each at its own time (0 ms: those due now),
   and resumes the durable executions due (a wait that times out, at its time; a signal
   queued by another thread), except from inside a processor or on a stopped runtime. AM2Z_STATUS_INVALID_ARGUMENT
   (with a detail) for another kind of runtime, a real clock or a negative ms. */
AM2Z_API am2z_status am2z_inline_advance(am2z_runtime *rt, int64_t ms);

/* A stub: what a stubbed processor does instead of its function, on each attempt.
   With no error it succeeds: its output is its input with every member of `state`
   set on it (a shallow merge; "metadata" is skipped, so the input's continues); no
   state: the input unchanged. With an error and fail_times 0 every attempt fails with
   it; with fail_times N > 0 the stub's first N attempts (counted from am2z_inline_stub,
   over every execution) fail with it and later ones succeed as above. */
typedef struct am2z_inline_stub_desc {
    const am2z_value *state;  /* an object, borrowed (retained); NULL: pass the input on */
    const am2z_error *error;  /* borrowed (retained); NULL: never fail */
    int fail_times;           /* with error: fail this many attempts, then succeed */
    int64_t duration_ms;      /* each attempt takes this long: advances the virtual clock
                                 (sleeps on the real one), so timeouts can be tested */
} am2z_inline_stub_desc;
/* Makes the registered processor `name` run desc instead of its function from now on,
   also as a composite's child (a stubbed composite runs no children); its timeout,
   retry and queue options stay. Stubbing it again replaces the stub (and restarts the
   count); NULL desc removes it. AM2Z_STATUS_NOT_FOUND when name is not registered,
   AM2Z_STATUS_INVALID_ARGUMENT for another kind of runtime, a state that is not an
   object, negative numbers, or fail_times without an error (details say which). */
AM2Z_API am2z_status am2z_inline_stub(am2z_runtime *rt, const char *name, const am2z_inline_stub_desc *desc);

/* The recorded attempts, oldest first (a new reference; an empty array when recording
   is off), each {processor, executionId, sessionId, attempt, callDepth, startedAt,
   endedAt (ms on the runtime's clock), ok (bool), error (the kind name, e.g.
   "TimeoutError"; only when not ok), stubbed (bool)}. NULL for another kind of runtime
   (with a detail). */
AM2Z_API am2z_value *am2z_inline_calls(am2z_runtime *rt);
/* Forgets the recorded attempts. */
AM2Z_API void am2z_inline_calls_clear(am2z_runtime *rt);

#ifdef __cplusplus
}
#endif
#endif /* AM2Z_H_INCLUDED */

/* ==================================================================================== */
/*                                   IMPLEMENTATION                                     */
/* ==================================================================================== */
#ifdef AM2Z_IMPLEMENTATION
#ifndef AM2Z_IMPLEMENTATION_INCLUDED
#define AM2Z_IMPLEMENTATION_INCLUDED

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <float.h>
#include <locale.h>
#ifndef AM2Z_NO_THREADS
#include <pthread.h>
#include <sched.h>
#endif
#include <unistd.h>
#ifndef AM2Z_NO_FILE_STORE
#include <fcntl.h>
#include <sys/stat.h>
#endif

/* A strict -std=c99/c11 hides POSIX unless _POSIX_C_SOURCE was defined before the first
   system header; am2z.h defines it, but only if it came first. */
#if !defined(CLOCK_MONOTONIC) && (defined(__unix__) || defined(__unix) || defined(__APPLE__))
#error "am2z.h: clock_gettime/CLOCK_MONOTONIC are not declared: a system header came before am2z.h under a strict -std=c99/c11. Fix: include am2z.h first in the file that defines AM2Z_IMPLEMENTATION, or compile that file with -D_POSIX_C_SOURCE=200809L."
#endif

#ifdef __cplusplus
extern "C" { /* private functions keep C names in a C++ build too */
#endif

#ifndef AM2Z_ASSERT
#define AM2Z_ASSERT(c) assert(c)
#endif

/* Functions shared between the implementations of am2z.h and am2z_resp.h but not part
   of the public API: static in an AM2Z_STATIC build, otherwise exported with the am2z__
   prefix. */
#ifdef AM2Z_STATIC
#define AM2Z__PRIVATE AM2Z_API
#else
#define AM2Z__PRIVATE extern
#endif

/* ==== 0. options, status codes, allocator ============================================ */

#if defined(AM2Z_MALLOC) && defined(AM2Z_REALLOC) && defined(AM2Z_FREE)
#elif !defined(AM2Z_MALLOC) && !defined(AM2Z_REALLOC) && !defined(AM2Z_FREE)
#define AM2Z_MALLOC(sz) malloc(sz)
#define AM2Z_REALLOC(p, sz) realloc(p, sz)
#define AM2Z_FREE(p) free(p)
#else
#error "am2z: define all of AM2Z_MALLOC, AM2Z_REALLOC and AM2Z_FREE, or none"
#endif

/* Written once before other calls (documented), read by every thread after. */
static am2z_allocator am2z__allocator;

AM2Z_API void am2z_set_allocator(const am2z_allocator *allocator) {
    if (allocator && allocator->alloc_fn && allocator->realloc_fn && allocator->free_fn)
        am2z__allocator = *allocator;
    else
        memset(&am2z__allocator, 0, sizeof am2z__allocator);
}

AM2Z__PRIVATE void *am2z__malloc(size_t size) {
    if (size == 0) size = 1;
    return am2z__allocator.alloc_fn ? am2z__allocator.alloc_fn(size, am2z__allocator.user_data)
                                    : AM2Z_MALLOC(size);
}

AM2Z__PRIVATE void *am2z__realloc(void *ptr, size_t size) {
    if (size == 0) size = 1;
    return am2z__allocator.realloc_fn ? am2z__allocator.realloc_fn(ptr, size, am2z__allocator.user_data)
                                      : AM2Z_REALLOC(ptr, size);
}

AM2Z__PRIVATE void am2z__free(void *ptr) {
    if (!ptr) return;
    if (am2z__allocator.free_fn) am2z__allocator.free_fn(ptr, am2z__allocator.user_data);
    else AM2Z_FREE(ptr);
}

AM2Z_API void am2z_free(void *ptr) { am2z__free(ptr); }

/* Copies s (NULL stays NULL). */
AM2Z__PRIVATE char *am2z__strdup(const char *s) {
    size_t n;
    char *d;
    if (!s) return NULL;
    n = strlen(s);
    d = (char *)am2z__malloc(n + 1);
    if (d) memcpy(d, s, n + 1);
    return d;
}

AM2Z_API const char *am2z_status_string(am2z_status status) {
    switch (status) {
    case AM2Z_STATUS_OK: return "ok";
    case AM2Z_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case AM2Z_STATUS_NO_MEMORY: return "out of memory";
    case AM2Z_STATUS_NOT_FOUND: return "not found";
    case AM2Z_STATUS_EXISTS: return "already exists";
    case AM2Z_STATUS_CYCLE: return "composition cycle";
    case AM2Z_STATUS_LIMIT: return "limit exceeded";
    case AM2Z_STATUS_TIMEOUT: return "timed out";
    case AM2Z_STATUS_NOT_STARTED: return "runtime not started";
    case AM2Z_STATUS_CANCELLED: return "cancelled";
    case AM2Z_STATUS_IO: return "i/o error";
    case AM2Z_STATUS_PROTOCOL: return "protocol error";
    case AM2Z_STATUS_SERVER: return "server error";
    case AM2Z_STATUS_CONFLICT: return "conflict";
    case AM2Z_STATUS_NEED_MORE: return "need more input";
    }
    return "unknown status";
}

/* Thread-local storage class: a language keyword where there is one, else the
   GCC/Clang extension; nothing without threads (one thread, plain statics). */
#if defined(AM2Z_NO_THREADS)
#  define AM2Z__TLS
#elif defined(__cplusplus) && __cplusplus >= 201103L
#  define AM2Z__TLS thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#  define AM2Z__TLS _Thread_local
#else
#  define AM2Z__TLS __thread
#endif

typedef struct am2z__detail {
    am2z_status status;
    size_t offset;
    char text[256];
} am2z__detail;
static AM2Z__TLS am2z__detail am2z__last_detail;

AM2Z_API am2z_status am2z_status_last(void) { return am2z__last_detail.status; }
AM2Z_API const char *am2z_status_detail(void) { return am2z__last_detail.text; }
AM2Z_API size_t am2z_status_offset(void) {
    return am2z__last_detail.text[0] ? am2z__last_detail.offset : AM2Z_NTS;
}

/* Records why a call fails (printf-style, cut to fit) with the byte offset it refers
   to (AM2Z_NTS: none) and returns status, so a failing path reads
   `return am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "...", ...);`. */
AM2Z__PRIVATE am2z_status am2z__fail(am2z_status status, size_t offset, const char *fmt, ...)
    AM2Z_PRINTF(3, 4);
AM2Z__PRIVATE am2z_status am2z__fail(am2z_status status, size_t offset, const char *fmt, ...) {
    char text[sizeof am2z__last_detail.text]; /* the arguments may point into the old detail */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (!text[0]) snprintf(text, sizeof text, "%s", am2z_status_string(status));
    memcpy(am2z__last_detail.text, text, sizeof text);
    am2z__last_detail.offset = offset;
    am2z__last_detail.status = status;
    return status;
}

/* Stores st in a constructor's optional status out-parameter; returns NULL so a failing
   constructor ends with `return am2z__put_status(status, am2z__fail(...));`. */
AM2Z__PRIVATE void *am2z__put_status(am2z_status *out, am2z_status st) {
    if (out) *out = st;
    return NULL;
}

AM2Z_API int64_t am2z_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

AM2Z_API int64_t am2z_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Atomics: every atomic access in am2z.h and am2z_resp.h goes through these macros,
   each with its memory order spelled out; a port (MSVC Interlocked*, an RTOS) redefines
   this block and nothing else. The default is the GCC/Clang __atomic builtins on plain
   objects. C11 <stdatomic.h> is not the default because its operations need
   _Atomic-qualified objects, which the structs shared with C++ callers cannot declare.
   add/sub return the new value, fetch_add the old one; cas is strong and returns
   non-zero on success, storing the current value in *expected otherwise. A field that
   threads race to publish by cas is read only through am2z__atomic_load: clang 14's TSan
   does not count a failed cas's acquire, so a plain read after it is reported as a race. */
#define AM2Z__MO_RELAXED __ATOMIC_RELAXED
#define AM2Z__MO_ACQUIRE __ATOMIC_ACQUIRE
#define AM2Z__MO_RELEASE __ATOMIC_RELEASE
#define AM2Z__MO_ACQ_REL __ATOMIC_ACQ_REL
#define AM2Z__MO_SEQ_CST __ATOMIC_SEQ_CST
#define am2z__atomic_load(p, mo) __atomic_load_n((p), (mo))
#define am2z__atomic_store(p, v, mo) __atomic_store_n((p), (v), (mo))
#define am2z__atomic_add(p, v, mo) __atomic_add_fetch((p), (v), (mo))
#define am2z__atomic_sub(p, v, mo) __atomic_sub_fetch((p), (v), (mo))
#define am2z__atomic_fetch_add(p, v, mo) __atomic_fetch_add((p), (v), (mo))
#define am2z__atomic_exchange(p, v, mo) __atomic_exchange_n((p), (v), (mo))
#define am2z__atomic_cas(p, expected, desired, mo_ok, mo_fail) \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, (mo_ok), (mo_fail))

/* Atomic reference counts shared by every refcounted object. */
#define am2z__atomic_inc(p) am2z__atomic_add((p), 1, AM2Z__MO_RELAXED)
#define am2z__atomic_dec(p) am2z__atomic_sub((p), 1, AM2Z__MO_ACQ_REL)

/* Threads: every mutex, condition variable, read-write lock and thread of am2z.h and
   am2z_resp.h goes through these names, so a port (Windows threads, an RTOS) rewrites
   this block and nothing else. Condition waits take a deadline on am2z_monotonic_ns()'s
   clock (INT64_MAX: none), so no call site converts between clocks; they return non-zero
   when the deadline passed. Init functions return 0 on success.
   AM2Z_NO_THREADS: one thread, so locks do nothing, a condition wait returns at once
   (nobody else could signal it) and creating a thread fails. */
#ifdef AM2Z_NO_THREADS
typedef int am2z__mutex;
typedef int am2z__cond;
typedef int am2z__rwlock;
typedef int am2z__thread;
#define AM2Z__MUTEX_INITIALIZER 0
#define am2z__mutex_init(m) ((void)(m), 0)
#define am2z__mutex_lock(m) ((void)(m))
#define am2z__mutex_unlock(m) ((void)(m))
#define am2z__mutex_destroy(m) ((void)(m))
#define am2z__rwlock_init(l) ((void)(l), 0)
#define am2z__rwlock_rdlock(l) ((void)(l))
#define am2z__rwlock_wrlock(l) ((void)(l))
#define am2z__rwlock_unlock(l) ((void)(l))
#define am2z__rwlock_destroy(l) ((void)(l))
#define am2z__cond_signal(c) ((void)(c))
#define am2z__cond_broadcast(c) ((void)(c))
#define am2z__cond_destroy(c) ((void)(c))
#define am2z__thread_create(t, fn, arg) ((void)(t), (void)(fn), (void)(arg), -1)
#define am2z__thread_join(t) ((void)(t))

AM2Z__PRIVATE int am2z__cond_init(am2z__cond *c) {
    *c = 0;
    return 0;
}

AM2Z__PRIVATE void am2z__cond_wait(am2z__cond *c, am2z__mutex *m) {
    (void)c;
    (void)m;
}

AM2Z__PRIVATE int am2z__cond_wait_until(am2z__cond *c, am2z__mutex *m, int64_t until_ns) {
    (void)c;
    (void)m;
    return until_ns != INT64_MAX && am2z_monotonic_ns() >= until_ns;
}
#else
typedef pthread_mutex_t am2z__mutex;
typedef pthread_cond_t am2z__cond;
typedef pthread_rwlock_t am2z__rwlock;
typedef pthread_t am2z__thread;
#define AM2Z__MUTEX_INITIALIZER PTHREAD_MUTEX_INITIALIZER /* for the few static locks */
#define am2z__mutex_init(m) pthread_mutex_init((m), NULL)
#define am2z__mutex_lock(m) pthread_mutex_lock(m)
#define am2z__mutex_unlock(m) pthread_mutex_unlock(m)
#define am2z__mutex_destroy(m) pthread_mutex_destroy(m)
#define am2z__rwlock_init(l) pthread_rwlock_init((l), NULL)
#define am2z__rwlock_rdlock(l) pthread_rwlock_rdlock(l)
#define am2z__rwlock_wrlock(l) pthread_rwlock_wrlock(l)
#define am2z__rwlock_unlock(l) pthread_rwlock_unlock(l)
#define am2z__rwlock_destroy(l) pthread_rwlock_destroy(l)
#define am2z__cond_signal(c) pthread_cond_signal(c)
#define am2z__cond_broadcast(c) pthread_cond_broadcast(c)
#define am2z__cond_destroy(c) pthread_cond_destroy(c)
#define am2z__thread_create(t, fn, arg) pthread_create((t), NULL, (fn), (arg))
#define am2z__thread_join(t) pthread_join((t), NULL)

/* A condition variable whose timed waits follow the monotonic clock (the wall clock
   where the platform cannot: macOS), so setting the date never stretches a wait. */
AM2Z__PRIVATE int am2z__cond_init(am2z__cond *c) {
#ifdef __APPLE__
    return pthread_cond_init(c, NULL);
#else
    pthread_condattr_t a;
    int rc;
    if (pthread_condattr_init(&a) != 0) return -1;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc;
#endif
}

AM2Z__PRIVATE void am2z__cond_wait(am2z__cond *c, am2z__mutex *m) { pthread_cond_wait(c, m); }

AM2Z__PRIVATE int am2z__cond_wait_until(am2z__cond *c, am2z__mutex *m, int64_t until_ns) {
    /* a 32-bit time_t ends in 2038: a deadline past its range means no deadline */
    const int64_t sec_max = sizeof(time_t) < 8 ? INT32_MAX - 1 : INT64_MAX / 1000000000 - 1;
    struct timespec ts;
    if (until_ns < 0) until_ns = 0;
#ifdef __APPLE__
    if (until_ns != INT64_MAX) until_ns += am2z_now_ms() * 1000000 - am2z_monotonic_ns();
#endif
    if (until_ns == INT64_MAX || until_ns / 1000000000 >= sec_max) {
        pthread_cond_wait(c, m);
        return 0;
    }
    ts.tv_sec = (time_t)(until_ns / 1000000000);
    ts.tv_nsec = (long)(until_ns % 1000000000);
    return pthread_cond_timedwait(c, m, &ts) == ETIMEDOUT;
}
#endif /* AM2Z_NO_THREADS */

/* A mutex and the condition waited on with it, made together: 0, or -1 with neither. */
AM2Z__PRIVATE int am2z__mutex_cond_init(am2z__mutex *m, am2z__cond *c) {
    if (am2z__mutex_init(m) != 0) return -1;
    if (am2z__cond_init(c) != 0) {
        am2z__mutex_destroy(m);
        return -1;
    }
    return 0;
}

/* ==== 1. values ======================================================================= */

/* Representation. A value pointer is one of
   - a tagged small integer: bit 0 set, the integer in the other bits (no allocation);
   - a static singleton (null, true, false, [], {}): flag AM2Z__STATIC, never freed;
   - one heap block holding header and payload: strings keep their bytes inline, arrays
     their item pointers, objects their members and their key bytes.
   Containers record an upper bound of their nesting depth, so every recursive walk
   (release, write, equal, hash, edit) is bounded by AM2Z_VALUE_MAX_DEPTH. */
struct am2z_value {
    uint32_t rc;     /* atomic reference count; unused by static singletons */
    uint8_t type;    /* am2z_type */
    uint8_t flags;
    uint16_t depth;  /* 0 for scalars; a container's is >= 1 + each child's */
};
#define AM2Z__STATIC 1u

typedef struct am2z__num { am2z_value h; union { int64_t i; double d; } u; } am2z__num;
typedef struct am2z__str { am2z_value h; size_t len; } am2z__str;        /* + len bytes + NUL */
typedef struct am2z__arr { am2z_value h; size_t len, cap; } am2z__arr;  /* + cap item pointers */
typedef struct am2z__member {
    am2z_value *val;
    size_t koff;     /* offset of the NUL-terminated key in the object's key bytes */
    uint32_t klen;
    uint32_t khash;  /* am2z__keyhash of the key, kept while the object has an index */
} am2z__member;
typedef struct am2z__obj {
    am2z_value h;
    size_t len, cap;     /* members in use / allocated */
    size_t kused, kcap;  /* key bytes in use / allocated */
    size_t imask;        /* hash index slots - 1; 0 when there is no index */
} am2z__obj;             /* + cap members + index slots + kcap key bytes, one block */

/* Objects with room for more than this many members carry a hash index (an
   open-addressing table of member + 1, 0 = empty, at least twice the capacity, so
   never more than half full) in the same block; below it a scan is faster. */
#define AM2Z__INDEX_MIN 16
#define AM2Z__NPOS ((size_t)-1)
#define AM2Z__TAGGED(v) ((((uintptr_t)(v)) & 1u) != 0)
#define AM2Z__ARR(v) ((am2z__arr *)(void *)(v))
#define AM2Z__OBJ(v) ((am2z__obj *)(void *)(v))
#define AM2Z__STR(v) ((am2z__str *)(void *)(v))
#define AM2Z__NUM(v) ((am2z__num *)(void *)(v))
#if UINTPTR_MAX >= 0xffffffffffffffffu
#define AM2Z__TAG_MIN (-((int64_t)1 << 62))
#define AM2Z__TAG_MAX (((int64_t)1 << 62) - 1)
#else
#define AM2Z__TAG_MIN (-((int64_t)1 << 30))
#define AM2Z__TAG_MAX (((int64_t)1 << 30) - 1)
#endif
#if AM2Z_VALUE_MAX_DEPTH < 2 || AM2Z_VALUE_MAX_DEPTH > 65535
#error "am2z: AM2Z_VALUE_MAX_DEPTH must be in 2..65535"
#endif

static const am2z__num am2z__null_s = {{0, AM2Z_TYPE_NULL, AM2Z__STATIC, 0}, {0}};
static const am2z__num am2z__true_s = {{0, AM2Z_TYPE_BOOL, AM2Z__STATIC, 0}, {1}};
static const am2z__num am2z__false_s = {{0, AM2Z_TYPE_BOOL, AM2Z__STATIC, 0}, {0}};
static const am2z__arr am2z__empty_arr = {{0, AM2Z_TYPE_ARRAY, AM2Z__STATIC, 1}, 0, 0};
static const am2z__obj am2z__empty_obj = {{0, AM2Z_TYPE_OBJECT, AM2Z__STATIC, 1}, 0, 0, 0, 0, 0};

static am2z_value **am2z__items(const am2z__arr *a) { return (am2z_value **)(void *)(a + 1); }
static am2z__member *am2z__mems(const am2z__obj *o) { return (am2z__member *)(void *)(o + 1); }
static uint32_t *am2z__index(const am2z__obj *o) { return (uint32_t *)(void *)(am2z__mems(o) + o->cap); }
static char *am2z__keys(const am2z__obj *o) {
    return (char *)(am2z__index(o) + (o->imask ? o->imask + 1 : 0));
}
static char *am2z__bytes(const am2z__str *s) { return (char *)(s + 1); }

static am2z_type am2z__type(const am2z_value *v) {
    if (!v) return AM2Z_TYPE_NONE;
    return AM2Z__TAGGED(v) ? AM2Z_TYPE_INT : (am2z_type)v->type;
}
static unsigned am2z__depth(const am2z_value *v) {
    return (!v || AM2Z__TAGGED(v)) ? 0u : v->depth;
}
static void am2z__raise_depth(am2z_value *c, const am2z_value *child) {
    unsigned d = am2z__depth(child) + 1;
    if (d > c->depth) c->depth = (uint16_t)d;
}
static int64_t am2z__untag(const am2z_value *v) {
    intptr_t s = (intptr_t)(uintptr_t)v; /* 2i + 1 */
    return (int64_t)((s - 1) / 2);
}
static int64_t am2z__int(const am2z_value *v) {
    return AM2Z__TAGGED(v) ? am2z__untag(v) : AM2Z__NUM(v)->u.i;
}

/* A value block; NULL (with the detail recorded) when out of memory. */
static am2z_value *am2z__alloc(size_t size, am2z_type t) {
    am2z_value *v = (am2z_value *)am2z__malloc(size);
    if (!v) {
        am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "value: out of memory (%s of %lu bytes)",
                   am2z_type_name(t), (unsigned long)size);
        return NULL;
    }
    v->rc = 1;
    v->type = (uint8_t)t;
    v->flags = 0;
    v->depth = 0;
    return v;
}

/* ---- hashing ---- */

static uint64_t am2z__mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}
/* Reads bytes as little-endian words so the hash is the same on every machine. */
static uint64_t am2z__hash_bytes(const void *p, size_t n, uint64_t seed) {
    const unsigned char *s = (const unsigned char *)p;
    uint64_t h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL), w;
    size_t i;
    while (n >= 8) {
        w = (uint64_t)s[0] | (uint64_t)s[1] << 8 | (uint64_t)s[2] << 16 | (uint64_t)s[3] << 24 |
            (uint64_t)s[4] << 32 | (uint64_t)s[5] << 40 | (uint64_t)s[6] << 48 | (uint64_t)s[7] << 56;
        w *= 0x87c37b91114253d5ULL;
        w ^= w >> 31;
        h = (h ^ w) * 0x4cf5ad432745937fULL;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    w = 0;
    for (i = 0; i < n; i++) w |= (uint64_t)s[i] << (8 * i);
    h ^= w * 0x87c37b91114253d5ULL;
    return am2z__mix64(h);
}

/* Key hashes for object indexes use a per-process seed so that hostile input cannot
   precompute colliding keys; they never leave the process. */
static uint32_t am2z__seed_v;
static uint32_t am2z__seed(void) {
    uint32_t s = am2z__atomic_load(&am2z__seed_v, AM2Z__MO_RELAXED), expect = 0;
    if (s) return s;
    s = (uint32_t)am2z__mix64((uint64_t)(uintptr_t)&am2z__seed_v ^ (uint64_t)am2z_monotonic_ns() ^
                              ((uint64_t)am2z_now_ms() << 24)) | 1u;
    if (!am2z__atomic_cas(&am2z__seed_v, &expect, s, AM2Z__MO_RELAXED, AM2Z__MO_RELAXED))
        s = expect;
    return s;
}
static uint32_t am2z__keyhash(const char *k, size_t n) {
    return (uint32_t)am2z__hash_bytes(k, n, am2z__seed());
}
/* Processor names and session ids index the runtimes' tables; they can come from
   outside (a tenant id), so they get the seeded hash too. */
static uint64_t am2z__strhash(const char *s) { return am2z__hash_bytes(s, strlen(s), am2z__seed()); }

/* ---- growable arrays ---- */

/* The one growable buffer (the parser's stacks, JSON text, formatted messages, log
   lines). It may start in storage the caller supplies (`small`, usually on its stack)
   and moves to the heap when it outgrows it. A failed allocation sets `failed` for
   good, so a writer appends without checking and looks once at the end. */
typedef struct am2z__vec {
    void *p;
    size_t n, cap;  /* items in use, items of room */
    void *small;    /* the caller's storage (never freed here), or NULL */
    int failed;
} am2z__vec;

static void am2z__vec_init(am2z__vec *v, void *small, size_t cap) {
    v->p = v->small = small;
    v->n = 0;
    v->cap = small ? cap : 0;
    v->failed = 0;
}

static void am2z__vec_free(am2z__vec *v) {
    if (v->p != v->small) am2z__free(v->p);
}

/* Room for `add` more items of `size` bytes each; 0 (and failed set) when there is none. */
static int am2z__vec_reserve(am2z__vec *v, size_t add, size_t size) {
    size_t max = SIZE_MAX / 4 / size, cap;
    void *p;
    if (add <= v->cap - v->n) return 1;
    if (v->failed || add > max - v->n) goto fail;
    cap = v->cap * 2;
    if (cap < 256 / size) cap = 256 / size; /* no heap block under 256 bytes */
    if (cap > max) cap = max;
    if (cap < v->n + add) cap = v->n + add;
    p = v->p == v->small ? am2z__malloc(cap * size) : am2z__realloc(v->p, cap * size);
    if (!p) goto fail;
    if (v->p == v->small && v->n) memcpy(p, v->small, v->n * size);
    v->p = p;
    v->cap = cap;
    return 1;
fail:
    v->failed = 1;
    return 0;
}

/* Byte helpers, for vecs of char. */
static void am2z__vec_put(am2z__vec *v, const void *s, size_t n) {
    if (n && (n <= v->cap - v->n || am2z__vec_reserve(v, n, 1))) {
        memcpy((char *)v->p + v->n, s, n);
        v->n += n;
    }
}
static void am2z__vec_putc(am2z__vec *v, char c) {
    if (v->n < v->cap || am2z__vec_reserve(v, 1, 1)) ((char *)v->p)[v->n++] = c;
}
static void am2z__vec_puts(am2z__vec *v, const char *s) { am2z__vec_put(v, s, strlen(s)); }

/* Appends printf output cut to at most max bytes, NUL-terminated (the NUL is not counted
   in n). Returns the length of the whole output, which may exceed max, or -1 when the
   format fails. When memory runs out, failed is set and what fitted is kept. */
static int am2z__vec_vprintf(am2z__vec *v, size_t max, const char *fmt, va_list ap) {
    size_t room = v->cap - v->n, want;
    char *at = room ? (char *)v->p + v->n : NULL;
    va_list aq;
    int n;
    va_copy(aq, ap);
    n = vsnprintf(at, room, fmt, aq);
    va_end(aq);
    if (n < 0) {
        v->failed = 1;
        if (at) *at = 0;
        return n;
    }
    want = (size_t)n < max ? (size_t)n : max;
    if (want >= room) {
        if (!am2z__vec_reserve(v, want + 1, 1)) {
            if (room) v->n += room - 1;
            return n;
        }
        vsnprintf((char *)v->p + v->n, want + 1, fmt, ap);
    }
    v->n += want;
    ((char *)v->p)[v->n] = 0;
    return n;
}

/* ---- constructors, retain, release ---- */

AM2Z_API am2z_value *am2z_value_null(void) { return (am2z_value *)&am2z__null_s; }
AM2Z_API am2z_value *am2z_value_bool(int b) {
    return b ? (am2z_value *)&am2z__true_s : (am2z_value *)&am2z__false_s;
}
AM2Z_API am2z_value *am2z_value_array(void) { return (am2z_value *)&am2z__empty_arr; }
AM2Z_API am2z_value *am2z_value_object(void) { return (am2z_value *)&am2z__empty_obj; }

AM2Z_API am2z_value *am2z_value_int(int64_t i) {
    am2z_value *v;
    if (i >= AM2Z__TAG_MIN && i <= AM2Z__TAG_MAX)
        return (am2z_value *)((((uintptr_t)(uint64_t)i) << 1) | 1u);
    v = am2z__alloc(sizeof(am2z__num), AM2Z_TYPE_INT);
    if (v) AM2Z__NUM(v)->u.i = i;
    return v;
}

AM2Z_API am2z_value *am2z_value_double(double d) {
    am2z_value *v;
    if (!(d - d == 0.0)) return am2z_value_null(); /* NaN or infinite: JSON has no spelling */
    v = am2z__alloc(sizeof(am2z__num), AM2Z_TYPE_DOUBLE);
    if (v) AM2Z__NUM(v)->u.d = d;
    return v;
}

/* A string of len bytes, uninitialised but NUL-terminated. */
static am2z__str *am2z__str_alloc(size_t len) {
    am2z__str *s;
    if (len > SIZE_MAX - sizeof(am2z__str) - 1) {
        am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "value: string of %lu bytes", (unsigned long)len);
        return NULL;
    }
    s = (am2z__str *)(void *)am2z__alloc(sizeof(am2z__str) + len + 1, AM2Z_TYPE_STRING);
    if (!s) return NULL;
    s->len = len;
    am2z__bytes(s)[len] = 0;
    return s;
}

AM2Z_API am2z_value *am2z_value_string_n(const char *s, size_t len) {
    am2z__str *v;
    if (len == AM2Z_NTS) len = s ? strlen(s) : 1; /* NULL as a C string fails below */
    if (!s && len) {
        am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "value_string_n: NULL bytes");
        return NULL;
    }
    v = am2z__str_alloc(len);
    if (!v) return NULL;
    if (len) memcpy(am2z__bytes(v), s, len);
    return &v->h;
}

AM2Z_API am2z_value *am2z_value_string(const char *s) {
    if (!s) am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "value_string: NULL string");
    return s ? am2z_value_string_n(s, strlen(s)) : NULL;
}

AM2Z_API am2z_value *am2z_value_stringf(const char *fmt, ...) {
    char small[256];
    am2z__vec text;
    am2z_value *v = NULL;
    va_list ap;
    if (!fmt) {
        am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "value_stringf: NULL format");
        return NULL;
    }
    am2z__vec_init(&text, small, sizeof small);
    va_start(ap, fmt);
    am2z__vec_vprintf(&text, SIZE_MAX, fmt, ap);
    va_end(ap);
    if (!text.failed) v = am2z_value_string_n((const char *)text.p, text.n);
    else am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "value_stringf: out of memory");
    am2z__vec_free(&text);
    return v;
}

AM2Z_API am2z_value *am2z_value_retain(const am2z_value *v) {
    am2z_value *m = (am2z_value *)v;
    if (m && !AM2Z__TAGGED(m) && !(m->flags & AM2Z__STATIC)) am2z__atomic_inc(&m->rc);
    return m;
}

/* Frees v, whose count has reached zero, and releases its children (recursion is
   bounded by the depth limit). */
static void am2z__destroy(am2z_value *v) {
    size_t i;
    if (v->type == AM2Z_TYPE_ARRAY) {
        am2z__arr *a = AM2Z__ARR(v);
        for (i = 0; i < a->len; i++) am2z_value_release(am2z__items(a)[i]);
    } else if (v->type == AM2Z_TYPE_OBJECT) {
        am2z__obj *o = AM2Z__OBJ(v);
        for (i = 0; i < o->len; i++) am2z_value_release(am2z__mems(o)[i].val);
    }
    am2z__free(v);
}

AM2Z_API void am2z_value_release(am2z_value *v) {
    if (!v || AM2Z__TAGGED(v) || (v->flags & AM2Z__STATIC)) return;
    /* The sole owner skips the atomic read-modify-write: nobody else can retain it. */
    if (am2z__atomic_load(&v->rc, AM2Z__MO_ACQUIRE) == 1 || am2z__atomic_dec(&v->rc) == 0) am2z__destroy(v);
}

/* ---- reading ---- */

AM2Z_API am2z_type am2z_value_type(const am2z_value *v) { return am2z__type(v); }

AM2Z_API const char *am2z_type_name(am2z_type t) {
    switch (t) {
    case AM2Z_TYPE_NONE: return "none";
    case AM2Z_TYPE_NULL: return "null";
    case AM2Z_TYPE_BOOL: return "bool";
    case AM2Z_TYPE_INT: return "int";
    case AM2Z_TYPE_DOUBLE: return "double";
    case AM2Z_TYPE_STRING: return "string";
    case AM2Z_TYPE_ARRAY: return "array";
    case AM2Z_TYPE_OBJECT: return "object";
    }
    return "unknown";
}

AM2Z_API int am2z_value_as_bool(const am2z_value *v, int def) {
    return am2z__type(v) == AM2Z_TYPE_BOOL ? (int)AM2Z__NUM(v)->u.i : def;
}

AM2Z_API int64_t am2z_value_as_int(const am2z_value *v, int64_t def) {
    am2z_type t = am2z__type(v);
    if (t == AM2Z_TYPE_INT) return am2z__int(v);
    if (t == AM2Z_TYPE_DOUBLE) {
        double d = AM2Z__NUM(v)->u.d;
        /* The range test comes first: converting an out-of-range double is undefined. */
        if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && (double)(int64_t)d == d)
            return (int64_t)d;
    }
    return def;
}

AM2Z_API double am2z_value_as_double(const am2z_value *v, double def) {
    am2z_type t = am2z__type(v);
    if (t == AM2Z_TYPE_DOUBLE) return AM2Z__NUM(v)->u.d;
    if (t == AM2Z_TYPE_INT) return (double)am2z__int(v);
    return def;
}

AM2Z_API const char *am2z_value_as_string(const am2z_value *v, size_t *len) {
    if (am2z__type(v) != AM2Z_TYPE_STRING) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = AM2Z__STR(v)->len;
    return am2z__bytes(AM2Z__STR(v));
}

AM2Z_API size_t am2z_value_len(const am2z_value *v) {
    switch (am2z__type(v)) {
    case AM2Z_TYPE_STRING: return AM2Z__STR(v)->len;
    case AM2Z_TYPE_ARRAY: return AM2Z__ARR(v)->len;
    case AM2Z_TYPE_OBJECT: return AM2Z__OBJ(v)->len;
    default: return 0;
    }
}

AM2Z_API const am2z_value *am2z_value_at(const am2z_value *array, size_t i) {
    if (am2z__type(array) != AM2Z_TYPE_ARRAY || i >= AM2Z__ARR(array)->len) return NULL;
    return am2z__items(AM2Z__ARR(array))[i];
}

AM2Z_API const char *am2z_value_key_at(const am2z_value *object, size_t i, size_t *len) {
    const am2z__obj *o = AM2Z__OBJ(object);
    if (am2z__type(object) != AM2Z_TYPE_OBJECT || i >= o->len) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = am2z__mems(o)[i].klen;
    return am2z__keys(o) + am2z__mems(o)[i].koff;
}

AM2Z_API const am2z_value *am2z_value_member_at(const am2z_value *object, size_t i) {
    if (am2z__type(object) != AM2Z_TYPE_OBJECT || i >= AM2Z__OBJ(object)->len) return NULL;
    return am2z__mems(AM2Z__OBJ(object))[i].val;
}

/* ---- objects ---- */

static size_t am2z__obj_find(const am2z__obj *o, const char *k, size_t klen) {
    const am2z__member *m = am2z__mems(o);
    const char *keys = am2z__keys(o);
    const uint32_t *t;
    size_t i, s;
    uint32_t h, e;
    if (o->imask) {
        h = am2z__keyhash(k, klen);
        t = am2z__index(o);
        for (s = h & o->imask; (e = t[s]) != 0; s = (s + 1) & o->imask) {
            i = e - 1;
            if (m[i].khash == h && m[i].klen == klen && memcmp(keys + m[i].koff, k, klen) == 0) return i;
        }
        return AM2Z__NPOS;
    }
    for (i = 0; i < o->len; i++)
        if (m[i].klen == klen && memcmp(keys + m[i].koff, k, klen) == 0) return i;
    return AM2Z__NPOS;
}

AM2Z_API const am2z_value *am2z_value_find(const am2z_value *object, const char *key, size_t key_len) {
    size_t i;
    if (am2z__type(object) != AM2Z_TYPE_OBJECT || !key) return NULL;
    if (key_len == AM2Z_NTS) key_len = strlen(key);
    i = am2z__obj_find(AM2Z__OBJ(object), key, key_len);
    return i == AM2Z__NPOS ? NULL : am2z__mems(AM2Z__OBJ(object))[i].val;
}

/* Index slots of an object with room for cap members: none up to AM2Z__INDEX_MIN,
   else a power of two at least twice cap. */
static size_t am2z__index_slots(size_t cap) {
    size_t s = 64;
    if (cap <= AM2Z__INDEX_MIN) return 0;
    while (s / 2 < cap) s *= 2;
    return s;
}

/* Bytes of an object block, or 0 when that would not fit a size_t. */
static size_t am2z__obj_bytes(size_t cap, size_t kcap) {
    size_t fixed = sizeof(am2z__obj) + 64 * sizeof(uint32_t);
    if (cap > 0xfffffffeu || kcap > SIZE_MAX / 4 - fixed ||
        cap > (SIZE_MAX / 4 - kcap - fixed) / (sizeof(am2z__member) + 4 * sizeof(uint32_t)))
        return 0;
    return sizeof(am2z__obj) + cap * sizeof(am2z__member) + am2z__index_slots(cap) * sizeof(uint32_t) + kcap;
}

/* Fills the hash index (if the object has one) from the members; rehash when their
   key hashes are not computed yet (they are only kept while there is an index). */
static void am2z__obj_reindex(am2z__obj *o, int rehash) {
    uint32_t *t = am2z__index(o);
    am2z__member *m = am2z__mems(o);
    size_t i, s;
    if (!o->imask) return;
    memset(t, 0, (o->imask + 1) * sizeof *t);
    for (i = 0; i < o->len; i++) {
        if (rehash) m[i].khash = am2z__keyhash(am2z__keys(o) + m[i].koff, m[i].klen);
        for (s = m[i].khash & o->imask; t[s]; s = (s + 1) & o->imask) {}
        t[s] = (uint32_t)(i + 1);
    }
}

static am2z__obj *am2z__obj_alloc(size_t cap, size_t kcap) {
    size_t bytes = am2z__obj_bytes(cap, kcap), slots;
    am2z__obj *o;
    if (!bytes) return NULL;
    o = (am2z__obj *)(void *)am2z__alloc(bytes, AM2Z_TYPE_OBJECT);
    if (!o) return NULL;
    slots = am2z__index_slots(cap);
    o->h.depth = 1;
    o->len = 0;
    o->cap = cap;
    o->kused = 0;
    o->kcap = kcap;
    o->imask = slots ? slots - 1 : 0;
    if (slots) memset(am2z__index(o), 0, slots * sizeof(uint32_t));
    return o;
}

/* Room for nmem more members and nkey more key bytes in an object we own. Returns the
   (maybe moved) object, or NULL with o unchanged and still valid. */
static am2z__obj *am2z__obj_reserve(am2z__obj *o, size_t nmem, size_t nkey) {
    size_t cap = o->cap, kcap = o->kcap, bytes, oldkeys, slots;
    am2z__obj *n;
    if (nmem <= cap - o->len && nkey <= kcap - o->kused) return o;
    if (nmem > 0xfffffffeu - o->len || nkey > SIZE_MAX / 4 - o->kused) return NULL;
    if (cap - o->len < nmem) {
        cap = cap < 4 ? 8 : cap * 2;
        if (cap < o->len + nmem) cap = o->len + nmem;
    }
    if (kcap - o->kused < nkey) {
        kcap = kcap < 32 ? 64 : kcap * 2;
        if (kcap < o->kused + nkey) kcap = o->kused + nkey;
    }
    bytes = am2z__obj_bytes(cap, kcap);
    if (!bytes) return NULL;
    oldkeys = (size_t)(am2z__keys(o) - (char *)o);
    n = (am2z__obj *)am2z__realloc(o, bytes);
    if (!n) return NULL;
    n->kcap = kcap;
    if (cap != n->cap) {
        /* Members, index and key bytes share the block: slide the key bytes behind the
           grown member and index areas (never backwards), then rebuild the index. */
        int had_index = n->imask != 0;
        slots = am2z__index_slots(cap);
        n->cap = cap;
        n->imask = slots ? slots - 1 : 0;
        memmove(am2z__keys(n), (char *)n + oldkeys, n->kused);
        am2z__obj_reindex(n, !had_index);
    }
    return n;
}

/* Appends member (k, val) to an object we own; the key must be absent. val is consumed
   on success only. Returns the (maybe moved) object, or NULL with o unchanged. */
static am2z__obj *am2z__obj_add(am2z__obj *o, const char *k, size_t klen, am2z_value *val) {
    am2z__obj *n;
    am2z__member *m;
    char *keys;
    if (klen >= 0xffffffffu) return NULL;
    n = am2z__obj_reserve(o, 1, klen + 1);
    if (!n) return NULL;
    m = am2z__mems(n) + n->len;
    keys = am2z__keys(n);
    if (klen) memcpy(keys + n->kused, k, klen);
    keys[n->kused + klen] = 0;
    m->val = val;
    m->koff = n->kused;
    m->klen = (uint32_t)klen;
    m->khash = 0;
    n->kused += klen + 1;
    n->len++;
    am2z__raise_depth(&n->h, val);
    if (n->imask) {
        uint32_t *t = am2z__index(n);
        size_t s;
        m->khash = am2z__keyhash(k, klen);
        for (s = m->khash & n->imask; t[s]; s = (s + 1) & n->imask) {}
        t[s] = (uint32_t)n->len;
    }
    return n;
}

/* Removes member i of an object we own, keeping the others in order. */
static void am2z__obj_del(am2z__obj *o, size_t i) {
    am2z__member *m = am2z__mems(o);
    char *keys = am2z__keys(o);
    size_t koff = m[i].koff, kl = (size_t)m[i].klen + 1, j;
    am2z_value_release(m[i].val);
    memmove(keys + koff, keys + koff + kl, o->kused - koff - kl);
    o->kused -= kl;
    memmove(m + i, m + i + 1, (o->len - i - 1) * sizeof *m);
    o->len--;
    for (j = 0; j < o->len; j++)
        if (m[j].koff > koff) m[j].koff -= kl;
    am2z__obj_reindex(o, 0);
}

/* A shallow copy with room for extra members and kextra key bytes: members are
   retained, never copied. */
static am2z__obj *am2z__obj_copy(const am2z__obj *o, size_t extra, size_t kextra) {
    am2z__obj *n;
    size_t i;
    if (extra > 0xfffffffeu - o->len || kextra > SIZE_MAX / 4 - o->kused) return NULL;
    if (o->len + extra == o->cap && o->kused + kextra == o->kcap) {
        /* The same shape (a state's metadata on every bump): one copy of the block
           behind the header, members, index and key bytes at the same offsets. */
        size_t bytes = am2z__obj_bytes(o->cap, o->kcap);
        n = (am2z__obj *)(void *)am2z__alloc(bytes, AM2Z_TYPE_OBJECT);
        if (!n) return NULL;
        memcpy((char *)n + sizeof(am2z_value), (const char *)o + sizeof(am2z_value), bytes - sizeof(am2z_value));
        n->h.depth = o->h.depth;
        for (i = 0; i < n->len; i++) am2z_value_retain(am2z__mems(n)[i].val);
        return n;
    }
    n = am2z__obj_alloc(o->len + extra, o->kused + kextra);
    if (!n) return NULL;
    if (o->len) memcpy(am2z__mems(n), am2z__mems(o), o->len * sizeof(am2z__member));
    if (o->kused) memcpy(am2z__keys(n), am2z__keys(o), o->kused);
    n->len = o->len;
    n->kused = o->kused;
    n->h.depth = o->h.depth;
    for (i = 0; i < n->len; i++) am2z_value_retain(am2z__mems(n)[i].val);
    /* Same capacity class, same member positions: the index can be copied. */
    if (n->imask && n->imask == o->imask)
        memcpy(am2z__index(n), am2z__index(o), (n->imask + 1) * sizeof(uint32_t));
    else
        am2z__obj_reindex(n, !o->imask);
    return n;
}

/* ---- arrays ---- */

static am2z__arr *am2z__arr_alloc(size_t cap) {
    am2z__arr *a;
    if (cap > (SIZE_MAX / 2 - sizeof(am2z__arr)) / sizeof(am2z_value *)) return NULL;
    a = (am2z__arr *)(void *)am2z__alloc(sizeof(am2z__arr) + cap * sizeof(am2z_value *), AM2Z_TYPE_ARRAY);
    if (!a) return NULL;
    a->h.depth = 1;
    a->len = 0;
    a->cap = cap;
    return a;
}

static am2z__arr *am2z__arr_reserve(am2z__arr *a, size_t extra) {
    size_t cap = a->cap;
    am2z__arr *n;
    if (extra <= cap - a->len) return a;
    if (extra > SIZE_MAX / 4 - a->len) return NULL;
    cap = cap < 4 ? 8 : cap * 2;
    if (cap < a->len + extra) cap = a->len + extra;
    if (cap > (SIZE_MAX / 2 - sizeof(am2z__arr)) / sizeof(am2z_value *)) return NULL;
    n = (am2z__arr *)am2z__realloc(a, sizeof(am2z__arr) + cap * sizeof(am2z_value *));
    if (!n) return NULL;
    n->cap = cap;
    return n;
}

static am2z__arr *am2z__arr_copy(const am2z__arr *a, size_t extra) {
    am2z__arr *n;
    size_t i;
    if (extra > SIZE_MAX / 4 - a->len) return NULL;
    n = am2z__arr_alloc(a->len + extra);
    if (!n) return NULL;
    if (a->len) memcpy(am2z__items(n), am2z__items(a), a->len * sizeof(am2z_value *));
    n->len = a->len;
    n->h.depth = a->h.depth;
    for (i = 0; i < n->len; i++) am2z_value_retain(am2z__items(n)[i]);
    return n;
}

/* Copy-on-write: returns container v itself when the caller held the only reference,
   else a shallow copy with room for `extra` members (and kextra key bytes) and releases
   v. v is consumed; NULL when out of memory. A copy of an empty container gets the
   usual starting capacity, so building an object member by member costs one block. */
static am2z_value *am2z__own(am2z_value *v, size_t extra, size_t kextra) {
    am2z_value *c;
    if (!(v->flags & AM2Z__STATIC) && am2z__atomic_load(&v->rc, AM2Z__MO_ACQUIRE) == 1) return v;
    if (v->type == AM2Z_TYPE_ARRAY) {
        if (AM2Z__ARR(v)->len == 0 && extra < 8) extra = 8;
        c = (am2z_value *)am2z__arr_copy(AM2Z__ARR(v), extra);
    } else {
        if (AM2Z__OBJ(v)->len == 0 && extra < 8) extra = 8;
        if (AM2Z__OBJ(v)->len == 0 && kextra < 64) kextra = 64;
        c = (am2z_value *)am2z__obj_copy(AM2Z__OBJ(v), extra, kextra);
    }
    am2z_value_release(v);
    return c;
}

/* Appends x to array a; both consumed; NULL (both released) on failure. */
static am2z_value *am2z__arr_push(am2z_value *a, am2z_value *x) {
    am2z__arr *n;
    if (am2z__depth(x) + 1 > AM2Z_VALUE_MAX_DEPTH) goto fail;
    a = am2z__own(a, 1, 0);
    if (!a) goto fail;
    n = am2z__arr_reserve(AM2Z__ARR(a), 1);
    if (!n) goto fail;
    am2z__items(n)[n->len++] = x;
    am2z__raise_depth(&n->h, x);
    return &n->h;
fail:
    am2z_value_release(a);
    am2z_value_release(x);
    return NULL;
}

/* ---- edit failures ---- */

/* "a number", "an object", ...: how failure details name what an edit found. */
static const char *am2z__a_type(const am2z_value *v) {
    switch (am2z__type(v)) {
    case AM2Z_TYPE_NULL: return "null";
    case AM2Z_TYPE_BOOL: return "a boolean";
    case AM2Z_TYPE_INT:
    case AM2Z_TYPE_DOUBLE: return "a number";
    case AM2Z_TYPE_STRING: return "a string";
    case AM2Z_TYPE_ARRAY: return "an array";
    case AM2Z_TYPE_OBJECT: return "an object";
    default: return "missing";
    }
}

/* Set while the thread's detail explains a NULL that an edit returned, so that an edit
   given that NULL keeps the first reason instead of recording "no container". am2z_ok
   and am2z_edit clear it once they have reported the reason. */
static AM2Z__TLS int am2z__edit_failed;

/* Records why an edit fails as "<op> '<path>': <reason>" ("<op>: <reason>" without a
   path; plen may be AM2Z_NTS) and returns NULL. */
static am2z_value *am2z__edit_fail(am2z_status st, const char *op, const char *path, size_t plen,
                                   const char *fmt, ...) AM2Z_PRINTF(5, 6);
static am2z_value *am2z__edit_fail(am2z_status st, const char *op, const char *path, size_t plen,
                                   const char *fmt, ...) {
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (!path) {
        am2z__fail(st, AM2Z_NTS, "%s: %s", op, why);
    } else {
        if (plen == AM2Z_NTS) plen = strlen(path);
        am2z__fail(st, AM2Z_NTS, "%s '%.*s': %s", op, (int)(plen < 200 ? plen : 200), path, why);
    }
    am2z__edit_failed = 1;
    return NULL;
}

/* An edit given NULL (what: "container" or "value"): an earlier call failed. */
static am2z_value *am2z__edit_null(const char *op, const char *path, size_t plen, const char *what) {
    if (am2z__edit_failed) return NULL; /* the detail already names the first failure */
    return am2z__edit_fail(AM2Z_STATUS_INVALID_ARGUMENT, op, path, plen,
                           "no %s (an earlier call failed)", what);
}

/* ---- editing objects ---- */

/* Sets key k of object v (both v and x consumed); NULL (both released) when v is not an
   object or out of memory. The library's own edits of objects it built use it. */
static am2z_value *am2z__obj_set(am2z_value *v, const char *k, size_t klen, am2z_value *x) {
    size_t i;
    am2z__obj *o, *n;
    if (!x || !k || am2z__type(v) != AM2Z_TYPE_OBJECT || am2z__depth(x) + 1 > AM2Z_VALUE_MAX_DEPTH)
        goto fail;
    i = am2z__obj_find(AM2Z__OBJ(v), k, klen);
    v = am2z__own(v, i == AM2Z__NPOS, i == AM2Z__NPOS ? klen + 1 : 0);
    if (!v) goto fail;
    o = AM2Z__OBJ(v);
    if (i != AM2Z__NPOS) {
        am2z_value_release(am2z__mems(o)[i].val);
        am2z__mems(o)[i].val = x;
        am2z__raise_depth(v, x);
        return v;
    }
    n = am2z__obj_add(o, k, klen, x);
    if (!n) goto fail;
    return &n->h;
fail:
    am2z_value_release(v);
    am2z_value_release(x);
    return NULL;
}

/* The checks set_key and remove_key start with; 1 when the edit may go ahead, else
   object and x are released and the reason recorded. */
static int am2z__key_edit_ok(const char *op, am2z_value *object, const char *key, size_t key_len,
                             am2z_value *x, int need_x) {
    const char *missing = !object ? "container" : "value";
    const char *found = am2z__a_type(object);
    int type_ok = am2z__type(object) == AM2Z_TYPE_OBJECT;
    if (object && key && (x || !need_x) && type_ok) return 1;
    am2z_value_release(object);
    am2z_value_release(x);
    if (!key) am2z__edit_fail(AM2Z_STATUS_INVALID_ARGUMENT, op, NULL, 0, "no key");
    else if (!object || (!x && need_x)) am2z__edit_null(op, key, key_len, missing);
    else am2z__edit_fail(AM2Z_STATUS_INVALID_ARGUMENT, op, key, key_len, "the value is %s", found);
    return 0;
}

AM2Z_API am2z_value *am2z_value_set_key(am2z_value *object, const char *key, size_t key_len, am2z_value *x) {
    if (key && key_len == AM2Z_NTS) key_len = strlen(key);
    if (!am2z__key_edit_ok("set_key", object, key, key_len, x, 1)) return NULL;
    if (am2z__depth(x) + 1 > AM2Z_VALUE_MAX_DEPTH) {
        am2z_value_release(object);
        am2z_value_release(x);
        return am2z__edit_fail(AM2Z_STATUS_LIMIT, "set_key", key, key_len, "depth limit %d exceeded",
                               AM2Z_VALUE_MAX_DEPTH);
    }
    object = am2z__obj_set(object, key, key_len, x);
    return object ? object : am2z__edit_fail(AM2Z_STATUS_NO_MEMORY, "set_key", key, key_len, "out of memory");
}

AM2Z_API am2z_value *am2z_value_remove_key(am2z_value *object, const char *key, size_t key_len) {
    size_t i;
    if (key && key_len == AM2Z_NTS) key_len = strlen(key);
    if (!am2z__key_edit_ok("remove_key", object, key, key_len, NULL, 0)) return NULL;
    i = am2z__obj_find(AM2Z__OBJ(object), key, key_len);
    if (i == AM2Z__NPOS) return object;
    object = am2z__own(object, 0, 0);
    if (!object) return am2z__edit_fail(AM2Z_STATUS_NO_MEMORY, "remove_key", key, key_len, "out of memory");
    am2z__obj_del(AM2Z__OBJ(object), i);
    return object;
}

AM2Z_API am2z_value *am2z_value_merge(am2z_value *into, const am2z_value *from) {
    const am2z__obj *f = AM2Z__OBJ(from);
    size_t i;
    if (!into) return am2z__edit_null("merge", NULL, 0, "container");
    if (am2z__type(into) != AM2Z_TYPE_OBJECT || (from && am2z__type(from) != AM2Z_TYPE_OBJECT)) {
        const char *bad = am2z__type(into) != AM2Z_TYPE_OBJECT ? am2z__a_type(into) : am2z__a_type(from);
        const char *side = am2z__type(into) != AM2Z_TYPE_OBJECT ? "target" : "source";
        am2z_value_release(into);
        return am2z__edit_fail(AM2Z_STATUS_INVALID_ARGUMENT, "merge", NULL, 0, "the %s is %s", side, bad);
    }
    if (!from || f->len == 0) return into;
    /* Held across the edit: from may be (inside) into, which may be edited in place
       and drop the member that from is. */
    am2z_value_retain(from);
    into = am2z__own(into, f->len, f->kused);
    for (i = 0; into && i < f->len; i++) {
        const am2z__member *m = am2z__mems(f) + i;
        into = am2z__obj_set(into, am2z__keys(f) + m->koff, m->klen, am2z_value_retain(m->val));
    }
    am2z_value_release((am2z_value *)(uintptr_t)from);
    return into ? into : am2z__edit_fail(AM2Z_STATUS_NO_MEMORY, "merge", NULL, 0, "out of memory");
}

/* ---- paths ---- */

typedef struct am2z__seg {
    const char *s;  /* raw text of the segment (may hold escapes) */
    size_t n;
    size_t index;   /* the number when is_index */
    char bracket;   /* written [n] */
    char is_index;  /* a canonical non-negative integer */
    char dash;      /* JSON Pointer "-": one past the end of an array */
    char esc;       /* the raw text holds escapes */
} am2z__seg;

typedef struct am2z__path {
    const char *start; /* the whole path, for failure details */
    const char *p;
    char pointer;   /* JSON Pointer syntax */
    char first;
} am2z__path;

static void am2z__path_init(am2z__path *it, const char *path) {
    it->start = it->p = path;
    it->pointer = path[0] == '/';
    it->first = 1;
}

static int am2z__parse_index(const char *s, size_t n, size_t *out) {
    size_t v = 0, i, d;
    if (n == 0 || (n > 1 && s[0] == '0')) return 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        d = (size_t)(s[i] - '0');
        if (v > (SIZE_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

/* Reads the next segment: 1 = *seg filled, 0 = end of path, -1 = malformed path. */
static int am2z__path_next(am2z__path *it, am2z__seg *seg) {
    const char *p = it->p, *q;
    memset(seg, 0, sizeof *seg);
    if (*p == 0) return 0;
    if (it->pointer) {
        if (*p != '/') return -1;
        seg->s = ++p;
        while (*p && *p != '/') {
            if (*p == '~') {
                if (p[1] != '0' && p[1] != '1') return -1;
                seg->esc = 1;
                p += 2;
            } else {
                p++;
            }
        }
        seg->n = (size_t)(p - seg->s);
        if (!seg->esc) {
            seg->is_index = (char)am2z__parse_index(seg->s, seg->n, &seg->index);
            seg->dash = seg->n == 1 && seg->s[0] == '-';
        }
    } else if (*p == '[') {
        for (q = p + 1; *q >= '0' && *q <= '9'; q++) {}
        if (*q != ']' || !am2z__parse_index(p + 1, (size_t)(q - p - 1), &seg->index)) return -1;
        seg->s = p + 1;
        seg->n = (size_t)(q - p - 1);
        seg->bracket = 1;
        seg->is_index = 1;
        p = q + 1;
    } else {
        if (!it->first) {
            if (*p != '.') return -1;
            p++;
        }
        seg->s = p;
        while (*p && *p != '.' && *p != '[') {
            if (*p == '\\') {
                if (!p[1]) return -1;
                seg->esc = 1;
                p += 2;
            } else {
                p++;
            }
        }
        seg->n = (size_t)(p - seg->s);
        if (seg->n == 0) return -1;
        if (!seg->esc) seg->is_index = (char)am2z__parse_index(seg->s, seg->n, &seg->index);
    }
    it->first = 0;
    it->p = p;
    return 1;
}

/* The key a segment names, unescaped into buf (or a heap block returned in *heap when
   it does not fit). NULL when out of memory. */
static const char *am2z__seg_key(const am2z__seg *seg, int pointer, char *buf, size_t bufsize,
                                 char **heap, size_t *klen) {
    char *d = buf;
    size_t i, n = 0;
    *heap = NULL;
    *klen = seg->n;
    if (!seg->esc) return seg->s;
    if (seg->n > bufsize) {
        d = *heap = (char *)am2z__malloc(seg->n);
        if (!d) return NULL;
    }
    for (i = 0; i < seg->n; i++) {
        char c = seg->s[i];
        if (pointer && c == '~') c = seg->s[++i] == '0' ? '~' : '/';
        else if (!pointer && c == '\\') c = seg->s[++i];
        d[n++] = c;
    }
    *klen = n;
    return d;
}

/* The length of path when it is one plain key ("n", "user_id": no '.', '[', '\\', not
   a pointer), which names an object's member as it is written; 0 otherwise. The
   accessors take it without the segment parser (most paths a processor uses). */
static size_t am2z__plain_key(const char *path) {
    const char *p = path;
    if (*p == '/') return 0;
    for (; *p; p++)
        if (*p == '.' || *p == '[' || *p == '\\') return 0;
    return (size_t)(p - path);
}

/* Walks path: 1 = found (*out borrowed), 0 = absent, -1 = malformed path. */
static int am2z__lookup(const am2z_value *v, const char *path, const am2z_value **out) {
    am2z__path it;
    am2z__seg seg;
    int r;
    char buf[64], *heap;
    const char *k;
    size_t klen, i;
    *out = NULL;
    if (!v || !path) return 0;
    if (am2z__type(v) == AM2Z_TYPE_OBJECT && (klen = am2z__plain_key(path)) != 0) {
        i = am2z__obj_find(AM2Z__OBJ(v), path, klen);
        if (i == AM2Z__NPOS) return 0;
        *out = am2z__mems(AM2Z__OBJ(v))[i].val;
        return 1;
    }
    am2z__path_init(&it, path);
    while ((r = am2z__path_next(&it, &seg)) > 0) {
        switch (am2z__type(v)) {
        case AM2Z_TYPE_ARRAY:
            if (!seg.is_index || seg.index >= AM2Z__ARR(v)->len) v = NULL;
            else v = am2z__items(AM2Z__ARR(v))[seg.index];
            break;
        case AM2Z_TYPE_OBJECT:
            if (seg.bracket) {
                v = NULL;
                break;
            }
            k = am2z__seg_key(&seg, it.pointer, buf, sizeof buf, &heap, &klen);
            if (!k) return 0;
            i = am2z__obj_find(AM2Z__OBJ(v), k, klen);
            am2z__free(heap);
            v = i == AM2Z__NPOS ? NULL : am2z__mems(AM2Z__OBJ(v))[i].val;
            break;
        default:
            v = NULL;
        }
        if (!v) {
            /* Keep reading so that a malformed tail is reported as such. */
            while ((r = am2z__path_next(&it, &seg)) > 0) {}
            return r < 0 ? -1 : 0;
        }
    }
    if (r < 0) return -1;
    *out = v;
    return 1;
}

AM2Z_API const am2z_value *am2z_value_get(const am2z_value *v, const char *path) {
    const am2z_value *out;
    am2z__lookup(v, path, &out);
    return out;
}

AM2Z_API int64_t am2z_value_get_int(const am2z_value *v, const char *path, int64_t def) {
    return am2z_value_as_int(am2z_value_get(v, path), def);
}
AM2Z_API double am2z_value_get_double(const am2z_value *v, const char *path, double def) {
    return am2z_value_as_double(am2z_value_get(v, path), def);
}
AM2Z_API int am2z_value_get_bool(const am2z_value *v, const char *path, int def) {
    return am2z_value_as_bool(am2z_value_get(v, path), def);
}
AM2Z_API const char *am2z_value_get_string(const am2z_value *v, const char *path, const char *def) {
    const char *s = am2z_value_as_string(am2z_value_get(v, path), NULL);
    return s ? s : def;
}

enum { AM2Z__EDIT_SET, AM2Z__EDIT_APPEND, AM2Z__EDIT_REMOVE };
static const char *const am2z__edit_names[] = {"set", "append", "remove"};

/* Fails the edit in progress: records the detail, then releases and returns NULL. */
#define AM2Z__EDIT_FAIL(st, ...) do { \
    am2z__edit_fail((st), am2z__edit_names[op], it->start, AM2Z_NTS, __VA_ARGS__); goto fail; } while (0)

/* The copy-on-write editor. node (NULL = missing) and x are consumed; returns the new
   node or NULL with everything released and the reason recorded by the level that
   failed. Each level takes its child out of the (owned) container, edits it, and puts
   the result back, so only the path's spine is copied and only where it was shared.
   Recursion is bounded by `budget`. */
static am2z_value *am2z__edit(am2z_value *node, am2z__path *it, int op, am2z_value *x, unsigned budget) {
    am2z__seg seg, next;
    am2z__path ahead;
    int r, last;
    char buf[64], *heap = NULL;
    const char *key, *at = it->p;
    /* The path up to this segment names node in failure details. */
    int plen = (int)(at - it->start);
    const char *pfx = plen ? "'" : "the value", *sfx = plen ? "'" : "";
    size_t klen, i, len;
    am2z_value *child = NULL, *nc;

    r = am2z__path_next(it, &seg);
    if (r < 0) AM2Z__EDIT_FAIL(AM2Z_STATUS_INVALID_ARGUMENT, "malformed path");
    if (r == 0) {
        if (op == AM2Z__EDIT_SET) {
            am2z_value_release(node);
            return x;
        }
        if (op == AM2Z__EDIT_REMOVE)
            AM2Z__EDIT_FAIL(AM2Z_STATUS_INVALID_ARGUMENT, "the value itself cannot be removed");
        if (!node) node = am2z_value_array();
        if (am2z__type(node) != AM2Z_TYPE_ARRAY)
            AM2Z__EDIT_FAIL(AM2Z_STATUS_INVALID_ARGUMENT, "%s%.*s%s is %s", pfx, plen, it->start, sfx,
                            am2z__a_type(node));
        goto push;
    }
    if (budget == 0) AM2Z__EDIT_FAIL(AM2Z_STATUS_LIMIT, "depth limit %d exceeded", AM2Z_VALUE_MAX_DEPTH);
    ahead = *it;
    last = am2z__path_next(&ahead, &next) == 0;
    if (!node) node = (seg.bracket || seg.dash) ? am2z_value_array() : am2z_value_object();

    if (am2z__type(node) == AM2Z_TYPE_ARRAY && (seg.dash || seg.is_index)) {
        len = AM2Z__ARR(node)->len;
        i = seg.dash ? len : seg.index;
        if (i > len || (i == len && op == AM2Z__EDIT_REMOVE))
            AM2Z__EDIT_FAIL(AM2Z_STATUS_INVALID_ARGUMENT, "index %lu out of range (length %lu)",
                            (unsigned long)i, (unsigned long)len);
        node = am2z__own(node, i == len, 0);
        if (!node) AM2Z__EDIT_FAIL(AM2Z_STATUS_NO_MEMORY, "out of memory");
        if (last && op == AM2Z__EDIT_REMOVE) {
            am2z__arr *a = AM2Z__ARR(node);
            am2z_value_release(am2z__items(a)[i]);
            memmove(am2z__items(a) + i, am2z__items(a) + i + 1, (a->len - i - 1) * sizeof(am2z_value *));
            a->len--;
            return node;
        }
        if (i < len) {
            child = am2z__items(AM2Z__ARR(node))[i];
            am2z__items(AM2Z__ARR(node))[i] = NULL;
        }
        nc = am2z__edit(child, it, op, x, budget - 1);
        x = NULL;
        if (!nc) goto fail;
        if (i == len) {
            x = nc;
            goto push;
        }
        am2z__items(AM2Z__ARR(node))[i] = nc;
        if (am2z__depth(nc) + 1 > AM2Z_VALUE_MAX_DEPTH)
            AM2Z__EDIT_FAIL(AM2Z_STATUS_LIMIT, "depth limit %d exceeded", AM2Z_VALUE_MAX_DEPTH);
        am2z__raise_depth(node, nc);
        return node;
    }
    if (am2z__type(node) == AM2Z_TYPE_OBJECT && !seg.bracket) {
        am2z__obj *n;
        key = am2z__seg_key(&seg, it->pointer, buf, sizeof buf, &heap, &klen);
        if (!key) AM2Z__EDIT_FAIL(AM2Z_STATUS_NO_MEMORY, "out of memory");
        i = am2z__obj_find(AM2Z__OBJ(node), key, klen);
        if (i == AM2Z__NPOS && op == AM2Z__EDIT_REMOVE)
            AM2Z__EDIT_FAIL(AM2Z_STATUS_INVALID_ARGUMENT, "no such member");
        node = am2z__own(node, i == AM2Z__NPOS, i == AM2Z__NPOS ? klen + 1 : 0);
        if (!node) AM2Z__EDIT_FAIL(AM2Z_STATUS_NO_MEMORY, "out of memory");
        if (last && op == AM2Z__EDIT_REMOVE) {
            am2z__obj_del(AM2Z__OBJ(node), i);
            am2z__free(heap);
            return node;
        }
        if (i != AM2Z__NPOS) {
            child = am2z__mems(AM2Z__OBJ(node))[i].val;
            am2z__mems(AM2Z__OBJ(node))[i].val = NULL;
        }
        nc = am2z__edit(child, it, op, x, budget - 1);
        x = NULL;
        if (!nc) goto fail;
        if (am2z__depth(nc) + 1 > AM2Z_VALUE_MAX_DEPTH) {
            if (i == AM2Z__NPOS) am2z_value_release(nc);
            else am2z__mems(AM2Z__OBJ(node))[i].val = nc;
            AM2Z__EDIT_FAIL(AM2Z_STATUS_LIMIT, "depth limit %d exceeded", AM2Z_VALUE_MAX_DEPTH);
        }
        if (i != AM2Z__NPOS) {
            am2z__mems(AM2Z__OBJ(node))[i].val = nc;
            am2z__raise_depth(node, nc);
        } else {
            if (!(n = am2z__obj_add(AM2Z__OBJ(node), key, klen, nc))) {
                am2z_value_release(nc);
                AM2Z__EDIT_FAIL(AM2Z_STATUS_NO_MEMORY, "out of memory");
            }
            node = &n->h;
        }
        am2z__free(heap);
        return node;
    }
    AM2Z__EDIT_FAIL(AM2Z_STATUS_INVALID_ARGUMENT, "%s%.*s%s is %s", pfx, plen, it->start, sfx, am2z__a_type(node));
push:
    if (am2z__depth(x) + 1 > AM2Z_VALUE_MAX_DEPTH)
        AM2Z__EDIT_FAIL(AM2Z_STATUS_LIMIT, "depth limit %d exceeded", AM2Z_VALUE_MAX_DEPTH);
    node = am2z__arr_push(node, x); /* consumes both */
    if (!node) {
        x = NULL;
        AM2Z__EDIT_FAIL(AM2Z_STATUS_NO_MEMORY, "out of memory");
    }
    return node;
fail:
    am2z__free(heap);
    am2z_value_release(node);
    am2z_value_release(x);
    return NULL;
}
#undef AM2Z__EDIT_FAIL

/* The checks every path edit starts with: v (and x for set and append) consumed. */
static am2z_value *am2z__edit_path(am2z_value *v, const char *path, int op, am2z_value *x) {
    am2z__path it;
    const char *name = am2z__edit_names[op], *missing = !v ? "container" : "value";
    if (!v || !path || (op != AM2Z__EDIT_REMOVE && !x)) {
        am2z_value_release(v);
        am2z_value_release(x);
        if (!path) return am2z__edit_fail(AM2Z_STATUS_INVALID_ARGUMENT, name, NULL, 0, "no path");
        return am2z__edit_null(name, path, AM2Z_NTS, missing);
    }
    if (op == AM2Z__EDIT_SET && am2z__type(v) == AM2Z_TYPE_OBJECT && am2z__depth(x) < AM2Z_VALUE_MAX_DEPTH) {
        /* replacing a member named by a plain key: what am2z__edit does, unparsed */
        size_t klen = am2z__plain_key(path), i = klen ? am2z__obj_find(AM2Z__OBJ(v), path, klen) : AM2Z__NPOS;
        if (i != AM2Z__NPOS) {
            am2z_value *old;
            v = am2z__own(v, 0, 0);
            if (!v) {
                am2z_value_release(x);
                return am2z__edit_fail(AM2Z_STATUS_NO_MEMORY, name, path, AM2Z_NTS, "out of memory");
            }
            old = am2z__mems(AM2Z__OBJ(v))[i].val;
            am2z__mems(AM2Z__OBJ(v))[i].val = x;
            am2z_value_release(old);
            am2z__raise_depth(v, x);
            return v;
        }
    }
    am2z__path_init(&it, path);
    return am2z__edit(v, &it, op, x, AM2Z_VALUE_MAX_DEPTH);
}

AM2Z_API am2z_value *am2z_value_set(am2z_value *v, const char *path, am2z_value *x) {
    return am2z__edit_path(v, path, AM2Z__EDIT_SET, x);
}

AM2Z_API am2z_value *am2z_value_append(am2z_value *v, const char *path, am2z_value *x) {
    return am2z__edit_path(v, path, AM2Z__EDIT_APPEND, x);
}

AM2Z_API am2z_value *am2z_value_remove(am2z_value *v, const char *path) {
    const am2z_value *found;
    int r;
    if (v && path) {
        r = am2z__lookup(v, path, &found);
        if (r == 0) return v; /* nothing to remove */
        if (!*path || r < 0) {
            am2z_value_release(v);
            return am2z__edit_fail(AM2Z_STATUS_INVALID_ARGUMENT, "remove", path, AM2Z_NTS,
                                   *path ? "malformed path" : "the value itself cannot be removed");
        }
    }
    return am2z__edit_path(v, path, AM2Z__EDIT_REMOVE, NULL);
}

/* ---- equality and hashing ---- */

AM2Z_API int am2z_value_equal(const am2z_value *a, const am2z_value *b) {
    am2z_type t = am2z__type(a);
    size_t i, j;
    if (a == b) return 1;
    if (t != am2z__type(b) || !a) return 0;
    switch (t) {
    case AM2Z_TYPE_NULL: return 1;
    case AM2Z_TYPE_BOOL: return AM2Z__NUM(a)->u.i == AM2Z__NUM(b)->u.i;
    case AM2Z_TYPE_INT: return am2z__int(a) == am2z__int(b);
    case AM2Z_TYPE_DOUBLE: return AM2Z__NUM(a)->u.d == AM2Z__NUM(b)->u.d;
    case AM2Z_TYPE_STRING:
        return AM2Z__STR(a)->len == AM2Z__STR(b)->len &&
               memcmp(am2z__bytes(AM2Z__STR(a)), am2z__bytes(AM2Z__STR(b)), AM2Z__STR(a)->len) == 0;
    case AM2Z_TYPE_ARRAY:
        if (AM2Z__ARR(a)->len != AM2Z__ARR(b)->len) return 0;
        for (i = 0; i < AM2Z__ARR(a)->len; i++)
            if (!am2z_value_equal(am2z__items(AM2Z__ARR(a))[i], am2z__items(AM2Z__ARR(b))[i])) return 0;
        return 1;
    case AM2Z_TYPE_OBJECT: {
        const am2z__obj *x = AM2Z__OBJ(a), *y = AM2Z__OBJ(b);
        if (x->len != y->len) return 0;
        for (i = 0; i < x->len; i++) {
            const am2z__member *m = am2z__mems(x) + i;
            /* Same key order is the common case: try the same position first. */
            if (i < y->len && am2z__mems(y)[i].klen == m->klen &&
                memcmp(am2z__keys(y) + am2z__mems(y)[i].koff, am2z__keys(x) + m->koff, m->klen) == 0)
                j = i;
            else
                j = am2z__obj_find(y, am2z__keys(x) + m->koff, m->klen);
            if (j == AM2Z__NPOS || !am2z_value_equal(m->val, am2z__mems(y)[j].val)) return 0;
        }
        return 1;
    }
    default: return 0;
    }
}

AM2Z_API uint64_t am2z_value_hash(const am2z_value *v) {
    size_t i;
    uint64_t h, bits;
    double d;
    switch (am2z__type(v)) {
    case AM2Z_TYPE_NONE: return am2z__mix64(0x6e6f6e65ULL);
    case AM2Z_TYPE_NULL: return am2z__mix64(0x6e756c6cULL);
    case AM2Z_TYPE_BOOL: return am2z__mix64(0x626f6f6cULL + (uint64_t)AM2Z__NUM(v)->u.i);
    case AM2Z_TYPE_INT: return am2z__mix64((uint64_t)am2z__int(v) ^ 0x696e7420ULL);
    case AM2Z_TYPE_DOUBLE:
        d = AM2Z__NUM(v)->u.d;
        if (d == 0.0) d = 0.0; /* -0.0 equals 0.0, so it hashes the same */
        memcpy(&bits, &d, sizeof bits);
        return am2z__mix64(bits ^ 0x646f75626c65ULL) + 1;
    case AM2Z_TYPE_STRING:
        return am2z__hash_bytes(am2z__bytes(AM2Z__STR(v)), AM2Z__STR(v)->len, 0x737472ULL);
    case AM2Z_TYPE_ARRAY:
        h = 0x617272ULL ^ AM2Z__ARR(v)->len;
        for (i = 0; i < AM2Z__ARR(v)->len; i++)
            h = am2z__mix64(h * 31 + am2z_value_hash(am2z__items(AM2Z__ARR(v))[i]));
        return h;
    case AM2Z_TYPE_OBJECT:
        /* A sum of per-member hashes does not depend on the key order. */
        h = 0;
        for (i = 0; i < AM2Z__OBJ(v)->len; i++) {
            const am2z__member *m = am2z__mems(AM2Z__OBJ(v)) + i;
            uint64_t kh = am2z__hash_bytes(am2z__keys(AM2Z__OBJ(v)) + m->koff, m->klen, 0x6b6579ULL);
            h += am2z__mix64(kh ^ (am2z_value_hash(m->val) * 0x9e3779b97f4a7c15ULL));
        }
        return am2z__mix64(h ^ 0x6f626aULL ^ ((uint64_t)AM2Z__OBJ(v)->len << 32));
    }
    return 0;
}

/* ---- numbers ---- */

/* strtod on the n bytes at s (a JSON number): correct rounding comes from the C
   library; the text always uses '.', so a locale with another decimal point is
   handled by retrying with the locale's. */
static double am2z__strtod(const char *s, size_t n, int *ok) {
    char small[64], *buf = small, *end, *dot;
    double d;
    *ok = 0;
    if (n >= sizeof small) {
        buf = (char *)am2z__malloc(n + 8);
        if (!buf) return 0;
    }
    memcpy(buf, s, n);
    buf[n] = 0;
    d = strtod(buf, &end);
    if (end != buf + n && (dot = strchr(buf, '.')) != NULL) {
        const char *dp = localeconv()->decimal_point;
        size_t dl = dp ? strlen(dp) : 0;
        if (dl >= 1 && dl <= 4 && !(dl == 1 && dp[0] == '.')) {
            char *b2 = buf == small && n + dl < sizeof small ? small : (char *)am2z__malloc(n + dl + 1);
            if (b2) {
                size_t pre = (size_t)(dot - buf);
                memmove(b2 + pre + dl, buf + pre + 1, n - pre); /* includes the NUL */
                if (b2 != buf) memcpy(b2, buf, pre);
                memcpy(b2 + pre, dp, dl);
                if (buf != small) am2z__free(buf);
                buf = b2;
                n = n - 1 + dl;
                d = strtod(buf, &end);
            }
        }
    }
    *ok = end == buf + n;
    if (buf != small) am2z__free(buf);
    return d;
}

/* When doubles are evaluated in double precision, one IEEE multiply or divide of two
   exact operands rounds correctly; the exact fast paths of reading and writing numbers
   rely on that (x87 extended precision would round twice). */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define AM2Z__EXACT_DOUBLES 1
static const double am2z__p10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                   1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
#else
#define AM2Z__EXACT_DOUBLES 0
#endif

/* Exact fast path (Clinger): up to 15 significant digits times a power of ten up to
   1e22 are both exact doubles, so one multiply or divide gives the correctly rounded
   value. Returns 0 when the text needs strtod. */
static int am2z__fast_double(const char *s, size_t n, double *out) {
#if AM2Z__EXACT_DOUBLES
    const double *p10 = am2z__p10;
    uint64_t m = 0;
    int nd = 0, neg = 0, frac = 0, eneg = 0;
    long e10 = 0, ex = 0;
    size_t i = 0;
    double d;
    if (i < n && s[i] == '-') neg = 1, i++;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            frac = 1;
            continue;
        }
        if (c < '0' || c > '9') break;
        if (nd == 0 && c == '0') {
            if (frac) e10--;
            continue;
        }
        if (nd == 15) return 0;
        m = m * 10 + (uint64_t)(c - '0');
        nd++;
        if (frac) e10--;
    }
    if (i < n) { /* exponent */
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) eneg = s[i++] == '-';
        for (; i < n; i++) {
            if (ex > 100000) return 0;
            ex = ex * 10 + (s[i] - '0');
        }
        e10 += eneg ? -ex : ex;
    }
    if (m == 0) d = 0.0;
    else if (e10 >= 0 && e10 <= 22) d = (double)m * p10[e10];
    else if (e10 < 0 && e10 >= -22) d = (double)m / p10[-e10];
    else return 0;
    *out = neg ? -d : d;
    return 1;
#else
    (void)s;
    (void)n;
    (void)out;
    return 0;
#endif
}

/* Writes the decimal digits of v ending just before end; returns where they start. */
static char *am2z__utoa(uint64_t v, char *end) {
    do {
        *--end = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    return end;
}

static size_t am2z__fmt_int(int64_t i, char *out /* >= 21 bytes */) {
    char tmp[24], *p = am2z__utoa(i < 0 ? 0 - (uint64_t)i : (uint64_t)i, tmp + sizeof tmp);
    size_t n = (size_t)(tmp + sizeof tmp - p), neg = i < 0;
    out[0] = '-';
    memcpy(out + neg, p, n);
    out[n + neg] = 0;
    return n + neg;
}

#if AM2Z__EXACT_DOUBLES
/* m / 10^k in fixed-point notation ("0.0025", "12.5"). */
static size_t am2z__fmt_fixed(int neg, uint64_t m, size_t k, char *out) {
    char tmp[24], *p = am2z__utoa(m, tmp + sizeof tmp);
    size_t nd = (size_t)(tmp + sizeof tmp - p), n = 0;
    if (neg) out[n++] = '-';
    if (nd <= k) {
        out[n++] = '0';
        out[n++] = '.';
        memset(out + n, '0', k - nd);
        n += k - nd;
        memcpy(out + n, p, nd);
        n += nd;
    } else {
        memcpy(out + n, p, nd - k);
        n += nd - k;
        out[n++] = '.';
        memcpy(out + n, p + nd - k, k);
        n += k;
    }
    out[n] = 0;
    return n;
}
#endif

/* Formats a finite double as the shortest of %.15g/%.16g/%.17g that reads back to the
   same bits, with '.' whatever the locale, and always looking like a double ("1.0"). */
static size_t am2z__fmt_double(double d, char *out /* >= 40 bytes */) {
    char tmp[64];
    int prec, ok;
    size_t n = 0, i;
    if (d == 0.0) {
        unsigned char b[sizeof d];
        memcpy(b, &d, sizeof d);
        /* -0.0 has only its sign bit set, in the byte at one end or the other. */
        n = (b[0] | b[sizeof d - 1]) ? 4 : 3;
        memcpy(out, n == 4 ? "-0.0" : "0.0", n + 1);
        return n;
    }
    if (d > -1e15 && d < 1e15 && (double)(int64_t)d == d) { /* as %.15g would, plus ".0" */
        n = am2z__fmt_int((int64_t)d, out);
        memcpy(out + n, ".0", 3);
        return n + 2;
    }
#if AM2Z__EXACT_DOUBLES
    {
        /* Short decimals (prices, ratios, measurements: the usual case) are found without
           printf: the first k for which an integer m near |d| * 10^k has m / 10^k == |d|
           (exact operands, so the division rounds correctly, as reading the text does)
           gives the shortest fixed-point text. With at most 15 significant digits only
           one candidate can read back to d (DBL_DIG), so it is the one %.15g prints;
           longer texts are left to printf, which picks the nearest. */
        double a = d < 0 ? -d : d, t;
        uint64_t m, c;
        size_t k, j;
        if (a >= 1e-4 && a < 1e15) {
            for (k = 1; k <= 19; k++) {
                t = a * am2z__p10[k];
                if (t >= 1e15) break;
                m = (uint64_t)(t + 0.5);
                for (j = 0; j < 3; j++) { /* t may be off by one unit: try the neighbours */
                    c = j == 0 ? m : j == 1 ? m + 1 : m - 1;
                    if ((double)c / am2z__p10[k] == a) return am2z__fmt_fixed(d < 0, c, k, out);
                }
            }
        }
    }
#endif
    for (prec = 15; prec <= 17; prec++) {
        int k = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (k <= 0 || (size_t)k >= sizeof tmp) k = 0;
        /* Any run of bytes that is not part of a number is the locale's decimal point. */
        for (i = 0, n = 0; i < (size_t)k; i++) {
            char c = tmp[i];
            if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e') out[n++] = c;
            else if (n == 0 || out[n - 1] != '.') out[n++] = '.';
        }
        out[n] = 0;
        if (prec == 17 || am2z__strtod(out, n, &ok) == d) break;
    }
    if (!strchr(out, '.') && !strchr(out, 'e')) {
        memcpy(out + n, ".0", 3);
        n += 2;
    }
    return n;
}

/* ---- JSON writing ---- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one: overlong
   forms, UTF-16 surrogates and code points above U+10FFFF are invalid. */
static size_t am2z__utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return n >= 3 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return n >= 4 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* Writes a quoted JSON string; bytes that are not valid UTF-8 become U+FFFD so the
   output is always valid JSON. */
static void am2z__write_str(am2z__vec *b, const char *str, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, j, k;
    am2z__vec_putc(b, '"');
    while (i < n) {
        for (j = i; j < n && s[j] >= 0x20 && s[j] < 0x80 && s[j] != '"' && s[j] != '\\'; j++) {}
        am2z__vec_put(b, s + i, j - i);
        if (j == n) break;
        i = j;
        if (s[i] >= 0x80) {
            k = am2z__utf8_len(s + i, n - i);
            am2z__vec_put(b, k ? (const char *)s + i : "\xef\xbf\xbd", k ? k : 3);
            i += k ? k : 1;
            continue;
        }
        switch (s[i]) {
        case '"': am2z__vec_put(b, "\\\"", 2); break;
        case '\\': am2z__vec_put(b, "\\\\", 2); break;
        case '\n': am2z__vec_put(b, "\\n", 2); break;
        case '\r': am2z__vec_put(b, "\\r", 2); break;
        case '\t': am2z__vec_put(b, "\\t", 2); break;
        case '\b': am2z__vec_put(b, "\\b", 2); break;
        case '\f': am2z__vec_put(b, "\\f", 2); break;
        default: {
            char e[6] = {'\\', 'u', '0', '0', 0, 0};
            e[4] = hex[s[i] >> 4];
            e[5] = hex[s[i] & 15];
            am2z__vec_put(b, e, 6);
        }
        }
        i++;
    }
    am2z__vec_putc(b, '"');
}

static int am2z__keycmp(const am2z__obj *o, size_t a, size_t b) {
    const am2z__member *m = am2z__mems(o);
    size_t la = m[a].klen, lb = m[b].klen;
    int c = memcmp(am2z__keys(o) + m[a].koff, am2z__keys(o) + m[b].koff, la < lb ? la : lb);
    return c ? c : (la < lb ? -1 : la > lb);
}

/* Sorts member numbers by key bytes: insertion sort on runs of 16, then merging
   through tmp (n log n for objects with thousands of keys). */
static void am2z__sort_keys(const am2z__obj *o, size_t *idx, size_t *tmp, size_t n) {
    size_t i, j, w, lo, mid, hi, a, b, k;
    for (lo = 0; lo < n; lo += 16) {
        hi = lo + 16 < n ? lo + 16 : n;
        for (i = lo + 1; i < hi; i++) {
            size_t x = idx[i];
            for (j = i; j > lo && am2z__keycmp(o, idx[j - 1], x) > 0; j--) idx[j] = idx[j - 1];
            idx[j] = x;
        }
    }
    for (w = 16; w < n; w *= 2) {
        for (lo = 0; lo < n; lo += 2 * w) {
            mid = lo + w < n ? lo + w : n;
            hi = lo + 2 * w < n ? lo + 2 * w : n;
            for (a = lo, b = mid, k = lo; k < hi; k++)
                tmp[k] = (a < mid && (b >= hi || am2z__keycmp(o, idx[a], idx[b]) <= 0)) ? idx[a++] : idx[b++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
}

static void am2z__indent(am2z__vec *b, int flags, int level) {
    size_t n = (size_t)level * 2;
    if (!(flags & AM2Z_JSON_PRETTY)) return;
    am2z__vec_putc(b, '\n');
    if (n && am2z__vec_reserve(b, n, 1)) {
        memset((char *)b->p + b->n, ' ', n);
        b->n += n;
    }
}

static void am2z__write(am2z__vec *b, const am2z_value *v, int flags, int level) {
    char num[48];
    size_t i, n;
    switch (am2z__type(v)) {
    case AM2Z_TYPE_NONE:
    case AM2Z_TYPE_NULL: am2z__vec_put(b, "null", 4); return;
    case AM2Z_TYPE_BOOL:
        if (AM2Z__NUM(v)->u.i) am2z__vec_put(b, "true", 4);
        else am2z__vec_put(b, "false", 5);
        return;
    case AM2Z_TYPE_INT:
        n = am2z__fmt_int(am2z__int(v), num);
        am2z__vec_put(b, num, n);
        return;
    case AM2Z_TYPE_DOUBLE:
        n = am2z__fmt_double(AM2Z__NUM(v)->u.d, num);
        am2z__vec_put(b, num, n);
        return;
    case AM2Z_TYPE_STRING:
        am2z__write_str(b, am2z__bytes(AM2Z__STR(v)), AM2Z__STR(v)->len);
        return;
    case AM2Z_TYPE_ARRAY: {
        const am2z__arr *a = AM2Z__ARR(v);
        am2z__vec_putc(b, '[');
        for (i = 0; i < a->len; i++) {
            if (i) am2z__vec_putc(b, ',');
            am2z__indent(b, flags, level + 1);
            am2z__write(b, am2z__items(a)[i], flags, level + 1);
        }
        if (a->len) am2z__indent(b, flags, level);
        am2z__vec_putc(b, ']');
        return;
    }
    case AM2Z_TYPE_OBJECT: {
        const am2z__obj *o = AM2Z__OBJ(v);
        size_t small[32], *idx = NULL;
        if ((flags & AM2Z_JSON_SORTED) && o->len > 1) {
            idx = o->len <= 16 ? small
                               : (o->len > SIZE_MAX / (2 * sizeof(size_t)) ? NULL
                                  : (size_t *)am2z__malloc(2 * o->len * sizeof(size_t)));
            if (!idx) {
                b->failed = 1;
                return;
            }
            for (i = 0; i < o->len; i++) idx[i] = i;
            am2z__sort_keys(o, idx, idx + o->len, o->len);
        }
        am2z__vec_putc(b, '{');
        for (i = 0; i < o->len; i++) {
            const am2z__member *m = am2z__mems(o) + (idx ? idx[i] : i);
            if (i) am2z__vec_putc(b, ',');
            am2z__indent(b, flags, level + 1);
            am2z__write_str(b, am2z__keys(o) + m->koff, m->klen);
            am2z__vec_putc(b, ':');
            if (flags & AM2Z_JSON_PRETTY) am2z__vec_putc(b, ' ');
            am2z__write(b, m->val, flags, level + 1);
        }
        if (o->len) am2z__indent(b, flags, level);
        am2z__vec_putc(b, '}');
        if (idx != small) am2z__free(idx);
        return;
    }
    }
}

AM2Z_API char *am2z_json_write(const am2z_value *v, int flags, size_t *len) {
    am2z__vec b;
    if (len) *len = 0;
    if (!v) return NULL;
    am2z__vec_init(&b, NULL, 0);
    am2z__write(&b, v, flags, 0);
    am2z__vec_putc(&b, 0);
    if (b.failed) {
        am2z__vec_free(&b);
        am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "json_write: out of memory");
        return NULL;
    }
    if (len) *len = b.n - 1;
    return (char *)b.p;
}

/* ---- JSON parsing ---- */

typedef struct am2z__kref { size_t off, len; } am2z__kref;  /* a key in the key bytes */
typedef struct am2z__frame {
    size_t vbase, kbase, kbytes;  /* where its values, keys and key bytes start */
    int obj;
} am2z__frame;

typedef struct am2z__parser {
    const unsigned char *s;
    size_t n, pos;
    am2z_json_limits lim;
    am2z_status status; /* of the failure that perr recorded */
    am2z__vec vals;   /* am2z_value *: finished elements of open containers */
    am2z__vec krefs;  /* am2z__kref: keys of open objects' members */
    am2z__vec kbytes; /* char: key bytes */
    am2z__vec frames; /* am2z__frame: open containers */
    am2z__vec sbuf;   /* char: a string being decoded */
} am2z__parser;

/* Records a parse failure as the thread's detail "json: <message>" at byte offset off:
   malformed text is INVALID_ARGUMENT; am2z__plimit and am2z__poom record the others. */
static void am2z__pfail(am2z__parser *P, am2z_status st, size_t off, const char *fmt, va_list ap) {
    char msg[128];
    vsnprintf(msg, sizeof msg, fmt, ap);
    P->status = am2z__fail(st, off, "json: %s", msg);
}
static void am2z__perr(am2z__parser *P, size_t off, const char *fmt, ...) AM2Z_PRINTF(3, 4);
static void am2z__perr(am2z__parser *P, size_t off, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    am2z__pfail(P, AM2Z_STATUS_INVALID_ARGUMENT, off, fmt, ap);
    va_end(ap);
}
static void am2z__plimit(am2z__parser *P, size_t off, const char *fmt, ...) AM2Z_PRINTF(3, 4);
static void am2z__plimit(am2z__parser *P, size_t off, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    am2z__pfail(P, AM2Z_STATUS_LIMIT, off, fmt, ap);
    va_end(ap);
}
static void am2z__poom(am2z__parser *P, size_t off) {
    P->status = am2z__fail(AM2Z_STATUS_NO_MEMORY, off, "json: out of memory");
}

static void am2z__skip_ws(am2z__parser *P) {
    while (P->pos < P->n) {
        unsigned char c = P->s[P->pos];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') return;
        P->pos++;
    }
}

static int am2z__hex4(const unsigned char *s, unsigned *out) {
    unsigned v = 0, i, d;
    for (i = 0; i < 4; i++) {
        unsigned char c = s[i];
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

/* Decodes the string whose '"' is at P->pos. An ASCII string without escapes is
   returned in place (*raw); otherwise the decoded bytes are appended to dst. The
   length limit is checked before any byte is stored. */
static int am2z__pstring(am2z__parser *P, am2z__vec *dst, size_t limit, const char **raw, size_t *rawlen) {
    const unsigned char *s = P->s;
    size_t n = P->n, start = P->pos, i = start + 1, j, base = dst->n, k;
    unsigned char enc[4];
    unsigned cp, lo;
    while (i < n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\') i++;
    if (i - start - 1 > limit) goto too_long;
    if (i < n && s[i] == '"') {
        *raw = (const char *)s + start + 1;
        *rawlen = i - start - 1;
        P->pos = i + 1;
        return 1;
    }
    *raw = NULL;
    j = start + 1;
    for (;;) {
        /* copy the plain run [j, i) */
        if (i > j) {
            if (i - j > limit - (dst->n - base)) goto too_long;
            if (!am2z__vec_reserve(dst, i - j, 1)) goto oom;
            memcpy((char *)dst->p + dst->n, s + j, i - j);
            dst->n += i - j;
        }
        if (i >= n) {
            am2z__perr(P, n, "unterminated string");
            return 0;
        }
        if (s[i] == '"') break;
        if (s[i] < 0x20) {
            am2z__perr(P, i, "control character in string");
            return 0;
        }
        if (s[i] == '\\') {
            if (i + 1 >= n) {
                am2z__perr(P, n, "unterminated string");
                return 0;
            }
            k = 1;
            switch (s[i + 1]) {
            case '"': enc[0] = '"'; break;
            case '\\': enc[0] = '\\'; break;
            case '/': enc[0] = '/'; break;
            case 'b': enc[0] = '\b'; break;
            case 'f': enc[0] = '\f'; break;
            case 'n': enc[0] = '\n'; break;
            case 'r': enc[0] = '\r'; break;
            case 't': enc[0] = '\t'; break;
            case 'u':
                if (n - i < 6 || !am2z__hex4(s + i + 2, &cp)) {
                    am2z__perr(P, i, "invalid \\u escape");
                    return 0;
                }
                if (cp >= 0xdc00 && cp <= 0xdfff) {
                    am2z__perr(P, i, "lone low surrogate");
                    return 0;
                }
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    if (n - i < 12 || s[i + 6] != '\\' || s[i + 7] != 'u' || !am2z__hex4(s + i + 8, &lo) ||
                        lo < 0xdc00 || lo > 0xdfff) {
                        am2z__perr(P, i, "lone high surrogate");
                        return 0;
                    }
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    i += 6;
                }
                if (cp < 0x80) {
                    enc[0] = (unsigned char)cp;
                } else if (cp < 0x800) {
                    enc[0] = (unsigned char)(0xc0 | cp >> 6);
                    enc[1] = (unsigned char)(0x80 | (cp & 0x3f));
                    k = 2;
                } else if (cp < 0x10000) {
                    enc[0] = (unsigned char)(0xe0 | cp >> 12);
                    enc[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                    enc[2] = (unsigned char)(0x80 | (cp & 0x3f));
                    k = 3;
                } else {
                    enc[0] = (unsigned char)(0xf0 | cp >> 18);
                    enc[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
                    enc[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
                    enc[3] = (unsigned char)(0x80 | (cp & 0x3f));
                    k = 4;
                }
                i += 4;
                break;
            default:
                am2z__perr(P, i, "invalid escape");
                return 0;
            }
            i += 2;
            if (k > limit - (dst->n - base)) goto too_long;
            if (!am2z__vec_reserve(dst, k, 1)) goto oom;
            memcpy((char *)dst->p + dst->n, enc, k);
            dst->n += k;
            j = i;
        } else if (s[i] >= 0x80) {
            k = am2z__utf8_len(s + i, n - i);
            if (!k) {
                am2z__perr(P, i, "invalid UTF-8");
                return 0;
            }
            j = i;
            i += k;
            continue;
        }
        j = i;
        while (i < n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\') i++;
    }
    P->pos = i + 1;
    return 1;
too_long:
    am2z__plimit(P, start, "string length limit %lu exceeded", (unsigned long)limit);
    return 0;
oom:
    am2z__poom(P, start);
    return 0;
}

static am2z_value *am2z__pnumber(am2z__parser *P) {
    const char *s = (const char *)P->s;
    size_t n = P->n, start = P->pos, i = start, dig;
    int neg = 0, isdbl = 0, fits = 0, ok = 1;
    uint64_t m = 0;
    double d;
    am2z_value *v = NULL;
    if (s[i] == '-') neg = 1, i++;
    dig = i;
    if (i < n && s[i] == '0') {
        i++;
    } else if (i < n && s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    } else {
        am2z__perr(P, start, "invalid number");
        return NULL;
    }
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || s[i] < '0' || s[i] > '9') {
            am2z__perr(P, start, "invalid number");
            return NULL;
        }
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        isdbl = 1;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || s[i] < '0' || s[i] > '9') {
            am2z__perr(P, start, "invalid number");
            return NULL;
        }
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        isdbl = 1;
    }
    P->pos = i;
    if (!isdbl) {
        for (; dig < i; dig++) {
            unsigned dd = (unsigned)(s[dig] - '0');
            if (m > (UINT64_MAX - dd) / 10) break;
            m = m * 10 + dd;
        }
        /* An integer that fits int64 stays exact; "-0" becomes a double so that its sign
           survives a round trip. */
        fits = dig == i && (neg ? m - 1 <= (uint64_t)INT64_MAX : m <= (uint64_t)INT64_MAX);
    }
    if (fits) {
        v = am2z_value_int(neg ? -(int64_t)(m - 1) - 1 : (int64_t)m);
    } else {
        if (!am2z__fast_double(s + start, i - start, &d)) d = am2z__strtod(s + start, i - start, &ok);
        if (ok && !(d - d == 0.0)) {
            am2z__perr(P, start, "number out of range");
            return NULL;
        }
        if (ok) v = am2z_value_double(d);
    }
    /* Only allocation fails here: boxed integers, doubles and strtod's long copies. */
    if (!v) am2z__poom(P, start);
    return v;
}

/* Builds the array or object of frame f (a new reference): its values move from the
   stack into it. NULL when out of memory, with the values left on the stack for
   am2z_json_parse to release. */
static am2z_value *am2z__pbuild(am2z__parser *P, const am2z__frame *f) {
    am2z_value **vals = (am2z_value **)P->vals.p + f->vbase;
    size_t count = P->vals.n - f->vbase, i, j;
    unsigned depth = 0;
    if (count == 0) return f->obj ? am2z_value_object() : am2z_value_array();
    for (i = 0; i < count; i++)
        if (am2z__depth(vals[i]) > depth) depth = am2z__depth(vals[i]);
    if (!f->obj) {
        am2z__arr *a = am2z__arr_alloc(count);
        if (!a) return NULL;
        memcpy(am2z__items(a), vals, count * sizeof *vals);
        a->len = count;
        a->h.depth = (uint16_t)(depth + 1);
        P->vals.n = f->vbase;
        return &a->h;
    } else {
        const am2z__kref *kr = (const am2z__kref *)P->krefs.p + f->kbase;
        const char *kb = (const char *)P->kbytes.p;
        am2z__obj *o = am2z__obj_alloc(count, P->kbytes.n - f->kbytes + count);
        if (!o) return NULL;
        /* Cannot fail from here: the block has room for every member. A repeated key
           keeps its first position and takes the last value, as JavaScript does. */
        for (i = 0; i < count; i++) {
            j = am2z__obj_find(o, kb + kr[i].off, kr[i].len);
            if (j != AM2Z__NPOS) {
                am2z_value_release(am2z__mems(o)[j].val);
                am2z__mems(o)[j].val = vals[i];
            } else {
                o = am2z__obj_add(o, kb + kr[i].off, kr[i].len, vals[i]);
            }
        }
        o->h.depth = (uint16_t)(depth + 1);
        P->vals.n = f->vbase;
        P->krefs.n = f->kbase;
        P->kbytes.n = f->kbytes;
        return &o->h;
    }
}

static am2z_value *am2z__parse(am2z__parser *P) {
    const unsigned char *s = P->s;
    am2z_value *v = NULL;
    am2z__frame *top;
    const char *raw;
    size_t start, rawlen;
    unsigned char c;

value:
    am2z__skip_ws(P);
    if (P->pos >= P->n) {
        am2z__perr(P, P->pos, P->pos ? "unexpected end of input" : "empty input");
        return NULL;
    }
    start = P->pos;
    c = s[start];
    if (P->frames.n) {
        top = (am2z__frame *)P->frames.p + P->frames.n - 1;
        if (!top->obj && P->vals.n - top->vbase == P->lim.max_elements) {
            am2z__plimit(P, start, "element limit %lu exceeded", (unsigned long)P->lim.max_elements);
            return NULL;
        }
    }
    switch (c) {
    case '[':
    case '{':
        if (P->frames.n >= (size_t)P->lim.max_depth) {
            am2z__plimit(P, start, "depth limit %d exceeded", P->lim.max_depth);
            return NULL;
        }
        if (!am2z__vec_reserve(&P->frames, 1, sizeof(am2z__frame))) goto oom;
        top = (am2z__frame *)P->frames.p + P->frames.n++;
        top->vbase = P->vals.n;
        top->kbase = P->krefs.n;
        top->kbytes = P->kbytes.n;
        top->obj = c == '{';
        P->pos++;
        am2z__skip_ws(P);
        if (P->pos < P->n && s[P->pos] == (c == '[' ? ']' : '}')) {
            P->pos++;
            P->frames.n--;
            v = c == '[' ? am2z_value_array() : am2z_value_object();
            goto done;
        }
        if (c == '[') goto value;
        goto key;
    case '"':
        P->sbuf.n = 0;
        if (!am2z__pstring(P, &P->sbuf, P->lim.max_string, &raw, &rawlen)) return NULL;
        v = raw ? am2z_value_string_n(raw, rawlen) : am2z_value_string_n((const char *)P->sbuf.p, P->sbuf.n);
        if (!v) goto oom;
        goto done;
    case 't':
    case 'f':
    case 'n': {
        const char *word = c == 't' ? "true" : c == 'f' ? "false" : "null";
        size_t wlen = strlen(word);
        if (P->n - start >= wlen && memcmp(s + start, word, wlen) == 0) {
            P->pos += wlen;
            v = c == 'n' ? am2z_value_null() : am2z_value_bool(c == 't');
            goto done;
        }
        break;
    }
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            v = am2z__pnumber(P);
            if (!v) return NULL;
            goto done;
        }
    }
    am2z__perr(P, start, c >= 0x20 && c < 0x7f ? "unexpected character '%c'" : "unexpected byte 0x%02x", c);
    return NULL;

key: /* at a member of the top object, after '{' or ',' */
    am2z__skip_ws(P);
    top = (am2z__frame *)P->frames.p + P->frames.n - 1;
    if (P->pos >= P->n || s[P->pos] != '"') {
        am2z__perr(P, P->pos, P->pos >= P->n ? "unexpected end of input" : "expected a string key");
        return NULL;
    }
    if (P->krefs.n - top->kbase == P->lim.max_elements) {
        am2z__plimit(P, P->pos, "element limit %lu exceeded", (unsigned long)P->lim.max_elements);
        return NULL;
    }
    {
        /* keys also fit the 32-bit length of an object member */
        size_t kstart = P->kbytes.n;
        size_t klimit = P->lim.max_string < 0xfffffffeu ? P->lim.max_string : 0xfffffffeu;
        am2z__kref kr;
        if (!am2z__pstring(P, &P->kbytes, klimit, &raw, &rawlen)) return NULL;
        if (raw) {
            if (!am2z__vec_reserve(&P->kbytes, rawlen, 1)) goto oom;
            memcpy((char *)P->kbytes.p + P->kbytes.n, raw, rawlen);
            P->kbytes.n += rawlen;
        }
        kr.off = kstart;
        kr.len = P->kbytes.n - kstart;
        if (!am2z__vec_reserve(&P->krefs, 1, sizeof kr)) goto oom;
        ((am2z__kref *)P->krefs.p)[P->krefs.n++] = kr;
    }
    am2z__skip_ws(P);
    if (P->pos >= P->n || s[P->pos] != ':') {
        am2z__perr(P, P->pos, P->pos >= P->n ? "unexpected end of input" : "expected ':'");
        return NULL;
    }
    P->pos++;
    goto value;

done: /* v is a finished value */
    if (P->frames.n == 0) {
        am2z__skip_ws(P);
        if (P->pos != P->n) {
            am2z__perr(P, P->pos, "unexpected data after the JSON value");
            am2z_value_release(v);
            return NULL;
        }
        return v;
    }
    if (!am2z__vec_reserve(&P->vals, 1, sizeof v)) {
        am2z_value_release(v);
        goto oom;
    }
    ((am2z_value **)P->vals.p)[P->vals.n++] = v;
    am2z__skip_ws(P);
    top = (am2z__frame *)P->frames.p + P->frames.n - 1;
    if (P->pos >= P->n) {
        am2z__perr(P, P->pos, "unexpected end of input");
        return NULL;
    }
    c = s[P->pos];
    if (c == ',') {
        P->pos++;
        if (top->obj) goto key;
        goto value;
    }
    if (c == (top->obj ? '}' : ']')) {
        P->pos++;
        v = am2z__pbuild(P, top);
        if (!v) goto oom;
        P->frames.n--;
        goto done;
    }
    am2z__perr(P, P->pos, top->obj ? "expected ',' or '}'" : "expected ',' or ']'");
    return NULL;
oom:
    am2z__poom(P, P->pos);
    return NULL;
}

AM2Z_API am2z_value *am2z_json_parse(const char *text, size_t len, const am2z_json_limits *limits,
                                     am2z_status *status) {
    am2z__parser P;
    am2z_value *vsmall[64], *v;
    am2z__kref ksmall[32];
    am2z__frame fsmall[16];
    char kbsmall[256], ssmall[256];
    size_t i;
    P.status = AM2Z_STATUS_OK;
    if (!text) {
        am2z__perr(&P, 0, "no input");
        return (am2z_value *)am2z__put_status(status, P.status);
    }
    if (len == AM2Z_NTS) len = strlen(text);
    P.s = (const unsigned char *)text;
    P.n = len;
    P.pos = 0;
    if (limits) P.lim = *limits;
    else memset(&P.lim, 0, sizeof P.lim);
    if (P.lim.max_depth <= 0) P.lim.max_depth = AM2Z_JSON_MAX_DEPTH;
    if (P.lim.max_depth > AM2Z_VALUE_MAX_DEPTH) P.lim.max_depth = AM2Z_VALUE_MAX_DEPTH;
    if (!P.lim.max_size) P.lim.max_size = AM2Z_JSON_MAX_SIZE;
    if (!P.lim.max_string) P.lim.max_string = AM2Z_JSON_MAX_STRING;
    if (!P.lim.max_elements) P.lim.max_elements = AM2Z_JSON_MAX_ELEMENTS;
    if (len > P.lim.max_size) {
        am2z__plimit(&P, P.lim.max_size, "input size limit %lu exceeded", (unsigned long)P.lim.max_size);
        return (am2z_value *)am2z__put_status(status, P.status);
    }
    am2z__vec_init(&P.vals, vsmall, sizeof vsmall / sizeof *vsmall);
    am2z__vec_init(&P.krefs, ksmall, sizeof ksmall / sizeof *ksmall);
    am2z__vec_init(&P.frames, fsmall, sizeof fsmall / sizeof *fsmall);
    am2z__vec_init(&P.kbytes, kbsmall, sizeof kbsmall);
    am2z__vec_init(&P.sbuf, ssmall, sizeof ssmall);
    v = am2z__parse(&P);
    for (i = 0; i < P.vals.n; i++) am2z_value_release(((am2z_value **)P.vals.p)[i]);
    am2z__vec_free(&P.vals);
    am2z__vec_free(&P.krefs);
    am2z__vec_free(&P.frames);
    am2z__vec_free(&P.kbytes);
    am2z__vec_free(&P.sbuf);
    if (status) *status = v ? AM2Z_STATUS_OK : P.status;
    return v;
}

/* ==== 2. state ======================================================================== */

static int am2z__meta_ok(const am2z_value *m) {
    return am2z__type(m) == AM2Z_TYPE_OBJECT &&
           am2z__type(am2z_value_find(m, "version", 7)) == AM2Z_TYPE_INT &&
           am2z_value_as_int(am2z_value_find(m, "version", 7), -1) >= 0 &&
           am2z__type(am2z_value_find(m, "sessionId", 9)) == AM2Z_TYPE_STRING &&
           am2z__type(am2z_value_find(m, "createdAt", 9)) == AM2Z_TYPE_INT &&
           am2z__type(am2z_value_find(m, "lastUpdated", 11)) == AM2Z_TYPE_INT;
}

/* {version, sessionId, createdAt, lastUpdated} in one block (plus the id string). */
static am2z_value *am2z__meta_new(const char *session_id, int64_t version, int64_t created, int64_t updated) {
    am2z__obj *o = am2z__obj_alloc(4, sizeof "version" + sizeof "sessionId" + sizeof "createdAt" +
                                          sizeof "lastUpdated");
    am2z_value *sid = am2z_value_string(session_id ? session_id : "default");
    am2z_value *ver = am2z_value_int(version), *cr = am2z_value_int(created), *up = am2z_value_int(updated);
    if (!o || !sid || !ver || !cr || !up) {
        am2z__free(o);
        am2z_value_release(sid);
        am2z_value_release(ver);
        am2z_value_release(cr);
        am2z_value_release(up);
        return NULL;
    }
    o = am2z__obj_add(o, "version", 7, ver);
    o = am2z__obj_add(o, "sessionId", 9, sid);
    o = am2z__obj_add(o, "createdAt", 9, cr);
    o = am2z__obj_add(o, "lastUpdated", 11, up);
    return &o->h;
}

/* Puts meta (consumed) first among the members of object data (consumed), which has
   no "metadata" member: the original spreads metadata first. */
static am2z_state *am2z__state_put_meta(am2z_value *data, am2z_value *meta) {
    am2z__obj *o;
    am2z__member m;
    data = am2z__own(data, 1, sizeof "metadata");
    o = data ? am2z__obj_add(AM2Z__OBJ(data), "metadata", 8, meta) : NULL;
    if (!o) {
        am2z_value_release(data);
        am2z_value_release(meta);
        return NULL;
    }
    m = am2z__mems(o)[o->len - 1];
    memmove(am2z__mems(o) + 1, am2z__mems(o), (o->len - 1) * sizeof m);
    am2z__mems(o)[0] = m;
    am2z__obj_reindex(o, 0);
    return &o->h;
}

/* Gives object data (consumed) well-formed metadata, keeping one already there. */
static am2z_state *am2z__state_attach(const char *session_id, am2z_value *data) {
    size_t i = am2z__obj_find(AM2Z__OBJ(data), "metadata", 8);
    int64_t now;
    am2z_value *meta;
    if (i != AM2Z__NPOS && am2z__meta_ok(am2z__mems(AM2Z__OBJ(data))[i].val)) return data;
    now = am2z_now_ms();
    meta = am2z__meta_new(session_id, 1, now, now);
    if (!meta) {
        am2z_value_release(data);
        return NULL;
    }
    if (i != AM2Z__NPOS) return am2z__obj_set(data, "metadata", 8, meta);
    return am2z__state_put_meta(data, meta);
}

/* Makes data (consumed) a state, failing as am2z_state_new documents. */
static am2z_state *am2z__state_make(const char *session_id, am2z_value *data, am2z_status *status) {
    if (!data) { /* a failed edit or constructor: its detail stays the reason */
        if (!am2z__edit_failed)
            am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "state: no data (an earlier call failed)");
        return (am2z_state *)am2z__put_status(status, AM2Z_STATUS_INVALID_ARGUMENT);
    }
    if (am2z__type(data) != AM2Z_TYPE_OBJECT) {
        const char *what = am2z__a_type(data);
        am2z_value_release(data);
        return (am2z_state *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "state: a state must be a JSON object, not %s", what));
    }
    data = am2z__state_attach(session_id, data);
    if (!data)
        return (am2z_state *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS,
                                                                 "state: out of memory"));
    if (status) *status = AM2Z_STATUS_OK;
    return data;
}

AM2Z_API am2z_state *am2z_state_new(const char *session_id, am2z_value *data, am2z_status *status) {
    return am2z__state_make(session_id, data, status);
}

AM2Z_API am2z_state *am2z_state_parse(const char *session_id, const char *json, size_t len,
                                      am2z_status *status) {
    am2z_value *v = am2z_json_parse(json, len, NULL, status);
    return v ? am2z__state_make(session_id, v, status) : NULL;
}

static const am2z_value *am2z__meta_get(const am2z_state *s, const char *key, size_t klen) {
    return am2z_value_find(am2z_value_find(s, "metadata", 8), key, klen);
}

/* The metadata object of s when it has the layout am2z__meta_new makes, which every
   state a runtime passes on keeps: "metadata" the first member, its fields version,
   sessionId, createdAt, lastUpdated in that order and well-formed. The runtimes read
   and bump it on every step: by position, instead of up to nine key searches. NULL:
   another layout, which the general path handles. */
static am2z__obj *am2z__meta_fast(const am2z_value *s) {
    const am2z__member *m;
    const char *k;
    am2z__obj *o;
    if (am2z__type(s) != AM2Z_TYPE_OBJECT || AM2Z__OBJ(s)->len == 0) return NULL;
    m = am2z__mems(AM2Z__OBJ(s));
    if (m[0].klen != 8 || memcmp(am2z__keys(AM2Z__OBJ(s)) + m[0].koff, "metadata", 8) != 0 ||
        am2z__type(m[0].val) != AM2Z_TYPE_OBJECT || AM2Z__OBJ(m[0].val)->len != 4)
        return NULL;
    o = AM2Z__OBJ(m[0].val);
    m = am2z__mems(o);
    k = am2z__keys(o);
    if (m[0].klen != 7 || memcmp(k + m[0].koff, "version", 7) != 0 || m[1].klen != 9 ||
        memcmp(k + m[1].koff, "sessionId", 9) != 0 || m[2].klen != 9 || memcmp(k + m[2].koff, "createdAt", 9) != 0 ||
        m[3].klen != 11 || memcmp(k + m[3].koff, "lastUpdated", 11) != 0)
        return NULL;
    if (!AM2Z__TAGGED(m[0].val) || am2z__untag(m[0].val) < 0 || am2z__type(m[1].val) != AM2Z_TYPE_STRING ||
        am2z__type(m[2].val) != AM2Z_TYPE_INT || am2z__type(m[3].val) != AM2Z_TYPE_INT)
        return NULL;
    return o;
}

AM2Z_API int64_t am2z_state_version(const am2z_state *s) {
    const am2z__obj *m = am2z__meta_fast(s);
    if (m) return am2z__untag(am2z__mems(m)[0].val);
    return am2z_value_as_int(am2z__meta_get(s, "version", 7), 0);
}
AM2Z_API const char *am2z_state_session_id(const am2z_state *s) {
    const am2z__obj *m = am2z__meta_fast(s);
    const char *id;
    if (m) return am2z__bytes(AM2Z__STR(am2z__mems(m)[1].val));
    id = am2z_value_as_string(am2z__meta_get(s, "sessionId", 9), NULL);
    return id ? id : "";
}
AM2Z_API int64_t am2z_state_created_at(const am2z_state *s) {
    return am2z_value_as_int(am2z__meta_get(s, "createdAt", 9), 0);
}
AM2Z_API int64_t am2z_state_last_updated(const am2z_state *s) {
    return am2z_value_as_int(am2z__meta_get(s, "lastUpdated", 11), 0);
}

/* am2z__state_bump_at of s (consumed), whose metadata am2z__meta_fast found (its version
   passed in): version and lastUpdated are members 0 and 3, written in place in a metadata
   object of its own. */
static am2z_state *am2z__state_bump_fast(am2z_state *s, int64_t version, int64_t now) {
    am2z_value *meta, *ver, *up;
    am2z__member *m;
    s = am2z__own(s, 0, 0);
    if (!s) return NULL;
    meta = am2z__own(am2z__mems(AM2Z__OBJ(s))[0].val, 0, 0);
    am2z__mems(AM2Z__OBJ(s))[0].val = meta;
    ver = am2z_value_int(version < INT64_MAX ? version + 1 : version);
    up = am2z_value_int(now);
    if (!meta || !ver || !up) {
        am2z_value_release(ver);
        am2z_value_release(up);
        am2z_value_release(s);
        return NULL;
    }
    m = am2z__mems(AM2Z__OBJ(meta));
    am2z_value_release(m[0].val);
    m[0].val = ver;
    am2z_value_release(m[3].val);
    m[3].val = up;
    return s;
}

/* am2z_state_bump with lastUpdated = now (a runtime's clock, which may be virtual). */
AM2Z__PRIVATE am2z_state *am2z__state_bump_at(am2z_state *s, int64_t now) {
    const am2z__obj *fast;
    size_t i;
    int64_t version;
    am2z_value *meta;
    const char *sid;
    if (am2z__type(s) != AM2Z_TYPE_OBJECT) {
        am2z_value_release(s);
        return NULL;
    }
    if ((fast = am2z__meta_fast(s)) != NULL) return am2z__state_bump_fast(s, am2z__untag(am2z__mems(fast)[0].val), now);
    version = am2z_state_version(s);
    if (version < INT64_MAX) version++;
    i = am2z__obj_find(AM2Z__OBJ(s), "metadata", 8);
    if (i == AM2Z__NPOS || !am2z__meta_ok(am2z__mems(AM2Z__OBJ(s))[i].val)) {
        /* Repair: fresh metadata that still counts on from the old version. */
        sid = am2z_state_session_id(s);
        meta = am2z__meta_new(sid[0] ? sid : NULL, version, now, now);
        if (!meta) {
            am2z_value_release(s);
            return NULL;
        }
        if (i != AM2Z__NPOS) return am2z__obj_set(s, "metadata", 8, meta);
        return am2z__state_put_meta(s, meta);
    }
    s = am2z__own(s, 0, 0);
    if (!s) return NULL;
    meta = am2z__mems(AM2Z__OBJ(s))[i].val;
    am2z__mems(AM2Z__OBJ(s))[i].val = NULL;
    meta = am2z__obj_set(meta, "version", 7, am2z_value_int(version));
    if (meta) meta = am2z__obj_set(meta, "lastUpdated", 11, am2z_value_int(now));
    if (!meta) {
        am2z_value_release(s);
        return NULL;
    }
    am2z__mems(AM2Z__OBJ(s))[i].val = meta;
    return s;
}

AM2Z_API am2z_state *am2z_state_bump(am2z_state *s) { return am2z__state_bump_at(s, am2z_now_ms()); }

#ifndef AM2Z_NO_THREADS /* for the local runtime */
/* The sessionId value (borrowed) of a state with the fast layout, else NULL. */
static const am2z_value *am2z__meta_sid(const am2z_state *s) {
    const am2z__obj *m = am2z__meta_fast(s);
    return m ? am2z__mems(m)[1].val : NULL;
}

/* am2z__state_bump_at that also gives the result's sessionId value (borrowed; NULL
   unless the fast layout): a runtime checking the session of every result compares it
   with its input's by pointer instead of reading and comparing the id again. */
static am2z_state *am2z__state_bump_sid(am2z_state *s, int64_t now, const am2z_value **sid) {
    const am2z__obj *fast = am2z__meta_fast(s);
    *sid = NULL;
    if (!fast) return am2z__state_bump_at(s, now);
    s = am2z__state_bump_fast(s, am2z__untag(am2z__mems(fast)[0].val), now);
    if (s) *sid = am2z__mems(AM2Z__OBJ(am2z__mems(AM2Z__OBJ(s))[0].val))[1].val; /* the layout is kept */
    return s;
}
#endif

/* The value representation stays private to sections 1 and 2. */
#undef AM2Z__STATIC
#undef AM2Z__INDEX_MIN
#undef AM2Z__NPOS
#undef AM2Z__TAGGED
#undef AM2Z__ARR
#undef AM2Z__OBJ
#undef AM2Z__STR
#undef AM2Z__NUM
#undef AM2Z__TAG_MIN
#undef AM2Z__TAG_MAX
#undef AM2Z__EXACT_DOUBLES

/* ==== 3. errors & results ============================================================= */

/* The public am2z_error is the first member, so an am2z_error* is also an am2z__error*.
   Every string is owned by the error (name is static). */
typedef struct am2z__error {
    am2z_error pub;
    int refs;
} am2z__error;

typedef struct am2z__error_kind_info {
    const char *name;
    const char *code;
    am2z_error_category category;
    am2z_severity severity;
    int retryable;
} am2z__error_kind_info;

/* Indexed by am2z_error_kind. Kind NONE describes an error of unknown type read from
   JSON, with the defaults the original gives non-AM2Z errors. */
static const am2z__error_kind_info am2z__error_kinds[] = {
    {"Error", "UNKNOWN_ERROR", AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_MEDIUM, 0},
    {"ValidationError", "VALIDATION_FAILED", AM2Z_CATEGORY_VALIDATION, AM2Z_SEVERITY_LOW, 0},
    {"ProcessorNotFoundError", "PROCESSOR_NOT_FOUND", AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_HIGH, 0},
    {"ProcessorExecutionError", "PROCESSOR_EXECUTION_FAILED", AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_HIGH, 1},
    {"TimeoutError", "OPERATION_TIMEOUT", AM2Z_CATEGORY_TIMEOUT, AM2Z_SEVERITY_MEDIUM, 1},
    {"ResourceError", "RESOURCE_EXHAUSTED", AM2Z_CATEGORY_RESOURCE, AM2Z_SEVERITY_HIGH, 1},
    {"NetworkError", "NETWORK_ERROR", AM2Z_CATEGORY_NETWORK, AM2Z_SEVERITY_MEDIUM, 1},
    {"ConfigurationError", "INVALID_CONFIGURATION", AM2Z_CATEGORY_CONFIGURATION, AM2Z_SEVERITY_CRITICAL, 0},
    {"BusinessError", "BUSINESS_ERROR", AM2Z_CATEGORY_BUSINESS, AM2Z_SEVERITY_MEDIUM, 0},
    {"CallDepthExceededError", "CALL_DEPTH_EXCEEDED", AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_HIGH, 0},
    {"CancelledError", "EXECUTION_CANCELLED", AM2Z_CATEGORY_EXECUTION, AM2Z_SEVERITY_MEDIUM, 0},
    {"CircuitOpenError", "CIRCUIT_OPEN", AM2Z_CATEGORY_RESOURCE, AM2Z_SEVERITY_MEDIUM, 1}
};
#define AM2Z__ERROR_KIND_COUNT ((int)(sizeof am2z__error_kinds / sizeof am2z__error_kinds[0]))

static const char *const am2z__category_names[] = {
    "none", "validation", "execution", "timeout", "resource", "network", "configuration", "auth", "business"
};
/* DEFAULT reads as medium, the severity it resolves to. */
static const char *const am2z__severity_names[] = {"medium", "low", "medium", "high", "critical"};

static const am2z__error_kind_info *am2z__kind_info(am2z_error_kind kind) {
    int k = (int)kind;
    return &am2z__error_kinds[k >= 0 && k < AM2Z__ERROR_KIND_COUNT ? k : 0];
}

AM2Z_API const char *am2z_error_kind_name(am2z_error_kind kind) { return am2z__kind_info(kind)->name; }

AM2Z_API const char *am2z_error_category_name(am2z_error_category c) {
    int i = (int)c;
    return i > 0 && i < (int)(sizeof am2z__category_names / sizeof am2z__category_names[0])
               ? am2z__category_names[i] : "none";
}

AM2Z_API const char *am2z_severity_name(am2z_severity s) {
    int i = (int)s;
    return i >= 0 && i < (int)(sizeof am2z__severity_names / sizeof am2z__severity_names[0])
               ? am2z__severity_names[i] : "medium";
}

/* A new NUL-terminated string from printf arguments, or NULL when out of memory. */
static char *am2z__err_vfmt(const char *fmt, va_list ap) {
    char small[256], *s = NULL;
    am2z__vec text;
    am2z__vec_init(&text, small, sizeof small);
    am2z__vec_vprintf(&text, SIZE_MAX, fmt, ap);
    if (!text.failed && (s = (char *)am2z__malloc(text.n + 1)) != NULL) memcpy(s, text.p, text.n + 1);
    am2z__vec_free(&text);
    return s;
}

static char *am2z__err_fmt(const char *fmt, ...) AM2Z_PRINTF(1, 2);
static char *am2z__err_fmt(const char *fmt, ...) {
    va_list ap;
    char *s;
    va_start(ap, fmt);
    s = am2z__err_vfmt(fmt, ap);
    va_end(ap);
    return s;
}

static void am2z__err_free_str(const char *s) { am2z__free((void *)(uintptr_t)s); }

/* Frees err and everything it owns, then releases its cause; a loop, not recursion, so
   an arbitrarily long cause chain cannot exhaust the stack. */
AM2Z_API void am2z_error_release(am2z_error *err) {
    while (err) {
        am2z__error *e = (am2z__error *)err;
        am2z_error *cause;
        if (am2z__atomic_dec(&e->refs) != 0) return;
        cause = (am2z_error *)(uintptr_t)err->cause;
        am2z__err_free_str(err->code);
        am2z__err_free_str(err->message);
        am2z__err_free_str(err->processor);
        am2z__err_free_str(err->execution_id);
        am2z_value_release((am2z_value *)(uintptr_t)err->details);
        am2z_value_release((am2z_value *)(uintptr_t)err->partial_state);
        am2z__free(e);
        err = cause;
    }
}

AM2Z_API am2z_error *am2z_error_retain(const am2z_error *err) {
    am2z__error *e = (am2z__error *)(uintptr_t)err;
    if (e) am2z__atomic_inc(&e->refs);
    return (am2z_error *)e;
}

/* The one constructor. message, details, cause and partial are consumed; code is
   copied (the kind's code when NULL). A NULL message or details means an earlier
   allocation failed: everything is released and NULL returned. */
static am2z_error *am2z__error_make(am2z_error_kind kind, const char *code, char *message,
                                    am2z_value *details, am2z_error *cause, am2z_state *partial) {
    const am2z__error_kind_info *info = am2z__kind_info(kind);
    am2z__error *e = NULL;
    char *code_copy = am2z__strdup(code ? code : info->code);
    if (message && details && code_copy) e = (am2z__error *)am2z__malloc(sizeof *e);
    if (!e) {
        am2z__free(code_copy);
        am2z__free(message);
        am2z_value_release(details);
        am2z_error_release(cause);
        am2z_value_release(partial);
        return NULL;
    }
    memset(e, 0, sizeof *e);
    e->refs = 1;
    e->pub.kind = (am2z_error_kind)(info - am2z__error_kinds);
    e->pub.name = info->name;
    e->pub.code = code_copy;
    e->pub.message = message;
    e->pub.category = info->category;
    e->pub.severity = info->severity;
    e->pub.retryable = info->retryable;
    e->pub.details = details;
    e->pub.cause = cause;
    e->pub.partial_state = partial;
    e->pub.created_at = am2z_now_ms();
    return &e->pub;
}

/* How a NULL name or reason reads in messages and details. */
static const char *am2z__or_unknown(const char *s) { return s ? s : "unknown"; }
static const char *am2z__or_no_reason(const char *s) { return s ? s : "no reason given"; }

AM2Z_API am2z_error *am2z_error_validation(const char *field, const am2z_value *value, const char *reason) {
    am2z_value *d;
    field = am2z__or_unknown(field);
    reason = am2z__or_no_reason(reason);
    d = am2z_value_set_key(am2z_value_object(), "field", AM2Z_NTS, am2z_value_string(field));
    if (value) d = am2z_value_set_key(d, "value", AM2Z_NTS, am2z_value_retain(value));
    d = am2z_value_set_key(d, "reason", AM2Z_NTS, am2z_value_string(reason));
    return am2z__error_make(AM2Z_ERROR_VALIDATION, NULL,
                            am2z__err_fmt("Validation failed for field '%s': %s", field, reason),
                            d, NULL, NULL);
}

AM2Z_API am2z_error *am2z_error_not_found(const char *processor, const am2z_value *available_names) {
    /* "a, b, c": strings as they are, anything else as compact JSON. */
    size_t i, n = am2z_value_type(available_names) == AM2Z_TYPE_ARRAY ? am2z_value_len(available_names) : 0;
    char small[256], *msg = NULL;
    am2z__vec list;
    am2z_value *d;
    am2z__vec_init(&list, small, sizeof small);
    for (i = 0; i < n; i++) {
        const am2z_value *item = am2z_value_at(available_names, i);
        size_t len;
        const char *text = am2z_value_as_string(item, &len);
        char *json = text ? NULL : am2z_json_write(item, AM2Z_JSON_COMPACT, &len);
        if (i) am2z__vec_put(&list, ", ", 2);
        if (text || json) am2z__vec_put(&list, text ? text : json, len);
        else list.failed = 1;
        am2z__free(json);
    }
    am2z__vec_putc(&list, 0);
    processor = am2z__or_unknown(processor);
    if (!list.failed)
        msg = am2z__err_fmt("Processor '%s' not found. Available: %s", processor, (const char *)list.p);
    am2z__vec_free(&list);
    d = am2z_value_set_key(am2z_value_object(), "processorName", AM2Z_NTS, am2z_value_string(processor));
    d = am2z_value_set_key(d, "availableProcessors", AM2Z_NTS,
                           n ? am2z_value_retain(available_names) : am2z_value_array());
    return am2z__error_make(AM2Z_ERROR_PROCESSOR_NOT_FOUND, NULL, msg, d, NULL, NULL);
}

static int am2z__str_eq_or_null(const char *a, const char *b) { return !a || !b || strcmp(a, b) == 0; }

AM2Z_API am2z_error *am2z_error_execution(const char *processor, const char *execution_id,
                                          am2z_error *cause, am2z_state *partial_state) {
    am2z_value *d;
    const char *name = am2z__or_unknown(processor);
    am2z_error *e;
    /* No pointless double wrap: a ProcessorExecutionError of the same processor (and the
       same execution, where both know it) is returned as it is, with the missing location
       filled in and partial_state (if given) attached. A different processor does get a
       new layer: the chain of names is the path the failure took through composition. */
    if (cause && cause->kind == AM2Z_ERROR_EXECUTION && processor && cause->processor &&
        strcmp(processor, cause->processor) == 0 && am2z__str_eq_or_null(execution_id, cause->execution_id)) {
        e = am2z_error_with_location(cause, NULL, cause->execution_id ? NULL : execution_id);
        if (e && partial_state) return am2z_error_with_partial(e, partial_state);
        if (!e) am2z_value_release(partial_state);
        return e;
    }
    d = am2z_value_set_key(am2z_value_object(), "processorName", AM2Z_NTS, am2z_value_string(name));
    if (execution_id) d = am2z_value_set_key(d, "executionId", AM2Z_NTS, am2z_value_string(execution_id));
    if (cause) {
        d = am2z_value_set_key(d, "causeType", AM2Z_NTS, am2z_value_string(cause->name));
        d = am2z_value_set_key(d, "causeMessage", AM2Z_NTS, am2z_value_string(cause->message));
    }
    d = am2z_value_set_key(d, "failedProcessor", AM2Z_NTS, am2z_value_string(name));
    e = am2z__error_make(AM2Z_ERROR_EXECUTION, NULL,
                         cause ? am2z__err_fmt("Processor '%s' execution failed: %s", name, cause->message)
                               : am2z__err_fmt("Processor '%s' execution failed", name),
                         d, cause, partial_state);
    if (!e) return NULL;
    /* Retrying cannot fix what the cause says is permanent (the original said yes). */
    e->retryable = cause ? cause->retryable : 1;
    if (processor || execution_id) {
        e = am2z_error_with_location(e, processor, execution_id);
    }
    return e;
}

AM2Z_API am2z_error *am2z_error_timeout(const char *operation, int64_t timeout_ms) {
    am2z_value *d;
    operation = am2z__or_unknown(operation);
    d = am2z_value_set_key(am2z_value_object(), "operation", AM2Z_NTS, am2z_value_string(operation));
    d = am2z_value_set_key(d, "timeoutMs", AM2Z_NTS, am2z_value_int(timeout_ms));
    return am2z__error_make(AM2Z_ERROR_TIMEOUT, NULL,
                            am2z__err_fmt("Operation '%s' timed out after %lldms", operation,
                                          (long long)timeout_ms),
                            d, NULL, NULL);
}

AM2Z_API am2z_error *am2z_error_resource(const char *resource, int64_t limit, int64_t current) {
    am2z_value *d;
    resource = am2z__or_unknown(resource);
    d = am2z_value_set_key(am2z_value_object(), "resource", AM2Z_NTS, am2z_value_string(resource));
    d = am2z_value_set_key(d, "limit", AM2Z_NTS, am2z_value_int(limit));
    d = am2z_value_set_key(d, "current", AM2Z_NTS, am2z_value_int(current));
    return am2z__error_make(AM2Z_ERROR_RESOURCE, NULL,
                            am2z__err_fmt("Resource '%s' exhausted: %lld/%lld", resource, (long long)current,
                                         (long long)limit),
                            d, NULL, NULL);
}

AM2Z_API am2z_error *am2z_error_network(const char *endpoint, int status_code, am2z_error *cause) {
    am2z_value *d;
    endpoint = am2z__or_unknown(endpoint);
    d = am2z_value_set_key(am2z_value_object(), "endpoint", AM2Z_NTS, am2z_value_string(endpoint));
    if (status_code) d = am2z_value_set_key(d, "statusCode", AM2Z_NTS, am2z_value_int(status_code));
    return am2z__error_make(AM2Z_ERROR_NETWORK, NULL,
                            status_code
                                ? am2z__err_fmt("Network error for endpoint '%s' (%d)", endpoint, status_code)
                                : am2z__err_fmt("Network error for endpoint '%s'", endpoint),
                            d, cause, NULL);
}

AM2Z_API am2z_error *am2z_error_configuration(const char *key, const char *reason) {
    am2z_value *d;
    key = am2z__or_unknown(key);
    reason = am2z__or_no_reason(reason);
    d = am2z_value_set_key(am2z_value_object(), "configKey", AM2Z_NTS, am2z_value_string(key));
    d = am2z_value_set_key(d, "reason", AM2Z_NTS, am2z_value_string(reason));
    return am2z__error_make(AM2Z_ERROR_CONFIGURATION, NULL,
                            am2z__err_fmt("Configuration error for '%s': %s", key, reason), d, NULL, NULL);
}

AM2Z_API am2z_error *am2z_error_business(const char *code, am2z_severity severity, const char *fmt, ...) {
    va_list ap;
    char *msg;
    am2z_error *e;
    if (fmt) {
        va_start(ap, fmt);
        msg = am2z__err_vfmt(fmt, ap);
        va_end(ap);
    } else {
        msg = am2z__strdup("");
    }
    e = am2z__error_make(AM2Z_ERROR_BUSINESS, code, msg, am2z_value_object(), NULL, NULL);
    if (e && severity > AM2Z_SEVERITY_DEFAULT && severity <= AM2Z_SEVERITY_CRITICAL) e->severity = severity;
    return e;
}

AM2Z_API am2z_error *am2z_error_call_depth(int max_depth, int current_depth) {
    am2z_value *d = am2z_value_set_key(am2z_value_object(), "maxDepth", AM2Z_NTS, am2z_value_int(max_depth));
    d = am2z_value_set_key(d, "currentDepth", AM2Z_NTS, am2z_value_int(current_depth));
    return am2z__error_make(AM2Z_ERROR_CALL_DEPTH, NULL,
                            am2z__err_fmt("Maximum call depth exceeded: %d >= %d", current_depth, max_depth),
                            d, NULL, NULL);
}

AM2Z_API am2z_error *am2z_error_cancelled(const char *reason) {
    am2z_value *d = am2z_value_object();
    if (reason) d = am2z_value_set_key(d, "reason", AM2Z_NTS, am2z_value_string(reason));
    return am2z__error_make(AM2Z_ERROR_CANCELLED, NULL,
                            reason ? am2z__err_fmt("Execution cancelled: %s", reason)
                                   : am2z__strdup("Execution cancelled"),
                            d, NULL, NULL);
}

AM2Z_API am2z_error *am2z_error_circuit_open(const char *processor, int64_t retry_at, int64_t retry_after_ms) {
    am2z_value *d;
    am2z_error *e;
    processor = am2z__or_unknown(processor);
    if (retry_after_ms < 0) retry_after_ms = 0;
    d = am2z_value_set_key(am2z_value_object(), "processorName", AM2Z_NTS, am2z_value_string(processor));
    d = am2z_value_set_key(d, "retryAt", AM2Z_NTS, am2z_value_int(retry_at));
    d = am2z_value_set_key(d, "retryAfterMs", AM2Z_NTS, am2z_value_int(retry_after_ms));
    e = am2z__error_make(AM2Z_ERROR_CIRCUIT_OPEN, NULL,
                         am2z__err_fmt("Circuit breaker of processor '%s' is open; retry after %lldms", processor,
                                       (long long)retry_after_ms),
                         d, NULL, NULL);
    return e ? am2z_error_with_location(e, processor, NULL) : NULL;
}

/* A failure error for a misused Result helper: a ProcessorExecutionError without a
   processor, not retryable (the same call would misbehave again). */
static am2z_error *am2z__error_misuse(const char *what) {
    am2z_value *d = am2z_value_set_key(am2z_value_object(), "reason", AM2Z_NTS, am2z_value_string(what));
    am2z_error *e = am2z__error_make(AM2Z_ERROR_EXECUTION, NULL, am2z__strdup(what), d, NULL, NULL);
    if (e) e->retryable = 0;
    return e;
}

/* err (consumed) itself when the caller holds the only reference, else a copy sharing
   details, cause and partial state; NULL when out of memory. The setters edit the
   result in place, which is how copy-on-write keeps shared errors immutable. */
static am2z_error *am2z__error_unshare(am2z_error *err) {
    am2z__error *e = (am2z__error *)err, *c;
    if (am2z__atomic_load(&e->refs, AM2Z__MO_ACQUIRE) == 1) return err;
    c = (am2z__error *)am2z__malloc(sizeof *c);
    if (c) {
        c->pub = *err;
        c->refs = 1;
        c->pub.code = am2z__strdup(err->code);
        c->pub.message = am2z__strdup(err->message);
        c->pub.processor = am2z__strdup(err->processor);
        c->pub.execution_id = am2z__strdup(err->execution_id);
        c->pub.details = am2z_value_retain(err->details);
        c->pub.cause = am2z_error_retain(err->cause);
        c->pub.partial_state = am2z_value_retain(err->partial_state);
        if (!c->pub.code || !c->pub.message || (err->processor && !c->pub.processor) ||
            (err->execution_id && !c->pub.execution_id)) {
            am2z_error_release(&c->pub);
            c = NULL;
        }
    }
    am2z_error_release(err);
    return c ? &c->pub : NULL;
}

AM2Z_API am2z_error *am2z_error_with_details(am2z_error *err, const am2z_value *details) {
    if (!err || am2z_value_type(details) != AM2Z_TYPE_OBJECT || am2z_value_len(details) == 0) return err;
    err = am2z__error_unshare(err);
    if (!err) return NULL;
    /* err's reference goes to merge so that it can edit in place; merge holds details
       across the edit, which may be err's own object or a member of it. */
    err->details = am2z_value_merge((am2z_value *)(uintptr_t)err->details, details);
    if (!err->details) {
        am2z_error_release(err);
        return NULL;
    }
    return err;
}

AM2Z_API am2z_error *am2z_error_with_location(am2z_error *err, const char *processor,
                                              const char *execution_id) {
    char *p = NULL, *x = NULL;
    if (!err) return NULL;
    if (!processor && !execution_id) return err;
    /* Copied before the edit: the arguments may point into err (or into the shared
       original, which another holder may free once we let go of it). */
    if ((processor && !(p = am2z__strdup(processor))) ||
        (execution_id && !(x = am2z__strdup(execution_id)))) {
        am2z__free(p);
        am2z_error_release(err);
        return NULL;
    }
    err = am2z__error_unshare(err);
    if (!err) {
        am2z__free(p);
        am2z__free(x);
        return NULL;
    }
    if (p) { am2z__err_free_str(err->processor); err->processor = p; }
    if (x) { am2z__err_free_str(err->execution_id); err->execution_id = x; }
    return err;
}

AM2Z_API am2z_error *am2z_error_with_partial(am2z_error *err, am2z_state *partial_state) {
    if (!err) {
        am2z_value_release(partial_state);
        return NULL;
    }
    err = am2z__error_unshare(err);
    if (!err) {
        am2z_value_release(partial_state);
        return NULL;
    }
    am2z_value_release((am2z_value *)(uintptr_t)err->partial_state);
    err->partial_state = partial_state;
    return err;
}

AM2Z_API am2z_error *am2z_error_with_retryable(am2z_error *err, int retryable) {
    if (!err || err->retryable == !!retryable) return err;
    err = am2z__error_unshare(err);
    if (err) err->retryable = !!retryable;
    return err;
}

AM2Z_API am2z_error *am2z_error_from_status(am2z_status st, const char *operation) {
    static const char *const codes[] = {"AM2Z_SERVER", "AM2Z_PROTOCOL", "AM2Z_CONFLICT"};
    am2z_error_kind kind = AM2Z_ERROR_EXECUTION;
    const char *code = NULL, *detail = am2z_status_detail();
    char copy[256]; /* building the error may record a new detail */
    int retryable = -1; /* the kind's default */
    size_t offset = am2z_status_offset();
    am2z_value *d;
    char *msg;
    am2z_error *e;
    switch (st) {
    case AM2Z_STATUS_TIMEOUT: kind = AM2Z_ERROR_TIMEOUT; break;
    case AM2Z_STATUS_IO: kind = AM2Z_ERROR_NETWORK; break;
    case AM2Z_STATUS_NO_MEMORY:
    case AM2Z_STATUS_LIMIT: kind = AM2Z_ERROR_RESOURCE; break;
    case AM2Z_STATUS_INVALID_ARGUMENT:
    case AM2Z_STATUS_NOT_FOUND: kind = AM2Z_ERROR_VALIDATION; break;
    case AM2Z_STATUS_EXISTS:
    case AM2Z_STATUS_CYCLE:
    case AM2Z_STATUS_NOT_STARTED: kind = AM2Z_ERROR_CONFIGURATION; break;
    case AM2Z_STATUS_CANCELLED: kind = AM2Z_ERROR_CANCELLED; break;
    case AM2Z_STATUS_SERVER: code = codes[0]; break;
    case AM2Z_STATUS_PROTOCOL: code = codes[1]; break;
    case AM2Z_STATUS_CONFLICT: code = codes[2]; break;
    case AM2Z_STATUS_OK:
    case AM2Z_STATUS_NEED_MORE: detail = "not a failure"; retryable = 0; break;
    }
    if (code) {
        kind = AM2Z_ERROR_BUSINESS;
        retryable = 1; /* the server, the peer or the race may behave next time */
    }
    if (!operation) operation = "am2z";
    if (!detail[0]) detail = am2z_status_string(st);
    snprintf(copy, sizeof copy, "%s", detail);
    detail = copy;
    d = am2z_value_set_key(am2z_value_object(), "operation", AM2Z_NTS, am2z_value_string(operation));
    d = am2z_value_set_key(d, "status", AM2Z_NTS, am2z_value_string(am2z_status_string(st)));
    d = am2z_value_set_key(d, "detail", AM2Z_NTS, am2z_value_string(detail));
    if (offset != AM2Z_NTS) d = am2z_value_set_key(d, "offset", AM2Z_NTS, am2z_value_int((int64_t)offset));
    msg = am2z__err_fmt("%s: %s", operation, detail);
    e = am2z__error_make(kind, code, msg, d, NULL, NULL);
    if (e && retryable >= 0) e->retryable = retryable;
    return e;
}

AM2Z_API const am2z_error *am2z_error_root_cause(const am2z_error *err) {
    while (err && err->cause) err = err->cause;
    return err;
}

AM2Z_API char *am2z_error_chain(const am2z_error *err) {
    const am2z_error *e;
    size_t len = 0;
    char *s, *p;
    if (!err) return am2z__strdup("");
    for (e = err; e; e = e->cause) len += strlen(e->name) + 2 + strlen(e->message) + 4;
    s = (char *)am2z__malloc(len + 1);
    if (!s) return NULL;
    p = s;
    for (e = err; e; e = e->cause) {
        size_t n = strlen(e->name), m = strlen(e->message);
        if (e != err) { memcpy(p, " -> ", 4); p += 4; }
        memcpy(p, e->name, n); p += n;
        memcpy(p, ": ", 2); p += 2;
        memcpy(p, e->message, m); p += m;
    }
    *p = '\0';
    return s;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1..12), and its inverse:
   the era arithmetic keeps every step in exact integer division. */
static int64_t am2z__days_from_civil(int64_t y, int m, int d) {
    int64_t era, yoe, doy;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

static void am2z__civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    int64_t era, doe, yoe, doy, mp;
    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* n decimal digits of v (0 <= v < 10^n), zero-padded. */
static void am2z__iso_put(char *p, int n, int v) {
    while (n-- > 0) {
        p[n] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* "2024-05-01T12:00:00.123Z" (UTC, like JavaScript's toISOString) into buf. Years are
   clamped to 0000..9999 so the text always has this fixed shape. */
static void am2z__iso8601_write(int64_t ms, char buf[32]) {
    const int64_t lo = -62167219200000LL, hi = 253402300799999LL; /* 0000-01-01 .. 9999-12-31 */
    int64_t days, rem, y;
    int m, d;
    if (ms < lo) ms = lo;
    if (ms > hi) ms = hi;
    days = ms / 86400000;
    rem = ms % 86400000;
    if (rem < 0) { rem += 86400000; days--; }
    am2z__civil_from_days(days, &y, &m, &d);
    am2z__iso_put(buf, 4, (int)y);
    buf[4] = '-';
    am2z__iso_put(buf + 5, 2, m);
    buf[7] = '-';
    am2z__iso_put(buf + 8, 2, d);
    buf[10] = 'T';
    am2z__iso_put(buf + 11, 2, (int)(rem / 3600000));
    buf[13] = ':';
    am2z__iso_put(buf + 14, 2, (int)(rem / 60000 % 60));
    buf[16] = ':';
    am2z__iso_put(buf + 17, 2, (int)(rem / 1000 % 60));
    buf[19] = '.';
    am2z__iso_put(buf + 20, 3, (int)(rem % 1000));
    buf[23] = 'Z';
    buf[24] = '\0';
}

static int am2z__iso_digits(const char *s, int n, int *out) {
    int i, v = 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 1;
}

/* Parses "YYYY-MM-DDTHH:MM:SS[.fff...]Z" (the shape am2z__iso8601_write and JavaScript
   write). Returns 1 and *ms, or 0 for anything else. */
static int am2z__iso8601_parse(const char *s, size_t len, int64_t *ms) {
    int y, mo, d, h, mi, se, frac = 0, scale = 100;
    size_t i = 19;
    if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return 0;
    if (!am2z__iso_digits(s, 4, &y) || !am2z__iso_digits(s + 5, 2, &mo) || !am2z__iso_digits(s + 8, 2, &d) ||
        !am2z__iso_digits(s + 11, 2, &h) || !am2z__iso_digits(s + 14, 2, &mi) ||
        !am2z__iso_digits(s + 17, 2, &se))
        return 0;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return 0;
    if (s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            frac += (s[i] - '0') * scale;
            scale /= 10;
        }
    }
    if (i + 1 != len || (s[i] != 'Z' && s[i] != 'z')) return 0;
    *ms = ((am2z__days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000 + (int64_t)se * 1000 + frac;
    return 1;
}

static am2z_value *am2z__error_to_json_depth(const am2z_error *err, int depth) {
    char ts[32];
    am2z_value *j;
    am2z__iso8601_write(err->created_at, ts);
    j = am2z_value_set_key(am2z_value_object(), "name", AM2Z_NTS, am2z_value_string(err->name));
    j = am2z_value_set_key(j, "code", AM2Z_NTS, am2z_value_string(err->code));
    j = am2z_value_set_key(j, "message", AM2Z_NTS, am2z_value_string(err->message));
    j = am2z_value_set_key(j, "category", AM2Z_NTS, am2z_value_string(am2z_error_category_name(err->category)));
    j = am2z_value_set_key(j, "severity", AM2Z_NTS, am2z_value_string(am2z_severity_name(err->severity)));
    j = am2z_value_set_key(j, "retryable", AM2Z_NTS, am2z_value_bool(err->retryable));
    if (err->processor) j = am2z_value_set_key(j, "processor", AM2Z_NTS, am2z_value_string(err->processor));
    if (err->execution_id)
        j = am2z_value_set_key(j, "executionId", AM2Z_NTS, am2z_value_string(err->execution_id));
    j = am2z_value_set_key(j, "details", AM2Z_NTS,
                           err->details ? am2z_value_retain(err->details) : am2z_value_object());
    if (err->cause && depth < AM2Z_ERROR_MAX_CAUSES)
        j = am2z_value_set_key(j, "cause", AM2Z_NTS, am2z__error_to_json_depth(err->cause, depth + 1));
    if (err->partial_state)
        j = am2z_value_set_key(j, "partialState", AM2Z_NTS, am2z_value_retain(err->partial_state));
    return am2z_value_set_key(j, "timestamp", AM2Z_NTS, am2z_value_string(ts));
}

AM2Z_API am2z_value *am2z_error_to_json(const am2z_error *err) {
    return err ? am2z__error_to_json_depth(err, 0) : NULL;
}

/* Member key of an object as a NUL-terminated string, or NULL when absent or not a string. */
static const char *am2z__err_json_str(const am2z_value *obj, const char *key) {
    return am2z_value_as_string(am2z_value_find(obj, key, AM2Z_NTS), NULL);
}

static int am2z__name_index(const char *s, const char *const *names, int count) {
    int i;
    if (s)
        for (i = 0; i < count; i++)
            if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

static am2z_error *am2z__error_from_json_depth(const am2z_value *j, int depth) {
    const char *name, *code, *message, *cat, *sev, *processor, *execution_id, *ts;
    const am2z_value *details, *cause_json, *partial, *tsv;
    am2z_error *cause = NULL, *e;
    size_t tslen;
    int kind = -1, i;
    if (am2z_value_type(j) != AM2Z_TYPE_OBJECT) return NULL;
    name = am2z__err_json_str(j, "name");
    code = am2z__err_json_str(j, "code");
    /* The name decides the kind; a missing or foreign name falls back to the code. */
    for (i = 1; i < AM2Z__ERROR_KIND_COUNT && kind < 0; i++)
        if (name && strcmp(name, am2z__error_kinds[i].name) == 0) kind = i;
    for (i = 1; i < AM2Z__ERROR_KIND_COUNT && kind < 0; i++)
        if (code && i != AM2Z_ERROR_BUSINESS && strcmp(code, am2z__error_kinds[i].code) == 0) kind = i;
    if (kind < 0) kind = AM2Z_ERROR_NONE;
    if (kind != AM2Z_ERROR_BUSINESS && kind != AM2Z_ERROR_NONE) code = NULL; /* the kind's own code */
    message = am2z__err_json_str(j, "message");
    details = am2z_value_find(j, "details", 7);
    if (am2z_value_type(details) != AM2Z_TYPE_OBJECT)
        details = am2z_value_find(j, "context", 7); /* the original's name for it */
    cause_json = am2z_value_find(j, "cause", 5);
    if (am2z_value_type(cause_json) == AM2Z_TYPE_OBJECT && depth < AM2Z_ERROR_MAX_CAUSES) {
        cause = am2z__error_from_json_depth(cause_json, depth + 1);
        if (!cause) return NULL; /* out of memory: no silently shortened chain */
    }
    partial = am2z_value_find(j, "partialState", 12);
    e = am2z__error_make((am2z_error_kind)kind, code,
                         am2z__strdup(message ? message : "An unknown error occurred"),
                         am2z_value_type(details) == AM2Z_TYPE_OBJECT ? am2z_value_retain(details)
                                                                      : am2z_value_object(),
                         cause,
                         am2z_value_type(partial) == AM2Z_TYPE_OBJECT ? am2z_value_retain(partial) : NULL);
    if (!e) return NULL;
    cat = am2z__err_json_str(j, "category");
    sev = am2z__err_json_str(j, "severity");
    i = am2z__name_index(cat, am2z__category_names + 1,
                         (int)(sizeof am2z__category_names / sizeof *am2z__category_names) - 1);
    if (i >= 0) e->category = (am2z_error_category)(i + 1);
    i = am2z__name_index(sev, am2z__severity_names + 1,
                         (int)(sizeof am2z__severity_names / sizeof *am2z__severity_names) - 1);
    if (i >= 0) e->severity = (am2z_severity)(i + 1);
    e->retryable = am2z_value_as_bool(am2z_value_find(j, "retryable", 9), e->retryable);
    tsv = am2z_value_find(j, "timestamp", 9);
    ts = am2z_value_as_string(tsv, &tslen);
    if (ts) {
        int64_t ms;
        if (am2z__iso8601_parse(ts, tslen, &ms)) e->created_at = ms;
    } else if (am2z_value_type(tsv) == AM2Z_TYPE_INT) {
        e->created_at = am2z_value_as_int(tsv, e->created_at);
    }
    processor = am2z__err_json_str(j, "processor");
    execution_id = am2z__err_json_str(j, "executionId");
    return am2z_error_with_location(e, processor, execution_id);
}

AM2Z_API am2z_error *am2z_error_from_json(const am2z_value *json) {
    return am2z__error_from_json_depth(json, 0);
}

/* ---- results ---- */

AM2Z_API am2z_result am2z_ok(am2z_state *state) {
    am2z_result r;
    char what[320];
    r.state = state;
    r.error = NULL;
    if (!state) {
        /* The thread's detail is why the state is NULL (the edit that failed first). */
        snprintf(what, sizeof what, "am2z_ok(NULL): %s",
                 am2z_status_detail()[0] ? am2z_status_detail() : "no state (an edit failed or memory ran out)");
        r.error = am2z__error_misuse(what);
    }
    am2z__edit_failed = 0; /* reported: a later NULL is a new failure */
    return r;
}

AM2Z_API am2z_result am2z_fail(am2z_error *error) {
    am2z_result r;
    r.state = NULL;
    r.error = error ? error : am2z__error_misuse("am2z_fail() was given a NULL error "
                                                 "(memory ran out while building it)");
    return r;
}

AM2Z_API int am2z_result_is_ok(const am2z_result *r) { return r && r->state && !r->error; }

AM2Z_API void am2z_result_clear(am2z_result *r) {
    if (!r) return;
    am2z_value_release(r->state);
    am2z_error_release(r->error);
    r->state = NULL;
    r->error = NULL;
}

/* Makes an ill-formed result well-formed: an error wins over a state, and a result with
   neither gets an error naming who produced it. */
static am2z_result am2z__result_normalize(am2z_result r, const char *empty_message) {
    if (r.error) {
        am2z_value_release(r.state);
        r.state = NULL;
    } else if (!r.state) {
        r.error = am2z__error_misuse(empty_message);
    }
    return r;
}

AM2Z_API am2z_result am2z_result_and_then(am2z_result r, am2z_result_fn fn, void *user_data) {
    r = am2z__result_normalize(r, "am2z_result_and_then() was given a result with neither state nor error");
    if (r.error || !fn) return r;
    return am2z__result_normalize(fn(r.state, user_data),
                                  "am2z_result_and_then(): the function returned neither state nor error");
}

AM2Z_API am2z_result am2z_result_map(am2z_result r, am2z_state_map_fn fn, void *user_data) {
    r = am2z__result_normalize(r, "am2z_result_map() was given a result with neither state nor error");
    if (r.error || !fn) return r;
    r.state = fn(r.state, user_data);
    if (!r.state) r.error = am2z__error_misuse("am2z_result_map(): the function returned a NULL state");
    return r;
}

AM2Z_API am2z_result am2z_result_map_error(am2z_result r, am2z_error_map_fn fn, void *user_data) {
    r = am2z__result_normalize(r, "am2z_result_map_error() was given a result with neither state nor error");
    if (!r.error || !fn) return r;
    r.error = fn(r.error, user_data);
    if (!r.error) r.error = am2z__error_misuse("am2z_result_map_error(): the function returned a NULL error");
    return r;
}

AM2Z_API am2z_result am2z_result_combine(am2z_result *results, size_t count) {
    am2z_result out;
    am2z_value *arr;
    size_t i;
    out.state = NULL;
    out.error = NULL;
    if (!results) {
        return count ? am2z_fail(am2z__error_misuse("am2z_result_combine() was given NULL results"))
                     : am2z_ok(am2z_value_array());
    }
    for (i = 0; i < count; i++) {
        results[i] = am2z__result_normalize(results[i],
                                            "am2z_result_combine(): a result had neither state nor error");
        if (results[i].error && !out.error) out.error = am2z_error_retain(results[i].error);
    }
    arr = out.error ? NULL : am2z_value_array();
    for (i = 0; i < count; i++) {
        if (arr) {
            arr = am2z_value_append(arr, "", results[i].state);
            results[i].state = NULL;
        }
        am2z_result_clear(&results[i]);
    }
    if (out.error) return out;
    return am2z_ok(arr);
}

/* ---- the edit helper ---- */

/* After a value edit on e->state: a NULL state is the first failure, whose detail
   becomes e's ValidationError (field: the path). */
static int am2z__edit_check(am2z_edit *e, const char *field) {
    char why[256]; /* a copy: building the error may record a new detail */
    am2z__edit_failed = 0; /* reported here, not to the next chain of edits */
    if (e->state) return 1;
    snprintf(why, sizeof why, "%s", am2z_status_detail());
    e->error = am2z_error_validation(field, NULL, why);
    return 0;
}

AM2Z_API am2z_edit am2z_edit_begin(const am2z_state *input) {
    am2z_edit e;
    e.state = am2z_value_retain(input);
    e.error = input ? NULL : am2z__error_misuse("am2z_edit_begin() was given a NULL input state");
    am2z__edit_failed = 0;
    return e;
}

AM2Z_API int am2z_edit_set(am2z_edit *e, const char *path, am2z_value *x) {
    if (!e || !e->state) {
        am2z_value_release(x);
        return 0;
    }
    e->state = am2z_value_set(e->state, path, x);
    return am2z__edit_check(e, path);
}

AM2Z_API int am2z_edit_append(am2z_edit *e, const char *path, am2z_value *x) {
    if (!e || !e->state) {
        am2z_value_release(x);
        return 0;
    }
    e->state = am2z_value_append(e->state, path, x);
    return am2z__edit_check(e, path);
}

AM2Z_API int am2z_edit_remove(am2z_edit *e, const char *path) {
    if (!e || !e->state) return 0;
    e->state = am2z_value_remove(e->state, path);
    return am2z__edit_check(e, path);
}

AM2Z_API int am2z_edit_merge(am2z_edit *e, const am2z_value *from) {
    if (!e || !e->state) return 0;
    e->state = am2z_value_merge(e->state, from);
    return am2z__edit_check(e, "(merge)");
}

AM2Z_API int am2z_edit_fail(am2z_edit *e, am2z_error *err) {
    if (!e || !e->state) {
        am2z_error_release(err); /* the first failure sticks */
        return 0;
    }
    am2z_value_release(e->state);
    e->state = NULL;
    e->error = err;
    return 0;
}

AM2Z_API am2z_result am2z_edit_end(am2z_edit *e) {
    am2z_result r;
    if (!e) return am2z_fail(NULL);
    r = e->state ? am2z_ok(e->state) : am2z_fail(e->error);
    e->state = NULL;
    e->error = NULL;
    return r;
}

#undef AM2Z__ERROR_KIND_COUNT

/* ==== 4. logging ====================================================================== */

/* A logger is immutable after creation. Its sink is plain configuration (stream, colour,
   callback), copied into children, so parent and child write to the same place with no
   shared mutable state; whole lines come from one fwrite per entry under flockfile. */
struct am2z_logger {
    int refs;
    am2z_log_level min_level;
    am2z_log_sink sink;
    FILE *stream;
    int color;               /* resolved: 1 or 0 */
    am2z_log_fn callback;
    void *user_data;
    char *source;            /* NULL: none */
    am2z_value *context;     /* object, never NULL */
};

AM2Z_API const char *am2z_log_level_name(am2z_log_level level) {
    switch (level) {
    case AM2Z_LOG_DEBUG: return "debug";
    case AM2Z_LOG_DEFAULT:
    case AM2Z_LOG_INFO: return "info";
    case AM2Z_LOG_WARN: return "warn";
    case AM2Z_LOG_ERROR: return "error";
    case AM2Z_LOG_OFF: return "off";
    }
    return "unknown";
}

/* A new logger with the sink settings of `config` (whose refs, source and context are
   ignored), a copy of source (NULL: none) and context (consumed); NULL when out of memory. */
static am2z_logger *am2z__logger_alloc(const am2z_logger *config, const char *source, am2z_value *context) {
    am2z_logger *lg = NULL;
    char *src = am2z__strdup(source);
    if (context && (src || !source)) lg = (am2z_logger *)am2z__malloc(sizeof *lg);
    if (!lg) {
        am2z__free(src);
        am2z_value_release(context);
        return NULL;
    }
    *lg = *config;
    lg->refs = 1;
    lg->source = src;
    lg->context = context;
    return lg;
}

AM2Z_API am2z_logger *am2z_logger_new(const am2z_logger_desc *desc, am2z_status *status) {
    am2z_logger_desc d;
    am2z_logger config;
    am2z_logger *lg;
    const char *why = NULL;
    if (desc) d = *desc;
    else memset(&d, 0, sizeof d);
    if (d.min_level == AM2Z_LOG_DEFAULT) d.min_level = AM2Z_LOG_INFO;
    if (d.sink == AM2Z_SINK_DEFAULT) d.sink = AM2Z_SINK_HUMAN;
    if ((int)d.min_level < 0 || d.min_level > AM2Z_LOG_OFF || (int)d.sink < 0 || d.sink > AM2Z_SINK_CALLBACK)
        why = "level or sink out of range";
    else if (d.sink == AM2Z_SINK_CALLBACK && !d.callback)
        why = "AM2Z_SINK_CALLBACK without a callback";
    if (why)
        return (am2z_logger *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                                  "logger_new: %s", why));
    memset(&config, 0, sizeof config);
    config.min_level = d.min_level;
    config.sink = d.sink;
    config.stream = d.stream ? d.stream : stderr;
    config.color = d.color > 0 || (d.color == 0 && d.sink == AM2Z_SINK_HUMAN && isatty(fileno(config.stream)));
    config.callback = d.callback;
    config.user_data = d.user_data;
    lg = am2z__logger_alloc(&config, d.source, am2z_value_object());
    if (!lg)
        return (am2z_logger *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS,
                                                                  "logger_new: out of memory"));
    if (status) *status = AM2Z_STATUS_OK;
    return lg;
}

AM2Z_API am2z_logger *am2z_logger_child(const am2z_logger *parent, const am2z_value *fields,
                                        const char *source) {
    am2z_value *ctx;
    if (!parent) return NULL;
    ctx = am2z_value_retain(parent->context);
    if (am2z_value_type(fields) == AM2Z_TYPE_OBJECT && am2z_value_len(fields) > 0)
        ctx = am2z_value_merge(ctx, fields);
    return am2z__logger_alloc(parent, source ? source : parent->source, ctx);
}

AM2Z_API am2z_logger *am2z_logger_retain(const am2z_logger *logger) {
    am2z_logger *lg = (am2z_logger *)(uintptr_t)logger;
    if (lg) am2z__atomic_inc(&lg->refs);
    return lg;
}

AM2Z_API void am2z_logger_release(am2z_logger *logger) {
    if (!logger || am2z__atomic_dec(&logger->refs) != 0) return;
    am2z__free(logger->source);
    am2z_value_release(logger->context);
    am2z__free(logger);
}

AM2Z_API int am2z_logger_enabled(const am2z_logger *logger, am2z_log_level level) {
    if (level == AM2Z_LOG_DEFAULT) level = AM2Z_LOG_INFO;
    return logger && logger->sink != AM2Z_SINK_SILENT && level >= AM2Z_LOG_DEBUG && level <= AM2Z_LOG_ERROR &&
           level >= logger->min_level;
}

/* Formats the message into b (NUL-terminated), cut to AM2Z_LOG_MAX_MESSAGE bytes. A cut
   message (also one cut short by a failed allocation, which keeps what fitted) ends
   with a mark so the loss is visible. */
static void am2z__log_format(am2z__vec *b, const char *fmt, va_list ap) {
    static const char mark[] = "... [truncated]";
    int n = am2z__vec_vprintf(b, AM2Z_LOG_MAX_MESSAGE, fmt, ap);
    if (n >= 0 && (size_t)n > b->n && b->n >= sizeof mark - 1)
        memcpy((char *)b->p + b->n - (sizeof mark - 1), mark, sizeof mark - 1);
}

static void am2z__log_write(const am2z_logger *lg, const char *line, size_t len) {
    flockfile(lg->stream);
    fwrite(line, 1, len, lg->stream);
    fflush(lg->stream);
    funlockfile(lg->stream);
}

static void am2z__log_human(const am2z_logger *lg, const am2z_log_entry *en) {
    static const char *const labels[] = {"INFO ", "DEBUG", "INFO ", "WARN ", "ERROR"};
    static const char *const colors[] = {"\x1b[34m", "\x1b[36m", "\x1b[34m", "\x1b[33m", "\x1b[31m"};
    char stack[512], head[13];
    am2z__vec b;
    time_t secs = (time_t)(en->logged_at / 1000);
    struct tm tm;
    char *ctx = NULL;
    size_t ctx_len = 0;
    memset(&tm, 0, sizeof tm);
    localtime_r(&secs, &tm);
    /* "HH:MM:SS.mmm " */
    am2z__iso_put(head, 2, tm.tm_hour);
    head[2] = ':';
    am2z__iso_put(head + 3, 2, tm.tm_min);
    head[5] = ':';
    am2z__iso_put(head + 6, 2, tm.tm_sec);
    head[8] = '.';
    am2z__iso_put(head + 9, 3, (int)(en->logged_at % 1000));
    head[12] = ' ';
    am2z__vec_init(&b, stack, sizeof stack);
    am2z__vec_put(&b, head, 13);
    if (en->source) {
        am2z__vec_putc(&b, '[');
        am2z__vec_puts(&b, en->source);
        am2z__vec_put(&b, "] ", 2);
    }
    if (lg->color) am2z__vec_puts(&b, colors[en->level]);
    am2z__vec_puts(&b, labels[en->level]);
    if (lg->color) am2z__vec_puts(&b, "\x1b[0m");
    am2z__vec_putc(&b, ' ');
    am2z__vec_puts(&b, en->message);
    if (am2z_value_len(en->context) > 0 &&
        (ctx = am2z_json_write(en->context, AM2Z_JSON_COMPACT, &ctx_len)) != NULL) {
        am2z__vec_putc(&b, ' ');
        am2z__vec_put(&b, ctx, ctx_len);
        am2z_free(ctx);
    }
    am2z__vec_putc(&b, '\n');
    if (!b.failed) am2z__log_write(lg, (const char *)b.p, b.n);
    am2z__vec_free(&b);
}

static void am2z__log_json(const am2z_logger *lg, const am2z_log_entry *en) {
    char ts[32];
    char *text;
    size_t len;
    am2z_value *j;
    am2z__iso8601_write(en->logged_at, ts);
    j = am2z_value_set_key(am2z_value_object(), "level", AM2Z_NTS,
                           am2z_value_string(am2z_log_level_name(en->level)));
    j = am2z_value_set_key(j, "message", AM2Z_NTS, am2z_value_string(en->message));
    j = am2z_value_set_key(j, "timestamp", AM2Z_NTS, am2z_value_string(ts));
    if (en->source) j = am2z_value_set_key(j, "source", AM2Z_NTS, am2z_value_string(en->source));
    j = am2z_value_set_key(j, "context", AM2Z_NTS, am2z_value_retain(en->context));
    text = am2z_json_write(j, AM2Z_JSON_COMPACT, &len);
    am2z_value_release(j);
    if (!text) return;
    /* The writer leaves room for its NUL, which becomes the newline. */
    text[len] = '\n';
    am2z__log_write(lg, text, len + 1);
    am2z_free(text);
}

AM2Z_API void am2z_log(const am2z_logger *logger, am2z_log_level level, const am2z_value *fields,
                       const char *fmt, ...) {
    char stack[512];
    am2z__vec msg;
    am2z_log_entry en;
    am2z_value *merged = NULL;
    va_list ap;
    if (level == AM2Z_LOG_DEFAULT) level = AM2Z_LOG_INFO;
    if (!am2z_logger_enabled(logger, level)) return;
    am2z__vec_init(&msg, stack, sizeof stack);
    stack[0] = '\0';
    if (fmt) {
        va_start(ap, fmt);
        am2z__log_format(&msg, fmt, ap);
        va_end(ap);
    }
    if (am2z_value_type(fields) == AM2Z_TYPE_OBJECT && am2z_value_len(fields) > 0)
        merged = am2z_value_merge(am2z_value_retain(logger->context), fields); /* the call's fields win */
    en.level = level;
    en.message = (const char *)msg.p;
    en.source = logger->source;
    en.context = merged ? merged : logger->context;
    en.logged_at = am2z_now_ms();
    switch (logger->sink) {
    case AM2Z_SINK_CALLBACK: logger->callback(&en, logger->user_data); break;
    case AM2Z_SINK_JSON: am2z__log_json(logger, &en); break;
    case AM2Z_SINK_DEFAULT:
    case AM2Z_SINK_HUMAN: am2z__log_human(logger, &en); break;
    case AM2Z_SINK_SILENT: break;
    }
    am2z_value_release(merged);
    am2z__vec_free(&msg);
}

/* ==== 5. processors =================================================================== */

typedef enum am2z__processor_kind {
    AM2Z__KIND_PLAIN = 0, AM2Z__KIND_CHAIN, AM2Z__KIND_PARALLEL, AM2Z__KIND_ROUTER, AM2Z__KIND_BATCH
} am2z__processor_kind;

/* Immutable after construction except for the reference count. desc is a private copy:
   its strings are owned, desc.dependencies points into children (plain processors).
   children holds one reference to every processor that must be registered with this
   one: the dependencies of a plain processor; the steps of a chain; the branches of a
   parallel; the route targets (in route order) then the fallback of a router; the
   target of a batch. Composites call their children by name through ctx->ops. */
struct am2z_processor {
    int refcount;
    am2z__processor_kind kind;
    am2z_processor_desc desc;
    am2z_processor **children;
    size_t child_count;
    /* parallel */
    am2z_merge_fn merge;
    void *merge_user_data;
    /* router: route_keys[i] selects children[i]; the fallback (if any) is the last child */
    am2z_route_fn select;
    void *select_user_data;
    char **route_keys;
    size_t route_count;
    am2z_processor *fallback;   /* borrowed from children */
    /* batch: the target is children[0] */
    am2z_value *payloads;       /* array of objects fixed at build time, or NULL */
    char *items_path;
    char *results_path;
    char *errors_path;          /* settle-all: results_path + "Errors" */
    am2z_batch_mode mode;
    /* chain: the first step_count children are its steps, then its compensations;
       compensations (NULL when none) has step_count entries, borrowed from children */
    size_t step_count;
    am2z_processor **compensations;
    /* freed with the processor (a wait step's settings, section 7d) */
    void *owned;
    void (*owned_free)(void *owned);
};

/* Every processor that must be registered together with p (borrowed; *out stays valid
   while p is alive). The registry walks this recursively for registration and cycle
   detection. */
AM2Z__PRIVATE size_t am2z__processor_children(const am2z_processor *p, am2z_processor *const **out) {
    if (out) *out = p ? p->children : NULL;
    return p ? p->child_count : 0;
}

/* Small helpers shared by sections 5 and 6. */

/* A string value, or JSON null for NULL (so object builders never lose a member). */
static am2z_value *am2z__proc_str(const char *s) {
    return s ? am2z_value_string(s) : am2z_value_null();
}

/* The error for an allocation failure inside a processor or composite. */
static am2z_result am2z__proc_oom(void) {
    return am2z_fail(am2z_error_resource("memory", 0, 0));
}

/* Releases the count references of a processor array handed over to a constructor
   that fails (NULL entries skipped). */
static void am2z__proc_release_all(am2z_processor *const *ps, size_t count) {
    size_t i;
    for (i = 0; ps && i < count; i++) am2z_processor_release(ps[i]);
}

/* The index of the first NULL of ps[0..count), or count. */
static size_t am2z__proc_first_null(am2z_processor *const *ps, size_t count) {
    size_t i;
    for (i = 0; i < count && ps[i]; i++) {
    }
    return i;
}

/* Records that child `what` `index` (1-based) of constructor `kind` 'name' is NULL,
   keeping the detail of the constructor that failed to make it. */
static am2z_status am2z__proc_null_child(const char *kind, const char *name, const char *what, size_t index) {
    const char *why = am2z_status_detail();
    return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "%s '%s': %s %lu is NULL%s%s%s", kind,
                      name ? name : "(null)", what, (unsigned long)index, why[0] ? " (" : "", why, why[0] ? ")" : "");
}

/* Why name is not a legal processor name, or NULL when it is. */
static const char *am2z__proc_name_why(const char *name) {
    size_t n = 0;
    if (!name) return "no name";
    for (; name[n]; n++) {
        char c = name[n];
        if (n >= AM2Z_NAME_MAX) return "name is longer than AM2Z_NAME_MAX bytes";
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return "name has a character outside [A-Za-z0-9_.-]";
    }
    return n ? NULL : "empty name";
}

static void am2z__processor_free(am2z_processor *p) {
    size_t i;
    for (i = 0; i < p->child_count; i++) am2z_processor_release(p->children[i]);
    for (i = 0; i < p->route_count; i++) am2z__free(p->route_keys[i]);
    am2z__free(p->children);
    am2z__free(p->route_keys);
    am2z__free((void *)p->desc.name);
    am2z__free((void *)p->desc.description);
    am2z_value_release(p->payloads);
    am2z__free(p->items_path);
    am2z__free(p->results_path);
    am2z__free(p->errors_path);
    am2z__free(p->compensations);
    if (p->owned_free) p->owned_free(p->owned);
    am2z__free(p);
}

/* A processor of `kind` with copies of name and description that takes over the count
   children (all non-NULL, checked by the callers; released on failure). NULL when out
   of memory. */
static am2z_processor *am2z__processor_alloc(am2z__processor_kind kind, const char *name,
                                             const char *description, am2z_processor *const *children,
                                             size_t count) {
    am2z_processor *p = (am2z_processor *)am2z__malloc(sizeof *p);
    if (!p) {
        am2z__proc_release_all(children, count);
        return NULL;
    }
    memset(p, 0, sizeof *p);
    p->refcount = 1;
    p->kind = kind;
    p->desc.name = am2z__strdup(name);
    p->desc.description = description ? am2z__strdup(description) : NULL;
    if (count) {
        p->children = (am2z_processor **)am2z__malloc(count * sizeof *p->children);
        if (p->children) {
            memcpy(p->children, children, count * sizeof *p->children);
            p->child_count = count;
        } else {
            am2z__proc_release_all(children, count);
        }
    }
    if (!p->desc.name || (description && !p->desc.description) || (count && !p->children)) {
        am2z__processor_free(p);
        return NULL;
    }
    return p;
}

/* Why a breaker policy is refused, or NULL. A field set without failure_threshold would
   be silently ignored, so it is refused too. */
static const char *am2z__breaker_invalid(const am2z_breaker_policy *b) {
    if (b->failure_threshold < 0 || b->window_ms < 0 || b->open_ms < 0 || b->half_open_probes < 0)
        return "negative breaker failure_threshold, window_ms, open_ms or half_open_probes";
    if (b->failure_threshold == 0 && (b->window_ms || b->open_ms || b->half_open_probes))
        return "breaker window_ms, open_ms or half_open_probes set without failure_threshold (0: no breaker)";
    if (b->failure_threshold > AM2Z_BREAKER_MAX_THRESHOLD || b->half_open_probes > AM2Z_BREAKER_MAX_THRESHOLD)
        return "breaker failure_threshold or half_open_probes above AM2Z_BREAKER_MAX_THRESHOLD";
    if (b->window_ms > AM2Z_BREAKER_MAX_MS || b->open_ms > AM2Z_BREAKER_MAX_MS)
        return "breaker window_ms or open_ms above AM2Z_BREAKER_MAX_MS";
    return NULL;
}

/* Why desc cannot make a processor, or NULL when it can. */
static const char *am2z__processor_invalid(const am2z_processor_desc *desc) {
    const am2z_retry_policy *rp = &desc->retry;
    const char *why = am2z__proc_name_why(desc->name);
    if (why) return why;
    if (!desc->fn) return "no fn";
    if (desc->timeout_ms < 0) return "negative timeout_ms";
    if (rp->max_attempts < 0 || rp->max_delay_ms < 0 || !(rp->multiplier >= 0))
        return "negative retry max_attempts, max_delay_ms or multiplier";
    if (!(rp->jitter >= 0 && rp->jitter <= 1)) return "retry jitter outside 0..1";
    if (desc->queue.concurrency < 0 || desc->queue.priority < 0 || desc->queue.rate_limit_per_minute < 0 ||
        desc->queue.delay_ms < 0)
        return "negative queue concurrency, priority, rate_limit_per_minute or delay_ms";
    if (desc->queue.global_concurrency < 0 || desc->queue.global_concurrency > AM2Z_MAX_CONCURRENCY)
        return "queue global_concurrency outside 0..AM2Z_MAX_CONCURRENCY";
    if (desc->dependency_count && !desc->dependencies) return "dependency_count without dependencies";
    if (desc->deadlines < AM2Z_DEADLINES_DEFAULT || desc->deadlines > AM2Z_DEADLINES_COOPERATIVE)
        return "deadlines is not an am2z_deadlines value";
    return am2z__breaker_invalid(&desc->breaker);
}

AM2Z_API am2z_processor *am2z_processor_new(const am2z_processor_desc *desc, am2z_status *status) {
    am2z_processor *p;
    am2z_processor *const *deps = desc ? desc->dependencies : NULL;
    size_t ndeps = deps ? desc->dependency_count : 0, bad;
    const char *why;
    if (!desc) return (am2z_processor *)am2z__put_status(status,
            am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "processor: NULL desc"));
    bad = am2z__proc_first_null(deps, ndeps);
    if (bad < ndeps) {
        am2z__proc_null_child("processor", desc->name, "dependency", bad + 1);
        am2z__proc_release_all(deps, ndeps);
        return (am2z_processor *)am2z__put_status(status, AM2Z_STATUS_INVALID_ARGUMENT);
    }
    if ((why = am2z__processor_invalid(desc)) != NULL) {
        am2z__proc_release_all(deps, ndeps);
        return (am2z_processor *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "processor '%s': %s",
                           desc->name ? desc->name : "(null)", why));
    }
    p = am2z__processor_alloc(AM2Z__KIND_PLAIN, desc->name, desc->description, deps, ndeps);
    if (!p)
        return (am2z_processor *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "processor '%s': out of memory", desc->name));
    if (status) *status = AM2Z_STATUS_OK;
    p->desc.fn = desc->fn;
    p->desc.timeout_ms = desc->timeout_ms;
    p->desc.retry = desc->retry;
    p->desc.queue = desc->queue;
    p->desc.user_data = desc->user_data;
    p->desc.deadlines = desc->deadlines;
    p->desc.breaker = desc->breaker;
    if (p->desc.breaker.failure_threshold) { /* defaults resolved here, once */
        if (!p->desc.breaker.window_ms) p->desc.breaker.window_ms = 60000;
        if (!p->desc.breaker.open_ms) p->desc.breaker.open_ms = 30000;
        if (!p->desc.breaker.half_open_probes) p->desc.breaker.half_open_probes = 1;
    }
    p->desc.dependencies = p->children;
    p->desc.dependency_count = p->child_count;
    return p;
}

AM2Z_API am2z_processor *am2z_processor_retain(const am2z_processor *p) {
    am2z_processor *q = (am2z_processor *)p; /* the count is the one mutable field */
    if (q) am2z__atomic_inc(&q->refcount);
    return q;
}

AM2Z_API void am2z_processor_release(am2z_processor *p) {
    if (p && am2z__atomic_dec(&p->refcount) == 0) am2z__processor_free(p);
}

AM2Z_API const char *am2z_processor_name(const am2z_processor *p) { return p ? p->desc.name : NULL; }

AM2Z_API const am2z_processor_desc *am2z_processor_desc_of(const am2z_processor *p) {
    return p ? &p->desc : NULL;
}

/* A uniform double in [0, 1) for retry jitter: a lock-free splitmix64 sequence, so
   threads never share hidden libc state (rand() is not thread-safe). */
static uint64_t am2z__proc_rng;
static double am2z__proc_random01(void) {
    uint64_t z = am2z__atomic_add(&am2z__proc_rng, (uint64_t)0x9E3779B97F4A7C15ULL, AM2Z__MO_RELAXED);
    z ^= (uint64_t)am2z_monotonic_ns();
    z = (z ^ (z >> 30)) * (uint64_t)0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * (uint64_t)0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* An open breaker's error whose open time outlasts a backoff of delay ms: retrying
   then would only fail fast again (am2z_breaker_policy, RETRIES). */
static int am2z__breaker_outlasts(const am2z_error *err, double delay) {
    return err && err->kind == AM2Z_ERROR_CIRCUIT_OPEN &&
           (double)am2z_value_as_int(am2z_value_get(err->details, "retryAfterMs"), 0) > delay;
}

AM2Z_API int64_t am2z_retry_delay_ms(const am2z_retry_policy *policy, const am2z_error *err, int attempt) {
    int max_attempts = policy && policy->max_attempts > 0 ? policy->max_attempts : 1;
    double base, mult, cap, d, jitter;
    int i;
    if (attempt < 1) attempt = 1;
    if (attempt >= max_attempts) return -1;
    if (policy->should_retry) {
        if (!policy->should_retry(err, attempt, policy->user_data)) return -1;
    } else if (!err || !err->retryable) {
        return -1;
    }
    if (policy->delay_ms < 0) return am2z__breaker_outlasts(err, 0) ? -1 : 0;
    base = policy->delay_ms > 0 ? (double)policy->delay_ms : 100.0;
    mult = policy->multiplier > 0 ? policy->multiplier : 2.0;
    cap = policy->max_delay_ms > 0 ? (double)policy->max_delay_ms : 30000.0;
    switch (policy->backoff) {
    case AM2Z_BACKOFF_FIXED: d = base; break;
    case AM2Z_BACKOFF_LINEAR: d = base * (double)attempt; break;
    case AM2Z_BACKOFF_DEFAULT:
    case AM2Z_BACKOFF_EXPONENTIAL:
    default: /* a loop rather than pow(): no libm, and it stops once past the cap */
        for (d = base, i = 1; i < attempt && d <= cap; i++) d *= mult;
        break;
    }
    if (!(d <= cap)) d = cap; /* also catches overflow to infinity */
    jitter = policy->jitter;
    if (jitter > 0) d -= d * (jitter < 1 ? jitter : 1) * am2z__proc_random01();
    if (am2z__breaker_outlasts(err, d)) return -1;
    return d > 0 ? (int64_t)d : 0;
}

static int64_t am2z__proc_sat_add(int64_t a, int64_t b) {
    if (b <= 0) return a;
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

AM2Z_API int64_t am2z_processor_timeout_ms(const am2z_processor *p, int64_t default_ms) {
    int64_t t = 0, c;
    size_t i;
    if (!p) return default_ms;
    if (p->desc.timeout_ms > 0) return p->desc.timeout_ms;
    switch (p->kind) {
    case AM2Z__KIND_CHAIN:
        for (i = 0; i < p->child_count; i++)
            t = am2z__proc_sat_add(t, am2z_processor_timeout_ms(p->children[i], default_ms));
        return t > 0 ? t : default_ms;
    case AM2Z__KIND_PARALLEL:
        for (i = 0; i < p->child_count; i++) {
            c = am2z_processor_timeout_ms(p->children[i], default_ms);
            if (c > t) t = c;
        }
        return t > 0 ? t : default_ms;
    case AM2Z__KIND_PLAIN:
    case AM2Z__KIND_ROUTER:
    case AM2Z__KIND_BATCH:
        break;
    }
    return default_ms;
}

/* ---- durable scopes (section 7d) ----
   A durable execution's chains find their checkpoints through a thread-local scope:
   the runtime sets the root at a durable top-level attempt, a chain sets one per step
   it calls. Nested calls made with am2z_ctx_call run on the calling thread on every
   runtime, so the scope follows the chain's steps; calls made several at a time (a
   parallel, a batch, call_many) run anywhere and see no scope, so what they reach is
   not checkpointed (documented in 7d). */
typedef struct am2z__dreg am2z__dreg;
typedef struct am2z__dx {
    int refs;                  /* atomic */
    am2z__dreg *reg;           /* borrowed: the runtime's registry outlives its jobs */
    am2z_store *store;         /* borrowed */
    char id[AM2Z_DURABLE_MAX_ID + 1];
    int parked;                /* atomic: a wait step parked the current attempt */
    int64_t park_until;        /* with parked: epoch ms when the wait times out, 0: never */
    int finished;              /* atomic: the outcome is recorded */
} am2z__dx;

typedef struct am2z__dscope {
    am2z__dx *dx;
    char path[AM2Z_DURABLE_MAX_PATH + 1]; /* the chain position P of the step run ("": root) */
    long step;                 /* the step being run; -1 at the root */
    unsigned calls;            /* chains reached from this step so far */
    char key[AM2Z_DURABLE_MAX_ID + AM2Z_DURABLE_MAX_PATH + 32]; /* its idempotency key */
} am2z__dscope;

static AM2Z__TLS am2z__dscope *am2z__dur_cur;

/* Swaps the calling thread's scope for s; returns the previous one (to restore). */
AM2Z__PRIVATE void *am2z__dur_swap(void *s) {
    am2z__dscope *old = am2z__dur_cur;
    am2z__dur_cur = (am2z__dscope *)s;
    return old;
}

/* Fills root as the root scope of dx and makes it current; returns the previous one. */
AM2Z__PRIVATE void *am2z__dur_enter_root(void *root, am2z__dx *dx) {
    am2z__dscope *r = (am2z__dscope *)root;
    if (!dx) return am2z__dur_swap(NULL);
    memset(r, 0, sizeof *r);
    r->dx = dx;
    r->step = -1;
    am2z__atomic_store(&dx->parked, 0, AM2Z__MO_SEQ_CST);
    return am2z__dur_swap(r);
}

/* "x/<id>/<kind>/<P>/<tail>" into buf; 0 when it does not fit. */
static int am2z__dur_key(char *buf, size_t cap, const am2z__dx *dx, const char *kind, const char *P,
                         const char *tail) {
    int n = snprintf(buf, cap, "x/%s/%s/%s/%s", dx->id, kind, P, tail);
    return n > 0 && (size_t)n < cap && (size_t)n <= AM2Z_STORE_MAX_KEY;
}

/* A permanent failure for a record that could not be read or written (st's detail is
   the thread's). */
static am2z_error *am2z__dur_store_error(am2z_status st, const char *op, const char *key) {
    char what[AM2Z_STORE_MAX_KEY + 64];
    snprintf(what, sizeof what, "durable %s '%s'", op, key);
    return am2z_error_with_retryable(am2z_error_from_status(st, what), 0);
}

/* Writes v as JSON under key; OK or the failure (detail set). */
static am2z_status am2z__dur_put_json(am2z_store *store, const char *key, const am2z_value *v) {
    size_t len = 0;
    char *text = am2z_json_write(v, 0, &len);
    am2z_status st;
    if (!text) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "durable: cannot write '%s' as JSON", key);
    st = am2z_store_put(store, key, text, len);
    am2z__free(text);
    if (st != AM2Z_STATUS_OK) { /* a custom store may not say why: the status and key at least */
        char why[256];
        snprintf(why, sizeof why, "%s", am2z_status_last() == st ? am2z_status_detail() : am2z_status_string(st));
        return am2z__fail(st, AM2Z_NTS, "durable: write '%s': %s", key, why);
    }
    return st;
}

/* Reads the JSON value under key: OK with *out, NOT_FOUND, or the failure. */
static am2z_status am2z__dur_get_json(am2z_store *store, const char *key, am2z_value **out) {
    void *text = NULL;
    size_t len = 0;
    am2z_status st = am2z_store_get(store, key, &text, &len);
    *out = NULL;
    if (st != AM2Z_STATUS_OK) return st;
    *out = am2z_json_parse((const char *)text, len, NULL, &st);
    am2z__free(text);
    if (!*out && st == AM2Z_STATUS_OK) st = AM2Z_STATUS_NO_MEMORY;
    return st;
}

AM2Z_API const char *am2z_ctx_idempotency_key(const am2z_ctx *ctx) {
    am2z__dscope *s = am2z__dur_cur;
    (void)ctx;
    return s && s->dx && s->step >= 0 ? s->key : NULL;
}

/* ---- context ---- */

AM2Z_API const am2z_meta *am2z_ctx_meta(const am2z_ctx *ctx) { return ctx ? &ctx->meta : NULL; }

AM2Z_API const am2z_logger *am2z_ctx_logger(const am2z_ctx *ctx) {
    if (!ctx) return NULL;
    return ctx->ops && ctx->ops->logger ? ctx->ops->logger(ctx) : ctx->logger;
}

/* Non-zero when an event emitted through ctx would reach someone, so composites skip
   building payloads nobody reads (runtimes without the hint: always). */
static int am2z__ctx_wants(const am2z_ctx *ctx, const char *event) {
    return ctx && ctx->ops && ctx->ops->emit && (!ctx->ops->wants || ctx->ops->wants(ctx, event));
}

AM2Z_API void *am2z_ctx_user_data(const am2z_ctx *ctx) {
    return ctx && ctx->processor ? ctx->processor->desc.user_data : NULL;
}

/* The clock ctx->deadline_ns is on: the runtime's own, else the monotonic clock. */
static int64_t am2z__ctx_clock_ns(const am2z_ctx *ctx) {
    return ctx->ops && ctx->ops->now_ns ? ctx->ops->now_ns(ctx) : am2z_monotonic_ns();
}

AM2Z_API int am2z_ctx_cancelled(const am2z_ctx *ctx) {
    if (!ctx) return 0;
    /* A passed deadline is a timeout even before the runtime has noticed it. */
    if (ctx->deadline_ns && am2z__ctx_clock_ns(ctx) >= ctx->deadline_ns) return 1;
    return ctx->ops && ctx->ops->cancelled ? ctx->ops->cancelled(ctx) : 0;
}

AM2Z_API int64_t am2z_ctx_remaining_ms(const am2z_ctx *ctx) {
    int64_t left;
    if (!ctx || !ctx->deadline_ns) return INT64_MAX;
    left = ctx->deadline_ns - am2z__ctx_clock_ns(ctx);
    return left > 0 ? left / 1000000 : 0;
}

AM2Z_API int64_t am2z_ctx_now_ms(const am2z_ctx *ctx) {
    return ctx && ctx->ops && ctx->ops->now_ns ? ctx->ops->now_ns(ctx) / 1000000 : am2z_now_ms();
}

/* Makes r hold exactly one of state / error: neither becomes a ProcessorExecutionError,
   both keeps the error; an error without a location gets processor / execution_id. */
static am2z_result am2z__proc_normalize(am2z_result r, const char *processor, const char *execution_id) {
    char *exec_copy;
    if (!r.state && !r.error) {
        am2z_error *cause = am2z_error_business("INVALID_RESULT", AM2Z_SEVERITY_HIGH,
                                                "returned neither a state nor an error");
        return am2z_fail(am2z_error_execution(processor, execution_id, cause, NULL));
    }
    if (r.state && r.error) {
        am2z_value_release(r.state);
        r.state = NULL;
    }
    if (r.error && !r.error->processor) {
        /* the error may own the id it already has: copy it before the edit releases it */
        exec_copy = am2z__strdup(r.error->execution_id ? r.error->execution_id : execution_id);
        r.error = am2z_error_with_location(r.error, processor, exec_copy);
        am2z__free(exec_copy);
        if (!r.error) return am2z_fail(NULL);
    }
    return r;
}

AM2Z_API void am2z_ctx_call_many(am2z_ctx *ctx, const char *const *processors, const am2z_state *const *inputs,
                                 size_t count, am2z_result *results) {
    size_t i;
    if (!results) return;
    for (i = 0; i < count; i++) results[i].state = NULL, results[i].error = NULL;
    if (!ctx || !ctx->ops || !ctx->ops->call_many || !processors || !inputs) {
        for (i = 0; i < count; i++)
            results[i] = am2z_fail(am2z_error_configuration("ctx", "nested calls need a runtime context"));
        return;
    }
    if (count == 0) return;
    if (count > 1 && am2z__dur_cur) { /* run anywhere: no durable scope (7d) */
        void *scope = am2z__dur_swap(NULL);
        ctx->ops->call_many(ctx, processors, inputs, count, results);
        am2z__dur_swap(scope);
    } else {
        ctx->ops->call_many(ctx, processors, inputs, count, results);
    }
    for (i = 0; i < count; i++)
        results[i] = am2z__proc_normalize(results[i], processors[i], NULL);
}

AM2Z_API am2z_result am2z_ctx_call(am2z_ctx *ctx, const char *processor, const am2z_state *input) {
    am2z_result r;
    am2z_ctx_call_many(ctx, &processor, &input, 1, &r);
    return r;
}

AM2Z_API void am2z_ctx_emit(am2z_ctx *ctx, const char *event, am2z_value *data) {
    if (ctx && event && ctx->ops && ctx->ops->emit) ctx->ops->emit(ctx, event, data);
    else am2z_value_release(data);
}

AM2Z_API void am2z_ctx_progress(am2z_ctx *ctx, double progress) {
    am2z_value *d;
    if (!am2z__ctx_wants(ctx, "processor:progress")) return;
    d = am2z_value_set(am2z_value_object(), "processorName", am2z__proc_str(ctx->meta.processor));
    d = am2z_value_set(d, "executionId", am2z__proc_str(ctx->meta.execution_id));
    d = am2z_value_set(d, "progress", am2z_value_double(progress));
    if (d) am2z_ctx_emit(ctx, "processor:progress", d);
}

/* Tracing hooks (section 7f), used by invoke (7b) and the merge (6). */
static void am2z__trace_open(am2z_ctx *ctx);
static void am2z__trace_close(am2z_ctx *ctx, const am2z_error *err);
static void am2z__trace_conflicts(am2z_ctx *ctx, size_t n);

/* ==== 6. composition ================================================================== */

/* A growable byte buffer for descriptions and JSON Pointer paths. A failed append sets
   `failed` and keeps the buffer as it was, so callers check once at the end. */
typedef struct am2z__proc_buf {
    char *data;
    size_t len, cap;
    int failed;
} am2z__proc_buf;

static void am2z__proc_buf_add(am2z__proc_buf *b, const char *s, size_t n) {
    size_t cap;
    char *d;
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        d = (char *)am2z__realloc(b->data, cap);
        if (!d) {
            b->failed = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void am2z__proc_buf_str(am2z__proc_buf *b, const char *s) { am2z__proc_buf_add(b, s, strlen(s)); }

/* Appends "/key" with JSON Pointer escapes ("~" -> "~0", "/" -> "~1"). */
static void am2z__proc_buf_ptr(am2z__proc_buf *b, const char *key, size_t len) {
    size_t i, start = 0;
    am2z__proc_buf_add(b, "/", 1);
    for (i = 0; i < len; i++) {
        if (key[i] != '~' && key[i] != '/') continue;
        am2z__proc_buf_add(b, key + start, i - start);
        am2z__proc_buf_add(b, key[i] == '~' ? "~0" : "~1", 2);
        start = i + 1;
    }
    am2z__proc_buf_add(b, key + start, len - start);
}

/* Builds "<prefix><name0><sep><name1>...<suffix>" from the children's names (all
   non-NULL). NULL when out of memory. */
static char *am2z__proc_describe(const char *prefix, am2z_processor *const *children, size_t count,
                                 const char *sep, const char *suffix) {
    am2z__proc_buf b;
    size_t i;
    memset(&b, 0, sizeof b);
    am2z__proc_buf_str(&b, prefix);
    for (i = 0; i < count; i++) {
        if (i) am2z__proc_buf_str(&b, sep);
        am2z__proc_buf_str(&b, children[i]->desc.name);
    }
    am2z__proc_buf_str(&b, suffix);
    if (b.failed) {
        am2z__free(b.data);
        return NULL;
    }
    return b.data;
}

/* Checks what every composite needs (children all non-NULL first, so the detail of a
   failed child constructor survives; then name, count, timeout). On failure releases
   the children and returns the status with its detail recorded. */
static am2z_status am2z__composite_check(const char *kind, const char *name, const char *child,
                                         am2z_processor *const *children, size_t count, int64_t timeout_ms) {
    size_t bad = am2z__proc_first_null(children, count);
    const char *why = NULL;
    am2z_status st;
    if (bad < count) {
        st = am2z__proc_null_child(kind, name, child, bad + 1);
        am2z__proc_release_all(children, count);
        return st;
    }
    if (!count || !children) why = "no children";
    else if (timeout_ms < 0) why = "negative timeout_ms";
    else why = am2z__proc_name_why(name);
    if (!why) return AM2Z_STATUS_OK;
    am2z__proc_release_all(children, count);
    return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "%s '%s': %s", kind, name ? name : "(null)", why);
}

static am2z_result am2z__composite_fn(am2z_ctx *ctx, const am2z_state *input);

/* A checked composite that takes over the children, with the given description or else
   the generated one (freed here). Every composite runs through am2z__composite_fn,
   which dispatches on its kind. NULL (children released) when out of memory. */
static am2z_processor *am2z__composite_new(am2z__processor_kind kind, const char *name, const char *description,
                                           char *generated, am2z_processor *const *children, size_t count,
                                           int64_t timeout_ms, am2z_status *status) {
    am2z_processor *p = NULL;
    if (description || generated)
        p = am2z__processor_alloc(kind, name, description ? description : generated, children, count);
    else
        am2z__proc_release_all(children, count);
    am2z__free(generated);
    if (!p) return (am2z_processor *)am2z__put_status(status,
            am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "'%s': out of memory", name));
    p->desc.timeout_ms = timeout_ms;
    p->desc.fn = am2z__composite_fn;
    if (status) *status = AM2Z_STATUS_OK;
    return p;
}

/* A ProcessorExecutionError of composite p wrapping cause (consumed) with partial
   (consumed, may be NULL) and the members of details (consumed, may be NULL). */
static am2z_result am2z__composite_fail(const am2z_processor *p, am2z_ctx *ctx, am2z_error *cause,
                                        am2z_state *partial, am2z_value *details) {
    am2z_error *err = am2z_error_execution(p->desc.name, ctx ? ctx->meta.execution_id : NULL, cause, partial);
    if (err && details) err = am2z_error_with_details(err, details);
    am2z_value_release(details);
    return am2z_fail(err);
}

/* ---- chain ---- */

AM2Z_API am2z_processor *am2z_chain_new(const am2z_chain_desc *desc, am2z_status *status) {
    am2z_status st;
    am2z_processor **all, *p;
    size_t i, n, extra = 0;
    if (!desc) return (am2z_processor *)am2z__put_status(status,
            am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "chain: NULL desc"));
    for (i = 0; desc->compensations && desc->steps && i < desc->count; i++) extra += desc->compensations[i] != NULL;
    st = am2z__composite_check("chain", desc->name, "step", desc->steps, desc->count, desc->timeout_ms);
    if (st != AM2Z_STATUS_OK) {
        if (desc->steps) am2z__proc_release_all(desc->compensations, desc->count);
        return (am2z_processor *)am2z__put_status(status, st);
    }
    /* the compensations follow the steps among the children, so registration and
       the processor's lifetime take care of them */
    n = desc->count;
    all = (am2z_processor **)am2z__malloc((n + extra) * sizeof *all);
    if (!all) {
        am2z__proc_release_all(desc->steps, n);
        am2z__proc_release_all(desc->compensations, n);
        return (am2z_processor *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "chain '%s': out of memory", desc->name));
    }
    memcpy(all, desc->steps, n * sizeof *all);
    for (i = 0, extra = n; desc->compensations && i < n; i++)
        if (desc->compensations[i]) all[extra++] = desc->compensations[i];
    p = am2z__composite_new(AM2Z__KIND_CHAIN, desc->name, desc->description,
                            desc->description ? NULL
                                              : am2z__proc_describe("Sequential chain: ", desc->steps, n, " -> ", ""),
                            all, extra, desc->timeout_ms, status);
    am2z__free(all);
    if (!p) return NULL;
    p->step_count = n;
    if (extra > n) {
        p->compensations = (am2z_processor **)am2z__malloc(n * sizeof *p->compensations);
        if (!p->compensations) {
            am2z_processor_release(p);
            return (am2z_processor *)am2z__put_status(status,
                    am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "chain '%s': out of memory", desc->name));
        }
        for (i = 0, extra = n; i < n; i++)
            p->compensations[i] = desc->compensations[i] ? p->children[extra++] : NULL;
    }
    return p;
}

/* The chain's position P (see 7d RECORDS) under scope s into buf; 0 when too long. */
static int am2z__chain_position(am2z__dscope *s, char *buf) {
    int n = s->step < 0 ? snprintf(buf, AM2Z_DURABLE_MAX_PATH + 1, "%u", s->calls)
                        : snprintf(buf, AM2Z_DURABLE_MAX_PATH + 1, "%s.%ld.%u", s->path, s->step, s->calls);
    s->calls++;
    return n > 0 && n <= AM2Z_DURABLE_MAX_PATH;
}

/* Makes t the scope of step k of the chain at P (undo: its compensation). */
static void am2z__chain_scope(am2z__dscope *t, am2z__dx *dx, const char *P, size_t k, int undo) {
    memset(t, 0, sizeof *t);
    t->dx = dx;
    memcpy(t->path, P, strlen(P) + 1);
    t->step = (long)k;
    snprintf(t->key, sizeof t->key, "%s/%s/%lu%s", dx->id, P, (unsigned long)k, undo ? "/undo" : "");
}

/* The state after step k of the durable chain at P: OK with *out, or a failure. */
static am2z_status am2z__chain_load(am2z__dx *dx, const char *P, size_t k, am2z_state **out, char *key) {
    char tail[32];
    void *text = NULL;
    size_t len = 0;
    am2z_status st;
    snprintf(tail, sizeof tail, "%lu", (unsigned long)k);
    *out = NULL;
    if (!am2z__dur_key(key, AM2Z_STORE_MAX_KEY + 1, dx, "c", P, tail))
        return am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "durable: key too long");
    st = am2z_store_get(dx->store, key, &text, &len);
    if (st != AM2Z_STATUS_OK) return st;
    *out = am2z_state_parse(NULL, (const char *)text, len, &st);
    am2z__free(text);
    return st;
}

/* Chain p's state before step i: the input, or the state after step i - 1. */
static am2z_state *am2z__chain_before(am2z__dx *dx, const char *P, am2z_state **after, size_t i,
                                      const am2z_state *input) {
    char key[AM2Z_STORE_MAX_KEY + 1];
    am2z_state *s = NULL;
    if (i == 0) return am2z_value_retain(input);
    if (after && after[i - 1]) return am2z_value_retain(after[i - 1]);
    if (dx) am2z__chain_load(dx, P, i - 1, &s, key);
    return s;
}

/* Runs the compensations of steps next .. 0 (see COMPENSATION): each result appended to
   results (consumed, returned). Durable: the progress record is written after each. */
static am2z_value *am2z__chain_compensate(const am2z_processor *p, am2z_ctx *ctx, am2z__dx *dx, const char *P,
                                          am2z_state **after, const am2z_state *input, size_t failed,
                                          long next, const am2z_value *err_json, am2z_value *results) {
    am2z__dscope *outer = am2z__dur_cur, t;
    char key[AM2Z_STORE_MAX_KEY + 1];
    long j;
    for (j = next; j >= 0; j--) {
        am2z_processor *c = p->compensations[j];
        am2z_state *s;
        am2z_result r;
        am2z_value *one;
        if (!c) continue;
        s = am2z__chain_before(dx, P, after, (size_t)j + 1, input);
        one = am2z_value_set(am2z_value_object(), "step", am2z_value_int(j));
        one = am2z_value_set(one, "processor", am2z_value_string(c->desc.name));
        if (s) {
            if (dx) {
                am2z__chain_scope(&t, dx, P, (size_t)j, 1);
                am2z__dur_cur = &t;
            }
            r = am2z_ctx_call(ctx, c->desc.name, s);
            am2z__dur_cur = outer;
        } else {
            r = am2z_fail(am2z_error_validation("state", NULL, "the state after this step is lost"));
        }
        if (dx && am2z_ctx_cancelled(ctx)) { /* stopped: no result to record, a resume runs it again */
            am2z_result_clear(&r);
            am2z_value_release(s);
            am2z_value_release(one);
            break;
        }
        one = am2z_value_set(one, "ok", am2z_value_bool(r.state != NULL));
        if (r.error) one = am2z_value_set(one, "error", am2z_error_to_json(r.error));
        am2z_result_clear(&r);
        am2z_value_release(s);
        results = am2z_value_append(results, "", one);
        if (dx && am2z__dur_key(key, sizeof key, dx, "c", P, "undo")) {
            am2z_value *rec = am2z_value_set(am2z_value_object(), "failedStep", am2z_value_int((int64_t)failed));
            rec = am2z_value_set(rec, "error", am2z_value_retain(err_json));
            rec = am2z_value_set(rec, "next", am2z_value_int(j - 1));
            rec = am2z_value_set(rec, "results", am2z_value_retain(results));
            /* a record that cannot be written costs a re-run of this compensation after
               a crash; the compensations go on either way */
            if (rec) am2z__dur_put_json(dx->store, key, rec);
            am2z_value_release(rec);
        }
    }
    return results;
}

/* Ends chain p with step i's failure err (consumed): compensates steps next .. 0 (next
   is i - 1, or i when step i succeeded but its checkpoint failed) when p has
   compensations there and the chain was not cancelled, then fails with the details
   (results: compensations already run, consumed, NULL: none yet; partial: the state
   before step i, consumed). */
static am2z_result am2z__chain_failed(const am2z_processor *p, am2z_ctx *ctx, am2z__dx *dx, const char *P,
                                      am2z_state **after, const am2z_state *input, size_t i, am2z_error *err,
                                      am2z_state *partial, long next, am2z_value *results) {
    char key[AM2Z_STORE_MAX_KEY + 1];
    const char *step = p->children[i]->desc.name;
    am2z_value *d, *ej = NULL;
    size_t j;
    int any = 0, ok = 1;
    for (j = 0; p->compensations && (long)j <= next; j++) any |= p->compensations[j] != NULL;
    if (any && !(dx && am2z__atomic_load(&dx->parked, AM2Z__MO_SEQ_CST)) && !am2z_ctx_cancelled(ctx) &&
        (!err || err->kind != AM2Z_ERROR_CANCELLED)) {
        ej = am2z_error_to_json(err);
        if (!results) {
            results = am2z_value_array();
            if (dx && am2z__dur_key(key, sizeof key, dx, "c", P, "undo")) {
                /* before the first compensation: a resumed chain compensates, it does not
                   run step i again */
                am2z_value *rec = am2z_value_set(am2z_value_object(), "failedStep", am2z_value_int((int64_t)i));
                rec = am2z_value_set(rec, "error", am2z_value_retain(ej));
                rec = am2z_value_set(rec, "next", am2z_value_int(next));
                rec = am2z_value_set(rec, "results", am2z_value_retain(results));
                if (rec) am2z__dur_put_json(dx->store, key, rec);
                am2z_value_release(rec);
            }
        }
        results = am2z__chain_compensate(p, ctx, dx, P, after, input, i, next, ej, results);
        am2z_value_release(ej);
    }
    d = am2z_value_set(am2z_value_object(), "failedProcessor", am2z_value_string(step));
    d = am2z_value_set(d, "failedStep", am2z_value_int((int64_t)i));
    d = am2z_value_set(d, "completedSteps", am2z_value_int((int64_t)i));
    if (results) {
        for (j = 0; j < am2z_value_len(results); j++)
            ok &= am2z_value_get_bool(am2z_value_at(results, j), "ok", 0);
        d = am2z_value_set(d, "compensations", results);
        d = am2z_value_set(d, "compensated", am2z_value_bool(ok));
    }
    return am2z__composite_fail(p, ctx, err, partial, d);
}

/* A chain resumed after its failure: the recorded compensation progress (undo, read
   from the store) is taken up where it stopped. */
static am2z_result am2z__chain_resume_undo(const am2z_processor *p, am2z_ctx *ctx, am2z__dx *dx, const char *P,
                                           const am2z_state *input, am2z_value *undo) {
    int64_t failed = am2z_value_get_int(undo, "failedStep", -1), next = am2z_value_get_int(undo, "next", -1);
    const am2z_value *results = am2z_value_get(undo, "results");
    am2z_error *err = am2z_error_from_json(am2z_value_get(undo, "error"));
    am2z_result r;
    if (failed < 0 || (size_t)failed >= p->step_count || next > failed || !results) {
        am2z_error_release(err);
        am2z_value_release(undo);
        return am2z__composite_fail(p, ctx, am2z_error_validation("undo", NULL, "corrupt compensation record"),
                                    NULL, NULL);
    }
    if (!err) err = am2z_error_validation("error", NULL, "the recorded failure could not be read");
    r = am2z__chain_failed(p, ctx, dx, P, NULL, input, (size_t)failed, err,
                           am2z__chain_before(dx, P, NULL, (size_t)failed, input), (long)next,
                           am2z_value_retain(results));
    am2z_value_release(undo);
    return r;
}

static am2z_result am2z__chain_run(const am2z_processor *p, am2z_ctx *ctx, const am2z_state *input) {
    am2z__dscope *outer = am2z__dur_cur, t;
    am2z__dx *dx = outer ? outer->dx : NULL;
    char P[AM2Z_DURABLE_MAX_PATH + 1], key[AM2Z_STORE_MAX_KEY + 1], tail[32];
    am2z_state *cur = NULL, **after = NULL;
    am2z_result r;
    am2z_value *d;
    am2z_status st;
    size_t i = 0, n = p->step_count;
    if (dx) {
        am2z_value *undo = NULL;
        if (!am2z__chain_position(outer, P) || !am2z__dur_key(key, sizeof key, dx, "c", P, "undo"))
            return am2z__composite_fail(p, ctx, am2z_error_resource("durable chain position", AM2Z_DURABLE_MAX_PATH,
                                                                    AM2Z_DURABLE_MAX_PATH + 1), NULL, NULL);
        st = am2z__dur_get_json(dx->store, key, &undo);
        if (st == AM2Z_STATUS_OK) return am2z__chain_resume_undo(p, ctx, dx, P, input, undo);
        if (st != AM2Z_STATUS_NOT_FOUND) return am2z__composite_fail(p, ctx, am2z__dur_store_error(st, "read", key), NULL, NULL);
        /* skip the steps already checkpointed */
        for (;;) {
            am2z_state *s = NULL;
            if (i == n) break;
            st = am2z__chain_load(dx, P, i, &s, key);
            if (st == AM2Z_STATUS_NOT_FOUND) break;
            if (st != AM2Z_STATUS_OK) {
                am2z_value_release(cur);
                return am2z__composite_fail(p, ctx, am2z__dur_store_error(st, "read", key), NULL, NULL);
            }
            am2z_value_release(cur);
            cur = s;
            i++;
        }
    }
    if (!cur) cur = am2z_value_retain(input);
    if (p->compensations) {
        after = (am2z_state **)am2z__malloc(n * sizeof *after);
        if (!after) {
            am2z_value_release(cur);
            return am2z__proc_oom();
        }
        memset(after, 0, n * sizeof *after);
    }
    for (; i < n; i++) {
        const char *step = p->children[i]->desc.name;
        if (am2z_ctx_cancelled(ctx)) {
            r = am2z_fail(am2z_error_cancelled("chain cancelled before its next step"));
        } else {
            if (dx) {
                am2z__chain_scope(&t, dx, P, i, 0);
                am2z__dur_cur = &t;
            }
            r = am2z_ctx_call(ctx, step, cur);
            am2z__dur_cur = outer;
        }
        if (r.state && dx) {
            snprintf(tail, sizeof tail, "%lu", (unsigned long)i);
            st = am2z__dur_key(key, sizeof key, dx, "c", P, tail) ? AM2Z_STATUS_OK
                 : am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "durable: key too long");
            if (st == AM2Z_STATUS_OK && !am2z__atomic_load(&dx->finished, AM2Z__MO_SEQ_CST))
                st = am2z__dur_put_json(dx->store, key, r.state);
            if (st != AM2Z_STATUS_OK) { /* step i's effect happened: it is compensated too */
                if (after) after[i] = r.state;
                else am2z_value_release(r.state);
                r = am2z_fail(am2z__dur_store_error(st, "checkpoint", key));
                r = am2z__chain_failed(p, ctx, dx, P, after, input, i, r.error, cur, (long)i, NULL);
                cur = NULL;
                break;
            }
        }
        if (!r.state) {
            r = am2z__chain_failed(p, ctx, dx, dx ? P : "", after, input, i, r.error, cur, (long)i - 1, NULL);
            cur = NULL;
            break;
        }
        if (after) after[i] = am2z_value_retain(r.state);
        am2z_value_release(cur);
        cur = r.state;
        if (!am2z__ctx_wants(ctx, "processor:completed")) continue;
        d = am2z_value_set(am2z_value_object(), "processorName", am2z_value_string(step));
        d = am2z_value_set(d, "chainName", am2z_value_string(p->desc.name));
        d = am2z_value_set(d, "chainPosition", am2z_value_int((int64_t)i + 1));
        d = am2z_value_set(d, "totalProcessors", am2z_value_int((int64_t)n));
        d = am2z_value_set(d, "stepCompleted", am2z_value_bool(1));
        if (d) am2z_ctx_emit(ctx, "processor:completed", d);
    }
    if (cur) r = am2z_ok(cur);
    for (i = 0; after && i < n; i++) am2z_value_release(after[i]);
    am2z__free(after);
    return r;
}

/* ---- parallel and the 3-way merge ---- */

AM2Z_API am2z_processor *am2z_parallel_new(const am2z_parallel_desc *desc, am2z_status *status) {
    am2z_processor *p;
    am2z_status st;
    if (!desc) return (am2z_processor *)am2z__put_status(status,
            am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "parallel: NULL desc"));
    st = am2z__composite_check("parallel", desc->name, "branch", desc->branches, desc->count, desc->timeout_ms);
    if (st != AM2Z_STATUS_OK) return (am2z_processor *)am2z__put_status(status, st);
    p = am2z__composite_new(AM2Z__KIND_PARALLEL, desc->name, desc->description,
                            desc->description ? NULL
                                              : am2z__proc_describe("Parallel execution: ", desc->branches,
                                                                    desc->count, " || ", ""),
                            desc->branches, desc->count, desc->timeout_ms, status);
    if (!p) return NULL;
    p->merge = desc->merge;
    p->merge_user_data = desc->merge_user_data;
    return p;
}

/* Merge state: the JSON Pointer of the member being merged, and the conflicts found so
   far as an array of {path, values: [...]} (one entry per path). */
typedef struct am2z__merge {
    am2z__proc_buf path;
    am2z_value *conflicts;
    int failed;
} am2z__merge;

static int am2z__merge_same(const am2z_value *a, const am2z_value *b) {
    return a == b || am2z_value_equal(a, b);
}

/* Records that the member at m->path was written as `mine` after another branch wrote
   `theirs` (NULL for "removed", stored as null). */
static void am2z__merge_conflict(am2z__merge *m, const am2z_value *theirs, const am2z_value *mine) {
    size_t i, n = am2z_value_len(m->conflicts);
    am2z_value *entry, *values;
    const char *path = m->path.data ? m->path.data : "";
    if (m->failed || m->path.failed) {
        m->failed = 1;
        return;
    }
    for (i = 0; i < n; i++) {
        const am2z_value *e = am2z_value_at(m->conflicts, i);
        if (strcmp(am2z_value_get_string(e, "path", ""), path) == 0) {
            char num[40];
            snprintf(num, sizeof num, "/%lu/values", (unsigned long)i);
            m->conflicts = am2z_value_append(m->conflicts, num,
                                             mine ? am2z_value_retain(mine) : am2z_value_null());
            if (!m->conflicts) m->failed = 1;
            return;
        }
    }
    values = am2z_value_append(am2z_value_array(), "", theirs ? am2z_value_retain(theirs) : am2z_value_null());
    values = values ? am2z_value_append(values, "", mine ? am2z_value_retain(mine) : am2z_value_null()) : NULL;
    entry = am2z_value_set(am2z_value_object(), "path", am2z_value_string(path));
    entry = am2z_value_set(entry, "values", values);
    m->conflicts = entry ? am2z_value_append(m->conflicts, "", entry) : NULL;
    if (!m->conflicts) m->failed = 1;
}

static am2z_value *am2z__merge_object(am2z__merge *m, am2z_value *acc, const am2z_value *base,
                                      const am2z_value *out, int top);

/* The merge of one member that both an earlier branch (acc, consumed) and this branch
   (out) changed relative to base (NULL when base lacked the member). */
static am2z_value *am2z__merge_value(am2z__merge *m, am2z_value *acc, const am2z_value *base,
                                     const am2z_value *out) {
    am2z_type ta = am2z_value_type(acc), tb = am2z_value_type(base), to = am2z_value_type(out);
    size_t i, blen;
    if (ta == AM2Z_TYPE_OBJECT && to == AM2Z_TYPE_OBJECT && (!base || tb == AM2Z_TYPE_OBJECT))
        return am2z__merge_object(m, acc, base, out, 0);
    if (ta == AM2Z_TYPE_ARRAY && to == AM2Z_TYPE_ARRAY && (!base || tb == AM2Z_TYPE_ARRAY)) {
        int appended;
        blen = am2z_value_len(base);
        appended = am2z_value_len(out) >= blen;
        for (i = 0; appended && i < blen; i++)
            appended = am2z__merge_same(am2z_value_at(base, i), am2z_value_at(out, i));
        if (appended) {
            /* this branch only appended: keep what the others did and add its elements */
            for (i = blen; acc && i < am2z_value_len(out); i++)
                acc = am2z_value_append(acc, "", am2z_value_retain(am2z_value_at(out, i)));
            if (!acc) m->failed = 1;
            return acc;
        }
    }
    if (am2z__merge_same(acc, out)) return acc;
    am2z__merge_conflict(m, acc, out);
    am2z_value_release(acc);
    return am2z_value_retain(out);
}

/* Applies the changes from base to out (both objects; base NULL = empty) onto acc
   (consumed). At the top level "metadata" is left to the runtime. */
/* Member `key` of obj (NULL-safe), trying index `hint` first: outputs keep the input's
   member order, so the lookup is usually one comparison. */
static const am2z_value *am2z__merge_find(const am2z_value *obj, size_t hint, const char *key, size_t klen) {
    size_t hlen;
    const char *hkey;
    if (hint < am2z_value_len(obj)) {
        hkey = am2z_value_key_at(obj, hint, &hlen);
        if (hlen == klen && (hkey == key || memcmp(hkey, key, klen) == 0)) return am2z_value_member_at(obj, hint);
    }
    return am2z_value_find(obj, key, klen);
}

static am2z_value *am2z__merge_object(am2z__merge *m, am2z_value *acc, const am2z_value *base,
                                      const am2z_value *out, int top) {
    size_t i, klen, mark = m->path.len, n = am2z_value_len(out);
    const char *key;
    const am2z_value *bv, *ov, *av;
    for (i = 0; acc && !m->failed && i < n; i++) {
        key = am2z_value_key_at(out, i, &klen);
        ov = am2z_value_member_at(out, i);
        bv = am2z__merge_find(base, i, key, klen);
        if (bv && am2z__merge_same(bv, ov)) continue; /* unchanged by this branch */
        if ((top && klen == 8 && memcmp(key, "metadata", 8) == 0) || memchr(key, '\0', klen)) continue;
        av = am2z__merge_find(acc, i, key, klen);
        am2z__proc_buf_ptr(&m->path, key, klen);
        if (m->path.failed) break;
        if (!av || (bv && am2z__merge_same(av, bv))) {
            /* untouched so far (or removed by an earlier branch, which this write overrides) */
            if (!av && bv) am2z__merge_conflict(m, NULL, ov);
            acc = am2z_value_set(acc, m->path.data + mark, am2z_value_retain(ov));
        } else {
            am2z_value *nv = am2z__merge_value(m, am2z_value_retain(av), bv, ov);
            acc = nv ? am2z_value_set(acc, m->path.data + mark, nv) : (am2z_value_release(acc), (am2z_value *)NULL);
        }
        m->path.len = mark;
        m->path.data[mark] = '\0';
    }
    n = base ? am2z_value_len(base) : 0;
    for (i = 0; acc && !m->failed && i < n; i++) {
        key = am2z_value_key_at(base, i, &klen);
        if (am2z__merge_find(out, i, key, klen)) continue;
        if ((top && klen == 8 && memcmp(key, "metadata", 8) == 0) || memchr(key, '\0', klen)) continue;
        av = am2z__merge_find(acc, i, key, klen);
        if (!av) continue; /* removed already */
        am2z__proc_buf_ptr(&m->path, key, klen);
        if (m->path.failed) break;
        if (!am2z__merge_same(av, am2z_value_member_at(base, i))) am2z__merge_conflict(m, av, NULL);
        acc = am2z_value_remove(acc, m->path.data + mark);
        m->path.len = mark;
        m->path.data[mark] = '\0';
    }
    if (m->path.failed) m->failed = 1;
    if (m->failed) {
        am2z_value_release(acc);
        return NULL;
    }
    if (!acc) m->failed = 1;
    return acc;
}

AM2Z_API am2z_result am2z_merge_3way(am2z_ctx *ctx, const am2z_state *input, const am2z_state *const *outputs,
                                     size_t count, void *user_data) {
    am2z__merge m;
    am2z_value *acc, *ev;
    size_t i, n;
    (void)user_data;
    if (am2z_value_type(input) != AM2Z_TYPE_OBJECT)
        return am2z_fail(am2z_error_validation("input", input, "must be an object"));
    for (i = 0; i < count; i++)
        if (am2z_value_type(outputs[i]) != AM2Z_TYPE_OBJECT)
            return am2z_fail(am2z_error_validation("outputs", outputs[i], "every output must be an object"));
    memset(&m, 0, sizeof m);
    m.conflicts = am2z_value_array();
    acc = am2z_value_retain(input);
    if (!m.conflicts) m.failed = 1;
    for (i = 0; i < count && acc && !m.failed; i++) acc = am2z__merge_object(&m, acc, input, outputs[i], 1);
    am2z__free(m.path.data);
    if (m.failed || !acc) {
        am2z_value_release(acc);
        am2z_value_release(m.conflicts);
        return am2z__proc_oom();
    }
    if (ctx && ctx->trace) am2z__trace_conflicts(ctx, am2z_value_len(m.conflicts));
    n = am2z__ctx_wants(ctx, "merge:conflict") ? am2z_value_len(m.conflicts) : 0;
    for (i = 0; i < n; i++) {
        const am2z_value *c = am2z_value_at(m.conflicts, i);
        const am2z_value *values = am2z_value_get(c, "values");
        ev = am2z_value_set(am2z_value_object(), "processorName", am2z__proc_str(ctx ? ctx->meta.processor : NULL));
        ev = am2z_value_set(ev, "path", am2z_value_retain(am2z_value_get(c, "path")));
        ev = am2z_value_set(ev, "values", am2z_value_retain(values));
        ev = am2z_value_set(ev, "resolved", am2z_value_retain(am2z_value_at(values, am2z_value_len(values) - 1)));
        if (ev) am2z_ctx_emit(ctx, "merge:conflict", ev);
    }
    am2z_value_release(m.conflicts);
    return am2z_ok(acc);
}

static am2z_result am2z__parallel_run(const am2z_processor *p, am2z_ctx *ctx, const am2z_state *input) {
    size_t i, n = p->child_count, failed = n;
    const char **names = (const char **)am2z__malloc(n * sizeof *names);
    const am2z_state **inputs = (const am2z_state **)am2z__malloc(n * sizeof *inputs);
    am2z_result *results = (am2z_result *)am2z__malloc(n * sizeof *results);
    am2z_result r;
    am2z_value *d, *branches;
    if (!names || !inputs || !results) {
        am2z__free((void *)names);
        am2z__free((void *)inputs);
        am2z__free(results);
        return am2z__proc_oom();
    }
    for (i = 0; i < n; i++) {
        names[i] = p->children[i]->desc.name;
        inputs[i] = input;
    }
    am2z_ctx_call_many(ctx, names, inputs, n, results);
    for (i = 0; i < n; i++) {
        if (!results[i].state && failed == n) failed = i;
        if (!am2z__ctx_wants(ctx, "processor:completed")) continue;
        d = am2z_value_set(am2z_value_object(), "processorName", am2z_value_string(names[i]));
        d = am2z_value_set(d, "parallelName", am2z_value_string(p->desc.name));
        d = am2z_value_set(d, "parallelPosition", am2z_value_int((int64_t)i + 1));
        d = am2z_value_set(d, "totalProcessors", am2z_value_int((int64_t)n));
        d = am2z_value_set(d, "stepCompleted", am2z_value_bool(results[i].state != NULL));
        if (d) am2z_ctx_emit(ctx, "processor:completed", d);
    }
    if (failed < n) {
        /* every branch's outcome, so one failure does not hide the others */
        branches = am2z_value_array();
        for (i = 0; i < n; i++) {
            d = am2z_value_set(am2z_value_object(), "processor", am2z_value_string(names[i]));
            d = am2z_value_set(d, "ok", am2z_value_bool(results[i].state != NULL));
            if (!results[i].state)
                d = am2z_value_set(d, "error", am2z__proc_str(results[i].error ? results[i].error->message : NULL));
            branches = am2z_value_append(branches, "", d);
        }
        d = am2z_value_set(am2z_value_object(), "failedProcessor", am2z_value_string(names[failed]));
        d = am2z_value_set(d, "failedBranch", am2z_value_int((int64_t)failed));
        d = am2z_value_set(d, "branches", branches);
        r = am2z__composite_fail(p, ctx, am2z_error_retain(results[failed].error), NULL, d);
    } else {
        const am2z_state **outs = inputs; /* reuse: the branches' states in order */
        for (i = 0; i < n; i++) outs[i] = results[i].state;
        r = (p->merge ? p->merge : am2z_merge_3way)(ctx, input, outs, n, p->merge_user_data);
        r = am2z__proc_normalize(r, p->desc.name, ctx ? ctx->meta.execution_id : NULL);
    }
    for (i = 0; i < n; i++) am2z_result_clear(&results[i]);
    am2z__free((void *)names);
    am2z__free((void *)inputs);
    am2z__free(results);
    return r;
}

/* ---- router ---- */

/* Why the routes of desc are invalid, or NULL. */
static const char *am2z__router_invalid(const am2z_router_desc *desc) {
    size_t i, j, fallbacks = 0;
    if (!desc->select) return "no select function";
    for (i = 0; i < desc->count; i++) {
        if (!desc->routes[i].key) {
            if (++fallbacks > 1) return "two fallback routes (key NULL)";
            continue;
        }
        for (j = 0; j < i; j++)
            if (desc->routes[j].key && strcmp(desc->routes[i].key, desc->routes[j].key) == 0)
                return "two routes with the same key";
    }
    return NULL;
}

AM2Z_API am2z_processor *am2z_router_new(const am2z_router_desc *desc, am2z_status *status) {
    am2z_processor *p, **targets;
    am2z__proc_buf b;
    const char *why;
    size_t i, j, n, keyed = 0;
    am2z_status st;
    if (!desc) return (am2z_processor *)am2z__put_status(status,
            am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "router: NULL desc"));
    if (desc->count && !desc->routes)
        return (am2z_processor *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "router '%s': count without routes",
                           desc->name ? desc->name : "(null)"));
    /* the keyed targets in route order, then the fallback: the children it takes over */
    n = desc->count;
    targets = (am2z_processor **)am2z__malloc((n ? n : 1) * sizeof *targets);
    if (!targets) {
        for (i = 0; i < n; i++) am2z_processor_release(desc->routes[i].target);
        return (am2z_processor *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "router: out of memory"));
    }
    for (i = 0; i < n; i++)
        if (desc->routes[i].key) targets[keyed++] = desc->routes[i].target;
    for (i = 0, j = keyed; i < n; i++)
        if (!desc->routes[i].key) targets[j++] = desc->routes[i].target;
    st = am2z__composite_check("router", desc->name, "route target", targets, n, desc->timeout_ms);
    if (st == AM2Z_STATUS_OK && (why = am2z__router_invalid(desc)) != NULL) {
        am2z__proc_release_all(targets, n);
        st = am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "router '%s': %s", desc->name, why);
    }
    if (st != AM2Z_STATUS_OK) {
        am2z__free(targets);
        return (am2z_processor *)am2z__put_status(status, st);
    }
    memset(&b, 0, sizeof b);
    if (!desc->description) {
        size_t listed = 0;
        am2z__proc_buf_str(&b, "Router: ");
        for (i = 0; i < n; i++)
            if (desc->routes[i].key) {
                if (listed++) am2z__proc_buf_str(&b, " | ");
                am2z__proc_buf_str(&b, desc->routes[i].key);
            }
        if (keyed < n) am2z__proc_buf_str(&b, keyed ? " | *" : "*");
        if (b.failed) {
            am2z__free(b.data);
            b.data = NULL;
        }
    }
    p = am2z__composite_new(AM2Z__KIND_ROUTER, desc->name, desc->description, b.data, targets, n,
                            desc->timeout_ms, status);
    am2z__free(targets);
    if (!p) return NULL;
    p->select = desc->select;
    p->select_user_data = desc->user_data;
    p->fallback = keyed < n ? p->children[keyed] : NULL;
    if (keyed) {
        p->route_keys = (char **)am2z__malloc(keyed * sizeof *p->route_keys);
        for (i = 0; p->route_keys && i < n; i++) {
            if (!desc->routes[i].key) continue;
            p->route_keys[p->route_count] = am2z__strdup(desc->routes[i].key);
            if (!p->route_keys[p->route_count]) break;
            p->route_count++;
        }
        if (p->route_count < keyed) {
            am2z_processor_release(p);
            return (am2z_processor *)am2z__put_status(status,
                    am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "router: out of memory"));
        }
    }
    return p;
}

static am2z_result am2z__router_run(const am2z_processor *p, am2z_ctx *ctx, const am2z_state *input) {
    const char *key = p->select(input, p->select_user_data);
    const am2z_processor *target = p->fallback;
    size_t i;
    if (key)
        for (i = 0; i < p->route_count; i++)
            if (strcmp(p->route_keys[i], key) == 0) {
                target = p->children[i];
                break;
            }
    if (!target)
        return am2z__composite_fail(
            p, ctx, am2z_error_business("NO_ROUTE", AM2Z_SEVERITY_DEFAULT, "No route found for: %s", key ? key : "(no key)"),
            NULL, am2z_value_set(am2z_value_object(), "routeKey", am2z__proc_str(key)));
    return am2z_ctx_call(ctx, target->desc.name, input);
}

/* ---- batch ---- */

/* Why a batch desc (other than its target, name and timeout) is invalid, or NULL. */
static const char *am2z__batch_invalid(const am2z_batch_desc *desc, const char *results_path) {
    size_t i, n = am2z_value_len(desc->payloads);
    if (!desc->payloads == !desc->items_path) return "needs exactly one of payloads and items_path";
    if (desc->payloads && (am2z_value_type(desc->payloads) != AM2Z_TYPE_ARRAY || n == 0))
        return "payloads is not a non-empty array";
    for (i = 0; desc->payloads && i < n; i++)
        if (am2z_value_type(am2z_value_at(desc->payloads, i)) != AM2Z_TYPE_OBJECT) return "a payload is not an object";
    if (desc->mode != AM2Z_BATCH_DEFAULT && desc->mode != AM2Z_BATCH_FAIL_FAST && desc->mode != AM2Z_BATCH_SETTLE_ALL)
        return "unknown mode";
    /* "<results_path>Errors" must name a sibling member, not an array element */
    if (!results_path[0] || results_path[strlen(results_path) - 1] == ']' ||
        results_path[strlen(results_path) - 1] == '/')
        return "results_path does not name an object member";
    return NULL;
}

AM2Z_API am2z_processor *am2z_batch_new(const am2z_batch_desc *desc, am2z_status *status) {
    am2z_processor *p, *target;
    am2z__proc_buf b;
    const char *results_path, *why;
    char num[32];
    am2z_status st;
    if (!desc) return (am2z_processor *)am2z__put_status(status,
            am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "batch: NULL desc"));
    target = desc->target;
    st = am2z__composite_check("batch", desc->name, "target", &target, 1, desc->timeout_ms);
    if (st != AM2Z_STATUS_OK) return (am2z_processor *)am2z__put_status(status, st);
    results_path = desc->results_path ? desc->results_path : desc->items_path ? desc->items_path : "results";
    if ((why = am2z__batch_invalid(desc, results_path)) != NULL) {
        am2z_processor_release(target);
        return (am2z_processor *)am2z__put_status(status,
                                am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "batch '%s': %s", desc->name, why));
    }
    memset(&b, 0, sizeof b);
    if (!desc->description) {
        am2z__proc_buf_str(&b, "Batch execution: ");
        am2z__proc_buf_str(&b, target->desc.name);
        if (desc->payloads) {
            snprintf(num, sizeof num, " x%lu", (unsigned long)am2z_value_len(desc->payloads));
            am2z__proc_buf_str(&b, num);
        } else {
            am2z__proc_buf_str(&b, " over ");
            am2z__proc_buf_str(&b, desc->items_path);
        }
        if (b.failed) {
            am2z__free(b.data);
            b.data = NULL;
        }
    }
    p = am2z__composite_new(AM2Z__KIND_BATCH, desc->name, desc->description, b.data, &target, 1, desc->timeout_ms,
                            status);
    if (!p) return NULL;
    p->mode = desc->mode == AM2Z_BATCH_SETTLE_ALL ? AM2Z_BATCH_SETTLE_ALL : AM2Z_BATCH_FAIL_FAST;
    p->payloads = am2z_value_retain(desc->payloads);
    p->items_path = am2z__strdup(desc->items_path);
    p->results_path = am2z__strdup(results_path);
    memset(&b, 0, sizeof b);
    am2z__proc_buf_str(&b, results_path);
    am2z__proc_buf_str(&b, "Errors");
    p->errors_path = b.data;
    if ((desc->items_path && !p->items_path) || !p->results_path || b.failed) {
        am2z_processor_release(p);
        return (am2z_processor *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "batch: out of memory"));
    }
    return p;
}

static am2z_result am2z__batch_run(const am2z_processor *p, am2z_ctx *ctx, const am2z_state *input) {
    const am2z_value *items = p->payloads ? p->payloads : am2z_value_get(input, p->items_path);
    const char *target = p->children[0]->desc.name;
    const char *session = ctx && ctx->meta.session_id ? ctx->meta.session_id : am2z_state_session_id(input);
    size_t i, n, failed;
    int called = 0;
    const char **names = NULL;
    am2z_state **inputs = NULL;
    am2z_result *results = NULL;
    am2z_result r;
    am2z_value *out = NULL, *errors = NULL, *d;
    r.state = NULL;
    r.error = NULL;
    if (am2z_value_type(items) != AM2Z_TYPE_ARRAY)
        return am2z_fail(am2z_error_validation(p->items_path, items, "must be an array of objects"));
    n = am2z_value_len(items);
    for (i = 0; i < n; i++)
        if (am2z_value_type(am2z_value_at(items, i)) != AM2Z_TYPE_OBJECT)
            return am2z_fail(am2z_error_validation(p->items_path, am2z_value_at(items, i),
                                                   "every item must be an object"));
    if (n) {
        names = (const char **)am2z__malloc(n * sizeof *names);
        inputs = (am2z_state **)am2z__malloc(n * sizeof *inputs);
        results = (am2z_result *)am2z__malloc(n * sizeof *results);
        if (inputs) memset(inputs, 0, n * sizeof *inputs);
    }
    out = am2z_value_array();
    if (p->mode == AM2Z_BATCH_SETTLE_ALL) errors = am2z_value_array();
    if ((n && (!names || !inputs || !results)) || !out || (p->mode == AM2Z_BATCH_SETTLE_ALL && !errors)) goto oom;
    for (i = 0; i < n; i++) {
        const am2z_value *item = am2z_value_at(items, i);
        names[i] = target;
        /* a payload that is already a state keeps its metadata; plain objects become
           states of the parent's session */
        inputs[i] = am2z_value_find(item, "metadata", 8)
                        ? am2z_value_retain(item)
                        : am2z_state_new(session, am2z_value_retain(item), NULL);
        if (!inputs[i]) goto oom;
    }
    if (n) am2z_ctx_call_many(ctx, names, (const am2z_state *const *)inputs, n, results);
    called = 1;
    for (i = 0, failed = n; i < n; i++)
        if (!results[i].state) {
            failed = i;
            break;
        }
    if (failed < n && p->mode != AM2Z_BATCH_SETTLE_ALL) {
        d = am2z_value_set(am2z_value_object(), "failedProcessor", am2z_value_string(target));
        d = am2z_value_set(d, "batchIndex", am2z_value_int((int64_t)failed));
        r = am2z__composite_fail(p, ctx, am2z_error_retain(results[failed].error), NULL, d);
        goto done;
    }
    for (i = 0; i < n; i++) {
        am2z_value *x;
        if (!results[i].state) {
            d = am2z_value_set(am2z_value_object(), "index", am2z_value_int((int64_t)i));
            d = am2z_value_set(d, "error", am2z_error_to_json(results[i].error));
            errors = am2z_value_append(errors, "", d);
            x = am2z_value_null();
        } else if (am2z_value_find(am2z_value_at(items, i), "metadata", 8)) {
            x = am2z_value_retain(results[i].state);
        } else {
            /* give plain payloads their results back in the same plain shape */
            x = am2z_value_remove(am2z_value_retain(results[i].state), "metadata");
        }
        out = am2z_value_append(out, "", x);
        if (!out || (p->mode == AM2Z_BATCH_SETTLE_ALL && !errors)) goto oom;
    }
    r.state = am2z_value_set(am2z_value_retain(input), p->results_path, out);
    out = NULL;
    if (r.state && errors) {
        r.state = am2z_value_set(r.state, p->errors_path, errors);
        errors = NULL;
    }
    if (!r.state) goto oom;
    goto done;
oom:
    r = am2z__proc_oom();
done:
    for (i = 0; i < n; i++) {
        if (inputs) am2z_value_release(inputs[i]);
        if (called) am2z_result_clear(&results[i]);
    }
    am2z_value_release(out);
    am2z_value_release(errors);
    am2z__free((void *)names);
    am2z__free(inputs);
    am2z__free(results);
    return r;
}

/* ---- dispatch ---- */

static am2z_result am2z__composite_run(const am2z_processor *p, am2z_ctx *ctx, const am2z_state *input) {
    switch (p->kind) {
    case AM2Z__KIND_CHAIN: return am2z__chain_run(p, ctx, input);
    case AM2Z__KIND_PARALLEL: return am2z__parallel_run(p, ctx, input);
    case AM2Z__KIND_ROUTER: return am2z__router_run(p, ctx, input);
    case AM2Z__KIND_BATCH: return am2z__batch_run(p, ctx, input);
    case AM2Z__KIND_PLAIN: break;
    }
    return p->desc.fn(ctx, input);
}

/* desc.fn of every composite, for callers that call a desc's fn directly. */
static am2z_result am2z__composite_fn(am2z_ctx *ctx, const am2z_state *input) {
    if (!ctx || !ctx->processor || ctx->processor->kind == AM2Z__KIND_PLAIN)
        return am2z_fail(am2z_error_configuration("ctx", "a composite needs ctx->processor"));
    return am2z__composite_run(ctx->processor, ctx, input);
}

/* ==== 6b. cron expressions ============================================================ */

static const char *const am2z__cron_field_names[5] = {"minute", "hour", "day of month", "month",
                                                       "day of week"};
static const int am2z__cron_lo[5] = {0, 0, 1, 1, 0}, am2z__cron_hi[5] = {59, 23, 31, 12, 7};

static int am2z__cron_upper(int c) { return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c; }

/* A number or (month, weekday fields) a 3-letter name at *pos; -1 when there is none,
   -2 when a number is absurdly long (reported as out of range). */
static int am2z__cron_value(const char *s, size_t end, size_t *pos, int field) {
    static const char months[] = "JANFEBMARAPRMAYJUNJULAUGSEPOCTNOVDEC", days[] = "SUNMONTUEWEDTHUFRISAT";
    size_t p = *pos;
    int v = 0;
    if (p < end && s[p] >= '0' && s[p] <= '9') {
        while (p < end && s[p] >= '0' && s[p] <= '9') {
            if (v > 1000) return -2;
            v = v * 10 + (s[p++] - '0');
        }
        *pos = p;
        return v;
    }
    if ((field == 3 || field == 4) && end - p >= 3) {
        const char *names = field == 3 ? months : days;
        int k, n = field == 3 ? 12 : 7;
        for (k = 0; k < n; k++)
            if (am2z__cron_upper((unsigned char)s[p]) == names[3 * k] &&
                am2z__cron_upper((unsigned char)s[p + 1]) == names[3 * k + 1] &&
                am2z__cron_upper((unsigned char)s[p + 2]) == names[3 * k + 2] &&
                (p + 3 == end || !((s[p + 3] | 32) >= 'a' && (s[p + 3] | 32) <= 'z'))) {
                *pos = p + 3;
                return field == 3 ? k + 1 : k;
            }
    }
    return -1;
}

/* One field s[start, end) into *bits; records the failure's detail. */
static am2z_status am2z__cron_field(const char *s, size_t start, size_t end, int field, uint64_t *bits) {
    const char *name = am2z__cron_field_names[field];
    int lo = am2z__cron_lo[field], hi = am2z__cron_hi[field];
    size_t p = start;
    *bits = 0;
    for (;;) {
        size_t item = p;
        int a, b, step = 1, v;
        if (p < end && s[p] == '*') {
            a = lo;
            b = hi;
            p++;
        } else {
            a = am2z__cron_value(s, end, &p, field);
            if (a == -1)
                return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, p, "cron: %s: expected a number%s or \"*\" at \"%.*s\"",
                                  name, field == 3 ? ", a month name" : field == 4 ? ", a day name" : "",
                                  (int)(end - p), s + p);
            b = a;
            if (p < end && s[p] == '-') {
                size_t at = ++p;
                b = am2z__cron_value(s, end, &p, field);
                if (b == -1)
                    return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, p, "cron: %s: a range needs an end at \"%.*s\"",
                                      name, (int)(end - p), s + p);
                if (field == 4 && b == 0 && s[at] > '9') b = 7; /* "SAT-SUN": Sunday ends the week */
            }
            if (a < lo || a > hi || b < lo || b > hi)
                return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, item, "cron: %s: \"%.*s\" is out of range %d-%d", name,
                                  (int)(p - item), s + item, lo, hi);
            if (a > b)
                return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, item, "cron: %s: range %d-%d is reversed", name, a, b);
        }
        if (p < end && s[p] == '/') {
            size_t at = ++p;
            step = am2z__cron_value(s, end, &p, 0);
            if (step == -1 || step == -2 || step == 0 || step > hi)
                return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, at, "cron: %s: step \"%.*s\" is not a number 1-%d",
                                  name, (int)(end - at), s + at, hi);
            if (a == b) b = hi; /* "5/15": from 5 to the end of the range */
        }
        for (v = a; v <= b; v += step) *bits |= (uint64_t)1 << (field == 4 && v == 7 ? 0 : v);
        if (p == end) return AM2Z_STATUS_OK;
        if (s[p] != ',' || p + 1 == end)
            return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, p, "cron: %s: unexpected \"%.*s\"", name, (int)(end - p),
                              s + p);
        p++;
    }
}

AM2Z_API am2z_status am2z_cron_parse(const char *expr, size_t len, am2z_cron *out) {
    static const char *const macros[][2] = {
        {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"}};
    uint64_t bits[5];
    size_t p = 0, start[5];
    int n = 0, k;
    if (!expr || !out) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "cron: no expression");
    if (len == AM2Z_NTS) len = strlen(expr);
    if (len > AM2Z_CRON_MAX_LENGTH)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_CRON_MAX_LENGTH, "cron: expression longer than %d bytes",
                          AM2Z_CRON_MAX_LENGTH);
    while (len > 0 && (expr[len - 1] == ' ' || expr[len - 1] == '\t')) len--;
    while (p < len && (expr[p] == ' ' || expr[p] == '\t')) p++;
    if (p < len && expr[p] == '@') {
        for (k = 0; k < (int)(sizeof macros / sizeof macros[0]); k++)
            if (len - p == strlen(macros[k][0]) && memcmp(expr + p, macros[k][0], len - p) == 0)
                return am2z_cron_parse(macros[k][1], AM2Z_NTS, out);
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, p, "cron: unknown macro \"%.*s\"", (int)(len - p), expr + p);
    }
    while (p < len) {
        size_t e = p;
        while (e < len && expr[e] != ' ' && expr[e] != '\t') e++;
        if (n == 5)
            return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, p, "cron: more than 5 fields (seconds and years are not supported)");
        start[n] = p;
        {
            am2z_status st = am2z__cron_field(expr, p, e, n, &bits[n]);
            if (st != AM2Z_STATUS_OK) return st;
        }
        n++;
        p = e;
        while (p < len && (expr[p] == ' ' || expr[p] == '\t')) p++;
    }
    if (n < 5)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, len, "cron: %d field%s, expected 5 (minute hour day month weekday)",
                          n, n == 1 ? "" : "s");
    out->minutes = bits[0];
    out->hours = (uint32_t)bits[1];
    out->days = (uint32_t)bits[2];
    out->months = (uint16_t)bits[3];
    out->weekdays = (uint8_t)bits[4];
    out->days_restricted = expr[start[2]] != '*';
    out->weekdays_restricted = expr[start[4]] != '*';
    return AM2Z_STATUS_OK;
}

static int am2z__cron_day_matches(const am2z_cron *c, int64_t day) {
    int64_t y;
    int m, d, w = (int)(((day + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
    int dom, dow;
    am2z__civil_from_days(day, &y, &m, &d);
    if (!(c->months >> m & 1)) return 0;
    dom = (int)(c->days >> d & 1);
    dow = c->weekdays >> w & 1;
    return c->days_restricted && c->weekdays_restricted ? dom || dow : dom && dow;
}

AM2Z_API am2z_status am2z_cron_next(const am2z_cron *cron, int64_t after_ms, int64_t *next_ms) {
    const int64_t min_ms = -62135596800000LL, max_day = 2932896; /* 0001-01-01, 9999-12-31 */
    int64_t minute, day, limit;
    int h, mi;
    if (!cron || !next_ms) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "cron: next without a schedule");
    if (after_ms < min_ms)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "cron: %lld ms is before the year 1",
                          (long long)after_ms);
    minute = (after_ms >= 0 ? after_ms / 60000 : (after_ms - 59999) / 60000) + 1; /* strictly after */
    day = minute >= 0 ? minute / 1440 : (minute - 1439) / 1440;
    h = (int)((minute - day * 1440) / 60);
    mi = (int)((minute - day * 1440) % 60);
    limit = day + 366 * AM2Z_CRON_SEARCH_YEARS;
    for (; day <= limit && day <= max_day; day++, h = 0, mi = 0) {
        if (!am2z__cron_day_matches(cron, day)) continue;
        for (; h < 24; h++, mi = 0) {
            if (!(cron->hours >> h & 1)) continue;
            for (; mi < 60; mi++)
                if (cron->minutes >> mi & 1) {
                    *next_ms = ((day * 24 + h) * 60 + mi) * 60000;
                    return AM2Z_STATUS_OK;
                }
        }
    }
    return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "cron: the schedule does not fire within %d years%s",
                      AM2Z_CRON_SEARCH_YEARS, day > max_day ? " before the year 10000" : "");
}

/* ==== 7. runtime interface ============================================================ */

/* A registered handler. Sets hold references to it; `calls` counts the calls in
   progress and `removed` is set by off, so off can wait for the calls to end. */
typedef struct am2z__handler {
    int refs;                   /* atomic: the sets holding it */
    int id;
    int removed;                /* atomic: set once by off; emit then skips it */
    int calls;                  /* atomic: calls running now */
    char *event;
    am2z_event_fn fn;
    void *user_data;
} am2z__handler;

/* An immutable array of handlers: on/off publish a new one (copy-on-write) and emit
   delivers from a retained snapshot, so handlers may call on/off while they run. */
typedef struct am2z__handler_set {
    int refcount;
    size_t count;
    am2z__handler **items;
} am2z__handler_set;

/* What the calling thread is inside of: a processor (handler NULL) or an event handler
   of rt. A per-thread stack of frames on the callers' stacks. */
typedef struct am2z__inside {
    const am2z_runtime *rt;
    const am2z__handler *handler;
    struct am2z__inside *prev;
} am2z__inside;

static AM2Z__TLS am2z__inside *am2z__inside_top;

/* Marks the calling thread as running a processor of rt until leave. */
static void am2z__runtime_enter(const am2z_runtime *rt, am2z__inside *frame) {
    frame->rt = rt;
    frame->handler = NULL;
    frame->prev = am2z__inside_top;
    am2z__inside_top = frame;
}

static void am2z__runtime_leave(am2z__inside *frame) { am2z__inside_top = frame->prev; }

/* Non-zero when the calling thread is inside a processor or an event handler of rt. */
static int am2z__runtime_inside(const am2z_runtime *rt) {
    const am2z__inside *f;
    for (f = am2z__inside_top; f; f = f->prev)
        if (f->rt == rt) return 1;
    return 0;
}

struct am2z_runtime {
    const am2z_runtime_ops *ops;
    void *impl;
    am2z_logger *logger;
    am2z_runtime_settings settings;
    int started;                /* atomic: set by a successful start, cleared by stop */
    /* Registry, guarded by reg_lock: lookups (every execute) share it, only register and
       unregister write. */
    am2z__rwlock reg_lock;
    am2z_processor **reg;       /* registration order; one reference each */
    size_t reg_count, reg_cap;
    size_t *reg_index;          /* open addressing by name hash: 0 = empty, else position + 1 */
    size_t reg_index_cap;       /* power of two, at least twice reg_count */
    /* Events. handler_total is read without the lock so emit costs one load when nobody
       listens. off waits on ev_cv (with ev_lock) for the calls of the handler it removed. */
    am2z__mutex ev_lock;
    am2z__cond ev_cv;
    am2z__handler_set *handlers;
    int handler_total;
    int next_handler_id;
    struct am2z__idem_table *idem; /* idempotency keys: made on first use (atomic), freed by free */
    am2z__dreg *dreg;           /* durable executions (7d): set by a runtime with a store */
    am2z__mutex br_lock;        /* circuit breakers of the local and inline runtimes */
    struct am2z__breaker *breakers;
};

/* ---- registry ---- */

#define AM2Z__RT_NPOS ((size_t)-1)

static size_t am2z__reg_find(const am2z_runtime *rt, const char *name) {
    size_t mask, i, v;
    if (!rt->reg_index_cap) return AM2Z__RT_NPOS;
    mask = rt->reg_index_cap - 1;
    for (i = (size_t)am2z__strhash(name) & mask;; i = (i + 1) & mask) {
        v = rt->reg_index[i];
        if (!v) return AM2Z__RT_NPOS;
        if (strcmp(am2z_processor_name(rt->reg[v - 1]), name) == 0) return v - 1;
    }
}

static void am2z__reg_index_put(am2z_runtime *rt, size_t pos) {
    size_t mask = rt->reg_index_cap - 1, i;
    for (i = (size_t)am2z__strhash(am2z_processor_name(rt->reg[pos])) & mask; rt->reg_index[i];
         i = (i + 1) & mask) {
    }
    rt->reg_index[i] = pos + 1;
}

/* Rebuilds the index in place (no allocation: unregister cannot fail half-way). */
static void am2z__reg_reindex(am2z_runtime *rt) {
    size_t i;
    if (!rt->reg_index_cap) return;
    memset(rt->reg_index, 0, rt->reg_index_cap * sizeof *rt->reg_index);
    for (i = 0; i < rt->reg_count; i++) am2z__reg_index_put(rt, i);
}

/* Makes room for `more` registrations; on failure nothing changed. */
static int am2z__reg_reserve(am2z_runtime *rt, size_t more) {
    size_t need = rt->reg_count + more, cap, icap;
    if (need < rt->reg_count) return 0;
    if (need > rt->reg_cap) {
        am2z_processor **r;
        cap = rt->reg_cap ? rt->reg_cap : 16;
        while (cap < need) {
            if (cap > ((size_t)-1) / 2 / sizeof *r) return 0;
            cap *= 2;
        }
        r = (am2z_processor **)am2z__realloc(rt->reg, cap * sizeof *r);
        if (!r) return 0;
        rt->reg = r;
        rt->reg_cap = cap;
    }
    if (need * 2 >= rt->reg_index_cap) {
        size_t *idx;
        icap = rt->reg_index_cap ? rt->reg_index_cap : 32;
        while (need * 2 >= icap) {
            if (icap > ((size_t)-1) / 2 / sizeof *idx) return 0;
            icap *= 2;
        }
        idx = (size_t *)am2z__malloc(icap * sizeof *idx);
        if (!idx) return 0;
        am2z__free(rt->reg_index);
        rt->reg_index = idx;
        rt->reg_index_cap = icap;
        am2z__reg_reindex(rt);
    }
    return 1;
}

/* The walk of one register call: the processors to add (children before parents) and
   the names on the current path, for cycle detection. */
typedef struct am2z__reg_walk {
    am2z_runtime *rt;
    am2z_processor **add;
    size_t add_count, add_cap;
    const char *path[AM2Z_REGISTER_MAX_DEPTH];
    const char *culprit;        /* the name that made the walk fail */
} am2z__reg_walk;

static am2z_status am2z__reg_visit(am2z__reg_walk *w, am2z_processor *p, size_t depth) {
    am2z_processor *const *kids = NULL;
    const char *name = p ? am2z_processor_name(p) : NULL;
    size_t i, n, pos;
    am2z_status st;
    if (!name) return AM2Z_STATUS_INVALID_ARGUMENT;
    w->culprit = name;
    /* A descendant named like an ancestor would make calls by name recurse forever. */
    for (i = 0; i < depth; i++)
        if (strcmp(w->path[i], name) == 0) return AM2Z_STATUS_CYCLE;
    if (depth >= AM2Z_REGISTER_MAX_DEPTH) return AM2Z_STATUS_LIMIT;
    pos = am2z__reg_find(w->rt, name);
    if (pos != AM2Z__RT_NPOS) return w->rt->reg[pos] == p ? AM2Z_STATUS_OK : AM2Z_STATUS_EXISTS;
    for (i = 0; i < w->add_count; i++) {
        if (w->add[i] == p) return AM2Z_STATUS_OK; /* shared child, walked already */
        if (strcmp(am2z_processor_name(w->add[i]), name) == 0) return AM2Z_STATUS_EXISTS;
    }
    w->path[depth] = name;
    n = am2z__processor_children(p, &kids);
    for (i = 0; i < n; i++) {
        st = am2z__reg_visit(w, kids[i], depth + 1);
        if (st != AM2Z_STATUS_OK) return st;
    }
    if (w->add_count == w->add_cap) {
        size_t cap = w->add_cap ? w->add_cap * 2 : 8;
        am2z_processor **a = (am2z_processor **)am2z__realloc(w->add, cap * sizeof *a);
        if (!a) return AM2Z_STATUS_NO_MEMORY;
        w->add = a;
        w->add_cap = cap;
    }
    w->add[w->add_count++] = p;
    return AM2Z_STATUS_OK;
}

/* The detail of a failed registration of p. */
static am2z_status am2z__reg_fail(am2z_status st, const am2z_processor *p, const char *culprit) {
    const char *name = am2z_processor_name(p);
    switch (st) {
    case AM2Z_STATUS_EXISTS:
        return am2z__fail(st, AM2Z_NTS, "register '%s': another processor is registered as '%s'", name, culprit);
    case AM2Z_STATUS_CYCLE:
        return am2z__fail(st, AM2Z_NTS, "register '%s': '%s' contains a processor with its own name", name, culprit);
    case AM2Z_STATUS_LIMIT:
        return am2z__fail(st, AM2Z_NTS, "register '%s': nested deeper than AM2Z_REGISTER_MAX_DEPTH", name);
    default: return am2z__fail(st, AM2Z_NTS, "register '%s': %s", name, am2z_status_string(st));
    }
}

AM2Z_API am2z_status am2z_runtime_register(am2z_runtime *rt, am2z_processor *p) {
    am2z__reg_walk w;
    am2z_status st;
    size_t i;
    if (!p) {
        const char *why = am2z_status_detail();
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "register: the processor is NULL%s%s%s",
                          why[0] ? " (" : "", why, why[0] ? ")" : "");
    }
    if (!rt) {
        am2z_processor_release(p);
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "register: NULL runtime");
    }
    memset(&w, 0, sizeof w);
    w.rt = rt;
    am2z__rwlock_wrlock(&rt->reg_lock);
    st = am2z__reg_visit(&w, p, 0);
    if (st == AM2Z_STATUS_OK && w.add_count && !am2z__reg_reserve(rt, w.add_count)) st = AM2Z_STATUS_NO_MEMORY;
    if (st == AM2Z_STATUS_OK) {
        for (i = 0; i < w.add_count; i++) {
            rt->reg[rt->reg_count] = am2z_processor_retain(w.add[i]);
            am2z__reg_index_put(rt, rt->reg_count++);
            am2z_processor_retain(w.add[i]); /* kept alive for the callback below */
        }
    }
    am2z__rwlock_unlock(&rt->reg_lock);
    if (st == AM2Z_STATUS_OK) {
        for (i = 0; i < w.add_count; i++) {
            if (rt->ops->registered) rt->ops->registered(rt, w.add[i]);
            am2z_processor_release(w.add[i]);
        }
    } else {
        am2z__reg_fail(st, p, w.culprit ? w.culprit : am2z_processor_name(p));
    }
    am2z__free(w.add);
    am2z_processor_release(p); /* the caller's reference */
    return st;
}

AM2Z_API am2z_status am2z_runtime_register_many(am2z_runtime *rt, am2z_processor *const *ps, size_t count) {
    size_t i;
    am2z_status st = AM2Z_STATUS_OK;
    if (!ps && count) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "register_many: NULL array");
    for (i = 0; i < count; i++) {
        if (st == AM2Z_STATUS_OK) st = am2z_runtime_register(rt, ps[i]);
        else am2z_processor_release(ps[i]); /* consumed after a failure too */
    }
    return st;
}

AM2Z_API am2z_status am2z_runtime_unregister(am2z_runtime *rt, const char *name) {
    am2z_processor *p;
    size_t pos;
    if (!rt || !name) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "unregister: NULL argument");
    am2z__rwlock_wrlock(&rt->reg_lock);
    pos = am2z__reg_find(rt, name);
    if (pos == AM2Z__RT_NPOS) {
        am2z__rwlock_unlock(&rt->reg_lock);
        return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "unregister '%s': not registered", name);
    }
    p = rt->reg[pos];
    memmove(rt->reg + pos, rt->reg + pos + 1, (rt->reg_count - pos - 1) * sizeof *rt->reg);
    rt->reg_count--;
    am2z__reg_reindex(rt);
    am2z__rwlock_unlock(&rt->reg_lock);
    if (rt->ops->unregistered) rt->ops->unregistered(rt, name);
    am2z_processor_release(p);
    return AM2Z_STATUS_OK;
}

AM2Z_API int am2z_runtime_is_registered(am2z_runtime *rt, const char *name) {
    int found;
    if (!rt || !name) return 0;
    am2z__rwlock_rdlock(&rt->reg_lock);
    found = am2z__reg_find(rt, name) != AM2Z__RT_NPOS;
    am2z__rwlock_unlock(&rt->reg_lock);
    return found;
}

AM2Z_API am2z_processor *am2z_runtime_lookup(am2z_runtime *rt, const char *name) {
    am2z_processor *p = NULL;
    size_t pos;
    if (!rt || !name) return NULL;
    am2z__rwlock_rdlock(&rt->reg_lock);
    pos = am2z__reg_find(rt, name);
    if (pos != AM2Z__RT_NPOS) p = am2z_processor_retain(rt->reg[pos]);
    am2z__rwlock_unlock(&rt->reg_lock);
    return p;
}

AM2Z_API am2z_value *am2z_runtime_list(am2z_runtime *rt) {
    am2z_value *a;
    size_t i;
    if (!rt) return NULL;
    a = am2z_value_array();
    am2z__rwlock_rdlock(&rt->reg_lock);
    for (i = 0; a && i < rt->reg_count; i++)
        a = am2z_value_append(a, "", am2z_value_string(am2z_processor_name(rt->reg[i])));
    am2z__rwlock_unlock(&rt->reg_lock);
    return a;
}

/* ProcessorNotFoundError listing the registered names (shared by every runtime). */
AM2Z__PRIVATE am2z_error *am2z__runtime_not_found(am2z_runtime *rt, const char *name) {
    am2z_value *names = am2z_runtime_list(rt);
    am2z_error *e = am2z_error_not_found(name ? name : "(null)", names);
    am2z_value_release(names);
    return e;
}

/* ---- events ---- */

static void am2z__handler_release(am2z__handler *h) {
    if (!h || am2z__atomic_dec(&h->refs) != 0) return;
    am2z__free(h->event);
    am2z__free(h);
}

static void am2z__handler_set_release(am2z__handler_set *s) {
    size_t i;
    if (!s || am2z__atomic_dec(&s->refcount) != 0) return;
    for (i = 0; i < s->count; i++) am2z__handler_release(s->items[i]);
    am2z__free(s->items);
    am2z__free(s);
}

/* A copy of old (may be NULL) without its removed handlers, with room for `extra`
   more, or NULL when out of memory. */
static am2z__handler_set *am2z__handler_set_copy(const am2z__handler_set *old, size_t extra) {
    size_t n = old ? old->count : 0, i;
    am2z__handler_set *s = (am2z__handler_set *)am2z__malloc(sizeof *s);
    if (!s) return NULL;
    s->refcount = 1;
    s->count = 0;
    s->items = (am2z__handler **)am2z__malloc((n + extra ? n + extra : 1) * sizeof *s->items);
    if (!s->items) {
        am2z__free(s);
        return NULL;
    }
    for (i = 0; i < n; i++) {
        am2z__handler *h = old->items[i];
        if (am2z__atomic_load(&h->removed, AM2Z__MO_SEQ_CST)) continue;
        am2z__atomic_inc(&h->refs);
        s->items[s->count++] = h;
    }
    return s;
}

/* Publishes s (may be NULL) as the current set, under ev_lock; returns the old one. */
static am2z__handler_set *am2z__handlers_publish_locked(am2z_runtime *rt, am2z__handler_set *s) {
    am2z__handler_set *old = rt->handlers;
    rt->handlers = s && s->count ? s : NULL;
    if (s && !s->count) am2z__handler_set_release(s);
    am2z__atomic_store(&rt->handler_total, rt->handlers ? (int)rt->handlers->count : 0, AM2Z__MO_RELEASE);
    return old;
}

AM2Z_API int am2z_runtime_on(am2z_runtime *rt, const char *event, am2z_event_fn fn, void *user_data) {
    am2z__handler_set *s, *old;
    am2z__handler *h;
    int id, full;
    if (!rt || !event || !fn) {
        am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "on: %s is NULL",
                   !rt ? "the runtime" : !event ? "the event name" : "the handler function");
        return 0;
    }
    h = (am2z__handler *)am2z__malloc(sizeof *h);
    if (!h) {
        am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "on '%s': out of memory", event);
        return 0;
    }
    memset(h, 0, sizeof *h);
    h->refs = 1; /* the new set's */
    h->fn = fn;
    h->user_data = user_data;
    h->event = am2z__strdup(event);
    am2z__mutex_lock(&rt->ev_lock);
    full = rt->next_handler_id == INT_MAX;
    s = h->event && !full ? am2z__handler_set_copy(rt->handlers, 1) : NULL;
    if (!s) {
        am2z__mutex_unlock(&rt->ev_lock);
        am2z__handler_release(h);
        if (full) am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "on '%s': handler ids are used up (INT_MAX)", event);
        else am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "on '%s': out of memory", event);
        return 0;
    }
    id = h->id = ++rt->next_handler_id;
    s->items[s->count++] = h;
    old = am2z__handlers_publish_locked(rt, s);
    am2z__mutex_unlock(&rt->ev_lock);
    am2z__handler_set_release(old);
    return id;
}

/* The calls of h this thread is making (an off from inside h must not wait for them). */
static int am2z__handler_own_calls(const am2z__handler *h) {
    const am2z__inside *f;
    int n = 0;
    for (f = am2z__inside_top; f; f = f->prev) n += f->handler == h;
    return n;
}

AM2Z_API void am2z_runtime_off(am2z_runtime *rt, int handler_id) {
    am2z__handler_set *s, *old = NULL;
    am2z__handler *h = NULL;
    size_t i;
    int own;
    if (!rt || handler_id <= 0) return;
    am2z__mutex_lock(&rt->ev_lock);
    for (i = 0; rt->handlers && i < rt->handlers->count; i++)
        if (rt->handlers->items[i]->id == handler_id) h = rt->handlers->items[i];
    if (!h || am2z__atomic_load(&h->removed, AM2Z__MO_SEQ_CST)) {
        am2z__mutex_unlock(&rt->ev_lock);
        return;
    }
    /* Marked first: from here emit skips it, even if the copy below runs out of memory
       (the next on/off drops it then). */
    am2z__atomic_store(&h->removed, 1, AM2Z__MO_SEQ_CST);
    am2z__atomic_inc(&h->refs); /* kept for the wait below */
    s = am2z__handler_set_copy(rt->handlers, 0);
    if (s) old = am2z__handlers_publish_locked(rt, s);
    else am2z__atomic_sub(&rt->handler_total, 1, AM2Z__MO_RELEASE);
    /* The barrier: wait for calls in progress on other threads (emit checks `removed`
       after counting itself in `calls`, so no call starts unseen). */
    own = am2z__handler_own_calls(h);
    while (am2z__atomic_load(&h->calls, AM2Z__MO_SEQ_CST) > own) am2z__cond_wait(&rt->ev_cv, &rt->ev_lock);
    am2z__mutex_unlock(&rt->ev_lock);
    am2z__handler_set_release(old);
    am2z__handler_release(h);
}

/* The current handlers (retained) or NULL when there are none. */
static am2z__handler_set *am2z__handlers_get(am2z_runtime *rt) {
    am2z__handler_set *s;
    if (!am2z__atomic_load(&rt->handler_total, AM2Z__MO_ACQUIRE)) return NULL;
    am2z__mutex_lock(&rt->ev_lock);
    s = rt->handlers;
    if (s) am2z__atomic_inc(&s->refcount);
    am2z__mutex_unlock(&rt->ev_lock);
    return s;
}

static int am2z__handler_matches(const am2z__handler *h, const char *event) {
    return ((h->event[0] == '*' && h->event[1] == '\0') || strcmp(h->event, event) == 0) &&
           !am2z__atomic_load(&h->removed, AM2Z__MO_RELAXED);
}

/* Non-zero when some handler would receive `event`: runtimes skip building payloads
   otherwise. One atomic load when no handler is registered. */
AM2Z__PRIVATE int am2z__runtime_has_handlers(am2z_runtime *rt, const char *event) {
    am2z__handler_set *s;
    size_t i;
    int found = 0;
    if (!rt || !event) return 0;
    s = am2z__handlers_get(rt);
    for (i = 0; s && !found && i < s->count; i++) found = am2z__handler_matches(s->items[i], event);
    am2z__handler_set_release(s);
    return found;
}

/* One call of h, unless off removed it: counted in h->calls so off can wait for it. */
static void am2z__handler_call(am2z_runtime *rt, am2z__handler *h, const char *event, const am2z_value *data) {
    am2z__inside frame;
    am2z__atomic_add(&h->calls, 1, AM2Z__MO_SEQ_CST);
    if (!am2z__atomic_load(&h->removed, AM2Z__MO_SEQ_CST)) {
        frame.rt = rt;
        frame.handler = h;
        frame.prev = am2z__inside_top;
        am2z__inside_top = &frame;
        h->fn(event, data, h->user_data);
        am2z__inside_top = frame.prev;
    }
    am2z__atomic_sub(&h->calls, 1, AM2Z__MO_SEQ_CST);
    if (am2z__atomic_load(&h->removed, AM2Z__MO_SEQ_CST)) {
        am2z__mutex_lock(&rt->ev_lock); /* an off may be waiting for this call */
        am2z__cond_broadcast(&rt->ev_cv);
        am2z__mutex_unlock(&rt->ev_lock);
    }
}

AM2Z_API void am2z_runtime_emit(am2z_runtime *rt, const char *event, const am2z_value *data) {
    am2z__handler_set *s;
    am2z_value *empty = NULL;
    size_t i;
    if (!rt || !event) return;
    s = am2z__handlers_get(rt);
    if (!s) return;
    if (!data) data = empty = am2z_value_object(); /* handlers always get an object */
    for (i = 0; i < s->count; i++)
        if (am2z__handler_matches(s->items[i], event)) am2z__handler_call(rt, s->items[i], event, data);
    am2z_value_release(empty);
    am2z__handler_set_release(s);
}

/* ---- execution ids ---- */

/* Per-thread xorshift64*: ids cost no lock and no shared cache line. */
static AM2Z__TLS uint64_t am2z__rt_rng_state;
static uint64_t am2z__rt_rng_seed_counter;

#ifndef AM2Z_NO_THREADS
/* A forked child inherits the forking thread's generator and would make its parent's
   ids again (a pre-fork server's processes share one Redis, where ids name jobs): the
   child's fork handler counts the fork, and a generator seeded before it seeds again.
   Written only in a child that has one thread, read by threads it starts later. */
static unsigned am2z__rt_rng_forks;
static AM2Z__TLS unsigned am2z__rt_rng_seen;
static pthread_once_t am2z__rt_rng_once = PTHREAD_ONCE_INIT;
static void am2z__rt_rng_forked(void) { am2z__rt_rng_forks++; }
static void am2z__rt_rng_hook(void) { pthread_atfork(NULL, NULL, am2z__rt_rng_forked); }
#endif

static uint64_t am2z__rt_rng_next(void) {
    uint64_t x = am2z__rt_rng_state;
#ifndef AM2Z_NO_THREADS
    if (am2z__rt_rng_seen != am2z__rt_rng_forks) x = 0;
#endif
    if (!x) {
#ifndef AM2Z_NO_THREADS
        pthread_once(&am2z__rt_rng_once, am2z__rt_rng_hook);
        am2z__rt_rng_seen = am2z__rt_rng_forks;
#endif
        x = (uint64_t)am2z_monotonic_ns() ^ ((uint64_t)am2z_now_ms() << 20) ^
            ((uint64_t)(size_t)&am2z__rt_rng_state * 0x9E3779B97F4A7C15ull) ^
            ((uint64_t)getpid() * 0x94D049BB133111EBull) ^
            (am2z__atomic_add(&am2z__rt_rng_seed_counter, 1, AM2Z__MO_RELAXED) * 0xD1B54A32D192ED03ull);
        if (!x) x = 0x2545F4914F6CDD1Dull;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    am2z__rt_rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* "<processor>-<ms>-<10 base-36 chars>"; the name is cut so the id fits 63 bytes. */
/* The decimal text of the last millisecond this thread formatted: ids made in the same
   millisecond (thousands, under load) skip the divisions. */
static AM2Z__TLS int64_t am2z__rt_id_ms = -1;
static AM2Z__TLS char am2z__rt_id_digits[24];
static AM2Z__TLS size_t am2z__rt_id_dlen;

/* The random end of an execution id: 10 base-36 chars and the NUL, 11 bytes at tail.
   A runtime that makes many ids of one processor in one millisecond keeps the rest
   ("<processor>-<ms>-") and writes only this (am2z__lr_run_solo). */
static void am2z__execution_id_tail(char *tail) {
    static const char digits36[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    uint64_t r = am2z__rt_rng_next(), x, y;
    uint32_t f = (uint32_t)r, g = (uint32_t)(r >> 32);
    int i;
    /* two 32-bit fractions, five base-36 digits each (multiply, keep the carry), the
       two chains interleaved so that their multiplications overlap */
    for (i = 0; i < 5; i++) {
        x = (uint64_t)f * 36;
        y = (uint64_t)g * 36;
        tail[i] = digits36[x >> 32];
        tail[i + 5] = digits36[y >> 32];
        f = (uint32_t)x;
        g = (uint32_t)y;
    }
    tail[10] = '\0';
}

AM2Z__PRIVATE void am2z__execution_id_at(const char *processor, int64_t ms, char buf[64]) {
    size_t nlen = processor ? strlen(processor) : 0, len, i, room;
    uint64_t m;
    if (ms < 0) ms = 0;
    if (ms != am2z__rt_id_ms) {
        char num[24];
        size_t d = 0;
        m = (uint64_t)ms;
        do {
            num[d++] = (char)('0' + (int)(m % 10));
            m /= 10;
        } while (m);
        for (i = 0; i < d; i++) am2z__rt_id_digits[i] = num[d - 1 - i];
        am2z__rt_id_dlen = d;
        am2z__rt_id_ms = ms;
    }
    room = 63 - 2 - am2z__rt_id_dlen - 10;
    if (nlen > room) nlen = room;
    if (nlen) memcpy(buf, processor, nlen);
    len = nlen;
    buf[len++] = '-';
    memcpy(buf + len, am2z__rt_id_digits, am2z__rt_id_dlen);
    len += am2z__rt_id_dlen;
    buf[len++] = '-';
    am2z__execution_id_tail(buf + len);
}

AM2Z_API void am2z_execution_id_generate(const char *processor, char buf[AM2Z_EXECUTION_ID_SIZE]) {
    if (buf) am2z__execution_id_at(processor, am2z_now_ms(), buf);
}

/* ---- outcomes ---- */

AM2Z_API void am2z_outcome_clear(am2z_outcome *out) {
    size_t i;
    if (!out) return;
    am2z_value_release(out->state);
    am2z_error_release(out->error);
    for (i = 0; i < out->attempt_error_count; i++) am2z_error_release(out->attempt_errors[i]);
    am2z__free(out->attempt_errors);
    am2z_trace_release(out->trace);
    memset(out, 0, sizeof *out);
}

AM2Z_API am2z_result am2z_outcome_to_result(am2z_outcome *out) {
    am2z_result r;
    r.state = NULL;
    r.error = NULL;
    if (!out) return am2z_fail(am2z_error_validation("outcome", NULL, "NULL outcome"));
    if (out->error) r.error = out->error;
    else r.state = out->state;
    if (out->error) am2z_value_release(out->state); /* a failure's partial state is in its error */
    out->state = NULL;
    out->error = NULL;
    am2z_outcome_clear(out);
    return r.state || r.error ? r : am2z_fail(am2z_error_validation("outcome", NULL, "empty outcome"));
}

/* Names the session of an outcome (a copy, cut to AM2Z_SESSION_ID_MAX bytes). */
AM2Z__PRIVATE void am2z__outcome_session(am2z_outcome *out, const char *session_id) {
    size_t n = session_id ? strlen(session_id) : 0;
    if (n > AM2Z_SESSION_ID_MAX) n = AM2Z_SESSION_ID_MAX;
    if (n) memcpy(out->session_id, session_id, n);
    out->session_id[n] = '\0';
}

/* Why r is not a valid am2z_rate, or NULL when it is ({0, 0} included). */
AM2Z__PRIVATE const char *am2z__rate_bad(const am2z_rate *r) {
    if (!r->max && !r->per_ms) return NULL;
    if (r->max < 1 || r->max > AM2Z_RATE_MAX) return "max is outside 1..AM2Z_RATE_MAX";
    if (r->per_ms < 1 || r->per_ms > AM2Z_RATE_MAX_PER_MS) return "per_ms is outside 1..AM2Z_RATE_MAX_PER_MS";
    return NULL;
}

/* Non-zero when id is a legal session id (1..AM2Z_SESSION_ID_MAX of [A-Za-z0-9_.-]). */
AM2Z__PRIVATE int am2z__session_id_ok(const char *id) {
    size_t n = 0;
    if (!id) return 0;
    for (; id[n]; n++) {
        char c = id[n];
        if (n >= AM2Z_SESSION_ID_MAX) return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return n > 0;
}

/* s (consumed) with metadata.sessionId = session_id when it names another session, so
   a state never claims a session it did not run in. NULL when out of memory. */
AM2Z__PRIVATE am2z_state *am2z__state_in_session(am2z_state *s, const char *session_id) {
    const am2z_value *meta = am2z_value_find(s, "metadata", 8);
    const char *cur = am2z_value_as_string(am2z_value_find(meta, "sessionId", 9), NULL);
    am2z_value *m;
    if (!s || !meta || !session_id || (cur && strcmp(cur, session_id) == 0)) return s;
    m = am2z_value_set_key(am2z_value_retain(meta), "sessionId", 9, am2z_value_string(session_id));
    return m ? am2z_value_set_key(s, "metadata", 8, m) : (am2z_value_release(s), (am2z_state *)NULL);
}

/* Records why submitting processor in session_id failed with st; returns st. */
AM2Z__PRIVATE am2z_status am2z__submit_fail(am2z_status st, const char *processor, const char *session_id) {
    const char *name = processor ? processor : "(null)";
    switch (st) {
    case AM2Z_STATUS_NOT_FOUND: return am2z__fail(st, AM2Z_NTS, "submit '%s': processor not registered", name);
    case AM2Z_STATUS_NOT_STARTED:
        return am2z__fail(st, AM2Z_NTS, "submit '%s': the runtime is stopped (am2z_runtime_start restarts it)", name);
    case AM2Z_STATUS_CANCELLED:
        return am2z__fail(st, AM2Z_NTS, "submit '%s': session '%s' is stopping", name,
                          session_id ? session_id : "default");
    case AM2Z_STATUS_LIMIT: return am2z__fail(st, AM2Z_NTS, "submit '%s': the queue is full", name);
    case AM2Z_STATUS_NO_MEMORY: return am2z__fail(st, AM2Z_NTS, "submit '%s': out of memory", name);
    case AM2Z_STATUS_INVALID_ARGUMENT:
        if (!processor) return am2z__fail(st, AM2Z_NTS, "submit: no processor name");
        if (session_id && !am2z__session_id_ok(session_id))
            return am2z__fail(st, AM2Z_NTS,
                              "submit '%s': session id is not 1..AM2Z_SESSION_ID_MAX bytes of [A-Za-z0-9_.-]", name);
        return am2z__fail(st, AM2Z_NTS, "submit '%s': no input state", name);
    default: return am2z__fail(st, AM2Z_NTS, "submit '%s': %s", name, am2z_status_string(st));
    }
}

/* The error a failed submit turns into for the caller of execute. */
AM2Z__PRIVATE am2z_error *am2z__runtime_status_error(am2z_runtime *rt, const char *processor, am2z_status st) {
    switch (st) {
    case AM2Z_STATUS_NOT_FOUND: return am2z__runtime_not_found(rt, processor);
    case AM2Z_STATUS_INVALID_ARGUMENT:
        return am2z_error_validation("arguments", NULL, am2z_status_detail());
    case AM2Z_STATUS_LIMIT: return am2z_error_resource("queue", 0, 0);
    case AM2Z_STATUS_NO_MEMORY: return am2z_error_resource("memory", 0, 0);
    case AM2Z_STATUS_NOT_STARTED:
        return am2z_error_configuration("runtime", "the runtime is stopped (am2z_runtime_start restarts it)");
    case AM2Z_STATUS_CANCELLED: return am2z_error_cancelled("the execution was cancelled");
    default: return am2z_error_configuration("runtime", am2z_status_string(st));
    }
}

/* A failed outcome that never ran: error consumed, input borrowed. */
AM2Z__PRIVATE am2z_outcome am2z__outcome_failed(const char *processor, const char *session_id,
                                                const am2z_state *input, am2z_error *err) {
    am2z_outcome out;
    memset(&out, 0, sizeof out);
    out.started_at = am2z_now_ms();
    am2z__execution_id_at(processor, out.started_at, out.execution_id);
    am2z__outcome_session(&out, session_id ? session_id : "default");
    out.state = am2z_value_retain(input);
    out.error = err ? err : am2z_error_resource("memory", 0, 0);
    return out;
}

/* ---- running a processor (7b) ---- */

/* Every runtime runs its processors through here, so the CALLBACKS guard knows when a
   thread is inside one (composites: each child runs through it again). */
AM2Z_API am2z_result am2z_processor_invoke(const am2z_processor *p, am2z_ctx *ctx, const am2z_state *input) {
    am2z__inside frame;
    am2z_result r;
    if (!p) return am2z_fail(am2z_error_configuration("processor", "NULL processor"));
    if (ctx && ctx->trace) am2z__trace_open(ctx); /* tracing off: this test is its cost */
    am2z__runtime_enter(ctx ? ctx->runtime : NULL, &frame);
    if (p->kind == AM2Z__KIND_PLAIN) r = p->desc.fn(ctx, input);
    else r = am2z__composite_run(p, ctx, input);
    am2z__runtime_leave(&frame);
    r = am2z__proc_normalize(r, p->desc.name, ctx ? ctx->meta.execution_id : NULL);
    if (ctx && ctx->trace && ctx->trace_span) am2z__trace_close(ctx, r.error);
    return r;
}

/* ---- runtime object and dispatch ---- */

AM2Z_API am2z_runtime *am2z_runtime_new(const am2z_runtime_ops *ops, void *impl, am2z_logger *logger,
                                        const am2z_runtime_settings *settings) {
    am2z_runtime *rt;
    if (!ops || !ops->submit || !ops->wait || !ops->free_execution || !ops->detach) return NULL;
    rt = (am2z_runtime *)am2z__malloc(sizeof *rt);
    if (!rt) return NULL;
    memset(rt, 0, sizeof *rt);
    rt->logger = logger ? am2z_logger_retain(logger) : am2z_logger_new(NULL, NULL);
    if (!rt->logger) {
        am2z__free(rt);
        return NULL;
    }
    if (am2z__rwlock_init(&rt->reg_lock) != 0) {
        am2z_logger_release(rt->logger);
        am2z__free(rt);
        return NULL;
    }
    if (am2z__mutex_init(&rt->ev_lock) != 0) {
        am2z__rwlock_destroy(&rt->reg_lock);
        am2z_logger_release(rt->logger);
        am2z__free(rt);
        return NULL;
    }
    if (am2z__cond_init(&rt->ev_cv) != 0) {
        am2z__mutex_destroy(&rt->ev_lock);
        am2z__rwlock_destroy(&rt->reg_lock);
        am2z_logger_release(rt->logger);
        am2z__free(rt);
        return NULL;
    }
    if (am2z__mutex_init(&rt->br_lock) != 0) {
        am2z__cond_destroy(&rt->ev_cv);
        am2z__mutex_destroy(&rt->ev_lock);
        am2z__rwlock_destroy(&rt->reg_lock);
        am2z_logger_release(rt->logger);
        am2z__free(rt);
        return NULL;
    }
    rt->ops = ops;
    rt->impl = impl;
    if (settings) rt->settings = *settings;
    return rt;
}

AM2Z_API void *am2z_runtime_impl(const am2z_runtime *rt) { return rt ? rt->impl : NULL; }

AM2Z_API const am2z_logger *am2z_runtime_logger(const am2z_runtime *rt) { return rt ? rt->logger : NULL; }

/* Why start / stop / free refuse to run inside the runtime's own callbacks. */
#define AM2Z__RT_INSIDE                                                                            \
    "called from inside a processor or an event handler of this runtime, which it would wait " \
    "for; call it from another thread"

AM2Z_API am2z_status am2z_runtime_start(am2z_runtime *rt) {
    am2z_status st;
    if (!rt) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "start: NULL runtime");
    if (am2z__runtime_inside(rt)) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "start: " AM2Z__RT_INSIDE);
    st = rt->ops->start ? rt->ops->start(rt) : AM2Z_STATUS_OK;
    if (st == AM2Z_STATUS_OK) am2z__atomic_store(&rt->started, 1, AM2Z__MO_RELEASE);
    return st;
}

AM2Z_API am2z_status am2z_runtime_stop(am2z_runtime *rt, int64_t grace_ms) {
    am2z_status st;
    if (!rt) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "stop: NULL runtime");
    if (am2z__runtime_inside(rt)) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "stop: " AM2Z__RT_INSIDE);
    st = rt->ops->stop ? rt->ops->stop(rt, grace_ms < 0 ? 0 : grace_ms) : AM2Z_STATUS_OK;
    if (st == AM2Z_STATUS_OK) am2z__atomic_store(&rt->started, 0, AM2Z__MO_RELEASE);
    return st;
}

AM2Z_API int am2z_runtime_is_started(am2z_runtime *rt) { return rt ? am2z__atomic_load(&rt->started, AM2Z__MO_ACQUIRE) : 0; }

AM2Z_API am2z_runtime_settings am2z_runtime_config(am2z_runtime *rt) {
    am2z_runtime_settings s;
    if (rt) return rt->settings;
    memset(&s, 0, sizeof s);
    return s;
}

AM2Z_API am2z_outcome am2z_runtime_execute_in_session(am2z_runtime *rt, const char *processor,
                                                      const am2z_state *input, const char *session_id) {
    am2z_outcome out;
    am2z_execution *e;
    am2z_submit_desc d;
    am2z_status st = AM2Z_STATUS_OK;
    if (!rt)
        return am2z__outcome_failed(processor, session_id, input,
                                    am2z_error_configuration("runtime", "NULL runtime"));
    if (rt->ops->execute) return rt->ops->execute(rt, processor, input, session_id);
    memset(&d, 0, sizeof d);
    d.session_id = session_id;
    e = rt->ops->submit(rt, processor, input, &d, &st);
    if (!e)
        return am2z__outcome_failed(processor, session_id, input, am2z__runtime_status_error(rt, processor, st));
    memset(&out, 0, sizeof out);
    st = rt->ops->wait(e, -1, &out);
    rt->ops->free_execution(e);
    if (st != AM2Z_STATUS_OK)
        return am2z__outcome_failed(processor, session_id, input, am2z__runtime_status_error(rt, processor, st));
    return out;
}

AM2Z_API am2z_outcome am2z_runtime_execute(am2z_runtime *rt, const char *processor, const am2z_state *input) {
    return am2z_runtime_execute_in_session(rt, processor, input, NULL);
}

/* ---- idempotency keys (am2z_submit_desc; IDEMPOTENCY in 7) ---- */
/* One record per (processor, session, key) in a table per runtime, made on first use.
   The record owns the runtime's handle of its run; the handles callers get (one per
   submit) share the record. Whoever waits first drives the run's own wait; the others
   sleep on the table's condition until the outcome is in the record. */

#define AM2Z__IDEM_BUCKETS 1024

typedef struct am2z__idem {
    struct am2z__idem *next;    /* bucket chain (while linked) */
    char *key;                  /* processor \x1f session \x1f key */
    uint64_t hash;
    am2z_execution *run;        /* the runtime's handle; NULL while the submit runs, once the
                                   outcome is in, or when the submit failed */
    am2z_outcome out;           /* when done */
    int linked, done, driving, handles, refs, forget_failures;
    int64_t keep_ms, expires_at; /* done: the outcome answers until expires_at (runtime clock) */
    char id[AM2Z_EXECUTION_ID_SIZE];
} am2z__idem;

typedef struct am2z__idem_table {
    am2z__mutex mu;             /* guards everything here and in the records */
    am2z__cond cv;              /* broadcast when a record gets its outcome or loses its driver */
    am2z__idem *buckets[AM2Z__IDEM_BUCKETS];
    size_t count;
} am2z__idem_table;

typedef struct am2z__idem_handle {
    am2z_execution head;        /* head.ops = &am2z__idem_ops */
    am2z__idem *rec;            /* one reference */
} am2z__idem_handle;

/* The runtime's clock (epoch ms): virtual on an inline runtime with one. */
AM2Z__PRIVATE int64_t am2z__rt_now_ms(am2z_runtime *rt) {
    return rt->settings.kind && strcmp(rt->settings.kind, "inline") == 0 ? am2z_inline_now_ms(rt) : am2z_now_ms();
}

static int am2z__rt_is_inline(const am2z_runtime *rt) {
    return rt->settings.kind && strcmp(rt->settings.kind, "inline") == 0;
}

static void am2z__idem_release(am2z__idem *r) { /* lock held, or r unreachable */
    if (--r->refs) return;
    am2z_outcome_clear(&r->out);
    am2z__free(r->key);
    am2z__free(r);
}

static void am2z__idem_unlink(am2z__idem_table *t, am2z__idem *r) {
    am2z__idem **pp = &t->buckets[r->hash % AM2Z__IDEM_BUCKETS];
    if (!r->linked) return;
    while (*pp != r) pp = &(*pp)->next;
    *pp = r->next;
    r->linked = 0;
    t->count--;
    am2z__idem_release(r); /* the table's reference */
}

/* A copy of from into out (empty). */
static void am2z__idem_copy(const am2z_outcome *from, am2z_outcome *out) {
    size_t i;
    *out = *from;
    out->state = am2z_value_retain(from->state);
    out->error = am2z_error_retain(from->error);
    out->attempt_errors = NULL;
    out->attempt_error_count = 0;
    if (from->attempt_error_count &&
        (out->attempt_errors = (am2z_error **)am2z__malloc(from->attempt_error_count * sizeof *out->attempt_errors))) {
        for (i = 0; i < from->attempt_error_count; i++) out->attempt_errors[i] = am2z_error_retain(from->attempt_errors[i]);
        out->attempt_error_count = from->attempt_error_count;
    }
}

/* Puts a run's outcome (moved) into r; a failure not to remember leaves the table. The
   window counts from the run's end (start + duration: the runtime's clock). */
static void am2z__idem_finish(am2z__idem_table *t, am2z__idem *r, am2z_outcome *out) {
    int64_t end = out->started_at + (int64_t)out->duration_ms;
    r->out = *out;
    memset(out, 0, sizeof *out);
    r->done = 1;
    r->expires_at = r->keep_ms < 0 ? INT64_MIN : end > INT64_MAX - r->keep_ms ? INT64_MAX : end + r->keep_ms;
    if (r->out.error && r->forget_failures) am2z__idem_unlink(t, r);
}

/* Drops the expired records of chains [from, to): one chain at each lookup, every chain
   when the table is full. Lock held. */
static void am2z__idem_prune(am2z__idem_table *t, size_t from, size_t to, int64_t now) {
    size_t b;
    for (b = from; b < to; b++) {
        am2z__idem *r = t->buckets[b], *next;
        for (; r; r = next) {
            next = r->next;
            if (r->done && now >= r->expires_at) am2z__idem_unlink(t, r);
        }
    }
}

/* A detached run nobody waits for has its outcome collected only when asked: when the
   table is full, up to 64 of them are asked without waiting, outside the lock (a local
   runtime's wait may run the job on this thread). Lock held on entry and on return. */
static void am2z__idem_harvest(am2z_runtime *rt, am2z__idem_table *t) {
    am2z__idem *c[64];
    size_t n = 0, b, i;
    for (b = 0; b < AM2Z__IDEM_BUCKETS && n < 64; b++) {
        am2z__idem *r;
        for (r = t->buckets[b]; r && n < 64; r = r->next)
            if (!r->done && r->run && !r->driving && !r->handles) {
                r->driving = 1;
                r->refs++;
                c[n++] = r;
            }
    }
    am2z__mutex_unlock(&t->mu);
    for (i = 0; i < n; i++) {
        am2z_outcome o;
        am2z_execution *run = c[i]->run;
        memset(&o, 0, sizeof o);
        if (rt->ops->wait(run, 0, &o) == AM2Z_STATUS_OK) {
            rt->ops->free_execution(run);
            am2z__mutex_lock(&t->mu);
            c[i]->run = NULL;
            am2z__idem_finish(t, c[i], &o);
            am2z__mutex_unlock(&t->mu);
        } else {
            am2z_outcome_clear(&o);
        }
    }
    am2z__mutex_lock(&t->mu);
    for (i = 0; i < n; i++) {
        c[i]->driving = 0;
        am2z__idem_release(c[i]);
    }
    am2z__cond_broadcast(&t->cv);
}

static am2z__idem_table *am2z__idem_table_of(am2z_runtime *rt) {
    am2z__idem_table *t = am2z__atomic_load(&rt->idem, AM2Z__MO_ACQUIRE), *none = NULL;
    if (t) return t;
    t = (am2z__idem_table *)am2z__malloc(sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    if (am2z__mutex_cond_init(&t->mu, &t->cv) != 0) {
        am2z__free(t);
        return NULL;
    }
    if (am2z__atomic_cas(&rt->idem, &none, t, AM2Z__MO_ACQ_REL, AM2Z__MO_ACQUIRE)) return t;
    am2z__cond_destroy(&t->cv); /* another thread made it first: none is that one */
    am2z__mutex_destroy(&t->mu);
    am2z__free(t);
    return none;
}

/* At runtime free (stopped): every record's run is freed, then the table. */
static void am2z__idem_table_free(am2z_runtime *rt) {
    am2z__idem_table *t = am2z__atomic_load(&rt->idem, AM2Z__MO_ACQUIRE);
    size_t b;
    if (!t) return;
    for (b = 0; b < AM2Z__IDEM_BUCKETS; b++)
        while (t->buckets[b]) {
            am2z__idem *r = t->buckets[b];
            if (r->run) rt->ops->free_execution(r->run);
            r->run = NULL;
            am2z__idem_unlink(t, r);
        }
    am2z__cond_destroy(&t->cv);
    am2z__mutex_destroy(&t->mu);
    am2z__free(t);
    rt->idem = NULL;
}

static am2z_status am2z__idem_wait(am2z_execution *e, int64_t timeout_ms, am2z_outcome *out);
static void am2z__idem_free(am2z_execution *e);
static void am2z__idem_detach(am2z_execution *e);
static const am2z_runtime_ops am2z__idem_ops = {NULL, NULL, NULL, am2z__idem_wait, am2z__idem_free, am2z__idem_detach,
                                                NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};

/* A new caller handle on r; NULL when out of memory. Lock held. */
static am2z_execution *am2z__idem_handle_new(am2z_runtime *rt, am2z__idem *r) {
    am2z__idem_handle *h = (am2z__idem_handle *)am2z__malloc(sizeof *h);
    if (!h) return NULL;
    memset(h, 0, sizeof *h);
    h->head.rt = rt;
    h->head.id = r->id;
    h->head.ops = &am2z__idem_ops;
    h->rec = r;
    r->refs++;
    r->handles++;
    return &h->head;
}

/* The per-call checks every runtime shares (now: the runtime's clock). */
static am2z_status am2z__submit_desc_check(const char *processor, const am2z_submit_desc *d, int64_t now) {
    const char *bad = NULL;
    if (d->idempotency_key && (!d->idempotency_key[0] || strlen(d->idempotency_key) > AM2Z_IDEMPOTENCY_KEY_MAX))
        bad = "idempotency_key must be 1..AM2Z_IDEMPOTENCY_KEY_MAX bytes";
    else if (d->delay_ms < 0) bad = "delay_ms is negative";
    else if (d->run_at_ms < 0) bad = "run_at_ms is negative";
    else if (d->delay_ms && d->run_at_ms) bad = "set delay_ms or run_at_ms, not both";
    else if (d->delay_ms > AM2Z_SUBMIT_DELAY_MAX_MS) bad = "delay_ms is more than AM2Z_SUBMIT_DELAY_MAX_MS";
    else if (d->run_at_ms > now && d->run_at_ms - now > AM2Z_SUBMIT_DELAY_MAX_MS)
        bad = "run_at_ms is more than AM2Z_SUBMIT_DELAY_MAX_MS ahead";
    if (!bad) return AM2Z_STATUS_OK;
    return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "submit '%s': %s", processor ? processor : "(null)", bad);
}

/* The delay a checked desc asks for, in ms from now (the runtime's clock, epoch ms);
   0: none (the processor's queue.delay_ms applies). */
AM2Z__PRIVATE int64_t am2z__submit_delay(const am2z_submit_desc *d, int64_t now) {
    if (d->run_at_ms) return d->run_at_ms > now ? d->run_at_ms - now : 0;
    return d->delay_ms;
}

/* The existing record of key in t, with a new handle; NULL (*found 0) when none. Lock held. */
static am2z_execution *am2z__idem_attach(am2z_runtime *rt, am2z__idem_table *t, const char *key, uint64_t hash,
                                         int *found) {
    am2z__idem *r;
    for (r = t->buckets[hash % AM2Z__IDEM_BUCKETS]; r; r = r->next)
        if (r->hash == hash && strcmp(r->key, key) == 0) break;
    *found = r != NULL;
    return r ? am2z__idem_handle_new(rt, r) : NULL;
}

/* Waits on r's run through its own handle (t->mu held on entry and on return, dropped
   while waiting) and, once it ended, records its outcome for every caller of the key. */
static am2z_status am2z__idem_drive(am2z_runtime *rt, am2z__idem_table *t, am2z__idem *r, int64_t timeout_ms) {
    am2z_execution *run = r->run;
    am2z_outcome o;
    am2z_status st;
    memset(&o, 0, sizeof o);
    r->driving = 1;
    am2z__mutex_unlock(&t->mu);
    st = rt->ops->wait(run, timeout_ms, &o);
    if (st == AM2Z_STATUS_OK) rt->ops->free_execution(run);
    else am2z_outcome_clear(&o);
    am2z__mutex_lock(&t->mu);
    r->driving = 0;
    if (st == AM2Z_STATUS_OK) {
        r->run = NULL;
        am2z__idem_finish(t, r, &o);
    }
    return st;
}

/* submit with an idempotency key: a handle on the key's record, or a new record whose run
   is submitted here. */
static am2z_execution *am2z__idem_submit(am2z_runtime *rt, const char *processor, const am2z_state *input,
                                         const am2z_submit_desc *desc, am2z_status *status) {
    am2z__idem_table *t;
    const char *sid = desc->session_id ? desc->session_id : "default";
    size_t pn, sn = strlen(sid), kn = strlen(desc->idempotency_key);
    am2z__idem *fresh;
    am2z_execution *h, *run;
    am2z_status st = AM2Z_STATUS_OK;
    char *key;
    uint64_t hash;
    int64_t now;
    int found = 0;
    if (!processor || !input) /* the runtime's own refusal */
        return rt->ops->submit(rt, processor, input, desc, status ? status : &st);
    pn = strlen(processor);
    t = am2z__idem_table_of(rt);
    key = (char *)am2z__malloc(pn + sn + kn + 3);
    if (!t || !key) {
        am2z__free(key);
        return (am2z_execution *)am2z__put_status(status, am2z__submit_fail(AM2Z_STATUS_NO_MEMORY, processor, sid));
    }
    memcpy(key, processor, pn);
    key[pn] = '\x1f';
    memcpy(key + pn + 1, sid, sn);
    key[pn + 1 + sn] = '\x1f';
    memcpy(key + pn + sn + 2, desc->idempotency_key, kn + 1);
    hash = am2z__hash_bytes(key, pn + sn + kn + 2, 0x6964656dULL);
    now = am2z__rt_now_ms(rt);
    am2z__mutex_lock(&t->mu);
    am2z__idem_prune(t, hash % AM2Z__IDEM_BUCKETS, hash % AM2Z__IDEM_BUCKETS + 1, now);
    h = am2z__idem_attach(rt, t, key, hash, &found);
    if (!found && t->count >= AM2Z_IDEMPOTENCY_MAX_KEYS) {
        am2z__idem_harvest(rt, t); /* unlocks meanwhile: look again after */
        am2z__idem_prune(t, 0, AM2Z__IDEM_BUCKETS, now);
        h = am2z__idem_attach(rt, t, key, hash, &found);
    }
    if (found || t->count >= AM2Z_IDEMPOTENCY_MAX_KEYS) {
        am2z__mutex_unlock(&t->mu);
        am2z__free(key);
        if (found && h) {
            if (status) *status = AM2Z_STATUS_OK;
            return h;
        }
        if (found) return (am2z_execution *)am2z__put_status(status, am2z__submit_fail(AM2Z_STATUS_NO_MEMORY, processor, sid));
        return (am2z_execution *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "submit '%s': %d idempotency keys are live "
                           "(AM2Z_IDEMPOTENCY_MAX_KEYS); none has expired", processor, AM2Z_IDEMPOTENCY_MAX_KEYS));
    }
    fresh = (am2z__idem *)am2z__malloc(sizeof *fresh);
    if (fresh) {
        memset(fresh, 0, sizeof *fresh);
        fresh->key = key;
        fresh->hash = hash;
        fresh->refs = 1; /* the table's */
        fresh->keep_ms = desc->keep_ms ? desc->keep_ms : AM2Z_IDEMPOTENCY_KEEP_MS;
        fresh->forget_failures = desc->forget_failures;
        h = am2z__idem_handle_new(rt, fresh);
    }
    if (!fresh || !h) {
        am2z__mutex_unlock(&t->mu);
        am2z__free(fresh);
        am2z__free(key);
        return (am2z_execution *)am2z__put_status(status, am2z__submit_fail(AM2Z_STATUS_NO_MEMORY, processor, sid));
    }
    fresh->linked = 1;
    fresh->next = t->buckets[hash % AM2Z__IDEM_BUCKETS];
    t->buckets[hash % AM2Z__IDEM_BUCKETS] = fresh;
    t->count++;
    fresh->driving = 1; /* until the run exists: attachers sleep */
    am2z__mutex_unlock(&t->mu);
    run = rt->ops->submit(rt, processor, input, desc, &st); /* may block (queue): not under the lock */
    am2z__mutex_lock(&t->mu);
    fresh->driving = 0;
    if (run) {
        snprintf(fresh->id, sizeof fresh->id, "%s", am2z_execution_id(run));
        fresh->run = run;
    } else { /* nothing runs: attachers get the failure, the key is forgotten */
        char detail[256];
        am2z_outcome o;
        snprintf(detail, sizeof detail, "%s", am2z_status_detail());
        o = am2z__outcome_failed(processor, desc->session_id, input, am2z__runtime_status_error(rt, processor, st));
        memcpy(fresh->id, o.execution_id, sizeof fresh->id);
        fresh->forget_failures = 1;
        am2z__idem_finish(t, fresh, &o);
        fresh->handles--;
        am2z__idem_release(fresh);
        am2z__free(h);
        h = NULL;
        am2z__fail(st, AM2Z_NTS, "%s", detail);
    }
    am2z__cond_broadcast(&t->cv);
    am2z__mutex_unlock(&t->mu);
    if (status) *status = h ? AM2Z_STATUS_OK : st;
    return h;
}

static am2z_status am2z__idem_wait(am2z_execution *e, int64_t timeout_ms, am2z_outcome *out) {
    am2z__idem *r = ((am2z__idem_handle *)e)->rec;
    am2z_runtime *rt = e->rt;
    am2z__idem_table *t = am2z__atomic_load(&rt->idem, AM2Z__MO_ACQUIRE);
    int64_t until = timeout_ms < 0 ? -1 : am2z_monotonic_ns() + (timeout_ms > INT64_MAX / 4000000 ? INT64_MAX / 4 : timeout_ms * 1000000);
    am2z_status st;
    am2z__mutex_lock(&t->mu);
    for (;;) {
        if (r->done) {
            am2z__idem_copy(&r->out, out);
            am2z__mutex_unlock(&t->mu);
            return AM2Z_STATUS_OK;
        }
        if (r->run && !r->driving) {
            int64_t left = until < 0 ? -1 : (until - am2z_monotonic_ns()) / 1000000;
            st = am2z__idem_drive(rt, t, r, until >= 0 && left < 0 ? 0 : left);
            am2z__cond_broadcast(&t->cv); /* the outcome, or another waiter may drive */
            if (st == AM2Z_STATUS_OK) continue;
            am2z__mutex_unlock(&t->mu);
            return st;
        }
        if (am2z__rt_is_inline(rt) || (until >= 0 && am2z_monotonic_ns() >= until)) {
            am2z__mutex_unlock(&t->mu);
            return am2z__fail(AM2Z_STATUS_TIMEOUT, AM2Z_NTS, am2z__rt_is_inline(rt)
                              ? "wait '%s': the run of this idempotency key is running further up this "
                                "thread's stack (it would wait for itself)"
                              : "wait '%s': still running", r->id);
        }
        am2z__cond_wait_until(&t->cv, &t->mu, until < 0 ? am2z_monotonic_ns() + 1000000000 : until);
    }
}

/* The last handle of an unfinished run: freeing cancels the run and forgets the key;
   detaching leaves the run to the record (inline: it runs now, as its detach does). */
static void am2z__idem_drop(am2z_execution *e, int detach) {
    am2z__idem *r = ((am2z__idem_handle *)e)->rec;
    am2z_runtime *rt = e->rt;
    am2z__idem_table *t = am2z__atomic_load(&rt->idem, AM2Z__MO_ACQUIRE);
    am2z_execution *cancel = NULL;
    am2z__mutex_lock(&t->mu);
    if (--r->handles == 0 && !r->done && r->run && !r->driving) {
        if (!detach) {
            cancel = r->run;
            r->run = NULL;
            am2z__idem_unlink(t, r);
        } else if (am2z__rt_is_inline(rt)) {
            (void)am2z__idem_drive(rt, t, r, -1);
        }
    }
    am2z__idem_release(r);
    am2z__mutex_unlock(&t->mu);
    if (cancel) rt->ops->free_execution(cancel);
    am2z__free(e);
}

static void am2z__idem_free(am2z_execution *e) { am2z__idem_drop(e, 0); }
static void am2z__idem_detach(am2z_execution *e) { am2z__idem_drop(e, 1); }

AM2Z_API am2z_execution *am2z_runtime_submit_with(am2z_runtime *rt, const char *processor,
                                                  const am2z_state *input, const am2z_submit_desc *desc,
                                                  am2z_status *status) {
    am2z_status st = AM2Z_STATUS_OK;
    am2z_submit_desc zero;
    am2z_execution *e;
    if (!rt) return (am2z_execution *)am2z__put_status(status,
            am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "submit: NULL runtime"));
    if (!desc) {
        memset(&zero, 0, sizeof zero);
        desc = &zero;
    }
    if (am2z__submit_desc_check(processor, desc, am2z__rt_now_ms(rt)) != AM2Z_STATUS_OK)
        return (am2z_execution *)am2z__put_status(status, AM2Z_STATUS_INVALID_ARGUMENT);
    if (desc->idempotency_key) return am2z__idem_submit(rt, processor, input, desc, status);
    e = rt->ops->submit(rt, processor, input, desc, &st);
    if (status) *status = e ? AM2Z_STATUS_OK : st;
    return e;
}

AM2Z_API am2z_execution *am2z_runtime_submit(am2z_runtime *rt, const char *processor, const am2z_state *input,
                                             const char *session_id, am2z_status *status) {
    am2z_submit_desc d;
    memset(&d, 0, sizeof d);
    d.session_id = session_id;
    return am2z_runtime_submit_with(rt, processor, input, &d, status);
}

AM2Z_API am2z_outcome am2z_runtime_execute_with(am2z_runtime *rt, const char *processor,
                                                const am2z_state *input, const am2z_submit_desc *desc) {
    am2z_submit_desc plain;
    am2z_outcome out;
    am2z_execution *e;
    am2z_status st = AM2Z_STATUS_OK;
    const char *sid = desc ? desc->session_id : NULL;
    memset(&plain, 0, sizeof plain);
    plain.session_id = sid;
    /* only a session: the runtime's fast path */
    if (!desc || !memcmp(desc, &plain, sizeof plain)) return am2z_runtime_execute_in_session(rt, processor, input, sid);
    if (!(e = am2z_runtime_submit_with(rt, processor, input, desc, &st)))
        return am2z__outcome_failed(processor, sid, input, am2z__runtime_status_error(rt, processor, st));
    memset(&out, 0, sizeof out);
    st = am2z_execution_wait(e, -1, &out);
    am2z_execution_free(e);
    if (st != AM2Z_STATUS_OK)
        return am2z__outcome_failed(processor, sid, input, am2z__runtime_status_error(rt, processor, st));
    return out;
}

AM2Z_API const char *am2z_execution_id(const am2z_execution *e) { return e && e->id ? e->id : ""; }

AM2Z_API am2z_status am2z_execution_wait(am2z_execution *e, int64_t timeout_ms, am2z_outcome *out) {
    if (!e || !out) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "wait: NULL handle or outcome");
    am2z_outcome_clear(out);
    return (e->ops ? e->ops : e->rt->ops)->wait(e, timeout_ms, out);
}

AM2Z_API void am2z_execution_free(am2z_execution *e) {
    if (e) (e->ops ? e->ops : e->rt->ops)->free_execution(e);
}

AM2Z_API void am2z_execution_detach(am2z_execution *e) {
    if (e) (e->ops ? e->ops : e->rt->ops)->detach(e);
}

#define AM2Z__RT_MANY_WINDOW 256

/* execute_many from submit + wait: at most AM2Z__RT_MANY_WINDOW in flight, so a
   million inputs never need a million queue slots. outs are empty. */
AM2Z__PRIVATE am2z_status am2z__runtime_execute_many_generic(am2z_runtime *rt, const char *processor,
                                                             const am2z_state *const *inputs, size_t count,
                                                             const char *session_id, am2z_outcome *outs) {
    am2z_execution *win[AM2Z__RT_MANY_WINDOW];
    size_t next = 0, done = 0;
    am2z_submit_desc d;
    am2z_status st;
    memset(&d, 0, sizeof d);
    d.session_id = session_id;
    while (done < count) {
        while (next < count && next - done < AM2Z__RT_MANY_WINDOW) {
            st = AM2Z_STATUS_OK;
            win[next % AM2Z__RT_MANY_WINDOW] = rt->ops->submit(rt, processor, inputs[next], &d, &st);
            if (!win[next % AM2Z__RT_MANY_WINDOW])
                outs[next] = am2z__outcome_failed(processor, session_id, inputs[next],
                                                  am2z__runtime_status_error(rt, processor, st));
            next++;
        }
        {
            am2z_execution *e = win[done % AM2Z__RT_MANY_WINDOW];
            if (e) {
                st = rt->ops->wait(e, -1, &outs[done]);
                rt->ops->free_execution(e);
                if (st != AM2Z_STATUS_OK) {
                    am2z_outcome_clear(&outs[done]);
                    outs[done] = am2z__outcome_failed(processor, session_id, inputs[done],
                                                      am2z__runtime_status_error(rt, processor, st));
                }
            }
        }
        done++;
    }
    return AM2Z_STATUS_OK;
}

AM2Z_API am2z_status am2z_runtime_execute_many(am2z_runtime *rt, const char *processor,
                                               const am2z_state *const *inputs, size_t count,
                                               const char *session_id, am2z_outcome *outs) {
    size_t i;
    if (!rt || (count && (!inputs || !outs)))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "execute_many: NULL runtime, inputs or outs");
    /* an outcome that holds nothing is zero already (outcomes start zeroed and are
       cleared or filled, and a filled one holds a state or an error): a million
       memsets of 264 bytes cost more than the runtime's own work per item */
    for (i = 0; i < count; i++)
        if (outs[i].state || outs[i].error || outs[i].attempt_errors || outs[i].trace) am2z_outcome_clear(&outs[i]);
    if (!count) return AM2Z_STATUS_OK;
    if (rt->ops->execute_many) return rt->ops->execute_many(rt, processor, inputs, count, session_id, outs);
    return am2z__runtime_execute_many_generic(rt, processor, inputs, count, session_id, outs);
}

AM2Z_API am2z_status am2z_runtime_stop_session(am2z_runtime *rt, const char *session_id, int64_t grace_ms) {
    am2z_status st;
    if (!rt || !session_id) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "stop_session: NULL argument");
    st = rt->ops->stop_session ? rt->ops->stop_session(rt, session_id, grace_ms < 0 ? 0 : grace_ms)
                               : AM2Z_STATUS_NOT_FOUND;
    if (st == AM2Z_STATUS_NOT_FOUND) am2z__fail(st, AM2Z_NTS, "stop_session '%s': no such session", session_id);
    return st;
}

AM2Z_API am2z_status am2z_runtime_stop_all_sessions(am2z_runtime *rt, int64_t grace_ms) {
    am2z_value *ids = am2z_runtime_active_sessions(rt);
    am2z_status st = AM2Z_STATUS_OK, one;
    size_t i;
    if (!rt) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "stop_all_sessions: NULL runtime");
    if (!ids) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "stop_all_sessions: out of memory");
    for (i = 0; i < am2z_value_len(ids); i++) {
        one = am2z_runtime_stop_session(rt, am2z_value_as_string(am2z_value_at(ids, i), NULL), grace_ms);
        /* a session that ended meanwhile is not a failure */
        if (one != AM2Z_STATUS_OK && one != AM2Z_STATUS_NOT_FOUND && st == AM2Z_STATUS_OK) st = one;
    }
    am2z_value_release(ids);
    return st;
}

AM2Z_API am2z_value *am2z_runtime_stats(am2z_runtime *rt) {
    am2z_value *v;
    if (!rt) return NULL;
    if (rt->ops->stats) return rt->ops->stats(rt);
    v = am2z_value_object();
    return v ? am2z_value_set(v, "registeredProcessors", am2z_runtime_list(rt)) : NULL;
}

AM2Z_API am2z_value *am2z_runtime_processor_stats(am2z_runtime *rt, const char *name) {
    am2z_value *all = name ? am2z_runtime_stats(rt) : NULL;
    const am2z_value *procs = am2z_value_find(all, "processors", 10);
    am2z_value *one = am2z_value_retain(am2z_value_find(procs, name, name ? strlen(name) : 0));
    am2z_value_release(all);
    return one;
}

AM2Z_API am2z_value *am2z_runtime_session_stats(am2z_runtime *rt, const char *session_id) {
    am2z_value *v;
    if (!rt || !session_id) {
        am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "session_stats: NULL argument");
        return NULL;
    }
    v = rt->ops->session_stats ? rt->ops->session_stats(rt, session_id) : NULL;
    if (!v) am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "session_stats '%s': no such session", session_id);
    return v;
}

AM2Z_API am2z_value *am2z_runtime_active_sessions(am2z_runtime *rt) {
    if (!rt) return NULL;
    return rt->ops->active_sessions ? rt->ops->active_sessions(rt) : am2z_value_array();
}

/* ---- metrics text ---- */

/* One metric family; its # HELP and # TYPE lines go out before its first sample. */
typedef struct am2z__mfam {
    const char *name, *type, *help;
} am2z__mfam;

typedef struct am2z__mtext {
    am2z__vec b;
    const char *prefix;
    const am2z__mfam *cur; /* family of the last sample */
} am2z__mtext;

static void am2z__mtext_escaped(am2z__vec *b, const char *s) {
    for (; *s; s++) {
        if (*s == '\\') am2z__vec_put(b, "\\\\", 2);
        else if (*s == '"') am2z__vec_put(b, "\\\"", 2);
        else if (*s == '\n') am2z__vec_put(b, "\\n", 2);
        else am2z__vec_putc(b, *s);
    }
}

static void am2z__mtext_label(am2z__vec *b, int *n, const char *key, const char *value) {
    if (!key || !value) return;
    am2z__vec_putc(b, *n ? ',' : '{');
    am2z__vec_puts(b, key);
    am2z__vec_put(b, "=\"", 2);
    am2z__mtext_escaped(b, value);
    am2z__vec_putc(b, '"');
    (*n)++;
}

static void am2z__mtext_name(am2z__mtext *m, const am2z__mfam *f, const char *suffix) {
    am2z__vec_puts(&m->b, m->prefix);
    am2z__vec_putc(&m->b, '_');
    am2z__vec_puts(&m->b, f->name);
    am2z__vec_puts(&m->b, suffix);
}

/* One sample line: <prefix>_<family><suffix>{session,processor,xk} value. Labels with a
   NULL value are left out; the family's header goes first when it is new. */
static void am2z__mtext_sample(am2z__mtext *m, const am2z__mfam *f, const char *suffix, const char *session,
                               const char *processor, const char *xk, const char *xv, const char *value) {
    int n = 0;
    if (m->cur != f) {
        am2z__vec_put(&m->b, "# HELP ", 7);
        am2z__mtext_name(m, f, "");
        am2z__vec_putc(&m->b, ' ');
        am2z__vec_puts(&m->b, f->help);
        am2z__vec_put(&m->b, "\n# TYPE ", 8);
        am2z__mtext_name(m, f, "");
        am2z__vec_putc(&m->b, ' ');
        am2z__vec_puts(&m->b, f->type);
        am2z__vec_putc(&m->b, '\n');
        m->cur = f;
    }
    am2z__mtext_name(m, f, suffix);
    am2z__mtext_label(&m->b, &n, "session", session);
    am2z__mtext_label(&m->b, &n, "processor", processor);
    am2z__mtext_label(&m->b, &n, xk, xv);
    if (n) am2z__vec_putc(&m->b, '}');
    am2z__vec_putc(&m->b, ' ');
    am2z__vec_puts(&m->b, value);
    am2z__vec_putc(&m->b, '\n');
}

/* Divides the decimal text s (from am2z__fmt_double) by 1000 by moving its point, so
   milliseconds become seconds without a rounding step ("0.001024" -> "0.000001024"). */
static void am2z__mtext_milli(char *s /* >= 48 bytes */) {
    char d[48], *e = strchr(s, 'e'), *o = s + (*s == '-');
    size_t n = 0, i, p = (size_t)-1;
    if (e) { /* exponent form: lower the exponent */
        am2z__fmt_int((int64_t)strtol(e + 1, NULL, 10) - 3, e + 1); /* e is within 25 bytes of s */
        return;
    }
    for (i = 0; o[i]; i++) /* the digits, and where the point was */
        if (o[i] == '.') p = n;
        else d[n++] = o[i];
    if (p == (size_t)-1) p = n;
    if (p <= 3) { /* "0." then 3 - p zeros and every digit */
        memcpy(o, "0.000", 5 - p);
        memcpy(o + 5 - p, d, n);
        o[5 - p + n] = 0;
    } else {
        memcpy(o, d, p - 3);
        o[p - 3] = '.';
        memcpy(o + p - 2, d + p - 3, n - p + 3);
        o[n + 1] = 0;
    }
    for (i = strlen(o); i > 2 && o[i - 1] == '0' && o[i - 2] != '.'; i--) o[i - 1] = 0; /* "0.0010" -> "0.001" */
}

/* A number's text (ints as ints), divided by 1000 when milli is set; NULL for a
   non-number. */
static const char *am2z__mtext_num(const am2z_value *v, int milli, char *buf /* >= 48 */) {
    am2z_type t = am2z_value_type(v);
    if (t == AM2Z_TYPE_INT && !milli) am2z__fmt_int(am2z_value_as_int(v, 0), buf);
    else if (t == AM2Z_TYPE_INT || t == AM2Z_TYPE_DOUBLE) am2z__fmt_double(am2z_value_as_double(v, 0), buf);
    else return NULL;
    if (milli) am2z__mtext_milli(buf);
    return buf;
}

/* A sample of member key of obj, when it is a number. */
static void am2z__mtext_member(am2z__mtext *m, const am2z__mfam *f, const am2z_value *obj, const char *key,
                               const char *session, const char *processor, const char *xk, const char *xv) {
    char num[48];
    const char *t = am2z__mtext_num(am2z_value_find(obj, key, strlen(key)), 0, num);
    if (t) am2z__mtext_sample(m, f, "", session, processor, xk, xv, t);
}

static const am2z__mfam am2z__mf_uptime = {"uptime_seconds", "gauge", "Seconds since the runtime was created."};
static const am2z__mfam am2z__mf_workers = {"workers", "gauge", "Worker threads of this process."};
static const am2z__mfam am2z__mf_running = {"running", "gauge", "Attempts executing now in this process."};
static const am2z__mfam am2z__mf_registered = {"registered_processors", "gauge", "Processors registered with the runtime."};
static const am2z__mfam am2z__mf_queued = {"queued", "gauge", "Top-level executions waiting for a worker."};
static const am2z__mfam am2z__mf_awaiting = {"awaiting", "gauge", "Executions whose outcome this process waits for."};
static const am2z__mfam am2z__mf_rt_exec = {"runtime_executions_total", "counter",
                                            "Executions this process finished, nested calls included."};
static const am2z__mfam am2z__mf_rt_retry = {"runtime_retries_total", "counter", "Attempts this process retried."};
static const am2z__mfam am2z__mf_exec = {"executions_total", "counter", "Executions of a processor, nested calls included."};
static const am2z__mfam am2z__mf_retry = {"retries_total", "counter", "Attempts of a processor that were retried."};
static const am2z__mfam am2z__mf_dur = {"execution_duration_seconds", "histogram", "Time of an execution's attempts."};
static const am2z__mfam am2z__mf_jobs = {"queue_jobs", "gauge", "Jobs in each list or set of a processor's queue."};
static const am2z__mfam am2z__mf_s_running = {"session_running", "gauge", "Unfinished top-level executions of a session."};
static const am2z__mfam am2z__mf_s_sub = {"session_submitted_total", "counter", "Top-level executions submitted in a session."};
static const am2z__mfam am2z__mf_s_cancel = {"session_cancelled_total", "counter", "Executions of a session that were cancelled."};
static const am2z__mfam am2z__mf_s_exec = {"session_executions_total", "counter",
                                           "Executions of a processor in a session, nested calls included."};
static const am2z__mfam am2z__mf_s_retry = {"session_retries_total", "counter",
                                            "Attempts of a processor in a session that were retried."};

/* The histogram of one processor's "latency" stats ({count, sumMs, buckets}). */
static void am2z__mtext_histogram(am2z__mtext *m, const char *processor, const am2z_value *lat) {
    const am2z_value *bk = am2z_value_find(lat, "buckets", 7), *c = am2z_value_find(lat, "count", 5);
    char le[48], num[48];
    size_t i;
    if (!bk || !am2z__mtext_num(c, 0, num)) return;
    for (i = 0; i < am2z_value_len(bk); i++) {
        const am2z_value *pair = am2z_value_at(bk, i);
        char n2[48];
        if (!am2z__mtext_num(am2z_value_at(pair, 0), 1, le) || !am2z__mtext_num(am2z_value_at(pair, 1), 0, n2)) continue;
        am2z__mtext_sample(m, &am2z__mf_dur, "_bucket", NULL, processor, "le", le, n2);
    }
    am2z__mtext_sample(m, &am2z__mf_dur, "_bucket", NULL, processor, "le", "+Inf", num);
    if (am2z__mtext_num(am2z_value_find(lat, "sumMs", 5), 1, le))
        am2z__mtext_sample(m, &am2z__mf_dur, "_sum", NULL, processor, NULL, NULL, le);
    am2z__mtext_sample(m, &am2z__mf_dur, "_count", NULL, processor, NULL, NULL, num);
}

/* queue_jobs samples of a {<processor>: {<state>: n}} object. */
static void am2z__mtext_queues(am2z__mtext *m, const char *session, const am2z_value *procs) {
    size_t i, k;
    for (i = 0; i < am2z_value_len(procs); i++) {
        const char *proc = am2z_value_key_at(procs, i, NULL);
        const am2z_value *q = am2z_value_member_at(procs, i);
        for (k = 0; k < am2z_value_len(q); k++) {
            char num[48];
            const char *t = am2z__mtext_num(am2z_value_member_at(q, k), 0, num);
            if (t) am2z__mtext_sample(m, &am2z__mf_jobs, "", session, proc, "state", am2z_value_key_at(q, k, NULL), t);
        }
    }
}

/* Samples of the runtime-wide stats st (queue: whether they are the queue runtime's). */
static void am2z__mtext_runtime(am2z__mtext *m, const am2z_value *st, int queue) {
    const am2z_value *procs = am2z_value_find(st, "processors", 10), *reg = am2z_value_find(st, "registeredProcessors", 20);
    char num[48];
    size_t i;
    if (am2z__mtext_num(am2z_value_find(st, "uptimeMs", 8), 1, num))
        am2z__mtext_sample(m, &am2z__mf_uptime, "", NULL, NULL, NULL, NULL, num);
    am2z__mtext_member(m, &am2z__mf_workers, st, "workers", NULL, NULL, NULL, NULL);
    am2z__mtext_member(m, &am2z__mf_running, st, "running", NULL, NULL, NULL, NULL);
    if (am2z_value_type(reg) == AM2Z_TYPE_ARRAY) {
        am2z__fmt_int((int64_t)am2z_value_len(reg), num);
        am2z__mtext_sample(m, &am2z__mf_registered, "", NULL, NULL, NULL, NULL, num);
    }
    am2z__mtext_member(m, &am2z__mf_queued, st, "queued", NULL, NULL, NULL, NULL);
    am2z__mtext_member(m, &am2z__mf_awaiting, st, "awaiting", NULL, NULL, NULL, NULL);
    am2z__mtext_member(m, &am2z__mf_rt_exec, st, "completed", NULL, NULL, "outcome", "completed");
    am2z__mtext_member(m, &am2z__mf_rt_exec, st, "failed", NULL, NULL, "outcome", "failed");
    am2z__mtext_member(m, &am2z__mf_rt_retry, st, "retried", NULL, NULL, NULL, NULL);
    if (queue) {
        am2z__mtext_queues(m, NULL, procs);
        return;
    }
    for (i = 0; i < am2z_value_len(procs); i++) {
        const char *p = am2z_value_key_at(procs, i, NULL);
        am2z__mtext_member(m, &am2z__mf_exec, am2z_value_member_at(procs, i), "completed", NULL, p, "outcome", "completed");
        am2z__mtext_member(m, &am2z__mf_exec, am2z_value_member_at(procs, i), "failed", NULL, p, "outcome", "failed");
    }
    for (i = 0; i < am2z_value_len(procs); i++)
        am2z__mtext_member(m, &am2z__mf_retry, am2z_value_member_at(procs, i), "retried", NULL,
                           am2z_value_key_at(procs, i, NULL), NULL, NULL);
    for (i = 0; i < am2z_value_len(procs); i++)
        am2z__mtext_histogram(m, am2z_value_key_at(procs, i, NULL), am2z_value_find(am2z_value_member_at(procs, i), "latency", 7));
}

/* Samples of the session stats ss[0..n) (NULL entries: sessions that ended). */
static void am2z__mtext_sessions(am2z__mtext *m, am2z_value *const *ss, size_t n, int queue) {
    static const am2z__mfam *const per_session[3] = {&am2z__mf_s_running, &am2z__mf_s_sub, &am2z__mf_s_cancel};
    static const char *const keys[3] = {"running", "submitted", "cancelled"};
    size_t i, j, f;
    if (queue) {
        for (i = 0; i < n; i++)
            am2z__mtext_queues(m, am2z_value_get_string(ss[i], "sessionId", ""), am2z_value_find(ss[i], "queues", 6));
        return;
    }
    for (f = 0; f < 3; f++)
        for (i = 0; i < n; i++)
            am2z__mtext_member(m, per_session[f], ss[i], keys[f], am2z_value_get_string(ss[i], "sessionId", ""), NULL,
                               NULL, NULL);
    for (f = 0; f < 3; f++) {
        for (i = 0; i < n; i++) {
            const char *sid = am2z_value_get_string(ss[i], "sessionId", "");
            const am2z_value *procs = am2z_value_find(ss[i], "processors", 10);
            for (j = 0; j < am2z_value_len(procs); j++) {
                const char *p = am2z_value_key_at(procs, j, NULL);
                const am2z_value *c = am2z_value_member_at(procs, j);
                if (f == 0) am2z__mtext_member(m, &am2z__mf_s_exec, c, "completed", sid, p, "outcome", "completed");
                if (f == 1) am2z__mtext_member(m, &am2z__mf_s_exec, c, "failed", sid, p, "outcome", "failed");
                if (f == 2) am2z__mtext_member(m, &am2z__mf_s_retry, c, "retried", sid, p, NULL, NULL);
            }
        }
    }
}

static int am2z__metrics_prefix_ok(const char *p) {
    size_t i, n = strlen(p);
    if (n == 0 || n > AM2Z_METRICS_PREFIX_MAX || (p[0] >= '0' && p[0] <= '9')) return 0;
    for (i = 0; i < n; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9') ||
              p[i] == '_' || p[i] == ':'))
            return 0;
    return 1;
}

AM2Z_API am2z_status am2z_runtime_metrics_text(am2z_runtime *rt, const char *prefix, char **out, size_t *len) {
    am2z_value *st, *ids, **ss = NULL;
    am2z__mtext m;
    size_t i, n, got = 0;
    int queue;
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!rt || !out) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "metrics_text: NULL argument");
    if (prefix && !am2z__metrics_prefix_ok(prefix))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "metrics_text: prefix '%.80s' is not 1 to %d bytes of [A-Za-z0-9_:] starting with a non-digit",
                          prefix, AM2Z_METRICS_PREFIX_MAX);
    if (!(st = am2z_runtime_stats(rt))) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "metrics_text: out of memory");
    queue = am2z_value_type(am2z_value_find(st, "queues", 6)) == AM2Z_TYPE_OBJECT;
    ids = am2z_runtime_active_sessions(rt);
    n = am2z_value_len(ids);
    if (n) ss = (am2z_value **)am2z__malloc(n * sizeof *ss);
    for (i = 0; ss && i < n; i++) /* a session that ended meanwhile has no stats: skipped */
        if ((ss[got] = am2z_runtime_session_stats(rt, am2z_value_as_string(am2z_value_at(ids, i), NULL))) != NULL) got++;
    am2z__vec_init(&m.b, NULL, 0);
    m.prefix = prefix ? prefix : "am2z";
    m.cur = NULL;
    am2z__mtext_runtime(&m, st, queue);
    am2z__mtext_sessions(&m, ss, got, queue);
    am2z__vec_putc(&m.b, 0);
    for (i = 0; i < got; i++) am2z_value_release(ss[i]);
    am2z__free(ss);
    am2z_value_release(ids);
    am2z_value_release(st);
    if (m.b.failed || (n && !ss) || !ids) {
        am2z__vec_free(&m.b);
        return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "metrics_text: out of memory");
    }
    *out = (char *)m.b.p;
    if (len) *len = m.b.n - 1;
    return AM2Z_STATUS_OK;
}

/* ---- circuit breakers (local and inline runtimes; the queue runtime keeps them in
   Redis) ----
   One record per processor name, made on first use, under rt->br_lock. enter runs
   before an attempt and leave after it with the ticket enter gave: -1 no breaker, 0 an
   attempt of a closed breaker, > 0 a probe of the half-open round with that
   generation (every state change bumps it, so a late probe of an earlier round is
   ignored). Events are emitted after the lock is released. */

enum { AM2Z__BR_CLOSED, AM2Z__BR_OPEN, AM2Z__BR_HALF };

typedef struct am2z__breaker {
    struct am2z__breaker *next;
    char *name;
    int state, gen, probes;      /* probes: running in this half-open round */
    int64_t until;               /* open: when it turns half-open; half-open: when the round's probes expire */
    int64_t *fails;              /* ring of the last cap failure times (closed) */
    int cap, nfail, head;
} am2z__breaker;

/* The change a call made, to emit once unlocked. */
typedef struct am2z__br_change {
    const char *event;           /* NULL: none */
    int failures, probe, probes;
    int64_t retry_at;
} am2z__br_change;

static am2z__breaker *am2z__breaker_get_locked(am2z_runtime *rt, const char *name, int cap) {
    am2z__breaker *b;
    for (b = rt->breakers; b; b = b->next)
        if (strcmp(b->name, name) == 0) break;
    if (!b) {
        b = (am2z__breaker *)am2z__malloc(sizeof *b);
        if (!b) return NULL;
        memset(b, 0, sizeof *b);
        b->gen = 1;
        if (!(b->name = am2z__strdup(name))) { am2z__free(b); return NULL; }
        b->next = rt->breakers;
        rt->breakers = b;
    }
    if (b->cap != cap) { /* first use, or re-registered with another threshold: count afresh */
        int64_t *f = (int64_t *)am2z__malloc((size_t)cap * sizeof *f);
        if (!f) return NULL;
        am2z__free(b->fails);
        b->fails = f;
        b->cap = cap;
        b->nfail = b->head = 0;
    }
    return b;
}

static void am2z__breaker_set_locked(am2z__breaker *b, int state, int64_t until) {
    b->state = state;
    b->until = until;
    b->gen = b->gen == INT_MAX ? 1 : b->gen + 1;
    b->probes = 0;
    b->nfail = b->head = 0;
}

static void am2z__breaker_emit(am2z_runtime *rt, const char *name, const am2z_breaker_policy *pol,
                               const am2z__br_change *c) {
    am2z_value *d;
    if (!c->event || !am2z__runtime_has_handlers(rt, c->event)) return;
    d = am2z_value_set(am2z_value_object(), "processorName", am2z_value_string(name));
    if (strcmp(c->event, "processor:breaker:opened") == 0) {
        d = am2z_value_set(d, "failures", am2z_value_int(c->failures));
        d = am2z_value_set(d, "probe", am2z_value_int(c->probe));
        d = am2z_value_set(d, "windowMs", am2z_value_int(pol->window_ms));
        d = am2z_value_set(d, "openMs", am2z_value_int(pol->open_ms));
        d = am2z_value_set(d, "retryAt", am2z_value_int(c->retry_at));
    } else if (strcmp(c->event, "processor:breaker:half-open") == 0) {
        d = am2z_value_set(d, "probes", am2z_value_int(c->probes));
        d = am2z_value_set(d, "retryAt", am2z_value_int(c->retry_at));
    }
    if (d) am2z_runtime_emit(rt, c->event, d);
    am2z_value_release(d);
}

/* Before an attempt of p at now_ms (the runtime's clock, epoch ms): NULL when it may
   run (*ticket set), else the CircuitOpenError to fail it with. Out of memory lets
   the attempt run unguarded (ticket -1): a breaker must not fail calls by itself. */
static am2z_error *am2z__breaker_enter(am2z_runtime *rt, const am2z_processor *p, const char *exec_id,
                                       int64_t now_ms, int *ticket) {
    const am2z_breaker_policy *pol = &am2z_processor_desc_of(p)->breaker;
    const char *name = am2z_processor_name(p);
    am2z__br_change c;
    am2z__breaker *b;
    int64_t retry_at = 0;
    *ticket = -1;
    if (pol->failure_threshold <= 0) return NULL;
    memset(&c, 0, sizeof c);
    am2z__mutex_lock(&rt->br_lock);
    b = am2z__breaker_get_locked(rt, name, pol->failure_threshold);
    if (b && b->state == AM2Z__BR_CLOSED) {
        *ticket = 0;
    } else if (b) {
        if (now_ms >= b->until) { /* open time over, or the round's probes expired: a new round */
            if (b->state == AM2Z__BR_OPEN) {
                c.event = "processor:breaker:half-open";
                c.probes = pol->half_open_probes;
                c.retry_at = now_ms + pol->open_ms;
            }
            am2z__breaker_set_locked(b, AM2Z__BR_HALF, now_ms + pol->open_ms);
        }
        if (b->state == AM2Z__BR_HALF && b->probes < pol->half_open_probes) {
            b->probes++;
            *ticket = b->gen;
        } else {
            retry_at = b->until;
        }
    }
    am2z__mutex_unlock(&rt->br_lock);
    am2z__breaker_emit(rt, name, pol, &c);
    if (*ticket >= 0 || !b) return NULL;
    return am2z_error_with_location(am2z_error_circuit_open(name, retry_at, retry_at - now_ms), name, exec_id);
}

/* After the attempt enter admitted with ticket: err its error (NULL: success), late
   when it ended past its deadline (a timeout whatever it returned). */
static void am2z__breaker_leave(am2z_runtime *rt, const am2z_processor *p, int ticket, const am2z_error *err,
                                int late, int64_t now_ms) {
    const am2z_breaker_policy *pol = &am2z_processor_desc_of(p)->breaker;
    const char *name = am2z_processor_name(p);
    int counted = late || (err && err->kind != AM2Z_ERROR_CIRCUIT_OPEN && err->kind != AM2Z_ERROR_CANCELLED &&
                           (err->retryable || err->kind == AM2Z_ERROR_TIMEOUT));
    am2z__br_change c;
    am2z__breaker *b;
    if (ticket < 0 || pol->failure_threshold <= 0) return;
    memset(&c, 0, sizeof c);
    am2z__mutex_lock(&rt->br_lock);
    b = am2z__breaker_get_locked(rt, name, pol->failure_threshold);
    if (b && ticket > 0 && b->state == AM2Z__BR_HALF && b->gen == ticket) { /* a probe of this round */
        if (counted) {
            am2z__breaker_set_locked(b, AM2Z__BR_OPEN, now_ms + pol->open_ms);
            c.event = "processor:breaker:opened";
            c.failures = c.probe = 1;
            c.retry_at = b->until;
        } else if (!err && !late) {
            am2z__breaker_set_locked(b, AM2Z__BR_CLOSED, 0);
            c.event = "processor:breaker:closed";
        } else if (b->probes > 0) {
            b->probes--;
        }
    } else if (b && ticket == 0 && counted && b->state == AM2Z__BR_CLOSED) {
        b->fails[b->head] = now_ms;
        b->head = (b->head + 1) % b->cap;
        if (b->nfail < b->cap) b->nfail++;
        /* full ring: fails[head] is the oldest of the last cap failures */
        if (b->nfail == b->cap && now_ms - b->fails[b->head] <= pol->window_ms) {
            am2z__breaker_set_locked(b, AM2Z__BR_OPEN, now_ms + pol->open_ms);
            c.event = "processor:breaker:opened";
            c.failures = pol->failure_threshold;
            c.retry_at = b->until;
        }
    }
    am2z__mutex_unlock(&rt->br_lock);
    am2z__breaker_emit(rt, name, pol, &c);
}

static void am2z__breakers_free(am2z_runtime *rt) {
    while (rt->breakers) {
        am2z__breaker *b = rt->breakers;
        rt->breakers = b->next;
        am2z__free(b->fails);
        am2z__free(b->name);
        am2z__free(b);
    }
}

AM2Z_API void am2z_runtime_free(am2z_runtime *rt) {
    size_t i;
    if (!rt) return;
    if (am2z__runtime_inside(rt)) { /* forbidden: it would free the code's own runtime */
        am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "am2z_runtime_free: " AM2Z__RT_INSIDE);
        am2z_log_error(rt->logger, "am2z_runtime_free ignored: " AM2Z__RT_INSIDE);
        return;
    }
    am2z_runtime_stop(rt, 0);
    am2z__idem_table_free(rt);
    if (rt->ops->destroy) rt->ops->destroy(rt);
    for (i = 0; i < rt->reg_count; i++) am2z_processor_release(rt->reg[i]);
    am2z__free(rt->reg);
    am2z__free(rt->reg_index);
    am2z__handler_set_release(rt->handlers);
    am2z__rwlock_destroy(&rt->reg_lock);
    am2z__mutex_destroy(&rt->ev_lock);
    am2z__cond_destroy(&rt->ev_cv);
    am2z__breakers_free(rt);
    am2z__mutex_destroy(&rt->br_lock);
    am2z_logger_release(rt->logger);
    am2z__free(rt);
}

/* ==== 7c. stores ====================================================================== */

struct am2z_store {
    const am2z_store_ops *ops;
    void *user_data;
};

AM2Z_API am2z_store *am2z_store_new(const am2z_store_ops *ops, void *user_data, am2z_status *status) {
    am2z_store *s;
    if (!ops || !ops->put || !ops->get || !ops->remove || !ops->scan)
        return (am2z_store *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                              "store: ops need put, get, remove and scan"));
    s = (am2z_store *)am2z__malloc(sizeof *s);
    if (!s) return (am2z_store *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "store: out of memory"));
    s->ops = ops;
    s->user_data = user_data;
    if (status) *status = AM2Z_STATUS_OK;
    return s;
}

AM2Z_API void am2z_store_free(am2z_store *store) {
    if (!store) return;
    if (store->ops->close) store->ops->close(store->user_data);
    am2z__free(store);
}

static am2z_status am2z__store_check(am2z_store *store, const char *key, const char *op) {
    size_t n;
    if (!store || !key) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "store %s: no %s", op, store ? "key" : "store");
    n = strlen(key);
    if (n == 0) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "store %s: empty key", op);
    if (n > AM2Z_STORE_MAX_KEY)
        return am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "store %s: key of %zu bytes, at most %d", op, n, AM2Z_STORE_MAX_KEY);
    return AM2Z_STATUS_OK;
}

AM2Z_API am2z_status am2z_store_put(am2z_store *store, const char *key, const void *value, size_t len) {
    am2z_status st = am2z__store_check(store, key, "put");
    if (st != AM2Z_STATUS_OK) return st;
    if (!value && len) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "store put '%s': no value", key);
    if (len > AM2Z_STORE_MAX_VALUE)
        return am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "store put '%s': value of %zu bytes, at most %u", key, len,
                          (unsigned)AM2Z_STORE_MAX_VALUE);
    return store->ops->put(store->user_data, key, value ? value : "", len);
}

AM2Z_API am2z_status am2z_store_get(am2z_store *store, const char *key, void **value, size_t *len) {
    am2z_status st = am2z__store_check(store, key, "get");
    if (st != AM2Z_STATUS_OK) return st;
    if (!value || !len) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "store get '%s': no output", key);
    *value = NULL;
    *len = 0;
    return store->ops->get(store->user_data, key, value, len);
}

AM2Z_API am2z_status am2z_store_remove(am2z_store *store, const char *key) {
    am2z_status st = am2z__store_check(store, key, "remove");
    if (st != AM2Z_STATUS_OK) return st;
    return store->ops->remove(store->user_data, key);
}

AM2Z_API am2z_status am2z_store_scan(am2z_store *store, const char *prefix, am2z_store_scan_fn fn, void *fn_data) {
    if (!store || !fn) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "store scan: no %s", store ? "callback" : "store");
    return store->ops->scan(store->user_data, prefix ? prefix : "", fn, fn_data);
}

/* -- the in-memory map both built-in stores keep (under their lock) -- */

typedef struct am2z__kv_entry {
    struct am2z__kv_entry *next;
    uint64_t hash;
    size_t klen, vlen;
    char data[1]; /* key, NUL, value, NUL */
} am2z__kv_entry;

typedef struct am2z__kv {
    am2z__mutex mu;
    am2z__kv_entry **slots;
    size_t nslots, count;
    int64_t live_bytes; /* keys + values, as a compacted journal would hold them */
} am2z__kv;

static uint64_t am2z__kv_hash(const char *key, size_t n) { return am2z__hash_bytes(key, n, 0x6b76ULL); }

static am2z__kv_entry *am2z__kv_entry_new(const char *key, size_t klen, const void *value, size_t vlen) {
    am2z__kv_entry *e = (am2z__kv_entry *)am2z__malloc(sizeof *e + klen + vlen + 1);
    if (!e) return NULL;
    e->next = NULL;
    e->hash = am2z__kv_hash(key, klen);
    e->klen = klen;
    e->vlen = vlen;
    memcpy(e->data, key, klen);
    e->data[klen] = '\0';
    if (vlen) memcpy(e->data + klen + 1, value, vlen);
    e->data[klen + 1 + vlen] = '\0';
    return e;
}

static am2z__kv_entry **am2z__kv_find(am2z__kv *kv, const char *key, size_t klen, uint64_t h) {
    am2z__kv_entry **p;
    if (!kv->nslots) return NULL;
    for (p = &kv->slots[h & (kv->nslots - 1)]; *p; p = &(*p)->next)
        if ((*p)->hash == h && (*p)->klen == klen && memcmp((*p)->data, key, klen) == 0) return p;
    return NULL;
}

/* Takes e over; replaces an entry with its key. 0 when out of memory (e freed). */
static int am2z__kv_insert(am2z__kv *kv, am2z__kv_entry *e) {
    am2z__kv_entry **p;
    if (kv->count + 1 > kv->nslots / 4 * 3) { /* grow at 75% load */
        size_t n = kv->nslots ? kv->nslots * 2 : 16, i;
        am2z__kv_entry **slots = (am2z__kv_entry **)am2z__malloc(n * sizeof *slots);
        if (!slots) { am2z__free(e); return 0; }
        memset(slots, 0, n * sizeof *slots);
        for (i = 0; i < kv->nslots; i++)
            while (kv->slots[i]) {
                am2z__kv_entry *x = kv->slots[i];
                kv->slots[i] = x->next;
                x->next = slots[x->hash & (n - 1)];
                slots[x->hash & (n - 1)] = x;
            }
        am2z__free(kv->slots);
        kv->slots = slots;
        kv->nslots = n;
    }
    p = am2z__kv_find(kv, e->data, e->klen, e->hash);
    if (p) {
        am2z__kv_entry *old = *p;
        e->next = old->next;
        *p = e;
        kv->live_bytes -= (int64_t)(old->klen + old->vlen);
        am2z__free(old);
    } else {
        e->next = kv->slots[e->hash & (kv->nslots - 1)];
        kv->slots[e->hash & (kv->nslots - 1)] = e;
        kv->count++;
    }
    kv->live_bytes += (int64_t)(e->klen + e->vlen);
    return 1;
}

static void am2z__kv_delete(am2z__kv *kv, const char *key, size_t klen) {
    am2z__kv_entry **p = am2z__kv_find(kv, key, klen, am2z__kv_hash(key, klen)), *old;
    if (!p) return;
    old = *p;
    *p = old->next;
    kv->count--;
    kv->live_bytes -= (int64_t)(old->klen + old->vlen);
    am2z__free(old);
}

static void am2z__kv_clear(am2z__kv *kv) {
    size_t i;
    for (i = 0; i < kv->nslots; i++)
        while (kv->slots[i]) {
            am2z__kv_entry *x = kv->slots[i];
            kv->slots[i] = x->next;
            am2z__free(x);
        }
    am2z__free(kv->slots);
    kv->slots = NULL;
    kv->nslots = kv->count = 0;
    kv->live_bytes = 0;
}

static am2z_status am2z__kv_get(am2z__kv *kv, const char *key, void **value, size_t *len) {
    size_t klen = strlen(key);
    am2z__kv_entry **p;
    am2z_status st = AM2Z_STATUS_OK;
    am2z__mutex_lock(&kv->mu);
    p = am2z__kv_find(kv, key, klen, am2z__kv_hash(key, klen));
    if (!p) {
        st = am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "store get '%s': no such key", key);
    } else if (!(*value = am2z__malloc((*p)->vlen + 1))) {
        st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "store get '%s': out of memory", key);
    } else {
        memcpy(*value, (*p)->data + klen + 1, (*p)->vlen + 1);
        *len = (*p)->vlen;
    }
    am2z__mutex_unlock(&kv->mu);
    return st;
}

static am2z_status am2z__kv_scan(am2z__kv *kv, const char *prefix, am2z_store_scan_fn fn, void *fn_data) {
    size_t i, plen = strlen(prefix);
    am2z__kv_entry *e;
    am2z__mutex_lock(&kv->mu);
    for (i = 0; i < kv->nslots; i++)
        for (e = kv->slots[i]; e; e = e->next)
            if (e->klen >= plen && memcmp(e->data, prefix, plen) == 0 &&
                fn(e->data, e->data + e->klen + 1, e->vlen, fn_data))
                goto out;
out:
    am2z__mutex_unlock(&kv->mu);
    return AM2Z_STATUS_OK;
}

/* -- memory store -- */

static am2z_status am2z__mem_put(void *ud, const char *key, const void *value, size_t len) {
    am2z__kv *kv = (am2z__kv *)ud;
    am2z__kv_entry *e = am2z__kv_entry_new(key, strlen(key), value, len);
    int ok;
    if (!e) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "store put '%s': out of memory", key);
    am2z__mutex_lock(&kv->mu);
    ok = am2z__kv_insert(kv, e);
    am2z__mutex_unlock(&kv->mu);
    return ok ? AM2Z_STATUS_OK : am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "store put '%s': out of memory", key);
}
static am2z_status am2z__mem_get(void *ud, const char *key, void **value, size_t *len) {
    return am2z__kv_get((am2z__kv *)ud, key, value, len);
}
static am2z_status am2z__mem_remove(void *ud, const char *key) {
    am2z__kv *kv = (am2z__kv *)ud;
    am2z__mutex_lock(&kv->mu);
    am2z__kv_delete(kv, key, strlen(key));
    am2z__mutex_unlock(&kv->mu);
    return AM2Z_STATUS_OK;
}
static am2z_status am2z__mem_scan(void *ud, const char *prefix, am2z_store_scan_fn fn, void *fn_data) {
    return am2z__kv_scan((am2z__kv *)ud, prefix, fn, fn_data);
}
static void am2z__mem_close(void *ud) {
    am2z__kv *kv = (am2z__kv *)ud;
    am2z__kv_clear(kv);
    am2z__mutex_destroy(&kv->mu);
    am2z__free(kv);
}
static const am2z_store_ops am2z__mem_ops = {am2z__mem_put, am2z__mem_get, am2z__mem_remove, am2z__mem_scan,
                                             am2z__mem_close};

AM2Z_API am2z_store *am2z_memory_store_new(am2z_status *status) {
    am2z__kv *kv = (am2z__kv *)am2z__malloc(sizeof *kv);
    am2z_store *s;
    if (!kv) return (am2z_store *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "store: out of memory"));
    memset(kv, 0, sizeof *kv);
    if (am2z__mutex_init(&kv->mu) != 0) {
        am2z__free(kv);
        return (am2z_store *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "store: no lock"));
    }
    s = am2z_store_new(&am2z__mem_ops, kv, status);
    if (!s) am2z__mem_close(kv);
    return s;
}

#ifndef AM2Z_NO_FILE_STORE
/* -- file store: an append-only journal --
   record: u32 magic "AMZJ", u32 CRC-32C of the rest, u8 op (1 put, 2 remove),
           u32 key length, u32 value length, key, value; integers little-endian. */
#define AM2Z__J_MAGIC 0x4A5A4D41u
#define AM2Z__J_HEAD 17

/* CRC-32C (Castagnoli), reflected, a nibble at a time: a 16-entry constant table needs
   no initialisation (so no race) and still runs at several hundred MB/s. */
AM2Z__PRIVATE uint32_t am2z__crc32c(uint32_t crc, const void *data, size_t n) {
    static const uint32_t t[16] = {0x00000000, 0x105EC76F, 0x20BD8EDE, 0x30E349B1, 0x417B1DBC, 0x5125DAD3,
                                   0x61C69362, 0x7198540D, 0x82F63B78, 0x92A8FC17, 0xA24BB5A6, 0xB21572C9,
                                   0xC38D26C4, 0xD3D3E1AB, 0xE330A81A, 0xF36E6F75};
    const unsigned char *p = (const unsigned char *)data;
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        crc = (crc >> 4) ^ t[crc & 15];
        crc = (crc >> 4) ^ t[crc & 15];
    }
    return ~crc;
}

static void am2z__put_u32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static uint32_t am2z__get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct am2z__fstore {
    am2z__kv kv;
    struct am2z__fstore *next_open; /* in am2z__fs_open_list */
    dev_t dev;
    ino_t ino;
    int fd;
    int broken;                 /* a failed append could not be undone: writes refused */
    char *path, *tmp_path;
    am2z_file_store_desc desc;
    am2z_file_store_info info;
    am2z_logger *logger;
} am2z__fstore;

/* POSIX record locks belong to the process, so they cannot stop a second open of the
   same journal in this process (and closing that second descriptor would drop the first
   one's lock): open journals are also listed here, by device and inode. */
static am2z__mutex am2z__fs_open_lock = AM2Z__MUTEX_INITIALIZER;
static struct am2z__fstore *am2z__fs_open_list;

static void am2z__fs_list_remove(struct am2z__fstore *fs);

static am2z_status am2z__fs_io(const am2z__fstore *fs, const char *what) {
    return am2z__fail(AM2Z_STATUS_IO, AM2Z_NTS, "file store %s: %s: %s", fs->path, what, strerror(errno));
}

/* Under am2z__fs_open_lock: is the journal with this identity open in this process? */
static int am2z__fs_listed(dev_t dev, ino_t ino) {
    am2z__fstore *o;
    for (o = am2z__fs_open_list; o; o = o->next_open)
        if (o->dev == dev && o->ino == ino) return 1;
    return 0;
}

static void am2z__fs_list_remove(am2z__fstore *fs) {
    am2z__fstore **p;
    am2z__mutex_lock(&am2z__fs_open_lock);
    for (p = &am2z__fs_open_list; *p; p = &(*p)->next_open)
        if (*p == fs) {
            *p = fs->next_open;
            break;
        }
    am2z__mutex_unlock(&am2z__fs_open_lock);
}

static int am2z__write_all(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int am2z__read_all(int fd, unsigned char *p, size_t n, off_t at) {
    while (n > 0) {
        ssize_t r = pread(fd, p, n, at);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
        at += r;
    }
    return 0;
}

/* One record in a new buffer (NULL when out of memory). */
static unsigned char *am2z__fs_record(int op, const char *key, size_t klen, const void *value, size_t vlen, size_t *n) {
    unsigned char *r = (unsigned char *)am2z__malloc(AM2Z__J_HEAD + klen + vlen);
    if (!r) return NULL;
    r[8] = (unsigned char)op;
    am2z__put_u32(r + 9, (uint32_t)klen);
    am2z__put_u32(r + 13, (uint32_t)vlen);
    memcpy(r + AM2Z__J_HEAD, key, klen);
    if (vlen) memcpy(r + AM2Z__J_HEAD + klen, value, vlen);
    am2z__put_u32(r, AM2Z__J_MAGIC);
    am2z__put_u32(r + 4, am2z__crc32c(0, r + 8, AM2Z__J_HEAD - 8 + klen + vlen));
    *n = AM2Z__J_HEAD + klen + vlen;
    return r;
}

/* Appends one record and makes it durable; on failure the journal is cut back to where
   it was, so a failed write never leaves a half record in front of later ones. */
static am2z_status am2z__fs_append(am2z__fstore *fs, const unsigned char *rec, size_t n) {
    off_t end = (off_t)fs->info.journal_bytes;
    if (fs->broken)
        return am2z__fail(AM2Z_STATUS_IO, AM2Z_NTS, "file store %s: an earlier write failed and could not be undone; "
                          "reopen the store", fs->path);
    if (am2z__write_all(fs->fd, rec, n) != 0 || (!fs->desc.no_fsync && fsync(fs->fd) != 0)) {
        am2z_status st = am2z__fs_io(fs, "write");
        if (ftruncate(fs->fd, end) != 0 || lseek(fs->fd, end, SEEK_SET) != end) fs->broken = 1;
        return st;
    }
    fs->info.journal_bytes += (int64_t)n;
    return AM2Z_STATUS_OK;
}

static am2z_status am2z__fs_compact_locked(am2z__fstore *fs) {
    size_t i;
    int fd;
    int64_t bytes = 0;
    struct flock lk;
    fd = open(fs->tmp_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return am2z__fs_io(fs, "compaction: create the temporary journal");
    for (i = 0; i < fs->kv.nslots; i++) {
        am2z__kv_entry *e;
        for (e = fs->kv.slots[i]; e; e = e->next) {
            size_t n;
            unsigned char *rec = am2z__fs_record(1, e->data, e->klen, e->data + e->klen + 1, e->vlen, &n);
            int bad = !rec || am2z__write_all(fd, rec, n) != 0;
            am2z__free(rec);
            if (bad) goto fail;
            bytes += (int64_t)n;
        }
    }
    memset(&lk, 0, sizeof lk);
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    /* lock the new journal before it takes the path, so no other process can open it */
    if (fsync(fd) != 0 || fcntl(fd, F_SETLK, &lk) != 0) goto fail;
    {
        /* rename and new identity in one step for opens in this process */
        struct stat sb;
        int renamed;
        am2z__mutex_lock(&am2z__fs_open_lock);
        renamed = fstat(fd, &sb) == 0 && rename(fs->tmp_path, fs->path) == 0;
        if (renamed) {
            fs->dev = sb.st_dev;
            fs->ino = sb.st_ino;
        }
        am2z__mutex_unlock(&am2z__fs_open_lock);
        if (!renamed) goto fail;
    }
    {
        /* the rename itself is durable once the directory is synced */
        char *dir = am2z__strdup(fs->path), *slash = dir ? strrchr(dir, '/') : NULL;
        int dfd;
        if (dir) {
            if (slash) *(slash == dir ? slash + 1 : slash) = '\0';
            dfd = open(slash ? dir : ".", O_RDONLY);
            if (dfd >= 0) {
                if (!fs->desc.no_fsync) fsync(dfd);
                close(dfd);
            }
            am2z__free(dir);
        }
    }
    close(fs->fd);
    fs->fd = fd;
    fs->info.journal_bytes = bytes;
    fs->info.compactions++;
    return AM2Z_STATUS_OK;
fail:
    {
        am2z_status st = am2z__fs_io(fs, "compaction");
        close(fd);
        unlink(fs->tmp_path);
        return st;
    }
}

static void am2z__fs_maybe_compact(am2z__fstore *fs) {
    double ratio = fs->desc.compact_ratio;
    if (fs->info.journal_bytes < fs->desc.compact_min_bytes) return;
    /* live_bytes counts keys and values; each record adds its head */
    if ((double)fs->info.journal_bytes <= ratio * (double)(fs->kv.live_bytes + (int64_t)fs->kv.count * AM2Z__J_HEAD))
        return;
    if (am2z__fs_compact_locked(fs) != AM2Z_STATUS_OK)
        am2z_log_warn(fs->logger, "%s (the journal stays as it is)", am2z_status_detail());
}

static am2z_status am2z__fs_put(void *ud, const char *key, const void *value, size_t len) {
    am2z__fstore *fs = (am2z__fstore *)ud;
    size_t klen = strlen(key), n;
    am2z__kv_entry *e = am2z__kv_entry_new(key, klen, value, len);
    unsigned char *rec = e ? am2z__fs_record(1, key, klen, value, len, &n) : NULL;
    am2z_status st;
    if (!rec) {
        am2z__free(e);
        return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "store put '%s': out of memory", key);
    }
    am2z__mutex_lock(&fs->kv.mu);
    st = am2z__fs_append(fs, rec, n);
    if (st == AM2Z_STATUS_OK) {
        /* durable now: a failed insert (no memory to grow the map) would make memory and
           disk disagree, so it is reported and the next open sees the record */
        if (!am2z__kv_insert(&fs->kv, e))
            st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "store put '%s': written, but out of memory", key);
        am2z__fs_maybe_compact(fs);
    } else {
        am2z__free(e);
    }
    am2z__mutex_unlock(&fs->kv.mu);
    am2z__free(rec);
    return st;
}

static am2z_status am2z__fs_get(void *ud, const char *key, void **value, size_t *len) {
    return am2z__kv_get(&((am2z__fstore *)ud)->kv, key, value, len);
}

static am2z_status am2z__fs_remove(void *ud, const char *key) {
    am2z__fstore *fs = (am2z__fstore *)ud;
    size_t klen = strlen(key), n;
    unsigned char *rec;
    am2z_status st = AM2Z_STATUS_OK;
    am2z__mutex_lock(&fs->kv.mu);
    if (am2z__kv_find(&fs->kv, key, klen, am2z__kv_hash(key, klen))) { /* absent: nothing to write */
        rec = am2z__fs_record(2, key, klen, NULL, 0, &n);
        st = rec ? am2z__fs_append(fs, rec, n) : am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "store remove: out of memory");
        am2z__free(rec);
        if (st == AM2Z_STATUS_OK) {
            am2z__kv_delete(&fs->kv, key, klen);
            am2z__fs_maybe_compact(fs);
        }
    }
    am2z__mutex_unlock(&fs->kv.mu);
    return st;
}

static am2z_status am2z__fs_scan(void *ud, const char *prefix, am2z_store_scan_fn fn, void *fn_data) {
    return am2z__kv_scan(&((am2z__fstore *)ud)->kv, prefix, fn, fn_data);
}

static void am2z__fs_close(void *ud) {
    am2z__fstore *fs = (am2z__fstore *)ud;
    am2z__fs_list_remove(fs);
    if (fs->fd >= 0) close(fs->fd);
    am2z__kv_clear(&fs->kv);
    am2z__mutex_destroy(&fs->kv.mu);
    am2z_logger_release(fs->logger);
    am2z__free(fs->path);
    am2z__free(fs->tmp_path);
    am2z__free(fs);
}

static const am2z_store_ops am2z__fs_ops = {am2z__fs_put, am2z__fs_get, am2z__fs_remove, am2z__fs_scan, am2z__fs_close};

/* Replays the journal into fs->kv; cuts a torn tail (or, with repair, a corrupt middle). */
static am2z_status am2z__fs_replay(am2z__fstore *fs) {
    struct stat sb;
    int64_t size, off = 0;
    unsigned char head[AM2Z__J_HEAD], *body = NULL;
    size_t cap = 0;
    am2z_status st = AM2Z_STATUS_OK;
    if (fstat(fs->fd, &sb) != 0) return am2z__fs_io(fs, "stat");
    size = (int64_t)sb.st_size;
    while (off < size) {
        uint32_t klen, vlen;
        int64_t end;
        int good = 0, torn = 0;
        if (size - off < AM2Z__J_HEAD) {
            torn = 1;
        } else if (am2z__read_all(fs->fd, head, AM2Z__J_HEAD, (off_t)off) != 0) {
            st = am2z__fs_io(fs, "read");
            break;
        } else {
            klen = am2z__get_u32(head + 9);
            vlen = am2z__get_u32(head + 13);
            if (am2z__get_u32(head) == AM2Z__J_MAGIC && (head[8] == 1 || head[8] == 2) && klen >= 1 &&
                klen <= AM2Z_STORE_MAX_KEY && vlen <= AM2Z_STORE_MAX_VALUE && (head[8] == 1 || vlen == 0)) {
                end = off + AM2Z__J_HEAD + (int64_t)klen + vlen;
                if (end > size) {
                    torn = 1;
                } else {
                    if (cap < (size_t)klen + vlen + 1) {
                        am2z__free(body);
                        cap = (size_t)klen + vlen + 1;
                        if (!(body = (unsigned char *)am2z__malloc(cap))) {
                            st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "file store %s: out of memory", fs->path);
                            break;
                        }
                    }
                    if (am2z__read_all(fs->fd, body, (size_t)klen + vlen, (off_t)(off + AM2Z__J_HEAD)) != 0) {
                        st = am2z__fs_io(fs, "read");
                        break;
                    }
                    good = am2z__crc32c(am2z__crc32c(0, head + 8, AM2Z__J_HEAD - 8), body, (size_t)klen + vlen) ==
                           am2z__get_u32(head + 4) && memchr(body, 0, klen) == NULL;
                    torn = !good && end == size; /* the last record, partly written */
                }
            } else {
                /* no valid head: torn only when nothing but zeros follows (a file extended
                   by the crash but never written) */
                unsigned char z[256];
                int64_t at = off;
                torn = 1;
                while (torn && at < size) {
                    size_t n = size - at < (int64_t)sizeof z ? (size_t)(size - at) : sizeof z, i;
                    if (am2z__read_all(fs->fd, z, n, (off_t)at) != 0) { torn = 0; break; }
                    for (i = 0; i < n; i++) if (z[i]) { torn = 0; break; }
                    at += (int64_t)n;
                }
            }
        }
        if (good) {
            if (head[8] == 1) {
                am2z__kv_entry *e = am2z__kv_entry_new((const char *)body, klen, body + klen, vlen);
                if (!e || !am2z__kv_insert(&fs->kv, e)) {
                    st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "file store %s: out of memory", fs->path);
                    break;
                }
            } else {
                am2z__kv_delete(&fs->kv, (const char *)body, klen);
            }
            off = end;
            continue;
        }
        if (!torn && !fs->desc.repair) {
            st = am2z__fail(AM2Z_STATUS_PROTOCOL, (size_t)off, "file store %s: corrupt record at offset %lld with "
                            "%lld bytes after it (not a torn write; open with repair to cut the journal there)",
                            fs->path, (long long)off, (long long)(size - off));
            break;
        }
        if (ftruncate(fs->fd, (off_t)off) != 0 || (!fs->desc.no_fsync && fsync(fs->fd) != 0)) {
            st = am2z__fs_io(fs, "cut the journal");
            break;
        }
        fs->info.torn_bytes_cut = size - off;
        am2z_log_warn(fs->logger, "file store %s: %s record at offset %lld: cut %lld bytes off the journal", fs->path,
                      torn ? "torn last" : "corrupt", (long long)off, (long long)(size - off));
        size = off;
    }
    am2z__free(body);
    fs->info.journal_bytes = off;
    if (st == AM2Z_STATUS_OK && lseek(fs->fd, (off_t)off, SEEK_SET) != (off_t)off) st = am2z__fs_io(fs, "seek");
    return st;
}

AM2Z_API am2z_store *am2z_file_store_new(const am2z_file_store_desc *desc, am2z_status *status) {
    am2z__fstore *fs;
    am2z_store *s;
    am2z_status st;
    struct flock lk;
    struct stat sb;
    size_t n;
    if (!desc || !desc->path || !desc->path[0])
        return (am2z_store *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                              "file store: no path"));
    if (desc->compact_ratio < 0 || (desc->compact_ratio > 0 && desc->compact_ratio < 1.1) || desc->compact_min_bytes < 0)
        return (am2z_store *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                              "file store %s: compact_ratio must be 0 (default) or >= 1.1 and "
                                              "compact_min_bytes >= 0", desc->path));
    fs = (am2z__fstore *)am2z__malloc(sizeof *fs);
    if (!fs) return (am2z_store *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "file store: out of memory"));
    memset(fs, 0, sizeof *fs);
    fs->fd = -1;
    fs->desc = *desc;
    if (fs->desc.compact_ratio == 0) fs->desc.compact_ratio = 2.0;
    if (fs->desc.compact_min_bytes == 0) fs->desc.compact_min_bytes = 1 << 20;
    n = strlen(desc->path);
    fs->path = am2z__strdup(desc->path);
    fs->tmp_path = (char *)am2z__malloc(n + sizeof ".compact");
    fs->logger = desc->logger ? am2z_logger_retain(desc->logger) : am2z_logger_new(NULL, NULL);
    fs->desc.path = fs->path;
    fs->desc.logger = NULL;
    if (!fs->path || !fs->tmp_path || !fs->logger || am2z__mutex_init(&fs->kv.mu) != 0) {
        am2z_logger_release(fs->logger);
        am2z__free(fs->path);
        am2z__free(fs->tmp_path);
        am2z__free(fs);
        return (am2z_store *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "file store: out of memory"));
    }
    memcpy(fs->tmp_path, desc->path, n);
    memcpy(fs->tmp_path + n, ".compact", sizeof ".compact");
    memset(&lk, 0, sizeof lk);
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    /* Checked before the open: closing a second descriptor of a journal this process has
       open would drop the first one's lock. */
    am2z__mutex_lock(&am2z__fs_open_lock);
    if (stat(fs->path, &sb) == 0 && am2z__fs_listed(sb.st_dev, sb.st_ino)) {
        st = am2z__fail(AM2Z_STATUS_CONFLICT, AM2Z_NTS, "file store %s: already open in this process", fs->path);
    } else if ((fs->fd = open(fs->path, O_RDWR | O_CREAT, 0644)) < 0) {
        st = am2z__fs_io(fs, "open");
    } else if (fstat(fs->fd, &sb) != 0) {
        st = am2z__fs_io(fs, "stat");
    } else if (fcntl(fs->fd, F_SETLK, &lk) != 0) {
        st = errno == EACCES || errno == EAGAIN
                 ? am2z__fail(AM2Z_STATUS_CONFLICT, AM2Z_NTS, "file store %s: open in another process", fs->path)
                 : am2z__fs_io(fs, "lock");
    } else {
        fs->dev = sb.st_dev;
        fs->ino = sb.st_ino;
        fs->next_open = am2z__fs_open_list;
        am2z__fs_open_list = fs;
        st = AM2Z_STATUS_OK;
    }
    am2z__mutex_unlock(&am2z__fs_open_lock);
    if (st == AM2Z_STATUS_OK) {
        unlink(fs->tmp_path); /* a compaction that died before its rename */
        st = am2z__fs_replay(fs);
    }
    if (st != AM2Z_STATUS_OK) {
        am2z__fs_close(fs);
        return (am2z_store *)am2z__put_status(status, st);
    }
    fs->info.keys = (int64_t)fs->kv.count;
    s = am2z_store_new(&am2z__fs_ops, fs, status);
    if (!s) am2z__fs_close(fs);
    return s;
}

AM2Z_API am2z_status am2z_file_store_compact(am2z_store *store) {
    am2z__fstore *fs;
    am2z_status st;
    if (!store || store->ops != &am2z__fs_ops)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "file store compact: not a file store");
    fs = (am2z__fstore *)store->user_data;
    am2z__mutex_lock(&fs->kv.mu);
    st = am2z__fs_compact_locked(fs);
    am2z__mutex_unlock(&fs->kv.mu);
    return st;
}

AM2Z_API am2z_file_store_info am2z_file_store_info_get(am2z_store *store) {
    am2z_file_store_info info;
    memset(&info, 0, sizeof info);
    if (store && store->ops == &am2z__fs_ops) {
        am2z__fstore *fs = (am2z__fstore *)store->user_data;
        am2z__mutex_lock(&fs->kv.mu);
        info = fs->info;
        info.live_bytes = fs->kv.live_bytes + (int64_t)fs->kv.count * AM2Z__J_HEAD;
        info.keys = (int64_t)fs->kv.count;
        am2z__mutex_unlock(&fs->kv.mu);
    }
    return info;
}
#endif /* AM2Z_NO_FILE_STORE */

/* ==== 7e. schedules =================================================================== */
/* The parts every runtime shares: the desc check, one schedule's slot arithmetic, a
   table of schedules in memory (local and inline) and a timer thread (local, queue). */

/* Non-zero for 1..AM2Z_SCHEDULE_ID_MAX bytes of [A-Za-z0-9_.-]. */
AM2Z__PRIVATE int am2z__sched_id_ok(const char *id) {
    size_t n;
    if (!id || !*id) return 0;
    for (n = 0; id[n]; n++) {
        char c = id[n];
        if (n >= AM2Z_SCHEDULE_ID_MAX) return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-'))
            return 0;
    }
    return 1;
}

/* One schedule, as every runtime keeps it (the queue runtime rebuilds it from Redis). */
typedef struct am2z__sched {
    char id[AM2Z_SCHEDULE_ID_MAX + 1];
    char processor[AM2Z_NAME_MAX + 1];
    char session[AM2Z_SESSION_ID_MAX + 1];
    char cron_text[AM2Z_CRON_MAX_LENGTH + 1]; /* "" for an every_ms schedule */
    am2z_cron cron;
    am2z_state *input;          /* one reference; NULL in the queue runtime's copies */
    int64_t every_ms, start_at, end_at, limit;
    int64_t runs;               /* slots claimed */
    int64_t next_at;            /* the next slot; 0: done */
} am2z__sched;

/* Checks desc as far as no runtime is needed; fills *cron (may be NULL) for a cron one. */
AM2Z__PRIVATE am2z_status am2z__sched_check(const am2z_schedule_desc *d, am2z_cron *cron) {
    am2z_cron c;
    am2z_status st;
    const char *id;
    if (!d) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule: NULL desc");
    id = d->id ? d->id : "";
    if (!am2z__sched_id_ok(d->id))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "schedule '%.*s': the id must be 1-%d bytes of [A-Za-z0-9_.-]", 64, id, AM2Z_SCHEDULE_ID_MAX);
    if (!d->processor || !*d->processor || strlen(d->processor) > AM2Z_NAME_MAX)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule '%s': %s", id,
                          d->processor && *d->processor ? "processor name too long" : "no processor");
    if (!d->input) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule '%s': no input", id);
    if (d->session_id && (!*d->session_id || strlen(d->session_id) > AM2Z_SESSION_ID_MAX))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule '%s': bad session id", id);
    if ((d->every_ms != 0) == (d->cron != NULL))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule '%s': set exactly one of every_ms and cron", id);
    if (d->every_ms && d->every_ms < AM2Z_SCHEDULE_MIN_EVERY_MS)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule '%s': every_ms %lld is under %d", id,
                          (long long)d->every_ms, AM2Z_SCHEDULE_MIN_EVERY_MS);
    if (d->start_at < 0 || d->end_at < 0 || d->limit < 0)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule '%s': %s is negative", id,
                          d->start_at < 0 ? "start_at" : d->end_at < 0 ? "end_at" : "limit");
    if (d->end_at && d->end_at < d->start_at)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule '%s': end_at is before start_at", id);
    if (d->cron && (st = am2z_cron_parse(d->cron, AM2Z_NTS, &c)) != AM2Z_STATUS_OK)
        return am2z__fail(st, am2z_status_offset(), "schedule '%s': %s", id, am2z_status_detail());
    if (d->cron && cron) *cron = c;
    return AM2Z_STATUS_OK;
}

/* The first slot of s after t (inclusive: at or after t), within end_at; 0: none. */
AM2Z__PRIVATE int64_t am2z__sched_slot(const am2z__sched *s, int64_t t, int inclusive) {
    int64_t slot = 0;
    if (s->every_ms > 0) {
        int64_t a = s->start_at, k;
        if (t < a || (inclusive && t == a)) slot = a;
        else {
            k = (t - a) / s->every_ms;
            slot = a + k * s->every_ms;
            if (slot < t || !inclusive) slot += s->every_ms;
        }
    } else if (am2z_cron_next(&s->cron, inclusive ? t - 1 : t, &slot) != AM2Z_STATUS_OK) {
        return 0;
    }
    return s->end_at && slot > s->end_at ? 0 : slot;
}

/* Claims s's due slot at now: counts the run and moves next_at past both the slot and
   now (MISSED SLOTS ARE SKIPPED), or to 0 when the schedule is done. Returns the slot. */
AM2Z__PRIVATE int64_t am2z__sched_claim(am2z__sched *s, int64_t now) {
    int64_t slot = s->next_at;
    s->runs++;
    s->next_at = s->limit && s->runs >= s->limit ? 0 : am2z__sched_slot(s, slot > now ? slot : now, 0);
    return slot;
}

/* Fills s (input not set) from a checked desc, its first slot from now. INVALID_ARGUMENT
   when no slot is left. */
AM2Z__PRIVATE am2z_status am2z__sched_init(am2z__sched *s, const am2z_schedule_desc *d, int64_t now) {
    int64_t from = d->start_at > now ? d->start_at : now;
    memset(s, 0, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", d->id);
    snprintf(s->processor, sizeof s->processor, "%s", d->processor);
    snprintf(s->session, sizeof s->session, "%s", d->session_id ? d->session_id : "default");
    if (d->cron) {
        snprintf(s->cron_text, sizeof s->cron_text, "%s", d->cron);
        am2z_cron_parse(d->cron, AM2Z_NTS, &s->cron); /* checked already */
    }
    s->every_ms = d->every_ms;
    s->start_at = d->start_at;
    s->end_at = d->end_at;
    s->limit = d->limit;
    if (!(s->next_at = am2z__sched_slot(s, from, 1)))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule '%s': no slot left to fire%s", d->id,
                          d->end_at ? " before end_at" : "");
    return AM2Z_STATUS_OK;
}

/* s as schedule_list shows it (a new reference, NULL when memory runs out). */
AM2Z__PRIVATE am2z_value *am2z__sched_json(const am2z__sched *s) {
    am2z_value *o = am2z_value_object();
    o = am2z_value_set_key(o, "id", AM2Z_NTS, am2z_value_string(s->id));
    o = am2z_value_set_key(o, "processor", AM2Z_NTS, am2z_value_string(s->processor));
    o = am2z_value_set_key(o, "sessionId", AM2Z_NTS, am2z_value_string(s->session));
    if (s->every_ms) o = am2z_value_set_key(o, "everyMs", AM2Z_NTS, am2z_value_int(s->every_ms));
    else o = am2z_value_set_key(o, "cron", AM2Z_NTS, am2z_value_string(s->cron_text));
    if (s->start_at) o = am2z_value_set_key(o, "startAt", AM2Z_NTS, am2z_value_int(s->start_at));
    if (s->end_at) o = am2z_value_set_key(o, "endAt", AM2Z_NTS, am2z_value_int(s->end_at));
    if (s->limit) o = am2z_value_set_key(o, "limit", AM2Z_NTS, am2z_value_int(s->limit));
    o = am2z_value_set_key(o, "runs", AM2Z_NTS, am2z_value_int(s->runs));
    return am2z_value_set_key(o, "nextAt", AM2Z_NTS, am2z_value_int(s->next_at));
}

/* -- a table of schedules in memory, sorted by id (local and inline runtimes) -- */

typedef struct am2z__sched_tab {
    am2z__mutex mu;
    am2z__sched **v;
    size_t n, cap;
} am2z__sched_tab;

/* A slot claimed from a table: what to submit, copied out of the lock. */
typedef struct am2z__sched_fire {
    char processor[AM2Z_NAME_MAX + 1];
    char session[AM2Z_SESSION_ID_MAX + 1];
    am2z_state *input;          /* one reference, for the caller to release */
    int64_t slot;
} am2z__sched_fire;

AM2Z__PRIVATE am2z__sched_tab *am2z__sched_tab_new(void) {
    am2z__sched_tab *t = (am2z__sched_tab *)am2z__malloc(sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    if (am2z__mutex_init(&t->mu) != 0) {
        am2z__free(t);
        return NULL;
    }
    return t;
}

static void am2z__sched_free(am2z__sched *s) {
    if (!s) return;
    am2z_value_release(s->input);
    am2z__free(s);
}

AM2Z__PRIVATE void am2z__sched_tab_free(am2z__sched_tab *t) {
    size_t i;
    if (!t) return;
    for (i = 0; i < t->n; i++) am2z__sched_free(t->v[i]);
    am2z__free(t->v);
    am2z__mutex_destroy(&t->mu);
    am2z__free(t);
}

/* The position of id in t (under t->mu), or where it would go; *found set when there. */
static size_t am2z__sched_tab_find(const am2z__sched_tab *t, const char *id, int *found) {
    size_t lo = 0, hi = t->n;
    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(t->v[mid]->id, id);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void am2z__sched_tab_drop_locked(am2z__sched_tab *t, size_t i) {
    am2z__sched_free(t->v[i]);
    memmove(t->v + i, t->v + i + 1, (t->n - i - 1) * sizeof *t->v);
    t->n--;
}

/* Creates or replaces desc->id (checked), first slot from now. */
AM2Z__PRIVATE am2z_status am2z__sched_tab_upsert(am2z__sched_tab *t, const am2z_schedule_desc *d, int64_t now) {
    am2z__sched *s = (am2z__sched *)am2z__malloc(sizeof *s);
    am2z_status st;
    size_t i;
    int found;
    if (!s) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "schedule '%s': out of memory", d->id);
    if ((st = am2z__sched_init(s, d, now)) != AM2Z_STATUS_OK) {
        am2z__free(s);
        return st;
    }
    s->input = am2z_value_retain(d->input);
    am2z__mutex_lock(&t->mu);
    i = am2z__sched_tab_find(t, d->id, &found);
    if (found) {
        am2z__sched_free(t->v[i]);
        t->v[i] = s;
        am2z__mutex_unlock(&t->mu);
        return AM2Z_STATUS_OK;
    }
    if (t->n >= AM2Z_SCHEDULE_MAX) {
        am2z__mutex_unlock(&t->mu);
        am2z__sched_free(s);
        return am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "schedule '%s': %d schedules exist already (AM2Z_SCHEDULE_MAX)",
                          d->id, AM2Z_SCHEDULE_MAX);
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 8;
        am2z__sched **v = (am2z__sched **)am2z__realloc(t->v, cap * sizeof *v);
        if (!v) {
            am2z__mutex_unlock(&t->mu);
            am2z__sched_free(s);
            return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "schedule '%s': out of memory", d->id);
        }
        t->v = v;
        t->cap = cap;
    }
    memmove(t->v + i + 1, t->v + i, (t->n - i) * sizeof *t->v);
    t->v[i] = s;
    t->n++;
    am2z__mutex_unlock(&t->mu);
    return AM2Z_STATUS_OK;
}

AM2Z__PRIVATE am2z_status am2z__sched_tab_remove(am2z__sched_tab *t, const char *id) {
    size_t i;
    int found = 0;
    if (t) {
        am2z__mutex_lock(&t->mu);
        i = am2z__sched_tab_find(t, id, &found);
        if (found) am2z__sched_tab_drop_locked(t, i);
        am2z__mutex_unlock(&t->mu);
    }
    return found ? AM2Z_STATUS_OK : am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "schedule '%s': no such schedule", id);
}

AM2Z__PRIVATE am2z_value *am2z__sched_tab_list(am2z__sched_tab *t) {
    am2z_value *a = am2z_value_array();
    size_t i;
    if (!t) return a;
    am2z__mutex_lock(&t->mu);
    for (i = 0; i < t->n && a; i++) a = am2z_value_append(a, "", am2z__sched_json(t->v[i]));
    am2z__mutex_unlock(&t->mu);
    if (!a) am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "schedule_list: out of memory");
    return a;
}

/* Claims the earliest slot due at now (<= now) into *f: 1, or 0 when none is due. A
   schedule whose claim was its last leaves the table. */
AM2Z__PRIVATE int am2z__sched_tab_due(am2z__sched_tab *t, int64_t now, am2z__sched_fire *f) {
    size_t i, best = 0;
    int any = 0;
    am2z__sched *s;
    if (!t) return 0;
    am2z__mutex_lock(&t->mu);
    for (i = 0; i < t->n; i++)
        if (t->v[i]->next_at <= now && (!any || t->v[i]->next_at < t->v[best]->next_at)) {
            best = i;
            any = 1;
        }
    if (any) {
        s = t->v[best];
        memcpy(f->processor, s->processor, sizeof f->processor);
        memcpy(f->session, s->session, sizeof f->session);
        f->input = am2z_value_retain(s->input);
        f->slot = am2z__sched_claim(s, now);
        if (!s->next_at) am2z__sched_tab_drop_locked(t, best);
    }
    am2z__mutex_unlock(&t->mu);
    return any;
}

/* The earliest next slot in t; 0 when t is empty. */
AM2Z__PRIVATE int64_t am2z__sched_tab_next(am2z__sched_tab *t) {
    int64_t next = 0;
    size_t i;
    if (!t) return 0;
    am2z__mutex_lock(&t->mu);
    for (i = 0; i < t->n; i++)
        if (!next || t->v[i]->next_at < next) next = t->v[i]->next_at;
    am2z__mutex_unlock(&t->mu);
    return next;
}

#ifndef AM2Z_NO_THREADS
/* -- the timer thread: calls tick when the next slot is due (local, queue) -- */

/* tick claims what is due at now_ms and returns the next slot it knows of (epoch ms; 0:
   none). The thread sleeps until then, at most cap_ms (a wall clock that jumps, or
   schedules that another process adds, are seen within cap_ms), or until a kick. */
typedef int64_t (*am2z__sched_tick_fn)(void *user_data, int64_t now_ms);
typedef struct am2z__sched_timer {
    am2z__mutex mu;
    am2z__cond cv;
    am2z__thread thread;
    int running, quit, kicked, ticking;  /* under mu */
    am2z__sched_tick_fn tick;
    void *user_data;
    int64_t cap_ms;
} am2z__sched_timer;

AM2Z__PRIVATE am2z__sched_timer *am2z__sched_timer_new(am2z__sched_tick_fn tick, void *user_data, int64_t cap_ms) {
    am2z__sched_timer *t = (am2z__sched_timer *)am2z__malloc(sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    if (am2z__mutex_cond_init(&t->mu, &t->cv) != 0) {
        am2z__free(t);
        return NULL;
    }
    t->tick = tick;
    t->user_data = user_data;
    t->cap_ms = cap_ms;
    return t;
}

static void *am2z__sched_timer_main(void *arg) {
    am2z__sched_timer *t = (am2z__sched_timer *)arg;
    am2z__mutex_lock(&t->mu);
    while (!t->quit) {
        int64_t next, wait_ms;
        t->kicked = 0;
        t->ticking = 1;
        am2z__mutex_unlock(&t->mu);
        next = t->tick(t->user_data, am2z_now_ms());
        am2z__mutex_lock(&t->mu);
        t->ticking = 0;
        am2z__cond_broadcast(&t->cv); /* for am2z__sched_timer_quiesce */
        wait_ms = next ? next - am2z_now_ms() : t->cap_ms;
        if (wait_ms > t->cap_ms) wait_ms = t->cap_ms;
        if (t->quit || t->kicked || wait_ms <= 0) continue;
        am2z__cond_wait_until(&t->cv, &t->mu, am2z_monotonic_ns() + wait_ms * 1000000);
    }
    am2z__mutex_unlock(&t->mu);
    return NULL;
}

/* Starts the thread unless it runs; AM2Z_STATUS_NO_MEMORY when it cannot be made. */
AM2Z__PRIVATE am2z_status am2z__sched_timer_start(am2z__sched_timer *t) {
    am2z_status st = AM2Z_STATUS_OK;
    am2z__mutex_lock(&t->mu);
    if (!t->running) {
        t->quit = 0;
        t->running = am2z__thread_create(&t->thread, am2z__sched_timer_main, t) == 0;
        if (!t->running) st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "schedules: cannot start the timer thread");
    }
    am2z__mutex_unlock(&t->mu);
    return st;
}

/* Makes the thread look at the schedules now (one was added or changed). */
AM2Z__PRIVATE void am2z__sched_timer_kick(am2z__sched_timer *t) {
    am2z__mutex_lock(&t->mu);
    t->kicked = 1;
    am2z__cond_broadcast(&t->cv);
    am2z__mutex_unlock(&t->mu);
}

/* Asks the thread to end and waits until until_ns (monotonic) for a tick in progress to
   finish: 0 when one still runs then (stuck in a store or server: the caller cuts it
   loose before it joins with am2z__sched_timer_stop). */
AM2Z__PRIVATE int am2z__sched_timer_quiesce(am2z__sched_timer *t, int64_t until_ns) {
    int idle;
    if (!t) return 1;
    am2z__mutex_lock(&t->mu);
    t->quit = 1;
    am2z__cond_broadcast(&t->cv);
    while (t->ticking && am2z_monotonic_ns() < until_ns) am2z__cond_wait_until(&t->cv, &t->mu, until_ns);
    idle = !t->ticking;
    am2z__mutex_unlock(&t->mu);
    return idle;
}

/* Ends the thread; a tick in progress finishes first. */
AM2Z__PRIVATE void am2z__sched_timer_stop(am2z__sched_timer *t) {
    int running;
    if (!t) return;
    am2z__mutex_lock(&t->mu);
    running = t->running;
    t->quit = 1;
    t->running = 0;
    am2z__cond_broadcast(&t->cv);
    am2z__mutex_unlock(&t->mu);
    if (running) am2z__thread_join(t->thread);
}

AM2Z__PRIVATE void am2z__sched_timer_free(am2z__sched_timer *t) {
    if (!t) return;
    am2z__sched_timer_stop(t);
    am2z__cond_destroy(&t->cv);
    am2z__mutex_destroy(&t->mu);
    am2z__free(t);
}
#endif

/* -- the public calls -- */

static am2z_status am2z__sched_unsupported(am2z_runtime *rt, const char *what) {
    return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "%s: not supported by this runtime (%s)", what,
                      rt->settings.kind ? rt->settings.kind : "custom");
}

AM2Z_API am2z_status am2z_runtime_schedule_upsert(am2z_runtime *rt, const am2z_schedule_desc *desc) {
    am2z_status st;
    if (!rt) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule_upsert: NULL runtime");
    if ((st = am2z__sched_check(desc, NULL)) != AM2Z_STATUS_OK) return st;
    if (!rt->ops->schedule_upsert) return am2z__sched_unsupported(rt, "schedule_upsert");
    return rt->ops->schedule_upsert(rt, desc);
}

AM2Z_API am2z_status am2z_runtime_schedule_remove(am2z_runtime *rt, const char *id) {
    if (!rt || !id) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule_remove: NULL %s", rt ? "id" : "runtime");
    if (!rt->ops->schedule_remove) return am2z__sched_unsupported(rt, "schedule_remove");
    if (!am2z__sched_id_ok(id)) return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "schedule '%.64s': no such schedule", id);
    return rt->ops->schedule_remove(rt, id);
}

AM2Z_API am2z_value *am2z_runtime_schedule_list(am2z_runtime *rt) {
    if (!rt) {
        am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "schedule_list: NULL runtime");
        return NULL;
    }
    if (!rt->ops->schedule_list) {
        am2z__sched_unsupported(rt, "schedule_list");
        return NULL;
    }
    return rt->ops->schedule_list(rt);
}

/* ==== 7f. traces ====================================================================== */

/* Strings live in chunks that never move, so a span's pointers stay valid for the
   trace's life while the span array grows. */
typedef struct am2z__tchunk {
    struct am2z__tchunk *next;
    size_t used, cap; /* bytes after the header */
} am2z__tchunk;

#define AM2Z__TRACE_CHUNK 4096

struct am2z_trace {
    int refs;                 /* atomic */
    am2z__mutex mu;           /* guards everything below */
    am2z_trace_span *spans;
    size_t count, cap, max, dropped;
    am2z__tchunk *chunks;
};

AM2Z_API am2z_trace *am2z_trace_new(size_t max_spans) {
    am2z_trace *t = (am2z_trace *)am2z__malloc(sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    if (am2z__mutex_init(&t->mu) != 0) {
        am2z__free(t);
        return NULL;
    }
    t->refs = 1;
    t->max = max_spans ? max_spans : AM2Z_TRACE_MAX_SPANS;
    return t;
}

AM2Z_API am2z_trace *am2z_trace_retain(am2z_trace *t) {
    if (t) am2z__atomic_inc(&t->refs);
    return t;
}

AM2Z_API void am2z_trace_release(am2z_trace *t) {
    am2z__tchunk *c, *next;
    if (!t || am2z__atomic_dec(&t->refs) != 0) return;
    for (c = t->chunks; c; c = next) {
        next = c->next;
        am2z__free(c);
    }
    am2z__free(t->spans);
    am2z__mutex_destroy(&t->mu);
    am2z__free(t);
}

/* Under mu: a copy of s kept with the trace; the previous span's copy when equal (a
   call's attempts and a tree's session repeat). NULL for NULL or no memory. */
static const char *am2z__trace_str(am2z_trace *t, const char *s, const char *prev) {
    size_t n;
    am2z__tchunk *c;
    char *at;
    if (!s) return NULL;
    if (!*s) return "";
    if (prev && strcmp(prev, s) == 0) return prev;
    n = strlen(s) + 1;
    c = t->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > AM2Z__TRACE_CHUNK / 4 ? n : AM2Z__TRACE_CHUNK;
        c = (am2z__tchunk *)am2z__malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->cap = cap;
        c->used = 0;
        if (cap == n && t->chunks) { /* a big string: keep filling the current chunk */
            c->next = t->chunks->next;
            t->chunks->next = c;
        } else {
            c->next = t->chunks;
            t->chunks = c;
        }
    }
    at = (char *)(c + 1) + c->used;
    memcpy(at, s, n);
    c->used += n;
    return at;
}

/* Under mu: a new span with its strings copied; NULL when full or out of memory
   (counted in dropped). */
static am2z_trace_span *am2z__trace_push(am2z_trace *t, const am2z_trace_span *s) {
    const am2z_trace_span *last = t->count ? &t->spans[t->count - 1] : NULL;
    am2z_trace_span *n;
    if (t->count >= t->max) goto drop;
    if (t->count == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        void *p;
        if (cap > t->max) cap = t->max;
        if (!(p = am2z__realloc(t->spans, cap * sizeof *t->spans))) goto drop;
        t->spans = (am2z_trace_span *)p;
        t->cap = cap;
        last = t->count ? &t->spans[t->count - 1] : NULL;
    }
    n = &t->spans[t->count];
    *n = *s;
    n->processor = am2z__trace_str(t, s->processor ? s->processor : "", last ? last->processor : NULL);
    n->execution_id = am2z__trace_str(t, s->execution_id ? s->execution_id : "", last ? last->execution_id : NULL);
    n->session_id = am2z__trace_str(t, s->session_id ? s->session_id : "", last ? last->session_id : NULL);
    n->worker = am2z__trace_str(t, s->worker ? s->worker : "", last ? last->worker : NULL);
    n->error_kind = am2z__trace_str(t, s->error_kind, NULL);
    if (!n->processor || !n->execution_id || !n->session_id || !n->worker || (s->error_kind && !n->error_kind))
        goto drop;
    n->id = (uint32_t)++t->count;
    return n;
drop:
    t->dropped++;
    return NULL;
}

static int64_t am2z__trace_clock(const am2z_ctx *ctx) {
    struct timespec ts;
    if (ctx->ops && ctx->ops->now_ns) return ctx->ops->now_ns(ctx);
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Opens ctx's span (am2z_processor_invoke): ctx->trace_span gets its id (0: dropped). */
static void am2z__trace_open(am2z_ctx *ctx) {
    am2z_trace_span s, *n;
    am2z_trace *t = ctx->trace;
    memset(&s, 0, sizeof s);
    s.parent = ctx->trace_parent;
    s.processor = ctx->meta.processor;
    s.execution_id = ctx->meta.execution_id;
    s.session_id = ctx->meta.session_id;
    s.attempt = ctx->meta.attempt;
    s.call_depth = ctx->meta.call_depth;
    s.start_ns = am2z__trace_clock(ctx);
    s.retry_delay_ms = -1;
    am2z__mutex_lock(&t->mu);
    n = am2z__trace_push(t, &s);
    ctx->trace_span = n ? n->id : 0;
    am2z__mutex_unlock(&t->mu);
}

static void am2z__trace_close(am2z_ctx *ctx, const am2z_error *err) {
    int64_t end = am2z__trace_clock(ctx);
    am2z_trace *t = ctx->trace;
    am2z_trace_span *s;
    am2z__mutex_lock(&t->mu);
    s = &t->spans[ctx->trace_span - 1];
    s->end_ns = end > s->start_ns ? end : s->start_ns;
    if (s->status != AM2Z_TRACE_FAILED) { /* a runtime's verdict (am2z_trace_fail) stands */
        s->status = err ? AM2Z_TRACE_FAILED : AM2Z_TRACE_OK;
        if (err) s->error_kind = am2z__trace_str(t, am2z_error_kind_name(err->kind), NULL);
    }
    am2z__mutex_unlock(&t->mu);
}

/* Merge conflicts of ctx's attempt (section 6's merge). */
static void am2z__trace_conflicts(am2z_ctx *ctx, size_t n) {
    am2z_trace *t = ctx->trace;
    if (!ctx->trace_span || !n) return;
    am2z__mutex_lock(&t->mu);
    t->spans[ctx->trace_span - 1].merge_conflicts += (int)n;
    am2z__mutex_unlock(&t->mu);
}

AM2Z_API void am2z_trace_fail(am2z_trace *t, uint32_t span, const char *error_kind) {
    am2z_trace_span *s;
    if (!t || !span) return;
    am2z__mutex_lock(&t->mu);
    if (span <= t->count) {
        s = &t->spans[span - 1];
        s->status = AM2Z_TRACE_FAILED;
        s->error_kind = am2z__trace_str(t, error_kind ? error_kind : "Error", s->error_kind);
    }
    am2z__mutex_unlock(&t->mu);
}

AM2Z_API void am2z_trace_retry(am2z_trace *t, uint32_t span, int64_t delay_ms) {
    if (!t || !span) return;
    am2z__mutex_lock(&t->mu);
    if (span <= t->count) t->spans[span - 1].retry_delay_ms = delay_ms < 0 ? 0 : delay_ms;
    am2z__mutex_unlock(&t->mu);
}

AM2Z_API size_t am2z_trace_count(const am2z_trace *t) {
    size_t n;
    if (!t) return 0;
    am2z__mutex_lock(&((am2z_trace *)t)->mu);
    n = t->count;
    am2z__mutex_unlock(&((am2z_trace *)t)->mu);
    return n;
}

AM2Z_API size_t am2z_trace_dropped(const am2z_trace *t) {
    size_t n;
    if (!t) return 0;
    am2z__mutex_lock(&((am2z_trace *)t)->mu);
    n = t->dropped;
    am2z__mutex_unlock(&((am2z_trace *)t)->mu);
    return n;
}

AM2Z_API am2z_status am2z_trace_span_at(const am2z_trace *t, size_t i, am2z_trace_span *out) {
    am2z_status st = AM2Z_STATUS_OK;
    if (!t || !out) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "trace_span_at: NULL argument");
    am2z__mutex_lock(&((am2z_trace *)t)->mu);
    if (i < t->count) *out = t->spans[i];
    else st = AM2Z_STATUS_NOT_FOUND;
    am2z__mutex_unlock(&((am2z_trace *)t)->mu);
    if (st) am2z__fail(st, AM2Z_NTS, "trace_span_at: span %zu of %zu", i, t->count);
    return st;
}

/* A consistent copy of the spans (strings still the trace's), for readers that work
   without the lock; NULL with *n 0 when there are none or memory ran out. */
static am2z_trace_span *am2z__trace_snapshot(const am2z_trace *t, size_t *n) {
    am2z_trace_span *c = NULL;
    am2z__mutex_lock(&((am2z_trace *)t)->mu);
    *n = t->count;
    if (*n && (c = (am2z_trace_span *)am2z__malloc(*n * sizeof *c)) != NULL) memcpy(c, t->spans, *n * sizeof *c);
    am2z__mutex_unlock(&((am2z_trace *)t)->mu);
    if (!c) *n = 0;
    return c;
}

static const char *am2z__trace_status_name(am2z_trace_status s) {
    return s == AM2Z_TRACE_OK ? "ok" : s == AM2Z_TRACE_FAILED ? "failed" : "running";
}

static am2z_value *am2z__trace_span_json(const am2z_trace_span *s) {
    am2z_value *v = am2z_value_object();
    v = am2z_value_set(v, "id", am2z_value_int(s->id));
    v = am2z_value_set(v, "parent", am2z_value_int(s->parent));
    v = am2z_value_set(v, "processor", am2z_value_string(s->processor));
    v = am2z_value_set(v, "executionId", am2z_value_string(s->execution_id));
    v = am2z_value_set(v, "sessionId", am2z_value_string(s->session_id));
    v = am2z_value_set(v, "worker", am2z_value_string(s->worker));
    v = am2z_value_set(v, "attempt", am2z_value_int(s->attempt));
    v = am2z_value_set(v, "callDepth", am2z_value_int(s->call_depth));
    v = am2z_value_set(v, "startNs", am2z_value_int(s->start_ns));
    v = am2z_value_set(v, "endNs", am2z_value_int(s->end_ns));
    v = am2z_value_set(v, "status", am2z_value_string(am2z__trace_status_name(s->status)));
    if (s->error_kind) v = am2z_value_set(v, "errorKind", am2z_value_string(s->error_kind));
    if (s->retry_delay_ms >= 0) v = am2z_value_set(v, "retryDelayMs", am2z_value_int(s->retry_delay_ms));
    if (s->merge_conflicts) v = am2z_value_set(v, "mergeConflicts", am2z_value_int(s->merge_conflicts));
    return v;
}

AM2Z_API am2z_value *am2z_trace_to_json(const am2z_trace *t) {
    am2z_trace_span *s;
    am2z_value *arr, *v;
    size_t i, n, dropped;
    if (!t) return NULL;
    s = am2z__trace_snapshot(t, &n);
    dropped = am2z_trace_dropped(t);
    arr = am2z_value_array();
    for (i = 0; i < n && arr; i++) arr = am2z_value_append(arr, "", am2z__trace_span_json(&s[i]));
    am2z__free(s);
    v = am2z_value_set(am2z_value_object(), "spans", arr);
    return am2z_value_set(v, "dropped", am2z_value_int((int64_t)dropped));
}

/* An integer member >= lo of a to_json span into *out; 0 when missing or out of range. */
static int am2z__trace_int(const am2z_value *v, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    const am2z_value *m = am2z_value_find(v, key, AM2Z_NTS);
    if (am2z_value_type(m) != AM2Z_TYPE_INT) return 0;
    *out = am2z_value_as_int(m, 0);
    return *out >= lo && *out <= hi;
}

/* One span of a to_json value into *s (strings borrowed from v); 0 when malformed,
   with *bad naming the member. */
static int am2z__trace_span_from(const am2z_value *v, am2z_trace_span *s, const char **bad) {
    const char *st = am2z_value_get_string(v, "status", "");
    int64_t id, parent, attempt, depth, start, end, conflicts;
    memset(s, 0, sizeof s[0]);
    if (am2z_value_type(v) != AM2Z_TYPE_OBJECT) return *bad = "span", 0;
    if (!am2z__trace_int(v, "id", 1, UINT32_MAX, &id)) return *bad = "id", 0;
    if (!am2z__trace_int(v, "parent", 0, UINT32_MAX, &parent)) return *bad = "parent", 0;
    if (!am2z__trace_int(v, "attempt", 1, INT32_MAX, &attempt)) return *bad = "attempt", 0;
    if (!am2z__trace_int(v, "callDepth", 0, INT32_MAX, &depth)) return *bad = "callDepth", 0;
    if (!am2z__trace_int(v, "startNs", 0, INT64_MAX, &start)) return *bad = "startNs", 0;
    if (!am2z__trace_int(v, "endNs", 0, INT64_MAX, &end)) return *bad = "endNs", 0;
    conflicts = am2z_value_get_int(v, "mergeConflicts", 0);
    if (conflicts < 0 || conflicts > INT32_MAX) return *bad = "mergeConflicts", 0;
    if (!(s->processor = am2z_value_get_string(v, "processor", NULL))) return *bad = "processor", 0;
    if (!strcmp(st, "ok")) s->status = AM2Z_TRACE_OK;
    else if (!strcmp(st, "failed")) s->status = AM2Z_TRACE_FAILED;
    else if (strcmp(st, "running") != 0) return *bad = "status", 0;
    s->id = (uint32_t)id;
    s->parent = (uint32_t)parent;
    s->attempt = (int)attempt;
    s->call_depth = (int)depth;
    s->start_ns = start;
    s->end_ns = end;
    s->merge_conflicts = (int)conflicts;
    s->execution_id = am2z_value_get_string(v, "executionId", "");
    s->session_id = am2z_value_get_string(v, "sessionId", "");
    s->worker = am2z_value_get_string(v, "worker", "");
    s->error_kind = s->status == AM2Z_TRACE_FAILED ? am2z_value_get_string(v, "errorKind", "Error") : NULL;
    s->retry_delay_ms = am2z_value_get_int(v, "retryDelayMs", -1);
    return 1;
}

AM2Z_API am2z_status am2z_trace_add_json(am2z_trace *t, const am2z_value *spans, uint32_t parent,
                                         const char *worker) {
    const am2z_value *arr = am2z_value_type(spans) == AM2Z_TYPE_OBJECT ? am2z_value_find(spans, "spans", 5) : spans;
    size_t i, n = am2z_value_len(arr);
    uint32_t *ids = NULL; /* remote id - 1 -> our id (0: dropped here) */
    int depth = 0;
    am2z_trace_span s, *got;
    const char *bad = "span";
    if (!t || am2z_value_type(arr) != AM2Z_TYPE_ARRAY)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "trace_add_json: %s", t ? "no spans array" : "NULL trace");
    for (i = 0; i < n; i++) { /* all or nothing: check first */
        if (!am2z__trace_span_from(am2z_value_at(arr, i), &s, &bad))
            return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "trace_add_json: span %zu: bad %s", i, bad);
        if (s.id != i + 1 || s.parent > i) /* ids in order, parents before children */
            return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "trace_add_json: span %zu: bad id or parent", i);
    }
    if (n && !(ids = (uint32_t *)am2z__malloc(n * sizeof *ids)))
        return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "trace_add_json: out of memory");
    am2z__mutex_lock(&t->mu);
    if (parent && parent <= t->count) depth = t->spans[parent - 1].call_depth + 1;
    else parent = 0;
    for (i = 0; i < n; i++) {
        am2z__trace_span_from(am2z_value_at(arr, i), &s, &bad);
        /* a remote span dropped here leaves its children under the calling span */
        s.parent = s.parent && ids[s.parent - 1] ? ids[s.parent - 1] : parent;
        s.call_depth += depth;
        if (worker && !*s.worker) s.worker = worker;
        got = am2z__trace_push(t, &s);
        ids[i] = got ? got->id : 0;
    }
    if (am2z_value_get_int(spans, "dropped", 0) > 0) t->dropped += (size_t)am2z_value_get_int(spans, "dropped", 0);
    am2z__mutex_unlock(&t->mu);
    am2z__free(ids);
    return AM2Z_STATUS_OK;
}

/* ---- renderers ---- */

/* Spans in tree order (children under their parent, by start), with each one's level;
   built from a snapshot. */
typedef struct am2z__tview {
    am2z_trace_span *s;
    size_t n;
    size_t *order;   /* indexes into s, tree order */
    int *level;      /* by index into s */
    int64_t t0, t1;  /* first start, last end (or start) */
} am2z__tview;

static int am2z__tview_before(const am2z_trace_span *a, const am2z_trace_span *b) {
    return a->start_ns != b->start_ns ? a->start_ns < b->start_ns : a->id < b->id;
}

static void am2z__tview_free(am2z__tview *v) {
    am2z__free(v->s);
    am2z__free(v->order);
    am2z__free(v->level);
}

/* 0 when memory runs out. Spans whose parent is missing (dropped) count as top level. */
static int am2z__tview_make(const am2z_trace *t, am2z__tview *v) {
    size_t i, k, top = 0, *stack = NULL, *kids = NULL, *first = NULL, sp = 0;
    memset(v, 0, sizeof *v);
    v->s = am2z__trace_snapshot(t, &v->n);
    if (!v->n) return 1;
    v->order = (size_t *)am2z__malloc(v->n * sizeof *v->order);
    v->level = (int *)am2z__malloc(v->n * sizeof *v->level);
    stack = (size_t *)am2z__malloc(v->n * sizeof *stack);
    kids = (size_t *)am2z__malloc(v->n * sizeof *kids);   /* next sibling, sorted */
    first = (size_t *)am2z__malloc((v->n + 1) * sizeof *first); /* first child by id; [0] roots */
    if (!v->order || !v->level || !stack || !kids || !first) {
        am2z__free(stack);
        am2z__free(kids);
        am2z__free(first);
        am2z__tview_free(v);
        return 0;
    }
    for (i = 0; i <= v->n; i++) first[i] = (size_t)-1;
    v->t0 = v->s[0].start_ns;
    v->t1 = v->s[0].start_ns;
    /* insert each span into its parent's child list, kept sorted by start (insertion
       sort per list: traces are mostly recorded in start order already) */
    for (i = 0; i < v->n; i++) {
        am2z_trace_span *s = &v->s[i];
        size_t p = s->parent && s->parent <= v->n && s->parent != s->id ? s->parent : 0, *at = &first[p];
        if (p && p > i) p = 0, at = &first[0]; /* a parent recorded later: malformed, top */
        while (*at != (size_t)-1 && !am2z__tview_before(s, &v->s[*at])) at = &kids[*at];
        kids[i] = *at;
        *at = i;
        if (s->start_ns < v->t0) v->t0 = s->start_ns;
        if (s->start_ns > v->t1) v->t1 = s->start_ns;
        if (s->end_ns > v->t1) v->t1 = s->end_ns;
    }
    /* depth-first walk: push the roots, then each span's children, in reverse order */
    for (k = first[0]; k != (size_t)-1; k = kids[k]) {
        stack[sp++] = k;
        v->level[k] = 0;
    }
    for (i = 0; i < sp / 2; i++) { /* reverse so the earliest pops first */
        size_t x = stack[i];
        stack[i] = stack[sp - 1 - i];
        stack[sp - 1 - i] = x;
    }
    while (sp) {
        size_t cur = stack[--sp], from = sp;
        v->order[top++] = cur;
        for (k = first[cur + 1]; k != (size_t)-1; k = kids[k]) {
            stack[sp++] = k;
            v->level[k] = v->level[cur] + 1;
        }
        for (i = 0; i < (sp - from) / 2; i++) {
            size_t x = stack[from + i];
            stack[from + i] = stack[sp - 1 - i];
            stack[sp - 1 - i] = x;
        }
    }
    v->n = top; /* every span is reached: parents come before children by id */
    am2z__free(stack);
    am2z__free(kids);
    am2z__free(first);
    return 1;
}

static am2z_status am2z__trace_text_done(am2z__vec *b, const char *what, char **out, size_t *len) {
    am2z__vec_putc(b, 0);
    if (b->failed) {
        am2z__vec_free(b);
        return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "%s: out of memory", what);
    }
    *out = (char *)b->p;
    if (len) *len = b->n - 1;
    return AM2Z_STATUS_OK;
}

static void am2z__trace_printf(am2z__vec *b, const char *fmt, ...) AM2Z_PRINTF(2, 3);
static void am2z__trace_printf(am2z__vec *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    am2z__vec_vprintf(b, 4096, fmt, ap);
    va_end(ap);
}

/* A duration for people: "850 ns", "12.3 us", "4.56 ms", "1.23 s". */
static void am2z__trace_dur(char *buf, size_t size, int64_t ns) {
    if (ns < 1000) snprintf(buf, size, "%lld ns", (long long)ns);
    else if (ns < 1000000) snprintf(buf, size, "%.1f us", (double)ns / 1e3);
    else if (ns < 1000000000) snprintf(buf, size, "%.2f ms", (double)ns / 1e6);
    else snprintf(buf, size, "%.2f s", (double)ns / 1e9);
}

static const char *am2z__trace_outcome(const am2z_trace_span *s) {
    if (s->status == AM2Z_TRACE_FAILED) return s->error_kind ? s->error_kind : "failed";
    return am2z__trace_status_name(s->status);
}

AM2Z_API am2z_status am2z_trace_ascii(const am2z_trace *t, int width, char **out, size_t *len) {
    am2z__tview v;
    am2z__vec b;
    size_t i, label = 9, kind = 7;
    int64_t span_ns;
    char d[32], lbl[AM2Z_NAME_MAX + 64];
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!t || !out || width < 0 || width > 1000)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "trace_ascii: %s",
                          t && out ? "width is not 0 to 1000" : "NULL argument");
    if (!width) width = 50;
    if (!am2z__tview_make(t, &v)) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "trace_ascii: out of memory");
    for (i = 0; i < v.n; i++) { /* column widths */
        const am2z_trace_span *s = &v.s[v.order[i]];
        size_t l = 2 * (size_t)v.level[v.order[i]] + strlen(s->processor) + (s->attempt > 1 ? 4 : 0);
        if (l > label) label = l < 60 ? l : 60;
        if (strlen(am2z__trace_outcome(s)) > kind) kind = strlen(am2z__trace_outcome(s));
    }
    span_ns = v.t1 > v.t0 ? v.t1 - v.t0 : 1;
    am2z__vec_init(&b, NULL, 0);
    am2z__trace_dur(d, sizeof d, v.n ? v.t1 - v.t0 : 0);
    am2z__trace_printf(&b, "%-*s %-*s |0%*s|%s\n", (int)label, "step", (int)kind, "outcome", width - 1, d,
                       v.n ? "" : " (no steps)");
    for (i = 0; i < v.n; i++) {
        const am2z_trace_span *s = &v.s[v.order[i]];
        int64_t end = s->end_ns ? s->end_ns : v.t1;
        int a = (int)((double)(s->start_ns - v.t0) * width / (double)span_ns), z, c;
        z = (int)((double)(end - v.t0) * width / (double)span_ns + 0.5);
        if (a >= width) a = width - 1;
        if (z <= a) z = a + 1; /* every step gets at least one column */
        if (z > width) z = width;
        if (s->attempt > 1) snprintf(lbl, sizeof lbl, "%*s%s #%d", 2 * v.level[v.order[i]], "", s->processor, s->attempt);
        else snprintf(lbl, sizeof lbl, "%*s%s", 2 * v.level[v.order[i]], "", s->processor);
        am2z__trace_printf(&b, "%-*.*s %-*s |", (int)label, (int)label, lbl, (int)kind, am2z__trace_outcome(s));
        for (c = 0; c < width; c++)
            am2z__vec_putc(&b, c < a || c >= z ? ' ' : s->status == AM2Z_TRACE_FAILED ? '!' : s->end_ns ? '=' : '>');
        am2z__trace_dur(d, sizeof d, end - s->start_ns);
        am2z__trace_printf(&b, "| %s", d);
        if (s->retry_delay_ms >= 0) am2z__trace_printf(&b, "  retry +%lld ms", (long long)s->retry_delay_ms);
        if (s->merge_conflicts) am2z__trace_printf(&b, "  %d merge conflict%s", s->merge_conflicts, s->merge_conflicts > 1 ? "s" : "");
        if (*s->worker) am2z__trace_printf(&b, "  @%s", s->worker);
        am2z__vec_putc(&b, '\n');
    }
    am2z__tview_free(&v);
    return am2z__trace_text_done(&b, "trace_ascii", out, len);
}

/* A Mermaid task name: no ':' (the field separator), '#', ';' or newline. */
static void am2z__trace_mm_name(am2z__vec *b, const char *s) {
    for (; *s; s++) am2z__vec_putc(b, *s == ':' || *s == '#' || *s == ';' || *s == '\n' || *s == '\r' ? ' ' : *s);
}

AM2Z_API am2z_status am2z_trace_mermaid(const am2z_trace *t, char **out, size_t *len) {
    am2z__tview v;
    am2z__vec b;
    size_t i;
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!t || !out) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "trace_mermaid: NULL argument");
    if (!am2z__tview_make(t, &v)) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "trace_mermaid: out of memory");
    am2z__vec_init(&b, NULL, 0);
    am2z__vec_puts(&b, "gantt\n    dateFormat x\n    axisFormat %S.%L s\n");
    if (v.n) {
        am2z__vec_puts(&b, "    title ");
        am2z__trace_mm_name(&b, v.s[v.order[0]].execution_id);
        am2z__vec_putc(&b, '\n');
    }
    for (i = 0; i < v.n; i++) {
        const am2z_trace_span *s = &v.s[v.order[i]];
        /* whole ms from the first start (dateFormat x); at least 1 ms so a step shows */
        int64_t a = (s->start_ns - v.t0) / 1000000, z = ((s->end_ns ? s->end_ns : v.t1) - v.t0 + 999999) / 1000000;
        if (z <= a) z = a + 1;
        if (v.level[v.order[i]] == 0) {
            am2z__vec_puts(&b, "    section ");
            am2z__trace_mm_name(&b, s->processor);
            if (s->attempt > 1) am2z__trace_printf(&b, " attempt %d", s->attempt);
            am2z__vec_putc(&b, '\n');
        }
        am2z__vec_puts(&b, "    ");
        am2z__trace_mm_name(&b, s->processor);
        if (s->attempt > 1) am2z__trace_printf(&b, " attempt %d", s->attempt);
        if (s->status != AM2Z_TRACE_OK) {
            am2z__vec_putc(&b, ' ');
            am2z__trace_mm_name(&b, am2z__trace_outcome(s));
        }
        am2z__trace_printf(&b, " :%ss%u, %lld, %lld\n", s->status == AM2Z_TRACE_FAILED ? "crit, " : s->end_ns ? "" : "active, ",
                           (unsigned)s->id, (long long)a, (long long)z);
    }
    am2z__tview_free(&v);
    return am2z__trace_text_done(&b, "trace_mermaid", out, len);
}

/* Chrome lanes: a span goes on its parent's lane when that lane is free at its start
   (only its ancestors still open there), else on the first such lane, so the
   complete events of one tid always nest. */
AM2Z_API am2z_status am2z_trace_chrome(const am2z_trace *t, char **out, size_t *len) {
    am2z__tview v;
    am2z_value *ev, *e, *args, *doc;
    size_t i, k, nlanes = 0, nworkers = 0;
    size_t *under = NULL, *lane_top = NULL; /* the span open below each placed one; each lane's last */
    const char **workers = NULL;
    char *text;
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!t || !out) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "trace_chrome: NULL argument");
    if (!am2z__tview_make(t, &v)) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "trace_chrome: out of memory");
    under = (size_t *)am2z__malloc((v.n + 1) * sizeof *under);
    lane_top = (size_t *)am2z__malloc((v.n + 1) * sizeof *lane_top);
    workers = (const char **)am2z__malloc((v.n + 1) * sizeof *workers);
    if (!under || !lane_top || !workers) goto oom;
    workers[0] = "";
    nworkers = 1;
    ev = am2z_value_array();
    for (i = 0; i < v.n; i++) {
        const am2z_trace_span *s = &v.s[v.order[i]];
        size_t idx = v.order[i], lane = (size_t)-1, pid;
        int64_t end = s->end_ns ? s->end_ns : v.t1;
        /* spans come in tree order, so a lane's open spans form a stack: pop those that
           ended by our start; the lane is ours when what is left is an ancestor */
        for (k = 0; k < nlanes && lane == (size_t)-1; k++) {
            size_t o = lane_top[k], up = idx;
            while (o != (size_t)-1 && v.s[o].end_ns && v.s[o].end_ns <= s->start_ns) o = under[o];
            while (o != (size_t)-1 && up != o && v.s[up].parent && v.s[up].parent - 1 < up) up = v.s[up].parent - 1;
            if (o == (size_t)-1 || up == o) {
                lane = k;
                under[idx] = o;
            }
        }
        if (lane == (size_t)-1) {
            lane = nlanes++;
            under[idx] = (size_t)-1;
        }
        lane_top[lane] = idx;
        for (pid = 0; pid < nworkers && strcmp(workers[pid], s->worker) != 0; pid++) {}
        if (pid == nworkers) workers[nworkers++] = s->worker;
        args = am2z__trace_span_json(s);
        e = am2z_value_set(am2z_value_object(), "name", am2z_value_string(s->processor));
        e = am2z_value_set(e, "cat", am2z_value_string("am2z"));
        e = am2z_value_set(e, "ph", am2z_value_string("X"));
        e = am2z_value_set(e, "ts", am2z_value_double((double)(s->start_ns - v.t0) / 1e3));
        e = am2z_value_set(e, "dur", am2z_value_double((double)(end - s->start_ns) / 1e3));
        e = am2z_value_set(e, "pid", am2z_value_int((int64_t)pid + 1));
        e = am2z_value_set(e, "tid", am2z_value_int((int64_t)lane + 1));
        e = am2z_value_set(e, "args", args);
        ev = am2z_value_append(ev, "", e);
    }
    for (k = 0; k < nworkers; k++) { /* process names for the viewer */
        e = am2z_value_set(am2z_value_object(), "name", am2z_value_string("process_name"));
        e = am2z_value_set(e, "ph", am2z_value_string("M"));
        e = am2z_value_set(e, "pid", am2z_value_int((int64_t)k + 1));
        e = am2z_value_set(e, "tid", am2z_value_int(1));
        e = am2z_value_set(e, "args", am2z_value_set(am2z_value_object(), "name",
                                                     am2z_value_stringf("am2z %s", k ? workers[k] : "caller")));
        ev = am2z_value_append(ev, "", e);
    }
    doc = am2z_value_set(am2z_value_object(), "traceEvents", ev);
    doc = am2z_value_set(doc, "displayTimeUnit", am2z_value_string("ms"));
    doc = am2z_value_set(doc, "otherData", am2z_value_set(am2z_value_object(), "startNs", am2z_value_int(v.t0)));
    text = am2z_json_write(doc, AM2Z_JSON_COMPACT, len);
    am2z_value_release(doc);
    am2z__free(under);
    am2z__free(lane_top);
    am2z__free((void *)workers);
    am2z__tview_free(&v);
    if (!text) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "trace_chrome: out of memory");
    *out = text;
    return AM2Z_STATUS_OK;
oom:
    am2z__free(under);
    am2z__free(lane_top);
    am2z__free((void *)workers);
    am2z__tview_free(&v);
    return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "trace_chrome: out of memory");
}

/* ==== 7d. durable executions ========================================================== */
/* The per-runtime registry of the durable executions this process runs or has parked:
   it refuses a second run of one id, hands a signal to a parked execution (or marks a
   running one, so the wait that parks it resumes at once), and runs the timer that
   resumes timed-out waits. The records themselves are the store's (7c); the chain
   side is section 6 (am2z__chain_run) and the scopes section 5. */

typedef struct am2z__dent {
    char id[AM2Z_DURABLE_MAX_ID + 1];
    int parked;                /* 0: running here, 1: parked */
    int signalled;             /* a signal arrived while it ran */
    int64_t until;             /* parked: epoch ms its wait times out, 0: never */
    struct am2z__dent *next;
    int due;                   /* parked: resume at the runtime's next chance (a resume
                                  asked from a thread that may not run it; see poll) */
} am2z__dent;

struct am2z__dreg {
    am2z_runtime *rt;
    am2z_store *store;         /* borrowed */
    /* starts a run of id (claimed by the caller) on the runtime's workers, detached */
    am2z_status (*resubmit)(am2z_runtime *rt, const char *id);
    am2z__mutex mu;
    am2z__cond cv;             /* an outcome was recorded; a parked entry changed */
    am2z__dent *entries;       /* under mu */
    am2z__thread timer;
    int timer_started, stopping; /* under mu */
    /* NULL: the timer thread resumes expired waits. Set by a runtime that runs resumes
       on its own thread only (inline, section 9): it resumes expired and due entries
       itself (am2z__dur_take_due) and no timer starts; am2z_runtime_durable_outcome
       calls it before each wait, and does not wait when it returns 0 (nothing but the
       calling thread could finish an execution). */
    int (*poll)(am2z_runtime *rt);
    /* set by a runtime whose executions run in other processes too (the queue runtime,
       am2z_resp.h 4.11): it moves parked execution id on in its own store and queues;
       1 when it moved one, 0 when there was nothing to move (*st: OK or the failure).
       resume and signal use it instead of this registry's parked entries. */
    int (*wake)(am2z_runtime *rt, const char *id, am2z_status *st);
};

#define AM2Z__DUR_WAITING "AM2Z_WAITING"

/* Ids are also key parts: no '/', nothing a shell or a log would mangle. */
static int am2z__dur_id_ok(const char *id) {
    size_t n = 0;
    if (!id) return 0;
    for (; id[n]; n++) {
        char c = id[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-' || c == ':'))
            return 0;
    }
    return n >= 1 && n <= AM2Z_DURABLE_MAX_ID;
}

static am2z__dent *am2z__dur_find_locked(am2z__dreg *g, const char *id) {
    am2z__dent *e;
    for (e = g->entries; e; e = e->next)
        if (!strcmp(e->id, id)) return e;
    return NULL;
}

static void am2z__dur_unclaim(am2z__dreg *g, const char *id) {
    am2z__dent **pp, *e;
    am2z__mutex_lock(&g->mu);
    for (pp = &g->entries; (e = *pp) != NULL; pp = &e->next)
        if (!strcmp(e->id, id)) {
            *pp = e->next;
            am2z__free(e);
            break;
        }
    am2z__cond_broadcast(&g->cv);
    am2z__mutex_unlock(&g->mu);
}

/* Claims id for a run: 1, or 0 when it runs already (or out of memory: *oom). A
   parked id is claimed back (a run that finds no signal parks again). */
static int am2z__dur_claim(am2z__dreg *g, const char *id, int *oom) {
    am2z__dent *e;
    int ok = 1;
    *oom = 0;
    am2z__mutex_lock(&g->mu);
    e = am2z__dur_find_locked(g, id);
    if (e && !e->parked) {
        ok = 0;
    } else if (e) {
        e->parked = 0;
        e->signalled = 0;
        e->due = 0;
    } else if ((e = (am2z__dent *)am2z__malloc(sizeof *e)) != NULL) {
        memset(e, 0, sizeof *e);
        memcpy(e->id, id, strlen(id) + 1);
        e->next = g->entries;
        g->entries = e;
    } else {
        ok = 0;
        *oom = 1;
    }
    am2z__mutex_unlock(&g->mu);
    return ok;
}

static void am2z__dur_resubmit(am2z__dreg *g, const char *id) {
    if (g->resubmit(g->rt, id) == AM2Z_STATUS_OK) return;
    am2z_log_warn(am2z_runtime_logger(g->rt), "durable execution '%s' not resumed (%s): am2z_runtime_resume "
                  "continues it", id, am2z_status_detail());
    am2z__dur_unclaim(g, id);
}

static void *am2z__dur_timer_main(void *arg) {
    am2z__dreg *g = (am2z__dreg *)arg;
    char due[16][AM2Z_DURABLE_MAX_ID + 1];
    am2z__mutex_lock(&g->mu);
    while (!g->stopping) {
        int64_t now = am2z_now_ms(), next = INT64_MAX;
        size_t n = 0, i;
        am2z__dent *e;
        for (e = g->entries; e; e = e->next) {
            if (!e->parked || !e->until) continue;
            if (e->until <= now && n < 16) {
                e->parked = 0; /* claimed for the resume */
                memcpy(due[n++], e->id, sizeof due[0]);
            } else if (e->until < next) {
                next = e->until;
            }
        }
        if (n) {
            am2z__mutex_unlock(&g->mu);
            for (i = 0; i < n; i++) am2z__dur_resubmit(g, due[i]);
            am2z__mutex_lock(&g->mu);
            continue;
        }
        am2z__cond_wait_until(&g->cv, &g->mu,
                              next == INT64_MAX ? INT64_MAX : am2z_monotonic_ns() + (next - now) * 1000000);
    }
    am2z__mutex_unlock(&g->mu);
    return NULL;
}

AM2Z__PRIVATE am2z__dreg *am2z__dreg_new(am2z_runtime *rt, am2z_store *store,
                                         am2z_status (*resubmit)(am2z_runtime *rt, const char *id)) {
    am2z__dreg *g = (am2z__dreg *)am2z__malloc(sizeof *g);
    if (!g) return NULL;
    memset(g, 0, sizeof *g);
    g->rt = rt;
    g->store = store;
    g->resubmit = resubmit;
    if (am2z__mutex_cond_init(&g->mu, &g->cv) != 0) {
        am2z__free(g);
        return NULL;
    }
    return g;
}

/* Stops the timer and frees the registry (the runtime is stopped: nothing runs). */
AM2Z__PRIVATE void am2z__dreg_free(am2z__dreg *g) {
    am2z__dent *e;
    int join;
    if (!g) return;
    am2z__mutex_lock(&g->mu);
    g->stopping = 1;
    join = g->timer_started;
    am2z__cond_broadcast(&g->cv);
    am2z__mutex_unlock(&g->mu);
    if (join) am2z__thread_join(g->timer);
    while ((e = g->entries) != NULL) {
        g->entries = e->next;
        am2z__free(e);
    }
    am2z__cond_destroy(&g->cv);
    am2z__mutex_destroy(&g->mu);
    am2z__free(g);
}

AM2Z__PRIVATE void am2z__dx_release(am2z__dx *dx) {
    if (dx && am2z__atomic_dec(&dx->refs) == 0) am2z__free(dx);
}

static am2z_status am2z__dur_key_of(char *buf, const char *id, const char *what) {
    int n = snprintf(buf, AM2Z_STORE_MAX_KEY + 1, "x/%s/%s", id, what);
    if (n <= 0 || n > AM2Z_STORE_MAX_KEY) return am2z__fail(AM2Z_STATUS_LIMIT, AM2Z_NTS, "durable: key too long");
    return AM2Z_STATUS_OK;
}

/* OK when key exists, NOT_FOUND, or the store's failure. */
static am2z_status am2z__dur_has(am2z_store *store, const char *key) {
    void *v = NULL;
    size_t len;
    am2z_status st = am2z_store_get(store, key, &v, &len);
    am2z__free(v);
    return st;
}

/* Begins a run of durable execution id (generated into id_out when NULL): claims it
   (unless claimed), then reads its start record, or writes one for a new execution.
   On OK: *run_input (a new reference), run_name and run_sid are what to run (the
   recorded ones on a resume; name NULL: the recorded processor). NULL with *st and the
   detail on failure (the claim undone). */
AM2Z__PRIVATE am2z__dx *am2z__dur_begin(am2z__dreg *g, const char *name, const am2z_state *input, const char *sid,
                                        const char *id, int claimed, am2z_state **run_input,
                                        char run_name[AM2Z_NAME_MAX + 1], char run_sid[AM2Z_SESSION_ID_MAX + 1],
                                        am2z_status *st) {
    char gen[AM2Z_EXECUTION_ID_SIZE], key[AM2Z_STORE_MAX_KEY + 1];
    am2z_value *rec = NULL;
    am2z__dx *dx;
    int oom;
    *run_input = NULL;
    if (!id && name) {
        am2z_execution_id_generate(name, gen);
        id = gen;
    }
    if (!am2z__dur_id_ok(id)) {
        *st = am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                         "durable: execution_id '%s' is not 1..%d bytes of [A-Za-z0-9_.:-]", id ? id : "(null)",
                         AM2Z_DURABLE_MAX_ID);
        return NULL;
    }
    am2z__dur_key_of(key, id, "done");
    *st = am2z__dur_has(g->store, key);
    if (*st == AM2Z_STATUS_NOT_FOUND) *st = AM2Z_STATUS_OK;
    else if (*st == AM2Z_STATUS_OK) *st = AM2Z_STATUS_EXISTS;
    if (*st == AM2Z_STATUS_EXISTS) {
        *st = am2z__fail(AM2Z_STATUS_EXISTS, AM2Z_NTS,
                         "durable execution '%s' has finished: am2z_runtime_durable_outcome reads its outcome", id);
        return NULL;
    }
    if (*st != AM2Z_STATUS_OK) return NULL;
    if (!claimed && !am2z__dur_claim(g, id, &oom)) {
        *st = oom ? am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "durable: out of memory")
                  : am2z__fail(AM2Z_STATUS_EXISTS, AM2Z_NTS, "durable execution '%s' is running", id);
        return NULL;
    }
    am2z__dur_key_of(key, id, "start");
    *st = am2z__dur_get_json(g->store, key, &rec);
    if (*st == AM2Z_STATUS_OK) { /* a resume: what was recorded runs */
        const char *rn = am2z_value_get_string(rec, "processor", ""), *rs = am2z_value_get_string(rec, "sessionId", "");
        const am2z_value *ri = am2z_value_get(rec, "input");
        if (name && strcmp(name, rn) != 0) {
            *st = am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                             "durable execution '%s' runs processor '%s', not '%s'", id, rn, name);
        } else if (!*rn || strlen(rn) > AM2Z_NAME_MAX || strlen(rs) > AM2Z_SESSION_ID_MAX || !ri) {
            *st = am2z__fail(AM2Z_STATUS_PROTOCOL, AM2Z_NTS, "durable execution '%s': corrupt start record", id);
        } else {
            memcpy(run_name, rn, strlen(rn) + 1);
            memcpy(run_sid, rs, strlen(rs) + 1);
            *run_input = am2z_value_retain(ri);
        }
    } else if (*st == AM2Z_STATUS_NOT_FOUND && name && input) { /* new: record it first */
        const char *s = sid ? sid : "default";
        rec = am2z_value_set(am2z_value_object(), "processor", am2z_value_string(name));
        rec = am2z_value_set(rec, "input", am2z_value_retain(input));
        rec = am2z_value_set(rec, "sessionId", am2z_value_string(s));
        rec = am2z_value_set(rec, "startedAt", am2z_value_int(am2z_now_ms()));
        *st = rec ? am2z__dur_put_json(g->store, key, rec) : AM2Z_STATUS_NO_MEMORY;
        if (*st == AM2Z_STATUS_OK && strlen(name) <= AM2Z_NAME_MAX && strlen(s) <= AM2Z_SESSION_ID_MAX) {
            memcpy(run_name, name, strlen(name) + 1);
            memcpy(run_sid, s, strlen(s) + 1);
            *run_input = am2z_value_retain(input);
        } else if (*st == AM2Z_STATUS_OK) {
            *st = am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "durable: processor or session name too long");
        }
    } else if (*st == AM2Z_STATUS_NOT_FOUND) {
        *st = am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "durable execution '%s' has no start record", id);
    }
    am2z_value_release(rec);
    dx = *st == AM2Z_STATUS_OK ? (am2z__dx *)am2z__malloc(sizeof *dx) : NULL;
    if (*st == AM2Z_STATUS_OK && !dx) *st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "durable: out of memory");
    if (!dx) {
        am2z_value_release(*run_input);
        *run_input = NULL;
        am2z__dur_unclaim(g, id);
        return NULL;
    }
    memset(dx, 0, sizeof *dx);
    dx->refs = 1;
    dx->reg = g;
    dx->store = g->store;
    memcpy(dx->id, id, strlen(id) + 1);
    return dx;
}

/* A begun run that was never submitted. */
AM2Z__PRIVATE void am2z__dur_abort(am2z__dx *dx) {
    am2z__dur_unclaim(dx->reg, dx->id);
    am2z__dx_release(dx);
}

typedef struct am2z__dur_keys {
    char **keys;
    size_t n, cap;
    int failed;
} am2z__dur_keys;

static int am2z__dur_collect(const char *key, const void *value, size_t len, void *user_data) {
    am2z__dur_keys *k = (am2z__dur_keys *)user_data;
    (void)value;
    (void)len;
    if (k->n == k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 16;
        char **nk = (char **)am2z__realloc(k->keys, cap * sizeof *nk);
        if (!nk) {
            k->failed = 1;
            return 1;
        }
        k->keys = nk;
        k->cap = cap;
    }
    if (!(k->keys[k->n] = am2z__strdup(key))) {
        k->failed = 1;
        return 1;
    }
    k->n++;
    return 0;
}

/* Removes the records of id under prefix "x/<id>/" except `keep` (NULL: all). */
static am2z_status am2z__dur_remove_all(am2z_store *store, const char *id, const char *keep) {
    char prefix[AM2Z_STORE_MAX_KEY + 1];
    am2z__dur_keys k;
    am2z_status st, st2 = AM2Z_STATUS_OK;
    size_t i;
    memset(&k, 0, sizeof k);
    snprintf(prefix, sizeof prefix, "x/%s/", id);
    st = am2z_store_scan(store, prefix, am2z__dur_collect, &k);
    if (st == AM2Z_STATUS_OK && k.failed) st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "durable: out of memory");
    for (i = 0; i < k.n; i++) {
        if (st == AM2Z_STATUS_OK && (!keep || strcmp(k.keys[i], keep) != 0) && st2 == AM2Z_STATUS_OK)
            st2 = am2z_store_remove(store, k.keys[i]);
        am2z__free(k.keys[i]);
    }
    am2z__free(k.keys);
    return st != AM2Z_STATUS_OK ? st : st2;
}

static int am2z__dur_is_waiting(const am2z_error *err) {
    const am2z_error *root = am2z_error_root_cause(err);
    return root && root->code && !strcmp(root->code, AM2Z__DUR_WAITING);
}

/* The end of a durable execution's run (the runtime's final outcome): parked, left
   unfinished (cancelled), or recorded as done. state and err borrowed. */
AM2Z__PRIVATE void am2z__dur_end(am2z__dx *dx, const am2z_state *state, const am2z_error *err, int cancelled,
                                 int attempts, double duration_ms, int64_t started_at, const char *sid) {
    am2z__dreg *g = dx->reg;
    char key[AM2Z_STORE_MAX_KEY + 1];
    am2z_value *rec;
    am2z_status st;
    if (!state && am2z__atomic_load(&dx->parked, AM2Z__MO_SEQ_CST) && am2z__dur_is_waiting(err)) {
        am2z__dent *e;
        int resume = 0, no_timer = 0;
        am2z__mutex_lock(&g->mu);
        e = am2z__dur_find_locked(g, dx->id);
        if (e && e->signalled) { /* a signal came while it ran: go on at once */
            e->signalled = 0;
            resume = 1;
        } else if (e) {
            e->parked = 1;
            e->until = am2z__atomic_load(&dx->park_until, AM2Z__MO_SEQ_CST);
            if (e->until && !g->timer_started && !g->stopping && !g->poll)
                g->timer_started = am2z__thread_create(&g->timer, am2z__dur_timer_main, g) == 0;
            no_timer = e->until && !g->timer_started && !g->poll;
            am2z__cond_broadcast(&g->cv);
        }
        am2z__mutex_unlock(&g->mu);
        if (no_timer)
            am2z_log_error(am2z_runtime_logger(g->rt), "durable execution '%s': no timer thread for its wait timeout",
                           dx->id);
        if (resume) am2z__dur_resubmit(g, dx->id);
        return;
    }
    if (cancelled) { /* not finished: resume continues it */
        am2z__dur_unclaim(g, dx->id);
        return;
    }
    rec = am2z_value_set(am2z_value_object(), "ok", am2z_value_bool(state != NULL));
    if (state) rec = am2z_value_set(rec, "state", am2z_value_retain(state));
    if (err) rec = am2z_value_set(rec, "error", am2z_error_to_json(err));
    rec = am2z_value_set(rec, "attempts", am2z_value_int(attempts));
    rec = am2z_value_set(rec, "durationMs", am2z_value_double(duration_ms));
    rec = am2z_value_set(rec, "startedAt", am2z_value_int(started_at));
    rec = am2z_value_set(rec, "sessionId", am2z_value_string(sid ? sid : "default"));
    am2z__dur_key_of(key, dx->id, "done");
    st = rec ? am2z__dur_put_json(dx->store, key, rec) : AM2Z_STATUS_NO_MEMORY;
    am2z_value_release(rec);
    if (st == AM2Z_STATUS_OK) {
        am2z__atomic_store(&dx->finished, 1, AM2Z__MO_SEQ_CST);
        st = am2z__dur_remove_all(dx->store, dx->id, key);
        if (st != AM2Z_STATUS_OK)
            am2z_log_warn(am2z_runtime_logger(g->rt), "durable execution '%s': old records not removed: %s", dx->id,
                          am2z_status_detail());
    } else {
        am2z_log_error(am2z_runtime_logger(g->rt), "durable execution '%s': outcome not recorded (%s); "
                       "am2z_runtime_resume runs it again", dx->id, am2z_status_detail());
    }
    am2z__dur_unclaim(g, dx->id);
}

static am2z__dreg *am2z__dur_reg(am2z_runtime *rt, const char *op) {
    if (rt && rt->dreg) return rt->dreg;
    am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "%s: the runtime has no store (am2z_local_desc / am2z_inline_desc .store)", op);
    return NULL;
}

typedef struct am2z__dur_scan {
    am2z__dur_keys started, done;
} am2z__dur_scan;

static int am2z__dur_scan_fn(const char *key, const void *value, size_t len, void *user_data) {
    am2z__dur_scan *s = (am2z__dur_scan *)user_data;
    size_t n = strlen(key);
    if (n > 8 && !strcmp(key + n - 6, "/start")) return am2z__dur_collect(key, value, len, &s->started);
    if (n > 7 && !strcmp(key + n - 5, "/done")) return am2z__dur_collect(key, value, len, &s->done);
    return 0;
}

/* The id part of "x/<id>/start" (in place). */
static char *am2z__dur_id_of(char *key) {
    char *slash = strchr(key + 2, '/');
    if (slash) *slash = '\0';
    return key + 2;
}

AM2Z_API am2z_status am2z_runtime_resume(am2z_runtime *rt, const char *execution_id, size_t *resumed) {
    am2z__dreg *g = am2z__dur_reg(rt, "resume");
    am2z__dur_scan s;
    am2z_status st, first = AM2Z_STATUS_OK;
    size_t i, j, n = 0;
    int oom;
    if (resumed) *resumed = 0;
    if (!g) return AM2Z_STATUS_INVALID_ARGUMENT;
    if (g->wake) { /* its workers resume by themselves: a parked one is moved on now */
        if (!execution_id) return AM2Z_STATUS_OK;
        if (!am2z__dur_id_ok(execution_id))
            return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "resume: bad execution id");
        n = (size_t)g->wake(rt, execution_id, &st);
        if (resumed) *resumed = n;
        return st;
    }
    if (execution_id) {
        char key[AM2Z_STORE_MAX_KEY + 1];
        if (!am2z__dur_id_ok(execution_id))
            return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "resume: bad execution id");
        am2z__dur_key_of(key, execution_id, "done");
        st = am2z__dur_has(g->store, key);
        if (st == AM2Z_STATUS_OK)
            return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "resume: durable execution '%s' has finished",
                              execution_id);
        if (!am2z__dur_claim(g, execution_id, &oom))
            return oom ? AM2Z_STATUS_NO_MEMORY : AM2Z_STATUS_OK; /* running already */
        st = g->resubmit(rt, execution_id);
        if (st != AM2Z_STATUS_OK) am2z__dur_unclaim(g, execution_id);
        else if (resumed) *resumed = 1;
        return st;
    }
    memset(&s, 0, sizeof s);
    st = am2z_store_scan(g->store, "x/", am2z__dur_scan_fn, &s);
    if (st == AM2Z_STATUS_OK && (s.started.failed || s.done.failed))
        st = am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "resume: out of memory");
    for (i = 0; i < s.started.n; i++) {
        char *id = am2z__dur_id_of(s.started.keys[i]);
        int done = 0;
        for (j = 0; j < s.done.n && !done; j++) done = !strcmp(am2z__dur_id_of(s.done.keys[j]), id);
        if (st != AM2Z_STATUS_OK || done || !am2z__dur_id_ok(id) || !am2z__dur_claim(g, id, &oom)) continue;
        if (g->resubmit(rt, id) == AM2Z_STATUS_OK) {
            n++;
        } else {
            if (first == AM2Z_STATUS_OK) first = am2z_status_last();
            am2z__dur_unclaim(g, id);
        }
    }
    for (i = 0; i < s.started.n; i++) am2z__free(s.started.keys[i]);
    for (i = 0; i < s.done.n; i++) am2z__free(s.done.keys[i]);
    am2z__free(s.started.keys);
    am2z__free(s.done.keys);
    if (resumed) *resumed = n;
    return st != AM2Z_STATUS_OK ? st : first;
}

AM2Z_API am2z_status am2z_runtime_signal(am2z_runtime *rt, const char *execution_id, const char *name,
                                         const am2z_value *payload) {
    am2z__dreg *g = am2z__dur_reg(rt, "signal");
    char key[AM2Z_STORE_MAX_KEY + 1];
    am2z_value *null = NULL;
    am2z__dent *e;
    am2z_status st;
    int resume = 0;
    if (!g) return AM2Z_STATUS_INVALID_ARGUMENT;
    if (!am2z__dur_id_ok(execution_id) || am2z__proc_name_why(name))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "signal: bad execution id or signal name '%s'",
                          name ? name : "(null)");
    am2z__dur_key_of(key, execution_id, "done");
    st = am2z__dur_has(g->store, key);
    if (st == AM2Z_STATUS_OK)
        return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "signal '%s': durable execution '%s' has finished", name,
                          execution_id);
    if (st != AM2Z_STATUS_NOT_FOUND) return st;
    snprintf(key, sizeof key, "x/%s/s/%s", execution_id, name);
    if (!payload) payload = null = am2z_value_null();
    st = am2z__dur_put_json(g->store, key, payload);
    am2z_value_release(null);
    if (st != AM2Z_STATUS_OK) return st;
    if (g->wake) {
        g->wake(rt, execution_id, &st);
        return st;
    }
    am2z__mutex_lock(&g->mu);
    e = am2z__dur_find_locked(g, execution_id);
    if (e && e->parked) {
        e->parked = 0; /* claimed for the resume */
        resume = 1;
    } else if (e) {
        e->signalled = 1;
    }
    am2z__mutex_unlock(&g->mu);
    if (resume) am2z__dur_resubmit(g, execution_id);
    return AM2Z_STATUS_OK;
}

AM2Z_API am2z_status am2z_runtime_durable_outcome(am2z_runtime *rt, const char *execution_id, int64_t timeout_ms,
                                                  am2z_outcome *out) {
    am2z__dreg *g = am2z__dur_reg(rt, "durable_outcome");
    char key[AM2Z_STORE_MAX_KEY + 1], start[AM2Z_STORE_MAX_KEY + 1];
    int64_t until = timeout_ms < 0 ? INT64_MAX : am2z_monotonic_ns() + (timeout_ms > 100000000 ? 100000000 : timeout_ms) * 1000000;
    am2z_value *rec = NULL;
    am2z_status st;
    if (!g) return AM2Z_STATUS_INVALID_ARGUMENT;
    if (!out || !am2z__dur_id_ok(execution_id))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "durable_outcome: NULL outcome or bad id");
    am2z_outcome_clear(out);
    am2z__dur_key_of(key, execution_id, "done");
    am2z__dur_key_of(start, execution_id, "start");
    for (;;) {
        int known;
        if (g->poll && !g->poll(g->rt) && until > am2z_monotonic_ns()) until = am2z_monotonic_ns();
        st = am2z__dur_get_json(g->store, key, &rec);
        if (st == AM2Z_STATUS_OK) break;
        if (st != AM2Z_STATUS_NOT_FOUND) return st;
        st = am2z__dur_has(g->store, start);
        am2z__mutex_lock(&g->mu);
        known = st == AM2Z_STATUS_OK || am2z__dur_find_locked(g, execution_id) != NULL;
        if (known && am2z_monotonic_ns() < until) /* slices: a record written between the get and the wait */
            am2z__cond_wait_until(&g->cv, &g->mu,
                                  until - am2z_monotonic_ns() > 100000000 ? am2z_monotonic_ns() + 100000000 : until);
        am2z__mutex_unlock(&g->mu);
        if (!known && am2z__dur_get_json(g->store, key, &rec) == AM2Z_STATUS_OK) break; /* finished meanwhile */
        if (!known)
            return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "durable_outcome: no durable execution '%s'",
                              execution_id);
        if (am2z_monotonic_ns() >= until) {
            st = am2z__dur_get_json(g->store, key, &rec);
            if (st == AM2Z_STATUS_OK) break;
            return am2z__fail(AM2Z_STATUS_TIMEOUT, AM2Z_NTS, "durable_outcome: '%s' has not finished", execution_id);
        }
    }
    {
        const char *sid = am2z_value_get_string(rec, "sessionId", "default");
        const am2z_value *s = am2z_value_get(rec, "state"), *e = am2z_value_get(rec, "error");
        out->state = s ? am2z_value_retain(s) : NULL;
        out->error = e ? am2z_error_from_json(e) : NULL;
        out->attempts = (int)am2z_value_get_int(rec, "attempts", 0);
        out->duration_ms = am2z_value_get_double(rec, "durationMs", 0);
        out->started_at = am2z_value_get_int(rec, "startedAt", 0);
        snprintf(out->execution_id, sizeof out->execution_id, "%s", execution_id);
        am2z__outcome_session(out, sid);
        if (!am2z_value_get_bool(rec, "ok", 0) && !out->error)
            out->error = am2z_error_validation("outcome", NULL, "the recorded failure could not be read");
    }
    am2z_value_release(rec);
    return AM2Z_STATUS_OK;
}

AM2Z_API am2z_status am2z_runtime_forget(am2z_runtime *rt, const char *execution_id) {
    am2z__dreg *g = am2z__dur_reg(rt, "forget");
    int busy;
    if (!g) return AM2Z_STATUS_INVALID_ARGUMENT;
    if (!am2z__dur_id_ok(execution_id)) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "forget: bad id");
    am2z__mutex_lock(&g->mu);
    busy = am2z__dur_find_locked(g, execution_id) != NULL;
    am2z__mutex_unlock(&g->mu);
    if (g->wake && !busy) { /* runs in any process: started and not done is busy */
        char key[AM2Z_STORE_MAX_KEY + 1];
        am2z__dur_key_of(key, execution_id, "done");
        if (am2z__dur_has(g->store, key) == AM2Z_STATUS_NOT_FOUND) {
            am2z__dur_key_of(key, execution_id, "start");
            busy = am2z__dur_has(g->store, key) == AM2Z_STATUS_OK;
        }
    }
    if (busy)
        return am2z__fail(AM2Z_STATUS_CONFLICT, AM2Z_NTS, "forget: durable execution '%s' runs or waits",
                          execution_id);
    return am2z__dur_remove_all(g->store, execution_id, NULL);
}

/* ---- resumes run by the runtime's own thread (inline runtime) ---- */

/* id (claimed for a resume by a thread that may not run it) is parked again, due: the
   runtime's poll resumes it. */
AM2Z__PRIVATE void am2z__dur_requeue(am2z__dreg *g, const char *id) {
    am2z__dent *e;
    am2z__mutex_lock(&g->mu);
    if ((e = am2z__dur_find_locked(g, id)) != NULL && !e->parked) {
        e->parked = 1;
        e->due = 1;
    }
    am2z__cond_broadcast(&g->cv);
    am2z__mutex_unlock(&g->mu);
}

/* Claims one parked entry to resume at now_ms (due, or its wait expired): 1 with its id
   in id_out. 0 when none; *next_until (may be NULL) then gets the earliest later wait
   timeout, INT64_MAX when none. */
AM2Z__PRIVATE int am2z__dur_take_due(am2z__dreg *g, int64_t now_ms, char id_out[AM2Z_DURABLE_MAX_ID + 1],
                                     int64_t *next_until) {
    int64_t next = INT64_MAX;
    am2z__dent *e;
    am2z__mutex_lock(&g->mu);
    for (e = g->entries; e; e = e->next) {
        if (!e->parked) continue;
        if (e->due || (e->until && e->until <= now_ms)) {
            e->parked = 0; /* claimed for the resume */
            e->due = 0;
            memcpy(id_out, e->id, sizeof e->id);
            am2z__mutex_unlock(&g->mu);
            return 1;
        }
        if (e->until && e->until < next) next = e->until;
    }
    am2z__mutex_unlock(&g->mu);
    if (next_until) *next_until = next;
    return 0;
}

/* ---- wait steps ---- */

typedef struct am2z__wait_cfg {
    char *signal;
    char *merge_path;
    int64_t timeout_ms;
    am2z_value *fallback;
} am2z__wait_cfg;

static void am2z__wait_cfg_free(void *p) {
    am2z__wait_cfg *w = (am2z__wait_cfg *)p;
    if (!w) return;
    am2z__free(w->signal);
    am2z__free(w->merge_path);
    am2z_value_release(w->fallback);
    am2z__free(w);
}

static am2z_result am2z__wait_merge(const am2z_state *input, const char *path, const am2z_value *v) {
    am2z_value *s = am2z_value_set(am2z_value_retain(input), path, am2z_value_retain(v));
    return s ? am2z_ok(s) : am2z_fail(am2z_error_from_status(am2z_status_last(), "wait step merge"));
}

static am2z_result am2z__wait_fn(am2z_ctx *ctx, const am2z_state *input) {
    const am2z__wait_cfg *w = (const am2z__wait_cfg *)am2z_ctx_user_data(ctx);
    am2z__dscope *s = am2z__dur_cur;
    char key[AM2Z_STORE_MAX_KEY + 1], tail[32];
    am2z_value *v = NULL;
    am2z_result r;
    am2z_status st;
    int64_t until, now;
    if (!s || !s->dx || s->step < 0)
        return am2z_fail(am2z_error_validation("wait", NULL, "a wait step runs only as a step of a durable chain "
                                                             "(am2z_submit_desc.durable)"));
    snprintf(key, sizeof key, "x/%s/s/%s", s->dx->id, w->signal);
    st = am2z__dur_get_json(s->dx->store, key, &v);
    if (st == AM2Z_STATUS_OK) {
        r = am2z__wait_merge(input, w->merge_path, v);
        am2z_value_release(v);
        return r;
    }
    if (st != AM2Z_STATUS_NOT_FOUND) return am2z_fail(am2z__dur_store_error(st, "read", key));
    snprintf(tail, sizeof tail, "%ld", s->step);
    if (!am2z__dur_key(key, sizeof key, s->dx, "w", s->path, tail))
        return am2z_fail(am2z__dur_store_error(AM2Z_STATUS_LIMIT, "write", "wait"));
    now = am2z_ctx_now_ms(ctx);
    st = am2z__dur_get_json(s->dx->store, key, &v);
    if (st == AM2Z_STATUS_OK) {
        until = am2z_value_get_int(v, "until", 0);
    } else if (st == AM2Z_STATUS_NOT_FOUND) { /* the first time: the timeout starts now */
        /* capped (~3 years) so the sum cannot overflow */
        until = w->timeout_ms ? now + (w->timeout_ms < 100000000000 ? w->timeout_ms : 100000000000) : 0;
        v = am2z_value_set(am2z_value_object(), "signal", am2z_value_string(w->signal));
        v = am2z_value_set(v, "until", am2z_value_int(until));
        st = v ? am2z__dur_put_json(s->dx->store, key, v) : AM2Z_STATUS_NO_MEMORY;
        if (st != AM2Z_STATUS_OK) {
            am2z_value_release(v);
            return am2z_fail(am2z__dur_store_error(st, "write", key));
        }
    } else {
        return am2z_fail(am2z__dur_store_error(st, "read", key));
    }
    am2z_value_release(v);
    if (until && now >= until) {
        if (w->fallback) return am2z__wait_merge(input, w->merge_path, w->fallback);
        return am2z_fail(am2z_error_with_retryable(am2z_error_timeout("wait for signal", w->timeout_ms), 0));
    }
    am2z__atomic_store(&s->dx->park_until, until, AM2Z__MO_SEQ_CST);
    am2z__atomic_store(&s->dx->parked, 1, AM2Z__MO_SEQ_CST);
    return am2z_fail(am2z_error_business(AM2Z__DUR_WAITING, AM2Z_SEVERITY_LOW,
                                         "durable execution '%s' waits for signal '%s'", s->dx->id, w->signal));
}

AM2Z_API am2z_processor *am2z_wait_signal_new(const am2z_wait_signal_desc *desc, am2z_status *status) {
    am2z_processor_desc pd;
    am2z__wait_cfg *w;
    am2z_processor *p;
    const char *why = NULL;
    if (!desc) why = "NULL desc";
    else if (am2z__proc_name_why(desc->signal)) why = "signal must be a name ([A-Za-z0-9_.-], 1..AM2Z_NAME_MAX bytes)";
    else if (!desc->merge_path || !*desc->merge_path) why = "no merge_path";
    else if (desc->timeout_ms < 0) why = "negative timeout_ms";
    if (why)
        return (am2z_processor *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                                     "wait step '%s': %s",
                                                                     desc && desc->name ? desc->name : "(null)", why));
    w = (am2z__wait_cfg *)am2z__malloc(sizeof *w);
    if (w) {
        memset(w, 0, sizeof *w);
        w->signal = am2z__strdup(desc->signal);
        w->merge_path = am2z__strdup(desc->merge_path);
        w->timeout_ms = desc->timeout_ms;
        w->fallback = am2z_value_retain(desc->fallback);
    }
    if (!w || !w->signal || !w->merge_path) {
        am2z__wait_cfg_free(w);
        return (am2z_processor *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "wait step: out of memory"));
    }
    memset(&pd, 0, sizeof pd);
    pd.name = desc->name;
    pd.fn = am2z__wait_fn;
    pd.description = desc->description;
    pd.user_data = w;
    p = am2z_processor_new(&pd, status);
    if (!p) {
        am2z__wait_cfg_free(w);
        return NULL;
    }
    p->owned = w;
    p->owned_free = am2z__wait_cfg_free;
    return p;
}

#ifndef AM2Z_NO_THREADS /* the local runtime is a pool of threads */
/* ==== 8. local runtime ================================================================ */
/* Design (the why; the header's section 8 comment has the what):
   - EXACT: every execution that a caller waits for runs on a worker thread, never on
     the caller's, so the caller can return at the deadline even when the processor
     ignores cancellation. The caller and idle workers spin briefly before they block,
     because waking a sleeping thread on another vCPU costs ~60 us and a spinning one
     ~0.3 us. COOPERATIVE (am2z__lr_here): the caller creates the same job record (so
     sessions, stop_session and stats see it) but runs it itself instead of queueing it;
     its retries are held for it (job->held) rather than queued, so no queue entry can
     outlive the attempt it was made for.
   - Work-first: nothing that a thread could run itself waits for a wake-up. call_many
     keeps short calls (a per-processor duration estimate, am2z__lr_est) and wakes
     sleepers only for long ones; execute_many's caller runs chunks too and wakes
     sleepers only for a batch worth it; a parent that is no worker blocks on its own
     job's (or batch's) condition variable, which its queued calls signal.
   - Nested calls (ctx_call, composite steps) run inline on the worker that makes them.
     call_many runs its first call inline, queues the others on the "lane" for idle
     workers, then takes back (runs itself) those nobody took: a parent never waits on a
     queued child, so one worker and deep nesting cannot deadlock.
   - A top-level execution is an am2z__lr_job. Its state word packs attempt << 2 | phase;
     whoever moves the current attempt from RUNNING to RESOLVING by compare-and-swap (the
     worker with a result, the waiter at the deadline, a cancel) decides what happens
     next, and the loser drops what it holds. The job is reference counted between its
     handle, the queue and the worker, so a late result is released, never written to
     freed memory.
   - execute_many runs items straight from the caller's arrays (am2z__lr_batch): workers
     claim chunks of indexes; each item has a one-byte state and each worker publishes
     the item it runs with its deadline, so the caller can time out one item while the
     others go on. COOPERATIVE short items run on the caller before the batch is
     published (am2z__lr_run_solo), without that per-item synchronisation.
   - Every count is updated before the outcome is published (DONE), never after, so a
     caller holding an outcome sees it counted. A stop that saw "running" drop may
     find the job still RESOLVING: it then leaves it to its resolver.
   - Each thread keeps a stack of the attempts it runs (am2z__lr_stack): stop_session
     of the caller's own session counts the executions it sits inside (it cannot wait
     for them) and cancels them with the rest.
   - Rate limits: a reservation (next_token_ns) orders the waiting starts, and a check
     against the last real start (last_start_ns) spaces them, so a start that came late
     (busy workers, a waiting call helping others) pushes the next one back. */

#define AM2Z__LR_CHUNK 32          /* execute_many items a worker claims at once */
#define AM2Z__LR_POLL_NS 20000000  /* longest block of a waiting parent between cancel checks */
#define AM2Z__LR_HELP_DEPTH 8      /* nested "help while waiting" levels on one worker */
#define AM2Z__LR_HIST 168          /* latency buckets: 4 per power of two of nanoseconds */
#define AM2Z__LR_MAX_TIMEOUT_MS ((int64_t)100000000000) /* deadlines are capped (~3 years) */
#define AM2Z__LR_EST 256           /* duration estimates kept (direct-mapped by processor) */
#define AM2Z__LR_PCACHE 64         /* a stats shard's cache of processor records */
/* A call shorter than this runs on the thread that makes it: handing it over and taking
   the result back costs more (~1 us between two running threads, measured). */
#define AM2Z__LR_SHORT_NS 5000
/* A call longer than this may wake a sleeping worker (60-115 us on a loaded 2-vCPU VM);
   shorter ones go only to a worker that is already awake. */
#define AM2Z__LR_WAKE_NS 100000

#if defined(__x86_64__) || defined(__i386__)
#define AM2Z__LR_PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__) || defined(__arm__)
#define AM2Z__LR_PAUSE() __asm__ __volatile__("yield" ::: "memory")
#else
#define AM2Z__LR_PAUSE() ((void)0)
#endif

#define AM2Z__LR_LD(p) am2z__atomic_load((p), AM2Z__MO_SEQ_CST)
#define AM2Z__LR_ST(p, v) am2z__atomic_store((p), (v), AM2Z__MO_SEQ_CST)

/* Job phases (low two bits of the word) and execute_many item states (low three bits). */
enum { AM2Z__LR_QUEUED = 0, AM2Z__LR_RUNNING = 1, AM2Z__LR_RESOLVING = 2, AM2Z__LR_DONE = 3 };
#define AM2Z__LR_WORD(attempt, phase) (((attempt) << 2) | (phase))
enum {
    AM2Z__LR_IT_PENDING = 0, AM2Z__LR_IT_CLAIMED, AM2Z__LR_IT_RUNNING,
    AM2Z__LR_IT_WRITING, AM2Z__LR_IT_DONE, AM2Z__LR_IT_ABANDONED
};
/* The slots a job holds (has_slot): its processor's concurrency, its session's. */
#define AM2Z__LR_PSLOT 1
#define AM2Z__LR_SSLOT 2
/* Why an execution was cancelled. */
enum { AM2Z__LR_CANCEL_FREED = 1, AM2Z__LR_CANCEL_SESSION, AM2Z__LR_CANCEL_STOP, AM2Z__LR_CANCEL_PARENT };

typedef struct am2z__lr am2z__lr;
typedef struct am2z__lr_worker am2z__lr_worker;
typedef struct am2z__lr_session am2z__lr_session;
typedef struct am2z__lr_pinfo am2z__lr_pinfo;
typedef struct am2z__lr_job am2z__lr_job;
typedef struct am2z__lr_batch am2z__lr_batch;

/* The last duration of a processor (key), smoothed: what decides whether a call is worth
   handing to another thread. Direct-mapped; a collision overwrites (a hint, not a count). */
typedef struct am2z__lr_est {
    const void *key;          /* atomic */
    int64_t ns;               /* atomic */
} am2z__lr_est;

/* Link of a session's in-flight list (jobs and execute_many calls). */
typedef struct am2z__lr_live {
    struct am2z__lr_live *prev, *next;
    int kind; /* 1 job, 2 batch */
    int pass; /* last cancel pass that visited it (under the session lock) */
} am2z__lr_live;

/* Counters and latency histogram of one processor name in one stats shard. */
typedef struct am2z__lr_pstat {
    char *name;
    uint64_t hash;
    int64_t completed, failed, retried;
    int64_t hist[AM2Z__LR_HIST];
    int64_t sum_ns; /* latencies added up: the metrics histogram's _sum */
} am2z__lr_pstat;

/* Each worker writes only its own shard (no shared cache line per execution); other
   threads share `ext` under its lock. stats() merges them. */
typedef struct am2z__lr_shard {
    am2z__mutex mu;   /* guards the table's shape; the owner reads it without */
    am2z__lr_pstat **tab; /* open addressing by name hash */
    size_t cap, count;
    int shared;           /* ext: every access holds mu */
    /* owner's cache of records by the caller's name pointer, direct-mapped (the name is
       compared too: an address may be reused); a chain's steps alternate names */
    const char *ckey[AM2Z__LR_PCACHE];
    am2z__lr_pstat *cval[AM2Z__LR_PCACHE];
    int64_t started, ended; /* attempts, for "running" */
} am2z__lr_shard;

/* Counters of one processor in one session, keyed by the processor's name pointer
   (stable while it lives; the name is compared too, as an address may be reused). A
   session's records form a list that only grows, indexed by a hash table that readers
   probe without a lock (tables are replaced, never changed in place, and all freed
   with the session). Two processors of one name get one record each, added up in
   session_stats. */
typedef struct am2z__lr_srec {
    struct am2z__lr_srec *next;
    const char *key;
    char *name;
    int64_t completed, failed, retried; /* atomic */
} am2z__lr_srec;

typedef struct am2z__lr_stable {
    struct am2z__lr_stable *older;      /* the tables it replaced */
    size_t cap, count;                  /* cap a power of two, count <= cap / 2 */
    am2z__lr_srec **slot;               /* atomic entries */
} am2z__lr_stable;

struct am2z__lr_session {
    int refs;
    char *id;
    uint64_t hash;
    am2z__lr_session *next; /* table chain, under lr->smu */
    am2z__lr_session *tmp;  /* stop()'s private list */
    int unlinked;           /* stop(): it took s out of the table (under lr->smu) */
    int64_t created_ms;
    int stopping;           /* atomic */
    int64_t submitted, completed, failed, cancelled, running; /* atomic */
    am2z__mutex mu;     /* guards live and the pass marks */
    am2z__cond cv;
    int stopper;            /* atomic: stops draining s (they wait for running to drop) */
    am2z__lr_srec *srecs;   /* per-processor counters (under mu) */
    am2z__lr_stable *srt;   /* atomic: their index */
    am2z__lr_live live;     /* list head */
    /* session_concurrency (under lr->qmu): slots in use, jobs waiting for one */
    int slots;
    am2z__lr_job *wait_head, *wait_tail;
    /* session_rate (under lr->qmu): the window's start and the starts in it */
    int64_t rate_from_ns;
    int rate_used;
};

/* Queue state of a processor with a concurrency or rate limit (under lr->qmu). */
struct am2z__lr_pinfo {
    am2z__lr_pinfo *next;
    am2z_processor *proc;   /* retained */
    int refs;               /* jobs holding it, plus one while listed */
    int listed;
    int running;            /* concurrency slots in use */
    am2z__lr_job *wait_head, *wait_tail; /* waiting for a slot */
    int64_t next_token_ns;  /* rate limit: the next start to reserve (orders the waiters) */
    int64_t last_start_ns;  /* rate limit: the last real start (spaces the starts) */
    int has_started;
};

/* Fields a worker touches come first, so handing a job to another core moves two
   cache lines, not the whole struct. */
struct am2z__lr_job {
    struct am2z_execution base; /* first: the user's handle */
    int refs;
    int word;               /* atomic: attempt << 2 | phase */
    int cancel;             /* atomic: a cancel reason once cancelled */
    int sleepers;           /* atomic: a waiter may be blocked on cv */
    int top;                /* execute / submit (1) or a call queued by call_many (0) */
    int held;               /* atomic: a retry kept out of the queue for its waiter to run */
    int started_attempts;   /* atomic */
    am2z__lr *lr;
    am2z_processor *proc;   /* retained */
    am2z_state *input;      /* retained */
    am2z__lr_session *session; /* top: retained; nested: borrowed through parent */
    am2z__lr_pinfo *pinfo;  /* retained (under qmu) or NULL */
    int64_t timeout_ms;
    int64_t deadline_ns;    /* atomic: current attempt (top) or inherited budget (nested) */
    int64_t first_start_ns; /* atomic */
    int64_t end_ns;
    am2z_state *out_state;  /* the outcome, readable once the phase is DONE */
    am2z_error *out_error;
    int has_slot, has_token; /* under qmu: slots held (AM2Z__LR_PSLOT | AM2Z__LR_SSLOT),
                                rate-limited start reserved */
    int depth;
    int priority;
    /* the rest is mostly the submitter's */
    am2z__lr_live live;
    am2z__lr_job *parent;   /* nested: the job whose attempt made the call (retained) */
    int parent_attempt;
    am2z__lr_batch *pbatch; /* nested: the execute_many item that made the call (retained) */
    size_t pindex;
    am2z__lr_worker *notify; /* nested: the parent's worker, woken when this finishes */
    int64_t due_ns;         /* atomic: earliest start (delayed queue) */
    uint64_t seq;
    int64_t created_ns;
    char exec_id[64];
    am2z_error **errs;      /* failed attempts, in order */
    size_t nerrs, errs_cap;
    am2z__lr_job *next;     /* queue links, under qmu */
    int linked;             /* under qmu: in one of the linked queues (next in use) */
    am2z__lr_job *dnext;    /* a drop list's link, once the last reference is gone */
    int cv_ready;           /* mu and cv initialised: by the first waiter that blocks */
    am2z__mutex mu;     /* top only: the waiter blocks on cv */
    am2z__cond cv;
    am2z__lr_srec *srec;    /* top: the session's counters of proc (NULL: out of memory) */
    am2z__dx *dx;           /* top: its durable execution (7d), or NULL; owned */
    am2z_trace *trace;      /* top: owned, NULL when not traced; nested: the parent's */
    uint32_t trace_parent;  /* nested: the calling attempt's span */
    uint32_t trace_span;    /* top: the span of the attempt that last ended */
    int has_stoken;         /* under qmu: this attempt's start counted in its session's rate */
};

/* A worker's view of one execute_many: the item it runs with that item's deadline
   (written under the seqlock `seq`, odd while changing) and how many items it resolved
   (exact, unlike `remaining`, which a worker stuck in an item may not have updated).
   Padded so two workers never share a cache line. */
typedef struct am2z__lr_bslot {
    unsigned seq;           /* atomic */
    size_t item;            /* atomic: index + 1 of the item being run, 0 = none */
    int64_t deadline;       /* atomic */
    size_t done;            /* atomic (release) */
    char pad[64 - sizeof(unsigned) - 2 * sizeof(size_t) - sizeof(int64_t)];
} am2z__lr_bslot;

struct am2z__lr_batch {
    am2z__lr_live live;
    int refs;
    am2z__lr *lr;
    am2z_processor *proc;
    am2z__lr_session *session;
    const am2z_state *const *inputs; /* the caller's: read only while the item is claimed */
    am2z_outcome *outs;
    size_t count;
    size_t next;            /* atomic: next unclaimed index */
    unsigned char *items;   /* atomic: AM2Z__LR_IT_* */
    am2z__lr_bslot *slots;  /* one per worker */
    size_t remaining;       /* atomic: counted down per chunk, for the fast wake-up */
    size_t abandoned;       /* caller only: items it resolved itself */
    int64_t timeout_ms;
    int cancel, cancel_pending; /* atomic reasons: every unresolved item / items not started */
    int watch;              /* atomic: the caller wants a wake-up after every flush */
    int sleepers;           /* atomic */
    int advertised, sweep, linked; /* under qmu */
    am2z__lr_batch *qnext;
    am2z__mutex mu;
    am2z__cond cv;
    am2z__lr_srec *srec;    /* the session's counters of proc, or NULL */
};

struct am2z__lr_worker {
    am2z__lr *lr;
    int index;
    am2z__thread thread;
    am2z__cond cv;        /* idle sleep, with lr->qmu */
    int sleeping;             /* under qmu */
    am2z__lr_worker *idle_next;
    am2z__mutex pmu;      /* parker of a waiting parent */
    am2z__cond pcv;
    int pwait, pgen;          /* atomic */
    int spinning;             /* holds the idle-spinner role (lr->spinners) */
    int concluding;           /* in run_job after the processor returned */
    int long_spin;            /* it woke a blocked caller: wait longer for its next job */
    am2z__lr_shard shard;
};

struct am2z__lr {
    am2z_runtime *rt;
    int nworkers;
    int64_t default_timeout_ms;
    int max_depth;
    size_t capacity;
    int64_t created_ns, wall_offset_ms;
    am2z__lr_worker *workers;
    am2z__mutex life;     /* serialises start and stop */
    int started;              /* under life */
    int running;              /* atomic: accepting executions */
    /* queue, guarded by qmu */
    am2z__mutex qmu;
    am2z__lr_job *lane_head, *lane_tail;   /* nested calls queued by call_many */
    am2z__lr_job *front_head, *front_tail; /* got a concurrency slot, go before new work */
    am2z__lr_job *norm_head, *norm_tail;   /* priority 0 */
    am2z__lr_job **prio;                   /* heap by (priority, seq) */
    size_t prio_n, prio_cap;
    am2z__lr_job **delayed;                /* heap by (due, seq) */
    size_t delayed_n, delayed_cap;
    am2z__lr_batch *batches;
    am2z__lr_pinfo *pinfos;
    am2z__lr_worker *idle;
    int exiting;              /* atomic (written under qmu): workers leave */
    size_t queued;            /* top-level jobs waiting in the queue (capacity) */
    uint64_t seq;
    int work;                 /* atomic: ready items, a hint for spinning workers */
    int lane_n;               /* atomic: items on the lane */
    int64_t next_due;         /* atomic: earliest delayed item, 0 = none */
    int spinners;             /* atomic */
    am2z__lr_job *handoff;    /* atomic: a job passed straight to the spinning worker */
    /* sessions */
    am2z__mutex smu;
    am2z__lr_session **stab;
    size_t stab_cap, scount;
    am2z__lr_shard ext;
    /* the "metrics" event: a thread of its own, never a worker (under mmu) */
    int64_t metrics_ms;
    int64_t spin_ns;          /* resolved am2z_local_desc.spin_ns; 0: no spin */
    int deadlines;            /* resolved am2z_local_desc.deadlines */
    am2z__lr_est est[AM2Z__LR_EST]; /* how long processors take, by processor: a hint */
    am2z__thread metrics_thread;
    int metrics_running, metrics_quit;
    am2z__mutex mmu;
    am2z__cond mcv;
    struct am2z__lr_sched *sched; /* atomic: schedules (7e), made at the first upsert */
    int session_limit;        /* resolved am2z_local_desc.session_concurrency; 0: none */
    int trace;                 /* desc.trace: trace every top-level execution */
    am2z_rate session_rate;   /* am2z_local_desc.session_rate; max 0: none */
    int tenant_gate;          /* session_limit or session_rate: top-level jobs pass the gate */
};

/* Where a (nested) attempt runs: what cancels it and what its calls inherit. */
typedef struct am2z__lr_frame {
    am2z__lr *lr;
    am2z__lr_worker *worker;  /* NULL when not on one of lr's workers */
    am2z__lr_job *job;        /* the job whose attempt this is part of, or NULL */
    int attempt;
    am2z__lr_batch *batch;    /* the execute_many item this is part of, or NULL */
    size_t index;
    am2z__lr_session *session;
    int64_t deadline_ns;
    am2z_logger *logger;      /* the execution's child logger, made on first use */
    am2z_trace *trace;        /* the execution's trace (borrowed from its job) or NULL */
    uint32_t trace_span;      /* the span calls from here hang under: the parent's until
                                 this frame's attempt starts, then its own */
    int64_t end_ns;           /* when the last attempt's processor returned (set by
                                 am2z__lr_attempt: its callers need no clock read of their own) */
    int solo;                 /* an item of am2z__lr_run_solo, which counts its attempts'
                                 starts and ends ("running") once per chunk */
} am2z__lr_frame;

static __thread am2z__lr_worker *am2z__lr_self;

/* The attempts running on this thread, innermost first (a worker nests them through
   nested calls and through helping other executions while it waits). */
typedef struct am2z__lr_link {
    const am2z__lr_frame *frame;
    struct am2z__lr_link *prev;
} am2z__lr_link;
static __thread am2z__lr_link *am2z__lr_stack;

/* Nested "help while waiting" levels on this thread (worker or caller), which bound the
   stack a thread grows by running other calls while it waits. */
static __thread int am2z__lr_helping;

#include <sched.h> /* sched_yield */


/* ---- small helpers ---- */

static int64_t am2z__lr_now(void) { return am2z_monotonic_ns(); }

static int64_t am2z__lr_wall(const am2z__lr *lr, int64_t ns) { return lr->wall_offset_ms + ns / 1000000; }

static int64_t am2z__lr_deadline(int64_t start_ns, int64_t timeout_ms) {
    if (timeout_ms <= 0) return 0;
    if (timeout_ms > AM2Z__LR_MAX_TIMEOUT_MS) timeout_ms = AM2Z__LR_MAX_TIMEOUT_MS;
    return start_ns + timeout_ms * 1000000;
}

static am2z__lr_worker *am2z__lr_me(const am2z__lr *lr) {
    am2z__lr_worker *w = am2z__lr_self;
    return w && w->lr == lr ? w : NULL;
}

static am2z__lr_est *am2z__lr_est_slot(am2z__lr *lr, const void *p) {
    return &lr->est[(size_t)(((uint64_t)(uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 56) & (AM2Z__LR_EST - 1)];
}

/* p's typical duration in ns, or -1 when unknown. */
static int64_t am2z__lr_est_get(am2z__lr *lr, const void *p) {
    am2z__lr_est *e = am2z__lr_est_slot(lr, p);
    if (am2z__atomic_load(&e->key, AM2Z__MO_RELAXED) != p) return -1;
    return am2z__atomic_load(&e->ns, AM2Z__MO_RELAXED);
}

/* Records one run of p; stores only when the estimate moves (no shared line is written
   per call in a steady state). */
static void am2z__lr_est_put(am2z__lr *lr, const void *p, int64_t ns) {
    am2z__lr_est *e = am2z__lr_est_slot(lr, p);
    int64_t old;
    if (am2z__atomic_load(&e->key, AM2Z__MO_RELAXED) != p) {
        am2z__atomic_store(&e->ns, ns, AM2Z__MO_RELAXED);
        am2z__atomic_store(&e->key, p, AM2Z__MO_RELAXED);
        return;
    }
    old = am2z__atomic_load(&e->ns, AM2Z__MO_RELAXED);
    if (ns > old + old / 2 || ns < old - old / 2) am2z__atomic_store(&e->ns, (old + ns) / 2, AM2Z__MO_RELAXED);
}

/* A processor's concurrency limit in this process: concurrency or global_concurrency
   (one process holds every execution here), the smaller one; 0 = none. */
static int am2z__lr_conc(const am2z_queue_config *q) {
    if (q->global_concurrency > 0 && (q->concurrency <= 0 || q->global_concurrency < q->concurrency))
        return q->global_concurrency;
    return q->concurrency > 0 ? q->concurrency : 0;
}

/* Non-zero when a top-level execution of p runs on the thread that waits for it
   (cooperative deadline): its own desc.deadlines, else the runtime's, and no queue
   option or session limit (those need the queue, where workers take executions in
   order). */
static int am2z__lr_here(const am2z__lr *lr, const am2z_processor *p) {
    const am2z_processor_desc *d = am2z_processor_desc_of(p);
    int mode = d->deadlines ? (int)d->deadlines : lr->deadlines;
    return mode == AM2Z_DEADLINES_COOPERATIVE && !am2z__lr_conc(&d->queue) && !d->queue.rate_limit_per_minute &&
           !d->queue.delay_ms && !d->queue.priority && !lr->tenant_gate;
}

/* One step of a spin-wait. No sched_yield: on a busy host it hands the CPU to another
   process for a whole time slice (measured: p50 of a trivial execute 29 us instead of
   1.3 us); spinning is bounded by am2z_local_desc.spin_ns anyway. */
static void am2z__lr_relax(void) {
    AM2Z__LR_PAUSE();
    AM2Z__LR_PAUSE();
}

/* A worker about to publish a result takes the idle-spinner role if it is free, so the
   caller's next submission finds it spinning instead of waking a sleeping worker. */
static void am2z__lr_claim_spin(am2z__lr *lr) {
    am2z__lr_worker *w = am2z__lr_me(lr);
    int zero = 0;
    if (w && w->concluding && !w->spinning && lr->spin_ns > 0 &&
        am2z__atomic_cas(&lr->spinners, &zero, 1, AM2Z__MO_SEQ_CST, AM2Z__MO_SEQ_CST))
        w->spinning = 1;
}

static void am2z__lr_sleep_ns(int64_t ns) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    nanosleep(&ts, NULL);
}

static am2z_value *am2z__lr_str(const char *s) { return s ? am2z_value_string(s) : am2z_value_null(); }

static int am2z__lr_wants(const am2z__lr *lr, const char *event) {
    return am2z__runtime_has_handlers(lr->rt, event);
}

/* Emits event with data (consumed). */
static void am2z__lr_emit(am2z__lr *lr, const char *event, am2z_value *data) {
    if (data) am2z_runtime_emit(lr->rt, event, data);
    am2z_value_release(data);
}

static am2z_value *am2z__lr_event_base(const char *processor, const char *exec_id, const char *session_id) {
    am2z_value *d = am2z_value_set(am2z_value_object(), "processorName", am2z__lr_str(processor));
    d = am2z_value_set(d, "executionId", am2z__lr_str(exec_id));
    return am2z_value_set(d, "sessionId", am2z__lr_str(session_id));
}

/* "processor:job:completed" / "processor:job:failed" for one finished execution. */
static void am2z__lr_emit_end(am2z__lr *lr, const char *processor, const char *exec_id, const char *sid,
                              const am2z_error *err, int attempts, int depth, int64_t ns) {
    const char *ev = err ? "processor:job:failed" : "processor:job:completed";
    am2z_value *d;
    if (!am2z__lr_wants(lr, ev)) return;
    d = am2z__lr_event_base(processor, exec_id, sid);
    d = am2z_value_set(d, "attempts", am2z_value_int(attempts));
    d = am2z_value_set(d, "callDepth", am2z_value_int(depth));
    d = am2z_value_set(d, "executionTime", am2z_value_double((double)ns / 1e6));
    if (err) d = am2z_value_set(d, "error", am2z_error_to_json(err));
    am2z__lr_emit(lr, ev, d);
}

static void am2z__lr_emit_retrying(am2z__lr *lr, const char *processor, const char *exec_id, const char *sid,
                                   const am2z_error *err, int attempt, int64_t delay_ms) {
    am2z_value *d;
    if (!am2z__lr_wants(lr, "processor:job:retrying")) return;
    d = am2z__lr_event_base(processor, exec_id, sid);
    d = am2z_value_set(d, "attempt", am2z_value_int(attempt));
    d = am2z_value_set(d, "delayMs", am2z_value_int(delay_ms));
    d = am2z_value_set(d, "error", am2z_error_to_json(err));
    am2z__lr_emit(lr, "processor:job:retrying", d);
}

static am2z_error *am2z__lr_timeout_error(const am2z_processor *p, const char *exec_id, int64_t timeout_ms) {
    const char *name = am2z_processor_name(p);
    am2z_error *e = am2z_error_timeout(name, timeout_ms);
    return e ? am2z_error_with_location(e, name, exec_id) : NULL;
}

static am2z_error *am2z__lr_cancel_error(int reason, const am2z_processor *p, const char *exec_id,
                                         const char *session_id) {
    char msg[200];
    am2z_error *e;
    switch (reason) {
    case AM2Z__LR_CANCEL_SESSION: snprintf(msg, sizeof msg, "Session %s stopped", session_id); break;
    case AM2Z__LR_CANCEL_STOP: snprintf(msg, sizeof msg, "Runtime stopped"); break;
    case AM2Z__LR_CANCEL_FREED: snprintf(msg, sizeof msg, "Execution handle freed before it finished"); break;
    default: snprintf(msg, sizeof msg, "Parent execution cancelled"); break;
    }
    e = am2z_error_cancelled(msg);
    return e && p ? am2z_error_with_location(e, am2z_processor_name(p), exec_id) : e;
}

/* A failure result that never fails to be one (out of memory gives am2z_fail(NULL)). */
static am2z_result am2z__lr_fail(am2z_error *e) { return am2z_fail(e); }

/* ---- stats shards ---- */

static int am2z__lr_bucket(int64_t ns) {
    uint64_t v = ns < 1 ? 1 : (uint64_t)ns;
    int lg = 63 - __builtin_clzll(v), b;
    b = lg * 4 + (lg >= 2 ? (int)((v >> (lg - 2)) & 3) : 0);
    return b < AM2Z__LR_HIST ? b : AM2Z__LR_HIST - 1;
}

/* A representative value (nanoseconds) of bucket b: its midpoint. */
static double am2z__lr_bucket_ns(int b) {
    int lg = b / 4, sub = b % 4;
    double lo, width;
    if (lg < 2) return (double)((int64_t)1 << lg);
    lo = (double)((int64_t)(4 + sub) << (lg - 2));
    width = (double)((int64_t)1 << (lg - 2));
    return lo + width / 2;
}

static void am2z__lr_add(int64_t *p, int64_t d) {
    /* one writer per shard: a relaxed load and store, read concurrently by stats() */
    am2z__atomic_store(p, am2z__atomic_load(p, AM2Z__MO_RELAXED) + d, AM2Z__MO_RELAXED);
}

static am2z__lr_shard *am2z__lr_shard_enter(am2z__lr *lr) {
    am2z__lr_worker *w = am2z__lr_me(lr);
    if (w) return &w->shard;
    am2z__mutex_lock(&lr->ext.mu);
    return &lr->ext;
}

static void am2z__lr_shard_leave(am2z__lr_shard *sh) {
    if (sh->shared) am2z__mutex_unlock(&sh->mu);
}

/* Counts an attempt's start (end 0) or end for "running": a worker in its own shard, any
   other thread with an atomic add to the shared one (the only writes of ext's two
   counters), which needs no lock. */
static void am2z__lr_tick(am2z__lr *lr, int end) {
    am2z__lr_worker *w = am2z__lr_me(lr);
    if (w) am2z__lr_add(end ? &w->shard.ended : &w->shard.started, 1);
    else am2z__atomic_add(end ? &lr->ext.ended : &lr->ext.started, 1, AM2Z__MO_RELAXED);
}

/* am2z__lr_tick of a run of attempts at once: starts and ends added (am2z__lr_run_solo). */
static void am2z__lr_tick_n(am2z__lr *lr, int64_t starts, int64_t ends) {
    am2z__lr_worker *w = am2z__lr_me(lr);
    if (w) {
        am2z__lr_add(&w->shard.started, starts);
        am2z__lr_add(&w->shard.ended, ends);
    } else {
        am2z__atomic_add(&lr->ext.started, starts, AM2Z__MO_RELAXED);
        am2z__atomic_add(&lr->ext.ended, ends, AM2Z__MO_RELAXED);
    }
}

/* The shard's record for name, created on first use; NULL when out of memory. */
static am2z__lr_pstat *am2z__lr_pstat_get(am2z__lr_shard *sh, const char *name) {
    uint64_t h;
    size_t mask, i;
    am2z__lr_pstat *ps;
    size_t c = (size_t)(((uint64_t)(uintptr_t)name * 0x9E3779B97F4A7C15ull) >> 56) & (AM2Z__LR_PCACHE - 1);
    if (sh->ckey[c] == name && strcmp(sh->cval[c]->name, name) == 0) return sh->cval[c];
    h = am2z__strhash(name);
    if (sh->cap) {
        mask = sh->cap - 1;
        for (i = (size_t)h & mask; (ps = sh->tab[i]) != NULL; i = (i + 1) & mask)
            if (ps->hash == h && strcmp(ps->name, name) == 0) goto found;
    }
    ps = (am2z__lr_pstat *)am2z__malloc(sizeof *ps);
    if (!ps) return NULL;
    memset(ps, 0, sizeof *ps);
    ps->name = am2z__strdup(name);
    ps->hash = h;
    if (!ps->name) {
        am2z__free(ps);
        return NULL;
    }
    if (!sh->shared) am2z__mutex_lock(&sh->mu);
    if ((sh->count + 1) * 2 > sh->cap) {
        size_t cap = sh->cap ? sh->cap * 2 : 16, j;
        am2z__lr_pstat **t = (am2z__lr_pstat **)am2z__malloc(cap * sizeof *t);
        if (!t) {
            if (!sh->shared) am2z__mutex_unlock(&sh->mu);
            am2z__free(ps->name);
            am2z__free(ps);
            return NULL;
        }
        memset(t, 0, cap * sizeof *t);
        for (j = 0; j < sh->cap; j++) {
            if (!sh->tab[j]) continue;
            for (i = (size_t)sh->tab[j]->hash & (cap - 1); t[i]; i = (i + 1) & (cap - 1)) {
            }
            t[i] = sh->tab[j];
        }
        am2z__free(sh->tab);
        sh->tab = t;
        sh->cap = cap;
    }
    mask = sh->cap - 1;
    for (i = (size_t)h & mask; sh->tab[i]; i = (i + 1) & mask) {
    }
    sh->tab[i] = ps;
    sh->count++;
    if (!sh->shared) am2z__mutex_unlock(&sh->mu);
found:
    sh->ckey[c] = name;
    sh->cval[c] = ps;
    return ps;
}

/* kind: 0 completed, 1 failed (both with a latency), 2 retried; counted for the
   processor and, when rec is set, for it in its session. */
static void am2z__lr_stat(am2z__lr *lr, am2z__lr_srec *rec, const char *name, int kind, int64_t ns) {
    am2z__lr_shard *sh;
    if (rec) am2z__atomic_add(kind == 2 ? &rec->retried : kind ? &rec->failed : &rec->completed, 1, AM2Z__MO_RELAXED);
    sh = am2z__lr_shard_enter(lr);
    am2z__lr_pstat *ps = am2z__lr_pstat_get(sh, name);
    if (ps) {
        if (kind == 2) {
            am2z__lr_add(&ps->retried, 1);
        } else {
            am2z__lr_add(kind ? &ps->failed : &ps->completed, 1);
            am2z__lr_add(&ps->hist[am2z__lr_bucket(ns)], 1);
            am2z__lr_add(&ps->sum_ns, ns);
        }
    }
    am2z__lr_shard_leave(sh);
}

static void am2z__lr_shard_free(am2z__lr_shard *sh) {
    size_t i;
    for (i = 0; i < sh->cap; i++) {
        if (!sh->tab[i]) continue;
        am2z__free(sh->tab[i]->name);
        am2z__free(sh->tab[i]);
    }
    am2z__free(sh->tab);
    am2z__mutex_destroy(&sh->mu);
}

/* ---- sessions ---- */

static size_t am2z__lr_key_hash(const char *key) {
    return (size_t)(((uint64_t)(uintptr_t)key >> 3) * 0x9E3779B97F4A7C15ull >> 16);
}

static am2z__lr_srec *am2z__lr_srec_find(const am2z__lr_stable *t, const char *key) {
    size_t mask, i;
    am2z__lr_srec *r;
    if (!t) return NULL;
    mask = t->cap - 1;
    for (i = am2z__lr_key_hash(key) & mask; (r = am2z__atomic_load(&t->slot[i], AM2Z__MO_ACQUIRE)) != NULL;
         i = (i + 1) & mask)
        if (r->key == key && strcmp(r->name, key) == 0) return r;
    return NULL;
}

static void am2z__lr_srec_put(am2z__lr_stable *t, am2z__lr_srec *r) {
    size_t mask = t->cap - 1, i;
    for (i = am2z__lr_key_hash(r->key) & mask; t->slot[i]; i = (i + 1) & mask) {
    }
    am2z__atomic_store(&t->slot[i], r, AM2Z__MO_RELEASE);
    t->count++;
}

/* Under s->mu: a table with room for one more record (the current one or a bigger
   copy, published); NULL when out of memory. */
static am2z__lr_stable *am2z__lr_stable_room_locked(am2z__lr_session *s) {
    am2z__lr_stable *t = s->srt, *n;
    am2z__lr_srec *r;
    if (t && (t->count + 1) * 2 <= t->cap) return t;
    n = (am2z__lr_stable *)am2z__malloc(sizeof *n);
    if (!n) return NULL;
    n->cap = t ? t->cap * 2 : 16;
    n->count = 0;
    n->older = t;
    if (!(n->slot = (am2z__lr_srec **)am2z__malloc(n->cap * sizeof *n->slot))) {
        am2z__free(n);
        return NULL;
    }
    memset(n->slot, 0, n->cap * sizeof *n->slot);
    for (r = s->srecs; r; r = r->next) am2z__lr_srec_put(n, r);
    am2z__atomic_store(&s->srt, n, AM2Z__MO_RELEASE);
    return n;
}

/* s's counters of the processor named name (its own name pointer), created on first
   use; NULL when out of memory. No lock once it exists. */
static am2z__lr_srec *am2z__lr_srec_get(am2z__lr_session *s, const char *name) {
    am2z__lr_srec *r = am2z__lr_srec_find(am2z__atomic_load(&s->srt, AM2Z__MO_ACQUIRE), name);
    am2z__lr_stable *t;
    if (r) return r;
    am2z__mutex_lock(&s->mu);
    if (!(r = am2z__lr_srec_find(s->srt, name)) && (t = am2z__lr_stable_room_locked(s)) != NULL &&
        (r = (am2z__lr_srec *)am2z__malloc(sizeof *r)) != NULL) {
        memset(r, 0, sizeof *r);
        r->key = name;
        if ((r->name = am2z__strdup(name)) != NULL) {
            r->next = s->srecs;
            s->srecs = r;
            am2z__lr_srec_put(t, r);
        } else {
            am2z__free(r);
            r = NULL;
        }
    }
    am2z__mutex_unlock(&s->mu);
    return r;
}

static void am2z__lr_session_release(am2z__lr_session *s) {
    am2z__lr_srec *r;
    am2z__lr_stable *t;
    if (!s || am2z__atomic_dec(&s->refs) != 0) return;
    while ((r = s->srecs) != NULL) {
        s->srecs = r->next;
        am2z__free(r->name);
        am2z__free(r);
    }
    while ((t = s->srt) != NULL) {
        s->srt = t->older;
        am2z__free(t->slot);
        am2z__free(t);
    }
    am2z__mutex_destroy(&s->mu);
    am2z__cond_destroy(&s->cv);
    am2z__free(s->id);
    am2z__free(s);
}

/* Removes s from the table; 1 when it was there (the caller then owns the table's
   reference), 0 when another stop took it out first. */
static int am2z__lr_session_unlink_locked(am2z__lr *lr, am2z__lr_session *s) {
    am2z__lr_session **pp = &lr->stab[(size_t)s->hash & (lr->stab_cap - 1)];
    while (*pp && *pp != s) pp = &(*pp)->next;
    if (!*pp) return 0;
    *pp = s->next;
    lr->scount--;
    return 1;
}

static am2z__lr_session *am2z__lr_session_find_locked(am2z__lr *lr, const char *id, uint64_t h) {
    am2z__lr_session *s;
    if (!lr->stab_cap) return NULL;
    for (s = lr->stab[(size_t)h & (lr->stab_cap - 1)]; s; s = s->next)
        if (s->hash == h && strcmp(s->id, id) == 0) return s;
    return NULL;
}

/* The session `id` (retained), created on first use (emitting "session:created").
   NULL when it is being stopped (*stopping = 1) or when out of memory. */
static am2z__lr_session *am2z__lr_session_acquire(am2z__lr *lr, const char *id, int *stopping) {
    uint64_t h = am2z__strhash(id);
    am2z__lr_session *s;
    *stopping = 0;
    am2z__mutex_lock(&lr->smu);
    s = am2z__lr_session_find_locked(lr, id, h);
    if (s) {
        if (AM2Z__LR_LD(&s->stopping)) {
            *stopping = 1;
            s = NULL;
        } else {
            am2z__atomic_inc(&s->refs);
        }
        am2z__mutex_unlock(&lr->smu);
        return s;
    }
    if (lr->scount + 1 > lr->stab_cap) {
        size_t cap = lr->stab_cap ? lr->stab_cap * 2 : 16, i;
        am2z__lr_session **t = (am2z__lr_session **)am2z__malloc(cap * sizeof *t);
        if (!t) {
            am2z__mutex_unlock(&lr->smu);
            return NULL;
        }
        memset(t, 0, cap * sizeof *t);
        for (i = 0; i < lr->stab_cap; i++) {
            while (lr->stab[i]) {
                am2z__lr_session *x = lr->stab[i];
                lr->stab[i] = x->next;
                x->next = t[(size_t)x->hash & (cap - 1)];
                t[(size_t)x->hash & (cap - 1)] = x;
            }
        }
        am2z__free(lr->stab);
        lr->stab = t;
        lr->stab_cap = cap;
    }
    s = (am2z__lr_session *)am2z__malloc(sizeof *s);
    if (!s) {
        am2z__mutex_unlock(&lr->smu);
        return NULL;
    }
    memset(s, 0, sizeof *s);
    s->id = am2z__strdup(id);
    if (!s->id || am2z__mutex_init(&s->mu) != 0) {
        am2z__free(s->id);
        am2z__free(s);
        am2z__mutex_unlock(&lr->smu);
        return NULL;
    }
    if (am2z__cond_init(&s->cv) != 0) {
        am2z__mutex_destroy(&s->mu);
        am2z__free(s->id);
        am2z__free(s);
        am2z__mutex_unlock(&lr->smu);
        return NULL;
    }
    s->refs = 2; /* the table's and the caller's */
    s->hash = h;
    s->created_ms = am2z_now_ms();
    s->live.prev = s->live.next = &s->live;
    s->next = lr->stab[(size_t)h & (lr->stab_cap - 1)];
    lr->stab[(size_t)h & (lr->stab_cap - 1)] = s;
    lr->scount++;
    am2z__mutex_unlock(&lr->smu);
    if (am2z__lr_wants(lr, "session:created"))
        am2z__lr_emit(lr, "session:created", am2z_value_set(am2z_value_object(), "sessionId", am2z_value_string(id)));
    return s;
}

static void am2z__lr_live_add(am2z__lr_session *s, am2z__lr_live *l, int kind) {
    l->kind = kind;
    l->pass = 0;
    am2z__mutex_lock(&s->mu);
    l->next = s->live.next;
    l->prev = &s->live;
    s->live.next->prev = l;
    s->live.next = l;
    am2z__mutex_unlock(&s->mu);
}

static void am2z__lr_live_remove(am2z__lr_session *s, am2z__lr_live *l) {
    am2z__mutex_lock(&s->mu); /* neighbours rewrite our links under it */
    if (l->next) {
        l->prev->next = l->next;
        l->next->prev = l->prev;
        l->next = l->prev = NULL;
    }
    am2z__mutex_unlock(&s->mu);
}

static void am2z__lr_session_count(am2z__lr_session *s, int64_t completed, int64_t failed, int64_t cancelled) {
    if (completed) am2z__atomic_add(&s->completed, completed, AM2Z__MO_RELAXED);
    if (failed) am2z__atomic_add(&s->failed, failed, AM2Z__MO_RELAXED);
    if (cancelled) am2z__atomic_add(&s->cancelled, cancelled, AM2Z__MO_RELAXED);
}

/* One fewer unfinished execution in s (called before its outcome is published, so a
   caller holding the outcome sees the count settled); wakes a stop_session / stop
   draining s. */
static void am2z__lr_session_done(am2z__lr_session *s) {
    am2z__atomic_sub(&s->running, 1, AM2Z__MO_SEQ_CST);
    if (AM2Z__LR_LD(&s->stopper)) {
        am2z__mutex_lock(&s->mu);
        am2z__cond_broadcast(&s->cv);
        am2z__mutex_unlock(&s->mu);
    }
}

/* Waits until s has no unfinished execution but the `own` ones of the calling thread
   (which cannot end while it waits), or until until_ns passes. */
static void am2z__lr_session_drain(am2z__lr_session *s, int64_t until_ns, int own) {
    am2z__mutex_lock(&s->mu);
    am2z__atomic_add(&s->stopper, 1, AM2Z__MO_SEQ_CST);
    while (AM2Z__LR_LD(&s->running) > own && am2z__lr_now() < until_ns)
        am2z__cond_wait_until(&s->cv, &s->mu, until_ns);
    am2z__atomic_sub(&s->stopper, 1, AM2Z__MO_SEQ_CST);
    am2z__mutex_unlock(&s->mu);
}

/* ---- jobs ---- */

static am2z__lr_job *am2z__lr_job_new(am2z__lr *lr, int top) {
    am2z__lr_job *j = (am2z__lr_job *)am2z__malloc(sizeof *j);
    if (!j) return NULL;
    memset(j, 0, sizeof *j);
    j->base.rt = lr->rt;
    j->base.id = j->exec_id;
    j->lr = lr;
    j->refs = 1;
    j->top = top;
    return j;
}

static void am2z__lr_batch_release(am2z__lr_batch *b);
static void am2z__lr_pinfo_release_locked(am2z__lr *lr, am2z__lr_pinfo *pi);

static void am2z__lr_job_release(am2z__lr_job *j);

/* Frees j once its last reference is gone. */
static void am2z__lr_job_destroy(am2z__lr_job *j) {
    size_t i;
    if (j->top && j->session) am2z__lr_live_remove(j->session, &j->live);
    if (j->pinfo) {
        am2z__mutex_lock(&j->lr->qmu);
        am2z__lr_pinfo_release_locked(j->lr, j->pinfo);
        am2z__mutex_unlock(&j->lr->qmu);
    }
    am2z_processor_release(j->proc);
    am2z_value_release(j->input);
    am2z_value_release(j->out_state);
    am2z_error_release(j->out_error);
    for (i = 0; i < j->nerrs; i++) am2z_error_release(j->errs[i]);
    am2z__free(j->errs);
    am2z__lr_job_release(j->parent);
    am2z__lr_batch_release(j->pbatch);
    if (j->top) am2z__lr_session_release(j->session);
    am2z__dx_release(j->dx);
    if (j->top) am2z_trace_release(j->trace);
    if (j->cv_ready) {
        am2z__mutex_destroy(&j->mu);
        am2z__cond_destroy(&j->cv);
    }
    am2z__free(j);
}

static void am2z__lr_job_release(am2z__lr_job *j) {
    if (j && am2z__atomic_dec(&j->refs) == 0) am2z__lr_job_destroy(j);
}

/* Under qmu: lets go of one queue entry's reference to j; the last one puts j on *drop,
   freed outside the lock (freeing takes qmu). Each job is on a drop list at most once. */
static void am2z__lr_drop_locked(am2z__lr_job *j, am2z__lr_job **drop) {
    if (am2z__atomic_dec(&j->refs) != 0) return;
    j->dnext = *drop;
    *drop = j;
}

static void am2z__lr_job_wake(am2z__lr_job *j) {
    am2z__lr_worker *w;
    if (j->top && AM2Z__LR_LD(&j->sleepers)) {
        am2z__mutex_lock(&j->mu);
        am2z__cond_broadcast(&j->cv);
        am2z__mutex_unlock(&j->mu);
        /* The caller blocked, so its next submission comes only after its wake-up, which
           can outlast a normal spin; if this worker then slept too, each would keep
           waking the other (two wake-ups per execute). Spinning longer breaks that. */
        if ((w = am2z__lr_me(j->lr)) != NULL) w->long_spin = 1;
    }
}

/* Only DONE wakes a blocked waiter: it times its sleep itself from the attempt's
   deadline (or, before an attempt starts, from now + timeout, which no deadline can
   precede), so the other transitions cost no wake-up. */
static void am2z__lr_job_set(am2z__lr_job *j, int word) {
    AM2Z__LR_ST(&j->word, word);
    if ((word & 3) == AM2Z__LR_DONE) am2z__lr_job_wake(j);
}

static int am2z__lr_job_cas(am2z__lr_job *j, int from, int to) {
    if (!am2z__atomic_cas(&j->word, &from, to, AM2Z__MO_SEQ_CST, AM2Z__MO_SEQ_CST)) return 0;
    if ((to & 3) == AM2Z__LR_DONE) am2z__lr_job_wake(j);
    return 1;
}

/* Records a failed attempt's error (consumed); 0 when out of memory (released). */
static int am2z__lr_job_add_error(am2z__lr_job *j, am2z_error *e) {
    if (!e) return 0;
    if (j->nerrs == j->errs_cap) {
        size_t cap = j->errs_cap ? j->errs_cap * 2 : 4;
        am2z_error **a = (am2z_error **)am2z__realloc(j->errs, cap * sizeof *a);
        if (!a) {
            am2z_error_release(e);
            return 0;
        }
        j->errs = a;
        j->errs_cap = cap;
    }
    j->errs[j->nerrs++] = e;
    return 1;
}

/* ---- parker: a worker waiting for its queued calls ---- */

static void am2z__lr_notify(am2z__lr_worker *w) {
    am2z__atomic_add(&w->pgen, 1, AM2Z__MO_SEQ_CST);
    if (AM2Z__LR_LD(&w->pwait)) {
        am2z__mutex_lock(&w->pmu);
        am2z__cond_broadcast(&w->pcv);
        am2z__mutex_unlock(&w->pmu);
    }
}

static void am2z__lr_park(am2z__lr_worker *w, int gen, int64_t until_ns) {
    am2z__mutex_lock(&w->pmu);
    AM2Z__LR_ST(&w->pwait, 1);
    if (AM2Z__LR_LD(&w->pgen) == gen) am2z__cond_wait_until(&w->pcv, &w->pmu, until_ns);
    AM2Z__LR_ST(&w->pwait, 0);
    am2z__mutex_unlock(&w->pmu);
}

/* ---- queue (everything here runs under qmu) ---- */

static void am2z__lr_list_push(am2z__lr_job **head, am2z__lr_job **tail, am2z__lr_job *j) {
    j->next = NULL;
    j->linked = 1;
    if (*tail) (*tail)->next = j;
    else *head = j;
    *tail = j;
}

static am2z__lr_job *am2z__lr_list_pop(am2z__lr_job **head, am2z__lr_job **tail) {
    am2z__lr_job *j = *head;
    if (j) {
        *head = j->next;
        if (!*head) *tail = NULL;
        j->next = NULL;
        j->linked = 0;
    }
    return j;
}

static int am2z__lr_before(const am2z__lr_job *a, const am2z__lr_job *b, int by_due) {
    int64_t x = by_due ? a->due_ns : a->priority, y = by_due ? b->due_ns : b->priority;
    return x != y ? x < y : a->seq < b->seq;
}

static int am2z__lr_heap_push(am2z__lr_job ***heap, size_t *n, size_t *cap, am2z__lr_job *j, int by_due) {
    size_t i;
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        am2z__lr_job **h = (am2z__lr_job **)am2z__realloc(*heap, c * sizeof *h);
        if (!h) return 0;
        *heap = h;
        *cap = c;
    }
    for (i = (*n)++; i > 0 && am2z__lr_before(j, (*heap)[(i - 1) / 2], by_due); i = (i - 1) / 2)
        (*heap)[i] = (*heap)[(i - 1) / 2];
    (*heap)[i] = j;
    return 1;
}

static am2z__lr_job *am2z__lr_heap_pop(am2z__lr_job **heap, size_t *n, int by_due) {
    am2z__lr_job *top, *last;
    size_t i = 0, c;
    if (!*n) return NULL;
    top = heap[0];
    last = heap[--*n];
    while ((c = 2 * i + 1) < *n) {
        if (c + 1 < *n && am2z__lr_before(heap[c + 1], heap[c], by_due)) c++;
        if (!am2z__lr_before(heap[c], last, by_due)) break;
        heap[i] = heap[c];
        i = c;
    }
    if (*n) heap[i] = last;
    return top;
}

static void am2z__lr_work(am2z__lr *lr, int d) { am2z__atomic_add(&lr->work, d, AM2Z__MO_SEQ_CST); }

/* Ready to run: priority 0 in FIFO order, then the prioritized heap (1 first). 0 when
   j is waiting in a linked queue already (an entry left behind when its waiter ran an
   attempt itself): the caller then lets go of this entry. */
static int am2z__lr_ready_push_locked(am2z__lr *lr, am2z__lr_job *j) {
    if (j->linked) return 0;
    j->seq = ++lr->seq;
    if (j->priority <= 0 || !am2z__lr_heap_push(&lr->prio, &lr->prio_n, &lr->prio_cap, j, 0))
        am2z__lr_list_push(&lr->norm_head, &lr->norm_tail, j);
    am2z__lr_work(lr, 1);
    return 1;
}

static void am2z__lr_next_due_locked(am2z__lr *lr) {
    am2z__atomic_store(&lr->next_due, lr->delayed_n ? lr->delayed[0]->due_ns : 0, AM2Z__MO_SEQ_CST);
}

/* Wakes up to n sleeping workers (spinning ones find the work themselves). */
static void am2z__lr_wake_locked(am2z__lr *lr, int n) {
    n -= AM2Z__LR_LD(&lr->spinners);
    while (n-- > 0 && lr->idle) {
        am2z__lr_worker *w = lr->idle;
        lr->idle = w->idle_next;
        w->sleeping = 0;
        am2z__cond_signal(&w->cv);
    }
}

/* A job waiting for `due` (retries, delay_ms, rate limit); 0 when out of memory. */
static int am2z__lr_delay_locked(am2z__lr *lr, am2z__lr_job *j, int64_t due) {
    int earliest;
    am2z__atomic_store(&j->due_ns, due, AM2Z__MO_SEQ_CST);
    j->seq = ++lr->seq;
    if (!am2z__lr_heap_push(&lr->delayed, &lr->delayed_n, &lr->delayed_cap, j, 1)) return 0;
    earliest = lr->delayed[0] == j;
    am2z__lr_next_due_locked(lr);
    if (earliest) am2z__lr_wake_locked(lr, 1); /* sleepers recompute their timeout */
    return 1;
}

static void am2z__lr_pinfo_release_locked(am2z__lr *lr, am2z__lr_pinfo *pi) {
    am2z__lr_pinfo **pp;
    (void)lr;
    if (--pi->refs > 0) return;
    for (pp = &lr->pinfos; *pp; pp = &(*pp)->next)
        if (*pp == pi) {
            *pp = pi->next;
            break;
        }
    am2z_processor_release(pi->proc);
    am2z__free(pi);
}

/* The queue state of p (not retained), created on first use; NULL when out of memory. */
static am2z__lr_pinfo *am2z__lr_pinfo_get_locked(am2z__lr *lr, am2z_processor *p) {
    am2z__lr_pinfo *pi;
    for (pi = lr->pinfos; pi; pi = pi->next)
        if (pi->proc == p && pi->listed) return pi;
    pi = (am2z__lr_pinfo *)am2z__malloc(sizeof *pi);
    if (!pi) return NULL;
    memset(pi, 0, sizeof *pi);
    pi->proc = am2z_processor_retain(p);
    pi->refs = 1;
    pi->listed = 1;
    pi->next = lr->pinfos;
    lr->pinfos = pi;
    return pi;
}

/* Hands a freed slot (bit) to the first job of a waiting line, which goes to the front
   of the run queue; 0 when nobody waits. */
static int am2z__lr_slot_pass_locked(am2z__lr *lr, am2z__lr_job **head, am2z__lr_job **tail, int bit) {
    am2z__lr_job *k = am2z__lr_list_pop(head, tail);
    if (!k) return 0;
    k->has_slot |= bit;
    am2z__lr_list_push(&lr->front_head, &lr->front_tail, k);
    am2z__lr_work(lr, 1);
    am2z__lr_wake_locked(lr, 1);
    return 1;
}

/* Gives j's concurrency slots (processor, session) to the next waiting jobs. */
static void am2z__lr_slot_release_locked(am2z__lr *lr, am2z__lr_job *j) {
    if (j->has_slot & AM2Z__LR_SSLOT) {
        am2z__lr_session *s = j->session;
        j->has_slot &= ~AM2Z__LR_SSLOT;
        if (!am2z__lr_slot_pass_locked(lr, &s->wait_head, &s->wait_tail, AM2Z__LR_SSLOT)) s->slots--;
    }
    if (j->has_slot & AM2Z__LR_PSLOT) {
        am2z__lr_pinfo *pi = j->pinfo;
        j->has_slot &= ~AM2Z__LR_PSLOT;
        if (!am2z__lr_slot_pass_locked(lr, &pi->wait_head, &pi->wait_tail, AM2Z__LR_PSLOT)) pi->running--;
    }
}

/* Starts a rate-limited execution now (0) if the last start was at least interval ago,
   else returns when it may start. Reservations (next_token_ns) only order the waiters:
   this check on the real starts is what keeps them interval apart. */
static int64_t am2z__lr_rate_start_locked(am2z__lr_pinfo *pi, int64_t interval, int64_t now) {
    if (pi->has_started && now < pi->last_start_ns + interval) return pi->last_start_ns + interval;
    pi->last_start_ns = now;
    pi->has_started = 1;
    return 0;
}

/* Counts j's start in its session's rate window (1), or delays j to the window's end
   (0). Fixed windows as BullMQ's limiter: the first start after a window closed opens
   the next. The session slot is kept meanwhile: only the session's own jobs wait for it. */
static int am2z__lr_session_rate_locked(am2z__lr *lr, am2z__lr_job *j, int64_t now) {
    am2z__lr_session *s = j->session;
    int64_t per = lr->session_rate.per_ms * 1000000;
    if (!s->rate_used || now - s->rate_from_ns >= per) {
        s->rate_from_ns = now;
        s->rate_used = 0;
    }
    if (s->rate_used >= lr->session_rate.max) return !am2z__lr_delay_locked(lr, j, s->rate_from_ns + per);
    s->rate_used++;
    j->has_stoken = 1;
    return 1;
}

/* Applies j's session limit, concurrency limit and rate limit; 0 when j was parked or
   delayed. The session slot comes first and a job waits for it holding nothing, so a
   session at its limit never holds a processor slot another session could use (a job
   of it waiting for a processor slot holds its session's slot). */
static int am2z__lr_gate_locked(am2z__lr *lr, am2z__lr_job *j, int64_t now) {
    const am2z_queue_config *q = &am2z_processor_desc_of(j->proc)->queue;
    am2z__lr_pinfo *pi = j->pinfo;
    int conc = am2z__lr_conc(q);
    if (lr->session_limit > 0 && !(j->has_slot & AM2Z__LR_SSLOT)) {
        am2z__lr_session *s = j->session;
        if (s->slots >= lr->session_limit) {
            am2z__lr_list_push(&s->wait_head, &s->wait_tail, j);
            return 0;
        }
        s->slots++;
        j->has_slot |= AM2Z__LR_SSLOT;
    }
    if (lr->session_rate.max > 0 && !j->has_stoken && !am2z__lr_session_rate_locked(lr, j, now)) return 0;
    if (conc > 0 && !(j->has_slot & AM2Z__LR_PSLOT)) {
        if (pi->running >= conc) {
            am2z__lr_list_push(&pi->wait_head, &pi->wait_tail, j);
            return 0;
        }
        pi->running++;
        j->has_slot |= AM2Z__LR_PSLOT;
    }
    if (q->rate_limit_per_minute > 0) {
        int64_t interval = (int64_t)60000000000 / q->rate_limit_per_minute, wait;
        if (!j->has_token) {
            /* reserve the next start so waiting jobs line up instead of racing */
            int64_t due = pi->next_token_ns > now ? pi->next_token_ns : now;
            pi->next_token_ns = due + interval;
            j->has_token = 1;
            if (due > now && am2z__lr_delay_locked(lr, j, due)) return 0;
        }
        /* a start that came late (busy workers) pushes the next one back */
        if ((wait = am2z__lr_rate_start_locked(pi, interval, now)) != 0 && am2z__lr_delay_locked(lr, j, wait)) return 0;
    }
    j->has_token = 0;
    j->has_stoken = 0;
    return 1;
}

/* Worker w took a task (under qmu): it gives up the spinner role, and wakes a sleeping
   worker when more work is waiting, so nothing queued waits behind a busy worker. */
static void am2z__lr_took_locked(am2z__lr *lr, am2z__lr_worker *w) {
    if (w->spinning) {
        w->spinning = 0;
        AM2Z__LR_ST(&lr->spinners, 0);
    }
    if (AM2Z__LR_LD(&lr->work) > 0) am2z__lr_wake_locked(lr, 1);
}

/* Takes the next task: a job (*jp) or an execute_many to help with (*bp, *sweep).
   Jobs resolved while queued are moved to *drop for release outside the lock. */
static int am2z__lr_take_locked(am2z__lr *lr, int64_t now, am2z__lr_job **jp, am2z__lr_batch **bp, int *sweep,
                                am2z__lr_job **drop) {
    am2z__lr_job *j;
    am2z__lr_batch *b;
    if (AM2Z__LR_LD(&lr->handoff) && (j = am2z__atomic_exchange(&lr->handoff, (am2z__lr_job *)NULL,
                                                                AM2Z__MO_SEQ_CST)) != NULL) {
        *jp = j;
        return 1;
    }
    while (lr->delayed_n && lr->delayed[0]->due_ns <= now) {
        j = am2z__lr_heap_pop(lr->delayed, &lr->delayed_n, 1);
        if (!am2z__lr_ready_push_locked(lr, j)) {
            lr->queued--;
            am2z__lr_drop_locked(j, drop);
        }
    }
    am2z__lr_next_due_locked(lr);
    if ((j = am2z__lr_list_pop(&lr->lane_head, &lr->lane_tail)) != NULL) {
        am2z__lr_work(lr, -1);
        am2z__atomic_sub(&lr->lane_n, 1, AM2Z__MO_SEQ_CST);
        *jp = j;
        return 1;
    }
    for (b = lr->batches; b; b = b->qnext) {
        if (!b->advertised) continue;
        if (b->sweep) {
            b->sweep = 0;
            *sweep = 1;
            am2z__atomic_inc(&b->refs);
            *bp = b;
            return 1;
        }
        if (am2z__atomic_load(&b->next, AM2Z__MO_RELAXED) < b->count && !AM2Z__LR_LD(&b->cancel_pending) &&
            !AM2Z__LR_LD(&b->cancel)) {
            am2z__atomic_inc(&b->refs);
            *bp = b;
            return 1;
        }
        b->advertised = 0;
        am2z__lr_work(lr, -1);
    }
    for (;;) {
        j = am2z__lr_list_pop(&lr->front_head, &lr->front_tail);
        if (!j) j = am2z__lr_list_pop(&lr->norm_head, &lr->norm_tail);
        if (!j) j = am2z__lr_heap_pop(lr->prio, &lr->prio_n, 0);
        if (!j) return 0;
        am2z__lr_work(lr, -1);
        /* resolved meanwhile, or an entry left behind by an attempt its waiter ran (the
           next attempt, not due yet, has its own entry in the delayed heap) */
        if ((AM2Z__LR_LD(&j->word) & 3) != AM2Z__LR_QUEUED || AM2Z__LR_LD(&j->due_ns) > now) {
            if (j->has_slot) am2z__lr_slot_release_locked(lr, j);
            lr->queued--;
            am2z__lr_drop_locked(j, drop);
            continue;
        }
        if ((j->pinfo || lr->tenant_gate) && !am2z__lr_gate_locked(lr, j, now)) continue;
        lr->queued--;
        *jp = j;
        return 1;
    }
}

/* Frees a drop list (am2z__lr_drop_locked). */
static void am2z__lr_release_list(am2z__lr_job *j) {
    while (j) {
        am2z__lr_job *n = j->dnext;
        am2z__lr_job_destroy(j);
        j = n;
    }
}

/* Queues top-level job j (one more reference) to start after delay_ns. */
static am2z_status am2z__lr_enqueue(am2z__lr *lr, am2z__lr_job *j, int64_t delay_ns, int first) {
    const am2z_queue_config *q = &am2z_processor_desc_of(j->proc)->queue;
    /* Fast path: nothing waiting, a worker spinning, no queue options: hand the job to
       it through one atomic slot instead of the locked queue. */
    if (!delay_ns && j->priority <= 0 && !am2z__lr_conc(q) && !q->rate_limit_per_minute && !lr->tenant_gate &&
        AM2Z__LR_LD(&lr->spinners) > 0 && AM2Z__LR_LD(&lr->work) == 0 && AM2Z__LR_LD(&lr->running)) {
        am2z__lr_job *none = NULL;
        am2z__atomic_inc(&j->refs);
        am2z__atomic_store(&j->due_ns, 0, AM2Z__MO_SEQ_CST);
        if (am2z__atomic_cas(&lr->handoff, &none, j, AM2Z__MO_SEQ_CST, AM2Z__MO_SEQ_CST)) {
            if (!AM2Z__LR_LD(&lr->spinners)) { /* the spinner left meanwhile: wake one */
                am2z__mutex_lock(&lr->qmu);
                am2z__lr_wake_locked(lr, 1);
                am2z__mutex_unlock(&lr->qmu);
            }
            return AM2Z_STATUS_OK;
        }
        am2z__atomic_dec(&j->refs); /* slot taken: the queue below */
    }
    am2z__mutex_lock(&lr->qmu);
    if (!AM2Z__LR_LD(&lr->running)) {
        am2z__mutex_unlock(&lr->qmu);
        return AM2Z_STATUS_NOT_STARTED;
    }
    if (first && lr->queued >= lr->capacity) {
        am2z__mutex_unlock(&lr->qmu);
        return AM2Z_STATUS_LIMIT;
    }
    if (first && (am2z__lr_conc(q) > 0 || q->rate_limit_per_minute > 0)) {
        j->pinfo = am2z__lr_pinfo_get_locked(lr, j->proc);
        if (!j->pinfo) {
            am2z__mutex_unlock(&lr->qmu);
            return AM2Z_STATUS_NO_MEMORY;
        }
        j->pinfo->refs++;
    }
    am2z__atomic_inc(&j->refs);
    lr->queued++;
    if (delay_ns > 0) {
        if (!am2z__lr_delay_locked(lr, j, am2z__lr_now() + delay_ns)) {
            lr->queued--;
            am2z__mutex_unlock(&lr->qmu);
            am2z__atomic_dec(&j->refs); /* the caller still holds one */
            return AM2Z_STATUS_NO_MEMORY;
        }
    } else {
        am2z__atomic_store(&j->due_ns, 0, AM2Z__MO_SEQ_CST);
        if (am2z__lr_ready_push_locked(lr, j)) {
            am2z__lr_wake_locked(lr, 1);
        } else { /* its left-behind entry will run it */
            lr->queued--;
            am2z__atomic_dec(&j->refs); /* the caller still holds one */
        }
    }
    am2z__mutex_unlock(&lr->qmu);
    return AM2Z_STATUS_OK;
}

/* ---- running one attempt ---- */

/* The ctx functions this runtime serves (defined with call_many below). */
static void am2z__ctx_call_many_lr(am2z_ctx *ctx, const char *const *names, const am2z_state *const *inputs,
                                    size_t n, am2z_result *results);
static void am2z__ctx_emit_lr(am2z_ctx *ctx, const char *event, am2z_value *data);
static int am2z__ctx_cancelled_lr(const am2z_ctx *ctx);
static int am2z__ctx_wants_lr(const am2z_ctx *ctx, const char *event);
static const am2z_logger *am2z__ctx_logger_lr(const am2z_ctx *ctx);
static const am2z_ctx_ops am2z__lr_ctx_ops = {am2z__ctx_call_many_lr, am2z__ctx_emit_lr, am2z__ctx_cancelled_lr,
                                              am2z__ctx_wants_lr, am2z__ctx_logger_lr, NULL};

static am2z_ctx am2z__lr_ctx0; /* all zero, never written: a fresh attempt's ctx before it is filled in */

static int am2z__lr_item_cancelled(const am2z__lr_batch *b, size_t i) {
    return AM2Z__LR_LD(&b->cancel) || AM2Z__LR_LD(&b->items[i]) != AM2Z__LR_IT_RUNNING;
}

/* Non-zero once the attempt a frame belongs to (or anything it was called from) was
   resolved without it: timed out by its waiter, cancelled, or abandoned by its parent. */
static int am2z__lr_owner_cancelled(const am2z__lr_job *j, int attempt, const am2z__lr_batch *b, size_t bi) {
    for (;;) {
        if (b && am2z__lr_item_cancelled(b, bi)) return 1;
        if (!j) return 0;
        if (AM2Z__LR_LD(&j->cancel) || AM2Z__LR_LD(&j->word) != AM2Z__LR_WORD(attempt, AM2Z__LR_RUNNING)) return 1;
        b = j->pbatch;
        bi = j->pindex;
        attempt = j->parent_attempt;
        j = j->parent;
    }
}

static int am2z__lr_frame_cancelled(const am2z__lr_frame *f, int64_t now) {
    if (f->deadline_ns && now >= f->deadline_ns) return 1;
    return am2z__lr_owner_cancelled(f->job, f->attempt, f->batch, f->index);
}

/* One attempt of p on this thread: context, "processor:job:started", the processor,
   the version bump of a successful state. A top-level attempt's input and output carry
   the session it runs in as their metadata.sessionId (nested calls pass states as they
   are: a batch payload that is a state keeps its own). */
static am2z_result am2z__lr_attempt(am2z__lr_frame *f, const am2z_processor *p, const am2z_state *input,
                                    const char *exec_id, int attempt, int depth, int64_t start_ns) {
    am2z__lr *lr = f->lr;
    const char *sid = f->session->id;
    const am2z_value *in_sid = NULL, *out_sid; /* sessionId values of input and result */
    am2z_state *moved = NULL;
    am2z__lr_link link;
    am2z__dscope root;
    am2z_ctx ctx;
    am2z_result r;
    am2z_error *open;
    int ticket;
    /* Moved before the breaker admits the attempt: an attempt that fails for want of
       memory here must not hold a half-open breaker's probe. */
    if (depth == 0 && ((in_sid = am2z__meta_sid(input)) == NULL ||
                       strcmp(am2z_value_as_string(in_sid, NULL), sid) != 0) &&
        strcmp(am2z_state_session_id(input), sid) != 0) {
        moved = am2z__state_in_session(am2z_value_retain(input), sid);
        if (!moved) { /* its callers take end_ns as the attempt's end */
            f->end_ns = am2z__lr_now();
            return am2z__lr_fail(am2z_error_resource("memory", 0, 0));
        }
        input = moved;
        in_sid = NULL;
    }
    /* an open breaker fails the attempt before it starts (am2z_breaker_policy) */
    if ((open = am2z__breaker_enter(lr->rt, p, exec_id, am2z__lr_wall(lr, start_ns), &ticket)) != NULL) {
        am2z_value_release(moved);
        f->end_ns = am2z__lr_now();
        return am2z__lr_fail(open);
    }
    ctx = am2z__lr_ctx0; /* not a memset: compilers make that a slow rep stos here */
    ctx.ops = &am2z__lr_ctx_ops;
    ctx.runtime_data = f;
    ctx.runtime = lr->rt;
    ctx.processor = p;
    ctx.logger = lr->rt->logger;
    ctx.meta.processor = am2z_processor_name(p);
    ctx.meta.execution_id = exec_id;
    ctx.meta.session_id = f->session->id;
    ctx.meta.attempt = attempt;
    ctx.meta.call_depth = depth;
    ctx.meta.started_at = am2z__lr_wall(lr, start_ns);
    ctx.deadline_ns = f->deadline_ns;
    ctx.trace = f->trace;
    ctx.trace_parent = f->trace_span;
    f->logger = NULL;
    if (!f->solo) am2z__lr_tick(lr, 0);
    if (am2z__lr_wants(lr, "processor:job:started")) {
        am2z_value *d = am2z__lr_event_base(ctx.meta.processor, exec_id, ctx.meta.session_id);
        d = am2z_value_set(d, "attempt", am2z_value_int(attempt));
        d = am2z_value_set(d, "callDepth", am2z_value_int(depth));
        am2z__lr_emit(lr, "processor:job:started", d);
    }
    link.frame = f;
    link.prev = am2z__lr_stack;
    am2z__lr_stack = &link;
    if (depth == 0) { /* a top-level attempt: its own durable scope, or none (7d) */
        void *outer = am2z__dur_enter_root(&root, f->job ? f->job->dx : NULL);
        r = am2z_processor_invoke(p, &ctx, input);
        am2z__dur_swap(outer);
    } else {
        r = am2z_processor_invoke(p, &ctx, input);
    }
    if (f->trace) f->trace_span = ctx.trace_span;
    am2z__lr_stack = link.prev;
    am2z_value_release(moved);
    f->end_ns = am2z__lr_now();
    if (ticket >= 0) /* a late result becomes a TimeoutError in the caller: count it as one */
        am2z__breaker_leave(lr->rt, p, ticket, r.error, f->deadline_ns && f->end_ns > f->deadline_ns,
                            am2z__lr_wall(lr, f->end_ns));
    if (r.state) {
        r.state = am2z__state_bump_sid(r.state, am2z__lr_wall(lr, f->end_ns), &out_sid);
        /* the input's sessionId value (checked above) kept by the bump: the same session */
        if (r.state && depth == 0 && (!in_sid || out_sid != in_sid) &&
            strcmp(am2z_state_session_id(r.state), sid) != 0)
            r.state = am2z__state_in_session(r.state, sid);
        if (!r.state) r = am2z__lr_fail(am2z_error_resource("memory", 0, 0));
    }
    if (!f->solo) am2z__lr_tick(lr, 1);
    if (f->logger) am2z_logger_release(f->logger);
    f->logger = NULL;
    return r;
}

static int am2z__lr_help(am2z__lr *lr, am2z__lr_worker *w);

/* Waits until t_ns on behalf of frame pf, helping with queued calls meanwhile.
   Returns 0 when pf was cancelled first. */
static int am2z__lr_wait_for(const am2z__lr_frame *pf, int64_t t_ns) {
    am2z__lr_worker *w = pf->worker;
    for (;;) {
        int64_t now = am2z__lr_now(), until;
        int gen = w ? AM2Z__LR_LD(&w->pgen) : 0;
        if (am2z__lr_frame_cancelled(pf, now)) return 0;
        if (now >= t_ns) return 1;
        if (am2z__lr_help(pf->lr, w)) continue;
        until = t_ns < now + AM2Z__LR_POLL_NS ? t_ns : now + AM2Z__LR_POLL_NS;
        if (w) am2z__lr_park(w, gen, until);
        else am2z__lr_sleep_ns(until - now < 1000000 ? until - now : 1000000);
    }
}

/* Rate-limited p: with reserve, reserves a start and returns when it is; without,
   starts now (0) when the last start is an interval old, else returns when to retry. */
static int64_t am2z__lr_rate_gate(am2z__lr *lr, am2z_processor *p, int64_t now, int reserve) {
    const am2z_queue_config *q = &am2z_processor_desc_of(p)->queue;
    int64_t interval = (int64_t)60000000000 / q->rate_limit_per_minute, at = reserve ? now : 0;
    am2z__lr_pinfo *pi;
    am2z__mutex_lock(&lr->qmu);
    pi = am2z__lr_pinfo_get_locked(lr, p);
    if (pi && reserve) {
        if (pi->next_token_ns > now) at = pi->next_token_ns;
        pi->next_token_ns = at + interval;
    } else if (pi) {
        at = am2z__lr_rate_start_locked(pi, interval, now);
    }
    am2z__mutex_unlock(&lr->qmu);
    return at;
}

/* A nested call, run on this thread: queue options become waits (the delay, the rate
   limit), retries happen here with their backoff (helping meanwhile), each attempt
   has its own timeout bounded by the caller's remaining budget. */
static am2z_result am2z__lr_run_call(const am2z__lr_frame *pf, am2z_processor *p, const am2z_state *input, int depth) {
    am2z__lr *lr = pf->lr;
    const am2z_processor_desc *d = am2z_processor_desc_of(p);
    const char *name = am2z_processor_name(p);
    int64_t timeout = am2z_processor_timeout_ms(p, lr->default_timeout_ms);
    int64_t first = am2z__lr_now(), s, dl, end = first, delay;
    am2z__lr_frame f;
    am2z__lr_srec *rec = am2z__lr_srec_get(pf->session, name);
    am2z_result r;
    char id[64];
    int att;
    am2z__execution_id_at(name, am2z__lr_wall(lr, first), id);
    if (!input) {
        r = am2z__lr_fail(am2z_error_validation("input", NULL, "a state is required"));
        att = 0;
        goto failed;
    }
    if (d->queue.delay_ms > 0 && !am2z__lr_wait_for(pf, am2z__lr_deadline(first, d->queue.delay_ms))) {
        r = am2z__lr_fail(am2z__lr_cancel_error(AM2Z__LR_CANCEL_PARENT, p, id, pf->session->id));
        att = 0;
        goto failed;
    }
    if (d->queue.rate_limit_per_minute > 0) {
        /* the wait may run other calls (helping), whose starts can take the turn: check
           the real last start again after it */
        int64_t at = am2z__lr_rate_gate(lr, p, am2z__lr_now(), 1);
        do {
            if (!am2z__lr_wait_for(pf, at)) {
                r = am2z__lr_fail(am2z__lr_cancel_error(AM2Z__LR_CANCEL_PARENT, p, id, pf->session->id));
                att = 0;
                goto failed;
            }
        } while ((at = am2z__lr_rate_gate(lr, p, am2z__lr_now(), 0)) != 0);
    }
    for (att = 1;; att++) {
        /* the first attempt starts now unless a delay or rate limit made it wait: one
           clock read fewer per nested call (a read costs ~40 ns on a VM) */
        s = att == 1 && d->queue.delay_ms <= 0 && d->queue.rate_limit_per_minute <= 0 ? first : am2z__lr_now();
        dl = am2z__lr_deadline(s, timeout);
        if (pf->deadline_ns && (!dl || pf->deadline_ns < dl)) dl = pf->deadline_ns;
        f = *pf;
        f.solo = 0; /* a solo chunk counts only its items: this attempt counts itself */
        f.deadline_ns = dl;
        r = am2z__lr_attempt(&f, p, input, id, att, depth, s);
        end = f.end_ns;
        am2z__lr_est_put(lr, p, end - s);
        if (dl && end > dl) { /* late: discard whatever it returned */
            am2z_result_clear(&r);
            r = am2z__lr_fail(am2z__lr_timeout_error(p, id, timeout));
            am2z_trace_fail(f.trace, f.trace_span, "TimeoutError");
        }
        if (r.state) {
            am2z__lr_stat(lr, rec, name, 0, end - first);
            am2z__lr_emit_end(lr, name, id, pf->session->id, NULL, att, depth, end - first);
            return r;
        }
        if (am2z__lr_frame_cancelled(pf, end)) break;
        delay = am2z_retry_delay_ms(&d->retry, r.error, att);
        if (delay < 0) break;
        am2z__lr_stat(lr, rec, name, 2, 0);
        am2z__lr_emit_retrying(lr, name, id, pf->session->id, r.error, att, delay);
        am2z_trace_retry(f.trace, f.trace_span, delay);
        if (delay > 0 && !am2z__lr_wait_for(pf, am2z__lr_deadline(am2z__lr_now(), delay))) break;
        am2z_result_clear(&r);
    }
failed:
    end = am2z__lr_now();
    am2z__lr_stat(lr, rec, name, 1, end - first);
    am2z__lr_emit_end(lr, name, id, pf->session->id, r.error, att, depth, end - first);
    return r;
}

/* ---- top-level jobs: resolving attempts ---- */

/* The execution's final outcome at time end; called by whoever holds the RESOLVING
   phase. state and err are consumed. */
static void am2z__lr_finish(am2z__lr *lr, am2z__lr_job *j, int word_attempt, am2z_state *state, am2z_error *err,
                            int64_t end) {
    int64_t first = AM2Z__LR_LD(&j->first_start_ns), lat = first ? end - first : 0;
    const char *name = am2z_processor_name(j->proc);
    int cancelled = AM2Z__LR_LD(&j->cancel) != 0;
    j->out_state = state;
    j->out_error = err;
    j->end_ns = end;
    am2z__lr_stat(lr, j->srec, name, state ? 0 : 1, lat);
    am2z__lr_emit_end(lr, name, j->exec_id, j->session->id, state ? NULL : err, AM2Z__LR_LD(&j->started_attempts),
                      0, lat);
    /* every count before the outcome shows: whoever holds the outcome sees them settled
       (a stop that saw running drop may find the job RESOLVING: it leaves it alone) */
    if (j->dx) /* recorded before anyone can hold the outcome */
        am2z__dur_end(j->dx, state, err, cancelled, AM2Z__LR_LD(&j->started_attempts), (double)lat / 1e6,
                      am2z__lr_wall(lr, first ? first : j->created_ns), j->session->id);
    am2z__lr_session_count(j->session, state ? 1 : 0, !state && !cancelled, !state && cancelled);
    am2z__lr_session_done(j->session);
    am2z__lr_claim_spin(lr);
    am2z__lr_job_set(j, AM2Z__LR_WORD(word_attempt, AM2Z__LR_DONE));
}

/* The current attempt (holding RESOLVING) ended with r: finish, or schedule a retry.
   hold: the calling thread waits for j and runs the retry itself when it is due, so it
   is not queued (a queued entry could outlive the attempt it was for). */
static void am2z__lr_resolve(am2z__lr *lr, am2z__lr_job *j, int attempt, am2z_result r, int hold, int64_t end) {
    const am2z_processor_desc *d = am2z_processor_desc_of(j->proc);
    int64_t delay;
    if (r.state) {
        am2z__lr_finish(lr, j, attempt, r.state, NULL, end);
        return;
    }
    if (r.error && !AM2Z__LR_LD(&j->cancel) && AM2Z__LR_LD(&lr->running) && !AM2Z__LR_LD(&j->session->stopping) &&
        (delay = am2z_retry_delay_ms(&d->retry, r.error, attempt)) >= 0 &&
        am2z__lr_job_add_error(j, am2z_error_retain(r.error))) {
        const char *name = am2z_processor_name(j->proc);
        am2z__lr_stat(lr, j->srec, name, 2, 0);
        am2z__lr_emit_retrying(lr, name, j->exec_id, j->session->id, r.error, attempt, delay);
        am2z_trace_retry(j->trace, j->trace_span, delay);
        /* due first: a worker waiting for j may run it itself once due */
        AM2Z__LR_ST(&j->due_ns, am2z__lr_deadline(am2z__lr_now(), delay));
        am2z__lr_job_set(j, AM2Z__LR_WORD(attempt + 1, AM2Z__LR_QUEUED));
        if (hold) {
            AM2Z__LR_ST(&j->held, 1);
            am2z_error_release(r.error);
            return;
        }
        if (am2z__lr_enqueue(lr, j, (delay > AM2Z__LR_MAX_TIMEOUT_MS ? AM2Z__LR_MAX_TIMEOUT_MS : delay) * 1000000, 0) ==
            AM2Z_STATUS_OK) {
            am2z_error_release(r.error);
            return;
        }
        /* the runtime stopped meanwhile: this failure is final */
        if (!am2z__lr_job_cas(j, AM2Z__LR_WORD(attempt + 1, AM2Z__LR_QUEUED),
                              AM2Z__LR_WORD(attempt + 1, AM2Z__LR_RESOLVING))) {
            am2z_error_release(r.error);
            return;
        }
        am2z__lr_finish(lr, j, attempt + 1, NULL, r.error, end);
        return;
    }
    if (r.error) am2z__lr_job_add_error(j, am2z_error_retain(r.error));
    am2z__lr_finish(lr, j, attempt, NULL, r.error, end);
}

/* Cancels j: resolves it now unless it is already finishing. only_queued leaves a
   running attempt alone. */
static void am2z__lr_job_cancel(am2z__lr *lr, am2z__lr_job *j, int reason, int only_queued) {
    for (;;) {
        int w = AM2Z__LR_LD(&j->word), ph = w & 3, zero = 0;
        am2z_error *e;
        if (ph != AM2Z__LR_QUEUED && (ph != AM2Z__LR_RUNNING || only_queued)) return;
        if (!am2z__lr_job_cas(j, w, (w & ~3) | AM2Z__LR_RESOLVING)) continue;
        am2z__atomic_cas(&j->cancel, &zero, reason, AM2Z__MO_SEQ_CST, AM2Z__MO_SEQ_CST);
        e = am2z__lr_cancel_error(reason, j->proc, j->exec_id, j->session->id);
        if (ph == AM2Z__LR_RUNNING && e) am2z__lr_job_add_error(j, am2z_error_retain(e));
        am2z__lr_finish(lr, j, w >> 2, NULL, e, am2z__lr_now());
        return;
    }
}

/* Runs the queued attempt of top-level job j on worker w, or on the thread that waits
   for it (waiter: w is then that thread's worker, or NULL on a caller's thread);
   consumes the reference it was given. */
static void am2z__lr_run_job(am2z__lr_worker *w, am2z__lr_job *j, int waiter) {
    am2z__lr *lr = j->lr;
    int word = AM2Z__LR_LD(&j->word), att = word >> 2;
    int64_t start = am2z__lr_now(), dl = am2z__lr_deadline(start, j->timeout_ms), end, zero = 0;
    am2z_result r;
    am2z__lr_frame f;
    if ((word & 3) == AM2Z__LR_QUEUED) AM2Z__LR_ST(&j->deadline_ns, dl);
    if ((word & 3) != AM2Z__LR_QUEUED || !am2z__lr_job_cas(j, word, AM2Z__LR_WORD(att, AM2Z__LR_RUNNING))) {
        if (j->has_slot) {
            am2z__mutex_lock(&lr->qmu);
            am2z__lr_slot_release_locked(lr, j);
            am2z__mutex_unlock(&lr->qmu);
        }
        am2z__lr_job_release(j);
        return;
    }
    am2z__atomic_cas(&j->first_start_ns, &zero, start, AM2Z__MO_SEQ_CST, AM2Z__MO_SEQ_CST);
    AM2Z__LR_ST(&j->started_attempts, att);
    if (AM2Z__LR_LD(&j->cancel)) {
        r = am2z__lr_fail(am2z__lr_cancel_error(AM2Z__LR_LD(&j->cancel), j->proc, j->exec_id, j->session->id));
        end = am2z__lr_now();
    } else {
        memset(&f, 0, sizeof f);
        f.lr = lr;
        f.worker = w;
        f.job = j;
        f.attempt = att;
        f.session = j->session;
        f.deadline_ns = dl;
        f.trace = j->trace;
        r = am2z__lr_attempt(&f, j->proc, j->input, j->exec_id, att, 0, start);
        if (j->trace) j->trace_span = f.trace_span;
        end = f.end_ns;
    }
    am2z__lr_est_put(lr, j->proc, end - start);
    if (j->has_slot) {
        am2z__mutex_lock(&lr->qmu);
        am2z__lr_slot_release_locked(lr, j);
        am2z__mutex_unlock(&lr->qmu);
    }
    if (dl && end > dl) {
        am2z_result_clear(&r);
        r = am2z__lr_fail(am2z__lr_timeout_error(j->proc, j->exec_id, j->timeout_ms));
        am2z_trace_fail(j->trace, j->trace_span, "TimeoutError");
    }
    if (am2z__lr_job_cas(j, AM2Z__LR_WORD(att, AM2Z__LR_RUNNING), AM2Z__LR_WORD(att, AM2Z__LR_RESOLVING))) {
        if (w) w->concluding = !am2z__lr_helping;
        am2z__lr_resolve(lr, j, att, r, waiter, end);
        if (w) w->concluding = 0;
    } else {
        am2z_result_clear(&r); /* resolved without us (deadline, cancel): discard */
    }
    am2z__lr_job_release(j);
}

/* Copies (move = 0) or moves the finished job's outcome into out. */
static void am2z__lr_job_outcome(am2z__lr_job *j, am2z_outcome *out, int move) {
    int64_t first = AM2Z__LR_LD(&j->first_start_ns);
    size_t i;
    memset(out, 0, sizeof *out);
    if (j->out_state) out->state = move ? j->out_state : am2z_value_retain(j->out_state);
    else if (j->out_error && j->out_error->partial_state)
        out->state = am2z_value_retain(j->out_error->partial_state);
    else out->state = am2z_value_retain(j->input);
    out->error = move ? j->out_error : am2z_error_retain(j->out_error);
    if (move) {
        out->attempt_errors = j->errs;
        out->attempt_error_count = j->nerrs;
        j->out_state = NULL;
        j->out_error = NULL;
        j->errs = NULL;
        j->nerrs = j->errs_cap = 0;
    } else if (j->nerrs) {
        out->attempt_errors = (am2z_error **)am2z__malloc(j->nerrs * sizeof *out->attempt_errors);
        if (out->attempt_errors) {
            for (i = 0; i < j->nerrs; i++) out->attempt_errors[i] = am2z_error_retain(j->errs[i]);
            out->attempt_error_count = j->nerrs;
        }
    }
    out->attempts = AM2Z__LR_LD(&j->started_attempts);
    out->duration_ms = first ? (double)(j->end_ns - first) / 1e6 : 0;
    out->started_at = am2z__lr_wall(j->lr, first ? first : j->created_ns);
    memcpy(out->execution_id, j->exec_id, sizeof out->execution_id);
    am2z__outcome_session(out, j->session->id);
    out->trace = am2z_trace_retain(j->trace);
}

/* A queued job its waiter wants to run itself: 1 when its rate limit allows a start
   now (taken), else 0 with *due set to when it may. */
static int am2z__lr_job_may_start(am2z__lr *lr, am2z__lr_job *j, int64_t now, int64_t *due) {
    const am2z_queue_config *q = &am2z_processor_desc_of(j->proc)->queue;
    int64_t at;
    if (!j->pinfo || q->rate_limit_per_minute <= 0) return 1;
    am2z__mutex_lock(&lr->qmu);
    at = am2z__lr_rate_start_locked(j->pinfo, (int64_t)60000000000 / q->rate_limit_per_minute, now);
    if (!at) j->has_token = 0;
    am2z__mutex_unlock(&lr->qmu);
    *due = at;
    return at == 0;
}

/* The mutex and condition a thread waiting on j blocks on are made only when a wait
   outlasts its spin. Returns 0 (after a short sleep, so the caller retries) when they
   cannot be made now. */
static int am2z__lr_job_cv_setup(am2z__lr_job *j) {
    if (j->cv_ready) return 1;
    if (am2z__mutex_cond_init(&j->mu, &j->cv) != 0) {
        am2z__lr_sleep_ns(100000);
        return 0;
    }
    j->cv_ready = 1; /* published to wakers by the waiter's store to j->sleepers */
    return 1;
}

/* Waits for top-level job j. The waiter enforces the current attempt's deadline. */
static am2z_status am2z__lr_job_wait(am2z__lr_job *j, int64_t timeout_ms, am2z_outcome *out, int move) {
    am2z__lr *lr = j->lr;
    am2z__lr_worker *me = am2z__lr_me(lr);
    int64_t t0, spin_end, until;
    if ((AM2Z__LR_LD(&j->word) & 3) == AM2Z__LR_DONE) { /* ran on this thread, or finished already */
        am2z__lr_job_outcome(j, out, move);
        return AM2Z_STATUS_OK;
    }
    t0 = am2z__lr_now();
    spin_end = t0 + lr->spin_ns;
    if (timeout_ms < 0) until = INT64_MAX;
    else until = timeout_ms > AM2Z__LR_MAX_TIMEOUT_MS ? INT64_MAX : t0 + timeout_ms * 1000000;
    for (;;) {
        int64_t now = am2z__lr_now(), wake, dl; /* now before the word: see am2z__lr_job_set */
        int w = AM2Z__LR_LD(&j->word), ph = w & 3;
        if (ph == AM2Z__LR_DONE) {
            am2z__lr_job_outcome(j, out, move);
            return AM2Z_STATUS_OK;
        }
        wake = am2z__lr_deadline(now, j->timeout_ms);
        if (!wake) wake = INT64_MAX;
        if (ph == AM2Z__LR_RUNNING) {
            dl = AM2Z__LR_LD(&j->deadline_ns);
            if (dl && now >= dl) {
                if (am2z__lr_job_cas(j, w, (w & ~3) | AM2Z__LR_RESOLVING)) {
                    am2z__lr_resolve(lr, j, w >> 2, am2z__lr_fail(am2z__lr_timeout_error(j->proc, j->exec_id, j->timeout_ms)),
                                     0, now);
                }
                continue;
            }
            wake = dl ? dl : INT64_MAX;
        } else if (ph == AM2Z__LR_QUEUED && (me || am2z__lr_here(lr, j->proc))) {
            /* a processor waiting for an execution it submitted: run it here rather than
               wait for a worker that may be this one; a cooperative execution: run it
               here rather than wait for a worker to wake up */
            int64_t due = AM2Z__LR_LD(&j->due_ns);
            if (due <= now && am2z__lr_job_may_start(lr, j, now, &due)) {
                am2z__atomic_inc(&j->refs);
                am2z__lr_helping++;
                am2z__lr_run_job(me, j, 1);
                am2z__lr_helping--;
                continue;
            }
            if (due < wake) wake = due;
        }
        if (now >= until) {
            /* a retry this thread kept for itself: the queue runs it from now on */
            if (AM2Z__LR_LD(&j->held) && am2z__atomic_exchange(&j->held, 0, AM2Z__MO_SEQ_CST)) {
                int64_t due = AM2Z__LR_LD(&j->due_ns);
                am2z__lr_enqueue(lr, j, due > now ? due - now : 0, 0); /* stopped: stop cancels it */
            }
            return AM2Z_STATUS_TIMEOUT;
        }
        if (wake > until) wake = until;
        if (now < spin_end) {
            /* Not even started after 20 us: no worker is running on another CPU (the
               one it was handed to may share ours, or be waking up). Yield so it can
               run; spinning would only keep it off the CPU. */
            if (ph == AM2Z__LR_QUEUED && now - t0 > 20000) sched_yield();
            else am2z__lr_relax();
            continue;
        }
        /* most waits end while spinning: the blocking part is set up late */
        if (!am2z__lr_job_cv_setup(j)) continue;
        am2z__mutex_lock(&j->mu);
        AM2Z__LR_ST(&j->sleepers, 1);
        if (AM2Z__LR_LD(&j->word) == w) am2z__cond_wait_until(&j->cv, &j->mu, wake);
        AM2Z__LR_ST(&j->sleepers, 0);
        am2z__mutex_unlock(&j->mu);
    }
}

/* ---- nested calls queued on the lane ---- */

/* A parent that is no worker (a caller running its execution itself) blocks on the
   record of what it runs (its job, or its execute_many) until a call it queued ends. */
static void am2z__lr_owner_wake(int *sleepers, am2z__mutex *mu, am2z__cond *cv) {
    if (AM2Z__LR_LD(sleepers)) {
        am2z__mutex_lock(mu);
        am2z__cond_broadcast(cv);
        am2z__mutex_unlock(mu);
    }
}

static void am2z__lr_owner_park(const am2z__lr_frame *pf, am2z__lr_job *const *kids, size_t from, size_t n,
                                int64_t until) {
    int *sleepers;
    am2z__mutex *mu;
    am2z__cond *cv;
    size_t i;
    int done = 0;
    if (pf->job) {
        am2z__lr_job *j = pf->job;
        if (!am2z__lr_job_cv_setup(j)) return; /* by the thread running j: the one that waits */
        sleepers = &j->sleepers;
        mu = &j->mu;
        cv = &j->cv;
    } else if (pf->batch) {
        sleepers = &pf->batch->sleepers;
        mu = &pf->batch->mu;
        cv = &pf->batch->cv;
    } else {
        am2z__lr_sleep_ns(100000);
        return;
    }
    am2z__mutex_lock(mu);
    AM2Z__LR_ST(sleepers, 1);
    for (i = from; i < n && !done; i++) done = kids[i] && (AM2Z__LR_LD(&kids[i]->word) & 3) == AM2Z__LR_DONE;
    if (!done) am2z__cond_wait_until(cv, mu, until);
    AM2Z__LR_ST(sleepers, 0);
    am2z__mutex_unlock(mu);
}

/* Stores the result of nested job k and wakes its parent; r consumed. */
static void am2z__lr_kid_finish(am2z__lr_job *k, am2z_result r) {
    if (am2z__lr_job_cas(k, AM2Z__LR_WORD(1, AM2Z__LR_RUNNING), AM2Z__LR_WORD(1, AM2Z__LR_RESOLVING))) {
        k->out_state = r.state;
        k->out_error = r.error;
        am2z__lr_job_set(k, AM2Z__LR_WORD(1, AM2Z__LR_DONE));
        if (k->notify) am2z__lr_notify(k->notify);
        else if (k->parent) am2z__lr_owner_wake(&k->parent->sleepers, &k->parent->mu, &k->parent->cv);
        else if (k->pbatch) am2z__lr_owner_wake(&k->pbatch->sleepers, &k->pbatch->mu, &k->pbatch->cv);
    } else {
        am2z_result_clear(&r);
    }
}

static void am2z__lr_run_kid(am2z__lr_worker *w, am2z__lr_job *k) {
    am2z__lr_frame f;
    am2z_result r;
    if (!am2z__lr_job_cas(k, AM2Z__LR_WORD(1, AM2Z__LR_QUEUED), AM2Z__LR_WORD(1, AM2Z__LR_RUNNING))) {
        am2z__lr_job_release(k);
        return;
    }
    memset(&f, 0, sizeof f);
    f.lr = k->lr;
    f.worker = w;
    f.job = k;
    f.attempt = 1;
    f.session = k->session;
    f.deadline_ns = k->deadline_ns;
    f.trace = k->trace;
    f.trace_span = k->trace_parent;
    r = am2z__lr_run_call(&f, k->proc, k->input, k->depth);
    am2z__lr_kid_finish(k, r);
    am2z__lr_job_release(k);
}

/* Runs one queued nested call on this thread (worker w, or NULL on a caller's thread);
   0 when there is none. */
static int am2z__lr_help(am2z__lr *lr, am2z__lr_worker *w) {
    am2z__lr_job *k = NULL;
    void *scope;
    if (am2z__lr_helping >= AM2Z__LR_HELP_DEPTH || !AM2Z__LR_LD(&lr->lane_n)) return 0;
    am2z__mutex_lock(&lr->qmu);
    k = am2z__lr_list_pop(&lr->lane_head, &lr->lane_tail);
    if (k) {
        am2z__lr_work(lr, -1);
        am2z__atomic_sub(&lr->lane_n, 1, AM2Z__MO_SEQ_CST);
    }
    am2z__mutex_unlock(&lr->qmu);
    if (!k) return 0;
    am2z__lr_helping++;
    scope = am2z__dur_swap(NULL); /* another execution's call: not in our durable scope */
    am2z__lr_run_kid(w, k);
    am2z__dur_swap(scope);
    am2z__lr_helping--;
    return 1;
}

/* The processor a composite (or any processor) calls by name: its own child of that
   name (borrowed: no registry lock on the hot path), else the registered one
   (retained, *owned = 1), else NULL. */
static am2z_processor *am2z__lr_callee(am2z__lr *lr, const am2z_processor *caller, const char *name, int *owned) {
    am2z_processor *const *kids = NULL;
    size_t n = am2z__processor_children(caller, &kids), i;
    *owned = 0;
    for (i = 0; i < n; i++) /* composites pass their children's own name strings */
        if (am2z_processor_name(kids[i]) == name) return kids[i];
    for (i = 0; i < n; i++)
        if (strcmp(am2z_processor_name(kids[i]), name) == 0) return kids[i];
    *owned = 1;
    return am2z_runtime_lookup(lr->rt, name);
}

static am2z__lr_job *am2z__lr_kid_new(const am2z__lr_frame *pf, am2z_processor *p, const am2z_state *input,
                                      int depth) {
    am2z__lr_job *k = am2z__lr_job_new(pf->lr, 0);
    if (!k) return NULL;
    k->refs = 2; /* the parent's and the lane's */
    k->proc = am2z_processor_retain(p);
    k->input = am2z_value_retain(input);
    k->session = pf->session; /* kept alive by the parent chain */
    if (pf->job) {
        am2z__atomic_inc(&pf->job->refs);
        k->parent = pf->job;
    }
    k->parent_attempt = pf->attempt;
    if (pf->batch) {
        am2z__atomic_inc(&pf->batch->refs);
        k->pbatch = pf->batch;
    }
    k->pindex = pf->index;
    k->notify = pf->worker;
    k->depth = depth;
    k->deadline_ns = pf->deadline_ns;
    k->word = AM2Z__LR_WORD(1, AM2Z__LR_QUEUED);
    k->trace = pf->trace; /* alive while the parent job is, which k holds */
    k->trace_parent = pf->trace_span;
    return k;
}

static void am2z__ctx_call_many_lr(am2z_ctx *ctx, const char *const *names, const am2z_state *const *inputs,
                                    size_t n, am2z_result *results) {
    am2z__lr_frame *pf = (am2z__lr_frame *)ctx->runtime_data;
    am2z__lr *lr = pf->lr;
    int depth = ctx->meta.call_depth + 1, queued = 0, wake = 0;
    if (pf->trace) pf->trace_span = ctx->trace_span; /* the calls hang under this attempt */
    am2z_processor *pstack[8];
    am2z__lr_job *kstack[8];
    int ostack[8];
    am2z_processor **procs = pstack;
    am2z__lr_job **kids = kstack;
    int *owned = ostack;
    void *block = NULL;
    size_t i, first = n;
    int64_t spin_end;
    unsigned turns = 0;
    if (depth > lr->max_depth) {
        for (i = 0; i < n; i++) results[i] = am2z__lr_fail(am2z_error_call_depth(lr->max_depth, depth));
        return;
    }
    if (n > 8) {
        size_t unit = sizeof(am2z_processor *) + sizeof(am2z__lr_job *) + sizeof(int);
        if (n > ((size_t)-1) / unit || !(block = am2z__malloc(n * unit))) {
            for (i = 0; i < n; i++) results[i] = am2z__lr_fail(am2z_error_resource("memory", 0, 0));
            return;
        }
        procs = (am2z_processor **)block;
        kids = (am2z__lr_job **)(procs + n);
        owned = (int *)(kids + n);
    }
    for (i = 0; i < n; i++) {
        kids[i] = NULL;
        procs[i] = names[i] ? am2z__lr_callee(lr, ctx->processor, names[i], &owned[i]) : NULL;
        if (!procs[i]) {
            owned[i] = 0;
            results[i] = am2z__lr_fail(am2z__runtime_not_found(lr->rt, names[i]));
        } else if (first == n) {
            first = i;
        }
    }
    /* All but the first go on the lane for idle workers, unless they are known to be
       short (running them here costs less than handing them over). Only long (or not yet
       measured) ones wake a sleeping worker; the parent never waits for that wake-up: it
       takes back whatever nobody took. */
    for (i = first + 1; i < n; i++) {
        int64_t est;
        if (!procs[i] || ((est = am2z__lr_est_get(lr, procs[i])) >= 0 && est < AM2Z__LR_SHORT_NS)) continue;
        if ((kids[i] = am2z__lr_kid_new(pf, procs[i], inputs[i], depth)) == NULL) continue;
        queued++;
        if (est < 0 || est >= AM2Z__LR_WAKE_NS) wake++;
    }
    if (queued) {
        am2z__mutex_lock(&lr->qmu);
        for (i = first + 1; i < n; i++) {
            if (!kids[i]) continue;
            am2z__lr_list_push(&lr->lane_head, &lr->lane_tail, kids[i]);
        }
        am2z__lr_work(lr, queued);
        am2z__atomic_add(&lr->lane_n, queued, AM2Z__MO_SEQ_CST);
        am2z__lr_wake_locked(lr, wake);
        am2z__mutex_unlock(&lr->qmu);
    }
    if (first < n) results[first] = am2z__lr_run_call(pf, procs[first], inputs[first], depth);
    /* take back, in order, what no other worker took */
    for (i = first + 1; i < n; i++) {
        if (!procs[i]) continue;
        if (!kids[i]) {
            results[i] = am2z__lr_run_call(pf, procs[i], inputs[i], depth);
        } else if (am2z__lr_job_cas(kids[i], AM2Z__LR_WORD(1, AM2Z__LR_QUEUED), AM2Z__LR_WORD(1, AM2Z__LR_DONE))) {
            results[i] = am2z__lr_run_call(pf, procs[i], inputs[i], depth);
            am2z__lr_job_release(kids[i]);
            kids[i] = NULL;
        }
    }
    /* wait for the ones running elsewhere (the spin starts at the first look that finds
       one still running: no clock read when none was handed over) */
    spin_end = 0;
    for (;;) {
        am2z__lr_worker *w = pf->worker;
        int gen = w ? AM2Z__LR_LD(&w->pgen) : 0, pending = 0;
        int64_t now;
        for (i = first + 1; i < n; i++) {
            if (!kids[i]) continue;
            if ((AM2Z__LR_LD(&kids[i]->word) & 3) == AM2Z__LR_DONE) {
                results[i].state = kids[i]->out_state;
                results[i].error = kids[i]->out_error;
                kids[i]->out_state = NULL;
                kids[i]->out_error = NULL;
                am2z__lr_job_release(kids[i]);
                kids[i] = NULL;
            } else {
                pending++;
            }
        }
        if (!pending) break;
        now = am2z__lr_now();
        if (!spin_end) spin_end = now + pf->lr->spin_ns;
        if (am2z__lr_frame_cancelled(pf, now)) {
            int timed_out = pf->deadline_ns && now >= pf->deadline_ns;
            for (i = first + 1; i < n; i++) {
                am2z__lr_job *k = kids[i];
                int zero = 0;
                if (!k) continue;
                am2z__atomic_cas(&k->cancel, &zero, AM2Z__LR_CANCEL_PARENT, AM2Z__MO_SEQ_CST,
                                 AM2Z__MO_SEQ_CST);
                if (am2z__lr_job_cas(k, AM2Z__LR_WORD(1, AM2Z__LR_RUNNING), AM2Z__LR_WORD(1, AM2Z__LR_DONE))) {
                    results[i] = am2z__lr_fail(timed_out ? am2z__lr_timeout_error(procs[i], NULL, am2z_processor_timeout_ms(procs[i], lr->default_timeout_ms))
                                                         : am2z__lr_cancel_error(AM2Z__LR_CANCEL_PARENT, procs[i], NULL, pf->session->id));
                    am2z__lr_job_release(k);
                    kids[i] = NULL;
                }
            }
            continue;
        }
        if (am2z__lr_help(lr, w)) continue;
        if (now < spin_end) {
            /* a call another worker took is not back after 20 us: that worker may share
               this CPU, so let it run now and then */
            if (now - (spin_end - pf->lr->spin_ns) > 20000 && (++turns & 15) == 0) sched_yield();
            else am2z__lr_relax();
            continue;
        }
        if (w) {
            int64_t until = now + AM2Z__LR_POLL_NS;
            if (pf->deadline_ns && pf->deadline_ns < until) until = pf->deadline_ns;
            am2z__lr_park(w, gen, until);
        } else {
            int64_t until = now + AM2Z__LR_POLL_NS;
            if (pf->deadline_ns && pf->deadline_ns < until) until = pf->deadline_ns;
            am2z__lr_owner_park(pf, kids, first + 1, n, until);
        }
    }
    for (i = 0; i < n; i++)
        if (owned[i]) am2z_processor_release(procs[i]);
    am2z__free(block);
}

static void am2z__ctx_emit_lr(am2z_ctx *ctx, const char *event, am2z_value *data) {
    am2z_runtime_emit(ctx->runtime, event, data);
    am2z_value_release(data);
}

/* am2z_ctx_cancelled has just checked ctx->deadline_ns, the frame's deadline, against
   the clock: what is left are the owners (a second clock read per check, and a chain
   checks before every step). */
static int am2z__ctx_cancelled_lr(const am2z_ctx *ctx) {
    const am2z__lr_frame *f = (const am2z__lr_frame *)ctx->runtime_data;
    if (ctx->deadline_ns != f->deadline_ns) return am2z__lr_frame_cancelled(f, am2z__lr_now());
    return am2z__lr_owner_cancelled(f->job, f->attempt, f->batch, f->index);
}

static int am2z__ctx_wants_lr(const am2z_ctx *ctx, const char *event) {
    return am2z__runtime_has_handlers(ctx->runtime, event);
}

static const am2z_logger *am2z__ctx_logger_lr(const am2z_ctx *ctx) {
    am2z__lr_frame *f = (am2z__lr_frame *)ctx->runtime_data;
    if (!f->logger) {
        am2z_value *fields = am2z_value_set(am2z_value_object(), "processor", am2z__lr_str(ctx->meta.processor));
        fields = am2z_value_set(fields, "sessionId", am2z__lr_str(ctx->meta.session_id));
        fields = am2z_value_set(fields, "executionId", am2z__lr_str(ctx->meta.execution_id));
        if (fields) f->logger = am2z_logger_child(ctx->logger, fields, ctx->meta.processor);
        am2z_value_release(fields);
    }
    return f->logger ? f->logger : ctx->logger;
}

/* ---- execute_many ---- */

static void am2z__lr_batch_release(am2z__lr_batch *b) {
    if (!b || am2z__atomic_dec(&b->refs) != 0) return;
    am2z_processor_release(b->proc);
    am2z__lr_session_release(b->session);
    am2z__free(b->items);
    am2z__free(b->slots);
    am2z__mutex_destroy(&b->mu);
    am2z__cond_destroy(&b->cv);
    am2z__free(b);
}

static void am2z__lr_batch_wake(am2z__lr_batch *b) {
    if (AM2Z__LR_LD(&b->sleepers)) {
        am2z__mutex_lock(&b->mu);
        am2z__cond_broadcast(&b->cv);
        am2z__mutex_unlock(&b->mu);
    }
}

/* Fills outs[k] for a finished item; r consumed, in (the item's input) borrowed. */
static void am2z__lr_item_outcome(am2z__lr *lr, am2z_outcome *o, am2z_result r, const am2z_state *in,
                                  int attempts, int64_t start, int64_t end, const char *exec_id,
                                  const char *session_id) {
    /* field by field: a memset of the whole outcome (264 bytes) cost as much as the
       rest of this function */
    o->state = r.state;
    o->error = NULL;
    o->attempt_errors = NULL;
    o->attempt_error_count = 0;
    o->trace = NULL;
    if (!r.state) {
        o->state = am2z_value_retain(r.error && r.error->partial_state ? r.error->partial_state : in);
        o->error = r.error;
        if (r.error && attempts) {
            o->attempt_errors = (am2z_error **)am2z__malloc(sizeof *o->attempt_errors);
            if (o->attempt_errors) {
                o->attempt_errors[0] = am2z_error_retain(r.error);
                o->attempt_error_count = 1;
            }
        }
    }
    o->attempts = attempts;
    o->duration_ms = start ? (double)(end - start) / 1e6 : 0;
    o->started_at = am2z__lr_wall(lr, start ? start : end);
    /* exec_id: a 64-byte buffer; two halves, which compilers copy with vector moves
       where one 64-byte memcpy became a slow rep movs */
    memcpy(o->execution_id, exec_id, sizeof o->execution_id / 2);
    memcpy(o->execution_id + sizeof o->execution_id / 2, exec_id + sizeof o->execution_id / 2,
           sizeof o->execution_id / 2);
    am2z__outcome_session(o, session_id);
}

/* Runs item k if nobody claimed it, on worker w or (w NULL) the caller's thread, which
   publishes it in slot `si`; returns 1 when this call resolved it (ok in *ok). *clock:
   the end of the item this thread ran just before in the same chunk, which is this
   one's start (one clock read per item, not two), or 0; set to this item's end. */
static int am2z__lr_run_item(am2z__lr_worker *w, int si, am2z__lr_batch *b, size_t k, int *ok, int64_t *clock) {
    am2z__lr *lr = b->lr;
    am2z__lr_bslot *slot = &b->slots[si];
    unsigned char e = AM2Z__LR_IT_PENDING;
    am2z_state *in;
    am2z_result r;
    int64_t s, dl, end;
    am2z__lr_frame f;
    const char *name = am2z_processor_name(b->proc);
    char id[64];
    if (!am2z__atomic_cas(&b->items[k], &e, (unsigned char)AM2Z__LR_IT_CLAIMED, AM2Z__MO_SEQ_CST,
                          AM2Z__MO_SEQ_CST))
        return 0;
    /* the caller cannot return while the item is claimed, so inputs[k] is alive */
    in = am2z_value_retain(b->inputs[k]);
    s = *clock ? *clock : am2z__lr_now();
    dl = am2z__lr_deadline(s, b->timeout_ms);
    AM2Z__LR_ST(&slot->seq, AM2Z__LR_LD(&slot->seq) + 1);
    AM2Z__LR_ST(&slot->item, k + 1);
    AM2Z__LR_ST(&slot->deadline, dl);
    AM2Z__LR_ST(&slot->seq, AM2Z__LR_LD(&slot->seq) + 1);
    AM2Z__LR_ST(&b->items[k], (unsigned char)AM2Z__LR_IT_RUNNING);
    am2z__execution_id_at(name, am2z__lr_wall(lr, s), id);
    if (!in) {
        r = am2z__lr_fail(am2z_error_validation("input", NULL, "a state is required"));
    } else {
        memset(&f, 0, sizeof f);
        f.lr = lr;
        f.worker = w;
        f.batch = b;
        f.index = k;
        f.session = b->session;
        f.deadline_ns = dl;
        r = am2z__lr_attempt(&f, b->proc, in, id, 1, 0, s);
    }
    end = in ? f.end_ns : s;
    *clock = end;
    am2z__lr_est_put(lr, b->proc, end - s);
    if (end > dl) {
        am2z_result_clear(&r);
        r = am2z__lr_fail(am2z__lr_timeout_error(b->proc, id, b->timeout_ms));
    } else if (AM2Z__LR_LD(&b->cancel)) { /* cancelled meanwhile: say why, as the caller would */
        am2z_result_clear(&r);
        r = am2z__lr_fail(am2z__lr_cancel_error(AM2Z__LR_LD(&b->cancel), b->proc, id, b->session->id));
    }
    e = AM2Z__LR_IT_RUNNING;
    if (!am2z__atomic_cas(&b->items[k], &e, (unsigned char)AM2Z__LR_IT_WRITING, AM2Z__MO_SEQ_CST,
                          AM2Z__MO_SEQ_CST)) {
        am2z_result_clear(&r); /* the caller gave up on it */
        am2z_value_release(in);
        return 0;
    }
    *ok = r.state != NULL;
    am2z__lr_stat(lr, NULL, name, *ok ? 0 : 1, end - s); /* the session's: per chunk, in flush */
    am2z__lr_emit_end(lr, name, id, b->session->id, r.error, 1, 0, end - s);
    am2z__lr_item_outcome(lr, &b->outs[k], r, in, 1, s, end, id, b->session->id);
    AM2Z__LR_ST(&b->items[k], (unsigned char)AM2Z__LR_IT_DONE);
    am2z__atomic_store(&slot->done, am2z__atomic_load(&slot->done, AM2Z__MO_RELAXED) + 1, AM2Z__MO_RELEASE);
    am2z_value_release(in);
    return 1;
}

static void am2z__lr_batch_flush(am2z__lr_batch *b, size_t done, int64_t ok, int64_t failed) {
    am2z__lr_session_count(b->session, ok, failed, 0);
    if (b->srec && ok) am2z__atomic_add(&b->srec->completed, ok, AM2Z__MO_RELAXED);
    if (b->srec && failed) am2z__atomic_add(&b->srec->failed, failed, AM2Z__MO_RELAXED);
    if (done && (am2z__atomic_sub(&b->remaining, done, AM2Z__MO_SEQ_CST) == 0 || AM2Z__LR_LD(&b->watch)))
        am2z__lr_batch_wake(b);
}

/* A worker's (or, slot nworkers, the caller's) share of an execute_many: claims chunks
   of items until none are left; `sweep` first rescans for items stranded behind an
   item that timed out. Consumes a reference to b. */
static void am2z__lr_run_batch(am2z__lr_worker *w, int si, am2z__lr_batch *b, int sweep) {
    size_t i, k, end, done = 0;
    int64_t ok = 0, failed = 0, clock;
    int good = 0;
    for (k = 0; sweep && k < b->count && !AM2Z__LR_LD(&b->cancel) && !AM2Z__LR_LD(&b->cancel_pending); k++) {
        if (AM2Z__LR_LD(&b->items[k]) != AM2Z__LR_IT_PENDING) continue;
        clock = 0;
        if (am2z__lr_run_item(w, si, b, k, &good, &clock)) {
            done++;
            if (good) ok++;
            else failed++;
            am2z__lr_batch_flush(b, done, ok, failed);
            done = 0;
            ok = failed = 0;
        }
    }
    while (!AM2Z__LR_LD(&b->cancel) && !AM2Z__LR_LD(&b->cancel_pending)) {
        i = am2z__atomic_fetch_add(&b->next, AM2Z__LR_CHUNK, AM2Z__MO_RELAXED);
        if (i >= b->count) break;
        clock = 0;
        end = b->count - i < AM2Z__LR_CHUNK ? b->count : i + AM2Z__LR_CHUNK;
        for (k = i; k < end; k++) {
            if (!am2z__lr_run_item(w, si, b, k, &good, &clock)) continue;
            done++;
            if (good) ok++;
            else failed++;
        }
        am2z__lr_batch_flush(b, done, ok, failed);
        done = 0;
        ok = failed = 0;
    }
    am2z__lr_batch_release(b);
}

/* The caller resolves item k itself (timeout or cancel); 1 when it did. */
static int am2z__lr_item_abandon(am2z__lr_batch *b, size_t k, unsigned char expect, am2z_error *err) {
    am2z__lr *lr = b->lr;
    am2z_result r;
    int64_t now = am2z__lr_now();
    char id[64];
    if (!am2z__atomic_cas(&b->items[k], &expect, (unsigned char)AM2Z__LR_IT_ABANDONED,
                          AM2Z__MO_SEQ_CST, AM2Z__MO_SEQ_CST)) {
        am2z_error_release(err);
        return 0;
    }
    am2z__execution_id_at(am2z_processor_name(b->proc), am2z__lr_wall(lr, now), id);
    if (err && err->kind == AM2Z_ERROR_CANCELLED) am2z__lr_session_count(b->session, 0, 0, 1);
    else am2z__lr_session_count(b->session, 0, 1, 0);
    r = am2z__lr_fail(err);
    am2z__lr_stat(lr, b->srec, am2z_processor_name(b->proc), 1, 0);
    am2z__lr_item_outcome(lr, &b->outs[k], r, b->inputs[k], expect == AM2Z__LR_IT_RUNNING, 0, now, id,
                          b->session->id);
    am2z__atomic_sub(&b->remaining, 1, AM2Z__MO_SEQ_CST);
    b->abandoned++;
    return 1;
}

/* 1 when every item is resolved, by the workers' exact counts. */
static int am2z__lr_batch_settled(const am2z__lr_batch *b) {
    size_t total = b->abandoned;
    int i;
    for (i = 0; i <= b->lr->nworkers; i++) total += am2z__atomic_load(&b->slots[i].done, AM2Z__MO_ACQUIRE);
    return total >= b->count;
}

static void am2z__lr_batch_request_sweep(am2z__lr *lr, am2z__lr_batch *b) {
    am2z__mutex_lock(&lr->qmu);
    b->sweep = 1;
    if (b->linked && !b->advertised) {
        b->advertised = 1;
        am2z__lr_work(lr, 1);
    }
    am2z__lr_wake_locked(lr, 1);
    am2z__mutex_unlock(&lr->qmu);
}

/* The caller's side of execute_many: waits, times out items at their deadlines, and
   on cancel resolves everything unfinished. */
static void am2z__lr_batch_wait(am2z__lr_batch *b) {
    am2z__lr *lr = b->lr;
    int64_t spin_end = am2z__lr_now() + lr->spin_ns;
    int abandoned = 0;
    size_t k;
    int wi;
    for (;;) {
        int64_t now, wake;
        int reason, pending_reason;
        if (AM2Z__LR_LD(&b->remaining) == 0) return;
        now = am2z__lr_now();
        reason = AM2Z__LR_LD(&b->cancel);
        pending_reason = AM2Z__LR_LD(&b->cancel_pending);
        if (reason || pending_reason) {
            for (k = 0; k < b->count; k++) {
                unsigned char st = AM2Z__LR_LD(&b->items[k]);
                while (st == AM2Z__LR_IT_CLAIMED || (reason && st == AM2Z__LR_IT_WRITING)) {
                    AM2Z__LR_PAUSE(); /* a worker is between two stores */
                    st = AM2Z__LR_LD(&b->items[k]);
                }
                if (st == AM2Z__LR_IT_PENDING || (reason && st == AM2Z__LR_IT_RUNNING))
                    abandoned |= am2z__lr_item_abandon(
                        b, k, st,
                        am2z__lr_cancel_error(reason ? reason : pending_reason, b->proc, NULL, b->session->id));
            }
            AM2Z__LR_ST(&b->watch, 1);
            if (reason) return;
        }
        wake = now + (b->timeout_ms > AM2Z__LR_MAX_TIMEOUT_MS ? AM2Z__LR_MAX_TIMEOUT_MS : b->timeout_ms) * 1000000;
        for (wi = 0; wi <= lr->nworkers; wi++) {
            am2z__lr_bslot *sl = &b->slots[wi];
            unsigned seq = AM2Z__LR_LD(&sl->seq);
            size_t item = AM2Z__LR_LD(&sl->item);
            int64_t dl = AM2Z__LR_LD(&sl->deadline);
            if (seq & 1 || seq != AM2Z__LR_LD(&sl->seq)) { /* being rewritten: look again soon */
                if (now + 1000000 < wake) wake = now + 1000000;
                continue;
            }
            if (!item || AM2Z__LR_LD(&b->items[item - 1]) != AM2Z__LR_IT_RUNNING) continue;
            if (now >= dl) {
                if (am2z__lr_item_abandon(b, item - 1, AM2Z__LR_IT_RUNNING,
                                          am2z__lr_timeout_error(b->proc, NULL, b->timeout_ms))) {
                    abandoned = 1;
                    AM2Z__LR_ST(&b->watch, 1);
                    am2z__lr_batch_request_sweep(lr, b);
                }
            } else if (dl < wake) {
                wake = dl;
            }
        }
        if (abandoned && am2z__lr_batch_settled(b)) return;
        if (now < spin_end) {
            am2z__lr_relax();
            continue;
        }
        am2z__mutex_lock(&b->mu);
        AM2Z__LR_ST(&b->sleepers, 1);
        if (AM2Z__LR_LD(&b->remaining) != 0 && !AM2Z__LR_LD(&b->cancel) &&
            AM2Z__LR_LD(&b->cancel_pending) == pending_reason)
            am2z__cond_wait_until(&b->cv, &b->mu, abandoned && wake > now + AM2Z__LR_POLL_NS ? now + AM2Z__LR_POLL_NS : wake);
        AM2Z__LR_ST(&b->sleepers, 0);
        am2z__mutex_unlock(&b->mu);
    }
}

static void am2z__lr_batch_cancel(am2z__lr_batch *b, int reason, int only_pending) {
    int zero = 0;
    am2z__atomic_cas(only_pending ? &b->cancel_pending : &b->cancel, &zero, reason, AM2Z__MO_SEQ_CST,
                     AM2Z__MO_SEQ_CST);
    am2z__mutex_lock(&b->mu);
    am2z__cond_broadcast(&b->cv);
    am2z__mutex_unlock(&b->mu);
}

/* ---- execute_many on the caller's thread alone ---- */
/* A COOPERATIVE execute_many of a processor known to be short (its estimate under
   AM2Z__LR_SHORT_NS) runs on the caller's thread before the batch is published to the
   workers: handing short items to other threads costs more than it saves (measured:
   two threads editing states that share their input ran slower than one, every
   reference count of the shared input bouncing between CPUs). No other thread can
   claim an unpublished item, so an item needs no claim or publication (two compare-
   and-swaps and six fenced stores), no reference to its input, and the processor's
   stats are added once per chunk. Its state byte still says RUNNING / DONE, so
   am2z_ctx_cancelled and nested calls see the item as on the shared path; a cancel or
   stop (b->cancel, cancel_pending) stops the loop and the caller's wait resolves the
   items left. When a chunk's items turn out long, the rest is published as usual. */

#define AM2Z__LR_SOLO_PROBE 4 /* items run alone before a processor's duration is known */

/* A chunk's counts, added to the processor's stats at once. */
typedef struct am2z__lr_solo_acc {
    int64_t ok, failed, sum_ns;
    int lo, hi;                   /* histogram buckets touched, lo > hi when none */
    int64_t hist[AM2Z__LR_HIST];  /* zero outside [lo, hi] */
    am2z__lr_frame frame;         /* the items' frame: the per-item fields are set per item */
    char id[64];                  /* the last item's execution id, "<processor>-<ms>-<tail>" */
    size_t id_tail;               /* where its random tail starts */
    int64_t id_ms;                /* its millisecond; -1 before the first */
} am2z__lr_solo_acc;

static void am2z__lr_solo_flush(am2z__lr_batch *b, am2z__lr_solo_acc *a) {
    am2z__lr_shard *sh;
    am2z__lr_pstat *ps;
    int i;
    if (a->ok + a->failed == 0) return;
    sh = am2z__lr_shard_enter(b->lr);
    ps = am2z__lr_pstat_get(sh, am2z_processor_name(b->proc));
    if (ps) {
        am2z__lr_add(&ps->completed, a->ok);
        am2z__lr_add(&ps->failed, a->failed);
        am2z__lr_add(&ps->sum_ns, a->sum_ns);
        for (i = a->lo; i <= a->hi; i++)
            if (a->hist[i]) am2z__lr_add(&ps->hist[i], a->hist[i]);
    }
    am2z__lr_shard_leave(sh);
    for (i = a->lo; i <= a->hi; i++) a->hist[i] = 0;
    /* the session's counts, remaining and the slot's exact count, as a worker's chunk */
    am2z__atomic_store(&b->slots[b->lr->nworkers].done,
                       am2z__atomic_load(&b->slots[b->lr->nworkers].done, AM2Z__MO_RELAXED) +
                           (size_t)(a->ok + a->failed), AM2Z__MO_RELEASE);
    am2z__lr_batch_flush(b, (size_t)(a->ok + a->failed), a->ok, a->failed);
    a->ok = a->failed = a->sum_ns = 0;
    a->lo = AM2Z__LR_HIST;
    a->hi = -1;
}

/* Runs item k of an unpublished batch (a->frame prepared by am2z__lr_run_solo); *clock:
   its start (the previous item's end), set to its end. */
static void am2z__lr_solo_item(am2z__lr_batch *b, size_t k, int64_t *clock, am2z__lr_solo_acc *a) {
    am2z__lr *lr = b->lr;
    const am2z_state *in = b->inputs[k]; /* the caller's, alive: this is the caller */
    const char *name = am2z_processor_name(b->proc);
    int64_t s = *clock, dl = am2z__lr_deadline(s, b->timeout_ms), end, ms = am2z__lr_wall(lr, s);
    am2z_result r;
    am2z__lr_frame *f = &a->frame;
    const char *id = a->id;
    int bk;
    am2z__atomic_store(&b->items[k], (unsigned char)AM2Z__LR_IT_RUNNING, AM2Z__MO_RELAXED);
    if (ms != a->id_ms) { /* a new millisecond: the whole id, else its random tail alone */
        am2z__execution_id_at(name, ms, a->id);
        a->id_tail = strlen(a->id) - 10;
        a->id_ms = ms;
    } else {
        am2z__execution_id_tail(a->id + a->id_tail);
    }
    if (!in) {
        r = am2z__lr_fail(am2z_error_validation("input", NULL, "a state is required"));
        end = s;
    } else {
        f->index = k;
        f->deadline_ns = dl;
        f->end_ns = s;
        r = am2z__lr_attempt(f, b->proc, in, id, 1, 0, s);
        end = f->end_ns;
    }
    if (dl && end > dl) {
        am2z_result_clear(&r);
        r = am2z__lr_fail(am2z__lr_timeout_error(b->proc, id, b->timeout_ms));
    } else if (AM2Z__LR_LD(&b->cancel)) {
        am2z_result_clear(&r);
        r = am2z__lr_fail(am2z__lr_cancel_error(AM2Z__LR_LD(&b->cancel), b->proc, id, b->session->id));
    }
    *clock = end;
    if (r.state) a->ok++;
    else a->failed++;
    bk = am2z__lr_bucket(end - s);
    a->hist[bk]++;
    if (bk < a->lo) a->lo = bk;
    if (bk > a->hi) a->hi = bk;
    a->sum_ns += end - s;
    am2z__lr_emit_end(lr, name, id, b->session->id, r.error, 1, 0, end - s);
    am2z__lr_item_outcome(lr, &b->outs[k], r, in, 1, s, end, id, b->session->id);
    am2z__atomic_store(&b->items[k], (unsigned char)AM2Z__LR_IT_DONE, AM2Z__MO_RELAXED);
}

/* Runs b's items in chunks until they end, a cancel, or a chunk whose items mostly
   took AM2Z__LR_SHORT_NS or more (the rest is then for the shared path; one slow item,
   e.g. preempted or the first of a cold call, does not decide). With no estimate yet,
   the first chunk is AM2Z__LR_SOLO_PROBE items. */
static void am2z__lr_run_solo(am2z__lr_worker *w, am2z__lr_batch *b, int64_t est) {
    am2z__lr_solo_acc *a = (am2z__lr_solo_acc *)am2z__malloc(sizeof *a);
    size_t k = 0, end, chunk = est < 0 ? AM2Z__LR_SOLO_PROBE : AM2Z__LR_CHUNK, slow;
    int64_t clock, t0, prev, n, fast_ns;
    if (!a) return; /* the shared path runs them */
    memset(a, 0, sizeof *a);
    a->lo = AM2Z__LR_HIST;
    a->hi = -1;
    a->id_ms = -1;
    a->frame.lr = b->lr;
    a->frame.worker = w;
    a->frame.batch = b;
    a->frame.session = b->session;
    a->frame.solo = 1;
    while (k < b->count && !AM2Z__LR_LD(&b->cancel) && !AM2Z__LR_LD(&b->cancel_pending)) {
        end = b->count - k < chunk ? b->count : k + chunk;
        am2z__lr_tick_n(b->lr, 1, 0); /* "running" counts the chunk's item in progress */
        clock = t0 = am2z__lr_now();
        for (slow = 0, fast_ns = 0; k < end && !AM2Z__LR_LD(&b->cancel) && !AM2Z__LR_LD(&b->cancel_pending); k++) {
            prev = clock;
            am2z__lr_solo_item(b, k, &clock, a);
            if (clock - prev >= AM2Z__LR_SHORT_NS) slow++;
            else fast_ns += clock - prev;
        }
        n = a->ok + a->failed;
        am2z__lr_tick_n(b->lr, n - 1, n); /* the chunk's attempts, started and ended */
        /* the estimate follows the same rule: a few items preempted on a busy machine
           must not make the next call publish short items to the workers */
        if (slow * 2 > (size_t)n) am2z__lr_est_put(b->lr, b->proc, (clock - t0) / n);
        else if (n) am2z__lr_est_put(b->lr, b->proc, fast_ns / (n - (int64_t)slow));
        am2z__lr_solo_flush(b, a);
        if (slow * 2 > (size_t)n) break;
        chunk = AM2Z__LR_CHUNK;
    }
    am2z__atomic_store(&b->next, k, AM2Z__MO_RELAXED); /* the workers' start once published */
    am2z__free(a);
}

/* ---- runtime ops ---- */

static am2z__lr *am2z__lr_of(am2z_runtime *rt) { return (am2z__lr *)am2z_runtime_impl(rt); }

/* Creates and queues a top-level job; NULL with *st on failure. With here, a job whose
   caller runs it (am2z__lr_here) is not queued and *here is set. desc (may be NULL):
   the call's own delay, instead of the processor's queue.delay_ms, and its trace. dx:
   the durable execution a resume continues, or NULL. */
static am2z__lr_job *am2z__lr_submit_job(am2z__lr *lr, const char *name, const am2z_state *input, const char *sid,
                                         am2z_status *st, int *here, const am2z_submit_desc *desc, am2z__dx *dx) {
    int64_t delay_ms = desc ? am2z__submit_delay(desc, am2z_now_ms()) : 0;
    am2z_trace *tr = NULL;
    am2z_processor *p;
    am2z__lr_session *s;
    am2z__lr_job *j;
    const am2z_processor_desc *d;
    int stopping = 0;
    if (!name || !input || (sid && !am2z__session_id_ok(sid))) {
        *st = am2z__submit_fail(AM2Z_STATUS_INVALID_ARGUMENT, name, sid);
        return NULL;
    }
    if (!AM2Z__LR_LD(&lr->running)) {
        *st = am2z__submit_fail(AM2Z_STATUS_NOT_STARTED, name, sid);
        return NULL;
    }
    p = am2z_runtime_lookup(lr->rt, name);
    if (!p) {
        *st = am2z__submit_fail(AM2Z_STATUS_NOT_FOUND, name, sid);
        return NULL;
    }
    s = am2z__lr_session_acquire(lr, sid ? sid : "default", &stopping);
    if (!s) {
        am2z_processor_release(p);
        *st = am2z__submit_fail(stopping ? AM2Z_STATUS_CANCELLED : AM2Z_STATUS_NO_MEMORY, name, sid);
        return NULL;
    }
    if (lr->trace || (desc && desc->trace)) tr = am2z_trace_new(desc ? desc->trace_max_spans : 0);
    j = tr || !(lr->trace || (desc && desc->trace)) ? am2z__lr_job_new(lr, 1) : NULL;
    if (!j) {
        am2z_trace_release(tr);
        am2z_processor_release(p);
        am2z__lr_session_release(s);
        *st = am2z__submit_fail(AM2Z_STATUS_NO_MEMORY, name, sid);
        return NULL;
    }
    d = am2z_processor_desc_of(p);
    j->proc = p;
    j->input = am2z_value_retain(input);
    j->session = s;
    j->trace = tr;
    j->srec = am2z__lr_srec_get(s, am2z_processor_name(p));
    j->priority = d->queue.priority > 0 ? d->queue.priority : 0;
    j->timeout_ms = am2z_processor_timeout_ms(p, lr->default_timeout_ms);
    j->created_ns = am2z__lr_now();
    j->word = AM2Z__LR_WORD(1, AM2Z__LR_QUEUED);
    am2z__execution_id_at(name, am2z__lr_wall(lr, j->created_ns), j->exec_id);
    if (dx) { /* the job owns dx once it is returned; on failure the caller keeps it */
        j->dx = dx;
        memcpy(j->exec_id, dx->id, strlen(dx->id) + 1);
    }
    am2z__atomic_add(&s->submitted, 1, AM2Z__MO_RELAXED);
    am2z__atomic_add(&s->running, 1, AM2Z__MO_SEQ_CST);
    am2z__lr_live_add(s, &j->live, 1);
    if (here && (*here = am2z__lr_here(lr, p)) != 0) {
        *st = AM2Z_STATUS_OK;
        return j;
    }
    if (delay_ms <= 0) delay_ms = d->queue.delay_ms;
    *st = am2z__lr_enqueue(lr, j, delay_ms > 0 ? am2z__lr_deadline(0, delay_ms) : 0, 1);
    if (*st != AM2Z_STATUS_OK) {
        am2z__submit_fail(*st, name, sid);
        am2z__atomic_sub(&s->submitted, 1, AM2Z__MO_RELAXED);
        am2z__lr_session_done(s);
        j->dx = NULL;
        am2z__lr_job_release(j);
        return NULL;
    }
    return j;
}

static am2z_error *am2z__lr_submit_error(am2z__lr *lr, const char *name, const char *sid, am2z_status st) {
    char msg[200];
    if (st == AM2Z_STATUS_CANCELLED) {
        snprintf(msg, sizeof msg, "Session %s stopped", sid ? sid : "default");
        return am2z_error_cancelled(msg);
    }
    if (st == AM2Z_STATUS_LIMIT) return am2z_error_resource("queue", (int64_t)lr->capacity, (int64_t)lr->capacity);
    return am2z__runtime_status_error(lr->rt, name, st);
}

/* A durable submit (7d): begins the run (claim, start record), then submits the job
   that owns it. id claimed: a resume whose claim the caller holds. */
static am2z__lr_job *am2z__lr_submit_durable(am2z__lr *lr, const char *name, const am2z_state *input,
                                             const char *sid, const char *id, int claimed, am2z_status *st) {
    char run_name[AM2Z_NAME_MAX + 1], run_sid[AM2Z_SESSION_ID_MAX + 1];
    am2z_state *run_input = NULL;
    am2z__lr_job *j;
    am2z__dx *dx;
    if (!lr->rt->dreg) {
        *st = am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                         "submit '%s': durable needs a store (am2z_local_desc.store)", name ? name : "(null)");
        return NULL;
    }
    if (!claimed && (!name || !input)) {
        *st = am2z__submit_fail(AM2Z_STATUS_INVALID_ARGUMENT, name, sid);
        return NULL;
    }
    dx = am2z__dur_begin(lr->rt->dreg, name, input, sid, id, claimed, &run_input, run_name, run_sid, st);
    if (!dx) return NULL;
    j = am2z__lr_submit_job(lr, run_name, run_input, run_sid, st, NULL, NULL, dx);
    am2z_value_release(run_input);
    if (!j) am2z__dur_abort(dx);
    return j;
}

/* The registry's resume of a claimed id: a detached durable run. */
static am2z_status am2z__lr_resubmit(am2z_runtime *rt, const char *id) {
    am2z_status st = AM2Z_STATUS_OK;
    am2z__lr_job *j = am2z__lr_submit_durable(am2z__lr_of(rt), NULL, NULL, NULL, id, 1, &st);
    if (j) am2z__lr_job_release(j); /* detached: the queue and the worker keep it going */
    return st;
}

static am2z_execution *am2z__lr_op_submit(am2z_runtime *rt, const char *name, const am2z_state *input,
                                          const am2z_submit_desc *desc, am2z_status *st) {
    am2z_status tmp;
    am2z__lr_job *j;
    if (!st) st = &tmp;
    if (desc->execution_id && !desc->durable) {
        *st = am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "submit '%s': execution_id is only for durable",
                         name ? name : "(null)");
        return NULL;
    }
    if (desc->durable && (desc->delay_ms || desc->run_at_ms || desc->trace)) { /* a resume knows neither */
        *st = am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                         "submit '%s': delay_ms / run_at_ms / trace are not supported with durable (local runtime)",
                         name ? name : "(null)");
        return NULL;
    }
    if (desc->durable) j = am2z__lr_submit_durable(am2z__lr_of(rt), name, input, desc->session_id,
                                                   desc->execution_id, 0, st);
    else j = am2z__lr_submit_job(am2z__lr_of(rt), name, input, desc->session_id, st, NULL, desc, NULL);
    return j ? &j->base : NULL;
}

static am2z_status am2z__lr_op_wait(am2z_execution *e, int64_t timeout_ms, am2z_outcome *out) {
    return am2z__lr_job_wait((am2z__lr_job *)e, timeout_ms, out, 0);
}

static void am2z__lr_op_free(am2z_execution *e) {
    am2z__lr_job *j = (am2z__lr_job *)e;
    am2z__lr_job_cancel(j->lr, j, AM2Z__LR_CANCEL_FREED, 0);
    am2z__lr_job_release(j);
}

/* The queue, the worker and the session's live list keep a detached job going; its
   outcome is released with the job. */
static void am2z__lr_op_detach(am2z_execution *e) { am2z__lr_job_release((am2z__lr_job *)e); }

static am2z_outcome am2z__lr_op_execute(am2z_runtime *rt, const char *name, const am2z_state *input,
                                        const char *sid) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z_status st = AM2Z_STATUS_OK;
    int here = 0;
    am2z__lr_job *j = am2z__lr_submit_job(lr, name, input, sid, &st, &here, NULL, NULL);
    am2z_outcome out;
    if (!j) return am2z__outcome_failed(name, sid, input, am2z__lr_submit_error(lr, name, sid, st));
    if (here) { /* cooperative: this thread runs it (retries too, in the wait below) */
        am2z__atomic_inc(&j->refs);
        am2z__lr_helping++;
        am2z__lr_run_job(am2z__lr_me(lr), j, 1);
        am2z__lr_helping--;
    }
    am2z__lr_job_wait(j, -1, &out, 1);
    am2z__lr_job_release(j);
    return out;
}

static am2z_status am2z__lr_op_execute_many(am2z_runtime *rt, const char *name, const am2z_state *const *inputs,
                                            size_t count, const char *sid, am2z_outcome *outs) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z_processor *p;
    const am2z_processor_desc *d;
    am2z__lr_session *s = NULL;
    am2z__lr_batch *b;
    am2z_error *err = NULL;
    am2z_status st = AM2Z_STATUS_OK;
    size_t i;
    int stopping = 0, here, publish = 1;
    int64_t est;
    p = name ? am2z_runtime_lookup(rt, name) : NULL; /* every outs[i] is written below */
    if (!p) st = name ? AM2Z_STATUS_NOT_FOUND : AM2Z_STATUS_INVALID_ARGUMENT;
    else if (sid && !am2z__session_id_ok(sid)) st = AM2Z_STATUS_INVALID_ARGUMENT;
    else if (!AM2Z__LR_LD(&lr->running)) st = AM2Z_STATUS_NOT_STARTED;
    if (st == AM2Z_STATUS_OK) {
        d = am2z_processor_desc_of(p);
        /* retries and queue options need the job machinery: the generic path */
        if (d->retry.max_attempts > 1 || am2z__lr_conc(&d->queue) || d->queue.priority ||
            d->queue.rate_limit_per_minute || d->queue.delay_ms || lr->tenant_gate) {
            am2z_processor_release(p);
            return am2z__runtime_execute_many_generic(rt, name, inputs, count, sid, outs);
        }
        s = am2z__lr_session_acquire(lr, sid ? sid : "default", &stopping);
        if (!s) st = stopping ? AM2Z_STATUS_CANCELLED : AM2Z_STATUS_NO_MEMORY;
    }
    if (st != AM2Z_STATUS_OK) {
        am2z__submit_fail(st, name, sid);
        err = am2z__lr_submit_error(lr, name, sid, st);
        for (i = 0; i < count; i++) outs[i] = am2z__outcome_failed(name, sid, inputs[i], am2z_error_retain(err));
        am2z_error_release(err);
        am2z_processor_release(p);
        return AM2Z_STATUS_OK;
    }
    b = (am2z__lr_batch *)am2z__malloc(sizeof *b);
    if (b) {
        memset(b, 0, sizeof *b);
        b->items = (unsigned char *)am2z__malloc(count);
        b->slots = (am2z__lr_bslot *)am2z__malloc(((size_t)lr->nworkers + 1) * sizeof *b->slots);
        if (!b->items || !b->slots || am2z__mutex_cond_init(&b->mu, &b->cv) != 0) {
            am2z__free(b->items);
            am2z__free(b->slots);
            am2z__free(b);
            b = NULL;
        }
    }
    if (!b) {
        am2z__lr_session_release(s);
        am2z_processor_release(p);
        return am2z__runtime_execute_many_generic(rt, name, inputs, count, sid, outs);
    }
    memset(b->items, AM2Z__LR_IT_PENDING, count);
    memset(b->slots, 0, ((size_t)lr->nworkers + 1) * sizeof *b->slots);
    b->refs = 1;
    b->lr = lr;
    b->proc = p;
    b->session = s;
    b->srec = am2z__lr_srec_get(s, am2z_processor_name(p));
    b->inputs = inputs;
    b->outs = outs;
    b->count = count;
    b->remaining = count;
    b->timeout_ms = am2z_processor_timeout_ms(p, lr->default_timeout_ms);
    am2z__atomic_add(&s->submitted, (int64_t)count, AM2Z__MO_RELAXED);
    am2z__atomic_add(&s->running, 1, AM2Z__MO_SEQ_CST);
    am2z__lr_live_add(s, &b->live, 2);
    here = am2z__lr_here(lr, p);
    est = am2z__lr_est_get(lr, p);
    if (here && est < AM2Z__LR_SHORT_NS) { /* short items (or not known yet): this thread alone */
        am2z__lr_helping++;
        am2z__lr_run_solo(am2z__lr_me(lr), b, est);
        am2z__lr_helping--;
        publish = am2z__atomic_load(&b->next, AM2Z__MO_RELAXED) < count && !AM2Z__LR_LD(&b->cancel) &&
                  !AM2Z__LR_LD(&b->cancel_pending); /* else the wait resolves what a cancel left */
    }
    if (publish) {
        am2z__mutex_lock(&lr->qmu);
        if (AM2Z__LR_LD(&lr->running)) {
            b->qnext = lr->batches;
            lr->batches = b;
            b->linked = 1;
            b->advertised = 1;
            am2z__lr_work(lr, 1);
            /* cooperative: this thread runs items too (its first chunk at once), and wakes
               sleeping workers only for more than a chunk and long enough to pay for it */
            if (!here ||
                (count > AM2Z__LR_CHUNK && (est < 0 || (double)est * (double)count >= 2.0 * AM2Z__LR_WAKE_NS)))
                am2z__lr_wake_locked(lr, lr->nworkers);
        } else {
            b->cancel = AM2Z__LR_CANCEL_STOP;
        }
        am2z__mutex_unlock(&lr->qmu);
        if (here && !AM2Z__LR_LD(&b->cancel)) {
            am2z__atomic_inc(&b->refs);
            am2z__lr_helping++;
            am2z__lr_run_batch(am2z__lr_me(lr), lr->nworkers, b, 0);
            am2z__lr_helping--;
        }
    }
    am2z__lr_batch_wait(b);
    am2z__mutex_lock(&lr->qmu);
    if (b->linked) {
        am2z__lr_batch **pp = &lr->batches;
        while (*pp != b) pp = &(*pp)->qnext;
        *pp = b->qnext;
        b->linked = 0;
        if (b->advertised) am2z__lr_work(lr, -1);
        b->advertised = 0;
    }
    am2z__mutex_unlock(&lr->qmu);
    am2z__lr_live_remove(s, &b->live);
    am2z__lr_session_done(s);
    am2z__lr_batch_release(b);
    return AM2Z_STATUS_OK;
}

/* Cancels s's executions: first pass (only_queued) those not started, second all. */
static void am2z__lr_session_cancel(am2z__lr *lr, am2z__lr_session *s, int reason, int only_queued) {
    static int pass_counter;
    int pass = am2z__atomic_add(&pass_counter, 1, AM2Z__MO_RELAXED);
    am2z__lr_live *got[64];
    int kinds[64];
    size_t n, i;
    do {
        am2z__lr_live *l;
        n = 0;
        am2z__mutex_lock(&s->mu);
        for (l = s->live.next; l != &s->live && n < 64; l = l->next) {
            if (l->pass == pass) continue;
            l->pass = pass;
            kinds[n] = l->kind;
            if (l->kind == 1) {
                /* a job whose last reference is gone waits on s->mu to leave the list */
                am2z__lr_job *j = (am2z__lr_job *)((char *)l - offsetof(am2z__lr_job, live));
                int r = am2z__atomic_load(&j->refs, AM2Z__MO_SEQ_CST);
                do {
                    if (r == 0) break;
                } while (!am2z__atomic_cas(&j->refs, &r, r + 1, AM2Z__MO_SEQ_CST, AM2Z__MO_SEQ_CST));
                if (r == 0) continue;
            } else {
                /* the caller of execute_many unlists its batch before the last release */
                am2z__atomic_inc(&((am2z__lr_batch *)((char *)l - offsetof(am2z__lr_batch, live)))->refs);
            }
            got[n++] = l;
        }
        am2z__mutex_unlock(&s->mu);
        for (i = 0; i < n; i++) {
            if (kinds[i] == 1) {
                am2z__lr_job *j = (am2z__lr_job *)((char *)got[i] - offsetof(am2z__lr_job, live));
                am2z__lr_job_cancel(lr, j, reason, only_queued);
                am2z__lr_job_release(j);
            } else {
                am2z__lr_batch *b = (am2z__lr_batch *)((char *)got[i] - offsetof(am2z__lr_batch, live));
                am2z__lr_batch_cancel(b, reason, only_queued);
                am2z__lr_batch_release(b);
            }
        }
    } while (n == 64);
}

/* How many of s's unfinished executions (s->running counts jobs and execute_many
   calls) the calling thread is running: a stop_session from inside must not wait for
   them. */
static int am2z__lr_own_units(am2z__lr *lr, const am2z__lr_session *s) {
    const void *seen[32];
    const am2z__lr_link *l;
    int n = 0, i, dup;
    for (l = am2z__lr_stack; l; l = l->prev) {
        const am2z__lr_frame *f = l->frame;
        const am2z__lr_job *j = f->job;
        const void *root = f->batch;
        if (f->lr != lr || f->session != s) continue;
        while (j && !j->top) { /* a queued nested call: up to what made it */
            root = j->pbatch;
            j = j->parent;
        }
        if (j) root = j;
        for (i = dup = 0; i < n && !dup; i++) dup = seen[i] == root;
        if (!dup && root && n < 32) seen[n++] = root;
    }
    return n;
}

static void am2z__lr_emit_cleanup(am2z__lr *lr, const char *id) {
    if (am2z__lr_wants(lr, "session:cleanup"))
        am2z__lr_emit(lr, "session:cleanup", am2z_value_set(am2z_value_object(), "sessionId", am2z_value_string(id)));
}

static am2z_status am2z__lr_op_stop_session(am2z_runtime *rt, const char *sid, int64_t grace_ms) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z__lr_session *s;
    int64_t until;
    int unlinked;
    am2z__mutex_lock(&lr->smu);
    s = am2z__lr_session_find_locked(lr, sid, am2z__strhash(sid));
    if (!s || AM2Z__LR_LD(&s->stopping)) {
        am2z__mutex_unlock(&lr->smu);
        return s ? AM2Z_STATUS_OK : AM2Z_STATUS_NOT_FOUND;
    }
    AM2Z__LR_ST(&s->stopping, 1);
    am2z__atomic_inc(&s->refs);
    am2z__mutex_unlock(&lr->smu);
    am2z__lr_session_cancel(lr, s, AM2Z__LR_CANCEL_SESSION, 1);
    until = grace_ms > AM2Z__LR_MAX_TIMEOUT_MS ? INT64_MAX : am2z__lr_now() + grace_ms * 1000000;
    /* called from inside the session: its own executions are cancelled below */
    am2z__lr_session_drain(s, until, am2z__lr_own_units(lr, s));
    am2z__lr_session_cancel(lr, s, AM2Z__LR_CANCEL_SESSION, 0);
    am2z__mutex_lock(&lr->smu);
    unlinked = am2z__lr_session_unlink_locked(lr, s);
    am2z__mutex_unlock(&lr->smu);
    if (unlinked) { /* else a runtime stop took it over meanwhile */
        am2z__lr_session_release(s); /* the table's reference */
        am2z__lr_emit_cleanup(lr, sid);
    }
    am2z__lr_session_release(s);
    return AM2Z_STATUS_OK;
}

/* ---- schedules (section 7e): a table and a timer thread of the runtime's own ---- */

typedef struct am2z__lr_sched {
    am2z__lr *lr;
    am2z__sched_tab *tab;
    am2z__sched_timer *timer;   /* runs while the runtime is started */
    am2z_status last_fail;      /* the timer thread's: a failing submit is logged once */
} am2z__lr_sched;

/* The timer's tick: submits (detached) every slot due at now. */
static int64_t am2z__lr_sched_tick(void *user_data, int64_t now) {
    am2z__lr_sched *ls = (am2z__lr_sched *)user_data;
    am2z__sched_fire f;
    while (am2z__sched_tab_due(ls->tab, now, &f)) {
        am2z_submit_desc d;
        am2z_status st = AM2Z_STATUS_OK;
        am2z_execution *e;
        memset(&d, 0, sizeof d);
        d.session_id = f.session;
        e = am2z_runtime_submit_with(ls->lr->rt, f.processor, f.input, &d, &st);
        if (e) am2z_execution_detach(e);
        else if (st != ls->last_fail) /* once per change: a slot every few ms would flood the log */
            am2z_log_warn(ls->lr->rt->logger, "schedule slot %lld of '%s' not run: %s", (long long)f.slot, f.processor,
                          am2z_status_detail());
        ls->last_fail = st;
        am2z_value_release(f.input);
    }
    return am2z__sched_tab_next(ls->tab);
}

static void am2z__lr_sched_free(am2z__lr_sched *ls) {
    if (!ls) return;
    am2z__sched_timer_free(ls->timer); /* stops it first */
    am2z__sched_tab_free(ls->tab);
    am2z__free(ls);
}

/* lr's schedules, made on first use (two racing upserts: one wins); NULL: no memory. */
static am2z__lr_sched *am2z__lr_sched_get(am2z__lr *lr) {
    am2z__lr_sched *ls = am2z__atomic_load(&lr->sched, AM2Z__MO_ACQUIRE), *none = NULL;
    if (ls) return ls;
    if (!(ls = (am2z__lr_sched *)am2z__malloc(sizeof *ls))) return NULL;
    memset(ls, 0, sizeof *ls);
    ls->lr = lr;
    ls->tab = am2z__sched_tab_new();
    /* 1 s cap: a wall clock set back or forward is noticed within a second */
    ls->timer = am2z__sched_timer_new(am2z__lr_sched_tick, ls, 1000);
    if (!ls->tab || !ls->timer) {
        am2z__lr_sched_free(ls);
        return NULL;
    }
    if (!am2z__atomic_cas(&lr->sched, &none, ls, AM2Z__MO_ACQ_REL, AM2Z__MO_ACQUIRE)) {
        am2z__lr_sched_free(ls);
        return none;
    }
    return ls;
}

/* start and stop (under lr->life): the timer runs while the runtime does. */
static void am2z__lr_sched_resume(am2z__lr *lr) {
    am2z__lr_sched *ls = am2z__atomic_load(&lr->sched, AM2Z__MO_ACQUIRE);
    if (ls && am2z__sched_timer_start(ls->timer) != AM2Z_STATUS_OK)
        am2z_log_error(lr->rt->logger, "local runtime: %s", am2z_status_detail());
}

static void am2z__lr_sched_pause(am2z__lr *lr) {
    am2z__lr_sched *ls = am2z__atomic_load(&lr->sched, AM2Z__MO_ACQUIRE);
    if (ls) am2z__sched_timer_stop(ls->timer);
}

static am2z_status am2z__lr_op_schedule_upsert(am2z_runtime *rt, const am2z_schedule_desc *d) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z__lr_sched *ls;
    am2z_status st;
    if (!am2z_runtime_is_registered(rt, d->processor))
        return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "schedule '%s': processor '%s' is not registered", d->id,
                          d->processor);
    if (!(ls = am2z__lr_sched_get(lr))) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "schedule '%s': out of memory", d->id);
    if ((st = am2z__sched_tab_upsert(ls->tab, d, am2z_now_ms())) != AM2Z_STATUS_OK) return st;
    /* a stopped runtime starts the timer in start */
    if (AM2Z__LR_LD(&lr->running) && (st = am2z__sched_timer_start(ls->timer)) != AM2Z_STATUS_OK) {
        am2z__sched_tab_remove(ls->tab, d->id);
        return am2z__fail(st, AM2Z_NTS, "schedule '%s': cannot start the timer thread", d->id);
    }
    am2z__sched_timer_kick(ls->timer);
    return AM2Z_STATUS_OK;
}

static am2z_status am2z__lr_op_schedule_remove(am2z_runtime *rt, const char *id) {
    am2z__lr_sched *ls = am2z__atomic_load(&am2z__lr_of(rt)->sched, AM2Z__MO_ACQUIRE);
    return am2z__sched_tab_remove(ls ? ls->tab : NULL, id);
}

static am2z_value *am2z__lr_op_schedule_list(am2z_runtime *rt) {
    am2z__lr_sched *ls = am2z__atomic_load(&am2z__lr_of(rt)->sched, AM2Z__MO_ACQUIRE);
    return am2z__sched_tab_list(ls ? ls->tab : NULL);
}

static void *am2z__lr_worker_main(void *arg);

/* Emits "metrics" (the stats snapshot) every metrics_ms until stop. */
static void *am2z__lr_metrics_main(void *arg) {
    am2z__lr *lr = (am2z__lr *)arg;
    int64_t next = am2z__lr_now();
    am2z__mutex_lock(&lr->mmu);
    for (;;) {
        next += lr->metrics_ms * 1000000;
        while (!lr->metrics_quit && am2z__lr_now() < next) am2z__cond_wait_until(&lr->mcv, &lr->mmu, next);
        if (lr->metrics_quit) break;
        if (next < am2z__lr_now()) next = am2z__lr_now(); /* a slow handler: skip, do not burst */
        am2z__mutex_unlock(&lr->mmu);
        if (am2z__lr_wants(lr, "metrics")) am2z__lr_emit(lr, "metrics", am2z_runtime_stats(lr->rt));
        am2z__mutex_lock(&lr->mmu);
    }
    am2z__mutex_unlock(&lr->mmu);
    return NULL;
}

/* Ends the metrics thread (a handler it is running finishes first). */
static void am2z__lr_metrics_stop(am2z__lr *lr) {
    if (!lr->metrics_running) return;
    am2z__mutex_lock(&lr->mmu);
    lr->metrics_quit = 1;
    am2z__cond_broadcast(&lr->mcv);
    am2z__mutex_unlock(&lr->mmu);
    am2z__thread_join(lr->metrics_thread);
    lr->metrics_running = 0;
}

static am2z_status am2z__lr_op_start(am2z_runtime *rt) {
    am2z__lr *lr = am2z__lr_of(rt);
    int i, k;
    am2z__mutex_lock(&lr->life);
    if (lr->started) {
        am2z__mutex_unlock(&lr->life);
        return AM2Z_STATUS_OK;
    }
    for (i = 0; i < lr->nworkers; i++) {
        if (am2z__thread_create(&lr->workers[i].thread, am2z__lr_worker_main, &lr->workers[i]) != 0) {
            am2z__mutex_lock(&lr->qmu);
            AM2Z__LR_ST(&lr->exiting, 1);
            for (k = 0; k < i; k++) am2z__cond_signal(&lr->workers[k].cv);
            am2z__mutex_unlock(&lr->qmu);
            for (k = 0; k < i; k++) am2z__thread_join(lr->workers[k].thread);
            am2z__mutex_lock(&lr->qmu);
            AM2Z__LR_ST(&lr->exiting, 0);
            lr->idle = NULL;
            am2z__mutex_unlock(&lr->qmu);
            am2z__mutex_unlock(&lr->life);
            return AM2Z_STATUS_NO_MEMORY;
        }
    }
    lr->started = 1;
    AM2Z__LR_ST(&lr->running, 1);
    am2z__lr_sched_resume(lr);
    if (lr->metrics_ms > 0) {
        lr->metrics_quit = 0;
        /* no thread for it: the runtime runs, without the event */
        lr->metrics_running = am2z__thread_create(&lr->metrics_thread, am2z__lr_metrics_main, lr) == 0;
        if (!lr->metrics_running) am2z_log_error(lr->rt->logger, "local runtime: no thread for the metrics event");
    }
    am2z__mutex_unlock(&lr->life);
    return AM2Z_STATUS_OK;
}

static am2z_status am2z__lr_op_stop(am2z_runtime *rt, int64_t grace_ms) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z__lr_session *list = NULL, *s;
    am2z__lr_job *drop = NULL, *j;
    am2z__lr_pinfo *pi;
    int64_t until;
    size_t i;
    int k;
    am2z__mutex_lock(&lr->life);
    if (!lr->started) {
        am2z__mutex_unlock(&lr->life);
        return AM2Z_STATUS_OK;
    }
    am2z__mutex_lock(&lr->qmu);
    AM2Z__LR_ST(&lr->running, 0); /* under qmu: no enqueue slips past it */
    am2z__mutex_unlock(&lr->qmu);
    am2z__lr_sched_pause(lr); /* no slot fires while stopped */
    /* every session, retained, on a private list */
    am2z__mutex_lock(&lr->smu);
    for (i = 0; i < lr->stab_cap; i++)
        for (s = lr->stab[i]; s; s = s->next) {
            am2z__atomic_inc(&s->refs);
            s->tmp = list;
            list = s;
        }
    am2z__mutex_unlock(&lr->smu);
    until = grace_ms > AM2Z__LR_MAX_TIMEOUT_MS ? INT64_MAX : am2z__lr_now() + grace_ms * 1000000;
    for (s = list; s; s = s->tmp) am2z__lr_session_drain(s, until, 0);
    for (s = list; s; s = s->tmp) am2z__lr_session_cancel(lr, s, AM2Z__LR_CANCEL_STOP, 0);
    am2z__lr_metrics_stop(lr); /* after the cancel: its handler may be waiting for an execution */
    /* workers leave once their current task returns */
    am2z__mutex_lock(&lr->qmu);
    AM2Z__LR_ST(&lr->exiting, 1);
    for (k = 0; k < lr->nworkers; k++) am2z__cond_signal(&lr->workers[k].cv);
    lr->idle = NULL;
    am2z__mutex_unlock(&lr->qmu);
    for (k = 0; k < lr->nworkers; k++) am2z__thread_join(lr->workers[k].thread);
    /* whatever is still queued was resolved by the cancel above */
    am2z__mutex_lock(&lr->qmu);
    if ((j = am2z__atomic_exchange(&lr->handoff, (am2z__lr_job *)NULL, AM2Z__MO_SEQ_CST)) != NULL) {
        j->has_slot = 0;
        am2z__lr_drop_locked(j, &drop);
    }
    while ((j = am2z__lr_list_pop(&lr->lane_head, &lr->lane_tail)) != NULL) {
        j->has_slot = 0;
        am2z__lr_drop_locked(j, &drop);
    }
    while ((j = am2z__lr_list_pop(&lr->front_head, &lr->front_tail)) != NULL) {
        j->has_slot = 0;
        am2z__lr_drop_locked(j, &drop);
    }
    while ((j = am2z__lr_list_pop(&lr->norm_head, &lr->norm_tail)) != NULL) {
        j->has_slot = 0;
        am2z__lr_drop_locked(j, &drop);
    }
    while ((j = am2z__lr_heap_pop(lr->prio, &lr->prio_n, 0)) != NULL) {
        j->has_slot = 0;
        am2z__lr_drop_locked(j, &drop);
    }
    while ((j = am2z__lr_heap_pop(lr->delayed, &lr->delayed_n, 1)) != NULL) {
        j->has_slot = 0;
        am2z__lr_drop_locked(j, &drop);
    }
    for (pi = lr->pinfos; pi; pi = pi->next) {
        while ((j = am2z__lr_list_pop(&pi->wait_head, &pi->wait_tail)) != NULL) {
            j->has_slot = 0;
            am2z__lr_drop_locked(j, &drop);
        }
        pi->running = 0;
    }
    for (s = list; s; s = s->tmp) {
        while ((j = am2z__lr_list_pop(&s->wait_head, &s->wait_tail)) != NULL) {
            j->has_slot = 0;
            am2z__lr_drop_locked(j, &drop);
        }
        s->slots = 0;
    }
    lr->queued = 0;
    am2z__atomic_store(&lr->work, 0, AM2Z__MO_SEQ_CST);
    am2z__atomic_store(&lr->lane_n, 0, AM2Z__MO_SEQ_CST);
    am2z__lr_next_due_locked(lr);
    AM2Z__LR_ST(&lr->exiting, 0);
    am2z__mutex_unlock(&lr->qmu);
    am2z__lr_release_list(drop);
    /* sessions end with the runtime */
    am2z__mutex_lock(&lr->smu);
    for (s = list; s; s = s->tmp) {
        AM2Z__LR_ST(&s->stopping, 1);
        s->unlinked = am2z__lr_session_unlink_locked(lr, s);
    }
    am2z__mutex_unlock(&lr->smu);
    while (list) {
        s = list;
        list = s->tmp;
        if (s->unlinked) { /* else a stop_session ended it meanwhile */
            am2z__lr_emit_cleanup(lr, s->id);
            am2z__lr_session_release(s); /* the table's */
        }
        am2z__lr_session_release(s);
    }
    lr->started = 0;
    am2z__mutex_unlock(&lr->life);
    return AM2Z_STATUS_OK;
}

/* ---- workers ---- */

static void *am2z__lr_worker_main(void *arg) {
    am2z__lr_worker *w = (am2z__lr_worker *)arg;
    am2z__lr *lr = w->lr;
    am2z__lr_self = w;
    for (;;) {
        am2z__lr_job *j = NULL, *drop = NULL;
        am2z__lr_batch *b = NULL;
        int got = 0, sweep = 0, leave = 0;
        int64_t due = AM2Z__LR_LD(&lr->next_due);
        /* Nothing queued (the usual state between two handoffs): straight to the spin,
           which checks the same things and takes the lock before sleeping. */
        if (AM2Z__LR_LD(&lr->work) || AM2Z__LR_LD(&lr->handoff) || AM2Z__LR_LD(&lr->exiting) ||
            (due && due <= am2z__lr_now())) {
            am2z__mutex_lock(&lr->qmu);
            got = am2z__lr_take_locked(lr, am2z__lr_now(), &j, &b, &sweep, &drop);
            if (got) am2z__lr_took_locked(lr, w);
            else leave = lr->exiting;
            am2z__mutex_unlock(&lr->qmu);
        }
        am2z__lr_release_list(drop);
        drop = NULL;
        if (got) {
            if (b) am2z__lr_run_batch(w, w->index, b, sweep);
            else if (j->top) am2z__lr_run_job(w, j, 0);
            else am2z__lr_run_kid(w, j);
            continue;
        }
        if (leave) {
            if (w->spinning) {
                w->spinning = 0;
                AM2Z__LR_ST(&lr->spinners, 0);
            }
            break;
        }
        /* one idle worker spins for new work (the last one to finish, if it could);
           the others sleep */
        {
            int zero = 0, found = 0;
            if (lr->spin_ns > 0 &&
                (w->spinning ||
                 am2z__atomic_cas(&lr->spinners, &zero, 1, AM2Z__MO_SEQ_CST, AM2Z__MO_SEQ_CST))) {
                int64_t t0 = am2z__lr_now(), now = t0, due;
                int64_t budget = w->long_spin ? 10 * lr->spin_ns : lr->spin_ns;
                w->spinning = 1;
                w->long_spin = 0;
                unsigned turns = 0;
                while (now - t0 < budget) {
                    if (AM2Z__LR_LD(&lr->handoff) &&
                        (j = am2z__atomic_exchange(&lr->handoff, (am2z__lr_job *)NULL, AM2Z__MO_SEQ_CST)) != NULL)
                        break; /* handed straight to us: no lock */
                    if (AM2Z__LR_LD(&lr->work) > 0) {
                        found = 1;
                        break;
                    }
                    due = AM2Z__LR_LD(&lr->next_due);
                    if (due && due <= now) {
                        found = 1;
                        break;
                    }
                    /* after 50 us, let whatever shares this CPU run now and then: it may be
                       the very caller whose next submission we wait for */
                    if (now - t0 > 50000 && (++turns & 63) == 0) sched_yield();
                    else am2z__lr_relax();
                    now = am2z__lr_now();
                }
                if (!found) {
                    w->spinning = 0;
                    AM2Z__LR_ST(&lr->spinners, 0);
                }
            }
            if (j) {
                w->spinning = 0; /* busy now: the next submission must not count on us */
                AM2Z__LR_ST(&lr->spinners, 0);
                if (AM2Z__LR_LD(&lr->work) > 0) { /* more waiting: a sleeper takes over */
                    am2z__mutex_lock(&lr->qmu);
                    am2z__lr_wake_locked(lr, 1);
                    am2z__mutex_unlock(&lr->qmu);
                }
                am2z__lr_run_job(w, j, 0);
                continue;
            }
            if (found) continue; /* still the spinner until it takes the work */
        }
        am2z__mutex_lock(&lr->qmu);
        got = am2z__lr_take_locked(lr, am2z__lr_now(), &j, &b, &sweep, &drop);
        if (got) am2z__lr_took_locked(lr, w);
        if (!got && !lr->exiting) {
            int64_t due = lr->delayed_n ? AM2Z__LR_LD(&lr->delayed[0]->due_ns) : INT64_MAX;
            w->sleeping = 1;
            w->idle_next = lr->idle;
            lr->idle = w;
            am2z__cond_wait_until(&w->cv, &lr->qmu, due);
            if (w->sleeping) { /* timed out or spurious: leave the idle stack */
                am2z__lr_worker **pp = &lr->idle;
                while (*pp && *pp != w) pp = &(*pp)->idle_next;
                if (*pp) *pp = w->idle_next;
                w->sleeping = 0;
            }
        }
        am2z__mutex_unlock(&lr->qmu);
        am2z__lr_release_list(drop);
        if (got) {
            if (b) am2z__lr_run_batch(w, w->index, b, sweep);
            else if (j->top) am2z__lr_run_job(w, j, 0);
            else am2z__lr_run_kid(w, j);
        }
    }
    am2z__lr_self = NULL;
    return NULL;
}

/* ---- stats ---- */

typedef struct am2z__lr_merged {
    const char *name;
    int64_t completed, failed, retried;
    int64_t hist[AM2Z__LR_HIST];
    int64_t sum_ns;
} am2z__lr_merged;

static double am2z__lr_percentile(const int64_t *hist, int64_t total, double q) {
    int64_t want = (int64_t)(q * (double)total + 0.999999), seen = 0;
    int b;
    if (total <= 0) return 0;
    if (want < 1) want = 1;
    for (b = 0; b < AM2Z__LR_HIST; b++) {
        seen += hist[b];
        if (seen >= want) return am2z__lr_bucket_ns(b) / 1e6;
    }
    return am2z__lr_bucket_ns(AM2Z__LR_HIST - 1) / 1e6;
}

/* Adds shard sh into the merged list (records are never freed while lr lives). */
static int am2z__lr_merge_shard(am2z__lr_shard *sh, am2z__lr_merged **m, size_t *n, size_t *cap, int64_t *running) {
    size_t i, k;
    int b;
    am2z__mutex_lock(&sh->mu);
    *running += am2z__atomic_load(&sh->started, AM2Z__MO_RELAXED) - am2z__atomic_load(&sh->ended, AM2Z__MO_RELAXED);
    for (i = 0; i < sh->cap; i++) {
        am2z__lr_pstat *ps = sh->tab[i];
        if (!ps) continue;
        for (k = 0; k < *n; k++)
            if (strcmp((*m)[k].name, ps->name) == 0) break;
        if (k == *n) {
            if (*n == *cap) {
                size_t c = *cap ? *cap * 2 : 8;
                am2z__lr_merged *x = (am2z__lr_merged *)am2z__realloc(*m, c * sizeof *x);
                if (!x) {
                    am2z__mutex_unlock(&sh->mu);
                    return 0;
                }
                *m = x;
                *cap = c;
            }
            memset(&(*m)[k], 0, sizeof **m);
            (*m)[k].name = ps->name;
            (*n)++;
        }
        (*m)[k].completed += am2z__atomic_load(&ps->completed, AM2Z__MO_RELAXED);
        (*m)[k].failed += am2z__atomic_load(&ps->failed, AM2Z__MO_RELAXED);
        (*m)[k].retried += am2z__atomic_load(&ps->retried, AM2Z__MO_RELAXED);
        for (b = 0; b < AM2Z__LR_HIST; b++) (*m)[k].hist[b] += am2z__atomic_load(&ps->hist[b], AM2Z__MO_RELAXED);
        (*m)[k].sum_ns += am2z__atomic_load(&ps->sum_ns, AM2Z__MO_RELAXED);
    }
    am2z__mutex_unlock(&sh->mu);
    return 1;
}

/* {count, sumMs, buckets: [[leMs, n], ...]} of a merged record: n counts latencies
   under leMs, at every fourth power of two of nanoseconds (whole log buckets, so the
   counts are exact) from 2^10 ns (~1 us) to 2^36 ns (~69 s); count (every latency, what
   a histogram's +Inf bucket holds) comes from the same read, so the counts agree. */
static am2z_value *am2z__lr_latency_json(const am2z__lr_merged *m) {
    am2z_value *l = am2z_value_object(), *a = am2z_value_array();
    int64_t below = 0;
    int b = 0, k;
    for (k = 10; k <= 36; k += 2) {
        for (; b < 4 * k && b < AM2Z__LR_HIST; b++) below += m->hist[b];
        a = am2z_value_append(a, "", am2z_value_append(am2z_value_append(am2z_value_array(), "",
                              am2z_value_double((double)((int64_t)1 << k) / 1e6)), "", am2z_value_int(below)));
    }
    for (; b < AM2Z__LR_HIST; b++) below += m->hist[b];
    l = am2z_value_set(l, "count", am2z_value_int(below));
    l = am2z_value_set(l, "sumMs", am2z_value_double((double)m->sum_ns / 1e6));
    return am2z_value_set(l, "buckets", a);
}

static am2z_value *am2z__lr_op_stats(am2z_runtime *rt) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z__lr_merged *m = NULL;
    size_t n = 0, cap = 0, i;
    int64_t running = 0, completed = 0, failed = 0, retried = 0, queued;
    am2z_value *v, *procs;
    int k, ok = 1;
    for (k = 0; ok && k < lr->nworkers; k++) ok = am2z__lr_merge_shard(&lr->workers[k].shard, &m, &n, &cap, &running);
    if (ok) ok = am2z__lr_merge_shard(&lr->ext, &m, &n, &cap, &running);
    if (!ok) {
        am2z__free(m);
        return NULL;
    }
    procs = am2z_value_object();
    for (i = 0; i < n; i++) {
        int64_t total = m[i].completed + m[i].failed;
        am2z_value *p = am2z_value_set(am2z_value_object(), "completed", am2z_value_int(m[i].completed));
        p = am2z_value_set(p, "failed", am2z_value_int(m[i].failed));
        p = am2z_value_set(p, "retried", am2z_value_int(m[i].retried));
        p = am2z_value_set(p, "p50Ms", am2z_value_double(am2z__lr_percentile(m[i].hist, total, 0.5)));
        p = am2z_value_set(p, "p99Ms", am2z_value_double(am2z__lr_percentile(m[i].hist, total, 0.99)));
        p = am2z_value_set(p, "latency", am2z__lr_latency_json(&m[i]));
        procs = am2z_value_set_key(procs, m[i].name, strlen(m[i].name), p);
        completed += m[i].completed;
        failed += m[i].failed;
        retried += m[i].retried;
    }
    am2z__free(m);
    am2z__mutex_lock(&lr->qmu);
    queued = (int64_t)lr->queued;
    am2z__mutex_unlock(&lr->qmu);
    v = am2z_value_set(am2z_value_object(), "registeredProcessors", am2z_runtime_list(rt));
    v = am2z_value_set(v, "running", am2z_value_int(running));
    v = am2z_value_set(v, "completed", am2z_value_int(completed));
    v = am2z_value_set(v, "failed", am2z_value_int(failed));
    v = am2z_value_set(v, "retried", am2z_value_int(retried));
    v = am2z_value_set(v, "queued", am2z_value_int(queued));
    v = am2z_value_set(v, "workers", am2z_value_int(lr->nworkers));
    v = am2z_value_set(v, "uptimeMs", am2z_value_int((am2z__lr_now() - lr->created_ns) / 1000000));
    return am2z_value_set(v, "processors", procs);
}

/* {<name>: {completed, failed, retried}} of session s (twin records added up). */
static am2z_value *am2z__lr_srec_json(am2z__lr_session *s) {
    am2z_value *procs = am2z_value_object(), *p;
    am2z__lr_srec *r, *t, *head;
    int64_t c, f, y;
    am2z__mutex_lock(&s->mu);
    head = s->srecs; /* records are never removed: walk them after the lock */
    am2z__mutex_unlock(&s->mu);
    for (r = head; r && procs; r = r->next) {
        for (t = head; t != r && strcmp(t->name, r->name) != 0; t = t->next) {
        }
        if (t != r) continue; /* a twin of an earlier record: added there */
        c = f = y = 0;
        for (t = r; t; t = t->next) {
            if (t != r && strcmp(t->name, r->name) != 0) continue;
            c += am2z__atomic_load(&t->completed, AM2Z__MO_RELAXED);
            f += am2z__atomic_load(&t->failed, AM2Z__MO_RELAXED);
            y += am2z__atomic_load(&t->retried, AM2Z__MO_RELAXED);
        }
        p = am2z_value_set(am2z_value_object(), "completed", am2z_value_int(c));
        p = am2z_value_set(p, "failed", am2z_value_int(f));
        p = am2z_value_set(p, "retried", am2z_value_int(y));
        procs = am2z_value_set_key(procs, r->name, strlen(r->name), p);
    }
    return procs;
}

static am2z_value *am2z__lr_op_session_stats(am2z_runtime *rt, const char *sid) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z__lr_session *s;
    am2z_value *v;
    am2z__mutex_lock(&lr->smu);
    s = am2z__lr_session_find_locked(lr, sid, am2z__strhash(sid));
    if (s) am2z__atomic_inc(&s->refs);
    am2z__mutex_unlock(&lr->smu);
    if (!s) return NULL;
    v = am2z_value_set(am2z_value_object(), "sessionId", am2z_value_string(s->id));
    v = am2z_value_set(v, "createdAt", am2z_value_int(s->created_ms));
    v = am2z_value_set(v, "running", am2z_value_int(AM2Z__LR_LD(&s->running)));
    v = am2z_value_set(v, "submitted", am2z_value_int(AM2Z__LR_LD(&s->submitted)));
    v = am2z_value_set(v, "completed", am2z_value_int(AM2Z__LR_LD(&s->completed)));
    v = am2z_value_set(v, "failed", am2z_value_int(AM2Z__LR_LD(&s->failed)));
    v = am2z_value_set(v, "cancelled", am2z_value_int(AM2Z__LR_LD(&s->cancelled)));
    v = am2z_value_set(v, "stopping", am2z_value_bool(AM2Z__LR_LD(&s->stopping)));
    v = am2z_value_set(v, "processors", am2z__lr_srec_json(s));
    am2z__lr_session_release(s);
    return v;
}

static am2z_value *am2z__lr_op_active_sessions(am2z_runtime *rt) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z_value *a = am2z_value_array();
    am2z__lr_session *s;
    size_t i;
    am2z__mutex_lock(&lr->smu);
    for (i = 0; a && i < lr->stab_cap; i++)
        for (s = lr->stab[i]; a && s; s = s->next)
            if (!AM2Z__LR_LD(&s->stopping)) a = am2z_value_append(a, "", am2z_value_string(s->id));
    am2z__mutex_unlock(&lr->smu);
    return a;
}

/* A registered processor shows in stats at once, with zeros. */
static void am2z__lr_op_registered(am2z_runtime *rt, am2z_processor *p) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z__mutex_lock(&lr->ext.mu);
    am2z__lr_pstat_get(&lr->ext, am2z_processor_name(p));
    am2z__mutex_unlock(&lr->ext.mu);
}

static void am2z__lr_op_unregistered(am2z_runtime *rt, const char *name) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z__lr_pinfo *pi, *next;
    am2z__mutex_lock(&lr->qmu);
    for (pi = lr->pinfos; pi; pi = next) {
        next = pi->next;
        if (pi->listed && strcmp(am2z_processor_name(pi->proc), name) == 0) {
            pi->listed = 0;
            am2z__lr_pinfo_release_locked(lr, pi);
        }
    }
    am2z__mutex_unlock(&lr->qmu);
}

/* Frees lr after its workers have stopped (or never started). */
static void am2z__lr_free(am2z__lr *lr, int workers_ready) {
    am2z__lr_session *s;
    am2z__lr_pinfo *pi;
    size_t i;
    int k;
    am2z__lr_job_release(lr->handoff); /* a submit racing with stop may have left one */
    for (i = 0; i < lr->stab_cap; i++)
        while ((s = lr->stab[i]) != NULL) {
            lr->stab[i] = s->next;
            am2z__lr_session_release(s);
        }
    am2z__free(lr->stab);
    while ((pi = lr->pinfos) != NULL) {
        lr->pinfos = pi->next;
        am2z_processor_release(pi->proc);
        am2z__free(pi);
    }
    am2z__free(lr->prio);
    am2z__free(lr->delayed);
    am2z__lr_sched_free(lr->sched);
    for (k = 0; k < workers_ready; k++) {
        am2z__lr_worker *w = &lr->workers[k];
        am2z__lr_shard_free(&w->shard);
        am2z__cond_destroy(&w->cv);
        am2z__cond_destroy(&w->pcv);
        am2z__mutex_destroy(&w->pmu);
    }
    am2z__free(lr->workers);
    am2z__lr_shard_free(&lr->ext);
    am2z__mutex_destroy(&lr->life);
    am2z__mutex_destroy(&lr->qmu);
    am2z__mutex_destroy(&lr->smu);
    am2z__mutex_destroy(&lr->mmu);
    am2z__cond_destroy(&lr->mcv);
    am2z__free(lr);
}

static void am2z__lr_op_destroy(am2z_runtime *rt) {
    am2z__lr *lr = am2z__lr_of(rt);
    am2z__dreg_free(rt->dreg);
    rt->dreg = NULL;
    am2z__lr_free(lr, lr->nworkers);
}

static const am2z_runtime_ops am2z__lr_ops = {
    am2z__lr_op_start,         am2z__lr_op_stop,          am2z__lr_op_submit,
    am2z__lr_op_wait,          am2z__lr_op_free,          am2z__lr_op_detach,        am2z__lr_op_execute,
    am2z__lr_op_execute_many,  am2z__lr_op_stop_session,  am2z__lr_op_stats,
    am2z__lr_op_session_stats, am2z__lr_op_active_sessions, am2z__lr_op_registered,
    am2z__lr_op_unregistered,  am2z__lr_op_destroy,       am2z__lr_op_schedule_upsert,
    am2z__lr_op_schedule_remove, am2z__lr_op_schedule_list};

static int am2z__lr_worker_init(am2z__lr *lr, int k) {
    am2z__lr_worker *w = &lr->workers[k];
    w->lr = lr;
    w->index = k;
    if (am2z__mutex_cond_init(&w->shard.mu, &w->cv) != 0) return 0;
    if (am2z__mutex_cond_init(&w->pmu, &w->pcv) != 0) {
        am2z__cond_destroy(&w->cv);
        am2z__mutex_destroy(&w->shard.mu);
        return 0;
    }
    return 1;
}

AM2Z_API am2z_runtime *am2z_local_runtime_new(const am2z_local_desc *desc, am2z_status *status) {
    am2z_local_desc d;
    am2z_runtime_settings set;
    am2z__lr *lr;
    am2z_runtime *rt;
    int k, locks = 0;
    if (desc) d = *desc;
    else memset(&d, 0, sizeof d);
    if (d.workers < 0 || d.workers > AM2Z_LOCAL_MAX_WORKERS)
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                           "local runtime: workers %d is outside 0..AM2Z_LOCAL_MAX_WORKERS (%d)", d.workers,
                           AM2Z_LOCAL_MAX_WORKERS));
    if (d.spin_ns < AM2Z_LOCAL_SPIN_OFF || d.spin_ns > AM2Z_LOCAL_MAX_SPIN_NS)
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                           "local runtime: spin_ns is outside -1..AM2Z_LOCAL_MAX_SPIN_NS"));
    if (d.deadlines < AM2Z_DEADLINES_DEFAULT || d.deadlines > AM2Z_DEADLINES_COOPERATIVE)
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                           "local runtime: deadlines is not an am2z_deadlines value"));
    if (d.default_timeout_ms < 0 || d.max_call_depth < 0 || d.metrics_interval_ms < 0)
        return (am2z_runtime *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "local runtime: negative default_timeout_ms, max_call_depth or "
                                                   "metrics_interval_ms"));
    if (d.session_concurrency < 0 || d.session_concurrency > AM2Z_MAX_CONCURRENCY)
        return (am2z_runtime *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "local runtime: session_concurrency %d is outside "
                                                   "0..AM2Z_MAX_CONCURRENCY (%d)", d.session_concurrency,
                                                   AM2Z_MAX_CONCURRENCY));
    if (am2z__rate_bad(&d.session_rate))
        return (am2z_runtime *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                   "local runtime: session_rate.%s", am2z__rate_bad(&d.session_rate)));
    if (!d.workers) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        d.workers = n < 1 ? 1 : n > AM2Z_LOCAL_MAX_WORKERS ? AM2Z_LOCAL_MAX_WORKERS : (int)n;
    }
    lr = (am2z__lr *)am2z__malloc(sizeof *lr);
    if (!lr) return (am2z_runtime *)am2z__put_status(status,
            am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "local runtime: out of memory"));
    memset(lr, 0, sizeof *lr);
    lr->nworkers = d.workers;
    lr->default_timeout_ms = d.default_timeout_ms ? d.default_timeout_ms : 60000;
    lr->max_depth = d.max_call_depth ? d.max_call_depth : AM2Z_MAX_CALL_DEPTH;
    lr->capacity = d.queue_capacity ? d.queue_capacity : 65536;
    lr->metrics_ms = d.metrics_interval_ms > AM2Z__LR_MAX_TIMEOUT_MS ? AM2Z__LR_MAX_TIMEOUT_MS : d.metrics_interval_ms;
    lr->spin_ns = d.spin_ns == AM2Z_LOCAL_SPIN_OFF ? 0 : d.spin_ns ? d.spin_ns : (int64_t)AM2Z_LOCAL_SPIN_NS;
    lr->deadlines = d.deadlines ? (int)d.deadlines : (int)AM2Z_DEADLINES_EXACT;
    lr->session_limit = d.session_concurrency;
    lr->session_rate = d.session_rate;
    lr->tenant_gate = d.session_concurrency > 0 || d.session_rate.max > 0;
    lr->trace = d.trace;
    lr->created_ns = am2z__lr_now();
    lr->wall_offset_ms = am2z_now_ms() - lr->created_ns / 1000000;
    lr->ext.shared = 1;
    if (am2z__mutex_init(&lr->life) == 0) locks++;
    if (locks == 1 && am2z__mutex_init(&lr->qmu) == 0) locks++;
    if (locks == 2 && am2z__mutex_init(&lr->smu) == 0) locks++;
    if (locks == 3 && am2z__mutex_init(&lr->ext.mu) == 0) locks++;
    if (locks == 4 && am2z__mutex_init(&lr->mmu) == 0) locks++;
    if (locks == 5 && am2z__cond_init(&lr->mcv) == 0) locks++;
    lr->workers = locks == 6 ? (am2z__lr_worker *)am2z__malloc((size_t)d.workers * sizeof *lr->workers) : NULL;
    if (!lr->workers) {
        if (locks > 5) am2z__cond_destroy(&lr->mcv);
        if (locks > 4) am2z__mutex_destroy(&lr->mmu);
        if (locks > 3) am2z__mutex_destroy(&lr->ext.mu);
        if (locks > 2) am2z__mutex_destroy(&lr->smu);
        if (locks > 1) am2z__mutex_destroy(&lr->qmu);
        if (locks > 0) am2z__mutex_destroy(&lr->life);
        am2z__free(lr);
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "local runtime: out of memory"));
    }
    memset(lr->workers, 0, (size_t)d.workers * sizeof *lr->workers);
    for (k = 0; k < d.workers; k++)
        if (!am2z__lr_worker_init(lr, k)) break;
    if (k < d.workers) {
        am2z__lr_free(lr, k);
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "local runtime: out of locks"));
    }
    memset(&set, 0, sizeof set);
    set.kind = "local";
    set.workers = lr->nworkers;
    set.default_timeout_ms = lr->default_timeout_ms;
    set.max_call_depth = lr->max_depth;
    set.queue_capacity = lr->capacity;
    set.metrics_interval_ms = lr->metrics_ms;
    set.spin_ns = lr->spin_ns;
    set.deadlines = (am2z_deadlines)lr->deadlines;
    rt = am2z_runtime_new(&am2z__lr_ops, lr, d.logger, &set);
    if (!rt) {
        am2z__lr_free(lr, d.workers);
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "local runtime: out of memory"));
    }
    lr->rt = rt;
    if (d.store && !(rt->dreg = am2z__dreg_new(rt, d.store, am2z__lr_resubmit))) {
        am2z_runtime_free(rt);
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "local runtime: out of memory"));
    }
    if (am2z_runtime_start(rt) != AM2Z_STATUS_OK) {
        am2z_runtime_free(rt);
        return (am2z_runtime *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS,
                                                   "local runtime: cannot start %d worker threads", d.workers));
    }
    if (status) *status = AM2Z_STATUS_OK;
    return rt;
}
#endif /* AM2Z_NO_THREADS */

/* ==== 9. inline runtime =============================================================== */
/* Design: a top-level execution is a record (the handle) run on the stack of whoever
   waits for it; a nested call is a plain recursive call on the same stack. Nothing is
   shared with another thread, so nothing here is atomic or locked. One clock serves
   everything: am2z__il_ns is the virtual time or the monotonic clock. */

enum { AM2Z__IL_PENDING = 0, AM2Z__IL_RUNNING, AM2Z__IL_DONE };
enum { AM2Z__IL_CANCEL_NONE = 0, AM2Z__IL_CANCEL_SESSION, AM2Z__IL_CANCEL_STOP, AM2Z__IL_CANCEL_FREED };

typedef struct am2z__il_session {
    struct am2z__il_session *next;  /* the runtime's active sessions, in creation order */
    int refs;                       /* the active list's, and one per execution */
    int64_t created_at, submitted, completed, failed, cancelled, running;
    char id[AM2Z_SESSION_ID_MAX + 1];
} am2z__il_session;

/* Counters and the rate limit of one processor name. */
typedef struct am2z__il_pstat {
    struct am2z__il_pstat *next;
    char *name;
    int64_t completed, failed, retried;
    int64_t next_start_ns;          /* rate limit: the earliest next start */
} am2z__il_pstat;

typedef struct am2z__il am2z__il;

typedef struct am2z__il_stub {
    struct am2z__il_stub *next;
    am2z__il *il;
    am2z_processor *proc;           /* named like its target; fn am2z__il_stub_fn */
    am2z_value *state;              /* what success merges, without "metadata"; may be NULL */
    am2z_error *error;
    int fail_times, failed;
    int64_t duration_ms;
} am2z__il_stub;

typedef struct am2z__il_exec {
    am2z_execution head;            /* first member: the generic am2z_execution_* reach it */
    am2z__il *il;
    struct am2z__il_exec *prev, *next; /* PENDING: the pending list; RUNNING: next is the
                                          execution this one runs inside of */
    am2z_processor *proc;
    am2z_state *input;
    am2z__il_session *session;
    int phase, cancel, detached, freed;
    am2z_outcome out;               /* ids at once; the rest when DONE */
    int64_t not_before_ns;          /* am2z_submit_desc delay_ms / run_at_ms: the clock first
                                       passes this (0: none) */
    am2z__dx *dx;                   /* a durable run (7d), owned; NULL: not durable */
} am2z__il_exec;

struct am2z__il {
    am2z_runtime *rt;
    int64_t default_timeout_ms;
    int max_depth, record, virtual_clock, stopped, calls_lost;
    int64_t vnow_ns;                /* the virtual clock (ns since the epoch) */
    int64_t wall_offset_ms;         /* real clock: epoch ms minus monotonic ms */
    int64_t created_ns;
    uint64_t ids;                   /* virtual clock: execution ids made so far */
    int64_t attempts_running, queued;
    am2z__il_exec *pending_head, *pending_tail, *running;
    am2z__il_session *sessions;
    am2z__il_pstat *pstats;
    am2z__il_stub *stubs;
    am2z_value *calls;              /* recorded attempts (record != 0) */
    am2z__sched_tab *sched;         /* schedules (7e), made at the first upsert */
    int firing;                     /* am2z_inline_advance is running due slots */
    int trace;                      /* desc.trace: trace every execution */
    const void *owner;              /* the creating thread's &am2z__il_mark (7d resumes) */
};

/* Its address differs per thread: the owner check of the resumes a signal asks for. */
static AM2Z__TLS char am2z__il_mark;

/* ---- clock and ids ---- */

static int64_t am2z__il_ns(const am2z__il *il) { return il->virtual_clock ? il->vnow_ns : am2z_monotonic_ns(); }

static int64_t am2z__il_wall(const am2z__il *il, int64_t ns) {
    return il->virtual_clock ? ns / 1000000 : il->wall_offset_ms + ns / 1000000;
}

/* start_ns + ms, or 0 (none) for ms <= 0 or past the clock's range. */
static int64_t am2z__il_after(int64_t start_ns, int64_t ms) {
    if (ms <= 0 || ms > (INT64_MAX - start_ns) / 1000000) return 0;
    return start_ns + ms * 1000000;
}

/* Lets time pass until t_ns: the virtual clock jumps there, the real one is slept. */
static void am2z__il_pass(am2z__il *il, int64_t t_ns) {
    int64_t now = am2z__il_ns(il);
    struct timespec ts;
    if (t_ns <= now) return;
    if (il->virtual_clock) {
        il->vnow_ns = t_ns;
        return;
    }
    ts.tv_sec = (time_t)((t_ns - now) / 1000000000);
    ts.tv_nsec = (long)((t_ns - now) % 1000000000);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Waits until t_ns for a call of x whose caller has deadline_ns (0: none). 0 when x is
   cancelled, or the deadline comes first (time then stops at the deadline). */
static int am2z__il_wait_until(am2z__il *il, const am2z__il_exec *x, int64_t deadline_ns, int64_t t_ns) {
    int in_time = !deadline_ns || t_ns < deadline_ns;
    if (x->cancel) return 0;
    am2z__il_pass(il, in_time ? t_ns : deadline_ns);
    return in_time;
}

/* Random ids on the real clock; "<name>-<virtual ms>-<n>" on the virtual one, so a
   rerun of a test gives the same ids. */
static void am2z__il_new_id(am2z__il *il, const char *name, char buf[AM2Z_EXECUTION_ID_SIZE]) {
    char tail[48];
    size_t nlen = strlen(name), tlen;
    int64_t now_ms = am2z__il_wall(il, am2z__il_ns(il));
    if (!il->virtual_clock) {
        am2z__execution_id_at(name, now_ms, buf);
        return;
    }
    snprintf(tail, sizeof tail, "-%lld-%llu", (long long)now_ms, (unsigned long long)++il->ids);
    tlen = strlen(tail);
    if (nlen > AM2Z_EXECUTION_ID_SIZE - 1 - tlen) nlen = AM2Z_EXECUTION_ID_SIZE - 1 - tlen;
    memcpy(buf, name, nlen);
    memcpy(buf + nlen, tail, tlen + 1);
}

/* ---- small helpers ---- */

static am2z_value *am2z__il_str(const char *s) { return s ? am2z_value_string(s) : am2z_value_null(); }

/* Emits event with data (consumed; NULL: nothing to emit). */
static void am2z__il_emit(am2z__il *il, const char *event, am2z_value *data) {
    if (data) am2z_runtime_emit(il->rt, event, data);
    am2z_value_release(data);
}

static am2z_value *am2z__il_event(const char *processor, const char *exec_id, const char *session_id) {
    am2z_value *d = am2z_value_set(am2z_value_object(), "processorName", am2z__il_str(processor));
    d = am2z_value_set(d, "executionId", am2z__il_str(exec_id));
    return am2z_value_set(d, "sessionId", am2z__il_str(session_id));
}

static am2z_error *am2z__il_cancel_error(const am2z__il_exec *x, const char *name, const char *exec_id) {
    char msg[AM2Z_SESSION_ID_MAX + 32];
    am2z_error *e;
    if (x->cancel == AM2Z__IL_CANCEL_SESSION) snprintf(msg, sizeof msg, "Session %s stopped", x->session->id);
    else if (x->cancel == AM2Z__IL_CANCEL_STOP) snprintf(msg, sizeof msg, "Runtime stopped");
    else snprintf(msg, sizeof msg, "Execution handle freed before it finished");
    e = am2z_error_cancelled(msg);
    return e ? am2z_error_with_location(e, name, exec_id) : NULL;
}

static am2z_error *am2z__il_timeout_error(const char *name, const char *exec_id, int64_t timeout_ms) {
    am2z_error *e = am2z_error_timeout(name, timeout_ms);
    return e ? am2z_error_with_location(e, name, exec_id) : NULL;
}

/* The counters of processor name, made on first use; NULL when out of memory. */
static am2z__il_pstat *am2z__il_pstat_get(am2z__il *il, const char *name) {
    am2z__il_pstat *ps;
    for (ps = il->pstats; ps; ps = ps->next)
        if (strcmp(ps->name, name) == 0) return ps;
    ps = (am2z__il_pstat *)am2z__malloc(sizeof *ps);
    if (!ps) return NULL;
    memset(ps, 0, sizeof *ps);
    ps->name = am2z__strdup(name);
    if (!ps->name) {
        am2z__free(ps);
        return NULL;
    }
    ps->next = il->pstats;
    il->pstats = ps;
    return ps;
}

static am2z__il_stub *am2z__il_stub_find(const am2z__il *il, const char *name) {
    am2z__il_stub *s;
    for (s = il->stubs; s; s = s->next)
        if (strcmp(am2z_processor_name(s->proc), name) == 0) return s;
    return NULL;
}

/* Appends one attempt to the trace (record on). */
static void am2z__il_record(am2z__il *il, const am2z_meta *m, int64_t start_ns, int64_t end_ns,
                            const am2z_error *err, int stubbed) {
    am2z_value *c;
    if (!il->record) return;
    c = am2z_value_set(am2z_value_object(), "processor", am2z__il_str(m->processor));
    c = am2z_value_set(c, "executionId", am2z__il_str(m->execution_id));
    c = am2z_value_set(c, "sessionId", am2z__il_str(m->session_id));
    c = am2z_value_set(c, "attempt", am2z_value_int(m->attempt));
    c = am2z_value_set(c, "callDepth", am2z_value_int(m->call_depth));
    c = am2z_value_set(c, "startedAt", am2z_value_int(am2z__il_wall(il, start_ns)));
    c = am2z_value_set(c, "endedAt", am2z_value_int(am2z__il_wall(il, end_ns)));
    c = am2z_value_set(c, "ok", am2z_value_bool(err == NULL));
    if (err) c = am2z_value_set(c, "error", am2z_value_string(am2z_error_kind_name(err->kind)));
    c = am2z_value_set(c, "stubbed", am2z_value_bool(stubbed));
    if (!il->calls_lost) il->calls = am2z_value_append(il->calls, "", c);
    else am2z_value_release(c);
    if (!il->calls) il->calls_lost = 1; /* am2z_inline_calls reports it */
}

/* ---- running calls ---- */

static void am2z__il_call_many(am2z_ctx *ctx, const char *const *names, const am2z_state *const *inputs,
                               size_t count, am2z_result *results);

static void am2z__il_ctx_emit(am2z_ctx *ctx, const char *event, am2z_value *data) {
    am2z_runtime_emit(ctx->runtime, event, data);
    am2z_value_release(data);
}

static int am2z__il_ctx_cancelled(const am2z_ctx *ctx) {
    return ((const am2z__il_exec *)ctx->runtime_data)->cancel != AM2Z__IL_CANCEL_NONE;
}

static int am2z__il_ctx_wants(const am2z_ctx *ctx, const char *event) {
    return am2z__runtime_has_handlers(ctx->runtime, event);
}

static int64_t am2z__il_ctx_now_ns(const am2z_ctx *ctx) {
    return ((const am2z__il_exec *)ctx->runtime_data)->il->vnow_ns;
}

static const am2z_ctx_ops am2z__il_ctx_ops = {am2z__il_call_many, am2z__il_ctx_emit, am2z__il_ctx_cancelled,
                                              am2z__il_ctx_wants, NULL, NULL};
static const am2z_ctx_ops am2z__il_ctx_ops_virtual = {am2z__il_call_many, am2z__il_ctx_emit,
                                                      am2z__il_ctx_cancelled, am2z__il_ctx_wants, NULL,
                                                      am2z__il_ctx_now_ns};

/* What a stub does instead of its target's function (see am2z_inline_stub_desc). */
static am2z_result am2z__il_stub_fn(am2z_ctx *ctx, const am2z_state *input) {
    am2z__il_stub *s = (am2z__il_stub *)am2z_ctx_user_data(ctx);
    am2z_edit e;
    int64_t until = am2z__il_after(am2z__il_ns(s->il), s->duration_ms);
    if (until) am2z__il_pass(s->il, until);
    if (s->error && (s->fail_times == 0 || s->failed < s->fail_times)) {
        s->failed++;
        return am2z_fail(am2z_error_retain(s->error));
    }
    e = am2z_edit_begin(input);
    if (s->state) am2z_edit_merge(&e, s->state);
    return am2z_edit_end(&e);
}

/* One attempt of p (or of its stub) on this thread: context, "processor:job:started",
   the function, the version bump. A top-level attempt's input and output name the
   session it runs in (nested calls pass states as they are). */
static am2z_result am2z__il_attempt(am2z__il *il, am2z__il_exec *x, const am2z_processor *p,
                                    const am2z_state *input, am2z_ctx *ctx) {
    const char *sid = x->session->id;
    am2z__il_stub *stub = am2z__il_stub_find(il, am2z_processor_name(p));
    am2z_state *moved = NULL;
    am2z_result r;
    if (ctx->meta.call_depth == 0 && strcmp(am2z_state_session_id(input), sid) != 0) {
        moved = am2z__state_in_session(am2z_value_retain(input), sid);
        if (!moved) return am2z_fail(am2z_error_resource("memory", 0, 0));
        input = moved;
    }
    ctx->processor = stub ? stub->proc : p;
    if (am2z__runtime_has_handlers(il->rt, "processor:job:started")) {
        am2z_value *d = am2z__il_event(ctx->meta.processor, ctx->meta.execution_id, sid);
        d = am2z_value_set(d, "attempt", am2z_value_int(ctx->meta.attempt));
        d = am2z_value_set(d, "callDepth", am2z_value_int(ctx->meta.call_depth));
        am2z__il_emit(il, "processor:job:started", d);
    }
    il->attempts_running++;
    if (ctx->meta.call_depth == 0) { /* a top-level attempt: its own durable scope, or none (7d) */
        am2z__dscope root;
        void *outer = am2z__dur_enter_root(&root, x->dx);
        r = am2z_processor_invoke(ctx->processor, ctx, input);
        am2z__dur_swap(outer);
    } else {
        r = am2z_processor_invoke(ctx->processor, ctx, input);
    }
    il->attempts_running--;
    am2z_value_release(moved);
    if (r.state) {
        r.state = am2z__state_bump_at(r.state, am2z__il_wall(il, am2z__il_ns(il)));
        if (r.state && ctx->meta.call_depth == 0 && strcmp(am2z_state_session_id(r.state), sid) != 0)
            r.state = am2z__state_in_session(r.state, sid);
        if (!r.state) r = am2z_fail(am2z_error_resource("memory", 0, 0));
    }
    return r;
}

/* "processor:job:completed" / "processor:job:failed" for one finished call. */
static void am2z__il_emit_end(am2z__il *il, const am2z_meta *m, const am2z_error *err, int64_t ns) {
    const char *ev = err ? "processor:job:failed" : "processor:job:completed";
    am2z_value *d;
    if (!am2z__runtime_has_handlers(il->rt, ev)) return;
    d = am2z__il_event(m->processor, m->execution_id, m->session_id);
    d = am2z_value_set(d, "attempts", am2z_value_int(m->attempt));
    d = am2z_value_set(d, "callDepth", am2z_value_int(m->call_depth));
    d = am2z_value_set(d, "executionTime", am2z_value_double((double)ns / 1e6));
    if (err) d = am2z_value_set(d, "error", am2z_error_to_json(err));
    am2z__il_emit(il, ev, d);
}

static void am2z__il_emit_retrying(am2z__il *il, const am2z_meta *m, const am2z_error *err, int64_t delay_ms) {
    am2z_value *d;
    if (!am2z__runtime_has_handlers(il->rt, "processor:job:retrying")) return;
    d = am2z__il_event(m->processor, m->execution_id, m->session_id);
    d = am2z_value_set(d, "attempt", am2z_value_int(m->attempt));
    d = am2z_value_set(d, "delayMs", am2z_value_int(delay_ms));
    d = am2z_value_set(d, "error", am2z_error_to_json(err));
    am2z__il_emit(il, "processor:job:retrying", d);
}

/* Keeps a failed attempt's error (consumed) in a top-level outcome. */
static void am2z__il_keep_error(am2z_outcome *out, am2z_error *err) {
    am2z_error **grown;
    if (!err) return;
    grown = (am2z_error **)am2z__realloc(out->attempt_errors, (out->attempt_error_count + 1) * sizeof *grown);
    if (!grown) {
        am2z_error_release(err);
        return;
    }
    out->attempt_errors = grown;
    out->attempt_errors[out->attempt_error_count++] = err;
}

/* The queue options before a call's first attempt: delay_ms, then the rate limit's turn
   (one start per interval, reserved now). 0 when x is cancelled or the caller's
   deadline (0: none) comes first. */
static int am2z__il_queue_wait(am2z__il *il, const am2z__il_exec *x, const am2z_processor_desc *d,
                               am2z__il_pstat *ps, int64_t deadline_ns) {
    int64_t now = am2z__il_ns(il), at;
    if (d->queue.delay_ms > 0 && !am2z__il_wait_until(il, x, deadline_ns, am2z__il_after(now, d->queue.delay_ms)))
        return 0;
    if (d->queue.rate_limit_per_minute <= 0) return 1;
    now = am2z__il_ns(il);
    at = ps->next_start_ns > now ? ps->next_start_ns : now;
    ps->next_start_ns = at + (int64_t)60000000000 / d->queue.rate_limit_per_minute;
    return am2z__il_wait_until(il, x, deadline_ns, at);
}

/* One call of p in execution x: a top-level execution (depth 0, top = its outcome,
   which gets attempts, errors, start and duration) or a nested call (top NULL). The
   queue delay and rate limit, then attempts with their timeouts and the backoff
   between them; events, stats and the trace of every attempt. deadline_ns is the
   caller's (0: none); no wait or attempt runs past it. */
static am2z_result am2z__il_call(am2z__il *il, am2z__il_exec *x, const am2z_processor *p, const am2z_state *input,
                                 int depth, int64_t deadline_ns, const char *exec_id, am2z_outcome *top,
                                 uint32_t trace_parent) {
    const am2z_processor_desc *d = am2z_processor_desc_of(p);
    am2z__il_pstat *ps = am2z__il_pstat_get(il, d->name);
    int64_t timeout = am2z_processor_timeout_ms(p, il->default_timeout_ms), first, s, end, delay;
    am2z_ctx ctx;
    am2z_result r;
    am2z_error *open;
    int ticket;
    memset(&ctx, 0, sizeof ctx);
    ctx.ops = il->virtual_clock ? &am2z__il_ctx_ops_virtual : &am2z__il_ctx_ops;
    ctx.runtime_data = x;
    ctx.runtime = il->rt;
    ctx.logger = il->rt->logger;
    ctx.meta.processor = d->name;
    ctx.meta.execution_id = exec_id;
    ctx.meta.session_id = x->session->id;
    ctx.meta.call_depth = depth;
    ctx.trace = x->out.trace; /* the top-level outcome holds the execution's trace */
    ctx.trace_parent = trace_parent;
    first = am2z__il_ns(il);
    if (!ps) {
        r = am2z_fail(am2z_error_resource("memory", 0, 0));
        goto failed;
    }
    if (!am2z__il_queue_wait(il, x, d, ps, deadline_ns)) {
        r = am2z_fail(x->cancel ? am2z__il_cancel_error(x, d->name, exec_id)
                                : am2z__il_timeout_error(d->name, exec_id, timeout));
        goto failed;
    }
    first = am2z__il_ns(il);
    if (top) top->started_at = am2z__il_wall(il, first);
    for (ctx.meta.attempt = 1;; ctx.meta.attempt++) {
        s = am2z__il_ns(il);
        ctx.deadline_ns = am2z__il_after(s, timeout);
        if (deadline_ns && (!ctx.deadline_ns || deadline_ns < ctx.deadline_ns)) ctx.deadline_ns = deadline_ns;
        ctx.meta.started_at = am2z__il_wall(il, s);
        /* an open breaker fails the attempt before it starts (am2z_breaker_policy) */
        if ((open = am2z__breaker_enter(il->rt, p, exec_id, ctx.meta.started_at, &ticket)) != NULL)
            r = am2z_fail(open);
        else
            r = am2z__il_attempt(il, x, p, input, &ctx);
        end = am2z__il_ns(il);
        if (x->cancel) { /* stopped meanwhile: whatever it returned is discarded */
            am2z_result_clear(&r);
            r = am2z_fail(am2z__il_cancel_error(x, d->name, exec_id));
        } else if (ctx.deadline_ns && end >= ctx.deadline_ns) { /* late */
            am2z_result_clear(&r);
            r = am2z_fail(am2z__il_timeout_error(d->name, exec_id, timeout));
        }
        if (!open) am2z__breaker_leave(il->rt, p, ticket, r.error, 0, am2z__il_wall(il, end));
        if (ctx.trace && r.error) am2z_trace_fail(ctx.trace, ctx.trace_span, am2z_error_kind_name(r.error->kind));
        am2z__il_record(il, &ctx.meta, s, end, r.error, ctx.processor != p);
        if (top) {
            top->attempts = ctx.meta.attempt;
            am2z__il_keep_error(top, am2z_error_retain(r.error));
        }
        if (r.state) {
            ps->completed++;
            am2z__il_emit_end(il, &ctx.meta, NULL, end - first);
            if (top) top->duration_ms = (double)(end - first) / 1e6;
            return r;
        }
        if (x->cancel || (delay = am2z_retry_delay_ms(&d->retry, r.error, ctx.meta.attempt)) < 0) break;
        ps->retried++;
        am2z__il_emit_retrying(il, &ctx.meta, r.error, delay);
        am2z_trace_retry(ctx.trace, ctx.trace_span, delay);
        if (!am2z__il_wait_until(il, x, deadline_ns, delay > 0 ? am2z__il_after(am2z__il_ns(il), delay) : 0)) break;
        am2z_result_clear(&r);
    }
failed:
    end = am2z__il_ns(il);
    if (ps) ps->failed++;
    am2z__il_emit_end(il, &ctx.meta, r.error, end - first);
    if (top) top->duration_ms = (double)(end - first) / 1e6;
    return r;
}

/* Nested calls run one after another, in order, on this thread. */
static void am2z__il_call_many(am2z_ctx *ctx, const char *const *names, const am2z_state *const *inputs,
                               size_t count, am2z_result *results) {
    am2z__il_exec *x = (am2z__il_exec *)ctx->runtime_data;
    am2z__il *il = x->il;
    int depth = ctx->meta.call_depth + 1;
    char id[AM2Z_EXECUTION_ID_SIZE];
    am2z_processor *p;
    size_t i;
    for (i = 0; i < count; i++) {
        if (x->cancel) results[i] = am2z_fail(am2z__il_cancel_error(x, names[i], NULL));
        else if (!names[i] || !inputs[i])
            results[i] = am2z_fail(am2z_error_validation("call", NULL, "a processor name and an input state are required"));
        else if (depth > il->max_depth) results[i] = am2z_fail(am2z_error_call_depth(il->max_depth, depth));
        else if (!(p = am2z_runtime_lookup(il->rt, names[i])))
            results[i] = am2z_fail(am2z__runtime_not_found(il->rt, names[i]));
        else {
            am2z__il_new_id(il, names[i], id);
            results[i] = am2z__il_call(il, x, p, inputs[i], depth, ctx->deadline_ns, id, NULL, ctx->trace_span);
            am2z_processor_release(p);
        }
    }
}

/* ---- executions (handles) ---- */

static void am2z__il_session_release(am2z__il_session *s) {
    if (s && --s->refs == 0) am2z__free(s);
}

static void am2z__il_exec_free(am2z__il_exec *x) {
    am2z__dx_release(x->dx);
    am2z_processor_release(x->proc);
    am2z_value_release(x->input);
    am2z__il_session_release(x->session);
    am2z_outcome_clear(&x->out);
    am2z__free(x);
}

static void am2z__il_unlink_pending(am2z__il_exec *x) {
    am2z__il *il = x->il;
    if (x->prev) x->prev->next = x->next;
    else il->pending_head = x->next;
    if (x->next) x->next->prev = x->prev;
    else il->pending_tail = x->prev;
    x->prev = x->next = NULL;
    il->queued--;
}

/* x is DONE with its outcome: settles the session's counts, frees a handle nobody holds. */
static void am2z__il_settle(am2z__il_exec *x) {
    am2z__il_session *s = x->session;
    if (x->dx) /* parked, left resumable (cancelled) or recorded, before anyone reads it (7d) */
        am2z__dur_end(x->dx, x->out.error ? NULL : x->out.state, x->out.error, x->cancel != 0, x->out.attempts,
                      x->out.duration_ms, x->out.started_at, s->id);
    x->phase = AM2Z__IL_DONE;
    s->running--;
    if (!x->out.error) s->completed++;
    else if (x->out.error->kind == AM2Z_ERROR_CANCELLED && x->cancel) s->cancelled++;
    else s->failed++;
    if (x->freed || x->detached) am2z__il_exec_free(x);
}

/* An execution that never started ends cancelled (reason: AM2Z__IL_CANCEL_*). */
static void am2z__il_cancel_pending(am2z__il_exec *x, int reason) {
    am2z__il_unlink_pending(x);
    x->cancel = reason;
    x->out.state = am2z_value_retain(x->input);
    x->out.error = am2z__il_cancel_error(x, am2z_processor_name(x->proc), x->out.execution_id);
    if (!x->out.error) x->out.error = am2z_error_resource("memory", 0, 0);
    am2z__il_settle(x);
}

/* Runs a pending execution to its end on this thread. */
static void am2z__il_run(am2z__il_exec *x) {
    am2z__il *il = x->il;
    am2z_result r;
    am2z__il_unlink_pending(x);
    if (x->not_before_ns) am2z__il_pass(il, x->not_before_ns);
    x->phase = AM2Z__IL_RUNNING;
    x->next = il->running;
    il->running = x;
    r = am2z__il_call(il, x, x->proc, x->input, 0, 0, x->out.execution_id, &x->out, 0);
    il->running = x->next;
    x->next = NULL;
    if (r.state) x->out.state = r.state;
    else if (r.error && r.error->partial_state) x->out.state = am2z_value_retain(r.error->partial_state);
    else x->out.state = am2z_value_retain(x->input);
    x->out.error = r.error;
    am2z__il_settle(x);
}

static am2z__il_session *am2z__il_session_find(const am2z__il *il, const char *id) {
    am2z__il_session *s;
    for (s = il->sessions; s; s = s->next)
        if (strcmp(s->id, id) == 0) return s;
    return NULL;
}

/* A reference to the active session id, created (and announced) on first use; NULL
   when out of memory. The caller's reference keeps it alive even if a session:created
   handler stops it. */
static am2z__il_session *am2z__il_session_get(am2z__il *il, const char *id) {
    am2z__il_session *s = am2z__il_session_find(il, id), **tail;
    if (s) {
        s->refs++;
        return s;
    }
    s = (am2z__il_session *)am2z__malloc(sizeof *s);
    if (!s) return NULL;
    memset(s, 0, sizeof *s);
    s->refs = 2; /* the active list's and the caller's */
    memcpy(s->id, id, strlen(id) + 1); /* checked by am2z__session_id_ok */
    s->created_at = am2z__il_wall(il, am2z__il_ns(il));
    for (tail = &il->sessions; *tail; tail = &(*tail)->next) {
    }
    *tail = s;
    am2z__il_emit(il, "session:created", am2z_value_set(am2z_value_object(), "sessionId", am2z_value_string(id)));
    return s;
}

/* Ends session s: its unstarted executions are cancelled, its running ones marked
   cancelled; "session:cleanup", then it is forgotten. */
static void am2z__il_session_end(am2z__il *il, am2z__il_session *s, int reason) {
    am2z__il_session **pp;
    am2z__il_exec *x, *next;
    for (x = il->running; x; x = x->next)
        if (x->session == s && !x->cancel) x->cancel = reason;
    for (x = il->pending_head; x; x = next) {
        next = x->next;
        if (x->session == s) am2z__il_cancel_pending(x, reason);
    }
    am2z__il_emit(il, "session:cleanup", am2z_value_set(am2z_value_object(), "sessionId", am2z_value_string(s->id)));
    for (pp = &il->sessions; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            am2z__il_session_release(s);
            break;
        }
}

/* ---- runtime ops ---- */

static am2z_status am2z__il_start(am2z_runtime *rt) {
    ((am2z__il *)rt->impl)->stopped = 0;
    return AM2Z_STATUS_OK;
}

/* Nothing runs when stop may be called (it refuses inside the runtime's callbacks), so
   stopping cancels what never started and ends the sessions; grace_ms has nothing to wait for. */
static am2z_status am2z__il_stop(am2z_runtime *rt, int64_t grace_ms) {
    am2z__il *il = (am2z__il *)rt->impl;
    (void)grace_ms;
    il->stopped = 1;
    while (il->pending_head) am2z__il_cancel_pending(il->pending_head, AM2Z__IL_CANCEL_STOP);
    while (il->sessions) am2z__il_session_end(il, il->sessions, AM2Z__IL_CANCEL_STOP);
    return AM2Z_STATUS_OK;
}

static am2z_execution *am2z__il_submit_durable(am2z__il *il, const char *processor, const am2z_state *input,
                                               const am2z_submit_desc *desc, const char *resume_id,
                                               am2z_status *status);

static am2z_execution *am2z__il_submit(am2z_runtime *rt, const char *processor, const am2z_state *input,
                                       const am2z_submit_desc *desc, am2z_status *status) {
    am2z__il *il = (am2z__il *)rt->impl;
    const char *sid = desc->session_id ? desc->session_id : "default";
    am2z_status st = AM2Z_STATUS_OK;
    am2z_processor *p = NULL;
    am2z__il_session *s = NULL;
    am2z__il_exec *x = NULL;
    am2z_trace *tr = NULL;
    if (desc->durable || desc->execution_id) return am2z__il_submit_durable(il, processor, input, desc, NULL, status);
    if (!processor || !input || !am2z__session_id_ok(sid)) st = AM2Z_STATUS_INVALID_ARGUMENT;
    else if (il->stopped) st = AM2Z_STATUS_NOT_STARTED;
    else if (!(p = am2z_runtime_lookup(rt, processor))) st = AM2Z_STATUS_NOT_FOUND;
    else if (!(x = (am2z__il_exec *)am2z__malloc(sizeof *x)) ||
             ((il->trace || desc->trace) && !(tr = am2z_trace_new(desc->trace_max_spans))) ||
             !(s = am2z__il_session_get(il, sid)))
        st = AM2Z_STATUS_NO_MEMORY;
    if (st != AM2Z_STATUS_OK) {
        am2z_processor_release(p);
        am2z_trace_release(tr);
        am2z__free(x);
        return (am2z_execution *)am2z__put_status(status, am2z__submit_fail(st, processor, desc->session_id));
    }
    memset(x, 0, sizeof *x);
    x->head.rt = rt;
    x->head.id = x->out.execution_id;
    x->il = il;
    x->proc = p;
    x->input = am2z_value_retain(input);
    x->session = s; /* session_get's reference */
    x->out.trace = tr;
    s->submitted++;
    s->running++;
    am2z__il_new_id(il, processor, x->out.execution_id);
    x->not_before_ns = am2z__il_after(am2z__il_ns(il), am2z__submit_delay(desc, am2z__il_wall(il, am2z__il_ns(il))));
    am2z__outcome_session(&x->out, sid);
    x->out.started_at = am2z__il_wall(il, am2z__il_ns(il)); /* until an attempt starts */
    x->prev = il->pending_tail;
    if (il->pending_tail) il->pending_tail->next = x;
    else il->pending_head = x;
    il->pending_tail = x;
    il->queued++;
    if (status) *status = AM2Z_STATUS_OK;
    return &x->head;
}

/* A copy of x's outcome (x is DONE) into out (empty). */
static void am2z__il_copy_outcome(const am2z__il_exec *x, am2z_outcome *out) {
    size_t i;
    *out = x->out;
    out->state = am2z_value_retain(x->out.state);
    out->error = am2z_error_retain(x->out.error);
    out->trace = am2z_trace_retain(x->out.trace);
    out->attempt_errors = NULL;
    out->attempt_error_count = 0;
    if (!x->out.attempt_error_count) return;
    out->attempt_errors = (am2z_error **)am2z__malloc(x->out.attempt_error_count * sizeof *out->attempt_errors);
    if (!out->attempt_errors) return;
    for (i = 0; i < x->out.attempt_error_count; i++) out->attempt_errors[i] = am2z_error_retain(x->out.attempt_errors[i]);
    out->attempt_error_count = x->out.attempt_error_count;
}

/* Runs the execution if it has not started (timeout_ms cannot shorten a run on this
   thread); one that is running on this thread's stack is waiting for itself. */
static am2z_status am2z__il_wait(am2z_execution *e, int64_t timeout_ms, am2z_outcome *out) {
    am2z__il_exec *x = (am2z__il_exec *)e;
    (void)timeout_ms;
    if (x->phase == AM2Z__IL_RUNNING)
        return am2z__fail(AM2Z_STATUS_TIMEOUT, AM2Z_NTS,
                          "wait '%s': the execution is running further up this thread's stack (it "
                          "would wait for itself)", x->out.execution_id);
    if (x->phase == AM2Z__IL_PENDING) am2z__il_run(x);
    am2z__il_copy_outcome(x, out);
    return AM2Z_STATUS_OK;
}

static void am2z__il_free_execution(am2z_execution *e) {
    am2z__il_exec *x = (am2z__il_exec *)e;
    x->freed = 1;
    if (x->phase == AM2Z__IL_PENDING) am2z__il_cancel_pending(x, AM2Z__IL_CANCEL_FREED);
    else if (x->phase == AM2Z__IL_RUNNING) x->cancel = AM2Z__IL_CANCEL_FREED; /* the runner frees it */
    else am2z__il_exec_free(x);
}

/* Fire and forget: there is no other thread to run it later, so it runs now. */
static void am2z__il_detach(am2z_execution *e) {
    am2z__il_exec *x = (am2z__il_exec *)e;
    x->detached = 1;
    if (x->phase == AM2Z__IL_PENDING) am2z__il_run(x);
    else if (x->phase == AM2Z__IL_DONE) am2z__il_exec_free(x);
}

static am2z_status am2z__il_stop_session(am2z_runtime *rt, const char *session_id, int64_t grace_ms) {
    am2z__il *il = (am2z__il *)rt->impl;
    am2z__il_session *s = am2z__il_session_find(il, session_id);
    (void)grace_ms;
    if (!s) return AM2Z_STATUS_NOT_FOUND;
    am2z__il_session_end(il, s, AM2Z__IL_CANCEL_SESSION);
    return AM2Z_STATUS_OK;
}

static am2z_value *am2z__il_counts(am2z_value *v, int64_t completed, int64_t failed, int64_t retried) {
    v = am2z_value_set(v, "completed", am2z_value_int(completed));
    v = am2z_value_set(v, "failed", am2z_value_int(failed));
    return am2z_value_set(v, "retried", am2z_value_int(retried));
}

static am2z_value *am2z__il_stats(am2z_runtime *rt) {
    am2z__il *il = (am2z__il *)rt->impl;
    am2z_value *v, *procs = am2z_value_object(), *names = am2z_runtime_list(rt);
    int64_t completed = 0, failed = 0, retried = 0;
    am2z__il_pstat *ps;
    size_t i;
    /* registered processors are listed (with zeros) before they run */
    for (i = 0; i < am2z_value_len(names); i++)
        procs = am2z_value_set_key(procs, am2z_value_as_string(am2z_value_at(names, i), NULL), AM2Z_NTS,
                                   am2z__il_counts(am2z_value_object(), 0, 0, 0));
    for (ps = il->pstats; ps; ps = ps->next) {
        completed += ps->completed;
        failed += ps->failed;
        retried += ps->retried;
        procs = am2z_value_set_key(procs, ps->name, AM2Z_NTS,
                                   am2z__il_counts(am2z_value_object(), ps->completed, ps->failed, ps->retried));
    }
    v = am2z_value_set(am2z_value_object(), "kind", am2z_value_string("inline"));
    v = am2z_value_set(v, "registeredProcessors", names);
    v = am2z_value_set(v, "running", am2z_value_int(il->attempts_running));
    v = am2z_value_set(v, "queued", am2z_value_int(il->queued));
    v = am2z__il_counts(v, completed, failed, retried);
    v = am2z_value_set(v, "uptimeMs", am2z_value_int((am2z__il_ns(il) - il->created_ns) / 1000000));
    return am2z_value_set(v, "processors", procs);
}

static am2z_value *am2z__il_session_stats(am2z_runtime *rt, const char *session_id) {
    am2z__il_session *s = am2z__il_session_find((am2z__il *)rt->impl, session_id);
    am2z_value *v;
    if (!s) return NULL;
    v = am2z_value_set(am2z_value_object(), "sessionId", am2z_value_string(s->id));
    v = am2z_value_set(v, "createdAt", am2z_value_int(s->created_at));
    v = am2z_value_set(v, "running", am2z_value_int(s->running));
    v = am2z_value_set(v, "submitted", am2z_value_int(s->submitted));
    v = am2z_value_set(v, "completed", am2z_value_int(s->completed));
    v = am2z_value_set(v, "failed", am2z_value_int(s->failed));
    return am2z_value_set(v, "cancelled", am2z_value_int(s->cancelled));
}

static am2z_value *am2z__il_active_sessions(am2z_runtime *rt) {
    am2z__il_session *s;
    am2z_value *v = am2z_value_array();
    for (s = ((am2z__il *)rt->impl)->sessions; s; s = s->next) v = am2z_value_append(v, "", am2z_value_string(s->id));
    return v;
}

static void am2z__il_stub_free(am2z__il_stub *s) {
    am2z_processor_release(s->proc);
    am2z_value_release(s->state);
    am2z_error_release(s->error);
    am2z__free(s);
}

/* After stop (am2z_runtime_free stops first): nothing pending, no session active. */
static void am2z__il_destroy(am2z_runtime *rt) {
    am2z__il *il = (am2z__il *)rt->impl;
    while (il->pstats) {
        am2z__il_pstat *ps = il->pstats;
        il->pstats = ps->next;
        am2z__free(ps->name);
        am2z__free(ps);
    }
    while (il->stubs) {
        am2z__il_stub *s = il->stubs;
        il->stubs = s->next;
        am2z__il_stub_free(s);
    }
    am2z_value_release(il->calls);
    am2z__sched_tab_free(il->sched);
    am2z__dreg_free(rt->dreg);
    rt->dreg = NULL;
    am2z__free(il);
}

/* ---- schedules (section 7e): slots fire as am2z_inline_advance moves the clock ---- */

static am2z_status am2z__il_schedule_upsert(am2z_runtime *rt, const am2z_schedule_desc *d) {
    am2z__il *il = (am2z__il *)rt->impl;
    if (!il->virtual_clock)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "schedule '%s': the inline runtime fires schedules on a virtual clock only (set virtual_clock_ms)",
                          d->id);
    if (!am2z_runtime_is_registered(rt, d->processor))
        return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "schedule '%s': processor '%s' is not registered", d->id,
                          d->processor);
    if (!il->sched && !(il->sched = am2z__sched_tab_new()))
        return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "schedule '%s': out of memory", d->id);
    return am2z__sched_tab_upsert(il->sched, d, am2z__il_wall(il, am2z__il_ns(il)));
}

static am2z_status am2z__il_schedule_remove(am2z_runtime *rt, const char *id) {
    return am2z__sched_tab_remove(((am2z__il *)rt->impl)->sched, id);
}

static am2z_value *am2z__il_schedule_list(am2z_runtime *rt) {
    return am2z__sched_tab_list(((am2z__il *)rt->impl)->sched);
}

/* Moves the virtual clock to t_ns, running each slot due on the way at its own time
   (detached, so at once). From inside a processor (its am2z_inline_advance stands for
   work), or while stopped, it only moves the clock: the slots passed are then late. */
static void am2z__il_sched_run_until(am2z__il *il, int64_t t_ns) {
    int64_t next;
    if (il->sched && !il->running && !il->firing && !il->stopped) {
        il->firing = 1;
        while ((next = am2z__sched_tab_next(il->sched)) != 0 && next <= t_ns / 1000000) {
            am2z__sched_fire f;
            am2z_submit_desc d;
            am2z_execution *e;
            am2z_status st = AM2Z_STATUS_OK;
            if (next > il->vnow_ns / 1000000) il->vnow_ns = next * 1000000;
            if (!am2z__sched_tab_due(il->sched, am2z__il_wall(il, il->vnow_ns), &f)) break;
            memset(&d, 0, sizeof d);
            d.session_id = f.session;
            if ((e = am2z_runtime_submit_with(il->rt, f.processor, f.input, &d, &st)) != NULL) am2z_execution_detach(e);
            else am2z_log_warn(il->rt->logger, "schedule slot %lld of '%s' not run: %s", (long long)f.slot, f.processor,
                               am2z_status_detail());
            am2z_value_release(f.input);
        }
        il->firing = 0;
    }
    if (t_ns > il->vnow_ns) il->vnow_ns = t_ns;
}

/* ---- durable executions (section 7d) ----
   The records, scopes, chain checkpoints, compensation and wait steps are 7d's. What is
   the inline runtime's: a durable run is an execution record like any other (it runs
   when waited for or detached), resumes run at once on the owner's thread, and there is
   no timer thread: am2z_inline_advance resumes expired waits at their own time, and
   am2z_runtime_durable_outcome (poll) the ones due on the real clock. A resume asked
   from another thread (a signal) is queued (am2z__dur_requeue) for the owner's next
   am2z_inline_advance, durable_outcome, resume or signal. */

/* A durable submit (desc) or the resume of the claimed resume_id (desc NULL). */
static am2z_execution *am2z__il_submit_durable(am2z__il *il, const char *processor, const am2z_state *input,
                                               const am2z_submit_desc *desc, const char *resume_id,
                                               am2z_status *status) {
    char run_name[AM2Z_NAME_MAX + 1], run_sid[AM2Z_SESSION_ID_MAX + 1], gen[AM2Z_EXECUTION_ID_SIZE];
    const char *id = desc ? desc->execution_id : resume_id;
    am2z_state *run_input = NULL;
    am2z_submit_desc d;
    am2z_execution *e;
    am2z__dx *dx;
    am2z_status st = AM2Z_STATUS_OK;
    const char *why = NULL;
    if (!il->rt->dreg) why = "durable needs a store (am2z_inline_desc.store)";
    else if (desc && desc->execution_id && !desc->durable) why = "execution_id is only for durable";
    else if (desc && (desc->delay_ms || desc->run_at_ms || desc->trace)) /* a resume knows neither */
        why = "delay_ms / run_at_ms / trace are not supported with durable (inline runtime)";
    if (why)
        return (am2z_execution *)am2z__put_status(status, am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                                                                     "submit '%s': %s", processor ? processor : "(null)", why));
    if (desc && (!processor || !input))
        return (am2z_execution *)am2z__put_status(status, am2z__submit_fail(AM2Z_STATUS_INVALID_ARGUMENT, processor,
                                                                            desc->session_id));
    if (!id && il->virtual_clock) { /* "<processor>-<virtual ms>-<n>": a rerun gives the same ids */
        am2z__il_new_id(il, processor, gen);
        id = gen;
    }
    dx = am2z__dur_begin(il->rt->dreg, processor, input, desc ? desc->session_id : NULL, id, !desc, &run_input,
                         run_name, run_sid, &st);
    if (!dx) return (am2z_execution *)am2z__put_status(status, st);
    memset(&d, 0, sizeof d);
    d.session_id = run_sid;
    e = am2z__il_submit(il->rt, run_name, run_input, &d, &st);
    am2z_value_release(run_input);
    if (!e) {
        am2z__dur_abort(dx);
        return (am2z_execution *)am2z__put_status(status, st);
    }
    ((am2z__il_exec *)e)->dx = dx;
    memcpy(((am2z__il_exec *)e)->out.execution_id, dx->id, strlen(dx->id) + 1);
    if (status) *status = AM2Z_STATUS_OK;
    return e;
}

/* The registry's resume of a claimed id: on the owner's thread it runs now (detached);
   from another thread it is queued for the owner. */
static am2z_status am2z__il_resubmit(am2z_runtime *rt, const char *id) {
    am2z__il *il = (am2z__il *)rt->impl;
    am2z_status st = AM2Z_STATUS_OK;
    am2z_execution *e;
    if (il->owner != &am2z__il_mark) {
        am2z__dur_requeue(rt->dreg, id);
        return AM2Z_STATUS_OK;
    }
    e = am2z__il_submit_durable(il, NULL, NULL, NULL, id, &st);
    if (!e) return st;
    am2z__il_detach(e);
    return AM2Z_STATUS_OK;
}

/* Resumes what is due now (queued signals, waits expired on the clock) when called on
   the owner's thread; whether waiting could help (0 without threads). */
static int am2z__il_poll(am2z_runtime *rt) {
    am2z__il *il = (am2z__il *)rt->impl;
    char id[AM2Z_DURABLE_MAX_ID + 1];
    if (il->owner == &am2z__il_mark && !il->stopped)
        while (am2z__dur_take_due(rt->dreg, am2z__il_wall(il, am2z__il_ns(il)), id, NULL)) am2z__dur_resubmit(rt->dreg, id);
#ifdef AM2Z_NO_THREADS
    return 0;
#else
    return 1;
#endif
}

/* am2z_inline_advance: moves the virtual clock to t_ns, resuming the due durable
   executions (each expired wait at its own time) and firing the schedule slots on the
   way, in time order. From inside a processor or while stopped it only moves the clock. */
static void am2z__il_advance_to(am2z__il *il, int64_t t_ns) {
    am2z__dreg *g = il->rt->dreg;
    char id[AM2Z_DURABLE_MAX_ID + 1];
    int64_t next;
    while (g && !il->running && !il->stopped && il->owner == &am2z__il_mark) {
        if (am2z__dur_take_due(g, il->vnow_ns / 1000000, id, &next)) {
            am2z__dur_resubmit(g, id);
            continue;
        }
        if (next == INT64_MAX || next > t_ns / 1000000) break;
        am2z__il_sched_run_until(il, next * 1000000);
    }
    am2z__il_sched_run_until(il, t_ns);
}

static const am2z_runtime_ops am2z__il_ops = {
    am2z__il_start, am2z__il_stop, am2z__il_submit, am2z__il_wait, am2z__il_free_execution, am2z__il_detach,
    NULL, NULL, /* execute and execute_many: submit + wait */
    am2z__il_stop_session, am2z__il_stats, am2z__il_session_stats, am2z__il_active_sessions,
    NULL, NULL, am2z__il_destroy, am2z__il_schedule_upsert, am2z__il_schedule_remove, am2z__il_schedule_list};

/* ---- public functions ---- */

AM2Z_API am2z_runtime *am2z_inline_runtime_new(const am2z_inline_desc *desc, am2z_status *status) {
    am2z_inline_desc d;
    am2z_runtime_settings set;
    am2z_runtime *rt;
    am2z__il *il;
    const char *bad = NULL;
    memset(&d, 0, sizeof d);
    if (desc) d = *desc;
    if (d.virtual_clock_ms < 0) bad = "virtual_clock_ms is negative";
    else if (d.virtual_clock_ms > INT64_MAX / 2000000) bad = "virtual_clock_ms is past the clock's range (year 2116)";
    else if (d.default_timeout_ms < 0) bad = "default_timeout_ms is negative";
    else if (d.max_call_depth < 0) bad = "max_call_depth is negative";
    if (bad)
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "inline runtime: %s", bad));
    il = (am2z__il *)am2z__malloc(sizeof *il);
    if (il) memset(il, 0, sizeof *il);
    if (!il || !(il->calls = am2z_value_array())) {
        am2z__free(il);
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "inline runtime: out of memory"));
    }
    il->default_timeout_ms = d.default_timeout_ms ? d.default_timeout_ms : 60000;
    il->max_depth = d.max_call_depth ? d.max_call_depth : AM2Z_MAX_CALL_DEPTH;
    il->record = d.record_calls != 0;
    il->trace = d.trace != 0;
    il->virtual_clock = d.virtual_clock_ms > 0;
    il->vnow_ns = d.virtual_clock_ms * 1000000;
    il->wall_offset_ms = am2z_now_ms() - am2z_monotonic_ns() / 1000000;
    il->created_ns = am2z__il_ns(il);
    memset(&set, 0, sizeof set);
    set.kind = "inline";
    set.default_timeout_ms = il->default_timeout_ms;
    set.max_call_depth = il->max_depth;
    rt = am2z_runtime_new(&am2z__il_ops, il, d.logger, &set);
    if (!rt) {
        am2z_value_release(il->calls);
        am2z__free(il);
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "inline runtime: out of memory"));
    }
    il->rt = rt;
    il->owner = &am2z__il_mark;
    if (d.store && !(rt->dreg = am2z__dreg_new(rt, d.store, am2z__il_resubmit))) {
        am2z_runtime_free(rt);
        return (am2z_runtime *)am2z__put_status(status,
                am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "inline runtime: out of memory"));
    }
    if (rt->dreg) rt->dreg->poll = am2z__il_poll;
    am2z_runtime_start(rt); /* cannot fail: nothing to start */
    if (status) *status = AM2Z_STATUS_OK;
    return rt;
}

/* rt's inline runtime, or NULL with the detail "<what>: not an inline runtime". */
static am2z__il *am2z__il_of(am2z_runtime *rt, const char *what) {
    if (rt && rt->ops == &am2z__il_ops) return (am2z__il *)rt->impl;
    am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "%s: %s", what, rt ? "not an inline runtime" : "NULL runtime");
    return NULL;
}

AM2Z_API int64_t am2z_inline_now_ms(am2z_runtime *rt) {
    am2z__il *il = am2z__il_of(rt, "inline_now_ms");
    return il ? am2z__il_wall(il, am2z__il_ns(il)) : 0;
}

AM2Z_API am2z_status am2z_inline_advance(am2z_runtime *rt, int64_t ms) {
    am2z__il *il = am2z__il_of(rt, "inline_advance");
    if (!il) return AM2Z_STATUS_INVALID_ARGUMENT;
    if (!il->virtual_clock)
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "inline_advance: the runtime runs on the real clock (set virtual_clock_ms)");
    if (ms < 0) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "inline_advance: %lld ms is negative", (long long)ms);
    if (ms > 0 && !am2z__il_after(il->vnow_ns, ms))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "inline_advance: %lld ms is past the clock's range",
                          (long long)ms);
    am2z__il_advance_to(il, ms > 0 ? am2z__il_after(il->vnow_ns, ms) : il->vnow_ns);
    return AM2Z_STATUS_OK;
}

AM2Z_API am2z_status am2z_inline_stub(am2z_runtime *rt, const char *name, const am2z_inline_stub_desc *desc) {
    am2z__il *il = am2z__il_of(rt, "inline_stub");
    am2z__il_stub *s, **pp;
    am2z_processor_desc pd;
    const char *bad = NULL;
    if (!il) return AM2Z_STATUS_INVALID_ARGUMENT;
    if (!name) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "inline_stub: NULL name");
    /* the stub being replaced may be running further up the stack */
    if (am2z__runtime_inside(rt))
        return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS,
                          "inline_stub '%s': called from inside a processor or handler of this runtime", name);
    if (!am2z_runtime_is_registered(rt, name))
        return am2z__fail(AM2Z_STATUS_NOT_FOUND, AM2Z_NTS, "inline_stub '%s': processor not registered", name);
    if (desc && desc->state && am2z_value_type(desc->state) != AM2Z_TYPE_OBJECT) bad = "state is not an object";
    else if (desc && desc->fail_times < 0) bad = "fail_times is negative";
    else if (desc && desc->fail_times > 0 && !desc->error) bad = "fail_times needs an error to fail with";
    else if (desc && desc->duration_ms < 0) bad = "duration_ms is negative";
    if (bad) return am2z__fail(AM2Z_STATUS_INVALID_ARGUMENT, AM2Z_NTS, "inline_stub '%s': %s", name, bad);
    for (pp = &il->stubs; *pp; pp = &(*pp)->next)
        if (strcmp(am2z_processor_name((*pp)->proc), name) == 0) {
            s = *pp;
            *pp = s->next;
            am2z__il_stub_free(s);
            break;
        }
    if (!desc) return AM2Z_STATUS_OK;
    s = (am2z__il_stub *)am2z__malloc(sizeof *s);
    if (!s) return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "inline_stub '%s': out of memory", name);
    memset(s, 0, sizeof *s);
    memset(&pd, 0, sizeof pd);
    pd.name = name;
    pd.fn = am2z__il_stub_fn;
    pd.user_data = s;
    s->il = il;
    s->proc = am2z_processor_new(&pd, NULL);
    s->state = desc->state ? am2z_value_remove_key(am2z_value_retain(desc->state), "metadata", 8) : NULL;
    s->error = am2z_error_retain(desc->error);
    s->fail_times = desc->fail_times;
    s->duration_ms = desc->duration_ms;
    if (!s->proc || (desc->state && !s->state)) {
        am2z__il_stub_free(s);
        return am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "inline_stub '%s': out of memory", name);
    }
    s->next = il->stubs;
    il->stubs = s;
    return AM2Z_STATUS_OK;
}

AM2Z_API am2z_value *am2z_inline_calls(am2z_runtime *rt) {
    am2z__il *il = am2z__il_of(rt, "inline_calls");
    if (!il) return NULL;
    if (il->calls_lost) {
        am2z__fail(AM2Z_STATUS_NO_MEMORY, AM2Z_NTS, "inline_calls: out of memory while recording: calls were lost");
        return NULL;
    }
    return am2z_value_retain(il->calls);
}

AM2Z_API void am2z_inline_calls_clear(am2z_runtime *rt) {
    am2z__il *il = am2z__il_of(rt, "inline_calls_clear");
    am2z_value *empty;
    if (!il || !(empty = am2z_value_array())) return;
    am2z_value_release(il->calls);
    il->calls = empty;
    il->calls_lost = 0;
}

#undef AM2Z__LR_CHUNK
#undef AM2Z__LR_POLL_NS
#undef AM2Z__LR_HELP_DEPTH
#undef AM2Z__LR_HIST
#undef AM2Z__LR_MAX_TIMEOUT_MS
#undef AM2Z__LR_EST
#undef AM2Z__LR_PCACHE
#undef AM2Z__LR_SHORT_NS
#undef AM2Z__LR_WAKE_NS
#undef AM2Z__LR_PAUSE
#undef AM2Z__LR_LD
#undef AM2Z__LR_ST
#undef AM2Z__LR_WORD
#undef AM2Z__RT_NPOS
#undef AM2Z__RT_INSIDE
#undef AM2Z__RT_MANY_WINDOW

#ifdef __cplusplus
}
#endif
#ifndef AM2Z_RESP_IMPLEMENTATION /* am2z_resp.h's implementation still needs them */
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
#endif
#endif /* AM2Z_IMPLEMENTATION_INCLUDED */
#endif /* AM2Z_IMPLEMENTATION */

/*
MIT License

Copyright (c) 2026 the am2z authors

Permission is hereby granted, free of charge, to any person obtaining a copy of this
software and associated documentation files (the "Software"), to deal in the Software
without restriction, including without limitation the rights to use, copy, modify, merge,
publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
DEALINGS IN THE SOFTWARE.
*/
