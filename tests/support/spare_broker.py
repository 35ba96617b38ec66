"""The spare KRaft broker: a second, independent broker (own home, ports from
METERING_TEST_SPARE_PORT_BASE) that a test may stop, kill and start again without touching the
session's stack (tests/conftest.py's ``stack``).

``tests/integration/conftest.py`` gives it as the module-scoped ``spare_broker`` fixture; a module
needing a broker of another shape (the SASL tests' listeners) builds its ``KafkaBroker`` on
:func:`spare_stack_settings` and runs it with :func:`running`. The spare ports are one set for the whole
run: the modules using them run one at a time (docs/testing.md, "Services in tests").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from infra.kafka import KafkaBroker
from infra.settings import StackSettings

#: The spare stack's first port when METERING_TEST_SPARE_PORT_BASE is not set.
DEFAULT_SPARE_PORT_BASE = 39092


def spare_stack_settings(stack_settings: StackSettings, home: Path) -> StackSettings:
    """The test stack's settings moved to the spare ports and ``home`` (the verified jar cache stays shared)."""
    base = int(os.environ.get("METERING_TEST_SPARE_PORT_BASE", str(DEFAULT_SPARE_PORT_BASE)))
    return replace(stack_settings.with_ports(base), home=home)


@contextmanager
def running(broker: KafkaBroker) -> Iterator[KafkaBroker]:
    """``broker`` started for the block and stopped after it (also when a test killed or stopped it)."""
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
