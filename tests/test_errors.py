"""Error classification: the Python rule and the SQL rule agree with the orchestrator's rule."""
import pandas as pd
import pytest

from data.db import read_frame
from data.errors import classify_error, error_type_sql

CASES = [
    ("TimeoutError: page did not load in 30 s", "TimeoutError"),
    ("  ElementNotFoundException: #submit", "ElementNotFoundException"),
    ("selenium.common.exceptions.StaleElementReferenceException: gone", "StaleElementReferenceException"),
    ("SAPGuiError happened", "SAPGuiError"),
    ("Operation timed out after 60 s", "TimeoutError"),
    ("Request TIMEOUT", "TimeoutError"),
    ("connection refused by host", "ConnectionError"),
    ("Invoice 42 not found in ledger", "NotFoundError"),
    ("permission denied for share", "PermissionError"),
    ("Validation failed: amount < 0", "ValidationError"),
    ("the robot exploded", "UnknownError"),
    ("Errors happened: timeout", "TimeoutError"),  # 'Errors' is not an ...Error token
    ("", None),
    (None, None),
]


@pytest.mark.parametrize("message,expected", CASES)
def test_python_rule(message, expected):
    assert classify_error(message) == expected


def test_sql_rule_matches_python(engine):
    values = " UNION ALL ".join(f"SELECT :m{i} AS message" for i in range(len(CASES)))
    params = {f"m{i}": m for i, (m, _) in enumerate(CASES)}
    frame = read_frame(engine, f"SELECT message, {error_type_sql('message')} AS t FROM ({values}) v", params)
    got = [None if pd.isna(t) else t for t in frame["t"]]
    assert got == [expected for _, expected in CASES]
