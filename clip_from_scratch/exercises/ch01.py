"""Checks for chapter 01 (the tokenizer). Each takes the learner's function, never raises.

    >>> check_merge(None)
    [TODO] Not attempted yet: fill in the cell above and run this one again.
    False
"""
from __future__ import annotations

from . import attempt, call, report


def check_merge(merge) -> bool:
    """``merge(word, pair)``: replace every occurrence of ``pair`` in ``word`` (a tuple), left to right."""
    cases = [
        ((("c", "a", "t</w>"), ("c", "a")), ("ca", "t</w>")),
        ((("c", "a", "t", "c", "a", "t</w>"), ("c", "a")), ("ca", "t", "ca", "t</w>")),
        ((("a", "a", "a", "b</w>"), ("a", "a")), ("aa", "a", "b</w>")),
        ((("a", "b</w>"), ("b", "c")), ("a", "b</w>")),
    ]
    for (word, pair), want in cases:
        got, verdict = attempt(merge, word, pair, where=f" on {word}, {pair}")
        if verdict is not None:
            return verdict
        if not isinstance(got, (tuple, list)) or tuple(got) != want:
            hint = (" Overlaps: in ('a','a','a') the pair ('a','a') is merged once, from the left."
                    if word[0] == "a" and pair == ("a", "a") else "")
            return report(False, "", f"merge({word}, {pair}) should be {want}, got {got}.{hint}")
    return report(True, "merges replace every occurrence left to right, overlaps included.", "")


def check_fit_to_context(fit) -> bool:
    """``fit(ids, context_length, truncate)``: sot + ids + eot, zero padded, openai's rules."""
    from ..tokenizer import clip_tokenizer
    tok = clip_tokenizer()
    sot, eot = tok.sot_token, tok.eot_token
    cases = [([320, 2368], 6, False, [sot, 320, 2368, eot, 0, 0]),
             ([320, 2368, 269], 5, False, [sot, 320, 2368, 269, eot]),
             ([320, 2368, 269, 320], 5, True, [sot, 320, 2368, 269, eot])]
    for ids, context_length, truncate, want in cases:
        got, verdict = attempt(fit, list(ids), context_length, truncate,
                               where=f" for fit({ids}, {context_length}, truncate={truncate})")
        if verdict is not None:
            return verdict
        if not isinstance(got, (tuple, list)) or list(got) != want:
            return report(False, "", f"fit({ids}, {context_length}, truncate={truncate}) should be "
                                     f"{want}, got {got}. With truncate, cut to the context and make "
                                     f"the last id end-of-text.")
    _, error = call(fit, [320] * 10, 5, False)
    if not isinstance(error, RuntimeError):
        return report(False, "", "too-long ids without truncate should raise RuntimeError, like "
                                 "openai/clip does.")
    return report(True, "start, ids, end, zero padding, and openai's truncation rule.", "")


_DECODE_TEXTS = ["a photo of a cat.", "Кошка на окне", "一只猫 🍕", "don't stop"]


def check_decode(decode) -> bool:
    """``decode(ids, decoder) -> str``: ids -> stand-in strings -> bytes -> UTF-8 text, each ``</w>`` a space.

    ``decoder`` is a tokenizer's ``{id: string of stand-in characters}`` table
    (``clip_tok.decoder``).
    """
    from ..tokenizer import bytes_to_unicode, clip_tokenizer
    tok = clip_tokenizer()
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    for text in _DECODE_TEXTS:
        ids = tok.encode(text)
        got, verdict = attempt(decode, list(ids), tok.decoder)
        if verdict is not None:
            return verdict
        want = tok.decode(ids)
        if got == want:
            continue
        pieces = "".join(tok.decoder[i] for i in ids)
        if got == pieces or got == pieces.replace("</w>", " "):
            return report(False, "", f"for {text!r} you returned the stand-in characters ({got!r}): map each one back "
                                     "to its byte with the inverse of bytes_to_unicode(), then decode the bytes as "
                                     "UTF-8.")
        if isinstance(got, str) and got.replace(" ", "") == want.replace(" ", "") and "</w>" not in got:
            return report(False, "", f"for {text!r}: the spaces differ, yours {got!r}, expected {want!r}. "
                                     "Every '</w>' becomes exactly one space (so a space follows every word).")
        if isinstance(got, str) and "</w>" in got:
            return report(False, "", "'</w>' is still in the text: replace it by a space.")
        wrong = "".join(chr(byte_of[c]) for c in pieces).replace("</w>", " ")   # one character per byte
        if got == wrong:
            return report(False, "", f"for {text!r}: you turned each byte into a character (chr(byte)); put the bytes "
                                     "together first (bytes([...])) and decode them as UTF-8: '猫' is 3 bytes.")
        return report(False, "", f"for {text!r} expected {want!r}, got {got!r}.")
    return report(True, "ids -> stand-ins -> bytes -> UTF-8, with </w> as spaces: Cyrillic, Chinese and emoji "
                        "come back intact.", "")


_LONG_CAPTION = ("A small brown dog with a red collar is running across a wide green field near an old wooden fence "
                 "while two children in yellow raincoats watch from the porch of a white farmhouse under grey clouds")


def check_fit_words(fit_words) -> bool:
    """``fit_words(text, context_length) -> str``: the longest run of whole words, from the start, that fits.

    "Fits" means ``len(encode(prefix)) + 2 <= context_length`` (start and end
    tokens included). Words are the text's whitespace-separated pieces, joined
    by single spaces.
    """
    from ..tokenizer import clip_tokenizer
    tok = clip_tokenizer()
    fits = lambda words: len(tok.encode(" ".join(words))) + 2
    for text, context_length in [(_LONG_CAPTION, 20), (_LONG_CAPTION, 33), ("a cat", 77), (_LONG_CAPTION, 77)]:
        words = text.split()
        k = max(i for i in range(len(words) + 1) if fits(words[:i]) <= context_length)
        want = " ".join(words[:k])
        got, verdict = attempt(fit_words, text, context_length)
        if verdict is not None:
            return verdict
        if not isinstance(got, str):
            return report(False, "", f"return the text (a str), got {type(got).__name__}.")
        got = " ".join(got.split())
        if got == want:
            continue
        if not (" ".join(words) + " ").startswith(got + " ") and got != "":
            return report(False, "", f"the result should be whole words from the start of the text; got {got!r}. "
                                     "Cutting the ids and decoding them can split a word in two.")
        length = fits(got.split())
        if length > context_length:
            return report(False, "", f"{got!r} needs {length} tokens with start and end: more than {context_length}. "
                                     "Remember the two special tokens.")
        return report(False, "", f"with context_length={context_length} one more word still fits: expected "
                                 f"{want!r} ({fits(words[:k])} tokens), got {got!r} ({length} tokens).")
    return report(True, "the longest whole-word prefix that fits: a kinder truncation than cutting ids.", "")
