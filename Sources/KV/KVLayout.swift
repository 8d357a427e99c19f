import BCCore
/// How a layer attends and where its keys/values live.
package enum LayerAttention: Equatable, Sendable {
    /// Attends to every earlier position; stores its own KV.
    case full
    /// Attends to the last `window` positions (its own included); stores its own KV
    /// and releases blocks no future query can see.
    case sliding(window: Int)
    /// Reads the KV of an earlier layer and stores nothing (cross-layer KV sharing,
    /// "Reducing Transformer Key-Value Cache Size with Cross-Layer Attention"; the
    /// MixAttention configurations combine it with sliding windows).
    case shared(source: Int)
}

/// How cached keys/values are stored.
package enum KVStorageType: Int32, Sendable, CaseIterable {
    /// float32: exact.
    case f32 = 0
    /// IEEE half precision.
    case f16 = 1
    /// int8 with one float scale per row (token × layer × K or V): x ≈ q · max|x|/127.
    case int8 = 2
    /// KIVI 4-bit ("KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache",
    /// Liu et al. 2024): keys quantized per channel over each block's tokens, values per
    /// token in groups of `KIVICodec.valueGroup` channels, both asymmetric (min + q·scale,
    /// f16 scale and minimum); the most recent `KVLayout.kiviResidual` tokens stay f32.
    /// Only `PagedKVCache` supports it.
    case kivi4 = 3
    /// KIVI 2-bit: as `kivi4` with 2-bit codes.
    case kivi2 = 4

    /// True for the KIVI types (blocks quantized as a whole, recent tokens in f32).
    package var isKIVI: Bool { self == .kivi4 || self == .kivi2 }

    /// Code bits of the KIVI types (0 otherwise).
    var kiviBits: Int {
        switch self {
        case .kivi4: 4
        case .kivi2: 2
        default: 0
        }
    }

    /// The row encoding of the row-wise types; nil for the KIVI types (quantized per block).
    var rowType: KVRowType? {
        switch self {
        case .f32: .f32
        case .f16: .f16
        case .int8: .int8
        case .kivi4, .kivi2: nil
        }
    }

    /// Bytes of one layer's key (`value` false) or value plane of a block of
    /// `blockSize` tokens: codes plus scales/zero-points, padded to 4 bytes.
    func planeBytes(dim: Int, blockSize: Int, value: Bool) -> Int {
        guard let rowType else {
            return value ? KIVICodec.valuePlaneBytes(dim: dim, blockSize: blockSize, bits: kiviBits)
                : KIVICodec.keyPlaneBytes(dim: dim, blockSize: blockSize, bits: kiviBits)
        }
        return blockSize * rowType.rowBytes(dim)
    }
}

/// The KV layout of a model: per-layer attention kinds and the storage type.
package struct KVLayout: Equatable, Sendable {
    package var layers: [LayerAttention]
    package var storage: KVStorageType
    package var blockSize: Int
    /// KIVI storage: how many of a sequence's most recent positions stay in full
    /// precision (the residual; KIVI's R). Ignored by the other types.
    package var kiviResidual: Int

    /// KIVI's default residual length R in tokens.
    package static let defaultKIVIResidual = 32

    package init(layers: [LayerAttention], storage: KVStorageType = .f32, blockSize: Int = 16,
                kiviResidual: Int = KVLayout.defaultKIVIResidual) {
        self.layers = layers
        self.storage = storage
        self.blockSize = blockSize
        self.kiviResidual = kiviResidual
    }

    package static func full(layerCount: Int, storage: KVStorageType = .f32, blockSize: Int = 16,
                            kiviResidual: Int = KVLayout.defaultKIVIResidual) -> KVLayout {
        KVLayout(layers: Array(repeating: .full, count: layerCount), storage: storage, blockSize: blockSize,
                 kiviResidual: kiviResidual)
    }

    package func validate() throws {
        guard blockSize >= 1, blockSize <= 4096 else { throw BatchCoreError.invalid("block size \(blockSize) out of range 1...4096") }
        guard kiviResidual >= 0, kiviResidual <= 1 << 20 else { throw BatchCoreError.invalid("KIVI residual \(kiviResidual) out of range 0...1048576") }
        guard !layers.isEmpty else { throw BatchCoreError.invalid("KV layout has no layers") }
        for (i, l) in layers.enumerated() {
            switch l {
            case .full: break
            case .sliding(let w):
                guard w >= 1 else { throw BatchCoreError.invalid("layer \(i): window must be >= 1") }
            case .shared(let s):
                guard s >= 0, s < i else { throw BatchCoreError.invalid("layer \(i) shares layer \(s): the source must be an earlier layer") }
                if case .shared = layers[s] { throw BatchCoreError.invalid("layer \(i) shares layer \(s), which stores nothing itself") }
            }
        }
    }

    /// The window a layer's queries see (a shared layer sees its source's window).
    package func window(of layer: Int) -> Int? {
        switch layers[layer] {
        case .full: nil
        case .sliding(let w): w
        case .shared(let s): window(of: s)
        }
    }

    /// Layers that store KV, grouped by window (group order: first appearance).
    var storingGroups: [(window: Int?, layers: [Int])] {
        var groups: [(window: Int?, layers: [Int])] = []
        for (i, l) in layers.enumerated() {
            let w: Int?
            switch l {
            case .full: w = nil
            case .sliding(let win): w = win
            case .shared: continue
            }
            if let g = groups.firstIndex(where: { $0.window == w }) { groups[g].layers.append(i) } else { groups.append((w, [i])) }
        }
        return groups
    }
}
