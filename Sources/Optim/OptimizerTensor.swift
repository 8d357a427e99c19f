import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// One registered tensor: caller-owned float32 parameter and gradient buffers and
/// the library-owned state buffers (moments etc.) the algorithm keeps for it.
package final class OptimizerTensor {
    package let name: String
    package let param: UnsafeMutablePointer<Float>
    package let grad: UnsafePointer<Float>
    package let count: Int
    package let group: Int
    /// State buffers by slot (see `OptimizerAlgorithm.stateSlots`); nil = not created yet.
    var slots: [UnsafeMutablePointer<Float>?]

    init(name: String, param: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>, count: Int, group: Int, slotCount: Int) {
        self.name = name
        self.param = param
        self.grad = grad
        self.count = count
        self.group = group
        self.slots = Array(repeating: nil, count: slotCount)
    }

    deinit {
        for s in slots { free(s) }
    }

    /// A new buffer of `count` floats, filled with `value` (see `Memory`).
    static func allocate(_ count: Int, fill value: Float) throws -> UnsafeMutablePointer<Float> {
        try Memory.allocateFloats(count, fill: value)
    }

    package func state(_ slot: Int) -> UnsafeMutablePointer<Float>? { slots[slot] }
}

extension OptimizerAlgorithm {
    /// Names of the per-tensor state buffers, in slot order (PyTorch's state keys).
    package var stateSlots: [String] {
        switch self {
        case .sgd: ["momentum_buffer"]
        case .adam, .adamw: ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        case .adagrad: ["sum"]
        case .rmsprop: ["square_avg", "momentum_buffer", "grad_avg"]
        case .lamb: ["exp_avg", "exp_avg_sq"]
        case .lion: ["exp_avg"]
        case .adaptiveBraking: ["velocity"]
        }
    }

    /// Slots that hold a sum or average of squares, never negative whatever the
    /// hyperparameters (β2 < 1 for Adam/AdamW/LAMB; Adagrad's sum starts at an initial
    /// value >= 0). A state file with a negative value there is corrupt. (RMSprop's
    /// square_avg is not one: alpha > 1 is allowed and can make it negative.)
    var nonNegativeSlots: [Int] {
        switch self {
        case .adam, .adamw: [1, 2]
        case .adagrad: [0]
        case .lamb: [1]
        case .sgd, .rmsprop, .lion, .adaptiveBraking: []
        }
    }

    /// Slots created when a tensor is registered, so present in every state of it.
    var slotsFromRegistration: [Int] { self == .adagrad ? [0] : [] }

    /// The slots a step with these hyperparameters reads and writes.
    func slotsNeeded(_ h: OptimizerHyperparameters) -> [Int] {
        switch self {
        case .sgd: h.momentum != 0 ? [0] : []
        case .adam, .adamw: h.amsgrad ? [0, 1, 2] : [0, 1]
        case .adagrad: [0]
        case .rmsprop: [0] + (h.momentum > 0 ? [1] : []) + (h.centered ? [2] : [])
        case .lamb: [0, 1]
        case .lion: [0]
        case .adaptiveBraking: [0]
        }
    }
}
