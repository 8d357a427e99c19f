/// 16-lane float vectors over raw buffers: the building block of the streaming
/// kernels. A partial block (the tail of a buffer) is loaded zero-padded and stored
/// back lane by lane, so one formula serves the whole buffer.
@usableFromInline package typealias Vec16 = SIMD16<Float>

@inline(__always)
@inlinable package func load16(_ p: UnsafePointer<Float>, _ i: Int, _ lanes: Int) -> Vec16 {
    if lanes == 16 { return UnsafeRawPointer(p + i).loadUnaligned(as: Vec16.self) }
    var v = Vec16(repeating: 0)
    for k in 0..<lanes { v[k] = p[i + k] }
    return v
}

@inline(__always)
@inlinable package func load16(_ p: UnsafeMutablePointer<Float>, _ i: Int, _ lanes: Int) -> Vec16 {
    load16(UnsafePointer(p), i, lanes)
}

@inline(__always)
@inlinable package func store16(_ v: Vec16, _ p: UnsafeMutablePointer<Float>, _ i: Int, _ lanes: Int) {
    if lanes == 16 {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: Vec16.self)
        return
    }
    for k in 0..<lanes { p[i + k] = v[k] }
}

/// Fused multiply-add a*b + c with one rounding (vfmadd with -mfma).
@inline(__always)
@inlinable package func fma16(_ a: Vec16, _ b: Vec16, _ c: Vec16) -> Vec16 { c.addingProduct(a, b) }

@inline(__always)
@inlinable package func fma16(_ a: Float, _ b: Vec16, _ c: Vec16) -> Vec16 { c.addingProduct(Vec16(repeating: a), b) }

/// Lane-wise maximum (a compare and a blend; the standard library's `pointwiseMax` on
/// SIMD16<Float> is lowered lane by lane through memory here). A NaN lane of `b` keeps `a`'s.
@inline(__always)
@inlinable package func max16(_ a: Vec16, _ b: Vec16) -> Vec16 { a.replacing(with: b, where: b .> a) }

/// Calls `body(i, lanes)` for each 16-element block of 0..<count; the last block may
/// be partial (lanes < 16).
@inline(__always)
@inlinable package func forEachBlock16(_ count: Int, _ body: (Int, Int) -> Void) {
    var i = 0
    while i + 16 <= count {
        body(i, 16)
        i += 16
    }
    if i < count { body(i, count - i) }
}

/// Sum of lanes in double (for reductions that must not lose precision).
@inline(__always)
@inlinable package func sumDouble(_ v: Vec16) -> Double {
    var s = 0.0
    for k in 0..<16 { s += Double(v[k]) }
    return s
}

#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Lane-wise correctly rounded square root as one vsqrtps per 8 lanes (the
/// standard library's SIMD squareRoot() calls sqrtf lane by lane).
@inline(__always)
@inlinable package func sqrt16(_ v: Vec16) -> Vec16 {
    #if arch(x86_64)
    return Vec16(lowHalf: _mm256_sqrt_ps(v.lowHalf), highHalf: _mm256_sqrt_ps(v.highHalf))
    #else
    return v.squareRoot()
    #endif
}
