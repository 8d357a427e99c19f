import BCCore
import BCKV
import BCModel
import BCEngine
import Foundation
import Testing

/// The engine's adapter memory budget (`EngineOptions.adapterBytes`,
/// `AdapterResidency`): LRU eviction of adapters no running request uses, reload on
/// demand with the same bits (outputs equal a run that never evicted), the resident
/// bytes never past the budget except by adapters in use, a reload failure finishing
/// only its request, adapters loaded and released while the engine runs, bad arguments.
@Suite(.serialized) struct AdapterBudgetTests {
    typealias S = ServingAdapterTests

    struct Outcome {
        var tokens: [[Int32]] = []
        var reasons: [FinishReason?] = []
        var messages: [String] = []
    }

    /// A request of 6..14 prompt tokens, 10 sampled tokens (temperature 0.8, own seed).
    static func spec(_ seed: UInt64, _ adapter: ServingAdapter?, maxTokens: Int = 10) -> GenerationRequest {
        var rng = SplitMix64(state: seed)
        let prompt = (0..<(6 + Int(rng.next() % 9))).map { _ in Int32(1 + rng.next() % 60) }
        var sp = SamplingParams.greedy
        sp.temperature = 0.8
        sp.seed = seed
        return GenerationRequest(prompt: prompt, sampling: sp, maxTokens: maxTokens, ignoreEndOfGeneration: true, adapter: adapter)
    }

    static func engine(_ m: LanguageModel, adapterBytes: Int, maxSeqs: Int = 64) throws -> Engine {
        let cache = try PagedKVCache(kvDim: m.config.kvDim, layout: .full(layerCount: m.config.layerCount),
                                     budgetBytes: 1 << 22, maxLength: 512)
        return try Engine(model: m, cache: cache,
                          options: EngineOptions(maxBatchedTokens: 16, maxSequences: maxSeqs, adapterBytes: adapterBytes))
    }

    /// Submits `specs[k]` before step `at[k]` (0: before the first), steps until idle,
    /// and after every step checks the budget: resident adapter bytes ≤ max(budget,
    /// bytes of the distinct adapters of live requests). `between(step)` runs after each step.
    static func drive(_ e: Engine, _ specs: [GenerationRequest], at: [Int]? = nil, budget: Int,
                      between: (Int) throws -> Void = { _ in }) throws -> Outcome {
        let at = at ?? specs.map { _ in 0 }
        var ids = [UInt64?](repeating: nil, count: specs.count)
        var out = Outcome(tokens: specs.map { _ in [] }, reasons: specs.map { _ in nil }, messages: specs.map { _ in "" })
        var step = 0
        while true {
            for k in specs.indices where at[k] == step { ids[k] = try e.submit(specs[k]) }
            if !e.hasWork && !at.contains(where: { $0 > step }) { break }
            try e.step()
            for ev in e.poll() {
                switch ev {
                case .token(let rid, _, _, let t, _, _):
                    out.tokens[ids.firstIndex(of: rid)!].append(t)
                case .finished(let rid, _, _, let reason, _, _, let message):
                    let k = ids.firstIndex(of: rid)!
                    out.reasons[k] = reason
                    out.messages[k] = message
                }
            }
            var inUse: [ObjectIdentifier: Int] = [:]
            for k in specs.indices where ids[k] != nil && out.reasons[k] == nil {
                if let a = specs[k].adapter { inUse[ObjectIdentifier(a)] = a.bytes }
            }
            let resident = e.currentMetrics().adapterResidentBytes
            let bound = budget == 0 ? Int.max : max(budget, inUse.values.reduce(0, +))
            #expect(resident <= bound, "step \(step): \(resident) resident adapter bytes, budget \(budget), in use \(inUse.values.reduce(0, +))")
            step += 1
            try between(step)
            #expect(step < 5000)
            if step >= 5000 { break }
        }
        return out
    }

    /// The same requests in an engine without a budget, adapters never evicted.
    static func reference(_ m: LanguageModel, _ specs: [GenerationRequest]) throws -> [[Int32]] {
        try drive(try engine(m, adapterBytes: 0), specs, budget: 0).tokens
    }

