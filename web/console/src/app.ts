// The console once signed in: it builds the page, reads the present from the REST API, follows
// the events, and carries out what the agent asks (each action an API call whose answer, and
// then its event, update the store; the views redraw from the store's changes).
//
// Events that arrive while the present is being read (after the first Connected, or after
// EventsLost) wait and are applied after it, in order: each event carries a whole state (an
// interaction, a position-numbered message, the agent's state), so applying one the read
// already reflects changes nothing.

import { Api, ApiError, newMessageId } from "./api";
import { h } from "./dom";
import { EventStream } from "./socket";
import { type Change, type Conversation, Store } from "./store";
import { t } from "./strings";
import type { AfterAction, DesktopEvent, Interaction, MediaFile, SuperviseMode, Targets } from "./types";
import { AlertsView } from "./view-alerts";
import { type ConversationActions, ConversationView, type TransferTarget, permissions } from "./view-conversation";
import { DetailsView } from "./view-details";
import { HeaderView } from "./view-header";
import { SidebarView } from "./view-sidebar";

/// How often a supervisor's list of the tenant's chats is read again (no event tells of them).
const TENANT_REFRESH_MS = 15_000;
/// How often a supervisor's preview (not joined: no events) reads its transcript again.
const PREVIEW_REFRESH_MS = 5_000;
/// Typing started is sent again after this long of typing (nexus forgets it after 10 s)...
const TYPING_REFRESH_MS = 5_000;
/// ...and typing stopped after this long without a keystroke.
const TYPING_IDLE_MS = 4_000;

interface TypingState {
  active: boolean;
  sentAt: number;
  idle: number | undefined;
}

export class ConsoleApp {
  private readonly store = new Store();
  private readonly api: Api;
  private readonly stream: EventStream;
  private readonly header: HeaderView;
  private readonly sidebar: SidebarView;
  private readonly conversation: ConversationView;
  private readonly details: DetailsView;
  private readonly alerts: AlertsView;
  private readonly layout: HTMLElement;
  private readonly timers: number[] = [];
  private readonly typing = new Map<string, TypingState>();
  private readonly loads = new Map<string, Promise<void>>();
  /// Conversations this desktop completed or handed on: late events about them are not news.
  private readonly gone = new Set<string>();
  private readonly refreshing = new Map<string, number>();
  private syncing = false;
  private syncAgain = false;
  private buffered: DesktopEvent[] = [];
  private ended = false;
  /// Wide screens show the details beside the transcript; narrower ones open them on demand.
  private readonly wide = window.matchMedia("(min-width: 1200px)");
  private detailsOpen = this.wide.matches;
  private readonly onWidth = (): void => {
    this.detailsOpen = this.wide.matches;
    this.applyDetails();
  };

  constructor(
    private readonly root: HTMLElement,
    token: string,
    /// Back to the sign-in page, with why.
    private readonly exit: (notice?: string) => void,
  ) {
    this.api = new Api(token, () => this.expire());
    this.stream = new EventStream(this.api, token, {
      onConnected: (nickname, state) => {
        if (this.store.agent) this.store.setAgent({ ...this.store.agent, nickname: nickname || this.store.agent.nickname, state });
      },
      onResync: () => void this.resync(),
      onEvent: (event) => this.onEvent(event),
      onStatus: (status) => this.store.setConnection(status),
    });

    this.header = new HeaderView({
      setState: (state) => void this.setState(state),
      signOut: () => void this.signOut(),
    });
    this.sidebar = new SidebarView(this.store, {
      accept: (id) => void this.accept(id),
      reject: (id) => void this.reject(id),
      open: (id) => void this.open(id, true),
      preview: (id) => void this.preview(id),
      refreshTenant: () => void this.refreshTenant(true),
    });
    this.conversation = new ConversationView(this.store, this.conversationActions());
    this.details = new DetailsView({
      setUserData: (id, key, value) => this.setUserData(id, key, value),
      removeUserData: (id, key) => void this.removeUserData(id, key),
    });
    this.alerts = new AlertsView(() => this.conversation.focus());

    const main = h("main", { class: "main", attrs: { id: "main", tabindex: "-1" } }, this.alerts.el, this.conversation.el);
    this.layout = h("div", { class: "layout" }, this.sidebar.el, main, this.details.el);
    // The skip link focuses the reply box (or the conversation's title) itself: following
    // "#main" would put a fragment in the address bar, which is where tokens arrive.
    this.header.el.prepend(
      h("a", {
        class: "skip-link",
        text: t.skipToConversation,
        attrs: { href: "#main" },
        on: {
          click: (event) => {
            event.preventDefault();
            if (this.store.selected) this.conversation.focus();
            else main.focus();
          },
        },
      }),
    );
    this.applyDetails();
    this.wide.addEventListener("change", this.onWidth);
    this.store.on((change) => this.render(change));
  }

