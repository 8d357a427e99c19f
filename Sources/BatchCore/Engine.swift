import BCCore
import BCKV
import BCModel
import BCEngine
#if canImport(Glibc)
import Glibc
#endif
import CBatchCore

/// The C handle of an engine: the core engine plus the events not yet polled and the
/// C strings of the last poll (kept alive until the next poll/step, as documented).
/// Nothing here is kept per request: a request's user_tag travels inside the core's
/// request and its events.
final class EngineHandle {
    let engine: Engine
    var queue: [EngineEvent] = []
    var head = 0
    var strings: [UnsafeMutablePointer<CChar>] = []

    init(engine: Engine) { self.engine = engine }
    deinit { releaseStrings() }

    func releaseStrings() {
        for s in strings { free(s) }
        strings.removeAll()
    }

    func cString(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        strings.append(p)
        return p
    }
}

private let defaultEngineParams = bc_engine_params(
    struct_size: UInt32(MemoryLayout<bc_engine_params>.size), max_batched_tokens: 512, max_seqs: 64, policy: 0,
    n_ctx: 0, reserved0: 0, kv_bytes: 0, kv_type: Int32(BC_KV_F32.rawValue), static_batching: 0,
    adapter_bytes: 0, offline: 0, shared_prefix_attention: 0)

/// A fresh copy per use: a global constant of a C struct holding pointers is not Sendable.
private var defaultRequestParams: bc_request_params {
    bc_request_params(
        struct_size: UInt32(MemoryLayout<bc_request_params>.size), max_tokens: 128, n: 1, priority: 0, ignore_eos: 0,
        reserved0: 0, stop_tokens: nil, n_stop_tokens: 0, reserved1: 0, stop_strings: nil, n_stop_strings: 0, reserved2: 0,
        user_tag: 0, adapter: nil, adapter_scale: 1, reserved3: 0)
}

@c @implementation
public func bc_engine_params_default(_ out: UnsafeMutablePointer<bc_engine_params>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultEngineParams, out, size, "bc_engine_params") }
}

@c @implementation
public func bc_request_params_default(_ out: UnsafeMutablePointer<bc_request_params>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultRequestParams, out, size, "bc_request_params") }
}

@c @implementation
public func bc_engine_create(_ model: OpaquePointer?, _ params: UnsafePointer<bc_engine_params>?,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?) -> bc_status {
    abiCall {
        let m = try object(model, as: LanguageModel.self, "model")
        let out = try required(out, "out")
        let p = try readParams(params, defaults: defaultEngineParams, "bc_engine_params")
        guard let storage = KVStorageType(rawValue: p.kv_type) else { throw BatchCoreError.invalid("unknown kv_type \(p.kv_type)") }
        guard let policy = SchedulingPolicy(rawValue: p.policy) else { throw BatchCoreError.invalid("unknown policy \(p.policy)") }
        guard p.shared_prefix_attention == 0 || p.shared_prefix_attention == 1 else {
            throw BatchCoreError.invalid("shared_prefix_attention must be 0 or 1")
        }
        guard p.offline == 0 || p.offline == 1 else { throw BatchCoreError.invalid("offline must be 0 or 1") }
        guard p.n_ctx >= 0, p.kv_bytes >= 0, p.adapter_bytes >= 0 else {
            throw BatchCoreError.invalid("n_ctx, kv_bytes and adapter_bytes must be >= 0")
        }
        let nctx = p.n_ctx == 0 ? m.config.contextLength : Int(p.n_ctx)
        guard nctx <= m.config.contextLength else { throw BatchCoreError.invalid("n_ctx \(nctx) exceeds the model's \(m.config.contextLength)") }
        let cache = try PagedKVCache(kvDim: m.config.kvDim, layout: .full(layerCount: m.config.layerCount, storage: storage),
                                     budgetBytes: p.kv_bytes == 0 ? InferenceContext.defaultBudgetBytes : Int(p.kv_bytes),
                                     maxLength: nctx)
        let options = EngineOptions(maxBatchedTokens: Int(p.max_batched_tokens), maxSequences: Int(p.max_seqs),
                                    policy: policy, staticBatching: p.static_batching != 0,
                                    adapterBytes: Int(p.adapter_bytes), offline: p.offline != 0,
                                    sharedPrefixAttention: p.shared_prefix_attention != 0)
        out.pointee = retainHandle(EngineHandle(engine: try Engine(model: m, cache: cache, options: options)))
    }
}

@c @implementation
public func bc_engine_free(_ engine: OpaquePointer?) {
    releaseHandle(engine, as: EngineHandle.self)
}

