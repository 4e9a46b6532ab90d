/**
 * CheckpointManager: the original Checkpoint API's methods, with its shapes, over NATS against
 * a running checkpointd.
 *
 * Writes carry a fresh `Nats-Msg-Id`, kept across their retries, so a request retried after a
 * timeout takes effect once. Every reply's `Checkpointd-Seq` is remembered (the highest is
 * `lastSeq`) and sent back as `Checkpointd-Min-Seq`, so reads see this client's writes. Bodies
 * bigger than the server's `max_payload` go up and come down in chunks, transparently.
 */

import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';

import {
  connect as natsConnect,
  credsAuthenticator,
  headers as natsHeaders,
  nkeyAuthenticator,
  type Authenticator,
  type ConnectionOptions,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
  type TlsOptions,
} from 'nats';

import {
  CheckpointError,
  errorFromWire,
  IntegrityError,
  InvalidRequestError,
  NotFoundError,
  UnavailableError,
} from './errors.js';
import type {
  Checkpoint,
  CheckpointChanges,
  CheckpointEvent,
  CheckpointPage,
  CheckpointStats,
  CreateCheckpointInput,
  Diff,
  History,
  HistoryRequest,
  Lineage,
  Notification,
  NotificationType,
  QueryOptions,
  RestoreOptions,
  RestoreResult,
  SearchRequest,
  ValidationReport,
  VerifyResult,
} from './types.js';
import * as wire from './wire.js';

/** How to reach the daemon. Times are in milliseconds. */
export interface CheckpointManagerOptions {
  /** One URL, a comma-separated list, or an array (default `nats://127.0.0.1:4222`). */
  servers?: string | string[];
  /** The service's subject prefix (default `checkpoint`). */
  prefix?: string;
  /** Body encoding on the wire (default `msgpack`, compact; or `json`). */
  encoding?: wire.Encoding;
  /** How long to wait for each reply (default 30000). */
  requestTimeout?: number;
  /** How many times a request that got no reply is sent again, with the same message id (default 2). */
  retries?: number;
  /** How long connecting may take before it fails with UnavailableError (default 10000). */
  connectTimeout?: number;
  token?: string;
  user?: string;
  /** The password of `user` (`pass` is accepted too, as in the nats client). */
  password?: string;
  pass?: string;
  /** A NATS credentials file (JWT and nkey seed). */
  credentialsFile?: string;
  /** A file holding an nkey seed. */
  nkeySeedFile?: string;
  /** TLS options of the nats client (`caFile`, `certFile`, `keyFile`, ...); `true` for the defaults. */
  tls?: TlsOptions | true;
  /** The connection's name as the server shows it (default `checkpointd-client-ts`). */
  name?: string;
  /** An already connected nats client to use instead (not closed by `close()`). */
  nc?: NatsConnection;
}

interface CallOptions {
  key?: string;
  retry?: boolean;
  wait?: number;
}

const HEADROOM = 1024; // bytes of a chunk message left for its headers
const LONG = 600_000; // ms a verify of a large log may take
// Uploads this client has in progress at once: fewer than the daemon allows one connection (16).
const UPLOADS_AT_ONCE = 8;
const EVENT_TYPES = new Set(['*', 'created', 'updated', 'deleted', 'expired', 'restored', 'writes']);

export class CheckpointManager {
  private readonly options: CheckpointManagerOptions;
  private readonly prefix: string;
  private readonly encoding: wire.Encoding;
  private readonly contentType: string;
  private readonly timeout: number;
  private readonly retries: number;
  private connecting: Promise<NatsConnection> | null = null;
  private nc: NatsConnection | null = null;
  private readonly ownsConnection: boolean;
  private closed = false;
  private seq = 0;
  private uploads = 0;
  private readonly uploadWaiters: (() => void)[] = [];

