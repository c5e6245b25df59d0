"""CLIP's tokenizer: byte-level BPE, built from nothing, id-for-id with openai/clip.

Text becomes ids in four steps::

    "Hello  World!"  --clean-->  "hello world!"          (ftfy, html.unescape x2, collapse \\s, lower)
                     --split-->  ["hello", "world", "!"]  (CLIP's pre-tokenizer regex)
                     --bytes-->  each word as printable stand-ins for its UTF-8 bytes
                     --BPE---->  [3306, 1002, 256]         (merges applied by rank)

    >>> tokenize("Hello World!")[0, :5].tolist()
    [49406, 3306, 1002, 256, 49407]

One :class:`Tokenizer` class serves both CLIP's released vocabulary (49,408
tokens, :func:`clip_tokenizer`) and the small BPE a learner trains on captions
(:func:`clip_from_scratch.bpe.train_bpe`). The vocabulary layout is always the same::

    [256 byte symbols] [the same 256 + "</w>"] [one token per merge] [<|startoftext|>] [<|endoftext|>]

so ``eot_token`` is the largest id (the text encoder finds it with argmax) and
``sot_token`` the one before it.
"""
from __future__ import annotations

import heapq
import html
import operator
from functools import lru_cache

import ftfy
import regex
import torch

from .clip_vocab import VOCAB_FILE, clip_vocab_path, load_clip_merges  # noqa: F401  (VOCAB_FILE, clip_vocab_path: re-exported)

# ---------------------------------------------------------------------------------------------
# 1. Bytes -> printable unicode characters


