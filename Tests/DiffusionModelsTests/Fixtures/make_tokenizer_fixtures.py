#!/usr/bin/env python3
"""Generates the CLIPTokenizer fixtures read by Tests/DiffusionModelsTests/CLIPTokenizerTests.swift.

Usage (from the repository root):
    pip install -r Tests/DiffusionModelsTests/Fixtures/requirements.txt
    python Tests/DiffusionModelsTests/Fixtures/make_tokenizer_fixtures.py

Reference: transformers 4.56.2's slow `CLIPTokenizer`, loaded with `from_pretrained(folder)` exactly as
diffusers loads a pipeline's `tokenizer/` folder, and called as diffusers calls it
(`padding="max_length", max_length=tokenizer.model_max_length, truncation=True`).

Text-cleaning path: transformers' CLIPTokenizer uses `ftfy.fix_text` when `ftfy` can be imported and
otherwise its `BasicTokenizer` cleaning. Neither transformers nor diffusers depends on ftfy (the
DDPO pin set does not install it), so the Swift tokenizer implements the ftfy-less path, and this
script hides ftfy from transformers (`sys.modules["ftfy"] = None`) before importing it. It also
prints, for information, on how many strings the ftfy path and the fast tokenizer would differ.

The Unicode tables behind that cleaning are those of Python's `unicodedata` (14.0.0 on Python 3.11);
the fixture records the version and the Swift test configures the tokenizer with it.

Writes into Fixtures/tokenizer/:
  merges.txt             the real CLIP merges: "#version: 0.2" then lines 1..48894 of open_clip's
                         bpe_simple_vocab_16e6.txt.gz (MIT; see LICENSE-CLIP-BPE.txt). vocab.json is
                         not committed: it is derived from the merges exactly as OpenAI's CLIP and
                         the Hugging Face vocab.json were built (256 byte symbols, the same with
                         "</w>", one token per merge, then <|startoftext|> and <|endoftext|>); the
                         test derives it with CLIPTokenizer.vocabularyFromMerges and checks it
                         against the checksum stored here.
  sd1/, sd2/, variant/   tokenizer_config.json (+ special_tokens_map.json) of three tokenizer folders:
                         SD 1.x (legacy AddedToken dicts, pad <|endoftext|>), SD 2.x (pad "!"
                         given by special_tokens_map.json, which overrides the config), and the
                         format transformers 4.56 saves (added_tokens_decoder) with left padding,
                         left truncation and clean_up_tokenization_spaces.
  tiny/, tiny_legacy/    a small vocabulary as tokenizer.json (merges as [a, b] pairs / "a b"
                         strings), with a tokenizer_config.json; expected ids come from the slow
                         CLIPTokenizer given the same vocabulary and merges as vocab.json/merges.txt.
  cases.json             the strings and transformers' ids / decodes for every folder.
"""

import gzip
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import unicodedata

sys.modules["ftfy"] = None  # take transformers' ftfy-less path (see above)

from transformers import CLIPTokenizer, CLIPTokenizerFast  # noqa: E402
from transformers.models.clip.tokenization_clip import bytes_to_unicode  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tokenizer")
NUM_MERGES = 49152 - 256 - 2  # 48894, the slice CLIP and transformers use

# ---------------------------------------------------------------------------------------------
# The real CLIP vocabulary.


def clip_merges():
    spec = importlib.util.find_spec("open_clip")  # located, not imported: open_clip imports ftfy
    path = os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    return lines[1 : NUM_MERGES + 1]


def clip_vocab(merges):
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == len(set(vocab)) == 49408
    return {t: i for i, t in enumerate(vocab)}


def fnv1a64(vocab):
    """Checksum of a vocabulary: FNV-1a 64 over the UTF-8 of "token\\tid\\n" lines in id order."""
    h = 0xCBF29CE484222325
    for token, i in sorted(vocab.items(), key=lambda kv: kv[1]):
        for b in f"{token}\t{i}\n".encode("utf-8"):
            h ^= b
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


