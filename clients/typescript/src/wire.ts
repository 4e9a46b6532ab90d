/**
 * The wire: encodings, header names, conversions between the wire's objects and this
 * package's (ISO-8601 strings to `Date`s and back), and the session token of notification
 * subjects.
 */

import { decode as msgpackDecode, Encoder } from '@msgpack/msgpack';

import { InvalidRequestError } from './errors.js';
import type {
  Checkpoint,
  CheckpointEvent,
  CheckpointMetadata,
  CheckpointPage,
  CheckpointRef,
  CheckpointStats,
  Lineage,
  Notification,
  NotificationType,
  RestoreResult,
} from './types.js';

export const JSON_TYPE = 'application/json';
export const MSGPACK_TYPE = 'application/msgpack';
export const CONTENT_TYPE = 'Content-Type';
export const MSG_ID = 'Nats-Msg-Id';
export const ERROR = 'Nats-Service-Error';
export const ERROR_CODE = 'Nats-Service-Error-Code';
export const UPLOAD = 'Checkpointd-Upload';
export const CHUNK = 'Checkpointd-Chunk';
export const DOWNLOAD = 'Checkpointd-Download';
export const DOWNLOAD_SIZE = 'Checkpointd-Download-Size';
export const DOWNLOAD_CHUNKS = 'Checkpointd-Download-Chunks';
export const DOWNLOAD_SHA256 = 'Checkpointd-Download-Sha256';
export const SEQ = 'Checkpointd-Seq';
export const MIN_SEQ = 'Checkpointd-Min-Seq';

export type Encoding = 'json' | 'msgpack';

const textEncoder = new TextEncoder();
const msgpackEncoder = new Encoder({ ignoreUndefined: true });
const textDecoder = new TextDecoder('utf-8', { fatal: true });

export function encode(body: unknown, encoding: Encoding): Uint8Array {
  if (encoding === 'msgpack') {
    return msgpackEncoder.encode(body);
  }
  return textEncoder.encode(JSON.stringify(body));
}

/** A reply body in its `Content-Type` (JSON when absent). An empty body is the empty object. */
export function decode(data: Uint8Array, contentType: string | undefined): unknown {
  if (data.length === 0) {
    return {};
  }
  const type = (contentType ?? JSON_TYPE).split(';')[0]!.trim().toLowerCase();
  if (type === MSGPACK_TYPE || type === 'application/x-msgpack') {
    return msgpackDecode(data);
  }
  return JSON.parse(textDecoder.decode(data)) as unknown;
}

/** Bytes the headers take in a NATS message (the server counts them against max_payload). */
export function headerSize(headers: Record<string, string>): number {
  let size = 'NATS/1.0\r\n'.length + 2;
  for (const [key, value] of Object.entries(headers)) {
    size += textEncoder.encode(key).length + 2 + textEncoder.encode(value).length + 2;
  }
  return size;
}

/**
 * A request body as the wire takes it: `Date`s as ISO-8601 UTC strings, `undefined` fields
 * left out. A number that is not finite, a function, a symbol or a bigint beyond 2^53 is
 * refused here, naming where it is (JSON would silently turn NaN into null).
 */
export function toWire(value: unknown, path = ''): unknown {
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) {
      throw new InvalidRequestError(`${path || 'value'}: an invalid Date`);
    }
    return value.toISOString();
  }
  if (Array.isArray(value)) {
    return value.map((item, index) => toWire(item, `${path}/${index}`));
  }
  if (value instanceof Uint8Array) {
    return value;
  }
  switch (typeof value) {
    case 'number':
      if (!Number.isFinite(value)) {
        throw new InvalidRequestError(`${path || 'value'}: ${value} cannot be sent (JSON-like values only)`);
      }
      return value;
    case 'bigint':
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
        throw new InvalidRequestError(`${path || 'value'}: ${value} is beyond 2^53`);
      }
      return Number(value);
    case 'function':
    case 'symbol':
      throw new InvalidRequestError(`${path || 'value'}: a ${typeof value} cannot be sent`);
    case 'object': {
      if (value === null) {
        return null;
      }
      const out: Record<string, unknown> = {};
      for (const [key, item] of Object.entries(value)) {
        if (item !== undefined) {
          out[key] = toWire(item, `${path}/${key}`);
        }
      }
      return out;
    }
    default:
      return value;
  }
}

