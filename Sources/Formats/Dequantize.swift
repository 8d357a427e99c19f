import BCCore
/// Dequantization of ggml block formats to float32.
///
/// Block layouts (little-endian, packed, as in ggml-common.h):
/// - F32: 4-byte IEEE float; F16: IEEE half; BF16: the top 16 bits of a float32.
/// - Q8_0 (32 elements, 34 bytes): half `d`, then 32 int8 `q`; x[i] = q[i] * d.
/// - Q4_0 (32 elements, 18 bytes): half `d`, then 16 bytes; byte j holds element j in
///   its low nibble and element j + 16 in its high nibble; x = (nibble - 8) * d.
/// - Q4_1 (32 elements, 20 bytes): half `d`, half `m`, then 16 bytes of nibbles laid
///   out as in Q4_0; x = nibble * d + m.
///
/// - Q5_0 (32 elements, 22 bytes): half `d`, 4 bytes `qh` (bit j: the fifth bit of
///   element j), 16 bytes of nibbles as in Q4_0; x = (nibble | bit·16 - 16) * d.
/// - Q5_1 (32 elements, 24 bytes): half `d`, half `m`, `qh`, nibbles; x = q5 * d + m.
/// - Q4_K (256 elements, 144 bytes): half `d`, half `dmin`, 12 bytes packing eight 6-bit
///   scales `sc` and mins `mn` (`kScaleMin`), 128 bytes of nibbles: 64-element chunk c
///   holds sub-block 2c in the low and 2c + 1 in the high nibbles of bytes 32c..<32c+32;
///   x = (d·sc) * q - (dmin·mn) per sub-block of 32.
/// - Q5_K (256 elements, 176 bytes): as Q4_K with 32 bytes `qh` after the scales (bit s
///   of byte l: the fifth bit of element l of sub-block s), then the nibbles.
/// - Q6_K (256 elements, 210 bytes): 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2
///   bits), 16 int8 scales (one per 16 elements), half `d`; in each 128-element half,
///   element l + 32j (l < 32) takes ql[l + 32(j&1)] nibble j>>1 and qh[l] bits 2j..2j+1;
///   x = (d·sc) * (q6 - 32).
///
/// Every product q * d of the 32-element formats is exact in float32 (at most 8 + 11
/// significant bits), so their results do not depend on whether the compiler fuses the
/// multiply-add; the k-quants round (d·sc) first, then the product, then the
/// subtraction, as ggml and gguf-py do.

/// Converts `count` elements of `type` at `data` to float32 in `out[0..<count]`.
///
/// `count` must be a whole number of blocks and `data` must hold at least the bytes
/// of `count` elements (extra bytes are ignored); otherwise throws `.invalidArgument`.
/// Types for which `GGMLType.canDequantize` is false throw `.unsupported`.
package func dequantize(type: GGMLType, data: UnsafeRawBufferPointer, count: Int,
                       into out: UnsafeMutablePointer<Float>) throws {
    guard type.canDequantize else {
        throw BatchCoreError(.unsupported, "dequantize: ggml type \(type) is not supported")
    }
    guard count >= 0 else { throw BatchCoreError.invalid("dequantize: negative count \(count)") }
    guard let needed = type.byteCount(elements: count) else {
        throw BatchCoreError.invalid(
            "dequantize: \(count) elements is not a whole number of \(type) blocks of \(type.blockSize ?? 0)")
    }
    guard data.count >= needed else {
        throw BatchCoreError.invalid("dequantize: \(type) data has \(data.count) bytes, \(count) elements need \(needed)")
    }
    guard count > 0, let src = data.baseAddress else { return }

    switch type {
    case .f32: dequantizeF32(src, count, out)
    case .f16: dequantizeF16(src, count, out)
    case .bf16: dequantizeBF16(src, count, out)
    case .q8_0: dequantizeQ8_0(src, count / 32, out)
    case .q4_0: dequantizeQ4_0(src, count / 32, out)
    case .q4_1: dequantizeQ4_1(src, count / 32, out)
    case .q5_0: dequantizeQ5(src, count / 32, out, hasMin: false)
    case .q5_1: dequantizeQ5(src, count / 32, out, hasMin: true)
    case .q4_K: dequantizeQ4K(src, count / 256, out, fifthBit: false)
    case .q5_K: dequantizeQ4K(src, count / 256, out, fifthBit: true)
    case .q6_K: dequantizeQ6K(src, count / 256, out)
    default: break  // unreachable: canDequantize checked above
    }
}

@inline(__always)
private func half(_ p: UnsafeRawPointer, _ byteOffset: Int) -> Float {
    Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: byteOffset, as: UInt16.self))))
}

private func dequantizeF32(_ src: UnsafeRawPointer, _ count: Int, _ out: UnsafeMutablePointer<Float>) {
    #if _endian(little)
    UnsafeMutableRawPointer(out).copyMemory(from: src, byteCount: count * 4)
    #else
    for i in 0..<count {
        out[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
    }
    #endif
}

private func dequantizeF16(_ src: UnsafeRawPointer, _ count: Int, _ out: UnsafeMutablePointer<Float>) {
    for i in 0..<count { out[i] = half(src, 2 * i) }
}

private func dequantizeBF16(_ src: UnsafeRawPointer, _ count: Int, _ out: UnsafeMutablePointer<Float>) {
    for i in 0..<count {
        let bits = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        out[i] = Float(bitPattern: UInt32(bits) << 16)
    }
}

private func dequantizeQ8_0(_ src: UnsafeRawPointer, _ blocks: Int, _ out: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + 34 * b
        let d = half(block, 0)
        let q = (block + 2).assumingMemoryBound(to: Int8.self)
        let y = out + 32 * b
        for j in 0..<32 { y[j] = Float(q[j]) * d }
    }
}

