"""Recipient numbers to international digits (what ``<to>`` wants), or a reason they are unusable.

Clickatell wants international format, digits only, no ``+`` and no ``00`` (clickatell-api.md
§3.1). The rules, in order (the README's "The CSV file" states the same):

1. Spaces, dashes, dots and parentheses are dropped (``+44 (0)20 …`` becomes ``+44020…``);
   letters or other characters, an empty value: rejected.
2. A spreadsheet float, digits and ``.0`` (``27821234567.0``), is read as its integer (rule
   ``float_fixed``); scientific notation (``2.78212E+10``) is rejected: "digits lost in scientific
   notation: export the column as text".
3. ``+CC…`` and ``00CC…`` are international.
4. Without ``--country``, plain digits are international too; a leading ``0`` is rejected
   ("national number but no --country given").
5. With ``--country CC``, plain digits (no ``+``/``00``) are, in this order:

   a. international when they already carry CC's calling code at an international length
      (``27821002000`` with ``ZA``; ``4930123456`` with ``DE``);
   b. CC's national number when they start with CC's trunk prefix or a 0 (``0821002000`` with
      ``ZA``; ``011 27…``, the US international prefix, with ``US``) or when CC has national
      numbers of their length (``2015550195`` with ``US``; ``06 1234 5678`` with ``IT``, whose
      leading 0 is part of the number): phonenumbers parses them with CC as the default region
      (rule ``national``); digits of a national length that are no possible number of CC once
      parsed fall through to c;
   c. international otherwise (``447911123456`` with ``ZA`` stays a +44 number).

6. In an international number, a trunk prefix written after the country code is dropped
   (``+44 020 7946 0958`` → ``442079460958``; rule ``trunk_prefix_dropped``); phonenumbers
   decides, so Italy's leading 0 stays (``+39 06 …`` → ``3906…``).
7. A number that needed interpretation (national, trunk prefix dropped, float fixed) must be
   valid (phonenumbers' ``is_valid_number``) for the country it ends up in, or it is rejected
   with the reason (rule ``invalid_for_country``): a UK ``07700 900124`` in a ``--country ZA``
   file is not sent as ``277700900124``. The reason names the rule, not the digits ("not a valid
   number of ZA (read as a national number)"), so rejections group by it. ``--strict-numbers``
   extends the check to plain international digits.
8. What is validated is what is sent: the digits are phonenumbers' E.164 of the number checked.
9. 7–15 digits (ITU-T E.164), not starting with 0.

The fast path: plain ASCII digits of an international length that cannot be read otherwise (no
``--strict-numbers``; no trunk digit after their calling code; with ``--country``, a length that
is not one of CC's national lengths, or CC's calling code at an international length) are sent as
given with a few string checks and no parsing; the gateway's ERR 105 is the final word on them,
and the documentation's test numbers ``27999000xx`` go through. Everything else is parsed once per
distinct value (memoised), and each interpretation is counted in an :class:`Interpretations`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, ValidationResult
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from batch_sender.errors import InputError

__all__ = [
    "MAX_DIGITS",
    "MIN_DIGITS",
    "RULES",
    "Interpretations",
    "Normalised",
    "Normaliser",
    "PerRowCountry",
    "region_of",
    "shared_calling_code_start",
]

MIN_DIGITS = 7  # digits in the shortest international number (e.g. Niue, +683 and 4 digits)
MAX_DIGITS = 15  # digits in the longest international number (ITU-T E.164)
CACHE_SIZE = 65_536  # numbers remembered by the parsing (slow) path, per Normaliser
EXAMPLES = 3  # examples kept per interpretation rule

# The interpretation rules a dry run counts (see the module docstring).
NATIONAL = "national"  # national → international
TRUNK = "trunk_prefix_dropped"
FLOAT = "float_fixed"
INVALID = "invalid_for_country"  # needed interpretation, not valid where it ends up: rejected
SCIENTIFIC = "scientific_notation"  # rejected
RULES = (NATIONAL, TRUNK, FLOAT, INVALID, SCIENTIFIC)
SCIENTIFIC_REASON = "digits lost in scientific notation: export the column as text"

# Separators people and spreadsheets put in numbers: whitespace (incl. no-break spaces),
# ASCII and Unicode dashes, dots, parentheses.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015.()]")
_FLOAT = re.compile(r"(\+?\d+)[.,]0+")  # 27821234567.0: a spreadsheet's float
_SCIENTIFIC = re.compile(r"[+-]?\d+(?:[.,]\d*)?[eE][+-]?\d+")  # 2.78212E+10

_POSSIBLE_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong length",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too short (no area code)",
}
_WHY_INTERPRETED = {
    NATIONAL: "read as a national number",
    TRUNK: "after dropping the trunk prefix",
    FLOAT: "read from a spreadsheet float",
}


def _trunk_prefixes() -> frozenset[str]:
    """Calling code + trunk prefix of every country (``440``, ``11``, ``3606``), as 4 digits.

    International digits starting with one of these may hold a trunk prefix that is no part of
    the number: they take the parsing path. Calling codes are prefix-free, so nothing else does.
    """
    starts: set[str] = set()
    for code, regions in COUNTRY_CODE_TO_REGION_CODE.items():
        for region in regions:
            meta = PhoneMetadata.metadata_for_region_or_calling_code(code, region)
            if meta is not None and meta.national_prefix:
                starts.add(f"{code}{meta.national_prefix}")
    starts.add("0")
    return frozenset(
        start + f"{i:0{4 - len(start)}d}" if len(start) < 4 else start[:4]
        for start in starts
        for i in range(10 ** max(0, 4 - len(start)))
    )


#: first four digits that keep plain digits off the fast path: a leading 0, or a trunk prefix
_SLOW_STARTS = _trunk_prefixes()


@dataclass(frozen=True, slots=True)
class Normalised:
    """The outcome for one raw number: international digits, or why it was rejected."""

    msisdn: str | None  # international digits, no '+', no leading zeros; None when rejected
    reason: str | None  # why it was rejected, e.g. "not a phone number"; None when accepted
    #: the interpretation rules applied (``RULES``); not part of equality
    rules: tuple[str, ...] = field(default=(), compare=False)
    #: what an interpreted number became (also when rejected for it); not part of equality
    digits: str | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        """True when the number is usable."""
        return self.msisdn is not None


@dataclass(slots=True)
class Interpretations:
    """How many rows each rule interpreted, with a few examples (raw → digits or reason)."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def add(self, raw: str, outcome: Normalised) -> None:
        """Count one row's interpretations."""
        for rule in outcome.rules:
            self.counts[rule] += 1
            kept = self.examples.setdefault(rule, [])
            if len(kept) < EXAMPLES:
                kept.append((raw, outcome.digits or outcome.msisdn or outcome.reason or ""))

    def add_all(self, other: Interpretations) -> None:
        """Count ``other``'s rows too (rows interpreted elsewhere, in order after these)."""
        self.counts.update(other.counts)
        for rule, examples in other.examples.items():
            kept = self.examples.setdefault(rule, [])
            kept += examples[: EXAMPLES - len(kept)]

    def as_dict(self) -> dict[str, dict[str, object]]:
        """``{rule: {"count": n, "examples": [[raw, digits], ...]}}``, for every rule seen."""
        return {
            rule: {"count": self.counts[rule], "examples": [list(e) for e in self.examples[rule]]}
            for rule in RULES
            if self.counts[rule]
        }


