import BCCore
import BCKV
import BCModel
import CBatchCore

/// A fresh copy per use: a global constant of a C struct holding pointers is not Sendable.
private var defaultContextParams: bc_context_params {
    bc_context_params(
        struct_size: UInt32(MemoryLayout<bc_context_params>.size), n_ctx: 0, kv_bytes: 0, kv_type: Int32(BC_KV_F32.rawValue),
        block_size: 16, prefix_cache: 1, reserved0: 0, layer_window: nil, layer_share: nil)
}

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
        guard let storage = KVStorageType(rawValue: p.kv_type) else {
            throw BatchCoreError.invalid("bc_context_create: unknown kv_type \(p.kv_type)")
        }
        let n = m.config.layerCount
        var layers = [LayerAttention](repeating: .full, count: n)
        for l in 0..<n {
            if let w = p.layer_window {
                guard w[l] >= 0 else { throw BatchCoreError.invalid("layer_window[\(l)] is negative") }
                if w[l] > 0 { layers[l] = .sliding(window: Int(w[l])) }
            }
            if let s = p.layer_share {
                guard s[l] >= -1 else { throw BatchCoreError.invalid("layer_share[\(l)] is \(s[l]); use -1 for a layer with its own KV") }
                if s[l] >= 0 { layers[l] = .shared(source: Int(s[l])) }
            }
        }
        guard p.block_size > 0 else { throw BatchCoreError.invalid("bc_context_create: block_size must be > 0") }
        guard p.n_ctx >= 0, p.kv_bytes >= 0 else { throw BatchCoreError.invalid("bc_context_create: n_ctx and kv_bytes must be >= 0") }
        let layout = KVLayout(layers: layers, storage: storage, blockSize: Int(p.block_size))
        out.pointee = retainHandle(try InferenceContext(model: m, maxPositions: Int(p.n_ctx), kvBudgetBytes: Int(p.kv_bytes),
                                                        layout: layout, prefixCaching: p.prefix_cache != 0))
    }
}

@c @implementation
public func bc_context_free(_ ctx: OpaquePointer?) {
    releaseHandle(ctx, as: InferenceContext.self)
}

/// An empty batch: fields appended in later ABIs default to "absent" (NULL/0).
/// A fresh copy per use: a global constant of a C struct holding pointers is not Sendable.
private var defaultBatch: bc_batch {
    bc_batch(struct_size: UInt32(MemoryLayout<bc_batch>.size), n_tokens: 0, tokens: nil, pos: nil,
        seq_id: nil, logits: nil)
}

@c @implementation
public func bc_batch_default(_ out: UnsafeMutablePointer<bc_batch>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultBatch, out, size, "bc_batch") }
}

@c @implementation
public func bc_decode(_ ctx: OpaquePointer?, _ batch: UnsafePointer<bc_batch>?, _ logits: UnsafeMutablePointer<Float>?,
                      _ capacity: Int) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        // Every field of ABI 2's bc_batch is required, so its size is the minimum.
        let b = try readParams(try required(batch, "batch"), defaults: defaultBatch, "bc_batch",
                               minimumSize: Int(BC_BATCH_MIN_SIZE))
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
        if c.cache.contains(Int(seq)) { try c.cache.truncate(sequence: Int(seq), length: Int(length)) }
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

@c @implementation
public func bc_context_seq_fork(_ ctx: OpaquePointer?, _ parent: Int32, _ child: Int32) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        guard parent >= 0, child >= 0 else { throw BatchCoreError.invalid("seq ids must be >= 0") }
        try c.fork(parent: Int(parent), child: Int(child))
    }
}

@c @implementation
public func bc_context_seq_attach_prefix(_ ctx: OpaquePointer?, _ seq: Int32, _ tokens: UnsafePointer<Int32>?, _ n: Int32,
                                         _ nCached: UnsafeMutablePointer<Int32>?) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let tokens = try required(tokens, "tokens")
        let nCached = try required(nCached, "n_cached")
        guard seq >= 0 else { throw BatchCoreError.invalid("seq_id must be >= 0") }
        guard n > 0 else { throw BatchCoreError.invalid("n must be > 0 (got \(n))") }
        guard c.cache.length(of: Int(seq)) == 0 else { throw BatchCoreError.badState("sequence \(seq) is not empty") }
        let prompt = Array(UnsafeBufferPointer(start: tokens, count: Int(n)))
        let vocab = c.model.config.vocabSize
        if let bad = prompt.first(where: { $0 < 0 || Int($0) >= vocab }) {
            throw BatchCoreError.invalid("token \(bad) is outside the vocabulary")
        }
        nCached.pointee = Int32(try c.attachPrefix(sequence: Int(seq), prompt: prompt))
    }
}

@c @implementation
public func bc_context_kv_stats(_ ctx: OpaquePointer?, _ stats: UnsafeMutablePointer<bc_kv_stats>?) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let stats = try required(stats, "stats")
        let s = c.cache.stats()
        let v = bc_kv_stats(
            struct_size: 0, reserved0: 0, blocks_total: Int64(s.blocksTotal), blocks_used: Int64(s.blocksUsed),
            blocks_cached: Int64(s.blocksCached), blocks_free: Int64(s.blocksFree), bytes_total: Int64(s.bytesTotal),
            bytes_used: Int64(s.bytesUsed), bytes_per_token: Int64(s.bytesPerToken), sequences: Int64(s.sequences),
            tokens: Int64(s.tokens), prefix_hit_tokens: Int64(s.prefixHitTokens), prefix_query_tokens: Int64(s.prefixQueryTokens))
        try writeSized(v, to: stats, "bc_kv_stats")
    }
}
