// The webhook answers a pod from an earlier one with the same plan key. That
// is only right if the key holds everything the answer depends on. These
// tests change random fields of random pods (any field, anywhere: values,
// types, keys added, removed and reordered) and check that whenever the key
// stays the same, the answer does too, byte for byte; and that the same
// check catches a key that leaves out a single fact.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Annotation, ForeignAnnotation } from '../../src/core/annotations.ts';
import { capabilitiesFor, parseKubeVersion } from '../../src/core/capabilities.ts';
import { planKey, podKey } from '../../src/core/plan-key.ts';
import { EXIT_ON_ZERO_ENV } from '../../src/core/planner.ts';
import { BUILTIN_DEFAULTS } from '../../src/core/policy.ts';
import { ISTIO_DRAIN_ENV } from '../../src/core/sidecars.ts';
import type { PodLike } from '../../src/core/types.ts';
import type { AdmissionRequest } from '../../src/webhook/admission.ts';
import {
  createAdmissionHandler,
  type AdmissionEnvironment,
  type AdmissionResult,
} from '../../src/webhook/handler.ts';
import { istioPod, optedOutPod, plainPod } from '../bench/reviews.ts';
import { annotations, arbitraryPod, kubeVersion } from '../support/arbitraries.ts';

const RUNS = Number(process.env['PROPERTY_RUNS'] ?? 400);

interface Situation {
  pod: PodLike;
  kube: string | null;
  namespace: Record<string, string> | undefined;
}

function environment(situation: { current: Situation }): AdmissionEnvironment {
  // One capabilities object per version, as the server keeps it.
  const byVersion = new Map<string | null, ReturnType<typeof capabilitiesFor>>();
  return {
    defaults: { ...BUILTIN_DEFAULTS, inject: true },
    planner: { distrolessPatterns: ['static'], helperSidecars: ['log-shipper', 'fluent-bit'] },
    capabilities: () => {
      const kube = situation.current.kube;
      if (!byVersion.has(kube)) byVersion.set(kube, capabilitiesFor(parseKubeVersion(kube)));
      return byVersion.get(kube)!;
    },
    namespaceAnnotations: async () => situation.current.namespace,
    excludedNamespaces: new Set(),
  };
}

function request(pod: PodLike, uid: string): AdmissionRequest {
  return {
    apiVersion: 'admission.k8s.io/v1',
    uid,
    kind: { group: '', version: 'v1', kind: 'Pod' },
    operation: 'CREATE',
    namespace: 'shop',
    name: '',
    object: pod,
    dryRun: false,
  };
}

/** Everything an admission gives back, as JSON: the review and what is logged and counted. */
function wire(result: AdmissionResult): string {
  return JSON.stringify({ body: result.body.toString(), summary: result.summary });
}

/** A fresh plan, nothing kept. */
async function answerAfresh(situation: Situation, uid = 'u-1'): Promise<string> {
  const handle = createAdmissionHandler(environment({ current: situation }), 0);
  return wire(await handle(request(structuredClone(situation.pod), uid)));
}

type KeyOf = (situation: Situation) => string | null;

/** The webhook's key: the pod's, the namespace's settings and the capabilities it plans for. */
const webhookKey: KeyOf = ({ pod, kube, namespace }) =>
  planKey(pod, namespace, capabilitiesFor(parseKubeVersion(kube)));

// Values that matter somewhere in a pod, and some that matter nowhere.
const VALUES: unknown[] = [
  'istio-proxy',
  'linkerd-proxy',
  'log-shipper',
  'app',
  'web',
  'Always',
  'Never',
  'OnFailure',
  'enabled',
  'disabled',
  'drain',
  'sleep',
  'app,web',
  '0',
  '5',
  '45',
  'x',
  '',
  'docker.io/istio/proxyv2:1.27.1-distroless',
  'docker.io/istio/proxyv2:1.11.2',
  'gcr.io/distroless/base',
  'example/static-thing:1',
  'nginx:1.27',
  '{"terminationDrainDuration":"12s"}',
  ISTIO_DRAIN_ENV,
  EXIT_ON_ZERO_ENV,
  0,
  1,
  5,
  30,
  45,
  1337,
  true,
  false,
  null,
  {},
  [],
  { preStop: { sleep: { seconds: 3 } } },
  { postStart: { exec: { command: ['true'] } } },
  [{ name: ISTIO_DRAIN_ENV, value: '9' }],
  [{ name: EXIT_ON_ZERO_ENV, value: 'true' }],
  { name: ISTIO_DRAIN_ENV, value: '9' },
  { name: EXIT_ON_ZERO_ENV, value: 'true' },
  { name: 'OTHER', value: '1' },
  { runAsUser: 4242 },
  4242,
];

