"""Telling a reading worklist of critical findings by HL7 v2 over MLLP: the send of
``hl7`` destinations.

Each notification is one ORU^R01 message (``node.delivery.hl7_oru``) in an MLLP block
on its own connection (plain TCP, or TLS where the destination says so), sent with
the ``hl7`` package's asyncio MLLP streams, which frame and parse both ways. The send
waits for the receiver's acknowledgement: AA (or CA) for this message's control ID is
delivered; AE or AR, an ACK for another message, a closed connection or no answer
within the destination's ``timeout_seconds`` is a ``DeliveryError``, which the outbox
retries with backoff and dead-letters after its last attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import hl7
from hl7.mllp import InvalidBlockError, open_hl7_connection

from node.delivery.destinations import Hl7Destination
from node.delivery.hl7_oru import control_id, oru_r01
from node.delivery.notification import notifications
from node.delivery.transports import DeliveryError, Outgoing, sends

ACCEPTED = {"AA", "CA"}  # HL7 table 0008: application / commit accept
_ENCODING = "utf-8"  # what MSH-18 declares (hl7_oru.CHARACTER_SET)


@sends(Hl7Destination)
def send_by_mllp(destination: Hl7Destination, files: list[Outgoing], calling_aet: str) -> None:
    """The send of ``hl7`` destinations: each notification acknowledged AA, or DeliveryError.

    The node's AE title is the sending application (MSH-3)."""
    for notice in notifications(files):
        message = oru_r01(
            notice,
            sending_application=calling_aet,
            sending_facility=destination.sending_facility,
            receiving_application=destination.receiving_application,
            receiving_facility=destination.receiving_facility,
        )
        ack = asyncio.run(exchange(destination, message))
        check_acknowledgement(ack, control_id(notice), str(destination))


async def exchange(destination: Hl7Destination, message: str) -> hl7.Message:
    """Send ``message`` in one MLLP block and return the block that answers it."""
    timeout = destination.timeout_seconds
    context = _tls_context(destination) if destination.tls else None
    try:
        reader, writer = await asyncio.wait_for(
            open_hl7_connection(
                destination.host, destination.port, encoding=_ENCODING, ssl=context
            ),
            timeout,
        )
    except (OSError, TimeoutError) as exc:
        raise DeliveryError(f"cannot connect to {destination}: {exc or 'timed out'}") from exc
    try:
        writer.writeblock(message.encode(_ENCODING))
        await asyncio.wait_for(writer.drain(), timeout)
        return await asyncio.wait_for(reader.readmessage(), timeout)
    except TimeoutError as exc:
        raise DeliveryError(f"{destination} sent no acknowledgement within {timeout:g} s") from exc
    except (OSError, asyncio.IncompleteReadError, InvalidBlockError, hl7.ParseException) as exc:
        raise DeliveryError(f"{destination} answered no acknowledgement: {exc!r}") from exc
    finally:
        writer.close()
        # The answer is in, or the error raised says why it is not.
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 5)


def check_acknowledgement(ack: hl7.Message, expected_id: str, where: str) -> None:
    """DeliveryError unless ``ack`` accepts the message whose control ID is ``expected_id``."""
    try:
        msa = ack.segment("MSA")
    except KeyError as exc:
        raise DeliveryError(f"{where} answered without an MSA segment: {str(ack)[:200]!r}") from exc
    code, acknowledged = str(msa(1)), str(msa(2))
    if acknowledged != expected_id:
        raise DeliveryError(f"{where} acknowledged message {acknowledged!r}, not {expected_id!r}")
    if code not in ACCEPTED:
        raise DeliveryError(f"{where} refused the message ({code}): {_reason(ack, msa)}")


def _reason(ack: hl7.Message, msa: hl7.Segment) -> str:
    """The receiver's words for a refusal: MSA-3, else the ERR segment's text."""
    text = str(msa(3)) if len(msa) > 3 else ""
    if not text:
        try:
            err = ack.segment("ERR")
            text = str(err(8)) if len(err) > 8 else str(err)
        except KeyError:
            text = "no reason given"
    return text[:500]


def _tls_context(destination: Hl7Destination) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(destination.tls_ca) if destination.tls_ca else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
