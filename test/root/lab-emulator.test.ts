// The lab's emulator: a fast self-check of the lab's own logic (apps, proxy
// stand-in, load generator, HAProxy's retry rules, the kubelet emulator) in
// network namespaces, with no cluster (needs root, as CI has). It measures no
// Kubernetes: `npm run lab` runs on a real node, and test/node/lab.test.ts
// checks it. Here the emulator's quick mode runs one scenario with `none`
// and the planner's output, and the kubelet emulator is checked against the
// facts it reproduces.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { PodLike } from '../../src/core/types.ts';
import { UID } from '../lab/image.ts';
import { RunningPod, type ContainerLauncher, type Termination } from '../lab/emulator/kubelet.ts';
import { LabNetwork } from '../lab/emulator/network.ts';
import { plainPod } from '../lab/emulator/pods.ts';
import { cleanupSync, NS_PREFIX, pidsIn } from '../lab/emulator/processes.ts';

const LAB = fileURLToPath(new URL('../lab/emulator/run.ts', import.meta.url));
const APP = fileURLToPath(new URL('../lab/app.ts', import.meta.url));
const INSTALL = fileURLToPath(new URL('../../scripts/install-debian-packages.sh', import.meta.url));

interface Row {
  name: string;
  strategy: string;
  requests: number;
  failed: number;
  p99_ms: number;
  rollout_seconds: number;
}

interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
  pid: number;
}

function runLab(
  args: string[],
  options: { withoutCapabilities?: boolean; onStderr?: (text: string, pid: number) => void } = {},
): Promise<Finished> {
  const argv = [process.execPath, LAB, ...args];
  // Root without capabilities, as in an unprivileged container: it can read
  // the checkout wherever it is, but cannot create network namespaces.
  const [command, ...rest] = options.withoutCapabilities
    ? ['setpriv', '--bounding-set', '-all', '--inh-caps', '-all', '--', ...argv]
    : argv;
  const child = spawn(command!, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    options.onStderr?.(stderr, child.pid!);
  });
  return new Promise((resolve) =>
    child.on('close', (code) => resolve({ code, stdout, stderr, pid: child.pid! })),
  );
}

function labNamespacesOf(pid: number): string[] {
  const listed = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
  return listed
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name.startsWith(`${NS_PREFIX}${pid}-`));
}

/** Alive and not a zombie (a zombie has exited; only its parent can reap it). */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

before(() => {
  spawnSync('bash', [INSTALL, 'haproxy', 'net-tools'], { stdio: 'inherit' });
});

describe('termination lab emulator (a self-check of the lab, not of Kubernetes)', () => {
  it('refuses, with a clear message, when it cannot create network namespaces', async () => {
    const run = await runLab(['--quick'], { withoutCapabilities: true });
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /cannot create network namespaces/);
    assert.equal(labNamespacesOf(run.pid).length, 0);
  });

  it('quick mode: the emulated rollout drops requests without a hook and none with the injected sleep', async () => {
    const run = await runLab(['--quick', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const last = run.stdout.trim().split('\n').pop() ?? '';
    const rows = (JSON.parse(last) as { scenarios: Row[] }).scenarios;
    const none = rows.find((r) => r.strategy === 'none');
    const injected = rows.find((r) => r.strategy === 'injected sleep');
    assert.ok(none && injected, last);
    console.log(run.stdout);
    assert.ok(injected.requests >= 500, `only ${injected.requests} requests`);
    assert.equal(injected.failed, 0, `injected: ${injected.failed} of ${injected.requests} failed`);
    assert.ok(none.requests >= 500, `only ${none.requests} requests`);
    assert.ok(none.failed > 0, 'without a hook the rollout drops requests');
    assert.deepEqual(labNamespacesOf(run.pid), [], 'namespaces cleaned up');
  });

  it('cleans up its namespaces and processes when interrupted', async () => {
    let interrupted = false;
    let namespacesBefore = 0;
    let pidsBefore: number[] = [];
    const run = await runLab(['--quick'], {
      onStderr: (text, pid) => {
        if (interrupted || !text.includes('scenario abrupt')) return;
        interrupted = true;
        // Let the rollout get under way, then interrupt it.
        setTimeout(() => {
          const namespaces = labNamespacesOf(pid);
          namespacesBefore = namespaces.length;
          pidsBefore = namespaces.flatMap(pidsIn);
          process.kill(pid, 'SIGINT');
        }, 3000);
      },
    });
    assert.ok(interrupted, run.stderr);
    assert.ok(namespacesBefore > 0, 'the lab had made namespaces');
    assert.ok(pidsBefore.length > 0, 'processes ran in them');
    assert.equal(run.code, 130, run.stderr);
    assert.deepEqual(labNamespacesOf(run.pid), []);
    assert.deepEqual(pidsBefore.filter(isRunning), [], 'no process left running');
  });
});

describe('kubelet emulator', () => {
  const network = new LabNetwork('kubelet-test');
  // Every container runs the graceful app, each on a port of its own.
  const ports = new Map<string, number>();
  const launch: ContainerLauncher = (container, pod) => {
    if (!ports.has(container.name)) ports.set(container.name, 8080 + ports.size);
    const config = {
      name: pod.name,
      host: '0.0.0.0',
      port: ports.get(container.name),
      onSigterm: 'graceful',
      workMs: 1,
    };
    return [process.execPath, APP, JSON.stringify(config)];
  };
  let pods = 0;

  before(() => network.create());
  after(() => {
    network.destroy();
    cleanupSync();
  });

  async function terminate(spec: PodLike): Promise<Termination> {
    const pod = new RunningPod(spec, await network.addPod(`p${pods++}`), network);
    await pod.start(launch);
    return pod.terminate();
  }

  function at(t: Termination, container: string, what: string): number {
    const event = t.events.find((e) => e.container === container && e.what.startsWith(what));
    assert.ok(event, `${container} ${what} in ${JSON.stringify(t.events)}`);
    return event.atMs;
  }

  it('sends SIGTERM when a failing exec preStop returns, at once', async () => {
    const t = await terminate(
      plainPod(false, { preStop: { exec: { command: ['/no/such/binary'] } }, grace: 30 }),
    );
    assert.equal(t.hooks[0]?.end, 'failed');
    assert.ok(at(t, 'app', 'SIGTERM') < 1000, JSON.stringify(t.events));
  });

  it('cuts a preStop that outlives the grace period, then gives SIGTERM its 2 s', async () => {
    const spec = plainPod(false, {
      preStop: { exec: { command: ['/bin/sh', '-c', 'sleep 60'] } },
      grace: 2,
    });
    const t = await terminate(spec);
    const sigterm = at(t, 'app', 'SIGTERM');
    assert.equal(t.hooks[0]?.end, 'grace spent');
    assert.ok(sigterm >= 2000 && sigterm < 3000, `SIGTERM at ${sigterm} ms, grace 2 s`);
  });

  it('stops a native sidecar only after the main containers have exited', async () => {
    const spec = plainPod(false, { preStop: { sleep: { seconds: 1 } }, grace: 30 });
    spec.spec.initContainers = [
      { name: 'sidecar', restartPolicy: 'Always', securityContext: { runAsUser: UID.istioProxy } },
    ];
    const t = await terminate(spec);
    assert.ok(at(t, 'app', 'SIGTERM') >= 1000, JSON.stringify(t.events));
    assert.ok(at(t, 'sidecar', 'SIGTERM') >= at(t, 'app', 'exited'), JSON.stringify(t.events));
  });
});
