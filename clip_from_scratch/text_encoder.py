"""CLIP's text encoder: token ids in, one caption vector out.

    tokens [batch, length]
      -> token_embedding + positional_embedding   [batch, length, width]
      -> causal Transformer                        (token i sees tokens 0..i)
      -> ln_final
      -> the row at the end-of-text token          [batch, width]
      -> @ text_projection                         [batch, embed_dim]

The end-of-text token has the largest id in the vocabulary, so ``argmax``
over the ids finds it. Because attention is causal, the end-of-text row has
seen the whole caption and nothing after it: it is the caption's summary.

That also means padding after the end-of-text never changes the result, so
``encode_text`` cuts a batch to its longest caption before the transformer
(a 12-token caption padded to 77 costs 12 tokens of work, not 77)::

    >>> encoder = TextEncoder(context_length=77, vocab_size=100, width=64, heads=1, layers=2, embed_dim=32)
    >>> tokens = torch.tensor([[98, 5, 6, 99, 0, 0], [98, 7, 99, 0, 0, 0]])  # sot=98, eot=99
    >>> encoder.encode_text(tokens).shape
    torch.Size([2, 32])
    >>> torch.allclose(encoder.encode_text(tokens), encoder.encode_text(tokens[:, :4]))
    True

Parameter names are those of OpenAI's checkpoints, whose text tensors sit at
the top level (``token_embedding.weight``, ``transformer.resblocks.0...``):
``CLIP`` holds these same parts on itself, and both run :func:`encode_tokens`.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import LayerNorm, Transformer


class TextEncoder(nn.Module):
    def __init__(self, context_length: int, vocab_size: int, width: int, heads: int,
                 layers: int, embed_dim: int, activation: str = "quick_gelu"):
        super().__init__()
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, causal=True, activation=activation)
        self.ln_final = LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def encode_text(self, text: torch.Tensor, eot_index: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids ``[batch, length]`` (``length <= context_length``) -> features ``[batch, embed_dim]``.

        Features are not normalised (as in openai/clip). A caller that already
        knows where each caption ends (the training loop) passes ``eot_index``
        ``[batch]`` and ids already cut to the longest caption: the checks, and
        the wait for the GPU they cost, are then skipped.
        """
        return encode_tokens(self, text, eot_index)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.encode_text(text)


def encode_tokens(tower: nn.Module, text: torch.Tensor, eot_index: torch.Tensor | None = None) -> torch.Tensor:
    """The text tower's computation, on any module that holds its parts.

    ``tower`` has ``token_embedding``, ``positional_embedding``,
    ``transformer``, ``ln_final``, ``text_projection``, ``context_length`` and
    ``vocab_size``: a :class:`TextEncoder`, or a ``CLIP`` model, which holds
    the same parts under the same names (OpenAI's checkpoint names).
    """
    if eot_index is None:
        eot_index, longest = check_tokens(text, tower.context_length, tower.vocab_size)
        text = text[:, :longest]  # exact: causal attention never looks past the end-of-text token
    dtype = tower.text_projection.dtype
    x = tower.token_embedding(text).to(dtype)                          # [batch, length, width]
    x = x + tower.positional_embedding[:text.shape[1]].to(dtype)
    x = tower.transformer(x)
    x = tower.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot_index]       # [batch, width]
    return x @ tower.text_projection                                   # [batch, embed_dim]


def check_tokens(text: torch.Tensor, context_length: int, vocab_size: int) -> tuple[torch.Tensor, int]:
    """Validate ids; return the end-of-text positions and the longest caption's length."""
    if not isinstance(text, torch.Tensor) or text.dtype not in (torch.int64, torch.int32):
        got = text.dtype if isinstance(text, torch.Tensor) else type(text).__name__
        raise TypeError(f"encode_text expects integer token ids (a LongTensor from tokenize()), got {got}")
    if text.ndim != 2:
        raise ValueError(f"encode_text expects token ids of shape [batch, length], got {tuple(text.shape)}; "
                         f"tokenize() a list of captions to get one")
    if text.shape[1] > context_length:
        raise ValueError(f"captions have {text.shape[1]} tokens but this model's context length is "
                         f"{context_length}; tokenize with context_length={context_length}")
    if text.numel() == 0:
        raise ValueError("encode_text got an empty batch of token ids")
    eot_index = text.argmax(dim=-1)  # [batch] the end-of-text token has the largest id
    # One host sync for all three numbers.
    longest, low, high = torch.stack([eot_index.max() + 1, text.min().long(), text.max().long()]).tolist()
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size}) for this model's vocabulary, "
                         f"got ids from {low} to {high}: were the captions tokenized with another "
                         f"tokenizer than the one this model was trained with?")
    return eot_index, longest
