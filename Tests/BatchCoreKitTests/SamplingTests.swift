import BCCore
import BCEngine
import Testing

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Float64 reference of the llama.cpp chain (full sort, no shortcuts)

private enum Ref {
    static func randomLogits(_ n: Int, _ range: ClosedRange<Float> = -10...10) -> [Float] {
        var g = SystemRandomNumberGenerator()
        return (0..<n).map { _ in Float.random(in: range, using: &g) }
    }

    /// Logits on a 1/8 grid (exact in Float, many ties).
    static func gridLogits(_ n: Int, levels: Int = 64) -> [Float] {
        var g = SystemRandomNumberGenerator()
        return (0..<n).map { _ in Float(Int.random(in: -levels...levels, using: &g)) / 8 }
    }

    static func randomHistory(_ len: Int, vocab: Int, distinct: Int) -> [Int32] {
        var g = SystemRandomNumberGenerator()
        let pool = (0..<distinct).map { _ in Int32.random(in: 0..<Int32(vocab), using: &g) }
        return (0..<len).map { _ in pool.randomElement(using: &g)! }
    }

    /// llama_sampler_penalties in float64.
    static func penalize(_ logits: [Float], _ history: [Int32], _ p: SamplingParams) -> [Double] {
        var l = logits.map(Double.init)
        if p.penaltyLastN == 0
            || (p.repetitionPenalty == 1 && p.frequencyPenalty == 0 && p.presencePenalty == 0)
        {
            return l
        }
        let n = p.penaltyLastN < 0 ? history.count : min(p.penaltyLastN, history.count)
        var counts: [Int32: Int] = [:]
        for t in history.suffix(n) { counts[t, default: 0] += 1 }
        for (t, c) in counts {
            var v = l[Int(t)]
            v = v <= 0 ? v * Double(p.repetitionPenalty) : v / Double(p.repetitionPenalty)
            v -= Double(c) * Double(p.frequencyPenalty) + (c > 0 ? Double(p.presencePenalty) : 0)
            l[Int(t)] = v
        }
        return l
    }

    static func argmax(_ l: [Double]) -> Int {
        var b = 0
        for i in l.indices where l[i] > l[b] { b = i }
        return b
    }

    static func softmax(_ l: [Double], _ t: Double = 1) -> [Double] {
        let m = l.max()!
        let e = l.map { exp(($0 - m) / t) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    static func logSoftmax(_ logits: [Float]) -> [Double] {
        let l = logits.map(Double.init)
        let m = l.max()!
        let lse = m + log(l.reduce(0) { $0 + exp($1 - m) })
        return l.map { $0 - lse }
    }

    /// Penalties → full sort → top-k → top-p → min-p → temperature softmax.
    static func distribution(_ logits: [Float], _ history: [Int32], _ p: SamplingParams) -> [Int32: Double] {
        let l = penalize(logits, history, p)
        var idx = l.indices.filter { l[$0] > -.infinity }
            .sorted { l[$0] > l[$1] || (l[$0] == l[$1] && $0 < $1) }
        if p.topK > 0 && p.topK < idx.count { idx = Array(idx.prefix(p.topK)) }
        if p.topP < 1 {
            let probs = softmax(idx.map { l[$0] })
            var cum = 0.0
            var keep = idx.count
            for (i, q) in probs.enumerated() {
                cum += q
                if cum >= Double(p.topP) {
                    keep = i + 1
                    break
                }
            }
            idx = Array(idx.prefix(keep))
        }
        if p.minP > 0 {
            let pmax = l[idx[0]]
            idx = idx.filter { l[$0] >= pmax + log(Double(p.minP)) }
        }
        let probs = softmax(idx.map { l[$0] }, Double(p.temperature))
        var out: [Int32: Double] = [:]
        for (i, t) in idx.enumerated() { out[Int32(t)] = probs[i] }
        return out
    }

    static func entropy(_ d: [SamplerCandidate]) -> Double {
        d.reduce(0) { $0 - ($1.probability > 0 ? $1.probability * log($1.probability) : 0) }
    }
}

private func expectSameDistribution(
    _ got: [SamplerCandidate], _ want: [Int32: Double], _ label: String,
    tol: Double = 1e-9, sourceLocation: SourceLocation = #_sourceLocation
) {
    let gotSet = Set(got.map(\.token))
    #expect(gotSet == Set(want.keys), "\(label): candidate set differs (\(gotSet.count) vs \(want.count))",
            sourceLocation: sourceLocation)
    guard gotSet == Set(want.keys) else { return }
    var worst = 0.0
    for c in got { worst = max(worst, abs(c.probability - want[c.token]!) / max(want[c.token]!, 1e-300)) }
    #expect(worst <= tol, "\(label): worst relative probability error \(worst)", sourceLocation: sourceLocation)
    // Most likely first.
    for i in got.indices.dropFirst() {
        #expect(got[i - 1].probability >= got[i].probability, sourceLocation: sourceLocation)
    }
}

// MARK: - Greedy

@Suite("Sampling")
struct SamplingTests {
    @Test func greedyIsArgmaxWithRawLogprob() throws {
        var s = try Sampler(params: .greedy)
        for _ in 0..<5 {
            let logits = Ref.randomLogits(49_152)
            let ref = Ref.logSoftmax(logits)
            let best = Ref.argmax(logits.map(Double.init))
            let r = try s.sample(logits: logits, history: [1, 2, 3])
            #expect(Int(r.token) == best)
            #expect(abs(Double(r.logprob) - ref[best]) <= 1e-5 * max(1, abs(ref[best])))
        }
    }

