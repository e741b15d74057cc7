import assert from 'node:assert/strict';
import { connect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { buildConfig, readRawOptions } from '../../src/cli/config.ts';
import { Annotation } from '../../src/core/annotations.ts';
import { startServer, type RunningServer } from '../../src/cli/serve.ts';
import { BODY_LIMIT_BYTES } from '../../src/webhook/server.ts';
import { container, pod } from '../support/pods.ts';
import { applyReply, httpsPost, review, type ReviewReply } from '../support/reviews.ts';
import { LOOPBACK_LISTENERS, secretMount, type SecretMount } from '../support/serve.ts';

let server: RunningServer;
let mount: SecretMount;

before(async () => {
  mount = secretMount();
  const config = buildConfig(
    readRawOptions(
      [
        ...LOOPBACK_LISTENERS,
        '--kube-version',
        '1.33',
        '--inject-default',
        'enabled',
        '--cert-poll-seconds',
        '0.2',
      ],
      {},
    ),
  );
  config.tlsCertPath = mount.certs.certPath;
  config.tlsKeyPath = mount.certs.keyPath;
  server = await startServer(config, pino({ level: 'silent' }));
});

after(async () => {
  await server.close();
});

async function inject(
  body: unknown,
  headers: Record<string, string> = { 'content-type': 'application/json' },
) {
  return server.webhook.inject({
    method: 'POST',
    url: '/mutate',
    headers,
    payload: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
  });
}

describe('webhook: the admission contract', () => {
  it('answers a v1 review with uid, apiVersion, kind, allowed and a patch that yields the planned pod', async () => {
    const object = pod([container('web')]);
    const sent = review(object);
    const res = await inject(sent);
    assert.equal(res.statusCode, 200);
    const reply = res.json<ReviewReply>();
    assert.equal(reply.apiVersion, 'admission.k8s.io/v1');
    assert.equal(reply.kind, 'AdmissionReview');
    assert.equal(reply.response.uid, sent.request.uid);
    assert.equal(reply.response.allowed, true);
    assert.equal(reply.response.patchType, 'JSONPatch');
    const patched = applyReply(object, reply);
    assert.deepEqual(patched.spec.containers[0]!.lifecycle?.preStop, { sleep: { seconds: 10 } });
    assert.equal(patched.spec.terminationGracePeriodSeconds, 40);
    assert.ok(patched.metadata?.annotations?.[Annotation.status]);
  });

  it('answers v1beta1 in v1beta1', async () => {
    const reply = (
      await inject(review(pod([container('web')]), {}, 'admission.k8s.io/v1beta1'))
    ).json<ReviewReply>();
    assert.equal(reply.apiVersion, 'admission.k8s.io/v1beta1');
    assert.equal(reply.response.allowed, true);
  });

  it('sends no patchType for an unchanged pod', async () => {
    const object = pod([container('web')], {}, { [Annotation.inject]: 'disabled' });
    const reply = (await inject(review(object))).json<ReviewReply>();
    assert.equal(reply.response.allowed, true);
    assert.equal(reply.response.patchType, undefined);
    assert.equal(reply.response.patch, undefined);
  });

  it('escapes "/" in annotation keys as ~1 (the patch comes from a diff)', async () => {
    const object = pod([container('web')], {}, { 'example.com/keep': 'yes' });
    const reply = (await inject(review(object))).json<ReviewReply>();
    const ops = JSON.parse(Buffer.from(reply.response.patch!, 'base64').toString()) as {
      path: string;
    }[];
    assert.ok(ops.some((op) => op.path === '/metadata/annotations/prestop-injector.io~1status'));
  });

  it('encodes a patch with non-ASCII text as base64 of its UTF-8', async () => {
    // The container names reach the patch through the status annotation.
    const object = pod([container('wéb'), container('日本'), container('x😀')]);
    const reply = (await inject(review(object))).json<ReviewReply>();
    const text = Buffer.from(reply.response.patch!, 'base64').toString('utf8');
    assert.match(text, /wéb.*日本.*x😀/);
    const status = applyReply(object, reply).metadata?.annotations?.[Annotation.status];
    assert.deepEqual(Object.keys(JSON.parse(status!).hooks), ['wéb', '日本', 'x😀']);
  });

  it('allows non-pod kinds, DELETE and a non-pod object without a patch', async () => {
    const cases = [
      review({ kind: 'ConfigMap' }, { kind: { group: '', version: 'v1', kind: 'ConfigMap' } }),
      review(pod([container('web')]), { operation: 'DELETE' }),
      review({ spec: 'nope' }),
      review(pod([container('web')]), { namespace: 'kube-system' }),
    ];
    for (const sent of cases) {
      const res = await inject(sent);
      assert.equal(res.statusCode, 200);
      const reply = res.json<ReviewReply>();
      assert.equal(reply.response.uid, sent.request.uid);
      assert.equal(reply.response.allowed, true);
      assert.equal(reply.response.patch, undefined);
    }
  });

  it('warns about bad annotations in response.warnings, naming key and value, and still admits', async () => {
    const object = pod([container('web')], {}, { [Annotation.delaySeconds]: '-5' });
    const reply = (await inject(review(object))).json<ReviewReply>();
    assert.equal(reply.response.allowed, true);
    assert.ok(
      reply.response.warnings?.some(
        (w) => w.includes(Annotation.delaySeconds) && w.includes('"-5"'),
      ),
    );
    assert.ok(reply.response.patch, 'still mutated with the default delay');
  });
});

describe('webhook: bad requests', () => {
  it('malformed JSON: 400 with a message', async () => {
    const res = await inject('{"apiVersion": ');
    assert.equal(res.statusCode, 400);
    assert.ok(res.json<{ message: string }>().message.length > 0);
  });

  it('a review without uid, or of another apiVersion or kind: 400 naming the field', async () => {
    const noUid = review(pod([container('web')]));
    delete (noUid.request as Record<string, unknown>)['uid'];
    for (const [body, field] of [
      [noUid, 'uid'],
      [{ ...review({}), apiVersion: 'v1' }, 'apiVersion'],
      [{ ...review({}), kind: 'Pod' }, 'kind'],
      [[1, 2, 3], 'object'],
      [{ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: 'x' }, 'request'],
    ] as const) {
      const res = await inject(body);
      assert.equal(res.statusCode, 400, JSON.stringify(body).slice(0, 80));
      assert.match(res.json<{ message: string }>().message, new RegExp(field));
    }
  });

  it('wrong content type: 415', async () => {
    const res = await inject('hello', { 'content-type': 'text/plain' });
    assert.equal(res.statusCode, 415);
  });

  it('a body over the limit: 413', async () => {
    const res = await inject(Buffer.alloc(BODY_LIMIT_BYTES + 10, 'a'));
    assert.equal(res.statusCode, 413);
  });

  it('__proto__ keys do not pollute and the review is still answered', async () => {
    const body = `{"__proto__":{"polluted":true},${JSON.stringify(review(pod([container('web')]))).slice(1)}`;
    const res = await inject(body);
    assert.equal(res.statusCode, 200);
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
  });
});

describe('webhook: over real HTTPS', () => {
  it('serves a client that trusts only the dev CA', async () => {
    const object = pod([container('web')]);
    const reply = await httpsPost(
      server.webhookPort,
      '/mutate',
      JSON.stringify(review(object)),
      mount.certs.caPem,
    );
    assert.equal(reply.status, 200);
    assert.equal(applyReply(object, reply.json()).spec.terminationGracePeriodSeconds, 40);
  });

  it('health and readiness on the separate plain-HTTP listener', async () => {
    const health = await fetch(`http://127.0.0.1:${server.healthPort}/healthz`);
    assert.equal(health.status, 200);
    const ready = await fetch(`http://127.0.0.1:${server.healthPort}/readyz`);
    assert.equal(ready.status, 200);
    const notThere = await fetch(`http://127.0.0.1:${server.healthPort}/mutate`, {
      method: 'POST',
    });
    assert.equal(notThere.status, 404);
  });

  it('refuses TLS older than 1.2', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const socket = connect({
        host: '127.0.0.1',
        port: server.webhookPort,
        ca: mount.certs.caPem,
        servername: 'localhost',
        minVersion: 'TLSv1',
        maxVersion: 'TLSv1.1',
      });
      socket.on('secureConnect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.on('error', (error) => resolve(error.message));
    });
    assert.notEqual(outcome, 'connected');
  });

  it('reloads the certificate on a Secret-style symlink swap, without a restart', async () => {
    const fingerprintOf = () =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(
          {
            host: '127.0.0.1',
            port: server.webhookPort,
            rejectUnauthorized: false,
            servername: 'localhost',
          },
          () => {
            resolve(socket.getPeerX509Certificate()!.fingerprint256);
            socket.destroy();
          },
        );
        socket.on('error', reject);
      });
    const before = await fingerprintOf();
    // A new CA too: the reloaded pair must be the one served.
    const next = mount.rotate(true);
    let after = before;
    for (let i = 0; i < 50 && after === before; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await fingerprintOf();
    }
    assert.notEqual(after, before);
    const object = pod([container('web')]);
    const reply = await httpsPost(
      server.webhookPort,
      '/mutate',
      JSON.stringify(review(object)),
      next.caPem,
    );
    assert.equal(reply.status, 200);
  });
});
