"""The course in a real browser: JupyterLab runs lessons 01 and 07, their widgets render and redraw.

What a student does, in headless Chromium: open the lesson, Run > Run All Cells, look at every
output, move a slider and see the figure change. The checks read ipywidgets' and JupyterLab's own
DOM classes (``.widget-slider``, ``.noUi-handle``, ``.widget-output``, ``[data-mime-type=...]``),
never lorakit's internals, so they hold however the widgets are written. Sliders move with the
keyboard (focus the handle, press an arrow key), which releases the slider like a mouse does and
does not depend on how wide it is drawn.

Not part of ``make test`` (this folder is outside ``tests/``): run it with ``make test-browser``.
It needs the system's Chromium (Debian: ``sudo apt-get install chromium``) and Playwright
(``pip install -e '.[browser]'``), and skips without them. Never ``playwright install``: the test
drives the system's Chromium, so nothing is downloaded.

Left out: the other lessons (``make test`` runs every notebook with nbval), ipywidgets 7 and Colab,
and what the figures show (the widget tests in ``tests/`` check that).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright's own browsers are never used
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]
INSTALL_HINT = (
    "the browser test needs Chromium and Playwright: sudo apt-get install chromium, then "
    "pip install -e '.[browser]' (or make test-browser); never `playwright install`"
)
TEST_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LORAKIT_MODE": "small",
    "LORAKIT_TEST": "1",
}
# Run All takes about 30 s (lesson 01) and 55 s (lesson 07, which loads its LoRAs from
# data/loras/ or runs/lesson07/) on 2 cores; the margin is for slower machines, the whole test
# stays under 4 minutes.
RUN_ALL_TIMEOUT_S = 200
REDRAW_TIMEOUT_S = 30  # a redraw takes 1-4 s; a new LoRA scale draws one picture first
# ipywidgets' default is 300 px in all, about 120 px of track: too coarse to aim at a rank
MIN_SLIDER_PX = 450

# Sizes as the student sees them: every slider's width, every label the browser had to cut short.
LAYOUT_JS = """() => {
  const shown = e => e.offsetParent !== null;
  const sliders = [...document.querySelectorAll('.jp-Cell-outputArea .widget-slider')].filter(shown)
    .map(e => ({label: e.querySelector('.widget-label')?.textContent ?? '', \
px: Math.round(e.getBoundingClientRect().width)}));
  const cut = [...document.querySelectorAll(\
'.jp-Cell-outputArea .widget-label, .jp-Cell-outputArea .widget-label-basic')]
    .filter(e => shown(e) && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent);
  return {sliders, cut};
}"""

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found: {INSTALL_HINT}", allow_module_level=True)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason=f"Playwright is not installed: {INSTALL_HINT}"
)
pytest.importorskip(
    "jupyterlab", reason="JupyterLab is not installed: pip install -e '.[dev]' (or make setup)"
)

# JupyterLab settings for a clean, repeatable run. Autosave off: the lessons stay committed without
# outputs. Windowing off: every cell stays in the DOM, so every output can be checked.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
}

# What the notebook shows now, per code cell: prompt, source's first line, errors and widgets.
# JupyterLab 4 draws an error like any stderr text
# (data-mime-type="application/vnd.jupyter.stderr"), so errors are read from the notebook's model
# (`window.jupyterapp`, exposed by the server's --LabApp.expose_app_in_browser, as JupyterLab's own
# UI tests do); without it, from stderr text whose line starts with an exception name
# ("ZeroDivisionError: division by zero").
NOTEBOOK_STATE_JS = """() => {
  const cells = [...document.querySelectorAll(\
'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell')];
  const model = window.jupyterapp?.shell?.currentWidget?.content?.model;
  const modelErrors = [];
  if (model) {
    for (let i = 0; i < model.cells.length; i++) {
      const cell = model.cells.get(i);
      if (cell.type !== 'code') continue;
      const errors = [];
      for (let j = 0; j < cell.outputs.length; j++) {
        const output = cell.outputs.get(j).toJSON();
        if (output.output_type === 'error') errors.push(output);
      }
      modelErrors.push(errors);
    }
  }
  const exceptionLine = /^[A-Za-z_][\\w.]*(Error|Exception|Exit|Interrupt)\\b.*/m;
  return {
    status: document.querySelector(\
'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator')
              ?.getAttribute('data-status') ?? null,
    cells: cells.map((cell, index) => {
      const outputs = cell.querySelector('.jp-Cell-outputArea');
      const all = sel => outputs ? [...outputs.querySelectorAll(sel)] : [];
      // ipywidgets' renderer leaves out the data-mime-type that JupyterLab's own renderers set
      const widgets = all(':scope > .jp-OutputArea-child > .jp-OutputArea-output').filter(o =>
        !o.hasAttribute('data-mime-type') || o.querySelector('.jupyter-widgets'));
      return {
        index,
        prompt: (cell.querySelector('.jp-InputArea-prompt')?.textContent ?? '').trim(),
        source: (cell.querySelector('.cm-content')?.innerText ?? '').split('\\n')[0].slice(0, 100),
        errors: model && modelErrors.length === cells.length
          ? modelErrors[index].map(e => `${e.ename}: ${e.evalue}`)
          : all(':scope > .jp-OutputArea-child > [data-mime-type="application/vnd.jupyter.stderr"]')
              .map(e => e.innerText).filter(t => exceptionLine.test(t))\
.map(t => t.match(exceptionLine)[0]),
        stderr: all(\
':scope > .jp-OutputArea-child > [data-mime-type="application/vnd.jupyter.stderr"]')
                  .map(e => e.innerText.slice(-2000)),
        tracebacks: all('[data-mime-type="application/vnd.jupyter.stderr"]').map(e => e.innerText)
                      .filter(t => t.includes('Traceback (most recent call last)'))\
.map(t => t.slice(-2000)),
        widgets: widgets.length,
        widgets_rendered: widgets.filter(w => w.querySelector(':scope > .jupyter-widgets')
                                              && \
!/Error displaying widget|Loading widget/.test(w.innerText)).length,
        widget_problems: widgets.map(w => w.innerText)\
.filter(t => /Error displaying widget/.test(t))
                                .map(t => t.slice(0, 300)),
        sliders: all('.widget-slider').length,
      };
    }),
  };
}"""

LESSONS = [
    # (notebook, public function whose slider is moved, widget outputs the lesson shows at least)
    pytest.param("01_low_rank_intuition.ipynb", "svd_explorer", 2, id="01-svd-explorer"),
    pytest.param("07_rank_alpha_lab.ipynb", "lora_scale_explorer", 3, id="07-lora-scale-explorer"),
]


def _report(request, line: str) -> None:
    """Print past pytest's capture, so `make test-browser` always shows the times."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET"):
    """The Jupyter server's REST API, straight to 127.0.0.1 (no proxy from the environment)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"{base}{path}", method=method, headers={"Authorization": f"token {token}"}
    )
    with opener.open(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@pytest.fixture(scope="module")
def lab(request, tmp_path_factory):
    """JupyterLab from this environment on 127.0.0.1: (base URL, token, log file); stopped after
    the module."""
    started = time.monotonic()
    home = tmp_path_factory.mktemp("lab")
    for plugin, values in LAB_SETTINGS.items():
        path = home / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {
        **os.environ,
        **TEST_ENV,
        # the user's own Jupyter and IPython set-up stays out; the venv's kernel spec is still found
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
    }
    env.pop("MPLBACKEND", None)  # the kernel's default, inline: figures arrive as <img> in the page
    port, token = _free_port(), secrets.token_hex(16)
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={ROOT}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True",
        f"--FileCheckpoints.checkpoint_dir={home / 'checkpoints'}",
    ]  # not notebooks/.ipynb_checkpoints
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = home / "jupyterlab.log"
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}:\n{_tail(log)}")
            try:
                _api(base, token, "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {base} within 90 s:\n{_tail(log)}")
                time.sleep(0.5)
        _report(request, f"\nJupyterLab up in {time.monotonic() - started:.1f} s")
        yield base, token, log
    finally:
        server.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        _report(
            request,
            f"browser test: {time.monotonic() - started:.0f} s in all, JupyterLab start included",
        )


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _wait_for_kernel(page, base: str, token: str, path: str, timeout_s: float = 60) -> None:
    """Until the notebook's kernel has started and the page shows it idle.

    The execution indicator already reads idle while the page has no kernel yet ("No Kernel |
    Initializing"); Run All then would ask which kernel to start.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        started = any(
            s["path"] == path and s["kernel"] and s["kernel"]["execution_state"] == "idle"
            for s in _api(base, token, "/api/sessions")
        )
        shown = page.evaluate("""() => {
          const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
          const name = panel?.querySelector('.jp-Toolbar-kernelName')?.innerText.trim() ?? '';
          const status = panel?.querySelector('.jp-Notebook-ExecutionIndicator')\
?.getAttribute('data-status');
          return name !== '' && name !== 'No Kernel' && status === 'idle';
        }""")
        if started and shown:
            return
        time.sleep(0.5)
    pytest.fail(f"the kernel of {path} did not start within {timeout_s:.0f} s")


