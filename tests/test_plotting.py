"""The course's diagrams draw what their captions say: positives on the diagonal, the winning class, the merges."""
import doctest

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clip_from_scratch import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def highlighted_texts(figure):
    """Texts drawn on a cell filled with the 'positive' colour."""
    ax = figure.axes[0]
    boxes = [p for p in ax.patches if to_hex(p.get_facecolor()) == plotting.POSITIVE_COLOUR]
    texts = []
    for text in ax.texts:
        x, y = text.get_position()
        if any(p.get_x() <= x <= p.get_x() + p.get_width() and p.get_y() <= y <= p.get_y() + p.get_height()
               for p in boxes):
            texts.append(text.get_text())
    return texts


def test_doctests_pass():
    assert doctest.testmod(plotting).failed == 0


def test_training_picture_highlights_exactly_the_diagonal():
    figure = plotting.draw_training(["a", "b", "c", "d", "e"])
    assert sorted(highlighted_texts(figure)) == [f"I{i}·T{i}" for i in range(1, 6)]
    assert any("5 positives" in t.get_text() and "20 negatives" in t.get_text() for t in figure.axes[0].texts)


def test_zero_shot_picture_highlights_the_most_similar_class():
    figure = plotting.draw_zero_shot(["plane", "car", "dog"], similarities=[0.2, 0.5, 0.1])
    assert highlighted_texts(figure) == ["I1·T2\n0.50"]
    assert any(t.get_text() == 'prediction: "a photo of a car."' for t in figure.axes[0].texts)


def test_merge_positions_follow_each_merge():
    assert plotting._merged_positions(("a", "a", "a", "b</w>"), ("aa", "a", "b</w>")) == [0]
    assert plotting._merged_positions(("c", "a", "t", "c", "a", "t</w>"), ("ca", "t", "ca", "t</w>")) == [0, 2]


def test_bpe_diagram_highlights_the_new_symbols_of_each_row():
    stages = [("c", "a", "t", "c", "a", "t</w>"), ("ca", "t", "ca", "t</w>"), ("ca", "t", "cat</w>")]
    figure = plotting.draw_bpe_merges(stages, ranks=[4, 9])
    assert sorted(highlighted_texts(figure)) == ["ca", "ca", "cat</w>"]
    assert any("(rank 9)" in t.get_text() for t in figure.axes[0].texts)


def test_patch_pipeline_counts_the_tokens():
    figure = plotting.draw_patch_pipeline(np.random.default_rng(0).integers(0, 255, (224, 224, 3)), 32, width=768)
    texts = " ".join(t.get_text() for t in figure.axes[0].texts)
    assert "7×7 patches of 32 px" in texts and "50 tokens of width 768" in texts and "3,072 numbers" in texts
