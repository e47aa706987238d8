"""Mask bank-card numbers and Chinese ID numbers in customer text before it is logged or stored.

How a number is found. Customers type a card next to its expiry date, its CVV or a "第1", group
it with NBSP, double spaces or dots, and paste it with zero-width characters inside (issue #14):

1. A *run* is groups of digits joined by separators: any kind of space (NBSP, U+3000, U+2009...),
   dashes, dots, and invisible format characters (zero-width space and joiners, word joiner, BOM,
   soft hyphen, direction marks), at most five separator characters between two groups.
2. In a run, every sequence of consecutive *whole* groups holding 13-19 digits is a card
   candidate (masked if it passes Luhn), and one of 17 digits plus a digit or X an ID candidate
   (masked if its birth date and GB 11643 check digit are valid). Trying every group alignment is
   what keeps "6222021234567878 12" or "124 6222021234567878" from failing Luhn: the neighbour is
   a group of its own and is simply left out of the window.
3. A group (digits with nothing between them) is never split: inside "6212345678901233" some
   13-16 digit window passes Luhn more often than not, so splitting would mask most ordinary
   order and transaction numbers, which the agent needs to read. A card typed glued to other
   digits is therefore not recognised; with any separator in between it is.
4. Candidates never start with 0 (no card or ID number does), so "100.00 6222..." keeps its "00".

Every candidate that passes is masked (their union), so a neighbour that happens to pass too can
only hide more. The last four characters of each stay visible, as before. Masking is one for one:
a masked digit becomes "*", the visible digits of a masked run become ASCII, every other character
(separators included, zero-width ones too: they hide nothing) stays where it was.
"""

from __future__ import annotations

import re
import unicodedata

_SPACES = " \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
_DASHES = "\\-\u2010-\u2015\u2212\ufe63\uff0d"
_DOTS = ".\u00b7\u30fb\uff0e"
_INVISIBLE = "\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
SEPARATORS = re.compile(f"[{_SPACES}{_DASHES}{_DOTS}{_INVISIBLE}]")
"""One character that may stand between the digit groups of a card or ID number."""

_SEP = SEPARATORS.pattern
_ID_X = "XxＸｘ"
# \d is every Unicode decimal digit (full-width ones included). The optional X is an ID's check
# character, even with a letter after it ("002Xok"): the 17 digits before it must pass anyway.
_RUN_RE = re.compile(rf"\d+(?:{_SEP}{{1,5}}\d+)*(?:{_SEP}{{0,5}}[{_ID_X}])?")
_GROUP_RE = re.compile(r"\d+")
_DIGIT_RE = re.compile(r"\d")
# 18-character resident ID: region (no leading 0), birth date 18xx/19xx/20xx MMDD, 3 digits, check.
_ID_SHAPE = re.compile(r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dX]")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
MIN_CARD, MAX_CARD, KEEP = 13, 19, 4
# Secrets a customer should never type but does ("CVV 124", "密码是123456", "验证码 834512"):
# a card's security code, a PIN, a one-time code. Stored, they would break PCI DSS 3.2 (no
# sensitive authentication data after authorisation): hidden whole, when a keyword names them.
_SECRET_RE = re.compile(
    r"(?i)(?:(?<![a-z])(?:cvv2?|cvc2?|cvn2?|cid|pin)(?![a-z])|安全码|校验码|验证码|动态码|动态密码|密码)"
    r"[^\d\n]{0,6}?(\d{3,8})(?!\d)"
)


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


def _id_ok(number: str) -> bool:
    return _ID_SHAPE.fullmatch(number) is not None and id_checksum_ok(number)


def _ascii(group: str) -> str:
    return group if group.isascii() else "".join(str(unicodedata.decimal(c)) for c in group)


def _luhn_sums(digits: str) -> tuple[list[int], list[int]]:
    """Prefix sums that give any window's Luhn total in O(1): a run of 1-digit groups has ~7
    windows per digit, and a 500-character message of them cost 4 ms with a Luhn pass each.

    In a window the last digit is not doubled, nor is every second one before it: the digits whose
    position has the parity of the window's last position. `even[k]` sums the digits before k with
    those at even positions plain and those at odd positions doubled; `odd[k]` the other way round.
    """
    even, odd = [0], [0]
    for p, ch in enumerate(digits):
        d = ord(ch) - 48
        doubled = d * 2 - 9 if d > 4 else d * 2
        plain_here, doubled_here = (doubled, d) if p % 2 else (d, doubled)
        even.append(even[-1] + plain_here)
        odd.append(odd[-1] + doubled_here)
    return even, odd


def _hidden(digits: str, starts: list[int], has_x: bool) -> bytearray:
    """Which of the run's digits to hide: the union of its valid candidates minus their last four.

    `starts[i]` is where group i begins in `digits` (the run's digits, separators dropped);
    `starts[-1]` is len(digits).
    """
    hide = bytearray(len(digits))
    even, odd = _luhn_sums(digits)
    last = len(starts) - 2
    for i in range(last + 1):
        a = starts[i]
        if digits[a] == "0":
            continue
        for j in range(i, last + 1):
            b = starts[j + 1]
            size = b - a
            if size > MAX_CARD:
                break
            if size < MIN_CARD:
                continue
            sums = odd if (b - 1) % 2 else even
            keep = 0
            if size == 17 and has_x and j == last and _id_ok(digits[a:b] + "X"):
                keep = KEEP - 1  # the X is the fourth character kept (checked first: it hides more)
            elif (sums[b] - sums[a]) % 10 == 0 or (size == 18 and _id_ok(digits[a:b])):
                keep = KEEP
            if keep:
                hide[a : b - keep] = b"\x01" * (size - keep)
    return hide


def _hide_secret(match: re.Match[str]) -> str:
    start, end = match.start(1) - match.start(), match.end(1) - match.start()
    whole = match.group()
    return whole[:start] + "*" * (end - start) + whole[end:]


def mask_sensitive(text: str) -> str:
    """Replace card numbers (Luhn-valid) and ID numbers (checksum-valid), keeping their last 4,
    and security codes, PINs and one-time codes named by a keyword, whole."""
    if _DIGIT_RE.search(text) is None:
        return text  # nearly every message: one scan
    text = _SECRET_RE.sub(_hide_secret, text)
    if len(_DIGIT_RE.findall(text)) < MIN_CARD:
        return text  # no card fits in fewer digits
    chars: list[str] | None = None
    for run in _RUN_RE.finditer(text):
        if run.end() - run.start() < MIN_CARD:
            continue
        groups = list(_GROUP_RE.finditer(text, run.start(), run.end()))
        digits = "".join(_ascii(g.group()) for g in groups)
        if len(digits) < MIN_CARD:
            continue
        starts = [0]
        for g in groups:
            starts.append(starts[-1] + g.end() - g.start())
        hide = _hidden(digits, starts, text[run.end() - 1] in _ID_X)
        if not any(hide):
            continue
        if chars is None:
            chars = list(text)
        k = 0
        for g in groups:
            for pos in range(g.start(), g.end()):
                chars[pos] = "*" if hide[k] else digits[k]
                k += 1
    return text if chars is None else "".join(chars)
