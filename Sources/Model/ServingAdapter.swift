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
/// file's scale (alpha/r or alpha/√r). Shared between engines, contexts and threads;
/// memory is freed with the last reference (requests hold one).
///
/// Residency: the A/B weights (`Weights`) of an adapter read from a directory can be
/// released (`evict`, an engine's adapter budget does it) and are read again from the
/// same directory on the next `weights()`; the reload must give the same bits (a
/// checksum of every A and B value is compared), else it fails and the adapter stays
/// unloaded — so the id, and KV cached under it, stay valid. A forward holds the
/// `Weights` it reads, so an eviction during a pass frees nothing under it.
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

    /// The A and Bᵀ buffers of one load: immutable, freed with the last reference.
    package final class Weights: @unchecked Sendable {
        /// parts[layer][projection.rawValue]: that projection's parts, targets ascending.
        package let parts: [[[Part]]]
        let bytes: Int
        /// FNV-1a over every A and B value's bits, in entry order.
        let checksum: UInt64

        /// Copies `set` (A, and B transposed) into serving layout.
        init(set: LoRAAdapterSet, config c: ModelConfig) throws {
            guard set.model.layerCount == c.layerCount, set.model.embeddingDim == c.embeddingDim, set.model.kvDim == c.kvDim,
                  set.model.feedForwardDim == c.feedForwardDim else {
                throw BatchCoreError.invalid("LoRA adapter made for another model shape")
            }
            var parts = [[[Part]]](repeating: [[Part]](repeating: [], count: AdapterProjection.allCases.count), count: c.layerCount)
            var bytes = 0
            var h: UInt64 = 0xCBF2_9CE4_8422_2325
            func mix(_ p: UnsafePointer<Float>, _ n: Int) {
                for i in 0..<n { h = (h ^ UInt64(p[i].bitPattern)) &* 0x0000_0100_0000_01B3 }
            }
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
                    mix(s.a, s.rank * s.cols)
                    mix(s.b, s.rank * s.rows)
                    bytes += 4 * s.rank * (s.rows + s.cols)
                    parts[e.layer][projection.rawValue].append(
                        Part(target: e.target, firstRow: first, rows: s.rows, cols: s.cols, rank: s.rank, scale: s.scale, a: a, bT: bT))
                }
            } catch {
                for p in made { free(p) }
                throw error
            }
            self.parts = parts
            self.bytes = bytes
            checksum = h
        }

        deinit {
            for layer in parts { for projection in layer { for p in projection { free(p.a); free(p.bT) } } }
        }
    }

    /// Unique per load in this process (never 0): the prefix cache's key, with the scale.
    package let id: UInt64
    /// The model it was loaded for (adapters apply only to it).
    package let model: LanguageModel
    package let config: LoRAConfig
    /// Bytes of A and Bᵀ held while resident.
    package let bytes: Int
    /// The PEFT directory it was read from (nil: made from an in-memory set, never evicted).
    package let directory: String?
    private let checksum: UInt64
    private let state: Mutex<Weights?>

    private static let nextID = Atomic<UInt64>(1)

    /// Reads the PEFT directory `directory` (adapter_config.json +
    /// adapter_model.safetensors) for `model`. Errors as `LoRAAdapterSet.readPEFT`
    /// (missing or extra tensors, wrong shapes or rank, non-finite values, unsupported
    /// PEFT features) and `.outOfMemory`.
    package convenience init(directory: String, model: LanguageModel) throws {
        try self.init(set: try LoRAAdapterSet.readPEFT(directory: directory, model: model.config), model: model, directory: directory)
    }

    /// Copies `set` (A, and B transposed) into serving layout; `directory`: where the
    /// set was read from (reloads after an eviction read it again), nil: not evictable.
    package init(set: LoRAAdapterSet, model: LanguageModel, directory: String? = nil) throws {
        let w = try Weights(set: set, config: model.config)
        self.model = model
        self.config = set.config
        self.bytes = w.bytes
        self.directory = directory
        checksum = w.checksum
        state = Mutex(w)
        id = Self.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    /// True while the A/B weights are in memory.
    package var isResident: Bool { state.withLock { $0 != nil } }

    /// True when `evict` can release the weights (they can be read again).
    package var isEvictable: Bool { directory != nil }

    /// The weights, read again from `directory` when evicted. Throws the reader's
    /// errors (a deleted or changed file: `.io`/`.format`, or `.badState` when the files
    /// now hold other values than at load); the adapter then stays unloaded.
    package func weights() throws -> Weights {
        try state.withLock { (w: inout Weights?) throws -> Weights in
            if let w { return w }
            guard let directory else { throw BatchCoreError(.internal, "an adapter without a directory was unloaded") }
            let set = try LoRAAdapterSet.readPEFT(directory: directory, model: model.config)
            let fresh = try Weights(set: set, config: model.config)
            guard fresh.bytes == bytes, fresh.checksum == checksum, set.config == config else {
                throw BatchCoreError(.badState, "the adapter files in \(directory) changed since the adapter was loaded")
            }
            w = fresh
            return fresh
        }
    }

    /// Releases the weights (a pass still reading them keeps them until it ends).
    /// Returns true when they were resident and are now released; false when not
    /// resident or not evictable.
    @discardableResult
    package func evict() -> Bool {
        guard isEvictable else { return false }
        let old: Weights? = state.withLock { w in
            let old = w
            w = nil
            return old
        }
        return old != nil
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
