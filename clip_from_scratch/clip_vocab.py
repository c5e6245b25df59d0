"""Where CLIP's vocabulary file comes from: an installed package, the course cache, or a download.

The tokenizer needs OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (its 48,894
merges). Finding it is file plumbing, not tokenization, so it lives here,
beside the other downloads::

    >>> clip_vocab_path().name
    'bpe_simple_vocab_16e6.txt.gz'
    >>> load_clip_merges()[:2]
    [('i', 'n'), ('t', 'h')]
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
# The sha256 pins the bytes; the file has not changed since CLIP's release.
VOCAB_URL = f"https://raw.githubusercontent.com/openai/CLIP/main/clip/{VOCAB_FILE}"
VOCAB_ENV_VAR = "CLIP_VOCAB"
VOCAB_PACKAGES = ("clip", "open_clip")  # both ship the file beside their code
NUM_CLIP_MERGES = 49152 - 256 - 2  # 48,894: lines 2..48,895 of the file


def _packaged_vocab(packages=VOCAB_PACKAGES) -> Path | None:
    """The vocabulary inside an installed clip / open_clip, found without importing them."""
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / VOCAB_FILE
            if path.is_file():
                return path
    return None


def clip_vocab_path(vocab_path=None, *, packages=VOCAB_PACKAGES, url: str = VOCAB_URL,
                    cache_dir=None) -> Path:
    """Where CLIP's ``bpe_simple_vocab_16e6.txt.gz`` is, downloading it once if needed.

    Looks, in order, at: ``vocab_path``; ``$CLIP_VOCAB``; an installed ``clip``
    or ``open_clip`` package; the course cache (``data.root.data_root()``);
    and finally downloads it there from ``url``, checking its sha256.
    """
    explicit = vocab_path or os.environ.get(VOCAB_ENV_VAR)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            source = "vocab_path" if vocab_path else f"${VOCAB_ENV_VAR}"
            raise FileNotFoundError(f"{source} points at {path}, which does not exist. Put CLIP's "
                                    f"{VOCAB_FILE} there, or unset it to use the default.")
        return path
    found = _packaged_vocab(packages)
    if found is not None:
        return found
    from .download import ChecksumError, DownloadError, download  # only off the happy path
    if cache_dir is None:
        from .data.root import data_root
        cache_dir = data_root()
    target = Path(cache_dir) / VOCAB_FILE
    try:
        return download(url, target, sha256=VOCAB_SHA256, progress=False)
    except ChecksumError:
        raise  # its message already says what to do
    except DownloadError as err:
        raise DownloadError(
            f"CLIP's vocabulary file {VOCAB_FILE} is not installed and could not be downloaded "
            f"({err}).\nTo fix: copy the file to {target.resolve()} "
            f"(or set {VOCAB_ENV_VAR}=/path/to/{VOCAB_FILE}, or `pip install open_clip_torch`, "
            f"which ships it). Its sha256 is {VOCAB_SHA256}.") from err


def load_clip_merges(vocab_path=None) -> list[tuple[str, str]]:
    """CLIP's 48,894 merges, in rank order, read from the released file."""
    lines = gzip.open(clip_vocab_path(vocab_path)).read().decode("utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1:NUM_CLIP_MERGES + 1]]  # line 0: "#version"


