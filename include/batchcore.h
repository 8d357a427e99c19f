/*
 * batchcore.h — the public C ABI of libbatchcore.so
 *
 * batchcore is a CPU inference core for small transformer language models, with the
 * optimizer side of training: continuous batching, paged KV-cache management and
 * optimizer steps over caller-computed gradients,
 * driven from C, C++, Rust or the shell through this one header.
 *
 * Conventions (they hold for every function in this file):
 *
 *  - Names are bc_<noun>_<verb>. Handles are opaque (`typedef struct bc_x bc_x;`).
 *  - Every fallible call returns a bc_status; BC_OK (0) is success. On failure a
 *    human-readable message is available from bc_last_error() on the same thread,
 *    and outputs and handle state are left exactly as they were before the call.
 *  - bc_last_error() changes only when a call fails: a successful call (and every
 *    function that returns no bc_status) leaves the calling thread's message as it
 *    was. So read it right after the failing call; an empty message does not mean
 *    that the previous call succeeded, the status does.
 *  - Outputs come back through pointer arguments. Variable-size outputs use a size
 *    query followed by a copy into a caller-owned buffer.
 *  - Every bc_<x>_create / bc_<x>_load has a bc_<x>_free that accepts NULL.
 *  - Option structs start with `uint32_t struct_size`, set by their
 *    bc_<x>_default(out, sizeof *out). The library reads (and writes) only the bytes
 *    struct_size covers, so a caller compiled against an older header keeps working
 *    when fields are appended; fields it does not know get their defaults. Result
 *    structs also start with struct_size, which the caller sets before the call.
 *    bc_batch follows the same rule (bc_batch_default). A struct the library fills
 *    as an array element (bc_event) has no struct_size: the call takes the caller's
 *    element size (sizeof(bc_event)) as an argument and writes element i at byte
 *    offset i * size, only the bytes that size covers.
 *  - Structs have no implicit padding: every byte is a named field, and fields named
 *    reserved* are written as 0 by the library (set them to 0; the _default functions
 *    do), so two results of equal state compare equal with memcmp.
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
 * struct_size-prefixed struct or to bc_event). The shared object's SONAME carries
 * the same number: ABI 2 is libbatchcore.so.2, so a program linked against one ABI
 * never loads a library of another.
 *
 * ABI 2 (from ABI 1): bc_batch starts with struct_size (bc_batch_default);
 * bc_engine_poll takes the caller's sizeof(bc_event); bc_event's fields are reordered
 * without padding; implicit padding became reserved fields.
 */
#define BC_ABI_VERSION 2

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
 * same thread. Successful calls never change it (see the conventions above).
 * Thread-local.
 */
const char *bc_last_error(void);

/* ------------------------------------------------------------------------- */
/* Runtime                                                                   */
/* ------------------------------------------------------------------------- */

/**
 * Sets the number of threads batchcore uses for its parallel work (kernels,
 * optimizer steps, forward passes). 0 = all online cores (the default). Call it between operations, not while another thread is
 * inside the library. Errors: BC_E_INVALID_ARGUMENT when n is negative or > 4096.
 */
bc_status bc_set_num_threads(int32_t n);

/** The number of threads in use (never 0). Thread-safe. */
int32_t bc_get_num_threads(void);

/* ------------------------------------------------------------------------- */
/* Optimizers                                                                */
/* ------------------------------------------------------------------------- */
/*
 * An optimizer updates caller-owned float32 parameter buffers from caller-owned
 * gradient buffers, in parameter groups with their own hyperparameters. The
 * library owns the optimizer state (moments, step counts). Update rules follow
 * PyTorch's torch.optim (SGD, Adam, AdamW, Adagrad, RMSprop; foreach=False), timm's
 * Lamb and Lion, and Adaptive Braking (arXiv 2007.01397) to float32 rounding.
 *
 * Typical loop:
 *   bc_optimizer *opt; bc_optimizer_create(BC_OPTIM_ADAMW, &opt);
 *   bc_optim_hparams hp; bc_optim_hparams_default(BC_OPTIM_ADAMW, &hp, sizeof hp); hp.lr = 3e-4;
 *   uint32_t g; bc_optimizer_add_group(opt, &hp, &g);
 *   bc_optimizer_add_tensor(opt, g, "w", w, dw, n, NULL);
 *   for (...) { compute dw; bc_optimizer_step(opt, NULL, NULL); }
 *   bc_optimizer_free(opt);
 *
 * Thread safety: an optimizer handle is used by one thread at a time (a step
 * itself runs on bc_get_num_threads() threads). Distinct optimizers may run
 * concurrently if they share no buffers.
 */

typedef struct bc_optimizer bc_optimizer;

typedef enum bc_optim_algorithm {
    BC_OPTIM_SGD = 1,      /**< torch.optim.SGD: momentum, dampening, nesterov, weight decay */
    BC_OPTIM_ADAM = 2,     /**< torch.optim.Adam (L2 weight decay), amsgrad */
    BC_OPTIM_ADAMW = 3,    /**< torch.optim.AdamW (decoupled weight decay), amsgrad */
    BC_OPTIM_ADAGRAD = 4,  /**< torch.optim.Adagrad: lr_decay, initial_accumulator_value */
    BC_OPTIM_RMSPROP = 5,  /**< torch.optim.RMSprop: alpha, centered, momentum */
    BC_OPTIM_LAMB = 6,     /**< LAMB as timm Lamb / NVIDIA FusedLAMB (per-tensor trust ratio) */
    BC_OPTIM_LION = 7,     /**< Lion as timm Lion (sign update, decoupled weight decay) */
    BC_OPTIM_ADABRAKE = 8  /**< SGD-momentum with Adaptive Braking (gradient scaled by 1 - alpha*cos(g, v)) */
} bc_optim_algorithm;

/**
 * Hyperparameters of one parameter group. Names follow torch.optim; a field an
 * algorithm does not use is ignored. Booleans are 0/1.
 */
typedef struct bc_optim_hparams {
    uint32_t struct_size;            /**< sizeof(bc_optim_hparams), set by bc_optim_hparams_default */
    uint32_t reserved0;              /**< 0 */
    double lr;                       /**< learning rate, >= 0 */
    double weight_decay;             /**< >= 0; L2 (SGD/Adam/Adagrad/RMSprop/LAMB) or decoupled (AdamW/Lion) */
    double beta1;                    /**< Adam/AdamW/LAMB/Lion, in [0,1) */
    double beta2;                    /**< Adam/AdamW/LAMB in [0,1); Lion in [0,1] */
    double eps;                      /**< >= 0 */
    double momentum;                 /**< SGD, RMSprop, Adaptive Braking */
    double dampening;                /**< SGD */
    double alpha;                    /**< RMSprop smoothing constant; Adaptive Braking strength */
    double lr_decay;                 /**< Adagrad */
    double initial_accumulator_value;/**< Adagrad (used when a tensor is added) */
    double max_grad_norm;            /**< LAMB ONLY: timm Lamb's own clip inside the update (group 0's value; 0 = off).
                                          Not the global clip of any algorithm: that is bc_optim_step_params.max_grad_norm */
    int32_t nesterov;                /**< SGD */
    int32_t amsgrad;                 /**< Adam/AdamW */
    int32_t centered;                /**< RMSprop */
    int32_t maximize;                /**< ascend instead of descend */
    int32_t grad_averaging;          /**< LAMB: first moment takes (1-beta1)*g (1) or g (0) */
    int32_t trust_clip;              /**< LAMB: clamp the trust ratio to <= 1 */
    int32_t always_adapt;            /**< LAMB: apply the trust ratio even with weight_decay 0 */
    int32_t reserved1;               /**< 0 */
} bc_optim_hparams;

/**
 * Fills *out with the reference defaults of `algorithm` (PyTorch's, or timm's for
 * LAMB/Lion) and sets out->struct_size = size. Pass size = sizeof(*out): the library
 * writes only that many bytes, so a caller built against an older header is safe.
 * (Every *_default function below takes the same size argument.)
 * Errors: NULL out, size smaller than 4, unknown algorithm.
 */
bc_status bc_optim_hparams_default(bc_optim_algorithm algorithm, bc_optim_hparams *out, size_t size);

/**
 * Creates an optimizer with no groups. On success *out owns a handle the caller
 * frees with bc_optimizer_free. Errors: NULL out, unknown algorithm.
 */
bc_status bc_optimizer_create(bc_optim_algorithm algorithm, bc_optimizer **out);

/** Frees the optimizer and all its state; NULL is a no-op. Caller buffers are untouched. */
void bc_optimizer_free(bc_optimizer *opt);

/**
 * Adds a parameter group. hparams may be NULL for the algorithm's defaults. On
 * success *group_id (if not NULL) receives the group's index (0, 1, ...).
 * Errors: NULL opt, invalid hyperparameters (negative lr, beta outside [0,1), ...).
 */
bc_status bc_optimizer_add_group(bc_optimizer *opt, const bc_optim_hparams *hparams, uint32_t *group_id);

/**
 * Registers a tensor in a group: `count` float32 parameters at `param` and their
 * gradients at `grad`. Both buffers stay owned by the caller and must stay valid
 * (and not move) until the optimizer is freed; the library reads `grad` and writes
 * `param` only inside bc_optimizer_step. `name` (may be NULL) is copied; names must
 * be unique. On success *tensor_id (if not NULL) receives the tensor's index.
 * Errors: NULL opt/param/grad, count <= 0, unknown group, a param buffer that
 * overlaps one already registered (duplicate registration), grad overlapping param,
 * duplicate name.
 */
bc_status bc_optimizer_add_tensor(bc_optimizer *opt, uint32_t group, const char *name, float *param,
                                  const float *grad, int64_t count, uint32_t *tensor_id);

/**
 * Copies group `group`'s hyperparameters into *out, writing only out->struct_size
 * bytes (set it first, e.g. with bc_optim_hparams_default).
 */
bc_status bc_optimizer_get_hparams(const bc_optimizer *opt, uint32_t group, bc_optim_hparams *out);

/** Replaces group `group`'s hyperparameters (validated first; nothing changes on error). */
bc_status bc_optimizer_set_hparams(bc_optimizer *opt, uint32_t group, const bc_optim_hparams *hparams);

/** Use as `group` in bc_optimizer_set_lr to address every group. */
#define BC_ALL_GROUPS UINT32_MAX

/** Sets the learning rate of one group, or of all with BC_ALL_GROUPS. lr must be finite and >= 0. */
bc_status bc_optimizer_set_lr(bc_optimizer *opt, uint32_t group, double lr);

/** Options of one step. */
typedef struct bc_optim_step_params {
    uint32_t struct_size;   /**< sizeof(bc_optim_step_params) */
    uint32_t reserved0;     /**< 0 */
    double grad_scale;      /**< gradients are multiplied by this (1.0); e.g. 1/accumulation_steps */
    double max_grad_norm;   /**< global L2 clip of the scaled gradients, torch clip_grad_norm_ style; 0 = off */
    int32_t check_finite;   /**< 1 (default): a NaN/Inf gradient skips the step with BC_E_NON_FINITE */
    int32_t reserved1;      /**< 0 */
} bc_optim_step_params;

