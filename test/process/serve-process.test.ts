// The real `serve` process: a barrage of malformed requests and a 30 MB body
// leave it healthy and answering valid reviews; SIGTERM stops it cleanly.

import assert from 'node:assert/strict';
import { request } from 'node:https';
import { after, before, describe, it } from 'node:test';
import { container, pod } from '../support/pods.ts';
import { applyReply, httpsPost, review } from '../support/reviews.ts';
import { startServe, type DevCerts, type ServeProcess } from '../support/serve.ts';

let serve: ServeProcess;
let certs: DevCerts;

before(async () => {
  serve = await startServe({ args: ['--kube-version', '1.33', '--inject-default', 'enabled'] });
  certs = serve.certs;
});

after(async () => {
  await serve.stop('SIGKILL');
});

function bigUpload(
  bytes: number,
  chunked: boolean,
): Promise<{ status: number | null; error?: string }> {
  return new Promise((resolve) => {
    const headers: Record<string, string | number> = { 'content-type': 'application/json' };
    if (!chunked) headers['content-length'] = bytes;
    const req = request(
      {
        host: '127.0.0.1',
        port: serve.webhookPort,
        path: '/mutate',
        method: 'POST',
        ca: certs.caPem,
        servername: 'localhost',
        headers,
        agent: false,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? null }));
      },
    );
    req.on('error', (error) => resolve({ status: null, error: error.message }));
    const chunk = Buffer.alloc(1024 * 1024, 'x');
    chunk.write(
      '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","pad":"',
    );
    let sent = 0;
    const pump = () => {
      while (sent < bytes) {
        sent += chunk.length;
        if (!req.write(chunk)) return void req.once('drain', pump);
      }
      req.end();
    };
    pump();
  });
}

const GARBAGE: [string, string | Buffer, Record<string, string>?][] = [
  ['empty body', ''],
  [
    'truncated JSON',
    '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"',
  ],
  ['random bytes', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256))],
  ['a JSON string', '"AdmissionReview"'],
  ['null', 'null'],
  ['deep nesting', `${'['.repeat(200_000)}${']'.repeat(200_000)}`],
  [
    'deeply nested object in the pod',
    JSON.stringify(review({ spec: { containers: [] } })).replace(
      '"containers":[]',
      `"containers":[],"x":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}`,
    ),
  ],
  [
    'wrong types everywhere',
    JSON.stringify({ apiVersion: 1, kind: [], request: { uid: {}, kind: 'Pod', object: 7 } }),
  ],
  ['object is an array', JSON.stringify(review([1, 2]))],
  ['containers not a list', JSON.stringify(review({ spec: { containers: 'web' } }))],
  [
    'container without name',
    JSON.stringify(
      review({
        spec: { containers: [{ image: 1, lifecycle: 'x' }] },
        metadata: { annotations: { 'prestop-injector.io/mode': 7 } },
      }),
    ),
  ],
  [
    'annotations of wrong type',
    JSON.stringify(
      review({ metadata: { annotations: [1] }, spec: { containers: [{ name: 'a' }] } }),
    ),
  ],
  [
    'a status annotation that is garbage',
    JSON.stringify(
      review(
        pod(
          [container('web')],
          {},
          { 'prestop-injector.io/status': '{"v":1,"grace":7,"fp":null}' },
        ),
      ),
    ),
  ],
  [
    'constructor pollution',
    '{"constructor":{"prototype":{"x":1}},"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"c","kind":{"kind":"Pod","group":""},"operation":"CREATE","object":{"spec":{"containers":[{"name":"a"}]}}}}',
  ],
  ['xml', '<AdmissionReview/>', { 'content-type': 'application/xml' }],
  ['form', 'a=b', { 'content-type': 'application/x-www-form-urlencoded' }],
];

describe('serve process under hostile input', () => {
  it('answers every malformed request with a 4xx or a well-formed review', async () => {
    for (let round = 0; round < 5; round++) {
      for (const [name, body, headers] of GARBAGE) {
        const reply = await httpsPost(serve.webhookPort, '/mutate', body, certs.caPem, headers);
        assert.ok(reply.status < 500, `${name}: status ${reply.status}`);
        if (reply.status === 200) {
          const parsed = reply.json();
          assert.equal(parsed.kind, 'AdmissionReview', name);
          assert.ok(parsed.apiVersion.startsWith('admission.k8s.io/'), name);
          assert.ok(parsed.response.uid, name);
          assert.equal(parsed.response.allowed, true, name);
        }
      }
    }
  });

  it('refuses a 30 MB body, with or without content-length, and keeps going', async () => {
    for (const chunked of [false, true]) {
      const outcome = await bigUpload(30 * 1024 * 1024, chunked);
      // The server answers 413 and may close the socket while the client is still sending.
      assert.ok(
        outcome.status === 413 ||
          (outcome.status === null && /ECONNRESET|EPIPE|socket hang up/.test(outcome.error ?? '')),
        JSON.stringify(outcome),
      );
    }
  });

  it('is still healthy and still answers valid reviews correctly', async () => {
    const health = await fetch(`http://127.0.0.1:${serve.healthPort}/healthz`);
    assert.equal(health.status, 200);
    const object = pod([container('web')]);
    const reply = await httpsPost(
      serve.webhookPort,
      '/mutate',
      JSON.stringify(review(object)),
      certs.caPem,
    );
    assert.equal(reply.status, 200);
    const patched = applyReply(object, reply.json());
    assert.deepEqual(patched.spec.containers[0]!.lifecycle?.preStop, { sleep: { seconds: 10 } });
    assert.equal(serve.proc.hasExited(), false, 'still running');
  });

  it('logs the first pod of a template in full, with namespace, pod, outcome and milliseconds', () => {
    const admissions = serve.logs().filter((l) => l['msg'] === 'admission');
    assert.ok(admissions.length > 0);
    const mutated = admissions.find((l) => l['outcome'] === 'mutated' && l['pod'] === 'p');
    assert.ok(mutated);
    assert.equal(mutated['namespace'], 'default');
    assert.ok(mutated['hooks']);
    assert.equal(typeof mutated['ms'], 'number');
    assert.doesNotMatch(
      JSON.stringify(admissions),
      /"containers":\[/,
      'no full objects in the log',
    );
  });

  const replicaUids: string[] = [];
  it('records every replica of a template on a line of its own, each uid once', async () => {
    const template = pod([container('replica')]);
    template.metadata = { generateName: 'web-5d8c-' } as typeof template.metadata;
    for (let i = 0; i < 120; i++) {
      const body = review(template);
      replicaUids.push(body.request.uid);
      const reply = await httpsPost(
        serve.webhookPort,
        '/mutate',
        JSON.stringify(body),
        certs.caPem,
      );
      assert.equal(reply.status, 200);
    }
    // Written within the log's flush interval.
    const records = () =>
      serve.logs().filter((l) => l['msg'] === 'admission' && l['pod'] === 'web-5d8c-*');
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && records().length < replicaUids.length) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.deepEqual(
      records()
        .map((r) => r['uid'])
        .sort(),
      [...replicaUids].sort(),
    );
    for (const line of records()) {
      assert.equal(line['outcome'], 'mutated');
      assert.deepEqual(line['hooks'], { replica: 'sleep-action' });
    }
  });

  it('stops cleanly on SIGTERM', async () => {
    const code = await serve.stop('SIGTERM');
    assert.equal(code, 0);
  });
});
