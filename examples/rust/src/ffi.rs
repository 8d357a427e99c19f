//! Hand-written declarations of the parts of batchcore's C ABI (include/batchcore.h)
//! this example uses. Every struct mirrors its C counterpart field by field, in the
//! same order and with the same C types (the C structs have no implicit padding:
//! reserved fields are spelled out, and are 0);
//! `engine-loop --print-layout` prints sizes and offsets so a test can compare them
//! with the C compiler's.
#![allow(non_camel_case_types, dead_code)]

use std::os::raw::{c_char, c_int, c_void};

/// `bc_status`: BC_OK (0) or an error code (a C enum, int-sized).
pub type bc_status = c_int;
pub const BC_OK: bc_status = 0;

/// `BC_ABI_VERSION` of the header these declarations mirror (libbatchcore.so.2).
pub const BC_ABI_VERSION: u32 = 2;

/// `bc_kv_type` values (bc_engine_params::kv_type).
pub const BC_KV_F32: i32 = 0;
pub const BC_KV_F16: i32 = 1;
pub const BC_KV_INT8: i32 = 2;

/// `bc_event_kind` values (bc_event::kind).
pub const BC_EVENT_TOKEN: i32 = 0;
pub const BC_EVENT_FINISHED: i32 = 1;

/// `bc_finish_reason` values (bc_event::finish_reason).
pub const BC_FINISH_LENGTH: i32 = 0;
pub const BC_FINISH_STOP: i32 = 1;
pub const BC_FINISH_CANCELLED: i32 = 2;
pub const BC_FINISH_ERROR: i32 = 3;

/// Opaque handles: only ever used behind pointers.
#[repr(C)]
pub struct bc_model {
    _private: [u8; 0],
}
#[repr(C)]
pub struct bc_engine {
    _private: [u8; 0],
}

