"""Fixtures: the Clickatell simulator over real HTTP on a free loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batch_sender.simulator import Simulator, SimulatorConfig

__all__ = ["make_simulator", "simulator"]

#: The documentation's example account, fixed so tests don't depend on CLICKATELL_* variables.
TEST_CREDENTIALS = {"api_id": "123456", "user": "MyUserName", "password": "MyPassword"}


@pytest.fixture
def make_simulator(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    """Factory: ``make_simulator(**config_overrides)`` → a started simulator, stopped at teardown.

    Records to ``tmp_path / "record.jsonl"`` unless ``record=`` says otherwise.
    """
    started: list[Simulator] = []

    def make(**overrides: Any) -> Simulator:
        values: dict[str, Any] = {**TEST_CREDENTIALS, "record": tmp_path / "record.jsonl"}
        values.update(overrides)
        sim = Simulator(SimulatorConfig(**values)).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., Simulator]) -> Simulator:
    """A started simulator with default settings and the documentation's credentials."""
    return make_simulator()
