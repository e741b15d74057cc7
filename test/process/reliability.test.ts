// The serve process under load, hostile input, certificate rotation and
// SIGTERM: real processes, real TLS, counts from the client's side.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { hostileBody, checkHostileReply } from '../support/hostile.ts';
import { container, pod } from '../support/pods.ts';
import { review } from '../support/reviews.ts';
import { secretMount, startServe, type ServeProcess } from '../support/serve.ts';

const ISTIO_POD = pod([
  container('checkout', {
    ports: [{ containerPort: 8080 }],
    env: [{ name: 'DB_PASSWORD', value: 'TOPSECRET-e2e-value' }],
  }),
  {
    name: 'istio-proxy',
    image: 'docker.io/istio/proxyv2:1.26.2',
    securityContext: { runAsUser: 1337 },
  },
]);

/** The mount, its CA as a client trusts it, and a same-CA rotation returning the new serial. */
function mountedCerts(): { dir: string; ca: string; rotate(): string } {
  const secret = secretMount();
  return {
    dir: secret.dir,
    ca: secret.certs.caPem,
    rotate() {
      const next = secret.rotate();
      return new X509Certificate(readFileSync(next.certPath)).serialNumber.toUpperCase();
    },
  };
}

/** Old-space cap for the hostile run, and the chart's memory limit it must stay under. */
const HEAP_CAP_MIB = 96;
const CHART_MEMORY_LIMIT_MIB = 512;

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
}

interface Outcome {
  uid: string;
  status?: number;
  error?: string;
  serial?: string;
  body?: string;
}

function post(
  port: number,
  ca: string,
  agent: Agent | false,
  uid: string,
  object: unknown = ISTIO_POD,
): Promise<Outcome> {
  const body = JSON.stringify(review(object, { uid }));
  return new Promise((resolve) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/mutate',
        method: 'POST',
        ca,
        servername: 'localhost',
        agent,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        const serial = (res.socket as TLSSocket).getPeerCertificate?.().serialNumber;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            uid,
            status: res.statusCode ?? 0,
            serial,
            body: Buffer.concat(chunks).toString(),
          }),
        );
        res.on('error', (error) => resolve({ uid, error: error.message }));
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', (error: NodeJS.ErrnoException) =>
      resolve({ uid, error: error.code ?? error.message }),
    );
    req.end(body);
  });
}

function wellFormed(outcome: Outcome): boolean {
  if (outcome.status !== 200 || outcome.body === undefined) return false;
  const reply = JSON.parse(outcome.body) as {
    kind?: string;
    response?: { uid?: string; allowed?: boolean; patch?: string };
  };
  return (
    reply.kind === 'AdmissionReview' &&
    reply.response?.uid === outcome.uid &&
    reply.response.allowed === true &&
    reply.response.patch !== undefined
  );
}

