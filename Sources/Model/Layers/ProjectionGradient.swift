import BCKernels

extension Linear {
    /// Backward of `forward` (y[T × rows] = x[T × cols] · Wᵀ) over T = `tokens` rows:
    ///
    ///     dX[T × cols]     (=|+=)  dY[T × rows] · W          (when dX is given)
    ///     grad[rows × cols]  +=    dY[T × rows]ᵀ · X          (when trainable)
    ///
    /// W is read from the trainable copy when there is one, else from the packed weight
    /// (a frozen projection: the same bits, no copy) or from a quantized one's exact
    /// block values. With the bf16 copy (`enableBF16`) both products run in bf16 with
    /// float32 sums (`BF16GEMM`). Row strides: x `ldx`, dY `ldDY`, dX `ldDX`.
    /// Deterministic (see `ProjectionBackward`, `BF16GEMM`).
    package func backward(x: UnsafePointer<Float>, ldx: Int, dY: UnsafePointer<Float>, ldDY: Int,
                          dX: UnsafeMutablePointer<Float>?, ldDX: Int, tokens: Int, accumulate: Bool = false,
                          weightGradient: Bool = true) {
        if let bf16 {
            if let dX {
                BF16GEMM.inputGradient(dY, ldDY: ldDY, tokens: tokens, bf16, dX, ldDX: ldDX, accumulate: accumulate)
            }
            if weightGradient, let grad {
                BF16GEMM.weightGradient(dY, ldDY: ldDY, x, ldX: ldx, tokens: tokens, rows: rows, cols: cols, grad)
            }
            return
        }
        if let dX {
            if let weight {
                ProjectionBackward.inputGradient(dY, ldDY: ldDY, tokens: tokens, weight: weight, rows: rows, cols: cols,
                                                 dX, ldDX: ldDX, accumulate: accumulate)
            } else if let packed {
                ProjectionBackward.inputGradient(dY, ldDY: ldDY, tokens: tokens, packed: packed, dX, ldDX: ldDX,
                                                 accumulate: accumulate)
            } else if let quantized {
                QuantGEMM.inputGradient(dY, ldDY: ldDY, tokens: tokens, quantized, dX, ldDX: ldDX, accumulate: accumulate)
            }
        }
        if weightGradient, let grad {
            ProjectionBackward.weightGradient(dY, ldDY: ldDY, x, ldX: ldx, tokens: tokens, rows: rows, cols: cols, grad)
        }
    }
}
