import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Annotation } from '../../src/core/annotations.ts';
import { EXIT_ON_ZERO_ENV } from '../../src/core/planner.ts';
import { parseGoDurationSeconds } from '../../src/core/sidecars.ts';
import type { Container, PodLike } from '../../src/core/types.ts';
import { assertInvariants, container, containerOf, pod, run } from '../support/pods.ts';

const ISTIO_NATIVE_PRESTOP = {
  exec: { command: ['pilot-agent', 'request', '--debug-port=15020', 'POST', 'drain'] },
};

function istioProxy(tag = '1.27.1', extra: Partial<Container> = {}): Container {
  return {
    name: 'istio-proxy',
    image: `docker.io/istio/proxyv2:${tag}`,
    args: ['proxy', 'sidecar'],
    env: [{ name: 'ISTIO_META_POD_PORTS', value: '[]' }],
    securityContext: { runAsUser: 1337, runAsGroup: 1337 },
    ...extra,
  };
}

/**
 * What Istio's injector does to a pod, as far as ordering is concerned: it
 * (re-)renders istio-proxy from its template, as a container (classic) or a
 * native sidecar with its own drain preStop, and records its status.
 */
function istioInject(input: PodLike, mode: 'classic' | 'native', tag = '1.27.1'): PodLike {
  const out = structuredClone(input);
  out.spec.containers = out.spec.containers.filter((c) => c.name !== 'istio-proxy');
  out.spec.initContainers = (out.spec.initContainers ?? []).filter(
    (c) => c.name !== 'istio-proxy' && c.name !== 'istio-init',
  );
  out.spec.initContainers.unshift({
    name: 'istio-init',
    image: `docker.io/istio/proxyv2:${tag}`,
    args: ['istio-iptables'],
  });
  if (mode === 'classic') {
    out.spec.containers.push(istioProxy(tag));
  } else {
    out.spec.initContainers.push({
      ...istioProxy(tag),
      restartPolicy: 'Always',
      lifecycle: { preStop: ISTIO_NATIVE_PRESTOP },
    });
  }
  out.metadata ??= {};
  out.metadata.annotations = {
    ...out.metadata.annotations,
    'sidecar.istio.io/status': '{"containers":["istio-proxy"]}',
  };
  return out;
}

function holdScript(p: PodLike): string {
  const command = containerOf(p, 'istio-proxy').lifecycle?.preStop?.exec?.command;
  assert.ok(command, 'istio-proxy has an exec preStop');
  assert.equal(command[0], '/bin/sh');
  return command[2]!;
}

describe('sidecars: Istio classic', () => {
  it('holds the proxy until the app is done, and the app waits at least 3 s', () => {
    const input = pod([container('app'), istioProxy()], {}, { [Annotation.delaySeconds]: '1' });
    const result = run(input);
    assert.deepEqual(containerOf(result.pod, 'app').lifecycle?.preStop, { sleep: { seconds: 3 } });
    const script = holdScript(result.pod);
    assert.match(script, /^sleep 3\n/);
    assert.match(script, /"\$u" != 1337/);
    // The hold lasts at most as long as the app can live: 3 s hook + 30 s grace.
    assert.match(script, /-lt 33 \]/);
    // Grace: 30 + app budget 3 + Istio's default 5 s drain.
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 38);
    assertInvariants(input, result);
  });

  it('reads the proxy uid from its securityContext', () => {
    const result = run(
      pod([container('app'), istioProxy('1.27.1', { securityContext: { runAsUser: 4242 } })]),
    );
    assert.match(holdScript(result.pod), /"\$u" != 4242/);
  });

  it('reads terminationDrainDuration from proxy.istio.io/config', () => {
    const input = pod(
      [container('app'), istioProxy()],
      {},
      { 'proxy.istio.io/config': 'terminationDrainDuration: 20s\n' },
    );
    assert.equal(run(input).pod.spec.terminationGracePeriodSeconds, 30 + 10 + 20);
    assert.equal(parseGoDurationSeconds('1m30s'), 90);
    assert.equal(parseGoDurationSeconds('2500ms'), 3);
    assert.equal(parseGoDurationSeconds('soon'), null);
  });

  it('keeps a preStop the user put on the proxy', () => {
    const own = { exec: { command: ['/bin/sh', '-c', 'sleep 20'] } };
    const input = pod([container('app'), istioProxy('1.27.1', { lifecycle: { preStop: own } })]);
    const result = run(input);
    assert.deepEqual(containerOf(result.pod, 'istio-proxy').lifecycle?.preStop, own);
    assert.ok(containerOf(result.pod, 'app').lifecycle?.preStop);
    assertInvariants(input, result);
  });

  it('never touches the proxy when the pod disables sidecar handling, nor in hostNetwork pods', () => {
    const disabled = pod(
      [container('app'), istioProxy()],
      {},
      { [Annotation.sidecars]: 'disabled', [Annotation.delaySeconds]: '1' },
    );
    const a = run(disabled);
    assert.deepEqual(containerOf(a.pod, 'istio-proxy'), containerOf(disabled, 'istio-proxy'));
    assert.deepEqual(containerOf(a.pod, 'app').lifecycle?.preStop, { sleep: { seconds: 1 } });
    const host = pod([container('app'), istioProxy()], { spec: { hostNetwork: true } });
    const b = run(host);
    assert.deepEqual(containerOf(b.pod, 'istio-proxy'), containerOf(host, 'istio-proxy'));
  });

  it('drain mode: the proxy hold covers the app drain timeout', () => {
    const input = pod(
      [container('app'), istioProxy()],
      {},
      { [Annotation.mode]: 'drain', [Annotation.drainTimeoutSeconds]: '20' },
    );
    const result = run(input);
    assert.match(holdScript(result.pod), /-lt 60 \]/);
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 30 + 10 + 20 + 5);
    assertInvariants(input, result);
  });
});

