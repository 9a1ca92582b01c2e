#!/usr/bin/env python3
"""Reference encodings for ift's tokenizer tests, from the reference tokenizers themselves.

Run by hand (never by the tests, which only read the committed files):

    python3 -m venv /tmp/tokvenv
    /tmp/tokvenv/bin/pip install tokenizers sentencepiece
    /tmp/tokvenv/bin/python tools/golden/make_tokenizer_fixtures.py

Reads the tokenizer files committed in tests/fixtures/tokenizers/ (gpt2/, llama2/) and writes:

    encodings.json     {"texts": [...], "<case>": [[ids per text]...], "versions": {...}}; the texts
                       are the hand-written TEXTS, then 150 random strings from a fixed seed
    tiny_split/        a small byte-level BPE trained here with Llama 3's split regex and
                       ignore_merges, to test the Split pre-tokenizer path (tokenizer.json)

Cases:
    gpt2              HF tokenizers, gpt2/tokenizer.json, special tokens NOT parsed
                      (encode_special_tokens=True: "<|endoftext|>" in text is plain text)
    gpt2_special      the same file with special tokens parsed (the HF default)
    llama2            sentencepiece, llama2/tokenizer.model (no BOS: ift never adds one in encode)
    tiny_split        HF tokenizers, tiny_split/tokenizer.json, special tokens not parsed
    gpt2_prefix_space gpt2/tokenizer.json with the ByteLevel pre-tokenizer's add_prefix_space on
"""

import json
import os
import random
import sys

import sentencepiece
import tokenizers
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, Regex

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "tokenizers")

ENGLISH = (
    "The quick brown fox jumps over the lazy dog. Instruction tuning teaches a pretrained language model "
    "to follow requests: each example pairs an instruction (and sometimes an input) with the response "
    "we want, and the loss is taken on the response only."
)

TEXTS = [
    "Hello world",
    "Hello, my dog is cute",
    "The year 2024",
    "",
    " ",
    "  leading spaces",
    "trailing spaces   ",
    "a  b   c    d     e",
    "tabs\tand\t\ttabs",
    "line1\nline2\n\n\nline5\n",
    "\n\n\n\n",
    "\r\n windows \r\n",
    " \n \n  \n",
    "3.14159 1234567890 12,345,678 007 -42 1e-5",
    "I'm sure you'll say it's what we'd've done. DON'T YOU'RE",
    "café naïve résumé Ångström Zürich façade",
    "e\u0301 (combining acute) vs \u00e9",
    "你好，世界！日本語のテキスト 한국어 텍스트",
    "👍🏽 family: 👨‍👩‍👧‍👦 flag 🇫🇷 grin 😀😀",
    "Ünïcödé — “quotes” … ½ ² ① ℕ",
    "a\u00a0b\u3000c\u2028d\u0085e",
    "not a space since Unicode 6.3: a\u180eb \u180e\u180e c",
    "Hello<|endoftext|>world",
    "<|endoftext|><|endoftext|>",
    "a <|endoftext|> b <|endoftext|>",
    "<|endoftext",
    "<s> and </s> in text",
    "def f(x):\n    return x**2  # square\n\n\nclass A:\n\tpass\n",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    " " * 100 + "x",
    "=" * 80,
    "1" * 50,
    "a" * 100,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "ThisIsAVeryLongCamelCaseIdentifierWithoutAnySpacesInItAtAllReallyLong",
    ENGLISH,
]

# Random strings over pools of awkward pieces (Unicode spaces, combining marks, ZWJ sequences,
# contractions in odd case, NUL, special-token text), from a fixed seed: the cases nobody writes by
# hand. An earlier run of these found PCRE2's \s taking U+180E where Hugging Face's does not.
POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "e", "aeiou", "0123456789", " ", "  ", "\n", "\t",
    "\r\n", "'", "'s", "'ll", "'S", "'T", ".,;:!?-()[]{}\"/\\@#$%^&*_+=<>|~`", "=-", "éèàçñüöÅØß",
    "你好世界日本語한국어", "😀👍🏽👨‍👩‍👧🇫🇷", "\u00a0", "\u3000", "\u180e", "\u2028", "\u0085", "\u200b", "\u1680",
    "\u2000\u2009\u202f\u205f", "½²①ℕ٣", "\u0301", "<|endoftext|>", "<s>", "</s>", "ΑΒΓαβγ", "абвгд",
    "\u0000", "\x0b\x0c", "\ufeff", "ـ", "्", "ℌ",
]


def random_texts(count, seed):
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        n = rng.randint(1, 60)
        texts.append("".join(rng.choice(rng.choice(POOLS)) if rng.random() < 0.7 else rng.choice(POOLS) for _ in range(n)))
    return texts


# Llama 3's split regex (from its tokenizer.json).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def hf_encode(tok, text, parse_special):
    tok.encode_special_tokens = not parse_special
    return tok.encode(text, add_special_tokens=False).ids


def make_tiny_split():
    """A small byte-level BPE with Llama 3's pre-tokenizer layout, trained on the test texts."""
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS * 3 + [ENGLISH.lower(), ENGLISH.upper()], trainer=trainer)
    out = os.path.join(FIXTURES, "tiny_split")
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    return Tokenizer.from_file(os.path.join(out, "tokenizer.json"))


def main():
    gpt2 = Tokenizer.from_file(os.path.join(FIXTURES, "gpt2", "tokenizer.json"))
    spm = sentencepiece.SentencePieceProcessor(model_file=os.path.join(FIXTURES, "llama2", "tokenizer.model"))
    tiny = make_tiny_split()
    texts = TEXTS + random_texts(150, seed=2024)
    with open(os.path.join(FIXTURES, "gpt2", "tokenizer.json"), encoding="utf-8") as f:
        spec = json.load(f)
    spec["pre_tokenizer"]["add_prefix_space"] = True
    gpt2_prefix = Tokenizer.from_str(json.dumps(spec))

    out = {
        "versions": {"tokenizers": tokenizers.__version__, "sentencepiece": sentencepiece.__version__},
        "texts": texts,
        "gpt2": [hf_encode(gpt2, t, False) for t in texts],
        "gpt2_special": [hf_encode(gpt2, t, True) for t in texts],
        "gpt2_prefix_space": [hf_encode(gpt2_prefix, t, False) for t in texts],
        "llama2": [spm.encode(t) for t in texts],
        "tiny_split": [hf_encode(tiny, t, False) for t in texts],
    }
    # Decoding must give the text back for all of these (they are valid UTF-8).
    for case in ("gpt2", "gpt2_special", "tiny_split"):
        tok = tiny if case == "tiny_split" else gpt2
        for t, ids in zip(texts, out[case]):
            assert tok.decode(ids, skip_special_tokens=False) == t, (case, t)
    path = os.path.join(FIXTURES, "encodings.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=None)
        f.write("\n")
    print(f"wrote {path} ({len(texts)} texts)", file=sys.stderr)


if __name__ == "__main__":
    main()
