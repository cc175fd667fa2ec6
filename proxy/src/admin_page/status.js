// The admin status page: the JSON views (/routes, /certificates, /ingresses) for a person.
// Everything shown comes from Ingresses and files that others write, so it is set as text,
// never parsed as HTML (the listener's Content-Security-Policy forbids inline script too).
"use strict";

const REFRESH_MS = 5000;
const EXPIRING_DAYS = 14;
const search = document.getElementById("search");

search.value = new URLSearchParams(location.search).get("q") || "";
search.addEventListener("input", () => {
  const url = new URL(location.href);
  if (search.value) url.searchParams.set("q", search.value);
  else url.searchParams.delete("q");
  history.replaceState(null, "", url);
  filter();
});

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    td.append(cell instanceof Node ? cell : document.createTextNode(String(cell)));
    tr.append(td);
  }
  return tr;
}

// Hides the rows and attention items that do not contain every word of the search.
function filter() {
  const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const node of document.querySelectorAll("tbody tr, #attention-list li")) {
    const text = node.textContent.toLowerCase();
    node.hidden = !words.every((w) => text.includes(w));
  }
}

async function view(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${path} answered ${response.status}`);
  return response.json();
}

const VERDICT_ORDER = { refused: 0, differs: 1, ok: 2 };

// The hosts each source (`Ingress NS/NAME`, a file's line) routes, from /routes.
function hostsBySource(view) {
  const hosts = new Map();
  for (const route of view.routes) {
    const list = hosts.get(route.source) || [];
    if (!list.includes(route.host)) list.push(route.host);
    hosts.set(route.source, list);
  }
  return hosts;
}

function ingresses(all, hosts, attention) {
  const rows = document.getElementById("ingresses-rows");
  const empty = document.getElementById("ingresses-empty");
  rows.replaceChildren();
  rows.parentElement.hidden = all === null || all.length === 0;
  if (all === null) {
    empty.textContent = "Gatehouse runs without --kubernetes: no Ingresses.";
    empty.hidden = false;
    return;
  }
  empty.hidden = all.length > 0;
  empty.textContent = "No Ingresses of this class.";
  all.sort((a, b) =>
    VERDICT_ORDER[a.verdict] - VERDICT_ORDER[b.verdict] ||
    `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  for (const ingress of all) {
    const name = `${ingress.namespace}/${ingress.name}`;
    const notes = el("ul", undefined, "notes");
    for (const note of ingress.notes) notes.append(el("li", note));
    const served = (hosts.get(`Ingress ${name}`) || []).join(", ");
    const tr = row([el("span", ingress.verdict, ingress.verdict), name, served, notes]);
    tr.dataset.verdict = ingress.verdict;
    rows.append(tr);
    if (ingress.verdict === "refused") {
      attention.push([`Ingress ${name} is refused (its paths answer 503): ${ingress.notes[0] || ""}`, "refused"]);
    }
  }
}

function expiry(days, expired) {
  if (expired) return ["expired", "expired"];
  if (days <= EXPIRING_DAYS) return [`${days} days`, "expiring"];
  return [`${days} days`, "ok"];
}

function certificates(all, attention) {
  const rows = document.getElementById("certificates-rows");
  rows.replaceChildren();
  for (const cert of all) {
    const [text, state] = expiry(cert.expires_in_days, cert.expired);
    const date = new Date(cert.not_after * 1000).toISOString().slice(0, 10);
    const tr = row([cert.certificate, date, el("span", text, state)]);
    tr.dataset.state = state;
    rows.append(tr);
    if (state !== "ok") {
      const when = cert.expired ? `expired on ${date}` : `expires in ${text} (${date})`;
      attention.push([`Certificate ${cert.certificate} ${when}`, state]);
    }
  }
}

// Problems with endpoints, once per service and address however many paths share them:
// what is wrong → where it is served.
function endpoints(service, problems, where) {
  const note = (what) => problems.set(what, [...(problems.get(what) || []), where]);
  const list = el("ul", undefined, "endpoints");
  for (const e of service.endpoints) {
    const state = e.in_rotation ? "in" : "out";
    list.append(el("li", `${e.address} ${e.in_rotation ? "in rotation" : "out of rotation"}`, state));
    if (!e.in_rotation) note(`Endpoint ${e.address} of service ${service.name} is out of rotation`);
  }
  if (service.endpoints.length === 0) {
    list.append(el("li", "no endpoints", "out"));
    note(`Service ${service.name} has no endpoints`);
  }
  return list;
}

function routes(view, attention) {
  const rows = document.getElementById("routes-rows");
  const problems = new Map();
  rows.replaceChildren();
  for (const route of view.routes) {
    if (route.unavailable) {
      attention.push([`Host ${route.host} answers 503: ${route.unavailable}`, "refused"]);
    }
    for (const path of route.paths) {
      const where = `${route.host}${path.path}`;
      const service = el("span", path.service.name);
      if (path.canary) service.append(el("span", ` (canary: ${path.canary.name})`));
      const cells = [route.host, `${path.path} (${path.match})`, service,
        endpoints(path.service, problems, where), route.source];
      rows.append(row(cells));
    }
  }
  if (view.default_service) {
    rows.append(row(["(any other host)", "/", view.default_service.name,
      endpoints(view.default_service, problems, "any other host"), ""]));
  }
  for (const [what, where] of problems) {
    attention.push([`${what} (serves ${where.join(", ")})`, "out"]);
  }
}

async function refresh() {
  const updated = document.getElementById("updated");
  try {
    const [r, c, i] = await Promise.all([view("/routes"), view("/certificates"), view("/ingresses")]);
    const attention = [];
    ingresses(i, hostsBySource(r), attention);
    certificates(c, attention);
    routes(r, attention);
    const list = document.getElementById("attention-list");
    list.replaceChildren(...attention.map(([text, state]) => el("li", text, state)));
    if (attention.length === 0) list.append(el("li", "Nothing: every Ingress is served, no certificate expires within 14 days, every endpoint is in rotation.", "ok"));
    filter();
    updated.textContent = `updated ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s`;
    updated.className = "";
  } catch (e) {
    updated.textContent = `could not refresh: ${e.message} (showing the last answer)`;
    updated.className = "stale";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
