//! Request bodies as the chat widgets send them, `application/x-www-form-urlencoded` with fields
//! named `data[firstName]`, `data[userData][key]`, ..., or the same fields as JSON (`{"data":
//! {...}}` or the object itself). Both become one [`Fields`].

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::api::{ApiError, ApiResult, Code};

/// The fields of a request body, by name (`data[nickname]` is `nickname`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    values: BTreeMap<String, Value>,
}

/// How a body is encoded, from its `content-type` (form encoding when there is none, as the
/// widgets' jQuery default).
fn is_json(content_type: Option<&str>) -> ApiResult<bool> {
    let media_type = content_type
        .unwrap_or("application/x-www-form-urlencoded")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        "application/x-www-form-urlencoded" | "" => Ok(false),
        "application/json" => Ok(true),
        other => Err(ApiError::new(
            415,
            Code::InvalidParameter,
            format!(
                "content-type {other} is not accepted: send application/x-www-form-urlencoded or application/json"
            ),
        )),
    }
}

impl Fields {
    /// Parses `body`, refusing one larger than `max_bytes` (413 `LIMIT_BODY_SIZE`), in an encoding
    /// other than form or JSON (415), or malformed (400 `INVALID_PARAMETER`).
    pub fn parse(content_type: Option<&str>, body: &[u8], max_bytes: usize) -> ApiResult<Fields> {
        if body.len() > max_bytes {
            return Err(ApiError::new(
                413,
                Code::LimitBodySize,
                format!("the body is {} bytes; the limit is {max_bytes}", body.len()),
            ));
        }
        // No body is no fields, whatever its content type says (a client library that sends
        // `Content-Type: multipart/form-data` with nothing after it, on an operation that
        // takes no body).
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::default());
        }
        let fields = if is_json(content_type)? {
            Self::from_json(body)?
        } else {
            Self::from_form(body)?
        };
        for (name, value) in &fields.values {
            refuse_nul(name, value)?;
        }
        Ok(fields)
    }

    fn from_json(body: &[u8]) -> ApiResult<Fields> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields::default());
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|err| ApiError::bad_parameter(format!("the body is not valid JSON: {err}")))?;
        let Value::Object(mut object) = value else {
            return Err(ApiError::bad_parameter("the body must be a JSON object"));
        };
        // `{"data": {...}}` as the form's `data[...]`, or the fields at the top level.
        let fields = match object.remove("data") {
            Some(Value::Object(data)) if object.is_empty() => data,
            Some(_) if object.is_empty() => {
                return Err(ApiError::bad_parameter("`data` must be a JSON object"));
            }
            Some(data) => {
                object.insert("data".into(), data);
                object
            }
            None => object,
        };
        Ok(Fields {
            values: fields.into_iter().collect(),
        })
    }

    fn from_form(body: &[u8]) -> ApiResult<Fields> {
        if std::str::from_utf8(body).is_err() {
            return Err(ApiError::bad_parameter("the form is not UTF-8"));
        }
        let mut fields = Fields::default();
        for (key, value) in form_urlencoded::parse(body) {
            let path = parse_key(&key)?;
            fields.insert(&path, value.into_owned())?;
        }
        Ok(fields)
    }

    fn insert(&mut self, path: &[String], value: String) -> ApiResult<()> {
        match path {
            [name] => {
                self.values.insert(name.clone(), Value::String(value));
                Ok(())
            }
            [name, key] => {
                let entry = self
                    .values
                    .entry(name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(map) = entry else {
                    return Err(ApiError::bad_parameter(format!(
                        "`{name}` is given both as a value and as an object"
                    )));
                };
                map.insert(key.clone(), Value::String(value));
                Ok(())
            }
            _ => Err(ApiError::bad_parameter(
                "form fields nest at most two levels: data[name] or data[name][key]",
            )),
        }
    }

    /// Text fields read by other means (a multipart body's), refused as [`Fields::parse`]
    /// refuses them where one holds U+0000.
    pub fn from_text(values: BTreeMap<String, String>) -> ApiResult<Fields> {
        let values: BTreeMap<String, Value> = values
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        for (name, value) in &values {
            refuse_nul(name, value)?;
        }
        Ok(Fields { values })
    }

    /// A text field, trimmed; `None` when absent or blank. Numbers and booleans given in JSON
    /// count as their text.
    pub fn text(&self, name: &str) -> Option<String> {
        let text = match self.values.get(name)? {
            Value::String(text) => text.trim().to_owned(),
            Value::Number(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            _ => return None,
        };
        (!text.is_empty()).then_some(text)
    }

    /// A date-time field (RFC 3339), normalised to UTC (see [`crate::timestamp`]).
    pub fn timestamp(&self, name: &str) -> ApiResult<Option<String>> {
        self.text(name)
            .map(|text| crate::timestamp::parse(name, &text))
            .transpose()
    }

    /// A text field that must be there.
    pub fn required_text(&self, name: &str) -> ApiResult<String> {
        self.text(name)
            .ok_or_else(|| ApiError::bad_parameter(format!("`{name}` is required")))
    }

    /// A text field, refused when longer than `max_chars`.
    pub fn bounded_text(&self, name: &str, max_chars: usize) -> ApiResult<Option<String>> {
        match self.text(name) {
            Some(text) if text.chars().count() > max_chars => Err(ApiError::bad_parameter(
                format!("`{name}` is longer than {max_chars} characters"),
            )),
            other => Ok(other),
        }
    }

    /// An object field (`data[userData][k]=v`, or a JSON object), its values as given.
    pub fn object(&self, name: &str) -> ApiResult<Option<Map<String, Value>>> {
        match self.values.get(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map.clone())),
            Some(_) => Err(ApiError::bad_parameter(format!(
                "`{name}` must be an object (data[{name}][key]=value)"
            ))),
        }
    }

    /// The fields not named in `known`, as text: what a widget sends beyond the documented
    /// fields (`data[ChatProfile]=...`) is the interaction's user data.
    pub fn others(&self, known: &[&str]) -> Map<String, Value> {
        self.values
            .iter()
            .filter(|(name, _)| !known.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The integer query parameter `name`, from `min` to `max`; `default` without it; a 400 that
/// says the range otherwise (a page's `limit`, say).
pub fn int_param(
    params: &BTreeMap<String, String>,
    name: &str,
    min: i64,
    max: i64,
    default: i64,
) -> ApiResult<i64> {
    match params.get(name) {
        None => Ok(default),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| ApiError::bad_parameter(format!("`{name}` is from {min} to {max}"))),
    }
}

/// Refuses a value whose text (in any string or key, however deep) holds U+0000: no text column
/// of PostgreSQL can store it, and the caller must hear so as a 400 naming the field, not as a
/// failure of the service to retry.
pub fn refuse_nul(name: &str, value: &Value) -> ApiResult<()> {
    let holds_nul = match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => return items.iter().try_for_each(|item| refuse_nul(name, item)),
        Value::Object(map) => {
            return map.iter().try_for_each(|(key, item)| {
                if key.contains('\0') {
                    return Err(nul_in(name));
                }
                refuse_nul(name, item)
            });
        }
        _ => false,
    };
    if holds_nul || name.contains('\0') {
        Err(nul_in(name))
    } else {
        Ok(())
    }
}

