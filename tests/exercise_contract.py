"""What every exercise check promises, as one-line assertions the chapters' exercise tests share.

A check prints ``[OK]`` for a right answer, ``[TODO]`` for an exercise not
attempted (``None``, or the placeholder ``return None``), ``[NOT YET]`` with a
hint for a wrong one, and never raises, even on a function that raises.
"""
import pytest


def assert_solution_passes(check, solution, capsys) -> None:
    assert check(solution) is True
    out = capsys.readouterr().out
    assert out.startswith("[OK]"), out


def assert_not_attempted(check, capsys) -> None:
    assert check(None) is False and check(lambda *args: None) is False
    assert capsys.readouterr().out.count("[TODO]") == 2


def assert_mistake_gets_hint(check, mistake, hint: str, capsys) -> None:
    assert check(mistake) is False
    out = capsys.readouterr().out
    assert "[NOT YET]" in out and hint in out, out


def assert_raising_function_is_reported(check, capsys) -> None:
    def broken(*args):
        raise IndexError("oops")
    assert check(broken) is False
    assert "IndexError: oops" in capsys.readouterr().out


def contract_tests(solutions: dict):
    """The three tests a chapter whose answers are functions shares, parametrised over its checks.

        test_worked_solution_passes, test_placeholder_and_none_say_todo, \\
            test_a_function_that_raises_is_reported_not_raised = contract_tests(SOLUTIONS)
    """
    each_check = pytest.mark.parametrize("check", list(solutions), ids=lambda f: f.__name__)

    @each_check
    def test_worked_solution_passes(check, capsys):
        assert_solution_passes(check, solutions[check], capsys)

    @each_check
    def test_placeholder_and_none_say_todo(check, capsys):
        assert_not_attempted(check, capsys)

    @each_check
    def test_a_function_that_raises_is_reported_not_raised(check, capsys):
        assert_raising_function_is_reported(check, capsys)

    return (test_worked_solution_passes, test_placeholder_and_none_say_todo,
            test_a_function_that_raises_is_reported_not_raised)
