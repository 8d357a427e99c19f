import BCCore
/// Hyperparameters of one parameter group. Field names follow torch.optim; a field
/// an algorithm does not use is ignored by it. Values are doubles, as Python floats
/// are in PyTorch, and scalars derived from them are computed in double before being
/// applied to float32 tensors, as PyTorch does.
package struct OptimizerHyperparameters: Equatable, Sendable {
    package var lr: Double
    package var weightDecay: Double
    /// Adam/AdamW/LAMB/Lion first-moment coefficient.
    package var beta1: Double
    /// Adam/AdamW/LAMB second-moment coefficient; Lion's interpolation for the update.
    package var beta2: Double
    package var eps: Double
    /// SGD, RMSprop and Adaptive Braking momentum.
    package var momentum: Double
    /// SGD dampening.
    package var dampening: Double
    /// RMSprop smoothing constant; Adaptive Braking strength.
    package var alpha: Double
    /// Adagrad learning-rate decay.
    package var lrDecay: Double
    /// Adagrad initial value of the squared-gradient sum.
    package var initialAccumulatorValue: Double
    /// LAMB: global gradient-norm clip inside the step, timm style (0 = off).
    package var maxGradNorm: Double
    package var nesterov: Bool
    package var amsgrad: Bool
    package var centered: Bool
    package var maximize: Bool
    /// LAMB: exp_avg uses (1 - beta1) * grad (true) or grad (false).
    package var gradAveraging: Bool
    /// LAMB: clamp the trust ratio to at most 1 (LAMBC).
    package var trustClip: Bool
    /// LAMB: apply the trust ratio even when weight decay is 0.
    package var alwaysAdapt: Bool

    package init(lr: Double, weightDecay: Double, beta1: Double, beta2: Double, eps: Double, momentum: Double,
                dampening: Double, alpha: Double, lrDecay: Double, initialAccumulatorValue: Double, maxGradNorm: Double,
                nesterov: Bool, amsgrad: Bool, centered: Bool, maximize: Bool, gradAveraging: Bool, trustClip: Bool,
                alwaysAdapt: Bool) {
        self.lr = lr; self.weightDecay = weightDecay; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
        self.momentum = momentum; self.dampening = dampening; self.alpha = alpha; self.lrDecay = lrDecay
        self.initialAccumulatorValue = initialAccumulatorValue; self.maxGradNorm = maxGradNorm
        self.nesterov = nesterov; self.amsgrad = amsgrad; self.centered = centered; self.maximize = maximize
        self.gradAveraging = gradAveraging; self.trustClip = trustClip; self.alwaysAdapt = alwaysAdapt
    }

    /// PyTorch's (or the reference implementation's) defaults for each algorithm.
    package static func defaults(for algorithm: OptimizerAlgorithm) -> OptimizerHyperparameters {
        var h = OptimizerHyperparameters(
            lr: 1e-3, weightDecay: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, momentum: 0, dampening: 0,
            alpha: 0.99, lrDecay: 0, initialAccumulatorValue: 0, maxGradNorm: 0, nesterov: false,
            amsgrad: false, centered: false, maximize: false, gradAveraging: true, trustClip: false,
            alwaysAdapt: false)
        switch algorithm {
        case .sgd: break
        case .adam: break
        case .adamw: h.weightDecay = 1e-2
        case .adagrad: h.lr = 1e-2; h.eps = 1e-10
        case .rmsprop: h.lr = 1e-2; h.eps = 1e-8; h.alpha = 0.99
        case .lamb: h.eps = 1e-6; h.weightDecay = 1e-2; h.maxGradNorm = 1.0
        case .lion: h.lr = 1e-4; h.beta2 = 0.99
        case .adaptiveBraking: h.lr = 1e-2; h.momentum = 0.9; h.alpha = 1.0
        }
        return h
    }

    /// Throws an invalid-argument error naming the first out-of-range value.
    package func validate(for algorithm: OptimizerAlgorithm) throws {
        func check(_ ok: Bool, _ what: @autoclosure () -> String) throws {
            if !ok { throw BatchCoreError.invalid("\(algorithm.name): \(what())") }
        }
        let all: [(String, Double)] = [
            ("lr", lr), ("weight_decay", weightDecay), ("beta1", beta1), ("beta2", beta2), ("eps", eps),
            ("momentum", momentum), ("dampening", dampening), ("alpha", alpha), ("lr_decay", lrDecay),
            ("initial_accumulator_value", initialAccumulatorValue), ("max_grad_norm", maxGradNorm),
        ]
        for (name, v) in all { try check(v.isFinite, "\(name) is not finite (\(v))") }
        try check(lr >= 0, "lr must be >= 0 (got \(lr))")
        try check(weightDecay >= 0, "weight_decay must be >= 0 (got \(weightDecay))")
        try check(eps >= 0, "eps must be >= 0 (got \(eps))")
        try check(maxGradNorm >= 0, "max_grad_norm must be >= 0 (got \(maxGradNorm))")
        switch algorithm {
        case .adam, .adamw, .lamb, .lion:
            try check(beta1 >= 0 && beta1 < 1, "beta1 must be in [0, 1) (got \(beta1))")
            try check(beta2 >= 0 && beta2 < 1 || (algorithm == .lion && beta2 >= 0 && beta2 <= 1),
                      "beta2 must be in [0, 1) (got \(beta2))")
        case .sgd:
            try check(momentum >= 0, "momentum must be >= 0 (got \(momentum))")
            try check(!nesterov || (momentum > 0 && dampening == 0), "nesterov needs momentum > 0 and dampening 0")
        case .rmsprop:
            try check(alpha >= 0, "alpha must be >= 0 (got \(alpha))")
            try check(momentum >= 0, "momentum must be >= 0 (got \(momentum))")
        case .adagrad:
            try check(lrDecay >= 0, "lr_decay must be >= 0 (got \(lrDecay))")
            try check(initialAccumulatorValue >= 0, "initial_accumulator_value must be >= 0")
        case .adaptiveBraking:
            try check(momentum >= 0 && momentum < 1, "momentum must be in [0, 1) (got \(momentum))")
            try check(alpha >= 0, "alpha must be >= 0 (got \(alpha))")
        }
    }
}
