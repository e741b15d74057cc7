// One resource kept in memory from the API server: client-node's ListWatch
// (a full list, then a watch), made to survive what it does not.
//
// ListWatch stops for good on any error, and a watch on a dead connection
// can hang with no error at all (kubernetes-client/javascript issues 596 and
// 958). So: every restart is a fresh ListWatch (a full list, then a watch)
// after a backoff; watches ask for bookmarks and a server-side timeout, so a
// live one is never silent for long; and a watchdog restarts one that is.

import { KubeConfig, ListWatch, Watch, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';

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
  // A list is cheap: recover quickly once the API server is back.
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

/** What a cache reports about itself. */
export interface CacheStats {
  /** Once the first full list arrived. */
  synced: boolean;
  /** ms since the epoch of the last full list, watch event or bookmark; 0 before the first. */
  lastActivityMs: number;
  restarts: number;
}

export interface WatchedListOptions<T extends KubernetesObject> {
  kc: KubeConfig;
  /** The collection's path, such as /api/v1/namespaces. */
  path: string;
  /** The resource, for logs: "namespace", "node". */
  what: string;
  list(): Promise<{ items: T[] }>;
  /** A full list is the truth: whatever it lacks is gone. */
  replaceAll(items: readonly T[]): void;
  upsert(item: T): void;
  remove(item: T): void;
  timings: ClusterTimings;
  logger: Logger;
  /** Each list or watch request made to the API server. */
  onRequest(kind: 'list' | 'watch'): void;
}

export interface WatchedList {
  start(): void;
  /** Restarts a watch that has been silent too long; called on the view's timer. */
  checkSilence(): void;
  stats(): CacheStats;
  stop(): Promise<void>;
}

/** The next backoff: doubled, capped. */
function nextBackoff(currentMs: number, maxMs: number): number {
  return Math.min(currentMs * 2, maxMs);
}

/** ±20 %, so replicas that lost the API server together do not return together. */
function jitter(ms: number): number {
  return Math.round(ms * (0.8 + Math.random() * 0.4));
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** One line for a log: an API error's status and message, not its headers. */
export function describe(error: unknown): string {
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
  /** False once a newer ListWatch has replaced the one this watch belongs to. */
  isCurrent(): boolean;
  onRequest(): void;
  /** An event, a bookmark, or the server ending the watch as asked: the connection lives. */
  onActivity(): void;
}

/**
 * The library's Watch, asking for bookmarks and a server-side timeout, and
 * reporting activity. ListWatch never passes either option itself.
 */
class LivelyWatch extends Watch {
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
    // stopped meanwhile: a replaced one gets no watch.
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

export function watchedList<T extends KubernetesObject>(
  options: WatchedListOptions<T>,
): WatchedList {
  const { timings, logger, what } = options;
  const stats: CacheStats = { synced: false, lastActivityMs: 0, restarts: 0 };
  let stopped = false;
  let generation = 0;
  let generationStartedMs = 0;
  let current: ListWatch<T> | undefined;
  let backoffMs = timings.initialBackoffMs;
  let restartTimer: NodeJS.Timeout | undefined;

  const touch = () => {
    stats.lastActivityMs = Date.now();
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
      `${what} watch stopped; restarting`,
    );
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      startGeneration();
    }, delay);
    restartTimer.unref();
  }

  /** A fresh ListWatch: list, then watch. The previous one is stopped and ignored. */
  function startGeneration(): void {
    if (stopped) return;
    const gen = ++generation;
    const isCurrent = () => gen === generation && !stopped;
    const watch = new LivelyWatch(
      options.kc,
      {
        isCurrent,
        onRequest: () => options.onRequest('watch'),
        onActivity: () => {
          if (isCurrent()) touch();
        },
      },
      timings.watchTimeoutSeconds,
    );
    const list = async () => {
      options.onRequest('list');
      const result = await withTimeout(options.list(), timings.requestTimeoutMs, `${what} list`);
      if (isCurrent()) {
        options.replaceAll(result.items);
        touch();
        const first = !stats.synced;
        stats.synced = true;
        logger.info({ items: result.items.length, generation: gen, first }, `${what} cache synced`);
      }
      return result;
    };
    const next = new ListWatch<T>(options.path, watch, list, false);
    next.on('add', (item) => {
      if (isCurrent()) options.upsert(item);
    });
    next.on('update', (item) => {
      if (isCurrent()) options.upsert(item);
    });
    next.on('delete', (item) => {
      if (isCurrent()) options.remove(item);
    });
    next.on('error', (error) => {
      if (isCurrent()) scheduleRestart(describe(error));
    });
    const previous = current;
    current = next;
    generationStartedMs = Date.now();
    void previous?.stop();
    next.start().catch((error: unknown) => {
      if (isCurrent()) scheduleRestart(describe(error));
    });
  }

  return {
    start: startGeneration,
    // A dead connection can leave a watch open and silent, with no error ever.
    checkSilence() {
      if (stopped || restartTimer !== undefined) return;
      const silentMs = Date.now() - Math.max(stats.lastActivityMs, generationStartedMs);
      if (silentMs < timings.staleAfterMs) return;
      stats.restarts++;
      logger.warn(
        { silentForMs: silentMs, restarts: stats.restarts },
        `${what} watch silent; restarting`,
      );
      startGeneration();
    },
    stats: () => ({ ...stats }),
    async stop() {
      stopped = true;
      clearTimeout(restartTimer);
      await current?.stop();
    },
  };
}
