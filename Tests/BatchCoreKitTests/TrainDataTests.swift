import BCCore
import BCFormats
import BCModel
import BCTokenizer
import BCTrain
import Foundation
import Testing

// MARK: - Helpers

enum TrainDataFixtures {
    /// The default model's tokenizer (BATCHCORE_MODEL or the cache), loaded once.
    static let tokenizer: Tokenizer? = {
        guard TestModel.available, let g = try? GGUFFile(path: TestModel.path) else { return nil }
        return try? Tokenizer(gguf: g)
    }()
}

private func tokenizer() throws -> Tokenizer { try #require(TrainDataFixtures.tokenizer) }

private func jsonl(_ lines: [String]) -> [UInt8] { Array(lines.joined(separator: "\n").utf8) }

/// A JSON string literal.
private func q(_ s: String) -> String { JSONValue.string(s).serialized() }

private func chatLine(_ messages: [(String, String)]) -> String {
    "{\"messages\":[" + messages.map { "{\"role\":\(q($0.0)),\"content\":\(q($0.1))}" }.joined(separator: ",") + "]}"
}

/// The maximal runs of consecutive target tokens, decoded (special texts included).
private func targetRuns(_ e: TrainingExample, _ t: Tokenizer) throws -> [String] {
    var runs: [String] = []
    var i = 0
    while i < e.count {
        guard e.isTarget[i] else { i += 1; continue }
        var j = i
        while j < e.count && e.isTarget[j] { j += 1 }
        runs.append(try t.decodeString(Array(e.tokens[i..<j]), special: true))
        i = j
    }
    return runs
}

/// Synthetic examples: random lengths in 2...maxLength, random ids and flags (≥ 1 target).
private func syntheticExamples(_ count: Int, maxLength: Int, seed: UInt64) throws -> [TrainingExample] {
    var rng = SplitMix64(state: seed)
    var out: [TrainingExample] = []
    for _ in 0..<count {
        let n = 2 + Int(rng.next() % UInt64(maxLength - 1))
        let tokens = (0..<n).map { _ in Int32(rng.next() % 1000) }
        var flags = (0..<n).map { $0 > 0 && rng.next() % 3 != 0 }
        flags[n - 1] = true
        out.append(try TrainingExample(tokens: tokens, isTarget: flags))
    }
    return out
}

private func expectError(_ message: String, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("no error; expected one containing \"\(message)\"", sourceLocation: sourceLocation)
    } catch let e as BatchCoreError {
        #expect(e.message.contains(message), "\(e.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}

// MARK: - Examples

@Suite("Train data: examples")
struct TrainingExampleTests {
    @Test func rowTargetsShiftByOneAndMaskDocumentEnd() throws {
        let e = try TrainingExample(tokens: [10, 11, 12, 13, 14], isTarget: [false, true, false, true, true])
        #expect(e.rowTargets == [11, -1, 13, 14, -1])
        #expect(e.targetCount == 3)
    }

    @Test func shapeErrors() throws {
        expectError("3 tokens but 2 target flags") { _ = try TrainingExample(tokens: [1, 2, 3], isTarget: [false, true]) }
        expectError("first token cannot be a target") { _ = try TrainingExample(tokens: [1, 2], isTarget: [true, true]) }
        expectError("no target tokens") { _ = try TrainingExample(tokens: [1, 2], isTarget: [false, false]) }
        expectError("at least 2") { _ = try TrainingExample(tokens: [1], isTarget: [false]) }
        expectError("token 2 has id 50, out of range 0..<50") {
            _ = try TrainingExample(tokens: [1, 2, 50], isTarget: [false, true, true], vocabularySize: 50)
        }
        expectError("token 0 has id -1") {
            _ = try TrainingExample(tokens: [-1, 2], isTarget: [false, true], vocabularySize: 50)
        }
        #expect(try TrainingExample(tokens: [0, 49], isTarget: [false, true], vocabularySize: 50).count == 2)
    }

    @Test func truncation() throws {
        let e = try TrainingExample(tokens: [1, 2, 3, 4, 5], isTarget: [false, false, false, true, true])
        #expect(try e.truncated(to: 4).tokens == [1, 2, 3, 4])
        #expect(try e.truncated(to: 9) == e)
        expectError("no target tokens") { _ = try e.truncated(to: 3) }
    }
}

// MARK: - Loaders (real tokenizer)

@Suite("Train data: loaders (SmolLM2 tokenizer)", .enabled(if: TestModel.available))
struct TrainDataLoaderTests {
    let options = DataLoadOptions(maxTokens: 4096)

    /// Targets decode to exactly each assistant content followed by "<|im_end|>", nothing
    /// else; the tokens are the whole rendered conversation tokenized at once.
    @Test func assistantSpansAreExactlyAssistantContentsAndEndOfTurn() throws {
        let t = try tokenizer()
        let conversations: [[(String, String)]] = [
            [("user", "What is 2+2?"), ("assistant", "It is 4."), ("user", "And 3 + 3 ?"),
             ("assistant", " Six, of course!\nNext line.")],
            [("system", "You answer in French."), ("user", "Hello"), ("assistant", "Bonjour ! Ça va ?")],
            // No user turn first: the template's default system turn is inserted.
            [("assistant", "I start."), ("user", "ok"), ("assistant", "done 123")],
        ]
        for conv in conversations {
            let (examples, report) = try TrainingDataLoader.loadJSONLines(jsonl([chatLine(conv)]), name: "c.jsonl",
                                                                          tokenizer: t, options: options)
            let e = try #require(examples.first)
            let whole = try t.applyChatML(messages: conv.map { ($0.0, $0.1) }, addGenerationPrompt: false)
            #expect(e.tokens == t.encode(whole, addSpecial: false, parseSpecial: true))
            let wanted = conv.filter { $0.0 == "assistant" }.map { $0.1 + "<|im_end|>" }
            #expect(try targetRuns(e, t) == wanted)
            #expect(report.examples == 1 && report.targets == e.targetCount && report.tokens == e.count)
        }
    }

    /// Content starting with newlines: BPE may merge the header's "\n" with the content's
    /// into one token straddling the span edge; that token is a target (HF's rule), so the
    /// run is the content + "<|im_end|>" preceded by at most the header's "\n" — never
    /// "<|im_start|>assistant".
    @Test func assistantSpanEdgeTokensFollowTheHFRule() throws {
        let t = try tokenizer()
        let conv = [("user", "x"), ("assistant", "\n\n  indented\n")]
        let (examples, _) = try TrainingDataLoader.loadJSONLines(jsonl([chatLine(conv)]), name: "c.jsonl",
                                                                 tokenizer: t, options: options)
        let runs = try targetRuns(try #require(examples.first), t)
        #expect(runs.count == 1)
        let run = try #require(runs.first)
        let want = "\n\n  indented\n<|im_end|>"
        #expect(run == want || run == "\n" + want, "\(run.debugDescription)")
    }

    @Test func chatAllTokensOption() throws {
        let t = try tokenizer()
        var o = options
        o.chatTargets = .allTokens
        let (examples, _) = try TrainingDataLoader.loadJSONLines(
            jsonl([chatLine([("user", "hi"), ("assistant", "hello")])]), name: "c.jsonl", tokenizer: t, options: o)
        let e = try #require(examples.first)
        #expect(e.isTarget == [false] + [Bool](repeating: true, count: e.count - 1))
    }

    @Test func promptCompletionTargetsOnlyCompletionAndEOS() throws {
        let t = try tokenizer()
        let line = "{\"prompt\":\(q("The capital of France is")),\"completion\":\(q(" Paris."))}"
        let (examples, _) = try TrainingDataLoader.loadJSONLines(jsonl([line]), name: "p.jsonl", tokenizer: t, options: options)
        let e = try #require(examples.first)
        let p = t.encode("The capital of France is", addSpecial: false, parseSpecial: false)
        let c = t.encode(" Paris.", addSpecial: false, parseSpecial: false)
        let eos = try #require(t.eos)
        #expect(e.tokens == p + c + [eos])
        #expect(e.isTarget == [Bool](repeating: false, count: p.count) + [Bool](repeating: true, count: c.count + 1))
        #expect(try targetRuns(e, t) == [" Paris.<|im_end|>"])
    }

    @Test func textTargetsEveryTokenButTheFirst() throws {
        let t = try tokenizer()
        let (examples, _) = try TrainingDataLoader.loadJSONLines(jsonl(["{\"text\":\(q("Once upon a time, <|im_end|> x"))}"]),
                                                                 name: "t.jsonl", tokenizer: t, options: options)
        let e = try #require(examples.first)
        // Special texts in raw text are not parsed.
        #expect(e.tokens == t.encode("Once upon a time, <|im_end|> x", addSpecial: false, parseSpecial: false) + [t.eos!])
        #expect(e.isTarget == [false] + [Bool](repeating: true, count: e.count - 1))
    }

    @Test func plainTextIsCutIntoOverlappingDocuments() throws {
        let t = try tokenizer()
        let text = (0..<40).map { "Sentence number \($0) of the book, with some words." }.joined(separator: "\n")
        let all = t.encode(text, addSpecial: false, parseSpecial: false) + [t.eos!]
        for maxTokens in [2, 7, 64, all.count, all.count + 5] {
            let (docs, report) = try TrainingDataLoader.loadPlainText(Array(text.utf8), name: "b.txt", tokenizer: t,
                                                                      options: DataLoadOptions(maxTokens: maxTokens))
            #expect(docs.allSatisfy { $0.count <= maxTokens && $0.count >= 2 })
            // Overlap by one token; the concatenation is the file; every token after the first trained once.
            var rebuilt = docs[0].tokens
            for d in docs.dropFirst() {
                #expect(d.tokens.first == rebuilt.last)
                rebuilt += d.tokens.dropFirst()
            }
            #expect(rebuilt == all)
            #expect(docs.allSatisfy { $0.isTarget == [false] + [Bool](repeating: true, count: $0.count - 1) })
            #expect(report.targets == all.count - 1 && report.examples == docs.count)
        }
        expectError("b.txt: no text") {
            _ = try TrainingDataLoader.loadPlainText(Array(" \n\n".utf8), name: "b.txt", tokenizer: t, options: options)
        }
    }

    @Test func overLongExamplesErrorOrTruncateCounted() throws {
        let t = try tokenizer()
        let long = String(repeating: "word ", count: 50)
        let lines = ["{\"text\":\"short\"}", "", "{\"text\":\(q(long))}", chatLine([("system", "s"), ("user", "q"), ("assistant", long)])]
        expectError("x.jsonl:3: the example has") {
            _ = try TrainingDataLoader.loadJSONLines(jsonl(lines), name: "x.jsonl", tokenizer: t, options: DataLoadOptions(maxTokens: 24))
        }
        let (examples, report) = try TrainingDataLoader.loadJSONLines(
            jsonl(lines), name: "x.jsonl", tokenizer: t, options: DataLoadOptions(maxTokens: 24, overLength: .truncate))
        #expect(examples.count == 3)
        #expect(examples.allSatisfy { $0.count <= 24 })
        #expect(report.truncated == 2)
        let full1 = 1 + t.encode(long, addSpecial: false, parseSpecial: false).count  // + EOS
        #expect(examples[1].count == 24)
        #expect(report.truncatedTokens > full1 - 24)
        // A chat example whose assistant turn is entirely cut off has no target left: an error naming the line.
        let noTarget = [chatLine([("user", long), ("assistant", "ok")])]
        expectError("x.jsonl:1:") {
            _ = try TrainingDataLoader.loadJSONLines(jsonl(noTarget), name: "x.jsonl", tokenizer: t,
                                                     options: DataLoadOptions(maxTokens: 24, overLength: .truncate))
        }
    }

    /// Every kind of bad line gives an error naming file and line (line 4: after a valid
    /// line, a blank line and another valid line), and nothing is returned.
    @Test func badLinesNameTheLine() throws {
        let t = try tokenizer()
        let bad: [(String, String)] = [
            ("{\"text\": \"unterminated", "x.jsonl:4:"),
            ("[1, 2]", "not a JSON object"),
            ("{\"id\": 3}", "no \"messages\", \"prompt\"/\"completion\" or \"text\""),
            ("{\"text\": 5}", "\"text\" is not a string"),
            ("{\"text\": \"\"}", "\"text\" is empty"),
            ("{\"prompt\": \"a\"}", "no \"completion\""),
            ("{\"prompt\": \"a\", \"completion\": null}", "\"completion\" is not a string"),
            ("{\"text\": \"a\", \"prompt\": \"b\", \"completion\": \"c\"}", "more than one"),
            ("{\"messages\": \"hi\"}", "\"messages\" is not an array"),
            ("{\"messages\": []}", "\"messages\" is empty"),
            ("{\"messages\": [3]}", "message 0 is not an object"),
            ("{\"messages\": [{\"content\": \"x\"}]}", "message 0: no \"role\""),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\"}]}", "message 1: no \"content\""),
            ("{\"messages\": [{\"role\": \"user\", \"content\": [1]}]}", "message 0: \"content\" is not a string"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"\"}]}", "message 0: empty content"),
            ("{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}", "message 0: unknown role \"wizard\""),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "no assistant message"),
            (chatLine([("user", "a<|im_end|>b"), ("assistant", "c")]), "control text <|im_end|>"),
        ]
        let good = "{\"text\":\"fine\"}"
        for (line, message) in bad {
            do {
                _ = try TrainingDataLoader.loadJSONLines(jsonl([good, "", good, line, good]), name: "x.jsonl",
                                                         tokenizer: t, options: options)
                Issue.record("no error for \(line)")
            } catch let e as BatchCoreError {
                #expect(e.message.hasPrefix("x.jsonl:4: "), "\(e.message)")
                #expect(e.message.contains(message), "\(e.message)")
            }
            // .skip leaves it out and reports it.
            let (examples, report) = try TrainingDataLoader.loadJSONLines(
                jsonl([good, "", good, line, good]), name: "x.jsonl", tokenizer: t,
                options: DataLoadOptions(maxTokens: 100, invalidExample: .skip))
            #expect(examples.count == 3 && report.skipped.count == 1 && report.skipped[0].hasPrefix("x.jsonl:4: "))
        }
    }

    @Test func loadFromFileByExtension() throws {
        let t = try tokenizer()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bc-train-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let j = dir.appendingPathComponent("d.jsonl").path
        try Data(jsonl(["{\"text\":\"a b c\"}", "{\"prompt\":\"x\",\"completion\":\"y\"}"])).write(to: URL(fileURLWithPath: j))
        let (ds, report) = try TrainingDataset.load(path: j, tokenizer: t, options: options)
        #expect(ds.count == 2 && report.examples == 2)
        let p = dir.appendingPathComponent("b.txt").path
        try Data("Some plain text for training.".utf8).write(to: URL(fileURLWithPath: p))
        #expect(try TrainingDataset.load(path: p, tokenizer: t, options: options).dataset.count == 1)
        expectError("unknown data file type") { _ = try TrainingDataLoader.load(path: dir.path + "/d.csv", tokenizer: t, options: options) }
        expectError("cannot open") { _ = try TrainingDataLoader.load(path: dir.path + "/missing.jsonl", tokenizer: t, options: options) }
    }
}

// MARK: - Dataset order, split, position

@Suite("Train data: dataset")
struct TrainingDatasetTests {
    @Test func shuffleIsDeterministicPerSeedAndDiffersAcrossEpochs() throws {
        let ds = try TrainingDataset(examples: try syntheticExamples(50, maxLength: 8, seed: 1))
        let o0 = ds.order(epoch: 0, seed: 42), o1 = ds.order(epoch: 1, seed: 42)
        #expect(o0.sorted() == Array(0..<50) && o1.sorted() == Array(0..<50))
        #expect(o0 == ds.order(epoch: 0, seed: 42))
        #expect(o0 != o1)
        #expect(o0 != ds.order(epoch: 0, seed: 43))
        #expect(o0 != Array(0..<50))
        // Fixed values: the order must not change between versions (resumed runs).
        var rng = ShuffleRNG(seed: 42, stream: 0)
        #expect(rng.permutation(50) == o0)
        let small = try TrainingDataset(examples: try syntheticExamples(6, maxLength: 4, seed: 1))
        #expect(small.order(epoch: 0, seed: 7) == small.order(epoch: 0, seed: 7))
    }

    @Test func permutationIsUniformEnough() {
        // Each of the 6 orders of 3 items appears ≈ 1/6 of 60000 draws (±5σ ≈ ±456).
        var counts: [[Int]: Int] = [:]
        for s in 0..<60000 {
            var r = ShuffleRNG(seed: UInt64(s), stream: 0)
            counts[r.permutation(3), default: 0] += 1
        }
        #expect(counts.count == 6)
        #expect(counts.values.allSatisfy { abs($0 - 10000) < 456 }, "\(counts)")
    }

    @Test func split() throws {
        let examples = try syntheticExamples(20, maxLength: 8, seed: 2)
        let ds = try TrainingDataset(examples: examples)
        let (train, eval) = try ds.split(evalFraction: 0.25, seed: 9)
        #expect(eval.count == 5 && train.count == 15)
        #expect(try ds.split(evalFraction: 0.25, seed: 9) == (train, eval))
        // Disjoint, covering, in original order.
        var rest = train.examples[...], held = eval.examples[...]
        for e in examples {
            if rest.first == e { rest = rest.dropFirst() } else if held.first == e { held = held.dropFirst() } else {
                Issue.record("example missing")
            }
        }
        #expect(rest.isEmpty && held.isEmpty)
        #expect(try ds.split(evalFraction: 0.25, seed: 10).eval != eval)
        expectError("not in (0, 1)") { _ = try ds.split(evalFraction: 0, seed: 1) }
        expectError("cannot be split") { _ = try TrainingDataset(examples: [examples[0]]).split(evalFraction: 0.5, seed: 1) }
        expectError("no examples") { _ = try TrainingDataset(examples: []) }
    }

    @Test func positionRoundTrip() throws {
        let p = DataPosition(epoch: 3, index: 1234)
        #expect(try DataPosition(encoded: p.encoded) == p)
        expectError("expected 20") { _ = try DataPosition(encoded: [1, 2, 3]) }
        var bad = p.encoded
        bad[0] ^= 1
        expectError("bad magic") { _ = try DataPosition(encoded: bad) }
    }
}

// MARK: - Packing

@Suite("Train data: micro-batch packing")
struct MicroBatchPackerTests {
    /// Budget respected, documents whole and in the epoch's order, targets and
    /// wantLogits right (−1 at every document end), each example once per epoch,
    /// greedy (the next document did not fit).
    @Test func packingInvariants() throws {
        let examples = try syntheticExamples(97, maxLength: 41, seed: 3)
        let ds = try TrainingDataset(examples: examples)
        for budget in [41, 64, 257] {
            var p = try MicroBatchPacker(dataset: ds, tokenBudget: budget, accumulationSteps: 1, seed: 5, epochs: 3)
            var perEpoch: [[Int]] = [[], [], []]
            var epoch = 0
            while let mb = p.nextMicroBatch() {
                #expect(mb.tokenCount <= budget && mb.tokenCount > 0)
                #expect(mb.batch.tokens.count == mb.tokenCount && mb.batch.wantLogits.count == mb.tokenCount)
                #expect(mb.batch.documentLengths == mb.exampleIndices.map { examples[$0].count })
                var row = 0
                var targets = 0
                for k in mb.exampleIndices {
                    let e = examples[k]
                    #expect(Array(mb.batch.tokens[row..<(row + e.count)]) == e.tokens)
                    #expect(Array(mb.targets[row..<(row + e.count)]) == e.rowTargets)
                    #expect(mb.targets[row + e.count - 1] == -1)
                    row += e.count
                    targets += e.targetCount
                }
                #expect(mb.batch.wantLogits == mb.targets.map { $0 != -1 })
                #expect(mb.targetCount == targets && targets == mb.targets.filter { $0 != -1 }.count)
                perEpoch[epoch] += mb.exampleIndices
                // Greedy: unless the epoch ended, the next example would not have fit.
                if p.position.epoch == epoch {
                    let next = ds.order(epoch: epoch, seed: 5)[p.position.index]
                    #expect(mb.tokenCount + examples[next].count > budget)
                } else {
                    epoch = p.position.epoch
                }
            }
            #expect(p.isFinished && epoch == 3)
            for e in 0..<3 { #expect(perEpoch[e] == ds.order(epoch: e, seed: 5)) }
        }
    }

    @Test func stepsSumTargetsOfAllTheirMicroBatches() throws {
        let ds = try TrainingDataset(examples: try syntheticExamples(60, maxLength: 30, seed: 4))
        var p = try MicroBatchPacker(dataset: ds, tokenBudget: 50, accumulationSteps: 4, seed: 1, epochs: 2)
        var single = try MicroBatchPacker(dataset: ds, tokenBudget: 50, accumulationSteps: 1, seed: 1, epochs: 2)
        var all: [MicroBatch] = []
        while let b = single.nextMicroBatch() { all.append(b) }
        var seen: [MicroBatch] = []
        var steps = 0
        while let s = p.nextStep() {
            steps += 1
            #expect(s.microBatches.count == 4 || p.isFinished)
            #expect(s.targetCount == s.microBatches.reduce(0) { $0 + $1.targetCount })
            seen += s.microBatches
        }
        #expect(seen == all)
        #expect(steps == (all.count + 3) / 4)
        #expect(p.nextStep() == nil)
    }

    /// A packer made from a saved position continues exactly like the uninterrupted one.
    @Test func resumedPositionGivesTheIdenticalRemainder() throws {
        let ds = try TrainingDataset(examples: try syntheticExamples(45, maxLength: 20, seed: 6))
        var full = try MicroBatchPacker(dataset: ds, tokenBudget: 48, accumulationSteps: 3, seed: 11, epochs: 3)
        var steps: [TrainingStep] = []
        while let s = full.nextStep() { steps.append(s) }
        #expect(steps.count > 6)
        for cut in [1, steps.count / 2, steps.count - 1] {
            let saved = steps[cut - 1].end.encoded
            var resumed = try MicroBatchPacker(dataset: ds, tokenBudget: 48, accumulationSteps: 3, seed: 11, epochs: 3,
                                               position: try DataPosition(encoded: saved))
            var rest: [TrainingStep] = []
            while let s = resumed.nextStep() { rest.append(s) }
            #expect(rest == Array(steps[cut...]))
        }
        expectError("outside") {
            _ = try MicroBatchPacker(dataset: ds, tokenBudget: 48, seed: 1, position: DataPosition(epoch: 0, index: 45))
        }
        expectError("outside") {
            _ = try MicroBatchPacker(dataset: ds, tokenBudget: 48, seed: 1, epochs: 1, position: DataPosition(epoch: 2, index: 0))
        }
    }

    @Test func overBudgetExamplesErrorOrTruncate() throws {
        let examples = try syntheticExamples(30, maxLength: 40, seed: 8)
        let ds = try TrainingDataset(examples: examples)
        let longest = examples.enumerated().first { $0.element.count > 25 }!
        expectError("example \(longest.offset) has \(longest.element.count) tokens, more than the micro-batch budget 25") {
            _ = try MicroBatchPacker(dataset: ds, tokenBudget: 25, seed: 1)
        }
        var p = try MicroBatchPacker(dataset: ds, tokenBudget: 25, seed: 1, overBudget: .truncate)
        #expect(p.truncatedExamples == examples.filter { $0.count > 25 }.count)
        while let b = p.nextMicroBatch() {
            #expect(b.tokenCount <= 25)
            var row = 0
            for k in b.exampleIndices {
                let n = min(examples[k].count, 25)
                #expect(Array(b.batch.tokens[row..<(row + n)]) == Array(examples[k].tokens[0..<n]))
                row += n
            }
        }
        expectError("token budget 1") { _ = try MicroBatchPacker(dataset: ds, tokenBudget: 1, seed: 1) }
        expectError("accumulation steps 0") { _ = try MicroBatchPacker(dataset: ds, tokenBudget: 64, accumulationSteps: 0, seed: 1) }
    }

    @Test func evalPackingKeepsTheGivenOrder() throws {
        let examples = try syntheticExamples(25, maxLength: 20, seed: 9)
        let batches = try MicroBatchPacker.pack(examples, tokenBudget: 40)
        #expect(batches.flatMap(\.exampleIndices) == Array(0..<25))
        #expect(batches.allSatisfy { $0.tokenCount <= 40 })
    }
}