  /**
   * A manager that connects on its first call (or on `open()`). `CheckpointManager.connect()`
   * makes one and connects at once.
   */
  constructor(options: CheckpointManagerOptions = {}) {
    const encoding = options.encoding ?? 'msgpack';
    if (encoding !== 'msgpack' && encoding !== 'json') {
      throw new InvalidRequestError(`encoding: must be msgpack or json, not ${String(encoding)}`);
    }
    this.options = options;
    this.prefix = options.prefix ?? 'checkpoint';
    this.encoding = encoding;
    this.contentType = encoding === 'msgpack' ? wire.MSGPACK_TYPE : wire.JSON_TYPE;
    this.timeout = options.requestTimeout ?? 30_000;
    this.retries = options.retries ?? 2;
    this.ownsConnection = options.nc === undefined;
    if (options.nc !== undefined) {
      this.nc = options.nc;
      this.connecting = Promise.resolve(options.nc);
    }
  }

  /** Connect to the daemon's NATS server(s). Fails with UnavailableError after `connectTimeout`. */
  static async connect(options: CheckpointManagerOptions = {}): Promise<CheckpointManager> {
    const manager = new CheckpointManager(options);
    await manager.open();
    return manager;
  }

  /** Connect (once; later calls return the same connection). */
  async open(): Promise<this> {
    await this.connection();
    return this;
  }

  /** Drain and close the connection this manager opened. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    const connecting = this.connecting;
    this.connecting = null;
    this.nc = null;
    if (connecting === null || !this.ownsConnection) {
      return;
    }
    let nc: NatsConnection;
    try {
      nc = await connecting;
    } catch {
      return;
    }
    if (!nc.isClosed()) {
      try {
        await nc.drain();
      } catch {
        await nc.close();
      }
    }
  }

  /**
   * The highest log position a reply to this manager carried (0 before any). Every request
   * asks for at least this position, so a read sees this manager's acknowledged writes.
   */
  get lastSeq(): number {
    return this.seq;
  }

  // -- writes --------------------------------------------------------------------------------

  /** Create a checkpoint. The result leaves out nothing but what you sent: it carries the snapshot given. */
  async create(input: CreateCheckpointInput, options: { idempotencyKey?: string } = {}): Promise<Checkpoint> {
    const reply = await this.call('create', input, { key: options.idempotencyKey ?? randomUUID() });
    return { ...wire.checkpointFromWire(reply), snapshot: input.snapshot };
  }

  /** Create several checkpoints atomically: all or nothing. */
  async createBatch(
    inputs: CreateCheckpointInput[],
    options: { idempotencyKey?: string } = {},
  ): Promise<Checkpoint[]> {
    const reply = (await this.call(
      'create_batch',
      { checkpoints: inputs },
      { key: options.idempotencyKey ?? randomUUID() },
    )) as { checkpoints: unknown[] };
    return reply.checkpoints.map((raw, index) => ({
      ...wire.checkpointFromWire(raw),
      snapshot: inputs[index]!.snapshot,
    }));
  }

  /** Change `name`, `metadata` (replaced as a whole), `branches` or `retentionExpiresAt`. */
  async updateCheckpoint(
    checkpointId: string,
    changes: CheckpointChanges,
    options: { expectedVersion?: number; idempotencyKey?: string } = {},
  ): Promise<Checkpoint> {
    const body = { id: checkpointId, changes, expectedVersion: options.expectedVersion };
    const reply = await this.call('update', body, { key: options.idempotencyKey ?? randomUUID() });
    return wire.checkpointFromWire(reply);
  }

  /** Delete a checkpoint's snapshot and views (the log keeps the event): false if there was none. */
  async deleteCheckpoint(checkpointId: string, options: { idempotencyKey?: string } = {}): Promise<boolean> {
    const reply = (await this.call('delete', { id: checkpointId }, {
      key: options.idempotencyKey ?? randomUUID(),
    })) as { deleted: boolean };
    return Boolean(reply.deleted);
  }

  /** Expire every checkpoint whose `retentionExpiresAt` has passed; how many. */
  async deleteExpiredCheckpoints(options: { idempotencyKey?: string } = {}): Promise<number> {
    const reply = (await this.call('delete_expired', {}, {
      key: options.idempotencyKey ?? randomUUID(),
    })) as { deleted: number };
    return Number(reply.deleted);
  }

