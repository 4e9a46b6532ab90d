"""checkpointd side by side with LangGraph's AsyncSqliteSaver, eventsourcing and bare SQLite.

Run ``python -m bench --help`` from the repository root; ``bench/RESULTS.md`` explains the
workloads and holds the figures. The older single-purpose scripts (``bench_create.py``,
``bench_reads.py``, ``bench_nats.py``) still run on their own.
"""
