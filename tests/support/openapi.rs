//! Checks responses against the OpenAPI documents in `openapi/`: the operation must document the
//! status, and the body must match that response's schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::Value;

pub struct Api {
    name: String,
    doc: Value,
}

impl Api {
    /// `openapi/{name}.json`.
    pub fn load(name: &str) -> Api {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../openapi")
            .join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        Api {
            name: name.to_owned(),
            doc: serde_json::from_str(&text).expect("an OpenAPI document is JSON"),
        }
    }

    /// The documented path that `path` (without query) is an instance of.
    fn template(&self, path: &str) -> String {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut candidates: Vec<(usize, &String)> = self.doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .filter_map(|template| {
                let parts: Vec<&str> = template.trim_matches('/').split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut params = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') {
                        params += 1;
                    } else if part != segment {
                        return None;
                    }
                }
                Some((params, template))
            })
            .collect();
        candidates.sort();
        candidates
            .first()
            .map(|(_, template)| (*template).clone())
            .unwrap_or_else(|| panic!("{}: no documented path matches {path}", self.name))
    }

    /// Panics unless `body` is what the document says `method path` answers with `status`.
    pub fn check(&self, method: &str, url: &str, status: u16, body: &Value) {
        let path = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
        let path = path.split('?').next().unwrap_or_default();
        let template = self.template(path);
        let method = method.to_ascii_lowercase();
        let responses = &self.doc["paths"][&template][&method]["responses"];
        assert!(
            responses.is_object(),
            "{}: {method} {template} is not documented",
            self.name
        );
        assert!(
            responses.get(status.to_string()).is_some(),
            "{}: {method} {template} does not document the status {status} (body: {body})",
            self.name
        );
        // A JSON pointer (RFC 6901) in a URI fragment, where braces must be percent-encoded.
        let escaped = template
            .replace('~', "~0")
            .replace('/', "~1")
            .replace('{', "%7B")
            .replace('}', "%7D");
        self.validate(
            &format!(
                "#/paths/{escaped}/{method}/responses/{status}/content/application~1json/schema"
            ),
            body,
            &format!("{method} {template} {status}"),
        );
    }

    /// Panics unless `value` matches the document's `components/schemas/{schema}`.
    pub fn check_schema(&self, schema: &str, value: &Value) {
        self.validate(
            &format!("#/components/schemas/{schema}"),
            value,
            &format!("schema {schema}"),
        );
    }

    fn validate(&self, pointer: &str, value: &Value, what: &str) {
        let mut root = self.doc.clone();
        root.as_object_mut()
            .unwrap()
            .insert("$ref".into(), Value::String(pointer.to_owned()));
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|err| panic!("{}: the schema does not compile: {err}", self.name));
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|err| format!("{} at {}", err, err.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{}: {what} does not match its schema:\n{}\nvalue: {value:#}",
            self.name,
            errors.join("\n")
        );
    }
}
