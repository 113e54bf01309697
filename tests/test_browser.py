"""The built site in a real headless Chromium (Debian's package, driven by Playwright; never
`playwright install`): opened from file:// with no network, served over http, on a phone, in
dark mode and in print. Marks are counted, since Vega reports a data failure only as a warning."""
import functools
import json
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
         "sae-recovery": ["target_S", "dict", "lam"], "correlated-features": ["c_index"]}
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


READY = "document.documentElement.getAttribute('data-figures') === 'rendered'"


def draw_every_chart(page):
    """Charts draw as they come near the screen: scroll to each in turn, wait until it is drawn
    (or failed), and come back to the top."""
    page.wait_for_function(READY, timeout=30000)
    for chart in page.query_selector_all(".chart[data-figure]"):
        chart.evaluate("e => e.closest('.figure').scrollIntoView()")
        page.wait_for_function("e => ['true', 'error'].includes(e.dataset.rendered)", arg=chart,
                               timeout=30000)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_function(READY, timeout=30000)


class Page:
    """A page with every request and console message recorded, and (unless draw=False) every
    chart drawn."""

    def __init__(self, browser, url, draw=True, **emulate):
        self.page = browser.new_page()
        if emulate:
            self.page.emulate_media(**emulate)
        self.requests, self.console = [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.goto(url)
        if draw:
            draw_every_chart(self.page)
        else:
            self.page.wait_for_function(READY, timeout=30000)

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


@pytest.mark.parametrize("name", ["index.html", "superposition-offline.html"])
def test_chart_tooltips_are_styled_by_the_stylesheet(browser, site, name):
    """vega-tooltip's own <style>, added at run time, would be refused by the CSP: site.js turns
    it off and style.css positions and shows the tooltip, with nothing reported."""
    page = Page(browser, (site / name).as_uri())
    page.page.locator('.chart[data-figure="superposition-panel"] svg .mark-rect path').first.hover()
    page.page.wait_for_selector("#vg-tooltip-element.visible", timeout=5000)
    assert page.page.eval_on_selector("#vg-tooltip-element", """e => [getComputedStyle(e).position,
        getComputedStyle(e).visibility, e.textContent.includes('value')]""") == \
        ["fixed", "visible", True]
    assert page.page.evaluate("document.getElementById('vega-tooltip-style')") is None
    assert page.console == []
    page.close()


def test_404_from_disk_is_styled_under_its_csp(browser, site):
    """404.html carries its stylesheet inline, allowed by its hash alone: it must apply (the dark
    background) with no CSP report in the console."""
    page = browser.new_page()
    page.emulate_media(color_scheme="dark")
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.goto((site / "404.html").as_uri())
    bg = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert bg == "rgb(21, 23, 26)" and console == []
    page.close()


@pytest.fixture(scope="module")
def trusting_site(site, tmp_path_factory):
    """The real site, rebuilt from an essay that allow_raw_html lets carry an inline handler."""
    from tests.conftest import ROOT, run_build
    base = tmp_path_factory.mktemp("raw")
    shutil.copytree(ROOT / "content", base / "content")
    with open(base / "content" / "meta.toml", "a") as f:
        f.write("allow_raw_html = true\n")
    with open(base / "content" / "essay.md", "a") as f:
        f.write('\nInjected: <img src="missing.png" alt="" '
                'onerror="window.pwned = true; document.title = \'pwned\'">\n')
    run_build("--content", base / "content", "--out", base / "site")
    return base / "site"


@pytest.mark.parametrize("name", ["superposition-offline.html", "index.html"])
def test_an_allowed_inline_handler_still_cannot_run(browser, trusting_site, name):
    page = Page(browser, (trusting_site / name).as_uri())
    assert 'onerror="window.pwned' in (trusting_site / name).read_text()
    assert page.page.evaluate("[typeof window.pwned, document.title]") == \
        ["undefined", "Polysemanticity"]
    # The handler was attempted and refused: the page's CSP, not a missing image, stopped it.
    assert any("Content Security Policy" in m and "inline event handler" in m
               for m in page.console), page.console
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
    draw_every_chart(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    page.close()


def test_dark_theme_and_print(browser, site):
    dark = Page(browser, (site / "index.html").as_uri(), color_scheme="dark")
    dark.assert_clean()
    bg = dark.page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    assert bg == "rgb(21, 23, 26)"
    dark.close()
    printed = Page(browser, (site / "index.html").as_uri(), draw=False, media="print")
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


PHONE = {"width": 375, "height": 740}
OVERFLOW = """() => {
    const w = window.innerWidth, bad = [];
    document.querySelectorAll('.chart[data-figure]').forEach(c => {
        const r = c.getBoundingClientRect(), svg = c.querySelector('svg').getBoundingClientRect();
        if (c.scrollWidth > c.clientWidth || r.right > w || svg.right > r.right + 1 || svg.left < r.left - 1)
            bad.push([c.dataset.figure, c.scrollWidth, c.clientWidth, svg.width]);
    });
    return bad;
}"""


@pytest.mark.parametrize("path", ["index.html", *[f"figures/{f}/index.html" for f in figures.ids()]])
def test_phone_charts_fit_the_column_and_controls_are_touch_sized(browser, site, path):
    page = browser.new_page()
    page.set_viewport_size(PHONE)
    page.goto((site / path).as_uri())
    draw_every_chart(page)
    assert page.evaluate(OVERFLOW) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    small = page.eval_on_selector_all(
        ".vega-bind input, .vega-bind select",
        "els => els.map(e => [e.name || e.type, e.getBoundingClientRect().height])"
        ".filter(([n, h]) => h < 24)")
    assert small == []
    page.close()


@pytest.mark.parametrize("width", [PHONE["width"], 1280])
def test_citation_previews_stay_on_screen_and_link_back(browser, site, width):
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": 740})
    page.goto((site / "index.html").as_uri())
    links = page.locator(".cite > a")
    ids = page.eval_on_selector_all(".cite > a", "as => as.map(a => a.id)")
    assert len(ids) == len(set(ids)) == links.count() > 0
    for i in range(links.count()):
        links.nth(i).focus()
        tip = page.locator(".cite-tip").nth(i)
        box = tip.bounding_box()
        assert tip.is_visible() and box["x"] >= 0 and box["x"] + box["width"] <= width, (i, box)
    # Every citation is reachable back from its reference.
    back = set(page.eval_on_selector_all(".backlinks a", "as => as.map(a => a.hash.slice(1))"))
    assert back == set(ids)
    page.close()


def test_offline_edition_alone_with_the_network_blocked_draws_and_prints(browser, site, tmp_path):
    """Copied alone into an empty folder and opened from file:// with every non-file request
    aborted: nothing fails, every chart draws, and the PDF carries every static figure."""
    lone = tmp_path / "superposition-offline.html"
    shutil.copyfile(site / "superposition-offline.html", lone)
    page = browser.new_page()
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:"))
               else route.abort())
    page.goto(lone.as_uri())
    draw_every_chart(page)
    charts = page.eval_on_selector_all(".chart[data-figure]", f"els => els.map(e => e.querySelectorAll({MARKS!r}).length)")
    assert len(charts) == len(figures.ids()) and min(charts) > 10
    page.emulate_media(media="print")
    # In print, every figure is its inlined static image, decoded and laid out at full size.
    images = page.eval_on_selector_all(
        ".figure img.static", "is => is.map(i => [i.src.slice(0, 5), i.complete && i.naturalWidth > 0,"
                              " getComputedStyle(i).display, i.getBoundingClientRect().width > 200])")
    assert images == [["data:", True, "block", True]] * len(figures.ids())
    pdf = page.pdf()
    # The figures are in the PDF: printing without them gives a much smaller file.
    page.evaluate("document.querySelectorAll('.figure img.static').forEach(i => i.remove())")
    bare = page.pdf()
    assert failed == [] and pdf.startswith(b"%PDF") and len(pdf) - len(bare) > 8 * 10_000, \
        (len(pdf), len(bare))
    page.close()


def test_printed_with_a_dark_preference_the_bibtex_reads(browser, site):
    page = Page(browser, (site / "index.html").as_uri(), draw=False, color_scheme="dark", media="print")
    fg, bg = page.page.eval_on_selector(
        "pre.bibtex", "e => [getComputedStyle(e.querySelector('code')).color, getComputedStyle(e).backgroundColor]")
    assert fg == "rgb(0, 0, 0)" and bg == "rgb(255, 255, 255)"
    page.close()


@pytest.mark.parametrize("width", [1280, 375])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_violations(browser, site, scheme, width):
    """axe-core on the main pages, in both schemes, on a desktop and a phone (where the wider
    display equations scroll sideways and must take keyboard focus)."""
    from axe_playwright_python.sync_playwright import Axe
    for path in ["index.html", "figures/index.html", "figures/lab-packing/index.html", "404.html"]:
        page = browser.new_page()
        page.set_viewport_size({"width": width, "height": 900})
        page.emulate_media(color_scheme=scheme)
        page.goto((site / path).as_uri())
        if path != "404.html" and path != "figures/index.html":
            draw_every_chart(page)
        results = Axe().run(page)
        assert results.violations_count == 0, (path, scheme, results.generate_report()[:3000])
        page.close()


CONTRAST = """() => {
    const rgb = c => (/rgba?\\(([\\d.]+),\\s*([\\d.]+),\\s*([\\d.]+)/.exec(c) || []).slice(1).map(Number);
    const lum = c => { const v = c.map(x => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
                       return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
    const ratio = (a, b) => (Math.max(lum(a), lum(b)) + 0.05) / (Math.min(lum(a), lum(b)) + 0.05);
    const page = rgb(getComputedStyle(document.documentElement).backgroundColor), low = [];
    let count = 0;
    document.querySelectorAll('.chart[data-figure]').forEach(chart => {
        const bg = chart._view.background(), probe = document.createElement('i');
        probe.style.color = bg || 'transparent';
        document.body.appendChild(probe);
        const back = bg && bg !== 'transparent' ? rgb(getComputedStyle(probe).color) : page;
        probe.remove();
        chart.querySelectorAll('svg text').forEach(t => {
            if (!t.textContent.trim() || getComputedStyle(t).fillOpacity === '0') return;
            count++;
            const r = ratio(rgb(getComputedStyle(t).fill), back);
            if (r < 4.5) low.push([chart.dataset.figure, t.textContent, getComputedStyle(t).fill, r.toFixed(2)]);
        });
    });
    return {count, low};
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_chart_text_reaches_4_5_to_1(browser, site, scheme):
    page = Page(browser, (site / "index.html").as_uri(), color_scheme=scheme)
    result = page.page.evaluate(CONTRAST)
    assert result["count"] > 100 and result["low"] == [], result["low"][:20]
    sliders = page.page.locator(".vega-bind input[type=range]")
    for i in range(sliders.count()):  # text redrawn by a control is kept readable too
        sliders.nth(i).focus()
        page.page.keyboard.press("ArrowLeft")
    page.page.wait_for_timeout(300)
    assert page.page.evaluate(CONTRAST)["low"] == []
    page.close()


def test_sparsity_sliders_show_the_sparsity_they_select(browser, site):
    page = Page(browser, (site / "index.html").as_uri())
    sliders = page.page.locator(".vega-bind input[name=s_index], .vega-bind input[name=d_index]")
    assert sliders.count() >= 3
    for i in range(sliders.count()):
        slider = sliders.nth(i)
        value = slider.locator("xpath=following-sibling::span[1]")
        before = value.inner_text()
        slider.focus()
        page.page.keyboard.press("ArrowLeft")
        after = value.inner_text()
        # "S = 0.9" for sparsity sliders, "1 − S = 0.5" for Lab 3.1's density slider
        assert "S = " in before and "S = " in after and before != after
        assert slider.get_attribute("aria-valuetext") == after
    page.close()


def test_a_tap_on_a_citation_shows_its_preview_before_following_it(browser, site):
    page = Page(browser, (site / "index.html").as_uri())
    tap = """a => a.dispatchEvent(new PointerEvent('click', {pointerType: 'touch', bubbles: true,
                                                          cancelable: true}))"""
    link = page.page.locator(".cite > a").nth(2)
    tip = page.page.locator(".cite-tip").nth(2)
    page.page.evaluate("document.activeElement.blur()")
    link.evaluate(tap)
    assert tip.is_visible() and page.page.evaluate("location.hash") == ""
    link.evaluate(tap)  # a second tap follows the link to the reference
    assert page.page.evaluate("location.hash").startswith("#ref-")
    page.close()


TAP = """a => a.dispatchEvent(new PointerEvent('click', {pointerType: 'touch', bubbles: true,
                                                    cancelable: true}))"""


@pytest.mark.parametrize("name", ["index.html", "superposition-offline.html"])
def test_hovering_a_figure_reference_previews_its_caption_and_image(browser, site, name):
    """From file://, in both editions: the preview shows the figure's number, title and caption
    and its static image, taken from the figure itself (a file beside the page, or inlined)."""
    page = Page(browser, (site / name).as_uri())
    link = page.page.locator(".preview.xref > a").first
    tip = page.page.locator(".preview.xref > .xref-tip").first
    assert not tip.is_visible()
    link.hover()
    number = link.inner_text()
    assert tip.is_visible() and tip.inner_text().startswith(number + ". ")
    page.page.wait_for_function("""t => { const i = t.querySelector('.thumb img');
        return i && i.complete && i.naturalWidth > 0; }""", arg=tip.element_handle(), timeout=5000)
    src = tip.locator(".thumb img").get_attribute("src")
    assert src.startswith("data:" if "offline" in name else "file:")
    box = tip.bounding_box()
    assert box["y"] >= 0 and box["x"] >= 0 and box["x"] + box["width"] <= 1280
    assert page.console == []
    page.close()


def test_a_fact_has_an_anchor_and_a_preview_of_where_it_comes_from(browser, site):
    page = Page(browser, (site / "index.html").as_uri())
    facts = page.page.locator("a.fact")
    ids = page.page.eval_on_selector_all("a.fact", "as => as.map(a => a.id)")
    assert len(ids) == len(set(ids)) > 100 and all(i.startswith("fact-") for i in ids)
    fact = page.page.locator("#fact-superposition-panel-relu_sparse_represented")
    tip = page.page.locator("#tip-fact-superposition-panel-relu_sparse_represented")
    assert not tip.is_visible()
    fact.hover()
    text = tip.inner_text()
    assert tip.is_visible() and text.startswith("Features the lowest-loss ReLU model represents")
    assert "Models: superposition (data/models/superposition.json)" in text
    assert "Data: figures/superposition-panel/norms.csv" in text
    fact.click()  # a reader cites the number by its address
    assert page.page.evaluate("location.hash") == "#fact-superposition-panel-relu_sparse_represented"
    page.close()


def note_geometry(page):
    return page.evaluate("""() => {
        const ref = document.querySelector('.note > sup a'), note = document.querySelector('.note > .sidenote');
        const p = ref.closest('p'), r = ref.getBoundingClientRect(), n = note.getBoundingClientRect();
        const col = p.getBoundingClientRect();
        return {ref: [r.left, r.top, r.bottom], note: [n.left, n.top, n.right, n.width],
                col: [col.left, col.right, col.height], position: getComputedStyle(note).position,
                visible: getComputedStyle(note).display !== 'none' && n.width > 0};
    }""")


def test_on_a_wide_screen_a_footnote_sits_in_the_margin_beside_its_reference(browser, site):
    page = Page(browser, (site / "index.html").as_uri())
    g = note_geometry(page.page)
    assert g["visible"] and g["note"][0] > g["col"][1] and g["note"][2] <= 1280, g
    assert abs(g["note"][1] - g["ref"][1]) < 30, g  # level with the line that cites it
    assert page.page.locator(".footnote").count() == 0  # on the page once
    page.close()


def test_on_a_phone_a_tap_opens_the_footnote_in_place(browser, site):
    page = browser.new_page()
    page.set_viewport_size(PHONE)
    page.goto((site / "index.html").as_uri())
    draw_every_chart(page)
    before = note_geometry(page)
    assert not before["visible"]
    page.evaluate("document.activeElement.blur()")
    page.locator(".note > sup a").first.evaluate(TAP)
    after = note_geometry(page)
    assert after["visible"] and after["position"] == "static", after
    # in the column, under its line, and the paragraph opened up to make room for it
    assert after["col"][0] <= after["note"][0] and after["note"][2] <= after["col"][1], after
    assert after["note"][1] >= after["ref"][2] - 1 and after["col"][2] > before["col"][2] + 40
    assert page.evaluate("location.hash") == ""
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.close()


def test_sections_are_numbered_and_equations_referenced(browser, site):
    page = Page(browser, (site / "index.html").as_uri())
    heading = page.page.locator('h3[id="31-neurons-in-a-privileged-basis"]')
    assert heading.inner_text().startswith("3.1 Neurons in a privileged basis")
    link = heading.locator(".headerlink")
    assert link.is_visible() and float(link.evaluate("a => getComputedStyle(a).opacity")) > 0.5
    assert link.get_attribute("href") == "#31-neurons-in-a-privileged-basis"
    ref = page.page.locator('a.xref[href="#eq-model"]').first
    assert ref.inner_text() == "Eq.\u00a0(1)"
    ref.click()
    eq = page.page.locator("#eq-model")
    assert eq.locator(".eq-num").inner_text() == "(1)" and eq.locator("math").count() == 1
    assert page.page.evaluate("location.hash") == "#eq-model"
    page.close()


def test_charts_draw_only_near_the_screen_and_print_undrawn(browser, site):
    """At load the essay draws no chart far below the first screen and loads neither the Vega
    runtime nor their specs; scrolling to a chart draws it, from file:// alone; printing shows
    every figure, drawn or not, as its static image."""
    page = browser.new_page()
    page.set_viewport_size(PHONE)
    requests, console = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
    page.goto((site / "index.html").as_uri())
    page.wait_for_function(READY)
    far = page.eval_on_selector_all(".chart[data-figure]", f"""els => els.filter(e =>
        e.closest('.figure').getBoundingClientRect().top > 3 * innerHeight).map(e => [e.dataset.figure,
        e.dataset.rendered || null, e.querySelectorAll({MARKS!r}).length])""")
    assert len(far) >= 6 and all(state is None and marks == 0 for _, state, marks in far), far
    assert not any(u.endswith("vega-bundle.js") or f"/{fid}/spec.js" in u for u in requests
                   for fid, _, _ in far), requests
    last = far[-1][0]
    page.locator(f'.chart[data-figure="{last}"]').evaluate("e => e.closest('.figure').scrollIntoView()")
    page.wait_for_function(f"""document.querySelector('.chart[data-figure="{last}"]').dataset.rendered
                               === 'true'""", timeout=30000)
    marks = page.eval_on_selector(f'.chart[data-figure="{last}"]', f"e => e.querySelectorAll({MARKS!r}).length")
    assert marks > 10 and console == [] and all(u.startswith(("file:", "data:")) for u in requests)
    page.emulate_media(media="print")
    shown = page.eval_on_selector_all(".figure", """fs => fs.map(f => [getComputedStyle(f.querySelector('.static')).display,
        getComputedStyle(f.querySelector('.chart')).display])""")
    assert shown and all(s == ["block", "none"] for s in shown), shown
    pdf = page.pdf()
    page.evaluate("document.querySelectorAll('.figure img.static').forEach(i => i.remove())")
    bare = page.pdf()  # the figures are in the PDF: without them it is much smaller
    assert len(pdf) - len(bare) > 12 * 10_000, (len(pdf), len(bare))
    page.close()


def view_table_data(site, fid):
    """figures/<id>/table.js, the data table's source: a script that registers one JSON value."""
    text = (site / "figures" / fid / "table.js").read_text()
    return json.loads(text.split("] = ", 1)[1].rstrip(";\n"))


def a_sliders_view(site):
    """The first figure whose data table follows a slider by a column, the slider, and a value
    other than its default: where the test says the view is."""
    manifest = json.loads((site / "figures" / "manifest.json").read_text())
    for fig in sorted(manifest["figures"], key=lambda f: f["number"]):
        data = view_table_data(site, fig["id"])
        for t in data["tables"]:
            for f in t["filters"]:
                param = data["params"][f["param"]]
                if param["bind"]["input"] == "range" and "column" in f:
                    bind = param["bind"]
                    value = bind["min"] if param["value"] != bind["min"] else bind["max"]
                    return fig, data, t, f["param"], value
    pytest.fail("no figure's table follows a slider")


def expected_rows(table, data, values):
    index = {c: i for i, c in enumerate(table["columns"])}
    return [row for i, row in enumerate(table["rows"]) if all(
        (f["keys"][i] if "keys" in f else row[index[f["column"]]]) == values[f["param"]]
        for f in table["filters"])]


@pytest.mark.parametrize("where", ["index.html", "figure page", "superposition-offline.html"])
def test_a_view_is_restored_from_the_address_followed_by_its_table_and_cited(browser, site, where):
    """Opened at #fig-<id>?<param>=<value> from file://: the chart draws in that state although
    it draws lazily, the slider shows it, and the data table (built when opened) holds that
    view's rows; moving the slider rewrites the address in place and the table follows; "Cite
    this view" gives the figure version's address with the state."""
    fig, data, table, param, value = a_sliders_view(site)
    fid = fig["id"]
    path = f"figures/{fid}/index.html" if where == "figure page" else where
    values = {n: p["value"] for n, p in data["params"].items()}
    values[param] = value
    page = Page(browser, (site / path).as_uri() + f"#fig-{fid}?{param}={value}", draw=False)
    p = page.page
    chart = p.locator(f'.chart[data-figure="{fid}"]')
    p.wait_for_function("e => e.dataset.rendered === 'true'", arg=chart.element_handle(), timeout=30000)
    assert chart.locator(f".vega-bind input[name={param}]").input_value() == str(value)
    assert chart.evaluate(f"e => e._view.signal({param!r})") == value
    box = p.locator(f'.figure-tools[data-tools="{fid}"]')
    # Nothing of any table is in the page until its reader opens it.
    assert p.locator(".figure-tools table").count() == 0
    history = p.evaluate("history.length")

    column = next(f["column"] for f in table["filters"] if f["param"] == param)
    cell = f"tbody tr td:nth-child({table['columns'].index(column) + 1})"

    def shown():  # the caption, the number of rows and the slider's column of the table
        p.wait_for_function("b => b.querySelector('table')", arg=box.element_handle(), timeout=10000)
        t = box.locator("table").nth(data["tables"].index(table))
        return t.locator("caption").inner_text(), t.locator("tbody tr").count(), \
            t.locator(cell).all_inner_texts()

    box.locator("summary").click()
    rows = expected_rows(table, data, values)
    caption, count, cells = shown()
    assert 0 < len(rows) < len(table["rows"]) and count == min(len(rows), 100)
    assert f"{len(rows)} of {len(table['rows'])} rows" in caption
    assert set(cells) == {str(value)}
    assert p.locator(f'.figure-tools[data-tools="{fid}"] th[scope=col]').count() >= len(table["columns"])
    # The reader moves the slider one step: the address follows, without a new history entry.
    slider = chart.locator(f".vega-bind input[name={param}]")
    slider.focus()
    p.keyboard.press("ArrowRight" if value == data["params"][param]["bind"]["min"] else "ArrowLeft")
    moved = float(slider.input_value())
    values[param] = int(moved) if moved.is_integer() else moved
    p.wait_for_function(f"location.hash.includes('{param}={values[param]}')", timeout=5000)
    assert p.evaluate("location.hash") == f"#fig-{fid}?" + "&".join(f"{k}={v}" for k, v in values.items())
    assert p.evaluate("history.length") == history
    rows = expected_rows(table, data, values)
    p.wait_for_function("([b, c]) => !b.querySelector('caption').textContent.includes(c)",
                        arg=[box.element_handle(), caption], timeout=5000)
    caption, count, cells = shown()
    assert count == min(len(rows), 100) and set(cells) == {str(values[param])}
    box.locator("button").click()
    cite = box.locator("input[type=text]")
    cite.wait_for(state="visible", timeout=5000)
    assert cite.input_value() == fig["permalink"] + p.evaluate("location.hash")
    assert page.console == []
    assert [u for u in page.requests if not u.startswith(("file:", "data:"))] == []
    # axe on the open table and the citation (last: axe reads the stylesheets, which from
    # file:// the console reports)
    from axe_playwright_python.sync_playwright import Axe
    results = Axe().run(p, context=f'.figure-tools[data-tools="{fid}"]')
    assert results.violations_count == 0, results.generate_report()[:3000]
    page.close()
