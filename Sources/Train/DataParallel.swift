import BCCore
import BCModel

/// The collective operations a data-parallel trainer calls, supplied by the caller (MPI,
/// NCCL, sockets, an in-process fake): the library links no communication library.
/// Every rank must make the same calls in the same order with the same sizes.
package struct TrainerCollectives {
    /// This process's rank, 0 ..< worldSize.
    package var rank: Int
    /// Ranks taking part (1 ... maxWorldSize).
    package var worldSize: Int
    /// Sums `n` floats element-wise over all ranks; every rank gets the sum in place.
    /// Throws on failure (the trainer then fails the call).
    package var allReduceSum: (_ buffer: UnsafeMutablePointer<Float>, _ n: Int) throws -> Void
    /// Copies `bytes` bytes of rank `root`'s buffer into every other rank's buffer.
    package var broadcast: (_ buffer: UnsafeMutableRawPointer, _ bytes: Int, _ root: Int) throws -> Void

    /// Floats per gradient bucket (the C ABI uses `Trainer.bucketFloats`; tests use small odd ones).
    package var bucketFloats = Trainer.bucketFloats

    /// Ranks the exact integer reduction supports (base-4096 digits summed in float32).
    package static let maxWorldSize = 4096

    package init(rank: Int, worldSize: Int,
                 allReduceSum: @escaping (UnsafeMutablePointer<Float>, Int) throws -> Void,
                 broadcast: @escaping (UnsafeMutableRawPointer, Int, Int) throws -> Void) {
        self.rank = rank
        self.worldSize = worldSize
        self.allReduceSum = allReduceSum
        self.broadcast = broadcast
    }
}

/// Data-parallel training: every rank holds the same weights and optimizer state, runs
/// its share of each global step's micro-batches, and before the optimizer step the
/// gradients and the step's totals are summed over all ranks (`allReduceStep`), so every
/// rank divides by the GLOBAL target count and takes the same step.
///
/// Gradient buckets: the trainable tensors' gradients, in `parameters` order, are seen as
/// one array of P floats cut into consecutive buckets of `bucketFloats` floats (the last
/// shorter); a bucket inside one tensor is reduced in place, one spanning tensors through
/// a staging buffer. The order and the sizes depend only on the model, so the reduction
/// (and its float sums) do not depend on timing. Per step: ceil(P / bucketFloats) gradient
/// calls of together 4·P bytes, plus one 14-float call for the totals.
///
/// Data: with `accumulationSteps` = a, a global step is a × worldSize micro-batches of the
/// packer; rank r runs micro-batches r·a ..< (r+1)·a of it. A run on W ranks with
/// accumulation a takes the same steps as one on 1 rank with accumulation a·W.
extension Trainer {
    /// Floats per gradient bucket (16 MiB).
    package static let bucketFloats = 1 << 22

    /// Ranks of the data-parallel group (1 without collectives).
    package var worldSize: Int { collectives?.worldSize ?? 1 }
    /// This trainer's rank (0 without collectives).
    package var rank: Int { collectives?.rank ?? 0 }
    /// Micro-batches of one global step: accumulation steps × ranks.
    package var globalAccumulationSteps: Int { options.accumulationSteps * worldSize }

    /// Gradient buckets per step for `parameterCount` trainable floats.
    package static func bucketCount(parameterCount: Int) -> Int {
        (parameterCount + bucketFloats - 1) / bucketFloats
    }

    /// Joins a data-parallel group (nil: leaves it). Checks that the callbacks work and
    /// agree (every rank reports the same world size, the ranks are 0 ..< W) and that every
    /// rank holds the same weights as rank 0 (a digest of every tensor, broadcast from rank 0
    /// and compared; a mismatch anywhere fails on every rank). Only before data is loaded
    /// and with nothing pending. A failure (a callback error, a mismatch) changes nothing.
    package func setCollectives(_ c: TrainerCollectives?) throws {
        guard data == nil else { throw BatchCoreError.badState("set the collectives before loading data (the data is sharded by rank)") }
        guard pending.microBatches == 0 else { throw BatchCoreError.badState("micro-batches are pending: step or discard them first") }
        guard let c else { collectives = nil; return }
        guard batch.controller == nil else {
            throw BatchCoreError(.unsupported, "data-parallel training with batch-size control is not supported yet "
                                 + "(every rank would have to agree on the next batch): set a fixed batch first")
        }
        guard c.worldSize >= 1, c.worldSize <= TrainerCollectives.maxWorldSize else {
            throw BatchCoreError.invalid("world size \(c.worldSize) outside 1...\(TrainerCollectives.maxWorldSize)")
        }
        guard c.bucketFloats >= 1, c.bucketFloats <= 1 << 30 else { throw BatchCoreError.invalid("bucket of \(c.bucketFloats) floats") }
        guard c.rank >= 0, c.rank < c.worldSize else { throw BatchCoreError.invalid("rank \(c.rank) outside 0..<\(c.worldSize)") }
        // Every rank adds 1 and its rank: the sums are W and W(W-1)/2 iff the group agrees.
        var probe: [Float] = [1, Float(c.rank)]
        try probe.withUnsafeMutableBufferPointer { try callReduce(c, $0.baseAddress!, 2) }
        let w = Float(c.worldSize)
        guard probe[0] == w, probe[1] == w * (w - 1) / 2 else {
            throw BatchCoreError.invalid("the all-reduce disagrees with world size \(c.worldSize) and rank \(c.rank) "
                + "(sums \(probe[0]), \(probe[1])): every rank must pass the same world size and a distinct rank")
        }
        // Weights: rank 0's digests against ours; the mismatch count is summed so all agree.
        try prepareTraining()
        let mine = parameters.map { p in p.values.map { Self.digest($0, p.count) } ?? 0 }
        var root = mine
        try root.withUnsafeMutableBytes { b in
            do { try c.broadcast(b.baseAddress!, b.count, 0) } catch {
                throw BatchCoreError(.io, "the broadcast callback failed: \(error)")
            }
        }
        let mismatched = zip(mine, root).filter { $0 != $1 }.count
        var flag: [Float] = [mismatched > 0 ? 1 : 0]
        try flag.withUnsafeMutableBufferPointer { try callReduce(c, $0.baseAddress!, 1) }
        guard flag[0] == 0 else {
            throw BatchCoreError.invalid("the ranks' weights differ (\(Int(flag[0])) rank(s) differ from rank 0"
                + (mismatched > 0 ? ", this one in \(mismatched) tensor(s)" : "") + "): load the same model (and LoRA seed) on every rank")
        }
        collectives = c
    }

