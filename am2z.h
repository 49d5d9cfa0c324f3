/* am2z.h - v0.1 - composable, failure-resilient processor workflows for C.
   MIT licence at the end of this file.

   Do this:
       #define AM2Z_IMPLEMENTATION
   before you include this file in ONE C or C++ file to create the implementation.
   Every other file includes it without the define. Link with -pthread.

   RECIPE (compiles as pasted: cc -O2 -pthread hello.c)

       #define AM2Z_IMPLEMENTATION
       #include "am2z.h"
       #include <stdio.h>

       static am2z_result greet(am2z_ctx *ctx, const am2z_state *in) {
           (void)ctx;
           const char *who = am2z_value_get_string(in, "name", "world");
           char line[128];
           snprintf(line, sizeof line, "hello, %s", who);
           return am2z_ok(am2z_value_set(am2z_value_retain(in), "greeting",
                                         am2z_value_string(line)));
       }

       int main(void) {
           am2z_runtime *rt = am2z_local_runtime_new(NULL);
           am2z_processor *p = am2z_processor_new(&(am2z_processor_desc){
               .name = "greet", .fn = greet });
           am2z_runtime_register(rt, p);
           am2z_processor_release(p);
           am2z_state *in = am2z_state_parse("demo", "{\"name\":\"am2z\"}", 0, NULL);
           am2z_outcome out = am2z_runtime_execute(rt, "greet", in);
           if (out.error) printf("failed: %s\n", out.error->message);
           else printf("%s\n", am2z_value_get_string(out.state, "greeting", ""));
           am2z_outcome_clear(&out);
           am2z_value_release(in);
           am2z_runtime_free(rt);
           return 0;
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
       7  runtime      the interface both runtimes implement (execute, submit, sessions, events)
       8  local        the pthread worker-pool runtime
       (am2z_resp.h adds SHA-256, a RESP client and the Redis queue runtime.)

   OPTIONS (define before including the implementation)
       AM2Z_STATIC            make every function static (private copy per translation unit)
       AM2Z_API               decorate public functions (default: extern, or static with AM2Z_STATIC)
       AM2Z_MALLOC(sz), AM2Z_REALLOC(p, sz), AM2Z_FREE(p)
                              compile-time allocator (define all three or none); a run-time
                              hook with user_data is am2z_set_allocator()
       AM2Z_ASSERT(c)         internal invariant checks (default: assert from <assert.h>)
       AM2Z_JSON_MAX_DEPTH    default nesting limit of the JSON parser (default 256)
       AM2Z_MAX_CALL_DEPTH    default limit of nested ctx calls (default 10)

   THREADING
       Values, states, errors, processors and loggers are immutable once built and carry
       atomic reference counts: share them between threads freely, retain/release from any
       thread. A runtime is thread-safe: any thread may execute, submit, register or read
       stats. An am2z_ctx belongs to the one execution it was given to.

   OWNERSHIP (the one rule)
       A function that returns a pointer gives the caller one reference, which the caller
       releases with the matching _release or _free function, unless its comment says "borrowed".
       A parameter marked "consumed" takes over the caller's reference, also on failure.
       Every other pointer parameter is borrowed for the duration of the call.
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

/* Library calls that can fail return a status. Processor outcomes use am2z_result /
   am2z_outcome instead, which carry a structured am2z_error. */
typedef enum am2z_status {
    AM2Z_OK = 0,
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
    AM2Z_STATUS_CONFLICT          /* optimistic update lost too many races */
} am2z_status;

/* Static text, never NULL. */
AM2Z_API const char *am2z_status_string(am2z_status status);

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
   never a valid value; functions given NULL treat it as absent and do not crash.
   Editing functions follow copy-on-write: they consume the container, edit it in place
   when the caller held the only reference, and otherwise copy only the spine that
   changes (children are shared, never deep-copied). */

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

/* Constructors: each returns a new reference, or NULL when out of memory. */
AM2Z_API am2z_value *am2z_value_null(void);
AM2Z_API am2z_value *am2z_value_bool(int b);
AM2Z_API am2z_value *am2z_value_int(int64_t i);
AM2Z_API am2z_value *am2z_value_double(double d); /* NaN and infinities become null */
AM2Z_API am2z_value *am2z_value_string(const char *s);          /* NUL-terminated, copied */
AM2Z_API am2z_value *am2z_value_string_n(const char *s, size_t len); /* copied */
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
AM2Z_API const am2z_value *am2z_value_find(const am2z_value *object, const char *key, size_t key_len); /* borrowed */

