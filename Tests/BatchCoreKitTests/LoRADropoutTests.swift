import BCCore
import BCFormats
import BCKernels
import BCModel
import BCOptim
import BCTrain
import Foundation
import Testing

/// LoRA dropout (PEFT's lora_dropout: inverted dropout of the low-rank path's input x,
/// kept values scaled by 1/(1 − p), only in training passes): the counter-based mask
/// (`DropoutOp`) against its scalar definition and its statistics; a projection's adapter
/// forward and backward against float64 references applying the same mask; the model's
/// loss and A/B gradients against the float64 Llama reference with the same masks and its
/// central finite differences (the mask fixed); p = 0 and evaluation unchanged to the bit;
/// thread-count and recompute determinism; a checkpoint resume bit-identical; the PEFT
/// adapter_config.json field.
@Suite(.serialized) struct LoRADropoutTests {
    // MARK: The mask

    /// The drop rate is p within 5 standard deviations, per whole sample and per row
    /// block; pairs of neighbouring columns and rows are dropped together at rate p²
    /// (independence) within 5σ; different keys, rows and columns give different masks.
    @Test(arguments: [0.05, 0.3, 0.7]) func maskRateIsP(p: Double) {
        let op = DropoutOp(p: p, key: DropoutOp.key([7, 1, 2, 3, 4]))
        let rows = 500, cols = 601, n = Double(rows * cols)
        var drops = 0, pairCols = 0, pairRows = 0
        var prev = [Bool](repeating: false, count: cols)
        for t in 0..<rows {
            var left = false
            for c in 0..<cols {
                let d = !op.keeps(row: t, col: c)
                if d { drops += 1 }
                if d && left { pairCols += 1 }
                if d && prev[c] && t > 0 { pairRows += 1 }
                left = d
                prev[c] = d
            }
        }
        let rate = Double(drops) / n, sigma = (p * (1 - p) / n).squareRoot()
        #expect(abs(rate - p) <= 5 * sigma, "drop rate \(rate) for p = \(p) (σ \(sigma))")
        let pairs = Double(rows * (cols - 1)), q = p * p, sq = (q * (1 - q) / pairs).squareRoot()
        #expect(abs(Double(pairCols) / pairs - q) <= 6 * sq, "adjacent columns dropped together: \(Double(pairCols) / pairs) vs p² \(q)")
        let rowPairs = Double((rows - 1) * cols)
        #expect(abs(Double(pairRows) / rowPairs - q) <= 6 * (q * (1 - q) / rowPairs).squareRoot(), "adjacent rows")
        // The first 64 values of a row differ between keys and between rows.
        func bits(_ o: DropoutOp, row: Int) -> [Bool] { (0..<64).map { o.keeps(row: row, col: $0) } }
        let other = DropoutOp(p: p, key: DropoutOp.key([7, 1, 2, 3, 5]))
        #expect(bits(op, row: 0) != bits(other, row: 0) && bits(op, row: 0) != bits(op, row: 1))
        #expect(op.scale == Float(1 / (1 - p)))
    }

    /// The SIMD forward/backward against the scalar mask on odd shapes and strides.
    @Test func kernelsMatchTheScalarMask() {
        let op = DropoutOp(p: 0.37, key: 99)
        let rows = 9, cols = 53, ldx = 61, ldy = 57
        var rng = SplitMix64(state: 3)
        let x = (0..<rows * ldx).map { _ in rng.uniform() }
        var y = (0..<rows * ldy).map { _ in rng.uniform() }
        let y0 = y
        op.forward(x, ldx: ldx, &y, ldy: ldy, rows: rows, cols: cols)
        var dx = y0
        op.backward(x, ldDY: ldx, &dx, ldDX: ldy, rows: rows, cols: cols, accumulate: true)
        var kept = 0
        for t in 0..<rows {
            for c in 0..<ldy {
                guard c < cols else {
                    #expect(y[t * ldy + c] == y0[t * ldy + c] && dx[t * ldy + c] == y0[t * ldy + c], "padding untouched")
                    continue
                }
                let k = op.keeps(row: t, col: c)
                if k { kept += 1 }
                #expect(y[t * ldy + c] == (k ? x[t * ldx + c] * op.scale : 0), "forward (\(t), \(c))")
                #expect(dx[t * ldy + c] == y0[t * ldy + c] + (k ? x[t * ldx + c] * op.scale : 0), "backward (\(t), \(c))")
            }
        }
        #expect(kept > 0 && kept < rows * cols)
    }

