import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// Save/load of an optimizer's full state.
///
/// Format (version 1), all integers and floats little-endian:
///   "BCOPTIM\0"  u32 version  u32 algorithm  u32 group count  u32 tensor count
///   per group:   11 × f64 hyperparameters (lr, weight_decay, beta1, beta2, eps, momentum,
///                dampening, alpha, lr_decay, initial_accumulator_value, max_grad_norm),
///                u32 flag bits (nesterov, amsgrad, centered, maximize, grad_averaging,
///                trust_clip, always_adapt), i64 step count
///   per tensor:  u32 group, u32 name length + UTF-8 name, u64 element count,
///                u32 bitmask of present state slots, then each present slot's floats
///   u32 CRC-32 of every byte before it.
/// Loading validates everything before it replaces any state, so a bad file changes
/// nothing: the checksum; the algorithm, group and tensor counts, and every tensor's
/// group, name and element count against this optimizer; each group's hyperparameters
/// with the checks `addGroup` applies, no flag bits beyond the seven defined; step
/// counts in 0...`Optimizer.maxStepCount`; state masks naming only the algorithm's
/// slots and including those a registered tensor always has (Adagrad's sum); no
/// negative value in a slot of squares (`nonNegativeSlots`); no trailing bytes. Other
/// state values are taken as saved: a run with check_finite off can hold NaN/Inf.
extension Optimizer {
    static let stateMagic: [UInt8] = Array("BCOPTIM\0".utf8)
    static let stateVersion: UInt32 = 1
    /// Flag bits of a group (nesterov ... always_adapt).
    static let flagCount: UInt32 = 7

    package func stateSize() -> Int {
        var n = 8 + 4 * 4 + groups.count * (11 * 8 + 4 + 8) + 4
        for t in tensors {
            n += 4 + 4 + t.name.utf8.count + 8 + 4
            n += t.slots.reduce(0) { $0 + ($1 == nil ? 0 : t.count * 4) }
        }
        return n
    }

    package func serializeState() -> [UInt8] {
        var w = ByteWriter()
        w.raw(Self.stateMagic)
        w.u32(Self.stateVersion)
        w.u32(algorithm.rawValue)
        w.u32(UInt32(groups.count))
        w.u32(UInt32(tensors.count))
        for g in groups {
            let h = g.hyper
            for v in [h.lr, h.weightDecay, h.beta1, h.beta2, h.eps, h.momentum, h.dampening, h.alpha, h.lrDecay,
                      h.initialAccumulatorValue, h.maxGradNorm] { w.f64(v) }
            let flags = [h.nesterov, h.amsgrad, h.centered, h.maximize, h.gradAveraging, h.trustClip, h.alwaysAdapt]
            w.u32(flags.enumerated().reduce(0) { $0 | ($1.element ? 1 << UInt32($1.offset) : 0) })
            w.i64(g.step)
        }
        for t in tensors {
            w.u32(UInt32(t.group))
            w.string(t.name)
            w.u64(UInt64(t.count))
            w.u32(t.slots.enumerated().reduce(0) { $0 | ($1.element != nil ? 1 << UInt32($1.offset) : 0) })
            for s in t.slots { if let s { w.floats(s, t.count) } }
        }
        let crc = w.bytes.withUnsafeBytes { CRC32.checksum($0) }
        w.u32(crc)
        return w.bytes
    }

