// The MutatingAdmissionPolicy on a real API server (etcd + kube-apiserver,
// no node): rendered by `prestop-injector policy`, installed, and fed random
// pods with server-side dry run. Each pod the policy stores must be exactly
// the webhook's answer for the same pod and namespace, computed by the real
// admission path (createPodAdmission) on the pod as the API server sends it
// (a dry run in a namespace without the policy), or, for the cases the
// policy does not express, the pod as it came.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import fastJsonPatch from 'fast-json-patch';
import { parseAllDocuments } from 'yaml';
import { buildConfig, readRawOptions, type ServerConfig } from '../../src/cli/config.ts';
import { admissionPolicy, policyParams } from '../../src/core/admission-policy.ts';
import { Annotation, ForeignAnnotation } from '../../src/core/annotations.ts';
import { capabilitiesFor, parseKubeVersion, uniformVersions } from '../../src/core/capabilities.ts';
import { mutatePod } from '../../src/core/mutate.ts';
import { readStatus } from '../../src/core/status.ts';
import { isRecord, type PodLike } from '../../src/core/types.ts';
import {
  createPodAdmission,
  SYSTEM_NAMESPACES,
  type AdmitPod,
} from '../../src/webhook/admission.ts';
import { annotations as arbitraryAnnotations, arbitraryPod } from '../support/arbitraries.ts';
import { registerWebhook, waitForWebhookActive } from '../support/cluster/api.ts';
import { startControlPlane, type ControlPlane } from '../support/cluster/apiserver.ts';
import { ensureTools } from '../support/cluster/binaries.ts';
import { removeDirectory, runCommand, waitFor } from '../support/cluster/processes.ts';
import { makeDevCerts, startServe, type ServeProcess } from '../support/serve.ts';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
/** The params ConfigMap's namespace: excluded, as serve's own. */
const OWN = 'prestop-system';
const POLICY_LABEL = { 'prestop-test/policy': 'on' };
const WEBHOOK_LABEL = { 'prestop-test/webhook': 'on' };
const MESH_LABEL = { 'prestop-test/mesh': 'on' };
const LINKERD = 'linkerd-proxy';
const SEED = Number(process.env['PRESTOP_POLICY_SEED'] ?? Date.now() % 2 ** 31);
const MIN_COMPARED = 500;
const UNRESTRICTED_PER_PHASE = 150;
const LATENCY_SAMPLES = Number(process.env['PRESTOP_POLICY_LATENCY_SAMPLES'] ?? 150);
const EXEC_HOOKS = new Set(['exec-sleep', 'drain', 'proxy-hold', 'proxy-sleep']);

type Json = Record<string, unknown>;

// ------------------------------------------------------------ raw JSON API

interface Answer {
  status: number;
  body: Json;
  text: string;
}

/** The API over HTTPS with raw JSON: no client model may drop or rename a field. */
function rawApi(cp: ControlPlane) {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 8, ca: cp.caPem });
  const url = new URL(cp.server);
  return (method: string, path: string, body?: unknown): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const request = https.request(
        {
          agent,
          host: url.hostname,
          port: url.port,
          method,
          path,
          headers: {
            authorization: `Bearer ${cp.adminToken}`,
            ...(payload === undefined
              ? {}
              : {
                  'content-type': 'application/json',
                  'content-length': Buffer.byteLength(payload),
                }),
          },
        },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (chunk: Buffer) => chunks.push(chunk));
          response.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const json = (response.headers['content-type'] ?? '').includes('json');
            resolve({
              status: response.statusCode ?? 0,
              body: json ? (JSON.parse(text) as Json) : {},
              text,
            });
          });
        },
      );
      request.on('error', reject);
      request.end(payload);
    });
}
type Api = ReturnType<typeof rawApi>;

async function must(answer: Promise<Answer>, what: string): Promise<Json> {
  const { status, body } = await answer;
  assert.ok(status < 300, `${what}: HTTP ${status} ${JSON.stringify(body)}`);
  return body;
}

const RESOURCE_PATH: Record<string, string> = {
  ConfigMap: '/api/v1/namespaces/{ns}/configmaps',
  MutatingAdmissionPolicy: '/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicies',
  MutatingAdmissionPolicyBinding:
    '/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicybindings',
};

/** Creates or replaces one object of the kinds the policy is made of. */
async function apply(api: Api, object: Json): Promise<void> {
  const metadata = object['metadata'] as Json;
  const base = RESOURCE_PATH[object['kind'] as string]!.replace(
    '{ns}',
    String(metadata['namespace']),
  );
  const created = await api('POST', base, object);
  if (created.status === 409) {
    const current = await must(api('GET', `${base}/${String(metadata['name'])}`), 'read');
    const resourceVersion = (current['metadata'] as Json)['resourceVersion'];
    await must(
      api('PUT', `${base}/${String(metadata['name'])}`, {
        ...object,
        metadata: { ...metadata, resourceVersion },
      }),
      `replace ${String(object['kind'])}`,
    );
    return;
  }
  assert.ok(
    created.status < 300,
    `create ${String(object['kind'])}: ${JSON.stringify(created.body)}`,
  );
}

