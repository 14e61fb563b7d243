// The exit-trace viewer's page logic (plain browser JavaScript, no framework). It fetches /trace.json from
// server.ts, then draws: a timeline with one lane per vCPU (a tick per exit, coloured by device; host input
// as triangles above), filters by exit reason and device, a count per device register, the list of exits,
// and the details of the one selected.

const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const LANE = 30, TOP = 22, AXIS = 18, LIST_MAX = 1000;

const state = {
  exits: [], inputs: [], vcpus: 1, end: 1,
  reasons: new Set(), devices: new Set(), register: null, // register: "device|register|dir" or null
  view: [0, 1], selected: null, colour: new Map(),
};

const hex = (n) => (n === undefined ? "" : typeof n === "string" ? n : "0x" + n.toString(16));
const deviceOf = (e) => e.device ?? (e.addr === undefined ? "(no device)" : "(unclaimed)");
const registerKey = (e) => `${deviceOf(e)}|${e.register ?? ""}|${e.dir ?? ""}`;
const shortReason = (r) => r.replace(/^KVM_EXIT_/, "");
const visible = (e) => state.reasons.has(e.reason) && state.devices.has(deviceOf(e));
const shown = () => state.exits.filter((e) => visible(e) && (!state.register || registerKey(e) === state.register));

function el(tag, props = {}, ...children) {
  const n = Object.assign(document.createElement(tag), props);
  for (const c of children) n.append(c);
  return n;
}

function tally(items, key) {
  const m = new Map();
  for (const i of items) m.set(key(i), (m.get(key(i)) ?? 0) + 1);
  return [...m].sort((a, b) => b[1] - a[1]);
}

function checkboxes(box, counts, set, swatch) {
  for (const [name, n] of counts) {
    set.add(name);
    const input = el("input", { type: "checkbox", checked: true, value: name });
    input.addEventListener("change", () => {
      input.checked ? set.add(name) : set.delete(name);
      if (state.selected && !visible(state.selected)) state.selected = null;
      render();
    });
    const label = el("label", {}, input);
    if (swatch) label.append(el("span", { className: "swatch", style: `background:${state.colour.get(name)}` }));
    label.append(`${name} (${n})`);
    box.append(label);
  }
}

// ---- timeline ----

function canvasSize() {
  const c = $("timeline");
  c.width = c.clientWidth * devicePixelRatio;
  c.height = (TOP + state.vcpus * LANE + AXIS) * devicePixelRatio;
  c.style.height = `${TOP + state.vcpus * LANE + AXIS}px`;
}

const xOf = (t, w) => 60 + ((t - state.view[0]) / (state.view[1] - state.view[0])) * (w - 70);
const tOf = (x, w) => state.view[0] + ((x - 60) / (w - 70)) * (state.view[1] - state.view[0]);

function drawTimeline() {
  const c = $("timeline");
  const g = c.getContext("2d");
  g.setTransform(devicePixelRatio, 0, 0, devicePixelRatio, 0, 0);
  const w = c.clientWidth;
  g.clearRect(0, 0, w, c.height);
  g.font = "11px system-ui";
  g.fillStyle = "#555";
  g.fillText("input", 4, 14);
  for (let v = 0; v < state.vcpus; v++) {
    g.fillStyle = v % 2 ? "#f6f6f6" : "#fdfdfd";
    g.fillRect(60, TOP + v * LANE, w - 70, LANE);
    g.fillStyle = "#555";
    g.fillText(`vCPU ${v}`, 4, TOP + v * LANE + 19);
  }
  for (const e of shown()) {
    const x = xOf(e.t, w);
    if (x < 60 || x > w - 10) continue;
    g.fillStyle = state.colour.get(deviceOf(e));
    g.fillRect(x, TOP + e.vcpu * LANE + 3, 1.5, LANE - 6);
  }
  g.fillStyle = "#000";
  for (const i of state.inputs) {
    const x = xOf(i.t, w);
    if (x >= 60 && x <= w - 10) g.fill(new Path2D(`M${x} 16 l-4 -8 h8 z`));
  }
  if (state.selected) {
    const x = xOf(state.selected.t, w);
    g.strokeStyle = "#000";
    g.lineWidth = 2;
    g.strokeRect(x - 3, TOP + state.selected.vcpu * LANE + 1, 7, LANE - 2);
  }
  // Axis: about eight labels in milliseconds.
  const [a, b] = state.view;
  const step = 10 ** Math.floor(Math.log10((b - a) / 8)) * ([1, 2, 5].find((m) => ((b - a) / 8) / (10 ** Math.floor(Math.log10((b - a) / 8)) * m) <= 1.5) ?? 10);
  g.fillStyle = "#555";
  const y = TOP + state.vcpus * LANE + 13;
  const label = (t) => (step >= 1000 ? `${+(t / 1000).toFixed(3)} s` : `${+t.toFixed(6)} ms`);
  for (let t = Math.ceil(a / step) * step; t <= b; t += step) g.fillText(label(t), xOf(t, w) - 10, y);
  $("window").textContent = `${a.toFixed(3)} – ${b.toFixed(3)} ms`;
}

function zoom(factor, at) {
  const [a, b] = state.view;
  const center = at ?? (a + b) / 2;
  const span = Math.max((b - a) * factor, 1e-4);
  state.view = [center - (center - a) * (span / (b - a)), center + (b - center) * (span / (b - a))];
  drawTimeline();
}

