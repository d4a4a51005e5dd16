"""The audit trail: auditable events (``events``), their one writer (``trail``), and
their DICOM audit messages (``dicom_message``, ``message_xml``, ``coded_values``) sent to a
syslog collector (``syslog``); what the node's flows tell it: associations
(``receiving``), results sent and committed (``results``), the web side's sign-ins and
actions (``web_actions``)."""
