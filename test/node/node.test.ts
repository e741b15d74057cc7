// The real node harness (test/support/node): a kubelet, containerd, runc,
// kube-proxy and a control plane in a network namespace of the test's own.
// Pods run from the test image; a Deployment is reached through its
// ClusterIP from inside a pod; the kubelet's own termination sequence is
// measured from inside a container; stopping leaves nothing behind, and a
// run killed with SIGKILL does not keep the next one from starting.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { keepTmp, waitFor } from '../support/cluster/processes.ts';
import { startNode, type RealNode } from '../support/node/node.ts';
import { runLeftovers, runState, type RunState } from '../support/node/run-state.ts';
import { appPod, deployment, service, sleeperPod } from './manifests.ts';

const NAMESPACE = 'smoke';

describe('a real node', () => {
  let node: RealNode | undefined;
  const started = Date.now();

  before(async () => {
    node = await startNode();
    const v = node.versions;
    console.log(
      `node Ready in ${((Date.now() - started) / 1000).toFixed(1)} s ` +
        `(images ${node.images.testApp.cached ? 'cached' : 'built'}): ` +
        `kubelet ${v.kubelets[node.nodes[0]!.name]}, kube-proxy ${v.kubeProxy}, ` +
        `kube-apiserver ${v.kubeApiserver}, ${v.containerd}, ${v.runc}`,
    );
    await node.kubectl('create', 'namespace', NAMESPACE);
  });

  after(async () => {
    if (node === undefined) return;
    const run = node.run;
    await node.stop();
    // Also checked by a test below; here so that a failed test leaves nothing.
    assertNothingLeft(run);
  });

  const onFailure = async (fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      if (node) console.error(node.logTails(30));
      throw err;
    }
  };

  it('runs a pod from the test image', () =>
    onFailure(async () => {
      const n = node!;
      const begun = Date.now();
      await n.apply(appPod(n, NAMESPACE, 'solo'));
      await n.kubectl(
        'wait',
        '-n',
        NAMESPACE,
        '--for=condition=Ready',
        'pod/solo',
        '--timeout=60s',
      );
      console.log(`pod Ready ${((Date.now() - begun) / 1000).toFixed(1)} s after create`);
      const out = await n.kubectl('exec', '-n', NAMESPACE, 'solo', '--', 'node', '--version');
      assert.match(out, /^v24\./);
    }));

  it('serves a 2-replica Deployment through its ClusterIP, seen from inside a pod', () =>
    onFailure(async () => {
      const n = node!;
      const begun = Date.now();
      await n.apply(
        deployment(n, NAMESPACE, 'web', 2),
        service(NAMESPACE, 'web'),
        sleeperPod(n, NAMESPACE, 'client'),
      );
      await n.kubectl('rollout', 'status', '-n', NAMESPACE, 'deployment/web', '--timeout=60s');
      await n.kubectl(
        'wait',
        '-n',
        NAMESPACE,
        '--for=condition=Ready',
        'pod/client',
        '--timeout=60s',
      );
      const clusterIP = (
        await n.kubectl(
          'get',
          'service',
          '-n',
          NAMESPACE,
          'web',
          '-o',
          'jsonpath={.spec.clusterIP}',
        )
      ).trim();
      assert.match(clusterIP, /^10\.96\./);
      // Until kube-proxy has the endpoints, and both replicas have answered.
      const seen = new Set<string>();
      await waitFor('both replicas to answer through the ClusterIP', 30_000, async () => {
        const result = await n.kubectlRun([
          'exec',
          '-n',
          NAMESPACE,
          'client',
          '--',
          'node',
          '/app/http-get.ts',
          `http://${clusterIP}/`,
          '10',
        ]);
        for (const line of result.stdout.split('\n')) {
          const pod = /"pod":"([^"]+)"/.exec(line)?.[1];
          if (pod !== undefined) seen.add(pod);
        }
        return seen.size === 2;
      });
      console.log(
        `Deployment rolled out and both replicas answered through ${clusterIP} ` +
          `${((Date.now() - begun) / 1000).toFixed(1)} s after create`,
      );
    }));

  it('sends SIGTERM when the preStop sleep (3 s) has ended', () =>
    onFailure(async () => {
      const n = node!;
      const records = path.join(n.dir, 'records');
      fs.mkdirSync(records, { recursive: true });
      await n.apply(
        appPod(n, NAMESPACE, 'stopper', {
          preStopSleepSeconds: 3,
          terminationGracePeriodSeconds: 10,
          recordDir: records,
        }),
      );
      await n.kubectl(
        'wait',
        '-n',
        NAMESPACE,
        '--for=condition=Ready',
        'pod/stopper',
        '--timeout=60s',
      );
      // The kubelet's pod worker waits for a PLEG relist (every 1 s) newer
      // than its last sync: a delete right after the pod became Ready starts
      // its termination up to ~2 s late. Measure a settled pod.
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      const recordFile = path.join(records, 'stopper.jsonl');
      const deletedAt = Date.now();
      await n.controlPlane.core.deleteNamespacedPod({ namespace: NAMESPACE, name: 'stopper' });
      let sigtermAt: number | undefined;
      await waitFor('SIGTERM in the container', 20_000, async () => {
        const lines = fs.existsSync(recordFile)
          ? fs.readFileSync(recordFile, 'utf8').trim().split('\n')
          : [];
        const event = lines
          .map((line) => JSON.parse(line) as { event: string; t: number })
          .find((e) => e.event === 'SIGTERM');
        sigtermAt = event?.t;
        return sigtermAt !== undefined;
      });
      const seconds = (sigtermAt! - deletedAt) / 1000;
      console.log(
        `preStop sleep 3 s, grace 10 s: SIGTERM ${seconds.toFixed(2)} s after the delete`,
      );
      assert.ok(Math.abs(seconds - 3) <= 1, `SIGTERM at ${seconds} s, expected 3 s ± 1 s`);
    }));
});

