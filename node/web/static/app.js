// ainode dashboard: polls the node's JSON API every 2 s and renders it.
// Every value from the database (DICOM headers, model errors) is set with textContent,
// never parsed as HTML.
"use strict";

const POLL_MS = 2000;
const HEALTH_LABELS = {
  scp: "DICOM SCP",
  database: "Database",
  broker: "Broker",
  scheduler: "Scheduler",
  worker: "Worker",
  disk: "Disk space",
};

const state = { last: {}, timer: null, busy: false, again: false, csrf: null, admin: false, role: null };

// ---- DOM helpers -----------------------------------------------------------------

function el(tag, props, children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else if (key === "title") node.title = String(value);
      else if (key === "data") Object.assign(node.dataset, value);
      else node.setAttribute(key, String(value));
    }
  }
  for (const child of children || []) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(kind, value) {
  return el("span", { class: `badge ${kind}-${value}`, text: value.replace("_", " ") });
}

function muted(text) {
  return el("span", { class: "muted", text });
}

// ---- formatting ------------------------------------------------------------------

function patientName(pn) {
  // DICOM PN: family^given^middle^prefix^suffix, "=" separates alphabetic/ideographic groups.
  const first = (pn || "").split("=")[0];
  const parts = first.split("^").map((p) => p.trim());
  const family = parts[0] || "";
  const rest = parts.slice(1).filter(Boolean).join(" ");
  if (family && rest) return `${family}, ${rest}`;
  return family || rest;
}

function studyDate(da) {
  return /^\d{8}$/.test(da || "") ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6)}` : da;
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour12: false })
    : date.toLocaleString([], { dateStyle: "short", timeStyle: "medium", hour12: false });
}

function seconds(value) {
  if (value === null || value === undefined) return "…";
  if (value < 10) return `${value.toFixed(2)} s`;
  if (value < 60) return `${value.toFixed(1)} s`;
  const m = Math.floor(value / 60);
  return `${m} m ${String(Math.round(value - m * 60)).padStart(2, "0")} s`;
}

// ---- alert -----------------------------------------------------------------------

function showAlert(text) {
  document.getElementById("alert-text").textContent = text;
  document.getElementById("alert").hidden = false;
}

function hideAlert() {
  document.getElementById("alert").hidden = true;
}

// ---- rendering -------------------------------------------------------------------

function renderHealth(parts, reachable) {
  const summary = document.getElementById("health-summary");
  const box = document.getElementById("health-parts");
  box.replaceChildren();
  if (!reachable) {
    summary.className = "health-summary down";
    summary.textContent = "Node unreachable";
    return;
  }
  const down = Object.keys(parts).filter((name) => !parts[name]);
  summary.className = `health-summary ${down.length ? "down" : "ok"}`;
  summary.textContent = down.length
    ? `Degraded: ${down.map((n) => HEALTH_LABELS[n] || n).join(", ")} down`
    : "All systems operational";
  for (const [name, ok] of Object.entries(parts)) {
    box.append(
      el("span", { class: `pill ${ok ? "ok" : "down"}`, data: { part: name }, title: ok ? "up" : "down" }, [
        el("span", { class: "dot", "aria-hidden": "true" }),
        HEALTH_LABELS[name] || name,
        el("span", { class: "visually-hidden", text: ok ? " up" : " down" }),
      ]),
    );
  }
}

function seriesBlock(series) {
  const head = el("div", { class: "series-head" }, [
    el("span", { class: "modality", text: series.modality || "?" }),
    el("span", { class: "series-desc", text: series.description || "(no description)" }),
    el("span", { class: "muted", text: `${series.instances} img` }),
    badge("series", series.state),
  ]);
  const lines = [head];
  if (series.state_reason) {
    lines.push(el("div", { class: "series-reason", text: series.state_reason }));
  }
  if (series.jobs.length) {
    lines.push(
      el(
        "div",
        { class: "series-jobs" },
        series.jobs.map((job) =>
          el("span", { class: `job-chip job-${job.state}`, title: `job ${job.id}: ${job.state}` }, [
            `#${job.id} ${job.model_name}`,
          ]),
        ),
      ),
    );
  }
  return el("div", { class: "series", data: { seriesUid: series.series_instance_uid } }, lines);
}

function renderStudies(studies) {
  const body = document.querySelector("#studies tbody");
  body.replaceChildren(
    ...studies.map((study) => {
      // Masked by the node for roles that may not see patient identifiers.
      const hidden = study.identifiers_hidden;
      const name = hidden ? "identifiers hidden" : patientName(study.patient.name);
      return el("tr", { data: { studyUid: study.study_instance_uid } }, [
        el("td", { class: "col-patient" }, [
          el("div", { class: hidden ? "hidden-id" : "strong", text: name || "(no name)" }),
          el("div", { class: "muted mono", text: study.patient.patient_id }),
        ]),
        el("td", { class: "nowrap", text: studyDate(study.study_date) }),
        el("td", { class: "mono", text: study.accession_number }),
        el("td", { text: study.description }),
        el("td", { class: "col-series" }, study.series.length ? study.series.map(seriesBlock) : [muted("no series")]),
      ]);
    }),
  );
  document.getElementById("studies-empty").hidden = studies.length > 0;
  document.getElementById("studies-count").textContent = String(studies.length);
}

