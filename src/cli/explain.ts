// `inject --explain`: the termination timeline of each pod, before and after,
// as a text chart a person can read at a glance.

import type { Capabilities } from '../core/capabilities.ts';
import type { SidecarConfig } from '../core/sidecars.ts';
import { podTimeline, type ContainerTimeline, type PodTimeline } from '../core/timeline.ts';
import type { InjectedDocument } from './inject.ts';

const MAX_COLUMNS = 60;

const LEGEND =
  'legend: = preStop runs   ? preStop may still run   T SIGTERM   - may run after SIGTERM   ~ proxy drains   x proxy exits   K SIGKILL deadline';

function row(c: ContainerTimeline, grace: number, scale: number): string {
  const width = Math.ceil(grace / scale) + 1;
  const at = (seconds: number) => Math.min(width - 1, Math.round(seconds / scale));
  const cells: string[] = Array.from({ length: width }, () => ' ');
  const fill = (from: number, to: number, ch: string) => {
    for (let i = at(from); i < at(to); i++) cells[i] = ch;
  };
  const isProxy = c.role !== 'app';
  if (c.native) {
    fill(0, c.sigterm.min, '.');
    // Istio's native preStop drains from t=0; its listeners accept until drainDuration.
    if (c.acceptsUntil !== null) fill(0, Math.min(c.acceptsUntil, c.sigterm.min), '~');
  } else {
    fill(0, c.hook.min, '=');
    fill(c.hook.min, c.sigterm.max, '?');
  }
  const after = c.native ? c.sigterm.min : c.sigterm.max;
  if (isProxy && !c.native && !c.exitsOnZero && !c.hook.waitsForApp) {
    const gone = Math.min(grace, c.sigterm.min + c.drainSeconds);
    fill(c.sigterm.min, gone, '~');
    if (gone < grace) cells[at(gone)] = 'x';
  } else {
    fill(after, grace, isProxy ? '~' : '-');
  }
  cells[at(c.sigterm.min)] = 'T';
  cells[width - 1] = 'K';
  return cells.join('');
}

function nativeLabel(c: ContainerTimeline): string | null {
  if (!c.native) return null;
  return c.acceptsUntil === null
    ? 'ordered by Kubernetes'
    : `drains from 0s, accepts until ${c.acceptsUntil}s; ordered by Kubernetes`;
}

function axis(grace: number, scale: number): string {
  const width = Math.ceil(grace / scale) + 1;
  const cells: string[] = Array.from({ length: width + 6 }, () => ' ');
  const step = scale * 10;
  for (let s = 0; s <= grace; s += step) {
    const label = `${s}s`;
    const col = Math.round(s / scale);
    for (let i = 0; i < label.length; i++) cells[col + i] = label[i]!;
  }
  return cells.join('').trimEnd();
}

function renderTimeline(title: string, timeline: PodTimeline): string {
  const scale = Math.max(1, Math.ceil(timeline.grace / MAX_COLUMNS));
  const nameWidth = Math.max(
    9,
    ...timeline.containers.map((c) => c.name.length + (c.native ? 9 : 0)),
  );
  const pad = (text: string) => text.padEnd(nameWidth + 2);
  const lines = [
    `${title}  (grace ${timeline.grace}s, 1 column = ${scale}s)`,
    `${pad('')}${axis(timeline.grace, scale)}`,
  ];
  for (const c of timeline.containers) {
    const name = c.native ? `${c.name} (native)` : c.name;
    lines.push(`${pad(name)}${row(c, timeline.grace, scale)}  ${nativeLabel(c) ?? c.hook.label}`);
  }
  if (timeline.problems.length === 0) lines.push('  ok: no problem found');
  for (const problem of timeline.problems) lines.push(`  ! ${problem}`);
  return lines.join('\n');
}

export function explainDocuments(
  documents: readonly InjectedDocument[],
  config: SidecarConfig,
  capabilities: Pick<Capabilities, 'sleepAction'> = { sleepAction: true },
): string {
  const sections: string[] = [];
  for (const doc of documents) {
    if (doc.mutation === null) continue;
    const { sleepAction } = capabilities;
    const before = podTimeline(doc.mutation.original, [], config, sleepAction);
    const after = podTimeline(doc.mutation.pod, doc.mutation.decisions, config, sleepAction);
    const note =
      doc.mutation.outcome === 'mutated'
        ? ''
        : ` (${doc.mutation.outcome}: ${doc.mutation.reason ?? ''})`;
    sections.push(
      [
        `== ${doc.label}${note}`,
        renderTimeline('before', before),
        '',
        renderTimeline('after', after),
      ].join('\n'),
    );
  }
  if (sections.length === 0) return 'no pods or pod templates in the input\n';
  return `${sections.join('\n\n')}\n\n${LEGEND}\n`;
}
