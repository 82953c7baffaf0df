// The Workspace API over fetch: one method per operation the console uses, each answering the
// parsed `data` of the envelope `{referenceId, status, data}` or throwing an ApiError made from
// the Error schema `{referenceId, status: {code, message}}` (or the host's own
// `{error: {code, message, request_id}}`). Same origin as the console, so relative paths.

import {
  type AfterAction,
  type Agent,
  type Interaction,
  type JsonObject,
  type Message,
  type SuperviseMode,
  type Targets,
  type Visibility,
  asObject,
  parseAgent,
  parseEvent,
  parseInteraction,
  parseInteractions,
  parseMessage,
  parseMessages,
  parseTargets,
  type DesktopEvent,
} from "./types";

const BASE = "/nexus/v3/workspace";
const CHAT = `${BASE}/media/chat/interactions`;

export class ApiError extends Error {
  constructor(
    /// The HTTP status, or 0 when nexus could not be reached at all.
    readonly httpStatus: number,
    /// The Error schema's code (CONFLICT, NOT_FOUND, ...), or NETWORK.
    readonly code: string,
    message: string,
    /// The request id, to quote to support.
    readonly referenceId?: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

function errorFrom(status: number, body: unknown, fallback: string): ApiError {
  const o = asObject(body);
  const envelope = asObject(o?.status);
  if (envelope && typeof envelope.message === "string") {
    return new ApiError(
      status,
      typeof envelope.code === "string" ? envelope.code : "FAILURE",
      envelope.message,
      typeof o?.referenceId === "string" ? o.referenceId : undefined,
    );
  }
  const host = asObject(o?.error);
  if (host && typeof host.message === "string") {
    return new ApiError(
      status,
      typeof host.code === "string" ? host.code : "FAILURE",
      host.message,
      typeof host.request_id === "string" ? host.request_id : undefined,
    );
  }
  return new ApiError(status, "FAILURE", fallback);
}

/// A message id of the desktop's own, so that a retried send is stored once (`messageId`).
export function newMessageId(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Api {
  constructor(
    private readonly token: string,
    /// Told of every 401 before the error is thrown: the token is no good any more.
    private readonly onUnauthorized: () => void = () => undefined,
  ) {}

  private async send(
    method: "GET" | "POST",
    path: string,
    body?: JsonObject,
    signal?: AbortSignal,
    accept = "application/json",
  ): Promise<Response> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}`, accept };
    if (method === "POST") headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await fetch(path, {
        method,
        headers,
        // Every POST carries a JSON body, an empty object at least: nexus takes JSON or a form.
        body: method === "POST" ? JSON.stringify(body ?? {}) : undefined,
        cache: "no-store",
        credentials: "omit",
        signal,
      });
    } catch (err) {
      if (err instanceof DOMException && err.name === "AbortError") throw err;
      throw new ApiError(0, "NETWORK", "nexus cannot be reached");
    }
    if (response.status === 401) this.onUnauthorized();
    return response;
  }

  private async call(method: "GET" | "POST", path: string, body?: JsonObject, signal?: AbortSignal): Promise<unknown> {
    const response = await this.send(method, path, body, signal);
    let parsed: unknown;
    try {
      parsed = await response.json();
    } catch {
      parsed = undefined;
    }
    if (!response.ok) throw errorFrom(response.status, parsed, `${response.status} ${response.statusText}`);
    return asObject(parsed)?.data;
  }

  private op(id: string, operation: string, body?: JsonObject): Promise<unknown> {
    return this.call("POST", `${CHAT}/${encodeURIComponent(id)}/${operation}`, body);
  }

  async me(): Promise<Agent> {
    return parseAgent(await this.call("GET", `${BASE}/me`));
  }

  async setState(state: "ready" | "not-ready" | "logout"): Promise<Agent> {
    return parseAgent(await this.call("POST", `${BASE}/media/chat/${state}`));
  }

  async targets(): Promise<Targets> {
    return parseTargets(await this.call("GET", `${BASE}/targets`));
  }

  /// `mine`: what the agent holds or is offered; `tenant` (supervisors): every open chat.
  async interactions(scope: "mine" | "tenant" = "mine"): Promise<Interaction[]> {
    const query = scope === "tenant" ? "?scope=tenant" : "";
    return parseInteractions(asObject(await this.call("GET", `${CHAT}${query}`))?.interactions);
  }

  async interaction(id: string): Promise<Interaction | undefined> {
    return parseInteraction(await this.call("GET", `${CHAT}/${encodeURIComponent(id)}`));
  }

  /// The transcript after `after`, every page of it (nexus answers a bounded number per read).
  async messages(id: string, after = 0): Promise<Message[]> {
    const all: Message[] = [];
    let cursor = after;
    for (let page = 0; page < 50; page++) {
      const data = await this.call("GET", `${CHAT}/${encodeURIComponent(id)}/messages?after=${cursor}`);
      const batch = parseMessages(asObject(data)?.messages);
      all.push(...batch);
      const last = batch.length ? batch[batch.length - 1].position : cursor;
      // A short page is the end; a page of 100 or more may have more behind it.
      if (batch.length < 100 || last <= cursor) break;
      cursor = last;
    }
    return all;
  }

  async accept(id: string): Promise<Interaction | undefined> {
    return parseInteraction(await this.op(id, "accept"));
  }

  async reject(id: string): Promise<void> {
    await this.op(id, "reject");
  }

  async sendMessage(id: string, message: string, visibility: Visibility, messageId: string): Promise<Message | undefined> {
    const data = await this.op(id, "send-message", { message, visibility, messageId });
    return parseMessage(asObject(data)?.message);
  }

  async sendNotice(id: string, message: string, visibility: Visibility, messageId: string): Promise<Message | undefined> {
    const data = await this.op(id, "send-custom-notification", { message, visibility, messageId });
    return parseMessage(asObject(data)?.message);
  }

  async typing(id: string, started: boolean): Promise<void> {
    await this.op(id, started ? "send-typing-started" : "send-typing-stopped");
  }

  async leave(id: string, afterAction: AfterAction): Promise<boolean> {
    const data = await this.op(id, "leave", { afterAction });
    return asObject(data)?.chatEnded === true;
  }

  async complete(id: string): Promise<void> {
    await this.op(id, "complete");
  }

  async transferToAgent(id: string, agentId: string): Promise<void> {
    await this.op(id, "transfer-agent", { agentId });
  }

  async placeInQueue(id: string, queue: string): Promise<void> {
    await this.op(id, "place-in-queue", { queue });
  }

  async supervise(id: string, mode: SuperviseMode): Promise<Interaction | undefined> {
    return parseInteraction(await this.op(id, `switch-to-${mode}`));
  }

  /// Merges `userData` (a key set to null is removed); the user data now.
  async updateUserData(id: string, userData: JsonObject): Promise<JsonObject> {
    return asObject(asObject(await this.op(id, "update-user-data", { userData }))?.userData) ?? {};
  }

  async deleteUserData(id: string, keys: string[]): Promise<JsonObject> {
    return asObject(asObject(await this.op(id, "delete-user-data", { keys }))?.userData) ?? {};
  }

  /// The long-poll: events after `after`, waiting up to `timeout` seconds.
  async events(after: number, timeout: number, signal?: AbortSignal): Promise<{ events: DesktopEvent[]; next: number; lost: boolean }> {
    const data = asObject(await this.call("GET", `${BASE}/events?after=${after}&timeout=${timeout}`, undefined, signal)) ?? {};
    const raw = Array.isArray(data.events) ? data.events : [];
    return {
      events: raw.map(parseEvent).filter((e): e is DesktopEvent => e !== undefined),
      next: typeof data.next === "number" ? data.next : after,
      lost: data.lost === true,
    };
  }

  /// A file a customer sent: its bytes, fetched with the bearer header (a plain link cannot
  /// carry it), and the name nexus gives it.
  async download(mediaId: string): Promise<Blob> {
    const response = await this.send("GET", `${BASE}/files/${encodeURIComponent(mediaId)}`, undefined, undefined, "*/*");
    if (!response.ok) {
      let parsed: unknown;
      try {
        parsed = await response.json();
      } catch {
        parsed = undefined;
      }
      throw errorFrom(response.status, parsed, `${response.status} ${response.statusText}`);
    }
    return response.blob();
  }
}
