/**
 * The TypeScript blocks of the repository's README and of this package's type-check (strict)
 * and run as written against a real daemon; the one difference from a reader's run is the
 * daemon's address. They import 'checkpointd', which resolves to this package (its own name,
 * through package.json's exports).
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';

import ts from 'typescript';

import { DEADLINE, Daemon, PACKAGE_ROOT } from './daemon.js';

const READMES = [resolve(PACKAGE_ROOT, '..', '..', 'README.md'), join(PACKAGE_ROOT, 'README.md')];
const DEFAULT_URL = 'nats://127.0.0.1:4222';

/** The ```ts blocks of a Markdown text. */
function tsBlocks(text: string): string[] {
  return [...text.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => match[1]!);
}

let daemon: Daemon;

before(async () => {
  daemon = await Daemon.start();
});

after(async () => {
  await daemon?.stop();
});

test('the READMEs have TypeScript blocks, and each type-checks and runs', () => {
  const blocks = READMES.flatMap((readme) =>
    tsBlocks(readFileSync(readme, 'utf8')).map((code, index) => ({ where: `${readme} block ${index}`, code })),
  );
  assert.ok(blocks.length >= READMES.length, 'a README without a ```ts block');
  // Inside the package, so that 'checkpointd' is this package.
  const sources = blocks.map((_, index) => join(PACKAGE_ROOT, 'dist', `readme-block-${index}.mts`));
  const scripts = blocks.map((_, index) => join(PACKAGE_ROOT, 'dist', `readme-block-${index}.mjs`));
  try {
    blocks.forEach(({ code }, index) => writeFileSync(sources[index]!, code));
    const program = ts.createProgram(sources, {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      types: ['node'],
      skipLibCheck: true,
    });
    const problems = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file === undefined ? '' : `${blocks[sources.indexOf(d.file.fileName)]?.where}: `;
      return where + ts.flattenDiagnosticMessageText(d.messageText, '\n');
    });
    assert.deepEqual(problems, [], 'a README block does not type-check');

    blocks.forEach(({ where, code }, index) => {
      const js = ts.transpileModule(code.replaceAll(DEFAULT_URL, daemon.url), {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
      }).outputText;
      writeFileSync(scripts[index]!, js);
      const done = spawnSync(process.execPath, [scripts[index]!], { encoding: 'utf8', timeout: DEADLINE });
      const report = `${where} exited ${done.status}\n${done.stdout}\n${done.stderr}`;
      assert.equal(done.status, 0, report);
      assert.equal(done.stderr, '', report);
      if (code.includes('restoreResult.conflicts.length')) {
        assert.match(done.stdout, /^1 of 1: \d{4}-\d\d-\d\dT[\d:.]+Z$/m, report);
        assert.match(done.stdout, /^restored: true 0$/m, report);
      }
    });
  } finally {
    for (const file of [...sources, ...scripts]) {
      rmSync(file, { force: true });
    }
  }
});
