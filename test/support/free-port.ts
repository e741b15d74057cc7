import net from 'node:net';

// Ports handed out by this process, so two callers never get the same one
// before either of them has bound it.
const handedOut = new Set<number>();

function listenOnce(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host, port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Returns a TCP port on `host` that was free a moment ago. There is an
 * unavoidable window between this check and the caller binding the port;
 * callers that start external processes should retry on "address already in
 * use".
 */
export async function getFreePort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await listenOnce(host);
    if (port > 0 && !handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`could not find a free port on ${host}`);
}

/** Returns `count` distinct free ports. */
export async function getFreePorts(count: number, host = '127.0.0.1'): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < count; i++) ports.push(await getFreePort(host));
  return ports;
}
