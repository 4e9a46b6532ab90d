// Creates from the TypeScript client against a running checkpointd: throughput and latency
// quantiles at each number of creates in flight. The workload is the Python benches' (about
// 1 KB JSON-like snapshots, 100 sessions, metadata with a feature, an author and a tag), so
// `python -m bench.bench_ts` can run it beside the Python CheckpointClient against one daemon.
//
//   npm run build && node bench/creates.mjs --servers nats://127.0.0.1:4222 [--seconds 4]
//       [--concurrency 1,64] [--encoding msgpack|json] [--json]
//
// One line per row: a table, or with --json one JSON object per line.

import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import { CheckpointManager } from '../dist/src/index.js';

const POOL = 4096;
const WARMUP = 256;

const { values } = parseArgs({
  options: {
    servers: { type: 'string', default: 'nats://127.0.0.1:4222' },
    prefix: { type: 'string', default: 'checkpoint' },
    seconds: { type: 'string', default: '4' },
    concurrency: { type: 'string', default: '1,64' },
    encoding: { type: 'string', default: 'msgpack' },
    json: { type: 'boolean', default: false },
  },
});

function snapshot(i) {
  return {
    sessions: [`s-${i % 100}`],
    state: {
      progress: i % 101,
      completed: Array.from({ length: i % 20 }, (_, j) => j),
      pending: Array.from({ length: 8 }, (_, j) => `task-${j}`),
      config: { environment: 'production', version: `1.${i}.0`, seed: i },
      resources: { memory: '2GB', cpu: '4 cores', disk: '50GB' },
      notes: randomBytes(300).toString('hex'),
    },
  };
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function row(manager, snapshots, concurrency, seconds) {
  let next = 0;
  const call = (i) =>
    manager.create({
      name: `cp-${i}`,
      sessionId: `s-${((i % 100) + 100) % 100}`,
      snapshot: snapshots[((i % POOL) + POOL) % POOL],
      branches: ['main'],
      metadata: { feature: `f${((i % 10) + 10) % 10}`, author: 'bench', tags: ['bench'] },
    });
  for (let i = 0; i < WARMUP; i++) {
    await call(-1 - i);
  }
  const latencies = [];
  const start = performance.now();
  const deadline = start + seconds * 1000;
  async function worker() {
    while (performance.now() < deadline) {
      const i = next++;
      const begin = performance.now();
      await call(i);
      latencies.push(performance.now() - begin);
    }
  }
  const cpuBefore = process.cpuUsage();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  latencies.sort((a, b) => a - b);
  return {
    client: 'typescript',
    encoding: values.encoding,
    concurrency,
    creates: latencies.length,
    seconds: elapsed,
    per_second: latencies.length / elapsed,
    p50_ms: quantile(latencies, 0.5),
    p99_ms: quantile(latencies, 0.99),
    cpu_us_per_create: (cpu.user + cpu.system) / latencies.length,
  };
}

const manager = await CheckpointManager.connect({
  servers: values.servers,
  prefix: values.prefix,
  encoding: values.encoding,
});
try {
  const snapshots = Array.from({ length: POOL }, (_, i) => snapshot(i));
  for (const concurrency of values.concurrency.split(',').map(Number)) {
    const result = await row(manager, snapshots, concurrency, Number(values.seconds));
    if (values.json) {
      console.log(JSON.stringify(result));
    } else {
      console.log(
        `typescript ${result.encoding} in-flight ${concurrency}: ${result.creates} creates, ` +
          `${result.per_second.toFixed(0)}/s, p50 ${result.p50_ms.toFixed(2)} ms, p99 ${result.p99_ms.toFixed(2)} ms`,
      );
    }
  }
} finally {
  await manager.close();
}
