/// y = W·x for a row-major W [rows][cols]: the single-token (decode) projection.
/// Memory-bound, so it streams W once, four rows at a time with 16-wide FMAs, split
/// over `Parallel.threadCount` threads by row blocks.
public enum MatVec {
    @inline(__always)
    static func rows4(_ w: UnsafePointer<Float>, _ cols: Int, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
        let w0 = w, w1 = w + cols, w2 = w + 2 * cols, w3 = w + 3 * cols
        var a0 = Vec16(repeating: 0), a1 = a0, a2 = a0, a3 = a0
        var j = 0
        while j + 16 <= cols {
            let xv = load16(x, j, 16)
            a0 = fma16(load16(w0, j, 16), xv, a0)
            a1 = fma16(load16(w1, j, 16), xv, a1)
            a2 = fma16(load16(w2, j, 16), xv, a2)
            a3 = fma16(load16(w3, j, 16), xv, a3)
            j += 16
        }
        var s0 = a0.sum(), s1 = a1.sum(), s2 = a2.sum(), s3 = a3.sum()
        while j < cols {
            s0 += w0[j] * x[j]; s1 += w1[j] * x[j]; s2 += w2[j] * x[j]; s3 += w3[j] * x[j]
            j += 1
        }
        y[0] = s0; y[1] = s1; y[2] = s2; y[3] = s3
    }

    @inline(__always)
    static func row(_ w: UnsafePointer<Float>, _ cols: Int, _ x: UnsafePointer<Float>) -> Float {
        var a = Vec16(repeating: 0)
        var j = 0
        while j + 16 <= cols { a = fma16(load16(w, j, 16), load16(x, j, 16), a); j += 16 }
        var s = a.sum()
        while j < cols { s += w[j] * x[j]; j += 1 }
        return s
    }

    public static func multiply(_ w: UnsafePointer<Float>, rows: Int, cols: Int, x: UnsafePointer<Float>,
                                y: UnsafeMutablePointer<Float>) {
        let threads = Parallel.threadCount
        // Blocks of whole 4-row groups; enough blocks to balance, few enough to keep
        // the per-block dispatch cost small.
        let blockRows = max(64, (rows / (threads * 4) + 3) / 4 * 4)
        let blocks = (rows + blockRows - 1) / blockRows
        Parallel.forEach(blocks) { b in
            let start = b * blockRows, end = min(rows, start + blockRows)
            var r = start
            while r + 4 <= end { rows4(w + r * cols, cols, x, y + r); r += 4 }
            while r < end { y[r] = row(w + r * cols, cols, x); r += 1 }
        }
    }
}