/* Paths. "order.items[2].price" (dot keys and [index]) or a JSON Pointer
   "/order/items/2/price" (leading '/', "~0" and "~1" escapes). "" is v itself. */
AM2Z_API const am2z_value *am2z_value_get(const am2z_value *v, const char *path); /* borrowed, NULL if absent */
AM2Z_API int64_t am2z_value_get_int(const am2z_value *v, const char *path, int64_t def);
AM2Z_API double am2z_value_get_double(const am2z_value *v, const char *path, double def);
AM2Z_API int am2z_value_get_bool(const am2z_value *v, const char *path, int def);
AM2Z_API const char *am2z_value_get_string(const am2z_value *v, const char *path, const char *def); /* borrowed */

/* Editing: v and x are consumed; the result is the edited value (a new reference), or
   NULL on failure (bad path, wrong container type, index out of range, no memory), in
   which case both inputs have been released. set creates missing objects along the path;
   an index equal to the array length appends. */
AM2Z_API am2z_value *am2z_value_set(am2z_value *v, const char *path, am2z_value *x);
AM2Z_API am2z_value *am2z_value_remove(am2z_value *v, const char *path);
AM2Z_API am2z_value *am2z_value_append(am2z_value *v, const char *path, am2z_value *x); /* array at path */
/* Shallow merge: every member of `from` (borrowed) is set on object `into` (consumed). */
AM2Z_API am2z_value *am2z_value_merge(am2z_value *into, const am2z_value *from);

/* Deep equality (objects compare as unordered maps; 1 and 1.0 are not equal) and a
   hash that is the same for equal values in every process and run. */
AM2Z_API int am2z_value_equal(const am2z_value *a, const am2z_value *b);
AM2Z_API uint64_t am2z_value_hash(const am2z_value *v);

/* JSON (RFC 8259). Limits protect against hostile input; zero fields take the default. */
typedef struct am2z_json_limits {
    int max_depth;          /* nesting of arrays/objects; default AM2Z_JSON_MAX_DEPTH (256) */
    size_t max_size;        /* bytes of input; default 64 MiB */
    size_t max_string;      /* bytes of one decoded string; default 16 MiB */
    size_t max_elements;    /* members of one array or object; default 1,000,000 */
} am2z_json_limits;

typedef struct am2z_json_error {
    size_t offset;          /* byte offset of the problem in the input */
    char message[96];       /* "invalid escape", "depth limit 256 exceeded", ... */
} am2z_json_error;

/* Parses exactly one JSON text (len 0 means strlen). Returns a new value, or NULL with
   *err filled (err may be NULL). Invalid UTF-8 and lone surrogates are rejected;
   integers that do not fit int64 become doubles. */
AM2Z_API am2z_value *am2z_json_parse(const char *text, size_t len, const am2z_json_limits *limits,
                                     am2z_json_error *err);

enum { AM2Z_JSON_COMPACT = 0, AM2Z_JSON_PRETTY = 1, AM2Z_JSON_SORTED = 2 };
/* Serialises v; doubles use the shortest text that reads back to the same bits.
   Returns NUL-terminated text that the caller frees with am2z_free, or NULL when out of
   memory; *len (if len != NULL) gets its length. AM2Z_JSON_SORTED sorts object keys
   (bytewise), giving a canonical form for hashing. */
AM2Z_API char *am2z_json_write(const am2z_value *v, int flags, size_t *len);

/* ==== 2. state ======================================================================== */
/* A state is a JSON object value whose "metadata" member holds
   {"version": int, "sessionId": string, "createdAt": ms, "lastUpdated": ms}, the
   shape the original AM2Z stores, so states cross threads, processes and Redis as JSON.
   Every am2z_value_* function works on a state. */

typedef am2z_value am2z_state;

/* data (consumed, may be NULL) must be an object; its members become the state's
   fields. Returns a version-1 state, or NULL when data is not an object. */
AM2Z_API am2z_state *am2z_state_new(const char *session_id, am2z_value *data);
/* Parses JSON text (len 0 means strlen) as the state's data; a "metadata" member in
   the text is kept when it is well-formed, so serialised states read back unchanged. */