def _accept_kernel_dialog(page) -> None:
    """Should JupyterLab still ask which kernel to start, take the one it proposes (the
    notebook's)."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    try:
        dialog.wait_for(timeout=1500)
    except sync_api.TimeoutError:
        return
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()


def _wait_for_run_all(page, timeout_s: float) -> dict:
    """Poll until every code cell has an execution count and the kernel is idle, or a cell
    failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = page.evaluate(NOTEBOOK_STATE_JS)
        cells = state["cells"]
        busy = [c for c in cells if "*" in c["prompt"]]
        counted = [c for c in cells if re.fullmatch(r"\[\d+\]:?", c["prompt"])]
        failed = any(c["errors"] for c in cells)
        if (
            cells
            and not busy
            and (failed or (len(counted) == len(cells) and state["status"] in (None, "idle")))
        ):
            return state
        if time.monotonic() > deadline:
            waiting = [
                f"cell {c['index']} {c['prompt'] or '[ ]'} {c['source']!r}"
                for c in cells
                if c not in counted
            ]
            pytest.fail(
                f"Run All did not finish within {timeout_s:.0f} s; kernel {state['status']}; "
                f"{len(counted)} of {len(cells)} code cells ran; waiting: {waiting[:5]}"
            )
        time.sleep(0.5)


