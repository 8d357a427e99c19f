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

    /// y[T × rows] = x[T × cols] · Wᵀ.
    @inline(__always)
    func project(_ x: UnsafePointer<Float>, _ w: WeightMatrix, _ y: UnsafeMutablePointer<Float>, tokens: Int) {
        if tokens == 1 {
            // A single token is a matrix-vector product: sgemv streams W once.
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(w.rows), Int32(w.cols), 1, w.data, Int32(w.cols), x, 1, 0, y, 1)
            return
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(tokens), Int32(w.rows), Int32(w.cols), 1,
                    x, Int32(w.cols), w.data, Int32(w.cols), 0, y, Int32(w.rows))
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
    public func forward(_ batch: TokenBatch, cache: KVCache, logits: UnsafeMutablePointer<Float>?) throws {
        let c = config, n = batch.count, d = c.embeddingDim, kvd = c.kvDim, ff = c.feedForwardDim, hd = c.headDim
        let extent = try validate(batch, cache: cache)
        // Reserve every sequence's room first: a KV-full error leaves the cache as it was
        // (reservations only grow capacity, never the committed length).
        var newLength: [Int: Int] = [:]
        for i in 0..<n { newLength[batch.sequences[i]] = batch.positions[i] + 1 }
        for (s, len) in newLength.sorted(by: { $0.key < $1.key }) { try cache.reserve(sequence: s, length: len) }

        let x = try Scratch(n * d), h = try Scratch(n * d), q = try Scratch(n * d), attn = try Scratch(n * d)
        let k = try Scratch(n * kvd), v = try Scratch(n * kvd)
        let gate = try Scratch(n * ff), up = try Scratch(n * ff)
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
        let scale = 1 / Float(hd).squareRoot()
        let group = c.headCount / c.kvHeadCount

        for (l, w) in weights.layers.enumerated() {
            for i in 0..<n { VectorMath.rmsNorm(x.pointer + i * d, w.attentionNorm.data, h.pointer + i * d, d, eps: c.rmsEps) }
            project(h.pointer, w.wq, q.pointer, tokens: n)
            project(h.pointer, w.wk, k.pointer, tokens: n)
            project(h.pointer, w.wv, v.pointer, tokens: n)
            for i in 0..<n {
                rope.apply(q.pointer + i * d, heads: c.headCount, table: ropeTable.pointer + i * hd)
                rope.apply(k.pointer + i * kvd, heads: c.kvHeadCount, table: ropeTable.pointer + i * hd)
                let slot = cache.slot(layer: l, sequence: batch.sequences[i], position: batch.positions[i])
                slot.keys.update(from: k.pointer + i * kvd, count: kvd)
                slot.values.update(from: v.pointer + i * kvd, count: kvd)
            }
            for s in order {
                try attention(batch: batch, sequence: s, rows: extent[s]!, layer: l, cache: cache,
                              length: newLength[s]!, q: q.pointer, out: attn.pointer, scores: scores.pointer,
                              qGather: qGather.pointer, oGather: oGather.pointer, scale: scale, group: group)
            }
            project(attn.pointer, w.wo, h.pointer, tokens: n)
            VectorMath.add(h.pointer, into: x.pointer, n * d)
            for i in 0..<n { VectorMath.rmsNorm(x.pointer + i * d, w.ffnNorm.data, h.pointer + i * d, d, eps: c.rmsEps) }
            project(h.pointer, w.gate, gate.pointer, tokens: n)
            project(h.pointer, w.up, up.pointer, tokens: n)
            VectorMath.swiglu(gate.pointer, up.pointer, gate.pointer, n * ff)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(d), Int32(ff), 1,
                        gate.pointer, Int32(ff), w.down.data, Int32(ff), 0, h.pointer, Int32(d))
            VectorMath.add(h.pointer, into: x.pointer, n * d)
        }
        for (s, len) in newLength { cache.commit(sequence: s, length: len) }

        guard let logits else { return }
        let rows = (0..<n).filter { batch.wantLogits[$0] }
        if rows.isEmpty { return }
        for (r, i) in rows.enumerated() {
            VectorMath.rmsNorm(x.pointer + i * d, weights.outputNorm.data, h.pointer + r * d, d, eps: c.rmsEps)
        }
        project(h.pointer, weights.output, logits, tokens: rows.count)
    }

    /// Causal attention of one sequence's batch rows over its cached positions.
    private func attention(batch: TokenBatch, sequence s: Int, rows: (first: Int, count: Int), layer: Int,
                           cache: KVCache, length: Int, q: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                           scores: UnsafeMutablePointer<Float>, qGather: UnsafeMutablePointer<Float>,
                           oGather: UnsafeMutablePointer<Float>, scale: Float, group: Int) throws {
        let c = config, d = c.embeddingDim, hd = c.headDim, kvd = c.kvDim
        // The sequence's rows, gathered when they are not contiguous in the batch.
        var indices: [Int] = []
        indices.reserveCapacity(rows.count)
        for i in rows.first..<batch.count where batch.sequences[i] == s { indices.append(i) }
        let m = indices.count
        let contiguous = indices.last! - indices.first! + 1 == m
        let qs = contiguous ? q + indices[0] * d : qGather
        let os = contiguous ? out + indices[0] * d : oGather
        if !contiguous { for (r, i) in indices.enumerated() { (qGather + r * d).update(from: q + i * d, count: d) } }
        let segments = cache.segments(layer: layer, sequence: s, length: length)
        let positions = indices.map { batch.positions[$0] }
        for head in 0..<c.headCount {
            let kvHead = head / group
            for seg in segments {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(seg.count), Int32(hd), scale,
                            qs + head * hd, Int32(d), seg.keys + kvHead * hd, Int32(kvd), 0,
                            scores + seg.start, Int32(length))
            }
            for r in 0..<m {
                let row = scores + r * length
                let visible = positions[r] + 1
                VectorMath.softmax(row, visible)
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