    // MARK: One projection

    /// `forwardTrainingAdapters` and `adapterBackward` of two adapters (q-like rows
    /// 0..<11 rank 3, v-like rows 17..<29 rank 5, p = 0.3 and 0.55) on a 29 × 37
    /// projection over 13 tokens (x row stride 41) against float64 with the same mask:
    ///
    ///     xd = m ⊙ x · scale_p,  u = xd·Aᵀ,  y += s·u·Bᵀ
    ///     g = s·dY_a·B,  dA = gᵀ·xd,  dB = dY_aᵀ·(s·u),  dX += m ⊙ (g·A) · scale_p
    ///
    /// Tolerance 1e-5 of the sum of absolute products (float32 chains of ≤ 40 terms).
    @Test func projectionMatchesFloat64() throws {
        let rows = 29, cols = 37, tokens = 13, ldx = 41
        var rng = SplitMix64(state: 77)
        let lin = try Linear(rows: rows, cols: cols) { w in for i in 0..<rows * cols { w[i] = rng.uniform() } }
        let s1 = try LoRASlot(rows: 11, cols: cols, rank: 3, scale: 1.7, a: (0..<3 * cols).map { _ in rng.uniform() },
                              b: (0..<11 * 3).map { _ in rng.uniform() })
        let s2 = try LoRASlot(rows: 12, cols: cols, rank: 5, scale: -0.6, a: (0..<5 * cols).map { _ in rng.uniform() },
                              b: (0..<12 * 5).map { _ in rng.uniform() })
        try s1.makeTrainable()
        try s2.makeTrainable()
        try lin.attachTraining(s1, firstRow: 0, dropout: 0.3, layer: 2, module: LoRATarget.q.rawValue)
        try lin.attachTraining(s2, firstRow: 17, dropout: 0.55, layer: 2, module: LoRATarget.v.rawValue)
        let pass = LoRADropoutPass(seed: 5, step: 3, microBatch: 1)
        lin.setTrainingDropout(pass)
        let x = (0..<tokens * ldx).map { _ in rng.uniform() }
        var y = (0..<tokens * rows).map { _ in rng.uniform() }
        let y0 = y
        try lin.forwardTrainingAdapters(x, ldx: ldx, &y, ldy: rows, tokens: tokens)
        let dY = (0..<tokens * rows).map { _ in rng.uniform() }
        var dX = (0..<tokens * cols).map { _ in rng.uniform() }
        let dX0 = dX
        try lin.adapterBackward(x: x, ldx: ldx, dY: dY, ldDY: rows, dX: &dX, ldDX: cols, tokens: tokens)

        var refY = y0.map(Double.init), magY = y0.map { abs(Double($0)) }
        var refDX = dX0.map(Double.init), magDX = dX0.map { abs(Double($0)) }
        for (slot, first, p, module) in [(s1, 0, 0.3, LoRATarget.q.rawValue), (s2, 17, 0.55, LoRATarget.v.rawValue)] {
            let mask = pass.mask(p: p, layer: 2, module: module), r = slot.rank, sc = Double(slot.scale)
            let a = (0..<r * cols).map { Double(slot.a[$0]) }, b = (0..<slot.rows * r).map { Double(slot.b[$0]) }
            var xd = [Double](repeating: 0, count: tokens * cols)
            for t in 0..<tokens { for c in 0..<cols where mask.keeps(row: t, col: c) {
                xd[t * cols + c] = Double(x[t * ldx + c]) * Double(mask.scale)
            } }
            var u = [Double](repeating: 0, count: tokens * r), uMag = u
            for t in 0..<tokens { for j in 0..<r { for c in 0..<cols {
                u[t * r + j] += a[j * cols + c] * xd[t * cols + c]
                uMag[t * r + j] += abs(a[j * cols + c] * xd[t * cols + c])
            } } }
            var g = [Double](repeating: 0, count: tokens * r), gMag = g
            for t in 0..<tokens { for o in 0..<slot.rows {
                let dy = Double(dY[t * rows + first + o])
                var acc = 0.0, mag = 0.0
                for j in 0..<r {
                    acc += b[o * r + j] * u[t * r + j]
                    mag += abs(b[o * r + j]) * uMag[t * r + j]
                    g[t * r + j] += sc * dy * b[o * r + j]
                    gMag[t * r + j] += abs(sc * dy * b[o * r + j])
                }
                refY[t * rows + first + o] += sc * acc
                magY[t * rows + first + o] += abs(sc) * mag
            } }
            var worstA = 0.0, worstB = 0.0
            for j in 0..<r { for c in 0..<cols {
                var ref = 0.0, mag = 0.0
                for t in 0..<tokens { ref += g[t * r + j] * xd[t * cols + c]; mag += gMag[t * r + j] * abs(xd[t * cols + c]) }
                worstA = max(worstA, abs(Double(slot.gradA![j * cols + c]) - ref) / (1e-5 * mag + 1e-30))
            } }
            for o in 0..<slot.rows { for j in 0..<r {
                var ref = 0.0, mag = 0.0
                for t in 0..<tokens {
                    let dy = Double(dY[t * rows + first + o])
                    ref += dy * sc * u[t * r + j]
                    mag += abs(dy * sc) * uMag[t * r + j]
                }
                worstB = max(worstB, abs(Double(slot.gradB![o * r + j]) - ref) / (1e-5 * mag + 1e-30))
            } }
            #expect(worstA <= 1 && worstB <= 1, "rank \(r): dA worst \(worstA), dB worst \(worstB) of the bound")
            for t in 0..<tokens { for c in 0..<cols where mask.keeps(row: t, col: c) {
                for j in 0..<r {
                    refDX[t * cols + c] += g[t * r + j] * a[j * cols + c] * Double(mask.scale)
                    magDX[t * cols + c] += gMag[t * r + j] * abs(a[j * cols + c]) * Double(mask.scale)
                }
            } }
        }
        var worstY = 0.0, worstX = 0.0
        for i in y.indices { worstY = max(worstY, abs(Double(y[i]) - refY[i]) / (1e-5 * magY[i] + 1e-30)) }
        for i in dX.indices { worstX = max(worstX, abs(Double(dX[i]) - refDX[i]) / (1e-5 * magDX[i] + 1e-30)) }
        #expect(worstY <= 1 && worstX <= 1, "y worst \(worstY), dX worst \(worstX) of the bound")
        // Masked inputs matter: the same call without the pass gives another y.
        lin.setTrainingDropout(nil)
        var plain = y0
        try lin.forwardTrainingAdapters(x, ldx: ldx, &plain, ldy: rows, tokens: tokens)
        #expect(zip(plain, y).contains { $0 != $1 })
    }

