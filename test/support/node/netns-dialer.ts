// Runs inside a node's network namespace and opens TCP connections there for
// the test process, which lives outside it: a client connects to this
// program's unix socket, sends one line `HOST:PORT`, and from then on the
// connection is piped to HOST:PORT as seen from inside the namespace.
//
//   nsenter --net=/run/netns/NAME -- node netns-dialer.ts SOCKET_PATH
//
// Prints "ready" once it listens.

import fs from 'node:fs';
import net from 'node:net';

const socketPath = process.argv[2];
if (socketPath === undefined) {
  process.stderr.write('usage: netns-dialer.ts SOCKET_PATH\n');
  process.exit(2);
}

const MAX_HEADER = 512;

function parseTarget(line: string): { host: string; port: number } | undefined {
  // host:port, or [v6]:port
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(line.trim());
  if (m === null) return undefined;
  return { host: m[1]!, port: Number(m[2]) };
}

const server = net.createServer((client) => {
  let header = Buffer.alloc(0);
  client.on('error', () => client.destroy());
  const onHeader = (chunk: Buffer): void => {
    header = Buffer.concat([header, chunk]);
    const newline = header.indexOf(10);
    if (newline === -1) {
      if (header.length > MAX_HEADER) client.destroy();
      return;
    }
    client.off('data', onHeader);
    client.pause();
    const target = parseTarget(header.subarray(0, newline).toString('utf8'));
    const rest = header.subarray(newline + 1);
    if (target === undefined) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target.port, target.host);
    upstream.once('connect', () => {
      if (rest.length > 0) upstream.write(rest);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  };
  client.on('data', onHeader);
});

fs.rmSync(socketPath, { force: true });
server.listen(socketPath, () => process.stdout.write('ready\n'));
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    server.close();
    fs.rmSync(socketPath, { force: true });
    process.exit(0);
  });
}
