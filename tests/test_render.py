"""The render stage: essay syntax, bibliography and templates, each bad input a one-line error
naming the file and line."""
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from errors import BuildError
from precompute import figures
from render import bibliography, essay, figure_export, pages

ROOT = Path(__file__).resolve().parent.parent
BIB = bibliography.load(ROOT / "content" / "references.bib")
IDS = set(figures.ids())


def render(text, facts=None):
    facts = facts or {i: {} for i in IDS}
    return essay.render(Path("content/essay.md"), text, IDS, BIB, facts,
                        lambda fid, n: f'<figure id="fig-{fid}">Figure {n}</figure>')


@pytest.mark.parametrize("text, line, message", [
    ("fine\n\n::: figur concentration\n", 3, "malformed directive"),
    ("::: figure no-such-figure\n", 1, "unknown figure id 'no-such-figure'"),
    ("a\nb [@nobody2099] c\n", 2, "unknown citation key 'nobody2099'"),
    ("see @fig:missing\n", 1, "unknown figure id 'missing'"),
    ("x\ny\n$a + b\n", 3, "unbalanced $"),
    ("{{ concentration.nope }}\n", 1, "has no fact 'nope'"),
    ("{{ nofigure }}\n", 1, "unknown fact"),
    ("::: figure concentration\n::: figure concentration\n", 2, "placed twice"),
    ("$$a$$ {#eq:a}\n\nsee @eq:b\n", 3, "unknown equation label 'b'"),
    ("$$a$$ {#eq:a}\n\n$$b$$ {#eq:a}\n", 3, "equation label 'a' is used twice"),
    ("x $a$ {#eq:a}\n", 1, "misplaced equation label '{#eq:a}'"),
    ("## A\n\n### 2.1 B\n", 3, "heading '2.1 B' is numbered 2.1 by hand but is section 1.1"),
    ("a\n\n" + "[" * 33 + "\n", 3, "more than 32 '[', '](' or '<' open at once"),
    ("a\n\nb\n" + "[a](" * 33 + "\n", 4, "more than 32 '[', '](' or '<' open at once"),
    ("a\n\n" + "<b " * 33 + "\n", 3, "more than 32 '[', '](' or '<' open at once"),
    ("a\n\n" + ("x" * 10000 + "\n") * 2, 4, "a paragraph longer than 20,000 characters"),
    ("- a\n\n" * 5001, 10001, "more than 10,000 lines"),
])
def test_bad_essay_input_names_file_and_line(text, line, message):
    with pytest.raises(BuildError) as e:
        render(text)
    assert e.value.line == line and message in str(e.value)
    assert str(e.value).startswith(f"content/essay.md:{line}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("text, line, message", [
    ("ok\n\n<script>alert(1)</script>\n", 3, "raw HTML '<script>alert(1)</script>'"),
    ("a <img src=x onerror=alert(1)> b\n", 1, "raw HTML '<img src=x onerror=alert(1)>'"),
    ("a <img\nsrc=x onerror=alert(1)> b\n", 1, "raw HTML '<img'"),  # a tag over two lines
    ("ok\n\n<iframe src='x'></iframe>\n", 3, "raw HTML"),
    ("ok\n\n<!-- a comment -->\n", 3, "raw HTML '<!-- a comment -->'"),
    ("ok `<b>` then <b>bold</b>\n", 1, "raw HTML '<b>'"),
    ("x[^n]\n\n[^n]: see <b>this</b>\n", 3, "raw HTML '<b>'"),
    ("| a | b |\n|---|---|\n| <i>x</i> | y |\n", 3, "raw HTML '<i>'"),
    ("[x](javascript:alert(1))\n", 1, "uses the javascript: scheme"),
    ("[x]( JaVaScRiPt:alert(1))\n", 1, "uses the javascript: scheme"),
    ("[x](javascript&#58;alert(1))\n", 1, "uses the javascript: scheme"),
    ("[x][r]\n\n[r]: vbscript:msgbox\n", 3, "uses the vbscript: scheme"),
    ("![x](data:image/svg+xml;base64,PHN2Zz4=)\n", 1, "uses the data: scheme"),
    ("para\n{: onclick=\"alert(1)\" }\n", 2, "attribute 'onclick'"),
    ("para\n{: style=\"color: red\" }\n", 2, "attribute 'style'"),
    ("```{ .py onmouseover=\"alert(1)\" }\nx\n```\n", 1, "attribute 'onmouseover'"),
])
def test_raw_html_and_script_are_refused_by_line(text, line, message):
    with pytest.raises(BuildError) as e:
        render(text)
    assert str(e.value).startswith(f"content/essay.md:{line}: ") and message in str(e.value)
    assert "allow_raw_html = true in content/meta.toml" in str(e.value) and "\n" not in str(e.value)


