// The widget's behaviour: starting, resuming and ending the session, sending with retries,
// typing both ways, unread counts, files, and keeping tabs in step. The view draws, the
// follower (transport.ts) listens, the API client talks; this decides.

import { ApiError, ChatApi, NetworkError, isGone, isTransient, type StartData } from "./api";
import type { Options } from "./config";
import { saveBlob, uuid } from "./dom";
import { isSaid, messageNode, systemText, transcriptText, type RenderContext } from "./render";
import { Conversation, Persist, type SavedSession } from "./store";
import { format, tables, type Strings } from "./strings";
import { setPrimary } from "./styles";
import { Follower, type FollowHandlers } from "./transport";
import { optionsOf, type Media, type Message, type Routing, type StartedSession, type Typer } from "./types";
import { View, type PendingItem, type PrechatValues } from "./view";

/** What `window.NexusChat.onEvent` is told. */
export interface NexusChatEvent {
  type: "opened" | "minimised" | "started" | "message" | "ended";
  sessionId?: string;
  message?: Message;
}

interface Outgoing extends PendingItem {
  file?: File;
}

const MAX_FILE_BYTES = 5 * 1024 * 1024;
/** The server's own list: anything else is refused with 415, so it is refused here first. */
const FILE_TYPES = /^(image|audio|video)\/|^application\/pdf$|^text\/plain$/;
/** A typing notice lasts 10 s on the server: refresh it while the customer types. */
const TYPING_REFRESH_MS = 4_000;
const TYPING_PAUSE_MS = 3_000;
/** Someone else's typing, not refreshed or stopped, is forgotten after this long. */
const TYPER_TTL_MS = 12_000;

export class Controller {
  private readonly s: Strings;
  private readonly api: ChatApi;
  private readonly persist: Persist;
  private readonly view: View;
  private readonly title: string;
  private readonly render: RenderContext;
  private session: SavedSession | null = null;
  private convo = new Conversation();
  private follower: Follower | null = null;
  private outbox: Outgoing[] = [];
  private flushing = false;
  private flushTimer: ReturnType<typeof setTimeout> | undefined;
  private flushAttempt = 0;
  private readonly typers = new Map<string, { nickname: string; timer: ReturnType<typeof setTimeout> }>();
  private typingSentAt = 0;
  private typingTimer: ReturnType<typeof setTimeout> | undefined;
  private ended = false;
  private down = false;
  private routing: Routing | null = null;
  /** The bot question a quick reply answered: its options stay hidden. */
  private answered = 0;
  /** Bumped whenever the session changes: answers for an older one are dropped. */
  private generation = 0;
  private profile: Record<string, string> = {};

  constructor(
    private readonly options: Options,
    shadow: ShadowRoot,
    private readonly emit: (event: NexusChatEvent) => void,
  ) {
    this.s = tables[options.lang];
    this.api = new ChatApi(options.url, options.apiKey);
    this.persist = new Persist(options.url, options.endpoint);
    this.title = options.title || this.s.title;
    this.render = { s: this.s, lang: options.lang, download: (media) => void this.download(media) };
    this.view = new View(shadow, this.s, this.title, options.fields, options.position === "left", {
      opened: () => {
        this.markSeen();
        this.emit({ type: "opened", sessionId: this.session?.sessionId });
      },
      minimised: () => this.emit({ type: "minimised", sessionId: this.session?.sessionId }),
      start: (values) => void this.start(values),
      send: (text) => this.send(text),
      typed: (text) => this.typed(text),
      attach: (file) => this.attach(file),
      end: () => void this.end(),
      newChat: () => this.newChat(),
      transcript: () => this.transcript(),
      reply: (text) => {
        this.answered = this.convo.highest;
        this.send(text);
      },
      retry: (id) => {
        const item = this.outbox.find((i) => i.id === id);
        if (item) item.state = "sending";
        this.showOutbox();
        void this.flush();
      },
      remove: (id) => this.dropOutgoing(id),
    });
    setPrimary(this.view.themed, options.primaryColor);
    this.view.themed.setAttribute("lang", options.lang);
  }

