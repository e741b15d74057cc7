// Run-time certificates against a real kube-apiserver (no node): the
// chart's objects and RBAC installed by helm; two webhook processes as the
// chart's ServiceAccount, behind a round-robin TCP balancer standing for
// their Service (the API server calls it by webhook.url, with
// failurePolicy Fail). One writes, both serve the same pair, the API server
// trusts it (Go's TLS verifies our certificates). With lifetimes shortened
// to seconds, the serving certificate is renewed and the CA rotated while
// pods are created every 100 ms, none failing; when the writer stops,
// the other process takes over and goes on renewing.

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { createNamespace } from '../support/cluster/api.ts';
import { startControlPlane, type ControlPlane } from '../support/cluster/apiserver.ts';
import { ensureTools, type Tools } from '../support/cluster/binaries.ts';
import {
  ExitedError,
  httpGet,
  repoRoot,
  spawnManaged,
  waitFor,
  type ManagedProcess,
} from '../support/cluster/processes.ts';
import {
  api,
  chartDir,
  createObject,
  readObject,
  runCommand,
  scratchDir,
  serviceAccountToken,
  setJsonArgs,
  toolEnvironment,
  writeTokenKubeconfig,
  type KubeObject,
} from '../support/chart.ts';
import { getFreePort } from '../support/free-port.ts';

const NS = 'webhook-system';
const RELEASE = 'prestop-injector';
const APPS = 'shop';
const SECRET = `${RELEASE}-tls`;

interface Replica {
  name: string;
  proc: ManagedProcess;
  port: number;
  healthPort: number;
  logs(): Record<string, unknown>[];
}

/** A round-robin TCP balancer over the replicas it is given: the Service, as kube-proxy makes it. */
async function startBalancer(): Promise<{ port: number; backends: Set<number>; close(): void }> {
  const backends = new Set<number>();
  let next = 0;
  const server = net.createServer((client) => {
    const ports = [...backends];
    if (ports.length === 0) {
      client.destroy();
      return;
    }
    const upstream = net.connect(ports[next++ % ports.length]!, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
  });
  const port = await getFreePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { port, backends, close: () => server.close() };
}

/** The certificate a replica serves now, as PEM. */
function servedCertificate(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const raw = socket.getPeerX509Certificate();
      socket.end();
      if (raw === undefined) reject(new Error('no peer certificate'));
      else resolve(raw.toString());
    });
    socket.on('error', reject);
  });
}

const secretText = (secret: KubeObject | null, key: string) =>
  Buffer.from(((secret?.['data'] ?? {}) as Record<string, string>)[key] ?? '', 'base64').toString();

