// Prometheus metrics of the ipvs-reaper node agent, in its own Registry (as
// the webhook's). Labels come from closed sets, except the node's own
// facts on the info series: one kernel and one mode per node.

import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { Diagnosis } from './diagnose.ts';

const PREFIX = 'prestop_injector_ipvs_';

export interface ReaperMetrics {
  registry: Registry;
  reaped(): void;
  reapFailed(): void;
  staleSeen(): void;
  /** After each scan: weight-0 real servers, and those whose pod is gone. */
  scanned(weightZero: number, stale: number): void;
  diagnosed(diagnosis: Diagnosis): void;
  render(): Promise<{ contentType: string; body: string }>;
}

export function createReaperMetrics(options: {
  version: string;
  cachesSynced: () => { pod: boolean; endpointslice: boolean };
}): ReaperMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: `${PREFIX}reaper_build_info`,
    help: 'Always 1; the labels say which build is running',
    labelNames: ['version', 'nodejs_version'] as const,
    registers: [registry],
  }).set({ version: options.version, nodejs_version: process.version }, 1);

  const reaped = new Counter({
    name: `${PREFIX}real_servers_reaped_total`,
    help: 'Weight-0 real servers removed because their pod was gone',
    registers: [registry],
  });
  const failed = new Counter({
    name: `${PREFIX}reap_errors_total`,
    help: 'Removals of a weight-0 real server that failed (retried on the next scan)',
    registers: [registry],
  });
  const seen = new Counter({
    name: `${PREFIX}stale_real_servers_seen_total`,
    help: 'Weight-0 real servers found whose pod was gone, each counted once (also in --dry-run)',
    registers: [registry],
  });
  const weightZero = new Gauge({
    name: `${PREFIX}weight_zero_real_servers`,
    help: 'Real servers of weight 0 at the last scan (kube-proxy keeps them while connection entries last)',
    registers: [registry],
  });
  const stale = new Gauge({
    name: `${PREFIX}stale_real_servers`,
    help: 'Weight-0 real servers whose pod was gone at the last scan, before removal',
    registers: [registry],
  });
  for (const counter of [reaped, failed, seen]) counter.inc(0);

  const node = new Gauge({
    name: `${PREFIX}node_info`,
    help: 'Always 1; the labels give the node diagnosis: kernel, IPVS sysctls, kube-proxy mode and whether new connections can reach removed pods',
    labelNames: [
      'kernel',
      'conn_reuse_mode',
      'expire_nodest_conn',
      'kube_proxy_mode',
      'exposure',
    ] as const,
    registers: [registry],
  });
  new Gauge({
    name: `${PREFIX}reaper_cache_synced`,
    help: '1 once the cache has had its first full list, else 0',
    labelNames: ['cache'] as const,
    registers: [registry],
    collect() {
      for (const [cache, synced] of Object.entries(options.cachesSynced())) {
        this.set({ cache }, synced ? 1 : 0);
      }
    },
  });

  return {
    registry,
    reaped: () => reaped.inc(),
    reapFailed: () => failed.inc(),
    staleSeen: () => seen.inc(),
    scanned(zero, gone) {
      weightZero.set(zero);
      stale.set(gone);
    },
    diagnosed({ facts, exposure }) {
      node.reset();
      node.set(
        {
          kernel: facts.kernel,
          conn_reuse_mode: String(facts.connReuseMode ?? 'n/a'),
          expire_nodest_conn: String(facts.expireNodestConn ?? 'n/a'),
          kube_proxy_mode: facts.kubeProxyMode ?? 'unknown',
          exposure,
        },
        1,
      );
    },
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
