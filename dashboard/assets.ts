/**
 * The dashboard's stylesheet and its one script, served as static files so
 * the pages can forbid inline scripts and styles (Content-Security-Policy).
 *
 * @module
 */

/** The stylesheet of every page. Step and run colours key off `data-status`. */
export const STYLE_CSS = `
:root {
  --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f9fafb; --card: #fff;
  --pending: #9ca3af; --pending-bg: #f3f4f6;
  --running: #2563eb; --running-bg: #dbeafe;
  --waiting: #d97706; --waiting-bg: #fef3c7;
  --succeeded: #16a34a; --succeeded-bg: #dcfce7;
  --failed: #dc2626; --failed-bg: #fee2e2;
  --cancelled: #7c3aed; --cancelled-bg: #ede9fe;
  --skipped: #9ca3af; --skipped-bg: #fafafa;
  --sleeping: #0891b2; --sleeping-bg: #cffafe;
  --awaiting: #db2777; --awaiting-bg: #fce7f3;
  --compensating: #ea580c; --compensating-bg: #ffedd5;
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header.top { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.5rem;
  background: #111827; color: #fff; }
header.top a { color: #e5e7eb; text-decoration: none; }
header.top a.brand { font-weight: 700; color: #fff; font-size: 1.1rem; }
header.top form.logout { margin-left: auto; }
header.top form.logout button { background: transparent; border-color: #4b5563; color: #e5e7eb;
  padding: .15rem .6rem;
  font-weight: 400; }
form.login { display: flex; flex-direction: column; gap: .6rem; max-width: 22rem; }
main { padding: 1rem 1.5rem 3rem; max-width: 1200px; }
h1 { font-size: 1.35rem; margin: .4rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
pre { background: var(--card); border: 1px solid var(--line); padding: .6rem; overflow: auto;
  max-height: 24rem; margin: .3rem 0; }
table { border-collapse: collapse; width: 100%; background: var(--card); }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; }
a { color: #1d4ed8; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 999px; font-size: 12px;
  font-weight: 600; border: 1px solid var(--pending); color: var(--pending); background: var(--pending-bg); }
.badge[data-status="running"] { border-color: var(--running); color: var(--running); background: var(--running-bg); }
.badge[data-status="waiting"] { border-color: var(--waiting); color: var(--waiting); background: var(--waiting-bg); }
.badge[data-status="succeeded"] { border-color: var(--succeeded); color: var(--succeeded); background: var(--succeeded-bg); }
.badge[data-status="failed"] { border-color: var(--failed); color: var(--failed); background: var(--failed-bg); }
.badge[data-status="cancelled"] { border-color: var(--cancelled); color: var(--cancelled); background: var(--cancelled-bg); }
.badge[data-status="sleeping"] { border-color: var(--sleeping); color: var(--sleeping); background: var(--sleeping-bg); }
.badge[data-status="awaiting"] { border-color: var(--awaiting); color: var(--awaiting); background: var(--awaiting-bg); }
.badge[data-status="compensating"] { border-color: var(--compensating); color: var(--compensating); background: var(--compensating-bg); }
.badge[data-status="skipped"] { border-style: dashed; }
.kind-tag { display: inline-block; margin-left: .4rem; padding: 0 .35rem; border-radius: 4px;
  font-size: 11px; color: var(--muted); border: 1px solid var(--line); }
tr[data-phase="compensation"] td:first-child { border-left: 3px dashed var(--compensating); }
.step-note { font-size: 12px; color: var(--muted); }
.notice.info { border-color: var(--running); background: var(--running-bg); }
form.send-event { background: var(--card); border: 1px solid var(--awaiting); border-radius: 6px;
  padding: .6rem .8rem; margin: .8rem 0; display: flex; flex-direction: column; gap: .5rem; }
form.send-event textarea { min-height: 5rem; }
form.send-event .row { display: flex; gap: .8rem; flex-wrap: wrap; align-items: end; }
ul.children { margin: .3rem 0 1rem; }
form.filters { display: flex; gap: .8rem; align-items: end; margin-bottom: 1rem; flex-wrap: wrap; }
label { display: flex; flex-direction: column; gap: .2rem; font-size: 12px; color: var(--muted); }
select, input, textarea, button { font: inherit; padding: .35rem .5rem; border: 1px solid #d1d5db;
  border-radius: 6px; background: #fff; color: var(--fg); }
textarea { font-family: ui-monospace, monospace; width: 100%; min-height: 10rem; }
button { cursor: pointer; background: #1d4ed8; border-color: #1d4ed8; color: #fff; font-weight: 600; }
button.danger { background: #fff; color: var(--failed); border-color: var(--failed); }
nav.pager { display: flex; gap: 1rem; margin-top: 1rem; }
.notice { padding: .6rem .8rem; border-radius: 6px; margin: .8rem 0; border: 1px solid var(--failed);
  background: var(--failed-bg); }
.notice ul { margin: .3rem 0 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0 0 1rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
.run-head { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
.live { font-size: 12px; color: var(--muted); }
html[data-stream="open"] .live::before { content: "\\25CF live"; color: var(--succeeded); }
html[data-stream="ended"] .live::before { content: "stream ended"; }
figure.dag { margin: 0 0 1rem; background: var(--card); border: 1px solid var(--line);
  padding: .5rem; overflow: auto; }
svg.dag .edge { fill: none; stroke: #9ca3af; stroke-width: 1.5; }
svg.dag .arrow { fill: #9ca3af; }
svg.dag .node .shape { fill: var(--pending-bg); stroke: var(--pending); stroke-width: 2; }
svg.dag .node .shape.stack { stroke-width: 1.5; }
svg.dag .node .shape-detail { fill: none; stroke: var(--pending); stroke-width: 1.5; }
svg.dag .node text { font: 13px system-ui, sans-serif; fill: var(--fg); text-anchor: middle; }
svg.dag .node text.meta { font-size: 11px; fill: var(--muted); }
svg.dag .node[data-status="running"] .shape { fill: var(--running-bg); stroke: var(--running); }
svg.dag .node[data-status="waiting"] .shape { fill: var(--waiting-bg); stroke: var(--waiting); }
svg.dag .node[data-status="sleeping"] .shape { fill: var(--sleeping-bg); stroke: var(--sleeping); }
svg.dag .node[data-status="awaiting"] .shape { fill: var(--awaiting-bg); stroke: var(--awaiting); }
svg.dag .node[data-status="succeeded"] .shape { fill: var(--succeeded-bg); stroke: var(--succeeded); }
svg.dag .node[data-status="failed"] .shape { fill: var(--failed-bg); stroke: var(--failed); }
svg.dag .node[data-status="cancelled"] .shape { fill: var(--cancelled-bg); stroke: var(--cancelled); }
svg.dag .node[data-status="skipped"] .shape { fill: var(--skipped-bg); stroke: var(--skipped);
  stroke-dasharray: 4 3; }
svg.dag .node[data-status="skipped"] { opacity: .75; }
svg.dag .node[data-phase="compensation"] .shape { stroke-dasharray: 9 3; }
svg.dag .node[data-phase="compensation"][data-status="skipped"] .shape { stroke-dasharray: 2 3; }
svg.dag .lane rect { fill: var(--compensating-bg); fill-opacity: .35; stroke: var(--compensating);
  stroke-dasharray: 6 4; }
svg.dag .lane text { font: 11px system-ui, sans-serif; fill: var(--compensating); }
svg.dag .map-bar .bar-track { fill: var(--line); }
svg.dag .map-bar .bar-succeeded { fill: var(--succeeded); }
svg.dag .map-bar .bar-running { fill: var(--running); }
svg.dag .map-bar .bar-failed { fill: var(--failed); }
.step-errors li { margin-bottom: .3rem; }
.step-errors .stack pre { max-height: 20rem; margin: .3rem 0; }
`;

