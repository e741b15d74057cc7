// The mesh proxy stand-in: what an Istio or Linkerd sidecar does to a pod's
// traffic and when it stops carrying it. See docs/lab.md for what it models
// and what it does not.
//
//   node proxy.ts '<ProxyConfig JSON>'       the proxy
//   node proxy.ts drain ADMIN_PORT           asks it to drain (Istio's native
//                                            preStop, `pilot-agent request POST drain`)
//
// - Inbound: listens where inbound traffic arrives (under iptables capture,
//   15006 or 4143; in the emulator, the pod's service port) and forwards each
//   request to the app on loopback over pooled keep-alive connections, as
//   Envoy's inbound cluster does.
// - Outbound: listens where the app's outbound connections arrive (under
//   capture, 15001 or 4140: iptables REDIRECTs them there) and forwards each
//   request to the destination its Host header names, or to a fixed
//   upstream, over pooled connections. Its own connections run as its uid,
//   which the capture rules let through.
// - A failed connection to the app or upstream, or a reset before the
//   response headers, is answered with 503, as Envoy does.
// - Istio's inbound drain (`drain_listeners?inboundonly&graceful`): listeners
//   keep accepting, every inbound response carries `Connection: close`;
//   outbound keeps working. Classic mode drains on SIGTERM for
//   `drainSeconds` (terminationDrainDuration) and then exits, cutting what is
//   in flight. Native mode drains when its preStop asks (at t=0), and exits
//   at once on SIGTERM, which Kubernetes sends only after the app has exited.
// - Linkerd, on SIGTERM: refuses new connections at once, answers what is in
//   flight with `Connection: close`, closes idle connections, and exits when
//   none is left.
//
// With $RECORD_FILE set, appends {"event","pod","t"} lines there (drain,
// SIGTERM, exit). Prints "ready" once it listens.

import fs from 'node:fs';
import http from 'node:http';

export interface ProxyConfig {
  kind: 'istio' | 'linkerd';
  native: boolean;
  inboundPort: number;
  appPort: number;
  outboundPort: number;
  /** Where outbound calls go; default: the request's Host header (under capture). */
  upstream?: string;
  /** Istio's admin port (POST /drain) and health port; Linkerd's admin port. */
  adminPort?: number;
  healthPort?: number;
  /** Istio classic: terminationDrainDuration. */
  drainSeconds: number;
  /** Default 0.0.0.0. */
  inboundHost?: string;
  outboundHost?: string;
}

if (process.argv[2] === 'drain') {
  // The preStop side: one request, then out. Any answer counts, as with the kubelet.
  const req = http.request(
    { host: '127.0.0.1', port: Number(process.argv[3]), method: 'POST', path: '/drain' },
    (res) => {
      res.resume();
      res.on('end', () => process.exit(0));
    },
  );
  req.on('error', () => process.exit(1));
  req.end();
} else {
  runProxy(JSON.parse(process.argv[2] ?? '{}') as ProxyConfig);
}

function runProxy(config: ProxyConfig): void {
  const name = process.env['POD_NAME'] ?? 'proxy';
  const recordFile = process.env['RECORD_FILE'];
  const record = (event: string) => {
    if (recordFile === undefined) return;
    fs.appendFileSync(recordFile, `${JSON.stringify({ event, pod: name, t: Date.now() })}\n`);
  };
  const fixedUpstream = config.upstream === undefined ? undefined : new URL(config.upstream);
  let draining = false;
  let refusing = false;

  function forward(
    target: (req: http.IncomingMessage) => { host: string; port: number },
    agent: http.Agent,
    inbound: boolean,
  ): http.RequestListener {
    return (req, res) => {
      const closeAfter = () => inbound && (draining || refusing);
      let destination: { host: string; port: number };
      try {
        destination = target(req);
      } catch {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end('no destination\n');
        return;
      }
      const out = http.request(
        {
          ...destination,
          method: req.method,
          path: req.url,
          headers: { ...req.headers, connection: 'keep-alive' },
          agent,
        },
        (answer) => {
          // Hop-by-hop headers stay on their hop.
          const { connection: _c, 'keep-alive': _k, ...headers } = answer.headers;
          if (closeAfter()) headers['connection'] = 'close';
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
        if (closeAfter()) headers['connection'] = 'close';
        res.writeHead(503, headers);
        res.end('upstream connect error or disconnect/reset before headers\n');
      });
      req.pipe(out);
    };
  }

  const inbound = http.createServer(
    forward(
      () => ({ host: '127.0.0.1', port: config.appPort }),
      new http.Agent({ keepAlive: true }),
      true,
    ),
  );
  const outbound = http.createServer(
    forward(
      (req) => {
        if (fixedUpstream !== undefined) {
          return { host: fixedUpstream.hostname, port: Number(fixedUpstream.port || 80) };
        }
        const host = new URL(`http://${req.headers.host ?? ''}`);
        if (host.hostname === '') throw new Error('no Host header');
        return { host: host.hostname, port: Number(host.port || 80) };
      },
      new http.Agent({ keepAlive: true }),
      false,
    ),
  );
  for (const server of [inbound, outbound]) {
    server.keepAliveTimeout = 120_000;
    server.headersTimeout = 121_000;
    server.requestTimeout = 0;
  }

  const startDrain = () => {
    if (draining) return;
    draining = true;
    record('drain');
  };
  const exit = () => {
    record('exit');
    process.exit(0);
  };

  process.on('SIGTERM', () => {
    record('SIGTERM');
    if (config.kind === 'linkerd') {
      refusing = true;
      let open = 2;
      for (const server of [inbound, outbound]) {
        server.close(() => {
          if (--open === 0) exit();
        });
        server.closeIdleConnections();
      }
      setInterval(() => {
        inbound.closeIdleConnections();
        outbound.closeIdleConnections();
      }, 100);
    } else if (config.native) {
      exit();
    } else {
      startDrain();
      setTimeout(exit, config.drainSeconds * 1000);
    }
  });

  const adminHandler: http.RequestListener = (req, res) => {
    if (req.method === 'POST' && req.url === '/drain') startDrain();
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(draining ? 'draining\n' : 'live\n');
  };

  const listeners: Array<[http.Server, number, string]> = [
    [inbound, config.inboundPort, config.inboundHost ?? '0.0.0.0'],
    [outbound, config.outboundPort, config.outboundHost ?? '0.0.0.0'],
  ];
  if (config.adminPort !== undefined) {
    listeners.push([http.createServer(adminHandler), config.adminPort, '127.0.0.1']);
  }
  if (config.healthPort !== undefined) {
    listeners.push([http.createServer(adminHandler), config.healthPort, '0.0.0.0']);
  }
  let listening = 0;
  for (const [server, port, host] of listeners) {
    server.listen(port, host, () => {
      if (++listening === listeners.length) process.stdout.write('ready\n');
    });
  }
}
