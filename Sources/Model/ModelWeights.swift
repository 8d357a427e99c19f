import BCCore
import BCKernels
import BCFormats
#if canImport(Glibc)
import Glibc
#endif

/// A float32 weight matrix [rows][cols] (ggml's [ne1][ne0]): a projection y = x·Wᵀ
/// maps `cols` inputs to `rows` outputs. Loaded row-major; projection matrices are then
/// packed for the kernel (`PackedWeights`) and only that copy is kept.
public final class WeightMatrix {
    public let rows: Int
    public let cols: Int
    /// Row-major values; nil once the matrix is packed.
    private var rowMajor: UnsafeMutablePointer<Float>?
    /// The projection kernel's layout (`PackedGEMM`); set by pack(), which drops the
    /// row-major copy so a model's weights are held once.
    public private(set) var packed: PackedWeights?

    init(rows: Int, cols: Int) throws {
        self.rows = rows
        self.cols = cols
        rowMajor = try Memory.allocateFloats(rows * cols, fill: 0)
    }

    deinit { free(rowMajor) }

    /// Row-major values of a matrix that is not packed (norm vectors; loaders filling a
    /// matrix before pack()).
    var data: UnsafeMutablePointer<Float> {
        guard let rowMajor else { preconditionFailure("row-major data of a packed WeightMatrix") }
        return rowMajor
    }

    /// Converts to the packed layout and frees the row-major copy (idempotent).
    func pack() throws {
        guard let rowMajor else { return }
        packed = try PackedWeights(rowMajor, rows: rows, cols: cols)
        free(rowMajor)
        self.rowMajor = nil
    }

    /// Copies row `r` (row-major order) to `out`.
    public func copyRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        if let rowMajor {
            out.update(from: rowMajor + r * cols, count: cols)
        } else if let packed {
            packed.copyRow(r, into: out)
        }
    }

    /// Calls `body` with the row-major values (unpacked into a temporary copy when packed).
    public func withRowMajor<R>(_ body: (UnsafePointer<Float>) throws -> R) throws -> R {
        if let rowMajor { return try body(rowMajor) }
        let tmp = try Memory.allocateFloats(rows * cols, fill: 0)
        defer { free(tmp) }
        for r in 0..<rows { copyRow(r, into: tmp + r * cols) }
        return try body(tmp)
    }
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
    init(tokenEmbedding: WeightMatrix, layers: [LayerWeights], outputNorm: WeightMatrix, output: WeightMatrix) throws {
        self.tokenEmbedding = tokenEmbedding
        self.layers = layers
        self.outputNorm = outputNorm
        self.output = output
        try packProjections()
    }

    /// Packs every matrix the projection kernel reads (the output head too, which is the
    /// token embedding itself when tied: lookups then gather from the packed rows).
    private func packProjections() throws {
        for l in layers {
            for m in [l.qkv, l.wo, l.gateUp, l.down] { try m.pack() }
        }
        try output.pack()
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
        try packProjections()
    }
}
