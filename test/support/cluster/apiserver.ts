// A real Kubernetes control plane (etcd + kube-apiserver, no kubelet, no
// scheduler) for end-to-end tests of the admission webhook. Admission needs
// nothing else: pods are admitted, mutated, validated and stored with no node.
// (test/support/node/ runs a whole node: kubelet, controllers and all.)

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  AdmissionregistrationV1Api,
  CoreV1Api,
  KubeConfig,
  VersionApi,
} from '@kubernetes/client-node';
import { getFreePort } from '../free-port.ts';
import { ensureTools, type Tools } from './binaries.ts';
import { startEtcd } from './etcd.ts';
import {
  ExitedError,
  formatTails,
  httpGet,
  makeTempDir,
  removeDirectory,
  spawnManaged,
  waitFor,
  type ManagedProcess,
} from './processes.ts';

export interface ControlPlane {
  /** https://127.0.0.1:PORT */
  server: string;
  kubeconfigPath: string;
  kubeConfig: KubeConfig;
  /** gitVersion from /version, e.g. v1.37.2 */
  version: string;
  /** major.minor, e.g. "1.37" */
  minorVersion: string;
  /** Bearer token of a system:masters user. */
  adminToken: string;
  /** PEM of the CA the apiserver's serving certificate is checked against. */
  caPem: string;
  /** Temp dir holding data, certs and logs. */
  dir: string;
  etcd: ManagedProcess;
  apiserver: ManagedProcess;
  core: CoreV1Api;
  admission: AdmissionregistrationV1Api;
  /** Log tails of etcd and kube-apiserver, for failure messages. */
  logTails(lines?: number): string;
  stop(): Promise<void>;
}

export interface StartControlPlaneOptions {
  /** Time allowed for /readyz after the apiserver starts. Default 120 s. */
  readyTimeoutMs?: number;
  /** Extra kube-apiserver flags (e.g. --feature-gates=...). */
  extraApiserverArgs?: string[];
}

/** Starts etcd and kube-apiserver on 127.0.0.1 and waits for /readyz. */
export async function startControlPlane(
  options: StartControlPlaneOptions = {},
): Promise<ControlPlane> {
  const tools = await ensureTools();
  const dir = await makeTempDir('prestop-e2e-');
  let etcd: ManagedProcess | undefined;
  let apiserver: ManagedProcess | undefined;
  try {
    const started = await startEtcd(tools.etcd, dir);
    etcd = started.proc;
    const api = await startApiserver(tools, dir, started.clientUrl, etcd, options);
    apiserver = api.proc;

    const kubeconfigPath = path.join(dir, 'kubeconfig');
    await writeKubeconfig(kubeconfigPath, api.server, api.caPem, api.token);
    const etcdProc = etcd;
    const apiProc = apiserver;
    return await controlPlaneClients({
      server: api.server,
      kubeconfigPath,
      adminToken: api.token,
      caPem: api.caPem,
      dir,
      etcd: etcdProc,
      apiserver: apiProc,
      logTails: (lines = 40) => formatTails([apiProc, etcdProc], lines),
      stop: () => stopAll([apiProc, etcdProc], dir),
    });
  } catch (err) {
    const procs = [apiserver, etcd].filter((p): p is ManagedProcess => p !== undefined);
    await stopAll(procs, dir);
    throw err;
  }
}

/**
 * A ControlPlane from its parts: the API clients and the version are made
 * here from the kubeconfig; `stop` is made idempotent.
 */
export async function controlPlaneClients(
  parts: Omit<ControlPlane, 'kubeConfig' | 'version' | 'minorVersion' | 'core' | 'admission'>,
): Promise<ControlPlane> {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(parts.kubeconfigPath);
  const info = await kubeConfig.makeApiClient(VersionApi).getCode();
  let stopping: Promise<void> | undefined;
  return {
    ...parts,
    kubeConfig,
    version: info.gitVersion,
    minorVersion: `${info.major}.${info.minor.replace(/\D+$/, '')}`,
    core: kubeConfig.makeApiClient(CoreV1Api),
    admission: kubeConfig.makeApiClient(AdmissionregistrationV1Api),
    stop() {
      stopping ??= parts.stop();
      return stopping;
    },
  };
}

async function stopAll(procs: ManagedProcess[], dir: string): Promise<void> {
  // apiserver first, then etcd.
  for (const proc of procs) await proc.stop();
  await removeDirectory(dir);
}

const ADDRESS_IN_USE = /address already in use/i;

/** An RSA key pair for signing ServiceAccount tokens, written to `dir`. */
export async function writeServiceAccountKeys(
  dir: string,
): Promise<{ publicKeyPath: string; privateKeyPath: string }> {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const publicKeyPath = path.join(dir, 'sa.pub');
  const privateKeyPath = path.join(dir, 'sa.key');
  await fsp.writeFile(publicKeyPath, publicKey, { mode: 0o600 });
  await fsp.writeFile(privateKeyPath, privateKey, { mode: 0o600 });
  return { publicKeyPath, privateKeyPath };
}

/** A random bearer token for a static token file. */
export function newToken(): string {
  return randomBytes(24).toString('hex');
}