  /// Reads the agent and starts following their events.
  async start(): Promise<void> {
    const agent = await this.api.me();
    this.store.setAgent(agent);
    this.root.replaceChildren(h("div", { class: "app" }, this.header.el, this.layout));
    this.header.update(this.store);
    this.header.updateConnection(this.store);
    this.sidebar.updateInvitations();
    this.sidebar.updateConversations();
    this.sidebar.updateTenant();
    this.conversation.show(undefined);
    this.details.update(undefined, false);
    this.updateTitle();
    this.stream.start();
    this.timers.push(
      window.setInterval(() => {
        this.store.expireTyping(Date.now());
        this.sidebar.tick();
      }, 1000),
      window.setInterval(() => void this.refreshPreview(), PREVIEW_REFRESH_MS),
    );
    if (agent.role === "supervisor") {
      void this.refreshTenant(false);
      this.timers.push(window.setInterval(() => void this.refreshTenant(false), TENANT_REFRESH_MS));
    }
  }

  /// Stops everything this console started.
  destroy(): void {
    this.ended = true;
    this.stream.stop();
    this.wide.removeEventListener("change", this.onWidth);
    for (const timer of this.timers) window.clearInterval(timer);
    for (const state of this.typing.values()) window.clearTimeout(state.idle);
    for (const timer of this.refreshing.values()) window.clearTimeout(timer);
  }

  /// nexus refused the token (a 401 anywhere): back to sign-in.
  private expire(): void {
    if (this.ended) return;
    this.destroy();
    this.exit(t.sessionEnded);
  }

  // --- Rendering ----------------------------------------------------------------------------------

  private render(change: Change): void {
    const selected = this.store.selected;
    switch (change.kind) {
      case "agent":
        this.header.update(this.store);
        this.sidebar.updateTenant();
        if (selected) this.conversation.update(selected);
        break;
      case "connection":
        this.header.updateConnection(this.store);
        break;
      case "invitations":
        this.sidebar.updateInvitations();
        this.updateTitle();
        break;
      case "list":
        this.sidebar.updateConversations();
        this.updateTitle();
        break;
      case "selected":
        this.conversation.show(selected);
        this.updateDetails();
        this.sidebar.updateConversations();
        this.sidebar.updateTenant();
        break;
      case "conversation":
        if (selected && change.id === selected.id) {
          this.conversation.update(selected);
          this.updateDetails();
        }
        break;
      case "messages":
        if (selected && change.id === selected.id) this.conversation.append(selected, change.added);
        break;
      case "typing":
        if (selected && change.id === selected.id) this.conversation.updateTyping(selected);
        break;
      case "tenant":
        this.sidebar.updateTenant();
        break;
    }
  }

  private updateDetails(): void {
    const selected = this.store.selected;
    this.details.update(selected, selected ? permissions(selected, this.store).write && !permissions(selected, this.store).whisperOnly : false);
  }

  private updateTitle(): void {
    let unread = 0;
    for (const c of this.store.conversations.values()) unread += c.unread;
    const count = this.store.invitations.size + unread;
    document.title = count ? `(${count}) ${t.appTitle}` : t.appTitle;
  }

  private applyDetails(): void {
    this.layout.classList.toggle("details-closed", !this.detailsOpen);
    this.details.el.hidden = !this.detailsOpen;
    this.conversation.setDetailsExpanded(this.detailsOpen);
  }

  // --- Errors -------------------------------------------------------------------------------------

  private report(err: unknown): void {
    if (this.ended) return;
    if (err instanceof ApiError) {
      if (err.httpStatus === 401) return; // expire() has taken the console to sign-in.
      if (err.code === "NETWORK") this.alerts.show(t.networkError);
      else this.alerts.show(err.message, err.referenceId);
      return;
    }
    if (err instanceof DOMException && err.name === "AbortError") return;
    console.error(err);
    this.alerts.show(t.unexpectedError);
  }

  /// Runs an action, reporting its failure; whether it succeeded.
  private async attempt(action: () => Promise<void>): Promise<boolean> {
    try {
      await action();
      return true;
    } catch (err) {
      this.report(err);
      return false;
    }
  }