AM2Z_API am2z_state *am2z_state_parse(const char *session_id, const char *json, size_t len,
                                      am2z_json_error *err);
AM2Z_API int64_t am2z_state_version(const am2z_state *s);
AM2Z_API const char *am2z_state_session_id(const am2z_state *s); /* borrowed */
AM2Z_API int64_t am2z_state_created_at(const am2z_state *s);
AM2Z_API int64_t am2z_state_last_updated(const am2z_state *s);
/* s consumed; returns the state with version + 1 and lastUpdated = now (the runtimes
   call this after every successful step). */
AM2Z_API am2z_state *am2z_state_bump(am2z_state *s);

/* ==== 3. errors & results ============================================================= */

typedef enum am2z_error_kind {
    AM2Z_ERROR_NONE = 0,
    AM2Z_ERROR_VALIDATION,          /* VALIDATION_FAILED          validation  low      no  */
    AM2Z_ERROR_PROCESSOR_NOT_FOUND, /* PROCESSOR_NOT_FOUND        execution   high     no  */
    AM2Z_ERROR_EXECUTION,           /* PROCESSOR_EXECUTION_FAILED execution   high     yes */
    AM2Z_ERROR_TIMEOUT,             /* OPERATION_TIMEOUT          timeout     medium   yes */
    AM2Z_ERROR_RESOURCE,            /* RESOURCE_EXHAUSTED         resource    high     yes */
    AM2Z_ERROR_NETWORK,             /* NETWORK_ERROR              network     medium   yes */
    AM2Z_ERROR_CONFIGURATION,       /* INVALID_CONFIGURATION      configuration critical no */
    AM2Z_ERROR_BUSINESS,            /* caller's code              business    caller's no  */
    AM2Z_ERROR_CALL_DEPTH,          /* CALL_DEPTH_EXCEEDED        execution   high     no  */
    AM2Z_ERROR_CANCELLED            /* EXECUTION_CANCELLED        execution   medium   no  */
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
    int64_t timestamp_ms;
} am2z_error;

/* Constructors follow the original's messages (see docs). Each returns a new
   reference; strings are copied; values passed in are borrowed. */
AM2Z_API am2z_error *am2z_error_validation(const char *field, const am2z_value *value, const char *reason);
AM2Z_API am2z_error *am2z_error_not_found(const char *processor, const am2z_value *available_names);
/* cause and partial_state are consumed (both may be NULL). */
AM2Z_API am2z_error *am2z_error_execution(const char *processor, const char *execution_id,
                                          am2z_error *cause, am2z_state *partial_state);
AM2Z_API am2z_error *am2z_error_timeout(const char *operation, int64_t timeout_ms);
AM2Z_API am2z_error *am2z_error_resource(const char *resource, int64_t limit, int64_t current);
AM2Z_API am2z_error *am2z_error_network(const char *endpoint, int status_code, am2z_error *cause);
AM2Z_API am2z_error *am2z_error_configuration(const char *key, const char *reason);
AM2Z_API am2z_error *am2z_error_business(const char *code, am2z_severity severity, const char *fmt, ...)
    AM2Z_PRINTF(3, 4);
AM2Z_API am2z_error *am2z_error_call_depth(int max_depth, int current_depth);
AM2Z_API am2z_error *am2z_error_cancelled(const char *reason);

/* Copy-on-write setters: err is consumed, the edited error is returned (NULL only when
   out of memory, with err released). details: members of the object are merged. */
AM2Z_API am2z_error *am2z_error_with_details(am2z_error *err, const am2z_value *details);
AM2Z_API am2z_error *am2z_error_with_location(am2z_error *err, const char *processor,
                                              const char *execution_id);
AM2Z_API am2z_error *am2z_error_with_partial(am2z_error *err, am2z_state *partial_state /* consumed */);

AM2Z_API am2z_error *am2z_error_retain(const am2z_error *err);
AM2Z_API void am2z_error_release(am2z_error *err);

AM2Z_API const am2z_error *am2z_error_root_cause(const am2z_error *err); /* borrowed */
/* "ProcessorExecutionError: msg -> TimeoutError: msg"; caller frees with am2z_free. */
AM2Z_API char *am2z_error_chain(const am2z_error *err);
/* {name, code, message, category, severity, retryable, processor?, executionId?,
   details, cause?, partialState?, timestamp}: a new reference. */
