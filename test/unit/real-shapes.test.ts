// Pods of the shapes real manifests and real meshes have, each built here
// in the shape it was seen in (Helm and kustomize output, Istio's and
// Linkerd's injected pods): nulls, proxies running as root or as the app,
// mesh-wide proxy config, proxy hooks of the user's, Linkerd and Istio
// native timing, gateways, "die at once" pods, shell-less images. Each is
// planned, explained, and where it applies admitted through the webhook.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fastJsonPatch from 'fast-json-patch';
import { Annotation } from '../../src/core/annotations.ts';
import { capabilitiesFor, parseKubeVersion, uniformVersions } from '../../src/core/capabilities.ts';
import { BUILTIN_DEFAULTS } from '../../src/core/policy.ts';
import { meshAddedAtAdmission } from '../../src/core/sidecars.ts';
import { podTimeline } from '../../src/core/timeline.ts';
import type { Container, PodLike } from '../../src/core/types.ts';
import { createPodAdmission, type AdmissionEnvironment } from '../../src/webhook/admission.ts';
import type { AdmissionRequest } from '../../src/webhook/review.ts';
import { assertInvariants, container, containerOf, pod, run, type Run } from '../support/pods.ts';

/** The pod as JSON would carry it: nulls and all. */
function parsed(text: string): PodLike {
  return JSON.parse(text) as PodLike;
}

function admit(object: unknown, kube = '1.33'): { patched: unknown; warnings: string[] } {
  const env: AdmissionEnvironment = {
    defaults: { ...BUILTIN_DEFAULTS, inject: true },
    planner: { distrolessPatterns: [], helperSidecars: [] },
    capabilities: () => capabilitiesFor(uniformVersions(parseKubeVersion(kube))),
    namespaceAnnotations: () => undefined,
    excludedNamespaces: new Set(),
  };
  const request: AdmissionRequest = {
    apiVersion: 'admission.k8s.io/v1',
    uid: 'u-1',
    kind: { group: '', version: 'v1', kind: 'Pod' },
    operation: 'CREATE',
    namespace: 'shop',
    name: '',
    object,
    dryRun: false,
  };
  const result = createPodAdmission(env)(request);
  assert.ok(!(result instanceof Promise));
  assert.equal(result.response.allowed, true);
  assert.equal(result.response.uid, 'u-1');
  assert.notEqual(result.summary.outcome, 'error', result.summary.reason);
  const ops =
    result.response.patch === undefined
      ? []
      : (JSON.parse(Buffer.from(result.response.patch, 'base64').toString()) as []);
  const patched = fastJsonPatch.applyPatch(structuredClone(object), ops, true, false).newDocument;
  return { patched, warnings: result.response.warnings ?? [] };
}

/** The timeline's problems for a planned pod, from the planner's own decisions. */
function problemsAfter(input: PodLike, options: Run = {}): string[] {
  const mutation = run(input, options);
  return podTimeline(mutation.pod, mutation.decisions, {
    distrolessPatterns: [],
    helperSidecars: options.helperSidecars ?? [],
  }).problems;
}

function istioProxy(extra: Partial<Container> = {}): Container {
  return {
    name: 'istio-proxy',
    image: 'docker.io/istio/proxyv2:1.27.1',
    env: [{ name: 'ISTIO_META_MESH_ID', value: 'cluster.local' }],
    securityContext: { runAsUser: 1337, runAsGroup: 1337 },
    ...extra,
  };
}

const ISTIO_STATUS = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };

