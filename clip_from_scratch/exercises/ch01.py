"""Checks for chapter 01 (the tokenizer). Each takes the learner's function, never raises.

    >>> check_merge(None)
    [TODO] Not attempted yet: fill in the cell above and run this one again.
    False
"""
from __future__ import annotations

from . import not_attempted, report


def _placeholder(fn, *args) -> bool:
    """True (with the [TODO] hint) when the learner's function still just returns None."""
    try:
        return fn(*args) is None and not_attempted(None)
    except Exception:  # noqa: BLE001 - a raising function is an attempt; reported later
        return False


def _call(fn, *args):
    """Run the learner's function; an exception becomes a message, not a crash."""
    try:
        return fn(*args), None
    except Exception as err:  # noqa: BLE001 - any mistake in learner code is reported
        return None, f"{type(err).__name__}: {err}"


def check_byte_map(byte_map) -> bool:
    """``byte_map``: the dict {byte value: character} (or a function returning it)."""
    if not_attempted(byte_map):
        return False
    from ..tokenizer import bytes_to_unicode
    if callable(byte_map):
        if _placeholder(byte_map):
            return False
        byte_map, error = _call(byte_map)
        if error:
            return report(False, "", f"your function raised {error}")
    want = bytes_to_unicode()
    if not isinstance(byte_map, dict) or len(byte_map) != 256:
        return report(False, "", "expected a dict with 256 entries, one per byte value 0..255.")
    wrong = [b for b in range(256) if byte_map.get(b) != want[b]]
    if not wrong:
        return report(True, "all 256 bytes map like CLIP's: 188 to themselves, 68 to chr(256 + n).", "")
    b = wrong[0]
    hint = ("printable bytes map to themselves" if chr(b) == want[b]
            else "the n-th non-printable byte (counting from 0, in byte order) maps to chr(256 + n)")
    return report(False, "", f"{len(wrong)} bytes differ; byte {b} should map to {want[b]!r}, "
                             f"you gave {byte_map.get(b)!r} ({hint}).")


def check_pair_counts(count_pairs) -> bool:
    """``count_pairs(words)``: {word tuple: freq} -> {pair: count}, weighted by frequency."""
    if not_attempted(count_pairs) or _placeholder(count_pairs, {("a", "b</w>"): 1}):
        return False
    cases = [
        ({("c", "a", "t</w>"): 3, ("c", "a", "b</w>"): 1},
         {("c", "a"): 4, ("a", "t</w>"): 3, ("a", "b</w>"): 1}),
        ({("a", "a", "a</w>"): 2}, {("a", "a"): 2, ("a", "a</w>"): 2}),
        ({("x</w>",): 5}, {}),
    ]
    for words, want in cases:
        got, error = _call(count_pairs, dict(words))
        if error:
            return report(False, "", f"your function raised {error} on {words}")
        try:
            got = {k: v for k, v in dict(got or {}).items() if v}  # a Counter or dict, zeros ignored
        except (TypeError, ValueError):
            return report(False, "", f"expected a dict {{pair: count}}, got {type(got).__name__}.")
        if got != want:
            return report(False, "", f"for {words} expected {want}, got {got}. Count each adjacent "
                                     f"pair once per position and multiply by the word's frequency.")
    return report(True, "pairs counted per position and weighted by word frequency.", "")


def check_merge(merge) -> bool:
    """``merge(word, pair)``: replace every occurrence of ``pair`` in ``word`` (a tuple), left to right."""
    if not_attempted(merge) or _placeholder(merge, ("a", "b</w>"), ("a", "b</w>")):
        return False
    cases = [
        ((("c", "a", "t</w>"), ("c", "a")), ("ca", "t</w>")),
        ((("c", "a", "t", "c", "a", "t</w>"), ("c", "a")), ("ca", "t", "ca", "t</w>")),
        ((("a", "a", "a", "b</w>"), ("a", "a")), ("aa", "a", "b</w>")),
        ((("a", "b</w>"), ("b", "c")), ("a", "b</w>")),
    ]
    for (word, pair), want in cases:
        got, error = _call(merge, word, pair)
        if error:
            return report(False, "", f"your function raised {error} on {word}, {pair}")
        if not isinstance(got, (tuple, list)) or tuple(got) != want:
            hint = (" Overlaps: in ('a','a','a') the pair ('a','a') is merged once, from the left."
                    if word[0] == "a" and pair == ("a", "a") else "")
            return report(False, "", f"merge({word}, {pair}) should be {want}, got {got}.{hint}")
    return report(True, "merges replace every occurrence left to right, overlaps included.", "")


def check_fit_to_context(fit) -> bool:
    """``fit(ids, context_length, truncate)``: sot + ids + eot, zero padded, openai's rules."""
    if not_attempted(fit) or _placeholder(fit, [320], 5, False):
        return False
    from ..tokenizer import clip_tokenizer
    tok = clip_tokenizer()
    sot, eot = tok.sot_token, tok.eot_token
    cases = [([320, 2368], 6, False, [sot, 320, 2368, eot, 0, 0]),
             ([320, 2368, 269], 5, False, [sot, 320, 2368, 269, eot]),
             ([320, 2368, 269, 320], 5, True, [sot, 320, 2368, 269, eot])]
    for ids, context_length, truncate, want in cases:
        got, error = _call(fit, list(ids), context_length, truncate)
        if error:
            return report(False, "", f"fit({ids}, {context_length}, truncate={truncate}) raised {error}")
        if not isinstance(got, (tuple, list)) or list(got) != want:
            return report(False, "", f"fit({ids}, {context_length}, truncate={truncate}) should be "
                                     f"{want}, got {got}. With truncate, cut to the context and make "
                                     f"the last id end-of-text.")
    got, error = _call(fit, [320] * 10, 5, False)
    if error is None or not error.startswith("RuntimeError"):
        return report(False, "", "too-long ids without truncate should raise RuntimeError, like "
                                 "openai/clip does.")
    return report(True, "start, ids, end, zero padding, and openai's truncation rule.", "")
