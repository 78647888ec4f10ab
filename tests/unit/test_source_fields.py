"""A CSV source's recorded row (``fields``) is the row's JSON, whether or not the source vouches
for its values.

While a CSV file has shown no byte that could put a character JSON escapes into a value
(``"``, ``\\``, a control character other than a line end or the delimiter), its
``plain_values`` says so and prepare joins each row's values between quotes without looking at
them; from the first such byte on, every row's values are looked at. Either way each row's
``fields`` must be what ``json.dumps`` makes of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch_sender import prepare, sources
from batch_sender.config import RunSettings


def staged_fields(path: Path, **open_options: str) -> tuple[list[str | None], bool]:
    """Every row's ``fields`` as staging makes them, and whether the source vouched to the end."""
    source = sources.open_csv(path, **open_options)
    try:
        preparer = prepare.Preparer(RunSettings(name="t", text="Hi {name}"), source.columns)
        rows = preparer.staged(source.records(), plain=source.plain_values)
        return [row.fields for row in rows], source.plain_values.ok
    finally:
        source.close()


def expected(lines: list[list[str]]) -> list[str]:
    header, *rows = lines
    return [
        json.dumps(dict(zip(header, row, strict=True)), ensure_ascii=False, separators=(",", ":"))
        for row in rows
    ]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


PLAIN = [["to", "name", "city"], ["27821234567", "Thabo", "Cape Town"], ["27821234568", "Zoë", ""]]


def test_a_plain_file_is_vouched_for_and_its_rows_are_their_json(tmp_path: Path) -> None:
    text = "to,name,city\r\n27821234567,Thabo,Cape Town\n27821234568,Zoë,\n"
    path = write(tmp_path / "a.csv", text)

    fields, vouched = staged_fields(path)

    assert vouched is True
    assert fields == expected(PLAIN)


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        (
            'to,name,city\n27821234567,"Nkosi, Thabo","say ""hi"""\n',
            [["to", "name", "city"], ["27821234567", "Nkosi, Thabo", 'say "hi"']],
        ),
        (
            "to,name,city\n27821234567,back\\slash,x\n",
            [["to", "name", "city"], ["27821234567", "back\\slash", "x"]],
        ),
        (
            "to,name,city\n27821234567,bell\x07,x\x1f\n",
            [["to", "name", "city"], ["27821234567", "bell\x07", "x\x1f"]],
        ),
        (
            'to,name,city\n27821234567,"two\r\nlines","tab\there"\n',
            [["to", "name", "city"], ["27821234567", "two\r\nlines", "tab\there"]],
        ),
    ],
    ids=["quotes", "backslash", "control characters", "quoted line break and tab"],
)
def test_a_file_with_what_json_escapes_is_not_vouched_for_and_stays_exact(
    tmp_path: Path, text: str, lines: list[list[str]]
) -> None:
    fields, vouched = staged_fields(write(tmp_path / "a.csv", text))

    assert vouched is False
    assert fields == expected(lines)


def test_rows_read_after_the_first_quote_are_looked_at(tmp_path: Path) -> None:
    """A quote far into the file (past the first reads): the rows before it are joined as they
    are, the rows from it on are encoded where they need it."""
    lines = [["to", "name", "city"]]
    lines += [[f"2782{n:07d}", f"Name {n}", "Durban"] for n in range(20_000)]
    lines += [["27829999999", 'The "last"', "back\\slash"], ["27829999998", "plain", "again"]]
    text = "to,name,city\n" + "".join(f"{to},{name},{city}\n" for to, name, city in lines[1:-2])
    text += '27829999999,"The ""last""",back\\slash\n27829999998,plain,again\n'

    fields, vouched = staged_fields(write(tmp_path / "a.csv", text))

    assert vouched is False
    assert fields == expected(lines)


def test_a_tab_delimited_file_is_vouched_for(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", "to\tname\tcity\n27821234567\tThabo\tCape Town\n")

    fields, vouched = staged_fields(path, delimiter="\t")

    assert vouched is True
    assert fields == expected([PLAIN[0], PLAIN[1]])


def test_characters_json_leaves_alone_are_written_as_they_are(tmp_path: Path) -> None:
    lines = [["to", "name", "city"], ["27821234567", "Zoë \u2028 \x7f 😀", "Ōsaka"]]
    path = write(tmp_path / "a.csv", "to,name,city\n27821234567,Zoë \u2028 \x7f 😀,Ōsaka\n")

    fields, vouched = staged_fields(path)

    assert vouched is True
    assert fields == expected(lines)


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_a_single_byte_file_is_vouched_for(tmp_path: Path, encoding: str) -> None:
    path = write(tmp_path / "a.csv", "to,name,city\n27821234567,Zoë,Genève\n", encoding)

    fields, vouched = staged_fields(path, encoding=encoding)

    assert vouched is True
    assert fields == expected([["to", "name", "city"], ["27821234567", "Zoë", "Genève"]])


@pytest.mark.parametrize("encoding", ["utf-16", "utf-7"])
def test_a_file_whose_bytes_cannot_be_judged_is_never_vouched_for(
    tmp_path: Path, encoding: str
) -> None:
    """UTF-16 (every character holds a NUL) and UTF-7 (a control character is written
    ``+AAc-``): the values are looked at row by row."""
    lines = [["to", "name", "city"], ["27821234567", "bell\x07", 'say "hi"']]
    text = 'to,name,city\n27821234567,bell\x07,"say ""hi"""\n'
    path = write(tmp_path / "a.csv", text, encoding)

    fields, vouched = staged_fields(path, encoding=encoding)

    assert vouched is False
    assert fields == expected(lines)
