// ainode dashboard: the reading room's worklist, the first card. One row per study, most
// urgent first as GET /api/worklist orders them (unacknowledged critical findings, then
// STAT, HIGH, MEDIUM, LOW, then the oldest): its urgency, patient (masked by the node for
// roles that may not see identifiers), accession, modalities, age, each job's findings in
// words, its critical findings with an Acknowledge button for operators, and the
// thumbnail of its overlay. app.js polls it with the rest of the page (updateWorklist);
// the DOM helpers (el, badge, muted, when, patientName, post, showAlert, refresh, state)
// are app.js's. Every value goes in as text.
"use strict";

const WORKLIST_PAGE = 25;
const wl = {
  offset: 0,
  total: 0,
  key: null, // what the table shows, ages aside: re-drawn only when it changes
  notes: new Map(), // finding id -> the note being typed, kept across re-draws
  modalities: new Set(),
  models: new Set(),
};

function worklistUrl() {
  const query = new URLSearchParams({ offset: String(wl.offset), limit: String(WORKLIST_PAGE) });
  for (const name of ["modality", "model", "state"]) {
    const value = document.getElementById(`worklist-${name}`).value;
    if (value) query.set(name, value);
  }
  return `/api/worklist?${query}`;
}

function wlMayAcknowledge() {
  return state.role === "operator" || state.role === "admin";
}

function wlAgeText(secondsAgo) {
  const minutes = Math.max(0, Math.floor(secondsAgo / 60));
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${String(minutes % 60).padStart(2, "0")} min ago`;
  return `${Math.floor(hours / 24)} days ago`;
}

// ---- cells -------------------------------------------------------------------------

function wlUrgencyCell(row) {
  const open = row.unacknowledged_critical;
  return el("td", { class: "wl-urgency" }, [
    el("span", { class: `badge urgency-${row.urgency.toLowerCase()}`, text: row.urgency }),
    open
      ? el("div", { class: "wl-open", text: `${open} critical unacknowledged` })
      : null,
  ]);
}

function wlPatientCell(row) {
  const hidden = row.identifiers_hidden;
  const name = hidden ? "identifiers hidden" : patientName(row.patient.name);
  return el("td", { class: "col-patient" }, [
    el("div", { class: hidden ? "hidden-id" : "strong", text: name || "(no name)" }),
    el("div", { class: "muted mono", text: row.patient.patient_id }),
    el("div", { class: "muted small", text: row.description }),
  ]);
}

function wlJobBlock(job) {
  const lines = job.findings.length
    ? el("ul", { class: "wl-findings" }, job.findings.map((line) => el("li", { text: line })))
    : muted(job.state === "succeeded" ? "no findings" : "no findings yet");
  return el("div", { class: "wl-job", data: { jobId: job.id } }, [
    el("div", { class: "wl-job-head" }, [
      el("span", { class: "strong", text: job.model_name }),
      badge("job", job.state),
      job.priority !== "MEDIUM" ? el("span", { class: "muted small", text: job.priority }) : null,
    ]),
    lines,
  ]);
}

function wlAcknowledgeForm(finding) {
  const id = finding.id;
  const input = el("input", {
    type: "text",
    class: "wl-note",
    id: `wl-note-${id}`,
    maxlength: "2000",
    placeholder: "note (optional)",
    "aria-label": `Note for critical finding ${id}`,
    "aria-describedby": `wl-critical-text-${id}`,
  });
  input.value = wl.notes.get(id) || "";
  input.addEventListener("input", () => wl.notes.set(id, input.value));
  const button = el("button", {
    type: "button",
    class: "acknowledge",
    data: { findingId: id },
    "aria-describedby": `wl-critical-text-${id}`, // which finding, for a screen reader
    text: "Acknowledge",
  });
  button.addEventListener("click", () => wlAcknowledge(id, button));
  return el("div", { class: "wl-ack-form" }, [input, button]);
}

function wlCriticalBlock(finding) {
  let status;
  if (finding.acknowledged) {
    const by = `${finding.acknowledged_by} (${finding.acknowledged_role})`;
    status = el("div", { class: "wl-acknowledged" }, [
      el("span", { text: `Acknowledged by ${by}, ${when(finding.acknowledged_at)}`, title: finding.acknowledged_at }),
      finding.acknowledgement_note ? el("div", { class: "muted small", text: finding.acknowledgement_note }) : null,
    ]);
  } else {
    status = wlMayAcknowledge() ? wlAcknowledgeForm(finding) : muted("not acknowledged yet");
  }
  const kind = finding.acknowledged ? "acknowledged" : "open";
  return el("div", { class: `wl-critical wl-critical-${kind}`, data: { findingId: finding.id } }, [
    el("div", {}, [
      el("span", { class: `badge urgency-${finding.urgency.toLowerCase()}`, text: finding.urgency }),
      el("span", { class: "wl-critical-text", id: `wl-critical-text-${finding.id}`, text: ` ${finding.text}` }),
    ]),
    status,
  ]);
}

function wlThumbnailCell(row) {
  if (!row.thumbnail) return el("td", { class: "wl-thumb" }, [muted("—")]);
  const job = row.jobs.find((j) => j.thumbnail === row.thumbnail);
  const img = el("img", {
    src: row.thumbnail,
    alt: `Overlay of ${job ? job.model_name : "the analysis"} (AI result)`,
    loading: "lazy",
    decoding: "async",
  });
  return el("td", { class: "wl-thumb" }, [img]);
}

function wlRow(row) {
  const critical = row.jobs.flatMap((job) => job.critical_findings);
  const classes = [`wl-row`, `wl-${row.urgency.toLowerCase()}`];
  if (row.unacknowledged_critical) classes.push("wl-open-critical");
  return el("tr", { class: classes.join(" "), data: { studyUid: row.study_instance_uid } }, [
    wlUrgencyCell(row),
    wlPatientCell(row),
    el("td", { class: "mono", text: row.accession_number }),
    el("td", {}, row.modalities.map((m) => el("span", { class: "modality", text: m }))),
    el("td", { class: "nowrap" }, [
      el("div", { class: "wl-age", data: { age: row.study_instance_uid }, text: wlAgeText(row.age_seconds) }),
      el("div", { class: "muted small", text: when(row.received_at), title: row.received_at }),
    ]),
    el("td", { class: "wl-jobs" }, row.jobs.map(wlJobBlock)),
    el("td", { class: "wl-criticals" }, critical.length ? critical.map(wlCriticalBlock) : [muted("—")]),
    wlThumbnailCell(row),
  ]);
}

// ---- rendering ---------------------------------------------------------------------

function wlAddOptions(select, seen, values) {
  for (const value of values) {
    if (!value || seen.has(value)) continue;
    seen.add(value);
    select.append(el("option", { value, text: value }));
  }
}

function wlRenderPager(page) {
  const first = page.total ? page.offset + 1 : 0;
  const last = page.offset + page.rows.length;
  document.getElementById("worklist-range").textContent = `${first}–${last} of ${page.total}`;
  document.getElementById("worklist-prev").disabled = page.offset === 0;
  document.getElementById("worklist-next").disabled = last >= page.total;
}

function renderWorklist(page) {
  const focused = document.activeElement && document.activeElement.id;
  const body = document.querySelector("#worklist tbody");
  body.replaceChildren(...page.rows.map(wlRow));
  if (focused && focused.startsWith("wl-note-")) {
    const again = document.getElementById(focused);
    if (again) again.focus();
  }
  document.getElementById("worklist-empty").hidden = page.rows.length > 0;
  document.getElementById("worklist-count").textContent = String(page.total);
  wlRenderPager(page);
}

function wlUpdateAges(page) {
  for (const row of page.rows) {
    const cell = document.querySelector(`#worklist [data-age="${CSS.escape(row.study_instance_uid)}"]`);
    if (cell) cell.textContent = wlAgeText(row.age_seconds);
  }
}