function stepChip(step) {
  const title = [`${step.name}: ${step.state}`, step.detail].filter(Boolean).join("\n");
  return el("span", { class: `step step-${step.state}`, title }, [
    el("span", { class: "step-name", text: step.name }),
    el("span", { class: "step-secs", text: seconds(step.seconds) }),
  ]);
}

function stepCells(job) {
  if (!job.steps.length) return [muted("—")];
  // A queued job shows the steps of the attempt before it, dimmed and labelled.
  if (job.state !== "queued") return job.steps.map(stepChip);
  return [
    el("div", { class: "muted small", text: `previous attempt (${job.steps[0].attempt})` }),
    el("div", { class: "steps-previous" }, job.steps.map(stepChip)),
  ];
}

function deliveryLine(row) {
  const tries = `${row.attempts} attempt${row.attempts === 1 ? "" : "s"}`;
  if (row.state === "delivered") return `${row.destination}: delivered ${when(row.delivered_at)}`;
  if (row.state === "committing") return `${row.destination}: stored, awaiting storage commitment`;
  if (row.state === "dead") return `${row.destination}: dead-lettered after ${tries}: ${row.last_error}`;
  const next = row.next_attempt_at ? `, next ${when(row.next_attempt_at)}` : "";
  return `${row.destination}: pending (${tries}${next})${row.last_error ? ": " + row.last_error : ""}`;
}

function resultChip(result) {
  const rows = result.deliveries || [];
  let status = "pending";
  if (rows.some((row) => row.state === "dead")) status = "dead";
  else if (result.delivered_at) status = "delivered";
  else if (result.delivery_error) status = "error";
  const mark = { delivered: "✓", error: "✗", dead: "✗", pending: "…" }[status];
  const lines = rows.length ? rows.map(deliveryLine) : ["kept on the node (no destination takes it)"];
  const title = `${result.sop_instance_uid}\n${lines.join("\n")}`;
  return el("span", { class: `result result-${status}`, title }, [`${result.kind} ${mark}`]);
}

function jobActions(job) {
  if (job.state !== "failed") return [];
  const button = el("button", { type: "button", class: "retry", data: { jobId: job.id }, text: "Retry" });
  button.addEventListener("click", () => retry(job.id, button));
  return [button];
}

function renderJobs(jobs) {
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren(
    ...jobs.map((job) => {
      const results = job.results.map(resultChip);
      for (const result of job.results) {
        for (const row of result.deliveries || []) {
          if (row.state === "dead" || (row.state === "pending" && row.last_error)) {
            results.push(el("div", { class: "error-text small", text: `${result.kind} → ${deliveryLine(row)}` }));
          }
        }
      }
      if (job.findings !== null && job.findings !== undefined) {
        results.push(
          el("details", { class: "findings" }, [
            el("summary", { text: "findings" }),
            el("pre", { text: JSON.stringify(job.findings, null, 2) }),
          ]),
        );
      }
      return el("tr", { class: `job-row row-${job.state}`, data: { jobId: job.id } }, [
        el("td", { class: "col-id mono", text: `#${job.id}` }),
        el("td", { class: "col-jobseries" }, [
          el("div", {}, [
            el("span", { class: "modality", text: job.modality || "?" }),
            el("span", { text: job.series_description || "(no description)" }),
          ]),
          el("div", { class: "muted mono uid", text: job.series_instance_uid, title: job.series_instance_uid }),
        ]),
        el("td", { class: "col-model" }, [
          el("div", { class: "strong", text: job.model_name }),
          el("div", { class: "muted", text: `v${job.model_version}` }),
        ]),
        el("td", { class: "col-state" }, [
          badge("job", job.state),
          job.attempts > 1 ? el("div", { class: "muted small", text: `attempt ${job.attempts}` }) : null,
        ]),
        el("td", { class: "col-error" }, [job.error ? el("div", { class: "error-text", text: job.error, title: job.error }) : null]),
        el("td", { class: "col-steps" }, stepCells(job)),
        el("td", { class: "col-results" }, results.length ? results : [muted("—")]),
        el("td", { class: "nowrap muted", text: when(job.created_at), title: job.created_at }),
        el("td", { class: "col-action" }, jobActions(job)),
      ]);
    }),
  );
  document.getElementById("jobs-empty").hidden = jobs.length > 0;
  document.getElementById("jobs-count").textContent = String(jobs.length);
}

function renderNode(node) {
  const parts = [node.ae_title, `port ${node.dicom_port}`];
  const where = (node.destinations || []).map((d) => `${d.name} (${d.kinds.join(", ")})`);
  parts.push(where.length ? `→ ${where.join(", ")}` : "results kept locally");
  document.getElementById("node-ident").textContent = parts.join(" · ");
}

