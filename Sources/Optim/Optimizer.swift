import BCCore
import BCKernels
/// Options of one optimizer step.
package struct OptimizerStepOptions: Equatable, Sendable {
    /// Multiplies every gradient before use (e.g. 1/accumulation steps, or an AMP
    /// loss-scale's inverse). The caller's gradient buffers are never modified.
    package var gradScale: Double = 1
    /// Global L2-norm clipping of the (scaled) gradients over all tensors, as
    /// torch.nn.utils.clip_grad_norm_: coef = min(1, max_norm / (norm + 1e-6)). 0 = off.
    package var maxGradNorm: Double = 0
    /// Check every gradient for NaN/Inf first; a non-finite gradient skips the step
    /// (nothing changes) and reports it.
    package var checkFinite = true

    package init(gradScale: Double = 1, maxGradNorm: Double = 0, checkFinite: Bool = true) {
        self.gradScale = gradScale
        self.maxGradNorm = maxGradNorm
        self.checkFinite = checkFinite
    }
}

/// What a step did.
package struct OptimizerStepReport: Equatable, Sendable {
    /// Global L2 norm of the scaled gradients before clipping; NaN when not computed
    /// (no clipping and no finiteness check).
    package var gradNorm = Double.nan
    /// The factor clipping applied to the gradients (1 = none).
    package var clipCoefficient = 1.0
    /// Steps taken so far by the first group, after this step.
    package var step: Int64 = 0

    package init(gradNorm: Double = .nan, clipCoefficient: Double = 1, step: Int64 = 0) {
        self.gradNorm = gradNorm
        self.clipCoefficient = clipCoefficient
        self.step = step
    }
}