AM2Z_API am2z_value *am2z_error_to_json(const am2z_error *err);
/* The inverse of to_json; the kind is kept across the round trip. Unknown or missing
   fields get the kind's defaults; a non-object gives NULL. */
AM2Z_API am2z_error *am2z_error_from_json(const am2z_value *json);
AM2Z_API const char *am2z_error_kind_name(am2z_error_kind kind);        /* static */
AM2Z_API const char *am2z_error_category_name(am2z_error_category c);  /* static */
AM2Z_API const char *am2z_severity_name(am2z_severity s);              /* static */

/* A processor's result: success carries a state, failure an error (and the error may
   carry a partial state). A result owns the references inside it. */
typedef struct am2z_result {
    am2z_state *state;  /* success: non-NULL */
    am2z_error *error;  /* failure: non-NULL, and state is NULL */
} am2z_result;

AM2Z_API am2z_result am2z_ok(am2z_state *state);  /* consumed; NULL gives a failure */
AM2Z_API am2z_result am2z_fail(am2z_error *error); /* consumed; NULL gives a generic failure */
AM2Z_API int am2z_result_is_ok(const am2z_result *r);
AM2Z_API void am2z_result_clear(am2z_result *r);  /* releases both and zeroes r */

typedef am2z_result (*am2z_result_fn)(am2z_state *state /* consumed */, void *user_data);
typedef am2z_error *(*am2z_error_map_fn)(am2z_error *error /* consumed */, void *user_data);
/* r is consumed by all three. and_then runs fn on success (fn returns a Result); map
   wraps a state->state function; map_error rewrites the error of a failure. */
AM2Z_API am2z_result am2z_result_and_then(am2z_result r, am2z_result_fn fn, void *user_data);
AM2Z_API am2z_result am2z_result_map_error(am2z_result r, am2z_error_map_fn fn, void *user_data);
/* All successes: a success whose state is the array of the states in order. Otherwise
   the first failure in order. results[] are consumed. */
AM2Z_API am2z_result am2z_result_combine(am2z_result *results, size_t count);

/* ==== 4. logging ====================================================================== */

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
    int64_t timestamp_ms;
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

/* NULL desc: info level, human sink on stderr. */
AM2Z_API am2z_logger *am2z_logger_new(const am2z_logger_desc *desc);
/* A logger sharing the parent's sink with more context fields (fields borrowed, its
   members copied over the parent's) and, if source != NULL, another source. */
AM2Z_API am2z_logger *am2z_logger_child(const am2z_logger *parent, const am2z_value *fields,
                                        const char *source);
AM2Z_API am2z_logger *am2z_logger_retain(const am2z_logger *logger);
AM2Z_API void am2z_logger_release(am2z_logger *logger);
AM2Z_API int am2z_logger_enabled(const am2z_logger *logger, am2z_log_level level);
/* One entry, written whole (lines never interleave). fields (borrowed) may be NULL. */
AM2Z_API void am2z_log(const am2z_logger *logger, am2z_log_level level, const am2z_value *fields,
                       const char *fmt, ...) AM2Z_PRINTF(4, 5);
#define am2z_log_debug(lg, ...) am2z_log((lg), AM2Z_LOG_DEBUG, NULL, __VA_ARGS__)
#define am2z_log_info(lg, ...)  am2z_log((lg), AM2Z_LOG_INFO, NULL, __VA_ARGS__)
#define am2z_log_warn(lg, ...)  am2z_log((lg), AM2Z_LOG_WARN, NULL, __VA_ARGS__)
#define am2z_log_error(lg, ...) am2z_log((lg), AM2Z_LOG_ERROR, NULL, __VA_ARGS__)

/* ==== 5. processors =================================================================== */

typedef struct am2z_ctx am2z_ctx;
typedef struct am2z_processor am2z_processor;