type Json = Record<string, unknown> | unknown[];
const isContainer = (v: unknown): v is Json => typeof v === 'object' && v !== null;
type Path = readonly (string | number)[];

/** Every value in `root` with its path. */
function paths(root: unknown, at: Path = []): Path[] {
  const found: Path[] = [at];
  if (Array.isArray(root)) root.forEach((child, i) => found.push(...paths(child, [...at, i])));
  else if (isContainer(root))
    for (const [k, child] of Object.entries(root)) found.push(...paths(child, [...at, k]));
  return found;
}

const HANDLER = { exec: { command: ['true'] } };
const IMAGES = [
  'docker.io/istio/proxyv2:1.27.1-distroless',
  'docker.io/istio/proxyv2:1.27.1',
  'docker.io/istio/proxyv2:1.11.2',
  'gcr.io/distroless/base',
  'example/static-thing:1',
  'nginx:1.27',
];
const VARIABLES = [
  { name: ISTIO_DRAIN_ENV, value: '9' },
  { name: EXIT_ON_ZERO_ENV, value: 'true' },
  { name: 'OTHER', value: '1' },
];
const SETTING_VALUES = [
  'enabled',
  'disabled',
  'sleep',
  'drain',
  '0',
  '5',
  '45',
  'x',
  'app',
  'web,app',
];

// Fields the planner reads, where an edit is most likely to matter, each
// with values that matter there; "*" is any element of a list, "-" a new one
// at its end. Blind edits (any path, any value) look for what this list
// does not know of.
const FIELDS: readonly { path: Path; values: readonly unknown[] }[] = [
  { path: ['metadata'], values: [{}] },
  { path: ['metadata', 'annotations'], values: [{}] },
  ...[...Object.values(Annotation), 'example.com/x'].map((key) => ({
    path: ['metadata', 'annotations', key],
    values: SETTING_VALUES,
  })),
  {
    path: ['metadata', 'annotations', ForeignAnnotation.istioProxyConfig],
    values: ['{"terminationDrainDuration":"12s"}', 'terminationDrainDuration: 2s', 'x'],
  },
  { path: ['spec', 'terminationGracePeriodSeconds'], values: [0, 1, 5, 30, 45] },
  { path: ['spec', 'hostNetwork'], values: [true, false] },
  { path: ['spec', 'restartPolicy'], values: ['Always', 'Never', 'OnFailure'] },
  { path: ['spec', 'initContainers'], values: [[]] },
  ...['containers', 'initContainers'].flatMap((list) => [
    {
      path: ['spec', list, '-'],
      values: [
        { name: 'istio-proxy', image: IMAGES[0] },
        { name: 'linkerd-proxy', image: 'cr.l5d.io/linkerd/proxy:stable-2.20' },
        { name: 'web', image: 'nginx:1.27', restartPolicy: 'Always' },
      ],
    },
    {
      path: ['spec', list, '*', 'name'],
      values: ['istio-proxy', 'linkerd-proxy', 'log-shipper', 'app', 'web'],
    },
    { path: ['spec', list, '*', 'image'], values: IMAGES },
    { path: ['spec', list, '*', 'restartPolicy'], values: ['Always', 'Never'] },
    { path: ['spec', list, '*', 'lifecycle'], values: [{}, { postStart: HANDLER }] },
    { path: ['spec', list, '*', 'lifecycle', 'preStop'], values: [HANDLER] },
    { path: ['spec', list, '*', 'lifecycle', 'postStart'], values: [HANDLER] },
    { path: ['spec', list, '*', 'securityContext'], values: [{}] },
    { path: ['spec', list, '*', 'securityContext', 'runAsUser'], values: [0, 1337, 4242] },
    { path: ['spec', list, '*', 'env'], values: [[], [VARIABLES[0]]] },
    { path: ['spec', list, '*', 'env', '-'], values: VARIABLES },
    { path: ['spec', list, '*', 'env', '*'], values: VARIABLES },
    {
      path: ['spec', list, '*', 'env', '*', 'name'],
      values: VARIABLES.map((v) => v.name),
    },
    { path: ['spec', list, '*', 'env', '*', 'value'], values: ['5', '9', 'true', 'soon'] },
    { path: ['spec', list, '*', 'ports'], values: [[]] },
  ]),
];

