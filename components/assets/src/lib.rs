//! Serves the web side of nexus, embedded at build time from `web/dist` (scripts/build-web.sh):
//!
//! - `/widget/nexus-chat.js`: the web chat widget, for any site to embed with a `<script>` tag;
//! - `/console/`: the agent console;
//! - `/demo/`: a page that embeds the widget (with the demo tenant of `nexus up --demo`);
//! - `/`: a redirect to `/demo/`.
//!
//! Each file is served with its entity tag (`If-None-Match` answers 304) and gzipped to a client
//! that takes it. A plain static-file component, so that Spin serves these exactly as nexus does.
// The export macro of spin-sdk generates the unsafe ABI glue of the component.
#![allow(unsafe_code)]

use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

/// One embedded file of `web/dist`.
struct Asset {
    /// Its path under `web/dist`, which is its URL path without the leading `/`.
    path: &'static str,
    content_type: &'static str,
    etag: &'static str,
    body: &'static [u8],
    gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// What the pages of the console and the demo may load and connect to: this origin only (the
/// console and the widget talk to the nexus that serves them). Inline styles are allowed for
/// the widget's own style sheet.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

#[http_component]
fn assets(req: Request) -> Response {
    serve(&req)
}

fn serve(req: &Request) -> Response {
    let head = match req.method() {
        Method::Get => false,
        Method::Head => true,
        _ => {
            return Response::builder()
                .status(405)
                .header("allow", "GET, HEAD")
                .header("content-type", "text/plain; charset=utf-8")
                .body("only GET and HEAD\n")
                .build();
        }
    };
    let path = req.path();
    let wanted = match path {
        "" | "/" => return redirect("/demo/"),
        "/console" | "/demo" | "/widget" => return redirect(&format!("{path}/")),
        _ if path.ends_with('/') => format!("{}index.html", &path[1..]),
        _ => path.trim_start_matches('/').to_owned(),
    };
    let Some(asset) = ASSETS.iter().find(|asset| asset.path == wanted) else {
        return Response::builder()
            .status(404)
            .header("content-type", "text/plain; charset=utf-8")
            .header("cache-control", "no-store")
            .body(format!("no such file: {path}\n"))
            .build();
    };
    let mut response = Response::builder();
    response
        .header("etag", asset.etag)
        .header("vary", "accept-encoding")
        .header("x-content-type-options", "nosniff")
        .header("cache-control", cache_control(asset.path));
    if asset.path.ends_with(".html") {
        response
            .header("content-security-policy", PAGE_POLICY)
            .header("referrer-policy", "no-referrer");
    } else {
        // The widget (and anything else but a page) may be loaded by the pages of any site.
        response
            .header("access-control-allow-origin", "*")
            .header("cross-origin-resource-policy", "cross-origin");
    }
    if not_modified(req, asset.etag) {
        return response.status(304).body(Vec::new()).build();
    }
    response.header("content-type", asset.content_type);
    let body = if accepts_gzip(req) {
        response.header("content-encoding", "gzip");
        asset.gzip
    } else {
        asset.body
    };
    response.header("content-length", body.len().to_string());
    let body = if head { Vec::new() } else { body.to_vec() };
    response.status(200).body(body).build()
}

/// Pages are checked on every load (`no-cache` revalidates by entity tag); the widget, which
/// sites embed by a URL without a version, is kept five minutes, so a new release reaches every
/// site that soon.
fn cache_control(path: &str) -> &'static str {
    if path.ends_with(".html") {
        "no-cache"
    } else {
        "public, max-age=300"
    }
}

fn redirect(to: &str) -> Response {
    Response::builder()
        .status(308)
        .header("location", to)
        .header("content-type", "text/plain; charset=utf-8")
        .body(format!("see {to}\n"))
        .build()
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.header(name).and_then(|value| value.as_str())
}

/// Whether `If-None-Match` names `etag` (or `*`), weak or strong.
fn not_modified(req: &Request, etag: &str) -> bool {
    header(req, "if-none-match").is_some_and(|tags| {
        tags.split(',')
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == etag || tag == "*")
    })
}

/// Whether `Accept-Encoding` takes gzip (`gzip;q=0` refuses it).
fn accepts_gzip(req: &Request) -> bool {
    header(req, "accept-encoding").is_some_and(|codings| {
        codings.split(',').any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}
