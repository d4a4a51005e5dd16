// ainode dashboard: the audit trail card, for admins only (GET /api/audit answers 403
// to anyone else, and the card stays hidden). app.js polls it with the rest of the page;
// the DOM helpers (el, badge, muted, when) are app.js's. Every value goes in as text.
"use strict";

const AUDIT_LIMIT = 100;
const AUDIT_KINDS = {
  association: "association",
  instances_received: "instances received",
  results_sent: "results sent",
  commitment_received: "commitment received",
  sign_in: "sign-in",
  sign_out: "sign-out",
  operator_action: "operator action",
  security_alert: "security alert",
  application_start: "application start",
  application_stop: "application stop",
};

function auditUrl() {
  const kind = document.getElementById("audit-filter").value;
  const query = `limit=${AUDIT_LIMIT}${kind ? `&kind=${encodeURIComponent(kind)}` : ""}`;
  return `/api/audit?${query}`;
}

function countOf(byClass) {
  // {SOP Class UID: [SOP Instance UIDs]} or {SOP Class UID: count}
  return Object.values(byClass || {}).reduce(
    (total, value) => total + (Array.isArray(value) ? value.length : Number(value) || 0),
    0,
  );
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function studyName(study) {
  if (!study) return "";
  return study.study_description || study.study_instance_uid || "";
}

// One line saying what happened; the whole detail is in the cell's title.
function auditSummary(row) {
  const d = row.detail || {};
  const why = d.reason ? `: ${d.reason}` : "";
  switch (row.kind) {
    case "association": {
      const tls = d.tls_identity ? ` (TLS ${d.tls_identity})` : "";
      return `${d.calling_ae_title || "?"} → ${d.called_ae_title || "?"}, ${plural(d.instances || 0, "instance")}${tls}${why}`;
    }
    case "instances_received":
      return `${plural(countOf(d.sop_classes), "instance")} of ${studyName(d.study)}`;
    case "results_sent": {
      const job = d.job_id ? `, job #${d.job_id}` : "";
      return `${plural(countOf(d.instances), "object")} to ${d.destination} (${d.destination_address})${job}${why}`;
    }
    case "commitment_received": {
      const failed = countOf(d.failed);
      return `${countOf(d.committed)} committed${failed ? `, ${failed} not` : ""} by ${d.destination}, transaction ${d.transaction_uid}`;
    }
    case "sign_in":
      return `${d.method || "sign-in"}${why}`;
    case "sign_out":
      return d.by_user === false ? "session ended by the node" : "signed out";
    case "operator_action":
      return `${d.action} on ${d.target}${why}`;
    case "security_alert":
      return `${(d.alert_type || "").replaceAll("_", " ")}: ${d.description || ""}`;
    case "application_start":
    case "application_stop":
      return d.process || "";
    default:
      return why.slice(2);
  }
}

function auditRow(row) {
  const outcome = el("span", { class: `badge outcome-${row.outcome}`, text: row.outcome_text });
  return el("tr", { class: `audit-row audit-${row.kind}`, data: { auditId: row.id, kind: row.kind } }, [
    el("td", { class: "nowrap muted", text: when(row.occurred_at), title: row.occurred_at }),
    el("td", { class: "nowrap", text: AUDIT_KINDS[row.kind] || row.kind }),
    el("td", {}, [outcome]),
    el("td", { class: "col-actor" }, [
      el("div", { class: "strong", text: row.actor || "—" }),
      row.actor_role ? el("div", { class: "muted small", text: row.actor_role }) : null,
    ]),
    el("td", { class: "mono", text: row.peer_address }),
    el("td", { class: "col-detail", text: auditSummary(row), title: JSON.stringify(row.detail, null, 1) }),
  ]);
}

function renderAudit(rows) {
  document.querySelector("#audit tbody").replaceChildren(...rows.map(auditRow));
  document.getElementById("audit-empty").hidden = rows.length > 0;
  document.getElementById("audit-count").textContent = String(rows.length);
}
