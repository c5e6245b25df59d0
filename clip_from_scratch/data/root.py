"""Where the course keeps downloads and caches: ``$CLIP_DATA``, or ``data/`` beside the notebooks.

Asking for the path creates nothing; whatever writes there creates the
folders it needs. Workshops point every learner at one shared,
pre-downloaded copy by setting ``CLIP_DATA``::

    >>> import os
    >>> os.environ["CLIP_DATA"] = "/srv/course-data"
    >>> str(data_root())
    '/srv/course-data'
    >>> del os.environ["CLIP_DATA"]
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "CLIP_DATA"


def data_root() -> Path:
    """``$CLIP_DATA``, else ``../data`` from a notebook (run in notebooks/), else ``./data``. Not created here."""
    root = os.environ.get(DATA_ENV_VAR)
    if root:
        return Path(root).expanduser()
    here = Path.cwd()
    return here.parent / "data" if here.name == "notebooks" else here / "data"
