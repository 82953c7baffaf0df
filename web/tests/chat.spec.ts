// A visitor on a customer's site and agents in the console, each in a browser context of their
// own, against `nexus up --demo` (global-setup.ts): the demo tenant's FAQ bot answers first and
// hands over to the queue `support`, where Ann (an agent) and Sam (a supervisor) take chats.
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import AxeBuilder from "@axe-core/playwright";
import { type Browser, type Locator, type Page, expect, test } from "@playwright/test";
import { Agent } from "./agent";
import { Proxy, customerSite } from "./net";
import { Visitor } from "./visitor";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`global-setup did not set ${name}`);
  return value;
}

const screenshots = fileURLToPath(new URL("../test-results/screenshots/", import.meta.url));

/// A screenshot for the README; `hide` covers what it must not show (live tokens).
async function screenshot(page: Page, name: string, hide: Locator[] = []): Promise<void> {
  mkdirSync(screenshots, { recursive: true });
  await page.screenshot({ path: `${screenshots}${name}.png`, mask: hide });
}

/// No serious or critical accessibility violation on the page as it is now (axe-core; the
/// widget's open shadow root included).
async function accessible(page: Page): Promise<void> {
  const { violations } = await new AxeBuilder({ page }).analyze();
  const serious = violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  expect(serious, serious.join("\n")).toEqual([]);
}

/// Puts an agent out of routing through the Workspace API, so each test knows who is offered
/// its chat.
async function notReady(token: string): Promise<void> {
  const answer = await fetch(`${env("NEXUS_URL")}/nexus/v3/workspace/media/chat/not-ready`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
  });
  expect(answer.status, await answer.text()).toBeLessThan(300);
}

test.beforeEach(async () => {
  await notReady(env("AGENT_TOKEN"));
  await notReady(env("SUPERVISOR_TOKEN"));
});

/// Ann, ready in a console, and a visitor (a context of their own) who has started a chat on
/// the site at `siteUrl`.
async function annAndVisitor(browser: Browser, siteUrl: string, name: string, email: string) {
  const ann = await Agent.signIn(browser, env("NEXUS_URL"), env("AGENT_TOKEN"));
  await ann.ready();
  const visitorContext = await browser.newContext();
  const visitor = new Visitor(await visitorContext.newPage());
  await visitor.page.goto(siteUrl);
  await visitor.open();
  await visitor.start(name, email);
  return { ann, visitor, visitorContext };
}

test("a visitor chats with the bot, then Ann, then Sam, and ends the chat", async ({ browser }) => {
  const site = await customerSite(env("NEXUS_URL"), env("API_KEY"));
  const { ann, visitor, visitorContext } = await annAndVisitor(browser, site.url, "Vera Visitor", "vera@example.com");

  // The bot's menu, one of its options, then a person asked for.
  await visitor.pick("Opening hours");
  await visitor.sees("We are open Monday to Friday, 8:00 to 18:00.");
  await visitor.send("Can I talk to a person please?");
  await visitor.sees("Of course: I am passing you to a colleague.");

  await expect(ann.invitation("Vera Visitor")).toBeVisible();
  await ann.accept("Vera Visitor");
  await visitor.seesNotice("Ann joined the chat");
  // What happened before Ann came is in her transcript.
  await ann.sees("Can I talk to a person please?");

  // Typing, both ways.
  await visitor.message.pressSequentially("My order");
  await expect(ann.page.getByText("Vera Visitor is typing…")).toBeVisible();
  await visitor.message.fill("");
  await ann.reply.pressSequentially("Let me");
  await expect(visitor.typing).toHaveText("Ann is typing…");
  await ann.reply.fill("");

  // Messages both ways.
  await ann.send("Hello Vera, I am Ann. How can I help?");
  await visitor.sees("Hello Vera, I am Ann. How can I help?");
  await visitor.send("My order 1042 has not arrived.");
  await ann.sees("My order 1042 has not arrived.");

  // A file from the visitor reaches the agent.
  await visitor.page.getByLabel("Attach a file").setInputFiles({
    name: "receipt.txt",
    mimeType: "text/plain",
    buffer: Buffer.from("Order 1042, paid on 1 December.\n"),
  });
  await expect(visitor.log.getByRole("button", { name: /^Download receipt\.txt/ })).toHaveCount(1);
  await expect(ann.transcript.getByRole("button", { name: "Download receipt.txt" })).toHaveCount(1);

  await accessible(visitor.page);
  await accessible(ann.page);
  await screenshot(ann.page, "console");

  // Ann hands the chat to Sam, who is ready.
  const sam = await Agent.signIn(browser, env("NEXUS_URL"), env("SUPERVISOR_TOKEN"));
  await sam.ready();
  await ann.transfer("Sam (ready)");
  await expect(sam.invitation("Vera Visitor")).toBeVisible();
  await sam.accept("Vera Visitor");
  await visitor.seesNotice("Sam joined the chat");
  await expect(ann.tab("Vera Visitor")).toHaveCount(0);
  await sam.sees("My order 1042 has not arrived.");
  await sam.send("Sam here: it leaves the warehouse today.");
  await visitor.sees("Sam here: it leaves the warehouse today.");

  // The visitor ends the chat; Sam completes it.
  await visitor.end();
  await expect(visitor.page.getByRole("button", { name: "Start a new chat" })).toBeVisible();
  await sam.complete("Vera Visitor");

  await sam.close();
  await ann.close();
  await visitorContext.close();
  site.close();
});

