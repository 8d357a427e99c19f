import BCKernels
#if canImport(Glibc)
import Glibc
#endif

/// Per-step float32 scalars of one parameter group, derived from its double
/// hyperparameters the way PyTorch derives them: expressions of hyperparameters are
/// evaluated in double and rounded once to float32 (`F(x)` below).
struct StepScalars {
    var gradScale: Float = 1      // gradient multiplier: grad scaling, clipping, maximize sign
    var gradDivisor: Float = 1    // LAMB's timm-style global clip divisor
    var lr: Float = 0
    var negLr: Float = 0
    var weightDecay: Float = 0
    var decayFactor: Float = 1    // F(1 - lr*wd), decoupled decay
    var beta1: Float = 0
    var oneMinusBeta1: Float = 0
    var beta2: Float = 0
    var oneMinusBeta2: Float = 0
    var eps: Float = 0
    var bc1: Float = 1
    var bc2Sqrt: Float = 1
    var invBc2Sqrt: Float = 1     // F(1/sqrt(1-β2^t)): Adam/AdamW multiply by it where torch divides
    var negStepSize: Float = 0
    var momentum: Float = 0
    var oneMinusDampening: Float = 1
    var alpha: Float = 0
    var oneMinusAlpha: Float = 0
    var negClr: Float = 0
    var hasWeightDecay = false
    var nesterov = false
    var amsgrad = false
    var centered = false
    var lambAdapt = false
    var trustClip = false
    var gradAveraging = true

    init() {}

    /// `step` is the 1-based count of the step about to run.
    init(_ a: OptimizerAlgorithm, _ h: OptimizerHyperparameters, step: Int64, gradScale: Double) {
        let t = Double(step)
        self.gradScale = Float(h.maximize ? -gradScale : gradScale)
        lr = Float(h.lr)
        negLr = Float(-h.lr)
        weightDecay = Float(h.weightDecay)
        hasWeightDecay = h.weightDecay != 0
        decayFactor = Float(1 - h.lr * h.weightDecay)
        beta1 = Float(h.beta1)
        oneMinusBeta1 = Float(1 - h.beta1)
        beta2 = Float(h.beta2)
        oneMinusBeta2 = Float(1 - h.beta2)
        eps = Float(h.eps)
        momentum = Float(h.momentum)
        oneMinusDampening = Float(1 - h.dampening)
        alpha = Float(h.alpha)
        oneMinusAlpha = Float(1 - h.alpha)
        nesterov = h.nesterov
        amsgrad = h.amsgrad
        centered = h.centered
        trustClip = h.trustClip
        gradAveraging = h.gradAveraging
        lambAdapt = h.weightDecay != 0 || h.alwaysAdapt
        switch a {
        case .adam, .adamw, .lamb:
            let bc1d = 1 - pow(h.beta1, t)
            let bc2d = 1 - pow(h.beta2, t)
            bc1 = Float(bc1d)
            bc2Sqrt = Float(pow(bc2d, 0.5))
            invBc2Sqrt = Float(1 / pow(bc2d, 0.5))
            negStepSize = Float(-(h.lr / bc1d))
        case .adagrad:
            negClr = Float(-(h.lr / (1 + (t - 1) * h.lrDecay)))
        default:
            break
        }
    }
}

/// torch.lerp_ on float32 as ATen computes it on AVX2/AVX-512 CPUs:
/// w < 0.5 ? fma(w, e - s, s) : fma(w - 1, e - s, e).
@inline(__always)
func lerp16(_ s: Vec16, _ e: Vec16, _ w: Float) -> Vec16 {
    let d = e - s
    return abs(w) < 0.5 ? fma16(w, d, s) : fma16(w - 1, d, e)
}

/// torch.sign: (0 < x) - (x < 0); NaN gives 0.
@inline(__always)
func sign16(_ x: Vec16) -> Vec16 {
    let zero = Vec16(repeating: 0), one = Vec16(repeating: 1)
    return zero.replacing(with: one, where: x .> zero).replacing(with: -one, where: x .< zero)
}

