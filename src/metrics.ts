// Prometheus metrics for `serve`, on the health listener's GET /metrics. Each
// server owns its Registry (not prom-client's global one), so several servers
// can live in one process. Labels come from closed sets only: outcome, mode,
// annotation key, API purpose; never a pod or namespace name.

import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client';
import type { ClusterStats, ClusterView } from './serve.ts';
import type { AdmissionSummary, AnswerCacheResult } from './webhook/handler.ts';

const PREFIX = 'prestop_injector_';
/** Admissions take well under a millisecond; the API server gives up at the webhook's timeout. */
const DURATION_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1, 10];

export interface MetricsSources {
  cluster?: ClusterView;
  /** Expiry of the certificate being served, in ms since the epoch; undefined before serving. */
  certificateNotAfterMs?: () => number | undefined;
  now?: () => number;
}

export interface ServerMetrics {
  registry: Registry;
  /** Called once per admission, with its result, duration and whether it was planned. */
  observe(summary: AdmissionSummary, seconds: number, cache?: AnswerCacheResult): void;
  /** The scrape: Prometheus text format. */
  render(): Promise<{ contentType: string; body: string }>;
}

type Mode = 'sleep' | 'drain' | 'none';

/**
 * A Prometheus histogram without labels whose observations are plain array
 * updates: prom-client's Histogram hashes labels and converts each bound to
 * a string on every observe, once per admission. Registered as a custom
 * metric: the registry reads it through get().
 */
class TalliedHistogram {
  readonly name: string;
  readonly help: string;
  readonly #bounds: readonly number[];
  readonly #counts: Float64Array;
  #sum = 0;
  #count = 0;

  constructor(name: string, help: string, bounds: readonly number[]) {
    this.name = name;
    this.help = help;
    this.#bounds = bounds;
    this.#counts = new Float64Array(bounds.length);
  }

  observe(value: number): void {
    this.#sum += value;
    this.#count++;
    const bounds = this.#bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]!) {
        this.#counts[i]!++;
        return;
      }
    }
  }

  get() {
    const values: { metricName: string; labels: Record<string, string | number>; value: number }[] =
      [];
    let cumulative = 0;
    this.#bounds.forEach((bound, i) => {
      cumulative += this.#counts[i]!;
      values.push({ metricName: `${this.name}_bucket`, labels: { le: bound }, value: cumulative });
    });
    values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf' }, value: this.#count });
    values.push({ metricName: `${this.name}_sum`, labels: {}, value: this.#sum });
    values.push({ metricName: `${this.name}_count`, labels: {}, value: this.#count });
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }
}

interface Tally {
  labels: { result: string; mode: Mode };
  count: number;
  /** What the counter has been given so far. */
  reported: number;
}

/** The mode label: only what a pod's settings can be, never free text. */
function modeLabel(result: AdmissionSummary): Mode {
  return result.mode === 'sleep' || result.mode === 'drain' ? result.mode : 'none';
}

function registerClusterMetrics(
  registry: Registry,
  stats: () => ClusterStats,
  now: () => number,
): void {
  new Gauge({
    name: `${PREFIX}namespace_cache_age_seconds`,
    help: 'Seconds since the namespace cache last heard from the API server (list or watch event); NaN before the first',
    registers: [registry],
    collect() {
      const last = stats().lastActivityMs;
      this.set(last > 0 ? Math.max(0, (now() - last) / 1000) : NaN);
    },
  });

  new Gauge({
    name: `${PREFIX}namespace_cache_synced`,
    help: '1 once the namespace cache has listed every namespace, else 0',
    registers: [registry],
    collect() {
      this.set(stats().synced ? 1 : 0);
    },
  });

  // The cluster view counts its requests; the counter follows by the difference.
  const reported = new Map<string, number>();
  new Counter({
    name: `${PREFIX}apiserver_requests_total`,
    help: 'Requests this process made to the API server, by purpose (list, watch, read, version)',
    labelNames: ['purpose'] as const,
    registers: [registry],
    collect() {
      for (const [purpose, total] of Object.entries(stats().requests)) {
        const seen = reported.get(purpose) ?? 0;
        if (total > seen) this.inc({ purpose }, total - seen);
        reported.set(purpose, total);
      }
    },
  });
}

export function createMetrics(sources: MetricsSources = {}): ServerMetrics {
  const registry = new Registry();
  const now = sources.now ?? Date.now;
  collectDefaultMetrics({ register: registry, prefix: PREFIX });

  // Admissions are tallied in plain numbers and added to the counter when it is
  // read, in the order first seen (as the series were once created): prom-client's
  // inc() builds and looks up a label key on every call. Results and modes are closed sets.
  const tallies: Tally[] = [];
  const talliesByResult = new Map<string, Partial<Record<Mode, Tally>>>();
  const admissions = new Counter({
    name: `${PREFIX}admissions_total`,
    help: 'Pod admissions answered, by result (mutated, unchanged, skipped, error) and mode',
    labelNames: ['result', 'mode'] as const,
    registers: [registry],
    collect() {
      for (const tally of tallies) {
        if (tally.count > tally.reported) this.inc(tally.labels, tally.count - tally.reported);
        tally.reported = tally.count;
      }
    },
  });
  // Errors carry no mode; the series exists from the start, so an alert on it has data.
  admissions.inc({ result: 'error', mode: 'none' }, 0);

  // Every series from the start; counted in plain numbers, as admissions are.
  const answers: Record<AnswerCacheResult, number> = { hit: 0, miss: 0, bypass: 0 };
  const answersReported: Record<AnswerCacheResult, number> = { hit: 0, miss: 0, bypass: 0 };
  new Counter({
    name: `${PREFIX}answer_cache_total`,
    help: 'Pod admissions by where the answer came from: hit (kept from an earlier pod with the same plan key), miss (planned and kept), bypass (not kept: no plan key, not a pod CREATE, or an error)',
    labelNames: ['result'] as const,
    registers: [registry],
    collect() {
      for (const result of ['hit', 'miss', 'bypass'] as const) {
        this.inc({ result }, answers[result] - answersReported[result]);
        answersReported[result] = answers[result];
      }
    },
  });

  const duration = new TalliedHistogram(
    `${PREFIX}admission_duration_seconds`,
    'Time from a decoded AdmissionReview to its answer, in seconds',
    DURATION_BUCKETS,
  );
  registry.registerMetric(duration as unknown as Metric);

  const warnings = new Counter({
    name: `${PREFIX}policy_warnings_total`,
    help: 'Annotation values refused (and reported to the user), by annotation key and where it was set',
    labelNames: ['annotation', 'source'] as const,
    registers: [registry],
  });

  const stats = sources.cluster?.stats?.bind(sources.cluster);
  // Without a cluster there is no namespace cache to report on.
  if (stats !== undefined) registerClusterMetrics(registry, stats, now);

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
    observe(result, seconds, cache) {
      if (cache !== undefined) answers[cache]++;
      const mode = modeLabel(result);
      let byMode = talliesByResult.get(result.outcome);
      if (byMode === undefined) {
        byMode = {};
        talliesByResult.set(result.outcome, byMode);
      }
      let tally = byMode[mode];
      if (tally === undefined) {
        tally = { labels: { result: result.outcome, mode }, count: 0, reported: 0 };
        byMode[mode] = tally;
        tallies.push(tally);
      }
      tally.count++;
      duration.observe(seconds);
      for (const warning of result.policyWarnings) {
        warnings.inc({ annotation: warning.key, source: warning.source });
      }
    },
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
