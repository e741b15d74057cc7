// The IPVS lab's table and JSON line.

import { markdownTable } from '../lab/report.ts';
import type { LabResults, ScenarioResult } from './spec.ts';

function removal(result: ScenarioResult): string {
  const at = result.timeline.realServerRemovedS;
  return at === null ? 'stayed' : `${at.toFixed(1)}`;
}

export function ipvsTable(results: LabResults): string {
  const header = [
    'strategy',
    'conn_reuse_mode / expire_nodest_conn',
    'requests',
    'failed',
    'in flight at terminating: failed',
    'failed while terminating',
    'failed while stopping',
    'failed after exit',
    'real server removed s',
    'failed after removal',
    'diagnosis',
  ];
  const rows = results.scenarios.map((r) => [
    r.strategy,
    `${r.sysctls.connReuseMode} / ${r.sysctls.expireNodestConn}`,
    String(r.requests),
    String(r.failed),
    `${r.inFlightAtTerminating.failed} of ${r.inFlightAtTerminating.requests}`,
    String(r.failedByPhase.terminating),
    String(r.failedByPhase.stopping),
    String(r.failedByPhase.gone),
    removal(r),
    r.failedAfterRemoval === null ? '-' : String(r.failedAfterRemoval),
    r.diagnosis.exposure,
  ]);
  return markdownTable(header, rows, (i) => i >= 2 && i <= 9);
}

export function ipvsJsonLine(results: LabResults): string {
  return JSON.stringify({
    kernel: results.kernel,
    kubeVersion: results.kubeVersion,
    scenarios: results.scenarios.map((r) => ({ name: 'ipvs port reuse', ...r })),
  });
}
