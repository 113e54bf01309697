"""Every HTML page and asset of the site, from the jinja2 templates in site_templates/."""
import base64
import hashlib
import re
import shutil
import sys
from pathlib import Path

import jinja2
import vl_convert
from markupsafe import Markup, escape

from errors import BuildError

TEMPLATES = Path(__file__).resolve().parent.parent / "site_templates"
MATH_FONT = Path("/usr/share/texmf/fonts/opentype/public/lm-math/latinmodern-math.otf")
DPKG_SUMS = Path("/var/lib/dpkg/info/fonts-lmodern.md5sums")  # what the Debian package shipped
# No network origin anywhere; Vega compiles its expressions with Function(), hence unsafe-eval.
# connect-src 'self' rather than 'none' only so that audits run in the page's frame (Lighthouse
# reads /robots.txt that way) can read the site's own files; the pages themselves fetch nothing.
# Never 'unsafe-inline': a page's own inline scripts and stylesheet are allowed by their hashes,
# so an inline script, event handler or style attribute that got into a page cannot run.
CSP = ("default-src 'none'; script-src {scripts}; style-src 'self'{styles}; "
       "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
       "form-action 'none'")


def environment():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["svg_data_uri"] = svg_data_uri
    env.filters["plain"] = plain
    return env


def plain(value):
    """A parameter as a reader writes it: lists comma-separated, never Python's repr."""
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k} {plain(v)}" for k, v in value.items())
    return str(value)


def svg_data_uri(svg):
    """A static figure inside the page itself, for the offline edition."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def render(env, name, **ctx):
    try:
        return env.get_template(name).render(csp=csp(ctx.get("inline")), **ctx)
    except jinja2.TemplateSyntaxError as e:
        raise BuildError(TEMPLATES / (e.name or name), f"template syntax error: {e.message}",
                         "fix the template", e.lineno) from None
    except jinja2.TemplateError as e:
        raise BuildError(TEMPLATES / name, f"template error: {e}",
                         "fix the template or the value it names") from None


def csp(inline):
    """The policy of a page; `inline` is what base.html writes verbatim inside its <style> and
    <script> elements (inline_assets, inline_style), which is what the hashes are taken of."""
    scripts = "'self' 'unsafe-eval'"  # vega compiles its specs' expressions at run time
    if not inline:
        return CSP.format(scripts=scripts, styles="")
    hashes = "".join(csp_hash(inline[k]) for k in ("runtime", "js") if inline[k])
    # a page with no script of its own (404.html) runs none at all
    return CSP.format(scripts=scripts + hashes if hashes else "'none'",
                      styles=csp_hash(inline["css"]))


def csp_hash(text):
    return f" 'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


def toc_html(tokens):
    if not tokens:
        return Markup("")
    items = "".join(f'<li><a href="#{escape(t["id"])}">{escape(t["name"])}</a>'
                    f'{toc_html(t["children"])}</li>' for t in tokens)
    return Markup(f'<ul class="toc-list">{items}</ul>')


def math_font():
    """The font file, checked against the md5 its Debian package recorded (where dpkg did)."""
    fix = "reinstall Debian's fonts-lmodern (sudo apt-get install --reinstall fonts-lmodern)"
    if not MATH_FONT.is_file():
        raise BuildError(MATH_FONT, "the Latin Modern Math font is missing", fix)
    rel = str(MATH_FONT.relative_to("/"))
    sums = DPKG_SUMS.read_text().splitlines() if DPKG_SUMS.is_file() else []
    want = [line.split()[0] for line in sums if line.endswith("  " + rel)]
    if want and hashlib.md5(MATH_FONT.read_bytes()).hexdigest() != want[0]:
        raise BuildError(MATH_FONT, "the font differs from what fonts-lmodern installed", fix)
    return MATH_FONT


def write_assets(out, cache_dir):
    """assets/ and robots.txt: the vendored Vega runtime (from vl-convert-python, never a CDN), css, js, font."""
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "vega-bundle.js").write_text(vega_bundle(cache_dir))
    for name in ("style.css", "site.js", "favicon.svg"):
        shutil.copyfile(TEMPLATES / "static" / name, assets / name)
    shutil.copyfile(math_font(), assets / "latinmodern-math.otf")
    (out / "robots.txt").write_text("User-agent: *\nAllow: /\n")  # every page may be indexed


def vega_bundle(cache_dir):
    """Vega + Vega-Lite + Vega-Embed in one classic script; cached, as bundling takes a second.
    The cached copy is published only if its size and sha256 match what vl-convert gave when it
    was written (a .sha256 file beside it); otherwise it is rebuilt."""
    path = Path(cache_dir) / f"vega-bundle-{vl_convert.__version__}.js"
    sums = path.with_name(path.name + ".sha256")
    try:
        data, want = path.read_bytes(), sums.read_text().split()
        if want == [str(len(data)), hashlib.sha256(data).hexdigest()]:
            return data.decode()
        print(f"{path}: cached Vega runtime does not match its checksum; rebuilding",
              file=sys.stderr)
    except (OSError, UnicodeDecodeError):
        pass  # not cached yet, or unreadable: rebuild
    text = vl_convert.javascript_bundle()
    data = text.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    check = f"{len(data)} {hashlib.sha256(data).hexdigest()}\n".encode()
    for dest, content in ((path, data), (sums, check)):
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(content)
        tmp.replace(dest)
    return text


def inline_assets(cache_dir):
    """Everything the offline edition needs inside one file."""
    font = base64.b64encode(math_font().read_bytes()).decode()
    safe = lambda js: js.replace("</script", "<\\/script")
    return {**inline_style(f"data:font/otf;base64,{font}"), "runtime": safe(vega_bundle(cache_dir)),
            "js": safe((TEMPLATES / "static" / "site.js").read_text())}


def inline_style(font_url=None):
    """The stylesheet and icon inside the page; without a math font (and no scripts) for pages,
    like 404.html, that GitHub Pages serves at any depth and that therefore cannot link assets."""
    css = (TEMPLATES / "static" / "style.css").read_text()
    css = css.replace('url("latinmodern-math.otf")', f'url("{font_url}")') if font_url else \
        re.sub(r"@font-face \{[^}]*\}\n", "", css)
    favicon = base64.b64encode((TEMPLATES / "static" / "favicon.svg").read_bytes()).decode()
    return {"css": Markup(css), "favicon": favicon, "runtime": "", "js": ""}
