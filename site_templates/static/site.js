// Render every figure from its inline spec. Specs travel inside the page
// (<script type="application/json">) because file:// pages cannot fetch JSON.
(function () {
  "use strict";
  var dark = window.matchMedia("(prefers-color-scheme: dark)");

  function render(el) {
    var id = el.getAttribute("data-figure");
    var spec = JSON.parse(document.getElementById("spec-" + id).textContent);
    el.setAttribute("data-rendered", "pending");
    return window.vegaEmbed(el, spec, {
      renderer: "svg", actions: false, defaultStyle: false,
      theme: dark.matches ? "dark" : undefined
    }).then(function (result) {
      el.setAttribute("data-rendered", "true");
      el._view = result.view;
      // Vega-Embed labels the bound inputs by their name; tie them to the figure for screen readers.
      el.querySelectorAll(".vega-bind input, .vega-bind select").forEach(function (input) {
        input.setAttribute("aria-describedby", "cap-" + id);
      });
    }).catch(function (err) {
      el.setAttribute("data-rendered", "error");
      console.error("figure " + id + ": " + err);
    });
  }

  function renderAll() {
    document.documentElement.classList.add("js");
    return Promise.all(Array.prototype.map.call(document.querySelectorAll(".chart[data-figure]"), render))
      .then(function () { document.documentElement.setAttribute("data-figures", "rendered"); });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", renderAll);
  else renderAll();
  dark.addEventListener("change", function () {
    document.querySelectorAll(".chart[data-figure]").forEach(function (el) {
      if (el._view) el._view.finalize();
      el.innerHTML = "";
      render(el);
    });
  });
})();
