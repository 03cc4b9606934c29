// Shared by the pages: the API token, JSON requests, downloads, DOM and number helpers.
//
// The token (when the service has one) is asked for once, kept in sessionStorage (this tab
// only) and sent as an Authorization header; it never goes into a URL or the page's HTML.

const TOKEN_KEY = "store-monitor.token";
const SVG_NS = "http://www.w3.org/2000/svg";
let tokenNeeded = document.body.dataset.tokenRequired === "true";
let pendingPrompt = null;

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

/** Show the token dialog (once, however many requests wait for it); resolve when saved. */
export function askForToken(message) {
  if (pendingPrompt) return pendingPrompt;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-message").textContent = message;
  pendingPrompt = new Promise((resolve) => {
    const save = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) {
        input.focus();
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, value);
      input.value = "";
      form.removeEventListener("submit", save);
      dialog.close();
      pendingPrompt = null;
      resolve(value);
    };
    form.addEventListener("submit", save);
    dialog.showModal();
    input.focus();
  });
  return pendingPrompt;
}

// Nothing on the page works without the token: Escape does not close its dialog.
document.getElementById("token-dialog").addEventListener("cancel", (event) => {
  event.preventDefault();
});

document.getElementById("token-change")?.addEventListener("click", async () => {
  sessionStorage.removeItem(TOKEN_KEY);
  await askForToken("Enter the service's API token or your key.");
  window.location.reload();
});

let identity = null;

/** Who the tab's token is (its key's name, role and groups), asked once per page. */
export function whoAmI() {
  identity ??= getJSON("/whoami");
  return identity;
}

/** What a caller or a report covers: its groups, or every store. */
export function describeScope(groups) {
  return groups ? groups.join(", ") : "every store";
}

async function showIdentity() {
  const shown = document.getElementById("identity");
  try {
    const caller = await whoAmI();
    if (!caller.authentication_required) return;
    const name = caller.name ?? "API_TOKEN";
    shown.textContent = `${name} · ${caller.role} · ${describeScope(caller.groups)}`;
    shown.hidden = false;
  } catch {
    shown.hidden = true; // the page's own requests say what went wrong
  }
}

/** fetch() with the bearer token; asks for the token first if needed, again if refused. */
export async function request(path, init = {}) {
  let message = "This service needs an API token or key.";
  for (;;) {
    if (tokenNeeded && !storedToken()) await askForToken(message);
    const sent = storedToken();
    const headers = new Headers(init.headers || {});
    if (sent) headers.set("Authorization", `Bearer ${sent}`);
    const response = await fetch(path, { ...init, headers, cache: "no-store" });
    if (response.status !== 401) return response;
    if (storedToken() === sent) sessionStorage.removeItem(TOKEN_KEY);
    tokenNeeded = true;
    message = sent ? "That token was refused. Enter the service's API token or key." : message;
  }
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const message = body && body.message ? body.message : `${response.status} ${response.statusText}`;
  return new ApiError(response.status, message, body);
}

/** GET a JSON document; ApiError (with the service's message) unless the answer is 2xx. */
export async function getJSON(path) {
  const response = await request(path);
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

export async function postJSON(path, body) {
  const response = await request(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok)
    throw new ApiError(response.status, answer.message || response.statusText, answer);
  return answer;
}

/** Fetch a file with the token and save it through a Blob URL (the URL holds no token). */
export async function download(path, filename) {
  const response = await request(path);
  if (response.status !== 200) throw await errorOf(response);
  const blob = await response.blob();
  const href = URL.createObjectURL(blob);
  const link = h("a", { href, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(href), 30_000);
}

/** A link that downloads directly, or through `download` when a token must be sent. */
export function downloadLink(path, filename, text, label, onError) {
  const link = h("a", { href: path, download: filename, "aria-label": label }, text);
  link.addEventListener("click", (event) => {
    if (!tokenNeeded && !storedToken()) return; // the browser fetches it itself
    event.preventDefault();
    download(path, filename).catch(onError);
  });
  return link;
}

function setAttributes(node, attributes) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.setAttribute("class", value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
}

function appendChildren(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** An HTML element; text children are text nodes (never parsed as HTML). */
export function h(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attributes);
  appendChildren(node, children);
  return node;
}

/** An SVG element. */
export function s(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attributes);
  appendChildren(node, children);
  return node;
}

export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

export function showError(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

const grouped = new Intl.NumberFormat("en", { maximumFractionDigits: 2, minimumFractionDigits: 2 });
const counted = new Intl.NumberFormat("en");

/** A count with thousands separators: "13,603". */
export function formatCount(value) {
  return value === null || value === undefined ? "—" : counted.format(value);
}

/** A report value as the CSV writes it: two decimals (counts as integers, with separators). */
export function formatValue(column, value) {
  if (value === null || value === undefined) return "—";
  if (column.startsWith("outages_")) return counted.format(value);
  return value.toFixed(2);
}

export function formatTotal(value) {
  return value === null || value === undefined ? "—" : grouped.format(value);
}

export function formatPercent(value, digits = 1) {
  return value === null || value === undefined ? "—" : `${value.toFixed(digits)} %`;
}

/** "2023-01-25 17:25 UTC" from an ISO-8601 UTC instant. */
export function formatInstant(iso) {
  if (!iso) return "—";
  return `${iso.slice(0, 16).replace("T", " ")} UTC`;
}

export function shortId(reportId) {
  return reportId.slice(0, 8);
}

/** A store's page. The id goes in the query: any text (".", "..", "a/b", "?", "#") is carried
 * unchanged there, where a path segment "." or ".." would be dropped by the browser. */
export function storePath(storeId, params) {
  return `/store?${new URLSearchParams({ id: storeId, ...params })}`;
}

export function describeOptions(options) {
  const parts = [];
  if (options && options.stale_after) parts.push(`unknown after ${options.stale_after}`);
  if (options && options.outages) parts.push("outages");
  return parts.length ? parts.join(", ") : "none";
}

/** What the server tells every page (report states, windows and their units): one definition,
 * the server's, read from the page shell's JSON block. */
export const SERVICE = JSON.parse(document.getElementById("service-constants").textContent);
export const ACTIVE_STATUSES = new Set(SERVICE.active_statuses);
export const WINDOWS = SERVICE.windows;
const UNIT_ABBREVIATIONS = { minutes: "min", hours: "h" };

/** "min" or "h": the unit a window's uptime, downtime and unknown time are given in. */
export function windowUnit(window) {
  return UNIT_ABBREVIATIONS[SERVICE.window_units[window]];
}
const MEASURE_LABELS = {
  uptime: "Uptime",
  downtime: "Downtime",
  unknown: "Unknown",
  outages: "Outages",
  longest_outage: "Longest outage",
};

/** "Downtime, week (h)" for downtime_last_week. */
export function columnLabel(column) {
  if (column === "store_id") return "Store";
  if (column === "uptime_percent") return "Uptime %, week";
  const match = column.match(/^(.*)_last_(hour|day|week)$/);
  if (!match) return column;
  const [, measure, window] = match;
  const unit = measure === "outages" ? "" : ` (${windowUnit(window)})`;
  return `${MEASURE_LABELS[measure] || measure}, ${window}${unit}`;
}

/** Call `render` now and again after the window is resized (debounced). */
export function onResize(render) {
  let timer = null;
  let width = window.innerWidth;
  window.addEventListener("resize", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (window.innerWidth !== width) {
        width = window.innerWidth;
        render();
      }
    }, 150);
  });
}

showIdentity();
