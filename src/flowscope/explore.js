// The explorer's page logic: every panel is redrawn from the embedded JSON with
// Plotly.react; window.flowscopeExplorer exposes the state for tests.
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("explorer-data").textContent);
  var E = { data: D, cls: 0, dt: 0, probe: null, click: null, redrawMs: [],
            step: { flow: 0, inverse: 0, densities: 0, guidance: 0 } };
  window.flowscopeExplorer = E;
  var CONFIG = { displayModeBar: false, responsive: true };
  var PALETTE = ["#222222", "#1f77b4", "#2ca02c", "#d62728", "#e6b800", "#9467bd", "#8c564b"];
  function C() { return D.per_class[E.cls]; }
  function color() { return D.classes ? PALETTE[E.cls % PALETTE.length] : "#1f77b4"; }
  // Equal aspect where the two spans are comparable (the plots' rule, COMPARABLE_SPANS);
  // data of unlike scales (minutes against tens of minutes) fill the panel instead.
  function comparable(region) {
    var a = region[0][1] - region[0][0], b = region[1][1] - region[1][0];
    return Math.max(a, b) <= D.comparable_spans * Math.min(a, b);
  }
  function layout(title, region) {
    var l = { title: { text: title, font: { size: 13 } }, margin: { l: 40, r: 10, t: 30, b: 30 },
              showlegend: false, hovermode: "closest",
              xaxis: { zeroline: false }, yaxis: { zeroline: false } };
    if (region) { l.xaxis.range = region[0]; l.yaxis.range = region[1]; }
    var shape = region || C().region;  // a panel without a range of its own: the data's
    if (!shape || comparable(shape)) l.yaxis.scaleanchor = "x";
    return l;
  }
  function dots(xy, c, size, opacity) {
    return { type: "scatter", mode: "markers", x: xy[0], y: xy[1], hoverinfo: "skip",
             marker: { size: size, color: c, opacity: opacity } };
  }
  function react(id, traces, lay) {
    var t0 = performance.now();
    Plotly.react(id, traces, lay, CONFIG);
    var ms = performance.now() - t0;
    E.redrawMs.push({ panel: id, ms: ms });
    return ms;
  }
  function regionOf(xy) {
    var r = [[Infinity, -Infinity], [Infinity, -Infinity]];
    for (var a = 0; a < 2; a++) for (var i = 0; i < xy[a].length; i++) {
      var v = xy[a][i]; if (v < r[a][0]) r[a][0] = v; if (v > r[a][1]) r[a][1] = v;
    }
    for (a = 0; a < 2; a++) { var p = 0.08 * (r[a][1] - r[a][0]) + 1e-6; r[a][0] -= p; r[a][1] += p; }
    return r;
  }
  // The colour range: the top 20 nats, so that a few far, very unlikely cells do not
  // flatten the rest (colder cells show the bottom colour).
  function heat(g) {
    var hi = -Infinity, lo = Infinity;
    for (var i = 0; i < g.z.length; i++) for (var j = 0; j < g.z[i].length; j++) {
      var v = g.z[i][j]; if (v === null) continue; if (v > hi) hi = v; if (v < lo) lo = v;
    }
    return { type: "heatmap", x: g.x, y: g.y, z: g.z, colorscale: "Viridis", zmax: hi,
             zmin: Math.max(lo, hi - 20), colorbar: { title: { text: "log p" }, thickness: 12 } };
  }
  var draw = {
    flow: function () {
      var k = E.step.flow, c = C(), traces = [dots(c.gen[k], color(), 3, 0.6)];
      if (c.arrows) traces.push({ type: "scatter", mode: "lines", x: c.arrows[k].x, y: c.arrows[k].y,
        hoverinfo: "skip", line: { color: "#d62728", width: 1 } });
      document.getElementById("flow-label").textContent = c.gen_labels[k];
      return react("flow", traces, layout(c.gen_labels[k], regionOf(c.gen[k])));
    },
    inverse: function () {
      var k = E.step.inverse, c = C();
      document.getElementById("inverse-label").textContent = c.inv_labels[k];
      return react("inverse", [dots(c.inv[k], "#555", 3, 0.6)], layout(c.inv_labels[k], regionOf(c.inv[k])));
    },
    densities: function () {
      var k = E.step.densities, c = C(), g = c.densities[k];
      document.getElementById("densities-label").textContent = c.gen_labels[k];
      return react("densities", [heat(g)],
        layout("log p of the state, " + c.gen_labels[k], [[g.x[0], g.x[g.x.length - 1]], [g.y[0], g.y[g.y.length - 1]]]));
    },
    density: function () {
      var c = C(), g = c.density, traces = [heat(g), dots(c.data, "rgba(255,255,255,0.5)", 2, 0.5)];
      if (E.probe !== null) {
        var p = c.probes.items[E.probe], tr = p.trajectory;
        traces.push({ type: "scatter", mode: "markers", x: [p.x[0]], y: [p.x[1]], hoverinfo: "skip",
          marker: { size: 11, color: "#ff3333", line: { color: "white", width: 2 } } });
      }
      return react("density", traces, layout("log p(x)" + (D.classes ? " given " + D.classes[E.cls] : ""), c.region));
    },
    point: function () {
      var c = C(), which = document.getElementById("point-which"), table = document.getElementById("point-terms");
      if (E.probe === null) {
        which.textContent = "Click the density panel to pick a point.";
        table.innerHTML = "";
        return react("point", [], layout("", null));
      }
      var p = c.probes.items[E.probe], tr = p.trajectory, xs = [], ys = [];
      for (var i = 0; i < tr.length; i++) { xs.push(tr[i][0]); ys.push(tr[i][1]); }
      var click = E.click ? " (the nearest precomputed point to your click at (" + E.click[0].toFixed(3) + ", " + E.click[1].toFixed(3) + "))" : "";
      var what = p.name !== undefined ? "point " + p.name : "probe point #" + E.probe;
      which.textContent = "Showing " + what + " at x = (" + p.x[0].toFixed(4) + ", " + p.x[1].toFixed(4) + ")" + click + ".";
      var rows = [["log p(x) (" + D.likelihood + ")", p.log_prob]];
      var sum = 0;
      for (i = 0; i < p.terms.length; i++) { rows.push(p.terms[i]); sum += p.terms[i][1]; }
      rows.push(["sum of the terms", sum]);
      rows.push(["latent z (in N(0, I) units; drawn above in data units)", "(" + p.z[0].toFixed(5) + ", " + p.z[1].toFixed(5) + ")"]);
      table.innerHTML = rows.map(function (r) {
        var v = typeof r[1] === "number" ? r[1].toFixed(6) : r[1];
        return "<tr><td>" + r[0] + "</td><td class='v'>" + v + "</td></tr>";
      }).join("");
      return react("point", [
        { type: "scatter", mode: "lines+markers", x: xs, y: ys, text: c.inv_labels, hoverinfo: "text+x+y",
          marker: { size: 5, color: "#d62728" }, line: { color: "#d62728" } },
        { type: "scatter", mode: "markers+text", x: [xs[0], xs[xs.length - 1]], y: [ys[0], ys[ys.length - 1]],
          text: ["x", "z"], textposition: "top center", hoverinfo: "skip", marker: { size: 9, color: "#222" } }],
        layout("trajectory (data units): " + c.inv_labels[0] + " to " + c.inv_labels[c.inv_labels.length - 1], null));
    },
    guidance: function () {
      if (!C().guided) return 0;
      var s = C().guided[E.step.guidance];
      document.getElementById("guidance-label").textContent = "w = " + s.w;
      return react("guidance", [dots(s.points, color(), 3, 0.6)], layout("samples, guidance w = " + s.w, C().region));
    },
    dt: function () {
      if (!C().dts) return 0;
      var s = C().dts[E.dt];
      return react("dt", [dots(s.points, color(), 3, 0.6)], layout("samples, Euler dt = " + s.dt, C().region));
    },
  };
  E.draw = draw;
  function redrawAll() { for (var k in draw) draw[k](); }
  E.setStep = function (name, k) {
    E.step[name] = k;
    document.getElementById(name + "-step").value = k;
    return draw[name]();
  };
  E.pick = function (x, y) {
    var items = C().probes.items, best = 0, bd = Infinity;
    for (var i = 0; i < items.length; i++) {
      var dx = items[i].x[0] - x, dy = items[i].x[1] - y, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = i; }
    }
    E.probe = best; E.click = [x, y];
    draw.density(); draw.point();
    return best;
  };
  E.pickNamed = function (name) {  // one of the named points (e.g. the report's probes), exactly
    var items = C().probes.items;
    for (var i = 0; i < items.length; i++) if (items[i].name === name) { E.probe = i; E.click = null; }
    draw.density(); draw.point();
    return E.probe;
  };
  E.setClass = function (c) { E.cls = c; redrawAll(); };
  E.setDt = function (i) { E.dt = i; draw.dt(); };
  function controls() {
    var box = document.getElementById("controls"), html = "";
    if (D.classes) html += "<label>class <select id='class-select'>" + D.classes.map(function (n, i) {
      return "<option value='" + i + "'>" + n + "</option>"; }).join("") + "</select></label>";
    if (D.ode) html += "<label>sampler step dt <select id='dt-select'>" + C().dts.map(function (s, i) {
      return "<option value='" + i + "'>" + s.dt + "</option>"; }).join("") + "</select></label>";
    var named = C().probes.items.filter(function (p) { return p.name !== undefined; });
    if (named.length) html += "<label>point <select id='point-select'><option value=''>(click the density)</option>" +
      named.map(function (p) { return "<option value='" + p.name + "'>" + p.name + " (" + p.x[0].toFixed(2) + ", " + p.x[1].toFixed(2) + ")</option>"; }).join("") + "</select></label>";
    html += "<span class='note'>model type: " + D.type + "</span>";
    box.innerHTML = html;
    if (named.length) document.getElementById("point-select").addEventListener("change", function (e) { if (e.target.value) E.pickNamed(e.target.value); });
    if (D.classes) document.getElementById("class-select").addEventListener("change", function (e) { E.setClass(+e.target.value); });
    if (D.ode) {
      document.getElementById("dt-panel").hidden = false;
      document.getElementById("dt-select").addEventListener("change", function (e) { E.setDt(+e.target.value); });
    }
  }
  function slider(name, count) {
    var s = document.getElementById(name + "-step"), timer = null, btn = document.getElementById(name + "-play");
    s.max = count - 1;
    s.addEventListener("input", function () { E.setStep(name, +s.value); });
    btn.addEventListener("click", function () {
      if (timer) { clearInterval(timer); timer = null; btn.textContent = "play"; return; }
      btn.textContent = "pause";
      if (E.step[name] >= count - 1) E.setStep(name, 0);
      timer = setInterval(function () {
        if (E.step[name] >= count - 1) { clearInterval(timer); timer = null; btn.textContent = "play"; return; }
        E.setStep(name, E.step[name] + 1);
      }, 350);
    });
  }
  controls();
  slider("flow", C().gen.length);
  slider("inverse", C().inv.length);
  slider("densities", C().densities.length);
  if (C().guided) {
    document.getElementById("guidance-panel").hidden = false;
    slider("guidance", C().guided.length);
    E.step.guidance = C().guided.map(function (s) { return s.w; }).indexOf(1);  // the plain model first
    document.getElementById("guidance-step").value = E.step.guidance;
  }
  document.getElementById("flow-note").textContent = (D.ode ?
    "Red arrows: the velocity v(x, t) at that time, in data units per unit time (lengths scaled to fit)." :
    "Each step is one state of the model's trajectory.") +
    " Every state is drawn in data units, as the model's standardization maps it back: the " +
    (D.ode ? "noise (t = 0)" : "latent z") + " as mean + scale \u00d7 z, so it spreads as the data do, " +
    "not as N(0, I).";
  document.getElementById("densities-note").textContent = "Computed by " + D.density_note + ".";
  document.getElementById("density-note").textContent = "White dots: the data. Log-density: " + D.likelihood + " (colours span the top 20 nats)" +
    "; a click snaps to the nearest of " + C().probes.items.length + " precomputed probe points.";
  redrawAll();
  document.getElementById("density").on("plotly_click", function (ev) {
    if (ev.points && ev.points.length) E.pick(ev.points[0].x, ev.points[0].y);
  });
  E.ready = true;
})();
