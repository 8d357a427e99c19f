/// Block codecs of the KIVI KV storage types ("KIVI: A Tuning-Free Asymmetric 2bit
/// Quantization for KV Cache", Liu et al., ICML 2024).
///
/// KIVI's observation: key caches have a few outlier *channels* (large magnitude in the
/// same channels across tokens), value caches have no fixed outlier pattern and their
/// error matters per token (attention mixes whole value rows). So keys are quantized
/// per channel, with the minimum and maximum taken over a group of tokens along the
/// token axis (here: the tokens of one KV block), and values per token, over groups of
/// `valueGroup` channels of the row. Both are asymmetric: x ≈ minimum + q · scale with
/// q ∈ 0...2^bits − 1, scale = (max − minimum) / (2^bits − 1).
///
/// Scales and minima are stored as float16 with directed rounding (minimum rounded
/// down, scale rounded up, scale computed from the rounded minimum), so the grid
/// minimum + q · scale, q ∈ 0...levels, always covers [min, max] and every element's
/// error is at most scale/2 of the STORED scale (plus float32 rounding). Values beyond
/// the float16 range (|x| > 65504) are clamped, as with `.f16` storage.
///
/// Plane layouts (one layer's keys or values of one block of `blockSize` tokens):
/// - key plane:   [scale f16 × dim][minimum f16 × dim][codes: blockSize rows × codeBytes]
/// - value plane: [(scale, minimum) f16 × groups, per row × blockSize][codes: blockSize rows × codeBytes]
/// Codes are packed little-end first: channel c of a row lies in byte c·bits/8 at bit
/// (c mod (8/bits))·bits. Planes are padded to 4 bytes.
package enum KIVICodec {
    /// Channels per value quantization group (KIVI's G = 32).
    package static let valueGroup = 32

    /// Packed code bytes of one row.
    package static func codeBytes(dim: Int, bits: Int) -> Int { (dim * bits + 7) / 8 }

    /// Value quantization groups per row.
    package static func valueGroups(dim: Int) -> Int { (dim + valueGroup - 1) / valueGroup }

    @inline(__always) static func pad4(_ n: Int) -> Int { (n + 3) & ~3 }

    package static func keyPlaneBytes(dim: Int, blockSize: Int, bits: Int) -> Int {
        pad4(4 * dim + blockSize * codeBytes(dim: dim, bits: bits))
    }

    package static func valuePlaneBytes(dim: Int, blockSize: Int, bits: Int) -> Int {
        pad4(blockSize * valueGroups(dim: dim) * 4 + blockSize * codeBytes(dim: dim, bits: bits))
    }

    /// Asymmetric parameters covering [lo, hi] with `levels` steps: the minimum rounded
    /// down to float16, the scale (hi − minimum)/levels rounded up to float16.
    package static func parameters(lo: Float, hi: Float, levels: Int) -> (scale: Float16, minimum: Float16) {
        let big = Float(Float16.greatestFiniteMagnitude)
        var lo = lo, hi = hi
        if !(lo <= hi) || lo.isNaN || hi.isNaN { lo = 0; hi = 0 }
        lo = Swift.min(Swift.max(lo, -big), big)
        hi = Swift.min(Swift.max(hi, -big), big)
        var m = Float16(lo)
        if Float(m) > lo { m = m.nextDown }
        let s = (hi - Float(m)) / Float(levels)
        var sc = Float16(s)
        if Float(sc) < s { sc = sc.nextUp }
        if !sc.isFinite { sc = .greatestFiniteMagnitude }
        return (sc, m)
    }

    /// The code of x on the grid lo + q · scale (inv = 1/scale, or 0 for a zero scale).
    @inline(__always) static func code(_ x: Float, _ lo: Float, _ inv: Float, _ levels: Float) -> UInt8 {
        let t = (x - lo) * inv
        return t >= 0.5 ? (t < levels ? UInt8(t + 0.5) : UInt8(levels)) : 0  // NaN → 0
    }

    // MARK: keys (per channel over the block's tokens)

    /// Quantizes `blockSize` key rows (row-major, stride `dim`) into a key plane.
    package static func encodeKeys(_ rows: UnsafePointer<Float>, dim: Int, blockSize: Int, bits: Int,
                                  into plane: UnsafeMutableRawPointer) {
        let levels = (1 << bits) - 1
        let scales = plane.assumingMemoryBound(to: Float16.self), minima = scales + dim
        let codes = (plane + 4 * dim).assumingMemoryBound(to: UInt8.self)
        let cb = codeBytes(dim: dim, bits: bits)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * dim) { buf in
            let lo = buf.baseAddress!, inv = lo + dim
            for c in 0..<dim { lo[c] = .infinity; inv[c] = -.infinity }  // inv holds the maximum first
            for r in 0..<blockSize {
                let row = rows + r * dim
                for c in 0..<dim {
                    let v = row[c]
                    if v < lo[c] { lo[c] = v }
                    if v > inv[c] { inv[c] = v }
                }
            }
            for c in 0..<dim {
                let (s, m) = parameters(lo: lo[c], hi: inv[c], levels: levels)
                scales[c] = s; minima[c] = m
                lo[c] = Float(m)
                inv[c] = s > 0 ? 1 / Float(s) : 0
            }
            let fl = Float(levels), perByte = 8 / bits
            for r in 0..<blockSize {
                let row = rows + r * dim, out = codes + r * cb
                var c = 0, byte = 0
                while c < dim {
                    var packed: UInt8 = 0
                    for k in 0..<perByte where c + k < dim {
                        packed |= code(row[c + k], lo[c + k], inv[c + k], fl) << UInt8(k * bits)
                    }
                    out[byte] = packed
                    byte += 1
                    c += perByte
                }
            }
        }
    }

    /// Dequantizes the first `rows` rows of a key plane into `y` (row-major, stride `dim`).
    package static func decodeKeys(_ plane: UnsafeRawPointer, rows: Int, dim: Int, blockSize: Int, bits: Int,
                                  into y: UnsafeMutablePointer<Float>) {
        let scales = plane.assumingMemoryBound(to: Float16.self), minima = scales + dim
        let codes = (plane + 4 * dim).assumingMemoryBound(to: UInt8.self)
        let cb = codeBytes(dim: dim, bits: bits)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * dim) { buf in
            let m = buf.baseAddress!, s = m + dim
            for c in 0..<dim { m[c] = Float(minima[c]); s[c] = Float(scales[c]) }
            for r in 0..<rows {
                unpack(codes + r * cb, dim: dim, bits: bits) { c, q in y[r * dim + c] = m[c] + Float(q) * s[c] }
            }
        }
    }

    /// The stored scale of a key channel (tests: the error bound is scale/2).
    package static func keyScale(_ plane: UnsafeRawPointer, channel: Int) -> Float {
        Float(plane.assumingMemoryBound(to: Float16.self)[channel])
    }

    // MARK: values (per token, in channel groups)

    /// Quantizes `count` value rows (row-major, stride `dim`) into rows `0..<count` of
    /// a value plane of `blockSize` rows.
    package static func encodeValues(_ rows: UnsafePointer<Float>, count: Int, dim: Int, blockSize: Int, bits: Int,
                                    into plane: UnsafeMutableRawPointer) {
        let levels = (1 << bits) - 1, fl = Float(levels), perByte = 8 / bits
        let groups = valueGroups(dim: dim)
        let meta = plane.assumingMemoryBound(to: Float16.self)
        let codes = (plane + blockSize * groups * 4).assumingMemoryBound(to: UInt8.self)
        let cb = codeBytes(dim: dim, bits: bits)
        for r in 0..<count {
            let row = rows + r * dim, out = codes + r * cb
            for g in 0..<groups {
                let c0 = g * valueGroup, c1 = Swift.min(dim, c0 + valueGroup)
                var lo = Float.infinity, hi = -Float.infinity
                for c in c0..<c1 {
                    if row[c] < lo { lo = row[c] }
                    if row[c] > hi { hi = row[c] }
                }
                let (s, m) = parameters(lo: lo, hi: hi, levels: levels)
                meta[(r * groups + g) * 2] = s
                meta[(r * groups + g) * 2 + 1] = m
                let lof = Float(m), inv: Float = s > 0 ? 1 / Float(s) : 0
                // Groups are multiples of 8 channels, so each starts on a byte.
                var c = c0
                while c < c1 {
                    var packed: UInt8 = 0
                    for k in 0..<perByte where c + k < c1 {
                        packed |= code(row[c + k], lof, inv, fl) << UInt8(k * bits)
                    }
                    out[c * bits / 8] = packed
                    c += perByte
                }
            }
        }
    }

    /// Dequantizes the first `rows` rows of a value plane into `y` (row-major, stride `dim`).
    package static func decodeValues(_ plane: UnsafeRawPointer, rows: Int, dim: Int, blockSize: Int, bits: Int,
                                    into y: UnsafeMutablePointer<Float>) {
        let groups = valueGroups(dim: dim)
        let meta = plane.assumingMemoryBound(to: Float16.self)
        let codes = (plane + blockSize * groups * 4).assumingMemoryBound(to: UInt8.self)
        let cb = codeBytes(dim: dim, bits: bits)
        for r in 0..<rows {
            let yr = y + r * dim
            let mr = meta + r * groups * 2
            unpack(codes + r * cb, dim: dim, bits: bits) { c, q in
                let g = c / valueGroup
                yr[c] = Float(mr[2 * g + 1]) + Float(q) * Float(mr[2 * g])
            }
        }
    }

    /// The stored scale of a value row's channel group (tests).
    package static func valueScale(_ plane: UnsafeRawPointer, row: Int, group: Int, dim: Int) -> Float {
        Float(plane.assumingMemoryBound(to: Float16.self)[(row * valueGroups(dim: dim) + group) * 2])
    }

    @inline(__always)
    static func unpack(_ bytes: UnsafePointer<UInt8>, dim: Int, bits: Int, _ body: (Int, UInt8) -> Void) {
        if bits == 4 {
            var c = 0
            while c + 1 < dim {
                let b = bytes[c >> 1]
                body(c, b & 0xF); body(c + 1, b >> 4)
                c += 2
            }
            if c < dim { body(c, bytes[c >> 1] & 0xF) }
        } else if bits == 2 {
            var c = 0
            while c + 3 < dim {
                let b = bytes[c >> 2]
                body(c, b & 3); body(c + 1, (b >> 2) & 3); body(c + 2, (b >> 4) & 3); body(c + 3, b >> 6)
                c += 4
            }
            while c < dim { body(c, (bytes[c >> 2] >> UInt8((c & 3) * 2)) & 3); c += 1 }
        } else {
            let perByte = 8 / bits, mask = UInt8((1 << bits) - 1)
            for c in 0..<dim { body(c, (bytes[c / perByte] >> UInt8((c % perByte) * bits)) & mask) }
        }
    }
}
