/// How a model's projection weights are held after load (`ModelWeights(gguf:...)`).
package enum WeightMode: Sendable {
    /// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K projections stay in their ggml
    /// blocks (`QuantizedWeights`);
    /// other types are dequantized to float32. Training needs `.float32`.
    case native
    /// Every tensor dequantized to float32 (packed), as training requires.
    case float32
}