/** Fills *out with the defaults (grad_scale 1, no clipping, check_finite 1); size = sizeof(*out). */
bc_status bc_optim_step_params_default(bc_optim_step_params *out, size_t size);

/** What a step did. */
typedef struct bc_optim_step_result {
    uint32_t struct_size;   /**< set by the caller to sizeof(bc_optim_step_result) */
    uint32_t reserved0;     /**< 0 */
    double grad_norm;       /**< global L2 norm of the scaled gradients before clipping (NaN if not computed) */
    double clip_coef;       /**< factor applied by clipping (1 = none) */
    int64_t step;           /**< steps taken (group 0) after this call */
    int32_t skipped;        /**< 1 if the step was skipped because of a non-finite gradient */
    int32_t reserved1;      /**< 0 */
    /* Appended (gradient delay). */
    int32_t applied;        /**< 1 if a gradient was applied; 0 when skipped, and during the first
                                 gradient_delay steps of bc_trainer_step (bc_trainer_params) */
    int32_t reserved2;      /**< 0 */
} bc_optim_step_result;

/**
 * One step over every registered tensor. params may be NULL (defaults); result may
 * be NULL. On BC_E_NON_FINITE no parameter or state changed, and *result (if given)
 * still reports grad_norm and skipped = 1: this is the one failure that fills an
 * output. Errors: NULL opt, bad params, non-finite gradient, out of memory (state is
 * allocated on the first step that needs it), BC_E_BAD_STATE when a group has taken
 * 2^53 steps (the largest count the update rules represent exactly; nothing changed).
 */
bc_status bc_optimizer_step(bc_optimizer *opt, const bc_optim_step_params *params, bc_optim_step_result *result);

/** Number of groups / tensors / total parameters; any output may be NULL, not all. Errors: NULL opt, all outputs NULL. */
bc_status bc_optimizer_info(const bc_optimizer *opt, uint32_t *groups, uint32_t *tensors, int64_t *parameters);

/**
 * Fills *out with an empty result (grad_norm NaN, clip_coef 1, step 0) and sets
 * out->struct_size = size: the usual way to prepare the output of bc_optimizer_step
 * and bc_trainer_step. size = sizeof(*out).
 */
bc_status bc_optim_step_result_default(bc_optim_step_result *out, size_t size);

/**
 * Steps group `group` has taken (restored by bc_optimizer_load / load_buffer): what an
 * LR schedule resumes from. Errors: NULL arguments, group out of range.
 */
bc_status bc_optimizer_get_step(const bc_optimizer *opt, uint32_t group, int64_t *step);

/**
 * Saves the full optimizer state (algorithm, all groups' hyperparameters and step
 * counts, every tensor's name, size and state buffers; not the parameters) to a
 * file: versioned, little-endian, CRC-32 checked. The file is written to a
 * temporary name and renamed, so a crash never leaves a half-written state file.
 */
bc_status bc_optimizer_save(const bc_optimizer *opt, const char *path);

/**
 * Loads a state saved from an optimizer with the same algorithm, groups and
 * tensors (same count, order, sizes and names). The whole file is validated before
 * anything changes: a corrupt, truncated or mismatched file returns BC_E_FORMAT and
 * leaves the optimizer as it was — so does a file whose checksum is valid but whose
 * values are out of range (a step count outside 0...2^53, unknown flag bits, a negative
 * second moment, hyperparameters bc_optimizer_add_group would refuse). Resuming gives
 * bit-identical results to never stopping.
 */
bc_status bc_optimizer_load(bc_optimizer *opt, const char *path);

/** Size in bytes of the state bc_optimizer_save_buffer would write now. */
bc_status bc_optimizer_state_size(const bc_optimizer *opt, size_t *size);

/**
 * Writes the state into the caller's buffer of `capacity` bytes; *written gets the
 * size. Errors: capacity too small (BC_E_INVALID_ARGUMENT, nothing written).
 */
bc_status bc_optimizer_save_buffer(const bc_optimizer *opt, void *buffer, size_t capacity, size_t *written);

/** Loads state from a buffer, with the same validation as bc_optimizer_load. */
bc_status bc_optimizer_load_buffer(bc_optimizer *opt, const void *buffer, size_t size);

/* ------------------------------------------------------------------------- */
/* Learning-rate schedules                                                   */
/* ------------------------------------------------------------------------- */

typedef enum bc_lr_schedule_kind {
    BC_LR_CONSTANT = 0,       /**< base_lr (after an optional linear warmup) */
    BC_LR_WARMUP_COSINE = 1,  /**< linear warmup, then cosine from base_lr to min_lr at total_steps */
    BC_LR_WARMUP_LINEAR = 2,  /**< linear warmup, then linear from base_lr to min_lr at total_steps */
    BC_LR_WSD = 3             /**< warmup-stable-decay: warmup, constant, then linear decay over the last decay_steps */
} bc_lr_schedule_kind;

typedef struct bc_lr_schedule {
    uint32_t struct_size;  /**< sizeof(bc_lr_schedule) */
    int32_t kind;          /**< a bc_lr_schedule_kind */
    double base_lr;        /**< peak learning rate */
    double min_lr;         /**< final learning rate */
    int64_t warmup_steps;  /**< linear ramp from 0 over these steps (step s gets base_lr*(s+1)/warmup) */
    int64_t total_steps;   /**< length of the schedule (>= warmup_steps); from it on, min_lr (CONSTANT: base_lr; total unused) */
    int64_t decay_steps;   /**< WSD: length of the final decay phase (> 0, warmup + decay <= total) */
} bc_lr_schedule;

/** Fills *out: constant 1e-3, no warmup; size = sizeof(*out). */
bc_status bc_lr_schedule_default(bc_lr_schedule *out, size_t size);

/**
 * The learning rate for 0-based step `step` under `schedule`; a pure function.
 * Errors: NULL arguments, negative step or lengths, warmup/decay longer than
 * total_steps, unknown kind, non-finite or negative rates.
 */
bc_status bc_lr_schedule_eval(const bc_lr_schedule *schedule, int64_t step, double *lr);

/* ------------------------------------------------------------------------- */
/* Exponential moving average of parameters                                  */
/* ------------------------------------------------------------------------- */
/*
 * A model EMA keeps shadow copies of parameter tensors:
 *   shadow = d * shadow + (1 - d) * param, with d = decay^kappa,
 * where kappa is the batch-size scaling factor of the step (the "How to Scale Your
 * EMA" rule: when the batch is scaled by kappa, the decay becomes decay^kappa so the
 * EMA's horizon in samples stays the same). kappa = 1 for the base batch size.
 * Thread safety: one thread at a time per handle.
 */
typedef struct bc_ema bc_ema;

/** Creates an EMA with base decay in [0, 1]. *out is freed with bc_ema_free. */
bc_status bc_ema_create(double decay, bc_ema **out);

/** Frees the EMA and its shadow copies; NULL is a no-op. */
void bc_ema_free(bc_ema *ema);

/**
 * Tracks `count` floats at `param` (caller-owned, must stay valid until the EMA is
 * freed); the shadow starts as a copy of the current values. *tensor_id (optional)
 * receives the index. Errors: NULL, count <= 0, overlap with a tracked tensor.
 */
bc_status bc_ema_add_tensor(bc_ema *ema, const float *param, int64_t count, uint32_t *tensor_id);

/** One EMA update of every tracked tensor with decay^kappa (kappa > 0, finite). */
bc_status bc_ema_update(bc_ema *ema, double kappa);

/** Copies tensor `tensor_id`'s shadow into dst (count must equal the tensor's count). */
bc_status bc_ema_copy(const bc_ema *ema, uint32_t tensor_id, float *dst, int64_t count);

/* ------------------------------------------------------------------------- */
/* Models and tokenizers                                                     */
/* ------------------------------------------------------------------------- */
/*
 * A model is a Llama-family decoder loaded from a GGUF file (F32, F16, BF16, Q8_0,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K tensors; by default projections stay in
 * the file's format: the block formats' products quantize activations to int8 per
 * block of 32, F16/BF16 rows are converted on the fly; F32 and 1-D tensors are float32;
 * see bc_model_params.weights) with its byte-level BPE
 * tokenizer. A model is immutable after load: share one model between threads and
 * contexts. Contexts keep a reference, so a model may be freed while contexts
 * created from it are still alive (it is released with the last of them).
 */
typedef struct bc_model bc_model;

/** Load progress: fraction in [0, 1]. */
typedef void (*bc_progress_callback)(float fraction, void *user_data);

typedef struct bc_model_params {
    uint32_t struct_size;          /**< sizeof(bc_model_params) */
    uint32_t reserved0;            /**< 0 */
    bc_progress_callback progress; /**< optional, called on the loading thread */
    void *progress_user_data;
    int32_t weights;               /**< bc_model_weights: how GGUF weights are held (default native) */
    int32_t reserved1;             /**< 0 */
} bc_model_params;

/** How a loaded model holds its weights (bc_model_params.weights). */
typedef enum bc_model_weights {
    BC_MODEL_WEIGHTS_NATIVE = 0,   /**< projections stay in the file's block or 16-bit format (inference only) */
    BC_MODEL_WEIGHTS_F32 = 1       /**< every tensor dequantized to float32 (required to train the model) */
} bc_model_weights;

/** Fills *out with defaults (no progress callback, native weights); size = sizeof(*out). */
bc_status bc_model_params_default(bc_model_params *out, size_t size);

/**
 * Loads a model from a GGUF file. params may be NULL. On success *out owns a handle
 * freed with bc_model_free. Errors: NULL path/out, weights not a bc_model_weights,
 * BC_E_IO (cannot open/map),
 * BC_E_FORMAT (not GGUF, truncated, hostile or inconsistent), BC_E_UNSUPPORTED
 * (architecture other than llama, tokenizer other than byte-level BPE),
 * BC_E_OUT_OF_MEMORY.
 */
bc_status bc_model_load(const char *path, const bc_model_params *params, bc_model **out);

/** Releases the caller's reference; NULL is a no-op. */
void bc_model_free(bc_model *model);

typedef struct bc_model_info {
    uint32_t struct_size;       /**< set by the caller: sizeof(bc_model_info) */
    char architecture[32];      /**< NUL-terminated, e.g. "llama"; the bytes after the NUL are 0 */
    uint32_t reserved0;         /**< 0 */
    int64_t n_params;           /**< parameter count */
    int32_t n_layer;
    int32_t n_embd;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t n_ff;
    int32_t n_vocab;
    int32_t n_ctx_train;        /**< context length the model was trained with */
    float rope_freq_base;
    int32_t bos_token;          /**< -1 when the model has none */
    int32_t eos_token;          /**< -1 when the model has none */
    int32_t add_bos;            /**< 1 if tokenization with add_special adds BOS */
    int32_t reserved1;          /**< 0 */
    int64_t weight_bytes;       /**< bytes the loaded weights hold in memory (all tensors) */
    char weight_types[64];      /**< NUL-terminated, e.g. "Q4_1:75.0MiB Q8_0:27.0MiB F32:0.1MiB"; 0-padded */
} bc_model_info;

