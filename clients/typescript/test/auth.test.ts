/**
 * Connection options against a daemon whose embedded nats-server checks credentials: the
 * right ones connect and work, wrong or missing ones are an UnavailableError.
 */

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CheckpointManager, UnavailableError } from '../src/index.js';
import { Daemon } from './daemon.js';

const cases = [
  {
    name: 'user and password',
    nats: ['user = "orchestrator"', 'password = "s3cret-pw"'],
    good: { user: 'orchestrator', password: 's3cret-pw' },
    bad: { user: 'orchestrator', password: 'wrong' },
  },
  { name: 'token', nats: ['token = "t0ken-for-tests"'], good: { token: 't0ken-for-tests' }, bad: {} },
];

for (const { name, nats, good, bad } of cases) {
  test(`${name}: the right credentials connect, others are refused`, async () => {
    const daemon = await Daemon.start([], nats, good);
    try {
      const manager = await CheckpointManager.connect({ servers: daemon.url, ...good });
      try {
        const created = await manager.create({
          name: 'auth',
          sessionId: 's-auth',
          snapshot: { state: {} },
          branches: [],
        });
        assert.equal((await manager.getCheckpoint(created.id))?.name, 'auth');
      } finally {
        await manager.close();
      }
      await assert.rejects(
        CheckpointManager.connect({ servers: daemon.url, connectTimeout: 5_000, ...bad }),
        (error: unknown) => error instanceof UnavailableError && error.code === 'unavailable',
      );
    } finally {
      await daemon.stop();
    }
  });
}
