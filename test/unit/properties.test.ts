// Property-based tests of the planner's invariants over random pods. A
// failure shrinks to a small pod; such cases are kept below as regressions.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Annotation } from '../../src/core/annotations.ts';
import { handlerKeys } from '../../src/core/hooks.ts';
import { EXIT_ON_ZERO_ENV } from '../../src/core/planner.ts';
import { isDistrolessImage } from '../../src/core/sidecars.ts';
import { podTimeline } from '../../src/core/timeline.ts';
import type { Container, PodLike } from '../../src/core/types.ts';
import { annotations, arbitraryPod, kubeVersion } from '../support/arbitraries.ts';
import { run, type Run } from '../support/pods.ts';

const RUNS = Number(process.env['PROPERTY_RUNS'] ?? 400);

function allContainers(p: PodLike): Container[] {
  return [...(p.spec.initContainers ?? []), ...p.spec.containers];
}

function supportsSleepAction(kube: string | null): boolean {
  return kube !== null && Number(kube.split('.')[1]) >= 30;
}

/** Every field the user set is still there with its value. */
function assertNothingLost(input: PodLike, output: PodLike): void {
  const { metadata: inMeta, spec: inSpec, ...inTop } = input;
  const { metadata: outMeta, spec: outSpec, ...outTop } = output;
  assert.deepEqual(outTop, inTop);
  // A null map is an empty one (Helm's and kustomize's output).
  const { annotations: inAnnotations, ...inRest } = inMeta ?? {};
  const { annotations: outAnnotations, ...outRest } = outMeta ?? {};
  const inAnn = inAnnotations ?? {};
  const outAnn = outAnnotations ?? {};
  assert.deepEqual(outRest, inRest);
  for (const [key, value] of Object.entries(inAnn))
    assert.equal(outAnn[key], value, `annotation ${key}`);
  for (const key of Object.keys(outAnn))
    assert.ok(key in inAnn || key === Annotation.status, `new annotation ${key}`);

  const {
    containers: inC,
    initContainers: inI,
    terminationGracePeriodSeconds: _a,
    ...inSpecRest
  } = inSpec;
  const {
    containers: outC,
    initContainers: outI,
    terminationGracePeriodSeconds: _b,
    ...outSpecRest
  } = outSpec;
  assert.deepEqual(outSpecRest, inSpecRest);
  const pairs: [Container[], Container[]][] = [
    [inC, outC],
    [inI ?? [], outI ?? []],
  ];
  for (const [before, after] of pairs) {
    assert.deepEqual(
      after.map((c) => c.name),
      before.map((c) => c.name),
    );
    before.forEach((b, i) => {
      const a = after[i]!;
      const { lifecycle: bl, env: be, ...bRest } = b;
      const { lifecycle: al, env: ae, ...aRest } = a;
      assert.deepEqual(aRest, bRest, `${b.name}: untouched fields`);
      for (const [key, value] of Object.entries(bl ?? {}))
        assert.deepEqual(al?.[key], value, `${b.name}: lifecycle.${key}`);
      for (const key of Object.keys(al ?? {}))
        assert.ok(key in (bl ?? {}) || key === 'preStop', `${b.name}: new lifecycle.${key}`);
      assert.deepEqual(
        (ae ?? []).slice(0, (be ?? []).length),
        be ?? [],
        `${b.name}: env kept in order`,
      );
      for (const added of (ae ?? []).slice((be ?? []).length))
        assert.equal(added.name, EXIT_ON_ZERO_ENV);
    });
  }
}

function checkPod(input: PodLike, options: Run & { kube: string | null }): void {
  const frozen = structuredClone(input);
  const result = run(input, options);
  const output = result.pod;
  assert.deepEqual(input, frozen, 'input not modified');

  const grace = output.spec.terminationGracePeriodSeconds;
  // null is unset, as the API server reads it.
  const graceBefore = input.spec.terminationGracePeriodSeconds ?? undefined;
  if (graceBefore !== undefined)
    assert.ok(typeof grace === 'number' && grace >= graceBefore, 'grace never lowered');
  if (typeof grace === 'number' && graceBefore === undefined)
    assert.ok(grace >= 30, 'grace never below the default');

  const inputByName = new Map(allContainers(input).map((c) => [c.name, c]));
  for (const c of allContainers(output)) {
    const preStop = c.lifecycle?.preStop;
    const original = inputByName.get(c.name)?.lifecycle?.preStop;
    if (preStop === undefined) continue;
    assert.equal(handlerKeys(preStop).length, 1, `${c.name}: exactly one handler`);
    if (original !== undefined) {
      assert.deepEqual(preStop, original, `${c.name}: existing hook untouched`);
      continue;
    }
    if (preStop.sleep !== undefined) {
      assert.ok(supportsSleepAction(options.kube), `${c.name}: no sleep action on ${options.kube}`);
      assert.ok(
        grace !== undefined && preStop.sleep.seconds <= grace,
        `${c.name}: sleep action within grace`,
      );
      assert.ok(preStop.sleep.seconds >= 1, `${c.name}: no zero-second sleep`);
    }
    if (preStop.exec !== undefined) {
      const command = preStop.exec.command ?? [];
      const noShell =
        isDistrolessImage(c.image, options.distrolessPatterns ?? []) && command[0] === '/bin/sh';
      assert.ok(!noShell, `${c.name}: no shell hook on a distroless image`);
      if (input.spec.hostNetwork === true)
        assert.doesNotMatch(command.join(' '), /\/proc\/net/, `${c.name}: no /proc in hostNetwork`);
    }
  }
  // Proxies are never touched in hostNetwork pods.
  if (input.spec.hostNetwork === true) {
    for (const c of allContainers(input).filter(
      (c) => c.name === 'istio-proxy' || c.name === 'linkerd-proxy',
    )) {
      assert.deepEqual(
        allContainers(output).find((o) => o.name === c.name),
        c,
      );
    }
  }
  if (result.outcome === 'skipped') assert.deepEqual(output, input, 'skipped pods are unchanged');
  if (result.outcome === 'mutated')
    assert.ok(output.metadata?.annotations?.[Annotation.status], 'status on mutated pods');
  assertNothingLost(input, output);

  const again = run(output, options);
  assert.deepEqual(again.pod, output, 'a second pass changes nothing');
}

