// HTTP client for the coda-sync daemon's control port, as seen through the
// Coda fetcher. Every failure is turned into a coda.UserVisibleError whose text
// tells an HR person (or their admin) what went wrong and what to do next.
import * as coda from "@codahq/packs-sdk";

/** Why a call to the daemon failed (tests and the connection check branch on it). */
export type FailureReason =
  | "no_endpoint"
  | "invalid_input"
  | "unauthorized"
  | "forbidden"
  | "unknown_binding"
  | "unknown_run"
  | "not_found"
  | "too_large"
  | "busy"
  | "rate_limited"
  | "unreachable"
  | "bad_request"
  | "server_error"
  | "unexpected";

/** A UserVisibleError (its message is shown in the doc) that also records the reason. */
export class DaemonError extends coda.UserVisibleError {
  constructor(
    readonly reason: FailureReason,
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

/** Longest binding name / run id the Pack sends (the proxy caps bodies at 1 KiB). */
export const MAX_BINDING_LENGTH = 200;
export const MAX_RUN_ID_LENGTH = 200;

/** Body of `POST /sync` as sent by the Pack. `binding` is omitted for "all bindings". */
export interface TriggerRequest {
  binding?: string;
  full: boolean;
}

/** 202 answer of `POST /sync`. */
export interface TriggerResponse {
  run_id: string;
  binding: string | null;
  full: boolean;
  state: string;
}

export interface RunCounts {
  pulled: number;
  pushed: number;
  deleted: number;
  conflicts: number;
  quarantined: number;
}

/** 200 answer of `GET /runs/{run_id}`. */
export interface RunResponse {
  run_id: string;
  state: "queued" | "running" | "succeeded" | "failed" | string;
  binding: string | null;
  full: boolean;
  started_at: string | null;
  finished_at: string | null;
  result: RunCounts | null;
  error: string | null;
}

/** What the Pack was doing when a request failed, for the error text. */
export type Operation =
  | { kind: "trigger"; binding?: string }
  | { kind: "status"; runId: string }
  | { kind: "connect" };

interface Target {
  /** Full URL requested. */
  url: string;
  /** Host part of the endpoint, for messages. */
  host: string;
}

/**
 * The daemon's public base URL from the user's Pack connection, without a
 * trailing slash. Coda stores it with the account when `requiresEndpointUrl`
 * is set; formulas read it from `context.endpoint`.
 */
export function endpointOf(context: coda.ExecutionContext): string {
  const raw = (context.endpoint ?? "").trim();
  if (!raw) {
    throw new DaemonError("no_endpoint",
      "This Coda Sync connection has no endpoint URL. Reconnect the Coda Sync Pack and enter " +
        "the daemon's public URL (for example https://coda-sync.hr.example.com) and the trigger token.",
    );
  }
  return raw.replace(/\/+$/, "");
}

function hostOf(url: string): string {
  const match = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]+)/i.exec(url);
  return match ? match[1] : url;
}

/** The fetcher parses JSON bodies of JSON responses; be tolerant if it did not. */
function parseBody(body: unknown): unknown {
  if (typeof body === "string") {
    const text = body.trim();
    if (text.startsWith("{") || text.startsWith("[")) {
      try {
        return JSON.parse(text);
      } catch {
        return body;
      }
    }
  }
  return body;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function stringField(body: unknown, key: string): string | undefined {
  if (!isRecord(body)) {
    return undefined;
  }
  const value = body[key];
  return typeof value === "string" && value.trim() ? value.trim() : undefined;
}

function headerValue(
  headers: Record<string, string | string[] | undefined> | undefined,
  name: string,
): string | undefined {
  if (!headers) {
    return undefined;
  }
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === name.toLowerCase()) {
      return Array.isArray(value) ? value[0] : value;
    }
  }
  return undefined;
}

/** A short, single-line excerpt of an unexpected body, for error texts. */
function snippet(body: unknown): string {
  let text: string;
  if (isRecord(body)) {
    text = stringField(body, "message") ?? stringField(body, "error") ?? JSON.stringify(body);
  } else if (typeof body === "string") {
    text = body.replace(/<[^>]*>/g, " ");
  } else if (body === undefined || body === null) {
    return "";
  } else {
    text = String(body);
  }
  text = text.replace(/\s+/g, " ").trim();
  if (text.length > 200) {
    text = text.slice(0, 197) + "...";
  }
  return text;
}

function withDetail(text: string): string {
  return text ? `: ${text}` : "";
}

