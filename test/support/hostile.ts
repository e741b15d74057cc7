// Generators of hostile request bodies for the admission endpoint: garbage,
// valid reviews with random damage, prototype keys, deep nesting, huge
// strings, wrong types, other kinds and operations, v1beta1.

import fc from 'fast-check';
import { arbitraryPod } from './arbitraries.ts';

export interface HostileBody {
  body: string;
  contentType: string;
}

type JsonObject = Record<string, unknown>;

const jsonish = fc.jsonValue({ maxDepth: 3 });

function validReview(object: unknown, apiVersion: string, extra: JsonObject = {}): JsonObject {
  return {
    apiVersion,
    kind: 'AdmissionReview',
    request: {
      uid: 'fuzz-uid',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      operation: 'CREATE',
      namespace: 'fuzz',
      object,
      ...extra,
    },
  };
}

/** Replaces the value at a random path of a JSON tree. */
function damage(tree: unknown, path: number[], replacement: unknown): unknown {
  if (path.length === 0 || tree === null || typeof tree !== 'object') return replacement;
  const keys = Object.keys(tree);
  if (keys.length === 0) return replacement;
  const key = keys[path[0]! % keys.length]!;
  const copy: JsonObject | unknown[] = Array.isArray(tree)
    ? [...tree]
    : { ...(tree as JsonObject) };
  (copy as JsonObject)[key] = damage((tree as JsonObject)[key], path.slice(1), replacement);
  return copy;
}

const damagedReview = fc
  .tuple(
    arbitraryPod,
    fc.constantFrom('admission.k8s.io/v1', 'admission.k8s.io/v1beta1'),
    fc.array(fc.nat(), { minLength: 1, maxLength: 8 }),
    fc.oneof(jsonish, fc.constant(undefined), fc.constant(null), fc.string({ maxLength: 5000 })),
  )
  .map(([pod, version, path, replacement]) =>
    JSON.stringify(damage(validReview(pod, version), path, replacement)),
  );

const protoKeys = fc
  .tuple(arbitraryPod, fc.constantFrom('__proto__', 'constructor', 'prototype'), fc.nat())
  .map(([pod, key, at]) => {
    const text = JSON.stringify(validReview(pod, 'admission.k8s.io/v1'));
    const braces = [...text.matchAll(/\{/g)].map((m) => m.index);
    const index = braces[at % braces.length]! + 1;
    return `${text.slice(0, index)}"${key}":{"polluted":true,"toString":1},${text.slice(index)}`;
  });

const deepNesting = fc
  .tuple(fc.integer({ min: 1000, max: 300_000 }), fc.constantFrom('[', '{"a":'))
  .map(([depth, open]) => {
    const close = open === '[' ? ']' : '}';
    const core = `${open.repeat(depth)}${open === '[' ? '1' : '1'}${close.repeat(depth)}`;
    return JSON.stringify(validReview({ spec: { containers: [] } }, 'admission.k8s.io/v1')).replace(
      '"containers":[]',
      `"containers":[],"x":${core}`,
    );
  });

const hugeString = fc.integer({ min: 100_000, max: 2_500_000 }).map((size) =>
  JSON.stringify(
    validReview(
      {
        metadata: { annotations: { 'prestop-injector.io/mode': 'x'.repeat(size) } },
        spec: { containers: [{ name: 'a' }] },
      },
      'admission.k8s.io/v1',
    ),
  ),
);

const otherRequests = fc
  .tuple(
    arbitraryPod,
    fc.constantFrom('DELETE', 'UPDATE', 'CONNECT', '', 'create'),
    fc.constantFrom('Pod', 'Deployment', 'Secret', ''),
    fc.constantFrom('', 'apps', 'example.com'),
  )
  .map(([pod, operation, kind, group]) =>
    JSON.stringify(
      validReview(pod, 'admission.k8s.io/v1', { operation, kind: { group, version: 'v1', kind } }),
    ),
  );

const wrongTypes = fc
  .record({
    apiVersion: jsonish,
    kind: jsonish,
    request: fc.oneof(
      jsonish,
      fc.record({
        uid: jsonish,
        kind: jsonish,
        operation: jsonish,
        namespace: jsonish,
        object: jsonish,
        dryRun: jsonish,
      }),
    ),
  })
  .map((review) => JSON.stringify(review));

const missingUid = arbitraryPod.map((pod) => {
  const review = validReview(pod, 'admission.k8s.io/v1');
  delete (review['request'] as JsonObject)['uid'];
  return JSON.stringify(review);
});

const garbage = fc.oneof(
  fc.string({ maxLength: 2000 }),
  fc.uint8Array({ maxLength: 2000 }).map((bytes) => Buffer.from(bytes).toString('latin1')),
  jsonish.map((value) => JSON.stringify(value)),
);

export const hostileBody: fc.Arbitrary<HostileBody> = fc
  .tuple(
    fc.oneof(
      { weight: 4, arbitrary: damagedReview },
      { weight: 2, arbitrary: protoKeys },
      { weight: 1, arbitrary: deepNesting },
      { weight: 1, arbitrary: hugeString },
      { weight: 2, arbitrary: otherRequests },
      { weight: 2, arbitrary: wrongTypes },
      { weight: 1, arbitrary: missingUid },
      { weight: 2, arbitrary: garbage },
    ),
    fc.constantFrom(
      'application/json',
      'application/json',
      'application/json; charset=utf-8',
      'text/plain',
      'application/octet-stream',
    ),
  )
  .map(([body, contentType]) => ({ body, contentType }));

/** Checks one reply: a 4xx, or a well-formed AdmissionReview answering the request. */
export function checkHostileReply(sent: HostileBody, status: number, text: string): void {
  if (status >= 400 && status < 500) return;
  if (status !== 200) throw new Error(`status ${status} for ${sent.body.slice(0, 120)}`);
  const reply = JSON.parse(text) as {
    apiVersion?: unknown;
    kind?: unknown;
    response?: { uid?: unknown; allowed?: unknown; patch?: unknown };
  };
  let request: { apiVersion?: unknown; request?: { uid?: unknown } } = {};
  try {
    request = JSON.parse(sent.body) as typeof request;
  } catch {
    throw new Error('a 200 for a body that is not JSON');
  }
  if (reply.kind !== 'AdmissionReview') throw new Error('reply kind');
  if (reply.apiVersion !== request.apiVersion)
    throw new Error('reply apiVersion differs from the request');
  if (reply.response?.uid !== request.request?.uid)
    throw new Error('reply uid differs from the request');
  if (reply.response?.allowed !== true) throw new Error('not allowed');
  if (reply.response.patch !== undefined) {
    const ops = JSON.parse(
      Buffer.from(String(reply.response.patch), 'base64').toString('utf8'),
    ) as unknown;
    if (!Array.isArray(ops) || ops.length === 0) throw new Error('patch is not a non-empty array');
  }
}
