"""``batch-sender suppress …`` (the opt-out list) and ``batch-sender config show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from batch_sender import settings_file
from batch_sender.cli.common import (
    LazyModule,
    config_file,
    db_option,
    errors,
    open_store,
    option_key,
)

if TYPE_CHECKING:
    from batch_sender import suppression
else:  # imported when a command runs, not for --help
    suppression = LazyModule("batch_sender.suppression")

country_option = click.option(
    "--country", help="Default region for national-format numbers (ISO code, e.g. ZA)."
)
#: option names whose values are masked by `config show`
SECRET_OPTIONS = frozenset({"db_url", "source_db", "heartbeat_url"})


def _report(added_or_removed: int, verb: str, normalised: suppression.Normalised) -> int:
    for raw, reason in normalised.rejected:
        click.echo(f"skipped {raw!r}: {reason}", err=True)
    click.echo(f"{added_or_removed} {verb}")
    return 1 if normalised.rejected else 0


@click.group()
def suppress() -> None:
    """The suppression (opt-out) list: numbers no campaign sends to.

    \b
    Examples:
      batch-sender suppress add +27821002000 "082 100 2001" --country ZA
      batch-sender suppress import opt-outs.csv
      batch-sender suppress list --json
      batch-sender suppress remove 27821002000

    Numbers are normalised like recipients. Campaign rows whose number is listed are staged
    'suppressed' and never sent; adding a number also suppresses it where it is still pending.
    """


@suppress.command("add")
@click.argument("numbers", nargs=-1, required=True)
@country_option
@click.option("--note", help="Why (kept with the entry).")
@db_option
def suppress_add(
    numbers: tuple[str, ...], country: str | None, note: str | None, db_url: str
) -> None:
    """Add numbers to the list. Exit 1 if some were not numbers."""
    with errors(), open_store(db_url, "create") as store:
        added, normalised = suppression.add(store, numbers, country=country, note=note)
    raise SystemExit(_report(added, "added", normalised))


@suppress.command("remove")
@click.argument("numbers", nargs=-1, required=True)
@country_option
@db_option
def suppress_remove(numbers: tuple[str, ...], country: str | None, db_url: str) -> None:
    """Take numbers off the list (rows already suppressed stay so)."""
    with errors(), open_store(db_url, "existing") as store:
        removed, normalised = suppression.remove(store, numbers, country=country)
    raise SystemExit(_report(removed, "removed", normalised))


@suppress.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@country_option
@db_option
def suppress_import(file: Path, country: str | None, db_url: str) -> None:
    """Add every number of FILE: a CSV with a to/msisdn/number/phone column, or one per line."""
    with errors(), open_store(db_url, "create") as store:
        added, normalised = suppression.import_file(store, file, country=country)
    raise SystemExit(_report(added, "added", normalised))


@suppress.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@db_option
def suppress_list(as_json: bool, db_url: str) -> None:
    """Print the list: number, source (cli, import, mo), when, note."""
    from batch_sender.store import operators as store_operators

    with errors(), open_store(db_url, "existing") as store:
        for entry in store_operators.list_suppressions(store):
            when = entry.created_at.isoformat(timespec="seconds")
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "msisdn": entry.msisdn,
                            "source": entry.source,
                            "created_at": when,
                            "note": entry.note,
                        }
                    )
                )
            else:
                click.echo(f"{entry.msisdn}\t{entry.source}\t{when}\t{entry.note or ''}")


@click.group()
def config() -> None:
    """The effective configuration: flag > environment > batch-sender.toml > default."""


@config.command("show", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("command", default="run")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def config_show(ctx: click.Context, command: str, args: tuple[str, ...], as_json: bool) -> None:
    """Print COMMAND's settings (default: run) with where each comes from; secrets masked.

    \b
    Examples:
      batch-sender config show
      batch-sender --config /etc/batch-sender.toml config show run --rate 20
    """
    with errors():
        root = ctx.find_root()
        group = root.command
        assert isinstance(group, click.Group)
        path = command.split()
        target: click.Command | None = group
        parent = root
        for part in path:
            assert isinstance(target, click.Group)
            target = target.commands.get(part)
            if target is None:
                raise click.UsageError(f"no command {command!r}")
        assert target is not None
        sub = target.make_context(command, list(args), parent=parent, resilient_parsing=True)
        cfg = config_file(ctx)
        rows: list[dict[str, Any]] = []
        for param in target.params:
            if not isinstance(param, click.Option) or param.name is None or param.hidden:
                continue
            source = sub.get_parameter_source(param.name)
            value = sub.params.get(param.name)
            rows.append(
                {
                    "name": option_key(param),
                    "flag": "/".join((*param.opts, *param.secondary_opts)),
                    "value": _masked(param.name, _plain(value)),
                    "source": _source(source, param, cfg),
                }
            )
        for name, cred in settings_file.credentials(cfg).items():
            shown = cred.value if name != "password" or not cred.value else "********"
            rows.append(
                {
                    "name": f"gateway.{name}",
                    "flag": f"env {settings_file.CREDENTIAL_ENV[name]}",
                    "value": shown,
                    "source": cred.source,
                }
            )
    if as_json:
        click.echo(
            json.dumps({"config_file": str(cfg.path) if cfg.path else None, "settings": rows})
        )
        return
    click.echo(f"# configuration file: {cfg.path or 'none'}")
    click.echo("# key (in the file, or [section] key)  flag  value  (where the value comes from)")
    width = max(len(r["name"]) for r in rows)
    flag_width = max(len(r["flag"]) for r in rows)
    for r in rows:
        click.echo(
            f"{r['name']:<{width}}  {r['flag']:<{flag_width}}  {_text(r['value'])}  ({r['source']})"
        )


def _source(
    source: ParameterSource | None, param: click.Option, cfg: settings_file.ConfigFile
) -> str:
    if source is ParameterSource.COMMANDLINE:
        return "flag"
    if source is ParameterSource.ENVIRONMENT:
        env = param.envvar if isinstance(param.envvar, str) else "environment"
        return f"environment {env}"
    if source is ParameterSource.DEFAULT_MAP:
        return cfg.label
    return "default"


def _plain(value: Any) -> Any:
    """A value as a user writes it: paths and files as their names, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _masked(name: str, value: Any) -> Any:
    if name in SECRET_OPTIONS and isinstance(value, str) and value:
        if name == "heartbeat_url":
            return value.split("//", 1)[0] + "//" + value.split("//", 1)[-1].split("/", 1)[0] + "/…"
        from batch_sender.store import engine as engines

        return engines.masked(value)
    return value


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"  # as TOML writes it
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value) or "-"
    return str(value)
