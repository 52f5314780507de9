// The live page of a reprise dispatcher: follows GET /events (a frame and the new
// per-second rows each second) and steers the job through the admin API. Every figure
// comes from the dispatcher (percentiles read off its merged histograms); the page only
// draws. Text from the recording (endpoint names, samples) is set as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const ROWS_KEPT = 600;
let rows = [];
let frame = null;
let sort = { key: "requests", up: false };
let events = null;
let jobsTimer = null;

const fmt = (n, digits = 0) =>
  n == null || Number.isNaN(n) ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const ms = (n) => (n == null ? "–" : n < 10 ? fmt(n, 2) : n < 100 ? fmt(n, 1) : fmt(n, 0));
const pct = (r) => (r == null ? "–" : fmt(r * 100, 2) + "%");

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = el("tr");
  for (const [text, cls] of cells) tr.append(el("td", text, cls));
  return tr;
}

async function start() {
  const r = await fetch("/session", { credentials: "same-origin" }).catch(() => null);
  if (!r || !r.ok) {
    $("connection").textContent = "cannot reach the dispatcher; retrying";
    return setTimeout(start, 2000);
  }
  const s = await r.json();
  if (!s.signed_in) return showLogin();
  if (s.standing) {
    $("runs").hidden = false;
    refreshJobs();
    if (!jobsTimer) jobsTimer = setInterval(refreshJobs, 2000);
  }
  $("logout-holder")?.remove();
  if (s.token_required) addLogout();
  connect();
}

function showLogin() {
  $("room").hidden = true;
  $("login").hidden = false;
  $("state").textContent = "signed out";
  $("token").focus();
}

function addLogout() {
  const b = el("button", "Sign out");
  b.type = "button";
  b.id = "logout-holder";
  b.addEventListener("click", async () => {
    await fetch("/logout", { method: "POST" });
    if (events) events.close();
    showLogin();
  });
  document.querySelector("header").append(b);
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  const r = await fetch("/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  }).catch(() => null);
  if (r && r.ok) {
    $("token").value = "";
    $("login").hidden = true;
    return start();
  }
  $("login-error").textContent = r && r.status === 401 ? "Wrong token." : "The dispatcher did not answer.";
});

function connect() {
  if (events) events.close();
  events = new EventSource("/events");
  events.onopen = () => ($("connection").textContent = "");
  events.onmessage = (e) => {
    const data = JSON.parse(e.data);
    const last = rows.length ? rows[rows.length - 1].second : -1;
    for (const r of data.rows) if (r.second > last) rows.push(r);
    if (rows.length > ROWS_KEPT) rows = rows.slice(rows.length - ROWS_KEPT);
    $("login").hidden = true;
    $("room").hidden = false;
    if (!data.frame) {
      // A standing dispatcher before its first job.
      $("state").textContent = "idle";
      $("state").className = "badge waiting";
      $("progress").textContent = "No job yet: submit one below, or with POST /jobs.";
      return;
    }
    if (frame && frame.job !== data.frame.job) rows = data.rows.slice();
    frame = data.frame;
    render();
  };
  events.onerror = () => {
    $("connection").textContent = "connection lost; reconnecting";
    // A closed stream is not retried by the browser (e.g. the session ended): ask again.
    if (events.readyState === EventSource.CLOSED) setTimeout(start, 2000);
  };
}