    // MARK: The model

    static func trainer(_ m: Transformer, dropout: Double, rs: Bool = false, recompute: Bool = false,
                        tokens: Int = 64, accumulation: Int = 1) throws -> Trainer {
        var l = LoRATrainingTests.lora(rs: rs)
        l.rankPattern[.q] = 2
        l.dropout = dropout
        var o = TrainerOptions()
        o.microBatchTokens = tokens
        o.accumulationSteps = accumulation
        o.recompute = recompute
        o.lora = l
        return try Trainer(model: m, options: o)
    }

    /// The float64 reference's extra term of every adapter of `t` under `pass`: for the
    /// projection `name`, s·((m ⊙ x · scale_p)·Aᵀ)·Bᵀ on the adapter's rows (no mask when
    /// `pass` is nil).
    static func adapterTerms(_ t: Trainer, _ pass: LoRADropoutPass?) -> (String, [Double], Int) -> [Double]? {
        let entries = t.adapters!.entries, p = t.options.lora!.dropout
        return { name, x, n in
            let mine = entries.filter { $0.target.tensor.ggufName(layer: $0.layer) == name }
            guard let first = mine.first else { return nil }
            let shape = first.target.tensor.shape(t.model.config)
            // The stacked tensor's full output width: this tensor alone (the reference is per GGUF tensor).
            var out = [Double](repeating: 0, count: n * shape.rows)
            for e in mine {
                let s = e.slot, cols = s.cols, r = s.rank
                let mask = pass.map { $0.mask(p: p, layer: e.layer, module: e.target.rawValue) }
                for tok in 0..<n {
                    var u = [Double](repeating: 0, count: r)
                    for c in 0..<cols {
                        var xv = x[tok * cols + c]
                        if let mask { xv = mask.keeps(row: tok, col: c) ? xv * Double(mask.scale) : 0 }
                        for j in 0..<r { u[j] += Double(s.a[j * cols + c]) * xv }
                    }
                    for o in 0..<s.rows {
                        var acc = 0.0
                        for j in 0..<r { acc += Double(s.b[o * r + j]) * u[j] }
                        out[tok * shape.rows + o] += Double(s.scale) * acc
                    }
                }
            }
            return out
        }
    }

