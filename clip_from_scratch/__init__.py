"""CLIP from scratch: every part of OpenAI's CLIP, built to be read.

The package mirrors openai/clip's public face, so code written for it runs
unchanged::

    import clip_from_scratch as clip
    model, preprocess = clip.load("ViT-B/32", device="cpu")
    text = clip.tokenize(["a photo of a cat", "a photo of a dog"])

Names are imported lazily: ``import clip_from_scratch`` stays fast, and a
notebook that only needs the tokenizer never loads the model code.
"""
from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "tokenize": "tokenizer",
    "load": "openai_weights",
    "available_models": "openai_weights",
    "CLIP": "model",
    "CLIPConfig": "model",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'clip_from_scratch' has no attribute {name!r}")


def __dir__():
    return __all__
