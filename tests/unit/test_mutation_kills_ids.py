"""flywheel.ids: each refusal names its rule (mutation testing found these unchecked).

The message of an :class:`IdError` is what a client reads in a 422 and what ingest writes
into a quarantine reason, so its words are part of the contract, not decoration.
"""

from __future__ import annotations

import pytest

from flywheel.ids import MAX_ID_CHARS, IdError, id_problem, normalize_id


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is missing"),
        ("  \t ", "is missing"),
        ("x" * (MAX_ID_CHARS + 1), f"is longer than {MAX_ID_CHARS} characters"),
        ("a\x00b", "has control characters"),
        ("a\x7f", "has control characters"),
        (True, "must be a string or an integer, got bool"),
        (4.0, "must be a string or an integer, got float"),
        (None, "must be a string or an integer, got NoneType"),
    ],
)
def test_each_refusal_says_which_rule_it_broke(value: object, message: str) -> None:
    with pytest.raises(IdError) as caught:
        normalize_id(value)
    assert str(caught.value) == message


def test_id_problem_words_match_the_ingest_reasons() -> None:
    assert id_problem("") == "is missing"
    assert id_problem("x" * MAX_ID_CHARS) is None
    assert id_problem("x" * (MAX_ID_CHARS + 1)) == f"is longer than {MAX_ID_CHARS} characters"
    assert id_problem("tab\there") == "has control characters"
    assert id_problem(" 42") is None  # trimming is normalize_id's job, not id_problem's
