"""The node's Unified Procedure Step provider (PS3.4 Annex CC; IHE AIW-I).

``book`` is the one writer of workitems, subscriptions and events (``states``: the
state table and the statuses, ``attributes``: what a workitem holds, ``matching``:
C-FIND matching, ``job_sync``: a job's own workitem following the job);
``dimse_handlers`` and ``service`` serve it over DIMSE; ``event_dispatcher`` sends its
events to DIMSE subscribers; ``ups_settings`` holds ``AINODE_UPS_*``.
"""
