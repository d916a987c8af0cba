// A small line chart in SVG, written for the console (no library to vendor): each series a
// polyline over a shared time axis, the y axis from 0 to the largest value, a legend, and an
// aria-label that reads out each series' latest value.
"use strict";

const CoeChart = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 400, H = 150, LEFT = 44, RIGHT = 8, TOP = 8, BOTTOM = 20;

  function el(name, attrs, text) {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "-";
    if (v === 0) return "0";
    if (Math.abs(v) >= 100) return v.toFixed(0);
    if (Math.abs(v) >= 1) return v.toFixed(2);
    return v.toPrecision(2);
  }

  // series: [{name, color, values: [number|null]}], one value per step of `span` seconds;
  // `ceiling`: the y axis' top when no value is above it (1 for a rate)
  function draw(container, title, series, span, ceiling = 0) {
    const n = Math.max(1, ...series.map(s => s.values.length));
    const all = series.flatMap(s => s.values.filter(v => v !== null && !Number.isNaN(v)));
    const top = (Math.max(ceiling, ...all) || 1) * 1.1;
    const x = i => LEFT + (n === 1 ? 0 : (i / (n - 1)) * (W - LEFT - RIGHT));
    const y = v => TOP + (1 - v / top) * (H - TOP - BOTTOM);
    const latest = series.map(s => `${s.name} ${fmt([...s.values].reverse().find(v => v !== null))}`).join(", ");
    const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}: latest ${latest}`});
    svg.appendChild(el("line", {x1: LEFT, y1: y(0), x2: W - RIGHT, y2: y(0), stroke: "#c9d0d7"}));
    svg.appendChild(el("line", {x1: LEFT, y1: TOP, x2: LEFT, y2: y(0), stroke: "#c9d0d7"}));
    svg.appendChild(el("text", {x: LEFT - 4, y: TOP + 10, "text-anchor": "end", "font-size": 11, fill: "#4f5863"},
                       fmt(top / 1.1)));
    svg.appendChild(el("text", {x: LEFT - 4, y: y(0), "text-anchor": "end", "font-size": 11, fill: "#4f5863"}, "0"));
    svg.appendChild(el("text", {x: LEFT, y: H - 4, "font-size": 11, fill: "#4f5863"},
                       `-${Math.round(((n - 1) * span) / 60)} min`));
    svg.appendChild(el("text", {x: W - RIGHT, y: H - 4, "text-anchor": "end", "font-size": 11, fill: "#4f5863"}, "now"));
    for (const s of series) {
      let d = "";
      s.values.forEach((v, i) => {
        if (v === null || Number.isNaN(v)) return;
        d += `${d && s.values[i - 1] !== null ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
      });
      if (d) svg.appendChild(el("path", {d, fill: "none", stroke: s.color, "stroke-width": 2}));
      s.values.forEach((v, i) => {  // a point with no neighbour would draw nothing as a line
        const alone = (i === 0 || s.values[i - 1] === null) && (i === n - 1 || s.values[i + 1] === null);
        if (v !== null && !Number.isNaN(v) && alone)
          svg.appendChild(el("circle", {cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3, fill: s.color}));
      });
    }
    const legend = document.createElement("div");
    legend.className = "legend";
    legend.textContent = series.map(s => `${s.name}: ${fmt([...s.values].reverse().find(v => v !== null))}`).join("   ");
    container.replaceChildren(svg, legend);
  }

  return {draw, fmt};
})();
