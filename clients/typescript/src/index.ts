/**
 * checkpointd for TypeScript: the original Checkpoint API (`create`, `getCheckpoint`,
 * `getCheckpointsBySession`, ..., `restoreCheckpoint`, `searchCheckpoints`) over NATS, plus
 * lineage, diff, history, verify and notifications.
 *
 * ```ts
 * import { CheckpointManager, CheckpointPriority } from 'checkpointd';
 * const checkpointManager = await CheckpointManager.connect({ servers: 'nats://127.0.0.1:4222' });
 * ```
 */

export { CheckpointManager, NotificationStream } from './manager.js';
export type { CheckpointManagerOptions } from './manager.js';
export {
  CheckpointError,
  ConflictError,
  IntegrityError,
  InternalError,
  InvalidRequestError,
  NotFoundError,
  TooLargeError,
  UnavailableError,
} from './errors.js';
export type { ErrorCode } from './errors.js';
export { CheckpointPriority } from './types.js';
export type * from './types.js';
export { sessionToken } from './wire.js';
export type { Encoding } from './wire.js';
