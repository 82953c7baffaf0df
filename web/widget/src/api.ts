// The REST half of the Chat API v3: every call sends the widget's chat key (x-api-key) and,
// for a session, its client token (x-nexus-client-key). The token never goes into a URL the
// customer sees; the one URL that carries it is the WebSocket's, which the browser opens
// itself (a browser cannot set headers on a WebSocket).

import type {
  Credentials,
  Ended,
  Sent,
  SessionInfo,
  StartedSession,
  TranscriptPage,
} from "./types";

/** The server answered with an error (the `Error` schema, or the host's own `HostError`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** No answer: offline, DNS, CORS refusal, a reset connection, or our own time limit. */
export class NetworkError extends Error {}

/** Whether an error says the session is no more for this customer (unknown, refused). */
export function isGone(error: unknown): boolean {
  return error instanceof ApiError && [401, 403, 404].includes(error.status);
}

/** Whether trying again later may succeed: no answer, or the server is overloaded. */
export function isTransient(error: unknown): boolean {
  return (
    error instanceof NetworkError ||
    (error instanceof ApiError && (error.status >= 500 || error.status === 429 || error.status === 408))
  );
}

interface CallOptions {
  token?: string;
  json?: unknown;
  form?: FormData;
  signal?: AbortSignal;
  /** The whole call's limit, answer body included. */
  timeoutMs?: number;
  blob?: boolean;
}

interface ErrorBody {
  status?: { code?: unknown; message?: unknown };
  error?: { code?: unknown; message?: unknown };
}

export interface StartData {
  nickname: string;
  firstName: string;
  email?: string;
  phoneNumber?: string;
  subject?: string;
  endpoint?: string;
  userData?: Record<string, string>;
}

export type SendData =
  | { type: "Text"; text: string; messageId: string }
  | { type: "TypingStarted" | "TypingStopped" };

export class ChatApi {
  private readonly sessions: string;

  constructor(
    private readonly origin: string,
    private readonly key: string,
  ) {
    this.sessions = `${origin}/nexus/v3/chat/sessions`;
  }

  private async call(method: string, path: string, options: CallOptions = {}): Promise<unknown> {
    const headers: Record<string, string> = { "x-api-key": this.key };
    if (options.token) headers["x-nexus-client-key"] = options.token;
    let body: BodyInit | undefined;
    if (options.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.json);
    } else if (options.form) {
      body = options.form;
    }
    // One controller for our time limit and the caller's abort alike.
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), options.timeoutMs ?? 20_000);
    const outer = options.signal;
    const relay = () => controller.abort();
    outer?.addEventListener("abort", relay);
    let status: number;
    let text = "";
    let blob: Blob | undefined;
    try {
      const response = await fetch(this.sessions + path, {
        method,
        headers,
        body,
        signal: controller.signal,
        cache: "no-store",
        credentials: "omit",
      });
      status = response.status;
      if (options.blob && response.ok) blob = await response.blob();
      else text = await response.text();
    } catch {
      throw new NetworkError("no answer");
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener("abort", relay);
    }
    if (status < 200 || status > 299) {
      let code = "FAILURE";
      let message = `HTTP ${status}`;
      try {
        const error = JSON.parse(text) as ErrorBody;
        const detail = error.status ?? error.error;
        if (detail && typeof detail.code === "string") code = detail.code;
        if (detail && typeof detail.message === "string") message = detail.message;
      } catch {
        // Not JSON (a proxy's page): the status says enough.
      }
      throw new ApiError(status, code, message);
    }
    if (blob) return blob;
    if (!text) return undefined;
    try {
      return (JSON.parse(text) as { data?: unknown }).data;
    } catch {
      throw new ApiError(status, "FAILURE", "an answer that is not JSON");
    }
  }

  private path(session: Credentials, rest = ""): string {
    return `/${encodeURIComponent(session.sessionId)}${rest}`;
  }

  start(data: StartData): Promise<StartedSession> {
    return this.call("POST", "", { json: { data } }) as Promise<StartedSession>;
  }

  session(session: Credentials): Promise<SessionInfo> {
    return this.call("GET", this.path(session), { token: session.clientToken }) as Promise<SessionInfo>;
  }

  send(session: Credentials, data: SendData): Promise<Sent> {
    return this.call("POST", this.path(session, "/messages"), {
      token: session.clientToken,
      json: { data },
    }) as Promise<Sent>;
  }

  /** The transcript after `after`, waiting up to `wait` seconds for news (a long-poll). */
  read(session: Credentials, after: number, wait: number, signal?: AbortSignal): Promise<TranscriptPage> {
    return this.call("GET", this.path(session, `/messages?after=${after}&timeout=${wait}`), {
      token: session.clientToken,
      signal,
      // The server answers by `wait`; past it with some slack the connection is dead.
      timeoutMs: (wait + 15) * 1000,
    }) as Promise<TranscriptPage>;
  }

  end(session: Credentials): Promise<Ended> {
    return this.call("POST", this.path(session, "/end"), { token: session.clientToken }) as Promise<Ended>;
  }

  /** Sends a file; `messageId` makes a resend of the same upload stored once. */
  upload(session: Credentials, file: File, messageId: string): Promise<Sent> {
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("messageId", messageId);
    return this.call("POST", this.path(session, "/files"), {
      token: session.clientToken,
      form,
      timeoutMs: 120_000,
    }) as Promise<Sent>;
  }

  /** A file of the transcript, fetched with the token in a header (never in a link). */
  file(session: Credentials, mediaId: string): Promise<Blob> {
    return this.call("GET", this.path(session, `/files/${encodeURIComponent(mediaId)}`), {
      token: session.clientToken,
      blob: true,
      timeoutMs: 120_000,
    }) as Promise<Blob>;
  }

  /** The customer WebSocket, from the position after `after`. */
  socketUrl(session: Credentials, after: number): string {
    const base = this.origin.replace(/^http/i, "ws");
    return (
      `${base}/nexus/v3/chat/sessions/${encodeURIComponent(session.sessionId)}/socket` +
      `?clientToken=${encodeURIComponent(session.clientToken)}&after=${after}`
    );
  }
}
