"""HTTP routes, one module per resource; shared dependencies in ``deps``, shapes in ``schemas``."""
