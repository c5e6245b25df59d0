"""`clip-from-scratch export`: a run (or any weights) out to transformers, openai/clip and safetensors.

The exported folder must load in the other library and give the same
features (within 1e-5, relative) and, for ``hf``, the same token ids from
``CLIPTokenizer`` as the run's own BPE.
"""
import json
import warnings

import pytest
import torch

from clip_from_scratch.cli import main
from clip_from_scratch.export import ExportError, Source, export, from_checkpoint
from clip_from_scratch.model import CLIP, CLIPConfig
from clip_from_scratch.openai_weights import load

CAPTIONS = ["a red circle.", "A BIG blue square, top-left!", "the green triangle's here; isn't it?",
            "two (2) yellow stars... 100%", "  spaced   out\ttext  ", "a red circle!!", "café au lait"]


def relative_error(got, expected):
    return (got - expected).abs().max().item() / expected.abs().max().item()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A three-step shapes run: its checkpoint, its own BPE, its metrics.json."""
    out = tmp_path_factory.mktemp("run") / "shapes"
    assert main(["pretrain", "--out", str(out), "--steps", "3", "--batch-size", "16", "--num-images", "64",
                 "--no-progress", "--device", "cpu"]) == 0
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def hf_export(run, tmp_path_factory):
    pytest.importorskip("transformers", reason="transformers is not installed (the references extra)")
    out = tmp_path_factory.mktemp("export") / "hf"
    assert main(["export", "--checkpoint", str(run), "--format", "hf", "--out", str(out)]) == 0
    return out


def test_transformers_loads_the_export_with_the_same_features(run, hf_export):
    import transformers
    source = from_checkpoint(run)
    ours, tokenizer = source.model, source.tokenizer
    hf = transformers.CLIPModel.from_pretrained(hf_export).eval()
    side = ours.config.image_resolution
    pixels = torch.randn(4, 3, side, side)
    ids = tokenizer.tokenize(CAPTIONS, context_length=ours.config.context_length, truncate=True)
    with torch.no_grad():
        hf_image = hf.get_image_features(pixel_values=pixels)
        hf_text = hf.get_text_features(input_ids=ids)
        pairs = [(ours.encode_image(pixels), getattr(hf_image, "pooler_output", hf_image)),
                 (ours.encode_text(ids), getattr(hf_text, "pooler_output", hf_text))]
    for got, expected in pairs:
        assert relative_error(got, expected) <= 1e-5


def test_clip_tokenizer_gives_the_runs_own_ids(run, hf_export):
    import transformers
    source = from_checkpoint(run)
    hf_tokenizer = transformers.CLIPTokenizer.from_pretrained(hf_export)
    assert hf_tokenizer.bos_token_id == source.tokenizer.sot_token
    assert hf_tokenizer.eos_token_id == source.tokenizer.eot_token
    for caption in CAPTIONS:
        ours = [source.tokenizer.sot_token] + source.tokenizer.encode(caption) + [source.tokenizer.eot_token]
        assert hf_tokenizer(caption)["input_ids"] == ours, caption


def test_padded_hf_batches_give_the_same_features_as_ours(run, hf_export):
    import transformers
    source = from_checkpoint(run)
    hf = transformers.CLIPModel.from_pretrained(hf_export).eval()
    hf_tokenizer = transformers.CLIPTokenizer.from_pretrained(hf_export)
    batch = hf_tokenizer(CAPTIONS[:3], padding="max_length", max_length=source.model.config.context_length,
                         return_tensors="pt")   # HF pads with end-of-text, ours with 0: the features agree
    ours_ids = source.tokenizer.tokenize(CAPTIONS[:3], context_length=source.model.config.context_length)
    with torch.no_grad():
        expected = hf.get_text_features(**batch)
        got = source.model.encode_text(ours_ids)
    assert relative_error(got, getattr(expected, "pooler_output", expected)) <= 1e-5


def test_the_model_card_says_what_how_long_how_well_and_how(hf_export, run):
    card = (hf_export / "README.md").read_text()
    metrics = json.loads((run.parent / "metrics.json").read_text())
    assert "shapes" in card and "stand-in for COCO" in card
    assert "3 optimisation steps of 3" in card
    assert f"| zeroshot_top1 | {metrics['zeroshot_top1']:.2f} |" in card
    command = next(line for line in card.splitlines() if "clip-from-scratch pretrain" in line)
    assert all(f" {option} " in command + " " for option in ("--data shapes", "--steps 3", "--batch-size 16"))
    assert f"clip-from-scratch export --checkpoint {run} --format hf" in card


def test_the_cards_pretrain_command_is_one_the_cli_accepts(run):
    import shlex

    from clip_from_scratch.cli import build_parser
    from clip_from_scratch.export import pretrain_command
    from clip_from_scratch.train_config import TrainConfig
    train_config = from_checkpoint(run).run["train_config"]
    args = build_parser().parse_args(shlex.split(pretrain_command(train_config))[1:])   # every flag exists
    given = {k: v for k, v in vars(args).items() if k in train_config and v is not None}
    assert given and all(train_config[k] == v for k, v in given.items()), given
    assert set(TrainConfig().to_dict()) >= set(given)


def test_openai_format_loads_in_openai_clips_build_model(tmp_path, monkeypatch):
    config = CLIPConfig.preset("tiny", vocab_size=400, context_length=20)   # heads = width // 64, as openai infers
    torch.manual_seed(0)
    model = CLIP(config).eval()
    export(Source(model, None, "tiny"), tmp_path, "openai")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import clip.model
    # build_model halves the matrices (as released); kept float32 here, the comparison is of the computation
    monkeypatch.setattr(clip.model, "convert_weights", lambda model: None)
    reference = clip.model.build_model(torch.load(tmp_path / "model.pt", weights_only=True)).float().eval()
    pixels = torch.randn(2, 3, 64, 64)
    ids = torch.tensor([[398, 5, 6, 399] + [0] * 16, [398, 7, 8, 9, 10, 399] + [0] * 14])
    with torch.no_grad():
        assert relative_error(model.encode_image(pixels), reference.encode_image(pixels)) <= 1e-5
        assert relative_error(model.encode_text(ids), reference.encode_text(ids)) <= 1e-5


def test_openai_format_refuses_heads_that_build_model_would_get_wrong(run, tmp_path, capsys):
    # The shapes run's towers are 64 wide with 2 heads; build_model would infer 64 // 64 = 1.
    assert main(["export", "--checkpoint", str(run), "--format", "openai", "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "infers" in error and "--format hf or --format safetensors" in error and error.count("\n") == 1


def test_safetensors_format_round_trips_through_load_with_its_heads(run, tmp_path):
    assert main(["export", "--checkpoint", str(run), "--format", "safetensors", "--out", str(tmp_path)]) == 0
    source = from_checkpoint(run)
    back, _ = load(str(tmp_path / "model.safetensors"), device="cpu")
    assert back.config == source.model.config          # heads too: kept in the file's metadata
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()


def test_a_resnet_to_hf_is_one_line_naming_the_formats_that_work(tmp_path, capsys, openai_checkpoint):
    path = openai_checkpoint(CLIPConfig.preset("tiny-resnet", vocab_size=400), fmt="state_dict")
    assert main(["export", "--weights", str(path), "--format", "hf", "--out", str(tmp_path / "r")]) == 2
    error = capsys.readouterr().err
    assert "no CLIP ResNet" in error and "--format openai" in error and "--format safetensors" in error
    assert error.count("\n") == 1 and not (tmp_path / "r").exists()


def test_a_resnet_exports_as_safetensors_and_loads_back(tmp_path, openai_checkpoint):
    path = openai_checkpoint(CLIPConfig.preset("tiny-resnet", vocab_size=400), fmt="state_dict")
    assert main(["export", "--weights", str(path), "--format", "safetensors", "--out", str(tmp_path)]) == 0
    original, _ = load(str(path), device="cpu")
    back, _ = load(str(tmp_path / "model.safetensors"), device="cpu")
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(original.encode_image(pixels), back.encode_image(pixels))


def test_clips_own_vocabulary_exports_with_openais_ids(tmp_path):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (the references extra)")
    from clip_from_scratch.tokenizer import clip_tokenizer
    model = CLIP(CLIPConfig.preset("tiny", vocab_size=49408)).eval()
    export(Source(model, clip_tokenizer(), "tiny"), tmp_path, "hf")
    hf_tokenizer = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    for caption in CAPTIONS:
        assert hf_tokenizer(caption)["input_ids"] == clip_tokenizer().tokenize(caption)[0][
            : len(clip_tokenizer().encode(caption)) + 2].tolist(), caption


def test_a_folder_that_is_not_empty_is_left_alone(run, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export(from_checkpoint(run), tmp_path, "safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_the_hf_export_loads_back_into_our_model_unchanged(run, hf_export):
    source = from_checkpoint(run)
    back, _ = load(str(hf_export), device="cpu")
    assert back.config == source.model.config                    # heads from config.json, not width // 64
    for name, tensor in source.model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_a_gelu_model_goes_to_hf_and_not_to_openai(tmp_path, capsys):
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (the references extra)")
    torch.manual_seed(0)
    model = CLIP(CLIPConfig.preset("tiny", vocab_size=400, context_length=20, activation="gelu")).eval()
    with pytest.raises(ExportError, match="always computes QuickGELU"):
        export(Source(model, None, "tiny"), tmp_path / "openai", "openai")
    export(Source(model, None, "tiny"), tmp_path / "hf", "hf")
    hf = transformers.CLIPModel.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([[398, 5, 6, 399] + [0] * 16])
    with torch.no_grad():
        expected = hf.get_text_features(input_ids=ids)
        assert relative_error(model.encode_text(ids), getattr(expected, "pooler_output", expected)) <= 1e-5


def test_an_hf_export_evaluates_with_weights_and_its_own_bpe(run, hf_export, tmp_path, capsys):
    from clip_from_scratch.convert import read_hf_tokenizer
    assert read_hf_tokenizer(hf_export).encoder == from_checkpoint(run).tokenizer.encoder
    outputs = {}
    for option, source in (("--checkpoint", run), ("--weights", hf_export)):
        output = tmp_path / f"{option.strip('-')}.json"
        assert main(["zeroshot", option, str(source), "--dataset", "shapes", "--limit", "60", "--templates", "single",
                     "--device", "cpu", "--output", str(output)]) == 0, capsys.readouterr().err
        outputs[option] = json.loads(output.read_text())
    assert outputs["--weights"]["top1"] == outputs["--checkpoint"]["top1"]