    /// Budget of two adapters: after a0, a1, a0 a request on a2 evicts a1 (least recently
    /// used), then a request on a1 reloads it and evicts a0 — not a2; every output equals
    /// the never-evicting engine's.
    @Test func evictsLeastRecentlyUsedAndReloadsSameBits() throws {
        let m = try S.tiny()
        let dirs = try (0..<3).map { try S.writeAdapter(m, seed: 700 + UInt64($0)) }
        defer { for d in dirs { try? FileManager.default.removeItem(atPath: d) } }
        let a = try dirs.map { try ServingAdapter(directory: $0, model: m) }
        let bytes = a[0].bytes
        #expect(bytes > 0 && a.allSatisfy { $0.bytes == bytes })
        let e = try Self.engine(m, adapterBytes: 2 * bytes)
        let uses = [0, 1, 0, 2, 1]
        let specs = uses.enumerated().map { Self.spec(10 + UInt64($0.offset), a[$0.element]) }
        var got: [[Int32]] = []
        for (k, s) in specs.enumerated() {
            got.append(try Self.drive(e, [s], budget: 2 * bytes).tokens[0])
            let mt = e.currentMetrics()
            switch k {
            case 0...2:
                #expect(mt.adapterEvictions == 0 && mt.adapterLoads == 0, "use \(k)")
                #expect(a[0].isResident && a[1].isResident)
            case 3:
                #expect(!a[1].isResident, "a1 is the least recently used")
                #expect(a[0].isResident && a[2].isResident)
                #expect(mt.adapterEvictions == 1 && mt.adapterLoads == 0)
                #expect(mt.adapterResidentBytes == 2 * bytes)
            default:
                #expect(a[1].isResident, "reloaded on demand")
                #expect(!a[0].isResident, "a0 is now the least recently used")
                #expect(a[2].isResident)
                #expect(mt.adapterEvictions == 2 && mt.adapterLoads == 1)
                #expect(mt.adapterResidentBytes == 2 * bytes)
            }
        }
        let want = try Self.reference(m, specs)
        #expect(got == want, "evicted and reloaded adapters give the never-evicted outputs")
        // The adapters change the output at all (else the comparison proves nothing).
        var base = specs[4]
        base.adapter = nil
        #expect(try Self.reference(m, [base])[0] != want[4])
    }

    /// A budget of ONE adapter, 12 requests round-robin over 3 adapters and none, at most
    /// 2 sequences per step, arriving over time: adapters are evicted and reloaded many
    /// times, the budget holds except for adapters in use, and every request's tokens
    /// equal the never-evicting engine's.
    @Test func oneAdapterBudgetUnderContinuousBatching() throws {
        let m = try S.tiny()
        let dirs = try (0..<3).map { try S.writeAdapter(m, seed: 710 + UInt64($0), rank: 2 + $0) }
        defer { for d in dirs { try? FileManager.default.removeItem(atPath: d) } }
        let a = try dirs.map { try ServingAdapter(directory: $0, model: m) }
        let budget = a.map(\.bytes).max()!
        let specs = (0..<12).map { Self.spec(40 + UInt64($0), $0 % 4 == 3 ? nil : a[$0 % 4]) }
        let at = (0..<12).map { $0 * 3 }
        let e = try Self.engine(m, adapterBytes: budget, maxSeqs: 2)
        let got = try Self.drive(e, specs, at: at, budget: budget)
        #expect(got.reasons.allSatisfy { $0 == .length }, "\(got.messages)")
        let mt = e.currentMetrics()
        #expect(mt.adapterEvictions >= 4 && mt.adapterLoads >= 4, "evictions \(mt.adapterEvictions), loads \(mt.adapterLoads)")
        #expect(got.tokens == (try Self.reference(m, specs)))
    }

    /// A reload that fails (directory deleted, then files holding other values) finishes
    /// that request with an error; the others and the engine go on, and once the files
    /// are back the adapter reloads. A context reloads an evicted adapter with the same logits.
    @Test func reloadFailureFinishesOnlyThatRequest() throws {
        let m = try S.tiny()
        let dirs = try (0..<3).map { try S.writeAdapter(m, seed: 720 + UInt64($0)) }
        let backup = S.tempDir("bak")
        defer { for d in dirs + [backup] { try? FileManager.default.removeItem(atPath: d) } }
        try FileManager.default.copyItem(atPath: dirs[0], toPath: backup)
        let a0 = try ServingAdapter(directory: dirs[0], model: m), a1 = try ServingAdapter(directory: dirs[1], model: m)
        let budget = a0.bytes
        let e = try Self.engine(m, adapterBytes: budget)
        let first = [Self.spec(60, a0), Self.spec(61, a1)]
        let warm = try Self.drive(e, first, at: [0, 20], budget: budget)
        #expect(warm.reasons == [.length, .length])
        #expect(!a0.isResident && a1.isResident)

        let specs = [Self.spec(62, a0), Self.spec(63, a1), Self.spec(64, nil), Self.spec(65, a0)]
        let want = try Self.reference(m, specs)
        #expect(a0.evict(), "the reference run read a0 again; evict it for the failure below")
        try FileManager.default.removeItem(atPath: dirs[0])
        let got = try Self.drive(e, specs, at: [0, 0, 0, 2], budget: budget)
        #expect(got.reasons == [.error, .length, .length, .error], "\(got.messages)")
        #expect(got.messages[0].contains("adapter"), "\(got.messages[0])")
        #expect(got.tokens[0].isEmpty && got.tokens[3].isEmpty)
        #expect(!a0.isResident)
        #expect(got.tokens[1] == want[1] && got.tokens[2] == want[2])

        // Files of another adapter (same shapes) in its place: refused, the id's KV stays honest.
        try FileManager.default.copyItem(atPath: dirs[2], toPath: dirs[0])
        let changed = try Self.drive(e, [Self.spec(66, a0)], budget: budget)
        #expect(changed.reasons == [.error] && changed.messages[0].contains("changed"), "\(changed.messages)")
        #expect(!a0.isResident)

        // The original files back: reloads, same outputs as never evicted.
        try FileManager.default.removeItem(atPath: dirs[0])
        try FileManager.default.copyItem(atPath: backup, toPath: dirs[0])
        let loadsBefore = e.currentMetrics().adapterLoads
        let back = try Self.drive(e, [specs[0]], budget: budget)
        #expect(back.reasons == [.length] && back.tokens[0] == want[0])
        #expect(e.currentMetrics().adapterLoads == loadsBefore + 1)

        // A context decodes with an evicted adapter: read again, the same logits.
        let seq: [Int32] = [5, 9, 14, 3, 22, 7]
        let before = try S.logits(m, seq, adapter: a1)
        #expect(a1.evict() && !a1.isResident)
        #expect(try S.logits(m, seq, adapter: a1) == before)
        #expect(a1.isResident)
    }

