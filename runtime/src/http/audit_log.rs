//! `GET /admin/audit`: the store's audit log, for administrators (the events are written by
//! [`super::audit`]).

/// Entries per page, at most.
const MAX_PAGE: i64 = 1000;

/// The audit log's filters and paging.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this tenant's entries ("" for refusals before a key was accepted).
    #[serde(default)]
    tenant: Option<String>,
    /// Entries per page, 1-1000 (default 100).
    #[serde(default)]
    limit: Option<i64>,
    /// The previous page's `next_cursor`.
    #[serde(default)]
    cursor: Option<i64>,
}

/// One audit entry.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuditItem {
    seq: i64,
    /// Seconds since the Unix epoch.
    at: f64,
    node: String,
    tenant: String,
    event: String,
    /// The event's fields (`request_id` always; `reason` and `client`, `code`, `what`,
    /// `name` or `action` by event).
    #[schema(value_type = Object)]
    detail: serde_json::Value,
}

/// One page of the audit log, newest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditItem>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    next_cursor: Option<i64>,
}

/// The audit log (administrators only).
///
/// `GET /admin/audit`: refusals (keys, limits, roles), tools loaded and unloaded, scripts
/// stored and deleted, packages and admin actions, on every node, newest first.
#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "audit_log",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page", body = super::envelope::Envelope<AuditPage>),
        (status = 400, description = "`bad_request`: a limit out of range or a bad cursor", body = super::openapi::ErrorEnvelope),
        (status = 403, description = "`forbidden`: the key is not an administrator's", body = super::openapi::ErrorEnvelope)
    )
)]
pub async fn list(
    axum::Extension(caller): super::auth::Authed,
    axum::Extension(store): axum::Extension<crate::store::Store>,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<super::envelope::Data<AuditPage>, super::error::ApiError> {
    use super::error::ApiError;
    super::auth::require_admin(&caller)?;
    let axum::extract::Query(query) =
        query.map_err(|err| ApiError::bad_request(err.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let records = store
        .audit_entries(query.tenant.as_deref(), query.cursor, limit + 1)
        .await
        .map_err(ApiError::internal)?;
    let more = records.len() as i64 > limit;
    let entries: Vec<AuditItem> = records
        .into_iter()
        .take(limit as usize)
        .map(|record| AuditItem {
            seq: record.seq,
            at: record.entry.at,
            node: record.node,
            tenant: record.entry.tenant,
            event: record.entry.event,
            detail: serde_json::from_str(&record.entry.detail).unwrap_or_default(),
        })
        .collect();
    let next_cursor = more.then(|| entries.last().map(|e| e.seq)).flatten();
    Ok(super::envelope::Data(AuditPage {
        entries,
        next_cursor,
    }))
}
