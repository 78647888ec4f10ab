"""Recipient sources, CSV and SQL: streamed rows, and one clear line for every bad input."""

from __future__ import annotations

import csv
import filecmp
import os
import shutil
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from batch_sender.errors import InputError
from batch_sender.sources import Source, SourceRow, open_csv, open_sql
from batch_sender.sources.csvfile import MAX_FIELD_CHARS
from batch_sender.sources.sql import SQL_BATCH_ROWS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"


def write(tmp_path: Path, content: str | bytes, name: str = "campaign.csv") -> Path:
    """A file in tmp_path holding exactly ``content`` (str is written as UTF-8, newlines as is)."""
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def rows_of(path: Path, **options: object) -> list[SourceRow]:
    return list(open_csv(path, **options))  # type: ignore[arg-type]


def input_error(path: Path, **options: object) -> str:
    """The message of the InputError that opening and reading ``path`` raises."""
    with pytest.raises(InputError) as caught:
        rows_of(path, **options)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- CSV: reading ---------------------------------------------------------------------------------


def test_csv_rows_carry_numbers_fields_and_positions(tmp_path: Path) -> None:
    path = write(tmp_path, "to,name,city\n27999000001,Thabo,Durban\n27999000002,Lerato,Soweto\n")
    source = open_csv(path)
    assert isinstance(source, Source)
    assert source.columns == ("to", "name", "city")
    assert source.description == str(path)
    assert list(source) == [
        SourceRow(1, 2, "27999000001", {"to": "27999000001", "name": "Thabo", "city": "Durban"}),
        SourceRow(2, 3, "27999000002", {"to": "27999000002", "name": "Lerato", "city": "Soweto"}),
    ]


def test_csv_with_byte_order_mark_and_crlf_reads_like_plain_utf8(tmp_path: Path) -> None:
    plain = rows_of(write(tmp_path, "to,name\n27999000001,Zoë\n", "plain.csv"))
    excel = rows_of(write(tmp_path, "\ufeffto,name\r\n27999000001,Zoë\r\n", "excel.csv"))
    assert excel == plain
    assert excel[0].fields == {"to": "27999000001", "name": "Zoë"}


def test_csv_byte_order_mark_is_dropped_even_when_reading_as_plain_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffto,name\n27999000001,Zoë\n")
    assert open_csv(path, encoding="utf-8").columns == ("to", "name")


def test_csv_quoted_fields_keep_delimiters_quotes_and_newlines(tmp_path: Path) -> None:
    content = 'to,name,note\r\n27999000001,"Smith, John","said ""hi""\r\nthen left"\r\n2,b,c\r\n'
    rows = rows_of(write(tmp_path, content))
    assert rows[0].fields["name"] == "Smith, John"
    assert rows[0].fields["note"] == 'said "hi"\r\nthen left'
    assert [(r.row_no, r.line_no) for r in rows] == [(1, 2), (2, 4)]


def test_csv_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path: Path) -> None:
    rows = rows_of(write(tmp_path, "\nto,name\n\n27999000001,a\n\n\n27999000002,b\n\n"))
    assert [(r.row_no, r.line_no, r.number) for r in rows] == [
        (1, 4, "27999000001"),
        (2, 7, "27999000002"),
    ]


def test_csv_header_names_are_stripped_of_whitespace(tmp_path: Path) -> None:
    source = open_csv(write(tmp_path, " to , first name ,city\t\n1,2,3\n"))
    assert source.columns == ("to", "first name", "city")


def test_csv_number_column_can_be_named(tmp_path: Path) -> None:
    rows = rows_of(write(tmp_path, "name,mobile\nThabo,27999000001\n"), to_column="mobile")
    assert rows[0].number == "27999000001"


def test_csv_empty_fields_are_empty_strings(tmp_path: Path) -> None:
    rows = rows_of(write(tmp_path, 'to,name\n,\n""," "\n'))
    assert [r.fields for r in rows] == [{"to": "", "name": ""}, {"to": "", "name": " "}]


def test_csv_other_encodings_can_be_given(tmp_path: Path) -> None:
    path = write(tmp_path, "to;name\n27999000001;Renée\n".encode("cp1252"))
    assert rows_of(path, encoding="cp1252")[0].fields["name"] == "Renée"


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_csv_delimiter_is_sniffed(tmp_path: Path, delimiter: str) -> None:
    lines = [["to", "name", "city"], ["27999000001", "Thabo", "Cape Town"], ["2", "b", "c"]]
    content = "".join(delimiter.join(line) + "\n" for line in lines)
    source = open_csv(write(tmp_path, content))
    assert source.delimiter == delimiter
    assert source.columns == ("to", "name", "city")