def test_less_than_in_math_code_and_autolinks_is_not_html():
    doc = render("$a<b$ and $c>d$, `<b>` and <https://example.org/?a=1> and a &lt; b.\n\n"
                 "```\n<script>alert(1)</script>\n```\n\n    <i>indented code</i>\n")
    assert "<script>" not in doc.html and "&lt;script&gt;" in doc.html
    assert "<i>" not in doc.html and '<a href="https://example.org/?a=1"' in doc.html
    assert doc.html.count("<math") == 2


def test_allow_raw_html_passes_it_through():
    text = "a <img src=x onerror=alert(1)> b [x](javascript:alert(1))\n"
    doc = essay.render(Path("content/essay.md"), text, IDS, BIB, {i: {} for i in IDS},
                       lambda fid, n: "", allow_raw_html=True)
    assert "<img src=x onerror=alert(1)>" in doc.html and 'href="javascript:alert(1)"' in doc.html


def test_bad_math_names_the_line():
    with pytest.raises(BuildError, match=r"essay.md:2: cannot render math"):
        render("ok\n$\\frac{1}{$\n")


@pytest.mark.parametrize("tex, message", [
    ('\\text{<meta/http-equiv="refresh"content="0;url=https://evil.example/">}',
     "would write a <meta> element"),
    ("\\text{</mtext></math><img src=x onerror=alert(1)><math><mtext>}", "out of turn"),
    ("\\text{<!-- x -->}", "markup that is not MathML"),
    ("\\style{color:red}{x}", "attribute 'style'"),
    ("\\class{preview}{x}", "attribute 'class'"),
    ("\\href{javascript:alert(1)}{x}", "\\href address 'javascript:alert(1)' uses the javascript:"),
    ("\\href{ JaVaScRiPt:alert(1)}{x}", "uses the javascript: scheme"),
])
def test_math_writes_only_mathml(tex, message):
    """latex2mathml copies \\text{} and \\href{} unescaped: its output is parsed, and anything
    but MathML with safe addresses is refused by line, for inline and display math alike."""
    for text in (f"ok\n\nsee ${tex}$\n", f"ok\n\n$${tex}$$\n"):
        with pytest.raises(BuildError) as e:
            render(text)
        assert str(e.value).startswith("content/essay.md:3: math $") and message in str(e.value)
        assert "\n" not in str(e.value)


def test_math_text_is_escaped_and_safe_links_kept():
    html = render("$\\text{a & b} + \\href{https://example.org/}{x}$\n").html
    assert "<mtext>a&#x000A0;&amp;&#x000A0;b</mtext>" in html
    assert '<mrow href="https://example.org/">' in html


def test_essay_features_render():
    doc = render("## Part\n\nText [@elhage2022toy; @olah2020zoom] and @fig:concentration, "
                 "$E[(u \\cdot v)^2] = 1/m$ and {{ concentration.m5 }}.[^n]\n\n"
                 "$$h = W x$$\n\n::: figure concentration\n\n[^n]: A note.\n",
                 facts={**{i: {} for i in IDS}, "concentration": {"m5": "0.199"}})
    html = doc.html
    assert doc.figure_order == ["concentration"] and doc.citations == ["elhage2022toy", "olah2020zoom"]
    assert 'href="#ref-elhage2022toy"' in html and 'role="tooltip"' in html
    assert '<a href="#fig-concentration" class="xref" aria-describedby="tip-xref-concentration-1">' \
           'Figure 1</a>' in html
    assert "<math" in html and 'display="block"' in html and "0.199" in html
    assert 'id="sn-n"' in html and doc.toc[0]["name"] == "1 Part"