private func request(_ tokens: [Int32], _ params: UnsafePointer<bc_request_params>?,
                     _ sampling: UnsafePointer<bc_sampling_params>?) throws -> GenerationRequest {
    let p = try readParams(params, defaults: defaultRequestParams, "bc_request_params")
    let s = try readParams(sampling, defaults: defaultSamplingParams, "bc_sampling_params").core
    guard p.n_stop_tokens >= 0, p.n_stop_strings >= 0 else { throw BatchCoreError.invalid("negative stop counts") }
    var stopTokens: Set<Int32> = []
    if p.n_stop_tokens > 0 {
        let t = try required(p.stop_tokens, "stop_tokens")
        for i in 0..<Int(p.n_stop_tokens) { stopTokens.insert(t[i]) }
    }
    var stopStrings: [String] = []
    if p.n_stop_strings > 0 {
        let t = try required(p.stop_strings, "stop_strings")
        for i in 0..<Int(p.n_stop_strings) {
            guard let c = t[i] else { throw BatchCoreError.invalid("stop_strings[\(i)] is NULL") }
            stopStrings.append(String(cString: c))
        }
    }
    return GenerationRequest(prompt: tokens, sampling: s, maxTokens: Int(p.max_tokens), stopTokens: stopTokens,
                             stopStrings: stopStrings, priority: Int(p.priority), n: Int(p.n),
                             ignoreEndOfGeneration: p.ignore_eos != 0, tag: p.user_tag,
                             adapter: p.adapter.map { Unmanaged<ServingAdapter>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() },
                             adapterScale: p.adapter_scale)
}

@c @implementation
public func bc_engine_submit(_ engine: OpaquePointer?, _ tokens: UnsafePointer<Int32>?, _ n: Int32,
                             _ params: UnsafePointer<bc_request_params>?, _ sampling: UnsafePointer<bc_sampling_params>?,
                             _ requestID: UnsafeMutablePointer<UInt64>?) -> bc_status {
    abiCall {
        let h = try object(engine, as: EngineHandle.self, "engine")
        let tokens = try required(tokens, "tokens")
        let requestID = try required(requestID, "request_id")
        guard n > 0 else { throw BatchCoreError.invalid("n_tokens must be > 0 (got \(n))") }
        let spec = try request(Array(UnsafeBufferPointer(start: tokens, count: Int(n))), params, sampling)
        requestID.pointee = try h.engine.submit(spec)
    }
}

@c @implementation
public func bc_engine_submit_text(_ engine: OpaquePointer?, _ prompt: UnsafePointer<CChar>?,
                                  _ params: UnsafePointer<bc_request_params>?, _ sampling: UnsafePointer<bc_sampling_params>?,
                                  _ requestID: UnsafeMutablePointer<UInt64>?) -> bc_status {
    abiCall {
        let h = try object(engine, as: EngineHandle.self, "engine")
        let prompt = try required(prompt, "prompt")
        let requestID = try required(requestID, "request_id")
        let tokens = h.engine.model.tokenizer.encode(String(cString: prompt), addSpecial: true, parseSpecial: true)
        guard !tokens.isEmpty else { throw BatchCoreError.invalid("the prompt has no tokens") }
        let spec = try request(tokens, params, sampling)
        requestID.pointee = try h.engine.submit(spec)
    }
}

@c @implementation
public func bc_engine_cancel(_ engine: OpaquePointer?, _ requestID: UInt64) -> bc_status {
    abiCall {
        let h = try object(engine, as: EngineHandle.self, "engine")
        try h.engine.cancel(requestID)
        h.queue += h.engine.poll()
    }
}

@c @implementation
public func bc_engine_step(_ engine: OpaquePointer?, _ processed: UnsafeMutablePointer<Int32>?,
                           _ live: UnsafeMutablePointer<Int32>?) -> bc_status {
    abiCall {
        let h = try object(engine, as: EngineHandle.self, "engine")
        h.releaseStrings()
        let n = try h.engine.step()
        h.queue += h.engine.poll()
        put(Int32(n), processed)
        put(Int32(h.engine.liveRequests), live)
    }
}

