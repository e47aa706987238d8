"""Mask bank-card numbers and Chinese ID numbers in customer text before it is logged or stored."""

from __future__ import annotations

import re

# 13-19 digits, optionally grouped by single spaces or dashes (full-width digits are normalised first).
_CARD_RE = re.compile(r"(?<![\d])(?:\d[ \-]?){12,18}\d(?![\d])")
# 18-character resident ID: 6-digit region, birth date 18xx/19xx/20xx MMDD, 3 digits, check digit.
_ID_RE = re.compile(
    r"(?<![\dA-Za-z])\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![\dA-Za-z])"
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ANY_DIGIT = re.compile(r"[0-9０-９]")
_FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９－　", "0123456789- ")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum that every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def id_checksum_ok(number: str) -> bool:
    """The GB 11643 check digit of an 18-character Chinese resident ID number."""
    total = sum(int(c) * w for c, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def _mask_keep_last4(raw: str) -> str:
    # Keep the separators' positions readable but hide every digit except the last four.
    digits_seen = sum(c.isdigit() or c in "Xx" for c in raw)
    out = []
    for c in raw:
        if c.isdigit() or c in "Xx":
            out.append(c if digits_seen <= 4 else "*")
            digits_seen -= 1
        else:
            out.append(c)
    return "".join(out)


def mask_sensitive(text: str) -> str:
    """Replace card numbers (Luhn-valid) and ID numbers (checksum-valid), keeping their last 4."""
    if _ANY_DIGIT.search(text) is None:
        return text  # the common case costs one regex scan
    normalised = text.translate(_FULLWIDTH_DIGITS)

    def card(match: re.Match[str]) -> str:
        raw = match.group(0)
        digits = re.sub(r"[ \-]", "", raw)
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return _mask_keep_last4(raw)
        return raw

    def ident(match: re.Match[str]) -> str:
        raw = match.group(0)
        return _mask_keep_last4(raw) if id_checksum_ok(raw) else raw

    masked = _ID_RE.sub(ident, normalised)
    masked = _CARD_RE.sub(card, masked)
    return text if masked == normalised else masked
