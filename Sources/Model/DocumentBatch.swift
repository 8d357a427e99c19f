/// A training-style batch with no KV cache: whole documents packed one after another.
/// Document k is `documentLengths[k]` consecutive tokens of `tokens`, at positions
/// 0, 1, ... (positions restart for every document); attention never crosses documents.
/// Logits are produced for the rows whose `wantLogits` is true, in batch order.
package struct DocumentBatch {
    package var tokens: [Int32]
    package var documentLengths: [Int]
    package var wantLogits: [Bool]

    package init(tokens: [Int32] = [], documentLengths: [Int] = [], wantLogits: [Bool] = []) {
        self.tokens = tokens
        self.documentLengths = documentLengths
        self.wantLogits = wantLogits
    }

    package var count: Int { tokens.count }

    /// Appends a document; `logits`: whether its rows want logits.
    package mutating func append(document: [Int32], logits: Bool) {
        tokens += document
        documentLengths.append(document.count)
        wantLogits += [Bool](repeating: logits, count: document.count)
    }

    /// The position of every row within its document (documents checked by the caller).
    var positions: [Int] { documentLengths.flatMap { 0..<$0 } }
}
