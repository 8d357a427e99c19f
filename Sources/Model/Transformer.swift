import BCCore
import BCKernels
import BCFormats
import BCKV

#if canImport(Glibc)
import Glibc
#endif

/// A float32 scratch buffer freed with its owner.
final class Scratch {
    let pointer: UnsafeMutablePointer<Float>
    init(_ count: Int) throws { pointer = try Memory.allocateFloats(max(count, 1), fill: 0) }
    deinit { free(pointer) }
}

/// A Llama-family decoder forward pass over a flattened token batch. Immutable after
/// load and safe to share between threads; each forward call takes its own workspace.
/// Every projection is ONE packed-weights matrix product over all tokens of the batch;
/// attention runs per row over that row's sequence's cached keys/values.
public final class Transformer {
    public let config: ModelConfig
    public let weights: ModelWeights
    let rope: RotaryEmbedding
    private let workspaces = ForwardWorkspacePool()

    public init(config: ModelConfig, weights: ModelWeights) {
        self.config = config
        self.weights = weights
        rope = RotaryEmbedding(headDim: config.headDim, base: config.ropeBase)
    }

    /// Loads a model from a GGUF file.
    public convenience init(gguf: GGUFFile, progress: ((Double) -> Void)? = nil) throws {
        let config = try ModelConfig(gguf: gguf)
        self.init(config: config, weights: try ModelWeights(gguf: gguf, config: config, progress: progress))
    }

    /// y[T × rows] = x[T × cols] · Wᵀ (row stride of y: `ldy`, default rows) with the
    /// packed-weights kernel: the same per-value arithmetic for one token or many, so
    /// projections are batch invariant by construction.
    @inline(__always)
    func project(_ x: UnsafePointer<Float>, _ w: WeightMatrix, _ y: UnsafeMutablePointer<Float>, tokens: Int,
                 ldx: Int? = nil) {
        PackedGEMM.multiply(x, ldx: ldx ?? w.cols, tokens: tokens, w.packed!, y, ldy: w.rows)
    }

    /// Checks a batch against the model and the cache; throws before anything changes.
    func validate(_ batch: TokenBatch, cache: KVCache) throws -> [Int: (first: Int, count: Int)] {
        let n = batch.count
        guard n > 0 else { throw BatchCoreError.invalid("empty batch") }
        guard batch.positions.count == n, batch.sequences.count == n, batch.wantLogits.count == n else {
            throw BatchCoreError.invalid("batch arrays differ in length")
        }
        guard cache.kvDim == config.kvDim else { throw BatchCoreError.invalid("KV cache row size does not match the model") }
        var next: [Int: Int] = [:]
        var extent: [Int: (first: Int, count: Int)] = [:]
        for i in 0..<n {
            let t = batch.tokens[i]
            guard t >= 0, Int(t) < config.vocabSize else {
                throw BatchCoreError.invalid("token \(t) at batch index \(i) is outside the vocabulary (0..<\(config.vocabSize))")
            }
            let s = batch.sequences[i], p = batch.positions[i]
            let expected = next[s] ?? cache.length(of: s)
            guard p == expected else {
                throw BatchCoreError.invalid("sequence \(s): batch index \(i) has position \(p), expected \(expected)")
            }
            guard p < config.contextLength else {
                throw BatchCoreError.invalid("position \(p) exceeds the context length \(config.contextLength)")
            }
            next[s] = p + 1
            if let e = extent[s] { extent[s] = (e.first, e.count + 1) } else { extent[s] = (i, 1) }
        }
        return extent
    }