/** Objects whose key order an edit may reverse. */
const ORDERED: readonly Path[] = [
  [],
  ['spec'],
  ['metadata'],
  ['spec', 'containers', '*'],
  ['spec', 'initContainers', '*'],
];

const edit = fc.record({
  what: fc.constantFrom('set', 'set', 'delete', 'reverse keys', 'kube', 'namespace'),
  blind: fc.boolean(),
  field: fc.constantFrom(...FIELDS),
  ordered: fc.constantFrom(...ORDERED),
  where: fc.nat(),
  pick: fc.nat(),
  anyValue: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...VALUES) },
    { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  ),
  kube: kubeVersion,
  namespace: fc.option(annotations, { nil: undefined }),
});

type Edit = typeof edit extends fc.Arbitrary<infer T> ? T : never;

/** The parent and key `template` names in `root`, making what is missing; null where it cannot. */
function resolve(
  root: Json,
  template: Path,
  where: number,
): { parent: Json; key: string | number } | null {
  let node: Json = root;
  let pick = where;
  for (let i = 0; i < template.length; i++) {
    let step = template[i]!;
    if (step === '*' || step === '-') {
      if (!Array.isArray(node)) return null;
      if (step === '-') step = node.length;
      else if (node.length === 0) return null;
      else {
        step = pick % node.length;
        pick = Math.floor(pick / 7);
      }
    } else if (Array.isArray(node) !== (typeof step === 'number')) return null;
    if (i === template.length - 1) return { parent: node, key: step };
    const next: unknown = (node as Record<string | number, unknown>)[step];
    if (next === undefined) {
      const made = template[i + 1] === '*' || template[i + 1] === '-' ? [] : {};
      (node as Record<string | number, unknown>)[step] = made;
      node = made;
    } else if (isContainer(next)) node = next;
    else return null;
  }
  return null;
}

function reverseKeys(object: Record<string, unknown>): void {
  const entries = Object.entries(object).reverse();
  for (const [k] of entries) delete object[k];
  for (const [k, v] of entries) object[k] = v;
}

/** `situation` with the edits made, on copies. */
function edited(situation: Situation, edits: readonly Edit[]): Situation {
  const next: Situation = { ...situation, pod: structuredClone(situation.pod) };
  for (const change of edits) {
    if (change.what === 'kube') next.kube = change.kube;
    else if (change.what === 'namespace') next.namespace = change.namespace;
    else if (change.what === 'reverse keys') {
      const place =
        change.ordered.length === 0 ? null : resolve(next.pod, change.ordered, change.where);
      const target =
        place === null ? next.pod : (place.parent as Record<string | number, unknown>)[place.key];
      if (isContainer(target) && !Array.isArray(target)) reverseKeys(target);
    } else {
      let place;
      let value: unknown;
      if (change.blind) {
        const all = paths(next.pod).filter((path) => path.length > 0);
        place = resolve(next.pod, all[change.where % all.length]!, 0);
        value = change.anyValue;
      } else {
        place = resolve(next.pod, change.field.path, change.where);
        value = change.field.values[change.pick % change.field.values.length];
      }
      if (place === null) continue;
      const { parent, key } = place;
      if (change.what === 'set')
        (parent as Record<string | number, unknown>)[key] = structuredClone(value);
      else if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key as string];
    }
  }
  return next;
}

