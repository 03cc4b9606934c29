// A store's page: its last week drawn day by day in local time, with the numbers of its
// report row, its weekly hours and time zone, and its inactive stretches.

import {
  columnLabel,
  describeOptions,
  formatInstant,
  formatValue,
  getJSON,
  h,
  onResize,
  s,
  shortId,
  showError,
} from "./common.js";

const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const HOUR_US = 3_600_000_000;
const LISTED_OUTAGES = 10;
// Lanes inside one day's row (pixels from the row's top).
const ROW = { height: 52, business: [3, 7], status: [13, 18], polls: [33, 7], outages: [43, 4] };

const storeId = document.body.dataset.storeId;
const context = document.getElementById("store-context");
const errorBox = document.getElementById("store-error");
let week = null;

function timelineUrl() {
  const asked = new URLSearchParams(window.location.search);
  const query = new URLSearchParams();
  for (const name of ["report", "as_of", "stale_after", "outages"]) {
    if (asked.has(name)) query.set(name, asked.get(name));
  }
  const text = query.toString();
  return `/stores/${encodeURIComponent(storeId)}/timeline${text ? `?${text}` : ""}`;
}

async function start() {
  try {
    week = await getJSON(timelineUrl());
  } catch (error) {
    context.textContent = "";
    showError(errorBox, `This store cannot be shown: ${error.message}`);
    return;
  }
  document.getElementById("store-body").hidden = false;
  renderContext();
  drawTimeline();
  onResize(drawTimeline);
  renderNumbers();
  renderHours();
  renderOutages();
  renderClosures();
}

// --------------------------------------------------------------------------- text

/** "Wed 18 Jan 16:17" from a local ISO-8601 time (its own date and clock, not the browser's). */
function localText(iso, withDate = true) {
  const date = new Date(`${iso.slice(0, 10)}T00:00:00Z`);
  const clock = iso.slice(11, 16);
  if (!withDate) return clock;
  const weekday = WEEKDAYS[date.getUTCDay()];
  return `${weekday} ${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]} ${clock}`;
}

// A span's local start and end, for titles and lists.
function localRange(span) {
  return `${localText(span.start_local)} – ${localText(span.end_local)}`;
}

function hoursText(value) {
  return `${value.toFixed(2)} h`;
}

function renderContext() {
  const parts = [`Last week as of ${formatInstant(week.as_of)}`];
  if (week.report_id) parts.push(`from report ${shortId(week.report_id)}`);
  else parts.push("from the latest data");
  parts.push(`options: ${describeOptions(week.options)}`);
  context.replaceChildren(parts.join(" · "), ". ", why());
  if (week.report_id) {
    document
      .getElementById("breadcrumb")
      .append(
        " › ",
        h(
          "a",
          { href: `/report/${week.report_id}`, class: "mono" },
          `Report ${shortId(week.report_id)}`,
        ),
      );
  }
}

/** One sentence: how much downtime, in how many stretches, the longest one. */
function why() {
  const down = week.totals.downtime_last_week;
  if (!down) return "No downtime in business hours last week.";
  const counted = week.outages.filter((outage) => outage.business_hours > 0);
  const longest = counted.reduce(
    (best, outage) => (outage.business_hours > (best?.business_hours ?? -1) ? outage : best),
    null,
  );
  let text = `Down ${hoursText(down)} in business hours last week`;
  if (counted.length)
    text += `, in ${counted.length} inactive stretch${counted.length === 1 ? "" : "es"}`;
  if (longest)
    text +=
      `; the longest counts ${hoursText(longest.business_hours)}` +
      ` from ${localText(longest.start_local)}`;
  return `${text}.`;
}

// --------------------------------------------------------------------------- timeline