test("the conversation resumes after a reload, in a second tab, and after the network drops", async ({ browser }) => {
  // The visitor reaches nexus through a proxy that can cut the line.
  const proxy = await Proxy.start(env("NEXUS_URL"));
  const site = await customerSite(proxy.url, env("API_KEY"));
  const { ann, visitor, visitorContext } = await annAndVisitor(browser, site.url, "Tom Tabs", "tom@example.com");
  await visitor.pick("Talk to a person");
  await ann.accept("Tom Tabs");
  await visitor.seesNotice("Ann joined the chat");
  await visitor.send("first message");
  await ann.sees("first message");
  await ann.send("first answer");
  await visitor.sees("first answer");

  // A reload: the same conversation, nothing twice.
  await visitor.page.reload();
  await visitor.ensureOpen();
  await visitor.sees("first message");
  await visitor.sees("first answer");

  // A second tab of the same site: the same conversation, and both tabs follow it.
  const second = new Visitor(await visitorContext.newPage());
  await second.page.goto(site.url);
  await second.ensureOpen();
  await second.sees("first message");
  await second.sees("first answer");
  await ann.send("to both tabs");
  await visitor.sees("to both tabs");
  await second.sees("to both tabs");
  await second.send("from the second tab");
  await ann.sees("from the second tab");
  await visitor.sees("from the second tab");
  await second.page.close();

  // Minimised, the launcher counts what came in.
  await visitor.page.getByRole("button", { name: "Minimise chat" }).click();
  await ann.send("while minimised");
  await expect(visitor.page.getByRole("button", { name: "Open chat (1 unread)" })).toBeVisible();
  await visitor.open();
  await visitor.sees("while minimised");

  // The network drops: the visitor writes, Ann writes; when it is back, both arrive once.
  proxy.cut();
  await visitorContext.setOffline(true);
  await expect(visitor.chatStatus).toContainText(/offline|Reconnecting/i);
  await visitor.send("written offline");
  await expect(visitor.log.getByText(/Not sent yet/)).toBeVisible();
  await ann.send("written while you were away");
  proxy.restore();
  await visitorContext.setOffline(false);
  await ann.sees("written offline");
  await visitor.sees("written while you were away");
  await expect(visitor.log.getByText(/Not sent yet/)).toHaveCount(0);
  for (const text of ["first message", "first answer", "to both tabs", "from the second tab", "while minimised", "written offline"]) {
    await visitor.sees(text);
    await ann.sees(text);
  }

  await visitor.end();
  await ann.complete("Tom Tabs");
  await ann.close();
  await visitorContext.close();
  site.close();
  proxy.close();
});

test("the demo page: the widget with the bot's menu, accessible", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(env("DEMO_URL"));
  await expect(page.getByRole("link", { name: "Open the agent console" })).toBeVisible();
  const visitor = new Visitor(page);
  await visitor.open();
  await visitor.start("Dana Demo", "dana@example.com");
  await expect(page.getByRole("group", { name: "Suggested replies" }).getByRole("button", { name: "Delivery" })).toBeVisible();
  await accessible(page);
  await screenshot(page, "widget", [page.locator(".token code")]);
  await visitor.end();
  await context.close();
});