/** Describes the model, writing only info->struct_size bytes. Errors: NULL arguments. */
bc_status bc_model_get_info(const bc_model *model, bc_model_info *info);

/**
 * Tokenizes `text_len` bytes of UTF-8 (invalid bytes are read as U+FFFD) exactly as
 * llama.cpp's llama_tokenize does for the same model. add_special adds BOS/EOS as the
 * model asks; parse_special turns control-token text such as "<|im_start|>" into that
 * token. Size query: with tokens NULL and capacity 0, *n_tokens receives the count.
 * Errors: NULL model/n_tokens, NULL text with text_len > 0, capacity smaller than the
 * count (nothing written).
 */
bc_status bc_tokenize(const bc_model *model, const char *text, size_t text_len, int32_t add_special,
                      int32_t parse_special, int32_t *tokens, size_t capacity, size_t *n_tokens);

/**
 * The UTF-8 bytes of n tokens (control tokens included only when `special` is 1),
 * NUL-terminated. *length receives the byte count without the NUL. Size query: buf
 * NULL and capacity 0. Errors: NULL model/length, NULL tokens with n > 0, a token id
 * outside the vocabulary, capacity < length + 1 (nothing written).
 */
bc_status bc_detokenize(const bc_model *model, const int32_t *tokens, size_t n, int32_t special, char *buf,
                        size_t capacity, size_t *length);

/**
 * Formats a conversation with the model's chat template (ChatML family; a model
 * without a template gets plain ChatML), NUL-terminated into buf, ending with the
 * assistant's turn opener when add_generation_prompt is 1. roles[i]/contents[i] are
 * NUL-terminated. Size query as bc_detokenize. Errors: NULL arguments,
 * BC_E_UNSUPPORTED for a template that is not ChatML-style.
 */
bc_status bc_chat_format(const bc_model *model, const char *const *roles, const char *const *contents,
                         size_t n_messages, int32_t add_generation_prompt, char *buf, size_t capacity,
                         size_t *length);

/* ------------------------------------------------------------------------- */
/* Inference contexts: KV cache + raw decode                                 */
/* ------------------------------------------------------------------------- */
/*
 * A context owns the KV cache of any number of sequences (identified by caller-chosen
 * non-negative seq ids) of one model. bc_decode runs a batch of tokens of several
 * sequences in ONE forward pass, in the spirit of llama.cpp's llama_decode.
 * Thread safety: a context is used by one thread at a time.
 */
typedef struct bc_context bc_context;

/** How cached keys/values are stored. */
typedef enum bc_kv_type {
    BC_KV_F32 = 0,   /**< exact */
    BC_KV_F16 = 1,   /**< half precision */
    BC_KV_INT8 = 2,  /**< int8 with a float scale per token row */
    /** KIVI 4-bit (Liu et al. 2024): keys quantized per channel over each block's tokens,
     *  values per token in groups of 32 channels, asymmetric (min + q*scale, f16 scale and
     *  min). Each sequence's 32 most recent positions (fixed residual R = 32) stay in
     *  float32 until their whole block is older than that; the residual (up to R +
     *  block_size rows of float32 K/V per sequence, a whole prompt while it is being
     *  prefilled) is charged to kv_bytes. Prefix caching reuses only quantized blocks and
     *  always recomputes a prompt's last 32 positions. */
    BC_KV_Q4 = 3,
    /** KIVI 2-bit: as BC_KV_Q4 with 2-bit codes. */
    BC_KV_Q2 = 4
} bc_kv_type;

typedef struct bc_context_params {
    uint32_t struct_size;   /**< sizeof(bc_context_params) */
    int32_t n_ctx;          /**< max positions per sequence; 0 = the model's training context */
    int64_t kv_bytes;       /**< KV cache memory budget in bytes; 0 = 1 GiB */
    int32_t kv_type;        /**< a bc_kv_type; default BC_KV_F32 */
    int32_t block_size;     /**< tokens per KV block; default 16 */
    int32_t prefix_cache;   /**< 1 (default): reuse cached blocks of identical prompt prefixes */
    int32_t reserved0;      /**< 0 */
    /** NULL, or n_layer entries: 0 = full attention, w > 0 = sliding window of w tokens. */
    const int32_t *layer_window;
    /** NULL, or n_layer entries: -1 = the layer stores its own KV, k = it reads layer k's KV
     *  (k < the layer, and layer k stores its own). Copied at create. */
    const int32_t *layer_share;
} bc_context_params;

/** Fills *out with defaults; size = sizeof(*out). */
bc_status bc_context_params_default(bc_context_params *out, size_t size);

/** Creates a context for `model` (params may be NULL). Free with bc_context_free. */
bc_status bc_context_create(bc_model *model, const bc_context_params *params, bc_context **out);

/** Frees the context and its KV cache; NULL is a no-op. */
void bc_context_free(bc_context *ctx);

/**
 * A batch of tokens: token i is tokens[i] at position pos[i] of sequence seq_id[i].
 * Set it up with bc_batch_default(&b, sizeof b) (or `bc_batch b = { sizeof b, ... }`)
 * and fill the fields; the library reads only the bytes struct_size covers, so
 * per-token arrays appended later (NULL = their default) do not break this caller.
 * Byte offsets (x86-64): struct_size 0, n_tokens 4, tokens 8, pos 16, seq_id 24,
 * logits 32; sizeof 40.
 */
typedef struct bc_batch {
    uint32_t struct_size;    /**< sizeof(bc_batch); at least BC_BATCH_MIN_SIZE */
    int32_t n_tokens;
    const int32_t *tokens;
    const int32_t *pos;      /**< each sequence's positions must continue its cache: length, length+1, ... */
    const int32_t *seq_id;   /**< >= 0 */
    const int8_t *logits;    /**< 1 = produce logits for this token; NULL = only the last token */
} bc_batch;

/** The smallest struct_size bc_decode accepts: sizeof(bc_batch) in ABI 2 (every field above). */
#define BC_BATCH_MIN_SIZE 40

/** Fills *out with an empty batch (all fields 0/NULL) and sets out->struct_size = size. */
bc_status bc_batch_default(bc_batch *out, size_t size);

/**
 * Runs the batch: appends every token's keys/values to its sequence and writes one
 * row of n_vocab float logits per token that asked for them, in batch order, into
 * `logits` (capacity in floats). Errors: NULL arguments, batch->struct_size smaller than
 * BC_BATCH_MIN_SIZE or above 65536, n_tokens <= 0, token ids
 * outside the vocabulary, positions that do not continue a sequence, positions past
 * n_ctx, capacity too small, BC_E_KV_FULL when the KV budget cannot hold the batch.
 * On any error no sequence changed.
 */
bc_status bc_decode(bc_context *ctx, const bc_batch *batch, float *logits, size_t logits_capacity);

/** Number of cached positions of a sequence (0 for an unknown one). */
bc_status bc_context_seq_length(const bc_context *ctx, int32_t seq_id, int32_t *length);

/** Keeps the first `length` positions of a sequence and drops the rest (length >= 0). */
bc_status bc_context_seq_truncate(bc_context *ctx, int32_t seq_id, int32_t length);

/** Forgets a sequence; its full blocks stay in the prefix cache until evicted. */
bc_status bc_context_seq_remove(bc_context *ctx, int32_t seq_id);

/**
 * Creates sequence `child` sharing all of `parent`'s cached positions (no copy:
 * blocks are shared and copied on the first write to a shared partial block).
 * Errors: unknown parent, existing child, negative ids.
 */
bc_status bc_context_seq_fork(bc_context *ctx, int32_t parent, int32_t child);

/**
 * For a new (empty) sequence: attaches the cached KV of the longest prefix of
 * tokens[0..n) found in the prefix cache (whole blocks, at most n - 1 tokens) and
 * sets *n_cached to the positions it now holds; decode tokens[*n_cached..n) next.
 * Errors: NULL arguments, n <= 0, a sequence that is not empty.
 */
bc_status bc_context_seq_attach_prefix(bc_context *ctx, int32_t seq_id, const int32_t *tokens, int32_t n,
                                       int32_t *n_cached);

/** KV cache statistics. */
typedef struct bc_kv_stats {
    uint32_t struct_size;      /**< set by the caller: sizeof(bc_kv_stats) */
    uint32_t reserved0;        /**< 0 */
    int64_t blocks_total;      /**< blocks the budget holds (all layer groups) */
    int64_t blocks_used;       /**< referenced by a sequence */
    int64_t blocks_cached;     /**< unreferenced, kept for prefix reuse (evictable) */
    int64_t blocks_free;
    int64_t bytes_total;       /**< the budget */
    int64_t bytes_used;
    int64_t bytes_per_token;   /**< KV bytes one more token of context costs */
    int64_t sequences;
    int64_t tokens;            /**< cached positions over all sequences */
    int64_t prefix_hit_tokens; /**< prompt tokens served from the prefix cache */
    int64_t prefix_query_tokens;
} bc_kv_stats;

/** Fills *stats (writing only stats->struct_size bytes). Errors: NULL arguments. */
bc_status bc_context_kv_stats(const bc_context *ctx, bc_kv_stats *stats);

/* ------------------------------------------------------------------------- */
/* Sequence state: park a conversation on disk and resume it                 */
/* ------------------------------------------------------------------------- */
/*
 * A sequence state holds one sequence's tokens and every cached key/value row a
 * future decode step can read (float32 rows, dequantized for F16/INT8 storage and
 * re-encoded on load), plus a fingerprint of what must match to load it: the model's
 * n_vocab, n_layer and n_embd, the KV row size, kv_type, block_size and every layer's
 * attention kind (layer_window/layer_share). n_ctx, kv_bytes and prefix_cache may
 * differ. The format is versioned, little-endian and CRC-32 checked. Loading into a
 * compatible context and continuing gives the same tokens as never having stopped.
 *
 *   size_t n; bc_context_seq_state_size(ctx, 0, &n);
 *   void *buf = malloc(n); bc_context_seq_save_buffer(ctx, 0, buf, n, &n);
 *   bc_context_free(ctx); ... bc_context_create(model, &cp, &ctx2);
 *   bc_context_seq_load_buffer(ctx2, 0, buf, n);   (continue decoding at position length)
 *
 * Errors common to the five functions: NULL ctx or pointer argument, negative seq
 * (BC_E_INVALID_ARGUMENT).
 */