describe('regressions found by the properties', () => {
  it('a held helper sidecar with grace 0 and no app hook: the grace period covers the hold', () => {
    const input = JSON.parse(
      '{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"gen-","annotations":{}},"spec":{"containers":[{"name":"log-shipper","image":"example/app:1.0"}],"restartPolicy":"Always","terminationGracePeriodSeconds":0}}',
    ) as PodLike;
    checkPod(input, { kube: '1.30', helperSidecars: ['log-shipper'] });
  });

  it('a distroless proxy held for a long app delay while the app keeps its own hook', () => {
    const input = JSON.parse(
      '{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"prestop-injector.io/delay-seconds":"3600"}},"spec":{"containers":[{"name":"app","image":"example/app:1.0","lifecycle":{"preStop":{"tcpSocket":{"port":1}}}},{"name":"istio-proxy","image":"docker.io/istio/proxyv2:1.27.1-distroless"}],"restartPolicy":"Always"}}',
    ) as PodLike;
    checkPod(input, { kube: '1.37' });
    assert.equal(run(input, { kube: '1.37' }).pod.spec.terminationGracePeriodSeconds, 3605);
  });
});

describe('planner properties over random pods', () => {
  it('keeps every invariant', () => {
    fc.assert(
      fc.property(
        arbitraryPod,
        kubeVersion,
        fc.option(annotations, { nil: undefined }),
        fc.boolean(),
        (input, kube, namespace, helpers) => {
          checkPod(input, {
            kube,
            ...(namespace === undefined ? {} : { namespace }),
            helperSidecars: helpers ? ['log-shipper', 'fluent-bit'] : [],
          });
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('--explain flags a proxy that can stop while the app serves only where the planner warned of it', () => {
    fc.assert(
      fc.property(arbitraryPod, kubeVersion, (input, kube) => {
        const mutation = run(input, { kube });
        const managed =
          mutation.outcome === 'mutated' &&
          mutation.settings.sidecars &&
          mutation.pod.spec.hostNetwork !== true;
        if (!managed) return;
        const timeline = podTimeline(mutation.pod, mutation.decisions);
        for (const proxy of timeline.containers.filter((c) => c.role === 'proxy')) {
          const flagged = timeline.problems.filter((p) => p.startsWith(`${proxy.name} `));
          const warned = mutation.messages.some((m) => m.includes(`container ${proxy.name}`));
          if (flagged.length > 0) assert.ok(warned, `${flagged.join('; ')} with no warning`);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('reaches the same pod whichever order Istio and this webhook run in', () => {
    const withoutProxy = arbitraryPod.map((p) => {
      const copy = structuredClone(p);
      copy.spec.containers = copy.spec.containers.filter(
        (c) => c.name !== 'istio-proxy' && c.name !== 'linkerd-proxy',
      );
      copy.spec.initContainers = copy.spec.initContainers?.filter(
        (c) => c.name !== 'istio-proxy' && c.name !== 'linkerd-proxy',
      );
      return copy;
    });
    fc.assert(
      fc.property(
        withoutProxy,
        kubeVersion,
        fc.constantFrom('classic', 'native'),
        fc.constantFrom('1.27.1', '1.27.1-distroless'),
        (input, kube, mode, tag) => {
          const inject = (p: PodLike): PodLike => {
            const out = structuredClone(p);
            const proxy: Container = {
              name: 'istio-proxy',
              image: `docker.io/istio/proxyv2:${tag}`,
              securityContext: { runAsUser: 1337 },
            };
            if (mode === 'classic')
              out.spec.containers = [
                ...out.spec.containers.filter((c) => c.name !== 'istio-proxy'),
                proxy,
              ];
            else
              out.spec.initContainers = [
                ...(out.spec.initContainers ?? []).filter((c) => c.name !== 'istio-proxy'),
                {
                  ...proxy,
                  restartPolicy: 'Always',
                  lifecycle: {
                    preStop: { exec: { command: ['pilot-agent', 'request', 'POST', 'drain'] } },
                  },
                },
              ];
            return out;
          };
          const istioFirst = run(inject(input), { kube }).pod;
          const reinvoked = run(inject(run(input, { kube }).pod), { kube }).pod;
          assert.deepEqual(reinvoked, istioFirst);
        },
      ),
      { numRuns: Math.ceil(RUNS / 2) },
    );
  });
});
