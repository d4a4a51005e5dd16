// ainode dashboard: a study's timeline. A click on a study row (or Enter on it) opens the
// panel under the studies with GET /api/studies/{uid}/timeline: per series its events in
// time order, per job a bar of its stages to scale (last instance received -> complete
// -> queued -> each step -> delivery) and its events, each with its offset from the
// study's first instance. The panel polls while open. The DOM helpers (el, badge, muted,
// when, seconds, getJson) are app.js's. Every value goes in as text.
"use strict";

const TIMELINE_POLL_MS = 2000;
const timeline = { uid: null, timer: null, last: null };

const TIMELINE_LABELS = {
  received_first: "first instance received",
  received_last: "last instance received",
  complete: "series complete",
  queued: "job queued",
  finished: "job finished",
};

function offsetText(value) {
  return `+${seconds(Math.max(0, value))}`;
}

function eventLabel(event) {
  const kind = event.result_kind || "";
  switch (event.kind) {
    case "step":
      return event.attempt > 1 ? `${event.name} (attempt ${event.attempt})` : event.name;
    case "stored":
      return `${kind} stored at ${event.name}`;
    case "failed":
      return `${kind} to ${event.name}: try ${event.attempt} failed`;
    case "committed":
      return `${kind} committed by ${event.name}`;
    case "delivered":
      return `${kind} delivered to ${event.name}`;
    case "action":
      return event.name.replace("_", " ");
    case "finished":
      return `job ${event.state}`;
    default:
      return TIMELINE_LABELS[event.kind] || event.kind;
  }
}

function eventItem(event) {
  const state = event.kind === "step" ? ` tl-${event.state}` : "";
  return el("li", { class: `tl-event tl-${event.kind}${state}`, data: { kind: event.kind }, title: event.at }, [
    el("span", { class: "tl-offset", text: offsetText(event.offset_seconds) }),
    el("span", { class: "tl-label", text: eventLabel(event) }),
    event.seconds !== null && event.seconds !== undefined
      ? el("span", { class: "tl-secs", text: seconds(event.seconds) })
      : null,
    event.detail ? el("span", { class: "tl-detail", text: event.detail }) : null,
  ]);
}

function eventList(events) {
  return el("ol", { class: "tl-events" }, events.map(eventItem));
}

// The stages of a job's latest attempt as [name, start offset, end offset], from the
// series' last instance received to its last result stored or delivered.
function jobStages(series, job) {
  const find = (events, kind) => events.find((event) => event.kind === kind);
  const last = find(series.events, "received_last");
  const complete = find(series.events, "complete");
  const steps = job.events.filter((event) => event.kind === "step");
  const attempt = Math.max(0, ...steps.map((step) => step.attempt || 0));
  const latest = steps.filter((step) => step.attempt === attempt);
  const sent = job.events.filter((event) => ["stored", "delivered"].includes(event.kind));
  if (!last) return [];
  const stages = [];
  let at = last.offset_seconds;
  if (complete) {
    stages.push(["complete", at, complete.offset_seconds]);
    at = complete.offset_seconds;
  }
  if (latest.length) {
    stages.push(["queued", at, latest[0].offset_seconds]);
    for (const step of latest) {
      const end = step.offset_seconds + (step.seconds || 0);
      stages.push([step.name, step.offset_seconds, end]);
      at = Math.max(at, end);
    }
  }
  const stored = sent.filter((event) => event.offset_seconds >= at);
  if (stored.length) {
    stages.push(["deliver", at, Math.max(...stored.map((event) => event.offset_seconds))]);
  }
  return stages;
}

function stageBar(series, job) {
  const stages = jobStages(series, job);
  if (!stages.length) return null;
  const origin = stages[0][1];
  const span = Math.max(1e-3, stages[stages.length - 1][2] - origin);
  const bar = el("div", { class: "tl-bar", role: "img" });
  const names = [];
  for (const [name, start, end] of stages) {
    const length = Math.max(0, end - start);
    names.push(`${name} ${seconds(length)}`);
    const segment = el("span", { class: `tl-seg tl-seg-${name}`, data: { stage: name }, title: `${name}: ${seconds(length)}` }, [
      el("span", { class: "tl-seg-name", text: name }),
    ]);
    // CSSOM, not a style attribute: the Content Security Policy allows it.
    segment.style.left = `${((start - origin) / span) * 100}%`;
    segment.style.width = `${Math.max(0.4, (length / span) * 100)}%`;
    bar.append(segment);
  }
  bar.setAttribute("aria-label", names.join(", "));
  return bar;
}

