/*
 * The nexus agent console: served by nexus at /console/, opened as /console/#token=<agent token>
 * (the demo page links it so), talking to the Workspace API v3 of the same origin.
 *
 * Modules: api.ts (REST calls, errors), socket.ts (the event stream: WebSocket, long-poll
 * fallback, seq dedupe, backoff), types.ts (API objects and their parsers), store.ts (state and
 * change notices), app.ts (the controller), view-*.ts (DOM), strings.ts (every word shown).
 *
 * Stable hooks for browser tests, by role and accessible name (English table). Playwright matches
 * names as substrings unless `exact: true`: use it for "Ready" (a substring of "Not ready").
 *
 * Sign-in (no token, or a refused one)
 *   textbox "Agent token" (a password field), button "Sign in", an alert with the refusal.
 * Header (banner)
 *   heading level 1 "nexus agent console"; the agent's nickname as text;
 *   group "Availability": toggle buttons "Ready" and "Not ready" (aria-pressed = nexus's state,
 *   following AgentStateChanged), text "Your state: Ready|Not ready|Logged out";
 *   text "Live" / "Reconnecting…" / "Live (polling)"; button "Sign out".
 * Sidebar: navigation "Conversations and invitations"
 *   region "Invitations" (heading "Invitations") with list "Invitations": one listitem per offer,
 *   named by the customer's nickname (heading level 3), "Queue: <name>", and buttons "Accept" and
 *   "Reject" (described by the nickname and queue); status (polite) announcing
 *   "New invitation from <nickname> in <queue>." and withdrawn offers.
 *   tablist "Conversations": one tab per conversation, named exactly the customer's nickname,
 *   aria-selected on the open one, described by "<queue> · <Handling|Chat ended|You left…>" and
 *   "<n> unread message(s)" (the count also shows as a badge). Arrow keys move between tabs.
 *   Supervisors only: region "All open conversations", button "Refresh the list of open
 *   conversations", list "Open conversations" of buttons named by the customer's nickname
 *   (aria-current on the one shown).
 * Main (main landmark)
 *   alert region "Alerts": each API error's message (and "Reference: <id>") with button "Dismiss".
 *   The conversation: tabpanel (a region for a supervisor's preview) headed by the customer's
 *   nickname (heading level 2); group "Conversation actions": buttons "Transfer" and "Leave"
 *   (aria-expanded; each opens a form of the same name), "Complete", "Details" (aria-expanded,
 *   controls the details); group "Supervise" with toggle buttons "Monitor", "Coach", "Barge in"
 *   (aria-pressed = the supervisor's present mode).
 *   form "Transfer": combobox "Transfer to" (queues, then agents: "<nickname> (<state>)"), or
 *   textbox "Queue name" when the list is unavailable; buttons "Hand over", "Cancel".
 *   form "Leave": combobox "After leaving" (options "Keep the chat open for the customer"
 *   [KeepAlive, the default], "Close it if no agent remains", "Close the chat"); buttons
 *   "Confirm", "Cancel".
 *   log "Transcript" (polite): listitems in position order; whispers say "Internal note" or
 *   "Supervisors only"; files are buttons "Download <file name>".
 *   status (polite) "<nickname> is typing…".
 *   textbox "Reply" (Enter sends, Shift+Enter new line), checkbox "Internal note (agents only)",
 *   button "Custom notice", button "Send".
 * Details: complementary "Details"
 *   headings "Customer", "Participants", "User data"; textboxes "Key" and "Value", button "Save",
 *   buttons "Remove <key>".
 */

import { Api, ApiError } from "./api";
import { ConsoleApp } from "./app";
import { t } from "./strings";
import { renderSignIn } from "./view-signin";

const TOKEN_KEY = "nexus.console.token";

/// sessionStorage may be unavailable (a privacy mode): the console then works for this page only.
const tokens = {
  read(): string | undefined {
    try {
      return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
    } catch {
      return undefined;
    }
  },
  write(token: string): void {
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // Kept in memory only.
    }
  },
  forget(): void {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Nothing kept.
    }
  },
};

/// The token the demo page (or a bookmark) put in the fragment, which browsers never send to a
/// server; taken out of the address bar at once, so that it is neither shown nor kept in history.
function tokenFromFragment(): string | undefined {
  if (!location.hash) return undefined;
  const token = new URLSearchParams(location.hash.slice(1)).get("token")?.trim();
  if (token) history.replaceState(history.state, "", `${location.pathname}${location.search}`);
  return token || undefined;
}

function problemText(err: unknown): string {
  if (err instanceof ApiError) {
    if (err.httpStatus === 401) return t.tokenRefused;
    if (err.code === "NETWORK") return t.networkError;
    return err.message;
  }
  return t.unexpectedError;
}

function boot(): void {
  const root = document.getElementById("app") ?? document.body;

  const signInPage = (notice?: string): void => {
    renderSignIn(
      root,
      async (token) => {
        try {
          await new Api(token).me();
        } catch (err) {
          return problemText(err);
        }
        tokens.write(token);
        return run(token);
      },
      notice,
    );
  };

  /// Starts the console; a problem to show on the sign-in page, if it could not.
  const run = async (token: string): Promise<string | undefined> => {
    const app = new ConsoleApp(root, token, (notice) => {
      tokens.forget();
      signInPage(notice);
    });
    try {
      await app.start();
      return undefined;
    } catch (err) {
      app.destroy();
      // A 401 has already taken the console back to sign-in.
      if (err instanceof ApiError && err.httpStatus === 401) return undefined;
      return problemText(err);
    }
  };

  // A link with a new token followed while this page is open (the fragment changes without a
  // load): start again from a clean page with it.
  window.addEventListener("hashchange", () => {
    const token = tokenFromFragment();
    if (!token) return;
    tokens.write(token);
    location.reload();
  });

  const fromFragment = tokenFromFragment();
  if (fromFragment) tokens.write(fromFragment);
  const token = fromFragment ?? tokens.read();
  if (!token) {
    signInPage();
    return;
  }
  void run(token).then((problem) => {
    if (problem !== undefined) signInPage(problem);
  });
}

boot();
