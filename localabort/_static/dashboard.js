// The localabort dashboard: follows the store's snapshots (server-sent events) and asks for aborts.
// Every value from the store is set as text (textContent), never as HTML.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const STATES = ["PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "ABORTED"];
const UNFINISHED = new Set(["PENDING", "RECEIVED", "STARTED", "RETRY"]);
const view = { state: "", name: "", executor: "", cursors: [null] };
let source = null;
let skew = 0; // the server's clock minus this browser's, in seconds
let snap = null;
let selected = null;
let detailAsked = 0;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const now = () => Date.now() / 1000 + skew;
const short = (id) => (id.length > 8 ? id.slice(-8) : id);
const NUMBER = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 }); // one formatter: making one is slow
const number = (n) => NUMBER.format(n);

function duration(seconds) {
  if (!isFinite(seconds) || seconds < 0) return "";
  seconds = Math.round(seconds);
  if (seconds < 60) return seconds + "s";
  if (seconds < 3600) return Math.floor(seconds / 60) + "m" + String(seconds % 60).padStart(2, "0") + "s";
  if (seconds < 86400) return Math.floor(seconds / 3600) + "h" + String(Math.floor(seconds / 60) % 60).padStart(2, "0") + "m";
  return Math.floor(seconds / 86400) + "d";
}

function when(at) {
  if (at === null || at === undefined) return "";
  return new Date(at * 1000).toLocaleString() + " (" + duration(now() - at) + " ago)";
}

function stateBadge(state) {
  const dot = el("span", { class: "dot" });
  dot.style.background = "var(--" + state + ", #999)";
  return el("span", { class: "state", "data-state": state }, dot, state);
}

function progressText(task) {
  if (!task.progress) return "";
  const [done, total] = task.progress;
  if (total === null || total === undefined) return number(done);
  const pct = total > 0 ? Math.floor((100 * done) / total) : 0;
  return number(done) + "/" + number(total) + " (" + pct + "%)";
}

// Rate and time left from the task's own start, as tqdm gives them on average.
function rateAndEta(task) {
  if (!task.progress || !task.started_at) return ["", ""];
  const [done, total] = task.progress;
  const took = now() - task.started_at;
  if (took <= 0 || done <= 0) return ["", ""];
  const rate = done / took;
  const eta = total ? (total - done) / rate : NaN;
  return [number(rate) + "/s", eta >= 0 ? "ETA " + duration(eta) : ""];
}

// -- the stream ---------------------------------------------------------------

function params(extra) {
  const p = new URLSearchParams({ token: TOKEN });
  for (const key of ["state", "name", "executor"]) if (view[key]) p.set(key, view[key]);
  const before = view.cursors[view.cursors.length - 1];
  if (before) p.set("before", before);
  for (const [key, value] of Object.entries(extra || {})) p.set(key, value);
  return p.toString();
}

function connect() {
  if (source) source.close();
  const live = $("live");
  live.dataset.live = "connecting";
  live.textContent = "connecting";
  source = new EventSource("api/events?" + params());
  source.onopen = () => {
    live.dataset.live = "live";
    live.textContent = "live";
  };
  source.onmessage = (event) => render(JSON.parse(event.data));
  source.addEventListener("problem", (event) => {  // the store could not be read: said, and tried again
    live.dataset.live = "lost";
    live.textContent = "cannot read the store: " + JSON.parse(event.data).error;
  });
  source.onerror = () => {
    live.dataset.live = "lost";
    live.textContent = source.readyState === EventSource.CLOSED ? "stopped" : "reconnecting";
    if (source.readyState === EventSource.CLOSED) checkRefusal();
  };
}

async function checkRefusal() {
  const reply = await fetch("api/snapshot?" + params({ limit: 1 })).catch(() => null);
  if (reply && !reply.ok) $("live").textContent = (await reply.json().catch(() => ({}))).error || "refused";
}

// -- rendering ----------------------------------------------------------------

function render(next) {
  snap = next;
  if ($("live").dataset.live === "lost" && source.readyState === EventSource.OPEN) {
    $("live").dataset.live = "live";
    $("live").textContent = "live";
  }
  skew = snap.now - Date.now() / 1000;
  $("store").textContent = snap.store;
  $("readonly").hidden = !snap.read_only;
  renderCounts();
  renderBatches();
  renderRunning();
  renderTasks();
  if (selected && Date.now() - detailAsked > 1000) openDetail(selected, false);
  if (!document.body.dataset.rendered) document.body.dataset.rendered = String(performance.now());
}

function renderCounts() {
  const chips = STATES.filter((s) => snap.counts[s] || s === view.state).map((state) =>
    el("button", {
      type: "button", class: "count", "data-state": state, "aria-pressed": String(view.state === state),
      onclick: () => choose({ state: view.state === state ? "" : state }),
    }, stateBadge(state), el("b", {}, number(snap.counts[state] || 0))));
  const total = Object.values(snap.counts).reduce((a, b) => a + b, 0);
  // A large store is counted again every few seconds only (the page's rows and bars are fresh): say so.
  const age = snap.now - snap.counted_at;
  const note = age >= 2 ? el("span", { class: "count-age", id: "counted" }, "counted " + duration(age) + " ago") : null;
  $("counts").replaceChildren(...chips, el("span", { class: "count total" }, "all", el("b", {}, number(total))), note);
}

