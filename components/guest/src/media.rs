//! Files customers send: a messaging client's uploads (`POST channels/{id}/media`) and a web
//! chat customer's (`POST {selfUri}/files`). Both take a `multipart/form-data` body with a `file`,
//! keep it in PostgreSQL's `media` table with the tenant and channel it came through, and serve
//! it back as the bytes uploaded (to the tenant's agents, and to the chat's customer).
//!
//! What a file may be, and what its name becomes, is plain Rust (unit-tested natively); reading
//! the body and the table needs the component's imports.

/// The largest file taken.
pub const MAX_FILE_BYTES: usize = 5 * 1024 * 1024;

/// The types of file taken: what messaging platforms carry as media. Not SVG: it is a document
/// that can hold script, and a file shown from a blob URL runs in the page that made it.
pub fn is_allowed(mimetype: &str) -> bool {
    (["image/", "audio/", "video/"]
        .iter()
        .any(|prefix| mimetype.starts_with(prefix))
        && mimetype != "image/svg+xml")
        || matches!(mimetype, "application/pdf" | "text/plain")
}

/// The file's name without any path, at most 255 characters, no control characters.
pub fn clean_filename(name: Option<&str>) -> String {
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

/// The name as a quoted header parameter (`content-disposition`) takes it: no quotes,
/// backslashes or controls.
pub fn header_safe_filename(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
pub use component::*;

#[cfg(target_arch = "wasm32")]
mod component {
    use std::collections::BTreeMap;

    use futures_util::stream;
    use serde_json::Value;
    use sha2::{Digest, Sha256};
    use spin_sdk::http::{Request, Response};
    use spin_sdk::pg4::ParameterValue;

    use super::{MAX_FILE_BYTES, clean_filename, header_safe_filename, is_allowed};
    use crate::api::{ApiError, ApiResult, Code};
    use crate::body::Fields;
    use crate::spin::{Db, header, text, uuid};

    /// A file as uploaded.
    pub struct Upload {
        pub filename: String,
        pub mimetype: String,
        pub content: Vec<u8>,
    }

    /// The `file` of a multipart body, and its other fields (text). `malformed` is the error
    /// for a body that is not what the caller documents.
    pub async fn multipart(
        req: &Request,
        malformed: fn() -> ApiError,
    ) -> ApiResult<(Option<Upload>, Fields)> {
        let boundary = header(req, "content-type")
            .and_then(|content_type| multer::parse_boundary(content_type).ok())
            .ok_or_else(malformed)?;
        let body = req.body().to_vec();
        let chunks = stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
        let mut parts = multer::Multipart::new(chunks, boundary);
        let (mut upload, mut others) = (None, BTreeMap::new());
        while let Some(field) = parts.next_field().await.map_err(|_| malformed())? {
            match field.name().map(str::to_owned) {
                Some(name) if name == "file" => {
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
                Some(name) => {
                    let value = field.text().await.map_err(|_| malformed())?;
                    others.insert(name, value);
                }
                None => {}
            }
        }
        Ok((upload, Fields::from_text(others)?))
    }

    /// Refuses a file too large or of a type not taken.
    pub fn check(upload: &Upload) -> ApiResult<()> {
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
                    "`{}` is not taken: images (not SVG), audio, video, PDF and plain text are",
                    upload.mimetype
                ),
            ));
        }
        Ok(())
    }

    /// Stores a checked file as uploaded through `channel_id`: what messages say of it
    /// (`nexus_media_json`: its `mediaId`, `url`, name, type, length and SHA-256).
    pub fn store(db: &Db, tenant_id: i64, channel_id: &str, upload: Upload) -> ApiResult<Value> {
        let sha256: String = Sha256::digest(&upload.content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let length = i32::try_from(upload.content.len()).unwrap_or(i32::MAX);
        db.json_row(
            "store the file",
            "INSERT INTO media AS m (id, tenant_id, channel_id, filename, mimetype, length, sha256, content) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING nexus_media_json(m)",
            &[
                uuid(crate::secrets::new_id()),
                ParameterValue::Int64(tenant_id),
                uuid(channel_id),
                text(&upload.filename),
                text(&upload.mimetype),
                ParameterValue::Int32(length),
                text(&sha256),
                ParameterValue::Binary(upload.content),
            ],
        )?
        .ok_or_else(|| ApiError::internal("store the file", "no row"))
    }

    /// The file the query finds (its `filename`, `mimetype`, `sha256` and `content`), as a
    /// download: the bytes as uploaded, never rendered by the browser in the API's origin.
    pub fn download(
        db: &Db,
        query: &str,
        params: &[ParameterValue],
        missing: impl FnOnce() -> ApiError,
    ) -> ApiResult<Response> {
        let rows = db.rows("read the file", query, params)?;
        let row = rows.rows().next().ok_or_else(missing)?;
        let filename = row.get::<String>("filename").unwrap_or_default();
        Ok(Response::builder()
            .status(200)
            .header(
                "content-type",
                row.get::<String>("mimetype")
                    .unwrap_or_else(|| "application/octet-stream".into()),
            )
            .header(
                "content-disposition",
                format!(
                    "attachment; filename=\"{}\"",
                    header_safe_filename(&filename)
                ),
            )
            .header("x-content-type-options", "nosniff")
            .header(
                "x-nexus-sha256",
                row.get::<String>("sha256").unwrap_or_default(),
            )
            .body(row.get::<Vec<u8>>("content").unwrap_or_default())
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_not_svg() {
        for taken in [
            "image/png",
            "image/jpeg",
            "audio/ogg",
            "video/mp4",
            "application/pdf",
            "text/plain",
        ] {
            assert!(is_allowed(taken), "{taken}");
        }
        for refused in [
            "image/svg+xml",
            "text/html",
            "application/javascript",
            "application/octet-stream",
        ] {
            assert!(!is_allowed(refused), "{refused}");
        }
    }

    #[test]
    fn filenames_lose_paths_and_controls() {
        assert_eq!(clean_filename(Some("../../etc/passwd")), "passwd");
        assert_eq!(clean_filename(Some("C:\\Users\\ada\\bill.pdf")), "bill.pdf");
        assert_eq!(clean_filename(Some("a\u{0}b\nc.txt")), "abc.txt");
        assert_eq!(clean_filename(Some("  ")), "file");
        assert_eq!(clean_filename(None), "file");
        assert_eq!(clean_filename(Some(&"x".repeat(300))).len(), 255);
        assert_eq!(header_safe_filename("a\"b\\c\r.txt"), "a_b_c_.txt");
    }
}
