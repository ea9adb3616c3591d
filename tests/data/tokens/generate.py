"""Produces tests/data/tokens/corpus.json with OpenAI's own tiktoken.

Run from the repository root (needs `pip install tiktoken`; works offline):

    python3 tests/data/tokens/generate.py

For every text: `len(encoding.encode_ordinary(text))` for cl100k_base and
o200k_base (ordinary: special-token look-alikes such as <|endoftext|> are
plain text). For every chat: the OpenAI cookbook's num_tokens_from_messages
(3 per message, the tokens of every field's text, 1 more for a name, 3 to
prime the reply).
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
import tiktoken_offline  # noqa: E402

tiktoken_offline.seed()
import tiktoken  # noqa: E402

TEXTS = {
    "empty": "",
    "ascii": "The quick brown fox jumps over the lazy dog.",
    "numbers": "1234567890 3.14159 -42 1e10 0x1F 007 12,345,678",
    "whitespace": "  leading\n\n\ntrailing   \t\ttabs \r\n\r\nCRLF   \n",
    "only_spaces": "        ",
    "contractions": "I'm sure you'll see they've done what he'd said; it's OK, WE'RE FINE",
    "code_rust": 'fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n    println!("{v:?}");\n}\n',
    "code_python": "def f(x):\n\treturn {k: v for k, v in x.items() if v is not None}  # comment\n",
    "json": '{"queue": "billing", "priority": "high", "tags": ["a", "b"], "n": null}',
    "cjk_zh": "大语言模型的提示词应该像代码一样进行版本管理。你好，世界！",
    "cjk_ja": "東京は日本の首都です。ひらがなとカタカナ、そして漢字。",
    "cjk_ko": "안녕하세요, 세계! 프롬프트 관리는 중요합니다.",
    "emoji": "Deploy done 🚀🎉 family: 👨‍👩‍👧‍👦 flags: 🇫🇷🇯🇵 skin: 👍🏽 ❤️",
    "special_lookalikes": "<|endoftext|> <|im_start|>system\n<|im_end|> <|fim_prefix|><|endofprompt|>",
    "rtl_and_zero_width": "abc\u202eevil\u202c \u200bzero\u200cwidth\u200d joiner \u0645\u0631\u062d\u0628\u0627",
    "accents": "Crème brûlée, naïve façade, Ærøskøbing, Ünïcödé, ñandú",
    "math": "∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x|; ∑_{i=1}^{n} i = n(n+1)/2",
    "urls": "See https://example.com/a/b?c=d&e=f#g and mailto:someone@example.org",
    "long_word": "Pneumonoultramicroscopicsilicovolcanoconiosis" * 5,
    "repeated": "ab" * 300 + " " + "=" * 200,
    "markdown": "# Title\n\n- item **bold** _it_ `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    "role_lines": "system:\nYou are helpful.\nuser:\n{{ question }}\n{% for x in xs %}{% endfor %}",
    "mixed_scripts": "Hello Привет Γειά σου नमस्ते שלום مرحبا 你好 こんにちは",
}

for name in ["README.md", "src/body.rs", "templates/support/triage@2.1.0.prompt.jinja"]:
    TEXTS[f"file:{name}"] = (ROOT / name).read_text()

CHATS = {
    "simple": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
    "named": [
        {"role": "system", "content": "Translate to French.", "name": "example_user"},
        {"role": "user", "content": "New synergies will help drive top-line growth."},
        {"role": "assistant", "content": "Les nouvelles synergies stimuleront la croissance."},
    ],
    "cjk_emoji": [
        {"role": "user", "content": "你好 🚀 <|endoftext|>"},
        {"role": "assistant", "content": "こんにちは"},
    ],
}


def chat_tokens(enc, messages):
    n = 0
    for message in messages:
        n += 3
        for key, value in message.items():
            n += len(enc.encode_ordinary(value))
            if key == "name":
                n += 1
    return n + 3


encodings = {name: tiktoken.get_encoding(name) for name in ["cl100k_base", "o200k_base"]}
corpus = {
    "generated_by": f"tiktoken {tiktoken.__version__}, tests/data/tokens/generate.py",
    "texts": [
        {"name": name, "text": text, **{e: len(enc.encode_ordinary(text)) for e, enc in encodings.items()}}
        for name, text in TEXTS.items()
    ],
    "chats": [
        {"name": name, "messages": msgs, **{e: chat_tokens(enc, msgs) for e, enc in encodings.items()}}
        for name, msgs in CHATS.items()
    ],
}
out = pathlib.Path(__file__).with_name("corpus.json")
out.write_text(json.dumps(corpus, ensure_ascii=False, indent=1) + "\n")
print(f"wrote {out} ({len(corpus['texts'])} texts, {len(corpus['chats'])} chats)")
