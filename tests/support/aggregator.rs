//! A local stand-in for an SMS aggregator's REST API in the Twilio API's shape, for campaigns:
//! `POST /2010-04-01/Accounts/{sid}/Messages.json` answers 201 `{"sid": "SM..."}` with a new sid
//! per message, and honours the `Idempotency-Key` header as an aggregator that honours one
//! does: a request with a key it has seen answers the first one's sid and sends nothing more. It
//! can be told to refuse the next requests with 429 and a `Retry-After`, or to refuse one number
//! with a 400 as Twilio refuses an invalid `To`, or to post each message's status callback
//! before it answers the send. What it delivered is what a campaign test counts: each key once,
//! with when it arrived.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};

/// The `X-Twilio-Signature` of a form post to `url` with `params`, keyed with the account's auth
/// token, computed as Twilio documents it (the URL, then each parameter's name and value in name
/// order, HMAC-SHA1, base64).
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("an HMAC key");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Posts `params` to `url` as a form, as the aggregator does, with `X-Twilio-Signature`:
/// `signature`, or the right one for `auth_token`. The status and the body of the answer.
pub async fn post_signed(
    auth_token: &str,
    url: &str,
    params: &[(&str, &str)],
    signature: Option<&str>,
) -> Result<(u16, String), reqwest::Error> {
    let signature =
        signature.map_or_else(|| twilio_signature(auth_token, url, params), str::to_owned);
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let response = super::client()
        .post(url)
        .header("x-twilio-signature", signature)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// Posts message `sid`'s status callback to `url`, signed as Twilio signs it; its answer.
async fn report_status(
    auth_token: &str,
    url: &str,
    sid: &str,
    status: &str,
) -> (String, u16, String) {
    let mut params = vec![
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("AccountSid", "AC1"),
    ];
    if status == "undelivered" {
        params.push(("ErrorCode", "30003"));
    }
    match post_signed(auth_token, url, &params, None).await {
        Ok((code, body)) => (sid.to_owned(), code, body),
        Err(err) => (sid.to_owned(), 0, err.to_string()),
    }
}

/// A message the aggregator took (the first request with its idempotency key).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub to: String,
    pub body: String,
    pub key: String,
    pub sid: String,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    deliveries: Vec<Delivery>,
    by_key: HashMap<String, String>,
    requests: usize,
    /// Requests answered with a repeat of an earlier key.
    repeats: usize,
    throttled: usize,
    /// The next this many requests are answered 429.
    throttle_next: usize,
    /// The next this many requests are answered 503 (a provider's passing failure).
    fail_next: usize,
    retry_after_seconds: u64,
    /// Numbers refused with a 400.
    invalid: Vec<String>,
    /// Report each message's status before answering its send (see [`Aggregator::report_first`]).
    report_first: Option<ReportFirst>,
    /// The answers to those reports: (sid, HTTP status, body).
    reports: Vec<(String, u16, String)>,
}

/// How the aggregator reports a message before it answers the send.
#[derive(Clone)]
struct ReportFirst {
    auth_token: String,
    /// Numbers whose message is reported `undelivered` (error 30003); the others `delivered`.
    undelivered: Vec<String>,
}

