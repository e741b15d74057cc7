// A kubelet in the node's network namespace, with every directory of its own
// (root, certificates, static pods, pod logs, volume plugins, resolv.conf),
// its own cgroup root and its own containerd. Several can share the
// namespace: each has its node name, node IP and containerd.

import fsp from 'node:fs/promises';
import path from 'node:path';
import { writeKubeconfigFor } from '../cluster/apiserver.ts';
import { spawnManaged, type ManagedProcess } from '../cluster/processes.ts';
import { issueCertificate, type CertificateAuthority } from './pki.ts';

export interface KubeletOptions {
  binary: string;
  nodeName: string;
  nodeIP: string;
  dir: string;
  netns: string;
  ca: CertificateAuthority;
  apiserverUrl: string;
  /** unix socket of this node's containerd */
  containerdSocket: string;
  /** cgroup of this kubelet's pods (created beforehand in every hierarchy) */
  cgroupRoot: string;
}

export async function startKubelet(options: KubeletOptions): Promise<ManagedProcess> {
  const { dir } = options;
  const dirs = {
    root: path.join(dir, 'root'),
    certs: path.join(dir, 'pki'),
    staticPods: path.join(dir, 'manifests'),
    podLogs: path.join(dir, 'pod-logs'),
    volumePlugins: path.join(dir, 'volume-plugins'),
  };
  for (const d of Object.values(dirs)) await fsp.mkdir(d, { recursive: true });
  // No DNS server in this cluster; pods get a resolv.conf that names none.
  const resolvConf = path.join(dir, 'resolv.conf');
  await fsp.writeFile(resolvConf, '');

  // system:node:NAME in system:nodes: what the Node authorizer and
  // NodeRestriction admit.
  const identity = await issueCertificate(options.ca, {
    name: `kubelet-${options.nodeName}`,
    commonName: `system:node:${options.nodeName}`,
    organizations: ['system:nodes'],
    usage: 'client',
  });
  const kubeconfig = path.join(dir, 'kubeconfig');
  await writeKubeconfigFor(kubeconfig, options.apiserverUrl, options.ca.pem, identity);

  const config = {
    kind: 'KubeletConfiguration',
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    address: options.nodeIP,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: options.nodeIP,
    healthzPort: 10248,
    containerRuntimeEndpoint: `unix://${options.containerdSocket}`,
    // The machine mounts cgroup v1 hierarchies and runs no systemd.
    failCgroupV1: false,
    cgroupDriver: 'cgroupfs',
    cgroupRoot: options.cgroupRoot,
    failSwapOn: false,
    // Else the kubelet uses (and creates) directories of the machine.
    staticPodPath: dirs.staticPods,
    podLogsDir: dirs.podLogs,
    volumePluginDir: dirs.volumePlugins,
    resolvConf,
    // The API server's client certificate (logs, exec) is checked against
    // the cluster CA; requests are authorized by the API server.
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true },
      x509: { clientCAFile: options.ca.certPath },
    },
    authorization: { mode: 'Webhook' },
    clusterDomain: 'cluster.local',
    // A busy CI disk must evict nothing and collect no image (they cannot be
    // pulled again).
    evictionHard: {
      'memory.available': '1%',
      'nodefs.available': '1%',
      'nodefs.inodesFree': '1%',
      'imagefs.available': '1%',
    },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    // Quicker node status for the tests.
    nodeStatusUpdateFrequency: '4s',
    serializeImagePulls: false,
  };
  const configPath = path.join(dir, 'config.json');
  await fsp.writeFile(configPath, JSON.stringify(config, null, 2) + '\n');

  return spawnManaged(
    `kubelet ${options.nodeName}`,
    options.binary,
    [
      `--config=${configPath}`,
      `--kubeconfig=${kubeconfig}`,
      `--root-dir=${dirs.root}`,
      `--cert-dir=${dirs.certs}`,
      `--hostname-override=${options.nodeName}`,
      `--node-ip=${options.nodeIP}`,
      '--v=2',
    ],
    path.join(dir, 'kubelet.log'),
    { netns: options.netns, dieWithParent: true },
  );
}
