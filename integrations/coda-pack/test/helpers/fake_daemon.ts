// An in-process stand-in for the daemon's control port, implementing the HTTP
// contract the Pack relies on (see README "HTTP contract"). Used to run the
// end-to-end flow over real HTTP without the Python daemon.
import * as http from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeRun {
  run_id: string;
  state: "queued" | "running" | "succeeded" | "failed";
  binding: string | null;
  full: boolean;
  started_at: string | null;
  finished_at: string | null;
  result: { pulled: number; pushed: number; deleted: number; conflicts: number; quarantined: number } | null;
  error: string | null;
}

export interface SeenRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  authorization?: string;
  contentType?: string;
  body: string;
}

export interface FakeDaemonOptions {
  token: string;
  bindings?: string[];
  /** Binding whose runs fail with this error text. */
  failing?: { binding: string; error: string };
  /** Milliseconds a run stays queued, then running. */
  queuedMs?: number;
  runningMs?: number;
  /** TCP port on 127.0.0.1 (default: any free port). */
  port?: number;
}

export interface FakeDaemon {
  url: string;
  requests: SeenRequest[];
  runs: Map<string, FakeRun>;
  close(): Promise<void>;
}

const MAX_BODY = 1024;

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

export async function startFakeDaemon(options: FakeDaemonOptions): Promise<FakeDaemon> {
  const bindings = options.bindings ?? ["participation"];
  const runs = new Map<string, FakeRun>();
  const requests: SeenRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let counter = 0;

  const later = (ms: number, fn: () => void) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        tooLarge = true;
      } else {
        chunks.push(chunk);
      }
    });
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://fake");
      const body = Buffer.concat(chunks).toString("utf8");
      requests.push({
        method: req.method ?? "",
        path: url.pathname,
        query: Object.fromEntries(url.searchParams.entries()),
        authorization: req.headers.authorization,
        contentType: req.headers["content-type"],
        body,
      });
      if (req.headers.authorization !== `Bearer ${options.token}`) {
        send(res, 401, { error: "unauthorized", message: "missing or wrong trigger token" });
        return;
      }
      if (req.method === "POST" && url.pathname === "/sync") {
        if (tooLarge) {
          send(res, 413, { error: "too_large", message: "request body too large" });
          return;
        }
        let binding: string | null = url.searchParams.get("binding");
        let full = url.searchParams.get("full") === "true";
        if (body.trim()) {
          let parsed: unknown;
          try {
            parsed = JSON.parse(body);
          } catch {
            send(res, 400, { error: "bad_request", message: "body is not valid JSON" });
            return;
          }
          if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
            send(res, 400, { error: "bad_request", message: "body must be a JSON object" });
            return;
          }
          const fields = parsed as Record<string, unknown>;
          if (fields.binding !== undefined && fields.binding !== null && typeof fields.binding !== "string") {
            send(res, 400, { error: "bad_request", message: "binding must be a string" });
            return;
          }
          if (fields.full !== undefined && typeof fields.full !== "boolean") {
            send(res, 400, { error: "bad_request", message: "full must be a boolean" });
            return;
          }
          binding = (fields.binding as string | null | undefined) ?? binding;
          full = (fields.full as boolean | undefined) ?? full;
        }
        if (binding !== null && !bindings.includes(binding)) {
          send(res, 404, {
            error: "unknown_binding",
            message: `binding '${binding}' is not configured`,
            bindings,
          });
          return;
        }
        counter += 1;
        const run: FakeRun = {
          run_id: `r-${String(counter).padStart(4, "0")}`,
          state: "queued",
          binding,
          full,
          started_at: null,
          finished_at: null,
          result: null,
          error: null,
        };
        runs.set(run.run_id, run);
        later(options.queuedMs ?? 30, () => {
          run.state = "running";
          run.started_at = new Date().toISOString();
          later(options.runningMs ?? 60, () => {
            run.finished_at = new Date().toISOString();
            if (options.failing && options.failing.binding === binding) {
              run.state = "failed";
              run.error = options.failing.error;
            } else {
              run.state = "succeeded";
              run.result = { pulled: 3, pushed: 1, deleted: 0, conflicts: 0, quarantined: 0 };
            }
          });
        });
        send(res, 202, { run_id: run.run_id, binding, full, state: "queued" });
        return;
      }
      const match = /^\/runs\/([^/]+)$/.exec(url.pathname);
      if (req.method === "GET" && match) {
        const run = runs.get(decodeURIComponent(match[1]));
        if (!run) {
          send(res, 404, { error: "unknown_run", message: `run '${decodeURIComponent(match[1])}' is not known` });
          return;
        }
        send(res, 200, run);
        return;
      }
      send(res, 404, { error: "not_found", message: `no route for ${req.method} ${url.pathname}` });
    });
  });

  await new Promise<void>((resolve) => server.listen(options.port ?? 0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    runs,
    close: async () => {
      for (const timer of timers) {
        clearTimeout(timer);
      }
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}
