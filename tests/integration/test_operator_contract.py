"""What an operator types at 2 a.m., through the real CLI: encodings, standard input, database
URLs and locations, the configuration as written, one error style, install and start-up cost.

Most tests run the installed console script in a subprocess (as cron does); the rest use click's
runner where what is checked is the CLI's own parsing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures_db import fresh_db_url
from sqlalchemy import create_engine, text

Script = Callable[..., subprocess.CompletedProcess[str]]

ROWS = "to,name\n27821000001,Renée\n27821000002,Zoë\n"


def error_line(stderr: str) -> str:
    """The one `batch-sender: error:` line of a refused command (log lines aside)."""
    lines = [line for line in stderr.strip().splitlines() if " INFO " not in line]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("batch-sender: error: "), stderr
    return lines[0].removeprefix("batch-sender: error: ")


def dry_run_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


# -- 5: Excel's exports -----------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-8-sig"])
def test_csv_with_a_byte_order_mark_is_read_in_its_encoding(
    tmp_path: Path, bs_script: Script, codec: str
) -> None:
    data = ROWS.encode(codec)
    if codec == "utf-16-be":
        data = b"\xfe\xff" + data  # Python's utf-16-be writes no BOM; Excel's export has one
    path = tmp_path / "excel.csv"
    path.write_bytes(data)
    result = bs_script("run", str(path), "--text", "Hi {name}", "--dry-run", "--json")
    report = dry_run_json(result)
    assert report["recipients"] == 2
    assert report["non_gsm_characters"] == {"ë": 1}  # Zoë read as Zoë, not as mojibake


def test_cp1252_csv_is_refused_with_the_encoding_flag_named_then_read_with_it(
    tmp_path: Path, bs_script: Script
) -> None:
    path = tmp_path / "windows.csv"
    path.write_bytes(ROWS.encode("cp1252"))
    refused = bs_script("run", str(path), "--text", "Hi {name}", "--dry-run")
    assert refused.returncode == 2
    assert "--encoding cp1252" in error_line(refused.stderr)
    read = bs_script(
        "run", str(path), "--encoding", "cp1252", "--text", "Hi {name}", "--dry-run", "--json"
    )
    assert dry_run_json(read)["non_gsm_characters"] == {"ë": 1}


def test_unknown_encoding_is_exit_2(tmp_path: Path, bs_script: Script) -> None:
    path = tmp_path / "c.csv"
    path.write_text(ROWS, encoding="utf-8")
    result = bs_script("run", str(path), "--encoding", "klingon", "--text", "Hi", "--dry-run")
    assert result.returncode == 2
    assert "unknown encoding 'klingon'" in error_line(result.stderr)


# -- 8: standard input and the --sql examples ---------------------------------------------------


def test_dash_reads_the_campaign_from_standard_input_and_resumes_on_the_same_content(
    tmp_path: Path, simulator: Any
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    env = {
        **os.environ,
        "BATCH_SENDER_DB": db,
        "BATCH_SENDER_GATEWAY_URL": simulator.url,
        "CLICKATELL_API_ID": str(simulator.credentials.api_id),
        "CLICKATELL_USER": simulator.credentials.user,
        "CLICKATELL_PASSWORD": simulator.credentials.password,
    }
    exe = str(Path(sys.executable).parent / "batch-sender")
    args = [exe, "run", "-", "--name", "piped", "--text", "Hi {name}", "--json"]
    first = subprocess.run(
        args, input=ROWS.encode("utf-16"), env=env, capture_output=True, timeout=120, check=False
    )
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["counts"] == {"sent": 2}
    again = subprocess.run(
        args, input=ROWS.encode("utf-16"), env=env, capture_output=True, timeout=120, check=False
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["staged"] is False  # the same content: the same campaign
    assert simulator.accepted_count == 2  # nobody got it twice


def test_dash_without_a_name_is_exit_2_and_stages_nothing(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    exe = str(Path(sys.executable).parent / "batch-sender")
    result = subprocess.run(
        [exe, "run", "-", "--text", "Hi"],
        input=ROWS.encode(),
        env={**os.environ, "BATCH_SENDER_DB": f"sqlite:///{db}"},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "needs --name" in error_line(result.stderr.decode())
    assert not db.exists()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def crm_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A source database with a ``customers`` table (phone, name), on each engine."""
    kind = request.param
    gen = fresh_db_url(kind, tmp_path / "crm") if kind != "sqlite" else None
    if gen is None:
        (tmp_path / "crm").mkdir()
        url = f"sqlite:///{tmp_path / 'crm' / 'crm.db'}"
    else:
        url = next(gen)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE customers (phone VARCHAR(20), name VARCHAR(20))"))
        conn.execute(
            text("INSERT INTO customers VALUES ('27821000001', 'Ann'), ('27821000002', 'Bo')")
        )
    engine.dispose()
    yield url
    if gen is not None:
        gen.close()


