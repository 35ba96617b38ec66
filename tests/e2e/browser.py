"""Headless Chromium for browser tests: Debian's ``chromium`` + ``chromium-driver`` (installed by .ci/run).

Selenium is given the driver's path, so it never tries to download a browser. Where Chromium is
missing the browser tests are skipped on a developer's machine and fail in CI (``CI`` set), so a
CI run cannot pass without having driven the real page.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from infra.settings import PROJECT_ROOT

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,2000",
)


def artifacts_dir() -> Path:
    """Where tests leave screenshots (METERING_TEST_ARTIFACTS, default .metering/test-artifacts)."""
    path = Path(os.environ.get("METERING_TEST_ARTIFACTS") or PROJECT_ROOT / ".metering" / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    """A Selenium WebDriver on headless Debian Chromium with a throwaway profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _find("chromium", "chromium-browser"), _find("chromedriver")
    if not browser or not driver:
        message = "headless Chromium is needed: apt-get install chromium chromium-driver (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages: CSP violations, errors
    with tempfile.TemporaryDirectory(prefix="metering-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        web = webdriver.Chrome(service=Service(driver), options=options)
        try:
            yield web
        finally:
            web.quit()
