"""Markdown essay -> HTML body, with the project's own syntax, every use checked with file:line:

  $...$, $$...$$        TeX math, rendered to MathML at build time
  [@key], [@a; @b]       numbered citations with a hover/focus preview, from references.bib
  ::: figure ID          places a figure (alone on its line); numbered in order of placement
  @fig:ID                a cross-reference, rendered "Figure N"
  {{ ID.fact }}          a number computed from the trained models, filled in at build time
  [^note]                footnotes (python-markdown), shown as sidenotes on wide screens

and nothing else: raw HTML, event-handler or style attributes and javascript:/vbscript:/data:
addresses are refused with file:line unless content/meta.toml trusts the essay
(allow_raw_html = true), since the essay is content, not code.
"""
import html
import re
from dataclasses import dataclass, field

import markdown
from latex2mathml.converter import convert as latex_to_mathml
from markdown.inlinepatterns import HTML_RE, HtmlInlineProcessor
from markdown.preprocessors import HtmlBlockPreprocessor, Preprocessor
from markdown.treeprocessors import Treeprocessor
from markupsafe import escape

from errors import BuildError

DIRECTIVE = re.compile(r"^:::(.*)$")
FIGURE = re.compile(r"^::: figure ([a-z0-9][a-z0-9-]*)\s*$")
CITE = re.compile(r"\[((?:@[\w:-]+\s*;?\s*)+)\]")
CITE_KEY = re.compile(r"@([\w:-]+)")
XREF = re.compile(r"@fig:([a-z0-9][a-z0-9-]*)")
FACT = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")
DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$")
INLINE_MATH = re.compile(r"(?<![\\$])\$([^$\n]+?)\$")
CODE_SPAN = re.compile(r"`[^`]*`")
UNSAFE_SCHEME = re.compile(r"^(javascript|vbscript|data):")
URL_ATTRIBUTES = ("href", "src")
UNSAFE_ATTRIBUTE = re.compile(r"(?i)\b(on\w+|style)\s*=")
TRUST = "or set allow_raw_html = true in content/meta.toml if you trust every line of the essay"


@dataclass
class Essay:
    html: str
    toc: list  # [{"id", "name", "level", "children"}]
    figure_order: list  # figure ids in order of placement
    citations: list  # bibliography keys in order of first citation
    words: int
    notes: list = field(default_factory=list)
    cited: dict = field(default_factory=dict)  # key -> how many times it is cited (backlinks)


def scan(path, text, figure_ids, bib, facts, allow_raw_html=False):
    """Check every directive, citation, cross-reference and fact, and (unless allowed) that the
    essay holds no raw HTML; return the figure order and citation order. `facts` maps figure
    id -> its fact names (figures.facts() before training)."""
    figures, cites, in_code, prose_lines = [], [], False, []
    for no, line in enumerate(text.splitlines(), 1):
        fail = lambda msg, fix: BuildError(path, msg, fix, no)
        if line.startswith("```"):
            in_code = not in_code
            # fenced_code copies a fence's attribute list ({ .py onclick=... }) into the page
            handler = UNSAFE_ATTRIBUTE.search(line)
            if handler and not allow_raw_html:
                raise fail(*_attribute(handler.group(1))[1:])
        prose_lines.append("" if in_code else CODE_SPAN.sub("", line))
        if in_code:
            continue
        if DIRECTIVE.match(line):
            m = FIGURE.match(line)
            if not m:
                raise fail(f"malformed directive {line.strip()!r}",
                           "write '::: figure ID' alone on its line")
            if m.group(1) not in figure_ids:
                raise fail(f"unknown figure id '{m.group(1)}'",
                           "use one of: " + ", ".join(sorted(figure_ids)))
            if m.group(1) in figures:
                raise fail(f"figure '{m.group(1)}' is placed twice", "place each figure once")
            figures.append(m.group(1))
        prose = CODE_SPAN.sub("", line)
        for m in CITE.finditer(prose):
            for key in CITE_KEY.findall(m.group(1)):
                if key not in bib:
                    raise fail(f"unknown citation key '{key}'",
                               "add it to content/references.bib or fix the key")
                if key not in cites:
                    cites.append(key)
        for fig in XREF.findall(CITE.sub("", prose)):
            if fig not in figure_ids:
                raise fail(f"unknown figure id '{fig}' in a cross-reference",
                           "use one of: " + ", ".join(sorted(figure_ids)))
        for name in FACT.findall(prose):
            fig, _, fact = name.partition(".")
            if fig not in figure_ids or not fact:
                raise fail(f"unknown fact '{name}'", "write {{ FIGURE-ID.fact }}")
            if fact not in facts.get(fig, {}):
                raise fail(f"figure '{fig}' has no fact '{fact}'",
                           "use one of: " + ", ".join(sorted(facts.get(fig, {}))))
        if prose.replace("$$", "").count("$") % 2:
            raise fail("unbalanced $ in math", "close the math with a matching $")
        # Convert the math now, facts standing in as 1, so --check catches bad TeX untrained.
        for pattern, display in ((DISPLAY_MATH, True), (INLINE_MATH, False)):
            for m in pattern.finditer(DISPLAY_MATH.sub("", prose) if not display else prose):
                _math(FACT.sub("1", m.group(1)), display, path, no)
    for fig in set(XREF.findall(text)) - set(figures):
        raise BuildError(path, f"figure '{fig}' is cross-referenced but never placed",
                         f"add '::: figure {fig}'", None)
    if not allow_raw_html:
        _refuse_untrusted(path, text, prose_lines, figures, cites, bib)
    return figures, cites


