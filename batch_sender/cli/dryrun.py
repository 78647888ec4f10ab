"""What ``batch-sender run --dry-run`` prints: the counts, how numbers were read, where they go,
and what ``--smart-encoding`` would change."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from batch_sender.cli.common import LazyModule
from batch_sender.config import RunSettings

if TYPE_CHECKING:
    from batch_sender import campaign, prepare, sources, suppression
else:  # imported when a dry run runs, not for --help
    campaign = LazyModule("batch_sender.campaign")
    suppression = LazyModule("batch_sender.suppression")

__all__ = ["show", "smart_summary"]


def show(settings: RunSettings, source: sources.Source, db_url: str, *, as_json: bool) -> None:
    """Count what a run would do and print it; nothing is staged or sent."""
    report_ = campaign.dry_run(source, settings, suppressed=suppression.numbers_for_dry_run(db_url))
    source.close()
    data = report_.as_dict()
    if as_json:
        click.echo(json.dumps(data))
    else:
        for key, value in data.items():
            if key not in ("numbers_interpreted", "countries", "smart_encoding"):
                click.echo(f"{key}: {value}")
        _numbers(report_)
        _smart(report_.smart_encoding)
    if settings.max_rejected is not None:  # a real run of this file would be refused
        total = report_.recipients + report_.rejected + report_.duplicates + report_.suppressed
        campaign.check_unusable(report_.rejected, total, settings.max_rejected)


def _smart(smart: prepare.SmartEncoding) -> None:
    """The dry run's account of --smart-encoding: each character it replaces, what it saves."""
    if not smart.rows:
        click.echo("smart_encoding: " + ("nothing to replace" if smart.enabled else "off"))
        return
    click.echo(smart_summary(smart))


def smart_summary(smart: prepare.SmartEncoding) -> str:
    from batch_sender import sms

    chars = ", ".join(
        f"{c!r} -> {sms.SMART_REPLACEMENTS[c]!r} ({n} row{'s' * (n != 1)})"
        for c, n in smart.characters.most_common()
    )
    n = smart.parts_saved
    credits = f"{n} part{'s' * (n != 1)} ({n} credit{'s' * (n != 1)} at 1 per part)"
    if smart.enabled:
        return f"smart_encoding: replaces {chars}; {smart.rows} texts become GSM, saving {credits}"
    return f"smart_encoding: off; --smart-encoding would replace {chars} and save {credits}"


def _numbers(report_: prepare.DryRunReport) -> None:
    """The dry run's account of how numbers were read, and where the accepted ones go."""
    interpreted = report_.numbers_interpreted
    click.echo("numbers_interpreted:" + ("" if interpreted else " none"))
    for rule, seen in interpreted.items():
        examples = seen["examples"]
        assert isinstance(examples, list)
        shown = ", ".join(f"{raw!r} -> {digits}" for raw, digits in examples)
        click.echo(f"  {rule}: {seen['count']} (e.g. {shown})")
    countries = ", ".join(f"{c} {n}" for c, n in report_.countries.most_common())
    click.echo(f"countries: {countries or 'none'}")
