// The admission log: a record of every admission answered, with its uid.
//
// A pod planned afresh, skipped, failed or warned about gets a line of its
// own ("admission"). A pod answered from a kept plan (see handler.ts) is the
// same decision as the one logged when that plan was made, so in grouped
// mode its record (namespace, pod, uid, ms) joins the others of the same
// plan in one "admissions" line: at most GROUP_LIMIT records and about
// GROUP_BYTES, written no later than GROUP_MS after the first. The
// decision's fields are serialized once per plan and pino's per-line work
// is done once per group: under load that was the largest cost left on the
// path of a kept answer (ADR 7).

import type { Logger } from 'pino';
import type { AdmissionSummary, AnswerCacheResult } from './handler.ts';

export type AdmissionLogMode = 'each' | 'grouped';
export const ADMISSION_LOG_MODES: readonly AdmissionLogMode[] = ['each', 'grouped'];

export const GROUP_LIMIT = 50;
/** Under the 16 KiB at which container runtimes split lines, with room for pino's fields. */
export const GROUP_BYTES = 12 * 1024;
export const GROUP_MS = 1000;
/** A record's JSON besides its strings: keys, quotes, the number. */
const RECORD_OVERHEAD_BYTES = 64;

/** What is logged of one admission besides its decision. */
export interface AdmissionRecord {
  namespace: string;
  pod: string;
  uid: string;
  dryRun?: true;
  ms: number;
}

/** The log fields that come from the decision, not from the request. */
export function summaryFields(summary: AdmissionSummary): Record<string, unknown> {
  return {
    outcome: summary.outcome,
    reason: summary.reason,
    mode: summary.outcome === 'mutated' ? summary.mode : undefined,
    hooks: summary.hooks,
    grace: summary.grace ?? undefined,
    warnings:
      summary.policyWarnings.length > 0 ? summary.policyWarnings.map((w) => w.key) : undefined,
  };
}

interface Group {
  child: Logger;
  records: AdmissionRecord[];
  /** An upper estimate of the line's length. */
  bytes: number;
}

interface Decision {
  child: Logger;
  /** The JSON length of its fields. */
  bytes: number;
}

/** Logs still pending when the process exits, written before the log's own final flush. */
const live = new Set<AdmissionLog>();
let exitHookInstalled = false;
function flushAllOnExit(): void {
  for (const log of live) log.flush();
}

export class AdmissionLog {
  readonly #logger: Logger;
  readonly #grouped: boolean;
  // A child logger per shared summary: its fields serialized once.
  readonly #decisions = new WeakMap<AdmissionSummary, Decision>();
  #pending = new Map<AdmissionSummary, Group>();
  #timer: NodeJS.Timeout | undefined;

  constructor(logger: Logger, mode: AdmissionLogMode) {
    this.#logger = logger;
    this.#grouped = mode === 'grouped';
    if (this.#grouped) {
      live.add(this);
      if (!exitHookInstalled) {
        // Before the writer's own exit handler (registered with the logger), which ends the log.
        process.prependListener('exit', flushAllOnExit);
        exitHookInstalled = true;
      }
    }
  }

  record(summary: AdmissionSummary, cache: AnswerCacheResult, record: AdmissionRecord): void {
    const error = summary.outcome === 'error';
    if (cache === 'bypass') {
      this.#logger[error ? 'error' : 'info']({ ...summaryFields(summary), ...record }, 'admission');
      return;
    }
    const decision = this.#decisionFor(summary);
    const { child } = decision;
    // A hit with warnings is logged in full: each such pod is worth a look.
    if (!this.#grouped || cache === 'miss' || error || summary.policyWarnings.length > 0) {
      child[error ? 'error' : 'info'](record, 'admission');
      return;
    }
    if (!child.isLevelEnabled('info')) return;
    // Names, namespaces and uids are ASCII in any pod the API server keeps
    // (validation, after admission, rejects the rest): a byte per unit.
    const bytes =
      record.namespace.length + record.pod.length + record.uid.length + RECORD_OVERHEAD_BYTES;
    let group = this.#pending.get(summary);
    if (group !== undefined && group.bytes + bytes > GROUP_BYTES) {
      this.#pending.delete(summary);
      this.#write(group);
      group = undefined;
    }
    if (group === undefined) {
      group = { child, records: [], bytes: decision.bytes };
      this.#pending.set(summary, group);
    }
    group.records.push(record);
    group.bytes += bytes;
    if (group.records.length >= GROUP_LIMIT) {
      this.#pending.delete(summary);
      this.#write(group);
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.flush(), GROUP_MS);
      // Pending records must not keep a stopping process alive: close and exit write them.
      this.#timer.unref();
    }
  }

  /** Writes every pending group. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const pending = this.#pending;
    this.#pending = new Map();
    for (const group of pending.values()) this.#write(group);
  }

  /** Writes what is pending; nothing more is expected. */
  close(): void {
    this.flush();
    live.delete(this);
  }

  #write(group: Group): void {
    group.child.info({ count: group.records.length, admissions: group.records }, 'admissions');
  }

  #decisionFor(summary: AdmissionSummary): Decision {
    let decision = this.#decisions.get(summary);
    if (decision === undefined) {
      const fields = summaryFields(summary);
      decision = {
        child: this.#logger.child(fields),
        bytes: Buffer.byteLength(JSON.stringify(fields)),
      };
      this.#decisions.set(summary, decision);
    }
    return decision;
  }
}
