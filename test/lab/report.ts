// Turning measured rollouts into the table and the JSON line.

import type { FailureKind, LoadResult } from './load.ts';
import type { HookRecord } from './kubelet.ts';

/** Nearest-rank percentile; 0 for no samples. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export interface RolloutResult {
  scenario: string;
  strategy: string;
  load: LoadResult;
  /** From the first new pod to the last old pod gone. */
  rolloutSeconds: number;
  /** The app containers' preStop hooks of the pods that were stopped. */
  appHooks: HookRecord[];
  grace: number;
}

/** The longest app preStop, and how the hooks ended. */
export function describeHooks(hooks: readonly HookRecord[]): string {
  if (hooks.length === 0) return 'none';
  const longest = Math.max(...hooks.map((h) => h.ms)) / 1000;
  const ends = [...new Set(hooks.map((h) => h.end))].join(', ');
  return `${longest.toFixed(1)} s, ${ends}`;
}

const COLUMNS = [
  'scenario',
  'strategy',
  'requests',
  'failed',
  '5xx',
  'reset',
  'timeout',
  'p99 ms',
  'rollout s',
  'grace s',
  'app preStop (longest, how it ended)',
] as const;

function row(result: RolloutResult): string[] {
  const kinds: FailureKind[] = ['5xx', 'reset', 'timeout'];
  const other = result.load.byKind.other;
  return [
    result.scenario,
    result.strategy,
    String(result.load.requests),
    String(result.load.failed) + (other > 0 ? ` (${other} other)` : ''),
    ...kinds.map((kind) => String(result.load.byKind[kind])),
    String(Math.round(result.load.p99Ms)),
    result.rolloutSeconds.toFixed(1),
    String(result.grace),
    describeHooks(result.appHooks),
  ];
}

/** A Markdown table, so the README can show it as printed. */
export function table(results: readonly RolloutResult[]): string {
  const rows = [COLUMNS as readonly string[], ...results.map(row)];
  const widths = COLUMNS.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const numeric = (i: number) => i >= 2 && i <= 9;
  const line = (cells: readonly string[]) =>
    `| ${cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (numeric(i) ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(rows[0]!), rule, ...rows.slice(1).map(line)].join('\n');
}

export function jsonLine(results: readonly RolloutResult[]): string {
  return JSON.stringify({
    scenarios: results.map((r) => ({
      name: r.scenario,
      strategy: r.strategy,
      requests: r.load.requests,
      failed: r.load.failed,
      failed_by_kind: r.load.byKind,
      p99_ms: Math.round(r.load.p99Ms),
      rollout_seconds: Number(r.rolloutSeconds.toFixed(2)),
    })),
  });
}
