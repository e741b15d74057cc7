// Turning measured rollouts into Markdown tables and the JSON line.

import type { FailureKind } from './load.ts';
import type { RolloutResult } from './rollout.ts';
import { NO_ROLLOUT } from './strategies.ts';

/** A Markdown table, columns padded so that it also reads as plain text. */
export function markdownTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  numeric: (column: number) => boolean,
): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) =>
    `| ${cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (numeric(i) ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

/** "4.9-5.1", or "5.0" when they agree to a tenth, or "-" for none. */
export function range(values: readonly number[]): string {
  if (values.length === 0) return '-';
  const low = Math.min(...values).toFixed(1);
  const high = Math.max(...values).toFixed(1);
  return low === high ? low : `${low}-${high}`;
}

const KINDS: FailureKind[] = ['5xx', 'reset', 'timeout'];

/** Every rollout, one row each. */
export function fullTable(results: readonly RolloutResult[]): string {
  const header = [
    'scenario',
    'D s',
    'strategy',
    'requests',
    'failed',
    ...KINDS,
    'p99 ms',
    'rollout s',
    'grace s',
    'app SIGTERM s',
    'out of LB s',
  ];
  const rows = results.map((r) => {
    const other = r.load.byKind.other;
    return [
      r.scenario.name,
      r.scenario.delaySeconds === null ? '-' : String(r.scenario.delaySeconds),
      r.strategy,
      String(r.load.requests),
      String(r.load.failed) + (other > 0 ? ` (${other} other)` : ''),
      ...KINDS.map((kind) => String(r.load.byKind[kind])),
      String(Math.round(r.load.p99Ms)),
      r.strategy === NO_ROLLOUT ? '-' : r.rolloutSeconds.toFixed(1),
      String(r.grace),
      range(r.appSigtermSeconds) + (r.failedHooks > 0 ? ` (${r.failedHooks} hooks failed)` : ''),
      range(r.lbRemovalSeconds),
    ];
  });
  return markdownTable(header, rows, (i) => i === 1 || (i >= 3 && i <= 11));
}

/** One row per scenario, "failed / requests" per strategy: the README's table. */
export function summaryTable(
  results: readonly RolloutResult[],
  strategies: readonly string[],
): string {
  const scenarios = [...new Set(results.map((r) => r.scenario.name))];
  const rows = scenarios.map((name) => [
    name,
    ...strategies.map((strategy) => {
      const r = results.find((x) => x.scenario.name === name && x.strategy === strategy);
      return r === undefined ? '' : `${r.load.failed} / ${r.load.requests}`;
    }),
  ]);
  return markdownTable(['scenario (failed / requests)', ...strategies], rows, (i) => i > 0);
}

export function jsonLine(results: readonly RolloutResult[]): string {
  return JSON.stringify({
    scenarios: results.map((r) => ({
      name: r.scenario.name,
      kubelet: 'real',
      path: r.scenario.path,
      app: r.scenario.app,
      ...(r.scenario.mesh === undefined ? {} : { mesh: r.scenario.mesh }),
      d_s: r.scenario.delaySeconds,
      strategy: r.strategy,
      requests: r.load.requests,
      failed: r.load.failed,
      failed_by_kind: r.load.byKind,
      p99_ms: Math.round(r.load.p99Ms),
      rollout_seconds: r.strategy === NO_ROLLOUT ? null : Number(r.rolloutSeconds.toFixed(2)),
      grace_seconds: r.grace,
      injected_hooks: r.injectedHooks,
      app_sigterm_seconds: r.appSigtermSeconds.map((s) => Number(s.toFixed(2))),
      proxy_sigterm_seconds: r.proxySigtermSeconds.map((s) => Number(s.toFixed(2))),
      lb_removal_seconds: r.lbRemovalSeconds.map((s) => Number(s.toFixed(2))),
      failed_hooks: r.failedHooks,
    })),
  });
}
