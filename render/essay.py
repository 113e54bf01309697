"""Markdown essay -> HTML body, with the project's own syntax, every use checked with file:line:

  $...$, $$...$$        TeX math, rendered to MathML at build time
  [@key], [@a; @b]       numbered citations with a hover/focus preview, from references.bib
  ::: figure ID          places a figure (alone on its line); numbered in order of placement
  @fig:ID                a cross-reference, rendered "Figure N", with a preview of the figure
  $$...$$ {#eq:LABEL}    a numbered display equation (alone on its line)
  @eq:LABEL              a reference to it, rendered "Eq. (N)"
  {{ ID.fact }}          a number computed from the trained models, filled in at build time, with
                         its own anchor (#fact-ID-fact) and a preview of where it comes from
  [^note]                footnotes (python-markdown), shown beside their reference: in the
                         margin on wide screens, opened in place on phones
  ## / ###               sections, numbered 1, 1.1, ... (a number written by hand must agree)

Previews (citations, cross-references, footnotes, facts) share one markup, _preview(), which
site.js and style.css show on hover, focus and a first tap.

and nothing else: raw HTML, event-handler or style attributes and addresses that are not
http(s), mailto or relative (errors.unsafe_address) are refused with file:line unless
content/meta.toml trusts the essay (allow_raw_html = true), since the essay is content, not
code. Math is MathML only, whatever the essay says; code (``` and ~~~ fences, indented blocks,
`spans`) holds no syntax of ours.
"""
import html
import re
import xml.etree.ElementTree as etree
from dataclasses import dataclass, field
from html.parser import HTMLParser

import markdown
from latex2mathml.converter import convert as latex_to_mathml
from markdown.extensions.fenced_code import FencedBlockPreprocessor
from markdown.inlinepatterns import HTML_RE, HtmlInlineProcessor
from markdown.preprocessors import HtmlBlockPreprocessor, Preprocessor
from markdown.treeprocessors import Treeprocessor
from markupsafe import escape

from errors import BuildError, unsafe_address

DIRECTIVE = re.compile(r"^:::(.*)$")
FIGURE = re.compile(r"^::: figure ([a-z0-9][a-z0-9-]*)\s*$")
CITE = re.compile(r"\[((?:@[\w:-]+\s*;?\s*)+)\]")
CITE_KEY = re.compile(r"@([\w:-]+)")
XREF = re.compile(r"@fig:([a-z0-9][a-z0-9-]*)")
EQUATION = re.compile(r"^\$\$(.+?)\$\$\s*\{#eq:([a-z0-9][a-z0-9-]*)\}\s*$")
EQ_LABEL = re.compile(r"\{#eq:([^}]*)\}")
EQ_REF = re.compile(r"@eq:([a-z0-9][a-z0-9-]*)")
HEADING = re.compile(r"^(#{2,3})\s+(.*?)\s*#*\s*$")
# "3.1 Neurons" or "3. Lab", not "1984 and after": a title may begin with a number
HAND_NUMBER = re.compile(r"^(\d+(?:\.\d+)+|\d+(?=\.\s))\.?\s+")
# no brace inside, and spaces stripped by the caller: "{{" and spaces never closed made the
# lazy \s*(...)\s* of before cubic (8,000 spaces took minutes)
FACT = re.compile(r"\{\{([^{}]*)\}\}")
DISPLAY_MATH = re.compile(r"\$\$(.+?)\$\$")
INLINE_MATH = re.compile(r"(?<![\\$])\$([^$\n]+?)\$")
MATH_OR_FACT = re.compile(f"{INLINE_MATH.pattern}|{FACT.pattern}")
# a code span, opened and closed by runs of as many backticks (``a `b` c``)
# (a run of at most 32: trying every shorter opening of a long run took quadratic time)
CODE_SPAN = re.compile(r"(?<![\\`])(`{1,32})(.+?)(?<!`)\1(?!`)")
# a list item or footnote: blocks indented by four continue it, and code needs four more
CONTAINER = re.compile(r"^( *)(?:[*+-]|\d+\.) +\S|^\[\^[^\]]+\]:")
# a markdown link or image (its text may hold [brackets]), or a reference definition: our
# syntax there would be a link in a link
LINK = re.compile(r"!?\[(?:[^][]|\[[^][]*\])*\]\([^)]*\)|^ {0,3}\[(?!\^)[^\]]+\]:.*")
# what we write as a link, found inside a LINK
LINKED = re.compile(f"{FACT.pattern}|{CITE.pattern}|{XREF.pattern}|{EQ_REF.pattern}")
URL_ATTRIBUTES = ("href", "src")
MATHML_NS = "http://www.w3.org/1998/Math/MathML"
# What latex2mathml writes for the TeX it knows: MathML presentation markup and nothing else.
MATHML_ELEMENTS = frozenset(
    "math mrow mi mn mo ms mtext mspace msub msup msubsup munder mover munderover mfrac msqrt "
    "mroot mtable mtr mtd mstyle menclose mpadded mphantom merror mmultiscripts mprescripts "
    "none".split())