    @Test func greedyTiesGoToLowestIdAndConsumeNoRandomness() throws {
        var s = try Sampler(params: .greedy)
        let rng0 = s.rng
        var logits = [Float](repeating: -1, count: 1000)
        logits[700] = 3
        logits[123] = 3
        logits[999] = 3
        #expect(try s.sample(logits: logits, history: []).token == 123)
        #expect(s.rng == rng0)
        // -inf everywhere but one token.
        var masked = [Float](repeating: -.infinity, count: 50)
        masked[42] = -7
        let r = try s.sample(logits: masked, history: [])
        #expect(r.token == 42 && r.logprob == 0)
    }

    // MARK: - Penalties

    @Test func penaltiesMatchFloat64Reference() throws {
        let n = 2000
        let configs: [SamplingParams] = [
            .init(temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1.3, penaltyLastN: 64),
            .init(temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 0.8, frequencyPenalty: 0.4,
                  presencePenalty: 0.7, penaltyLastN: -1),
            .init(temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1.1, frequencyPenalty: -0.2,
                  presencePenalty: 0.5, penaltyLastN: 17),
            .init(temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 2, frequencyPenalty: 1,
                  presencePenalty: 1, penaltyLastN: 0),  // window 0: no penalty at all
            .init(temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1.5, penaltyLastN: 1000),  // > history
        ]
        for p in configs {
            let logits = Ref.randomLogits(n, -8...8)
            let history = Ref.randomHistory(300, vocab: n, distinct: 40)
            var s = try Sampler(params: p)
            let want = Ref.softmax(Ref.penalize(logits, history, p))
            let got = try s.distribution(logits: logits, history: history)
            #expect(got.count == n)
            var worst = 0.0
            for c in got { worst = max(worst, abs(c.probability - want[Int(c.token)]) / want[Int(c.token)]) }
            // The sampler penalizes in Float (as llama.cpp does): ~1e-6 relative.
            #expect(worst < 1e-4, "penalty config \(p): worst rel error \(worst)")

            // Greedy picks a maximal penalized logit (up to Float rounding of the penalty).
            var g = p
            g.temperature = 0
            var gs = try Sampler(params: g)
            let pen = Ref.penalize(logits, history, p)
            let t = try gs.sample(logits: logits, history: history).token
            #expect(pen[Int(t)] >= pen.max()! - 1e-5)
        }
    }

