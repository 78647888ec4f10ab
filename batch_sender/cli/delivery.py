"""The commands after a send: the delivery-receipt receiver (callbacks) and querymsg tracking."""

from __future__ import annotations

import functools
import signal
from pathlib import Path
from types import FrameType

import click
from click.core import ParameterSource

from batch_sender import redact, settings_file
from batch_sender.cli.common import (
    db_option,
    errors,
    gateway_settings,
    gateway_url_option,
    open_store,
)
from batch_sender.config import DEFAULT_STOP_KEYWORDS
from batch_sender.errors import InputError

DEFAULT_CALLBACK_PORT = 8098  # next to the simulator's 8099


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface, for a public callback URL).",
)
@click.option(
    "--port", type=int, default=DEFAULT_CALLBACK_PORT, show_default=True, help="Port to listen on."
)
@click.option(
    "--token-file",
    envvar="BATCH_SENDER_CALLBACK_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File (chmod 600) holding the shared secret callbacks must carry (?token=… or an "
    "X-Callback-Token header); missing: 401, wrong: 403. Env: BATCH_SENDER_CALLBACK_TOKEN_FILE, "
    "or the token itself in BATCH_SENDER_CALLBACK_TOKEN.",
)
@click.option(
    "--basic-auth-file",
    envvar="BATCH_SENDER_CALLBACK_AUTH_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File (chmod 600) holding USER:PASSWORD: require HTTP basic auth (as configurable for "
    "the callback URL at Clickatell). Env: BATCH_SENDER_CALLBACK_AUTH_FILE, or the value itself "
    "in BATCH_SENDER_CALLBACK_AUTH.",
)
@click.option(
    "--token",
    envvar="BATCH_SENDER_CALLBACK_TOKEN",
    help="The token itself: shown to every user by ps, prefer the file or the environment.",
)
@click.option(
    "--basic-auth",
    envvar="BATCH_SENDER_CALLBACK_AUTH",
    metavar="USER:PASSWORD",
    help="USER:PASSWORD itself: shown to every user by ps, prefer the file or the environment.",
)
@click.option(
    "--stop-keyword",
    "stop_keywords",
    multiple=True,
    metavar="WORD",
    help="First words of an inbound reply (MO callback) that put its sender on the suppression "
    f"list. Repeatable. Default: {', '.join(sorted(DEFAULT_STOP_KEYWORDS))}.",
)
@click.option("--country", help="Default region for national-format numbers in replies.")
@db_option
def callbacks(
    host: str,
    port: int,
    token_file: Path | None,
    basic_auth_file: Path | None,
    token: str | None,
    basic_auth: str | None,
    stop_keywords: tuple[str, ...],
    country: str | None,
    db_url: str,
) -> None:
    """Receive Clickatell delivery callbacks and record them in the results database.

    Runs until interrupted (uvicorn; deploy/batch-sender-callbacks.service runs it under
    systemd, behind nginx for TLS: docs/DELIVERY.md). Point the API connection's callback URL
    (any path) at it and send with --callback 1-7. A receipt is answered 2xx once committed; one
    whose message ID no run has recorded yet is kept (202) and applied when it is. Inbound
    replies (MO callbacks) that start with a stop keyword put their sender on the suppression
    list.

    \b
    Example:
      install -m 600 /dev/null /etc/batch-sender/callback-token
      openssl rand -hex 24 > /etc/batch-sender/callback-token
      batch-sender callbacks --host 0.0.0.0 --port 8098 \\
          --token-file /etc/batch-sender/callback-token
      # callback URL: https://sms.example.com:8098/clickatell?token=<the file's token>
    """
    from batch_sender import suppression
    from batch_sender.delivery.callbacks import CallbackAuth, CallbackServer
    from batch_sender.store.delivery import DeliveryStore

    with errors():
        token = _secret(token, token_file, "token", "callback token")
        basic_auth = _secret(basic_auth, basic_auth_file, "basic_auth", "basic-auth USER:PASSWORD")
    user = password = None
    if basic_auth is not None:
        user, sep, password = basic_auth.partition(":")
        if not sep or not user:
            raise click.BadParameter("expected USER:PASSWORD", param_hint="--basic-auth")
    redact.SECRETS.add(token, password)  # never in a log line, whatever a client sends us
    with errors(), open_store(db_url, "create") as store:
        try:
            server = CallbackServer(
                DeliveryStore(store, durable=True),
                host=host,
                port=port,
                auth=CallbackAuth(token=token or None, user=user, password=password),
                on_mo=functools.partial(
                    suppression.handle_mo,
                    store,
                    keywords=stop_keywords or DEFAULT_STOP_KEYWORDS,
                    country=country,
                ),
            )
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc

        def terminate(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, terminate)
        click.echo(f"receiving delivery callbacks at {server.url}", err=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.server_close()
            s = server.stats
            click.echo(
                f"stopped: {s.updated} updated, {s.recorded} late, {s.duplicates} repeated, "
                f"{s.kept} kept for IDs not recorded yet, {s.unknown} unknown, "
                f"{s.bad + s.refused} refused",
                err=True,
            )


def _secret(value: str | None, path: Path | None, name: str, what: str) -> str | None:
    """The secret from its file, else from the flag or environment (warning for a flag)."""
    flag = "--" + name.replace("_", "-")
    if path is not None:
        if value is not None:
            raise InputError(f"give {flag} or {flag}-file, not both")
        return settings_file.read_secret_file(path, what)
    ctx = click.get_current_context()
    if value is not None and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
        click.echo(
            f"batch-sender: warning: {flag} is visible to every user in ps; use {flag}-file "
            f"(chmod 600) or the environment instead",
            err=True,
        )
    return value


@click.command()
@click.argument("name")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    help="querymsg requests per second at most.",
)
@click.option(
    "--until-final", is_flag=True, help="Repeat passes until every message has a final status."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds between passes (with --until-final).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    help="Give up after this many seconds (with --until-final).",
)
@gateway_url_option
@db_option
def track(
    name: str,
    rate: float,
    until_final: bool,
    interval: float,
    timeout: float | None,
    gateway_url: str,
    db_url: str,
) -> None:
    """Ask the gateway (querymsg) for the delivery status of sent messages not final yet.

    For accounts without a callback URL. Messages sent more than 6 days ago are not asked about
    (the gateway forgets them).

    \b
    Example:
      batch-sender track campaign-2026-11-25 --rate 5 --until-final --timeout 3600
    """
    from batch_sender import campaign
    from batch_sender.delivery import track as tracking
    from batch_sender.store.delivery import DeliveryStore

    with errors(), open_store(db_url, "existing") as store:
        camp = store.campaign(name)
        if camp is None:
            raise InputError(f"no campaign named {name!r}")
        with campaign.open_client(gateway_settings(gateway_url), max_connections=1) as client:
            stats = tracking.track(
                DeliveryStore(store),
                client,
                camp.id,
                rate=rate,
                until_final=until_final,
                interval=interval,
                timeout=timeout,
            )
        click.echo(
            f"asked about {stats.queried} messages: {stats.updated} updated, "
            f"{stats.final} final, {stats.not_found} unknown to the gateway, "
            f"{stats.errors} errors"
        )