MATHML_ATTRIBUTES = frozenset(
    "xmlns display mathvariant mathcolor mathbackground mathsize stretchy fence form accent "
    "accentunder separator lspace rspace largeop movablelimits symmetric minsize maxsize width "
    "height depth voffset linethickness displaystyle scriptlevel notation columnalign "
    "columnlines columnspacing rowalign rowlines rowspacing frame framespacing equalrows "
    "equalcolumns linebreak href".split())
# what _bounded counts: an escaped character (skipped), brackets, parentheses, tags
OPENERS = re.compile(r"\\.|\]\(|[][()>]|<[A-Za-z/!?]")
MAX_OPEN = 32
MAX_PARAGRAPH = 20_000  # the essay's longest is 2,814
MAX_LINES = 10_000  # it has 215
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
    figures, cites = [], []
    lines = _lines(text)
    code, fences = _code(lines)
    prose_lines = ["" if code[i] else CODE_SPAN.sub("", line) for i, line in enumerate(lines)]
    _bounded(path, prose_lines)
    for no, line in enumerate(lines, 1):
        fail = lambda msg, fix: BuildError(path, msg, fix, no)
        # fenced_code copies a fence's attribute list ({ .py onclick=... }) into the page
        handler = UNSAFE_ATTRIBUTE.search(line) if no in fences else None
        if handler and not allow_raw_html:
            raise fail(*_attribute(handler.group(1))[1:])
        if code[no - 1]:
            continue
        if DIRECTIVE.match(line):
            m = FIGURE.match(line)
            if not m:
                raise fail(f"malformed directive {line.strip()[:60]!r}",
                           "write '::: figure ID' alone on its line")
            if m.group(1) not in figure_ids:
                raise fail(f"unknown figure id '{m.group(1)}'",
                           "use one of: " + ", ".join(sorted(figure_ids)))
            if m.group(1) in figures:
                raise fail(f"figure '{m.group(1)}' is placed twice", "place each figure once")
            figures.append(m.group(1))
        prose = prose_lines[no - 1]
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
        for name in _fact_names(prose):
            fig, _, fact = name.partition(".")
            if fig not in figure_ids or not fact:
                raise fail(f"unknown fact '{name}'", "write {{ FIGURE-ID.fact }}")
            if fact not in facts.get(fig, {}):
                raise fail(f"figure '{fig}' has no fact '{fact}'",
                           "use one of: " + ", ".join(sorted(facts.get(fig, {}))))
        inside = next((LINKED.search(m.group()) for m in LINK.finditer(prose)
                       if LINKED.search(m.group())), None)
        if inside:
            raise fail(f"{inside.group(0)!r} inside a link or image",
                       "write it outside the [text](address): a fact, citation or "
                       "cross-reference is a link of its own, and a link cannot hold a link")
        if prose.replace("$$", "").count("$") % 2:
            raise fail("unbalanced $ in math", "close the math with a matching $")
        # Convert the math now, facts standing in as 1, so --check catches bad TeX untrained.
        for pattern, display in ((DISPLAY_MATH, True), (INLINE_MATH, False)):
            for m in pattern.finditer(DISPLAY_MATH.sub("", prose) if not display else prose):
                _math(FACT.sub("1", m.group(1)), display, path, no)
    for fig in set(XREF.findall("\n".join(prose_lines))) - set(figures):
        raise BuildError(path, f"figure '{fig}' is cross-referenced but never placed",
                         f"add '::: figure {fig}'", None)
    _equations(path, lines)
    _check_sections(path, text)
    if not allow_raw_html:
        _refuse_untrusted(path, text, prose_lines, figures, cites, bib)
    return figures, cites


