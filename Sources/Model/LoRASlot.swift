import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

/// A low-rank adapter of one projection (LoRA): ΔW = scale · B·A, so the adapted
/// projection is y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ.
///
/// - `a`: A [rank × cols], row-major float32 (row j maps the `cols` inputs to latent j).
/// - `b`: B [rows × rank], row-major float32 (row o maps the latents to output o).
///
/// The slot owns both buffers (freed with it). Their values may be changed in place (an
/// optimizer training the adapter) but not while a forward pass reads them.
package final class LoRASlot {
    /// Output features of the adapted projection (rows of B).
    package let rows: Int
    /// Input features of the adapted projection (columns of A).
    package let cols: Int
    /// The adapter's rank r (rows of A, columns of B); 1 ... `maxRank`.
    package let rank: Int
    /// The factor applied to B·A (PEFT: lora_alpha / r).
    package var scale: Float
    /// A [rank × cols], row-major.
    package let a: UnsafeMutablePointer<Float>
    /// B [rows × rank], row-major.
    package let b: UnsafeMutablePointer<Float>

    /// The largest rank accepted.
    package static let maxRank = 1024

    /// An adapter with A and B copied from `a` (rank × cols values) and `b` (rows × rank).
    /// Throws `.invalidArgument` on a size mismatch, a rank outside 1...maxRank or a
    /// non-finite scale.
    package init(rows: Int, cols: Int, rank: Int, scale: Float, a: [Float], b: [Float]) throws {
        guard rows > 0, cols > 0, rank > 0, rank <= Self.maxRank else {
            throw BatchCoreError.invalid("LoRA slot: rows \(rows), cols \(cols), rank \(rank) (rank 1...\(Self.maxRank))")
        }
        guard scale.isFinite else { throw BatchCoreError.invalid("LoRA slot: scale \(scale) is not finite") }
        let (aCount, o1) = rank.multipliedReportingOverflow(by: cols)
        let (bCount, o2) = rows.multipliedReportingOverflow(by: rank)
        guard !o1, !o2, a.count == aCount, b.count == bCount else {
            throw BatchCoreError.invalid(
                "LoRA slot: A has \(a.count) values, B \(b.count); expected \(rank)×\(cols) and \(rows)×\(rank)")
        }
        self.rows = rows
        self.cols = cols
        self.rank = rank
        self.scale = scale
        let a0 = try Memory.allocateFloats(aCount, fill: 0)
        let b0: UnsafeMutablePointer<Float>
        do { b0 = try Memory.allocateFloats(bCount, fill: 0) } catch {
            free(a0)
            throw error
        }
        a.withUnsafeBufferPointer { a0.update(from: $0.baseAddress!, count: aCount) }
        b.withUnsafeBufferPointer { b0.update(from: $0.baseAddress!, count: bCount) }
        self.a = a0
        self.b = b0
    }

    deinit {
        free(a)
        free(b)
        free(gradA)
        free(gradB)
    }

    // MARK: Training

    /// dL/dA [rank × cols] and dL/dB [rows × rank], row-major; nil unless
    /// `makeTrainable()` (see `Linear`'s trainable copy: the same pattern).
    package private(set) var gradA: UnsafeMutablePointer<Float>?
    package private(set) var gradB: UnsafeMutablePointer<Float>?

    /// Whether the gradients exist.
    package var isTrainable: Bool { gradA != nil }

    /// Allocates zeroed `gradA` and `gradB`. Idempotent; on failure nothing changes.
    package func makeTrainable() throws {
        if gradA != nil { return }
        let ga = try Memory.allocateFloats(rank * cols, fill: 0)
        let gb: UnsafeMutablePointer<Float>
        do { gb = try Memory.allocateFloats(rows * rank, fill: 0) } catch {
            free(ga)
            throw error
        }
        gradA = ga
        gradB = gb
    }

    /// Frees the gradients (A and B stay).
    package func dropTrainable() {
        free(gradA)
        free(gradB)
        gradA = nil
        gradB = nil
    }

    /// The LoRA scale: alpha / r, or alpha / √r with rsLoRA (Kalajdzievski 2023).
    package static func scale(alpha: Double, rank: Int, rsLoRA: Bool) -> Float {
        Float(rsLoRA ? alpha / Double(rank).squareRoot() : alpha / Double(rank))
    }

    /// A fresh adapter as PEFT initialises one (`init_lora_weights=True`): A from
    /// kaiming_uniform_(a=√5), i.e. uniform in ±1/√cols, B = 0 (so the adapted
    /// projection starts equal to the base). A's values come from splitmix64 seeded with
    /// `seed`: value i is bound · (2·u − 1), u the top 24 bits of draw i over 2²⁴ — the
    /// same bits on every machine.
    package convenience init(rows: Int, cols: Int, rank: Int, scale: Float, seed: UInt64) throws {
        guard rows > 0, cols > 0, rank > 0, rank <= Self.maxRank else {
            throw BatchCoreError.invalid("LoRA slot: rows \(rows), cols \(cols), rank \(rank) (rank 1...\(Self.maxRank))")
        }
        let (aCount, o1) = rank.multipliedReportingOverflow(by: cols)
        let (bCount, o2) = rows.multipliedReportingOverflow(by: rank)
        guard !o1, !o2 else { throw BatchCoreError.invalid("LoRA slot: \(rows) × \(rank) × \(cols) is too large") }
        let bound = 1 / Double(cols).squareRoot()
        var state = seed
        var a = [Float](repeating: 0, count: aCount)
        for i in 0..<aCount {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            let u = Double(z >> 40) / Double(1 << 24)
            a[i] = Float(bound * (2 * u - 1))
        }
        try self.init(rows: rows, cols: cols, rank: rank, scale: scale, a: a, b: [Float](repeating: 0, count: bCount))
    }

    /// y[t] += scale · B·(A·x[t]) for each of `tokens` rows (x row stride `ldx` ≥ cols,
    /// y row stride `ldy` ≥ rows).
    ///
    /// Batch invariant: a row's update is computed from that row alone, in the same
    /// order whatever `tokens` is (A·x in double per latent, then per output the
    /// latents in ascending order), so a row gives the same bits alone or in any segment.
    func apply(_ x: UnsafePointer<Float>, ldx: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int, tokens: Int) {
        if tokens <= 0 { return }
        let rows = rows, cols = cols, rank = rank, a = a, b = b, scale = Double(scale)
        // One work item per group of rows big enough to pay for a hand-off.
        let perItem = max(1, (1 << 16) / max(1, rank * (rows + cols)))
        Parallel.forEach((tokens + perItem - 1) / perItem) { item in
            withUnsafeTemporaryAllocation(of: Double.self, capacity: rank) { u in
                for t in (item * perItem)..<min(tokens, (item + 1) * perItem) {
                    let xt = x + t * ldx, yt = y + t * ldy
                    for j in 0..<rank { u[j] = scale * Reductions.dot(a + j * cols, xt, cols) }
                    for o in 0..<rows {
                        let bo = b + o * rank
                        var s = 0.0
                        for j in 0..<rank { s += Double(bo[j]) * u[j] }
                        yt[o] = Float(Double(yt[o]) + s)
                    }
                }
            }
        }
    }
}
