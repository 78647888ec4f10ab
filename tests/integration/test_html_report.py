"""`batch-sender report --html`: one self-contained page whose numbers match the database.

Parsed with lxml (always), and opened in headless Chromium when it is installed (Debian's
``chromium`` package): the browser's own DOM must hold the same numbers, and it must render a
screenshot. The browser test skips cleanly where Chromium is missing.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lxml.html
import pytest
from test_delivery import sent_campaign
from test_report import delivered_campaign

from batch_sender import report
from batch_sender.store import Store

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture
def cli_store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'results.db'}") as opened:
        yield opened


@pytest.fixture
def page(bs: Any, cli_store: Store, tmp_path: Path) -> Path:
    """The report of a campaign with 3 delivered, 1 failed, 1 in progress, 1 without receipt."""
    delivered_campaign(cli_store, name="camp")
    path = tmp_path / "report.html"
    out = bs("report", "camp", "--html", str(path))
    assert out.exit_code == 0, out.stderr
    return path


def figures(doc: Any) -> dict[str, str]:
    """The summary cards: id → data-value."""
    return {dd.get("id"): dd.get("data-value") for dd in doc.xpath("//dl[@class='cards']//dd")}


def table_rows(doc: Any, table_id: str) -> list[list[str]]:
    return [
        [cell.text_content().strip() for cell in tr.findall("td")]
        for tr in doc.get_element_by_id(table_id).iterfind("tbody/tr")
    ]


def check_numbers(doc: Any) -> None:
    assert figures(doc) == {
        "recipients": "7",
        "accepted": "6",
        "delivered": "3",
        "failed": "1",
        "in-progress": "1",
        "unknown": "1",
        "delivery-rate": "0.500000",
        "cost": "3.5000",
        "credits-spent": "6",  # the 6 sent; the failed row's part was refused, never charged
        "credits-to-spend": "0",
    }
    assert doc.get_element_by_id("delivered").text_content() == "3"
    assert table_rows(doc, "states") == [["sent", "6"], ["failed", "1"]]
    assert table_rows(doc, "errors") == [
        ["send", "114", "No route", "1"],
        ["delivery", "007", "Error delivering message", "1"],
    ]
    assert [row[0] for row in table_rows(doc, "slowest")] == ["6", "2", "1"]
    assert table_rows(doc, "slowest")[0][-1] == "2 min 5 s"
    bars = doc.xpath("//svg[@id='chart']/g[@class='bucket']")
    assert sum(int(g.get("data-delivered")) for g in bars) == 3
    assert sum(int(g.get("data-failed")) for g in bars) == 1


def test_the_page_holds_the_numbers_of_the_database(page: Path) -> None:
    doc = lxml.html.parse(str(page)).getroot()
    check_numbers(doc)
    assert doc.get_element_by_id("campaign").text_content() == "camp"


def test_the_page_is_self_contained(page: Path) -> None:
    doc = lxml.html.parse(str(page)).getroot()
    assert doc.xpath("//script") == []
    assert doc.xpath("//link") == [] and doc.xpath("//img") == []
    for element in doc.iter():
        for name in ("src", "href"):
            assert element.get(name) is None, lxml.html.tostring(element)
    css = "".join(style.text_content() for style in doc.xpath("//style"))
    assert "url(" not in css and "@import" not in css
    assert len(doc.xpath("//svg[@id='chart']//rect")) == 4  # bars drawn inline


def test_campaign_names_and_sources_are_escaped(cli_store: Store, tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    sent_campaign(cli_store, 1, name=hostile)
    html = report.render_html(report.build(cli_store, hostile))
    doc = lxml.html.fromstring(html)
    assert doc.xpath("//script") == [] and doc.xpath("//img") == []
    assert doc.get_element_by_id("campaign").text_content() == hostile
    assert doc.get_element_by_id("chart-empty") is not None  # no final status: no chart


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


def _browser(exe: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def test_headless_chromium_renders_the_page_offline(page: Path, tmp_path: Path) -> None:
    exe = _chromium()
    dom = _browser(exe, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    check_numbers(lxml.html.fromstring(dom.stdout))  # the browser's DOM, after parsing

    shot = tmp_path / "report.png"
    done = _browser(exe, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (1200, 1600)
