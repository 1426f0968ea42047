//! `GET /api/openapi.json`: the OpenAPI 3.1 contract of the ingest and runtime APIs.
//!
//! The document is generated from the handlers' `#[utoipa::path]` annotations and the
//! types they read and write, so that it changes with the code; CI fuzzes the live server
//! against it (`.ci/run`).

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::schema::{ArrayBuilder, Object, ObjectBuilder, Ref, SchemaFormat, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::AppState;
use crate::domain::payload::Problem;
use crate::domain::variables::{VariableName, VariableValue, Variables};
use crate::error::ProblemKind;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(document))
}

/// The contract, as served.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Precall API",
        description = "The pre-call webhook (senders post what they know about a caller), the \
                       call runtime's API (start a call, answer its questions, read it back) and \
                       the management API (agents and their versioned configuration). \
                       Errors are application/problem+json (RFC 9457); each `type` has a page \
                       that explains it."
    ),
    paths(
        super::ingest::receive,
        super::api::calls::start,
        super::api::calls::show,
        super::api::calls::input,
        super::api::manage::agents::list_agents,
        super::api::manage::agents::create_agent,
        super::api::manage::agents::get_agent,
        super::api::manage::agents::update_agent,
        super::api::manage::agents::delete_agent,
        super::api::manage::agents::get_draft,
        super::api::manage::agents::put_draft,
        super::api::manage::agents::discard,
        super::api::manage::agents::validate,
        super::api::manage::agents::changes,
        super::api::manage::canvas::draft_layout,
        super::api::manage::agents::publish,
        super::api::manage::agents::list_versions,
        super::api::manage::agents::get_version,
        super::api::manage::agents::restore,
        super::api::manage::webhooks::list_webhooks,
        super::api::manage::webhooks::new_key,
        super::api::manage::webhooks::revoke_key,
        super::api::manage::webhooks::set_signing,
        super::api::manage::webhooks::new_signing_secret,
        super::api::manage::records::list_variables,
        super::api::manage::records::put_variable,
        super::api::manage::records::delete_variable,
        super::api::manage::records::list_runtime_tokens,
        super::api::manage::records::create_runtime_token,
        super::api::manage::records::revoke_runtime_token,
        super::api::manage::records::list_deliveries,
        super::api::manage::records::list_calls,
        super::api::manage::connections::list_connections,
        super::api::manage::connections::create_connection,
        super::api::manage::connections::update_connection,
        super::api::manage::connections::delete_connection,
        super::metrics::metrics,
    ),
    components(schemas(
        crate::http::api::manage::AgentDocumentSchema,
        IngestBody,
        IngestReceipt,
        ProblemDetails,
        Problem,
        VariableValue,
        Variables,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "ingest", description = "Webhook senders: cache a caller's context before the call."),
        (name = "calls", description = "The call runtime: calls, their variables and flow steps."),
        (name = "operations", description = "Operators: the server's metrics for Prometheus. An admin API token (`pcat_…`) as Bearer; a read-only one is enough."),
        (name = "manage", description = "Automation: agents, their configuration as a versioned document (draft, publish, versions), webhooks' secrets, variables, tokens, deliveries and calls. An admin API token (`pcat_…`) as Bearer."),
    )
)]
pub struct ApiDoc;

static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises");
    camel_case_links(&mut doc);
    doc["components"]["schemas"]["AgentDocument"] = crate::http::api::manage::document_schema();
    doc.to_string()
});

/// utoipa 5 writes a Link Object's fields in snake case (`operation_id`); OpenAPI names them
/// `operationId`, `operationRef` and `requestBody`, and readers ignore the others.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(|l| l.as_object_mut()))
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (from, to) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(v) = link.remove(from) {
                link.insert(to.into(), v);
            }
        }
    }
}

async fn document() -> Response {
    let mut res = DOCUMENT.as_str().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The names the operations' `security` lists refer to.
pub const WEBHOOK_KEY: &str = "webhookKey";
pub const WEBHOOK_BEARER: &str = "webhookBearer";
pub const RUNTIME_TOKEN: &str = "runtimeToken";
pub const ADMIN_TOKEN: &str = "adminToken";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            WEBHOOK_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Authorization",
                "The webhook's API key (`pcwk_…`), shown once when the webhook was \
                     configured. `X-Authorization: Bearer <key>` is accepted too.",
            ))),
        );
        components.add_security_scheme(
            WEBHOOK_BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pcwk_…")
                    .description(Some(
                        "The webhook's API key as `Authorization: Bearer <key>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            RUNTIME_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pcrt_…")
                    .description(Some(
                        "A runtime token made for one agent (`precall token create`).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pcat_…")
                    .description(Some(
                        "An admin API token (`precall api-token create`, or the Admins page): \
                         it acts for its admin; a read-only one only reads.",
                    ))
                    .build(),
            ),
        );
    }
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A string field of the API that takes one of a few words.
fn one_of(words: &[&str], description: &str) -> Object {
    string()
        .enum_values(Some(words.iter().copied()))
        .description(Some(description))
        .build()
}

