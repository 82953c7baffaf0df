//! The variables capability: Spin's `fermyon:spin/variables` on the manifest's variables.
//!
//! Application variables (`[variables]`) take their value, in order of precedence, from the
//! environment variable `SPIN_VARIABLE_<NAME>` (upper-cased, as Spin's environment provider
//! does), from the host's platform settings (see `platform.rs`), or from the manifest default.
//! A component sees only its own `[component.NAME.variables]`, whose values are templates over
//! application variables (`"{{ name }}"`); they are resolved once when the host starts.

use std::collections::BTreeMap;
use std::sync::Arc;

use thiserror::Error;
use wasmtime::component::HasData;

use crate::bindings::fermyon::spin::variables::{self as wit, Error as WitError};
use crate::manifest::Manifest;

/// Why the variables of an application cannot be resolved.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VariablesError {
    #[error("required variable `{0}` has no value (set SPIN_VARIABLE_{upper})", upper = .0.to_uppercase())]
    MissingRequired(String),
    #[error("`{template}` refers to `{name}`, which is not an application variable")]
    UnknownReference { template: String, name: String },
    #[error("`{0}` is not a valid template: an unclosed `{{{{`")]
    Unclosed(String),
}

/// The resolved application variables.
#[derive(Debug, Clone, Default)]
pub struct AppVariables {
    values: BTreeMap<String, String>,
}

impl AppVariables {
    /// Resolves the manifest's variables; `env` gives environment variables and `platform`
    /// values the host supplies (both lose to nothing but each other, `env` first).
    pub fn resolve(
        manifest: &Manifest,
        env: impl Fn(&str) -> Option<String>,
        platform: &BTreeMap<String, String>,
    ) -> Result<AppVariables, VariablesError> {
        let mut values = BTreeMap::new();
        for (name, decl) in &manifest.variables {
            let value = env(&format!("SPIN_VARIABLE_{}", name.to_uppercase()))
                .or_else(|| platform.get(name).cloned())
                .or_else(|| decl.default.clone())
                .ok_or_else(|| VariablesError::MissingRequired(name.clone()))?;
            values.insert(name.clone(), value);
        }
        Ok(AppVariables { values })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Expands the `{{ name }}` references of `template`.
    pub fn expand(&self, template: &str) -> Result<String, VariablesError> {
        expand_template(template, |name| self.get(name))
    }

    /// Resolves one component's `[component.NAME.variables]`.
    pub fn for_component(
        &self,
        declared: &BTreeMap<String, String>,
    ) -> Result<ComponentVariables, VariablesError> {
        let values = declared
            .iter()
            .map(|(name, template)| Ok((name.clone(), self.expand(template)?)))
            .collect::<Result<BTreeMap<_, _>, VariablesError>>()?;
        Ok(ComponentVariables {
            values: Arc::new(values),
        })
    }
}

/// Expands `{{ name }}` references with `lookup`; anything else is literal text.
pub fn expand_template<'a>(
    template: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, VariablesError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| VariablesError::Unclosed(template.to_owned()))?;
        let name = after[..end].trim();
        let value = lookup(name).ok_or_else(|| VariablesError::UnknownReference {
            template: template.to_owned(),
            name: name.to_owned(),
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The variables one component may read: the capability's context, shared by its instances.
#[derive(Debug, Clone, Default)]
pub struct ComponentVariables {
    values: Arc<BTreeMap<String, String>>,
}

impl ComponentVariables {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

/// The `HasData` marker that gives the bindings a [`ComponentVariables`].
pub struct VariablesCapability;

impl HasData for VariablesCapability {
    type Data<'a> = &'a ComponentVariables;
}

impl wit::Host for &ComponentVariables {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, WitError>> {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Ok(Err(WitError::InvalidName(name)));
        }
        Ok(match ComponentVariables::get(self, &name) {
            Some(value) => Ok(value.to_owned()),
            None => Err(WitError::Undefined(format!(
                "no variable `{name}` is declared for this component"
            ))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
greeting = { default = "hello" }
token = { required = true }
address = { default = "redis://127.0.0.1:6379" }
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
[component.c.variables]
message = "{{ greeting }}, world"
redis = "{{address}}"
"#,
            Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn precedence_is_env_then_platform_then_default() {
        let manifest = manifest();
        let platform = BTreeMap::from([
            ("address".to_owned(), "redis://embedded".to_owned()),
            ("greeting".to_owned(), "platform".to_owned()),
        ]);
        let env = |name: &str| match name {
            "SPIN_VARIABLE_TOKEN" => Some("secret".to_owned()),
            "SPIN_VARIABLE_GREETING" => Some("bonjour".to_owned()),
            _ => None,
        };
        let vars = AppVariables::resolve(&manifest, env, &platform).unwrap();
        assert_eq!(vars.get("greeting"), Some("bonjour"));
        assert_eq!(vars.get("token"), Some("secret"));
        assert_eq!(vars.get("address"), Some("redis://embedded"));

        let component = vars
            .for_component(&manifest.components["c"].variables)
            .unwrap();
        assert_eq!(component.get("message"), Some("bonjour, world"));
        assert_eq!(component.get("redis"), Some("redis://embedded"));
        assert_eq!(
            component.get("token"),
            None,
            "not declared for the component"
        );
    }

    #[test]
    fn missing_required_and_bad_templates_are_errors() {
        let manifest = manifest();
        let err = AppVariables::resolve(&manifest, |_| None, &BTreeMap::new()).unwrap_err();
        assert_eq!(err, VariablesError::MissingRequired("token".into()));
        let vars = AppVariables::resolve(
            &manifest,
            |name| (name == "SPIN_VARIABLE_TOKEN").then(|| "x".to_owned()),
            &BTreeMap::new(),
        )
        .unwrap();
        assert!(matches!(
            vars.expand("{{ nope }}"),
            Err(VariablesError::UnknownReference { .. })
        ));
        assert!(matches!(
            vars.expand("{{ token"),
            Err(VariablesError::Unclosed(_))
        ));
        assert_eq!(vars.expand("plain").unwrap(), "plain");
    }

    #[tokio::test]
    async fn the_wit_interface_reports_invalid_and_undefined_names() {
        use wit::Host;
        let vars = ComponentVariables {
            values: Arc::new(BTreeMap::from([("greeting".to_owned(), "hi".to_owned())])),
        };
        let mut view = &vars;
        assert_eq!(
            Host::get(&mut view, "greeting".into())
                .await
                .unwrap()
                .unwrap(),
            "hi"
        );
        assert!(matches!(
            Host::get(&mut view, "Greeting".into()).await.unwrap(),
            Err(WitError::InvalidName(_))
        ));
        assert!(matches!(
            Host::get(&mut view, "other".into()).await.unwrap(),
            Err(WitError::Undefined(_))
        ));
    }
}
