// fast-check generators of pods as they reach the webhook: several app
// containers, init containers and native sidecars, mesh proxies (as root,
// with a mesh-wide PROXY_CONFIG), existing hooks of every handler type, odd
// ports, random (valid and invalid) annotations, hostNetwork and batch
// restart policies, and the nulls Helm and kustomize write for empty fields.

import fc from 'fast-check';
import { Annotation } from '../../src/core/annotations.ts';
import type { Container, LifecycleHandler, PodLike } from '../../src/core/types.ts';

const NAMES = ['app', 'web', 'worker', 'cache', 'log-shipper', 'metrics', 'api'];

const handler: fc.Arbitrary<LifecycleHandler> = fc.oneof(
  fc.record({
    exec: fc.record({
      command: fc.array(fc.string({ maxLength: 12 }), { minLength: 1, maxLength: 3 }),
    }),
  }),
  fc.record({
    httpGet: fc.record({
      path: fc.constantFrom('/quit', '/shutdown'),
      port: fc.integer({ min: 1, max: 65535 }),
    }),
  }),
  fc.record({ tcpSocket: fc.record({ port: fc.integer({ min: 1, max: 65535 }) }) }),
  fc.record({ sleep: fc.record({ seconds: fc.integer({ min: 1, max: 30 }) }) }),
);

const image = fc.constantFrom(
  'example/app:1.0',
  'nginx:1.27',
  'gcr.io/distroless/static-debian12:nonroot',
  'registry.example/team/app@sha256:0123abcd',
  'busybox',
);

const port = fc.record(
  {
    name: fc.constantFrom('http', 'grpc', 'metrics', 'h'),
    containerPort: fc.integer({ min: 1, max: 65535 }),
    protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'),
  },
  { requiredKeys: ['containerPort'] },
);

function appContainer(name: string): fc.Arbitrary<Container> {
  return fc.record(
    {
      name: fc.constant(name),
      image,
      ports: fc.array(port, { maxLength: 3 }),
      env: fc.array(
        fc.record({ name: fc.constantFrom('A', 'B', 'TOKEN'), value: fc.string({ maxLength: 8 }) }),
        { maxLength: 2 },
      ),
      lifecycle: fc.record({ preStop: handler, postStart: handler }, { requiredKeys: [] }),
      securityContext: fc.record({ runAsUser: fc.integer({ min: 0, max: 65535 }) }),
    },
    { requiredKeys: ['name', 'image'] },
  );
}

const istioTag = fc.constantFrom('1.11.2', '1.22.0', '1.27.1', '1.27.1-distroless', 'latest');

const classicProxy: fc.Arbitrary<Container> = fc.oneof(
  fc.record(
    {
      name: fc.constant('istio-proxy'),
      image: istioTag.map((t) => `docker.io/istio/proxyv2:${t}`),
      securityContext: fc.record({ runAsUser: fc.constantFrom(1337, 4242, 0) }),
      lifecycle: fc.record({ preStop: handler }),
      env: fc
        .option(fc.constantFrom('5s', '30s', '1m30s', 'soon'), { nil: undefined })
        .map((drain) => [
          { name: 'ISTIO_META_MESH_ID', value: 'm' },
          ...(drain === undefined
            ? []
            : [
                {
                  name: 'PROXY_CONFIG',
                  value: JSON.stringify({ terminationDrainDuration: drain, drainDuration: drain }),
                },
              ]),
        ]),
    },
    { requiredKeys: ['name', 'image'] },
  ),
  fc.record(
    {
      name: fc.constant('linkerd-proxy'),
      image: fc.constant('cr.l5d.io/linkerd/proxy:edge-25.1.1'),
      lifecycle: fc.record({ preStop: handler }),
    },
    { requiredKeys: ['name', 'image'] },
  ),
);

const nativeSidecar: fc.Arbitrary<Container> = fc.oneof(
  istioTag.map((t) => ({
    name: 'istio-proxy',
    image: `docker.io/istio/proxyv2:${t}`,
    restartPolicy: 'Always',
    lifecycle: {
      preStop: {
        exec: { command: ['pilot-agent', 'request', '--debug-port=15020', 'POST', 'drain'] },
      },
    },
  })),
  fc.constant({
    name: 'linkerd-proxy',
    image: 'cr.l5d.io/linkerd/proxy:stable-2.20',
    restartPolicy: 'Always',
  }),
  fc.constant({ name: 'fluent-bit', image: 'fluent/fluent-bit:3', restartPolicy: 'Always' }),
);

