"""Generate a large campaign CSV for benchmarks, streamed: a million rows in about a second.

Numbers are unique ``2799xxxxxxx`` (a permutation of the 27 99 range, unallocated, as in
Clickatell's documentation examples; past 10 million rows ``2798…``, ``2797…``), with a share of
unusable ones (``--invalid``) and of repeats of an earlier row (``--duplicates``). ``--fields``
adds personalised columns (``name``, ``city``, ``amount``, ``text``), drawn from small pools.

Usage::

    python benchmarks/gen_campaign.py 1000000 --fields name,city --out /tmp/1m.csv
    python benchmarks/gen_campaign.py 50000 --invalid 0.05 --duplicates 0.02 > campaign.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

BLOCK_ROWS = 20_000  # rows joined into one write
_SPAN = 10_000_000  # numbers per 27 9x prefix
_STEP = 7_654_321  # coprime with _SPAN: i * _STEP % _SPAN visits every number once
_POOL = 997  # prime pool size, so field combinations do not repeat in step with the numbers
# '""' is an empty number that stays a row even when "to" is the only column (a blank line is not).
INVALID = ["27abc4567890", "2799", '""', "n/a", "+27 99 9xx 1234", "279990012345678901"]
FIELDS = ("name", "city", "amount", "text")
_NAMES = ["Thabo", "Lerato", "Sipho", "Naledi", "Johan", "Priya", "Smith, John", "Zoë", "李雷"]
_SURNAMES = ["Nkosi", "Botha", "Naidoo", "van der Merwe", "Dlamini", "O'Brien", "Khumalo"]
_CITIES = ["Johannesburg", "Cape Town", "Durban", "Pretoria", "Gqeberha", "Polokwane"]
_TEXTS = [
    "Hi {name}, your order is ready for collection in {city}.",
    "Reminder: R{amount} is due on your account. Reply STOP to opt out.",
    "{name}, your appointment is confirmed for tomorrow at 09:00.",
]


def number(i: int) -> str:
    """The i-th unique number: 27 99 (then 98, 97, …) followed by a permutation of 7 digits."""
    prefix, offset = divmod(i, _SPAN)
    return f"27{99 - prefix}{offset * _STEP % _SPAN:07d}"


def national_number(i: int) -> str:
    """The i-th unique ZA mobile number written nationally: 082 (then 083, 084, …) and 7 digits.

    Valid for phonenumbers (``--country ZA`` accepts them): each takes the parsing path.
    """
    prefix, offset = divmod(i, _SPAN)
    return f"08{2 + prefix % 3}{offset * _STEP % _SPAN:07d}"


def _field_pool(fields: Sequence[str], seed: int) -> list[str]:
    """``_POOL`` pre-rendered, CSV-quoted tails of a row (",name,city,..."), built once."""
    rng = random.Random(seed + 1)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for _ in range(_POOL):
        values = {
            "name": f"{rng.choice(_NAMES)} {rng.choice(_SURNAMES)}",
            "city": rng.choice(_CITIES),
            "amount": f"{rng.randrange(50, 5000)}.00",
            "text": rng.choice(_TEXTS),
        }
        writer.writerow([""] + [values[f] for f in fields])
    return buffer.getvalue().splitlines()


def blocks(
    rows: int,
    *,
    fields: Sequence[str],
    invalid: float,
    duplicates: float,
    seed: int,
    national: bool = False,
) -> Iterator[str]:
    """Yield the CSV text in blocks of ``BLOCK_ROWS`` rows, header first (``national``: the
    numbers written as ZA national numbers, :func:`national_number`)."""
    number = national_number if national else globals()["number"]
    rng = random.Random(seed)
    rand = rng.random
    randrange = rng.randrange
    tails = _field_pool(fields, seed) if fields else [""] * _POOL
    yield ",".join(["to", *fields]) + "\n"
    repeat = invalid + duplicates
    for start in range(0, rows, BLOCK_ROWS):
        out = []
        for i in range(start, min(rows, start + BLOCK_ROWS)):
            roll = rand()
            if roll >= repeat:
                to = number(i)
            elif roll < invalid:
                to = INVALID[i % len(INVALID)]
            else:
                to = number(randrange(i)) if i else number(0)
            out.append(to + tails[i % _POOL])
        out.append("")
        yield "\n".join(out)


def write(
    out: TextIO,
    rows: int,
    *,
    fields: Sequence[str] = (),
    invalid: float = 0.01,
    duplicates: float = 0.0,
    seed: int = 1,
    national: bool = False,
) -> None:
    """Write the whole campaign to ``out``; memory stays at one block."""
    for block in blocks(
        rows, fields=fields, invalid=invalid, duplicates=duplicates, seed=seed, national=national
    ):
        out.write(block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int, help="data rows to write")
    parser.add_argument("--out", type=Path, help="output file (default: standard output)")
    parser.add_argument(
        "--fields", default="", help=f"extra columns, comma-separated, from: {', '.join(FIELDS)}"
    )
    parser.add_argument("--invalid", type=float, default=0.01, help="share of unusable numbers")
    parser.add_argument("--duplicates", type=float, default=0.0, help="share of repeated numbers")
    parser.add_argument("--seed", type=int, default=1, help="random seed (output is reproducible)")
    parser.add_argument(
        "--national", action="store_true", help="ZA national numbers (0821234567): --country ZA"
    )
    args = parser.parse_args(argv)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        parser.error(f"unknown field(s) {', '.join(unknown)}; choose from {', '.join(FIELDS)}")
    if args.rows < 0 or not 0 <= args.invalid + args.duplicates <= 1:
        parser.error("rows must be >= 0 and --invalid + --duplicates between 0 and 1")
    with (
        open(sys.stdout.fileno(), "w", encoding="utf-8", newline="", closefd=False)
        if args.out is None
        else args.out.open("w", encoding="utf-8", newline="")
    ) as out:
        write(
            out,
            args.rows,
            fields=fields,
            invalid=args.invalid,
            duplicates=args.duplicates,
            seed=args.seed,
            national=args.national,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
