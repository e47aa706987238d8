"""Property-based: any valid card or ID number, however it is grouped and whatever surrounds it, is masked.

Which contexts must hold. The card is embedded in random Chinese/ASCII text; the character next to
it may be anything but a digit: a letter, punctuation, a separator, and then possibly another
number (an expiry date, a CVV, an amount, a "第1"). A digit glued straight onto the card, with
nothing between, is left out on purpose: "16222021234567878" is one 17-digit number as typed,
and telling a card inside it from an order number would mean trying windows inside a digit
string, which masks most ordinary long numbers (61% of random non-Luhn 16-digit numbers have a
Luhn-valid 13-16 digit window, 94% of 19-digit ones). test_masking.py documents that limit.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot_server.masking import SEPARATORS, id_checksum_ok, luhn_ok, mask_sensitive

DIGIT = re.compile(r"\d")
# Between the groups of a card: every separator the masker must accept, alone and combined.
GROUP_SEPARATORS = [
    " ",
    "  ",
    "   ",
    "\t",
    "\u00a0",
    "\u3000",
    "\u2009",
    "\u202f",
    "-",
    " - ",
    "\u2013",
    "\uff0d",
    ".",
    "\uff0e",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    " \u200b",
    "\u00a0\u00a0",
]
# Between the card and a neighbouring number: a separator, or a character that ends the number.
NEIGHBOUR_JOINERS = [*GROUP_SEPARATORS, "/", ":", "号", ",", "("]
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)

# Context without digits: Chinese, ASCII letters and punctuation, full-width punctuation, spaces.
context_chars = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E).filter(lambda c: not c.isdigit()),
    st.sampled_from("，。？！：；（）、“”《》【】 \u00a0\u3000\u200b卡号有效期到月第元"),
)
context = st.text(context_chars, max_size=12)
# An X right after 17 digits could complete an ID number: not for the "nothing is masked" property.
no_x_context = st.text(context_chars.filter(lambda c: c not in "Xx"), max_size=12)


def as_ascii(digits: str) -> str:
    return digits


def as_fullwidth(digits: str) -> str:
    return digits.translate(FULLWIDTH)


digits_as_typed = st.sampled_from([as_ascii, as_fullwidth])


def complete_luhn(prefix: str) -> str:
    """The prefix followed by the one check digit that makes it pass Luhn."""
    return next(prefix + d for d in "0123456789" if luhn_ok(prefix + d))


@st.composite
def grouped(draw: st.DrawFn, number: str) -> str:
    """The number cut into groups of arbitrary sizes, with any separator at each cut."""
    cuts = sorted(draw(st.sets(st.integers(1, len(number) - 1), max_size=len(number) - 1)))
    typed = draw(digits_as_typed)
    pieces, last = [], 0
    for cut in [*cuts, len(number)]:
        pieces.append(typed(number[last:cut]))
        if cut < len(number):
            pieces.append(draw(st.sampled_from(GROUP_SEPARATORS)))
        last = cut
    return "".join(pieces)


@st.composite
def cards(draw: st.DrawFn) -> str:
    # Cards are 13-19 digits and never start with 0 (ISO/IEC 7812 issues no MII 0 numbers).
    first = draw(st.sampled_from("123456789"))
    return complete_luhn(first + draw(st.text("0123456789", min_size=11, max_size=17)))


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from("12345678")) + draw(st.text("0123456789", min_size=5, max_size=5))
    birth = draw(st.dates(min_value=date(1800, 1, 1), max_value=date(2099, 12, 31))).strftime("%Y%m%d")
    body = region + birth + draw(st.text("0123456789", min_size=3, max_size=3))
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, ID_WEIGHTS, strict=True)) % 11]
    return body + (draw(st.sampled_from("Xx")) if check == "X" else check)


@st.composite
def embedded(draw: st.DrawFn, numbers: st.SearchStrategy[str]) -> tuple[str, str, str, str]:
    """(text before, the number as typed, text after, the number) with optional neighbouring numbers."""
    number = draw(numbers)
    before = draw(context)
    if draw(st.booleans()):  # e.g. "CVV 124 " or "第1 "
        before += draw(st.text("0123456789", min_size=1, max_size=19)) + draw(st.sampled_from(NEIGHBOUR_JOINERS))
    after = draw(context)
    if draw(st.booleans()):  # e.g. " 12/25" or " 08 月到期"
        after = draw(st.sampled_from(NEIGHBOUR_JOINERS)) + draw(st.text("0123456789", min_size=1, max_size=19)) + after
    return before, draw(grouped(number)), after, number


def plain_digits(text: str) -> str:
    """The text with every separator dropped and every digit as ASCII."""
    return "".join(str(unicodedata.decimal(c)) if DIGIT.match(c) else c for c in SEPARATORS.sub("", text))


def assert_only_digits_masked(text: str, out: str) -> None:
    assert len(out) == len(text)  # one character for one
    for was, now in zip(text, out, strict=True):
        if DIGIT.match(was):
            assert now in ("*", str(unicodedata.decimal(was)))
        else:
            assert now == was


def assert_masked(before: str, typed: str, after: str, number: str, visible: int) -> None:
    text = before + typed + after
    out = mask_sensitive(text)
    assert_only_digits_masked(text, out)
    # The number's characters in the output: at most its last `visible` are still readable.
    shown = [k for k, c in enumerate(typed) if (DIGIT.match(c) or c in "Xx") and out[len(before) + k] != "*"]
    readable = [k for k, c in enumerate(typed) if DIGIT.match(c) or c in "Xx"][-visible:]
    assert set(shown) <= set(readable), (text, out)
    assert number.upper() not in plain_digits(out).upper(), (text, out)


@settings(max_examples=500, deadline=None)
@given(case=embedded(cards()))
def test_any_valid_card_in_any_context_is_masked(case: tuple[str, str, str, str]) -> None:
    assert_masked(*case, visible=4)


@settings(max_examples=300, deadline=None)
@given(case=embedded(id_numbers()))
def test_any_valid_id_number_in_any_context_is_masked(case: tuple[str, str, str, str]) -> None:
    assert_masked(*case, visible=4)


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(exclude_categories=["Nd"]) | st.sampled_from("".join(GROUP_SEPARATORS)), max_size=80))
def test_text_without_digits_passes_unchanged(text: str) -> None:
    assert mask_sensitive(text) == text


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80))
def test_text_with_fewer_than_13_digits_passes_unchanged(text: str) -> None:
    if len(DIGIT.findall(text)) < 13:
        assert mask_sensitive(text) == text
    else:
        assert_only_digits_masked(text, mask_sensitive(text))


@settings(max_examples=300, deadline=None)
@given(before=context, after=no_x_context, number=st.text("0123456789", min_size=13, max_size=19))
def test_a_number_that_is_neither_card_nor_id_is_kept(before: str, after: str, number: str) -> None:
    # The other half: a contiguous number that fails Luhn (and is no valid ID) is never masked,
    # whatever window inside it might pass.
    if luhn_ok(number) or (len(number) == 18 and id_checksum_ok(number)):
        return
    assert mask_sensitive(before + number + after) == before + number + after
