"""A storage SCU for tests that must send bytes exactly as they are on disk."""

from __future__ import annotations

from pathlib import Path

from pydicom import Dataset, dcmread
from pynetdicom import AE, _config


def send_raw(host: str, port: int, called_aet: str, path: Path) -> Dataset:
    """C-STORE a file's bytes without parsing its data set; returns the status data set.

    The file meta information names the SOP class and transfer syntax to propose.
    """
    meta = dcmread(path, stop_before_pixels=True, specific_tags=[]).file_meta
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate(host, port, ae_title=called_aet)
    assert assoc.is_established, f"no association with {called_aet}@{host}:{port}"
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the bytes, do not decode them
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        assoc.release()