/* A processor function. input is borrowed (valid for the call); return am2z_ok with a
   state you own (am2z_value_retain(input) to pass it on or edit it) or am2z_fail.
   A result with neither state nor error becomes a clear ProcessorExecutionError. */
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
    int64_t delay_ms;      /* base delay; default 100 */
    double multiplier;     /* exponential factor; default 2 */
    int64_t max_delay_ms;  /* cap; default 30000 */
    double jitter;         /* 0..1: the delay is reduced by up to this fraction at random */
    am2z_should_retry_fn should_retry; /* default: retry when error->retryable */
    void *user_data;
} am2z_retry_policy;

typedef struct am2z_queue_config {
    int concurrency;       /* max simultaneous executions of this processor; 0 = unlimited */
    int priority;          /* 0 = normal; 1 is the highest, larger numbers run later (BullMQ) */
    int rate_limit_per_minute; /* 0 = unlimited */
    int64_t delay_ms;      /* start each execution this much later */
} am2z_queue_config;

typedef struct am2z_processor_desc {
    const char *name;            /* required; [A-Za-z0-9_.-], 1..AM2Z_NAME_MAX bytes */
    am2z_processor_fn fn;        /* required for a plain processor */
    const char *description;
    int64_t timeout_ms;          /* 0: the runtime's default; exact, nothing added */
    am2z_retry_policy retry;
    am2z_queue_config queue;
    am2z_processor *const *dependencies; /* registered with it; borrowed */
    size_t dependency_count;
    void *user_data;             /* am2z_ctx_user_data() */
} am2z_processor_desc;

#ifndef AM2Z_NAME_MAX
#define AM2Z_NAME_MAX 128
#endif

/* Returns NULL when the desc is invalid (no name, bad characters, no fn). */
AM2Z_API am2z_processor *am2z_processor_new(const am2z_processor_desc *desc);
AM2Z_API am2z_processor *am2z_processor_retain(const am2z_processor *p);
AM2Z_API void am2z_processor_release(am2z_processor *p);
AM2Z_API const char *am2z_processor_name(const am2z_processor *p); /* borrowed */
AM2Z_API const am2z_processor_desc *am2z_processor_desc_of(const am2z_processor *p); /* borrowed */

/* Delay before the attempt after `attempt` (1-based) failed with err, or -1 when the
   policy says stop (attempts used up, should_retry says no). Both runtimes use it. */
AM2Z_API int64_t am2z_retry_delay_ms(const am2z_retry_policy *policy, const am2z_error *err, int attempt);

/* What a processor learns about its execution (the original's ctx.meta). */
typedef struct am2z_meta {
    const char *processor;
    const char *execution_id;  /* stable across the attempts of one execution */
    const char *session_id;
    int attempt;               /* 1-based */
    int call_depth;            /* 0 for a top-level execution */
    int64_t started_at_ms;
} am2z_meta;

/* All pointers returned by ctx functions are borrowed for the execution. */
AM2Z_API const am2z_meta *am2z_ctx_meta(const am2z_ctx *ctx);
AM2Z_API const am2z_logger *am2z_ctx_logger(const am2z_ctx *ctx);
AM2Z_API void *am2z_ctx_user_data(const am2z_ctx *ctx);
/* Non-zero once the execution was cancelled (timeout, stop_session, stop, parent). */
AM2Z_API int am2z_ctx_cancelled(const am2z_ctx *ctx);
/* Milliseconds left before the deadline; INT64_MAX without a deadline. */
AM2Z_API int64_t am2z_ctx_remaining_ms(const am2z_ctx *ctx);
/* Runs another registered processor with this execution's session, depth + 1 and the
   remaining budget. Fails with CallDepthExceededError beyond the runtime's limit. */
AM2Z_API am2z_result am2z_ctx_call(am2z_ctx *ctx, const char *processor, const am2z_state *input);
/* Runs count calls concurrently; results[i] gets the outcome of names[i](inputs[i]). */
AM2Z_API void am2z_ctx_call_many(am2z_ctx *ctx, const char *const *processors,
                                 const am2z_state *const *inputs, size_t count, am2z_result *results);
/* Emits a runtime event; data is consumed (may be NULL). */
AM2Z_API void am2z_ctx_emit(am2z_ctx *ctx, const char *event, am2z_value *data);
/* Emits "processor:progress" {processorName, executionId, progress}. */
AM2Z_API void am2z_ctx_progress(am2z_ctx *ctx, double progress);