fn nul_in(name: &str) -> ApiError {
    ApiError::bad_parameter(format!(
        "`{}` holds a NUL character (U+0000), which text cannot",
        name.replace('\0', "\\0")
    ))
}

/// The parameters of a query string or a form body (`a=1&b=2`), decoded, in the order given;
/// a 400 when one holds U+0000 (see [`refuse_nul`]).
pub fn form_pairs(encoded: &[u8]) -> ApiResult<Vec<(String, String)>> {
    form_urlencoded::parse(encoded)
        .map(|(key, value)| {
            if key.contains('\0') || value.contains('\0') {
                Err(nul_in(&key))
            } else {
                Ok((key.into_owned(), value.into_owned()))
            }
        })
        .collect()
}

/// `data[a][b]` → `["a", "b"]`; `text` → `["text"]`; anything else with brackets is malformed.
fn parse_key(key: &str) -> ApiResult<Vec<String>> {
    let malformed = || ApiError::bad_parameter(format!("malformed form field name `{key}`"));
    let Some(open) = key.find('[') else {
        return if key.is_empty() || key.contains(']') {
            Err(malformed())
        } else {
            Ok(vec![key.to_owned()])
        };
    };
    let (head, mut rest) = key.split_at(open);
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(malformed)?;
        let close = inner.find(']').ok_or_else(malformed)?;
        let part = &inner[..close];
        if part.is_empty() || part.contains('[') {
            return Err(malformed());
        }
        parts.push(part.to_owned());
        rest = &inner[close + 1..];
    }
    // `data[...]` wraps the fields; any other head is a field of its own.
    if head == "data" {
        Ok(parts)
    } else if head.is_empty() {
        Err(malformed())
    } else {
        let mut path = vec![head.to_owned()];
        path.extend(parts);
        Ok(path)
    }
}

#[cfg(test)]
mod body_tests {
    use super::*;

