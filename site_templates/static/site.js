// Draw each figure when it comes near the screen; until then (and in print) its static image
// stands in its place. On the hosted pages the Vega runtime and each figure's spec are classic
// scripts inserted on demand (figures/<id>/spec.js), since file:// pages cannot fetch JSON; the
// offline edition carries both inside itself (the spec as inert <script type="application/json">).
(function () {
  "use strict";
  var dark = window.matchMedia("(prefers-color-scheme: dark)");
  var runtimeSrc = document.currentScript && document.currentScript.getAttribute("data-vega");
  var scripts = {};

  function load(src) {
    if (!scripts[src]) scripts[src] = new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = function () { reject(new Error("could not load " + src)); };
      document.head.appendChild(s);
    });
    return scripts[src];
  }

  function specOf(el, id) {
    var inline = document.getElementById("spec-" + id);
    if (inline) return Promise.resolve(JSON.parse(inline.textContent));
    return load(el.getAttribute("data-spec")).then(function () { return window.figureSpecs[id]; });
  }

  function runtime() {
    return window.vegaEmbed ? Promise.resolve() : load(runtimeSrc);
  }

  // Side-by-side panels stack when the column is narrower than they are (a phone); whatever is
  // still too wide is scaled to the column by the stylesheet (the SVG keeps its viewBox).
  function stacked(spec) {
    if (Array.isArray(spec)) return spec.map(stacked);
    if (!spec || typeof spec !== "object") return spec;
    var out = {};
    Object.keys(spec).forEach(function (k) {
      out[k === "hconcat" ? "vconcat" : k] = k === "data" || k === "datasets" ? spec[k] : stacked(spec[k]);
    });
    return out;
  }

  function hasHconcat(spec) {
    return JSON.stringify(spec).indexOf('"hconcat"') >= 0;
  }

  function embed(el, spec) {
    // One accessible label per chart (the figure's, on its container), none per mark.
    spec.config = Object.assign({}, spec.config, {aria: false});
    return window.vegaEmbed(el, spec, {
      // No <style> elements added at run time (the CSP refuses them): style.css styles both.
      renderer: "svg", actions: false, defaultStyle: false, tooltip: {disableDefaultStyle: true},
      theme: dark.matches ? "dark" : undefined
    });
  }

  // Chart text must read at 4.5:1 or better against the chart's background in either theme.
  // Figures pick their colours for marks; text drawn in a colour too faint for the theme is
  // darkened (light) or lightened (dark) towards the text colour until it reaches that ratio.
  function rgb(color) {
    var m = /rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)/.exec(color || "");
    return m ? [+m[1], +m[2], +m[3]] : null;
  }

  function luminance(c) {
    var v = c.map(function (x) { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
  }

  function contrast(a, b) {
    var la = luminance(a), lb = luminance(b);
    return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
  }

  function readable(el, background) {
    var toward = luminance(background) > 0.4 ? [0, 0, 0] : [255, 255, 255];
    el.querySelectorAll("svg text").forEach(function (t) {
      t.style.fill = "";
      var base = rgb(getComputedStyle(t).fill), fg = base;
      if (!base) return;
      for (var k = 0.1; contrast(fg, background) < 4.6 && k < 1.05; k += 0.1) {
        fg = base.map(function (x, i) { return Math.round(x + (toward[i] - x) * k); });
      }
      if (fg !== base) t.style.fill = "rgb(" + fg.join(",") + ")";
    });
  }

  function backgroundOf(view) {
    var bg = view.background();
    if (!bg || bg === "transparent") return rgb(getComputedStyle(document.documentElement).backgroundColor);
    var probe = document.createElement("i");  // resolves a named or hex colour to rgb()
    probe.style.color = bg;
    document.body.appendChild(probe);
    var color = rgb(getComputedStyle(probe).color);
    probe.remove();
    return color;
  }

  // Lines, rules and points drawn in black or a dark grey (a figure's neutral ink) would vanish
  // on the dark theme's background: those under 3:1 against it take the theme's text colour,
  // and so do their legend symbols. Coloured marks and areas (scales' colours) stay as drawn, and
  // so does a chart that cases its dark ink in white (a data mark stroked white), which reads on
  // both backgrounds.
  var INK = "svg .mark-line path, svg .mark-rule line, svg .mark-symbol path, svg .mark-trail path";

  function grey(mark, prop) {
    var c = rgb(getComputedStyle(mark)[prop]);
    return c && Math.max.apply(null, c) - Math.min.apply(null, c) < 24 ? c : null;
  }

  function visibleInk(el, background) {
    if (luminance(background) > 0.4) return;
    var marks = el.querySelectorAll(INK);
    marks.forEach(function (mark) { mark.style.fill = mark.style.stroke = ""; });
    var cased = Array.prototype.some.call(el.querySelectorAll("svg .role-mark path, svg .role-mark line"),
      function (mark) { var c = grey(mark, "stroke"); return c && luminance(c) > 0.8; });
    if (cased) return;
    marks.forEach(function (mark) {
      ["fill", "stroke"].forEach(function (prop) {
        var c = grey(mark, prop);
        if (c && contrast(c, background) < 3) mark.style[prop] = "rgb(232,230,225)";
      });
    });
  }

  function keepReadable(el, view) {
    var background = backgroundOf(view), svg = el.querySelector("svg");
    var fix = function () { readable(el, background); visibleInk(el, background); };
    fix();
    // Vega redraws marks when a control moves; only its own attributes trigger this, not ours.
    new MutationObserver(fix).observe(svg, {
      subtree: true, childList: true, attributes: true, attributeFilter: ["fill", "stroke"]});
  }

  // An index slider shows the value it selects ("S = 0.9"), from the labels in the spec's usermeta.
  function showSliderValues(el, spec) {
    var labels = (spec.usermeta || {}).sliderLabels || {};
    el.querySelectorAll(".vega-bind input[type=range]").forEach(function (input) {
      var values = labels[input.name], shown = input.nextElementSibling;  // Vega's readout
      if (!values || !shown) return;
      var update = function () {
        var text = values[+input.value];
        if (text === undefined) return;
        shown.textContent = text;
        input.setAttribute("aria-valuetext", text);
      };
      input.addEventListener("input", update);
      input.addEventListener("change", update);
      update();
    });
  }

  function render(el) {
    var id = el.getAttribute("data-figure"), spec;
    var label = el.getAttribute("aria-label");
    el.setAttribute("data-rendered", "pending");
    return Promise.all([specOf(el, id), runtime()]).then(function (loaded) {
      spec = withState(loaded[0], restored[id]);
      // Panels wider than the column (the static image's width says so) stack at once, rather
      // than after a first drawing side by side.
      if (+el.getAttribute("data-width") > el.clientWidth + 1 && hasHconcat(spec)) {
        el.setAttribute("data-layout", "stacked");
        return embed(el, stacked(spec));
      }
      return embed(el, spec);
    }).then(function (result) {
      var svg = el.querySelector("svg");
      if (svg && parseFloat(svg.getAttribute("width")) > el.clientWidth + 1 && hasHconcat(spec) &&
          !el.hasAttribute("data-layout")) {
        result.view.finalize();
        el.innerHTML = "";
        el.setAttribute("data-layout", "stacked");
        return embed(el, stacked(spec));
      }
      return result;
    }).then(function (result) {
      el.setAttribute("data-rendered", "true");
      el.setAttribute("role", "group");
      el.setAttribute("aria-label", label);
      // The drawing itself adds nothing to that label; its data are linked under the figure.
      var svg = el.querySelector("svg");
      if (svg) svg.setAttribute("aria-hidden", "true");
      keepReadable(el, result.view);
      el._view = result.view;
      showSliderValues(el, spec);
      follow(id, result.view, spec);
      // Vega-Embed labels the bound inputs by their name; tie them to the figure for screen readers.
      el.querySelectorAll(".vega-bind input, .vega-bind select").forEach(function (input) {
        input.setAttribute("aria-describedby", "cap-" + id);
      });
    }).catch(function (err) {
      el.setAttribute("data-rendered", "error");
      console.error("figure " + id + ": " + err);
    });
  }

  // A view's state in the address: #fig-<id>?<param>=<value>&... (README.md, "Citing a view").
  // The figure's own anchor is #fig-<id>; anchors without "?" (equations, sections, facts) are
  // left alone. Values the spec does not allow are ignored.
  var restored = {};

  function addressState() {
    var m = /^#fig-([\w-]+)\?(.*)$/.exec(location.hash), values = {};
    if (!m) return null;
    m[2].split("&").forEach(function (pair) {
      var kv = pair.split("=");
      try {
        if (kv.length === 2) values[decodeURIComponent(kv[0])] = decodeURIComponent(kv[1]);
      } catch (e) { /* a malformed escape: that pair is skipped */ }
    });
    return {id: m[1], values: values};
  }

  function allowed(param, text) {
    var bind = param.bind || {};
    if (bind.options) return bind.options.filter(function (o) { return String(o) === text; })[0];
    if (bind.input === "range") {
      var v = text === "" ? NaN : Number(text);
      return v >= bind.min && v <= bind.max ? v : undefined;
    }
    if (bind.input === "checkbox") return text === "true" ? true : text === "false" ? false : undefined;
    return text;
  }

  function withState(spec, values) {
    if (!values || !spec.params) return spec;
    return Object.assign({}, spec, {params: spec.params.map(function (p) {
      var v = p.name in values ? allowed(p, values[p.name]) : undefined;
      return v === undefined ? p : Object.assign({}, p, {value: v});
    })});
  }

  function chartOf(id) {
    return document.querySelector('.chart[data-figure="' + id + '"]');
  }

  // The controls' values: from the drawn chart, else as the address or the spec set them.
  function valuesOf(id, params) {
    var view = chartOf(id)._view, out = {};
    Object.keys(params).forEach(function (name) {
      var given = restored[id] && name in restored[id] ? allowed(params[name], restored[id][name]) : undefined;
      out[name] = view ? view.signal(name) : given !== undefined ? given : params[name].value;
    });
    return out;
  }

  function query(values) {
    return Object.keys(values).map(function (k) {
      return encodeURIComponent(k) + "=" + encodeURIComponent(String(values[k]));
    }).join("&");
  }

  // As the reader moves a control, the address follows (one history entry, replaced), and so do
  // the open table and the shown citation.
  function follow(id, view, spec) {
    var names = (spec.params || []).filter(function (p) { return p.bind; }).map(function (p) { return p.name; });
    names.forEach(function (name) {
      view.addSignalListener(name, function () {
        var values = {};
        names.forEach(function (n) { values[n] = view.signal(n); });
        history.replaceState(history.state, "", "#fig-" + id + "?" + query(values));
        var box = document.querySelector('.figure-tools[data-tools="' + id + '"]');
        if (box.querySelector("details").open) fillTable(box);
        if (!box.querySelector("input").hidden) fillCite(box);
      });
    });
  }

  // The table data (figures/<id>/table.js, or inline in the offline edition), loaded when first
  // needed, so that a closed table costs the page nothing.
  function tableOf(box) {
    var id = box.getAttribute("data-tools"), inline = document.getElementById("table-" + id);
    if (inline) return Promise.resolve(JSON.parse(inline.textContent));
    return load(box.getAttribute("data-table")).then(function () { return window.figureTables[id]; });
  }

  function formatted(v) {
    if (typeof v !== "number") return v === null ? "" : String(v);
    var a = Math.abs(v);
    if (Number.isInteger(v) || a === 0) return String(v);
    return a < 1e-3 || a >= 1e6 ? v.toExponential(2) : String(+v.toPrecision(4));
  }

  function shown(param, value) {
    var text = param.labels && param.labels[value];
    return (param.bind.name || "").trim() + " " + (text !== undefined ? text : String(value));
  }

  var MAX_ROWS = 100;  // per table: the page stays small; every row is in the CSV

  function make(tag, text, attrs) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }

  function fillTable(box) {
    var id = box.getAttribute("data-tools"), slot = box.querySelector(".table-slot");
    return tableOf(box).then(function (data) {
      var values = valuesOf(id, data.params), out = document.createDocumentFragment();
      data.tables.forEach(function (t) {
        var index = {};
        t.columns.forEach(function (c, i) { index[c] = i; });
        var rows = t.rows.filter(function (row, i) {
          return t.filters.every(function (f) {
            return (f.keys ? f.keys[i] : row[index[f.column]]) === values[f.param];
          });
        });
        var table = make("table", undefined, {"class": "view-table"}), caption = make("caption");
        caption.append("Table " + t.name + (t.filters.length ? ", rows for " + t.filters.map(function (f) {
          return shown(data.params[f.param], values[f.param]);
        }).join(", ") : "") + ": " + rows.length + (t.filters.length ? " of " + t.rows.length : "") +
          " rows" + (rows.length > MAX_ROWS ? ", the first " + MAX_ROWS + " shown" : ""));
        var csv = box.getAttribute("data-csv");
        if (csv) {
          caption.append("; every row is in ");
          caption.appendChild(make("a", t.name + ".csv", {href: csv + t.name + ".csv"}));
        }
        table.appendChild(caption);
        var head = make("tr");
        t.columns.forEach(function (c) { head.appendChild(make("th", c, {scope: "col"})); });
        table.appendChild(make("thead")).appendChild(head);
        var body = table.appendChild(make("tbody"));
        rows.slice(0, MAX_ROWS).forEach(function (row) {
          var tr = body.appendChild(make("tr"));
          row.forEach(function (v) {
            tr.appendChild(make("td", formatted(v), typeof v === "number" ? {"class": "num"} : {}));
          });
        });
        out.appendChild(table);
      });
      slot.replaceChildren(out);
    });
  }

  // "Cite this view": the figure version's address (absolute where the site knows its own) and
  // the controls' state, copied where the clipboard allows, and shown selected in any case.
  function fillCite(box) {
    var id = box.getAttribute("data-tools"), input = box.querySelector("input");
    return tableOf(box).then(function (data) {
      var values = valuesOf(id, data.params);
      input.value = box.getAttribute("data-cite") + "#fig-" + id + (Object.keys(values).length ? "?" + query(values) : "");
      input.hidden = false;
      return input.value;
    });
  }

  function tools(box) {
    var details = box.querySelector("details"), status = box.querySelector(".cite-status");
    details.addEventListener("toggle", function () { if (details.open) fillTable(box); });
    box.querySelector("button").addEventListener("click", function () {
      fillCite(box).then(function (text) {
        var input = box.querySelector("input");
        input.focus();
        input.select();
        var manual = function () { status.textContent = "Select the address and copy it."; };
        if (!navigator.clipboard) return manual();
        return navigator.clipboard.writeText(text).then(function () {
          status.textContent = "Copied.";
        }, manual);
      });
    });
  }

  // A display equation wider than its column scrolls sideways (style.css); a keyboard can scroll
  // it only if it takes focus, so the wide ones (on a phone, say) do and the others stay out of
  // the tab order. Measured once the math font is in, and again when the window changes size.
  function focusWideMath() {
    document.querySelectorAll('math[display="block"]').forEach(function (m) {
      if (m.scrollWidth > m.clientWidth) m.setAttribute("tabindex", "0");
      else m.removeAttribute("tabindex");
    });
  }
  window.addEventListener("resize", focusWideMath);

  // Charts draw one at a time, each in tasks of its own, so that the page stays responsive;
  // data-figures is "rendered" whenever no chart is waiting or drawing.
  var queue = Promise.resolve(), waiting = 0;

  function draw(el) {
    waiting++;
    document.documentElement.setAttribute("data-figures", "drawing");
    queue = queue.then(function () {
      return new Promise(function (next) { setTimeout(next, 0); });
    }).then(function () { return render(el); }).then(function () {
      if (--waiting === 0) document.documentElement.setAttribute("data-figures", "rendered");
    });
  }

  function drawNearScreen() {
    var near = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (!e.isIntersecting) return;
        near.unobserve(e.target);
        draw(e.target.querySelector(".chart[data-figure]"));
      });
      if (!waiting) document.documentElement.setAttribute("data-figures", "rendered");
    }, {rootMargin: "150% 0px"});  // a screen and a half ahead, either way
    document.querySelectorAll(".figure").forEach(function (f) { near.observe(f); });
  }

  function start() {
    document.documentElement.classList.add("js");
    document.fonts.ready.then(focusWideMath);
    var state = addressState();
    if (state && document.getElementById("fig-" + state.id)) {
      restored[state.id] = state.values;
      // No element has the id "fig-<id>?...", so the browser does not scroll there itself.
      document.getElementById("fig-" + state.id).scrollIntoView();
    }
    document.querySelectorAll(".figure-tools").forEach(tools);
    drawNearScreen();
  }

  // Previews (render/essay.py's _preview: citations, figure and equation cross-references,
  // footnotes, facts): kept inside the screen; a tap (no hover) shows the preview first and only
  // a second tap follows the link. A figure's preview borrows the figure's own static image,
  // which the page already has (a file beside it, or inlined in the offline edition).
  function tipOf(preview) {
    return preview.querySelector(":scope > .preview-tip");
  }

  function fillThumb(tip) {
    var thumb = tip.querySelector(".thumb:empty");
    var figure = thumb && document.getElementById(thumb.getAttribute("data-thumb"));
    var image = figure && figure.querySelector("img.static");
    if (!image) return;
    var img = document.createElement("img");
    img.src = image.src;
    img.alt = "";
    thumb.appendChild(img);
  }

  function place(tip) {
    fillThumb(tip);
    tip.style.left = "";
    tip.classList.remove("below");
    if (getComputedStyle(tip).position !== "absolute") return;  // a margin note, or one opened in place
    var margin = 8, rect = tip.getBoundingClientRect();
    if (rect.top < margin) tip.classList.add("below");  // no room above the line: open under it
    var shift = Math.min(0, window.innerWidth - margin - rect.right) || Math.max(0, margin - rect.left);
    if (shift) tip.style.left = (parseFloat(getComputedStyle(tip).left) + shift) + "px";
  }

  function openTip(preview) {
    document.querySelectorAll(".preview.open").forEach(function (p) {
      if (!p.contains(preview)) p.classList.remove("open");  // a note stays open round a fact in it
    });
    preview.classList.add("open");
    place(tipOf(preview));
  }

  function previewAt(e) {
    return e.target.closest && e.target.closest(".preview");
  }

  ["focusin", "mouseover"].forEach(function (type) {
    document.addEventListener(type, function (e) {
      var preview = previewAt(e);
      if (preview) place(tipOf(preview));
    });
  });
  document.addEventListener("click", function (e) {
    var preview = previewAt(e);
    var touch = e.pointerType === "touch" || window.matchMedia("(hover: none)").matches;
    if (preview && touch && !preview.classList.contains("open") && e.target.closest("a")) {
      e.preventDefault();
      openTip(preview);
    } else if (!preview) {
      document.querySelectorAll(".preview.open").forEach(function (p) { p.classList.remove("open"); });
    }
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  dark.addEventListener("change", function () {  // what was drawn is drawn again, in the new theme
    document.querySelectorAll(".chart[data-figure]").forEach(function (el) {
      if (!el._view) return;
      el._view.finalize();
      el._view = null;
      el.innerHTML = "";
      el.removeAttribute("data-layout");
      draw(el);
    });
  });
})();
