"""t2i-demo in a real browser: headless Chromium (Debian's chromium + chromium-driver, which ``make install``
adds when it can) opens the page served on localhost, types a caption, clicks Generate, waits for the gallery,
checks each image is really there (decoded by the browser, and its bytes decode to the model's resolution),
then opens the Run tab and finds the loss plot, the evaluation table and the health verdicts.

``T2I_DEMO_SCREENSHOT=PATH`` also saves the Generate tab to PATH and the Run tab beside it (``-run`` added
to the name); ``T2I_DEMO_SOURCE=RUN`` serves that model instead of the test's tiny run (for a README
screenshot whose images show something). Skipped, saying why, when the browser or its driver is absent.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None)
CAPTION = "a small red circle in the center on a black background"
N_IMAGES = 3
WAIT_S = 60  # generous: the machine may be busy with other tests

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver (make install adds them when it can: "
                              "apt-get install chromium chromium-driver)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (requirements-dev.txt)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # headless; no sandbox because tests may run as root (CI containers); nothing but localhost is opened
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served(run):
    """The demo of the tiny run (or of T2I_DEMO_SOURCE) on a free localhost port, in a background thread."""
    from t2i_demo import build_demo, launch_demo, load_sampler

    sampler = load_sampler(os.environ.get("T2I_DEMO_SOURCE") or run)
    demo = build_demo(sampler)
    url = launch_demo(demo, port=free_port(), block=False, quiet=True)
    try:
        yield url, sampler.config.data.resolution
    finally:
        demo.close()


def test_the_page_generates_images_for_a_typed_caption_and_shows_the_run(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, resolution = served
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(url)

    # Generate tab: a caption, how many images, then the button
    caption = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#caption textarea"))
    caption.send_keys(CAPTION)
    count = browser.find_element(By.CSS_SELECTOR, "#count input[type=number]")
    count.send_keys(Keys.CONTROL, "a")
    count.send_keys(str(N_IMAGES), Keys.TAB)
    if not os.environ.get("T2I_DEMO_SOURCE"):  # the tiny run's dcgan has no truncation trick: no control shown
        assert not any(e.is_displayed() for e in browser.find_elements(By.CSS_SELECTOR, "#truncate, #truncation"))
    browser.find_element(By.CSS_SELECTOR, "#generate").click()

    # the gallery fills with N decoded images, each labelled with its seed
    loaded = "return Array.from(document.querySelectorAll('#images img')).filter(i => i.complete && i.naturalWidth > 0).length"
    wait.until(lambda d: d.execute_script(loaded) == N_IMAGES)
    images = browser.find_elements(By.CSS_SELECTOR, "#images img")
    assert len(images) == N_IMAGES
    assert [img.get_attribute("alt") for img in images] == [f"seed {j}" for j in range(N_IMAGES)]
    for img in images:
        assert browser.execute_script("return arguments[0].naturalWidth", img) == resolution
        assert img.get_attribute("src").startswith(url)  # served by the demo itself, not from elsewhere
        with urllib.request.urlopen(img.get_attribute("src"), timeout=WAIT_S) as response:
            decoded = Image.open(io.BytesIO(response.read()))
            decoded.load()
        assert decoded.size == (resolution, resolution)
    shot = os.environ.get("T2I_DEMO_SCREENSHOT")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(shot)

    # Run tab: loss curves (a rendered plot), sample grids, the evaluation table, the health verdicts
    run_tab = [t for t in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text.strip() == "Run"]
    assert run_tab, "no Run tab"
    run_tab[0].click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#losses svg .mark-line, #losses canvas"))
    table = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#evaluation"))
    wait.until(lambda d: "metric" in table.text and "diversity/collapse_score" in table.text)
    assert "Training health" in browser.find_element(By.CSS_SELECTOR, "#health").text
    grids = "return Array.from(document.querySelectorAll('#grids img')).filter(i => i.complete && i.naturalWidth > 0).length"
    wait.until(lambda d: d.execute_script(grids) > 0)
    # the page fetched nothing from outside the demo's own server (no web fonts, no analytics, no CDN)
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched and [u for u in fetched if not u.startswith((url, "data:", "blob:"))] == []
    if shot:  # the whole tab, not just the first screenful
        for _ in range(2):  # the page reflows once it is taller
            height = browser.execute_script("return document.documentElement.scrollHeight")
            browser.set_window_size(1280, min(int(height) + 120, 3000))
        browser.save_screenshot(str(Path(shot).with_name(f"{Path(shot).stem}-run{Path(shot).suffix}")))
