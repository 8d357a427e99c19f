import BCCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One token of a sampler's final (filtered, temperature-scaled, renormalized)
/// distribution.
package struct SamplerCandidate: Sendable, Equatable, Hashable {
    package var token: Int32
    package var probability: Double

    package init(token: Int32, probability: Double) {
        self.token = token
        self.probability = probability
    }
}

/// A token sampler over one logits row, reproducing llama.cpp's default sampler chain
/// (src/llama-sampling.cpp; order from common/sampling.cpp):
///
/// 1. **penalties** (`llama_sampler_penalties_apply`): for every distinct token among the
///    last `penaltyLastN` history tokens, with `count` its occurrences there:
///    `logit = logit <= 0 ? logit * rep : logit / rep`, then
///    `logit -= count * frequencyPenalty + (count > 0 ? presencePenalty : 0)`, in Float.
/// 2. **top-k** (`llama_sampler_top_k_impl`): keep the k largest logits. Done with a
///    partial selection (quickselect, O(n)) plus a sort of the k survivors only.
/// 3. **top-p** (`llama_sampler_top_p_apply`): softmax over the survivors, walk them in
///    descending order, keep up to and including the first index where the cumulative
///    probability is >= p (min_keep = 1, so at least one token). Like llama.cpp, only the
///    first 256 are ordered at first and the rest only if the nucleus is larger.
/// 4. **min-p** (`llama_sampler_min_p_apply`): keep tokens with p >= minP · p_max, tested
///    as llama.cpp does in logit space: `logit >= max_logit + log(minP)`. The most likely
///    token always survives.
/// 5. **temperature** (`llama_sampler_temp_impl`): logits / T.
/// 6. **draw** (`llama_sampler_dist_apply`): softmax and inverse-CDF draw with one uniform
///    double `u` from `SamplerRNG`: the first candidate (in descending-logit order when
///    a filter sorted them, else ascending id) whose running weight exceeds `u · Σw`.
///
/// Probabilities, cumulative sums and thresholds are computed in Double (llama.cpp uses
/// Float); this only matters at exact ties with a threshold.
///
/// Greedy (`temperature == 0`, llama.cpp `llama_sampler_greedy_apply`): argmax of the
/// *penalized* logits, ties → lowest token id. The other filters cannot change the argmax
/// and are skipped; no random number is consumed. Otherwise exactly one `nextDouble()` is
/// consumed per `sample` call, even when a single candidate survives, so the RNG position
/// equals the number of non-greedy draws.
///
/// Tokens whose (penalized) logit is -inf are never candidates; they are masked out.
///
/// Copying a `Sampler` forks it: params, RNG state and all. The scratch buffers are
/// reused between calls (no per-call allocation for the candidate arrays) and are
/// copied-on-write, so forks never share them.
package struct Sampler {
    package var params: SamplingParams
    package var rng: SamplerRNG
    private var scratch = SamplerScratch()

    /// A sampler whose RNG is seeded with `params.seed`.
    package init(params: SamplingParams) throws {
        try params.validate()
        self.params = params
        self.rng = SamplerRNG(seed: params.seed)
    }

    /// A sampler continuing from a saved RNG state (`params.seed` is ignored).
    package init(params: SamplingParams, rng: SamplerRNG) throws {
        try params.validate()
        self.params = params
        self.rng = rng
    }

    /// Samples the next token from `logits[0..<count]`.
    ///
    /// `history` is the sequence's context so far (prompt and generated tokens, oldest
    /// first); the penalties look at its last `params.penaltyLastN` entries. Every id in
    /// it must lie in `0..<count`.
    ///
    /// - Returns: the token and its `logprob`: the natural log of the token's probability
    ///   under the model's **raw** distribution, i.e. `log_softmax(logits)[token]` of the
    ///   unpenalized logits at temperature 1 with no filter, computed stably in Double
    ///   (max-subtracted log-sum-exp) and rounded to Float once. It is the quantity to
    ///   report or score with, independent of the sampling settings.
    /// - Throws: `BatchCoreError.invalid` for `count <= 0`, invalid params, a NaN or +inf
    ///   logit, all logits -inf, or a history id outside `0..<count`.
    package mutating func sample(
        logits: UnsafePointer<Float>, count: Int, history: [Int32]
    ) throws -> (token: Int32, logprob: Float) {
        let rawMax = try prepareInput(logits: logits, count: count, history: history)
        let stage = try filter(logits: logits, count: count, history: history)
        let token: Int32
        if stage.greedy {
            token = scratch.entries[0].id
        } else {
            let u = rng.nextDouble()
            token = Self.draw(scratch, stage.count, Double(params.temperature), u)
        }
        let lse = Self.logSumExp(logits, count, rawMax)
        return (token, Float(Double(logits[Int(token)]) - lse))
    }

    /// `sample(logits:count:history:)` over an array; `logits.count` is the vocab size.
    package mutating func sample(logits: [Float], history: [Int32]) throws -> (token: Int32, logprob: Float) {
        try logits.withUnsafeBufferPointer { buf in
            guard let base = buf.baseAddress, buf.count > 0 else {
                throw BatchCoreError.invalid("sampling: empty logits row")
            }
            return try sample(logits: base, count: buf.count, history: history)
        }
    }

    /// The distribution `sample` would draw from: the surviving candidates with their
    /// temperature-scaled, renormalized probabilities, most likely first (ties → lower
    /// id). Greedy params give the argmax with probability 1. Consumes no randomness.
    package mutating func distribution(
        logits: UnsafePointer<Float>, count: Int, history: [Int32]
    ) throws -> [SamplerCandidate] {
        _ = try prepareInput(logits: logits, count: count, history: history)
        let stage = try filter(logits: logits, count: count, history: history)
        let s = scratch
        if stage.greedy { return [SamplerCandidate(token: s.entries[0].id, probability: 1)] }
        let m = stage.count
        let sum = Self.weights(s, m, Double(params.temperature))
        var out = [SamplerCandidate]()
        out.reserveCapacity(m)
        for i in 0..<m {
            out.append(SamplerCandidate(token: s.entries[i].id, probability: s.weights[i] / sum))
        }
        out.sort { a, b in
            a.probability > b.probability || (a.probability == b.probability && a.token < b.token)
        }
        return out
    }

    /// `distribution(logits:count:history:)` over an array.
    package mutating func distribution(logits: [Float], history: [Int32]) throws -> [SamplerCandidate] {
        try logits.withUnsafeBufferPointer { buf in
            guard let base = buf.baseAddress, buf.count > 0 else {
                throw BatchCoreError.invalid("sampling: empty logits row")
            }
            return try distribution(logits: base, count: buf.count, history: history)
        }
    }

    /// `log_softmax(logits)[token]` in Double, computed stably (the `logprob` that
    /// `sample` returns).
    package static func logProbability(
        of token: Int32, logits: UnsafePointer<Float>, count: Int
    ) throws -> Double {
        guard count > 0 else { throw BatchCoreError.invalid("sampling: vocab size must be > 0") }
        guard token >= 0, Int(token) < count else {
            throw BatchCoreError.invalid("sampling: token \(token) outside vocab of \(count)")
        }
        let mx = try scanRaw(logits, count)
        return Double(logits[Int(token)]) - logSumExp(logits, count, mx)
    }

    // MARK: - Pipeline

    private struct Stage {
        var count: Int
        var greedy: Bool
    }

    /// Validates everything that can be wrong before any state changes; returns the raw
    /// maximum logit. Also makes the scratch unique and large enough.
    private mutating func prepareInput(
        logits: UnsafePointer<Float>, count n: Int, history: [Int32]
    ) throws -> Float {
        try params.validate()
        guard n > 0 else { throw BatchCoreError.invalid("sampling: vocab size must be > 0 (got \(n))") }
        guard n <= Int(Int32.max) else {
            throw BatchCoreError.invalid("sampling: vocab size \(n) exceeds Int32 token ids")
        }
        let rawMax = try Self.scanRaw(logits, n)
        for t in history where t < 0 || Int(t) >= n {
            throw BatchCoreError.invalid("sampling: history token \(t) outside vocab of \(n)")
        }
        if !isKnownUniquelyReferenced(&scratch) { scratch = SamplerScratch() }
        scratch.reserve(n)
        return rawMax
    }

    /// Max of the raw logits; rejects NaN, +inf, and an all -inf row.
    private static func scanRaw(_ logits: UnsafePointer<Float>, _ n: Int) throws -> Float {
        var mx = -Float.infinity
        for i in 0..<n {
            let v = logits[i]
            guard v < .infinity else {  // false for NaN and +inf
                throw BatchCoreError.invalid("sampling: logit \(i) is \(v)")
            }
            if v > mx { mx = v }
        }
        guard mx > -.infinity else { throw BatchCoreError.invalid("sampling: every logit is -inf") }
        return mx
    }

    /// log Σ exp(logits) in Double, shifted by the max for stability.
    private static func logSumExp(_ logits: UnsafePointer<Float>, _ n: Int, _ mx: Float) -> Double {
        let m = Double(mx)
        var s = 0.0
        for i in 0..<n { s += exp(Double(logits[i]) - m) }
        return m + log(s)
    }

    /// Runs penalties, then greedy argmax or top-k → top-p → min-p. Leaves the survivors
    /// in `scratch.entries[0..<count]`.
    private func filter(logits: UnsafePointer<Float>, count n: Int, history: [Int32]) throws -> Stage {
        let p = params
        let s = scratch

        // Distinct tokens of the penalty window, sorted so runs give the counts.
        let penalize = !p.penaltiesDisabled && !history.isEmpty
        if penalize {
            let window = p.penaltyLastN < 0 ? history.count : min(p.penaltyLastN, history.count)
            s.window.removeAll(keepingCapacity: true)
            s.window.append(contentsOf: history[(history.count - window)...])
            s.window.sort()
        }

        return try s.entries.withUnsafeMutableBufferPointer { buf -> Stage in
            let e = buf.baseAddress!
            for i in 0..<n { e[i] = SamplerEntry(logit: logits[i], id: Int32(i)) }

            // 1. Penalties (llama_sampler_penalties_apply), in Float like llama.cpp.
            if penalize {
                let w = s.window
                var i = 0
                while i < w.count {
                    let tok = w[i]
                    var j = i + 1
                    while j < w.count && w[j] == tok { j += 1 }
                    let cnt = Float(j - i)
                    var v = e[Int(tok)].logit
                    v = v <= 0 ? v * p.repetitionPenalty : v / p.repetitionPenalty
                    v -= cnt * p.frequencyPenalty + p.presencePenalty
                    e[Int(tok)].logit = v
                    i = j
                }
            }

            // Drop masked (-inf) tokens; they carry zero probability in every stage.
            var m = 0
            for i in 0..<n {
                let v = e[i]
                guard !v.logit.isNaN, v.logit != .infinity else {
                    throw BatchCoreError.invalid("sampling: penalized logit of token \(v.id) is \(v.logit)")
                }
                if v.logit > -.infinity {
                    e[m] = v
                    m += 1
                }
            }
            guard m > 0 else { throw BatchCoreError.invalid("sampling: every penalized logit is -inf") }

            // Greedy: argmax, ties → lowest id (entries are in ascending id order here).
            if p.temperature == 0 {
                var best = 0
                for i in 1..<max(m, 1) where e[i].logit > e[best].logit { best = i }
                e[0] = e[best]
                return Stage(count: 1, greedy: true)
            }

            var sorted = false

            // 2. Top-k: partial selection, then order only the k survivors.
            if p.topK > 0 && p.topK < m {
                Self.selectTop(e, m, p.topK)
                Self.sortRange(e, 0, p.topK)
                m = p.topK
                sorted = true
            }

            // 3. Top-p over the current survivors' softmax (temperature 1).
            if p.topP < 1 && m > 1 {
                let lm = Double(sorted ? e[0].logit : Self.maxLogit(e, m))
                var sum = 0.0
                for i in 0..<m { sum += exp(Double(e[i].logit) - lm) }
                var ready = m
                if !sorted {
                    ready = min(256, m)
                    if ready < m { Self.selectTop(e, m, ready) }
                    Self.sortRange(e, 0, ready)
                }
                let target = Double(p.topP)
                var cum = 0.0
                var keep = m
                var i = 0
                while i < m {
                    if i == ready {  // nucleus larger than the first guess: order the rest
                        Self.sortRange(e, ready, m)
                        ready = m
                    }
                    cum += exp(Double(e[i].logit) - lm) / sum
                    if cum >= target {
                        keep = i + 1
                        break
                    }
                    i += 1
                }
                if keep == m && ready < m { Self.sortRange(e, ready, m) }
                m = keep
                sorted = true
            }

            // 4. Min-p in logit space: logit >= max + log(minP).
            if p.minP > 0 && m > 1 {
                let threshold = Double(sorted ? e[0].logit : Self.maxLogit(e, m)) + log(Double(p.minP))
                if sorted {
                    var i = 1
                    while i < m && Double(e[i].logit) >= threshold { i += 1 }
                    m = i
                } else {
                    var w = 0
                    for i in 0..<m where Double(e[i].logit) >= threshold {
                        e[w] = e[i]
                        w += 1
                    }
                    m = w
                }
            }
            return Stage(count: m, greedy: false)
        }
    }

    /// 5. Temperature + softmax weights: `weights[i] = exp((l_i - l_max) / T)`, which is
    /// softmax(l / T) up to the returned normalizer. Computed in Double so tiny T cannot
    /// overflow.
    private static func weights(_ s: SamplerScratch, _ m: Int, _ temperature: Double) -> Double {
        s.entries.withUnsafeBufferPointer { eb in
            s.weights.withUnsafeMutableBufferPointer { wb in
                var lm = -Float.infinity
                for i in 0..<m where eb[i].logit > lm { lm = eb[i].logit }
                let l0 = Double(lm)
                var sum = 0.0
                for i in 0..<m {
                    let w = exp((Double(eb[i].logit) - l0) / temperature)
                    wb[i] = w
                    sum += w
                }
                return sum
            }
        }
    }

    /// 6. Inverse-CDF draw: first candidate whose running weight exceeds u·Σw (strictly,
    /// so a zero-weight candidate is never chosen).
    private static func draw(_ s: SamplerScratch, _ m: Int, _ temperature: Double, _ u: Double) -> Int32 {
        let sum = weights(s, m, temperature)
        let target = u * sum
        var run = 0.0
        var last = 0
        for i in 0..<m {
            let w = s.weights[i]
            if w > 0 { last = i }
            run += w
            if run > target { return s.entries[i].id }
        }
        return s.entries[last].id  // only when u·Σw rounds up to Σw
    }

    // MARK: - Selection helpers

    /// Strict total order of the candidates: larger logit first, then lower id.
    @inline(__always)
    static func before(_ a: SamplerEntry, _ b: SamplerEntry) -> Bool {
        a.logit > b.logit || (a.logit == b.logit && a.id < b.id)
    }

    private static func maxLogit(_ e: UnsafeMutablePointer<SamplerEntry>, _ m: Int) -> Float {
        var mx = e[0].logit
        for i in 1..<max(m, 1) where e[i].logit > mx { mx = e[i].logit }
        return mx
    }

    private static func sortRange(_ e: UnsafeMutablePointer<SamplerEntry>, _ lo: Int, _ hi: Int) {
        guard hi - lo > 1 else { return }
        var range = UnsafeMutableBufferPointer(start: e + lo, count: hi - lo)
        range.sort(by: before)
    }

    /// Rearranges `e[0..<n]` so that `e[0..<k]` holds the k first entries in `before`
    /// order (unordered among themselves): quickselect with a median-of-three pivot,
    /// falling back to a sort of the remaining range if it degenerates.
    static func selectTop(_ e: UnsafeMutablePointer<SamplerEntry>, _ n: Int, _ k: Int) {
        guard k > 0 && k < n else { return }
        let nth = k - 1
        var lo = 0
        var hi = n - 1
        var rounds = 0
        while hi > lo {
            if hi - lo < 16 || rounds > 64 {
                sortRange(e, lo, hi + 1)
                return
            }
            rounds += 1
            let mid = lo + (hi - lo) / 2
            if before(e[mid], e[lo]) { swap(&e[mid], &e[lo]) }
            if before(e[hi], e[lo]) { swap(&e[hi], &e[lo]) }
            if before(e[hi], e[mid]) { swap(&e[hi], &e[mid]) }
            let pivot = e[mid]
            var i = lo
            var j = hi
            while i <= j {
                while before(e[i], pivot) { i += 1 }
                while before(pivot, e[j]) { j -= 1 }
                if i <= j {
                    if i != j { swap(&e[i], &e[j]) }
                    i += 1
                    j -= 1
                }
            }
            // e[lo...j] precede-or-equal the pivot, e[i...hi] follow-or-equal it.
            if nth <= j {
                hi = j
            } else if nth >= i {
                lo = i
            } else {
                return
            }
        }
    }
}

/// Copies of a `Sampler` never share scratch (it is replaced when not uniquely
/// referenced), so a sampler may move to another thread.
extension Sampler: @unchecked Sendable {}

@usableFromInline
struct SamplerEntry {
    var logit: Float
    var id: Int32
}

/// Reusable per-sampler buffers, grown to the vocab size once.
final class SamplerScratch {
    var entries: [SamplerEntry] = []
    var weights: [Double] = []
    var window: [Int32] = []

    func reserve(_ n: Int) {
        if entries.count < n {
            entries = [SamplerEntry](repeating: SamplerEntry(logit: 0, id: 0), count: n)
            weights = [Double](repeating: 0, count: n)
        }
    }
}
