/*
 * batchcore.h — the public C ABI of libbatchcore.so
 *
 * batchcore is a CPU inference and training core for small transformer language
 * models: continuous batching, paged KV-cache management and optimizer steps,
 * driven from C, C++, Rust or the shell through this one header.
 *
 * Conventions (they hold for every function in this file):
 *
 *  - Names are bc_<noun>_<verb>. Handles are opaque (`typedef struct bc_x bc_x;`).
 *  - Every fallible call returns a bc_status; BC_OK (0) is success. On failure a
 *    human-readable message is available from bc_last_error() on the same thread,
 *    and outputs and handle state are left exactly as they were before the call.
 *  - Outputs come back through pointer arguments. Variable-size outputs use a size
 *    query followed by a copy into a caller-owned buffer.
 *  - Every bc_<x>_create / bc_<x>_load has a bc_<x>_free that accepts NULL.
 *  - Option structs start with `uint32_t struct_size`, set by their
 *    bc_<x>_params_default(). The library reads only the fields that struct_size
 *    covers, so a caller compiled against an older header keeps working when
 *    fields are appended; fields it does not know get their defaults.
 *  - Ownership is stated on each function. Unless stated otherwise, pointers passed
 *    in are borrowed for the duration of the call only.
 *  - Thread safety is stated per handle. Functions without a handle are thread-safe.
 *  - Nothing in the library aborts the caller's process on bad input: NULL pointers,
 *    wrong sizes, out-of-range values and corrupt files produce an error status.
 */
#ifndef BATCHCORE_H
#define BATCHCORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------- */
/* Versions                                                                  */
/* ------------------------------------------------------------------------- */

/** Library release version (semantic versioning). */
#define BC_VERSION_MAJOR 0
#define BC_VERSION_MINOR 1
#define BC_VERSION_PATCH 0
#define BC_VERSION_STRING "0.1.0"

/**
 * ABI version. Bumped on every incompatible change of this header (removed or
 * changed function, struct layout change other than appending a field to a
 * struct_size-prefixed params struct). The shared object's SONAME carries the
 * major ABI generation: libbatchcore.so.0.
 */
#define BC_ABI_VERSION 1

/**
 * The library's version as "MAJOR.MINOR.PATCH". Never NULL.
 * Ownership: a static string owned by the library, valid for the process lifetime.
 * Thread-safe.
 */
const char *bc_version(void);

/**
 * The ABI version the library was built with; compare with BC_ABI_VERSION to
 * detect a header/library mismatch at run time. Thread-safe.
 */
uint32_t bc_abi_version(void);

/* ------------------------------------------------------------------------- */
/* Status codes and errors                                                   */
/* ------------------------------------------------------------------------- */

/** Result of every fallible call. The numeric values are stable. */
typedef enum bc_status {
    BC_OK = 0,
    BC_E_INVALID_ARGUMENT = 1, /**< NULL pointer, wrong size, out-of-range value */
    BC_E_IO = 2,               /**< a file could not be opened, read or written */
    BC_E_FORMAT = 3,           /**< corrupt, truncated or mismatched data */
    BC_E_UNSUPPORTED = 4,      /**< valid request this build does not support */
    BC_E_OUT_OF_MEMORY = 5,    /**< an allocation failed or would exceed a limit */
    BC_E_KV_FULL = 6,          /**< the KV cache has no free block for the request */
    BC_E_BAD_STATE = 7,        /**< the handle is not in a state that allows the call */
    BC_E_CANCELLED = 8,        /**< the operation was cancelled by the caller */
    BC_E_NON_FINITE = 9,       /**< NaN or Inf met where finite values are required */
    BC_E_NOT_FOUND = 10,       /**< a named item (tensor, key, id) does not exist */
    BC_E_INTERNAL = 11         /**< a bug in batchcore: please report it */
} bc_status;

/**
 * A short constant description of a status code ("invalid argument", ...).
 * Unknown codes give "unknown status". Never NULL; static storage. Thread-safe.
 */
const char *bc_status_string(bc_status status);

/**
 * The message of the most recent failed bc_ call on the calling thread, or ""
 * when no call on this thread has failed yet. Never NULL.
 * Ownership: owned by the library; valid until the next failing bc_ call on the
 * same thread (successful calls leave it untouched). Thread-local.
 */
const char *bc_last_error(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BATCHCORE_H */