function renderBatches() {
  const select = $("f-executor");
  const options = [el("option", { value: "" }, "any")];
  const cards = snap.batches.map((batch) => {
    const unfinished = Object.values(batch.unfinished).reduce((a, b) => a + b, 0);
    const parts = STATES.filter((s) => batch.unfinished[s]).map((s) => number(batch.unfinished[s]) + " " + s);
    options.push(el("option", { value: batch.id, selected: batch.id === view.executor ? "" : null }, short(batch.id)));
    const live = batch.closed_at ? "ended " + duration(now() - batch.closed_at) + " ago" : "running";
    const abort = snap.read_only || !unfinished ? null : el("button", {
      type: "button", class: "danger", "data-action": "abort-batch",
      onclick: (event) => { event.stopPropagation(); abortBatch(batch, unfinished); },
    }, "Abort batch");
    return el("div", {
      class: "batch", "data-executor": batch.id, "aria-current": String(view.executor === batch.id),
      onclick: () => choose({ executor: view.executor === batch.id ? "" : batch.id }),
    },
      el("div", {}, el("b", { class: "mono" }, short(batch.id)), " ", live),
      el("div", { class: "line" }, (batch.hostname || "?") + " pid " + (batch.pid ?? "?") +
        ", started " + duration(now() - (batch.started_at || now())) + " ago"),
      el("div", { class: "row" }, el("span", {}, unfinished ? parts.join(", ") : "nothing unfinished"), abort));
  });
  if (view.executor && !snap.batches.some((b) => b.id === view.executor)) {
    options.push(el("option", { value: view.executor, selected: "" }, short(view.executor)));
  }
  select.replaceChildren(...options);
  $("batches").replaceChildren(...(cards.length ? cards : [el("p", { class: "empty" }, "no executor has used this store yet")]));
}

function renderRunning() {
  const shown = snap.running.length;
  const total = snap.running_total;
  $("running-title").textContent = "Running (" + number(total) + (total > shown ? ", the " + shown + " oldest shown" : "") + ")";
  const bars = snap.running.map((task) => {
    const [rate, eta] = rateAndEta(task);
    const [done, total] = task.progress || [0, null];
    const bar = el("progress", total ? { max: String(total), value: String(done) } : {});
    const abort = snap.read_only ? el("span") : el("button", {
      type: "button", class: "danger", "data-action": "abort", disabled: task.abort_requested ? "" : null,
      onclick: () => abortTask(task.id, null),
    }, task.abort_requested ? "asked" : "Abort");
    return el("div", { class: "bar", "data-id": task.id, "data-done": String(done) },
      el("span", { class: "label", title: task.id, onclick: () => openDetail(task.id, true) },
        el("b", {}, task.name.split(".").pop()), " ", el("span", { class: "mono" }, short(task.id))),
      bar,
      el("span", { class: "numbers" }, [progressText(task) || "no progress reported", rate, eta].filter(Boolean).join("  ·  ")),
      abort);
  });
  $("running").replaceChildren(...(bars.length ? bars : [el("p", { class: "empty" }, "nothing running")]));
}

function renderTasks() {
  const rows = snap.tasks.map((task) => el("tr", {
    "data-id": task.id, "data-state": task.state, "aria-selected": String(task.id === selected),
    onclick: () => openDetail(task.id, true),
  },
    el("td", { class: "id", title: task.id }, short(task.id)),
    el("td", {}, task.name),
    el("td", {}, stateBadge(task.state), task.abort_requested && UNFINISHED.has(task.state) ? " (abort asked)" : ""),
    el("td", { class: "num" }, progressText(task)),
    el("td", { class: "num" }, duration(now() - task.submitted_at)),
    el("td", { class: "error", title: task.error || "" }, task.error || "")));
  const body = $("tasks").tBodies[0];
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "6", class: "empty" }, "no tasks"))]));
  const page = view.cursors.length;
  $("newest").disabled = page === 1;
  $("older").disabled = !snap.next;
  const filtered = view.state ? number(snap.counts[view.state] || 0) + " " + view.state : "";
  $("page-info").textContent = "page " + page + (filtered ? " of " + filtered + " tasks" : "");
}

// -- one task -----------------------------------------------------------------

