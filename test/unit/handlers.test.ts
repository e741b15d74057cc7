// Hook handlers are built once per parameters and shared between pods: they
// must be the builders' handlers exactly, their objects frozen, and keep
// status.ts's fingerprint. The bounded caches behind them (and behind the
// sidecar facts) must stay bounded and pass odd inputs through.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as build from '../../src/core/hooks.ts';
import * as cached from '../../src/core/handlers.ts';
import { memoize } from '../../src/core/memo.ts';
import { fingerprint } from '../../src/core/status.ts';
import { container, pod, run } from '../support/pods.ts';

/** Objects frozen, so a shared hook cannot change; arrays not (see freezeObjects). */
function assertObjectsFrozen(value: unknown, at = 'handler'): void {
  if (typeof value !== 'object' || value === null) return;
  assert.equal(Object.isFrozen(value), !Array.isArray(value), at);
  for (const [key, child] of Object.entries(value)) assertObjectsFrozen(child, `${at}.${key}`);
}

describe('shared hook handlers', () => {
  it('equal what the builders make, frozen, with the same fingerprint', () => {
    const pairs = [
      [cached.sleepAction(7), build.sleepAction(7)],
      [cached.execSleep(7), build.execSleep(7)],
      [cached.execSleepBinary('/bin/sleep', 7), build.execSleepBinary('/bin/sleep', 7)],
      [cached.drainHook(3, 30), build.drainHook(3, 30)],
      [cached.drainHook(3, 30, 5), build.drainHook(3, 30, 5)],
      [cached.proxyHoldHook(3, 40, 1337), build.proxyHoldHook(3, 40, 1337)],
    ] as const;
    for (const [shared, fresh] of pairs) {
      assert.deepEqual(shared, fresh);
      assertObjectsFrozen(shared);
      assert.equal(cached.handlerFingerprint(shared), fingerprint(fresh));
    }
    assert.equal(
      cached.handlerFingerprint(build.sleepAction(9)),
      fingerprint({ sleep: { seconds: 9 } }),
    );
  });

  it('are one object for equal parameters, and stay right past the cache limit', () => {
    assert.equal(cached.proxyHoldHook(3, 40, 1337), cached.proxyHoldHook(3, 40, 1337));
    for (let seconds = 0; seconds < 1000; seconds++) {
      assert.deepEqual(cached.execSleep(seconds), build.execSleep(seconds));
    }
  });

  it('are shared by pods, and no pod can change the hook of another', () => {
    const first = run(pod([container('web')]));
    const second = run(pod([container('api')]));
    const hook = first.pod.spec.containers[0]!.lifecycle!.preStop!;
    assert.equal(second.pod.spec.containers[0]!.lifecycle!.preStop, hook);
    assert.throws(() => {
      hook.sleep!.seconds = 99;
    }, TypeError);
    assert.deepEqual(second.pod.spec.containers[0]!.lifecycle!.preStop, { sleep: { seconds: 10 } });
    // A later pass still recognises, undoes and redoes a hook it wrote.
    const again = run(first.pod, { defaults: { delaySeconds: 4 } });
    assert.deepEqual(again.pod.spec.containers[0]!.lifecycle!.preStop, { sleep: { seconds: 4 } });
  });
});

describe('memoize', () => {
  it('keeps short strings and numbers, and no more entries than its limit', () => {
    let calls = 0;
    const twice = memoize((n: number) => {
      calls++;
      return n * 2;
    }, 4);
    assert.equal(twice(1), 2);
    assert.equal(twice(1), 2);
    assert.equal(calls, 1);
    for (let n = 2; n < 10; n++) twice(n);
    calls = 0;
    twice(1);
    assert.equal(calls, 1, 'evicted once the limit was passed');
  });

  it('remembers null and undefined results', () => {
    let calls = 0;
    const nothing = memoize((_: string) => {
      calls++;
      return null;
    });
    nothing('a');
    nothing('a');
    assert.equal(calls, 1);
  });

  it('passes long strings and non-primitive values straight through', () => {
    let calls = 0;
    const length = memoize((s: string) => {
      calls++;
      return String(s).length;
    });
    const long = 'x'.repeat(10_000);
    length(long);
    length(long);
    assert.equal(calls, 2);
    const object = { toString: () => 'odd' } as unknown as string;
    assert.equal(length(object), 3);
    assert.equal(length(object), 3);
    assert.equal(calls, 4);
  });
});
