import BCCore
/// The sampler's pseudo-random generator: xoshiro256** (Blackman & Vigna, 2018) whose
/// 256-bit state is seeded by four outputs of splitmix64(seed).
///
/// Only integer adds, shifts, rotates, xors and multiplies are used, so a seed gives the
/// same sequence on every platform and compiler. It is a plain value type: copying it
/// forks the stream (a saved copy replays exactly what the original will produce).
package struct SamplerRNG: RandomNumberGenerator, Sendable, Equatable, Hashable {
    package private(set) var s0: UInt64
    package private(set) var s1: UInt64
    package private(set) var s2: UInt64
    package private(set) var s3: UInt64

    /// Seeds the state with splitmix64 (Steele, Lea & Flood), the seeding the
    /// xoshiro authors recommend. Any seed, including 0, is valid.
    package init(seed: UInt64) {
        var x = seed
        func splitmix(_ x: inout UInt64) -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitmix(&x)
        s1 = splitmix(&x)
        s2 = splitmix(&x)
        s3 = splitmix(&x)
    }

    /// Restores a state saved from `state`. The all-zero state is xoshiro's one fixed
    /// point and is rejected.
    package init(state: (UInt64, UInt64, UInt64, UInt64)) throws {
        guard state.0 | state.1 | state.2 | state.3 != 0 else {
            throw BatchCoreError.invalid("SamplerRNG: the all-zero state is invalid")
        }
        (s0, s1, s2, s3) = state
    }

    /// The full generator state, for saving alongside a sequence.
    package var state: (UInt64, UInt64, UInt64, UInt64) { (s0, s1, s2, s3) }

    /// The next 64 random bits (xoshiro256**).
    @inline(__always)
    package mutating func next() -> UInt64 {
        let result = rotl(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = rotl(s3, 45)
        return result
    }

    /// A uniform double in [0, 1): the top 53 bits of `next()` times 2⁻⁵³, so every
    /// value is a multiple of 2⁻⁵³ and 1 is never returned.
    @inline(__always)
    package mutating func nextDouble() -> Double {
        Double(next() >> 11) * 0x1p-53
    }

    @inline(__always)
    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
}