  /**
   * Restore a checkpoint into a session (default: its own). `timeout` is in milliseconds, as in
   * the original API. A `conflictResolution.customResolver` is refused (InvalidRequestError):
   * a function cannot travel over NATS.
   */
  async restoreCheckpoint(
    checkpointId: string,
    options: RestoreOptions = {},
    call: { idempotencyKey?: string } = {},
  ): Promise<RestoreResult> {
    if (options.conflictResolution?.customResolver !== undefined) {
      throw new InvalidRequestError(
        'customResolver: a custom resolver runs in-process only; use conflictResolution.strategy over NATS',
      );
    }
    const body = { ...options, id: checkpointId };
    const wait = options.timeout === undefined ? undefined : options.timeout + 5_000;
    const reply = await this.call('restore', body, {
      key: call.idempotencyKey ?? randomUUID(),
      ...(wait === undefined ? {} : { wait }),
    });
    return wire.restoreResultFromWire(reply);
  }

  // -- reads ---------------------------------------------------------------------------------

  /** A checkpoint with its snapshot (unless `includeSnapshot` is false), or null. */
  async getCheckpoint(checkpointId: string, includeSnapshot = true): Promise<Checkpoint | null> {
    try {
      return wire.checkpointFromWire(await this.call('get', { id: checkpointId, includeSnapshot }));
    } catch (error) {
      if (error instanceof NotFoundError) {
        return null;
      }
      throw error;
    }
  }

  /** A session's checkpoints: an array that also carries `total`, `page` and `pageSize`. */
  async getCheckpointsBySession(sessionId: string, options: QueryOptions = {}): Promise<CheckpointPage> {
    return wire.pageFromWire(await this.call('list', { ...options, sessionId }));
  }

  /** A feature's checkpoints (`metadata.feature`): an array with `total`, `page`, `pageSize`. */
  async getCheckpointsByFeature(feature: string, options: QueryOptions = {}): Promise<CheckpointPage> {
    return wire.pageFromWire(await this.call('list', { ...options, feature }));
  }

  /**
   * Full-text search over name, description, tags, feature, author, workflowId and stepId:
   * `searchCheckpoints('milestone', 10)` or `searchCheckpoints({query, filters, sorting,
   * pagination})`. Each item carries its `score`.
   */
  async searchCheckpoints(query: string | SearchRequest, limit?: number): Promise<CheckpointPage> {
    const body: SearchRequest = typeof query === 'string' ? { query } : { ...query };
    if (limit !== undefined) {
      body.limit = limit;
    }
    return wire.pageFromWire(await this.call('search', body));
  }

  async getCheckpointStats(): Promise<CheckpointStats> {
    return wire.statsFromWire(await this.call('stats', {}));
  }

  /** Decrypt, decompress, recompute checksum and size, check the snapshot's schema. */
  async validateCheckpoint(checkpointId: string): Promise<ValidationReport> {
    return (await this.call('validate', { id: checkpointId })) as ValidationReport;
  }

  /** A checkpoint's ancestors and descendants (parents and restore sources), nearest first. */
  async getLineage(checkpointId: string, options: { limit?: number; offset?: number } = {}): Promise<Lineage> {
    return wire.lineageFromWire(await this.call('lineage', { ...options, id: checkpointId }));
  }

  /** What changed from one checkpoint's snapshot to another's (JSON Pointer paths). */
  async diffCheckpoints(fromId: string, toId: string): Promise<Diff> {
    return (await this.call('diff', { from: fromId, to: toId })) as Diff;
  }

  /** The event log, oldest first, of a checkpoint, a session or the whole store; `next` pages on. */
  async history(request: HistoryRequest = {}): Promise<History> {
    const reply = (await this.call('history', request)) as { events: unknown[]; next: number | null };
    return { events: reply.events.map(wire.eventFromWire), next: reply.next ?? null };
  }

