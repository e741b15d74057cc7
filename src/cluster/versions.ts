// The versions an offline `inject` plans for, asked once of the current
// kubeconfig's cluster: the API server's (/version), for a 1.29-1.33 server
// its sleep-action gate (feature-gate.ts), and the oldest kubelet's (the
// node list). One deadline covers everything, credential plugins included,
// so a dead or unreachable cluster cannot hang the CLI.

import { existsSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { homedir } from 'node:os';
import path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import {
  olderVersion,
  parseKubeVersion,
  type ClusterVersions,
  type KubeVersion,
} from '../core/capabilities.ts';
import { gateMatters, readSleepActionGate } from './feature-gate.ts';

/** Also in the CLI's usage text. */
const DEFAULT_LOOKUP_TIMEOUT_MS = 3_000;
const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';
/** Nodes per page; the table form keeps each page small. */
const NODE_PAGE = 500;
const MAX_BODY_BYTES = 32 * 1024 * 1024;

export type VersionLookup =
  | {
      found: true;
      versions: ClusterVersions;
      /** The kubeconfig context asked. */
      context: string;
      /** Why the oldest kubelet is unknown, when it is. */
      kubeletUnknown?: string;
    }
  | { found: false; reason: string; context?: string };

export interface LookupOptions {
  env?: Readonly<Record<string, string | undefined>>;
  timeoutMs?: number;
}

/** The kubeconfig kubectl would use: KUBECONFIG's files, ~/.kube/config, or the pod's own account. */
function kubectlConfig(env: Readonly<Record<string, string | undefined>>): KubeConfig | string {
  const listed = env['KUBECONFIG'];
  const files =
    listed !== undefined && listed !== ''
      ? listed.split(path.delimiter).filter((f) => f !== '')
      : [path.join(env['HOME'] ?? homedir(), '.kube', 'config')];
  const present = files.filter((f) => existsSync(f));
  const kc = new KubeConfig();
  if (present.length === 0) {
    if (env['KUBERNETES_SERVICE_HOST'] !== undefined && existsSync(SERVICE_ACCOUNT_TOKEN)) {
      kc.loadFromCluster();
      return kc;
    }
    return listed ? `no file named in KUBECONFIG exists` : 'no kubeconfig';
  }
  kc.loadFromFile(present[0]!);
  // As kubectl merges: the first file to name a context, cluster or user wins.
  for (const file of present.slice(1)) {
    const next = new KubeConfig();
    next.loadFromFile(file);
    if (!kc.getCurrentContext() && next.getCurrentContext()) {
      kc.setCurrentContext(next.getCurrentContext());
    }
    for (const cluster of next.clusters) {
      if (kc.getCluster(cluster.name) === null) kc.addCluster(cluster);
    }
    for (const user of next.users) {
      if (kc.getUser(user.name) === null) kc.addUser(user);
    }
    for (const context of next.contexts) {
      if (kc.getContextObject(context.name) === null) kc.addContext(context);
    }
  }
  return kc;
}

class HttpStatusError extends Error {
  readonly status: number;
  constructor(status: number, what: string) {
    super(`${what}: HTTP ${status}`);
    this.status = status;
  }
}

/** GET `pathAndQuery` from the current cluster as JSON; aborted with `signal`. */
async function getJson(
  kc: KubeConfig,
  server: string,
  pathAndQuery: string,
  accept: string,
  signal: AbortSignal,
): Promise<unknown> {
  const url = new URL(server.replace(/\/+$/, '') + pathAndQuery);
  const options: https.RequestOptions = { method: 'GET', headers: { Accept: accept } };
  const secure = url.protocol === 'https:';
  try {
    await kc.applyToHTTPSOptions(options);
  } catch (error) {
    // client-node refuses plain http without skipTLSVerify; kubectl proxy is plain http.
    if (secure) throw error;
  }
  if (!secure) delete options.agent;
  return new Promise((resolve, reject) => {
    const request = (secure ? https : http).request(url, { ...options, signal }, (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) request.destroy(new Error(`${url.pathname}: answer too large`));
        else chunks.push(chunk);
      });
      response.on('end', () => {
        const status = response.statusCode ?? 0;
        if (status !== 200) {
          reject(new HttpStatusError(status, `GET ${url.pathname}`));
          return;
        }
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch {
          reject(new Error(`GET ${url.pathname}: not JSON`));
        }
      });
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end();
  });
}

function record(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
}

