// The benchmark's floor: the same stack as the webhook (Node, Fastify, HTTPS
// with the same certificate, TLS floor and body limit) doing the least an
// admission endpoint can do: parse the body and answer a constant allowed
// review. Run as its own process: floor.ts CERT KEY PORT; prints the port.

import { readFileSync } from 'node:fs';
import Fastify from 'fastify';
import { BODY_LIMIT_BYTES } from '../../src/webhook/server.ts';

const [certPath, keyPath, port = '0'] = process.argv.slice(2);
if (certPath === undefined || keyPath === undefined) {
  process.stderr.write('usage: floor.ts CERT KEY [PORT]\n');
  process.exit(2);
}

const ALLOWED = {
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  response: { uid: '00000000-0000-0000-0000-000000000000', allowed: true },
};

const app = Fastify({
  https: { cert: readFileSync(certPath), key: readFileSync(keyPath), minVersion: 'TLSv1.2' },
  logger: false,
  bodyLimit: BODY_LIMIT_BYTES,
});
app.post('/mutate', async (request) => {
  // The parsed body must exist, or the floor would skip work the webhook cannot.
  if (typeof request.body !== 'object' || request.body === null) throw new Error('no body');
  return ALLOWED;
});
await app.listen({ host: '127.0.0.1', port: Number(port) });
const address = app.server.address();
process.stdout.write(`${typeof address === 'object' && address !== null ? address.port : 0}\n`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
