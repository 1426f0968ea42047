// Precall console: copy buttons, confirmations, and the live Test viewer.
"use strict";

function announce(text) {
  let region = document.getElementById("sr-announcer");
  if (!region) {
    region = document.createElement("div");
    region.id = "sr-announcer";
    region.className = "sr-only";
    region.setAttribute("aria-live", "polite");
    document.body.appendChild(region);
  }
  region.textContent = text;
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const label = button.textContent;
  try {
    await copyText(source.textContent.trim());
    button.textContent = "Copied";
    announce("Copied to the clipboard");
  } catch (e) {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = label; }, 1500);
});

// A destructive button's form leads to a confirmation page (GET: it changes nothing), so
// that it asks first without scripts too. Here the dialog asks instead, and once it is
// confirmed the form posts, with the page's CSRF token, as the confirmation page would.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.dataset.confirm) return;
  if (!window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  if (form.method.toLowerCase() !== "get") return;
  const token = document.querySelector("meta[name=csrf-token]");
  if (!token) return;
  event.preventDefault();
  const csrf = document.createElement("input");
  csrf.type = "hidden";
  csrf.name = "csrf";
  csrf.value = token.content;
  form.appendChild(csrf);
  form.method = "post";
  form.submit();
});

function text(el, value) {
  el.textContent = value == null ? "" : String(value);
  return el;
}

/** User text in an element of its own, isolated from the page's direction. */
function isolated(tag, value) {
  const el = text(document.createElement(tag), value);
  el.dir = "auto";
  return el;
}

// Times: the page says them in UTC; here they become the reader's local time and how long
// ago they were ("2 minutes ago"), with the exact time, local and UTC, on hover.
const RELATIVE = window.Intl && Intl.RelativeTimeFormat
  ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" })
  : null;
const UNITS = [
  ["year", 365 * 86400], ["month", 30 * 86400], ["week", 7 * 86400],
  ["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1],
];

function relative(date, now) {
  const secs = (date.getTime() - now.getTime()) / 1000;
  if (Math.abs(secs) < 5) return RELATIVE.format(0, "second");
  for (const [unit, size] of UNITS) {
    if (Math.abs(secs) >= size) return RELATIVE.format(Math.trunc(secs / size), unit);
  }
  return RELATIVE.format(Math.trunc(secs), "second");
}

/** `6 Dec 2026, 09:07:15 UTC`, as the server writes times. */
function utcText(date) {
  return date.toLocaleString("en-GB", {
    timeZone: "UTC", day: "numeric", month: "short", year: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  }) + " UTC";
}

function localTime(el, now) {
  const date = new Date(el.getAttribute("datetime"));
  if (!RELATIVE || isNaN(date.getTime())) return;
  if (!el.dataset.utc) el.dataset.utc = el.textContent.trim() || utcText(date);
  const sameDay = date.toDateString() === now.toDateString();
  const local = sameDay
    ? date.toLocaleTimeString()
    : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
  el.textContent = local + " (" + relative(date, now) + ")";
  el.title = date.toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" })
    + " · " + el.dataset.utc;
}

function localTimes(root) {
  const now = new Date();
  for (const el of (root || document).querySelectorAll("time[datetime]")) localTime(el, now);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes();
  // "2 minutes ago" goes on being true.
  setInterval(localTimes, 30000);
});

/**
 * A delivery as the page's server renders it: the verdict, status, time and caller, the
 * problems, and the fields, each ticked to be saved as a variable unless the draft already
 * declares it.
 */
