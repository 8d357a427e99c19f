import BCCore
import BCFormats
import BCKernels
import BCModel
import Foundation
import Testing

/// The model's backward pass (`Transformer.trainingPass`) against an independent float64
/// Llama written here (forward only) differentiated by central finite differences, plus
/// the promises of the pass: thread-count determinism, activation recomputation giving
/// the same bits, packed documents getting the gradients they get alone, evaluation
/// equal to the training loss, frozen tensors getting no gradient.
@Suite(.serialized) struct ModelBackwardTests {
    typealias Tensors = [String: (rows: Int, cols: Int, values: [Double])]

    /// The model's tensors in float64, by GGUF name, row-major [rows × cols] as
    /// `ModelParameter` lists them (values read back from the packed weights).
    static func tensors(_ m: Transformer) throws -> Tensors {
        var out = Tensors()
        for p in m.weights.parameters {
            let rows = p.shape.count == 2 ? p.shape[0] : 1, cols = p.shape.last!
            var v = [Float](repeating: 0, count: p.count)
            switch p.storage {
            case .vector(let w): for i in 0..<p.count { v[i] = w.data[i] }
            case .rows(let lin, let first): v.withUnsafeMutableBufferPointer { lin.copyRows(first, count: rows, into: $0.baseAddress!) }
            case .adapter(let slot, let isB): for i in 0..<p.count { v[i] = isB ? slot.b[i] : slot.a[i] }
            }
            out[p.name] = (rows, cols, v.map(Double.init))
        }
        return out
    }

    /// float64 Llama forward over packed documents: Σ CE over target rows · scale.
    /// `extra(name, x, rows)`: an optional term added to the projection `name`'s output
    /// [rows × out] (LoRA with dropout, LoRADropoutTests); nil: none.
    static func referenceLoss(_ c: ModelConfig, _ w: Tensors, tokens: [Int32], documents: [Int], targets: [Int32],
                              scale: Double, extra: ((String, [Double], Int) -> [Double]?)? = nil) -> Double {
        let d = c.embeddingDim, hd = c.headDim, heads = c.headCount, kvHeads = c.kvHeadCount, kvd = c.kvDim
        let ff = c.feedForwardDim, n = tokens.count, eps = Double(c.rmsEps)
        func norm(_ x: [Double], _ g: [Double]) -> [Double] {
            var y = x
            for t in 0..<n {
                var ss = 0.0
                for j in 0..<d { ss += x[t * d + j] * x[t * d + j] }
                let r = 1 / (ss / Double(d) + eps).squareRoot()
                for j in 0..<d { y[t * d + j] = x[t * d + j] * r * g[j] }
            }
            return y
        }
        func matmul(_ x: [Double], _ rows: Int, _ name: String) -> [Double] {   // x [rows × cols] · Wᵀ
            let m = w[name]!
            var y = [Double](repeating: 0, count: rows * m.rows)
            for t in 0..<rows { for o in 0..<m.rows {
                var s = 0.0
                for k in 0..<m.cols { s += x[t * m.cols + k] * m.values[o * m.cols + k] }
                y[t * m.rows + o] = s
            } }
            if let e = extra?(name, x, rows) { for i in y.indices { y[i] += e[i] } }
            return y
        }
        var positions: [Int] = [], docStart: [Int] = []
        var first = 0
        for len in documents { for p in 0..<len { positions.append(p); docStart.append(first) }; first += len }
        let emb = w["token_embd.weight"]!
        var x = [Double](repeating: 0, count: n * d)
        for t in 0..<n { for j in 0..<d { x[t * d + j] = emb.values[Int(tokens[t]) * d + j] } }
        func rope(_ v: inout [Double], _ width: Int, _ nh: Int) {
            for t in 0..<n { for h in 0..<nh { for i in 0..<hd / 2 {
                let theta = Double(positions[t]) * pow(Double(c.ropeBase), -2 * Double(i) / Double(hd))
                let a = v[t * width + h * hd + 2 * i], b = v[t * width + h * hd + 2 * i + 1]
                v[t * width + h * hd + 2 * i] = a * cos(theta) - b * sin(theta)
                v[t * width + h * hd + 2 * i + 1] = a * sin(theta) + b * cos(theta)
            } } }
        }
        for l in 0..<c.layerCount {
            let p = "blk.\(l)."
            let h = norm(x, w[p + "attn_norm.weight"]!.values)
            var q = matmul(h, n, p + "attn_q.weight"), k = matmul(h, n, p + "attn_k.weight")
            let v = matmul(h, n, p + "attn_v.weight")
            rope(&q, d, heads)
            rope(&k, kvd, kvHeads)
            var att = [Double](repeating: 0, count: n * d)
            for t in 0..<n { for hh in 0..<heads {
                let g = hh / (heads / kvHeads)
                var s: [Double] = []
                for j in docStart[t]...t {
                    var dot = 0.0
                    for e in 0..<hd { dot += q[t * d + hh * hd + e] * k[j * kvd + g * hd + e] }
                    s.append(dot / Double(hd).squareRoot())
                }
                let mx = s.max()!
                let ex = s.map { exp($0 - mx) }, sum = ex.reduce(0, +)
                for (jj, j) in (docStart[t]...t).enumerated() {
                    for e in 0..<hd { att[t * d + hh * hd + e] += ex[jj] / sum * v[j * kvd + g * hd + e] }
                }
            } }
            let o = matmul(att, n, p + "attn_output.weight")
            for i in 0..<n * d { x[i] += o[i] }
            let h2 = norm(x, w[p + "ffn_norm.weight"]!.values)
            let gate = matmul(h2, n, p + "ffn_gate.weight"), up = matmul(h2, n, p + "ffn_up.weight")
            var act = [Double](repeating: 0, count: n * ff)
            for i in 0..<n * ff { act[i] = gate[i] / (1 + exp(-gate[i])) * up[i] }
            let down = matmul(act, n, p + "ffn_down.weight")
            for i in 0..<n * d { x[i] += down[i] }
        }
        let normed = norm(x, w["output_norm.weight"]!.values)
        let logits = matmul(normed, n, w["output.weight"] != nil ? "output.weight" : "token_embd.weight")
        let vocab = c.vocabSize
        var loss = 0.0
        for t in 0..<n where targets[t] >= 0 {
            let row = logits[t * vocab..<(t + 1) * vocab]
            let mx = row.max()!
            loss += mx + log(row.reduce(0) { $0 + exp($1 - mx) }) - row[t * vocab + Int(targets[t])]
        }
        return loss * scale
    }

