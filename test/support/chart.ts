// Helpers for the Helm chart's end-to-end tests: helm and kubectl runs, raw
// API requests (with the warnings the API server returns), server-side dry
// runs of rendered manifests, the README's install commands, and a stand-in
// for the parts of a cluster that do not run here (kubelet, controllers).

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import {
  spawnManaged,
  runCommand,
  waitFor,
  writeKubeconfig,
  type CommandResult,
  type ControlPlane,
  type ManagedProcess,
  type Tools,
} from './control-plane.ts';
import { containerProcess, type Stage } from './dockerfile.ts';

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const chartDir = path.join(repoRoot, 'charts', 'prestop-injector');

/** A Kubernetes object as rendered or read back: loosely typed on purpose. */
export type KubeObject = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    generation?: number;
    [key: string]: unknown;
  };
  [key: string]: unknown;
};

// ------------------------------------------------------------ processes

export { runCommand, type CommandResult } from './control-plane.ts';

/** A scratch directory removed by the returned function. */
export async function scratchDir(
  prefix: string,
): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `prestop-${prefix}-`));
  // Traversable by the non-root users that the image and pods run as.
  await fsp.chmod(dir, 0o755);
  return {
    dir,
    remove: async () => {
      if (process.env['PRESTOP_E2E_KEEP_TMP'] !== '1')
        await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Environment for helm and kubectl: the tools on PATH, the control plane's
 * admin kubeconfig, and a private HOME (helm's and kubectl's caches).
 */
export async function toolEnvironment(
  tools: Tools,
  cp: ControlPlane,
  dir: string,
): Promise<NodeJS.ProcessEnv> {
  const bin = path.join(dir, 'bin');
  const home = path.join(dir, 'home');
  await fsp.mkdir(bin, { recursive: true });
  await fsp.mkdir(home, { recursive: true });
  for (const [name, target] of [
    ['helm', tools.helm],
    ['kubectl', tools.kubectl],
  ] as const) {
    await fsp.rm(path.join(bin, name), { force: true });
    await fsp.symlink(target, path.join(bin, name));
  }
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) if (/^(HELM_|KUBE)/.test(key)) delete env[key];
  return {
    ...env,
    PATH: `${bin}:${process.env['PATH'] ?? ''}`,
    HOME: home,
    KUBECONFIG: cp.kubeconfigPath,
  };
}

// ------------------------------------------------------------------ helm

export interface RenderOptions {
  release?: string;
  namespace: string;
  /** e.g. "1.37.2"; helm's own default otherwise. */
  kubeVersion?: string;
  /** --set-json pairs, so types survive (numbers, lists, objects). */
  values?: Record<string, unknown>;
  /** Show tests (the helm test pod) too. */
  withTests?: boolean;
}

export function setJsonArgs(values: Record<string, unknown> = {}): string[] {
  return Object.entries(values).flatMap(([key, value]) => [
    '--set-json',
    `${key}=${JSON.stringify(value)}`,
  ]);
}

/** The one value the chart requires: the image's repository (never pulled here). */
export const IMAGE_VALUES: Readonly<Record<string, unknown>> = {
  'image.repository': 'registry.example.com/prestop-injector',
};

/** `helm template` (with IMAGE_VALUES); rejects with helm's stderr when it fails. */
export async function helmTemplate(tools: Tools, opts: RenderOptions): Promise<KubeObject[]> {
  const args = [
    'template',
    opts.release ?? 'prestop-injector',
    chartDir,
    '--namespace',
    opts.namespace,
    ...(opts.kubeVersion ? ['--kube-version', opts.kubeVersion] : []),
    ...setJsonArgs({ ...IMAGE_VALUES, ...opts.values }),
  ];
  const result = await runCommand(tools.helm, args, { env: helmOnlyEnv() });
  if (result.code !== 0) throw new HelmError(`helm ${args.join(' ')}`, result);
  const docs = parseManifests(result.stdout);
  return opts.withTests === false
    ? docs.filter((d) => d.metadata.annotations?.['helm.sh/hook'] !== 'test')
    : docs;
}

export class HelmError extends Error {
  readonly command: string;
  readonly result: CommandResult;
  constructor(command: string, result: CommandResult) {
    super(`${command} failed (exit ${result.code}):\n${result.stderr}${result.stdout}`);
    this.command = command;
    this.result = result;
  }
}

function helmOnlyEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) if (/^(HELM_|KUBE)/.test(key)) delete env[key];
  return env;
}