async function startApiserver(
  tools: Tools,
  dir: string,
  etcdUrl: string,
  etcd: ManagedProcess,
  options: StartControlPlaneOptions,
): Promise<{ proc: ManagedProcess; server: string; caPem: string; token: string }> {
  const sa = await writeServiceAccountKeys(dir);
  const token = newToken();
  const tokenFile = path.join(dir, 'tokens.csv');
  // token,user,uid,"group1,group2"
  await fsp.writeFile(tokenFile, `${token},e2e-admin,e2e-admin,"system:masters"\n`, {
    mode: 0o600,
  });

  const readyTimeoutMs = options.readyTimeoutMs ?? 120_000;
  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await getFreePort();
    const server = `https://127.0.0.1:${port}`;
    const certDir = path.join(dir, `apiserver-certs-${attempt}`);
    await fsp.mkdir(certDir, { recursive: true });
    const logPath = path.join(dir, 'kube-apiserver.log');
    const proc = spawnManaged(
      'kube-apiserver',
      tools.kubeApiserver,
      [
        `--etcd-servers=${etcdUrl}`,
        // Fresh prefix per attempt so a half-started attempt leaves nothing behind.
        `--etcd-prefix=/registry-${attempt}`,
        `--cert-dir=${certDir}`,
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        `--secure-port=${port}`,
        // Only configuration; nothing is ever addressed in this range.
        '--service-cluster-ip-range=10.0.0.0/24',
        // No endpoints for the `kubernetes` service (127.0.0.1 is not a
        // valid endpoint address, and nothing needs it).
        '--endpoint-reconciler-type=none',
        '--authorization-mode=RBAC',
        `--token-auth-file=${tokenFile}`,
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        `--service-account-key-file=${sa.publicKeyPath}`,
        `--service-account-signing-key-file=${sa.privateKeyPath}`,
        // No token controller runs, so pods must not need a ServiceAccount.
        '--disable-admission-plugins=ServiceAccount',
        '--allow-privileged=true',
        '--profiling=false',
        ...(options.extraApiserverArgs ?? []),
      ],
      logPath,
    );
    const certFile = path.join(certDir, 'apiserver.crt');
    let caPem = '';
    let lastReadyz = '';
    try {
      await waitFor('kube-apiserver /readyz', readyTimeoutMs, async () => {
        if (proc.hasExited()) throw new ExitedError('kube-apiserver exited');
        if (etcd.hasExited()) throw new ExitedError('etcd exited');
        if (!caPem) {
          // Written by the apiserver (a self-signed CA plus serving cert for
          // localhost/127.0.0.1) before it starts serving.
          caPem = await fsp.readFile(certFile, 'utf8').catch(() => '');
          if (!caPem.includes('END CERTIFICATE')) {
            caPem = '';
            return false;
          }
        }
        const res = await httpGet(`${server}/readyz?verbose`, { ca: caPem, token });
        lastReadyz = `HTTP ${res.status}\n${res.body}`;
        return res.status === 200;
      });
      return { proc, server, caPem, token };
    } catch (err) {
      await proc.stop();
      const tail = proc.logTail(60);
      lastError = new Error(
        `kube-apiserver did not become ready: ${(err as Error).message}\n` +
          (lastReadyz ? `----- last /readyz response -----\n${lastReadyz}\n` : '') +
          `----- last lines of ${logPath} -----\n${tail}\n` +
          `----- last lines of ${etcd.logPath} -----\n${etcd.logTail(20)}`,
      );
      if (!ADDRESS_IN_USE.test(tail)) break;
    }
  }
  throw lastError ?? new Error('kube-apiserver failed to start');
}

/** A token kubeconfig; `mode` 0o644 when another uid (a stand-in pod) must read it. */
export async function writeKubeconfig(
  file: string,
  server: string,
  caPem: string,
  token: string,
  mode = 0o600,
): Promise<void> {
  await writeKubeconfigFor(file, server, caPem, { token }, mode);
}

/** A kubeconfig for a token or for a client certificate and key (files). */
export async function writeKubeconfigFor(
  file: string,
  server: string,
  caPem: string,
  user: { token: string } | { certPath: string; keyPath: string },
  mode = 0o600,
): Promise<void> {
  // JSON is valid YAML, so kubectl and client libraries read this as is.
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: 'e2e',
        cluster: {
          server,
          'certificate-authority-data': Buffer.from(caPem).toString('base64'),
        },
      },
    ],
    users: [
      {
        name: 'e2e-admin',
        user:
          'token' in user
            ? { token: user.token }
            : { 'client-certificate': user.certPath, 'client-key': user.keyPath },
      },
    ],
    contexts: [{ name: 'e2e', context: { cluster: 'e2e', user: 'e2e-admin' } }],
    'current-context': 'e2e',
  };
  await fsp.writeFile(file, JSON.stringify(config, null, 2) + '\n', { mode });
  await fsp.chmod(file, mode);
}

/**
 * Stops kube-apiserver (SIGTERM) and starts it again with the same flags:
 * same port, certificates and etcd data, as in a control-plane upgrade.
 * Clients see their connections drop and the server come back. Returns the
 * new process: stop it before `cp.stop()`, which knows only the first one.
 */
export async function restartApiserver(
  cp: ControlPlane,
  current: ManagedProcess = cp.apiserver,
  opts: { downMs?: number; readyTimeoutMs?: number } = {},
): Promise<ManagedProcess> {
  const [, ...args] = current.child.spawnargs;
  const command = current.child.spawnfile;
  await current.stop();
  if (opts.downMs) await new Promise((resolve) => setTimeout(resolve, opts.downMs));
  const proc = spawnManaged('kube-apiserver', command, args, current.logPath);
  await waitFor('restarted kube-apiserver /readyz', opts.readyTimeoutMs ?? 120_000, async () => {
    if (proc.hasExited()) throw new ExitedError('restarted kube-apiserver exited');
    const res = await httpGet(`${cp.server}/readyz`, { ca: cp.caPem, token: cp.adminToken });
    return res.status === 200;
  });
  return proc;
}