function patterns() {
  const hatch = (id, color, background) =>
    s(
      "pattern",
      { id, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      s("rect", { width: 6, height: 6, fill: background }),
      s("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: color, "stroke-width": 3 }),
    );
  return s(
    "defs",
    {},
    hatch("unknown-hatch", "#8c959f", "#ffffff"),
    hatch("closure-hatch", "#bc4c00", "#ffffff"),
    hatch("outside-hatch", "#d8dee4", "#ffffff"),
  );
}

function drawTimeline() {
  const figure = document.getElementById("timeline");
  const width = Math.max(300, Math.round(figure.clientWidth || 900));
  const narrow = width < 600;
  const left = narrow ? 52 : 100;
  const plot = width - left - 12;
  const top = 24;
  const days = week.days;
  const height = top + days.length * ROW.height + 4;
  const first = week.windows.week.at_us;
  const now = week.windows.now.at_us;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": timelineLabel(),
    "data-days": days.length,
    "shape-rendering": "crispEdges",
  });
  svg.append(patterns());

  const rowTop = (row) => top + row * ROW.height;
  const x = (day, at) => left + ((at - day.start_us) / (day.end_us - day.start_us)) * plot;
  const pieces = (start, end, draw) => {
    days.forEach((day, row) => {
      const from = Math.max(start, day.start_us);
      const to = Math.min(end, day.end_us);
      if (to > from) draw(row, day, from, to);
    });
  };
  const lane = (row, [offset, size]) => [rowTop(row) + offset, size];
  const rect = (row, day, from, to, laneSpec, attributes, title) => {
    const [y, size] = lane(row, laneSpec);
    const node = s("rect", {
      x: x(day, from),
      y,
      width: Math.max(0, x(day, to) - x(day, from)),
      height: size,
      "data-start": from,
      "data-end": to,
      ...attributes,
    });
    if (title) node.append(s("title", {}, title));
    svg.append(node);
  };

  // Axis: local hours across the top, a light gridline through every row.
  const step = narrow ? 6 : 3;
  for (let hour = 0; hour <= 24; hour += step) {
    const at = left + (hour / 24) * plot;
    svg.append(
      s("line", { class: "grid", x1: at, x2: at, y1: top - 4, y2: height - 4 }),
      s(
        "text",
        {
          class: "axis muted",
          x: at,
          y: 14,
          "text-anchor": hour === 24 ? "end" : "middle",
          "font-size": 11,
        },
        `${String(hour).padStart(2, "0")}:00`,
      ),
    );
  }
  days.forEach((day, row) => {
    const date = new Date(`${day.date}T00:00:00Z`);
    const label = narrow
      ? `${WEEKDAYS[date.getUTCDay()]} ${date.getUTCDate()}`
      : `${WEEKDAYS[date.getUTCDay()]} ${date.getUTCDate()} ${MONTHS[date.getUTCMonth()]}`;
    const y = rowTop(row) + ROW.status[0] + 13;
    svg.append(s("text", { class: "row-label", x: 2, y }, label));
    if (day.hours !== 24) {
      svg.append(
        s("text", { class: "muted", x: 2, y: y + 13, "font-size": 10 }, `${day.hours} h day`),
      );
    }
  });

  // Time outside the week (before its start, after now) is hatched.
  const outside = { class: "outside", "data-kind": "outside" };
  days.forEach((day, row) => {
    const full = [rowTop(row) + 1, ROW.height - 4];
    if (day.start_us < first)
      rect(row, day, day.start_us, Math.min(first, day.end_us), full, outside);
    if (day.end_us > now) rect(row, day, Math.max(now, day.start_us), day.end_us, full, outside);
  });

  // Spans of the week in one lane: each a rect per day it crosses, titled in local time.
  const drawSpans = (spans, laneRows, attributes, title) =>
    spans.forEach((span, index) =>
      pieces(span.start_us, span.end_us, (row, day, from, to) => {
        const spanAttributes = { ...attributes(span), "data-index": index };
        rect(row, day, from, to, laneRows, spanAttributes, title(span));
      }),
    );
  drawSpans(
    week.segments,
    ROW.status,
    (segment) => ({
      class: `segment ${segment.status}`,
      "data-kind": "segment",
      "data-status": segment.status,
    }),
    (segment) => `${segment.status}: ${localRange(segment)}`,
  );
  // Status outside business hours does not count: it is dimmed.
  closedTime().forEach(([start, end]) => {
    pieces(start, end, (row, day, from, to) =>
      rect(row, day, from, to, ROW.status, { class: "closed", "data-kind": "closed" }),
    );
  });
  drawSpans(
    week.business,
    ROW.business,
    () => ({ class: "business", "data-kind": "business" }),
    (span) => `open: ${localRange(span)}`,
  );
  drawSpans(
    week.closures,
    ROW.business,
    () => ({ class: "closure", "data-kind": "closure" }),
    (span) => `closure: ${localRange(span)}`,
  );
  drawSpans(
    week.outages,
    ROW.outages,
    () => ({ class: "outage", "data-kind": "outage" }),
    (outage) =>
      `inactive stretch: ${localRange(outage)}, ` +
      `${hoursText(outage.business_hours)} in business hours`,
  );
  week.polls.forEach((poll, index) => {
    const row = rowOf(poll.at_us);
    const day = days[row];
    const at = x(day, poll.at_us);
    const [y, size] = lane(row, ROW.polls);
    const kind = poll.evidence ? poll.status : `${poll.status} ignored`;
    svg.append(
      s(
        "line",
        {
          class: `poll ${kind}`,
          x1: at,
          x2: at,
          y1: y,
          y2: y + size,
          "data-kind": "poll",
          "data-index": index,
        },
        s(
          "title",
          {},
          `poll ${poll.status}${poll.evidence ? "" : " (outside business hours)"}: ` +
            localText(poll.at_local),
        ),
      ),
    );
  });

  // Where the windows start: 24 h and 1 h before now, the week (7 days), and now.
  const marks = [
    [first, "7 d", "end"],
    [week.windows.day.at_us, "24 h", "end"],
    [week.windows.hour.at_us, "1 h", "end"],
    [now, "now", "start"],
  ];
  for (const [at, label, anchor] of marks) {
    const row = rowOf(at);
    const day = days[row];
    const position = x(day, at);
    const y = rowTop(row);
    svg.append(
      s("line", {
        class: "window-mark",
        x1: position,
        x2: position,
        y1: y,
        y2: y + ROW.height - 3,
        "data-kind": "window",
        "data-window": label,
      }),
      s(
        "text",
        {
          class: "window-label",
          x: position + (anchor === "end" ? -3 : 3),
          y: y + ROW.status[0] + 12,
          "text-anchor": anchor,
        },
        label,
      ),
    );
  }
  figure.replaceChildren(svg);
}

