/**
 * The original Checkpoint API document's TypeScript examples, translated literally: the only
 * changed line is how `checkpointManager` is made. Where an example cannot run as printed
 * (placeholder values, a function that cannot travel over NATS, fields the example leaves out),
 * the test says so and shows what the daemon answers.
 */

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  CheckpointManager,
  CheckpointPriority,
  InvalidRequestError,
  type Checkpoint,
  type CreateCheckpointInput,
} from '../src/index.js';
import { Daemon } from './daemon.js';

let daemon: Daemon;
let checkpointManager: CheckpointManager;
const session = { id: 'session-examples' };

before(async () => {
  daemon = await Daemon.start();
  // The one changed line: a manager connected to the daemon.
  checkpointManager = await CheckpointManager.connect({ servers: daemon.url });
});

after(async () => {
  await checkpointManager?.close();
  await daemon?.stop();
});

/** The headline example's input, without its two placeholder integrity values. */
function headline(): CreateCheckpointInput {
  return {
    name: 'milestone-v1.0',
    sessionId: session.id,
    timestamp: new Date(),
    snapshot: {
      sessions: [session.id],
      state: {
        progress: 75,
        completed: [1, 2, 3, 4, 5],
        pending: [6, 7],
        config: {
          environment: 'production',
          version: '1.0.0',
        },
        resources: {
          memory: '2GB',
          cpu: '4 cores',
          disk: '50GB',
        },
      },
      branches: ['main', 'feature-xyz'],
      metadata: {
        feature: 'user-authentication',
        priority: CheckpointPriority.HIGH,
        author: 'developer-1',
        description: 'Milestone checkpoint with user authentication feature',
        workflowId: 'wf-auth-flow',
        stepId: 'step-auth-implementation',
        tags: ['stable', 'milestone', 'production-ready'],
      },
    },
    branches: ['main', 'feature-xyz'],
    createdBy: 'developer-1',
    compressed: true,
    encrypted: true,
    retentionExpiresAt: new Date(Date.now() + 90 * 24 * 60 * 60 * 1000), // 90 days
  };
}