AT = {"__type": "AddedToken", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def legacy_token(content):
    return dict(AT, content=content)


def map_token(content):
    d = legacy_token(content)
    del d["__type"]
    return d


# tokenizer_config.json / special_tokens_map.json of the folders (as the SD 1.x / 2.x repos ship them).
FOLDERS = {
    "sd1": {
        "tokenizer_config.json": {
            "add_prefix_space": False,
            "bos_token": legacy_token("<|startoftext|>"),
            "do_lower_case": True,
            "eos_token": legacy_token("<|endoftext|>"),
            "errors": "replace",
            "model_max_length": 77,
            "name_or_path": "openai/clip-vit-large-patch14",
            "pad_token": "<|endoftext|>",
            "special_tokens_map_file": "./special_tokens_map.json",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": legacy_token("<|endoftext|>"),
        },
        "special_tokens_map.json": {
            "bos_token": map_token("<|startoftext|>"),
            "eos_token": map_token("<|endoftext|>"),
            "pad_token": "<|endoftext|>",
            "unk_token": map_token("<|endoftext|>"),
        },
    },
    "sd2": {
        # The config says <|endoftext|> but special_tokens_map.json's "!" wins (no added_tokens_decoder).
        "tokenizer_config.json": {
            "add_prefix_space": False,
            "bos_token": legacy_token("<|startoftext|>"),
            "do_lower_case": True,
            "eos_token": legacy_token("<|endoftext|>"),
            "errors": "replace",
            "model_max_length": 77,
            "name_or_path": "hf-models/clip-vit-large-patch14",
            "pad_token": "<|endoftext|>",
            "special_tokens_map_file": "./special_tokens_map.json",
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": legacy_token("<|endoftext|>"),
        },
        "special_tokens_map.json": {
            "bos_token": map_token("<|startoftext|>"),
            "eos_token": map_token("<|endoftext|>"),
            "pad_token": "!",
            "unk_token": map_token("<|endoftext|>"),
        },
    },
    # "variant" is written by transformers' save_pretrained (the modern format), then edited below.
}

# ---------------------------------------------------------------------------------------------
# The strings.


def handwritten():
    s = [
        "",
        " ",
        "   ",
        "\t\n",
        "a",
        "A",
        "a photo of a cat",
        "A photo of a Cat",
        "a photo of a dog",
        "cat",
        "dog",
        "horse",
        "monkey",
        "rabbit",
        "zebra",
        "spider",
        "bird",
        "sheep",
        "deer",
        "cow",
        "goat",
        "lion",
        "tiger",
        "bear",
        "raccoon",
        "fox",
        "wolf",
        "lizard",
        "beetle",
        "ant",
        "butterfly",
        "hedgehog",
        "kangaroo",
        "a painting of a llama riding a bike",
        "An astronaut riding a horse on Mars, highly detailed, 8k, trending on artstation",
        "masterpiece, best quality, (ultra-detailed:1.2), [cat|dog], {sunset}, <lora:foo:0.8>",
        "portrait of a woman, by Greg Rutkowski and Alphonse Mucha, oil on canvas",
        "photo of a red apple on a wooden table, studio lighting, 50mm, f/1.8",
        "a cat wearing sunglasses, 4k, HDR!!!",
        "close-up photo of a tiger's eye",
        "the quick brown fox jumps over the lazy dog",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
        "Hello, World!",
        "hello world",
        "hello  world",
        "  leading and trailing spaces  ",
        "tab\tseparated\twords",
        "new\nline\nseparated",
        "windows\r\nline\r\nendings",
        "mixed \t \n \r whitespace",
        "vertical\x0btab and form\x0cfeed",
        "file\x1cgroup\x1drecord\x1eunit\x1fseparators",
        "null\x00byte",
        "bell\x07and escape \x1b[31mred\x1b[0m",
        "delete\x7fchar",
        "next\x85line",
        "no\u00a0break\u00a0space",
        "ideographic\u3000space",
        "line\u2028separator and paragraph\u2029separator",
        "zero\u200bwidth\u200cnon\u200djoiner",
        "\ufeffbyte order mark",
        "replacement \ufffd character",
        "soft\u00adhyphen",
        "word\u2060joiner",
        "private use \ue000\uf8ff",
        "unassigned \u0378 and noncharacter \uffff",
        "narrow\u202fnbsp and thin\u2009space and em\u2003space",
        "ogham\u1680space",
        "mongolian\u180evowel separator",
        "don't",
        "Don't",
        "DON'T",
        "it's",
        "It'S",
        "they're",
        "THEY'RE",
        "I've",
        "I'm",
        "we'll",
        "he'd",
        "she'd've",
        "y'all'll",
        "o'neil",
        "rock'n'roll",
        "'s",
        "''s",
        "'",
        "''",
        "'''",
        "'s's's",
        "it\u2019s curly",
        "it\u2018s",
        "it'\u017f long s",
        "it'\u017ft",
        "cats'",
        "the dogs' bones",
        "'quoted'",
        '"double quoted"',
        "\u201csmart quotes\u201d",
        "\u00abguillemets\u00bb",
        "0",
        "42",
        "1234567890",
        "3.14159",
        "1,000,000",
        "2nd place, 3rd, 4th",
        "x2 4x 1080p 16:9",
        "version 2.0.1-beta",
        "\u00bd \u00bc \u00be",
        "x\u00b2 + y\u00b3",
        "\u2160 \u2161 \u216b roman",
        "\u2460\u2461\u2462 circled",
        "\u0660\u0661\u0662 arabic-indic",
        "\u0966\u0967\u0968 devanagari digits",
        "\uff11\uff12\uff13 fullwidth digits",
        "\U0001d7ce\U0001d7cf math digits",
        "!",
        "!!",
        "!!!",
        "!?",
        "?!",
        "...",
        "\u2026",
        "--",
        "\u2014 em dash \u2013 en dash",
        "@#$%^&*()",
        "~`|\\/<>[]{}",
        "a.b.c",
        "a-b-c",
        "a_b_c",
        "snake_case_name and CamelCaseName",
        "http://example.com/path?x=1&y=2#frag",
        "https://www.example.org/images/cat.png",
        "user@example.com",
        "#hashtag @mention $100 50% 3*4=12",
        "C++ and C# and F#",
        ":) :-( ;) <3 xD",
        "\u00a9 \u00ae \u2122",
        "\u20ac5 \u00a310 \u00a5100 \u20b9",
        "\u00b0C \u00b5m \u2126",
        "<b>bold</b> and <i>italic</i>",
        '<a href="https://x.y">link</a>',
        "&amp; &lt; &gt; &quot; &#39;",
        "<p>paragraph</p><br/>",
        "<|startoftext|>",
        "<|endoftext|>",
        "<|startoftext|>hello<|endoftext|>",
        "a photo<|endoftext|>of a cat",
        "<|endoftext|><|endoftext|>",
        "<|ENDOFTEXT|>",
        "<|EndOfText|> mixed",
        "< |endoftext| >",
        "!!<|endoftext|>",
        "a<|endoftext|>!",
        "<|endoftext|>!!",
        "<|endoftext",
        "endoftext|>",
        "<|\u017ftartoftext|>",
        "<|startoftext|><|startoftext|>double",
        "<|pad|> <|unk|>",
        "caf\u00e9",
        "cafe\u0301",
        "CAF\u00c9",
        "na\u00efve r\u00e9sum\u00e9",
        "\u00c5ngstr\u00f6m",
        "A\u030angstro\u0308m",
        "\u212bngstr\u00f6m",
        "stra\u00dfe",
        "STRASSE",
        "\u1e9e capital sharp s",
        "\u0130stanbul",
        "ISTANBUL \u0131",
        "\u01c4 \u01c5 \u01c6 dz digraphs",
        "\ufb01nance \ufb02ow \ufb00",
        "\u0152uvre \u00c6sir",
        "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
        "Tie\u0302\u0301ng Vie\u0323\u0302t",
        "\u039f\u0394\u039f\u03a3",
        "\u039f\u0394\u039f\u03a3 \u03a3\u0391\u03a3",
        "\u03a3",
        "\u0391\u03a3\u0301",
        "\u0391\u03a3'\u0391",
        "\u03b1\u03a3\u03b1",
        "\u0391\u03a3.",
        "\u03ba\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
        "\u041c\u041e\u0421\u041a\u0412\u0410 \u0451\u0436",
        "\u0423\u043a\u0440\u0430\u0457\u043d\u0430 \u0491",
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
        "\u0627\u0644\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u0651\u064e\u0629",
        "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
        "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
        "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
        "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
        "\u0540\u0561\u0575\u0561\u057d\u057f\u0561\u0576",
        "\u1210\u1233\u1265",
        "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4",
        "\u1100\u1161\u11a8",
        "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c",
        "\u30ab\u30bf\u30ab\u30ca \u30c6\u30b9\u30c8",
        "\uff76\uff80\uff76\uff85 halfwidth",
        "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
        "\u4e00\u53ea\u732b\u7684\u7167\u7247",
        "\u732b\u3068\u72ac",
        "\u3400\u4db5 ext A",
        "\U00020000\U0002a6d6 ext B",
        "\U0002a700 \U0002b740 \U0002b820 ext C D E",
        "\uf900\ufa0e compatibility ideographs",
        "\U0002f800 compatibility supplement",
        "\u3001\u3002\u300c\u300d cjk punctuation",
        "\u2e80\u2f00 radicals",
        "\u3131\u314f hangul compatibility jamo",
        "\uff21\uff22\uff23 fullwidth letters",
        "\uff41\uff42\uff43\uff01",
        "\U0001d400\U0001d401\U0001d402 math bold",
        "\U0001d552\U0001d553",
        "\U0001f600",
        "\U0001f600\U0001f601\U0001f602",
        "a cat \U0001f431 and a dog \U0001f436",
        "\U0001f44d\U0001f3fd thumbs up medium skin",
        "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",
        "\u2764\ufe0f heart",
        "\U0001f1fa\U0001f1f8 \U0001f1ef\U0001f1f5 flags",
        "#\ufe0f\u20e3 keycap",
        "\U0001f3f3\ufe0f\u200d\U0001f308 rainbow flag",
        "\u2600\u2601\u2602 weather",
        "\u2605\u2606\u2665\u2666",
        "\u2190\u2191\u2192\u2193 arrows",
        "\u2200x\u2203y: x \u2264 y \u2227 y \u2260 0",
        "\u221a2 \u2248 1.414, \u03c0 \u2248 3.14",
        "\u00d7\u00f7\u00b1",
        "\u266a\u266b music",
        "\u2022 bullet \u00b7 middle dot",
        "\u00bfQu\u00e9 tal? \u00a1Hola!",
        "\u0301 leading combining mark",
        "ypogegrammeni \u03b1\u0345 \u1fb3 *\u0345! a\u0345b \u0391\u0345",  # U+0345: see CLIPPreTokenizer
        "a\u0301\u0302\u0303 stacked marks",
        "\u0915\u094d\u0937 conjunct",
        "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333",
        "\U0001f6dc wireless (Unicode 15.0)",
        "\U0001fae8 shaking face (Unicode 15.0)",
        "\U00031350 CJK ext H (Unicode 15.0)",
        "\u1c89 Cyrillic TJE (Unicode 16.0)",
        "text after 15.0 char\U0001f6dcjoined",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "supercalifragilisticexpialidocious",
        "pneumonoultramicroscopicsilicovolcanoconiosis",
        "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
        "!" * 40,
        "!@#$%^&*()_+-=[]{};':\",./<>?\\|`~" * 3,
        "\U0001f600" * 30,
        "1" * 100,
    ]
    # Long prompts (> 77 tokens) of several kinds.
    s.append(", ".join(["a beautiful painting of a serene mountain landscape at sunset"] * 8))
    s.append(" ".join(f"word{i}" for i in range(120)))
    s.append(" ".join(str(i) for i in range(200)))
    s.append(
        "A highly detailed matte painting of a futuristic city floating above the clouds, with "
        "towering spires of glass and steel, airships drifting between the buildings, golden hour "
        "light streaming through the mist, intricate architecture inspired by art nouveau and "
        "brutalism, cinematic composition, volumetric lighting, ray tracing, octane render, "
        "unreal engine 5, trending on artstation, award winning, 8k resolution, ultra sharp focus, "
        "by Syd Mead and Moebius and Simon Stalenhag, featured on behance, masterpiece"
    )
    s.append(("the cat sat on the mat. " * 20).strip())
    s.append("\u732b" * 90)
    s.append(("\u00e9t\u00e9 " * 50).strip())
    s.append(("don't stop believin' " * 15).strip())
    s.append("a " * 75 + "b")  # exactly 76 words
    s.append("a " * 74 + "b")  # exactly 75 tokens: fills 77 with the specials
    s.append("a " * 76 + "b")  # one over
    s.append(" ".join(["<|endoftext|>"] * 80))
    s.append("!" + " !" * 80)
    # The DDPO prompt lists.
    for animal in ["squirrel", "mouse", "rat", "snake", "turtle", "frog", "chicken", "duck", "goose",
                   "bee", "pig", "turkey", "fly", "llama", "camel", "bat", "gorilla", "shark",
                   "whale", "dolphin", "fish", "elephant", "giraffe", "penguin", "octopus"]:
        s.append(f"a photo of a {animal}")
    return s


def random_strings(rng, n):
    """Seeded random strings drawn from a pool that covers every character class the cleaning and
    the pre-tokeniser distinguish (restricted to characters assigned in Unicode 14.0)."""
    pool = (
        list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        + list(" " * 12)
        + list("\t\n\r\x0b\x0c\x00\x07\x1b\x7f\x85\u00a0\u2028\u3000\u200b\u200d\ufeff\ufffd")
        + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
        + list("'''''sstrvmld")  # make contractions likely
        + list("\u00e9\u00e8\u00ea\u00f1\u00fc\u00df\u00c9\u00d1\u0130\u0131\u017f\u03a3\u03c3\u03c2\u0391\u0301\u0308\u0327")
        + list("\u0416\u0436\u05d0\u0627\u064e\u0915\u094d\u0e01\u0e31\u3042\u30a2\u4e00\u9fa5\uac00\u1100\u1161")
        + list("\u00bd\u00b2\u2160\u2460\u0661\u0967\uff11\uff21\uff41\ufb01\u2026\u2014\u2019\u201c")
        + ["\U0001f600", "\U0001f431", "\U0001f3fd", "\ufe0f", "\U0001f1fa", "\U00020000", "\U0001d400", "\ue000"]
    )
    out = []
    for _ in range(n):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144])
        out.append("".join(rng.choice(pool) for _ in range(length)))
    # Random words from a small alphabet with specials spliced in.
    specials = ["<|startoftext|>", "<|endoftext|>", "!", "<|", "|>"]
    for _ in range(20):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.25:
                parts.append(rng.choice(specials))
            else:
                parts.append("".join(rng.choice("abcdeélmnost'!? ") for _ in range(rng.randint(1, 9))))
        out.append(rng.choice(["", " "]).join(parts))
    return out


