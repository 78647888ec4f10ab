"""The ``batch-sender`` command: parse options, call one library function, map errors to exits.

No SQL, XML or retry logic lives here (STYLE.md §1): each command module parses its options
into settings and calls into the library.
"""

from __future__ import annotations

from pathlib import Path

import click

from batch_sender import settings_file
from batch_sender.cli import admin, common, delivery, demo, operators, run

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="batch-sender")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail to stderr.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="BATCH_SENDER_CONFIG",
    help="Configuration file (TOML). Default: ./batch-sender.toml if present. "
    "Env: BATCH_SENDER_CONFIG.",
)
@click.option(
    "--log-format",
    type=click.Choice(common.LOG_FORMATS),
    envvar="BATCH_SENDER_LOG_FORMAT",
    help="text (default) or json: one JSON object per log line. Env: BATCH_SENDER_LOG_FORMAT.",
)
@click.pass_context
def cli(
    ctx: click.Context, verbose: bool, config_path: Path | None, log_format: str | None
) -> None:
    """Send bulk SMS through Clickatell's SOAP API and keep an exact SQL record of every recipient.

    \b
    Quick start (no account needed, uses the built-in simulator):
      batch-sender demo                 (the shipped sample, sent to the simulator)
      batch-sender run campaign.csv --text "Hi {name}" --country ZA --simulator

    Environment: BATCH_SENDER_DB (SQLAlchemy URL, default sqlite:///batch_sender.db),
    BATCH_SENDER_GATEWAY_URL, CLICKATELL_API_ID, CLICKATELL_USER, CLICKATELL_PASSWORD.
    Any option may also come from batch-sender.toml (flag > environment > file > default):
    see `batch-sender config show`.
    """
    with common.errors():
        config = settings_file.load(config_path)
        ctx.obj = config
        ctx.default_map = common.default_map(config, cli)
    common.setup_logging(verbose, log_format or str(config.top.get("log_format", "text")))


cli.add_command(run.run)
cli.add_command(demo.demo)
cli.add_command(admin.report)
cli.add_command(admin.reconcile)
cli.add_command(admin.simulator)
cli.add_command(admin.db)
cli.add_command(delivery.callbacks)
cli.add_command(delivery.track)
cli.add_command(operators.suppress)
cli.add_command(operators.config)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="batch-sender")
