// Reads a V8 .cpuprofile (node --cpu-prof) and ranks functions by self time
// and by inclusive time, so the hot path can be read without a GUI.

import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  startTime: number;
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

export interface Ranked {
  name: string;
  ms: number;
  share: number;
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url.startsWith('file://') ? relative(ROOT, fileURLToPath(url)) : url;
  const where = file === '' ? '' : ` ${file.replace(/^node_modules\//, '')}:${lineNumber + 1}`;
  return `${functionName || '(anonymous)'}${where}`;
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  self: Ranked[];
  inclusive: Ranked[];
}

/** Monotonic µs, the clock V8 stamps samples with (CLOCK_MONOTONIC, shared by processes). */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Ranks the samples taken within [fromUs, toUs] (monotonic µs): the load, without startup. */
export function summarizeProfile(
  path: string,
  window: { fromUs: number; toUs: number } = { fromUs: 0, toUs: Infinity },
  top = 40,
): ProfileSummary {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes)
    for (const child of node.children ?? []) parent.set(child, node.id);

  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    const us = profile.timeDeltas[i] ?? 0;
    at += us;
    if (at < window.fromUs || at > window.toUs) continue;
    const node = byId.get(id)!;
    totalUs += us;
    if (node.callFrame.functionName === '(idle)') idleUs += us;
    const name = frameName(node);
    self.set(name, (self.get(name) ?? 0) + us);
    // Each function once per sample, however deep the recursion.
    const seen = new Set<string>();
    for (let node: number | undefined = id; node !== undefined; node = parent.get(node)) {
      const frame = frameName(byId.get(node)!);
      if (seen.has(frame)) continue;
      seen.add(frame);
      inclusive.set(frame, (inclusive.get(frame) ?? 0) + us);
    }
  }
  const busyUs = totalUs - idleUs;
  const rank = (table: Map<string, number>) =>
    [...table]
      .filter(([name]) => !name.startsWith('(root)') && !name.startsWith('(idle)'))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: us / 1000, share: us / busyUs }));
  return {
    totalMs: totalUs / 1000,
    idleMs: idleUs / 1000,
    self: rank(self),
    inclusive: rank(inclusive),
  };
}

/** The ranking as µs of the main thread per request, when the request count is known. */
export function formatSummary(summary: ProfileSummary, requests?: number): string {
  const busyMs = summary.totalMs - summary.idleMs;
  const lines = [
    `profile: ${summary.totalMs.toFixed(0)} ms sampled, ${summary.idleMs.toFixed(0)} ms idle` +
      (requests === undefined
        ? '; shares are of busy time'
        : `; ${((busyMs * 1000) / requests).toFixed(1)} µs busy per request`),
  ];
  for (const [title, rows] of [
    ['self time', summary.self],
    ['inclusive time', summary.inclusive],
  ] as const) {
    lines.push('', `top by ${title}:`);
    for (const row of rows) {
      const figure =
        requests === undefined
          ? `${(row.share * 100).toFixed(1).padStart(5)}%`
          : `${((row.ms * 1000) / requests).toFixed(1).padStart(6)} µs`;
      lines.push(`  ${figure}  ${row.name}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
