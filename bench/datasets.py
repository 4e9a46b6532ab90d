"""The populated databases of one run, loaded (or found in the cache) once and shared."""

from __future__ import annotations

from bench.population import Populated, populated
from bench.scale import Scale
from bench.stores import eventsourcing_sqlite, langgraph_sqlite, ours

# store name -> (package whose version keys the cache, the adapter module)
STORES = {
    ours.NAME: ("checkpointd", ours),
    langgraph_sqlite.NAME: ("langgraph-checkpoint-sqlite", langgraph_sqlite),
    eventsourcing_sqlite.NAME: ("eventsourcing", eventsourcing_sqlite),
}


class Datasets:
    def __init__(self, scale: Scale) -> None:
        self.scale = scale
        self.loaded: dict[tuple[str, int], Populated] = {}

    async def get(self, store: str, size: int) -> Populated:
        key = (store, size)
        if key not in self.loaded:
            package, module = STORES[store]
            self.loaded[key] = await populated(
                store, package, module.open_store, size, self.scale.load_deadline_s
            )
        return self.loaded[key]

    def stores(self) -> list[str]:
        return list(STORES)