  init(): void {
    const saved = this.persist.load();
    if (saved) this.resume(saved);
    window.addEventListener("online", () => {
      this.follower?.wake();
      this.flushAttempt = 0;
      void this.flush();
      this.showConnection();
    });
    window.addEventListener("offline", () => this.showConnection());
    document.addEventListener("visibilitychange", () => this.updateUnread());
    window.addEventListener("storage", (event) => this.storage(event));
  }

  open(): void {
    this.view.open();
  }

  close(): void {
    this.view.minimise();
  }

  // --- Sessions --------------------------------------------------------------------------

  /** Forgets the session shown (not the saved one): a clean slate for another. */
  private reset(): void {
    this.generation++;
    this.follower?.stop();
    this.follower = null;
    this.stopTyping();
    this.session = null;
    this.convo = new Conversation();
    this.outbox = [];
    clearTimeout(this.flushTimer);
    this.setTypers([]);
    this.routing = null;
    this.ended = this.down = false;
    this.answered = 0;
    this.flushing = false;
    this.view.clearLog();
    this.view.setUnread(0);
  }

  /**
   * Shows a session and follows it: the whole transcript from position 1 (a page load, another
   * tab's session), then live. `fresh` are the messages the start answered.
   */
  private resume(saved: SavedSession, fresh: Message[] = []): void {
    this.reset();
    this.session = saved;
    this.ended = !!saved.ended;
    this.view.show(this.ended ? "ended" : "chat");
    this.outbox = this.persist
      .outbox(saved.sessionId)
      .map((item) => ({ id: item.messageId, text: item.text, state: "waiting" }));
    this.showOutbox();
    for (const message of fresh) this.received(message);
    const generation = this.generation;
    const current = (): boolean => generation === this.generation;
    const handlers: FollowHandlers = {
      up: (state, routing, typing) => {
        if (!current()) return;
        this.down = false;
        this.showConnection();
        if (routing !== undefined) this.setRouting(routing);
        this.setTypers(typing);
        if (state === "active") void this.flush();
      },
      message: (message) => current() && this.received(message),
      typing: (who, typing) => current() && this.setTyper(who, typing),
      routing: (routing) => current() && this.setRouting(routing),
      down: () => {
        if (!current()) return;
        this.down = true;
        this.setTypers([]);
        this.showConnection();
      },
      ended: () => current() && this.markEnded(false),
      gone: () => current() && this.markEnded(true),
    };
    // An ended chat is read once, by REST; a live one over the transport asked for.
    this.follower = new Follower(this.api, saved, 0, this.ended ? "long-poll" : this.options.transport, handlers);
    this.follower.start();
    this.showConnection();
  }

  private async start(values: PrechatValues): Promise<void> {
    this.view.setStarting(true);
    const { phoneNumber, subject, ...rest } = values.extra;
    const data: StartData = { nickname: values.name, firstName: values.name };
    if (values.email) data.email = values.email;
    if (phoneNumber) data.phoneNumber = phoneNumber;
    if (subject) data.subject = subject;
    if (this.options.endpoint) data.endpoint = this.options.endpoint;
    if (Object.keys(rest).length) data.userData = rest;
    let started: StartedSession;
    try {
      started = await this.api.start(data);
    } catch (error) {
      this.view.formFailed(...this.startError(error));
      return;
    }
    const saved: SavedSession = {
      sessionId: started.sessionId,
      clientToken: started.clientToken,
      participantId: started.participantId,
      nickname: started.nickname || values.name,
    };
    this.profile = { name: values.name, email: values.email, ...values.extra };
    this.persist.save(saved);
    this.resume(saved, started.messages || []);
    this.view.focusDefault();
    this.emit({ type: "started", sessionId: saved.sessionId });
  }

  /** What to say when a start is refused, and on which field. */
  private startError(error: unknown): [string, string?] {
    if (error instanceof NetworkError) return [navigator.onLine ? this.s.startFailed : this.s.offlineStart];
    if (!(error instanceof ApiError)) return [this.s.startFailed];
    if (error.status === 400) {
      // The server's message names the field it refused.
      const field = error.code === "INVALID_NICKNAME" ? "name" : this.view.fieldKeys().find((key) => error.message.includes(key));
      if (field) return [this.s.fieldInvalid, field];
      return [this.s.startFailed];
    }
    if (error.status === 401 || error.status === 403) return [this.s.startRefused];
    return [this.s.startFailed];
  }