function renderDelivery(template, d, viewer) {
  const item = template.content.firstElementChild.cloneNode(true);
  item.dataset.id = d.id;
  const verdict = item.querySelector(".verdict");
  text(verdict, d.accepted ? "Accepted" : "Refused");
  verdict.className = "verdict badge " + (d.accepted ? "ok" : "bad");
  text(item.querySelector(".status"), d.status);
  const when = item.querySelector(".when time");
  when.setAttribute("datetime", d.receivedAt);
  localTime(when, new Date());
  const phone = item.querySelector(".phone");
  if (d.phoneNumber) {
    phone.append("Caller ", isolated("bdi", d.phoneNumber));
  } else {
    phone.remove();
  }
  const problems = item.querySelector(".problems");
  for (const p of d.problems) problems.appendChild(isolated("li", p));
  if (!d.problems.length) problems.remove();
  const form = item.querySelector(".fields-form");
  if (!d.fields.length) {
    form.remove();
    return item;
  }
  const declared = new Set(JSON.parse(viewer.dataset.declared || "[]"));
  form.action = viewer.dataset.save;
  form.querySelector("input[name=csrf]").value = viewer.dataset.csrf;
  const body = form.querySelector("tbody");
  let unsaved = 0;
  d.fields.forEach((f, i) => {
    const saved = declared.has(f.name);
    const row = document.createElement("tr");
    const name = document.createElement("td");
    const code = text(document.createElement("code"), f.name);
    if (d.accepted) {
      const pick = document.createElement("td");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = "f-" + d.id + "-" + (i + 1);
      box.checked = true;
      if (saved) {
        box.disabled = true;
      } else {
        box.name = "field";
        box.value = f.name + ":" + f.type;
        unsaved += 1;
      }
      pick.appendChild(box);
      row.appendChild(pick);
      const label = document.createElement("label");
      label.htmlFor = box.id;
      label.appendChild(code);
      const hint = text(document.createElement("span"),
        saved ? ": saved as a variable" : ": save as a variable");
      hint.className = "sr-only";
      label.appendChild(hint);
      name.appendChild(label);
    } else {
      name.appendChild(code);
    }
    if (saved) {
      const badge = text(document.createElement("span"), "saved as variable");
      badge.className = "badge ok saved";
      name.append(" ", badge);
    }
    row.appendChild(name);
    row.appendChild(text(document.createElement("td"), f.type));
    const value = document.createElement("td");
    value.className = "value";
    value.appendChild(isolated("bdi", f.value));
    row.appendChild(value);
    body.appendChild(row);
  });
  if (!d.accepted) {
    // Refused: its fields are shown, not offered as variables.
    form.querySelector(".save-col").remove();
    const table = form.querySelector(".table-wrap");
    form.replaceWith(table);
  } else if (!unsaved) {
    form.querySelector("button[type=submit]").remove();
    form.querySelector(".all-saved").hidden = false;
  } else {
    form.querySelector(".all-saved").remove();
  }
  return item;
}

/** Entries the Test viewer keeps on the page. */
const VIEWER_MAX = 200;

/** The webhook viewer's note of `count` requests it could not list, with a link to them. */
function skippedNote(count, href, label) {
  const item = document.createElement("li");
  item.className = "skipped";
  const more = count === 1 ? "1 more request" : count.toLocaleString() + " more requests";
  item.appendChild(text(document.createElement("span"), more + " arrived too fast to list here. "));
  const link = document.createElement("a");
  link.href = href;
  link.textContent = label;
  item.appendChild(link);
  announce(more + " not listed");
  return item;
}