def about():
    """What the previews of a figure say, for a figure with a title, a caption and a fact note."""
    fig = SimpleNamespace(title="Random directions", caption="Mean of *dots*.", families=[])
    notes = {"m5": figures.note("mean (u·v)² at m = 5", "monte_carlo", "the row m = 5")}
    return {"concentration": essay.figure_about(fig, notes)}


def test_display_equations_are_numbered_and_referenced():
    html = render("See @eq:second and @eq:first.\n\n$$a = 1$$ {#eq:first}\n\n$$b$$\n\n"
                  "$$c = 2$$ {#eq:second}\n").html
    assert '<a class="xref" href="#eq-second">Eq.\u00a0(2)</a> and ' \
           '<a class="xref" href="#eq-first">Eq.\u00a0(1)</a>' in html
    assert html.count('class="equation"') == 2 and '<div class="equation" id="eq-first"><math' in html
    assert html.index('id="eq-first"') < html.index('<span class="eq-num">(1)</span>') \
        < html.index('id="eq-second"') < html.index('<span class="eq-num">(2)</span>')


def test_sections_are_numbered_once_and_keep_their_ids():
    doc = render("## Idea\n\n### Part\n\n## Lab\n\n### 2.1 First\n\n### Second\n\n"
                 "## 3. After\n\n## 1984 and all that\n")
    html = doc.html
    numbers = re.findall(r'<h([23]) id="([^"]+)"><span class="secnum">([\d.]+)</span> ([^<]+)<a '
                         r'class="headerlink" href="#\2"', html)
    assert numbers == [("2", "idea", "1", "Idea"), ("3", "part", "1.1", "Part"),
                       ("2", "lab", "2", "Lab"), ("3", "21-first", "2.1", "First"),
                       ("3", "second", "2.2", "Second"), ("2", "3-after", "3", "After"),
                       ("2", "1984-and-all-that", "4", "1984 and all that")]
    names = [doc.toc[0]["name"], doc.toc[1]["children"][0]["name"], doc.toc[1]["children"][1]["name"]]
    assert names == ["1 Idea", "2.1 First", "2.2 Second"]


def test_a_footnote_sits_beside_its_reference_with_its_facts_once():
    html = render("Text.[^a] More.\n\n[^a]: A note with {{ concentration.m5 }}.\n    Second "
                  "line.\n", facts={**{i: {} for i in IDS}, "concentration": {"m5": "0.199"}}).html
    para = re.search(r"<p>Text\.(.*?) More\.</p>", html, re.S).group(1)
    assert para.startswith('<span class="preview note"><sup id="fnref:a"><a aria-describedby="sn-a" '
                           'class="footnote-ref" href="#sn-a">1</a></sup><span class="preview-tip '
                           'sidenote" id="sn-a" role="note"><span class="sn-num">1</span>'
                           '<span class="sn-p">A note with')
    assert "Second line" in para and 'class="footnote"' not in html and "footnote-backref" not in html
    assert html.count('id="fact-concentration-m5"') == 1
    with pytest.raises(BuildError, match=r"footnote 'b' holds a <ul>; write a footnote as "
                                         r"paragraphs only"):
        render("Text.[^b]\n\n[^b]: A list:\n\n    - one\n    - two\n")


def test_facts_are_anchored_and_previewed_where_they_come_from():
    doc = essay.render(Path("content/essay.md"),
                       "{{ concentration.m5 }} and $m = {{ concentration.m5 }}$ and "
                       "{{ concentration.pairs }}.\n\n::: figure concentration\n", IDS, BIB,
                       {**{i: {} for i in IDS}, "concentration": {"m5": "0.199", "pairs": "4000"}},
                       lambda fid, n: f'<figure id="fig-{fid}">Figure {n}</figure>', about=about())
    tips = re.findall(r'<a href="#(fact-[\w-]+)" class="fact" id="\1"(?: aria-label="([^"]*)")? '
                      r'aria-describedby="tip-\1">(.*?)</a><span class="preview-tip fact-tip" '
                      r'role="tooltip" id="tip-\1">(.*?)</span></span>', doc.html)
    # math that quotes a fact is its link, named by its TeX (browsers name no link by MathML)
    assert [(i, name, label[:5]) for i, name, label, _ in tips] == [
        ("fact-concentration-m5", "", "0.199"), ("fact-concentration-m5-2", "m = 0.199", "<math"),
        ("fact-concentration-pairs", "", "4000")]
    tips = [(i, label, tip) for i, _, label, tip in tips]
    assert tips[0][2] == ("<strong>Mean (u·v)² at m = 5.</strong> From Figure 1, Random directions. "
                          "No trained model: computed directly. Data: "
                          "figures/concentration/monte_carlo.csv, the row m = 5.")
    assert tips[2][2] == "From Figure 1, Random directions. No trained model: computed directly."


