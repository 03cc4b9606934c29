// A report's page: summary, uptime histogram, and the stores table (sorted, filtered and
// paged by the server: only one page of stores is ever in the browser).

import {
  ApiError,
  WINDOWS,
  announce,
  columnLabel,
  describeOptions,
  formatCount,
  formatInstant,
  formatPercent,
  formatTotal,
  formatValue,
  getJSON,
  h,
  onResize,
  s,
  showError,
  storePath,
  windowUnit,
} from "./common.js";

const PAGE_SIZE = 50;
const RETRY_MS = 2000;
// Shown at first (the picker adds the others); the store and the sorted column always are.
const DEFAULT_COLUMNS = [
  "uptime_percent",
  "downtime_last_hour",
  "downtime_last_day",
  "downtime_last_week",
  "unknown_last_week",
  "outages_last_week",
  "longest_outage_last_week",
];
const NARROW_COLUMNS = ["uptime_percent", "downtime_last_week"];
const narrowScreen = window.matchMedia("(max-width: 600px)");
const ASCENDING_FIRST = new Set([
  "store_id",
  "uptime_percent",
  "uptime_last_hour",
  "uptime_last_day",
  "uptime_last_week",
]);
const WORST_BY = [
  ["downtime_last_week", "desc", "Downtime, last week"],
  ["uptime_percent", "asc", "Uptime %, last week (lowest first)"],
  ["unknown_last_week", "desc", "Unknown time, last week"],
  ["outages_last_week", "desc", "Outages, last week"],
  ["longest_outage_last_week", "desc", "Longest outage, last week"],
  ["downtime_last_day", "desc", "Downtime, last day"],
  ["downtime_last_hour", "desc", "Downtime, last hour"],
];

const reportId = document.body.dataset.reportId;
const context = document.getElementById("report-context");
const errorBox = document.getElementById("report-error");
const storesTable = document.getElementById("stores-table");
const statusLine = document.getElementById("stores-status");
const filter = document.getElementById("filter");
const worstBy = document.getElementById("worst-by");
const previous = document.getElementById("previous-page");
const next = document.getElementById("next-page");
const pageLabel = document.getElementById("page-label");

const params = new URLSearchParams(window.location.search);
const state = {
  sort: params.get("sort") || "downtime_last_week",
  order: params.get("order") === "asc" ? "asc" : "desc",
  q: params.get("q") || "",
  shown: new Set(),
  offset: Math.max(0, Number.parseInt(params.get("offset") || "0", 10) || 0),
};
let columns = [];
let shownRows = [];
let summary = null;
let matched = 0;
let loading = 0;

async function start() {
  try {
    summary = await getJSON(`/reports/${encodeURIComponent(reportId)}/summary`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) {
      context.textContent = `${error.message} This page loads it when it is done.`;
      setTimeout(start, RETRY_MS);
      return;
    }
    context.textContent = "";
    showError(errorBox, `This report cannot be shown: ${error.message}`);
    return;
  }
  columns = summary.columns;
  if (![...columns, "uptime_percent"].includes(state.sort)) state.sort = "downtime_last_week";
  context.textContent =
    `As of ${formatInstant(summary.as_of)} · ${formatCount(summary.stores)} stores · ` +
    `options: ${describeOptions(summary.options)}`;
  document.getElementById("report-body").hidden = false;
  renderSummary();
  renderHistogram();
  onResize(renderHistogram);
  setUpControls();
  await loadStores();
}

// --------------------------------------------------------------------------- summary

function card(label, value, detail) {
  return h(
    "div",
    {},
    h("dt", {}, label),
    h("dd", {}, value, detail ? h("small", {}, detail) : null),
  );
}

