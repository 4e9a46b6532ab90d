"""The typed event vocabulary: each event type's data, encoded byte for byte as it always was.

The hash chain covers every event's data bytes, so an event class that encoded its data any
other way would make logs written before it fail to verify. ``LOGGED`` is the data of events
an earlier version of checkpointd wrote (creates, an update, restores with and without
conflicts and a backup, a delete, an expiry), captured from its log.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointd import CheckpointManager
from checkpointd.errors import IntegrityError
from checkpointd.events import store
from checkpointd.events.domain import (
    BlobDigest,
    CheckpointCreated,
    CheckpointDeleted,
    CheckpointExpired,
    CheckpointUpdated,
    Conflict,
    DomainEvent,
    StateRestored,
    WriteKey,
    WritesPut,
    decode,
)
from checkpointd.events.types import GENESIS_HASH, EventRecord, EventType, seal

LOGGED: list[tuple[str, bytes]] = [
    (  # seq 1, stream cp-root
        "checkpoint.created",
        bytes.fromhex(
            "8da86272616e6368657391a46d61696ea8636865636b73756dd9477368613235363a386161343964"
            "64383661376333636564623735623563356462623761323431613037623962356136343132326361"
            "383238643230323635616237623033323964ab636f6d7072657373696f6ea46e6f6e65a963726561"
            "7465644279a26d65a9656e63727970746564c2a86d6574616461746183a766656174757265a166a8"
            "7072696f72697479a468696768a47461677392a178a179a46e616d65a4726f6f74ac726573746f72"
            "656446726f6dc0b2726574656e74696f6e457870697265734174c0a973657373696f6e4964a3732d"
            "31a473697a6510aa73746f72656453697a6516a974696d657374616d70bb323032362d30312d3032"
            "5430333a30343a30352e3030303030305a"
        ),
    ),
    (  # seq 2, stream cp-child
        "checkpoint.created",
        bytes.fromhex(
            "8da86272616e6368657390a8636865636b73756dd9477368613235363a3964393062316339666435"
            "39343634376365303865376339393766386339343634383163353931373633373862353633313637"
            "36353863316161613932396466ab636f6d7072657373696f6ea46e6f6e65a9637265617465644279"
            "c0a9656e63727970746564c2a86d6574616461746183aa636861696e446570746801b0706172656e"
            "74436865636b706f696e74a763702d726f6f74a87072696f72697479a66e6f726d616ca46e616d65"
            "a56368696c64ac726573746f72656446726f6dc0b2726574656e74696f6e457870697265734174bb"
            "323039392d30312d30315430303a30303a30302e3030303030305aa973657373696f6e4964a3732d"
            "31a473697a650baa73746f72656453697a6511a974696d657374616d70bb323032362d30312d3032"
            "5430333a30343a30362e3030303030305a"
        ),
    ),
    (  # seq 3, stream cp-child
        "checkpoint.updated",
        bytes.fromhex(
            "81a76368616e67657384a86272616e6368657391a3646576a86d6574616461746184aa636861696e"
            "446570746801b0706172656e74436865636b706f696e74a763702d726f6f74a87072696f72697479"
            "a66e6f726d616ca47461677391a17aa46e616d65a772656e616d6564b2726574656e74696f6e4578"
            "70697265734174c0"
        ),
    ),
    (  # seq 4, stream session:s-1
        "checkpoint.restored",
        bytes.fromhex(
            "8db26261636b7570436865636b706f696e744964c0ac636865636b706f696e744964a763702d726f"
            "6f74a8636865636b73756dd9477368613235363a3735653864373565366664623162323161663034"
            "33326365343637373466383233653435396236356464623934663834656135656564623234303131"
            "66663533ab636f6d7072657373696f6ea46e6f6e65a9636f6e666c696374739182a470617468a82f"
            "73746174652f61aa7265736f6c7574696f6eaa636865636b706f696e74a764657461696c7382a863"
            "6865636b73756dd9477368613235363a393862313130393065616430386462623935313334643635"
            "34303263353632646166633130376463316663653766326336316336326133376136626239653264"
            "a473697a65cc8ca9656e63727970746564c2a973657373696f6e4964a3732d31a473697a6513a773"
            "6f757263657391a763702d726f6f74a773746174654964ba30314d39304d45364457364a42483358"
            "4e3857484544334e4e50aa73746f72656453697a6519a87374726174656779a56d65726765"
        ),
    ),
    (  # seq 5, stream session:s-2
        "checkpoint.restored",
        bytes.fromhex(
            "8db26261636b7570436865636b706f696e744964c0ac636865636b706f696e744964a863702d6368"
            "696c64a8636865636b73756dd9477368613235363a39643930623163396664353934363437636530"
            "38653763393937663863393436343831633539313736333738623536333136373635386331616161"
            "3932396466ab636f6d7072657373696f6ea46e6f6e65a9636f6e666c6963747390a764657461696c"
            "7382a8636865636b73756dd9477368613235363a3332643066396164333666663064383364396536"
            "39663634633939636632303134653963656163363334326138323339303738396636393563316535"
            "62636334a473697a65cc8aa9656e63727970746564c2a973657373696f6e4964a3732d32a473697a"
            "650ba7736f757263657391a863702d6368696c64a773746174654964ba30314d39304d4536453546"
            "533033454e4d384e34474b5a4e4b43aa73746f72656453697a6511a87374726174656779a96f7665"
            "727772697465"
        ),
    ),
    (  # seq 6, stream 01M90ME6EEBYWZMJ1BC7C25GV0
        "checkpoint.created",
        bytes.fromhex(
            "8da86272616e6368657390a8636865636b73756dd9477368613235363a3735653864373565366664"
            "62316232316166303433326365343637373466383233653435396236356464623934663834656135"
            "65656462323430313166663533ab636f6d7072657373696f6ea46e6f6e65a9637265617465644279"
            "ab636865636b706f696e7464a9656e63727970746564c2a86d6574616461746183ab646573637269"
            "7074696f6ed92d5374617465206f662073657373696f6e20732d31206265666f726520726573746f"
            "72696e672063702d726f6f74a87072696f72697479a66e6f726d616ca47461677391a66261636b75"
            "70a46e616d65d9206261636b7570206265666f726520726573746f7265206f662063702d726f6f74"
            "ac726573746f72656446726f6dc0b2726574656e74696f6e457870697265734174c0a97365737369"
            "6f6e4964a3732d31a473697a6513aa73746f72656453697a6519a974696d657374616d70bb323032"
            "362d31322d30345431333a33383a32382e3433363935375a"
        ),
    ),
    (  # seq 7, stream session:s-1
        "checkpoint.restored",
        bytes.fromhex(
            "8db26261636b7570436865636b706f696e744964ba30314d39304d453645454259575a4d4a314243"
            "37433235475630ac636865636b706f696e744964a763702d726f6f74a8636865636b73756dd94773"
            "68613235363a38616134396464383661376333636564623735623563356462623761323431613037"
            "623962356136343132326361383238643230323635616237623033323964ab636f6d707265737369"
            "6f6ea46e6f6e65a9636f6e666c6963747390a764657461696c7382a8636865636b73756dd9477368"
            "613235363a6466663061633136326431306238656266656461373931343335313235633933313832"
            "6361303737633337386438383137656463663739313265613034333136a473697a6552a9656e6372"
            "7970746564c2a973657373696f6e4964a3732d31a473697a6510a7736f757263657391a763702d72"
            "6f6f74a773746174654964ba30314d39304d453645454259575a4d4a31424337433235475631aa73"
            "746f72656453697a6516a87374726174656779a96f7665727772697465"
        ),
    ),
    (  # seq 8, stream cp-gone
        "checkpoint.created",
        bytes.fromhex(
            "8da86272616e6368657390a8636865636b73756dd9477368613235363a3434326332323330646236"
            "36666136393665373161643563343030636365323662343837363961343361376635623538653831"
            "38343232323031376363333231ab636f6d7072657373696f6ea46e6f6e65a9637265617465644279"
            "c0a9656e63727970746564c2a86d6574616461746181a87072696f72697479a66e6f726d616ca46e"
            "616d65a4676f6e65ac726573746f72656446726f6da763702d726f6f74b2726574656e74696f6e45"
            "7870697265734174bb323030302d30312d30315430303a30303a30302e3030303030305aa9736573"
            "73696f6e4964a3732d33a473697a6508aa73746f72656453697a650ea974696d657374616d70bb32"
            "3032362d30312d30325430333a30343a30372e3030303030305a"
        ),
    ),
    (  # seq 9, stream cp-child
        "checkpoint.deleted",
        bytes.fromhex(
            "83a8636865636b73756dd9477368613235363a396439306231633966643539343634376365303865"
            "37633939376638633934363438316335393137363337386235363331363736353863316161613932"
            "396466a46e616d65a772656e616d6564a473697a650b"
        ),
    ),
    (  # seq 10, stream cp-gone
        "checkpoint.expired",
        bytes.fromhex(
            "84a8636865636b73756dd9477368613235363a343432633232333064623636666136393665373161"
            "64356334303063636532366234383736396134336137663562353865383138343232323031376363"
            "333231a46e616d65a4676f6e65b2726574656e74696f6e457870697265734174bb323030302d3031"
            "2d30315430303a30303a30302e3030303030305aa473697a6508"
        ),
    ),
]

CLASSES: dict[str, type[Any]] = {
    "checkpoint.created": CheckpointCreated,
    "checkpoint.updated": CheckpointUpdated,
    "checkpoint.deleted": CheckpointDeleted,
    "checkpoint.expired": CheckpointExpired,
    "checkpoint.restored": StateRestored,
    "checkpoint.writes": WritesPut,
}


def record(type: str, data: bytes, seq: int = 1) -> EventRecord:
    return seal(
        seq=seq,
        event_id="e-1",
        type=EventType(type),
        stream="stream",
        session_id="s-1",
        version=1,
        at="2026-01-02T03:04:05.000000Z",
        actor=None,
        causation=None,
        data=data,
        prev_hash=GENESIS_HASH,
    )


@pytest.mark.parametrize(("type", "data"), LOGGED)
def test_logged_data_decodes_to_its_class_and_encodes_to_the_same_bytes(
    type: str, data: bytes
) -> None:
    """Data an earlier version logged decodes to its event class, whose ``to_data()`` gives
    back the very bytes the hash chain covers."""
    event = decode(record(type, data))
    assert isinstance(event, CLASSES[type])
    assert event.type == type
    assert event.to_data() == data
    assert event.to_map() == msgpack.unpackb(data, raw=False)


def test_logged_events_decode_to_their_fields() -> None:
    """The decoded events carry the logged fields under their own names."""
    created, child, updated, merged, *_ = [decode(record(t, d)) for t, d in LOGGED]
    assert isinstance(created, CheckpointCreated)
    assert (created.name, created.session_id, created.created_by) == ("root", "s-1", "me")
    assert created.branches == ["main"]
    assert created.metadata == {"feature": "f", "priority": "high", "tags": ["x", "y"]}
    assert isinstance(child, CheckpointCreated)
    assert child.retention_expires_at == "2099-01-01T00:00:00.000000Z"
    assert isinstance(updated, CheckpointUpdated)
    assert updated.changes["name"] == "renamed"
    assert updated.changes["retentionExpiresAt"] is None
    assert isinstance(merged, StateRestored)
    assert merged.conflicts == (Conflict("/state/a", "checkpoint"),)
    assert merged.sources == ("cp-root",)
    assert isinstance(merged.details, BlobDigest)
    assert not merged.details_in_reply
    backups = [decode(record(t, d)) for t, d in LOGGED]
    assert any(isinstance(e, StateRestored) and e.backup_checkpoint_id for e in backups)
    removed = [e for e in backups if isinstance(e, CheckpointDeleted | CheckpointExpired)]
    assert [type(e) for e in removed] == [CheckpointDeleted, CheckpointExpired]


async def test_every_event_a_store_writes_encodes_back_to_its_logged_bytes(
    manager: CheckpointManager, db_path: Path
) -> None:
    """Each event this store appends (every type) decodes and re-encodes to its logged bytes,
    and the log verifies."""
    root = await manager.create(
        name="root", session_id="s-1", snapshot={"state": {"a": 1}}, branches=["main"]
    )
    await manager.create(
        name="child",
        session_id="s-1",
        snapshot={"state": {"a": 2}},
        branches=[],
        metadata={"parentCheckpoint": root.id},
        retention_expires_at="2000-01-01T00:00:00Z",
    )
    await manager.update_checkpoint(root.id, name="renamed", branches=["dev"])
    await manager.put_writes(root.id, "task", [(0, "c", b"\x00"), (-1, "__error__", "e")])
    await manager.restore_checkpoint(
        root.id, current_state={"state": {"a": 9}}, merge_strategy="merge"
    )
    await manager.restore_checkpoint(root.id, preserve_current_state=True)
    await manager.delete_expired_checkpoints()
    await manager.delete_checkpoint(root.id)
    assert (await manager.verify_log()).ok
    with closing(sqlite3.connect(db_path)) as conn:
        records = list(store.scan(conn))
    assert {r.type for r in records} == set(CLASSES)
    for logged in records:
        assert decode(logged).to_data() == logged.data


def test_a_restore_logged_before_sources_and_details_is_upcast() -> None:
    """A restore logged before its sources and details were recorded decodes with the restored
    checkpoint as its source and its details marked as kept in the reply."""
    data = {
        "checkpointId": "cp-1",
        "sessionId": "s-1",
        "strategy": "overwrite",
        "stateId": "st-1",
        "checksum": "sha256:00",
        "size": 2,
        "storedSize": 2,
        "compression": "none",
        "encrypted": False,
        "conflicts": [{"path": "/a", "resolution": "checkpoint", "current": 1}],
        "backupCheckpointId": None,
    }
    event = decode(record("checkpoint.restored", msgpack.packb(data)))
    assert isinstance(event, StateRestored)
    assert event.sources == ("cp-1",)
    assert event.details_in_reply
    assert event.conflicts == (Conflict("/a", "checkpoint"),)


def test_an_unknown_type_or_bad_data_is_an_integrity_error() -> None:
    """A record of no known type, or whose data is not its type's, is an IntegrityError."""
    bad = record("checkpoint.created", msgpack.packb({"name": "no other field"}))
    with pytest.raises(IntegrityError, match="undecodable data"):
        decode(bad)
    unknown = EventRecord(1, "e", "checkpoint.renamed", "s", "s", 1, "t", None, None, b"", b"", b"")
    with pytest.raises(IntegrityError, match=r"unknown type 'checkpoint\.renamed'"):
        decode(unknown)


