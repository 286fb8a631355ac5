// The localabort dashboard: follows the store's snapshots (server-sent events) and asks for aborts.
// Every value from the store is set as text (textContent, attributes), never as HTML.
"use strict";

const QUERY = new URLSearchParams(location.search);
const TOKEN = QUERY.get("token") || "";
const STATES = ["PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "ABORTED"];
const UNFINISHED = new Set(["PENDING", "RECEIVED", "STARTED", "RETRY"]);
// The filters start as the URL gives them (Executor(dashboard=True) opens on its own batch).
const view = { state: QUERY.get("state") || "", name: QUERY.get("name") || "", executor: QUERY.get("executor") || "",
  cursors: [null] };
let source = null;
let skew = 0; // the server's clock minus this browser's, in seconds
let snap = null;
let selected = null;
let detailAsked = 0;
let detailSeq = 0;
const drawn = {}; // what each part of the page was last drawn from: unchanged parts are left alone

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

// Whether ``value`` differs from what part ``key`` was last drawn from (and remember it).
function changed(key, value) {
  const text = JSON.stringify(value);
  if (drawn[key] === text) return false;
  drawn[key] = text;
  return true;
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

function notice(text) {
  $("notice").textContent = text;
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

function setLive(state, text) {
  $("live").dataset.live = state;
  $("live").textContent = text;
}

function connect() {
  if (source) source.close();
  setLive("connecting", "connecting");
  source = new EventSource("api/events?" + params());
  source.onopen = () => setLive("live", "live");
  source.onmessage = (event) => render(JSON.parse(event.data));
  source.addEventListener("problem", (event) => { // the store could not be read: said, and tried again
    setLive("lost", "cannot read the store: " + JSON.parse(event.data).error);
  });
  source.onerror = () => {
    const closed = source.readyState === EventSource.CLOSED;
    setLive("lost", closed ? "stopped" : "reconnecting");
    if (closed) checkRefusal();
  };
}

async function checkRefusal() {
  const reply = await fetch("api/snapshot?" + params({ limit: 1 })).catch(() => null);
  if (reply && !reply.ok) $("live").textContent = (await reply.json().catch(() => ({}))).error || "refused";
}

// -- rendering ----------------------------------------------------------------

function render(next) {
  snap = next;
  if ($("live").dataset.live !== "live") setLive("live", "live");
  skew = snap.now - Date.now() / 1000;
  $("store").textContent = snap.store;
  $("readonly").hidden = !snap.read_only;
  renderCounts();
  renderBatches();
  renderStream();
  renderRunning();
  renderTasks();
  if (selected && Date.now() - detailAsked > 1000) openDetail(selected, false);
  if (!document.body.dataset.rendered) document.body.dataset.rendered = String(performance.now());
}

function renderCounts() {
  const age = snap.now - snap.counted_at;
  // A large store is counted again every few seconds only (the page's rows and bars are fresh): say so.
  $("counted").textContent = age >= 2 ? "counted " + duration(age) + " ago" : "";
  if (!changed("counts", [snap.counts, view.state])) return;
  const chips = STATES.filter((s) => snap.counts[s] || s === view.state).map((state) =>
    el("button", {
      type: "button", class: "count", "data-state": state, "aria-pressed": String(view.state === state),
      onclick: () => choose({ state: view.state === state ? "" : state }),
    }, stateBadge(state), el("b", {}, number(snap.counts[state] || 0))));
  const total = Object.values(snap.counts).reduce((a, b) => a + b, 0);
  $("counts").replaceChildren(...chips, el("span", { class: "count total" }, "all", el("b", {}, number(total))));
}

function renderBatches() {
  if (changed("batch-options", [snap.batches.map((b) => b.id), view.executor])) {
    const options = [el("option", { value: "" }, "any")];
    for (const batch of snap.batches) options.push(el("option", { value: batch.id }, short(batch.id)));
    if (view.executor && !snap.batches.some((b) => b.id === view.executor)) {
      options.push(el("option", { value: view.executor }, short(view.executor)));
    }
    $("f-executor").replaceChildren(...options);
    $("f-executor").value = view.executor;
  }
  const tick = Math.floor(now() / 5); // the cards' ages move on every 5 s
  if (!changed("batches", [snap.batches, snap.batches_total, view.executor, snap.read_only, tick])) return;
  const cards = snap.batches.map((batch) => {
    const unfinished = Object.values(batch.unfinished).reduce((a, b) => a + b, 0);
    const parts = STATES.filter((s) => batch.unfinished[s]).map((s) => number(batch.unfinished[s]) + " " + s);
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
      rateLine(batch.rate || []),
      el("div", { class: "row" }, el("span", {}, unfinished ? parts.join(", ") : "nothing unfinished"), abort));
  });
  const more = snap.batches_total - snap.batches.length;
  if (more > 0) cards.push(el("p", { class: "empty" }, number(more) + " older batch(es) not shown"));
  $("batches").replaceChildren(...(cards.length ? cards : [el("p", { class: "empty" }, "no executor has used this store yet")]));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

// A batch's tasks finished per second over its last minute: a line, and the last 10 seconds' mean.
function rateLine(counts) {
  const top = Math.max(1, ...counts);
  const points = counts.map((n, i) => (i * 120) / Math.max(1, counts.length - 1) + "," + (21 - (20 * n) / top)).join(" ");
  const recent = counts.slice(-10);
  const mean = recent.reduce((a, b) => a + b, 0) / Math.max(1, recent.length);
  return el("div", { class: "rate", title: "tasks finished per second, last minute" },
    svg("svg", { viewBox: "0 0 120 22", preserveAspectRatio: "none", role: "img" }, svg("polyline", { points })),
    number(mean) + "/s");
}

// The task stream of one batch (the one chosen, or the first listed): a lane per worker process, a bar per task
// from its start to its end (or now), coloured by its state, over the batch's last minutes. A click opens the task.
const LANE = 16;

function renderStream() {
  const stream = snap.stream;
  const box = $("stream");
  if (!stream) {
    $("stream-title").textContent = "Task stream";
    if (changed("stream", null)) box.replaceChildren(el("p", { class: "empty" }, "no batch to show"));
    return;
  }
  if (!changed("stream", [stream, selected])) return;
  const pids = [...new Set(stream.tasks.map((t) => t[4]))].sort((a, b) => (a ?? 0) - (b ?? 0));
  const lanes = new Map(pids.map((pid, i) => [pid, i]));
  const width = 1000;
  const left = 70; // the lanes' labels
  const span = Math.max(1e-9, stream.until - stream.since);
  const x = (t) => left + ((Math.min(Math.max(t, stream.since), stream.until) - stream.since) / span) * (width - left);
  const height = Math.max(1, pids.length) * LANE + 14;
  const drawing = svg("svg", { viewBox: "0 0 " + width + " " + height, preserveAspectRatio: "none",
    height: String(height), "aria-label": "task stream" });
  pids.forEach((pid, i) => drawing.append(svg("text", { x: "0", y: String(i * LANE + 11) }, "pid " + (pid ?? "?"))));
  for (const [id, state, started, finished, pid] of stream.tasks) {
    const x0 = x(started);
    const x1 = Math.max(x0 + 1, x(finished ?? stream.until));
    const rect = svg("rect", { class: "task", "data-id": id, "data-state": state, x: String(x0),
      y: String(lanes.get(pid) * LANE + 1), width: String(x1 - x0), height: String(LANE - 3) });
    rect.style.fill = "var(--" + state + ", #999)";
    if (id === selected) rect.style.stroke = "var(--fg)";
    rect.addEventListener("click", () => openDetail(id, true));
    rect.append(svg("title", {}, short(id) + " " + state));
    drawing.append(rect);
  }
  const axis = height - 2;
  drawing.append(svg("text", { x: String(left), y: String(axis) }, "-" + duration(span)),
    svg("text", { x: String(width - 30), y: String(axis) }, stream.until < now() - 1 ? "end" : "now"));
  $("stream-title").textContent = "Task stream: batch " + short(stream.executor) + " (" +
    number(stream.tasks.length) + " tasks in its last " + duration(span) + ")";
  box.replaceChildren(drawing);
}

// One bar per running task, kept from one snapshot to the next (keyed by id): a click is never lost to a redraw.
function renderRunning() {
  const shown = snap.running.length;
  const total = snap.running_total;
  $("running-title").textContent = "Running (" + number(total) + (total > shown ? ", the " + shown + " oldest shown" : "") + ")";
  const box = $("running");
  const old = new Map([...box.querySelectorAll(".bar")].map((bar) => [bar.dataset.id, bar]));
  const bars = snap.running.map((task) => {
    const bar = old.get(task.id) || newBar(task);
    const [rate, eta] = rateAndEta(task);
    const [done, all] = task.progress || [0, null];
    const meter = bar.querySelector("progress");
    if (all) {
      meter.max = all;
      meter.value = done;
    }
    bar.dataset.done = String(done);
    bar.querySelector(".numbers").textContent =
      [progressText(task) || "no progress reported", rate, eta].filter(Boolean).join("  ·  ");
    const button = bar.querySelector("button");
    if (button && task.abort_requested) {
      button.disabled = true;
      button.textContent = "asked";
    }
    return bar;
  });
  if (!bars.length) {
    box.replaceChildren(el("p", { class: "empty" }, "nothing running"));
  } else if (bars.some((bar, i) => box.children[i] !== bar) || box.children.length !== bars.length) {
    box.replaceChildren(...bars);
  }
}

function newBar(task) {
  const abort = snap.read_only ? el("span") : el("button", {
    type: "button", class: "danger", "data-action": "abort", onclick: () => abortTask(task.id, null),
  }, "Abort");
  return el("div", { class: "bar", "data-id": task.id },
    el("span", { class: "label", title: task.id, onclick: () => openDetail(task.id, true) },
      el("b", {}, task.name.split(" (")[0].split(".").pop()), " ", el("span", { class: "mono" }, short(task.id))),
    el("progress"), el("span", { class: "numbers" }), abort);
}

function renderTasks() {
  const body = $("tasks").tBodies[0];
  if (changed("tasks", snap.tasks)) {
    const rows = snap.tasks.map((task) => el("tr", {
      "data-id": task.id, "data-state": task.state, "aria-selected": String(task.id === selected),
      onclick: () => openDetail(task.id, true),
    },
      el("td", { class: "id", title: task.id }, short(task.id)),
      el("td", {}, task.name),
      el("td", {}, stateBadge(task.state), task.abort_requested && UNFINISHED.has(task.state) ? " (abort asked)" : ""),
      el("td", { class: "num" }, progressText(task)),
      el("td", { class: "num age" }),
      el("td", { class: "error", title: task.error || "" }, task.error || "")));
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: "6", class: "empty" }, "no tasks"))]));
  }
  snap.tasks.forEach((task, i) => { // ages move on without a redraw
    const cell = body.rows[i] && body.rows[i].querySelector(".age");
    if (cell) cell.textContent = duration(now() - task.submitted_at);
  });
  const page = view.cursors.length;
  $("newest").disabled = $("newer").disabled = page === 1;
  $("older").disabled = !snap.next;
  const alone = view.state && !view.name && !view.executor; // the count says how many the filter holds
  $("page-info").textContent = "page " + page + (alone ? " of " + number(snap.counts[view.state] || 0) + " " + view.state + " tasks" : "");
}

