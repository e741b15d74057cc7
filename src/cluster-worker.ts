// The cluster view's own thread (see cluster-thread.ts): the informer and the
// API client run here, and every change is posted to the main thread, which
// answers admissions from its copy.

import { parentPort, workerData } from 'node:worker_threads';
import pino from 'pino';
import { startCluster } from './cluster.ts';
import type { ServerConfig } from './config.ts';
import type { FromWorker, ToWorker } from './cluster-thread.ts';
import type { ClusterStats } from './serve.ts';

const STATS_EVERY_MS = 250;

const port = parentPort!;
const post = (message: FromWorker) => port.postMessage(message);
const { config } = workerData as { config: ServerConfig };

// Lines are formatted here and written by the main thread, so that they
// join its log whole and in its order.
const logger = pino(
  { level: config.logLevel, base: { name: 'prestop-injector' } },
  { write: (line: string) => post({ type: 'log', line }) },
);

try {
  const view = await startCluster(config, logger, (change) => post({ type: 'change', change }));
  const stats = view.stats?.bind(view);
  if (stats === undefined) {
    post({ type: 'none' });
    port.close();
  } else {
    post({ type: 'started', version: view.serverVersion(), stats: stats() });
    // Counters move on every request and bookmark; posted when they have.
    let posted = '';
    const postStats = (current: ClusterStats = stats()) => {
      const text = JSON.stringify(current);
      if (text === posted) return;
      posted = text;
      post({ type: 'stats', stats: current });
    };
    const poll = setInterval(() => postStats(), STATS_EVERY_MS);
    port.on('message', (message: ToWorker) => {
      if (message.type === 'read') {
        void Promise.resolve(view.namespaceAnnotations(message.name)).then((annotations) => {
          postStats();
          post({ type: 'read', id: message.id, annotations });
        });
      } else if (message.type === 'stop') {
        clearInterval(poll);
        void view.stop().finally(() => {
          postStats();
          post({ type: 'stopped' });
          port.close();
        });
      }
    });
  }
} catch (error) {
  post({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
  port.close();
}
