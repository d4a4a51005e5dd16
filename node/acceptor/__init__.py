"""The node's DICOM upper layer acceptor (PS3.8): associations straight onto sockets.

One thread per association reads each PDU from its socket as it arrives, blocking,
and streams a C-STORE's data set fragments into the spool; there are no polling loops
and no hand-offs between threads on the receive path. pynetdicom stays the protocol
library: its PDU classes decode the association request and encode the answer, its
presentation-context negotiation decides what is accepted, and its codec reads and
writes command sets. What this package replaces is pynetdicom's reactor (two threads
per association that poll every millisecond), which capped what one process received.
"""
