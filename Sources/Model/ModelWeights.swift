import BCCore
import BCKernels
import BCFormats

/// The weights of one decoder layer. Q, K and V are stacked into one projection (rows
/// q | k | v) and so are the MLP's gate and up projections, so each pair or triple is
/// one matrix product (`ModelWeights.location` gives each part's rows).
package struct LayerWeights {
    /// [d], the RMSNorm gain before attention.
    package let attentionNorm: WeightVector
    /// [d + 2·kvDim][d]: rows 0..<d are Wq, then Wk, then Wv.
    package let qkv: Linear
    /// [d][d].
    package let wo: Linear
    /// [d], the RMSNorm gain before the MLP.
    package let ffnNorm: WeightVector
    /// [2·ff][d]: rows 0..<ff are the gate projection, then up.
    package let gateUp: Linear
    /// [d][ff].
    package let down: Linear

    /// Every projection of the layer.
    package var projections: [Linear] { [qkv, wo, gateUp, down] }
}

/// All weights of a Llama-family model. Projections stored in a `QuantFormat` (Q8_0,
/// Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; one per part of a stack) stay
/// in their blocks (`WeightMode.native`, see `Linear.quantized`); every other tensor,
/// and all of them with `WeightMode.float32`, is dequantized to float32 at load. Projections
/// (and the token embedding, which is the output head when tied: lookups gather rows
/// from its packed copy) are `Linear`s holding their packed copy only; norm gains are
/// `WeightVector`s.
package final class ModelWeights {
    package let config: ModelConfig
    /// [vocab][d].
    package let tokenEmbedding: Linear
    package let layers: [LayerWeights]
    /// [d].
    package let outputNorm: WeightVector
    /// [vocab][d], the output head; the token embedding itself when embeddings are tied.
    package let output: Linear

    /// Whether the output head is the token embedding.
    package var tiedOutput: Bool { output === tokenEmbedding }

    /// The projection a tensor belongs to is stacked from these parts, in row order.
    static func stack(of t: LlamaTensor) -> [LlamaTensor] {
        switch t {
        case .q, .k, .v: return [.q, .k, .v]
        case .gate, .up: return [.gate, .up]
        default: return [t]
        }
    }

    /// Where tensor `name` lives: a vector, or a run of rows of a projection.
    package func location(of name: LlamaTensorName) -> ModelParameter.Storage {
        let t = name.tensor
        var first = 0
        for part in Self.stack(of: t) {
            if part == t { break }
            first += part.shape(config).rows
        }
        switch t {
        case .tokenEmbedding: return .rows(tokenEmbedding, first: 0)
        case .output: return .rows(output, first: 0)
        case .outputNorm: return .vector(outputNorm)
        case .attentionNorm: return .vector(layers[name.layer].attentionNorm)
        case .ffnNorm: return .vector(layers[name.layer].ffnNorm)
        case .q, .k, .v: return .rows(layers[name.layer].qkv, first: first)
        case .attentionOutput: return .rows(layers[name.layer].wo, first: 0)
        case .gate, .up: return .rows(layers[name.layer].gateUp, first: first)
        case .down: return .rows(layers[name.layer].down, first: 0)
        }
    }

    /// Every tensor, named as in GGUF, in `LlamaTensorNames.all` order (stable: the
    /// token embedding, layer by layer, the output norm, then the output head unless
    /// tied). Each value is held once (a tied output head is listed as the embedding).
    package var parameters: [ModelParameter] {
        LlamaTensorNames.all(layerCount: layers.count, tiedOutput: tiedOutput).map { n in
            let s = n.tensor.shape(config)
            return ModelParameter(name: n.gguf, shape: s.rows == 1 ? [s.cols] : [s.rows, s.cols], storage: location(of: n))
        }
    }

    package var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    /// Each base weight type ("F32", "Q4_1", ...) with the bytes it holds over every
    /// projection and norm gain (the tied embedding counted once), sorted by type name.
    package var storageByType: [(type: String, bytes: Int)] {
        var byType: [String: Int] = [:]
        for m in projections { for (type, bytes) in m.storageParts { byType[type, default: 0] += bytes } }
        let vectors = [outputNorm] + layers.flatMap { [$0.attentionNorm, $0.ffnNorm] }
        byType["F32", default: 0] += vectors.reduce(0) { $0 + $1.count * 4 }
        return byType.map { ($0.key, $0.value) }.sorted { $0.type < $1.type }
    }

    /// Every projection (the embedding once when tied).
    package var projections: [Linear] {
        [tokenEmbedding] + layers.flatMap(\.projections) + (tiedOutput ? [] : [output])
    }

    /// Whether a trainer holds these weights (one at a time; `Trainer` sets and clears it).
    package var hasTrainer = false

    /// Gives every projection a trainable copy and every tensor a gradient (see
    /// `Linear.makeTrainable`). On failure the tensors made trainable so far stay so.
    package func makeTrainable() throws {
        for m in projections { try m.makeTrainable() }
        for v in [outputNorm] + layers.flatMap({ [$0.attentionNorm, $0.ffnNorm] }) { try v.makeTrainable() }
    }

    /// Frees every trainable copy and gradient.
    package func dropTrainable() {
        for m in projections { m.dropTrainable() }
        for v in [outputNorm] + layers.flatMap({ [$0.attentionNorm, $0.ffnNorm] }) { v.dropTrainable() }
    }

    /// Builds the weights of `c`, calling `load(name, rows, cols, dst)` once per tensor
    /// of `LlamaTensorNames.all` (in that order) to write its row-major values to `dst`.
    /// Each projection is filled in a temporary buffer and packed at once, so at most one
    /// row-major projection exists at a time.
    /// `quantized(tensor, layer)`, when given, is asked first for each projection and may
    /// return it built from its stored blocks (it then counts as loaded).
    init(config c: ModelConfig, tiedOutput: Bool, progress: ((Double) -> Void)?,
         quantized: ((LlamaTensor, Int) throws -> Linear?)? = nil,
         load: (LlamaTensorName, Int, Int, UnsafeMutablePointer<Float>) throws -> Void) throws {
        try c.validate()
        let total = Double(LlamaTensorNames.all(layerCount: c.layerCount, tiedOutput: tiedOutput).count)
        var loaded = 0
        func read(_ t: LlamaTensor, _ layer: Int, into dst: UnsafeMutablePointer<Float>) throws {
            let s = t.shape(c)
            try load(LlamaTensorName(tensor: t, layer: layer), s.rows, s.cols, dst)
            loaded += 1
            progress?(Double(loaded) / total)
        }
        func vector(_ t: LlamaTensor, _ layer: Int) throws -> WeightVector {
            let v = try WeightVector(count: t.shape(c).cols)
            try read(t, layer, into: v.data)
            return v
        }
        func linear(_ t: LlamaTensor, _ layer: Int) throws -> Linear {
            let parts = Self.stack(of: t), cols = t.shape(c).cols
            if let q = try quantized?(t, layer) {
                loaded += parts.count
                progress?(Double(loaded) / total)
                return q
            }
            return try Linear(rows: parts.reduce(0) { $0 + $1.shape(c).rows }, cols: cols) { buf in
                var row = 0
                for part in parts {
                    try read(part, layer, into: buf + row * cols)
                    row += part.shape(c).rows
                }
            }
        }
        config = c
        tokenEmbedding = try linear(.tokenEmbedding, 0)
        var layers: [LayerWeights] = []
        layers.reserveCapacity(c.layerCount)
        for i in 0..<c.layerCount {
            layers.append(LayerWeights(
                attentionNorm: try vector(.attentionNorm, i), qkv: try linear(.q, i), wo: try linear(.attentionOutput, i),
                ffnNorm: try vector(.ffnNorm, i), gateUp: try linear(.gate, i), down: try linear(.down, i)))
        }
        self.layers = layers
        outputNorm = try vector(.outputNorm, 0)
        output = tiedOutput ? tokenEmbedding : try linear(.output, 0)
    }

    /// Loads the tensors of `config` from a GGUF file, checking every shape against the
    /// config. `weights`: `.native` keeps a projection whose parts are all stored in
    /// `QuantFormat`s in those formats, part by part (copied, the file is not kept);
    /// `.float32` dequantizes everything.
    package convenience init(gguf: GGUFFile, config c: ModelConfig, weights mode: WeightMode = .native,
                             progress: ((Double) -> Void)? = nil) throws {
        func quantized(_ t: LlamaTensor, _ layer: Int) throws -> Linear? {
            guard mode == .native, QuantGEMM.isSupported else { return nil }
            let parts = Self.stack(of: t)
            var infos: [GGUFTensorInfo] = []
            for p in parts {
                let name = LlamaTensorName(tensor: p, layer: layer).gguf
                guard let info = gguf.tensor(named: name) else { throw BatchCoreError.format("missing tensor '\(name)'") }
                let s = p.shape(c)
                guard info.dims == [s.cols, s.rows] else {
                    throw BatchCoreError.format("tensor '\(name)' has shape \(info.dims), expected \([s.cols, s.rows])")
                }
                infos.append(info)
            }
            // Each part keeps its own format (Q4_K_M files mix Q4_K, Q6_K, Q5_0, Q8_0 in one
            // stack); a part of any other type makes the whole projection float32.
            let cols = t.shape(c).cols
            var formats: [QuantFormat] = []
            for info in infos {
                guard let f = QuantFormat(rawValue: info.type.rawValue), cols % f.blockValues == 0 else { return nil }
                formats.append(f)
            }
            let q = try QuantizedWeights(parts: zip(formats, parts).map { ($0, $1.shape(c).rows) }, cols: cols) { dst in
                var offset = 0
                for ((p, info), f) in zip(zip(parts, infos), formats) {
                    let bytes = p.shape(c).rows * (cols / f.blockValues * f.blockBytes)
                    let data = try gguf.tensorData(info.name)
                    guard data.count >= bytes, let src = data.baseAddress else {
                        throw BatchCoreError.format("tensor '\(info.name)' has \(data.count) bytes, expected \(bytes)")
                    }
                    (dst + offset).copyMemory(from: src, byteCount: bytes)
                    offset += bytes
                }
            }
            return Linear(quantized: q)
        }
        try self.init(config: c, tiedOutput: c.tiedEmbeddings, progress: progress, quantized: quantized) { n, rows, cols, dst in
            let name = n.gguf
            guard let info = gguf.tensor(named: name) else { throw BatchCoreError.format("missing tensor '\(name)'") }
            let expected = rows == 1 ? [cols] : [cols, rows]
            guard info.dims == expected else {
                throw BatchCoreError.format("tensor '\(name)' has shape \(info.dims), expected \(expected)")
            }
            try dequantize(type: info.type, data: try gguf.tensorData(name), count: rows * cols, into: dst)
        }
    }
}
