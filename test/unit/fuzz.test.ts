// Hostile input at the admission endpoint, in process: every reply is a 4xx
// or a well-formed AdmissionReview, and patches apply to the object sent.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import fastJsonPatch from 'fast-json-patch';
import pino from 'pino';
import { buildConfig, readRawOptions } from '../../src/cli/config.ts';
import { startServer, type RunningServer } from '../../src/cli/serve.ts';
import { arbitraryPod } from '../support/arbitraries.ts';
import { checkHostileReply, hostileBody } from '../support/hostile.ts';
import { review, type ReviewReply } from '../support/reviews.ts';

import { LOOPBACK_LISTENERS, makeDevCerts } from '../support/serve.ts';

const RUNS = Number(process.env['FUZZ_RUNS'] ?? 300);
let server: RunningServer;

before(async () => {
  const certs = makeDevCerts();
  const raw = readRawOptions(
    [
      ...LOOPBACK_LISTENERS,
      '--inject-default',
      'enabled',
      '--kube-version',
      '1.33',
      '--tls-cert',
      certs.certPath,
      '--tls-key',
      certs.keyPath,
    ],
    {},
  );
  server = await startServer(buildConfig(raw), pino({ level: 'silent' }));
});

after(async () => {
  await server.close();
});

describe('fuzzing POST /mutate', () => {
  it('answers hostile bodies with a 4xx or a well-formed review', async () => {
    await fc.assert(
      fc.asyncProperty(hostileBody, async (sent) => {
        const res = await server.webhook.inject({
          method: 'POST',
          url: '/mutate',
          headers: { 'content-type': sent.contentType },
          payload: sent.body,
        });
        checkHostileReply(sent, res.statusCode, res.body);
      }),
      { numRuns: RUNS },
    );
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined, 'no prototype pollution');
  });

  it('every patch applies cleanly to the pod as sent and yields a valid pod', async () => {
    await fc.assert(
      fc.asyncProperty(arbitraryPod, async (pod) => {
        const sent = review(pod);
        const res = await server.webhook.inject({ method: 'POST', url: '/mutate', payload: sent });
        assert.equal(res.statusCode, 200);
        const reply = res.json<ReviewReply>();
        if (reply.response.patch === undefined) return;
        const ops = JSON.parse(
          Buffer.from(reply.response.patch, 'base64').toString(),
        ) as fastJsonPatch.Operation[];
        assert.equal(fastJsonPatch.validate(ops, structuredClone(pod)), undefined);
        const patched = fastJsonPatch.applyPatch(
          structuredClone(pod),
          ops,
          true,
          false,
        ).newDocument;
        assert.ok(Array.isArray(patched.spec.containers));
      }),
      { numRuns: RUNS },
    );
  });

  it('answers v1beta1 reviews in v1beta1', async () => {
    await fc.assert(
      fc.asyncProperty(arbitraryPod, async (pod) => {
        const res = await server.webhook.inject({
          method: 'POST',
          url: '/mutate',
          payload: review(pod, {}, 'admission.k8s.io/v1beta1'),
        });
        assert.equal(res.statusCode, 200);
        assert.equal(res.json<ReviewReply>().apiVersion, 'admission.k8s.io/v1beta1');
      }),
      { numRuns: 50 },
    );
  });
});
