"""The documentation site as a reader sees it: built as ``make docs`` builds it, served on 127.0.0.1 and opened page
by page in Debian's headless Chromium (driven by Selenium through chromedriver, both from apt; ``.ci/run`` installs
them). Every page: no console error, no broken image, no link to a missing page, no code line cut at 1280 px. The
method page: the maths typeset by the MathJax served with the site, the layer diagram shown. Screenshots of the
home, getting-started, results and API pages are kept in ``build/docs-screenshots/`` (git-ignored).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "docs-screenshots"
SCREENSHOT_PAGES = {"home": "", "getting-started": "getting-started/", "results": "results/", "api": "api/"}
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WIDTH = 1280

pytestmark = pytest.mark.slow


def _require_browser() -> None:
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if path is None]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        message = f"the browser check needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs them (.ci/run): a skip there would hide the check
        pytest.skip(message)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built strictly as ``make docs`` builds it; under ``make test``, the build it has just made (it
    names it in ``FVAE_ASR_BUILT_SITE``)."""
    built_by_make = os.environ.get("FVAE_ASR_BUILT_SITE")
    if built_by_make and (Path(built_by_make) / "index.html").is_file():
        return Path(built_by_make)
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert built.returncode == 0, built.stderr
    return out


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WIDTH},900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _pages(site: Path) -> list[str]:
    """Every page's path below the site root, ``""`` for the home page."""
    return sorted(
        "" if page.parent == site else page.parent.relative_to(site).as_posix() + "/"
        for page in site.rglob("index.html")
    )


@functools.cache
def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


BROKEN_IMAGES = "return [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);"
LINKS = "return [...document.querySelectorAll('a[href]')].map(a => a.href);"
CUT_CODE = (
    "return [...document.querySelectorAll('pre > code')].filter(c => c.scrollWidth > c.clientWidth + 1)"
    ".map(c => c.textContent.split('\\n').reduce((a, b) => (b.length > a.length ? b : a), ''));"
)
MATHS = (  # raw: TeX left as text (a formula the Markdown did not hand to MathJax), outside code
    "const text = document.querySelector('article').cloneNode(true);"
    "text.querySelectorAll('pre, code, mjx-container, script').forEach(e => e.remove());"
    "return {typeset: document.querySelectorAll('.arithmatex mjx-container').length, "
    "source: document.querySelectorAll('.arithmatex').length, "
    "errors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length, "
    "raw: text.textContent.match(/\\\\[a-zA-Z]{2,}/g) || []};"
)


def _open(driver, url: str) -> None:
    driver.get(url)
    driver.execute_async_script(  # MathJax typesets after load: wait for it where the page has it
        "const done = arguments[arguments.length - 1];"
        "if (window.MathJax && MathJax.startup && MathJax.startup.promise) MathJax.startup.promise.then(() => done());"
        "else done();"
    )


def _screenshot(driver, path: Path) -> None:
    """The whole page, at the reader's width."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(max(height, 900), 12000))
    driver.save_screenshot(str(path))
    driver.set_window_size(WIDTH, 900)


def test_every_page_loads_cleanly_in_chromium(site, server, browser):
    problems: list[str] = []
    pages = _pages(site)
    assert len(pages) >= 30 and "" in pages and "results/" in pages and "cli/" in pages
    for page in pages:
        _open(browser, server + page)
        errors = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        problems += [f"{page}: console error: {message}" for message in errors]
        problems += [f"{page}: broken image {src}" for src in browser.execute_script(BROKEN_IMAGES)]
        for href in browser.execute_script(LINKS):
            target, _ = urldefrag(href)
            if urlparse(target).netloc == urlparse(server).netloc and _status(target) != 200:
                problems.append(f"{page}: broken link {href}")
        problems += [f"{page}: code cut at {WIDTH} px: {line!r}" for line in browser.execute_script(CUT_CODE)]
    assert not problems, "\n".join(problems)


def test_the_method_page_typesets_its_maths_and_shows_the_layer(site, server, browser):
    _open(browser, server + "method/")
    maths = browser.execute_script(MATHS)
    assert maths["source"] >= 20 and maths["typeset"] == maths["source"] and maths["errors"] == 0, maths
    assert maths["raw"] == [], maths
    diagram = browser.execute_script(
        "const img = document.querySelector('img[src$=\"fvae_lora_layer.svg\"]');"
        "return img && {width: img.naturalWidth, shown: img.getBoundingClientRect().width};"
    )
    assert diagram and diagram["width"] > 0 and diagram["shown"] > 300, diagram
    mathjax = [
        src for src in browser.execute_script("return [...document.scripts].map(s => s.src)") if "mathjax" in src
    ]
    assert mathjax and all(src.startswith(server) for src in mathjax), mathjax  # served with the site, no CDN


def test_screenshots_of_the_main_pages_are_kept(site, server, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, page in SCREENSHOT_PAGES.items():
        _open(browser, server + page)
        path = SCREENSHOTS / f"{name}.png"
        _screenshot(browser, path)
        assert path.stat().st_size > 10_000, path
