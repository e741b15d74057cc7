// The mesh proxy stand-in: what an Istio sidecar (classic mode) does to the
// traffic of a pod and when it stops carrying it. Run as uid 1337 in the
// pod's network namespace. See test/lab/README.md for what it models and what
// it does not.
//
//   node proxy.ts '{"inboundPort":8080,"appPort":8081,"outboundPort":15001,
//                   "upstream":"http://10.231.0.2:8080","drainSeconds":5}'
//
// - Inbound: listens on the pod's service port and forwards each request to
//   the app on loopback, over pooled keep-alive connections (as Envoy's
//   inbound cluster does). The app's inbound sockets are the app's uid; the
//   proxy's are 1337.
// - Outbound: listens on loopback; the app sends its outbound calls there and
//   the proxy forwards them to the other service, again over pooled
//   connections.
// - A failed connection to the app or upstream, or a reset before the
//   response headers, is answered with 503, as Envoy does.
// - SIGTERM: pilot-agent's classic drain. Inbound listeners stay open for
//   `drainSeconds` while every inbound response carries `Connection: close`;
//   outbound keeps working. Then the proxy exits at once, cutting whatever is
//   still in flight in either direction.
//
// Prints "ready" once both listeners are up.

import http from 'node:http';

interface ProxyConfig {
  inboundPort: number;
  appPort: number;
  outboundPort: number;
  upstream: string;
  drainSeconds: number;
}

const config = JSON.parse(process.argv[2] ?? '{}') as ProxyConfig;
const upstream = new URL(config.upstream);
let draining = false;

function forward(
  target: { host: string; port: number; agent: http.Agent },
  inbound: boolean,
): http.RequestListener {
  return (req, res) => {
    const out = http.request(
      {
        host: target.host,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, connection: 'keep-alive' },
        agent: target.agent,
      },
      (answer) => {
        // Hop-by-hop headers stay on their hop.
        const { connection: _c, 'keep-alive': _k, ...headers } = answer.headers;
        if (inbound && draining) headers['connection'] = 'close';
        res.writeHead(answer.statusCode ?? 502, headers);
        answer.pipe(res);
        answer.on('error', () => res.destroy());
      },
    );
    out.on('error', () => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const headers: Record<string, string> = { 'content-type': 'text/plain' };
      if (inbound && draining) headers['connection'] = 'close';
      res.writeHead(503, headers);
      res.end('upstream connect error or disconnect/reset before headers\n');
    });
    req.pipe(out);
  };
}

const inbound = http.createServer(
  forward(
    { host: '127.0.0.1', port: config.appPort, agent: new http.Agent({ keepAlive: true }) },
    true,
  ),
);
const outbound = http.createServer(
  forward(
    {
      host: upstream.hostname,
      port: Number(upstream.port),
      agent: new http.Agent({ keepAlive: true }),
    },
    false,
  ),
);
for (const server of [inbound, outbound]) {
  server.keepAliveTimeout = 120_000;
  server.headersTimeout = 121_000;
  server.requestTimeout = 0;
}

process.on('SIGTERM', () => {
  if (draining) return;
  draining = true;
  inbound.closeIdleConnections();
  setTimeout(() => process.exit(0), config.drainSeconds * 1000);
});

let listening = 0;
const ready = () => {
  if (++listening === 2) process.stdout.write('ready\n');
};
inbound.listen(config.inboundPort, '0.0.0.0', ready);
outbound.listen(config.outboundPort, '127.0.0.1', ready);
