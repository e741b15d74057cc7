// The termination lab on the real node (`npm run lab -- --quick`): rolling
// updates of an app that exits at once on SIGTERM, reached through its
// ClusterIP by a client pod with a new connection per request, once with no
// hook and once with the webhook's injected sleep. The two are compared in
// the same run, since the path's own noise is not zero (docs/lab.md). About
// a minute and a half with cached binaries and images.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

const LAB = fileURLToPath(new URL('../lab/run.ts', import.meta.url));

interface Row {
  name: string;
  kubelet: string;
  path: string;
  d_s: number | null;
  strategy: string;
  requests: number;
  failed: number;
  grace_seconds: number;
  injected_hooks: Record<string, string> | null;
  app_sigterm_seconds: number[];
}

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
  pid: number;
}

function runLab(args: string[], withoutCapabilities = false): Promise<Finished> {
  const argv = [process.execPath, LAB, ...args];
  // Root without capabilities, as in an unprivileged container.
  const [command, ...rest] = withoutCapabilities
    ? ['setpriv', '--bounding-set', '-all', '--inh-caps', '-all', '--', ...argv]
    : argv;
  const child = spawn(command!, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr, pid: child.pid! })),
  );
}

/** Network namespaces a node started by process `pid` would have made. */
function nodeNamespacesOf(pid: number): string[] {
  const names = fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns') : [];
  return names.filter((name) => name.startsWith(`prestop-${pid}-`));
}

describe('the termination lab on a real node', () => {
  it('refuses, with a clear message, when it cannot create network namespaces', async () => {
    const run = await runLab(['--quick'], true);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /cannot create network namespaces, so no node was started/);
    assert.deepEqual(nodeNamespacesOf(run.pid), []);
  });

  it(
    'quick mode: the injected sleep removes the failures a rollout has without a hook',
    { timeout: 240_000 },
    async () => {
      const started = Date.now();
      const run = await runLab(['--quick', '--json']);
      const seconds = (Date.now() - started) / 1000;
      assert.equal(run.code, 0, run.stderr.slice(-6000));
      console.log(`${run.stdout}(${seconds.toFixed(0)} s)`);
      const last = run.stdout.trim().split('\n').pop() ?? '';
      const rows = (JSON.parse(last) as { scenarios: Row[] }).scenarios;
      const none = rows.find((r) => r.strategy === 'none');
      const injected = rows.find((r) => r.strategy === 'injected sleep');
      assert.ok(none && injected, last);
      for (const row of [none, injected]) {
        assert.equal(row.kubelet, 'real');
        assert.equal(row.path, 'clusterip-fresh');
        assert.equal(row.d_s, null);
        assert.ok(row.requests >= 500, `${row.strategy}: only ${row.requests} requests`);
      }
      // What the webhook wrote, as the real kubelet ran it.
      assert.equal(none.injected_hooks, null);
      assert.deepEqual(injected.injected_hooks, { app: 'sleep-action' });
      assert.equal(injected.grace_seconds, 35);
      assert.ok(Math.max(...none.app_sigterm_seconds) < 2, JSON.stringify(none));
      assert.ok(Math.min(...injected.app_sigterm_seconds) >= 4.5, JSON.stringify(injected));
      // Against the baseline of the same run, not an exact zero: the path is noisy.
      assert.ok(none.failed >= 5, `without a hook only ${none.failed} failed`);
      assert.ok(
        injected.failed * 10 <= none.failed,
        `injected sleep: ${injected.failed} failed, none: ${none.failed}`,
      );
      assert.deepEqual(nodeNamespacesOf(run.pid), [], 'the node is gone');
    },
  );
});
