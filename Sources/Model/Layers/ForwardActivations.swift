import BCCore

/// Every activation of one forward pass over T rows, as named buffers (`LayerActivations`
/// per layer, plus the model-level ones below), carved out of one grow-only workspace
/// that the object owns and keeps between passes (no page faults per step).
///
/// Three modes (`Mode`):
/// * `.serving`: one set serves every layer (see the aliasing in `LayerActivations`);
///   after a pass it holds the LAST layer's values.
/// * `.keepLayers`: each layer has its own set, with the training extras (norm rstd,
///   attention statistics): what a backward pass reads. Layer l's `output` is layer
///   l+1's `input`. Memory ≈ T · layers · (6·d + 2·kvd + 3·ff + 2 + 2·H) floats.
/// * `.recompute` (activation checkpointing): only the residual entering each layer is
///   kept per layer; every other buffer is one set shared by all layers, so the backward
///   pass reruns a layer's forward (bit-identical: same kernels, same inputs) before its
///   backward. Memory ≈ T · (layers · d + 5·d + 2·kvd + 3·ff + 2 + 2·H) floats.
///
/// Contents are valid until the next pass that uses the object. One pass at a time.
package final class ForwardActivations: @unchecked Sendable {
    package enum Mode: Sendable, Equatable {
        case serving, keepLayers, recompute, evaluation
    }

    package let mode: Mode
    /// Whether a backward pass can run on what a forward pass leaves (`.keepLayers`, `.recompute`).
    package var supportsBackward: Bool { mode == .keepLayers || mode == .recompute }
    /// T: rows of the last pass.
    package private(set) var rows = 0
    /// R: rows of the last pass whose logits were requested.
    package private(set) var logitRows = 0
    /// [T × d] the residual stream after the last layer (nil before the first pass).
    package private(set) var finalResidual: UnsafeMutablePointer<Float>?
    /// [R × d] RMSNorm(finalResidual row) · outputNorm of each logit row: the input of the
    /// output head (nil before the first pass).
    package private(set) var outputNormed: UnsafeMutablePointer<Float>?
    /// [R] 1/rms of each logit row of `finalResidual` (training modes only).
    package private(set) var outputRstd: UnsafeMutablePointer<Float>?
    /// [T × headDim] the rotation table of each row's position (`RotaryEmbedding.table`).
    package private(set) var ropeTable: UnsafeMutablePointer<Float>?
    /// Layers of the model of the last pass.
    package private(set) var layerCount = 0
    /// One set per layer (training modes) or the single reused set.
    private var sets: [LayerActivations] = []
    private let workspace = ForwardWorkspace()

    package init(mode: Mode) { self.mode = mode }

    /// `.keepLayers` or `.serving`.
    package convenience init(keepingLayers: Bool) { self.init(mode: keepingLayers ? .keepLayers : .serving) }

    /// Floats the buffers of `rows` rows (`logitRows` of them wanting logits) of model
    /// `c` take in `mode` (nil when the count overflows).
    package static func floats(_ c: ModelConfig, rows: Int, logitRows: Int, mode: Mode) -> Int? {
        try? layout(c, rows: rows, logitRows: logitRows, mode: mode).total
    }

    /// The activations of layer `l` of the last pass (serving: the shared set, holding
    /// the last layer's values; recompute: only `input`/`output` are layer l's own;
    /// evaluation: only the last layer's values survive).
    package func layer(_ l: Int) throws -> LayerActivations {
        guard !sets.isEmpty, l >= 0, l < layerCount else {
            throw BatchCoreError.invalid("no activations of layer \(l) (the last pass had \(layerCount) layers)")
        }
        return self[l]
    }

    /// Layer l's set; `prepare` has run for a model with more than l layers.
    @inline(__always)
    subscript(_ l: Int) -> LayerActivations { mode == .serving ? sets[0] : sets[l] }

    /// Allocates the workspace for passes of up to `rows` rows (`logitRows` with logits)
    /// now, so later passes of that size allocate nothing. Throws `.outOfMemory`.
    package func reserve(_ c: ModelConfig, rows: Int, logitRows: Int) throws {
        try prepare(c, rows: rows, logitRows: logitRows)
    }

    /// Lays out the buffers for `rows` rows of model `c`, `logitRows` of which want
    /// logits, growing the workspace if needed. Throws `.outOfMemory` on a size that
    /// does not fit (nothing changes then).
    func prepare(_ c: ModelConfig, rows t: Int, logitRows r: Int) throws {
        let plan = try Self.layout(c, rows: t, logitRows: r, mode: mode)
        let base = try workspace.floats(plan.total)
        let o = plan.offsets
        func p(_ i: Int) -> UnsafeMutablePointer<Float> { base + o[i] }
        switch mode {
        case .serving:
            let b = plan.shared
            let one = Self.set(base, o, [b[0], b[1], b[2], b[3], b[0], b[1], b[4], b[5], b[0], b[1]])
            if sets.isEmpty { sets = [one] } else { sets[0] = one }
            outputNormed = p(b[1])
            outputRstd = nil
        case .keepLayers, .recompute, .evaluation:
            let turns = plan.residuals.count   // evaluation: 2 buffers in turn; else layers + 1
            sets = (0..<c.layerCount).map { l in
                let b = mode == .keepLayers ? plan.perLayer[l] : plan.perLayer[0]
                // b: attentionNormed, qkv, attention, mid, mlpNormed, gateUp, act, attRstd, mlpRstd, stats
                var s = Self.set(base, o, [plan.residuals[l % turns], b[0], b[1], b[2], b[3], b[4], b[5], b[6],
                                           plan.residuals[(l + 1) % turns], plan.shared[0]])
                s.attentionRstd = p(b[7])
                s.mlpRstd = p(b[8])
                s.attentionStats = p(b[9])
                return s
            }
            outputNormed = p(plan.shared[1])
            outputRstd = p(plan.shared[2])
        }
        ropeTable = p(plan.rope)
        finalResidual = sets[sets.count - 1].output
        rows = t
        logitRows = r
        layerCount = c.layerCount
    }

    /// Where each buffer starts in the workspace (float offsets, 64-byte aligned).
    private struct Layout {
        var offsets: [Int] = []
        var total = 0
        var rope = 0
        /// serving: x, h, qkv, attention, gateUp, act; training: projected, head normed, head rstd.
        var shared: [Int] = []
        /// training: residual entering layer l (l < layers) and the final one.
        var residuals: [Int] = []
        /// training: per layer (keepLayers) or one set (recompute).
        var perLayer: [[Int]] = []
    }

    private static func layout(_ c: ModelConfig, rows t: Int, logitRows r: Int, mode: Mode) throws -> Layout {
        let d = c.embeddingDim, qkvDim = d + 2 * c.kvDim, ff = c.feedForwardDim, hd = c.headDim
        var plan = Layout()
        /// Reserves a [n × width] buffer at the next 64-byte boundary; returns its index.
        func reserve(_ n: Int, _ width: Int) throws -> Int {
            let (size, o1) = n.multipliedReportingOverflow(by: width)
            let (end, o2) = plan.total.addingReportingOverflow(size)
            let (rounded, o3) = end.addingReportingOverflow(15)
            guard !o1, !o2, !o3 else { throw BatchCoreError(.outOfMemory, "activations of \(t) rows do not fit in memory") }
            plan.offsets.append(plan.total)
            plan.total = rounded / 16 * 16
            return plan.offsets.count - 1
        }
        plan.rope = try reserve(t, hd)
        switch mode {
        case .serving:
            plan.shared = [try reserve(t, d), try reserve(t, d), try reserve(t, qkvDim), try reserve(t, d),
                           try reserve(t, 2 * ff), try reserve(t, ff)]
        case .keepLayers, .recompute, .evaluation:
            plan.shared = [try reserve(t, d), try reserve(r, d), try reserve(r, 1)]
            for _ in 0..<(mode == .evaluation ? 2 : c.layerCount + 1) { plan.residuals.append(try reserve(t, d)) }
            for _ in 0..<(mode == .keepLayers ? c.layerCount : 1) {
                plan.perLayer.append([try reserve(t, d), try reserve(t, qkvDim), try reserve(t, d), try reserve(t, d),
                                      try reserve(t, d), try reserve(t, 2 * ff), try reserve(t, ff), try reserve(t, 1),
                                      try reserve(t, 1), try reserve(t, 2 * c.headCount)])
            }
        }
        return plan
    }

    private static func set(_ base: UnsafeMutablePointer<Float>, _ offsets: [Int], _ i: [Int]) -> LayerActivations {
        LayerActivations(input: base + offsets[i[0]], attentionNormed: base + offsets[i[1]], qkv: base + offsets[i[2]],
                         attention: base + offsets[i[3]], mid: base + offsets[i[4]], mlpNormed: base + offsets[i[5]],
                         gateUp: base + offsets[i[6]], act: base + offsets[i[7]], output: base + offsets[i[8]],
                         projected: base + offsets[i[9]])
    }
}
