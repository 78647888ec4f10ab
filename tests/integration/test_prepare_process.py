"""A large CSV file's rows are prepared in a process of its own: nothing staged may differ.

Each test stages through a real child process (``python -m batch_sender.prepare_process``,
its threshold lowered so that small files use it) and, where it compares, through this process
too, into real SQLite files, and reads back every column staging writes.
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_cli import CliResult, write_csv
from sqlalchemy import select

from batch_sender import campaign, prepare_process, sources
from batch_sender.config import MessageOptions, RunSettings
from batch_sender.errors import BatchSenderError, InputError
from batch_sender.prepare import Preparer
from batch_sender.store import Store
from batch_sender.store.tables import campaigns, messages, recipients

#: every kind of row prepare treats apart: international and national numbers, a bad one, a
#: repeat, a text that needs UCS-2, one that --smart-encoding changes, one too long for one
#: part, values JSON must escape, an empty placeholder value (an empty text)
ROWS = [
    ("27821000001", "Thabo", "ready"),
    ("082 100 0002", "Lerato", "ready"),
    ("not a number", "X", "ready"),
    ("27821000001", "Thabo again", "ready"),
    ("27821000004", "Лера", "ready"),
    ("27821000005", "Sipho", "“ready” – now"),
    ("27821000006", "Naledi", "ready " * 40),
    ("27821000007", 'Jo "JJ" \\ Smith', "ready\tnow"),
    ("+27 82 100 0008", "Anele", "ready"),
    ("0821000009", "", ""),
]
TEXT = "{name}: your parcel is {state}"


@pytest.fixture
def campaign_csv(tmp_path: Path) -> Path:
    # 30 groups of ROWS, each group's numbers its own (the repeat repeats within its group)
    numbered = [
        (to.replace("000", f"{group:03d}", 1), *rest) for group in range(30) for to, *rest in ROWS
    ]
    return write_csv(tmp_path / "campaign.csv", numbered, header=("to", "name", "state"))


@pytest.fixture
def in_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CSV file, however small, is prepared in a process of its own."""
    monkeypatch.setattr(prepare_process, "MIN_BYTES", 0)
    monkeypatch.setattr(prepare_process, "MIN_BYTES_RENDERED", 0)


def settings(**overrides: Any) -> RunSettings:
    base = RunSettings(
        name="prepared",
        text=TEXT,
        country="ZA",
        message=MessageOptions(smart_encoding=True),
    )
    return dataclasses.replace(base, **overrides)


