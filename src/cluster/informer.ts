// The cluster view: what admissions read of the cluster, kept in memory.
//
// - Namespaces (opt-in lives in namespace annotations, which a
//   namespaceSelector cannot see): only this project's annotations are kept.
//   A namespace the watch has not delivered yet is read once, directly.
// - Nodes: only each kubelet's version. The kubelet runs the preStop hook,
//   and kubelets may be three minors older than the API server, so the
//   oldest one decides whether a sleep action is safe.
// - The API server's version, and, where the version leaves it open
//   (1.29-1.33), whether its PodLifecycleSleepAction gate is on, read from
//   its own kubernetes_feature_enabled metric.
//
// Each list is kept by a watched list (watched-list.ts) that survives what
// client-node's ListWatch does not.

import {
  CoreV1Api,
  KubeConfig,
  VersionApi,
  type V1Namespace,
  type V1Node,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ANNOTATION_PREFIX } from '../core/annotations.ts';
import {
  formatKubeVersion,
  olderVersion,
  parseKubeVersion,
  type ClusterVersions,
  type KubeVersion,
} from '../core/capabilities.ts';
import { gateMatters, readSleepActionGate } from './feature-gate.ts';
import { loadKubeConfig } from './kubeconfig.ts';
import type { ClusterConnection, ClusterStats, ClusterView } from './view.ts';
import {
  DEFAULT_TIMINGS,
  describe,
  watchedList,
  withTimeout,
  type ClusterTimings,
} from './watched-list.ts';

type Annotations = Readonly<Record<string, string>>;

export interface LiveClusterView extends ClusterView {
  stats(): ClusterStats;
  /** Reads the versions and starts the lists; readiness waits for the namespaces. */
  startWatching(): Promise<void>;
}

/** The view of the cluster the connection names (there must be one). */
export async function startCluster(
  connection: ClusterConnection,
  logger: Logger,
): Promise<LiveClusterView> {
  const view = createClusterView(loadKubeConfig(connection), logger, DEFAULT_TIMINGS);
  await view.startWatching();
  return view;
}

/** Only this project's annotations: the rest of a namespace's metadata is not kept. */
function ownAnnotations(namespace: V1Namespace): Annotations {
  const all = namespace.metadata?.annotations ?? {};
  return Object.fromEntries(
    Object.entries(all).filter(([key]) => key.startsWith(ANNOTATION_PREFIX)),
  );
}

