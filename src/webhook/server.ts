// The HTTPS admission endpoint and the plain-HTTP health listener.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { performance } from 'node:perf_hooks';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
} from 'fastify';
import type { Logger } from 'pino';
import { isRecord } from '../core/types.ts';
import { AdmissionLog, type AdmissionLogMode, type AdmissionRecord } from './admission-log.ts';
import { decodeReview, type AdmissionRequest } from './admission.ts';
import {
  createAdmissionHandler,
  type AdmissionEnvironment,
  type AdmissionResult,
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
  /** Default grouped: see admission-log.ts. */
  admissionLog?: AdmissionLogMode;
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
    // The route writes the admission log itself (admission-log.ts); Fastify
    // gets no logger, which spares a child logger per request.
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
  const admissionLog = new AdmissionLog(logger, options.admissionLog ?? 'grouped');
  // After the in-flight requests: their records are pending until then.
  app.addHook('onClose', async () => admissionLog.close());

  const finish = (
    review: AdmissionRequest,
    { body, summary, cache }: AdmissionResult,
    startedMs: number,
    reply: FastifyReply,
  ) => {
    const ms = performance.now() - startedMs;
    observe?.(summary, ms / 1000, cache);
    const record: AdmissionRecord = {
      namespace: review.namespace,
      pod: podLabel(review.object, review.name),
      uid: review.uid,
      ...(review.dryRun ? { dryRun: true } : {}),
      ms: Math.round(ms * 100) / 100,
    };
    admissionLog.record(summary, cache, record);
    // Serialized already: with a content type set, Fastify sends a string as it is.
    return reply.type('application/json; charset=utf-8').send(body);
  };

  // Not async: a kept answer is sent in the same turn, with no promise to settle.
  app.post('/mutate', (request, reply) => {
    const startedMs = performance.now();
    const decoded = decodeReview(request.body);
    if (!decoded.ok) {
      logger.warn({ error: decoded.message }, 'rejected malformed AdmissionReview');
      reply.code(400).send({ error: 'BAD_REQUEST', message: decoded.message });
      return;
    }
    const review = decoded.request;
    const result = handle(review);
    if (result instanceof Promise) return result.then((r) => finish(review, r, startedMs, reply));
    finish(review, result, startedMs, reply);
    return;
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