def _wait_for_widgets(page, timeout_s: float = 20) -> dict:
    """Widget views render after their cell finished: give them a moment."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = page.evaluate(NOTEBOOK_STATE_JS)
        pending = sum(c["widgets"] - c["widgets_rendered"] for c in state["cells"])
        if not pending or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def _problems(state: dict) -> list[str]:
    problems = []
    for cell in state["cells"]:
        where = f"cell {cell['index']} ({cell['source']!r})"
        problems += [
            f"{where} raised {text}:\n" + "\n".join(cell["stderr"]) for text in cell["errors"]
        ]
        if not cell["errors"]:  # a traceback without an error: a widget's callback failed
            problems += [f"{where} printed a traceback:\n{text}" for text in cell["tracebacks"]]
        problems += [f"{where}: {text}" for text in cell["widget_problems"]]
        if cell["widgets"] != cell["widgets_rendered"]:
            problems.append(
                f"{where}: {cell['widgets'] - cell['widgets_rendered']} of {cell['widgets']} "
                "widgets did not render"
            )
    return problems


def _shown_figure(cell) -> str:
    """The src of the figure in the widget's output area (a data: URL of the PNG), or ''."""
    images = cell.locator(".widget-output img")
    if not images.count():
        return ""
    return images.first.get_attribute("src") or ""


def _stop_kernels(base: str, token: str) -> None:
    for session in _api(base, token, "/api/sessions"):
        _api(base, token, f"/api/sessions/{session['id']}", method="DELETE")


