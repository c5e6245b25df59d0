"""Chapter 01's exercise checks: [TODO] for placeholders, [OK] for solutions, never an exception."""
import pytest

from clip_from_scratch.bpe import merge_word, pair_counts
from clip_from_scratch.exercises import ch01
from clip_from_scratch.tokenizer import bytes_to_unicode, clip_tokenizer


def fit(ids, context_length, truncate):
    tok = clip_tokenizer()
    tokens = [tok.sot_token] + list(ids) + [tok.eot_token]
    if len(tokens) > context_length:
        if not truncate:
            raise RuntimeError("too long")
        tokens = tokens[:context_length]
        tokens[-1] = tok.eot_token
    return tokens + [0] * (context_length - len(tokens))


SOLUTIONS = [(ch01.check_byte_map, bytes_to_unicode()), (ch01.check_byte_map, bytes_to_unicode),
             (ch01.check_merge, merge_word), (ch01.check_pair_counts, pair_counts),
             (ch01.check_fit_to_context, fit)]
CHECKS = [ch01.check_byte_map, ch01.check_merge, ch01.check_pair_counts, ch01.check_fit_to_context]


@pytest.mark.parametrize("check, answer", SOLUTIONS)
def test_worked_solutions_pass(check, answer, capsys):
    assert check(answer) is True
    assert capsys.readouterr().out.startswith("[OK]")


@pytest.mark.parametrize("check", CHECKS)
def test_placeholders_say_todo(check, capsys):
    assert check(None) is False
    assert check(lambda *args: None) is False
    assert capsys.readouterr().out.count("[TODO]") == 2


def broken(*args):
    raise KeyError("oops")


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("answer", [broken, lambda *a: 42, lambda *a: "text", lambda *a: [1, 2], 7, {}])
def test_wrong_answers_explain_and_never_raise(check, answer, capsys):
    assert check(answer) is False
    assert "[NOT YET]" in capsys.readouterr().out


def test_merge_check_explains_overlaps(capsys):
    def greedy_overlapping(word, pair):  # glues symbols two by two whenever the pair is ("a", "a")
        if pair != ("a", "a"):
            return merge_word(word, pair)
        return tuple("".join(word[i:i + 2]) for i in range(0, len(word), 2))
    ch01.check_merge(greedy_overlapping)
    assert "Overlaps" in capsys.readouterr().out


BYTE_OF = {c: b for b, c in bytes_to_unicode().items()}


def decode(ids, decoder):
    return bytes(BYTE_OF[c] for c in "".join(decoder[i] for i in ids)).decode("utf-8", "replace").replace("</w>", " ")


def fit_words(text, context_length):
    tok, words, kept = clip_tokenizer(), text.split(), 0
    while kept < len(words) and len(tok.encode(" ".join(words[:kept + 1]))) + 2 <= context_length:
        kept += 1
    return " ".join(words[:kept])


@pytest.mark.parametrize("check, answer", [(ch01.check_decode, decode), (ch01.check_fit_words, fit_words)])
def test_transfer_exercise_solutions_pass(check, answer, capsys):
    assert check(answer) is True
    assert capsys.readouterr().out.startswith("[OK]")


@pytest.mark.parametrize("check, mistake, hint", [
    (ch01.check_decode, lambda ids, decoder: "".join(decoder[i] for i in ids).replace("</w>", " "), "stand-in"),
    (ch01.check_decode, lambda ids, decoder: "".join(chr(BYTE_OF[c]) for c in "".join(decoder[i] for i in ids))
     .replace("</w>", " "), "UTF-8"),
    (ch01.check_decode, lambda ids, decoder: decode(ids, decoder).replace(" ", "<>").replace("<>", "</w>"), "</w>"),
    (ch01.check_fit_words, lambda text, n: " ".join(text.split()[:n]), "two special tokens"),
    (ch01.check_fit_words, lambda text, n: clip_tokenizer().decode(clip_tokenizer().encode(text)[:n - 2]),
     "whole words"),
    (ch01.check_fit_words, lambda text, n: fit_words(text, n - 3), "one more word still fits"),
])
def test_transfer_exercise_mistakes_get_their_hint(check, mistake, hint, capsys):
    assert check(mistake) is False
    out = capsys.readouterr().out
    assert "[NOT YET]" in out and hint in out, out
