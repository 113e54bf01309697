"""The render stage: essay syntax, bibliography and templates, each bad input a one-line error
naming the file and line."""
from pathlib import Path

import pytest

from errors import BuildError
from precompute import figures
from render import bibliography, essay, pages

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


def test_essay_features_render():
    doc = render("## Part\n\nText [@elhage2022toy; @olah2020zoom] and @fig:concentration, "
                 "$E[(u \\cdot v)^2] = 1/m$ and {{ concentration.m5 }}.[^n]\n\n"
                 "$$h = W x$$\n\n::: figure concentration\n\n[^n]: A note.\n",
                 facts={**{i: {} for i in IDS}, "concentration": {"m5": "0.199"}})
    html = doc.html
    assert doc.figure_order == ["concentration"] and doc.citations == ["elhage2022toy", "olah2020zoom"]
    assert 'href="#ref-elhage2022toy"' in html and 'role="tooltip"' in html
    assert '<a class="xref" href="#fig-concentration">Figure 1</a>' in html
    assert "<math" in html and 'display="block"' in html and "0.199" in html
    assert 'class="footnote"' in html and doc.toc[0]["name"] == "Part"


def test_facts_inside_math_are_substituted_into_the_tex():
    html = render("With $n = {{ concentration.m5 }}$ features.\n",
                  facts={**{i: {} for i in IDS}, "concentration": {"m5": "100"}}).html
    assert "<mn>100</mn>" in html and "concentration" not in html


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
