/// A loaded language model: the transformer and its tokenizer. Immutable after
/// load; share it between threads and inference contexts freely.
public final class LanguageModel: @unchecked Sendable {
    public let path: String
    public let transformer: Transformer
    public let tokenizer: Tokenizer

    public var config: ModelConfig { transformer.config }

    /// Loads a GGUF model; `progress` receives fractions in [0, 1] while weights load.
    public init(path: String, progress: ((Double) -> Void)? = nil) throws {
        let file = try GGUFFile(path: path)
        let tokenizer = try Tokenizer(gguf: file)
        let transformer = try Transformer(gguf: file, progress: progress)
        guard tokenizer.vocabularySize <= transformer.config.vocabSize else {
            throw BatchCoreError.format("tokenizer has \(tokenizer.vocabularySize) tokens, the model \(transformer.config.vocabSize)")
        }
        self.path = path
        self.tokenizer = tokenizer
        self.transformer = transformer
    }
}
