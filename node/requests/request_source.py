"""Which configured source a requested workitem's study is retrieved from.

The workitem may say where its inputs are: the Input Information Sequence's DICOM
Retrieval Sequence (Retrieve AE Title) or WADO-RS Retrieval Sequence (Retrieve URL),
PS3.3 Table 10-3b. The first configured source whose AE title, or DICOMweb root, it
names is used; the default source (``AINODE_RETRIEVE_DEFAULT``) when it names none
the node knows.
"""

from __future__ import annotations

from pydicom import Dataset

from node.retrieve.retrieve_settings import RetrieveSettings, RetrieveSource


def _named_places(dataset: Dataset) -> tuple[list[str], list[str]]:
    titles: list[str] = []
    urls: list[str] = []
    for item in dataset.get("InputInformationSequence") or []:
        for retrieval in item.get("DICOMRetrievalSequence") or []:
            value = retrieval.get("RetrieveAETitle")
            if value:
                titles.extend(
                    str(v).strip() for v in ([value] if isinstance(value, str) else value)
                )
        for retrieval in item.get("WADORSRetrievalSequence") or []:
            if retrieval.get("RetrieveURL"):
                urls.append(str(retrieval.RetrieveURL))
    return titles, urls


def source_for(dataset: Dataset, settings: RetrieveSettings) -> RetrieveSource | None:
    """The source to retrieve the workitem's study from; None when none is configured."""
    titles, urls = _named_places(dataset)
    for source in settings.retrieve_sources:
        ae = source.ae
        if ae is not None and source.method != "wado" and ae.ae_title in titles:
            return source
        root = (source.wado_url or "").rstrip("/")
        if source.method == "wado" and root and any(url.startswith(root) for url in urls):
            return source
    return settings.retrieve_source()
