import BCCore
import BCKernels

/// Keys/values of a `DocumentBatch` with no cache: attention reads every document's
/// keys/values straight from the batch's qkv activations (a view per document with row
/// stride d + 2·kvd, k at column d and v at column d + kvd), so storing is nothing and a
/// row only ever sees its own document's earlier rows.
final class SelfContainedKV: KVSource {
    private let config: ModelConfig
    /// (first batch row, rows) of each document.
    private let documents: [(first: Int, count: Int)]
    private let rows: [AttentionRow]
    /// Rows of each document, in batch order.
    var documentLengths: [Int] { documents.map(\.count) }

    /// Checks the batch against the model; throws before anything runs.
    init(_ batch: DocumentBatch, config c: ModelConfig) throws {
        let n = batch.count
        guard n > 0 else { throw BatchCoreError.invalid("empty batch") }
        guard batch.wantLogits.count == n else { throw BatchCoreError.invalid("batch arrays differ in length") }
        for (i, t) in batch.tokens.enumerated() where t < 0 || Int(t) >= c.vocabSize {
            throw BatchCoreError.invalid("token \(t) at batch index \(i) is outside the vocabulary (0..<\(c.vocabSize))")
        }
        var documents: [(first: Int, count: Int)] = []
        var rows: [AttentionRow] = []
        rows.reserveCapacity(n)
        var first = 0
        for (k, length) in batch.documentLengths.enumerated() {
            guard length > 0, length <= n - first else {
                throw BatchCoreError.invalid("document \(k) has \(length) tokens; \(n - first) of the batch's \(n) remain")
            }
            guard length <= c.contextLength else {
                throw BatchCoreError.invalid("document \(k) has \(length) tokens, beyond the context length \(c.contextLength)")
            }
            documents.append((first, length))
            for p in 0..<length { rows.append(AttentionRow(row: first + p, view: k, position: p, first: p == 0)) }
            first += length
        }
        guard first == n else {
            throw BatchCoreError.invalid("documents hold \(first) tokens, the batch \(n)")
        }
        config = c
        self.documents = documents
        self.rows = rows
    }

    /// Nothing to store: the keys/values are read where the projection put them.
    func store(layer: Int, qkv: UnsafePointer<Float>, rowStride: Int) throws {}

    func read(layer: Int, qkv: UnsafePointer<Float>, rowStride: Int, _ body: (AttentionWork) -> Void) throws {
        let d = config.embeddingDim, kvd = config.kvDim
        let views = documents.map { doc in
            let k = qkv + doc.first * rowStride + d
            return KVView(segments: [KVSegment(keys: k, values: k + kvd, start: 0, count: doc.count)], rowStride: rowStride)
        }
        body(AttentionWork(views: views, rows: rows, window: nil))
    }
}
