// The API server's audit log, as the tests read it: which requests a user
// made (e.g. how often the webhook's cluster view lists or watches).

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { makeTempDir } from './processes.ts';

/** One line of the API server's JSON audit log (the fields the tests read). */
export interface AuditEvent {
  auditID: string;
  stage: string;
  verb: string;
  requestURI: string;
  user: { username: string };
  objectRef?: { resource?: string; namespace?: string; name?: string };
  responseStatus?: { code?: number };
  requestReceivedTimestamp: string;
}

export interface AuditLog {
  /** kube-apiserver flags: pass as `extraApiserverArgs`. */
  args: string[];
  path: string;
  /** Every event so far. */
  events(): AuditEvent[];
}

/**
 * An audit policy that records, at Metadata level, every request made by the
 * given users or members of the given groups (and nothing else), logged
 * synchronously to a JSON-lines file. Start the control plane with its args.
 */
export async function prepareAuditLog(who: {
  users?: string[];
  groups?: string[];
}): Promise<AuditLog> {
  const dir = await makeTempDir('prestop-e2e-audit-');
  const policyPath = path.join(dir, 'policy.json');
  const logPath = path.join(dir, 'audit.log');
  const policy = {
    apiVersion: 'audit.k8s.io/v1',
    kind: 'Policy',
    omitStages: ['RequestReceived'],
    rules: [
      ...(who.users ? [{ level: 'Metadata', users: who.users }] : []),
      ...(who.groups ? [{ level: 'Metadata', userGroups: who.groups }] : []),
      { level: 'None' },
    ],
  };
  await fsp.writeFile(policyPath, JSON.stringify(policy, null, 2) + '\n');
  return {
    args: [
      `--audit-policy-file=${policyPath}`,
      `--audit-log-path=${logPath}`,
      '--audit-log-format=json',
      // Written before the response: a finished request is already in the file.
      '--audit-log-mode=blocking',
    ],
    path: logPath,
    events() {
      let text: string;
      try {
        text = fs.readFileSync(logPath, 'utf8');
      } catch {
        return [];
      }
      // The last piece is empty, or a line still being written.
      return text
        .split('\n')
        .slice(0, -1)
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line) as AuditEvent);
    },
  };
}

/** What the cluster view asks the API server for, by purpose, as its own counters say. */
export interface ViewRequestCounts {
  /** Lists and watches of namespaces and nodes. */
  list: number;
  watch: number;
  /** GETs of one namespace. */
  read: number;
  version: number;
  /** GETs of the API server's /metrics (its feature gates). */
  metrics: number;
}

/** A user's requests for namespaces, nodes, /version and /metrics, from the audit log. */
export function countViewRequests(audit: AuditLog, username: string): ViewRequestCounts {
  const seen = new Set<string>();
  const counts = { list: 0, watch: 0, read: 0, version: 0, metrics: 0 };
  for (const event of audit.events()) {
    // A watch logs ResponseStarted, then ResponseComplete: count it once.
    if (event.user.username !== username || seen.has(event.auditID)) continue;
    seen.add(event.auditID);
    const resource = event.objectRef?.resource;
    if (event.requestURI === '/version') counts.version++;
    else if (event.requestURI === '/metrics') counts.metrics++;
    else if (resource !== 'namespaces' && resource !== 'nodes') continue;
    else if (event.verb === 'list') counts.list++;
    else if (event.verb === 'watch') counts.watch++;
    else if (event.verb === 'get') counts.read++;
  }
  return counts;
}
