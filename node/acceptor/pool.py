"""Receiving processes: associations served on more than one core.

Python runs one thread at a time per process, and receiving is about half Python (the
header, the index, the protocol) and half kernel and C. So the node's process keeps the
listener, reads each association request and judges it (:mod:`node.admission` counts
every association of every process, in one place), and then hands the admitted
connection's socket, with its request, to the receiving process with the fewest
associations (SCM_RIGHTS over a private socket pair). That process accepts and serves
the association with its own group committer, and sends back what happened
(:class:`~node.acceptor.record.AssociationRecord`), so that the admission place is given
back and the association is logged and audited by the node's process as ever.

TLS connections and associations that bring storage commitment reports stay in the
node's process (TLS state cannot move between processes; reports are recorded there).
A receiving process that dies takes its open associations with it: their peers see the
connection close without an answer, nothing they were told was kept is lost, and the
process is started again.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from node.acceptor.negotiation import AssociationRequest
from node.acceptor.record import AssociationRecord
from node.delivery.commitment import STORAGE_COMMITMENT_PUSH_MODEL
from node.settings import Settings

log = logging.getLogger(__name__)

MAX_HANDED_REQUEST = 128 * 1024  # a larger request is served by the node's own process
READY = b"R"
ASSOCIATION = b"A"
ENDED = b"E"


@dataclass
class _Handed:
    """An association a receiving process serves; the node's thread waits on it."""

    record: AssociationRecord
    done: threading.Event = field(default_factory=threading.Event)


class ReceivingProcess:
    """One receiving process and the private channel to it."""

    def __init__(self, settings: Settings, number: int) -> None:
        self.settings = settings
        self.number = number
        self.handed: dict[int, _Handed] = {}
        self.lock = threading.Lock()
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.acceptor.receiver", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        # The settings travel over the private channel, secrets included: never in the
        # environment or a file another process could read.
        level = logging.getLogger().getEffectiveLevel()
        self.channel.sendall(pickle.dumps((settings, level)))

    def wait_ready(self, timeout: float) -> None:
        self.channel.settimeout(timeout)
        try:
            if self.channel.recv(16) != READY:
                raise RuntimeError(f"receiving process {self.number} did not start")
        finally:
            self.channel.settimeout(None)

    def hand(self, key: int, sock: socket.socket, record: AssociationRecord,
             request_pdu: bytes) -> _Handed:  # fmt: skip
        handed = _Handed(record)
        header = f"{key} {record.address} {record.port}\n".encode()
        with self.lock:
            self.handed[key] = handed
            socket.send_fds(self.channel, [ASSOCIATION + header + request_pdu], [sock.fileno()])
        return handed

    def listen(self) -> None:
        """Until the process ends: each association's record as it ends there."""
        while True:
            try:
                message = self.channel.recv(1 << 20)
            except OSError:
                message = b""
            if not message:
                break
            if message[:1] == ENDED:
                key, _, served = message[1:].partition(b"\n")
                with self.lock:
                    handed = self.handed.pop(int(key), None)
                if handed is not None:
                    handed.record.learn(served)
                    handed.done.set()
        with self.lock:
            orphans, self.handed = list(self.handed.values()), {}
        for handed in orphans:
            handed.record.outcome = "the receiving process ended; connection closed"
            handed.done.set()

    def load(self) -> int:
        with self.lock:
            return len(self.handed)

    def stop(self, timeout: float) -> None:
        # End of file for both sides: the process stops serving and exits, and the
        # thread listening here wakes (closing alone would not wake a blocked recv).
        with contextlib.suppress(OSError):
            self.channel.shutdown(socket.SHUT_RDWR)
        self.channel.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ReceiverPool:
    """The receiving processes of one node; started before the listener, stopped after."""

    def __init__(self, settings: Settings, size: int) -> None:
        self.settings = settings
        self.size = size
        self._processes: list[ReceivingProcess] = []
        self._lock = threading.Lock()
        self._next_key = 0
        self._stopping = False

    def start(self) -> None:
        for number in range(self.size):
            self._processes.append(self._spawn(number))

    def _spawn(self, number: int) -> ReceivingProcess:
        process = ReceivingProcess(self.settings, number)
        process.wait_ready(timeout=120)
        thread = threading.Thread(target=self._watch, args=(process,),
                                  name=f"receiver-{number}", daemon=True)  # fmt: skip
        thread.start()
        log.info("receiving process %d started (pid %d)", number, process.process.pid)
        return process

    def _watch(self, process: ReceivingProcess) -> None:
        process.listen()
        if self._stopping:
            return
        code = process.process.wait()
        log.error("receiving process %d ended (exit %s); starting it again", process.number, code)
        replacement = self._spawn(process.number)
        with self._lock:
            self._processes[process.number] = replacement

    def takes(self, request: AssociationRequest, request_size: int) -> bool:
        """Whether a receiving process serves this association (not commitment reports,
        which the node's process records; not an outsized request)."""
        proposed = request.primitive.presentation_context_definition_list
        reports = any(str(cx.abstract_syntax) == STORAGE_COMMITMENT_PUSH_MODEL for cx in proposed)
        return not reports and request_size <= MAX_HANDED_REQUEST and not self._stopping

    def serve(self, sock: socket.socket, record: AssociationRecord, request_pdu: bytes) -> None:
        """Hand the connection to the least busy process; return once it has ended there,
        with ``record`` updated. This process's copy of the socket is closed at once."""
        with self._lock:
            process = min(self._processes, key=lambda p: p.load())
            self._next_key += 1
            key = self._next_key
        try:
            handed = process.hand(key, sock, record, request_pdu)
        finally:
            sock.close()
        handed.done.wait()

    def pids(self) -> list[int]:
        with self._lock:
            return [p.process.pid for p in self._processes]

    def stop(self, timeout: float = 30) -> None:
        self._stopping = True
        with self._lock:
            processes = list(self._processes)
        for process in processes:
            process.stop(timeout)
