"""The seed's example (openai/clip's README), run unchanged but for its import line, against loopback files.

Everything the seed touches is faked at the network edge only: a loopback
server holds a small random model in OpenAI's TorchScript format under a
released name (with its own sha256) and a CIFAR-100 archive in the real
format; ``~`` points at a temporary folder. :func:`run_seed_example` returns
what the seed printed and what openai/clip's own model says for the same file
and image, so a test compares the two.
"""
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clip_from_scratch import openai_weights
from clip_from_scratch.data import cifar
from clip_from_scratch.download import file_digest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # clip-anytorch imports the deprecated pkg_resources
    import clip as openai_clip

SEED_EXAMPLE = '''
import os
import clip
import torch
from torchvision.datasets import CIFAR100

# Load the model
device = "cuda" if torch.cuda.is_available() else "cpu"
model, preprocess = clip.load('ViT-B/32', device)

# dataset 下载
cifar100 = CIFAR100(root=os.path.expanduser("~/.cache"), download=True, train=False)

# Prepare the inputs
image, class_id = cifar100[3637]
image_input = preprocess(image).unsqueeze(0).to(device)
text_inputs = torch.cat([clip.tokenize(f"a photo of a {c}") for c in cifar100.classes]).to(device)

# Calculate features
with torch.no_grad():
    image_features = model.encode_image(image_input)
    text_features = model.encode_text(text_inputs)

# Pick the top 5 most similar labels for the image
image_features /= image_features.norm(dim=-1, keepdim=True)
text_features /= text_features.norm(dim=-1, keepdim=True)
similarity = (100.0 * image_features @ text_features.T).softmax(dim=-1)
values, indices = similarity[0].topk(5)

# Print the result
print("\\nTop predictions:\\n")
for value, index in zip(values, indices):
    print(f"{cifar100.classes[index]:>16s}: {100 * value.item():.2f}%")
'''


def run_seed_example(weights, name: str, seed_image: np.ndarray, *, fake_cifar, openai_reference, monkeypatch,
                     tmp_path, capsys) -> tuple[list[str], list[str]]:
    """Serve ``weights`` as the release ``name`` and a CIFAR-100 whose test image 3637 (the seed's) is
    ``seed_image`` (uint8 [32, 32, 3]); run the seed with ``import clip_from_scratch as clip``.

    Returns ``(printed, want)``: the seed's non-empty output lines, and the "Top predictions:" line plus
    openai/clip's top-5 lines for the same file and image.
    """
    served = tmp_path / "served"
    sha256 = file_digest(weights)
    file_name = openai_weights._MODELS[name].rsplit("/", 1)[1]
    (served / sha256).mkdir(parents=True)
    (served / sha256 / file_name).write_bytes(weights.read_bytes())
    images = np.zeros((3640, 32, 32, 3), dtype=np.uint8)
    images[3637] = seed_image
    labels = [i % 100 for i in range(3640)]
    base = fake_cifar("cifar100", images[:2], [0, 1], images, labels, served=served).base
    monkeypatch.setitem(openai_weights._MODELS, name, f"{base}/{sha256}/{file_name}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    code = SEED_EXAMPLE.replace("import clip\n", "import clip_from_scratch as clip\n")
    code = code.replace("clip.load('ViT-B/32', device)", f"clip.load('{name}', device)")
    assert code.count("clip_from_scratch") == 1 and code.count(f"'{name}'") == 1, "only these lines change"
    exec(compile(code, "seed_example", "exec"), {"__name__": "seed"})
    printed = [line for line in capsys.readouterr().out.splitlines() if line.strip()]

    reference = openai_reference(weights)
    _, preprocess = openai_clip.load(str(weights), device="cpu", jit=False)
    image = preprocess(Image.fromarray(images[3637])).unsqueeze(0)
    names = list(cifar.CIFAR100_CLASSES)
    with torch.no_grad():
        image_features = F.normalize(reference.encode_image(image), dim=-1)
        text_features = F.normalize(reference.encode_text(
            torch.cat([openai_clip.tokenize(f"a photo of a {c}") for c in names])), dim=-1)
    values, indices = (100.0 * image_features @ text_features.T).softmax(dim=-1)[0].topk(5)
    top5 = [f"{names[i]:>16s}: {100 * v:.2f}%" for v, i in zip(values.tolist(), indices.tolist())]
    want = ["Top predictions:"] + top5
    return printed, want
