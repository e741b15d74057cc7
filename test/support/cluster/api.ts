// Conveniences over the Kubernetes API for the tests: webhook registration,
// namespaces, pods, and ServiceAccount identities with their kubeconfigs.

import { randomBytes } from 'node:crypto';
import path from 'node:path';
import {
  RbacAuthorizationV1Api,
  type V1LabelSelector,
  type V1MutatingWebhookConfiguration,
  type V1Namespace,
  type V1Pod,
  type V1PolicyRule,
} from '@kubernetes/client-node';
import { writeKubeconfig, type ControlPlane } from './apiserver.ts';
import { waitFor } from './processes.ts';

export interface WebhookOptions {
  /** Name of the MutatingWebhookConfiguration. */
  name: string;
  /** e.g. https://127.0.0.1:PORT/mutate */
  url: string;
  /** PEM of the CA that signed the webhook's serving certificate. */
  caBundlePem: string;
  failurePolicy?: 'Ignore' | 'Fail';
  namespaceSelector?: V1LabelSelector;
  objectSelector?: V1LabelSelector;
  reinvocationPolicy?: 'Never' | 'IfNeeded';
  timeoutSeconds?: number;
  /**
   * Name of the webhook inside the configuration (must have at least three
   * dot-separated segments). Default: `<name>.e2e.prestop-injector.io`.
   */
  webhookName?: string;
}

export async function registerWebhook(
  cp: ControlPlane,
  opts: WebhookOptions,
): Promise<V1MutatingWebhookConfiguration> {
  const body: V1MutatingWebhookConfiguration = {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: opts.name },
    webhooks: [
      {
        name: opts.webhookName ?? `${opts.name}.e2e.prestop-injector.io`,
        clientConfig: {
          url: opts.url,
          // The generated client sends this string as is; the API wants base64.
          caBundle: Buffer.from(opts.caBundlePem).toString('base64'),
        },
        rules: [
          {
            operations: ['CREATE'],
            apiGroups: [''],
            apiVersions: ['v1'],
            resources: ['pods'],
            scope: 'Namespaced',
          },
        ],
        failurePolicy: opts.failurePolicy ?? 'Ignore',
        matchPolicy: 'Equivalent',
        sideEffects: 'None',
        admissionReviewVersions: ['v1'],
        reinvocationPolicy: opts.reinvocationPolicy ?? 'IfNeeded',
        timeoutSeconds: opts.timeoutSeconds ?? 5,
        ...(opts.namespaceSelector ? { namespaceSelector: opts.namespaceSelector } : {}),
        ...(opts.objectSelector ? { objectSelector: opts.objectSelector } : {}),
      },
    ],
  };
  return cp.admission.createMutatingWebhookConfiguration({ body });
}

export async function deleteWebhook(cp: ControlPlane, name: string): Promise<void> {
  await cp.admission.deleteMutatingWebhookConfiguration({ name });
}

export async function createNamespace(
  cp: ControlPlane,
  name: string,
  annotations?: Record<string, string>,
  labels?: Record<string, string>,
): Promise<V1Namespace> {
  return cp.core.createNamespace({
    body: {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name,
        ...(annotations ? { annotations } : {}),
        ...(labels ? { labels } : {}),
      },
    },
  });
}

export async function createPod(
  cp: ControlPlane,
  namespace: string,
  body: V1Pod,
  opts: { dryRun?: boolean } = {},
): Promise<V1Pod> {
  return cp.core.createNamespacedPod({
    namespace,
    body,
    ...(opts.dryRun ? { dryRun: 'All' } : {}),
  });
}

/**
 * A Node as a kubelet of `kubeletVersion` registers it: the object, then
 * its status with the version (no kubelet runs: admission needs none).
 */
export async function registerNode(
  cp: ControlPlane,
  name: string,
  kubeletVersion: string,
): Promise<void> {
  await cp.core.createNode({ body: { metadata: { name } } });
  const node = await cp.core.readNode({ name });
  node.status = {
    ...node.status,
    nodeInfo: {
      architecture: 'amd64',
      bootID: '',
      containerRuntimeVersion: 'containerd://1.6.20',
      kernelVersion: '6.1.0',
      kubeProxyVersion: kubeletVersion,
      kubeletVersion,
      machineID: '',
      operatingSystem: 'linux',
      osImage: 'Debian GNU/Linux 12 (bookworm)',
      systemUUID: '',
    },
  };
  await cp.core.replaceNodeStatus({ name, body: node });
}

export async function deleteNode(cp: ControlPlane, name: string): Promise<void> {
  await cp.core.deleteNode({ name });
}

export async function readPod(cp: ControlPlane, namespace: string, name: string): Promise<V1Pod> {
  return cp.core.readNamespacedPod({ namespace, name });
}

