"""Captured device data: the capture rules (:mod:`.rules`, in the agent config and per release
in the bundle) and the on-disk format of a capture set (:mod:`.fileformat`: one ``.npz`` per
capture, ``index.json`` with every file's sha256), written by the agent, pulled by
``edgeship fleet capture pull``, read by ``edgeship data`` and ``edgeship compile``.

Importing this package imports none of its modules.
"""