  /** Every event of the log, oldest first, one request per page. */
  async *iterHistory(request: HistoryRequest = {}): AsyncGenerator<CheckpointEvent> {
    let afterSeq = request.afterSeq;
    for (;;) {
      const page = await this.history({ ...request, ...(afterSeq === undefined ? {} : { afterSeq }) });
      yield* page.events;
      if (page.next === null) {
        return;
      }
      afterSeq = page.next;
    }
  }

  /** Check the whole log's hash chain (and the views against it). Never retried: it may take minutes. */
  async verifyLog(): Promise<VerifyResult> {
    return (await this.call('verify', {}, { retry: false, wait: LONG })) as VerifyResult;
  }

  /** The log's last `seq`, once the daemon's writer and a reader answered. */
  async health(): Promise<{ lastSeq: number; viewsSeq: number }> {
    return (await this.call('health', {})) as { lastSeq: number; viewsSeq: number };
  }

  // -- notifications -------------------------------------------------------------------------

  /**
   * Notifications published after each commit, as an async iterator:
   * `for await (const n of manager.notifications('restored', sessionId)) { ... }`.
   *
   * `type` is `created`, `updated`, `deleted`, `expired`, `restored` or `*`; no `sessionId`
   * means every session. The subscription is made at once, before any later request of this
   * manager reaches the server. A restored state too big for one message is fetched for you.
   * `seq` is global and gapless: a gap means missed events, which `history({afterSeq})` returns.
   * Leaving the loop (or `close()`) unsubscribes.
   */
  notifications(type: NotificationType | '*' = '*', sessionId?: string): NotificationStream {
    if (!EVENT_TYPES.has(type)) {
      throw new InvalidRequestError(`type: must be one of ${[...EVENT_TYPES].sort().join(', ')}`);
    }
    const session = sessionId === undefined ? '*' : wire.sessionToken(sessionId);
    const nc = this.nc;
    if (nc === null) {
      throw new UnavailableError('the checkpoint manager is not connected: await open() or connect() first');
    }
    return new NotificationStream(this, nc.subscribe(`${this.prefix}.events.${type}.${session}`), nc);
  }

  // -- the wire ------------------------------------------------------------------------------

  private connection(): Promise<NatsConnection> {
    if (this.closed) {
      return Promise.reject(new UnavailableError('the checkpoint manager is closed'));
    }
    if (this.connecting === null) {
      this.connecting = this.dial().then((nc) => {
        this.nc = nc;
        return nc;
      });
      this.connecting.catch(() => {
        this.connecting = null; // the next call tries again
      });
    }
    return this.connecting;
  }

  private async dial(): Promise<NatsConnection> {
    const o = this.options;
    const servers = o.servers ?? 'nats://127.0.0.1:4222';
    const options: ConnectionOptions = {
      servers: Array.isArray(servers) ? servers : servers.split(',').map((s) => s.trim()),
      name: o.name ?? 'checkpointd-client-ts',
      timeout: o.connectTimeout ?? 10_000,
    };
    if (o.token !== undefined) {
      options.token = o.token;
    }
    if (o.user !== undefined) {
      options.user = o.user;
      const pass = o.password ?? o.pass;
      if (pass !== undefined) {
        options.pass = pass;
      }
    }
    const authenticators: Authenticator[] = [];
    if (o.credentialsFile !== undefined) {
      authenticators.push(credsAuthenticator(new Uint8Array(readFileSync(o.credentialsFile))));
    }
    if (o.nkeySeedFile !== undefined) {
      authenticators.push(nkeyAuthenticator(new Uint8Array(readFileSync(o.nkeySeedFile)).subarray(0)));
    }
    if (authenticators.length > 0) {
      options.authenticator = authenticators;
    }
    if (o.tls !== undefined) {
      options.tls = o.tls === true ? {} : o.tls;
    }
    try {
      return await natsConnect(options);
    } catch (error) {
      throw new UnavailableError(`cannot connect to NATS at ${options.servers}: ${describe(error)}`);
    }
  }