describe('run-time certificates against a real API server', () => {
  let tools: Tools;
  let cp: ControlPlane | undefined;
  let scratch: Awaited<ReturnType<typeof scratchDir>> | undefined;
  let balancer: Awaited<ReturnType<typeof startBalancer>> | undefined;
  let kubeconfig: string;
  let deploymentEnv: Record<string, string>;
  const replicas: Replica[] = [];

  const readSecret = () =>
    readObject(cp!, { apiVersion: 'v1', kind: 'Secret', name: SECRET, namespace: NS });
  const holder = async () => {
    const lease = await readObject(cp!, {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      name: SECRET,
      namespace: NS,
    });
    return (lease?.['spec'] as { holderIdentity?: string } | undefined)?.holderIdentity ?? '';
  };
  const identityOf = (replica: Replica) =>
    String(
      replica.logs().find((l) => l['msg'] === 'certificates: managed at run time')?.['identity'] ??
        '',
    );
  const writerLogs = (replica: Replica) =>
    replica.logs().filter((l) => l['msg'] === 'certificates written');

  const startReplica = async (name: string): Promise<Replica> => {
    const port = await getFreePort();
    const healthPort = await getFreePort();
    const logPath = path.join(scratch!.dir, `${name}.log`);
    const env: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'],
      ...deploymentEnv,
      // A pod has its own IP; here, loopback and free ports.
      PRESTOP_HOST: '127.0.0.1',
      PRESTOP_PORT: String(port),
      PRESTOP_HEALTH_PORT: String(healthPort),
      PRESTOP_SHUTDOWN_DELAY_SECONDS: '1',
      POD_NAMESPACE: NS,
      KUBECONFIG: kubeconfig,
    };
    const proc = spawnManaged(
      name,
      process.execPath,
      [path.join(repoRoot, 'src', 'cli', 'main.ts'), 'serve'],
      logPath,
      { env, cwd: repoRoot },
    );
    const logs = () =>
      fs
        .readFileSync(logPath, 'utf8')
        .split('\n')
        .filter((line) => line.startsWith('{'))
        .map((line) => JSON.parse(line) as Record<string, unknown>);
    return { name, proc, port, healthPort, logs };
  };

  const ready = (replica: Replica) =>
    waitFor(`${replica.name} /readyz`, 60_000, async () => {
      if (replica.proc.hasExited())
        throw new ExitedError(`${replica.name} exited:\n${replica.proc.logTail(30)}`);
      return (
        (
          await httpGet(`http://127.0.0.1:${replica.healthPort}/readyz`, {}).catch(() => ({
            status: 0,
          }))
        ).status === 200
      );
    });

  /** Creates an opted-in pod every 100 ms until stopped; every one must be admitted and mutated. */
  let loops = 0;
  const podLoop = () => {
    const prefix = `load-${++loops}`;
    let stopped = false;
    let n = 0;
    const problems: string[] = [];
    const done = (async () => {
      while (!stopped) {
        const started = Date.now();
        const name = `${prefix}-${n++}`;
        const res = await createObject(cp!, {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name, namespace: APPS },
          spec: { containers: [{ name: 'app', image: 'nginx:1.27' }] },
        } as KubeObject);
        if (res.status !== 201)
          problems.push(`${name}: HTTP ${res.status} ${String(res.body.message ?? '')}`);
        else if (!res.body.metadata.annotations?.['prestop-injector.io/status'])
          problems.push(`${name}: not mutated`);
        await new Promise((resolve) =>
          setTimeout(resolve, Math.max(0, 100 - (Date.now() - started))),
        );
      }
    })();
    return {
      problems,
      count: () => n,
      async stop() {
        stopped = true;
        await done;
      },
    };
  };

  before(async () => {
    tools = await ensureTools();
    cp = await startControlPlane();
    scratch = await scratchDir('runtime-certificates');
    const env = await toolEnvironment(tools, cp.kubeconfigPath, scratch.dir);
    balancer = await startBalancer();
    const values = setJsonArgs({
      'image.repository': 'registry.example.com/prestop-injector',
      'webhook.url': `https://127.0.0.1:${balancer.port}/mutate`,
      'webhook.failurePolicy': 'Fail',
      // Seconds instead of a year: renewals every 10 s, a new CA after 60 s.
      'certificates.runtime.certValidity': '30s',
      'certificates.runtime.renewBefore': '20s',
      'certificates.runtime.caValidity': '90s',
      'config.certPollSeconds': 1,
    });
    const install = await runCommand(
      tools.helm,
      ['install', RELEASE, chartDir, '--namespace', NS, '--create-namespace', ...values],
      { env },
    );
    assert.equal(install.code, 0, install.stderr);
    await createNamespace(cp, APPS, { 'prestop-injector.io/inject': 'enabled' });
    const deploy = await readObject(cp, {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      name: RELEASE,
      namespace: NS,
    });
    const container = (
      deploy!['spec'] as {
        template: { spec: { containers: { env: { name: string; value?: string }[] }[] } };
      }
    ).template.spec.containers[0]!;
    deploymentEnv = Object.fromEntries(
      container.env.filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]),
    );
    // The chart's ServiceAccount, exactly: its token, its RBAC.
    kubeconfig = path.join(scratch.dir, 'webhook-kubeconfig');
    await writeTokenKubeconfig(kubeconfig, cp, await serviceAccountToken(cp, NS, RELEASE));
  });

  after(async () => {
    for (const replica of replicas) await replica.proc.stop(5_000);
    balancer?.close();
    await cp?.stop();
    await scratch?.remove();
  });

  const failWithLogs = async (fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (err) {
      for (const replica of replicas)
        console.error(`----- ${replica.name} -----\n${replica.proc.logTail(25)}`);
      throw err;
    }
  };

  it('grants the webhook get and patch on its Secret, Lease and webhook configuration, and no more', async () => {
    const can = async (
      verb: string,
      resource: string,
      group: string,
      name?: string,
      namespace?: string,
    ) => {
      const res = await api<{ status?: { allowed?: boolean } }>(
        cp!,
        'POST',
        '/apis/authorization.k8s.io/v1/subjectaccessreviews',
        {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: {
            user: `system:serviceaccount:${NS}:${RELEASE}`,
            groups: ['system:serviceaccounts', `system:serviceaccounts:${NS}`],
            resourceAttributes: {
              verb,
              resource,
              group,
              ...(name ? { name } : {}),
              ...(namespace ? { namespace } : {}),
            },
          },
        },
      );
      assert.equal(res.status, 201);
      return res.body.status?.allowed === true;
    };
    const mwc = ['mutatingwebhookconfigurations', 'admissionregistration.k8s.io'] as const;
    for (const verb of ['get', 'patch']) {
      assert.ok(await can(verb, 'secrets', '', SECRET, NS), `${verb} its Secret`);
      assert.ok(await can(verb, 'leases', 'coordination.k8s.io', SECRET, NS), `${verb} its Lease`);
      assert.ok(await can(verb, mwc[0], mwc[1], RELEASE), `${verb} its webhook configuration`);
    }
    const denied: [string, string, string, string | undefined, string | undefined][] = [
      ['get', 'secrets', '', 'other', NS],
      ['list', 'secrets', '', undefined, NS],
      ['create', 'secrets', '', undefined, NS],
      ['update', 'secrets', '', SECRET, NS],
      ['delete', 'secrets', '', SECRET, NS],
      ['get', 'secrets', '', SECRET, 'default'],
      ['create', 'leases', 'coordination.k8s.io', undefined, NS],
      ['patch', 'leases', 'coordination.k8s.io', 'other', NS],
      ['patch', mwc[0], mwc[1], 'istio-sidecar-injector', undefined],
      ['delete', mwc[0], mwc[1], RELEASE, undefined],
      ['list', mwc[0], mwc[1], undefined, undefined],
      ['patch', 'validatingwebhookconfigurations', mwc[1], RELEASE, undefined],
    ];
    for (const [verb, resource, group, name, namespace] of denied)
      assert.equal(
        await can(verb, resource, group, name, namespace),
        false,
        `may not ${verb} ${resource} ${name ?? '*'} in ${namespace ?? 'the cluster'}`,
      );
  });

  it('two replicas start together: one writes, both serve the same pair, the API server trusts it', () =>
    failWithLogs(async () => {
      replicas.push(await startReplica('replica-a'), await startReplica('replica-b'));
      await Promise.all(replicas.map(ready));
      for (const replica of replicas) balancer!.backends.add(replica.port);
      // Log lines are flushed once a second.
      await waitFor(
        'the replicas to log their identity and the write',
        5_000,
        async () =>
          replicas.every((r) => identityOf(r) !== '') &&
          replicas.some((r) => writerLogs(r).length > 0),
      );
      const writers = replicas.filter((r) => writerLogs(r).length > 0);
      assert.equal(writers.length, 1, 'exactly one replica wrote the Secret');
      assert.match(String((writerLogs(writers[0]!)[0]!['reasons'] as string[])[0]), /^no CA yet/);
      assert.equal(await holder(), identityOf(writers[0]!), 'the writer holds the Lease');
      const secret = await readSecret();
      for (const replica of replicas)
        assert.equal(
          await servedCertificate(replica.port),
          new X509Certificate(secretText(secret, 'tls.crt')).toString(),
          `${replica.name} serves the Secret's pair`,
        );
      const mwc = await readObject(cp!, {
        apiVersion: 'admissionregistration.k8s.io/v1',
        kind: 'MutatingWebhookConfiguration',
        name: RELEASE,
      });
      const caBundle = (mwc!['webhooks'] as { clientConfig: { caBundle?: string } }[])[0]!
        .clientConfig.caBundle;
      assert.equal(
        Buffer.from(caBundle ?? '', 'base64').toString(),
        secretText(secret, 'ca.crt'),
        'caBundle is ca.crt',
      );
      // The API server (Go's TLS) calls the webhook with it.
      const res = await createObject(cp!, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'first', namespace: APPS },
        spec: { containers: [{ name: 'app', image: 'nginx:1.27' }] },
      } as KubeObject);
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.ok(res.body.metadata.annotations?.['prestop-injector.io/status'], 'mutated');
    }));

  it('renews the serving certificate and rotates the CA while pods are created, none failing', () =>
    failWithLogs(async () => {
      const loop = podLoop();
      const leaves = new Set<string>();
      const cas = new Set<string>();
      let servedByNewCa = false;
      const firstCa = new X509Certificate(secretText(await readSecret(), 'ca.crt'));
      try {
        await waitFor(
          'two renewals, a new CA, and a certificate of the new CA served by both replicas',
          100_000,
          async () => {
            const secret = await readSecret();
            leaves.add(secretText(secret, 'tls.crt'));
            const bundle =
              secretText(secret, 'ca.crt').match(
                /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g,
              ) ?? [];
            for (const ca of bundle) cas.add(new X509Certificate(ca).fingerprint256);
            const newCa = bundle
              .map((pem) => new X509Certificate(pem))
              .find((ca) => ca.fingerprint256 !== firstCa.fingerprint256);
            if (newCa !== undefined && !servedByNewCa) {
              const served = await Promise.all(replicas.map((r) => servedCertificate(r.port)));
              servedByNewCa = served.every((pem) =>
                new X509Certificate(pem).verify(newCa.publicKey),
              );
            }
            return leaves.size >= 3 && cas.size >= 2 && servedByNewCa;
          },
          1_000,
        );
      } finally {
        await loop.stop();
      }
      console.log(
        `${loop.count()} pods created while ${leaves.size} serving certificates and ${cas.size} CAs were in use`,
      );
      assert.deepEqual(loop.problems, [], 'every pod admitted and mutated');
      assert.ok(loop.count() > 100);
    }));

  it('another replica takes over when the writer stops, and goes on renewing', () =>
    failWithLogs(async () => {
      const id = await holder();
      const writer = replicas.find((r) => identityOf(r) === id);
      assert.ok(writer, `a replica holds the Lease (${id})`);
      const other = replicas.find((r) => r !== writer)!;
      const loop = podLoop();
      try {
        // Out of the Service first, as endpoints are, then SIGTERM.
        balancer!.backends.delete(writer.port);
        await writer.proc.stop(10_000);
        await waitFor(
          'the other replica to hold the Lease',
          10_000,
          async () => (await holder()) === identityOf(other),
          200,
        );
        // It only followed until now: any write of its own comes after the takeover.
        await waitFor(
          'the new writer to renew the serving certificate',
          30_000,
          async () => writerLogs(other).length > 0,
        );
        await waitFor(
          'the renewed certificate to be served',
          5_000,
          async () =>
            (await servedCertificate(other.port)) ===
            new X509Certificate(secretText(await readSecret(), 'tls.crt')).toString(),
        );
      } finally {
        await loop.stop();
      }
      assert.ok(
        writer.logs().some((l) => l['msg'] === 'certificate writer lease released'),
        'the stopping writer let go',
      );
      assert.deepEqual(loop.problems, [], 'every pod admitted and mutated');
    }));
});
