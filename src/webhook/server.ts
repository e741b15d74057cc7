// The HTTPS admission endpoint and the plain-HTTP health listener.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { performance } from 'node:perf_hooks';
import Fastify, {
  LogController,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import type { Logger } from 'pino';
import { isRecord } from '../core/types.ts';
import {
  createPodAdmission,
  type AdmissionEnvironment,
  type AdmissionResult,
  type AdmissionSummary,
} from './admission.ts';
import { decodeReview, reviewJson, type AdmissionRequest } from './review.ts';
import type { KeyPair } from './tls.ts';

/** Pods are a few KiB, rarely a few hundred; the API server caps requests at 3 MiB. */
export const BODY_LIMIT_BYTES = 3 * 1024 * 1024;

/** What the server reports to its metrics. */
export interface AdmissionObserver {
  admission(summary: AdmissionSummary, seconds: number): void;
  /** A request answered 4xx: not an AdmissionReview, unparsable, too large. */
  malformed(statusCode: number): void;
}

export interface WebhookAppOptions {
  keyPair: KeyPair;
  environment: AdmissionEnvironment;
  logger: Logger;
  observer?: AdmissionObserver;
  /**
   * True once the server is shutting down: each answer then closes its
   * connection, so the API server's pooled connections move to a ready
   * replica instead of returning here.
   */
  draining?: () => boolean;
}

function podLabel(object: unknown, fallback: string): string {
  const metadata = isRecord(object) && isRecord(object['metadata']) ? object['metadata'] : {};
  const name = metadata['name'];
  if (typeof name === 'string' && name !== '') return name;
  const generateName = metadata['generateName'];
  return typeof generateName === 'string' && generateName !== '' ? `${generateName}*` : fallback;
}

/** The fields of an admission's log line. */
function admissionFields(review: AdmissionRequest, summary: AdmissionSummary, ms: number) {
  return {
    namespace: review.namespace,
    pod: podLabel(review.object, review.name),
    uid: review.uid,
    ...(review.dryRun ? { dryRun: true } : {}),
    outcome: summary.outcome,
    reason: summary.reason,
    mode: summary.outcome === 'mutated' ? summary.mode : undefined,
    hooks: summary.hooks,
    grace: summary.grace ?? undefined,
    warnings:
      summary.policyWarnings.length > 0 ? summary.policyWarnings.map((w) => w.key) : undefined,
    ms: Math.round(ms * 100) / 100,
  };
}

export type WebhookApp = FastifyInstance<HttpsServer, IncomingMessage, ServerResponse, Logger>;

export function createWebhookApp(options: WebhookAppOptions): WebhookApp {
  const { environment, logger, observer } = options;
  const app = Fastify({
    https: { key: options.keyPair.key, cert: options.keyPair.cert, minVersion: 'TLSv1.2' },
    loggerInstance: logger,
    // One line per admission, written by the route; no request/response pair.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT_BYTES,
    onProtoPoisoning: 'remove',
    onConstructorPoisoning: 'remove',
    // While closing, requests on open connections are still admissions to answer.
    return503OnClosing: false,
  });
  const badRequest = (reply: FastifyReply, status: number, code: string, message: string) => {
    observer?.malformed(status);
    return reply.code(status).send({ error: code, message });
  };
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const status =
      error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500
        ? error.statusCode
        : 400;
    request.log.warn({ error: error.message, status }, 'rejected malformed request');
    return badRequest(reply, status, error.code ?? 'BAD_REQUEST', error.message);
  });
  // Reviews are JSON; anything else is 415, not a string to misread.
  app.removeContentTypeParser('text/plain');

  const admit = createPodAdmission(environment);
  const answer = (
    request: FastifyRequest,
    reply: FastifyReply,
    review: AdmissionRequest,
    { response, summary }: AdmissionResult,
    startedMs: number,
  ) => {
    const ms = performance.now() - startedMs;
    try {
      observer?.admission(summary, ms / 1000);
      const fields = admissionFields(review, summary, ms);
      if (summary.outcome === 'error') request.log.error(fields, 'admission');
      else request.log.info(fields, 'admission');
    } catch (error) {
      // The answer is made: a failing metric or log line must not turn it into a 400.
      request.log.error(
        { uid: review.uid, error: (error as Error).message },
        'recording an admission failed',
      );
    }
    if (options.draining?.() === true) reply.header('connection', 'close');
    // Serialized already: with a content type set, Fastify sends a string as it is.
    return reply
      .type('application/json; charset=utf-8')
      .send(reviewJson(review.apiVersion, response));
  };

  // Not async: a pod whose namespace is known is answered in the same turn.
  app.post('/mutate', (request, reply) => {
    const startedMs = performance.now();
    const decoded = decodeReview(request.body);
    if (!decoded.ok) {
      request.log.warn({ error: decoded.message }, 'rejected malformed AdmissionReview');
      badRequest(reply, 400, 'BAD_REQUEST', decoded.message);
      return;
    }
    const review = decoded.request;
    const result = admit(review);
    if (result instanceof Promise) {
      return result.then((settled) => answer(request, reply, review, settled, startedMs));
    }
    answer(request, reply, review, result, startedMs);
    return;
  });
  return app;
}