def test_csv_sniffing_is_not_fooled_by_commas_inside_quoted_fields(tmp_path: Path) -> None:
    content = 'to;name;note\n1;"Smith, John";"a, b, c"\n2;"Doe, Jane";"d, e"\n'
    rows = rows_of(write(tmp_path, content))
    assert rows[0].fields == {"to": "1", "name": "Smith, John", "note": "a, b, c"}


def test_csv_sniffing_trusts_the_header_over_commas_in_unquoted_fields(tmp_path: Path) -> None:
    # csv.Sniffer alone answers ',' here: it takes , 'yes', for a quoted field between commas.
    content = "to;text\n1;She wrote, 'yes', twice\n2;She wrote, 'no', once\n"
    rows = rows_of(write(tmp_path, content))
    assert rows[0].fields == {"to": "1", "text": "She wrote, 'yes', twice"}


def test_csv_single_column_file_reads_numbers_with_spaces(tmp_path: Path) -> None:
    rows = rows_of(write(tmp_path, "to\n+27 99 900 0001\n099 900 0002\n"))
    assert [r.number for r in rows] == ["+27 99 900 0001", "099 900 0002"]


def test_csv_given_delimiter_overrides_sniffing(tmp_path: Path) -> None:
    path = write(tmp_path, "to;name\n27999000001;a,b\n27999000002;c,d\n")
    with pytest.raises(InputError, match="no 'to' column"):
        open_csv(path, delimiter=",")
    assert rows_of(path, delimiter=";")[1].fields == {"to": "27999000002", "name": "c,d"}


def test_csv_iteration_is_lazy_the_first_row_arrives_before_a_bad_line_far_below(
    tmp_path: Path,
) -> None:
    good = "".join(f"2799{i:07d},name {i}\n" for i in range(20_000))  # ~450 KB
    path = write(tmp_path, "to,name\n" + good + "27999999999,x,extra\n")
    rows = iter(open_csv(path))
    assert next(rows).number == "27990000000"
    with pytest.raises(InputError, match=r"line 20002: 3 fields where the header has 2"):
        for _ in rows:
            pass


def test_csv_source_iterates_once(tmp_path: Path) -> None:
    source = open_csv(write(tmp_path, "to\n1\n"))
    assert len(list(source)) == 1
    with pytest.raises(RuntimeError, match="only once"):
        iter(source)


def test_csv_close_in_the_middle_of_iteration_releases_the_file(tmp_path: Path) -> None:
    source = open_csv(write(tmp_path, "to\n1\n2\n3\n"))
    rows = iter(source)
    next(rows)
    source.close()
    assert list(rows) == []
    source.close()  # twice is fine


def test_csv_context_manager_closes(tmp_path: Path) -> None:
    with open_csv(write(tmp_path, "to\n1\n2\n")) as source:
        first = next(iter(source))
    assert first.number == "1"
    assert source._file.closed


# -- CSV: identity --------------------------------------------------------------------------------


def test_csv_identity_follows_content_not_location(tmp_path: Path) -> None:
    original = write(tmp_path, "to,name\n27999000001,a\n")
    copy = tmp_path / "elsewhere" / "renamed.csv"
    copy.parent.mkdir()
    shutil.copy(original, copy)
    edited = write(tmp_path, "to,name\n27999000001,b\n", "edited.csv")
    assert open_csv(original).identity == open_csv(copy).identity
    assert open_csv(original).identity != open_csv(edited).identity


def test_csv_identity_changes_with_the_number_column(tmp_path: Path) -> None:
    path = write(tmp_path, "to,alt\n27999000001,27999000002\n")
    assert open_csv(path).identity != open_csv(path, to_column="alt").identity


# -- CSV: refused when opened ---------------------------------------------------------------------


def test_csv_missing_file_is_an_input_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    assert input_error(path) == f"{path}: no such file"


def test_csv_directory_is_an_input_error(tmp_path: Path) -> None:
    assert "is a directory" in input_error(tmp_path)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads anything")
def test_csv_unreadable_file_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "to\n1\n")
    path.chmod(0)
    assert "Permission denied" in input_error(path)


@pytest.mark.parametrize("content", ["", "\n\n", "\ufeff"])
def test_csv_empty_file_is_an_input_error(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, content)
    assert input_error(path) == f"{path}: the file is empty (no header row)"