async function createNamespace(api: Api, name: string, labels: Json, annotations: Json) {
  await must(
    api('POST', '/api/v1/namespaces', {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name, labels, annotations },
    }),
    `namespace ${name}`,
  );
}

function dryRunCreate(api: Api, namespace: string, pod: unknown): Promise<Answer> {
  return api('POST', `/api/v1/namespaces/${namespace}/pods?dryRun=All`, pod);
}

// ------------------------------------------------------------ the policy

/** `prestop-injector policy` as a user runs it: its YAML, parsed. */
function renderWithCli(flags: string[]): Promise<Json[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'policy', ...flags], {
      env: { PATH: process.env['PATH'] ?? '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`policy exited ${code}: ${stderr}`));
      else resolve(parseAllDocuments(stdout).map((doc) => doc.toJS() as Json));
    });
  });
}

/**
 * Installs the CLI's objects. The binding is narrowed to labelled
 * namespaces, so that the namespaces without the label show the pod as the
 * API server sends it to admission.
 */
async function installPolicy(api: Api, objects: Json[]): Promise<void> {
  for (const object of objects) {
    if (object['kind'] === 'MutatingAdmissionPolicyBinding') {
      const selector = ((object['spec'] as Json)['matchResources'] as Json)[
        'namespaceSelector'
      ] as Json;
      selector['matchLabels'] = POLICY_LABEL;
    }
    await apply(api, object);
  }
}

/** The webhook's admission, configured by the same flags the CLI was given. */
function webhookAdmission(
  config: ServerConfig,
  minor: string,
  namespaceAnnotations: ReadonlyMap<string, Record<string, string>>,
): AdmitPod {
  return createPodAdmission({
    defaults: config.defaults,
    planner: config.planner,
    // The policy's premise: the API server and every kubelet have the sleep action.
    capabilities: () => capabilitiesFor(uniformVersions(parseKubeVersion(minor))),
    namespaceAnnotations: (namespace) => namespaceAnnotations.get(namespace),
    excludedNamespaces: new Set([...SYSTEM_NAMESPACES, config.ownNamespace]),
  });
}

function configFor(flags: string[]): ServerConfig {
  return buildConfig(readRawOptions(flags, {}));
}

// ------------------------------------------------------------ comparing pods

/** Fields the API server sets per object, not per content. */
function withoutIdentity(pod: Json): Json {
  const copy = structuredClone(pod);
  const metadata = copy['metadata'] as Json;
  for (const key of ['name', 'namespace', 'uid', 'creationTimestamp', 'resourceVersion']) {
    delete metadata[key];
  }
  delete metadata['managedFields'];
  return copy;
}

/** A pod to send again: what the API server filled in per object removed. */
function asInput(pod: Json): Json {
  const copy = withoutIdentity(pod);
  delete copy['status'];
  return copy;
}

function patchOf(response: { patch?: string }): fastJsonPatch.Operation[] {
  if (response.patch === undefined) return [];
  return JSON.parse(
    Buffer.from(response.patch, 'base64').toString('utf8'),
  ) as fastJsonPatch.Operation[];
}

/** The webhook's answer for a received pod, applied (the input is not changed). */
async function webhookAnswer(
  admit: AdmitPod,
  namespace: string,
  received: Json,
): Promise<{ answer: Json; patched: boolean }> {
  const result = await admit({
    apiVersion: 'admission.k8s.io/v1',
    uid: 'policy-test',
    kind: { group: '', version: 'v1', kind: 'Pod' },
    operation: 'CREATE',
    namespace,
    name: '',
    object: structuredClone(received),
    dryRun: true,
  });
  const patch = patchOf(result.response);
  if (patch.length === 0) return { answer: received, patched: false };
  const answer = fastJsonPatch.applyPatch(
    structuredClone(received),
    patch,
    true,
    false,
  ).newDocument;
  return { answer, patched: true };
}

