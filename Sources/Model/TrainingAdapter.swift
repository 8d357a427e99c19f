import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

/// A LoRA adapter being trained on output rows `firstRow ..< firstRow + slot.rows` of a
/// projection (all its columns): an adapter on q alone is one on rows 0..<d of the
/// stacked qkv projection, on k rows d..<d + kvd, and so on.
///
/// LoRA dropout (PEFT's `lora_dropout`): with probability `dropout` > 0, each value of the
/// low-rank path's input x is dropped (the others scaled by 1/(1 − p)) — in a training
/// pass only, where `pass` holds that micro-batch's mask key (`DropoutOp`, keyed by the
/// pass's (seed, step, micro-batch) and this adapter's (layer, module)); evaluation and
/// serving leave `pass` nil and run the adapter on x itself.
package struct TrainingAdapter {
    package let slot: LoRASlot
    package let firstRow: Int
    /// Dropout probability of the adapter's input, 0 ≤ p < 1.
    package let dropout: Double
    /// The model layer and module (`LoRATarget.rawValue`) the adapter belongs to: part of its mask key.
    package let layer: Int
    package let module: Int
    /// The current training pass's mask (set by `Linear.setTrainingDropout`); nil: no dropout.
    package internal(set) var pass: DropoutOp?
    package init(slot: LoRASlot, firstRow: Int, dropout: Double = 0, layer: Int = 0, module: Int = 0) {
        self.slot = slot
        self.firstRow = firstRow
        self.dropout = dropout
        self.layer = layer
        self.module = module
    }
}

/// What identifies one training pass's dropout masks: the trainer's seed, optimizer step
/// and micro-batch (global index within the step). Every adapter adds its layer and module.
package struct LoRADropoutPass: Equatable, Sendable {
    package var seed: UInt64
    package var step: Int
    package var microBatch: Int
    package init(seed: UInt64, step: Int, microBatch: Int) {
        self.seed = seed
        self.step = step
        self.microBatch = microBatch
    }

    /// The mask of the adapter on (layer, module) with probability p.
    package func mask(p: Double, layer: Int, module: Int) -> DropoutOp {
        DropoutOp(p: p, key: DropoutOp.key([seed, UInt64(truncatingIfNeeded: step), UInt64(truncatingIfNeeded: microBatch),
                                            UInt64(truncatingIfNeeded: layer), UInt64(truncatingIfNeeded: module)]))
    }
}

extension Linear {
    /// Adds a training adapter on rows `firstRow ..< firstRow + slot.rows`. Throws
    /// `.invalidArgument` when the slot's columns differ, the rows fall outside the
    /// projection, or they overlap another training adapter's rows.
    /// `dropout` (0 ≤ p < 1), `layer`, `module`: see `TrainingAdapter`.
    package func attachTraining(_ slot: LoRASlot, firstRow: Int, dropout: Double = 0, layer: Int = 0, module: Int = 0) throws {
        guard dropout >= 0, dropout < 1 else { throw BatchCoreError.invalid("LoRA dropout \(dropout) outside 0 ≤ p < 1") }
        guard slot.cols == cols, firstRow >= 0, firstRow <= rows, slot.rows <= rows - firstRow else {
            throw BatchCoreError.invalid("LoRA adapter \(slot.rows) × \(slot.cols) at row \(firstRow) of a \(rows) × \(cols) projection")
        }
        for t in trainingAdapters where firstRow < t.firstRow + t.slot.rows && t.firstRow < firstRow + slot.rows {
            throw BatchCoreError.invalid("LoRA adapter rows \(firstRow)..<\(firstRow + slot.rows) overlap another adapter's")
        }
        trainingAdapters.append(TrainingAdapter(slot: slot, firstRow: firstRow, dropout: dropout, layer: layer, module: module))
    }

    /// Removes every training adapter.
    package func detachTraining() { trainingAdapters.removeAll() }

    /// Sets the masks of the training adapters with dropout for one training pass
    /// (nil: none — evaluation, and after the pass).
    package func setTrainingDropout(_ pass: LoRADropoutPass?) {
        for i in trainingAdapters.indices {
            let t = trainingAdapters[i]
            trainingAdapters[i].pass = t.dropout > 0 ? pass?.mask(p: t.dropout, layer: t.layer, module: t.module) : nil
        }
    }

    /// T × cols floats of scratch when some adapter drops its input in this pass, else 0.
    func dropoutScratchCount(tokens: Int) -> Int {
        trainingAdapters.contains { $0.pass != nil } ? tokens * cols : 0
    }

