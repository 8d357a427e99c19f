import COpenBLAS

#if canImport(Glibc)
import Glibc
#endif

/// A float32 scratch buffer freed with its owner.
final class Scratch {
    let pointer: UnsafeMutablePointer<Float>
    init(_ count: Int) throws { pointer = try OptimizerTensor.allocate(max(count, 1), fill: 0) }
    deinit { free(pointer) }
}

/// A Llama-family decoder forward pass over a flattened token batch. Immutable after
/// load and safe to share between threads; each forward call allocates its own
/// scratch. Every projection is ONE cblas_sgemm over all tokens of the batch;
/// attention runs per sequence over that sequence's cached keys/values.
public final class Transformer {
    public let config: ModelConfig
    public let weights: ModelWeights
    let rope: RotaryEmbedding

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

    /// y[T × rows] = x[T × cols] · Wᵀ (row stride of y: `ldy`, default rows). One
    /// token is a matrix-vector product streamed by our own kernel; more tokens are one
    /// cblas_sgemm.
    @inline(__always)
    func project(_ x: UnsafePointer<Float>, _ w: WeightMatrix, _ y: UnsafeMutablePointer<Float>, tokens: Int,
                 ldx: Int? = nil, invariant: Bool = false) {
        if tokens == 1 && !invariant {
            MatVec.multiply(w.data, rows: w.rows, cols: w.cols, x: x, y: y)
            return
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(w.rows), Int32(w.cols), 1,
                    x, Int32(ldx ?? w.cols), w.data, Int32(w.cols), 0, y, Int32(w.rows))
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
    /// `batchInvariant`: every row is computed by the same kernels whatever the batch
    /// holds (cblas_sgemm for all projections — OpenBLAS gives each row the same bits
    /// for any number of rows — and the sgemm attention path for single rows too), so a
    /// sequence's results do not depend on what it was batched with. Off, a lone token
    /// uses the faster matrix-vector kernels.
    public func forward(_ batch: TokenBatch, cache: KVCache, logits: UnsafeMutablePointer<Float>?,
                        batchInvariant: Bool = false) throws {
        let c = config, n = batch.count, d = c.embeddingDim, kvd = c.kvDim, ff = c.feedForwardDim, hd = c.headDim
        let qkvDim = d + 2 * kvd
        let extent = try validate(batch, cache: cache)
        // Reserve every sequence's room first: a KV-full error leaves the cache as it was
        // (reservations only grow capacity, never the committed length).
        var newLength: [Int: Int] = [:]
        for i in 0..<n { newLength[batch.sequences[i]] = batch.positions[i] + 1 }
        for (s, len) in newLength.sorted(by: { $0.key < $1.key }) { try cache.reserve(sequence: s, length: len) }

        let x = try Scratch(n * d), h = try Scratch(n * d), attn = try Scratch(n * d)
        let qkv = try Scratch(n * qkvDim), gateUp = try Scratch(n * 2 * ff), act = try Scratch(n * ff)
        for i in 0..<n {
            (x.pointer + i * d).update(from: weights.tokenEmbedding.data + Int(batch.tokens[i]) * d, count: d)
        }
        let order = newLength.keys.sorted()
        let maxLen = newLength.values.max() ?? 0
        let maxRows = extent.values.map(\.count).max() ?? 1
        let scores = try Scratch(maxRows * maxLen)
        let qGather = try Scratch(maxRows * d), oGather = try Scratch(maxRows * d)
        // Rotation tables of the batch's positions, shared by every layer.
        let ropeTable = try Scratch(n * hd)
        for i in 0..<n { rope.table(position: batch.positions[i], into: ropeTable.pointer + i * hd) }

        for (l, w) in weights.layers.enumerated() {
            for i in 0..<n { VectorMath.rmsNorm(x.pointer + i * d, w.attentionNorm.data, h.pointer + i * d, d, eps: c.rmsEps) }
            project(h.pointer, w.qkv, qkv.pointer, tokens: n, invariant: batchInvariant)
            for i in 0..<n {
                let row = qkv.pointer + i * qkvDim
                rope.apply(row, heads: c.headCount, table: ropeTable.pointer + i * hd)
                rope.apply(row + d, heads: c.kvHeadCount, table: ropeTable.pointer + i * hd)
                cache.write(layer: l, sequence: batch.sequences[i], position: batch.positions[i],
                            keys: row + d, values: row + d + kvd)
            }
            for s in order {
                attention(batch: batch, sequence: s, rows: extent[s]!, layer: l, cache: cache, length: newLength[s]!,
                          q: qkv.pointer, qStride: qkvDim, out: attn.pointer, scores: scores.pointer,
                          qGather: qGather.pointer, oGather: oGather.pointer, invariant: batchInvariant)
            }
            project(attn.pointer, w.wo, h.pointer, tokens: n, invariant: batchInvariant)
            VectorMath.add(h.pointer, into: x.pointer, n * d)
            for i in 0..<n { VectorMath.rmsNorm(x.pointer + i * d, w.ffnNorm.data, h.pointer + i * d, d, eps: c.rmsEps) }
            project(h.pointer, w.gateUp, gateUp.pointer, tokens: n, invariant: batchInvariant)
            for i in 0..<n {
                let row = gateUp.pointer + i * 2 * ff
                VectorMath.swiglu(row, row + ff, act.pointer + i * ff, ff)
            }
            project(act.pointer, w.down, h.pointer, tokens: n, invariant: batchInvariant)
            VectorMath.add(h.pointer, into: x.pointer, n * d)
        }
        for i in 0..<n { cache.record(sequence: batch.sequences[i], position: batch.positions[i], token: batch.tokens[i]) }
        for (s, len) in newLength { cache.commit(sequence: s, length: len) }

        guard let logits else { return }
        let rows = (0..<n).filter { batch.wantLogits[$0] }
        if rows.isEmpty { return }
        for (r, i) in rows.enumerated() {
            VectorMath.rmsNorm(x.pointer + i * d, weights.outputNorm.data, h.pointer + r * d, d, eps: c.rmsEps)
        }
        project(h.pointer, weights.output, logits, tokens: rows.count, invariant: batchInvariant)
    }

    /// Causal attention of one sequence's batch rows over its cached positions:
    /// scores = q·Kᵀ/√d per head (GQA: query head h reads kv head h / group), softmax
    /// over positions <= the row's own, out = P·V. Several rows run as sgemm over each
    /// KV segment; a single row (decode) uses SIMD dot products.
    private func attention(batch: TokenBatch, sequence s: Int, rows: (first: Int, count: Int), layer: Int,
                           cache: KVCache, length: Int, q: UnsafeMutablePointer<Float>, qStride: Int,
                           out: UnsafeMutablePointer<Float>, scores: UnsafeMutablePointer<Float>,
                           qGather: UnsafeMutablePointer<Float>, oGather: UnsafeMutablePointer<Float>,
                           invariant: Bool) {
        let c = config, d = c.embeddingDim, hd = c.headDim, kvd = c.kvDim
        let scale = 1 / Float(hd).squareRoot()
        let group = c.headCount / c.kvHeadCount
        let segments = cache.segments(layer: layer, sequence: s, length: length)
        let window = cache.window(layer: layer)
        /// First position row r may attend to.
        func lowest(_ position: Int) -> Int { window.map { max(0, position - $0 + 1) } ?? 0 }
        if rows.count == 1 && !invariant {
            let i = rows.first
            let visible = batch.positions[i] + 1, lo = lowest(batch.positions[i])
            for head in 0..<c.headCount {
                let qh = q + i * qStride + head * hd, kvOff = (head / group) * hd
                for seg in segments {
                    for j in max(0, lo - seg.start)..<max(0, min(seg.count, visible - seg.start)) {
                        scores[seg.start + j] = MatVec.row(seg.keys + j * kvd + kvOff, hd, qh) * scale
                    }
                }
                VectorMath.softmax(scores + lo, visible - lo)
                let o = out + i * d + head * hd
                o.update(repeating: 0, count: hd)
                for seg in segments {
                    for j in max(0, lo - seg.start)..<max(0, min(seg.count, visible - seg.start)) {
                        VectorMath.axpy(scores[seg.start + j], seg.values + j * kvd + kvOff, o, hd)
                    }
                }
            }
            return
        }
        // The sequence's rows, gathered when they are not contiguous in the batch.
        var indices: [Int] = []
        indices.reserveCapacity(rows.count)
        for i in rows.first..<batch.count where batch.sequences[i] == s { indices.append(i) }
        let m = indices.count
        let contiguous = indices.last! - indices.first! + 1 == m
        let qs = contiguous ? q + indices[0] * qStride : qGather
        let ldq = contiguous ? qStride : d
        let os = contiguous ? out + indices[0] * d : oGather
        if !contiguous { for (r, i) in indices.enumerated() { (qGather + r * d).update(from: q + i * qStride, count: d) } }
        let positions = indices.map { batch.positions[$0] }
        for head in 0..<c.headCount {
            let kvHead = head / group
            for seg in segments {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(seg.count), Int32(hd), scale,
                            qs + head * hd, Int32(ldq), seg.keys + kvHead * hd, Int32(kvd), 0,
                            scores + seg.start, Int32(length))
            }
            for r in 0..<m {
                let row = scores + r * length
                let visible = positions[r] + 1, lo = lowest(positions[r])
                VectorMath.softmax(row + lo, visible - lo)
                if lo > 0 { row.update(repeating: 0, count: lo) }
                if visible < length { (row + visible).update(repeating: 0, count: length - visible) }
            }
            for (j, seg) in segments.enumerated() {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(hd), Int32(seg.count), 1,
                            scores + seg.start, Int32(length), seg.values + kvHead * hd, Int32(kvd), j == 0 ? 0 : 1,
                            os + head * hd, Int32(d))
            }
        }
        if !contiguous { for (r, i) in indices.enumerated() { (out + i * d).update(from: oGather + r * d, count: d) } }
    }
}