/* ==== 6. composition ================================================================== */
/* Each composite is a processor: register it (its children are registered with it),
   nest it in another, call it. Children are referenced, so the caller may release its
   own references after building. */

typedef struct am2z_chain_desc {
    const char *name;
    am2z_processor *const *steps;  /* borrowed */
    size_t count;
    int64_t timeout_ms;            /* 0: the sum of the steps' timeouts */
    const char *description;
} am2z_chain_desc;
AM2Z_API am2z_processor *am2z_chain_new(const am2z_chain_desc *desc);

/* outputs[i] is branch i's state; return the merged state (a new reference) or a failure. */
typedef am2z_result (*am2z_merge_fn)(am2z_ctx *ctx, const am2z_state *input,
                                     const am2z_state *const *outputs, size_t count, void *user_data);
typedef struct am2z_parallel_desc {
    const char *name;
    am2z_processor *const *branches;
    size_t count;
    int64_t timeout_ms;            /* 0: the largest of the branches' timeouts */
    am2z_merge_fn merge;           /* NULL: am2z_merge_3way */
    void *merge_user_data;
    const char *description;
} am2z_parallel_desc;
AM2Z_API am2z_processor *am2z_parallel_new(const am2z_parallel_desc *desc);
/* The default merge: a 3-way merge of each output against the input, in branch order.
   Changed fields apply; elements appended to an array by several branches are all
   kept; conflicting scalar writes go to the last branch and emit "merge:conflict". */
AM2Z_API am2z_result am2z_merge_3way(am2z_ctx *ctx, const am2z_state *input,
                                     const am2z_state *const *outputs, size_t count, void *user_data);

/* Returns a route key (borrowed until the next call) or NULL for the fallback. */
typedef const char *(*am2z_route_fn)(const am2z_state *input, void *user_data);
typedef struct am2z_route { const char *key; am2z_processor *target; } am2z_route;
typedef struct am2z_router_desc {
    const char *name;
    am2z_route_fn select;
    void *user_data;
    const am2z_route *routes;
    size_t count;
    am2z_processor *fallback;      /* may be NULL: "No route found for: <key>" */
    int64_t timeout_ms;
    const char *description;
} am2z_router_desc;
AM2Z_API am2z_processor *am2z_router_new(const am2z_router_desc *desc);

typedef enum am2z_batch_mode {
    AM2Z_BATCH_DEFAULT = 0,   /* fail fast */
    AM2Z_BATCH_FAIL_FAST,     /* the first failure by index fails the batch */
    AM2Z_BATCH_SETTLE_ALL     /* every item runs; failures are listed per item */
} am2z_batch_mode;
typedef struct am2z_batch_desc {
    const char *name;
    am2z_processor *target;       /* registered with the batch */
    const am2z_value *payloads;   /* array of states fixed at build time (borrowed), or */
    const char *items_path;       /* path of an array in the input read at run time */
    const char *results_path;     /* where outputs go; default items_path, else "results" */
    am2z_batch_mode mode;
    int64_t timeout_ms;
    const char *description;
} am2z_batch_desc;
AM2Z_API am2z_processor *am2z_batch_new(const am2z_batch_desc *desc);

/* ==== 7. runtime interface ============================================================ */

typedef struct am2z_runtime am2z_runtime;

/* The final outcome of one execution (after all retries). The caller owns it and
   clears it with am2z_outcome_clear. */
typedef struct am2z_outcome {
    am2z_state *state;           /* success: the final state; failure: partial or input, may be NULL */
    am2z_error *error;           /* NULL on success */
    int attempts;                /* attempts made */
    am2z_error **attempt_errors; /* the error of each failed attempt, in order */
    size_t attempt_error_count;
    int64_t execution_us;        /* wall time from start to final outcome */
    int64_t started_at_ms;
    char execution_id[64];
} am2z_outcome;
AM2Z_API void am2z_outcome_clear(am2z_outcome *out);

typedef struct am2z_execution am2z_execution; /* a submitted execution */

/* Events: handlers run on the thread that emits (a worker, or a runtime thread for
   session events) and must be quick; data is borrowed for the call. "*" receives all. */
typedef void (*am2z_event_fn)(const char *event, const am2z_value *data, void *user_data);

