/// How training data files are read into `TrainingExample`s.
package struct DataLoadOptions: Equatable, Sendable {
    /// Which tokens of a `{"messages": [...]}` conversation are targets.
    package enum ChatTargets: Equatable, Sendable {
        /// Only assistant turns: each assistant message's content tokens and the
        /// end-of-turn token that closes it (TRL's assistant_only_loss / HF's
        /// `{% generation %}` mask). The default.
        case assistantOnly
        /// Every token but the first.
        case allTokens
    }

    /// What to do with an example longer than `maxTokens`.
    package enum OverLength: Equatable, Sendable {
        /// Throw, naming the line. The default.
        case error
        /// Keep the first `maxTokens` tokens (counted in `DataLoadReport.truncated`).
        case truncate
    }

    /// What to do with an invalid example (bad JSON, missing or wrong-typed field,
    /// empty content, unknown role, no target left).
    package enum InvalidExample: Equatable, Sendable {
        /// Throw, naming the line; nothing is returned. The default.
        case error
        /// Leave the example out; its error message goes to `DataLoadReport.skipped`.
        case skip
    }

    package var chatTargets: ChatTargets
    /// The most tokens one example may have (the context length or the micro-batch
    /// token budget, whichever is smaller). Plain-text files are cut into documents of
    /// at most this many tokens.
    package var maxTokens: Int
    package var overLength: OverLength
    package var invalidExample: InvalidExample

    package init(maxTokens: Int, chatTargets: ChatTargets = .assistantOnly, overLength: OverLength = .error,
                 invalidExample: InvalidExample = .error) {
        self.maxTokens = maxTokens
        self.chatTargets = chatTargets
        self.overLength = overLength
        self.invalidExample = invalidExample
    }
}

/// What loading a data file did.
package struct DataLoadReport: Equatable, Sendable {
    /// Examples returned.
    package var examples = 0
    /// Their tokens and target tokens.
    package var tokens = 0
    package var targets = 0
    /// Examples cut to `maxTokens` (`.truncate`), and the tokens cut off them.
    package var truncated = 0
    package var truncatedTokens = 0
    /// One message per example left out (`.skip`), each naming its line.
    package var skipped: [String] = []

    package init() {}

    mutating func add(_ e: TrainingExample) {
        examples += 1
        tokens += e.count
        targets += e.targetCount
    }
}
