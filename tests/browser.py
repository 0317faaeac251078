"""Open an HTML file in headless Chromium (Debian's package) with no network, and say what
happened: console messages, page errors, requests that tried to leave the file, how many
Plotly plots rendered, whether the images decoded, and a screenshot.

The network is cut twice: the browser runs in a new network namespace with no interfaces
(``unshare -n``) where the kernel allows it, and every request that is not for the file
itself or a ``data:`` URI is recorded and aborted. Playwright drives the browser through
a pipe, so it needs no network either; ``playwright install`` (which downloads browsers)
is never needed: ``executable_path`` points at /usr/bin/chromium.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = os.environ.get("CHIRPID_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]


@dataclass
class PageCheck:
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    plots: int = 0
    rendered_plots: int = 0
    plots_without_svg: list[str] = field(default_factory=list)
    images: int = 0
    broken_images: int = 0
    isolated: bool = False  # the browser ran in a network namespace of its own

    @property
    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions, and any warning that is not Chromium's
        software-GL chatter (WebGL plots such as parallel coordinates draw through
        SwiftShader here, which reports its own "GL Driver Message" stalls)."""
        return ([text for kind, text in self.console if kind == "error"]
                + [text for kind, text in self.console if kind == "warning" and "GL Driver Message" not in text]
                + self.page_errors)


def chromium_missing_reason() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing: install it with `make browser` (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is missing: pip install -e '.[dev]'"
    return None


def _launcher(tmp: Path) -> tuple[str, bool]:
    """A wrapper that starts Chromium in an empty network namespace, if unshare works here."""
    for command in (["unshare", "-n"], ["unshare", "-rn"]):
        if shutil.which(command[0]) and subprocess.run(command + ["true"], capture_output=True).returncode == 0:
            script = tmp / "chromium-offline.sh"
            script.write_text(f'#!/bin/sh\nexec {" ".join(command)} {CHROMIUM} "$@"\n')
            script.chmod(script.stat().st_mode | stat.S_IXUSR)
            return str(script), True
    return CHROMIUM, False


def check_page(html: Path, screenshot: Path, *, width: int = 1280, height: int = 900,
               full_page: bool = True) -> PageCheck:
    from playwright.sync_api import sync_playwright

    html = Path(html).resolve()
    result = PageCheck()
    with tempfile.TemporaryDirectory(prefix="chirpid-browser-") as tmp:
        executable, result.isolated = _launcher(Path(tmp))
        with sync_playwright() as p:
            # Playwright gives each launch a fresh temporary profile (its own --user-data-dir)
            browser = p.chromium.launch(executable_path=executable, args=FLAGS)
            try:
                context = browser.new_context(viewport={"width": width, "height": height}, offline=True)
                page = context.new_page()
                page.on("console", lambda m: result.console.append((m.type, m.text)))
                page.on("pageerror", lambda e: result.page_errors.append(str(e)))

                def on_dialog(dialog):
                    result.dialogs.append(dialog.message)
                    dialog.dismiss()

                page.on("dialog", on_dialog)
                url = html.as_uri()

                def route(r):
                    if r.request.url == url or r.request.url.startswith("data:"):
                        r.continue_()
                    else:
                        result.outside_requests.append(r.request.url)
                        r.abort()

                page.route("**/*", route)
                page.goto(url, wait_until="load")
                page.wait_for_function("document.querySelectorAll('div.plot').length === "
                                       "document.querySelectorAll('div.plot.js-plotly-plot').length", timeout=60_000)
                page.wait_for_timeout(500)  # let Plotly finish its deferred layout passes
                info = page.evaluate("""() => {
                    const plots = [...document.querySelectorAll('div.plot')];
                    const bare = plots.filter(p => !p.querySelector('svg.main-svg')).map(p => p.id);
                    const drawn = plots.filter(p => p.querySelector('svg.main-svg') &&
                        p.querySelectorAll('g.trace, g.cartesianlayer .trace, .plot .point, .bars path,'
                          + ' g.hm image, .parcoords, g.boxlayer path, .barlayer path').length > 0).length;
                    const imgs = [...document.images];
                    return {plots: plots.length, drawn, bare,
                            images: imgs.length, broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).length};
                }""")
                result.plots, result.rendered_plots = info["plots"], info["drawn"]
                result.plots_without_svg = info["bare"]
                result.images, result.broken_images = info["images"], info["broken"]
                page.screenshot(path=str(screenshot), full_page=full_page)
            finally:
                browser.close()
    return result
