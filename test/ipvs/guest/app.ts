// A pod's app in the IPVS lab: GET /?ms=N answers after N ms with the
// pod's name and closes the connection (each request is a new connection,
// as a proxy without upstream keep-alive makes them). On SIGTERM it shuts
// down gracefully, as Go's and Node's servers do: it stops accepting,
// finishes what is in flight, and exits. SIGUSR2 prints, as one JSON line,
// the client ports of the requests in flight.
//
//   node app.ts POD_NAME PORT

import { createServer } from 'node:http';

const [podName = 'pod', portText = '8080'] = process.argv.slice(2);
const inFlight = new Map<number, number>();

const server = createServer((req, res) => {
  const clientPort = req.socket.remotePort ?? 0;
  inFlight.set(clientPort, Date.now());
  const ms = Number(new URL(req.url ?? '/', 'http://app').searchParams.get('ms') ?? 0);
  setTimeout(() => {
    res.writeHead(200, {
      'Content-Type': 'text/plain',
      'Content-Length': Buffer.byteLength(podName),
      Connection: 'close',
    });
    res.end(podName, () => inFlight.delete(clientPort));
  }, ms);
  res.on('close', () => inFlight.delete(clientPort));
});

server.listen(Number(portText), '0.0.0.0', () => {
  process.stdout.write(`listening ${podName}\n`);
});

process.on('SIGUSR2', () => {
  process.stdout.write(`${JSON.stringify({ inFlight: [...inFlight.keys()] })}\n`);
});

process.on('SIGTERM', () => {
  process.stdout.write(`SIGTERM with ${inFlight.size} in flight\n`);
  server.close(() => process.exit(0));
  server.closeIdleConnections();
});
