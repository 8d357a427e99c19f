import BCCore

/// One training document: its token ids and which of them are trained.
///
///     tokens    [n]  Int32 token ids, n ≥ 2
///     isTarget  [n]  Bool: token i is predicted (its loss counts) iff isTarget[i];
///                    isTarget[0] is always false (nothing precedes the first token)
///
/// In a micro-batch, row i of the document (the forward's input token i) is trained to
/// predict token i+1: its target is `tokens[i+1]` when `isTarget[i+1]`, else −1 (the
/// convention of Kernels/Backward/CrossEntropy.swift: −1 = not a target). The last row
/// of a document predicts nothing and is always −1.
package struct TrainingExample: Equatable, Sendable {
    package let tokens: [Int32]
    package let isTarget: [Bool]
    /// Number of true flags = number of rows with a target.
    package let targetCount: Int

    /// Checks the shape: equal lengths, at least 2 tokens, `isTarget[0]` false, at
    /// least one target. Throws `.invalidArgument` (changing nothing) otherwise.
    package init(tokens: [Int32], isTarget: [Bool]) throws {
        guard tokens.count == isTarget.count else {
            throw BatchCoreError.invalid("example: \(tokens.count) tokens but \(isTarget.count) target flags")
        }
        guard tokens.count >= 2 else {
            throw BatchCoreError.invalid("example: \(tokens.count) token(s); at least 2 are needed for a target")
        }
        guard !isTarget[0] else {
            throw BatchCoreError.invalid("example: the first token cannot be a target (nothing precedes it)")
        }
        var n = 0
        for f in isTarget where f { n += 1 }
        guard n > 0 else { throw BatchCoreError.invalid("example: no target tokens") }
        self.tokens = tokens
        self.isTarget = isTarget
        self.targetCount = n
    }

    /// As `init(tokens:isTarget:)`, and every id must be in 0..<vocabularySize (for
    /// examples supplied from outside, e.g. through the C ABI).
    package init(tokens: [Int32], isTarget: [Bool], vocabularySize: Int) throws {
        guard vocabularySize > 0 else { throw BatchCoreError.invalid("example: vocabulary size \(vocabularySize)") }
        for (i, t) in tokens.enumerated() where t < 0 || Int(t) >= vocabularySize {
            throw BatchCoreError.invalid("example: token \(i) has id \(t), out of range 0..<\(vocabularySize)")
        }
        try self.init(tokens: tokens, isTarget: isTarget)
    }

    package var count: Int { tokens.count }

    /// The per-row targets of this document:
    ///
    ///     targets [n]  Int32: tokens[i+1] if isTarget[i+1], else −1; targets[n−1] = −1
    package var rowTargets: [Int32] {
        var out = [Int32](repeating: -1, count: tokens.count)
        for i in 0..<(tokens.count - 1) where isTarget[i + 1] { out[i] = tokens[i + 1] }
        return out
    }

    /// The first `maxTokens` tokens (self when `maxTokens` ≥ count). Throws
    /// `.invalidArgument` when that prefix has no target.
    package func truncated(to maxTokens: Int) throws -> TrainingExample {
        guard maxTokens < tokens.count else { return self }
        guard maxTokens >= 2 else {
            throw BatchCoreError.invalid("example: truncated to \(maxTokens) token(s), no target is left")
        }
        return try TrainingExample(tokens: Array(tokens[0..<maxTokens]), isTarget: Array(isTarget[0..<maxTokens]))
    }
}
