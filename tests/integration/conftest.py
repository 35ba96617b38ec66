"""Fixtures of the integration tier beyond tests/conftest.py's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.kafka import KafkaBroker
from infra.settings import StackSettings
from tests.support.spare_broker import running, spare_stack_settings


@pytest.fixture(scope="module")
def spare_broker(tmp_path_factory: pytest.TempPathFactory, stack_settings: StackSettings) -> Iterator[KafkaBroker]:
    """A KRaft broker of this module's own (tests/support/spare_broker.py) that its tests may stop or kill."""
    with running(KafkaBroker(spare_stack_settings(stack_settings, tmp_path_factory.mktemp("spare") / "home"))) as broker:
        yield broker
