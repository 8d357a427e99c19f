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

/// The weights of one decoder layer. Q, K and V are stacked into one matrix (rows
/// q | k | v) and so are the MLP's gate and up projections, so each pair or triple
/// is one matrix product.
public struct LayerWeights {
    public let attentionNorm: WeightMatrix
    /// [d + 2·kvDim][d]: rows 0..<d are Wq, then Wk, then Wv.
    public let qkv: WeightMatrix
    public let wo: WeightMatrix
    public let ffnNorm: WeightMatrix
    /// [2·ff][d]: rows 0..<ff are the gate projection, then up.
    public let gateUp: WeightMatrix
    public let down: WeightMatrix
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
            for m in [l.attentionNorm, l.qkv, l.wo, l.ffnNorm, l.gateUp, l.down] { n += m.rows * m.cols }
        }
        return n
    }

    /// Assembles weights from matrices already loaded (loaders of other formats).
    init(tokenEmbedding: WeightMatrix, layers: [LayerWeights], outputNorm: WeightMatrix, output: WeightMatrix) {
        self.tokenEmbedding = tokenEmbedding
        self.layers = layers
        self.outputNorm = outputNorm
        self.output = output
    }

    /// Loads and dequantizes the tensors of `config` from a GGUF file, checking every
    /// shape against the config.
    public init(gguf: GGUFFile, config c: ModelConfig, progress: ((Double) -> Void)? = nil) throws {
        var loaded = 0
        let total = 3 + 9 * c.layerCount - (c.tiedEmbeddings ? 1 : 0)
        /// Dequantizes tensor `name` of shape [rows][cols] into `dst`.
        func load(_ name: String, rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>) throws {
            guard let info = gguf.tensor(named: name) else { throw BatchCoreError.format("missing tensor '\(name)'") }
            let expected = rows == 1 ? [cols] : [cols, rows]
            guard info.dims == expected else {
                throw BatchCoreError.format("tensor '\(name)' has shape \(info.dims), expected \(expected)")
            }
            try dequantize(type: info.type, data: try gguf.tensorData(name), count: rows * cols, into: dst)
            loaded += 1
            progress?(Double(loaded) / Double(total))
        }
        func load(_ name: String, rows: Int, cols: Int) throws -> WeightMatrix {
            let m = try WeightMatrix(rows: rows, cols: cols)
            try load(name, rows: rows, cols: cols, into: m.data)
            return m
        }
        /// Stacks tensors of `cols` columns row-wise into one matrix.
        func stack(_ parts: [(String, Int)], cols: Int) throws -> WeightMatrix {
            let m = try WeightMatrix(rows: parts.reduce(0) { $0 + $1.1 }, cols: cols)
            var row = 0
            for (name, rows) in parts {
                try load(name, rows: rows, cols: cols, into: m.data + row * cols)
                row += rows
            }
            return m
        }
        let d = c.embeddingDim, kv = c.kvDim, ff = c.feedForwardDim
        tokenEmbedding = try load("token_embd.weight", rows: c.vocabSize, cols: d)
        var layers: [LayerWeights] = []
        for i in 0..<c.layerCount {
            let p = "blk.\(i)."
            layers.append(LayerWeights(
                attentionNorm: try load(p + "attn_norm.weight", rows: 1, cols: d),
                qkv: try stack([(p + "attn_q.weight", d), (p + "attn_k.weight", kv), (p + "attn_v.weight", kv)], cols: d),
                wo: try load(p + "attn_output.weight", rows: d, cols: d),
                ffnNorm: try load(p + "ffn_norm.weight", rows: 1, cols: d),
                gateUp: try stack([(p + "ffn_gate.weight", ff), (p + "ffn_up.weight", ff)], cols: d),
                down: try load(p + "ffn_down.weight", rows: d, cols: ff)))
        }
        self.layers = layers
        outputNorm = try load("output_norm.weight", rows: 1, cols: d)
        output = c.tiedEmbeddings ? tokenEmbedding : try load("output.weight", rows: c.vocabSize, cols: d)
    }
}