describe('null is absent', () => {
  // As `helm template` and kustomize write empty maps and lists.
  const helmRender = `{
    "apiVersion": "v1", "kind": "Pod",
    "metadata": { "name": "web", "annotations": null, "labels": null },
    "spec": {
      "initContainers": null,
      "terminationGracePeriodSeconds": null,
      "containers": [
        { "name": "web", "image": "nginx:1.27", "lifecycle": null, "env": null },
        { "name": "worker", "image": "nginx:1.27", "lifecycle": { "preStop": null, "postStart": null } }
      ]
    }
  }`;

  it('in the planner: each null field is planned as if it were not there', () => {
    const input = parsed(helmRender);
    const result = run(input);
    assert.equal(result.outcome, 'mutated');
    assert.deepEqual(containerOf(result.pod, 'web').lifecycle, {
      preStop: { sleep: { seconds: 10 } },
    });
    assert.deepEqual(containerOf(result.pod, 'worker').lifecycle, {
      preStop: { sleep: { seconds: 10 } },
      postStart: null,
    });
    // The default 30 s, plus the delay.
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 40);
    assert.equal(containerOf(result.pod, 'web').env, null, 'untouched nulls stay null');
    assert.equal(result.pod.metadata?.labels, null);
    assertInvariants(input, result);
  });

  it('through the webhook: admitted with a patch that applies to the object as sent', () => {
    const { patched } = admit(parsed(helmRender));
    const web = containerOf(patched as PodLike, 'web');
    assert.deepEqual(web.lifecycle, { preStop: { sleep: { seconds: 10 } } });
    assert.equal((patched as PodLike).spec.terminationGracePeriodSeconds, 40);
  });

  it('an Istio proxy whose env is null still gets the env it needs', () => {
    const input = pod(
      [container('app'), istioProxy({ image: 'docker.io/istio/proxyv2:1.27.1-distroless' })],
      {},
      ISTIO_STATUS,
    );
    containerOf(input, 'istio-proxy').env = null as unknown as [];
    const result = run(input, { kube: '1.33' });
    assert.deepEqual(containerOf(result.pod, 'istio-proxy').env, [
      { name: 'EXIT_ON_ZERO_ACTIVE_CONNECTIONS', value: 'true' },
    ]);
    assert.deepEqual(run(result.pod).pod, result.pod, 'a second pass changes nothing');
  });

  it('a non-string annotation value (an unquoted YAML number) is refused with a warning', () => {
    const input = pod([container('app')]);
    input.metadata!.annotations = { [Annotation.delaySeconds]: 20 as unknown as string };
    const result = run(input);
    assert.match(result.messages.join('\n'), /delay-seconds: expected a string/);
    assert.deepEqual(containerOf(result.pod, 'app').lifecycle?.preStop, { sleep: { seconds: 10 } });
  });
});

describe('Istio: a proxy whose sockets cannot be told from the app’s', () => {
  for (const [what, proxy, app] of [
    [
      'runs as uid 0 (TPROXY interception)',
      istioProxy({ securityContext: { runAsUser: 0 } }),
      container('app'),
    ],
    [
      'runs as the app’s uid',
      istioProxy(),
      container('app', { securityContext: { runAsUser: 1337 } }),
    ],
  ] as const) {
    it(`${what}: held a fixed time through the app’s latest exit, with a warning`, () => {
      const input = pod([app, proxy], {}, ISTIO_STATUS);
      const result = run(input, { kube: '1.33' });
      // App: delay 10 + its 30 s; the proxy holds all of it, then drains 5 s.
      assert.deepEqual(containerOf(result.pod, 'istio-proxy').lifecycle?.preStop, {
        sleep: { seconds: 40 },
      });
      assert.equal(result.pod.spec.terminationGracePeriodSeconds, 45);
      assert.match(result.warnings.join('\n'), /cannot be told from the app's.*fixed 40s/);
      assert.deepEqual(problemsAfter(input, { kube: '1.33' }), []);
      const old = run(input, { kube: '1.29' });
      assert.deepEqual(containerOf(old.pod, 'istio-proxy').lifecycle?.preStop, {
        exec: { command: ['/bin/sh', '-c', 'sleep 40'] },
      });
      assertInvariants(input, result, { kube: '1.33' });
    });
  }

  it('takes the proxy’s uid from the pod’s securityContext when the container sets none', () => {
    const input = pod(
      [container('app'), istioProxy({ securityContext: {} })],
      { spec: { securityContext: { runAsUser: 0 } } },
      ISTIO_STATUS,
    );
    assert.deepEqual(containerOf(run(input).pod, 'istio-proxy').lifecycle?.preStop, {
      sleep: { seconds: 40 },
    });
  });
});

describe('Istio: the drain durations as pilot-agent resolves them', () => {
  const meshWide = (config: object) =>
    istioProxy({
      env: [{ name: 'PROXY_CONFIG', value: JSON.stringify(config) }],
    });

  it('reads a mesh-wide terminationDrainDuration from PROXY_CONFIG', () => {
    const input = pod(
      [
        container('app'),
        meshWide({ terminationDrainDuration: '30s', discoveryAddress: 'x:15012' }),
      ],
      {},
      ISTIO_STATUS,
    );
    // 30 s of the app + 10 s delay + the proxy's 30 s drain.
    assert.equal(run(input).pod.spec.terminationGracePeriodSeconds, 70);
  });

  it('lets the pod’s proxy.istio.io/config (YAML or JSON) win over it', () => {
    for (const annotation of [
      'terminationDrainDuration: 12s\n',
      '{"terminationDrainDuration":"12s"}',
    ]) {
      const input = pod(
        [container('app'), meshWide({ terminationDrainDuration: '30s' })],
        {},
        {
          ...ISTIO_STATUS,
          'proxy.istio.io/config': annotation,
        },
      );
      assert.equal(run(input).pod.spec.terminationGracePeriodSeconds, 52, annotation);
    }
  });

  it('ignores TERMINATION_DRAIN_DURATION_SECONDS, which Istio dropped in 1.10', () => {
    const input = pod(
      [
        container('app'),
        istioProxy({ env: [{ name: 'TERMINATION_DRAIN_DURATION_SECONDS', value: '60' }] }),
      ],
      {},
      ISTIO_STATUS,
    );
    assert.equal(run(input).pod.spec.terminationGracePeriodSeconds, 45);
  });
});

describe('a proxy preStop the user already has', () => {
  it('Linkerd’s proxy-wait-before-exit: kept, the window without the proxy no longer than before, and said', () => {
    // What Linkerd renders for config.alpha.linkerd.io/proxy-wait-before-exit-seconds: 15.
    const linkerd = {
      name: 'linkerd-proxy',
      image: 'cr.l5d.io/linkerd/proxy:stable-2.14.10',
      securityContext: { runAsUser: 2102 },
      lifecycle: { preStop: { exec: { command: ['/bin/sleep', '15'] } } },
    };
    const input = pod([container('app'), linkerd]);
    const result = run(input);
    assert.deepEqual(containerOf(result.pod, 'linkerd-proxy').lifecycle, linkerd.lifecycle);
    assert.deepEqual(containerOf(result.pod, 'app').lifecycle?.preStop, { sleep: { seconds: 10 } });
    // Before: the proxy stops at 15 s, the app may serve until 30 s. Still 30 s.
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 30);
    assert.equal(result.warnings.length, 1);
    assert.match(
      result.warnings[0]!,
      /linkerd-proxy keeps its own preStop: it stops at 15s, while the app may still serve until 30s; .* the app keeps 20s after SIGTERM instead of 30s/,
    );
    // And --explain says so.
    assert.match(problemsAfter(input).join('\n'), /linkerd-proxy can be gone at 15s/);
    assertInvariants(input, result);
  });

  it('a proxy hook that outlasts the app changes nothing about the app’s time', () => {
    const linkerd = {
      name: 'linkerd-proxy',
      image: 'cr.l5d.io/linkerd/proxy:stable-2.14.10',
      lifecycle: { preStop: { exec: { command: ['/bin/sleep', '60'] } } },
    };
    // The proxy stops at 60 s; the app, delayed 10 s, is done by 40 s.
    const result = run(pod([container('app'), linkerd]));
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 40);
    assert.deepEqual(result.warnings, []);
  });
});

