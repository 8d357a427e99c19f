import BCCore

/// The gradient buffers of one backward pass over T rows (d = embeddingDim, kvd = kvDim,
/// ff = feedForwardDim, V = vocabSize, C = `logitChunk`), one set shared by every layer
/// (the pass runs the layers one at a time, top to bottom), carved out of a grow-only
/// workspace kept between passes:
///
///     residual  [T × d]          dL/d(residual stream) at the current layer boundary:
///                                dL/d output on entry of a layer's backward, dL/d input on exit
///     normed    [T × d]          dL/d attentionNormed or mlpNormed, then (RMSNorm backward
///                                in place) that norm's dL/dx before it joins `residual`
///     attention [T × d]          dL/d attention (the input of Wo)
///     qkv       [T × (d+2·kvd)]  dL/d qkv: after the attention backward in the rotated
///                                space, after the RoPE backward in the projection's space
///     gateUp    [T × 2·ff]       dL/d gateUp (rows dgate | dup)
///     act       [T × ff]         dL/d act (the input of Wdown)
///     logits    [C × V]          one chunk of the output head's logits, then dL/d logits
///     headX     [R × d]          the final residual rows that have a target, gathered
///     normGain  [d]              dL/d of a frozen norm gain (discarded)
///     headBlock [C × d]          one vocabulary block's part of the head's dX
///
/// Contents are not kept between passes. One pass at a time.
package final class LayerGradients: @unchecked Sendable {
    /// Output-head rows per chunk: logits of at most this many rows exist at a time.
    package static let logitChunk = 128

    private(set) var residual: UnsafeMutablePointer<Float>!
    private(set) var normed: UnsafeMutablePointer<Float>!
    private(set) var attention: UnsafeMutablePointer<Float>!
    private(set) var qkv: UnsafeMutablePointer<Float>!
    private(set) var gateUp: UnsafeMutablePointer<Float>!
    private(set) var act: UnsafeMutablePointer<Float>!
    private(set) var logits: UnsafeMutablePointer<Float>!
    private(set) var headX: UnsafeMutablePointer<Float>!
    private(set) var normGain: UnsafeMutablePointer<Float>!
    /// [C × d] one vocabulary block's part of the head's dX (`Transformer.headBackward`).
    private(set) var headBlock: UnsafeMutablePointer<Float>!
    private let workspace = ForwardWorkspace()

    package init() {}

    /// Floats the buffers of `rows` rows (`targetRows` with a target) of model `c` take
    /// (nil when the count overflows).
    package static func floats(_ c: ModelConfig, rows: Int, targetRows: Int) -> Int? {
        try? sizes(c, rows: rows, targetRows: targetRows).reduce(0) { try add($0, $1, rows) }
    }

    private static func add(_ a: Int, _ b: Int, _ rows: Int) throws -> Int {
        let (s, o1) = a.addingReportingOverflow(b)
        let (r, o2) = s.addingReportingOverflow(15)
        guard !o1, !o2 else { throw BatchCoreError(.outOfMemory, "gradients of \(rows) rows do not fit in memory") }
        return r / 16 * 16
    }

    private static func sizes(_ c: ModelConfig, rows t: Int, targetRows r: Int) throws -> [Int] {
        let d = c.embeddingDim, qkvDim = d + 2 * c.kvDim, ff = c.feedForwardDim
        let widths = [(t, d), (t, d), (t, d), (t, qkvDim), (t, 2 * ff), (t, ff),
                      (min(max(r, 1), logitChunk), c.vocabSize), (r, d), (1, d),
                      (min(max(r, 1), logitChunk), d)]
        return try widths.map { n, w in
            let (s, o) = n.multipliedReportingOverflow(by: w)
            guard !o, n >= 0 else { throw BatchCoreError(.outOfMemory, "gradients of \(t) rows do not fit in memory") }
            return s
        }
    }

    /// Allocates the workspace for passes of up to `rows` rows now. Throws `.outOfMemory`.
    package func reserve(_ c: ModelConfig, rows: Int, targetRows: Int) throws {
        try prepare(c, rows: rows, targetRows: targetRows)
    }

    /// Lays out the buffers for `rows` rows, `targetRows` of them with a target. Throws
    /// `.outOfMemory` when they do not fit (nothing changes then).
    func prepare(_ c: ModelConfig, rows t: Int, targetRows r: Int) throws {
        let sizes = try Self.sizes(c, rows: t, targetRows: r)
        var offsets: [Int] = []
        var total = 0
        for s in sizes {
            offsets.append(total)
            total = try Self.add(total, s, t)
        }
        let base = try workspace.floats(total)
        residual = base + offsets[0]
        normed = base + offsets[1]
        attention = base + offsets[2]
        qkv = base + offsets[3]
        gateUp = base + offsets[4]
        act = base + offsets[5]
        logits = base + offsets[6]
        headX = base + offsets[7]
        normGain = base + offsets[8]
        headBlock = base + offsets[9]
    }
}
