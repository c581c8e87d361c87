"""Headless Debian Chromium for browser checks (no browser download): Playwright drives /usr/bin/chromium."""

from __future__ import annotations

import contextlib
import shutil

import pytest

# Without the background-networking flags Chromium keeps dialling out, which this sandbox refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Debian chromium is not installed (make chromium)")
    return path


@contextlib.contextmanager
def browser_page(width: int = 1600, height: int = 1000):
    """A Playwright page in headless Debian Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