/// The update rules, one function per algorithm over elements [start, end) of one
/// tensor. Each documents its source; operation order and fused multiply-adds mirror
/// the reference so results agree to rounding (PyTorch's sqrt is MKL's, which is
/// not correctly rounded; ours is).
enum UpdateRules {
    /// torch.optim.SGD (`_single_tensor_sgd`):
    ///   g = ±grad (+ wd·p); buf = g on the first step, else buf = m·buf + (1-dampening)·g;
    ///   g = nesterov ? g + m·buf : buf;  p -= lr·g.
    static func sgd(_ t: OptimizerTensor, _ r: Range<Int>, _ s: StepScalars, freshMomentum: Bool) {
        let p = t.param + r.lowerBound, gp = t.grad + r.lowerBound
        let buf = t.slots[0].map { $0 + r.lowerBound }
        // A local always-inlined block body: the loop below runs it in place (a closure
        // argument would cost a call per 16 elements).
        @inline(__always) func block(_ i: Int, _ n: Int) {
            var x = load16(p, i, n)
            var g = load16(gp, i, n) * s.gradScale
            if s.hasWeightDecay { g = fma16(s.weightDecay, x, g) }
            if let buf {
                var b: Vec16
                if freshMomentum {
                    b = g
                } else {
                    b = fma16(s.oneMinusDampening, g, load16(buf, i, n) * s.momentum)
                }
                store16(b, buf, i, n)
                g = s.nesterov ? fma16(s.momentum, b, g) : b
            }
            x = fma16(s.negLr, g, x)
            store16(x, p, i, n)
        }
        var b = 0
        while b + 16 <= r.count { block(b, 16); b += 16 }
        if b < r.count { block(b, r.count - b) }
    }

    /// torch.optim.Adam / AdamW (`_single_tensor_adam`):
    ///   AdamW: p *= 1 - lr·wd;  Adam: g += wd·p;  m = lerp(m, g, 1-β1);  v = β2·v + (1-β2)·g²;
    ///   amsgrad: v̂ = max(v̂, v);  denom = sqrt(v or v̂)/sqrt(1-β2^t) + eps;  p += (-lr/(1-β1^t))·m/denom.
    static func adam(_ t: OptimizerTensor, _ r: Range<Int>, _ s: StepScalars, decoupled: Bool) {
        let o = r.lowerBound
        let p = t.param + o, gp = t.grad + o, mp = t.slots[0]! + o, vp = t.slots[1]! + o
        let vmaxp = s.amsgrad ? t.slots[2]! + o : nil
        let decay = decoupled && s.hasWeightDecay, l2 = !decoupled && s.hasWeightDecay
        // A local always-inlined block body: the loop below runs it in place (a closure
        // argument would cost a call per 16 elements).
        @inline(__always) func block(_ i: Int, _ n: Int) {
            var x = load16(p, i, n)
            var g = load16(gp, i, n) * s.gradScale
            if decay { x = x * s.decayFactor }
            if l2 { g = fma16(s.weightDecay, x, g) }
            let m = lerp16(load16(mp, i, n), g, s.oneMinusBeta1)
            let v = fma16(g * s.oneMinusBeta2, g, load16(vp, i, n) * s.beta2)
            store16(m, mp, i, n)
            store16(v, vp, i, n)
            var denomBase = v
            if let vmaxp {
                let old = load16(vmaxp, i, n)
                let vmax = old.replacing(with: v, where: old .< v)
                store16(vmax, vmaxp, i, n)
                denomBase = vmax
            }
            let denom = fma16(sqrt16(denomBase), Vec16(repeating: s.invBc2Sqrt), Vec16(repeating: s.eps))
            x = x + (m * s.negStepSize) / denom
            store16(x, p, i, n)
        }
        var b = 0
        while b + 16 <= r.count { block(b, 16); b += 16 }
        if b < r.count { block(b, r.count - b) }
    }

    /// torch.optim.Adagrad (`_single_tensor_adagrad`):
    ///   g = ±grad (+ wd·p);  clr = lr / (1 + (t-1)·lr_decay);  sum += g²;  p += (-clr)·g/(sqrt(sum) + eps).
    static func adagrad(_ t: OptimizerTensor, _ r: Range<Int>, _ s: StepScalars) {
        let o = r.lowerBound
        let p = t.param + o, gp = t.grad + o, sp = t.slots[0]! + o
        // A local always-inlined block body: the loop below runs it in place (a closure
        // argument would cost a call per 16 elements).
        @inline(__always) func block(_ i: Int, _ n: Int) {
            var x = load16(p, i, n)
            var g = load16(gp, i, n) * s.gradScale
            if s.hasWeightDecay { g = fma16(s.weightDecay, x, g) }
            let sum = fma16(g, g, load16(sp, i, n))
            store16(sum, sp, i, n)
            let std = sqrt16(sum) + s.eps
            x = x + (g * s.negClr) / std
            store16(x, p, i, n)
        }
        var b = 0
        while b + 16 <= r.count { block(b, 16); b += 16 }
        if b < r.count { block(b, r.count - b) }
    }

