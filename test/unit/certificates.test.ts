// Run-time certificates, in process: the X.509 encoder (read back by Node
// and by OpenSSL, used in a real TLS handshake), what the writer stores next
// as time passes (renewal, new names, CA rotation with both CAs trusted),
// the Lease rules, the server options, and two replicas sharing one fake
// API with resourceVersion conflicts (the real API server is in
// test/apiserver/runtime-certificates.test.ts).

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { buildConfig, parseDuration, readRawOptions } from '../../src/cli/config.ts';
import {
  bundleTrusts,
  CLOCK_SKEW_MS,
  EMPTY_CERTIFICATES,
  leaseAction,
  leaseKey,
  microTime,
  nextCertificates,
  servablePair,
  type CertificatePolicy,
  type StoredCertificates,
} from '../../src/cluster/certificate-plan.ts';
import {
  RuntimeCertificates,
  type ApiAnswer,
  type ObjectApi,
} from '../../src/cluster/certificates.ts';
import {
  certificatesOf,
  issueCertificateAuthority,
  issueServingCertificate,
  keyMatches,
} from '../../src/cluster/x509.ts';
import { runCommand } from '../support/cluster/processes.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const NAMES = ['webhook', 'webhook.system.svc', '10.0.0.7'];
const POLICY: CertificatePolicy = {
  names: NAMES,
  certValidityMs: 365 * DAY,
  certRenewBeforeMs: 90 * DAY,
  caValidityMs: 3650 * DAY,
};
const T0 = Date.parse('2027-01-01T00:00:00Z');

const x509 = (pem: string) => new X509Certificate(pem);