async function startWith(
  mount: { dir: string },
  extra: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<ServeProcess> {
  return startServe({
    args: [
      ...['--tls-cert', join(mount.dir, 'tls.crt'), '--tls-key', join(mount.dir, 'tls.key')],
      ...['--inject-default', 'enabled', '--kube-version', '1.33', ...extra],
    ],
    env,
  });
}

describe('reliability of the serve process', () => {
  it('20,000 reviews at concurrency 64: zero errors, and RSS flat after warm-up', async () => {
    const mount = mountedCerts();
    const serve = await startWith(mount);
    try {
      const agent = new Agent({ keepAlive: true, maxSockets: 64 });
      const total = 20_000;
      const warmUp = 4_000;
      let next = 0;
      let failures = 0;
      let rssAfterWarmUp = 0;
      const samples: number[] = [];
      const worker = async () => {
        while (next < total) {
          const i = next++;
          if (i === warmUp) rssAfterWarmUp = rssKiB(serve.proc.child.pid!);
          if (i % 2000 === 0) samples.push(rssKiB(serve.proc.child.pid!));
          const outcome = await post(serve.webhookPort, mount.ca, agent, `load-${i}`);
          if (!wellFormed(outcome)) failures++;
        }
      };
      await Promise.all(Array.from({ length: 64 }, worker));
      agent.destroy();
      const rssEnd = rssKiB(serve.proc.child.pid!);
      const growthMiB = (rssEnd - rssAfterWarmUp) / 1024;
      console.log(
        `load: ${total} reviews, ${failures} failed; RSS after warm-up ${(rssAfterWarmUp / 1024).toFixed(1)} MiB, at end ${(rssEnd / 1024).toFixed(1)} MiB; samples ${samples.map((s) => (s / 1024).toFixed(0)).join(' ')}`,
      );
      assert.equal(failures, 0);
      assert.ok(growthMiB < 40, `RSS grew ${growthMiB.toFixed(1)} MiB after warm-up`);
    } finally {
      await serve.stop('SIGKILL');
    }
  });

  it('hostile bodies over real HTTPS: never dies, memory bounded, still correct', async () => {
    const mount = mountedCerts();
    // A heap capped as a container's memory limit would cap it: growth that
    // is a leak ends in an out-of-memory crash, not in a slowly rising RSS
    // (V8 on a large host lets an uncapped heap grow lazily, leak or not).
    const serve = await startWith(mount, [], {
      NODE_OPTIONS: `--max-old-space-size=${HEAP_CAP_MIB}`,
    });
    try {
      const agent = new Agent({ keepAlive: true, maxSockets: 8 });
      const bodies = fc.sample(hostileBody, { numRuns: 1500, seed: 4242 });
      const send = (sent: (typeof bodies)[number]) =>
        new Promise<void>((resolve, reject) => {
          const req = request(
            {
              host: '127.0.0.1',
              port: serve.webhookPort,
              path: '/mutate',
              method: 'POST',
              ca: mount.ca,
              servername: 'localhost',
              agent,
              headers: { 'content-type': sent.contentType },
            },
            (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (c: Buffer) => chunks.push(c));
              res.on('end', () => {
                try {
                  checkHostileReply(sent, res.statusCode ?? 0, Buffer.concat(chunks).toString());
                  resolve();
                } catch (error) {
                  reject(error as Error);
                }
              });
            },
          );
          // A 413 may close the socket while the body is still being sent: that is an answer.
          req.on('error', (error: NodeJS.ErrnoException) =>
            /ECONNRESET|EPIPE/.test(error.code ?? '') ? resolve() : reject(error),
          );
          req.end(sent.body);
        });
      // The same hostile set three times; the process must survive every round.
      const rss: number[] = [rssKiB(serve.proc.child.pid!)];
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < bodies.length; i += 8)
          await Promise.all(bodies.slice(i, i + 8).map(send));
        assert.equal(serve.proc.hasExited(), false, `still running after round ${round + 1}`);
        rss.push(rssKiB(serve.proc.child.pid!));
      }
      agent.destroy();
      const mib = rss.map((k) => (k / 1024).toFixed(0));
      console.log(
        `hostile: ${bodies.length} bodies x 3 rounds; RSS MiB at start and after each round: ${mib.join(' ')}`,
      );
      assert.ok(
        Math.max(...rss) < CHART_MEMORY_LIMIT_MIB * 1024,
        `RSS within the chart's ${CHART_MEMORY_LIMIT_MIB} MiB limit (${mib.join(' ')})`,
      );
      assert.ok(
        rss[3]! - rss[1]! < 100 * 1024,
        `memory bounded after the first round (${mib.join(' ')})`,
      );
      const health = await fetch(`http://127.0.0.1:${serve.healthPort}/healthz`);
      assert.equal(health.status, 200);
      assert.ok(wellFormed(await post(serve.webhookPort, mount.ca, false, 'after-fuzz')));
    } finally {
      await serve.stop('SIGKILL');
    }
  });

  it('certificate rotation under load: new connections get the new certificate, no request fails', async () => {
    const mount = mountedCerts();
    const serve = await startWith(mount, ['--cert-poll-seconds', '0.5']);
    try {
      const outcomes: (Outcome & { startedMs: number })[] = [];
      let rotatedAt = 0;
      let newSerial = '';
      let stop = false;
      const started = Date.now();
      const worker = async (w: number) => {
        for (let i = 0; !stop; i++) {
          const startedMs = Date.now() - started;
          // A fresh TLS connection per request: each one sees the current certificate.
          outcomes.push({
            ...(await post(serve.webhookPort, mount.ca, false, `rot-${w}-${i}`)),
            startedMs,
          });
        }
      };
      const workers = Array.from({ length: 8 }, (_, w) => worker(w));
      await new Promise((r) => setTimeout(r, 1000));
      newSerial = mount.rotate();
      rotatedAt = Date.now() - started;
      const deadline = Date.now() + 8000;
      while (Date.now() < deadline && !outcomes.some((o) => o.serial === newSerial))
        await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 1000));
      stop = true;
      await Promise.all(workers);
      const failed = outcomes.filter((o) => !wellFormed(o));
      const firstNew = outcomes.filter((o) => o.serial === newSerial).map((o) => o.startedMs);
      const switchedAt = Math.min(...firstNew);
      const oldAfterSwitch = outcomes.filter(
        (o) => o.startedMs > switchedAt + 200 && o.serial !== newSerial,
      );
      console.log(
        `rotation: ${outcomes.length} requests on fresh connections, ${failed.length} failed; new certificate served ${switchedAt - rotatedAt} ms after the swap`,
      );
      assert.equal(failed.length, 0, JSON.stringify(failed.slice(0, 3)));
      assert.ok(firstNew.length > 0, 'the new certificate was served');
      assert.equal(oldAfterSwitch.length, 0, 'new connections no longer get the old certificate');
    } finally {
      await serve.stop('SIGKILL');
    }
  });

  it('after SIGTERM, pooled connections are let go: idle ones closed, busy ones after their answer', async () => {
    const mount = mountedCerts();
    const serve = await startWith(mount, ['--shutdown-delay-seconds', '3']);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const ask = (uid: string) =>
      new Promise<{ connection: string | undefined; socket: TLSSocket }>((resolve, reject) => {
        const req = request(
          {
            ...{ host: '127.0.0.1', port: serve.webhookPort, path: '/mutate', method: 'POST' },
            ...{ ca: mount.ca, servername: 'localhost', agent },
            headers: { 'content-type': 'application/json' },
          },
          (res) => {
            // The socket is let go to the pool at the end: take it now.
            const socket = res.socket as TLSSocket;
            res.resume();
            res.on('end', () => resolve({ connection: res.headers.connection, socket }));
          },
        );
        req.on('error', reject);
        req.end(JSON.stringify(review(ISTIO_POD, { uid })));
      });
    try {
      const before = await ask('pool-1');
      assert.equal(before.connection, 'keep-alive');
      const closed = new Promise<void>((resolve) => before.socket.once('close', () => resolve()));
      serve.proc.child.kill('SIGTERM');
      // The idle pooled connection is closed by the server, while it still serves.
      await closed;
      const during = await ask('pool-2');
      assert.notEqual(during.socket, before.socket, 'a new connection');
      assert.equal(during.connection, 'close', 'and the answer closes it');
      assert.equal(await serve.exited, 0);
    } finally {
      agent.destroy();
      await serve.stop('SIGKILL');
    }
  });

  it('SIGTERM under load: readiness off, accepted requests answered, prompt exit', async () => {
    const mount = mountedCerts();
    const serve = await startWith(mount, ['--shutdown-delay-seconds', '1']);
    const agent = new Agent({ keepAlive: true, maxSockets: 16 });
    const outcomes: Outcome[] = [];
    let stop = false;
    const worker = async (w: number) => {
      for (let i = 0; !stop; i++) {
        const outcome = await post(serve.webhookPort, mount.ca, agent, `term-${w}-${i}`);
        outcomes.push(outcome);
        if (outcome.error === 'ECONNREFUSED') await new Promise((r) => setTimeout(r, 20));
      }
    };
    const workers = Array.from({ length: 16 }, (_, w) => worker(w));
    await new Promise((r) => setTimeout(r, 800));
    const termAt = Date.now();
    serve.proc.child.kill('SIGTERM');
    let sawNotReady = false;
    while (!serve.proc.hasExited() && Date.now() - termAt < 30_000) {
      const ready = await fetch(`http://127.0.0.1:${serve.healthPort}/readyz`).catch(() => null);
      if (ready?.status === 503) sawNotReady = true;
      await new Promise((r) => setTimeout(r, 50));
    }
    const code = await serve.exited;
    const exitMs = Date.now() - termAt;
    stop = true;
    await Promise.all(workers);
    agent.destroy();

    const accepted = new Set(
      serve
        .logs()
        .filter((l) => l['msg'] === 'admission')
        .map((l) => String(l['uid'])),
    );
    const byUid = new Map(outcomes.map((o) => [o.uid, o]));
    const dropped = [...accepted].filter((uid) => !wellFormed(byUid.get(uid) ?? { uid }));
    const refused = outcomes.filter((o) => !accepted.has(o.uid));
    console.log(
      `SIGTERM: ${outcomes.length} requests, ${accepted.size} accepted and logged, ${dropped.length} of those dropped; ${refused.length} never reached the server (${[...new Set(refused.map((o) => o.error ?? o.status))].join(', ')}); exit ${code} after ${exitMs} ms`,
    );
    assert.equal(code, 0);
    assert.ok(sawNotReady, 'readiness turned false before exit');
    assert.equal(dropped.length, 0, JSON.stringify(dropped.slice(0, 3)));
    assert.ok(accepted.size > 100, 'the server was really under load');
    assert.ok(
      exitMs < 15_000,
      `exited ${exitMs} ms after SIGTERM, well within a 30 s grace period`,
    );
    for (const o of refused)
      assert.ok(o.error !== undefined, `a request not accepted still got status ${o.status}`);
  });

  it('logs at info level carry no full objects and no environment values', async () => {
    const mount = mountedCerts();
    const serve = await startWith(mount);
    try {
      const annotated = structuredClone(ISTIO_POD);
      annotated.metadata!.annotations = { 'prestop-injector.io/delay-seconds': 'not-a-number' };
      assert.ok(wellFormed(await post(serve.webhookPort, mount.ca, false, 'log-1', annotated)));
      await post(serve.webhookPort, mount.ca, false, 'log-2', {
        spec: { containers: [{ name: 'x', env: [{ name: 'K', value: 'TOPSECRET-e2e-value' }] }] },
      });
      // Written within the log's flush interval (a second).
      for (let waited = 0; waited < 3000; waited += 100) {
        if (serve.logs().some((l) => l['uid'] === 'log-2')) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const text = JSON.stringify(serve.logs());
      assert.ok(
        serve.logs().some((l) => l['uid'] === 'log-1'),
        'the admission was logged',
      );
      assert.doesNotMatch(text, /TOPSECRET/);
      assert.doesNotMatch(text, /"containers"|"spec"|istio\/proxyv2/);
      assert.match(text, /prestop-injector\.io\/delay-seconds/, 'annotation keys may be logged');
    } finally {
      await serve.stop('SIGKILL');
    }
  });
});
