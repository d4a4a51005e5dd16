"""A receiving process: serves the associations the node's process hands it.

Started by :class:`node.acceptor.pool.ReceivingProcess` as
``python -m node.acceptor.receiver FD``, with FD its end of a private socket pair. The
first message on it is the node's settings; then each message is one admitted
association (its socket, passed with SCM_RIGHTS, and its A-ASSOCIATE-RQ), served in a
thread of its own with this process's own store path and group committer; each one's
record goes back when it ends. End of file on the channel: stop and exit.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import socket
import sys
import threading

from node.acceptor.association import Association
from node.acceptor.messages import AcceptorServices
from node.acceptor.pool import ASSOCIATION, ENDED, READY
from node.acceptor.record import AssociationRecord
from node.db.session import make_engine, make_session_factory
from node.scp import build_admission, supported_contexts
from node.settings import Settings
from node.store import StorePath

log = logging.getLogger("node.acceptor.receiver")


class Receiver:
    """This process's side of the channel."""

    def __init__(self, channel: socket.socket, settings: Settings) -> None:
        self.channel = channel
        self.settings = settings
        self.send_lock = threading.Lock()
        self.engine = make_engine(settings)
        self.store = StorePath(settings, make_session_factory(self.engine))
        self.services = AcceptorServices(
            admission=build_admission(settings),  # judged by the node's process already
            supported=supported_contexts(),
            max_pdu=settings.max_pdu_bytes,
            acse_timeout=settings.dicom_acse_timeout,
            network_timeout=settings.dicom_network_timeout,
            store=self.store,
        )
        self.sockets: dict[int, socket.socket] = {}
        self.threads: list[threading.Thread] = []

    def run(self) -> None:
        self.store.start()
        self.channel.sendall(READY)
        try:
            while True:
                message, fds, _flags, _address = socket.recv_fds(self.channel, 1 << 20, 1)
                if not message:
                    break
                if message[:1] == ASSOCIATION and len(fds) == 1:
                    self._start(message[1:], fds[0])
                else:
                    for fd in fds:
                        socket.close(fd)
        finally:
            self._stop()

    def _start(self, message: bytes, fd: int) -> None:
        header, _, request_pdu = message.partition(b"\n")
        key, address, port = header.decode().split(" ")
        sock = socket.socket(fileno=fd)
        record = AssociationRecord(address=address, port=int(port))
        thread = threading.Thread(target=self._serve, args=(int(key), sock, record, request_pdu),
                                  name=f"dicom-{address}", daemon=True)  # fmt: skip
        self.sockets[int(key)] = sock
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def _serve(self, key: int, sock: socket.socket, record: AssociationRecord,
               request_pdu: bytes) -> None:  # fmt: skip
        try:
            Association(sock, record, self.services).run_admitted(request_pdu)
        except Exception:  # noqa: BLE001 - one association's fault must not stop the others
            log.exception("association from %s failed", record.address)
            record.outcome = "failed in the receiving process"
        finally:
            self.sockets.pop(key, None)
            with self.send_lock, contextlib.suppress(OSError):
                self.channel.sendall(ENDED + f"{key}\n".encode() + record.served_elsewhere())

    def _stop(self) -> None:
        for sock in list(self.sockets.values()):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=10)
        self.store.stop()
        self.engine.dispose()


def main(argv: list[str]) -> int:
    channel = socket.socket(fileno=int(argv[0]))
    settings, level = pickle.loads(channel.recv(1 << 20))  # noqa: S301 - our own process
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s receiver: %(message)s")
    Receiver(channel, settings).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
