"""batch_sender.numbers against phonenumbers on a generated corpus (issue 17).

The corpus: phonenumbers' example numbers of several types for 30 regions, each written the
ways people and spreadsheets write numbers (national and international formats, separators,
``+``/``00``, a ``(0)`` or a bare trunk 0 after the country code, a trailing ``.0``, junk
around them), read in a file of its own country, of no country, and of a foreign country.

The oracle is what the writer meant, the example number's E.164 digits, except where a named
rule of ``numbers.py`` says otherwise (``EXCEPTIONS``). Each case is also parsed by phonenumbers
(with the file's country as the default region); where phonenumbers disagrees with us, the
disagreement must be one of ``PHONENUMBERS_DIFFERS``. ``test_corpus_summary`` prints the sizes.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

import phonenumbers
import pytest
from phonenumbers import PhoneMetadata, PhoneNumberFormat, PhoneNumberType

from batch_sender.numbers import MAX_DIGITS, MIN_DIGITS, Normaliser

REGIONS = (
    "ZA", "US", "CA", "JM", "GB", "IE", "DE", "AT", "CH", "FR", "BE", "NL", "IT", "ES", "PT",
    "SE", "NO", "PL", "RU", "AU", "NZ", "IN", "SG", "JP", "CN", "BR", "MX", "AR", "EG", "NG",
    "KE",
)  # fmt: skip
TYPES = (
    PhoneNumberType.MOBILE,
    PhoneNumberType.FIXED_LINE,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.VOIP,
)
FOREIGN = {"ZA": "GB"}  # the foreign file a number is also read in: ZA for all, GB for ZA's

#: named rules where our answer is not the example number (see numbers.py, rules 5a and 5b)
CALLING_CODE_FIRST = "calling code first"  # national digits that start with the calling code
NATIONAL_LENGTH_FIRST = "national length first"  # foreign digits read as the file's national
EXCEPTIONS = (CALLING_CODE_FIRST, NATIONAL_LENGTH_FIRST)
#: named rules where phonenumbers (default region = the file's country) gives other digits
PN_NO_REGION = "no country: phonenumbers parses neither plain digits nor 00 (we: international)"
PN_00 = "00 is international in every file (phonenumbers: only where 00 is the IDD, not US)"
PN_VALIDITY = "read as the file's national number but not valid there: we reject it"
PN_FLOAT = "spreadsheet float: phonenumbers keeps the .0 as a digit (we drop it)"
PN_CALLING_CODE = "phonenumbers reads national digits starting with the calling code otherwise"
PN_FOREIGN = "foreign digits: phonenumbers reads them as national of the file's country"
PHONENUMBERS_DIFFERS = (PN_NO_REGION, PN_00, PN_FLOAT, PN_CALLING_CODE, PN_FOREIGN, PN_VALIDITY)


@dataclass(frozen=True)
class Case:
    raw: str
    country: str | None
    meant: str  # E.164 digits of the example number
    form: str  # how it was written: "international", "plain", "national", "nsn", "float", …


@functools.cache
def _meta(region: str) -> tuple[str, frozenset[int], str]:
    meta = PhoneMetadata.metadata_for_region(region)
    assert meta is not None and meta.general_desc is not None
    return (
        str(meta.country_code),
        frozenset(meta.general_desc.possible_length),
        meta.national_prefix or "",
    )


def corpus() -> list[Case]:
    cases: list[Case] = []
    for region in REGIONS:
        cc, _, trunk = _meta(region)
        foreign = FOREIGN.get(region, "ZA")
        for kind in TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is None:
                continue
            e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]
            if not MIN_DIGITS <= len(e164) <= MAX_DIGITS:
                continue
            nsn = phonenumbers.national_significant_number(number)
            intl = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
            national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            written = {
                "international": [
                    "+" + e164,
                    intl,
                    "00" + e164,
                    "00 " + intl[1:],
                    intl.replace(" ", "-"),
                    intl.replace(" ", "."),
                    f"  {intl}\t",
                    f"+{cc} ({nsn[:3]}) {nsn[3:]}",
                ],
                "plain": [e164, f" {e164} "],
                "float": [e164 + ".0"],
            }
            if trunk and not nsn.startswith(trunk):
                written["trunk"] = [
                    f"+{cc} ({trunk}){nsn}",
                    f"+{cc} {trunk}{nsn}",
                    f"00{cc}{trunk}{nsn}",
                ]
            natives = [
                national,
                national.replace(" ", "-"),
                national.replace(" ", ""),
                f"({national})",
            ]
            written["national"] = [n for n in natives if any(c.isdigit() for c in n)]
            if trunk and national.lstrip("(").startswith(trunk):
                written["nsn"] = [nsn]  # the trunk prefix left out
                written["national_float"] = [nsn + ".0"]  # a spreadsheet dropped the leading 0
            for form, raws in written.items():
                countries: list[str | None] = [region]
                if form in ("international", "plain", "float", "trunk"):
                    countries += [None, foreign]
                cases += [Case(raw, country, e164, form) for raw in raws for country in countries]
    return cases


CORPUS = corpus()


def _ours(case: Case) -> str | None:
    return Normaliser(country=case.country)(case.raw).msisdn


def _phonenumbers(case: Case) -> str | None:
    try:
        number = phonenumbers.parse(case.raw, case.country)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)[1:]


def exception(case: Case, ours: str | None) -> str | None:
    """The named rule that explains why ``ours`` is not the example number, if one does."""
    digits = "".join(c for c in case.raw.split(".")[0] if c.isdigit())
    if case.country is None:
        return None
    cc, lengths, _ = _meta(case.country)
    carries = digits.startswith(cc) and len(digits) - len(cc) in lengths
    if case.form in ("nsn", "national_float") and carries:
        return CALLING_CODE_FIRST if ours in (digits, None) else None
    foreign = case.form in ("plain", "float") and case.country != _region_of(case.meant)
    # read as the foreign file's national number: sent there only if valid there
    if foreign and not carries and len(digits) in lengths and ours != case.meant:
        return NATIONAL_LENGTH_FIRST
    return None


def _region_of(e164: str) -> str:
    return phonenumbers.region_code_for_number(phonenumbers.parse("+" + e164)) or "ZZ"


def pn_differs(case: Case, ours: str | None, theirs: str | None) -> str | None:
    """The named rule that explains why phonenumbers gives other digits than we do."""
    raw = case.raw.strip()
    if case.country is None and not raw.startswith("+"):
        return PN_NO_REGION
    if raw.startswith("00") and ours == case.meant:
        return PN_00
    if case.form in ("float", "national_float"):
        return PN_FLOAT
    if exception(case, ours) == CALLING_CODE_FIRST:
        return PN_CALLING_CODE
    if case.form in ("plain",) and ours == case.meant:
        return PN_FOREIGN
    if ours is None and exception(case, ours) == NATIONAL_LENGTH_FIRST:
        return PN_VALIDITY
    return None


def classify() -> tuple[
    Counter[str], list[tuple[Case, str | None]], list[tuple[Case, str | None, str | None]]
]:
    counts: Counter[str] = Counter()
    wrong: list[tuple[Case, str | None]] = []
    unexplained: list[tuple[Case, str | None, str | None]] = []
    for case in CORPUS:
        ours = _ours(case)
        theirs = _phonenumbers(case)
        if ours == case.meant:
            counts["agree with the meaning"] += 1
        else:
            rule = exception(case, ours)
            counts[rule or "WRONG"] += 1
            if rule is None:
                wrong.append((case, ours))
        if theirs == ours:
            counts["agree with phonenumbers"] += 1
        else:
            why = pn_differs(case, ours, theirs)
            counts[f"phonenumbers: {why or 'UNEXPLAINED'}"] += 1
            if why is None:
                unexplained.append((case, ours, theirs))
    return counts, wrong, unexplained


@pytest.fixture(scope="module")
def outcome() -> tuple[
    Counter[str], list[tuple[Case, str | None]], list[tuple[Case, str | None, str | None]]
]:
    return classify()


def test_the_corpus_covers_20_regions_and_every_form() -> None:
    assert len({_region_of(c.meant) for c in CORPUS}) >= 20
    assert {c.form for c in CORPUS} >= {
        "international",
        "plain",
        "float",
        "trunk",
        "national",
        "nsn",
    }
    assert len(CORPUS) > 2000


def test_every_number_goes_where_it_was_meant_or_a_named_rule_says_why(outcome) -> None:
    _, wrong, _ = outcome
    assert wrong == []


def test_every_disagreement_with_phonenumbers_is_a_named_rule(outcome) -> None:
    _, _, unexplained = outcome
    assert unexplained == []


def test_corpus_summary(outcome, capsys: pytest.CaptureFixture[str]) -> None:
    counts, _, _ = outcome
    with capsys.disabled():
        print(f"\ncorpus: {len(CORPUS)} cases")
        for key, n in counts.most_common():
            print(f"  {n:6d}  {key}")
