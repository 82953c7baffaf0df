// The customer's side of the browser tests: the widget on a page, driven by what a person
// sees (roles and accessible names, through the widget's open shadow root).
import { type Locator, type Page, expect } from "@playwright/test";

export class Visitor {
  constructor(readonly page: Page) {}

  get log(): Locator {
    return this.page.getByRole("log", { name: "Conversation" });
  }

  get message(): Locator {
    return this.page.getByRole("textbox", { name: "Message" });
  }

  get typing(): Locator {
    return this.page.getByRole("status", { name: "Typing" });
  }

  get chatStatus(): Locator {
    return this.page.getByRole("status", { name: "Chat status" });
  }

  async open(): Promise<void> {
    await this.page.getByRole("button", { name: /^Open chat/ }).click();
    await expect(this.page.getByRole("dialog")).toBeVisible();
  }

  /// Opens the panel unless it is open already (a reloaded page may keep it open).
  async ensureOpen(): Promise<void> {
    const launcher = this.page.getByRole("button", { name: /^Open chat/ });
    await expect(launcher.or(this.page.getByRole("dialog"))).toBeVisible();
    if (await launcher.isVisible()) await this.open();
    await expect(this.log).toBeVisible();
  }

  /// Picks one of a bot's suggested replies.
  async pick(option: string): Promise<void> {
    await this.page.getByRole("group", { name: "Suggested replies" }).getByRole("button", { name: option }).click();
  }

  async start(name: string, email: string): Promise<void> {
    await this.page.getByRole("textbox", { name: "Name" }).fill(name);
    await this.page.getByRole("textbox", { name: "Email" }).fill(email);
    await this.page.getByRole("button", { name: "Start chat" }).click();
    await expect(this.message).toBeVisible();
  }

  async send(text: string): Promise<void> {
    await this.message.fill(text);
    await this.message.press("Enter");
  }

  /// Waits until the conversation shows `text`, exactly once.
  async sees(text: string): Promise<void> {
    await expect(this.log.getByText(text, { exact: true })).toHaveCount(1);
  }

  /// Waits until the conversation shows the system line `text` ("Ann joined the chat", with
  /// its time after it), exactly once.
  async seesNotice(text: string): Promise<void> {
    const escaped = text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    await expect(this.log.getByText(new RegExp(`^${escaped}\\b`))).toHaveCount(1);
  }

  async end(): Promise<void> {
    await this.page.getByRole("button", { name: "End chat" }).click();
    await this.page.getByRole("button", { name: "Yes, end the chat" }).click();
    await expect(this.page.getByText("This chat has ended.")).toBeVisible();
  }
}
