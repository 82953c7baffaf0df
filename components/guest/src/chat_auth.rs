//! Who is calling the Chat API: an API key (`x-api-key`, with the `chat` permission) to start a
//! session, and the session's client token (`x-nexus-client-key`) for everything on it, its
//! WebSocket included. Keys are checked in PostgreSQL on every request, so disabling or
//! deleting one takes effect at once.
//!
//! The caller's headers come as a lookup (a name in lower case to its trimmed, non-empty
//! value), so that an HTTP request and a WebSocket upgrade are checked alike.

use crate::api::{ApiError, ApiResult, Code};
use crate::conversation;
use crate::live::{LiveSession, LiveState};
use crate::secrets::hash_api_key;
use crate::spin::{Db, Live, opt_text, text};
use crate::token::{self, ClientClaims};
use spin_sdk::pg4::ParameterValue;

/// A request's headers: the value of a header by its lower-case name.
pub type Headers<'a> = &'a dyn Fn(&str) -> Option<String>;

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
pub fn starting_tenant(header: Headers<'_>, db: &Db) -> ApiResult<Tenant> {
    let key = header("x-api-key").ok_or_else(|| {
        ApiError::new(
            401,
            Code::AuthenticationRequired,
            "send the API key in the x-api-key header",
        )
    })?;
    let tenant = api_key_tenant(db, &key, None)?;
    check_ccid_header(header, &tenant)?;
    Ok(tenant)
}

/// `x-ccid`, when sent, must name the key's own contact center.
fn check_ccid_header(header: Headers<'_>, tenant: &Tenant) -> ApiResult<()> {
    match header("x-ccid") {
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
    header: Headers<'_>,
    db: &Db,
    session_id: &str,
) -> ApiResult<(Tenant, ClientClaims)> {
    let presented = header("x-nexus-client-key").ok_or_else(|| {
        invalid_client_token("send the session's client token in the x-nexus-client-key header")
    })?;
    let unverified =
        token::parse(&presented).map_err(|err| invalid_client_token(&err.to_string()))?;
    let tenant = match header("x-api-key") {
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
    check_ccid_header(header, &tenant)?;
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

/// After this long without activity a session is idle (its timer in Redis runs out).
pub const INACTIVITY_SECONDS: i64 = 30 * 60;

fn unknown_session() -> ApiError {
    ApiError::new(404, Code::InvalidSession, "no such session")
}

/// The live state of the session a verified client token is for (rebuilt from PostgreSQL when
/// Redis lost it), once it is sure that the token's participant and transport are the
/// session's.
pub fn live_session(
    db: &Db,
    live: &Live,
    tenant: &Tenant,
    claims: &ClientClaims,
    session_id: &str,
) -> ApiResult<LiveSession> {
    let live_session = match LiveState::new(live, session_id).load()? {
        Some(session) => session,
        None => {
            let (session, tail) = conversation::load_session(db, tenant.id, session_id)?
                .ok_or_else(unknown_session)?;
            let state = LiveState::new(live, session_id);
            state.store(&session, &tail)?;
            if session.state == "active" {
                state.touch(INACTIVITY_SECONDS)?;
            }
            session
        }
    };
    if live_session.tenant_id != tenant.id {
        return Err(unknown_session());
    }
    if live_session.participant_id != claims.participant_id {
        return Err(ApiError::new(
            403,
            Code::InvalidParticipant,
            "the client token's participant is not in this session",
        ));
    }
    if live_session.channel_id != claims.transport_id {
        return Err(ApiError::new(
            403,
            Code::InvalidTransport,
            "the client token's transport is not this session's",
        ));
    }
    Ok(live_session)
}
