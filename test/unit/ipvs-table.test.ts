// The IPVS tables as the kernel prints them (net/netfilter/ipvs/ip_vs_ctl.c,
// ip_vs_info_seq_show; ip_vs_conn.c, ip_vs_conn_seq_show): IPv4 addresses
// and ports in hex, IPv6 addresses written out in full. test/root checks the
// same parser against a live kernel's tables.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  deleteRealServerArgs,
  parseAddress,
  parseConnectionTable,
  parseIpvsTable,
  realServerName,
} from '../../src/reaper/ipvs-table.ts';

const IP_VS = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A60000A:0050 rr 
  -> 0AF40102:1F90      Masq    0      2          31        
  -> 0AF40101:1F90      Masq    1      0          17        
UDP  0A60000A:0035 rr 
  -> 0AF40103:0035      Masq    1      0          0         
FWM  00000010 wlc 
  -> 0A000001:0000      Route   1      0          0         
TCP  [fd00:0000:0000:0000:0000:0000:0000:000a]:0050 rr persistent 10800 FFFFFFFF
  -> [fd00:0000:0000:0000:0000:0000:0001:0002]:1F90      Masq    0      0          4         
SCTP 0A60000B:0BB8 rr 
`;

const IP_VS_CONN = `Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0AF4C80A 9C40 0A60000A 0050 0AF40102 1F90 TIME_WAIT        118
TCP 0AF4C80A 9C41 0A60000A 0050 0AF40102 1F90 ESTABLISHED      899
TCP fd00:0000:0000:0000:0000:0000:00c8:000a 9C42 fd00:0000:0000:0000:0000:0000:0000:000a 0050 fd00:0000:0000:0000:0000:0000:0001:0002 1F90 CLOSE              9
UDP 0AF4C80A D431 0A60000A 0035 0AF40103 0035 UDP              299
garbage line
`;

describe('parseIpvsTable', () => {
  const table = parseIpvsTable(IP_VS);

  it('reads every virtual service but firewall-mark ones', () => {
    assert.deepEqual(
      table.services.map((s) => `${s.protocol} ${s.address} ${s.port}`),
      ['TCP 10.96.0.10 80', 'UDP 10.96.0.10 53', 'TCP fd00::a 80', 'SCTP 10.96.0.11 3000'],
    );
  });

  it('reads each real server with its service, weight and connection counts', () => {
    assert.deepEqual(
      table.realServers.map((s) => [
        realServerName(s),
        s.weight,
        s.activeConnections,
        s.inactiveConnections,
      ]),
      [
        ['TCP 10.96.0.10:80 -> 10.244.1.2:8080', 0, 2, 31],
        ['TCP 10.96.0.10:80 -> 10.244.1.1:8080', 1, 0, 17],
        ['UDP 10.96.0.10:53 -> 10.244.1.3:53', 1, 0, 0],
        ['TCP [fd00::a]:80 -> [fd00::1:2]:8080', 0, 0, 4],
      ],
    );
  });

  it('skips the real servers of a firewall-mark service', () => {
    assert.equal(
      table.realServers.some((s) => s.address === '10.0.0.1'),
      false,
    );
  });

  it('reads an empty table (IPVS loaded, nothing configured)', () => {
    assert.deepEqual(parseIpvsTable(IP_VS.split('\n').slice(0, 3).join('\n')), {
      services: [],
      realServers: [],
    });
  });
});

describe('parseConnectionTable', () => {
  it('reads IPv4 and IPv6 entries with their state and expiry, and skips what is not an entry', () => {
    const entries = parseConnectionTable(IP_VS_CONN);
    assert.deepEqual(
      entries.map((e) => [
        e.protocol,
        `${e.client.address}:${e.client.port}`,
        `${e.service.address}:${e.service.port}`,
        `${e.destination.address}:${e.destination.port}`,
        e.state,
        e.expiresSeconds,
      ]),
      [
        ['TCP', '10.244.200.10:40000', '10.96.0.10:80', '10.244.1.2:8080', 'TIME_WAIT', 118],
        ['TCP', '10.244.200.10:40001', '10.96.0.10:80', '10.244.1.2:8080', 'ESTABLISHED', 899],
        ['TCP', 'fd00::c8:a:40002', 'fd00::a:80', 'fd00::1:2:8080', 'CLOSE', 9],
        ['UDP', '10.244.200.10:54321', '10.96.0.10:53', '10.244.1.3:53', 'UDP', 299],
      ],
    );
  });
});

describe('parseAddress', () => {
  it('turns hex IPv4 and full IPv6 into their usual forms', () => {
    assert.equal(parseAddress('0A60000A'), '10.96.0.10');
    assert.equal(parseAddress('FFFFFFFF'), '255.255.255.255');
    assert.equal(parseAddress('2001:0db8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
    assert.equal(parseAddress('[0000:0000:0000:0000:0000:0000:0000:0000]'), '::');
    // The longest run of zeros is shortened, the first of equal ones.
    assert.equal(parseAddress('2001:0000:0000:0001:0000:0000:0000:0001'), '2001:0:0:1::1');
    assert.equal(parseAddress('2001:0db8:0000:0001:0000:0001:0000:0001'), '2001:db8:0:1:0:1:0:1');
    assert.equal(parseAddress('1:2:3:4:5:6:7:8'), '1:2:3:4:5:6:7:8');
  });

  it('refuses what is neither', () => {
    for (const text of ['0A60000', 'zz60000A', '1:2:3', '10.96.0.10', '']) {
      assert.equal(parseAddress(text), null, text);
    }
  });
});

describe('deleteRealServerArgs', () => {
  const { realServers } = parseIpvsTable(IP_VS);

  it('names the service by protocol and the real server, IPv6 in brackets', () => {
    assert.deepEqual(deleteRealServerArgs(realServers[0]!), [
      '-d',
      '-t',
      '10.96.0.10:80',
      '-r',
      '10.244.1.2:8080',
    ]);
    assert.deepEqual(deleteRealServerArgs(realServers[2]!), [
      '-d',
      '-u',
      '10.96.0.10:53',
      '-r',
      '10.244.1.3:53',
    ]);
    assert.deepEqual(deleteRealServerArgs(realServers[3]!), [
      '-d',
      '-t',
      '[fd00::a]:80',
      '-r',
      '[fd00::1:2]:8080',
    ]);
    assert.deepEqual(
      deleteRealServerArgs({
        ...realServers[0]!,
        service: { ...realServers[0]!.service, protocol: 'SCTP' },
      }).slice(0, 2),
      ['-d', '--sctp-service'],
    );
  });
});
