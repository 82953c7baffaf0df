// Following a session's transcript and live state: over the customer WebSocket (nexus), or by
// long-polling `GET messages?after=N&timeout=25` (Spin, or where a socket cannot open). Either
// way it resumes from the highest position it has received (`after`), so a reconnect has no
// gap; the store renders each position once, so it has no repeat either.
//
// Reconnects back off from 0.5 s doubling to 10 s, with jitter so that many widgets cut off
// together do not come back together. `wake()` (the browser's `online`) retries at once.

import { ChatApi, isGone } from "./api";
import type { Credentials, Message, Routing, SessionState, SocketEvent, Typer } from "./types";

export type TransportMode = "auto" | "socket" | "long-poll";

export interface FollowHandlers {
  /** The connection is (again) up; a snapshot of the session's live state. */
  up(state: SessionState, routing: Routing | null | undefined, typing: Typer[]): void;
  /** A message, in rising position. */
  message(message: Message): void;
  /** Someone's typing changed (socket only: long-poll's `up` carries the whole list). */
  typing(who: Typer, typing: boolean): void;
  routing(routing: Routing | null): void;
  /** The connection dropped; it is being retried. */
  down(): void;
  /** The session ended; everything up to its end has been delivered. Following stops. */
  ended(): void;
  /** The session is unknown or refused (401, 403, 404). Following stops. */
  gone(): void;
}

const LONG_POLL_SECONDS = 25;
const PING_MS = 25_000;
/** A socket that has heard nothing (not even a Pong) for this long is dead. */
const SILENCE_MS = 65_000;

export class Follower {
  private stopped = false;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private socket: WebSocket | null = null;
  private poll: AbortController | null = null;
  private useSocket: boolean;
  /** A socket opened once: later failures are the network's, not a missing route. */
  private socketWorked = false;

  constructor(
    private readonly api: ChatApi,
    private readonly session: Credentials,
    private after: number,
    private readonly mode: TransportMode,
    private readonly on: FollowHandlers,
  ) {
    this.useSocket = mode !== "long-poll" && typeof WebSocket === "function";
  }

  start(): void {
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.closeSocket();
    this.poll?.abort();
    this.poll = null;
  }

  /** The network is back: retry now instead of at the end of the back-off. */
  wake(): void {
    if (this.stopped) return;
    if (this.socket) {
      // Probably stale after a network change; a ping either comes back or the socket closes.
      if (this.socket.readyState === WebSocket.OPEN) this.socket.send('{"type":"ping"}');
      return;
    }
    clearTimeout(this.timer);
    this.poll?.abort();
    this.poll = null;
    this.attempt = 0;
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    if (this.useSocket) this.openSocket();
    else void this.longPoll(0);
  }

  private retry(): void {
    if (this.stopped) return;
    const ceiling = Math.min(10_000, 500 * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 10);
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  private deliver(message: Message): void {
    if (message.position > this.after) this.after = message.position;
    this.on.message(message);
  }

  // --- The WebSocket ---------------------------------------------------------------------

  private closeSocket(): void {
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = socket.onmessage = socket.onerror = null;
      socket.close();
    }
  }

  private openSocket(): void {
    let socket: WebSocket;
    try {
      socket = new WebSocket(this.api.socketUrl(this.session, this.after));
    } catch {
      // A page's policy (connect-src) or an odd URL: long-poll goes through fetch instead.
      this.useSocket = false;
      this.connect();
      return;
    }
    this.socket = socket;
    let connected = false;
    let heard = Date.now();
    const pinger = setInterval(() => {
      if (Date.now() - heard > SILENCE_MS) socket.close();
      else if (socket.readyState === WebSocket.OPEN) socket.send('{"type":"ping"}');
    }, PING_MS);
    socket.onmessage = (event) => {
      heard = Date.now();
      let parsed: SocketEvent;
      try {
        parsed = JSON.parse(String(event.data)) as SocketEvent;
      } catch {
        return;
      }
      switch (parsed.type) {
        case "Connected":
          connected = this.socketWorked = true;
          this.attempt = 0;
          this.on.up(parsed.state, parsed.routing, parsed.typing || []);
          if (parsed.state === "ended") void this.finish();
          break;
        case "Message":
          // Rising positions, each once; a stray older one is dropped here as well.
          if (parsed.message && parsed.position > this.after) this.deliver(parsed.message);
          break;
        case "Typing":
          this.on.typing(
            { participantId: parsed.participantId, nickname: parsed.nickname, type: parsed.participantType },
            parsed.typing,
          );
          break;
        case "Routing":
          this.on.routing(parsed.routing);
          break;
        case "State":
          if (parsed.state === "ended") void this.finish();
          break;
      }
    };
    socket.onclose = () => {
      clearInterval(pinger);
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (!connected && !this.socketWorked) {
        if (this.mode === "auto") {
          // Never opened: no socket route here (Spin answers 404), or a proxy without
          // WebSockets. Long-poll says as well whether the session is gone.
          this.useSocket = false;
          this.connect();
          return;
        }
        // A socket cannot tell why it was refused: ask the REST API whether the session is gone.
        this.api.session(this.session).catch((error: unknown) => {
          if (isGone(error) && !this.stopped) {
            this.stop();
            this.on.gone();
          }
        });
      }
      this.on.down();
      this.retry();
    };
  }

  // --- Long-poll -------------------------------------------------------------------------

  private async longPoll(wait: number): Promise<void> {
    if (this.stopped) return;
    const controller = new AbortController();
    this.poll = controller;
    try {
      const page = await this.api.read(this.session, this.after, wait, controller.signal);
      if (this.poll !== controller || this.stopped) return;
      this.attempt = 0;
      this.on.up(page.state, page.routing, page.typing || []);
      for (const message of page.messages) this.deliver(message);
      // nextPosition also steps over messages the customer may not see (agents' whispers).
      if (page.nextPosition > this.after) this.after = page.nextPosition;
      if (page.state === "ended" && !page.more) {
        // The state is read after the messages: the end's own may have come in between.
        void this.finish();
        return;
      }
      void this.longPoll(page.more ? 0 : LONG_POLL_SECONDS);
    } catch (error) {
      if (this.poll !== controller || this.stopped) return;
      if (isGone(error)) {
        this.stop();
        this.on.gone();
        return;
      }
      this.on.down();
      this.retry();
    }
  }

  /**
   * The session ended: stop following, and read what is left once over REST, so that the
   * end's own messages (ParticipantLeft, ChatEnded) are shown even if the socket said `State`
   * before them.
   */
  private async finish(): Promise<void> {
    if (this.stopped) return;
    this.stop();
    try {
      for (let i = 0; i < 50; i++) {
        const page = await this.api.read(this.session, this.after, 0);
        for (const message of page.messages) this.deliver(message);
        if (page.nextPosition > this.after) this.after = page.nextPosition;
        if (!page.more) break;
      }
    } catch {
      // What was delivered stays; the end is shown either way.
    }
    this.on.ended();
  }
}
