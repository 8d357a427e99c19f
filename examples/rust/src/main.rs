//! engine-loop: drives batchcore's continuous-batching engine from Rust through the C
//! ABI, exactly like examples/engine/engine_loop.c.
//!
//!   engine-loop [MODEL.gguf [PROMPT...]]
//!   engine-loop --print-layout      (sizes and field offsets of the mirrored structs)
//!
//! MODEL defaults to $BATCHCORE_MODEL (also when it is "" or "-"); without prompts a
//! few built-in chat questions are asked, each as one greedy request of at most
//! $ENGINE_MAX_TOKENS (48) tokens. Tokens are printed as they stream in, on lines
//! prefixed "[id] ", then a summary line. Exit status 0 when every request finished
//! without error.
//!
//! The unsafe FFI lives in small safe wrappers: handles are freed by Drop, every
//! failing call becomes an `Error` carrying bc_last_error(), and event strings are
//! copied out before the next poll/step invalidates them.
mod ffi;

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::raw::c_char;
use std::ptr::{self, NonNull};

const DEFAULT_PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Name three primary colors.",
    "What is 2+2?",
];

// ------------------------------------------------------------------ errors

/// A failed batchcore call: which function, its status and the library's message.
#[derive(Debug)]
struct Error {
    call: &'static str,
    status: ffi::bc_status,
    message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: bc_status_string returns a static NUL-terminated string for any code.
        let status = unsafe { CStr::from_ptr(ffi::bc_status_string(self.status)) };
        write!(f, "{} failed: {}: {}", self.call, status.to_string_lossy(), self.message)
    }
}

impl std::error::Error for Error {}

type Result<T> = std::result::Result<T, Error>;

/// Turns a status into a Result, reading bc_last_error() (thread-local) on failure.
fn check(call: &'static str, status: ffi::bc_status) -> Result<()> {
    if status == ffi::BC_OK {
        return Ok(());
    }
    // SAFETY: bc_last_error never returns NULL; the string is valid until the next failing call.
    let message = unsafe { CStr::from_ptr(ffi::bc_last_error()) }.to_string_lossy().into_owned();
    Err(Error { call, status, message })
}

fn invalid(call: &'static str, message: &str) -> Error {
    Error { call, status: 1, message: message.to_owned() }
}

/// Fills a struct_size-prefixed params struct with the library's defaults.
fn defaults<T>(call: &'static str, fill: unsafe extern "C" fn(*mut T, usize) -> ffi::bc_status) -> Result<T> {
    let mut out = MaybeUninit::<T>::zeroed();
    // SAFETY: `fill` writes at most size_of::<T>() bytes into `out`, all of plain data.
    check(call, unsafe { fill(out.as_mut_ptr(), std::mem::size_of::<T>()) })?;
    // SAFETY: zero-initialised and then filled by the library: every field is valid.
    Ok(unsafe { out.assume_init() })
}

// ------------------------------------------------------------------ model

/// A loaded model (immutable; freed on drop).
struct Model {
    raw: NonNull<ffi::bc_model>,
}

impl Model {
    fn load(path: &str) -> Result<Model> {
        let path = CString::new(path).map_err(|_| invalid("bc_model_load", "the path contains a NUL byte"))?;
        let mut raw = ptr::null_mut();
        // SAFETY: valid C string, NULL params (defaults), valid out pointer.
        check("bc_model_load", unsafe { ffi::bc_model_load(path.as_ptr(), ptr::null(), &mut raw) })?;
        let raw = NonNull::new(raw).ok_or_else(|| invalid("bc_model_load", "returned NULL"))?;
        Ok(Model { raw })
    }

    fn info(&self) -> Result<ffi::bc_model_info> {
        // SAFETY: bc_model_info is plain data; all-zero is a valid value.
        let mut info: ffi::bc_model_info = unsafe { std::mem::zeroed() };
        info.struct_size = std::mem::size_of::<ffi::bc_model_info>() as u32;
        // SAFETY: live handle, info sized by struct_size.
        check("bc_model_get_info", unsafe { ffi::bc_model_get_info(self.raw.as_ptr(), &mut info) })?;
        Ok(info)
    }