    @Test func penalizedTokenFlipsArgmaxExactly() throws {
        // Token 5 leads by a hair; one occurrence with rep 2 halves it; token 9 (negative
        // logit) repeated 3 times is multiplied and loses 3·freq + presence.
        var logits = [Float](repeating: -4, count: 16)
        logits[5] = 3
        logits[6] = 2
        logits[9] = -1
        let p = SamplingParams(temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 2,
                               frequencyPenalty: 0.5, presencePenalty: 0.25, penaltyLastN: 8)
        var s = try Sampler(params: p)
        #expect(try s.sample(logits: logits, history: [5]).token == 6)
        // Outside the window (8 newer tokens) the penalty no longer applies.
        #expect(try s.sample(logits: logits, history: [5, 0, 0, 0, 0, 0, 0, 0, 0]).token == 5)
        var u = p
        u.temperature = 1
        var us = try Sampler(params: u)
        let d = try us.distribution(logits: logits, history: [9, 9, 9, 5])
        let want = Ref.distribution(logits, [9, 9, 9, 5], u)
        expectSameDistribution(d, want, "exact penalties")
        // 9: -1 * 2 - (3 * 0.5 + 0.25) = -3.75 ; 5: 3 / 2 - (0.5 + 0.25) = 0.75
        let l = Ref.penalize(logits, [9, 9, 9, 5], u)
        #expect(l[9] == -3.75 && l[5] == 0.75)
    }

    // MARK: - Filters vs full-sort reference

    @Test func filterCandidateSetsMatchFullSortReference() throws {
        var g = SystemRandomNumberGenerator()
        for trial in 0..<40 {
            let n = [50, 1000, 49_152][trial % 3]
            let logits = trial % 2 == 0 ? Ref.randomLogits(n, -6...6) : Ref.gridLogits(n)
            let p = SamplingParams(
                temperature: [0.3, 0.8, 1, 1.7][trial % 4],
                topK: [0, 1, 5, 40, 300, n - 1, n + 10][Int.random(in: 0..<7, using: &g)],
                topP: [1, 0.95, 0.5, 0.1, 0.999][Int.random(in: 0..<5, using: &g)],
                minP: [0, 0.05, 0.3, 1][Int.random(in: 0..<4, using: &g)],
                seed: g.next())
            var s = try Sampler(params: p)
            let got = try s.distribution(logits: logits, history: [])
            expectSameDistribution(got, Ref.distribution(logits, [], p), "trial \(trial) n=\(n) \(p)")
        }
    }

    @Test func filtersWithExactPenaltiesMatchReference() throws {
        // Grid logits and power-of-two penalties are exact in Float, so the sets must
        // match the float64 reference exactly, ties included.
        var g = SystemRandomNumberGenerator()
        for trial in 0..<20 {
            let n = 4096
            let logits = Ref.gridLogits(n, levels: 40)
            let history = Ref.randomHistory(200, vocab: n, distinct: 60)
            let p = SamplingParams(
                temperature: 0.9, topK: [0, 10, 100][trial % 3], topP: [1, 0.9, 0.6][Int.random(in: 0..<3, using: &g)],
                minP: [0, 0.1][trial % 2], repetitionPenalty: 2, frequencyPenalty: 0.5, presencePenalty: 0.25,
                penaltyLastN: [-1, 64, 5][Int.random(in: 0..<3, using: &g)])
            var s = try Sampler(params: p)
            let got = try s.distribution(logits: logits, history: history)
            expectSameDistribution(got, Ref.distribution(logits, history, p), "penalized trial \(trial)")
        }
    }