class Normaliser:
    """Normalise raw recipient numbers for one campaign (its ``--country`` and strictness).

    Call it once per recipient: ``Normaliser(country="ZA")("082 100 2000").msisdn ==
    "27821002000"``. Numbers that need parsing are memoised (bounded by ``CACHE_SIZE``); what
    they needed is counted in ``interpretations`` (shared when one is given).
    """

    __slots__ = (
        "_cc",
        "_cc_lengths",
        "_fast_lengths",
        "_lengths",
        "_parse",
        "_trunk",
        "country",
        "interpretations",
        "strict",
    )

    def __init__(
        self,
        *,
        country: str | None = None,
        strict: bool = False,
        interpretations: Interpretations | None = None,
        option: str = "--country",
    ) -> None:
        if country is not None:
            code = country.strip().upper()
            if code not in phonenumbers.SUPPORTED_REGIONS:
                raise InputError(
                    f"unknown country {country!r} for {option}: expected a region code "
                    "such as ZA, GB or US"
                )
            country = code
        self.country = country
        self.strict = strict
        self.interpretations = interpretations if interpretations is not None else Interpretations()
        self._cc = ""
        self._lengths: frozenset[int] = frozenset()  # CC's national lengths
        self._trunk = ""
        if country is not None:
            meta = PhoneMetadata.metadata_for_region(country)
            assert meta is not None and meta.country_code is not None
            self._cc = str(meta.country_code)
            desc = meta.general_desc
            self._lengths = frozenset(desc.possible_length if desc is not None else ())
            self._trunk = meta.national_prefix or ""
        international = frozenset(range(MIN_DIGITS, MAX_DIGITS + 1))
        #: lengths of plain digits sent as given (fast path); none under --strict-numbers
        self._fast_lengths = frozenset() if strict else international - self._lengths
        #: lengths of CC's calling code + a national number: sent as given when they start so
        self._cc_lengths = (
            frozenset()
            if strict
            else frozenset(len(self._cc) + n for n in self._lengths) & international
        )
        self._parse: Callable[[str], Normalised] = functools.lru_cache(maxsize=CACHE_SIZE)(
            self._normalise
        )

    def __call__(self, raw: str) -> Normalised:
        """Normalise one raw number; never raises for bad input (it is rejected with a reason)."""
        if self._plain(raw):
            return Normalised(raw, None)
        outcome = self._parse(raw)
        if outcome.rules:
            self.interpretations.add(raw, outcome)
        return outcome

    def pair(self, raw: str) -> tuple[str | None, str | None]:
        """``(msisdn, None)`` or ``(None, reason)``: the call's outcome as a plain tuple, for the
        staging loop (a million ``Normalised`` objects cost more than the checks themselves).
        """
        if (
            raw.isascii()
            and raw.isdigit()
            and raw[:4] not in _SLOW_STARTS
            and (
                len(raw) in self._fast_lengths
                or (len(raw) in self._cc_lengths and raw.startswith(self._cc))
            )
        ):
            return raw, None
        outcome = self._parse(raw)
        if outcome.rules:
            self.interpretations.add(raw, outcome)
        return outcome.msisdn, outcome.reason

    def _plain(self, raw: str) -> bool:
        """Already international digits that cannot be read otherwise (the fast path)."""
        return (
            raw.isascii()
            and raw.isdigit()
            and raw[:4] not in _SLOW_STARTS
            and (
                len(raw) in self._fast_lengths
                or (len(raw) in self._cc_lengths and raw.startswith(self._cc))
            )
        )

    def _normalise(self, raw: str) -> Normalised:
        """The full rules (see the module docstring) for anything off the fast path."""
        text = raw.strip()
        if not text:
            return _rejected("empty number")
        if not text.isascii():
            text = _ascii_digits(text)
        rules: tuple[str, ...] = ()
        if _SCIENTIFIC.fullmatch(text):
            return Normalised(None, SCIENTIFIC_REASON, (SCIENTIFIC,))
        floated = _FLOAT.fullmatch(text)
        if floated:
            text, rules = floated.group(1), (FLOAT,)
        text = _SEPARATORS.sub("", text)
        if text.startswith("+"):
            digits, international = text[1:], True
        elif text.startswith("00"):
            digits, international = text[2:], True
        else:
            digits, international = text, False
        if not digits.isdigit() or not digits.isascii():
            return _rejected("not a phone number")
        if len(digits) > MAX_DIGITS and not (international and digits[:4] in _SLOW_STARTS):
            # (a trunk prefix after the calling code may make it one or two digits longer)
            return _rejected(f"too long ({len(digits)} digits; at most {MAX_DIGITS})")
        if international:
            return self._international(digits, rules)
        if self.country is None:
            if digits[0] == "0":
                return _rejected("national number but no --country given")
            return self._international(digits, rules)
        n, cc = len(digits), self._cc
        if digits.startswith(cc) and n - len(cc) in self._lengths and n >= MIN_DIGITS:
            return self._international(digits, rules)  # 5a: carries CC's calling code
        if digits[0] == "0" or (self._trunk and digits.startswith(self._trunk)):
            return self._national(digits, rules, fallback=False)  # 5b: trunk (or IDD) prefix
        if n in self._lengths:
            return self._national(digits, rules, fallback=True)  # 5b: a national length
        return self._international(digits, rules)  # 5c

    def _national(self, digits: str, rules: tuple[str, ...], *, fallback: bool) -> Normalised:
        """A national number of ``country``: phonenumbers turns it into E.164, if valid.

        With ``fallback``, digits that turn out not to be a possible number of the country are
        read as international instead (rule 5c).
        """
        assert self.country is not None
        try:
            number = phonenumbers.parse(digits, self.country)
        except NumberParseException:
            if fallback:
                return self._international(digits, rules)
            return _rejected(f"not a phone number for {self.country}")
        region = _region(number) or self.country
        possible = phonenumbers.is_possible_number_with_reason(number)
        if possible != ValidationResult.IS_POSSIBLE:
            if fallback:
                return self._international(digits, rules)
            reason = _POSSIBLE_REASONS.get(possible, "not possible")
            return _rejected(f"{reason} for a number of {region}")
        return self._checked(number, (*rules, NATIONAL), digits)

    def _international(self, digits: str, rules: tuple[str, ...]) -> Normalised:
        """International digits: as given, unless a trunk prefix, a float or strictness needs
        phonenumbers (which then decides the digits, and their validity)."""
        if digits[0] == "0":
            return _rejected("no country code starts with 0")
        if len(digits) < MIN_DIGITS:
            return _rejected(f"too short ({len(digits)} digits; at least {MIN_DIGITS})")
        if not (rules or self.strict or digits[:4] in _SLOW_STARTS):
            return Normalised(digits, None)
        try:
            number = phonenumbers.parse("+" + digits)
        except NumberParseException:
            if len(digits) > MAX_DIGITS:
                return _rejected(f"too long ({len(digits)} digits; at most {MAX_DIGITS})")
            if rules or self.strict:
                suffix = " (--strict-numbers)" if self.strict and not rules else ""
                return Normalised(None, f"unknown country code{suffix}", (*rules, INVALID))
            return Normalised(digits, None)
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
        if e164 != digits:
            rules = (*rules, TRUNK)
        elif len(digits) > MAX_DIGITS:
            return _rejected(f"too long ({len(digits)} digits; at most {MAX_DIGITS})")
        if not rules:
            # plain digits under --strict-numbers (a trunk digit that phonenumbers kept)
            return self._checked(number, rules, digits) if self.strict else Normalised(digits, None)
        return self._checked(number, rules, digits)

    def _checked(
        self, number: phonenumbers.PhoneNumber, rules: tuple[str, ...], raw: str
    ) -> Normalised:
        """The number's E.164 digits if valid (what is validated is what is sent), or why not."""
        msisdn = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
        if not MIN_DIGITS <= len(msisdn) <= MAX_DIGITS:
            reason = f"wrong length ({len(msisdn)} digits) for a number of {_region(number)}"
            return Normalised(None, reason, (*rules, INVALID) if rules else (), msisdn)
        if phonenumbers.is_valid_number(number):
            return Normalised(msisdn, None, rules, msisdn)
        region = _region(number)
        if region is None:
            return Normalised(
                None, "unknown country code (--strict-numbers)", (*rules, INVALID) if rules else ()
            )
        if not rules:
            return _rejected(f"invalid number for {region} (--strict-numbers)")
        # the reason names no digits, so a report groups every such row under one line; the
        # digits it was read as stay on the outcome (``digits``: the dry run's examples)
        why = _WHY_INTERPRETED[rules[-1]]
        reason = f"not a valid number of {region} ({why})"
        return Normalised(None, reason, (*rules, INVALID), msisdn)


