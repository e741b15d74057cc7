// A real Kubernetes control plane (etcd + kube-apiserver, no kubelet, no
// scheduler) for end-to-end tests of the admission webhook. Admission needs
// nothing else: pods are admitted, mutated, validated and stored with no node.
//
// The binaries are built once per machine by scripts/install-test-tools.sh
// and cached outside the work tree.

import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AdmissionregistrationV1Api,
  CoreV1Api,
  KubeConfig,
  RbacAuthorizationV1Api,
  VersionApi,
  type V1LabelSelector,
  type V1MutatingWebhookConfiguration,
  type V1Namespace,
  type V1Pod,
  type V1PolicyRule,
} from '@kubernetes/client-node';
import { getFreePort } from './free-port.ts';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const installScript = path.join(repoRoot, 'scripts', 'install-test-tools.sh');

/** Keep temp dirs (logs, data) after stop, for debugging. */
const keepTmp = process.env['PRESTOP_E2E_KEEP_TMP'] === '1';

// ---------------------------------------------------------------- tools

export interface Tools {
  kubeApiserver: string;
  etcd: string;
  helm: string;
  kubectl: string;
  kubeVersion: string;
  etcdVersion: string;
  helmVersion: string;
}

let toolsPromise: Promise<Tools> | undefined;

/**
 * Runs scripts/install-test-tools.sh once per process (instant when the
 * binaries are cached; a cold build takes tens of minutes) and returns the
 * binary paths.
 */
export function ensureTools(): Promise<Tools> {
  toolsPromise ??= runInstallScript();
  // A failed build should not be cached: a later call may retry.
  toolsPromise.catch(() => {
    toolsPromise = undefined;
  });
  return toolsPromise;
}

function runInstallScript(): Promise<Tools> {
  return new Promise((resolve, reject) => {
    // stderr (progress, build failures) goes straight to ours; stdout carries
    // the KEY=VALUE result lines.
    const child = spawn('bash', [installScript], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
    });
    child.once('error', reject);
    child.once('close', (code, signal) => {
      if (code !== 0) {
        reject(
          new Error(
            `${path.relative(repoRoot, installScript)} failed (exit ${code ?? signal}); ` +
              `see its output above. stdout:\n${out}`,
          ),
        );
        return;
      }
      const env = new Map<string, string>();
      for (const line of out.split('\n')) {
        const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
        if (m?.[1] !== undefined && m[2] !== undefined) env.set(m[1], m[2]);
      }
      const get = (key: string): string => {
        const value = env.get(key);
        if (!value) throw new Error(`install-test-tools.sh did not print ${key}=...; got:\n${out}`);
        return value;
      };
      try {
        resolve({
          kubeApiserver: get('KUBE_APISERVER'),
          etcd: get('ETCD'),
          helm: get('HELM'),
          kubectl: get('KUBECTL'),
          kubeVersion: get('KUBE_VERSION'),
          etcdVersion: get('ETCD_VERSION'),
          helmVersion: get('HELM_VERSION'),
        });
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

// ------------------------------------------------------ process cleanup

const liveChildren = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let exitHooksInstalled = false;

function cleanupSync(): void {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  liveChildren.clear();
  if (!keepTmp) {
    for (const dir of liveDirs) {
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  }
  liveDirs.clear();
}

function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.once('exit', cleanupSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      cleanupSync();
      // The `once` listener is gone now: re-raise for the default behaviour.
      process.kill(process.pid, signal);
    });
  }
}

/** A child process whose output goes to a log file, killed on process exit. */
export interface ManagedProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logPath: string;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** True once the process has exited. */
  hasExited(): boolean;
  /** Last `lines` lines of the log file. */
  logTail(lines?: number): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnManagedOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Run as this user and group (e.g. a container's runAsUser). */
  uid?: number;
  gid?: number;
}

/**
 * Spawns `command args` with stdout and stderr appended to `logPath`. The
 * process is SIGKILLed if this Node process exits (or gets SIGINT/SIGTERM)
 * before it is stopped.
 */
export function spawnManaged(
  name: string,
  command: string,
  args: readonly string[],
  logPath: string,
  options: SpawnManagedOptions = {},
): ManagedProcess {
  installExitHooks();
  const fd = fs.openSync(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', fd, fd],
      ...(options.uid === undefined ? {} : { uid: options.uid }),
      ...(options.gid === undefined ? {} : { gid: options.gid }),
    });
  } finally {
    fs.closeSync(fd);
  }
  liveChildren.add(child);
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (done) return;
      done = true;
      liveChildren.delete(child);
      resolve({ code, signal });
    };
    child.once('exit', finish);
    child.once('error', (err) => {
      fs.appendFileSync(logPath, `\n[spawn error] ${String(err)}\n`);
      finish(null, null);
    });
  });
  return {
    name,
    child,
    logPath,
    exited,
    hasExited: () => done,
    logTail: (lines = 40) => tailFile(logPath, lines),
    async stop(graceMs = 10_000) {
      if (done) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!done) child.kill('SIGKILL');
      }, graceMs);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