describe('the original examples', () => {
  let checkpointId: string;
  let checkpoint: Checkpoint | null;

  test('create: the placeholder checksum of the example is refused, naming it', async () => {
    await assert.rejects(
      checkpointManager.create({ ...headline(), size: 2048000, checksum: 'sha256:abc123...' }),
      (error: unknown) =>
        error instanceof InvalidRequestError && error.code === 'invalid' && /checksum/.test(error.message),
    );
  });

  test('create checkpoint (full), with the real size and checksum or none', async () => {
    const checkpoint = await checkpointManager.create(headline());

    console.log('Checkpoint created:', checkpoint.id);
    checkpointId = checkpoint.id;
    // The snapshot's metadata became the checkpoint's, as the original's users expect.
    assert.equal(checkpoint.metadata.feature, 'user-authentication');
    assert.equal(checkpoint.metadata.priority, 'high');
    assert.deepEqual(checkpoint.metadata.tags, ['stable', 'milestone', 'production-ready']);
    assert.equal(checkpoint.compressed, true);
    assert.equal(checkpoint.encrypted, true);
    assert.ok(checkpoint.retentionExpiresAt instanceof Date);
    assert.ok(checkpoint.retentionExpiresAt.getTime() > Date.now() + 89 * 24 * 60 * 60 * 1000);
    assert.match(checkpoint.checksum, /^sha256:[0-9a-f]{64}$/);

    // Given back exactly, the size and checksum the store computed are accepted.
    const again = await checkpointManager.create({
      ...headline(),
      name: 'milestone-v1.0-checked',
      size: checkpoint.size,
      checksum: checkpoint.checksum,
    });
    assert.equal(again.checksum, checkpoint.checksum);
  });

  test('create minimal checkpoint', async () => {
    const quickCheckpoint = await checkpointManager.create({
      name: 'quick-backup',
      sessionId: session.id,
      timestamp: new Date(),
      snapshot: {
        sessions: [session.id],
        state: { quick: true },
      },
      branches: ['current-branch'],
    });
    assert.equal(quickCheckpoint.name, 'quick-backup');
    assert.equal(quickCheckpoint.metadata.priority, CheckpointPriority.NORMAL);
    assert.ok(quickCheckpoint.timestamp instanceof Date);
    assert.equal(quickCheckpoint.version, 1);
  });

  test('get checkpoint', async () => {
    checkpoint = await checkpointManager.getCheckpoint(checkpointId);

    if (checkpoint) {
      console.log('Checkpoint found:', {
        id: checkpoint.id,
        name: checkpoint.name,
        sessionId: checkpoint.sessionId,
        timestamp: checkpoint.timestamp,
        size: checkpoint.size,
        compressed: checkpoint.compressed,
        encrypted: checkpoint.encrypted,
        metadata: checkpoint.metadata,
      });
    } else {
      console.log('Checkpoint not found');
    }
    assert.ok(checkpoint);
    assert.equal(checkpoint.sessionId, session.id);
    assert.deepEqual(checkpoint.snapshot, headline().snapshot);
    assert.equal(await checkpointManager.getCheckpoint('no-such-checkpoint'), null);
  });

  test('get checkpoints by session, all and filtered', async () => {
    const sessionId = session.id;
    // Get all checkpoints for a session
    const sessionCheckpoints = await checkpointManager.getCheckpointsBySession(sessionId);

    // Get checkpoints with filtering
    const filteredCheckpoints = await checkpointManager.getCheckpointsBySession(sessionId, {
      where: "metadata->>'feature' = ? AND compressed = 1",
      params: ['user-authentication'],
      orderBy: [{ field: 'timestamp', direction: 'DESC' }],
      pagination: { page: 1, pageSize: 10 },
    });

    console.log(`Found ${sessionCheckpoints.length} checkpoints for session ${sessionId}`);
    assert.deepEqual(
      sessionCheckpoints.map((c) => c.name).sort(),
      ['milestone-v1.0', 'milestone-v1.0-checked', 'quick-backup'],
    );
    assert.equal(sessionCheckpoints.total, 3);
    assert.deepEqual(
      filteredCheckpoints.map((c) => c.name),
      ['milestone-v1.0-checked', 'milestone-v1.0'],
    );
    assert.equal(filteredCheckpoints.total, 2);
    assert.equal(filteredCheckpoints.page, 1);
    assert.equal(filteredCheckpoints.pageSize, 10);

    const secondPage = await checkpointManager.getCheckpointsBySession(sessionId, {
      orderBy: [{ field: 'name', direction: 'asc' }],
      pagination: { page: 2, pageSize: 2 },
    });
    assert.deepEqual(secondPage.map((c) => c.name), ['quick-backup']);
    assert.equal(secondPage.total, 3);
  });

  test('get checkpoints by feature', async () => {
    const featureCheckpoints = await checkpointManager.getCheckpointsByFeature('user-authentication');

    const lines: string[] = [];
    for (const checkpoint of featureCheckpoints) {
      lines.push(`${checkpoint.name}: ${checkpoint.timestamp.toISOString()} by ${checkpoint.metadata.author}`);
    }
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, /^milestone-v1\.0(-checked)?: \d{4}-\d\d-\d\dT.*Z by developer-1$/);
  });

  test('update checkpoint', async () => {
    assert.ok(checkpoint);
    const updated = await checkpointManager.updateCheckpoint(checkpointId, {
      metadata: {
        ...checkpoint.metadata,
        description: 'Updated description',
        tags: [...checkpoint.metadata.tags, 'updated'],
      },
    });

    console.log('Checkpoint updated:', updated.id);
    assert.equal(updated.metadata.description, 'Updated description');
    assert.deepEqual(updated.metadata.tags, ['stable', 'milestone', 'production-ready', 'updated']);
    assert.equal(updated.version, 2);
    assert.ok(updated.updatedAt.getTime() >= updated.createdAt.getTime());
  });

  test('search checkpoints (simple)', async () => {
    // Search by name or description
    const results = await checkpointManager.searchCheckpoints('milestone', 10);

    const found: string[] = [];
    for (const checkpoint of results) {
      found.push(`Found: ${checkpoint.name} - ${checkpoint.metadata.description}`);
    }
    assert.ok(found.includes('Found: milestone-v1.0 - Updated description'));
    assert.equal(results.total, 2);
    assert.ok(results.every((c) => typeof c.score === 'number'));
  });

  test('search checkpoints (advanced)', async () => {
    await checkpointManager.create({
      name: 'auth-2024',
      sessionId: 'session-search',
      timestamp: new Date('2024-06-01T12:00:00Z'),
      snapshot: { state: {} },
      branches: ['main'],
      metadata: {
        feature: 'session-management',
        priority: CheckpointPriority.CRITICAL,
        description: 'authentication rework',
        tags: ['production', 'stable'],
      },
    });
    // Complex search with filters
    const searchResults = await checkpointManager.searchCheckpoints({
      query: 'authentication',
      filters: {
        feature: ['user-authentication', 'session-management'],
        priority: ['high', 'critical'],
        dateRange: {
          from: new Date('2024-01-01'),
          to: new Date('2024-12-31'),
        },
        tags: ['production', 'stable'],
      },
      sorting: {
        field: 'timestamp',
        direction: 'DESC',
      },
      pagination: {
        page: 1,
        pageSize: 20,
      },
    });
    assert.deepEqual(searchResults.map((c) => c.name), ['auth-2024']);
    assert.equal(searchResults.pageSize, 20);
  });

  test('get checkpoint statistics', async () => {
    const stats = await checkpointManager.getCheckpointStats();

    console.log('Checkpoint statistics:', {
      totalCheckpoints: stats.totalCheckpoints,
      totalSize: stats.totalSize,
      averageSize: stats.averageSize,
      byFeature: stats.byFeature,
      byPriority: stats.byPriority,
      oldestCheckpoint: stats.oldestCheckpoint,
      newestCheckpoint: stats.newestCheckpoint,
    });
    assert.equal(stats.totalCheckpoints, 4);
    assert.deepEqual(stats.byFeature, { 'user-authentication': 2, 'session-management': 1 });
    assert.deepEqual(stats.byPriority, { high: 2, normal: 1, critical: 1 });
    assert.ok(stats.oldestCheckpoint);
    assert.equal(stats.oldestCheckpoint.name, 'auth-2024');
    assert.ok(stats.oldestCheckpoint.timestamp instanceof Date);
    assert.equal(stats.totalSize / stats.totalCheckpoints, stats.averageSize);
  });

  test('get checkpoint validation report', async () => {
    const validation = await checkpointManager.validateCheckpoint(checkpointId);

    console.log('Validation result:', {
      isValid: validation.isValid,
      checksumValid: validation.checksumValid,
      sizeMatches: validation.sizeMatches,
      schemaValid: validation.schemaValid,
      errors: validation.errors,
      warnings: validation.warnings,
    });
    assert.deepEqual(
      { ...validation },
      { isValid: true, checksumValid: true, sizeMatches: true, schemaValid: true, errors: [], warnings: [] },
    );
  });

  test('restore checkpoint', async () => {
    const restoreResult = await checkpointManager.restoreCheckpoint(checkpointId, {
      targetSessionId: session.id,
      preserveCurrentState: true,
      mergeStrategy: 'overwrite',
      timeout: 300000, // 5 minutes
    });

    console.log('Restore result:', {
      success: restoreResult.success,
      restoredFrom: restoreResult.restoredFrom,
      conflicts: restoreResult.conflicts,
      warnings: restoreResult.warnings,
    });
    assert.equal(restoreResult.success, true);
    assert.equal(restoreResult.restoredFrom, checkpointId);
    assert.equal(restoreResult.targetSessionId, session.id);
    assert.deepEqual(restoreResult.state, headline().snapshot);
    // The session's newest checkpoint was the minimal one: its state was saved first.
    assert.ok(restoreResult.backupCheckpointId);
    const backup = await checkpointManager.getCheckpoint(restoreResult.backupCheckpointId);
    assert.deepEqual(backup?.snapshot, { sessions: [session.id], state: { quick: true } });
    assert.equal(backup?.sessionId, session.id);
    // {state: {quick}} and {state: {progress, ...}} share no path with two different values.
    assert.deepEqual(restoreResult.conflicts, []);
    assert.deepEqual(restoreResult.warnings, []);
  });

  test('restore with conflict resolution: a custom resolver is refused over NATS', async () => {
    const restoreOptions = {
      conflictResolution: {
        strategy: 'merge' as const, // merge, overwrite, keep-original
        customResolver: (current: unknown, checkpoint: unknown) => {
          // Custom logic for resolving conflicts
          return checkpoint; // Always prefer checkpoint state
        },
      },
      validation: {
        validateIntegrity: true,
        validateChecksum: true,
        validateSchema: true,
      },
      rollbackOnError: true,
      notify: true,
    };

    await assert.rejects(
      checkpointManager.restoreCheckpoint(checkpointId, restoreOptions),
      (error: unknown) => error instanceof InvalidRequestError && /customResolver/.test(error.message),
    );
    // The same options with the strategy alone (this resolver's choice is what 'merge' does).
    const { customResolver: _, ...resolution } = restoreOptions.conflictResolution;
    const result = await checkpointManager.restoreCheckpoint(checkpointId, {
      ...restoreOptions,
      conflictResolution: resolution,
      currentState: { sessions: [session.id], state: { progress: 10, extra: 'kept' } },
    });
    assert.equal(result.success, true);
    const state = result.state as { state: Record<string, unknown> };
    assert.equal(state.state.progress, 75); // the checkpoint wins a conflict
    assert.equal(state.state.extra, 'kept'); // a key on one side only is taken
    assert.deepEqual(result.conflicts, [
      { path: '/state/progress', current: 10, checkpoint: 75, resolution: 'checkpoint' },
    ]);
  });

  test('restore strategies: keep-original, overwrite, dry run', async () => {
    const currentState = { sessions: [session.id], state: { progress: 10, extra: 'kept' } };
    const keep = await checkpointManager.restoreCheckpoint(checkpointId, {
      conflictResolution: { strategy: 'keep-original' },
      currentState,
      dryRun: true,
    });
    const state = keep.state as { state: Record<string, unknown> };
    assert.equal(state.state.progress, 10);
    assert.deepEqual(state.state.completed, [1, 2, 3, 4, 5]);
    assert.deepEqual(keep.conflicts.map((c) => [c.path, c.resolution]), [['/state/progress', 'current']]);
    assert.equal(keep.eventSeq, null);

    const overwrite = await checkpointManager.restoreCheckpoint(checkpointId, {
      mergeStrategy: 'overwrite',
      currentState,
      notify: false,
    });
    assert.deepEqual(overwrite.state, headline().snapshot);
    assert.ok(overwrite.eventSeq !== null && overwrite.eventSeq > 0);

    // Into another session: the restore is that session's event, and its state from now on.
    const elsewhere = await checkpointManager.restoreCheckpoint(checkpointId, {
      targetSessionId: 'session-target',
      preserveCurrentState: true,
      validation: { validateChecksum: true, validateSchema: true },
    });
    assert.equal(elsewhere.targetSessionId, 'session-target');
    assert.equal(elsewhere.backupCheckpointId, null); // a new session has no state to save
    const events = await checkpointManager.history({ sessionId: 'session-target' });
    assert.deepEqual(events.events.map((e) => [e.type, e.seq]), [['checkpoint.restored', elsewhere.eventSeq]]);
    const again = await checkpointManager.restoreCheckpoint(checkpointId, {
      targetSessionId: 'session-target',
      mergeStrategy: 'merge',
      dryRun: true,
    });
    assert.deepEqual(again.conflicts, []); // the session now holds the checkpoint's state
  });

  test('delete checkpoint', async () => {
    const victim = await checkpointManager.create({
      name: 'to-delete',
      sessionId: 'session-delete',
      snapshot: { state: {} },
      branches: [],
    });
    const deleted = await checkpointManager.deleteCheckpoint(victim.id);

    assert.equal(deleted, true);
    assert.equal(await checkpointManager.getCheckpoint(victim.id), null);
    assert.equal(await checkpointManager.deleteCheckpoint(victim.id), false);
  });

  test('delete expired checkpoints', async () => {
    await checkpointManager.create({
      name: 'expired',
      sessionId: 'session-expiry',
      snapshot: { state: {} },
      branches: [],
      retentionExpiresAt: new Date(Date.now() - 1000),
    });
    // Clean up expired checkpoints
    const deletedCount = await checkpointManager.deleteExpiredCheckpoints();

    console.log(`Cleaned up ${deletedCount} expired checkpoints`);
    assert.equal(deletedCount, 1);
    assert.equal((await checkpointManager.getCheckpointsBySession('session-expiry')).length, 0);
  });

  test('create checkpoint chain', async () => {
    await checkpointManager.create({
      id: 'base-123',
      name: 'base',
      sessionId: 'session-chain',
      snapshot: { step: 0 },
      branches: ['main'],
    });

    async function createCheckpointChain(
      baseCheckpoint: Checkpoint,
      checkpoints: CreateCheckpointInput[],
    ): Promise<Checkpoint[]> {
      const chain: Checkpoint[] = [];

      for (const cpConfig of checkpoints) {
        // Create child checkpoint
        const checkpoint = await checkpointManager.create({
          ...cpConfig,
          restoredFrom: baseCheckpoint.id,
          metadata: {
            ...cpConfig.metadata,
            parentCheckpoint: baseCheckpoint.id,
            chainDepth: chain.length + 1,
          },
        });

        chain.push(checkpoint);
        baseCheckpoint = checkpoint;
      }

      return chain;
    }

    // Usage
    const baseCheckpoint = await checkpointManager.getCheckpoint('base-123');
    assert.ok(baseCheckpoint);
    // The original's configs leave out sessionId and branches, which every create requires.
    const chain = await createCheckpointChain(baseCheckpoint, [
      {
        name: 'checkpoint-1',
        snapshot: { step: 1 },
        metadata: { feature: 'feature-1' },
        sessionId: 'session-chain',
        branches: ['main'],
      },
      {
        name: 'checkpoint-2',
        snapshot: { step: 2 },
        metadata: { feature: 'feature-2' },
        sessionId: 'session-chain',
        branches: ['main'],
      },
    ]);
    assert.deepEqual(chain.map((c) => c.restoredFrom), ['base-123', chain[0]!.id]);
    assert.deepEqual(chain.map((c) => c.metadata.chainDepth), [1, 2]);

    const lineage = await checkpointManager.getLineage(chain[1]!.id);
    assert.deepEqual(lineage.ancestors.map((c) => c.id), [chain[0]!.id, 'base-123']);
    const down = await checkpointManager.getLineage('base-123');
    assert.deepEqual(down.descendants.map((c) => c.id), [chain[0]!.id, chain[1]!.id]);

    const diff = await checkpointManager.diffCheckpoints('base-123', chain[1]!.id);
    assert.deepEqual(diff.changes, [{ path: '/step', op: 'replace', before: 0, after: 2 }]);
  });
});