/** Why the policy leaves this pod as it came (README's list), or null. */
function notExpressed(
  received: Json,
  config: ServerConfig,
  namespaceAnnotations: unknown,
): string | null {
  const pod = received as unknown as PodLike;
  const earlier = readStatus(pod);
  if (pod.metadata?.annotations?.[Annotation.status] !== undefined) {
    if (earlier === null) return 'a status annotation it did not write';
    if (earlier.mode !== 'sleep' || Object.keys(earlier.fp).length > 0) {
      return 'an earlier pass with drain or exec hooks';
    }
  }
  const mutation = mutatePod(pod, {
    defaults: config.defaults,
    capabilities: capabilitiesFor(uniformVersions({ major: 1, minor: 37 })),
    config: config.planner,
    namespaceAnnotations: namespaceAnnotations as Record<string, string>,
  });
  if (mutation.outcome === 'skipped') return null;
  if (mutation.settings.mode === 'drain') return 'drain mode';
  if (mutation.decisions.some((d) => d.hook === 'proxy-hold')) return 'Istio hold polling sockets';
  const managed = mutation.settings.sidecars && pod.spec.hostNetwork !== true;
  const classicIstio = pod.spec.containers.find((c) => c.name === 'istio-proxy');
  if (managed && classicIstio !== undefined && pod.spec.containers.length > 1) {
    const texts = [
      ...(classicIstio.env ?? [])
        .filter((e) => e.name === 'PROXY_CONFIG')
        .map((e) => e.value ?? ''),
      pod.metadata?.annotations?.[ForeignAnnotation.istioProxyConfig] ?? '',
    ];
    if (texts.some((t) => t.includes('terminationDrainDuration') || t.includes('\\'))) {
      return 'Istio proxy config with terminationDrainDuration';
    }
  }
  const exec = mutation.decisions.find((d) => EXEC_HOOKS.has(d.hook));
  assert.equal(exec, undefined, 'with the sleep action and sleep mode, no exec hook is planned');
  return null;
}

// ------------------------------------------------------------ test data

/** Namespace annotation sets: the usual ones, and random valid and invalid ones. */
function namespaceAnnotationSets(seed: number): Record<string, string>[] {
  return [
    {},
    { [Annotation.inject]: 'enabled' },
    { [Annotation.inject]: ' Enabled ', [Annotation.delaySeconds]: '25' },
    { [Annotation.inject]: 'disabled' },
    { [Annotation.inject]: 'true', [Annotation.sidecars]: 'disabled' },
    { [Annotation.inject]: 'enabled', [Annotation.containers]: 'app, web' },
    { [Annotation.inject]: 'enabled', [Annotation.delaySeconds]: '0' },
    { [Annotation.inject]: 'enabled', [Annotation.mode]: 'drain' },
    ...fc.sample(arbitraryAnnotations, { numRuns: 6, seed }),
  ];
}

/**
 * Random pods (the property tests' generator) ready to send: port names made
 * unique, which API validation requires and the planner never reads.
 */
function randomPods(count: number, seed: number): Json[] {
  return fc.sample(arbitraryPod, { numRuns: count, seed }).map((pod) => {
    const copy = structuredClone(pod);
    delete copy.metadata!.namespace;
    const seen = new Set<string>();
    for (const container of copy.spec.containers) {
      for (const port of (container['ports'] ?? []) as Json[]) {
        if (typeof port['name'] !== 'string') continue;
        if (seen.has(port['name'])) delete port['name'];
        else seen.add(port['name']);
      }
    }
    return copy as unknown as Json;
  });
}

async function inParallel<T>(items: readonly T[], width: number, work: (item: T) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: width }, worker));
}

/**
 * A stand-in for a mesh injector that runs after the policy (webhooks run
 * after policies) and is not called again (reinvocationPolicy Never, as
 * Istio's): it adds a Linkerd proxy, classic, native, or classic with
 * Linkerd's own wait-before-exit preStop, as the pod's label says.
 */
