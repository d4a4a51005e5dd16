"""The errors of the model contract: a package refused, or a network that cannot be loaded.

``ManifestError`` is raised while a package is read and checked (discovery, ``ainode
models validate``); ``ModelUnavailable`` when its network cannot be loaded or run.
Both carry a reason an operator can act on. The worker treats ``ModelUnavailable``
as one of its analysis errors: ``workers.errors`` re-exports it and the worker's
error handlers name it beside ``AnalysisError``.
"""


class ManifestError(ValueError):
    """A model package that cannot be used; the message says which rule failed."""


class ModelUnavailable(Exception):
    """The model package cannot be loaded (missing weights, wrong sha256, ...)."""
