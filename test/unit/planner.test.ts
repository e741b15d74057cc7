import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Annotation } from '../../src/core/annotations.ts';
import { readStatus } from '../../src/core/status.ts';
import { assertInvariants, container, containerOf, pod, run } from '../support/pods.ts';

describe('planner: plain pods', () => {
  it('gives every app container a native sleep on 1.30+ and adds its budget to the grace period', () => {
    const input = pod([container('web'), container('worker')]);
    const result = run(input, { kube: '1.33' });
    assert.equal(result.outcome, 'mutated');
    assert.deepEqual(containerOf(result.pod, 'web').lifecycle?.preStop, { sleep: { seconds: 10 } });
    assert.deepEqual(containerOf(result.pod, 'worker').lifecycle?.preStop, {
      sleep: { seconds: 10 },
    });
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 40);
    assertInvariants(input, result, { kube: '1.33' });
  });

  it('execs a sleep through the shell below 1.30 and when the version is unknown', () => {
    for (const kube of ['1.28', '1.29', null]) {
      const input = pod([container('web')]);
      const result = run(input, { kube });
      assert.deepEqual(containerOf(result.pod, 'web').lifecycle?.preStop, {
        exec: { command: ['/bin/sh', '-c', 'sleep 10'] },
      });
      assertInvariants(input, result, { kube });
    }
  });

  it('never modifies its input', () => {
    const input = pod([container('web')]);
    const copy = structuredClone(input);
    run(input);
    assert.deepEqual(input, copy);
  });

  it('keeps an existing preStop exactly and still hooks the other containers', () => {
    const own = { httpGet: { path: '/shutdown', port: 8080 } };
    const input = pod([
      container('web', { lifecycle: { preStop: own, postStart: { exec: { command: ['true'] } } } }),
      container('sidecar-less'),
    ]);
    const result = run(input);
    assert.deepEqual(containerOf(result.pod, 'web').lifecycle, input.spec.containers[0]!.lifecycle);
    assert.deepEqual(containerOf(result.pod, 'sidecar-less').lifecycle?.preStop, {
      sleep: { seconds: 10 },
    });
    assert.equal(readStatus(result.pod)?.hooks['web'], 'kept');
    assertInvariants(input, result);
  });

  it('leaves a pod whose only container has its own hook unchanged', () => {
    const input = pod([
      container('web', { lifecycle: { preStop: { exec: { command: ['/bin/sleep', '5'] } } } }),
    ]);
    const result = run(input);
    assert.equal(result.outcome, 'unchanged');
    assert.deepEqual(result.pod, input);
  });

  it('computes the grace period from the original one, 30 s when unset', () => {
    const input = pod([container('web')], { spec: { terminationGracePeriodSeconds: undefined } });
    delete input.spec.terminationGracePeriodSeconds;
    const result = run(input);
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 40);
    assert.deepEqual(readStatus(result.pod)?.grace, { from: null, to: 40 });
    assertInvariants(input, result);
    const long = run(pod([container('web')], { spec: { terminationGracePeriodSeconds: 600 } }));
    assert.equal(long.pod.spec.terminationGracePeriodSeconds, 610);
  });

  it('drain mode: a /proc script, and a grace period of delay + timeout on top', () => {
    const input = pod(
      [container('api', { ports: [{ name: 'http', containerPort: 8080 }] })],
      {},
      {
        [Annotation.mode]: 'drain',
        [Annotation.drainTimeoutSeconds]: '45',
      },
    );
    const result = run(input);
    const command = containerOf(result.pod, 'api').lifecycle?.preStop?.exec?.command ?? [];
    assert.equal(command[0], '/bin/sh');
    assert.match(command[2] ?? '', /^sleep 10\n/);
    assert.match(command[2] ?? '', /\/proc\/net\/tcp6/);
    assert.match(command[2] ?? '', /-lt 45 \]/);
    assert.doesNotMatch(command[2] ?? '', /netstat|\bss\b|awk/);
    assert.doesNotMatch(command[2] ?? '', /snmp/, 'no quiet period unless asked for');
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 30 + 10 + 45);
    assertInvariants(input, result);
  });

  it('drain mode with a quiet period: the script also watches the pod TCP counters; grace unchanged', () => {
    const input = pod(
      [container('api')],
      {},
      {
        [Annotation.mode]: 'drain',
        [Annotation.drainTimeoutSeconds]: '45',
        [Annotation.drainQuietSeconds]: '6',
      },
    );
    const result = run(input);
    const script = containerOf(result.pod, 'api').lifecycle?.preStop?.exec?.command?.[2] ?? '';
    assert.match(script, /\/proc\/net\/snmp/);
    assert.match(script, /-lt 45 \] && \[ "\$q" -lt 6 \]/);
    // Ending early never needs more time: the budget is still delay + timeout.
    assert.equal(result.pod.spec.terminationGracePeriodSeconds, 30 + 10 + 45);
    const status = JSON.parse(result.pod.metadata?.annotations?.[Annotation.status] ?? '{}');
    assert.equal(status.drainQuietSeconds, 6);
    assertInvariants(input, result);
  });

  it('pods with no ports and with named ports are hooked the same way', () => {
    for (const ports of [
      undefined,
      [{ name: 'grpc', containerPort: 9090 }],
      [{ containerPort: 1 }, { containerPort: 65535 }],
    ]) {
      const input = pod([container('svc', ports === undefined ? {} : { ports })]);
      const result = run(input);
      assert.deepEqual(containerOf(result.pod, 'svc').lifecycle?.preStop, {
        sleep: { seconds: 10 },
      });
      assertInvariants(input, result);
    }
  });

  it('hostNetwork pods never get the /proc drain: sleep instead, with a warning', () => {
    const input = pod(
      [container('agent')],
      { spec: { hostNetwork: true } },
      { [Annotation.mode]: 'drain' },
    );
    const result = run(input);
    assert.deepEqual(containerOf(result.pod, 'agent').lifecycle?.preStop, {
      sleep: { seconds: 10 },
    });
    assert.ok(result.messages.some((m) => m.includes('hostNetwork')));
    assert.doesNotMatch(JSON.stringify(result.pod), /proc\/net/);
    assertInvariants(input, result);
  });

  it('leaves batch pods alone', () => {
    for (const restartPolicy of ['OnFailure', 'Never']) {
      const input = pod([container('job')], { spec: { restartPolicy } });
      const result = run(input);
      assert.equal(result.outcome, 'skipped');
      assert.equal(result.pod, input);
    }
  });

  it('leaves disabled pods alone, and respects the server default', () => {
    const disabled = pod([container('web')], {}, { [Annotation.inject]: 'disabled' });
    assert.equal(run(disabled).pod, disabled);
    const silent = pod([container('web')]);
    assert.equal(run(silent, { defaults: { inject: false } }).outcome, 'skipped');
  });

  it('delay 0 in sleep mode needs no hook at all', () => {
    const input = pod([container('web')], {}, { [Annotation.delaySeconds]: '0' });
    const result = run(input);
    assert.equal(result.outcome, 'unchanged');
    assert.deepEqual(result.pod, input);
  });

  it('distroless images never get an exec hook', () => {
    const image = 'gcr.io/distroless/static-debian12:nonroot';
    const modern = run(pod([container('app', { image })]), { kube: '1.31' });
    assert.deepEqual(containerOf(modern.pod, 'app').lifecycle?.preStop, { sleep: { seconds: 10 } });
    const old = run(pod([container('app', { image })]), { kube: '1.28' });
    assert.equal(containerOf(old.pod, 'app').lifecycle, undefined);
    assert.ok(old.messages.some((m) => m.includes('no hook')));
    const drain = run(pod([container('app', { image })], {}, { [Annotation.mode]: 'drain' }), {
      kube: '1.28',
    });
    assert.equal(containerOf(drain.pod, 'app').lifecycle, undefined);
    const custom = run(
      pod([container('app', { image: 'registry.example/chainguard/static:latest' })]),
      {
        kube: '1.28',
        distrolessPatterns: ['chainguard/static'],
      },
    );
    assert.equal(containerOf(custom.pod, 'app').lifecycle, undefined);
  });

  it('only the named containers when the containers annotation is set; unknown names warn', () => {
    const input = pod(
      [container('web'), container('cache')],
      {},
      { [Annotation.containers]: 'web, ghost' },
    );
    const result = run(input);
    assert.ok(containerOf(result.pod, 'web').lifecycle?.preStop);
    assert.equal(containerOf(result.pod, 'cache').lifecycle, undefined);
    assert.ok(result.messages.some((m) => m.includes('ghost')));
    assertInvariants(input, result);
  });

  it('bad annotation values are ignored with a warning naming key and value, never a rejection', () => {
    const input = pod(
      [container('web')],
      {},
      {
        [Annotation.delaySeconds]: 'ten',
        [Annotation.mode]: 'nap',
        [Annotation.drainTimeoutSeconds]: '0',
        [Annotation.inject]: 'maybe',
        [Annotation.containers]: 'Not_A_Name',
      },
    );
    const result = run(input);
    assert.equal(result.outcome, 'mutated');
    assert.deepEqual(containerOf(result.pod, 'web').lifecycle?.preStop, { sleep: { seconds: 10 } });
    const keys = result.policyWarnings.map((w) => w.key).sort();
    assert.deepEqual(
      keys,
      [
        Annotation.containers,
        Annotation.delaySeconds,
        Annotation.drainTimeoutSeconds,
        Annotation.inject,
        Annotation.mode,
      ].sort(),
    );
    assert.ok(
      result.messages.some((m) => m.includes('"ten"') && m.includes(Annotation.delaySeconds)),
    );
    assert.ok(result.messages.some((m) => m.includes('3600') || m.includes('out of range')));
  });

  it('precedence: defaults < server config < namespace < pod', () => {
    const ns = { [Annotation.delaySeconds]: '20', [Annotation.mode]: 'drain' };
    const fromNs = run(pod([container('web')]), { defaults: { delaySeconds: 5 }, namespace: ns });
    assert.equal(fromNs.settings.delaySeconds, 20);
    assert.equal(fromNs.settings.mode, 'drain');
    const fromPod = run(pod([container('web')], {}, { [Annotation.delaySeconds]: '7' }), {
      namespace: ns,
    });
    assert.equal(fromPod.settings.delaySeconds, 7);
    assert.equal(fromPod.settings.mode, 'drain');
    const optIn = run(pod([container('web')]), {
      defaults: { inject: false },
      namespace: { [Annotation.inject]: 'enabled' },
    });
    assert.equal(optIn.outcome, 'mutated');
    const podOut = run(pod([container('web')], {}, { [Annotation.inject]: 'disabled' }), {
      namespace: { [Annotation.inject]: 'enabled' },
    });
    assert.equal(podOut.outcome, 'skipped');
  });

  it('a second pass changes nothing, the grace period included, across many shapes', () => {
    const shapes = [
      pod([container('a')]),
      pod([container('a'), container('b', { lifecycle: { preStop: { sleep: { seconds: 3 } } } })]),
      pod([container('a')], {}, { [Annotation.mode]: 'drain' }),
      pod([container('a')], { spec: { hostNetwork: true } }, { [Annotation.mode]: 'drain' }),
      pod([container('a', { image: 'x/distroless:1' })]),
      pod([container('a', { env: [{ name: 'X', value: '1' }] })], {
        spec: { initContainers: [container('init')] },
      }),
    ];
    for (const kube of ['1.28', '1.33']) {
      for (const input of shapes) assertInvariants(input, run(input, { kube }), { kube });
    }
  });

  it('a pass with changed settings re-plans from the original pod', () => {
    const first = run(pod([container('web')]));
    assert.equal(first.pod.spec.terminationGracePeriodSeconds, 40);
    const second = run(first.pod, { defaults: { delaySeconds: 25 } });
    assert.equal(second.pod.spec.terminationGracePeriodSeconds, 55);
    assert.deepEqual(containerOf(second.pod, 'web').lifecycle?.preStop, { sleep: { seconds: 25 } });
  });
});