    /// torch.optim.RMSprop (`_single_tensor_rmsprop`):
    ///   g = ±grad (+ wd·p);  sq = α·sq + (1-α)·g²;  centered: ga = lerp(ga, g, 1-α), avg = sqrt(sq - ga²)
    ///   else avg = sqrt(sq);  avg += eps;  momentum: buf = m·buf + g/avg, p -= lr·buf;  else p += (-lr)·g/avg.
    static func rmsprop(_ t: OptimizerTensor, _ r: Range<Int>, _ s: StepScalars) {
        let o = r.lowerBound
        let p = t.param + o, gp = t.grad + o, sqp = t.slots[0]! + o
        let bufp = s.momentum > 0 ? t.slots[1]! + o : nil
        let gap = s.centered ? t.slots[2]! + o : nil
        // A local always-inlined block body: the loop below runs it in place (a closure
        // argument would cost a call per 16 elements).
        @inline(__always) func block(_ i: Int, _ n: Int) {
            var x = load16(p, i, n)
            var g = load16(gp, i, n) * s.gradScale
            if s.hasWeightDecay { g = fma16(s.weightDecay, x, g) }
            let sq = fma16(g * s.oneMinusAlpha, g, load16(sqp, i, n) * s.alpha)
            store16(sq, sqp, i, n)
            var avg: Vec16
            if let gap {
                let ga = lerp16(load16(gap, i, n), g, s.oneMinusAlpha)
                store16(ga, gap, i, n)
                avg = sqrt16(fma16(-ga, ga, sq))
            } else {
                avg = sqrt16(sq)
            }
            avg = avg + s.eps
            if let bufp {
                let b = load16(bufp, i, n) * s.momentum + g / avg
                store16(b, bufp, i, n)
                x = fma16(s.negLr, b, x)
            } else {
                x = x + (g * s.negLr) / avg
            }
            store16(x, p, i, n)
        }
        var b = 0
        while b + 16 <= r.count { block(b, 16); b += 16 }
        if b < r.count { block(b, r.count - b) }
    }

    /// Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms"; as timm's Lion):
    ///   p *= 1 - lr·wd;  u = sign(lerp(m, g, 1-β1));  p -= lr·u;  m = lerp(m, g, 1-β2).
    static func lion(_ t: OptimizerTensor, _ r: Range<Int>, _ s: StepScalars) {
        let o = r.lowerBound
        let p = t.param + o, gp = t.grad + o, mp = t.slots[0]! + o
        // A local always-inlined block body: the loop below runs it in place (a closure
        // argument would cost a call per 16 elements).
        @inline(__always) func block(_ i: Int, _ n: Int) {
            var x = load16(p, i, n) * s.decayFactor
            let g = load16(gp, i, n) * s.gradScale
            let m = load16(mp, i, n)
            x = fma16(s.negLr, sign16(lerp16(m, g, s.oneMinusBeta1)), x)
            store16(x, p, i, n)
            store16(lerp16(m, g, s.oneMinusBeta2), mp, i, n)
        }
        var b = 0
        while b + 16 <= r.count { block(b, 16); b += 16 }
        if b < r.count { block(b, r.count - b) }
    }

    /// LAMB (You et al., "Large Batch Optimization for Deep Learning"; as timm's Lamb /
    /// NVIDIA FusedLAMB). Phase 1 updates the moments and returns (Σp², Σu²) of this
    /// range, where u = (m/bc1)/(sqrt(v)/sqrt(bc2) + eps) (+ wd·p).
    static func lambMoments(_ t: OptimizerTensor, _ r: Range<Int>, _ s: StepScalars) -> (Double, Double) {
        let o = r.lowerBound
        let p = t.param + o, gp = t.grad + o, mp = t.slots[0]! + o, vp = t.slots[1]! + o
        var pp = SIMD8<Double>(repeating: 0), uu = SIMD8<Double>(repeating: 0)
        // A local always-inlined block body: the loop below runs it in place (a closure
        // argument would cost a call per 16 elements).
        @inline(__always) func block(_ i: Int, _ n: Int) {
            let x = load16(p, i, n)
            let g = (load16(gp, i, n) * s.gradScale) / s.gradDivisor
            let m0 = load16(mp, i, n)
            let m = s.gradAveraging ? lerp16(m0, g, s.oneMinusBeta1) : fma16(1, g, m0 * s.beta1)
            let v = fma16(g * s.oneMinusBeta2, g, load16(vp, i, n) * s.beta2)
            store16(m, mp, i, n)
            store16(v, vp, i, n)
            if s.lambAdapt {
                let u = lambUpdate(m, v, x, s)
                let xl = SIMD8<Double>(x.lowHalf), xh = SIMD8<Double>(x.highHalf)
                let ul = SIMD8<Double>(u.lowHalf), uh = SIMD8<Double>(u.highHalf)
                pp = pp.addingProduct(xl, xl).addingProduct(xh, xh)
                uu = uu.addingProduct(ul, ul).addingProduct(uh, uh)
            }
        }
        var b = 0
        while b + 16 <= r.count { block(b, 16); b += 16 }
        if b < r.count { block(b, r.count - b) }
        return (pp.sum(), uu.sum())
    }