type WireObject = Record<string, unknown>;

function date(value: unknown): Date {
  return new Date(String(value));
}

function dateOrNull(value: unknown): Date | null {
  return value === null || value === undefined ? null : date(value);
}

export function checkpointFromWire(raw: unknown): Checkpoint {
  const data = raw as WireObject;
  const metadata = { ...((data.metadata as WireObject | undefined) ?? {}) };
  metadata.priority ??= 'normal';
  metadata.tags ??= [];
  const checkpoint: Checkpoint = {
    ...(data as unknown as Checkpoint),
    metadata: metadata as CheckpointMetadata,
    timestamp: date(data.timestamp),
    createdAt: date(data.createdAt),
    updatedAt: date(data.updatedAt),
    retentionExpiresAt: dateOrNull(data.retentionExpiresAt),
    createdBy: (data.createdBy as string | null | undefined) ?? null,
    restoredFrom: (data.restoredFrom as string | null | undefined) ?? null,
  };
  if (checkpoint.snapshot === null) {
    delete checkpoint.snapshot;
  }
  return checkpoint;
}

export function pageFromWire(raw: unknown): CheckpointPage {
  const data = raw as WireObject;
  const items = ((data.items as unknown[] | undefined) ?? []).map(checkpointFromWire);
  return Object.assign(items, {
    total: Number(data.total ?? items.length),
    page: Number(data.page ?? 1),
    pageSize: Number(data.pageSize ?? items.length),
  });
}

export function restoreResultFromWire(raw: unknown): RestoreResult {
  const data = raw as WireObject;
  return {
    ...(data as unknown as RestoreResult),
    conflicts: (data.conflicts as RestoreResult['conflicts'] | undefined) ?? [],
    warnings: (data.warnings as string[] | undefined) ?? [],
    backupCheckpointId: (data.backupCheckpointId as string | null | undefined) ?? null,
    eventSeq: (data.eventSeq as number | null | undefined) ?? null,
  };
}

function refFromWire(raw: unknown): CheckpointRef | null {
  if (raw === null || raw === undefined) {
    return null;
  }
  const data = raw as WireObject;
  return { id: String(data.id), name: String(data.name), timestamp: date(data.timestamp) };
}

export function statsFromWire(raw: unknown): CheckpointStats {
  const data = raw as WireObject;
  return {
    ...(data as unknown as CheckpointStats),
    oldestCheckpoint: refFromWire(data.oldestCheckpoint),
    newestCheckpoint: refFromWire(data.newestCheckpoint),
  };
}

export function lineageFromWire(raw: unknown): Lineage {
  const data = raw as WireObject;
  return {
    ancestors: ((data.ancestors as unknown[] | undefined) ?? []).map(checkpointFromWire),
    descendants: ((data.descendants as unknown[] | undefined) ?? []).map(checkpointFromWire),
    next: (data.next as number | null | undefined) ?? null,
  };
}

export function eventFromWire(raw: unknown): CheckpointEvent {
  const data = raw as WireObject;
  return { ...(data as unknown as CheckpointEvent), at: date(data.at) };
}

export function notificationFromWire(raw: unknown): Notification {
  const data = raw as WireObject;
  return {
    ...(data as unknown as Notification),
    type: data.type as NotificationType,
    at: date(data.at),
    data: (data.data as Record<string, unknown> | undefined) ?? {},
  };
}

const PLAIN_TOKEN = /^[A-Za-z0-9_-]+$/;

/**
 * A session's token in notification subjects: the id itself if it is `[A-Za-z0-9_-]+`, else
 * `~` and the unpadded base64url of its UTF-8.
 */
export function sessionToken(sessionId: string): string {
  if (PLAIN_TOKEN.test(sessionId)) {
    return sessionId;
  }
  return '~' + Buffer.from(sessionId, 'utf8').toString('base64url');
}
