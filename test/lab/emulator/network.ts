// The lab's network: one "node" namespace holding a bridge, the load balancer
// and the load generator, and one namespace per pod, wired to the bridge by a
// veth pair. Nothing is added to the machine's own network namespace, and the
// subnet exists only inside the lab's namespaces.

import {
  NS_PREFIX,
  destroyNamespaceSync,
  forgetNamespace,
  runCommand,
  trackNamespace,
} from './processes.ts';

const SUBNET_PREFIX = '10.231.0.';
const BRIDGE = 'br0';
const BRIDGE_ADDRESS = `${SUBNET_PREFIX}1`;
/** A MAC no interface has: frames sent to it reach nobody. */
const NOWHERE_MAC = '02:00:00:00:de:ad';

export interface PodNetwork {
  name: string;
  ns: string;
  ip: string;
  /** The pod end's peer, in the node namespace. */
  veth: string;
}

/** `ip` with its arguments in one string (no argument has a space). */
function ip(args: string): Promise<string> {
  return runCommand(['ip', ...args.split(' ')]);
}

export class LabNetwork {
  readonly ns: string;
  private nextHost = 10;
  private nextLink = 0;
  private readonly run: string;
  private readonly pods = new Set<string>();

  constructor(run: string) {
    this.run = run;
    this.ns = `${NS_PREFIX}${process.pid}-${run}-node`;
  }

  async create(): Promise<void> {
    await addNamespace(this.ns);
    await ip(`-n ${this.ns} link set lo up`);
    await ip(`-n ${this.ns} link add ${BRIDGE} type bridge`);
    await ip(`-n ${this.ns} addr add ${BRIDGE_ADDRESS}/24 dev ${BRIDGE}`);
    await ip(`-n ${this.ns} link set ${BRIDGE} up`);
  }

  /** A fresh namespace with its own address on the lab subnet. */
  async addPod(name: string): Promise<PodNetwork> {
    if (this.nextHost > 250) throw new Error('lab subnet exhausted');
    const pod: PodNetwork = {
      name,
      ns: `${NS_PREFIX}${process.pid}-${this.run}-${name}`,
      ip: `${SUBNET_PREFIX}${this.nextHost++}`,
      veth: `v${this.nextLink++}`,
    };
    this.pods.add(pod.ns);
    await addNamespace(pod.ns);
    await ip(`-n ${this.ns} link add ${pod.veth} type veth peer name eth0 netns ${pod.ns}`);
    await ip(`-n ${this.ns} link set ${pod.veth} master ${BRIDGE} up`);
    await ip(`-n ${pod.ns} link set lo up`);
    await ip(`-n ${pod.ns} addr add ${pod.ip}/24 dev eth0`);
    await ip(`-n ${pod.ns} link set eth0 up`);
    return pod;
  }

  /**
   * The pod is gone: its address disappears. Like a vanished pod IP on a real
   * cluster, SYNs sent to it go unanswered (a connect timeout, not a refusal).
   */
  async removePod(pod: PodNetwork): Promise<void> {
    await ip(`-n ${this.ns} link del ${pod.veth}`);
    await ip(
      `-n ${this.ns} neigh replace ${pod.ip} lladdr ${NOWHERE_MAC} dev ${BRIDGE} nud permanent`,
    );
    destroyNamespace(pod.ns);
    this.pods.delete(pod.ns);
  }

  /** Kills whatever still runs in the lab's namespaces and deletes them. */
  destroy(): void {
    for (const ns of this.pods) destroyNamespace(ns);
    this.pods.clear();
    destroyNamespace(this.ns);
  }
}

async function addNamespace(ns: string): Promise<void> {
  trackNamespace(ns);
  await runCommand(['ip', 'netns', 'add', ns]);
}

export function destroyNamespace(ns: string): void {
  destroyNamespaceSync(ns);
  forgetNamespace(ns);
}
