// The admission log's two modes: which admissions get a line of their own,
// how kept answers are grouped, and that every record is written once.

import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import pino from 'pino';
import {
  AdmissionLog,
  GROUP_BYTES,
  GROUP_LIMIT,
  GROUP_MS,
  type AdmissionLogMode,
  type AdmissionRecord,
} from '../../src/webhook/admission-log.ts';
import type { AdmissionSummary, AnswerCacheResult } from '../../src/webhook/handler.ts';
import { admissionRecords, type LogEntry } from '../support/admission-log.ts';

function capture(mode: AdmissionLogMode, level = 'info') {
  const lines: LogEntry[] = [];
  const logger = pino(
    { level },
    { write: (line: string) => void lines.push(JSON.parse(line) as LogEntry) },
  );
  return { log: new AdmissionLog(logger, mode), lines };
}

const mutated: AdmissionSummary = Object.freeze({
  outcome: 'mutated',
  mode: 'sleep',
  policyWarnings: [],
  hooks: { web: 'sleep 10s' },
  grace: { from: null, to: 40 },
});
const unchanged: AdmissionSummary = Object.freeze({
  outcome: 'unchanged',
  mode: 'sleep',
  policyWarnings: [],
  hooks: { web: 'kept' },
  grace: null,
});
const warned: AdmissionSummary = Object.freeze({
  outcome: 'mutated',
  mode: 'sleep',
  policyWarnings: [
    {
      key: 'prestop-injector.io/delay-seconds',
      value: 'soon',
      source: 'pod' as const,
      reason: 'not a number',
      message: 'bad',
    },
  ],
  hooks: { web: 'sleep 10s' },
  grace: null,
});

let serial = 0;
const record = (pod = 'web-*'): AdmissionRecord => ({
  namespace: 'shop',
  pod,
  uid: `uid-${++serial}`,
  ms: 0.4,
});