/// The C struct for one core event (every field set: bc_event has no padding).
private func cEvent(_ event: EngineEvent, strings h: EngineHandle) -> bc_event {
    var e = bc_event()
    switch event {
    case .token(let rid, let tag, let index, let token, let text, let logprob):
        e.kind = Int32(BC_EVENT_TOKEN.rawValue)
        e.request_id = rid
        e.user_tag = tag
        e.index = Int32(index)
        e.token = token
        e.logprob = logprob
        e.text = UnsafePointer(h.cString(text))
        e.text_len = text.utf8.count
        e.message = UnsafePointer(h.cString(""))
    case .finished(let rid, let tag, let index, let reason, let text, let m, let message):
        e.kind = Int32(BC_EVENT_FINISHED.rawValue)
        e.request_id = rid
        e.user_tag = tag
        e.index = Int32(index)
        e.token = -1
        e.text = UnsafePointer(h.cString(text))
        e.text_len = text.utf8.count
        e.finish_reason = reason.rawValue
        e.prompt_tokens = Int32(m.promptTokens)
        e.cached_prompt_tokens = Int32(m.cachedPromptTokens)
        e.generated_tokens = Int32(m.generatedTokens)
        e.ttft_seconds = m.timeToFirstToken
        e.itl_seconds = m.meanInterTokenLatency
        e.total_seconds = m.totalSeconds
        e.message = UnsafePointer(h.cString(message))
    }
    return e
}

/// ABI 2's sizeof(bc_event): the smallest element size bc_engine_poll accepts.
private let eventMinimumSize = Int(BC_EVENT_MIN_SIZE)

@c @implementation
public func bc_engine_poll(_ engine: OpaquePointer?, _ events: UnsafeMutablePointer<bc_event>?, _ capacity: Int,
                           _ eventSize: Int, _ nEvents: UnsafeMutablePointer<Int>?) -> bc_status {
    abiCall {
        let h = try object(engine, as: EngineHandle.self, "engine")
        let nEvents = try required(nEvents, "n_events")
        guard capacity >= 0 else { throw BatchCoreError.invalid("bc_engine_poll: capacity must be >= 0") }
        guard eventSize >= eventMinimumSize, eventSize <= 1 << 16 else {
            throw BatchCoreError.invalid("bc_engine_poll: event_size is \(eventSize); pass sizeof(bc_event) (at least \(eventMinimumSize))")
        }
        guard capacity.multipliedReportingOverflow(by: eventSize).overflow == false else {
            throw BatchCoreError.invalid("bc_engine_poll: capacity \(capacity) × event_size \(eventSize) overflows")
        }
        if capacity > 0 { _ = try required(events, "events") }
        h.releaseStrings()
        let count = min(capacity, h.queue.count - h.head)
        let known = min(eventSize, MemoryLayout<bc_event>.size)
        if count > 0, let base = UnsafeMutableRawPointer(events) {
            for k in 0..<count {
                // Element k starts at k * event_size; only its event_size bytes are written.
                let dst = base + k * eventSize
                var e = cEvent(h.queue[h.head + k], strings: h)
                withUnsafeBytes(of: &e) { dst.copyMemory(from: $0.baseAddress!, byteCount: known) }
                if eventSize > known {
                    (dst + known).initializeMemory(as: UInt8.self, repeating: 0, count: eventSize - known)
                }
            }
        }
        h.head += count
        if h.head == h.queue.count { h.queue.removeAll(keepingCapacity: true); h.head = 0 }
        nEvents.pointee = count
    }
}

@c @implementation
public func bc_engine_get_metrics(_ engine: OpaquePointer?, _ metrics: UnsafeMutablePointer<bc_engine_metrics>?) -> bc_status {
    abiCall {
        let h = try object(engine, as: EngineHandle.self, "engine")
        let out = try required(metrics, "metrics")
        let m = h.engine.currentMetrics()
        let v = bc_engine_metrics(
            struct_size: 0, reserved0: 0, steps: Int64(m.steps), submitted: Int64(m.submitted), finished: Int64(m.finished),
            waiting: Int64(m.waiting), running: Int64(m.running), preemptions: Int64(m.preemptions),
            generated_tokens: Int64(m.generatedTokens), batched_tokens: Int64(m.batchedTokens), busy_seconds: m.busySeconds,
            tokens_per_second: m.tokensPerSecond, kv_used_bytes: Int64(m.kvUsedBytes), kv_total_bytes: Int64(m.kvTotalBytes),
            prefix_hit_rate: m.prefixHitRate, adapter_resident_bytes: Int64(m.adapterResidentBytes),
            adapter_loads: Int64(m.adapterLoads), adapter_evictions: Int64(m.adapterEvictions),
            shared_prefix_rows: Int64(m.sharedPrefixRows), attention_positions: Int64(m.attentionPositions),
            shared_prefix_positions_saved: Int64(m.sharedPrefixPositionsSaved),
            shared_prefix_fallbacks: Int64(m.sharedPrefixFallbacks))
        try writeSized(v, to: out, "bc_engine_metrics")
    }
}
