"""Bad input to the tokenizer is answered with one clear error, never a wrong result."""
import numpy as np
import pytest
import torch

from clip_from_scratch.tokenizer import Tokenizer, clip_tokenizer, tokenize


@pytest.mark.parametrize("bad", [-1, -49408, True, False, 1.0, "3306", None])
def test_decode_rejects_ids_that_are_not_vocabulary_indices(bad):
    tok = clip_tokenizer()
    # -1 used to decode as <|endoftext|> (Python's negative indexing), True as id 1.
    with pytest.raises(ValueError, match=f"id {bad!r} "):
        tok.decode([3306, bad, 1002])


def test_decode_names_the_first_bad_id_and_says_what_ids_are_allowed():
    tok = Tokenizer([("c", "a")])
    with pytest.raises(ValueError, match=r"id -3 .*0 to 514"):
        tok.decode([1, -3, 999])


def test_decode_accepts_numpy_and_tensor_integers():
    tok = clip_tokenizer()
    ids = [3306, 1002]
    assert tok.decode(np.array(ids)) == tok.decode(torch.tensor(ids)) == "hello world "
    assert tok.decode([np.int64(3306), torch.tensor(1002)]) == "hello world "


def test_decode_rejects_a_bool_tensor():
    with pytest.raises(ValueError, match="True"):
        clip_tokenizer().decode(torch.tensor([True, False]))


@pytest.mark.parametrize("data", [b"a photo of a cat", bytearray(b"a cat")])
def test_tokenize_bytes_says_decode_it_first(data):
    with pytest.raises(TypeError, match="got bytes.*decode it to str first"):
        tokenize(data)
    with pytest.raises(TypeError, match="position 1.*decode it to str first"):
        tokenize(["a dog", data])
    with pytest.raises(TypeError, match="decode it to str first"):
        clip_tokenizer().encode(data)
