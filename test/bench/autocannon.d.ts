// The part of autocannon's API the benchmark uses (the package ships no types).

declare module 'autocannon' {
  interface Options {
    url: string;
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    /** Sent in turn; each is built once, unless it has a setupRequest. */
    requests?: {
      body?: string | Buffer;
      setupRequest?: (request: { body?: string | Buffer }) => { body?: string | Buffer };
    }[];
    connections?: number;
    pipelining?: number;
    duration?: number;
    timeout?: number;
  }
  interface Histogram {
    average: number;
    total: number;
  }
  interface Result {
    duration: number;
    requests: Histogram;
    errors: number;
    timeouts: number;
    non2xx: number;
  }
  interface Instance {
    on(
      event: 'response',
      listener: (client: unknown, statusCode: number, bytes: number, ms: number) => void,
    ): this;
  }
  function autocannon(
    options: Options,
    done: (error: Error | null, result: Result) => void,
  ): Instance;
  export default autocannon;
}