function rowOf(at) {
  const days = week.days;
  const row = days.findIndex((day) => day.start_us <= at && at < day.end_us);
  return row < 0 ? days.length - 1 : row;
}

/** The week's time outside business hours (what the report does not count). */
function closedTime() {
  const gaps = [];
  let cursor = week.windows.week.at_us;
  for (const span of week.business) {
    if (span.start_us > cursor) gaps.push([cursor, span.start_us]);
    cursor = Math.max(cursor, span.end_us);
  }
  if (cursor < week.windows.now.at_us) gaps.push([cursor, week.windows.now.at_us]);
  return gaps;
}

function timelineLabel() {
  const count = (status) => week.segments.filter((segment) => segment.status === status).length;
  return (
    `Timeline of the week before ${formatInstant(week.as_of)}, one row per local day: ` +
    `${week.business.length} business-hour spans, ${week.segments.length} status segments ` +
    `(${count("active")} active, ${count("inactive")} inactive, ${count("unknown")} unknown), ` +
    `${week.polls.length} polls, ${week.outages.length} inactive stretches. ` +
    "The tables below give the same facts."
  );
}

// --------------------------------------------------------------------------- tables

function renderNumbers() {
  const totals = week.totals;
  const measures = ["uptime", "downtime", "unknown", "outages", "longest_outage"].filter(
    (measure) => Object.keys(totals).some((column) => column.startsWith(`${measure}_last_`)),
  );
  const table = document.getElementById("numbers-table");
  table.tHead.replaceChildren(
    h(
      "tr",
      {},
      h("th", { scope: "col" }, "Window"),
      h("th", { scope: "col", class: "number" }, "Business time"),
      measures.map((measure) =>
        h(
          "th",
          { scope: "col", class: "number" },
          columnLabel(`${measure}_last_week`).split(",")[0],
        ),
      ),
    ),
  );
  table.tBodies[0].replaceChildren(
    ...["hour", "day", "week"].map((window) => {
      const unit = window === "hour" ? "min" : "h";
      const business = ["uptime", "downtime", "unknown"].reduce(
        (sum, measure) => sum + (totals[`${measure}_last_${window}`] || 0),
        0,
      );
      return h(
        "tr",
        {},
        h("th", { scope: "row" }, `Last ${window} (${unit})`),
        h("td", { class: "number" }, business.toFixed(2)),
        measures.map((measure) => {
          const column = `${measure}_last_${window}`;
          const value = totals[column];
          const bad = (measure === "downtime" || measure === "outages") && value > 0;
          return h(
            "td",
            { class: bad ? "number bad" : "number", "data-column": column },
            column in totals ? formatValue(column, value) : "—",
          );
        }),
      );
    }),
  );
  const evidence = week.polls.filter((poll) => poll.evidence).length;
  const inside = (at) => week.business.some((span) => span.start_us <= at && at < span.end_us);
  const noneInside =
    week.polls.length > 0 &&
    week.polls.every((poll) => poll.evidence) &&
    week.polls.some((poll) => !inside(poll.at_us));
  const polls = week.polls.length;
  let note = `${polls} polls in the week; the ${evidence} inside business hours are the evidence.`;
  if (noneInside)
    note = `${polls} polls in the week, none inside business hours: every poll counts as evidence.`;
  document.getElementById("polls-note").textContent =
    `${note} Each instant takes the status of the nearest evidence poll` +
    (week.options.stale_after ? `, unknown when none is within ${week.options.stale_after}.` : ".");
}

