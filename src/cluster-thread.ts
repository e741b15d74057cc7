// The cluster view run in a worker thread (cluster-worker.ts), with a copy of
// its state on the main thread for admissions to read.
//
// Why a thread: the Kubernetes client and everything it loads is about three
// times the rest of the webhook's heap, and a full namespace list of a large
// cluster is a burst of parsing and garbage. In its own isolate neither
// slows the admissions' JSON parsing or adds to their GC pauses; the main
// thread holds only a map of namespace annotations, kept current by the
// worker's messages.
//
// A worker that dies is started again after a backoff; meanwhile admissions
// are answered from the last copy (a stale cache beats no webhook, as in
// cluster.ts), and its counters are carried over so metrics never go back.

import { Worker } from 'node:worker_threads';
import pino, { type Logger } from 'pino';
import type { ClusterChange } from './cluster.ts';
import { kubeconfigSource, type ServerConfig } from './config.ts';
import { NO_CLUSTER, type ClusterStats, type ClusterView } from './serve.ts';

type Annotations = Readonly<Record<string, string>>;

export type ToWorker = { type: 'read'; id: number; name: string } | { type: 'stop' };

export type FromWorker =
  | { type: 'log'; line: string }
  | { type: 'none' }
  | { type: 'failed'; message: string }
  | { type: 'started'; version: string | null; stats: ClusterStats }
  | { type: 'change'; change: ClusterChange }
  | { type: 'stats'; stats: ClusterStats }
  | { type: 'read'; id: number; annotations: Annotations | undefined }
  | { type: 'stopped' };

export interface ThreadTimings {
  /** A direct read waits this long for the worker, whose own read gives up sooner. */
  readTimeoutMs: number;
  restartMinMs: number;
  restartMaxMs: number;
  stopTimeoutMs: number;
}

export const DEFAULT_THREAD_TIMINGS: ThreadTimings = {
  readTimeoutMs: 3_000,
  restartMinMs: 1_000,
  restartMaxMs: 30_000,
  stopTimeoutMs: 5_000,
};

/** The view, plus its worker: tests stop it as a crash would. */
export interface ThreadedClusterView extends ClusterView {
  stats(): ClusterStats;
  readonly worker: () => Worker | undefined;
}

// The source tree runs as TypeScript, the package as the compiled JavaScript.
const WORKER_URL = new URL(
  import.meta.url.endsWith('.ts') ? './cluster-worker.ts' : './cluster-worker.js',
  import.meta.url,
);

const emptyStats = (): ClusterStats => ({
  requests: { list: 0, watch: 0, read: 0, version: 0 },
  lastActivityMs: 0,
  synced: false,
  restarts: 0,
});

/**
 * Starts the cluster view in a worker. Like startCluster: resolves once the
 * API server's version has been asked for (readiness waits for the first
 * list), to NO_CLUSTER when none is configured, and rejects on bad config.
 */
