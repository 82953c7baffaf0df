//! A web-chat customer, as the widget is: starts a session with the channel's API key, writes,
//! and reads its transcript (the Chat API v3).

use std::time::Duration;

use serde_json::{Value, json};

use super::{Nexus, client};

pub struct ChatCustomer {
    pub id: String,
    pub uri: String,
    pub token: String,
}

impl ChatCustomer {
    /// Starts a chat as `nickname` with the chat API key `key`.
    pub async fn start(nexus: &Nexus, key: &str, nickname: &str) -> ChatCustomer {
        let response = client()
            .post(nexus.url("/nexus/v3/chat/sessions"))
            .header("x-api-key", key)
            .json(&json!({"nickname": nickname}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        ChatCustomer {
            id: body["data"]["sessionId"].as_str().unwrap().to_owned(),
            uri: body["data"]["selfUri"].as_str().unwrap().to_owned(),
            token: body["data"]["clientToken"].as_str().unwrap().to_owned(),
        }
    }

    /// Writes `text`, which must be accepted (200).
    pub async fn say(&self, text: &str) {
        let (status, answer) = self.try_say(text).await;
        assert_eq!(status, 200, "{text:?} was not accepted: {answer}");
    }

    /// Writes `text`: the status and the answer.
    pub async fn try_say(&self, text: &str) -> (u16, Value) {
        let response = client()
            .post(format!("{}/messages", self.uri))
            .header("x-nexus-client-key", &self.token)
            .json(&json!({"type": "Text", "text": text}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// The session as the customer reads it (transcript, state, routing).
    pub async fn session(&self) -> Value {
        let response = client()
            .get(format!("{}/messages?after=0", self.uri))
            .header("x-nexus-client-key", &self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["data"].clone()
    }

    /// Waits (up to 20 s) until the session matches; the session then.
    pub async fn waits_for(&self, what: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let session = self.session().await;
            if what(&session) {
                return session;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("it never happened: {}", self.session().await);
    }

    /// Waits until the transcript has a message that matches; the transcript then.
    pub async fn sees(&self, what: impl Fn(&Value) -> bool) -> Vec<Value> {
        let session = self
            .waits_for(|session| {
                session["messages"]
                    .as_array()
                    .is_some_and(|messages| messages.iter().any(&what))
            })
            .await;
        session["messages"].as_array().unwrap().clone()
    }

    /// Waits until the transcript has a message whose text is `text`.
    pub async fn sees_text(&self, text: &str) -> Vec<Value> {
        self.sees(|message| message["text"] == text).await
    }
}