pub type bc_progress_callback = Option<unsafe extern "C" fn(fraction: f32, user_data: *mut c_void)>;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct bc_model_params {
    pub struct_size: u32,
    pub reserved0: u32,
    pub progress: bc_progress_callback,
    pub progress_user_data: *mut c_void,
    pub weights: i32,
    pub reserved1: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct bc_model_info {
    pub struct_size: u32,
    pub architecture: [c_char; 32],
    pub reserved0: u32,
    pub n_params: i64,
    pub n_layer: i32,
    pub n_embd: i32,
    pub n_head: i32,
    pub n_head_kv: i32,
    pub n_ff: i32,
    pub n_vocab: i32,
    pub n_ctx_train: i32,
    pub rope_freq_base: f32,
    pub bos_token: i32,
    pub eos_token: i32,
    pub add_bos: i32,
    pub reserved1: i32,
    pub weight_bytes: i64,
    pub weight_types: [c_char; 64],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct bc_sampling_params {
    pub struct_size: u32,
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub penalty_last_n: i32,
    pub reserved0: i32,
    pub seed: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct bc_engine_params {
    pub struct_size: u32,
    pub max_batched_tokens: i32,
    pub max_seqs: i32,
    pub policy: i32,
    pub n_ctx: i32,
    pub reserved0: i32,
    pub kv_bytes: i64,
    pub kv_type: i32,
    pub static_batching: i32,
    pub adapter_bytes: i64,
    pub offline: i32,
    pub shared_prefix_attention: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct bc_request_params {
    pub struct_size: u32,
    pub max_tokens: i32,
    pub n: i32,
    pub priority: i32,
    pub ignore_eos: i32,
    pub reserved0: i32,
    pub stop_tokens: *const i32,
    pub n_stop_tokens: i32,
    pub reserved1: i32,
    pub stop_strings: *const *const c_char,
    pub n_stop_strings: i32,
    pub reserved2: i32,
    pub user_tag: u64,
    pub adapter: *const c_void,
    pub adapter_scale: f32,
    pub reserved3: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct bc_event {
    pub kind: i32,
    pub index: i32,
    pub request_id: u64,
    pub user_tag: u64,
    pub token: i32,
    pub logprob: f32,
    pub text: *const c_char,
    pub text_len: usize,
    pub finish_reason: i32,
    pub prompt_tokens: i32,
    pub cached_prompt_tokens: i32,
    pub generated_tokens: i32,
    pub ttft_seconds: f64,
    pub itl_seconds: f64,
    pub total_seconds: f64,
    pub message: *const c_char,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct bc_engine_metrics {
    pub struct_size: u32,
    pub reserved0: u32,
    pub steps: i64,
    pub submitted: i64,
    pub finished: i64,
    pub waiting: i64,
    pub running: i64,
    pub preemptions: i64,
    pub generated_tokens: i64,
    pub batched_tokens: i64,
    pub busy_seconds: f64,
    pub tokens_per_second: f64,
    pub kv_used_bytes: i64,
    pub kv_total_bytes: i64,
    pub prefix_hit_rate: f64,
    pub adapter_resident_bytes: i64,
    pub adapter_loads: i64,
    pub adapter_evictions: i64,
    pub shared_prefix_rows: i64,
    pub attention_positions: i64,
    pub shared_prefix_positions_saved: i64,
    pub shared_prefix_fallbacks: i64,
}

extern "C" {
    pub fn bc_version() -> *const c_char;
    pub fn bc_abi_version() -> u32;
    pub fn bc_status_string(status: bc_status) -> *const c_char;
    pub fn bc_last_error() -> *const c_char;

    pub fn bc_model_params_default(out: *mut bc_model_params, size: usize) -> bc_status;
    pub fn bc_model_load(path: *const c_char, params: *const bc_model_params, out: *mut *mut bc_model) -> bc_status;
    pub fn bc_model_free(model: *mut bc_model);
    pub fn bc_model_get_info(model: *const bc_model, info: *mut bc_model_info) -> bc_status;
    pub fn bc_chat_format(
        model: *const bc_model,
        roles: *const *const c_char,
        contents: *const *const c_char,
        n_messages: usize,
        add_generation_prompt: i32,
        buf: *mut c_char,
        capacity: usize,
        length: *mut usize,
    ) -> bc_status;

    pub fn bc_sampling_params_default(out: *mut bc_sampling_params, size: usize) -> bc_status;

    pub fn bc_engine_params_default(out: *mut bc_engine_params, size: usize) -> bc_status;
    pub fn bc_engine_create(model: *mut bc_model, params: *const bc_engine_params, out: *mut *mut bc_engine) -> bc_status;
    pub fn bc_engine_free(engine: *mut bc_engine);
    pub fn bc_request_params_default(out: *mut bc_request_params, size: usize) -> bc_status;
    pub fn bc_engine_submit(
        engine: *mut bc_engine,
        tokens: *const i32,
        n_tokens: i32,
        params: *const bc_request_params,
        sampling: *const bc_sampling_params,
        request_id: *mut u64,
    ) -> bc_status;
    pub fn bc_engine_submit_text(
        engine: *mut bc_engine,
        prompt: *const c_char,
        params: *const bc_request_params,
        sampling: *const bc_sampling_params,
        request_id: *mut u64,
    ) -> bc_status;
    pub fn bc_engine_cancel(engine: *mut bc_engine, request_id: u64) -> bc_status;
    pub fn bc_engine_step(engine: *mut bc_engine, n_processed: *mut i32, n_live: *mut i32) -> bc_status;
    /// `event_size` is `size_of::<bc_event>()`: the library writes event k at byte k * event_size.
    pub fn bc_engine_poll(
        engine: *mut bc_engine,
        events: *mut bc_event,
        capacity: usize,
        event_size: usize,
        n_events: *mut usize,
    ) -> bc_status;
    pub fn bc_engine_get_metrics(engine: *const bc_engine, metrics: *mut bc_engine_metrics) -> bc_status;
}
