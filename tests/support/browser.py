"""Debian's headless Chromium, driven by Selenium through Debian's chromedriver (no browser
download). A missing browser fails the test with the command that installs it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HINT = "apt-get install -y chromium chromium-driver (Debian), and pip install selenium"


@contextmanager
def chromium(profile: Path, width: int = 1280, height: int = 800) -> Iterator[object]:
    """A WebDriver for a fresh profile in ``profile``; quit at the end."""
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        pytest.fail(f"chromium is not installed: {HINT}")
    if not (Path(CHROMEDRIVER).exists() or shutil.which("chromedriver")):
        pytest.fail(f"chromedriver is not installed: {HINT}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(f"selenium is not installed: {HINT}")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 "--hide-scrollbars", "--force-device-scale-factor=1",
                 f"--window-size={width},{height}", f"--user-data-dir={profile}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(
        service=Service(
            CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
        ),
        options=options,
    )
    try:
        yield driver
    finally:
        driver.quit()
