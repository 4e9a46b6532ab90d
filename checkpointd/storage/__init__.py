"""SQLite: schema migrations, connections, the group-committing writer and the reader pool;
with the log on a JetStream stream, the replica that keeps this SQLite copy in step with it
(``replica``, with ``capture``, ``segment``, ``jetstream`` and ``seed``)."""
