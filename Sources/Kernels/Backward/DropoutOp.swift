/// Inverted dropout with a counter-based mask: the forward/backward pair of LoRA dropout
/// (PEFT's `lora_dropout`: `nn.Dropout(p)` on the input of the low-rank path only).
///
/// The mask is a pure function of (key, row, column) — no RNG state — so it is the same
/// bits on any thread count and row split, is recomputed (never stored) by the backward
/// and by activation recomputation, and a run resumed from a checkpoint draws the same
/// masks. `key` mixes whatever identifies the use (LoRA: seed, step, micro-batch, layer,
/// module; `DropoutOp.key`).
///
///     rk(t)      = top 32 bits of splitmix64(key ⊕ t·φ64)                (per row)
///     h(t, c)    = lowbias32((c·φ32) ⊕ rk(t))                            (per value)
///     keep(t, c) = h(t, c) ≥ threshold,   threshold = round(p · 2³²)      P(drop) = threshold / 2³²
///     scale      = Float(1 / (1 − p))
///
/// Buffers (T = rows, n = cols):
///
///     x   [T × ldx]   input;              y  [T × ldy]   WRITTEN y = keep ? x·scale : 0
///     dy  [T × ldDY]  dL/dy;              dx [T × ldDX]  dx (=|+=) keep ? dy·scale : 0
///
/// Elementwise: independent of threads and row splits.
package struct DropoutOp: Sendable {
    package let key: UInt64
    /// A value is dropped when its hash is below this.
    package let threshold: UInt32
    /// 1 / (1 − p) as float32: the factor on kept values.
    package let scale: Float

    /// Dropout of probability `p` (0 ≤ p < 1, checked by the caller's configuration;
    /// values outside are clamped to that range).
    package init(p: Double, key: UInt64) {
        let q = p.isFinite ? min(max(p, 0), 0.999_999) : 0
        self.key = key
        threshold = UInt32(min((q * 4_294_967_296).rounded(), 4_294_967_295))
        scale = Float(1 / (1 - q))
    }

    /// splitmix64's finaliser (a bijection of 64 bits with full avalanche).
    @inline(__always)
    package static func mix64(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// One 64-bit key from the parts, each mixed in turn (order matters).
    package static func key(_ parts: [UInt64]) -> UInt64 {
        var h: UInt64 = 0x6C6F_7261_2D64_726F   // "lora-dro"
        for p in parts { h = mix64(h ^ p) }
        return h
    }

    @inline(__always)
    func rowKey(_ t: Int) -> UInt32 {
        UInt32(truncatingIfNeeded: Self.mix64(key ^ (UInt64(truncatingIfNeeded: t) &* 0x9E37_79B9_7F4A_7C15)) >> 32)
    }

    @inline(__always)
    static func hash(_ c: UInt32, _ rk: UInt32) -> UInt32 {
        var h = (c &* 0x9E37_79B9) ^ rk
        h ^= h >> 16
        h &*= 0x7FEB_352D
        h ^= h >> 15
        h &*= 0x846C_A68B
        h ^= h >> 16
        return h
    }

    @inline(__always)
    static func hash16(_ c: SIMD16<UInt32>, _ rk: UInt32) -> SIMD16<UInt32> {
        var h = (c &* 0x9E37_79B9) ^ SIMD16(repeating: rk)
        h ^= h &>> 16
        h &*= 0x7FEB_352D
        h ^= h &>> 15
        h &*= 0x846C_A68B
        h ^= h &>> 16
        return h
    }

    /// Whether value (row, col) is kept (the mask the kernels apply; for tests).
    package func keeps(row: Int, col: Int) -> Bool {
        Self.hash(UInt32(truncatingIfNeeded: col), rowKey(row)) >= threshold
    }

    static let lanes = SIMD16<UInt32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)

    /// Calls body(t, i, lanes, dropMask) per 16-column block of each row.
    @inline(__always)
    func forEachMaskBlock(rows: Int, cols: Int, _ body: (Int, Int, Int, SIMDMask<SIMD16<Int32>>) -> Void) {
        let thr = SIMD16<UInt32>(repeating: threshold)
        forEachRowBlock(rows, block: 8) { range in
            for t in range {
                let rk = rowKey(t)
                forEachBlock16(cols) { i, lanes in
                    let c = SIMD16<UInt32>(repeating: UInt32(truncatingIfNeeded: i)) &+ Self.lanes
                    body(t, i, lanes, Self.hash16(c, rk) .< thr)
                }
            }
        }
    }

    /// y = keep ? x·scale : 0 over T = rows rows of `cols` values (y may be x).
    package func forward(_ x: UnsafePointer<Float>, ldx: Int, _ y: UnsafeMutablePointer<Float>, ldy: Int,
                         rows: Int, cols: Int) {
        let s = Vec16(repeating: scale)
        forEachMaskBlock(rows: rows, cols: cols) { t, i, lanes, drop in
            store16((load16(x + t * ldx, i, lanes) * s).replacing(with: 0, where: drop), y + t * ldy, i, lanes)
        }
    }

    /// dx = keep ? dy·scale : 0, or dx += that with `accumulate` (dx may be dy without it).
    package func backward(_ dy: UnsafePointer<Float>, ldDY: Int, _ dx: UnsafeMutablePointer<Float>, ldDX: Int,
                          rows: Int, cols: Int, accumulate: Bool) {
        let s = Vec16(repeating: scale)
        forEachMaskBlock(rows: rows, cols: cols) { t, i, lanes, drop in
            var v = (load16(dy + t * ldDY, i, lanes) * s).replacing(with: 0, where: drop)
            if accumulate { v += load16(dx + t * ldDX, i, lanes) }
            store16(v, dx + t * ldDX, i, lanes)
        }
    }
}