/** Kubelet versions from a page: a Table (its Version column) or a plain NodeList. */
function kubeletVersions(page: Record<string, unknown>): string[] {
  if (page['kind'] === 'Table') {
    const columns = Array.isArray(page['columnDefinitions']) ? page['columnDefinitions'] : [];
    const column = columns.findIndex((c) => record(c)['name'] === 'Version');
    if (column === -1) throw new Error('the node table has no Version column');
    const rows = Array.isArray(page['rows']) ? page['rows'] : [];
    return rows.map((row) => {
      const cells = record(row)['cells'];
      return Array.isArray(cells) ? String(cells[column] ?? '') : '';
    });
  }
  const items = Array.isArray(page['items']) ? page['items'] : [];
  return items.map((node) => {
    const info = record(record(record(node)['status'])['nodeInfo']);
    return typeof info['kubeletVersion'] === 'string' ? info['kubeletVersion'] : '';
  });
}

/** The oldest kubelet of all nodes, or why it is unknown. */
async function oldestKubelet(
  kc: KubeConfig,
  server: string,
  signal: AbortSignal,
): Promise<KubeVersion | string> {
  const versions: string[] = [];
  let next = '';
  do {
    const query = `?limit=${NODE_PAGE}&includeObject=None${next ? `&continue=${encodeURIComponent(next)}` : ''}`;
    let page: Record<string, unknown>;
    try {
      page = record(
        await getJson(
          kc,
          server,
          `/api/v1/nodes${query}`,
          'application/json;as=Table;v=v1;g=meta.k8s.io, application/json',
          signal,
        ),
      );
    } catch (error) {
      if (error instanceof HttpStatusError && error.status === 403) {
        return 'listing nodes is forbidden';
      }
      throw error;
    }
    versions.push(...kubeletVersions(page));
    const cont = record(page['metadata'])['continue'];
    next = typeof cont === 'string' ? cont : '';
  } while (next !== '');
  if (versions.length === 0) return 'the cluster has no nodes';
  let oldest: KubeVersion | null = parseKubeVersion(versions[0]);
  for (const text of versions) {
    const version = parseKubeVersion(text);
    if (version === null) return `a node reports kubelet version ${JSON.stringify(text)}`;
    oldest = olderVersion(oldest, version);
  }
  return oldest ?? 'no kubelet version could be read';
}

function describe(error: unknown, timeoutMs: number, signal: AbortSignal): string {
  if (signal.aborted) return `no answer within ${timeoutMs / 1000} s`;
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0] ?? message;
}

/** Asks the current kubeconfig's cluster for its versions; never throws. */
export async function lookupClusterVersions(options: LookupOptions = {}): Promise<VersionLookup> {
  const env = options.env ?? process.env;
  const timeoutMs = options.timeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS;
  let kc: KubeConfig;
  try {
    const loaded = kubectlConfig(env);
    if (typeof loaded === 'string') return { found: false, reason: loaded };
    kc = loaded;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return { found: false, reason: `cannot read the kubeconfig: ${message}` };
  }
  const context = kc.getCurrentContext();
  const cluster = kc.getCurrentCluster();
  if (cluster === null) {
    return { found: false, reason: 'the kubeconfig names no current cluster', context };
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  // A credential plugin may ignore the signal: racing this ends the wait anyway.
  const late = `no answer within ${timeoutMs / 1000} s`;
  const deadline = new Promise<string>((resolve) => {
    controller.signal.addEventListener('abort', () => resolve(late), { once: true });
  });
  const kubeletLookup = oldestKubelet(kc, cluster.server, controller.signal).catch(
    (error: unknown) => `listing nodes failed: ${describe(error, timeoutMs, controller.signal)}`,
  );
  try {
    const version = await Promise.race([
      getJson(kc, cluster.server, '/version', 'application/json', controller.signal),
      deadline.then((reason) => Promise.reject(new Error(reason))),
    ]);
    const server = parseKubeVersion(String(record(version)['gitVersion'] ?? ''));
    if (server === null) {
      return { found: false, reason: 'the API server reports no version', context };
    }
    // The server answered: a slow or refused node list leaves only the kubelets unknown.
    const [kubelet, sleepActionGate] = await Promise.all([
      Promise.race([kubeletLookup, deadline.then((reason) => `listing nodes: ${reason}`)]),
      gateMatters(server)
        ? Promise.race([
            readSleepActionGate(kc, { timeoutMs, signal: controller.signal }),
            deadline.then(() => null),
          ])
        : null,
    ]);
    const gate = sleepActionGate === null ? {} : { sleepActionGate };
    if (typeof kubelet === 'string') {
      return {
        found: true,
        context,
        versions: { server, oldestKubelet: null, ...gate },
        kubeletUnknown: kubelet,
      };
    }
    return { found: true, context, versions: { server, oldestKubelet: kubelet, ...gate } };
  } catch (error) {
    return { found: false, reason: describe(error, timeoutMs, controller.signal), context };
  } finally {
    clearTimeout(timer);
    // Ends whatever is still waiting (the other request, a plugin's wait).
    controller.abort();
  }
}