  /** The session ended (or is gone): no more following or sending; say so, and tell the tabs. */
  private markEnded(gone: boolean): void {
    if (!this.session) return;
    const first = !this.ended;
    this.ended = true;
    this.follower?.stop();
    this.follower = null;
    this.stopTyping();
    this.setTypers([]);
    this.routing = null;
    this.down = false;
    clearTimeout(this.flushTimer);
    // What could not be sent stays on screen, marked, so nothing typed is lost.
    for (const item of this.outbox) {
      item.state = "failed";
      item.reason = this.s.reasonEnded;
    }
    this.showOutbox();
    this.persist.setOutbox(this.session.sessionId, []);
    if (gone) {
      if (this.persist.load()?.sessionId === this.session.sessionId) this.persist.clear();
    } else {
      this.session = { ...this.session, ended: true };
      this.persist.save(this.session);
    }
    this.view.show("ended", gone);
    this.showConnection();
    this.updateReplies();
    if (first) this.emit({ type: "ended", sessionId: this.session.sessionId });
  }

  async end(): Promise<void> {
    const session = this.session;
    if (!session || this.ended) return;
    const generation = this.generation;
    this.view.setEnding(true);
    try {
      const ended = await this.api.end(session);
      if (generation !== this.generation) return;
      for (const message of ended.messages || []) this.received(message);
      this.markEnded(false);
    } catch (error) {
      if (generation !== this.generation) return;
      if (isGone(error)) {
        this.markEnded(true);
      } else {
        this.view.setEnding(false);
        this.view.alert(this.s.endFailed);
      }
    }
  }

  private newChat(): void {
    // The same person, most likely: the form starts filled in as they left it.
    const nickname = this.session?.nickname;
    if (nickname && !this.profile.name) this.profile.name = nickname;
    this.persist.clear();
    this.reset();
    this.view.show("prechat");
    this.view.prefill(this.profile);
    this.view.focusDefault();
  }

  /** Another tab started, switched or ended the chat (localStorage is shared, per site). */
  private storage(event: StorageEvent): void {
    if (event.storageArea !== window.localStorage) return;
    if (this.persist.isSeenKey(event.key)) {
      this.updateUnread();
      return;
    }
    if (event.key !== null && event.key !== this.persist.key) return;
    const next = this.persist.load();
    if (!next) {
      if (this.session) {
        this.reset();
        this.view.show("prechat");
        this.view.prefill(this.profile);
      }
    } else if (!this.session || next.sessionId !== this.session.sessionId) {
      this.resume(next);
    } else if (next.ended && !this.ended) {
      this.markEnded(false);
    }
  }

  // --- Messages in -----------------------------------------------------------------------

  /** A message from any path: shown once, in its place by position. */
  private received(message: Message): void {
    if (!this.convo.add(message)) return;
    const node = messageNode(message, this.render);
    if (node) this.view.addMessage(message.position, node);
    this.view.setCanDownload(true);
    if (message.clientMessageId && this.outbox.some((item) => item.id === message.clientMessageId)) {
      this.dropOutgoing(message.clientMessageId);
    }
    const sender = message.from?.participantId;
    if (isSaid(message) && sender && this.typers.has(sender)) this.setTyper({ participantId: sender, nickname: "", type: "" }, false);
    this.updateReplies();
    this.updateUnread();
    this.emit({ type: "message", sessionId: this.session?.sessionId, message });
    if (message.type === "ChatEnded") this.markEnded(false);
  }

  /** The options of the bot's question, while it is the last word and unanswered. */
  private updateReplies(): void {
    let options: string[] = [];
    if (!this.ended && !this.outbox.length) {
      const messages = this.convo.sorted();
      for (let i = messages.length - 1; i >= 0; i--) {
        const message = messages[i];
        if (!isSaid(message) && systemText(message, this.s) === null) continue;
        if (isSaid(message) && message.from.type === "Bot" && message.position > this.answered) {
          options = optionsOf(message);
        }
        break;
      }
    }
    this.view.setQuickReplies(options);
  }

