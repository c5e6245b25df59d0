"""Time to tokenize one unbroken word (``truncate=True``): ours next to openai/clip's loop.

    python3 benchmarks/bench_long_words.py                 # 1,000 .. 1,000,000 letters
    python3 benchmarks/bench_long_words.py --openai-up-to 30000

openai/clip rescans the whole word after every merge (quadratic: a 30,000-letter
word takes seconds); ``Tokenizer.bpe`` keeps the candidate pairs in a heap over
a linked list of symbols (n log n). Both give the same ids (checked here for
the lengths both run). Each length uses a fresh tokenizer, so no cache helps.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from clip_from_scratch.tokenizer import Tokenizer, clip_tokenizer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1_000, 10_000, 30_000, 1_000_000])
    parser.add_argument("--openai-up-to", type=int, default=10_000,
                        help="longest word to give openai/clip (it is quadratic)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip  # openai/clip, as packaged by clip-anytorch
    merges = clip_tokenizer().merges
    rng = random.Random(0)
    print(f"{'letters':>9} {'word':>11} {'ours s':>8} {'openai/clip s':>14}")
    for n in args.lengths:
        for name, word in [("aaa...", "a" * n),
                           ("random a-z", "".join(rng.choice("abcdefghijklmnopqrstuvwxyz")
                                                  for _ in range(n)))]:
            fresh = Tokenizer(merges)  # an empty cache
            start = time.perf_counter()
            ours = fresh.tokenize(word, truncate=True)
            t_ours = time.perf_counter() - start
            t_theirs = "-"
            if n <= args.openai_up_to:
                clip.clip._tokenizer = clip.simple_tokenizer.SimpleTokenizer()  # an empty cache
                start = time.perf_counter()
                theirs = clip.tokenize(word, truncate=True)
                t_theirs = f"{time.perf_counter() - start:.2f}"
                assert torch.equal(ours, theirs), "ids differ from openai/clip"
            print(f"{n:>9} {name:>11} {t_ours:>8.2f} {t_theirs:>14}")


if __name__ == "__main__":
    main()
