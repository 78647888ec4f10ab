"""``batch-sender demo``: the sample campaign against the built-in simulator, from any install.

The sample ships in the package (``batch_sender/sample/campaign.csv``), so the quick start needs
no checkout: ``pip install batch-sender && batch-sender demo``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import click

__all__ = ["DEMO_COUNTRY", "DEMO_TEXT", "demo", "sample_csv"]

DEMO_TEXT = "Hi {name}, your parcel for {city} is on its way."
DEMO_COUNTRY = "ZA"  # the sample's national numbers (082 …) are South African


@contextlib.contextmanager
def sample_csv() -> Iterator[Path]:
    """The shipped sample campaign as a file on disk (extracted if the package is zipped)."""
    with resources.as_file(resources.files("batch_sender") / "sample" / "campaign.csv") as path:
        yield path


@click.command()
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Keep the record in this database (SQLAlchemy URL, e.g. sqlite:///demo.db). "
    "Default: a throwaway SQLite file, deleted afterwards. BATCH_SENDER_DB is not read: "
    "the demo never writes into your real database by accident.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def demo(ctx: click.Context, db_url: str | None, as_json: bool) -> None:
    """Send the sample campaign (3,000 rows) to the built-in simulator and print the report.

    The same as `batch-sender run SAMPLE --country ZA --text "..." --simulator`: every row is
    staged, sent over real HTTP to a simulator on a free port and recorded; no account and no
    real message. The sample holds some unusable numbers and duplicates on purpose (they are
    reported as rejected and duplicate).

    \b
    Examples:
      batch-sender demo
      batch-sender demo --db sqlite:///demo.db && batch-sender report --db sqlite:///demo.db
    """
    from batch_sender.cli import run as run_command

    with contextlib.ExitStack() as stack:
        if db_url is None:
            where = Path(tempfile.mkdtemp(prefix="batch-sender-demo-"))
            stack.callback(shutil.rmtree, where, ignore_errors=True)
            db_url = f"sqlite:///{where / 'demo.db'}"
        csv = stack.enter_context(sample_csv())
        ctx.invoke(
            run_command.run,
            source_file=csv,
            text=DEMO_TEXT,
            country=DEMO_COUNTRY,
            simulator=True,
            as_json=as_json,
            db_url=db_url,
        )