    /// Documents and targets: next token of the same document, a masked span, −1 at each
    /// document's last row.
    static func batch(_ lengths: [Int], seed: UInt64, vocab: Int) -> (DocumentBatch, [Int32]) {
        let docs = LayerForwardTests.randomDocuments(lengths, vocab: vocab, seed: seed)
        var b = DocumentBatch()
        var targets: [Int32] = []
        for (k, doc) in docs.enumerated() {
            b.append(document: doc, logits: true)
            for i in doc.indices {
                let masked = k == 0 && i >= 3 && i < 7
                targets.append(i + 1 < doc.count && !masked ? doc[i + 1] : -1)
            }
        }
        return (b, targets)
    }

    /// Every gradient of the model as [name: values].
    static func gradients(_ m: Transformer) -> [String: [Float]] {
        var out: [String: [Float]] = [:]
        for p in m.weights.parameters {
            if let g = p.gradient { out[p.name] = Array(UnsafeBufferPointer(start: g, count: p.count)) }
        }
        return out
    }

    static func zeroGradients(_ m: Transformer) {
        for p in m.weights.parameters { p.gradient?.update(repeating: 0, count: p.count) }
    }

    /// One training pass from zero gradients; returns the totals and the gradients.
    static func pass(_ m: Transformer, _ b: DocumentBatch, _ t: [Int32], scale: Float,
                     mode: ForwardActivations.Mode = .keepLayers) throws -> (CrossEntropyTotals, [String: [Float]]) {
        zeroGradients(m)
        let totals = try m.trainingPass(b, targets: t, lossScale: scale, activations: ForwardActivations(mode: mode),
                                        gradients: LayerGradients())
        return (totals, gradients(m))
    }

    // MARK: against float64 finite differences

