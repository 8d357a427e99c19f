/// y = W·x for a row-major W [rows][cols]: the single-token (decode) projection.
/// Memory-bound, so it streams W once, row after row — one sequential stream per
/// thread, which the hardware prefetcher follows best (measured here: ~2x the
/// bandwidth of interleaving four rows) — with four independent 8-lane FMA chains,
/// split over `Parallel.threadCount` threads by row blocks.
public enum MatVec {
    @inline(__always)
    static func row(_ w: UnsafePointer<Float>, _ cols: Int, _ x: UnsafePointer<Float>) -> Float {
        var a0 = Vec16(repeating: 0), a1 = a0
        var j = 0
        while j + 32 <= cols {
            a0 = fma16(load16(w, j, 16), load16(x, j, 16), a0)
            a1 = fma16(load16(w, j + 16, 16), load16(x, j + 16, 16), a1)
            j += 32
        }
        if j + 16 <= cols {
            a0 = fma16(load16(w, j, 16), load16(x, j, 16), a0)
            j += 16
        }
        var s = (a0 + a1).sum()
        while j < cols { s += w[j] * x[j]; j += 1 }
        return s
    }

    public static func multiply(_ w: UnsafePointer<Float>, rows: Int, cols: Int, x: UnsafePointer<Float>,
                                y: UnsafeMutablePointer<Float>) {
        let threads = Parallel.threadCount
        // One contiguous block of rows per thread (a single stream each).
        let blockRows = (rows + threads - 1) / threads
        let blocks = (rows + blockRows - 1) / blockRows
        Parallel.forEach(blocks) { b in
            let start = b * blockRows, end = min(rows, start + blockRows)
            for r in start..<end { y[r] = row(w + r * cols, cols, x) }
        }
    }
}