/// An optimizer over parameter groups of caller-owned float32 buffers. Not thread-safe:
/// one thread at a time; the step itself runs on `Parallel.threadCount` threads.
package final class Optimizer {
    package struct Group: Equatable {
        package var hyper: OptimizerHyperparameters
        package var step: Int64 = 0
        package var tensors: [Int] = []
    }

    package let algorithm: OptimizerAlgorithm
    package private(set) var groups: [Group] = []
    package private(set) var tensors: [OptimizerTensor] = []
    /// The gradient norm the last step (or skipped step) measured; NaN if none.
    package private(set) var lastGradNorm = Double.nan

    /// Work items: the concatenation of all tensors cut into chunks of about
    /// `chunkElements`, so small tensors share an item and big ones are split.
    private var items: [[(tensor: Int, range: Range<Int>)]] = []
    /// firstSegment[k]: index of item k's first segment in the concatenation of all
    /// items' segments; one more entry at the end holds the total segment count.
    private var firstSegment: [Int] = [0]
    private var itemsValid = false
    static let chunkElements = 1 << 16

    /// The most steps a group can take: 2^53, the largest count the update rules
    /// (which use the step as a double, e.g. β^t) represent exactly. A step past it is
    /// refused, and a state file with a larger count is rejected at load.
    package static let maxStepCount: Int64 = 1 << 53

    package init(algorithm: OptimizerAlgorithm) {
        self.algorithm = algorithm
    }

    package var parameterCount: Int { tensors.reduce(0) { $0 + $1.count } }

    // MARK: registration

    @discardableResult
    package func addGroup(_ hyper: OptimizerHyperparameters) throws -> Int {
        try hyper.validate(for: algorithm)
        groups.append(Group(hyper: hyper))
        return groups.count - 1
    }

    @discardableResult
    package func addTensor(group: Int, name: String, param: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
                          count: Int) throws -> Int {
        guard groups.indices.contains(group) else {
            throw BatchCoreError.invalid("group \(group) does not exist (\(groups.count) groups)")
        }
        guard count > 0 else { throw BatchCoreError.invalid("tensor '\(name)': element count must be > 0 (got \(count))") }
        guard count <= Int.max / 8 else { throw BatchCoreError.invalid("tensor '\(name)': element count \(count) too large") }
        let pr = UInt(bitPattern: param)..<UInt(bitPattern: param + count)
        let gr = UInt(bitPattern: grad)..<UInt(bitPattern: grad + count)
        guard !pr.overlaps(gr) else { throw BatchCoreError.invalid("tensor '\(name)': param and grad buffers overlap") }
        for t in tensors {
            let tp = UInt(bitPattern: t.param)..<UInt(bitPattern: t.param + t.count)
            if tp.overlaps(pr) {
                throw BatchCoreError.invalid("tensor '\(name)': param buffer overlaps registered tensor '\(t.name)' (duplicate registration)")
            }
            if !name.isEmpty && t.name == name {
                throw BatchCoreError.invalid("tensor name '\(name)' is already registered")
            }
        }
        let tensor = OptimizerTensor(name: name, param: param, grad: grad, count: count, group: group,
                                     slotCount: algorithm.stateSlots.count)
        if algorithm == .adagrad {
            // torch.optim.Adagrad creates its sum at construction: full_like(p, initial_accumulator_value).
            tensor.slots[0] = try OptimizerTensor.allocate(count, fill: Float(groups[group].hyper.initialAccumulatorValue))
        }
        tensors.append(tensor)
        groups[group].tensors.append(tensors.count - 1)
        itemsValid = false
        return tensors.count - 1
    }

    package func hyperparameters(group: Int) throws -> OptimizerHyperparameters {
        guard groups.indices.contains(group) else { throw BatchCoreError.invalid("group \(group) does not exist") }
        return groups[group].hyper
    }

    package func setHyperparameters(_ hyper: OptimizerHyperparameters, group: Int) throws {
        guard groups.indices.contains(group) else { throw BatchCoreError.invalid("group \(group) does not exist") }
        try hyper.validate(for: algorithm)
        groups[group].hyper = hyper
    }

    /// Sets the learning rate of one group, or of all groups when `group` is nil.
    package func setLearningRate(_ lr: Double, group: Int?) throws {
        guard lr.isFinite, lr >= 0 else { throw BatchCoreError.invalid("lr must be finite and >= 0 (got \(lr))") }
        if let group {
            guard groups.indices.contains(group) else { throw BatchCoreError.invalid("group \(group) does not exist") }
            groups[group].hyper.lr = lr
        } else {
            for g in groups.indices { groups[g].hyper.lr = lr }
        }
    }

    /// Replaces all groups' hyperparameters and step counts (state loading).
    func replaceGroups(_ newGroups: [Group]) {
        groups = newGroups
    }

    // MARK: step

    /// One optimizer step over every registered tensor. Throws `.nonFinite` (and
    /// changes nothing) when a gradient holds NaN/Inf and the check is on.
    @discardableResult
    package func step(_ options: OptimizerStepOptions = .init()) throws -> OptimizerStepReport {
        guard options.gradScale.isFinite else { throw BatchCoreError.invalid("grad_scale must be finite") }
        guard options.maxGradNorm.isFinite, options.maxGradNorm >= 0 else {
            throw BatchCoreError.invalid("max_grad_norm must be finite and >= 0")
        }
        if let g = groups.firstIndex(where: { $0.step >= Self.maxStepCount }) {
            throw BatchCoreError.badState("group \(g) has taken \(groups[g].step) steps, the most a group can take (\(Self.maxStepCount))")
        }
        var report = OptimizerStepReport()
        if !itemsValid { rebuildItems() }

        // Pre-pass: per-tensor Σgrad² for the finiteness check and clipping.
        let lambClip = algorithm == .lamb ? (groups.first?.hyper.maxGradNorm ?? 0) : 0
        var tensorSquares: [Double] = []
        if options.checkFinite || options.maxGradNorm > 0 || lambClip > 0 {
            tensorSquares = perTensorSums { t, r in Reductions.sumOfSquares(t.grad + r.lowerBound, r.count) }
            let total = tensorSquares.reduce(0, +)
            let norm = total.squareRoot() * abs(options.gradScale)
            report.gradNorm = norm
            lastGradNorm = norm
            if !total.isFinite {
                let bad = tensors.indices.first { !tensorSquares[$0].isFinite }.map { tensors[$0].name } ?? "?"
                throw BatchCoreError(.nonFinite, "non-finite gradient in tensor '\(bad)' (norm \(norm)); step skipped, state unchanged")
            }
            if options.maxGradNorm > 0 {
                report.clipCoefficient = min(1, options.maxGradNorm / (norm + 1e-6))
            }
        }
        let gradScale = options.gradScale * report.clipCoefficient

        // State buffers this step needs; on allocation failure roll back what was made.
        var created: [(Int, Int)] = []
        do {
            for (ti, t) in tensors.enumerated() {
                for slot in algorithm.slotsNeeded(groups[t.group].hyper) where t.slots[slot] == nil {
                    t.slots[slot] = try OptimizerTensor.allocate(t.count, fill: 0)
                    created.append((ti, slot))
                }
            }
        } catch {
            for (ti, slot) in created {
                free(tensors[ti].slots[slot])
                tensors[ti].slots[slot] = nil
            }
            throw error
        }
        // SGD's momentum buffer starts as a copy of the first gradient.
        let fresh = Set(created.filter { algorithm == .sgd && $0.1 == 0 }.map(\.0))

        var scalars = groups.map { g in StepScalars(algorithm, g.hyper, step: g.step + 1, gradScale: gradScale) }
        if lambClip > 0 {
            // timm Lamb: grad / max(‖grad‖ / max_grad_norm, 1), the norm as float32.
            let norm = Float(tensorSquares.reduce(0, +).squareRoot() * abs(gradScale))
            let divisor = max(norm / Float(lambClip), 1)
            for i in scalars.indices { scalars[i].gradDivisor = divisor }
        }

        switch algorithm {
        case .sgd:
            runItems { t, ti, r in UpdateRules.sgd(t, r, scalars[t.group], freshMomentum: fresh.contains(ti)) }
        case .adam, .adamw:
            let decoupled = algorithm == .adamw
            runItems { t, _, r in UpdateRules.adam(t, r, scalars[t.group], decoupled: decoupled) }
        case .adagrad:
            runItems { t, _, r in UpdateRules.adagrad(t, r, scalars[t.group]) }
        case .rmsprop:
            runItems { t, _, r in UpdateRules.rmsprop(t, r, scalars[t.group]) }
        case .lion:
            runItems { t, _, r in UpdateRules.lion(t, r, scalars[t.group]) }
        case .lamb:
            let sums = perTensorPairs { t, r in UpdateRules.lambMoments(t, r, scalars[t.group]) }
            let trust: [Float] = sums.map { pp, uu in
                let w = Float(pp.squareRoot()), u = Float(uu.squareRoot())
                return w > 0 && u > 0 ? w / u : 1
            }
            runItems { t, ti, r in
                let s = scalars[t.group]
                UpdateRules.lambApply(t, r, s, trust: s.trustClip ? min(trust[ti], 1) : trust[ti])
            }
        case .adaptiveBraking:
            let stats = perTensorTriples { t, r in UpdateRules.brakingStats(t, r, scalars[t.group]) }
            let rho: [Float] = tensors.indices.map { ti in
                let (gg, vv, gv) = stats[ti]
                let cos = gg > 0 && vv > 0 ? Float(gv / (gg.squareRoot() * vv.squareRoot())) : 0
                return 1 - scalars[tensors[ti].group].alpha * cos
            }
            runItems { t, ti, r in UpdateRules.brakingApply(t, r, scalars[t.group], rho: rho[ti]) }
        }
        for g in groups.indices { groups[g].step += 1 }
        report.step = groups.first?.step ?? 0
        return report
    }

    // MARK: work partition

    private func rebuildItems() {
        items = []
        var current: [(tensor: Int, range: Range<Int>)] = []
        var filled = 0
        for (ti, t) in tensors.enumerated() {
            var start = 0
            while start < t.count {
                let take = min(t.count - start, Self.chunkElements - filled)
                current.append((ti, start..<start + take))
                filled += take
                start += take
                if filled == Self.chunkElements {
                    items.append(current)
                    current = []
                    filled = 0
                }
            }
        }
        if !current.isEmpty { items.append(current) }
        var segments = 0
        firstSegment = [0]
        for item in items {
            segments += item.count
            firstSegment.append(segments)
        }
        itemsValid = true
    }

    private func runItems(_ body: (OptimizerTensor, Int, Range<Int>) -> Void) {
        let tensors = self.tensors, items = self.items
        Parallel.forEach(items.count) { k in
            for seg in items[k] { body(tensors[seg.tensor], seg.tensor, seg.range) }
        }
    }

    /// Per-segment partial results, combined per tensor in item order (deterministic
    /// whatever the number of threads). The partials live in one Swift array (one
    /// allocation per call, released with it); each item writes only its own segments.
    private func perTensor<R>(_ zero: R, _ add: (R, R) -> R, _ body: (OptimizerTensor, Range<Int>) -> R) -> [R] {
        let tensors = self.tensors, items = self.items, firstSegment = self.firstSegment
        var partial = [R](repeating: zero, count: firstSegment.last ?? 0)
        partial.withUnsafeMutableBufferPointer { partial in
            let partial = partial
            Parallel.forEach(items.count) { k in
                for (j, seg) in items[k].enumerated() { partial[firstSegment[k] + j] = body(tensors[seg.tensor], seg.range) }
            }
        }
        var out = Array(repeating: zero, count: tensors.count)
        for k in items.indices {
            for (j, seg) in items[k].enumerated() { out[seg.tensor] = add(out[seg.tensor], partial[firstSegment[k] + j]) }
        }
        return out
    }

    private func perTensorSums(_ body: (OptimizerTensor, Range<Int>) -> Double) -> [Double] {
        perTensor(0, +, body)
    }

    private func perTensorPairs(_ body: (OptimizerTensor, Range<Int>) -> (Double, Double)) -> [(Double, Double)] {
        perTensor((0, 0), { ($0.0 + $1.0, $0.1 + $1.1) }, body)
    }

    private func perTensorTriples(_ body: (OptimizerTensor, Range<Int>) -> (Double, Double, Double)) -> [(Double, Double, Double)] {
        perTensor((0, 0, 0), { ($0.0 + $1.0, $0.1 + $1.1, $0.2 + $1.2) }, body)
    }
}

#if canImport(Glibc)
import Glibc
#endif