    /// One user turn formatted with the model's chat template, ready for generation.
    fn chat_prompt(&self, user: &str) -> Result<String> {
        let role = CString::new("user").unwrap();
        let content = CString::new(user).map_err(|_| invalid("bc_chat_format", "the prompt contains a NUL byte"))?;
        let roles = [role.as_ptr()];
        let contents = [content.as_ptr()];
        let mut len = 0usize;
        // SAFETY: one message; size query with a NULL buffer and capacity 0.
        check("bc_chat_format", unsafe {
            ffi::bc_chat_format(self.raw.as_ptr(), roles.as_ptr(), contents.as_ptr(), 1, 1, ptr::null_mut(), 0, &mut len)
        })?;
        let mut buf = vec![0u8; len + 1];
        // SAFETY: buf holds len + 1 bytes, as the size query asked.
        check("bc_chat_format", unsafe {
            ffi::bc_chat_format(
                self.raw.as_ptr(),
                roles.as_ptr(),
                contents.as_ptr(),
                1,
                1,
                buf.as_mut_ptr() as *mut c_char,
                buf.len(),
                &mut len,
            )
        })?;
        buf.truncate(len);
        String::from_utf8(buf).map_err(|_| invalid("bc_chat_format", "the template output is not UTF-8"))
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: we own the handle; it is not used after this.
        unsafe { ffi::bc_model_free(self.raw.as_ptr()) }
    }
}

// ------------------------------------------------------------------ engine

/// An engine event with its strings copied out of the engine.
enum Event {
    Token { request: u64, text: String },
    Finished {
        request: u64,
        reason: i32,
        text: String,
        prompt_tokens: i32,
        generated_tokens: i32,
        ttft_seconds: f64,
        total_seconds: f64,
        message: String,
    },
}

/// Copies `len` bytes at `p` (a string owned by the engine) into a String.
///
/// # Safety
/// `p` must point to `len` readable bytes (or be NULL with any len).
unsafe fn copy_text(p: *const c_char, len: usize) -> String {
    if p.is_null() {
        return String::new();
    }
    String::from_utf8_lossy(std::slice::from_raw_parts(p as *const u8, len)).into_owned()
}

/// A continuous-batching engine over a model; borrows the model for its lifetime
/// and frees the engine (with its requests and KV cache) on drop.
struct Engine<'m> {
    raw: NonNull<ffi::bc_engine>,
    _model: PhantomData<&'m Model>,
}

impl<'m> Engine<'m> {
    fn new(model: &'m Model, params: &ffi::bc_engine_params) -> Result<Engine<'m>> {
        let mut raw = ptr::null_mut();
        // SAFETY: live model handle, params filled from the library's defaults.
        check("bc_engine_create", unsafe { ffi::bc_engine_create(model.raw.as_ptr(), params, &mut raw) })?;
        let raw = NonNull::new(raw).ok_or_else(|| invalid("bc_engine_create", "returned NULL"))?;
        Ok(Engine { raw, _model: PhantomData })
    }

    /// Queues a text prompt; returns the request id.
    fn submit_text(
        &mut self,
        prompt: &str,
        params: &ffi::bc_request_params,
        sampling: &ffi::bc_sampling_params,
    ) -> Result<u64> {
        let prompt = CString::new(prompt).map_err(|_| invalid("bc_engine_submit_text", "NUL byte in the prompt"))?;
        let mut id = 0u64;
        // SAFETY: the prompt and params are borrowed for the call only (the library copies them).
        check("bc_engine_submit_text", unsafe {
            ffi::bc_engine_submit_text(self.raw.as_ptr(), prompt.as_ptr(), params, sampling, &mut id)
        })?;
        Ok(id)
    }

    #[allow(dead_code)]
    fn cancel(&mut self, request: u64) -> Result<()> {
        // SAFETY: live handle.
        check("bc_engine_cancel", unsafe { ffi::bc_engine_cancel(self.raw.as_ptr(), request) })
    }

    /// One forward pass; returns (tokens processed, unfinished requests).
    fn step(&mut self) -> Result<(i32, i32)> {
        let (mut processed, mut live) = (0i32, 0i32);
        // SAFETY: live handle, valid out pointers.
        check("bc_engine_step", unsafe { ffi::bc_engine_step(self.raw.as_ptr(), &mut processed, &mut live) })?;
        Ok((processed, live))
    }

    /// Every pending event, oldest first, with its strings copied.
    fn poll(&mut self) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        // SAFETY: bc_event is plain data (integers, floats, pointers); zero is valid.
        let mut buf: [ffi::bc_event; 16] = unsafe { std::mem::zeroed() };
        loop {
            let mut n = 0usize;
            // SAFETY: buf has room for buf.len() events.
            check("bc_engine_poll", unsafe {
                let size = std::mem::size_of::<ffi::bc_event>();
                ffi::bc_engine_poll(self.raw.as_ptr(), buf.as_mut_ptr(), buf.len(), size, &mut n)
            })?;
            for ev in &buf[..n.min(buf.len())] {
                // SAFETY: the engine's strings are valid until the next poll/step: copied now.
                let text = unsafe { copy_text(ev.text, ev.text_len) };
                out.push(if ev.kind == ffi::BC_EVENT_TOKEN {
                    Event::Token { request: ev.request_id, text }
                } else {
                    let message = if ev.message.is_null() {
                        String::new()
                    } else {
                        // SAFETY: NUL-terminated, owned by the engine, valid until the next poll.
                        unsafe { CStr::from_ptr(ev.message) }.to_string_lossy().into_owned()
                    };
                    Event::Finished {
                        request: ev.request_id,
                        reason: ev.finish_reason,
                        text,
                        prompt_tokens: ev.prompt_tokens,
                        generated_tokens: ev.generated_tokens,
                        ttft_seconds: ev.ttft_seconds,
                        total_seconds: ev.total_seconds,
                        message,
                    }
                });
            }
            if n == 0 {
                return Ok(out);
            }
        }
    }

