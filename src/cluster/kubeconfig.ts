// The API client's configuration for the webhook's cluster. Apart from
// view.ts so that deciding whether there is a cluster does not load the
// Kubernetes client, most of the process's memory.

import { existsSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import { kubeconfigSource, type ClusterConnection } from './view.ts';

/** The kubeconfig of the connection: the file given, the in-cluster service account, or the default. */
export function loadKubeConfig(connection: ClusterConnection): KubeConfig {
  const source = kubeconfigSource(connection);
  if (source === null) throw new Error('no cluster: --cluster is off, or no kubeconfig was found');
  const kc = new KubeConfig();
  if (source === 'file') {
    if (!existsSync(connection.kubeconfig)) {
      throw new Error(`kubeconfig ${connection.kubeconfig} does not exist`);
    }
    kc.loadFromFile(connection.kubeconfig);
  } else if (source === 'in-cluster') {
    kc.loadFromCluster();
  } else {
    kc.loadFromDefault();
  }
  return kc;
}