  /** Send one request and return the decoded reply object (or throw its CheckpointError). */
  private async call(verb: string, body: object, options: CallOptions = {}): Promise<unknown> {
    const wait = Math.max(this.timeout, options.wait ?? 0);
    const nc = await this.connection();
    const payload = wire.encode(wire.toWire(body), this.encoding);
    const headers: Record<string, string> = {
      [wire.CONTENT_TYPE]: this.contentType,
      [wire.MIN_SEQ]: String(this.seq),
    };
    if (options.key !== undefined) {
      headers[wire.MSG_ID] = options.key;
    }
    const subject = `${this.prefix}.${verb}`;
    const attempts = options.retry === false ? 1 : this.retries + 1;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.exchange(nc, subject, payload, headers, wait);
      } catch (error) {
        if (error instanceof CheckpointError) {
          throw error;
        }
        const code = (error as { code?: unknown }).code;
        const noReply = code === 'TIMEOUT' || code === '503';
        if (!noReply) {
          if (nc.isClosed() || code === 'CONNECTION_CLOSED' || code === 'CONNECTION_DRAINING') {
            throw new UnavailableError('the NATS connection is closed');
          }
          throw new UnavailableError(`${subject}: ${describe(error)}`);
        }
        if (attempt >= attempts - 1) {
          throw new UnavailableError(
            code === '503'
              ? `no checkpointd service answers on ${subject}`
              : `no reply on ${subject} within ${wait} ms`,
          );
        }
        await sleep(Math.min(50 * 2 ** attempt, 1000));
      }
    }
  }

  private async exchange(
    nc: NatsConnection,
    subject: string,
    payload: Uint8Array,
    headers: Record<string, string>,
    wait: number,
  ): Promise<unknown> {
    const limit = nc.info?.max_payload ?? 1024 * 1024;
    let reply: Msg;
    if (payload.length + wire.headerSize(headers) > limit) {
      await this.acquireUpload();
      try {
        const upload = randomUUID().replaceAll('-', '');
        await this.upload(nc, upload, payload, limit);
        reply = await nc.request(subject, new Uint8Array(0), {
          timeout: wait,
          headers: toHeaders({ ...headers, [wire.UPLOAD]: upload }),
        });
      } finally {
        this.releaseUpload();
      }
    } else {
      reply = await nc.request(subject, payload, { timeout: wait, headers: toHeaders(headers) });
    }
    const replyHeaders = reply.headers;
    this.saw(header(replyHeaders, wire.SEQ));
    let data = reply.data;
    const download = header(replyHeaders, wire.DOWNLOAD);
    if (download !== undefined) {
      data = await this.fetchDownload(
        download,
        Number(header(replyHeaders, wire.DOWNLOAD_SIZE)),
        Number(header(replyHeaders, wire.DOWNLOAD_CHUNKS)),
        header(replyHeaders, wire.DOWNLOAD_SHA256) ?? '',
      );
    }
    raiseForReply(data, replyHeaders);
    return wire.decode(data, header(replyHeaders, wire.CONTENT_TYPE));
  }

  private saw(value: string | undefined): void {
    if (value !== undefined && /^[0-9]{1,16}$/.test(value)) {
      const seq = Number(value);
      if (seq > this.seq) {
        this.seq = seq;
      }
    }
  }

  private async upload(nc: NatsConnection, upload: string, payload: Uint8Array, limit: number): Promise<void> {
    const size = limit - HEADROOM;
    const count = Math.ceil(payload.length / size);
    for (let index = 0; index < count; index++) {
      const chunk = payload.subarray(index * size, (index + 1) * size);
      const reply = await nc.request(`${this.prefix}.upload`, chunk, {
        timeout: this.timeout,
        headers: toHeaders({ [wire.UPLOAD]: upload, [wire.CHUNK]: `${index}/${count}` }),
      });
      raiseForReply(reply.data, reply.headers);
    }
  }

  /**
   * The bytes of a chunked download (a big reply, or a notification's `stateDownload`).
   * Throws IntegrityError if they do not match `size` and `sha256`.
   */
  async fetchDownload(download: string, size: number, chunks: number, sha256: string): Promise<Uint8Array> {
    const nc = await this.connection();
    const parts: Uint8Array[] = [];
    for (let index = 0; index < chunks; index++) {
      const reply = await nc.request(`${this.prefix}.download`, wire.encode({ id: download, index }, 'json'), {
        timeout: this.timeout,
      });
      raiseForReply(reply.data, reply.headers);
      parts.push(reply.data);
    }
    const data = Buffer.concat(parts);
    if (data.length !== size || createHash('sha256').update(data).digest('hex') !== sha256) {
      throw new IntegrityError('a chunked reply arrived damaged (size or sha256 mismatch)');
    }
    return new Uint8Array(data.buffer, data.byteOffset, data.length);
  }

  private async acquireUpload(): Promise<void> {
    while (this.uploads >= UPLOADS_AT_ONCE) {
      await new Promise<void>((resolve) => this.uploadWaiters.push(resolve));
    }
    this.uploads++;
  }

  private releaseUpload(): void {
    this.uploads--;
    this.uploadWaiters.shift()?.();
  }
}