function render() {
  const f = frame;
  $("job").textContent = f.job;
  const state = f.aborted_by ? "aborted" : f.state;
  $("state").textContent = state;
  $("state").className = "badge " + state;
  const t = f.totals;
  $("sent").textContent = fmt(t.sent);
  $("ok").textContent = fmt(t.ok);
  $("failed").textContent = fmt(t.failed);
  $("dropped").textContent = fmt(t.dropped_total);
  $("inflight").textContent = fmt(f.in_flight);
  $("rps").textContent = rows.length ? fmt(rows[rows.length - 1].requests) : "0";
  $("p99").textContent = ms(f.total.requests ? f.total.p99_ms : null);
  $("diff").textContent = f.compare ? pct(f.compare.diff_rate) : "–";
  $("window-diff").textContent = pct(f.total.window_diff_rate);
  const pace = f.elapsed_s > 0 ? ` (${fmt(f.progress_s / f.elapsed_s, 2)}× recorded time)` : "";
  $("progress").textContent = `${fmt(f.progress_s, 1)} s of the recording replayed in ${fmt(f.elapsed_s, 1)} s${pace}`;
  $("settings").textContent = settingsText(f.settings);
  $("pause").disabled = f.settings.paused || over(f);
  $("resume").disabled = !f.settings.paused || over(f);
  $("stop").disabled = $("apply").disabled = over(f);
  renderEndpoints();
  renderErrors(f);
  renderFleet(f);
  renderThresholds(f);
  $("accounting").textContent = f.accounting;
  const s = f.source;
  $("source").textContent = s.kind
    ? `source ${s.kind}: ${s.parts_done} of ${s.parts} ${s.unit}s read, ${s.parts_failed} failed, ${fmt(s.bytes)} bytes, ${fmt(s.records)} records` +
      (s.lag_s != null ? `, ${fmt(s.lag_s, 1)} s behind real time` : "") +
      s.failed.map((p) => `; not read: ${p.part}: ${p.reason}`).join("")
    : "";
  chart($("chart-rps"), [
    ["ok", (r) => r.ok],
    ["bad", (r) => r.failed],
  ]);
  const when = (key) => (r) => (r.requests ? r[key] : null);
  chart($("chart-latency"), [
    ["p50", when("p50_ms")],
    ["p95", when("p95_ms")],
    ["p99", when("p99_ms")],
    ["lag", when("lag_p99_ms")],
  ]);
  $("diff-figure").hidden = !f.compare;
  if (f.compare) {
    $("window-length").textContent = `${fmt(f.compare.window_s)} s`;
    $("window-diff-label").textContent = `diff rate (last ${fmt(f.compare.window_s)} s)`;
    // A window without comparisons breaks the line: no answer is not agreement.
    const rate = (w) => (w.total.compared ? (100 * w.total.differing) / w.total.compared : null);
    chart($("chart-diff"), [["bad", rate]], f.compare.windows, `${f.compare.windows.length} windows`);
  }
}

const over = (f) => f.state === "finished" || f.state === "stopped";

function settingsText(s) {
  const pace = s.qps != null ? `${fmt(s.qps, 1)} requests/s` : s.speed === "max" ? "speed max" : `speed ${s.speed}×`;
  return `${pace} · rate ${s.rate}${s.paused ? " · paused" : ""}`;
}

function renderEndpoints() {
  const f = frame;
  const needle = $("filter").value.trim().toLowerCase();
  const list = f.endpoints
    .map((e) => ({ ...e, error_rate: e.requests ? e.failed / e.requests : 0 }))
    .filter((e) => !needle || e.endpoint.toLowerCase().includes(needle));
  const k = sort.key;
  list.sort((a, b) => {
    const x = a[k] ?? -1, y = b[k] ?? -1;
    const c = typeof x === "string" ? x.localeCompare(y) : x - y;
    return sort.up ? c : -c;
  });
  const body = document.querySelector("#endpoints tbody");
  const out = list.map((e) => endpointRow(e));
  out.push(endpointRow({ ...f.total, endpoint: "all endpoints", error_rate: f.total.requests ? f.total.failed / f.total.requests : 0 }));
  body.replaceChildren(...out);
  const more = f.endpoint_count - f.endpoints.length;
  $("endpoint-count").textContent = `${f.endpoint_count}` + (more > 0 ? ` (the ${f.endpoints.length} busiest shown; the reports list all)` : "");
  for (const th of document.querySelectorAll("#endpoints th")) {
    th.classList.toggle("sorted", th.dataset.key === sort.key);
    th.classList.toggle("up", th.dataset.key === sort.key && sort.up);
  }
}

function endpointRow(e) {
  const tr = row([
    [e.endpoint, "name"],
    [fmt(e.requests), "num"],
    [fmt(e.rps, 1), "num"],
    [fmt(e.failed), "num err"],
    [fmt(e.error_rate * 100, 2), "num err"],
    [ms(e.p50_ms), "num"],
    [ms(e.p95_ms), "num"],
    [ms(e.p99_ms), "num"],
    [ms(e.lag_p99_ms), "num"],
    [pct(e.diff_rate), "num"],
    [pct(e.window_diff_rate), "num"],
  ]);
  if (e.failed > 0) tr.className = "bad";
  return tr;
}

function renderErrors(f) {
  const box = $("errors");
  const parts = [];
  if (f.errors.length) {
    const ul = el("ul");
    for (const e of f.errors) {
      const where = e.endpoints.map(([name, n]) => `${name} (${fmt(n)})`).join(", ");
      const li = el("li", `${e.kind}: ${fmt(e.count)}, most on ${where}`);
      if (e.sample) li.append(el("div", `latest: ${e.sample.message} (${e.sample.replayer})`, "mono"));
      ul.append(li);
    }
    parts.push(ul);
  }
  const classes = f.total.status_class || {};
  const bad = Object.entries(classes).filter(([c]) => c === "4xx" || c === "5xx");
  if (bad.length) parts.push(el("p", "answers " + bad.map(([c, n]) => `${c}: ${fmt(n)}`).join(", ")));
  if (f.input_samples.length) {
    parts.push(el("p", "Malformed input (the first of each reason; secrets redacted):"));
    const ul = el("ul", null, "mono");
    for (const s of f.input_samples) ul.append(el("li", `${s.reason} at ${s.source}:${s.unit}: ${s.detail}: ${s.sample}`));
    parts.push(ul);
  }
  if (!parts.length) parts.push(document.createTextNode("none"));
  box.replaceChildren(...parts);
}

