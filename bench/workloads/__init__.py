"""The workloads: each ``run(scale, datasets)`` returns the tables it measured."""
