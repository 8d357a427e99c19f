import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

/// Exponential moving average of parameter tensors (a "model EMA"):
///   shadow = lerp(shadow, param, 1 - d),  d = decay^κ,
/// where κ is the step's batch-size scaling factor: "How to Scale Your EMA" (Busbridge
/// et al., 2023) keeps an EMA's behaviour when the batch grows κ-fold by raising its
/// decay to the power κ. Not thread-safe; updates run on `Parallel.threadCount` threads.
package final class ParameterEMA {
    package let decay: Double
    private var tensors: [(param: UnsafePointer<Float>, count: Int, shadow: UnsafeMutablePointer<Float>)] = []
    package private(set) var updates: Int64 = 0

    package init(decay: Double) throws {
        guard decay.isFinite, decay >= 0, decay <= 1 else {
            throw BatchCoreError.invalid("EMA decay must be in [0, 1] (got \(decay))")
        }
        self.decay = decay
    }

    deinit {
        for t in tensors { free(t.shadow) }
    }

    package var tensorCount: Int { tensors.count }

    @discardableResult
    package func addTensor(_ param: UnsafePointer<Float>, count: Int) throws -> Int {
        guard count > 0, count <= Int.max / 8 else { throw BatchCoreError.invalid("EMA tensor count must be > 0 (got \(count))") }
        let r = UInt(bitPattern: param)..<UInt(bitPattern: param + count)
        for t in tensors where (UInt(bitPattern: t.param)..<UInt(bitPattern: t.param + t.count)).overlaps(r) {
            throw BatchCoreError.invalid("EMA tensor overlaps a tracked tensor (duplicate registration)")
        }
        let shadow = try OptimizerTensor.allocate(count, fill: 0)
        shadow.update(from: param, count: count)
        tensors.append((param, count, shadow))
        return tensors.count - 1
    }

    package func update(kappa: Double = 1) throws {
        guard kappa.isFinite, kappa > 0 else { throw BatchCoreError.invalid("EMA kappa must be finite and > 0 (got \(kappa))") }
        let weight = Float(1 - pow(decay, kappa))
        let chunk = 1 << 16
        var items: [(Int, Range<Int>)] = []
        for (k, t) in tensors.enumerated() {
            var s = 0
            while s < t.count { items.append((k, s..<min(t.count, s + chunk))); s += chunk }
        }
        let tensors = self.tensors
        Parallel.forEach(items.count) { i in
            let (k, r) = items[i]
            let p = tensors[k].param + r.lowerBound, sh = tensors[k].shadow + r.lowerBound
            forEachBlock16(r.count) { j, n in
                store16(lerp16(load16(sh, j, n), load16(p, j, n), weight), sh, j, n)
            }
        }
        updates += 1
    }

    package func copyShadow(_ index: Int, to dst: UnsafeMutablePointer<Float>, count: Int) throws {
        guard tensors.indices.contains(index) else { throw BatchCoreError.invalid("EMA tensor \(index) does not exist") }
        guard count == tensors[index].count else {
            throw BatchCoreError.invalid("EMA tensor \(index) has \(tensors[index].count) elements, not \(count)")
        }
        dst.update(from: tensors[index].shadow, count: count)
    }
}