function renderFleet(f) {
  const body = document.querySelector("#fleet tbody");
  body.replaceChildren(
    ...f.replayers.map((r) =>
      row([
        [r.id],
        [r.target || "job's target"],
        [r.left ? `${r.state}: ${r.left}` : r.state],
        [ms(r.lag_p99_ms), "num"],
        [fmt(r.in_flight), "num"],
        [fmt(r.sent), "num"],
      ]),
    ),
  );
}

function renderThresholds(f) {
  const box = $("thresholds");
  if (!f.thresholds.length) return box.replaceChildren(document.createTextNode("none set"));
  const ul = el("ul");
  for (const v of f.thresholds) {
    const li = el("li");
    li.append(el("span", v.pass ? "pass " : "FAIL ", v.pass ? "pass" : "fail"));
    const measured = v.measured == null ? "no requests" : `${fmt(v.measured, 2)} ${v.unit}`;
    li.append(document.createTextNode(`${v.endpoint}: ${v.expression} (measured ${measured})`));
    ul.append(li);
  }
  if (f.aborted_by) ul.append(el("li", `stopped early by ${f.aborted_by}`, "fail"));
  box.replaceChildren(ul);
}

/// Lines over the kept seconds (or other `data` rows), scaled to the highest value (shown in
/// the caption). A series whose value is null for a row (latency of a second without
/// requests) breaks its line there instead of drawing a zero.
function chart(svg, series, data = rows, span = `${rows.length} s`) {
  const W = 600, H = 160;
  const max = Math.max(1e-9, ...data.flatMap((r) => series.map(([, f]) => f(r) || 0)));
  const n = Math.max(data.length - 1, 1);
  const ns = "http://www.w3.org/2000/svg";
  const axis = document.createElementNS(ns, "line");
  for (const [k, v] of Object.entries({ x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: "axis" })) axis.setAttribute(k, v);
  const out = [axis];
  for (const [name, f] of series) {
    let points = [];
    const flush = () => {
      if (points.length) {
        const p = document.createElementNS(ns, "polyline");
        p.setAttribute("points", points.join(" "));
        p.setAttribute("class", name);
        out.push(p);
      }
      points = [];
    };
    data.forEach((r, i) => {
      const v = f(r);
      if (v == null) return flush();
      points.push(`${((i * W) / n).toFixed(1)},${(H - (v * (H - 4)) / max).toFixed(1)}`);
    });
    flush();
  }
  svg.replaceChildren(...out);
  const cap = svg.previousElementSibling;
  let top = cap.querySelector(".top");
  if (!top) cap.append((top = el("span", null, "top muted")));
  top.textContent = ` · top ${max >= 100 ? fmt(max) : fmt(max, 2)}, last ${span}`;
}

async function refreshJobs() {
  const r = await fetch("/jobs").catch(() => null);
  if (!r || !r.ok) return;
  const { jobs } = await r.json();
  const body = document.querySelector("#jobs tbody");
  const picked = (name) => document.querySelector(`input[name=${name}]:checked`)?.value;
  const base = picked("base"), candidate = picked("candidate");
  body.replaceChildren(
    ...jobs.map((j) => {
      const tr = row([
        [j.id],
        [j.name],
        [j.error ? `${j.state}: ${j.error}` : j.state],
        [fmt(j.sent), "num"],
        [fmt(j.failed), "num"],
        [j.thresholds_passed == null ? "" : j.thresholds_passed ? "passed" : "FAILED", j.thresholds_passed === false ? "fail" : ""],
      ]);
      const links = el("td");
      for (const [text, href] of [["JSON", j.report_json], ["HTML", j.report_html]]) {
        if (!href) continue;
        const a = el("a", text);
        a.href = href;
        links.append(a, document.createTextNode(" "));
      }
      tr.append(links);
      for (const name of ["base", "candidate"]) {
        const td = el("td");
        if (j.report_json) {
          const radio = el("input");
          radio.type = "radio";
          radio.name = name;
          radio.value = j.id;
          radio.checked = (name === "base" ? base : candidate) === j.id;
          radio.setAttribute("aria-label", `${name}: run ${j.id}`);
          td.append(radio);
        }
        tr.append(td);
      }
      return tr;
    }),
  );
}

