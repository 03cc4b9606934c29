// The reports page: start a report, watch the list (polling /reports), open or download.

import {
  ACTIVE_STATUSES,
  announce,
  describeOptions,
  describeScope,
  downloadLink,
  formatCount,
  formatInstant,
  getJSON,
  h,
  postJSON,
  shortId,
  showError,
  storePath,
  whoAmI,
} from "./common.js";

const FAST_POLL_MS = 1000;
const SLOW_POLL_MS = 10000;

const triggerForm = document.getElementById("trigger-form");
const triggerError = document.getElementById("trigger-error");
const listError = document.getElementById("list-error");
const body = document.getElementById("reports-body");
const empty = document.getElementById("reports-empty");
const rows = new Map();
let timer = null;
let submitting = false;

triggerForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (submitting) return;
  submitting = true;
  triggerForm.setAttribute("aria-busy", "true");
  showError(triggerError, "");
  const fields = triggerForm.elements;
  const wanted = {};
  if (fields.as_of.value.trim()) wanted.as_of = fields.as_of.value.trim();
  if (fields.stale_after.value.trim()) wanted.stale_after = fields.stale_after.value.trim();
  if (fields.outages.checked) wanted.outages = true;
  if (fields.group.value) wanted.group = fields.group.value;
  try {
    const answer = await postJSON("/trigger_report", wanted);
    announce(`Report ${shortId(answer.report_id)} is ${answer.status.toLowerCase()}.`);
    await refresh();
  } catch (error) {
    showError(triggerError, `The report was not started: ${error.message}`);
  } finally {
    submitting = false;
    triggerForm.removeAttribute("aria-busy");
  }
});

document.getElementById("store-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const storeId = event.target.elements.store_id.value.trim();
  if (storeId) window.location.assign(storePath(storeId));
});

async function refresh() {
  clearTimeout(timer);
  refreshIncidents();
  let active = false;
  try {
    const { reports } = await getJSON("/reports?limit=50");
    render(reports);
    active = reports.some((item) => ACTIVE_STATUSES.has(item.status));
    showError(listError, "");
  } catch (error) {
    showError(listError, `The reports could not be loaded: ${error.message}`);
  }
  timer = setTimeout(refresh, active ? FAST_POLL_MS : SLOW_POLL_MS);
}

/** Update rows in place (focus stays where it is), newest first. */
function render(reports) {
  const seen = new Set();
  reports.forEach((item, index) => {
    let row = rows.get(item.report_id);
    if (!row) {
      row = createRow(item);
      rows.set(item.report_id, row);
    }
    updateRow(row, item);
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
    seen.add(item.report_id);
  });
  for (const [reportId, row] of rows) {
    if (!seen.has(reportId)) {
      row.remove();
      rows.delete(reportId);
    }
  }
  empty.hidden = reports.length > 0;
}

function createRow(item) {
  const progress = h("progress", { max: "1", value: "0" });
  // data-label: the column's name, shown beside each value when the list is narrow.
  const row = h(
    "tr",
    { dataset: { reportId: item.report_id } },
    h("td", { "data-label": "Created" }, formatInstant(item.created_at)),
    h("td", { class: "mono", "data-label": "Report" }, shortId(item.report_id)),
    h("td", { class: "status-cell", "data-label": "Status" }),
    h("td", { "data-label": "Progress" }, progress, " ", h("span", { class: "progress-text" })),
    h("td", { "data-label": "As of" }, formatInstant(item.as_of)),
    h("td", { "data-label": "Options" }, describeOptions(item.options)),
    h("td", { "data-label": "Stores of" }, describeScope(item.scope)),
    h("td", { "data-label": "By" }, item.created_by ?? "—"),
    h("td", { class: "number stores-cell", "data-label": "Stores" }),
    h("td", { class: "links-cell", "data-label": "Open or download" }),
  );
  row.progress = progress;
  return row;
}

function updateRow(row, item) {
  const percent = Math.round((item.progress || 0) * 100);
  row.progress.value = item.progress || 0;
  row.progress.setAttribute("aria-label", `Report ${shortId(item.report_id)}: ${percent} % done`);
  row.querySelector(".progress-text").textContent = `${percent} %`;
  row.cells[4].textContent = formatInstant(item.as_of);
  row.querySelector(".stores-cell").textContent = item.row_count ?? "—";
  const shown = `${item.status}|${item.warning || ""}`;
  if (row.dataset.shown === shown) return;
  row.dataset.shown = shown;
  const statusCell = row.querySelector(".status-cell");
  statusCell.replaceChildren(h("span", { class: `status status-${item.status}` }, item.status));
  if (item.error) statusCell.append(h("span", { class: "status-detail" }, item.error));
  // A report waiting with no worker to run it (a broker, no worker seen lately) says so.
  if (item.warning) statusCell.append(h("span", { class: "status-detail warning" }, item.warning));
  row.querySelector(".links-cell").replaceChildren(links(item));
}

function links(item) {
  if (item.status !== "Complete") return "";
  const id = item.report_id;
  const name = shortId(id);
  const failed = (error) => showError(listError, `The download failed: ${error.message}`);
  return h(
    "span",
    { class: "links" },
    h("a", { href: `/report/${id}`, "aria-label": `Open report ${name}` }, "Open"),
    downloadLink(
      `/get_report/${id}`,
      `report_${id}.csv`,
      "CSV",
      `Download report ${name} as CSV`,
      failed,
    ),
    downloadLink(
      `/get_report/${id}?format=json`,
      `report_${id}.json`,
      "JSON",
      `Download report ${name} as JSON`,
      failed,
    ),
  );
}

// --------------------------------------------------------------------------- down now

const downCount = document.getElementById("down-count");
const downError = document.getElementById("down-error");
const incidentList = document.getElementById("open-incidents");
const incidentsEmpty = document.getElementById("open-empty");

async function refreshIncidents() {
  try {
    const answer = await getJSON("/incidents?state=open&limit=50");
    renderIncidents(answer);
    showError(downError, "");
  } catch (error) {
    showError(downError, `The open incidents could not be loaded: ${error.message}`);
  }
}

/** "Down now: N stores", then each open incident linking to its store's page. */
function renderIncidents({ down_now: down, incidents }) {
  downCount.textContent = `${formatCount(down)} ${down === 1 ? "store" : "stores"}`;
  incidentList.replaceChildren(
    ...incidents.map((incident) =>
      h(
        "li",
        { class: incident.down_now ? "incident down" : "incident" },
        h("a", { href: storePath(incident.store_id), class: "mono" }, incident.store_id),
        ` down since ${formatInstant(incident.started_at)}, `,
        `${minutes(incident.business_downtime_seconds)} of business downtime`,
        incident.down_now ? "" : " (closed now)",
      ),
    ),
  );
  incidentsEmpty.hidden = incidents.length > 0;
}

function minutes(seconds) {
  return `${formatCount(Math.round(seconds / 60))} min`;
}

/** Let the caller pick the group a report covers, when there is a choice to make. */
async function offerGroups() {
  let caller;
  try {
    caller = await whoAmI();
  } catch {
    return; // the list's own request says what went wrong
  }
  const groups = caller.report_groups || [];
  if (!groups.length) return;
  const all = caller.groups ? `All my groups (${describeScope(caller.groups)})` : "Every store";
  const select = document.getElementById("group");
  select.replaceChildren(
    h("option", { value: "" }, all),
    ...groups.map((group) => h("option", { value: group }, `Group ${group}`)),
  );
  document.getElementById("group-field").hidden = false;
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refresh();
});

offerGroups();
refresh();
