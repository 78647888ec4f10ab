"""Send windows, deadlines and --at: the pure functions (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from batch_sender import windows
from batch_sender.errors import InputError

NEW_YORK = "12125550100"  # America/New_York

JOBURG = "27821000000"  # Africa/Johannesburg


def test_window_parses_and_wraps_midnight():
    day = windows.Window.parse("08:00-20:00")
    assert day.contains(time(8, 0)) and day.contains(time(19, 59))
    assert not day.contains(time(20, 0)) and not day.contains(time(7, 59))
    night = windows.Window.parse("22:00-06:00")
    assert night.contains(time(23, 0)) and night.contains(time(5, 0))
    assert not night.contains(time(12, 0))
    for bad in ("8-20", "08:00", "08:00-08:00", "25:00-26:00"):
        with pytest.raises(InputError):
            windows.Window.parse(bad)


def test_zone_key_is_the_longest_prefix_of_the_time_zone_data():
    assert windows.zone_key(NEW_YORK) == "1212"
    fallback = ZoneInfo("UTC")
    assert windows.zones(windows.zone_key(NEW_YORK), fallback) == (ZoneInfo("America/New_York"),)
    assert windows.zones(windows.zone_key(JOBURG), fallback) == (ZoneInfo("Africa/Johannesburg"),)
    assert windows.zones("", fallback) == (fallback,)


def test_a_number_with_several_zones_is_open_only_when_all_of_them_are():
    window = windows.Window.parse("08:00-20:00")
    australia = windows.zones("61", ZoneInfo("UTC"))  # Perth (UTC+8) … Lord Howe (UTC+11)
    assert len(australia) > 1
    # 23:00 UTC: 10:00 in Sydney but 07:00 in Perth
    assert not window.open_in(australia, datetime(2026, 12, 1, 23, 0, tzinfo=UTC))
    # 03:00 UTC: 11:00 in Perth, 14:00/15:00 in Sydney/Lord Howe
    assert window.open_in(australia, datetime(2026, 12, 2, 3, 0, tzinfo=UTC))


def test_parse_deadline_takes_a_time_or_a_duration():
    zone = ZoneInfo("Africa/Johannesburg")
    at = windows.parse_deadline("2026-12-01 20:00", zone=zone)
    assert at.at == datetime(2026, 12, 1, 20, 0, tzinfo=zone)
    assert windows.parse_deadline("1d12h", zone=zone).after == timedelta(days=1, hours=12)
    assert windows.parse_deadline("90m", zone=zone).after == timedelta(minutes=90)
    with pytest.raises(InputError):
        windows.parse_deadline("tomorrow", zone=zone)


def test_deliv_minutes_counts_whole_minutes_up_to_a_week():
    now = datetime(2026, 12, 1, 8, 0, 30, tzinfo=UTC)
    assert windows.deliv_minutes(datetime(2026, 12, 1, 9, 0, tzinfo=UTC), now) == 60
    with pytest.raises(InputError, match="not in the future"):
        windows.deliv_minutes(now, now)
    with pytest.raises(InputError, match="7 days"):
        windows.deliv_minutes(now + timedelta(days=8), now)
