/// How a layer attends and where its keys/values live.
public enum LayerAttention: Equatable, Sendable {
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
public enum KVStorageType: Int32, Sendable, CaseIterable {
    /// float32: exact.
    case f32 = 0
    /// IEEE half precision.
    case f16 = 1
    /// int8 with one float scale per row (token × layer × K or V): x ≈ q · max|x|/127.
    case int8 = 2

    /// Bytes of one row of `dim` values (codes plus scale).
    func rowBytes(_ dim: Int) -> Int {
        switch self {
        case .f32: dim * 4
        case .f16: dim * 2
        case .int8: dim + 4
        }
    }
}

/// The KV layout of a model: per-layer attention kinds and the storage type.
public struct KVLayout: Equatable, Sendable {
    public var layers: [LayerAttention]
    public var storage: KVStorageType
    public var blockSize: Int

    public init(layers: [LayerAttention], storage: KVStorageType = .f32, blockSize: Int = 16) {
        self.layers = layers
        self.storage = storage
        self.blockSize = blockSize
    }

    public static func full(layerCount: Int, storage: KVStorageType = .f32, blockSize: Int = 16) -> KVLayout {
        KVLayout(layers: Array(repeating: .full, count: layerCount), storage: storage, blockSize: blockSize)
    }

    public func validate() throws {
        guard blockSize >= 1, blockSize <= 4096 else { throw BatchCoreError.invalid("block size \(blockSize) out of range 1...4096") }
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
    public func window(of layer: Int) -> Int? {
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
