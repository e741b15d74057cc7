// The webhook for the real-node tests: `src/cli/main.ts serve` as a process
// inside the node's network namespace, where the API server runs. It
// listens on the namespace's own 127.0.0.1 and is registered by that URL;
// it reaches the API server at the node IP, as a ServiceAccount with the
// chart's RBAC and nothing more. The test process reaches its health port
// through the node's dialer.

import path from 'node:path';
import { writeKubeconfig } from '../support/cluster/apiserver.ts';
import {
  createNamespace,
  createServiceAccountIdentity,
  registerWebhook,
  waitForWebhookActive,
} from '../support/cluster/api.ts';
import { makeDevCerts, startServe, type DevCerts, type ServeProcess } from '../support/serve.ts';
import type { RealNode } from '../support/node/node.ts';

const OWN_NAMESPACE = 'prestop-injector';

/** The chart's ClusterRole (charts/prestop-injector/templates/rbac.yaml). */
const CHART_RULES = [
  { apiGroups: [''], resources: ['namespaces', 'nodes'], verbs: ['get', 'list', 'watch'] },
  { nonResourceURLs: ['/metrics'], verbs: ['get'] },
];

/** A kubeconfig, valid inside the node's namespace, for a ServiceAccount with the chart's RBAC. */
export async function webhookIdentity(node: RealNode): Promise<string> {
  const identity = await createServiceAccountIdentity(node.controlPlane, {
    namespace: OWN_NAMESPACE,
    name: 'prestop-injector',
    rules: CHART_RULES,
  });
  const kubeconfig = path.join(node.dir, 'kubeconfig-webhook');
  await writeKubeconfig(kubeconfig, node.apiserverUrl, node.controlPlane.caPem, identity.token);
  return kubeconfig;
}

export interface NetnsWebhook {
  name: string;
  /** `serve` flags beyond the listener, certificates and cluster. */
  flags: string[];
  serve: ServeProcess;
  /** The webhook's /metrics text. */
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

export interface NetnsWebhookOptions {
  /** Names the MutatingWebhookConfiguration. */
  name: string;
  kubeconfig: string;
  /** `serve` flags beyond the listener, certificates and cluster. */
  flags?: string[];
}

let certs: DevCerts | undefined;

/**
 * Starts the webhook in the node's namespace, waits for its /readyz, and
 * registers it for the pods of namespaces labelled `prestop-lab/webhook: <name>`.
 * Callers create such a namespace before pods go to it.
 */
export async function startNetnsWebhook(
  node: RealNode,
  options: NetnsWebhookOptions,
): Promise<NetnsWebhook> {
  const { name } = options;
  const flags = options.flags ?? [];
  const serve = await startServe({
    certs: (certs ??= makeDevCerts()),
    kubeconfig: options.kubeconfig,
    args: ['--own-namespace', OWN_NAMESPACE, ...flags],
    netns: { name: node.netns, dial: node.dial },
  });
  await registerWebhook(node.controlPlane, {
    name: `prestop-injector-${name}`,
    url: serve.url,
    caBundlePem: serve.certs.caPem,
    failurePolicy: 'Fail',
    namespaceSelector: { matchLabels: { 'prestop-lab/webhook': name } },
  });
  return {
    name,
    flags,
    serve,
    metrics: async () => (await serve.health('/metrics')).body,
    async stop() {
      await serve.stop();
    },
  };
}

/** A namespace whose pods go to `webhook`; resolves once the webhook answers there. */
export async function webhookNamespace(
  node: RealNode,
  namespace: string,
  webhook: NetnsWebhook,
): Promise<void> {
  await createNamespace(node.controlPlane, namespace, undefined, {
    'prestop-lab/webhook': webhook.name,
  });
  await waitForWebhookActive(node.controlPlane, { namespace });
}
