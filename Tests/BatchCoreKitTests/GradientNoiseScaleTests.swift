import BCCore
import BCTrain
import Foundation
import Testing

/// The gradient-noise-scale estimator and the batch-size controller, without a model.
@Suite(.serialized) struct GradientNoiseScaleTests {
    /// A standard normal from two uniforms (Box–Muller), in double.
    static func gaussian(_ rng: inout SplitMix64) -> Double {
        let u1 = (Double(rng.next() >> 11) + 0.5) / Double(1 << 53)
        let u2 = Double(rng.next() >> 11) / Double(1 << 53)
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    static func freshSeed() -> UInt64 { UInt64.random(in: 1...UInt64.max) }

    /// Fed the exact expectations E|G_B|² = |G|² + tr Σ / B, the two-batch formulas give
    /// |G|² and tr Σ back (they are unbiased and linear in the inputs).
    @Test func formulasInvertTheExpectations() throws {
        var rng = SplitMix64(state: Self.freshSeed())
        for _ in 0..<50 {
            let g2 = 0.01 + Double(rng.uniform() + 1) * 3, tr = 0.5 + Double(rng.uniform() + 1) * 200
            let bs = 1 + Int(rng.next() % 97), bb = bs + 1 + Int(rng.next() % 1001)
            let e = GradientNoiseScale.estimates(small: Double(bs), smallSquared: g2 + tr / Double(bs),
                                                 big: Double(bb), bigSquared: g2 + tr / Double(bb))
            #expect(abs(e.gradSquared - g2) <= 1e-9 * (g2 + tr))
            #expect(abs(e.trace - tr) <= 1e-9 * tr)
        }
    }

    /// Linear regression y = x·w* + ε, x ~ N(0, I_d), ε ~ N(0, σ²), loss ½(x·w − y)². With
    /// δ = w − w* the per-example gradient is g = x(x·δ − ε), so (Gaussian fourth moments)
    ///     G = E g = δ,   Σ = (|δ|² + σ²) I + δδᵀ,   tr Σ = d(|δ|² + σ²) + |δ|².
    /// Per-example gradients of fresh data are summed into a float32 accumulator as the
    /// trainer's micro-batches are; its squared norm after the first micro-batch and at the
    /// end of each step go through the trainer's estimator (EMA decay 0.999). After 8000
    /// steps the smoothed |G|², tr Σ and B_simple are within 10% of the closed form (the
    /// ratio's spread over seeds, simulated: 1.5% standard deviation, so 10% is ~6σ).
    @Test func linearRegressionMatchesClosedForm() throws {
        let seed = Self.freshSeed()
        var rng = SplitMix64(state: seed)
        let d = 33, sigma = 0.5
        var delta = (0..<d).map { _ in Self.gaussian(&rng) }
        let dn = delta.reduce(0) { $0 + $1 * $1 }.squareRoot()
        delta = delta.map { $0 * 2 / dn }   // |δ|² = 4: B_simple = 33·4.25/4 + 1 ≈ 36
        let delta2 = delta.reduce(0) { $0 + $1 * $1 }
        let trueTrace = Double(d) * (delta2 + sigma * sigma) + delta2
        let trueNoise = trueTrace / delta2
        var est = try GradientNoiseScale(decay: 0.999)
        let acc = UnsafeMutablePointer<Float>.allocate(capacity: d)
        defer { acc.deallocate() }
        var x = [Double](repeating: 0, count: d)
        for _ in 0..<8000 {
            acc.update(repeating: 0, count: d)
            // Micro-batches of uneven sizes, like packed documents' target counts.
            let sizes = [10 + Int(rng.next() % 5), 30 + Int(rng.next() % 7), 40, 25 + Int(rng.next() % 11)]
            var smallSum = 0.0
            for (m, n) in sizes.enumerated() {
                for _ in 0..<n {
                    for j in 0..<d { x[j] = Self.gaussian(&rng) }
                    var r = -sigma * Self.gaussian(&rng)
                    for j in 0..<d { r += x[j] * delta[j] }
                    for j in 0..<d { acc[j] += Float(x[j] * r) }
                }
                if m == 0 { smallSum = GradientNoiseScale.squaredNorm([(UnsafePointer(acc), d)]) }
            }
            let bigSum = GradientNoiseScale.squaredNorm([(UnsafePointer(acc), d)])
            let t1 = Double(sizes[0]), t = Double(sizes.reduce(0, +))
            try est.update(small: sizes[0], smallSquared: smallSum / (t1 * t1), big: sizes.reduce(0, +),
                           bigSquared: bigSum / (t * t))
        }
        let why = "seed \(seed): |G|² \(est.gradSquaredAverage) vs \(delta2), tr Σ \(est.traceAverage) vs \(trueTrace), "
            + "B_simple \(est.noiseScale) vs \(trueNoise)"
        #expect(abs(est.gradSquaredAverage / delta2 - 1) < 0.10, "\(why)")
        #expect(abs(est.traceAverage / trueTrace - 1) < 0.10, "\(why)")
        #expect(abs(est.noiseScale / trueNoise - 1) < 0.10, "\(why)")
    }

    /// The squared norm equals a float64 reference over odd-sized buffers, with the same
    /// bits on 1 and 3 threads.
    @Test func squaredNormMatchesReferenceOnAnyThreadCount() throws {
        var rng = SplitMix64(state: Self.freshSeed())
        let counts = [5, 70_001, 131_075, 1]
        let bufs = counts.map { n -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: n)
            for i in 0..<n { p[i] = rng.uniform() * 3 }
            return p
        }
        defer { for b in bufs { b.deallocate() } }
        let list = zip(bufs, counts).map { (UnsafePointer($0.0), $0.1) }
        var ref = 0.0
        for (b, n) in list { for i in 0..<n { ref += Double(b[i]) * Double(b[i]) } }
        let one = BackwardKernelTests.withThreads(1) { GradientNoiseScale.squaredNorm(list) }
        let three = BackwardKernelTests.withThreads(3) { GradientNoiseScale.squaredNorm(list) }
        #expect(abs(one - ref) <= 1e-12 * ref)
        #expect(one.bitPattern == three.bitPattern)
    }