def test_a_figure_reference_previews_the_figure():
    doc = essay.render(Path("content/essay.md"), "See @fig:concentration.\n\n"
                       "::: figure concentration\n", IDS, BIB, {i: {} for i in IDS},
                       lambda fid, n: f'<figure id="fig-{fid}">Figure {n}</figure>', about=about())
    assert ('<span class="preview-tip xref-tip" role="tooltip" id="tip-xref-concentration-1">'
            '<span class="thumb" data-thumb="fig-concentration"></span><strong>Figure 1. Random '
            'directions.</strong> <span class="tip-caption">Mean of dots.</span></span>') in doc.html


def test_facts_inside_math_are_substituted_into_the_tex():
    html = render("With $n = {{ concentration.m5 }}$ features.\n",
                  facts={**{i: {} for i in IDS}, "concentration": {"m5": "100"}}).html
    math = re.search(r"<math.*</math>", html).group(0)
    assert "<mn>100</mn>" in math and "concentration" not in math


def test_external_links_get_noopener():
    html = render("[paper](https://example.org/x) and [local](#ref)\n").html
    assert 'href="https://example.org/x" rel="noopener"' in html and 'href="#ref">' in html


def test_values_reaching_html_are_escaped():
    doc = render("{{ concentration.m5 }}\n", facts={**{i: {} for i in IDS},
                                                    "concentration": {"m5": "<script>x</script>"}})
    assert "<script>x" not in doc.html and "&lt;script&gt;" in doc.html


def test_bibliography_errors_name_file_and_line(tmp_path):
    bib = tmp_path / "refs.bib"
    bib.write_text("@article{ok,\n author={A B}, title={T}, year={2020}, url={u}\n}\n\n"
                   "@article{bad,\n author={A B}, title={T}, url={u}\n}\n")
    with pytest.raises(BuildError, match=r"refs.bib:5: entry 'bad' is missing 'year'"):
        bibliography.load(bib)
    bib.write_text("@article{broken\n title = {x}\n}\n")
    with pytest.raises(BuildError, match=r"refs.bib:1: malformed BibTeX entry"):
        bibliography.load(bib)
    with pytest.raises(BuildError, match="bibliography not found"):
        bibliography.load(tmp_path / "none.bib")


def test_template_errors_are_build_errors(tmp_path, monkeypatch):
    (tmp_path / "broken.html").write_text("line one\n{% if %}\n")
    (tmp_path / "undefined.html").write_text("{{ nothing.here }}\n")
    monkeypatch.setattr(pages, "TEMPLATES", tmp_path)
    env = pages.environment()
    with pytest.raises(BuildError, match=r"broken.html:2: template syntax error"):
        pages.render(env, "broken.html")
    with pytest.raises(BuildError, match=r"undefined.html: template error"):
        pages.render(env, "undefined.html")


def test_static_images_are_cached_and_a_bad_entry_is_drawn_again(tmp_path, monkeypatch, capsys):
    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "mark": "point",
            "data": {"values": [{"x": 1, "y": 2}]},
            "encoding": {"x": {"field": "x", "type": "quantitative"},
                         "y": {"field": "y", "type": "quantitative"}}}
    svg, png = figure_export.static_images("f", spec, "a" * 64, tmp_path)
    assert svg.startswith("<svg") and png.startswith(b"\x89PNG")
    (entry,) = tmp_path.glob("static-f-*.npz")
    draw, drawn = figure_export.vl_convert.vegalite_to_svg, []
    monkeypatch.setattr(figure_export.vl_convert, "vegalite_to_svg",
                        lambda s: drawn.append(1) or draw(s))
    assert figure_export.static_images("f", spec, "a" * 64, tmp_path) == (svg, png)
    assert not drawn and not capsys.readouterr().err, "a good entry is read, not drawn again"
    entry.write_bytes(entry.read_bytes()[:-40])  # truncated
    assert figure_export.static_images("f", spec, "a" * 64, tmp_path) == (svg, png)
    err = capsys.readouterr().err
    assert len(drawn) == 1 and "checksum" in err and err.count("\n") == 1


