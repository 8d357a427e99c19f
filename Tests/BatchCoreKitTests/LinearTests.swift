import BCCore
import BCKernels
import BCModel
import Foundation
import Testing

/// `Linear` (packed base weight + trainable copy + LoRA slots) against float64
/// references on fresh random inputs, shapes off the kernel's 16-row panels and 6-token
/// tiles, and ranks 1...16.
///
/// Tolerance: for an output value y = Σ_k x_k·W_ok + scale·Σ_j B_oj·Σ_k A_jk·x_k,
/// |y − ref| ≤ (cols + rank + 4)·2⁻²⁴·(Σ_k|x_k·W_ok| + |scale|·Σ_j|B_oj|·Σ_k|A_jk·x_k|),
/// the float32 summation bound of the base product plus the rounding of the adapter
/// term (accumulated in double, rounded once) and of the final add.
@Suite struct LinearTests {
    static func random(_ n: Int, _ g: inout SplitMix64) -> [Float] { (0..<n).map { _ in g.uniform() } }

    /// Worst error of `y` rows [t0, t1) relative to the bound above (≤ 1 passes), with
    /// `adapterOf(t)` the slot (A, B, rank, scale) applied to row t, if any.
    static func worstError(y: [Float], x: [Float], w: [Float], rows: Int, cols: Int, tokens: Int,
                           adapterOf: (Int) -> (a: [Float], b: [Float], rank: Int, scale: Float)?) -> Double {
        var worst = 0.0
        for t in 0..<tokens {
            let lora = adapterOf(t)
            var u = [Double](repeating: 0, count: lora?.rank ?? 0), uMag = u
            if let lora {
                for j in 0..<lora.rank {
                    for k in 0..<cols {
                        let p = Double(lora.a[j * cols + k]) * Double(x[t * cols + k])
                        u[j] += p
                        uMag[j] += abs(p)
                    }
                }
            }
            for o in 0..<rows {
                var ref = 0.0, mag = 0.0
                for k in 0..<cols {
                    let p = Double(x[t * cols + k]) * Double(w[o * cols + k])
                    ref += p
                    mag += abs(p)
                }
                if let lora {
                    var s = 0.0, sMag = 0.0
                    for j in 0..<lora.rank {
                        s += Double(lora.b[o * lora.rank + j]) * u[j]
                        sMag += abs(Double(lora.b[o * lora.rank + j])) * uMag[j]
                    }
                    ref += Double(lora.scale) * s
                    mag += abs(Double(lora.scale)) * sMag
                }
                let bound = Double(cols + (lora?.rank ?? 0) + 4) * 0x1p-24 * mag + 1e-30
                worst = max(worst, abs(Double(y[t * rows + o]) - ref) / bound)
            }
        }
        return worst
    }

