"""The request size after lost answers (send.exposure): shrink at once, grow back slowly."""

from __future__ import annotations

import logging

import pytest

from batch_sender.send.exposure import CLEAN_TO_GROW, Exposure, Verdict, verdict
from batch_sender.states import Status
from batch_sender.store import Outcome


def test_a_healthy_gateway_keeps_the_chunk_size():
    exposure = Exposure(50)
    for _ in range(100):
        exposure.observe(Verdict.CLEAN, 50)
    assert (exposure.size, exposure.shrinks, exposure.lost_requests) == (50, 0, 0)


def test_a_lost_answer_of_many_numbers_drops_to_one_then_doubles_back():
    exposure = Exposure(50)
    exposure.observe(Verdict.LOST, 50)
    assert exposure.size == 1
    sizes = []
    for _ in range(CLEAN_TO_GROW * 7):
        exposure.observe(Verdict.CLEAN, exposure.size)
        sizes.append(exposure.size)
    assert sizes[CLEAN_TO_GROW - 2] == 1 and sizes[CLEAN_TO_GROW - 1] == 2
    assert sorted(set(sizes)) == [1, 2, 4, 8, 16, 32, 50]  # capped at the limit
    assert (exposure.shrinks, exposure.lost_requests) == (1, 1)


def test_a_loss_while_growing_starts_the_count_again():
    exposure = Exposure(10)
    exposure.observe(Verdict.LOST, 10)
    for _ in range(CLEAN_TO_GROW - 1):
        exposure.observe(Verdict.CLEAN, 1)
    exposure.observe(Verdict.LOST, 1)  # a one-number loss settles exactly: no new shrink
    exposure.observe(Verdict.CLEAN, 1)
    assert exposure.size == 1
    assert (exposure.shrinks, exposure.lost_requests) == (1, 2)


def test_neutral_answers_neither_shrink_nor_grow():
    exposure = Exposure(8)
    exposure.observe(Verdict.LOST, 8)
    for _ in range(CLEAN_TO_GROW * 3):
        exposure.observe(Verdict.NEUTRAL, 1)
    assert exposure.size == 1


def test_a_lost_one_number_request_at_size_one_changes_nothing():
    exposure = Exposure(1)
    exposure.observe(Verdict.LOST, 1)
    assert (exposure.size, exposure.shrinks) == (1, 0)


def test_the_limit_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Exposure(0)


def test_verdicts_from_outcomes():
    assert verdict(()) is Verdict.NEUTRAL  # rows handed back, nothing answered
    assert verdict((Outcome(1, Status.FAILED, error_code="105"),)) is Verdict.CLEAN
    mixed = (Outcome(1, Status.SENT, api_message_id="a" * 32), Outcome(2, Status.UNKNOWN))
    assert verdict(mixed) is Verdict.LOST


def test_a_wholly_accepted_chunk_is_clean():
    from batch_sender.store import SentOutcomes

    assert verdict(SentOutcomes.of({1: "a" * 32, 2: "b" * 32})) is Verdict.CLEAN


def test_only_the_first_shrink_of_a_run_is_a_warning(caplog):
    exposure = Exposure(10)
    with caplog.at_level(logging.INFO, logger="batch_sender.send.exposure"):
        for _ in range(3):
            exposure.observe(Verdict.LOST, 10)
            for _ in range(CLEAN_TO_GROW * 4):
                exposure.observe(Verdict.CLEAN, exposure.size)
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.WARNING, logging.INFO, logging.INFO]
