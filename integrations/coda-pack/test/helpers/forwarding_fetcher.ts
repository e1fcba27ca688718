// A stand-in for Coda's fetcher that sends the Pack's requests to a real HTTP
// server with Node's fetch, behaving as Coda does for this Pack's
// authentication (HeaderBearerToken + requiresEndpointUrl):
//   - relative URLs are resolved against the connection's endpoint URL, and
//     absolute URLs must stay on the endpoint's host;
//   - "Authorization: Bearer <token>" is added to every request;
//   - JSON bodies are parsed, other bodies are returned as text;
//   - a status of 400 or more throws coda.StatusCodeError (statusCode, body);
//   - a network failure throws a plain Error.
import * as coda from "@codahq/packs-sdk";
import { newMockExecutionContext } from "@codahq/packs-sdk/dist/testing/mocks";
import type { MockExecutionContext } from "@codahq/packs-sdk/dist/testing/mocks";

export interface ForwardedRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
}

export interface ForwardingOptions {
  /** The daemon's base URL, as the doc owner would type it when connecting. */
  endpoint: string;
  /** The trigger token; omitted means no Authorization header. */
  token?: string;
  /** Per-request timeout. */
  timeoutMs?: number;
  /** Called with each request as sent (for assertions). */
  onRequest?: (request: ForwardedRequest) => void;
}

function resolveUrl(endpoint: string, url: string): string {
  const base = new URL(endpoint.endsWith("/") ? endpoint : endpoint + "/");
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    const target = new URL(url);
    if (target.host !== base.host) {
      throw new Error(`The url ${url} is not authorized: the host must be ${base.host}.`);
    }
    return target.href;
  }
  return new URL(url.replace(/^\//, ""), base).href;
}

export function forwardingFetch(options: ForwardingOptions): (request: coda.FetchRequest) => Promise<coda.FetchResponse> {
  return async function fetchThroughNode(request: coda.FetchRequest): Promise<coda.FetchResponse> {
    const url = resolveUrl(options.endpoint, request.url);
    const headers: Record<string, string> = { ...(request.headers ?? {}) };
    if (options.token !== undefined && !request.disableAuthentication) {
      headers.Authorization = `Bearer ${options.token}`;
    }
    const body = request.body === undefined ? undefined : request.body.toString();
    options.onRequest?.({ method: request.method, url, headers, body });
    let response: Response;
    try {
      response = await fetch(url, {
        method: request.method,
        headers,
        body,
        redirect: request.ignoreRedirects ? "manual" : "follow",
        signal: AbortSignal.timeout(options.timeoutMs ?? 30_000),
      });
    } catch (err) {
      // Node says "fetch failed"; the reason (ECONNREFUSED, ...) is in `cause`.
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const detail = cause?.code ?? cause?.message;
      throw new Error(`request to ${url} failed${detail ? `, reason: ${detail}` : ""}`);
    }
    const text = await response.text();
    let parsed: unknown = text;
    try {
      const value = JSON.parse(text);
      if (typeof value === "object" && value !== null) {
        parsed = value;
      }
    } catch {
      // not JSON: keep the text
    }
    const responseHeaders: Record<string, string> = {};
    response.headers.forEach((value, key) => {
      if (key.toLowerCase() !== "authorization") {
        responseHeaders[key] = value;
      }
    });
    if (response.status >= 400) {
      throw new coda.StatusCodeError(response.status, parsed, request, { body: text, headers: responseHeaders });
    }
    return { status: response.status, body: parsed, headers: responseHeaders };
  };
}

/** An SDK mock execution context whose fetcher forwards to a real server. */
export function forwardingContext(options: ForwardingOptions): MockExecutionContext {
  const context = newMockExecutionContext({ endpoint: options.endpoint });
  context.fetcher.fetch.callsFake(forwardingFetch(options));
  return context;
}
