"""Publishing side of signed OTA updates: TUF keys, repository metadata, a static server.

Layout of a key directory (``edgeship keys init --dir KEYS``)::

    KEYS/root.json                     # the initial, signed root metadata (provision devices with it)
    KEYS/offline/root/<keyid>.pem      # offline keys: keep these off the build/publish server
    KEYS/offline/targets/<keyid>.pem
    KEYS/online/snapshot/<keyid>.pem   # online keys: the publisher needs these to re-sign
    KEYS/online/timestamp/<keyid>.pem
    KEYS/retired/...                   # keys replaced by ``edgeship keys rotate``

Layout of a repository (``edgeship publish``; consistent snapshots)::

    REPO/metadata/<N>.root.json, root.json, <N>.targets.json, <N>.snapshot.json, timestamp.json
    REPO/targets/<model>/<sha256>.<bundle file name>

The timestamp file is replaced last: it is the single commit point of a publish, so a
client never sees a half-written repository.
"""
