/**
 * What the TypeScript client does on the wire: chunked transfers of a 3 MB snapshot, restore
 * notifications, typed errors with the wire's code, idempotent writes, read-your-writes
 * positions, both encodings, history and verify.
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { connect } from 'nats';

import {
  CheckpointError,
  CheckpointManager,
  ConflictError,
  IntegrityError,
  InvalidRequestError,
  NotFoundError,
  TooLargeError,
  UnavailableError,
  sessionToken,
  type Notification,
} from '../src/index.js';
import { Daemon, freePort } from './daemon.js';

const MiB = 1024 * 1024;
let daemon: Daemon;
let manager: CheckpointManager;

before(async () => {
  daemon = await Daemon.start([`max_checkpoint_size = ${4 * MiB}`]);
  manager = await daemon.manager();
});

after(async () => {
  await manager?.close();
  await daemon?.stop();
});

/** A snapshot of about `bytes` bytes that compression cannot shrink. */
function bigSnapshot(bytes: number): Record<string, unknown> {
  const chunks: string[] = [];
  for (let made = 0; made < bytes; made += 64 * 1024) {
    chunks.push(randomBytes(48 * 1024).toString('base64'));
  }
  return { sessions: ['s-big'], state: { progress: 50, blobs: chunks } };
}

/** The next notification of a stream, or a failure after `ms`. */
async function next(iterator: AsyncIterator<Notification>, ms = 30_000): Promise<Notification> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no notification within ${ms} ms`)), ms);
  });
  try {
    const result = await Promise.race([iterator.next(), timeout]);
    assert.equal(result.done, false);
    return result.value as Notification;
  } finally {
    clearTimeout(timer);
  }
}

describe('large snapshots', () => {
  for (const encoding of ['msgpack', 'json'] as const) {
    test(`a 3 MB snapshot goes up and comes back whole (${encoding})`, async () => {
      const client = await daemon.manager({ encoding });
      try {
        const snapshot = bigSnapshot(3 * MiB);
        const created = await client.create({ name: `big-${encoding}`, sessionId: 's-big', snapshot, branches: [] });
        assert.ok(created.size > 3 * MiB, `size ${created.size}`);
        const fetched = await client.getCheckpoint(created.id);
        assert.deepEqual(fetched?.snapshot, snapshot);
        assert.equal(fetched?.checksum, created.checksum);
        assert.equal((await client.validateCheckpoint(created.id)).isValid, true);
      } finally {
        await client.close();
      }
    });
  }

  test('a snapshot over the store limit is a TooLargeError (413, too_large)', async () => {
    await assert.rejects(
      manager.create({ name: 'huge', sessionId: 's-big', snapshot: bigSnapshot(5 * MiB), branches: [] }),
      (error: unknown) => error instanceof TooLargeError && error.code === 'too_large' && error.status === 413,
    );
  });

  test('the restore notification of a 3 MB state carries the whole state', async () => {
    const snapshot = bigSnapshot(3 * MiB);
    const created = await manager.create({ name: 'big-restore', sessionId: 's-big-2', snapshot, branches: [] });
    const stream = manager.notifications('restored', 's-big-2');
    const iterator = stream[Symbol.asyncIterator]();
    const result = await manager.restoreCheckpoint(created.id, { mergeStrategy: 'overwrite' });
    const notification = await next(iterator);
    stream.close();
    assert.equal(notification.checkpointId, created.id);
    assert.deepEqual(notification.data.state, snapshot);
    assert.equal(notification.seq, result.eventSeq);
  });
});

describe('notifications', () => {
  test('a restore is announced to the target session, with its state and conflicts', async () => {
    const source = await manager.create({
      name: 'n1',
      sessionId: 's-notify',
      snapshot: { state: { progress: 40 } },
      branches: ['main'],
    });
    const received: Notification[] = [];
    const listening = (async () => {
      for await (const notification of manager.notifications('restored', 's-notify')) {
        received.push(notification);
        break; // leaving the loop unsubscribes
      }
    })();
    const result = await manager.restoreCheckpoint(source.id, {
      currentState: { state: { progress: 80 } },
      mergeStrategy: 'merge',
    });
    await listening;
    const [notification] = received;
    assert.ok(notification);
    assert.equal(notification.type, 'restored');
    assert.equal(notification.sessionId, 's-notify');
    assert.equal(notification.checkpointId, source.id);
    assert.equal(notification.seq, result.eventSeq);
    assert.ok(notification.at instanceof Date);
    assert.deepEqual(notification.data.state, { state: { progress: 40 } });
    assert.deepEqual(notification.data.conflicts, [
      { path: '/state/progress', current: 80, checkpoint: 40, resolution: 'checkpoint' },
    ]);
  });

  test('notify: false publishes nothing; a session id with dots has its own token', async () => {
    const sessionId = 'team.alpha/run 1';
    assert.equal(sessionToken(sessionId), '~' + Buffer.from(sessionId).toString('base64url'));
    const stream = manager.notifications('*', sessionId);
    const iterator = stream[Symbol.asyncIterator]();
    const created = await manager.create({ name: 'dots', sessionId, snapshot: { state: {} }, branches: [] });
    await manager.restoreCheckpoint(created.id, { notify: false });
    await manager.updateCheckpoint(created.id, { name: 'dots-renamed' });
    const first = await next(iterator);
    const second = await next(iterator);
    stream.close();
    assert.deepEqual([first.type, second.type], ['created', 'updated']);
    assert.equal(first.sessionId, sessionId);
    assert.equal(second.seq, first.seq + 2); // the restore's event is between them, unannounced
  });
});

describe('errors', () => {
  test('each carries the wire code and status', async () => {
    const created = await manager.create({ name: 'e1', sessionId: 's-err', snapshot: { state: {} }, branches: [] });

    const cases: [() => Promise<unknown>, new (m: string) => CheckpointError, string, number][] = [
      [() => manager.updateCheckpoint('nope', { name: 'x' }), NotFoundError, 'not_found', 404],
      [() => manager.restoreCheckpoint('nope'), NotFoundError, 'not_found', 404],
      [() => manager.getCheckpointsBySession('s-err', { where: 'name = = 1' }), InvalidRequestError, 'invalid', 400],
      [() => manager.updateCheckpoint(created.id, { name: 'x' }, { expectedVersion: 7 }), ConflictError, 'conflict', 409],
      [
        () =>
          manager.create({ id: created.id, name: 'again', sessionId: 's-err', snapshot: { state: {} }, branches: [] }),
        ConflictError,
        'conflict',
        409,
      ],
      [
        () =>
          manager.create({
          name: 'lying',
          sessionId: 's-err',
          snapshot: { state: {} },
          branches: [],
          checksum: 'sha256:' + '0'.repeat(64),
        }),
        IntegrityError,
        'integrity',
        422,
      ],
      [
        () =>
          manager.getCheckpointsBySession('s-err', { pagination: { page: 1, pageSize: 5000 } }),
        InvalidRequestError,
        'invalid',
        400,
      ],
    ];
    for (const [call, cls, code, status] of cases) {
      await assert.rejects(call(), (error: unknown) => {
        assert.ok(error instanceof cls, `${String(error)} is not a ${cls.name}`);
        assert.ok(error instanceof CheckpointError);
        assert.equal(error.code, code);
        assert.equal(error.status, status);
        assert.ok(error.message.length > 0);
        return true;
      });
    }
  });

  test('a value JSON cannot carry is refused before sending, naming where it is', async () => {
    const json = await daemon.manager({ encoding: 'json' });
    try {
      await assert.rejects(
        json.create({ name: 'nan', sessionId: 's-err', snapshot: { state: { progress: NaN } }, branches: [] }),
        (error: unknown) => error instanceof InvalidRequestError && /\/snapshot\/state\/progress/.test(error.message),
      );
    } finally {
      await json.close();
    }
  });

  test('no daemon, a closed manager: UnavailableError', async () => {
    const port = await freePort();
    await assert.rejects(
      CheckpointManager.connect({ servers: `nats://127.0.0.1:${port}`, connectTimeout: 2_000 }),
      (error: unknown) => error instanceof UnavailableError && error.code === 'unavailable',
    );
    const elsewhere = await daemon.manager({ prefix: 'nobody.serves', retries: 1, requestTimeout: 2_000 });
    await assert.rejects(elsewhere.getCheckpointStats(), /no checkpointd service answers/);
    await elsewhere.close();
    await assert.rejects(elsewhere.getCheckpointStats(), UnavailableError);
  });
});

