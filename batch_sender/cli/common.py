"""What every command shares: error-to-exit mapping, logging set-up, common options."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

import click

from batch_sender import redact, settings_file
from batch_sender.config import DEFAULT_DB_URL, DEFAULT_GATEWAY_URL, GatewaySettings
from batch_sender.errors import BatchSenderError, InputError

log = logging.getLogger("batch_sender")


class Fail(click.ClickException):
    """A BatchSenderError turned into a one-line message and its exit code."""

    def __init__(self, exc: BatchSenderError) -> None:
        super().__init__(redact.SECRETS(str(exc)))  # safety net: the client redacted it
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


LOG_FORMATS = ("text", "json")


def setup_logging(verbose: bool, log_format: str = "text", *, quiet: bool = False) -> None:
    """Log to stderr: INFO and up, DEBUG with ``verbose``, only WARNING and up with ``quiet``."""
    from batch_sender.cli import terminal

    if verbose and quiet:
        raise click.UsageError("-v/--verbose and -q/--quiet do not go together")
    handler = terminal.LogHandler(sys.stderr)  # prints above a progress bar
    handler.addFilter(redact.RedactingFilter())  # no known secret in any line
    root = logging.getLogger("batch_sender")
    root.handlers[:] = [handler]
    set_log_format(log_format)
    root.setLevel(_LEVELS[verbose, quiet])
    root.propagate = False


_LEVELS = {
    (False, False): logging.INFO,
    (True, False): logging.DEBUG,
    (False, True): logging.WARNING,
}
_VERBOSITY_KEY = "batch_sender.verbosity"


def quiet() -> bool:
    """Whether -q/--quiet is in force: print nothing on success."""
    return logging.getLogger("batch_sender").getEffectiveLevel() > logging.INFO


def _verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """-v/-q given after a subcommand: they override the group's (both at once: usage error)."""
    if value:
        given = ctx.meta.setdefault(_VERBOSITY_KEY, set())
        given.add(param.name)
        if len(given) > 1:
            raise click.UsageError("-v/--verbose and -q/--quiet do not go together", ctx)
        root = logging.getLogger("batch_sender")
        root.setLevel(logging.DEBUG if param.name == "verbose" else logging.WARNING)
    return value


VERBOSE_HELP = "Log debugging detail to stderr."
QUIET_HELP = "Print nothing on success; warnings and errors only, on stderr (cron mails them)."


def add_verbosity_options(group: click.Group) -> None:
    """Give every subcommand of ``group`` (at any depth) -v/--verbose and -q/--quiet, so that
    they work after the subcommand as well as before it (``batch-sender run … -q``)."""
    for command in group.commands.values():
        names = {opt for p in command.params for opt in getattr(p, "opts", ())}
        if "-v" not in names and "--verbose" not in names:
            command.params.append(
                click.Option(
                    ["-v", "--verbose"],
                    is_flag=True,
                    expose_value=False,
                    callback=_verbosity,
                    help=VERBOSE_HELP,
                )
            )
        if "-q" not in names and "--quiet" not in names:
            command.params.append(
                click.Option(
                    ["-q", "--quiet"],
                    is_flag=True,
                    expose_value=False,
                    callback=_verbosity,
                    help=QUIET_HELP,
                )
            )
        if isinstance(command, click.Group):
            add_verbosity_options(command)


def set_log_format(log_format: str) -> None:
    """Plain lines (``text``) or one JSON object per line (``json``) on stderr."""
    from batch_sender import observe

    formatter: logging.Formatter
    if log_format == "json":
        formatter = observe.JsonFormatter()
    else:
        formatter = logging.Formatter(
            "%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"
        )
    for handler in logging.getLogger("batch_sender").handlers:
        handler.setFormatter(formatter)


def config_file(ctx: click.Context | None = None) -> settings_file.ConfigFile:
    """The configuration file the ``batch-sender`` group loaded (an empty one outside it)."""
    ctx = ctx or click.get_current_context(silent=True)
    obj = None if ctx is None else ctx.find_root().obj
    return obj if isinstance(obj, settings_file.ConfigFile) else settings_file.ConfigFile()


def option_keys(command: click.Command) -> dict[str, str]:
    """Every spelling a file may use for a command's options → the parameter name."""
    keys: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        keys[param.name] = param.name
        for opt in (*param.opts, *param.secondary_opts):
            keys[settings_file.key(opt.lstrip("-"))] = param.name
    return keys


def default_map(config: settings_file.ConfigFile, group: click.Group) -> dict[str, Any]:
    """The file as click's ``default_map`` for ``group``'s commands; unknown keys fail (exit 2).

    Top-level keys reach every command that has the option; a ``[command]`` table only that
    command; a group's table (``[suppress]``) its subcommands, ``[suppress.add]`` one of them.
    """
    used: set[str] = set(settings_file.SPECIAL_KEYS)

    def build(command: click.Command, section: dict[str, Any], where: str) -> dict[str, Any]:
        keys = option_keys(command)
        subs = command.commands if isinstance(command, click.Group) else {}
        sub_keys = {k for sub in subs.values() for k in option_keys(sub)}
        out: dict[str, Any] = {}
        for name, value in config.top.items():
            if name in keys:
                out[keys[name]] = value
                used.add(name)
        for name, value in section.items():
            if isinstance(value, dict) and name in {settings_file.key(n) for n in subs}:
                continue
            if name in keys:
                out[keys[name]] = value
            elif name not in sub_keys:
                raise InputError(f"configuration file {config.path}: [{where}] has no {name!r}")
        for sub_name, sub in subs.items():
            inherited = {
                k: v
                for k, v in section.items()
                if not isinstance(v, dict) and k in option_keys(sub)
            }
            nested = section.get(settings_file.key(sub_name))
            if isinstance(nested, dict):
                inherited.update(nested)
            out[sub_name] = build(sub, inherited, f"{where}.{sub_name}")
        return out

    result = {
        name: build(command, dict(config.sections.get(settings_file.key(name), {})), name)
        for name, command in group.commands.items()
    }
    known = {settings_file.key(n) for n in group.commands}
    for name in config.sections:
        if name not in known:
            raise InputError(f"configuration file {config.path}: no command [{name}]")
    for name in config.top:
        if name not in used:
            raise InputError(f"configuration file {config.path}: no command has {name!r}")
    return result


db_option = click.option(
    "--db",
    "db_url",
    envvar="BATCH_SENDER_DB",
    default=DEFAULT_DB_URL,
    show_default=True,
    help="Results database (SQLAlchemy URL). Env: BATCH_SENDER_DB.",
)


gateway_url_option = click.option(
    "--gateway-url",
    envvar="BATCH_SENDER_GATEWAY_URL",
    default=DEFAULT_GATEWAY_URL,
    show_default=True,
    help="SOAP endpoint. Env: BATCH_SENDER_GATEWAY_URL.",
)


def gateway_settings(url: str, *, read_timeout: float = 60.0) -> GatewaySettings:
    """Gateway URL and credentials: environment, else the credentials file, else the config."""
    creds = settings_file.credentials(config_file())
    return GatewaySettings(
        url=url,
        api_id=creds["api_id"].value,
        user=creds["user"].value,
        password=creds["password"].value,
        read_timeout=read_timeout,
    )