    /// Runs the batch, appending its keys/values to `cache`, and writes one row of
    /// `vocabSize` logits per token with wantLogits (in batch order) to `logits`.
    ///
    /// Batch invariant: every value of a token's row is computed by the same operations
    /// in the same order whatever else the batch holds (`PackedGEMM` projections,
    /// `Attention.group` per row and kv head, per-row norms and activations), so a
    /// sequence's logits do not depend on what it was batched or chunked with.
    public func forward(_ batch: TokenBatch, cache: KVCache, logits: UnsafeMutablePointer<Float>?) throws {
        let c = config, n = batch.count, d = c.embeddingDim, kvd = c.kvDim, ff = c.feedForwardDim, hd = c.headDim
        let qkvDim = d + 2 * kvd
        let extent = try validate(batch, cache: cache)
        // Reserve every sequence's room first: a KV-full error leaves the cache as it was
        // (reservations only grow capacity, never the committed length).
        var newLength: [Int: Int] = [:]
        for i in 0..<n { newLength[batch.sequences[i]] = batch.positions[i] + 1 }
        try cache.reserve(newLength.map { KVGrowth(sequence: $0.key, length: $0.value) })

        let ws = workspaces.take()
        defer { workspaces.give(ws) }
        let x = try ws.buffer(0, n * d), h = try ws.buffer(1, n * d), attn = try ws.buffer(2, n * d)
        let qkv = try ws.buffer(3, n * qkvDim), gateUp = try ws.buffer(4, n * 2 * ff), act = try ws.buffer(5, n * ff)
        for i in 0..<n {
            weights.tokenEmbedding.copyRow(Int(batch.tokens[i]), into: x + i * d)
        }
        let order = newLength.keys.sorted()
        // Rotation tables of the batch's positions, shared by every layer.
        let ropeTable = try ws.buffer(6, n * hd)
        for i in 0..<n { rope.table(position: batch.positions[i], into: ropeTable + i * hd) }

        for (l, w) in weights.layers.enumerated() {
            for i in 0..<n { VectorMath.rmsNorm(x + i * d, w.attentionNorm.data, h + i * d, d, eps: c.rmsEps) }
            project(h, w.qkv, qkv, tokens: n)
            for i in 0..<n {
                let row = qkv + i * qkvDim
                rope.apply(row, heads: c.headCount, table: ropeTable + i * hd)
                rope.apply(row + d, heads: c.kvHeadCount, table: ropeTable + i * hd)
                cache.write(layer: l, sequence: batch.sequences[i], position: batch.positions[i],
                            keys: row + d, values: row + d + kvd)
            }
            // One parallel job over all sequences when their segments can be gathered
            // first; a cache decoding into shared scratch is read one sequence at a time.
            if cache.segmentsStayValid {
                try attention(batch: batch, sequences: order, extent: extent, layer: l, cache: cache,
                          lengths: newLength, q: qkv, qStride: qkvDim, out: attn)
            } else {
                for s in order {
                    try attention(batch: batch, sequences: [s], extent: extent, layer: l, cache: cache,
                              lengths: newLength, q: qkv, qStride: qkvDim, out: attn)
                }
            }
            project(attn, w.wo, h, tokens: n)
            VectorMath.add(h, into: x, n * d)
            for i in 0..<n { VectorMath.rmsNorm(x + i * d, w.ffnNorm.data, h + i * d, d, eps: c.rmsEps) }
            project(h, w.gateUp, gateUp, tokens: n)
            for i in 0..<n {
                let row = gateUp + i * 2 * ff
                VectorMath.swiglu(row, row + ff, act + i * ff, ff)
            }
            project(act, w.down, h, tokens: n)
            VectorMath.add(h, into: x, n * d)
        }
        for i in 0..<n { cache.record(sequence: batch.sequences[i], position: batch.positions[i], token: batch.tokens[i]) }
        for (s, len) in newLength { cache.commit(sequence: s, length: len) }

        guard let logits else { return }
        let rows = (0..<n).filter { batch.wantLogits[$0] }
        if rows.isEmpty { return }
        for (r, i) in rows.enumerated() {
            VectorMath.rmsNorm(x + i * d, weights.outputNorm.data, h + r * d, d, eps: c.rmsEps)
        }
        project(h, weights.output, logits, tokens: rows.count)
    }

    /// Causal attention of the batch rows of `sequences` over their cached positions,
    /// row by row (`Attention.group`; GQA: query head h reads kv head h / group): one work
    /// item per (row, kv head) — the query heads sharing a kv head run together while
    /// its keys/values are in cache — spread over the worker threads. Each row's result
    /// is independent of the batch (see `Attention`).
    private func attention(batch: TokenBatch, sequences: [Int], extent: [Int: (first: Int, count: Int)], layer: Int,
                                cache: KVCache, lengths: [Int: Int], q: UnsafeMutablePointer<Float>, qStride: Int,
                                out: UnsafeMutablePointer<Float>) throws {
        if sequences.isEmpty { return }
        let c = config, d = c.embeddingDim, hd = c.headDim, kvd = c.kvDim
        let scale = 1 / Float(hd).squareRoot()
        let group = c.headCount / c.kvHeadCount, kvHeads = c.kvHeadCount
        let window = cache.window(layer: layer)
        var segments: [[KVSegment]] = []
        var rows: [(index: Int, segments: Int, first: Bool)] = []
        for s in sequences {
            segments.append(try cache.segments(layer: layer, sequence: s, length: lengths[s]!))
            let e = extent[s]!
            var first = true
            for i in e.first..<batch.count where batch.sequences[i] == s {
                rows.append((i, segments.count - 1, first))
                first = false
            }
        }
        let positions = batch.positions
        Parallel.forEach(rows.count * kvHeads) { item in
            let row = rows[item / kvHeads], kvHead = item % kvHeads
            let i = row.index, p = positions[i]
            let lo = window.map { max(0, p - $0 + 1) } ?? 0, visible = p + 1
            withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, group * (visible - lo))) { buf in
                Attention.group(q: q + i * qStride + kvHead * group * hd, heads: group, segments: segments[row.segments],
                                kvStride: kvd, offset: kvHead * hd, headDim: hd, lo: lo, visible: visible, scale: scale,
                                scores: buf.baseAddress!, out: out + i * d + kvHead * group * hd,
                                prefetchRows: row.first)
            }
        }
    }
}
