// The agent's events, live: the desktop WebSocket (/nexus/v3/workspace/socket), or the long-poll
// (GET /nexus/v3/workspace/events) where no socket can be opened (nexus under Spin has none).
//
// What the server promises and what this does about it:
// - every event has a `seq` and may come twice (a replay and the live copy): a window of the
//   numbers seen drops repeats, and the highest is where a reconnect resumes (`?after=`);
// - `EventsLost` (or the long-poll's `lost`) says the log no longer reaches back that far: the
//   console reloads its interactions (onResync);
// - a socket opened with no number would replay the whole log (the last 1000 events, offers long
//   gone among them). So the first socket asks for what comes after a number above any given
//   (nothing is replayed), and the console reads the present from the REST API once it is
//   subscribed (onResync after Connected): subscribed first, then read, as nexus does itself, so
//   nothing falls between the two and what is seen twice converges (events carry whole states);
// - the socket is closed by the host when silent for 60 s: a ping every 25 s keeps it open, and
//   a watchdog reopens a socket that has heard nothing for 65 s (a half-open connection);
// - reconnects back off from 0.5 s, doubling to 10 s, with jitter, so that a restarted nexus is
//   not met by every desktop at the same instant.

import { Api, ApiError } from "./api";
import { type AgentState, type DesktopEvent, parseFrame } from "./types";

export type StreamStatus = "connecting" | "live" | "reconnecting" | "polling";

export interface StreamHandlers {
  /// The socket said Connected (the agent as nexus knows them now).
  onConnected(nickname: string, state: AgentState): void;
  /// Read the present afresh (first connection, or events were lost); events that arrive
  /// meanwhile must be applied after it.
  onResync(): void;
  onEvent(event: DesktopEvent): void;
  onStatus(status: StreamStatus): void;
}

/// Above every event number nexus gives (numbers restart at the clock in microseconds, below
/// 2^53 until 2255): `after` it, a new socket replays nothing.
const AFTER_EVERYTHING = Number.MAX_SAFE_INTEGER;
const PING_MS = 25_000;
const SILENCE_MS = 65_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
/// Sockets that never opened before the console falls back to the long-poll.
const SOCKET_TRIES = 3;
const POLL_SECONDS = 25;
const SEEN_WINDOW = 2000;

export class EventStream {
  private lastSeq: number | undefined;
  private readonly seen = new Set<number>();
  private socket: WebSocket | undefined;
  private attempt = 0;
  private everConnected = false;
  private failedOpens = 0;
  private stopped = false;
  private polling = false;
  private pingTimer: number | undefined;
  private watchdog: number | undefined;
  private retryTimer: number | undefined;
  private abort: AbortController | undefined;
  private readonly onOnline = (): void => {
    // The network is back: do not wait out the backoff.
    if (this.retryTimer !== undefined && !this.polling) {
      window.clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.open();
    }
  };

  constructor(
    private readonly api: Api,
    private readonly token: string,
    private readonly handlers: StreamHandlers,
  ) {}

  start(): void {
    window.addEventListener("online", this.onOnline);
    this.handlers.onStatus("connecting");
    this.open();
  }

