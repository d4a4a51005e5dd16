"""Association negotiation (PS3.8 7.1, PS3.7 Annex D): an A-ASSOCIATE-RQ in, the
A-ASSOCIATE-AC to send back out.

pynetdicom decodes the request and encodes the answer, and its
``negotiate_as_acceptor`` decides each presentation context (abstract syntax,
transfer syntax, SCP/SCU roles) against the node's supported contexts. What the node
proposes in return: its maximum PDU length, its implementation class UID and version
name, the roles it accepted. Asynchronous operations and user identity are not
negotiated (the defaults: one operation at a time, no identity response).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

APPLICATION_CONTEXT_NAME = UID("1.2.840.10008.3.1.1.1")


@dataclass(frozen=True)
class AcceptedContext:
    """One accepted presentation context: what its PDVs carry and how."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass
class AssociationRequest:
    """What the node judges an A-ASSOCIATE-RQ by."""

    primitive: A_ASSOCIATE
    calling_ae_title: str
    called_ae_title: str
    peer_max_pdu: int  # 0: unlimited

    @classmethod
    def decode(cls, pdu: bytes) -> AssociationRequest:
        """From the whole A-ASSOCIATE-RQ PDU, header included."""
        rq = A_ASSOCIATE_RQ()
        rq.decode(pdu)
        primitive = rq.to_primitive()
        peer_max = 0
        for item in primitive.user_information:
            if isinstance(item, MaximumLengthNotification):
                peer_max = int(item.maximum_length_received or 0)
        return cls(
            primitive,
            str(primitive.calling_ae_title).strip(),
            str(primitive.called_ae_title).strip(),
            peer_max,
        )


def accept(
    request: AssociationRequest, supported: list[PresentationContext], max_pdu: int
) -> tuple[bytes, dict[int, AcceptedContext]]:
    """The A-ASSOCIATE-AC PDU for ``request`` and the contexts it accepts, by ID."""
    rq = request.primitive
    roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in rq.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }
    results, role_items = negotiate_as_acceptor(
        rq.presentation_context_definition_list, supported, roles
    )
    accepted = {
        int(cx.context_id): AcceptedContext(
            int(cx.context_id), str(cx.abstract_syntax), str(cx.transfer_syntax[0])
        )
        for cx in results
        if cx.result == 0x00 and cx.context_id is not None
    }
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT_NAME
    primitive.calling_ae_title = rq.calling_ae_title
    primitive.called_ae_title = rq.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = results
    primitive.user_information = [
        _maximum_length(max_pdu),
        _implementation_class(),
        _implementation_version(),
        *role_items,
    ]
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(primitive)
    return ac.encode(), accepted


def _maximum_length(max_pdu: int) -> MaximumLengthNotification:
    item = MaximumLengthNotification()
    item.maximum_length_received = max_pdu
    return item


def _implementation_class() -> ImplementationClassUIDNotification:
    item = ImplementationClassUIDNotification()
    item.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    return item


def _implementation_version() -> ImplementationVersionNameNotification:
    item = ImplementationVersionNameNotification()
    item.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    return item