describe('the X.509 encoder', () => {
  const now = Date.now();
  const ca = issueCertificateAuthority('test-ca', {
    notBeforeMs: now - 60_000,
    notAfterMs: now + DAY,
  });
  const leaf = issueServingCertificate(ca, ['svc.ns.svc', 'localhost', '127.0.0.1', '::1'], {
    notBeforeMs: now - 60_000,
    notAfterMs: now + HOUR,
  });

  it('makes a CA and a serving certificate Node reads back as made', () => {
    const caCert = x509(ca.certPem);
    const cert = x509(leaf.certPem);
    assert.equal(caCert.ca, true);
    assert.equal(cert.ca, false);
    assert.ok(caCert.verify(caCert.publicKey), 'the CA is self-signed');
    assert.ok(cert.verify(caCert.publicKey), 'the CA signed the serving certificate');
    assert.ok(cert.checkIssued(caCert));
    assert.equal(
      cert.subjectAltName,
      'DNS:svc.ns.svc, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
    );
    assert.equal(cert.checkHost('svc.ns.svc'), 'svc.ns.svc');
    assert.equal(cert.checkHost('other.ns.svc'), undefined);
    assert.equal(cert.checkIP('::1'), '::1');
    assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'extended key usage: server auth');
    assert.equal(cert.validToDate.getTime(), Math.floor((now + HOUR) / 1000) * 1000);
    assert.equal(cert.validFromDate.getTime(), Math.floor((now - 60_000) / 1000) * 1000);
    assert.ok(keyMatches(cert, leaf.keyPem));
    assert.ok(!keyMatches(cert, ca.keyPem));
    assert.equal(
      x509(issueServingCertificate(ca, ['a'], { notBeforeMs: now, notAfterMs: now + HOUR }).certPem)
        .serialNumber === cert.serialNumber,
      false,
      'serial numbers differ',
    );
  });

  it('writes dates after 2049 as GeneralizedTime and long structures with long lengths', () => {
    const far = Date.parse('2061-03-04T05:06:07Z');
    const longLived = issueCertificateAuthority('long', { notBeforeMs: now, notAfterMs: far });
    assert.equal(x509(longLived.certPem).validToDate.toISOString(), '2061-03-04T05:06:07.000Z');
    const many = Array.from({ length: 40 }, (_, i) => `name-${i}.example.svc.cluster.local`);
    const big = x509(
      issueServingCertificate(ca, many, { notBeforeMs: now, notAfterMs: now + HOUR }).certPem,
    );
    assert.ok(big.raw.length > 1024, 'lengths above 255 bytes');
    assert.equal(
      big.checkHost('name-39.example.svc.cluster.local'),
      'name-39.example.svc.cluster.local',
    );
  });

  it('passes OpenSSL verification for a TLS server, with the extensions a CA needs', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prestop-x509-'));
    try {
      fs.writeFileSync(path.join(dir, 'ca.pem'), ca.certPem);
      fs.writeFileSync(path.join(dir, 'leaf.pem'), leaf.certPem);
      const verify = await runCommand('openssl', [
        'verify',
        '-CAfile',
        path.join(dir, 'ca.pem'),
        '-purpose',
        'sslserver',
        '-x509_strict',
        path.join(dir, 'leaf.pem'),
      ]);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
      assert.match(verify.stdout, /leaf\.pem: OK/);
      const text = await runCommand('openssl', [
        'x509',
        '-noout',
        '-text',
        '-in',
        path.join(dir, 'ca.pem'),
      ]);
      assert.match(text.stdout, /X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
      assert.match(
        text.stdout,
        /X509v3 Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/,
      );
      assert.match(text.stdout, /Signature Algorithm: ecdsa-with-SHA256/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('serves TLS that a client trusting the CA accepts, for the names only', async () => {
    const server = https.createServer({ cert: leaf.certPem, key: leaf.keyPem }, (_req, res) =>
      res.end('ok'),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    const get = (servername: string, caPem: string) =>
      new Promise<string>((resolve, reject) => {
        https
          .get({ host: '127.0.0.1', port, servername, ca: caPem, path: '/' }, (res) => {
            res.setEncoding('utf8');
            let body = '';
            res.on('data', (c: string) => (body += c));
            res.on('end', () => resolve(body));
          })
          .on('error', reject);
      });
    try {
      assert.equal(await get('svc.ns.svc', ca.certPem), 'ok');
      await assert.rejects(get('elsewhere.ns.svc', ca.certPem), /does not match|altnames/i);
      const other = issueCertificateAuthority('other', { notBeforeMs: now, notAfterMs: now + DAY });
      await assert.rejects(
        get('svc.ns.svc', other.certPem),
        /self-signed|unable to verify|issuer/i,
      );
    } finally {
      server.close();
    }
  });
});

/** Runs the writer's decision and applies it, as the Secret would hold it. */
function pass(stored: StoredCertificates, nowMs: number, policy = POLICY) {
  const next = nextCertificates(stored, policy, nowMs);
  return { stored: next?.data ?? stored, reasons: next?.reasons ?? [], changed: next !== null };
}

const caCount = (stored: StoredCertificates) => certificatesOf(stored.caCert).length;
const leafOf = (stored: StoredCertificates) => x509(stored.tlsCert);
const signingCa = (stored: StoredCertificates) => certificatesOf(stored.caCert)[0]!;

describe('what the certificate writer stores next', () => {
  it('makes a CA and a serving certificate when the Secret is empty, then keeps them', () => {
    const first = pass(EMPTY_CERTIFICATES, T0);
    assert.ok(first.changed);
    assert.deepEqual(
      first.reasons.map((r) => r.split(':')[0]),
      ['no CA yet', 'the serving certificate is missing'],
    );
    const leaf = leafOf(first.stored);
    assert.ok(leaf.verify(signingCa(first.stored).publicKey));
    for (const name of NAMES.slice(0, 2)) assert.equal(leaf.checkHost(name), name);
    assert.equal(leaf.checkIP('10.0.0.7'), '10.0.0.7');
    assert.equal(leaf.validToDate.getTime(), T0 + POLICY.certValidityMs);
    assert.equal(leaf.validFromDate.getTime(), T0 - CLOCK_SKEW_MS);
    assert.ok(bundleTrusts(first.stored.caCert, first.stored.tlsCert));
    const pair = servablePair(first.stored, T0);
    assert.equal(pair?.notAfterMs, T0 + POLICY.certValidityMs);
    // Unchanged as long as nothing is due: no write at all.
    assert.equal(nextCertificates(first.stored, POLICY, T0 + 200 * DAY), null);
  });

  it('renews the serving certificate when its renewal time comes, with the same CA', () => {
    const start = pass(EMPTY_CERTIFICATES, T0).stored;
    const due = T0 + POLICY.certValidityMs - POLICY.certRenewBeforeMs;
    assert.equal(nextCertificates(start, POLICY, due - 1_000), null, 'not a second early');
    const renewed = pass(start, due);
    assert.ok(renewed.changed);
    assert.match(renewed.reasons.join(), /the serving certificate expires at .*: issued one/);
    assert.equal(renewed.stored.caCert, start.caCert, 'same CA');
    assert.equal(renewed.stored.caKey, start.caKey);
    assert.notEqual(renewed.stored.tlsCert, start.tlsCert);
    assert.equal(leafOf(renewed.stored).validToDate.getTime(), due + POLICY.certValidityMs);
    // The old one is still served until the new one is read: both are valid.
    assert.ok(servablePair(start, due) !== null);
  });

  it('re-issues for new names, and for a serving key that does not match', () => {
    const start = pass(EMPTY_CERTIFICATES, T0).stored;
    const renamed = pass(start, T0 + DAY, { ...POLICY, names: [...NAMES, 'extra.example'] });
    assert.match(renamed.reasons.join(), /does not cover/);
    assert.equal(leafOf(renamed.stored).checkHost('extra.example'), 'extra.example');
    const broken = pass({ ...start, tlsKey: renamed.stored.tlsKey }, T0 + DAY);
    assert.match(broken.reasons.join(), /does not match its key/);
    assert.ok(servablePair({ ...start, tlsKey: renamed.stored.tlsKey }, T0) === null);
    assert.ok(servablePair(broken.stored, T0 + DAY) !== null);
  });

  it('rotates the CA with both trusted, and signs with the new one only at a later pass', () => {
    // Short lifetimes so the CA comes due before the serving certificate.
    const policy: CertificatePolicy = {
      names: NAMES,
      certValidityMs: 30 * DAY,
      certRenewBeforeMs: 10 * DAY,
      caValidityMs: 90 * DAY,
    };
    let state = pass(EMPTY_CERTIFICATES, T0, policy).stored;
    const firstCa = signingCa(state);
    // Renewals every 20 days; the CA comes due at 60 days (a third left).
    for (const day of [20, 40]) state = pass(state, T0 + day * DAY, policy).stored;
    assert.equal(caCount(state), 1);
    const rotation = pass(state, T0 + 60 * DAY, policy);
    assert.match(
      rotation.reasons[0]!,
      /the CA expires at .*: made a new one; the old one stays trusted/,
    );
    assert.match(rotation.reasons.join(), /renewed at the next pass, by the new CA/);
    assert.equal(caCount(rotation.stored), 2, 'both CAs in ca.crt');
    assert.notEqual(
      signingCa(rotation.stored).fingerprint256,
      firstCa.fingerprint256,
      'new CA first',
    );
    assert.equal(rotation.stored.tlsCert, state.tlsCert, 'the serving certificate stays this pass');
    assert.ok(bundleTrusts(rotation.stored.caCert, rotation.stored.tlsCert));
    const next = pass(rotation.stored, T0 + 60 * DAY + 10_000, policy);
    assert.ok(
      leafOf(next.stored).verify(signingCa(rotation.stored).publicKey),
      'signed by the new CA',
    );
    assert.equal(caCount(next.stored), 2, 'the old CA is still trusted');
    // Once the first CA expires, it leaves ca.crt.
    const later = pass(next.stored, T0 + 90 * DAY + 1_000, policy);
    assert.equal(caCount(later.stored), 1);
    assert.match(later.reasons.join(), /dropped 1 expired/);
    assert.ok(bundleTrusts(later.stored.caCert, later.stored.tlsCert));
  });

  it('replaces a CA whose key is lost, and keeps trusting the old one meanwhile', () => {
    const start = pass(EMPTY_CERTIFICATES, T0).stored;
    const other = issueCertificateAuthority('x', { notBeforeMs: T0, notAfterMs: T0 + DAY });
    const lost = pass({ ...start, caKey: other.keyPem }, T0 + DAY);
    assert.match(lost.reasons[0]!, /does not match its key: made a new one/);
    assert.equal(caCount(lost.stored), 2);
    assert.equal(lost.stored.tlsCert, start.tlsCert);
    assert.ok(keyMatches(signingCa(lost.stored), lost.stored.caKey));
  });

  it('serves nothing expired and trusts nothing but a CA', () => {
    const start = pass(EMPTY_CERTIFICATES, T0).stored;
    assert.equal(servablePair(start, T0 + POLICY.certValidityMs), null);
    assert.equal(
      bundleTrusts(start.tlsCert, start.tlsCert),
      false,
      'a serving certificate is no CA',
    );
    assert.equal(bundleTrusts('', start.tlsCert), false);
  });
});

describe('the certificate writer lease', () => {
  const record = { holder: 'a', renewTime: '2027-01-01T00:00:00.000000Z', durationMs: 30_000 };

  it('renews its own, takes a free one, and a stale one only after a whole duration unchanged', () => {
    assert.equal(leaseAction(record, 'a', undefined, T0), 'renew');
    assert.equal(leaseAction({ ...record, holder: '' }, 'b', undefined, T0), 'acquire');
    assert.equal(leaseAction(record, 'b', undefined, T0), 'follow', 'first sight starts the clock');
    const seen = { key: leaseKey(record), sinceMs: T0 };
    assert.equal(leaseAction(record, 'b', seen, T0 + 29_999), 'follow');
    assert.equal(leaseAction(record, 'b', seen, T0 + 30_000), 'acquire');
    const renewed = { ...record, renewTime: '2027-01-01T00:00:10.000000Z' };
    assert.equal(leaseAction(renewed, 'b', seen, T0 + 60_000), 'follow', 'a renewal restarts it');
  });

  it('writes times as MicroTime', () => {
    assert.equal(microTime(Date.parse('2027-01-02T03:04:05.678Z')), '2027-01-02T03:04:05.678000Z');
  });
});

describe('the run-time certificate options', () => {
  const base = {
    PRESTOP_TLS_SECRET: 'webhook-tls',
    PRESTOP_TLS_NAMES: 'webhook.system.svc, 10.0.0.7',
    PRESTOP_WEBHOOK_CONFIGURATION: 'webhook',
    POD_NAMESPACE: 'system',
  };
  const config = (env: Record<string, string>) => buildConfig(readRawOptions([], env));

  it('parse durations as Go writes them', () => {
    assert.equal(parseDuration('8760h'), 8760 * HOUR);
    assert.equal(parseDuration('1h30m'), 90 * 60_000);
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('1.5h'), 90 * 60_000);
    for (const bad of ['', '10', '10d', 'h', '-5m']) assert.equal(parseDuration(bad), null, bad);
  });

  it('are off without --tls-secret, and complete with it', () => {
    assert.equal(config({}).runtimeCertificates, null);
    assert.deepEqual(config(base).runtimeCertificates, {
      secretName: 'webhook-tls',
      webhookConfiguration: 'webhook',
      names: ['webhook.system.svc', '10.0.0.7'],
      certValidityMs: 8760 * HOUR,
      certRenewBeforeMs: 2160 * HOUR,
      caValidityMs: 87600 * HOUR,
    });
  });

  it('name what is missing or inconsistent', () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ POD_NAMESPACE: '' }, /--tls-secret needs --own-namespace/],
      [{ PRESTOP_WEBHOOK_CONFIGURATION: '' }, /needs --webhook-configuration/],
      [{ PRESTOP_TLS_NAMES: ' ' }, /needs --tls-names/],
      [{ PRESTOP_CLUSTER: 'off' }, /--cluster off/],
      [{ PRESTOP_CERT_VALIDITY: '1y' }, /--cert-validity: "1y" is not a duration/],
      [{ PRESTOP_CERT_VALIDITY: '10s' }, /--cert-validity: at least 30s/],
      [
        { PRESTOP_CERT_RENEW_BEFORE: '9000h' },
        /--cert-renew-before \(9000h\) must be less than --cert-validity/,
      ],
      [
        { PRESTOP_CA_VALIDITY: '10000h' },
        /--ca-validity \(10000h\) must be at least 3 x --cert-validity/,
      ],
    ];
    for (const [change, message] of cases)
      assert.throws(() => config({ ...base, ...change }), message);
  });
});

