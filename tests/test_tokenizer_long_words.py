"""Applying merges with a heap over linked symbols: the textbook loop's ids, in near-linear time."""
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clip_from_scratch.bpe import bpe_naive
from clip_from_scratch.tokenizer import Tokenizer, clip_tokenizer, tokenize, word_symbols

slow_ok = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def words_and_merges(draw):
    """A word over a tiny alphabet and an arbitrary list of merges among its possible symbols.

    Arbitrary merge lists (not only ones a trainer would learn) are the hard case: a merge
    can create a pair whose rank is *lower* than the one just applied.
    """
    alphabet = draw(st.sampled_from(["a", "ab", "abc"]))
    word = tuple(draw(st.lists(st.sampled_from(alphabet), min_size=1, max_size=16)))
    word = word[:-1] + (word[-1] + "</w>",)
    symbols = list(alphabet) + [c + "</w>" for c in alphabet]
    merges = []
    for _ in range(draw(st.integers(0, 12))):
        first, second = draw(st.sampled_from(symbols)), draw(st.sampled_from(symbols))
        if first.endswith("</w>") or (first, second) in merges:
            continue
        merges.append((first, second))
        symbols.append(first + second)
    draw(st.randoms()).shuffle(merges)  # any rank order
    return word, merges


@slow_ok
@given(words_and_merges())
def test_heap_bpe_equals_textbook_bpe_for_any_merge_list(case):
    word, merges = case
    tok = Tokenizer(merges)
    assert tok.bpe(word) == bpe_naive(word, tok.bpe_ranks)


def test_ties_and_overlaps_merge_left_to_right():
    tok = Tokenizer([("a", "a"), ("ab", "a"), ("a", "b")])
    for word in [("a", "a", "a</w>"), ("a", "a", "a", "a", "a</w>"), ("a", "b", "a", "b", "a</w>")]:
        assert tok.bpe(word) == bpe_naive(word, tok.bpe_ranks)
    # ("ab", "a") has a lower rank than ("a", "b"), but all ("a", "b") merge first, as one step.
    word = ("a", "b", "a", "b", "x</w>")
    assert Tokenizer([("ab", "a"), ("a", "b")]).bpe(word) == ["ab", "ab", "x</w>"]


@slow_ok
@given(st.text(max_size=40))
def test_heap_bpe_equals_textbook_bpe_on_clips_vocabulary(text):
    tok = clip_tokenizer()
    for word in text.split() or ["x"]:
        symbols = word_symbols(word)
        assert tok.bpe(symbols) == bpe_naive(symbols, tok.bpe_ranks)


def test_heap_bpe_equals_textbook_bpe_on_long_random_words():
    tok = clip_tokenizer()
    rng = random.Random(0)
    for length in [50, 200, 1000]:
        for alphabet in ["ab", "aeinrst", "abcdefghijklmnopqrstuvwxyz", "éè猫😀"]:
            symbols = word_symbols("".join(rng.choice(alphabet) for _ in range(length)))
            assert tok.bpe(symbols) == bpe_naive(symbols, tok.bpe_ranks)


@pytest.mark.parametrize("letters", ["a", "ab", "abcdefghijklmnopqrstuvwxyz"])
def test_a_30000_letter_word_takes_well_under_a_second_per_10000_letters(letters):
    # The textbook loop needs ~15 s here (every merge rescans the word); the heap ~0.1 s.
    # 5 s leaves room for a busy shared CPU and still fails the quadratic version.
    rng = random.Random(1)
    word = "".join(rng.choice(letters) for _ in range(30_000))
    tok = Tokenizer(clip_tokenizer().merges)  # a fresh cache
    start = time.perf_counter()
    row = tok.tokenize(word, truncate=True)
    assert time.perf_counter() - start < 5
    assert row[0, 0] == tok.sot_token and row[0, -1] == tok.eot_token


def test_truncate_stops_encoding_once_the_context_is_full(monkeypatch):
    tok = Tokenizer(clip_tokenizer().merges)
    seen = []
    original = tok.encode_word
    monkeypatch.setattr(tok, "encode_word", lambda word: seen.append(word) or original(word))
    text = " ".join(f"w{i}" for i in range(100_000))  # 200,000 words
    row = tok.tokenize(text, context_length=10, truncate=True)
    assert len(seen) <= 10  # each word gives at least one id
    assert row.tolist() == [[tok.sot_token] + tok.encode(text)[:8] + [tok.eot_token]]
    seen.clear()
    with pytest.raises(RuntimeError, match="too long for context length 10"):
        tok.tokenize(text, context_length=10)
    assert len(seen) <= 10


def test_huge_words_are_not_kept_in_the_word_cache():
    tok = Tokenizer(clip_tokenizer().merges)
    tok.encode("a" * 5000 + " cat")
    assert list(tok.cache) == ["cat"]


def test_package_tokenize_truncates_a_long_word_like_a_short_one():
    ids = tokenize("x" * 30_000, truncate=True)[0]
    assert ids[0] == 49406 and ids[-1] == 49407 and (ids != 0).all()
