// The app of a lab pod: a real HTTP server. On the real node it is the app
// container's process (`node /lab/app.ts CONFIG`, PID 1 of its container);
// the emulator runs it as a process in a pod's network namespace.
//
//   node app.ts '{"host":"0.0.0.0","port":8080,"onSigterm":"exit","workMs":10}'
//
// onSigterm:
//   exit      ends the process at once, with whatever requests are in flight
//             (what many apps do). A handler does it: as PID 1 of a container
//             a process without one would ignore SIGTERM until SIGKILL;
//   graceful  stops accepting, answers what is in flight with
//             `Connection: close`, closes idle keep-alive connections, and
//             exits when no connection is left.
// workMs: how long each request takes. outbound: a URL each request calls
// first (in a mesh pod, through the proxy); a failed call makes the answer a
// 503. GET /healthz answers at once (readiness probes).
//
// With $RECORD_FILE set, appends {"event","pod","t"} lines (wall-clock ms)
// there: start, SIGTERM, exit. Prints "ready" once it listens.

import fs from 'node:fs';
import http from 'node:http';

export interface AppConfig {
  host: string;
  port: number;
  onSigterm: 'exit' | 'graceful';
  workMs: number;
  outbound?: string;
  /** Default: $POD_NAME. */
  name?: string;
}

const config = JSON.parse(process.argv[2] ?? '{}') as AppConfig;
const name = config.name ?? process.env['POD_NAME'] ?? 'app';
const recordFile = process.env['RECORD_FILE'];
const outboundAgent = new http.Agent({ keepAlive: true });
let closing = false;

function record(event: string): void {
  // Synchronous: the line must be written before the process may end.
  if (recordFile !== undefined) {
    fs.appendFileSync(recordFile, `${JSON.stringify({ event, pod: name, t: Date.now() })}\n`);
  }
}

function callOutbound(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: outboundAgent }, (res) => {
      res.resume();
      res.on('end', () =>
        res.statusCode === 200 ? resolve() : reject(new Error(`outbound ${res.statusCode}`)),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

function readBody(req: http.IncomingMessage): Promise<number> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    req.on('data', (chunk: Buffer) => (bytes += chunk.length));
    req.on('end', () => resolve(bytes));
    req.on('error', reject);
  });
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(closing ? 503 : 200, closing ? { connection: 'close' } : {});
    res.end();
    return;
  }
  void (async () => {
    const bytes = await readBody(req);
    await new Promise((resolve) => setTimeout(resolve, config.workMs));
    let status = 200;
    let body: Record<string, unknown> = { ok: true, pod: name, bytes };
    if (config.outbound !== undefined) {
      try {
        await callOutbound(config.outbound);
      } catch (error) {
        status = 503;
        body = { ok: false, error: (error as Error).message };
      }
    }
    if (closing) res.setHeader('connection', 'close');
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  })().catch(() => res.destroy());
});
// Longer than any client's or proxy's idle timeout in the lab, so the app
// never closes an idle keep-alive connection that a client is about to reuse.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.requestTimeout = 0;

process.on('SIGTERM', () => {
  record('SIGTERM');
  if (config.onSigterm === 'exit') {
    record('exit');
    process.exit(0);
  }
  closing = true;
  server.close(() => {
    record('exit');
    process.exit(0);
  });
  // A connection whose response was under way goes idle later.
  server.closeIdleConnections();
  setInterval(() => server.closeIdleConnections(), 100);
});

server.listen(config.port, config.host, () => {
  record('start');
  process.stdout.write('ready\n');
});
