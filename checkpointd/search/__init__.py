"""Full-text search: user text turned into safe FTS5 MATCH expressions.

Pure functions and frozen values; nothing here touches the database.
"""
