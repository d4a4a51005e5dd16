"""The job's critical findings as ``CriticalFinding`` rows: written with its results.

The analysis worker reports the critical rules that fired in the job's findings, under
``"critical"`` (``workers.critical.critical_summary``: output, code, value, unit,
threshold, urgency, text). ``JobLedger.analyzed`` calls :func:`record_critical_findings`
in the transaction that records the results, so a finding exists exactly when the Key
Object Selection that flags it does. A re-run of the job (an operator's retry, new
instances) updates the rows of the rules that fire again, keeping an acknowledgement,
and removes those that no longer fire.

``node.acknowledgement`` (an operator's acknowledgement) is the only other writer of
these rows, and of their acknowledgement columns only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db.findings import CriticalFinding
from node.db.worklist import UpsPriority

FINDINGS_KEY = "critical"  # as workers.critical writes it; node does not import workers

# The columns' sizes (node.db.findings): a model's words are cut, never refused.
_OUTPUT, _CODE_VALUE, _CODE_SCHEME, _CODE_MEANING, _UNIT = 64, 64, 16, 64, 16


def record_critical_findings(session: Session, job_id: int, findings: dict[str, Any]) -> int:
    """Write one row per critical rule ``findings`` says fired for ``job_id``; how many.

    Raises ValueError when an entry lacks what a row needs (the worker's contract)."""
    fired = {entry["output"][:_OUTPUT]: entry for entry in findings.get(FINDINGS_KEY) or []}
    existing = {
        row.output: row
        for row in session.scalars(select(CriticalFinding).where(CriticalFinding.job_pk == job_id))
    }
    for output, row in existing.items():
        if output not in fired:
            session.delete(row)
    for output, entry in fired.items():
        row = existing.get(output)
        if row is None:
            row = CriticalFinding(job_pk=job_id, output=output)
            session.add(row)
        _fill(row, entry)
    return len(fired)


def _fill(row: CriticalFinding, entry: dict[str, Any]) -> None:
    try:
        code = entry["code"]
        row.code_value = str(code["value"])[:_CODE_VALUE]
        row.code_scheme = str(code["scheme"])[:_CODE_SCHEME]
        row.code_meaning = str(code["meaning"])[:_CODE_MEANING]
        row.value = float(entry["value"])
        row.unit = str(entry.get("unit") or "")[:_UNIT]
        row.threshold = float(entry["threshold"])
        row.urgency = UpsPriority(entry["urgency"]).value
        row.text = str(entry.get("text") or "")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"critical finding {entry!r} lacks {exc}") from exc
