"""The app served by `streamlit run` and driven in Debian's chromium through Playwright."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import duckdb
import pytest

from recsys.config import Config
from recsys.pipeline import run_batch

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STARTUP_SECONDS = 60
PAGE_MS = 60_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(store: Path) -> Iterator[str]:
    """`streamlit run app.py` on `store`, on a free port, until the block ends."""
    port = free_port()
    env = {**os.environ, "RECSYS_STORE": str(store)}
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, server, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_healthy(url: str, server: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            pytest.fail(f"streamlit exited with {server.returncode}: {log.read()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"streamlit did not answer at {url} within {STARTUP_SECONDS} s")


@contextmanager
def browser_page() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_MS)
            yield page
        finally:
            browser.close()


def settle(page) -> None:
    """Wait until the script run is over and every table and chart has replaced its skeleton."""
    page.wait_for_function("""() => {
        const app = document.querySelector("[data-testid=stApp]");
        return app?.dataset.testScriptState === "notRunning"
            && !document.querySelector("[data-testid=stSkeleton]");
    }""")


def after_rerun(page) -> None:
    """Wait for the rerun an input has asked for (if it has not finished already) to end."""
    try:
        page.wait_for_function(
            "document.querySelector('[data-testid=stApp]')?.dataset.testScriptState"
            " !== 'notRunning'", timeout=2_000)
    except sync_api.TimeoutError:
        pass
    settle(page)


def pick(page, label: str, option: re.Pattern, attempts: int = 3) -> None:
    """Open the selectbox `label` and click `option`; a rerun that redraws the list retries."""
    for attempt in range(attempts):
        try:
            page.get_by_role("combobox", name=label).click()
            page.get_by_role("option").filter(has_text=option).click(timeout=10_000)
            return
        except sync_api.TimeoutError:
            if attempt == attempts - 1:
                raise
            page.keyboard.press("Escape")
            settle(page)


def screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the window to fit it."""
    settle(page)
    height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(1000, height)})
    settle(page)
    page.wait_for_timeout(500)
    page.screenshot(path=str(path), full_page=True)


def shown_text(page, text: str):
    """The st.text element that shows exactly `text`."""
    return page.get_by_test_id("stText").filter(has_text=re.compile(f"^{re.escape(text)}$"))


def first_recommendation(store: Path, where: str = "", **params: str) -> tuple[str, str]:
    """(user_id, title of their first recommendation) read from the store's current run."""
    with duckdb.connect(str((store / "current.duckdb").resolve()), read_only=True) as con:
        return con.sql(f"""
            SELECT r.user_id, t.title FROM recommendations r JOIN tracks t USING (track_id)
            WHERE r.rank = 1 AND t.title IS NOT NULL {where}
            ORDER BY r.user_id LIMIT 1""", params=params or None).fetchall()[0]


def test_inspector_in_a_browser_finds_a_user_and_their_first_recommendation(sample_store):
    user_id, title = first_recommendation(sample_store)
    ARTIFACTS.mkdir(exist_ok=True)
    with served(sample_store) as url, browser_page() as page:
        page.goto(f"{url}/inspector")
        page.get_by_role("heading", name="User inspector").wait_for()
        settle(page)

        # Type the id, then pick the user from the list of matches.
        search = page.get_by_label("Find a user by id or name")
        search.fill(user_id)
        search.press("Enter")
        after_rerun(page)
        pick(page, "User", re.compile(f"^{re.escape(user_id)} · "))
        after_rerun(page)

        shown_text(page, title).wait_for()
        settle(page)
        assert title in page.inner_text("body")
        assert f"user={quote(user_id)}" in page.url
        screenshot(page, ARTIFACTS / "inspector.png")


def test_markup_in_the_data_stays_text_in_a_browser(tmp_path):
    from test_app import ODD_NAME, ODD_USER, write_odd_dataset

    write_odd_dataset(tmp_path / "data")
    run_batch(tmp_path / "data", tmp_path / "store", cfg=Config())
    _, title = first_recommendation(tmp_path / "store", "AND r.user_id = $user", user=ODD_USER)
    dialogs = []
    with served(tmp_path / "store") as url, browser_page() as page:
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{url}/inspector?user={quote(ODD_USER)}")
        shown_text(page, title).wait_for()
        settle(page)

        assert title in page.inner_text("body")
        picked = page.get_by_role("combobox", name="User").input_value()
        assert picked.startswith(f"{ODD_USER} · {ODD_NAME} · ")
        assert page.locator("b", has_text="bold").count() == 0
        assert page.locator("script", has_text="alert(1)").count() == 0
        assert page.locator("a[href='https://example.com']").count() == 0
        assert dialogs == []
