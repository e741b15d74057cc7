// The drain and hold scripts, run for real under dash and busybox sh against
// real sockets in a fresh network namespace (needs root, as CI has).

import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { drainScript, proxyHoldScript } from '../../src/core/hooks.ts';

const LAB = fileURLToPath(new URL('../support/socket-lab.ts', import.meta.url));
const INSTALL = fileURLToPath(new URL('../../scripts/install-debian-packages.sh', import.meta.url));
const SHELLS: Record<string, string[]> = { dash: ['dash'], 'busybox sh': ['busybox', 'sh'] };

interface Connection {
  uid?: number;
  closeAfterMs?: number;
  loopback?: boolean;
  captured?: boolean;
  chattyMs?: number;
  keepAliveMs?: number;
}

interface LabRun {
  elapsedMs: number;
  exitCode: number;
  /** The pod's /proc/net/tcp as the hook started. */
  table: string;
}

function runScript(shell: string[], script: string, connections: Connection[]): LabRun {
  const result = spawnSync(
    'unshare',
    ['--net', process.execPath, LAB, JSON.stringify({ shell, script, connections })],
    {
      encoding: 'utf8',
      timeout: 60_000,
    },
  );
  assert.equal(result.status, 0, `socket lab failed: ${result.stderr}`);
  const last = result.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as LabRun;
}

before(() => {
  execFileSync('bash', [INSTALL], { stdio: 'inherit' });
  const probe = spawnSync('unshare', ['--net', 'true']);
  assert.equal(
    probe.status,
    0,
    `these tests need to create network namespaces (root): ${probe.stderr?.toString()}`,
  );
});

