// The plain-HTTP health listener: /healthz, /readyz and, when given,
// /metrics. The webhook serves it beside its HTTPS port; the IPVS reaper
// serves it alone.

import Fastify, { type FastifyInstance } from 'fastify';

export interface HealthAppOptions {
  isReady(): { ready: boolean; reason?: string };
  metrics?(): Promise<{ contentType: string; body: string }>;
}

export function createHealthApp(options: HealthAppOptions): FastifyInstance {
  const app = Fastify({ logger: false });
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const state = options.isReady();
    return reply
      .code(state.ready ? 200 : 503)
      .send(state.ready ? { status: 'ok' } : { status: 'not ready', reason: state.reason });
  });
  if (options.metrics !== undefined) {
    const metrics = options.metrics;
    app.get('/metrics', async (_request, reply) => {
      const { contentType, body } = await metrics();
      return reply.header('content-type', contentType).send(body);
    });
  }
  return app;
}