class PerRowCountry:
    """``--country-column``: each row's own country (``--country`` when the cell is empty).

    One :class:`Normaliser` per country seen, sharing one :class:`Interpretations`; an unknown
    code rejects its row.
    """

    def __init__(
        self, column: str, *, default: str | None, strict: bool, interpretations: Interpretations
    ) -> None:
        self.column = column
        self._strict = strict
        self.interpretations = interpretations
        fallback = Normaliser(country=default, strict=strict, interpretations=interpretations)
        self._by_code: dict[str, Normaliser | str] = {"": fallback}

    def pair(self, raw: str, code: str) -> tuple[str | None, str | None]:
        """The row's outcome, as :meth:`Normaliser.pair`, with the row's country ``code``."""
        normaliser = self._by_code.get(code)
        if normaliser is None:
            normaliser = self._by_code[code] = self._normaliser(code)
        if isinstance(normaliser, str):
            return None, normaliser
        return normaliser.pair(raw)

    def _normaliser(self, code: str) -> Normaliser | str:
        clean = code.strip().upper()
        if not clean:
            return self._by_code[""]
        if clean not in phonenumbers.SUPPORTED_REGIONS:
            return f"unknown country {code[:20]!r} in column {self.column!r}"
        return Normaliser(country=clean, strict=self._strict, interpretations=self.interpretations)


