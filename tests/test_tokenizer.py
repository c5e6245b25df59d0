"""CLIP's tokenizer, id for id against openai/clip (``clip-anytorch``, imported as ``clip``)."""
import html
import random
import subprocess
import sys
from pathlib import Path

import ftfy
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import clip_from_scratch
from clip_from_scratch.download import ChecksumError, DownloadError
from clip_from_scratch.tokenizer import (
    VOCAB_FILE,
    Tokenizer,
    _needs_no_repair,
    bytes_to_unicode,
    clean,
    clip_tokenizer,
    clip_vocab_path,
    pre_tokenize,
    tokenize,
)

clip = pytest.importorskip("clip", reason="the reference tokenizer comes from clip-anytorch")
from clip.simple_tokenizer import SimpleTokenizer, basic_clean, whitespace_clean  # noqa: E402

REFERENCE = SimpleTokenizer()

CAPTIONS = [
    "A photo of a cat.", "a photo of a dog", "Two men riding horses on a beach at sunset.",
    "A kitchen with a stove, a sink and a refrigerator.", "The quick brown fox jumps over the lazy dog!",
    "A red double-decker bus drives down a busy London street.", "1234 dogs", "Hello World!",
    "A man's bicycle leaning against the wall; it's 3:45 p.m.", "rock'n'roll band on stage",
    "DON'T STOP ME NOW", "I'M A TEAPOT", "You're, we've, they'll, he'd", "WE'RE HERE, YOU'VE GOT IT",
    "She said \"hello\" — and left…", "email me: someone@example.com / https://example.com/a?b=c#d",
    "3.14159 is pi; 2,000,000 people; 1st, 2nd, 3rd; ½ ¾ ² ³ ① Ⅻ ٣ ४",
    "#hashtag @mention $100 50% C++ C# F* <tag> [bracket] {brace} (paren) a_b a-b a~b a^b",
    "ＬＯＵＤ　ＮＯＩＳＥＳ", "ﬂubberiﬁc", "“curly quotes” and ‘single’ ones",
]
SCRIPTS = [
    "Café crème brûlée à la façon de Noël", "Ærøskøbing, Åland, Straße, İstanbul, ŞİŞLİ, ǅemal",
    "Привет, мир! Кошка сидит на окне.", "Γειά σου Κόσμε· ΟΔΥΣΣΕΥΣ ς σ", "مرحبا بالعالم، قطة على الطاولة",
    "שלום עולם, חתול על השולחן", "नमस्ते दुनिया, बिल्ली मेज़ पर है", "สวัสดีชาวโลก แมวอยู่บนโต๊ะ",
    "一只猫坐在桌子上。", "猫がテーブルの上に座っている。カタカナ ひらがな", "고양이가 탁자 위에 앉아 있다", "ᚠᛇᚻ᛫ᛒᛦᚦ",
    "Tiếng Việt có dấu: Nguyễn, Đà Nẵng", "ქართული ენა", "Հայերեն լեզու", "አማርኛ ቋንቋ", "தமிழ் மொழி",
    "বাংলা ভাষা", "ภาษาไทย ๑๒๓", "ꦧꦱꦗꦮ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝟙𝟚𝟛", "Zalgo t̷̢e̵x̸t̶", "e\u0301 vs \u00e9",
]
EMOJI = [
    "I love pizza 🍕🍕🍕!", "👨‍👩‍👧‍👦 family", "👍🏽 👋🏿 🧑🏻‍💻", "🏳️‍🌈 flag", "🇫🇷🇯🇵 flags",
    "❤️ vs ❤", "a😀b😀c", "keycap 1️⃣ #️⃣", "🫠🫶🪿",
]
ENTITIES = [
    "Tom &amp; Jerry", "Tom &amp;amp; Jerry", "Tom &amp;amp;amp; Jerry", "caf&eacute; &lt;b&gt;",
    "&quot;quoted&quot; &#39;x&#39; &#x2019; &#8217;", "&lt;div&gt;&amp;nbsp;&lt;/div&gt;",
    "a < b &amp; c > d", "&notanentity; & alone &", "&hellip;&mdash;&copy;&reg;&trade;", "AT&T and R&D",
]
MOJIBAKE = [
    "cafÃ©", "âœ” No problems", "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.", "Ã¤rger Ã¼ber Ã¶l",
    "&macr;\\_(ã\x83\x84)_/&macr;", "Broken text&hellip; it&#x2019;s ﬂubberiﬁc!", "ÐŸÑ€Ð¸Ð²ÐµÑ‚",
    "\x80\x93 c1 controls \x9c",
]
CONTROL = [
    "\x1b[31mred text\x1b[0m", "bell\x07 null\x00 del\x7f", "zero\u200bwidth\u200cjoin\u200d",
    "soft\u00adhyphen", "bom\ufefffirst", "rtl\u202emark\u202c", "\x0b\x0c form feed",
    "lone\ud800surrogate", "\ud83d\ude00 surrogate pair",
]
WHITESPACE = [
    "", " ", "   \t\n  ", "a\u00a0b", "ideographic\u3000space", "tab\tand\r\nnewlines\r",
    "  leading and trailing  ", "many     spaces", "line\u2028sep\u2029para", "\x1c\x1d\x1e\x1f sep",
    "en\u2002em\u2003thin\u2009", "nel\u0085next",
]
SPECIAL = [
    "<|endoftext|>", "<|startoftext|>", "text <|endoftext|> more", "<|ENDOFTEXT|>", "<|endoftext|",
    "</w>", "a</w>b", "Ġ ĠĠ Ā", "'s 'S 'ſ", "can't won't shan't y'all",
]
CORPUS = CAPTIONS + SCRIPTS + EMOJI + ENTITIES + MOJIBAKE + CONTROL + WHITESPACE + SPECIAL


