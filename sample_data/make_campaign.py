"""Write the sample campaign: a deterministic demo campaign with the mess real exports have.

The numbers are **valid** South African mobile numbers (phonenumbers' ZA mobile ranges: 06x,
07x, 081–084), so the number rules accept them as an operator's file would be accepted, and a
few UK ones in Ofcom's drama range (``+44 7700 900xxx``, sent as given: plain international
digits). Valid numbers may belong to real people: the sample is for the simulator
(``batch-sender demo``, ``run --simulator``), never for a real gateway account.

The mix, in rows of 3,000: numbers written as ``2782…``, ``+27 82 …``, national ``082 …``
(needs ``--country ZA``), ``0027…`` and a few UK ones; ~2% unusable (letters, too short, too long,
empty, a UK national number in this ZA file); ~2% duplicates of an earlier number written another
way; ~1% names outside the GSM alphabet (forcing UCS-2); names with commas and quotes (quoted
fields); amounts for ``{amount}``.

The output is a function of ``--rows`` and ``--seed`` alone (one seeded ``random.Random``, no
set or dict order, ``\n`` line ends): the shipped file is what this writes with the defaults, and
``tests/test_sample.py`` checks it byte for byte.

Usage: ``python sample_data/make_campaign.py [--rows 3000] [--seed 2799] [--out FILE]``
(default output: ``batch_sender/sample/campaign.csv``, which ``sample_data/campaign.csv`` links to)
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT_ROWS = 3000
DEFAULT_SEED = 2799
HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parent / "batch_sender" / "sample" / "campaign.csv"  # shipped in the wheel

FIRST_NAMES = [
    "Thabo", "Lerato", "Sipho", "Naledi", "Johan", "Anika", "Pieter", "Zanele", "Ayanda",
    "Kagiso", "Priya", "Rajesh", "Fatima", "Mohammed", "Sarah", "David", "Michelle", "Bongani",
    "Nomvula", "Themba", "Lindiwe", "Ruan", "Chantelle", "Tshepo", "Palesa", "Karabo", "Mpho",
    "Refilwe", "Andile", "Busisiwe", "Grace", "Peter", "Renée", "Jürgen", "Björn", "Ané",
]  # fmt: skip
LAST_NAMES = [
    "Nkosi", "Dlamini", "Botha", "van der Merwe", "Naidoo", "Pillay", "Mokoena", "Khumalo",
    "Smith", "Jacobs", "Pretorius", "Ndlovu", "Mahlangu", "Govender", "Molefe", "Sithole",
    "Fourie", "Adams", "Williams", "Zulu", "du Plessis", "Petersen", "Coetzee", "Mthembu",
]  # fmt: skip
# Not in the GSM 03.38 alphabet (ë, Ł, ř, CJK, emoji): a message naming them goes as UCS-2.
NON_GSM_NAMES = ["Zoë", "Łukasz", "Dvořák", "李雷", "Chloë", "Thandi 🌍", "Noëlle", "Ольга"]
# Quoted on output: a comma, a double quote, an apostrophe.
AWKWARD_NAMES = ["Smith, John", 'Sipho "Sporty" Nkosi', "O'Brien", "D'Souza, Karen"]
CITIES = [
    "Johannesburg", "Cape Town", "Durban", "Pretoria", "Gqeberha", "Bloemfontein",
    "East London", "Polokwane", "Mbombela", "Kimberley", "Soweto", "Stellenbosch",
    "Pietermaritzburg",
]  # fmt: skip
# Unusable in a ZA file: letters, too short, too long, empty, and a UK national number (valid in
# the UK, not as a ZA national number: "not a valid number of ZA (read as a national number)").
INVALID_NUMBERS = [
    "27abc123456", "2782", "", "n/a", "+27 82 1xx 1234", "278210012345678901", "-",
    "07700 900124",
]  # fmt: skip
# First two national digits of phonenumbers' ZA mobile ranges; seven random digits follow.
MOBILE_PREFIXES = [
    "60", "61", "62", "63", "71", "72", "73", "74", "76", "78", "79", "81", "82", "83", "84",
]  # fmt: skip


def formats(subscriber: str) -> list[str]:
    """The ways one South African number (9 national digits) appears in exports."""
    s = subscriber
    return [
        f"27{s}",
        f"+27 {s[:2]} {s[2:5]} {s[5:]}",
        f"0{s[:2]} {s[2:5]} {s[5:]}",
        f"0027{s}",
        f"+27{s}",
        f"0{s}",
    ]


def _mobile(rng: random.Random) -> str:
    """A ZA mobile number's 9 national digits (valid for phonenumbers)."""
    return f"{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10_000_000):07d}"


def rows(count: int, seed: int) -> Iterator[list[str]]:
    """Yield ``count`` rows of to, name, city, amount, reproducibly for a given seed."""
    rng = random.Random(seed)
    used: set[str] = set()
    earlier: list[str] = []  # subscriber parts already written, for duplicates
    weights = [55, 15, 15, 5, 5, 5]  # plain international first: what most exports hold
    for _ in range(count):
        roll = rng.random()
        if roll < 0.02:
            number = rng.choice(INVALID_NUMBERS)
        elif roll < 0.04 and earlier:
            number = rng.choice(formats(rng.choice(earlier)))  # same person, other spelling
        elif roll < 0.07:
            number = f"+44 7700 900{rng.randrange(1000):03d}"
        else:
            subscriber = _mobile(rng)
            while subscriber in used:
                subscriber = _mobile(rng)
            used.add(subscriber)
            earlier.append(subscriber)
            number = rng.choices(formats(subscriber), weights)[0]
        name_roll = rng.random()
        if name_roll < 0.01:
            name = rng.choice(NON_GSM_NAMES)
        elif name_roll < 0.02:
            name = rng.choice(AWKWARD_NAMES)
        else:
            name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        amount = f"{rng.randrange(50, 5000)}.{rng.choice(['00', '50', '99'])}"
        yield [number, name, rng.choice(CITIES), amount]


def write(out: Path, count: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> None:
    """Write the campaign CSV (UTF-8, no BOM, \\n line ends so git keeps it byte-identical)."""
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["to", "name", "city", "amount"])
        writer.writerows(rows(count, seed))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="data rows to write")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--out", type=Path, default=SAMPLE, help="output file")
    args = parser.parse_args(argv)
    write(args.out, args.rows, args.seed)
    print(f"wrote {args.rows} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
