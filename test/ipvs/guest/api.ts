// Plain API requests from the guest, with the kubeconfig's credentials:
// what the lab's kubelet and Deployment-controller stand-ins write.

import https from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

export interface ApiResponse {
  status: number;
  body: unknown;
}

export async function apiRequest(
  kc: KubeConfig,
  method: string,
  path: string,
  body?: unknown,
  contentType = 'application/json',
): Promise<ApiResponse> {
  const server = kc.getCurrentCluster()?.server;
  if (server === undefined) throw new Error('the kubeconfig names no cluster');
  const options: https.RequestOptions = { method, timeout: 15_000, headers: {} };
  await kc.applyToHTTPSOptions(options);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(path, server),
      {
        ...options,
        headers: {
          ...options.headers,
          Accept: 'application/json',
          // A DELETE's options are ignored unless the body has a length.
          ...(payload === undefined
            ? {}
            : { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(payload) }),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // Not JSON: keep the text.
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** Rejects unless the status is 2xx. */
export async function mustApi(
  kc: KubeConfig,
  method: string,
  path: string,
  body?: unknown,
  contentType?: string,
): Promise<unknown> {
  const response = await apiRequest(kc, method, path, body, contentType);
  if (response.status < 200 || response.status > 299) {
    throw new Error(`${method} ${path}: HTTP ${response.status} ${JSON.stringify(response.body)}`);
  }
  return response.body;
}