/** An app and an Istio proxy whose env and lifecycle the planner reads and writes. */
const proxyPod: fc.Arbitrary<PodLike> = fc
  .record({
    tag: fc.constantFrom('1.11.2', '1.27.1', '1.27.1-distroless', '1.22.0-distroless'),
    drain: fc.constantFrom(undefined, '5', '9', 'soon'),
    exitOnZero: fc.boolean(),
    postStart: fc.boolean(),
    lifecycleFirst: fc.boolean(),
    native: fc.boolean(),
    uid: fc.constantFrom(undefined, 1337, 4242),
  })
  .map((shape) => {
    const env = [
      { name: 'PROXY_CONFIG', value: '{}' },
      ...(shape.drain === undefined ? [] : [{ name: ISTIO_DRAIN_ENV, value: shape.drain }]),
      ...(shape.exitOnZero ? [{ name: EXIT_ON_ZERO_ENV, value: 'true' }] : []),
    ];
    const lifecycle = shape.postStart ? { postStart: { exec: { command: ['true'] } } } : undefined;
    const proxy: Record<string, unknown> = { name: 'istio-proxy' };
    if (shape.lifecycleFirst && lifecycle !== undefined) proxy['lifecycle'] = lifecycle;
    proxy['image'] = `docker.io/istio/proxyv2:${shape.tag}`;
    proxy['env'] = env;
    if (!shape.lifecycleFirst && lifecycle !== undefined) proxy['lifecycle'] = lifecycle;
    if (shape.uid !== undefined) proxy['securityContext'] = { runAsUser: shape.uid };
    if (shape.native) proxy['restartPolicy'] = 'Always';
    const app = { name: 'app', image: 'example/app:1.0', env: [{ name: 'A', value: '1' }] };
    const spec = shape.native
      ? { initContainers: [proxy], containers: [app], terminationGracePeriodSeconds: 30 }
      : { containers: [app, proxy], terminationGracePeriodSeconds: 30 };
    return { apiVersion: 'v1', kind: 'Pod', metadata: { annotations: {} }, spec } as PodLike;
  });

// Pods of the benchmark's kinds too: an Istio pod has many fields the plan never reads.
const situation: fc.Arbitrary<Situation> = fc.record({
  pod: fc.oneof(
    { weight: 3, arbitrary: arbitraryPod },
    { weight: 2, arbitrary: proxyPod },
    { weight: 1, arbitrary: fc.constantFrom(istioPod(), plainPod(), optedOutPod()) },
  ),
  kube: kubeVersion,
  namespace: fc.option(annotations, { nil: undefined }),
});

interface Tally {
  sameKey: number;
  otherKey: number;
  noKey: number;
}

/** Same key, same answer, for a pod and its edited copies. */
function keyIsSound(keyOf: KeyOf, tally: Tally) {
  return fc.asyncProperty(
    situation,
    fc.array(edit, { minLength: 1, maxLength: 2 }),
    async (first, edits) => {
      const second = edited(first, edits);
      const [a, b] = [keyOf(first), keyOf(second)];
      if (a === null || b === null) {
        tally.noKey++;
        return;
      }
      if (a !== b) {
        tally.otherKey++;
        return;
      }
      tally.sameKey++;
      assert.equal(await answerAfresh(second), await answerAfresh(first));
    },
  );
}

