"""Reading a token's claims without PyJWT: what PyJWT signs, we read back; what is not a JWT reads as None."""

from __future__ import annotations

import jwt
from hypothesis import given
from hypothesis import strategies as st

from flowxfer.transfer._credentials import token_expiry, unverified_claims

_VALUES = st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=20), st.booleans(), st.none())


@given(claims=st.dictionaries(st.text(min_size=1, max_size=10), _VALUES, max_size=6), key=st.text(min_size=1))
def test_the_claims_of_any_signed_token_read_back(claims: dict[str, object], key: str) -> None:
    token = jwt.encode(claims, key.encode() * 32, algorithm="HS256")
    assert unverified_claims(token) == claims


def test_expiry_and_issue_time_are_read_and_anything_else_is_not_a_jwt() -> None:
    token = jwt.encode({"exp": 2000, "iat": 1700, "username": "alice"}, "k" * 32, algorithm="HS256")
    assert token_expiry(token) == (2000.0, 1700.0)
    for text in ("an-api-key", "a.b", "a.b.c", "x.!!!.y", "x.W10.y", "x.bm90IGpzb24.y", "x.w6k.y", "a.b.c.d"):
        assert unverified_claims(text) is None, text
        assert token_expiry(text) == (None, None)
