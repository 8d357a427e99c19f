import BCCore
import CSupport

/// Products with a `QuantizedWeights` matrix W[rows × cols]:
///
///     y[t][o] = Σ_k x[t][k] · W[o][k]        (forward, t < tokens)
///     dX[t][k] (=|+=) Σ_o dY[t][o] · W[o][k]  (input gradient of a frozen W)
///
/// Forward quantizes each activation row x[t] to int8 exactly as llama.cpp does for the
/// weight's format: per block of 32 with an f16 scale (`bc_quant_q8a_row`, ggml's
/// q8_0/q8_1: d = f16(amax/127), q = round(x·127/amax), s = f16(d·Σq)) for
/// Q8_0/Q4_0/Q4_1/Q5_0/Q5_1, per 256 with one float32 scale (`bc_quant_q8k_row`, ggml's
/// q8_K) for Q4_K/Q5_K/Q6_K. Then it takes integer dot products with the weight blocks
/// (`bc_quant_dot_*` in CSupport/quant_dot.h for Q8_0/Q4_0/Q4_1, `bc_kq_dot` in
/// quant_kdot.h for Q5_0/Q5_1/Q4_K/Q5_K/Q6_K, whose 256-value blocks meet 8 activation
/// blocks), as llama.cpp's vec_dot_q4_1_q8_1 etc. do. The error against the float product
/// is bounded per block b by (d_b/2)·Σ_{k∈b}|W[o][k]| (rounding to the nearest int8 step)
/// plus |d_b − amax_b/127|·Σ|q_a·W| (and |s_b − d·Σq|·|m| for Q4_1/Q5_1): the f16 scale.
///
/// F16 and BF16 segments skip the activation quantization: each weight is converted
/// to float32 on the fly and meets x itself (`bc_hq_dot` in quant_hdot.h, F16C), the
/// only error being float32 accumulation.
///
/// y[t][o] is `dot(row o, quantized x[t])`, computed alone, in a group of four tokens
/// (AVX2, or for quant_kdot.h formats AVX2 or VNNI) or in a tile of 4 rows × 8 or 4
/// tokens (AVX-512 VNNI, chosen at run time) by the same
/// exact integer block sums and the same float operations in the same order
/// (quant_dot.h): the same bits whatever the other tokens of the batch, the kernel, the
/// thread count or how rows are split (batch invariance).
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

    /// Which dot-product kernels `multiply` uses (tests force each; all give the same bits).
    package enum Kernel: Sendable {
        /// AVX-512 VNNI tiles of 4 rows × 8 (then 4) tokens when this CPU has them, else `.avx2`.
        case best
        /// AVX2: one row × four tokens, then one token at a time.
        case avx2
    }

    /// Whether this CPU (and OS) runs the AVX-512 VNNI tiles (checked once).
    package static let hasAVX512: Bool = {
        #if arch(x86_64)
        return bc_quant_has_avx512_vnni() != 0
        #else
        return false
        #endif
    }()

    /// y[t][o] for t < tokens (row strides `ldx` ≥ cols, `ldy` ≥ rows), segment by
    /// segment (`QuantizedWeights.segments`; all formats read the same int8 activations).
    package static func multiply(_ x: UnsafePointer<Float>, ldx: Int, tokens: Int, _ w: QuantizedWeights,
                                _ y: UnsafeMutablePointer<Float>, ldy: Int, kernel: Kernel = .best) {
        #if arch(x86_64)
        if tokens <= 0 || w.rows == 0 { return }
        let nb = w.cols / 32
        let wide = kernel == .best && hasAVX512 && tokens >= 4  // decode (1–3 tokens): 8 rows × a token (`rows8`)
        let vnni: Int32 = kernel == .best && hasAVX512 ? 1 : 0
        let rows8 = kernel == .best && hasAVX512 && !wide
        // Work items: (segment, first row) groups of `itemRows` rows × token blocks. Decode
        // (1–3 tokens) takes bigger groups, about 8 per thread: each item costs a shared
        // counter's cache line, and the head alone would otherwise be 1,536 items. Which
        // rows an item holds never changes a row's bits.
        let itemRows = wide ? rowsPerItem : max(rowsPerItem, (w.rows / (8 * Parallel.threadCount) + 7) / 8 * 8)
        var groups: [(segment: Int, r0: Int)] = []
        for (i, seg) in w.segments.enumerated() {
            var r = 0
            while r < seg.rows {
                groups.append((i, r))
                r += itemRows
            }
        }
        // F16/BF16 segments read x itself; the others its int8 blocks (made only if needed):
        // q8_0/q8_1-style blocks at a, q8_K-style blocks (k-quant segments) at a8k.
        let needsBlocks = w.segments.contains { !$0.format.isFloat && !$0.format.usesQ8K }
        let needsK = w.segments.contains { $0.format.usesQ8K }
        let kOffset = needsBlocks ? tokens * nb : 0
        withUnsafeTemporaryAllocation(of: bc_q8a_block.self, capacity: max(1, kOffset + (needsK ? tokens * nb : 0))) { buf in
            guard let a = buf.baseAddress else { return }
            let a8k = a + kOffset
            if needsBlocks { quantizeActivations(x, ldx: ldx, tokens: tokens, blocks: nb, into: a) }
            if needsK { quantizeActivationsQ8K(x, ldx: ldx, tokens: tokens, blocks: nb, into: a8k) }
            let blocks = (tokens + tokensPerBlock - 1) / tokensPerBlock
            let segments = w.segments, groupCount = groups.count
            let data = UnsafePointer(w.data.assumingMemoryBound(to: UInt8.self))
            groups.withUnsafeBufferPointer { groups in
                Parallel.forEach(groupCount * blocks) { item in
                    let (si, g0) = groups[item % groupCount]
                    let seg = segments[si]
                    let base = data + seg.offset, rowBytes = seg.rowBytes, format = seg.format
                    let yseg = y + seg.firstRow
                    let r0 = g0, r1 = min(seg.rows, r0 + itemRows)
                    let t0 = (item / groupCount) * tokensPerBlock, t1 = min(tokens, t0 + tokensPerBlock)
                    if format.isFloat {
                        for r in r0..<r1 {
                            hRowByTokens(base + r * rowBytes, format == .bf16 ? 1 : 0, x, ldx, w.cols, t0, t1, yseg + r, ldy)
                        }
                        return
                    }
                    if let id = format.kdotID {
                        for r in r0..<r1 {
                            kRowByTokens(base + r * rowBytes, id, vnni, Int64(seg.blocksPerRow), format.usesQ8K ? a8k : a, nb,
                                         t0, t1, yseg + r, ldy)
                        }
                        return
                    }
                    var r = r0
                    if wide {
                        // Tiles of 4 rows × 8 tokens, then 4 × 4, then a row at a time (the
                        // same bits as one row and token at a time).
                        let t8 = t0 + (t1 - t0) / 8 * 8, t4 = t0 + (t1 - t0) / 4 * 4, ldw = Int64(rowBytes), ldo = Int64(ldy)
                        let n = Int64(nb)
                        while r + 4 <= r1 {
                            let rows = base + r * rowBytes
                            var t = t0
                            while t < t8 {
                                let act = UnsafePointer(a + t * nb), out = yseg + t * ldy + r
                                switch format {
                                case .q8_0: bc_quant_tile4x8_q8_0_avx512(rows, ldw, act, n, n, out, ldo)
                                case .q4_0: bc_quant_tile4x8_q4_0_avx512(rows, ldw, act, n, n, out, ldo)
                                default: bc_quant_tile4x8_q4_1_avx512(rows, ldw, act, n, n, out, ldo)
                                }
                                t += 8
                            }
                            if t < t4 {
                                let act = UnsafePointer(a + t * nb), out = yseg + t * ldy + r
                                switch format {
                                case .q8_0: bc_quant_tile4x4_q8_0_avx512(rows, ldw, act, n, n, out, ldo)
                                case .q4_0: bc_quant_tile4x4_q4_0_avx512(rows, ldw, act, n, n, out, ldo)
                                default: bc_quant_tile4x4_q4_1_avx512(rows, ldw, act, n, n, out, ldo)
                                }
                            }
                            for rr in r..<(r + 4) { rowByTokens(base + rr * rowBytes, format, a, nb, t4, t1, yseg + rr, ldy) }
                            r += 4
                        }
                    }
                    if rows8 && rowBytes < Int(Int32.max) / 8 {  // quant_rows.h's int32 gather offsets
                        // Decode: 8 rows side by side per token (independent accumulator
                        // chains), the same bits as one row at a time.
                        let ldw = Int64(rowBytes), n = Int64(nb)
                        while r + 8 <= r1 {
                            let rows = base + r * rowBytes
                            for t in t0..<t1 {
                                let act = UnsafePointer(a + t * nb), out = yseg + t * ldy + r
                                switch format {
                                case .q8_0: bc_quant_rows8_q8_0_avx512(rows, ldw, act, n, out)
                                case .q4_0: bc_quant_rows8_q4_0_avx512(rows, ldw, act, n, out)
                                default: bc_quant_rows8_q4_1_avx512(rows, ldw, act, n, out)
                                }
                            }
                            r += 8
                        }
                    }
                    while r < r1 {
                        rowByTokens(base + r * rowBytes, format, a, nb, t0, t1, yseg + r, ldy)
                        r += 1
                    }
                }
            }
        }
        #endif
    }

    #if arch(x86_64)
    /// y[t·ldy] = dot(row, x[t]) for t0 ≤ t < t1 over a 16-bit row (`bf` 1: BF16, 0: F16)
    /// with quant_hdot.h: four tokens per pass, then one at a time (the same bits).
    @inline(__always)
    static func hRowByTokens(_ row: UnsafePointer<UInt8>, _ bf: Int32, _ x: UnsafePointer<Float>, _ ldx: Int, _ cols: Int,
                             _ t0: Int, _ t1: Int, _ y: UnsafeMutablePointer<Float>, _ ldy: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4) { four in
            guard let o = four.baseAddress else { return }
            var t = t0
            while t + 4 <= t1 {
                bc_hq_dot(bf, 4, row, x + t * ldx, Int64(ldx), Int64(cols), o)
                for j in 0..<4 { y[(t + j) * ldy] = o[j] }
                t += 4
            }
            while t < t1 {
                bc_hq_dot(bf, 1, row, x + t * ldx, 0, Int64(cols), o)
                y[t * ldy] = o[0]
                t += 1
            }
        }
    }

    /// y[t·ldy] = dot(row, activations of token t) for t0 ≤ t < t1 with the quant_kdot.h
    /// kernels (format `id`, `nsb` blocks per row): four tokens per pass over the row,
    /// then one at a time; `vnni` picks the VNNI variant. The same bits either way.
    @inline(__always)
    static func kRowByTokens(_ row: UnsafePointer<UInt8>, _ id: Int32, _ vnni: Int32, _ nsb: Int64,
                             _ a: UnsafeMutablePointer<bc_q8a_block>, _ nb: Int, _ t0: Int, _ t1: Int,
                             _ y: UnsafeMutablePointer<Float>, _ ldy: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4) { four in
            guard let o = four.baseAddress else { return }
            var t = t0
            while t + 4 <= t1 {
                bc_kq_dot(id, vnni, 4, row, a + t * nb, Int64(nb), nsb, o)
                for j in 0..<4 { y[(t + j) * ldy] = o[j] }
                t += 4
            }
            while t < t1 {
                bc_kq_dot(id, vnni, 1, row, a + t * nb, Int64(nb), nsb, o)
                y[t * ldy] = o[0]
                t += 1
            }
        }
    }
    #endif

    #if arch(x86_64)
    /// y[t·ldy] = dot(row, activations of token t) for t0 ≤ t < t1 with the AVX2 kernels:
    /// four tokens per pass over the row, then one at a time (the same bits either way).
    @inline(__always)
    static func rowByTokens(_ row: UnsafePointer<UInt8>, _ format: QuantFormat, _ a: UnsafeMutablePointer<bc_q8a_block>,
                            _ nb: Int, _ t0: Int, _ t1: Int, _ y: UnsafeMutablePointer<Float>, _ ldy: Int) {
        let n = Int64(nb)
        var t = t0
        if t + 4 <= t1 {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 4) { four in
                guard let o = four.baseAddress else { return }
                while t + 4 <= t1 {
                    let act = UnsafePointer(a + t * nb)
                    switch format {
                    case .q8_0: bc_quant_dot4_q8_0(row, act, n, n, o)
                    case .q4_0: bc_quant_dot4_q4_0(row, act, n, n, o)
                    default: bc_quant_dot4_q4_1(row, act, n, n, o)
                    }
                    for j in 0..<4 { y[(t + j) * ldy] = o[j] }
                    t += 4
                }
            }
        }
        while t < t1 {
            let act = UnsafePointer(a + t * nb)
            let v: Float
            switch format {
            case .q8_0: v = bc_quant_dot_q8_0(row, act, n)
            case .q4_0: v = bc_quant_dot_q4_0(row, act, n)
            default: v = bc_quant_dot_q4_1(row, act, n)
            }
            y[t * ldy] = v
            t += 1
        }
    }
    #endif

    #if arch(x86_64)
    /// Quantizes rows x[t][0..<32·blocks] into `blocks` activation blocks each, at
    /// a + t·blocks. Each row's blocks depend only on that row.
    package static func quantizeActivations(_ x: UnsafePointer<Float>, ldx: Int, tokens: Int, blocks: Int,
                                            into a: UnsafeMutablePointer<bc_q8a_block>) {
        Parallel.forEach(tokens) { t in bc_quant_q8a_row(x + t * ldx, a + t * blocks, Int64(blocks)) }
    }

    /// The same for the k-quant formats (`bc_quant_q8k_row`, one scale per 256 values;
    /// `blocks` is a multiple of 8). Each row's blocks depend only on that row.
    package static func quantizeActivationsQ8K(_ x: UnsafePointer<Float>, ldx: Int, tokens: Int, blocks: Int,
                                               into a: UnsafeMutablePointer<bc_q8a_block>) {
        Parallel.forEach(tokens) { t in bc_quant_q8k_row(x + t * ldx, a + t * blocks, Int64(blocks / 8)) }
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