function setupTimeline() {
  const c = $("timeline");
  c.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    zoom(ev.deltaY < 0 ? 0.8 : 1.25, tOf(ev.offsetX, c.clientWidth));
  }, { passive: false });
  let drag = null;
  c.addEventListener("mousedown", (ev) => (drag = { x: ev.offsetX, view: [...state.view], moved: false }));
  c.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const dt = ((ev.offsetX - drag.x) / (c.clientWidth - 70)) * (drag.view[1] - drag.view[0]);
    if (Math.abs(ev.offsetX - drag.x) > 3) drag.moved = true;
    state.view = [drag.view[0] - dt, drag.view[1] - dt];
    drawTimeline();
  });
  c.addEventListener("mouseup", (ev) => {
    if (drag && !drag.moved) pick(ev.offsetX, ev.offsetY);
    drag = null;
  });
  $("zoom-in").onclick = () => zoom(0.5);
  $("zoom-out").onclick = () => zoom(2);
  $("zoom-reset").onclick = () => {
    state.view = [0, state.end];
    drawTimeline();
  };
  addEventListener("resize", () => {
    canvasSize();
    drawTimeline();
  });
}

/** Select the visible exit nearest to a click, within a few pixels, in the lane clicked. */
function pick(x, y) {
  const w = $("timeline").clientWidth;
  const vcpu = Math.floor((y - TOP) / LANE);
  let best = null;
  for (const e of shown()) {
    const d = Math.abs(xOf(e.t, w) - x);
    if (e.vcpu === vcpu && d < 6 && (!best || d < best.d)) best = { e, d };
  }
  if (best) select(best.e);
}

// ---- tables ----

function renderCounts(list) {
  const sums = new Map();
  for (const e of state.exits.filter(visible)) {
    const s = sums.get(registerKey(e)) ?? { e, n: 0, us: 0 };
    s.n++;
    s.us += e.handleUs;
    sums.set(registerKey(e), s);
  }
  const body = $("counts").tBodies[0];
  body.replaceChildren();
  for (const [key, s] of [...sums].sort((a, b) => b[1].n - a[1].n)) {
    const row = el("tr", { className: key === state.register ? "selected" : "" },
      el("td", {}, deviceOf(s.e)), el("td", {}, s.e.register ?? ""), el("td", {}, s.e.dir ?? ""),
      el("td", { className: "n" }, String(s.n)), el("td", { className: "n" }, (s.us / s.n).toFixed(1)));
    row.dataset.key = key;
    row.onclick = () => {
      state.register = state.register === key ? null : key;
      render();
    };
    body.append(row);
  }
  $("register-filter").textContent = state.register ? `(list filtered to ${state.register.replaceAll("|", " ")}; click again to clear)` : "";
  $("shown").textContent = `showing ${list.length} of ${state.exits.length} exits`;
}

function renderList(list) {
  const body = $("exits").tBodies[0];
  body.replaceChildren();
  for (const e of list.slice(0, LIST_MAX)) {
    const reg = e.device ? `${e.device}${e.register ? "." + e.register : ""}` : deviceOf(e);
    const row = el("tr", { className: e === state.selected ? "selected" : "" },
      el("td", { className: "n" }, String(e.index)), el("td", { className: "n" }, e.t.toFixed(3)), el("td", {}, String(e.vcpu)),
      el("td", {}, shortReason(e.reason)), el("td", {}, reg), el("td", {}, e.dir ?? ""), el("td", {}, hex(e.addr)), el("td", {}, hex(e.data)));
    row.onclick = () => select(e);
    body.append(row);
    if (e === state.selected) queueMicrotask(() => row.scrollIntoView({ block: "nearest" }));
  }
}

function select(e) {
  state.selected = e;
  const d = $("details");
  d.replaceChildren();
  const fields = { exit: `#${e.index} (trace line ${e.line})`, ...e };
  delete fields.index;
  delete fields.line;
  for (const [k, v] of Object.entries(fields)) {
    const shownValue = (k === "addr" || k === "data") && typeof v === "number" ? `${hex(v)} (${v})` : k === "handleUs" ? `${v} µs` : k === "t" ? `${v} ms` : String(v);
    d.append(el("dt", {}, k), el("dd", {}, shownValue));
  }
  render();
}

function render() {
  const list = shown();
  renderCounts(list);
  renderList(list);
  drawTimeline();
}

async function main() {
  let trace;
  try {
    const r = await fetch("/trace.json");
    if (!r.ok) throw new Error(`/trace.json: ${r.status} ${await r.text()}`);
    trace = await r.json();
  } catch (err) {
    $("summary").replaceChildren(el("span", { className: "error" }, String(err)));
    return;
  }
  $("name").textContent = trace.name;
  state.vcpus = trace.header.vcpus;
  let i = 0;
  for (const r of trace.records) {
    if ("reason" in r) state.exits.push({ index: i++, ...r });
    else state.inputs.push(r);
  }
  state.end = Math.max(1e-3, ...state.exits.map((e) => e.t), ...state.inputs.map((e) => e.t)) * 1.02;
  state.view = [0, state.end];
  tally(state.exits, deviceOf).forEach(([name], k) => state.colour.set(name, PALETTE[k % PALETTE.length]));
  $("summary").textContent = `${state.exits.length} exits on ${state.vcpus} vCPU(s) over ${state.end.toFixed(3)} ms, ` +
    `${state.inputs.length} host input event(s); recorded ${trace.header.started}`;
  checkboxes($("filter-reasons"), tally(state.exits, (e) => e.reason), state.reasons, false);
  checkboxes($("filter-devices"), tally(state.exits, deviceOf), state.devices, true);
  canvasSize();
  setupTimeline();
  render();
}

main();
