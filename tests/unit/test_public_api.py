"""The package's public surface: pinned, importable, cheap to import, its example runs."""

from __future__ import annotations

import doctest
import subprocess
import sys

import batch_sender

PUBLIC = [
    "BatchSenderError",
    "CampaignControl",
    "CampaignStatus",
    "DryRunReport",
    "GatewaySettings",
    "MessageOptions",
    "RunResult",
    "RunSettings",
    "Simulator",
    "SimulatorConfig",
    "Status",
    "Store",
    "__version__",
    "dry_run",
    "fingerprint",
    "open_client",
    "run",
    "sources",
]


def test_all_is_pinned():
    """A name added to or dropped from the public API is a decision: change this list too."""
    assert sorted(batch_sender.__all__) == sorted(PUBLIC)


def test_every_public_name_imports():
    for name in PUBLIC:
        assert getattr(batch_sender, name) is not None, name


def test_importing_the_package_imports_no_heavy_dependency():
    code = (
        "import sys, batch_sender; "
        "print(','.join(m for m in ('sqlalchemy', 'httpx', 'lxml', 'phonenumbers', 'alembic') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_docstring_example_runs():
    """The README-style example in the package docstring: a real campaign on the simulator."""
    result = doctest.testmod(batch_sender, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