/**
 * The API server as far as the certificates use it: get, and merge or
 * strategic-merge patches that fail with 409 when the resourceVersion they
 * name is not the object's.
 */
class FakeApi implements ObjectApi {
  objects = new Map<string, Record<string, unknown>>();
  version = 1;
  patches: string[] = [];

  put(path: string, obj: Record<string, unknown>): void {
    this.objects.set(path, { ...obj, metadata: { resourceVersion: String(this.version++) } });
  }

  async get(path: string): Promise<ApiAnswer> {
    const obj = this.objects.get(path);
    return obj ? { status: 200, body: structuredClone(obj) } : { status: 404, body: {} };
  }

  async patch(path: string, body: unknown, contentType: string): Promise<ApiAnswer> {
    const obj = this.objects.get(path);
    if (!obj) return { status: 404, body: {} };
    const patch = structuredClone(body) as Record<string, unknown> & {
      metadata: { resourceVersion: string };
    };
    if (
      patch.metadata.resourceVersion !==
      (obj['metadata'] as { resourceVersion: string }).resourceVersion
    )
      return { status: 409, body: { message: 'conflict' } };
    delete (patch as { metadata?: unknown }).metadata;
    const merged = structuredClone(obj);
    for (const [key, value] of Object.entries(patch)) {
      if (key === 'webhooks' && contentType === 'application/strategic-merge-patch+json') {
        for (const change of value as { name: string; clientConfig: object }[]) {
          const webhook = (merged['webhooks'] as { name: string; clientConfig: object }[]).find(
            (w) => w.name === change.name,
          )!;
          webhook.clientConfig = { ...webhook.clientConfig, ...change.clientConfig };
        }
      } else {
        const target = { ...(merged[key] as Record<string, unknown>) };
        for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
          if (v === null) delete target[k];
          else target[k] = v;
        }
        merged[key] = target;
      }
    }
    this.patches.push(path);
    this.put(path, merged);
    return { status: 200, body: structuredClone(this.objects.get(path)!) };
  }
}

