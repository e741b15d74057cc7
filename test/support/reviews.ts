// AdmissionReview builders and a TLS-trusting HTTPS client for server tests.

import { request } from 'node:https';
import fastJsonPatch from 'fast-json-patch';
import type { PodLike } from '../../src/core/types.ts';

let counter = 0;

export function review(
  object: unknown,
  overrides: Record<string, unknown> = {},
  apiVersion = 'admission.k8s.io/v1',
) {
  counter++;
  return {
    apiVersion,
    kind: 'AdmissionReview',
    request: {
      uid: `00000000-0000-0000-0000-${String(counter).padStart(12, '0')}`,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      operation: 'CREATE',
      namespace: 'default',
      userInfo: { username: 'test' },
      object,
      dryRun: false,
      ...overrides,
    },
  };
}

export interface ReviewReply {
  apiVersion: string;
  kind: string;
  response: {
    uid: string;
    allowed: boolean;
    patchType?: string;
    patch?: string;
    warnings?: string[];
  };
}

export function applyReply(object: PodLike, reply: ReviewReply): PodLike {
  if (reply.response.patch === undefined) return object;
  const ops = JSON.parse(
    Buffer.from(reply.response.patch, 'base64').toString('utf8'),
  ) as fastJsonPatch.Operation[];
  return fastJsonPatch.applyPatch(structuredClone(object), ops, true, false).newDocument;
}

export interface HttpsReply {
  status: number;
  body: string;
  json<T = ReviewReply>(): T;
}

export function httpsPost(
  port: number,
  path: string,
  body: string | Buffer,
  ca: string | Buffer,
  headers: Record<string, string> = { 'content-type': 'application/json' },
): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        ca,
        servername: 'localhost',
        headers,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({
            status: res.statusCode ?? 0,
            body: text,
            json: <T>() => JSON.parse(text) as T,
          });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}
