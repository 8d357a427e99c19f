/// The data order's pseudo-random generator: splitmix64 (Steele, Lea & Flood, 2014), only
/// integer adds, xors, shifts and multiplies, so a seed gives the same sequence on every
/// platform. A plain value: a copy replays what the original will produce.
package struct ShuffleRNG: RandomNumberGenerator, Equatable, Sendable {
    package private(set) var state: UInt64

    package init(state: UInt64) { self.state = state }

    /// The generator of stream `stream` (e.g. an epoch) of `seed`: independent streams
    /// from one seed, with the state scrambled once so nearby seeds/streams diverge.
    package init(seed: UInt64, stream: UInt64) {
        var g = ShuffleRNG(state: seed ^ (stream &* 0xD1B5_4A32_D192_ED03))
        state = g.next() ^ 0x8CB9_2BA7_2F3D_8DD7
    }

    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform integer in 0..<bound (0 for bound 0), by Lemire's multiply-and-reject
    /// method (no modulo bias), using only this generator's outputs.
    package mutating func below(_ bound: UInt64) -> UInt64 {
        guard bound > 0 else { return 0 }
        var m = next().multipliedFullWidth(by: bound)
        if m.low < bound {
            let threshold = (0 &- bound) % bound
            while m.low < threshold { m = next().multipliedFullWidth(by: bound) }
        }
        return m.high
    }

    /// A Fisher–Yates permutation of 0..<count.
    package mutating func permutation(_ count: Int) -> [Int] {
        var p = Array(0..<max(0, count))
        var i = p.count - 1
        while i > 0 {
            let j = Int(below(UInt64(i + 1)))
            p.swapAt(i, j)
            i -= 1
        }
        return p
    }
}