    /// The training adapters' part of the forward product over T = `tokens` rows, for
    /// each adapter (A [r × cols], B [rows_a × r], s = scale):
    ///
    ///     u[T × r]                       = x[T × cols] · Aᵀ
    ///     y[T × first ..< first+rows_a] += s · u · Bᵀ
    ///
    /// With dropout in this pass (`TrainingAdapter.pass`), x is replaced by the dropped
    /// input xd = mask ⊙ x / (1 − p) (`DropoutOp.forward`) in the first line.
    ///
    /// Both products are `ProjectionBackward.inputGradient` over A and B transposed
    /// (`AdapterScratch`): every value is ONE float32 fused multiply-add chain in
    /// ascending order over its reduction index (y's starting from y's value), so a row's
    /// result does not depend on the other rows or the thread count. Nothing happens
    /// with no adapter.
    package func forwardTrainingAdapters(_ x: UnsafePointer<Float>, ldx: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int,
                                         tokens: Int) throws {
        guard !trainingAdapters.isEmpty, tokens > 0 else { return }
        let scratch = try AdapterScratch(self, tokens: tokens)
        for t in trainingAdapters {
            let s = t.slot, u = scratch.u
            if let mask = t.pass, let xd = scratch.xd {
                mask.forward(x, ldx: ldx, xd, ldy: cols, rows: tokens, cols: cols)
                scratch.latents(xd, ldx: cols, s, tokens: tokens)
            } else {
                scratch.latents(x, ldx: ldx, s, tokens: tokens)
            }
            let rank = s.rank, scale = s.scale
            for i in 0..<(tokens * rank) { u[i] *= scale }
            if bf16 != nil {
                // bf16 compute: y[:, first ..< first + rows_a] += (s·u) · Bᵀ in bf16.
                BF16GEMM.product(.rows(u, ld: rank), .rows(s.b, ld: rank), m: tokens, n: s.rows, steps: rank,
                                 y + t.firstRow, ldc: ldy, accumulate: true)
                continue
            }
            // y[:, first ..< first + rows_a] += (s·u) · Bᵀ, Bᵀ [r × rows_a].
            let bT = scratch.transposed(s.b, rows: s.rows, cols: rank)
            ProjectionBackward.inputGradient(u, ldDY: rank, tokens: tokens, weight: bT, rows: rank, cols: s.rows,
                                             y + t.firstRow, ldDX: ldy, accumulate: true)
        }
    }
}

/// Scratch of one adapter forward or backward call over T tokens of a projection:
/// u [T × rMax], g [T × rMax], a transposed factor [max(r·cols, rows·r)], and, when some
/// adapter drops its input in this pass, xd [T × cols]. Freed with the object.
final class AdapterScratch {
    let u: UnsafeMutablePointer<Float>
    let g: UnsafeMutablePointer<Float>
    let t: UnsafeMutablePointer<Float>
    let xd: UnsafeMutablePointer<Float>?
    /// The projection computes in bf16 (`Linear.bf16`): so do its adapters' products.
    let bf16: Bool

    init(_ m: Linear, tokens: Int) throws {
        let rMax = m.trainingAdapters.map(\.slot.rank).max() ?? 1
        let tMax = m.trainingAdapters.map { $0.slot.rank * max($0.slot.rows, $0.slot.cols) }.max() ?? 1
        let xdCount = m.dropoutScratchCount(tokens: tokens)
        // One allocation: a failure leaves nothing behind.
        let total = 2 * tokens * rMax + tMax + xdCount
        let base = try Memory.allocateFloats(total, fill: 0)
        bf16 = m.bf16 != nil
        u = base
        g = base + tokens * rMax
        t = g + tokens * rMax
        xd = xdCount > 0 ? t + tMax : nil
    }

    deinit { free(u) }

    /// Mᵀ [cols × rows] of a row-major M [rows × cols] in `t`.
    func transposed(_ m: UnsafePointer<Float>, rows: Int, cols: Int) -> UnsafeMutablePointer<Float> {
        for r in 0..<rows { for c in 0..<cols { t[c * rows + r] = m[r * cols + c] } }
        return t
    }

    /// u[T × r] = x[T × cols] · Aᵀ (row stride r): `ProjectionBackward.inputGradient`
    /// over Aᵀ [cols × r], one ascending float32 chain over the columns per value.
    func latents(_ x: UnsafePointer<Float>, ldx: Int, _ s: LoRASlot, tokens: Int) {
        if bf16 {
            BF16GEMM.product(.rows(x, ld: ldx), .rows(s.a, ld: s.cols), m: tokens, n: s.rank, steps: s.cols, u, ldc: s.rank,
                             accumulate: false)
            return
        }
        let aT = transposed(s.a, rows: s.rank, cols: s.cols)
        ProjectionBackward.inputGradient(x, ldDY: ldx, tokens: tokens, weight: aT, rows: s.cols, cols: s.rank, u, ldDX: s.rank)
    }
}
