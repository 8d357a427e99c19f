/// Rotary position embedding over rows: the forward/backward pair of the training pass.
/// The forward is `RotaryEmbedding.apply` (llama.cpp's "normal" layout: dimensions
/// (2i, 2i+1) of each head rotate by pos·θ_i); the backward is the transposed rotation,
/// i.e. the rotation by −pos·θ_i. Used for the q heads and the k heads alike.
///
/// Buffers:
///
///     x      [T × ld]        row t's `heads` heads at x + t·ld (head h at + h·headDim),
///                            rotated in place (forward: x ← R x; backward: dx ← Rᵀ dx)
///     tables [T × headDim]   row t's cos | sin table from `RotaryEmbedding.table(position:into:)`
///
/// Every element depends only on its own pair, so results are independent of threads
/// and row splits.
package enum RoPEOp {
    /// x ← R(pos_t) x for each row t.
    package static func forward(_ rope: RotaryEmbedding, _ x: UnsafeMutablePointer<Float>, ld: Int, heads: Int,
                                tables: UnsafePointer<Float>, rows: Int) {
        let hd = rope.headDim
        forEachRowBlock(rows, block: 16) { range in
            for t in range { rope.apply(x + t * ld, heads: heads, table: tables + t * hd) }
        }
    }

    /// dx ← R(pos_t)ᵀ dx for each row t (the gradient w.r.t. the unrotated input).
    package static func backward(_ rope: RotaryEmbedding, _ dx: UnsafeMutablePointer<Float>, ld: Int, heads: Int,
                                 tables: UnsafePointer<Float>, rows: Int) {
        let hd = rope.headDim
        forEachRowBlock(rows, block: 16) { range in
            for t in range { rope.applyTranspose(dx + t * ld, heads: heads, table: tables + t * hd) }
        }
    }
}

extension RotaryEmbedding {
    /// The inverse (= transpose) of `apply(_:heads:table:)`: rotates each pair by −angle.
    @inline(__always)
    package func applyTranspose(_ x: UnsafeMutablePointer<Float>, heads: Int, table: UnsafePointer<Float>) {
        let half = headDim / 2
        let c = table, s = table + half
        for h in 0..<heads {
            let v = x + h * headDim
            for i in 0..<half {
                let a = v[2 * i], b = v[2 * i + 1]
                v[2 * i] = a * c[i] + b * s[i]
                v[2 * i + 1] = b * c[i] - a * s[i]
            }
        }
    }
}