function renderSummary() {
  const week = summary.windows.week;
  const cards = [
    card("Stores", formatCount(summary.stores)),
    card("Business hours covered", `${formatTotal(week.business)} h`, "last week, all stores"),
    card("Uptime", formatPercent(week.uptime_percent, 2), "last week, of known business time"),
    card(
      "Downtime",
      `${formatTotal(week.downtime)} h`,
      `${formatCount(summary.stores_with_downtime)} of ${formatCount(summary.stores)} ` +
        "stores had some",
    ),
  ];
  if (week.unknown !== null)
    cards.push(card("Unknown", `${formatTotal(week.unknown)} h`, "no poll near enough"));
  if (summary.outages) {
    cards.push(
      card(
        "Outages",
        formatCount(summary.outages.total_last_week),
        `in ${formatCount(summary.outages.stores_with_outages)} stores; ` +
          `longest ${formatTotal(summary.outages.longest_last_week)} h`,
      ),
    );
  }
  document.getElementById("summary-cards").replaceChildren(...cards);
  renderWindowsTable();
}

/** Totals with a row per measure and a column per window (narrow enough for a phone). */
function renderWindowsTable() {
  const table = document.getElementById("windows-table");
  const windows = WINDOWS;
  const measures = [
    ["Business time", "business"],
    ["Uptime", "uptime"],
    ["Downtime", "downtime"],
    ...(summary.windows.week.unknown !== null ? [["Unknown", "unknown"]] : []),
  ];
  table.tHead.replaceChildren(
    h(
      "tr",
      {},
      h("th", { scope: "col" }, "Last"),
      windows.map((name) => {
        return h("th", { scope: "col", class: "number" }, `${name} (${windowUnit(name)})`);
      }),
    ),
  );
  table.tBodies[0].replaceChildren(
    ...measures.map(([label, key]) =>
      h(
        "tr",
        {},
        h("th", { scope: "row" }, label),
        windows.map((name) =>
          h("td", { class: "number" }, formatTotal(summary.windows[name][key])),
        ),
      ),
    ),
    h(
      "tr",
      {},
      h("th", { scope: "row" }, "Uptime %"),
      windows.map((name) =>
        h("td", { class: "number" }, formatPercent(summary.windows[name].uptime_percent, 2)),
      ),
    ),
  );
}