def test_a_byte_order_mark_is_dropped(tmp_path):
    """Some editors save a BOM first: read as text it would glue itself to the first block, and
    the heading would be a paragraph starting "# "."""
    from errors import read_utf8
    path = tmp_path / "essay.md"
    path.write_bytes("\ufeff# Title\n\nText.\n".encode())
    assert render(read_utf8(path, ("missing", "fix"))).html.startswith('<h1 id="title">')


def test_bibliography_tex_is_shown_as_text(tmp_path):
    """Accents and commands are TeX, not text: M\\"uller is shown as Müller, \\emph{x} as x; the
    address keeps its % and ~."""
    bib = tmp_path / "refs.bib"
    bib.write_text('@article{m,\n author = {M\\"uller, J{\\"o}rg and Erd{\\H o}s, Paul},\n'
                   ' title = {The \\emph{Real} {GPT} -- 50\\% of it},\n year = {2020},\n'
                   ' url = {https://example.org/a%20b~c}\n}\n')
    entry = bibliography.load(bib)["m"]
    assert entry.text() == "Müller & Erdős (2020). The Real GPT – 50% of it."
    assert 'href="https://example.org/a%20b~c"' in entry.html()


def test_every_code_form_is_code_not_syntax():
    """~~~ fences, indented blocks and ``double`` spans hold $ and @fig: as text, like ```
    fences; a list item's four-space paragraph is still prose, its math rendered."""
    doc = render("~~~\n$x @fig:nope\n~~~\n\nText.\n\n    $y$ @fig:nope {{ nofigure }}\n\n"
                 "Span ``a `$` @fig:nope`` here.\n\n- item\n\n    $z$ continued\n")
    assert "<pre><code>$x @fig:nope\n</code></pre>" in doc.html
    assert "<pre><code>$y$ @fig:nope {{ nofigure }}\n</code></pre>" in doc.html
    assert "<code>a `$` @fig:nope</code>" in doc.html and doc.html.count("<math") == 1


@pytest.mark.parametrize("text, message", [
    ("x $\\href{javascript:alert(1)}{x}$\n", "address 'javascript:alert(1)' uses the javascript:"),
    ("x $\\text{<meta/http-equiv=\"refresh\"content=\"0;url=https://e.example/\">}$\n",
     "it would write a <meta> element into the page"),
    ("[x](file:///etc/passwd)\n", "address 'file:///etc/passwd' uses the file: scheme"),
    ("[x]({{ concentration.m5 }})\n", "'{{ concentration.m5 }}' inside a link or image"),
    ("![{{ concentration.m5 }}](a.png)\n", "inside a link or image"),
    # a link in a link: the browser would end the outer one early (and Nu refuses the page)
    ("[see [@elhage2022toy] here](https://x.org)\n", "'[@elhage2022toy]' inside a link"),
    ("[as @fig:concentration shows](https://x.org)\n", "'@fig:concentration' inside a link"),
])
def test_markup_and_scripts_through_math_addresses_and_facts_are_refused(text, message):
    with pytest.raises(BuildError) as e:
        render(text, facts={**{i: {} for i in IDS}, "concentration": {"m5": "1"}})
    assert str(e.value).startswith("content/essay.md:1: ") and message in str(e.value)


# --- citing: DOI, BibTeX without an address, references, code links ---------------------------

META = {"title": "T", "subtitle": "S", "author": "A", "description": "D", "site_url": "",
        "repository_url": "", "doi": ""}
BUILD = {"version": "v1", "date": "2030-01-02", "year": "2030", "commit": "c" * 40}