/**
 * Size in bytes of the state bc_context_seq_save_buffer would write for sequence
 * `seq` now. Errors: BC_E_NOT_FOUND for a sequence the context does not hold.
 */
bc_status bc_context_seq_state_size(const bc_context *ctx, int32_t seq, size_t *size);

/**
 * Writes sequence `seq`'s state into the caller's buffer of `capacity` bytes;
 * *written (may be NULL) gets the size. The sequence is not changed.
 * Errors: BC_E_NOT_FOUND for an unknown sequence, capacity smaller than
 * bc_context_seq_state_size (BC_E_INVALID_ARGUMENT, nothing written).
 */
bc_status bc_context_seq_save_buffer(const bc_context *ctx, int32_t seq, void *buffer, size_t capacity,
                                     size_t *written);

/**
 * Loads a state into sequence `seq`, which must be new or empty (length 0): reserves
 * its blocks, writes its rows and tokens, and names its full blocks for prefix reuse
 * (as if it had been decoded here). The buffer is borrowed for the call. The whole
 * state is validated before anything changes. Errors: size 0 (BC_E_INVALID_ARGUMENT);
 * BC_E_FORMAT for a corrupt or truncated state or one saved with a different model or
 * KV layout (see above); BC_E_BAD_STATE when the sequence is not empty; BC_E_KV_FULL
 * when the KV budget (or n_ctx) cannot hold it. On any error nothing changed: in
 * particular a new `seq` still does not exist.
 */
bc_status bc_context_seq_load_buffer(bc_context *ctx, int32_t seq, const void *buffer, size_t size);

/**
 * Saves sequence `seq`'s state to a file (NUL-terminated path). It is written to a
 * temporary name and renamed, so a crash never leaves a half-written state file.
 * Errors: BC_E_NOT_FOUND for an unknown sequence, BC_E_IO.
 */
bc_status bc_context_seq_save(const bc_context *ctx, int32_t seq, const char *path);

/**
 * Loads a state file written by bc_context_seq_save into sequence `seq`, exactly as
 * bc_context_seq_load_buffer. Errors: those of bc_context_seq_load_buffer, and BC_E_IO
 * when the file cannot be opened or read.
 */
bc_status bc_context_seq_load(bc_context *ctx, int32_t seq, const char *path);

/* ------------------------------------------------------------------------- */
/* Sampling and generation                                                   */
/* ------------------------------------------------------------------------- */

typedef struct bc_sampling_params {
    uint32_t struct_size;       /**< sizeof(bc_sampling_params) */
    float temperature;          /**< 0 = greedy (argmax); default 0.8 */
    int32_t top_k;              /**< 0 = off; default 40 */
    float top_p;                /**< 1 = off; default 0.95 */
    float min_p;                /**< 0 = off; default 0.05 */
    float repetition_penalty;   /**< 1 = off */
    float frequency_penalty;    /**< 0 = off */
    float presence_penalty;     /**< 0 = off */
    int32_t penalty_last_n;     /**< tokens the penalties look back at; -1 = all; default 64 */
    int32_t reserved0;          /**< 0 */
    uint64_t seed;              /**< same seed, same text */
} bc_sampling_params;

/** llama.cpp's defaults (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05); size = sizeof(*out). */
bc_status bc_sampling_params_default(bc_sampling_params *out, size_t size);

/**
 * Called for each generated token with the UTF-8 text it completes (never half a
 * character; may be empty) — piece is NOT NUL-terminated. Return 0 to continue,
 * nonzero to stop. If the last tokens end in an incomplete UTF-8 sequence, one final
 * call with token -1 passes those bytes (as U+FFFD).
 */
typedef int32_t (*bc_token_callback)(int32_t token, const char *piece, size_t piece_len, void *user_data);

typedef struct bc_generate_params {
    uint32_t struct_size;       /**< sizeof(bc_generate_params) */
    int32_t seq_id;             /**< sequence to continue (its cached tokens are the context); default 0 */
    int32_t max_tokens;         /**< default 128 */
    int32_t add_special;        /**< tokenize the prompt with BOS/EOS as the model asks; default 1 */
    int32_t parse_special;      /**< control-token text in the prompt becomes tokens; default 1 */
    int32_t stop_at_eog;        /**< stop at an end-of-generation token (not reported); default 1 */
    bc_token_callback callback; /**< optional */
    void *user_data;
} bc_generate_params;

/** Fills *out with defaults; size = sizeof(*out). */
bc_status bc_generate_params_default(bc_generate_params *out, size_t size);

typedef struct bc_generate_result {
    uint32_t struct_size;       /**< set by the caller: sizeof(bc_generate_result) */
    int32_t prompt_tokens;
    int32_t generated_tokens;
    int32_t stop_reason;        /**< 0 max_tokens, 1 end of generation, 2 callback */
    double prompt_seconds;      /**< prefill time */
    double generate_seconds;    /**< sampling + decode time */
} bc_generate_result;

/**
 * Tokenizes `prompt` (NUL-terminated), appends it to sequence params->seq_id of ctx and
 * samples up to max_tokens tokens, streaming them to the callback. gen and sampling may
 * be NULL (defaults); result may be NULL. Errors: NULL ctx/prompt, empty prompt,
 * invalid sampling parameters, prompt + max_tokens beyond the context,
 * BC_E_KV_FULL.
 */
bc_status bc_generate(bc_context *ctx, const char *prompt, const bc_generate_params *gen,
                      const bc_sampling_params *sampling, bc_generate_result *result);

/* ------------------------------------------------------------------------- */
/* Continuous-batching engine                                                */
/* ------------------------------------------------------------------------- */
/*
 * An engine schedules many generation requests over one model and its own paged KV
 * cache: every bc_engine_step runs ONE forward pass in which all running sequences
 * decode a token and waiting prompts are prefilled in chunks filling the token budget.
 * Prompts reuse cached prefixes; on KV exhaustion the lowest-priority, latest request
 * is preempted and recomputed later (never dropped). Results come back as events
 * from bc_engine_poll. A sequence's tokens do not depend on what it is batched with.
 * Thread safety: an engine is used by one thread at a time.
 */
typedef struct bc_engine bc_engine;

/** A LoRA adapter loaded for serving (see "LoRA adapters (serving)" below). */
typedef struct bc_adapter bc_adapter;

typedef struct bc_engine_params {
    uint32_t struct_size;        /**< sizeof(bc_engine_params) */
    int32_t max_batched_tokens;  /**< tokens per step (decodes + prefill chunks); default 512 */
    int32_t max_seqs;            /**< sequences per step; default 64 */
    int32_t policy;              /**< 0 = FCFS (default), 1 = priority */
    int32_t n_ctx;               /**< max positions per sequence; 0 = the model's context */
    int32_t reserved0;           /**< 0 */
    int64_t kv_bytes;            /**< KV budget in bytes; 0 = 1 GiB */
    int32_t kv_type;             /**< a bc_kv_type; default BC_KV_F32 */
    int32_t static_batching;     /**< 1 = admit new requests only when none runs (for comparisons) */
    /** Bytes of LoRA adapter weights kept resident for this engine's requests; 0 = unlimited
     *  (default). When a request needs an adapter whose weights were released and the budget
     *  would be passed, the least-recently-used adapter that no running request uses releases
     *  its weights (its handle stays valid; it is read again from its directory when a request
     *  needs it; if that fails — files deleted or changed — the request finishes with
     *  BC_FINISH_ERROR and the engine goes on). Only adapters in use carry the resident bytes
     *  past the budget. A request whose adapter alone exceeds it is refused at submit
     *  (BC_E_INVALID_ARGUMENT). Negative: BC_E_INVALID_ARGUMENT. */
    int64_t adapter_bytes;
    /** 1 = offline batch mode, for a batch submitted before the first bc_engine_step (as
     *  `batchcore batch --offline` does): requests run in the depth-first order of a prefix
     *  tree over all live requests' prompts at the prefix cache's block granularity
     *  (requests sharing full blocks together, larger shared prefixes first; requests that
     *  share no block, or of different adapters, keep their submission order), a request
     *  whose shared prefix an admitted request is still prefilling waits until it is in
     *  the prefix cache (so each shared prefix is prefilled once), and each step decodes
     *  every running sample first, then prefills in that order as the default mode does
     *  (short prompts first within half of the budget). Without shared prefixes it
     *  schedules as the default mode. Outputs are those of the default mode (batch invariance).
     *  Under policy 1 the order is by priority first. 0 = online (default). With
     *  static_batching, or other values: BC_E_INVALID_ARGUMENT. */
    int32_t offline;
    /** Shared-prefix attention (Hydragen): 1 = rows of one step whose sequences share KV
     *  blocks (prefix-cache hits, forks, n > 1 samples; any kv_type) read the shared blocks
     *  once for all of them, merged with each row's own part by the softmax statistics
     *  (log-sum-exp): equal to the per-row result to float rounding, not bit for bit. With
     *  float32 weights that keeps logits within ~1e-5 relative of the request alone; with
     *  native quantized weights (Q8_0/Q4_x: activations quantized to int8) a rounding
     *  difference can change an int8 code, so logits may move more (measured up to ~3e-2
     *  relative) and greedy outputs may differ from the request alone: a throughput option.
     *  0 (default) = every row reads its own keys/values (bit-identical, batch invariant).
     *  Other values: BC_E_INVALID_ARGUMENT. */
    int32_t shared_prefix_attention;
} bc_engine_params;

/** Fills *out with defaults; size = sizeof(*out). */
bc_status bc_engine_params_default(bc_engine_params *out, size_t size);

/** Creates an engine over `model` (params may be NULL). Free with bc_engine_free. */
bc_status bc_engine_create(bc_model *model, const bc_engine_params *params, bc_engine **out);

/** Frees the engine, its requests and KV cache; NULL is a no-op. */
void bc_engine_free(bc_engine *engine);

typedef struct bc_request_params {
    uint32_t struct_size;        /**< sizeof(bc_request_params) */
    int32_t max_tokens;          /**< default 128 */
    int32_t n;                   /**< parallel samples sharing the prompt's KV; default 1 */
    int32_t priority;            /**< higher first under the priority policy; default 0 */
    int32_t ignore_eos;          /**< 1 = do not stop at end-of-generation tokens */
    int32_t reserved0;           /**< 0 */
    const int32_t *stop_tokens;  /**< extra stop token ids (copied), may be NULL */
    int32_t n_stop_tokens;
    int32_t reserved1;           /**< 0 */
    const char *const *stop_strings; /**< NUL-terminated stop strings (copied), may be NULL */
    int32_t n_stop_strings;
    int32_t reserved2;           /**< 0 */
    uint64_t user_tag;           /**< echoed in events */
    /** LoRA adapter the request runs with (NULL: the base model; default NULL). The request
     *  holds its own reference, so the caller may bc_adapter_free it while the request runs. */
    const bc_adapter *adapter;
    float adapter_scale;         /**< factor on the adapter's own scale (lora_alpha / r); default 1 */
    int32_t reserved3;           /**< 0 */
} bc_request_params;

