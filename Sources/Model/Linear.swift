import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

/// A projection weight W [rows × cols] (row o = output feature o; ggml's [ne1][ne0]):
/// y[T × rows] = x[T × cols] · Wᵀ.
///
/// Holds three things:
/// - the base weight, either packed float32 for the projection kernel (`PackedWeights`)
///   or ggml blocks (`QuantizedWeights`, products through `QuantGEMM`). It is the only
///   copy of W unless a trainable copy is asked for, so a loaded model holds its
///   projections once;
/// - optionally a trainable row-major float32 copy `weight` [rows × cols] with its
///   gradient `grad` [rows × cols] (`makeTrainable`, `syncPacked`, `dropTrainable`);
/// - low-rank adapter slots (`adapters`, see `LoRASlot`), applied per segment of rows
///   after the base product over all rows (Punica's SGMV idea).
///
/// Products only read the instance; `makeTrainable`, `syncPacked`, `dropTrainable` and
/// changes to `adapters` mutate it and must not run while a forward pass uses it.
package final class Linear {
    package let rows: Int
    package let cols: Int
    /// The base weight in the projection kernel's layout; nil when it is `quantized`.
    package let packed: PackedWeights?
    /// The base weight in a ggml block format; nil when it is `packed`. A quantized
    /// projection cannot be made trainable (training needs float32 weights).
    package let quantized: QuantizedWeights?
    /// The trainable copy of W, row-major [rows × cols]; nil unless `makeTrainable()`.
    package private(set) var weight: UnsafeMutablePointer<Float>?
    /// The gradient of W, row-major [rows × cols]; nil unless `makeTrainable()`.
    package private(set) var grad: UnsafeMutablePointer<Float>?
    /// Adapter slots; `forward(..., segments:)` names them by index. Each slot's shape
    /// must be rows × cols (`attach` checks it).
    package private(set) var adapters: [LoRASlot] = []
    /// Adapters being trained, each on a run of output rows (`TrainingAdapter`); applied
    /// only by passes that ask for them (training and evaluation), never when serving.
    package internal(set) var trainingAdapters: [TrainingAdapter] = []
    /// W rounded to bf16 for training's bf16 mode (`enableBF16`): training and evaluation
    /// passes (`trainingForward`, `backward`) then run their products in bf16 with
    /// float32 sums; serving products never read it. nil otherwise.
    package private(set) var bf16: BF16Weights?

    /// Packs `w` (row-major rows × cols).
    package init(rows: Int, cols: Int, rowMajor w: UnsafePointer<Float>) throws {
        self.rows = rows
        self.cols = cols
        packed = try PackedWeights(w, rows: rows, cols: cols)
        quantized = nil
    }

    /// A projection whose base weight stays in its block format.
    package init(quantized q: QuantizedWeights) {
        rows = q.rows
        cols = q.cols
        packed = nil
        quantized = q
    }

    /// A matrix whose row-major values `fill` writes into a temporary buffer (zeroed,
    /// rows × cols), which is packed and freed: loaders decode straight into it.
    package convenience init(rows: Int, cols: Int, fill: (UnsafeMutablePointer<Float>) throws -> Void) throws {
        let (count, overflow) = rows.multipliedReportingOverflow(by: cols)
        guard rows >= 0, cols >= 0, !overflow else { throw BatchCoreError.invalid("matrix \(rows) × \(cols) is too large") }
        let tmp = try Memory.allocateFloats(count, fill: 0)
        defer { free(tmp) }
        try fill(tmp)
        try self.init(rows: rows, cols: cols, rowMajor: tmp)
    }

    deinit {
        free(weight)
        free(grad)
    }

    /// Values in W.
    package var count: Int { rows * cols }

    /// The base weight's type name ("F32", "Q4_1", "Q5_0+Q8_0" for a stack of
    /// formats, ...) and the bytes it holds.
    package var storage: (type: String, bytes: Int) {
        if let quantized { return (quantized.typeName, quantized.byteCount) }
        return ("F32", count * 4)
    }

    /// The bytes the base weight holds per type name, each name once.
    package var storageParts: [(type: String, bytes: Int)] {
        if let quantized { return quantized.bytesByFormat }
        return [("F32", count * 4)]
    }

    // MARK: Products

    /// y[t][o] = Σ_k x[t][k] · W[o][k] for t < tokens (row strides `ldx` ≥ cols and
    /// `ldy` ≥ rows) with the packed base weight. Batch invariant (see `PackedGEMM`):
    /// a row's result does not depend on the other rows.
    @inline(__always)
    package func forward(_ x: UnsafePointer<Float>, ldx: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int, tokens: Int) {
        if let packed {
            PackedGEMM.multiply(x, ldx: ldx, tokens: tokens, packed, y, ldy: ldy)
        } else if let quantized {
            QuantGEMM.multiply(x, ldx: ldx, tokens: tokens, quantized, y, ldy: ldy)
        }
    }

    /// The product of training and evaluation passes: `forward` in float32, or in bf16
    /// when `enableBF16` made the bf16 copy (`BF16GEMM.forward`; batch invariant too).
    @inline(__always)
    package func trainingForward(_ x: UnsafePointer<Float>, ldx: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int, tokens: Int) {
        if let bf16 {
            BF16GEMM.forward(x, ldx: ldx, tokens: tokens, bf16, y, ldy: ldy)
        } else {
            forward(x, ldx: ldx, y, ldy: ldy, tokens: tokens)
        }
    }

    /// A run of rows `first ..< first + count` of a product that use adapter `adapter`
    /// (an index into `adapters`). Rows of no segment get the base product only.
    package struct AdapterSegment: Equatable, Sendable {
        package var adapter: Int
        package var first: Int
        package var count: Int
        package init(adapter: Int, first: Int, count: Int) {
            self.adapter = adapter
            self.first = first
            self.count = count
        }
    }

    /// The base product over all `tokens` rows, then for each segment its adapter's
    /// low-rank update (y += scale·(x·Aᵀ)·Bᵀ on the segment's rows). Segments are
    /// checked before anything is written: an adapter index or a row range out of
    /// range, or overlapping segments, throw `.invalidArgument` and leave y untouched.
    /// A row's result depends only on its own input and adapter.
    package func forward(_ x: UnsafePointer<Float>, ldx: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int, tokens: Int,
                        segments: [AdapterSegment]) throws {
        var covered = [(Int, Int)]()
        for s in segments {
            guard s.adapter >= 0, s.adapter < adapters.count else {
                throw BatchCoreError.invalid("adapter \(s.adapter) of a projection with \(adapters.count) adapters")
            }
            guard s.first >= 0, s.count >= 0, s.first <= tokens, s.count <= tokens - s.first else {
                throw BatchCoreError.invalid("adapter segment rows \(s.first) + \(s.count) outside 0..<\(tokens)")
            }
            covered.append((s.first, s.first + s.count))
        }
        covered.sort { $0.0 < $1.0 }
        for i in covered.indices.dropFirst() where covered[i].0 < covered[i - 1].1 {
            throw BatchCoreError.invalid("adapter segments overlap at row \(covered[i].0)")
        }
        forward(x, ldx: ldx, y, ldy: ldy, tokens: tokens)
        for s in segments where s.count > 0 {
            adapters[s.adapter].apply(x + s.first * ldx, ldx: ldx, y + s.first * ldy, ldy: ldy, tokens: s.count)
        }
    }

    /// y[t] += scale · B·(A·x[t]) for the `tokens` rows given (one adapter segment):
    /// the low-rank half of `forward(..., segments:)`, for callers that run the base
    /// product themselves.
    package func addAdapter(_ adapter: Int, _ x: UnsafePointer<Float>, ldx: Int, _ y: UnsafeMutablePointer<Float>,
                           ldy: Int, tokens: Int) throws {
        guard adapter >= 0, adapter < adapters.count else {
            throw BatchCoreError.invalid("adapter \(adapter) of a projection with \(adapters.count) adapters")
        }
        adapters[adapter].apply(x, ldx: ldx, y, ldy: ldy, tokens: tokens)
    }

    // MARK: Adapter slots

    /// Appends `slot` and returns its index. Throws `.invalidArgument` unless the slot
    /// is rows × cols.
    @discardableResult
    package func attach(_ slot: LoRASlot) throws -> Int {
        guard slot.rows == rows, slot.cols == cols else {
            throw BatchCoreError.invalid("LoRA slot \(slot.rows) × \(slot.cols) on a \(rows) × \(cols) projection")
        }
        adapters.append(slot)
        return adapters.count - 1
    }

    /// Removes every adapter slot.
    package func detachAdapters() { adapters.removeAll() }

    // MARK: Row access

    /// Copies row `r` (cols floats) to `out`.
    package func copyRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        if let packed { packed.copyRow(r, into: out) } else { quantized?.copyRow(r, into: out) }
    }

    /// Copies rows `first ..< first + count` row-major to `out`.
    package func copyRows(_ first: Int, count: Int, into out: UnsafeMutablePointer<Float>) {
        for r in 0..<count { copyRow(first + r, into: out + r * cols) }
    }

    /// Calls `body` with W row-major (unpacked into a temporary copy).
    package func withRowMajor<R>(_ body: (UnsafePointer<Float>) throws -> R) throws -> R {
        let tmp = try Memory.allocateFloats(count, fill: 0)
        defer { free(tmp) }
        copyRows(0, count: rows, into: tmp)
        return try body(tmp)
    }

    // MARK: Trainable copy

    /// Whether `weight` and `grad` exist.
    package var isTrainable: Bool { weight != nil }

    /// Allocates `weight` (W unpacked from the packed copy, bit-exact) and a zeroed
    /// `grad`, both row-major [rows × cols]. Idempotent: a second call keeps the copy and
    /// gradient as they are. On failure nothing changes. Throws `.unsupported` for a
    /// quantized projection (load the model with float32 weights to train it).
    package func makeTrainable() throws {
        if weight != nil { return }
        guard let packed else {
            throw BatchCoreError(.unsupported, "training needs float32 weights: this projection is held as \(quantized?.typeName ?? "?") (load the model with weights = f32, CLI --dequantize)")
        }
        let w = try Memory.allocateFloats(count, fill: 0)
        let g: UnsafeMutablePointer<Float>
        do { g = try Memory.allocateFloats(count, fill: 0) } catch {
            free(w)
            throw error
        }
        packed.unpack(into: w)
        weight = w
        grad = g
    }

    /// Repacks the base weight (and the bf16 copy, if any) from `weight` after an
    /// optimizer changed it, so products use the new values. Throws `.badState` when not
    /// trainable.
    package func syncPacked() throws {
        guard let weight, let packed else { throw BatchCoreError.badState("syncPacked on a projection that is not trainable") }
        packed.repack(from: weight)
        bf16?.update(rowMajor: weight)
    }

    // MARK: bf16 copy (training's bf16 mode)

    /// Makes `bf16` from the current values (the trainable copy if there is one, else the
    /// base weight, packed or quantized: its exact values). Idempotent. Throws
    /// `.unsupported` when the CPU has no AVX-512 BF16, `.outOfMemory` (nothing changes).
    package func enableBF16() throws {
        if bf16 != nil { return }
        guard BF16GEMM.isSupported else {
            throw BatchCoreError(.unsupported, "bf16 compute needs a CPU with AVX-512 BF16 (this one has none): use float32")
        }
        let b = try BF16Weights(rows: rows, cols: cols)
        if let weight {
            b.update(rowMajor: weight)
        } else {
            b.update { r0, count, scratch in copyRows(r0, count: count, into: scratch) }
        }
        bf16 = b
    }

    /// Frees `bf16`; products are float32 again.
    package func dropBF16() { bf16 = nil }

    /// Frees `weight` and `grad` (the packed copy stays, with the values last synced).
    package func dropTrainable() {
        free(weight)
        free(grad)
        weight = nil
        grad = nil
    }
}