    @Test func estimatorRejectsBadPairsAndKeepsItsState() throws {
        var e = GradientNoiseScale()
        try e.update(small: 4, smallSquared: 3, big: 12, bigSquared: 1.5)
        let before = e
        #expect(throws: BatchCoreError.self) { try e.update(small: 4, smallSquared: 3, big: 4, bigSquared: 1) }
        #expect(throws: BatchCoreError.self) { try e.update(small: 0, smallSquared: 3, big: 4, bigSquared: 1) }
        #expect(throws: BatchCoreError.self) { try e.update(small: 2, smallSquared: .nan, big: 4, bigSquared: 1) }
        #expect(e == before)
        #expect(throws: BatchCoreError.self) { try GradientNoiseScale(decay: 1) }
        // One pair: g2 = (12·1.5 − 4·3)/8 = 0.75, tr = 1.5/(1/4 − 1/12) = 9, B = 12.
        #expect(abs(e.noiseScale - 12) < 1e-12)
        #expect(abs(e.gradSquaredAverage - 0.75) < 1e-12 && abs(e.traceAverage - 9) < 1e-12)
    }

    @Test func rampAndLearningRateRules() throws {
        var o = BatchSizeOptions()
        o.mode = .ramp
        o.minMicroBatches = 2
        o.maxMicroBatches = 9
        o.rampSteps = 5
        // 2 + ⌊7s/5⌋: 2, 3, 4, 6, 7, then 9.
        #expect((0..<8).map { BatchSizeController.ramp(o, step: $0) } == [2, 3, 4, 6, 7, 9, 9, 9])
        #expect(LearningRateScaling.linear.scale(2.5) == 2.5)
        #expect(LearningRateScaling.squareRoot.scale(4) == 2)
        #expect(LearningRateScaling.none.scale(4) == 1)
        o.rampSteps = 0
        #expect(throws: BatchCoreError.self) { try o.validate() }
    }

    /// The noise mode waits for its warmup, grows toward ⌈B_simple / targets per
    /// micro-batch⌉ at most doubling per step, stays in [min, max] and never shrinks.
    @Test func noiseControllerGrowsWithinBounds() throws {
        var o = BatchSizeOptions()
        o.mode = .noise
        o.minMicroBatches = 2
        o.maxMicroBatches = 12
        o.warmupSteps = 2
        var c = try BatchSizeController(options: o, base: 3)
        #expect(c.microBatches == 3)
        var e = try GradientNoiseScale(decay: 0)
        // B_simple = tr/g2 = 900 with decay 0 (the last pair): g2 = 1, tr = 900.
        func feed(_ g2: Double, _ tr: Double) throws {
            try e.update(small: 10, smallSquared: g2 + tr / 10, big: 40, bigSquared: g2 + tr / 40)
        }
        try feed(1, 900)
        c.advance(stepsDone: 1, noise: e, targetsPerMicroBatch: 50)
        #expect(c.microBatches == 3)          // one estimate < warmup 2
        try feed(1, 900)
        c.advance(stepsDone: 2, noise: e, targetsPerMicroBatch: 50)
        #expect(c.microBatches == 6)          // wants 18, at most doubles
        c.advance(stepsDone: 3, noise: e, targetsPerMicroBatch: 50)
        #expect(c.microBatches == 12)         // wants 18, capped at max
        try feed(1, 10)
        c.advance(stepsDone: 4, noise: e, targetsPerMicroBatch: 50)
        #expect(c.microBatches == 12)         // never shrinks
        o.minMicroBatches = 1
        #expect(throws: BatchCoreError.self) { try BatchSizeController(options: o, base: 1) }
    }
}
