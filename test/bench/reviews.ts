// The benchmark's admission bodies, built from the realistic pods in
// test/support/realistic-pods.ts.

import { stringify } from 'yaml';
import type { PodLike } from '../../src/core/types.ts';
import { admissionReview, istioPod, optedOutPod, plainPod } from '../support/realistic-pods.ts';

export interface Scenario {
  name: string;
  /** Reviews sent in turn: each its own uid, as the API server sends them. */
  bodies: string[];
  /** All connections walk the bodies as one sequence (see load()). */
  oneSequence?: boolean;
}

/** Replicas of one template: the same pod but for the uid of the review. */
function replicas(build: () => PodLike, count: number): string[] {
  return Array.from({ length: count }, () => admissionReview(build()));
}

/** Distinct templates: an app image tag each. */
function newTemplates(count: number): string[] {
  return Array.from({ length: count }, (_, i) => {
    const pod = istioPod();
    pod.spec.containers[0]!.image = `registry.example.com/shop/checkout:3.4.${i}`;
    return admissionReview(pod);
  });
}

/** The memory figure is read after this many distinct templates. */
export const DISTINCT_TEMPLATES = 2000;

/** The replica cases cycle through this many reviews. */
const REPLICA_REVIEWS = 64;

export function scenarios(): Scenario[] {
  return [
    { name: 'plain pod', bodies: replicas(plainPod, REPLICA_REVIEWS) },
    { name: 'istio pod', bodies: replicas(istioPod, REPLICA_REVIEWS) },
    { name: 'opted-out pod', bodies: replicas(optedOutPod, REPLICA_REVIEWS) },
    {
      name: 'istio pod (new template each)',
      bodies: newTemplates(DISTINCT_TEMPLATES),
      oneSequence: true,
    },
  ];
}

/** `count` pod documents, cycling through the three kinds, as one YAML stream. */
export function podStream(count: number): string {
  const builders = [plainPod, istioPod, optedOutPod];
  const documents: string[] = [];
  for (let i = 0; i < count; i++) {
    const pod = builders[i % builders.length]!();
    const { generateName, ...rest } = pod.metadata as { generateName: string };
    pod.metadata = { ...rest, name: `${generateName}${String(i).padStart(5, '0')}` };
    documents.push(stringify(pod));
  }
  return documents.join('---\n');
}
