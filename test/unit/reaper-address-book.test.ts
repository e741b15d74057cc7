// Who holds an address: the reaper may act only on "gone", which needs a
// pod to have held the address (or a configured pod CIDR) and nothing to
// hold it now.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  AddressBook,
  cidrContains,
  parseCidr,
  type PodFacts,
} from '../../src/reaper/address-book.ts';

function pod(key: string, address: string, extra: Partial<PodFacts> = {}): PodFacts {
  return {
    key,
    addresses: [address],
    terminating: false,
    finished: false,
    hostNetwork: false,
    ...extra,
  };
}

describe('AddressBook', () => {
  it('a running pod holds its address; terminating while it is deleted; gone once removed', () => {
    const book = new AddressBook();
    book.upsertPod(pod('web/a', '10.244.1.2'));
    assert.deepEqual(book.state('10.244.1.2'), { kind: 'live', holder: 'pod web/a' });
    book.upsertPod(pod('web/a', '10.244.1.2', { terminating: true }));
    assert.deepEqual(book.state('10.244.1.2'), { kind: 'terminating', holder: 'pod web/a' });
    book.removePod('web/a');
    assert.deepEqual(book.state('10.244.1.2'), { kind: 'gone', pod: 'web/a' });
  });

  it('an endpoint still listing the address keeps it, terminating or not, after the pod is gone', () => {
    const book = new AddressBook();
    book.upsertPod(pod('web/a', '10.244.1.2'));
    book.upsertSlice('web/web-abc', [{ addresses: ['10.244.1.2'], terminating: true }]);
    book.removePod('web/a');
    assert.deepEqual(book.state('10.244.1.2'), {
      kind: 'terminating',
      holder: 'EndpointSlice web/web-abc',
    });
    book.upsertSlice('web/web-abc', [{ addresses: ['10.244.1.2'], terminating: false }]);
    assert.equal(book.state('10.244.1.2').kind, 'live');
    book.upsertSlice('web/web-abc', []);
    assert.deepEqual(book.state('10.244.1.2'), { kind: 'gone', pod: 'web/a' });
  });

  it('a terminating endpoint of a deleted Pod holds nothing: the slice only lags behind the pod', () => {
    const book = new AddressBook();
    book.upsertPod(pod('web/a', '10.244.1.2', { terminating: true }));
    book.upsertSlice('web/web-abc', [
      { addresses: ['10.244.1.2'], terminating: true, pod: 'web/a' },
    ]);
    assert.equal(book.state('10.244.1.2').kind, 'terminating');
    book.removePod('web/a');
    assert.deepEqual(book.state('10.244.1.2'), { kind: 'gone', pod: 'web/a' });
    // Without a targetRef the endpoint is all there is to go by.
    book.upsertSlice('web/web-abc', [{ addresses: ['10.244.1.2'], terminating: true }]);
    assert.equal(book.state('10.244.1.2').kind, 'terminating');
  });

  it('a live holder wins over a terminating one (the address was given to a new pod)', () => {
    const book = new AddressBook();
    book.upsertPod(pod('web/old', '10.244.1.2', { terminating: true }));
    book.upsertPod(pod('web/new', '10.244.1.2'));
    assert.deepEqual(book.state('10.244.1.2'), { kind: 'live', holder: 'pod web/new' });
  });

  it('a pod that finished (Succeeded or Failed) holds nothing, even while its object stays', () => {
    const book = new AddressBook();
    book.upsertPod(pod('jobs/run-1', '10.244.1.9', { finished: true }));
    assert.deepEqual(book.state('10.244.1.9'), { kind: 'gone', pod: 'jobs/run-1' });
  });

  it('an address no pod ever held is unknown: an external endpoint is never reaped', () => {
    const book = new AddressBook();
    book.upsertSlice('db/external', [{ addresses: ['192.0.2.10'], terminating: false }]);
    assert.equal(book.state('192.0.2.10').kind, 'live');
    book.removeSlice('db/external');
    assert.deepEqual(book.state('192.0.2.10'), { kind: 'unknown' });
  });

  it('a hostNetwork pod does not make its node address a pod address', () => {
    const book = new AddressBook();
    book.upsertPod(pod('kube-system/agent', '192.0.2.1', { hostNetwork: true }));
    book.removePod('kube-system/agent');
    assert.deepEqual(book.state('192.0.2.1'), { kind: 'unknown' });
  });

  it('a full list replaces the pods: those it lacks are gone', () => {
    const book = new AddressBook();
    book.replacePods([pod('web/a', '10.244.1.2'), pod('web/b', '10.244.1.3')]);
    book.replacePods([pod('web/b', '10.244.1.3')]);
    assert.deepEqual(book.state('10.244.1.2'), { kind: 'gone', pod: 'web/a' });
    assert.equal(book.state('10.244.1.3').kind, 'live');
    book.replaceSlices(new Map([['web/s', [{ addresses: ['10.244.1.2'], terminating: true }]]]));
    assert.equal(book.state('10.244.1.2').kind, 'terminating');
    book.replaceSlices(new Map());
    assert.equal(book.state('10.244.1.2').kind, 'gone');
  });

  it('an address taken by a new pod is no longer a former one', () => {
    const book = new AddressBook();
    book.upsertPod(pod('web/a', '10.244.1.2'));
    book.removePod('web/a');
    book.upsertPod(pod('web/c', '10.244.1.2'));
    book.removePod('web/c');
    assert.deepEqual(book.state('10.244.1.2'), { kind: 'gone', pod: 'web/c' });
  });

  it('addresses in a configured pod CIDR count as pods’ after a restart', () => {
    const book = new AddressBook({ podCidrs: [parseCidr('10.244.0.0/16')!] });
    assert.deepEqual(book.state('10.244.7.7'), {
      kind: 'gone',
      pod: '(no pod; in pod CIDR 10.244.0.0/16)',
    });
    assert.deepEqual(book.state('10.245.0.1'), { kind: 'unknown' });
  });

  it('forgets a former pod address after an hour', () => {
    let now = 0;
    const book = new AddressBook({ now: () => now });
    book.upsertPod(pod('web/a', '10.244.1.2'));
    book.removePod('web/a');
    now = 59 * 60_000;
    book.prune();
    assert.equal(book.state('10.244.1.2').kind, 'gone');
    now = 61 * 60_000;
    book.prune();
    assert.equal(book.state('10.244.1.2').kind, 'unknown');
    assert.equal(book.sizes().formerPodAddresses, 0);
  });
});

describe('parseCidr and cidrContains', () => {
  it('match IPv4 and IPv6 prefixes', () => {
    const v4 = parseCidr('10.244.0.0/16')!;
    assert.equal(cidrContains(v4, '10.244.255.1'), true);
    assert.equal(cidrContains(v4, '10.245.0.1'), false);
    assert.equal(cidrContains(v4, 'fd00::1'), false);
    const v6 = parseCidr('fd00:10:244::/56')!;
    assert.equal(cidrContains(v6, 'fd00:10:244:ff::1'), true);
    assert.equal(cidrContains(v6, 'fd00:10:244:100::1'), false);
    assert.equal(cidrContains(parseCidr('0.0.0.0/0')!, '1.2.3.4'), true);
  });

  it('refuse malformed CIDRs', () => {
    for (const text of [
      '10.244.0.0',
      '10.244.0.0/33',
      '300.1.1.1/8',
      'fd00::/129',
      'x/8',
      '1:2::3::4/64',
    ]) {
      assert.equal(parseCidr(text), null, text);
    }
  });
});
