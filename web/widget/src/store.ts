// What the widget keeps: the session in localStorage (shared by every tab of the site, so a
// reload or another tab resumes the same chat, and the `storage` event tells the other tabs of
// a new chat or an end), what the customer has read (so the unread count agrees across tabs),
// and the messages not yet sent in sessionStorage (this tab's own: after a reload they are sent
// again with the same messageId, which the server stores once).
//
// And the conversation itself: messages by position, so that each is rendered once whatever
// path it came by (the send's answer, the socket, a long-poll, a replay after a reconnect).

import type { Message } from "./types";

export interface SavedSession {
  sessionId: string;
  clientToken: string;
  participantId: string;
  nickname: string;
  /** Set by the tab that saw the end, so that the others show it too. */
  ended?: boolean;
}

export interface SavedText {
  messageId: string;
  text: string;
}

/** Storage can be off (privacy modes, sandboxed frames): the widget then lives in memory. */
function read(storage: () => Storage, key: string): string | null {
  try {
    return storage().getItem(key);
  } catch {
    return null;
  }
}

function write(storage: () => Storage, key: string, value: string | null): void {
  try {
    if (value === null) storage().removeItem(key);
    else storage().setItem(key, value);
  } catch {
    // Full or refused: the chat goes on, without resuming after a reload.
  }
}

function parse<T>(text: string | null): T | null {
  if (!text) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

const local = () => window.localStorage;
const perTab = () => window.sessionStorage;

export class Persist {
  readonly key: string;
  private readonly seenKey: string;

  /** One chat per nexus and endpoint: two widgets of one site for two endpoints keep apart. */
  constructor(url: string, endpoint: string) {
    this.key = `nexus-chat:${url}|${endpoint}`;
    this.seenKey = `${this.key}:seen`;
  }

  load(): SavedSession | null {
    const saved = parse<SavedSession>(read(local, this.key));
    return saved && typeof saved.sessionId === "string" && typeof saved.clientToken === "string"
      ? saved
      : null;
  }

  save(session: SavedSession): void {
    write(local, this.key, JSON.stringify(session));
  }

  clear(): void {
    write(local, this.key, null);
    write(local, this.seenKey, null);
  }

  /** The highest position the customer has seen with the panel open, in this session. */
  seen(sessionId: string): number {
    const seen = parse<{ sessionId: string; position: number }>(read(local, this.seenKey));
    return seen && seen.sessionId === sessionId ? seen.position : 0;
  }

  setSeen(sessionId: string, position: number): void {
    if (position > this.seen(sessionId)) {
      write(local, this.seenKey, JSON.stringify({ sessionId, position }));
    }
  }

  isSeenKey(key: string | null): boolean {
    return key === this.seenKey;
  }

  outbox(sessionId: string): SavedText[] {
    const items = parse<SavedText[]>(read(perTab, `${this.key}:outbox:${sessionId}`));
    return Array.isArray(items) ? items.filter((i) => typeof i.text === "string" && typeof i.messageId === "string") : [];
  }

  setOutbox(sessionId: string, items: SavedText[]): void {
    write(perTab, `${this.key}:outbox:${sessionId}`, items.length ? JSON.stringify(items) : null);
  }
}

/** The transcript as received: positions are the order and the identity. */
export class Conversation {
  private readonly messages = new Map<number, Message>();
  private readonly clientIds = new Set<string>();
  highest = 0;

  /** Adds a message; false when its position is already known (it is not rendered again). */
  add(message: Message): boolean {
    if (typeof message.position !== "number" || this.messages.has(message.position)) return false;
    this.messages.set(message.position, message);
    if (message.clientMessageId) this.clientIds.add(message.clientMessageId);
    if (message.position > this.highest) this.highest = message.position;
    return true;
  }

  /** Whether a message sent with this id is in the transcript already. */
  hasClientId(messageId: string): boolean {
    return this.clientIds.has(messageId);
  }

  sorted(): Message[] {
    return [...this.messages.values()].sort((a, b) => a.position - b.position);
  }

  get size(): number {
    return this.messages.size;
  }
}