describe('writes and positions', () => {
  test('a write retried with its idempotency key takes effect once', async () => {
    const input = { name: 'once', sessionId: 's-idem', snapshot: { state: { n: 1 } }, branches: [] };
    const first = await manager.create(input, { idempotencyKey: 'key-once' });
    const again = await manager.create(input, { idempotencyKey: 'key-once' });
    assert.equal(again.id, first.id);
    assert.equal((await manager.getCheckpointsBySession('s-idem')).total, 1);
    await assert.rejects(manager.create({ ...input, name: 'other' }, { idempotencyKey: 'key-once' }), ConflictError);
    // Without a key, every call is its own write.
    await manager.create(input);
    await manager.create(input);
    assert.equal((await manager.getCheckpointsBySession('s-idem')).total, 3);
  });

  test('a write whose reply was lost is sent again with its message id, and applied once', async () => {
    // A relay in front of the daemon that forwards every request but loses the first reply
    // to each message id: the client times out, retries with the same id, and gets the
    // stored reply of the create the daemon already made.
    const nc = await connect({ servers: daemon.url });
    const seen = new Map<string, number>();
    const relay = nc.subscribe('lossy.checkpoint.>');
    const relaying = (async () => {
      for await (const msg of relay) {
        const verb = msg.subject.slice('lossy.checkpoint.'.length);
        const reply = await nc.request(`checkpoint.${verb}`, msg.data, {
          timeout: 30_000,
          ...(msg.headers === undefined ? {} : { headers: msg.headers }),
        });
        const id = msg.headers?.get('Nats-Msg-Id') ?? '';
        seen.set(id, (seen.get(id) ?? 0) + 1);
        if (id === '' || seen.get(id)! > 1) {
          msg.respond(reply.data, reply.headers === undefined ? {} : { headers: reply.headers });
        }
      }
    })();
    await nc.flush();
    const lossy = await daemon.manager({ prefix: 'lossy.checkpoint', requestTimeout: 1_000, retries: 2 });
    try {
      const created = await lossy.create({ name: 'lost-reply', sessionId: 's-lossy', snapshot: { state: {} }, branches: [] });
      assert.deepEqual([...seen.values()], [2]); // one message id, sent twice
      const stored = await manager.getCheckpointsBySession('s-lossy');
      assert.deepEqual(stored.map((c) => c.id), [created.id]);
    } finally {
      await lossy.close();
      relay.unsubscribe();
      await relaying;
      await nc.close();
    }
  });

  test('every reply moves lastSeq; a second client reads what the first wrote', async () => {
    const other = await daemon.manager({ encoding: 'json' });
    try {
      const before = manager.lastSeq;
      const created = await manager.create({ name: 'seq', sessionId: 's-seq', snapshot: { state: {} }, branches: [] });
      assert.ok(manager.lastSeq > before);
      const history = await other.history({ checkpointId: created.id });
      assert.deepEqual(history.events.map((e) => e.type), ['checkpoint.created']);
      assert.equal(history.events[0]!.seq, manager.lastSeq);
      assert.ok(history.events[0]!.at instanceof Date);
      assert.equal(history.next, null);
      assert.ok(other.lastSeq >= manager.lastSeq);
    } finally {
      await other.close();
    }
  });

  test('history pages through the whole log; verify finds it intact', async () => {
    const seqs: number[] = [];
    for await (const event of manager.iterHistory({ limit: 3 })) {
      seqs.push(event.seq);
    }
    assert.deepEqual(seqs, seqs.map((_, index) => index + 1));
    const verified = await manager.verifyLog();
    assert.equal(verified.ok, true);
    assert.equal(verified.events, seqs.length);
    assert.equal(verified.firstBadSeq, null);
  });

  test('createBatch is all or nothing', async () => {
    const good = { name: 'b1', sessionId: 's-batch', snapshot: { state: {} }, branches: [] };
    const made = await manager.createBatch([good, { ...good, name: 'b2' }]);
    assert.deepEqual(made.map((c) => c.name), ['b1', 'b2']);
    await assert.rejects(manager.createBatch([{ ...good, name: 'b3' }, { ...good, name: '' }]), InvalidRequestError);
    assert.equal((await manager.getCheckpointsBySession('s-batch')).total, 2);
  });
});