function renderHistogram() {
  const figure = document.getElementById("histogram");
  const bins = summary.histogram.bins;
  const width = Math.max(300, Math.min(figure.clientWidth || 640, 900));
  const height = 220;
  const margin = { top: 20, right: 8, bottom: 40, left: 40 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const most = Math.max(1, ...bins.map((bin) => bin.count));
  const slot = plotWidth / bins.length;
  const label = (bin) =>
    bin.low === bin.high ? "100 % exactly" : `${trim(bin.low)}–${trim(bin.high)} %`;
  const description = bins.map((bin) => `${label(bin)}: ${formatCount(bin.count)}`).join("; ");
  const svg = s(
    "svg",
    {
      viewBox: `0 0 ${width} ${height}`,
      width,
      height,
      role: "img",
      "aria-labelledby": "histogram-svg-title histogram-svg-desc",
    },
    s("title", { id: "histogram-svg-title" }, "Number of stores per uptime % bin, last week"),
    s("desc", { id: "histogram-svg-desc" }, description),
  );
  const ticks = niceTicks(most);
  for (const tick of ticks) {
    const y = margin.top + plotHeight - (tick / most) * plotHeight;
    svg.append(
      s("line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: y, y2: y }),
      s(
        "text",
        {
          class: "axis muted",
          x: margin.left - 6,
          y: y + 4,
          "text-anchor": "end",
          "font-size": 11,
        },
        formatCount(tick),
      ),
    );
  }
  bins.forEach((bin, index) => {
    const barHeight = (bin.count / most) * plotHeight;
    const x = margin.left + index * slot + 2;
    const y = margin.top + plotHeight - barHeight;
    const full = bin.low === bin.high;
    svg.append(
      s(
        "rect",
        {
          class: full ? "bar full" : "bar",
          x,
          y,
          width: Math.max(1, slot - 4),
          height: barHeight,
          "data-count": bin.count,
        },
        s("title", {}, `${label(bin)}: ${formatCount(bin.count)} stores`),
      ),
    );
    if (bin.count > 0) {
      svg.append(
        s(
          "text",
          { x: x + (slot - 4) / 2, y: y - 4, "text-anchor": "middle", "font-size": 11 },
          formatCount(bin.count),
        ),
      );
    }
    const showEdge = slot >= 34 || index % 2 === 0;
    if (!full && showEdge) {
      svg.append(
        s(
          "text",
          {
            class: "axis muted",
            x: margin.left + index * slot,
            y: height - 24,
            "text-anchor": "middle",
            "font-size": 11,
          },
          trim(bin.low),
        ),
      );
    }
    if (full) {
      svg.append(
        s(
          "text",
          {
            class: "axis muted",
            x: x + (slot - 4) / 2,
            y: height - 24,
            "text-anchor": "middle",
            "font-size": 11,
          },
          "100",
        ),
      );
    }
  });
  svg.append(
    s(
      "text",
      {
        class: "axis muted",
        x: margin.left + plotWidth / 2,
        y: height - 6,
        "text-anchor": "middle",
        "font-size": 12,
      },
      "uptime %, last week (green: exactly 100 %)",
    ),
  );
  const notes = [];
  const unplaced = summary.histogram.without_known_time;
  if (unplaced) {
    const stores = unplaced === 1 ? "1 store has" : `${formatCount(unplaced)} stores have`;
    notes.push(
      `${stores} no known business time last week and ${unplaced === 1 ? "is" : "are"} not shown.`,
    );
  }
  figure.replaceChildren(
    svg,
    notes.length ? h("figcaption", { class: "hint" }, notes.join(" ")) : "",
  );
}

function trim(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

/** Gridlines at 0 and every 1, 2 or 5 × 10^k, about four of them. */
function niceTicks(most) {
  const rough = Math.max(1, most / 4);
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10]
    .map((factor) => factor * power)
    .find((candidate) => candidate >= rough);
  const ticks = [];
  for (let tick = 0; tick <= most; tick += step) ticks.push(tick);
  return ticks;
}

// --------------------------------------------------------------------------- stores

/** The columns shown besides the store and the sorted column (which are always shown). */
function readShownColumns() {
  const all = optionalColumns();
  const asked = params.get("columns");
  if (asked !== null) return new Set(asked.split(",").filter((column) => all.includes(column)));
  return new Set(defaultColumns());
}

function defaultColumns() {
  const chosen = narrowScreen.matches ? NARROW_COLUMNS : DEFAULT_COLUMNS;
  return optionalColumns().filter((column) => chosen.includes(column));
}

/** Every column a reader may show or hide, in the table's order. */
function optionalColumns() {
  return ["uptime_percent", ...columns.filter((column) => column !== "store_id")];
}

function setUpControls() {
  const choices = WORST_BY.filter(
    ([column]) => column === "uptime_percent" || columns.includes(column),
  );
  worstBy.replaceChildren(
    ...choices.map(([column, order, text]) => h("option", { value: `${column}:${order}` }, text)),
    h("option", { value: "", disabled: true }, "(sorted by a column)"),
  );
  worstBy.addEventListener("change", () => {
    const [column, order] = worstBy.value.split(":");
    setSort(column, order);
  });
  filter.value = state.q;
  let timer = null;
  filter.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      state.q = filter.value.trim();
      state.offset = 0;
      loadStores();
    }, 250);
  });
  document
    .getElementById("stores-controls")
    .addEventListener("submit", (event) => event.preventDefault());
  previous.addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    loadStores();
  });
  next.addEventListener("click", () => {
    state.offset += PAGE_SIZE;
    loadStores();
  });
  state.shown = readShownColumns();
  setUpColumnPicker();
  renderHeader();
  onResize(fitTable);
}