/// `CallView.source`.
pub fn call_source() -> Object {
    one_of(
        &["webhook", "fallback"],
        "`webhook` when webhook data was used, else `fallback`.",
    )
}

/// `CallView.status`.
pub fn call_status() -> Object {
    one_of(
        &["active", "ended"],
        "`active` while a question waits for its answer, else `ended`.",
    )
}

/// `PrecallStep.outcome`.
pub fn precall_outcome() -> Object {
    one_of(
        &["cached", "arrived", "fallback", "disabled"],
        "`cached` (the data was there before the call), `arrived` (it came while the call \
         waited), `fallback` (the wait ran out), `disabled`.",
    )
}

/// The body of `POST /webhooks/{slug}`: parsed by hand (`domain::payload`), so described
/// here rather than derived.
pub struct IngestBody;

impl PartialSchema for IngestBody {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "One JSON object. `agentId` and `phoneNumber` are required; every other field \
                 becomes a variable. Fields declared in the agent's variable schema must have \
                 their type after lossless coercion; `caller_phone`, `called_number` and \
                 `call_id` are refused; at most 200 fields.",
            ))
            .property(
                "agentId",
                string()
                    .description(Some("The public id of the agent that owns this webhook."))
                    .examples(["oJvfgs3Eg8DEMOGnQES7"]),
            )
            .required("agentId")
            .property(
                "phoneNumber",
                string()
                    .description(Some(
                        "The caller, in any usual writing; normalised to E.164 with the \
                         agent's default region.",
                    ))
                    .min_length(Some(1))
                    .examples(["+1 (212) 555-1234", "12125551234", "+1234567890"]),
            )
            .required("phoneNumber")
            .property_names(Some(string().pattern(Some(VariableName::PATTERN))))
            .additional_properties(Some(RefOr::Ref(Ref::from_schema_name(
                VariableValue::name(),
            ))))
            .examples([serde_json::json!({
                "agentId": "oJvfgs3Eg8DEMOGnQES7",
                "phoneNumber": "+1234567890",
                "customer_name": "Jane Doe",
                "priority": "high",
                "issue_type": "billing"
            })])
            .into()
    }
}

impl ToSchema for IngestBody {}

/// What an accepted webhook request answers: built by the store (`store::batch::receipt`)
/// and kept, so that a replay returns the first answer byte for byte.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct IngestReceipt {
    pub status: Accepted,
    /// The caller's number, normalised.
    #[schema(examples("+1234567890"))]
    pub phone_number: String,
    /// Every field now cached for the caller (after merging), sorted.
    #[schema(examples(json!(["customer_name", "issue_type", "priority"])))]
    pub fields: Vec<String>,
    /// When the cached data expires unused.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// The only status of a receipt.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Accepted {
    Accepted,
}

/// An error answer, `application/problem+json` (RFC 9457). The `type`s are the problem kinds
/// of the code (`error::ProblemKind`), each with its page.
pub struct ProblemDetails;

impl PartialSchema for ProblemDetails {
    fn schema() -> RefOr<Schema> {
        let types: Vec<String> = ProblemKind::ALL
            .iter()
            .map(|k| format!("/problems/{}", k.slug()))
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "An error (RFC 9457). `errors` has one entry per problem when there are several \
                 or when one names a field.",
            ))
            .property(
                "type",
                string()
                    .format(Some(SchemaFormat::Custom("uri-reference".into())))
                    .enum_values(Some(types))
                    .description(Some("A page that explains the problem.")),
            )
            .required("type")
            .property("title", string())
            .required("title")
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(400))
                    .maximum(Some(599)),
            )
            .required("status")
            .property("detail", string())
            .required("detail")
            .property(
                "errors",
                ArrayBuilder::new().items(RefOr::Ref(Ref::from_schema_name(Problem::name()))),
            )
            .examples([serde_json::json!({
                "type": "/problems/validation-failed",
                "title": "The request has invalid fields",
                "status": 422,
                "detail": "phoneNumber: \"call me\" has no digits",
                "errors": [{ "pointer": "/phoneNumber", "detail": "phoneNumber: \"call me\" has no digits" }]
            })])
            .into()
    }
}

impl ToSchema for ProblemDetails {}
