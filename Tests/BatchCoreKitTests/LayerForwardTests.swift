import BCCore
import BCFormats
import BCKernels
import BCKV
import BCModel
import Foundation
import Testing

/// The layer functions over named activations, apart from the KV cache: the cache-free
/// forward of packed documents against the serving forward of each document alone,
/// attention over a strided training-buffer view against float64, and kept per-layer
/// activations against the reusing (serving) mode.
@Suite(.serialized) struct LayerForwardTests {
    // MARK: a tiny random model

    static let tiny = ModelConfig(layerCount: 3, embeddingDim: 64, headCount: 4, kvHeadCount: 2, feedForwardDim: 96,
                                  vocabSize: 61, contextLength: 128, ropeBase: 10000, rmsEps: 1e-5)

    /// Random Llama weights of `tiny` (GGUF names and dims), deterministic per seed:
    /// projections uniform in ±0.25, norm weights in 0.9...1.1, embeddings in ±1.
    static func tinyTensors(seed: UInt64) -> [(name: String, dims: [Int], values: [Float])] {
        var rng = SplitMix64(state: seed)
        let c = tiny, d = c.embeddingDim, kvd = c.kvDim, ff = c.feedForwardDim
        func matrix(_ name: String, rows: Int, cols: Int, scale: Float) -> (String, [Int], [Float]) {
            (name, [cols, rows], (0..<rows * cols).map { _ in rng.uniform() * scale })
        }
        func norm(_ name: String) -> (String, [Int], [Float]) { (name, [d], (0..<d).map { _ in 1 + 0.1 * rng.uniform() }) }
        var out = [matrix("token_embd.weight", rows: c.vocabSize, cols: d, scale: 1), norm("output_norm.weight")]
        for l in 0..<c.layerCount {
            let p = "blk.\(l)."
            out += [norm(p + "attn_norm.weight"), matrix(p + "attn_q.weight", rows: d, cols: d, scale: 0.25),
                    matrix(p + "attn_k.weight", rows: kvd, cols: d, scale: 0.25),
                    matrix(p + "attn_v.weight", rows: kvd, cols: d, scale: 0.25),
                    matrix(p + "attn_output.weight", rows: d, cols: d, scale: 0.25), norm(p + "ffn_norm.weight"),
                    matrix(p + "ffn_gate.weight", rows: ff, cols: d, scale: 0.25),
                    matrix(p + "ffn_up.weight", rows: ff, cols: d, scale: 0.25),
                    matrix(p + "ffn_down.weight", rows: d, cols: ff, scale: 0.25)]
        }
        return out
    }

    /// The tiny model with its first `layers` layers (same weights whatever `layers`).
    /// `untied`: with its own output head (`output.weight`), else tied to the embedding.
    static func tinyModel(layers: Int = tiny.layerCount, seed: UInt64 = 11, untied: Bool = false) throws -> Transformer {
        let c = tiny
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("llama.block_count", .uint32(UInt32(layers)))
        w.set("llama.embedding_length", .uint32(UInt32(c.embeddingDim)))
        w.set("llama.attention.head_count", .uint32(UInt32(c.headCount)))
        w.set("llama.attention.head_count_kv", .uint32(UInt32(c.kvHeadCount)))
        w.set("llama.feed_forward_length", .uint32(UInt32(c.feedForwardDim)))
        w.set("llama.context_length", .uint32(UInt32(c.contextLength)))
        w.set("llama.vocab_size", .uint32(UInt32(c.vocabSize)))
        w.set("llama.attention.layer_norm_rms_epsilon", .float32(c.rmsEps))
        for t in tinyTensors(seed: seed) {
            if t.name.hasPrefix("blk."), let l = Int(t.name.dropFirst(4).prefix { $0 != "." }), l >= layers { continue }
            try w.addTensor(name: t.name, dims: t.dims, floats: t.values)
        }
        if untied {
            var rng = SplitMix64(state: seed ^ 0x5EED)
            try w.addTensor(name: "output.weight", dims: [c.embeddingDim, c.vocabSize],
                            floats: (0..<c.vocabSize * c.embeddingDim).map { _ in 0.5 * rng.uniform() })
        }
        let bytes = try w.serialize()
        let file = try bytes.withUnsafeBytes { try GGUFFile(bytes: $0) }
        return try Transformer(gguf: file)
    }