def staged_everything(url: str, name: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every column staging writes, of recipients and of their messages, in row order."""
    r, m = recipients.c, messages.c
    with Store.open(url) as store, store.engine.connect() as conn:
        (campaign_id,) = conn.execute(select(campaigns.c.id).where(campaigns.c.name == name)).one()
        rows = conn.execute(
            select(
                r.row_no,
                r.msisdn,
                r.status,
                r.parts,
                r.error_code,
                r.error_description,
                r.fields,
                m.digest,
                m.wire_text,
                m.unicode,
                m.parts,
                m.text,
            )
            .select_from(recipients.outerjoin(messages, r.message_id == m.id))
            .where(r.campaign_id == campaign_id)
            .order_by(r.row_no)
        ).all()
    return {"rows": [tuple(row) for row in rows]}


def stage(url: str, csv: Path, run: RunSettings, preparer: Preparer | None = None) -> None:
    with Store.open(url) as store, sources.open_csv(csv) as source:
        campaign.stage(store, source, run, preparer)


def tallies(preparer: Preparer) -> tuple[Any, ...]:
    return (
        preparer.interpretations.as_dict(),
        preparer.smart.as_dict(),
        dict(preparer.non_gsm),
    )


def not_here(*_args: object, **_kwargs: object) -> Iterator[Any]:
    raise AssertionError("the rows were prepared in the staging process")


def test_a_campaign_prepared_in_a_process_of_its_own_is_staged_exactly_alike(
    tmp_path: Path, campaign_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here_url = f"sqlite:///{tmp_path / 'here.db'}"
    here = Preparer(settings(), ("to", "name", "state"))
    monkeypatch.setattr(prepare_process, "MIN_BYTES_RENDERED", 1 << 60)
    stage(here_url, campaign_csv, settings(), here)

    there_url = f"sqlite:///{tmp_path / 'there.db'}"
    there = Preparer(settings(), ("to", "name", "state"))
    there.staged = not_here  # type: ignore[method-assign]  # this process prepares nothing
    monkeypatch.setattr(prepare_process, "MIN_BYTES_RENDERED", 0)
    stage(there_url, campaign_csv, settings(), there)

    expected = staged_everything(here_url, "prepared")
    assert staged_everything(there_url, "prepared") == expected
    statuses = {row[2] for row in expected["rows"]}
    assert statuses == {"pending", "rejected", "duplicate"}  # every kind was there
    # what the child counted came back: number rules, --smart-encoding, UCS-2 characters
    assert tallies(there) == tallies(here)
    interpreted, smart, non_gsm = tallies(there)
    assert interpreted and smart["rows"] > 0 and non_gsm


@pytest.mark.usefixtures("in_a_process")
def test_a_bad_row_far_down_the_file_refuses_the_campaign_as_before(
    tmp_path: Path, campaign_csv: Path
) -> None:
    lines = campaign_csv.read_text(encoding="utf-8").splitlines()
    lines.insert(250, "27821999999,one,two,three")  # a stray field on line 251
    campaign_csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'results.db'}"
    with pytest.raises(InputError, match=r"line 251: 4 fields where the header has 3"):
        stage(url, campaign_csv, settings())
    with Store.open(url) as store:
        assert store.campaign("prepared") is None  # nothing staged


@pytest.mark.usefixtures("in_a_process")
def test_too_many_unusable_rows_stage_nothing(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "bad.csv", [(f"bad {n}", "x", "y") for n in range(50)],
                    header=("to", "name", "state"))  # fmt: skip
    url = f"sqlite:///{tmp_path / 'results.db'}"
    with pytest.raises(InputError, match="are unusable"):
        stage(url, csv, settings(max_rejected=10.0))
    with Store.open(url) as store:
        assert store.campaign("prepared") is None


#: stand-ins for a child that goes wrong: what the run must make of each
_READ_SPEC = "import pickle, sys; sys.stdin.buffer.read(); out = sys.stdout.buffer; "
BROKEN_CHILDREN = {
    "dies": ("raise SystemExit(3)", r"exit status 3.*nothing was staged"),
    "answers garbage": (_READ_SPEC + "out.write(b'not a pickle')", "nothing was staged"),
    "answers an unknown pickle protocol": (
        _READ_SPEC + "out.write(bytes([128, 9]) + b'x')",  # ValueError, not UnpicklingError
        "ended before the last row.*nothing was staged",
    ),
    "stops mid-pickle": (
        _READ_SPEC + "out.write(pickle.dumps(('rows', [(1, '2782', 'pending')] * 9))[:-5])",
        "ended before the last row.*nothing was staged",
    ),
    "fails (a bug)": (
        _READ_SPEC + "pickle.dump(('failed', 'Traceback: boom'), out)",
        "preparing the rows failed, nothing was staged:\nTraceback: boom",
    ),
}


@pytest.mark.usefixtures("in_a_process")
@pytest.mark.parametrize("how", BROKEN_CHILDREN)
def test_a_preparing_process_that_goes_wrong_stages_nothing(
    tmp_path: Path, campaign_csv: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    code, message = BROKEN_CHILDREN[how]
    monkeypatch.setattr(prepare_process, "CHILD_COMMAND", (sys.executable, "-c", code))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    with pytest.raises(BatchSenderError, match=message):
        stage(url, campaign_csv, settings())
    with Store.open(url) as store:
        assert store.campaign("prepared") is None


@pytest.mark.usefixtures("in_a_process")
def test_a_file_read_from_stdin_is_prepared_from_its_spooled_copy(
    tmp_path: Path, campaign_csv: Path
) -> None:
    expected_url = f"sqlite:///{tmp_path / 'file.db'}"
    stage(expected_url, campaign_csv, settings())
    url = f"sqlite:///{tmp_path / 'stdin.db'}"
    stream = io.BytesIO(campaign_csv.read_bytes())
    with Store.open(url) as store, sources.open_csv_stream(stream) as source:
        assert source.spooled
        campaign.stage(store, source, settings())
    assert staged_everything(url, "prepared") == staged_everything(expected_url, "prepared")


@pytest.mark.usefixtures("in_a_process")
def test_a_run_prepared_in_a_process_sends_every_accepted_row(
    bs: Callable[..., CliResult], simulator: Any, campaign_csv: Path, tmp_path: Path
) -> None:
    result = bs(
        "run", str(campaign_csv), "--text", TEXT, "--country", "ZA", "--name", "big", "--json",
        sim=simulator,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = staged_everything(f"sqlite:///{tmp_path / 'results.db'}", "big")["rows"]
    assert len(rows) == 300
    sent = [row for row in rows if row[2] not in ("rejected", "duplicate")]
    assert len(sent) < len(rows)
    assert sent and {row[2] for row in sent} == {"sent"}
    assert simulator.accepted_count == len(sent)


def test_a_file_is_prepared_apart_from_the_size_its_kind_of_text_pays_for(tmp_path: Path) -> None:
    """1–4 MiB: apart when each row's text is rendered (18 µs a row), here for one text (4 µs)."""
    rows = [(f"2782{n:07d}", f"name {n}", "ready") for n in range(40_000)]
    csv = write_csv(tmp_path / "mid.csv", rows, header=("to", "name", "state"))
    assert prepare_process.MIN_BYTES_RENDERED <= csv.stat().st_size < prepare_process.MIN_BYTES
    here = (row for row in ())
    for text, apart in (("one text for all", False), (TEXT, True)):
        preparer = Preparer(settings(text=text), ("to", "name", "state"))
        preparer.staged = lambda _records, **_: here  # type: ignore[assignment,method-assign]
        with sources.open_csv(csv) as source:
            rows_of = prepare_process.staged_rows(source, settings(text=text), preparer)
            assert (rows_of is not here) == apart, text
            rows_of.close()  # (the child starts at the first row asked for: none was)