/** Checkboxes for the columns; the sorted one stays shown (its box is checked and fixed). */
function setUpColumnPicker() {
  const choices = document.getElementById("column-choices");
  const boxes = optionalColumns().map((column) =>
    h(
      "label",
      { class: "choice" },
      h("input", { type: "checkbox", value: column, "data-column": column }),
      ` ${columnLabel(column)}`,
    ),
  );
  const reset = h("button", { type: "button", class: "quiet", id: "default-columns" }, "Default");
  choices.replaceChildren(
    h("legend", { class: "visually-hidden" }, "Columns to show"),
    ...boxes,
    reset,
  );
  choices.addEventListener("change", (event) => {
    const column = event.target.dataset.column;
    if (!column) return;
    if (event.target.checked) state.shown.add(column);
    else state.shown.delete(column);
    showColumns();
  });
  reset.addEventListener("click", () => {
    state.shown = new Set(defaultColumns());
    showColumns();
  });
}

function showColumns() {
  renderHeader();
  renderRows(shownRows);
  rememberInUrl();
}

function renderColumnPicker() {
  const shown = tableColumns();
  for (const box of document.querySelectorAll("#column-choices input[type=checkbox]")) {
    const column = box.dataset.column;
    box.checked = shown.includes(column);
    box.disabled = column === state.sort;
    box.title = box.disabled ? "The table is sorted by this column" : "";
  }
  document.getElementById("columns-summary").textContent =
    `Columns: ${shown.length} of ${optionalColumns().length + 1}`;
}

function setSort(column, order) {
  state.sort = column;
  state.order = order;
  state.offset = 0;
  renderHeader();
  loadStores();
}

/** The store, then the chosen columns and the sorted one, in the report's order. */
function tableColumns() {
  const shown = optionalColumns().filter(
    (column) => state.shown.has(column) || column === state.sort,
  );
  return ["store_id", ...shown];
}

/** Two header rows: a group per measure (Uptime, Downtime, …), a sort button per window. */
function renderHeader() {
  worstBy.value = `${state.sort}:${state.order}`;
  if (worstBy.selectedIndex < 0) worstBy.value = "";
  const groups = [];
  const windows = [];
  for (const column of tableColumns()) {
    const match = column.match(/^(.*)_last_(hour|day|week)$/);
    if (!match) {
      groups.push(
        h("th", { rowspan: 2, ...sortAttributes(column) }, sortButton(column, columnLabel(column))),
      );
      continue;
    }
    const [, measure, window] = match;
    const group = groups.at(-1);
    if (group?.dataset.measure === measure) group.colSpan += 1;
    else {
      const title = columnLabel(column).split(",")[0];
      groups.push(
        h("th", { scope: "colgroup", colspan: 1, class: "group", dataset: { measure } }, title),
      );
    }
    const unit = measure === "outages" ? "" : ` (${windowUnit(window)})`;
    // The sorted column may be held away from its group's heading: it names its measure.
    const text = column === state.sort ? columnLabel(column) : `${window}${unit}`;
    windows.push(h("th", sortAttributes(column), sortButton(column, text)));
  }
  storesTable.tHead.replaceChildren(h("tr", {}, groups), h("tr", {}, windows));
  renderColumnPicker();
}

/** The class of a column's cells: the store and the sorted column stay in view (sticky). */
function cellClass(column) {
  if (column === "store_id") return "sticky";
  return column === state.sort ? "number sorted" : "number";
}

function sortAttributes(column) {
  const sorted = column === state.sort;
  return {
    scope: "col",
    class: cellClass(column),
    "data-column": column,
    "aria-sort": sorted ? (state.order === "asc" ? "ascending" : "descending") : null,
  };
}

function sortButton(column, text) {
  const sorted = column === state.sort;
  const nextOrder = sorted
    ? state.order === "asc"
      ? "desc"
      : "asc"
    : ASCENDING_FIRST.has(column)
      ? "asc"
      : "desc";
  const first = nextOrder === "asc" ? "lowest" : "highest";
  const label = `Sort by ${columnLabel(column).toLowerCase()}, ${first} first`;
  const button = h(
    "button",
    { type: "button", class: "sort", "data-column": column, "aria-label": label },
    text,
  );
  button.addEventListener("click", () => {
    setSort(column, nextOrder);
    storesTable.querySelector(`button[data-column="${column}"]`)?.focus();
  });
  return button;
}

