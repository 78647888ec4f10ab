"""Recipient numbers to international digits (what ``<to>`` wants), or a reason they are unusable.

Clickatell wants international format, digits only, no ``+`` and no ``00`` (clickatell-api.md
§3.1). The rules, in order:

* spaces, dashes, dots and parentheses are dropped (``+27 (0)82 …``: the ``(0)`` trunk hint too);
* ``+CC…`` and ``00CC…`` are international: their digits are sent as given;
* plain digits, 7–15 of them, not starting with ``0``, are already international: sent as given
  (the fast path: no parsing, so a million clean numbers cost little; the gateway's ERR 105 is the
  final word, and the documentation's test numbers ``27999000xx`` go through);
* a leading ``0`` is a national number: it needs ``--country``, and phonenumbers turns it into
  E.164; one that cannot be a number of that country (too short, too long) is rejected;
* ``--strict-numbers`` also rejects every number phonenumbers calls invalid for its country;
* letters or other characters, an empty value, fewer than 7 or more than 15 digits: rejected.

Beware countries without a ``0`` trunk prefix (US/Canada): with ``--country US`` a national
``2025550123`` has the shape of an international number and is sent as given; write ``+1…`` or use
``--strict-numbers`` to catch it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from batch_sender.errors import InputError

__all__ = ["MAX_DIGITS", "MIN_DIGITS", "Normalised", "Normaliser"]

MIN_DIGITS = 7  # digits in the shortest international number (e.g. Niue, +683 and 4 digits)
MAX_DIGITS = 15  # digits in the longest international number (ITU-T E.164)
CACHE_SIZE = 65_536  # numbers remembered by the parsing (slow) path, per Normaliser

# Separators people and spreadsheets put in numbers: whitespace (incl. no-break spaces),
# ASCII and Unicode dashes, dots, parentheses.
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015.()]")
_TRUNK_HINT = re.compile(r"\(\s*0\s*\)")  # the "(0)" in "+27 (0)82 100 2000"

_POSSIBLE_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong length",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "too short (no area code)",
}


@dataclass(frozen=True, slots=True)
class Normalised:
    """The outcome for one raw number: international digits, or why it was rejected."""

    msisdn: str | None  # international digits, no '+', no leading zeros; None when rejected
    reason: str | None  # why it was rejected, e.g. "not a phone number"; None when accepted

    @property
    def ok(self) -> bool:
        """True when the number is usable."""
        return self.msisdn is not None


class Normaliser:
    """Normalise raw recipient numbers for one campaign (its ``--country`` and strictness).

    Call it once per recipient: ``Normaliser(country="ZA")("082 100 2000").msisdn ==
    "27821002000"``. Numbers that need parsing are memoised (bounded by ``CACHE_SIZE``).
    """

    __slots__ = ("_parse", "country", "strict")

    def __init__(self, *, country: str | None = None, strict: bool = False) -> None:
        if country is not None:
            code = country.strip().upper()
            if code not in phonenumbers.SUPPORTED_REGIONS:
                raise InputError(
                    f"unknown country {country!r} for --country: expected a region code "
                    "such as ZA, GB or US"
                )
            country = code
        self.country = country
        self.strict = strict
        self._parse: Callable[[str], Normalised] = functools.lru_cache(maxsize=CACHE_SIZE)(
            self._normalise
        )

    def __call__(self, raw: str) -> Normalised:
        """Normalise one raw number; never raises for bad input (it is rejected with a reason)."""
        return Normalised(raw, None) if self._plain(raw) else self._parse(raw)

    def pair(self, raw: str) -> tuple[str | None, str | None]:
        """``(msisdn, None)`` or ``(None, reason)``: the call's outcome as a plain tuple, for the
        staging loop (a million ``Normalised`` objects cost more than the checks themselves).
        """
        if self._plain(raw):
            return raw, None
        parsed = self._parse(raw)
        return parsed.msisdn, parsed.reason

    def _plain(self, raw: str) -> bool:
        """Already international digits (the fast path: sent as given, no parsing)."""
        return (
            not self.strict
            and raw.isascii()
            and raw.isdigit()
            and MIN_DIGITS <= len(raw) <= MAX_DIGITS
            and raw[0] != "0"
        )

    def _normalise(self, raw: str) -> Normalised:
        """The full rules (see the module docstring) for anything off the fast path."""
        text = raw.strip()
        if not text:
            return _rejected("empty number")
        if not text.isascii():
            text = _ascii_digits(text)
        if text.startswith(("+", "00")):
            text = _TRUNK_HINT.sub("", text)
        text = _SEPARATORS.sub("", text)
        if text.startswith("+"):
            digits, international = text[1:], True
        elif text.startswith("00"):
            digits, international = text[2:], True
        else:
            digits, international = text, False
        if not digits.isdigit() or not digits.isascii():
            return _rejected("not a phone number")
        if len(digits) > MAX_DIGITS:
            return _rejected(f"too long ({len(digits)} digits; at most {MAX_DIGITS})")
        if international or digits[0] != "0":
            if digits[0] == "0":
                return _rejected("no country code starts with 0")
            if len(digits) < MIN_DIGITS:
                return _rejected(f"too short ({len(digits)} digits; at least {MIN_DIGITS})")
            return self._check_strict(digits) if self.strict else Normalised(digits, None)
        return self._national(digits)

    def _national(self, digits: str) -> Normalised:
        """A number with a leading 0: parse it in ``country`` and format it as E.164."""
        if self.country is None:
            return _rejected("national number but no --country given")
        try:
            number = phonenumbers.parse(digits, self.country)
        except NumberParseException:
            return _rejected(f"not a phone number for {self.country}")
        region = phonenumbers.region_code_for_number(number) or self.country
        possible = phonenumbers.is_possible_number_with_reason(number)
        if possible != ValidationResult.IS_POSSIBLE:
            reason = _POSSIBLE_REASONS.get(possible, "not possible")
            return _rejected(f"{reason} for a number of {region}")
        if self.strict and not phonenumbers.is_valid_number(number):
            return _rejected(f"invalid number for {region} (--strict-numbers)")
        msisdn = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
        if len(msisdn) > MAX_DIGITS:
            return _rejected(f"too long ({len(msisdn)} digits; at most {MAX_DIGITS})")
        return Normalised(msisdn, None)

    def _check_strict(self, digits: str) -> Normalised:
        """International digits under ``--strict-numbers``: phonenumbers must call them valid."""
        try:
            number = phonenumbers.parse("+" + digits)
        except NumberParseException:
            return _rejected("unknown country code (--strict-numbers)")
        if not phonenumbers.is_valid_number(number):
            region = phonenumbers.region_code_for_number(number)
            if region is None or region == phonenumbers.UNKNOWN_REGION:
                return _rejected("unknown country code (--strict-numbers)")
            return _rejected(f"invalid number for {region} (--strict-numbers)")
        return Normalised(digits, None)


def _rejected(reason: str) -> Normalised:
    """A rejection with its human reason."""
    return Normalised(None, reason)


def _ascii_digits(text: str) -> str:
    """Map any Unicode decimal digit (full-width, Arabic-Indic, ...) to its ASCII digit."""
    return "".join(str(unicodedata.decimal(char)) if char.isdecimal() else char for char in text)
