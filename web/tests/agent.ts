// The agent's side of the browser tests: the console at /console/, signed in with a token,
// driven by roles and accessible names as a person (or a screen reader) finds them.
import { type Browser, type Locator, type Page, expect } from "@playwright/test";

export class Agent {
  private constructor(readonly page: Page) {}

  /// A console in a browser context of its own, signed in (the demo page links it so).
  static async signIn(browser: Browser, nexusUrl: string, token: string): Promise<Agent> {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${nexusUrl}/console/#token=${encodeURIComponent(token)}`);
    await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible();
    return new Agent(page);
  }

  private get availability(): Locator {
    return this.page.getByRole("group", { name: "Availability" });
  }

  async ready(): Promise<void> {
    const ready = this.availability.getByRole("button", { name: "Ready", exact: true });
    await ready.click();
    await expect(ready).toHaveAttribute("aria-pressed", "true");
  }

  invitation(nickname: string): Locator {
    return this.page.getByRole("list", { name: "Invitations" }).getByRole("listitem").filter({ hasText: nickname });
  }

  tab(nickname: string): Locator {
    return this.page.getByRole("tablist", { name: "Conversations" }).getByRole("tab", { name: nickname, exact: true });
  }

  get transcript(): Locator {
    return this.page.getByRole("log", { name: "Transcript" });
  }

  get reply(): Locator {
    return this.page.getByRole("textbox", { name: "Reply" });
  }

  /// Takes the invitation from `nickname`: their conversation opens.
  async accept(nickname: string): Promise<void> {
    await this.invitation(nickname).getByRole("button", { name: "Accept" }).click();
    await expect(this.tab(nickname)).toBeVisible();
    await this.tab(nickname).click();
    await expect(this.tab(nickname)).toHaveAttribute("aria-selected", "true");
  }

  async send(text: string): Promise<void> {
    await this.reply.fill(text);
    await this.reply.press("Enter");
    await this.sees(text);
  }

  /// Waits until the open transcript shows `text`, exactly once.
  async sees(text: string): Promise<void> {
    await expect(this.transcript.getByText(text, { exact: true })).toHaveCount(1);
  }

  /// Hands the open conversation over to `target`, as the "Transfer to" list names it.
  async transfer(target: string): Promise<void> {
    await this.page.getByRole("button", { name: "Transfer" }).click();
    const to = this.page.getByRole("combobox", { name: "Transfer to" });
    await expect(to.getByRole("option", { name: target })).toHaveCount(1);
    await to.selectOption({ label: target });
    await this.page.getByRole("button", { name: "Hand over" }).click();
  }

  /// Completes the open conversation (its after-work done): it leaves the list.
  async complete(nickname: string): Promise<void> {
    await this.page.getByRole("button", { name: "Complete" }).click();
    await expect(this.tab(nickname)).toHaveCount(0);
  }

  async close(): Promise<void> {
    await this.page.context().close();
  }
}
