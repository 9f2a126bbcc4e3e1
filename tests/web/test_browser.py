"""The technologist's console in a real headless Chromium against a running agent: log in,
a QC-failed series appears with its critical banner, its key image loads and is not blank,
Release moves the series to forwarded in the journal, log out. A series description that is
HTML is shown as text, never run.

Screenshots at 1280x800 and 1024x768 go to the test's folder; with
``UPDATE_SCREENSHOTS=1`` to ``docs/`` (what the README shows).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.support.agent_proc import AgentProcess
from tests.support.browser import chromium
from tests.support.dicom_factory import series_header
from tests.support.peers import storescu
from tests.support.qc_series import write_series
from tests.support.web import PASSWORDS, add_users, web_overrides, web_url

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = '<img src=x onerror="document.title=1">'
# Records when each row is first shown flagged (the browser's clock, ms since the epoch).
WATCH_ROWS = """
window.rowFlagged = {};
new MutationObserver(() => {
  for (const tr of document.querySelectorAll('#series tbody tr.critical')) {
    if (!(tr.dataset.uid in window.rowFlagged)) window.rowFlagged[tr.dataset.uid] = Date.now();
  }
}).observe(document.querySelector('#series tbody'), {childList: true});
"""
PIXELS = """
const img = document.getElementById('key-image');
const c = document.createElement('canvas');
c.width = img.naturalWidth; c.height = img.naturalHeight;
const g = c.getContext('2d'); g.drawImage(img, 0, 0);
const d = g.getImageData(0, 0, c.width, c.height).data;
let lo = 255, hi = 0, bright = 0;
for (let i = 0; i < d.length; i += 4) {
  const v = (d[i] + d[i + 1] + d[i + 2]) / 3;
  lo = Math.min(lo, v); hi = Math.max(hi, v); if (v > 40) bright++;
}
return [c.width, c.height, lo, hi, bright / (d.length / 4)];
"""


def until(driver: Any, condition: Any, timeout: float = 90, what: str = "") -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: condition(d), message=what
    )  # fmt: skip


def clicked(driver: Any, css: str) -> bool:
    """Click the element now matching ``css``; False (try again) if the live feed redrew it
    between finding and clicking."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        driver.find_element(By.CSS_SELECTOR, css).click()
    except StaleElementReferenceException:
        return False
    return True


