"""Automatic checks for the exercises at the end of each chapter, and the small toolkit they share.

Each chapter has a module (``ch01``, ``ch02``, ...) whose ``check_*``
functions take the learner's answer, print ``[OK]`` or explain what is wrong,
and never raise: a notebook with an unfinished exercise still runs top to
bottom, and an answer of the wrong kind (a float, a list, a tensor, a string,
``None``) gets a message, not a traceback. An answer of ``None`` means "not
attempted yet".

The toolkit, used by every chapter's checks:

* :func:`report` prints the verdict; :func:`not_attempted` the ``[TODO]`` line;
* :func:`call` runs the learner's function and catches what it raises;
  :func:`attempt` does that and turns every "nothing to judge" case into a verdict;
  :func:`attempt_number` also reads the result as one number;
* :func:`number`, :func:`whole_number` and :func:`as_tensor` read an answer as a number or a tensor.

Checks for exercises where the learner runs an experiment and reports what it
measured live in :mod:`clip_from_scratch.exercises.experiments`.
"""
from __future__ import annotations

import math

import torch


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


def call(function, *args):
    """``(result, None)``, or ``(None, the exception)`` when the learner's function raised.

    >>> call(lambda x: x + 1, 1)
    (2, None)
    >>> call(lambda x: x[5], [1])[1]
    IndexError('list index out of range')
    """
    try:
        return function(*args), None
    except Exception as err:  # noqa: BLE001 - any mistake in learner code is reported, never raised
        return None, err


def attempt(function, *args, where: str = "", hint: str = ""):
    """Call the learner's function: ``(result, None)`` to judge, or ``(None, verdict)`` when there is nothing to judge.

    Nothing to judge: the answer is still ``None``, is not a function, raised, or
    returned ``None`` (the placeholder's ``return None``). When the function
    raised, ``where`` goes after the error's name (" on [1, 2]") and ``hint`` after its message.

    >>> attempt(lambda x: x + 1, 1)
    (2, None)
    >>> attempt(3.5, 1)
    [NOT YET] expected a function, got float: pass the function itself, without calling it.
    (None, False)
    >>> attempt(lambda x: x[5], [1], where=" on [1]")
    [NOT YET] your function raised IndexError on [1]: list index out of range
    (None, False)
    """
    if not_attempted(function):
        return None, False
    if not callable(function):
        return None, report(False, "", f"expected a function, got {type(function).__name__}: "
                                       "pass the function itself, without calling it.")
    result, error = call(function, *args)
    if error is not None:
        return None, report(False, "", f"your function raised {type(error).__name__}{where}: {error}{hint}")
    if result is None:
        not_attempted(None)
        return None, False
    return result, None


def number(value) -> float | None:
    """``value`` as one finite float (a number, or a tensor or array of one element); None when it is not one.

    >>> number(3), number(torch.tensor([2.5])), number("3"), number(True), number(float("nan"))
    (3.0, 2.5, None, None, None)
    """
    if isinstance(value, (bool, str, bytes)):
        return None
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    try:
        value = float(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def whole_number(value) -> int | None:
    """``value`` as an int when it is one whole number (``12``, ``12.0``, ``tensor(12)``); None otherwise.

    >>> whole_number(12.0), whole_number(12.5), whole_number([12])
    (12, None, None)
    """
    value = number(value)
    return int(value) if value is not None and value == int(value) else None


def attempt_number(function, *args, what: str = "one number", whole: bool = False, hint: str = ""):
    """:func:`attempt`, then the result read as one number: ``(number, None)`` or ``(None, verdict)``.

    ``whole=True`` asks for a whole number; ``hint`` is added when the function raised.

    >>> attempt_number(lambda n: n * 2, 3, whole=True)
    (6, None)
    >>> attempt_number(lambda n: [n], 3)
    [NOT YET] return one number, got list: [3]
    (None, False)
    """
    result, verdict = attempt(function, *args, hint=hint)
    if verdict is not None:
        return None, verdict
    value = whole_number(result) if whole else number(result)
    if value is None:
        return None, report(False, "", f"return {what}, got {type(result).__name__}: {result!r}"[:300])
    return value, None


def as_tensor(value, what: str = "the result"):
    """``(float tensor, None)``, or ``(None, message)`` when ``value`` is not numbers.

    >>> as_tensor([1, 2])[0]
    tensor([1., 2.])
    >>> as_tensor("two")[1]
    'the result should be a tensor (or numbers), got str'
    """
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu(), None
    if isinstance(value, (str, bytes, dict, set)):
        return None, f"{what} should be a tensor (or numbers), got {type(value).__name__}"
    try:
        return torch.as_tensor(value, dtype=torch.float32), None
    except Exception:  # noqa: BLE001 - ragged lists, objects, ...
        return None, f"{what} should be a tensor (or numbers), got {type(value).__name__}"
