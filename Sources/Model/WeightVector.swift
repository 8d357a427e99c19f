import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// A float32 weight vector of `count` values (an RMSNorm gain), row-major and owned.
/// Vectors are read directly by the kernels, so `data` is both the inference copy and
/// the trainable one; `makeTrainable()` only adds the gradient.
package final class WeightVector {
    package let count: Int
    /// The values, `count` floats.
    package let data: UnsafeMutablePointer<Float>
    /// The gradient, `count` floats; nil unless `makeTrainable()`.
    package private(set) var grad: UnsafeMutablePointer<Float>?

    /// A zeroed vector (loaders fill `data`).
    package init(count: Int) throws {
        guard count >= 0 else { throw BatchCoreError.invalid("vector of \(count) values") }
        self.count = count
        data = try Memory.allocateFloats(count, fill: 0)
    }

    deinit {
        free(data)
        free(grad)
    }

    /// Allocates a zeroed `grad` (idempotent).
    package func makeTrainable() throws {
        if grad == nil { grad = try Memory.allocateFloats(count, fill: 0) }
    }

    /// Frees `grad`.
    package func dropTrainable() {
        free(grad)
        grad = nil
    }
}
