extension Transformer {
    /// x[T × d]: row i = the embedding of tokens[i] (ids already checked against the
    /// vocabulary).
    func embed(_ tokens: [Int32], into x: UnsafeMutablePointer<Float>) {
        let d = config.embeddingDim
        for (i, t) in tokens.enumerated() { weights.tokenEmbedding.copyRow(Int(t), into: x + i * d) }
    }
}