private func dequantizeQ4_0(_ src: UnsafeRawPointer, _ blocks: Int, _ out: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + 18 * b
        let d = half(block, 0)
        let qs = (block + 2).assumingMemoryBound(to: UInt8.self)
        let y = out + 32 * b
        for j in 0..<16 {
            let byte = qs[j]
            y[j] = Float(Int32(byte & 0x0F) - 8) * d
            y[j + 16] = Float(Int32(byte >> 4) - 8) * d
        }
    }
}

private func dequantizeQ4_1(_ src: UnsafeRawPointer, _ blocks: Int, _ out: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + 20 * b
        let d = half(block, 0)
        let m = half(block, 2)
        let qs = (block + 4).assumingMemoryBound(to: UInt8.self)
        let y = out + 32 * b
        for j in 0..<16 {
            let byte = qs[j]
            y[j] = Float(byte & 0x0F) * d + m
            y[j + 16] = Float(byte >> 4) * d + m
        }
    }
}

private func dequantizeQ5(_ src: UnsafeRawPointer, _ blocks: Int, _ out: UnsafeMutablePointer<Float>, hasMin: Bool) {
    let size = hasMin ? 24 : 22, qhOffset = hasMin ? 4 : 2
    for b in 0..<blocks {
        let block = src + size * b
        let d = half(block, 0)
        let m: Float = hasMin ? half(block, 2) : 0
        let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: qhOffset, as: UInt32.self))
        let qs = (block + qhOffset + 4).assumingMemoryBound(to: UInt8.self)
        let y = out + 32 * b
        for j in 0..<16 {
            let lo = Int32(qs[j] & 0x0F) | Int32((qh >> UInt32(j)) & 1) << 4
            let hi = Int32(qs[j] >> 4) | Int32((qh >> UInt32(j + 16)) & 1) << 4
            if hasMin {
                y[j] = Float(lo) * d + m
                y[j + 16] = Float(hi) * d + m
            } else {
                y[j] = Float(lo - 16) * d
                y[j + 16] = Float(hi - 16) * d
            }
        }
    }
}

/// Scale and min of sub-block `j` (0..<8) of a Q4_K/Q5_K block from its 12 packed
/// bytes (ggml's get_scale_min_k4): 6 bits each.
@inline(__always)
package func kScaleMin(_ s: UnsafePointer<UInt8>, _ j: Int) -> (scale: UInt8, min: UInt8) {
    if j < 4 { return (s[j] & 63, s[j + 4] & 63) }
    return ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
}

private func dequantizeQ4K(_ src: UnsafeRawPointer, _ blocks: Int, _ out: UnsafeMutablePointer<Float>, fifthBit: Bool) {
    let size = fifthBit ? 176 : 144
    for b in 0..<blocks {
        let block = src + size * b
        let d = half(block, 0), dmin = half(block, 2)
        let scales = (block + 4).assumingMemoryBound(to: UInt8.self)
        let qh = (block + 16).assumingMemoryBound(to: UInt8.self)
        let qs = (block + (fifthBit ? 48 : 16)).assumingMemoryBound(to: UInt8.self)
        let y = out + 256 * b
        for s in 0..<8 {
            let (sc, mn) = kScaleMin(scales, s)
            let ds = d * Float(sc), ms = dmin * Float(mn)
            let bytes = qs + 32 * (s / 2), shift = UInt8(4 * (s % 2))
            for l in 0..<32 {
                var q = (bytes[l] >> shift) & 0x0F
                if fifthBit { q |= ((qh[l] >> UInt8(s)) & 1) << 4 }
                y[32 * s + l] = ds * Float(q) - ms
            }
        }
    }
}

private func dequantizeQ6K(_ src: UnsafeRawPointer, _ blocks: Int, _ out: UnsafeMutablePointer<Float>) {
    for b in 0..<blocks {
        let block = src + 210 * b
        let d = half(block, 208)
        let y = out + 256 * b
        for h in 0..<2 {
            let ql = (block + 64 * h).assumingMemoryBound(to: UInt8.self)
            let qh = (block + 128 + 32 * h).assumingMemoryBound(to: UInt8.self)
            let sc = (block + 192 + 8 * h).assumingMemoryBound(to: Int8.self)
            for j in 0..<4 {
                for l in 0..<32 {
                    let low = (ql[l + 32 * (j & 1)] >> UInt8(4 * (j >> 1))) & 0x0F
                    let high = (qh[l] >> UInt8(2 * j)) & 3
                    let q = Int32(low | high << 4) - 32
                    y[128 * h + 32 * j + l] = (d * Float(sc[2 * j + l / 16])) * Float(q)
                }
            }
        }
    }
}