/** Fills *out with defaults; size = sizeof(*out). */
bc_status bc_request_params_default(bc_request_params *out, size_t size);

/**
 * Queues a request whose prompt is n_tokens token ids (copied). params and sampling
 * may be NULL (defaults; sampling defaults are llama.cpp's). *request_id receives the
 * request's id (> 0). Errors: NULL engine/tokens/request_id, n_tokens <= 0, token ids
 * outside the vocabulary, invalid sampling, prompt + max_tokens beyond n_ctx
 * (BC_E_INVALID_ARGUMENT); BC_E_KV_FULL when one sample's prompt + max_tokens - 1
 * positions do not fit in the whole kv_bytes budget even with nothing else running
 * (the request could never run). n samples that do not fit together are preempted and
 * recomputed in turn (same output), never failed for it; a request that still cannot
 * fit when it runs finishes with BC_FINISH_ERROR and a message; it never stalls the
 * engine or the requests behind it.
 * Scheduling: each step decodes every running sample first, then admits prompts whose
 * rest fits in half of the remaining token budget (so a short request is not held back
 * by a long prefill), then prefills the others in policy order in chunks with what is left
 * (offline mode: see bc_engine_params.offline).
 */
bc_status bc_engine_submit(bc_engine *engine, const int32_t *tokens, int32_t n_tokens, const bc_request_params *params,
                           const bc_sampling_params *sampling, uint64_t *request_id);

/** As bc_engine_submit with a NUL-terminated UTF-8 prompt, tokenized with special-token parsing. */
bc_status bc_engine_submit_text(bc_engine *engine, const char *prompt, const bc_request_params *params,
                                const bc_sampling_params *sampling, uint64_t *request_id);

/**
 * Cancels a live request; its unfinished samples finish with reason cancelled (their
 * FINISHED events are queued for bc_engine_poll). Errors: NULL engine
 * (BC_E_INVALID_ARGUMENT); BC_E_NOT_FOUND for an id that is not live — never issued,
 * already finished or already cancelled — and then nothing changes.
 */
bc_status bc_engine_cancel(bc_engine *engine, uint64_t request_id);

/**
 * Runs one step. *n_processed (optional) receives the tokens processed (0 when idle).
 * *n_live (optional) receives the number of unfinished requests after the step.
 */
bc_status bc_engine_step(bc_engine *engine, int32_t *n_processed, int32_t *n_live);

typedef enum bc_event_kind {
    BC_EVENT_TOKEN = 0,     /**< a generated token and the text it completes; token -1 = text flushed at the end */
    BC_EVENT_FINISHED = 1   /**< a sample finished; text holds its whole output */
} bc_event_kind;

typedef enum bc_finish_reason {
    BC_FINISH_LENGTH = 0, BC_FINISH_STOP = 1, BC_FINISH_CANCELLED = 2, BC_FINISH_ERROR = 3
} bc_finish_reason;

/**
 * One event. Pointers inside are owned by the engine and valid until the next
 * bc_engine_poll / bc_engine_step / bc_engine_free on that engine. Numeric fields a
 * kind does not use are 0 (token is -1 in FINISHED events); text and message are never
 * NULL ("" when empty). New fields are only ever appended;
 * bc_engine_poll takes the caller's sizeof(bc_event), so an older caller keeps working.
 * Byte offsets (x86-64): kind 0, index 4, request_id 8, user_tag 16, token 24,
 * logprob 28, text 32, text_len 40, finish_reason 48, prompt_tokens 52,
 * cached_prompt_tokens 56, generated_tokens 60, ttft_seconds 64, itl_seconds 72,
 * total_seconds 80, message 88; sizeof 96.
 */
typedef struct bc_event {
    int32_t kind;               /**< a bc_event_kind */
    int32_t index;              /**< sample index (0..n-1) */
    uint64_t request_id;
    uint64_t user_tag;          /**< the request's bc_request_params.user_tag */
    int32_t token;              /**< BC_EVENT_TOKEN: the token id */
    float logprob;              /**< BC_EVENT_TOKEN: log-probability under the raw model distribution */
    const char *text;           /**< TOKEN: new text (may be ""); FINISHED: the full output. NUL-terminated */
    size_t text_len;
    int32_t finish_reason;      /**< FINISHED: a bc_finish_reason */
    int32_t prompt_tokens;      /**< FINISHED */
    int32_t cached_prompt_tokens; /**< FINISHED: served from the prefix cache */
    int32_t generated_tokens;   /**< FINISHED: output tokens (a stop token is not counted) */
    double ttft_seconds;        /**< FINISHED: submission to first token (NaN if none) */
    double itl_seconds;         /**< FINISHED: mean inter-token latency (NaN if < 2 tokens) */
    double total_seconds;       /**< FINISHED: submission to finish */
    const char *message;        /**< FINISHED with error: why; else "" */
} bc_event;

/** The smallest event_size bc_engine_poll accepts: sizeof(bc_event) in ABI 2. */
#define BC_EVENT_MIN_SIZE 96

/**
 * Copies up to `capacity` pending events, oldest first, into the caller's array and
 * sets *n_events. Pass event_size = sizeof(bc_event) (sizeof *events): event k is
 * written at byte offset k * event_size, and of each element only its first
 * event_size bytes are written — the fields this library knows, then zeros up to
 * event_size when the caller's bc_event is larger (a newer header's appended fields
 * read as 0). Events not copied stay queued for the next call.
 * Errors: NULL engine or n_events, NULL events with capacity > 0, event_size smaller
 * than BC_EVENT_MIN_SIZE or above 65536, capacity * event_size overflowing.
 */
bc_status bc_engine_poll(bc_engine *engine, bc_event *events, size_t capacity, size_t event_size,
                         size_t *n_events);

typedef struct bc_engine_metrics {
    uint32_t struct_size;       /**< set by the caller: sizeof(bc_engine_metrics) */
    uint32_t reserved0;         /**< 0 */
    int64_t steps;
    int64_t submitted;
    int64_t finished;
    int64_t waiting;            /**< queue depth */
    int64_t running;
    int64_t preemptions;
    int64_t generated_tokens;
    int64_t batched_tokens;
    double busy_seconds;        /**< time spent in bc_engine_step */
    double tokens_per_second;   /**< generated tokens / busy seconds */
    int64_t kv_used_bytes;
    int64_t kv_total_bytes;
    double prefix_hit_rate;
    int64_t adapter_resident_bytes; /**< resident weight bytes of the adapters this engine's requests used */
    int64_t adapter_loads;      /**< adapter weights read again by this engine (after evictions) */
    int64_t adapter_evictions;  /**< adapter weights released by this engine's adapter_bytes budget */
    /* Shared-prefix attention, counted per (query row, layer): */
    int64_t shared_prefix_rows; /**< rows that read a shared prefix once together with other rows */
    int64_t attention_positions; /**< key/value positions all rows attend to (read per row without sharing) */
    int64_t shared_prefix_positions_saved; /**< of those, positions not read again thanks to sharing */
    int64_t shared_prefix_fallbacks; /**< rows sharing KV blocks computed per row (quantized kv_type) */
} bc_engine_metrics;

/** Engine-wide metrics (writing only metrics->struct_size bytes). */
bc_status bc_engine_get_metrics(const bc_engine *engine, bc_engine_metrics *metrics);

/* ------------------------------------------------------------------------- */
/* LoRA adapters (serving)                                                   */
/* ------------------------------------------------------------------------- */
/*
 * A LoRA adapter is a Hugging Face PEFT directory (adapter_config.json with peft_type
 * "LORA", r, lora_alpha, use_rslora, target_modules among q_proj ... down_proj;
 * adapter_model.safetensors with every lora_A/lora_B of the model's layers) loaded for
 * one model. It is applied per sequence of a context (bc_context_set_adapter) or per
 * engine request (bc_request_params.adapter), with a scale multiplying its own.
 *
 * One bc_decode or bc_engine_step mixes rows of any adapters and of none: every
 * projection stays ONE matrix product over all rows, then each adapter's low-rank
 * update scale * (lora_alpha/r) * B·A·x is added to its own rows only (rows grouped by
 * adapter, as S-LoRA / Punica's SGMV), so a sequence's output does not depend on its
 * batch-mates. The prefix cache never shares KV across adapters or scales.
 *
 * Adapters are reference counted like models: contexts (per sequence) and engine
 * requests hold a reference, so bc_adapter_free may be called while they still use it;
 * its memory (float32 A and B) is released with the last reference. An adapter is
 * immutable: share it between threads, contexts and engines of its model.
 */

/**
 * Loads the PEFT adapter directory `dir` (NUL-terminated) for `model`; *out receives a
 * handle freed with bc_adapter_free. Errors: NULL arguments (BC_E_INVALID_ARGUMENT);
 * BC_E_NOT_FOUND (a file missing), BC_E_IO (unreadable); BC_E_FORMAT (bad JSON, r outside 1..1024, a
 * missing or extra tensor, a tensor whose shape does not match r and the model's
 * projection, non-finite values, a truncated or hostile safetensors file);
 * BC_E_UNSUPPORTED (PEFT features batchcore does not implement: DoRA, bias,
 * fan_in_fan_out, layers_to_transform, modules_to_save, other target modules).
 */
bc_status bc_adapter_load(const bc_model *model, const char *dir, bc_adapter **out);

/** Releases the caller's reference; NULL is a no-op. */
void bc_adapter_free(bc_adapter *adapter);

/**
 * Sets the adapter (NULL: none, the base model) and scale of sequence seq_id of ctx for
 * the following bc_decode calls (and bc_context_seq_attach_prefix, which then matches
 * only prefixes cached under the same adapter and scale). The sequence must hold no
 * positions (new, removed, or truncated to 0); a forked child takes its parent's
 * adapter. The context keeps a reference to the adapter. Errors: NULL ctx, negative
 * seq_id, non-finite scale, an adapter loaded for another model (BC_E_INVALID_ARGUMENT);
 * BC_E_BAD_STATE when the sequence holds positions.
 */
bc_status bc_context_set_adapter(bc_context *ctx, int32_t seq_id, const bc_adapter *adapter, float scale);

/* ------------------------------------------------------------------------- */
/* Training: full fine-tuning of a loaded model                              */
/* ------------------------------------------------------------------------- */

