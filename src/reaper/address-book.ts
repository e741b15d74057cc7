// Who holds an address now, from Pods and EndpointSlices: a live pod, a
// terminating one, nobody although a pod held it (gone), or nobody we know
// of. Pure: the informers (watch.ts) feed it the facts it keeps.
//
// Only Pods make an address a pod's: an EndpointSlice may list addresses
// of anything (a selector-less Service's external servers), and a
// hostNetwork pod's address is its node's.

export interface PodFacts {
  /** namespace/name */
  key: string;
  addresses: readonly string[];
  /** deletionTimestamp is set: graceful termination is under way. */
  terminating: boolean;
  /** Phase Succeeded or Failed: every container has stopped for good. */
  finished: boolean;
  hostNetwork: boolean;
}

export interface EndpointFacts {
  addresses: readonly string[];
  terminating: boolean;
  /** namespace/name of the Pod it stands for (targetRef), if any. */
  pod?: string;
}

export type AddressState =
  | { kind: 'live'; holder: string }
  | { kind: 'terminating'; holder: string }
  | { kind: 'gone'; pod: string }
  | { kind: 'unknown' };

export interface Cidr {
  text: string;
  family: 4 | 6;
  bits: bigint;
  prefix: number;
}

/** Addresses no holder claimed for this long are forgotten (their real servers were reaped long ago). */
const FORGET_AFTER_MS = 60 * 60_000;

function addressBits(address: string): { family: 4 | 6; bits: bigint } | null {
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(address)) {
    const parts = address.split('.').map(Number);
    if (parts.some((p) => p > 255)) return null;
    return { family: 4, bits: parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n) };
  }
  if (!address.includes(':')) return null;
  const [head, tail, extra] = address.split('::');
  if (extra !== undefined) return null;
  const headGroups = head === '' ? [] : head!.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const missing = 8 - headGroups.length - tailGroups.length;
  if (tail === undefined ? missing !== 0 : missing < 1) return null;
  const groups = [
    ...headGroups,
    ...Array<string>(tail === undefined ? 0 : missing).fill('0'),
    ...tailGroups,
  ];
  if (!groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return null;
  return { family: 6, bits: groups.reduce((acc, g) => (acc << 16n) | BigInt(`0x${g}`), 0n) };
}

/** "10.244.0.0/16" or "fd00::/48"; null when it is not one. */
export function parseCidr(text: string): Cidr | null {
  const [address, prefixText, extra] = text.trim().split('/');
  if (address === undefined || prefixText === undefined || extra !== undefined) return null;
  const parsed = addressBits(address);
  const prefix = Number(prefixText);
  if (parsed === null || !/^\d+$/.test(prefixText)) return null;
  if (prefix > (parsed.family === 4 ? 32 : 128)) return null;
  return { text: text.trim(), family: parsed.family, bits: parsed.bits, prefix };
}

export function cidrContains(cidr: Cidr, address: string): boolean {
  const parsed = addressBits(address);
  if (parsed === null || parsed.family !== cidr.family) return false;
  const width = BigInt(cidr.family === 4 ? 32 : 128);
  const shift = width - BigInt(cidr.prefix);
  return parsed.bits >> shift === cidr.bits >> shift;
}

function addTo<K, V>(index: Map<K, Set<V>>, key: K, value: V): void {
  let set = index.get(key);
  if (set === undefined) index.set(key, (set = new Set()));
  set.add(value);
}

function removeFrom<K, V>(index: Map<K, Set<V>>, key: K, value: V): void {
  const set = index.get(key);
  set?.delete(value);
  if (set?.size === 0) index.delete(key);
}

export class AddressBook {
  private readonly pods = new Map<string, PodFacts>();
  private readonly podsByAddress = new Map<string, Set<string>>();
  private readonly slices = new Map<string, readonly EndpointFacts[]>();
  private readonly slicesByAddress = new Map<string, Set<string>>();
  /** Address -> the last pod that held it, and since when nobody has. */
  private readonly formerPods = new Map<string, { pod: string; sinceMs: number }>();
  private readonly podCidrs: readonly Cidr[];
  private readonly now: () => number;

