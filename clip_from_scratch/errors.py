"""The course's error types: problems a user can fix, as opposed to bugs.

The command line prints a :class:`CourseError` as one line that says what was
wrong and what to do, with no traceback; anything else is a bug and keeps its
traceback so it can be reported::

    >>> try:
    ...     raise ConfigError("steps must be at least 1 (got 0)")
    ... except CourseError as err:
    ...     print(f"error: {err}")
    error: steps must be at least 1 (got 0)

Every error a user can fix derives from :class:`CourseError`, wherever it is
raised (``data.coco.CocoUnavailable``, ``download.DownloadError``,
``openai_weights.CheckpointError``, ``runs.NotATrainingCheckpoint``, ...), and
keeps the built-in base it had (``RuntimeError``, ``ValueError``, ...) as a
second base, so code that caught that still does. The command line catches
this one type. The few that several layers raise live here.
"""


class CourseError(Exception):
    """A problem the user can fix: bad settings, missing data, an unreadable file."""


class ConfigError(CourseError, ValueError):
    """Impossible settings (a ``ValueError`` too, so ``except ValueError`` keeps working)."""


class ArchitectureMismatchError(CourseError, RuntimeError):
    """A state dict whose tensors do not fit the model it is loaded into."""


class TrainingError(CourseError, RuntimeError):
    """A problem with a training run the user can fix (bad folder, mismatched checkpoint, diverged run)."""


class TrainingDiverged(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