function latencyText(job) {
  const entries = Object.entries(job.latency_seconds || {});
  if (!entries.length) return "results not stored yet";
  return `last instance → results stored: ${entries.map(([to, value]) => `${to} ${seconds(value)}`).join(", ")}`;
}

function jobBlock(series, job) {
  return el("div", { class: "tl-job", data: { jobId: job.id } }, [
    el("div", { class: "tl-job-head" }, [
      el("span", { class: "strong", text: `#${job.id} ${job.model_name}` }),
      el("span", { class: "muted", text: `v${job.model_version}` }),
      badge("job", job.state),
      el("span", { class: "tl-latency muted", text: latencyText(job) }),
    ]),
    stageBar(series, job),
    eventList(job.events),
  ]);
}

function seriesTimeline(series) {
  return el("div", { class: "tl-series", data: { seriesUid: series.series_instance_uid } }, [
    el("div", { class: "series-head" }, [
      el("span", { class: "modality", text: series.modality || "?" }),
      el("span", { class: "series-desc", text: series.description || "(no description)" }),
      el("span", { class: "muted", text: `${series.instances} img` }),
      badge("series", series.state),
    ]),
    eventList(series.events),
    ...series.jobs.map((job) => jobBlock(series, job)),
  ]);
}

function renderTimeline(study) {
  const title = [study.description || "(no description)", `started ${when(study.started_at)}`];
  document.getElementById("timeline-study").textContent = title.join(" · ");
  const box = document.getElementById("timeline");
  box.replaceChildren(...(study.series.length ? study.series.map(seriesTimeline) : [muted("no series")]));
}

function markSelectedStudy() {
  for (const row of document.querySelectorAll("#studies tbody tr")) {
    row.tabIndex = 0; // reachable by keyboard: Enter opens the timeline
    row.classList.add("study-row");
    row.classList.toggle("selected", row.dataset.studyUid === timeline.uid);
  }
}

async function refreshTimeline() {
  clearTimeout(timeline.timer);
  const uid = timeline.uid;
  if (!uid) return;
  try {
    const answer = await getJson(`/api/studies/${encodeURIComponent(uid)}/timeline`);
    if (uid !== timeline.uid) return; // another study was opened meanwhile
    if (answer.ok && answer.text !== timeline.last) {
      timeline.last = answer.text;
      renderTimeline(JSON.parse(answer.text));
    } else if (!answer.ok) {
      document.getElementById("timeline").replaceChildren(muted(`timeline unavailable (HTTP ${answer.status})`));
    }
  } catch (error) {
    console.error(error);
  }
  if (timeline.uid === uid) timeline.timer = setTimeout(refreshTimeline, TIMELINE_POLL_MS);
}

function openTimeline(uid) {
  timeline.uid = uid;
  timeline.last = null;
  document.getElementById("timeline").replaceChildren(muted("loading…"));
  const card = document.getElementById("timeline-card");
  card.hidden = false;
  markSelectedStudy();
  refreshTimeline();
  card.scrollIntoView({ block: "nearest" });
}

function closeTimeline() {
  clearTimeout(timeline.timer);
  timeline.uid = null;
  document.getElementById("timeline-card").hidden = true;
  markSelectedStudy();
}

document.addEventListener("DOMContentLoaded", () => {
  const body = document.querySelector("#studies tbody");
  const rowOf = (target) => target.closest("tr[data-study-uid]");
  body.addEventListener("click", (event) => {
    const row = rowOf(event.target);
    if (row) openTimeline(row.dataset.studyUid);
  });
  body.addEventListener("keydown", (event) => {
    const row = rowOf(event.target);
    if (row && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      openTimeline(row.dataset.studyUid);
    }
  });
  // app.js re-renders the rows when the studies change: keep the open one marked.
  new MutationObserver(markSelectedStudy).observe(body, { childList: true });
  document.getElementById("timeline-close").addEventListener("click", closeTimeline);
});