$("compare").addEventListener("click", async () => {
  const picked = (name) => document.querySelector(`input[name=${name}]:checked`)?.value;
  const base = picked("base"), candidate = picked("candidate");
  const out = $("diff-out");
  if (!base || !candidate) return out.replaceChildren(el("p", "Pick a base run and a candidate run.", "error"));
  const r = await fetch(`/jobs/${encodeURIComponent(base)}/diff/${encodeURIComponent(candidate)}`).catch(() => null);
  if (!r || !r.ok) return out.replaceChildren(el("p", `Cannot compare: ${r ? r.status : "no answer"}`, "error"));
  const d = await r.json();
  const table = el("table");
  table.id = "diff";
  const head = el("tr");
  for (const h of ["endpoint", "requests", "error %", "p50 ms", "p99 ms", "diff %"]) head.append(el("th", h));
  table.append(head);
  const pair = (r, f) => `${r.base ? f(r.base) : "–"} → ${r.candidate ? f(r.candidate) : "–"}`;
  const change = (c) => (c == null ? "" : ` (${c >= 0 ? "+" : ""}${fmt(c, 1)}%)`);
  const dir = (c) => (c == null || Math.abs(c) < 5 ? "num" : c > 0 ? "num up" : "num down");
  for (const r of d.rows) {
    table.append(
      row([
        [r.endpoint === "*" ? "all endpoints" : r.endpoint, "name"],
        [pair(r, (s) => fmt(s.requests)), "num"],
        [pair(r, (s) => fmt(s.error_rate_pct, 2)), "num"],
        [pair(r, (s) => ms(s.p50_ms)) + change(r.p50_change_pct), dir(r.p50_change_pct)],
        [pair(r, (s) => ms(s.p99_ms)) + change(r.p99_change_pct), dir(r.p99_change_pct)],
        [r.diff_rate_pct == null ? "–" : fmt(r.diff_rate_pct, 2), "num"],
      ]),
    );
  }
  out.replaceChildren(el("p", `${d.base} → ${d.candidate}`, "muted"), table);
});

$("submit").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("submit-out");
  const r = await fetch("/jobs", { method: "POST", headers: { "content-type": "text/plain" }, body: $("job-file").value }).catch(() => null);
  if (!r) return out.replaceChildren(el("p", "The dispatcher did not answer.", "error"));
  const body = await r.json().catch(() => ({}));
  if (r.status === 201) {
    out.replaceChildren(el("p", `Queued as run ${body.id} (${body.name}).`));
    refreshJobs();
  } else if (r.status === 422) {
    const ul = el("ul", null, "error");
    for (const p of body.problems || []) ul.append(el("li", `${p.key || "file"}: ${p.value ? p.value + ": " : ""}${p.rule}`));
    out.replaceChildren(el("p", `Not queued: ${(body.problems || []).length} problem(s).`, "error"), ul);
  } else {
    out.replaceChildren(el("p", body.error || `Not queued: ${r.status}`, "error"));
  }
});

async function post(path, body) {
  $("control-error").textContent = "";
  const r = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: body == null ? "{}" : JSON.stringify(body),
  }).catch(() => null);
  if (r && r.status === 401) return showLogin();
  if (!r || !r.ok) {
    const why = r ? (await r.json().catch(() => ({}))).error || r.statusText : "no answer";
    $("control-error").textContent = `${path}: ${why}`;
    return null;
  }
  return r.json().catch(() => ({}));
}

$("pause").addEventListener("click", () => post("/job/pause"));
$("resume").addEventListener("click", () => post("/job/resume"));
$("stop").addEventListener("click", () => {
  if (confirm("Stop the job? Records not sent yet are dropped, and the report covers what ran.")) post("/job/stop");
});
$("pace").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const body = {};
  const v = $("pace-value").value.trim();
  if (v) body[$("pace-kind").value] = v === "max" ? "max" : Number(v);
  const rate = $("rate").value.trim();
  if (rate) body.rate = Number(rate);
  if (!Object.keys(body).length) return ($("control-error").textContent = "give a pace or a rate");
  post("/job/config", body);
});
$("filter").addEventListener("input", () => frame && renderEndpoints());
for (const th of document.querySelectorAll("#endpoints th")) {
  th.addEventListener("click", () => {
    sort = { key: th.dataset.key, up: sort.key === th.dataset.key ? !sort.up : th.dataset.key === "endpoint" };
    if (frame) renderEndpoints();
  });
}

start();
