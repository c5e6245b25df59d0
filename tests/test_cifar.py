"""CIFAR through torchvision, on tiny archives in CIFAR's real on-disk format.

The archives are served from a loopback HTTP server, and torchvision's own
integrity check is kept on: the ``fake_cifar`` fixture (conftest.py) gives it
the md5s of the fake files by patching the dataset classes' expected digests
(restored after each test).
"""
import tarfile

import numpy as np
import pytest
import torch
from cifar_fixtures import write_cifar_archive
from torchvision.datasets import CIFAR10, CIFAR100

from clip_from_scratch.data import cifar
from clip_from_scratch.zeroshot import evaluate

RNG = np.random.default_rng(0)


def _images(values):
    """One 32x32 RGB image per value, every pixel of channel 0 set to it (the rest random)."""
    images = RNG.integers(0, 256, (len(values), 32, 32, 3), dtype=np.uint8)
    images[..., 0] = np.asarray(values, dtype=np.uint8)[:, None, None]
    return images


def test_cifar100_archive_has_the_real_layout(tmp_path):
    digests = write_cifar_archive(tmp_path / "c.tar.gz", "cifar100", _images([1, 2]), [0, 1], _images([3]), [1])
    with tarfile.open(tmp_path / "c.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["cifar-100-python/meta", "cifar-100-python/test",
                                          "cifar-100-python/train"]
    assert set(digests) == {"train", "test", "meta"}


def test_cifar10_archive_has_five_training_batches(tmp_path):
    write_cifar_archive(tmp_path / "c.tar.gz", "cifar10", _images(range(7)), list(range(7)), _images([3]), [1])
    with tarfile.open(tmp_path / "c.tar.gz") as tar:
        names = sorted(n.split("/")[1] for n in tar.getnames())
    assert names == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                     "data_batch_5", "test_batch"]


def test_cifar100_downloads_verifies_and_reads_back(fake_cifar, tmp_path):
    train, test = (_images([10, 20, 30]), [0, 55, 99]), (_images([40, 50]), [1, 98])
    published = fake_cifar("cifar100", *train, *test)
    root = tmp_path / "data"
    data = cifar.cifar_dataset("cifar100", train=False, root=root, url=published.url, progress=False)
    assert isinstance(data, CIFAR100) and len(data) == 2
    image, label = data[0]
    assert label == 1 and image.size == (32, 32)
    assert np.array_equal(np.asarray(image), test[0][0])    # pixels survive CIFAR's channel-major rows
    assert data.classes[1] == "aquarium_fish"
    assert cifar.classnames(data)[1] == "aquarium fish" and cifar.classnames(data)[-1] == "worm"
    assert (root / CIFAR100.filename).exists()
    train_split = cifar.cifar_dataset("cifar100", train=True, root=root, progress=False)   # now on disk
    assert train_split.targets == [0, 55, 99]


def test_cifar10_reads_all_training_batches(fake_cifar, tmp_path):
    train, test = (_images(range(12)), [i % 10 for i in range(12)]), (_images([1]), [3])
    published = fake_cifar("cifar10", *train, *test)
    data = cifar.cifar_dataset("cifar-10", train=True, root=tmp_path / "d", url=published.url, progress=False)
    assert isinstance(data, CIFAR10) and len(data) == 12
    assert data.targets == train[1]
    assert cifar.classnames(data) == list(cifar.CIFAR10_CLASSES)


def test_a_tampered_archive_is_rejected(fake_cifar, tmp_path):
    train, test = (_images([1]), [0]), (_images([2]), [0])
    published = fake_cifar("cifar100", *train, *test)
    archive = published.archive
    archive.write_bytes(archive.read_bytes()[:-7] + b"garbage")       # the server now sends other bytes
    with pytest.raises(cifar.CIFARUnavailable, match="md5"):
        cifar.cifar_dataset("cifar100", root=tmp_path / "d", url=published.url, progress=False)
    assert not (tmp_path / "d" / CIFAR100.filename).exists()        # nothing half-written kept


