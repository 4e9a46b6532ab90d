"""SQLite: schema migrations, connections, the group-committing writer and the reader pool."""
