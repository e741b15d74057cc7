// One load run with autocannon: keep-alive HTTPS, fixed connections,
// pipelining 1. Latencies come from autocannon's per-response times (in ms,
// sub-millisecond precision), not its integer-ms histogram.

import { readdirSync, readFileSync } from 'node:fs';
import autocannon from 'autocannon';

export interface LoadSettings {
  connections: number;
  durationSeconds: number;
}

export interface LoadResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  requests: number;
  /** The server's CPU time (all its threads, user and system) per answered request. */
  cpuUsPerRequest: number;
}

/** ns a process has run on a CPU, summed over its threads (Linux schedstat). */
export function cpuNs(pid: number): number {
  let total = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // The thread ended between listing and reading.
    }
  }
  return total;
}

/** The value below which `fraction` of the sorted samples fall (nearest rank). */
export function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1);
  return sorted[Math.max(0, rank)]!;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Load with `bodies` sent in turn. Each connection walks the list on its
 * own, with requests built once up front; with `oneSequence`, all walk one
 * sequence together, so no body is sent twice before the list is through
 * (each request is then built as it is sent, by client and floor alike).
 */
export function load(
  server: { port: number; pid: number },
  bodies: readonly string[],
  settings: LoadSettings,
  oneSequence = false,
): Promise<LoadResult> {
  let next = 0;
  const requests = oneSequence
    ? [
        {
          setupRequest: (request: { body?: string | Buffer }) => {
            request.body = bodies[next++ % bodies.length]!;
            return request;
          },
        },
      ]
    : bodies.map((body) => ({ body }));
  const { port, pid } = server;
  const cpuBefore = cpuNs(pid);
  let latencies = new Float64Array(1 << 16);
  let count = 0;
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: `https://127.0.0.1:${port}/mutate`,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        requests,
        connections: settings.connections,
        pipelining: 1,
        duration: settings.durationSeconds,
        timeout: 10,
      },
      (error, result) => {
        if (error !== null) return reject(error);
        if (result.errors > 0 || result.timeouts > 0 || result.non2xx > 0) {
          return reject(
            new Error(
              `load on port ${port}: ${result.errors} errors, ${result.timeouts} timeouts, ${result.non2xx} non-2xx`,
            ),
          );
        }
        const sorted = latencies.subarray(0, count).sort();
        resolve({
          rps: result.requests.total / result.duration,
          p50Ms: percentile(sorted, 0.5),
          p99Ms: percentile(sorted, 0.99),
          p999Ms: percentile(sorted, 0.999),
          requests: result.requests.total,
          cpuUsPerRequest: (cpuNs(pid) - cpuBefore) / 1000 / result.requests.total,
        });
      },
    );
    instance.on('response', (_client, _status, _bytes, ms) => {
      if (count === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[count++] = ms;
    });
  });
}
