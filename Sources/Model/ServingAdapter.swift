import BCCore
import BCKernels
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A stacked projection of a decoder layer (see `LayerWeights`): where a serving
/// adapter's low-rank updates are added.
package enum AdapterProjection: Int, Sendable, CaseIterable {
    case qkv = 0, wo, gateUp, down

    /// The projection `t` updates and the first of its rows there (q | k | v and
    /// gate | up are stacked).
    static func place(_ t: LoRATarget, _ c: ModelConfig) -> (AdapterProjection, firstRow: Int) {
        switch t {
        case .q: return (.qkv, 0)
        case .k: return (.qkv, c.embeddingDim)
        case .v: return (.qkv, c.embeddingDim + c.kvDim)
        case .o: return (.wo, 0)
        case .gate: return (.gateUp, 0)
        case .up: return (.gateUp, c.feedForwardDim)
        case .down: return (.down, 0)
        }
    }
}

/// A LoRA adapter loaded for serving (read from a PEFT directory with
/// `LoRAAdapterSet.readPEFT`, so every file check applies), in the layout the serving
/// forward reads: per layer and stacked projection, its parts
///
///     a   A [rank × cols] row-major (as PEFT's lora_A)
///     bT  Bᵀ [rank × rows] row-major (q/k rows in batchcore's RoPE order)
///
/// each on output rows firstRow ..< firstRow + rows of the stacked projection, with the
/// file's scale (alpha/r or alpha/√r). Immutable after load and shared between engines,
/// contexts and threads; memory is freed with the last reference (requests hold one).
package final class ServingAdapter: @unchecked Sendable {
    package struct Part {
        package let target: LoRATarget
        package let firstRow: Int
        package let rows: Int
        package let cols: Int
        package let rank: Int
        package let scale: Float
        package let a: UnsafeMutablePointer<Float>
        package let bT: UnsafeMutablePointer<Float>
    }

    /// Unique per load in this process (never 0): the prefix cache's key, with the scale.
    package let id: UInt64
    /// The model it was loaded for (adapters apply only to it).
    package let model: LanguageModel
    package let config: LoRAConfig
    /// parts[layer][projection.rawValue]: that projection's parts, targets ascending.
    package let parts: [[[Part]]]
    /// Bytes of A and Bᵀ held.
    package let bytes: Int

    private static let nextID = Atomic<UInt64>(1)

    /// Reads the PEFT directory `directory` (adapter_config.json +
    /// adapter_model.safetensors) for `model`. Errors as `LoRAAdapterSet.readPEFT`
    /// (missing or extra tensors, wrong shapes or rank, non-finite values, unsupported
    /// PEFT features) and `.outOfMemory`.
    package convenience init(directory: String, model: LanguageModel) throws {
        try self.init(set: try LoRAAdapterSet.readPEFT(directory: directory, model: model.config), model: model)
    }

    /// Copies `set` (A, and B transposed) into serving layout.
    package init(set: LoRAAdapterSet, model: LanguageModel) throws {
        let c = model.config
        guard set.model.layerCount == c.layerCount, set.model.embeddingDim == c.embeddingDim, set.model.kvDim == c.kvDim,
              set.model.feedForwardDim == c.feedForwardDim else {
            throw BatchCoreError.invalid("LoRA adapter made for another model shape")
        }
        var parts = [[[Part]]](repeating: [[Part]](repeating: [], count: AdapterProjection.allCases.count), count: c.layerCount)
        var bytes = 0
        var made: [UnsafeMutablePointer<Float>] = []
        do {
            for e in set.entries {
                let s = e.slot, (projection, first) = AdapterProjection.place(e.target, c)
                let a = try Memory.allocateFloats(s.rank * s.cols, fill: 0)
                made.append(a)
                let bT = try Memory.allocateFloats(s.rank * s.rows, fill: 0)
                made.append(bT)
                a.update(from: s.a, count: s.rank * s.cols)
                for o in 0..<s.rows { for j in 0..<s.rank { bT[j * s.rows + o] = s.b[o * s.rank + j] } }
                bytes += 4 * s.rank * (s.rows + s.cols)
                parts[e.layer][projection.rawValue].append(
                    Part(target: e.target, firstRow: first, rows: s.rows, cols: s.cols, rank: s.rank, scale: s.scale, a: a, bT: bT))
            }
        } catch {
            for p in made { free(p) }
            throw error
        }
        self.model = model
        self.config = set.config
        self.parts = parts
        self.bytes = bytes
        id = Self.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    deinit {
        for layer in parts { for projection in layer { for p in projection { free(p.a); free(p.bT) } } }
    }

    /// The prefix-cache identity of this adapter applied with `scale` (never 0, the
    /// base model's): KV computed under one adapter and scale is never reused under
    /// another.
    package func cacheKey(scale: Float) -> UInt64 {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 &* id
        h ^= UInt64(scale.bitPattern) &* 0xBF58_476D_1CE4_E5B9
        h ^= h >> 31
        return h == 0 ? 1 : h
    }
}