    fn metrics(&self) -> Result<ffi::bc_engine_metrics> {
        // SAFETY: plain data; zero is valid.
        let mut m: ffi::bc_engine_metrics = unsafe { std::mem::zeroed() };
        m.struct_size = std::mem::size_of::<ffi::bc_engine_metrics>() as u32;
        // SAFETY: live handle; m sized by struct_size.
        check("bc_engine_get_metrics", unsafe { ffi::bc_engine_get_metrics(self.raw.as_ptr(), &mut m) })?;
        Ok(m)
    }
}

impl Drop for Engine<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the handle; it is not used after this.
        unsafe { ffi::bc_engine_free(self.raw.as_ptr()) }
    }
}

// ------------------------------------------------------------------ main

fn reason_name(reason: i32) -> &'static str {
    match reason {
        ffi::BC_FINISH_LENGTH => "length",
        ffi::BC_FINISH_STOP => "stop",
        ffi::BC_FINISH_CANCELLED => "cancelled",
        _ => "error",
    }
}

/// Newlines would break the "[id] " prefixing: shown as spaces.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// Prints sizes and field offsets of the mirrored structs ("<struct> <field> <offset>"),
/// in the format of examples/rust/layout.c, so a test can diff the two.
fn print_layout() {
    macro_rules! layout {
        ($t:ident; $($f:ident),*) => {{
            println!("{} sizeof {}", stringify!($t), std::mem::size_of::<ffi::$t>());
            $( println!("{} {} {}", stringify!($t), stringify!($f), std::mem::offset_of!(ffi::$t, $f)); )*
        }};
    }
    layout!(bc_model_params; struct_size, reserved0, progress, progress_user_data, weights, reserved1);
    layout!(bc_model_info; struct_size, architecture, reserved0, n_params, n_layer, n_embd, n_head, n_head_kv, n_ff,
            n_vocab, n_ctx_train, rope_freq_base, bos_token, eos_token, add_bos, reserved1, weight_bytes, weight_types);
    layout!(bc_sampling_params; struct_size, temperature, top_k, top_p, min_p, repetition_penalty, frequency_penalty,
            presence_penalty, penalty_last_n, reserved0, seed);
    layout!(bc_engine_params; struct_size, max_batched_tokens, max_seqs, policy, n_ctx, reserved0, kv_bytes, kv_type,
            static_batching, adapter_bytes, offline, shared_prefix_attention);
    layout!(bc_request_params; struct_size, max_tokens, n, priority, ignore_eos, reserved0, stop_tokens,
            n_stop_tokens, reserved1, stop_strings, n_stop_strings, reserved2, user_tag, adapter, adapter_scale,
            reserved3);
    layout!(bc_event; kind, index, request_id, user_tag, token, logprob, text, text_len, finish_reason, prompt_tokens,
            cached_prompt_tokens, generated_tokens, ttft_seconds, itl_seconds, total_seconds, message);
    layout!(bc_engine_metrics; struct_size, reserved0, steps, submitted, finished, waiting, running, preemptions,
            generated_tokens, batched_tokens, busy_seconds, tokens_per_second, kv_used_bytes, kv_total_bytes,
            prefix_hit_rate, adapter_resident_bytes, adapter_loads, adapter_evictions, shared_prefix_rows,
            attention_positions, shared_prefix_positions_saved, shared_prefix_fallbacks);
}

