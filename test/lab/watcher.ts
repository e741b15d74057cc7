// The load balancer's endpoint feed: watches the Service's EndpointSlices,
// as ingress-nginx does, and applies each change to HAProxy only after a
// propagation delay D, in the order the changes were seen (one watch
// stream). An endpoint is in rotation while its `ready` condition is not
// false, ingress-nginx's rule: a terminating pod's endpoint turns not ready
// when the pod is deleted, so D counts from the deletion as the
// EndpointSlice controller publishes it.

import { Watch, type KubeConfig } from '@kubernetes/client-node';
import type { Haproxy } from './haproxy.ts';

interface SliceEndpoint {
  addresses?: string[];
  conditions?: { ready?: boolean };
}

interface Slice {
  metadata?: { name?: string };
  endpoints?: SliceEndpoint[] | null;
}

export interface FeedChange {
  /** Wall-clock ms. */
  seenAt: number;
  landedAt: number;
  ip: string;
  change: 'added' | 'removed';
}

export class EndpointFeed {
  readonly changes: FeedChange[] = [];
  private readonly slices = new Map<string, Set<string>>();
  /** What HAProxy has now: ip -> slot. */
  private readonly inRotation = new Map<string, number>();
  private readonly slotOf = new Map<string, number>();
  private nextSlot = 1;
  private delayMs = 0;
  private tail: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private abort: AbortController | undefined;
  private readonly haproxy: Haproxy;
  private readonly port: number;

  constructor(haproxy: Haproxy, port: number) {
    this.haproxy = haproxy;
    this.port = port;
  }

  /** Starts watching; until delay() is called, changes land at once. */
  async start(kubeConfig: KubeConfig, namespace: string, service: string): Promise<void> {
    this.abort = await new Watch(kubeConfig).watch(
      `/apis/discovery.k8s.io/v1/namespaces/${namespace}/endpointslices`,
      { labelSelector: `kubernetes.io/service-name=${service}` },
      (phase, object: Slice) => this.onEvent(phase, object),
      (error: unknown) => {
        // Aborted by stop(): not a failure.
        if (error !== null && error !== undefined && this.abort !== undefined) {
          this.failure ??= new Error(`EndpointSlice watch ended: ${String(error)}`);
        }
      },
    );
  }

  /** From now on every change lands `seconds` after it was seen. */
  delay(seconds: number): void {
    this.delayMs = seconds * 1000;
  }

  /** The addresses in HAProxy's rotation now. */
  rotation(): string[] {
    return [...this.inRotation.keys()].sort();
  }

  /** Resolves when every change seen so far has landed. */
  async settled(): Promise<void> {
    await this.tail;
    if (this.failure !== undefined) throw this.failure;
  }

  stop(): void {
    const abort = this.abort;
    this.abort = undefined;
    abort?.abort();
  }

  private onEvent(phase: string, slice: Slice): void {
    const name = slice.metadata?.name ?? '';
    if (phase === 'DELETED') {
      this.slices.delete(name);
    } else {
      const ready = new Set<string>();
      for (const endpoint of slice.endpoints ?? []) {
        if (endpoint.conditions?.ready === false) continue;
        for (const address of endpoint.addresses ?? []) ready.add(address);
      }
      this.slices.set(name, ready);
    }
    const wanted = new Set([...this.slices.values()].flatMap((set) => [...set]));
    const seenAt = Date.now();
    const landsAt = seenAt + this.delayMs;
    const previous = this.tail;
    this.tail = (async () => {
      await new Promise((resolve) => setTimeout(resolve, landsAt - Date.now()));
      // One change at a time, in order.
      await previous;
      try {
        await this.apply(wanted, seenAt);
      } catch (error) {
        this.failure ??= error as Error;
      }
    })();
  }

  private async apply(wanted: ReadonlySet<string>, seenAt: number): Promise<void> {
    for (const ip of wanted) {
      if (this.inRotation.has(ip)) continue;
      let slot = this.slotOf.get(ip);
      if (slot === undefined) {
        slot = this.nextSlot++;
        this.slotOf.set(ip, slot);
      }
      await this.haproxy.enable(slot, ip, this.port);
      this.inRotation.set(ip, slot);
      this.changes.push({ seenAt, landedAt: Date.now(), ip, change: 'added' });
    }
    for (const [ip, slot] of [...this.inRotation]) {
      if (wanted.has(ip)) continue;
      await this.haproxy.disable(slot);
      this.inRotation.delete(ip);
      this.changes.push({ seenAt, landedAt: Date.now(), ip, change: 'removed' });
    }
  }
}
