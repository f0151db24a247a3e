//! Errors as Kubernetes `Status` objects, with the reasons and codes clients
//! switch on (`kubectl`, client-go and the Python client all read `reason`).

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// Group/kind/name of the object an error is about (Status `details`).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    fn details(&self) -> Value {
        json!({"name": self.name, "group": self.group, "kind": self.plural})
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", msg)
    }
    pub fn not_found_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
    pub fn not_found(t: Target<'_>) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", t.resource(), t.name),
        );
        e.details = Some(t.details());
        e
    }
    pub fn already_exists(t: Target<'_>) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", t.resource(), t.name),
        );
        e.details = Some(t.details());
        e
    }
    pub fn conflict(t: Target<'_>) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                t.resource(),
                t.name
            ),
        );
        e.details = Some(t.details());
        e
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }
    pub fn not_acceptable(msg: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", msg)
    }
    pub fn gone(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }
    /// A request body over [`crate::http::MAX_BODY`] (kube's wording).
    pub fn too_large() -> Self {
        Self::too_large_msg(format!("limit is {}", crate::http::MAX_BODY))
    }
    /// 413 for a request whose result would be too large (kube's
    /// `NewRequestEntityTooLargeError`).
    pub fn too_large_msg(detail: impl std::fmt::Display) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: {detail}"),
        )
    }
    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct:?})"
            ),
        )
    }
    /// 422 with one cause per invalid field, as `kubectl` prints them.
    pub fn invalid(t: Target<'_>, causes: &[(String, String)]) -> Self {
        let list: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let msg = format!(
            "{} \"{}\" is invalid: {}",
            t.kind,
            t.name,
            if list.len() == 1 {
                list[0].clone()
            } else {
                format!("[{}]", list.join(", "))
            }
        );
        let mut e = Self::new(422, "Invalid", msg);
        let causes: Vec<Value> = causes
            .iter()
            .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
            .collect();
        e.details =
            Some(json!({"name": t.name, "group": t.group, "kind": t.kind, "causes": causes}));
        e
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {msg}"),
        )
    }
    pub fn timeout(msg: impl Into<String>) -> Self {
        Self::new(504, "Timeout", msg)
    }

    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl From<skiff_store::Error> for ApiError {
    fn from(e: skiff_store::Error) -> Self {
        match e {
            skiff_store::Error::Compacted {
                requested,
                compacted,
            } => ApiError::gone(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            skiff_store::Error::FutureRevision { requested, current } => ApiError::timeout(
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            // etcd's NOSPACE reaches kube clients as a 500; 507 says what
            // it is (the server is out of the storage it may use).
            e @ skiff_store::Error::NoSpace { .. } => {
                ApiError::new(507, "InsufficientStorage", e.to_string())
            }
            // A replicated store without a quorum: retry elsewhere or later.
            e @ skiff_store::Error::Unavailable(_) => {
                ApiError::new(503, "ServiceUnavailable", e.to_string())
            }
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::http::json_response(self.code, &self.to_status())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
