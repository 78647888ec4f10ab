"""Write sample_data/campaign.csv: a deterministic demo campaign with the mess real exports have.

Every number is in a range kept out of real use, so the demo can never text a real person: South
African ``27 99 9xx xxxx`` (the range of Clickatell's own documentation examples, unallocated) and
the UK's ``+44 7700 900xxx`` (reserved by Ofcom for drama). ``--strict-numbers`` therefore rejects
them all; without it they pass as given, as the documentation's test numbers must.

The mix, in rows of 3,000: numbers written as ``27999…``, ``+27 99 9…``, national ``099 9…``
(needs ``--country ZA``), ``0027…`` and a few UK ones; ~2% unusable (letters, too short, too long,
empty); ~2% duplicates of an earlier number written another way; ~1% names outside the GSM
alphabet (forcing UCS-2); names with commas and quotes (quoted fields); amounts for ``{amount}``.

Usage: ``python sample_data/make_campaign.py [--rows 3000] [--seed 2799] [--out FILE]``
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
INVALID_NUMBERS = ["27abc123456", "2799", "", "n/a", "+27 99 9xx 1234", "279990012345678901", "-"]


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
            subscriber = f"999{rng.randrange(1_000_000):06d}"
            while subscriber in used:
                subscriber = f"999{rng.randrange(1_000_000):06d}"
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
    parser.add_argument("--out", type=Path, default=HERE / "campaign.csv", help="output file")
    args = parser.parse_args(argv)
    write(args.out, args.rows, args.seed)
    print(f"wrote {args.rows} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
