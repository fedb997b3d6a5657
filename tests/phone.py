"""The status page as a phone shows it: a real headless Chromium, 375 CSS px wide.

`phone(profile)` starts one (chromium and chromium-driver from Debian; the test fails, never
skips, when they are missing) and quits it on exit. Pytest puts tests/ on sys.path, so test
modules `from phone import phone`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services import require_binary

PHONE_W, PHONE_H = 375, 800
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
# Without these, a headless Chromium on a machine with no outside network stalls on refused
# connections (component updates, sync, QUIC probes).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                  f"--window-size={PHONE_W},{PHONE_H}")


@contextmanager
def phone(profile: Path) -> Iterator[Any]:
    """A Chromium WebDriver emulating a phone; `profile`: an empty folder for its profile."""
    require_binary(CHROMIUM, "chromium")
    require_binary(CHROMEDRIVER, "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        # a phone: 375 CSS px wide, the page's viewport meta honoured
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": PHONE_W, "height": PHONE_H, "deviceScaleFactor": 2, "mobile": True})
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()