// Called by app.js with each poll's answer.
function updateWorklist(text) {
  const page = JSON.parse(text);
  wl.total = page.total;
  wlAddOptions(document.getElementById("worklist-modality"), wl.modalities, page.rows.flatMap((r) => r.modalities));
  wlAddOptions(
    document.getElementById("worklist-model"),
    wl.models,
    page.rows.flatMap((r) => r.jobs.map((j) => j.model_name)),
  );
  const key = JSON.stringify({ ...page, rows: page.rows.map((r) => ({ ...r, age_seconds: 0 })), role: state.role });
  if (key === wl.key) {
    wlUpdateAges(page);
    return;
  }
  wl.key = key;
  renderWorklist(page);
}

function reloadWorklist() {
  wl.key = null;
  refresh();
}

// ---- acknowledging ---------------------------------------------------------------

async function wlAcknowledge(id, button) {
  button.disabled = true;
  button.textContent = "Acknowledging…";
  const note = (wl.notes.get(id) || "").trim();
  try {
    const response = await post(`/api/critical-findings/${encodeURIComponent(id)}/acknowledge`, { note });
    if (response.ok) {
      wl.notes.delete(id);
      hideAlert();
    } else {
      let reason = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        if (typeof body.detail === "string") reason = body.detail;
      } catch (_) {
        // keep the status line
      }
      showAlert(`Acknowledgement of critical finding ${id} refused: ${reason}`);
    }
  } catch (error) {
    showAlert(`Acknowledgement of critical finding ${id} failed: ${error}`);
  }
  reloadWorklist();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const name of ["modality", "model", "state"]) {
    document.getElementById(`worklist-${name}`).addEventListener("change", () => {
      wl.offset = 0;
      reloadWorklist();
    });
  }
  document.getElementById("worklist-prev").addEventListener("click", () => {
    wl.offset = Math.max(0, wl.offset - WORKLIST_PAGE);
    reloadWorklist();
  });
  document.getElementById("worklist-next").addEventListener("click", () => {
    if (wl.offset + WORKLIST_PAGE < wl.total) wl.offset += WORKLIST_PAGE;
    reloadWorklist();
  });
});
