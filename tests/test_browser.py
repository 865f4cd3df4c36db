"""End-to-end: the real server on 127.0.0.1, the page driven in headless Chromium (selenium + chromedriver).

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``) and the
``selenium`` package; skipped where they are missing. Selenium is pointed at the system chromedriver, so Selenium
Manager never downloads anything.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
import time

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None, reason="needs Debian chromium and chromium-driver"
)
webdriver = pytest.importorskip("selenium.webdriver")
pytest.importorskip("onnxruntime")
uvicorn = pytest.importorskip("uvicorn")

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from _deploy import exported_run, png_bytes, rgba_silhouette  # noqa: E402
from stillroom.deploy.service import create_app  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(teacher_run, tmp_path_factory, tmp_path):
    run = exported_run(teacher_run, tmp_path_factory.mktemp("deploy"))
    db = tmp_path / "telemetry.sqlite"
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(run, db_path=db), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", db
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def test_upload_see_verdict_and_send_feedback(server, browser, tmp_path):
    url, db = server
    image = tmp_path / "upload.png"
    image.write_bytes(png_bytes(rgba_silhouette()))
    browser.get(url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#correct-label option")) == 4)  # /info loaded
    browser.find_element(By.ID, "file").send_keys(str(image))
    wait.until(ec.visibility_of_element_located((By.ID, "result")))
    verdict = browser.find_element(By.ID, "verdict").text.lower()
    assert verdict in ("accept", "uncertain", "reject")
    assert browser.find_element(By.ID, "silhouette").get_attribute("src").startswith("data:image/png;base64,")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#top5 tr")) == 4
    assert "alpha" in browser.find_element(By.ID, "mask-source").text

    Select(browser.find_element(By.ID, "correct-label")).select_by_visible_text("cross")
    browser.find_element(By.ID, "correct").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "feedback-status"), "saved"))

    con = sqlite3.connect(db)
    pred = con.execute("SELECT id, verdict FROM predictions").fetchall()
    assert len(pred) == 1 and pred[0][1] == verdict
    fb = con.execute("SELECT prediction_id, action, label FROM feedback").fetchall()
    assert fb == [(pred[0][0], "correct", "cross")]
