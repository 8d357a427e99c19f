import BCCore
import BCModel
import CBatchCore

/// Throws `.invalidArgument` for a `bc_weights_format` that is none of the three.
func checkWeightsFormat(_ format: bc_weights_format) throws {
    guard format == BC_WEIGHTS_GGUF_F32 || format == BC_WEIGHTS_GGUF_F16 || format == BC_WEIGHTS_HF else {
        throw BatchCoreError.invalid("unknown weights format \(format.rawValue)")
    }
}

/// Writes `model`'s current weights at `path` in `format` (checked by `checkWeightsFormat`).
func writeWeights(_ model: LanguageModel, _ path: String, _ format: bc_weights_format) throws {
    switch format {
    case BC_WEIGHTS_GGUF_F32: try model.writeGGUF(path: path, f16: false)
    case BC_WEIGHTS_GGUF_F16: try model.writeGGUF(path: path, f16: true)
    case BC_WEIGHTS_HF: try model.writeHuggingFace(directory: path)
    default: throw BatchCoreError.invalid("unknown weights format \(format.rawValue)")
    }
}

@c @implementation
public func bc_merge_adapter(_ modelPath: UnsafePointer<CChar>?, _ adapterPath: UnsafePointer<CChar>?, _ scale: Float,
                             _ outPath: UnsafePointer<CChar>?, _ format: bc_weights_format) -> bc_status {
    abiCall {
        let modelPath = String(cString: try required(modelPath, "model_path"))
        let adapterPath = String(cString: try required(adapterPath, "adapter_path"))
        let outPath = String(cString: try required(outPath, "out_path"))
        guard scale.isFinite else { throw BatchCoreError.invalid("scale \(scale) is not finite") }
        try checkWeightsFormat(format)
        // Merging adds to every weight: load f32, not the file's quantized blocks.
        let model = try LanguageModel(path: modelPath, weights: .float32)
        let adapters = try LoRAAdapterSet.read(path: adapterPath, model: model.config)
        try adapters.merge(into: model.transformer.weights, factor: scale)
        try writeWeights(model, outPath, format)
    }
}

@c @implementation
public func bc_weights_average(_ paths: UnsafePointer<UnsafePointer<CChar>?>?, _ count: Int, _ weights: UnsafePointer<Double>?,
                               _ outPath: UnsafePointer<CChar>?, _ format: bc_weights_format) -> bc_status {
    abiCall {
        let list = try required(paths, "paths")
        let outPath = String(cString: try required(outPath, "out_path"))
        guard count >= 1, count <= 1 << 16 else { throw BatchCoreError.invalid("count \(count) outside 1...65536") }
        try checkWeightsFormat(format)
        guard format != BC_WEIGHTS_HF else { throw BatchCoreError(.unsupported, "bc_weights_average writes GGUF only") }
        var files: [String] = []
        for i in 0..<count {
            guard let p = list[i] else { throw BatchCoreError.invalid("paths[\(i)] is NULL") }
            files.append(String(cString: p))
        }
        let w = weights.map { Array(UnsafeBufferPointer(start: $0, count: count)) }
        try ModelSoup.average(paths: files, weights: w, out: outPath, f16: format == BC_WEIGHTS_GGUF_F16)
    }
}