def help_examples(bs_script: Script) -> list[str]:
    """The --sql queries the `run --help` examples show."""
    shown = bs_script("run", "--help").stdout
    queries = []
    for line in shown.splitlines():
        line = line.strip()
        if line.startswith("batch-sender run --sql"):
            rest = line.removeprefix("batch-sender run --sql ").strip()
            quote = rest[0]
            queries.append((rest[1 : rest.index(quote, 1)], "--to-column phone" in line))
    assert len(queries) == 2, shown
    return queries  # type: ignore[return-value]


def test_the_help_sql_examples_run_on_each_database(
    tmp_path: Path, bs_script: Script, crm_url: str
) -> None:
    for query, by_column in help_examples(bs_script):
        extra = ["--to-column", "phone"] if by_column else []
        result = bs_script(
            "run", "--sql", query, "--source-db", crm_url, "--name", "crm", *extra,
            "--text", "Hi {name}", "--dry-run", "--json",
        )  # fmt: skip
        assert dry_run_json(result)["recipients"] == 2, query


# -- 7: database URLs without a driver -----------------------------------------------------------


def test_mysql_and_mariadb_urls_without_a_driver_use_the_installed_pymysql(
    tmp_path: Path, bs_script: Script
) -> None:
    gen = fresh_db_url("mariadb", tmp_path)
    url = next(gen)
    try:
        bare = url.replace("mysql+pymysql://", "mysql://")
        upgraded = bs_script("db", "upgrade", "--db", bare)
        assert upgraded.returncode == 0, upgraded.stderr
        listed = bs_script(
            "suppress", "list", "--db", url.replace("mysql+pymysql://", "mariadb://")
        )
        assert listed.returncode == 0, listed.stderr
    finally:
        gen.close()


def test_a_missing_driver_names_the_extra_that_installs_it(
    tmp_path: Path, bs_script: Script
) -> None:
    result = bs_script("db", "upgrade", "--db", "mysql+mysqldb://root@127.0.0.1/none")
    assert result.returncode == 2
    message = error_line(result.stderr)
    assert "batch-sender[mysql]" in message
    assert "batch-sender[postgres]" not in message


# -- 6: one absolute per-user database; read commands create and migrate nothing -----------------