/** A minimal pod with one container, of an image with a shell. Never runs (there is no kubelet). */
export function simplePod(
  name: string,
  opts: { annotations?: Record<string, string>; labels?: Record<string, string> } = {},
): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      ...(opts.annotations ? { annotations: opts.annotations } : {}),
      ...(opts.labels ? { labels: opts.labels } : {}),
    },
    spec: {
      containers: [{ name: 'app', image: 'docker.io/library/busybox:1.36' }],
    },
  };
}

const STATUS_ANNOTATION = 'prestop-injector.io/status';

function looksMutated(pod: V1Pod): boolean {
  if (pod.metadata?.annotations?.[STATUS_ANNOTATION] !== undefined) return true;
  return (pod.spec?.containers ?? []).some((c) => c.lifecycle?.preStop !== undefined);
}

export interface WaitForWebhookOptions {
  /** Namespace the probe pods are created in (dry run; nothing is stored). */
  namespace: string;
  /** Probe pod; default: simplePod with `prestop-injector.io/inject: enabled`. */
  pod?: V1Pod;
  /** Default: has the status annotation or a preStop hook. */
  isMutated?: (pod: V1Pod) => boolean;
  timeoutMs?: number;
}

/**
 * The apiserver picks up a new webhook configuration asynchronously. This
 * creates dry-run probe pods until one comes back mutated.
 */
export async function waitForWebhookActive(
  cp: ControlPlane,
  opts: WaitForWebhookOptions,
): Promise<V1Pod> {
  const isMutated = opts.isMutated ?? looksMutated;
  const probe =
    opts.pod ??
    simplePod(`webhook-probe-${randomBytes(4).toString('hex')}`, {
      annotations: { 'prestop-injector.io/inject': 'enabled' },
    });
  let result: V1Pod | undefined;
  let lastPod: V1Pod | undefined;
  await waitFor(
    'the mutating webhook to become active',
    opts.timeoutMs ?? 30_000,
    async () => {
      const pod = await createPod(cp, opts.namespace, probe, { dryRun: true });
      lastPod = pod;
      if (isMutated(pod)) {
        result = pod;
        return true;
      }
      return false;
    },
    200,
  ).catch((err: Error) => {
    err.message +=
      `\nlast probe pod: ${JSON.stringify(lastPod?.spec?.containers ?? null)} ` +
      `annotations=${JSON.stringify(lastPod?.metadata?.annotations ?? null)}`;
    throw err;
  });
  return result as V1Pod;
}

export interface ServiceAccountIdentity {
  /** `system:serviceaccount:NAMESPACE:NAME`, as RBAC and the audit log name it. */
  username: string;
  token: string;
  /** A kubeconfig that authenticates with the token (inside cp.dir). */
  kubeconfigPath: string;
}

export interface ServiceAccountIdentityOptions {
  namespace: string;
  name: string;
  /** Cluster-wide rules, granted by a ClusterRole and ClusterRoleBinding named `name`. */
  rules: V1PolicyRule[];
  expirationSeconds?: number;
}

function isConflict(error: unknown): boolean {
  return (error as { code?: number }).code === 409;
}

/**
 * A ServiceAccount bound to `rules`, with a token from the TokenRequest API
 * (the API server signs it itself: no controller manager needed) and a
 * kubeconfig that uses it. The namespace is created when missing.
 */
export async function createServiceAccountIdentity(
  cp: ControlPlane,
  opts: ServiceAccountIdentityOptions,
): Promise<ServiceAccountIdentity> {
  const { namespace, name } = opts;
  await createNamespace(cp, namespace).catch((error: unknown) => {
    if (!isConflict(error)) throw error;
  });
  await cp.core.createNamespacedServiceAccount({
    namespace,
    body: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name } },
  });
  const rbac = cp.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
  await rbac.createClusterRole({
    body: {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name },
      rules: opts.rules,
    },
  });
  await rbac.createClusterRoleBinding({
    body: {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
      subjects: [{ kind: 'ServiceAccount', name, namespace }],
    },
  });
  const request = await cp.core.createNamespacedServiceAccountToken({
    namespace,
    name,
    body: {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec: { audiences: [], expirationSeconds: opts.expirationSeconds ?? 3600 },
    },
  });
  const token = request.status?.token;
  if (!token) throw new Error(`TokenRequest for ${namespace}/${name} returned no token`);
  const kubeconfigPath = path.join(cp.dir, `kubeconfig-${namespace}-${name}`);
  await writeKubeconfig(kubeconfigPath, cp.server, cp.caPem, token);
  return { username: `system:serviceaccount:${namespace}:${name}`, token, kubeconfigPath };
}
