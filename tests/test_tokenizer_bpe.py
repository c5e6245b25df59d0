"""Training a BPE from scratch: same merges as the textbook loop, CLIP's layout, round trips."""
import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_from_scratch.bpe import learn_merges, learn_merges_naive, merge_word, pair_counts, train_bpe, word_frequencies
from clip_from_scratch.tokenizer import Tokenizer, clean, clip_tokenizer, pre_tokenize


def captions(n, seed=0):
    rng = random.Random(seed)
    colours = "red green blue yellow purple orange black white pink brown".split()
    things = "dog cat bird car bus man woman child horse bicycle pizza train boat kite".split()
    actions = "sitting standing running walking eating riding playing lying jumping".split()
    places = ["on a bench", "in a field", "near the water", "on the street", "in a kitchen",
              "under a tree", "beside a building", "at the café", "next to 2 dogs"]
    return [f"{rng.choice(['A', 'The', 'Two', 'A small'])} {rng.choice(colours)} "
            f"{rng.choice(things)} {rng.choice(actions)} {rng.choice(places)}{rng.choice(['.', '!', ''])}"
            for _ in range(n)]


CORPUS = captions(2000)


def test_incremental_trainer_learns_exactly_the_naive_merges():
    words = word_frequencies(CORPUS)
    fast, slow = learn_merges(words, 400), learn_merges_naive(words, 400)
    assert len(fast) > 100  # training ran long enough to exhaust frequent pairs
    assert fast == slow


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="aab cdé!1", max_size=12), max_size=12),
       st.integers(min_value=0, max_value=40), st.integers(min_value=1, max_value=3))
def test_incremental_equals_naive_on_random_corpora(texts, num_merges, min_frequency):
    # Small alphabets make many ties and overlapping pairs ("aaa"): the hard cases.
    words = word_frequencies(texts)
    fast = learn_merges(words, num_merges, min_frequency)
    assert fast == learn_merges_naive(words, num_merges, min_frequency)


def test_pair_counts_and_merge_handle_overlaps():
    assert pair_counts({("a", "a", "a</w>"): 3, ("a", "a</w>"): 1}) == {("a", "a"): 3, ("a", "a</w>"): 4}
    assert merge_word(("a", "a", "a", "a</w>"), ("a", "a")) == ("aa", "a", "a</w>")


def test_first_merge_is_the_most_frequent_pair_and_counts_never_rise():
    tok = train_bpe(CORPUS, 50)
    counts = pair_counts(word_frequencies(CORPUS))
    top = max(counts.values())
    assert tok.merge_counts[0] == top
    assert tok.merges[0] == min(pair for pair, n in counts.items() if n == top)  # ties: smallest pair
    # A new pair is never more frequent than the merge that made it, so the counts fall.
    assert tok.merge_counts == sorted(tok.merge_counts, reverse=True)


def test_trained_vocab_has_clip_layout():
    tok = train_bpe(CORPUS, 300)
    merges = len(tok.merges)
    assert tok.vocab_size == 256 + 256 + merges + 2
    assert tok.eot_token == tok.vocab_size - 1 and tok.sot_token == tok.vocab_size - 2
    assert tok.decoder[:512] == clip_tokenizer().decoder[:512]
    ids = tok.tokenize(CORPUS[:50], context_length=32)
    assert ids.dtype == torch.long and ids.shape == (50, 32)
    assert (ids.argmax(-1) == (ids != 0).sum(-1) - 1).all()  # eot is the largest id in each row
    assert ids.max() < tok.vocab_size


@pytest.mark.parametrize("text", CORPUS[:20] + ["Unseen words: zebra, 猫, 🍕, naïve!", "", "<|endoftext|>"])
def test_trained_tokenizer_round_trips(text):
    tok = train_bpe(CORPUS, 300)
    specials = {"<|startoftext|>", "<|endoftext|>"}
    assert tok.decode(tok.encode(text)) == "".join(
        w if w in specials else w + " " for w in pre_tokenize(clean(text)))


def test_trained_tokenizer_compresses_its_own_captions():
    tok = train_bpe(CORPUS, 300)
    bytes_per_token = sum(len(clean(t).encode()) for t in CORPUS) / sum(len(tok.encode(t)) for t in CORPUS)
    assert bytes_per_token > 3  # whole words, mostly


def test_to_dict_from_dict_round_trip_is_json_safe(tmp_path):
    tok = train_bpe(CORPUS, 200)
    d = json.loads(json.dumps(tok.to_dict()))
    again = Tokenizer.from_dict(d)
    assert again.merges == tok.merges and again.vocab_size == tok.vocab_size
    assert torch.equal(again.tokenize(CORPUS[:30]), tok.tokenize(CORPUS[:30]))
    torch.save({"tokenizer": tok.to_dict()}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert Tokenizer.from_dict(loaded["tokenizer"]).merges == tok.merges


def test_clip_vocab_round_trips_through_to_dict():
    tok = clip_tokenizer()
    assert Tokenizer.from_dict(tok.to_dict()).encode("a photo of a cat.") == [320, 1125, 539, 320, 2368, 269]


def test_from_dict_rejects_other_things():
    with pytest.raises(ValueError, match="Tokenizer.to_dict"):
        Tokenizer.from_dict({"merges": []})


def test_training_stops_when_no_pair_repeats():
    tok = train_bpe(["ab ab", "cd"], 100)
    assert tok.merges == [("a", "b</w>")]
    assert train_bpe(["ab ab"], 0).merges == []
    with pytest.raises(ValueError):
        train_bpe(["ab"], -1)


def test_naive_flag_gives_same_tokenizer():
    assert train_bpe(CORPUS[:300], 80, naive=True).merges == train_bpe(CORPUS[:300], 80).merges


def test_using_the_tokenizer_does_not_import_bpe_training():
    import subprocess
    import sys
    code = ("import sys, clip_from_scratch.tokenizer as t; t.tokenize('a cat'); "
            "assert 'clip_from_scratch.bpe' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples_run():
    import doctest

    from clip_from_scratch import bpe, tokenizer
    for module in (tokenizer, bpe):
        result = doctest.testmod(module)
        assert result.attempted > 5 and result.failed == 0, module.__name__