export function startClusterThread(
  config: ServerConfig,
  logger: Logger,
  timings: ThreadTimings = DEFAULT_THREAD_TIMINGS,
): Promise<ClusterView | ThreadedClusterView> {
  // Worker lines go to the main logger's own stream, as they were written.
  const stream = (logger as unknown as Record<symbol, { write(line: string): void }>)[
    pino.symbols.streamSym
  ]!;
  const namespaces = new Map<string, Annotations>();
  let version: string | null = null;
  let current = emptyStats();
  /** Counters of workers that have ended, so totals never go back. */
  const carried = emptyStats();
  let worker: Worker | undefined;
  let stopping = false;
  let restartDelayMs = timings.restartMinMs;
  let restartTimer: NodeJS.Timeout | undefined;
  let nextId = 0;
  const pendingReads = new Map<number, (annotations: Annotations | undefined) => void>();
  const readsByName = new Map<string, Promise<Annotations | undefined>>();
  let onStopped: (() => void) | undefined;

  const apply = (change: ClusterChange) => {
    if (change.kind === 'namespace') namespaces.set(change.name, change.annotations);
    else if (change.kind === 'gone') namespaces.delete(change.name);
    else if (change.kind === 'version') version = change.version;
    else {
      namespaces.clear();
      for (const [name, annotations] of change.namespaces) namespaces.set(name, annotations);
    }
  };

  const stats = (): ClusterStats => ({
    requests: {
      list: carried.requests.list + current.requests.list,
      watch: carried.requests.watch + current.requests.watch,
      read: carried.requests.read + current.requests.read,
      version: carried.requests.version + current.requests.version,
    },
    lastActivityMs: Math.max(carried.lastActivityMs, current.lastActivityMs),
    // Once synced, the copy stays usable while a new worker lists again.
    synced: carried.synced || current.synced,
    restarts: carried.restarts + current.restarts,
  });

  if (kubeconfigSource(config) === null) {
    logger.info('no cluster configured: using pod annotations and server config only');
    return Promise.resolve(NO_CLUSTER);
  }
  return new Promise((resolve, reject) => {
    let started = false;

    const spawnWorker = () => {
      const thread = new Worker(WORKER_URL, { workerData: { config } });
      worker = thread;
      thread.on('message', (message: FromWorker) => {
        switch (message.type) {
          case 'log':
            stream.write(message.line);
            break;
          case 'change':
            apply(message.change);
            break;
          case 'stats':
            current = message.stats;
            break;
          case 'read':
            pendingReads.get(message.id)?.(message.annotations);
            break;
          case 'started':
            current = message.stats;
            if (message.version !== null) version = message.version;
            restartDelayMs = timings.restartMinMs;
            if (!started) {
              started = true;
              resolve(view);
            }
            break;
          case 'none':
            // Nothing to watch, nothing to start again.
            started = true;
            stopping = true;
            resolve(NO_CLUSTER);
            break;
          case 'failed':
            if (!started) {
              started = true;
              stopping = true;
              reject(new Error(message.message));
            } else {
              logger.error({ error: message.message }, 'cluster thread failed to start again');
            }
            break;
          case 'stopped':
            onStopped?.();
            break;
        }
      });
      thread.on('error', (error) => {
        logger.error({ error: error.message }, 'cluster thread crashed');
      });
      thread.on('exit', (code) => {
        if (worker === thread) worker = undefined;
        for (const answer of pendingReads.values()) answer(undefined);
        pendingReads.clear();
        // Its counters stay counted; the next worker starts its own from zero.
        const ended = current;
        carried.requests.list += ended.requests.list;
        carried.requests.watch += ended.requests.watch;
        carried.requests.read += ended.requests.read;
        carried.requests.version += ended.requests.version;
        carried.lastActivityMs = Math.max(carried.lastActivityMs, ended.lastActivityMs);
        carried.synced ||= ended.synced;
        carried.restarts += ended.restarts;
        current = emptyStats();
        onStopped?.();
        if (!started) {
          started = true;
          stopping = true;
          reject(new Error(`cluster thread exited with code ${code} before it started`));
          return;
        }
        if (stopping) return;
        const delay = restartDelayMs;
        restartDelayMs = Math.min(restartDelayMs * 2, timings.restartMaxMs);
        carried.restarts++;
        logger.warn({ code, retryInMs: delay }, 'cluster thread ended; starting it again');
        restartTimer = setTimeout(() => {
          restartTimer = undefined;
          if (!stopping) spawnWorker();
        }, delay);
        restartTimer.unref();
      });
    };

    /** One read of a namespace the copy lacks, shared by the admissions asking meanwhile. */
    const readThroughWorker = (name: string): Promise<Annotations | undefined> => {
      const thread = worker;
      if (thread === undefined) return Promise.resolve(undefined);
      let pending = readsByName.get(name);
      if (pending === undefined) {
        const id = ++nextId;
        pending = new Promise<Annotations | undefined>((answer) => {
          const timer = setTimeout(() => done(undefined), timings.readTimeoutMs);
          const done = (annotations: Annotations | undefined) => {
            clearTimeout(timer);
            pendingReads.delete(id);
            readsByName.delete(name);
            answer(annotations);
          };
          pendingReads.set(id, done);
          thread.postMessage({ type: 'read', id, name } satisfies ToWorker);
        });
        readsByName.set(name, pending);
      }
      return pending;
    };

    const view: ThreadedClusterView = {
      // Not async: a namespace in the copy is answered without a promise.
      namespaceAnnotations(name) {
        return namespaces.get(name) ?? readThroughWorker(name);
      },
      serverVersion: () => version,
      readiness: () =>
        stats().synced
          ? { ready: true }
          : { ready: false, reason: 'namespace cache not yet synced' },
      stats,
      worker: () => worker,
      async stop() {
        stopping = true;
        clearTimeout(restartTimer);
        const thread = worker;
        if (thread === undefined) return;
        const ended = new Promise<void>((done) => (onStopped = done));
        thread.postMessage({ type: 'stop' } satisfies ToWorker);
        const timeout = new Promise<'timeout'>((done) => {
          setTimeout(() => done('timeout'), timings.stopTimeoutMs).unref();
        });
        if ((await Promise.race([ended, timeout])) === 'timeout') await thread.terminate();
      },
    };

    spawnWorker();
  });
}
