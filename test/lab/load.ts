// The load generator: a separate process in the node namespace that sends
// constant traffic through the load balancer, and counts only what it sees.
//
//   node load.ts '<LoadConfig JSON>'      then "stop" on stdin
//
// Open loop: requests start at a constant rate whatever happens to earlier
// ones, so a stalled backend cannot slow the load down and hide failures.
// They take turns: GET and POST, over a pool of keep-alive connections and
// over a fresh connection each.
//
// A request counts as ok only if it gets a 200 whose JSON body says ok and,
// for a POST, echoes the number of bytes sent. Everything else is a failure,
// classified from what the client saw:
//   5xx      an HTTP status of 500 or more;
//   reset    the connection was reset or closed before a full response;
//   timeout  no full response within the client's budget (connect 2 s, total 5 s);
//   other    anything else (another status, a wrong body, a refused connection).
// On "stop" it sends nothing new, waits for the requests in flight, prints one
// JSON line (a LoadResult) and exits.

import http from 'node:http';
import { percentile } from './report.ts';

export interface LoadConfig {
  host: string;
  port: number;
  /** Requests started per second. */
  rate: number;
  connectTimeoutMs: number;
  totalTimeoutMs: number;
  /** Stops by itself after this long, whatever happens. */
  maxRunMs: number;
}

export type FailureKind = '5xx' | 'reset' | 'timeout' | 'other';

export interface LoadResult {
  requests: number;
  ok: number;
  failed: number;
  byKind: Record<FailureKind, number>;
  byMethod: Record<string, { requests: number; failed: number }>;
  statuses: Record<string, number>;
  errors: Record<string, number>;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

interface Outcome {
  method: string;
  ms: number;
  failure: FailureKind | null;
  detail: string;
}

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);

function post(): string {
  return JSON.stringify({ order: Math.floor(Math.random() * 1e9), items: ['a', 'b', 'c'] });
}

function classifyError(error: NodeJS.ErrnoException, timedOut: boolean): FailureKind {
  if (timedOut) return 'timeout';
  if (error.code !== undefined && RESET_CODES.has(error.code)) return 'reset';
  return 'other';
}

function send(config: LoadConfig, agent: http.Agent | false, method: string): Promise<Outcome> {
  const body = method === 'POST' ? post() : '';
  const started = performance.now();
  return new Promise((resolve) => {
    let timedOut = false;
    let settled = false;
    const finish = (failure: FailureKind | null, detail: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(total);
      resolve({ method, ms: performance.now() - started, failure, detail });
    };
    const req = http.request(
      {
        host: config.host,
        port: config.port,
        path: '/',
        method,
        agent,
        headers: {
          ...(agent === false ? { connection: 'close' } : {}),
          ...(method === 'POST'
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
            : {}),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('error', (error: NodeJS.ErrnoException) =>
          finish(classifyError(error, timedOut), error.code ?? error.message),
        );
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (!res.complete) return finish(timedOut ? 'timeout' : 'reset', 'incomplete body');
          if (status >= 500) return finish('5xx', String(status));
          if (status !== 200) return finish('other', String(status));
          finish(validBody(text, method, body) ? null : 'other', '200');
        });
        res.on('close', () => finish(timedOut ? 'timeout' : 'reset', 'closed before the end'));
      },
    );
    const giveUp = () => {
      timedOut = true;
      req.destroy();
      finish('timeout', 'ETIMEDOUT');
    };
    const total = setTimeout(giveUp, config.totalTimeoutMs);
    req.on('socket', (socket) => {
      if (!socket.connecting) return;
      const connectTimer = setTimeout(giveUp, config.connectTimeoutMs);
      socket.once('connect', () => clearTimeout(connectTimer));
      socket.once('close', () => clearTimeout(connectTimer));
    });
    req.on('error', (error: NodeJS.ErrnoException) =>
      finish(classifyError(error, timedOut), error.code ?? error.message),
    );
    req.end(body);
  });
}

function validBody(text: string, method: string, sent: string): boolean {
  try {
    const parsed = JSON.parse(text) as { ok?: boolean; bytes?: number };
    if (parsed.ok !== true) return false;
    return method !== 'POST' || parsed.bytes === Buffer.byteLength(sent);
  } catch {
    return false;
  }
}

export function summarize(outcomes: readonly Outcome[]): LoadResult {
  const byKind: Record<FailureKind, number> = { '5xx': 0, reset: 0, timeout: 0, other: 0 };
  const byMethod: Record<string, { requests: number; failed: number }> = {};
  const statuses: Record<string, number> = {};
  const errors: Record<string, number> = {};
  for (const outcome of outcomes) {
    const method = (byMethod[outcome.method] ??= { requests: 0, failed: 0 });
    method.requests++;
    if (/^\d+$/.test(outcome.detail))
      statuses[outcome.detail] = (statuses[outcome.detail] ?? 0) + 1;
    if (outcome.failure === null) continue;
    method.failed++;
    byKind[outcome.failure]++;
    if (!/^\d+$/.test(outcome.detail)) errors[outcome.detail] = (errors[outcome.detail] ?? 0) + 1;
  }
  const latencies = outcomes.map((o) => o.ms);
  const failed = outcomes.filter((o) => o.failure !== null).length;
  return {
    requests: outcomes.length,
    ok: outcomes.length - failed,
    failed,
    byKind,
    byMethod,
    statuses,
    errors,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.length === 0 ? 0 : Math.max(...latencies),
  };
}

/** Request i: GET or POST, keep-alive or fresh, in turn. */
export function shapeOf(i: number): { method: 'GET' | 'POST'; keepAlive: boolean } {
  return { method: i % 2 === 0 ? 'GET' : 'POST', keepAlive: Math.floor(i / 2) % 2 === 0 };
}

const TICK_MS = 5;

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '{}') as LoadConfig;
  const outcomes: Outcome[] = [];
  const inFlight = new Set<Promise<void>>();
  const pool = new http.Agent({ keepAlive: true, maxSockets: 1024 });
  let stopping = false;
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk: string) => {
    if (chunk.includes('stop')) stopping = true;
  });

  process.stdout.write('ready\n');
  const started = performance.now();
  let sent = 0;
  while (!stopping && performance.now() - started < config.maxRunMs) {
    const due = Math.floor(((performance.now() - started) / 1000) * config.rate);
    for (; sent < due; sent++) {
      const { method, keepAlive } = shapeOf(sent);
      const request = send(config, keepAlive ? pool : false, method).then((outcome) => {
        outcomes.push(outcome);
        inFlight.delete(request);
      });
      inFlight.add(request);
    }
    await new Promise((resolve) => setTimeout(resolve, TICK_MS));
  }
  await Promise.all(inFlight);
  process.stdout.write(`${JSON.stringify(summarize(outcomes))}\n`);
  process.exit(0);
}

if (import.meta.main) await main();
