"""Automatic checks for the exercises at the end of each chapter.

Each chapter has a module (``ch01``, ``ch02``, ...) whose ``check_*``
functions take the learner's answer, print ``[OK]`` or explain what is wrong,
and never raise: a notebook with an unfinished exercise still runs top to
bottom. An answer of ``None`` means "not attempted yet".
"""


def report(ok: bool, message_ok: str, message_fail: str) -> bool:
    """Print one verdict line and return it (so tests can assert on it)."""
    print(("[OK] " + message_ok) if ok else ("[NOT YET] " + message_fail))
    return ok


def not_attempted(answer) -> bool:
    """True (and a hint printed) when the exercise still holds its placeholder."""
    if answer is None:
        print("[TODO] Not attempted yet: fill in the cell above and run this one again.")
        return True
    return False
