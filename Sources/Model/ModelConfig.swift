import BCCore
import BCFormats
/// Hyperparameters of a Llama-family decoder (RMSNorm, RoPE, grouped-query
/// attention, SwiGLU MLP).
package struct ModelConfig: Equatable, Sendable {
    package var architecture: String
    package var layerCount: Int
    package var embeddingDim: Int
    package var headCount: Int
    package var kvHeadCount: Int
    package var feedForwardDim: Int
    package var vocabSize: Int
    package var contextLength: Int
    package var ropeBase: Float
    package var rmsEps: Float
    package var tiedEmbeddings: Bool

    package var headDim: Int { embeddingDim / headCount }
    package var kvDim: Int { kvHeadCount * headDim }

    package init(architecture: String = "llama", layerCount: Int, embeddingDim: Int, headCount: Int, kvHeadCount: Int,
                feedForwardDim: Int, vocabSize: Int, contextLength: Int, ropeBase: Float = 10000, rmsEps: Float = 1e-5,
                tiedEmbeddings: Bool = true) {
        self.architecture = architecture
        self.layerCount = layerCount
        self.embeddingDim = embeddingDim
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        self.feedForwardDim = feedForwardDim
        self.vocabSize = vocabSize
        self.contextLength = contextLength
        self.ropeBase = ropeBase
        self.rmsEps = rmsEps
        self.tiedEmbeddings = tiedEmbeddings
    }

    package func validate() throws {
        func check(_ ok: Bool, _ what: String) throws { if !ok { throw BatchCoreError.format("model config: \(what)") } }
        try check(layerCount > 0 && layerCount <= 1024, "layer count \(layerCount)")
        try check(embeddingDim > 0 && embeddingDim <= 65536, "embedding length \(embeddingDim)")
        try check(headCount > 0 && embeddingDim % headCount == 0, "head count \(headCount) does not divide \(embeddingDim)")
        try check(headDim % 2 == 0, "head dimension \(headDim) is odd")
        try check(kvHeadCount > 0 && headCount % kvHeadCount == 0, "kv head count \(kvHeadCount) does not divide \(headCount)")
        try check(feedForwardDim > 0 && feedForwardDim <= 1 << 20, "feed-forward length \(feedForwardDim)")
        try check(vocabSize > 0 && vocabSize <= 1 << 22, "vocab size \(vocabSize)")
        try check(contextLength > 0 && contextLength <= 1 << 24, "context length \(contextLength)")
        try check(ropeBase.isFinite && ropeBase > 1, "rope base \(ropeBase)")
        try check(rmsEps.isFinite && rmsEps > 0 && rmsEps < 1, "rms epsilon \(rmsEps)")
    }

    /// Reads the config from GGUF metadata (`<arch>.block_count` etc.).
    package init(gguf: GGUFFile) throws {
        let arch = try gguf.string("general.architecture")
        guard arch == "llama" else { throw BatchCoreError(.unsupported, "architecture '\(arch)' is not supported (llama only)") }
        func int(_ key: String) throws -> Int { try gguf.int("\(arch).\(key)") }
        let vocab: Int
        if gguf.value("\(arch).vocab_size") != nil { vocab = try int("vocab_size") }
        else if let tokens = gguf.value("tokenizer.ggml.tokens")?.arrayValue { vocab = tokens.count }
        else if let emb = gguf.tensor(named: "token_embd.weight"), emb.dims.count == 2 { vocab = emb.dims[1] }
        else { throw BatchCoreError.format("cannot determine the vocabulary size") }
        let heads = try int("attention.head_count")
        self.init(
            architecture: arch, layerCount: try int("block_count"), embeddingDim: try int("embedding_length"),
            headCount: heads,
            kvHeadCount: gguf.value("\(arch).attention.head_count_kv") != nil ? try int("attention.head_count_kv") : heads,
            feedForwardDim: try int("feed_forward_length"), vocabSize: vocab, contextLength: try int("context_length"),
            ropeBase: gguf.value("\(arch).rope.freq_base") != nil ? try gguf.float("\(arch).rope.freq_base") : 10000,
            rmsEps: try gguf.float("\(arch).attention.layer_norm_rms_epsilon"),
            tiedEmbeddings: gguf.tensor(named: "output.weight") == nil)
        if gguf.value("\(arch).rope.dimension_count") != nil {
            let ropeDims = try int("rope.dimension_count")
            guard ropeDims == headDim else {
                throw BatchCoreError(.unsupported, "partial rotary embeddings (\(ropeDims) of \(headDim)) are not supported")
            }
        }
        try validate()
    }
}
