// The guest's network, as a node's: a dummy link holding Service addresses
// (kube-proxy's kube-ipvs0), and one network namespace per pod joined to
// the node by a veth pair and a /32 route (as many CNI plugins do). The
// guest's own tools live in /opt/bin (see scripts/install-ipvs-guest.sh).

import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';

export const IP = '/opt/bin/ip';
export const IPVSADM = '/opt/bin/ipvsadm';
/** The node side of every pod's veth: the pods' default gateway. */
const GATEWAY = '10.244.255.1';

export function run(file: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 20_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

export async function writeSysctl(name: string, value: number): Promise<void> {
  await writeFile(`/proc/sys/${name.replaceAll('.', '/')}`, `${value}\n`);
}

/** The node's side: forwarding on, and the Service address on kube-ipvs0. */
export async function setUpNode(clusterIP: string): Promise<void> {
  await writeSysctl('net.ipv4.ip_forward', 1);
  // kube-proxy turns IPVS's conntrack on for its iptables rules.
  await writeSysctl('net.ipv4.vs.conntrack', 1);
  await run(IP, ['link', 'add', 'kube-ipvs0', 'type', 'dummy']);
  await run(IP, ['addr', 'add', `${clusterIP}/32`, 'dev', 'kube-ipvs0']);
}

function vethName(netns: string): string {
  // Interface names are at most 15 bytes.
  return `v${netns}`.slice(0, 15);
}

/** A network namespace with `address` on its eth0, reachable from the node. */
export async function addNetns(netns: string, address: string): Promise<void> {
  const veth = vethName(netns);
  await run(IP, ['netns', 'add', netns]);
  await run(IP, ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
  await run(IP, ['link', 'set', veth, 'up']);
  await run(IP, ['addr', 'add', `${GATEWAY}/32`, 'dev', veth]);
  await run(IP, ['route', 'add', `${address}/32`, 'dev', veth]);
  const inside = (...args: string[]) => run(IP, ['-n', netns, ...args]);
  await inside('link', 'set', 'lo', 'up');
  await inside('addr', 'add', `${address}/32`, 'dev', 'eth0');
  await inside('link', 'set', 'eth0', 'up');
  await inside('route', 'add', GATEWAY, 'dev', 'eth0');
  await inside('route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0');
}

/** The namespace and its veth go: the address is no longer routed (CNI DEL). */
export async function removeNetns(netns: string): Promise<void> {
  await run(IP, ['link', 'del', vethName(netns)]).catch(() => {});
  await run(IP, ['netns', 'del', netns]).catch(() => {});
}

/** argv that runs a command inside a namespace. */
export function inNetns(netns: string, argv: readonly string[]): string[] {
  return [IP, 'netns', 'exec', netns, ...argv];
}