    static func randomDocuments(_ lengths: [Int], vocab: Int, seed: UInt64) -> [[Int32]] {
        var rng = SplitMix64(state: seed)
        return lengths.map { n in (0..<n).map { _ in Int32(rng.next() % UInt64(vocab)) } }
    }

    // MARK: packed documents vs serving each alone

    /// Logits of every row of every document from ONE cache-free pass over the packed
    /// documents (`forward(documents:)`), and from the serving forward of each document
    /// alone in a fresh cache (a contiguous one: one run per sequence; a paged one: runs
    /// of 16 rows). Expected bit-identical: the same kernels run on the same values, and
    /// attention's result does not depend on how its rows are split into runs.
    static func checkPackedEqualsAlone(_ model: Transformer, _ docs: [[Int32]]) throws {
        let vocab = model.config.vocabSize, c = model.config
        var batch = DocumentBatch()
        for doc in docs { batch.append(document: doc, logits: true) }
        var packed = [Float](repeating: .nan, count: batch.count * vocab)
        try packed.withUnsafeMutableBufferPointer { try model.forward(documents: batch, logits: $0.baseAddress) }
        var first = 0
        for (k, doc) in docs.enumerated() {
            let caches: [KVCache] = [
                ContiguousKVCache(layerCount: c.layerCount, kvDim: c.kvDim, maxLength: c.contextLength),
                try PagedKVCache(kvDim: c.kvDim, layout: .full(layerCount: c.layerCount), budgetBytes: 1 << 26,
                                 maxLength: c.contextLength, prefixCaching: false),
            ]
            for cache in caches {
                var alone = TokenBatch()
                for (p, t) in doc.enumerated() { alone.append(t, position: p, sequence: 7, logits: true) }
                var out = [Float](repeating: .nan, count: doc.count * vocab)
                try out.withUnsafeMutableBufferPointer { try model.forward(alone, cache: cache, logits: $0.baseAddress) }
                let mine = Array(packed[first * vocab..<(first + doc.count) * vocab])
                let differing = Self.differing(mine, out)
                #expect(differing == 0, "document \(k) (\(doc.count) tokens), \(type(of: cache)): \(differing) logits differ")
            }
            first += doc.count
        }
    }

    @Test func packedDocumentsEqualServingAloneTinyModel() throws {
        let model = try Self.tinyModel()
        try Self.checkPackedEqualsAlone(model, Self.randomDocuments([23, 1, 40], vocab: Self.tiny.vocabSize, seed: 5))
        try Self.checkPackedEqualsAlone(model, Self.randomDocuments([17, 9], vocab: Self.tiny.vocabSize, seed: 6))
    }

    @Test(.enabled(if: TestModel.available)) func packedDocumentsEqualServingAloneDefaultModel() throws {
        let model = try TestModel.shared()
        try Self.checkPackedEqualsAlone(model, Self.randomDocuments([37, 5, 60], vocab: model.config.vocabSize, seed: 9))
    }

