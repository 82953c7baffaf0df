// What the browser tests run beside the browser: a customer's web site on an origin of its own,
// embedding the widget with the documented <script> tag, and a TCP proxy in front of nexus whose
// connections the tests can cut and restore, as a dropped network does to the visitor.
import { type Server, createServer } from "node:http";
import { type Socket, createConnection, createServer as createTcpServer } from "node:net";
import type { AddressInfo } from "node:net";

/// A page of a shop that embeds the widget from `nexusUrl`; its URL.
export async function customerSite(nexusUrl: string, apiKey: string): Promise<{ url: string; close: () => void }> {
  const page = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Example Shop</title></head>
<body>
<header><h1>Example Shop</h1></header>
<main><p>Everything you need, delivered.</p></main>
<script src="${nexusUrl}/widget/nexus-chat.js" data-nexus-url="${nexusUrl}" data-api-key="${apiKey}" data-endpoint="web" data-title="Example Shop"></script>
</body>
</html>`;
  const server: Server = createServer((req, res) => {
    if (req.url === "/" || req.url?.startsWith("/?")) {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
      res.end(page);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/`, close: () => server.close() };
}

/// A TCP proxy to nexus: `cut()` drops every connection and refuses new ones until `restore()`.
export class Proxy {
  private readonly sockets = new Set<Socket>();
  private cutOff = false;
  private readonly server = createTcpServer((client) => {
    if (this.cutOff) {
      client.destroy();
      return;
    }
    const upstream = createConnection({ host: this.target.hostname, port: Number(this.target.port) });
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on("close", () => this.sockets.delete(socket));
      socket.on("error", () => socket.destroy());
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });

  private constructor(private readonly target: URL) {}

  static async start(nexusUrl: string): Promise<Proxy> {
    const proxy = new Proxy(new URL(nexusUrl));
    await new Promise<void>((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  cut(): void {
    this.cutOff = true;
    for (const socket of this.sockets) socket.destroy();
  }

  restore(): void {
    this.cutOff = false;
  }

  close(): void {
    this.cut();
    this.server.close();
  }
}
