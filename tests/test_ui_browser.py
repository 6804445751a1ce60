"""The console in a real browser: Debian's headless Chromium, driven through chromedriver by
Selenium, against a real `vigil serve` with logged traffic and two drift runs.

Set VIGIL_UI_SCREENSHOTS=docs/screenshots to refresh the README's screenshots."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from service.settings import Settings
from tests.conftest import MODEL
from tests.servers import VigilServer, wait_stored

TOKEN = "browser-token-for-tests-9d04b1"
REQUESTS = 150
WAIT_S = 30
pytestmark = pytest.mark.slow


def _vigil(server: VigilServer, *args: str, timeout: float = 240) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=server.env, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def served(
    vigil_server: object, rows: list[dict[str, float]], home: Path
) -> tuple[VigilServer, datetime]:
    env = {
        "VIGIL_ADMIN_TOKEN": TOKEN,
        "VIGIL_SPOOL_SEGMENT_SECONDS": "0.5",
        "VIGIL_COMPACT_INTERVAL_S": "0.2",
    }
    server: VigilServer = vigil_server(env=env)  # type: ignore[operator]
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i in range(REQUESTS):
            r = client.post(f"/v1/models/{MODEL}/predict", json={"instances": [rows[i]]})
            assert r.status_code == 200, r.text
    settings = Settings(model_store=home / "models", data_dir=home / "data")
    wait_stored(settings, MODEL, REQUESTS)  # both exports then read the same delivered files
    _vigil(server, "drift", "run", "--model", MODEL)  # analyses the traffic
    _vigil(server, "drift", "run", "--model", MODEL, "--no-html")  # nothing new: insufficient
    return server, since


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--window-size=1280,800"):  # fmt: skip
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(tmp_path / "downloads")}
    )
    driver = webdriver.Chrome(
        service=Service(executable_path="/usr/bin/chromedriver"), options=options
    )
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: WebDriver, tmp_path: Path, name: str) -> None:
    out = Path(os.environ.get("VIGIL_UI_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(out / f"{name}.png"))
    assert (out / f"{name}.png").stat().st_size > 10_000


def _wait(driver: WebDriver) -> WebDriverWait:  # type: ignore[type-arg]
    return WebDriverWait(driver, WAIT_S)


def _full_page(driver: WebDriver) -> None:
    """Make the window as tall as the page, so a screenshot shows all of it."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(800, int(height)), 4000))


def test_console_in_a_browser(
    served: tuple[VigilServer, datetime], browser: WebDriver, tmp_path: Path
) -> None:
    server, since = served
    b = browser
    b.get(server.url + "/ui")
    _wait(b).until(ec.presence_of_element_located((By.ID, "token")))
    _shot(b, tmp_path, "login")
    b.find_element(By.ID, "token").send_keys(TOKEN)
    b.find_element(By.ID, "sign-in").click()

    # Models: the demo model, served v1, its requests and drift verdict
    table = _wait(b).until(ec.presence_of_element_located((By.ID, "models")))
    row = table.find_element(By.XPATH, f".//tr[td/a[text()='{MODEL}']]")
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "v1" and cells[4] == str(REQUESTS), cells
    assert "insufficient data" in cells[8], cells  # the latest run, shown as such
    _shot(b, tmp_path, "models")

    # Model: the passport of each version
    row.find_element(By.LINK_TEXT, MODEL).click()
    passport = _wait(b).until(ec.presence_of_element_located((By.ID, "passport-v1")))
    assert "sha256" in passport.text and "conversion parity" in passport.text
    assert "passed" in passport.text and "training data" in passport.text
    _full_page(b)
    _shot(b, tmp_path, "model")
    b.set_window_size(1280, 800)

    # Drift: the trend chart drawn as SVG; the analysed run a point of each measure, the run
    # without enough data a point of its own trace, labelled so, not a "no drift" at 0
    b.find_element(By.LINK_TEXT, "Drift").click()
    chart = _wait(b).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#drift-trend[data-rendered]"))
    )
    traces = chart.find_elements(By.CSS_SELECTOR, "svg.main-svg .scatterlayer g.trace")
    points = [len(t.find_elements(By.CSS_SELECTOR, "path.point")) for t in traces]
    legend = [e.text for e in chart.find_elements(By.CSS_SELECTOR, ".legend .legendtext")]
    runs = b.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    status = [r.find_element(By.CSS_SELECTOR, ".status").text for r in runs]
    assert status[0] == "insufficient data" and status[1] in ("ok", "drift"), status
    assert legend[0] == "share of drifted features" and legend[-1] == "insufficient data"
    assert points[0] == 1 and points[-1] == 1, points
    assert b.find_elements(By.CSS_SELECTOR, "#drift-heatmap[data-rendered] svg.main-svg")
    _full_page(b)
    _shot(b, tmp_path, "drift")
    b.set_window_size(1280, 800)

    # Traffic
    b.find_element(By.LINK_TEXT, "Traffic").click()
    _wait(b).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#traffic-0[data-rendered]")))
    assert f"v1 {REQUESTS:,}" in b.find_element(By.ID, "traffic-totals").text
    _full_page(b)
    _shot(b, tmp_path, "traffic")
    b.set_window_size(1280, 800)

    # Logs: the window's CSV, byte for byte what `vigil logs export` writes
    window = f"since={since:%Y-%m-%dT%H:%M:%S}"
    b.get(f"{server.url}/ui/models/{MODEL}/logs?{window}")
    assert b.find_element(By.ID, "row-count").text == str(REQUESTS)
    _shot(b, tmp_path, "logs")
    b.find_element(By.ID, "download-csv").click()
    downloaded = tmp_path / "downloads" / f"{MODEL}.csv"
    deadline = time.monotonic() + WAIT_S
    while not downloaded.is_file():
        assert time.monotonic() < deadline, "the CSV was not downloaded"
        time.sleep(0.1)
    cli = tmp_path / "cli.csv"
    _vigil(server, "logs", "export", "--model", MODEL, "--since", f"{since:%Y-%m-%dT%H:%M:%S}",
           "--out", str(cli))  # fmt: skip
    assert downloaded.read_bytes() == cli.read_bytes()

    # Back-test: runs in the background, its page refreshes until the table is there
    b.get(f"{server.url}/ui/models/{MODEL}/backtest")
    b.find_element(By.ID, "run-backtest").click()
    result = WebDriverWait(b, 120).until(ec.presence_of_element_located((By.ID, "job-result")))
    assert "label agreement" in result.text and str(REQUESTS) in result.text
    _shot(b, tmp_path, "backtest")

    # Promote with a wrong token: the admin API's own error, verbatim
    api = httpx.post(
        f"{server.url}/v1/admin/models/{MODEL}/promote", json={"version": 2},
        headers={"Authorization": "Bearer wrong"},
    )  # fmt: skip
    b.get(f"{server.url}/ui/models/{MODEL}")
    b.find_element(By.ID, "promote-token").send_keys("wrong")
    b.find_element(By.ID, "promote").click()
    error = _wait(b).until(ec.presence_of_element_located((By.ID, "action-error")))
    assert error.text == f"promote failed: 401 {api.json()['error']}"
    _shot(b, tmp_path, "promote-error")

    # A phone's width: the models table still readable (it scrolls sideways)
    b.set_window_size(390, 844)
    b.get(server.url + "/ui")
    assert b.find_element(By.ID, "models").is_displayed()
    _shot(b, tmp_path, "models-phone")
