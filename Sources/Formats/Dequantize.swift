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
/// Every product q * d above is exact in float32 (at most 8 + 11 significant bits), so
/// the results do not depend on whether the compiler fuses the Q4_1 multiply-add.

/// Converts `count` elements of `type` at `data` to float32 in `out[0..<count]`.
///
/// `count` must be a whole number of blocks and `data` must hold at least the bytes
/// of `count` elements (extra bytes are ignored); otherwise throws `.invalidArgument`.
/// Types other than F32, F16, BF16, Q8_0, Q4_0 and Q4_1 throw `.unsupported`.
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