/** An async iterator of Notification over one subscription. */
export class NotificationStream implements AsyncIterable<Notification> {
  /** The subject subscribed to. */
  readonly subject: string;

  constructor(
    private readonly manager: CheckpointManager,
    private readonly subscription: Subscription,
    private readonly nc: NatsConnection,
  ) {
    this.subject = subscription.getSubject();
  }

  /** Resolves once the server has the subscription (for publishers on other connections). */
  async ready(): Promise<void> {
    await this.nc.flush();
  }

  /** Stop: the iteration ends. */
  close(): void {
    if (!this.subscription.isClosed()) {
      this.subscription.unsubscribe();
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Notification> {
    try {
      for await (const msg of this.subscription) {
        yield await this.decode(msg);
      }
    } finally {
      this.close();
    }
  }

  private async decode(msg: Msg): Promise<Notification> {
    let body = wire.decode(msg.data, wire.JSON_TYPE) as Record<string, unknown>;
    let data = (body.data as Record<string, unknown> | undefined) ?? {};
    const whole = data.dataDownload as DownloadOffer | undefined;
    if (whole !== undefined && whole !== null) {
      data = wire.decode(await this.fetch(whole), wire.JSON_TYPE) as Record<string, unknown>;
    }
    const stateDownload = data.stateDownload as DownloadOffer | undefined;
    if (stateDownload !== undefined && stateDownload !== null) {
      const state = wire.decode(await this.fetch(stateDownload), wire.JSON_TYPE);
      const { stateDownload: _, ...rest } = data;
      data = { ...rest, state };
    }
    body = { ...body, data };
    return wire.notificationFromWire(body);
  }

  private fetch(offer: DownloadOffer): Promise<Uint8Array> {
    return this.manager.fetchDownload(offer.id, offer.size, offer.chunks, offer.sha256);
  }
}

interface DownloadOffer {
  id: string;
  size: number;
  chunks: number;
  sha256: string;
}

function toHeaders(values: Record<string, string>): MsgHdrs {
  const h = natsHeaders();
  for (const [key, value] of Object.entries(values)) {
    h.set(key, value);
  }
  return h;
}

function header(h: MsgHdrs | undefined, key: string): string | undefined {
  if (h === undefined || !h.has(key)) {
    return undefined;
  }
  return h.get(key);
}

function raiseForReply(data: Uint8Array, h: MsgHdrs | undefined): void {
  const status = header(h, wire.ERROR_CODE);
  if (status === undefined) {
    return;
  }
  let message = header(h, wire.ERROR) ?? 'error';
  let code: unknown;
  try {
    const detail = (wire.decode(data, header(h, wire.CONTENT_TYPE)) as { error?: unknown }).error;
    if (detail !== null && typeof detail === 'object') {
      const { code: c, message: m } = detail as { code?: unknown; message?: unknown };
      code = c;
      if (m !== undefined) {
        message = String(m);
      }
    }
  } catch {
    // an undecodable error body: the headers say enough
  }
  throw errorFromWire(code, status, message);
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
