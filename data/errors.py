"""The orchestrator's error classification, in SQL (for aggregation) and in Python (for one job).

Rule: the leading `SomethingError` / `SomethingException` token of the message (a dotted module
path before it is dropped); otherwise keywords, in this order: timeout (or "timed out") →
TimeoutError, connection → ConnectionError, not found → NotFoundError, permission →
PermissionError, validation → ValidationError; otherwise UnknownError. No message → None.
"""
from __future__ import annotations

import re

_LEADING_TOKEN = r"^\s*(?:[A-Za-z_][A-Za-z0-9_]*\.)*([A-Za-z_][A-Za-z0-9_]*(?:Error|Exception))"
_KEYWORDS = [
    ("timeout|timed out", "TimeoutError"),
    ("connection", "ConnectionError"),
    ("not found", "NotFoundError"),
    ("permission", "PermissionError"),
    ("validation", "ValidationError"),
]
_LEADING_RE = re.compile(_LEADING_TOKEN + r"\b")
_KEYWORD_RES = [(re.compile(pattern, re.IGNORECASE), name) for pattern, name in _KEYWORDS]


def classify_error(message: str | None) -> str | None:
    if message is None or not str(message).strip():
        return None
    match = _LEADING_RE.match(message)
    if match:
        return match.group(1)
    for pattern, name in _KEYWORD_RES:
        if pattern.search(message):
            return name
    return "UnknownError"


def error_type_sql(column: str = "error_message") -> str:
    """SQL expression with the same result as classify_error() for `column`."""
    # SQLAlchemy's text() reads ":name" as a bind parameter: escape the regex's "(?:".
    token = _LEADING_TOKEN.replace("(?:", "(?\\:")
    keyword_cases = "\n".join(
        f"        WHEN {column} ~* '{pattern}' THEN '{name}'" for pattern, name in _KEYWORDS
    )
    return f"""(CASE
        WHEN {column} IS NULL OR btrim({column}) = '' THEN NULL
        WHEN substring({column} FROM '{token}\\M') IS NOT NULL
            THEN substring({column} FROM '{token}\\M')
{keyword_cases}
        ELSE 'UnknownError' END)"""