def cff_valid(text, tmp_path):
    import subprocess
    import sys
    path = tmp_path / "CITATION.cff"
    path.write_text(text)
    proc = subprocess.run([str(Path(sys.executable).parent / "cffconvert"), "--validate", "-i",
                           str(path)], capture_output=True, text=True)
    return proc.returncode == 0


def test_a_doi_goes_into_every_citation_bibtex_tag_and_cff(tmp_path):
    from render import citation
    meta = {**META, "doi": "10.5281/zenodo.42", "site_url": "https://example.org/s"}
    for cite in (citation.article(meta, BUILD),
                 citation.figure(meta, BUILD, "f", "F", "a" * 64, "figures/f/v/aaaa/")):
        assert cite["text"].endswith(" https://doi.org/10.5281/zenodo.42")
        assert "  doi = {10.5281/zenodo.42}," in cite["bibtex"]
        assert ("citation_doi", "10.5281/zenodo.42") in cite["meta"]
    cff = citation.cff(meta, BUILD)
    assert 'doi: "10.5281/zenodo.42"' in cff and cff_valid(cff, tmp_path)
    without = citation.article(META, BUILD)
    assert "doi" not in without["bibtex"] + without["text"] and \
        not any(n == "citation_doi" for n, _ in without["meta"])


def test_bibtex_without_a_site_address_has_no_url_field():
    from render import citation
    for cite in (citation.article(META, BUILD),
                 citation.figure(META, BUILD, "f", "F", "a" * 64, "figures/f/v/aaaa/")):
        assert "url = " not in cite["bibtex"].replace("urldate = ", "")
        assert cite["bibtex"].endswith("}\n}") or cite["bibtex"].endswith("}}")
    with_url = citation.article({**META, "site_url": "https://example.org/s"}, BUILD)
    assert "  url = {https://example.org/s/}," in with_url["bibtex"]


def test_citation_cff_carries_version_url_and_date_and_validates(tmp_path):
    from render import citation
    cff = citation.cff({**META, "site_url": "https://example.org/s"}, BUILD)
    assert 'version: "v1"' in cff and 'date-released: "2030-01-02"' in cff and \
        'url: "https://example.org/s"' in cff and cff_valid(cff, tmp_path)


def test_each_cited_entry_gets_a_citation_reference_tag():
    from render import citation
    tags = citation.references([BIB["elhage2022toy"], BIB["wang2023ioi"]])
    assert [n for n, _ in tags] == ["citation_reference"] * 2
    toy, ioi = (dict(p.split("=", 1) for p in c.split("; ")) for _, c in tags)
    assert toy["citation_title"] == "Toy Models of Superposition"
    assert toy["citation_journal_title"] == "Transformer Circuits Thread"
    assert ioi["citation_conference_title"].startswith("International Conference")
    assert ioi["citation_public_url"] == "https://arxiv.org/abs/2211.00593"
    assert tags[1][1].count("citation_author=") == 5 and "others" not in tags[0][1]


def test_code_links_point_at_the_commit_on_the_repository_host():
    from render import citation
    meta = {**META, "repository_url": "https://github.com/o/r/"}
    assert citation.source(meta, BUILD, "precompute/figures/x.py")["url"] == \
        f"https://github.com/o/r/blob/{'c' * 40}/precompute/figures/x.py"
    assert citation.source(META, BUILD, "precompute/figures/x.py") == \
        {"path": "precompute/figures/x.py", "url": None}
    assert citation.source(meta, {**BUILD, "commit": ""}, "p.py")["url"] is None


def test_version_diff_names_changed_parameters_and_rows(tmp_path):
    import json
    from render import changes
    for sha, rows in (("a", [{"x": 1}, {"x": 2}]), ("b", [{"x": 2}, {"x": 3}, {"x": 4}])):
        (tmp_path / sha).mkdir()
        (tmp_path / sha / "data.json").write_text(json.dumps({"t": rows, "same": [{"y": 0}]}))
    old = {"sha256": "a" * 64, "path": "a/", "date": "2030-01-01", "params": {"n": 5, "k": 1}}
    new = {"sha256": "b" * 64, "path": "b/", "date": "2030-02-01", "params": {"n": 6, "k": 1}}
    change = changes.diff(tmp_path, old, new)
    assert change["params"] == [{"name": "n", "old": 5, "new": 6}]
    (table,) = change["tables"]
    assert (table["name"], table["added"], table["removed"]) == ("t", 2, 1)
    assert table["rows"] == [("removed", {"x": 1}), ("added", {"x": 3}), ("added", {"x": 4})]
    unrecorded = {k: v for k, v in old.items() if k != "params"}
    assert changes.diff(tmp_path, unrecorded, new)["params"] is None


