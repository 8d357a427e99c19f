import BCCore
import BCFormats
#if canImport(Glibc)
import Glibc
#endif

extension LanguageModel {
    /// Writes the current weights as one GGUF file at `path` (atomically): the metadata
    /// of the GGUF the model was loaded from (tokenizer, hyperparameters; general.file_type
    /// set to ALL_F32 or MOSTLY_F16), then every tensor of `LlamaTensorNames.all` in our
    /// row layout (the GGUF layout): F32, or F16 for matrices when `f16` (vectors stay
    /// F32, as llama.cpp's converter writes them). A model loaded from a Hugging Face
    /// directory has no GGUF tokenizer metadata: `.unsupported` (write Hugging Face).
    package func writeGGUF(path out: String, f16: Bool) throws {
        guard !HFModel.isHuggingFacePath(path) else {
            throw BatchCoreError(.unsupported, "GGUF output needs a model loaded from GGUF; write a Hugging Face directory instead")
        }
        let source = try GGUFFile(path: path)
        var w = GGUFWriter(alignment: source.alignment)
        for key in source.metadataKeys where key != "general.alignment" {
            guard let v = source.value(key) else { continue }
            w.set(key, key == "general.file_type" ? .uint32(f16 ? 1 : 0) : v)
        }
        if source.value("general.file_type") == nil { w.set("general.file_type", .uint32(f16 ? 1 : 0)) }
        let c = config, weights = transformer.weights
        let largest = LlamaTensor.allCases.map { $0.shape(c).rows * $0.shape(c).cols }.max() ?? 0
        let tmp = try Scratch(largest)
        for n in LlamaTensorNames.all(layerCount: c.layerCount, tiedOutput: weights.tiedOutput) {
            let (rows, cols) = n.tensor.shape(c)
            let count = rows * cols
            var src: UnsafePointer<Float> = UnsafePointer(tmp.pointer)
            switch weights.location(of: n) {
            case .vector(let v): src = UnsafePointer(v.data)
            case .rows(let m, let first):
                if let wt = m.weight { src = UnsafePointer(wt + first * m.cols) } else { m.copyRows(first, count: rows, into: tmp.pointer) }
            case .adapter: throw BatchCoreError(.internal, "\(n.gguf) located as an adapter")
            }
            let dims = rows == 1 ? [cols] : [cols, rows]
            if f16 && rows > 1 {
                var bytes = [UInt8](repeating: 0, count: count * 2)
                bytes.withUnsafeMutableBytes { dst in
                    for i in 0..<count { dst.storeBytes(of: Float16(src[i]).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
                }
                try w.addTensor(name: n.gguf, dims: dims, type: .f16, data: bytes)
            } else {
                try w.addTensor(name: n.gguf, dims: dims, floats: Array(UnsafeBufferPointer(start: src, count: count)))
            }
        }
        try withExtendedLifetime(weights) { try w.write(to: out) }
    }
}
