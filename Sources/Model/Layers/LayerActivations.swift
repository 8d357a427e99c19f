/// The named activations of ONE decoder layer over the T rows of a forward pass
/// (row-major: row i of a [T × w] buffer starts at `pointer + i·w`). d = embeddingDim,
/// kvd = kvDim, ff = feedForwardDim. What each layer function reads and writes:
///
///     attentionBlock: input → attentionNormed → qkv → attention → (projected) → mid
///     mlpBlock:       mid → mlpNormed → gateUp → act → (projected) → output
///
/// Aliasing: a set that keeps every layer's activations (`ForwardActivations` keeping
/// layers; what a backward pass reads) has distinct buffers, except that layer l's
/// `output` is layer l+1's `input` and `projected` is one scratch shared by all layers.
/// A serving set reuses one set for every layer: `input`, `mid` and `output` are the
/// same residual buffer (updated in place), and `attentionNormed`, `mlpNormed` and
/// `projected` are one buffer (each is dead when the next is written). The layer
/// functions are written so both give the same values bit for bit.
package struct LayerActivations {
    /// [T × d] the residual stream entering the layer.
    package let input: UnsafeMutablePointer<Float>
    /// [T × d] RMSNorm(input) · attentionNorm: the input of the QKV projection.
    package let attentionNormed: UnsafeMutablePointer<Float>
    /// [T × (d + 2·kvd)] rows q | k | v = attentionNormed · Wqkvᵀ, q and k rotated (RoPE)
    /// by the row's position.
    package let qkv: UnsafeMutablePointer<Float>
    /// [T × d] causal attention of each row's query heads over its keys/values, heads
    /// concatenated (head h at columns h·headDim..<(h+1)·headDim): the input of Wo.
    package let attention: UnsafeMutablePointer<Float>
    /// [T × d] residual after attention: input + attention · Woᵀ.
    package let mid: UnsafeMutablePointer<Float>
    /// [T × d] RMSNorm(mid) · ffnNorm: the input of the gate/up projection.
    package let mlpNormed: UnsafeMutablePointer<Float>
    /// [T × 2·ff] rows gate | up = mlpNormed · Wgate_upᵀ.
    package let gateUp: UnsafeMutablePointer<Float>
    /// [T × ff] silu(gate) · up: the input of the down projection.
    package let act: UnsafeMutablePointer<Float>
    /// [T × d] residual leaving the layer: mid + act · Wdownᵀ.
    package let output: UnsafeMutablePointer<Float>
    /// [T × d] scratch: a projection's result before it is added to the residual.
    package let projected: UnsafeMutablePointer<Float>
    /// Training sets only (nil when serving), what the backward pass reads:
    /// [T] 1/rms of each `input` row (the RMSNorm before attention);
    package var attentionRstd: UnsafeMutablePointer<Float>? = nil
    /// [T] 1/rms of each `mid` row (the RMSNorm before the MLP);
    package var mlpRstd: UnsafeMutablePointer<Float>? = nil
    /// [T × H × 2] per (row, query head) the softmax statistics (max, logSumExp) of the
    /// scaled attention scores (`AttentionTraining`).
    package var attentionStats: UnsafeMutablePointer<Float>? = nil
}
