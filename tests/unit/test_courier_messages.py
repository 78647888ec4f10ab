"""The courier's built messages: a bounded cache, so that a campaign of distinct texts (a new
message with every request) does not keep every message it sent in the sending process."""

from __future__ import annotations

import threading

from batch_sender.config import MessageOptions
from batch_sender.send import courier as courier_module
from batch_sender.send.courier import Courier
from batch_sender.send.ratelimit import RateLimiter
from batch_sender.store import Chunk, ChunkRecipient


def _chunk(message_id: int, parts: int = 1) -> Chunk:
    return Chunk(campaign_id=1, client_message_id=f"{message_id:032x}", message_id=message_id,
                 wire_text=f"Hi number {message_id}", unicode=False, parts=parts,
                 recipients=(ChunkRecipient(message_id, "27821000001"),))  # fmt: skip


def _courier() -> Courier:
    return Courier(client=None, options=MessageOptions(sender="Shop"),  # type: ignore[arg-type]
                   limiter=RateLimiter(None), max_attempts=3, max_wait=60.0,
                   stop=threading.Event())  # fmt: skip


def test_distinct_messages_are_not_all_kept():
    courier = _courier()
    size = courier_module.MESSAGE_CACHE_SIZE
    for message_id in range(3 * size + 7):
        courier._job(_chunk(message_id))
        assert len(courier._messages) <= size


def test_a_message_is_the_same_whether_kept_or_built_again():
    courier = _courier()
    first = courier._job(_chunk(5, parts=2)).message
    assert courier._job(_chunk(5, parts=2)).message is first  # kept: built once
    for message_id in range(1000, 1000 + courier_module.MESSAGE_CACHE_SIZE + 1):
        courier._job(_chunk(message_id))  # pushes message 5 out
    again = courier._job(_chunk(5, parts=2)).message
    assert again == first
    assert (again.text, again.sender, again.concat) == ("Hi number 5", "Shop", 2)