export function tailFile(file: string, lines = 40): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    return `(cannot read ${file}: ${String(err)})`;
  }
  const all = text.trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}

// -------------------------------------------------------- control plane

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
  /** PEM of the apiserver's (self-signed) serving CA. */
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
  installExitHooks();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'prestop-e2e-'));
  liveDirs.add(dir);
  let etcd: ManagedProcess | undefined;
  let apiserver: ManagedProcess | undefined;
  try {
    const started = await startEtcd(tools, dir);
    etcd = started.proc;
    const api = await startApiserver(tools, dir, started.clientUrl, etcd, options);
    apiserver = api.proc;

    const kubeconfigPath = path.join(dir, 'kubeconfig');
    await writeKubeconfig(kubeconfigPath, api.server, api.caPem, api.token);
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    const info = await kubeConfig.makeApiClient(VersionApi).getCode();

    const etcdProc = etcd;
    const apiProc = apiserver;
    let stopping: Promise<void> | undefined;
    const cp: ControlPlane = {
      server: api.server,
      kubeconfigPath,
      kubeConfig,
      version: info.gitVersion,
      minorVersion: `${info.major}.${info.minor.replace(/\D+$/, '')}`,
      adminToken: api.token,
      caPem: api.caPem,
      dir,
      etcd: etcdProc,
      apiserver: apiProc,
      core: kubeConfig.makeApiClient(CoreV1Api),
      admission: kubeConfig.makeApiClient(AdmissionregistrationV1Api),
      logTails: (lines = 40) => formatTails([apiProc, etcdProc], lines),
      stop() {
        stopping ??= stopAll([apiProc, etcdProc], dir);
        return stopping;
      },
    };
    return cp;
  } catch (err) {
    const procs = [apiserver, etcd].filter((p): p is ManagedProcess => p !== undefined);
    await stopAll(procs, dir);
    throw err;
  }
}

async function stopAll(procs: ManagedProcess[], dir: string): Promise<void> {
  // apiserver first, then etcd.
  for (const proc of procs) await proc.stop();
  liveDirs.delete(dir);
  if (!keepTmp) await fsp.rm(dir, { recursive: true, force: true });
}

function formatTails(procs: ManagedProcess[], lines: number): string {
  return procs
    .map(
      (p) => `----- last ${lines} lines of ${p.name} log (${p.logPath}) -----\n${p.logTail(lines)}`,
    )
    .join('\n');
}

const ADDRESS_IN_USE = /address already in use/i;

