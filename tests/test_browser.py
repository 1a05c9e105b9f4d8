"""The course in a real browser: JupyterLab in headless Chromium (playwright) runs every cell of every
course notebook and we check what a learner sees — no error output, every figure rendered, and every widget answering
one change with exactly one new figure. Marker ``browser``; skipped when Chromium or playwright is missing
(``.ci/run`` installs Debian's ``chromium``). On failure a screenshot is saved under the test's tmp dir.

The notebooks are copied to a temporary folder first: JupyterLab saves outputs into the files it runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from kimi_mini.notebooks import list_notebooks

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
COURSE = list_notebooks()  # all twelve
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")]
CELL_TIMEOUT_S = 600
# notebooks whose explorers must be found and driven (a cell that lost its controls would otherwise pass unseen)
WIDGET_CELLS = {"09_dmr": 1}  # 09: the review browser (review slider, seed menu; RNP and DMR vs the gold rationale)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("playwright.sync_api")
    folder = tmp_path_factory.mktemp("lab")
    for nb in COURSE:
        shutil.copy(nb, folder / nb.name)
    port, token = _free_port(), "kimi-mini-browser-test"
    env = {**os.environ, "JUPYTER_TOKEN": token}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--ServerApp.root_dir={folder}", f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
           "--LabApp.news_url=", "--LabServerApp.extra_labextensions_path=[]"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(folder / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(folder / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start in 120 s")
    yield base, token, folder
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


IMAGES = ".jp-OutputArea-output img"


def _idle(page) -> bool:
    return page.locator(".jp-StatusBar-Widget", has_text="Idle").count() > 0


def _open(page, url: str) -> None:
    page.goto(url)
    page.locator(".jp-Notebook").first.wait_for()
    deadline = time.time() + 180
    while time.time() < deadline:  # the kernel chooser may ask once; the news prompt may appear
        dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
        if dialog.count():
            dialog.get_by_role("button", name="Select").click()
        if _idle(page):
            return
        page.wait_for_timeout(1000)
    raise AssertionError("the kernel did not start")


def _run_all(page) -> None:
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).first.click()
    page.wait_for_timeout(3000)
    deadline = time.time() + CELL_TIMEOUT_S * 3
    while time.time() < deadline:  # a busy cell shows "[*]"; the status bar says "Idle" at the end
        if page.locator(".jp-InputPrompt", has_text="[*]").count() == 0 and _idle(page):
            return
        page.wait_for_timeout(2000)
    raise AssertionError("the notebook did not finish running")


@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_notebook_runs_in_jupyterlab(lab, browser, path, tmp_path):
    base, token, _ = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    try:
        # a workspace of its own: JupyterLab would otherwise reopen the previous test's notebook beside this one
        _open(page, f"{base}/lab/workspaces/{path.stem}/tree/{path.name}?reset&token={token}")
        _run_all(page)
        errors = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
        assert errors.count() == 0, f"error output: {errors.first.inner_text()[:1500]}"
        images = page.locator(IMAGES)
        assert images.count() > 0, "no figure rendered"
        broken = page.evaluate("sel => [...document.querySelectorAll(sel)].filter(i => !i.complete || "
                               "i.naturalWidth === 0).length", IMAGES)
        assert broken == 0, f"{broken} figure(s) did not render"
        _check_widgets(page, at_least=WIDGET_CELLS.get(path.stem, 0))
    except BaseException:
        page.screenshot(path=str(tmp_path / f"{path.stem}.png"), full_page=True)
        raise
    finally:
        page.close()
        _shut_down_kernels(base, token)


def _shut_down_kernels(base: str, token: str) -> None:
    """A finished notebook's kernel would otherwise stay alive (and hold its memory) until the lab stops."""
    import json

    auth = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernels", headers=auth), timeout=10) as r:
        kernels = json.load(r)
    for k in kernels:
        req = urllib.request.Request(f"{base}/api/kernels/{k['id']}", headers=auth, method="DELETE")
        urllib.request.urlopen(req, timeout=30).close()


def _check_widgets(page, at_least: int = 0) -> None:
    """Every cell with an explorer's controls (``interactive_figure``: one figure output, the controls below it;
    progress-bar widgets are not controls)
    answers one change of its first control with exactly one new figure: the figure above the controls is
    replaced, and no figure is added."""
    cells = page.locator(".jp-CodeCell").filter(has=page.locator(".jp-OutputArea-output .kimi-mini-controls"))
    assert cells.count() >= at_least, f"{cells.count()} widget cell(s) with controls, expected at least {at_least}"
    for i in range(cells.count()):
        cell = cells.nth(i)
        cell.scroll_into_view_if_needed()
        images = cell.locator(".jp-OutputArea-output img")
        n_before = images.count()
        assert n_before >= 1, f"widget cell {i}: no figure above its controls"
        before = images.nth(n_before - 1).get_attribute("src")
        slider = cell.locator(".widget-slider .ui-slider-handle, .widget-slider [role='slider'], .noUi-handle")
        select, text = cell.locator("select"), cell.locator(".widget-text input")
        if slider.count():
            slider.first.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(5000)
            if images.nth(n_before - 1).get_attribute("src") == before:  # the slider started at its maximum
                page.keyboard.press("ArrowLeft")
                page.keyboard.press("ArrowLeft")
        elif select.count():
            select.first.select_option(index=1 if select.first.locator("option").count() > 1 else 0)
        elif text.count():
            text.first.fill("x = 1")
            text.first.press("Enter")
        else:
            continue
        deadline = time.time() + 120
        while time.time() < deadline:
            if images.count() == n_before and images.nth(n_before - 1).get_attribute("src") != before:
                break
            page.wait_for_timeout(500)
        assert images.count() == n_before, (f"widget cell {i}: {images.count()} figures after one change, "
                                            f"{n_before} before (a change must replace the figure, not add one)")
        assert images.nth(n_before - 1).get_attribute("src") != before, f"widget cell {i}: the figure did not change"
