"""Sending results to a DICOM archive by C-STORE: the send of ``dicom`` destinations.

One association per delivery, proposing exactly the SOP classes being sent, in the
transfer syntax the files are encoded in (Explicit VR Little Endian for everything the
node encodes).
"""

from __future__ import annotations

from pydicom import dcmread
from pynetdicom import AE, evt

from node.delivery.destinations import DicomAddress, DicomDestination
from node.delivery.transports import DeliveryError, Outgoing, sends
from node.network import set_tcp_nodelay


@sends(DicomDestination)
def send_by_c_store(destination: DicomDestination, files: list[Outgoing], calling_aet: str) -> None:
    """The send of ``dicom`` destinations: every file C-STOREd, or DeliveryError."""
    store_files(destination.ae, calling_aet, files)


def store_files(
    destination: DicomAddress, calling_aet: str, files: list[Outgoing], timeout: float = 30
) -> dict[str, int]:
    """C-STORE each file; returns {SOP Instance UID: status}. Raises DeliveryError.

    Any failure status raises, naming the object; warnings (0xB000-0xBFFF) count as
    stored, as PS3.4 B.2.3 allows.
    """
    if not files:
        return {}
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.maximum_pdu_size = 0
    syntaxes: dict[str, set[str]] = {}
    datasets = []
    for item in files:
        ds = dcmread(item.path)
        syntaxes.setdefault(item.sop_class_uid, set()).add(str(ds.file_meta.TransferSyntaxUID))
        datasets.append((item, ds))
    for sop_class, transfer_syntaxes in syntaxes.items():
        ae.add_requested_context(sop_class, sorted(transfer_syntaxes))
    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)],
    )
    if not assoc.is_established:
        raise DeliveryError(f"association with {destination} was not established")
    statuses: dict[str, int] = {}
    try:
        for item, ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == -1:
                raise DeliveryError(f"{destination} did not answer the C-STORE of {item.path.name}")
            if code != 0 and not 0xB000 <= code <= 0xBFFF:
                comment = str(getattr(status, "ErrorComment", "") or "")
                raise DeliveryError(
                    f"{destination} refused {item.sop_instance_uid}: status 0x{code:04X} {comment}"
                )
            statuses[item.sop_instance_uid] = code
    finally:
        assoc.release()
    return statuses
