// Helpers for the Helm chart's tests: helm and kubectl runs, raw API
// requests (with the warnings the API server returns), server-side dry runs
// of rendered manifests, the chart's ci/ value sets, CRDs from Go modules
// (cert-manager, the Prometheus Operator), Prometheus's rule checker, and the
// README's install commands.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { writeKubeconfig, type ControlPlane } from './cluster/apiserver.ts';
import type { Tools } from './cluster/binaries.ts';
import {
  removeDirectory,
  runCommand,
  trackDirectory,
  waitFor,
  type CommandResult,
} from './cluster/processes.ts';

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

export { runCommand, type CommandResult } from './cluster/processes.ts';

/** A scratch directory removed by the returned function (or on exit). */
export async function scratchDir(
  prefix: string,
): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `prestop-${prefix}-`));
  trackDirectory(dir);
  // Traversable by the non-root users that the image and pods run as.
  await fsp.chmod(dir, 0o755);
  return { dir, remove: () => removeDirectory(dir) };
}

/**
 * Environment for helm and kubectl: the tools on PATH, a kubeconfig (the
 * control plane's admin one), and a private HOME (helm's and kubectl's caches).
 */
export async function toolEnvironment(
  tools: Tools,
  kubeconfigPath: string,
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
    KUBECONFIG: kubeconfigPath,
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
  /** --values files, before the --set-json pairs. */
  valuesFiles?: string[];
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

/** `helm template` (with IMAGE_VALUES unless values files are given); rejects with helm's stderr when it fails. */
export async function helmTemplate(tools: Tools, opts: RenderOptions): Promise<KubeObject[]> {
  const args = [
    'template',
    opts.release ?? 'prestop-injector',
    chartDir,
    '--namespace',
    opts.namespace,
    ...(opts.kubeVersion ? ['--kube-version', opts.kubeVersion] : []),
    ...(opts.valuesFiles ?? []).flatMap((file) => ['--values', file]),
    ...setJsonArgs(
      opts.valuesFiles?.length ? { ...opts.values } : { ...IMAGE_VALUES, ...opts.values },
    ),
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
  await writeKubeconfig(file, cp.server, cp.caPem, token);
}

/** A module's directory in the Go module cache (downloaded through the Go module proxy). */
async function goModuleDir(module: string, version: string): Promise<string> {
  const result = await runCommand('go', ['mod', 'download', '-json', `${module}@${version}`], {
    cwd: os.tmpdir(),
    env: { ...process.env, GOFLAGS: '-mod=mod' },
    timeoutMs: 300_000,
  });
  if (result.code !== 0)
    throw new Error(`go mod download ${module}@${version} failed:\n${result.stderr}`);
  const dir = (JSON.parse(result.stdout) as { Dir?: string }).Dir;
  if (!dir) throw new Error(`go mod download printed no Dir:\n${result.stdout}`);
  return dir;
}

/** Creates the CRDs of `files` (in a Go module) and waits until their kinds are served. */
async function installCrds(
  cp: ControlPlane,
  source: { module: string; version: string; dir: string; files: string[] },
  served: { apiVersion: string; kinds: string[] },
): Promise<string[]> {
  const crdDir = path.join(await goModuleDir(source.module, source.version), source.dir);
  const names: string[] = [];
  for (const file of source.files) {
    const [crd] = parseManifests(await fsp.readFile(path.join(crdDir, file), 'utf8'));
    if (crd === undefined) throw new Error(`${file} holds no CRD`);
    const res = await createObject(cp, crd);
    if (res.status !== 201 && res.status !== 409)
      throw new Error(
        `creating ${crd.metadata.name}: HTTP ${res.status} ${JSON.stringify(res.body)}`,
      );
    names.push(crd.metadata.name);
  }
  await waitFor(`${served.apiVersion} CRDs to be served`, 30_000, async () => {
    for (const kind of served.kinds) {
      discoveryCache.delete(cp);
      await resourceFor(cp, served.apiVersion, kind);
    }
    return true;
  });
  return names;
}

/** cert-manager's Issuer and Certificate CRDs, from its Go module. */
export function installCertManagerCrds(cp: ControlPlane): Promise<string[]> {
  return installCrds(
    cp,
    {
      module: 'github.com/cert-manager/cert-manager',
      version: 'v1.21.2',
      dir: 'deploy/crds',
      files: ['cert-manager.io_issuers.yaml', 'cert-manager.io_certificates.yaml'],
    },
    { apiVersion: 'cert-manager.io/v1', kinds: ['Issuer', 'Certificate'] },
  );
}

/** The Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs, from its Go module. */
export function installPrometheusOperatorCrds(cp: ControlPlane): Promise<string[]> {
  const kinds = {
    ServiceMonitor: 'servicemonitors',
    PodMonitor: 'podmonitors',
    PrometheusRule: 'prometheusrules',
  };
  return installCrds(
    cp,
    {
      module: 'github.com/prometheus-operator/prometheus-operator',
      version: 'v0.85.0',
      dir: 'example/prometheus-operator-crd',
      files: Object.values(kinds).map((plural) => `monitoring.coreos.com_${plural}.yaml`),
    },
    { apiVersion: 'monitoring.coreos.com/v1', kinds: Object.keys(kinds) },
  );
}

// ------------------------------------------------------- ci/ value sets

export interface ValueSet {
  /** The file's name without -values.yaml, e.g. "monitoring". */
  name: string;
  file: string;
  values: Record<string, unknown>;
}

/** The chart's ci/*-values.yaml sets (chart-testing's layout), by name. */
export function ciValueSets(): ValueSet[] {
  const dir = path.join(chartDir, 'ci');
  return fs
    .readdirSync(dir)
    .filter((file) => file.endsWith('-values.yaml'))
    .sort()
    .map((file) => ({
      name: file.replace(/-values\.yaml$/, ''),
      file: path.join(dir, file),
      values: (parseAllDocuments(fs.readFileSync(path.join(dir, file), 'utf8'))[0]?.toJS() ??
        {}) as Record<string, unknown>,
    }));
}

// ------------------------------------------------------------ alerts

/** A rule's series selectors as Prometheus parsed them: label name, match type, value. */
export interface CheckedRule {
  group: string;
  name: string;
  selectors: { name: string; type: '=' | '!=' | '=~' | '!~'; value: string }[][];
}

/**
 * Runs Prometheus's own rule-file loader (promql-check, built by
 * scripts/install-test-tools.sh) over a PrometheusRule's spec; rejects with
 * its errors when Prometheus would refuse the file.
 */
export async function checkPrometheusRules(
  tools: Tools,
  rule: KubeObject,
  dir: string,
): Promise<CheckedRule[]> {
  const file = path.join(dir, `${rule.metadata.name}-rules.json`);
  // A rule file is the spec's {groups: [...]}; JSON is YAML.
  await fsp.writeFile(file, JSON.stringify(rule['spec']));
  const result = await runCommand(tools.promqlCheck, [file]);
  if (result.code !== 0)
    throw new Error(`Prometheus refuses the rules of ${rule.metadata.name}:\n${result.stderr}`);
  return result.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as CheckedRule);
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
