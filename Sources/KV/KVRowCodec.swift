/// The row-wise KV storage types: each cached row (one position of one layer's keys
/// or values, `dim` floats) is encoded on its own. The KIVI types quantize whole
/// blocks instead (`KIVICodec`).
enum KVRowType: Sendable {
    /// float32, exact: dim × 4 bytes.
    case f32
    /// IEEE half precision: dim × 2 bytes.
    case f16
    /// int8 with one float scale per row (x ≈ q · max|x|/127): 4 + dim bytes.
    case int8

    /// Bytes of one encoded row of `dim` values (codes plus scale).
    @inline(__always)
    func rowBytes(_ dim: Int) -> Int {
        switch self {
        case .f32: dim * 4
        case .f16: dim * 2
        case .int8: dim + 4
        }
    }
}

/// Encoding and decoding of one row of a row-wise storage type.
enum KVRowCodec {
    /// Encodes `n` floats of `x` into `dst` (`type.rowBytes(n)` bytes).
    static func encode(_ x: UnsafePointer<Float>, _ n: Int, _ type: KVRowType, into dst: UnsafeMutableRawPointer) {
        switch type {
        case .f32:
            dst.copyMemory(from: x, byteCount: n * 4)
        case .f16:
            let d = dst.assumingMemoryBound(to: Float16.self)
            for i in 0..<n { d[i] = Float16(x[i]) }
        case .int8:
            var m: Float = 0
            for i in 0..<n { m = max(m, abs(x[i])) }
            let scale = m / 127
            dst.storeBytes(of: scale, as: Float.self)
            let q = (dst + 4).assumingMemoryBound(to: Int8.self)
            // A code never traps: a NaN quotient (non-finite input) codes as 0, others saturate.
            func code(_ t: Float) -> Int8 {
                let r = t.rounded(.toNearestOrEven)
                return r.isNaN ? 0 : Int8(Swift.max(-128, Swift.min(127, r)))
            }
            let inv: Float = scale > 0 ? 1 / scale : 0
            if inv.isFinite {
                for i in 0..<n { q[i] = code(x[i] * inv) }
            } else {  // a subnormal scale: 1/scale overflows, divide instead
                for i in 0..<n { q[i] = code(x[i] / scale) }
            }
        }
    }

    /// Decodes one encoded row into `n` floats at `y`.
    static func decode(_ src: UnsafeRawPointer, _ n: Int, _ type: KVRowType, into y: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32:
            UnsafeMutableRawPointer(y).copyMemory(from: src, byteCount: n * 4)
        case .f16:
            let s = src.assumingMemoryBound(to: Float16.self)
            for i in 0..<n { y[i] = Float(s[i]) }
        case .int8:
            let scale = src.load(as: Float.self)
            let q = (src + 4).assumingMemoryBound(to: Int8.self)
            for i in 0..<n { y[i] = Float(q[i]) * scale }
        }
    }
}
