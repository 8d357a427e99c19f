import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// A float32 weight vector of `count` values (an RMSNorm gain), row-major and owned.
/// Vectors are read directly by the kernels, so `data` is both the inference copy and
/// the trainable one; `makeTrainable()` only adds the gradient.
public final class WeightVector {
    public let count: Int
    /// The values, `count` floats.
    public let data: UnsafeMutablePointer<Float>
    /// The gradient, `count` floats; nil unless `makeTrainable()`.
    public private(set) var grad: UnsafeMutablePointer<Float>?

    /// A zeroed vector (loaders fill `data`).
    public init(count: Int) throws {
        guard count >= 0 else { throw BatchCoreError.invalid("vector of \(count) values") }
        self.count = count
        data = try Memory.allocateFloats(count, fill: 0)
    }

    deinit {
        free(data)
        free(grad)
    }

    /// Allocates a zeroed `grad` (idempotent).
    public func makeTrainable() throws {
        if grad == nil { grad = try Memory.allocateFloats(count, fill: 0) }
    }

    /// Frees `grad`.
    public func dropTrainable() {
        free(grad)
        grad = nil
    }
}
