import BCCore
import BCFormats

/// Model soups (Wortsman et al. 2022): the weighted average of several fine-tunes of one
/// base model, tensor by tensor:
///
///     out[t][i] = Σ_k w_k · in_k[t][i] / Σ_k w_k      (in double, k ascending)
///
/// over GGUF files that hold the same tensors (names, dims) in any type `dequantize`
/// reads. The output keeps the first file's metadata (general.file_type set to ALL_F32
/// or MOSTLY_F16) and tensor order; matrices are F32, or F16 when `f16` (vectors stay
/// F32, as `LanguageModel.writeGGUF` writes them).
package enum ModelSoup {
    /// Averages `paths` with `weights` (nil: equal) into `out` (atomically). Throws
    /// `.invalidArgument` for fewer than one file, a weight count mismatch, a negative or
    /// non-finite weight or a zero total; `.format` when the files' tensors differ.
    package static func average(paths: [String], weights: [Double]? = nil, out: String, f16: Bool) throws {
        guard !paths.isEmpty else { throw BatchCoreError.invalid("model soup: no input files") }
        let w = weights ?? [Double](repeating: 1, count: paths.count)
        guard w.count == paths.count else { throw BatchCoreError.invalid("model soup: \(w.count) weights for \(paths.count) files") }
        guard w.allSatisfy({ $0.isFinite && $0 >= 0 }), case let total = w.reduce(0, +), total > 0, total.isFinite else {
            throw BatchCoreError.invalid("model soup: weights must be finite, non-negative and not all zero")
        }
        let files = try paths.map { try GGUFFile(path: $0) }
        let first = files[0]
        for (k, f) in files.enumerated().dropFirst() {
            guard f.tensors.count == first.tensors.count else {
                throw BatchCoreError.format("model soup: \(paths[k]) has \(f.tensors.count) tensors, \(paths[0]) \(first.tensors.count)")
            }
            for t in first.tensors {
                guard let u = f.tensor(named: t.name), u.dims == t.dims else {
                    throw BatchCoreError.format("model soup: \(paths[k]) has no tensor \(t.name) of dims \(t.dims)")
                }
            }
        }
        var writer = GGUFWriter(alignment: first.alignment)
        for key in first.metadataKeys where key != "general.alignment" {
            guard let v = first.value(key) else { continue }
            writer.set(key, key == "general.file_type" ? .uint32(f16 ? 1 : 0) : v)
        }
        if first.value("general.file_type") == nil { writer.set("general.file_type", .uint32(f16 ? 1 : 0)) }
        for t in first.tensors {
            var acc = [Double](repeating: 0, count: t.elementCount)
            for (k, f) in files.enumerated() {
                let x = try f.dequantizeTensor(t.name)
                let wk = w[k]
                for i in acc.indices { acc[i] += wk * Double(x[i]) }
            }
            let avg = acc.map { Float($0 / total) }
            guard avg.allSatisfy(\.isFinite) else { throw BatchCoreError.format("model soup: tensor \(t.name) averages to a non-finite value") }
            if f16 && t.dims.count > 1 {
                var bytes = [UInt8](repeating: 0, count: avg.count * 2)
                bytes.withUnsafeMutableBytes { dst in
                    for (i, v) in avg.enumerated() { dst.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
                }
                try writer.addTensor(name: t.name, dims: t.dims, type: .f16, data: bytes)
            } else {
                try writer.addTensor(name: t.name, dims: t.dims, floats: avg)
            }
        }
        try withExtendedLifetime(files) { try writer.write(to: out) }
    }
}