def viewport(driver: Any, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip


def shots_dir(tmp_path: Path) -> Path:
    return ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path


def send(agent: AgentProcess, files: list[Path]) -> str:
    storescu(agent.port, files)
    return str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def test_technologist_logs_in_sees_the_flagged_series_and_releases_it(
    agent_factory: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    agent: AgentProcess = agent_factory(**web_overrides())
    add_users(agent)
    agent.start()
    base, shots = web_url(agent), shots_dir(tmp_path)
    with chromium(tmp_path / "profile") as driver:
        viewport(driver, 1280, 800)
        driver.get(base + "/")
        assert driver.current_url.endswith("/login")
        driver.find_element(By.ID, "username").send_keys("tech")
        driver.find_element(By.ID, "password").send_keys(PASSWORDS["tech"])
        driver.find_element(By.ID, "login").click()
        until(driver, lambda d: d.find_element(By.ID, "link").text == "live", what="live feed")
        driver.execute_script(WATCH_ROWS)

        header = series_header(HOSTILE, "HEAD")
        clean = send(agent, write_series(tmp_path / "clean", "clean", 0, n=4, header=header))
        row = until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-uid="{clean}"]'))
        assert row[0].find_elements(By.TAG_NAME, "td")[0].text == HOSTILE
        assert driver.find_elements(By.CSS_SELECTOR, "#series img") == []
        assert driver.title != "1", "the description ran as HTML"

        ring = send(agent, write_series(tmp_path / "ring", "ring", 3, n=4))
        banner = driver.find_element(By.ID, "banner")
        until(driver, lambda d: banner.is_displayed(), what="the critical banner")
        assert "CRITICAL qc: REPEAT HEAD RING" in banner.text, banner.text
        # the banner comes from the alert stream, the row's verdict from the journal's: the row
        # may still show the series receiving for a moment after the banner
        until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'tr.critical[data-uid="{ring}"]'),
              what="the flagged row marked critical")  # fmt: skip
        verdict_at = agent.query("SELECT updated_at FROM last_verdicts WHERE series_uid = ?", ring)
        seen = driver.execute_script(f"return window.rowFlagged['{ring}']")
        print(
            f"\nflagged row on the page {seen - verdict_at[0][0] * 1000:.0f} ms after its verdict"
        )
        driver.save_screenshot(str(shots / "web-console-1280x800.png"))
        mute = driver.find_element(By.ID, "mute")
        assert mute.text == "Sound on"
        mute.click()
        assert mute.text == "Sound off"
        assert driver.execute_script("return localStorage.getItem('scanner-agent-muted')") == "1"
        mute.click()  # on again for the next page
        viewport(driver, 1024, 768)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"the table is {overflow} px wider than a 1024x768 screen"
        driver.save_screenshot(str(shots / "web-console-1024x768.png"))
        viewport(driver, 1280, 800)

        until(driver, lambda d: clicked(d, f'tr[data-uid="{ring}"]'), what="the row clicked")
        until(driver, lambda d: d.current_url.endswith(f"/series/{ring}"))
        until(driver, lambda d: d.execute_script(
            "const i = document.getElementById('key-image'); return i.complete && i.naturalWidth > 0"),
            what="the key image")  # fmt: skip
        width, height, lo, hi, bright = driver.execute_script(PIXELS)
        assert width >= 256 and height >= 256, (width, height)
        assert hi - lo > 100 and 0.05 < bright < 0.95, ("a blank key image", lo, hi, bright)
        until(driver, lambda d: "ring_hu" in d.find_element(By.ID, "reasons").text)
        driver.save_screenshot(str(shots / "web-console-series-1280x800.png"))
        viewport(driver, 1024, 768)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, f"the series page is {overflow} px wider than 1024x768"
        driver.save_screenshot(str(shots / "web-console-series-1024x768.png"))
        viewport(driver, 1280, 800)

        driver.find_element(By.CSS_SELECTOR, "button.act.release").click()
        dialog = driver.find_element(By.ID, "confirm")
        until(driver, lambda d: dialog.get_attribute("open") is not None, what="the confirmation")
        assert "Release HEAD RING?" in dialog.text
        driver.find_element(By.ID, "confirm-yes").click()
        answer = driver.find_element(By.ID, "answer")
        until(driver, lambda d: answer.get_attribute("data-applied") == "yes", what=answer.text)
        assert answer.text.startswith("released")
        agent.wait_for("SELECT state FROM series WHERE series_uid = ?",
                       lambda r: r[0][0] == "forwarded", 60, ring)  # fmt: skip
        who = agent.query("SELECT who, action FROM series_audit WHERE series_uid = ?", ring)
        assert [tuple(w) for w in who] == [("tech (web)", "release")]
        until(driver, lambda d: d.find_element(By.ID, "state").text == "forwarded")

        driver.find_element(By.LINK_TEXT, "Department").click()
        cells = until(
            driver,
            lambda d: d.execute_script(  # the table is redrawn every second
                "const r = document.querySelector('#department tbody tr');"
                "return r && [...r.cells].map((c) => c.textContent)"
            ),
            what="the department",
        )
        assert cells[0] == "test-agent" and cells[2] == "online", cells
        assert cells[3] == "HEAD RING" and cells[4] == "forwarded", cells

        driver.find_element(By.ID, "logout").click()
        until(driver, lambda d: d.current_url.endswith("/login"), what="the login page")
        status = driver.execute_script("return fetch('/api/series').then(r => r.status)")
        assert status == 401
