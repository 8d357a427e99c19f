/// Reductions over float32 buffers, accumulated in double so that the result does
/// not depend on the buffer length's rounding behaviour. Fixed chunking by callers
/// keeps them deterministic whatever the thread count.
package enum Reductions {
    /// Σ x², in double.
    @inline(__always)
    package static func sumOfSquares(_ x: UnsafePointer<Float>, _ count: Int) -> Double {
        var acc0 = SIMD8<Double>(repeating: 0)
        var acc1 = SIMD8<Double>(repeating: 0)
        forEachBlock16(count) { i, lanes in
            let v = load16(x, i, lanes)
            let lo = SIMD8<Double>(v.lowHalf), hi = SIMD8<Double>(v.highHalf)
            acc0 = acc0.addingProduct(lo, lo)
            acc1 = acc1.addingProduct(hi, hi)
        }
        return (acc0 + acc1).sum()
    }

    /// Σ xᵢ·yᵢ, in double.
    @inline(__always)
    package static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ count: Int) -> Double {
        var acc0 = SIMD8<Double>(repeating: 0)
        var acc1 = SIMD8<Double>(repeating: 0)
        forEachBlock16(count) { i, lanes in
            let a = load16(x, i, lanes), b = load16(y, i, lanes)
            acc0 = acc0.addingProduct(SIMD8<Double>(a.lowHalf), SIMD8<Double>(b.lowHalf))
            acc1 = acc1.addingProduct(SIMD8<Double>(a.highHalf), SIMD8<Double>(b.highHalf))
        }
        return (acc0 + acc1).sum()
    }
}
