// What the webhook knows of the cluster, as the admission path reads it.
// Without a cluster it knows nothing, and plans from pod annotations and
// server config alone.

import type { ClusterVersions } from '../core/capabilities.ts';
import type { CacheStats } from './watched-list.ts';

/** Annotations of a namespace (this project's only), or undefined when unknown. */
export type NamespaceAnnotations = Readonly<Record<string, string>> | undefined;

export interface ClusterView {
  /** From the cache at once when it knows the namespace; a promise when it must ask. */
  namespaceAnnotations(namespace: string): NamespaceAnnotations | Promise<NamespaceAnnotations>;
  /** The API server's and the oldest kubelet's versions, as far as known. */
  versions(): ClusterVersions;
  readiness(): { ready: boolean; reason?: string };
  /** Counters for metrics; absent without a cluster. */
  stats?(): ClusterStats;
  stop(): Promise<void>;
}

export interface ClusterStats {
  /** Requests this process made to the API server, by purpose. */
  requests: Record<'list' | 'watch' | 'read' | 'version' | 'metrics', number>;
  namespaces: CacheStats;
  nodes: CacheStats;
}

export const NO_CLUSTER: ClusterView = {
  namespaceAnnotations: () => undefined,
  versions: () => ({ server: null, oldestKubelet: null }),
  readiness: () => ({ ready: true }),
  stop: async () => {},
};

/** Where the webhook finds its cluster: auto, on or off, and a kubeconfig file if any. */
export interface ClusterConnection {
  cluster: 'auto' | 'on' | 'off';
  kubeconfig: string;
}

/**
 * Where the cluster's credentials come from, or null when the webhook runs
 * without one: the kubeconfig file given, the in-cluster service account,
 * or (only with cluster "on") the default kubeconfig.
 */
export function kubeconfigSource(
  connection: ClusterConnection,
  env: Readonly<Record<string, string | undefined>> = process.env,
): 'file' | 'in-cluster' | 'default' | null {
  if (connection.cluster === 'off') return null;
  if (connection.kubeconfig !== '') return 'file';
  if (env['KUBERNETES_SERVICE_HOST'] !== undefined) return 'in-cluster';
  return connection.cluster === 'on' ? 'default' : null;
}
