// A store's page: its last week drawn day by day in local time, with the numbers of its
// report row, its weekly hours and time zone, and its inactive stretches.

import {
  WINDOWS,
  columnLabel,
  describeOptions,
  formatCount,
  formatInstant,
  formatValue,
  getJSON,
  h,
  onResize,
  s,
  shortId,
  showError,
  windowUnit,
} from "./common.js";

const WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const HOUR_US = 3_600_000_000;
const MINUTE_US = 60_000_000;
const LISTED_OUTAGES = 10;
const STATUSES = ["active", "inactive", "unknown"];
// Lanes inside one day's row (pixels from the row's top).
const ROW = { height: 52, business: [3, 7], status: [13, 18], polls: [33, 7], outages: [43, 4] };

const storeId = document.body.dataset.storeId;
const context = document.getElementById("store-context");
const errorBox = document.getElementById("store-error");
let week = null;

/** The store's timeline: its id as a query parameter (any text passes unchanged). */
function timelineUrl() {
  const asked = new URLSearchParams(window.location.search);
  const query = new URLSearchParams({ id: storeId });
  for (const name of ["report", "as_of", "stale_after", "outages"]) {
    if (asked.has(name)) query.set(name, asked.get(name));
  }
  return `/store/timeline?${query}`;
}

/** Mark the store's open incident, if it has one (as of the latest poll). */
async function showOpenIncident() {
  const query = new URLSearchParams({ state: "open", store: storeId, limit: "1" });
  let incidents = [];
  try {
    ({ incidents } = await getJSON(`/incidents?${query}`));
  } catch {
    return; // the rest of the page says what went wrong
  }
  const banner = document.getElementById("store-incident");
  banner.hidden = incidents.length === 0;
  if (!incidents.length) return;
  const incident = incidents[0];
  const minutes = Math.round(incident.business_downtime_seconds / 60);
  banner.textContent =
    `${incident.down_now ? "Down now" : "Open incident (closed now)"}: inactive since ` +
    `${formatInstant(incident.started_at)}, ${minutes} min of business downtime so far.`;
}

async function start() {
  showOpenIncident();
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
  renderTimelineNotes();
  renderNumbers();
  renderHours();
  renderOutages();
  renderClosures();
}

// --------------------------------------------------------------------------- text

/** "Wed 18 Jan 16:17" from a local ISO-8601 time (its own date and clock, not the browser's). */
function localText(iso, withDate = true) {
  const clock = iso.slice(11, 16);
  if (!withDate) return clock;
  return `${dateText(iso.slice(0, 10))} ${clock}`;
}

/** "Wed 18 Jan" from "2023-01-18". */
function dateText(date) {
  const day = new Date(`${date}T00:00:00Z`);
  return `${WEEKDAYS[day.getUTCDay()]} ${day.getUTCDate()} ${MONTHS[day.getUTCMonth()]}`;
}

// A span's local start and end, for titles and lists.
function localRange(span) {
  return `${localText(span.start_local)} – ${localText(span.end_local)}`;
}

function hoursText(value) {
  return `${value.toFixed(2)} h`;
}

/** "UTC−06:00" (a minus sign, which no line break separates from its digits). */
function offsetText(offset) {
  return `UTC${offset.replace("-", "\u2212")}`;
}

/** "America/Chicago, UTC-05:00", and the earlier offset when the clocks changed this week. */
function zoneText() {
  const offsets = [...week.days.map((day) => day.utc_offset), week.utc_offset];
  const changed = offsets.findIndex((offset, index) => index > 0 && offset !== offsets[index - 1]);
  let text = `${week.timezone}, ${offsetText(week.utc_offset)}`;
  if (changed > 0) {
    const day = week.days[changed - 1];
    text += ` (${offsetText(offsets[0])} until the clocks changed on ${dateText(day.date)})`;
  }
  return text;
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
  const counted = week.counts.outages_in_business_hours;
  const longest = week.outages.reduce(
    (best, outage) => (outage.business_hours > (best?.business_hours ?? 0) ? outage : best),
    null,
  );
  let text = `Down ${hoursText(down)} in business hours last week`;
  if (counted) text += `, in ${formatCount(counted)} inactive stretch${counted === 1 ? "" : "es"}`;
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
  );
}