async function startEtcd(
  tools: Tools,
  dir: string,
): Promise<{ proc: ManagedProcess; clientUrl: string }> {
  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const clientPort = await getFreePort();
    const peerPort = await getFreePort();
    const clientUrl = `http://127.0.0.1:${clientPort}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;
    const dataDir = path.join(dir, `etcd-data-${attempt}`);
    const logPath = path.join(dir, 'etcd.log');
    const proc = spawnManaged(
      'etcd',
      tools.etcd,
      [
        '--name=default',
        `--data-dir=${dataDir}`,
        `--listen-client-urls=${clientUrl}`,
        `--advertise-client-urls=${clientUrl}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=default=${peerUrl}`,
        '--initial-cluster-state=new',
        // Test data; durability does not matter, speed does.
        '--unsafe-no-fsync=true',
        '--log-level=warn',
      ],
      logPath,
    );
    try {
      await waitFor('etcd /health', 30_000, async () => {
        if (proc.hasExited()) throw new ExitedError('etcd exited');
        const res = await request(`${clientUrl}/health`, {});
        return res.status === 200 && /"health":\s*"true"/.test(res.body);
      });
      return { proc, clientUrl };
    } catch (err) {
      await proc.stop();
      const tail = proc.logTail(40);
      lastError = new Error(
        `etcd did not become healthy: ${(err as Error).message}\n` +
          `----- last lines of ${logPath} -----\n${tail}`,
      );
      if (!ADDRESS_IN_USE.test(tail)) break;
    }
  }
  throw lastError ?? new Error('etcd failed to start');
}

async function startApiserver(
  tools: Tools,
  dir: string,
  etcdUrl: string,
  etcd: ManagedProcess,
  options: StartControlPlaneOptions,
): Promise<{ proc: ManagedProcess; server: string; caPem: string; token: string }> {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
  const saPub = path.join(dir, 'sa.pub');
  const saKey = path.join(dir, 'sa.key');
  await fsp.writeFile(saPub, publicKey, { mode: 0o600 });
  await fsp.writeFile(saKey, privateKey, { mode: 0o600 });

  const token = randomBytes(24).toString('hex');
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
        `--service-account-key-file=${saPub}`,
        `--service-account-signing-key-file=${saKey}`,
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
        const res = await request(`${server}/readyz?verbose`, { ca: caPem, token });
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
    users: [{ name: 'e2e-admin', user: { token } }],
    contexts: [{ name: 'e2e', context: { cluster: 'e2e', user: 'e2e-admin' } }],
    'current-context': 'e2e',
  };
  await fsp.writeFile(file, JSON.stringify(config, null, 2) + '\n', { mode });
  await fsp.chmod(file, mode);
}

/** Runs a command to its end, collecting its output; killed after `timeoutMs`. */
export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCommand(
  file: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      env: options.env ?? process.env,
      cwd: options.cwd ?? repoRoot,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

/**
 * A test-body wrapper that prints the webhook's and the control plane's log
 * tails when the body fails: the logs that explain an e2e failure.
 */
export function logsOnFailure(
  processes: () => {
    webhook?: { logTail(lines: number): string } | undefined;
    cp?: ControlPlane | undefined;
  },
  webhookLines = 40,
): (fn: () => Promise<void>) => Promise<void> {
  const logs = () => {
    const { webhook, cp } = processes();
    return [
      webhook ? `----- webhook log -----\n${webhook.logTail(webhookLines)}` : '',
      cp ? cp.logTails(20) : '',
    ]
      .filter(Boolean)
      .join('\n');
  };
  return async (fn) => {
    try {
      await fn();
    } catch (err) {
      console.error(logs());
      throw err;
    }
  };
}

class ExitedError extends Error {}

/** Polls `check` every 250 ms until it returns true or `timeoutMs` passes. */
export async function waitFor(
  what: string,
  timeoutMs: number,
  check: () => Promise<boolean>,
  intervalMs = 250,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      if (err instanceof ExitedError) throw err;
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const detail = lastError === undefined ? '' : ` (last error: ${String(lastError)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

function request(
  url: string,
  opts: { ca?: string; token?: string },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const headers: Record<string, string> = {};
    if (opts.token) headers['Authorization'] = `Bearer ${opts.token}`;
    const onResponse = (res: http.IncomingMessage): void => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    };
    const req =
      u.protocol === 'https:'
        ? https.get(u, { headers, ca: opts.ca, agent: false }, onResponse)
        : http.get(u, { headers, agent: false }, onResponse);
    req.setTimeout(5_000, () => req.destroy(new Error(`request to ${url} timed out`)));
    req.on('error', reject);
  });
}

// ----------------------------------------------------- API conveniences

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

export async function readPod(cp: ControlPlane, namespace: string, name: string): Promise<V1Pod> {
  return cp.core.readNamespacedPod({ namespace, name });
}

/** A minimal pod with one container. Never runs (there is no kubelet). */
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
      containers: [{ name: 'app', image: 'registry.k8s.io/pause:3.10' }],
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

// ------------------------------------------------------ webhook process

export interface DevCerts {
  dir: string;
  caPem: string;
  certPath: string;
  keyPath: string;
}

