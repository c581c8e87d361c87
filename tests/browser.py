"""Headless Debian Chromium for browser checks (no browser download): Playwright drives /usr/bin/chromium."""

from __future__ import annotations

import contextlib
import shutil

import pytest

# Without the background-networking flags Chromium keeps dialling out, which this sandbox refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
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


def artifact_frame(page, timeout_s: float = 60.0):
    """The MLflow artifact viewer's sandboxed iframe, once it holds its document (a ``blob:`` URL). The
    ``<iframe>`` element appears before its document is set, and how long after depends on the machine's
    load, so this waits for the document itself."""
    import time

    page.wait_for_selector("iframe", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while True:
        frames = [f for f in page.frames if f.url.startswith("blob:")]
        if frames:
            return frames[0]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no artifact document in {timeout_s:g} s; frames: {[f.url for f in page.frames]}"
            )
        page.wait_for_timeout(200)