/** The SVG and its geometry: x of an instant in a day's row, the top of a row. */
function timelineCanvas() {
  const figure = document.getElementById("timeline");
  const width = Math.max(300, Math.round(figure.clientWidth || 900));
  const narrow = width < 600;
  const left = narrow ? 52 : 100;
  const plot = width - left - 12;
  const top = 24;
  const height = top + week.days.length * ROW.height + 4;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": timelineLabel(),
    "data-days": week.days.length,
    "shape-rendering": "crispEdges",
  });
  svg.append(patterns());
  return {
    figure,
    svg,
    narrow,
    left,
    plot,
    top,
    height,
    rowTop: (row) => top + row * ROW.height,
    x: (day, at) => left + ((at - day.start_us) / (day.end_us - day.start_us)) * plot,
  };
}

function drawTimeline() {
  const canvas = timelineCanvas();
  const { svg, x } = canvas;
  const days = week.days;
  const first = week.windows.week.at_us;
  const now = week.windows.now.at_us;

  const pieces = (start, end, draw) => {
    days.forEach((day, row) => {
      const from = Math.max(start, day.start_us);
      const to = Math.min(end, day.end_us);
      if (to > from) draw(row, day, from, to);
    });
  };
  const lane = (row, [offset, size]) => [canvas.rowTop(row) + offset, size];
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
    return node;
  };

  drawAxis(canvas);
  drawOutsideTheWeek(canvas, first, now);

  // Spans of the week in one lane: each a rect per day it crosses, titled in local time.
  const drawSpans = (spans, laneRows, attributes, title, decorate) =>
    spans.forEach((span, index) =>
      pieces(span.start_us, span.end_us, (row, day, from, to) => {
        const spanAttributes = { ...attributes(span), "data-index": index };
        rect(row, day, from, to, laneRows, spanAttributes, title(span));
        if (decorate) decorate(span, row, day, from, to);
      }),
    );
  // A summarised bin holding several statuses: its shares, stacked top to bottom.
  const shares = (span, row, day, from, to) => {
    if (span.status !== "mixed") return;
    const length = span.end_us - span.start_us;
    let [y] = lane(row, ROW.status);
    for (const status of STATUSES) {
      const size = (span[`${status}_us`] / length) * ROW.status[1];
      if (size <= 0) continue;
      const width = x(day, to) - x(day, from);
      svg.append(s("rect", { class: `share ${status}`, x: x(day, from), y, width, height: size }));
      y += size;
    }
  };
  drawSpans(
    week.segments,
    ROW.status,
    (segment) => ({
      class: `segment ${segment.status}`,
      "data-kind": "segment",
      "data-status": segment.status,
    }),
    segmentTitle,
    shares,
  );
  // Status outside business hours does not count: covered by plain grey (not a hatching:
  // hatching means unknown), and a day without business time says "Closed".
  closedTime().forEach(([start, end]) => {
    pieces(start, end, (row, day, from, to) =>
      rect(row, day, from, to, ROW.status, { class: "closed", "data-kind": "closed" }),
    );
  });
  drawClosedDays(canvas, first, now);
  drawSpans(
    week.business,
    ROW.business,
    (span) => ({
      class: "business",
      "data-kind": "business",
      "fill-opacity": coveredShare(span),
    }),
    (span) => `open: ${localRange(span)}${coveredText(span)}`,
  );
  drawSpans(
    week.closures,
    ROW.business,
    (span) => ({ class: "closure", "data-kind": "closure", "fill-opacity": coveredShare(span) }),
    (span) => `closure: ${localRange(span)}${coveredText(span)}`,
  );
  drawSpans(
    week.outages,
    ROW.outages,
    () => ({ class: "outage", "data-kind": "outage" }),
    (outage) =>
      `inactive stretch: ${localRange(outage)}, ` +
      `${hoursText(outage.business_hours)} in business hours`,
  );
  drawPolls(canvas, pieces, lane);
  drawWindowMarks(canvas);
  canvas.figure.replaceChildren(svg);
}

