"""The event log: event types, the hash chain, and the SQLite event store."""