    @Test func topPNucleusLargerThanFirstGuess() throws {
        // A flat 49k row: the 0.5 nucleus holds thousands of tokens, beyond the first 256
        // that are ordered up front.
        let logits = Ref.randomLogits(49_152, -1...1)
        for topP: Float in [0.5, 0.97, 0.003] {
            let p = SamplingParams(temperature: 1, topK: 0, topP: topP, minP: 0)
            var s = try Sampler(params: p)
            let got = try s.distribution(logits: logits, history: [])
            expectSameDistribution(got, Ref.distribution(logits, [], p), "topP \(topP)")
            if topP == 0.5 { #expect(got.count > 256) }
        }
    }

    @Test func topKSelectionWithHeavyTiesAndMaskedTokens() throws {
        var logits = Ref.gridLogits(49_152, levels: 3)  // only 7 distinct values
        for i in stride(from: 0, to: logits.count, by: 3) { logits[i] = -.infinity }
        let finite = logits.filter { $0 > -.infinity }.count
        for k in [1, 7, 40, 1000, 20_000, finite - 1, finite, finite + 5] {
            let p = SamplingParams(temperature: 1, topK: k, topP: 1, minP: 0)
            var s = try Sampler(params: p)
            let got = try s.distribution(logits: logits, history: [])
            #expect(got.count == min(k, finite))
            expectSameDistribution(got, Ref.distribution(logits, [], p), "topK \(k)")
            #expect(got.allSatisfy { logits[Int($0.token)] > -.infinity })
        }
    }

    @Test func temperatureSharpensAndFlattens() throws {
        let logits = Ref.randomLogits(300, -4...4)
        var entropies: [Double] = []
        var peaks: [Double] = []
        for t: Float in [0.25, 0.5, 1, 2, 4] {
            let p = SamplingParams(temperature: t, topK: 0, topP: 1, minP: 0)
            var s = try Sampler(params: p)
            let d = try s.distribution(logits: logits, history: [])
            expectSameDistribution(d, Ref.distribution(logits, [], p), "T=\(t)")
            #expect(Int(d[0].token) == Ref.argmax(logits.map(Double.init)))
            entropies.append(Ref.entropy(d))
            peaks.append(d[0].probability)
        }
        for i in 1..<entropies.count {
            #expect(entropies[i] > entropies[i - 1])
            #expect(peaks[i] < peaks[i - 1])
        }
        // A tiny temperature is numerically greedy, never NaN.
        var s = try Sampler(params: SamplingParams(temperature: 1e-30, topK: 0, topP: 1, minP: 0))
        let d = try s.distribution(logits: logits, history: [])
        #expect(d[0].probability == 1)
    }

    // MARK: - Statistics of the draw

    @Test func empiricalFrequenciesMatchRenormalizedProbabilities() throws {
        let logits: [Float] = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]
        var g = SystemRandomNumberGenerator()
        let configs: [SamplingParams] = [
            .unfiltered(),
            .init(temperature: 0.7, topK: 0, topP: 0.9, minP: 0),
            .init(temperature: 1.3, topK: 5, topP: 1, minP: 0),
            .init(temperature: 1, topK: 0, topP: 1, minP: 0.2),
            .init(temperature: 2, topK: 6, topP: 0.8, minP: 0.1, repetitionPenalty: 1.5, presencePenalty: 0.3),
        ]
        let history: [Int32] = [0, 0, 3]
        let draws = 200_000
        for var p in configs {
            p.seed = g.next()
            var s = try Sampler(params: p)
            let want = Ref.distribution(logits, history, p)
            var counts = [Int](repeating: 0, count: logits.count)
            for _ in 0..<draws { counts[Int(try s.sample(logits: logits, history: history).token)] += 1 }
            var chi2 = 0.0
            for t in 0..<logits.count {
                let q = want[Int32(t)] ?? 0
                if q == 0 {
                    #expect(counts[t] == 0, "token \(t) outside the kept set drawn \(counts[t]) times, \(p)")
                    continue
                }
                let mean = Double(draws) * q
                let sd = (mean * (1 - q)).squareRoot()
                #expect(abs(Double(counts[t]) - mean) <= 4 * max(sd, 1),
                        "token \(t): \(counts[t]) vs \(mean) ± \(sd), seed \(p.seed)")
                chi2 += (Double(counts[t]) - mean) * (Double(counts[t]) - mean) / mean
            }
            // df <= 7; P(chi2_7 > 35) ≈ 1e-5.
            #expect(chi2 < 35, "chi-square \(chi2) for \(p)")
        }
    }

    // MARK: - Determinism

    private func generate(_ params: SamplingParams, _ rows: [[Float]]) throws -> [Int32] {
        var s = try Sampler(params: params)
        var history: [Int32] = []
        for row in rows { history.append(try s.sample(logits: row, history: history).token) }
        return history
    }

    @Test func sameSeedSameSequenceDifferentSeedDifferent() throws {
        let rows = (0..<300).map { _ in Ref.randomLogits(1000, -3...3) }
        var g = SystemRandomNumberGenerator()
        let seed = g.next()
        let p = SamplingParams(temperature: 0.9, topK: 50, topP: 0.95, minP: 0.02, repetitionPenalty: 1.1, seed: seed)
        let a = try generate(p, rows)
        let b = try generate(p, rows)
        #expect(a == b)
        var q = p
        q.seed = seed &+ 1
        #expect(try generate(q, rows) != a)
    }

