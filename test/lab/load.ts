// The load generator: sends constant traffic and counts only what it sees.
// On the real node it runs in a client pod (ClusterIP paths) or in the
// node's network namespace (in front of HAProxy); the emulator runs it in
// its node namespace.
//
//   node load.ts '<LoadConfig JSON>'
//
// Without `controlPort` it starts at once and stops on "stop" on stdin. With
// it, it serves HTTP there: GET /healthz; POST /start starts a run; POST
// /stop ends it and answers with the run's LoadResult (JSON). Runs can repeat.
//
// Open loop: requests start at a constant rate whatever happens to earlier
// ones, so a stalled backend cannot slow the load down and hide failures.
// `connections` says how each request travels: `fresh`, a new connection
// each (`Connection: close`); `pooled`, a keep-alive pool (Node's agent,
// which also sends TCP keepalive probes on idle connections); `mixed`, the
// two in turn. Methods take turns: GET and POST.
//
// A request counts as ok only if it gets a 200 whose JSON body says ok and,
// for a POST, echoes the number of bytes sent. Everything else is a failure,
// classified from what the client saw:
//   5xx      an HTTP status of 500 or more;
//   reset    the connection was reset or closed before a full response;
//   timeout  no full response within the client's budget (connectTimeoutMs, totalTimeoutMs);
//   other    anything else (another status, a wrong body, a refused connection).
// On stop it sends nothing new and waits for the requests in flight.

import http from 'node:http';
import { percentile } from './stats.ts';

export interface LoadConfig {
  host: string;
  port: number;
  /** Requests started per second. */
  rate: number;
  connections: 'fresh' | 'pooled' | 'mixed';
  /** Pooled connections at most (per destination). */
  poolSize: number;
  /** Serve the control API here instead of reading stdin. */
  controlPort?: number;
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
  /** The first failures: when each request started (wall-clock ms), and what it met. */
  failures: Array<{ at: number; kind: FailureKind; detail: string }>;
}

/** Failures listed one by one in a result, at most. */
const LISTED_FAILURES = 200;

interface Outcome {
  method: string;
  /** Wall-clock ms at which the request started. */
  at: number;
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
  const at = Date.now();
  return new Promise((resolve) => {
    let timedOut = false;
    let settled = false;
    const finish = (failure: FailureKind | null, detail: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(total);
      resolve({ method, at, ms: performance.now() - started, failure, detail });
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
    failures: outcomes
      .filter((o) => o.failure !== null)
      .sort((a, b) => a.at - b.at)
      .slice(0, LISTED_FAILURES)
      .map((o) => ({ at: o.at, kind: o.failure!, detail: o.detail })),
  };
}

/** Request i: GET or POST in turn, and in `mixed` keep-alive or fresh in turn. */
export function shapeOf(
  i: number,
  connections: LoadConfig['connections'],
): { method: 'GET' | 'POST'; keepAlive: boolean } {
  const keepAlive =
    connections === 'mixed' ? Math.floor(i / 2) % 2 === 0 : connections === 'pooled';
  return { method: i % 2 === 0 ? 'GET' : 'POST', keepAlive };
}

const TICK_MS = 5;

/** One run: starts requests on schedule until stop() or maxRunMs. */
function startRun(config: LoadConfig): { stop(): Promise<LoadResult> } {
  const outcomes: Outcome[] = [];
  const inFlight = new Set<Promise<void>>();
  // Spread over every pooled connection, so each carries traffic.
  const pool = new http.Agent({ keepAlive: true, maxSockets: config.poolSize, scheduling: 'fifo' });
  let stopping = false;
  const loop = (async () => {
    const started = performance.now();
    let sent = 0;
    while (!stopping && performance.now() - started < config.maxRunMs) {
      const due = Math.floor(((performance.now() - started) / 1000) * config.rate);
      for (; sent < due; sent++) {
        const { method, keepAlive } = shapeOf(sent, config.connections);
        const request = send(config, keepAlive ? pool : false, method).then((outcome) => {
          outcomes.push(outcome);
          inFlight.delete(request);
        });
        inFlight.add(request);
      }
      await new Promise((resolve) => setTimeout(resolve, TICK_MS));
    }
  })();
  return {
    async stop() {
      stopping = true;
      await loop;
      await Promise.all(inFlight);
      pool.destroy();
      return summarize(outcomes);
    },
  };
}

function serveControl(config: LoadConfig, port: number): void {
  let run: ReturnType<typeof startRun> | undefined;
  const server = http.createServer((req, res) => {
    const answer = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.url === '/healthz') return answer(200, { running: run !== undefined });
    if (req.method === 'POST' && req.url === '/start') {
      if (run !== undefined) return answer(409, { error: 'already running' });
      run = startRun(config);
      return answer(200, { started: true });
    }
    if (req.method === 'POST' && req.url === '/stop') {
      if (run === undefined) return answer(409, { error: 'not running' });
      const stopping = run;
      run = undefined;
      void stopping.stop().then((result) => answer(200, result));
      return;
    }
    answer(404, { error: 'unknown' });
  });
  server.listen(port, '0.0.0.0', () => process.stdout.write('ready\n'));
  // PID 1 of its container: without a handler SIGTERM would be ignored.
  process.on('SIGTERM', () => process.exit(0));
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '{}') as LoadConfig;
  if (config.controlPort !== undefined) {
    serveControl(config, config.controlPort);
    return;
  }
  const stopped = new Promise<void>((resolve) => {
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk: string) => {
      if (chunk.includes('stop')) resolve();
    });
  });
  process.stdout.write('ready\n');
  const run = startRun(config);
  await Promise.race([stopped, new Promise((resolve) => setTimeout(resolve, config.maxRunMs))]);
  process.stdout.write(`${JSON.stringify(await run.stop())}\n`);
  process.exit(0);
}

if (import.meta.main) await main();
