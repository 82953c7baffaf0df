// The Chat API v3's shapes as the widget reads them (openapi/chat-v3.json). Answers are parsed
// JSON: the widget trusts their structure no further than it must, and treats every text in
// them as untrusted (rendered with textContent only).

export type SenderType = "Customer" | "Agent" | "Bot" | "Supervisor" | "System";
export type SessionState = "active" | "ended";

export interface Sender {
  participantId?: string;
  type: SenderType;
  nickname: string;
}

/** A transcript message (the `Message` schema). */
export interface Message {
  position: number;
  /** Text, CustomNotice, ParticipantJoined, ParticipantLeft, UserDataUpdated, ChatEnded. */
  type: string;
  from: Sender;
  text?: string;
  data?: Record<string, unknown>;
  visibility: string;
  deliveryStatus: string;
  clientMessageId?: string;
  timestamp: string;
}

/** A file a message carries (`data.media[]`). */
export interface Media {
  mediaId: string;
  filename: string;
  mimetype: string;
  length: number;
}

/** Where routing has the conversation (the `Routing` schema). */
export interface Routing {
  state: "none" | "queued" | "invited" | "assigned" | "idle" | "done";
  queue?: string | null;
  position?: number | null;
}

/** Someone typing, other than the customer. */
export interface Typer {
  participantId: string;
  nickname: string;
  type: string;
}

/** The identity of a session, as the widget keeps it. */
export interface Credentials {
  sessionId: string;
  clientToken: string;
}

export interface StartedSession extends Credentials {
  participantId: string;
  nickname: string;
  messages: Message[];
}

export interface SessionInfo {
  sessionId: string;
  state: SessionState;
  participantId: string;
  routing?: Routing | null;
}

export interface TranscriptPage {
  messages: Message[];
  nextPosition: number;
  more: boolean;
  state: SessionState;
  typing: Typer[];
  routing?: Routing | null;
}

/** What a send answers: the stored message (or `{typing}` for typing, which is not read). */
export interface Sent {
  message?: Message;
  duplicate?: boolean;
}

export interface Ended {
  state: "ended";
  messages: Message[];
}

/** One event of the customer WebSocket (the `SocketEvent` schema). */
export type SocketEvent =
  | {
      type: "Connected";
      sessionId: string;
      participantId: string;
      state: SessionState;
      routing: Routing | null;
      typing: Typer[];
      after: number;
    }
  | { type: "Message"; position: number; message: Message }
  | {
      type: "Typing";
      participantId: string;
      nickname: string;
      participantType: string;
      typing: boolean;
    }
  | { type: "State"; state: SessionState }
  | { type: "Routing"; routing: Routing }
  | { type: "Pong" }
  | { type: "Error"; message: string };

/** The options of a bot's question (`data.options`), when they are all texts. */
export function optionsOf(message: Message): string[] {
  const options = message.data?.options;
  return Array.isArray(options) ? options.filter((o): o is string => typeof o === "string") : [];
}

/** The files of a message (`data.media`), keeping only well-formed entries. */
export function mediaOf(message: Message): Media[] {
  const media = message.data?.media;
  if (!Array.isArray(media)) return [];
  const files: Media[] = [];
  for (const item of media as unknown[]) {
    if (typeof item !== "object" || item === null) continue;
    const entry = item as Record<string, unknown>;
    if (typeof entry.mediaId !== "string") continue;
    files.push({
      mediaId: entry.mediaId,
      filename: typeof entry.filename === "string" ? entry.filename : "file",
      mimetype: typeof entry.mimetype === "string" ? entry.mimetype : "",
      length: typeof entry.length === "number" ? entry.length : 0,
    });
  }
  return files;
}