pub struct Aggregator {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: tokio::sync::watch::Sender<usize>,
    task: tokio::task::JoinHandle<()>,
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

impl Aggregator {
    pub async fn start() -> Aggregator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the aggregator");
        let addr = listener.local_addr().expect("the aggregator's address");
        let state: Arc<Mutex<State>> = Arc::default();
        let (changed, _) = tokio::sync::watch::channel(0usize);
        let serving = Arc::clone(&state);
        let announcing = changed.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&serving);
                let changed = announcing.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let state = Arc::clone(&state);
                            let changed = changed.clone();
                            async move {
                                let key = req
                                    .headers()
                                    .get("idempotency-key")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_owned();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let fields = form(&body);
                                let mut report = None;
                                let (status, answer, retry_after) = {
                                    let mut state = state.lock().expect("the aggregator");
                                    state.requests += 1;
                                    let to = fields.get("To").cloned().unwrap_or_default();
                                    if let Some(sid) = state.by_key.get(&key).cloned() {
                                        state.repeats += 1;
                                        (
                                            201,
                                            format!(r#"{{"sid":"{sid}","status":"queued"}}"#),
                                            None,
                                        )
                                    } else if state.throttle_next > 0 {
                                        state.throttle_next -= 1;
                                        state.throttled += 1;
                                        (
                                            429,
                                            r#"{"code":20429,"message":"Too Many Requests"}"#
                                                .to_owned(),
                                            Some(state.retry_after_seconds),
                                        )
                                    } else if state.fail_next > 0 {
                                        state.fail_next -= 1;
                                        (
                                            503,
                                            r#"{"code":20503,"message":"Service Unavailable"}"#
                                                .to_owned(),
                                            None,
                                        )
                                    } else if state.invalid.contains(&to) {
                                        (
                                            400,
                                            format!(
                                                r#"{{"code":21211,"message":"The 'To' number {to} is not a valid phone number."}}"#
                                            ),
                                            None,
                                        )
                                    } else {
                                        let sid = format!("SM{:032x}", state.deliveries.len() + 1);
                                        if let (Some(first), Some(callback)) =
                                            (&state.report_first, fields.get("StatusCallback"))
                                        {
                                            let status = if first.undelivered.contains(&to) {
                                                "undelivered"
                                            } else {
                                                "delivered"
                                            };
                                            report = Some((
                                                first.auth_token.clone(),
                                                callback.clone(),
                                                sid.clone(),
                                                status,
                                            ));
                                        }
                                        state.by_key.insert(key.clone(), sid.clone());
                                        state.deliveries.push(Delivery {
                                            to,
                                            body: fields.get("Body").cloned().unwrap_or_default(),
                                            key,
                                            sid: sid.clone(),
                                            at: Instant::now(),
                                        });
                                        (
                                            201,
                                            format!(r#"{{"sid":"{sid}","status":"queued"}}"#),
                                            None,
                                        )
                                    }
                                };
                                if let Some((auth_token, url, sid, status)) = report {
                                    let reported =
                                        report_status(&auth_token, &url, &sid, status).await;
                                    state.lock().expect("the aggregator").reports.push(reported);
                                }
                                changed.send_modify(|n| *n += 1);
                                let mut response =
                                    http::Response::new(Full::new(Bytes::from(answer)));
                                *response.status_mut() =
                                    http::StatusCode::from_u16(status).expect("a status");
                                response.headers_mut().insert(
                                    "content-type",
                                    http::HeaderValue::from_static("application/json"),
                                );
                                if let Some(seconds) = retry_after {
                                    response
                                        .headers_mut()
                                        .insert("retry-after", http::HeaderValue::from(seconds));
                                }
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Aggregator {
            addr,
            state,
            changed,
            task,
        }
    }

    /// The API base URL a channel's `apiBaseUrl` names.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `count` requests are refused with 429 and `Retry-After: seconds`.
    pub fn throttle_next(&self, count: usize, seconds: u64) {
        let mut state = self.state.lock().expect("the aggregator");
        state.throttle_next += count;
        state.retry_after_seconds = seconds;
    }

    /// The next `count` requests are answered 503 (after any 429s told first).
    pub fn fail_next(&self, count: usize) {
        self.state.lock().expect("the aggregator").fail_next += count;
    }

    /// Messages to `number` are refused with a 400 from now on.
    pub fn refuse_number(&self, number: &str) {
        self.state
            .lock()
            .expect("the aggregator")
            .invalid
            .push(number.to_owned());
    }

    /// From now on, each message's status callback (`delivered`, or `undelivered` with error
    /// 30003 for the `undelivered` numbers) is posted, signed with `auth_token`, and answered
    /// before the send is: the race a real aggregator's callback may win.
    pub fn report_first(&self, auth_token: &str, undelivered: &[&str]) {
        self.state.lock().expect("the aggregator").report_first = Some(ReportFirst {
            auth_token: auth_token.to_owned(),
            undelivered: undelivered.iter().map(|n| (*n).to_owned()).collect(),
        });
    }

    /// The answers to the reports posted before their sends: (sid, HTTP status, body).
    pub fn reports(&self) -> Vec<(String, u16, String)> {
        self.state.lock().expect("the aggregator").reports.clone()
    }

    /// How many messages it delivered (without copying them: a wait looks on every request).
    pub fn delivered_count(&self) -> usize {
        self.state.lock().expect("the aggregator").deliveries.len()
    }

    /// What it delivered, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state
            .lock()
            .expect("the aggregator")
            .deliveries
            .clone()
    }

    /// Requests in all, those that repeated a key, and those refused with 429.
    pub fn counts(&self) -> (usize, usize, usize) {
        let state = self.state.lock().expect("the aggregator");
        (state.requests, state.repeats, state.throttled)
    }

    /// Waits (up to `limit`) until what it has seen satisfies `done`, on each request it
    /// answers; `what` names the wait in the failure.
    pub async fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Aggregator) -> bool,
    ) {
        let mut changed = self.changed.subscribe();
        let waited = tokio::time::timeout(limit, async {
            loop {
                changed.borrow_and_update();
                if done(self) {
                    return;
                }
                if changed.changed().await.is_err() {
                    panic!("the aggregator stopped");
                }
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "the aggregator never saw {what}: {} deliveries, counts {:?}",
                self.delivered_count(),
                self.counts()
            );
        }
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
