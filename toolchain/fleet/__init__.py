"""Operator side of the MQTT control plane: `edgeship push`, `edgeship fleet status|watch`.

Docs: docs/mqtt.md. Pushing writes a retained, versioned desired-state document per device
(groups fan out to their member devices); the release must exist as a signed target of the
TUF repository first, so nothing is published for a release the devices could never verify.
"""