  // --- The present, and the events ----------------------------------------------------------------

  /// Reads the agent's interactions afresh and makes the store match them.
  private async resync(): Promise<void> {
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = true;
    try {
      do {
        this.syncAgain = false;
        const list = await this.api.interactions("mine");
        this.applySnapshot(list);
        // Transcripts: whatever came while events were lost.
        await Promise.all(this.store.mine.filter((c) => c.loaded || c.id === this.store.selectedId).map((c) => this.loadMessages(c.id, true)));
      } while (this.syncAgain && !this.ended);
    } catch (err) {
      this.report(err);
    } finally {
      this.syncing = false;
      const waiting = this.buffered;
      this.buffered = [];
      for (const event of waiting) this.apply(event);
    }
  }

  private applySnapshot(list: Interaction[]): void {
    const me = this.store.agent?.id;
    const ids = new Set<string>();
    for (const interaction of list) {
      ids.add(interaction.id);
      const inIt = interaction.participants.some((p) => p.agentId === me);
      if (interaction.routingState === "invited" && !inIt) {
        if (!this.store.invitations.has(interaction.id)) this.store.addInvitation(interaction);
      } else {
        this.store.removeInvitation(interaction.id);
        this.store.upsert(interaction, true);
      }
    }
    this.store.retain(ids);
  }

  private onEvent(event: DesktopEvent): void {
    if (this.syncing) this.buffered.push(event);
    else this.apply(event);
  }

  private apply(event: DesktopEvent): void {
    switch (event.kind) {
      case "invited": {
        this.gone.delete(event.interaction.id);
        const invitation = this.store.addInvitation(event.interaction);
        this.sidebar.announce(t.newInvitation(invitation.customerName, event.interaction.queue ?? ""));
        break;
      }
      case "revoked": {
        const invitation = this.store.removeInvitation(event.id);
        if (invitation) this.sidebar.announce(t.invitationWithdrawn(invitation.customerName));
        break;
      }
      case "status": {
        this.gone.delete(event.interaction.id);
        this.store.removeInvitation(event.interaction.id);
        const conversation = this.store.upsert(event.interaction, true);
        if (!conversation.loaded) void this.loadMessages(conversation.id, false);
        break;
      }
      case "completed":
      case "transferred":
        this.gone.add(event.id);
        this.store.removeInvitation(event.id);
        this.store.remove(event.id);
        break;
      case "messages": {
        if (this.store.conversations.has(event.id)) {
          this.store.addMessages(event.id, event.messages, true);
          // Someone came or went: the participants (and so the details) changed.
          if (event.messages.some((m) => m.type === "ParticipantJoined" || m.type === "ParticipantLeft")) this.refreshInteraction(event.id);
        } else if (!this.gone.has(event.id)) {
          void this.adopt(event.id);
        }
        break;
      }
      case "agentState":
        this.store.setAgentState(event.state, event.reason);
        break;
      case "typing":
        if (event.senderType === "Customer") this.store.setTyping(event.id, event.nickname, event.typing);
        break;
      case "unknown":
        break;
    }
  }

  /// Messages of a conversation the console does not know (a missed state event): read it.
  private async adopt(id: string): Promise<void> {
    try {
      const interaction = await this.api.interaction(id);
      if (!interaction || this.gone.has(id) || this.store.conversations.has(id)) return;
      this.store.upsert(interaction, true);
      await this.loadMessages(id, true);
    } catch {
      // Not ours to see (any more): nothing to show.
    }
  }

  /// Reads an interaction again shortly (several joins and leaves at once: one read).
  private refreshInteraction(id: string): void {
    window.clearTimeout(this.refreshing.get(id));
    this.refreshing.set(
      id,
      window.setTimeout(() => {
        this.refreshing.delete(id);
        void this.api
          .interaction(id)
          .then((interaction) => {
            const known = this.store.conversations.get(id);
            if (interaction && known && !this.gone.has(id)) this.store.upsert(interaction, known.mine);
          })
          .catch(() => undefined);
      }, 300),
    );
  }

  /// Reads a transcript: all of it the first time, then what came after the last position.
  private loadMessages(id: string, news: boolean): Promise<void> {
    const running = this.loads.get(id);
    if (running) return running;
    const load = (async () => {
      const conversation = this.store.conversations.get(id);
      if (!conversation) return;
      const after = conversation.loaded ? lastPosition(conversation) : 0;
      try {
        const messages = await this.api.messages(id, after);
        this.store.addMessages(id, messages, news && conversation.loaded);
        this.store.markLoaded(id);
      } catch (err) {
        this.report(err);
      }
    })().finally(() => this.loads.delete(id));
    this.loads.set(id, load);
    return load;
  }