async function openDetail(id, fresh) {
  selected = id;
  detailAsked = Date.now();
  const reply = await fetch("api/tasks/" + encodeURIComponent(id), { headers: { "X-Localabort-Token": TOKEN } });
  if (selected !== id) return;
  const task = await reply.json();
  const aside = $("detail");
  aside.hidden = false;
  if (!reply.ok) {
    $("d-title").textContent = short(id);
    $("d-fields").replaceChildren(el("dt", {}, "error"), el("dd", {}, task.error));
    return;
  }
  aside.dataset.id = id;
  aside.dataset.state = task.state;
  $("d-title").textContent = task.name.split(".").pop() + " " + short(id);
  const [rate, eta] = task.state === "STARTED" ? rateAndEta(task) : ["", ""];
  const fields = [
    ["id", task.id], ["name", task.name], ["state", stateBadge(task.state)], ["args", task.args_repr],
    ["progress", [progressText(task), rate, eta].filter(Boolean).join("  ·  ")], ["key", task.key],
    ["batch", task.executor_id], ["submitted", when(task.submitted_at)], ["started", when(task.started_at)],
    ["finished", when(task.finished_at)], ["attempts", task.retries ? String(task.retries + 1) : ""],
    ["next attempt", task.state === "RETRY" ? when(task.eta) : ""],
    ["abort", task.abort_requested ? "asked " + when(task.abort_requested_at) + " by " + (task.abort_by || "?") : ""],
    ["kill at", task.terminate_at && UNFINISHED.has(task.state) ? when(task.terminate_at) : ""],
    ["error", task.error],
  ];
  $("d-fields").replaceChildren(...fields.filter(([, value]) => value).flatMap(([label, value]) =>
    [el("dt", {}, label), el("dd", { "data-field": label }, value)]));
  const open = UNFINISHED.has(task.state);
  $("d-actions").hidden = snap && snap.read_only;
  $("d-abort").disabled = !open;
  $("d-terminate").disabled = !open;
  const tb = task.traceback || "";
  $("d-tb-title").hidden = !tb;
  $("d-traceback").hidden = !tb;
  $("d-traceback").textContent = tb;
  if (fresh) {
    $("d-said").textContent = "";
    for (const row of $("tasks").tBodies[0].rows) row.setAttribute("aria-selected", String(row.dataset.id === id));
  }
}

function closeDetail() {
  selected = null;
  $("detail").hidden = true;
}

// -- actions ------------------------------------------------------------------

async function post(path, body) {
  const reply = await fetch(path, {
    method: "POST",
    headers: { "X-Localabort-Token": TOKEN, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await reply.json().catch(() => ({ error: "HTTP " + reply.status }));
  if (!reply.ok) throw new Error(answer.error || "HTTP " + reply.status);
  return answer;
}

async function abortTask(id, terminateAfter) {
  const said = $("d-said");
  try {
    const answer = await post("api/tasks/" + encodeURIComponent(id) + "/abort", { terminate_after: terminateAfter });
    const kill = terminateAfter === null ? "" : "; its worker is killed if it still runs in " + terminateAfter + "s";
    said.textContent = answer.met === null ? "finished already: nothing to abort" : "abort requested (it was " + answer.met + ")" + kill;
  } catch (error) {
    said.textContent = "refused: " + error.message;
  }
  if (selected === id) openDetail(id, false);
}

async function abortBatch(batch, unfinished) {
  const question = "Abort all " + number(unfinished) + " unfinished tasks of batch " + short(batch.id) +
    " (" + (batch.hostname || "?") + " pid " + batch.pid + ")?\n\nRunning tasks stop at their next check; queued ones never start.";
  if (!window.confirm(question)) return;
  try {
    const answer = await post("api/batches/" + encodeURIComponent(batch.id) + "/abort", {});
    $("page-info").textContent = "abort requested for " + number(answer.asked) + " task(s) of batch " + short(batch.id);
  } catch (error) {
    $("page-info").textContent = "refused: " + error.message;
  }
}

// -- filters and paging -------------------------------------------------------

function choose(change) {
  Object.assign(view, change);
  view.cursors = [null];
  $("f-state").value = view.state;
  $("f-name").value = view.name;
  connect();
}

function setup() {
  const state = $("f-state");
  for (const s of STATES) state.append(el("option", { value: s }, s));
  state.addEventListener("change", () => choose({ state: state.value }));
  let typing = null;
  $("f-name").addEventListener("input", (event) => {
    clearTimeout(typing);
    typing = setTimeout(() => choose({ name: event.target.value.trim() }), 300);
  });
  $("f-executor").addEventListener("change", (event) => choose({ executor: event.target.value }));
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("f-clear").addEventListener("click", () => choose({ state: "", name: "", executor: "" }));
  $("newest").addEventListener("click", () => { view.cursors = [null]; connect(); });
  $("older").addEventListener("click", () => {
    if (snap && snap.next) { view.cursors.push(snap.next); connect(); }
  });
  $("d-close").addEventListener("click", closeDetail);
  $("d-abort").addEventListener("click", () => abortTask(selected, null));
  $("d-terminate").addEventListener("click", () => {
    const after = Number($("d-after").value);
    abortTask(selected, isFinite(after) && after >= 0 ? after : 0);
  });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeDetail(); });
  connect();
}

setup();
