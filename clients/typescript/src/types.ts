/**
 * The shapes of the original Checkpoint API, as the daemon sends and takes them: camelCase
 * names, `Date` objects for every timestamp (ISO-8601 UTC strings on the wire).
 */

/** A checkpoint's priority (`metadata.priority`); the wire carries the lower-case string. */
export enum CheckpointPriority {
  LOW = 'low',
  NORMAL = 'normal',
  HIGH = 'high',
  CRITICAL = 'critical',
}

export type PriorityValue = CheckpointPriority | 'low' | 'normal' | 'high' | 'critical';

/** Snapshot state: any JSON-like object. */
export type Snapshot = Record<string, unknown>;

/** Metadata as given to `create` or `updateCheckpoint` (every key optional, user keys allowed). */
export interface CheckpointMetadataInput {
  feature?: string;
  priority?: PriorityValue;
  author?: string;
  description?: string;
  workflowId?: string;
  stepId?: string;
  tags?: string[];
  parentCheckpoint?: string;
  chainDepth?: number;
  [key: string]: unknown;
}

/** Metadata as the daemon returns it: `priority` and `tags` are always there. */
export interface CheckpointMetadata extends CheckpointMetadataInput {
  priority: PriorityValue;
  tags: string[];
}

/** A stored checkpoint. */
export interface Checkpoint {
  id: string;
  name: string;
  sessionId: string;
  timestamp: Date;
  /** The state; absent from list and search results and from `create` when left out. */
  snapshot?: Snapshot;
  branches: string[];
  metadata: CheckpointMetadata;
  createdBy: string | null;
  /** Bytes of the snapshot's canonical encoding. */
  size: number;
  /** Bytes stored after compression and encryption. */
  storedSize: number;
  /** `sha256:<hex>` of the canonical encoding. */
  checksum: string;
  compressed: boolean;
  encrypted: boolean;
  retentionExpiresAt: Date | null;
  restoredFrom: string | null;
  /** The checkpoint's own event count (for `expectedVersion`). */
  version: number;
  createdAt: Date;
  updatedAt: Date;
  /** Search results only: higher is more relevant. */
  score?: number;
}

/**
 * What `create` takes: the original API's three shapes. `metadata` at the top level (the
 * canonical one), the metadata fields flat at the top level, or inside `snapshot.metadata`.
 */
export interface CreateCheckpointInput {
  id?: string;
  name: string;
  sessionId: string;
  timestamp?: Date | string;
  snapshot: Snapshot;
  branches: string[];
  metadata?: CheckpointMetadataInput;
  createdBy?: string;
  /** Checked against the snapshot's canonical encoding: a mismatch is an IntegrityError. */
  size?: number;
  /** `sha256:<64 hex>`, checked against the snapshot: a mismatch is an IntegrityError. */
  checksum?: string;
  compressed?: boolean;
  encrypted?: boolean;
  retentionExpiresAt?: Date | string | null;
  restoredFrom?: string;
  feature?: string;
  priority?: PriorityValue;
  author?: string;
  description?: string;
  workflowId?: string;
  stepId?: string;
  tags?: string[];
}

/** What `updateCheckpoint` may change (the snapshot is immutable). */
export interface CheckpointChanges {
  name?: string;
  /** Replaces the metadata as a whole. */
  metadata?: CheckpointMetadataInput;
  branches?: string[];
  retentionExpiresAt?: Date | string | null;
}

export type Direction = 'asc' | 'desc' | 'ASC' | 'DESC' | 'Asc' | 'Desc';

export interface OrderBy {
  field: string;
  direction?: Direction;
}

export interface Pagination {
  /** From 1. */
  page?: number;
  /** At most 1000. */
  pageSize?: number;
}

/** The options of `getCheckpointsBySession` and `getCheckpointsByFeature`. */
export interface QueryOptions {
  /** The filter language: `metadata->>'feature' = ? AND compressed = 1`, `timestamp < ?`. */
  where?: string;
  /** Values of the `?` placeholders; `Date`s travel as ISO-8601 strings. */
  params?: unknown[];
  orderBy?: OrderBy[];
  pagination?: Pagination;
  includeSnapshot?: boolean;
}

/** An array of checkpoints that also carries the page it is. */
export type CheckpointPage = Checkpoint[] & { total: number; page: number; pageSize: number };

export interface SearchFilters {
  feature?: string[];
  priority?: PriorityValue[];
  /** Every tag must match. */
  tags?: string[];
  /** Every branch must match. */
  branches?: string[];
  sessionId?: string;
  author?: string;
  dateRange?: { from?: Date | string; to?: Date | string };
}

