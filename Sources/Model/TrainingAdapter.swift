import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

/// A LoRA adapter being trained on output rows `firstRow ..< firstRow + slot.rows` of a
/// projection (all its columns): an adapter on q alone is one on rows 0..<d of the
/// stacked qkv projection, on k rows d..<d + kvd, and so on.
package struct TrainingAdapter {
    package let slot: LoRASlot
    package let firstRow: Int
    package init(slot: LoRASlot, firstRow: Int) {
        self.slot = slot
        self.firstRow = firstRow
    }
}

extension Linear {
    /// Adds a training adapter on rows `firstRow ..< firstRow + slot.rows`. Throws
    /// `.invalidArgument` when the slot's columns differ, the rows fall outside the
    /// projection, or they overlap another training adapter's rows.
    package func attachTraining(_ slot: LoRASlot, firstRow: Int) throws {
        guard slot.cols == cols, firstRow >= 0, firstRow <= rows, slot.rows <= rows - firstRow else {
            throw BatchCoreError.invalid("LoRA adapter \(slot.rows) × \(slot.cols) at row \(firstRow) of a \(rows) × \(cols) projection")
        }
        for t in trainingAdapters where firstRow < t.firstRow + t.slot.rows && t.firstRow < firstRow + slot.rows {
            throw BatchCoreError.invalid("LoRA adapter rows \(firstRow)..<\(firstRow + slot.rows) overlap another adapter's")
        }
        trainingAdapters.append(TrainingAdapter(slot: slot, firstRow: firstRow))
    }

    /// Removes every training adapter.
    package func detachTraining() { trainingAdapters.removeAll() }

    /// The training adapters' part of the forward product over T = `tokens` rows, for
    /// each adapter (A [r × cols], B [rows_a × r], s = scale):
    ///
    ///     u[T × r]                       = x[T × cols] · Aᵀ
    ///     y[T × first ..< first+rows_a] += s · u · Bᵀ
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
        for t in trainingAdapters {
            let s = t.slot
            Self.latents(x, ldx: ldx, s, tokens: tokens, u)
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