    /// The training loss with p = 0.3 (alpha/r and rsLoRA, q rank 2) against the float64
    /// reference applying the same masks, and every adapter's dA/dB (5 random coordinates
    /// each) against central differences of that reference with the masks fixed.
    /// Tolerance as LoRATrainingTests: 2e-3 · max|fd| + 1e-6; loss 1e-5 relative.
    @Test(arguments: [false, true]) func gradientsMatchFiniteDifferencesWithAFixedMask(rs: Bool) throws {
        let m = try LayerForwardTests.tinyModel(seed: 61, untied: rs)
        let t = try Self.trainer(m, dropout: 0.3, rs: rs)
        LoRATrainingTests.randomizeB(t, seed: rs ? 71 : 72)
        let c = m.config
        let (b, targets) = ModelBackwardTests.batch([17, 11, 6], seed: 19, vocab: c.vocabSize)
        let pass = try #require(t.dropoutPass)
        #expect(pass == LoRADropoutPass(seed: 7, step: 0, microBatch: 0))
        let base = try ModelBackwardTests.tensors(m)
        func ref() -> Double {
            ModelBackwardTests.referenceLoss(c, base, tokens: b.tokens, documents: b.documentLengths, targets: targets,
                                             scale: 1, extra: Self.adapterTerms(t, pass))
        }
        let totals = try t.microBatch(b, targets: targets)
        let r0 = ref()
        #expect(abs(totals.lossSum - r0) <= 1e-5 * abs(r0), "loss \(totals.lossSum) vs masked reference \(r0)")
        let unmasked = ModelBackwardTests.referenceLoss(c, base, tokens: b.tokens, documents: b.documentLengths,
                                                        targets: targets, scale: 1, extra: Self.adapterTerms(t, nil))
        #expect(abs(unmasked - r0) > 1e-3 * abs(r0), "dropout changes the loss: \(unmasked) vs \(r0)")
        var rng = SplitMix64(state: rs ? 15 : 16)
        for p in t.parameters {
            let g = Array(UnsafeBufferPointer(start: p.gradient!, count: p.count))
            var fd: [Double] = [], picks: [Int] = []
            for _ in 0..<5 {
                let i = Int(rng.next() % UInt64(p.count))
                picks.append(i)
                let v = p.values![i], h: Float = 1e-3
                p.values![i] = v + h
                let vu = Double(p.values![i]), up = ref()
                p.values![i] = v - h
                let vd = Double(p.values![i]), down = ref()
                p.values![i] = v
                fd.append((up - down) / (vu - vd))
            }
            let bound = 2e-3 * (fd.map(abs).max() ?? 0) + 1e-6
            for (k, i) in picks.enumerated() {
                #expect(abs(Double(g[i]) - fd[k]) <= bound, "\(p.name)[\(i)]: \(g[i]) vs finite difference \(fd[k])")
            }
        }
    }