/** Runs certs/generate.sh into a new temp dir (SANs localhost, 127.0.0.1, extras). */
export async function generateDevCerts(extraSans: string[] = []): Promise<DevCerts> {
  installExitHooks();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'prestop-e2e-certs-'));
  liveDirs.add(dir);
  const result = await runCommand('bash', [
    path.join(repoRoot, 'certs', 'generate.sh'),
    dir,
    ...extraSans,
  ]);
  if (result.code !== 0) {
    throw new Error(`certs/generate.sh failed (${result.code}):\n${result.stdout}${result.stderr}`);
  }
  return {
    dir,
    caPem: await fsp.readFile(path.join(dir, 'ca.crt'), 'utf8'),
    certPath: path.join(dir, 'tls.crt'),
    keyPath: path.join(dir, 'tls.key'),
  };
}

export interface WebhookProcess {
  /** https://127.0.0.1:PORT/mutate */
  url: string;
  /** http://127.0.0.1:HEALTH_PORT */
  healthBase: string;
  port: number;
  healthPort: number;
  /** PEM of the CA that signed the serving certificate (for caBundle). */
  caPem: string;
  certs: DevCerts;
  proc: ManagedProcess;
  logTail(lines?: number): string;
  /** SIGTERM (graceful), SIGKILL after 25 s; removes its temp dirs. */
  stop(): Promise<void>;
}

export interface StartWebhookOptions {
  /** Kubeconfig for the webhook's cluster view; omitted: `--cluster off`. */
  kubeconfigPath?: string;
  injectDefault?: 'enabled' | 'disabled';
  /** e.g. "1.37"; omitted: read from the cluster (or unknown without one). */
  kubeVersion?: string;
  /** More `--flag value` arguments for `serve`. */
  extraArgs?: string[];
  /** Reuse certificates (e.g. to restart the webhook behind the same caBundle). */
  certs?: DevCerts;
  readyTimeoutMs?: number;
}

/**
 * Starts `node src/cli.ts serve` on 127.0.0.1 with dev certificates and waits
 * for its /readyz. Uses this process's Node (the pinned Node 24).
 */
export async function startWebhook(opts: StartWebhookOptions = {}): Promise<WebhookProcess> {
  installExitHooks();
  const certs = opts.certs ?? (await generateDevCerts());
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'prestop-e2e-webhook-'));
  liveDirs.add(dir);
  const logPath = path.join(dir, 'webhook.log');
  const env: NodeJS.ProcessEnv = { ...process.env };
  // The server reads these as option defaults; keep the test deterministic.
  for (const key of Object.keys(env)) {
    if (key.startsWith('PRESTOP_') || key === 'KUBECONFIG' || key === 'POD_NAMESPACE') {
      delete env[key];
    }
  }
  delete env['KUBERNETES_SERVICE_HOST'];
  let lastError: Error | undefined;
  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = await getFreePort();
    const healthPort = await getFreePort();
    const args = [
      path.join(repoRoot, 'src', 'cli.ts'),
      'serve',
      '--host',
      '127.0.0.1',
      '--port',
      String(port),
      '--health-port',
      String(healthPort),
      '--tls-cert',
      certs.certPath,
      '--tls-key',
      certs.keyPath,
      '--inject-default',
      opts.injectDefault ?? 'disabled',
      ...(opts.kubeVersion ? ['--kube-version', opts.kubeVersion] : []),
      ...(opts.kubeconfigPath
        ? ['--cluster', 'on', '--kubeconfig', opts.kubeconfigPath]
        : ['--cluster', 'off']),
      ...(opts.extraArgs ?? []),
    ];
    fs.appendFileSync(logPath, `\n[e2e] attempt ${attempt}: node ${args.join(' ')}\n`);
    const proc = spawnManaged('webhook', process.execPath, args, logPath, { cwd: repoRoot, env });
    const healthBase = `http://127.0.0.1:${healthPort}`;
    try {
      await waitFor('webhook /readyz', opts.readyTimeoutMs ?? 30_000, async () => {
        if (proc.hasExited()) throw new ExitedError('webhook exited');
        const res = await request(`${healthBase}/readyz`, {});
        return res.status === 200;
      });
      let stopping: Promise<void> | undefined;
      return {
        url: `https://127.0.0.1:${port}/mutate`,
        healthBase,
        port,
        healthPort,
        caPem: certs.caPem,
        certs,
        proc,
        logTail: (lines = 40) => proc.logTail(lines),
        stop() {
          stopping ??= (async () => {
            await proc.stop(25_000);
            liveDirs.delete(dir);
            if (!keepTmp) await fsp.rm(dir, { recursive: true, force: true });
            if (!opts.certs) {
              liveDirs.delete(certs.dir);
              if (!keepTmp) await fsp.rm(certs.dir, { recursive: true, force: true });
            }
          })();
          return stopping;
        },
      };
    } catch (err) {
      await proc.stop(5_000);
      const tail = proc.logTail(40);
      lastError = new Error(
        `webhook did not become ready: ${(err as Error).message}\n` +
          `----- last lines of ${logPath} -----\n${tail}`,
      );
      if (!/EADDRINUSE|address already in use/i.test(tail)) break;
    }
  }
  throw lastError ?? new Error('webhook failed to start');
}

