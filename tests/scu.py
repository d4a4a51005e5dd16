"""Test clients: a storage SCU that sends bytes exactly as they are on disk, and a look at a
raw socket the node should close."""

from __future__ import annotations

import socket
from pathlib import Path

from pydicom import Dataset
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config


def send_raw(host: str, port: int, called_aet: str, path: Path) -> Dataset:
    """C-STORE a file's bytes without parsing its data set; returns the status data set.

    The file meta information names the SOP class and transfer syntax to propose.
    """
    meta = read_file_meta_info(path)  # the data set itself is never parsed here
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


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the node closed ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