function renderHours() {
  const zone = document.getElementById("zone-note");
  zone.textContent = week.timezone_is_default
    ? `Time zone: ${week.timezone} (the default: no time zone was given).`
    : `Time zone: ${week.timezone}.`;
  const body = document.getElementById("hours-table").tBodies[0];
  if (week.hours.length === 0) {
    body.replaceChildren(
      h(
        "tr",
        {},
        h("td", { colspan: 2 }, "Open 24 hours, 7 days a week (no business hours given)."),
      ),
    );
    return;
  }
  const names = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
  body.replaceChildren(
    ...names.map((name, day) => {
      const periods = week.hours.filter((period) => period.day === day).map(periodText);
      return h(
        "tr",
        {},
        h("th", { scope: "row" }, name),
        h("td", {}, periods.length ? periods.join(", ") : "closed"),
      );
    }),
  );
}

function periodText(period) {
  const trim = (clock) => (clock.endsWith(":00") ? clock.slice(0, 5) : clock);
  if (period.start === period.end) return `${trim(period.start)}, 24 hours`;
  const nextDay = period.end < period.start ? " (next day)" : "";
  return `${trim(period.start)}–${trim(period.end)}${nextDay}`;
}

function renderOutages() {
  const listed = [...week.outages].sort((a, b) => b.business_hours - a.business_hours);
  const table = document.getElementById("outages-table");
  document.getElementById("outages-empty").hidden = listed.length > 0;
  table.hidden = listed.length === 0;
  table.tHead.replaceChildren(
    h(
      "tr",
      {},
      h("th", { scope: "col" }, "From (local)"),
      h("th", { scope: "col" }, "To (local)"),
      h("th", { scope: "col", class: "number" }, "Length"),
      h("th", { scope: "col", class: "number" }, "In business hours"),
    ),
  );
  const rows = listed
    .slice(0, LISTED_OUTAGES)
    .map((outage) =>
      h(
        "tr",
        {},
        h("td", {}, localText(outage.start_local)),
        h("td", {}, localText(outage.end_local)),
        h("td", { class: "number" }, hoursText((outage.end_us - outage.start_us) / HOUR_US)),
        h(
          "td",
          { class: outage.business_hours > 0 ? "number bad" : "number" },
          hoursText(outage.business_hours),
        ),
      ),
    );
  if (listed.length > LISTED_OUTAGES) {
    rows.push(
      h(
        "tr",
        {},
        h(
          "td",
          { colspan: 4, class: "hint" },
          `and ${listed.length - LISTED_OUTAGES} shorter ones`,
        ),
      ),
    );
  }
  table.tBodies[0].replaceChildren(...rows);
}

function renderClosures() {
  if (week.closures.length === 0) return;
  document.getElementById("closures-section").hidden = false;
  document
    .getElementById("closures-list")
    .replaceChildren(
      ...week.closures.map((span) =>
        h("li", {}, `${localRange(span)} (local time)`),
      ),
    );
}

start();
