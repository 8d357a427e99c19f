import BCCore
/// ChatML prompts ("<|im_start|>role\ncontent<|im_end|>\n"), the format of the
/// models' `tokenizer.chat_template` when it is a ChatML template.
extension Tokenizer {
    /// The prompt for `messages` in ChatML. When the model's template inserts a
    /// default system message if the first message is not a system message (as
    /// SmolLM2's does: "You are a helpful AI assistant named SmolLM, trained by
    /// Hugging Face"), so does this. A model without a template gets plain ChatML
    /// (llama.cpp's default); a template that is not ChatML throws `.unsupported`.
    package func applyChatML(messages: [(role: String, content: String)], addGenerationPrompt: Bool) throws -> String {
        var defaultSystem: String? = nil
        if let template = chatTemplate {
            guard template.contains("<|im_start|>") else {
                throw BatchCoreError(.unsupported, "tokenizer: the chat template is not a ChatML template")
            }
            defaultSystem = Self.defaultSystemBlock(template)
        }
        var s = ""
        if let defaultSystem, let first = messages.first, first.role != "system" {
            s += defaultSystem
        }
        for m in messages {
            s += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n"
        }
        if addGenerationPrompt { s += "<|im_start|>assistant\n" }
        return s
    }

    /// The whole default system turn a ChatML template writes when the first message
    /// is not a system message: a string literal starting "<|im_start|>system" inside
    /// a branch on messages[0]['role'] (nil when the template has none).
    static func defaultSystemBlock(_ template: String) -> String? {
        let t = Array(template.unicodeScalars)
        let compact = template.filter { $0 != " " }
        guard compact.contains("messages[0]['role']!='system'") || compact.contains("messages[0][\"role\"]!=\"system\"")
            || compact.contains("messages[0]['role']=='system'") || compact.contains("messages[0][\"role\"]==\"system\"")
        else { return nil }
        let marker = Array("<|im_start|>system".unicodeScalars)
        var i = 0
        while i + marker.count <= t.count {
            guard Array(t[i..<(i + marker.count)]) == marker, i > 0, t[i - 1] == "'" || t[i - 1] == "\"" else {
                i += 1
                continue
            }
            // Read the literal up to its closing quote, undoing escapes.
            let quote = t[i - 1]
            var out = String.UnicodeScalarView()
            var j = i
            var closed = false
            while j < t.count {
                let c = t[j]
                if c == "\\", j + 1 < t.count {
                    let e = t[j + 1]
                    switch e {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "r": out.append("\r")
                    default: out.append(e)
                    }
                    j += 2
                    continue
                }
                if c == quote { closed = true; break }
                out.append(c)
                j += 1
            }
            let literal = String(out)
            if closed && literal.hasSuffix("<|im_end|>\n") && literal.count > "<|im_start|>system\n<|im_end|>\n".count - 1 {
                return literal
            }
            i = j + 1
        }
        return nil
    }
}
