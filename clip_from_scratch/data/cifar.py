"""CIFAR-10 and CIFAR-100 through torchvision, with readable class names.

CLIP's zero-shot test sets. torchvision knows the files and their md5
digests; this module adds what a course needs around it::

    test = cifar_dataset("cifar100", train=False, transform=preprocess)
    classnames(test)[:3]        # ['apple', 'aquarium fish', 'baby']

* the archive is fetched with the course's downloader (resumable, checked
  against torchvision's md5, atomic), and torchvision then verifies and
  extracts it: the integrity check always stays on;
* when the download fails (no internet, or the Toronto server being slow,
  which happens), :class:`CIFARUnavailable` says so and says where to put
  ``cifar-100-python.tar.gz`` by hand;
* class names come with spaces, not underscores (``aquarium_fish`` ->
  ``aquarium fish``), ready for prompts.

:class:`RandomImages` is NOT CIFAR: random pixels under CIFAR's class
names, a stand-in so offline notebooks can run the same code. Accuracy on it
is chance. (The tests' tiny archives in CIFAR's real format are written by
``tests/fixtures/cifar_fixtures.py``.)
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100

from ..download import DownloadError, download
from ..errors import CourseError
from .root import data_root

DATASETS = {"cifar10": CIFAR10, "cifar100": CIFAR100}

#: The class names in label order, as torchvision reads them from the files' ``meta``.
#: Kept here too so offline code (and a model's classifier) needs no download.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm")
CIFAR_CLASSNAMES = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}


class CIFARUnavailable(CourseError, RuntimeError):
    """CIFAR is not on disk and could not be downloaded."""


def dataset_class(name: str):
    """``"cifar100"`` -> ``torchvision.datasets.CIFAR100`` (case and dashes ignored)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {sorted(DATASETS)}")
    return DATASETS[key]


def readable(name: str) -> str:
    """``'aquarium_fish'`` -> ``'aquarium fish'``: prompts read like English."""
    return name.replace("_", " ")


def classnames(dataset_or_name) -> list[str]:
    """Readable class names of a CIFAR dataset object, or of ``"cifar10"``/``"cifar100"``.

    >>> classnames("cifar100")[1]
    'aquarium fish'
    """
    if isinstance(dataset_or_name, str):
        names = CIFAR_CLASSNAMES[dataset_class(dataset_or_name).__name__.lower()]
    else:
        names = dataset_or_name.classes
    return [readable(name) for name in names]


def cifar_dataset(name: str = "cifar100", train: bool = False, root: str | os.PathLike | None = None,
                  transform=None, download_missing: bool = True, url: str | None = None,
                  progress: bool = True):
    """The torchvision CIFAR dataset, fetched into ``root`` (default ``data.root.data_root()``) if needed.

    Items are ``(PIL image or transform(image), label)``. ``url`` overrides
    the download address (a mirror, or a local test server); the md5 that
    must match is always torchvision's.
    """
    cls = dataset_class(name)
    root = Path(root) if root is not None else data_root()
    archive = root / cls.filename
    try:
        return cls(str(root), train=train, transform=transform, download=False)
    except RuntimeError:
        pass  # not extracted yet (or damaged): fetch / extract below
    if not download_missing and not archive.exists():
        raise CIFARUnavailable(_manual_hint(cls, root, "it is not on disk and downloading is off"))
    try:
        download(url or cls.url, archive, md5=cls.tgz_md5, progress=progress)
    except DownloadError as err:
        raise CIFARUnavailable(_manual_hint(cls, root, f"the download failed ({err})")) from err
    # torchvision checks the archive's md5 again, extracts it, and checks every extracted file.
    return cls(str(root), train=train, transform=transform, download=True)


def _manual_hint(cls, root: Path, why: str) -> str:
    return (f"{cls.__name__} is not available: {why}.\n"
            f"The CIFAR server ({cls.url}) is slow or unreachable at times. Either run the same "
            f"command again (a partial download resumes), or download {cls.filename} elsewhere "
            f"(md5 {cls.tgz_md5}) and put it at {(root / cls.filename).resolve()}; it is then "
            f"verified and extracted on the next run. Set CLIP_DATA to use another data folder.")


# --- an offline stand-in: NOT CIFAR --------------------------------------------------------

class RandomImages(torch.utils.data.Dataset):
    """A stand-in, NOT CIFAR: random 32x32 images and random labels under CIFAR's class names.

    For running code written for CIFAR where the data cannot be downloaded
    (notebook 07 offline): it has the face the seed example uses
    (``classes``, ``data[i] -> (PIL image, label)``), so the code runs, and
    nothing more. Its pixels are noise and its labels random: any accuracy
    measured on it is chance, and says nothing about a model.

    >>> stand_in = RandomImages("cifar10", size=4)
    >>> image, label = stand_in[0]
    >>> image.size, stand_in.classes[label] in CIFAR10_CLASSES
    ((32, 32), True)
    """

    def __init__(self, name: str = "cifar100", size: int = 10000, seed: int = 0, transform=None):
        self.classes = list(CIFAR_CLASSNAMES[dataset_class(name).__name__.lower()])
        self.size, self.seed, self.transform = size, seed, transform

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} images")
        rng = np.random.default_rng([self.seed, index])   # image i is the same whatever came before
        image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        label = int(rng.integers(len(self.classes)))
        return (self.transform(image) if self.transform else image), label