def reference_encode(text):
    return REFERENCE.encode(text)


def long_texts():
    rng = random.Random(0)
    words = [w for t in CAPTIONS + SCRIPTS + EMOJI for w in t.split()]
    return [" ".join(rng.choice(words) for _ in range(n)) for n in (10, 40, 75, 76, 120, 400)]


# --- the facts every CLIP tokenizer must reproduce ---------------------------------------------

def test_published_test_vectors():
    assert tokenize("Hello World!")[0, :5].tolist() == [49406, 3306, 1002, 256, 49407]
    assert tokenize("a photo of a cat.")[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 269, 49407]
    assert tokenize("1234 dogs")[0, :7].tolist() == [49406, 272, 273, 274, 275, 3255, 49407]


def test_vocabulary_has_clip_layout():
    tok = clip_tokenizer()
    assert tok.vocab_size == 49408
    assert (tok.sot_token, tok.eot_token) == (49406, 49407)
    assert tok.decoder == [token for token, _ in sorted(REFERENCE.encoder.items(), key=lambda kv: kv[1])]


def test_byte_map_keeps_188_printable_bytes_and_shifts_the_other_68():
    byte_map = bytes_to_unicode()
    assert byte_map == clip.simple_tokenizer.bytes_to_unicode()
    kept = [b for b, c in byte_map.items() if chr(b) == c]
    assert len(kept) == 188 and len(set(byte_map.values())) == 256
    assert sorted(ord(c) - 256 for b, c in byte_map.items() if chr(b) != c) == list(range(68))
    assert all(c.isprintable() and not c.isspace() for c in byte_map.values())


# --- identical ids on a varied corpus ----------------------------------------------------------

@pytest.mark.parametrize("text", CORPUS)
def test_encode_matches_openai(text):
    assert clip_tokenizer().encode(text) == reference_encode(text)


@pytest.mark.parametrize("text", CORPUS)
def test_clean_matches_openai_and_fast_path_is_exact(text):
    assert clean(text) == whitespace_clean(basic_clean(text)).lower()
    if _needs_no_repair(text):
        assert ftfy.fix_text(text) == text and html.unescape(text) == text


def test_tokenize_batch_matches_openai_for_whole_corpus():
    ours, theirs = tokenize(CORPUS), clip.tokenize(CORPUS)
    assert ours.dtype == theirs.dtype == torch.long
    assert ours.shape == theirs.shape == (len(CORPUS), 77)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("context_length", [1, 2, 5, 16, 77, 200])