def test_csv_header_only_is_an_input_error_no_recipients(tmp_path: Path) -> None:
    path = write(tmp_path, "to,name\n\n")
    assert "no recipients" in input_error(path)


def test_csv_header_only_is_allowed_when_asked(tmp_path: Path) -> None:
    assert rows_of(write(tmp_path, "to,name\n"), allow_empty=True) == []


def test_csv_missing_number_column_names_the_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path, "phone,name,city\n1,2,3\n")
    message = input_error(path)
    assert message == (f"{path}: no 'to' column for the numbers; the header has: phone, name, city")


def test_csv_duplicate_header_names_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "to,name,city, name\n1,2,3,4\n")
    assert input_error(path) == f"{path}: line 1: duplicate column 'name' (columns 2 and 4)"


def test_csv_unnamed_header_column_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "to,name,\n1,2,3\n")
    assert input_error(path) == f"{path}: line 1: header column 3 has no name"


def test_csv_bad_delimiter_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="one character"):
        open_csv(write(tmp_path, "to\n1\n"), delimiter=";;")


def test_csv_unknown_encoding_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown encoding 'klingon'"):
        open_csv(write(tmp_path, "to\n1\n"), encoding="klingon")


# -- CSV: refused while reading, naming the line --------------------------------------------------


def test_csv_row_with_more_fields_than_the_header_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "to,name\n1,a\n2,b\n3,c,d\n")
    assert input_error(path) == (
        f"{path}: line 4: 3 fields where the header has 2 (a stray ',' in an unquoted field?)"
    )


def test_csv_row_with_fewer_fields_than_the_header_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "to,name,city\n1,a,x\n2,b\n")
    assert input_error(path) == (
        f"{path}: line 3: 2 fields where the header has 3 (missing fields?)"
    )


def test_csv_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"to,name\n1,a\n2,b\n3,caf\xe9\n4,d\n")
    assert input_error(path) == (
        f"{path}: line 4: not valid UTF-8 text (save the file as UTF-8, or pass its encoding)"
    )


def test_csv_invalid_utf8_far_below_names_the_line(tmp_path: Path) -> None:
    good = "".join(f"2799{i:07d},name\n" for i in range(10_000)).encode()
    path = write(tmp_path, b"to,name\r\n" + good + b"1,\xff\xfe\n")
    rows = iter(open_csv(path))
    assert next(rows).row_no == 1
    with pytest.raises(InputError, match=r": line 10002: not valid UTF-8"):
        list(rows)


def test_csv_nul_byte_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "to,name\n1,a\n\n2,b\x00c\n")
    assert input_error(path) == f"{path}: line 4: NUL byte (is this a CSV text file?)"


def test_csv_binary_file_is_refused_as_not_text(tmp_path: Path) -> None:
    path = write(
        tmp_path, b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + bytes(200), "a.xlsx"
    )
    assert "line 1: NUL byte" in input_error(path)


def test_csv_unbalanced_quote_reaching_the_end_names_the_line_where_it_opens(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, 'to,name\n1,a\n2,"b\n3,c\n4,d\n')
    assert input_error(path) == (
        f"{path}: line 3: a quoted field is never closed before the end of the file"
    )


def test_csv_field_over_the_limit_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "to,name\n1,a\n2," + "x" * (MAX_FIELD_CHARS + 1) + "\n")
    assert input_error(path) == (
        f"{path}: line 3: a field longer than {MAX_FIELD_CHARS} characters (an unbalanced quote?)"
    )


def test_csv_field_at_the_limit_is_read(tmp_path: Path) -> None:
    path = write(tmp_path, "to,name\n1," + "x" * MAX_FIELD_CHARS + "\n")
    assert len(rows_of(path)[0].fields["name"]) == MAX_FIELD_CHARS


def test_csv_text_after_a_closing_quote_is_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, 'to,name\n1,"a"b\n')
    assert input_error(path) == f"{path}: line 2: malformed CSV: ',' expected after '\"'"


def test_csv_bad_first_row_is_refused_when_opening(tmp_path: Path) -> None:
    path = write(tmp_path, "to,name\n1,a,b\n")
    with pytest.raises(InputError, match="line 2: 3 fields"):
        open_csv(path)


# -- SQL ------------------------------------------------------------------------------------------