@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """A reversible map from the 256 byte values to 256 printable characters.

    The 188 bytes that already print as a visible character (``!``..``~``,
    ``¡``..``¬``, ``®``..``ÿ``) stand for themselves; the other 68 (space,
    control bytes, ...) get ``chr(256 + n)`` in order, so a space becomes ``Ġ``.
    BPE then works on strings of visible characters, and since every byte has
    a symbol, no text is ever "unknown": an emoji is just four byte symbols.

    >>> m = bytes_to_unicode(); m[ord("a")], m[ord(" ")], m[0]
    ('a', 'Ġ', 'Ā')
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    byte_values, chars = printable[:], [chr(b) for b in printable]
    n = 0
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            chars.append(chr(256 + n))
            n += 1
    return dict(zip(byte_values, chars))  # insertion order = vocabulary order


# ---------------------------------------------------------------------------------------------
# 2. Cleaning and pre-tokenizing

# CLIP's pre-tokenizer. Alternatives, tried left to right at each position:
#   <|startoftext|>, <|endoftext|>  the special tokens, kept whole
#   's 't 're 've 'm 'll 'd         English contractions split off ("don't" -> "don", "'t")
#   [\p{L}]+                        a run of letters in any script ("hello", "привет", "猫")
#   [\p{N}]                         ONE digit (or other number character): "2024" -> 2 0 2 4
#   [^\s\p{L}\p{N}]+                a run of everything else except whitespace: "!!", "😀", "-"
# Whitespace is never part of a token: words are marked by "</w>" on their last symbol instead.
PATTERN = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
           r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")
_pattern = regex.compile(PATTERN, regex.IGNORECASE)
_whitespace = regex.compile(r"\s+")
SOT_TEXT, EOT_TEXT = "<|startoftext|>", "<|endoftext|>"
CACHE_MAX_WORD = 100  # longer words are encoded each time, not cached


def _needs_no_repair(text: str) -> bool:
    """True when ftfy and html.unescape provably leave ``text`` unchanged.

    For printable ASCII (U+0020..U+007E) without ``&`` every ftfy step is a
    no-op: mojibake, C1 controls, ligatures, wide forms, curly quotes and
    surrogates all need non-ASCII characters; line breaks, terminal escapes and
    control characters need characters below U+0020 or U+007F; HTML entities
    need ``&`` (and so does ``html.unescape``). Captions are mostly like this,
    and ftfy is most of openai's tokenizing time, so skipping it pays.
    """
    return text.isascii() and text.isprintable() and "&" not in text


def clean(text: str) -> str:
    """Exactly openai/clip's cleaning: fix, unescape twice, strip, collapse whitespace, lower.

    >>> clean("  Caf\\u00c3\\u00a9 &amp;amp;\\tMORE ")
    'café & more'
    """
    if _needs_no_repair(text):
        return " ".join(text.split()).lower()  # only " " is whitespace in printable ASCII
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _whitespace.sub(" ", text).strip().lower()


def pre_tokenize(text: str) -> list[str]:
    """Split cleaned text into CLIP's words.

    >>> pre_tokenize("don't panic, it's 2024!")
    ['don', "'t", 'panic', ',', 'it', "'s", '2', '0', '2', '4', '!']
    """
    return _pattern.findall(text)


def word_symbols(word: str) -> tuple[str, ...]:
    """A word as its byte symbols, ``</w>`` glued to the last one (where BPE starts).

    >>> word_symbols("cat"), word_symbols("é")
    (('c', 'a', 't</w>'), ('Ã', '©</w>'))
    """
    byte_encoder = bytes_to_unicode()
    chars = [byte_encoder[b] for b in word.encode("utf-8")]
    chars[-1] += "</w>"
    return tuple(chars)


# ---------------------------------------------------------------------------------------------
# 3. The tokenizer: merges by rank, a word cache, decoding, padding to a context


class Tokenizer:
    """Byte-level BPE with CLIP's vocabulary layout, given its list of merges.

    >>> tok = Tokenizer([("c", "a"), ("ca", "t</w>")])
    >>> tok.vocab_size, tok.encode("cat cab"), tok.decode(tok.encode("cat cab"))
    (516, [513, 512, 321], 'cat cab ')
    """

    def __init__(self, merges, cache_size: int = 200_000):
        self.merges = [tuple(m) for m in merges]
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols]
        vocab += ["".join(m) for m in self.merges] + [SOT_TEXT, EOT_TEXT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = vocab  # id -> token string
        self.bpe_ranks = {m: rank for rank, m in enumerate(self.merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.sot_token = self.encoder[SOT_TEXT]
        self.eot_token = self.encoder[EOT_TEXT]
        self.cache_size = cache_size
        self.cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.decoder)

    def __repr__(self):
        return f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"

    # -- encoding ------------------------------------------------------------------------------
    def bpe(self, symbols: tuple[str, ...]) -> list[str]:
        """Merge the lowest-ranked adjacent pair until no pair is a merge.

        >>> Tokenizer([("a", "b"), ("ab", "c</w>")]).bpe(("a", "b", "c</w>"))
        ['abc</w>']

        The textbook loop (:func:`clip_from_scratch.bpe.bpe_naive`, openai/clip's
        ``bpe``) rescans the whole word for its best pair after every merge:
        quadratic time, ~15 s for one 30,000-letter word. Here the symbols are a
        linked list and the candidate pairs sit in a heap keyed by (rank,
        position), so each merge costs O(log n). Same result, step for step:

        * the heap pops the lowest rank first, and among equal ranks (one rank =
          one pair) the leftmost first, which is ``bpe.merge_word``'s left-to-right
          order (``"aaa"`` -> ``"aa" "a"``);
        * all occurrences of that pair are merged before the pairs they create
          enter the heap, as the textbook merges a pair everywhere in one step
          (a new pair may have a lower rank than the one being merged);
        * an entry whose symbols have changed since it was pushed is stale and
          skipped: its pair is looked up again when it surfaces.
        """
        if len(symbols) < 2:
            return list(symbols)
        ranks = self.bpe_ranks
        word = list(symbols)                      # word[i]: the symbol that starts at node i
        size = len(word)
        after = list(range(1, size + 1))          # after[i]: next live node (size = none)
        before = list(range(-1, size - 1))        # before[i]: previous live node (-1 = none)
        # A heap entry is one int, rank * size + node: ints compare faster than tuples, and
        # the order is the same as (rank, node).
        heap = [ranks[pair] * size + i
                for i, pair in enumerate(zip(word, word[1:])) if pair in ranks]
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            rank = heap[0] // size
            step_end = (rank + 1) * size           # entries below this have this rank
            merged = []                            # nodes that grew in this step
            while heap and heap[0] < step_end:     # every occurrence of this one pair, left first
                i = pop(heap) - rank * size
                j = after[i]
                if word[i] is None or j == size or ranks.get((word[i], word[j])) != rank:
                    continue                       # stale: a symbol changed since the push
                word[i] += word[j]                 # node i absorbs node j
                word[j] = None
                after[i] = k = after[j]
                if k < size:
                    before[k] = i
                merged.append(i)
            for i in merged:                       # the pairs the merges created, both sides
                for left, right in ((before[i], i), (i, after[i])):
                    if left >= 0 and right < size:
                        new_rank = ranks.get((word[left], word[right]))
                        if new_rank is not None:
                            push(heap, new_rank * size + left)
        return [symbol for symbol in word if symbol is not None]

    def encode_word(self, word: str) -> list[int]:
        """The ids of one pre-tokenized word (cached: captions repeat words a lot).

        >>> clip_tokenizer().encode_word("hello")
        [3306]
        """
        ids = self.cache.get(word)
        if ids is None:
            if word == SOT_TEXT or word == EOT_TEXT:
                ids = [self.encoder[word]]  # like openai: typed-in specials become the specials
            else:
                ids = [self.encoder[s] for s in self.bpe(word_symbols(word))]
            if len(word) <= CACHE_MAX_WORD:  # a pasted blob would only crowd out real words
                if len(self.cache) >= self.cache_size:
                    self.cache.clear()
                self.cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Text -> ids, without start/end tokens.

        >>> clip_tokenizer().encode("a photo of a cat.")
        [320, 1125, 539, 320, 2368, 269]
        """
        return self._encode(text)

    def _encode(self, text: str, limit: int | None = None) -> list[int]:
        """:meth:`encode`, or just enough of it to hold its first ``limit`` ids."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {_what(text)}")
        words = _pattern.findall(clean(text))
        if limit is not None:
            words = words[:limit]  # each word gives at least one id
        ids: list[int] = []
        encode_word = self.encode_word
        for word in words:
            ids.extend(encode_word(word))
        return ids

    # -- decoding ------------------------------------------------------------------------------
    def decode(self, ids) -> str:
        """Ids -> text, the way openai/clip decodes: each ``</w>`` becomes one space.

        So every word, punctuation included, is followed by a space, and
        ``decode(encode(t))`` is the cleaned text re-spaced word by word:
        ``"".join(w + " " for w in pre_tokenize(clean(t)))`` (no space follows a
        typed-in ``<|endoftext|>``, which has no ``</w>``).
        Bytes that are not valid UTF-8 (a word cut in the middle) become U+FFFD.

        >>> tok = clip_tokenizer(); tok.decode(tok.encode("Hello, World!"))
        'hello , world ! '
        >>> tok.decode([-1])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: id -1 is not in this vocabulary (ids run from 0 to 49407); ...
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        decoder, size = self.decoder, len(self.decoder)
        # Check each id: a plain list lookup would take -1 as the last token (Python's
        # negative indexing) and True as id 1, and decode garbage without a word.
        text = "".join(decoder[i if type(i) is int and 0 <= i < size else self._checked_id(i)]
                       for i in ids)
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")

    def _checked_id(self, i) -> int:
        """``i`` as an int index into the vocabulary, or a ValueError that names it."""
        if isinstance(i, bool) or (isinstance(i, torch.Tensor) and i.dtype == torch.bool):
            raise ValueError(f"id {i!r} is a bool, not a token id; decode() takes ints "
                             f"from 0 to {self.vocab_size - 1}.")
        try:
            index = operator.index(i)  # int, numpy integer, 0-d integer tensor
        except TypeError:
            raise ValueError(f"id {i!r} is a {type(i).__name__}, not a token id; decode() takes "
                             f"ints from 0 to {self.vocab_size - 1}.") from None
        if not 0 <= index < self.vocab_size:
            raise ValueError(f"id {i!r} is not in this vocabulary (ids run from 0 to "
                             f"{self.vocab_size - 1}); was it made by another tokenizer?")
        return index

    # -- batches -------------------------------------------------------------------------------
    def tokenize(self, texts, context_length: int = 77, truncate: bool = False) -> torch.Tensor:
        """Texts -> ``[N, context_length]`` long tensor: sot, ids, eot, zero padding.

        Same ids, errors and truncation as openai/clip's ``clip.tokenize``.

        >>> clip_tokenizer().tokenize(["1234 dogs"], context_length=8).tolist()
        [[49406, 272, 273, 274, 275, 3255, 49407, 0]]
        """
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, (bytes, bytearray)):  # iterable, but its items are ints
            raise TypeError(f"tokenize() takes a string or a list of strings, got {_what(texts)}")
        elif not hasattr(texts, "__iter__"):
            raise TypeError(f"tokenize() takes a string or a list of strings, "
                            f"got a {type(texts).__name__}: {texts!r}")
        if context_length < 1:
            raise ValueError(f"context_length must be at least 1, got {context_length}")
        rows = []
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                if isinstance(text, (bytes, bytearray)):
                    raise TypeError(f"tokenize() needs strings, but the text at position "
                                    f"{position} is {_what(text)}")
                raise TypeError(f"tokenize() needs strings, but the text at position {position} "
                                f"is a {type(text).__name__}: {text!r}. Convert it with str() "
                                f"or drop it.")
            # More than context_length - 1 ids cannot fit beside sot and eot, so encoding
            # stops there: a pasted book costs no more than a caption (the cleaning aside).
            tokens = [self.sot_token] + self._encode(text, context_length - 1) + [self.eot_token]
            if len(tokens) > context_length:
                if not truncate:
                    raise RuntimeError(f"Input {text} is too long for context length "
                                       f"{context_length}")
                tokens = tokens[:context_length]
                tokens[-1] = self.eot_token
            rows.append(tokens)
        return _pad(rows, context_length)

    __call__ = tokenize

    # -- saving --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-safe form (strings and ints only), fit for ``torch.load(weights_only=True)``."""
        return {"format": "clip_from_scratch.Tokenizer", "version": 1,
                "merges": [" ".join(m) for m in self.merges]}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        if not isinstance(d, dict) or d.get("format") != "clip_from_scratch.Tokenizer":
            raise ValueError("This is not a saved Tokenizer (expected a dict made by "
                             "Tokenizer.to_dict(), with format 'clip_from_scratch.Tokenizer').")
        merges = [tuple(m.split(" ")) for m in d.get("merges", [])]
        if any(len(m) != 2 for m in merges):
            raise ValueError("Each saved merge must be two symbols separated by one space.")
        return cls(merges)


