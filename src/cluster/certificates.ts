// Run-time certificates: the webhook keeps its own CA and serving
// certificate in one Secret, renews them well before they expire, and
// writes the CA bundle into its own MutatingWebhookConfiguration.
//
// Every replica reads the Secret (every poll) and serves the pair in it. One
// replica, the holder of a Lease of the Secret's name, writes: the Secret
// (certificate-plan.ts decides what), then the webhook configuration's
// caBundle from it. Every write names the resourceVersion it read, so even
// two writers could not overwrite each other unseen. RBAC: get and patch on
// that Secret, that Lease and that webhook configuration, by name; nothing
// is created (the chart creates the empty Secret and the Lease).

import { randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { hostname } from 'node:os';
import { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { KeyPair } from '../webhook/tls.ts';
import {
  bundleTrusts,
  EMPTY_CERTIFICATES,
  leaseAction,
  leaseKey,
  microTime,
  nextCertificates,
  SECRET_KEYS,
  servablePair,
  type CertificatePolicy,
  type LeaseObservation,
  type LeaseRecord,
  type StoredCertificates,
} from './certificate-plan.ts';
import type { ClusterConnection } from './view.ts';
import { loadKubeConfig } from './kubeconfig.ts';

export interface RuntimeCertificateSettings extends CertificatePolicy {
  namespace: string;
  /** The Secret, and the Lease of the same name. */
  secretName: string;
  webhookConfiguration: string;
  pollMs: number;
}

/** The part of the API the certificates need: one object at a time, by path. */
export interface ObjectApi {
  get(path: string): Promise<ApiAnswer>;
  patch(path: string, body: unknown, contentType: PatchType): Promise<ApiAnswer>;
}

export interface ApiAnswer {
  status: number;
  body: Record<string, unknown>;
}

type PatchType = 'application/merge-patch+json' | 'application/strategic-merge-patch+json';

/** The serving pair as a certificate source of `serve`. */
export interface ManagedCertificates {
  readonly current: KeyPair;
  onChange(listener: (pair: KeyPair) => void): void;
  readiness(): { ready: boolean; reason?: string };
  start(): void;
  stop(): void;
  /** Gives up the Lease at once (on SIGTERM), so another replica can take over. */
  release(): Promise<void>;
}

const REQUEST_TIMEOUT_MS = 10_000;

/** An ObjectApi over a kubeconfig, with raw JSON: no typed model drops a field. */
function objectApi(kc: KubeConfig): ObjectApi {
  const server = kc.getCurrentCluster()?.server;
  if (server === undefined) throw new Error('the kubeconfig names no cluster');
  const send = async (method: string, path: string, body?: unknown, contentType?: string) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const options: Parameters<typeof request>[1] = {
      method,
      timeout: REQUEST_TIMEOUT_MS,
      headers: {
        accept: 'application/json',
        ...(payload === undefined
          ? {}
          : { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) }),
      },
    };
    await kc.applyToHTTPSOptions(options);
    return new Promise<ApiAnswer>((resolve, reject) => {
      const req = request(new URL(server.replace(/\/+$/, '') + path), options, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          let parsed: unknown = {};
          try {
            parsed = text === '' ? {} : JSON.parse(text);
          } catch {
            parsed = { message: text.slice(0, 500) };
          }
          resolve({ status: res.statusCode ?? 0, body: parsed as Record<string, unknown> });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  };
  return {
    get: (path) => send('GET', path),
    patch: (path, body, contentType) => send('PATCH', path, body, contentType),
  };
}

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');
const unb64 = (value: unknown) =>
  typeof value === 'string' ? Buffer.from(value, 'base64').toString('utf8') : '';

function storedFrom(secret: Record<string, unknown>): StoredCertificates {
  const data = (secret['data'] ?? {}) as Record<string, unknown>;
  const stored = { ...EMPTY_CERTIFICATES };
  for (const key of Object.keys(SECRET_KEYS) as (keyof StoredCertificates)[]) {
    stored[key] = unb64(data[SECRET_KEYS[key]]);
  }
  return stored;
}

const resourceVersion = (obj: Record<string, unknown>) =>
  String((obj['metadata'] as { resourceVersion?: string } | undefined)?.resourceVersion ?? '');

function toKeyPair(pair: { certPem: string; keyPem: string; notAfterMs: number }): KeyPair {
  return {
    cert: Buffer.from(pair.certPem),
    key: Buffer.from(pair.keyPem),
    notAfterMs: pair.notAfterMs,
  };
}

class ApiError extends Error {}

function describeAnswer(what: string, answer: ApiAnswer): ApiError {
  const message = typeof answer.body['message'] === 'string' ? answer.body['message'] : '';
  return new ApiError(`${what}: HTTP ${answer.status}${message ? `: ${message}` : ''}`);
}

/**
 * The run-time certificates of one replica. `start()` begins polling;
 * `waitForPair()` (before serving) polls faster until there is a pair.
 */
export class RuntimeCertificates implements ManagedCertificates {
  readonly #api: ObjectApi;
  readonly #settings: RuntimeCertificateSettings;
  readonly #logger: Logger;
  readonly #identity: string;
  readonly #leaseDurationMs: number;
  #current: KeyPair | undefined;
  #listeners: ((pair: KeyPair) => void)[] = [];
  #published = false;
  #leader = false;
  #observation: LeaseObservation | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ticking: Promise<void> | undefined;
  #stopped = false;
  #lastProblem = new Map<string, string>();

  constructor(
    api: ObjectApi,
    settings: RuntimeCertificateSettings,
    logger: Logger,
    identity = `${hostname()}_${randomBytes(4).toString('hex')}`,
  ) {
    this.#api = api;
    this.#settings = settings;
    this.#logger = logger;
    this.#identity = identity;
    // Three missed renewals before another replica may take over.
    this.#leaseDurationMs = Math.max(15_000, 3 * settings.pollMs);
  }

  get identity(): string {
    return this.#identity;
  }

  get isWriter(): boolean {
    return this.#leader;
  }

  get current(): KeyPair {
    if (this.#current === undefined) throw new Error('no serving certificate yet');
    return this.#current;
  }

  onChange(listener: (pair: KeyPair) => void): void {
    this.#listeners.push(listener);
  }

  readiness(): { ready: boolean; reason?: string } {
    return this.#published
      ? { ready: true }
      : {
          ready: false,
          reason: `the caBundle of ${this.#settings.webhookConfiguration} does not trust the serving certificate yet`,
        };
  }

  /** Polls (every second) until the Secret holds a pair to serve; rejects after `timeoutMs`. */
  async waitForPair(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await this.tick();
      if (this.#current !== undefined) return;
      if (Date.now() >= deadline) {
        const problems = [...this.#lastProblem.values()].join('; ');
        throw new Error(
          `no serving certificate in Secret ${this.#settings.namespace}/${this.#settings.secretName} ` +
            `after ${Math.round(timeoutMs / 1000)} s${problems ? `: ${problems}` : ''}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  }

  start(): void {
    // startRuntimeCertificates starts it, and serve starts whatever it serves.
    if (this.#timer !== undefined) return;
    this.#timer = setInterval(() => void this.tick(), this.#settings.pollMs);
    this.#timer.unref();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async release(): Promise<void> {
    this.stop();
    await this.#ticking;
    if (!this.#leader) return;
    this.#leader = false;
    try {
      const lease = await this.#api.get(this.#leasePath());
      if (lease.status !== 200) return;
      const spec = (lease.body['spec'] ?? {}) as { holderIdentity?: string };
      if (spec.holderIdentity !== this.#identity) return;
      const answer = await this.#api.patch(
        this.#leasePath(),
        {
          metadata: { resourceVersion: resourceVersion(lease.body) },
          spec: { holderIdentity: null },
        },
        'application/merge-patch+json',
      );
      if (answer.status === 200) this.#logger.info('certificate writer lease released');
    } catch (error) {
      this.#logger.warn({ error: String(error) }, 'certificate writer lease not released');
    }
  }

  /** One pass: lease, Secret (written by the holder), webhook configuration, serving pair. */
  tick(): Promise<void> {
    this.#ticking ??= this.#tick().finally(() => {
      this.#ticking = undefined;
    });
    return this.#ticking;
  }

  async #tick(): Promise<void> {
    if (this.#stopped) return;
    await this.#step('lease', () => this.#lead());
    let stored: StoredCertificates | undefined;
    let secretVersion = '';
    await this.#step('secret', async () => {
      const secret = await this.#api.get(this.#secretPath());
      if (secret.status !== 200) throw describeAnswer(`GET Secret ${this.#secretRef()}`, secret);
      stored = storedFrom(secret.body);
      secretVersion = resourceVersion(secret.body);
    });
    if (stored === undefined) return;
    if (this.#leader && !this.#stopped) {
      await this.#step('write', async () => {
        stored = await this.#write(stored!, secretVersion);
      });
    }
    const pair = servablePair(stored, Date.now());
    if (pair !== null && pair.certPem !== this.#current?.cert.toString()) {
      this.#current = toKeyPair(pair);
      for (const listener of this.#listeners) listener(this.#current);
    }
    if (this.#current !== undefined && (this.#leader || !this.#published)) {
      await this.#step('webhook configuration', () => this.#publish(stored!));
    }
  }

  /** Runs a step; its failure is logged once until it changes, and the pass goes on. */
  async #step(name: string, action: () => Promise<void>): Promise<void> {
    try {
      await action();
      if (this.#lastProblem.delete(name))
        this.#logger.info({ step: name }, 'certificates: recovered');
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (this.#lastProblem.get(name) !== message)
        this.#logger.warn({ step: name, error: message }, 'certificates: step failed; retrying');
      this.#lastProblem.set(name, message);
    }
  }

  async #lead(): Promise<void> {
    const now = Date.now();
    const lease = await this.#api.get(this.#leasePath());
    if (lease.status !== 200) {
      this.#leader = false;
      throw describeAnswer(`GET Lease ${this.#secretRef()}`, lease);
    }
    const spec = (lease.body['spec'] ?? {}) as {
      holderIdentity?: string;
      renewTime?: string;
      leaseDurationSeconds?: number;
      leaseTransitions?: number;
    };
    const record: LeaseRecord = {
      holder: spec.holderIdentity ?? '',
      renewTime: spec.renewTime ?? '',
      durationMs: (spec.leaseDurationSeconds ?? this.#leaseDurationMs / 1000) * 1000,
    };
    const action = leaseAction(record, this.#identity, this.#observation, now);
    if (this.#observation?.key !== leaseKey(record))
      this.#observation = { key: leaseKey(record), sinceMs: now };
    if (action === 'follow') {
      if (this.#leader)
        this.#logger.warn({ holder: record.holder }, 'certificate writer lease lost');
      this.#leader = false;
      return;
    }
    const renewTime = microTime(now);
    const answer = await this.#api.patch(
      this.#leasePath(),
      {
        metadata: { resourceVersion: resourceVersion(lease.body) },
        spec: {
          holderIdentity: this.#identity,
          leaseDurationSeconds: Math.ceil(this.#leaseDurationMs / 1000),
          renewTime,
          ...(action === 'acquire'
            ? { acquireTime: renewTime, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }
            : {}),
        },
      },
      'application/merge-patch+json',
    );
    if (answer.status === 409) {
      // Another replica wrote it first: it holds the lease now.
      this.#leader = false;
      return;
    }
    if (answer.status !== 200) {
      this.#leader = false;
      throw describeAnswer(`PATCH Lease ${this.#secretRef()}`, answer);
    }
    if (!this.#leader) {
      this.#logger.info(
        { identity: this.#identity, previous: record.holder || undefined },
        'certificate writer lease acquired',
      );
    }
    this.#leader = true;
    this.#observation = {
      key: leaseKey({ ...record, holder: this.#identity, renewTime }),
      sinceMs: now,
    };
  }

  /** Writes the next certificates, if any; returns what the Secret holds afterwards. */
  async #write(stored: StoredCertificates, version: string): Promise<StoredCertificates> {
    const next = nextCertificates(stored, this.#settings, Date.now());
    if (next === null) return stored;
    const data = Object.fromEntries(
      (Object.keys(SECRET_KEYS) as (keyof StoredCertificates)[]).map((key) => [
        SECRET_KEYS[key],
        b64(next.data[key]),
      ]),
    );
    const answer = await this.#api.patch(
      this.#secretPath(),
      { metadata: { resourceVersion: version }, data },
      'application/merge-patch+json',
    );
    if (answer.status !== 200) throw describeAnswer(`PATCH Secret ${this.#secretRef()}`, answer);
    this.#logger.info({ secret: this.#secretRef(), reasons: next.reasons }, 'certificates written');
    return next.data;
  }

  /**
   * The holder makes every webhook of the configuration trust ca.crt; the
   * others only check whether it trusts their pair yet (readiness).
   */
  async #publish(stored: StoredCertificates): Promise<void> {
    const path = `/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/${this.#settings.webhookConfiguration}`;
    const config = await this.#api.get(path);
    if (config.status !== 200)
      throw describeAnswer(
        `GET MutatingWebhookConfiguration ${this.#settings.webhookConfiguration}`,
        config,
      );
    const webhooks = (config.body['webhooks'] ?? []) as {
      name: string;
      clientConfig?: { caBundle?: string };
    }[];
    const wanted = b64(stored.caCert);
    const stale = webhooks.filter((w) => w.clientConfig?.caBundle !== wanted);
    let bundles = webhooks.map((w) => unb64(w.clientConfig?.caBundle));
    if (this.#leader && stored.caCert !== '' && stale.length > 0) {
      const answer = await this.#api.patch(
        path,
        {
          metadata: { resourceVersion: resourceVersion(config.body) },
          webhooks: stale.map((w) => ({ name: w.name, clientConfig: { caBundle: wanted } })),
        },
        'application/strategic-merge-patch+json',
      );
      if (answer.status !== 200)
        throw describeAnswer(
          `PATCH MutatingWebhookConfiguration ${this.#settings.webhookConfiguration}`,
          answer,
        );
      this.#logger.info(
        { webhookConfiguration: this.#settings.webhookConfiguration },
        'caBundle written',
      );
      bundles = webhooks.map(() => stored.caCert);
    }
    const cert = this.#current?.cert.toString() ?? '';
    const trusted = webhooks.length > 0 && bundles.every((bundle) => bundleTrusts(bundle, cert));
    if (trusted && !this.#published) {
      this.#logger.info(
        { webhookConfiguration: this.#settings.webhookConfiguration },
        'the webhook configuration trusts the serving certificate',
      );
    }
    // Once trusted, readiness stays: a later mismatch is the writer's to mend.
    this.#published ||= trusted;
  }

  #secretRef(): string {
    return `${this.#settings.namespace}/${this.#settings.secretName}`;
  }

  #secretPath(): string {
    return `/api/v1/namespaces/${this.#settings.namespace}/secrets/${this.#settings.secretName}`;
  }

  #leasePath(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.#settings.namespace}/leases/${this.#settings.secretName}`;
  }
}

/** Start-up: waits (up to `timeoutMs`) for a pair to serve, then polls in the background. */
export async function startRuntimeCertificates(
  connection: ClusterConnection,
  settings: RuntimeCertificateSettings,
  logger: Logger,
  timeoutMs = 120_000,
): Promise<RuntimeCertificates> {
  const certificates = new RuntimeCertificates(
    objectApi(loadKubeConfig(connection)),
    settings,
    logger,
  );
  logger.info(
    {
      secret: `${settings.namespace}/${settings.secretName}`,
      webhookConfiguration: settings.webhookConfiguration,
      identity: certificates.identity,
    },
    'certificates: managed at run time',
  );
  await certificates.waitForPair(timeoutMs);
  certificates.start();
  return certificates;
}
