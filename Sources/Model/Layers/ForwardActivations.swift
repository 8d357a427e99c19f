import BCCore

/// Every activation of one forward pass over T rows, as named buffers (`LayerActivations`
/// per layer, plus the model-level ones below), carved out of one grow-only workspace
/// that the object owns and keeps between passes (no page faults per step).
///
/// Two modes:
/// * keeping layers: each layer has its own set (what a backward pass reads); layer l's
///   `output` is layer l+1's `input`. Memory ≈ T · layers · (6·d + 2·kvd + 3·ff) floats.
/// * reusing (serving): one set serves every layer (see the aliasing in
///   `LayerActivations`); after a pass it holds the LAST layer's values.
///
/// Contents are valid until the next pass that uses the object. One pass at a time.
package final class ForwardActivations: @unchecked Sendable {
    package let keepsLayers: Bool
    /// T: rows of the last pass.
    package private(set) var rows = 0
    /// R: rows of the last pass whose logits were requested.
    package private(set) var logitRows = 0
    /// [T × d] the residual stream after the last layer (nil before the first pass).
    package private(set) var finalResidual: UnsafeMutablePointer<Float>?
    /// [R × d] RMSNorm(finalResidual row) · outputNorm of each logit row: the input of the
    /// output head (nil before the first pass).
    package private(set) var outputNormed: UnsafeMutablePointer<Float>?
    /// [T × headDim] the rotation table of each row's position (`RotaryEmbedding.table`).
    private(set) var ropeTable: UnsafeMutablePointer<Float>?
    /// Layers of the model of the last pass.
    package private(set) var layerCount = 0
    /// One set per layer (keeping) or the single reused set.
    private var sets: [LayerActivations] = []
    private let workspace = ForwardWorkspace()

    package init(keepingLayers: Bool) { keepsLayers = keepingLayers }

    /// The activations of layer `l` of the last pass (the shared set when not keeping
    /// layers: then only the last layer's values are there).
    package func layer(_ l: Int) throws -> LayerActivations {
        guard !sets.isEmpty, l >= 0, l < layerCount else {
            throw BatchCoreError.invalid("no activations of layer \(l) (the last pass had \(layerCount) layers)")
        }
        return self[l]
    }

    /// Layer l's set; `prepare` has run for a model with more than l layers.
    @inline(__always)
    subscript(_ l: Int) -> LayerActivations { keepsLayers ? sets[l] : sets[0] }

    /// Lays out the buffers for `rows` rows of model `c`, `logitRows` of which want
    /// logits, growing the workspace if needed. Throws `.outOfMemory` on a size that
    /// does not fit (nothing changes then).
    func prepare(_ c: ModelConfig, rows t: Int, logitRows r: Int) throws {
        let d = c.embeddingDim, qkvDim = d + 2 * c.kvDim, ff = c.feedForwardDim, hd = c.headDim
        var offsets: [Int] = []
        var total = 0
        /// Reserves a [n × width] buffer at the next 64-byte boundary; returns its index.
        func reserve(_ n: Int, _ width: Int) throws -> Int {
            let (size, o1) = n.multipliedReportingOverflow(by: width)
            let (end, o2) = total.addingReportingOverflow(size)
            let (rounded, o3) = end.addingReportingOverflow(15)
            guard !o1, !o2, !o3 else { throw BatchCoreError(.outOfMemory, "activations of \(t) rows do not fit in memory") }
            offsets.append(total)
            total = rounded / 16 * 16
            return offsets.count - 1
        }
        let rope = try reserve(t, hd)
        let base: UnsafeMutablePointer<Float>
        if keepsLayers {
            let projected = try reserve(t, d), head = try reserve(r, d)
            var residual = try reserve(t, d)
            var layout: [[Int]] = []
            for _ in 0..<c.layerCount {
                let l = [residual, try reserve(t, d), try reserve(t, qkvDim), try reserve(t, d), try reserve(t, d),
                         try reserve(t, d), try reserve(t, 2 * ff), try reserve(t, ff), try reserve(t, d), projected]
                residual = l[8]
                layout.append(l)
            }
            base = try workspace.floats(total)
            sets = layout.map { Self.set(base, offsets, $0) }
            outputNormed = base + offsets[head]
        } else {
            let x = try reserve(t, d), h = try reserve(t, d), qkv = try reserve(t, qkvDim)
            let attention = try reserve(t, d), gateUp = try reserve(t, 2 * ff), act = try reserve(t, ff)
            base = try workspace.floats(total)
            let one = Self.set(base, offsets, [x, h, qkv, attention, x, h, gateUp, act, x, h])
            if sets.isEmpty { sets = [one] } else { sets[0] = one }
            outputNormed = base + offsets[h]
        }
        ropeTable = base + offsets[rope]
        finalResidual = sets[keepsLayers ? sets.count - 1 : 0].output
        rows = t
        logitRows = r
        layerCount = c.layerCount
    }

    private static func set(_ base: UnsafeMutablePointer<Float>, _ offsets: [Int], _ i: [Int]) -> LayerActivations {
        LayerActivations(input: base + offsets[i[0]], attentionNormed: base + offsets[i[1]], qkv: base + offsets[i[2]],
                         attention: base + offsets[i[3]], mid: base + offsets[i[4]], mlpNormed: base + offsets[i[5]],
                         gateUp: base + offsets[i[6]], act: base + offsets[i[7]], output: base + offsets[i[8]],
                         projected: base + offsets[i[9]])
    }
}