def region_of(msisdn: str) -> str:
    """The region code (``ZA``, ``US``, …) of international digits; ``ZZ`` when unknown.

    Cheap for a calling code of one region; a shared one (+1, +44, +7, …) is parsed (memoised).
    """
    region = _REGION_BY_START.get(msisdn[:3])
    return region if region is not None else _region_parsed(msisdn)


def _regions_by_start() -> dict[str, str]:
    """Three leading digits → region, where their calling code belongs to one region only."""
    out: dict[str, str] = {}
    for i in range(1000):
        start = f"{i:03d}"
        for size in (1, 2, 3):
            regions = COUNTRY_CODE_TO_REGION_CODE.get(int(start[:size]))
            if start[0] != "0" and regions is not None:
                if len(regions) == 1:
                    out[start] = regions[0] if regions[0] != "001" else "ZZ"
                break
        else:
            out[start] = "ZZ"
    return out


_REGION_BY_START = _regions_by_start()
#: three leading digits of a calling code that several regions share (+1, +44, +7, …)
shared_calling_code_start = frozenset(f"{i:03d}" for i in range(1000)) - _REGION_BY_START.keys()


@functools.lru_cache(maxsize=CACHE_SIZE)
def _region_parsed(msisdn: str) -> str:
    try:
        number = phonenumbers.parse("+" + msisdn)
    except NumberParseException:
        return "ZZ"
    return _region(number) or "ZZ"


def _region(number: phonenumbers.PhoneNumber) -> str | None:
    """The number's region, or its calling code's main region; None for an unknown code."""
    region = phonenumbers.region_code_for_number(number)
    if region is None or region == phonenumbers.UNKNOWN_REGION:
        main = phonenumbers.region_code_for_country_code(number.country_code or 0)
        return None if main == phonenumbers.UNKNOWN_REGION else main
    return region


def _rejected(reason: str) -> Normalised:
    """A rejection with its human reason."""
    return Normalised(None, reason)


def _ascii_digits(text: str) -> str:
    """Map any Unicode decimal digit (full-width, Arabic-Indic, ...) to its ASCII digit."""
    return "".join(str(unicodedata.decimal(char)) if char.isdecimal() else char for char in text)
