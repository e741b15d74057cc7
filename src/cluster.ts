// The cluster view: a Namespace informer (opt-in lives in namespace
// annotations, which a namespaceSelector cannot see) and the API server's
// version (capabilities). Admissions read only this in-memory view; the one
// exception is a namespace the watch has not delivered yet, read once.
//
// client-node's ListWatch stops for good on any error, and a watch on a dead
// connection can hang with no error at all (kubernetes-client/javascript
// issues 596 and 958). So: every restart is a fresh informer (a full list,
// then a watch) after a backoff; watches ask for bookmarks and a server-side
// timeout, so a live one is never silent for long; and a watchdog restarts
// one that is.

import { existsSync } from 'node:fs';
import {
  CoreV1Api,
  KubeConfig,
  ListWatch,
  VersionApi,
  Watch,
  type V1Namespace,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { kubeconfigSource, type ServerConfig } from './config.ts';
import { ANNOTATION_PREFIX } from './core/annotations.ts';
import { NO_CLUSTER, type ClusterStats, type ClusterView } from './serve.ts';

type Annotations = Readonly<Record<string, string>>;

const NAMESPACES_PATH = '/api/v1/namespaces';

export interface ClusterTimings {
  /** First wait before a restart; doubles on each failure, up to maxBackoffMs. */
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** A generation that stayed up this long restarts without the accumulated backoff. */
  backoffResetMs: number;
  /** Each watch asks the server to end it after this long; the informer re-watches. */
  watchTimeoutSeconds: () => number;
  /** No list, event or bookmark for this long: the watch is dead even if no error came. */
  staleAfterMs: number;
  staleCheckMs: number;
  versionRefreshMs: number;
  /** Lists and version reads. */
  requestTimeoutMs: number;
  /** A direct read delays an admission: well inside the webhook's timeout. */
  directReadTimeoutMs: number;
  /** A namespace whose direct read failed is not read again for this long. */
  failedReadRetryMs: number;
}

export const DEFAULT_TIMINGS: ClusterTimings = {
  initialBackoffMs: 500,
  // A namespace list is cheap: recover quickly once the API server is back.
  maxBackoffMs: 10_000,
  backoffResetMs: 60_000,
  // 5 to 10 minutes, randomised, as client-go's reflector does.
  watchTimeoutSeconds: () => 300 + Math.floor(Math.random() * 300),
  // The API server sends a bookmark about once a minute on an idle watch.
  staleAfterMs: 3 * 60_000,
  staleCheckMs: 15_000,
  versionRefreshMs: 10 * 60_000,
  requestTimeoutMs: 10_000,
  directReadTimeoutMs: 2_000,
  failedReadRetryMs: 5_000,
};

/** What changed in the view, for a copy of it kept elsewhere (see cluster-thread.ts). */
export type ClusterChange =
  | { kind: 'namespace'; name: string; annotations: Annotations }
  | { kind: 'gone'; name: string }
  | { kind: 'all'; namespaces: [string, Annotations][] }
  | { kind: 'version'; version: string | null };

export type ClusterListener = (change: ClusterChange) => void;

export interface LiveClusterView extends ClusterView {
  stats(): ClusterStats;
  /** Reads the version and starts the informer; readiness waits for its first list. */
  startWatching(): Promise<void>;
}

function loadKubeConfig(config: ServerConfig): KubeConfig | null {
  const source = kubeconfigSource(config);
  if (source === null) return null;
  const kc = new KubeConfig();
  if (source === 'file') {
    if (!existsSync(config.kubeconfig))
      throw new Error(`kubeconfig ${config.kubeconfig} does not exist`);
    kc.loadFromFile(config.kubeconfig);
  } else if (source === 'in-cluster') {
    kc.loadFromCluster();
  } else {
    kc.loadFromDefault();
  }
  return kc;
}

export async function startCluster(
  config: ServerConfig,
  logger: Logger,
  onChange?: ClusterListener,
): Promise<ClusterView> {
  const kc = loadKubeConfig(config);
  if (kc === null) {
    logger.info('no cluster configured: using pod annotations and server config only');
    return NO_CLUSTER;
  }
  const view = createClusterView(kc, logger, DEFAULT_TIMINGS, onChange);
  await view.startWatching();
  return view;
}

/** Only this project's annotations: the rest of a namespace's metadata is not kept. */
export function ownAnnotations(namespace: V1Namespace): Annotations {
  const all = namespace.metadata?.annotations ?? {};
  return Object.fromEntries(
    Object.entries(all).filter(([key]) => key.startsWith(ANNOTATION_PREFIX)),
  );
}

/** The next backoff: doubled, capped. */
export function nextBackoff(currentMs: number, maxMs: number): number {
  return Math.min(currentMs * 2, maxMs);
}

/** ±20 %, so replicas that lost the API server together do not return together. */
function jitter(ms: number): number {
  return Math.round(ms * (0.8 + Math.random() * 0.4));
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One line for a log: an API error's status and message, not its headers. */
function describe(error: unknown): string {
  const { code, body } = error as { code?: unknown; body?: unknown };
  if (typeof code === 'number' && code >= 400) {
    let message: unknown;
    try {
      message = (typeof body === 'string' ? JSON.parse(body) : body)?.message;
    } catch {
      message = undefined;
    }
    return `HTTP ${code}${typeof message === 'string' ? `: ${message}` : ''}`;
  }
  return error instanceof Error ? error.message : String(error);
}

interface WatchHooks {
  /** False once a newer informer has replaced the one this watch belongs to. */
  isCurrent(): boolean;
  onRequest(): void;
  /** An event, a bookmark, or the server ending the watch as asked: the connection lives. */
  onActivity(): void;
}

/**
 * The library's Watch, asking for bookmarks and a server-side timeout, and
 * reporting activity. ListWatch never passes either option itself.
 */
class NamespaceWatch extends Watch {
  private readonly hooks: WatchHooks;
  private readonly timeoutSeconds: () => number;

  constructor(kc: KubeConfig, hooks: WatchHooks, timeoutSeconds: () => number) {
    super(kc);
    this.hooks = hooks;
    this.timeoutSeconds = timeoutSeconds;
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    // ListWatch starts its watch after its list returns, even when it was
    // stopped meanwhile: a replaced informer gets no watch.
    if (!this.hooks.isCurrent()) return new AbortController();
    this.hooks.onRequest();
    return super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: this.timeoutSeconds() },
      (phase, apiObj, watchObj) => {
        this.hooks.onActivity();
        callback(phase, apiObj, watchObj);
      },
      (err) => {
        if (err === null || err === undefined) this.hooks.onActivity();
        done(err);
      },
    );
  }
}

