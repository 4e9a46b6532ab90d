/**
 * A real `checkpointd serve` for the tests: its embedded nats-server on a free port, its state
 * in a fresh temporary directory, stopped (SIGTERM) and removed afterwards.
 *
 * The Python that runs it is `$CHECKPOINTD_PYTHON`, else the repository's `.venv/bin/python`.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { CheckpointManager, type CheckpointManagerOptions } from '../src/index.js';

/** The package's root (this file runs as dist/test/daemon.js). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PYTHON = process.env.CHECKPOINTD_PYTHON ?? resolve(PACKAGE_ROOT, '..', '..', '.venv', 'bin', 'python');
/** How long any one wait may take: generous, the machine is shared. */
export const DEADLINE = 60_000;
/** The test daemon's encryption key (the original examples ask for `encrypted: true`). */
const KEY = '5'.repeat(64);

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address === null || typeof address === 'string') {
          reject(new Error('no port'));
        } else {
          resolvePort(address.port);
        }
      });
    });
  });
}

export class Daemon {
  private output = '';
  private exited: Promise<number | null>;

  private constructor(
    readonly url: string,
    readonly directory: string,
    private readonly process: ChildProcess,
    private readonly auth: CheckpointManagerOptions,
  ) {
    process.stdout?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    process.stderr?.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.exited = new Promise((done) => process.on('exit', (code) => done(code)));
  }

  /**
   * Start a daemon and return once its endpoints answer. `settings` are extra top-level TOML
   * lines, `nats` extra lines of its `[nats]` table, `auth` how clients connect to it.
   */
  static async start(
    settings: string[] = [],
    nats: string[] = [],
    auth: CheckpointManagerOptions = {},
  ): Promise<Daemon> {
    const directory = mkdtempSync(join(tmpdir(), 'checkpointd-ts-'));
    const port = await freePort();
    const config = join(directory, 'checkpointd.toml');
    writeFileSync(
      config,
      [
        `state_directory = ${JSON.stringify(join(directory, 'state'))}`,
        `encryption_key = "${KEY}"`,
        ...settings,
        '[nats]',
        'subject_prefix = "checkpoint"',
        `embedded_port = ${port}`,
        ...nats,
        '',
      ].join('\n'),
    );
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([name]) => !name.startsWith('CHECKPOINTD_') && name !== 'NOTIFY_SOCKET'),
    );
    const child = spawn(PYTHON, ['-m', 'checkpointd', 'serve', '--config', config], {
      cwd: directory,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const daemon = new Daemon(`nats://127.0.0.1:${port}`, directory, child, auth);
    await daemon.waitReady();
    return daemon;
  }

  /** A connected manager (JSON or msgpack), closed by the caller. */
  manager(options: CheckpointManagerOptions = {}): Promise<CheckpointManager> {
    return CheckpointManager.connect({ servers: this.url, ...this.auth, ...options });
  }

  private async waitReady(): Promise<void> {
    const deadline = Date.now() + DEADLINE;
    let gone = false;
    void this.exited.then(() => (gone = true));
    let last: unknown;
    while (Date.now() < deadline) {
      if (gone) {
        await this.stop();
        throw new Error(`checkpointd serve exited before it was ready:\n${this.output}`);
      }
      try {
        const manager = await this.manager({ connectTimeout: 2_000, retries: 0 });
        try {
          await manager.health();
          return;
        } finally {
          await manager.close();
        }
      } catch (error) {
        last = error;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    await this.stop();
    throw new Error(`checkpointd serve was not ready within ${DEADLINE} ms (${String(last)}):\n${this.output}`);
  }

  /** SIGTERM, wait for the exit, remove the state directory. */
  async stop(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill('SIGTERM');
      const timer = setTimeout(() => this.process.kill('SIGKILL'), DEADLINE);
      await this.exited;
      clearTimeout(timer);
    }
    rmSync(this.directory, { recursive: true, force: true });
  }
}
