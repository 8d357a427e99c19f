import BCCore
import BCFormats
import BCOptim

/// Asynchronous mode with bounded gradient delay (`TrainerOptions.gradientDelay` = D).
///
/// The exact rule. Let g_t be the gradient of step t's summed loss, computed on the
/// weights w_t (after the data-parallel all-reduce when collectives are set), and N_t
/// its target count. With D > 0, `Trainer.step` number t (1-based) does
///
///     push (g_t, N_t) onto a FIFO of at most D entries
///     t <= D:  apply nothing (warm-up; `lastStepApplied` false, weights and optimizer
///              state unchanged, the optimizer's step count does not advance)
///     t >  D:  pop (g_{t-D}, N_{t-D}); w_{t+1} = optimizer(w_t, g_{t-D} · gradScale / N_{t-D})
///
/// so every update uses a gradient computed on weights exactly D steps old (bounded
/// staleness D, the same for every step: not "at most D"), each with its OWN target
/// count, and with the gradScale / maxGradNorm of the `step` call that applies it.
/// D = 0 is the ordinary synchronous trainer, bit for bit (this file is not used).
///
/// Why: in a real data-parallel deployment this is what lets the all-reduce of step t's
/// gradient run while step t+1 computes (D = 1), or hide D steps of network latency; the
/// overlap itself is NOT built here (`allReduceStep` still blocks) — this is the
/// optimisation problem such a deployment solves, reproduced exactly, so its effect on
/// convergence can be measured and the optimizer chosen. Stale gradients act like a
/// delayed feedback loop: a step size that is stable synchronously oscillates and
/// diverges under delay (bench/README.md "delay"). Adaptive Braking
/// (`OptimizerAlgorithm.adaptiveBraking`, BC_OPTIM_ADABRAKE, alpha 0.5) damps the component of
/// the momentum that points against the current gradient and is the recommended
/// optimizer with D > 0: on bench/delay.c's noisy quadratic it stays stable at about
/// twice SGD-momentum's learning rate under delay and reaches a lower loss (alpha 1
/// brakes too hard); on a small MLP tuned SGD-momentum did as well, so it is a
/// recommendation for noisy, badly conditioned problems, not a guarantee.
///
/// A non-finite gradient is refused when pushed (`.nonFinite`, the FIFO and weights
/// unchanged), so the FIFO only holds finite gradients. Memory: D × the gradients' bytes
/// (`TrainerMemory.delayedGradients`), allocated when the trainer is made. Checkpoints
/// save the FIFO (`delayed.safetensors`, oldest first, with the target counts in
/// trainer.json), so a resumed run continues bit-identically.
package final class GradientDelayQueue {
    /// The bound D (1...maxDelay).
    package let delay: Int
    /// Floats of one slot: the trainable tensors' gradients, concatenated in parameter order.
    let floats: Int
    /// D slots [delay × floats].
    let storage: UnsafeMutablePointer<Float>
    /// Target counts of the held gradients, oldest first (count ≤ delay).
    package private(set) var targets: [Int] = []
    /// The slot of the oldest held gradient.
    var head = 0

    package static let maxDelay = 64

    init(delay: Int, floats: Int) {
        self.delay = delay
        self.floats = floats
        storage = .allocate(capacity: delay * floats)
        storage.initialize(repeating: 0, count: delay * floats)
    }

    deinit { storage.deallocate() }

    /// Gradients held (0...delay).
    package var count: Int { targets.count }

    /// The slot `i` places after the oldest.
    func slot(_ i: Int) -> UnsafeMutablePointer<Float> { storage + ((head + i) % delay) * floats }
}

extension Trainer {
    /// Whether the last `step` applied a gradient (false during the first D steps of a
    /// delayed trainer, and after a failed step).
    package var lastStepApplied: Bool { delayState.lastApplied }

    /// Gradients the delay FIFO holds (0 with no delay).
    package var delayedCount: Int { delayState.queue?.count ?? 0 }

    /// `step` with D > 0 (totals already all-reduced and checked): pushes the accumulated
    /// gradient, and applies the one from D steps ago when there is one. A failed
    /// optimizer step leaves the FIFO, the weights and the optimizer state as they were.
    func delayedStep(_ q: GradientDelayQueue, _ optimizer: Optimizer, totals: TrainingTotals,
                     options o: OptimizerStepOptions) throws -> OptimizerStepReport {
        for p in parameters {
            guard let g = p.gradient else { throw BatchCoreError(.internal, "\(p.name) is not trainable") }
            for i in 0..<p.count where !g[i].isFinite {
                throw BatchCoreError(.nonFinite, "non-finite gradient in \(p.name); step skipped, nothing pushed")
            }
        }
        if q.count < q.delay {
            let dst = q.slot(q.count)
            var off = 0
            for p in parameters { (dst + off).update(from: p.gradient!, count: p.count); off += p.count }
            q.appendTargets(totals.targets)
            return OptimizerStepReport(gradNorm: .nan, clipCoefficient: 1, step: optimizer.groups.first?.step ?? 0)
        }
        // Swap the oldest slot with the accumulator: the optimizer reads g_{t-D} from the
        // gradient buffers it holds; the slot keeps g_t and becomes the newest.
        let oldTargets = q.targets[0]
        swapOldest(q)
        var opts = o
        opts.gradScale = o.gradScale / Double(oldTargets)
        opts.checkFinite = true
        do {
            let report = try withBatchLearningRate(optimizer) { try optimizer.step(opts) }
            q.rotate(newTargets: totals.targets)
            delayState.lastApplied = true
            try syncWeights()
            return report
        } catch {
            swapOldest(q)   // the same swap undoes it
            throw error
        }
    }

