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

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});

function text(el, value) {
  el.textContent = value == null ? "" : String(value);
  return el;
}

function renderDelivery(template, d, saveUrl, csrf) {
  const item = template.content.firstElementChild.cloneNode(true);
  item.dataset.id = d.id;
  const verdict = item.querySelector(".verdict");
  text(verdict, d.accepted ? "Accepted" : "Refused");
  verdict.className = "badge " + (d.accepted ? "ok" : "bad");
  text(item.querySelector(".status"), d.status);
  const when = item.querySelector(".when");
  when.dateTime = d.receivedAt;
  text(when, new Date(d.receivedAt).toLocaleTimeString());
  text(item.querySelector(".phone"), d.phoneNumber ? "Caller " + d.phoneNumber : "");
  const problems = item.querySelector(".problems");
  for (const p of d.problems) {
    problems.appendChild(text(document.createElement("li"), p));
  }
  if (!d.problems.length) problems.remove();
  const form = item.querySelector(".fields-form");
  if (!d.fields.length) {
    form.remove();
  } else {
    form.action = saveUrl;
    form.querySelector("input[name=csrf]").value = csrf;
    const body = form.querySelector("tbody");
    d.fields.forEach((f, i) => {
      const row = document.createElement("tr");
      const pick = document.createElement("td");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "field";
      box.value = f.name + ":" + f.type;
      box.id = "f-" + d.id + "-" + i;
      box.setAttribute("aria-label", "Save " + f.name + " as a variable");
      pick.appendChild(box);
      row.appendChild(pick);
      const name = document.createElement("td");
      const label = document.createElement("label");
      label.htmlFor = box.id;
      label.appendChild(text(document.createElement("code"), f.name));
      name.appendChild(label);
      row.appendChild(name);
      row.appendChild(text(document.createElement("td"), f.type));
      row.appendChild(text(document.createElement("td"), f.value));
      body.appendChild(row);
    });
  }
  return item;
}

/** Entries the Test viewer keeps on the page. */
const VIEWER_MAX = 200;

function startViewer() {
  const viewer = document.getElementById("viewer");
  if (!viewer || !window.EventSource) return;
  const template = document.getElementById("delivery-template");
  const empty = document.getElementById("viewer-empty");
  const live = document.getElementById("live");
  // Deliveries come oldest first with rising ids; a reconnect may send some again.
  let lastId = 0;
  const source = new EventSource(viewer.dataset.events);
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
    shown(renderDelivery(template, d, viewer.dataset.save, viewer.dataset.csrf));
    announce((d.accepted ? "Accepted" : "Refused") + " request received");
  });
  // Under a flood the server sends the newest requests and says how many it left out.
  source.addEventListener("skipped", (event) => {
    const count = JSON.parse(event.data).count;
    const item = document.createElement("li");
    item.className = "skipped";
    const more = count === 1 ? "1 more request" : count.toLocaleString() + " more requests";
    item.appendChild(text(document.createElement("span"), more + " arrived too fast to list here. "));
    const link = document.createElement("a");
    link.href = viewer.dataset.all;
    link.textContent = "See all deliveries";
    item.appendChild(link);
    shown(item);
    announce(more + " not listed");
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
