// Prometheus metrics for `serve`, on the health listener's GET /metrics. Each
// server owns its Registry (not prom-client's global one), so several servers
// can live in one process. Labels come from closed sets only: outcome, mode,
// annotation key, API purpose; never a pod or namespace name. The label
// children of those sets are made once, at start, so every series exists
// from the first scrape and an admission only increments.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { formatKubeVersion, type Capabilities } from '../core/capabilities.ts';
import { SETTING_SPECS } from '../core/policy.ts';
import type { ClusterStats, ClusterView } from '../cluster/view.ts';
import type { AdmissionObserver } from './server.ts';
import type { AdmissionOutcome, AdmissionSummary } from './admission.ts';

const PREFIX = 'prestop_injector_';
/** Admissions take well under a millisecond; the API server gives up at the webhook's timeout. */
const DURATION_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1, 10];

const OUTCOMES: readonly AdmissionOutcome[] = ['mutated', 'unchanged', 'skipped', 'error'];
const MODES = ['sleep', 'drain', 'none'] as const;
type ModeLabel = (typeof MODES)[number];
const SOURCES = ['pod', 'namespace'] as const;

export interface MetricsSources {
  /** The running build's version, for build_info. */
  version: string;
  cluster?: ClusterView;
  /** The capabilities admissions are planned with now; undefined before serving. */
  capabilities?: () => Capabilities | undefined;
  /** Expiry of the certificate being served, in ms since the epoch; undefined before serving. */
  certificateNotAfterMs?: () => number | undefined;
}

export interface ServerMetrics extends AdmissionObserver {
  registry: Registry;
  /** The scrape: Prometheus text format. */
  render(): Promise<{ contentType: string; body: string }>;
}

/** The mode label: only what a pod's settings can be, never free text. */
function modeLabel(summary: AdmissionSummary): ModeLabel {
  return summary.mode === 'sleep' || summary.mode === 'drain' ? summary.mode : 'none';
}

function registerClusterMetrics(registry: Registry, stats: () => ClusterStats): void {
  for (const cache of ['namespace', 'node'] as const) {
    const of = (all: ClusterStats) => (cache === 'namespace' ? all.namespaces : all.nodes);
    new Gauge({
      name: `${PREFIX}${cache}_cache_last_sync_timestamp_seconds`,
      help: `When the ${cache} cache last heard from the API server (list, watch event or bookmark), in seconds since the epoch; 0 before the first`,
      registers: [registry],
      collect() {
        this.set(of(stats()).lastActivityMs / 1000);
      },
    });
    new Gauge({
      name: `${PREFIX}${cache}_cache_synced`,
      help: `1 once the ${cache} cache has had its first full list, else 0`,
      registers: [registry],
      collect() {
        this.set(of(stats()).synced ? 1 : 0);
      },
    });
  }
  // The cluster view counts its requests; the counter follows by the difference.
  const reported = new Map<string, number>();
  new Counter({
    name: `${PREFIX}apiserver_requests_total`,
    help: 'Requests this process made to the API server, by purpose (list, watch, read, version, metrics)',
    labelNames: ['purpose'] as const,
    registers: [registry],
    collect() {
      for (const [purpose, total] of Object.entries(stats().requests)) {
        const seen = reported.get(purpose) ?? 0;
        this.inc({ purpose }, total - seen);
        reported.set(purpose, total);
      }
    },
  });
}

/** What the planner plans with now, and from which versions. */
function registerCapabilityMetrics(
  registry: Registry,
  capabilities: () => Capabilities | undefined,
): void {
  new Gauge({
    name: `${PREFIX}cluster_versions_info`,
    help: 'Always 1; the labels give the API server version and the oldest kubelet the webhook plans for ("unknown" until known)',
    labelNames: ['apiserver', 'oldest_kubelet'] as const,
    registers: [registry],
    collect() {
      this.reset();
      const versions = capabilities()?.versions;
      if (versions === undefined) return;
      this.set(
        {
          apiserver: formatKubeVersion(versions.server),
          oldest_kubelet: formatKubeVersion(versions.oldestKubelet),
        },
        1,
      );
    },
  });
  new Gauge({
    name: `${PREFIX}sleep_action_enabled`,
    help: '1 while new admissions get the native sleep action (API server and every kubelet 1.30+), 0 while they get exec sleep',
    registers: [registry],
    collect() {
      const now = capabilities();
      this.set(now === undefined ? NaN : now.sleepAction ? 1 : 0);
    },
  });
}