AM2Z_API am2z_status am2z_runtime_register(am2z_runtime *rt, am2z_processor *p);
AM2Z_API am2z_status am2z_runtime_register_many(am2z_runtime *rt, am2z_processor *const *ps, size_t count);
AM2Z_API am2z_status am2z_runtime_unregister(am2z_runtime *rt, const char *name);
AM2Z_API int am2z_runtime_is_registered(am2z_runtime *rt, const char *name);
AM2Z_API am2z_value *am2z_runtime_list(am2z_runtime *rt); /* array of names */

AM2Z_API am2z_status am2z_runtime_start(am2z_runtime *rt);
/* Waits up to grace_ms for running executions, then cancels the rest. */
AM2Z_API am2z_status am2z_runtime_stop(am2z_runtime *rt, int64_t grace_ms);

/* Blocking; input borrowed. Session "default" when session_id is NULL. */
AM2Z_API am2z_outcome am2z_runtime_execute(am2z_runtime *rt, const char *processor, const am2z_state *input);
AM2Z_API am2z_outcome am2z_runtime_execute_in_session(am2z_runtime *rt, const char *processor,
                                                      const am2z_state *input, const char *session_id);
/* Returns NULL (and sets *status if non-NULL) when it cannot be submitted. */
AM2Z_API am2z_execution *am2z_runtime_submit(am2z_runtime *rt, const char *processor,
                                             const am2z_state *input, const char *session_id);
/* AM2Z_OK with *out filled, or AM2Z_STATUS_TIMEOUT (still running; wait again or free). */
AM2Z_API am2z_status am2z_execution_wait(am2z_execution *e, int64_t timeout_ms, am2z_outcome *out);
/* Frees the handle; an unfinished execution is cancelled and its result discarded. */
AM2Z_API void am2z_execution_free(am2z_execution *e);
/* Runs count executions concurrently; outs[i] belongs to inputs[i]. */
AM2Z_API am2z_status am2z_runtime_execute_many(am2z_runtime *rt, const char *processor,
                                               const am2z_state *const *inputs, size_t count,
                                               const char *session_id, am2z_outcome *outs);

AM2Z_API am2z_status am2z_runtime_stop_session(am2z_runtime *rt, const char *session_id, int64_t grace_ms);
AM2Z_API am2z_value *am2z_runtime_stats(am2z_runtime *rt);
AM2Z_API am2z_value *am2z_runtime_session_stats(am2z_runtime *rt, const char *session_id);
AM2Z_API am2z_value *am2z_runtime_active_sessions(am2z_runtime *rt);

/* Returns a handler id > 0, or 0 on failure. */
AM2Z_API int am2z_runtime_on(am2z_runtime *rt, const char *event, am2z_event_fn fn, void *user_data);
AM2Z_API void am2z_runtime_off(am2z_runtime *rt, int handler_id);
/* Stops (grace 0) if running and frees everything. */
AM2Z_API void am2z_runtime_free(am2z_runtime *rt);

/* ---- 7b. for runtime implementers (the queue runtime in am2z_resp.h uses these) ----
   The shared part of a runtime (processor registry with dependency registration and
   cycle detection, event handlers, logger) lives in am2z_runtime; a runtime supplies
   the execution side through am2z_runtime_ops. Users never need this part. */

typedef struct am2z_runtime_ops {
    am2z_status (*start)(am2z_runtime *rt);
    am2z_status (*stop)(am2z_runtime *rt, int64_t grace_ms);
    /* Required. Returns NULL with *status set on failure. */
    am2z_execution *(*submit)(am2z_runtime *rt, const char *processor, const am2z_state *input,
                              const char *session_id, am2z_status *status);
    am2z_status (*wait)(am2z_execution *e, int64_t timeout_ms, am2z_outcome *out);
    void (*free_execution)(am2z_execution *e);
    /* Optional fast paths; NULL means built from submit + wait. */
    am2z_outcome (*execute)(am2z_runtime *rt, const char *processor, const am2z_state *input,
                            const char *session_id);
    am2z_status (*execute_many)(am2z_runtime *rt, const char *processor, const am2z_state *const *inputs,
                                size_t count, const char *session_id, am2z_outcome *outs);
    am2z_status (*stop_session)(am2z_runtime *rt, const char *session_id, int64_t grace_ms);
    am2z_value *(*stats)(am2z_runtime *rt);
    am2z_value *(*session_stats)(am2z_runtime *rt, const char *session_id);
    am2z_value *(*active_sessions)(am2z_runtime *rt);
    /* Told after the registry changed (may be NULL). */
    void (*registered)(am2z_runtime *rt, am2z_processor *p);
    void (*unregistered)(am2z_runtime *rt, const char *name);
    void (*destroy)(am2z_runtime *rt); /* frees the runtime's own data, not rt */
} am2z_runtime_ops;

