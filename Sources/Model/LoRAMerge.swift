import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

/// Merging LoRA adapters into the base weights, per adapter (A [r × cols], B [rows_a × r],
/// s = slot scale, f = the caller's factor) at its rows `first ..< first + rows_a` of the
/// projection W [rows × cols]:
///
///     W[first + o][c] += f · s · Σ_j B[o][j] · A[j][c]
///
/// The sum is in double, ascending j, and W rounds once to float32 per value, so a value
/// does not depend on the thread count or the other rows. Unmerging is merging with −f:
/// W comes back within 2 ulp of max(|W|, |W + ΔW|) (float32 rounding twice), not bit-exact;
/// `withMerged` restores the exact bits.
extension LoRAAdapterSet {
    /// Adds f·ΔW of every adapter to `weights`' projections (the packed base and, when a
    /// projection is trainable, its trainable copy). Throws `.invalidArgument` for a
    /// non-finite factor or a model of another shape; checks everything before changing
    /// anything.
    package func merge(into weights: ModelWeights, factor: Float) throws {
        guard factor.isFinite else { throw BatchCoreError.invalid("LoRA merge: factor \(factor) is not finite") }
        let located = try locate(in: weights)
        try Self.requireFloatBases(located.map { $0.1 })
        // One projection at a time: unpack (or use the trainable copy), add, repack.
        var byProjection: [ObjectIdentifier: (Linear, [(LoRASlot, Int)])] = [:]
        var order: [ObjectIdentifier] = []
        for (slot, m, first) in located {
            let id = ObjectIdentifier(m)
            if byProjection[id] == nil { order.append(id); byProjection[id] = (m, []) }
            byProjection[id]!.1.append((slot, first))
        }
        // The one allocation first, so nothing fails after the first projection changed.
        let largest = order.map { byProjection[$0]!.0.count }.max() ?? 0
        let scratch = try Memory.allocateFloats(max(largest, 1), fill: 0)
        defer { free(scratch) }
        for id in order {
            let (m, list) = byProjection[id]!
            try m.updateRowMajor(scratch: scratch) { w in
                for (slot, first) in list { Self.addDelta(slot, factor: factor, to: w + first * m.cols) }
            }
        }
        withExtendedLifetime(self) {}
    }

    /// Subtracts f·ΔW (merge with −f).
    package func unmerge(from weights: ModelWeights, factor: Float) throws {
        try merge(into: weights, factor: -factor)
    }

    /// Runs `body` with the adapters merged (factor f) into `weights`, then puts the
    /// exact original bits back (also when `body` throws).
    package func withMerged<R>(into weights: ModelWeights, factor: Float, _ body: () throws -> R) throws -> R {
        let located = try locate(in: weights)
        var projections: [Linear] = []
        for (_, m, _) in located where !projections.contains(where: { $0 === m }) { projections.append(m) }
        try Self.requireFloatBases(projections)
        var saved: [UnsafeMutablePointer<Float>] = []
        defer { for p in saved { free(p) } }
        for m in projections {
            let p = try Memory.allocateFloats(m.count, fill: 0)
            saved.append(p)
            if let w = m.weight { p.update(from: w, count: m.count) } else { m.packed?.unpack(into: p) }
        }
        try merge(into: weights, factor: factor)
        defer {
            for (m, p) in zip(projections, saved) { m.restoreRowMajor(p) }
        }
        return try body()
    }

    /// Merging rewrites W in f32: a base kept in quantized blocks is refused (nothing changed).
    private static func requireFloatBases(_ projections: [Linear]) throws {
        if projections.contains(where: { $0.packed == nil }) {
            throw BatchCoreError(.unsupported, "merging a LoRA adapter needs f32 weights; the model keeps quantized blocks "
                                 + "(load it with weights = BC_MODEL_WEIGHTS_F32)")
        }
    }

    /// (slot, projection, first row) of every adapter, checked against `weights`.
    private func locate(in weights: ModelWeights) throws -> [(LoRASlot, Linear, Int)] {
        guard weights.config.layerCount == model.layerCount, weights.config.embeddingDim == model.embeddingDim,
              weights.config.kvDim == model.kvDim, weights.config.feedForwardDim == model.feedForwardDim else {
            throw BatchCoreError.invalid("LoRA adapters made for another model shape")
        }
        return try entries.map { e in
            guard case .rows(let m, let first) = weights.location(of: LlamaTensorName(tensor: e.target.tensor, layer: e.layer)),
                  m.cols == e.slot.cols, first >= 0, e.slot.rows <= m.rows - first else {
                throw BatchCoreError(.internal, "LoRA target \(e.target) is not a projection of its shape")
            }
            return (e.slot, m, first)
        }
    }

    /// w[o][c] += f · s · Σ_j B[o][j]·A[j][c] over the slot's rows × cols (row stride cols).
    static func addDelta(_ s: LoRASlot, factor: Float, to w: UnsafeMutablePointer<Float>) {
        let rank = s.rank, cols = s.cols, a = s.a, b = s.b
        let k = Double(factor) * Double(s.scale)
        forEachRowBlock(s.rows, block: 4) { range in
            let acc = UnsafeMutablePointer<Double>.allocate(capacity: cols)
            defer { acc.deallocate() }
            for o in range {
                acc.initialize(repeating: 0, count: cols)
                for j in 0..<rank {
                    let bj = Double(b[o * rank + j]), aj = a + j * cols
                    for c in 0..<cols { acc[c] += bj * Double(aj[c]) }
                }
                let wo = w + o * cols
                for c in 0..<cols { wo[c] = Float(Double(wo[c]) + k * acc[c]) }
            }
        }
    }
}

extension Linear {
    /// Lets `body` change W row-major [rows × cols] in place: the trainable copy when
    /// there is one, else W unpacked into `scratch` (≥ rows × cols floats); then repacks.
    /// Throws `.unsupported` (nothing changed) when the base is kept in quantized blocks.
    package func updateRowMajor(scratch: UnsafeMutablePointer<Float>, _ body: (UnsafeMutablePointer<Float>) -> Void) throws {
        guard let packed else { throw BatchCoreError(.unsupported, "a quantized projection cannot be rewritten in f32") }
        if let w = weight {
            body(w)
            packed.repack(from: w)
            return
        }
        packed.unpack(into: scratch)
        body(scratch)
        packed.repack(from: scratch)
    }

    /// Sets W to `w` (row-major rows × cols): the trainable copy if any, and the packed one.
    /// Callers check that the base is f32 (`packed`) first; a quantized base is left as is.
    package func restoreRowMajor(_ w: UnsafePointer<Float>) {
        if let t = weight { t.update(from: w, count: count) }
        packed?.repack(from: w)
    }
}