/** A series exported as 0 from the start, so an alert or a rate() on it has data. */
function zeroed(series: Counter.Internal): Counter.Internal {
  series.inc(0);
  return series;
}

export function createMetrics(sources: MetricsSources): ServerMetrics {
  const registry = new Registry();
  // Unprefixed, so the standard process_* and nodejs_* dashboards work.
  collectDefaultMetrics({ register: registry });

  new Gauge({
    name: `${PREFIX}build_info`,
    help: 'Always 1; the labels say which build is running',
    labelNames: ['version', 'nodejs_version'] as const,
    registers: [registry],
  }).set({ version: sources.version, nodejs_version: process.version }, 1);

  const admissions = new Counter({
    name: `${PREFIX}admissions_total`,
    help: 'Pod admissions answered, by result (mutated, unchanged, skipped, error) and mode',
    labelNames: ['result', 'mode'] as const,
    registers: [registry],
  });
  const admissionSeries = new Map<string, Counter.Internal>();
  for (const result of OUTCOMES) {
    for (const mode of MODES)
      admissionSeries.set(`${result}/${mode}`, zeroed(admissions.labels(result, mode)));
  }

  const duration = new Histogram({
    name: `${PREFIX}admission_duration_seconds`,
    help: 'Time from a received AdmissionReview to its answer, in seconds',
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });

  const warnings = new Counter({
    name: `${PREFIX}policy_warnings_total`,
    help: 'Annotation values refused (and reported to the user), by annotation key and where it was set',
    labelNames: ['annotation', 'source'] as const,
    registers: [registry],
  });
  const warningSeries = new Map<string, Counter.Internal>();
  for (const { key } of Object.values(SETTING_SPECS)) {
    for (const source of SOURCES) {
      warningSeries.set(`${key}/${source}`, zeroed(warnings.labels(key, source)));
    }
  }

  const malformed = new Counter({
    name: `${PREFIX}malformed_requests_total`,
    help: 'Requests to /mutate answered 4xx (not an AdmissionReview, unparsable, too large, wrong content type), by status code',
    labelNames: ['code'] as const,
    registers: [registry],
  });
  // The codes Fastify answers a bad body with, present from the start so an
  // increase() alert sees the first one; any other 4xx appears when it happens.
  for (const code of ['400', '413', '415']) zeroed(malformed.labels(code));

  const stats = sources.cluster?.stats?.bind(sources.cluster);
  // Without a cluster there is no namespace cache to report on.
  if (stats !== undefined) registerClusterMetrics(registry, stats);
  if (sources.capabilities !== undefined) registerCapabilityMetrics(registry, sources.capabilities);

  new Gauge({
    name: `${PREFIX}serving_certificate_expiry_timestamp_seconds`,
    help: 'When the serving certificate now in use expires, in seconds since the epoch',
    registers: [registry],
    collect() {
      const notAfter = sources.certificateNotAfterMs?.();
      this.set(notAfter === undefined ? NaN : notAfter / 1000);
    },
  });

  return {
    registry,
    admission(summary, seconds) {
      admissionSeries.get(`${summary.outcome}/${modeLabel(summary)}`)?.inc();
      duration.observe(seconds);
      for (const warning of summary.policyWarnings) {
        warningSeries.get(`${warning.key}/${warning.source}`)?.inc();
      }
    },
    malformed(statusCode) {
      malformed.inc({ code: String(statusCode) });
    },
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