// ---- polling ---------------------------------------------------------------------

function toSignIn() {
  window.location.assign("/signin?next=/");
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
  if (response.status === 401) toSignIn(); // the session ended
  const text = await response.text();
  return { ok: response.ok, status: response.status, text };
}

async function post(url, body) {
  // The session's CSRF token goes with every state-changing request.
  const headers = { Accept: "application/json", "X-CSRF-Token": state.csrf || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method: "POST",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) toSignIn();
  return response;
}

function changed(key, text) {
  if (state.last[key] === text) return false;
  state.last[key] = text;
  return true;
}

function jobsUrl() {
  const filter = document.getElementById("jobs-filter").value;
  return filter ? `/api/jobs?state=${encodeURIComponent(filter)}` : "/api/jobs";
}

async function refreshOnce() {
  const [health, studies, jobs, audit, worklist] = await Promise.allSettled([
    getJson("/healthz"),
    getJson("/api/studies"),
    getJson(jobsUrl()),
    state.admin ? getJson(auditUrl()) : Promise.resolve(null), // audit.js; admins only
    getJson(worklistUrl()), // worklist.js
  ]);
  let reachable = true;

  if (worklist.status === "fulfilled" && worklist.value.ok) {
    updateWorklist(worklist.value.text); // redraws only what changed (worklist.js)
  } else {
    reachable = false;
  }

  if (health.status === "fulfilled" && (health.value.ok || health.value.status === 503)) {
    if (changed("health", health.value.text)) renderHealth(JSON.parse(health.value.text), true);
  } else {
    reachable = false;
    state.last.health = null;
    renderHealth({}, false);
  }
  if (studies.status === "fulfilled" && studies.value.ok) {
    if (changed("studies", studies.value.text)) renderStudies(JSON.parse(studies.value.text));
  } else {
    reachable = false;
  }
  if (jobs.status === "fulfilled" && jobs.value.ok) {
    if (changed("jobs", jobs.value.text)) renderJobs(JSON.parse(jobs.value.text));
  } else {
    reachable = false;
  }
  if (state.admin) {
    if (audit.status === "fulfilled" && audit.value.ok) {
      if (changed("audit", audit.value.text)) renderAudit(JSON.parse(audit.value.text));
    } else {
      reachable = false;
    }
  }

  const updated = document.getElementById("updated");
  updated.textContent = reachable
    ? `Updated ${new Date().toLocaleTimeString([], { hour12: false })}`
    : "Connection problem — retrying";
  updated.classList.toggle("stale", !reachable);
}

async function refresh() {
  // One refresh at a time; a request made meanwhile runs right after.
  if (state.busy) {
    state.again = true;
    return;
  }
  clearTimeout(state.timer);
  state.busy = true;
  try {
    await refreshOnce();
  } catch (error) {
    console.error(error);
  } finally {
    state.busy = false;
  }
  if (state.again) {
    state.again = false;
    refresh();
  } else {
    state.timer = setTimeout(refresh, POLL_MS);
  }
}

async function retry(jobId, button) {
  button.disabled = true;
  button.textContent = "Retrying…";
  try {
    const response = await post(`/api/jobs/${encodeURIComponent(jobId)}/retry`);
    if (response.ok) {
      hideAlert();
    } else {
      let reason = `HTTP ${response.status}`;
      try {
        const body = await response.json();
        if (typeof body.detail === "string") reason = body.detail;
      } catch (_) {
        // keep the status line
      }
      showAlert(`Retry of job #${jobId} refused: ${reason}`);
      button.disabled = false;
      button.textContent = "Retry";
    }
  } catch (error) {
    showAlert(`Retry of job #${jobId} failed: ${error}`);
    button.disabled = false;
    button.textContent = "Retry";
  }
  refresh();
}

async function loadSession() {
  const session = await getJson("/api/session");
  if (!session.ok) return false;
  const me = JSON.parse(session.text);
  state.csrf = me.csrf_token;
  document.getElementById("user-name").textContent = me.name;
  document.getElementById("user-role").textContent = me.role;
  document.getElementById("user").hidden = false;
  state.admin = me.role === "admin"; // the audit trail is theirs alone
  state.role = me.role; // operators and admins acknowledge critical findings (worklist.js)
  document.getElementById("audit-card").hidden = !state.admin;
  return true;
}

async function signOut() {
  await post("/signout");
  toSignIn();
}

async function loadNode() {
  try {
    const node = await getJson("/api/node");
    if (node.ok) renderNode(JSON.parse(node.text));
  } catch (error) {
    console.error(error);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("alert-close").addEventListener("click", hideAlert);
  document.getElementById("jobs-filter").addEventListener("change", () => {
    state.last.jobs = null;
    refresh();
  });
  document.getElementById("audit-filter").addEventListener("change", () => {
    state.last.audit = null;
    refresh();
  });
  document.getElementById("signout").addEventListener("click", signOut);
  loadSession().then((signedIn) => {
    if (!signedIn) return;
    loadNode();
    refresh();
  });
});
