//! Media from the client (`POST channels/{channelId}/media`): a file its users send, uploaded
//! first and then named by the messages that carry it (`"media": [{"mediaId": "..."}]`, or the
//! `url` the upload answered, `nexus://media/<id>`). The upload is a `multipart/form-data` body
//! with the `file` and the `timestamp` (Unix seconds, within the replay window), signed like
//! every request of the client: `X-Hub-Signature` over the raw body. Files are kept in
//! PostgreSQL with the tenant and channel they came through; agents of the tenant download them
//! through the Workspace API.

use nexus_guest::api::{ApiError, ApiResult};
use nexus_guest::media;
use nexus_guest::spin::{Db, Reply, uuid};
use serde_json::Value;
use spin_sdk::http::Request;
use spin_sdk::pg4::ParameterValue;

use crate::{Channel, signed_channel, within_window};

/// At most this many files in one message.
const MAX_PER_MESSAGE: usize = 10;

fn malformed() -> ApiError {
    ApiError::bad_parameter(
        "the body is multipart/form-data with a `file` and a `timestamp` (Unix seconds)",
    )
}

/// Stores an uploaded file: its id, the `url` messages name it by, and what it is.
pub(crate) async fn upload(req: &Request, channel_id: &str) -> ApiResult<Reply> {
    let db = Db::open()?;
    let channel = signed_channel(req, &db, channel_id)?;
    let (upload, fields) = media::multipart(req, malformed).await?;
    within_window(
        fields
            .text("timestamp")
            .and_then(|value| value.parse().ok()),
    )?;
    let upload = upload.ok_or_else(malformed)?;
    media::check(&upload)?;
    Reply::ok(media::store(&db, channel.tenant_id, &channel.id, upload)?)
}

/// The id a message names a file by: `{"mediaId": ...}`, `{"url": "nexus://media/..."}`, or
/// either as a bare string.
fn media_id(item: &Value) -> Option<&str> {
    let named = match item {
        Value::String(text) => text.as_str(),
        Value::Object(_) => item["mediaId"].as_str().or_else(|| item["url"].as_str())?,
        _ => return None,
    };
    let id = named.strip_prefix("nexus://media/").unwrap_or(named);
    nexus_guest::spin::is_uuid(id).then_some(id)
}

/// What the files a message names are (uploaded through this channel), in its order; `None`
/// when it names none.
pub(crate) fn attached(db: &Db, channel: &Channel, media: &Value) -> ApiResult<Option<Value>> {
    let items = match media {
        Value::Null => return Ok(None),
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_PER_MESSAGE => items,
        _ => {
            return Err(ApiError::bad_parameter(format!(
                "`media` is a list of 1 to {MAX_PER_MESSAGE} uploaded files ({{\"mediaId\": ...}})"
            )));
        }
    };
    let mut found = Vec::new();
    for item in items {
        let id = media_id(item).ok_or_else(|| {
            ApiError::bad_parameter("each of `media` names an uploaded file by its mediaId")
        })?;
        let file = db
            .json_row(
                "find the file",
                "SELECT nexus_media_json(m) - 'createdAt' FROM media m \
                 WHERE m.id = $1 AND m.tenant_id = $2 AND m.channel_id = $3",
                &[
                    uuid(id),
                    ParameterValue::Int64(channel.tenant_id),
                    uuid(&channel.id),
                ],
            )?
            .ok_or_else(|| {
                ApiError::bad_parameter(format!("no file `{id}` was uploaded through this channel"))
            })?;
        found.push(file);
    }
    Ok(Some(Value::Array(found)))
}
