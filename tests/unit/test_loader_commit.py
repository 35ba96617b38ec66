"""The loader's offset commit: a failed commit means re-delivery, never the loader's end."""

from __future__ import annotations

import logging

import pytest
from kafka.errors import CommitFailedError, KafkaConnectionError, KafkaTimeoutError

from jobs.loader import Loader


class FailingConsumer:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def commit(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [CommitFailedError("rebalanced"), KafkaConnectionError("111 ECONNREFUSED"), KafkaTimeoutError("no coordinator")],
)
def test_a_commit_that_fails_is_logged_and_loading_goes_on(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="metering.loader"):
        Loader._commit(FailingConsumer(error))  # the broker down (kill soak), or a rebalance: no exception
    assert "records will be re-delivered" in caplog.text and type(error).__name__ in caplog.text