fn run() -> Result<bool> {
    let args: Vec<String> = std::env::args().collect();
    let mut model_path = args.get(1).cloned().unwrap_or_default();
    if model_path.is_empty() || model_path == "-" {
        model_path = std::env::var("BATCHCORE_MODEL").unwrap_or_default();
    }
    if model_path.is_empty() {
        eprintln!("usage: engine-loop [MODEL.gguf [PROMPT...]]  (or set BATCHCORE_MODEL)");
        std::process::exit(2);
    }
    let prompts: Vec<String> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        DEFAULT_PROMPTS.iter().map(|s| s.to_string()).collect()
    };
    let max_tokens: i32 = std::env::var("ENGINE_MAX_TOKENS").ok().and_then(|v| v.parse().ok()).unwrap_or(48);

    // SAFETY: static strings / plain integers.
    let (version, abi) = unsafe { (CStr::from_ptr(ffi::bc_version()).to_string_lossy(), ffi::bc_abi_version()) };
    if abi != ffi::BC_ABI_VERSION {
        eprintln!("engine-loop: library ABI {abi}, these declarations mirror ABI {}", ffi::BC_ABI_VERSION);
        std::process::exit(1);
    }
    let model = Model::load(&model_path)?;
    let info = model.info()?;
    println!(
        "batchcore {version} (ABI {abi}); model: {} parameters, {} layers, vocabulary {}",
        info.n_params, info.n_layer, info.n_vocab
    );

    // The engine: defaults, with a smaller per-step token budget.
    let mut ep = defaults("bc_engine_params_default", ffi::bc_engine_params_default)?;
    ep.max_batched_tokens = 256;
    ep.kv_type = ffi::BC_KV_F32;
    let mut engine = Engine::new(&model, &ep)?;

    let mut rp = defaults("bc_request_params_default", ffi::bc_request_params_default)?;
    rp.max_tokens = max_tokens;
    let mut sp = defaults("bc_sampling_params_default", ffi::bc_sampling_params_default)?;
    sp.temperature = 0.0; // greedy

    let mut submitted = 0;
    for (i, p) in prompts.iter().enumerate() {
        rp.user_tag = i as u64;
        let id = engine.submit_text(&model.chat_prompt(p)?, &rp, &sp)?;
        println!("[{id}] submitted: {p}");
        submitted += 1;
    }

    // The loop: step (one forward pass for everything running), then poll.
    let (mut finished, mut errors, mut tokens) = (0, 0, 0u64);
    let mut open_line: Option<u64> = None; // the request whose "[id] " line is open
    loop {
        let (_, live) = engine.step()?;
        for ev in engine.poll()? {
            match ev {
                Event::Token { request, text } => {
                    if open_line != Some(request) {
                        if open_line.is_some() {
                            println!();
                        }
                        print!("[{request}] ");
                        open_line = Some(request);
                    }
                    print!("{}", one_line(&text));
                    tokens += 1;
                }
                Event::Finished {
                    request,
                    reason,
                    text,
                    prompt_tokens,
                    generated_tokens,
                    ttft_seconds,
                    total_seconds,
                    message,
                } => {
                    if open_line.take().is_some() {
                        println!();
                    }
                    let why = if reason == ffi::BC_FINISH_ERROR { format!(": {message}") } else { String::new() };
                    println!(
                        "[{request}] finished: {}, {prompt_tokens} prompt + {generated_tokens} generated tokens, \
                         first token after {ttft_seconds:.3} s, total {total_seconds:.3} s{why}",
                        reason_name(reason)
                    );
                    println!("[{request}] text: {}", one_line(&text));
                    finished += 1;
                    if reason == ffi::BC_FINISH_ERROR {
                        errors += 1;
                    }
                }
            }
        }
        if live == 0 {
            break;
        }
    }
    if open_line.is_some() {
        println!();
    }
    let m = engine.metrics()?;
    println!(
        "summary: {finished} of {submitted} requests finished, {tokens} tokens in {:.2} s ({:.1} tok/s), {} steps, {} preemptions",
        m.busy_seconds, m.tokens_per_second, m.steps, m.preemptions
    );
    Ok(errors == 0 && finished == submitted)
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--print-layout") {
        print_layout();
        return;
    }
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("engine-loop: {e}");
            std::process::exit(1);
        }
    }
}
