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

/** The JSON patch from the object as received to the mutated one. */
export function diffPatch(received: unknown, mutated: unknown): PatchOperation[] {
  return fastJsonPatch.compare(received as object, mutated as object);
}

export interface ReviewResponse {
  apiVersion: ReviewVersion;
  kind: 'AdmissionReview';
  response: {
    uid: string;
    allowed: true;
    patchType?: 'JSONPatch';
    patch?: string;
    warnings?: string[];
  };
}

const MAX_WARNINGS = 10;
const MAX_WARNING_LENGTH = 250;

export function allowedResponse(
  apiVersion: ReviewVersion,
  uid: string,
  patch: readonly PatchOperation[] = [],
  warnings: readonly string[] = [],
): ReviewResponse {
  const response: ReviewResponse['response'] = { uid, allowed: true };
  if (patch.length > 0) {
    response.patchType = 'JSONPatch';
    response.patch = Buffer.from(JSON.stringify(patch)).toString('base64');
  }
  if (warnings.length > 0) {
    response.warnings = warnings
      .slice(0, MAX_WARNINGS)
      .map((w) => `prestop-injector: ${w}`.slice(0, MAX_WARNING_LENGTH));
  }
  return { apiVersion, kind: 'AdmissionReview', response };
}