async function startMeshInjector() {
  const certs = makeDevCerts();
  const server = https.createServer(
    { cert: readFileSync(certs.certPath), key: readFileSync(certs.keyPath) },
    (request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const review = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          request: { uid: string; object: PodLike };
        };
        const pod = review.request.object;
        const names = [...(pod.spec.initContainers ?? []), ...pod.spec.containers].map(
          (c) => c.name,
        );
        const variant = pod.metadata?.labels?.['mesh-variant'] ?? 'classic';
        const patch: unknown[] = [];
        if (!names.includes(LINKERD)) {
          const proxy: Json = { name: LINKERD, image: 'cr.l5d.io/linkerd/proxy:edge-25.1.1' };
          if (variant === 'native') {
            proxy['restartPolicy'] = 'Always';
            if (pod.spec.initContainers === undefined) {
              patch.push({ op: 'add', path: '/spec/initContainers', value: [] });
            }
            patch.push({ op: 'add', path: '/spec/initContainers/-', value: proxy });
          } else {
            if (variant === 'wait') {
              proxy['lifecycle'] = { preStop: { exec: { command: ['/bin/sleep', '20'] } } };
            }
            patch.push({ op: 'add', path: '/spec/containers/-', value: proxy });
          }
        }
        response.setHeader('content-type', 'application/json');
        response.end(
          JSON.stringify({
            apiVersion: 'admission.k8s.io/v1',
            kind: 'AdmissionReview',
            response: {
              uid: review.request.uid,
              allowed: true,
              ...(patch.length === 0
                ? {}
                : {
                    patchType: 'JSONPatch',
                    patch: Buffer.from(JSON.stringify(patch)).toString('base64'),
                  }),
            },
          }),
        );
      });
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}/inject`,
    caPem: certs.caPem,
    async close() {
      await new Promise((resolve) => server.close(resolve));
      await removeDirectory(certs.dir);
    },
  };
}

function rounds(samples: number, block: number): number {
  return Math.ceil(samples / block) * block;
}

/** Seconds an admission plugin has spent on pod creates so far, from the API server's metrics. */
async function pluginDuration(api: Api, plugin: string): Promise<number> {
  const { text } = await api('GET', '/metrics');
  const line = new RegExp(
    `^apiserver_admission_controller_admission_duration_seconds_sum\\{name="${plugin}",operation="CREATE",rejected="false",type="admit"\\} (\\S+)$`,
    'm',
  ).exec(text);
  return Number(line?.[1] ?? 0);
}

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

// ------------------------------------------------------------ the tests

describe('the MutatingAdmissionPolicy on a real API server', { timeout: 600_000 }, () => {
  let cp: ControlPlane;
  let api: Api;
  const namespaceAnnotations = new Map<string, Record<string, string>>();
  const policyNamespaces: string[] = [];
  let webhook: ServeProcess | undefined;

  /** Phases: each its own settings, rendered by the CLI and installed in turn. */
  const PHASES: { name: string; flags: string[] }[] = [
    {
      name: 'opt-out cluster, helper sidecars',
      flags: ['--inject-default', 'enabled', '--helper-sidecars', 'log-shipper'],
    },
    {
      name: 'opt-in cluster, short delay, distroless patterns',
      flags: [
        '--inject-default',
        'disabled',
        '--delay-seconds',
        '4',
        '--helper-sidecars',
        'fluent-bit, metrics',
        '--distroless-patterns',
        'Example/App,busybox',
      ],
    },
  ];

  before(async () => {
    cp = await startControlPlane();
    api = rawApi(cp);
    await createNamespace(api, OWN, {}, {});
    await createNamespace(api, 'plain', {}, {});
    for (const [index, annotations] of namespaceAnnotationSets(SEED).entries()) {
      const name = `policy-${index}`;
      await createNamespace(api, name, POLICY_LABEL, annotations);
      namespaceAnnotations.set(name, annotations);
      policyNamespaces.push(name);
    }
  });
  after(async () => {
    await webhook?.stop();
    await cp?.stop();
  });

  /** Waits until the installed policy answers as `config` says, seen on a probe pod. */
  async function waitForPolicy(namespace: string, injects: boolean): Promise<void> {
    const probe = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { generateName: 'probe-' },
      spec: { containers: [{ name: 'app', image: 'example/app:1' }] },
    };
    await waitFor(
      'the policy to answer with the new settings',
      30_000,
      async () => {
        const { body } = await dryRunCreate(api, namespace, probe);
        const status = (
          (body['metadata'] as Json | undefined)?.['annotations'] as Json | undefined
        )?.[Annotation.status];
        return (status !== undefined) === injects;
      },
      100,
    );
  }

  interface Phase {
    name: string;
    flags: string[];
    config: ServerConfig;
    admit: AdmitPod;
  }

  /** Installs the policy the CLI renders from `flags`, and waits until it answers so. */
  async function installPhase(name: string, flags: string[]): Promise<Phase> {
    const all = [...flags, '--own-namespace', OWN];
    const config = configFor(all);
    await installPolicy(api, await renderWithCli(all));
    // policy-0 has no annotations: the params' inject-default decides.
    await waitForPolicy('policy-0', config.defaults.inject);
    return {
      name,
      flags: all,
      config,
      admit: webhookAdmission(config, cp.minorVersion, namespaceAnnotations),
    };
  }

  interface Counts {
    equal: number;
    changed: number;
    untouchedByRule: Map<string, number>;
    invalid: number;
    undone: number;
    /** Classic Linkerd proxies the answer holds with a sleep it wrote. */
    proxiesHeld: number;
    refusals: Map<string, number>;
  }

  function newCounts(): Counts {
    return {
      equal: 0,
      changed: 0,
      untouchedByRule: new Map(),
      invalid: 0,
      undone: 0,
      proxiesHeld: 0,
      refusals: new Map(),
    };
  }

  /**
   * One pod through the policy and through the webhook's admission: the
   * stored pod must be the webhook's answer, or the pod as it came when the
   * README's list says the policy does not express it.
   */
  async function checkPod(
    generatedPod: Json,
    where: {
      namespace: string;
      /** Where the API server shows the pod as admission receives it. */
      receivedIn?: string;
      /** Arrives injected already, under this namespace's settings. */
      injectedIn?: string | null;
      /** The webhook runs too: every pod must be its answer. */
      withWebhook?: boolean;
    },
    phase: Phase,
    counts: Counts,
  ): Promise<void> {
    const { namespace, receivedIn = 'plain', injectedIn = null, withWebhook = false } = where;
    const plain = await dryRunCreate(api, receivedIn, generatedPod);
    if (plain.status >= 300) {
      counts.invalid++;
      const message = String(plain.body['message']).slice(0, 120);
      counts.refusals.set(message, (counts.refusals.get(message) ?? 0) + 1);
      return;
    }
    let input: Json = generatedPod;
    let received = plain;
    // A pod injected already, under another namespace's settings (as the CLI
    // or a first admission pass left it): the policy must undo that pass as
    // the webhook does.
    if (injectedIn !== null) {
      const earlier = await webhookAnswer(phase.admit, injectedIn, plain.body);
      if (earlier.patched) {
        input = asInput(earlier.answer);
        received = await dryRunCreate(api, receivedIn, input);
        if (received.status >= 300) {
          counts.invalid++;
          return;
        }
        counts.undone++;
      }
    }
    const { answer, patched } = await webhookAnswer(phase.admit, namespace, received.body);
    const why = withWebhook
      ? null
      : notExpressed(received.body, phase.config, namespaceAnnotations.get(namespace));
    let expected = received.body;
    if (patched && why === null) {
      // Through the API server too: the same decoding and defaulting.
      const normalized = await dryRunCreate(api, 'plain', asInput(answer));
      assert.ok(normalized.status < 300, JSON.stringify(normalized.body));
      expected = normalized.body;
    }
    const stored = await dryRunCreate(api, namespace, input);
    assert.ok(stored.status < 300, `policy pod refused: ${JSON.stringify(stored.body)}`);
    assert.deepEqual(
      withoutIdentity(stored.body),
      withoutIdentity(expected),
      `${why === null ? "the webhook's answer" : `left as it came (${why})`} in ${namespace} ` +
        `(${phase.name}, seed ${SEED}), for:\n${JSON.stringify(input)}`,
    );
    if (why !== null && patched) {
      counts.untouchedByRule.set(why, (counts.untouchedByRule.get(why) ?? 0) + 1);
    } else {
      counts.equal++;
      if (patched) counts.changed++;
      const proxy = (expected['spec'] as PodLike['spec']).containers.find(
        (c) => c.name === LINKERD,
      );
      const before = (received.body['spec'] as PodLike['spec']).containers.find(
        (c) => c.name === LINKERD,
      );
      if (
        proxy?.lifecycle?.preStop?.sleep !== undefined &&
        before?.lifecycle?.preStop === undefined
      ) {
        counts.proxiesHeld++;
      }
    }
  }

  it(`equals the webhook's answer on at least ${MIN_COMPARED} random pods, or leaves a pod as it came`, async (t) => {
    t.diagnostic(`seed ${SEED} (PRESTOP_POLICY_SEED to repeat)`);
    const counts = newCounts();
    let next = 0;
    for (const [index, { name, flags }] of PHASES.entries()) {
      const phase = await installPhase(name, flags);
      const { config } = phase;
      const check = (pod: Json, restricted: boolean) => {
        const n = next++;
        const namespace = policyNamespaces[n % policyNamespaces.length]!;
        // The restricted stream keeps pods the webhook changes and the
        // policy expresses, judged on the pod as generated (the check itself
        // judges the pod the API server sends).
        if (restricted) {
          const mutation = mutatePod(pod as unknown as PodLike, {
            defaults: config.defaults,
            capabilities: capabilitiesFor(uniformVersions({ major: 1, minor: 37 })),
            config: config.planner,
            namespaceAnnotations: namespaceAnnotations.get(namespace),
          });
          if (mutation.outcome !== 'mutated') return Promise.resolve();
          if (notExpressed(pod, config, namespaceAnnotations.get(namespace)) !== null) {
            return Promise.resolve();
          }
        }
        const injectedIn =
          n % 3 === 0 ? policyNamespaces[(n + 5) % policyNamespaces.length]! : null;
        return checkPod(pod, { namespace, injectedIn }, phase, counts);
      };
      // Every kind of pod, as generated.
      await inParallel(randomPods(UNRESTRICTED_PER_PHASE, SEED + index), 4, (pod) =>
        check(pod, false),
      );
      // Then the expressible cases, until enough were changed by the webhook.
      const target = Math.ceil(MIN_COMPARED / PHASES.length) * (index + 1);
      for (let batch = 0; counts.changed < target; batch++) {
        assert.ok(batch < 30, `too few expressible pods in ${name}: ${counts.changed}`);
        await inParallel(randomPods(200, SEED + 100 * (index + 1) + batch), 4, (pod) =>
          check(pod, true),
        );
      }
    }
    const untouched = [...counts.untouchedByRule].map(([why, n]) => `${why}: ${n}`).join(', ');
    t.diagnostic(
      `${counts.equal} pods equal to the webhook's answer, ${counts.changed} of them changed by it ` +
        `(${counts.undone} pods arrived injected); ` +
        `left as they came where the webhook would change them: ${untouched || 'none'}; ` +
        `${counts.invalid} generated pods refused by validation (not counted), mostly: ` +
        `${[...counts.refusals].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'none'}`,
    );
    assert.ok(counts.changed >= MIN_COMPARED, `only ${counts.changed} pods were changed`);
    // Both kinds of outcome were really exercised.
    assert.ok(counts.untouchedByRule.size >= 2, `not-expressed rules seen: ${untouched}`);
  });

  it('reads annotation values as the webhook does: white space, case, zeros, bounds, lists', async (t) => {
    const phase = await installPhase(PHASES[0]!.name, PHASES[0]!.flags);
    // Values each parser must accept or ignore exactly as String.trim,
    // toLowerCase and Number do: Unicode spaces (U+FEFF and U+00A0 are
    // JavaScript white space, U+0085 and U+200B are not), letters that
    // fold to ASCII in Unicode case folding (U+017F, U+212A), digits of
    // other scripts, leading zeros, the bounds.
    const values = [
      ' 25 ',
      '\u00a025',
      '25\ufeff',
      '\u008525',
      '25\u200b',
      '\u2028 7\t',
      '0025',
      '0'.repeat(30) + '7',
      '3600',
      '3601',
      '0',
      '+5',
      '5.0',
      '1e1',
      '\u0663',
      '-1',
      '',
      'ENABLED',
      ' Enabled\u3000',
      'tRuE',
      'disabled',
      'False',
      '\u017fleep',
      'SLEEP',
      'Drain ',
      'app',
      ' app , web ',
      'app,,web',
      ',',
      'App',
      'web,ghost',
      'a'.repeat(63),
      'a'.repeat(64),
      'app\u00a0,web',
    ];
    const keys = [
      Annotation.inject,
      Annotation.mode,
      Annotation.delaySeconds,
      Annotation.containers,
      Annotation.sidecars,
    ];
    await createNamespace(api, 'tricky', POLICY_LABEL, {
      [Annotation.delaySeconds]: '20',
      [Annotation.containers]: 'web',
      [Annotation.sidecars]: 'disabled',
    });
    namespaceAnnotations.set('tricky', {
      [Annotation.delaySeconds]: '20',
      [Annotation.containers]: 'web',
      [Annotation.sidecars]: 'disabled',
    });
    const counts = newCounts();
    const pods = keys.flatMap((key) =>
      values.map((value) => ({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { generateName: 'tricky-', annotations: { [key]: value } },
        spec: {
          containers: [
            { name: 'app', image: 'example/app:1' },
            { name: 'web', image: 'example/web:1' },
            { name: 'linkerd-proxy', image: 'cr.l5d.io/linkerd/proxy:edge-25.1.1' },
          ],
        },
      })),
    );
    for (const namespace of ['policy-0', 'tricky']) {
      await inParallel(pods, 4, (pod) => checkPod(pod, { namespace }, phase, counts));
    }
    t.diagnostic(`${counts.equal} pods equal to the webhook's answer, ${counts.changed} changed`);
    // "Drain " is drain mode: the webhook writes a script, the policy nothing.
    const drain = counts.untouchedByRule.get('drain mode') ?? 0;
    assert.deepEqual([...counts.untouchedByRule.keys()], drain > 0 ? ['drain mode'] : []);
    assert.equal(counts.equal + drain, pods.length * 2);
  });

  it('re-plans when a later webhook adds a mesh proxy (reinvocation)', async (t) => {
    const phase = await installPhase(PHASES[0]!.name, PHASES[0]!.flags);
    const injector = await startMeshInjector();
    try {
      await registerWebhook(cp, {
        name: 'fake-mesh',
        url: injector.url,
        caBundlePem: injector.caPem,
        failurePolicy: 'Fail',
        reinvocationPolicy: 'Never',
        namespaceSelector: { matchLabels: MESH_LABEL },
      });
      await createNamespace(api, 'mesh', { ...POLICY_LABEL, ...MESH_LABEL }, {});
      await createNamespace(api, 'mesh-plain', MESH_LABEL, {});
      namespaceAnnotations.set('mesh', {});
      await waitFor('the mesh injector to be called', 30_000, async () => {
        const { body } = await dryRunCreate(api, 'mesh-plain', {
          metadata: { generateName: 'probe-' },
          spec: { containers: [{ name: 'app', image: 'example/app:1' }] },
        });
        return JSON.stringify(body).includes(LINKERD);
      });
      const variants = ['classic', 'native', 'wait'];
      // Pods that will run (not batch ones), their proxies taken out: the injector adds one.
      const pods = randomPods(600, SEED + 7)
        .map((pod) => {
          const spec = pod['spec'] as PodLike['spec'];
          spec.containers = spec.containers.filter((c) => !c.name.endsWith('-proxy'));
          if (spec.initContainers) {
            spec.initContainers = spec.initContainers.filter((c) => !c.name.endsWith('-proxy'));
          }
          return pod;
        })
        .filter((pod) => {
          const spec = pod['spec'] as PodLike['spec'];
          const grace = spec.terminationGracePeriodSeconds ?? 30;
          // API validation refuses a sleep action as long as the grace period.
          const sleepsFit = [...(spec.initContainers ?? []), ...spec.containers].every((c) =>
            Object.values(c.lifecycle ?? {}).every(
              (hook) =>
                !isRecord(hook) ||
                !isRecord(hook['sleep']) ||
                Number(hook['sleep']['seconds']) < grace,
            ),
          );
          return sleepsFit && !['Never', 'OnFailure'].includes(spec.restartPolicy ?? '');
        })
        .slice(0, 200)
        .map((pod, index) => {
          const metadata = pod['metadata'] as Json;
          metadata['labels'] = { 'mesh-variant': variants[index % variants.length]! };
          return pod;
        });
      const counts = newCounts();
      await inParallel(pods, 4, (pod) =>
        checkPod(pod, { namespace: 'mesh', receivedIn: 'mesh-plain' }, phase, counts),
      );
      t.diagnostic(
        `${counts.equal} pods equal to the webhook's answer on the pod with its proxy, ` +
          `${counts.changed} changed, ${counts.proxiesHeld} Linkerd proxies held after the app`,
      );

      assert.ok(counts.changed >= 40, `only ${counts.changed} pods changed`);
      // Holds that only a second pass, after the proxy came, could write.
      assert.ok(counts.proxiesHeld >= 12, `only ${counts.proxiesHeld} proxies held`);
    } finally {
      await cp.admission.deleteMutatingWebhookConfiguration({ name: 'fake-mesh' });
      await injector.close();
    }
  });

  it("with the webhook running too, every pod is the webhook's answer", async (t) => {
    const phase = await installPhase(PHASES[0]!.name, PHASES[0]!.flags);
    webhook = await startServe({
      kubeconfig: cp.kubeconfigPath,
      args: ['--inject-default', 'disabled', '--kube-version', cp.minorVersion, ...phase.flags],
    });
    await registerWebhook(cp, {
      name: 'prestop-injector',
      url: webhook.url,
      caBundlePem: webhook.certs.caPem,
      failurePolicy: 'Fail',
      namespaceSelector: { matchLabels: WEBHOOK_LABEL },
    });
    await createNamespace(api, 'both', { ...POLICY_LABEL, ...WEBHOOK_LABEL }, {});
    await createNamespace(api, 'webhook-only', WEBHOOK_LABEL, {});
    namespaceAnnotations.set('both', {});
    await waitForWebhookActive(cp, { namespace: 'webhook-only' });
    const counts = newCounts();
    let next = 0;
    await inParallel(randomPods(360, SEED + 9), 4, (pod) => {
      const n = next++;
      const injectedIn = n % 3 === 0 ? policyNamespaces[n % policyNamespaces.length]! : null;
      return checkPod(pod, { namespace: 'both', injectedIn, withWebhook: true }, phase, counts);
    });
    t.diagnostic(
      `${counts.equal} pods equal to the webhook's answer, ${counts.changed} changed ` +
        `(${counts.undone} arrived injected)`,
    );
    assert.ok(counts.changed >= 60, `only ${counts.changed} pods changed`);
  });

  it("measures the admission latency it adds, against the webhook's", async (t) => {
    assert.ok(webhook !== undefined, 'runs after the webhook test');
    await createNamespace(api, 'latency-policy', POLICY_LABEL, {});
    const namespaces = ['plain', 'latency-policy', 'webhook-only'];
    // The admission plugin that does the work in each namespace.
    const plugins: Record<string, string> = {
      plain: 'MutatingAdmissionPolicy',
      'latency-policy': 'MutatingAdmissionPolicy',
      'webhook-only': 'MutatingAdmissionWebhook',
    };
    const shapes: Record<string, Json> = {
      'one container': {
        metadata: { generateName: 'latency-' },
        spec: { containers: [{ name: 'app', image: 'example/app:1' }] },
      },
      'six containers with a Linkerd proxy and a helper': {
        metadata: {
          generateName: 'latency-',
          annotations: {
            [Annotation.delaySeconds]: '15',
            [Annotation.containers]: 'app,web,worker',
          },
        },
        spec: {
          containers: ['app', 'web', 'worker', 'cache', 'log-shipper', LINKERD].map((name) => ({
            name,
            image: `example/${name}:1`,
            env: [{ name: 'A', value: '1' }],
          })),
        },
      },
    };
    const BLOCK = 10;
    for (const [shape, pod] of Object.entries(shapes)) {
      const samples = new Map<string, number[]>(namespaces.map((n) => [n, []]));
      const pluginSeconds = new Map<string, number>(namespaces.map((n) => [n, 0]));
      const rounds = Math.ceil(LATENCY_SAMPLES / BLOCK);
      for (let round = -2; round < rounds; round++) {
        // Blocks in a new order each round: none always follows the same one.
        for (const namespace of round % 2 === 0 ? namespaces : [...namespaces].reverse()) {
          const before = await pluginDuration(api, plugins[namespace]!);
          for (let n = 0; n < BLOCK; n++) {
            const start = performance.now();
            const { status, body } = await dryRunCreate(api, namespace, pod);
            const elapsed = performance.now() - start;
            assert.ok(status < 300, JSON.stringify(body));
            assert.equal(
              JSON.stringify(body).includes(Annotation.status),
              namespace !== 'plain',
              `${namespace} injects, plain does not`,
            );
            if (round >= 0) samples.get(namespace)!.push(elapsed);
          }
          const after = await pluginDuration(api, plugins[namespace]!);
          if (round >= 0) {
            pluginSeconds.set(namespace, pluginSeconds.get(namespace)! + after - before);
          }
        }
      }
      const plainP50 = quantile(
        samples.get('plain')!.sort((a, b) => a - b),
        0.5,
      );
      for (const namespace of namespaces) {
        const sorted = samples.get(namespace)!.sort((a, b) => a - b);
        const p50 = quantile(sorted, 0.5);
        const inPlugin = (pluginSeconds.get(namespace)! * 1000) / sorted.length;
        t.diagnostic(
          `${shape}, ${namespace}: p50 ${p50.toFixed(2)} ms (+${(p50 - plainP50).toFixed(2)}), ` +
            `p90 ${quantile(sorted, 0.9).toFixed(2)} ms, p99 ${quantile(sorted, 0.99).toFixed(2)} ms; ` +
            `${plugins[namespace]} ${inPlugin.toFixed(2)} ms per create`,
        );
      }
    }
    t.diagnostic(
      `${rounds(LATENCY_SAMPLES, BLOCK)} dry-run creates per namespace and shape, one at a time, ` +
        `in blocks of ${BLOCK}; plugin time from apiserver_admission_controller_admission_duration_seconds`,
    );
  });

  it("installs from the chart (mode: policy) with the generator's policy, and is refused below 1.36", async () => {
    const { helm } = await ensureTools();
    const render = (kubeVersion: string, extra: string[] = []) =>
      runCommand(helm, [
        'template',
        'chart',
        'charts/prestop-injector',
        '--namespace',
        'chart-system',
        '--kube-version',
        kubeVersion,
        '--set',
        'mode=policy',
        '--set',
        'image.repository=example/x',
        '--show-only',
        'templates/admission-policy.yaml',
        ...extra,
      ]);
    const refused = await render('1.35.4');
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /mode: policy needs Kubernetes 1\.36 or newer/);

    // The policy alone: nothing of the webhook (no Deployment, Service,
    // webhook configuration, certificates, RBAC, test pod) comes with it.
    const whole = await runCommand(helm, [
      ...['template', 'chart', 'charts/prestop-injector', '--namespace', 'chart-system'],
      ...['--kube-version', cp.minorVersion, '--set', 'mode=policy'],
      ...['--set', 'image.repository=example/x', '--set', 'metrics.prometheusRule.enabled=true'],
    ]);
    assert.equal(whole.code, 0, whole.stderr);
    const kinds = parseAllDocuments(whole.stdout)
      .map((d) => (d.toJS() as Json | null)?.['kind'])
      .filter((kind) => kind !== undefined);
    assert.deepEqual(kinds, [
      'ConfigMap',
      'MutatingAdmissionPolicy',
      'MutatingAdmissionPolicyBinding',
    ]);

    const rendered = await render(cp.minorVersion, [
      '--set',
      'config.helperSidecars={log-shipper}',
    ]);
    assert.equal(rendered.code, 0, rendered.stderr);
    const [params, policy, binding] = parseAllDocuments(rendered.stdout).map(
      (d) => d.toJS() as Json,
    ) as [Json, Json, Json];
    assert.deepEqual(
      policy['spec'],
      admissionPolicy({ name: 'x', systemNamespaces: SYSTEM_NAMESPACES })['spec'],
    );
    // The chart's defaults are serve's: the ConfigMap is the one the CLI renders.
    const config = configFor([
      '--helper-sidecars',
      'log-shipper',
      '--own-namespace',
      'chart-system',
    ]);
    assert.deepEqual(
      params['data'],
      policyParams(config.defaults, config.planner, { name: 'x', namespace: 'x' })['data'],
    );

    // Installed, it injects a pod in a namespace of its own as the webhook would.
    await createNamespace(api, 'chart-system', {}, {});
    await createNamespace(api, 'chart-apps', {}, { [Annotation.inject]: 'enabled' });
    namespaceAnnotations.set('chart-apps', { [Annotation.inject]: 'enabled' });
    for (const object of [params, policy, binding]) await apply(api, object);
    const probe: Json = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { generateName: 'chart-' },
      spec: {
        containers: [
          { name: 'app', image: 'example/app:1' },
          { name: 'log-shipper', image: 'example/log-shipper:1' },
        ],
      },
    };
    const admit = webhookAdmission(config, cp.minorVersion, namespaceAnnotations);
    const received = await dryRunCreate(api, 'plain', probe);
    const { answer } = await webhookAnswer(admit, 'chart-apps', received.body);
    const expected = withoutIdentity((await dryRunCreate(api, 'plain', asInput(answer))).body);
    await waitFor(
      "the chart's policy to answer",
      30_000,
      async () => {
        const stored = await dryRunCreate(api, 'chart-apps', probe);
        return isDeepStrictEqual(withoutIdentity(stored.body), expected);
      },
      100,
    );
  });
});