  private markSeen(): void {
    if (this.session) this.persist.setSeen(this.session.sessionId, this.convo.highest);
    this.updateUnread();
  }

  /** Unread: what others said since the panel was last open (in any tab). */
  private updateUnread(): void {
    if (!this.session) return this.view.setUnread(0);
    if (this.view.isOpen && document.visibilityState !== "hidden") {
      if (this.persist.seen(this.session.sessionId) < this.convo.highest) {
        this.persist.setSeen(this.session.sessionId, this.convo.highest);
      }
      return this.view.setUnread(0);
    }
    const seen = this.persist.seen(this.session.sessionId);
    let unread = 0;
    for (const message of this.convo.sorted()) {
      if (message.position > seen && isSaid(message) && message.from.type !== "Customer") unread++;
    }
    this.view.setUnread(unread);
  }

  // --- Live state ------------------------------------------------------------------------

  private setTyper(who: Typer, typing: boolean): void {
    // The customer's own typing (from another tab) is not news to them.
    if (!this.session || who.participantId === this.session.participantId || who.type === "Customer") return;
    const known = this.typers.get(who.participantId);
    if (known) clearTimeout(known.timer);
    if (typing) {
      const timer = setTimeout(() => this.setTyper(who, false), TYPER_TTL_MS);
      this.typers.set(who.participantId, { nickname: who.nickname || known?.nickname || "", timer });
    } else {
      this.typers.delete(who.participantId);
    }
    this.showTyping();
  }

  private setTypers(typers: Typer[]): void {
    for (const { timer } of this.typers.values()) clearTimeout(timer);
    this.typers.clear();
    for (const typer of typers) this.setTyper(typer, true);
    this.showTyping();
  }

  private showTyping(): void {
    const names = [...this.typers.values()].map((typer) => typer.nickname);
    const s = this.s;
    this.view.setTyping(
      names.length === 0
        ? ""
        : names.length === 1
          ? format(s.typingOne, { name: names[0] })
          : names.length === 2
            ? format(s.typingTwo, { a: names[0], b: names[1] })
            : s.typingMany,
    );
  }

  private setRouting(routing: Routing | null): void {
    this.routing = routing;
    this.showConnection();
  }

  /** The status line: offline or reconnecting, and the place in the queue. */
  private showConnection(): void {
    const live = !!this.session && !this.ended;
    const s = this.s;
    this.view.setConnection(!live ? "" : !navigator.onLine ? s.offline : this.down ? s.reconnecting : "");
    const routing = live ? this.routing : null;
    let text = "";
    if (routing?.state === "queued") {
      text = routing.position ? format(s.queued, { n: routing.position }) : s.waitingAgent;
    } else if (routing?.state === "invited") {
      text = s.invited;
    }
    this.view.setRouting(text);
  }

  // --- Messages out ----------------------------------------------------------------------

  private send(text: string): void {
    if (!this.session || this.ended) return;
    this.stopTyping();
    this.outbox.push({ id: uuid(), text, state: "sending" });
    this.saveOutbox();
    this.showOutbox();
    this.updateReplies();
    this.markSeen();
    void this.flush();
  }

  private attach(file: File): void {
    if (!this.session || this.ended) return;
    const s = this.s;
    if (file.size > MAX_FILE_BYTES) return this.view.alert(format(s.fileTooBig, { name: file.name }));
    if (!FILE_TYPES.test(file.type)) return this.view.alert(format(s.fileType, { name: file.name }));
    if (file.size === 0) return this.view.alert(format(s.fileEmpty, { name: file.name }));
    this.view.alert("");
    this.outbox.push({ id: uuid(), text: file.name, file, state: "sending" });
    this.showOutbox();
    void this.flush();
  }

  private dropOutgoing(id: string): void {
    this.outbox = this.outbox.filter((item) => item.id !== id);
    this.saveOutbox();
    this.showOutbox();
    this.updateReplies();
  }