    /// The base product over all rows plus, per adapter segment, scale·(x·Aᵀ)·Bᵀ matches
    /// float64; rows outside every segment get the base product only; and each row's
    /// result is bit-identical when computed alone (batch invariance).
    @Test func forwardWithAdapterSegmentsMatchesFloat64AndIsBatchInvariant() throws {
        var g = SplitMix64(state: 0x11A7)
        for (rows, cols) in [(1, 1), (17, 7), (45, 33), (101, 577), (3, 130)] {
            let w = Self.random(rows * cols, &g)
            let linear = try w.withUnsafeBufferPointer { try Linear(rows: rows, cols: cols, rowMajor: $0.baseAddress!) }
            var slots: [(a: [Float], b: [Float], rank: Int, scale: Float)] = []
            for rank in [1, 2, 3, 5, 8, 13, 16] {
                let a = Self.random(rank * cols, &g), b = Self.random(rows * rank, &g)
                let scale = 0.25 + Float(rank) / 7
                #expect(try linear.attach(LoRASlot(rows: rows, cols: cols, rank: rank, scale: scale, a: a, b: b)) == slots.count)
                slots.append((a, b, rank, scale))
            }
            for tokens in [1, 7, 13, 40] {
                let x = Self.random(tokens * cols, &g)
                // Segments of varying adapters with gaps (rows of no adapter) between them.
                var segments: [Linear.AdapterSegment] = []
                var adapterOfRow = [Int?](repeating: nil, count: tokens)
                var t = tokens > 1 ? 1 : 0, s = 0
                while t < tokens {
                    let count = min(tokens - t, 1 + s % 4)
                    segments.append(.init(adapter: s % slots.count, first: t, count: count))
                    for r in t..<t + count { adapterOfRow[r] = s % slots.count }
                    t += count + (s % 2)
                    s += 1
                }
                var y = [Float](repeating: .nan, count: tokens * rows)
                try linear.forward(x, ldx: cols, &y, ldy: rows, tokens: tokens, segments: segments)
                let worst = Self.worstError(y: y, x: x, w: w, rows: rows, cols: cols, tokens: tokens) { r in
                    adapterOfRow[r].map { slots[$0] }
                }
                #expect(worst <= 1, "\(tokens) x \(rows)x\(cols): error \(worst) of the bound")
                // Rows outside every segment equal the base product bit for bit.
                var base = [Float](repeating: .nan, count: tokens * rows)
                linear.forward(x, ldx: cols, &base, ldy: rows, tokens: tokens)
                for r in 0..<tokens where adapterOfRow[r] == nil {
                    #expect(Array(y[r * rows..<(r + 1) * rows]) == Array(base[r * rows..<(r + 1) * rows]), "row \(r) without adapter")
                }
                // Batch invariance: each row alone, with its adapter as a one-row segment,
                // gives the same bits.
                var same = true
                for r in 0..<tokens {
                    var alone = [Float](repeating: .nan, count: rows)
                    let seg = adapterOfRow[r].map { [Linear.AdapterSegment(adapter: $0, first: 0, count: 1)] } ?? []
                    try Array(x[r * cols..<(r + 1) * cols]).withUnsafeBufferPointer {
                        try linear.forward($0.baseAddress!, ldx: cols, &alone, ldy: rows, tokens: 1, segments: seg)
                    }
                    same = same && alone.map(\.bitPattern) == y[r * rows..<(r + 1) * rows].map(\.bitPattern)
                }
                #expect(same, "\(tokens) x \(rows)x\(cols): a row alone differs from the batched row")
            }
        }
    }