export function createClusterView(
  kc: KubeConfig,
  logger: Logger,
  timings: ClusterTimings = DEFAULT_TIMINGS,
): LiveClusterView {
  const core = kc.makeApiClient(CoreV1Api);
  const versionApi = kc.makeApiClient(VersionApi);
  const requests: ClusterStats['requests'] = { list: 0, watch: 0, read: 0, version: 0, metrics: 0 };
  const onRequest = (kind: 'list' | 'watch') => requests[kind]++;

  /** Name -> this project's annotations, for every namespace known. */
  const namespaces = new Map<string, Annotations>();
  const directReads = new Map<string, Promise<Annotations | undefined>>();
  const failedReads = new Map<string, number>();
  const namespaceList = watchedList<V1Namespace>({
    kc,
    path: '/api/v1/namespaces',
    what: 'namespace',
    list: () => core.listNamespace(),
    replaceAll(items) {
      namespaces.clear();
      failedReads.clear();
      for (const item of items) this.upsert(item);
    },
    upsert(namespace) {
      const name = namespace.metadata?.name;
      if (name === undefined) return;
      namespaces.set(name, ownAnnotations(namespace));
      failedReads.delete(name);
    },
    remove(namespace) {
      const name = namespace.metadata?.name;
      if (name !== undefined) namespaces.delete(name);
    },
    timings,
    logger,
    onRequest,
  });

  /** Name -> the kubelet version the node reports. */
  const kubelets = new Map<string, string>();
  let oldestKubelet: KubeVersion | null = null;
  const refreshOldest = () => {
    // Any node of an unreadable version makes the oldest unknown, as does having none.
    let oldest: KubeVersion | null = null;
    let first = true;
    for (const version of kubelets.values()) {
      const parsed = parseKubeVersion(version);
      oldest = first ? parsed : olderVersion(oldest, parsed);
      first = false;
    }
    if (formatKubeVersion(oldest) !== formatKubeVersion(oldestKubelet)) {
      logger.info(
        { oldestKubelet: formatKubeVersion(oldest), nodes: kubelets.size },
        'oldest kubelet',
      );
    }
    oldestKubelet = oldest;
  };
  const nodeList = watchedList<V1Node>({
    kc,
    path: '/api/v1/nodes',
    what: 'node',
    list: () => core.listNode(),
    replaceAll(items) {
      kubelets.clear();
      for (const node of items) {
        const name = node.metadata?.name;
        if (name !== undefined) kubelets.set(name, node.status?.nodeInfo?.kubeletVersion ?? '');
      }
      refreshOldest();
    },
    upsert(node) {
      const name = node.metadata?.name;
      if (name === undefined) return;
      const version = node.status?.nodeInfo?.kubeletVersion ?? '';
      // Nodes update their status every few seconds, and a list is followed
      // by an add for each item: only a changed version needs the scan.
      if (kubelets.get(name) === version) return;
      kubelets.set(name, version);
      refreshOldest();
    },
    remove(node) {
      const name = node.metadata?.name;
      if (name === undefined) return;
      kubelets.delete(name);
      refreshOldest();
    },
    timings,
    logger,
    onRequest,
  });

  let serverVersion: string | null = null;
  let server: KubeVersion | null = null;
  let sleepActionGate: boolean | null = null;
  let versionReading = false;
  async function refreshVersion(): Promise<void> {
    if (versionReading) return;
    versionReading = true;
    requests.version++;
    try {
      const info = await withTimeout(
        versionApi.getCode(),
        timings.requestTimeoutMs,
        'version read',
      );
      if (info.gitVersion !== serverVersion) {
        logger.info({ version: info.gitVersion, previous: serverVersion }, 'API server version');
        serverVersion = info.gitVersion;
        server = parseKubeVersion(serverVersion);
      }
      if (gateMatters(server)) {
        requests.metrics++;
        const gate = await readSleepActionGate(kc, { timeoutMs: timings.requestTimeoutMs });
        if (gate !== sleepActionGate) {
          logger.info(
            { gate: 'PodLifecycleSleepAction', enabled: gate },
            'API server feature gate',
          );
        }
        sleepActionGate = gate;
      } else {
        sleepActionGate = null;
      }
    } catch (error) {
      logger.warn(
        { error: describe(error), keeping: serverVersion },
        'cannot read the API server version; keeping the last known',
      );
    } finally {
      versionReading = false;
    }
  }

  async function readOnce(name: string): Promise<Annotations | undefined> {
    requests.read++;
    try {
      const namespace = await withTimeout(
        core.readNamespace({ name }),
        timings.directReadTimeoutMs,
        'namespace read',
      );
      // The watch may have delivered it meanwhile: its copy is at least as new.
      if (!namespaces.has(name)) namespaces.set(name, ownAnnotations(namespace));
      logger.info({ namespace: name }, 'namespace not in the cache yet: read it directly');
      return namespaces.get(name);
    } catch (error) {
      failedReads.set(name, Date.now());
      logger.warn(
        { namespace: name, error: describe(error) },
        'namespace not readable; using server defaults',
      );
      return undefined;
    }
  }

  /** At most one read in flight per namespace; none while a recent one failed. */
  function readDirect(name: string): Promise<Annotations | undefined> {
    const failedAt = failedReads.get(name);
    if (failedAt !== undefined && Date.now() - failedAt < timings.failedReadRetryMs) {
      return Promise.resolve(undefined);
    }
    let pending = directReads.get(name);
    if (pending === undefined) {
      pending = readOnce(name).finally(() => directReads.delete(name));
      directReads.set(name, pending);
    }
    return pending;
  }

  const timers: NodeJS.Timeout[] = [];
  const every = (ms: number, fn: () => void) => {
    const timer = setInterval(fn, ms);
    timer.unref();
    timers.push(timer);
  };

  return {
    async startWatching() {
      // The version first, so the first admissions plan for the right cluster.
      await refreshVersion();
      namespaceList.start();
      nodeList.start();
      every(timings.versionRefreshMs, () => void refreshVersion());
      every(timings.staleCheckMs, () => {
        namespaceList.checkSilence();
        nodeList.checkSilence();
        // Unknown, capabilities stay at their safe defaults: ask again soon.
        if (serverVersion === null) void refreshVersion();
      });
    },
    // Not async: a namespace in the cache is answered without a promise.
    namespaceAnnotations(name) {
      return namespaces.get(name) ?? readDirect(name);
    },
    versions(): ClusterVersions {
      return {
        server,
        // Until the first node list, unknown.
        oldestKubelet: nodeList.stats().synced ? oldestKubelet : null,
        sleepActionGate,
      };
    },
    // Once synced, a stale cache beats no webhook: an unready webhook with
    // failurePolicy Ignore admits every pod uninjected. Nodes are not
    // waited for: without them the safe capabilities apply.
    readiness: () =>
      namespaceList.stats().synced
        ? { ready: true }
        : { ready: false, reason: 'namespace cache not yet synced' },
    stats: () => ({
      requests: { ...requests },
      namespaces: namespaceList.stats(),
      nodes: nodeList.stats(),
    }),
    async stop() {
      for (const timer of timers) clearInterval(timer);
      await Promise.all([namespaceList.stop(), nodeList.stop()]);
    },
  };
}