    /// This rank's micro-batches of a global step (`globalAccumulationSteps` of them, fewer
    /// at the end of the data: a rank may get none). One process: all of them (a batch-size
    /// controller may ask for more than `accumulationSteps`).
    package func localMicroBatches(_ all: [MicroBatch]) -> ArraySlice<MicroBatch> {
        guard collectives != nil else { return all[...] }
        let a = options.accumulationSteps
        let lo = min(all.count, rank * a), hi = min(all.count, lo + a)
        return all[lo..<hi]
    }

    /// Sums `local` (this rank's totals) and every gradient over the ranks; returns the
    /// global totals. Called by `step` before the optimizer; on a callback error the
    /// gradients are partly reduced (the step then discards them) and nothing else changed.
    package func allReduceStep(_ local: TrainingTotals) throws -> TrainingTotals {
        guard let c = collectives else { return local }
        // Totals: the loss as float hi + lo; counts as 4 base-4096 digits (exact sums).
        let hi = Float(local.lossSum), lo = Float(local.lossSum - Double(hi))
        var t: [Float] = [hi, lo]
        for v in [local.targets, local.tokens, local.microBatches] {
            guard v >= 0, v < 1 << 48 else { throw BatchCoreError.invalid("step totals \(v) outside 0..<2^48") }
            for k in 0..<3 { t.append(Float((v >> (12 * k)) & 0xFFF)) }
            t.append(Float(v >> 36))
        }
        try t.withUnsafeMutableBufferPointer { try callReduce(c, $0.baseAddress!, $0.count) }
        func count(_ at: Int) -> Int {
            (0..<4).reduce(0) { $0 + Int(t[at + $1]) << (12 * $1) }
        }
        var g = TrainingTotals()
        g.lossSum = Double(t[0]) + Double(t[1])
        g.targets = count(2)
        g.tokens = count(6)
        g.microBatches = count(10)
        try reduceGradients(c)
        return g
    }

    /// The gradient buckets, in order (see the type's notes).
    private func reduceGradients(_ c: TrainerCollectives) throws {
        let grads = try parameters.map { p -> (UnsafeMutablePointer<Float>, Int) in
            guard let g = p.gradient else { throw BatchCoreError(.internal, "\(p.name) has no gradient") }
            return (g, p.count)
        }
        let total = grads.reduce(0) { $0 + $1.1 }
        let bucket = c.bucketFloats
        var staging: UnsafeMutablePointer<Float>?
        defer { staging?.deallocate() }
        var tensor = 0, offset = 0   // where the next bucket starts
        var start = 0
        while start < total {
            let n = min(bucket, total - start)
            while offset == grads[tensor].1 { tensor += 1; offset = 0 }
            if grads[tensor].1 - offset >= n {
                try callReduce(c, grads[tensor].0 + offset, n)
                offset += n
            } else {
                if staging == nil { staging = .allocate(capacity: bucket) }
                let s = staging!
                var (ti, off, k) = (tensor, offset, 0)
                while k < n {
                    if off == grads[ti].1 { ti += 1; off = 0; continue }
                    let m = min(n - k, grads[ti].1 - off)
                    (s + k).update(from: grads[ti].0 + off, count: m)
                    k += m; off += m
                }
                try callReduce(c, s, n)
                (ti, off, k) = (tensor, offset, 0)
                while k < n {
                    if off == grads[ti].1 { ti += 1; off = 0; continue }
                    let m = min(n - k, grads[ti].1 - off)
                    (grads[ti].0 + off).update(from: s + k, count: m)
                    k += m; off += m
                }
                (tensor, offset) = (ti, off)
            }
            start += n
        }
    }

    private func callReduce(_ c: TrainerCollectives, _ p: UnsafeMutablePointer<Float>, _ n: Int) throws {
        do { try c.allReduceSum(p, n) } catch {
            throw BatchCoreError(.io, "the all-reduce callback failed (\(n) floats): \(error)")
        }
    }

    /// A 64-bit FNV-1a digest of a tensor's bits (equality check of replicas).
    static func digest(_ v: UnsafeMutablePointer<Float>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        UnsafeRawPointer(v).withMemoryRebound(to: UInt32.self, capacity: n) { w in
            for i in 0..<n { h = (h ^ UInt64(w[i])) &* 0x100_0000_01b3 }
        }
        return h
    }
}
