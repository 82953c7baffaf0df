// The banner: who is signed in, their state (two toggle buttons whose pressed state is what
// nexus says, changed by the answer and by AgentStateChanged), the connection, and sign out.

import { h, setAttrs, setText } from "./dom";
import type { Store } from "./store";
import { t } from "./strings";
import type { AgentState } from "./types";

export interface HeaderActions {
  setState(state: "ready" | "not-ready"): void;
  signOut(): void;
}

/// A toggle button whose pressed state also shows as a check mark (not colour alone), kept out
/// of its accessible name.
export function toggleButton(text: string, onClick: () => void): HTMLButtonElement {
  return h(
    "button",
    { class: "toggle", attrs: { type: "button", "aria-pressed": "false" }, on: { click: onClick } },
    h("span", { class: "check", text: "✓", attrs: { "aria-hidden": "true" } }),
    text,
  );
}

export function stateName(state: AgentState): string {
  return state === "ready" ? t.ready : state === "not_ready" ? t.notReady : t.loggedOut;
}

export class HeaderView {
  readonly el: HTMLElement;
  private readonly name = h("span", { class: "me-name" });
  private readonly badge = h("span", { class: "badge role-badge", text: t.supervisorBadge, attrs: { hidden: true } });
  private readonly stateText = h("span", { class: "state-text", attrs: { id: "state-text" } });
  private readonly ready: HTMLButtonElement;
  private readonly notReady: HTMLButtonElement;
  private readonly connection = h("span", { class: "connection", attrs: { "data-status": "connecting" } });

  constructor(actions: HeaderActions) {
    this.ready = toggleButton(t.ready, () => actions.setState("ready"));
    this.notReady = toggleButton(t.notReady, () => actions.setState("not-ready"));
    this.el = h(
      "header",
      { class: "topbar" },
      h("h1", { class: "brand" }, t.brand, " ", h("span", { text: t.brandSuffix })),
      h("div", { class: "me" }, this.name, this.badge),
      h(
        "div",
        { class: "state", attrs: { role: "group", "aria-label": t.stateGroup } },
        this.stateText,
        h("div", { class: "toggle-pair" }, this.ready, this.notReady),
      ),
      h("p", { class: "connection-line" }, h("span", { class: "sr-only", text: `${t.connectionLabel}: ` }), this.connection),
      h("button", { class: "quiet", text: t.signOut, attrs: { type: "button" }, on: { click: () => actions.signOut() } }),
    );
  }

  update(store: Store): void {
    const agent = store.agent;
    if (!agent) return;
    setText(this.name, agent.nickname);
    this.badge.hidden = agent.role !== "supervisor";
    const reason = agent.stateReason ? ` (${agent.stateReason})` : "";
    setText(this.stateText, `${t.stateLabel}: ${stateName(agent.state)}${reason}`);
    this.stateText.dataset.state = agent.state;
    setAttrs(this.ready, { "aria-pressed": String(agent.state === "ready") });
    setAttrs(this.notReady, { "aria-pressed": String(agent.state === "not_ready") });
  }

  updateConnection(store: Store): void {
    const status = store.connection;
    const text = status === "live" ? t.live : status === "polling" ? t.polling : status === "connecting" ? t.connecting : t.reconnecting;
    setText(this.connection, text);
    this.connection.dataset.status = status;
  }
}
