// diffPatch is the project's own JSON diff (it skips the parts the planner
// shares with the input). It must give, operation for operation, the patch
// fast-json-patch's compare() gave before it, and that patch must rebuild
// the mutated object.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import fastJsonPatch from 'fast-json-patch';
import { diffPatch } from '../../src/webhook/admission.ts';
import { istioPod, optedOutPod, plainPod } from '../bench/reviews.ts';
import { container, pod, run } from '../support/pods.ts';
import { Annotation } from '../../src/core/annotations.ts';
import type { PodLike } from '../../src/core/types.ts';

function assertSameAsCompare(before: unknown, after: unknown): void {
  const ours = diffPatch(before, after);
  const reference = fastJsonPatch.compare(before as object, after as object);
  // Compared as sent on the wire: fast-json-patch copies values through JSON.
  assert.equal(JSON.stringify(ours), JSON.stringify(reference));
  // A patch cannot turn the root from an object into an array; anywhere else it rebuilds.
  if (Array.isArray(before) !== Array.isArray(after)) return;
  const rebuilt = fastJsonPatch.applyPatch(structuredClone(before), ours, true, false).newDocument;
  assert.deepEqual(JSON.parse(JSON.stringify(rebuilt)), JSON.parse(JSON.stringify(after)));
}

/** A JSON object and an edited copy: some values changed, some keys added or removed. */
const editedPair = fc
  .tuple(
    fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 4 }), { maxKeys: 8 }),
    fc.array(
      fc.tuple(
        fc.constantFrom('set', 'delete', 'push', 'pop'),
        fc.string({ maxLength: 6 }),
        fc.jsonValue({ maxDepth: 2 }),
      ),
      { maxLength: 8 },
    ),
  )
  .map(([before, edits]) => {
    const after = structuredClone(before) as Record<string, unknown>;
    for (const [edit, key, value] of edits) {
      const keys = Object.keys(after);
      const target = keys.length === 0 ? key : keys[key.length % keys.length]!;
      const current = after[target];
      if (edit === 'set') after[key] = value;
      else if (edit === 'delete') delete after[target];
      else if (edit === 'push' && Array.isArray(current)) current.push(value);
      else if (edit === 'pop' && Array.isArray(current)) current.pop();
      else if (typeof current === 'object' && current !== null && !Array.isArray(current))
        (current as Record<string, unknown>)[key] = value;
    }
    return [before, after] as const;
  });

/** A pod as JSON has it without a grace period: no key at all. */
function ungraced(input: PodLike): PodLike {
  delete input.spec.terminationGracePeriodSeconds;
  return input;
}

describe('diffPatch', () => {
  it('matches fast-json-patch on edited JSON objects, "/" and "~" in keys included', () => {
    fc.assert(
      fc.property(editedPair, ([before, after]) => assertSameAsCompare(before, after)),
      { numRuns: 500 },
    );
  });

  it('matches fast-json-patch on unrelated JSON values, arrays against objects included', () => {
    const container = fc.oneof(
      fc.dictionary(fc.string({ maxLength: 4 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 }),
      fc.array(fc.jsonValue({ maxDepth: 3 }), { maxLength: 6 }),
    );
    fc.assert(
      fc.property(container, container, (before, after) => assertSameAsCompare(before, after)),
      { numRuns: 500 },
    );
  });

  it('matches fast-json-patch on planner output that shares unchanged parts with its input', () => {
    const inputs = [
      plainPod(),
      istioPod(),
      optedOutPod(),
      pod([container('web'), container('worker')], {}, { 'example.com/a~b': 'x' }),
      pod([container('web', { lifecycle: { postStart: { exec: { command: ['true'] } } } })]),
      ungraced(
        pod([container('web', { env: [{ name: 'A', value: '1' }] }), container('istio-proxy')]),
      ),
    ];
    for (const input of inputs) {
      for (const defaults of [{}, { mode: 'drain' as const }, { delaySeconds: 0 }]) {
        const mutation = run(input, { defaults });
        assertSameAsCompare(input, mutation.pod);
        // A second pass undoes the first before planning again.
        const again = run(mutation.pod, { defaults: { ...defaults, delaySeconds: 7 } });
        assertSameAsCompare(mutation.pod, again.pod);
        const optOut = structuredClone(mutation.pod);
        optOut.metadata = {
          ...optOut.metadata,
          annotations: { ...optOut.metadata?.annotations, [Annotation.inject]: 'disabled' },
        };
        assertSameAsCompare(optOut, run(optOut, { defaults }).pod);
      }
    }
  });
});