    @Test func forkedSamplerReplaysTheSameStream() throws {
        let rows = (0..<200).map { _ in Ref.randomLogits(500) }
        var s = try Sampler(params: .unfiltered(seed: 7))
        var history: [Int32] = []
        for row in rows.prefix(100) { history.append(try s.sample(logits: row, history: history).token) }
        var fork = s  // value copy: params, RNG state; scratch is copied on write
        var h1 = history
        var h2 = history
        for row in rows.dropFirst(100) {
            h1.append(try s.sample(logits: row, history: h1).token)
            h2.append(try fork.sample(logits: row, history: h2).token)
        }
        #expect(h1 == h2)
        #expect(s.rng == fork.rng)
        // Restoring a saved RNG state resumes the same draws.
        var saved = try Sampler(params: .unfiltered(), rng: SamplerRNG(state: s.rng.state))
        #expect(try saved.sample(logits: rows[0], history: []).token == (try s.sample(logits: rows[0], history: [])).token)
    }

    @Test func rngIsPortableXoshiro256StarStar() throws {
        // Golden values from an independent (Python) implementation of splitmix64-seeded
        // xoshiro256**.
        var a = SamplerRNG(seed: 0)
        #expect([a.next(), a.next(), a.next(), a.next()]
            == [0x99EC_5F36_CB75_F2B4, 0xBF6E_1F78_4956_452A, 0x1A5F_849D_4933_E6E0, 0x6AA5_94F1_262D_2D2C])
        var b = SamplerRNG(seed: 42)
        #expect([b.next(), b.next(), b.next(), b.next()]
            == [0x1578_0B2E_0C2E_C716, 0x6104_D986_6D11_3A7E, 0xAE17_5332_39E4_99A1, 0xECB8_AD47_03B3_60A1])
        var c = SamplerRNG(seed: 0)
        #expect(c.nextDouble() == Double(UInt64(0x99EC_5F36_CB75_F2B4) >> 11) * 0x1p-53)
        var sum = 0.0
        for _ in 0..<100_000 {
            let u = c.nextDouble()
            #expect(u >= 0 && u < 1)
            sum += u
        }
        #expect(abs(sum / 100_000 - 0.5) < 0.005)
        #expect(throws: BatchCoreError.self) { try SamplerRNG(state: (0, 0, 0, 0)) }
    }

    // MARK: - logprob

    @Test func logprobIsRawLogSoftmaxWhateverTheSettings() throws {
        var g = SystemRandomNumberGenerator()
        let p = SamplingParams(temperature: 0.6, topK: 40, topP: 0.9, minP: 0.05, repetitionPenalty: 1.3,
                               frequencyPenalty: 0.2, presencePenalty: 0.4, penaltyLastN: 64, seed: g.next())
        var s = try Sampler(params: p)
        var history = Ref.randomHistory(100, vocab: 49_152, distinct: 30)
        for _ in 0..<10 {
            let logits = Ref.randomLogits(49_152, -20...20)
            let ref = Ref.logSoftmax(logits)
            let r = try s.sample(logits: logits, history: history)
            let want = ref[Int(r.token)]
            #expect(abs(Double(r.logprob) - want) <= 1e-6 * max(1, abs(want)))
            let direct = try logits.withUnsafeBufferPointer {
                try Sampler.logProbability(of: r.token, logits: $0.baseAddress!, count: $0.count)
            }
            #expect(abs(direct - want) <= 1e-12 * max(1, abs(want)))
            history.append(r.token)
        }
        // Huge logits: naive exp would overflow.
        var big = [Float](repeating: 80, count: 10)
        big[3] = 88
        var gs = try Sampler(params: .greedy)
        let r = try gs.sample(logits: big, history: [])
        let ref = Ref.logSoftmax(big)
        #expect(r.token == 3 && abs(Double(r.logprob) - ref[3]) < 1e-6)
    }

    // MARK: - Invalid input

    @Test func invalidInputsThrowInvalidArgument() throws {
        func expectInvalid(_ label: String, _ body: () throws -> Void) {
            do {
                try body()
                Issue.record("\(label): did not throw")
            } catch let e as BatchCoreError {
                #expect(e.kind == .invalidArgument, "\(label): \(e)")
            } catch {
                Issue.record("\(label): unexpected \(error)")
            }
        }
        var s = try Sampler(params: SamplingParams(seed: 1))
        let good = Ref.randomLogits(100)
        expectInvalid("empty") { _ = try s.sample(logits: [], history: []) }
        expectInvalid("count 0") {
            _ = try good.withUnsafeBufferPointer { try s.sample(logits: $0.baseAddress!, count: 0, history: []) }
        }
        expectInvalid("count -1") {
            _ = try good.withUnsafeBufferPointer { try s.sample(logits: $0.baseAddress!, count: -1, history: []) }
        }
        expectInvalid("all NaN") { _ = try s.sample(logits: [Float](repeating: .nan, count: 100), history: []) }
        var oneNaN = good
        oneNaN[17] = .nan
        expectInvalid("one NaN") { _ = try s.sample(logits: oneNaN, history: []) }
        var inf = good
        inf[3] = .infinity
        expectInvalid("+inf") { _ = try s.sample(logits: inf, history: []) }
        expectInvalid("all -inf") { _ = try s.sample(logits: [Float](repeating: -.infinity, count: 9), history: []) }
        expectInvalid("history -1") { _ = try s.sample(logits: good, history: [1, -1]) }
        expectInvalid("history n") { _ = try s.sample(logits: good, history: [100]) }
        expectInvalid("distribution history") { _ = try s.distribution(logits: good, history: [Int32.max]) }
        expectInvalid("logProbability token") {
            _ = try good.withUnsafeBufferPointer { try Sampler.logProbability(of: 100, logits: $0.baseAddress!, count: 100) }
        }
        // Still usable afterwards, and the failed calls consumed no randomness.
        var fresh = try Sampler(params: SamplingParams(seed: 1))
        #expect(try s.sample(logits: good, history: []).token == (try fresh.sample(logits: good, history: [])).token)

        let bad: [(String, SamplingParams)] = [
            ("temperature < 0", .init(temperature: -0.1)),
            ("temperature NaN", .init(temperature: .nan)),
            ("temperature inf", .init(temperature: .infinity)),
            ("topK < 0", .init(topK: -1)),
            ("topP 0", .init(topP: 0)),
            ("topP > 1", .init(topP: 1.01)),
            ("topP NaN", .init(topP: .nan)),
            ("minP < 0", .init(minP: -0.01)),
            ("minP > 1", .init(minP: 1.5)),
            ("rep 0", .init(repetitionPenalty: 0)),
            ("rep < 0", .init(repetitionPenalty: -1)),
            ("rep inf", .init(repetitionPenalty: .infinity)),
            ("freq NaN", .init(frequencyPenalty: .nan)),
            ("presence inf", .init(presencePenalty: -.infinity)),
            ("lastN < -1", .init(penaltyLastN: -2)),
        ]
        for (label, p) in bad {
            expectInvalid(label) { try p.validate() }
            expectInvalid(label + " init") { _ = try Sampler(params: p) }
            var mutated = try Sampler(params: .greedy)
            mutated.params = p
            expectInvalid(label + " sample") { _ = try mutated.sample(logits: good, history: []) }
        }
        try SamplingParams().validate()
        try SamplingParams.greedy.validate()
        try SamplingParams(temperature: 0, topK: 0, topP: 1, minP: 1, repetitionPenalty: 0.5, penaltyLastN: -1).validate()
    }

    // MARK: - Cost

    @Test func fullVocabSamplingIsCheap() throws {
        let logits = Ref.randomLogits(49_152)
        var s = try Sampler(params: SamplingParams(seed: 3))
        var u = try Sampler(params: .unfiltered(seed: 3))
        let history = Ref.randomHistory(64, vocab: 49_152, distinct: 20)
        let clock = ContinuousClock()
        let t = clock.measure {
            for _ in 0..<200 {
                _ = try? s.sample(logits: logits, history: history)
                _ = try? u.sample(logits: logits, history: history)
            }
        }
        // ~2 passes of exp over 49k per call; generous bound for debug-ish CI machines.
        #expect(t < .seconds(5), "400 samples took \(t)")
    }
}
