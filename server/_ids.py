"""Identifiers for data and jobs.

Flow's ids are opaque decimal strings; ours are 18 random digits, so they
look like Flow's, cannot be guessed or enumerated, and never start with 0.
"""

from __future__ import annotations

import re
import secrets

_ID_RE = re.compile(r"^[1-9][0-9]{17}$")


def new_id() -> str:
    """A fresh random 18-digit id."""
    return str(10**17 + secrets.randbelow(9 * 10**17))


def is_id(text: str) -> bool:
    """Whether ``text`` could be one of our ids (cheap pre-check before SQL)."""
    return bool(_ID_RE.match(text))
