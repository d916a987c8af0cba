// The console: chat with the CoE, watch the experts, route a prompt, chart the last minutes.
// Plain JavaScript against the server's own routes; the keys a user types stay in this tab
// (sessionStorage) and go with every call.
"use strict";

const $ = sel => document.querySelector(sel);
const keys = {api: sessionStorage.getItem("coeflow.apiKey") || "", admin: sessionStorage.getItem("coeflow.adminKey") || ""};
let askingFor = null;  // "api" or "admin" while the key form is shown
const timers = {};

class NeedsKey extends Error {}

async function call(path, options = {}, admin = false) {
  const headers = {"Content-Type": "application/json", ...(options.headers || {})};
  const key = admin && keys.admin ? keys.admin : keys.api;
  if (key) headers.Authorization = `Bearer ${key}`;
  const r = await fetch(path, {...options, headers});
  if (r.status === 401) {
    askKey(admin && !keys.admin ? "admin" : "api", (await r.json()).error.message);
    throw new NeedsKey("a key is needed");
  }
  return r;
}

async function json(path, options = {}, admin = false) {
  const r = await call(path, options, admin);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.message : `HTTP ${r.status}`);
  return body;
}

function askKey(which, why) {
  askingFor = which;
  $("#key-label").textContent = which === "admin" ? "Admin key" : "API key";
  $("#key-why").textContent = why;
  $("#key-form").hidden = false;
  $("#key-input").focus();
}

$("#key-form").addEventListener("submit", ev => {
  ev.preventDefault();
  const value = $("#key-input").value.trim();
  keys[askingFor] = value;
  sessionStorage.setItem(askingFor === "admin" ? "coeflow.adminKey" : "coeflow.apiKey", value);
  $("#key-input").value = "";
  $("#key-form").hidden = true;
  start();
});

// -- tabs: click, or the arrow keys on the tab list -------------------------------------
const tabs = [...document.querySelectorAll('[role="tab"]')];
function show(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", on);
    t.tabIndex = on ? 0 : -1;
    $("#" + t.getAttribute("aria-controls")).hidden = !on;
  }
  for (const id of Object.keys(timers)) { clearInterval(timers[id]); delete timers[id]; }
  const view = tab.getAttribute("aria-controls");
  if (view === "view-experts") poll("experts", refreshExperts, 2000);
  if (view === "view-charts") poll("charts", refreshCharts, 5000);
}
function poll(id, fn, ms) { fn(); timers[id] = setInterval(fn, ms); }
tabs.forEach((t, i) => {
  t.addEventListener("click", () => show(t));
  t.addEventListener("keydown", ev => {
    const step = {ArrowRight: 1, ArrowLeft: -1}[ev.key];
    if (step) { const next = tabs[(i + step + tabs.length) % tabs.length]; next.focus(); show(next); }
  });
});

// -- chat --------------------------------------------------------------------------------
const history = [];

function bubble(role, text) {
  const li = document.createElement("li");
  li.className = role;
  const who = document.createElement("div");
  who.className = "label";
  who.textContent = role === "user" ? "you" : "assistant";
  const body = document.createElement("p");
  body.className = "text";
  body.textContent = text;
  li.append(who, body);
  $("#messages").append(li);
  return {li, who, body};
}

function describe(info, ttft) {
  const parts = [];
  if (info.routed) {
    parts.push(`router ${info.confidence === null ? "-" : info.confidence.toFixed(2)}` + (info.fell_back ? " (fell back)" : ""));
    const others = (info.candidates || []).filter(([e]) => e !== info.expert).slice(0, 2);
    if (others.length) parts.push("then " + others.map(([e, p]) => `${e} ${p.toFixed(2)}`).join(", "));
  } else {
    parts.push("named");
  }
  parts.push(`was in ${info.source_tier}`);
  if (info.source_tier !== "device") parts.push(`switch ${(info.switch_s * 1000).toFixed(0)} ms`);
  if (ttft !== null) parts.push(`TTFT ${(ttft * 1000).toFixed(0)} ms`);
  const name = document.createElement("strong");
  name.className = "expert";
  name.textContent = info.expert;
  return [name, " · " + parts.join(" · ")];
}

async function send(text) {
  history.push({role: "user", content: text});
  bubble("user", text);
  const out = bubble("assistant", "");
  out.li.setAttribute("aria-busy", "true");
  $("#chat-send").disabled = true;
  const started = performance.now();
  let info = null, ttft = null, answer = "";
  try {
    const r = await call("/v1/chat/completions", {method: "POST", body: JSON.stringify({
      model: $("#chat-model").value, messages: history, stream: true,
      max_tokens: Number($("#chat-max").value) || 64})});
    if (!r.ok) throw new Error((await r.json()).error.message);
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const chunk = JSON.parse(line.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.coeflow) info = chunk.coeflow;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (ttft === null) ttft = (performance.now() - started) / 1000;
          answer += delta.content;
          out.body.textContent = answer;
        }
        if (info) out.who.replaceChildren(...describe(info, ttft));
      }
    }
    history.push({role: "assistant", content: answer});
  } catch (e) {
    history.pop();
    out.body.textContent = e instanceof NeedsKey ? "(a key is needed: enter it above, then send again)" : String(e.message || e);
    out.body.classList.add("error");
  } finally {
    out.li.removeAttribute("aria-busy");
    $("#chat-send").disabled = false;
  }
}

$("#chat-form").addEventListener("submit", ev => {
  ev.preventDefault();
  const text = $("#chat-input").value.trim();
  if (!text) return;
  $("#chat-input").value = "";
  send(text);
});
$("#chat-input").addEventListener("keydown", ev => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("#chat-form").requestSubmit(); }
});
$("#chat-clear").addEventListener("click", () => { history.length = 0; $("#messages").replaceChildren(); });