def _refuse_untrusted(path, text, prose_lines, figures, cites, bib):
    """Convert the essay once as render() does (our syntax stashed first, so `$a<b$` and code
    are never mistaken for HTML) and let python-markdown itself say what it would pass through
    raw; refuse the first such piece, by line."""
    found = []  # (needles to find its line by, message, fix)
    md = _markdown(_context(path, bib, figures, cites, lambda fid, number: "", lambda name: "1"))
    md.preprocessors.register(_RawBlocks(md, found), "html_block", 20)
    md.inlinePatterns.register(_RawInline(HTML_RE, md, found), "html", 90)
    md.treeprocessors.register(_UnsafeAttributes(md, found), "unsafe_attributes", -1)
    md.convert(text)
    if found:
        def line(needles):
            return min((no for no, prose in enumerate(prose_lines, 1)
                        for n in needles if n and n in prose), default=None)
        needles, message, fix = min(found, key=lambda f: line(f[0]) or len(prose_lines) + 1)
        raise BuildError(path, message, fix, line(needles))


def _raw_html(fragment):
    first = fragment.strip().splitlines()[0] if fragment.strip() else fragment
    shown = first if len(first) <= 60 else first[:57] + "..."
    return ([first], f"raw HTML {shown!r} is not allowed in the essay",
            "write it in markdown (a literal < as &lt; or inside `code`), " + TRUST)


def _attribute(name):
    return ([f"{name}="], f"attribute '{name}' is not allowed in the essay",
            "remove it (event handlers and inline styles are not markdown), " + TRUST)


class _RawBlocks(HtmlBlockPreprocessor):
    """Markdown's own block-HTML pass; whatever it stashes came from the essay as raw HTML."""

    def __init__(self, md, found):
        super().__init__(md)
        self.found = found

    def run(self, lines):
        before = len(self.md.htmlStash.rawHtmlBlocks)
        out = super().run(lines)
        self.found += [_raw_html(str(b)) for b in self.md.htmlStash.rawHtmlBlocks[before:]]
        return out


class _RawInline(HtmlInlineProcessor):
    """Markdown's own inline-HTML pattern (tags and comments), recording what it matches."""

    def __init__(self, pattern, md, found):
        super().__init__(pattern, md)
        self.found = found

    def handleMatch(self, m, data):
        self.found.append(_raw_html(m.group(1)))
        return super().handleMatch(m, data)


class _UnsafeAttributes(Treeprocessor):
    """What markdown itself can put into a tag that runs code or escapes the stylesheet: an
    attribute list ({: onclick=...}) or a link or image address with a script or data scheme."""

    def __init__(self, md, found):
        super().__init__(md)
        self.found = found

    def run(self, root):
        for el in root.iter():
            for name, value in el.attrib.items():
                if UNSAFE_ATTRIBUTE.match(name + "="):
                    self.found.append(_attribute(name))
                elif name.lower() in URL_ATTRIBUTES:
                    # As a browser reads it: entities decoded, control characters and spaces gone.
                    url = re.sub(r"[\x00-\x20]", "", html.unescape(value)).lower()
                    scheme = UNSAFE_SCHEME.match(url)
                    if scheme:
                        self.found.append(([value, html.unescape(value)],
                                           f"address {value[:60]!r} uses the {scheme.group(1)}: "
                                           "scheme", "link to an http(s) address or a page of "
                                           "the site, " + TRUST))


