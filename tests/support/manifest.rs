//! The pieces the test applications' manifests are made of. The `{component}` placeholders
//! become the built components' paths when a host starts (see `Nexus::start`).

/// The head of a manifest: the application and the variables every component reads.
pub fn application(name: &str) -> String {
    format!(
        r#"
spin_manifest_version = 2

[application]
name = "{name}"

[variables]
redis_address = {{ default = "redis://127.0.0.1:6379" }}
redis_host = {{ default = "127.0.0.1:6379" }}
postgres_address = {{ default = "postgres://127.0.0.1:5432/unused" }}
postgres_host = {{ default = "127.0.0.1:5432" }}
redis_key_prefix = {{ default = "nexus:" }}
admin_token = {{ default = "", secret = true }}
credentials_key = {{ default = "dGVzdC1jcmVkZW50aWFscy1rZXktMzItYnl0ZXMtISE=", secret = true }}
credentials_keys_previous = {{ default = "", secret = true }}
allow_private_outbound = {{ default = "false" }}
"#
    )
}

/// The provisioning API.
pub fn provisioning() -> String {
    r#"
[[trigger.http]]
route = "/nexus/v3/provisioning/..."
component = "provisioning"

[component.provisioning]
source = "{provisioning}"
allowed_outbound_hosts = ["postgres://{{ postgres_host }}", "redis://{{ redis_host }}", "http://tenant-components.nexus.internal"]
[component.provisioning.variables]
postgres_address = "{{ postgres_address }}"
redis_address = "{{ redis_address }}"
redis_key_prefix = "{{ redis_key_prefix }}"
admin_token = "{{ admin_token }}"
credentials_key = "{{ credentials_key }}"
credentials_keys_previous = "{{ credentials_keys_previous }}"
allow_private_outbound = "{{ allow_private_outbound }}"
[component.provisioning.tool.nexus]
max_request_body_bytes = 9437184
"#
    .to_owned()
}

/// The components that open sealed secrets (channel secrets, bot credentials), and so hold the
/// keys, as in spin.toml.
const KEY_HOLDERS: [&str; 4] = ["bots", "messaging", "sms", "email"];

/// Component `name` (built from placeholder `{name}`) on `route`, with Redis, PostgreSQL and
/// the admin token (and the keys, for the components that hold them), that may also reach
/// `extra_hosts`.
pub fn component(name: &str, route: &str, extra_hosts: &[&str]) -> String {
    let hosts: String = extra_hosts
        .iter()
        .map(|host| format!(", \"{host}\""))
        .collect();
    let keys = if KEY_HOLDERS.contains(&name) {
        "credentials_key = \"{{ credentials_key }}\"\ncredentials_keys_previous = \"{{ credentials_keys_previous }}\"\n"
    } else {
        ""
    };
    format!(
        r#"
[[trigger.http]]
route = "{route}"
component = "{name}"

[component.{name}]
source = "{{{name}}}"
allowed_outbound_hosts = ["redis://{{{{ redis_host }}}}", "postgres://{{{{ postgres_host }}}}"{hosts}]
[component.{name}.variables]
redis_address = "{{{{ redis_address }}}}"
redis_key_prefix = "{{{{ redis_key_prefix }}}}"
postgres_address = "{{{{ postgres_address }}}}"
admin_token = "{{{{ admin_token }}}}"
{keys}"#
    )
}

/// The host's job worker for component `name`, POSTing to `path`, on the tests' short retry
/// schedule (200 ms, then 400 ms, then dead), with claims of `lease_ms`.
pub fn jobs(name: &str, path: &str, lease_ms: u64) -> String {
    format!(
        r#"
[component.{name}.tool.nexus.jobs]
path = "{path}"
bearer = "{{{{ admin_token }}}}"
retry_ms = [200, 400]
poll_ms = 50
lease_ms = {lease_ms}
"#
    )
}

/// The agent desktop's WebSocket (`/nexus/v3/workspace/socket`).
pub fn workspace_socket() -> String {
    socket_component("workspace-socket", "/nexus/v3/workspace/socket")
}

/// The web chat customer's WebSocket (`/nexus/v3/chat/sessions/:id/socket`).
pub fn chat_socket() -> String {
    socket_component("chat-socket", "/nexus/v3/chat/sessions/:id/socket")
}

/// A campaign's WebSocket (`/nexus/v3/outbound/campaigns/:id/socket`).
pub fn campaign_socket() -> String {
    socket_component("campaign-socket", "/nexus/v3/outbound/campaigns/:id/socket")
}

/// A socket-handler component `name` (built from the placeholder `{name}` with `_` for `-`)
/// on `route`, with the platform's Redis and PostgreSQL.
fn socket_component(name: &str, route: &str) -> String {
    let placeholder = name.replace('-', "_");
    format!(
        r#"
[component.{name}]
source = "{{{placeholder}}}"
allowed_outbound_hosts = ["redis://{{{{ redis_host }}}}", "postgres://{{{{ postgres_host }}}}"]
[component.{name}.variables]
redis_address = "{{{{ redis_address }}}}"
redis_key_prefix = "{{{{ redis_key_prefix }}}}"
postgres_address = "{{{{ postgres_address }}}}"
[component.{name}.tool.nexus.websocket]
route = "{route}"
"#
    )
}

/// The web side (widget, console, demo page) on its routes, as in spin.toml.
pub fn assets() -> String {
    let mut manifest = String::new();
    for route in ["/widget/...", "/console/...", "/demo/...", "/"] {
        manifest.push_str(&format!(
            "\n[[trigger.http]]\nroute = \"{route}\"\ncomponent = \"assets\"\n"
        ));
    }
    manifest.push_str("\n[component.assets]\nsource = \"{assets}\"\n");
    manifest
}