    static func grads(_ t: Trainer) -> [[UInt32]] {
        t.parameters.map { p in (0..<p.count).map { p.gradient![$0].bitPattern } }
    }

    /// Values whose bits differ (a scalar to compare: big array diffs are slow to print).
    static func differing(_ a: [[UInt32]], _ b: [[UInt32]]) -> Int {
        guard a.count == b.count else { return Int.max }
        return zip(a, b).reduce(0) { n, p in p.0.count != p.1.count ? Int.max / 2 : n + zip(p.0, p.1).filter { $0 != $1 }.count }
    }

    /// p = 0 is no dropout to the bit (a pass key set, the adapters' p = 0); evaluation
    /// with p = 0.5 is the p = 0 trainer's evaluation to the bit, while its training loss
    /// differs; the second micro-batch of a step and the next step draw other masks.
    @Test func zeroDropoutAndEvaluationAreUnchanged() throws {
        let m = try LayerForwardTests.tinyModel(seed: 62)
        let (b, targets) = ModelBackwardTests.batch([21, 14, 5], seed: 8, vocab: m.config.vocabSize)
        var evalZero = TrainingTotals(), trainZero = TrainingTotals(), gradZero: [[UInt32]] = []
        do {
            let t = try Self.trainer(m, dropout: 0)
            #expect(t.dropoutPass == nil)
            LoRATrainingTests.randomizeB(t, seed: 41)
            evalZero = try t.evaluate(b, targets: targets)
            trainZero = try t.microBatch(b, targets: targets)
            gradZero = Self.grads(t)
            // The same pass with a key on every adapter of p = 0: the same bits.
            t.discardGradients()
            let a = ForwardActivations(mode: .keepLayers), g = LayerGradients()
            let keyed = try m.trainingPass(b, targets: targets, lossScale: 1, activations: a, gradients: g,
                                           dropout: LoRADropoutPass(seed: 1, step: 2, microBatch: 3))
            #expect(keyed.lossSum == trainZero.lossSum && Self.differing(Self.grads(t), gradZero) == 0, "p = 0 with a pass key")
            #expect(trainZero.lossSum == evalZero.lossSum)
        }
        let t = try Self.trainer(m, dropout: 0.5)
        LoRATrainingTests.randomizeB(t, seed: 41)
        let e = try t.evaluate(b, targets: targets)
        #expect(e.lossSum == evalZero.lossSum, "evaluation never drops: \(e.lossSum) vs \(evalZero.lossSum)")
        let first = try t.microBatch(b, targets: targets)
        #expect(first.lossSum != trainZero.lossSum && Self.differing(Self.grads(t), gradZero) > 0, "training drops")
        #expect(m.weights.projections.allSatisfy { $0.trainingAdapters.allSatisfy { $0.pass == nil } }, "masks cleared after the pass")
        #expect(try t.evaluate(b, targets: targets).lossSum == evalZero.lossSum)
        let second = try t.microBatch(b, targets: targets)
        #expect(second.lossSum != first.lossSum, "micro-batch 1 of the step draws another mask")
        t.discardGradients()
        #expect(t.dropoutPass?.microBatch == 0)
        // The serving path ignores training adapters altogether (LoRATrainingTests.baseStaysFrozen).
    }

