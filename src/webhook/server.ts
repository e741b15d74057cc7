// The HTTPS admission endpoint and the plain-HTTP health listener.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { isRecord } from '../core/types.ts';
import { decodeReview } from './admission.ts';
import { handleAdmission, type AdmissionEnvironment, type AdmissionResult } from './handler.ts';
import type { KeyPair } from './tls.ts';

/** Pods are a few KiB, rarely a few hundred; the API server caps requests at 3 MiB. */
export const BODY_LIMIT_BYTES = 3 * 1024 * 1024;

export interface AdmissionObserver {
  (result: AdmissionResult, seconds: number): void;
}

export interface WebhookAppOptions {
  keyPair: KeyPair;
  environment: AdmissionEnvironment;
  logger: Logger;
  observe?: AdmissionObserver;
}

function podLabel(object: unknown, fallback: string): string {
  const metadata = isRecord(object) && isRecord(object['metadata']) ? object['metadata'] : {};
  const name = metadata['name'];
  if (typeof name === 'string' && name !== '') return name;
  const generateName = metadata['generateName'];
  return typeof generateName === 'string' && generateName !== '' ? `${generateName}*` : fallback;
}

function clientErrorHandler(
  error: FastifyError,
  _request: unknown,
  reply: { code(n: number): { send(body: unknown): void } },
) {
  const status =
    error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500
      ? error.statusCode
      : 400;
  reply.code(status).send({ error: error.code ?? 'BAD_REQUEST', message: error.message });
}

export type WebhookApp = FastifyInstance<
  HttpsServer,
  IncomingMessage,
  ServerResponse,
  FastifyBaseLogger
>;

export function createWebhookApp(options: WebhookAppOptions): WebhookApp {
  const { environment, logger, observe } = options;
  const app = Fastify({
    https: { key: options.keyPair.key, cert: options.keyPair.cert, minVersion: 'TLSv1.2' },
    // One line per admission is written by the route itself, with the logger it
    // was given; Fastify gets none, which spares a child logger per request.
    logger: false,
    bodyLimit: BODY_LIMIT_BYTES,
    onProtoPoisoning: 'remove',
    onConstructorPoisoning: 'remove',
    // While closing, requests on open connections are still admissions to answer.
    return503OnClosing: false,
  });
  app.setErrorHandler(clientErrorHandler);
  // Reviews are JSON; anything else is 415, not a string to misread.
  app.removeContentTypeParser('text/plain');

  app.post('/mutate', async (request, reply) => {
    const started = process.hrtime.bigint();
    const decoded = decodeReview(request.body);
    if (!decoded.ok) {
      logger.warn({ error: decoded.message }, 'rejected malformed AdmissionReview');
      return reply.code(400).send({ error: 'BAD_REQUEST', message: decoded.message });
    }
    const review = decoded.request;
    const result = await handleAdmission(review, environment);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    observe?.(result, seconds);
    const level = result.outcome === 'error' ? 'error' : 'info';
    logger[level](
      {
        namespace: review.namespace,
        pod: podLabel(review.object, review.name),
        uid: review.uid,
        outcome: result.outcome,
        reason: result.reason,
        mode: result.outcome === 'mutated' ? result.mode : undefined,
        hooks: result.hooks,
        grace: result.grace ?? undefined,
        warnings:
          result.policyWarnings.length > 0 ? result.policyWarnings.map((w) => w.key) : undefined,
        dryRun: review.dryRun || undefined,
        ms: Math.round(seconds * 1e5) / 100,
      },
      'admission',
    );
    return reply.send(result.response);
  });
  return app;
}

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