    #[test]
    fn integer_parameters_keep_to_their_range() {
        let params: BTreeMap<String, String> = [("limit", "20"), ("big", "500"), ("word", "ten")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(int_param(&params, "limit", 1, 200, 50), Ok(20));
        assert_eq!(int_param(&params, "none", 1, 200, 50), Ok(50));
        let error = int_param(&params, "big", 1, 200, 50).unwrap_err();
        assert_eq!(error.message, "`big` is from 1 to 200");
        assert!(int_param(&params, "word", 1, 200, 50).is_err());
    }
    use serde_json::json;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded; charset=UTF-8");

    #[test]
    fn the_widgets_form_encoding() {
        let body = b"data%5BfirstName%5D=Ada&data[lastName]=Lovelace&data[nickname]=ada+l&data[ChatProfile]=gold&data[userData][order]=A%2F1";
        let fields = Fields::parse(FORM, body, 1024).unwrap();
        assert_eq!(fields.text("firstName").as_deref(), Some("Ada"));
        assert_eq!(fields.text("nickname").as_deref(), Some("ada l"));
        assert_eq!(
            fields.object("userData").unwrap(),
            Some(json!({"order": "A/1"}).as_object().unwrap().clone())
        );
        let others = fields.others(&["firstName", "lastName", "nickname", "userData"]);
        assert_eq!(Value::Object(others), json!({"ChatProfile": "gold"}));
    }

    #[test]
    fn json_wrapped_in_data_or_not() {
        for body in [
            r#"{"data":{"type":"Text","text":"hi"}}"#,
            r#"{"type":"Text","text":"hi"}"#,
        ] {
            let fields = Fields::parse(Some("application/json"), body.as_bytes(), 1024).unwrap();
            assert_eq!(fields.required_text("text").unwrap(), "hi");
        }
    }

    #[test]
    fn malformed_bodies_are_refused_with_their_codes() {
        for body in [
            "data[name=x",
            "data[]=x",
            "data[a]b]=x",
            "[a]=x",
            "data[a][b][c]=x",
        ] {
            let err = Fields::parse(FORM, body.as_bytes(), 1024).unwrap_err();
            assert_eq!(
                (err.http_status, err.code),
                (400, Code::InvalidParameter),
                "{body}"
            );
        }
        let err = Fields::parse(FORM, &[0xff, 0xfe], 1024).unwrap_err();
        assert_eq!(err.code, Code::InvalidParameter);
        let err = Fields::parse(Some("application/json"), b"[1]", 1024).unwrap_err();
        assert_eq!(err.code, Code::InvalidParameter);
        let err = Fields::parse(Some("application/json"), b"{", 1024).unwrap_err();
        assert_eq!(err.code, Code::InvalidParameter);
        let err = Fields::parse(Some("text/plain"), b"hi", 1024).unwrap_err();
        assert_eq!(err.http_status, 415);
        // An empty body of any type is no fields.
        assert!(
            Fields::parse(Some("multipart/form-data"), b"", 1024)
                .unwrap()
                .is_empty()
        );
        let err = Fields::parse(FORM, &[b'a'; 2000], 1024).unwrap_err();
        assert_eq!((err.http_status, err.code), (413, Code::LimitBodySize));
    }

    #[test]
    fn nul_characters_are_refused_by_field() {
        for (content_type, body) in [
            (FORM, "data[firstName]=A%00da"),
            (FORM, "data[userData][k%00]=v"),
            (FORM, "data[userData][k]=%00"),
            (Some("application/json"), r#"{"name": "A\u0000"}"#),
            (
                Some("application/json"),
                r#"{"credentials": {"apiKey": ["x\u0000"]}}"#,
            ),
            (Some("application/json"), r#"{"settings": {"k\u0000": 1}}"#),
        ] {
            let err = Fields::parse(content_type, body.as_bytes(), 1024).unwrap_err();
            assert_eq!(
                (err.http_status, err.code),
                (400, Code::InvalidParameter),
                "{body}"
            );
            assert!(err.message.contains("NUL"), "{}", err.message);
        }
        let err = form_pairs(b"q=a%00b&x=1").unwrap_err();
        assert!(err.message.contains("`q`"), "{}", err.message);
        assert_eq!(
            form_pairs(b"q=a+b&x=%C3%A9").unwrap(),
            [
                ("q".to_owned(), "a b".to_owned()),
                ("x".to_owned(), "é".to_owned())
            ]
        );
    }

    #[test]
    fn timestamps_are_rfc_3339_in_utc() {
        let fields = Fields::parse(
            Some("application/json"),
            br#"{"expiresAt": "2030-01-01T00:00:00+18:05", "bad": "tomorrow"}"#,
            1024,
        )
        .unwrap();
        assert_eq!(
            fields.timestamp("expiresAt").unwrap().as_deref(),
            Some("2029-12-31T05:55:00.000000Z")
        );
        assert!(fields.timestamp("bad").is_err());
        assert_eq!(fields.timestamp("absent").unwrap(), None);
    }

    #[test]
    fn a_value_and_an_object_of_one_name_conflict() {
        let err = Fields::parse(FORM, b"data[u]=1&data[u][k]=2", 1024).unwrap_err();
        assert_eq!(err.code, Code::InvalidParameter);
    }

    #[test]
    fn blank_text_is_absent_and_long_text_is_refused() {
        let fields = Fields::parse(FORM, b"data[text]=%20%20&data[nickname]=abcdef", 1024).unwrap();
        assert_eq!(fields.text("text"), None);
        assert!(fields.required_text("text").is_err());
        assert!(fields.bounded_text("nickname", 5).is_err());
        assert_eq!(
            fields.bounded_text("nickname", 6).unwrap().as_deref(),
            Some("abcdef")
        );
    }
}
