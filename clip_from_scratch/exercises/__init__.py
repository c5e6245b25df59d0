"""Automatic checks for the exercises at the end of each chapter.

Each chapter has a module (``ch01``, ``ch02``, ...) whose ``check_*``
functions take the learner's answer, print ``[OK]`` or explain what is wrong,
and never raise: a notebook with an unfinished exercise still runs top to
bottom, and an answer of the wrong kind (a float, a list, a tensor, a string,
``None``) gets a message, not a traceback. An answer of ``None`` means "not
attempted yet".
"""
from __future__ import annotations


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


def attempt(function, *args):
    """Call the learner's function: ``(result, None)`` to judge, or ``(None, verdict)`` when there is nothing to judge.

    Nothing to judge: the answer is still ``None``, is not a function, raised, or
    returned ``None`` (the placeholder's ``return None``).

    >>> attempt(lambda x: x + 1, 1)
    (2, None)
    >>> attempt(3.5, 1)
    [NOT YET] expected a function, got float: pass the function itself, without calling it.
    (None, False)
    """
    if not_attempted(function):
        return None, False
    if not callable(function):
        return None, report(False, "", f"expected a function, got {type(function).__name__}: "
                                       "pass the function itself, without calling it.")
    try:
        result = function(*args)
    except Exception as err:  # noqa: BLE001 - any mistake in learner code is reported, never raised
        return None, report(False, "", f"your function raised {type(err).__name__}: {err}")
    if result is None:
        not_attempted(None)
        return None, False
    return result, None


def as_tensor(value, what: str = "the result"):
    """``(float tensor, None)``, or ``(None, message)`` when ``value`` is not numbers.

    >>> as_tensor([1, 2])[0]
    tensor([1., 2.])
    >>> as_tensor("two")[1]
    'the result should be a tensor (or numbers), got str'
    """
    import torch
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu(), None
    if isinstance(value, (str, bytes, dict, set)):
        return None, f"{what} should be a tensor (or numbers), got {type(value).__name__}"
    try:
        return torch.as_tensor(value, dtype=torch.float32), None
    except Exception:  # noqa: BLE001 - ragged lists, objects, ...
        return None, f"{what} should be a tensor (or numbers), got {type(value).__name__}"
