// kube-proxy in iptables mode, in the node's network namespace: its rules
// (ClusterIPs, NodePorts) exist only there. One serves every kubelet of the
// namespace, since they share its iptables.

import fsp from 'node:fs/promises';
import path from 'node:path';
import { spawnManaged, type ManagedProcess } from '../cluster/processes.ts';

export interface KubeProxyOptions {
  binary: string;
  dir: string;
  netns: string;
  kubeconfig: string;
  /** The node whose IP it reads from the API. */
  nodeName: string;
  clusterCIDR: string;
}

export async function startKubeProxy(options: KubeProxyOptions): Promise<ManagedProcess> {
  await fsp.mkdir(options.dir, { recursive: true });
  const config = {
    kind: 'KubeProxyConfiguration',
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    clientConnection: { kubeconfig: options.kubeconfig },
    mode: 'iptables',
    clusterCIDR: options.clusterCIDR,
    hostnameOverride: options.nodeName,
    healthzBindAddress: '127.0.0.1:10256',
    metricsBindAddress: '127.0.0.1:10249',
    // It cannot change the machine's conntrack limits here.
    conntrack: { maxPerCore: 0 },
  };
  const configPath = path.join(options.dir, 'config.json');
  await fsp.writeFile(configPath, JSON.stringify(config, null, 2) + '\n');
  return spawnManaged(
    'kube-proxy',
    options.binary,
    [`--config=${configPath}`, '--v=1'],
    path.join(options.dir, 'kube-proxy.log'),
    { netns: options.netns, dieWithParent: true },
  );
}