function segmentTitle(segment) {
  if (segment.status !== "mixed") return `${segment.status}: ${localRange(segment)}`;
  const parts = STATUSES.filter((status) => segment[`${status}_us`] > 0).map(
    (status) => `${status} ${minutesText(segment[`${status}_us`])}`,
  );
  return `${parts.join(", ")}: ${localRange(segment)}`;
}

function minutesText(micros) {
  return `${(micros / MINUTE_US).toFixed(1)} min`;
}

/** A summarised span's share of its bin covered (1 for a whole span). */
function coveredShare(span) {
  if (span.covered_us === undefined) return null;
  return Math.max(0.15, span.covered_us / (span.end_us - span.start_us));
}

function coveredText(span) {
  return span.covered_us === undefined ? "" : ` (${minutesText(span.covered_us)} of it)`;
}

/** Local hours across the top, a light gridline through every row, each row's date. */
function drawAxis(canvas) {
  const { svg, narrow, left, plot, top, height } = canvas;
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
  week.days.forEach((day, row) => {
    const date = new Date(`${day.date}T00:00:00Z`);
    const label = narrow
      ? `${WEEKDAYS[date.getUTCDay()]} ${date.getUTCDate()}`
      : dateText(day.date);
    const y = canvas.rowTop(row) + ROW.status[0] + 13;
    svg.append(s("text", { class: "row-label", x: 2, y }, label));
    if (day.hours !== 24) {
      svg.append(
        s("text", { class: "muted", x: 2, y: y + 13, "font-size": 10 }, `${day.hours} h day`),
      );
    }
  });
}

/** Time before the week and after now: not part of it, so nothing but a dashed outline. */
function drawOutsideTheWeek(canvas, first, now) {
  const { svg, x } = canvas;
  week.days.forEach((day, row) => {
    const parts = [];
    if (day.start_us < first) parts.push([day.start_us, Math.min(first, day.end_us)]);
    if (day.end_us > now) parts.push([Math.max(now, day.start_us), day.end_us]);
    for (const [from, to] of parts) {
      const left = x(day, from);
      const width = Math.max(0, x(day, to) - left);
      const y = canvas.rowTop(row) + 1;
      svg.append(
        s(
          "rect",
          {
            class: "outside",
            x: left,
            y,
            width,
            height: ROW.height - 4,
            "data-kind": "outside",
            "data-start": from,
            "data-end": to,
          },
          s("title", {}, "not in this week"),
        ),
      );
      if (width >= 90) {
        svg.append(
          s(
            "text",
            {
              class: "outside-label",
              x: left + width / 2,
              y: y + ROW.status[0] + 10,
              "text-anchor": "middle",
            },
            "not in this week",
          ),
        );
      }
    }
  });
}

/** "Closed" on each day whose part of the week holds no business time. */
function drawClosedDays(canvas, first, now) {
  const { svg, x } = canvas;
  week.days.forEach((day, row) => {
    const from = Math.max(first, day.start_us);
    const to = Math.min(now, day.end_us);
    if (to <= from) return;
    if (week.business.some((span) => span.start_us < to && span.end_us > from)) return;
    const width = x(day, to) - x(day, from);
    if (width < 44) return;
    svg.append(
      s(
        "text",
        {
          class: "closed-label",
          x: x(day, from) + width / 2,
          y: canvas.rowTop(row) + ROW.status[0] + ROW.status[1] / 2 + 4,
          "text-anchor": "middle",
          "data-kind": "closed-day",
          "data-date": day.date,
        },
        "Closed",
      ),
    );
  });
}

/** Polls as ticks; beyond the answer's limit, a bar per bin (height: how many, green and
 * red: how many active and inactive). */
