/// SwiGLU over rows: the forward/backward pair of the training pass. The forward is
/// `VectorMath.swiglu` (same bits as inference).
///
/// Buffers (n = feed-forward width; the model's gateUp rows are gate | up, so
/// gate = gateUp, up = gateUp + n, ldIn = 2n):
///
///     gate, up      [T × ldIn]   row t at + t·ldIn, n floats each
///     act           [T × ldAct]  act = silu(gate) · up,  silu(g) = g / (1 + e^−g)
///     dact          [T × ldAct]  dL/dact
///     dgate, dup    [T × ldIn]   WRITTEN: dup = dact · silu(gate)
///                                         dgate = dact · up · σ(g)·(1 + g·(1 − σ(g)))
///
/// dgate/dup may be the very buffers gate/up (in place). Elementwise: independent of
/// threads and row splits.
package enum SwiGLUOp {
    package static func forward(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, ldIn: Int,
                                act: UnsafeMutablePointer<Float>, ldAct: Int, rows: Int, n: Int) {
        forEachRowBlock(rows, block: 4) { range in
            for t in range { VectorMath.swiglu(gate + t * ldIn, up + t * ldIn, act + t * ldAct, n) }
        }
    }

    package static func backward(dact: UnsafePointer<Float>, ldAct: Int, gate: UnsafePointer<Float>, up: UnsafePointer<Float>,
                                 ldIn: Int, dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>,
                                 rows: Int, n: Int) {
        forEachRowBlock(rows, block: 4) { range in
            for t in range {
                let gr = gate + t * ldIn, ur = up + t * ldIn, dar = dact + t * ldAct
                let dgr = dgate + t * ldIn, dur = dup + t * ldIn
                forEachBlock16(n) { i, lanes in
                    let g = load16(gr, i, lanes), u = load16(ur, i, lanes), da = load16(dar, i, lanes)
                    let den = exp16(-g) + 1          // e^−g = +inf for g < −88.7: σ = 0, silu = −0
                    let sigma = 1 / den, silu = g / den
                    let dsilu = sigma * fma16(g, 1 - sigma, Vec16(repeating: 1))
                    store16(da * u * dsilu, dgr, i, lanes)
                    store16(da * silu, dur, i, lanes)
                }
            }
        }
    }
}
