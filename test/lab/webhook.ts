// The project's webhook for the lab: `serve` from this checkout, run as a
// process inside the node's network namespace on its 127.0.0.1 (where the API
// server, in the same namespace, reaches it) and registered by URL. It reads
// the cluster (kubelet versions, namespaces) as it does in production, so the
// pods the API server admits carry what the real planner writes for this
// cluster.

import path from 'node:path';
import { registerWebhook } from '../support/cluster/api.ts';
import {
  ExitedError,
  httpGet,
  makeTempDir,
  removeDirectory,
  repoRoot,
  spawnManaged,
  waitFor,
  type ManagedProcess,
} from '../support/cluster/processes.ts';
import type { RealNode } from '../support/node/node.ts';
import { makeDevCerts } from '../support/serve.ts';

const PORT = 9443;
const HEALTH_PORT = 9444;
/** Namespaces with this label are the lab's: only their pods go to the webhook. */
export const LAB_NAMESPACE_LABEL = 'prestop-injector.io/lab';

export interface LabWebhook {
  proc: ManagedProcess;
  /** Throws, with its log, if the webhook is no longer running. */
  check(): void;
  stop(): Promise<void>;
}

export async function startLabWebhook(node: RealNode): Promise<LabWebhook> {
  const certs = makeDevCerts();
  const dir = await makeTempDir('prestop-lab-webhook-');
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Only the flags below configure it.
  for (const key of Object.keys(env)) {
    if (key.startsWith('PRESTOP_') || key === 'KUBECONFIG' || key === 'POD_NAMESPACE') {
      delete env[key];
    }
  }
  const proc = spawnManaged(
    'webhook',
    process.execPath,
    [
      path.join(repoRoot, 'src', 'cli', 'main.ts'),
      'serve',
      '--host',
      '127.0.0.1',
      '--port',
      String(PORT),
      '--health-port',
      String(HEALTH_PORT),
      '--tls-cert',
      certs.certPath,
      '--tls-key',
      certs.keyPath,
      // Pods opt in with prestop-injector.io/inject, as the strategies say.
      '--inject-default',
      'disabled',
      '--cluster',
      'on',
      '--kubeconfig',
      node.kubeconfig,
    ],
    path.join(dir, 'webhook.log'),
    { netns: node.netns, dieWithParent: true, cwd: repoRoot, env },
  );
  const stop = async () => {
    await proc.stop(10_000);
    await removeDirectory(dir);
    await removeDirectory(certs.dir);
  };
  try {
    await waitFor('the webhook /readyz', 60_000, async () => {
      if (proc.hasExited()) throw new ExitedError(`webhook exited:\n${proc.logTail(40)}`);
      const res = await httpGet(`http://127.0.0.1:${HEALTH_PORT}/readyz`, { dial: node.dial });
      return res.status === 200;
    });
    await registerWebhook(node.controlPlane, {
      name: 'prestop-injector-lab',
      url: `https://127.0.0.1:${PORT}/mutate`,
      caBundlePem: certs.caPem,
      // A pod the webhook failed to mutate would pass for `none`: refuse it.
      failurePolicy: 'Fail',
      namespaceSelector: { matchLabels: { [LAB_NAMESPACE_LABEL]: 'true' } },
      timeoutSeconds: 10,
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    proc,
    check() {
      if (proc.hasExited()) throw new Error(`the webhook exited:\n${proc.logTail(60)}`);
    },
    stop,
  };
}