@pytest.mark.parametrize(("notebook", "explorer", "min_widgets"), LESSONS)
def test_lesson_runs_and_its_slider_redraws(
    request, lab, browser, tmp_path, notebook, explorer, min_widgets
):
    base, token, log = lab
    started = time.monotonic()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        # ?reset: a fresh workspace, so only this lesson is open
        page.goto(f"{base}/lab/tree/notebooks/{notebook}?reset&token={token}")
        page.locator(".jp-NotebookPanel .jp-Notebook .jp-CodeCell").first.wait_for(timeout=60_000)
        _wait_for_kernel(page, base, token, f"notebooks/{notebook}")

        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        _accept_kernel_dialog(page)
        _wait_for_run_all(page, RUN_ALL_TIMEOUT_S)
        ran = time.monotonic() - started
        state = _wait_for_widgets(page)
        problems = _problems(state)
        assert not problems, f"{notebook}:\n" + "\n\n".join(problems)
        widgets = sum(c["widgets"] for c in state["cells"])
        sliders = sum(c["sliders"] for c in state["cells"])
        assert widgets >= min_widgets and sliders >= min_widgets, (
            f"{notebook} shows {widgets} widgets with {sliders} sliders; "
            f"expected at least {min_widgets} of each"
        )

        layout = page.evaluate(LAYOUT_JS)
        assert layout["sliders"], f"{notebook}: no slider found to measure"
        narrow = [
            f"{s['label']!r} {s['px']} px" for s in layout["sliders"] if s["px"] < MIN_SLIDER_PX
        ]
        assert not narrow, (
            f"{notebook}: sliders narrower than {MIN_SLIDER_PX} px, too coarse to aim: {narrow}"
        )
        assert not layout["cut"], f"{notebook}: widget labels cut short: {layout['cut']}"

        # the first cell that calls the explorer and shows a slider: move it, see the figure change
        cell = (
            page.locator(".jp-Notebook .jp-CodeCell")
            .filter(has=page.locator(".cm-content", has_text=f"{explorer}("))
            .filter(has=page.locator(".widget-slider"))
            .first
        )
        slider = cell.locator(".jp-Cell-outputArea .widget-slider").first
        handle, readout = (
            slider.locator(".noUi-handle").first,
            slider.locator(".widget-readout").first,
        )
        before_value, before_figure = readout.inner_text(), _shown_figure(cell)
        assert before_figure.startswith("data:image/"), (
            f"{notebook}: the {explorer} shows no figure before the move"
        )
        at_max = float(handle.get_attribute("aria-valuenow")) >= float(
            handle.get_attribute("aria-valuemax")
        )
        handle.scroll_into_view_if_needed()
        handle.focus()
        moved = time.monotonic()
        page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")  # one step; released at once

        deadline = time.monotonic() + REDRAW_TIMEOUT_S
        while (
            readout.inner_text() == before_value or _shown_figure(cell) in ("", before_figure)
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
        after_value, after_figure = readout.inner_text(), _shown_figure(cell)
        redraw = time.monotonic() - moved
        assert after_value != before_value, (
            f"{notebook}: the {explorer} slider did not move ({before_value})"
        )
        assert after_figure not in ("", before_figure), (
            f"{notebook}: the {explorer} figure did not change within {REDRAW_TIMEOUT_S} s "
            "of moving the slider "
            f"from {before_value} to {after_value}"
        )
        problems = _problems(page.evaluate(NOTEBOOK_STATE_JS))
        assert not problems, f"{notebook} after moving the slider:\n" + "\n\n".join(problems)
        _report(
            request,
            f"{notebook}: sliders {sorted({s['px'] for s in layout['sliders']})} px wide, "
            "no label cut",
        )
        _report(
            request,
            f"{notebook}: Run All {ran:.0f} s, {explorer} slider {before_value} -> {after_value} "
            f"redrawn in {redraw:.1f} s, {time.monotonic() - started:.0f} s in all",
        )
    except BaseException:
        try:
            page.screenshot(path=str(tmp_path / "failure.png"))
        except Exception:  # the page may be gone; the log below still tells what happened
            pass
        _report(
            request,
            f"{notebook}: screenshot in {tmp_path / 'failure.png'}; JupyterLab log:\n{_tail(log)}",
        )
        raise
    finally:
        context.close()
        _stop_kernels(base, token)

    on_disk = json.loads((ROOT / "notebooks" / notebook).read_text())
    assert not any(c.get("outputs") for c in on_disk["cells"] if c["cell_type"] == "code"), (
        f"notebooks/{notebook} was saved with outputs: the test must leave the lessons clean"
    )
