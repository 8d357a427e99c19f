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
    /// Each value is one ascending-order sum of its own row (`Reductions.dot` for u, in
    /// double; then a float32 chain over the r latents), so a row's result does not
    /// depend on the other rows or the thread count. Nothing happens with no adapter.
    package func forwardTrainingAdapters(_ x: UnsafePointer<Float>, ldx: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int,
                                         tokens: Int) throws {
        guard !trainingAdapters.isEmpty, tokens > 0 else { return }
        let rMax = trainingAdapters.map(\.slot.rank).max() ?? 1
        let u = try Memory.allocateFloats(tokens * rMax, fill: 0)
        defer { free(u) }
        let xdCount = dropoutScratchCount(tokens: tokens)
        let xd = xdCount > 0 ? try Memory.allocateFloats(xdCount, fill: 0) : nil
        defer { free(xd) }
        for t in trainingAdapters {
            let s = t.slot
            if let mask = t.pass, let xd {
                mask.forward(x, ldx: ldx, xd, ldy: cols, rows: tokens, cols: cols)
                Self.latents(xd, ldx: cols, s, tokens: tokens, u)
            } else {
                Self.latents(x, ldx: ldx, s, tokens: tokens, u)
            }
            let rank = s.rank, outRows = s.rows, b = s.b, scale = s.scale, yy = y + t.firstRow
            forEachRowBlock(tokens, block: 8) { range in
                for i in range {
                    let ui = u + i * rank, yi = yy + i * ldy
                    for o in 0..<outRows {
                        let bo = b + o * rank
                        var acc: Float = 0
                        for j in 0..<rank { acc += bo[j] * ui[j] }
                        yi[o] += scale * acc
                    }
                }
            }
        }
    }

    /// u[T × r] = x[T × cols] · Aᵀ (row stride r), one double dot per value.
    static func latents(_ x: UnsafePointer<Float>, ldx: Int, _ s: LoRASlot, tokens: Int, _ u: UnsafeMutablePointer<Float>) {
        let rank = s.rank, cols = s.cols, a = s.a
        forEachRowBlock(tokens, block: 8) { range in
            for i in range {
                for j in 0..<rank { u[i * rank + j] = Float(Reductions.dot(a + j * cols, x + i * ldx, cols)) }
            }
        }
    }
}
