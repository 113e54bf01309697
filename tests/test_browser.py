"""The built site in a real headless Chromium (Debian's package, driven by Playwright; never
`playwright install`): opened from file:// with no network, served over http, on a phone, in
dark mode and in print. Marks are counted, since Vega reports a data failure only as a warning."""
import functools
import http.server
import shutil
import threading

import pytest

from precompute import figures

pytestmark = pytest.mark.browser
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
BOUND = {"lab-correlations": ["d_index"], "lab-interference": ["angle", "bias"],
         "lab-packing": ["n_features", "s_index"], "superposition-panel": ["s_index"],
         "sae-recovery": ["target_S", "dict", "lam"]}
MARKS = "svg .mark-rect path, svg .mark-symbol path, svg .mark-line path, svg .mark-rule line, " \
        "svg .mark-text text, svg .mark-area path"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.fail("Debian's chromium is not installed: run `make test`, which installs it")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=chromium, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        yield ctx
        ctx.close()


class Page:
    """A page with every request and console message recorded."""

    def __init__(self, browser, url, **emulate):
        self.page = browser.new_page()
        if emulate:
            self.page.emulate_media(**emulate)
        self.requests, self.console = [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.goto(url)
        self.page.wait_for_function(
            "document.documentElement.getAttribute('data-figures') === 'rendered'", timeout=30000)

    def charts(self):
        return self.page.eval_on_selector_all(
            ".chart[data-figure]", f"""els => els.map(e => ({{id: e.dataset.figure,
                state: e.dataset.rendered, marks: e.querySelectorAll({MARKS!r}).length}}))""")

    def assert_clean(self, allowed=("file:", "data:")):
        charts = self.charts()
        assert charts, "no charts on the page"
        for c in charts:
            assert c["state"] == "true" and c["marks"] > 10, c
        assert [u for u in self.requests if not u.startswith(allowed)] == []
        assert self.console == []

    def close(self):
        self.page.close()


def test_essay_from_disk_renders_every_chart_offline(browser, site):
    page = Page(browser, (site / "index.html").as_uri())
    page.assert_clean()
    assert [c["id"] for c in page.charts()] and {c["id"] for c in page.charts()} == set(figures.ids())
    page.close()


@pytest.mark.parametrize("fid", figures.ids())
def test_figure_page_and_every_control(browser, site, fid):
    """Each control is moved with the keyboard (so it is keyboard-operable) and must change the
    rendered marks."""
    page = Page(browser, (site / "figures" / fid / "index.html").as_uri())
    page.assert_clean()
    chart = page.page.locator(f'.chart[data-figure="{fid}"]')
    # One control per binding: a slider, a select, or the checked radio of a group.
    controls = chart.locator(".vega-bind input[type=range], .vega-bind select, "
                             ".vega-bind input[type=radio]:checked")
    assert controls.count() == len(BOUND.get(fid, ())), fid
    for i in range(controls.count()):
        control = controls.nth(i)
        before = chart.locator("svg").inner_html()
        control.focus()
        key = control.evaluate("""e => e.type === 'range' ? (+e.value >= +e.max ? 'ArrowLeft' : 'ArrowRight')
            : e.tagName === 'SELECT' ? (e.selectedIndex === e.options.length - 1 ? 'ArrowUp' : 'ArrowDown')
            : 'ArrowRight'""")
        page.page.keyboard.press(key)
        page.page.wait_for_timeout(150)
        assert chart.locator("svg").inner_html() != before, f"{fid}: control {i} ({key}) changed nothing"
    assert page.console == []
    page.close()


def test_offline_edition_is_one_self_contained_file(browser, site, tmp_path):
    lone = tmp_path / "copy.html"
    shutil.copyfile(site / "superposition-offline.html", lone)  # away from every other file
    page = Page(browser, lone.as_uri())
    page.assert_clean()
    assert {u for u in page.requests if not u.startswith("data:")} == {lone.as_uri()}
    page.close()


def test_served_over_http_like_github_pages(browser, site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        origin = f"http://127.0.0.1:{server.server_port}/"
        page = Page(browser, origin + "index.html")
        page.assert_clean(allowed=(origin, "data:"))
        page.close()
    finally:
        server.shutdown()


def test_phone_width_has_no_page_overflow(browser, site):
    page = browser.new_page()
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto((site / "index.html").as_uri())
    page.wait_for_function("document.documentElement.getAttribute('data-figures') === 'rendered'")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.close()


def test_dark_theme_and_print(browser, site):
    dark = Page(browser, (site / "index.html").as_uri(), color_scheme="dark")
    dark.assert_clean()
    bg = dark.page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert bg == "rgb(21, 23, 26)"
    dark.close()
    printed = Page(browser, (site / "index.html").as_uri(), media="print")
    shown = printed.page.eval_on_selector_all(
        ".figure", "fs => fs.map(f => [getComputedStyle(f.querySelector('.static')).display,"
                   " getComputedStyle(f.querySelector('.chart')).display])")
    assert shown and all(s == ["block", "none"] for s in shown)
    printed.close()


def test_citation_preview_on_keyboard_focus(browser, site):
    page = Page(browser, (site / "index.html").as_uri())
    link = page.page.locator(".cite a").first
    tip = page.page.locator(".cite .cite-tip").first
    assert not tip.is_visible()
    link.focus()
    assert tip.is_visible() and "Zoom In" in tip.inner_text()  # the essay's first citation
    page.close()