describe('the complete example', () => {
  test('runs as printed, with the manager made by the one changed line', async (t) => {
    const log = t.mock.method(console, 'log', () => undefined);
    const errors = t.mock.method(console, 'error', () => undefined);
    // The example's other SDK object, not part of checkpointd: a session is an id here.
    const sessionManager = {
      createSession: async (options: { type: string; name: string; workspace: string }) => ({
        id: 'session-complete',
        ...options,
      }),
    };

    async function checkpointManagementExample() {
      // The one changed line (the original: new CheckpointManager({ databasePath, ... })).
      const checkpointManager = new CheckpointManager({ servers: daemon.url });

      try {
        // Create session for example
        const session = await sessionManager.createSession({
          type: 'director',
          name: 'checkpoint-example',
          workspace: '/workspace/example',
        });

        // Create regular checkpoints
        const milestones: {
          name: string;
          description: string;
          snapshot: Record<string, unknown>;
          priority?: CheckpointPriority;
          tags?: string[];
        }[] = [
          {
            name: 'start',
            description: 'Initial state',
            snapshot: {
              progress: 0,
              completed: [],
              config: { started: true },
            },
          },
          {
            name: 'quarterly',
            description: 'Q1 milestones reached',
            snapshot: {
              progress: 25,
              completed: [1, 2, 3],
              config: { quarterly: true },
            },
            priority: CheckpointPriority.NORMAL,
          },
          {
            name: 'milestone-v1.0',
            description: 'Version 1.0 release',
            snapshot: {
              progress: 100,
              completed: [1, 2, 3, 4, 5, 6],
              config: {
                version: '1.0.0',
                released: true,
                features: ['auth', 'dashboard', 'api'],
              },
            },
            priority: CheckpointPriority.HIGH,
            tags: ['release', 'stable', 'production'],
          },
        ];

        const createdCheckpoints: Checkpoint[] = [];

        for (const milestone of milestones) {
          const checkpoint = await checkpointManager.create({
            name: milestone.name,
            sessionId: session.id,
            timestamp: new Date(),
            snapshot: milestone.snapshot,
            branches: ['main'],
            metadata: {
              feature: 'version-release',
              priority: milestone.priority || CheckpointPriority.NORMAL,
              author: 'release-manager',
              description: milestone.description,
              tags: milestone.tags || ['checkpoint'],
            },
          });

          createdCheckpoints.push(checkpoint);
          console.log(`✅ Created checkpoint: ${checkpoint.name}`);
        }

        // Search for checkpoints
        const searchResults = await checkpointManager.searchCheckpoints('milestone');
        console.log(`🔍 Found ${searchResults.length} milestone checkpoints`);

        // Get checkpoint statistics
        const stats = await checkpointManager.getCheckpointStats();
        console.log('📊 Statistics:', {
          total: stats.totalCheckpoints,
          totalSize: `${(stats.totalSize / 1024 / 1024).toFixed(2)} MB`,
          averageSize: `${(stats.averageSize / 1024).toFixed(2)} KB`,
        });

        // Restore from milestone checkpoint
        const milestoneCheckpoint = createdCheckpoints.find((cp) => cp.name === 'milestone-v1.0');
        if (milestoneCheckpoint) {
          console.log('🔄 Restoring from milestone checkpoint...');

          const restoreResult = await checkpointManager.restoreCheckpoint(milestoneCheckpoint.id, {
            targetSessionId: session.id,
            preserveCurrentState: false,
            mergeStrategy: 'overwrite',
          });

          console.log('Restore result:', {
            success: restoreResult.success,
            conflicts: restoreResult.conflicts.length,
            warnings: restoreResult.warnings.length,
          });
        }

        // Cleanup old checkpoints (keep only recent ones)
        const oldCheckpoints = await checkpointManager.getCheckpointsBySession(session.id, {
          where: 'timestamp < ?',
          params: [new Date(Date.now() - 7 * 24 * 60 * 60 * 1000)], // older than 7 days
        });

        for (const checkpoint of oldCheckpoints) {
          if (checkpoint.name !== 'milestone-v1.0') {
            // Keep the latest milestone
            await checkpointManager.deleteCheckpoint(checkpoint.id);
            console.log(`🗑️ Deleted old checkpoint: ${checkpoint.name}`);
          }
        }

        // Final statistics
        const finalStats = await checkpointManager.getCheckpointStats();
        console.log('\n🎯 Final checkpoint status:');
        console.log(`Total checkpoints: ${finalStats.totalCheckpoints}`);
        console.log(`Total storage: ${(finalStats.totalSize / 1024 / 1024).toFixed(2)} MB`);
      } catch (error) {
        console.error('Checkpoint management error:', error);
      } finally {
        await checkpointManager.close();
      }
    }

    await checkpointManagementExample().catch(console.error);

    assert.deepEqual(errors.mock.calls.map((call) => call.arguments), []);
    const printed = log.mock.calls.map((call) => call.arguments);
    assert.deepEqual(printed.slice(0, 3), [
      ['✅ Created checkpoint: start'],
      ['✅ Created checkpoint: quarterly'],
      ['✅ Created checkpoint: milestone-v1.0'],
    ]);
    assert.ok(printed.some((args) => /^🔍 Found [1-9]\d* milestone checkpoints$/.test(String(args[0]))));
    // The session's state is the milestone's own (its newest checkpoint): nothing conflicts.
    const restored = printed.find((args) => args[0] === 'Restore result:');
    assert.ok(restored, JSON.stringify(printed));
    assert.deepEqual({ ...(restored[1] as object), warnings: 0 }, { success: true, conflicts: 0, warnings: 0 });
    assert.ok(!printed.some((args) => String(args[0]).startsWith('🗑️')));
  });
});