def test_unreachable_server_says_retry_or_where_to_put_the_file(tmp_path):
    with pytest.raises(cifar.CIFARUnavailable) as info:
        cifar.cifar_dataset("cifar100", root=tmp_path, url="http://127.0.0.1:9/cifar-100-python.tar.gz",
                            progress=False)
    message = str(info.value)
    assert "slow or unreachable" in message and "again" in message
    assert str((tmp_path / "cifar-100-python.tar.gz").resolve()) in message
    assert "eb9058c3a382ffc7106e4002c42a8d85" in message


def test_archive_put_by_hand_is_used_without_internet(fake_cifar, tmp_path):
    train, test = (_images([1]), [0]), (_images([2, 3]), [5, 6])
    published = fake_cifar("cifar100", *train, *test)
    root = tmp_path / "manual"
    root.mkdir()
    (root / CIFAR100.filename).write_bytes(published.archive.read_bytes())
    data = cifar.cifar_dataset("cifar100", root=root, download_missing=False,
                               url="http://127.0.0.1:9/unused", progress=False)
    assert data.targets == [5, 6]


def test_missing_data_with_downloads_off_is_a_clear_error(tmp_path):
    with pytest.raises(cifar.CIFARUnavailable, match="not on disk and downloading is off"):
        cifar.cifar_dataset("cifar10", root=tmp_path, download_missing=False)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="choose one of"):
        cifar.dataset_class("imagenet")


class _RedChannelModel(torch.nn.Module):
    """Image -> scores that rank class c first, then c+1, c+2, ... (mod 10), c = red value.

    So top-1 predicts c, and top-5 holds c..c+4: easy to count by hand.
    """
    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def encode_image(self, images):               # [B, 3, 32, 32] in 0..1
        c = (images[:, 0, 0, 0] * 255).round().long() % 10
        ranks = (torch.arange(10)[None, :] - c[:, None]) % 10          # 0 for c, 1 for c+1, ...
        return (10.0 - ranks.float()) + self.dummy                      # [B, 10]


def test_evaluate_on_fake_cifar10_counts_by_hand(fake_cifar, tmp_path):
    from torchvision.transforms import ToTensor
    predicted = [0, 1, 2, 3, 4, 5, 6, 7]          # what the model will say (top-1)
    labels = [0, 1, 2, 9, 8, 7, 2, 7]             # hits: 0,1,2,7 -> 4/8 top-1
    # top-5 holds p..p+4 mod 10: label 9 for p=3 (9-3=6 no), 8 for p=4 (4 yes), 7 for p=5 (2 yes),
    # 2 for p=6 (6 no), 7 for p=7 (hit) -> 4 + 2 = 6/8 top-5
    published = fake_cifar("cifar10", _images([0]), [0], _images(predicted), labels)
    data = cifar.cifar_dataset("cifar10", root=tmp_path / "d", url=published.url, transform=ToTensor(),
                               progress=False)
    result = evaluate(_RedChannelModel(), data, cifar.classnames(data), classifier=torch.eye(10),
                      batch_size=3, progress=False)
    assert result.num_images == 8
    assert result.top1 == pytest.approx(4 / 8)
    assert result.top5 == pytest.approx(6 / 8)
    assert result.class_counts.tolist() == [1, 1, 2, 0, 0, 0, 0, 2, 1, 1]
    per_class = dict(zip(result.classnames, result.per_class_accuracy))
    assert per_class["airplane"] == 1.0 and per_class["bird"] == 0.5 and per_class["horse"] == 0.5
    assert per_class["cat"] is None and per_class["truck"] == 0.0 and per_class["ship"] == 0.0
    assert ("truck", "cat", 1) in result.most_confused() and ("bird", "frog", 1) in result.most_confused()
