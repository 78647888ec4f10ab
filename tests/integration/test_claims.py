"""One-recipient chunks (distinct texts) are claimed many to a transaction, over real HTTP.

A claim is one transaction however many chunks it holds; claiming a courier's worth of
one-recipient chunks at a time made claims a third of the coordinator's time. Full chunks (one
text) are claimed as before, and every number still goes out exactly once.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from fixtures_cli import write_csv

from batch_sender import campaign, sources
from batch_sender.config import GatewaySettings, RunSettings
from batch_sender.send.coordinator import MAX_CLAIM_SCALE
from batch_sender.simulator import Simulator
from batch_sender.store import Store

ROWS = 600
CONCURRENCY = 8


class CountingStore(Store):
    """The real store, noting how many chunks each claim returned."""

    claims: list[int]

    def claim_chunks(self, *args: Any, **kwargs: Any) -> Any:
        chunks = super().claim_chunks(*args, **kwargs)
        self.claims.append(len(chunks))
        return chunks


def send(tmp_path: Path, sim: Simulator, text: str) -> tuple[list[int], Counter[str], Any]:
    numbers = [str(27830000000 + i) for i in range(ROWS)]
    csv = write_csv(tmp_path / "c.csv", [(n, f"name{n}") for n in numbers])
    settings = RunSettings(name="c", text=text, concurrency=CONCURRENCY, chunk_size=100)
    creds = sim.credentials
    gateway = GatewaySettings(sim.url, str(creds.api_id), creds.user, creds.password)
    store = CountingStore.open(f"sqlite:///{tmp_path / 'results.db'}")
    store.claims = []
    client = campaign.open_client(gateway, max_connections=CONCURRENCY)
    with store, client:
        result = campaign.run(settings, source=sources.open_csv(csv), store=store, client=client)
    sent = Counter(
        json.loads(line)["to"]
        for line in Path(str(sim.config.record)).read_text().splitlines()
        if line.strip()
    )
    return [n for n in store.claims if n], sent, result


def test_distinct_texts_are_claimed_many_chunks_to_a_transaction(make_simulator, tmp_path):
    claims, sent, result = send(tmp_path, make_simulator(), "Hi {name}")

    assert result.counts == {"sent": ROWS}
    assert sent == Counter({str(27830000000 + i): 1 for i in range(ROWS)})
    # a courier's worth per claim (the old rule) would take ROWS / CONCURRENCY = 75 claims
    assert len(claims) <= ROWS // (CONCURRENCY * MAX_CLAIM_SCALE // 2), claims
    assert max(claims) > CONCURRENCY * 2


def test_one_text_is_claimed_in_full_chunks_a_couriers_worth_at_a_time(make_simulator, tmp_path):
    claims, sent, result = send(tmp_path, make_simulator(), "Hello")

    assert result.counts == {"sent": ROWS}
    assert set(sent.values()) == {1} and len(sent) == ROWS
    assert sum(claims) == ROWS // 100  # six chunks of 100
