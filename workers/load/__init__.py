"""Loading a received series into a :class:`~workers.volume.Volume`: the pipeline's load step.

:mod:`workers.load.series` runs the loader (``load_series``); the other modules are its
stages: reading files and per-instance checks (:mod:`workers.load.files`), what
decoding may cost, checked before any pixel is decoded (:mod:`workers.load.limits`), slices and
their pixel spacing (:mod:`workers.load.slices`), multi-frame instances
(:mod:`workers.load.multiframe`), stack geometry (:mod:`workers.load.stack`) and 4D
grouping and timing (:mod:`workers.load.four_d`). What pixel values mean is
:mod:`workers.pixels`' business.
"""