describe('Istio native sidecar', () => {
  const native = (drainDuration?: string): Container => ({
    ...istioProxy(
      drainDuration === undefined
        ? {}
        : { env: [{ name: 'PROXY_CONFIG', value: JSON.stringify({ drainDuration }) }] },
    ),
    restartPolicy: 'Always',
    lifecycle: {
      preStop: {
        exec: { command: ['pilot-agent', 'request', '--debug-port=15020', 'POST', 'drain'] },
      },
    },
  });

  it('--explain draws its drain from 0s and flags an app that takes traffic past drainDuration', () => {
    const ok = pod([container('app')], { spec: { initContainers: [native()] } }, ISTIO_STATUS);
    assert.deepEqual(problemsAfter(ok), []);
    const short = pod(
      [container('app')],
      { spec: { initContainers: [native('8s')] } },
      ISTIO_STATUS,
    );
    const result = run(short);
    assert.match(result.warnings.join('\n'), /accept new connections until 8s .* until 10s/);
    assert.match(problemsAfter(short).join('\n'), /accepts new connections only until 8s/);
  });
});

describe('Istio distroless below the sleep action', () => {
  it('gets only the env and no hold, and --explain does not say ok', () => {
    const input = pod(
      [container('app'), istioProxy({ image: 'docker.io/istio/proxyv2:1.22.0-distroless' })],
      {},
      ISTIO_STATUS,
    );
    const result = run(input, { kube: '1.29' });
    assert.equal(containerOf(result.pod, 'istio-proxy').lifecycle, undefined);
    assert.match(result.warnings.join('\n'), /not held/);
    const problems = problemsAfter(input, { kube: '1.29' });
    assert.match(
      problems.join('\n'),
      /istio-proxy can stop accepting new connections at 5s while app containers still take traffic until 10s/,
    );
  });
});