describe('plan key', () => {
  it('same key, same answer: over random pods and random edits anywhere in them', async () => {
    const tally: Tally = { sameKey: 0, otherKey: 0, noKey: 0 };
    await fc.assert(keyIsSound(webhookKey, tally), { numRuns: RUNS * 10 });
    // The check has teeth only if both kinds of edit were common.
    assert.ok(tally.sameKey > RUNS, `edits that kept the key: ${JSON.stringify(tally)}`);
    assert.ok(tally.otherKey > RUNS / 2, `edits that changed the key: ${JSON.stringify(tally)}`);
  });

  it('the same check fails for a key that leaves out one fact', async () => {
    // Each of these drops something the answer depends on.
    const weakened: Record<string, KeyOf> = {
      'the image': (s) =>
        webhookKey({
          ...s,
          pod: {
            ...s.pod,
            spec: {
              ...s.pod.spec,
              containers: s.pod.spec.containers.map((c) => ({ ...c, image: 'x' })),
            },
          },
        }),
      'the grace period': (s) =>
        webhookKey({
          ...s,
          pod: { ...s.pod, spec: { ...s.pod.spec, terminationGracePeriodSeconds: 1 } },
        }),
      'the namespace': (s) => webhookKey({ ...s, namespace: undefined }),
      'the Kubernetes version': (s) => webhookKey({ ...s, kube: '1.33' }),
    };
    for (const [left, keyOf] of Object.entries(weakened)) {
      const result = await fc.check(keyIsSound(keyOf, { sameKey: 0, otherKey: 0, noKey: 0 }), {
        numRuns: RUNS * 5,
      });
      assert.ok(result.failed, `a key without ${left} was not caught`);
    }
  });

  it('a pod answered from memory gets exactly what planning it afresh gives', async () => {
    const state = { current: undefined as unknown as Situation };
    const handle = createAdmissionHandler(environment(state));
    let remembered = 0;
    await fc.assert(
      fc.asyncProperty(
        situation,
        fc.array(edit, { minLength: 1, maxLength: 2 }),
        async (first, edits) => {
          state.current = first;
          await handle(request(structuredClone(first.pod), 'first'));
          const second = edited(first, edits);
          state.current = second;
          const result = await handle(request(structuredClone(second.pod), 'second'));
          if (result.cache === 'hit') remembered++;
          assert.equal(wire(result), await answerAfresh(second, 'second'));
        },
      ),
      { numRuns: RUNS },
    );
    // About a quarter of the edits keep the key (91 to 120 of 400 seen); the
    // bound is far below that, so it catches a cache that never answers.
    assert.ok(remembered > RUNS / 10, `answers shared: ${remembered} of ${RUNS}`);
  });

  it('same key, same answer: every field of real pods, set to each of many values or removed', async () => {
    // Exhaustive where the random edits sample: each path of these pods in turn.
    const sweep: unknown[] = [
      'Never',
      'None',
      'Always',
      'IfNotPresent',
      'x',
      '',
      0,
      1,
      45,
      true,
      false,
      null,
      {},
      [],
    ];
    const pods = [
      istioPod(),
      plainPod(),
      optedOutPod(),
      ...fc.sample(proxyPod, { numRuns: 4, seed: 7 }),
    ];
    let checked = 0;
    for (const pod of pods) {
      for (const kube of ['1.28', '1.33']) {
        const first: Situation = { pod, kube, namespace: undefined };
        const key = webhookKey(first);
        const answer = await answerAfresh(first);
        for (const path of paths(pod).filter((p) => p.length > 0)) {
          for (const value of [...sweep, undefined]) {
            const copy = structuredClone(pod);
            const { parent, key: last } = resolve(copy, path, 0)!;
            if (value === undefined) {
              if (Array.isArray(parent)) parent.splice(last as number, 1);
              else delete parent[last as string];
            } else {
              (parent as Record<string | number, unknown>)[last] = structuredClone(value);
            }
            const second = { ...first, pod: copy };
            if (webhookKey(second) !== key) continue;
            checked++;
            assert.equal(
              await answerAfresh(second),
              answer,
              `${path.join('.')} = ${JSON.stringify(value)}`,
            );
          }
        }
      }
    }
    assert.ok(checked > 1000, `pods checked: ${checked}`);
  });

  it('holds each fact it is made of: pods differing in just that one get other answers', async () => {
    const proxy = (extra: Record<string, unknown> = {}) => ({
      name: 'istio-proxy',
      image: 'docker.io/istio/proxyv2:1.27.1',
      ...extra,
    });
    const distroless = (extra: Record<string, unknown> = {}) =>
      proxy({ image: 'docker.io/istio/proxyv2:1.27.1-distroless', ...extra });
    const app = { name: 'app', image: 'example/app:1' };
    const withSpec = (spec: Record<string, unknown>, metadata: unknown = { annotations: {} }) =>
      ({ metadata, spec: { terminationGracePeriodSeconds: 30, ...spec } }) as unknown as PodLike;
    const variable = (name: string, value = '1') => ({ name, value });
    const pairs: Record<string, [PodLike, PodLike]> = {
      'the length of the proxy env': [
        withSpec({ containers: [app, distroless({ env: [variable('A')] })] }),
        withSpec({ containers: [app, distroless({ env: [variable('A'), variable('B')] })] }),
      ],
      'the proxy drain variable': [
        withSpec({ containers: [app, proxy({ env: [variable(ISTIO_DRAIN_ENV, '5')] })] }),
        withSpec({ containers: [app, proxy({ env: [variable(ISTIO_DRAIN_ENV, '9')] })] }),
      ],
      'an exit-on-zero variable already set': [
        withSpec({ containers: [app, distroless({ env: [variable('A'), variable('B')] })] }),
        withSpec({
          containers: [app, distroless({ env: [variable('A'), variable(EXIT_ON_ZERO_ENV)] })],
        }),
      ],
      'the order of lifecycle and env': [
        withSpec({
          containers: [app, distroless({ lifecycle: { postStart: {} }, env: [variable('A')] })],
        }),
        withSpec({
          containers: [app, distroless({ env: [variable('A')], lifecycle: { postStart: {} } })],
        }),
      ],
      'a lifecycle': [
        withSpec({ containers: [app] }),
        withSpec({ containers: [{ ...app, lifecycle: { postStart: {} } }] }),
      ],
      'the proxy uid': [
        withSpec({ containers: [app, proxy({ securityContext: { runAsUser: 1337 } })] }),
        withSpec({ containers: [app, proxy({ securityContext: { runAsUser: 4242 } })] }),
      ],
      'a native sidecar': [
        withSpec({ initContainers: [proxy()], containers: [app] }),
        withSpec({ initContainers: [proxy({ restartPolicy: 'Always' })], containers: [app] }),
      ],
      hostNetwork: [
        withSpec({ containers: [app, proxy()] }),
        withSpec({ containers: [app, proxy()], hostNetwork: true }),
      ],
      'metadata before or after spec': [
        withSpec({ containers: [app] }),
        { spec: withSpec({ containers: [app] }).spec, metadata: { annotations: {} } },
      ],
      'the grace period before or after the containers': [
        {
          metadata: { annotations: {} },
          spec: { containers: [app], terminationGracePeriodSeconds: 30 },
        },
        {
          metadata: { annotations: {} },
          spec: { terminationGracePeriodSeconds: 30, containers: [app] },
        },
      ],
      'the Istio proxy config': [
        withSpec({ containers: [app, proxy()] }),
        withSpec(
          { containers: [app, proxy()] },
          {
            annotations: { [ForeignAnnotation.istioProxyConfig]: 'terminationDrainDuration: 12s' },
          },
        ),
      ],
      'a setting on the pod': [
        withSpec({ containers: [app] }),
        withSpec({ containers: [app] }, { annotations: { [Annotation.delaySeconds]: '20' } }),
      ],
      'the init containers': [
        withSpec({ containers: [app] }),
        withSpec({ initContainers: [proxy({ restartPolicy: 'Always' })], containers: [app] }),
      ],
      'a container name': [
        withSpec({ containers: [app, { name: 'web', image: 'x' }] }),
        withSpec({ containers: [app, { name: 'istio-proxy', image: 'x' }] }),
      ],
      "the pod's restart policy": [
        withSpec({ containers: [app], restartPolicy: 'Always' }),
        withSpec({ containers: [app], restartPolicy: 'Never' }),
      ],
      'the grace period': [
        withSpec({ containers: [app] }),
        withSpec({ containers: [app], terminationGracePeriodSeconds: 45 }),
      ],
      'where a name ends and an image begins': [
        withSpec({ containers: [{ name: 'ab', image: 'c' }] }),
        withSpec({ containers: [{ name: 'a', image: 'bc' }] }),
      ],
      'metadata at all': [
        { spec: withSpec({ containers: [app] }).spec, metadata: {} },
        { spec: withSpec({ containers: [app] }).spec },
      ],
      'annotations at all': [withSpec({ containers: [app] }, {}), withSpec({ containers: [app] })],
    };
    for (const [fact, [a, b]] of Object.entries(pairs)) {
      const situations = [a, b].map((pod) => ({ pod, kube: '1.33', namespace: undefined }));
      const [first, second] = await Promise.all(situations.map((s) => answerAfresh(s)));
      assert.notEqual(first, second, `${fact}: the answers differ`);
      const [keyA, keyB] = situations.map(webhookKey);
      assert.ok(keyA !== null && keyB !== null, `${fact}: both pods have keys`);
      assert.notEqual(keyA, keyB, `${fact}: the keys differ`);
    }
  });

  it('has no key for a pod with an earlier pass to undo, or of an odd shape', () => {
    const pod = istioPod();
    assert.notEqual(podKey(pod), null);
    const withStatus = structuredClone(pod);
    withStatus.metadata!.annotations![Annotation.status] = '{"v":1}';
    assert.equal(podKey(withStatus), null);
    const oddName = structuredClone(pod);
    (oddName.spec.containers[0] as unknown as Record<string, unknown>)['name'] = 7;
    assert.equal(podKey(oddName), null);
    assert.equal(podKey({ spec: { containers: {} } }), null);
    assert.equal(podKey(null), null);
  });

  it('is the same for replicas of one template: uid, name and labels are left out', () => {
    const a = istioPod();
    const b = structuredClone(a);
    b.metadata!.name = 'checkout-7d4b9c-x2x9z';
    b.metadata!.labels = { ...b.metadata!.labels, 'pod-template-hash': 'other' };
    assert.equal(podKey(a), podKey(b));
  });
});
