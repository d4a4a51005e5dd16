"""Delivery: getting a job's results to every destination that takes them.

- ``destinations``: the destination settings models, one per kind, registered by type
  (``node.settings`` holds the parsed ones);
- ``transports`` and the kinds' modules (``cstore``: C-STORE, ``stow``: STOW-RS), gathered
  in ``kinds``: each kind's own send;
- ``commitment``: Storage Commitment Push Model messages (PS3.4 Annex J);
- ``outbox``: every result's delivery to every destination, and every attempt, in the
  database; it judges where a job's deliveries stand (a ``Settlement``);
- ``deliver``: one delivery pass; ``reports``: recording the archive's commitment reports.

The package writes the outbox rows (``Delivery``, ``DeliveryAttempt``) and nothing else:
the job's own state is written by ``node.jobs.ledger``, from the outbox's verdict.
``DeliveryError`` (``transports``) is the one error it raises. This file imports nothing, so
``node.settings`` can import the destination models without pulling in the rest.
"""
