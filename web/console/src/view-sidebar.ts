// The sidebar (a nav landmark): invitations with Accept and Reject, the agent's conversations as
// a vertical tablist with unread counts, and for supervisors every open chat of the tenant.
//
// Lists are updated in place, keyed by interaction id, never rebuilt: an event arriving while a
// keyboard user is on a tab or a button must not take their focus away.

import { h, idFor, setAttrs, setText } from "./dom";
import type { Conversation, Invitation, Store } from "./store";
import { customerOf } from "./store";
import { t } from "./strings";
import type { Interaction } from "./types";

export interface SidebarActions {
  accept(id: string): void;
  reject(id: string): void;
  /// Opens one of the agent's conversations (a tab), focusing its reply box.
  open(id: string): void;
  /// A supervisor opens a chat of the tenant, to monitor, coach or barge in.
  preview(id: string): void;
  refreshTenant(): void;
}

interface Row<T> {
  root: HTMLElement;
  update(item: T): void;
}

/// Puts the rows of `items` in `container` in order, making the missing ones and dropping the
/// gone; an existing row is only moved when out of place (moving a node loses its focus).
function syncRows<T>(container: Element, items: T[], key: (item: T) => string, rows: Map<string, Row<T>>, make: (item: T) => Row<T>): void {
  const keep = new Set(items.map(key));
  for (const [id, row] of rows) {
    if (!keep.has(id)) {
      row.root.remove();
      rows.delete(id);
    }
  }
  let cursor = container.firstElementChild;
  for (const item of items) {
    const id = key(item);
    let row = rows.get(id);
    if (!row) {
      row = make(item);
      rows.set(id, row);
    }
    row.update(item);
    if (row.root === cursor) cursor = cursor.nextElementSibling;
    else container.insertBefore(row.root, cursor);
  }
}

export function conversationStatus(conversation: Conversation): string {
  const interaction = conversation.interaction;
  if (interaction.state === "ended") return t.stateEnded;
  if (conversation.role) return t.roleNames[conversation.role] ?? conversation.role;
  if (!conversation.mine) return t.previewing;
  if (interaction.routingState === "idle") return t.stateIdle;
  if (interaction.routingState === "queued") return t.stateQueued;
  return t.leftShort;
}

export class SidebarView {
  readonly el: HTMLElement;
  /// The polite status that announces new and withdrawn invitations.
  readonly announcer = h("div", { class: "sr-only", attrs: { role: "status", "aria-live": "polite", id: "announcer" } });
  readonly invitationsHeading = h("h2", { text: t.invitations, attrs: { id: "invitations-heading", tabindex: "-1" } });
  readonly conversationsHeading = h("h2", { text: t.conversations, attrs: { id: "conversations-heading", tabindex: "-1" } });
  private readonly invitationCount = h("span", { class: "count", attrs: { "aria-hidden": "true" } });
  private readonly invitationList = h("ul", { class: "invitations", attrs: { "aria-label": t.invitations } });
  private readonly noInvitations = h("p", { class: "empty", text: t.noInvitations });
  private readonly tablist = h("div", {
    class: "tabs",
    attrs: { role: "tablist", "aria-label": t.conversations, "aria-orientation": "vertical" },
  });
  private readonly noConversations = h("p", { class: "empty", text: t.noConversations });
  private readonly supervision: HTMLElement;
  private readonly tenantList = h("ul", { class: "tenant-list", attrs: { "aria-label": t.supervisionList } });
  private readonly noTenant = h("p", { class: "empty", text: t.noOpenConversations });
  private readonly invitationRows = new Map<string, Row<Invitation>>();
  private readonly tabRows = new Map<string, Row<Conversation>>();
  private readonly tenantRows = new Map<string, Row<Interaction>>();
  private announcement = 0;

  constructor(
    private readonly store: Store,
    private readonly actions: SidebarActions,
  ) {
    this.tablist.addEventListener("keydown", (event) => this.onTabKey(event));
    this.supervision = h(
      "section",
      { class: "side-section supervision", attrs: { "aria-labelledby": "supervision-heading", hidden: true } },
      h(
        "div",
        { class: "section-head" },
        h("h2", { text: t.supervision, attrs: { id: "supervision-heading" } }),
        h("button", {
          class: "quiet small",
          text: t.refresh,
          attrs: { type: "button", "aria-label": t.refreshList },
          on: { click: () => actions.refreshTenant() },
        }),
      ),
      this.noTenant,
      this.tenantList,
    );
    this.el = h(
      "nav",
      { class: "sidebar", attrs: { "aria-label": t.sidebarLabel } },
      h(
        "section",
        { class: "side-section", attrs: { "aria-labelledby": "invitations-heading" } },
        h("div", { class: "section-head" }, this.invitationsHeading, this.invitationCount),
        this.noInvitations,
        this.invitationList,
        this.announcer,
      ),
      h(
        "section",
        { class: "side-section", attrs: { "aria-labelledby": "conversations-heading" } },
        h("div", { class: "section-head" }, this.conversationsHeading),
        this.noConversations,
        this.tablist,
      ),
      this.supervision,
    );
  }