  constructor(options: { podCidrs?: readonly Cidr[]; now?: () => number } = {}) {
    this.podCidrs = options.podCidrs ?? [];
    this.now = options.now ?? Date.now;
  }

  upsertPod(facts: PodFacts): void {
    this.removePod(facts.key);
    this.pods.set(facts.key, facts);
    if (facts.hostNetwork) return;
    for (const address of facts.addresses) {
      addTo(this.podsByAddress, address, facts.key);
      this.formerPods.delete(address);
    }
  }

  removePod(key: string): void {
    const old = this.pods.get(key);
    if (old === undefined) return;
    this.pods.delete(key);
    if (old.hostNetwork) return;
    for (const address of old.addresses) {
      removeFrom(this.podsByAddress, address, key);
      if (!this.podsByAddress.has(address)) {
        this.formerPods.set(address, { pod: key, sinceMs: this.now() });
      }
    }
  }

  /** A full list: pods it lacks are gone. */
  replacePods(all: readonly PodFacts[]): void {
    const listed = new Set(all.map((p) => p.key));
    for (const key of [...this.pods.keys()]) if (!listed.has(key)) this.removePod(key);
    for (const facts of all) this.upsertPod(facts);
  }

  upsertSlice(key: string, endpoints: readonly EndpointFacts[]): void {
    this.removeSlice(key);
    this.slices.set(key, endpoints);
    for (const endpoint of endpoints) {
      for (const address of endpoint.addresses) addTo(this.slicesByAddress, address, key);
    }
  }

  removeSlice(key: string): void {
    const old = this.slices.get(key);
    if (old === undefined) return;
    this.slices.delete(key);
    for (const endpoint of old) {
      for (const address of endpoint.addresses) removeFrom(this.slicesByAddress, address, key);
    }
  }

  replaceSlices(all: ReadonlyMap<string, readonly EndpointFacts[]>): void {
    for (const key of [...this.slices.keys()]) if (!all.has(key)) this.removeSlice(key);
    for (const [key, endpoints] of all) this.upsertSlice(key, endpoints);
  }

  state(address: string): AddressState {
    let terminatingHolder: string | undefined;
    let finishedPod: string | undefined;
    for (const key of this.podsByAddress.get(address) ?? []) {
      const pod = this.pods.get(key)!;
      if (pod.finished) {
        finishedPod = key;
        continue;
      }
      if (!pod.terminating) return { kind: 'live', holder: `pod ${key}` };
      terminatingHolder ??= `pod ${key}`;
    }
    for (const key of this.slicesByAddress.get(address) ?? []) {
      for (const endpoint of this.slices.get(key)!) {
        if (!endpoint.addresses.includes(address)) continue;
        if (!endpoint.terminating) return { kind: 'live', holder: `EndpointSlice ${key}` };
        // The Pod object is the truth about its pod: a terminating endpoint
        // whose pod was deleted is only the slice lagging behind.
        if (endpoint.pod !== undefined && !this.pods.has(endpoint.pod)) continue;
        terminatingHolder ??= `EndpointSlice ${key}`;
      }
    }
    if (terminatingHolder !== undefined) return { kind: 'terminating', holder: terminatingHolder };
    if (finishedPod !== undefined) return { kind: 'gone', pod: finishedPod };
    const former = this.formerPods.get(address);
    if (former !== undefined) return { kind: 'gone', pod: former.pod };
    const cidr = this.podCidrs.find((c) => cidrContains(c, address));
    if (cidr !== undefined) return { kind: 'gone', pod: `(no pod; in pod CIDR ${cidr.text})` };
    return { kind: 'unknown' };
  }

  /** Forgets addresses nobody has held for an hour; called on each scan. */
  prune(): void {
    const before = this.now() - FORGET_AFTER_MS;
    for (const [address, former] of this.formerPods) {
      if (former.sinceMs < before) this.formerPods.delete(address);
    }
  }

  sizes(): { pods: number; slices: number; formerPodAddresses: number } {
    return {
      pods: this.pods.size,
      slices: this.slices.size,
      formerPodAddresses: this.formerPods.size,
    };
  }
}