    /// addAdapter on a strided sub-block (ldx > cols, ldy > rows) adds exactly the
    /// adapter term of forward(..., segments:), and touches nothing outside the block.
    @Test func addAdapterOnStridedRows() throws {
        var g = SplitMix64(state: 0xADD)
        let rows = 19, cols = 23, tokens = 9, ldx = 31, ldy = 27, rank = 4
        let w = Self.random(rows * cols, &g)
        let linear = try w.withUnsafeBufferPointer { try Linear(rows: rows, cols: cols, rowMajor: $0.baseAddress!) }
        let a = Self.random(rank * cols, &g), b = Self.random(rows * rank, &g)
        try linear.attach(LoRASlot(rows: rows, cols: cols, rank: rank, scale: 0.5, a: a, b: b))
        let x = Self.random(tokens * ldx, &g)
        var y = Self.random(tokens * ldy, &g)
        let before = y
        linear.forward(x, ldx: ldx, &y, ldy: ldy, tokens: tokens)
        try linear.addAdapter(0, x, ldx: ldx, &y, ldy: ldy, tokens: tokens)
        var dense = [Float](repeating: 0, count: tokens * rows), xd = [Float](repeating: 0, count: tokens * cols)
        for t in 0..<tokens {
            for o in 0..<rows { dense[t * rows + o] = y[t * ldy + o] }
            for k in 0..<cols { xd[t * cols + k] = x[t * ldx + k] }
            for o in rows..<ldy { #expect(y[t * ldy + o] == before[t * ldy + o], "padding of row \(t) changed") }
        }
        let worst = Self.worstError(y: dense, x: xd, w: w, rows: rows, cols: cols, tokens: tokens) { _ in (a, b, rank, 0.5) }
        #expect(worst <= 1, "error \(worst) of the bound")
    }

    /// makeTrainable unpacks the exact values and a zeroed gradient; after the f32 copy
    /// changes, syncPacked makes products use the new weights (float64 reference), and
    /// the values survive dropTrainable.
    @Test func trainableCopyRoundTrip() throws {
        var g = SplitMix64(state: 0x7EA1)
        for (rows, cols) in [(1, 1), (17, 7), (45, 33), (101, 577)] {
            let w = Self.random(rows * cols, &g)
            let linear = try w.withUnsafeBufferPointer { try Linear(rows: rows, cols: cols, rowMajor: $0.baseAddress!) }
            #expect(!linear.isTrainable && linear.weight == nil && linear.grad == nil)
            #expect(throws: BatchCoreError.self) { try linear.syncPacked() }
            try linear.makeTrainable()
            let weight = try #require(linear.weight), grad = try #require(linear.grad)
            #expect(Array(UnsafeBufferPointer(start: weight, count: rows * cols)).map(\.bitPattern) == w.map(\.bitPattern))
            #expect(UnsafeBufferPointer(start: grad, count: rows * cols).allSatisfy { $0 == 0 })
            // A second call keeps the copy and gradient as they are.
            weight[0] = 3.5
            try linear.makeTrainable()
            #expect(linear.weight == weight && weight[0] == 3.5)

            let w2 = Self.random(rows * cols, &g)
            weight.update(from: w2, count: rows * cols)
            try linear.syncPacked()
            let tokens = 8
            let x = Self.random(tokens * cols, &g)
            var y = [Float](repeating: .nan, count: tokens * rows)
            linear.forward(x, ldx: cols, &y, ldy: rows, tokens: tokens)
            let worst = Self.worstError(y: y, x: x, w: w2, rows: rows, cols: cols, tokens: tokens) { _ in nil }
            #expect(worst <= 1, "\(rows)x\(cols) after syncPacked: error \(worst) of the bound")
            linear.dropTrainable()
            #expect(linear.weight == nil && linear.grad == nil)
            let unpacked = try linear.withRowMajor { Array(UnsafeBufferPointer(start: $0, count: rows * cols)) }
            #expect(unpacked.map(\.bitPattern) == w2.map(\.bitPattern))
        }
    }

    /// Bad adapters and segments throw before anything is written.
    @Test func invalidAdaptersAndSegmentsThrowAndChangeNothing() throws {
        var g = SplitMix64(state: 0xBAD)
        let rows = 5, cols = 6, tokens = 4
        let w = Self.random(rows * cols, &g)
        let linear = try w.withUnsafeBufferPointer { try Linear(rows: rows, cols: cols, rowMajor: $0.baseAddress!) }
        #expect(throws: BatchCoreError.self) {
            try LoRASlot(rows: rows, cols: cols, rank: 2, scale: 1, a: Self.random(2 * cols - 1, &g), b: Self.random(rows * 2, &g))
        }
        #expect(throws: BatchCoreError.self) {
            try LoRASlot(rows: rows, cols: cols, rank: 0, scale: 1, a: [], b: [])
        }
        #expect(throws: BatchCoreError.self) {
            try LoRASlot(rows: rows, cols: cols, rank: 1, scale: .nan, a: Self.random(cols, &g), b: Self.random(rows, &g))
        }
        #expect(throws: BatchCoreError.self) {
            try linear.attach(LoRASlot(rows: rows, cols: cols + 1, rank: 1, scale: 1, a: Self.random(cols + 1, &g),
                                       b: Self.random(rows, &g)))
        }
        try linear.attach(LoRASlot(rows: rows, cols: cols, rank: 1, scale: 1, a: Self.random(cols, &g), b: Self.random(rows, &g)))
        let x = Self.random(tokens * cols, &g)
        let y0 = Self.random(tokens * rows, &g)
        for bad in [[Linear.AdapterSegment(adapter: 1, first: 0, count: 1)],
                    [Linear.AdapterSegment(adapter: -1, first: 0, count: 1)],
                    [Linear.AdapterSegment(adapter: 0, first: 3, count: 2)],
                    [Linear.AdapterSegment(adapter: 0, first: -1, count: 1)],
                    [Linear.AdapterSegment(adapter: 0, first: 1, count: Int.max)],
                    [Linear.AdapterSegment(adapter: 0, first: 0, count: 2), .init(adapter: 0, first: 1, count: 1)]] {
            var y = y0
            #expect(throws: BatchCoreError.self) { try linear.forward(x, ldx: cols, &y, ldy: rows, tokens: tokens, segments: bad) }
            #expect(y.map(\.bitPattern) == y0.map(\.bitPattern), "\(bad) wrote to y")
        }
        var y = y0
        #expect(throws: BatchCoreError.self) { try linear.addAdapter(1, x, ldx: cols, &y, ldy: rows, tokens: tokens) }
        #expect(y.map(\.bitPattern) == y0.map(\.bitPattern))
    }
}
