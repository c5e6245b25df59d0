"""Chapter 07's exercise checks: worked solutions pass, typical mistakes get their hint, nothing raises."""
import pytest
from exercise_contract import assert_mistake_gets_hint, assert_not_attempted

from clip_from_scratch.exercises import ch07
from clip_from_scratch.model import NON_PARAMETER_KEYS


def infer_vision_config(state_dict):
    width, _, patch, _ = state_dict["visual.conv1.weight"].shape
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    layers = len({n.split(".")[3] for n in state_dict if n.startswith("visual.transformer.resblocks.")})
    return dict(vision_width=width, vision_patch_size=patch, vision_layers=layers, image_resolution=grid * patch)


def infer_text_config(state_dict):
    vocab_size, width = state_dict["token_embedding.weight"].shape
    layers = len({n.split(".")[2] for n in state_dict if n.startswith("transformer.resblocks.")})
    return dict(transformer_width=width, transformer_layers=layers, transformer_heads=width // 64,
                context_length=state_dict["positional_embedding"].shape[0], vocab_size=vocab_size,
                embed_dim=state_dict["text_projection"].shape[1])


SOLUTIONS = [
    (ch07.check_vision_config, infer_vision_config),
    (ch07.check_text_config, infer_text_config),
    (ch07.check_count_parameters, lambda sd: sum(t.numel() for n, t in sd.items() if n not in NON_PARAMETER_KEYS)),
]


@pytest.mark.parametrize("check, answer", SOLUTIONS)
def test_worked_solution_passes(check, answer, capsys):
    assert check(answer) is True
    assert capsys.readouterr().out.startswith("[OK]")


@pytest.mark.parametrize("check, mistake, hint", [
    (ch07.check_vision_config, lambda sd: dict(infer_vision_config(sd), vision_patch_size=3),
     "[width, 3, patch, patch]"),
    (ch07.check_vision_config, lambda sd: [1, 2], "return a dict"),
    (ch07.check_text_config, lambda sd: dict(infer_text_config(sd), transformer_layers=len(
        {n.split(".")[-3] for n in sd if "resblocks." in n and n.endswith("ln_1.weight")}) * 2), "vision tower"),
    (ch07.check_text_config, lambda sd: dict(infer_text_config(sd), transformer_heads=8), "width // 64"),
    (ch07.check_count_parameters, lambda sd: sum(t.numel() for t in sd.values()), "off by 3"),
    (ch07.check_count_parameters, lambda sd: len(sd), "number of tensors"),
])
def test_typical_mistake_gets_its_hint(check, mistake, hint, capsys):
    assert_mistake_gets_hint(check, mistake, hint, capsys)


@pytest.mark.parametrize("check", [check for check, _ in SOLUTIONS])
def test_placeholder_says_todo(check, capsys):
    assert_not_attempted(check, capsys)