def test_long_texts_truncate_like_openai(context_length):
    texts = long_texts()
    ours = tokenize(texts, context_length=context_length, truncate=True)
    assert torch.equal(ours, clip.tokenize(texts, context_length=context_length, truncate=True))
    assert (ours.argmax(dim=-1) == (ours != 0).sum(-1) - 1).all()  # eot is the last, largest id


def test_truncate_keeps_end_of_text_last():
    row = tokenize("a " * 200, truncate=True)[0]
    assert row[0] == 49406 and row[-1] == 49407 and (row[1:-1] == 320).all()


@pytest.mark.parametrize("context_length", [5, 16, 77])
def test_too_long_text_raises_openais_error(context_length):
    text = long_texts()[-1]
    with pytest.raises(RuntimeError) as theirs:
        clip.tokenize([text], context_length=context_length)
    with pytest.raises(RuntimeError) as ours:
        tokenize(["fine", text], context_length=context_length)
    assert str(ours.value) == str(theirs.value)
    assert "too long for context length" in str(ours.value)


def test_text_that_fills_context_exactly_is_not_truncated():
    text = "a " * 75  # 75 ids + sot + eot = 77
    assert torch.equal(tokenize(text), clip.tokenize(text))
    with pytest.raises(RuntimeError):
        tokenize(text + "a")


def test_single_string_and_list_and_tuple_give_same_rows():
    assert torch.equal(tokenize("a cat"), tokenize(["a cat"]))
    assert torch.equal(tokenize(("a cat", "a dog")), tokenize(["a cat", "a dog"]))
    assert tokenize([]).shape == (0, 77)


def test_package_level_tokenize_is_this_one():
    assert clip_from_scratch.tokenize is tokenize


def test_non_string_raises_type_error_naming_position():
    with pytest.raises(TypeError, match="position 2"):
        tokenize(["a cat", "a dog", 42])
    with pytest.raises(TypeError, match="position 0"):
        tokenize([None])
    with pytest.raises(TypeError, match="a string or a list of strings"):
        tokenize(42)


def test_typed_in_end_of_text_becomes_the_special_token_like_openai():
    assert clip_tokenizer().encode("<|endoftext|>") == [49407]


def test_cache_does_not_change_results():
    tok = Tokenizer(clip_tokenizer().merges)
    first = [tok.encode(t) for t in CORPUS]
    assert [tok.encode(t) for t in CORPUS] == first
    small = Tokenizer(clip_tokenizer().merges, cache_size=3)  # clears itself all the time
    assert [small.encode(t) for t in CORPUS] == first


# --- decoding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", CORPUS)
def test_decode_of_encode_is_the_cleaned_text_respaced(text):
    tok = clip_tokenizer()
    ids = tok.encode(text)
    decoded = tok.decode(ids)
    assert decoded == REFERENCE.decode(ids)
    words = pre_tokenize(clean(text))
    # Each word ends in </w>, decoded as one space: the cleaned text, a space after every word
    # (typed-in special tokens carry no </w>, so no space follows them).
    specials = {"<|startoftext|>", "<|endoftext|>"}
    assert decoded == "".join(w if w in specials else w + " " for w in words)
    assert "".join(decoded.split()) == "".join(clean(text).split())


def test_decode_accepts_a_tensor_row_and_rejects_unknown_ids():
    tok = clip_tokenizer()
    assert tok.decode(torch.tensor([3306, 1002])) == "hello world "
    with pytest.raises(ValueError, match="not in this vocabulary"):
        tok.decode([3306, 49408])


# --- property tests against openai ---------------------------------------------------------------

ascii_ish = st.lists(st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"&#<>-_/()\t\n")
    + ["&amp;", "&lt;", "'s", "'T", "é", "\x1b[1m", "\r\n", "cat", "DOG", "  "]), max_size=30).map("".join)
any_text = st.text(max_size=60)
slow_ok = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@slow_ok
@given(any_text)
def test_any_unicode_text_encodes_like_openai(text):
    assert clip_tokenizer().encode(text) == reference_encode(text)