function drawPolls(canvas, pieces, lane) {
  const { svg, x } = canvas;
  const days = week.days;
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
  const most = Math.max(1, ...week.poll_bins.map((bin) => bin.count));
  week.poll_bins.forEach((bin, index) => {
    pieces(bin.start_us, bin.end_us, (row, day, from, to) => {
      const [top, size] = lane(row, ROW.polls);
      const left = x(day, from);
      const width = Math.max(1, x(day, to) - left);
      const tall = Math.max(1.5, (bin.count / most) * size);
      const activeHeight = (bin.active / bin.count) * tall;
      const bottom = top + size;
      svg.append(
        s("rect", {
          class: "poll-bin inactive",
          x: left,
          y: bottom - tall,
          width,
          height: tall - activeHeight,
        }),
        s("rect", {
          class: "poll-bin active",
          x: left,
          y: bottom - activeHeight,
          width,
          height: activeHeight,
        }),
        s(
          "rect",
          {
            x: left,
            y: top,
            width,
            height: size,
            fill: "transparent",
            "data-kind": "poll-bin",
            "data-index": index,
            "data-start": from,
            "data-end": to,
          },
          s(
            "title",
            {},
            `${formatCount(bin.count)} polls (${formatCount(bin.active)} active, ` +
              `${formatCount(bin.evidence)} evidence): ${localRange(bin)}`,
          ),
        ),
      );
    });
  });
}

/** Where the windows start: 24 h and 1 h before now, the week (7 days), and now. */
function drawWindowMarks(canvas) {
  const { svg, x } = canvas;
  const marks = [
    [week.windows.week.at_us, "7 d", "end"],
    [week.windows.day.at_us, "24 h", "end"],
    [week.windows.hour.at_us, "1 h", "end"],
    [week.windows.now.at_us, "now", "start"],
  ];
  for (const [at, label, anchor] of marks) {
    const row = rowOf(at);
    const day = week.days[row];
    const position = x(day, at);
    const y = canvas.rowTop(row);
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
}

function rowOf(at) {
  const days = week.days;
  const row = days.findIndex((day) => day.start_us <= at && at < day.end_us);
  return row < 0 ? days.length - 1 : row;
}

/** The week's time outside business hours (what the report does not count); a summarised
 * bin partly open counts as open here (its opacity shows how much). */
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
  const counts = week.counts;
  const count = (status) => week.segments.filter((segment) => segment.status === status).length;
  const segments = week.truncated.segments
    ? `${formatCount(counts.segments)} status segments, drawn as ${week.segments.length} ` +
      "pieces of whole bins"
    : `${formatCount(counts.segments)} status segments ` +
      `(${count("active")} active, ${count("inactive")} inactive, ${count("unknown")} unknown)`;
  return (
    `Timeline of the week before ${formatInstant(week.as_of)}, one row per local day ` +
    `(${zoneText()}): ${formatCount(counts.business)} business-hour spans, ${segments}, ` +
    `${formatCount(counts.polls)} polls, ${formatCount(counts.outages)} inactive stretches. ` +
    "The tables below give the same facts."
  );
}

/** The zone under the heading, and what was summarised when the week is too busy to draw. */
function renderTimelineNotes() {
  document.getElementById("timeline-zone").textContent = `Local time in ${zoneText()}.`;
  const truncated = week.truncated;
  const bin = `${week.limits.bin_us / MINUTE_US}-minute bins`;
  const notes = [];
  if (truncated.segments)
    notes.push(
      `The week holds ${formatCount(week.counts.segments)} status segments: they are drawn ` +
        `in ${bin}, a bin with several statuses split into their shares.`,
    );
  if (truncated.polls)
    notes.push(`The ${formatCount(week.counts.polls)} polls are drawn as counts per ${bin}.`);
  if (truncated.outages)
    notes.push(
      `Only the ${formatCount(week.outages.length)} inactive stretches with the most ` +
        `business time (of ${formatCount(week.counts.outages)}) are drawn.`,
    );
  if (truncated.business || truncated.closures)
    notes.push(`Business hours and closures are drawn in ${bin}.`);
  const note = document.getElementById("timeline-note");
  note.textContent = notes.join(" ");
  note.hidden = notes.length === 0;
  document.getElementById("legend-mixed").hidden = !truncated.segments;
  document.getElementById("legend-poll-bin").hidden = !truncated.polls;
}