// ------------------------------- identities, audit log, apiserver restarts

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

/** One line of the API server's JSON audit log (the fields the tests read). */
export interface AuditEvent {
  auditID: string;
  stage: string;
  verb: string;
  requestURI: string;
  user: { username: string };
  objectRef?: { resource?: string; namespace?: string; name?: string };
  responseStatus?: { code?: number };
  requestReceivedTimestamp: string;
}

export interface AuditLog {
  /** kube-apiserver flags: pass as `extraApiserverArgs`. */
  args: string[];
  path: string;
  /** Every event so far. */
  events(): AuditEvent[];
}

/**
 * An audit policy that records, at Metadata level, every request made by the
 * given users or members of the given groups (and nothing else), logged
 * synchronously to a JSON-lines file. Start the control plane with its args.
 */
export async function prepareAuditLog(who: {
  users?: string[];
  groups?: string[];
}): Promise<AuditLog> {
  installExitHooks();
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'prestop-e2e-audit-'));
  liveDirs.add(dir);
  const policyPath = path.join(dir, 'policy.json');
  const logPath = path.join(dir, 'audit.log');
  const policy = {
    apiVersion: 'audit.k8s.io/v1',
    kind: 'Policy',
    omitStages: ['RequestReceived'],
    rules: [
      ...(who.users ? [{ level: 'Metadata', users: who.users }] : []),
      ...(who.groups ? [{ level: 'Metadata', userGroups: who.groups }] : []),
      { level: 'None' },
    ],
  };
  await fsp.writeFile(policyPath, JSON.stringify(policy, null, 2) + '\n');
  return {
    args: [
      `--audit-policy-file=${policyPath}`,
      `--audit-log-path=${logPath}`,
      '--audit-log-format=json',
      // Written before the response: a finished request is already in the file.
      '--audit-log-mode=blocking',
    ],
    path: logPath,
    events() {
      let text: string;
      try {
        text = fs.readFileSync(logPath, 'utf8');
      } catch {
        return [];
      }
      // The last piece is empty, or a line still being written.
      return text
        .split('\n')
        .slice(0, -1)
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line) as AuditEvent);
    },
  };
}

export interface NamespaceRequestCounts {
  list: number;
  watch: number;
  /** GETs of one namespace. */
  read: number;
  version: number;
}

/** A user's requests for namespaces and /version, counted from the audit log. */
export function countNamespaceRequests(audit: AuditLog, username: string): NamespaceRequestCounts {
  const seen = new Set<string>();
  const counts = { list: 0, watch: 0, read: 0, version: 0 };
  for (const event of audit.events()) {
    // A watch logs ResponseStarted, then ResponseComplete: count it once.
    if (event.user.username !== username || seen.has(event.auditID)) continue;
    seen.add(event.auditID);
    if (event.requestURI === '/version') counts.version++;
    else if (event.objectRef?.resource !== 'namespaces') continue;
    else if (event.verb === 'list') counts.list++;
    else if (event.verb === 'watch') counts.watch++;
    else if (event.verb === 'get') counts.read++;
  }
  return counts;
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
    const res = await request(`${cp.server}/readyz`, { ca: cp.caPem, token: cp.adminToken });
    return res.status === 200;
  });
  return proc;
}