  /** Texts not yet sent survive a reload of this tab (files cannot be kept). */
  private saveOutbox(): void {
    if (!this.session || this.ended) return;
    this.persist.setOutbox(
      this.session.sessionId,
      this.outbox.filter((item) => !item.file).map((item) => ({ messageId: item.id, text: item.text })),
    );
  }

  private showOutbox(): void {
    this.view.setOutbox(this.outbox, this.session?.nickname ?? "");
  }

  /**
   * Sends what waits, one at a time and in order. A send that got no answer is retried with
   * the same messageId (stored once however often it arrives) when the connection is back, or
   * after a back-off; one the server refused is marked, with Retry and Remove.
   */
  private async flush(): Promise<void> {
    if (this.flushing || !this.session || this.ended) return;
    this.flushing = true;
    clearTimeout(this.flushTimer);
    const session = this.session;
    const generation = this.generation;
    try {
      for (;;) {
        const item = this.outbox.find((i) => i.state !== "failed");
        if (!item) break;
        if (this.convo.hasClientId(item.id)) {
          this.dropOutgoing(item.id);
          continue;
        }
        if (item.state !== "sending") {
          item.state = "sending";
          this.showOutbox();
        }
        try {
          const sent = item.file
            ? await this.api.upload(session, item.file, item.id)
            : await this.api.send(session, { type: "Text", text: item.text, messageId: item.id });
          if (generation !== this.generation) return;
          this.flushAttempt = 0;
          this.dropOutgoing(item.id);
          if (sent?.message) this.received(sent.message);
        } catch (error) {
          if (generation !== this.generation) return;
          if (isTransient(error)) {
            for (const waiting of this.outbox) if (waiting.state !== "failed") waiting.state = "waiting";
            this.showOutbox();
            const delay = Math.min(10_000, 1000 * 2 ** this.flushAttempt++);
            this.flushTimer = setTimeout(() => void this.flush(), delay);
            break;
          }
          if (error instanceof ApiError && error.status === 409 && error.code === "INVALID_SESSION") {
            this.markEnded(false);
            break;
          }
          if (isGone(error)) {
            this.markEnded(true);
            break;
          }
          item.state = "failed";
          item.reason =
            error instanceof ApiError && error.status === 413
              ? this.s.reasonTooBig
              : error instanceof ApiError && error.status === 415
                ? this.s.reasonType
                : this.s.reasonOther;
          this.showOutbox();
        }
      }
    } finally {
      if (generation === this.generation) this.flushing = false;
    }
  }

  // --- Typing out ------------------------------------------------------------------------

  /** TypingStarted when the customer starts (refreshed every few seconds), Stopped on a pause. */
  private typed(text: string): void {
    if (!this.session || this.ended) return;
    if (!text.trim()) return this.stopTyping();
    const now = Date.now();
    if (now - this.typingSentAt > TYPING_REFRESH_MS) {
      this.typingSentAt = now;
      this.api.send(this.session, { type: "TypingStarted" }).catch(() => undefined);
    }
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this.stopTyping(), TYPING_PAUSE_MS);
  }

  private stopTyping(): void {
    clearTimeout(this.typingTimer);
    if (this.typingSentAt && this.session && !this.ended) {
      this.api.send(this.session, { type: "TypingStopped" }).catch(() => undefined);
    }
    this.typingSentAt = 0;
  }

  // --- Files and the transcript ----------------------------------------------------------

  private async download(media: Media): Promise<void> {
    if (!this.session) return;
    try {
      const blob = await this.api.file(this.session, media.mediaId);
      saveBlob(blob, media.filename, this.view.shadow);
    } catch {
      this.view.alert(this.s.downloadFailed);
    }
  }

  private transcript(): void {
    const text = transcriptText(this.title, this.convo.sorted(), this.s, this.options.lang);
    const day = new Date().toISOString().slice(0, 10);
    saveBlob(new Blob([text], { type: "text/plain;charset=utf-8" }), `${this.s.transcriptFile}-${day}.txt`, this.view.shadow);
  }
}
