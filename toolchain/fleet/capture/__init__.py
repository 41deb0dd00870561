"""`edgeship fleet capture pull`: fetch captured device data over a signed pull (docs/capture.md).

- :mod:`.puller` — the rounds of one device's pull (resume, verify, ack).
- :mod:`.objstore` — a small HTTP object store (PUT/GET/HEAD) for uploads on a LAN, tests and
  the demo; a pre-signed object-store URL template works the same way.
- :mod:`.cli` — the command.
"""