def console(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """The console script with the environment given (``unset`` names removed), in ``cwd``."""
    full = {k: v for k, v in os.environ.items() if k not in ("BATCH_SENDER_DB", *unset)}
    full.update(env or {})
    return subprocess.run(
        [str(Path(sys.executable).parent / "batch-sender"), *args],
        env=full,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_the_default_database_is_one_per_user_file_whatever_the_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {"XDG_STATE_HOME": str(state)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "c.csv").write_text(ROWS, encoding="utf-8")
    sent = console("run", "c.csv", "--text", "Hi", "--simulator", env=env, cwd=tmp_path / "a")
    assert sent.returncode == 0, sent.stderr
    db = state / "batch-sender" / "batch_sender.db"
    assert db.is_file()
    assert not (tmp_path / "a" / "batch_sender.db").exists()
    report = console("report", env=env, cwd=tmp_path / "b")  # cron's $HOME is elsewhere
    assert report.returncode == 0, report.stderr
    assert "sent          2" in report.stdout
    shown = console("config", "show", "--json", env=env, cwd=tmp_path / "b")
    rows = {r["name"]: r for r in json.loads(shown.stdout)["settings"]}
    assert rows["db"]["value"] == f"sqlite:///{db}"
    assert rows["db"]["source"] == "default"


def test_without_xdg_state_home_the_default_is_under_home(tmp_path: Path) -> None:
    shown = console(
        "config", "show", "--json", env={"HOME": str(tmp_path)}, unset=("XDG_STATE_HOME",)
    )
    rows = {r["name"]: r for r in json.loads(shown.stdout)["settings"]}
    assert rows["db"]["value"] == f"sqlite:///{tmp_path}/.local/state/batch-sender/batch_sender.db"


@pytest.mark.parametrize(
    "command",
    [
        ["report"],
        ["report", "c-2026-01-01", "--format", "csv"],
        ["suppress", "list"],
        ["suppress", "remove", "27821000001"],
        ["track", "c-2026-01-01"],
        ["reconcile", "c-2026-01-01"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_a_read_command_on_a_missing_database_is_exit_2_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    state = tmp_path / "state"
    result = console(*command, env={"XDG_STATE_HOME": str(state)}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "no results database at" in error_line(result.stderr)
    assert not state.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_read_command_never_migrates_it_says_to_run_db_upgrade(tmp_path: Path) -> None:
    from batch_sender.store import Store, migrate

    url = f"sqlite:///{tmp_path / 'old.db'}"
    Store.open(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        migrate.downgrade(conn, "-1")
        old = migrate.current(conn)
    for command in (["report"], ["suppress", "list"]):
        refused = console(*command, "--db", url)
        assert refused.returncode == 2
        assert "batch-sender db upgrade" in error_line(refused.stderr)
    with engine.connect() as conn:
        assert migrate.current(conn) == old  # untouched
    engine.dispose()
    upgraded = console("db", "upgrade", "--db", url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert console("suppress", "list", "--db", url).returncode == 0


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_read_command_on_an_empty_server_database_creates_no_table(
    tmp_path: Path, kind: str
) -> None:
    gen = fresh_db_url(kind, tmp_path)
    url = next(gen)
    try:
        result = console("report", "--db", url)
        assert result.returncode == 2
        assert "no batch-sender tables" in error_line(result.stderr)
        engine = create_engine(url)
        with engine.connect() as conn:
            from sqlalchemy import inspect

            assert inspect(conn).get_table_names() == []
        engine.dispose()
    finally:
        gen.close()


# -- 11: the configuration as the user writes it; one error style ------------------------------


def write_config(tmp_path: Path, text_: str) -> Path:
    path = tmp_path / "batch-sender.toml"
    path.write_text(text_, encoding="utf-8")
    return path


def test_config_show_lists_the_keys_and_flags_a_user_writes(tmp_path: Path) -> None:
    shown = console("config", "show", "run", "--from", "Shop", "--at", "2030-01-01 09:00")
    assert shown.returncode == 0, shown.stderr
    names = [line.split()[0] for line in shown.stdout.splitlines() if not line.startswith("#")]
    assert {"from", "at", "db", "chunk-size", "gateway-url"} <= set(names)
    assert not {"sender", "at_time", "db_url", "chunk_size", "fmt"} & set(names)
    report = console("config", "show", "report", "--json")
    rows = {r["name"]: r for r in json.loads(report.stdout)["settings"]}
    assert rows["format"]["flag"] == "--format"
    assert rows["output"] == {"name": "output", "flag": "-o/--output", "value": "-",
                              "source": "default"}  # fmt: skip
    assert "TextIOWrapper" not in report.stdout


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ('[run]\nchunk-size = "fifty"\n', "[run] chunk-size = 'fifty': 'fifty' is not a valid"),
        ('[run]\nparam = "validity=5"\n', "[run] param = 'validity=5': expected a list"),
        ('[run]\nfrom = "a-sender-id-too-long"\n', "[run] from = 'a-sender-id-too-long'"),
        ('[run]\nfrom = "Shop"\nsender = "Other"\n', "sets both 'from' and 'sender'"),
        ("chunk_size = 5\nchunk-size = 6\n", "'chunk-size' is set twice"),
    ],
    ids=["type", "list", "callback", "from-and-sender", "dash-and-underscore"],
)
def test_a_bad_file_value_names_the_file_and_key_not_a_flag(
    tmp_path: Path, content: str, expect: str
) -> None:
    path = write_config(tmp_path, content)
    (tmp_path / "c.csv").write_text(ROWS, encoding="utf-8")
    result = console("--config", str(path), "run", "c.csv", "--text", "Hi", "--dry-run")
    assert result.returncode == 2
    message = error_line(result.stderr)
    assert message.startswith(f"configuration file {path}: "), message
    assert expect in message
    assert "Invalid value for '--" not in message


def test_a_relative_credentials_file_is_read_from_the_config_files_directory(
    tmp_path: Path, simulator: Any
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    creds = simulator.credentials
    secret = etc / "credentials"
    secret.write_text(
        f"api_id={creds.api_id}\nuser={creds.user}\npassword={creds.password}\n", encoding="utf-8"
    )
    secret.chmod(0o600)
    path = write_config(etc, f'credentials_file = "credentials"\ngateway_url = "{simulator.url}"\n')
    (tmp_path / "c.csv").write_text(ROWS, encoding="utf-8")
    env = {"CLICKATELL_API_ID": "", "CLICKATELL_USER": "", "CLICKATELL_PASSWORD": "",
           "BATCH_SENDER_GATEWAY_URL": ""}  # fmt: skip
    result = console(
        "--config", str(path), "run", "c.csv", "--text", "Hi", "--db",
        f"sqlite:///{tmp_path / 'r.db'}", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert simulator.accepted_count == 2


@pytest.mark.parametrize(
    "args",
    [
        ["run", "c.csv", "--chunksize", "4"],
        ["run", "c.csv", "--chunk-size", "x"],
        ["no-such-command"],
        ["report", "--format", "xml"],
    ],
    ids=["unknown-option", "bad-value", "unknown-command", "bad-choice"],
)
def test_click_usage_errors_print_our_one_line_style(tmp_path: Path, args: list[str]) -> None:
    result = console(*args, cwd=tmp_path)
    assert result.returncode == 2
    message = error_line(result.stderr)
    assert "--help`)" in message
    assert "Usage:" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["report", "-o", "{tmp}/missing/out.txt"],
        ["report", "-o", "/dev/full"],
        ["report", "--html", "{tmp}/missing/r.html"],
        ["run", "c.csv", "--text", "Hi", "--simulator", "--metrics-file", "{tmp}/missing/m.prom"],
    ],
    ids=["output-dir", "output-full", "html", "metrics"],
)
def test_an_output_file_that_cannot_be_written_is_exit_2(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "c.csv").write_text(ROWS, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    made = console("run", "c.csv", "--name", "first", "--text", "Hi", "--simulator", "--db", db,
                   cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = console(*[a.format(tmp=tmp_path) for a in args], "--db", db, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "batch-sender: error: cannot write" in result.stderr  # (run also logs the metrics)
    assert "Traceback" not in result.stderr


# -- 13: start-up cost, version, licence ------------------------------------------------------

HEAVY = ("sqlalchemy", "alembic", "httpx", "lxml", "phonenumbers")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["run", "--help"],
        ["report", "--help"],
        ["suppress", "add", "--help"],
        ["callbacks", "--help"],
        ["--version"],
    ],  # fmt: skip
    ids=lambda a: " ".join(a),
)
def test_help_imports_none_of_the_heavy_libraries(args: list[str]) -> None:
    probe = (
        "import sys\n"
        "from batch_sender.cli import main\n"
        f"sys.argv = ['batch-sender', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules], code, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stderr.strip().splitlines()[-1] == "[] 0", result.stderr


def test_version_is_single_sourced() -> None:
    import importlib.metadata

    import batch_sender

    shown = console("--version")
    assert shown.returncode == 0
    assert shown.stdout.split()[-1] == batch_sender.__version__
    assert importlib.metadata.version("batch-sender") == batch_sender.__version__


def test_the_installed_metadata_names_its_licence_classifiers_and_project_urls() -> None:
    """What pip, pipx and PyPI show a user deciding whether to install it."""
    import importlib.metadata

    meta = importlib.metadata.metadata("batch-sender")
    assert meta["License-Expression"] == "MIT" or meta["License"] == "MIT"
    assert "Environment :: Console" in meta.get_all("Classifier", [])
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL", []))
    assert {"Homepage", "Documentation", "Issues"} <= set(urls), urls
    assert all(u.startswith("https://") for u in urls.values()), urls


# -- 14: --smart-encoding ---------------------------------------------------------------------

CURLY = "Hi {name}, don’t miss our “winter sale” – 50% off… this weekend only, at every store"


def smart_env(tmp_path: Path, simulator: Any) -> dict[str, str]:
    return {
        "BATCH_SENDER_DB": f"sqlite:///{tmp_path / 'r.db'}",
        "BATCH_SENDER_GATEWAY_URL": simulator.url,
        "CLICKATELL_API_ID": str(simulator.credentials.api_id),
        "CLICKATELL_USER": simulator.credentials.user,
        "CLICKATELL_PASSWORD": simulator.credentials.password,
    }


def test_the_dry_run_names_each_character_smart_encoding_changes_and_the_parts_saved(
    tmp_path: Path,
) -> None:
    (tmp_path / "c.csv").write_text(ROWS, encoding="utf-8")
    off = console("run", "c.csv", "--text", CURLY, "--dry-run", cwd=tmp_path)
    assert off.returncode == 0, off.stderr
    line = next(ln for ln in off.stdout.splitlines() if ln.startswith("smart_encoding:"))
    assert line.startswith("smart_encoding: off; --smart-encoding would replace '’' -> \"'\"")
    assert "'…' -> '...' (1 row)" in line  # Renée's text; Zoë's ë needs UCS-2 anyway
    assert line.endswith("and save 1 part (1 credit at 1 per part)")
    on = console("run", "c.csv", "--text", CURLY, "--dry-run", "--smart-encoding", "--json",
                 cwd=tmp_path)  # fmt: skip
    report = json.loads(on.stdout)
    assert report["parts"] == 3 and report["unicode_recipients"] == 1  # Zoë's ë: UCS-2, 2 parts
    assert report["smart_encoding"]["parts_saved"] == 1
    assert report["smart_encoding"]["characters"]["–"] == {"rows": 1, "becomes": "-"}


def test_smart_encoding_sends_gsm_text_and_is_part_of_the_campaign_identity(
    tmp_path: Path, simulator: Any
) -> None:
    (tmp_path / "c.csv").write_text(ROWS.replace("Zoë", "Zoe"), encoding="utf-8")
    env = smart_env(tmp_path, simulator)
    sent = console("run", "c.csv", "--name", "smart", "--text", CURLY, "--smart-encoding",
                   env=env, cwd=tmp_path)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert "smart_encoding: replaces" in sent.stderr  # the run says so too, never silently
    texts = {m.text for m in simulator.accepted}
    assert texts == {
        'Hi Renée, don\'t miss our "winter sale" - 50% off... this weekend only, at every store',
        'Hi Zoe, don\'t miss our "winter sale" - 50% off... this weekend only, at every store',
    }
    assert not any(m.unicode for m in simulator.accepted)
    resumed = console("run", "c.csv", "--name", "smart", "--text", CURLY, "--smart-encoding",
                      env=env, cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    toggled = console("run", "c.csv", "--name", "smart", "--text", CURLY, env=env, cwd=tmp_path)
    assert toggled.returncode == 2  # other texts: another campaign, not a silent resume
    assert "different source, text or options" in error_line(toggled.stderr)
    assert simulator.accepted_count == 2


def test_a_campaign_without_smart_encoding_keeps_its_fingerprint() -> None:
    import hashlib
    from dataclasses import asdict

    from batch_sender import campaign
    from batch_sender.config import MessageOptions, RunSettings

    class Source:
        identity = "csv sha256=0 size=0"

    settings = RunSettings(name="n", text="Hi", message=MessageOptions(sender="Shop"))
    message = asdict(settings.message)
    del message["smart_encoding"]  # the options as earlier versions recorded them
    before = {"source": Source.identity, "text": "Hi", "country": None, "strict": False,
              "message": message}  # fmt: skip
    expected = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()
    assert campaign.fingerprint(Source(), settings) == expected  # type: ignore[arg-type]
