import BCCore
import BCKV
import BCKernels
import Testing

/// `PagedKVCache.segments` of a half-precision or int8 cache decodes every block of the
/// stored prefix into scratch (blocks split over the threads): each position's keys and
/// values come back in their own slot — distinct fresh random rows per position, layer,
/// K and V, lengths off the block size — within the storage's rounding (f16: 2⁻¹¹
/// relative; int8: half a step, max|row|/254), and the same bits with 1, 2 and 3 threads.
@Suite(.serialized) struct PagedKVDecodeTests {
    @Test(arguments: [KVStorageType.f16, .int8])
    func segmentsDecodeEveryBlockIntoItsSlot(_ storage: KVStorageType) throws {
        var rng = SplitMix64(state: 0x5E6 &+ UInt64(storage.rawValue))
        let dim = 24, layers = 2, bs = 4
        let cache = try PagedKVCache(kvDim: dim, layout: .full(layerCount: layers, storage: storage, blockSize: bs),
                                     budgetBytes: 1 << 22)
        for (s, length) in [(0, 37), (1, 3), (2, 64)] {
            try cache.attachPrefix(sequence: s, prompt: [1])
            try cache.reserve(sequence: s, length: length)
            var want: [[Float]] = []  // [layer·2 + (0 K, 1 V)][position·dim + c]
            for _ in 0..<(2 * layers) { want.append([]) }
            for p in 0..<length {
                for l in 0..<layers {
                    let k = (0..<dim).map { _ in rng.uniform() * 3 }, v = (0..<dim).map { _ in rng.uniform() * 3 }
                    cache.write(layer: l, sequence: s, position: p, keys: k, values: v)
                    want[2 * l] += k
                    want[2 * l + 1] += v
                }
                cache.record(sequence: s, position: p, token: Int32(p % 5))
            }
            cache.commit(sequence: s, length: length)
            for l in 0..<layers {
                var bits: [[UInt32]] = []
                for threads in [1, 2, 3] {
                    let got: [Float] = try BackwardKernelTests.withThreads(threads) {
                        let segs = try cache.segments(layer: l, sequence: s, length: length)
                        var flat = [Float](repeating: .nan, count: 2 * length * dim)
                        for seg in segs {
                            for r in 0..<seg.count {
                                for c in 0..<dim {
                                    flat[(seg.start + r) * dim + c] = seg.keys[r * dim + c]
                                    flat[(length + seg.start + r) * dim + c] = seg.values[r * dim + c]
                                }
                            }
                        }
                        return flat
                    }
                    bits.append(got.map(\.bitPattern))
                    var worst = 0.0
                    for half in 0..<2 {
                        for p in 0..<length {
                            let ref = want[2 * l + half][(p * dim)..<((p + 1) * dim)]
                            let amax = ref.reduce(Float(0)) { max($0, abs($1)) }
                            for c in 0..<dim {
                                let x = Double(ref[ref.startIndex + c]), y = Double(got[(half * length + p) * dim + c])
                                let tol = storage == .f16 ? abs(x) * 0x1p-11 : Double(amax) / 254 * 1.0001
                                worst = max(worst, y.isNaN ? .infinity : abs(y - x) / max(tol, 1e-30))
                            }
                        }
                    }
                    #expect(worst <= 1, "\(storage) seq \(s) length \(length) layer \(l) \(threads) threads: \(worst)× tolerance")
                }
                #expect(bits[0] == bits[1] && bits[0] == bits[2], "\(storage) seq \(s) layer \(l): thread counts differ")
            }
        }
    }
}
