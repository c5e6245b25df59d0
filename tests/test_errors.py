"""One family of errors: everything a user can fix is a CourseError (and still what it was), printed as one line."""
import pickle

import pytest

from clip_from_scratch.cli import main
from clip_from_scratch.data.cifar import CIFARUnavailable
from clip_from_scratch.data.coco import CocoCacheError, CocoUnavailable
from clip_from_scratch.download import ChecksumError, DownloadError
from clip_from_scratch.errors import ArchitectureMismatchError, ConfigError, CourseError, TrainingError
from clip_from_scratch.openai_weights import CheckpointError
from clip_from_scratch.runs import CheckpointMissing, NotATrainingCheckpoint
from clip_from_scratch.torchscript_archive import UnsafeArchiveError

OLD_BASES = {CocoUnavailable: RuntimeError, CocoCacheError: RuntimeError, CIFARUnavailable: RuntimeError,
             DownloadError: RuntimeError, ChecksumError: DownloadError, ArchitectureMismatchError: RuntimeError,
             CheckpointError: RuntimeError, UnsafeArchiveError: pickle.UnpicklingError, TrainingError: RuntimeError,
             ConfigError: ValueError, CheckpointMissing: FileNotFoundError, NotATrainingCheckpoint: ValueError}


@pytest.mark.parametrize("error", OLD_BASES, ids=lambda error: error.__name__)
def test_every_user_error_is_a_course_error_and_still_what_it_was(error):
    assert issubclass(error, CourseError), f"{error.__name__} escapes the CLI's one `except CourseError`"
    assert issubclass(error, OLD_BASES[error]), f"code catching {OLD_BASES[error].__name__} would miss it"


@pytest.mark.parametrize("error", [CocoUnavailable, DownloadError, ArchitectureMismatchError])
def test_the_command_line_prints_any_of_them_as_one_line(monkeypatch, capsys, error):
    from clip_from_scratch import cli

    def fails(args):
        raise error("the data is not here: run `clip-from-scratch download coco --split val2017`")
    monkeypatch.setitem(cli.COMMANDS, "retrieval", fails)
    assert main(["retrieval", "--weights", "ViT-B/32"]) == 2
    err = capsys.readouterr().err
    assert err == ("clip-from-scratch retrieval: error: the data is not here: run "
                   "`clip-from-scratch download coco --split val2017`\n")