  stop(): void {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    this.clearTimers();
    this.abort?.abort();
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close(1000);
      this.socket = undefined;
    }
  }

  /// Whether this event is new (and remember it); repeats by `seq` are dropped.
  private fresh(event: DesktopEvent): boolean {
    if (event.seq === undefined) return true;
    if (this.seen.has(event.seq)) return false;
    this.seen.add(event.seq);
    if (this.seen.size > SEEN_WINDOW) {
      // Sets iterate in insertion order: forget the oldest quarter.
      let drop = SEEN_WINDOW / 4;
      for (const seq of this.seen) {
        if (drop-- <= 0) break;
        this.seen.delete(seq);
      }
    }
    this.lastSeq = Math.max(this.lastSeq ?? 0, event.seq);
    return true;
  }

  private deliver(event: DesktopEvent): void {
    if (this.fresh(event)) this.handlers.onEvent(event);
  }

  private clearTimers(): void {
    window.clearInterval(this.pingTimer);
    window.clearTimeout(this.watchdog);
    window.clearTimeout(this.retryTimer);
    this.pingTimer = this.watchdog = this.retryTimer = undefined;
  }

  private socketUrl(): string {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const after = this.lastSeq ?? AFTER_EVERYTHING;
    return `${scheme}://${location.host}/nexus/v3/workspace/socket?access_token=${encodeURIComponent(this.token)}&after=${after}`;
  }

  private open(): void {
    if (this.stopped) return;
    let socket: WebSocket;
    try {
      socket = new WebSocket(this.socketUrl());
    } catch {
      this.closed(false);
      return;
    }
    this.socket = socket;
    let connected = false;
    const heard = (): void => {
      window.clearTimeout(this.watchdog);
      this.watchdog = window.setTimeout(() => socket.close(4000, "silent"), SILENCE_MS);
    };
    socket.onopen = () => {
      heard();
      this.pingTimer = window.setInterval(() => {
        if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "ping" }));
      }, PING_MS);
    };
    socket.onmessage = (message: MessageEvent) => {
      heard();
      if (typeof message.data !== "string") return;
      const frame = parseFrame(message.data);
      switch (frame.kind) {
        case "connected": {
          connected = true;
          const first = this.lastSeq === undefined;
          this.everConnected = true;
          this.attempt = 0;
          this.failedOpens = 0;
          this.handlers.onStatus("live");
          this.handlers.onConnected(frame.nickname, frame.state);
          if (first) this.handlers.onResync();
          break;
        }
        case "lost":
          this.handlers.onResync();
          break;
        case "event":
          this.deliver(frame.event);
          break;
        default:
          break;
      }
    };
    socket.onclose = () => {
      if (this.socket === socket) this.socket = undefined;
      this.closed(connected);
    };
  }

  private closed(wasConnected: boolean): void {
    this.clearTimers();
    if (this.stopped) return;
    if (!wasConnected) {
      this.failedOpens += 1;
      // A refused upgrade looks like any network failure to a browser: ask the REST API
      // whether the token still holds (a 401 there signs the console out).
      if (this.failedOpens >= 2) void this.api.me().catch(() => undefined);
      if (!this.everConnected && this.failedOpens >= SOCKET_TRIES) {
        void this.poll();
        return;
      }
    }
    this.handlers.onStatus("reconnecting");
    this.retryTimer = window.setTimeout(() => {
      this.retryTimer = undefined;
      this.open();
    }, this.backoff());
  }

  private backoff(): number {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    this.attempt += 1;
    // ±25 % jitter.
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.retryTimer = window.setTimeout(() => {
        this.retryTimer = undefined;
        resolve();
      }, ms);
    });
  }

  /// The long-poll, for a nexus without the socket.
  private async poll(): Promise<void> {
    this.polling = true;
    this.handlers.onStatus("polling");
    while (!this.stopped) {
      this.abort = new AbortController();
      try {
        if (this.lastSeq === undefined) {
          // Where the log ends now (its past is not news), then the present from the REST API.
          let after = 0;
          for (let page = 0; page < 20; page++) {
            const read = await this.api.events(after, 0, this.abort.signal);
            after = read.next;
            if (read.events.length < 200) break;
          }
          this.lastSeq = after;
          this.handlers.onResync();
        }
        const read = await this.api.events(this.lastSeq, POLL_SECONDS, this.abort.signal);
        if (read.lost) this.handlers.onResync();
        for (const event of read.events) this.deliver(event);
        this.lastSeq = Math.max(this.lastSeq, read.next);
        this.attempt = 0;
        this.handlers.onStatus("polling");
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof ApiError && err.httpStatus === 401) return;
        this.handlers.onStatus("reconnecting");
        await this.sleep(this.backoff());
      }
    }
  }
}
