"""What every command shares: error-to-exit mapping, logging set-up, common options."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from batch_sender import redact, settings_file
from batch_sender.config import DB_FILE_NAME, DEFAULT_GATEWAY_URL, GatewaySettings
from batch_sender.errors import BatchSenderError, InputError

if TYPE_CHECKING:
    from batch_sender.store import Store

log = logging.getLogger("batch_sender")


class LazyModule:
    """A module imported when first used: ``--help`` must not pay for SQLAlchemy, Alembic,
    httpx, lxml and phonenumbers (0.5 s), which only the commands' work needs.

    A command module writes ``campaign = LazyModule("batch_sender.campaign")`` (the real import
    under ``TYPE_CHECKING``) and uses ``campaign.run`` as before.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


class Fail(click.ClickException):
    """A BatchSenderError turned into a one-line message and its exit code."""

    def __init__(self, exc: BatchSenderError) -> None:
        super().__init__(redact.SECRETS(str(exc)))  # safety net: the client redacted it
        # click declares exit_code a class variable; this error's code depends on the instance
        setattr(self, "exit_code", exc.exit_code)  # noqa: B010

    def show(self, file: Any = None) -> None:
        click.echo(f"batch-sender: error: {self.format_message()}", err=True)


def show_error(exc: click.ClickException) -> int:
    """Print any error in the one style, ``batch-sender: error: …``; return its exit code.

    Click's own usage errors (a mistyped option, a bad value) get the same single line as ours,
    with where to read more; an output file that cannot be written is a usage error (exit 2).
    """
    if isinstance(exc, Fail):
        exc.show()
        return exc.exit_code
    message = exc.format_message()
    code = exc.exit_code
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        message += f" (see `{exc.ctx.command_path} --help`)"
    if isinstance(exc, click.FileError):
        code = 2  # click says 1, but nothing was done: it is the command line that is wrong
    click.echo(f"batch-sender: error: {message}", err=True)
    return code