@slow_ok
@given(ascii_ish)
def test_ascii_ish_text_encodes_like_openai(text):
    assert clip_tokenizer().encode(text) == reference_encode(text)


@slow_ok
@given(st.one_of(any_text, ascii_ish, st.text(alphabet=st.characters(max_codepoint=127), max_size=60)))
def test_fast_path_equals_full_cleaning(text):
    if _needs_no_repair(text):
        assert ftfy.fix_text(text) == text and html.unescape(html.unescape(text)) == text
    assert clean(text) == whitespace_clean(basic_clean(text)).lower()


@slow_ok
@given(st.one_of(any_text, st.text(alphabet="</w> >a'", max_size=20)))
def test_decode_of_encode_respaces_any_text(text):
    specials = {"<|startoftext|>", "<|endoftext|>"}
    words = pre_tokenize(clean(text))
    assert clip_tokenizer().decode(clip_tokenizer().encode(text)) == "".join(
        w if w in specials else w + " " for w in words)


@settings(max_examples=60, deadline=None)
@given(st.lists(any_text, max_size=5), st.integers(min_value=1, max_value=20))
def test_tokenize_truncated_batches_match_openai(texts, context_length):
    assert torch.equal(tokenize(texts, context_length, truncate=True),
                       clip.tokenize(texts, context_length, truncate=True))


# --- finding the vocabulary file ---------------------------------------------------------------

def test_vocab_found_in_installed_package_without_importing_it():
    code = ("import sys; from clip_from_scratch.tokenizer import clip_vocab_path; p = clip_vocab_path(); "
            "assert 'clip' not in sys.modules and 'open_clip' not in sys.modules, sorted(sys.modules); "
            "print(p)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], env={"PATH": "", "CLIP_VOCAB": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(VOCAB_FILE)


def test_explicit_missing_vocab_path_names_it(tmp_path):
    missing = tmp_path / "nowhere" / VOCAB_FILE
    with pytest.raises(FileNotFoundError, match=str(missing)):
        clip_vocab_path(missing)


def test_env_var_points_at_vocab(monkeypatch):
    real = clip_vocab_path()
    monkeypatch.setenv("CLIP_VOCAB", str(real))
    assert clip_vocab_path(packages=()) == real
    monkeypatch.setenv("CLIP_VOCAB", "/no/such/file.gz")
    with pytest.raises(FileNotFoundError, match="CLIP_VOCAB"):
        clip_vocab_path()


def test_no_package_and_no_internet_says_where_to_put_the_file(tmp_path, monkeypatch, free_port):
    monkeypatch.delenv("CLIP_VOCAB", raising=False)
    url = f"http://127.0.0.1:{free_port}/{VOCAB_FILE}"
    with pytest.raises(DownloadError) as err:
        clip_vocab_path(packages=("no_such_package_here",), url=url, cache_dir=tmp_path)
    message = str(err.value)
    assert str((tmp_path / VOCAB_FILE).resolve()) in message
    assert "CLIP_VOCAB" in message and not (tmp_path / VOCAB_FILE).exists()


@pytest.fixture
def file_server(tmp_path, http_server):
    """A loopback HTTP server over a folder holding the real file and a wrong one."""
    served = tmp_path / "served"
    served.mkdir()
    (served / VOCAB_FILE).write_bytes(clip_vocab_path().read_bytes())
    (served / "wrong.gz").write_bytes(b"not the vocabulary")
    return http_server(served)


def test_vocab_downloads_once_with_checksum(file_server, tmp_path, monkeypatch):
    monkeypatch.delenv("CLIP_VOCAB", raising=False)
    cache = tmp_path / "cache"
    path = clip_vocab_path(packages=(), url=f"{file_server}/{VOCAB_FILE}", cache_dir=cache)
    assert path == cache / VOCAB_FILE and path.read_bytes() == clip_vocab_path().read_bytes()
    assert clip_vocab_path(packages=(), url="http://127.0.0.1:9/unused", cache_dir=cache) == path
    with pytest.raises(ChecksumError):
        clip_vocab_path(packages=(), url=f"{file_server}/wrong.gz", cache_dir=tmp_path / "other")
