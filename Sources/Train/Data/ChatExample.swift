import BCCore
import BCTokenizer

/// A conversation as a training example: rendered by the model's chat template
/// (`Tokenizer.applyChatML`, the template the model ships, including its default system
/// turn), tokenized once as a whole (as `apply_chat_template(tokenize=True)` does), and
/// masked by the characters each token covers.
///
/// How assistant spans are found: the conversation is rendered once with every assistant
/// message's content replaced by a unique marker; the markers locate, in the rendered text,
/// each assistant content and (required to follow it directly) the end-of-turn text
/// "<|im_end|>" that closes it. The markers are then replaced by the real contents, giving
/// the byte span [content start, end of "<|im_end|>") of each assistant turn in the real
/// text. The whole text is tokenized (special texts parsed) and each token's byte range
/// is recovered from its piece (byte-level BPE: the pieces concatenate to the text, which
/// is checked). A token is a target iff its bytes intersect an assistant span — the rule of
/// HF's `return_assistant_tokens_mask` (a token straddling a span edge, e.g. a merged
/// "\n\n" when the content starts with a newline, is a target). The header
/// "<|im_start|>assistant\n" and the "\n" after "<|im_end|>" are not targets.
enum ChatExample {
    static let endOfTurn = "<|im_end|>"
    static let controlTexts = ["<|im_start|>", "<|im_end|>"]
    static let roles: Set<String> = ["system", "user", "assistant"]

    /// `messages` (role, content) → tokens and target flags. Throws `.invalidArgument`
    /// for an unknown role, empty content, or content containing a ChatML control text.
    static func make(messages: [(role: String, content: String)], tokenizer: Tokenizer,
                     targets: DataLoadOptions.ChatTargets) throws -> (tokens: [Int32], isTarget: [Bool]) {
        guard !messages.isEmpty else { throw BatchCoreError.invalid("\"messages\" is empty") }
        var markers: [String] = []
        var rendering: [(role: String, content: String)] = []
        for (k, m) in messages.enumerated() {
            guard roles.contains(m.role) else {
                throw BatchCoreError.invalid("message \(k): unknown role \"\(m.role)\" (system, user or assistant)")
            }
            guard !m.content.isEmpty else { throw BatchCoreError.invalid("message \(k): empty content") }
            for c in controlTexts where m.content.contains(c) {
                throw BatchCoreError.invalid("message \(k): content contains the control text \(c)")
            }
            if m.role == "assistant" {
                let marker = "\u{E000}bc-assistant-\(k)\u{E001}"
                guard !messages.contains(where: { $0.content.contains(marker) }) else {
                    throw BatchCoreError.invalid("message \(k): content contains the reserved text \(marker)")
                }
                markers.append(marker)
                rendering.append((m.role, marker))
            } else {
                rendering.append(m)
            }
        }
        let template = try tokenizer.applyChatML(messages: rendering, addGenerationPrompt: false)

        // Rebuild the real text, recording each assistant span in bytes.
        let rendered = Array(template.utf8), close = Array(endOfTurn.utf8)
        var text: [UInt8] = []
        var spans: [Range<Int>] = []
        var rest = 0
        var assistantIndex = 0
        for (k, m) in messages.enumerated() where m.role == "assistant" {
            let marker = Array(markers[assistantIndex].utf8)
            assistantIndex += 1
            guard let at = find(marker, in: rendered, from: rest) else {
                throw BatchCoreError(.unsupported, "message \(k): the chat template does not render the assistant content verbatim")
            }
            text += rendered[rest..<at]
            let start = text.count
            text += Array(m.content.utf8)
            rest = at + marker.count
            guard rest + close.count <= rendered.count, Array(rendered[rest..<(rest + close.count)]) == close else {
                throw BatchCoreError(.unsupported, "message \(k): the chat template does not close the assistant turn with \(endOfTurn)")
            }
            text += close
            rest += close.count
            spans.append(start..<text.count)
        }
        text += rendered[rest...]

        let tokens = text.withUnsafeBufferPointer { tokenizer.encode(bytes: $0, addSpecial: false, parseSpecial: true) }
        var isTarget = [Bool](repeating: false, count: tokens.count)
        var offset = 0
        var span = 0
        for (i, t) in tokens.enumerated() {
            let end = offset + (try tokenizer.piece(t, special: true)).count
            switch targets {
            case .allTokens:
                isTarget[i] = i > 0
            case .assistantOnly:
                while span < spans.count && spans[span].upperBound <= offset { span += 1 }
                if span < spans.count && spans[span].lowerBound < end && offset < end { isTarget[i] = true }
            }
            offset = end
        }
        guard offset == text.count else {
            throw BatchCoreError(.unsupported, "the tokenizer's pieces do not reproduce the conversation text (\(offset) of \(text.count) bytes)")
        }
        if !tokens.isEmpty { isTarget[0] = false }
        return (tokens, isTarget)
    }

    /// The first index ≥ `from` where `needle` occurs in `haystack`.
    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count else { return nil }
        var i = from
        while i + needle.count <= haystack.count {
            if haystack[i] == needle[0] && haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}
