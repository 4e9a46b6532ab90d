"""A five-step tour of the embedded engine: create, list with a filter, update, history, verify.

Run: python examples/quickstart.py [path/to/quickstart.db]
"""

from __future__ import annotations

import asyncio
import os
import sys

from checkpointd import CheckpointManager, Priority


async def main(path: str) -> None:
    key = os.environ.get("CHECKPOINTD_ENCRYPTION_KEY", "quickstart passphrase, not for production")
    async with CheckpointManager(
        database_path=path,
        enable_compression=True,
        enable_encryption=True,
        encryption_key=key,
        default_retention_days=30,
    ) as manager:
        cp = await manager.create(
            name="milestone-v1.0",
            session_id="s-1",
            snapshot={
                "sessions": ["s-1"],
                "state": {"progress": 75, "completed": [1, 2, 3], "config": {"version": "1.0.0"}},
            },
            branches=["main", "feature-xyz"],
            metadata={"feature": "auth", "priority": Priority.HIGH, "tags": ["stable"]},
        )
        print(f"created   {cp.id} v{cp.version} {cp.checksum[:19]}… {cp.stored_size} bytes stored")

        quick = await manager.create(
            {
                "name": "quick-backup",
                "sessionId": "s-1",
                "snapshot": {"sessions": ["s-1"], "state": {"quick": True}},
                "branches": ["main"],
                "feature": "auth",
            }
        )
        print(f"created   {quick.id} (the original API's camelCase shape)")

        page = await manager.get_checkpoints_by_session(
            "s-1",
            where="metadata->>'feature' = ? AND encrypted = 1",
            params=["auth"],
            order_by=[("timestamp", "desc")],
            page=1,
            page_size=10,
        )
        print(f"listed    {len(page)} of {page.total}: {[c.name for c in page]}")

        updated = await manager.update_checkpoint(
            cp.id, {"metadata": {**cp.metadata, "description": "Release 1.0"}}, expected_version=1
        )
        print(f"updated   {updated.id} now v{updated.version}")

        again = await manager.get_checkpoint(cp.id)
        assert again is not None and again.snapshot == cp.snapshot
        print(f"read back {again.id}: snapshot decrypted and checksum verified")

        history = await manager.history(session_id="s-1")
        print(f"history   {[e.type for e in history.events][-3:]} (last three)")
        print(f"verify    {await manager.verify_log()}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "quickstart.db"))
