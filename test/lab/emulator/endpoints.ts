// Endpoint propagation: a change to the set of ready pods reaches the load
// balancer only after a delay D with jitter, the time kube-proxy, ingress
// controllers and meshes really take. Changes land in the order they were
// made, as they would through one watch stream.

import type { Haproxy } from '../haproxy.ts';

export interface Propagation {
  delayMs: number;
  /** Each change lands at delay ± up to this much. */
  jitterMs: number;
}

export interface EndpointEvent {
  atMs: number;
  pod: string;
  change: 'added' | 'removed';
}

/** A small deterministic generator (mulberry32), so a seed replays a run. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Endpoints {
  readonly events: EndpointEvent[] = [];
  private readonly slots = new Map<string, number>();
  private nextSlot = 1;
  private lastLandsAt = 0;
  private tail: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private readonly haproxy: Haproxy;
  private readonly propagation: Propagation;
  private readonly random: () => number;
  /** Event times are counted from here (the start of the rollout). */
  origin = Date.now();

  constructor(haproxy: Haproxy, propagation: Propagation, random: () => number) {
    this.haproxy = haproxy;
    this.propagation = propagation;
    this.random = random;
  }

  /** For the pods that exist before the rollout: no delay. */
  async addNow(pod: string, ip: string, port: number): Promise<void> {
    await this.haproxy.enable(this.slotFor(pod), ip, port);
  }

  add(pod: string, ip: string, port: number): void {
    const slot = this.slotFor(pod);
    this.schedule(pod, 'added', () => this.haproxy.enable(slot, ip, port));
  }

  remove(pod: string): void {
    const slot = this.slots.get(pod);
    if (slot === undefined) throw new Error(`no endpoint for ${pod}`);
    this.schedule(pod, 'removed', () => this.haproxy.disable(slot));
  }

  /** Resolves when every scheduled change has landed. */
  async settled(): Promise<void> {
    await this.tail;
    if (this.failure !== undefined) throw this.failure;
  }

  private slotFor(pod: string): number {
    let slot = this.slots.get(pod);
    if (slot === undefined) {
      slot = this.nextSlot++;
      this.slots.set(pod, slot);
    }
    return slot;
  }

  private schedule(pod: string, change: EndpointEvent['change'], apply: () => Promise<void>): void {
    const { delayMs, jitterMs } = this.propagation;
    const jitter = (this.random() * 2 - 1) * jitterMs;
    const landsAt = Math.max(Date.now() + delayMs + jitter, this.lastLandsAt);
    this.lastLandsAt = landsAt;
    const previous = this.tail;
    this.tail = (async () => {
      await new Promise((resolve) => setTimeout(resolve, landsAt - Date.now()));
      // One change at a time, in order.
      await previous;
      try {
        await apply();
        this.events.push({ atMs: Date.now() - this.origin, pod, change });
      } catch (error) {
        this.failure ??= error as Error;
      }
    })();
  }
}
