"""Tiny CIFAR archives in CIFAR's real on-disk format, for the tests.

No test machine can download CIFAR, so the tests write archives laid out
exactly like the real ones (pickled batches in a tar.gz) and serve them over
loopback HTTP, torchvision's integrity check still on: the ``fake_cifar``
fixture (tests/conftest.py) makes torchvision expect the digests
:func:`write_cifar_archive` returns. Data written this way is NOT CIFAR, and
accuracy on it means nothing.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR100

from clip_from_scratch.data.cifar import CIFAR_CLASSNAMES, dataset_class


def write_cifar_archive(path: str | os.PathLike, name: str, train_images: np.ndarray,
                        train_labels, test_images: np.ndarray, test_labels,
                        classes=None) -> dict[str, str]:
    """Write a ``.tar.gz`` laid out exactly like the real CIFAR archive; return md5 per member.

    Images are uint8 ``[N, 32, 32, 3]``. CIFAR-10 gets ``data_batch_1..5``
    (the training images split across them), ``test_batch`` and
    ``batches.meta``; CIFAR-100 gets ``train``, ``test`` and ``meta``, with
    coarse labels set to 0. The returned md5s are what a test must give
    torchvision's integrity check, since these are not the real files.
    """
    cls = dataset_class(name)
    is_100 = cls is CIFAR100
    classes = list(classes if classes is not None else CIFAR_CLASSNAMES["cifar100" if is_100 else "cifar10"])

    def batch(images, labels, label):
        images = np.asarray(images, dtype=np.uint8)
        # CIFAR rows are channel-major: 1024 red values, then green, then blue.
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32)
        entry = {"batch_label": label, "data": rows, "filenames": [f"{i}.png" for i in range(len(images))]}
        if is_100:
            entry.update(fine_labels=[int(x) for x in labels], coarse_labels=[0] * len(images))
        else:
            entry["labels"] = [int(x) for x in labels]
        return entry

    members = {}
    if is_100:
        members["train"] = batch(train_images, train_labels, "training batch 1 of 1")
        members["test"] = batch(test_images, test_labels, "testing batch 1 of 1")
        members["meta"] = {"fine_label_names": classes, "coarse_label_names": ["all"]}
    else:
        splits = np.array_split(np.arange(len(train_images)), 5)
        for i, index in enumerate(splits, start=1):
            members[f"data_batch_{i}"] = batch(np.asarray(train_images)[index],
                                               np.asarray(train_labels)[index], f"training batch {i} of 5")
        members["test_batch"] = batch(test_images, test_labels, "testing batch 1 of 1")
        members["batches.meta"] = {"label_names": classes, "num_cases_per_batch": 10000, "num_vis": 3072}

    digests = {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for member, content in members.items():
            data = pickle.dumps(content, protocol=2)
            digests[member] = hashlib.md5(data).hexdigest()
            info = tarfile.TarInfo(f"{cls.base_folder}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return digests
