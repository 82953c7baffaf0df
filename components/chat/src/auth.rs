//! Who is calling: an API key (`x-api-key`, with the `chat` permission) to start a session, and
//! the session's client token (`x-nexus-client-key`) for everything on it. Keys are checked in
//! PostgreSQL on every request, so disabling or deleting one takes effect at once.

use nexus_guest::api::{ApiError, ApiResult, Code};
use nexus_guest::secrets::hash_api_key;
use nexus_guest::spin::{Db, header, opt_text, text};
use nexus_guest::token::{self, ClientClaims};
use spin_sdk::http::Request;
use spin_sdk::pg4::ParameterValue;

/// The tenant a request acts for.
pub struct Tenant {
    pub id: i64,
    pub ccid: String,
    pub token_secret: String,
    /// Whether the caller's channel has inbound transforms, read in the same statement so that
    /// a send to a channel without any (the usual case) reads no chain; false when the request
    /// names no channel.
    pub inbound_transforms: bool,
}

/// Whether channel `$2` (as text, from a token not verified yet: it only ever selects this
/// flag) has inbound transforms of tenant `t`.
const INBOUND_TRANSFORMS: &str = "EXISTS (SELECT 1 FROM channel_transforms ct \
     WHERE ct.tenant_id = t.id AND ct.channel_id::text = $2 AND ct.direction = 'inbound') \
     AS inbound_transforms";

fn invalid_contact_center(status: u16, message: &str) -> ApiError {
    ApiError::new(status, Code::InvalidContactCenter, message)
}

/// The tenant of a presented API key that may chat; `channel`, the channel the request is on.
pub fn api_key_tenant(db: &Db, key: &str, channel: Option<&str>) -> ApiResult<Tenant> {
    let rows = db.rows(
        "check the API key",
        &format!(
            "SELECT k.permission, k.enabled, coalesce(k.expires_at <= now(), false) AS expired, \
             t.id AS tenant_id, t.ccid, t.enabled AS tenant_enabled, t.token_secret, \
             {INBOUND_TRANSFORMS} \
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = $1"
        ),
        &[ParameterValue::Binary(hash_api_key(key)), opt_text(channel)],
    )?;
    let Some(row) = rows.rows().next() else {
        return Err(invalid_contact_center(401, "the API key is not valid"));
    };
    if row.get::<bool>("enabled") != Some(true) {
        return Err(invalid_contact_center(401, "the API key is disabled"));
    }
    if row.get::<bool>("expired") != Some(false) {
        return Err(invalid_contact_center(401, "the API key has expired"));
    }
    if row.get::<String>("permission").as_deref() != Some("chat") {
        return Err(invalid_contact_center(
            403,
            "the API key does not have the chat permission",
        ));
    }
    if row.get::<bool>("tenant_enabled") != Some(true) {
        return Err(invalid_contact_center(
            403,
            "the contact center is disabled",
        ));
    }
    Ok(Tenant {
        id: row.get::<i64>("tenant_id").unwrap_or_default(),
        ccid: row.get::<String>("ccid").unwrap_or_default(),
        token_secret: row.get::<String>("token_secret").unwrap_or_default(),
        inbound_transforms: row.get::<bool>("inbound_transforms").unwrap_or(true),
    })
}

fn tenant_by_ccid(db: &Db, ccid: &str, channel: &str) -> ApiResult<Tenant> {
    let rows = db.rows(
        "find the tenant",
        &format!(
            "SELECT t.id, t.enabled, t.token_secret, {INBOUND_TRANSFORMS} \
             FROM tenants t WHERE t.ccid = $1"
        ),
        &[text(ccid), text(channel)],
    )?;
    let Some(row) = rows.rows().next() else {
        // The token names a tenant that does not exist: it cannot have been signed by us.
        return Err(invalid_client_token("the client token is not valid"));
    };
    if row.get::<bool>("enabled") != Some(true) {
        return Err(invalid_contact_center(
            403,
            "the contact center is disabled",
        ));
    }
    Ok(Tenant {
        id: row.get::<i64>("id").unwrap_or_default(),
        ccid: ccid.to_owned(),
        token_secret: row.get::<String>("token_secret").unwrap_or_default(),
        inbound_transforms: row.get::<bool>("inbound_transforms").unwrap_or(true),
    })
}

/// The API key a session is started with: required.
pub fn starting_tenant(req: &Request, db: &Db) -> ApiResult<Tenant> {
    let key = header(req, "x-api-key").ok_or_else(|| {
        ApiError::new(
            401,
            Code::AuthenticationRequired,
            "send the API key in the x-api-key header",
        )
    })?;
    let tenant = api_key_tenant(db, &key, None)?;
    check_ccid_header(req, &tenant)?;
    Ok(tenant)
}

/// `x-ccid`, when sent, must name the key's own contact center.
fn check_ccid_header(req: &Request, tenant: &Tenant) -> ApiResult<()> {
    match header(req, "x-ccid") {
        Some(ccid) if ccid != tenant.ccid => Err(invalid_contact_center(
            403,
            "the API key belongs to another contact center",
        )),
        _ => Ok(()),
    }
}

pub fn invalid_client_token(message: &str) -> ApiError {
    ApiError::new(401, Code::InvalidClientToken, message)
}

/// A request on a session: the verified claims of its client token, and its tenant. The widgets
/// also send `x-api-key`; when they do it must be a valid chat key of the same tenant.
pub fn session_caller(
    req: &Request,
    db: &Db,
    session_id: &str,
) -> ApiResult<(Tenant, ClientClaims)> {
    let presented = header(req, "x-nexus-client-key").ok_or_else(|| {
        invalid_client_token("send the session's client token in the x-nexus-client-key header")
    })?;
    let unverified =
        token::parse(&presented).map_err(|err| invalid_client_token(&err.to_string()))?;
    let tenant = match header(req, "x-api-key") {
        Some(key) => {
            let tenant = api_key_tenant(db, &key, Some(&unverified.claims.transport_id))?;
            if tenant.ccid != unverified.claims.ccid {
                return Err(invalid_contact_center(
                    403,
                    "the API key belongs to another contact center than the session",
                ));
            }
            tenant
        }
        None => tenant_by_ccid(db, &unverified.claims.ccid, &unverified.claims.transport_id)?,
    };
    check_ccid_header(req, &tenant)?;
    let claims = unverified
        .verify(tenant.token_secret.as_bytes())
        .map_err(|err| invalid_client_token(&err.to_string()))?;
    if claims.session_id != session_id {
        return Err(invalid_client_token(
            "the client token belongs to another session",
        ));
    }
    Ok((tenant, claims))
}