    /// Loss and the gradient of EVERY tensor (8 random coordinates each, plus the
    /// embedding rows of tokens in the batch) against central differences of the float64
    /// reference, tied and untied heads. Tolerance: |ours − fd| ≤ 2e-3 · max|fd over the
    /// tensor's samples| + 1e-6: float32 accumulation over ~40 rows and 3 layers gives
    /// ~1e-5 relative; the FD step 1e-4 in float64 has truncation error ~1e-8.
    @Test(arguments: [false, true]) func gradientsMatchFiniteDifferences(untied: Bool) throws {
        let m = try LayerForwardTests.tinyModel(seed: 21, untied: untied)
        try m.weights.makeTrainable()
        let c = m.config
        let (b, targets) = Self.batch([19, 13, 7], seed: 5, vocab: c.vocabSize)
        let n = targets.filter { $0 >= 0 }.count
        let scale = 1 / Float(n)
        let (totals, grads) = try Self.pass(m, b, targets, scale: scale)
        var w = try Self.tensors(m)
        let ref = Self.referenceLoss(c, w, tokens: b.tokens, documents: b.documentLengths, targets: targets,
                                     scale: 1 / Double(n))
        #expect(totals.targets == n)
        #expect(abs(totals.lossSum / Double(n) - ref) <= 1e-5 * abs(ref), "loss \(totals.lossSum / Double(n)) vs \(ref)")
        #expect(Set(grads.keys) == Set(w.keys), "every tensor has a gradient")
        var rng = SplitMix64(state: untied ? 99 : 98)
        for name in w.keys.sorted() {
            let t = w[name]!, g = grads[name]!
            var picks = (0..<8).map { _ in Int(rng.next() % UInt64(t.values.count)) }
            if name == "token_embd.weight" { picks += [Int(b.tokens[2]) * c.embeddingDim + 5] }
            var fd: [Double] = []
            for i in picks {
                let h = 1e-4, v = t.values[i]
                w[name]!.values[i] = v + h
                let up = Self.referenceLoss(c, w, tokens: b.tokens, documents: b.documentLengths, targets: targets, scale: 1 / Double(n))
                w[name]!.values[i] = v - h
                let down = Self.referenceLoss(c, w, tokens: b.tokens, documents: b.documentLengths, targets: targets, scale: 1 / Double(n))
                w[name]!.values[i] = v
                fd.append((up - down) / (2 * h))
            }
            let bound = 2e-3 * (fd.map(abs).max() ?? 0) + 1e-6
            for (k, i) in picks.enumerated() {
                #expect(abs(Double(g[i]) - fd[k]) <= bound, "\(name)[\(i)]: \(g[i]) vs finite difference \(fd[k])")
            }
            #expect(g.contains { $0 != 0 }, "\(name): gradient all zero")
        }
    }

    // MARK: promises

    /// The same bits with 1, 2 and 3 threads; `.recompute` (checkpointing) gives the
    /// bits of `.keepLayers`; a second pass without zeroing adds exactly the same again.
    @Test func deterministicAndRecomputeIdentical() throws {
        let m = try LayerForwardTests.tinyModel(seed: 23)
        try m.weights.makeTrainable()
        let (b, targets) = Self.batch([30, 17, 21], seed: 8, vocab: m.config.vocabSize)
        let (t1, g1) = try BackwardKernelTests.withThreads(1) { try Self.pass(m, b, targets, scale: 0.01) }
        for threads in [2, 3] {
            let (t, g) = try BackwardKernelTests.withThreads(threads) { try Self.pass(m, b, targets, scale: 0.01) }
            #expect(t == t1)
            #expect(g == g1, "\(threads) threads")
        }
        let (tr, gr) = try Self.pass(m, b, targets, scale: 0.01, mode: .recompute)
        #expect(tr == t1)
        #expect(gr == g1, "recompute differs from keeping layers")
    }

