"""The settings of job priority (``AINODE_PRIORITY_RULES``): which received series make
urgent work, such as an emergency department's modality or a stroke protocol.

They are fields of the node's one ``node.settings.Settings`` (which takes them from this
class, as a base), read and checked with every other setting at start-up: a rule that
names no condition, or whose pattern does not compile, stops the node there.
``node.priority`` applies them when routing creates a job.

In the environment the rules are a JSON list, for example::

    AINODE_PRIORITY_RULES='[{"priority": "STAT", "calling_ae_title": "ED_CT"},
                            {"priority": "HIGH", "series_description": "stroke|perfusion"}]'
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from node.db.worklist import UpsPriority
from node.delivery.destinations import AE_TITLE

CONDITIONS = (
    "calling_ae_title",
    "modality",
    "body_part_examined",
    "series_description",
    "study_description",
)
"""What a rule may look at: attributes the index keeps on every series and study."""


class PriorityRule(BaseModel):
    """A priority for the jobs of series that meet every condition the rule names.

    ``calling_ae_title`` is compared exactly (AE titles are case-sensitive);
    ``modality`` and ``body_part_examined`` (code strings) regardless of case; the two
    descriptions are regular expressions searched anywhere in the text, regardless of
    case, since free text is written in every case (anchor with ``^`` and ``$``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    priority: UpsPriority
    calling_ae_title: str | None = None
    modality: str | None = None
    body_part_examined: str | None = None
    series_description: str | None = None  # a regular expression
    study_description: str | None = None  # a regular expression

    @field_validator("calling_ae_title")
    @classmethod
    def _check_aet(cls, value: str | None) -> str | None:
        if value is not None and (not AE_TITLE.match(value) or value.strip() != value):
            raise ValueError(f"priority rule: {value!r} is not an AE title")
        return value

    @field_validator("series_description", "study_description")
    @classmethod
    def _check_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"priority rule: pattern {value!r}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _some_condition(self) -> PriorityRule:
        if all(getattr(self, name) is None for name in CONDITIONS):
            raise ValueError(f"a priority rule names at least one of {', '.join(CONDITIONS)}")
        return self

    def __str__(self) -> str:
        named = ", ".join(
            f"{name}={getattr(self, name)}"
            for name in CONDITIONS
            if getattr(self, name) is not None
        )
        return f"{self.priority.value} when {named}"


class PrioritySettings(BaseModel):
    """Which series make work more (or less) urgent than MEDIUM."""

    priority_rules: list[PriorityRule] = Field(
        default_factory=list,
        description="JSON list of {priority, calling_ae_title, modality, body_part_examined, "
        "series_description, study_description}; a job takes the highest priority of the "
        "rules its series meet and of its workitem, else MEDIUM",
    )

    @field_validator("priority_rules", mode="before")
    @classmethod
    def _parse_priority_rules(cls, value: Any) -> Any:
        # A JSON list given as text (a config file's string, an argument), as in the
        # environment. (Named apart from the other mixins' validators: a base's method
        # of the same name would hide this one.)
        return json.loads(value) if isinstance(value, str) else value