// -- experts -----------------------------------------------------------------------------
function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

async function act(name, action, body) {
  const status = $("#experts-status");
  status.textContent = `${action} ${name}...`;
  try {
    await json(`/v1/experts/${encodeURIComponent(name)}/${action}`, {method: "POST", body: JSON.stringify(body)}, true);
    status.textContent = `${action} ${name}: done`;
  } catch (e) {
    status.textContent = e instanceof NeedsKey ? `${action} ${name}: needs the admin key` : `${action} ${name}: ${e.message}`;
  }
  refreshExperts();
}

function button(text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

async function refreshExperts() {
  let experts, stats;
  try {
    [experts, stats] = await Promise.all([json("/v1/experts"), json("/v1/stats")]);
  } catch (e) {
    if (!(e instanceof NeedsKey)) $("#experts-status").textContent = `could not read the experts: ${e.message}`;
    return;
  }
  const rows = experts.data.map(x => {
    const use = stats.experts[x.name] || {requests: 0, tokens_per_s_1m: 0};
    const tr = document.createElement("tr");
    tr.dataset.expert = x.name;
    const cells = [x.name, x.tier, x.state, bytes(x.bytes), x.dtype || "-", x.pinned ? "yes" : "no",
                   String(use.requests), use.tokens_per_s_1m.toFixed(1), String(x.queued)];
    cells.forEach((c, i) => {
      const td = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) td.scope = "row";
      td.textContent = c;
      if (i === 1) td.className = `tier tier-${x.tier}`;
      if (i >= 6) td.classList.add("num");
      if (i === 2 && x.error) td.title = x.error;
      tr.append(td);
    });
    const actions = document.createElement("td");
    actions.className = "actions";
    actions.append(
      button(x.pinned ? "Unpin" : "Pin", `${x.pinned ? "Unpin" : "Pin"} ${x.name}`, () => act(x.name, "pin", {pinned: !x.pinned})),
      button("Load", `Load ${x.name} to the device`, () => act(x.name, "load", {tier: "device"})),
      button("Unload", `Unload ${x.name} to disk`, () => act(x.name, "unload", {})));
    tr.append(actions);
    return tr;
  });
  // keep the focused button's place across the refresh
  const focused = document.activeElement && document.activeElement.getAttribute("aria-label");
  $("#experts-table tbody").replaceChildren(...rows);
  if (focused) { const again = document.querySelector(`#experts-table [aria-label="${CSS.escape(focused)}"]`); if (again) again.focus(); }
}

// -- routing explorer -----------------------------------------------------------------------
$("#route-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const out = $("#route-result");
  const prompt = $("#route-input").value;
  try {
    const d = await json("/v1/route", {method: "POST", body: JSON.stringify({prompt})});
    const head = document.createElement("p");
    head.id = "route-decision";
    head.textContent = d.fell_back
      ? `-> ${d.expert} (fallback): ${d.reason}; the router's top choice was ${d.top} at ${d.confidence.toFixed(3)}, below ${d.threshold.toFixed(2)}`
      : `-> ${d.expert}, confidence ${d.confidence.toFixed(3)} (threshold ${d.threshold.toFixed(2)})`;
    const grid = document.createElement("div");
    grid.className = "scores";
    grid.setAttribute("role", "list");
    grid.setAttribute("aria-label", "every expert's score");
    for (const c of d.candidates) {
      const name = document.createElement("span");
      name.textContent = c.expert;
      name.setAttribute("role", "listitem");
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${Math.max(0.5, c.score * 100)}%`;
      bar.setAttribute("aria-hidden", "true");
      const value = document.createElement("span");
      value.className = "score";
      value.textContent = c.score.toFixed(3);
      grid.append(name, bar, value);
    }
    out.replaceChildren(head, grid);
  } catch (e) {
    out.textContent = e instanceof NeedsKey ? "a key is needed" : e.message;
  }
});

// -- charts ----------------------------------------------------------------------------------
async function refreshCharts() {
  let s;
  try { s = await json("/v1/stats"); } catch (e) { return; }
  const step = s.step_s, series = s.series;
  CoeChart.draw($("#chart-rps"), "Requests per second", [{name: "req/s", color: "#0b5cad", values: series.requests_per_s}], step);
  CoeChart.draw($("#chart-ttft"), "Time to first token", [
    {name: "p50", color: "#0b5cad", values: series.ttft_p50}, {name: "p99", color: "#a4161a", values: series.ttft_p99}], step);
  CoeChart.draw($("#chart-tpot"), "Time per output token", [
    {name: "p50", color: "#0b5cad", values: series.tpot_p50}, {name: "p99", color: "#a4161a", values: series.tpot_p99}], step);
  CoeChart.draw($("#chart-switches"), "Switches per second", [
    {name: "from host", color: "#0b5cad", values: series.switches_per_s.host},
    {name: "from disk", color: "#a4161a", values: series.switches_per_s.disk}], step);
  CoeChart.draw($("#chart-hits"), "Device tier hit rate", [{name: "hit rate", color: "#1d6b33", values: series.device_hit_rate}], step, 1);
}

// -- start -------------------------------------------------------------------------------------
async function start() {
  try {
    const models = await json("/v1/models");
    const select = $("#chat-model");
    select.replaceChildren(...models.data.map(m => new Option(m.id === "coe" ? "coe (routed)" : m.id, m.id)));
    $("#coe-name").textContent = `${models.data.filter(m => m.id !== "coe").length} experts`;
  } catch (e) {
    if (!(e instanceof NeedsKey)) $("#coe-name").textContent = `(cannot reach the server: ${e.message})`;
  }
  show(tabs.find(t => t.getAttribute("aria-selected") === "true"));
}
start();
