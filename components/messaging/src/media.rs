//! Media from the client (`POST channels/{channelId}/media`): a file its users send, uploaded
//! first and then named by the messages that carry it (`"media": [{"mediaId": "..."}]`, or the
//! `url` the upload answered, `nexus://media/<id>`). The upload is a `multipart/form-data` body
//! with the `file` and the `timestamp` (Unix seconds, within the replay window), signed like
//! every request of the client: `X-Hub-Signature` over the raw body. Files are kept in
//! PostgreSQL with the tenant and channel they came through; agents of the tenant download them
//! through the Workspace API.

use futures_util::stream;
use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::spin::{Db, Reply, header, text, uuid};
use serde_json::Value;
use sha2::{Digest, Sha256};
use spin_sdk::http::Request;
use spin_sdk::pg4::ParameterValue;

use crate::{Channel, signed_channel, within_window};

/// The largest file taken.
pub(crate) const MAX_FILE_BYTES: usize = 5 * 1024 * 1024;
/// At most this many files in one message.
const MAX_PER_MESSAGE: usize = 10;

/// The types of file taken: what messaging platforms carry as media.
fn is_allowed(mimetype: &str) -> bool {
    ["image/", "audio/", "video/"]
        .iter()
        .any(|prefix| mimetype.starts_with(prefix))
        || matches!(mimetype, "application/pdf" | "text/plain")
}

fn malformed() -> ApiError {
    ApiError::bad_parameter(
        "the body is multipart/form-data with a `file` and a `timestamp` (Unix seconds)",
    )
}

/// The file's name without any path, at most 255 characters.
fn clean_filename(name: Option<&str>) -> String {
    let base = name
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .trim();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    if cleaned.is_empty() {
        "file".to_owned()
    } else {
        cleaned
    }
}

struct Upload {
    filename: String,
    mimetype: String,
    content: Vec<u8>,
}

/// The `file` and `timestamp` of a multipart body.
async fn parts(req: &Request) -> ApiResult<(Option<Upload>, Option<u64>)> {
    let boundary = header(req, "content-type")
        .and_then(|content_type| multer::parse_boundary(content_type).ok())
        .ok_or_else(malformed)?;
    let body = req.body().to_vec();
    let chunks = stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(chunks, boundary);
    let (mut upload, mut timestamp) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(|_| malformed())? {
        match field.name() {
            Some("file") => {
                let filename = clean_filename(field.file_name());
                let mimetype = field
                    .content_type()
                    .map_or("application/octet-stream".to_owned(), |m| {
                        m.essence_str().to_owned()
                    });
                let content = field.bytes().await.map_err(|_| malformed())?.to_vec();
                upload = Some(Upload {
                    filename,
                    mimetype,
                    content,
                });
            }
            Some("timestamp") => {
                let value = field.text().await.map_err(|_| malformed())?;
                timestamp = value.trim().parse().ok();
            }
            _ => {}
        }
    }
    Ok((upload, timestamp))
}

/// Stores an uploaded file: its id, the `url` messages name it by, and what it is.
pub(crate) async fn upload(req: &Request, channel_id: &str) -> ApiResult<Reply> {
    let db = Db::open()?;
    let channel = signed_channel(req, &db, channel_id)?;
    let (upload, timestamp) = parts(req).await?;
    within_window(timestamp)?;
    let upload = upload.ok_or_else(malformed)?;
    if upload.content.len() > MAX_FILE_BYTES {
        return Err(ApiError::new(
            413,
            Code::LimitFileSize,
            format!("a file is at most {MAX_FILE_BYTES} bytes"),
        ));
    }
    if !is_allowed(&upload.mimetype) {
        return Err(ApiError::new(
            400,
            Code::InvalidFileType,
            format!(
                "`{}` is not taken: images, audio, video, PDF and plain text are",
                upload.mimetype
            ),
        ));
    }
    let sha256: String = Sha256::digest(&upload.content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let length = i32::try_from(upload.content.len()).unwrap_or(i32::MAX);
    let media = db
        .json_row(
            "store the file",
            "INSERT INTO media AS m (id, tenant_id, channel_id, filename, mimetype, length, sha256, content) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING nexus_media_json(m)",
            &[
                uuid(nexus_guest::secrets::new_id()),
                ParameterValue::Int64(channel.tenant_id),
                uuid(&channel.id),
                text(&upload.filename),
                text(&upload.mimetype),
                ParameterValue::Int32(length),
                text(&sha256),
                ParameterValue::Binary(upload.content),
            ],
        )?
        .ok_or_else(|| ApiError::internal("store the file", "no row"))?;
    Reply::ok(media)
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
