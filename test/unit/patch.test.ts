// The webhook's patch is fast-json-patch's compare() of the pod as received
// against the planned one. Applied to the pod as received, it must rebuild
// the planned pod exactly, whatever the pod, including a second pass that
// undoes the first and an opt-out after injection.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import fastJsonPatch from 'fast-json-patch';
import { Annotation } from '../../src/core/annotations.ts';
import type { PodLike } from '../../src/core/types.ts';
import { patchFor } from '../../src/webhook/review.ts';
import { arbitraryPod, kubeVersion } from '../support/arbitraries.ts';
import { container, pod, run } from '../support/pods.ts';
import { istioPod, optedOutPod, plainPod } from '../support/realistic-pods.ts';

/** The patch from `before` to `after`, applied to a copy of `before`, gives `after`. */
function assertRebuilds(before: PodLike, after: PodLike): void {
  const patch = patchFor(before, after);
  // As sent on the wire, and as the API server applies it.
  const sent = JSON.parse(JSON.stringify(patch)) as fastJsonPatch.Operation[];
  const rebuilt = fastJsonPatch.applyPatch(structuredClone(before), sent, true, false).newDocument;
  assert.deepEqual(rebuilt, JSON.parse(JSON.stringify(after)));
  if (JSON.stringify(before) === JSON.stringify(after)) assert.equal(patch.length, 0);
}

function optedOut(input: PodLike): PodLike {
  const copy = structuredClone(input);
  copy.metadata = {
    ...copy.metadata,
    annotations: { ...copy.metadata?.annotations, [Annotation.inject]: 'disabled' },
  };
  return copy;
}

describe('the patch rebuilds the planned pod', () => {
  it('for random pods, cluster versions and settings, first and second passes', () => {
    fc.assert(
      fc.property(
        arbitraryPod,
        kubeVersion,
        fc.constantFrom('sleep', 'drain'),
        fc.integer({ min: 0, max: 40 }),
        (input, kube, mode, delaySeconds) => {
          const first = run(input, { kube, defaults: { mode } });
          assertRebuilds(input, first.pod);
          const second = run(first.pod, { kube, defaults: { mode, delaySeconds } });
          assertRebuilds(first.pod, second.pod);
          const out = optedOut(first.pod);
          assertRebuilds(out, run(out, { kube }).pod);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('for realistic pods, and keys with "/" and "~" in them', () => {
    const inputs = [
      plainPod(),
      istioPod(),
      optedOutPod(),
      pod([container('web'), container('worker')], {}, { 'example.com/a~b': 'x' }),
      pod([container('web', { lifecycle: { postStart: { exec: { command: ['true'] } } } })]),
    ];
    for (const input of inputs) {
      for (const defaults of [{}, { mode: 'drain' as const }, { delaySeconds: 0 }]) {
        const mutation = run(input, { defaults });
        assertRebuilds(input, mutation.pod);
        const again = run(mutation.pod, { defaults: { ...defaults, delaySeconds: 7 } });
        assertRebuilds(mutation.pod, again.pod);
      }
    }
  });

  it('is empty when nothing changes, and the planner did not copy the pod', () => {
    const input = optedOutPod();
    const mutation = run(input);
    assert.equal(mutation.pod, input);
    assert.deepEqual(patchFor(input, mutation.pod), []);
  });
});