describe('sidecars: Istio distroless', () => {
  it('never a shell hook: EXIT_ON_ZERO_ACTIVE_CONNECTIONS, plus a sleep action as long as the app delay', () => {
    const input = pod([container('app'), istioProxy('1.27.1-distroless')]);
    const result = run(input, { kube: '1.33' });
    const proxy = containerOf(result.pod, 'istio-proxy');
    assert.deepEqual(proxy.lifecycle?.preStop, { sleep: { seconds: 10 } });
    assert.ok(proxy.env?.some((v) => v.name === EXIT_ON_ZERO_ENV && v.value === 'true'));
    assert.doesNotMatch(JSON.stringify(proxy), /\/bin\/sh/);
    assertInvariants(input, result, { kube: '1.33' });
  });

  it('below 1.30: only the env var, with a warning', () => {
    const input = pod([container('app'), istioProxy('1.20.3-distroless')]);
    const result = run(input, { kube: '1.28' });
    const proxy = containerOf(result.pod, 'istio-proxy');
    assert.equal(proxy.lifecycle, undefined);
    assert.ok(proxy.env?.some((v) => v.name === EXIT_ON_ZERO_ENV));
    assert.ok(result.messages.some((m) => m.includes('distroless proxy')));
    assertInvariants(input, result, { kube: '1.28' });
  });

  it('Istio older than 1.12 does not get the env var', () => {
    const result = run(pod([container('app'), istioProxy('1.11.8-distroless')]), { kube: '1.33' });
    assert.equal(
      containerOf(result.pod, 'istio-proxy').env?.some((v) => v.name === EXIT_ON_ZERO_ENV),
      false,
    );
  });

  it('does not duplicate an env var the user already set', () => {
    const proxy = istioProxy('1.27.1-distroless', {
      env: [{ name: EXIT_ON_ZERO_ENV, value: 'false' }],
    });
    const result = run(pod([container('app'), proxy]));
    assert.deepEqual(containerOf(result.pod, 'istio-proxy').env, [
      { name: EXIT_ON_ZERO_ENV, value: 'false' },
    ]);
  });
});

describe('sidecars: Istio native', () => {
  it('leaves Istio’s own preStop exactly as it is, hooks the app, adds no proxy drain to the grace', () => {
    const input = istioInject(pod([container('app')]), 'native');
    const result = run(input);
    const proxy = containerOf(result.pod, 'istio-proxy');
    assert.deepEqual(proxy, containerOf(input, 'istio-proxy'));
    assert.deepEqual(proxy.lifecycle?.preStop, ISTIO_NATIVE_PRESTOP);
    assert.deepEqual(containerOf(result.pod, 'app').lifecycle?.preStop, { sleep: { seconds: 10 } });
    // pilot-agent exits at once on SIGTERM after its drain: no terminationDrainDuration.
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 30 + 10);
    assert.deepEqual(result.warnings, []);
    assertInvariants(input, result);
  });

  it('warns when the app’s hook outlasts the drainDuration during which the proxy accepts', () => {
    const input = istioInject(
      pod([container('app')], {}, { [Annotation.mode]: 'drain' }),
      'native',
    );
    // Mesh-wide 20 s: delay 10 + drain timeout 30 run past it.
    containerOf(input, 'istio-proxy').env!.push({
      name: 'PROXY_CONFIG',
      value: '{"drainDuration":"20s"}',
    });
    const result = run(input);
    assert.equal(result.warnings.length, 1);
    assert.match(result.warnings[0]!, /accept new connections until 20s .* until 40s/);
    const quiet = run(istioInject(pod([container('app')]), 'native'));
    assert.deepEqual(quiet.warnings, [], 'delay 10 s is inside the default 45 s');
  });
});

