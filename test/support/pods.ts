// Pod builders and invariant checks shared by the unit tests.

import assert from 'node:assert/strict';
import { capabilitiesFor, parseKubeVersion, uniformVersions } from '../../src/core/capabilities.ts';
import { mutatePod, type Mutation } from '../../src/core/mutate.ts';
import { BUILTIN_DEFAULTS, type Settings } from '../../src/core/policy.ts';
import { handlerKeys } from '../../src/core/hooks.ts';
import { readStatus } from '../../src/core/status.ts';
import type { Container, PodLike } from '../../src/core/types.ts';

export function container(name: string, extra: Partial<Container> = {}): Container {
  return { name, image: `example/${name}:1.0`, ...extra };
}

export function pod(
  containers: Container[],
  extra: Record<string, unknown> = {},
  annotations?: Record<string, string>,
): PodLike {
  const { spec, ...rest } = extra as { spec?: Record<string, unknown> };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: 'p',
      namespace: 'default',
      ...(annotations === undefined ? {} : { annotations }),
    },
    spec: { containers, terminationGracePeriodSeconds: 30, restartPolicy: 'Always', ...spec },
    ...rest,
  };
}

export interface Run {
  kube?: string | null;
  defaults?: Partial<Settings>;
  namespace?: Record<string, string>;
  distrolessPatterns?: string[];
  helperSidecars?: string[];
}

export function run(input: PodLike, options: Run = {}): Mutation {
  return mutatePod(input, {
    defaults: { ...BUILTIN_DEFAULTS, inject: true, ...options.defaults },
    capabilities: capabilitiesFor(
      uniformVersions(parseKubeVersion(options.kube === undefined ? '1.33' : options.kube)),
    ),
    config: {
      distrolessPatterns: options.distrolessPatterns ?? [],
      helperSidecars: options.helperSidecars ?? [],
    },
    namespaceAnnotations: options.namespace,
  });
}

export function containerOf(p: PodLike, name: string): Container {
  const found = [...(p.spec.initContainers ?? []), ...p.spec.containers].find(
    (c) => c.name === name,
  );
  assert.ok(found, `container ${name} exists`);
  return found;
}

/** The rules every output must keep, whatever the input. */
export function assertInvariants(input: PodLike, mutation: Mutation, options: Run = {}): void {
  const output = mutation.pod;
  const all = [...(output.spec.initContainers ?? []), ...output.spec.containers];
  const grace = output.spec.terminationGracePeriodSeconds;
  for (const c of all) {
    const preStop = c.lifecycle?.preStop;
    if (preStop !== undefined)
      assert.equal(handlerKeys(preStop).length, 1, `${c.name}: exactly one handler`);
    if (preStop?.sleep !== undefined) {
      assert.ok(
        grace !== undefined && preStop.sleep.seconds <= grace,
        `${c.name}: sleep action within grace`,
      );
      const version = parseKubeVersion(options.kube === undefined ? '1.33' : options.kube);
      const inputHasIt = JSON.stringify(input).includes('"sleep":{"seconds"');
      if (!inputHasIt)
        assert.ok(
          version !== null && (version.major > 1 || version.minor >= 30),
          'no sleep action below 1.30',
        );
    }
  }
  const before = input.spec.terminationGracePeriodSeconds ?? 30;
  if (grace !== undefined) assert.ok(grace >= before, 'grace never lowered');
  if (mutation.outcome === 'mutated')
    assert.ok(readStatus(output) !== null, 'status on a mutated pod');
  // A second pass changes nothing.
  const again = run(output, options);
  assert.deepEqual(again.pod, output, 'second pass is a no-op');
}
