"""Operating a store from outside the daemon: online backup and restore (``ops.backup``), and
the log exported as JSON Lines for an auditor (``ops.export``) and its offline check
(``ops.audit``).

They read the log file through SQLite itself (never by copying its bytes), so they work while a
daemon writes to it; only a restore needs the daemon stopped.
"""