function describeStatus(
  status: number,
  rawBody: unknown,
  headers: Record<string, string | string[] | undefined> | undefined,
  target: Target,
  op: Operation,
): DaemonError {
  const body = parseBody(rawBody);
  const code = stringField(body, "error");
  const message = stringField(body, "message");
  const fail = (reason: FailureReason, text: string): DaemonError => new DaemonError(reason, text, status);

  if (status === 401) {
    return fail("unauthorized",
      `The sync daemon at ${target.host} rejected the trigger token (HTTP 401). ` +
        "Reconnect the Coda Sync Pack with the current trigger token (ask your admin for it).",
    );
  }
  if (status === 403) {
    return fail("forbidden",
      `The server at ${target.host} refused the request (HTTP 403). The reverse proxy in front of the ` +
        "sync daemon may be blocking it: ask your admin to check that it forwards POST /sync and GET /runs/.",
    );
  }
  if (status === 404 && code === "unknown_binding") {
    const configured =
      isRecord(body) && Array.isArray(body.bindings)
        ? body.bindings.filter((b): b is string => typeof b === "string")
        : [];
    const binding = op.kind === "trigger" && op.binding ? op.binding : "(unknown)";
    return fail("unknown_binding",
      `Binding "${binding}" is not configured on the sync daemon. ` +
        (configured.length
          ? `Configured bindings: ${configured.join(", ")}.`
          : "The daemon reported no configured bindings."),
    );
  }
  if (status === 404 && code === "unknown_run") {
    const runId = op.kind === "status" ? op.runId : "(unknown)";
    return fail("unknown_run",
      `Sync run "${runId}" is not known to the sync daemon. The id may be mistyped, or the daemon ` +
        'no longer remembers it (for example after a restart). Press "Sync now" to start a new run.',
    );
  }
  if (status === 404) {
    return fail("not_found",
      `Nothing answers at ${target.url} (HTTP 404). Check the endpoint URL of the Coda Sync Pack ` +
        "connection: it must be the daemon's public base URL, e.g. https://coda-sync.hr.example.com.",
    );
  }
  if (status === 413) {
    return fail("too_large",
      "The sync daemon rejected the request as too large (HTTP 413). Use a shorter binding name.",
    );
  }
  if (code === "busy" || status === 429) {
    const retryAfter = headerValue(headers, "retry-after");
    const wait = retryAfter && /^\d+$/.test(retryAfter.trim()) ? ` in ${retryAfter.trim()} seconds` : " in a minute";
    const why =
      code === "busy"
        ? `The sync daemon is busy${withDetail(message ?? "")} (HTTP ${status}).`
        : `Too many sync requests: the sync daemon is rate-limiting them (HTTP ${status}).`;
    return fail(code === "busy" ? "busy" : "rate_limited", `${why} Try again${wait}.`);
  }
  if (status === 502 || status === 503 || status === 504) {
    return fail("unreachable",
      `The sync daemon behind ${target.host} is not reachable (HTTP ${status} from the proxy). ` +
        "It may be stopped or restarting. Try again in a minute; if this persists, ask your admin " +
        "to check the coda-sync service.",
    );
  }
  if (status === 400) {
    return fail("bad_request",
      `The sync daemon rejected the request (HTTP 400${withDetail(message ?? snippet(body))}). ` +
        "The Pack and the daemon may not match; ask your admin to update them.",
    );
  }
  if (status >= 500) {
    return fail("server_error",
      `The sync daemon reported an internal error (HTTP ${status}${withDetail(message ?? snippet(body))}). ` +
        "Ask your admin to check the daemon's log.",
    );
  }
  return fail("unexpected",
    `Unexpected response from the sync daemon at ${target.host} (HTTP ${status}${withDetail(snippet(body))}).`,
  );
}

function describeFailure(err: unknown, target: Target, op: Operation): Error {
  if (err instanceof coda.UserVisibleError) {
    return err;
  }
  if (typeof err === "object" && err !== null && coda.StatusCodeError.isStatusCodeError(err)) {
    const statusErr = err as coda.StatusCodeError;
    return describeStatus(statusErr.statusCode, statusErr.body, statusErr.response?.headers, target, op);
  }
  const reason = err instanceof Error ? err.message : String(err);
  return new DaemonError("unreachable",
    `Could not reach the sync daemon at ${target.host}${withDetail(snippet(reason))}. Check that the ` +
      "coda-sync service and its HTTPS proxy are running and that the endpoint URL of the Pack " +
      "connection is right.",
  );
}