  // --- Supervisors ----------------------------------------------------------------------------------

  private async refreshTenant(byHand: boolean): Promise<void> {
    if (!this.store.isSupervisor || this.ended) return;
    if (!byHand && document.visibilityState === "hidden") return;
    try {
      this.store.setTenant(await this.api.interactions("tenant"));
    } catch (err) {
      if (byHand) this.report(err);
    }
  }

  private async refreshPreview(): Promise<void> {
    const selected = this.store.selected;
    if (!selected || selected.mine || !selected.loaded || document.visibilityState === "hidden") return;
    await this.loadMessages(selected.id, false);
  }

  private async preview(id: string): Promise<void> {
    const known = this.store.conversations.get(id);
    if (known?.mine) {
      await this.open(id, true);
      return;
    }
    const interaction = this.store.tenant.find((i) => i.id === id);
    if (!interaction) return;
    this.store.upsert(interaction, false);
    this.store.select(id);
    this.conversation.focus();
    await this.loadMessages(id, false);
  }

  private async supervise(id: string, mode: SuperviseMode): Promise<void> {
    await this.attempt(async () => {
      const interaction = await this.api.supervise(id, mode);
      if (!interaction) return;
      const wasMine = this.store.conversations.get(id)?.mine ?? false;
      this.store.upsert(interaction, true);
      // A preview became one of the agent's tabs: show it as such.
      if (!wasMine) this.store.select(id);
      this.conversation.focus();
      await this.loadMessages(id, false);
      void this.refreshTenant(false);
    });
  }

  // --- Actions --------------------------------------------------------------------------------------

  private async setState(state: "ready" | "not-ready"): Promise<void> {
    await this.attempt(async () => this.store.setAgent(await this.api.setState(state)));
  }

  private async signOut(): Promise<void> {
    try {
      await this.api.setState("logout");
    } catch {
      // Signing out goes on: the token is forgotten either way.
    }
    if (this.ended) return;
    this.destroy();
    this.exit();
  }

  private async accept(id: string): Promise<void> {
    const ok = await this.attempt(async () => {
      const interaction = await this.api.accept(id);
      this.store.removeInvitation(id);
      this.gone.delete(id);
      if (interaction) this.store.upsert(interaction, true);
    });
    if (ok) await this.open(id, true);
    else this.dropStaleInvitation(id);
  }

  private async reject(id: string): Promise<void> {
    const ok = await this.attempt(async () => {
      await this.api.reject(id);
      this.store.removeInvitation(id);
    });
    if (!ok) this.dropStaleInvitation(id);
    const next = this.sidebar.firstAccept();
    if (next) next.focus();
    else this.sidebar.invitationsHeading.focus();
  }

  /// An offer nexus no longer makes (409: taken back, timed out, over capacity) goes away.
  private dropStaleInvitation(id: string): void {
    void this.api
      .interactions("mine")
      .then((list) => {
        const still = list.find((i) => i.id === id && i.routingState === "invited");
        if (!still) this.store.removeInvitation(id);
      })
      .catch(() => undefined);
  }

  private async open(id: string, focus: boolean): Promise<void> {
    if (!this.store.conversations.has(id)) return;
    this.store.select(id);
    if (focus) this.conversation.focus();
    await this.loadMessages(id, false);
  }

  /// After a conversation left the list: focus the next tab, or the list's heading.
  private focusAfterRemoval(): void {
    const next = this.store.mine[0];
    const tab = next ? this.sidebar.tab(next.id) : undefined;
    if (tab) tab.focus();
    else this.sidebar.conversationsHeading.focus();
  }

  private conversationActions(): ConversationActions {
    return {
      send: (id, text, note, notice) => this.send(id, text, note, notice),
      typing: (id, typing) => this.sendTyping(id, typing),
      targets: () => this.targets(),
      transfer: (id, target) => this.transfer(id, target),
      leave: (id, after) => this.leave(id, after),
      complete: (id) => void this.complete(id),
      supervise: (id, mode) => void this.supervise(id, mode),
      download: (file) => void this.download(file),
      toggleDetails: () => {
        this.detailsOpen = !this.detailsOpen;
        this.applyDetails();
      },
    };
  }