    /// Logits of a row of a packed batch depend only on its own document: changing one
    /// token of document 0 changes document 0's later rows and nothing of document 1.
    @Test func attentionNeverCrossesDocuments() throws {
        let model = try Self.tinyModel(), vocab = Self.tiny.vocabSize
        var docs = Self.randomDocuments([12, 15], vocab: vocab, seed: 21)
        func logits(_ docs: [[Int32]]) throws -> [Float] {
            var batch = DocumentBatch()
            for doc in docs { batch.append(document: doc, logits: true) }
            var out = [Float](repeating: .nan, count: batch.count * vocab)
            try out.withUnsafeMutableBufferPointer { try model.forward(documents: batch, logits: $0.baseAddress) }
            return out
        }
        let before = try logits(docs)
        docs[0][4] = (docs[0][4] + 1) % Int32(vocab)
        let after = try logits(docs)
        func changed(_ r: Range<Int>) -> Int { Self.differing(Array(before[r]), Array(after[r])) }
        #expect(changed(0..<(4 * vocab)) == 0, "rows before the change moved")
        #expect(changed((4 * vocab)..<(12 * vocab)) > 0, "the change did not reach its document")
        #expect(changed((12 * vocab)..<before.count) == 0, "the change leaked into the next document")
    }

    // MARK: attention over a strided training-buffer view

    /// Attention.group over a `KVView` into a training batch's qkv rows (row stride
    /// d + 2·kvd, keys at column d, values at d + kvd, one run per document) vs float64
    /// softmax(q·K/√hd)·V over the row's own document up to its position, random inputs:
    /// |out − ref| ≤ 1e-5 · max|v|. The same keys/values copied into a cache's layout
    /// (stride kvd, runs of 16) give bit-identical output.
    @Test func attentionOverTrainingBufferMatchesFloat64() {
        var rng = SplitMix64(state: 77)
        for (hd, kvHeads, group) in [(16, 2, 2), (64, 3, 3), (20, 1, 4)] {
            let d = hd * kvHeads * group, kvd = hd * kvHeads, stride = d + 2 * kvd
            let lengths = [9, 1, 33]
            let t = lengths.reduce(0, +)
            let qkv = (0..<t * stride).map { _ in rng.uniform() }
            let scale = 1 / Float(hd).squareRoot()
            var worst = 0.0
            qkv.withUnsafeBufferPointer { buf in
                let base = buf.baseAddress!
                var first = 0
                for n in lengths {
                    let view = KVView(segments: [KVSegment(keys: base + first * stride + d, values: base + first * stride + d + kvd,
                                                           start: 0, count: n)], rowStride: stride)
                    // The same rows in a cache's layout: stride kvd, blocks of 16.
                    var keys = [Float](), values = [Float]()
                    for p in 0..<n {
                        keys += qkv[(first + p) * stride + d..<(first + p) * stride + d + kvd]
                        values += qkv[(first + p) * stride + d + kvd..<(first + p + 1) * stride]
                    }
                    keys.withUnsafeBufferPointer { kb in
                        values.withUnsafeBufferPointer { vb in
                            let cached = KVView(segments: Swift.stride(from: 0, to: n, by: 16).map {
                                KVSegment(keys: kb.baseAddress! + $0 * kvd, values: vb.baseAddress! + $0 * kvd, start: $0,
                                          count: min(16, n - $0))
                            }, rowStride: kvd)
                            for p in 0..<n {
                                for kvHead in 0..<kvHeads {
                                    let q = base + (first + p) * stride + kvHead * group * hd
                                    var scores = [Float](repeating: .nan, count: group * (p + 1))
                                    var out = [Float](repeating: .nan, count: group * hd)
                                    var out2 = out
                                    Attention.group(q: q, heads: group, kv: view, offset: kvHead * hd, headDim: hd, lo: 0,
                                                    visible: p + 1, scale: scale, scores: &scores, out: &out)
                                    Attention.group(q: q, heads: group, kv: cached, offset: kvHead * hd, headDim: hd, lo: 0,
                                                    visible: p + 1, scale: scale, scores: &scores, out: &out2)
                                    #expect(out == out2, "hd \(hd): training view and cache layout differ")
                                    for h in 0..<group {
                                        var s = [Double]()
                                        for j in 0...p {
                                            var dot = 0.0
                                            for c in 0..<hd {
                                                dot += Double(q[h * hd + c]) * Double(qkv[(first + j) * stride + d + kvHead * hd + c])
                                            }
                                            s.append(dot * Double(scale))
                                        }
                                        let m = s.max()!
                                        let e = s.map { Foundation.exp($0 - m) }, sum = e.reduce(0, +)
                                        var vmax = 0.0
                                        for c in 0..<hd {
                                            var ref = 0.0
                                            for j in 0...p {
                                                let v = Double(qkv[(first + j) * stride + d + kvd + kvHead * hd + c])
                                                ref += e[j] / sum * v
                                                vmax = max(vmax, abs(v))
                                            }
                                            worst = max(worst, abs(Double(out[h * hd + c]) - ref))
                                        }
                                        #expect(worst <= 1e-5 * max(vmax, 1), "hd \(hd) row \(p): error \(worst)")
                                    }
                                }
                            }
                        }
                    }
                    first += n
                }
            }
            print("attention over a training view, hd \(hd): worst abs error \(worst)")
        }
    }