/**
 * A trainer computes the loss and the gradients of a loaded model (forward and
 * backward over packed micro-batches) and lets the EXISTING bc_optimizer step its
 * tensors; it does not hold an optimizer of its own.
 *
 *   bc_trainer_params tp; bc_trainer_params_default(&tp, sizeof tp);
 *   tp.micro_batch_tokens = 1024;
 *   bc_trainer *t; bc_trainer_create(model, &tp, &t);        // states its memory first
 *   bc_optimizer *opt; bc_optimizer_create(BC_OPTIM_ADAMW, &opt);
 *   uint32_t g; bc_optimizer_add_group(opt, &hp, &g);
 *   bc_trainer_register(t, opt, g);                         // every trainable tensor
 *   for (each step) {
 *       for (each micro-batch) bc_trainer_micro_batch(t, &batch, &r);   // accumulates
 *       bc_trainer_step(t, opt, NULL, &step, NULL);          // loss / ALL targets of the step
 *   }
 *
 * Loss normalisation: micro-batches accumulate the gradient of the SUMMED
 * cross-entropy of their target tokens; bc_trainer_step divides by the number of
 * target tokens of ALL the step's micro-batches (grad_scale = 1 / targets), so a
 * step's gradient is that of its mean loss per target token, however the tokens fall
 * into micro-batches.
 *
 * Documents are packed back to back in a micro-batch: positions restart at 0 in each
 * document and attention never crosses a document, so a packed document gets exactly
 * the gradient it gets alone (up to float summation order).
 *
 * The trainer owns its model's weights while it exists: do not run a context or an
 * engine of the same model during bc_trainer_micro_batch/step/evaluate. Between those
 * calls, and after bc_trainer_free, contexts and engines of the model generate with the
 * trained weights. One trainer per model at a time (BC_E_BAD_STATE otherwise).
 * Gradients and results are the same bits whatever bc_set_num_threads.
 */
typedef struct bc_trainer bc_trainer;

typedef struct bc_trainer_params {
    uint32_t struct_size;          /**< sizeof(bc_trainer_params) */
    uint32_t micro_batch_tokens;   /**< rows of one forward/backward pass (2048) */
    uint32_t accumulation_steps;   /**< micro-batches per step when the trainer reads data itself (1) */
    int32_t recompute;             /**< 1: activation checkpointing, recompute each layer in backward (0) */
    uint32_t optimizer_slots;      /**< optimizer state buffers per parameter counted in the memory estimate (2: AdamW) */
    uint32_t reserved0;            /**< 0 */
    uint64_t memory_limit;         /**< bytes the trainer may add to the loaded model; 0 = the machine's available memory */
    /* LoRA (appended; a caller whose struct_size stops before them gets a full fine-tune). */
    uint32_t lora_rank;            /**< 0: full fine-tune (0); 1..1024: train LoRA adapters of this rank on the frozen base */
    float lora_alpha;              /**< LoRA alpha; scale = alpha / rank, or alpha / sqrt(rank) with use_rslora (16) */
    uint32_t lora_targets;         /**< BC_LORA_* bits: the projections of every layer that get an adapter (BC_LORA_Q | BC_LORA_V) */
    int32_t use_rslora;            /**< 1: scale alpha / sqrt(rank) (rsLoRA) (0) */
    uint64_t lora_seed;            /**< seed of the adapters' A initialisation (PEFT's: uniform in +-1/sqrt(in); B = 0) (0) */
    /* Gradient delay (appended). */
    uint32_t gradient_delay;       /**< asynchronous mode: 0 = off (0); 1..64: each bc_trainer_step applies the
                                        gradient of D = gradient_delay steps before (see bc_trainer_step) */
    uint32_t reserved1;            /**< 0 */
    /* LoRA dropout (appended). */
    float lora_dropout;            /**< PEFT's lora_dropout: in training passes each input value of an adapter's low-rank
                                        path is dropped with this probability, kept ones scaled by 1/(1-p); 0 <= p < 1 (0).
                                        Masks are a pure function of (lora_seed, step, micro-batch, layer, module, row,
                                        column): the same bits on any thread count and after a checkpoint resume.
                                        bc_trainer_evaluate and inference never drop. Written to adapter_config.json */
    uint32_t compute_type;         /**< (was reserved, 0) BC_COMPUTE_F32 (0) or BC_COMPUTE_BF16: see below */
} bc_trainer_params;

/** bc_trainer_params.compute_type: the arithmetic of the projections' matrix products in
 *  bc_trainer_micro_batch and bc_trainer_evaluate (forward, input and weight gradients).
 *  BC_COMPUTE_F32: float32 throughout (gradients equal PyTorch's float32 ones to rounding).
 *  BC_COMPUTE_BF16: mixed precision, as PyTorch's CPU autocast: each product reads bf16
 *  copies of the weights (made at bc_trainer_create, refreshed after each optimizer step;
 *  4 bytes per projection weight, counted in bc_trainer_memory.trainable_copies) and
 *  bf16-rounded activations / gradients, and sums in float32; its result stays float32, and
 *  weights, gradients, optimizer state, norms, attention, softmax and the loss stay
 *  float32. About twice the matrix throughput on CPUs with AVX-512 BF16; on others
 *  bc_trainer_create fails with BC_E_UNSUPPORTED. Still deterministic (same bits on any
 *  thread count); serving (contexts, engines) always computes in float32. */
enum { BC_COMPUTE_F32 = 0, BC_COMPUTE_BF16 = 1 };

/** LoRA target modules (bc_trainer_params.lora_targets), PEFT's q_proj ... down_proj. */
enum {
    BC_LORA_Q = 1, BC_LORA_K = 2, BC_LORA_V = 4, BC_LORA_O = 8,
    BC_LORA_GATE = 16, BC_LORA_UP = 32, BC_LORA_DOWN = 64,
    BC_LORA_ALL = 127
};

/** Fills *out with the defaults above; size = sizeof(*out). */
bc_status bc_trainer_params_default(bc_trainer_params *out, size_t size);

/** The memory a trainer needs, in bytes, stated before anything is allocated. */
typedef struct bc_trainer_memory {
    uint32_t struct_size;          /**< set by the caller: sizeof(bc_trainer_memory) */
    uint32_t reserved0;            /**< 0 */
    uint64_t model_weights;        /**< the loaded model (already resident) */
    uint64_t trainable_copies;     /**< float32 copies of the projections the optimizer updates (+ the bf16 copies of
                                        BC_COMPUTE_BF16) */
    uint64_t gradients;
    uint64_t activations;          /**< what backward reads, for a full micro-batch */
    uint64_t backward_buffers;
    uint64_t optimizer_state;      /**< optimizer_slots x 4 bytes x parameters */
    uint64_t added;                /**< everything but model_weights: what must fit in memory_limit */
    uint64_t delayed_gradients;    /**< (appended) gradient_delay x gradients: the delay FIFO */
} bc_trainer_memory;

/** The estimate for `model` with `params` (NULL: defaults), allocating nothing. */
bc_status bc_trainer_estimate(const bc_model *model, const bc_trainer_params *params, bc_trainer_memory *out);

/**
 * Creates a trainer on `model` (full fine-tuning: every tensor trainable; the
 * trainer holds a reference to the model). Checks the memory estimate against
 * memory_limit first: BC_E_OUT_OF_MEMORY with the breakdown in bc_last_error() and
 * nothing allocated when it does not fit. Errors: NULL arguments, bad params,
 * BC_E_BAD_STATE when the model already has a trainer.
 * What only training needs (full fine-tuning's trainable copies and gradients, the
 * activations backward reads) is allocated by the first call that needs it
 * (bc_trainer_micro_batch, _register, _get_tensor, _train_step, checkpoints,
 * _set_collectives): a trainer used only to evaluate holds one layer's activations and
 * a chunk of logits beyond the model. Such a call may then fail with
 * BC_E_OUT_OF_MEMORY (nothing changes) if memory was taken meanwhile.
 */
bc_status bc_trainer_create(bc_model *model, const bc_trainer_params *params, bc_trainer **out);

/** Frees the trainer and its gradients (the model keeps the trained weights). NULL is a no-op. */
void bc_trainer_free(bc_trainer *trainer);

/** One trainable tensor: values and gradient are float32, row-major [rows x cols]. */
typedef struct bc_trainer_tensor {
    uint32_t struct_size;          /**< set by the caller: sizeof(bc_trainer_tensor) */
    uint32_t reserved0;            /**< 0 */
    const char *name;              /**< GGUF name ("blk.0.attn_q.weight"); owned by the trainer */
    float *values;                 /**< owned by the trainer, valid until bc_trainer_free */
    float *grad;                   /**< owned by the trainer, valid until bc_trainer_free */
    int64_t count;                 /**< rows x cols */
    int64_t rows;                  /**< 1 for a vector */
    int64_t cols;
} bc_trainer_tensor;

/** Number of trainable tensors. */
bc_status bc_trainer_tensor_count(const bc_trainer *trainer, uint32_t *count);

/** Tensor `index` (0 ..< count). Errors: NULL arguments, index out of range. */
bc_status bc_trainer_get_tensor(const bc_trainer *trainer, uint32_t index, bc_trainer_tensor *out);

/**
 * Adds every trainable tensor to `opt`'s group `group` (bc_optimizer_add_tensor with
 * the names above). On failure no tensor was added.
 */
bc_status bc_trainer_register(bc_trainer *trainer, bc_optimizer *opt, uint32_t group);

/**
 * A micro-batch: n_tokens tokens of n_documents whole documents packed back to back
 * (document k has document_lengths[k] tokens; the lengths sum to n_tokens, each at most
 * the model's context length). targets[i] is the token row i must predict (usually
 * tokens[i + 1] of the same document) or -1 for a row that is not trained on.
 * document_lengths may be NULL: one document.
 */
typedef struct bc_train_batch {
    uint32_t struct_size;          /**< sizeof(bc_train_batch) */
    uint32_t n_tokens;             /**< at most micro_batch_tokens */
    const int32_t *tokens;         /**< [n_tokens] */
    const int32_t *targets;        /**< [n_tokens], -1 or 0 ..< n_vocab */
    const uint32_t *document_lengths; /**< [n_documents] or NULL */
    uint32_t n_documents;          /**< 0 with document_lengths NULL */
    uint32_t reserved0;            /**< 0 */
} bc_train_batch;

/** Loss totals of a micro-batch, an evaluation or a step. */
typedef struct bc_train_result {
    uint32_t struct_size;          /**< set by the caller: sizeof(bc_train_result) */
    uint32_t reserved0;            /**< 0 */
    double loss_sum;               /**< summed cross-entropy (nats) over the target tokens */
    int64_t targets;               /**< target tokens */
    int64_t tokens;                /**< tokens processed */
    int64_t micro_batches;
    double loss;                   /**< loss_sum / targets (NaN with no target) */
} bc_train_result;

/**
 * Forward and backward of one micro-batch, adding the gradient of its summed loss to
 * the pending step's. result may be NULL. Bad input (tokens or targets out of range,
 * lengths that do not add up, more tokens than micro_batch_tokens) changes nothing.
 */
bc_status bc_trainer_micro_batch(bc_trainer *trainer, const bc_train_batch *batch, bc_train_result *result);

