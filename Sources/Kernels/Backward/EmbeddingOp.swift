import BCCore

/// Token embedding lookup: the forward/backward pair of the training pass.
///
/// Buffers:
///
///     tokens  [T]       Int32 token ids in 0..<V
///     table   [V × d]   the embedding matrix E (row v = token v)
///     x       [T × d]   forward, WRITTEN: x[t] = E[tokens[t]]
///     dx      [T × d]   dL/dx
///     dTable  [V × d]   backward, ACCUMULATED (+=): dE[tokens[t]] += dx[t]
///
/// Tied output head: with the head's weight equal to E, the head's dW (dlogitsᵀ · normed,
/// [V × d]) and this lookup's gradient are ONE gradient: both add into the same dTable
/// buffer (neither overwrites it). The trainer calls the two in a fixed order each step,
/// so the sum's bits are fixed too.
///
/// Deterministic: backward sorts the rows by (token, row) and adds each token's rows in
/// row order, tokens spread over threads; the bits do not depend on the thread count, and
/// rows split over several calls (in row order) give the bits of one call.
package enum EmbeddingOp {
    static func check(_ tokens: UnsafePointer<Int32>, rows: Int, vocab: Int, d: Int) throws {
        guard rows >= 0, vocab > 0, d > 0 else { throw BatchCoreError.invalid("embedding: \(rows) rows, vocabulary \(vocab), width \(d)") }
        for r in 0..<rows {
            let t = Int(tokens[r])
            guard t >= 0 && t < vocab else { throw BatchCoreError.invalid("embedding: row \(r) has token \(t), outside 0..<\(vocab)") }
        }
    }

    /// x[t] = table[tokens[t]]. Throws (changing nothing) for a token outside 0..<vocab.
    package static func forward(tokens: UnsafePointer<Int32>, rows: Int, table: UnsafePointer<Float>, vocab: Int, d: Int,
                                x: UnsafeMutablePointer<Float>) throws {
        try check(tokens, rows: rows, vocab: vocab, d: d)
        forEachRowBlock(rows, block: 16) { range in
            for r in range { (x + r * d).update(from: table + Int(tokens[r]) * d, count: d) }
        }
    }

    /// dTable[tokens[t]] += dx[t]. Throws (changing nothing) for a token outside 0..<vocab.
    package static func backward(tokens: UnsafePointer<Int32>, rows: Int, dx: UnsafePointer<Float>, d: Int,
                                 dTable: UnsafeMutablePointer<Float>, vocab: Int) throws {
        try check(tokens, rows: rows, vocab: vocab, d: d)
        if rows == 0 { return }
        // Rows ordered by (token, row); runs of one token are the independent work items.
        let order = (0..<rows).sorted { a, b in tokens[a] != tokens[b] ? tokens[a] < tokens[b] : a < b }
        var runStarts: [Int] = []
        for k in 0..<rows where k == 0 || tokens[order[k]] != tokens[order[k - 1]] { runStarts.append(k) }
        runStarts.append(rows)
        let runs = runStarts.count - 1
        order.withUnsafeBufferPointer { order in
            runStarts.withUnsafeBufferPointer { starts in
                forEachRowBlock(runs, block: 16) { range in
                    for run in range {
                        let dst = dTable + Int(tokens[order[starts[run]]]) * d
                        for k in starts[run]..<starts[run + 1] { VectorMath.add(dx + order[k] * d, into: dst, d) }
                    }
                }
            }
        }
    }
}