    // MARK: kept activations vs reuse

    static func values(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> [Float] { Array(UnsafeBufferPointer(start: p, count: n)) }

    /// How many values of two equally long arrays differ in their bits (a mismatch in
    /// length counts every value).
    static func differing(_ a: [Float], _ b: [Float]) -> Int {
        a.count != b.count ? max(a.count, b.count) : zip(a, b).filter { $0.0.bitPattern != $0.1.bitPattern }.count
    }

    /// The named buffers of one layer set over `t` rows (qkv, attention, gateUp, act,
    /// output: the ones a reusing set still holds after its last layer).
    static func snapshot(_ a: LayerActivations, rows t: Int, _ c: ModelConfig) -> [String: [Float]] {
        let d = c.embeddingDim
        return ["qkv": values(a.qkv, t * (d + 2 * c.kvDim)), "attention": values(a.attention, t * d),
                "gateUp": values(a.gateUp, t * 2 * c.feedForwardDim), "act": values(a.act, t * c.feedForwardDim),
                "output": values(a.output, t * d)]
    }

    /// Every layer's kept activations equal what the reusing mode computes for that layer:
    /// layer l of the full model (keeping layers) against the last layer of the same
    /// weights truncated to l + 1 layers (reusing one set), bit for bit; and the logits
    /// of both modes are identical. Kept layers are distinct memory and chain
    /// (layer l's output is layer l+1's input; mid = input + attention·Woᵀ ≠ input).
    @Test func keptActivationsEqualReuseModeTinyModel() throws {
        let c = Self.tiny, vocab = c.vocabSize
        let full = try Self.tinyModel()
        var batch = DocumentBatch()
        for doc in Self.randomDocuments([14, 6, 21], vocab: vocab, seed: 3) { batch.append(document: doc, logits: true) }
        let t = batch.count
        let kept = ForwardActivations(keepingLayers: true)
        var keptLogits = [Float](repeating: .nan, count: t * vocab), reusedLogits = keptLogits
        try keptLogits.withUnsafeMutableBufferPointer { try full.forward(documents: batch, logits: $0.baseAddress, activations: kept) }
        let reused = ForwardActivations(keepingLayers: false)
        try reusedLogits.withUnsafeMutableBufferPointer {
            try full.forward(documents: batch, logits: $0.baseAddress, activations: reused)
        }
        #expect(Self.differing(keptLogits, reusedLogits) == 0)
        #expect(kept.rows == t && kept.layerCount == c.layerCount)
        for l in 0..<c.layerCount {
            let truncated = l + 1 == c.layerCount ? full : try Self.tinyModel(layers: l + 1)
            let last = ForwardActivations(keepingLayers: false)
            try truncated.forward(documents: batch, logits: nil, activations: last)
            let mine = Self.snapshot(try kept.layer(l), rows: t, c), theirs = Self.snapshot(try last.layer(l), rows: t, c)
            for (name, v) in mine.sorted(by: { $0.key < $1.key }) {
                #expect(Self.differing(v, theirs[name] ?? []) == 0, "layer \(l) \(name) differs")
            }
            let a = try kept.layer(l)
            #expect(Self.differing(Self.values(a.mid, t * c.embeddingDim), Self.values(a.input, t * c.embeddingDim)) > 0)
            if l > 0 { #expect(a.input == (try kept.layer(l - 1)).output, "layer \(l) does not read layer \(l - 1)'s output") }
        }
        #expect(throws: BatchCoreError.self) { try kept.layer(c.layerCount) }
        #expect(throws: BatchCoreError.self) { try kept.layer(-1) }
    }

    /// On the default model: keeping every layer gives the same logits and the same
    /// last-layer activations as the reusing mode, bit for bit.
    @Test(.enabled(if: TestModel.available)) func keptActivationsEqualReuseModeDefaultModel() throws {
        let model = try TestModel.shared(), c = model.config, vocab = c.vocabSize
        var batch = DocumentBatch()
        for doc in Self.randomDocuments([19, 8], vocab: vocab, seed: 4) { batch.append(document: doc, logits: true) }
        let kept = ForwardActivations(keepingLayers: true), reused = ForwardActivations(keepingLayers: false)
        var a = [Float](repeating: .nan, count: batch.count * vocab), b = a
        try a.withUnsafeMutableBufferPointer { try model.forward(documents: batch, logits: $0.baseAddress, activations: kept) }
        try b.withUnsafeMutableBufferPointer { try model.forward(documents: batch, logits: $0.baseAddress, activations: reused) }
        #expect(Self.differing(a, b) == 0)
        let l = c.layerCount - 1
        let mine = Self.snapshot(try kept.layer(l), rows: batch.count, c)
        let theirs = Self.snapshot(try reused.layer(l), rows: batch.count, c)
        for (name, v) in mine.sorted(by: { $0.key < $1.key }) {
            #expect(Self.differing(v, theirs[name] ?? []) == 0, "last layer \(name) differs")
        }
        // Kept layers are really distinct: an early layer's qkv is not the last one's.
        #expect(Self.differing(Self.values(try kept.layer(0).qkv, 64), Array((mine["qkv"] ?? []).prefix(64))) > 0)
    }

    // MARK: bad input

    /// A malformed document batch is an error, not a trap, and changes no caller buffer.
    @Test func malformedDocumentBatchesThrow() throws {
        let model = try Self.tinyModel(layers: 1)
        let good: [Int32] = [1, 2, 3, 4]
        let bad: [DocumentBatch] = [
            DocumentBatch(),
            DocumentBatch(tokens: good, documentLengths: [2, 1], wantLogits: [true, true, true, true]),
            DocumentBatch(tokens: good, documentLengths: [2, 3], wantLogits: [true, true, true, true]),
            DocumentBatch(tokens: good, documentLengths: [4, 0], wantLogits: [true, true, true, true]),
            DocumentBatch(tokens: good, documentLengths: [-1, 5], wantLogits: [true, true, true, true]),
            DocumentBatch(tokens: good, documentLengths: [4], wantLogits: [true]),
            DocumentBatch(tokens: [1, 61, 2, 3], documentLengths: [4], wantLogits: [true, true, true, true]),
            DocumentBatch(tokens: [1, -1, 2, 3], documentLengths: [4], wantLogits: [true, true, true, true]),
            DocumentBatch(tokens: [Int32](repeating: 1, count: 129), documentLengths: [129],
                          wantLogits: [Bool](repeating: false, count: 129)),
        ]
        for (k, batch) in bad.enumerated() {
            var out = [Float](repeating: 7, count: 4 * Self.tiny.vocabSize)
            let kind: BatchCoreError.Kind? = out.withUnsafeMutableBufferPointer { buf in
                do { try model.forward(documents: batch, logits: buf.baseAddress); return nil }
                catch let e as BatchCoreError { return e.kind }
                catch { return .internal }
            }
            #expect(kind == .invalidArgument, "bad batch \(k)")
            #expect(out.allSatisfy { $0 == 7 }, "bad batch \(k) wrote logits")
        }
    }
}