    /// Loading a new adapter and submitting requests on it between steps, and dropping
    /// the caller's last reference to an adapter while its request runs: outputs equal
    /// the never-evicting engine's, and the dropped adapter is freed after its request
    /// (the engine tracks it weakly).
    @Test func hotLoadAndReleaseWhileRunning() throws {
        let m = try S.tiny()
        let dirs = try (0..<3).map { try S.writeAdapter(m, seed: 730 + UInt64($0)) }
        defer { for d in dirs { try? FileManager.default.removeItem(atPath: d) } }
        var a0: ServingAdapter? = try ServingAdapter(directory: dirs[0], model: m)
        weak let weak0 = a0
        let budget = a0!.bytes
        let e = try Self.engine(m, adapterBytes: budget)
        var specs = [Self.spec(80, a0, maxTokens: 20), Self.spec(81, nil, maxTokens: 20)]
        var ids: [UInt64] = try specs.map { try e.submit($0) }
        specs[0].adapter = nil
        a0 = nil
        #expect(weak0 != nil, "the request holds the adapter")
        var late: [(ServingAdapter, GenerationRequest)] = []
        var tokens: [[Int32]] = [[], []]
        var reasons: [UInt64: FinishReason] = [:]
        var step = 0
        while e.hasWork && step < 1000 {
            try e.step()
            step += 1
            if step == 3 || step == 6 {
                // Hot load: a new adapter read while the engine runs, a request on it.
                let fresh = try ServingAdapter(directory: dirs[step / 3], model: m)
                let s = Self.spec(81 + UInt64(step), fresh)
                late.append((fresh, s))
                ids.append(try e.submit(s))
                tokens.append([])
            }
            for ev in e.poll() {
                switch ev {
                case .token(let rid, _, _, let t, _, _): tokens[ids.firstIndex(of: rid)!].append(t)
                case .finished(let rid, _, _, let r, _, _, _): reasons[rid] = r
                }
            }
        }
        #expect(reasons.count == 4 && reasons.values.allSatisfy { $0 == .length })
        #expect(weak0 == nil, "the adapter is freed once its request has finished")
        #expect(e.currentMetrics().adapterEvictions >= 1)
        // References: fresh loads of the same directories (same bits, other ids).
        let r0 = try ServingAdapter(directory: dirs[0], model: m)
        let want = try Self.reference(m, [Self.spec(80, r0, maxTokens: 20), Self.spec(81, nil, maxTokens: 20)] + late.map(\.1))
        #expect(tokens == want)
    }

    /// Bad arguments change nothing: a negative budget, an adapter larger than the
    /// whole budget (refused at submit, nothing queued), an adapter of another model.
    @Test func badArguments() throws {
        let m = try S.tiny()
        let dir = try S.writeAdapter(m, seed: 740)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try ServingAdapter(directory: dir, model: m)
        #expect(throws: BatchCoreError.self) { _ = try Self.engine(m, adapterBytes: -1) }
        let e = try Self.engine(m, adapterBytes: a.bytes - 1)
        do {
            _ = try e.submit(Self.spec(1, a))
            Issue.record("an adapter larger than the budget was accepted")
        } catch let err as BatchCoreError {
            #expect(err.kind == .invalidArgument && err.message.contains("budget"), "\(err.message)")
        }
        #expect(e.liveRequests == 0 && e.currentMetrics().submitted == 0 && e.currentMetrics().adapterResidentBytes == 0)
        _ = try e.submit(Self.spec(2, nil))
        let ok = try Self.engine(m, adapterBytes: a.bytes)
        _ = try ok.submit(Self.spec(3, a))
        #expect(ok.currentMetrics().adapterResidentBytes == a.bytes)
        // An adapter made from an in-memory set cannot be evicted (nothing to reread).
        let set = try LoRAAdapterSet.readPEFT(directory: dir, model: m.config)
        let mem = try ServingAdapter(set: set, model: m)
        #expect(!mem.evict() && mem.isResident)
    }
}