class Group(click.Group):
    """The ``batch-sender`` group: every error, click's or ours, in one style (``show_error``)."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            sys.exit(show_error(exc))
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


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


def option_key(param: click.Option) -> str:
    """The key a configuration file uses for an option: its long flag without the dashes."""
    longs = [opt for opt in param.opts if opt.startswith("--")]
    return (longs[0] if longs else param.opts[0]).lstrip("-")


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


def _param(command: click.Command, name: str) -> click.Option:
    for param in command.params:
        if isinstance(param, click.Option) and param.name == name:
            return param
    raise KeyError(name)


def _one_spelling(
    config: settings_file.ConfigFile, command: click.Command, table: Any, where: str
) -> None:
    """Refuse a table that sets one option under two names (``from`` and ``sender``)."""
    keys = option_keys(command)
    seen: dict[str, str] = {}
    for name, value in table.items():
        param = keys.get(name)
        if param is None or isinstance(value, dict):
            continue
        if param in seen:
            flag = option_key(_param(command, param))
            raise InputError(
                f"configuration file {config.path}: {where} sets both {seen[param]!r} and "
                f"{name!r}, two names of the option {flag!r}: keep one"
            )
        seen[param] = name


def _checked(
    config: settings_file.ConfigFile,
    command: click.Command,
    name: str,
    value: Any,
    key: str,
    where: str,
) -> Any:
    """A file value, refused unless it is one the option takes, naming the file and key."""
    param = _param(command, name)
    key = option_key(param)  # as the flag spells it (the file may use _ for -)
    shown = f"[{where}] {key}" if where else key
    if isinstance(value, dict):
        raise InputError(f"configuration file {config.path}: {shown} must be a value, not a table")
    if param.multiple and not isinstance(value, list):
        raise InputError(
            f"configuration file {config.path}: {shown} = {value!r}: expected a list "
            f"([...]), the option {option_key(param)!r} may be given several times"
        )
    if not param.multiple and isinstance(value, list):
        raise InputError(
            f"configuration file {config.path}: {shown}: expected one value, not a list"
        )
    if isinstance(param.type, click.File):
        return value
    try:
        param.process_value(click.Context(command), value)  # the type, then any callback
    except click.BadParameter as exc:
        raise InputError(
            f"configuration file {config.path}: {shown} = {value!r}: {exc.message}"
        ) from None
    return value


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
        _one_spelling(config, command, config.top, "the top level")
        for name, value in config.top.items():
            if name in keys:
                out[keys[name]] = _checked(config, command, keys[name], value, name, "")
                used.add(name)
        for name, value in section.items():
            if isinstance(value, dict) and name in {settings_file.key(n) for n in subs}:
                continue
            if name in keys:
                out[keys[name]] = _checked(config, command, keys[name], value, name, where)
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
    for name, command in group.commands.items():
        raw = config.sections.get(settings_file.key(name), {})
        _one_spelling(config, command, raw, f"[{name}]")
        for sub_name, sub in getattr(command, "commands", {}).items():
            nested = raw.get(settings_file.key(sub_name))
            if isinstance(nested, dict):
                _one_spelling(config, sub, nested, f"[{name}.{sub_name}]")
    known = {settings_file.key(n) for n in group.commands}
    for name in config.sections:
        if name not in known:
            raise InputError(f"configuration file {config.path}: no command [{name}]")
    for name in config.top:
        if name not in used:
            raise InputError(f"configuration file {config.path}: no command has {name!r}")
    return result


def check_writable(path: Path | None, what: str) -> None:
    """Refuse (exit 2) before any work an output file that could not be written at the end."""
    if path is None:
        return
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write the {what} {path}: {exc.strerror or exc}") from exc


STATE_DIR_NAME = "batch-sender"  # under $XDG_STATE_HOME (~/.local/state)


def default_db_path() -> Path:
    """The per-user results database: ``$XDG_STATE_HOME/batch-sender/batch_sender.db``.

    Absolute, so cron (started in ``$HOME``) and an operator in any directory share one record;
    ``XDG_STATE_HOME`` unset or relative means ``~/.local/state`` (the XDG base directory spec).
    """
    base = os.environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / STATE_DIR_NAME / DB_FILE_NAME


def default_db_url() -> str:
    return f"sqlite:///{default_db_path()}"


db_option = click.option(
    "--db",
    "db_url",
    envvar="BATCH_SENDER_DB",
    default=default_db_url,
    show_default="~/.local/state/batch-sender/batch_sender.db, or under $XDG_STATE_HOME",
    help="Results database (SQLAlchemy URL). Env: BATCH_SENDER_DB.",
)

#: how a command opens the results database: ``existing`` (it must exist at the current
#: schema; nothing is created or migrated) or ``create`` (created and upgraded as needed)
StoreMode = Literal["existing", "create"]


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None: another database, or in memory)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):
        return None  # a URI filename: SQLite reads it, we do not guess
    return Path(parsed.database)


def open_store(url: str, mode: StoreMode) -> Store:
    """Open the results database as a command of ``mode`` may.

    ``existing`` — report, suppress list/remove, reconcile, track: a database that does not
    exist is an InputError (exit 2) and is not created; one at another schema revision is a
    StoreError telling to run ``batch-sender db upgrade``; nothing is ever migrated.
    ``create`` — run, db upgrade, suppress add/import, callbacks: the SQLite file's directory
    and the file are created and the schema upgraded as needed.
    """
    from batch_sender.store import Store

    path = sqlite_file(url)
    if mode == "existing":
        if path is not None and not path.is_file():
            raise InputError(
                f"no results database at {path} (nothing has been sent with it yet; "
                "is --db or BATCH_SENDER_DB right? `batch-sender config show` shows which)"
            )
        return Store.open(url, upgrade=False)
    if path is not None and not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create the results database directory {path.parent}: {exc.strerror or exc}"
            ) from exc
    return Store.open(url, upgrade=True)


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