describe('admission log', () => {
  it('each: one admission line per pod, hits included', () => {
    const { log, lines } = capture('each');
    const sent = [record(), record(), record()];
    log.record(mutated, 'miss', sent[0]!);
    log.record(mutated, 'hit', sent[1]!);
    log.record(mutated, 'hit', sent[2]!);
    log.close();
    assert.deepEqual(
      lines.map((l) => [l['msg'], l['uid'], l['outcome'], l['hooks']]),
      sent.map((r) => ['admission', r.uid, 'mutated', { web: 'sleep 10s' }]),
    );
  });

  it('grouped: the miss in full, then the hits of each plan on one line', () => {
    const { log, lines } = capture('grouped');
    const first = record();
    log.record(mutated, 'miss', first);
    const hits = Array.from({ length: 5 }, () => record());
    const other = [record('db-0'), record('db-1')];
    for (const [i, hit] of hits.entries()) {
      log.record(mutated, 'hit', hit);
      if (i < other.length) log.record(unchanged, 'hit', other[i]!);
    }
    assert.equal(lines.length, 1, 'hits wait for their group');
    assert.equal(lines[0]!['msg'], 'admission');
    assert.equal(lines[0]!['uid'], first.uid);
    log.close();
    assert.equal(lines.length, 3);
    const groups = lines.slice(1);
    const byOutcome = new Map(groups.map((g) => [g['outcome'], g]));
    assert.equal(byOutcome.get('mutated')!['msg'], 'admissions');
    assert.equal(byOutcome.get('mutated')!['count'], 5);
    assert.deepEqual(byOutcome.get('mutated')!['admissions'], hits);
    assert.deepEqual(byOutcome.get('mutated')!['hooks'], { web: 'sleep 10s' });
    assert.deepEqual(byOutcome.get('unchanged')!['admissions'], other);
    // Every admission once; groups are written in the order their plans were first hit.
    assert.deepEqual(
      admissionRecords(lines).map((r) => r['uid']),
      [first, ...hits, ...other].map((r) => r.uid),
    );
  });

  it('grouped: bypasses, errors and hits with warnings get lines of their own', () => {
    const { log, lines } = capture('grouped');
    const error: AdmissionSummary = { outcome: 'error', reason: 'boom', policyWarnings: [] };
    const skipped: AdmissionSummary = {
      outcome: 'skipped',
      reason: 'kind Pod',
      policyWarnings: [],
    };
    const sent: [AdmissionSummary, AnswerCacheResult, AdmissionRecord][] = [
      [skipped, 'bypass', record()],
      [error, 'bypass', record()],
      [warned, 'miss', record()],
      [warned, 'hit', record()],
    ];
    for (const [summary, cache, r] of sent) log.record(summary, cache, r);
    assert.deepEqual(
      lines.map((l) => [l['msg'], l['uid'], l['level']]),
      sent.map(([summary, , r]) => ['admission', r.uid, summary.outcome === 'error' ? 50 : 30]),
    );
    assert.deepEqual(lines[3]!['warnings'], ['prestop-injector.io/delay-seconds']);
    log.close();
    assert.equal(lines.length, 4, 'nothing was pending');
  });

  it('grouped: a full group is written at once, and the rest after GROUP_MS', () => {
    mock.timers.enable({ apis: ['setTimeout'] });
    try {
      const { log, lines } = capture('grouped');
      const sent = Array.from({ length: GROUP_LIMIT + 3 }, () => record());
      for (const r of sent) log.record(mutated, 'hit', r);
      assert.equal(lines.length, 1);
      assert.equal(lines[0]!['count'], GROUP_LIMIT);
      mock.timers.tick(GROUP_MS - 1);
      assert.equal(lines.length, 1, 'the rest waits up to GROUP_MS');
      mock.timers.tick(1);
      assert.equal(lines.length, 2);
      assert.equal(lines[1]!['count'], 3);
      assert.deepEqual(
        admissionRecords(lines).map((r) => r['uid']),
        sent.map((r) => r.uid),
      );
      log.close();
      assert.equal(lines.length, 2, 'written once');
    } finally {
      mock.timers.reset();
    }
  });

  it('grouped: long names make smaller groups, each line under the size limit', () => {
    const { log, lines } = capture('grouped');
    const long = 'n'.repeat(253);
    const sent = Array.from({ length: 200 }, () => ({
      ...record(long),
      namespace: 'x'.repeat(63),
    }));
    for (const r of sent) log.record(mutated, 'hit', r);
    log.close();
    assert.ok(lines.length > 200 / GROUP_LIMIT, `${lines.length} lines`);
    for (const line of lines) {
      const length = Buffer.byteLength(JSON.stringify(line));
      assert.ok(length <= GROUP_BYTES, `a ${length}-byte line`);
      assert.ok((line['count'] as number) > 1, 'still grouped');
    }
    assert.deepEqual(
      admissionRecords(lines).map((r) => r['uid']),
      sent.map((r) => r.uid),
    );
  });

  it('grouped: pending records are written when the process exits', async () => {
    const { spawnSync } = await import('node:child_process');
    const source = new URL('../../src/webhook/admission-log.ts', import.meta.url).href;
    const logSource = new URL('../../src/log.ts', import.meta.url).href;
    const run = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { AdmissionLog } from ${JSON.stringify(source)};
         import { createLogger } from ${JSON.stringify(logSource)};
         const log = new AdmissionLog(createLogger('info'), 'grouped');
         const summary = { outcome: 'mutated', mode: 'sleep', policyWarnings: [] };
         for (let i = 0; i < 7; i++) log.record(summary, 'hit', { namespace: 'n', pod: 'p', uid: 'u' + i, ms: 1 });
         process.exit(0);`,
      ],
      { encoding: 'utf8' },
    );
    assert.equal(run.status, 0, run.stderr);
    const lines = run.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as LogEntry);
    assert.deepEqual(
      admissionRecords(lines).map((r) => r['uid']),
      ['u0', 'u1', 'u2', 'u3', 'u4', 'u5', 'u6'],
    );
  });

  it('writes nothing below its level, and keeps no records for it', () => {
    const { log, lines } = capture('grouped', 'warn');
    for (let i = 0; i < GROUP_LIMIT * 2; i++) log.record(mutated, 'hit', record());
    log.record(mutated, 'miss', record());
    log.close();
    assert.deepEqual(lines, []);
  });
});