describe('two replicas sharing one Secret', () => {
  const settings = {
    ...POLICY,
    names: ['webhook.system.svc'],
    namespace: 'system',
    secretName: 'webhook-tls',
    webhookConfiguration: 'webhook',
    pollMs: 1_000,
  };
  const secretPath = '/api/v1/namespaces/system/secrets/webhook-tls';
  const leasePath = '/apis/coordination.k8s.io/v1/namespaces/system/leases/webhook-tls';
  const configPath = '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/webhook';
  const logger = pino({ level: 'silent' });

  it('have one writer; both serve what it wrote; the other takes over when it lets go', async () => {
    const api = new FakeApi();
    api.put(secretPath, { data: {} });
    api.put(leasePath, { spec: {} });
    api.put(configPath, { webhooks: [{ name: 'pods.example', clientConfig: { service: {} } }] });
    const a = new RuntimeCertificates(api, settings, logger, 'a');
    const b = new RuntimeCertificates(api, settings, logger, 'b');
    await Promise.all([a.waitForPair(5_000), b.waitForPair(5_000)]);
    assert.equal([a, b].filter((r) => r.isWriter).length, 1, 'exactly one writer');
    const writer = a.isWriter ? a : b;
    const other = a.isWriter ? b : a;
    assert.equal(
      api.patches.filter((p) => p === secretPath).length,
      1,
      'the Secret was written once',
    );
    assert.equal(a.current.cert.toString(), b.current.cert.toString(), 'both serve the same pair');
    const secret = (await api.get(secretPath)).body['data'] as Record<string, string>;
    const caBundle = (
      (await api.get(configPath)).body['webhooks'] as { clientConfig: { caBundle: string } }[]
    )[0]!.clientConfig.caBundle;
    assert.equal(caBundle, secret['ca.crt'], 'the webhook configuration trusts ca.crt');
    await other.tick();
    assert.deepEqual([writer.readiness().ready, other.readiness().ready], [true, true]);

    const changes: string[] = [];
    other.onChange((pair) => changes.push(pair.cert.toString()));
    await writer.release();
    await other.tick();
    assert.equal(other.isWriter, true, 'the other replica writes now');
    assert.deepEqual(changes, [], 'a new writer keeps the certificates as they are');
    const spec = (await api.get(leasePath)).body['spec'] as {
      holderIdentity: string;
      leaseTransitions: number;
    };
    assert.equal(spec.holderIdentity, other.identity);
    assert.equal(spec.leaseTransitions, 2);
    other.stop();
  });

  it('are not ready, and write nothing, while the Secret or Lease is missing', async () => {
    const api = new FakeApi();
    api.put(configPath, { webhooks: [{ name: 'pods.example', clientConfig: {} }] });
    const a = new RuntimeCertificates(api, settings, logger, 'a');
    await assert.rejects(
      a.waitForPair(1_500),
      /no serving certificate in Secret system\/webhook-tls after 2 s: .*GET Lease system\/webhook-tls: HTTP 404.*GET Secret system\/webhook-tls: HTTP 404/,
    );
    assert.equal(a.readiness().ready, false);
    assert.deepEqual(api.patches, []);
  });
});

// The tests above rely on the fake's conflicts.
it('the fake API refuses a stale resourceVersion', async () => {
  const api = new FakeApi();
  api.put('/x', { data: {} });
  const stale = await api.patch(
    '/x',
    { metadata: { resourceVersion: '0' }, data: { a: 'b' } },
    'application/merge-patch+json',
  );
  assert.equal(stale.status, 409);
});
