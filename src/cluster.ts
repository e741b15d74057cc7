// The cluster view: a Namespace informer (opt-in lives in namespace
// annotations, which a namespaceSelector cannot see) and the API server's
// version (capabilities). Admissions read only this in-memory view.

import { existsSync } from 'node:fs';
import {
  CoreV1Api,
  KubeConfig,
  makeInformer,
  VersionApi,
  type V1Namespace,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { ServerConfig } from './config.ts';
import { NO_CLUSTER, type ClusterStats, type ClusterView } from './serve.ts';

const INITIAL_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;
/** A fresh watch now and then, in case one has gone quiet without an error. */
const RESYNC_MS = 5 * 60_000;
const VERSION_REFRESH_MS = 10 * 60_000;
const DIRECT_READ_TIMEOUT_MS = 2_000;

export interface LiveClusterView extends ClusterView {
  stats(): ClusterStats;
}

function loadKubeConfig(config: ServerConfig): KubeConfig | null {
  const kc = new KubeConfig();
  const inCluster = process.env['KUBERNETES_SERVICE_HOST'] !== undefined;
  if (config.cluster === 'off') return null;
  if (config.kubeconfig !== '') {
    if (!existsSync(config.kubeconfig))
      throw new Error(`kubeconfig ${config.kubeconfig} does not exist`);
    kc.loadFromFile(config.kubeconfig);
    return kc;
  }
  if (inCluster) {
    kc.loadFromCluster();
    return kc;
  }
  if (config.cluster === 'on') {
    kc.loadFromDefault();
    return kc;
  }
  return null;
}

export async function startCluster(config: ServerConfig, logger: Logger): Promise<ClusterView> {
  const kc = loadKubeConfig(config);
  if (kc === null) {
    logger.info('no cluster configured: using pod annotations and server config only');
    return NO_CLUSTER;
  }
  const view = createClusterView(kc, logger);
  await view.startWatching();
  return view;
}

export function createClusterView(
  kc: KubeConfig,
  logger: Logger,
): LiveClusterView & { startWatching(): Promise<void> } {
  const core = kc.makeApiClient(CoreV1Api);
  const versionApi = kc.makeApiClient(VersionApi);
  const stats: ClusterStats = {
    requests: { list: 0, watch: 0, read: 0, version: 0 },
    lastActivityMs: 0,
    synced: false,
    restarts: 0,
  };
  let version: string | null = null;
  let stopped = false;
  let backoffMs = INITIAL_BACKOFF_MS;
  let restartTimer: NodeJS.Timeout | undefined;
  const directReads = new Map<string, Promise<Readonly<Record<string, string>> | undefined>>();
  const directCache = new Map<string, Readonly<Record<string, string>>>();

  const informer = makeInformer<V1Namespace>(kc, '/api/v1/namespaces', async () => {
    stats.requests.list++;
    const list = await core.listNamespace();
    stats.lastActivityMs = Date.now();
    stats.synced = true;
    backoffMs = INITIAL_BACKOFF_MS;
    directCache.clear();
    return list;
  });
  const touched = () => {
    stats.lastActivityMs = Date.now();
  };
  informer.on('add', touched);
  informer.on('update', touched);
  informer.on('delete', (ns) => {
    touched();
    if (ns.metadata?.name !== undefined) directCache.delete(ns.metadata.name);
  });
  informer.on('connect', () => {
    stats.requests.watch++;
  });

  const restart = (reason: string) => {
    if (stopped) return;
    clearTimeout(restartTimer);
    const delay = backoffMs;
    backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
    stats.restarts++;
    logger.warn({ reason, retryInMs: delay }, 'namespace watch stopped; restarting');
    restartTimer = setTimeout(() => {
      run().catch((error: unknown) => restart(String(error)));
    }, delay);
    restartTimer.unref();
  };
  // The library stops the informer for good on an error: restart it ourselves.
  informer.on('error', (error: unknown) =>
    restart(error instanceof Error ? error.message : String(error)),
  );

  const run = async () => {
    if (stopped) return;
    await informer.start();
  };

  const refreshVersion = async () => {
    try {
      stats.requests.version++;
      const info = await versionApi.getCode();
      if (info.gitVersion !== version)
        logger.info({ version: info.gitVersion }, 'API server version');
      version = info.gitVersion;
    } catch (error) {
      logger.warn(
        { error: String(error) },
        'cannot read the API server version; keeping the last known',
      );
    }
  };

  const timers: NodeJS.Timeout[] = [];
  const every = (ms: number, fn: () => void) => {
    const timer = setInterval(fn, ms);
    timer.unref();
    timers.push(timer);
  };

  async function readDirect(name: string): Promise<Readonly<Record<string, string>> | undefined> {
    const cached = directCache.get(name);
    if (cached !== undefined) return cached;
    let pending = directReads.get(name);
    if (pending === undefined) {
      pending = (async () => {
        stats.requests.read++;
        const timeout = new Promise<undefined>((resolve) => {
          setTimeout(() => resolve(undefined), DIRECT_READ_TIMEOUT_MS).unref();
        });
        try {
          const ns = await Promise.race([core.readNamespace({ name }), timeout]);
          if (ns === undefined) return undefined;
          const annotations = ns.metadata?.annotations ?? {};
          directCache.set(name, annotations);
          return annotations;
        } catch (error) {
          logger.warn(
            { namespace: name, error: String(error) },
            'namespace not readable; using server defaults',
          );
          return undefined;
        } finally {
          directReads.delete(name);
        }
      })();
      directReads.set(name, pending);
    }
    return pending;
  }

  return {
    async startWatching() {
      await refreshVersion();
      try {
        await run();
      } catch (error) {
        restart(String(error));
      }
      every(VERSION_REFRESH_MS, () => void refreshVersion());
      every(RESYNC_MS, () => {
        // Reconnect the watch from the last resourceVersion: recovers a silent one.
        void informer.stop().then(() => run().catch((error: unknown) => restart(String(error))));
      });
    },
    async namespaceAnnotations(name) {
      const ns = informer.get(name);
      if (ns !== undefined) return ns.metadata?.annotations ?? {};
      // Just created and not yet seen by the watch: ask once, then cache.
      return readDirect(name);
    },
    serverVersion: () => version,
    readiness: () =>
      stats.synced ? { ready: true } : { ready: false, reason: 'namespace cache not yet synced' },
    stats: () => ({ ...stats, requests: { ...stats.requests } }),
    async stop() {
      stopped = true;
      clearTimeout(restartTimer);
      for (const timer of timers) clearInterval(timer);
      await informer.stop();
    },
  };
}