export function createClusterView(
  kc: KubeConfig,
  logger: Logger,
  timings: ClusterTimings = DEFAULT_TIMINGS,
  onChange: ClusterListener = () => {},
): LiveClusterView {
  const core = kc.makeApiClient(CoreV1Api);
  const versionApi = kc.makeApiClient(VersionApi);
  const stats: ClusterStats = {
    requests: { list: 0, watch: 0, read: 0, version: 0 },
    lastActivityMs: 0,
    synced: false,
    restarts: 0,
  };
  /** Name -> this project's annotations, for every namespace known. */
  const namespaces = new Map<string, Annotations>();
  const directReads = new Map<string, Promise<Annotations | undefined>>();
  const failedReads = new Map<string, number>();
  let version: string | null = null;
  let stopped = false;
  let generation = 0;
  let generationStartedMs = 0;
  let informer: ListWatch<V1Namespace> | undefined;
  let backoffMs = timings.initialBackoffMs;
  let restartTimer: NodeJS.Timeout | undefined;
  const timers: NodeJS.Timeout[] = [];

  const touch = () => {
    stats.lastActivityMs = Date.now();
  };
  const store = (name: string, annotations: Annotations) => {
    namespaces.set(name, annotations);
    failedReads.delete(name);
  };
  const remember = (namespace: V1Namespace) => {
    const name = namespace.metadata?.name;
    if (name === undefined) return;
    const annotations = ownAnnotations(namespace);
    store(name, annotations);
    onChange({ kind: 'namespace', name, annotations });
  };
  const forget = (namespace: V1Namespace) => {
    const name = namespace.metadata?.name;
    if (name === undefined) return;
    namespaces.delete(name);
    onChange({ kind: 'gone', name });
  };
  /** A full list is the truth: namespaces deleted while the watch was down go too. */
  const replaceAll = (items: readonly V1Namespace[]) => {
    namespaces.clear();
    failedReads.clear();
    for (const item of items) {
      const name = item.metadata?.name;
      if (name !== undefined) store(name, ownAnnotations(item));
    }
    onChange({ kind: 'all', namespaces: [...namespaces] });
  };

  function scheduleRestart(reason: string): void {
    if (stopped || restartTimer !== undefined) return;
    if (Date.now() - generationStartedMs >= timings.backoffResetMs) {
      backoffMs = timings.initialBackoffMs;
    }
    const delay = jitter(backoffMs);
    backoffMs = nextBackoff(backoffMs, timings.maxBackoffMs);
    stats.restarts++;
    logger.warn(
      { reason, retryInMs: delay, restarts: stats.restarts },
      'namespace watch stopped; restarting',
    );
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      startGeneration();
    }, delay);
    restartTimer.unref();
  }

  /** A fresh informer: list, then watch. The previous one is stopped and ignored. */
  function startGeneration(): void {
    if (stopped) return;
    const gen = ++generation;
    const isCurrent = () => gen === generation && !stopped;
    const watch = new NamespaceWatch(
      kc,
      {
        isCurrent,
        onRequest: () => stats.requests.watch++,
        onActivity: () => {
          if (isCurrent()) touch();
        },
      },
      timings.watchTimeoutSeconds,
    );
    const list = async () => {
      stats.requests.list++;
      const result = await withTimeout(
        core.listNamespace(),
        timings.requestTimeoutMs,
        'namespace list',
      );
      if (isCurrent()) {
        replaceAll(result.items);
        touch();
        const first = !stats.synced;
        stats.synced = true;
        logger.info(
          { namespaces: result.items.length, generation: gen, first },
          'namespace cache synced',
        );
      }
      return result;
    };
    const next = new ListWatch<V1Namespace>(NAMESPACES_PATH, watch, list, false);
    next.on('add', (namespace) => {
      if (isCurrent()) remember(namespace);
    });
    next.on('update', (namespace) => {
      if (isCurrent()) remember(namespace);
    });
    next.on('delete', (namespace) => {
      if (isCurrent()) forget(namespace);
    });
    next.on('error', (error) => {
      if (isCurrent()) scheduleRestart(describe(error));
    });
    const previous = informer;
    informer = next;
    generationStartedMs = Date.now();
    void previous?.stop();
    next.start().catch((error: unknown) => {
      if (isCurrent()) scheduleRestart(describe(error));
    });
  }

  /** A dead connection can leave a watch open and silent, with no error ever. */
  function checkSilence(): void {
    if (stopped || restartTimer !== undefined) return;
    const silentMs = Date.now() - Math.max(stats.lastActivityMs, generationStartedMs);
    if (silentMs < timings.staleAfterMs) return;
    stats.restarts++;
    logger.warn(
      { silentForMs: silentMs, restarts: stats.restarts },
      'namespace watch silent; restarting',
    );
    startGeneration();
  }

  let versionReading = false;
  async function refreshVersion(): Promise<void> {
    if (versionReading) return;
    versionReading = true;
    stats.requests.version++;
    try {
      const info = await withTimeout(
        versionApi.getCode(),
        timings.requestTimeoutMs,
        'version read',
      );
      if (info.gitVersion !== version) {
        logger.info({ version: info.gitVersion, previous: version }, 'API server version');
        version = info.gitVersion;
        onChange({ kind: 'version', version });
      }
    } catch (error) {
      logger.warn(
        { error: describe(error), keeping: version },
        'cannot read the API server version; keeping the last known',
      );
    } finally {
      versionReading = false;
    }
  }

  async function readOnce(name: string): Promise<Annotations | undefined> {
    stats.requests.read++;
    try {
      const namespace = await withTimeout(
        core.readNamespace({ name }),
        timings.directReadTimeoutMs,
        'namespace read',
      );
      // The watch may have delivered it meanwhile: its copy is at least as new.
      if (!namespaces.has(name)) {
        const annotations = ownAnnotations(namespace);
        namespaces.set(name, annotations);
        onChange({ kind: 'namespace', name, annotations });
      }
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

  const every = (ms: number, fn: () => void) => {
    const timer = setInterval(fn, ms);
    timer.unref();
    timers.push(timer);
  };

  return {
    async startWatching() {
      // The version first, so the first admissions plan for the right cluster.
      await refreshVersion();
      startGeneration();
      every(timings.versionRefreshMs, () => void refreshVersion());
      every(timings.staleCheckMs, () => {
        checkSilence();
        // Unknown, capabilities stay at their safe defaults: ask again soon.
        if (version === null) void refreshVersion();
      });
    },
    async namespaceAnnotations(name) {
      return namespaces.get(name) ?? readDirect(name);
    },
    serverVersion: () => version,
    // Once synced, a stale cache beats no webhook: an unready webhook with
    // failurePolicy Ignore admits every pod uninjected.
    readiness: () =>
      stats.synced ? { ready: true } : { ready: false, reason: 'namespace cache not yet synced' },
    stats: () => ({ ...stats, requests: { ...stats.requests } }),
    async stop() {
      stopped = true;
      clearTimeout(restartTimer);
      for (const timer of timers) clearInterval(timer);
      await informer?.stop();
    },
  };
}
