// The AdmissionReview contract (admission.k8s.io/v1 and v1beta1): decode the
// envelope strictly, answer in the version received, always with uid,
// apiVersion and kind, and always allowed: this webhook is no security control.

import fastJsonPatch from 'fast-json-patch';
import { isRecord } from '../core/types.ts';

export const REVIEW_VERSIONS = ['admission.k8s.io/v1', 'admission.k8s.io/v1beta1'] as const;
export type ReviewVersion = (typeof REVIEW_VERSIONS)[number];

export interface AdmissionRequest {
  apiVersion: ReviewVersion;
  uid: string;
  kind: { group: string; version: string; kind: string };
  operation: string;
  namespace: string;
  name: string;
  object: unknown;
  dryRun: boolean;
}

export type DecodeResult = { ok: true; request: AdmissionRequest } | { ok: false; message: string };

const MAX_UID_LENGTH = 256;

function stringField(record: Record<string, unknown>, key: string): string | undefined {
  const value = record[key];
  return typeof value === 'string' ? value : undefined;
}

export function decodeReview(body: unknown): DecodeResult {
  if (!isRecord(body))
    return { ok: false, message: 'body must be a JSON object (an AdmissionReview)' };
  const apiVersion = body['apiVersion'];
  if (!REVIEW_VERSIONS.includes(apiVersion as ReviewVersion)) {
    return { ok: false, message: `apiVersion must be one of ${REVIEW_VERSIONS.join(', ')}` };
  }
  if (body['kind'] !== 'AdmissionReview')
    return { ok: false, message: 'kind must be AdmissionReview' };
  const request = body['request'];
  if (!isRecord(request)) return { ok: false, message: 'request must be an object' };
  const uid = stringField(request, 'uid');
  if (uid === undefined || uid === '' || uid.length > MAX_UID_LENGTH) {
    return { ok: false, message: 'request.uid must be a non-empty string' };
  }
  const kind = isRecord(request['kind']) ? request['kind'] : {};
  return {
    ok: true,
    request: {
      apiVersion: apiVersion as ReviewVersion,
      uid,
      kind: {
        group: stringField(kind, 'group') ?? '',
        version: stringField(kind, 'version') ?? '',
        kind: stringField(kind, 'kind') ?? '',
      },
      operation: stringField(request, 'operation') ?? '',
      namespace: stringField(request, 'namespace') ?? '',
      name: stringField(request, 'name') ?? '',
      object: request['object'],
      dryRun: request['dryRun'] === true,
    },
  };
}

export type PatchOperation = fastJsonPatch.Operation;

type Json = Record<string, unknown> | unknown[];

function isContainer(value: unknown): value is Json {
  return typeof value === 'object' && value !== null;
}

