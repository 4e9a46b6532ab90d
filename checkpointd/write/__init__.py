"""The write side: commands become events, appended to the log; keyed commands take effect once.

- ``commands``: what the writer is asked to do (frozen values).
- ``handler``: runs a command on the writer thread, inside the transaction the group-committing
  writer (``checkpointd.storage.writer``) opens: validates, appends the events, returns the result.
- ``encode``: a create's snapshot encoded into its blob before the command is queued.
- ``idempotency``: keys, the replies stored under them, and ``submit``, which hands a retried
  keyed command the result its first call returned.
- ``replies``: how each command's result is stored under a key and made whole again.
"""