export interface SearchRequest {
  query?: string;
  limit?: number;
  filters?: SearchFilters;
  sorting?: { field: 'relevance' | 'timestamp' | 'name' | 'size'; direction?: Direction };
  pagination?: Pagination;
}

export type MergeStrategy = 'overwrite' | 'merge' | 'keep-original';

export interface RestoreOptions {
  /** Default: the checkpoint's own session. */
  targetSessionId?: string;
  mergeStrategy?: MergeStrategy;
  conflictResolution?: {
    strategy?: MergeStrategy;
    /**
     * In-process only (the Python `CheckpointManager`): over NATS a function cannot travel,
     * and a restore that names one is refused with an InvalidRequestError.
     */
    customResolver?: (current: unknown, checkpoint: unknown) => unknown;
  };
  /** Save the current state as a backup checkpoint first (`backupCheckpointId`). */
  preserveCurrentState?: boolean;
  /** Use this as the session's current state instead of the stored one. */
  currentState?: Snapshot;
  validation?: { validateIntegrity?: boolean; validateChecksum?: boolean; validateSchema?: boolean };
  /** Default true: a failed validation writes nothing. */
  rollbackOnError?: boolean;
  /** Default true: publish a `restored` notification. */
  notify?: boolean;
  /** Milliseconds the whole restore may take. */
  timeout?: number;
  /** Return the result without writing anything. */
  dryRun?: boolean;
}

export interface Conflict {
  /** A JSON Pointer: `/state/config/version`. */
  path: string;
  current: unknown;
  checkpoint: unknown;
  resolution: 'checkpoint' | 'current' | 'custom';
}

export interface RestoreResult {
  success: boolean;
  restoredFrom: string;
  targetSessionId: string;
  /** The whole restored snapshot. */
  state: Snapshot;
  conflicts: Conflict[];
  warnings: string[];
  backupCheckpointId: string | null;
  /** The restore event's `seq` (null for a dry run). */
  eventSeq: number | null;
}

export interface CheckpointRef {
  id: string;
  name: string;
  timestamp: Date;
}

export interface CheckpointStats {
  totalCheckpoints: number;
  totalSize: number;
  storedSize: number;
  averageSize: number;
  byFeature: Record<string, number>;
  byPriority: Record<string, number>;
  bySession: Record<string, number>;
  oldestCheckpoint: CheckpointRef | null;
  newestCheckpoint: CheckpointRef | null;
}

export interface ValidationReport {
  isValid: boolean;
  checksumValid: boolean;
  sizeMatches: boolean;
  schemaValid: boolean;
  errors: string[];
  warnings: string[];
}

export interface Lineage {
  /** Nearest first. */
  ancestors: Checkpoint[];
  /** Nearest first. */
  descendants: Checkpoint[];
  /** The `offset` of the next page, null once both lists are complete. */
  next: number | null;
}

export interface Change {
  /** A JSON Pointer. */
  path: string;
  op: 'add' | 'remove' | 'replace';
  before?: unknown;
  after?: unknown;
}

export interface Diff {
  changes: Change[];
}

export interface HistoryRequest {
  checkpointId?: string;
  sessionId?: string;
  afterSeq?: number;
  limit?: number;
}

export interface CheckpointEvent {
  seq: number;
  id: string;
  /** `checkpoint.created`, `checkpoint.updated`, `checkpoint.deleted`, `checkpoint.expired`, `checkpoint.restored`, ... */
  type: string;
  stream: string;
  sessionId: string | null;
  version: number;
  at: Date;
  actor: string | null;
  causation: string | null;
  data: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export interface History {
  /** Oldest first. */
  events: CheckpointEvent[];
  /** The `afterSeq` of the next page, null at the end. */
  next: number | null;
}

export interface VerifyResult {
  ok: boolean;
  /** How many events were checked. */
  events: number;
  firstBadSeq: number | null;
  [key: string]: unknown;
}

export type NotificationType = 'created' | 'updated' | 'deleted' | 'expired' | 'restored' | 'writes';

/** A notification published after a commit. */
export interface Notification {
  /** The event's global, gapless sequence number. */
  seq: number;
  /** The event's id. */
  id: string;
  type: NotificationType;
  at: Date;
  /** The checkpoint concerned (for `restored`: the one restored from). */
  checkpointId: string;
  /** The session (for `restored`: the target). */
  sessionId: string;
  /** For `restored`: `state`, `conflicts`, `backupCheckpointId`, ... */
  data: Record<string, unknown>;
}