def _math(tex, display, path, no):
    try:
        return latex_to_mathml(tex.strip(), display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises many types for malformed input
        raise BuildError(path, f"cannot render math ${tex}$ ({type(e).__name__})",
                         "fix the TeX (latex2mathml does not know \\arg)", no) from None


class _Directives(Preprocessor):
    """Replace our syntax with stashed HTML, line by line, so errors keep their line numbers."""

    def __init__(self, md, ctx):
        super().__init__(md)
        self.ctx = ctx

    def run(self, lines):
        c, stash = self.ctx, self.md.htmlStash.store
        out, in_code = [], False
        for no, line in enumerate(lines, 1):
            if line.startswith("```"):
                in_code = not in_code
            if in_code:
                out.append(line)
                continue
            m = FIGURE.match(line)
            if m:
                out += ["", stash(c["figure_html"](m.group(1), c["numbers"][m.group(1)])), ""]
                continue
            spans = {}

            def keep(html):
                token = f"\x02{len(spans)}\x03"
                spans[token] = stash(html)
                return token

            line = CODE_SPAN.sub(lambda m: keep(str(escape(m.group(0)[1:-1])).join(
                ("<code>", "</code>"))), line)
            # Facts inside math go into the TeX itself; elsewhere they are escaped HTML.
            tex = lambda m: FACT.sub(lambda f: str(c["fact"](f.group(1))), m.group(1))
            line = DISPLAY_MATH.sub(lambda m: keep(_math(tex(m), True, c["path"], no)), line)
            line = INLINE_MATH.sub(lambda m: keep(_math(tex(m), False, c["path"], no)), line)
            line = CITE.sub(lambda m: keep(self._cite(CITE_KEY.findall(m.group(1)))), line)
            line = XREF.sub(lambda m: keep(
                f'<a class="xref" href="#fig-{m.group(1)}">Figure {c["numbers"][m.group(1)]}</a>'),
                line)
            line = FACT.sub(lambda m: keep(str(escape(c["fact"](m.group(1))))), line)
            for token, html in spans.items():
                line = line.replace(token, html)
            out.append(line)
        return out

    def _cite(self, keys):
        c = self.ctx
        parts = []
        for key in keys:
            n, entry = c["cite_numbers"][key], c["bib"][key]
            # Each use of a key gets its own ids: the preview's, and the one references link back to.
            k = c["cited"][key] = c["cited"].get(key, 0) + 1
            uid = f"{escape(key)}-{k}"
            parts.append(f'<span class="cite"><a href="#ref-{escape(key)}" id="cite-{uid}" '
                         f'aria-describedby="tip-{uid}">{n}</a>'
                         f'<span class="cite-tip" role="tooltip" id="tip-{uid}">'
                         f'{escape(entry.text())}</span></span>')
        return "<sup class=\"cites\">[" + ", ".join(parts) + "]</sup>"


class _ExternalLinks(Treeprocessor):
    """Links that leave the site open without handing it a window.opener."""

    def run(self, root):
        for a in root.iter("a"):
            if a.get("href", "").startswith(("http://", "https://")):
                a.set("rel", "noopener")


def render(path, text, figure_ids, bib, facts, figure_html, allow_raw_html=False):
    """The essay's HTML body; figure_html(id, number) gives a placed figure's markup."""
    figures, cites = scan(path, text, figure_ids, bib, facts, allow_raw_html)

    def fact(name):
        fig, _, key = name.partition(".")
        return facts[fig][key]

    ctx = _context(path, bib, figures, cites, figure_html, fact)
    md = _markdown(ctx)
    body = md.convert(text)
    words = len(re.sub(r"<[^>]+>", " ", body).split())
    return Essay(body, md.toc_tokens, figures, cites, words, cited=ctx["cited"])


def _context(path, bib, figures, cites, figure_html, fact):
    return {"path": path, "bib": bib, "numbers": {fig: i + 1 for i, fig in enumerate(figures)},
            "figure_html": figure_html, "cite_numbers": {k: i + 1 for i, k in enumerate(cites)},
            "fact": fact, "cited": {}}


def _markdown(ctx):
    md = markdown.Markdown(extensions=["toc", "footnotes", "tables", "attr_list", "smarty",
                                       "fenced_code"],
                           extension_configs={"toc": {"toc_depth": "2-3", "permalink": "#",
                                                      "permalink_title": "Link to this section"},
                                              "footnotes": {"BACKLINK_TITLE": "Back to text"}})
    md.preprocessors.register(_Directives(md, ctx), "superposition_directives", 25)  # after
    # normalize_whitespace (30), which strips the placeholder markers the stash relies on
    md.treeprocessors.register(_ExternalLinks(md), "external_links", 0)
    return md