function startViewer() {
  const viewer = document.getElementById("viewer");
  if (!viewer || !window.EventSource) return;
  const template = document.getElementById("delivery-template");
  const empty = document.getElementById("viewer-empty");
  const live = document.getElementById("live");
  live.textContent = "Connecting…";
  // Deliveries come oldest first with rising ids; the page already shows those up to
  // `data-last`, and a reconnect may send some again.
  let lastId = Number(viewer.dataset.last) || 0;
  const url = viewer.dataset.events + (lastId ? "?after=" + lastId : "");
  const source = new EventSource(url);
  source.onopen = () => { live.textContent = "Listening"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "Reconnecting…"; live.className = "live"; };
  const shown = (item) => {
    viewer.prepend(item);
    if (empty) empty.hidden = true;
    // The page keeps the latest entries; every delivery stays on the Deliveries page.
    while (viewer.children.length > VIEWER_MAX) viewer.lastElementChild.remove();
  };
  source.addEventListener("delivery", (event) => {
    const d = JSON.parse(event.data);
    if (d.id <= lastId) return;
    lastId = d.id;
    shown(renderDelivery(template, d, viewer));
    announce((d.accepted ? "Accepted" : "Refused") + " request received");
  });
  // Under a flood the server sends the newest requests and says how many it left out.
  source.addEventListener("skipped", (event) => {
    shown(skippedNote(JSON.parse(event.data).count, viewer.dataset.all, "See all deliveries"));
  });

  // Requests refused without a valid key are counted, not listed: the last hour's count.
  const refusals = document.getElementById("refusals");
  source.addEventListener("refusals", (event) => {
    if (refusals) refusals.textContent = JSON.parse(event.data).text;
  });

  const sample = document.getElementById("sample-form");
  if (sample) {
    sample.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = sample.querySelector("button");
      button.disabled = true;
      try {
        await fetch(sample.action + "?js=true", {
          method: "POST",
          body: new URLSearchParams(new FormData(sample)),
          credentials: "same-origin",
        });
      } finally {
        button.disabled = false;
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", startViewer);

/** One request to a voice platform connection, as its Test step lists it. */
function renderRequest(e, calls) {
  const item = document.createElement("li");
  item.className = "delivery";
  const head = document.createElement("div");
  head.className = "delivery-head";
  const badge = text(document.createElement("span"),
    !e.accepted ? "Refused" : e.declined ? "Declined" : "Answered");
  badge.className = "verdict badge " + (!e.accepted ? "bad" : e.declined ? "warn" : "ok");
  const status = text(document.createElement("span"), e.status);
  status.className = "status";
  const when = document.createElement("span");
  when.className = "when";
  const date = new Date(e.receivedAt);
  const time = text(document.createElement("time"), utcText(date));
  time.setAttribute("datetime", date.toISOString());
  localTime(time, new Date());
  when.appendChild(time);
  head.append(badge, " ", status, " ", when);
  if (e.caller) {
    const caller = document.createElement("span");
    caller.className = "phone";
    caller.append("Caller ", isolated("bdi", e.caller));
    head.append(" ", caller);
  }
  if (e.callId) {
    const call = text(document.createElement("a"), "Call");
    call.href = calls + encodeURIComponent(e.callId);
    call.setAttribute("aria-label", "Call " + e.callId);
    head.append(" ", call);
  }
  const answer = text(document.createElement("pre"), e.answer);
  answer.className = "answer";
  item.append(head, isolated("p", e.verdict), answer);
  return item;
}

/** The Test step of a voice platform connection: its requests as they arrive. */
function startConnectViewer() {
  const list = document.getElementById("connect-viewer");
  if (!list || !window.EventSource) return;
  const live = document.getElementById("connect-live");
  const empty = document.getElementById("connect-empty");
  // Requests come oldest first with rising ids; the page shows those up to `data-last`,
  // and the browser says which it had when it reconnects.
  let lastId = Number(list.dataset.last) || 0;
  const source = new EventSource(list.dataset.events + "?after=" + lastId);
  live.textContent = "Connecting…";
  source.onopen = () => {
    live.textContent = "Live: new requests appear as they arrive.";
    live.className = "live on";
  };
  const stopped = (why, href, label) => {
    source.close();
    live.textContent = why + " ";
    const link = document.createElement("a");
    link.href = href;
    link.textContent = label;
    live.appendChild(link);
    live.className = "live";
  };
  source.onerror = () => {
    // The browser gives up when the stream cannot be had again (the session ended, or the
    // connection is gone); otherwise it is trying again.
    if (source.readyState === EventSource.CLOSED) {
      stopped("Not live: the page could not reach the server's list of requests.", location.pathname, "Reload");
    } else {
      live.textContent = "Reconnecting…";
      live.className = "live";
    }
  };
  source.addEventListener("gone", () => {
    stopped("Not live: this connection was deleted, and its URL no longer answers.", list.dataset.back, "Voice platforms");
    announce("This connection was deleted");
  });
  // The page keeps as many requests as the server does.
  const max = Number(list.dataset.max) || VIEWER_MAX;
  const shown = (item) => {
    list.prepend(item);
    if (empty) empty.hidden = true;
    while (list.children.length > max) list.lastElementChild.remove();
  };
  source.addEventListener("request", (event) => {
    const e = JSON.parse(event.data);
    if (e.id <= lastId) return;
    lastId = e.id;
    shown(renderRequest(e, list.dataset.calls));
    announce((!e.accepted ? "Refused" : e.declined ? "Declined" : "Answered") + " request received");
  });
  // Under a flood the server forgets the oldest requests before the page sees them: one
  // running count above the list, which the newest requests cannot push out of it.
  const skipped = document.getElementById("connect-skipped");
  let missed = 0;
  source.addEventListener("skipped", (event) => {
    missed += JSON.parse(event.data).count;
    const more = missed === 1 ? "1 request" : missed.toLocaleString() + " requests";
    skipped.textContent = more + " arrived too fast to list here since the page opened.";
    skipped.hidden = false;
    announce(more + " not listed");
  });
}

document.addEventListener("DOMContentLoaded", startConnectViewer);

/** The Setup step of a connection: the scheme choice is Vapi's only. */
function linkSchemeToPlatform() {
  const platform = document.getElementById("platform");
  const scheme = document.getElementById("scheme");
  if (!platform || !scheme || !scheme.querySelector('option[value=""]')) return;
  const sync = () => { scheme.disabled = platform.value !== "vapi"; };
  platform.addEventListener("change", sync);
  sync();
}

document.addEventListener("DOMContentLoaded", linkSchemeToPlatform);
