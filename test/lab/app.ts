// The app inside a lab pod: a real HTTP server, run as the container's uid in
// the pod's network namespace.
//
//   node app.ts '{"host":"0.0.0.0","port":8080,"onSigterm":"exit","workMs":10}'
//
// onSigterm:
//   exit      no handler: the default action ends the process at once, with
//             whatever requests are in flight (what many apps do);
//   graceful  stop accepting, close idle keep-alive connections, answer the
//             requests in flight with `Connection: close`, exit when none is left.
// workMs: how long each request takes. outbound: a URL each request calls
// first (through the mesh proxy); a failed call makes the answer a 503.
//
// Prints "ready" once it listens.

import http from 'node:http';

export interface AppConfig {
  host: string;
  port: number;
  onSigterm: 'exit' | 'graceful';
  workMs: number;
  outbound?: string;
  name: string;
}

const config = JSON.parse(process.argv[2] ?? '{}') as AppConfig;
const outboundAgent = new http.Agent({ keepAlive: true });
let closing = false;

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
  void (async () => {
    const bytes = await readBody(req);
    await new Promise((resolve) => setTimeout(resolve, config.workMs));
    let status = 200;
    let body: Record<string, unknown> = { ok: true, pod: config.name, bytes };
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
// Longer than any proxy's idle timeout in the lab, so the app never closes an
// idle keep-alive connection under a proxy about to reuse it.
server.keepAliveTimeout = 120_000;
server.headersTimeout = 121_000;
server.requestTimeout = 0;

if (config.onSigterm === 'graceful') {
  process.on('SIGTERM', () => {
    closing = true;
    server.close(() => process.exit(0));
    // A connection whose response was already under way goes idle later.
    server.closeIdleConnections();
    setInterval(() => server.closeIdleConnections(), 100);
  });
}

server.listen(config.port, config.host, () => process.stdout.write('ready\n'));