def test_a_data_table_follows_the_controls_its_chart_filters_by():
    """A table follows a control only where every view drawing its data filters them by it; a
    control on a column only the chart's copy of the rows has picks rows by that copy's keys."""
    rows = [{"k": i % 3, "v": i * 0.5} for i in range(6)]
    chart_rows = [{**r, "label": str(r["k"])} for r in rows]
    melted = [{"k": r["k"], "what": w, "value": r["v"]} for r in rows for w in ("a", "b")]
    other = [{"k": 0, "w": 1.0}, {"k": 1, "w": 2.0}]
    slider = {"name": "pick", "value": 1, "bind": {"input": "range", "min": 0, "max": 2, "step": 1}}
    select = {"name": "lab", "value": "1", "bind": {"input": "select", "options": ["0", "1", "2"]}}
    spec = {"params": [slider, select], "datasets": {"d1": chart_rows, "d2": melted, "d3": other},
            "vconcat": [
                {"data": {"name": "d1"}, "transform": [{"filter": "(datum.label === lab)"}],
                 "layer": [{"mark": "point", "transform": [{"filter": "(datum.k === pick)"}]},
                           {"mark": "text", "transform": [{"filter": "(datum.k === pick) && datum.v > 0"}]}]},
                {"data": {"name": "d2"}, "mark": "rect", "transform": [{"filter": "!(datum.k === pick)"}]},
                {"data": {"name": "d3"}, "mark": "line"},
                {"data": {"name": "d3"}, "mark": "point", "transform": [{"filter": "(datum.k === pick)"}]}]}
    view = figure_export.view_tables(spec, {"t": rows, "wide": [{"k": 0, "w": 1.0}, {"k": 1, "w": 2.0}]})
    assert view["params"]["pick"]["value"] == 1 and view["params"]["lab"]["bind"]["options"] == ["0", "1", "2"]
    t, wide = view["tables"]
    # t's data are d1 (its rows with a label added) and d2 (t melted for the chart), and d2's
    # view filters under a negation, which picks no rows by pick: t follows nothing.
    assert t["filters"] == [] and t["rows"] == [[r["k"], r["v"]] for r in rows]
    # d3 is drawn once unfiltered: `wide` follows nothing either.
    assert wide["filters"] == []
    # Without d2, t follows pick on its own column and lab by d1's keys (a column t lacks).
    spec["vconcat"] = spec["vconcat"][:1]
    t, wide = figure_export.view_tables(spec, {"t": rows, "wide": other})["tables"]
    assert t["filters"] == [{"param": "pick", "column": "k"},
                            {"param": "lab", "keys": [r["label"] for r in chart_rows]}]
    assert wide["filters"] == []


@pytest.mark.parametrize("paragraph", [
    "{{" + " " * 19000,  # the lazy fact pattern was cubic here: 8,000 spaces took 7 minutes
    "`" * 19000,  # every shorter opening of one run of backticks was tried
    "{{" * 9000,
    ("[" * 32 + "]" * 32) * 280,  # nested brackets, each looked for to its close
    "\\[" * 9000 + "[a](b)" * 10,  # escaped brackets are text, not open
])
def test_the_scan_stays_linear_on_paragraphs_within_the_limits(paragraph):
    """Inputs under the length and open-bracket limits that were superlinear: each must finish
    (it did not, in minutes, before); an alarm turns a regression into a failure, not a hang."""
    import signal

    def hang(*_):
        raise TimeoutError("the scan is superlinear again")
    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        essay.scan(Path("content/essay.md"), "# T\n\n" + paragraph + "\n", IDS, BIB,
                   {i: {} for i in IDS})
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
