// `prestop-injector ipvs-reaper`: its usage errors, and the facts it keeps
// of Pods and EndpointSlices as the API server sends them.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import type { V1EndpointSlice, V1Pod } from '@kubernetes/client-node';
import { endpointFacts, podFacts, sliceKey } from '../../src/reaper/watch.ts';

const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

function cli(...args: string[]) {
  return spawnSync(process.execPath, [CLI, 'ipvs-reaper', ...args], { encoding: 'utf8' });
}

describe('ipvs-reaper usage', () => {
  it('--help prints the usage and exits 0', () => {
    const result = cli('--help');
    assert.equal(result.status, 0);
    assert.match(result.stdout, /^Usage: prestop-injector ipvs-reaper \[--dry-run\]/);
  });

  const refused: [string[], RegExp][] = [
    [['--bogus'], /Unknown option '--bogus'/],
    [['--interval-seconds', '0'], /--interval-seconds: expected a number of seconds/],
    [['--health-port', '70000'], /--health-port: "70000" is not a port/],
    [['--pod-cidrs', '10.244.0.0/16,nonsense'], /--pod-cidrs: "nonsense" is not a CIDR/],
    [['--json'], /--json goes with --diagnose/],
  ];
  for (const [args, message] of refused) {
    it(`refuses ${args.join(' ')} with status 2 and the usage`, () => {
      const result = cli(...args);
      assert.equal(result.status, 2);
      assert.match(result.stderr, message);
      assert.match(result.stderr, /Usage: prestop-injector ipvs-reaper/);
    });
  }

  it('is listed in the main usage', () => {
    const result = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    assert.match(
      result.stdout,
      /prestop-injector ipvs-reaper \[--dry-run \| --diagnose \[--json\]\]/,
    );
  });

  it('--diagnose --json prints one JSON diagnosis of this machine', () => {
    const result = cli('--diagnose', '--json', '--kube-proxy-metrics-url', 'http://127.0.0.1:9');
    assert.equal(result.status, 0, result.stderr);
    const diagnosis = JSON.parse(result.stdout) as { facts: { kernel: string }; exposure: string };
    assert.equal(typeof diagnosis.facts.kernel, 'string');
    assert.ok(['exposed', 'possibly exposed', 'not exposed'].includes(diagnosis.exposure));
  });
});

describe('the facts kept of API objects', () => {
  it('a pod: its addresses, terminating, finished, hostNetwork', () => {
    const pod: V1Pod = {
      metadata: { namespace: 'web', name: 'a', deletionTimestamp: new Date() },
      spec: { containers: [], hostNetwork: false },
      status: {
        phase: 'Running',
        podIP: '10.244.1.2',
        podIPs: [{ ip: '10.244.1.2' }, { ip: 'fd00::1:2' }],
      },
    };
    assert.deepEqual(podFacts(pod), {
      key: 'web/a',
      addresses: ['10.244.1.2', 'fd00::1:2'],
      terminating: true,
      finished: false,
      hostNetwork: false,
    });
    assert.equal(podFacts({ ...pod, status: { phase: 'Failed' } })?.finished, true);
    assert.deepEqual(podFacts({ ...pod, status: {} })?.addresses, []);
    assert.equal(podFacts({ metadata: { name: 'no-namespace' } }), null);
  });

  it('an EndpointSlice: each endpoint’s addresses and whether it terminates', () => {
    const slice: V1EndpointSlice = {
      addressType: 'IPv4',
      metadata: { namespace: 'web', name: 'web-x7k2p' },
      endpoints: [
        {
          addresses: ['10.244.1.1'],
          conditions: { ready: true, serving: true, terminating: false },
          targetRef: { kind: 'Pod', name: 'web-1' },
        },
        {
          addresses: ['10.244.1.2'],
          conditions: { ready: false, serving: true, terminating: true },
          targetRef: { kind: 'Pod', namespace: 'web', name: 'web-2' },
        },
        { addresses: ['192.0.2.10'] },
      ],
    };
    assert.equal(sliceKey(slice), 'web/web-x7k2p');
    assert.deepEqual(endpointFacts(slice), [
      { addresses: ['10.244.1.1'], terminating: false, pod: 'web/web-1' },
      { addresses: ['10.244.1.2'], terminating: true, pod: 'web/web-2' },
      { addresses: ['192.0.2.10'], terminating: false },
    ]);
    assert.deepEqual(endpointFacts({ addressType: 'IPv4', metadata: {}, endpoints: [] }), []);
  });
});