  /// Says something through the polite status (the same text twice is announced twice).
  announce(text: string): void {
    const n = ++this.announcement;
    this.announcer.textContent = "";
    window.setTimeout(() => {
      if (n === this.announcement) this.announcer.textContent = text;
    }, 50);
  }

  // --- Invitations -----------------------------------------------------------------------------

  updateInvitations(): void {
    const items = [...this.store.invitations.values()].sort((a, b) => a.receivedAt - b.receivedAt);
    syncRows(this.invitationList, items, (i) => i.interaction.id, this.invitationRows, (i) => this.invitationRow(i));
    this.noInvitations.hidden = items.length > 0;
    this.invitationList.hidden = items.length === 0;
    setText(this.invitationCount, items.length ? String(items.length) : "");
  }

  /// The countdowns (only invitations that say how long they last have one).
  tick(): void {
    for (const invitation of this.store.invitations.values()) this.invitationRows.get(invitation.interaction.id)?.update(invitation);
  }

  private invitationRow(invitation: Invitation): Row<Invitation> {
    const id = invitation.interaction.id;
    const nameId = idFor("invitation-name", id);
    const metaId = idFor("invitation-meta", id);
    const name = h("h3", { class: "invite-name", attrs: { id: nameId } });
    const meta = h("p", { class: "invite-meta", attrs: { id: metaId } });
    const countdown = h("span", { class: "countdown" });
    const described = `${nameId} ${metaId}`;
    const accept = h("button", {
      class: "primary",
      text: t.accept,
      attrs: { type: "button", "aria-describedby": described },
      on: { click: () => this.actions.accept(id) },
    });
    const reject = h("button", {
      text: t.reject,
      attrs: { type: "button", "aria-describedby": described },
      on: { click: () => this.actions.reject(id) },
    });
    const root = h("li", { class: "invite", attrs: { "aria-labelledby": nameId, "data-id": id } }, name, meta, countdown, h("div", { class: "invite-actions" }, accept, reject));
    return {
      root,
      update: (item) => {
        setText(name, item.customerName);
        const queue = item.interaction.queue;
        setText(meta, queue ? t.queueNamed(queue) : t.noQueue);
        const timeout = item.interaction.inviteTimeoutSeconds;
        if (timeout === undefined) {
          countdown.hidden = true;
        } else {
          const left = Math.max(0, Math.ceil(timeout - (Date.now() - item.receivedAt) / 1000));
          countdown.hidden = false;
          setText(countdown, left > 0 ? t.expiresIn(left) : t.invitationExpired);
          countdown.classList.toggle("urgent", left <= 10);
        }
      },
    };
  }

  /// The first Accept button, if any (where focus goes after a rejection).
  firstAccept(): HTMLButtonElement | null {
    return this.invitationList.querySelector("button.primary");
  }

  // --- The agent's conversations -----------------------------------------------------------------

  updateConversations(): void {
    const items = this.store.mine;
    syncRows(this.tablist, items, (c) => c.id, this.tabRows, (c) => this.tabRow(c));
    this.noConversations.hidden = items.length > 0;
    this.tablist.hidden = items.length === 0;
    // Roving tabindex: one tab in the Tab order, the selected one (or the first).
    const selected = this.store.selectedId;
    const tabs = this.tabs();
    const focusable = tabs.find((tab) => tab.dataset.id === selected) ?? tabs[0];
    for (const tab of tabs) {
      setAttrs(tab, { "aria-selected": String(tab.dataset.id === selected), tabindex: tab === focusable ? "0" : "-1" });
      tab.parentElement?.classList.toggle("selected", tab.dataset.id === selected);
    }
  }

  private tabs(): HTMLButtonElement[] {
    return Array.from(this.tablist.querySelectorAll<HTMLButtonElement>("[role=tab]"));
  }