    @inline(__always)
    static func lambUpdate(_ m: Vec16, _ v: Vec16, _ x: Vec16, _ s: StepScalars) -> Vec16 {
        let denom = sqrt16(v) / s.bc2Sqrt + s.eps
        var u = (m / s.bc1) / denom
        if s.hasWeightDecay { u = fma16(s.weightDecay, x, u) }
        return u
    }

    /// LAMB phase 2: p -= lr · (trust · u), with u recomputed from the updated moments.
    static func lambApply(_ t: OptimizerTensor, _ r: Range<Int>, _ s: StepScalars, trust: Float) {
        let o = r.lowerBound
        let p = t.param + o, mp = t.slots[0]! + o, vp = t.slots[1]! + o
        // A local always-inlined block body: the loop below runs it in place (a closure
        // argument would cost a call per 16 elements).
        @inline(__always) func block(_ i: Int, _ n: Int) {
            let x = load16(p, i, n)
            var u = lambUpdate(load16(mp, i, n), load16(vp, i, n), x, s)
            if s.lambAdapt { u = u * trust }
            store16(fma16(s.negLr, u, x), p, i, n)
        }
        var b = 0
        while b + 16 <= r.count { block(b, 16); b += 16 }
        if b < r.count { block(b, r.count - b) }
    }

    /// Adaptive Braking phase 1 (Venigalla et al., arXiv 2007.01397): returns
    /// (Σg², Σv², Σg·v) of this range, g = grad (+ wd·p), v the velocity before the step.
    static func brakingStats(_ t: OptimizerTensor, _ r: Range<Int>, _ s: StepScalars) -> (Double, Double, Double) {
        let o = r.lowerBound
        let p = t.param + o, gp = t.grad + o, vp = t.slots[0]! + o
        var gg = SIMD8<Double>(repeating: 0), vv = gg, gv = gg
        // A local always-inlined block body: the loop below runs it in place (a closure
        // argument would cost a call per 16 elements).
        @inline(__always) func block(_ i: Int, _ n: Int) {
            var g = load16(gp, i, n) * s.gradScale
            if s.hasWeightDecay { g = fma16(s.weightDecay, load16(p, i, n), g) }
            let v = load16(vp, i, n)
            let gl = SIMD8<Double>(g.lowHalf), gh = SIMD8<Double>(g.highHalf)
            let vl = SIMD8<Double>(v.lowHalf), vh = SIMD8<Double>(v.highHalf)
            gg = gg.addingProduct(gl, gl).addingProduct(gh, gh)
            vv = vv.addingProduct(vl, vl).addingProduct(vh, vh)
            gv = gv.addingProduct(gl, vl).addingProduct(gh, vh)
        }
        var b = 0
        while b + 16 <= r.count { block(b, 16); b += 16 }
        if b < r.count { block(b, r.count - b) }
        return (gg.sum(), vv.sum(), gv.sum())
    }

    /// Adaptive Braking phase 2: the gradient is scaled by ρ = 1 - α·cos(g, v) (braking
    /// when the gradient runs along the velocity, accelerating when it opposes it), then
    /// SGD-momentum: v = m·v + ρ·g;  p -= lr·v.
    static func brakingApply(_ t: OptimizerTensor, _ r: Range<Int>, _ s: StepScalars, rho: Float) {
        let o = r.lowerBound
        let p = t.param + o, gp = t.grad + o, vp = t.slots[0]! + o
        // A local always-inlined block body: the loop below runs it in place (a closure
        // argument would cost a call per 16 elements).
        @inline(__always) func block(_ i: Int, _ n: Int) {
            let x = load16(p, i, n)
            var g = load16(gp, i, n) * s.gradScale
            if s.hasWeightDecay { g = fma16(s.weightDecay, x, g) }
            let v = load16(vp, i, n) * s.momentum + g * rho
            store16(v, vp, i, n)
            store16(fma16(s.negLr, v, x), p, i, n)
        }
        var b = 0
        while b + 16 <= r.count { block(b, 16); b += 16 }
        if b < r.count { block(b, r.count - b) }
    }
}
