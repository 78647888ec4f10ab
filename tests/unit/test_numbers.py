"""Behaviour of batch_sender.numbers: raw recipient numbers to international digits, or a reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch_sender.errors import InputError
from batch_sender.numbers import (
    SCIENTIFIC_REASON,
    Interpretations,
    Normalised,
    Normaliser,
    PerRowCountry,
    region_of,
)


@pytest.mark.parametrize(
    ("raw", "msisdn"),
    [
        ("27821002000", "27821002000"),  # plain international digits: the fast path
        ("2799900001", "2799900001"),  # the documentation's test numbers go through as given
        ("+27821002000", "27821002000"),
        ("+27 82 100 2000", "27821002000"),
        ("0027 82 100 2000", "27821002000"),
        ("+27 (0)82 100 2000", "27821002000"),  # the "(0)" trunk hint is dropped
        ("+27-82-100-2000", "27821002000"),
        ("+27.82.100.2000", "27821002000"),
        ("  27821002000\t", "27821002000"),
        ("+44\u00a020\u20137946\u20130958", "442079460958"),  # no-break space, en dashes
        ("1234567", "1234567"),  # 7 digits: the shortest accepted
        ("123456789012345", "123456789012345"),  # 15 digits: the longest
        ("+99912345678", "99912345678"),  # unassigned country code: the gateway decides (105)
    ],
)
def test_international_numbers_are_sent_as_their_digits(raw: str, msisdn: str) -> None:
    assert Normaliser()(raw) == Normalised(msisdn, None)


@pytest.mark.parametrize(
    ("raw", "country", "msisdn"),
    [
        ("082 100 2000", "ZA", "27821002000"),
        ("(082) 100-2000", "ZA", "27821002000"),
        ("082 100 2000", "za", "27821002000"),  # region codes in any case
        ("020 7946 0958", "GB", "442079460958"),
        ("06 1234 5678", "IT", "390612345678"),  # Italy keeps its 0 after the country code
        ("011 27 82 100 2000", "US", "27821002000"),  # a US international prefix
        ("０８２ １００ ２０００", "ZA", "27821002000"),  # full-width digits
    ],
)
def test_national_numbers_are_parsed_in_the_given_country(
    raw: str, country: str, msisdn: str
) -> None:
    assert Normaliser(country=country)(raw) == Normalised(msisdn, None)


def test_a_national_number_and_its_international_form_normalise_to_the_same_msisdn() -> None:
    normalise = Normaliser(country="ZA")
    assert normalise("082 100 2000").msisdn == normalise("+27821002000").msisdn == "27821002000"


@pytest.mark.parametrize(
    ("raw", "country", "reason"),
    [
        ("", None, "empty number"),
        ("   ", "ZA", "empty number"),
        ("abc", None, "not a phone number"),
        ("0821002000", None, "national number but no --country given"),
        ("1-800-FLOWERS", "US", "not a phone number"),
        ("082 100 2000 ext 5", "ZA", "not a phone number"),
        ("+27 82 100 2000 / 2001", "ZA", "not a phone number"),
        ("27+821002000", None, "not a phone number"),
        ("+", None, "not a phone number"),
        ("1234567890123456", None, "too long (16 digits; at most 15)"),
        ("+27 82 100 2000 1234 5", None, "too long (16 digits; at most 15)"),
        ("123456", None, "too short (6 digits; at least 7)"),
        ("+0123456789", None, "no country code starts with 0"),
        ("0821", "ZA", "too short for a number of ZA"),
        ("08210020001234", "ZA", "too long for a number of ZA"),
    ],
)
def test_unusable_numbers_are_rejected_with_a_reason(
    raw: str, country: str | None, reason: str
) -> None:
    assert Normaliser(country=country)(raw) == Normalised(None, reason)


@pytest.mark.parametrize(
    ("raw", "country", "reason"),
    [
        ("2799900001", "ZA", "invalid number for ZA (--strict-numbers)"),
        ("+27 99 900 0001", None, "invalid number for ZA (--strict-numbers)"),
        ("+99912345678", None, "unknown country code (--strict-numbers)"),
    ],
)
def test_strict_numbers_rejects_what_phonenumbers_calls_invalid(
    raw: str, country: str | None, reason: str
) -> None:
    assert Normaliser(country=country)(raw).msisdn is not None
    assert Normaliser(country=country, strict=True)(raw) == Normalised(None, reason)


@pytest.mark.parametrize("raw", ["27821002000", "+27 82 100 2000", "082 100 2000"])
def test_strict_numbers_accepts_valid_numbers(raw: str) -> None:
    assert Normaliser(country="ZA", strict=True)(raw) == Normalised("27821002000", None)


@pytest.mark.parametrize("country", ["XX", "ZAF", "", "27"])
def test_unknown_country_is_an_input_error(country: str) -> None:
    with pytest.raises(InputError, match="--country"):
        Normaliser(country=country)


def test_repeated_numbers_give_the_same_answer_from_the_memo() -> None:
    normalise = Normaliser(country="ZA")
    first = normalise("082 100 2000")
    assert normalise("082 100 2000") is first
    assert normalise("0821") == Normalised(None, "too short for a number of ZA")


@given(st.text(max_size=30))
def test_any_input_is_either_digits_or_a_reason(raw: str) -> None:
    result = Normaliser(country="ZA")(raw)
    assert (result.msisdn is None) != (result.reason is None)
    if result.msisdn is not None:
        assert result.msisdn.isascii() and result.msisdn.isdigit()
        assert 7 <= len(result.msisdn) <= 15
        assert not result.msisdn.startswith("0")


@given(st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True), st.sampled_from(["", "+", "00"]))
def test_international_digits_come_back_unchanged_with_any_prefix(digits: str, prefix: str) -> None:
    outcome = Normaliser()(prefix + digits)
    if "trunk_prefix_dropped" in outcome.rules:  # e.g. 44 0…: the trunk 0 goes (or it is invalid)
        assert outcome.digits is not None and len(outcome.digits) < len(digits)
    else:
        assert outcome == Normalised(digits, None)


# Issue 17: every class of number that went to the wrong place, and what it becomes now.
@pytest.mark.parametrize(
    ("raw", "country", "strict", "msisdn", "rules"),
    [
        # US/NANP national numbers were read as Egypt, Singapore, Sweden
        ("2015550195", "US", False, "12015550195", ("national",)),
        ("(201) 555-0195", "US", False, "12015550195", ("national",)),
        ("(656) 555-0198", "US", False, "16565550198", ("national",)),
        ("468-555-0529", "US", False, "14685550529", ("national",)),
        ("12015550195", "US", False, "12015550195", ()),  # carries the calling code: stays
        ("2015550195", None, False, "2015550195", ()),  # no --country: international (Egypt)
        # national with a trunk 0, calling code already there, foreign digits
        ("0821002000", "ZA", False, "27821002000", ("national",)),
        ("27821002000", "ZA", False, "27821002000", ()),
        ("447911123456", "ZA", False, "447911123456", ()),
        ("4930123456", "DE", False, "4930123456", ()),
        # a trunk prefix after the country code
        ("+44 (0)20 7946 0958", None, False, "442079460958", ("trunk_prefix_dropped",)),
        ("+44 020 7946 0958", "ZA", False, "442079460958", ("trunk_prefix_dropped",)),
        ("0044 020 7946 0958", None, False, "442079460958", ("trunk_prefix_dropped",)),
        ("+39 06 1234 5678", None, False, "390612345678", ()),  # Italy's 0 is the number's
        ("+39 (0)6 1234 5678", None, False, "390612345678", ()),
        ("06 1234 5678", "IT", False, "390612345678", ("national",)),
        # spreadsheet floats
        ("27821234567.0", None, False, "27821234567", ("float_fixed",)),
        ("27821234567.00", "ZA", False, "27821234567", ("float_fixed",)),
        ("821002000.0", "ZA", False, "27821002000", ("float_fixed", "national")),
        # --strict-numbers: what is validated is what is sent
        ("115123456789", None, True, "15123456789", ("trunk_prefix_dropped",)),
        ("27821002000", "ZA", True, "27821002000", ()),
    ],
)
def test_issue_17_numbers_go_where_the_operator_meant(
    raw: str, country: str | None, strict: bool, msisdn: str, rules: tuple[str, ...]
) -> None:
    outcome = Normaliser(country=country, strict=strict)(raw)
    assert outcome == Normalised(msisdn, None)
    assert outcome.rules == rules


@pytest.mark.parametrize(
    ("raw", "country", "strict", "reason"),
    [
        ("2.78212E+10", None, False, SCIENTIFIC_REASON),
        ("2,78212E+10", "ZA", False, SCIENTIFIC_REASON),
        ("2.78212e10", "ZA", True, SCIENTIFIC_REASON),
        # the UK national in a ZA file is not sent as 277700900124
        (
            "07700 900124",
            "ZA",
            False,
            "not a valid number of ZA (read as a national number)",
        ),
        # DE national 115…: read as German (a possible length), not valid there
        (
            "115123456789",
            "DE",
            True,
            "not a valid number of DE (read as a national number)",
        ),
        (
            "115123456789",
            "DE",
            False,
            "not a valid number of DE (read as a national number)",
        ),
        (
            "(201) 555-0195",
            "ZA",
            False,
            "not a valid number of ZA (read as a national number)",
        ),  # fmt: skip
        (
            "+27 (0)99 900 0001",
            None,
            False,
            "not a valid number of ZA (after dropping the trunk prefix)",
        ),  # fmt: skip
        ("+49 0 800 1234567890 1", None, False, "wrong length (16 digits) for a number of DE"),
    ],
)
def test_issue_17_numbers_that_cannot_be_sent_where_meant_are_rejected_with_the_reason(
    raw: str, country: str | None, strict: bool, reason: str
) -> None:
    assert Normaliser(country=country, strict=strict)(raw) == Normalised(None, reason)


def test_a_16_digit_number_whose_trunk_zero_goes_fits_in_15() -> None:
    assert Normaliser()("+49 0 800 1234567890").msisdn == "498001234567890"


def test_interpretations_are_counted_per_row_with_three_examples() -> None:
    tally = Interpretations()
    normalise = Normaliser(country="US", interpretations=tally)
    for raw in ["2015550195", "2015550195", "(201) 555-0196", "201.555.0197", "201 555 0198"]:
        normalise(raw)
    normalise.pair("2.78212E+10")
    normalise.pair("12015550199")  # plain international: nothing to count
    assert tally.as_dict() == {
        "national": {
            "count": 5,
            "examples": [
                ["2015550195", "12015550195"],
                ["2015550195", "12015550195"],
                ["(201) 555-0196", "12015550196"],
            ],
        },
        "scientific_notation": {"count": 1, "examples": [["2.78212E+10", SCIENTIFIC_REASON]]},
    }


def test_per_row_countries_fall_back_to_the_default_and_reject_unknown_codes() -> None:
    rows = PerRowCountry("cc", default="ZA", strict=False, interpretations=Interpretations())
    assert rows.pair("2015550195", "US") == ("12015550195", None)
    assert rows.pair("2015550195", "us ") == ("12015550195", None)
    assert rows.pair("0821002000", "") == ("27821002000", None)
    assert rows.pair("0821002000", "XX") == (None, "unknown country 'XX' in column 'cc'")


@pytest.mark.parametrize(
    ("msisdn", "region"),
    [("27821002000", "ZA"), ("12015550195", "US"), ("14165550123", "CA"), ("99912345678", "ZZ")],
)
def test_region_of_international_digits(msisdn: str, region: str) -> None:
    assert region_of(msisdn) == region