describe('not every istio-proxy is a sidecar', () => {
  it('an Istio gateway (istio-proxy alone, image auto) gets the app’s treatment', () => {
    const gateway = pod([
      {
        name: 'istio-proxy',
        image: 'auto',
        args: ['proxy', 'router'],
        securityContext: { runAsUser: 1337 },
      },
    ]);
    const result = run(gateway);
    assert.deepEqual(containerOf(result.pod, 'istio-proxy').lifecycle?.preStop, {
      sleep: { seconds: 10 },
    });
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 40);
    assert.deepEqual(
      result.decisions.map((d) => d.role),
      ['app'],
    );
  });
});

describe('terminationGracePeriodSeconds: 0 is the owner’s choice', () => {
  // Istio's curl and sleep samples: "die at once".
  const immediate = (annotations?: Record<string, string>) =>
    pod([container('sleep')], { spec: { terminationGracePeriodSeconds: 0 } }, annotations);

  it('is skipped with a reason, even in an opted-in namespace', () => {
    const result = run(immediate(), { namespace: { [Annotation.inject]: 'enabled' } });
    assert.equal(result.outcome, 'skipped');
    assert.match(result.reason ?? '', /terminationGracePeriodSeconds is 0/);
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 0);
  });

  it('is injected when the pod itself opts in', () => {
    const result = run(immediate({ [Annotation.inject]: 'enabled' }));
    assert.equal(result.outcome, 'mutated');
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 10);
  });
});

describe('shell-less images not named distroless', () => {
  for (const image of [
    'cgr.dev/chainguard/nginx:latest',
    'registry.k8s.io/coredns/coredns:v1.12.0',
  ]) {
    it(`${image}: no /bin/sh hook below 1.30, and sleep instead of drain`, () => {
      const input = pod([container('app', { image })], {}, { [Annotation.mode]: 'drain' });
      const old = run(input, { kube: '1.29' });
      assert.equal(containerOf(old.pod, 'app').lifecycle, undefined);
      assert.match(old.warnings.join('\n'), /drain needs a shell/);
      assert.match(old.warnings.join('\n'), /no hook, the image has no sleep/);
      const modern = run(input, { kube: '1.33' });
      assert.deepEqual(containerOf(modern.pod, 'app').lifecycle?.preStop, {
        sleep: { seconds: 10 },
      });
    });
  }
});

describe('pods a mesh will inject at admission', () => {
  it('are recognised from the pod or its namespace, and not once the proxy is there', () => {
    const app = () => pod([container('app')]);
    const labelled = app();
    labelled.metadata!.labels = { 'sidecar.istio.io/inject': 'true' };
    assert.equal(meshAddedAtAdmission(labelled)?.mesh, 'istio');
    assert.match(
      meshAddedAtAdmission(app(), { labels: { 'istio-injection': 'enabled' } })?.why ?? '',
      /istio-injection=enabled/,
    );
    assert.equal(
      meshAddedAtAdmission(app(), { labels: { 'istio.io/rev': 'canary' } })?.mesh,
      'istio',
    );
    const linkerd = pod([container('app')], {}, { 'linkerd.io/inject': 'enabled' });
    assert.equal(meshAddedAtAdmission(linkerd)?.mesh, 'linkerd');
    assert.equal(
      meshAddedAtAdmission(app(), { annotations: { 'linkerd.io/inject': 'enabled' } })?.mesh,
      'linkerd',
    );
    // Opted out, or injected already.
    const optedOut = pod([container('app')], {}, { 'sidecar.istio.io/inject': 'false' });
    assert.equal(
      meshAddedAtAdmission(optedOut, { labels: { 'istio-injection': 'enabled' } }),
      null,
    );
    const injected = pod([container('app'), istioProxy()], {}, ISTIO_STATUS);
    assert.equal(
      meshAddedAtAdmission(injected, { labels: { 'istio-injection': 'enabled' } }),
      null,
    );
    assert.equal(meshAddedAtAdmission(app()), null);
  });
});

describe('a pod’s own sleep action where a kubelet does not run it', () => {
  it('is kept, with a warning naming the versions', () => {
    const own = pod([container('app', { lifecycle: { preStop: { sleep: { seconds: 5 } } } })]);
    const old = run(own, { kube: '1.29' });
    assert.deepEqual(containerOf(old.pod, 'app').lifecycle, { preStop: { sleep: { seconds: 5 } } });
    assert.match(
      old.warnings.join('\n'),
      /its own sleep-action preStop runs only where .* oldest kubelet 1\.29/,
    );
    assert.deepEqual(run(own, { kube: '1.33' }).warnings, []);
  });
});
