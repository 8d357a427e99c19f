import BatchCoreKit
import CBatchCore

private let defaultContextParams = bc_context_params(
    struct_size: UInt32(MemoryLayout<bc_context_params>.size), n_ctx: 0, kv_bytes: 0)

@c @implementation
public func bc_context_params_default(_ out: UnsafeMutablePointer<bc_context_params>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultContextParams, out, size, "bc_context_params") }
}

@c @implementation
public func bc_context_create(_ model: OpaquePointer?, _ params: UnsafePointer<bc_context_params>?,
                              _ out: UnsafeMutablePointer<OpaquePointer?>?) -> bc_status {
    abiCall {
        let m = try object(model, as: LanguageModel.self, "model")
        let out = try required(out, "out")
        let p = try readParams(params, defaults: defaultContextParams, "bc_context_params")
        out.pointee = retainHandle(try InferenceContext(model: m, maxPositions: Int(p.n_ctx), kvBudgetBytes: Int(p.kv_bytes)))
    }
}

@c @implementation
public func bc_context_free(_ ctx: OpaquePointer?) {
    releaseHandle(ctx, as: InferenceContext.self)
}

@c @implementation
public func bc_decode(_ ctx: OpaquePointer?, _ batch: UnsafePointer<bc_batch>?, _ logits: UnsafeMutablePointer<Float>?,
                      _ capacity: Int) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let b = try required(batch, "batch").pointee
        let n = Int(b.n_tokens)
        guard n > 0 else { throw BatchCoreError.invalid("bc_decode: n_tokens must be > 0 (got \(n))") }
        let tokens = try required(b.tokens, "batch->tokens")
        let pos = try required(b.pos, "batch->pos")
        let seq = try required(b.seq_id, "batch->seq_id")
        var tb = TokenBatch()
        for i in 0..<n {
            guard seq[i] >= 0 else { throw BatchCoreError.invalid("bc_decode: seq_id[\(i)] is negative") }
            let want = b.logits.map { $0[i] != 0 } ?? (i == n - 1)
            tb.append(tokens[i], position: Int(pos[i]), sequence: Int(seq[i]), logits: want)
        }
        let rows = tb.logitRows
        if rows > 0 {
            _ = try required(logits, "logits")
            let needed = rows * c.model.config.vocabSize
            guard capacity >= needed else {
                throw BatchCoreError.invalid("bc_decode: logits capacity \(capacity) < \(rows) rows × \(c.model.config.vocabSize)")
            }
        }
        try c.decode(tb, logits: logits)
    }
}

@c @implementation
public func bc_context_seq_length(_ ctx: OpaquePointer?, _ seq: Int32, _ length: UnsafeMutablePointer<Int32>?) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let length = try required(length, "length")
        guard seq >= 0 else { throw BatchCoreError.invalid("seq_id must be >= 0") }
        length.pointee = Int32(c.cache.length(of: Int(seq)))
    }
}

@c @implementation
public func bc_context_seq_truncate(_ ctx: OpaquePointer?, _ seq: Int32, _ length: Int32) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        guard seq >= 0, length >= 0 else { throw BatchCoreError.invalid("seq_id and length must be >= 0") }
        c.cache.truncate(sequence: Int(seq), length: Int(length))
    }
}

@c @implementation
public func bc_context_seq_remove(_ ctx: OpaquePointer?, _ seq: Int32) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        guard seq >= 0 else { throw BatchCoreError.invalid("seq_id must be >= 0") }
        c.cache.remove(sequence: Int(seq))
    }
}