// -- one task -----------------------------------------------------------------

async function openDetail(id, fresh) {
  selected = id;
  detailAsked = Date.now();
  const seq = ++detailSeq; // only the newest answer is shown
  let reply;
  let task;
  try {
    reply = await fetch("api/tasks/" + encodeURIComponent(id), { headers: { "X-Localabort-Token": TOKEN } });
    task = await reply.json();
  } catch (error) {
    if (seq === detailSeq) $("d-said").textContent = "cannot read the task: " + error.message;
    return;
  }
  if (seq !== detailSeq || selected !== id) return;
  const aside = $("detail");
  aside.hidden = false;
  if (fresh) {
    $("d-said").textContent = "";
    for (const row of $("tasks").tBodies[0].rows) row.setAttribute("aria-selected", String(row.dataset.id === id));
  }
  if (!reply.ok) {
    $("d-title").textContent = short(id);
    $("d-fields").replaceChildren(el("dt", {}, "error"), el("dd", {}, task.error));
    return;
  }
  aside.dataset.id = id;
  aside.dataset.state = task.state;
  $("d-title").textContent = task.name.split(" (")[0].split(".").pop() + " " + short(id);
  const [rate, eta] = task.state === "STARTED" ? rateAndEta(task) : ["", ""];
  const fields = [
    ["id", task.id], ["name", task.name], ["state", stateBadge(task.state)], ["args", task.args_repr],
    ["progress", [progressText(task), rate, eta].filter(Boolean).join("  ·  ")], ["key", task.key],
    ["batch", task.executor_id], ["submitted", when(task.submitted_at)], ["started", when(task.started_at)],
    ["finished", when(task.finished_at)], ["attempts", task.started_at || task.retries ? String(task.retries + 1) : ""],
    ["next attempt", task.state === "RETRY" ? when(task.eta) : ""],
    ["abort", task.abort_requested ? "asked " + when(task.abort_requested_at) + " by " + (task.abort_by || "?") : ""],
    ["kill at", task.terminate_at && UNFINISHED.has(task.state) ? when(task.terminate_at) : ""],
    ["error", task.error],
    ["used", used(task)],
  ];
  $("d-fields").replaceChildren(...fields.filter(([, value]) => value).flatMap(([label, value]) =>
    [el("dt", {}, label), el("dd", { "data-field": label }, value)]));
  const open = UNFINISHED.has(task.state);
  $("d-actions").hidden = Boolean(snap && snap.read_only);
  $("d-abort").disabled = !open;
  $("d-terminate").disabled = !open;
  const tb = task.traceback || "";
  $("d-tb-title").hidden = !tb;
  $("d-traceback").hidden = !tb;
  $("d-traceback").textContent = tb;
  const log = $("d-log");
  const following = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;  // at its end: stay there
  $("d-log-title").hidden = !task.logs;
  log.hidden = !task.logs;
  log.textContent = inert(task.logs || "");
  if (following) log.scrollTop = log.scrollHeight;
}

