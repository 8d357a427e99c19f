import BCCore
import BCKernels
import Testing

/// `ProjectionBackward.inputGradient` from `PackedWeights` with enough tokens for its
/// tall row items (`packedRowsPerItem`, the LoRA training path's base dX) gives the same
/// bits as the row-major path (48-row items; itself checked against float64 in
/// ProjectionAttentionBackwardTests), with 1, 2 and 3 threads, overwrite and accumulate,
/// tokens and sizes off the tiles.
@Suite(.serialized) struct PackedTallRowsTests {
    @Test func tallItemsAreBitIdentical() throws {
        var rng = SplitMix64(state: 123)
        for (tokens, rows, cols) in [(1000, 300, 145), (777, 96, 37), (1031, 40, 530)] {
            let w = (0..<rows * cols).map { _ in rng.uniform() }
            let packed = try w.withUnsafeBufferPointer { try PackedWeights($0.baseAddress!, rows: rows, cols: cols) }
            let dY = (0..<tokens * rows).map { _ in rng.uniform() }, dX0 = (0..<tokens * cols).map { _ in rng.uniform() }
            for accumulate in [false, true] {
                var a = dX0
                ProjectionBackward.inputGradient(dY, ldDY: rows, tokens: tokens, weight: w, rows: rows, cols: cols,
                                                 &a, ldDX: cols, accumulate: accumulate)
                for threads in [1, 2, 3] {
                    var b = dX0
                    BackwardKernelTests.withThreads(threads) {
                        ProjectionBackward.inputGradient(dY, ldDY: rows, tokens: tokens, packed: packed, &b, ldDX: cols,
                                                         accumulate: accumulate)
                    }
                    let differing = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
                    #expect(differing == 0, "\(tokens)x\(rows)x\(cols) accumulate \(accumulate), \(threads) threads")
                }
            }
        }
    }
}