RECIPIENTS = [
    (27999000001, "Thabo", "Durban", 12.5),
    (27999000002, "Zoë", None, None),
    (27999000003, "Smith, John", "Cape Town", 0.0),
]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file holding a ``people`` table of three recipients."""
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (mobile INTEGER, name TEXT, city TEXT, balance REAL)")
        conn.executemany("INSERT INTO people VALUES (?, ?, ?, ?)", RECIPIENTS)
    conn.close()
    return f"sqlite:///{path}"


def test_sql_rows_are_text_with_null_as_empty(sqlite_url: str) -> None:
    source = open_sql(
        sqlite_url, 'SELECT mobile AS "to", name, city, balance FROM people ORDER BY mobile'
    )
    assert isinstance(source, Source)
    assert source.columns == ("to", "name", "city", "balance")
    rows = list(source)
    assert rows[0] == SourceRow(
        1, 1, "27999000001", {"to": "27999000001", "name": "Thabo", "city": "Durban",
                              "balance": "12.5"}
    )  # fmt: skip
    assert rows[1].fields == {"to": "27999000002", "name": "Zoë", "city": "", "balance": ""}
    assert [r.row_no for r in rows] == [1, 2, 3]


def test_sql_query_is_sent_as_written_percent_and_colon_included(sqlite_url: str) -> None:
    query = (
        "SELECT mobile AS \"to\", '10:30' AS at, name FROM people"
        " WHERE CAST(mobile AS TEXT) LIKE '2799900000%' AND name NOT LIKE '%:x%' ORDER BY mobile"
    )
    rows = list(open_sql(sqlite_url, query))
    assert len(rows) == 3
    assert rows[0].fields["at"] == "10:30"


def test_sql_number_column_can_be_named(sqlite_url: str) -> None:
    source = open_sql(sqlite_url, "SELECT name, mobile FROM people", to_column="mobile")
    assert sorted(row.number for row in source) == ["27999000001", "27999000002", "27999000003"]


def test_sql_missing_number_column_lists_the_columns(sqlite_url: str) -> None:
    with pytest.raises(InputError) as caught:
        open_sql(sqlite_url, "SELECT mobile, name FROM people")
    assert str(caught.value).endswith(
        "no 'to' column for the numbers; the query returns: mobile, name"
    )


def test_sql_duplicate_column_names_are_refused(sqlite_url: str) -> None:
    with pytest.raises(InputError, match="two columns named 'to'"):
        open_sql(sqlite_url, 'SELECT mobile AS "to", name AS "to" FROM people')


def test_sql_failing_query_gives_the_database_message(sqlite_url: str) -> None:
    with pytest.raises(InputError) as caught:
        open_sql(sqlite_url, 'SELECT "to" FROM nobody')
    message = str(caught.value)
    assert message.startswith('SQL: SELECT "to" FROM nobody (sqlite:///')
    assert message.endswith("query failed: no such table: nobody")


def test_sql_statement_without_rows_is_refused(sqlite_url: str) -> None:
    with pytest.raises(InputError, match="returns no rows"):
        open_sql(sqlite_url, "UPDATE people SET city = 'x' WHERE 1 = 0")


def test_sql_empty_result_is_no_recipients_unless_allowed(sqlite_url: str) -> None:
    query = 'SELECT mobile AS "to" FROM people WHERE 1 = 0'
    with pytest.raises(InputError, match="no recipients"):
        open_sql(sqlite_url, query)
    assert list(open_sql(sqlite_url, query, allow_empty=True)) == []


@pytest.mark.parametrize(
    "url", ["postgres//user:s3cret@host/db", "postgresql://user:s3c:ret@host:port/db", "x:s3cret@"]
)
def test_sql_bad_url_is_an_input_error_without_the_password(url: str) -> None:
    with pytest.raises(InputError) as caught:
        open_sql(url, "SELECT 1")
    assert "s3c" not in str(caught.value)
    assert "not a database URL" in str(caught.value)


def test_sql_unknown_driver_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown database driver 'nosuchdb'"):
        open_sql("nosuchdb://user:s3cret@host/db", "SELECT 1")


def test_sql_uninstalled_driver_is_an_input_error() -> None:
    with pytest.raises(InputError, match="not installed") as caught:
        open_sql("mysql+mysqldb://user:s3cret@127.0.0.1/db", "SELECT 1")
    assert "s3cret" not in str(caught.value)


def test_sql_connection_refused_masks_the_password() -> None:
    with pytest.raises(InputError) as caught:
        open_sql(
            "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test?connect_timeout=3", "SELECT 1"
        )
    message = str(caught.value)
    assert "s3cret" not in message
    assert "postgres:***@127.0.0.1:1" in message
    assert "cannot connect:" in message
    assert "\n" not in message


def test_sql_description_shortens_the_query_and_masks_the_password(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    query = 'SELECT 1 AS "to"\n  FROM (SELECT 1)\n WHERE 1 = 1 ' + "AND 1 = 1 " * 10
    source = open_sql(f"sqlite:///{path}", query)
    assert source.description.startswith('SQL: SELECT 1 AS "to" FROM (SELECT 1) WHERE 1 = 1 AND')
    assert "…" in source.description
    assert source.description.endswith(f"(sqlite:///{path})")
    source.close()


def test_sql_identity_is_the_query_and_masked_url(sqlite_url: str) -> None:
    query = 'SELECT mobile AS "to" FROM people'
    one, two = open_sql(sqlite_url, query), open_sql(sqlite_url, query + " ORDER BY 1")
    assert one.identity == open_sql(sqlite_url, query).identity
    assert one.identity != two.identity
    assert query in one.identity


def test_sql_source_iterates_once_and_closes(sqlite_url: str) -> None:
    source = open_sql(sqlite_url, 'SELECT mobile AS "to" FROM people')
    assert len(list(source)) == 3
    with pytest.raises(RuntimeError, match="only once"):
        iter(source)
    source.close()


# -- SQL on every supported database (PostgreSQL and MariaDB skip when unreachable, unless CI) ----


@pytest.fixture
def crm_url(db_url: str) -> Iterator[tuple[str, str]]:
    """A database with a ``people_<hex>`` table of more rows than one fetch, and its URL."""
    table = f"people_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(db_url)
    meta = sa.MetaData()
    people = sa.Table(
        table,
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mobile", sa.String(20)),
        sa.Column("name", sa.String(50)),
        sa.Column("balance", sa.Numeric(10, 2), nullable=True),
    )
    meta.create_all(engine)
    count = SQL_BATCH_ROWS * 2 + 7
    with engine.begin() as conn:
        conn.execute(
            people.insert(),
            [
                {"id": i, "mobile": f"2799{i:07d}", "name": "Zoë" if i % 2 else "李雷",
                 "balance": None if i % 3 else i}
                for i in range(1, count + 1)
            ],
        )  # fmt: skip
    try:
        yield db_url, table
    finally:
        meta.drop_all(engine)
        engine.dispose()


def test_sql_streams_every_row_from_each_database(crm_url: tuple[str, str]) -> None:
    url, table = crm_url
    source = open_sql(url, f"SELECT mobile AS to_, name, balance FROM {table} ORDER BY id",
                      to_column="to_")  # fmt: skip
    rows = list(source)
    assert len(rows) == SQL_BATCH_ROWS * 2 + 7
    assert rows[0] == SourceRow(1, 1, "27990000001", {"to_": "27990000001", "name": "Zoë",
                                                      "balance": ""})  # fmt: skip
    assert float(rows[2].fields["balance"]) == 3  # "3.00" (NUMERIC), "3" on SQLite
    assert rows[1].fields["name"] == "李雷"
    assert rows[-1].row_no == len(rows)


def test_sql_like_with_percent_works_on_each_database(crm_url: tuple[str, str]) -> None:
    url, table = crm_url
    query = f"SELECT mobile AS mobile, name FROM {table} WHERE mobile LIKE '2799000000%'"
    assert len(list(open_sql(url, query, to_column="mobile"))) == 9


def test_sql_close_mid_stream_releases_the_connection(crm_url: tuple[str, str]) -> None:
    url, table = crm_url
    source = open_sql(url, f"SELECT mobile, name FROM {table} ORDER BY id", to_column="mobile")
    rows = iter(source)
    assert next(rows).number == "27990000001"
    source.close()
    assert list(rows) == []


def test_sql_failing_query_names_the_database_error(crm_url: tuple[str, str]) -> None:
    url, _ = crm_url
    with pytest.raises(InputError) as caught:
        open_sql(url, "SELECT mobile FROM no_such_table_here")
    message = str(caught.value)
    assert "query failed:" in message
    assert "no_such_table_here" in message
    assert "\n" not in message


# -- sample data ----------------------------------------------------------------------------------


def test_sample_campaign_is_what_its_generator_writes(tmp_path: Path) -> None:
    sys.path.insert(0, str(SAMPLE))
    try:
        import make_campaign
    finally:
        sys.path.remove(str(SAMPLE))
    fresh = tmp_path / "campaign.csv"
    make_campaign.write(fresh)
    assert filecmp.cmp(fresh, SAMPLE / "campaign.csv", shallow=False)


def test_sample_campaign_reads_as_three_thousand_recipients() -> None:
    source = open_csv(SAMPLE / "campaign.csv")
    assert source.columns == ("to", "name", "city", "amount")
    rows = list(source)
    assert len(rows) == 3000
    numbers = [r.number for r in rows]
    assert any(n.startswith("+27 ") for n in numbers)
    assert any(n.startswith("0027") for n in numbers)
    assert any(n.startswith("08") for n in numbers)  # national: needs --country ZA
    assert "" in numbers
    assert any(not name.isascii() for name in (r.fields["name"] for r in rows))


def test_sample_reports_run_on_each_database(db_url: str) -> None:
    """Every query of reports.sql runs against stand-in `results`/`campaign_summary` tables."""
    engine = sa.create_engine(db_url)
    meta = sa.MetaData()
    results = sa.Table(
        "results",
        meta,
        sa.Column("campaign", sa.String(200)),
        sa.Column("row_no", sa.Integer),
        sa.Column("msisdn", sa.String(64)),
        sa.Column("status", sa.String(12)),
        sa.Column("api_message_id", sa.String(64)),
        sa.Column("error_code", sa.String(8)),
        sa.Column("error_description", sa.String(255)),
        sa.Column("client_message_id", sa.String(32)),
        sa.Column("parts", sa.Integer),
        sa.Column("attempts", sa.Integer),
        sa.Column("updated_at", sa.DateTime),
    )
    summary = sa.Table(
        "campaign_summary",
        meta,
        sa.Column("campaign", sa.String(200)),
        sa.Column("status", sa.String(12)),
        sa.Column("recipients", sa.Integer),
        sa.Column("parts", sa.Integer),
    )
    name = "campaign-2025-11-25"
    recipients = [
        (1, "27999000001", "sent", None, None, 2),
        (2, "27999000002", "failed", "105", "Invalid destination address", 1),
        (3, "27999000001", "duplicate", None, None, 2),
        (4, "27abc", "rejected", None, "not a phone number", 0),
        (5, "27999000005", "unknown", None, None, 1),
    ]
    meta.create_all(engine)
    try:
        with engine.begin() as conn:
            conn.execute(
                results.insert(),
                [
                    {"campaign": name, "row_no": n, "msisdn": m, "status": s, "error_code": c,
                     "error_description": d, "parts": p, "attempts": 1}
                    for n, m, s, c, d, p in recipients
                ],
            )  # fmt: skip
            conn.execute(
                summary.insert(),
                [
                    {"campaign": name, "status": s, "recipients": 1, "parts": p}
                    for _, _, s, _, _, p in recipients
                ],
            )
        statements = _statements((SAMPLE / "reports.sql").read_text(encoding="utf-8"))
        assert 6 <= len(statements) <= 8
        with engine.connect() as conn:
            answers = [conn.exec_driver_sql(sql).all() for sql in statements]
    finally:
        meta.drop_all(engine)
        engine.dispose()
    assert [row.row_no for row in answers[1]] == [2, 3, 4, 5]  # who did not get it
    assert [tuple(row) for row in answers[3]] == [(name, 1, 2)]  # credits used
    assert [row.msisdn for row in answers[6]] == ["27999000001"]  # listed twice in the source


def _statements(script: str) -> list[str]:
    """The statements of a SQL script whose statements end with ';' at the end of a line."""
    body = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";\n") if s.strip().rstrip(";")]


def test_benchmark_generator_writes_the_rows_asked_for(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gen_campaign
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path / "big.csv"
    assert gen_campaign.main(["5000", "--fields", "name,city,amount,text", "--invalid", "0.1",
                              "--duplicates", "0.05", "--out", str(out)]) == 0  # fmt: skip
    rows = rows_of(out)
    assert len(rows) == 5000
    assert open_csv(out).columns == ("to", "name", "city", "amount", "text")
    numbers = [r.number for r in rows]
    assert 300 < sum(not n.isdigit() or len(n) != 11 for n in numbers) < 700
    assert 4000 < len(set(numbers)) < 4800
    with out.open(newline="", encoding="utf-8") as f:
        assert sum(1 for _ in csv.reader(f)) == 5001
