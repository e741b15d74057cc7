// The AdmissionReview format (admission.k8s.io/v1 and v1beta1): decode the
// envelope strictly, and answer in the version received, always with uid,
// apiVersion and kind, and always allowed: this webhook is no security control.

import fastJsonPatch from 'fast-json-patch';
import { isRecord } from '../core/types.ts';

const REVIEW_VERSIONS = ['admission.k8s.io/v1', 'admission.k8s.io/v1beta1'] as const;
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

/**
 * The JSON patch from the object as received to the mutated one. The
 * planner shares what it did not change with the input, and compare()
 * skips identical references, so only the changed parts are walked.
 */
export function patchFor(received: unknown, mutated: unknown): PatchOperation[] {
  if (received === mutated || !isRecord(received) || !isRecord(mutated)) return [];
  return fastJsonPatch.compare(received, mutated);
}

/** An allowed AdmissionResponse; the patch and warnings only when there are some. */
export interface AdmissionResponse {
  uid: string;
  allowed: true;
  patchType?: 'JSONPatch';
  /** Base64 of the JSON patch. */
  patch?: string;
  warnings?: string[];
}

const MAX_WARNINGS = 10;
const MAX_WARNING_LENGTH = 250;

/** Allowed, with the patch only when it has operations, warnings bounded as the API server shows them. */
export function allowed(
  uid: string,
  patch: readonly PatchOperation[] = [],
  warnings: readonly string[] = [],
): AdmissionResponse {
  const response: AdmissionResponse = { uid, allowed: true };
  if (patch.length > 0) {
    response.patchType = 'JSONPatch';
    response.patch = Buffer.from(JSON.stringify(patch)).toString('base64');
  }
  if (warnings.length > 0) {
    response.warnings = warnings
      .slice(0, MAX_WARNINGS)
      .map((w) => `prestop-injector: ${w}`.slice(0, MAX_WARNING_LENGTH));
  }
  return response;
}

/** The review sent back: the version it was asked in, kind, and the response. */
export function reviewJson(apiVersion: ReviewVersion, response: AdmissionResponse): string {
  return JSON.stringify({ apiVersion, kind: 'AdmissionReview', response });
}