// --------------------------------------------------------------------------- tables

/** The report row with a row per measure and a column per window (narrow enough for a phone). */
function renderNumbers() {
  const totals = week.totals;
  const measures = ["uptime", "downtime", "unknown", "outages", "longest_outage"].filter(
    (measure) => Object.keys(totals).some((column) => column.startsWith(`${measure}_last_`)),
  );
  const windows = WINDOWS;
  const table = document.getElementById("numbers-table");
  table.tHead.replaceChildren(
    h(
      "tr",
      {},
      h("th", { scope: "col" }, "Last"),
      windows.map((window) =>
        h("th", { scope: "col", class: "number" }, `${window} (${windowUnit(window)})`),
      ),
    ),
  );
  const business = (window) =>
    ["uptime", "downtime", "unknown"].reduce(
      (sum, measure) => sum + (totals[`${measure}_last_${window}`] || 0),
      0,
    );
  table.tBodies[0].replaceChildren(
    h(
      "tr",
      {},
      h("th", { scope: "row" }, "Business time"),
      windows.map((window) => h("td", { class: "number" }, business(window).toFixed(2))),
    ),
    ...measures.map((measure) =>
      h(
        "tr",
        {},
        h("th", { scope: "row" }, columnLabel(`${measure}_last_week`).split(",")[0]),
        windows.map((window) => {
          const column = `${measure}_last_${window}`;
          const value = totals[column];
          const bad = (measure === "downtime" || measure === "outages") && value > 0;
          return h(
            "td",
            { class: bad ? "number bad" : "number", "data-column": column },
            column in totals ? formatValue(column, value) : "—",
          );
        }),
      ),
    ),
  );
  document.getElementById("polls-note").textContent =
    `${pollsText()} Each instant takes the status of the nearest evidence poll` +
    (week.options.stale_after ? `, unknown when none is within ${week.options.stale_after}.` : ".");
}

function pollsText() {
  const counts = week.counts;
  const polls = formatCount(counts.polls);
  if (counts.polls > 0 && counts.polls_in_business_hours === 0 && counts.evidence_polls > 0)
    return `${polls} polls in the week, none inside business hours: every poll counts as evidence.`;
  return (
    `${polls} polls in the week; the ${formatCount(counts.evidence_polls)} inside business ` +
    "hours are the evidence."
  );
}

function renderHours() {
  document.getElementById("zone-note").textContent = week.timezone_is_default
    ? `Time zone: ${zoneText()} (the default: no time zone was given).`
    : `Time zone: ${zoneText()}.`;
  const body = document.getElementById("hours-table").tBodies[0];
  if (week.hours.length === 0) {
    body.replaceChildren(
      h(
        "tr",
        {},
        h("td", { colspan: 2 }, "Open all day, every day (no business hours given)."),
      ),
    );
    return;
  }
  const names = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
  const rows = names.map((name, day) => {
    const periods = week.hours.filter((period) => period.day === day).map(periodText);
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, name),
      h("td", {}, periods.length ? periods.join(", ") : "Closed"),
    );
  });
  if (week.truncated.hours) {
    const rest = formatCount(week.counts.hours - week.hours.length);
    rows.push(h("tr", {}, h("td", { colspan: 2, class: "hint" }, `and ${rest} more periods`)));
  }
  body.replaceChildren(...rows);
}

/** "09:00–17:00", "22:00–02:00 (next day)", "all day" for a period from midnight to midnight. */
function periodText(period) {
  const trim = (clock) => (clock.endsWith(":00") ? clock.slice(0, 5) : clock);
  const toMidnight = ["23:59:59", "24:00:00", period.start].includes(period.end);
  if (period.start === "00:00:00" && toMidnight) return "all day";
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
  const rest = week.counts.outages - rows.length;
  if (rest > 0) {
    rows.push(
      h(
        "tr",
        {},
        h("td", { colspan: 4, class: "hint" }, `and ${formatCount(rest)} shorter ones`),
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
        h("li", {}, `${localRange(span)} (local time)${coveredText(span)}`),
      ),
    );
}

start();
