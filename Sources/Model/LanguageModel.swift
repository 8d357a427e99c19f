import BCCore
import BCFormats
import BCTokenizer
/// A loaded language model: the transformer and its tokenizer. Immutable after
/// load; share it between threads and inference contexts freely.
package final class LanguageModel: @unchecked Sendable {
    package let path: String
    package let transformer: Transformer
    package let tokenizer: Tokenizer

    package var config: ModelConfig { transformer.config }

    /// Loads a GGUF model, or a Hugging Face directory (config.json, safetensors,
    /// tokenizer.json) when `path` is a directory or a .safetensors file; `progress`
    /// receives fractions in [0, 1] while weights load. `weights` says how GGUF
    /// projections are held (a Hugging Face model is always float32).
    package init(path: String, weights mode: WeightMode = .native, progress: ((Double) -> Void)? = nil) throws {
        let tokenizer: Tokenizer, transformer: Transformer
        if HFModel.isHuggingFacePath(path) {
            (transformer, tokenizer) = try HFModel.load(path: path, progress: progress)
        } else {
            let file = try GGUFFile(path: path)
            tokenizer = try Tokenizer(gguf: file)
            transformer = try Transformer(gguf: file, weights: mode, progress: progress)
        }
        guard tokenizer.vocabularySize <= transformer.config.vocabSize else {
            throw BatchCoreError.format("tokenizer has \(tokenizer.vocabularySize) tokens, the model \(transformer.config.vocabSize)")
        }
        self.path = path
        self.tokenizer = tokenizer
        self.transformer = transformer
    }
}