/** RFC 6901: "~" is written "~0" and "/" is written "~1". */
function pointerSegment(key: string): string {
  if (key.indexOf('/') === -1 && key.indexOf('~') === -1) return key;
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

const hasOwn = (object: object, key: string) => Object.prototype.hasOwnProperty.call(object, key);

/**
 * The operations that turn `before` into `after`, appended in the order
 * fast-json-patch's compare() gives them: the keys of `before` from last to
 * first (so array removals keep their indices valid), then additions.
 * Identical references are skipped unvisited: the planner shares what it did
 * not change, so only the changed spine is walked. Values are not copied: the
 * operations are serialized at once. Values are JSON: plain objects whose
 * properties are all enumerable, arrays without holes.
 */
function diffInto(before: Json, after: Json, path: string, ops: PatchOperation[]): void {
  if (before === after) return;
  const beforeIsArray = Array.isArray(before);
  if (beforeIsArray && Array.isArray(after)) return diffArrays(before, after, path, ops);
  const beforeKeys = Object.keys(before);
  const afterKeys = Object.keys(after);
  if (!beforeIsArray && !Array.isArray(after) && startsWith(afterKeys, beforeKeys)) {
    return diffAligned(before, after, beforeKeys, afterKeys, path, ops);
  }
  diffByKey(before, after, beforeKeys, afterKeys, path, ops);
}

/** A value on both sides that differs: walk two containers of one kind, else replace. */
function diffValue(old: unknown, now: unknown, path: string, ops: PatchOperation[]): void {
  if (isContainer(old) && isContainer(now) && Array.isArray(old) === Array.isArray(now)) {
    diffInto(old, now, path, ops);
  } else {
    ops.push({ op: 'replace', path, value: now });
  }
}

function startsWith(keys: readonly string[], prefix: readonly string[]): boolean {
  if (keys.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (keys[i] !== prefix[i]) return false;
  return true;
}

/**
 * Two objects whose keys agree position by position, `after` perhaps with
 * more at the end: what a spread copy that was only assigned to looks like.
 * The values are then read in bulk rather than looked up key by key.
 */
function diffAligned(
  before: Record<string, unknown>,
  after: Record<string, unknown>,
  beforeKeys: readonly string[],
  afterKeys: readonly string[],
  path: string,
  ops: PatchOperation[],
): void {
  const olds = Object.values(before);
  const nows = Object.values(after);
  let removed = false;
  for (let i = beforeKeys.length - 1; i >= 0; i--) {
    const old = olds[i];
    const now = nows[i];
    if (old === now) continue;
    // compare() takes a key set to undefined for one removed.
    if (now === undefined) {
      ops.push({ op: 'remove', path: `${path}/${pointerSegment(beforeKeys[i]!)}` });
      removed = true;
    } else {
      diffValue(old, now, `${path}/${pointerSegment(beforeKeys[i]!)}`, ops);
    }
  }
  if (!removed && afterKeys.length === beforeKeys.length) return;
  for (let i = beforeKeys.length; i < afterKeys.length; i++) {
    const now = nows[i];
    if (now !== undefined) {
      ops.push({ op: 'add', path: `${path}/${pointerSegment(afterKeys[i]!)}`, value: now });
    }
  }
}

function diffArrays(
  before: readonly unknown[],
  after: readonly unknown[],
  path: string,
  ops: PatchOperation[],
): void {
  let removed = false;
  for (let i = before.length - 1; i >= 0; i--) {
    if (i >= after.length) {
      ops.push({ op: 'remove', path: `${path}/${i}` });
      removed = true;
    } else if (before[i] !== after[i]) {
      diffValue(before[i], after[i], `${path}/${i}`, ops);
    }
  }
  if (!removed && after.length === before.length) return;
  for (let i = before.length; i < after.length; i++) {
    if (after[i] !== undefined) ops.push({ op: 'add', path: `${path}/${i}`, value: after[i] });
  }
}

/** Any other pair (keys removed or reordered, an object against an array): key by key. */
function diffByKey(
  before: Json,
  after: Json,
  beforeKeys: readonly string[],
  afterKeys: readonly string[],
  path: string,
  ops: PatchOperation[],
): void {
  const afterIsArray = Array.isArray(after);
  let removed = false;
  for (let i = beforeKeys.length - 1; i >= 0; i--) {
    const key = beforeKeys[i]!;
    const old = (before as Record<string, unknown>)[key];
    const now = (after as Record<string, unknown>)[key];
    if (hasOwn(after, key) && !(now === undefined && old !== undefined && !afterIsArray)) {
      if (old !== now) diffValue(old, now, `${path}/${pointerSegment(key)}`, ops);
    } else if (Array.isArray(before) === afterIsArray) {
      ops.push({ op: 'remove', path: `${path}/${pointerSegment(key)}` });
      removed = true;
    } else {
      ops.push({ op: 'replace', path, value: after });
    }
  }
  if (!removed && afterKeys.length === beforeKeys.length) return;
  for (const key of afterKeys) {
    const now = (after as Record<string, unknown>)[key];
    if (!hasOwn(before, key) && now !== undefined) {
      ops.push({ op: 'add', path: `${path}/${pointerSegment(key)}`, value: now });
    }
  }
}

/** The JSON patch from the object as received to the mutated one. */
export function diffPatch(received: unknown, mutated: unknown): PatchOperation[] {
  const ops: PatchOperation[] = [];
  if (isContainer(received) && isContainer(mutated)) diffInto(received, mutated, '', ops);
  return ops;
}

/** The base64 of `text`'s UTF-8 bytes; for ASCII text (most patches) btoa makes it without a Buffer. */
function base64Utf8(text: string): string {
  return Buffer.byteLength(text) === text.length
    ? btoa(text)
    : Buffer.from(text).toString('base64');
}

const MAX_WARNINGS = 10;
const MAX_WARNING_LENGTH = 250;

/** The patch as sent: base64 of its JSON; undefined when there is nothing to change. */
export function encodePatch(patch: readonly PatchOperation[]): string | undefined {
  return patch.length > 0 ? base64Utf8(JSON.stringify(patch)) : undefined;
}

/** Warnings as the API server shows them to the user, a bounded number of bounded ones. */
export function userWarnings(messages: readonly string[]): string[] | undefined {
  if (messages.length === 0) return undefined;
  return messages
    .slice(0, MAX_WARNINGS)
    .map((w) => `prestop-injector: ${w}`.slice(0, MAX_WARNING_LENGTH));
}

/**
 * An allowed review as sent, in two parts around the uid, which is the only
 * part that differs between pods given the same answer: the rest is
 * serialized once per answer. `reviewBody` joins them.
 */
export interface ReviewAnswer {
  /** The JSON after the uid: allowed, the patch (from encodePatch), warnings if any. */
  readonly tail: string;
}

export function reviewAnswer(patch?: string, warnings?: readonly string[]): ReviewAnswer {
  let tail = ',"allowed":true';
  if (patch !== undefined) tail += `,"patchType":"JSONPatch","patch":${JSON.stringify(patch)}`;
  if (warnings !== undefined) tail += `,"warnings":${JSON.stringify(warnings)}`;
  return { tail: `${tail}}}` };
}

const HEADS: Record<ReviewVersion, string> = Object.fromEntries(
  REVIEW_VERSIONS.map((version) => [
    version,
    `{"apiVersion":${JSON.stringify(version)},"kind":"AdmissionReview","response":{"uid":`,
  ]),
) as Record<ReviewVersion, string>;

/**
 * The review's JSON: the version it was asked in, its uid, then the answer.
 * A string, not bytes: Node writes a string body in one piece with the
 * response head, where a Buffer takes a second, gathered write.
 */
export function reviewBody(apiVersion: ReviewVersion, uid: string, answer: ReviewAnswer): string {
  return HEADS[apiVersion] + JSON.stringify(uid) + answer.tail;
}

const NO_CHANGE = reviewAnswer();

/** An allowed review with nothing planned: a patch of these operations, if any, and these warnings. */
export function allowedBody(
  apiVersion: ReviewVersion,
  uid: string,
  patch: readonly PatchOperation[] = [],
  warnings: readonly string[] = [],
): string {
  const answer =
    patch.length === 0 && warnings.length === 0
      ? NO_CHANGE
      : reviewAnswer(encodePatch(patch), userWarnings(warnings));
  return reviewBody(apiVersion, uid, answer);
}
