"""The pipeline's one base exception and its kinds.

An ``AnalysisError`` carries a reason a radiologist or PACS administrator can read;
the job records it as is. ``ModelUnavailable`` (a package whose network cannot be
loaded) belongs to the model contract, ``models.contract_errors``; it is re-exported here
because the worker raises it too and records it as it records an ``AnalysisError``:
handlers catch ``ANALYSIS_ERRORS``, both.
"""

from models.contract_errors import ModelUnavailable

__all__ = [
    "ANALYSIS_ERRORS",
    "AnalysisError",
    "EncodingError",
    "ModelUnavailable",
    "SeriesNotAnalysable",
    "SeriesTooLarge",
]


class AnalysisError(Exception):
    """Base of every error the pipeline raises on purpose."""


class SeriesNotAnalysable(AnalysisError):
    """The series cannot be analysed as sent (no pixels, broken geometry, ...)."""


class SeriesTooLarge(SeriesNotAnalysable):
    """Decoding the series would take more memory than the node allows (its headers say
    so before any pixel is decoded: ``workers.load.limits``)."""


class EncodingError(AnalysisError):
    """A result could not be encoded as valid DICOM."""


# What a job records as its reason rather than as an internal error.
ANALYSIS_ERRORS: tuple[type[Exception], ...] = (AnalysisError, ModelUnavailable)
