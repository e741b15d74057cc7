// The control plane of a real node, inside the node's network namespace:
// etcd, kube-apiserver (advertised on the node IP, Node and RBAC
// authorization, NodeRestriction, the ServiceAccount admission plugin kept),
// kube-controller-manager (every controller: ServiceAccounts, the
// kube-root-ca.crt ConfigMap, Deployments, EndpointSlices, ...) and
// kube-scheduler. The test process reaches the API server through a port on
// its own 127.0.0.1 that the netns dialer forwards.

import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  controlPlaneClients,
  newToken,
  writeKubeconfig,
  writeServiceAccountKeys,
  type ControlPlane,
} from '../cluster/apiserver.ts';
import { startEtcd } from '../cluster/etcd.ts';
import {
  ExitedError,
  formatTails,
  httpGet,
  spawnManaged,
  waitFor,
  type ManagedProcess,
} from '../cluster/processes.ts';
import type { NetnsDialer } from './netns.ts';
import { issueCertificate, type CertificateAuthority } from './pki.ts';

export const APISERVER_PORT = 6443;

export interface NodeControlPlaneOptions {
  dir: string;
  netns: string;
  dialer: NetnsDialer;
  ca: CertificateAuthority;
  /** The first node's IP: the API server's advertise address. */
  advertiseIP: string;
  serviceCIDR: string;
  clusterCIDR: string;
  binaries: {
    etcd: string;
    kubeApiserver: string;
    kubeControllerManager: string;
    kubeScheduler: string;
  };
  extraApiserverArgs?: string[];
}

export interface NodeControlPlane {
  /** https://NODE_IP:6443, as seen inside the namespace. */
  apiserverUrl: string;
  /** Admin kubeconfig for clients inside the namespace (kubectl, helm). */
  kubeconfigPath: string;
  /** The same API server for the test process (https://127.0.0.1:PORT, forwarded). */
  controlPlane: ControlPlane;
  /** etcd, kube-apiserver, kube-controller-manager, kube-scheduler. */
  processes: ManagedProcess[];
}

/** Users of the static token file: the admin and the control-plane components. */
const TOKEN_USERS = {
  admin: { user: 'node-admin', groups: ['system:masters'] },
  controllerManager: { user: 'system:kube-controller-manager', groups: [] },
  scheduler: { user: 'system:kube-scheduler', groups: [] },
  kubeProxy: { user: 'system:kube-proxy', groups: [] },
} as const;

export type TokenUser = keyof typeof TOKEN_USERS;

/** Where component kubeconfigs are: `<dir>/kubeconfig-<user>`. */
export function componentKubeconfig(dir: string, user: TokenUser): string {
  return path.join(dir, `kubeconfig-${user}`);
}

