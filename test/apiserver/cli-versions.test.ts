// `inject` without --kube-version asks the current kubeconfig's cluster for
// its versions: a real API server (etcd + kube-apiserver, no kubelet) whose
// Node objects carry the kubelet versions, an admin and a ServiceAccount
// that may not list nodes.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { lookupClusterVersions } from '../../src/cluster/versions.ts';
import { createServiceAccountIdentity } from '../support/cluster/api.ts';
import { startControlPlane, type ControlPlane } from '../support/cluster/apiserver.ts';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

const DEPLOYMENT = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example/web:1
`;

function cli(args: string[], env: Record<string, string>, input: string) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

async function addNode(cp: ControlPlane, name: string, kubeletVersion: string) {
  await cp.core.createNode({
    body: {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name },
      status: { nodeInfo: { kubeletVersion } as never },
    },
  });
}

describe('inject asks the cluster for its versions', () => {
  let cp: ControlPlane;
  let minor: number;
  // Only the kubeconfig: nothing of the developer's own may leak in.
  const envFor = (kubeconfig: string) => ({ KUBECONFIG: kubeconfig, HOME: '/nonexistent' });

  before(async () => {
    cp = await startControlPlane();
    minor = Number(cp.minorVersion.split('.')[1]);
  });
  after(async () => {
    await cp?.stop();
  });

  it('with no nodes, knows the API server only and plans exec hooks', async () => {
    const { code, stdout, stderr } = await cli(
      ['inject', '-f', '-'],
      envFor(cp.kubeconfigPath),
      DEPLOYMENT,
    );
    assert.equal(code, 0, stderr);
    assert.match(
      stderr,
      new RegExp(
        `API server ${cp.minorVersion}, kubelet version unknown \\(the cluster has no nodes\\)`,
      ),
    );
    assert.equal(stderr.match(/^note:/gm)?.length, 1, 'said once');
    assert.match(stdout, /sleep 10/);
    assert.doesNotMatch(stdout, /seconds: 10/);
  });

  it('plans the sleep action when every kubelet has it, and exec hooks once one does not', async () => {
    await addNode(cp, 'new-1', `v1.${minor}.0`);
    await addNode(cp, 'new-2', 'v1.31.4-eks-1234abc');
    const both = await cli(['inject', '-f', '-'], envFor(cp.kubeconfigPath), DEPLOYMENT);
    assert.equal(both.code, 0, both.stderr);
    assert.match(
      both.stderr,
      new RegExp(`API server ${cp.minorVersion}, oldest kubelet 1\\.31\\n`),
    );
    assert.match(both.stdout, /sleep:\n\s+seconds: 10/);

    await addNode(cp, 'old', 'v1.29.15');
    const skewed = await cli(['inject', '-f', '-'], envFor(cp.kubeconfigPath), DEPLOYMENT);
    assert.equal(skewed.code, 0, skewed.stderr);
    assert.match(skewed.stderr, /oldest kubelet 1\.29\n/);
    assert.match(skewed.stdout, /- sleep 10/);
    assert.doesNotMatch(skewed.stdout, /seconds: 10/);

    const found = await lookupClusterVersions({ env: envFor(cp.kubeconfigPath) });
    assert.ok(found.found);
    assert.deepEqual(found.versions, {
      server: { major: 1, minor },
      oldestKubelet: { major: 1, minor: 29 },
    });
  });

  it('--kube-version wins and --offline skips the cluster', async () => {
    const named = await cli(
      ['inject', '-f', '-', '--kube-version', '1.33'],
      envFor(cp.kubeconfigPath),
      DEPLOYMENT,
    );
    assert.equal(named.code, 0, named.stderr);
    assert.equal(named.stderr, '', 'no lookup, nothing to say');
    assert.match(
      named.stdout,
      /seconds: 10/,
      '1.33 everywhere: sleep action despite the 1.29 node',
    );

    const offline = await cli(
      ['inject', '-f', '-', '--offline'],
      envFor(cp.kubeconfigPath),
      DEPLOYMENT,
    );
    assert.equal(offline.code, 0, offline.stderr);
    assert.match(
      offline.stderr,
      /^note: --offline .*unknown cluster: exec hooks, no sleep action\n$/,
    );
    assert.match(offline.stdout, /- sleep 10/);
  });

  it('when listing nodes is forbidden, says so and treats the kubelets as unknown', async () => {
    const viewer = await createServiceAccountIdentity(cp, {
      namespace: 'cli-versions',
      name: 'no-nodes',
      rules: [],
    });
    const { code, stdout, stderr } = await cli(
      ['inject', '-f', '-'],
      envFor(viewer.kubeconfigPath),
      DEPLOYMENT,
    );
    assert.equal(code, 0, stderr);
    assert.match(
      stderr,
      new RegExp(
        `API server ${cp.minorVersion}, kubelet version unknown \\(listing nodes is forbidden\\): exec hooks, no sleep action`,
      ),
    );
    assert.match(stdout, /- sleep 10/);
  });
});
