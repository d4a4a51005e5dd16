"""A job's priority: decided once, when routing creates the job, and kept on ``Job.priority``.

It is the highest of what applies:

- the priority of the job's workitem (``Job.workitem_pk``), when a RIS or a worklist
  asked for the work, or the node pulled it from another provider (Scheduled Procedure
  Step Priority, (0074,1200)); the node's own workitem of a job takes the job's;
- the routing rules of the settings (``node.priority_settings``) that the job's series
  meet: its primary series and any further input of a multimodal model;

and MEDIUM when nothing applies. A rule may lower the priority too (LOW for a research
sender), when nothing else asks for more.

The study's own word (Requested Procedure Priority) is not read: the index keeps no such
attribute, and the receive path is not slowed for it.

The queue (``node.jobs.queue``) sends every message of a job at its priority, read from
the row, so a re-sent, retried or re-analysed job keeps it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from node.db.models import Series
from node.db.worklist import UpsPriority, Workitem, WorkitemOrigin
from node.priority_settings import PriorityRule

log = logging.getLogger(__name__)

DEFAULT = UpsPriority.MEDIUM


def highest(priorities: Iterable[UpsPriority]) -> UpsPriority | None:
    """The most urgent of ``priorities`` (STAT first); None when there are none."""
    return min(priorities, key=lambda p: p.rank, default=None)


def _asked_for(workitem: Workitem | None) -> bool:
    """Whether ``workitem`` was asked for by someone (a RIS, another provider), so its
    priority counts; the node's own workitem of a job follows the job, not the reverse."""
    return (
        workitem is not None
        and workitem.priority is not None
        and workitem.origin not in (None, WorkitemOrigin.NODE)
    )


def _same_code(wanted: str | None, value: str) -> bool:
    return wanted is None or wanted.strip().upper() == value.strip().upper()


@dataclass(frozen=True)
class _CompiledRule:
    rule: PriorityRule
    series_description: re.Pattern[str] | None
    study_description: re.Pattern[str] | None

    @classmethod
    def compile(cls, rule: PriorityRule) -> _CompiledRule:
        def pattern(text: str | None) -> re.Pattern[str] | None:
            return re.compile(text, re.IGNORECASE) if text is not None else None

        return cls(rule, pattern(rule.series_description), pattern(rule.study_description))

    def matches(self, series: Series) -> bool:
        rule = self.rule
        return (
            (rule.calling_ae_title is None or rule.calling_ae_title == series.calling_ae_title)
            and _same_code(rule.modality, series.modality)
            and _same_code(rule.body_part_examined, series.body_part_examined)
            and (
                self.series_description is None
                or self.series_description.search(series.series_description) is not None
            )
            and (
                self.study_description is None
                or self.study_description.search(series.study.study_description) is not None
            )
        )


class JobPriorities:
    """The settings' rules, compiled once (by the scheduler); ``of`` decides a job's
    priority from rows routing already holds, at no extra query but the study's."""

    def __init__(self, rules: Sequence[PriorityRule] = ()) -> None:
        self._rules = tuple(_CompiledRule.compile(rule) for rule in rules)

    def matching(self, series: Iterable[Series]) -> list[PriorityRule]:
        """The rules that any of ``series`` meets, in the settings' order."""
        chosen = list(series)
        return [c.rule for c in self._rules if any(c.matches(s) for s in chosen)]

    def of(self, series: Sequence[Series], workitem: Workitem | None = None) -> UpsPriority:
        """The priority of a job on ``series`` (its primary first, then its further
        inputs) for ``workitem`` (None: the node routed it on its own)."""
        rules = self.matching(series) if self._rules else []
        asked = [workitem.priority] if _asked_for(workitem) else []
        decided = highest([*asked, *(rule.priority for rule in rules)]) or DEFAULT
        if decided is not DEFAULT:
            why = [f"rule {rule}" for rule in rules if rule.priority is decided]
            if workitem is not None and asked and workitem.priority is decided:
                why.append(f"workitem {workitem.sop_instance_uid}")
            log.info(
                "series %s: priority %s (%s)",
                series[0].series_instance_uid if series else "?",
                decided.value,
                "; ".join(why),
            )
        return decided


NO_RULES = JobPriorities()
"""No routing rules: a job takes its workitem's priority, else MEDIUM."""
