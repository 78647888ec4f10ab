"""A CSV row's recorded fields (``fields``) are the row's JSON, as ``json.dumps`` writes it.

Prepare writes a row whose values hold nothing JSON escapes (``"``, ``\\``, control
characters) as its values joined between quotes, and checks that per row: as bytes when the
values are ASCII, as text otherwise. Each case here goes through a real CSV file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch_sender import prepare, sources
from batch_sender.config import RunSettings
from batch_sender.store.records import StagedRow


def staged_fields(path: Path, **open_options: str) -> list[str | None]:
    """Every row's ``fields`` as staging makes them."""
    source = sources.open_csv(path, **open_options)
    try:
        preparer = prepare.Preparer(RunSettings(name="t", text="Hi {name}"), source.columns)
        return [StagedRow(*row).fields for row in preparer.staged(source.records())]
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


def test_plain_rows_are_their_values_in_quotes(tmp_path: Path) -> None:
    text = "to,name,city\r\n27821234567,Thabo,Cape Town\n27821234568,Zoë,\n"
    path = write(tmp_path / "a.csv", text)

    fields = staged_fields(path)

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
        (
            'to,name,city\n27821234567,"Zoë ""Z""",Genève\\\x01\n',
            [["to", "name", "city"], ["27821234567", 'Zoë "Z"', "Genève\\\x01"]],
        ),
    ],
    ids=[
        "quotes",
        "backslash",
        "control characters",
        "quoted line break and tab",
        "not ASCII, with all three",
    ],
)
def test_values_json_escapes_are_escaped(tmp_path: Path, text: str, lines: list[list[str]]) -> None:
    fields = staged_fields(write(tmp_path / "a.csv", text))

    assert fields == expected(lines)


def test_plain_rows_and_rows_that_need_escaping_mixed(tmp_path: Path) -> None:
    """Many plain rows, then ones that need escaping, then a plain one again."""
    lines = [["to", "name", "city"]]
    lines += [[f"2782{n:07d}", f"Name {n}", "Durban"] for n in range(20_000)]
    lines += [["27829999999", 'The "last"', "back\\slash"], ["27829999998", "plain", "again"]]
    text = "to,name,city\n" + "".join(f"{to},{name},{city}\n" for to, name, city in lines[1:-2])
    text += '27829999999,"The ""last""",back\\slash\n27829999998,plain,again\n'

    fields = staged_fields(write(tmp_path / "a.csv", text))

    assert fields == expected(lines)


def test_a_tab_delimited_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.tsv", "to\tname\tcity\n27821234567\tThabo\tCape Town\n")

    fields = staged_fields(path, delimiter="\t")

    assert fields == expected([PLAIN[0], PLAIN[1]])


def test_characters_json_leaves_alone_are_written_as_they_are(tmp_path: Path) -> None:
    lines = [["to", "name", "city"], ["27821234567", "Zoë \u2028 \x7f 😀", "Ōsaka"]]
    path = write(tmp_path / "a.csv", "to,name,city\n27821234567,Zoë \u2028 \x7f 😀,Ōsaka\n")

    fields = staged_fields(path)

    assert fields == expected(lines)


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_a_single_byte_encoded_file(tmp_path: Path, encoding: str) -> None:
    path = write(tmp_path / "a.csv", "to,name,city\n27821234567,Zoë,Genève\n", encoding)

    fields = staged_fields(path, encoding=encoding)

    assert fields == expected([["to", "name", "city"], ["27821234567", "Zoë", "Genève"]])


@pytest.mark.parametrize("encoding", ["utf-16", "utf-7"])
def test_files_in_encodings_unlike_ascii(tmp_path: Path, encoding: str) -> None:
    """UTF-16 (every character holds a NUL byte) and UTF-7 (a control character is written
    ``+AAc-``): what counts is the characters read, not the file's bytes."""
    lines = [["to", "name", "city"], ["27821234567", "bell\x07", 'say "hi"']]
    text = 'to,name,city\n27821234567,bell\x07,"say ""hi"""\n'
    path = write(tmp_path / "a.csv", text, encoding)

    fields = staged_fields(path, encoding=encoding)

    assert fields == expected(lines)