    /// A document packed with others gets the gradient it gets alone: grad(A ∪ B) equals
    /// grad(A) + grad(B) within float summation order (2e-5 of the tensor's max), and the
    /// losses add up.
    @Test func packedDocumentsGetTheirOwnGradients() throws {
        let m = try LayerForwardTests.tinyModel(seed: 25, untied: true)
        try m.weights.makeTrainable()
        let vocab = m.config.vocabSize
        let docs = LayerForwardTests.randomDocuments([23, 15], vocab: vocab, seed: 31)
        func batchOf(_ ds: [[Int32]]) -> (DocumentBatch, [Int32]) {
            var b = DocumentBatch()
            var t: [Int32] = []
            for d in ds {
                b.append(document: d, logits: true)
                t += d.indices.map { $0 + 1 < d.count ? d[$0 + 1] : -1 }
            }
            return (b, t)
        }
        let (ba, ta) = batchOf([docs[0]]), (bb, tb) = batchOf([docs[1]]), (bp, tp) = batchOf(docs)
        let (la, ga) = try Self.pass(m, ba, ta, scale: 1)
        let (lb, gb) = try Self.pass(m, bb, tb, scale: 1)
        let (lp, gp) = try Self.pass(m, bp, tp, scale: 1)
        #expect(lp.targets == la.targets + lb.targets)
        #expect(abs(lp.lossSum - (la.lossSum + lb.lossSum)) <= 1e-9 * lp.lossSum)
        for (name, g) in gp {
            let sum = zip(ga[name]!, gb[name]!).map { $0 + $1 }
            let scale = g.map(abs).max()!
            let worst = zip(g, sum).map { abs($0 - $1) }.max()!
            #expect(worst <= 2e-5 * scale, "\(name): packed vs alone differ by \(worst) (max \(scale))")
        }
    }

    /// Evaluation (`loss`, any activation mode) gives the training pass's totals; frozen
    /// tensors (not trainable) get no gradient while the trainable ones get the same
    /// values as in a full pass (frozen projections read W from the packed copy).
    @Test func evaluationAndFrozenTensors() throws {
        let m = try LayerForwardTests.tinyModel(seed: 27)
        let (b, targets) = Self.batch([25, 11], seed: 12, vocab: m.config.vocabSize)
        try m.weights.makeTrainable()
        let (full, gFull) = try Self.pass(m, b, targets, scale: 0.05)
        for mode in [ForwardActivations.Mode.serving, .keepLayers, .recompute] {
            let e = try m.loss(b, targets: targets, activations: ForwardActivations(mode: mode), gradients: LayerGradients())
            #expect(e == full, "\(mode)")
        }
        m.weights.dropTrainable()
        for l in m.weights.layers { try l.attentionNorm.makeTrainable(); try l.ffnNorm.makeTrainable() }
        let (frozen, gFrozen) = try Self.pass(m, b, targets, scale: 0.05)
        #expect(frozen == full)
        #expect(Set(gFrozen.keys) == Set(gFull.keys.filter { $0.contains("_norm.weight") && $0.hasPrefix("blk.") }))
        for (name, g) in gFrozen { #expect(g == gFull[name]!, "\(name)") }
        m.weights.dropTrainable()
    }

    /// Bad input throws and changes no gradient.
    @Test func badInputChangesNothing() throws {
        let m = try LayerForwardTests.tinyModel(seed: 29)
        try m.weights.makeTrainable()
        let (b, targets) = Self.batch([9, 8], seed: 3, vocab: m.config.vocabSize)
        _ = try Self.pass(m, b, targets, scale: 1)
        let before = Self.gradients(m)
        let a = ForwardActivations(mode: .keepLayers), g = LayerGradients()
        var bad = targets
        bad[4] = Int32(m.config.vocabSize)
        #expect(throws: BatchCoreError.self) { try m.trainingPass(b, targets: bad, lossScale: 1, activations: a, gradients: g) }
        #expect(throws: BatchCoreError.self) { try m.trainingPass(b, targets: Array(targets.dropLast()), lossScale: 1, activations: a, gradients: g) }
        #expect(throws: BatchCoreError.self) { try m.trainingPass(b, targets: targets, lossScale: .nan, activations: a, gradients: g) }
        var badTokens = b
        badTokens.tokens[0] = -3
        #expect(throws: BatchCoreError.self) { try m.trainingPass(badTokens, targets: targets, lossScale: 1, activations: a, gradients: g) }
        #expect(throws: BatchCoreError.self) {
            try m.trainingPass(b, targets: targets, lossScale: 1, activations: ForwardActivations(mode: .serving), gradients: g)
        }
        #expect(Self.gradients(m) == before)
    }
}
