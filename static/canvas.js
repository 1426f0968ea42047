// Precall flow canvas: the draft drawn as a graph and edited in place, through the
// management API only (GET/PUT /draft with ETag and If-Match, /draft/layout,
// /draft/changes, /publish, /versions), with the console token the page hands over.
// Without this script the page shows the same graph drawn by the server, and its forms.
"use strict";
(() => {
  const root = document.getElementById("flow-canvas");
  if (!root || !root.dataset.token || !window.fetch) return;
  const AGENT = root.dataset.agent;
  const TOKEN = root.dataset.token;
  const NS = "http://www.w3.org/2000/svg";
  const NODE_W = 248, NODE_H = 96, PORT_W = 124, HEAD = 28;
  const LANE_W = 208, LANE_H = 72, LANE_GAP = 40, LANE_ROOM = 168;
  const LABEL = {
    greeting: "Greeting", start: "Start", talk: "Talk", collect: "Collect", filter: "Filter",
    transfer_call: "Transfer Call", transfer_flow: "Transfer Flow", end_call: "End Call",
    webhook: "Webhook",
  };
  const ADDABLE = [
    ["talk", "Talk — says something"],
    ["collect", "Collect — asks for a value"],
    ["filter", "Filter — branches on conditions"],
    ["transfer_call", "Transfer Call — to a number or team"],
    ["transfer_flow", "Transfer Flow — continues in another flow"],
    ["end_call", "End Call — says goodbye"],
  ];
  const SYSTEM = ["caller_phone", "called_number", "call_id"];
  const ICONS = {
    greeting: ["fill", "M2,1 L11,6 L2,11 Z"],
    start: ["fill", "M2,1 L11,6 L2,11 Z"],
    talk: ["line", "M1,2 h10 v6 h-5 l-3,3 v-3 h-2 z"],
    collect: ["line", "M1,3 h10 v6 h-10 z M3.5,6 h5"],
    filter: ["line", "M1,1 h10 l-4,5 v5 l-2,-1 v-4 z"],
    transfer_call: ["line", "M1,6 h8 M6,3 l3,3 -3,3 M11,1 v10"],
    transfer_flow: ["line", "M1,3.5 h9 M7.5,1 l2.5,2.5 -2.5,2.5 M11,8.5 h-9 M4.5,6 l-2.5,2.5 2.5,2.5"],
    end_call: ["fill", "M2,2 h8 v8 h-8 z"],
    webhook: ["line", "M6,1 v6 M3,4.5 l3,3 3,-3 M1,9 v2 h10 v-2"],
  };
  const icon = (kind, x, y) => {
    const [mode, d] = ICONS[kind] || ICONS.talk;
    return s("path", { d, class: `icon ${mode}`, transform: `translate(${x},${y})` });
  };
  const OPS = {
    equals: "equals", not_equals: "does not equal", greater_than: "is greater than",
    less_than: "is less than", contains: "contains", exists: "is known", not_exists: "is not known",
  };
  const OPS_FOR = {
    string: ["equals", "not_equals", "contains", "exists", "not_exists"],
    number: ["equals", "not_equals", "greater_than", "less_than", "exists", "not_exists"],
    boolean: ["equals", "not_equals", "exists", "not_exists"],
    list: ["contains", "exists", "not_exists"],
  };

  const S = {
    doc: null, etag: null, flow: root.dataset.flow, pos: {}, problems: [], changes: null,
    undo: [], redo: [], selected: null, view: { x: 0, y: 0, k: 1 }, queue: Promise.resolve(),
    refused: false, fitted: {},
  };

  // ---- small helpers -------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c != null) e.append(c);
    return e;
  }
  function s(tag, attrs, ...children) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children.flat()) if (c != null) e.append(c);
    return e;
  }
  const clone = (v) => JSON.parse(JSON.stringify(v));
  const clip = (t, n) => {
    t = String(t || "").replace(/\s+/g, " ").trim();
    return t.length <= n ? t : t.slice(0, n - 1) + "…";
  };
  let uid = 0;
  const id = (p) => `${p}-${++uid}`;
  function say(text) {
    const live = document.getElementById("cv-live");
    if (live) { live.textContent = ""; setTimeout(() => { live.textContent = text; }, 30); }
  }

  async function api(method, path, body, etag) {
    const headers = { Authorization: "Bearer " + TOKEN, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (etag) headers["If-Match"] = etag;
    let res;
    try {
      res = await fetch(`/api/v1/agents/${AGENT}${path}`, {
        method, headers, credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      return { ok: false, status: 0, data: { detail: "the server could not be reached" } };
    }
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    return { ok: res.ok, status: res.status, data, etag: res.headers.get("ETag") };
  }

  // ---- the document --------------------------------------------------------------------
  const flowOf = (doc, key) => doc.flows.find((f) => f.key === key);
  const cur = () => flowOf(S.doc, S.flow);
  const blockOf = (f, key) => f && f.blocks.find((b) => b.key === key);
  const isEntry = (b) => b.kind === "greeting" || b.kind === "start";

  function outputs(b) {
    switch (b.kind) {
      case "greeting": case "start": case "talk": case "collect":
        return [{ label: "Next", to: b.next || null }];
      case "filter":
        return b.cases.map((c, i) => ({ label: c.name || `Case ${i + 1}`, to: c.next || null }))
          .concat([{ label: "Else", to: b.else || null, else: true }]);
      default: return [];
    }
  }
  function setOutput(b, i, to) {
    if (b.kind === "filter") {
      if (i < b.cases.length) b.cases[i].next = to; else b.else = to;
    } else if ("next" in b || ["greeting", "start", "talk", "collect"].includes(b.kind)) b.next = to;
  }
  function retarget(f, from, to) {
    for (const b of f.blocks) {
      outputs(b).forEach((o, i) => { if (o.to === from) setOutput(b, i, to); });
    }
  }
  function emptyBlock(kind, key) {
    const b = { key, kind };
    switch (kind) {
      case "talk": Object.assign(b, { message: "", next: null }); break;
      case "collect": Object.assign(b, { variable: "", prompt: "", next: null }); break;
      case "filter": Object.assign(b, { cases: [{ name: "", join: "and", conditions: [], next: null }], else: null }); break;
      case "transfer_call": Object.assign(b, { destination: "", department: "", message: "" }); break;
      case "transfer_flow": Object.assign(b, { flow: null }); break;
      case "end_call": Object.assign(b, { message: "", outcome: "completed" }); break;
    }
    return b;
  }
  function newKey(taken, base) {
    let n = 1;
    const have = new Set(taken);
    while (have.has(`${base}_${n}`)) n++;
    return `${base}_${n}`;
  }
  function summary(b) {
    const flowName = (k) => { const f = flowOf(S.doc, k); return f ? f.name : k; };
    switch (b.kind) {
      case "greeting": case "start": case "talk": return b.message || "(nothing to say yet)";
      case "collect": return b.variable ? `Asks for ${b.variable}${b.prompt ? " — " + b.prompt : ""}` : "(no variable yet)";
      case "filter": return outputs(b).map((o) => o.label).join("; ");
      case "transfer_call": {
        const to = [b.destination, b.department].filter(Boolean).join(" / ");
        return to ? `To ${to}` : "(no number or department yet)";
      }
      case "transfer_flow": return b.flow ? `Continues in ${flowName(b.flow)}` : "(no flow chosen yet)";
      case "end_call": return `${b.message || "Ends the call"} (${b.outcome || "completed"})`;
      default: return "";
    }
  }
  /** The variables conditions may use: declared (typed), system, and those a Collect fills. */
  function variables() {
    const out = new Map();
    for (const n of SYSTEM) out.set(n, { type: "string", from: "system" });
    for (const f of S.doc.flows) for (const b of f.blocks) {
      if (b.kind === "collect" && b.variable && !out.has(b.variable)) out.set(b.variable, { type: "string", from: `asked in ${f.name}` });
    }
    for (const v of S.doc.variables) out.set(v.name, { type: v.type, from: "declared" });
    return out;
  }

  // ---- problems ------------------------------------------------------------------------
  function problemIndex() {
    const fi = S.doc.flows.findIndex((f) => f.key === S.flow);
    const blocks = {}, actions = {}, other = [];
    for (const p of S.problems) {
      const m = /^\/flows\/(\d+)\/blocks\/(\d+)/.exec(p.pointer || "");
      const a = /^\/precall\/(\d+)/.exec(p.pointer || "");
      if (m && Number(m[1]) === fi) {
        const b = S.doc.flows[fi].blocks[Number(m[2])];
        if (b) (blocks[b.key] = blocks[b.key] || []).push(p.detail);
      } else if (a && S.doc.firstFlow === S.flow) {
        const x = S.doc.precall[Number(a[1])];
        if (x) (actions[x.key] = actions[x.key] || []).push(p.detail);
      } else if (!m) other.push(p.detail);
    }
    return { blocks, actions, other };
  }
  const unreachable = (list) => (list || []).some((d) => d.includes("no path from the flow's entry"));

  // ---- saving --------------------------------------------------------------------------
  /** Applies `change` to a copy of the draft and saves it (If-Match); undoable. */
  function commit(what, change, opts = {}) {
    S.queue = S.queue.then(async () => {
      if (S.refused) return;
      const before = S.doc;
      const next = clone(before);
      const r = change(next);
      if (r === false) return;
      const ok = await save(next, what);
      if (ok && !opts.noUndo) { S.undo.push({ doc: before, what }); S.redo = []; }
      if (ok && opts.after) opts.after();
      renderAll(ok && opts.keepPanel);
    });
    return S.queue;
  }
  async function save(next, what) {
    setStatus(`Saving: ${what}…`);
    const res = await api("PUT", "/draft", next, S.etag);
    if (res.ok) {
      S.doc = next;
      S.etag = res.etag;
      S.problems = res.data.problems || [];
      S.publishRefused = false;
      setStatus(`Saved: ${what}.`);
      refreshChanges();
      return true;
    }
    if (res.status === 412) {
      await stale();
      return false;
    }
    const errors = (res.data && res.data.errors) || [];
    const detail = errors.length ? errors.map((e) => e.detail).join("; ") : (res.data && res.data.detail) || `error ${res.status}`;
    setStatus(`Not saved: ${detail}`, true);
    return false;
  }
  async function stale() {
    S.refused = true;
    const c = await api("GET", "/draft/changes");
    const who = c.ok ? c.data.updatedBy : "someone else";
    const when = c.ok ? new Date(c.data.updatedAt).toLocaleString() : "meanwhile";
    const box = document.getElementById("cv-stale");
    box.hidden = false;
    box.querySelector(".who").textContent = `${who} saved the draft ${when}.`;
    box.querySelector("button").focus();
    setStatus("Your last change was not saved: the draft changed meanwhile.", true);
  }
  async function refreshChanges() {
    const [c, l] = await Promise.all([api("GET", "/draft/changes"), api("GET", "/draft/layout")]);
    if (l.ok) S.layout = l.data;
    if (c.ok) {
      S.changes = c.data;
      if (!S.publishRefused) S.problems = c.data.problems;
      renderTop();
      renderProblems();
      renderGraph();
      panelProblems();
    }
  }
  function undo() {
    const last = S.undo.pop();
    if (!last) { setStatus("Nothing to undo."); return; }
    const current = S.doc;
    S.queue = S.queue.then(async () => {
      if (await save(clone(last.doc), `undo ${last.what}`)) { S.redo.push({ doc: current, what: last.what }); syncPos(); }
      else S.undo.push(last);
      renderAll();
    });
  }
  function redo() {
    const last = S.redo.pop();
    if (!last) { setStatus("Nothing to redo."); return; }
    const current = S.doc;
    S.queue = S.queue.then(async () => {
      if (await save(clone(last.doc), `redo ${last.what}`)) { S.undo.push({ doc: current, what: last.what }); syncPos(); }
      else S.redo.push(last);
      renderAll();
    });
  }

  // ---- positions -----------------------------------------------------------------------
  function positions() {
    const f = cur();
    const pos = (S.pos[S.flow] = S.pos[S.flow] || {});
    for (const b of f.blocks) {
      if (b.position && !pos[b.key]) pos[b.key] = { x: b.position.x, y: b.position.y };
    }
    // A block the layout did not place yet goes below what leads to it.
    for (const b of f.blocks) {
      if (pos[b.key]) continue;
      const from = f.blocks.find((x) => pos[x.key] && outputs(x).some((o) => o.to === b.key));
      let at = from ? { x: pos[from.key].x, y: pos[from.key].y + NODE_H + 72 } : { x: 24, y: lowest(pos) + NODE_H + 72 };
      at = freeSpot(pos, at);
      pos[b.key] = at;
    }
    return pos;
  }
  /** After an undo or redo: the places the draft now keeps. */
  function syncPos() {
    for (const f of S.doc.flows) {
      const pos = (S.pos[f.key] = S.pos[f.key] || {});
      for (const b of f.blocks) if (b.position) pos[b.key] = { x: b.position.x, y: b.position.y };
    }
  }
  const lowest = (pos) => Object.values(pos).reduce((m, p) => Math.max(m, p.y), 0);
  function freeSpot(pos, at) {
    const spot = { ...at };
    while (Object.values(pos).some((p) => Math.abs(p.x - spot.x) < NODE_W && Math.abs(p.y - spot.y) < NODE_H)) spot.x += NODE_W + 32;
    return spot;
  }
  const width = (b) => Math.max(NODE_W, outputs(b).length * PORT_W);
  /** Writes every block's place into the flow of `doc`, so that the canvas looks the same next time. */
  function pin(doc) {
    const f = flowOf(doc, S.flow);
    const pos = S.pos[S.flow];
    for (const b of f.blocks) if (pos[b.key]) b.position = { x: Math.round(pos[b.key].x), y: Math.round(pos[b.key].y) };
  }

  // ---- the shell -----------------------------------------------------------------------
  let svg, vp, panel, stage, mapBox;
  function shell() {
    document.querySelectorAll(".editor, .graph-static, .unreachable-list, aside.draftbar, .flow-switcher, section.card.warn, .heading form[action$='/first']")
      .forEach((e) => { e.hidden = true; });
    // Renaming, Set as First Flow and deleting the flow move into the panel.
    const flowCard = document.querySelector("form[action$='/rename']");
    if (flowCard && flowCard.closest("section")) flowCard.closest("section").hidden = true;
    const heading = document.querySelector(".heading");
    if (heading) heading.classList.add("cv-heading");
    const addSelect = h("select", { id: "cv-add-kind", "aria-label": "Kind of block to add" },
      ADDABLE.map(([k, l]) => h("option", { value: k, text: LABEL[k], title: l })));
    const bar = h("div", { class: "cv-bar", role: "toolbar", "aria-label": "Canvas tools" },
      h("div", { class: "cv-group" }, addSelect,
        h("button", { type: "button", class: "button small primary", id: "cv-add", onclick: () => addBlock(addSelect.value), title: "Add a block (A)" }, "Add block")),
      h("div", { class: "cv-group" },
        h("button", { type: "button", class: "button small", id: "cv-undo", onclick: undo, title: "Undo (Ctrl+Z)" }, "↶ Undo"),
        h("button", { type: "button", class: "button small", id: "cv-redo", onclick: redo, title: "Redo (Ctrl+Shift+Z)" }, "↷ Redo")),
      h("div", { class: "cv-group" },
        h("button", { type: "button", class: "button small", "aria-label": "Zoom out", title: "Zoom out (−)", onclick: () => zoom(1 / 1.2) }, "−"),
        h("span", { class: "cv-zoom", id: "cv-zoom", "aria-live": "polite" }, "100%"),
        h("button", { type: "button", class: "button small", "aria-label": "Zoom in", title: "Zoom in (+)", onclick: () => zoom(1.2) }, "+"),
        h("button", { type: "button", class: "button small", id: "cv-fit", title: "Fit to screen (0)", onclick: fit }, "Fit"),
        h("button", { type: "button", class: "button small", id: "cv-tidy", title: "Lay the flow out afresh", onclick: tidy }, "Tidy up")),
      h("a", { class: "cv-list-view", href: `?view=list`, onclick: (e) => { e.currentTarget.href = `/admin/agents/${AGENT}/flows/${S.flow}?view=list`; } }, "List view"));
    svg = s("svg", { class: "canvas-svg", id: "cv-svg", role: "group", "aria-label": "Flow canvas: Tab moves between blocks, Enter opens one" },
      s("defs", {},
        s("marker", { id: "cv-arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
          s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" })),
        s("pattern", { id: "cv-dots", width: "20", height: "20", patternUnits: "userSpaceOnUse" },
          s("circle", { cx: "1", cy: "1", r: "1", fill: "#d5dae1" }))),
      s("rect", { class: "cv-bg", width: "100%", height: "100%", fill: "url(#cv-dots)" }));
    vp = s("g", { id: "cv-viewport" });
    svg.append(vp);
    mapBox = h("div", { class: "cv-map", "aria-label": "Map of the agent's flows" });
    stage = h("div", { class: "cv-stage" }, svg, mapBox,
      h("div", { class: "cv-hint", id: "cv-hint", hidden: true }));
    panel = h("aside", { class: "cv-panel", id: "cv-panel", "aria-labelledby": "cv-panel-title", tabindex: "-1" });
    const keys = h("details", { class: "cv-keys" }, h("summary", {}, "Keyboard and mouse"),
      h("dl", {},
        ...[["Tab / Shift+Tab", "next / previous block"], ["Enter", "open the block's settings"],
          ["Arrow keys (Shift: further)", "move the selected block"], ["A", "choose a block to add after the selected one (then Add block)"],
          ["D or Ctrl+D", "duplicate the selected block"], ["Delete", "delete the selected block (asks what its predecessors connect to)"],
          ["C", "connect: choose the output's target in the settings"],
          ["Ctrl+Z / Ctrl+Shift+Z", "undo / redo"], ["+ / − / 0", "zoom in / out / fit to screen"],
          ["Escape", "back to the canvas"],
          ["Drag a block", "move it (its place is saved)"], ["Drag from a ● output to a block", "connect"],
          ["+ on an arrow", "insert a block there"], ["Drag the background, wheel", "pan; Ctrl+wheel zooms"]]
          .map(([k, v]) => [h("dt", {}, h("kbd", { text: k })), h("dd", { text: v })])));
    const staleBox = h("div", { class: "cv-stale flash bad", id: "cv-stale", role: "alert", hidden: true },
      h("strong", {}, "Someone else changed this draft. "), h("span", { class: "who" }),
      " Your last change was not saved, and nothing was overwritten. ",
      h("button", { type: "button", class: "button small primary", onclick: () => { S.refused = false; document.getElementById("cv-stale").hidden = true; S.undo = []; S.redo = []; load(false); } }, "Reload the draft"));
    const top = h("div", { class: "cv-top" },
      h("nav", { class: "cv-tabs", id: "cv-tabs", "aria-label": "Flows of this agent" }),
      h("div", { class: "cv-draft", id: "cv-draft" }));
    const app = h("div", { class: "cv", id: "cv" }, top, staleBox, bar,
      h("div", { class: "cv-body" }, stage, panel),
      h("p", { class: "cv-status", id: "cv-live", role: "status", "aria-live": "polite" }),
      h("section", { class: "cv-problems", id: "cv-problems", "aria-label": "To finish" }),
      keys);
    root.append(app);
    wireStage();
    window.addEventListener("keydown", onKey);
    // The draft's panel closes on a click elsewhere, as a menu does.
    document.addEventListener("pointerdown", (e) => {
      if (S.showDraft && !e.target.closest("#cv-draft")) closeDraft();
    });
    window.addEventListener("popstate", () => {
      const m = /\/flows\/([^/?#]+)/.exec(location.pathname);
      if (m && flowOf(S.doc, m[1])) { S.flow = m[1]; S.selected = null; renderAll(); fit(); }
    });
  }
  function setStatus(text, bad) {
    const el = document.getElementById("cv-live");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("bad", !!bad);
  }

  // ---- top: tabs, draft badge, publish ---------------------------------------------------
  function renderTop() {
    const tabs = document.getElementById("cv-tabs");
    tabs.textContent = "";
    const list = h("ul", { role: "list" });
    for (const f of S.doc.flows) {
      const first = S.doc.firstFlow === f.key;
      list.append(h("li", {}, h("a", {
        href: `/admin/agents/${AGENT}/flows/${f.key}`, "aria-current": f.key === S.flow ? "page" : null,
        onclick: (e) => { e.preventDefault(); go(f.key); },
      }, h("bdi", { text: f.name }), first ? h("span", { class: "badge first", text: "First" }) : null)));
    }
    if (S.naming) {
      const input = h("input", { id: "cv-flow-name", maxlength: "100", placeholder: "Sales qualification", "aria-label": "Name of the new flow" });
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); createFlow(input.value); } if (e.key === "Escape") { S.naming = false; renderTop(); } });
      list.append(h("li", { class: "cv-naming" }, input, h("button", { type: "button", class: "button small primary", id: "cv-create-flow", onclick: () => createFlow(input.value) }, "Create"),
        h("button", { type: "button", class: "button small", onclick: () => { S.naming = false; renderTop(); } }, "Cancel")));
    } else list.append(h("li", {}, h("button", { type: "button", class: "button small link", id: "cv-new-flow", onclick: newFlow }, "+ New flow")));
    tabs.append(list);
    const d = document.getElementById("cv-draft");
    d.textContent = "";
    if (!S.changes) return;
    const n = S.changes.publishedVersion == null ? null : S.changes.changes.length;
    const problems = S.problems.length;
    const badge = h("button", { type: "button", class: `cv-badge${n === 0 ? " clean" : ""}`, id: "cv-badge", "aria-expanded": String(!!S.showDraft), "aria-controls": "cv-draft-panel", onclick: () => { S.showDraft = !S.showDraft; renderTop(); if (S.showDraft) loadVersions(); } },
      h("span", { class: `badge ${n === 0 ? "ok" : "warn"}`, text: n === 0 ? "Published" : "Draft" }),
      n === 0 ? ` Calls run version ${S.changes.publishedVersion}` : n == null ? " Not published yet" : ` ${n} change${n === 1 ? "" : "s"}`,
      problems ? h("span", { class: "cv-count bad", text: `${problems} to finish` }) : null);
    d.append(badge);
    if (!S.showDraft) return;
    const msg = h("input", { id: "cv-message", maxlength: "500", placeholder: "What this version changes", value: S.message || "" });
    msg.addEventListener("input", () => { S.message = msg.value; });
    const box = h("div", { class: "cv-draft-panel", id: "cv-draft-panel", role: "region", "aria-label": "Draft and publish" },
      h("h3", {}, "Changes not published"),
      S.changes.changes.length ? h("ul", { class: "changes" }, S.changes.changes.map((c) => h("li", { text: c }))) : h("p", { class: "muted", text: "None: the draft is the published version." }),
      problems ? h("p", { class: "field-error", text: `${problems} problem${problems === 1 ? "" : "s"} to finish first: marked in red on the canvas and listed under it.` }) : null,
      h("label", { for: "cv-message" }, "Message (optional)"), msg,
      h("div", { class: "actions" },
        h("button", { type: "button", class: "button primary", id: "cv-publish", onclick: publish, disabled: n === 0 }, "Publish"),
        h("a", { href: `/admin/agents/${AGENT}/draft`, class: "button small link" }, "Review page")),
      h("h3", {}, "Versions"),
      h("ol", { class: "cv-versions", id: "cv-versions" }, S.versions ? versionItems() : h("li", { class: "muted", text: "Loading…" })),
      h("a", { href: `/admin/agents/${AGENT}/versions` }, "All versions"));
    d.append(box);
  }
  /** Closes the draft's panel, leaving the rest of the top (a flow being named) as it is. */
  function closeDraft() {
    S.showDraft = false;
    const box = document.getElementById("cv-draft-panel");
    if (box) box.remove();
    const badge = document.getElementById("cv-badge");
    if (badge) badge.setAttribute("aria-expanded", "false");
  }
  async function loadVersions() {
    const r = await api("GET", "/versions");
    if (!r.ok) return;
    S.versions = r.data.versions;
    const list = document.getElementById("cv-versions");
    if (!list) return;
    list.textContent = "";
    list.append(...versionItems());
  }
  function versionItems() {
    return S.versions.slice(0, 8).map((v) => (h("li", {},
        h("a", { href: `/admin/agents/${AGENT}/versions/${v.version}` }, `Version ${v.version}`),
        v.live ? h("span", { class: "badge ok", text: "live" }) : null,
        h("span", { class: "muted", text: ` ${new Date(v.publishedAt).toLocaleString()} · ${v.publishedBy}${v.message ? " · " + v.message : ""} ` }),
        v.live ? null : h("button", { type: "button", class: "button small", onclick: () => restore(v.version) }, `Restore ${v.version}`))));
  }
  async function restore(n) {
    S.queue = S.queue.then(async () => {
      const r = await api("POST", `/versions/${n}/restore`, undefined, S.etag);
      if (r.status === 412) { await stale(); return; }
      if (!r.ok) { setStatus(`Not restored: ${(r.data && r.data.detail) || r.status}`, true); return; }
      S.undo.push({ doc: S.doc, what: `restore version ${n}` });
      await load(false, true);
      setStatus(`Version ${n} is the draft again: publish it to make calls run it.`);
    });
  }
  async function publish() {
    S.queue = S.queue.then(async () => {
      const body = S.message ? { message: S.message } : undefined;
      const r = await api("POST", "/publish", body, S.etag);
      if (r.status === 201) {
        S.message = "";
        S.publishRefused = false;
        setStatus(`Published as version ${r.data.version}: calls run it from now on.`);
        await refreshChanges();
        loadVersions();
        return;
      }
      if (r.status === 412) { await stale(); return; }
      if (r.data && r.data.errors) {
        S.problems = r.data.errors;
        S.publishRefused = true;
        setStatus(`Publish refused: ${r.data.errors.length} problem${r.data.errors.length === 1 ? "" : "s"} to finish, marked on the blocks concerned.`, true);
        renderAll();
        return;
      }
      setStatus(`Not published: ${(r.data && r.data.detail) || r.status}`, true);
    });
  }

  // ---- the graph -----------------------------------------------------------------------
  function renderGraph() {
    if (!S.doc) return;
    const f = cur();
    const pos = positions();
    const P = problemIndex();
    // Drawing again replaces every element of the graph: the one that had focus (a block
    // being moved with the arrow keys, say) gets it back, rather than leaving it on the page.
    const focused = vp.contains(document.activeElement) ? document.activeElement.id : null;
    vp.textContent = "";
    const edges = s("g", { class: "edges" }), nodes = s("g", { class: "nodes" }), extra = s("g", { class: "adders" });
    const box = (b) => ({ x: pos[b.key].x, y: pos[b.key].y, w: width(b), h: NODE_H });
    const right = Math.max(0, ...f.blocks.map((b) => pos[b.key].x + width(b)));
    // The pre-call lane, above the First Flow's Greeting.
    if (S.doc.firstFlow === S.flow) lane(f, pos, P, edges, nodes, right);
    for (const b of f.blocks) {
      const a = box(b);
      const outs = outputs(b);
      outs.forEach((o, i) => {
        const px = a.x + (i + 0.5) * a.w / outs.length, py = a.y + a.h;
        const t = o.to && blockOf(f, o.to);
        if (!t) return;
        const tb = box(t);
        const d = edgePath([px, py], [tb.x + tb.w / 2, tb.y], right);
        const title = `${o.label} → ${t.key}`;
        edges.append(s("path", { d, class: "edge", "marker-end": "url(#cv-arrow)" }, s("title", { text: title })));
        // Insert a block on this arrow.
        const mid = midpoint([px, py], [tb.x + tb.w / 2, tb.y], right);
        const add = s("g", { class: "edge-add", transform: `translate(${mid[0]},${mid[1]})`, "data-from": b.key, "data-out": String(i) },
          s("title", { text: `Insert a block on ${title}` }),
          s("circle", { r: "11" }), s("path", { d: "M-5,0 H5 M0,-5 V5" }));
        add.addEventListener("pointerdown", (e) => e.stopPropagation());
        add.addEventListener("click", (e) => { e.stopPropagation(); insertMenu(b.key, i, e); });
        extra.append(add);
      });
    }
    f.blocks.forEach((b, i) => nodes.append(node(b, i, box(b), P.blocks[b.key])));
    vp.append(edges, nodes, extra);
    if (focused) {
      const again = document.getElementById(focused);
      if (again) again.focus();
    }
    applyView();
    renderMap();
    const u = document.getElementById("cv-undo"), r = document.getElementById("cv-redo");
    if (u) { u.disabled = !S.undo.length; r.disabled = !S.redo.length; }
  }
  function node(b, i, a, problems) {
    const classes = ["node", `kind-${b.kind}`];
    if (S.selected === b.key) classes.push("selected");
    if (unreachable(problems)) classes.push("unreachable");
    if (problems && problems.some((d) => !d.includes("no path from the flow's entry"))) classes.push("unfinished");
    const label = LABEL[b.kind] || b.kind;
    const g = s("g", {
      class: classes.join(" "), tabindex: "0", role: "button", "data-key": b.key, id: `cv-node-${b.key}`,
      "aria-label": `${label} #${i + 1} ${b.key}: ${summary(b)}${problems ? ". To finish: " + problems.join("; ") : ""}`,
      "aria-pressed": String(S.selected === b.key),
    });
    g.append(
      s("rect", { x: a.x, y: a.y, width: a.w, height: a.h, rx: 10, class: "box" }),
      s("path", { d: `M${a.x},${a.y + 10} a10,10 0 0 1 10,-10 h${a.w - 20} a10,10 0 0 1 10,10 v${HEAD - 10} h${-a.w} z`, class: "head" }),
      icon(b.kind, a.x + 12, a.y + 8),
      s("text", { x: a.x + 32, y: a.y + 19, class: "kind", text: label }),
      s("text", { x: a.x + a.w - 14, y: a.y + 19, class: "num", text: `#${i + 1}` }),
      s("text", { x: a.x + 14, y: a.y + 50, class: "name", text: clip(b.key, 30) }));
    const outs = outputs(b);
    if (b.kind === "filter") {
      const slot = a.w / outs.length;
      outs.forEach((o, j) => g.append(s("text", { x: a.x + (j + 0.5) * slot, y: a.y + a.h - 14, class: `port-label${o.else ? " else" : ""}`, text: clip(o.label, Math.max(4, Math.floor((slot - 16) / 7))) })));
    } else {
      g.append(s("text", { x: a.x + 14, y: a.y + 74, class: "line", text: clip(summary(b), 32) }));
    }
    // Outputs: drag from one to a block to connect.
    outs.forEach((o, j) => {
      const cx = a.x + (j + 0.5) * a.w / outs.length;
      const port = s("g", { class: `port-g${o.to ? "" : " open"}`, "data-out": String(j) },
        s("title", { text: `${o.label}: drag to a block to connect` }),
        s("circle", { cx, cy: a.y + a.h, r: 14, class: "port-hit" }),
        s("circle", { cx, cy: a.y + a.h, r: 6, class: "port" }));
      port.addEventListener("pointerdown", (e) => startConnect(e, b.key, j));
      g.append(port);
    });
    if (problems) {
      g.append(s("circle", { cx: a.x + a.w - 6, cy: a.y, r: 10, class: "mark" }),
        s("text", { x: a.x + a.w - 6, y: a.y + 4, class: "mark-text", text: "!" }));
    }
    g.addEventListener("pointerdown", (e) => startDrag(e, b.key));
    g.addEventListener("focus", () => { S.focus = b.key; });
    return g;
  }
  function lane(f, pos, P, edges, nodes, right) {
    const entry = f.blocks.find(isEntry);
    const minX = Math.min(...Object.values(pos).map((p) => p.x));
    const minY = Math.min(...Object.values(pos).map((p) => p.y));
    const y = minY - LANE_ROOM;
    let x = entry && pos[entry.key] ? Math.min(pos[entry.key].x, minX + 400) : minX;
    nodes.append(s("text", { x, y: y - 12, class: "lane-title", text: "Before the call is answered" }));
    S.doc.precall.forEach((a, i) => {
      const problems = P.actions[a.key];
      const kind = a.kind;
      const g = s("g", { class: `node action kind-${kind}${problems ? " unfinished" : ""}${S.selected === "precall:" + a.key ? " selected" : ""}`, tabindex: "0", role: "button", "data-action": a.key, id: `cv-action-${a.key}`, "aria-label": `Pre-call ${LABEL[kind]} ${a.name}: ${actionLine(a)}` },
        s("rect", { x, y, width: LANE_W, height: LANE_H, rx: 10, class: "box" }),
        s("rect", { x, y, width: 6, height: LANE_H, rx: 3, class: "stripe" }),
        icon(kind, x + 16, y + 9),
        s("text", { x: x + 34, y: y + 20, class: "kind", text: LABEL[kind] }),
        s("text", { x: x + 16, y: y + 40, class: "name", text: clip(a.name, 24) }),
        s("text", { x: x + 16, y: y + 60, class: "line", text: clip(actionLine(a), 30) }));
      if (problems) g.append(s("circle", { cx: x + LANE_W - 16, cy: y + 16, r: 9, class: "mark" }), s("text", { x: x + LANE_W - 16, y: y + 20, class: "mark-text", text: "!" }));
      g.addEventListener("click", () => select("precall:" + a.key));
      nodes.append(g);
      if (i + 1 < S.doc.precall.length) edges.append(s("path", { d: `M${x + LANE_W},${y + LANE_H / 2} L${x + LANE_W + LANE_GAP - 2},${y + LANE_H / 2}`, class: "edge", "marker-end": "url(#cv-arrow)" }));
      x += LANE_W + LANE_GAP;
    });
    const addPre = s("g", { class: "lane-add", tabindex: "0", role: "button", "aria-label": "Add a pre-call action" },
      s("rect", { x, y: y + 16, width: 40, height: 40, rx: 20 }), s("path", { d: `M${x + 12},${y + 36} H${x + 28} M${x + 20},${y + 28} V${y + 44}` }),
      s("title", { text: "Add a pre-call action" }));
    addPre.addEventListener("click", () => select("precall:+"));
    nodes.append(addPre);
    if (!S.doc.precall.length) {
      nodes.append(s("text", { x: x + 52, y: y + 40, class: "edge-label", text: "No pre-call actions: calls start at the Greeting. + adds a Webhook, Filter or End Call." }));
    } else if (entry) {
      const p = pos[entry.key];
      const from = [(entry && pos[entry.key] ? Math.min(pos[entry.key].x, minX + 400) : minX) + LANE_W / 2, y + LANE_H];
      edges.append(s("path", { d: edgePath(from, [p.x + width(entry) / 2, p.y], right), class: "edge lane-edge", "marker-end": "url(#cv-arrow)" }));
    }
  }
  function actionLine(a) {
    if (a.kind === "webhook") return a.enabled ? `Waits up to ${+(a.waitMs / 1000).toFixed(1)} s for its data` : "Disabled";
    if (a.kind === "filter") {
      const r = a.cases.map((c, i) => `${c.name || "Case " + (i + 1)} → ${(flowOf(S.doc, c.flow) || {}).name || "?"}`);
      return r.length ? r.join("; ") : "No routes yet";
    }
    return `${a.conditions.length} condition${a.conditions.length === 1 ? "" : "s"} · ${a.outcome}`;
  }
  function edgePath([x1, y1], [x2, y2], right) {
    if (y2 > y1 + 16) {
      const dy = Math.max((y2 - y1) / 2, 24);
      return `M${x1},${y1} C${x1},${y1 + dy} ${x2},${y2 - dy} ${x2},${y2}`;
    }
    const side = right + 32;
    return `M${x1},${y1} L${x1},${y1 + 8} Q${x1},${y1 + 20} ${x1 + 12},${y1 + 20} L${side - 12},${y1 + 20} Q${side},${y1 + 20} ${side},${y1 + 8} L${side},${y2 - 8} Q${side},${y2 - 20} ${side - 12},${y2 - 20} L${x2 + 12},${y2 - 20} Q${x2},${y2 - 20} ${x2},${y2 - 8} L${x2},${y2}`;
  }
  function midpoint([x1, y1], [x2, y2], right) {
    if (y2 > y1 + 16) return [(x1 + x2) / 2, (y1 + y2) / 2];
    return [right + 32, (y1 + y2) / 2];
  }
  function renderMap() {
    mapBox.textContent = "";
    if (!S.layout || S.doc.flows.length < 2) { mapBox.hidden = true; return; }
    mapBox.hidden = false;
    const boxes = {};
    for (const b of S.layout.map) boxes[b.key] = b;
    const all = S.doc.flows.filter((f) => boxes[f.key]);
    const w = Math.max(...all.map((f) => boxes[f.key].x + boxes[f.key].width)) + 24;
    const hgt = Math.max(...all.map((f) => boxes[f.key].y + boxes[f.key].height)) + 24;
    const m = s("svg", { class: "flow-map", viewBox: `0 0 ${w} ${hgt}`, width: 170, role: "group", "aria-label": "Map of the agent's flows" },
      s("defs", {}, s("marker", { id: "cv-map-arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "6", markerHeight: "6", orient: "auto" }, s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))));
    for (const l of S.layout.links) {
      const a = boxes[l.from], b = boxes[l.to];
      if (a && b) m.append(s("path", { class: "edge", d: edgePath([a.x + a.width / 2, a.y + a.height], [b.x + b.width / 2, b.y], Math.max(a.x, b.x) + a.width), "marker-end": "url(#cv-map-arrow)" }));
    }
    for (const f of all) {
      const b = boxes[f.key];
      const first = S.doc.firstFlow === f.key;
      const a = s("a", { href: `/admin/agents/${AGENT}/flows/${f.key}`, class: `map-node${f.key === S.flow ? " current" : ""}` },
        s("title", { text: f.name }), s("rect", { x: b.x, y: b.y, width: b.width, height: b.height, rx: 8 }),
        s("text", { x: b.x + b.width / 2, y: b.y + 25, text: (first ? "▶ " : "") + clip(f.name, 20) }));
      a.addEventListener("click", (e) => { e.preventDefault(); go(f.key); });
      m.append(a);
    }
    mapBox.append(h("h3", {}, "Flows"), m);
  }

  // ---- view: zoom, pan, fit ------------------------------------------------------------
  function applyView() {
    vp.setAttribute("transform", `translate(${S.view.x},${S.view.y}) scale(${S.view.k})`);
    const z = document.getElementById("cv-zoom");
    if (z) z.textContent = `${Math.round(S.view.k * 100)}%`;
  }
  function zoom(f, cx, cy) {
    const r = svg.getBoundingClientRect();
    cx = cx == null ? r.width / 2 : cx; cy = cy == null ? r.height / 2 : cy;
    const k = Math.min(2, Math.max(0.2, S.view.k * f));
    S.view.x = cx - (cx - S.view.x) * (k / S.view.k);
    S.view.y = cy - (cy - S.view.y) * (k / S.view.k);
    S.view.k = k;
    applyView();
  }
  /** Pans so that the block `key` is in view, when it is not. */
  function reveal(key) {
    const p = S.pos[S.flow] && S.pos[S.flow][key];
    if (!p) return;
    const r = svg.getBoundingClientRect();
    const k = S.view.k;
    const x = p.x * k + S.view.x, y = p.y * k + S.view.y, w = NODE_W * k, hh = NODE_H * k;
    if (x >= 8 && y >= 8 && x + w <= r.width - 8 && y + hh + 24 <= r.height - 8) return;
    S.view.x = r.width / 2 - (p.x + NODE_W / 2) * k;
    S.view.y = r.height / 2 - (p.y + NODE_H / 2) * k;
    applyView();
  }
  /** Fits the whole flow in view; `atLeast` keeps the text readable (a first view), the
   *  rest of a long flow then below, to pan to. */
  function fit(atLeast) {
    const bb = vp.getBBox();
    const r = svg.getBoundingClientRect();
    if (!bb.width || !r.width) return;
    let k = Math.min(1, Math.max(0.2, Math.min((r.width - 48) / bb.width, (r.height - 48) / bb.height)));
    if (typeof atLeast === "number") k = Math.max(k, Math.min(atLeast, (r.width - 24) / NODE_W));
    S.view = { k, x: (r.width - bb.width * k) / 2 - bb.x * k, y: 24 - bb.y * k };
    applyView();
  }
  async function tidy() {
    const l = await api("GET", "/draft/layout?tidy=true");
    if (!l.ok) return;
    const f = l.data.flows.find((x) => x.key === S.flow);
    const pos = {};
    for (const b of f.blocks) pos[b.key] = { x: b.x, y: b.y };
    S.pos[S.flow] = pos;
    commit("tidy up the layout", (doc) => pin(doc), { after: fit });
  }
  let pan = null;
  function toCanvas(e) {
    const r = svg.getBoundingClientRect();
    return [(e.clientX - r.left - S.view.x) / S.view.k, (e.clientY - r.top - S.view.y) / S.view.k];
  }
  function wireStage() {
    svg.addEventListener("pointerdown", (e) => {
      if (e.target.closest(".node, .edge-add, .lane-add")) return;
      pan = { x: e.clientX, y: e.clientY, vx: S.view.x, vy: S.view.y, moved: false };
      svg.setPointerCapture(e.pointerId);
    });
    svg.addEventListener("pointermove", (e) => {
      if (!pan) return;
      S.view.x = pan.vx + e.clientX - pan.x;
      S.view.y = pan.vy + e.clientY - pan.y;
      pan.moved = pan.moved || Math.abs(e.clientX - pan.x) + Math.abs(e.clientY - pan.y) > 3;
      applyView();
    });
    svg.addEventListener("pointerup", () => {
      if (pan && !pan.moved && S.selected) { S.selected = null; renderGraph(); renderPanel(); }
      pan = null;
    });
    svg.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = svg.getBoundingClientRect();
      if (e.ctrlKey || e.metaKey) zoom(e.deltaY < 0 ? 1.1 : 1 / 1.1, e.clientX - r.left, e.clientY - r.top);
      else { S.view.x -= e.deltaX; S.view.y -= e.deltaY; applyView(); }
    }, { passive: false });
    svg.addEventListener("click", (e) => {
      const n = e.target.closest(".node[data-key]");
      if (n && !S.dragged) select(n.dataset.key);
    });
    svg.addEventListener("keydown", (e) => {
      const n = e.target.closest && e.target.closest(".node, .lane-add");
      if (!n) return;
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        if (n.dataset.key) select(n.dataset.key, true);
        else if (n.dataset.action) select("precall:" + n.dataset.action, true);
        else select("precall:+", true);
      }
    });
  }
  function startDrag(e, key) {
    if (e.button !== 0 || e.target.closest(".port-g")) return;
    e.stopPropagation();
    const [x0, y0] = toCanvas(e);
    const p = S.pos[S.flow][key];
    const d = { key, dx: x0 - p.x, dy: y0 - p.y, moved: false, sx: e.clientX, sy: e.clientY };
    S.dragged = false;
    const move = (ev) => {
      if (!d.moved && Math.abs(ev.clientX - d.sx) + Math.abs(ev.clientY - d.sy) < 4) return;
      d.moved = true;
      S.dragged = true;
      const [x, y] = toCanvas(ev);
      S.pos[S.flow][key] = { x: Math.round((x - d.dx) / 8) * 8, y: Math.round((y - d.dy) / 8) * 8 };
      if (!d.frame) d.frame = requestAnimationFrame(() => { d.frame = null; renderGraph(); });
    };
    const up = () => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      if (d.moved) {
        commit(`move ${key}`, (doc) => pin(doc));
        setTimeout(() => { S.dragged = false; }, 0);
      }
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }
  function startConnect(e, key, out) {
    if (e.button !== 0) return;
    e.stopPropagation();
    e.preventDefault();
    const f = cur();
    const b = blockOf(f, key);
    const a = S.pos[S.flow][key];
    const from = [a.x + (out + 0.5) * width(b) / outputs(b).length, a.y + NODE_H];
    const line = s("path", { class: "edge connecting", "marker-end": "url(#cv-arrow)" });
    vp.append(line);
    const move = (ev) => {
      const [x, y] = toCanvas(ev);
      line.setAttribute("d", `M${from[0]},${from[1]} L${x},${y}`);
      vp.querySelectorAll(".node.drop").forEach((n) => n.classList.remove("drop"));
      const t = document.elementFromPoint(ev.clientX, ev.clientY);
      const n = t && t.closest && t.closest(".node[data-key]");
      if (n && n.dataset.key !== key) n.classList.add("drop");
    };
    const up = (ev) => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      line.remove();
      const t = document.elementFromPoint(ev.clientX, ev.clientY);
      const n = t && t.closest && t.closest(".node[data-key]");
      if (!n || n.dataset.key === key) { renderGraph(); return; }
      const target = blockOf(f, n.dataset.key);
      if (isEntry(target)) { setStatus("A flow's entry cannot be connected to: calls start there.", true); renderGraph(); return; }
      connect(key, out, target.key);
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }
  function connect(key, out, to) {
    commit(`connect ${key} → ${to || "nothing"}`, (doc) => {
      const b = blockOf(flowOf(doc, S.flow), key);
      setOutput(b, out, to);
    });
  }

  // ---- editing -------------------------------------------------------------------------
  function select(key, focusPanel) {
    const other = S.selected !== key;
    S.selected = key;
    S.deleting = false;
    renderGraph();
    renderPanel();
    if (other) panel.scrollTop = 0;
    reveal(key);
    if (focusPanel) {
      const first = panel.querySelector("input, select, textarea, button");
      (first || panel).focus();
    }
  }
  function go(flowKey) {
    if (flowKey === S.flow) return;
    S.flow = flowKey;
    S.selected = null;
    history.pushState({}, "", `/admin/agents/${AGENT}/flows/${flowKey}`);
    const f = cur();
    document.title = `${f.name} · Precall`;
    const h1 = document.querySelector(".heading h1 bdi");
    if (h1) h1.textContent = f.name;
    const badge = document.querySelector(".heading h1 .badge.first");
    if (badge) badge.hidden = S.doc.firstFlow !== flowKey;
    const crumb = document.querySelector(".crumbs [aria-current] bdi");
    if (crumb) crumb.textContent = f.name;
    document.querySelectorAll(".heading form[action$='/first']").forEach((x) => { x.hidden = true; });
    renderAll();
    fit(0.75);
  }
  /** Adds a block of `kind` after the selected block (on its first free output), else alone. */
  function addBlock(kind, onOutput) {
    const f = cur();
    const after = S.selected && blockOf(f, S.selected);
    const key = newKey(f.blocks.map((b) => b.key), kind);
    const pos = S.pos[S.flow];
    let at;
    if (after) {
      const outs = outputs(after);
      const free = outs.findIndex((o) => !o.to);
      const i = onOutput != null ? onOutput : free >= 0 ? free : 0;
      at = freeSpot(pos, { x: pos[after.key].x + (outs.length > 1 ? (i - (outs.length - 1) / 2) * (NODE_W + 32) : 0), y: pos[after.key].y + NODE_H + 72 });
      if (outs.length) {
        const old = outs[i].to;
        pos[key] = at;
        commit(`add ${LABEL[kind]} after ${after.key}`, (doc) => {
          const g = flowOf(doc, S.flow);
          const b = emptyBlock(kind, key);
          if (old) { if (kind === "filter") b.else = old; else if ("next" in b) b.next = old; }
          g.blocks.push(b);
          setOutput(blockOf(g, after.key), i, key);
          pin(doc);
        }, { after: () => select(key) });
        return;
      }
    }
    at = freeSpot(pos, { x: 24, y: lowest(pos) + NODE_H + 72 });
    pos[key] = at;
    commit(`add ${LABEL[kind]}`, (doc) => { flowOf(doc, S.flow).blocks.push(emptyBlock(kind, key)); pin(doc); }, { after: () => select(key) });
  }
  function insertMenu(fromKey, out, e) {
    const old = document.getElementById("cv-insert");
    if (old) old.remove();
    const r = stage.getBoundingClientRect();
    const menu = h("div", { class: "cv-menu", id: "cv-insert", role: "menu", "aria-label": "Insert a block on this arrow", style: `left:${Math.min(e.clientX - r.left, r.width - 240)}px;top:${e.clientY - r.top}px` },
      ADDABLE.map(([k, l]) => h("button", { type: "button", role: "menuitem", class: `kind-${k}`, onclick: () => { menu.remove(); insertOn(fromKey, out, k); } }, h("span", { class: "dot" }), l)),
      h("button", { type: "button", role: "menuitem", class: "cancel", onclick: () => menu.remove() }, "Cancel"));
    menu.addEventListener("keydown", (ev) => {
      const items = [...menu.querySelectorAll("button")];
      const i = items.indexOf(document.activeElement);
      if (ev.key === "ArrowDown") { ev.preventDefault(); items[(i + 1) % items.length].focus(); }
      if (ev.key === "ArrowUp") { ev.preventDefault(); items[(i - 1 + items.length) % items.length].focus(); }
      if (ev.key === "Escape") { menu.remove(); }
    });
    stage.append(menu);
    menu.querySelector("button").focus();
  }
  /** Puts a new block of `kind` on the arrow leaving `fromKey`'s output `out`. */
  function insertOn(fromKey, out, kind) {
    const f = cur();
    const from = blockOf(f, fromKey);
    const old = outputs(from)[out].to;
    const key = newKey(f.blocks.map((b) => b.key), kind);
    const pos = S.pos[S.flow];
    const t = old && pos[old];
    // The new block takes the target's place; what is below moves down to make room.
    if (t) {
      const y0 = t.y;
      pos[key] = { x: t.x, y: y0 };
      for (const b of f.blocks) if (pos[b.key].y >= y0 - 8) pos[b.key] = { x: pos[b.key].x, y: pos[b.key].y + NODE_H + 72 };
    } else {
      pos[key] = freeSpot(pos, { x: pos[fromKey].x, y: pos[fromKey].y + NODE_H + 72 });
    }
    commit(`insert ${LABEL[kind]} after ${fromKey}`, (doc) => {
      const g = flowOf(doc, S.flow);
      const b = emptyBlock(kind, key);
      if (old) { if (kind === "filter") b.else = old; else if ("next" in b) b.next = old; }
      g.blocks.splice(g.blocks.findIndex((x) => x.key === fromKey) + 1, 0, b);
      setOutput(blockOf(g, fromKey), out, key);
      pin(doc);
    }, { after: () => select(key) });
  }
  function duplicate(key) {
    const f = cur();
    const b = blockOf(f, key);
    if (!b || isEntry(b)) { setStatus("A flow has one entry: it cannot be duplicated.", true); return; }
    const copyKey = newKey(f.blocks.map((x) => x.key), b.kind);
    const pos = S.pos[S.flow];
    pos[copyKey] = freeSpot(pos, { x: pos[key].x + 40, y: pos[key].y + 40 });
    commit(`duplicate ${key}`, (doc) => {
      const g = flowOf(doc, S.flow);
      const c = clone(blockOf(g, key));
      c.key = copyKey;
      g.blocks.splice(g.blocks.findIndex((x) => x.key === key) + 1, 0, c);
      pin(doc);
    }, { after: () => { select(copyKey); setStatus("Duplicated: connect what should lead to the copy."); } });
  }
  function remove(key, reconnect) {
    commit(`delete ${key}`, (doc) => {
      const g = flowOf(doc, S.flow);
      g.blocks = g.blocks.filter((b) => b.key !== key);
      retarget(g, key, reconnect || null);
      for (const v of doc.variables) if (v.source && v.source.flow === S.flow && v.source.block === key) v.source = null;
      delete S.pos[S.flow][key];
    }, { after: () => { S.selected = null; S.deleting = false; renderPanel(); } });
  }
  function newFlow() {
    S.naming = true;
    renderTop();
    document.getElementById("cv-flow-name").focus();
  }
  function createFlow(name) {
    S.naming = false;
    if (!name || !name.trim()) { renderTop(); return; }
    if (S.doc.flows.some((f) => f.name.toLowerCase() === name.trim().toLowerCase())) { setStatus(`Another flow is already named ${name.trim()}.`, true); renderTop(); return; }
    const key = newKey(S.doc.flows.map((f) => f.key), "flow");
    commit(`add flow ${name.trim()}`, (doc) => {
      doc.flows.push({ key, name: name.trim(), blocks: [{ key: "start", kind: "start", message: "", next: null }] });
    }, { after: () => go(key) });
  }

  // ---- the settings panel ----------------------------------------------------------------
  /** A field that saves itself: immediately for choices, once typing pauses for text. */
  function bind(input, what, apply) {
    let timer = null;
    const text = !(input.tagName === "SELECT" || input.type === "checkbox");
    const run = () => { clearTimeout(timer); timer = null; const v = input.type === "checkbox" ? input.checked : input.value; commit(what, (doc) => apply(doc, v), { keepPanel: text }); };
    if (input.tagName === "SELECT" || input.type === "checkbox") input.addEventListener("change", run);
    else {
      input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(run, 700); });
      input.addEventListener("blur", () => { if (timer) run(); });
    }
    return input;
  }
  function field(label, input, help) {
    const fid = input.id || (input.id = id("cv-f"));
    return h("div", { class: "cv-field" }, h("label", { for: fid }, label), input, help ? h("p", { class: "muted small", text: help }) : null);
  }
  function targetSelect(f, self, value, what, apply, label) {
    const sel = h("select", { id: id("cv-to"), "aria-label": label || null },
      h("option", { value: "", text: "Not connected" }),
      f.blocks.filter((b) => !isEntry(b) && b.key !== self).map((b) => h("option", { value: b.key, selected: b.key === value, text: `#${f.blocks.indexOf(b) + 1} ${LABEL[b.kind]} · ${b.key}` })));
    return bind(sel, what, (doc, v) => apply(doc, v || null));
  }
  /** Rebuilds the panel where the admin was in it (and in the page). */
  function renderPanel() {
    const top = panel.scrollTop, page = window.scrollY;
    panel.style.minHeight = `${panel.offsetHeight}px`;
    buildPanel();
    panel.style.minHeight = "";
    panel.scrollTop = top;
    if (window.scrollY !== page) window.scrollTo(window.scrollX, page);
  }
  function buildPanel() {
    panel.textContent = "";
    uid = 0;
    const f = cur();
    if (S.selected && S.selected.startsWith("precall:")) { precallPanel(S.selected.slice(8)); return; }
    const b = S.selected && blockOf(f, S.selected);
    if (!b) { flowPanel(f); return; }
    const i = f.blocks.indexOf(b);
    const P = problemIndex().blocks[b.key];
    const mut = (doc) => blockOf(flowOf(doc, S.flow), b.key);
    panel.append(h("h2", { id: "cv-panel-title", class: `kind-${b.kind}` }, h("span", { class: "dot" }), `${LABEL[b.kind]} #${i + 1}`));
    panel.append(h("ul", { class: "cv-panel-problems", id: "cv-panel-problems", role: "alert", hidden: !P }, (P || []).map((d) => h("li", { text: d.replace(/^.*?: /, "") }))));
    const name = h("input", { value: b.key, maxlength: "64", pattern: "[A-Za-z0-9_-]+", spellcheck: "false" });
    name.addEventListener("change", () => renameBlock(b.key, name.value.trim()));
    panel.append(field("Name", name, "Letters, digits, - and _; arrows and Collect variables follow a rename."));
    const text = (label, key, rows, help) => {
      const t = h(rows ? "textarea" : "input", { rows: rows || null, dir: "auto" });
      t.value = b[key] || "";
      return field(label, bind(t, `${b.key}: ${label.toLowerCase()}`, (doc, v) => { mut(doc)[key] = v; }), help);
    };
    switch (b.kind) {
      case "greeting": case "start": case "talk":
        panel.append(text("Message", "message", 3, "Use {{name}} or {{name|fallback}} for a variable."));
        panel.append(field("Next", targetSelect(f, b.key, b.next, `${b.key}: next`, (doc, v) => { mut(doc).next = v; })));
        break;
      case "collect": {
        const vars = variables();
        const list = h("datalist", { id: "cv-vars" }, [...vars.keys()].filter((n) => !SYSTEM.includes(n)).map((n) => h("option", { value: n })));
        const v = h("input", { list: "cv-vars", spellcheck: "false", placeholder: "budget" });
        v.value = b.variable || "";
        panel.append(field("Variable to fill", bind(v, `${b.key}: variable`, (doc, x) => { mut(doc).variable = x.trim(); }), "Skipped when the variable is already known (from a webhook, say)."), list);
        panel.append(text("Question", "prompt", 2));
        panel.append(field("Next", targetSelect(f, b.key, b.next, `${b.key}: next`, (doc, x) => { mut(doc).next = x; })));
        break;
      }
      case "filter":
        panel.append(casesEditor(b.cases, "next", (doc) => mut(doc).cases, (sel, c, j) => targetSelect(f, b.key, c.next, `${b.key}: case ${j + 1} target`, (doc, x) => { mut(doc).cases[j].next = x; }, `Case ${j + 1} leads to`)));
        panel.append(h("div", { class: "cv-else" }, field("Else (no case matched)", targetSelect(f, b.key, b.else, `${b.key}: else`, (doc, x) => { mut(doc).else = x; }))));
        break;
      case "transfer_call":
        panel.append(text("Destination number", "destination", 0, "International form (E.164), or in the agent's region."));
        panel.append(text("or department", "department", 0));
        panel.append(text("Message before transferring", "message", 2));
        break;
      case "transfer_flow": {
        const sel = h("select", {}, h("option", { value: "", text: "Choose a flow" }),
          S.doc.flows.filter((x) => x.key !== S.flow).map((x) => h("option", { value: x.key, selected: x.key === b.flow, text: x.name })));
        panel.append(field("Continue in", bind(sel, `${b.key}: flow`, (doc, x) => { mut(doc).flow = x || null; })));
        break;
      }
      case "end_call":
        panel.append(text("Last message", "message", 2));
        panel.append(text("Outcome tag", "outcome", 0));
        break;
    }
    // Block actions.
    const acts = h("div", { class: "cv-actions" });
    const outs = outputs(b);
    if (outs.length) {
      const kind = h("select", { "aria-label": "Kind of block to add after this one" }, ADDABLE.map(([k, l]) => h("option", { value: k, text: l })));
      // On which output (a Filter's case or Else): the block goes on that arrow.
      const free = Math.max(0, outs.findIndex((o) => !o.to));
      const on = outs.length > 1 ? h("select", { "aria-label": "On which output", id: "cv-add-on" },
        outs.map((o, j) => h("option", { value: String(j), selected: j === free, text: `on ${o.label}` }))) : null;
      acts.append(h("div", { class: "cv-row" }, kind, on, h("button", { type: "button", class: "button small", id: "cv-add-after", onclick: () => addBlock(kind.value, on ? Number(on.value) : undefined) }, "Add after")));
    }
    if (!isEntry(b)) {
      acts.append(h("div", { class: "cv-row" },
        h("button", { type: "button", class: "button small", id: "cv-duplicate", onclick: () => duplicate(b.key) }, "Duplicate"),
        h("button", { type: "button", class: "button small danger", id: "cv-delete", onclick: () => { S.deleting = true; renderPanel(); panel.querySelector("#cv-reconnect").focus(); } }, "Delete…")));
    }
    panel.append(acts);
    if (S.deleting && !isEntry(b)) {
      const own = outputs(b).length === 1 ? outputs(b)[0].to : null;
      const preds = f.blocks.filter((x) => outputs(x).some((o) => o.to === b.key));
      const sel = h("select", { id: "cv-reconnect" }, h("option", { value: "", text: "Nothing (not connected)" }),
        f.blocks.filter((x) => !isEntry(x) && x.key !== b.key).map((x) => h("option", { value: x.key, selected: x.key === own, text: `#${f.blocks.indexOf(x) + 1} ${LABEL[x.kind]} · ${x.key}` })));
      panel.append(h("div", { class: "cv-confirm", role: "group", "aria-label": "Delete this block" },
        h("p", {}, preds.length ? `${preds.map((x) => x.key).join(", ")} lead${preds.length === 1 ? "s" : ""} to it. After the delete, ${preds.length === 1 ? "it leads" : "they lead"} to:` : "Nothing leads to it."),
        field("What led to it leads to", sel),
        h("div", { class: "cv-row" },
          h("button", { type: "button", class: "button small danger", id: "cv-confirm-delete", onclick: () => remove(b.key, sel.value) }, "Delete block"),
          h("button", { type: "button", class: "button small", onclick: () => { S.deleting = false; renderPanel(); } }, "Cancel"))));
    }
  }
  /** The selected block's problems, refreshed without rebuilding the fields being typed in. */
  function panelProblems() {
    const ul = document.getElementById("cv-panel-problems");
    if (!ul || !S.selected || S.selected.startsWith("precall:")) return;
    const P = problemIndex().blocks[S.selected];
    ul.textContent = "";
    ul.hidden = !P;
    for (const d of P || []) ul.append(h("li", { text: d.replace(/^.*?: /, "") }));
  }
  /** With no block selected: the flow itself (name, First Flow, delete). */
  function flowPanel(f) {
    const first = S.doc.firstFlow === f.key;
    panel.append(h("h2", { id: "cv-panel-title" }, "Flow"),
      h("p", { class: "muted" }, "Click a block (or Tab to it and press Enter) to see and change its settings. Changes are saved to the draft as you make them; calls run the published version until you publish."));
    const name = h("input", { maxlength: "100", dir: "auto", id: "cv-flow-rename" });
    name.value = f.name;
    name.addEventListener("change", () => {
      const v = name.value.trim();
      if (!v) return;
      if (v === f.name) return;
      if (S.doc.flows.some((x) => x.key !== f.key && x.name.toLowerCase() === v.toLowerCase())) { setStatus(`Another flow is already named ${v}.`, true); name.value = f.name; return; }
      commit(`rename the flow to ${v}`, (doc) => { flowOf(doc, f.key).name = v; }, { after: () => { const t = document.querySelector(".heading h1 bdi"); if (t) t.textContent = v; } });
    });
    panel.append(field("Name of this flow", name));
    if (first) {
      panel.append(h("p", {}, h("span", { class: "badge first", text: "First Flow" }), " Calls start here, after the pre-call actions."));
      return;
    }
    panel.append(h("div", { class: "cv-actions" },
      h("button", { type: "button", class: "button small primary", id: "cv-set-first", onclick: () => setFirst(f.key) }, "Set as First Flow"),
      h("button", { type: "button", class: "button small danger", id: "cv-delete-flow", onclick: () => deleteFlow(f) }, "Delete this flow")));
  }
  function setFirst(key) {
    commit("set the First Flow", (doc) => {
      doc.firstFlow = key;
      // The First Flow begins with a Greeting, the others with a Start.
      for (const x of doc.flows) for (const b of x.blocks) if (isEntry(b)) b.kind = x.key === key ? "greeting" : "start";
    }, { after: () => {
      const badge = document.querySelector(".heading h1 .badge.first");
      if (badge) badge.hidden = false;
      setStatus("This is the First Flow of the draft: once published, calls start here.");
    } });
  }
  function deleteFlow(f) {
    const users = [];
    for (const x of S.doc.flows) for (const b of x.blocks) if (b.kind === "transfer_flow" && b.flow === f.key && x.key !== f.key) users.push(`${x.name} · ${b.key}`);
    for (const a of S.doc.precall) if (a.kind === "filter" && a.cases.some((c) => c.flow === f.key)) users.push(`pre-call ${a.name}`);
    if (users.length) { setStatus(`Not deleted: ${users.join(", ")} lead${users.length === 1 ? "s" : ""} to this flow.`, true); return; }
    if (!window.confirm(`Delete the flow ${f.name} from the draft?`)) return;
    commit(`delete the flow ${f.name}`, (doc) => {
      doc.flows = doc.flows.filter((x) => x.key !== f.key);
      for (const v of doc.variables) if (v.source && v.source.flow === f.key) v.source = null;
    }, { after: () => go(S.doc.firstFlow || S.doc.flows[0].key) });
  }
  function renameBlock(from, to) {
    if (to === from) return;
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(to)) { setStatus("A name is 1 to 64 letters, digits, - or _.", true); return; }
    if (blockOf(cur(), to)) { setStatus(`Another block is already named ${to}.`, true); return; }
    const pos = S.pos[S.flow];
    pos[to] = pos[from];
    commit(`rename ${from} to ${to}`, (doc) => {
      const g = flowOf(doc, S.flow);
      blockOf(g, from).key = to;
      retarget(g, from, to);
      for (const v of doc.variables) if (v.source && v.source.flow === S.flow && v.source.block === from) v.source.block = to;
      pin(doc);
    }, { after: () => select(to) });
  }

  // ---- conditions: chosen, not typed -----------------------------------------------------
  /** The cases of a Filter (block or pre-call): name, AND/OR, conditions, target; Else last. */
  function casesEditor(cases, target, get, targetField) {
    const wrap = h("div", { class: "cv-cases" }, h("h3", {}, "Cases"), h("p", { class: "muted small" }, "Tried in order; the first that matches wins."));
    cases.forEach((c, j) => {
      const box = h("fieldset", { class: "cv-case" }, h("legend", {}, `Case ${j + 1}`));
      const nm = h("input", { dir: "auto", placeholder: `Case ${j + 1}` });
      nm.value = c.name || "";
      box.append(field("Name", bind(nm, `case ${j + 1} name`, (doc, v) => { get(doc)[j].name = v; })));
      box.append(conditionsEditor(c, (doc) => get(doc)[j], `case ${j + 1}`));
      box.append(field("Then", targetField(null, c, j)));
      box.append(h("div", { class: "cv-row" },
        h("button", { type: "button", class: "button small", "aria-label": `Move case ${j + 1} up`, disabled: j === 0, onclick: () => commit(`move case ${j + 1} up`, (doc) => { const l = get(doc); [l[j - 1], l[j]] = [l[j], l[j - 1]]; }) }, "↑"),
        h("button", { type: "button", class: "button small", "aria-label": `Move case ${j + 1} down`, disabled: j + 1 === cases.length, onclick: () => commit(`move case ${j + 1} down`, (doc) => { const l = get(doc); [l[j + 1], l[j]] = [l[j], l[j + 1]]; }) }, "↓"),
        h("button", { type: "button", class: "button small danger", "aria-label": `Delete case ${j + 1}`, onclick: () => commit(`delete case ${j + 1}`, (doc) => { get(doc).splice(j, 1); }) }, "Delete case")));
      wrap.append(box);
    });
    wrap.append(h("button", { type: "button", class: "button small", id: "cv-add-case", onclick: () => commit("add a case", (doc) => { const c = { name: "", join: "and", conditions: [] }; c[target] = null; get(doc).push(c); }) }, "+ Add a case"));
    return wrap;
  }
  function conditionsEditor(c, get, what) {
    const vars = variables();
    const box = h("div", { class: "cv-conditions" });
    const join = h("select", { "aria-label": `${what}: how conditions combine` },
      h("option", { value: "and", selected: c.join !== "or", text: "All of these hold (AND)" }),
      h("option", { value: "or", selected: c.join === "or", text: "Any of these holds (OR)" }));
    box.append(field("Match", bind(join, `${what}: AND/OR`, (doc, v) => { get(doc).join = v; })));
    c.conditions.forEach((x, k) => {
      const known = vars.get(x.variable);
      const type = known ? known.type : "string";
      const vsel = h("select", { "aria-label": `${what} condition ${k + 1}: variable`, class: "cv-var" },
        known ? null : h("option", { value: x.variable, selected: true, text: x.variable ? `${x.variable} (unknown)` : "Choose a variable" }),
        [...vars.entries()].map(([n, v]) => h("option", { value: n, selected: n === x.variable, text: `${n} · ${v.type}` })));
      bind(vsel, `${what}: variable`, (doc, v) => {
        const cond = get(doc).conditions[k];
        const t = (vars.get(v) || { type: "string" }).type;
        cond.variable = v;
        if (!OPS_FOR[t].includes(cond.op)) cond.op = OPS_FOR[t][0];
        if (cond.op === "exists" || cond.op === "not_exists") delete cond.value;
        else cond.value = t === "number" ? 0 : t === "boolean" ? true : "";
      });
      const ops = OPS_FOR[type] || OPS_FOR.string;
      const wide = x.op === "exists" || x.op === "not_exists";
      const osel = h("select", { "aria-label": `${what} condition ${k + 1}: comparison`, class: wide ? "cv-op wide" : "cv-op" },
        ops.map((o) => h("option", { value: o, selected: o === x.op, text: OPS[o] })));
      bind(osel, `${what}: comparison`, (doc, v) => {
        const cond = get(doc).conditions[k];
        cond.op = v;
        if (v === "exists" || v === "not_exists") delete cond.value;
        else if (cond.value === undefined) cond.value = type === "number" ? 0 : type === "boolean" ? true : "";
      });
      let value = null;
      if (x.op !== "exists" && x.op !== "not_exists") {
        const label = `${what} condition ${k + 1}: value`;
        if (type === "boolean") {
          value = h("select", { "aria-label": label, class: "cv-value" }, h("option", { value: "true", selected: x.value === true, text: "true" }), h("option", { value: "false", selected: x.value === false, text: "false" }));
          bind(value, `${what}: value`, (doc, v) => { get(doc).conditions[k].value = v === "true"; });
        } else if (type === "number") {
          value = h("input", { type: "number", step: "any", "aria-label": label, class: "cv-value", value: x.value == null ? "" : String(x.value) });
          bind(value, `${what}: value`, (doc, v) => { const n = Number(v); get(doc).conditions[k].value = v === "" || !isFinite(n) ? 0 : n; });
        } else {
          value = h("input", { "aria-label": label, class: "cv-value", dir: "auto", value: x.value == null ? "" : String(x.value) });
          bind(value, `${what}: value`, (doc, v) => { get(doc).conditions[k].value = v; });
        }
      }
      const del = h("button", { type: "button", class: "button small link", "aria-label": `Remove ${what} condition ${k + 1}`, onclick: () => commit(`${what}: remove a condition`, (doc) => { get(doc).conditions.splice(k, 1); }) }, "×");
      box.append(h("div", { class: "cv-cond" }, k ? h("span", { class: "cv-join", text: c.join === "or" ? "or" : "and" }) : h("span", { class: "cv-join", text: "if" }), vsel, osel, value, del));
    });
    box.append(h("button", { type: "button", class: "button small link cv-add-cond", onclick: () => commit(`${what}: add a condition`, (doc) => {
      const first = [...vars.entries()].find(([, v]) => v.from !== "system") || [...vars.entries()][0];
      const t = first[1].type;
      const cond = { variable: first[0], op: OPS_FOR[t][0] };
      if (cond.op !== "exists") cond.value = t === "number" ? 0 : t === "boolean" ? true : "";
      get(doc).conditions.push(cond);
    }) }, "+ Condition"));
    return box;
  }
  function precallPanel(key) {
    if (key === "+") {
      panel.append(h("h2", { id: "cv-panel-title" }, "Add a pre-call action"),
        h("p", { class: "muted" }, "Pre-call actions run in order before the Greeting."),
        h("div", { class: "cv-actions" },
          h("a", { class: "button small", href: `/admin/agents/${AGENT}/actions/new` }, "Webhook…"),
          h("button", { type: "button", class: "button small", onclick: () => addAction("filter") }, "Filter: route some callers to another flow"),
          h("button", { type: "button", class: "button small", onclick: () => addAction("end_call") }, "End Call: refuse some calls")));
      return;
    }
    const i = S.doc.precall.findIndex((a) => a.key === key);
    const a = S.doc.precall[i];
    if (!a) { S.selected = null; renderPanel(); return; }
    const mut = (doc) => doc.precall.find((x) => x.key === key);
    panel.append(h("h2", { id: "cv-panel-title", class: `kind-${a.kind}` }, h("span", { class: "dot" }), `Pre-call ${LABEL[a.kind]}`));
    const P = problemIndex().actions[key];
    if (P) panel.append(h("ul", { class: "cv-panel-problems", role: "alert" }, P.map((d) => h("li", { text: d }))));
    const nm = h("input", { dir: "auto", maxlength: "100" });
    nm.value = a.name;
    panel.append(field("Name", bind(nm, `${a.name}: name`, (doc, v) => { mut(doc).name = v.trim() || a.name; })));
    if (a.kind === "webhook") {
      panel.append(h("p", {}, `Waits up to ${a.waitMs / 1000} s for what the sender posts. `),
        h("p", {}, h("a", { href: `/admin/agents/${AGENT}/actions/${key}/configure` }, "Configure"), " · ",
          h("a", { href: `/admin/agents/${AGENT}/actions/${key}/test` }, "Test"), " · ",
          h("a", { href: `/admin/agents/${AGENT}/actions/${key}/deliveries` }, "Deliveries")));
    } else if (a.kind === "filter") {
      panel.append(casesEditor(a.cases, "flow", (doc) => mut(doc).cases, (sel, c, j) => {
        const s2 = h("select", { "aria-label": `Case ${j + 1} starts the call in` }, h("option", { value: "", text: "Choose a flow" }),
          S.doc.flows.map((x) => h("option", { value: x.key, selected: x.key === c.flow, text: x.name })));
        return bind(s2, `case ${j + 1} flow`, (doc, v) => { mut(doc).cases[j].flow = v || null; });
      }));
      panel.append(h("p", { class: "muted small" }, "Else: the call starts in the First Flow."));
    } else {
      panel.append(conditionsEditor(a, mut, "End Call"));
      const msg = h("textarea", { rows: 2, dir: "auto" });
      msg.value = a.message;
      panel.append(field("Last message", bind(msg, "End Call message", (doc, v) => { mut(doc).message = v; })));
      const out = h("input", {});
      out.value = a.outcome;
      panel.append(field("Outcome tag", bind(out, "End Call outcome", (doc, v) => { mut(doc).outcome = v; })));
    }
    panel.append(h("div", { class: "cv-row" },
      h("button", { type: "button", class: "button small", disabled: i === 0, onclick: () => commit("move a pre-call action", (doc) => { const l = doc.precall; [l[i - 1], l[i]] = [l[i], l[i - 1]]; }) }, "← Earlier"),
      h("button", { type: "button", class: "button small", disabled: i + 1 === S.doc.precall.length, onclick: () => commit("move a pre-call action", (doc) => { const l = doc.precall; [l[i + 1], l[i]] = [l[i], l[i + 1]]; }) }, "Later →"),
      a.kind === "webhook" ? null : h("button", { type: "button", class: "button small danger", onclick: () => commit(`delete ${a.name}`, (doc) => { doc.precall.splice(i, 1); }, { after: () => { S.selected = null; } }) }, "Delete")));
  }
  function addAction(kind) {
    const key = newKey(S.doc.precall.map((a) => a.key), kind);
    const a = kind === "filter"
      ? { key, kind, name: "Route callers", cases: [{ name: "", join: "and", conditions: [], flow: null }] }
      : { key, kind, name: "Refuse some calls", join: "and", conditions: [], message: "", outcome: "refused" };
    commit(`add pre-call ${LABEL[kind]}`, (doc) => { doc.precall.push(a); }, { after: () => select("precall:" + key) });
  }

  // ---- problems list ---------------------------------------------------------------------
  function renderProblems() {
    const box = document.getElementById("cv-problems");
    box.textContent = "";
    if (!S.doc) return;
    const f = cur();
    const P = problemIndex();
    const items = [];
    for (const b of f.blocks) {
      const list = P.blocks[b.key];
      if (!list) continue;
      for (const d of list) {
        items.push(h("li", { class: unreachable([d]) ? "unreach" : "" },
          h("button", { type: "button", class: "button link", onclick: () => { select(b.key); const n = document.getElementById(`cv-node-${b.key}`); if (n) n.focus(); } }, `#${f.blocks.indexOf(b) + 1} ${LABEL[b.kind]} · ${b.key}`),
          " — ", d.replace(/^.*?#\d+ [A-Za-z ]+: /, "")));
      }
    }
    for (const [k, list] of Object.entries(P.actions)) for (const d of list) items.push(h("li", {}, h("button", { type: "button", class: "button link", onclick: () => select("precall:" + k) }, "Pre-call"), " — ", d));
    const elsewhere = S.problems.length - items.length;
    if (!items.length && !elsewhere) { box.append(h("p", { class: "ok-line" }, "✓ Nothing to finish in this flow.")); return; }
    box.append(h("h2", {}, S.publishRefused ? "Publish refused: finish these first" : "To finish before publishing"));
    if (items.length) box.append(h("ul", {}, items));
    if (elsewhere > 0) box.append(h("p", { class: "muted" }, `${elsewhere} more in other flows or the agent.`));
  }

  // ---- keyboard --------------------------------------------------------------------------
  function onKey(e) {
    const t = e.target;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key.toLowerCase() === "z" && !typing) { e.preventDefault(); if (e.shiftKey) redo(); else undo(); return; }
    if (mod && e.key.toLowerCase() === "y" && !typing) { e.preventDefault(); redo(); return; }
    if (e.key === "Escape") {
      const m = document.getElementById("cv-insert");
      if (m) { m.remove(); return; }
      if (S.showDraft) { closeDraft(); document.getElementById("cv-badge").focus(); return; }
      if (S.selected && panel.contains(t)) {
        const n = document.getElementById(`cv-node-${S.selected}`) || document.getElementById(`cv-action-${S.selected.slice(8)}`);
        if (n) { n.focus(); return; }
      }
      return;
    }
    if (typing || !S.doc) return;
    const onCanvas = t && t.closest && t.closest("#cv-svg");
    // The keys act on the block that has the focus, else on the selected one.
    const focusedNode = t && t.closest && t.closest(".node[data-key]");
    const key = focusedNode ? focusedNode.dataset.key : S.selected && !S.selected.startsWith("precall:") ? S.selected : null;
    if (mod && e.key.toLowerCase() === "d" && key) { e.preventDefault(); duplicate(key); return; }
    if (mod || e.altKey) return;
    if (!onCanvas && !(t === document.body)) return;
    const k = e.key;
    if (k === "+" || k === "=") { zoom(1.2); e.preventDefault(); }
    else if (k === "-") { zoom(1 / 1.2); e.preventDefault(); }
    else if (k === "0") { fit(); e.preventDefault(); }
    else if ((k === "a" || k === "A") ) { e.preventDefault(); const sel = document.getElementById("cv-add-kind"); sel.focus(); }
    else if ((k === "d" || k === "D") && key) { e.preventDefault(); duplicate(key); }
    else if ((k === "c" || k === "C") && key) { e.preventDefault(); select(key); const to = panel.querySelector("select[id^=cv-to]"); if (to) to.focus(); }
    else if ((k === "Delete" || k === "Backspace") && key) {
      e.preventDefault();
      const b = blockOf(cur(), key);
      if (isEntry(b)) { setStatus("A flow's entry cannot be deleted.", true); return; }
      S.selected = key; S.deleting = true; renderGraph(); renderPanel();
      panel.querySelector("#cv-reconnect").focus();
    } else if (k.startsWith("Arrow") && key) {
      e.preventDefault();
      const step = e.shiftKey ? 64 : 16;
      const p = S.pos[S.flow][key];
      const d = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[k];
      S.pos[S.flow][key] = { x: p.x + d[0], y: p.y + d[1] };
      renderGraph();
      const n = document.getElementById(`cv-node-${key}`);
      if (n) n.focus();
      clearTimeout(S.moveTimer);
      S.moveTimer = setTimeout(() => commit(`move ${key}`, (doc) => pin(doc), { after: () => { const m = document.getElementById(`cv-node-${key}`); if (m) m.focus(); } }), 500);
    }
  }

  // ---- start ---------------------------------------------------------------------------
  function renderAll(keepPanel) {
    if (!S.doc) return;
    const keep = document.activeElement && document.activeElement.id;
    if (!cur()) S.flow = S.doc.firstFlow || S.doc.flows[0].key;
    renderTop();
    renderGraph();
    if (!keepPanel) renderPanel();
    else panelProblems();
    renderProblems();
    if (keep && document.getElementById(keep) && document.activeElement === document.body) document.getElementById(keep).focus();
  }
  async function load(tidyUp, keepView) {
    const started = performance.now();
    const [d, l] = await Promise.all([api("GET", "/draft"), api("GET", "/draft/layout" + (tidyUp ? "?tidy=true" : ""))]);
    if (!d.ok || !l.ok) {
      setStatus(`The canvas could not load the draft: ${(d.data && d.data.detail) || (l.data && l.data.detail) || d.status}. Reload the page to use the forms.`, true);
      return;
    }
    S.doc = d.data;
    S.etag = d.etag;
    S.layout = l.data;
    S.pos = {};
    for (const f of l.data.flows) {
      S.pos[f.key] = {};
      for (const b of f.blocks) S.pos[f.key][b.key] = { x: b.x, y: b.y };
    }
    const selected = new URLSearchParams(location.search).get("block");
    if (selected && blockOf(cur(), selected)) S.selected = selected;
    renderAll();
    if (!keepView) fit(0.75);
    root.dataset.rendered = String(Math.round(performance.now() - started));
    root.classList.add("cv-ready");
    refreshChanges();
  }
  shell();
  load(false);
})();