  /// The tab of a conversation, to focus.
  tab(id: string): HTMLButtonElement | undefined {
    return this.tabs().find((tab) => tab.dataset.id === id);
  }

  // A tab's name is the customer's nickname alone (its visible text, so that the name and what
  // is seen agree); the queue, state and unread count sit beside it, out of the accessibility
  // tree (aria-hidden) but read as the tab's description. The tab's box stretches over them, so
  // a click anywhere on the row opens it.
  private tabRow(conversation: Conversation): Row<Conversation> {
    const id = conversation.id;
    const metaId = idFor("tab-meta", id);
    const unreadId = idFor("tab-unread", id);
    const tab = h("button", {
      class: "tab",
      attrs: {
        type: "button",
        role: "tab",
        id: idFor("tab", id),
        "data-id": id,
        "aria-controls": "conversation-panel",
        "aria-describedby": `${metaId} ${unreadId}`,
      },
      on: { click: () => this.actions.open(id) },
    });
    const meta = h("span", { class: "tab-meta", attrs: { id: metaId, "aria-hidden": "true" } });
    const badge = h("span", { class: "unread", attrs: { "aria-hidden": "true" } });
    const unreadText = h("span", { class: "sr-only", attrs: { id: unreadId, "aria-hidden": "true" } });
    const root = h("div", { class: "tab-item", attrs: { "data-id": id } }, tab, meta, badge, unreadText);
    return {
      root,
      update: (c) => {
        setText(tab, c.customerName);
        const queue = c.interaction.queue;
        setText(meta, [queue, conversationStatus(c)].filter(Boolean).join(" · "));
        setText(badge, c.unread ? String(c.unread) : "");
        badge.hidden = c.unread === 0;
        setText(unreadText, c.unread ? t.unread(c.unread) : "");
        root.classList.toggle("has-unread", c.unread > 0);
        root.classList.toggle("ended", c.interaction.state === "ended" || !c.role);
        root.classList.toggle("selected", c.id === this.store.selectedId);
      },
    };
  }

  private onTabKey(event: KeyboardEvent): void {
    const tabs = this.tabs();
    const at = tabs.findIndex((tab) => tab === document.activeElement);
    if (at < 0) return;
    let next = -1;
    if (event.key === "ArrowDown" || event.key === "ArrowRight") next = (at + 1) % tabs.length;
    else if (event.key === "ArrowUp" || event.key === "ArrowLeft") next = (at - 1 + tabs.length) % tabs.length;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = tabs.length - 1;
    if (next < 0) return;
    event.preventDefault();
    for (const tab of tabs) tab.tabIndex = -1;
    tabs[next].tabIndex = 0;
    tabs[next].focus();
  }

  // --- Supervision -------------------------------------------------------------------------------

  updateTenant(): void {
    this.supervision.hidden = !this.store.isSupervisor;
    if (!this.store.isSupervisor) return;
    const items = this.store.tenant;
    syncRows(this.tenantList, items, (i) => i.id, this.tenantRows, (i) => this.tenantRow(i));
    this.noTenant.hidden = items.length > 0;
    this.tenantList.hidden = items.length === 0;
  }

  private tenantRow(interaction: Interaction): Row<Interaction> {
    const id = interaction.id;
    const metaId = idFor("watch-meta", id);
    const button = h("button", {
      class: "watch",
      attrs: { type: "button", "aria-describedby": metaId },
      on: { click: () => this.actions.preview(id) },
    });
    const meta = h("span", { class: "tab-meta", attrs: { id: metaId, "aria-hidden": "true" } });
    const root = h("li", { class: "tab-item" }, button, meta);
    return {
      root,
      update: (item) => {
        setText(button, customerOf(item) ?? this.store.conversations.get(item.id)?.customerName ?? t.customer);
        const me = this.store.agent?.id;
        const agents = item.participants
          .filter((p) => p.agentId !== me && (p.type === "Agent" || (p.type === "Supervisor" && p.role !== "monitor")))
          .map((p) => p.nickname);
        const who =
          agents.length ? t.withAgents(agents.join(", "))
          : item.routingState === "idle" ? t.stateIdle
          : item.routingState === "invited" ? t.stateInvited
          : t.waiting;
        setText(meta, [who, item.queue].filter(Boolean).join(" · "));
        const current = this.store.selectedId === item.id;
        setAttrs(button, { "aria-current": current ? "true" : undefined });
        root.classList.toggle("selected", current);
      },
    };
  }
}