# ---------------------------------------------------------------------------------------------


def write_json(path, obj, indent=2):
    with open(path, "w", encoding="utf-8") as f:
        separators = (",", ":") if indent is None else None
        json.dump(obj, f, indent=indent, ensure_ascii=False, separators=separators)
        f.write("\n")


def squeeze(row, pad_id, side):
    """A padded row stored compactly: the run of pad ids on the padding side is replaced by its
    length ({"ids": rest, "pads": n}); the test rebuilds the row with the fixture's pad id."""
    n = 0
    while n < len(row) and row[-1 - n if side == "right" else n] == pad_id:
        n += 1
    rest = row[: len(row) - n] if side == "right" else row[n:]
    return {"ids": rest, "pads": n}


def call(tok, texts):
    """What diffusers does: padded to model_max_length, truncated."""
    return tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids


def main():
    assert unicodedata.unidata_version == "14.0.0", "regenerate with Python 3.11 (Unicode 14.0)"
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)

    merges = clip_merges()
    vocab = clip_vocab(merges)
    with open(os.path.join(OUT, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")

    work = tempfile.mkdtemp()
    write_json(os.path.join(work, "vocab.json"), vocab, indent=None)
    shutil.copy(os.path.join(OUT, "merges.txt"), work)

    # "variant": the format transformers 4.56 writes, then edited to exercise more options.
    base = CLIPTokenizer(os.path.join(work, "vocab.json"), os.path.join(work, "merges.txt"), model_max_length=77)
    assert base("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # openai ids
    saved = os.path.join(work, "saved")
    base.save_pretrained(saved)
    with open(os.path.join(saved, "tokenizer_config.json"), encoding="utf-8") as f:
        variant = json.load(f)
    variant.update(model_max_length=16, padding_side="left", truncation_side="left",
                   clean_up_tokenization_spaces=True)
    FOLDERS["variant"] = {"tokenizer_config.json": variant}

    tokenizers = {}
    for name, files in FOLDERS.items():
        folder = os.path.join(OUT, name)
        os.makedirs(folder)
        full = os.path.join(work, name)
        os.makedirs(full)
        for fname, content in files.items():
            write_json(os.path.join(folder, fname), content)
            write_json(os.path.join(full, fname), content)
        shutil.copy(os.path.join(work, "vocab.json"), full)
        shutil.copy(os.path.join(work, "merges.txt"), full)
        tok = CLIPTokenizer.from_pretrained(full)
        assert tok.fix_text is None
        tokenizers[name] = tok
    assert tokenizers["sd2"].pad_token == "!" and tokenizers["sd2"].pad_token_id == 0
    assert tokenizers["sd1"].pad_token_id == 49407

    rng = random.Random(20240607)
    texts = list(dict.fromkeys(handwritten() + random_strings(rng, 120)))  # unique, in order

    cases = []
    padded = {name: call(tok, texts) for name, tok in tokenizers.items()}
    for i, text in enumerate(texts):
        case = {"text": text}
        sd1 = tokenizers["sd1"]
        ids = sd1(text).input_ids
        case["ids"] = ids
        case["padded"] = squeeze(padded["sd1"][i], sd1.pad_token_id, "right")
        case["decoded"] = sd1.decode(ids)
        case["decoded_skip"] = sd1.decode(ids, skip_special_tokens=True)
        sd2 = tokenizers["sd2"]
        ids2 = sd2(text).input_ids
        if ids2 != ids:
            case["sd2_ids"] = ids2
        case["sd2_padded"] = squeeze(padded["sd2"][i], sd2.pad_token_id, "right")
        skip2 = sd2.decode(ids2, skip_special_tokens=True)
        if skip2 != case["decoded_skip"]:
            case["sd2_decoded_skip"] = skip2
        v = tokenizers["variant"]
        case["variant_padded"] = squeeze(padded["variant"][i], v.pad_token_id, "left")
        variant_decoded = v.decode(ids)  # clean_up_tokenization_spaces
        if variant_decoded != case["decoded"]:
            case["variant_decoded"] = variant_decoded
        cases.append(case)

    # Decoding arbitrary ids: random byte-symbol runs (mostly invalid UTF-8) and random vocab ids.
    decode_cases = []
    for _ in range(60):
        ids = [rng.randrange(512) for _ in range(rng.randint(1, 10))]
        decode_cases.append(ids)
    for _ in range(30):
        ids = [rng.randrange(49408) for _ in range(rng.randint(1, 12))]
        decode_cases.append(ids)
    decode_cases += [[49406, 49407], [0, 0, 0], [256, 0, 49407, 0], [49406, 320, 0, 1125, 49407, 0, 0]]
    decodes = []
    for ids in decode_cases:
        decodes.append({
            "ids": ids,
            "decoded": tokenizers["sd1"].decode(ids),
            "decoded_skip": tokenizers["sd1"].decode(ids, skip_special_tokens=True),
            "sd2_decoded_skip": tokenizers["sd2"].decode(ids, skip_special_tokens=True),
            "variant_decoded": tokenizers["variant"].decode(ids),
        })

    # For information: strings on which the ftfy path / the fast tokenizer give other ids.
    del sys.modules["ftfy"]
    try:
        import ftfy
    except ImportError:
        ftfy = None
    n_ftfy = None
    if ftfy is not None:
        with_ftfy = CLIPTokenizer.from_pretrained(os.path.join(work, "sd1"))
        with_ftfy.fix_text = ftfy.fix_text
        n_ftfy = sum(with_ftfy(t).input_ids != c["ids"] for t, c in zip(texts, cases))
    fast = CLIPTokenizerFast.from_pretrained(os.path.join(work, "sd1"), from_slow=True)
    n_fast = sum(fast(t).input_ids != c["ids"] for t, c in zip(texts, cases))
    print(f"{len(texts)} strings; the ftfy path differs on {n_ftfy}, the fast tokenizer on {n_fast}")

    tiny = make_tiny(work)

    write_json(
        os.path.join(OUT, "cases.json"),
        {
            "generator": "transformers 4.56.2 CLIPTokenizer (slow, without ftfy), via from_pretrained",
            "unicode_version": unicodedata.unidata_version,
            "vocab_size": len(vocab),
            "vocab_fnv1a64": fnv1a64(vocab),
            "model_max_length": {name: tok.model_max_length for name, tok in tokenizers.items()},
            "pad_token_id": {name: tok.pad_token_id for name, tok in tokenizers.items()},
            "ftfy_path_differs_on": n_ftfy,
            "fast_tokenizer_differs_on": n_fast,
            "cases": cases,
            "decode_cases": decodes,
            "tiny": tiny,
        },
        indent=None,
    )
    with open(os.path.join(OUT, "LICENSE-CLIP-BPE.txt"), "w", encoding="utf-8") as f:
        f.write(LICENSE)
    shutil.rmtree(work)
    for root, _, files in os.walk(OUT):
        for fname in sorted(files):
            p = os.path.join(root, fname)
            print(f"{os.path.relpath(p, OUT):40s} {os.path.getsize(p):9d} bytes")


def make_tiny(work):
    """A small BPE vocabulary stored as tokenizer.json (both merge spellings) and, for the reference,
    as vocab.json/merges.txt given to the slow CLIPTokenizer. It lacks most byte symbols, so unknown
    pieces map to the unk token."""
    b2u = bytes_to_unicode()
    letters = [b2u[b] for b in b"abcdeghilnorstw!'.,"]
    vocab = {}
    for t in letters + [c + "</w>" for c in letters]:
        vocab[t] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("a", "n"), ("an", "d</w>"),
              ("i", "s</w>"), ("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o</w>"), ("w", "o"),
              ("r", "l"), ("wo", "rl"), ("worl", "d</w>"), ("'", "s</w>"), ("d", "o"), ("do", "g</w>")]
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder = os.path.join(work, "tiny_ref")
    os.makedirs(folder)
    write_json(os.path.join(folder, "vocab.json"), vocab)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    config = {"model_max_length": 12, "tokenizer_class": "CLIPTokenizer", "pad_token": "<|endoftext|>",
              "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    write_json(os.path.join(folder, "tokenizer_config.json"), config)
    ref = CLIPTokenizer.from_pretrained(folder)

    # tokenizer.json as the tokenizers library writes it (merges as pairs), built the way
    # transformers' CLIPConverter builds CLIP's, and a copy with legacy "a b" merge strings.
    tj = json.loads(tiny_tokenizer_json(vocab, merges))
    assert isinstance(tj["model"]["merges"][0], list)
    for name, spell in [("tiny", lambda m: m), ("tiny_legacy", lambda m: " ".join(m))]:
        d = os.path.join(OUT, name)
        os.makedirs(d)
        t = dict(tj)
        t["model"] = dict(tj["model"], merges=[spell(m) for m in tj["model"]["merges"]])
        write_json(os.path.join(d, "tokenizer.json"), t)
        write_json(os.path.join(d, "tokenizer_config.json"), config)

    added = make_tiny_added(folder, vocab)

    texts = ["the cat and the dog", "hello world", "Hello World!", "it's the cat's", "the zebra",
             "caT, THE dog.", "", "the the the the the the the the the the", "<|endoftext|>the",
             "wow! wow!! 42", "\u00e9t\u00e9 \u732b", "hello world hello world hello"]
    out = []
    for text in texts:
        ids = ref(text).input_ids
        out.append({
            "text": text,
            "ids": ids,
            "padded": squeeze(ref(text, padding="max_length", max_length=12, truncation=True).input_ids,
                              ref.pad_token_id, "right"),
            "decoded": ref.decode(ids),
            "decoded_skip": ref.decode(ids, skip_special_tokens=True),
        })
    return {"vocab_size": len(vocab), "unk_token_id": ref.unk_token_id, "cases": out, "added": added}


def make_tiny_added(ref_folder, vocab):
    """tiny_added/: the tiny vocabulary as vocab.json + merges.txt, with a tokenizer_config.json in the
    4.56 format declaring added tokens with lstrip / rstrip / single_word, a non-special added token,
    a mask token and an additional special token that are not in the vocabulary, and "!" as pad."""
    d = os.path.join(OUT, "tiny_added")
    os.makedirs(d)
    shutil.copy(os.path.join(ref_folder, "vocab.json"), d)
    shutil.copy(os.path.join(ref_folder, "merges.txt"), d)
    n = len(vocab)

    def tok(content, special, lstrip=False, rstrip=False, single_word=False):
        return {"content": content, "lstrip": lstrip, "normalized": not special, "rstrip": rstrip,
                "single_word": single_word, "special": special}

    config = {
        "added_tokens_decoder": {
            str(vocab["<|startoftext|>"]): tok("<|startoftext|>", True),
            str(vocab["<|endoftext|>"]): tok("<|endoftext|>", True),
            str(n): tok("[MASK]", True, lstrip=True),
            str(n + 1): tok("<tag>", False, rstrip=True),
            str(n + 2): tok("wow", False, single_word=True),
            str(n + 3): tok("<tagged>", False),
        },
        "additional_special_tokens": ["<extra>"],
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "!",
        "mask_token": "[MASK]",
        "model_max_length": 10,
        "clean_up_tokenization_spaces": True,
        "tokenizer_class": "CLIPTokenizer",
    }
    write_json(os.path.join(d, "tokenizer_config.json"), config)
    t = CLIPTokenizer.from_pretrained(d)
    texts = ["the cat [MASK] dog", "the cat[MASK]dog", "<tag>   the cat", "a<tag> b", "wow the wow",
             "awow wowa wow!", "<tagged> <tag>", "<extra>the<extra>", "hello! [MASK]! <extra>",
             "the\t[MASK]\n<tag>\n\nthe", "[mask] <TAG> WOW", "   [MASK]", "<tag>"]
    out = []
    for text in texts:
        ids = t(text).input_ids
        out.append({
            "text": text,
            "ids": ids,
            "padded": squeeze(t(text, padding="max_length", truncation=True).input_ids, t.pad_token_id,
                              "right"),
            "decoded": t.decode(ids),
            "decoded_skip": t.decode(ids, skip_special_tokens=True),
            "decoded_skip_no_cleanup": t.decode(ids, skip_special_tokens=True,
                                                clean_up_tokenization_spaces=False),
        })
    return {
        "vocab_size": len(vocab),
        "special_ids": t.all_special_ids,
        "added_vocab": t.get_added_vocab(),
        "pad_token_id": t.pad_token_id,
        "cases": out,
    }


def tiny_tokenizer_json(vocab, merges):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<|endoftext|>", continuing_subword_prefix="",
                        end_of_word_suffix="</w>", fuse_unk=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(
            Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
            behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(
        sep=("<|endoftext|>", vocab["<|endoftext|>"]), cls=("<|startoftext|>", vocab["<|startoftext|>"]),
        add_prefix_space=False, trim_offsets=False)
    tok.add_special_tokens([AddedToken("<|startoftext|>", normalized=True),
                            AddedToken("<|endoftext|>", normalized=True)])
    return tok.to_str()


LICENSE = """The file merges.txt in this folder holds the first 48894 merges of
bpe_simple_vocab_16e6.txt.gz, the byte-pair-encoding vocabulary of OpenAI's CLIP, as distributed
in the open_clip package (open-clip-torch on PyPI) and in https://github.com/openai/CLIP. Both are
released under the MIT licence:

MIT License

Copyright (c) 2021 OpenAI
Copyright (c) 2012-2021 Gabriel Ilharco, Mitchell Wortsman, Nicholas Carlini, Rohan Taori,
Achal Dave, Vaishaal Shankar, John Miller, Hongseok Namkoong, Hannaneh Hajishirzi, Ali Farhadi,
Ludwig Schmidt

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

if __name__ == "__main__":
    main()