/* ops is borrowed for the runtime's lifetime; impl is the runtime's own data. */
AM2Z_API am2z_runtime *am2z_runtime_create(const am2z_runtime_ops *ops, void *impl, am2z_logger *logger);
AM2Z_API void *am2z_runtime_impl(const am2z_runtime *rt);
AM2Z_API const am2z_logger *am2z_runtime_logger(const am2z_runtime *rt); /* borrowed */
/* A new reference to the registered processor, or NULL. */
AM2Z_API am2z_processor *am2z_runtime_lookup(am2z_runtime *rt, const char *name);
/* Delivers an event to the handlers (data borrowed). */
AM2Z_API void am2z_runtime_emit(am2z_runtime *rt, const char *event, const am2z_value *data);
/* A new execution id "<processor>-<ms>-<random>", written to buf (64 bytes). */
AM2Z_API void am2z_execution_id(const char *processor, char buf[64]);

/* How a runtime serves the ctx functions of the executions it runs. */
typedef struct am2z_ctx_ops {
    void (*call_many)(am2z_ctx *ctx, const char *const *processors, const am2z_state *const *inputs,
                      size_t count, am2z_result *results);
    void (*emit)(am2z_ctx *ctx, const char *event, am2z_value *data /* consumed */);
    int (*cancelled)(const am2z_ctx *ctx);
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
    int64_t deadline_ns;         /* am2z_monotonic_ns() deadline; 0 = none */
};

/* Runs one attempt of p (any kind: composites run their children through ctx->ops):
   calls the function, turns an ill-formed result into a ProcessorExecutionError, and
   fills in the error's processor and execution id. input borrowed. */
AM2Z_API am2z_result am2z_processor_invoke(const am2z_processor *p, am2z_ctx *ctx, const am2z_state *input);
/* The timeout a runtime applies to p: its own, a composite's derived one, or default_ms. */
AM2Z_API int64_t am2z_processor_timeout_ms(const am2z_processor *p, int64_t default_ms);

/* ==== 8. local runtime ================================================================ */

typedef struct am2z_local_desc {
    int workers;                /* default: number of CPUs */
    int64_t default_timeout_ms; /* for processors without one; default 60000 */
    int max_call_depth;         /* default AM2Z_MAX_CALL_DEPTH (10) */
    size_t queue_capacity;      /* pending executions; default 65536 */
    am2z_logger *logger;        /* borrowed (retained); default: info to stderr */
} am2z_local_desc;

/* NULL desc: all defaults. The runtime is started. Free with am2z_runtime_free. */
AM2Z_API am2z_runtime *am2z_local_runtime_new(const am2z_local_desc *desc);

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
#include <pthread.h>
#include <unistd.h>

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
    case AM2Z_OK: return "ok";
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
    }
    return "unknown status";
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

/* Atomic reference counts shared by every refcounted object. */
#define am2z__atomic_inc(p) __atomic_add_fetch((p), 1, __ATOMIC_RELAXED)
#define am2z__atomic_dec(p) __atomic_sub_fetch((p), 1, __ATOMIC_ACQ_REL)
#define am2z__atomic_load(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define am2z__atomic_store(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* ==== 1. values ======================================================================= */

/* ==== 2. state ======================================================================== */

/* ==== 3. errors & results ============================================================= */

/* ==== 4. logging ====================================================================== */

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
};

/* Every processor that must be registered together with p (borrowed; *out stays valid
   while p is alive). The registry walks this recursively for registration and cycle
   detection. */
AM2Z__PRIVATE size_t am2z__processor_children(const am2z_processor *p, am2z_processor *const **out) {
    if (out) *out = p ? p->children : NULL;
    return p ? p->child_count : 0;
}

/* ==== 6. composition ================================================================== */

/* ==== 7. runtime interface ============================================================ */

/* ==== 8. local runtime ================================================================ */

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