describe('sidecars: Linkerd', () => {
  it('classic: the proxy sleeps through the app’s whole possible lifetime', () => {
    const linkerd = {
      name: 'linkerd-proxy',
      image: 'cr.l5d.io/linkerd/proxy:edge-25.1.1',
      securityContext: { runAsUser: 2102 },
    };
    const input = pod([container('app'), linkerd]);
    const modern = run(input, { kube: '1.33' });
    assert.deepEqual(containerOf(modern.pod, 'linkerd-proxy').lifecycle?.preStop, {
      sleep: { seconds: 40 },
    });
    // The proxy keeps 5 s after its hold to stop, not only the kubelet's 2 s minimum.
    assert.equal(modern.pod.spec.terminationGracePeriodSeconds, 45);
    assertInvariants(input, modern, { kube: '1.33' });
    const old = run(input, { kube: '1.28' });
    assert.deepEqual(containerOf(old.pod, 'linkerd-proxy').lifecycle?.preStop, {
      exec: { command: ['/bin/sleep', '40'] },
    });
    assertInvariants(input, old, { kube: '1.28' });
  });

  it('native: Kubernetes orders it; only the app is hooked', () => {
    const input = pod([container('app')], {
      spec: {
        initContainers: [
          {
            name: 'linkerd-proxy',
            image: 'cr.l5d.io/linkerd/proxy:stable-2.20',
            restartPolicy: 'Always',
          },
        ],
      },
    });
    const result = run(input);
    assert.equal(containerOf(result.pod, 'linkerd-proxy').lifecycle, undefined);
    assert.deepEqual(containerOf(result.pod, 'app').lifecycle?.preStop, { sleep: { seconds: 10 } });
    assertInvariants(input, result);
  });
});

describe('sidecars: configured helpers', () => {
  it('holds a named helper container as long as the app can live, never hooks it as an app', () => {
    const input = pod([container('app'), container('log-shipper')]);
    const result = run(input, { helperSidecars: ['log-shipper'] });
    assert.deepEqual(containerOf(result.pod, 'log-shipper').lifecycle?.preStop, {
      sleep: { seconds: 40 },
    });
    assert.deepEqual(containerOf(result.pod, 'app').lifecycle?.preStop, { sleep: { seconds: 10 } });
    assertInvariants(input, result, { helperSidecars: ['log-shipper'] });
  });
});

describe('sidecars: both webhook orders reach the same pod', () => {
  const apps = () =>
    pod(
      [
        container('app'),
        container('metrics', {
          lifecycle: { preStop: { httpGet: { path: '/quit', port: 9000 } } },
        }),
      ],
      {},
      {
        [Annotation.delaySeconds]: '2',
      },
    );
  for (const mode of ['classic', 'native'] as const) {
    for (const tag of ['1.27.1', '1.27.1-distroless']) {
      for (const kube of ['1.28', '1.33']) {
        it(`${mode} ${tag} on ${kube}`, () => {
          // Istio first, then this webhook.
          const istioFirst = run(istioInject(apps(), mode, tag), { kube }).pod;
          // This webhook first, Istio injects, this webhook is reinvoked.
          const oursFirst = run(apps(), { kube }).pod;
          const reinvoked = run(istioInject(oursFirst, mode, tag), { kube }).pod;
          assert.deepEqual(reinvoked, istioFirst);
          // And once more changes nothing.
          assert.deepEqual(run(reinvoked, { kube }).pod, reinvoked);
          // The mesh minimum was applied in both.
          assert.deepEqual(
            containerOf(reinvoked, 'app').lifecycle?.preStop?.sleep ??
              containerOf(reinvoked, 'app').lifecycle?.preStop?.exec,
            kube === '1.33' ? { seconds: 3 } : { command: ['/bin/sh', '-c', 'sleep 3'] },
          );
        });
      }
    }
  }
});
