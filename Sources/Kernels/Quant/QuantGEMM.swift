import BCCore
import CSupport

/// Products with a `QuantizedWeights` matrix W[rows × cols]:
///
///     y[t][o] = Σ_k x[t][k] · W[o][k]        (forward, t < tokens)
///     dX[t][k] (=|+=) Σ_o dY[t][o] · W[o][k]  (input gradient of a frozen W)
///
/// Forward quantizes each activation row x[t] per block of 32 to int8
/// (`bc_quant_q8a_row`: d = amax/127, q = round(x/d)), then takes integer dot products
/// with the weight blocks (`bc_quant_dot_*` in CSupport/quant_dot.h, AVX2), as
/// llama.cpp's vec_dot_q4_1_q8_1 does. The error against the float product is bounded
/// per block b by (d_b/2)·Σ_{k∈b}|W[o][k]| (rounding to the nearest int8 step).
///
/// y[t][o] is `dot(row o, quantized x[t])`, computed alone or in a group of four tokens
/// by the same operations (quant_dot.h): the same bits whatever the other tokens of the
/// batch, the thread count or how rows are split (batch invariance).
package enum QuantGEMM {
    /// Output rows per work item.
    static let rowsPerItem = 32
    /// Tokens per work item: a block's quantized activations stay in L2.
    static let tokensPerBlock = 64

    /// Whether the quantized kernels can run here (x86-64 with AVX2, FMA, F16C).
    package static var isSupported: Bool {
        #if arch(x86_64)
        return true
        #else
        return false
        #endif
    }

    /// y[t][o] for t < tokens (row strides `ldx` ≥ cols, `ldy` ≥ rows).
    package static func multiply(_ x: UnsafePointer<Float>, ldx: Int, tokens: Int, _ w: QuantizedWeights,
                                _ y: UnsafeMutablePointer<Float>, ldy: Int) {
        #if arch(x86_64)
        if tokens <= 0 || w.rows == 0 { return }
        let nb = w.blocksPerRow
        withUnsafeTemporaryAllocation(of: bc_q8a_block.self, capacity: tokens * nb) { buf in
            guard let a = buf.baseAddress else { return }
            quantizeActivations(x, ldx: ldx, tokens: tokens, blocks: nb, into: a)
            let groups = (w.rows + rowsPerItem - 1) / rowsPerItem
            let blocks = (tokens + tokensPerBlock - 1) / tokensPerBlock
            let base = UnsafePointer(w.data.assumingMemoryBound(to: UInt8.self)), rowBytes = w.rowBytes
            let format = w.format, n = Int64(nb)
            Parallel.forEach(groups * blocks) { item in
                let r0 = (item % groups) * rowsPerItem, r1 = min(w.rows, r0 + rowsPerItem)
                let t0 = (item / groups) * tokensPerBlock, t1 = min(tokens, t0 + tokensPerBlock)
                for r in r0..<r1 {
                    let row = base + r * rowBytes
                    var t = t0
                    // Four tokens per pass over the row (the same bits as one at a time).
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: 4) { four in
                        guard let o = four.baseAddress else { return }
                        while t + 4 <= t1 {
                            let act = UnsafePointer(a + t * nb)
                            switch format {
                            case .q8_0: bc_quant_dot4_q8_0(row, act, n, n, o)
                            case .q4_0: bc_quant_dot4_q4_0(row, act, n, n, o)
                            case .q4_1: bc_quant_dot4_q4_1(row, act, n, n, o)
                            }
                            for j in 0..<4 { y[(t + j) * ldy + r] = o[j] }
                            t += 4
                        }
                    }
                    while t < t1 {
                        let act = UnsafePointer(a + t * nb)
                        let v: Float
                        switch format {
                        case .q8_0: v = bc_quant_dot_q8_0(row, act, n)
                        case .q4_0: v = bc_quant_dot_q4_0(row, act, n)
                        case .q4_1: v = bc_quant_dot_q4_1(row, act, n)
                        }
                        y[t * ldy + r] = v
                        t += 1
                    }
                }
            }
        }
        #endif
    }

    #if arch(x86_64)
    /// Quantizes rows x[t][0..<32·blocks] into `blocks` activation blocks each, at
    /// a + t·blocks. Each row's blocks depend only on that row.
    package static func quantizeActivations(_ x: UnsafePointer<Float>, ldx: Int, tokens: Int, blocks: Int,
                                            into a: UnsafeMutablePointer<bc_q8a_block>) {
        Parallel.forEach(tokens) { t in bc_quant_q8a_row(x + t * ldx, a + t * blocks, Int64(blocks)) }
    }
    #endif

    /// Tokens per work item of `inputGradient` (each item dequantizes W once).
    static let gradientTokensPerItem = 32

    /// dX[t][k] (= or +=, `accumulate`) Σ_o dY[t][o] · W[o][k] for t < tokens, with W's
    /// exact dequantized values (row strides `ldDY` ≥ rows, `ldDX` ≥ cols). Each dX row
    /// adds the rows of W in ascending o whatever the split: deterministic.
    package static func inputGradient(_ dY: UnsafePointer<Float>, ldDY: Int, tokens: Int, _ w: QuantizedWeights,
                                      _ dX: UnsafeMutablePointer<Float>, ldDX: Int, accumulate: Bool) {
        if tokens <= 0 { return }
        let cols = w.cols
        let items = (tokens + gradientTokensPerItem - 1) / gradientTokensPerItem
        Parallel.forEach(items) { item in
            let t0 = item * gradientTokensPerItem, t1 = min(tokens, t0 + gradientTokensPerItem)
            if !accumulate {
                for t in t0..<t1 { (dX + t * ldDX).update(repeating: 0, count: cols) }
            }
            withUnsafeTemporaryAllocation(of: Float.self, capacity: cols) { buf in
                guard let row = buf.baseAddress else { return }
                for o in 0..<w.rows {
                    w.copyRow(o, into: row)
                    for t in t0..<t1 {
                        let g = dY[t * ldDY + o], dst = dX + t * ldDX
                        for k in 0..<cols { dst[k] = dst[k].addingProduct(g, row[k]) }
                    }
                }
            }
        }
    }
}
