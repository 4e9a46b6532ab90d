"""The Python part of the README's tour, against a running daemon (`checkpointd serve`).

Run: python examples/tour.py [nats://127.0.0.1:4222]
"""

from __future__ import annotations

import asyncio
import json
import sys

import nats

from checkpointd import CheckpointClient


async def main(url: str) -> None:
    nc = await nats.connect(url)
    restored = await nc.subscribe("checkpoint.events.restored.>")  # what an agent would apply
    await nc.flush()  # the server has the subscription before the restore below is published
    async with CheckpointClient(url) as client:
        cp = await client.create(
            name="from-python",
            session_id="tour",
            snapshot={"sessions": ["tour"], "state": {"progress": 90}},
            branches=["main"],
        )
        await client.create(
            name="later",
            session_id="tour",
            snapshot={"sessions": ["tour"], "state": {"progress": 95}},
            branches=["main"],
        )
        page = await client.search_checkpoints("python", 10)
        print(f"search 'python': {page.total} match(es), first {page.items[0].name}")
        result = await client.restore_checkpoint(cp.id)
        print(f"restored {cp.id} into {result.target_session_id}: {dict(result.state)}")
    msg = await restored.next_msg(timeout=10)
    event = json.loads(msg.data)
    state = event["data"]["state"]
    print(f"notification seq {event['seq']}: session {event['sessionId']} -> {state}")
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "nats://127.0.0.1:4222"))
