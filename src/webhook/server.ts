// The HTTPS admission endpoint and the plain-HTTP health listener.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { isRecord } from '../core/types.ts';
import { decodeReview } from './admission.ts';
import {
  createAdmissionHandler,
  type AdmissionEnvironment,
  type AdmissionSummary,
  type AnswerCacheResult,
} from './handler.ts';
import type { KeyPair } from './tls.ts';

/** Pods are a few KiB, rarely a few hundred; the API server caps requests at 3 MiB. */
export const BODY_LIMIT_BYTES = 3 * 1024 * 1024;

export interface AdmissionObserver {
  (summary: AdmissionSummary, seconds: number, cache: AnswerCacheResult): void;
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

/** The log fields that come from the decision, not from the request. */
function summaryFields(summary: AdmissionSummary): Record<string, unknown> {
  return {
    outcome: summary.outcome,
    reason: summary.reason,
    mode: summary.outcome === 'mutated' ? summary.mode : undefined,
    hooks: summary.hooks,
    grace: summary.grace ?? undefined,
    warnings:
      summary.policyWarnings.length > 0 ? summary.policyWarnings.map((w) => w.key) : undefined,
  };
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

  const handle = createAdmissionHandler(environment);
  // Per shared summary, a child logger that has its fields serialized once.
  const summaryLoggers = new WeakMap<AdmissionSummary, Logger>();
  const loggerFor = (summary: AdmissionSummary): Logger => {
    let child = summaryLoggers.get(summary);
    if (child === undefined) {
      child = logger.child(summaryFields(summary));
      summaryLoggers.set(summary, child);
    }
    return child;
  };

  app.post('/mutate', async (request, reply) => {
    const started = process.hrtime.bigint();
    const decoded = decodeReview(request.body);
    if (!decoded.ok) {
      logger.warn({ error: decoded.message }, 'rejected malformed AdmissionReview');
      return reply.code(400).send({ error: 'BAD_REQUEST', message: decoded.message });
    }
    const review = decoded.request;
    const { body, summary, cache } = await handle(review);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    observe?.(summary, seconds, cache);
    const fields = {
      namespace: review.namespace,
      pod: podLabel(review.object, review.name),
      uid: review.uid,
      dryRun: review.dryRun || undefined,
      ms: Math.round(seconds * 1e5) / 100,
    };
    const level = summary.outcome === 'error' ? 'error' : 'info';
    if (cache !== 'bypass') loggerFor(summary)[level](fields, 'admission');
    else logger[level]({ ...summaryFields(summary), ...fields }, 'admission');
    // Serialized already: Fastify sends bytes with a content type as they are.
    return reply.type('application/json; charset=utf-8').send(body);
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
