//! The back-office APIs' credential: an API key in `x-api-key` with the API's permission
//! (`history`, `securemail`), checked in PostgreSQL on every request, so that disabling or
//! deleting a key takes effect at once.

use spin_sdk::http::Request;
use spin_sdk::pg4::ParameterValue;

use crate::api::{ApiError, ApiResult, Code};
use crate::secrets::hash_api_key;
use crate::spin::{Db, header};

/// The tenant of an enabled, unexpired API key with `permission` (and of the contact center
/// `x-ccid` names, when the caller names one).
pub fn authorize(req: &Request, db: &Db, permission: &str) -> ApiResult<i64> {
    let key = header(req, "x-api-key").ok_or_else(|| {
        ApiError::new(
            401,
            Code::AuthenticationRequired,
            format!("send an API key with the {permission} permission in the x-api-key header"),
        )
    })?;
    let rows = db.rows(
        "check the API key",
        "SELECT t.id AS tenant_id, t.ccid, k.permission, \
         (k.enabled AND t.enabled AND coalesce(k.expires_at > now(), true)) AS usable \
         FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = $1",
        &[ParameterValue::Binary(hash_api_key(&key))],
    )?;
    let invalid =
        |status, message: &str| ApiError::new(status, Code::InvalidContactCenter, message);
    let row = rows
        .rows()
        .next()
        .ok_or_else(|| invalid(401, "the API key is not valid"))?;
    if row.get::<bool>("usable") != Some(true) {
        return Err(invalid(401, "the API key is disabled or expired"));
    }
    if row.get::<String>("permission").as_deref() != Some(permission) {
        return Err(invalid(
            403,
            &format!("the API key does not have the {permission} permission"),
        ));
    }
    if let Some(ccid) = header(req, "x-ccid")
        && row.get::<String>("ccid").as_deref() != Some(ccid.as_str())
    {
        return Err(invalid(
            403,
            "the API key belongs to another contact center",
        ));
    }
    row.get::<i64>("tenant_id")
        .ok_or_else(|| ApiError::internal("check the API key", "no tenant"))
}