/**
 * Ends the step: bc_optimizer_step(opt) with grad_scale = params->grad_scale / targets
 * of the pending micro-batches (params may be NULL: defaults; max_grad_norm clips the
 * normalised gradient), then makes the model use the new weights and zeroes the
 * gradients. totals (the step's loss) and result may be NULL. A non-finite loss or
 * gradient skips the step: BC_E_NON_FINITE, weights and optimizer state unchanged,
 * the gradients discarded; totals is still filled. No pending target: BC_E_BAD_STATE.
 *
 * Gradient delay (bc_trainer_params.gradient_delay = D > 0, asynchronous mode): the
 * step's gradient g_t (after the all-reduce when data-parallel) goes into a FIFO of D
 * gradients, and the step applies g_{t-D}, the gradient computed on the weights of D
 * steps before, scaled by params->grad_scale / ITS OWN target count. The first D steps
 * apply nothing (result->applied = 0; weights and optimizer state unchanged; totals
 * still reports this step's loss). This is the update a deployment that overlaps step
 * t's all-reduce with step t+1's compute makes (the overlap itself is not built).
 * BC_OPTIM_ADABRAKE (alpha 0.5) is the recommended optimizer there. A non-finite
 * gradient is refused when pushed (BC_E_NON_FINITE, the FIFO unchanged). Checkpoints
 * save the FIFO (resuming needs the same gradient_delay: BC_E_INVALID_ARGUMENT
 * otherwise, nothing changed); bc_trainer_discard does not empty it.
 */
bc_status bc_trainer_step(bc_trainer *trainer, bc_optimizer *opt, const bc_optim_step_params *params,
                          bc_train_result *totals, bc_optim_step_result *result);

/** Zeroes the gradients and forgets the pending micro-batches. */
bc_status bc_trainer_discard(bc_trainer *trainer);

/**
 * Makes the model use the tensors' current values (call after changing them yourself,
 * e.g. a bc_optimizer_step of your own with grad_scale = 1 / pending targets — then
 * bc_trainer_discard). bc_trainer_step does this itself.
 */
bc_status bc_trainer_sync(bc_trainer *trainer);

/** Summed loss of a batch without gradients (evaluation; nothing pending changes). */
bc_status bc_trainer_evaluate(bc_trainer *trainer, const bc_train_batch *batch, bc_train_result *result);

/** The pending (accumulated, not yet stepped) totals. */
bc_status bc_trainer_pending(const bc_trainer *trainer, bc_train_result *result);

/* Training from data files: the trainer reads, tokenizes, shuffles and packs them. */

typedef struct bc_train_data_params {
    uint32_t struct_size;          /**< sizeof(bc_train_data_params) */
    uint32_t max_tokens;           /**< longest example in tokens (0); at most micro_batch_tokens and the model's context */
    int32_t chat_targets;          /**< {"messages"}: 0 = assistant turns only (default), 1 = every token */
    int32_t truncate;              /**< over-long example: 0 = error naming its line (default), 1 = keep its first max_tokens (counted) */
    int32_t skip_invalid;          /**< invalid line: 0 = error naming it (default), 1 = skipped (counted) */
    float eval_fraction;           /**< bc_trainer_load_data: share held out as the eval set, 0 ..< 1 (0) */
    uint64_t seed;                 /**< shuffle seed: the order of every epoch is a function of (seed, epoch) (0) */
    uint32_t epochs;               /**< passes over the training set (1) */
    uint32_t reserved0;            /**< 0 */
} bc_train_data_params;

/** Fills *out with the defaults above; size = sizeof(*out). */
bc_status bc_train_data_params_default(bc_train_data_params *out, size_t size);

/** What a data file gave. */
typedef struct bc_train_data_info {
    uint32_t struct_size;          /**< set by the caller: sizeof(bc_train_data_info) */
    uint32_t reserved0;            /**< 0 */
    int64_t examples;              /**< examples in the set (training set for load_data) */
    int64_t tokens;
    int64_t targets;               /**< target tokens */
    int64_t truncated;             /**< examples cut to max_tokens */
    int64_t skipped;               /**< invalid lines skipped */
    int64_t eval_examples;         /**< examples in the eval set (held out, or the eval file) */
    int64_t steps;                 /**< optimizer steps all epochs take (bc_trainer_load_data) */
} bc_train_data_info;

/**
 * Reads the training set from `path`: JSONL (.jsonl/.json) lines {"messages": [...]}
 * (formatted by the model's chat template; targets per chat_targets),
 * {"prompt", "completion"} (the completion and an end token are targets) or {"text"}
 * (every token but the first); or plain text (.txt/.md), cut into documents of
 * max_tokens. Tokenized once; eval_fraction of the examples is held out as the eval
 * set. Replaces any earlier data and restarts the position. An error names the file
 * and line; nothing changes then. info may be NULL.
 */
bc_status bc_trainer_load_data(bc_trainer *trainer, const char *path, const bc_train_data_params *params,
                               bc_train_data_info *info);

/** Reads the eval set from `path` (same formats), replacing a held-out one. */
bc_status bc_trainer_load_eval(bc_trainer *trainer, const char *path, const bc_train_data_params *params,
                               bc_train_data_info *info);

/**
 * One optimizer step from the training set: the next accumulation_steps micro-batches
 * (packed in shuffled order), then bc_trainer_step. totals, result may be NULL.
 * BC_E_NOT_FOUND when every epoch is done (nothing changes); BC_E_BAD_STATE without
 * bc_trainer_load_data; otherwise as bc_trainer_step.
 */
bc_status bc_trainer_train_step(bc_trainer *trainer, bc_optimizer *opt, const bc_optim_step_params *params,
                                bc_train_result *totals, bc_optim_step_result *result);

/** Where the trainer is in its data. */
typedef struct bc_train_progress {
    uint32_t struct_size;          /**< set by the caller: sizeof(bc_train_progress) */
    uint32_t reserved0;            /**< 0 */
    int64_t step;                  /**< optimizer steps taken by bc_trainer_train_step (and restored by a checkpoint) */
    int64_t steps;                 /**< steps all epochs take */
    int64_t epoch;                 /**< current epoch, from 0 */
    int64_t example;               /**< examples consumed in the current epoch */
    int64_t tokens;                /**< training tokens processed so far */
} bc_train_progress;

bc_status bc_trainer_get_progress(const bc_trainer *trainer, bc_train_progress *out);

/**
 * Loss over a whole data set without gradients: path NULL = the eval set; else a
 * file read with `params` (NULL: defaults), e.g. a text of another domain to measure
 * forgetting. result->loss is the mean per target token; perplexity = exp(loss).
 */
bc_status bc_trainer_evaluate_data(bc_trainer *trainer, const char *path, const bc_train_data_params *params,
                                   bc_train_result *result);

/** File formats for the trained weights. */
typedef enum bc_weights_format {
    BC_WEIGHTS_GGUF_F32 = 0,       /**< one GGUF file: the loaded model's metadata, tensors in F32 */
    BC_WEIGHTS_GGUF_F16 = 1,       /**< the same with F16 matrices (vectors stay F32) */
    BC_WEIGHTS_HF = 2              /**< a Hugging Face directory: config.json, model.safetensors (F32), tokenizer files */
} bc_weights_format;

/**
 * Writes the model's current weights (atomically: a crash leaves the old file or
 * none). bc_model_load reads the result back.
 */
bc_status bc_trainer_save_model(bc_trainer *trainer, const char *path, bc_weights_format format);

/**
 * LoRA trainers (lora_rank > 0): writes the adapters as a Hugging Face PEFT directory
 * (created if missing): adapter_config.json (peft_type "LORA", task_type "CAUSAL_LM",
 * r, lora_alpha, use_rslora, target_modules, base_model_name_or_path = the model's
 * path) and adapter_model.safetensors (float32, PEFT's tensor names and shapes for
 * LlamaForCausalLM; q/k rows in Hugging Face order). A full fine-tune: BC_E_BAD_STATE.
 * In LoRA mode the tensors of bc_trainer_get_tensor and checkpoints are the adapters'
 * lora_A/lora_B (PEFT names; lora_B of q_proj/k_proj rows in batchcore's RoPE order),
 * and bc_trainer_save_model writes the base with the adapters merged (scale 1; the
 * trainer's own base weights stay exactly as they were).
 */
bc_status bc_trainer_save_adapter(bc_trainer *trainer, const char *dir);

/**
 * LoRA trainers: writes the adapters as one llama.cpp GGUF adapter file (atomically):
 * general.type "adapter", adapter.type "lora", adapter.lora.alpha, tensors
 * blk.N.attn_q.weight.lora_a (ggml dims [n_in, r]) / .lora_b ([r, n_out]) in F32, q/k
 * rows in llama.cpp's order. llama.cpp scales by alpha / r; a scale that differs from it
 * (rsLoRA, per-module alpha) is folded into lora_b. A full fine-tune: BC_E_BAD_STATE.
 */
bc_status bc_trainer_save_adapter_gguf(bc_trainer *trainer, const char *path);

/**
 * Merges a LoRA adapter into a model file and writes the result: loads the model at
 * model_path (as bc_model_load), reads the adapter at adapter_path (a PEFT directory
 * or a llama.cpp GGUF adapter file; shapes must match the model), adds
 * scale * (adapter scale) * B*A to each adapted projection and writes out_path in
 * `format` (as bc_trainer_save_model; BC_WEIGHTS_GGUF_* needs a GGUF model). Mismatched
 * or corrupt adapters: BC_E_FORMAT / BC_E_UNSUPPORTED; a non-finite scale:
 * BC_E_INVALID_ARGUMENT. Nothing is written on failure.
 */
bc_status bc_merge_adapter(const char *model_path, const char *adapter_path, float scale,
                           const char *out_path, bc_weights_format format);

/**
 * A model soup: writes to out_path the weighted average, tensor by tensor, of `count`
 * GGUF files holding the same tensors (fine-tunes of one base): sum_k w_k x_k / sum_k w_k,
 * in double. weights: count values (finite, >= 0, not all 0), or NULL for equal weights.
 * Metadata comes from paths[0]. format: BC_WEIGHTS_GGUF_F32 or BC_WEIGHTS_GGUF_F16
 * (BC_WEIGHTS_HF: BC_E_UNSUPPORTED). Files whose tensors differ: BC_E_FORMAT.
 */
bc_status bc_weights_average(const char *const *paths, size_t count, const double *weights,
                             const char *out_path, bc_weights_format format);

/**
 * Writes a checkpoint directory: the trainable tensors (exact bits), the optimizer's
 * state (opt may be NULL: none), the data position and shuffle seed, the step count.
 * The directory is replaced as a whole (a crash leaves the old checkpoint or the new).
 * Resuming from it (bc_trainer_load_checkpoint on a trainer of the same base model,
 * with the same data and an optimizer holding the trainer's tensors) continues
 * bit-identically to a run that was never interrupted.
 */