    private func swapOldest(_ q: GradientDelayQueue) {
        var s = q.slot(0)
        for p in parameters {
            let g = p.gradient!
            for i in 0..<p.count { let t = g[i]; g[i] = s[i]; s[i] = t }
            s += p.count
        }
    }

    // MARK: checkpoint

    /// trainer.json "gradient_delay" and the tensors of delayed.safetensors (nil: no delay).
    func delayCheckpoint() throws -> (JSONValue, SafetensorsWriter)? {
        guard let q = delayState.queue else { return nil }
        var o = JSONObject()
        o["delay"] = .int(Int64(q.delay))
        o["targets"] = .array(q.targets.map { .int(Int64($0)) })
        var w = SafetensorsWriter()
        w.metadata["format"] = Self.checkpointFormat
        for k in 0..<q.count {
            var s = q.slot(k)
            for p in parameters {
                try w.add("delayed.\(k).\(p.name)", shape: p.shape, dtype: .f32, data: Array(UnsafeBufferPointer(start: s, count: p.count)))
                s += p.count
            }
        }
        return (.object(o), w)
    }

    /// Checks a checkpoint's delay state against this trainer (same D; every tensor
    /// present with its shape) and returns what `restoreDelay` sets. Changes nothing.
    func readDelayCheckpoint(_ v: JSONValue?, dir: String) throws -> (targets: [Int], file: SafetensorsFile?) {
        let saved = v == nil ? 0 : (v?["delay"]?.intValue ?? -1)
        guard saved == options.gradientDelay else {
            throw BatchCoreError.invalid("checkpoint: made with gradient delay \(saved), this trainer has \(options.gradientDelay)")
        }
        guard let v, saved > 0 else { return ([], nil) }
        guard case .array(let a)? = v["targets"], a.count <= saved else {
            throw BatchCoreError.format("checkpoint: gradient_delay.targets is missing or too long")
        }
        var targets: [Int] = []
        for x in a {
            guard let n = x.intValue, n > 0, n <= Int(Int32.max) * 1024 else {
                throw BatchCoreError.format("checkpoint: gradient_delay.targets holds a bad count")
            }
            targets.append(n)
        }
        let st = try SafetensorsFile(path: dir + "/delayed.safetensors")
        guard st.tensors.count == targets.count * parameters.count else {
            throw BatchCoreError.format("checkpoint: delayed.safetensors has \(st.tensors.count) tensors, expected \(targets.count * parameters.count)")
        }
        for k in 0..<targets.count {
            for p in parameters {
                guard let t = st.tensor(named: "delayed.\(k).\(p.name)"), t.dtype == .f32, t.shape == p.shape else {
                    throw BatchCoreError.format("checkpoint: delayed gradient '\(p.name)' of slot \(k) missing or not F32 \(p.shape)")
                }
            }
        }
        return (targets, st)
    }

    /// Sets the FIFO from a checked checkpoint (`readDelayCheckpoint`).
    func restoreDelay(_ r: (targets: [Int], file: SafetensorsFile?)) throws {
        guard let q = delayState.queue, let st = r.file else { return }
        q.head = 0
        for k in 0..<r.targets.count {
            var s = q.slot(k)
            for p in parameters { try st.floats("delayed.\(k).\(p.name)", into: s); s += p.count }
        }
        q.setTargets(r.targets)
    }
}

extension GradientDelayQueue {
    func appendTargets(_ n: Int) { targets.append(n) }
    /// After the oldest slot took the newest gradient: it becomes the newest.
    func rotate(newTargets: Int) {
        targets.removeFirst()
        targets.append(newTargets)
        head = (head + 1) % delay
    }
    func setTargets(_ t: [Int]) { targets = t }
}

/// The trainer's delay state: the FIFO (nil with D = 0) and whether the last step applied.
package final class TrainerDelayState {
    package let queue: GradientDelayQueue?
    package var lastApplied = true
    init(delay: Int, floats: Int) {
        queue = delay > 0 ? GradientDelayQueue(delay: delay, floats: floats) : nil
    }
}