const annotationValue = fc.oneof(
  fc.constantFrom(
    'enabled',
    'disabled',
    'sleep',
    'drain',
    '0',
    '3',
    '10',
    '3600',
    '3601',
    '-1',
    'ten',
    '',
    ' 7 ',
    'app,web',
    'ghost',
    'Bad_Name',
  ),
  fc.string({ maxLength: 10 }),
);

export const annotations: fc.Arbitrary<Record<string, string>> = fc.dictionary(
  fc.constantFrom(
    Annotation.inject,
    Annotation.mode,
    Annotation.delaySeconds,
    Annotation.drainTimeoutSeconds,
    Annotation.drainQuietSeconds,
    Annotation.containers,
    Annotation.sidecars,
    'proxy.istio.io/config',
    'example.com/other',
  ),
  annotationValue,
  { maxKeys: 5, noNullPrototype: true },
);

export const arbitraryPod: fc.Arbitrary<PodLike> = fc
  .record({
    appNames: fc.uniqueArray(fc.constantFrom(...NAMES), { minLength: 1, maxLength: 4 }),
    proxy: fc.option(classicProxy, { nil: undefined }),
    natives: fc.uniqueArray(nativeSidecar, { maxLength: 2, selector: (c) => c.name }),
    plainInit: fc.boolean(),
    hostNetwork: fc.option(fc.boolean(), { nil: undefined }),
    restartPolicy: fc.constantFrom('Always', 'Always', 'Always', 'OnFailure', 'Never', undefined),
    grace: fc.option(fc.integer({ min: 0, max: 600 }), { nil: undefined }),
    annotations,
    /** Fields written as null, as `helm template` and kustomize do for empty ones. */
    nulls: fc.subarray(['annotations', 'labels', 'initContainers', 'grace', 'lifecycle', 'env']),
  })
  .chain((shape) =>
    fc.tuple(...shape.appNames.map(appContainer)).map((apps): PodLike => {
      const containers = [...apps];
      if (shape.proxy !== undefined) containers.push(shape.proxy);
      const initContainers = [
        ...(shape.plainInit ? [{ name: 'migrate', image: 'example/migrate:1' }] : []),
        ...shape.natives.filter((n) => n.name !== shape.proxy?.name),
      ];
      const spec: PodLike['spec'] = { containers };
      if (initContainers.length > 0) spec.initContainers = initContainers;
      if (shape.hostNetwork !== undefined) spec.hostNetwork = shape.hostNetwork;
      if (shape.restartPolicy !== undefined) spec.restartPolicy = shape.restartPolicy;
      if (shape.grace !== undefined) spec.terminationGracePeriodSeconds = shape.grace;
      const nulls = new Set(shape.nulls);
      if (nulls.has('initContainers') && spec.initContainers === undefined) {
        spec.initContainers = null as unknown as [];
      }
      if (nulls.has('grace') && spec.terminationGracePeriodSeconds === undefined) {
        spec.terminationGracePeriodSeconds = null as unknown as number;
      }
      for (const app of apps) {
        if (nulls.has('lifecycle') && app.lifecycle === undefined) app.lifecycle = null as never;
        if (nulls.has('env') && app.env !== undefined && app.env.length === 0)
          app.env = null as never;
      }
      const pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          generateName: 'gen-',
          namespace: 'ns',
          labels: nulls.has('labels') ? null : { app: 'x' },
          annotations:
            nulls.has('annotations') && Object.keys(shape.annotations).length === 0
              ? null
              : shape.annotations,
        },
        spec,
      };
      // As the webhook receives it: parsed JSON, plain objects only.
      return JSON.parse(JSON.stringify(pod)) as PodLike;
    }),
  );

export const kubeVersion = fc.constantFrom(null, '1.28', '1.29', '1.30', '1.33', '1.37');