def _bounded(path, prose_lines):
    """Python-markdown's time on one paragraph grows faster than its length: it copies the
    paragraph's text at every link, emphasis or code it finds, and it looks for the end of every
    open '[', '](' and '<tag' as far as the paragraph's end (20,000 '[' took minutes). Refuse a
    paragraph longer than MAX_PARAGRAPH characters or with more than MAX_OPEN of those open at
    once, at the line where it passes the limit, and an essay of more than MAX_LINES lines (each
    item of one long list cost time in proportion to the list's length)."""
    if len(prose_lines) > MAX_LINES:  # python-markdown's time also grows faster than a list's
        raise BuildError(path, f"more than {MAX_LINES:,} lines",
                         "a page this long is a mistake: shorten the essay", MAX_LINES + 1)
    brackets = parens = tags = length = 0  # parens counts only a link's '('
    stack = []  # every '(' still open: True where it opens a link's address
    for no, line in enumerate(prose_lines, 1):
        if not line.strip():
            brackets = parens = tags = length = 0
            stack = []
            continue
        length += len(line) + 1
        if length > MAX_PARAGRAPH:
            raise BuildError(path, f"a paragraph longer than {MAX_PARAGRAPH:,} characters",
                             "split it with a blank line", no)
        # math is set aside before python-markdown sees the line
        for token in OPENERS.findall(INLINE_MATH.sub("", DISPLAY_MATH.sub("", line))):
            if token in ("[", "]", "]("):
                brackets = brackets + 1 if token == "[" else max(brackets - 1, 0)
            if token in ("(", "]("):
                stack.append(token == "](")
                parens += stack[-1]
            elif token == ")" and stack:
                parens -= stack.pop()
            elif token == ">":
                tags = 0
            elif token[0] == "<":
                tags += 1
            if max(brackets, parens, tags) > MAX_OPEN:
                raise BuildError(path, f"more than {MAX_OPEN} '[', '](' or '<' open at once in "
                                 "one paragraph", "close them, or escape them as \\[ \\( \\<", no)


def _fact_names(text):
    return [name.strip() for name in FACT.findall(text)]


def _fill(text, fact):
    """`text` with each {{ fact }} replaced by its value."""
    return FACT.sub(lambda f: str(fact(f.group(1).strip())), text)