bc_status bc_trainer_save_checkpoint(bc_trainer *trainer, const bc_optimizer *opt, const char *dir);

/**
 * Restores a checkpoint: weights, optimizer state (opt may be NULL) and, when data is
 * loaded, the data position (the data must be the one the checkpoint was made with:
 * same example count and tokens, else BC_E_FORMAT). All checked before anything
 * changes: a failed call changes nothing.
 */
bc_status bc_trainer_load_checkpoint(bc_trainer *trainer, bc_optimizer *opt, const char *dir);

/* ------------------------------------------------------------------------- */
/* Data-parallel training: collectives supplied by the caller                */
/* ------------------------------------------------------------------------- */

/**
 * Data-parallel training over W processes ("ranks") without linking a communication
 * library: the caller passes an all-reduce and a broadcast (MPI_Allreduce/MPI_Bcast,
 * NCCL, sockets, ...); examples/mpi wires them to Open MPI. Every rank loads the same
 * model, creates a trainer with the same params and an optimizer with the same
 * hyperparameters, calls bc_trainer_set_collectives, then runs the same sequence of
 * trainer calls (SPMD):
 *
 *   bc_collectives c; bc_collectives_default(&c, sizeof c);
 *   c.rank = rank; c.world_size = size; c.user = comm;
 *   c.allreduce_sum_f32 = my_allreduce; c.broadcast = my_bcast;
 *   bc_trainer_set_collectives(t, &c);            // checks the group and equal weights
 *   bc_trainer_load_data(t, path, &dp, &info);     // every rank: the same file
 *   while (bc_trainer_train_step(t, opt, NULL, &r, NULL) == BC_OK) { ... }
 *   bc_trainer_save_checkpoint(t, opt, dir);       // rank 0 writes, the others return BC_OK
 *
 * Data: a global step is accumulation_steps x world_size micro-batches of the shuffled
 * data; rank r runs micro-batches r*accumulation_steps ..< (r+1)*accumulation_steps of
 * it (a rank may get none at the very end of the data). So W ranks with accumulation a
 * take the same steps as 1 process with accumulation a*W (up to float summation order).
 * bc_trainer_micro_batch works too: each rank passes its own batches.
 *
 * Step (bc_trainer_step / bc_trainer_train_step): the step's loss sum, target, token and
 * micro-batch counts are summed over the ranks first (counts exactly), so the loss is
 * normalised by the GLOBAL number of target tokens; then every gradient is summed:
 * the trainable tensors' gradients, in bc_trainer_get_tensor order, form one array of
 * P floats, cut into buckets of BC_ALLREDUCE_BUCKET_FLOATS (the last shorter), one
 * allreduce_sum_f32 call each, in that fixed order (results do not depend on timing).
 * Then every rank takes the same optimizer step. Per step: ceil(P / bucket) + 1 calls,
 * 4 x P bytes of gradients. totals (bc_train_result) are the global sums.
 *
 * A callback that returns non-zero fails the call with BC_E_IO: the weights, the
 * optimizer state and the step count are unchanged and the pending gradients are
 * discarded (as for a skipped step). The library never waits by itself: a rank that
 * stops calling leaves the others inside the caller's collective (abort the group on
 * any error, e.g. MPI_Abort). Checkpoints: rank 0 writes; a checkpoint resumes on any
 * number of ranks with the same global batch (accumulation_steps x world_size) — load
 * it on every rank (after bc_trainer_set_collectives and bc_trainer_load_data).
 */
typedef struct bc_collectives {
    uint32_t struct_size;          /**< sizeof(bc_collectives) */
    int32_t rank;                  /**< this process, 0 ..< world_size (0) */
    int32_t world_size;            /**< ranks, 1 ... 4096 (1) */
    uint32_t reserved0;            /**< 0 */
    /** Sums buf[0 ..< n] element-wise over all ranks, in place on every rank; 0 = success. */
    int (*allreduce_sum_f32)(float *buf, size_t n, void *user);
    /** Copies `bytes` bytes of rank `root`'s buf into every rank's buf; 0 = success. */
    int (*broadcast)(void *buf, size_t bytes, int root, void *user);
    void *user;                    /**< passed to the callbacks */
} bc_collectives;

/** Floats per gradient all-reduce bucket (16 MiB). */
#define BC_ALLREDUCE_BUCKET_FLOATS 4194304

/** Fills *out: rank 0 of 1, NULL callbacks; size = sizeof(*out). */
bc_status bc_collectives_default(bc_collectives *out, size_t size);

/**
 * Joins the trainer to a data-parallel group (c NULL: leaves it; one process again).
 * Collective: every rank calls it. Checks, through the callbacks, that every rank passed
 * the same world_size and a distinct rank, and that every rank's trainable tensors are
 * bit-equal to rank 0's (a digest is broadcast from rank 0; a mismatch fails on every
 * rank with BC_E_INVALID_ARGUMENT). The callbacks and user must stay valid until the
 * trainer is freed or leaves the group. Errors: NULL callbacks, rank/world_size out of
 * range, BC_E_BAD_STATE after bc_trainer_load_data or with pending micro-batches,
 * BC_E_IO when a callback fails, BC_E_UNSUPPORTED while a batch-size control other
 * than fixed is set (bc_trainer_set_batch_control). A failed call changes nothing.
 */
bc_status bc_trainer_set_collectives(bc_trainer *trainer, const bc_collectives *c);

/* ------------------------------------------------------------------------- */
/* Batch size control                                                        */
/* ------------------------------------------------------------------------- */

/**
 * Gradient noise scale. Every data step (bc_trainer_train_step) of two or more
 * micro-batches measures the "simple" noise scale B_simple = tr(Sigma) / |G|^2
 * (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", A.1) at no
 * extra forward or backward: after the first micro-batch the gradient accumulator holds
 * that micro-batch's gradient (one read pass gives |G_small|^2, no copy) and at the end
 * of the step the whole step's (|G_big|^2, a second read pass). The unbiased estimates
 *   |G|^2    = (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
 *   tr(Sigma) = (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)
 * are each smoothed by an exponential moving average (noise_ema) and B_simple is the
 * ratio of the averages. Batch sizes count TARGET TOKENS: B_small = targets of the
 * first micro-batch, B_big = targets of the step, so B_simple is in target tokens.
 *
 * Batch-size controller: how many micro-batches the next data step accumulates,
 * decided only at step boundaries (after a step's micro-batches). kappa = micro-batches
 * of the step / accumulation_steps (the base batch); the optimizer's learning rate of
 * that step is multiplied by lr_scaling(kappa) inside bc_trainer_step and restored
 * after it (bc_optimizer_set_lr keeps setting the BASE rate). For a model EMA, pass the
 * step's kappa to bc_ema_update (decay^kappa). Only the data path
 * (bc_trainer_train_step) is controlled; bc_trainer_micro_batch / bc_trainer_step run
 * what the caller gives. With a ramp or the noise mode the batch only grows, so
 * bc_train_progress.steps (counted at accumulation_steps) is an upper bound.
 * The state (next micro-batches, the averages) is kept in checkpoints.
 */
typedef enum bc_batch_mode {
    BC_BATCH_FIXED = 0,  /**< accumulation_steps micro-batches every step */
    BC_BATCH_RAMP = 1,   /**< n(s) = min + floor((max - min) * s / ramp_steps) for step s < ramp_steps, then max */
    BC_BATCH_NOISE = 2   /**< start at accumulation_steps in [min, max]; after warmup_steps estimates grow to
                              ceil(B_simple / targets per micro-batch), at most doubling per step, never shrinking */
} bc_batch_mode;

typedef enum bc_lr_scaling {
    BC_LR_SCALE_NONE = 0,   /**< the rate stays */
    BC_LR_SCALE_LINEAR = 1, /**< lr * kappa (SGD) */
    BC_LR_SCALE_SQRT = 2    /**< lr * sqrt(kappa) (Adam family) */
} bc_lr_scaling;

typedef struct bc_batch_control {
    uint32_t struct_size;          /**< sizeof(bc_batch_control) */
    int32_t mode;                  /**< a bc_batch_mode; default FIXED */
    uint32_t min_micro_batches;    /**< lower bound, >= 1; NOISE: >= 2 (1) */
    uint32_t max_micro_batches;    /**< upper bound, >= min, <= 65536 (1) */
    int64_t ramp_steps;            /**< RAMP: steps from min to max, >= 1 (0) */
    int32_t lr_scaling;            /**< a bc_lr_scaling; default NONE */
    uint32_t warmup_steps;         /**< NOISE: estimates before the batch changes (3) */
    double noise_ema;              /**< EMA decay of both estimates, 0 <= d < 1 (0.9) */
} bc_batch_control;

/** Fills *out with the defaults above; size = sizeof(*out). */
bc_status bc_batch_control_default(bc_batch_control *out, size_t size);

/**
 * Sets the trainer's batch-size control (NULL: the defaults) and resets the noise-scale
 * averages. Only at a step boundary: BC_E_BAD_STATE with micro-batches pending.
 * Errors: bad bounds or mode, NOISE with min < 2, RAMP with ramp_steps 0, BC_E_UNSUPPORTED
 * for a mode other than fixed (or LR scaling) on a data-parallel trainer (ranks would have
 * to agree on each batch; not supported yet).
 */
bc_status bc_trainer_set_batch_control(bc_trainer *trainer, const bc_batch_control *control);

/** What the last data step measured and decided (NaN where unknown: see the fields). */
typedef struct bc_batch_stats {
    uint32_t struct_size;          /**< set by the caller: sizeof(bc_batch_stats) */
    uint32_t reserved0;            /**< 0 */
    int64_t step;                  /**< the step described (bc_train_progress.step after it); 0: none yet */
    int64_t micro_batches;         /**< micro-batches that step accumulated */
    int64_t next_micro_batches;    /**< what the next data step will accumulate */
    int64_t small_targets;         /**< B_small: target tokens of the first micro-batch */
    int64_t big_targets;           /**< B_big: target tokens of the step */
    double small_sq_norm;          /**< |G_small|^2 (mean gradient per target); NaN with one micro-batch */
    double big_sq_norm;            /**< |G_big|^2; NaN with one micro-batch */
    double grad_sq;                /**< this step's unbiased |G|^2 estimate (may be < 0); NaN as above */
    double trace;                  /**< this step's unbiased tr(Sigma) estimate; NaN as above */
    double grad_sq_ema;            /**< the averages (bias-corrected); NaN before the first estimate */
    double trace_ema;
    double noise_scale;            /**< B_simple = trace_ema / grad_sq_ema in target tokens; NaN while unknown, grad_sq_ema <= 0 or trace_ema < 0 */
    double kappa;                  /**< micro_batches / accumulation_steps */
    double lr_scale;               /**< the factor the step's learning rate got */
} bc_batch_stats;

bc_status bc_trainer_get_batch_stats(const bc_trainer *trainer, bc_batch_stats *out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BATCHCORE_H */