    package func loadState(_ bytes: UnsafeRawBufferPointer) throws {
        let what = "optimizer state"
        guard bytes.count >= 8 + 16 + 4 else { throw BatchCoreError.format("\(what): too short (\(bytes.count) bytes)") }
        guard Array(bytes[0..<8]) == Self.stateMagic else { throw BatchCoreError.format("\(what): not a batchcore optimizer state (bad magic)") }
        let body = UnsafeRawBufferPointer(rebasing: bytes[0..<bytes.count - 4])
        let stored = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: bytes.count - 4, as: UInt32.self))
        guard CRC32.checksum(body) == stored else { throw BatchCoreError.format("\(what): checksum mismatch (corrupt or truncated)") }
        var r = ByteReader(body, what: what)
        _ = try r.raw(8)
        let version = try r.u32()
        guard version == Self.stateVersion else { throw BatchCoreError.format("\(what): unsupported version \(version)") }
        let algo = try r.u32()
        guard algo == algorithm.rawValue else {
            let name = OptimizerAlgorithm(rawValue: algo)?.name ?? "unknown (\(algo))"
            throw BatchCoreError.format("\(what): saved by \(name), this optimizer is \(algorithm.name)")
        }
        let groupCount = Int(try r.u32()), tensorCount = Int(try r.u32())
        guard groupCount == groups.count, tensorCount == tensors.count else {
            throw BatchCoreError.format("\(what): has \(groupCount) groups / \(tensorCount) tensors, optimizer has \(groups.count) / \(tensors.count)")
        }
        var newGroups = groups
        for gi in 0..<groupCount {
            var v: [Double] = []
            for _ in 0..<11 { v.append(try r.f64()) }
            let flags = try r.u32()
            guard flags >> Self.flagCount == 0 else {
                throw BatchCoreError.format("\(what): group \(gi): unknown flag bits 0x\(String(flags, radix: 16))")
            }
            func bit(_ k: UInt32) -> Bool { flags & (1 << k) != 0 }
            let h = OptimizerHyperparameters(
                lr: v[0], weightDecay: v[1], beta1: v[2], beta2: v[3], eps: v[4], momentum: v[5], dampening: v[6],
                alpha: v[7], lrDecay: v[8], initialAccumulatorValue: v[9], maxGradNorm: v[10], nesterov: bit(0),
                amsgrad: bit(1), centered: bit(2), maximize: bit(3), gradAveraging: bit(4), trustClip: bit(5),
                alwaysAdapt: bit(6))
            do { try h.validate(for: algorithm) } catch let e as BatchCoreError {
                throw BatchCoreError.format("\(what): group \(gi): \(e.message)")
            }
            let step = try r.i64()
            guard step >= 0, step <= Self.maxStepCount else {
                throw BatchCoreError.format("\(what): group \(gi): step count \(step) outside 0...\(Self.maxStepCount)")
            }
            newGroups[gi].hyper = h
            newGroups[gi].step = step
        }
        // Validate the structure of every tensor before allocating anything.
        var slotPlan: [(offset: Int, mask: UInt32)] = []
        let slotCount = algorithm.stateSlots.count
        for t in tensors {
            let g = Int(try r.u32())
            let name = try r.string()
            let count = try r.u64()
            guard g == t.group, name == t.name, count == UInt64(t.count) else {
                throw BatchCoreError.format("\(what): tensor '\(name)' (group \(g), \(count) elements) does not match '\(t.name)' (group \(t.group), \(t.count) elements)")
            }
            let mask = try r.u32()
            guard mask >> UInt32(slotCount) == 0 else { throw BatchCoreError.format("\(what): tensor '\(name)': bad state mask \(mask)") }
            for k in algorithm.slotsFromRegistration where mask & (1 << UInt32(k)) == 0 {
                throw BatchCoreError.format("\(what): tensor '\(name)': state '\(algorithm.stateSlots[k])' is missing")
            }
            slotPlan.append((r.offset, mask))
            for k in 0..<slotCount where mask & (1 << UInt32(k)) != 0 {
                try r.need(t.count * 4)
                let data = try r.raw(t.count * 4)
                if algorithm.nonNegativeSlots.contains(k) {
                    for i in 0..<t.count {
                        // Negative: sign bit set, not -0, not NaN (finite or -Inf).
                        let bits = UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                        guard bits <= 0x8000_0000 || bits > 0xFF80_0000 else {
                            throw BatchCoreError.format("\(what): tensor '\(name)': '\(algorithm.stateSlots[k])' holds a negative value at \(i)")
                        }
                    }
                }
            }
        }
        guard r.remaining == 0 else { throw BatchCoreError.format("\(what): \(r.remaining) unexpected trailing bytes") }
        // Read the state into fresh buffers; free them all if anything fails.
        var fresh: [[UnsafeMutablePointer<Float>?]] = []
        do {
            for (ti, t) in tensors.enumerated() {
                var reader = ByteReader(body, what: what)
                _ = try reader.raw(slotPlan[ti].offset)
                var slots: [UnsafeMutablePointer<Float>?] = Array(repeating: nil, count: slotCount)
                fresh.append(slots)
                for k in 0..<slotCount where slotPlan[ti].mask & (1 << UInt32(k)) != 0 {
                    let buf = try OptimizerTensor.allocate(t.count, fill: 0)
                    slots[k] = buf
                    fresh[ti] = slots
                    try reader.floats(into: buf, t.count)
                }
            }
        } catch {
            for slots in fresh { for s in slots { free(s) } }
            throw error
        }
        // Commit.
        for (ti, t) in tensors.enumerated() {
            for s in t.slots { free(s) }
            t.slots = fresh[ti]
        }
        replaceGroups(newGroups)
    }

    /// Saves to `path` through a temporary file renamed into place.
    package func saveState(to path: String) throws {
        try writeAtomically(path, bytes: serializeState())
    }

    package func loadState(from path: String) throws {
        // A state file can never be larger than this optimizer's state (plus name slack).
        let bytes = try readWholeFile(path, limit: stateSize() + 1 << 20, larger: "this optimizer's state could be")
        try bytes.withUnsafeBytes { try loadState($0) }
    }
}