describe('stopping a node and starting after a killed run', () => {
  it('removes every trace of a run killed with SIGKILL when the next node starts', async () => {
    // A child process starts a node with a running pod, then is SIGKILLed:
    // no exit hook runs, and its shims, containers and mounts stay.
    const child = spawn(
      process.execPath,
      [fileURLToPath(new URL('./start-node-child.ts', import.meta.url))],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    let killed: RunState | undefined;
    try {
      await waitFor('the child to start its node', 180_000, async () => {
        const id = /^run (\S+)$/m.exec(out)?.[1];
        if (child.exitCode !== null)
          throw new Error(`the child exited (${child.exitCode}):\n${out}`);
        if (id !== undefined) killed = runState(id);
        return killed !== undefined;
      });
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    const stale = runLeftovers(killed!);
    assert.ok(stale.netns, 'the killed run left its network namespace');
    assert.ok(stale.mounts.length > 0, 'the killed run left mounts');
    assert.ok(stale.processes.length > 0, 'the killed run left processes (shims, containers)');

    const begun = Date.now();
    const node = await startNode();
    try {
      console.log(
        `node Ready ${((Date.now() - begun) / 1000).toFixed(1)} s after a killed run ` +
          `(${stale.processes.length} processes and ${stale.mounts.length} mounts removed)`,
      );
      assertNothingLeft(killed!);
      await node.kubectl('create', 'namespace', NAMESPACE);
      await node.apply(sleeperPod(node, NAMESPACE, 'after'));
      await node.kubectl(
        'wait',
        '-n',
        NAMESPACE,
        '--for=condition=Ready',
        'pod/after',
        '--timeout=60s',
      );
    } finally {
      const run = node.run;
      await node.stop();
      assertNothingLeft(run);
    }
  });
});

function assertNothingLeft(run: RunState): void {
  const left = runLeftovers(run);
  assert.deepEqual(
    left,
    { netns: false, processes: [], mounts: [], cgroups: [], dir: keepTmp },
    `run ${run.id} left traces`,
  );
}