// A task's own text, shown as text: control characters (escape sequences) and the bidi controls that would
// reorder what follows them, as escapes a reader sees.
const CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function inert(text) {
  return text.replace(CONTROLS, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

function used(task) {
  if (task.worker_pid == null) return "";
  if (task.cpu_seconds == null) return "in worker pid " + task.worker_pid; // it runs, or its worker died
  const peak = task.peak_rss == null ? "" : ", peak memory " + (task.peak_rss / 2 ** 20).toFixed(1) + " MiB";
  return task.cpu_seconds.toFixed(2) + " s CPU" + peak + ", in worker pid " + task.worker_pid;
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
  let said;
  try {
    const answer = await post("api/tasks/" + encodeURIComponent(id) + "/abort", { terminate_after: terminateAfter });
    const kill = terminateAfter === null ? "" : "; its worker is killed if it still runs in " + terminateAfter + "s";
    said = answer.met === null ? "finished already: nothing to abort" : "abort requested (it was " + answer.met + ")" + kill;
  } catch (error) {
    said = "refused: " + error.message;
  }
  notice(short(id) + ": " + said);
  if (selected === id) {
    $("d-said").textContent = said;
    openDetail(id, false);
  }
}

async function abortBatch(batch, unfinished) {
  const question = "Abort all " + number(unfinished) + " unfinished tasks of batch " + short(batch.id) +
    " (" + (batch.hostname || "?") + " pid " + batch.pid + ")?\n\nRunning tasks stop at their next check; queued ones never start.";
  if (!window.confirm(question)) return;
  try {
    const answer = await post("api/batches/" + encodeURIComponent(batch.id) + "/abort", {});
    notice("batch " + short(batch.id) + ": abort requested for " + number(answer.asked) + " task(s)");
  } catch (error) {
    notice("batch " + short(batch.id) + ": refused: " + error.message);
  }
}

// -- filters and paging -------------------------------------------------------

function choose(change) {
  Object.assign(view, change);
  view.cursors = [null];
  go();
}

// A new stream for the view; until its first snapshot, nothing of the old one may be paged from.
function go() {
  snap = null;
  $("older").disabled = $("newer").disabled = $("newest").disabled = true;
  $("f-state").value = view.state;
  if ($("f-name").value.trim() !== view.name) $("f-name").value = view.name; // never while one types
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
  $("newest").addEventListener("click", () => { view.cursors = [null]; go(); });
  $("newer").addEventListener("click", () => { if (view.cursors.length > 1) { view.cursors.pop(); go(); } });
  $("older").addEventListener("click", () => {
    if (snap && snap.next) { view.cursors.push(snap.next); go(); }
  });
  $("d-close").addEventListener("click", closeDetail);
  $("d-abort").addEventListener("click", () => abortTask(selected, null));
  $("d-terminate").addEventListener("click", () => {
    const text = $("d-after").value.trim();
    const after = Number(text);
    if (text === "" || !isFinite(after) || after < 0) {
      $("d-said").textContent = "give the seconds to wait before killing its worker (0: at once)";
      return;
    }
    abortTask(selected, after);
  });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeDetail(); });
  $("f-name").value = view.name;
  go();
}

setup();