export async function startNodeControlPlane(
  options: NodeControlPlaneOptions,
): Promise<NodeControlPlane> {
  const { dir, netns, dialer, ca } = options;
  await fsp.mkdir(dir, { recursive: true });
  const processes: ManagedProcess[] = [];
  const inNetns = { netns, dieWithParent: true };

  const sa = await writeServiceAccountKeys(dir);
  const firstServiceIP = serviceIP(options.serviceCIDR, 1);
  const serving = await issueCertificate(ca, {
    name: 'apiserver',
    commonName: 'kube-apiserver',
    usage: 'server',
    hosts: [
      options.advertiseIP,
      firstServiceIP,
      '127.0.0.1',
      'localhost',
      'kubernetes',
      'kubernetes.default',
      'kubernetes.default.svc',
      'kubernetes.default.svc.cluster.local',
    ],
  });
  // The API server's identity when it calls kubelets (logs, exec).
  const kubeletClient = await issueCertificate(ca, {
    name: 'apiserver-kubelet-client',
    commonName: 'kube-apiserver-kubelet-client',
    organizations: ['system:masters'],
    usage: 'client',
  });
  const tokens = Object.fromEntries(
    Object.keys(TOKEN_USERS).map((key) => [key, newToken()]),
  ) as Record<TokenUser, string>;
  const tokenFile = path.join(dir, 'tokens.csv');
  await fsp.writeFile(
    tokenFile,
    Object.entries(TOKEN_USERS)
      .map(([key, { user, groups }]) => {
        // token,user,uid,"group1,group2"
        return `${tokens[key as TokenUser]},${user},${user},"${groups.join(',')}"\n`;
      })
      .join(''),
    { mode: 0o600 },
  );

  const apiserverUrl = `https://${options.advertiseIP}:${APISERVER_PORT}`;
  for (const user of Object.keys(TOKEN_USERS) as TokenUser[]) {
    await writeKubeconfig(componentKubeconfig(dir, user), apiserverUrl, ca.pem, tokens[user]);
  }

  try {
    const etcd = await startEtcd(options.binaries.etcd, dir, {
      ...inNetns,
      clientPort: 2379,
      peerPort: 2380,
      dial: dialer.dial,
    });
    processes.push(etcd.proc);

    const apiserver = spawnManaged(
      'kube-apiserver',
      options.binaries.kubeApiserver,
      [
        `--etcd-servers=${etcd.clientUrl}`,
        '--bind-address=0.0.0.0',
        `--secure-port=${APISERVER_PORT}`,
        `--advertise-address=${options.advertiseIP}`,
        `--tls-cert-file=${serving.certPath}`,
        `--tls-private-key-file=${serving.keyPath}`,
        `--client-ca-file=${ca.certPath}`,
        `--token-auth-file=${tokenFile}`,
        `--service-cluster-ip-range=${options.serviceCIDR}`,
        '--authorization-mode=Node,RBAC',
        // Added to the defaults (ServiceAccount among them), not instead of them.
        '--enable-admission-plugins=NodeRestriction',
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${sa.publicKeyPath}`,
        `--service-account-signing-key-file=${sa.privateKeyPath}`,
        `--kubelet-client-certificate=${kubeletClient.certPath}`,
        `--kubelet-client-key=${kubeletClient.keyPath}`,
        // Node names do not resolve; their InternalIP is the node IP.
        '--kubelet-preferred-address-types=InternalIP',
        '--allow-privileged=true',
        '--profiling=false',
        ...(options.extraApiserverArgs ?? []),
      ],
      path.join(dir, 'kube-apiserver.log'),
      inNetns,
    );
    processes.push(apiserver);
    let lastReadyz = '';
    await waitFor('kube-apiserver /readyz', 120_000, async () => {
      if (apiserver.hasExited())
        throw new ExitedError(`kube-apiserver exited:\n${apiserver.logTail(40)}`);
      const res = await httpGet(`${apiserverUrl}/readyz?verbose`, {
        ca: ca.pem,
        token: tokens.admin,
        dial: dialer.dial,
      });
      lastReadyz = `HTTP ${res.status}\n${res.body}`;
      return res.status === 200;
    }).catch((err: Error) => {
      err.message += `\n----- last /readyz -----\n${lastReadyz}\n${apiserver.logTail(40)}`;
      throw err;
    });

    const forwarded = await dialer.forward(options.advertiseIP, APISERVER_PORT);
    const hostKubeconfig = path.join(dir, 'kubeconfig-host');
    await writeKubeconfig(
      hostKubeconfig,
      `https://127.0.0.1:${forwarded.port}`,
      ca.pem,
      tokens.admin,
    );

    processes.push(
      spawnManaged(
        'kube-controller-manager',
        options.binaries.kubeControllerManager,
        [
          `--kubeconfig=${componentKubeconfig(dir, 'controllerManager')}`,
          '--leader-elect=false',
          '--controllers=*',
          // Each controller acts as its own ServiceAccount, as RBAC's
          // bootstrap roles expect.
          '--use-service-account-credentials=true',
          `--service-account-private-key-file=${sa.privateKeyPath}`,
          `--root-ca-file=${ca.certPath}`,
          `--cluster-cidr=${options.clusterCIDR}`,
          `--service-cluster-ip-range=${options.serviceCIDR}`,
          '--bind-address=127.0.0.1',
          '--profiling=false',
        ],
        path.join(dir, 'kube-controller-manager.log'),
        inNetns,
      ),
      spawnManaged(
        'kube-scheduler',
        options.binaries.kubeScheduler,
        [
          `--kubeconfig=${componentKubeconfig(dir, 'scheduler')}`,
          '--leader-elect=false',
          '--bind-address=127.0.0.1',
          '--profiling=false',
        ],
        path.join(dir, 'kube-scheduler.log'),
        inNetns,
      ),
    );

    const [etcdProc, apiProc] = [etcd.proc, apiserver];
    const controlPlane = await controlPlaneClients({
      server: `https://127.0.0.1:${forwarded.port}`,
      kubeconfigPath: hostKubeconfig,
      adminToken: tokens.admin,
      caPem: ca.pem,
      dir,
      etcd: etcdProc,
      apiserver: apiProc,
      logTails: (lines = 40) => formatTails(processes, lines),
      async stop() {
        forwarded.close();
        for (const proc of [...processes].reverse()) await proc.stop(5_000);
      },
    });
    return {
      apiserverUrl,
      kubeconfigPath: componentKubeconfig(dir, 'admin'),
      controlPlane,
      processes,
    };
  } catch (err) {
    for (const proc of [...processes].reverse()) await proc.stop(5_000);
    throw err;
  }
}

/** The n-th address of a CIDR (IPv4), e.g. 10.96.0.1 for the `kubernetes` Service. */
export function serviceIP(cidr: string, n: number): string {
  const [base] = cidr.split('/');
  const parts = base!.split('.').map(Number);
  const value = ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) + n;
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join('.');
}