async function request(
  context: coda.ExecutionContext,
  method: "GET" | "POST",
  path: string,
  body: object | undefined,
  op: Operation,
): Promise<unknown> {
  const url = endpointOf(context) + path;
  const target: Target = { url, host: hostOf(url) };
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  const fetchRequest: coda.FetchRequest = {
    method,
    url,
    headers,
    // Run state changes from one call to the next: never serve a cached answer.
    cacheTtlSecs: 0,
  };
  if (body !== undefined) {
    fetchRequest.body = JSON.stringify(body);
  }
  let response: coda.FetchResponse;
  try {
    response = await context.fetcher.fetch(fetchRequest);
  } catch (err) {
    throw describeFailure(err, target, op);
  }
  // Coda's fetcher throws StatusCodeError for non-2xx answers; be safe if one is returned.
  if (response.status < 200 || response.status >= 300) {
    throw describeStatus(response.status, response.body, response.headers, target, op);
  }
  return parseBody(response.body);
}

function unexpected(what: string, body: unknown): DaemonError {
  return new DaemonError("unexpected", `Unexpected response from the sync daemon: ${what}${withDetail(snippet(body))}.`);
}

/** `POST /sync` with a JSON body; returns the daemon's 202 answer. */
export async function triggerSync(
  context: coda.ExecutionContext,
  binding: string | undefined,
  full: boolean,
): Promise<TriggerResponse> {
  const name = binding?.trim() || undefined;
  if (name && name.length > MAX_BINDING_LENGTH) {
    throw new DaemonError("invalid_input",
      `The binding name is too long (${name.length} characters, at most ${MAX_BINDING_LENGTH}).`,
    );
  }
  const payload: TriggerRequest = name ? { binding: name, full } : { full };
  const body = await request(context, "POST", "/sync", payload, { kind: "trigger", binding: name });
  const runId = stringField(body, "run_id");
  if (!runId) {
    throw unexpected("no run_id in the answer to POST /sync", body);
  }
  const record = body as Record<string, unknown>;
  return {
    run_id: runId,
    binding: typeof record.binding === "string" ? record.binding : null,
    full: record.full === true,
    state: stringField(body, "state") ?? "queued",
  };
}

function count(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) ? value : 0;
}

/** `GET /runs/{run_id}`; returns the daemon's 200 answer. */
export async function getRun(context: coda.ExecutionContext, runId: string): Promise<RunResponse> {
  const id = runId.trim();
  if (!id) {
    throw new DaemonError("invalid_input", 'No run id given. Use the value returned by SyncNow(), e.g. "r-…".');
  }
  if (id.length > MAX_RUN_ID_LENGTH) {
    throw new DaemonError("invalid_input", `The run id is too long (${id.length} characters).`);
  }
  const body = await request(context, "GET", `/runs/${encodeURIComponent(id)}`, undefined, {
    kind: "status",
    runId: id,
  });
  const state = stringField(body, "state");
  if (!state) {
    throw unexpected(`no state in the answer to GET /runs/${id}`, body);
  }
  const record = body as Record<string, unknown>;
  const result = isRecord(record.result)
    ? {
        pulled: count(record.result.pulled),
        pushed: count(record.result.pushed),
        deleted: count(record.result.deleted),
        conflicts: count(record.result.conflicts),
        quarantined: count(record.result.quarantined),
      }
    : null;
  return {
    run_id: stringField(body, "run_id") ?? id,
    state,
    binding: typeof record.binding === "string" ? record.binding : null,
    full: record.full === true,
    started_at: stringField(body, "started_at") ?? null,
    finished_at: stringField(body, "finished_at") ?? null,
    result,
    error: stringField(body, "error") ?? null,
  };
}

/** Failures of the connection check that stop the connection from being created. */
const CONNECTION_BLOCKERS: FailureReason[] = ["no_endpoint", "unauthorized", "forbidden", "not_found", "unreachable"];

/** Run id used by the connection check; the daemon answers 404 unknown_run for it. */
export const CONNECTION_CHECK_RUN_ID = "connection-check";

/**
 * Called by Coda when a connection is created: checks that the endpoint is
 * reachable and the token is accepted, and names the connection after the host.
 * `GET /runs/connection-check` answers 401 for a wrong token and 404
 * (unknown_run) for a right one; no sync is started.
 */
export async function checkConnection(context: coda.ExecutionContext): Promise<string> {
  const base = endpointOf(context);
  const host = hostOf(base);
  try {
    await request(context, "GET", `/runs/${CONNECTION_CHECK_RUN_ID}`, undefined, { kind: "connect" });
  } catch (err) {
    // A wrong token, a wrong URL or an unreachable daemon fail the connection at once;
    // anything else (404 unknown_run is the expected answer) means the token was accepted.
    if (!(err instanceof DaemonError) || CONNECTION_BLOCKERS.includes(err.reason)) {
      throw err;
    }
  }
  return `coda-sync (${host})`;
}