def _lines(text):
    """The essay's lines as python-markdown splits them (not str.splitlines, which also breaks
    at form feeds and U+2028), so the scan and the conversion agree on every line."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _code(lines):
    """Which lines python-markdown reads as code, where our syntax is never looked for: fenced
    blocks (``` or ~~~, found by fenced_code's own pattern, so an unclosed fence is prose as
    there) and indented blocks (a block that starts four spaces in, after a blank line or a
    heading; eight in a list item or footnote, whose four-space blocks continue it). Also the
    lines that open a fence."""
    text = "\n".join(lines)
    code, fences = [False] * len(lines), set()
    for m in FencedBlockPreprocessor.FENCED_BLOCK_RE.finditer(text):
        first, last = text.count("\n", 0, m.start()), text.count("\n", 0, m.end())
        code[first:last + 1] = [True] * (last + 1 - first)
        fences.add(first + 1)
    depth, starts, indented = 0, True, False  # list depth; a block may start here; in code
    for i, line in enumerate(lines):
        if code[i]:
            starts = indented = False
            continue
        if not line.strip():
            starts = True
            continue
        width = len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())
        if width >= 4 * (depth + 1) and (starts or indented):
            code[i] = indented = True
            continue
        item = CONTAINER.match(line.expandtabs(4))
        if item:
            depth = len(item.group(1) or "") // 4 + 1
        elif width == 0 and starts:
            depth = 0
        starts, indented = line.startswith("#"), False
    return code, fences


def _prose(lines):
    """(line number, line without code spans) for every line that is not code."""
    code, _ = _code(lines)
    for no, line in enumerate(lines, 1):
        if not code[no - 1]:
            yield no, CODE_SPAN.sub("", line)


def _equations(path, lines):
    """{label: number} of the labelled display equations, in order; every @eq: names one."""
    numbers, refs = {}, []
    for no, line in _prose(lines):
        m = EQUATION.match(line)
        if m:
            if m.group(2) in numbers:
                raise BuildError(path, f"equation label '{m.group(2)}' is used twice",
                                 "give each equation its own label", no)
            numbers[m.group(2)] = len(numbers) + 1
        elif EQ_LABEL.search(line):
            raise BuildError(path, f"misplaced equation label '{EQ_LABEL.search(line).group(0)}'",
                             "write it after a display equation, alone on its line: "
                             "$$...$$ {#eq:name}, the name in a-z, 0-9 and -", no)
        refs += [(no, label) for label in EQ_REF.findall(line)]
    for no, label in refs:
        if label not in numbers:
            raise BuildError(path, f"unknown equation label '{label}'",
                             "label a display equation with $$...$$ {#eq:" + label + "}"
                             + (" or use one of: " + ", ".join(numbers) if numbers else ""), no)
    return numbers


def _check_sections(path, text):
    """The ## and ### headings are numbered in order (1, 1.1, ...: _Sections writes the
    numbers); a heading that carries a number by hand ("### 3.1 Neurons") must carry its own."""
    h2, h3 = 0, 0
    for no, line in _prose(_lines(text)):
        m = HEADING.match(line)
        if not m:
            continue
        h2, h3 = (h2 + 1, 0) if len(m.group(1)) == 2 else (h2, h3 + 1)
        number = f"{h2}" if len(m.group(1)) == 2 else f"{h2}.{h3}"
        hand = HAND_NUMBER.match(m.group(2))
        if hand and hand.group(1) != number:
            raise BuildError(path, f"heading {m.group(2)!r} is numbered {hand.group(1)} by hand "
                             f"but is section {number}",
                             "drop the number (sections are numbered for you) or correct it", no)


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
        # compared without whitespace: python-markdown turns a tab into spaces before we see it
        squashed = [re.sub(r"\s", "", prose) for prose in prose_lines]

        def line(needles):
            return min((no for no, prose in enumerate(squashed, 1) for n in needles
                        if n.strip() and re.sub(r"\s", "", n) in prose), default=None)
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
                elif name.lower() in URL_ATTRIBUTES and unsafe_address(value):
                    self.found.append(([value, html.unescape(value)], unsafe_address(value),
                                       "link to an http(s) address or a page of the site, "
                                       + TRUST))


def _math(tex, display, path, no):
    try:
        mathml = latex_to_mathml(tex.strip(), display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises many types for malformed input
        raise BuildError(path, f"cannot render math ${tex}$ ({type(e).__name__})",
                         "fix the TeX (latex2mathml does not know \\arg)", no) from None
    parser = _MathML()
    try:
        parser.feed(mathml)
        parser.close()
        if parser.stack or parser.roots != 1:
            raise ValueError("it does not make one <math> element", "check its \\text{}")
    except ValueError as e:
        shown = tex.strip() if len(tex.strip()) <= 40 else tex.strip()[:37] + "..."
        raise BuildError(path, f"math ${shown}$: {e.args[0]}", e.args[1], no) from None
    return "".join(parser.out)


class _MathML(HTMLParser):
    """latex2mathml's output, read with a real parser and written again escaped: its \\text{}
    is copied unescaped, so only MathML elements and attributes, one <math> element and safe
    addresses pass; a ValueError(message, fix) refuses anything else."""
    TEXT_FIX = "TeX carries no HTML: write < and > as \\lt and \\gt, in \\text{} too"

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.out, self.stack, self.roots = [], [], 0

    def _tag(self, tag, attrs, end=""):
        if tag not in MATHML_ELEMENTS or (tag == "math") != (not self.stack):
            raise ValueError(f"it would write a <{tag}> element into the page", self.TEXT_FIX)
        for name, value in attrs:
            if name not in MATHML_ATTRIBUTES or (name == "xmlns" and value != MATHML_NS):
                raise ValueError(f"it would write attribute '{name}' into the page",
                                 "drop the command that sets it (\\style, \\class, ...)")
            if name == "href" and unsafe_address(value or ""):
                raise ValueError(f"its \\href {unsafe_address(value)}",
                                 "link to an http(s) address or a page of the site")
        self.roots += tag == "math"
        self.out.append(f"<{tag}" + "".join(f' {n}="{html.escape(v or "")}"' for n, v in attrs)
                        + f"{end}>")

    def handle_starttag(self, tag, attrs):
        self._tag(tag, attrs)
        self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self._tag(tag, attrs, " /")

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            raise ValueError(f"its </{tag}> closes an element out of turn", self.TEXT_FIX)
        self.out.append(f"</{tag}>")

    def handle_data(self, data):
        if not self.stack and data.strip():
            raise ValueError("it would write text outside its <math> element", self.TEXT_FIX)
        self.out.append(html.escape(data, quote=False))

    def handle_charref(self, name):  # as written: &#x02211; stays a reference
        self.out.append(f"&#{name};")

    def handle_entityref(self, name):
        self.out.append(html.escape(html.unescape(f"&{name};"), quote=False))

    def unknown_decl(self, data):
        raise ValueError("it would write markup that is not MathML", self.TEXT_FIX)

    handle_comment = handle_decl = handle_pi = unknown_decl


class _Directives(Preprocessor):
    """Replace our syntax with stashed HTML, line by line, so errors keep their line numbers."""

    def __init__(self, md, ctx):
        super().__init__(md)
        self.ctx = ctx

    def run(self, lines):
        c, stash = self.ctx, self.md.htmlStash.store
        c["equations"] = _equations(c["path"], lines)
        out, (code, _) = [], _code(lines)
        for no, line in enumerate(lines, 1):
            if code[no - 1]:
                out.append(line)
                continue
            m = FIGURE.match(line)
            if m:
                out += ["", stash(c["figure_html"](m.group(1), c["numbers"][m.group(1)])), ""]
                continue
            m = EQUATION.match(line)
            if m:
                out += ["", stash(self._equation(m.group(1), m.group(2), no)), ""]
                continue
            spans = {}

            def keep(html):
                token = f"\x02{len(spans)}\x03"
                spans[token] = stash(html)
                return token

            line = CODE_SPAN.sub(lambda m: keep(f"<code>{escape(m.group(2).strip())}</code>"),
                                 line)
            # Facts inside math go into the TeX itself; elsewhere they are escaped HTML.
            tex = lambda m: _fill(m.group(1), c["fact"])
            line = DISPLAY_MATH.sub(lambda m: keep(_math(tex(m), True, c["path"], no)), line)
            # Inline math and facts in one pass, so that facts are numbered in reading order.
            line = MATH_OR_FACT.sub(lambda m: keep(self._facts(
                _fact_names(m.group(1)), _math(tex(m), False, c["path"], no), tex(m).strip())
                if m.group(1) is not None else self._facts([m.group(2).strip()], None)), line)
            line = CITE.sub(lambda m: keep(self._cite(CITE_KEY.findall(m.group(1)))), line)
            line = XREF.sub(lambda m: keep(self._xref(m.group(1))), line)
            line = EQ_REF.sub(lambda m: keep(f'<a class="xref" href="#eq-{m.group(1)}">Eq.\u00a0'
                                             f'({c["equations"][m.group(1)]})</a>'), line)
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
            parts.append(_preview("cite", f"#ref-{escape(key)}", f'id="cite-{uid}"', str(n),
                                  f"tip-{uid}", escape(entry.text())))
        return "<sup class=\"cites\">[" + ", ".join(parts) + "]</sup>"

    def _uses(self, name):
        """How many times `name` has been used so far, this use included."""
        uses = self.ctx.setdefault("uses", {})
        uses[name] = uses.get(name, 0) + 1
        return uses[name]

    def _equation(self, tex, label, no):
        c = self.ctx
        tex = _fill(tex, c["fact"])
        return (f'<div class="equation" id="eq-{label}">{_math(tex, True, c["path"], no)}'
                f'<span class="eq-num">({c["equations"][label]})</span></div>')

    def _xref(self, fid):
        """"Figure N", previewing the figure's title, caption and (site.js) static image."""
        c, about = self.ctx, self.ctx.get("about", {}).get(fid, {})
        n = c["numbers"][fid]
        title = f' {escape(about["title"])}.' if about.get("title") else ""
        caption = (f' <span class="tip-caption">{escape(about["caption"])}</span>'
                   if about.get("caption") else "")
        tip = (f'<span class="thumb" data-thumb="fig-{fid}"></span>'
               f'<strong>Figure {n}.{title}</strong>{caption}')
        return _preview("xref", f"#fig-{fid}", 'class="xref"', f"Figure {n}",
                        f"tip-xref-{fid}-{self._uses('fig:' + fid)}", tip)

    def _facts(self, names, label, tex=None):
        """Facts as links to themselves (id fact-FIGURE-NAME, -2, -3 on later uses), previewing
        what each is and where it comes from; `label` is the HTML they show (math that quotes
        them, `tex` its source) or None for the fact's own value. Math without facts is returned
        as it is."""
        if not names:
            return label
        c, ids, tips = self.ctx, [], []
        for name in names:
            fig, _, key = name.partition(".")
            k = self._uses(name)
            ids.append(f"fact-{fig}-{key}" + (f"-{k}" if k > 1 else ""))
            tips.append(_fact_tip(fig, key, c["numbers"].get(fig), c.get("about", {}).get(fig, {})))
        label = label if label is not None else str(escape(c["fact"](names[0])))
        # One link for the math; any further facts in it keep an anchor of their own.
        extra = "".join(f'<span id="{i}"></span>' for i in ids[1:])
        # A link holding only math has no name browsers compute from MathML: give it its TeX.
        named = f' aria-label="{escape(tex)}"' if tex else ""
        return extra + _preview("fact", f"#{ids[0]}", f'class="fact" id="{ids[0]}"{named}', label,
                                f"tip-{ids[0]}", "<br>".join(tips))


def _preview(kind, href, attrs, label, tip_id, tip):
    """The one markup of every preview: a link and, beside it, what it previews (role=tooltip,
    shown by style.css on hover and focus and by site.js on a first tap)."""
    return (f'<span class="preview {kind}"><a href="{href}" {attrs} aria-describedby="{tip_id}">'
            f'{label}</a><span class="preview-tip {kind}-tip" role="tooltip" id="{tip_id}">'
            f'{tip}</span></span>')


def _fact_tip(fig, key, number, about):
    """What a fact is, from which models, and which rows of which published table."""
    note = about.get("notes", {}).get(key) or {}
    what = note.get("what") or ""
    where = f"Figure {number}" if number else "the figure"
    parts = [f"<strong>{escape(what[:1].upper() + what[1:])}.</strong>" if what else "",
             f"From {where}" + (f", {escape(about['title'])}." if about.get("title") else ".")]
    models = note.get("models") or about.get("families")
    if models:
        parts.append("Models: " + ", ".join(f"{escape(m)} (data/models/{escape(m)}.json)"
                                            for m in models) + ".")
    elif about:
        parts.append("No trained model: computed directly.")
    if note.get("table"):
        rows = f", {escape(note['rows'])}" if note.get("rows") else ""
        parts.append(f"Data: figures/{escape(fig)}/{escape(note['table'])}.csv{rows}.")
    return " ".join(p for p in parts if p)


class _ExternalLinks(Treeprocessor):
    """Links that leave the site open without handing it a window.opener."""

    def run(self, root):
        for a in root.iter("a"):
            if a.get("href", "").startswith(("http://", "https://")):
                a.set("rel", "noopener")


class _Sections(Treeprocessor):
    """Each ## and ### heading gets its section number (1, 1.1, ...) in a span of its own, after
    the toc extension has given it its id, so ids stay what they were; `numbers` maps each
    heading's id to its number, for the table of contents."""

    def run(self, root):
        self.numbers, h2, h3 = {}, 0, 0
        for el in root.iter():
            if el.tag not in ("h2", "h3"):
                continue
            h2, h3 = (h2 + 1, 0) if el.tag == "h2" else (h2, h3 + 1)
            number = f"{h2}" if el.tag == "h2" else f"{h2}.{h3}"
            text = el.text or ""
            hand = HAND_NUMBER.match(text)
            if hand and hand.group(1) == number:  # written by hand (scan checked it): not twice
                text = text[hand.end():]
            span = etree.Element("span", {"class": "secnum"})
            span.text, span.tail, el.text = number, " " + text, None
            el.insert(0, span)
            self.numbers[el.get("id")] = number


def _number_toc(tokens, numbers):
    for t in tokens:
        number = numbers.get(t["id"])
        if number and not HAND_NUMBER.match(t["name"]):
            t["name"] = f"{number} {t['name']}"
        _number_toc(t["children"], numbers)


class _Sidenotes(Treeprocessor):
    """Each footnote moves from the list at the end to a note beside its reference, the
    reference's preview (style.css: in the margin on wide screens, opened in place on phones,
    a block under its line in print); a note in the flow reads without CSS too. The list goes,
    so that every note, and every fact anchor in it, is on the page once."""

    def __init__(self, md, path):
        super().__init__(md)
        self.path = path

    def run(self, root):
        notes = next((d for d in root.iter("div") if d.get("class") == "footnote"), None)
        if notes is None:
            return
        items = {li.get("id"): li for li in notes.iter("li")}
        parents = {child: parent for parent in root.iter() for child in parent}
        for sup in [s for s in root.iter("sup") if s.get("id", "").startswith("fnref")]:
            a = sup.find("a")
            target = a.get("href", "")[1:]
            sid = "sn-" + target.partition(":")[2]
            a.set("href", "#" + sid)
            li = items.pop(target, None)
            if li is None:  # a note referred to twice sits beside its first reference
                continue
            parent = parents[sup]
            at = list(parent).index(sup)
            wrap = etree.Element("span", {"class": "preview note"})
            wrap.tail, sup.tail = sup.tail, None
            parent.remove(sup)
            wrap.append(sup)
            a.set("aria-describedby", sid)
            note = etree.SubElement(wrap, "span", {"class": "preview-tip sidenote",
                                                  "role": "note", "id": sid})
            etree.SubElement(note, "span", {"class": "sn-num"}).text = a.text
            for child in list(li):
                if child.tag != "p":
                    raise BuildError(self.path, f"footnote '{target.partition(':')[2]}' "
                                     f"holds a <{child.tag}>", "write a footnote as paragraphs "
                                     "only: it is shown beside the line that cites it")
                child.tag, child.attrib = "span", {"class": "sn-p"}
                note.append(child)
            for p in note:
                for back in [x for x in p if x.get("class") == "footnote-backref"]:
                    p.remove(back)
            parent.insert(at, wrap)
        parents[notes].remove(notes)


def render(path, text, figure_ids, bib, facts, figure_html, allow_raw_html=False, about=None):
    """The essay's HTML body; figure_html(id, number) gives a placed figure's markup; `about`
    (figure id -> {"title", "caption" as plain text, "families", "notes": fact notes}) is what
    the previews of cross-references and facts say."""
    figures, cites = scan(path, text, figure_ids, bib, facts, allow_raw_html)

    def fact(name):
        fig, _, key = name.partition(".")
        return facts[fig][key]

    ctx = _context(path, bib, figures, cites, figure_html, fact)
    ctx["about"] = about or {}
    md = _markdown(ctx)
    sections = _Sections(md)
    md.treeprocessors.register(sections, "sections", 4)  # after toc (5) has set the ids
    md.treeprocessors.register(_Sidenotes(md, path), "sidenotes", 3)  # after footnotes (50, 15)
    body = md.convert(text)
    _number_toc(md.toc_tokens, sections.numbers)
    words = len(re.sub(r"<[^>]+>", " ", body).split())
    return Essay(body, md.toc_tokens, figures, cites, words, cited=ctx["cited"])


def figure_about(fig, notes):
    """What the previews say of a figure (a precompute.figures.Figure) and its facts' notes."""
    caption = html.unescape(re.sub(r"<[^>]+>", "", markdown.markdown(fig.caption))).strip()
    return {"title": fig.title, "caption": caption, "families": fig.families, "notes": notes}


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
    # After normalize_whitespace (30), which strips the placeholder markers the stash relies on,
    # and before fenced_code (25), so that it sees the essay's own lines, as scan() does.
    md.preprocessors.register(_Directives(md, ctx), "superposition_directives", 26)
    md.treeprocessors.register(_ExternalLinks(md), "external_links", 0)
    return md