  private async send(id: string, text: string, note: boolean, notice: boolean): Promise<boolean> {
    const conversation = this.store.conversations.get(id);
    if (!conversation) return false;
    // A retry of the same text reuses the id of the send that failed: nexus stores it once.
    const pending = conversation.pending;
    const messageId = pending && pending.text === text && pending.notice === notice ? pending.messageId : newMessageId();
    const visibility = note ? "Agent" : "All";
    this.sendTyping(id, false);
    try {
      const message = notice ? await this.api.sendNotice(id, text, visibility, messageId) : await this.api.sendMessage(id, text, visibility, messageId);
      conversation.pending = undefined;
      if (message) {
        if (message.from.participantId) conversation.myParticipantIds.add(message.from.participantId);
        this.store.addMessages(id, [message], false);
      }
      return true;
    } catch (err) {
      conversation.pending = { text, messageId, notice };
      this.report(err);
      return false;
    }
  }

  /// Typing started, at most every few seconds while typing; stopped once idle (or on send).
  private sendTyping(id: string, typing: boolean): void {
    let state = this.typing.get(id);
    if (!state) {
      state = { active: false, sentAt: 0, idle: undefined };
      this.typing.set(id, state);
    }
    window.clearTimeout(state.idle);
    state.idle = undefined;
    const now = Date.now();
    if (typing) {
      if (!state.active || now - state.sentAt > TYPING_REFRESH_MS) {
        state.active = true;
        state.sentAt = now;
        void this.api.typing(id, true).catch(() => undefined);
      }
      state.idle = window.setTimeout(() => this.sendTyping(id, false), TYPING_IDLE_MS);
    } else if (state.active) {
      state.active = false;
      void this.api.typing(id, false).catch(() => undefined);
    }
  }

  private async targets(): Promise<Targets | undefined> {
    try {
      return await this.api.targets();
    } catch (err) {
      this.report(err);
      return undefined;
    }
  }

  private async transfer(id: string, target: TransferTarget): Promise<boolean> {
    return this.attempt(async () => {
      if ("queue" in target) await this.api.placeInQueue(id, target.queue);
      else await this.api.transferToAgent(id, target.agentId);
      this.gone.add(id);
      this.store.remove(id);
      this.sidebar.announce("queue" in target ? t.transferredToQueue(target.queue) : t.transferredToAgent(target.name));
      this.focusAfterRemoval();
    });
  }

  private async leave(id: string, after: AfterAction): Promise<boolean> {
    const conversation = this.store.conversations.get(id);
    if (!conversation) return false;
    const role = conversation.role;
    return this.attempt(async () => {
      const ended = await this.api.leave(id, after);
      this.sidebar.announce(t.left(conversation.customerName));
      this.sendTyping(id, false);
      if (role === "primary") {
        // The primary agent's conversation stays until they complete it (after-work).
        if (ended) conversation.interaction = { ...conversation.interaction, state: "ended" };
        this.store.setRole(id, undefined);
        this.conversation.focus();
      } else {
        // Supervisors, conference and consulted agents: nothing left to complete.
        this.gone.add(id);
        this.store.remove(id);
        this.focusAfterRemoval();
        void this.refreshTenant(false);
      }
    });
  }

  private async complete(id: string): Promise<void> {
    const name = this.store.conversations.get(id)?.customerName ?? t.customer;
    await this.attempt(async () => {
      await this.api.complete(id);
      this.gone.add(id);
      this.store.remove(id);
      this.sidebar.announce(t.completed(name));
      this.focusAfterRemoval();
    });
  }

  private async setUserData(id: string, key: string, value: string): Promise<boolean> {
    return this.attempt(async () => this.store.setUserData(id, await this.api.updateUserData(id, { [key]: value })));
  }

  private async removeUserData(id: string, key: string): Promise<void> {
    await this.attempt(async () => this.store.setUserData(id, await this.api.deleteUserData(id, [key])));
  }

  /// A customer's file: fetched with the token, handed to the browser as a download.
  private async download(file: MediaFile): Promise<void> {
    await this.attempt(async () => {
      const blob = await this.api.download(file.mediaId);
      const url = URL.createObjectURL(blob);
      const link = h("a", { attrs: { href: url, download: file.filename || "file", hidden: true } });
      document.body.append(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
    });
  }
}

/// The position up to which the transcript has no hole (positions are gapless on the server):
/// the next read starts there, so a message missed between two seen ones is read too.
function lastPosition(conversation: Conversation): number {
  let last = 0;
  while (conversation.messages.has(last + 1)) last += 1;
  return last;
}