/**
 * The run page's script: follows `GET /runs/:id/events` and re-colours DAG
 * nodes and badges at once from each transition. It fetches only what a
 * transition changed: the step's row and details
 * (`/ui/runs/:id/fragment?step=<name>`) or the run's head and output
 * (`?part=head`); the whole `#run-body` only on the stream's first and last
 * events. Fetches are coalesced: one per part at a time. It reads the run
 * id from a data attribute, never from text spliced into the script.
 */
export const RUN_JS = `"use strict";
(() => {
  const root = document.documentElement;
  const first = document.getElementById("run-body");
  if (!first) return;
  const runId = first.dataset.runId;
  const enc = encodeURIComponent(runId);
  const pending = new Set();
  let busy = false;
  async function fetchPart(query) {
    const res = await fetch("/ui/runs/" + enc + "/fragment" + query, { headers: { accept: "text/html" } });
    if (!res.ok) return null;
    const tpl = document.createElement("template");
    tpl.innerHTML = await res.text();
    return tpl.content;
  }
  function swap(from, selector) {
    const next = from.querySelector(selector);
    const current = document.querySelector(selector);
    if (!next || !current) return;
    const focused = document.activeElement;
    const start = focused && focused.selectionStart;
    const end = focused && focused.selectionEnd;
    keepForms(current, next);
    current.replaceWith(next);
    if (focused && next.contains(focused) && focused !== document.activeElement) {
      focused.focus();
      if (typeof start === "number") focused.setSelectionRange(start, end);
    }
  }
  async function pump() {
    if (busy) return;
    busy = true;
    try {
      while (pending.size > 0) {
        if (pending.has("all")) {
          pending.clear();
          const part = await fetchPart("");
          if (part) swap(part, "#run-body");
          continue;
        }
        const key = pending.values().next().value;
        pending.delete(key);
        if (key === "head") {
          const part = await fetchPart("?part=head");
          if (part) { swap(part, "#run-head"); swap(part, "#run-output"); }
        } else {
          const step = key.slice(5);
          const part = await fetchPart("?step=" + encodeURIComponent(step));
          const name = CSS.escape(step);
          if (part) {
            swap(part, '[data-step-row="' + name + '"]');
            swap(part, '[data-step-slot="' + name + '"]');
            swap(part, "figure.dag");
          }
        }
      }
    } catch (_) {
      // The next event or the final "end" refreshes again.
    } finally {
      busy = false;
    }
  }
  // A form being filled in (the event form) survives the refresh while the
  // new fragment still offers it, so typing, focus and its notice are kept.
  function keepForms(current, next) {
    for (const form of current.querySelectorAll("form[data-keep]")) {
      for (const twin of next.querySelectorAll("form[data-keep]")) {
        if (twin.dataset.keep === form.dataset.keep) {
          twin.replaceWith(form);
          break;
        }
      }
    }
  }
  function want(key) {
    pending.add(key);
    pump();
  }
  function paint(step, status) {
    for (const el of document.querySelectorAll("[data-step]")) {
      if (el.dataset.step === step) el.dataset.status = status;
    }
  }
  function paintRun(status) {
    for (const el of document.querySelectorAll("[data-run-status]")) el.dataset.status = status;
  }
  const source = new EventSource("/runs/" + enc + "/events");
  source.addEventListener("open", () => { root.dataset.stream = "open"; });
  source.addEventListener("snapshot", (m) => {
    const snapshot = JSON.parse(m.data);
    for (const [name, step] of Object.entries(snapshot.steps)) paint(name, step.status);
    paintRun(snapshot.status);
    want("all");
  });
  source.addEventListener("transition", (m) => {
    const { event } = JSON.parse(m.data);
    if (event.type === "step") {
      paint(event.step, event.to);
      // An item of a map ("fanout[3]") changes its map step's counts.
      want("step:" + event.step.replace(/\\[\\d+\\]$/, ""));
    } else {
      paintRun(event.to);
      want("head");
    }
  });
  source.addEventListener("end", () => {
    source.close();
    root.dataset.stream = "ended";
    want("all");
  });
})();
`;

/** The favicon: a small woven square in the run colours. */
export const FAVICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">
<rect width="16" height="16" rx="3" fill="#111827"/>
<path d="M3 5h10M3 8h10M3 11h10" stroke="#16a34a" stroke-width="1.6"/>
<path d="M5 3v10M8 3v10M11 3v10" stroke="#2563eb" stroke-width="1.6" stroke-dasharray="2 1"/>
</svg>
`;
