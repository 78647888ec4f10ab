"""The ``batch-sender`` command: parse options, call one library function, map errors to exits.

No SQL, XML or retry logic lives here (STYLE.md §1): each command module parses its options
into settings and calls into the library.
"""

from __future__ import annotations

import click

from batch_sender.cli import admin, common, run

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="batch-sender")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail to stderr.")
def cli(verbose: bool) -> None:
    """Send bulk SMS through Clickatell's SOAP API and keep an exact SQL record of every recipient.

    \b
    Quick start (no account needed, uses the built-in simulator):
      batch-sender run sample_data/campaign.csv --text "Hi {name}" --country ZA --simulator

    Environment: BATCH_SENDER_DB (SQLAlchemy URL, default sqlite:///batch_sender.db),
    BATCH_SENDER_GATEWAY_URL, CLICKATELL_API_ID, CLICKATELL_USER, CLICKATELL_PASSWORD.
    """
    common.setup_logging(verbose)


cli.add_command(run.run)
cli.add_command(admin.report)
cli.add_command(admin.reconcile)
cli.add_command(admin.simulator)
cli.add_command(admin.db)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="batch-sender")