def _what(value) -> str:
    """Names a non-str argument for an error; bytes get the fix, since str(b"x") is "b'x'"."""
    if isinstance(value, (bytes, bytearray)):
        return (f"bytes ({bytes(value[:30])!r}); decode it to str first, "
                f"e.g. data.decode('utf-8')")
    return f"a {type(value).__name__}"


def _pad(rows: list[list[int]], context_length: int) -> torch.Tensor:
    """Rows of ids -> one zero-padded ``[N, context_length]`` tensor, filled in one scatter."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)  # [N]
    flat = torch.tensor([i for r in rows for i in r], dtype=torch.long)  # [sum of lengths]
    result = torch.zeros(len(rows), context_length, dtype=torch.long)  # [N, context]
    mask = torch.arange(context_length) < lengths[:, None]  # [N, context], row-major = flat order
    result[mask] = flat
    return result


# ---------------------------------------------------------------------------------------------
# 4. CLIP's released vocabulary (the file itself is found or fetched by clip_vocab.py)

@lru_cache(maxsize=None)
def clip_tokenizer(vocab_path=None) -> Tokenizer:
    """CLIP's tokenizer with the released 49,408-token vocabulary (loaded once).

    >>> tok = clip_tokenizer(); tok.vocab_size, tok.sot_token, tok.eot_token
    (49408, 49406, 49407)
    """
    return Tokenizer(load_clip_merges(vocab_path))


def tokenize(texts, context_length: int = 77, truncate: bool = False) -> torch.Tensor:
    """openai/clip's ``clip.tokenize``: a string or a list -> ``[N, context_length]`` ids.

    >>> tokenize(["a photo of a cat.", "1234 dogs"], context_length=9)
    tensor([[49406,   320,  1125,   539,   320,  2368,   269, 49407,     0],
            [49406,   272,   273,   274,   275,  3255, 49407,     0,     0]])
    """
    return clip_tokenizer().tokenize(texts, context_length=context_length, truncate=truncate)
