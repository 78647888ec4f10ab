"""What every command shares: error-to-exit mapping, logging set-up, common options."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from batch_sender.config import DEFAULT_DB_URL, GatewaySettings
from batch_sender.errors import BatchSenderError

log = logging.getLogger("batch_sender")


class Fail(click.ClickException):
    """A BatchSenderError turned into a one-line message and its exit code."""

    def __init__(self, exc: BatchSenderError) -> None:
        super().__init__(str(exc))
        # click declares exit_code a class variable; this error's code depends on the instance
        setattr(self, "exit_code", exc.exit_code)  # noqa: B010

    def show(self, file: Any = None) -> None:
        click.echo(f"batch-sender: error: {self.format_message()}", err=True)


@contextlib.contextmanager
def errors() -> Iterator[None]:
    try:
        yield
    except BatchSenderError as exc:
        raise Fail(exc) from exc


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    root = logging.getLogger("batch_sender")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


db_option = click.option(
    "--db",
    "db_url",
    envvar="BATCH_SENDER_DB",
    default=DEFAULT_DB_URL,
    show_default=True,
    help="Results database (SQLAlchemy URL). Env: BATCH_SENDER_DB.",
)


def gateway_settings(url: str, *, read_timeout: float = 60.0) -> GatewaySettings:
    return GatewaySettings(
        url=url,
        api_id=os.environ.get("CLICKATELL_API_ID", ""),
        user=os.environ.get("CLICKATELL_USER", ""),
        password=os.environ.get("CLICKATELL_PASSWORD", ""),
        read_timeout=read_timeout,
    )
