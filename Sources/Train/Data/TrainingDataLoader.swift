import BCCore
import BCFormats
import BCTokenizer

/// Reads training data files into `TrainingExample`s, tokenized once.
///
/// Formats (one JSON object per line of a `.jsonl` / `.json` file; blank lines skipped;
/// unknown extra keys ignored; exactly one of the three shapes per line):
///
/// - `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`:
///   rendered by the model's chat template and tokenized whole (see `ChatExample`); by
///   default only assistant contents and the "<|im_end|>" closing each assistant turn are
///   targets (`DataLoadOptions.chatTargets = .allTokens`: every token but the first).
/// - `{"prompt": "...", "completion": "..."}`: [BOS if the tokenizer adds one] +
///   tokens(prompt) + tokens(completion) + EOS, prompt and completion tokenized
///   separately (as the prompt is tokenized at inference, generation continuing from it;
///   TRL's prompt-completion format). Targets: the completion tokens and the EOS.
/// - `{"text": "..."}`: [BOS] + tokens(text) + EOS; every token but the first is a target.
///
/// Plain text (`.txt`, `.md`, `.text`): the whole file is tokenized ([BOS] + text + EOS) and
/// cut into documents of at most `maxTokens` tokens. Consecutive documents overlap by one
/// token (a document's last token is the next one's first, unpredicted, token), so every
/// token of the file after the first is a target exactly once.
///
/// Raw texts (prompt, completion, text, plain files) are tokenized with special texts NOT
/// parsed: a literal "<|im_end|>" in them is ordinary text. EOS is `tokenizer.eos` (for
/// SmolLM2-Instruct "<|im_end|>", its end of generation). Errors are `BatchCoreError`s whose
/// message starts "FILE:LINE: "; on an error nothing is returned, unless
/// `invalidExample = .skip` (then the example is left out and reported).
package enum TrainingDataLoader {
    /// The largest data file read (bytes).
    package static let maxFileBytes = 4 << 30

    /// Loads `path`, by extension: `.jsonl`/`.json` as JSON lines, `.txt`/`.md`/`.text` as
    /// plain text. Other extensions throw `.unsupported`.
    package static func load(path: String, tokenizer: Tokenizer,
                             options: DataLoadOptions) throws -> (examples: [TrainingExample], report: DataLoadReport) {
        let lower = path.lowercased()
        let isJSONL = lower.hasSuffix(".jsonl") || lower.hasSuffix(".json")
        let isText = lower.hasSuffix(".txt") || lower.hasSuffix(".md") || lower.hasSuffix(".text")
        guard isJSONL || isText else {
            throw BatchCoreError(.unsupported, "\(path): unknown data file type (.jsonl, .json, .txt, .md or .text)")
        }
        try check(options, name: path)
        let bytes = try readWholeFile(path, limit: maxFileBytes, larger: "the data file limit")
        return isJSONL ? try loadJSONLines(bytes, name: path, tokenizer: tokenizer, options: options)
            : try loadPlainText(bytes, name: path, tokenizer: tokenizer, options: options)
    }

    static func check(_ options: DataLoadOptions, name: String) throws {
        guard options.maxTokens >= 2 else {
            throw BatchCoreError.invalid("\(name): maxTokens \(options.maxTokens) (at least 2)")
        }
    }

    /// JSON lines from memory; `name` is the file name used in messages.
    package static func loadJSONLines(_ bytes: [UInt8], name: String, tokenizer: Tokenizer,
                                      options: DataLoadOptions) throws -> (examples: [TrainingExample], report: DataLoadReport) {
        try check(options, name: name)
        var examples: [TrainingExample] = []
        var report = DataLoadReport()
        var lineStart = 0
        var line = 0
        while lineStart < bytes.count {
            line += 1
            var lineEnd = lineStart
            while lineEnd < bytes.count && bytes[lineEnd] != 0x0A { lineEnd += 1 }
            let slice = bytes[lineStart..<lineEnd]
            lineStart = lineEnd + 1
            if slice.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            do {
                let value = try slice.withUnsafeBytes { try JSONValue.parse($0) }
                var e = try example(json: value, tokenizer: tokenizer, chatTargets: options.chatTargets)
                if e.count > options.maxTokens {
                    guard options.overLength == .truncate else {
                        throw BatchCoreError.invalid("the example has \(e.count) tokens, more than the limit of \(options.maxTokens)")
                    }
                    let cut = e.count - options.maxTokens
                    e = try e.truncated(to: options.maxTokens)
                    report.truncated += 1
                    report.truncatedTokens += cut
                }
                examples.append(e)
                report.add(e)
            } catch let error as BatchCoreError {
                let located = BatchCoreError(error.kind, "\(name):\(line): \(error.message)")
                guard options.invalidExample == .skip, error.kind == .invalidArgument || error.kind == .format else {
                    throw located
                }
                report.skipped.append(located.message)
            }
        }
        guard !examples.isEmpty else {
            throw BatchCoreError.invalid("\(name): no examples" + (report.skipped.isEmpty ? "" : " (\(report.skipped.count) skipped)"))
        }
        return (examples, report)
    }

    /// One JSON line's example (no length limit applied). Throws `.invalidArgument` or
    /// `.format` with a message naming the problem (the caller adds file and line).
    package static func example(json: JSONValue, tokenizer: Tokenizer,
                                chatTargets: DataLoadOptions.ChatTargets) throws -> TrainingExample {
        guard let object = json.objectValue else { throw BatchCoreError.invalid("the line is not a JSON object") }
        let hasMessages = object["messages"] != nil
        let hasPrompt = object["prompt"] != nil || object["completion"] != nil
        let hasText = object["text"] != nil
        switch (hasMessages, hasPrompt, hasText) {
        case (true, false, false):
            guard let list = object["messages"]?.arrayValue else { throw BatchCoreError.invalid("\"messages\" is not an array") }
            var messages: [(role: String, content: String)] = []
            for (k, m) in list.enumerated() {
                guard m.objectValue != nil else { throw BatchCoreError.invalid("message \(k) is not an object") }
                guard let role = m["role"] else { throw BatchCoreError.invalid("message \(k): no \"role\"") }
                guard let roleText = role.stringValue else { throw BatchCoreError.invalid("message \(k): \"role\" is not a string") }
                guard let content = m["content"] else { throw BatchCoreError.invalid("message \(k): no \"content\"") }
                guard let contentText = content.stringValue else {
                    throw BatchCoreError.invalid("message \(k): \"content\" is not a string")
                }
                messages.append((roleText, contentText))
            }
            let (tokens, isTarget) = try ChatExample.make(messages: messages, tokenizer: tokenizer, targets: chatTargets)
            guard isTarget.contains(true) else {
                throw BatchCoreError.invalid("the conversation has no assistant message (nothing to train)")
            }
            return try TrainingExample(tokens: tokens, isTarget: isTarget)
        case (false, true, false):
            let prompt = try string(object, "prompt"), completion = try string(object, "completion")
            let p = begin(tokenizer) + tokenizer.encode(prompt, addSpecial: false, parseSpecial: false)
            let c = tokenizer.encode(completion, addSpecial: false, parseSpecial: false) + [try eos(tokenizer)]
            return try TrainingExample(tokens: p + c, isTarget: [Bool](repeating: false, count: p.count)
                + [Bool](repeating: true, count: c.count))
        case (false, false, true):
            let text = try string(object, "text")
            let tokens = begin(tokenizer) + tokenizer.encode(text, addSpecial: false, parseSpecial: false) + [try eos(tokenizer)]
            return try TrainingExample(tokens: tokens, isTarget: [false] + [Bool](repeating: true, count: tokens.count - 1))
        case (false, false, false):
            throw BatchCoreError.invalid("no \"messages\", \"prompt\"/\"completion\" or \"text\" field")
        default:
            throw BatchCoreError.invalid("more than one of \"messages\", \"prompt\"/\"completion\" and \"text\"")
        }
    }

    /// Plain text from memory: see the type's documentation.
    package static func loadPlainText(_ bytes: [UInt8], name: String, tokenizer: Tokenizer,
                                      options: DataLoadOptions) throws -> (examples: [TrainingExample], report: DataLoadReport) {
        try check(options, name: name)
        guard bytes.contains(where: { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0D || $0 == 0x0A) }) else {
            throw BatchCoreError.invalid("\(name): no text")
        }
        let body = bytes.withUnsafeBufferPointer { tokenizer.encode(bytes: $0, addSpecial: false, parseSpecial: false) }
        let all = begin(tokenizer) + body + [try eos(tokenizer)]
        var examples: [TrainingExample] = []
        var report = DataLoadReport()
        var start = 0
        while start < all.count - 1 {
            let end = min(all.count, start + options.maxTokens)
            let e = try TrainingExample(tokens: Array(all[start..<end]),
                                        isTarget: [false] + [Bool](repeating: true, count: end - start - 1))
            examples.append(e)
            report.add(e)
            start = end - 1
        }
        return (examples, report)
    }

    static func string(_ object: JSONObject, _ key: String) throws -> String {
        guard let v = object[key] else { throw BatchCoreError.invalid("no \"\(key)\"") }
        guard let s = v.stringValue else { throw BatchCoreError.invalid("\"\(key)\" is not a string") }
        guard !s.isEmpty else { throw BatchCoreError.invalid("\"\(key)\" is empty") }
        return s
    }

    static func begin(_ tokenizer: Tokenizer) -> [Int32] {
        if tokenizer.addBOS, let bos = tokenizer.bos { return [bos] }
        return []
    }

    static func eos(_ tokenizer: Tokenizer) throws -> Int32 {
        guard let e = tokenizer.eos else { throw BatchCoreError(.unsupported, "the tokenizer has no end-of-sequence token") }
        return e
    }
}
