#if canImport(Glibc)
import Glibc
#endif

/// A float32 weight matrix stored row-major as [rows][cols] (ggml's [ne1][ne0]):
/// a projection y = x·Wᵀ maps `cols` inputs to `rows` outputs.
public final class WeightMatrix {
    public let rows: Int
    public let cols: Int
    public let data: UnsafeMutablePointer<Float>

    init(rows: Int, cols: Int) throws {
        self.rows = rows
        self.cols = cols
        data = try OptimizerTensor.allocate(rows * cols, fill: 0)
    }

    deinit { free(data) }
}

/// The weights of one decoder layer.
public struct LayerWeights {
    public let attentionNorm: WeightMatrix
    public let wq: WeightMatrix, wk: WeightMatrix, wv: WeightMatrix, wo: WeightMatrix
    public let ffnNorm: WeightMatrix
    public let gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix
}

/// All weights of a Llama-family model, dequantized to float32 at load.
public final class ModelWeights {
    public let tokenEmbedding: WeightMatrix
    public let layers: [LayerWeights]
    public let outputNorm: WeightMatrix
    /// The output head; the token embedding when embeddings are tied.
    public let output: WeightMatrix

    public var parameterCount: Int {
        var n = tokenEmbedding.rows * tokenEmbedding.cols + outputNorm.cols
        if output !== tokenEmbedding { n += output.rows * output.cols }
        for l in layers {
            for m in [l.attentionNorm, l.wq, l.wk, l.wv, l.wo, l.ffnNorm, l.gate, l.up, l.down] { n += m.rows * m.cols }
        }
        return n
    }

    /// Loads and dequantizes the tensors of `config` from a GGUF file, checking every
    /// shape against the config.
    public init(gguf: GGUFFile, config c: ModelConfig, progress: ((Double) -> Void)? = nil) throws {
        var loaded = 0
        let total = 3 + 9 * c.layerCount
        func load(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
            guard let info = gguf.tensor(named: name) else { throw BatchCoreError.format("missing tensor '\(name)'") }
            let expected = rows == 1 ? [cols] : [cols, rows]
            guard info.dims == expected else {
                throw BatchCoreError.format("tensor '\(name)' has shape \(info.dims), expected \(expected)")
            }
            let m = try WeightMatrix(rows: rows, cols: cols)
            try dequantize(type: info.type, data: try gguf.tensorData(name), count: rows * cols, into: m.data)
            loaded += 1
            progress?(Double(loaded) / Double(total))
            return m
        }
        let d = c.embeddingDim, kv = c.kvDim, ff = c.feedForwardDim
        tokenEmbedding = try load("token_embd.weight", rows: c.vocabSize, cols: d)
        var layers: [LayerWeights] = []
        for i in 0..<c.layerCount {
            let p = "blk.\(i)."
            layers.append(LayerWeights(
                attentionNorm: try load(p + "attn_norm.weight", rows: 1, cols: d),
                wq: try load(p + "attn_q.weight", rows: d, cols: d),
                wk: try load(p + "attn_k.weight", rows: kv, cols: d),
                wv: try load(p + "attn_v.weight", rows: kv, cols: d),
                wo: try load(p + "attn_output.weight", rows: d, cols: d),
                ffnNorm: try load(p + "ffn_norm.weight", rows: 1, cols: d),
                gate: try load(p + "ffn_gate.weight", rows: ff, cols: d),
                up: try load(p + "ffn_up.weight", rows: ff, cols: d),
                down: try load(p + "ffn_down.weight", rows: d, cols: ff)))
        }
        self.layers = layers
        outputNorm = try load("output_norm.weight", rows: 1, cols: d)
        output = c.tiedEmbeddings ? tokenEmbedding : try load("output.weight", rows: c.vocabSize, cols: d)
    }
}
