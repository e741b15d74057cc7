// The reaper's loop: read the node's real servers, decide, remove those
// whose pod is gone (or only report them, in dry-run mode). Scans run one
// at a time, on a timer and soon after a pod or endpoint goes away.

import type { Logger } from 'pino';
import type { AddressBook } from './address-book.ts';
import { decide } from './decide.ts';
import type { IpvsNode } from './node.ts';
import type { ReaperMetrics } from './metrics.ts';

interface ScanResult {
  /** False when the caches had not synced: nothing was decided. */
  decided: boolean;
  weightZero: number;
  stale: number;
  reaped: string[];
  failed: string[];
}

export interface Reaper {
  scan(): Promise<ScanResult>;
  /** Asks for a scan soon; requests that arrive during a scan run one more after it. */
  requestScan(): void;
}

/** A pod's deletion and its endpoint's removal arrive together: one scan for both. */
const COALESCE_MS = 20;

export function createReaper(options: {
  node: IpvsNode;
  book: AddressBook;
  synced: () => boolean;
  dryRun: boolean;
  logger: Logger;
  metrics?: Pick<ReaperMetrics, 'reaped' | 'reapFailed' | 'staleSeen' | 'scanned'>;
}): Reaper {
  const { node, book, logger, metrics } = options;
  /** Stale servers already reported, so each is counted and logged once. */
  const reported = new Set<string>();
  let running: Promise<ScanResult> | undefined;
  let again = false;
  let timer: NodeJS.Timeout | undefined;

  async function scanOnce(): Promise<ScanResult> {
    const result: ScanResult = { decided: false, weightZero: 0, stale: 0, reaped: [], failed: [] };
    if (!options.synced()) return result;
    book.prune();
    const decisions = decide(await node.realServers(), (address) => book.state(address));
    result.decided = true;
    result.weightZero = decisions.length;
    const stale = decisions.filter((d) => d.verdict.action === 'reap');
    result.stale = stale.length;
    metrics?.scanned(result.weightZero, result.stale);
    const present = new Set(decisions.map((d) => d.name));
    for (const name of reported) if (!present.has(name)) reported.delete(name);

    for (const { server, name, verdict } of stale) {
      if (verdict.action !== 'reap') continue;
      const details = {
        realServer: name,
        pod: verdict.pod,
        activeConnections: server.activeConnections,
        inactiveConnections: server.inactiveConnections,
      };
      if (!reported.has(name)) {
        reported.add(name);
        metrics?.staleSeen();
        logger.info(
          details,
          options.dryRun ? 'stale real server (dry run: kept)' : 'stale real server',
        );
      }
      if (options.dryRun) continue;
      try {
        await node.deleteRealServer(server);
        result.reaped.push(name);
        metrics?.reaped();
        // The kernel expires them on their next packet (or at once) when
        // expire_nodest_conn=1; otherwise they drop new connections until they time out.
        const left = (await node.entriesTo(server.address)).length;
        logger.info({ ...details, entriesLeft: left }, 'reaped real server');
      } catch (error) {
        result.failed.push(name);
        metrics?.reapFailed();
        logger.warn({ ...details, error: (error as Error).message }, 'cannot remove real server');
      }
    }
    return result;
  }

  function scan(): Promise<ScanResult> {
    if (running !== undefined) {
      again = true;
      return running;
    }
    running = scanOnce().finally(() => {
      running = undefined;
      if (again) {
        again = false;
        requestScan();
      }
    });
    return running;
  }

  function requestScan(): void {
    if (timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      scan().catch((error: unknown) =>
        logger.warn({ error: (error as Error).message }, 'scan failed'),
      );
    }, COALESCE_MS);
    timer.unref();
  }

  return { scan, requestScan };
}
