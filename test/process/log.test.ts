// The serve log's batching: lines reach standard output promptly while the
// process runs, and none is lost when it exits straight after logging.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const LOG = fileURLToPath(new URL('../../src/webhook/log.ts', import.meta.url));

function script(body: string): string[] {
  return [
    '--input-type=module',
    '-e',
    `import { createLogger } from ${JSON.stringify(LOG)};\nconst logger = createLogger('info');\n${body}`,
  ];
}

describe('serve log', () => {
  it('writes every line, in order and intact, when the process exits right after logging', () => {
    // Some lines are multi-byte UTF-8, some longer than a whole batch.
    const extra = (i: number) => (i % 1000 === 7 ? 'x'.repeat(40_000) : i % 3 === 0 ? 'ü→😀' : '');
    const run = spawnSync(
      process.execPath,
      script(
        `const extra = ${extra.toString()};\n` +
          `for (let i = 0; i < 20000; i++) logger.info({ i, extra: extra(i) }, 'line');\n` +
          'process.exit(0);',
      ),
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
    );
    assert.equal(run.status, 0, run.stderr);
    const seen = run.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { i: number; extra: string });
    assert.equal(seen.length, 20000);
    assert.ok(
      seen.every((line, index) => line.i === index && line.extra === extra(index)),
      'in order and intact',
    );
  });

  it('writes a line within a moment while the process keeps running', async () => {
    const child = spawn(
      process.execPath,
      script(`logger.info('first');\nsetTimeout(() => {}, 10_000);`),
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      const started = Date.now();
      const line = await new Promise<string>((resolve) => {
        let text = '';
        child.stdout.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          if (text.includes('\n')) resolve(text);
        });
      });
      assert.equal((JSON.parse(line) as { msg: string }).msg, 'first');
      assert.ok(Date.now() - started < 5000);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
