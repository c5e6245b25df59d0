"""Training a byte-level BPE the way CLIP's was made: count pairs, merge the most frequent, repeat.

Training works on a table of distinct words and how often each occurs, every
word split into byte symbols with ``</w>`` on the last one::

    {("c", "a", "t</w>"): 3, ("c", "a", "b</w>"): 1}
    pairs: ("c", "a"): 4, ("a", "t</w>"): 3, ("a", "b</w>"): 1  ->  merge ("c", "a") first
    {("ca", "t</w>"): 3, ("ca", "b</w>"): 1}                    ->  then ("ca", "t</w>")

:func:`learn_merges_naive` recounts every pair after every merge: clear, and
slow. :func:`learn_merges` keeps the pair counts up to date instead: a merge
only touches the words that contain its pair, so only their pairs are
re-counted, and a heap finds the next most frequent pair. Both pick the same
pair every time (the highest count; among equal counts, the smallest pair in
string order), so they learn exactly the same merges.

Encoding with the learned merges lives in the tokenizer (:meth:`Tokenizer.bpe`,
a heap over linked symbols); :func:`bpe_naive` here is the textbook loop it is
tested against. The tokenizer never imports this module.

    >>> tok = train_bpe(["a cat", "a cab", "the cat"], num_merges=2)
    >>> tok.merges, tok.vocab_size
    ([('c', 'a'), ('ca', 't</w>')], 516)
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict

from .tokenizer import EOT_TEXT, SOT_TEXT, Tokenizer, clean, pre_tokenize, word_symbols

Pair = tuple[str, str]
Word = tuple[str, ...]


def merge_word(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Replace every occurrence of ``pair`` in ``word``, left to right.

    >>> merge_word(("a", "a", "a", "b</w>"), ("a", "a"))
    ('aa', 'a', 'b</w>')
    >>> merge_word(("c", "a", "t", "c", "a", "t</w>"), ("c", "a"))
    ('ca', 't', 'ca', 't</w>')
    """
    first, second = pair
    merged, i = [], 0
    while i < len(word):
        if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)



def bpe_naive(symbols: Word, ranks: dict[Pair, int]) -> list[str]:
    """Encode one word the textbook way (openai/clip's loop): find the lowest-ranked pair, merge it
    everywhere, repeat. Quadratic in the word's length; :meth:`Tokenizer.bpe` gives the same
    symbols in near-linear time and is tested against this.

    >>> bpe_naive(("c", "a", "t</w>"), {("c", "a"): 0, ("ca", "t</w>"): 1})
    ['cat</w>']
    """
    word = tuple(symbols)
    while len(word) > 1:
        best = min(zip(word, word[1:]), key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        word = merge_word(word, best)
    return list(word)


def word_frequencies(texts) -> dict[Word, int]:
    """Clean and pre-tokenize ``texts`` exactly as encoding will, then count the words.

    >>> word_frequencies(["A cat.", "a CAT"])
    {('a</w>',): 2, ('c', 'a', 't</w>'): 2, ('.</w>',): 1}
    """
    counts = Counter()
    for text in texts:
        counts.update(pre_tokenize(clean(text)))
    counts.pop(SOT_TEXT, None), counts.pop(EOT_TEXT, None)  # specials are not learned
    return {word_symbols(word): n for word, n in counts.items()}


def pair_counts(words: dict[Word, int]) -> Counter:
    """How often each adjacent pair of symbols occurs, weighted by word frequency.

    >>> pair_counts({("a", "a", "a</w>"): 2})
    Counter({('a', 'a'): 2, ('a', 'a</w>'): 2})
    """
    counts = Counter()
    for word, freq in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    return counts


def _best(counts) -> tuple[Pair, int]:
    """The most frequent pair; ties go to the smallest pair (deterministic)."""
    pair, count = min(counts.items(), key=lambda item: (-item[1], item[0]))
    return pair, count


def learn_merges_naive(words: dict[Word, int], num_merges: int,
                       min_frequency: int = 2) -> list[tuple[Pair, int]]:
    """The textbook loop: recount all pairs, merge the best, repeat. Returns ``[(pair, count)]``."""
    merges = []
    for _ in range(num_merges):
        counts = pair_counts(words)
        if not counts:
            break  # every word is a single symbol
        pair, count = _best(counts)
        if count < min_frequency:
            break
        merges.append((pair, count))
        words = {merge_word(word, pair): freq for word, freq in words.items()}
    return merges


def learn_merges(words: dict[Word, int], num_merges: int,
                 min_frequency: int = 2) -> list[tuple[Pair, int]]:
    """Same merges as :func:`learn_merges_naive`, with incrementally updated pair counts."""
    symbols = [tuple(w) for w in words]  # word index -> its current symbols
    freqs = list(words.values())
    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)  # pair -> words that (may) contain it
    for index, (word, freq) in enumerate(zip(symbols, freqs)):
        for pair in zip(word, word[1:]):
            counts[pair] += freq
            where[pair].add(index)
    # A max-heap via negated counts. Entries go stale when a count changes; we push
    # the new count and skip old entries when they surface.
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    merges = []
    while heap and len(merges) < num_merges:
        negative, pair = heapq.heappop(heap)
        if counts.get(pair) != -negative:
            continue  # stale entry
        if -negative < min_frequency:
            break
        merges.append((pair, -negative))
        changed = set()
        for index in where.pop(pair):
            old = symbols[index]
            new = merge_word(old, pair)
            if new == old:
                continue  # an earlier merge already consumed this pair here
            freq = freqs[index]
            for p in zip(old, old[1:]):
                counts[p] -= freq
                changed.add(p)
            for p in zip(new, new[1:]):
                counts[p] += freq
                changed.add(p)
                where[p].add(index)
            symbols[index] = new
        for p in changed:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
            else:
                del counts[p]
                where.pop(p, None)
    return merges


def train_bpe(texts, num_merges: int, min_frequency: int = 2, naive: bool = False) -> Tokenizer:
    """Learn up to ``num_merges`` merges from ``texts``; a drop-in :class:`Tokenizer`.

    Training stops early when no pair occurs ``min_frequency`` times. The
    vocabulary is ``512 + len(merges) + 2`` tokens, with CLIP's layout, so the
    end-of-text token is the largest id. ``naive=True`` uses the slow loop.
    """
    if num_merges < 0:
        raise ValueError(f"num_merges must be >= 0, got {num_merges}")
    learn = learn_merges_naive if naive else learn_merges
    merges = learn(word_frequencies(texts), num_merges, min_frequency)
    tokenizer = Tokenizer([pair for pair, _ in merges])
    tokenizer.merge_counts = [count for _, count in merges]  # for plots: how frequent each merge was
    return tokenizer