texts = st.text(max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)


@given(
    st.builds(
        CheckpointCreated,
        name=texts,
        session_id=texts,
        timestamp=texts,
        branches=st.lists(texts, max_size=3),
        metadata=st.dictionaries(texts, json_values, max_size=4),
        created_by=st.none() | texts,
        size=st.integers(0, 2**40),
        stored_size=st.integers(0, 2**40),
        checksum=texts,
        compression=st.sampled_from(["none", "gzip", "zstd"]),
        encrypted=st.booleans(),
        retention_expires_at=st.none() | texts,
        restored_from=st.none() | texts,
    )
    | st.builds(CheckpointDeleted, name=texts, checksum=texts, size=st.integers(0, 2**40))
    | st.builds(
        WritesPut,
        task_id=texts,
        task_path=texts,
        writes=st.lists(
            st.builds(WriteKey, index=st.integers(-(2**53), 2**53), channel=texts), max_size=3
        ).map(tuple),
        checksum=texts,
        size=st.integers(0, 2**40),
        stored_size=st.integers(0, 2**40),
        compression=st.sampled_from(["none", "gzip", "zstd"]),
        encrypted=st.booleans(),
    )
)
def test_typed_events_round_trip_through_their_data(event: DomainEvent) -> None:
    """Any event encodes to data that decodes back to an equal event."""
    assert decode(record(event.type, event.to_data())) == event
