// The node edge: the kernel's IPVS tables and sysctls from /proc, kube-proxy's
// mode from its metrics port, and ipvsadm to delete a real server (Node.js
// has no netlink socket; see docs/adr/0011-ipvs-reaper.md).

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { NodeFacts } from './diagnose.ts';
import {
  deleteRealServerArgs,
  parseConnectionTable,
  parseIpvsTable,
  type ConnectionEntry,
  type RealServer,
} from './ipvs-table.ts';

export interface NodeOptions {
  /** Where procfs is mounted; /proc on a node. */
  procRoot: string;
  /** The ipvsadm to run. */
  ipvsadm: string;
  /** kube-proxy's metrics address, which answers GET /proxyMode. */
  kubeProxyMetricsUrl: string;
}

export const DEFAULT_NODE_OPTIONS: NodeOptions = {
  procRoot: '/proc',
  ipvsadm: 'ipvsadm',
  kubeProxyMetricsUrl: 'http://127.0.0.1:10249',
};

export interface IpvsNode {
  realServers(): Promise<RealServer[]>;
  /** Connection entries whose destination is this address. */
  entriesTo(address: string): Promise<ConnectionEntry[]>;
  deleteRealServer(server: RealServer): Promise<void>;
  facts(): Promise<NodeFacts>;
}

async function readOptional(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

async function readSysctl(procRoot: string, name: string): Promise<number | null> {
  const text = await readOptional(path.join(procRoot, 'sys/net/ipv4/vs', name));
  if (text === null) return null;
  const value = Number(text.trim());
  return Number.isInteger(value) ? value : null;
}

async function kubeProxyMode(
  metricsUrl: string,
): Promise<{ mode: string | null; source: NodeFacts['kubeProxyModeSource'] }> {
  try {
    const response = await fetch(new URL('/proxyMode', metricsUrl), {
      signal: AbortSignal.timeout(2000),
    });
    const text = (await response.text()).trim();
    if (response.ok && /^[a-z]+$/.test(text)) return { mode: text, source: 'kube-proxy' };
  } catch {
    // Not reachable (kube-proxy binds it elsewhere, or runs in no pod here): look further.
  }
  // kube-proxy in IPVS mode binds every Service address to this dummy link.
  if (existsSync('/sys/class/net/kube-ipvs0')) {
    return { mode: 'ipvs', source: 'kube-ipvs0 interface' };
  }
  return { mode: null, source: 'unknown' };
}

function run(file: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 10_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || error.message}`));
      else resolve();
    });
  });
}

export function ipvsNode(options: NodeOptions = DEFAULT_NODE_OPTIONS): IpvsNode {
  const procFile = (name: string) => path.join(options.procRoot, 'net', name);
  return {
    async realServers() {
      const text = await readOptional(procFile('ip_vs'));
      return text === null ? [] : parseIpvsTable(text).realServers;
    },
    async entriesTo(address) {
      const text = await readOptional(procFile('ip_vs_conn'));
      if (text === null) return [];
      return parseConnectionTable(text).filter((entry) => entry.destination.address === address);
    },
    deleteRealServer: (server) => run(options.ipvsadm, deleteRealServerArgs(server)),
    async facts() {
      const [connReuseMode, expireNodestConn, proxy, table] = await Promise.all([
        readSysctl(options.procRoot, 'conn_reuse_mode'),
        readSysctl(options.procRoot, 'expire_nodest_conn'),
        kubeProxyMode(options.kubeProxyMetricsUrl),
        readOptional(procFile('ip_vs')),
      ]);
      return {
        kernel: os.release(),
        connReuseMode,
        expireNodestConn,
        kubeProxyMode: proxy.mode,
        kubeProxyModeSource: proxy.source,
        virtualServices: table === null ? 0 : parseIpvsTable(table).services.length,
      };
    },
  };
}
