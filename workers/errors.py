"""The pipeline's one base exception and its kinds.

An ``AnalysisError`` carries a reason a radiologist or PACS administrator can read;
the job records it as is.
"""


class AnalysisError(Exception):
    """Base of every error the pipeline raises on purpose."""


class SeriesNotAnalysable(AnalysisError):
    """The series cannot be analysed as sent (no pixels, broken geometry, ...)."""


class ModelUnavailable(AnalysisError):
    """The model package cannot be loaded (missing weights, wrong sha256, ...)."""


class EncodingError(AnalysisError):
    """A result could not be encoded as valid DICOM."""