for (const [name, shell] of Object.entries(SHELLS)) {
  describe(`drain script under ${name}`, () => {
    it('returns right after the delay when nothing is connected', () => {
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 20), []);
      assert.equal(exitCode, 0);
      assert.ok(elapsedMs >= 1000 && elapsedMs < 5000, `took ${elapsedMs} ms with a 20 s timeout`);
    });

    it('waits while an inbound connection is held, and ends when it closes', () => {
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 20), [
        { closeAfterMs: 3500 },
      ]);
      assert.equal(exitCode, 0);
      assert.ok(
        elapsedMs >= 3500 && elapsedMs < 9000,
        `took ${elapsedMs} ms; the connection closed at 3.5 s`,
      );
    });

    it('ignores connections from loopback peers (the pod’s own containers, e.g. a sidecar’s pool)', () => {
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 20), [{ loopback: true }]);
      assert.equal(exitCode, 0);
      assert.ok(
        elapsedMs >= 1000 && elapsedMs < 5000,
        `took ${elapsedMs} ms with a loopback connection held`,
      );
    });

    it('gives up at the drain timeout when the connection never closes', () => {
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 2), [{}]);
      assert.equal(exitCode, 0);
      assert.ok(elapsedMs >= 3000 && elapsedMs < 9000, `took ${elapsedMs} ms; delay 1 + timeout 2`);
    });

    it('with a quiet period, ends once an open connection has been silent that long', () => {
      // A load balancer's pooled keep-alive connection: open, idle, never closed by it.
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 20, 2), [{}]);
      assert.equal(exitCode, 0);
      assert.ok(
        elapsedMs >= 3000 && elapsedMs < 8000,
        `took ${elapsedMs} ms; delay 1 + 2 quiet seconds, timeout 20`,
      );
    });

    it('with a quiet period, is not held by pooled connections closed a few at a time', () => {
      // As HAProxy purges an idle pool: a close every 1.5 s, more often than the quiet period.
      const closes = [1500, 3000, 4500, 6000, 7500, 9000].map((ms) => ({ closeAfterMs: ms }));
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 20, 2), closes);
      assert.equal(exitCode, 0);
      assert.ok(
        elapsedMs >= 3000 && elapsedMs < 7000,
        `took ${elapsedMs} ms; delay 1 + 2 quiet seconds, the last close at 9 s`,
      );
    });

    it('with a quiet period, is not held by probes the pod itself sends over idle connections', () => {
      // The pool between a sidecar and its app, probed every second by TCP keepalive.
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 20, 2), [
        {},
        { keepAliveMs: 1000, loopback: true },
      ]);
      assert.equal(exitCode, 0);
      assert.ok(
        elapsedMs >= 3000 && elapsedMs < 7000,
        `took ${elapsedMs} ms; delay 1 + 2 quiet seconds, timeout 20`,
      );
    });

    it('with a quiet period, counts keepalive probes from outside the pod as traffic (a known limit)', () => {
      // A Node.js agent in another pod probes its pooled connection every
      // second; the pod's counters see a segment in and one out, which
      // cannot be told from a small request. Drain then ends at its timeout.
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 5, 2), [
        { keepAliveMs: 1000 },
      ]);
      assert.equal(exitCode, 0);
      assert.ok(
        elapsedMs >= 6000 && elapsedMs < 10_000,
        `took ${elapsedMs} ms; delay 1 + timeout 5`,
      );
    });

    it('ignores the app’s own pooled outbound connections under Istio’s outbound capture', () => {
      // The app's connection to an upstream, redirected to the proxy's 15001:
      // the proxy's end is ESTABLISHED on a listening port, its peer the pod's own IP.
      const run = runScript(shell, drainScript(1, 20), [{ captured: true }, { captured: true }]);
      const captured = run.table
        .split('\n')
        .map((line) => line.trim().split(/\s+/))
        .filter(([, local, , state]) => local === '0100007F:3A99' && state === '01')
        .map(([, , remote]) => remote!.split(':')[0]);
      // 10.213.0.1, as /proc/net/tcp writes it (little-endian hex).
      assert.deepEqual(captured, ['0100D50A', '0100D50A'], run.table);
      assert.equal(run.exitCode, 0);
      assert.ok(run.elapsedMs >= 1000 && run.elapsedMs < 5000, `took ${run.elapsedMs} ms`);
    });

    it('still waits for an inbound connection beside captured outbound ones', () => {
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 20), [
        { captured: true },
        { closeAfterMs: 3500 },
      ]);
      assert.equal(exitCode, 0);
      assert.ok(elapsedMs >= 3500 && elapsedMs < 9000, `took ${elapsedMs} ms; closed at 3.5 s`);
    });

    it('with a quiet period, counts traffic as traffic even while connections close', () => {
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 20, 2), [
        { chattyMs: 4500 },
        { closeAfterMs: 1500 },
        { closeAfterMs: 3000 },
      ]);
      assert.equal(exitCode, 0);
      assert.ok(
        elapsedMs >= 6000 && elapsedMs < 12_000,
        `took ${elapsedMs} ms; traffic until 4.5 s, then 2 quiet seconds`,
      );
    });

    it('with a quiet period, keeps waiting while traffic flows', () => {
      const { elapsedMs, exitCode } = runScript(shell, drainScript(1, 20, 2), [{ chattyMs: 4500 }]);
      assert.equal(exitCode, 0);
      assert.ok(
        elapsedMs >= 6000 && elapsedMs < 12_000,
        `took ${elapsedMs} ms; traffic until 4.5 s, then 2 quiet seconds`,
      );
    });
  });

  describe(`proxy hold script under ${name}`, () => {
    it('ignores connections owned by the proxy uid', () => {
      const { elapsedMs } = runScript(shell, proxyHoldScript(1, 20, 1337), [{ uid: 1337 }]);
      assert.ok(elapsedMs >= 1000 && elapsedMs < 5000, `took ${elapsedMs} ms`);
    });

    it('holds while the app (another uid) has a connection', () => {
      const { elapsedMs } = runScript(shell, proxyHoldScript(1, 20, 1337), [
        { uid: 1337 },
        { uid: 1000, closeAfterMs: 3500 },
      ]);
      assert.ok(
        elapsedMs >= 3500 && elapsedMs < 9000,
        `took ${elapsedMs} ms; the app connection closed at 3.5 s`,
      );
    });

    it('never beyond its maximum', () => {
      const { elapsedMs } = runScript(shell, proxyHoldScript(1, 3, 1337), [{ uid: 1000 }]);
      assert.ok(elapsedMs >= 3000 && elapsedMs < 9000, `took ${elapsedMs} ms; max 3 s`);
    });
  });
}
