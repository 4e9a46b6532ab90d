/**
 * Errors: every failure the daemon reports arrives as a `CheckpointError` subclass carrying the
 * wire's `code` (`not_found`, `invalid`, `conflict`, `too_large`, `integrity`, `unavailable`,
 * `internal`) and its status (404, 400, 409, 413, 422, 503, 500). Branch on the class or on
 * `code`; messages are for people and may change.
 */

export type ErrorCode =
  | 'invalid'
  | 'not_found'
  | 'conflict'
  | 'too_large'
  | 'integrity'
  | 'unavailable'
  | 'internal';

export class CheckpointError extends Error {
  /** The wire's error code. */
  readonly code: ErrorCode;
  /** The wire's status (`Nats-Service-Error-Code`). */
  readonly status: number;

  constructor(message: string, code: ErrorCode = 'internal', status = 500) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
  }
}

/** 400: a malformed request (a missing, unknown or wrong-typed field, a bad filter). */
export class InvalidRequestError extends CheckpointError {
  constructor(message: string) {
    super(message, 'invalid', 400);
  }
}

/** 404: no such checkpoint (or session, or transfer). */
export class NotFoundError extends CheckpointError {
  constructor(message: string) {
    super(message, 'not_found', 404);
  }
}

/** 409: a stale `expectedVersion`, an id that exists or existed, a reused message id. */
export class ConflictError extends CheckpointError {
  constructor(message: string) {
    super(message, 'conflict', 409);
  }
}

/** 413: a snapshot or body over the limit. */
export class TooLargeError extends CheckpointError {
  constructor(message: string) {
    super(message, 'too_large', 413);
  }
}

/** 422: bytes that do not match what they claim (checksum, size, key). */
export class IntegrityError extends CheckpointError {
  constructor(message: string) {
    super(message, 'integrity', 422);
  }
}

/** 503: the store cannot serve now, no daemon answers, or the connection is closed: retry later. */
export class UnavailableError extends CheckpointError {
  constructor(message: string) {
    super(message, 'unavailable', 503);
  }
}

/** 500: an unexpected failure in the daemon (its log has the details). */
export class InternalError extends CheckpointError {
  constructor(message: string) {
    super(message, 'internal', 500);
  }
}

const BY_CODE: Record<ErrorCode, new (message: string) => CheckpointError> = {
  invalid: InvalidRequestError,
  not_found: NotFoundError,
  conflict: ConflictError,
  too_large: TooLargeError,
  integrity: IntegrityError,
  unavailable: UnavailableError,
  internal: InternalError,
};

const BY_STATUS: Record<string, ErrorCode> = {
  '400': 'invalid',
  '404': 'not_found',
  '409': 'conflict',
  '413': 'too_large',
  '422': 'integrity',
  '500': 'internal',
  '503': 'unavailable',
};

/** The error for a wire `code` (else for the status; else internal). */
export function errorFromWire(code: unknown, status: string | undefined, message: string): CheckpointError {
  const known =
    typeof code === 'string' && code in BY_CODE
      ? (code as ErrorCode)
      : (BY_STATUS[status ?? ''] ?? 'internal');
  return new BY_CODE[known](message);
}
