"""Behaviour of batch_sender.sms: GSM 03.38 or UCS-2, and the part counts the gateway bills."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch_sender import sms
from batch_sender.errors import InputError

EXTENSION_CHARS = "\f^{}\\[~]|€"
# Clickatell's own unicode example (clickatell-soap-sendmsg.txt, "Send a unicode message").
REFERENCE_TEXT = "This is a sample message sent as Unicode data."
REFERENCE_HEX = (
    "005400680069007300200069007300200061002000730061006d0070006c00650020006d0065007300730061"
    "00670065002000730065006e007400200061007300200055006e00690063006f006400650020006400610074"
    "0061002e"
)

# -- septets and GSM parts ---------------------------------------------------------------------


@pytest.mark.parametrize("char", list(EXTENSION_CHARS))
def test_each_extension_char_costs_two_septets(char: str) -> None:
    assert sms.gsm_septets("a" + char) == 3


@pytest.mark.parametrize(
    ("text", "septets"),
    [
        ("Hello", 5),
        ("@£$¥èéùìòÇ", 10),
        ("ΔΦΓΛΩΠΨΣΘΞ", 10),
        ("line\r\nbreak", 11),
        ("Ä Ö Ñ Ü § ¿ ä ö ñ ü à ¡ ß Æ æ É Ø ø Å å", 39),
        ("{curly} and [square]", 24),
        ("€5", 3),
    ],
)
def test_gsm_septets_counts_basic_one_and_extension_two(text: str, septets: int) -> None:
    assert sms.gsm_septets(text) == septets


@pytest.mark.parametrize(
    "text", ["tab\there", "back`tick", "ç lowercase cedilla", "Привет", "😀", "á"]
)
def test_gsm_septets_is_none_for_text_outside_gsm(text: str) -> None:
    assert sms.gsm_septets(text) is None


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # exactly 160 septets
        ("€" * 80 + "a", 2),
        # 152 + € straddles the 153 boundary: € moves to part 2, which then overflows into part 3
        ("a" * 152 + "€" + "a" * 152, 3),
        ("a" * 153 + "€" + "a" * 151, 2),
    ],
)
def test_gsm_parts_split_greedily_without_cutting_an_escape_pair(text: str, parts: int) -> None:
    assert sms.gsm_parts(text) == parts
    if text:
        assert sms.encode(text).parts == parts


def test_escape_pair_straddling_a_boundary_leaves_a_part_of_152_septets() -> None:
    split = sms.gsm_split("a" * 152 + "€" + "a" * 152)
    assert [sms.gsm_septets(part) for part in split] == [152, 153, 1]


def test_gsm_parts_refuses_text_outside_gsm() -> None:
    with pytest.raises(InputError, match="U\\+041F"):
        sms.gsm_parts("Привет")


# -- UCS-2 units and parts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "units"),
    [("Hi", 2), ("Привет", 6), ("😀", 2), ("a😀b", 4), ("👍🏽", 4), ("", 0)],
)
def test_ucs2_units_count_surrogate_pairs_as_two(text: str, units: int) -> None:
    assert sms.ucs2_units(text) == units


@pytest.mark.parametrize(
    ("units", "parts"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_ucs2_parts_is_70_alone_then_67_per_part(units: int, parts: int) -> None:
    assert sms.ucs2_parts(units) == parts


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("ж" * 70, 1),
        ("ж" * 71, 2),
        ("😀" * 35, 1),  # 70 units
        ("😀" * 36, 2),  # 72 units: 33 emoji (66 units) per part
        # an emoji at units 67-68 moves to part 2, which then overflows into part 3
        ("ж" * 66 + "😀" + "ж" * 66, 3),
    ],
)
def test_encode_unicode_parts_never_split_a_surrogate_pair(text: str, parts: int) -> None:
    assert sms.encode(text).parts == parts
    assert len(sms.ucs2_split(text)) == parts


def test_ucs2_parts_from_a_bare_count_ignores_where_pairs_fall() -> None:
    text = "ж" * 66 + "😀" + "ж" * 66
    assert sms.ucs2_parts(sms.ucs2_units(text)) == 2
    assert sms.encode(text).parts == 3


# -- encode ------------------------------------------------------------------------------------


def test_encode_keeps_gsm_text_as_is() -> None:
    assert sms.encode("Hello {name} €") == sms.Encoded(
        wire_text="Hello {name} €", unicode=False, units=17, parts=1, non_gsm=()
    )


def test_encode_switches_to_ucs2_hex_and_names_the_characters_that_forced_it() -> None:
    encoded = sms.encode("Café naïve über á")
    assert encoded.unicode is True
    assert encoded.wire_text == sms.to_ucs2_hex("Café naïve über á")
    assert encoded.units == 17
    assert encoded.non_gsm == ("ï", "á")


def test_encode_forced_unicode_encodes_gsm_text_as_hex() -> None:
    encoded = sms.encode(REFERENCE_TEXT, unicode=True)
    assert encoded.wire_text.lower() == REFERENCE_HEX
    assert (encoded.unicode, encoded.units, encoded.parts, encoded.non_gsm) == (True, 46, 1, ())


def test_encode_forced_gsm_refuses_non_gsm_text_naming_the_characters() -> None:
    with pytest.raises(InputError, match=r"'ï' \(U\+00EF\)"):
        sms.encode("naïve", unicode=False)


def test_encode_refuses_empty_text() -> None:
    with pytest.raises(InputError, match="empty"):
        sms.encode("")


def test_encode_refuses_a_lone_surrogate() -> None:
    with pytest.raises(InputError, match="surrogate"):
        sms.encode("bad \ud800 text")


# -- hex ---------------------------------------------------------------------------------------


def test_to_ucs2_hex_writes_four_lowercase_digits_per_unit() -> None:
    assert sms.to_ucs2_hex("Hi") == "00480069"
    assert sms.to_ucs2_hex("😀é") == "d83dde0000e9"


def test_reference_unicode_example_round_trips_case_insensitively() -> None:
    assert sms.to_ucs2_hex(REFERENCE_TEXT) == REFERENCE_HEX
    assert sms.from_ucs2_hex(REFERENCE_HEX) == REFERENCE_TEXT
    assert sms.from_ucs2_hex(REFERENCE_HEX.upper()) == REFERENCE_TEXT


@pytest.mark.parametrize(
    ("hexstr", "problem"),
    [
        ("004", "4 per UTF-16"),
        ("004800", "4 per UTF-16"),
        ("0048 069", "hex digits only"),
        ("00zz", "hex digits only"),
        ("d83d", "lone surrogate"),
        ("00480069de00", "lone surrogate at unit 2"),
    ],
)
def test_from_ucs2_hex_refuses_malformed_hex(hexstr: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        sms.from_ucs2_hex(hexstr)


@pytest.mark.parametrize(
    ("value", "expected"), [("0605040B8423F0", "0605040B8423F0"), (" 06050a ", "06050A")]
)
def test_check_hex_accepts_hex_and_uppercases_it(value: str, expected: str) -> None:
    assert sms.check_hex(value, "--udh") == expected


@pytest.mark.parametrize(("value", "problem"), [("", "empty"), ("0G", "not hex"), ("123", "odd")])
def test_check_hex_refuses_bad_hex_naming_the_option(value: str, problem: str) -> None:
    with pytest.raises(InputError, match=f"--udh .*{problem}|--udh is {problem}"):
        sms.check_hex(value, "--udh")


# -- the gateway's side ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire_text", "unicode", "parts"),
    [
        (REFERENCE_HEX, True, 1),
        (REFERENCE_HEX.upper(), True, 1),
        (sms.to_ucs2_hex("ж" * 66 + "😀" + "ж" * 66), True, 3),
        ("a" * 152 + "€" + "a" * 152, False, 3),
        ("a" * 160, False, 1),
        ("ш" * 160, False, 1),  # not GSM without unicode=1: the gateway substitutes, 1 each
        ("ш" * 161, False, 2),
    ],
)
def test_parts_for_wire_counts_what_the_gateway_bills(
    wire_text: str, unicode: bool, parts: int
) -> None:
    assert sms.parts_for_wire(wire_text, unicode) == parts


def test_parts_for_wire_refuses_invalid_unicode_hex() -> None:
    with pytest.raises(InputError):
        sms.parts_for_wire("0048zz", True)


# -- properties --------------------------------------------------------------------------------

GSM_CHARS = sorted(sms.GSM_BASIC | sms.GSM_EXTENSION)
gsm_texts = st.lists(
    st.one_of(st.sampled_from(GSM_CHARS), st.sampled_from(list(EXTENSION_CHARS))), max_size=700
).map("".join)
# No lone surrogates: they cannot be sent at all (encode refuses them).
any_texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=400)
wide_texts = st.lists(
    st.one_of(st.sampled_from(["ж", "a", "é"]), st.characters(min_codepoint=0x10000)),
    max_size=400,
).map("".join)


@given(gsm_texts)
def test_gsm_split_fits_every_part_and_keeps_the_text(text: str) -> None:
    split = sms.gsm_split(text)
    assert "".join(split) == text
    assert len(split) == sms.gsm_parts(text)
    capacity = sms.GSM_SINGLE if len(split) == 1 else sms.GSM_PART
    assert all((sms.gsm_septets(part) or 0) <= capacity for part in split)
    septets = sms.gsm_septets(text)
    assert septets is not None
    if septets > sms.GSM_SINGLE:  # never fewer than the plain count, at most one septet lost/part
        assert math.ceil(septets / sms.GSM_PART) <= len(split) <= math.ceil(septets / 152)


@given(any_texts | wide_texts)
def test_ucs2_split_fits_every_part_and_keeps_the_text(text: str) -> None:
    split = sms.ucs2_split(text)
    assert "".join(split) == text
    capacity = sms.UCS2_SINGLE if len(split) == 1 else sms.UCS2_PART
    assert all(sms.ucs2_units(part) <= capacity for part in split)
    units = sms.ucs2_units(text)
    assert len(split) >= sms.ucs2_parts(units)
    if text:
        assert sms.encode(text, unicode=True).parts == len(split)
    if units > sms.UCS2_SINGLE:
        assert len(split) <= math.ceil(units / 66)


@given(any_texts)
def test_hex_round_trips(text: str) -> None:
    hexstr = sms.to_ucs2_hex(text)
    assert len(hexstr) == 4 * sms.ucs2_units(text)
    assert sms.from_ucs2_hex(hexstr) == text
    assert sms.from_ucs2_hex(hexstr.upper()) == text


@given(any_texts | gsm_texts)
def test_auto_mode_picks_gsm_iff_the_text_fits_gsm(text: str) -> None:
    if not text:
        return
    encoded = sms.encode(text)
    septets = sms.gsm_septets(text)
    assert encoded.unicode is (septets is None)
    if septets is None:
        assert encoded.non_gsm
        assert all(char not in sms.GSM_BASIC | sms.GSM_EXTENSION for char in encoded.non_gsm)
        assert sms.from_ucs2_hex(encoded.wire_text) == text
    else:
        assert (encoded.wire_text, encoded.units, encoded.non_gsm) == (text, septets, ())
    assert encoded.parts == sms.parts_for_wire(encoded.wire_text, encoded.unicode)


@given(st.text(max_size=300) | st.text(st.characters(max_codepoint=127), max_size=300))
def test_gsm_septets_matches_a_per_character_count(text: str) -> None:
    if all(char in sms.GSM_BASIC or char in sms.GSM_EXTENSION for char in text):
        expected = sum(2 if char in sms.GSM_EXTENSION else 1 for char in text)
        assert sms.gsm_septets(text) == expected
    else:
        assert sms.gsm_septets(text) is None