export function parseManifests(text: string): KubeObject[] {
  return parseAllDocuments(text)
    .map((doc) => doc.toJS() as unknown)
    .filter((obj): obj is KubeObject => typeof obj === 'object' && obj !== null && 'kind' in obj);
}

export function findObject(docs: readonly KubeObject[], kind: string, name?: string): KubeObject {
  const found = docs.find(
    (d) => d.kind === kind && (name === undefined || d.metadata.name === name),
  );
  if (found === undefined) {
    throw new Error(
      `no ${kind}${name ? ` ${name}` : ''} in: ${docs.map((d) => `${d.kind}/${d.metadata.name}`).join(', ')}`,
    );
  }
  return found;
}

// ---------------------------------------------------------- raw API calls

export interface ApiResponse<T = unknown> {
  status: number;
  body: T;
  /** Text of each `Warning` header (e.g. PodSecurity warnings). */
  warnings: string[];
}

export function api<T = Record<string, unknown>>(
  cp: ControlPlane,
  method: string,
  urlPath: string,
  body?: unknown,
  contentType = 'application/json',
): Promise<ApiResponse<T>> {
  return new Promise((resolve, reject) => {
    const url = new URL(urlPath, cp.server);
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request(
      url,
      {
        method,
        ca: cp.caPem,
        agent: false,
        headers: {
          Authorization: `Bearer ${cp.adminToken}`,
          Accept: 'application/json',
          ...(payload === undefined
            ? {}
            : { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(payload) }),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          const header = res.headers['warning'];
          const raw = header === undefined ? [] : Array.isArray(header) ? header : [header];
          // "299 - \"text\"", possibly several joined by commas.
          const warnings = raw.flatMap((h) =>
            [...h.matchAll(/\d{3} \S+ "((?:[^"\\]|\\.)*)"/g)].map((m) =>
              m[1]!.replace(/\\(.)/g, '$1'),
            ),
          );
          let parsed: unknown = text;
          try {
            parsed = text === '' ? {} : JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed as T, warnings });
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${urlPath} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

interface ResourceInfo {
  plural: string;
  namespaced: boolean;
}

const discoveryCache = new WeakMap<ControlPlane, Map<string, ResourceInfo>>();

/** Resource name and scope of an apiVersion/kind, from the API server's discovery. */
export async function resourceFor(
  cp: ControlPlane,
  apiVersion: string,
  kind: string,
): Promise<ResourceInfo> {
  let cache = discoveryCache.get(cp);
  if (cache === undefined) {
    cache = new Map();
    discoveryCache.set(cp, cache);
  }
  const key = `${apiVersion}/${kind}`;
  const cached = cache.get(key);
  if (cached !== undefined) return cached;
  const base = apiVersion.includes('/') ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
  const res = await api<{ resources?: { name: string; kind: string; namespaced: boolean }[] }>(
    cp,
    'GET',
    base,
  );
  if (res.status !== 200) throw new Error(`discovery of ${apiVersion} failed: HTTP ${res.status}`);
  for (const r of res.body.resources ?? []) {
    if (r.name.includes('/')) continue;
    cache.set(`${apiVersion}/${r.kind}`, { plural: r.name, namespaced: r.namespaced });
  }
  const found = cache.get(key);
  if (found === undefined) throw new Error(`the API server does not serve ${apiVersion} ${kind}`);
  return found;
}

export async function collectionPath(
  cp: ControlPlane,
  obj: Pick<KubeObject, 'apiVersion' | 'kind'>,
  namespace?: string,
): Promise<string> {
  const { plural, namespaced } = await resourceFor(cp, obj.apiVersion, obj.kind);
  const base = obj.apiVersion.includes('/') ? `/apis/${obj.apiVersion}` : `/api/${obj.apiVersion}`;
  if (!namespaced) return `${base}/${plural}`;
  if (!namespace) throw new Error(`${obj.kind} is namespaced: a namespace is needed`);
  return `${base}/namespaces/${namespace}/${plural}`;
}

/** POST an object (optionally as a server-side dry run). */
export async function createObject(
  cp: ControlPlane,
  obj: KubeObject,
  opts: { dryRun?: boolean; namespace?: string } = {},
): Promise<ApiResponse<KubeObject & { message?: string }>> {
  const collection = await collectionPath(cp, obj, opts.namespace ?? obj.metadata.namespace);
  return api(cp, 'POST', `${collection}${opts.dryRun ? '?dryRun=All' : ''}`, obj);
}

export async function readObject(
  cp: ControlPlane,
  ref: Pick<KubeObject, 'apiVersion' | 'kind'> & { name: string; namespace?: string },
): Promise<KubeObject | null> {
  const collection = await collectionPath(cp, ref, ref.namespace);
  const res = await api<KubeObject>(cp, 'GET', `${collection}/${ref.name}`);
  if (res.status === 404) return null;
  if (res.status !== 200) throw new Error(`GET ${ref.kind} ${ref.name}: HTTP ${res.status}`);
  return res.body;
}

export async function listObjects(
  cp: ControlPlane,
  ref: Pick<KubeObject, 'apiVersion' | 'kind'> & { namespace?: string; labelSelector?: string },
): Promise<KubeObject[]> {
  const collection = await collectionPath(cp, ref, ref.namespace);
  const query = ref.labelSelector ? `?labelSelector=${encodeURIComponent(ref.labelSelector)}` : '';
  const res = await api<{ items: KubeObject[] }>(cp, 'GET', `${collection}${query}`);
  if (res.status !== 200) throw new Error(`LIST ${ref.kind}: HTTP ${res.status}`);
  return res.body.items;
}

/** A token for a ServiceAccount from the TokenRequest API (signed by the API server). */
export async function serviceAccountToken(
  cp: ControlPlane,
  namespace: string,
  name: string,
): Promise<string> {
  const res = await api<{ status?: { token?: string } }>(
    cp,
    'POST',
    `/api/v1/namespaces/${namespace}/serviceaccounts/${name}/token`,
    {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec: { expirationSeconds: 3600 },
    },
  );
  const token = res.body.status?.token;
  if (res.status !== 201 || !token)
    throw new Error(
      `TokenRequest ${namespace}/${name}: HTTP ${res.status} ${JSON.stringify(res.body)}`,
    );
  return token;
}

export async function writeTokenKubeconfig(
  file: string,
  cp: ControlPlane,
  token: string,
): Promise<void> {
  // Read by the stand-in pod's uid, not only by the test's.
  await writeKubeconfig(file, cp.server, cp.caPem, token, 0o644);
}

/** Installs cert-manager's CRDs (from its Go module, through the Go module proxy). */
export async function installCertManagerCrds(cp: ControlPlane): Promise<string[]> {
  const version = 'v1.21.2';
  const result = await runCommand(
    'go',
    ['mod', 'download', '-json', `github.com/cert-manager/cert-manager@${version}`],
    { cwd: os.tmpdir(), env: { ...process.env, GOFLAGS: '-mod=mod' } },
  );
  if (result.code !== 0) throw new Error(`go mod download cert-manager failed:\n${result.stderr}`);
  const dir = (JSON.parse(result.stdout) as { Dir?: string }).Dir;
  if (!dir) throw new Error(`go mod download printed no Dir:\n${result.stdout}`);
  const crdDir = path.join(dir, 'deploy', 'crds');
  const names: string[] = [];
  for (const file of ['cert-manager.io_issuers.yaml', 'cert-manager.io_certificates.yaml']) {
    const [crd] = parseManifests(await fsp.readFile(path.join(crdDir, file), 'utf8'));
    if (crd === undefined) throw new Error(`${file} holds no CRD`);
    const res = await createObject(cp, crd);
    if (res.status !== 201 && res.status !== 409)
      throw new Error(
        `creating ${crd.metadata.name}: HTTP ${res.status} ${JSON.stringify(res.body)}`,
      );
    names.push(crd.metadata.name);
  }
  await waitFor('cert-manager CRDs to be served', 30_000, async () => {
    for (const kind of ['Issuer', 'Certificate']) {
      discoveryCache.delete(cp);
      await resourceFor(cp, 'cert-manager.io/v1', kind);
    }
    return true;
  });
  return names;
}

// ---------------------------------------------------------- the README

export interface ReadmeBlock {
  /** Commands (continuation lines joined), without comments. */
  commands: string[];
  /** The text block right after it: the last command's expected output. */
  expectedOutput?: string;
}

/** The fenced sh blocks between `<!-- install:start -->` and `<!-- install:end -->`. */
export function readInstallSection(readme: string): ReadmeBlock[] {
  const start = readme.indexOf('<!-- install:start -->');
  const end = readme.indexOf('<!-- install:end -->');
  if (start === -1 || end < start) throw new Error('README: install markers not found');
  const section = readme.slice(start, end);
  const blocks: ReadmeBlock[] = [];
  for (const match of section.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)) {
    const lang = match[1];
    const body = match[2] ?? '';
    if (lang === 'sh') {
      blocks.push({ commands: shellCommands(body) });
    } else if (lang === 'text') {
      const last = blocks.at(-1);
      if (last === undefined || last.expectedOutput !== undefined)
        throw new Error('README install section: a text block must follow an sh block');
      last.expectedOutput = body;
    } else {
      // Commands in any other block would not be run: keep them out.
      throw new Error(`README install section: a \`\`\`${lang} block; only sh and text are run`);
    }
  }
  return blocks;
}

function shellCommands(body: string): string[] {
  const commands: string[] = [];
  let current = '';
  for (const line of body.split('\n')) {
    if (current === '' && (line.trim() === '' || line.trim().startsWith('#'))) continue;
    if (line.endsWith('\\')) {
      current += line.slice(0, -1).trimEnd() + ' ';
      continue;
    }
    current += line.trim();
    commands.push(current.trim());
    current = '';
  }
  if (current.trim() !== '') commands.push(current.trim());
  return commands;
}

/** Lines with trailing blanks removed, no trailing empty lines. */
export function normaliseOutput(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n')
    .trim();
}

// ------------------------------------------------- the cluster stand-in

export interface StandInOptions {
  cp: ControlPlane;
  /** The image's runtime stage, built by buildLikeDockerfile. */
  image: Stage;
  /** Namespace whose Deployments and test pods are "run". */
  namespace: string;
  /** Loopback port for each named container port (a pod's own IP, translated). */
  hostPorts: Record<string, number>;
  /** Environment added on top of the container's: the network translation. */
  envOverrides: Record<string, string>;
  dir: string;
}

interface RunningDeployment {
  name: string;
  templateKey: string;
  proc: ManagedProcess;
  starts: number;
}

/**
 * What the kubelet, the scheduler and the Deployment controller would do for
 * the chart's workloads, done by hand for one namespace:
 *
 * - each Deployment's pod template runs as ONE process from the image layout
 *   (command and args resolved as a container runtime does; env with its
 *   fieldRefs; Secret volumes written to files whose paths replace the mount
 *   paths in env values; the pod's ServiceAccount as a TokenRequest token in
 *   a kubeconfig, the translation of in-cluster config; runAsUser/runAsGroup
 *   as the process's uid/gid). A new template restarts it, as a rollout
 *   would. When its readinessProbe passes, the Deployment's status is set
 *   as the controller would (so `kubectl rollout status` works).
 * - each helm test pod runs once to completion; its phase is set from the
 *   exit code (so `helm test` works).
 *
 * A process is left running after its Deployment is deleted, until stop():
 * a pod then created untouched shows that the API server no longer calls it.
 */
export class ClusterStandIn {
  private readonly running = new Map<string, RunningDeployment>();
  private readonly testPods = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private busy = false;
  private stopped = false;
  private lastError: unknown;
  readonly events: string[] = [];
  private readonly opts: StandInOptions;

  constructor(opts: StandInOptions) {
    this.opts = opts;
  }

  start(): void {
    const tick = async () => {
      if (this.busy || this.stopped) return;
      this.busy = true;
      try {
        await this.reconcile();
        this.lastError = undefined;
      } catch (err) {
        if (String(err) !== String(this.lastError)) this.events.push(`error: ${String(err)}`);
        this.lastError = err;
      } finally {
        this.busy = false;
      }
    };
    this.timer = setInterval(() => void tick(), 300);
  }

  /** Processes started for a Deployment so far. */
  starts(deployment: string): number {
    return this.running.get(deployment)?.starts ?? 0;
  }

  process(deployment: string): ManagedProcess | undefined {
    return this.running.get(deployment)?.proc;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    while (this.busy) await new Promise((r) => setTimeout(r, 50));
    for (const run of this.running.values()) await run.proc.stop(25_000);
  }

  private async reconcile(): Promise<void> {
    const { cp, namespace } = this.opts;
    const deployments = await listObjects(cp, {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      namespace,
    });
    for (const deployment of deployments) await this.reconcileDeployment(deployment);
    const pods = await listObjects(cp, { apiVersion: 'v1', kind: 'Pod', namespace });
    for (const pod of pods) {
      const hook = pod.metadata.annotations?.['helm.sh/hook'] ?? '';
      const phase = (pod['status'] as { phase?: string } | undefined)?.phase ?? 'Pending';
      const uid = String(pod.metadata['uid']);
      if (hook.split(',').includes('test') && phase === 'Pending' && !this.testPods.has(uid)) {
        this.testPods.add(uid);
        await this.runTestPod(pod);
      }
    }
  }

  private async reconcileDeployment(deployment: KubeObject): Promise<void> {
    const name = deployment.metadata.name;
    const spec = deployment['spec'] as { replicas?: number; template: PodTemplate };
    const templateKey = JSON.stringify(spec.template);
    let run = this.running.get(name);
    if (run?.templateKey !== templateKey) {
      if (run !== undefined) {
        this.events.push(`${name}: template changed; restarting`);
        await run.proc.stop(25_000);
      }
      const proc = await this.startContainer(`deploy-${name}`, spec.template, `${name}-standin`);
      run = { name, templateKey, proc, starts: (run?.starts ?? 0) + 1 };
      this.running.set(name, run);
      const start = run.starts;
      this.events.push(`${name}: started (start ${start})`);
      void proc.exited.then(({ code, signal }) =>
        this.events.push(`${name}: start ${start} exited (${code ?? signal})`),
      );
    }
    const status = deployment['status'] as { observedGeneration?: number } | undefined;
    if (status?.observedGeneration === deployment.metadata.generation) return;
    const container = spec.template.spec.containers[0]!;
    const probe = container.readinessProbe?.httpGet;
    if (probe !== undefined) {
      const port = this.hostPort(container, probe.port);
      const ready = await httpStatus(`http://127.0.0.1:${port}${probe.path ?? '/'}`);
      if (ready !== 200) return;
    }
    const replicas = spec.replicas ?? 1;
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const condition = (type: string, reason: string) => ({
      type,
      status: 'True',
      reason,
      message: 'set by the e2e cluster stand-in once its process passed the readiness probe',
      lastUpdateTime: now,
      lastTransitionTime: now,
    });
    const res = await api(
      this.opts.cp,
      'PATCH',
      `/apis/apps/v1/namespaces/${this.opts.namespace}/deployments/${name}/status`,
      {
        status: {
          observedGeneration: deployment.metadata.generation,
          replicas,
          updatedReplicas: replicas,
          readyReplicas: replicas,
          availableReplicas: replicas,
          conditions: [
            condition('Available', 'MinimumReplicasAvailable'),
            condition('Progressing', 'NewReplicaSetAvailable'),
          ],
        },
      },
      'application/merge-patch+json',
    );
    if (res.status !== 200) throw new Error(`Deployment ${name} status: HTTP ${res.status}`);
    this.events.push(`${name}: generation ${deployment.metadata.generation} ready`);
  }

  private async runTestPod(pod: KubeObject): Promise<void> {
    const name = pod.metadata.name;
    const proc = await this.startContainer(`test-${name}`, pod as unknown as PodTemplate, name);
    const { code } = await proc.exited;
    const phase = code === 0 ? 'Succeeded' : 'Failed';
    this.events.push(`test pod ${name}: exit ${code}, ${phase}`);
    const res = await api(
      this.opts.cp,
      'PATCH',
      `/api/v1/namespaces/${this.opts.namespace}/pods/${name}/status`,
      { status: { phase, message: `run by the e2e cluster stand-in: exit ${code}` } },
      'application/merge-patch+json',
    );
    if (res.status !== 200)
      throw new Error(`test pod ${name} status: HTTP ${res.status} ${JSON.stringify(res.body)}`);
  }

  /** The output of a helm test pod run, for failure messages. */
  testPodLog(name: string): string {
    const file = path.join(this.opts.dir, `test-${name}`, 'container.log');
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '(no log)';
  }

  private hostPort(container: Container, port: string | number): number {
    const named =
      typeof port === 'number'
        ? container.ports?.find((p) => p.containerPort === port)?.name
        : port;
    const hostPort = named === undefined ? undefined : this.opts.hostPorts[named];
    if (hostPort === undefined) throw new Error(`no host port for container port ${port}`);
    return hostPort;
  }

  private async startContainer(
    key: string,
    template: PodTemplate,
    podName: string,
  ): Promise<ManagedProcess> {
    const { cp, namespace, image } = this.opts;
    const spec = template.spec;
    if (spec.containers.length !== 1) throw new Error(`${key}: one container expected`);
    const container = spec.containers[0]!;
    const dir = path.join(this.opts.dir, key);
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
    const fsGroup = spec.securityContext?.fsGroup;
    const uid = container.securityContext?.runAsUser ?? spec.securityContext?.runAsUser;
    const gid = container.securityContext?.runAsGroup ?? spec.securityContext?.runAsGroup;

    // Volumes: Secret items written where the container would see them.
    const mounts = new Map<string, string>();
    for (const mount of container.volumeMounts ?? []) {
      const volume = spec.volumes?.find((v) => v.name === mount.name);
      if (volume?.secret === undefined)
        throw new Error(`${key}: volume ${mount.name} is not a Secret`);
      const secret = await readObject(cp, {
        apiVersion: 'v1',
        kind: 'Secret',
        name: volume.secret.secretName,
        namespace,
      });
      if (secret === null) throw new Error(`${key}: Secret ${volume.secret.secretName} not found`);
      const data = (secret['data'] ?? {}) as Record<string, string>;
      const volumeDir = path.join(dir, 'volumes', mount.name);
      await fsp.mkdir(volumeDir, { recursive: true, mode: 0o755 });
      const items = volume.secret.items ?? Object.keys(data).map((k) => ({ key: k, path: k }));
      for (const item of items) {
        const value = data[item.key];
        if (value === undefined) throw new Error(`${key}: Secret has no key ${item.key}`);
        const file = path.join(volumeDir, item.path);
        await fsp.writeFile(file, Buffer.from(value, 'base64'));
        await fsp.chmod(file, volume.secret.defaultMode ?? 0o644);
        if (fsGroup !== undefined) await fsp.chown(file, 0, fsGroup);
      }
      mounts.set(mount.mountPath, volumeDir);
    }
    const inContainer = (value: string): string => {
      for (const [mountPath, hostDir] of mounts) {
        if (value === mountPath || value.startsWith(`${mountPath}/`))
          return hostDir + value.slice(mountPath.length);
      }
      return value;
    };

    const env: Record<string, string> = { ...image.env };
    for (const variable of container.env ?? []) {
      if (variable.value !== undefined) {
        env[variable.name] = inContainer(variable.value);
        continue;
      }
      if (variable.valueFrom === undefined) {
        // An empty value is not stored (omitempty); the kubelet sets "".
        env[variable.name] = '';
        continue;
      }
      const field = variable.valueFrom.fieldRef?.fieldPath;
      const fields: Record<string, string> = {
        'metadata.namespace': namespace,
        'metadata.name': podName,
        'spec.serviceAccountName': spec.serviceAccountName ?? 'default',
      };
      const resolved = field === undefined ? undefined : fields[field];
      if (resolved === undefined)
        throw new Error(`${key}: env ${variable.name} is not supported here`);
      env[variable.name] = resolved;
    }
    if (spec.automountServiceAccountToken !== false && spec.serviceAccountName) {
      const token = await serviceAccountToken(cp, namespace, spec.serviceAccountName);
      const kubeconfig = path.join(dir, 'kubeconfig');
      await writeTokenKubeconfig(kubeconfig, cp, token);
      env['KUBECONFIG'] = kubeconfig;
    }
    Object.assign(env, this.opts.envOverrides);

    const run = containerProcess(image, container);
    const logPath = path.join(dir, 'container.log');
    fs.appendFileSync(
      logPath,
      `[stand-in] uid ${uid} gid ${gid}: node ${run.args.join(' ').slice(0, 200)}\n`,
    );
    return spawnManaged(key, run.file, run.args, logPath, {
      cwd: run.cwd,
      env,
      ...(uid === undefined ? {} : { uid }),
      ...(gid === undefined ? {} : { gid }),
    });
  }
}

interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string }[];
  readinessProbe?: { httpGet?: { path?: string; port: string | number } };
  securityContext?: { runAsUser?: number; runAsGroup?: number };
}

interface PodTemplate {
  metadata?: unknown;
  spec: {
    containers: Container[];
    serviceAccountName?: string;
    automountServiceAccountToken?: boolean;
    securityContext?: { runAsUser?: number; runAsGroup?: number; fsGroup?: number };
    volumes?: {
      name: string;
      secret?: {
        secretName: string;
        defaultMode?: number;
        items?: { key: string; path: string }[];
      };
    }[];
  };
}

function httpStatus(url: string): Promise<number> {
  return fetch(url, { signal: AbortSignal.timeout(2_000) }).then(
    (res) => res.status,
    () => 0,
  );
}