    /// The same gradient bits with 1, 2 and 3 threads, and with activation recomputation
    /// (the layer's forward rerun in backward draws the same masks).
    @Test func deterministicAcrossThreadsAndRecompute() throws {
        let m = try LayerForwardTests.tinyModel(seed: 63)
        let (b, targets) = ModelBackwardTests.batch([21, 14, 5], seed: 8, vocab: m.config.vocabSize)
        var one: [[UInt32]] = []
        do {
            let t = try Self.trainer(m, dropout: 0.2)
            LoRATrainingTests.randomizeB(t, seed: 43)
            func run() throws -> [[UInt32]] {
                t.discardGradients()
                try t.microBatch(b, targets: targets)
                return Self.grads(t)
            }
            one = try BackwardKernelTests.withThreads(1) { try run() }
            for n in [2, 3] {
                let g = try BackwardKernelTests.withThreads(n) { try run() }
                #expect(Self.differing(g, one) == 0, "\(n) threads")
            }
        }
        let r = try Self.trainer(m, dropout: 0.2, recompute: true)
        LoRATrainingTests.randomizeB(r, seed: 43)
        try r.microBatch(b, targets: targets)
        #expect(Self.differing(Self.grads(r), one) == 0, "recompute")
    }

    /// A run checkpointed after 2 of 4 steps (2 micro-batches each, AdamW, p = 0.25) and
    /// resumed in a new trainer ends with the same adapter bits as the uninterrupted run.
    @Test func checkpointResumeIsBitIdentical() throws {
        let m = try LayerForwardTests.tinyModel(seed: 64)
        let batches = (0..<8).map { ModelBackwardTests.batch([13, 9], seed: 200 + UInt64($0), vocab: m.config.vocabSize) }
        let dir = NSTemporaryDirectory() + "bc-lora-dropout-ckpt-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func adamw(_ t: Trainer) throws -> Optimizer {
            let opt = Optimizer(algorithm: .adamw)
            var h = OptimizerHyperparameters.defaults(for: .adamw)
            h.lr = 1e-2
            try t.register(in: opt, group: try opt.addGroup(h))
            return opt
        }
        func steps(_ t: Trainer, _ opt: Optimizer, _ range: Range<Int>) throws {
            for s in range {
                for k in 0..<2 { try t.microBatch(batches[2 * s + k].0, targets: batches[2 * s + k].1) }
                try t.step(opt)
            }
        }
        var expected: [[UInt32]] = []
        do {
            let a = try Self.trainer(m, dropout: 0.25, accumulation: 2), opt = try adamw(a)
            try steps(a, opt, 0..<2)
            try a.saveCheckpoint(dir, optimizer: opt)
            try steps(a, opt, 2..<4)
            expected = a.parameters.map { p in (0..<p.count).map { p.values![$0].bitPattern } }
        }
        let c = try Self.trainer(m, dropout: 0.25, accumulation: 2), opt = try adamw(c)
        try c.loadCheckpoint(dir, optimizer: opt)
        #expect(c.stepCalls == 2)
        try steps(c, opt, 2..<4)
        let got = c.parameters.map { p in (0..<p.count).map { p.values![$0].bitPattern } }
        #expect(Self.differing(got, expected) == 0, "resumed adapters differ from the uninterrupted run's")
    }

    // MARK: Files and options

    /// adapter_config.json carries lora_dropout both ways; values outside 0 ≤ p < 1 or not
    /// numbers are refused; the trainer options refuse p = 1 and NaN.
    @Test func peftConfigCarriesDropout() throws {
        var l = LoRATrainingTests.lora()
        l.dropout = 0.05
        let set = try LoRAAdapterSet(fresh: l, model: LayerForwardTests.tiny)
        let json = set.peftConfigJSON(baseModel: "x")
        #expect(json["lora_dropout"]?.doubleValue == 0.05)
        let back = try LoRAAdapterSet.parsePEFTConfig(json, seed: 7)
        #expect(back == l)
        for bad in ["1", "1.5", "-0.1", "\"0.1\"", "true"] {
            let text = json.serialized().replacingOccurrences(of: "\"lora_dropout\":0.05", with: "\"lora_dropout\":\(bad)")
            #expect(text.contains("\"lora_dropout\":\(bad)"))
            #expect(throws: BatchCoreError.self, "lora_dropout \(bad)") {
                _ = try LoRAAdapterSet.parsePEFTConfig(try JSONValue.parse(text))
            }
        }
        for p in [1.0, -0.01, .nan] {
            l.dropout = p
            #expect(throws: BatchCoreError.self, "dropout \(p)") { try l.validate() }
        }
    }
}