async function loadStores() {
  const ticket = ++loading;
  const query = new URLSearchParams({
    sort: state.sort,
    order: state.order,
    offset: String(state.offset),
    limit: String(PAGE_SIZE),
  });
  if (state.q) query.set("q", state.q);
  let page;
  try {
    page = await getJSON(`/reports/${encodeURIComponent(reportId)}/stores?${query}`);
  } catch (error) {
    if (ticket === loading) showError(errorBox, `The stores could not be loaded: ${error.message}`);
    return;
  }
  if (ticket !== loading) return; // a newer request is on its way
  showError(errorBox, "");
  matched = page.matched;
  if (page.rows.length === 0 && state.offset > 0 && matched > 0) {
    state.offset = Math.max(0, Math.floor((matched - 1) / PAGE_SIZE) * PAGE_SIZE);
    loadStores();
    return;
  }
  renderRows(page.rows);
  const first = matched ? state.offset + 1 : 0;
  const last = state.offset + page.rows.length;
  const filtered = state.q ? ` matching “${state.q}” (of ${formatCount(page.total)})` : "";
  const none = state.q ? `No store id contains “${state.q}”` : "This report has no stores";
  const text = matched
    ? `Stores ${formatCount(first)}–${formatCount(last)} of ${formatCount(matched)}${filtered}`
    : none;
  const direction = state.order === "asc" ? "lowest" : "highest";
  const sortedBy = columnLabel(state.sort).toLowerCase();
  statusLine.textContent = `${text}, sorted by ${sortedBy}, ${direction} first.`;
  const pages = Math.ceil(matched / PAGE_SIZE);
  pageLabel.textContent = matched
    ? `Page ${formatCount(Math.floor(state.offset / PAGE_SIZE) + 1)} of ${formatCount(pages)}`
    : "";
  previous.disabled = state.offset === 0;
  next.disabled = last >= matched;
  rememberInUrl();
  announce(text);
}

/** The table's state in the address: sort, filter, page, and columns chosen by hand. */
function rememberInUrl() {
  const url = new URLSearchParams({ sort: state.sort, order: state.order });
  if (state.q) url.set("q", state.q);
  if (state.offset) url.set("offset", String(state.offset));
  const chosen = optionalColumns().filter((column) => state.shown.has(column));
  if (chosen.join(",") !== defaultColumns().join(",")) url.set("columns", chosen.join(","));
  history.replaceState(null, "", `?${url}`);
}

function renderRows(rows) {
  shownRows = rows;
  const shown = tableColumns();
  storesTable.tBodies[0].replaceChildren(
    ...rows.map((row) =>
      h(
        "tr",
        {},
        shown.map((column) => {
          if (column === "store_id") {
            return h(
              "th",
              { scope: "row", class: "mono sticky", title: row.store_id },
              h("a", { href: storePath(row.store_id, { report: reportId }) }, row.store_id),
            );
          }
          const value = row[column];
          const bad = (column.startsWith("downtime") || column.startsWith("outages")) && value > 0;
          const text =
            column === "uptime_percent" ? formatPercent(value) : formatValue(column, value);
          return h("td", { class: bad ? `${cellClass(column)} bad` : cellClass(column) }, text);
        }),
      ),
    ),
  );
  fitTable();
}

/** Keep the sorted column just right of the sticky store column when scrolled past, and say
 * when the table is wider than the page (its scroll bar may be far below). */
function fitTable() {
  const store = storesTable.tHead.rows[0]?.cells[0];
  if (store) storesTable.style.setProperty("--store-width", `${store.offsetWidth}px`);
  const wrapper = storesTable.parentElement;
  document.getElementById("scroll-hint").hidden = wrapper.scrollWidth <= wrapper.clientWidth + 1;
}

start();
