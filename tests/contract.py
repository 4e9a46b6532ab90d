"""The wire's names as docs/protocol.md spells them, for tests that speak raw NATS.

Written out here rather than imported from ``checkpointd.wire``: a change there that breaks
the contract must fail the tests, not move them along with it.
"""

JSON = "application/json"
MSGPACK = "application/msgpack"
CONTENT_TYPE = "Content-Type"
MSG_ID = "Nats-Msg-Id"
ERROR = "Nats-Service-Error"
ERROR_CODE = "Nats-Service-Error-Code"
UPLOAD = "Checkpointd-Upload"
CHUNK = "Checkpointd-Chunk"
DOWNLOAD = "Checkpointd-Download"
DOWNLOAD_SIZE = "Checkpointd-Download-Size"
DOWNLOAD_CHUNKS = "Checkpointd-Download-Chunks"
DOWNLOAD_SHA256 = "Checkpointd-Download-Sha256"
SEQ = "Checkpointd-Seq"
MIN_SEQ = "Checkpointd-Min-Seq"
