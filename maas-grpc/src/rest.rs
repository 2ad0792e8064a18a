//! `maas.v1` as HTTPS + JSON: every read and write of the gRPC service as a resource
//! (`/v1/batches`, `/v1/batches/{batch_id}:cancel`, ...), transcoded, not reimplemented.
//!
//! A route names a method of the `Maas` service. The request message is assembled from the
//! path, the query string and the JSON body, checked against the proto's descriptor (an
//! unknown field, a wrong type or malformed JSON is a 400 naming it), and handed to the
//! same [`MaasService`] method the gRPC server calls, with the caller's principal already
//! established ([`Caller`]). The answer is the same message in the proto3 JSON mapping,
//! with the proto's field names and 64-bit integers as numbers. Errors are the gRPC status,
//! as `{"error": {"code", "status", "message", "details"}}` with an HTTP code that fits
//! (a refused overlap is 409 with the conflicting hosts and batches in its `Rejection`).
//! `GET /v1/batches/{batch_id}/events` streams a batch's events as server-sent events.
//!
//! [`ROUTES`] is the one list: the dispatcher matches it and [`crate::openapi`] describes
//! it, so the OpenAPI document cannot name a route that does not exist or miss one.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use maas_core::authz::Principal;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value, json};
use tonic::{Code, Request, Status};

use crate::pb;
use crate::pb::maas_server::Maas;
use crate::service::{Caller, MaasService};

/// How much of an oversized body is read (and discarded) before it is refused, in limits.
const DRAIN_FACTOR: usize = 4;

/// The proto package the routes' messages live in.
pub(crate) const PACKAGE: &str = "maas.v1";

/// What a route calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A unary method of the service.
    Unary(Rpc),
    /// `WatchBatch`, as server-sent events.
    Events,
    /// The OpenAPI document.
    OpenApi,
}

/// What a route answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The method's response message.
    Message,
    /// One repeated field of it, as `{"field": [...]}`.
    Field(&'static str),
}

/// One resource method.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    /// `GET`, `POST` or `PUT`.
    pub method: &'static str,
    /// The path template: literal segments and `{field}` parameters, a parameter
    /// possibly followed by `:verb` (`/v1/batches/{batch_id}:cancel`).
    pub path: &'static str,
    /// What it calls.
    pub call: Call,
    /// What it answers with.
    pub reply: Reply,
    /// Whether the request's fields come from a JSON body (else from the query string).
    pub body: bool,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
}

macro_rules! rpcs {
    ($($rpc:ident => $method:ident($req:ident) -> $resp:ident;)*) => {
        /// The unary methods of `maas.v1.Maas` the routes call.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Rpc { $($rpc,)* }

        impl Rpc {
            /// The request message's name in the package.
            pub(crate) fn request(self) -> &'static str {
                match self { $(Rpc::$rpc => stringify!($req),)* }
            }

            /// The response message's name in the package.
            pub(crate) fn response(self) -> &'static str {
                match self { $(Rpc::$rpc => stringify!($resp),)* }
            }

            /// Calls the method as `caller` with an encoded request; answers the encoded
            /// response.
            async fn call(self, service: &MaasService, caller: Principal, request: &[u8]) -> Result<Vec<u8>, Status> {
                match self {
                    $(Rpc::$rpc => {
                        let message = pb::$req::decode(request).map_err(|e| Status::invalid_argument(e.to_string()))?;
                        let mut request = Request::new(message);
                        request.extensions_mut().insert(Caller(caller));
                        Ok(Maas::$method(service, request).await?.into_inner().encode_to_vec())
                    })*
                }
            }
        }
    };
}

rpcs! {
    SubmitBatch => submit_batch(SubmitBatchRequest) -> SubmitBatchResponse;
    GetBatch => get_batch(GetBatchRequest) -> Batch;
    ListBatches => list_batches(ListBatchesRequest) -> ListBatchesResponse;
    CancelBatch => cancel_batch(CancelBatchRequest) -> Batch;
    PauseBatch => pause_batch(BatchRef) -> Batch;
    ResumeBatch => resume_batch(BatchRef) -> Batch;
    ReportInstallResult => report_install_result(ReportInstallResultRequest) -> ReportInstallResultResponse;
    BatchStats => batch_stats(BatchStatsRequest) -> BatchStatsResponse;
    ActiveCounts => active_counts(ActiveCountsRequest) -> ActiveCountsResponse;
    ListTickets => list_tickets(ListTicketsRequest) -> ListTicketsResponse;
    ImportHosts => import_hosts(ImportHostsRequest) -> ImportHostsResponse;
    ListHosts => list_hosts(ListHostsRequest) -> ListHostsResponse;
    SetHostState => set_host_state(SetHostStateRequest) -> SetHostStateResponse;
    GetPoolKinds => get_pool_kinds(PoolRef) -> PoolKinds;
    SetPoolKinds => set_pool_kinds(PoolKinds) -> PoolKinds;
    ListImages => list_images(ListImagesRequest) -> ListImagesResponse;
    ListAudit => list_audit(ListAuditRequest) -> ListAuditResponse;
}

const fn route(method: &'static str, path: &'static str, rpc: Rpc, body: bool, summary: &'static str) -> Route {
    Route { method, path, call: Call::Unary(rpc), reply: Reply::Message, body, summary }
}

/// A `GET` route that is not a unary method (an event stream, the OpenAPI document).
const fn get(path: &'static str, call: Call, summary: &'static str) -> Route {
    Route { method: "GET", path, call, reply: Reply::Message, body: false, summary }
}

/// Every route, in the order the OpenAPI document lists them.
pub(crate) const ROUTES: &[Route] = &[
    route("POST", "/v1/batches", Rpc::SubmitBatch, true, "Submit a batch (or check one: dry_run)"),
    route("GET", "/v1/batches", Rpc::ListBatches, false, "List batches, newest first"),
    route("GET", "/v1/batches/{batch_id}", Rpc::GetBatch, false, "A batch with every host's status"),
    Route {
        method: "GET",
        path: "/v1/batches/{batch_id}/hosts",
        call: Call::Unary(Rpc::GetBatch),
        reply: Reply::Field("hosts"),
        body: false,
        summary: "A batch's hosts, with their current step (steps=true: every step)",
    },
    route("POST", "/v1/batches/{batch_id}:cancel", Rpc::CancelBatch, true, "Cancel a batch"),
    route("POST", "/v1/batches/{batch_id}:pause", Rpc::PauseBatch, true, "Pause a batch"),
    route("POST", "/v1/batches/{batch_id}:resume", Rpc::ResumeBatch, true, "Resume a paused batch"),
    get(
        "/v1/batches/{batch_id}/events",
        Call::Events,
        "A batch's events as server-sent events (Last-Event-ID resumes)",
    ),
    get("/v1/events", Call::Events, "Every readable batch's events as server-sent events"),
    route("POST", "/v1/install-results", Rpc::ReportInstallResult, true, "An installer reports (by its token)"),
    route("GET", "/v1/stats", Rpc::BatchStats, false, "Success rates, durations and rollups"),
    route("GET", "/v1/active", Rpc::ActiveCounts, false, "Active operations per site"),
    route("GET", "/v1/tickets", Rpc::ListTickets, false, "Tickets raised for failures"),
    route("GET", "/v1/hosts", Rpc::ListHosts, false, "The inventory"),
    route("POST", "/v1/hosts:import", Rpc::ImportHosts, true, "Import host records (all or none)"),
    route("POST", "/v1/hosts/{hostname}:setState", Rpc::SetHostState, true, "Set a host's state"),
    route("GET", "/v1/pools/{pool}/kinds", Rpc::GetPoolKinds, false, "The step kinds a pool's workers run"),
    route("PUT", "/v1/pools/{pool}/kinds", Rpc::SetPoolKinds, true, "Set the step kinds a pool's workers run"),
    route("GET", "/v1/images", Rpc::ListImages, false, "The images the boot service serves"),
    route("GET", "/v1/audit", Rpc::ListAudit, false, "The audit log, newest first"),
    get("/v1/openapi.json", Call::OpenApi, "This API's OpenAPI 3.1 document"),
];

/// The `maas.v1` descriptors, decoded once.
pub(crate) fn descriptors() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The set is built into the binary by build.rs from the same proto: it decodes.
        DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the built-in maas.v1 descriptor set decodes")
    })
}

/// The descriptor of message `name` of the package.
pub(crate) fn message(name: &str) -> MessageDescriptor {
    let full = format!("{PACKAGE}.{name}");
    // Every name the route table uses is generated from the proto's own types (`rpcs!`).
    descriptors().get_message_by_name(&full).unwrap_or_else(|| panic!("{full} is not in the descriptor set"))
}

/// The parameters a path template names, in order.
pub(crate) fn path_params(template: &str) -> Vec<&str> {
    template
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.split_once('}')).map(|(n, _)| n))
        .collect()
}

/// Matches `path` against `template`: the parameters' values (percent-decoded), or `None`.
fn match_path(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let (want, got): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    if want.len() != got.len() {
        return None;
    }
    let mut params = Vec::new();
    for (w, g) in want.iter().zip(&got) {
        match w.strip_prefix('{').and_then(|s| s.split_once('}')) {
            Some((name, suffix)) => {
                let value = if suffix.is_empty() {
                    // A plain parameter never holds a `:verb` (that is another route).
                    (!g.contains(':')).then_some(*g)?
                } else {
                    g.strip_suffix(suffix)?
                };
                let value = percent_encoding::percent_decode_str(value).decode_utf8().ok()?;
                if value.is_empty() {
                    return None;
                }
                params.push((name.to_string(), value.into_owned()));
            }
            None if w == g => {}
            None => return None,
        }
    }
    Some(params)
}

/// What the route table says about a method and a path.
enum Matched {
    Route(&'static Route, Vec<(String, String)>),
    /// The path exists, with these methods.
    WrongMethod(Vec<&'static str>),
    NotFound,
}

fn find(method: &Method, path: &str) -> Matched {
    let mut allowed = Vec::new();
    for r in ROUTES {
        if let Some(params) = match_path(r.path, path) {
            if r.method == method.as_str() {
                return Matched::Route(r, params);
            }
            allowed.push(r.method);
        }
    }
    if allowed.is_empty() { Matched::NotFound } else { Matched::WrongMethod(allowed) }
}

/// The REST face of a service.
#[derive(Clone)]
pub struct Rest {
    service: MaasService,
    max_body: usize,
    openapi: axum::body::Bytes,
}

impl Rest {
    /// The routes over `service`; bodies over `max_body` bytes are refused (413).
    pub fn new(service: MaasService, max_body: usize) -> Self {
        let doc = crate::openapi::document();
        Rest { service, max_body, openapi: serde_json::to_vec_pretty(&doc).unwrap_or_default().into() }
    }

    /// The service the routes call.
    pub fn service(&self) -> &MaasService {
        &self.service
    }

    /// Answers one request under `/v1/`. `caller` is who presented the connection's
    /// client certificate, or why none is accepted.
    pub async fn handle(&self, request: axum::extract::Request, caller: Result<Principal, Status>) -> Response {
        let (parts, body) = request.into_parts();
        let (route, params) = match find(&parts.method, parts.uri.path()) {
            Matched::Route(r, p) => (r, p),
            Matched::WrongMethod(allowed) => {
                let mut r = problem(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "UNIMPLEMENTED",
                    &format!("{} {} is not a route; allowed: {}", parts.method, parts.uri.path(), allowed.join(", ")),
                );
                if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
                return r;
            }
            Matched::NotFound => {
                return problem(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    &format!("no route {} (GET /v1/openapi.json lists them)", parts.uri.path()),
                );
            }
        };
        // The install callback is authenticated by its token; everything else by the caller.
        let caller = match (route.call, caller) {
            (_, Ok(p)) => p,
            (Call::Unary(Rpc::ReportInstallResult), Err(_)) => Principal::new("installer", Vec::new()),
            (_, Err(status)) => return error(&status),
        };
        let body = if route.body {
            match read_body(body, &parts.headers, self.max_body).await {
                Ok(b) => b,
                Err(r) => return *r,
            }
        } else {
            Map::new()
        };
        let query = parts.uri.query().unwrap_or("");
        match route.call {
            Call::Unary(rpc) => {
                let result = async {
                    let request = assemble(&message(rpc.request()), &params, query, body)?;
                    let reply = rpc.call(&self.service, caller, &request).await?;
                    to_json(&message(rpc.response()), &reply)
                }
                .await;
                match (result, route.reply) {
                    (Ok(v), Reply::Message) => axum::Json(v).into_response(),
                    (Ok(mut v), Reply::Field(f)) => {
                        axum::Json(json!({ f: v.get_mut(f).map(Value::take).unwrap_or(json!([])) })).into_response()
                    }
                    (Err(status), _) => error(&status),
                }
            }
            Call::Events => self.events(caller, &params, query, &parts.headers).await,
            Call::OpenApi => ([(header::CONTENT_TYPE, "application/json")], self.openapi.clone()).into_response(),
        }
    }

    async fn events(
        &self,
        caller: Principal,
        params: &[(String, String)],
        query: &str,
        headers: &HeaderMap,
    ) -> Response {
        let request = match assemble(&message("WatchBatchRequest"), params, query, Map::new()) {
            Ok(r) => r,
            Err(status) => return error(&status),
        };
        let mut watch = match pb::WatchBatchRequest::decode(request.as_slice()) {
            Ok(w) => w,
            Err(e) => return error(&Status::invalid_argument(e.to_string())),
        };
        // A reconnecting EventSource says where it stopped.
        if let Some(last) = headers.get("last-event-id") {
            match last.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
                Some(seq) => watch.after = watch.after.max(seq),
                None => return error(&Status::invalid_argument("Last-Event-ID: not an event sequence number")),
            }
        }
        let mut request = Request::new(watch);
        request.extensions_mut().insert(Caller(caller));
        let stream = match Maas::watch_batch(&self.service, request).await {
            Ok(s) => s.into_inner(),
            Err(status) => return error(&status),
        };
        let events = message("Event");
        // An error ends the stream after an `error` event saying why.
        let stream = stream
            .scan(false, move |ended, item| {
                let out = match (*ended, item) {
                    (true, _) => None,
                    (false, Ok(e)) => {
                        let data = to_json(&events, &e.encode_to_vec()).unwrap_or(Value::Null);
                        Some(SseEvent::default().id(e.seq.to_string()).event(e.kind.clone()).data(data.to_string()))
                    }
                    (false, Err(status)) => {
                        *ended = true;
                        Some(SseEvent::default().event("error").data(error_body(&status).to_string()))
                    }
                };
                futures::future::ready(out)
            })
            .map(Ok::<_, Infallible>);
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
    }
}

/// The JSON object of a request body, or the response refusing it.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Map<String, Value>, Box<Response>> {
    let refuse = |code: StatusCode, status: &str, message: String| Box::new(problem(code, status, &message));
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "OUT_OF_RANGE",
            format!("the request body is over maasd's limit of {limit} bytes (limits.max_message_bytes)"),
        )
    };
    // A body over the limit is read to its end (discarded) before the refusal, up to
    // DRAIN_FACTOR times the limit: HTTP/2 clients such as curl report a response sent
    // before their upload ended as a stream error, and drop it. Beyond that, or when the
    // declared length is beyond it, the refusal goes at once.
    let drain = limit.saturating_mul(DRAIN_FACTOR);
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > drain as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| refuse(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", format!("reading the body: {e}")))?;
        seen = seen.saturating_add(chunk.len());
        if seen > drain {
            break;
        }
        if seen <= limit {
            bytes.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "INVALID_ARGUMENT",
            format!(
                "the body must be JSON (Content-Type: application/json), not {:?}",
                if content_type.is_empty() { "none" } else { content_type }
            ),
        ));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            format!("the body must be a JSON object, not {}", json_kind(&other)),
        )),
        Err(e) => Err(refuse(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", format!("malformed JSON body: {e}"))),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The encoded request message from the path parameters, the query string and the body,
/// checked against `desc`: unknown fields and wrong types are `INVALID_ARGUMENT` naming
/// them.
pub(crate) fn assemble(
    desc: &MessageDescriptor,
    params: &[(String, String)],
    query: &str,
    mut body: Map<String, Value>,
) -> Result<Vec<u8>, Status> {
    let mut from_query: Map<String, Value> = Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let field = desc.get_field_by_name(&key).or_else(|| desc.get_field_by_json_name(&key)).ok_or_else(|| {
            let known: Vec<String> = desc.fields().map(|f| f.name().to_string()).collect();
            Status::invalid_argument(format!(
                "unknown query parameter {key:?} (known: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        })?;
        let v = scalar(&field.kind(), &value)
            .map_err(|why| Status::invalid_argument(format!("query parameter {}: {value:?} is {why}", field.name())))?;
        if field.is_list() {
            let slot = from_query.entry(field.name().to_string()).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = slot {
                items.push(v);
            }
        } else if from_query.insert(field.name().to_string(), v).is_some() {
            return Err(Status::invalid_argument(format!("query parameter {} is given twice", field.name())));
        }
    }
    for (k, v) in from_query {
        if body.insert(k.clone(), v).is_some() {
            return Err(Status::invalid_argument(format!("{k} is given both in the query and in the body")));
        }
    }
    for (name, value) in params {
        match body.insert(name.clone(), Value::String(value.clone())) {
            Some(Value::String(b)) if &b != value => {
                return Err(Status::invalid_argument(format!("{name}: the body says {b:?}, the path {value:?}")));
            }
            _ => {}
        }
    }
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let message = DynamicMessage::deserialize_with_options(desc.clone(), Value::Object(body), &options)
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", desc.name())))?;
    Ok(message.encode_to_vec())
}

/// A query value as the JSON the field's kind takes, or what is wrong with it.
fn scalar(kind: &Kind, text: &str) -> Result<Value, &'static str> {
    Ok(match kind {
        Kind::String | Kind::Enum(_) => Value::String(text.to_string()),
        Kind::Bool => match text {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => return Err("not a boolean (true or false)"),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::from(text.parse::<i64>().map_err(|_| "not an integer")?)
        }
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => {
            Value::from(text.parse::<u64>().map_err(|_| "not a non-negative integer")?)
        }
        Kind::Float | Kind::Double => Value::from(text.parse::<f64>().map_err(|_| "not a number")?),
        Kind::Bytes => return Err("bytes, which the query cannot carry"),
        Kind::Message(_) => return Err("a message, which the query cannot carry (send a JSON body)"),
    })
}

/// An encoded message of type `desc` as JSON: the proto's field names, every field
/// (defaults included), 64-bit integers as numbers.
pub(crate) fn to_json(desc: &MessageDescriptor, encoded: &[u8]) -> Result<Value, Status> {
    let message = DynamicMessage::decode(desc.clone(), encoded).map_err(|e| Status::internal(e.to_string()))?;
    let options =
        SerializeOptions::new().use_proto_field_name(true).skip_default_fields(false).stringify_64_bit_integers(false);
    message.serialize_with_options(serde_json::value::Serializer, &options).map_err(|e| Status::internal(e.to_string()))
}

/// The HTTP status a gRPC code answers with.
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        // A refused overlap, an illegal transition, a reused idempotency key.
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC code's canonical name (`FAILED_PRECONDITION`).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A status as the error document: the gRPC code's name, the HTTP code, the message, and
/// a refusal's `Rejection` (the same as gRPC's details) under `details`.
pub(crate) fn error_body(status: &Status) -> Value {
    let details: Vec<Value> = crate::status::rejection_of(status)
        .and_then(|r| to_json(&message("Rejection"), &r.encode_to_vec()).ok())
        .map(|mut v| {
            if let Value::Object(m) = &mut v {
                m.insert("@type".into(), Value::String(crate::status::REJECTION_TYPE_URL.into()));
            }
            vec![v]
        })
        .unwrap_or_default();
    json!({"error": {
        "code": http_status(status.code()).as_u16(),
        "status": code_name(status.code()),
        "message": status.message(),
        "details": details,
    }})
}

/// The response for a failed call.
pub(crate) fn error(status: &Status) -> Response {
    (http_status(status.code()), axum::Json(error_body(status))).into_response()
}

fn problem(code: StatusCode, status: &str, message: &str) -> Response {
    (code, axum::Json(json!({"error": {"code": code.as_u16(), "status": status, "message": message, "details": []}})))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_verbs_and_parameters() {
        let id = "0190a3a1-0000-7000-8000-000000000001";
        let Matched::Route(r, p) = find(&Method::POST, &format!("/v1/batches/{id}:cancel")) else { panic!() };
        assert_eq!((r.path, p), ("/v1/batches/{batch_id}:cancel", vec![("batch_id".into(), id.into())]));
        let Matched::Route(r, _) = find(&Method::GET, &format!("/v1/batches/{id}")) else { panic!() };
        assert_eq!(r.call, Call::Unary(Rpc::GetBatch));
        assert!(
            matches!(find(&Method::GET, &format!("/v1/batches/{id}:cancel")), Matched::WrongMethod(m) if m == ["POST"])
        );
        assert!(matches!(find(&Method::DELETE, "/v1/batches"), Matched::WrongMethod(_)));
        assert!(matches!(find(&Method::GET, "/v1/nothing"), Matched::NotFound));
        assert!(matches!(find(&Method::POST, "/v1/batches/:cancel"), Matched::NotFound));
        let Matched::Route(_, p) = find(&Method::POST, "/v1/hosts/web%2D1.dc1:setState") else { panic!() };
        assert_eq!(p, vec![("hostname".into(), "web-1.dc1".into())]);
    }

    #[test]
    fn every_route_names_messages_that_exist_and_fields_its_path_names() {
        for r in ROUTES {
            let Call::Unary(rpc) = r.call else { continue };
            let (req, _) = (message(rpc.request()), message(rpc.response()));
            for p in path_params(r.path) {
                assert!(req.get_field_by_name(p).is_some(), "{}: {p} is not a field of {}", r.path, req.name());
            }
        }
    }

    #[test]
    fn requests_are_assembled_and_checked_against_the_proto() {
        let desc = message("ListBatchesRequest");
        let bytes =
            assemble(&desc, &[], "states=running&states=paused&limit=5&created_from_ms=12", Map::new()).unwrap();
        let r = pb::ListBatchesRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!((r.states, r.limit, r.created_from_ms), (vec!["running".into(), "paused".into()], 5, Some(12)));
        let e = assemble(&desc, &[], "limitt=5", Map::new()).unwrap_err();
        assert!(e.message().contains("unknown query parameter \"limitt\""), "{}", e.message());
        let e = assemble(&desc, &[], "limit=five", Map::new()).unwrap_err();
        assert!(e.message().contains("limit: \"five\" is not a non-negative integer"), "{}", e.message());
        let body = json!({"hosts": "web1.dc1", "action": {"reboot": {}}, "priority": "PRIORITY_HIGH", "bogus": 1});
        let Value::Object(body) = body else { unreachable!() };
        let e = assemble(&message("SubmitBatchRequest"), &[], "", body).unwrap_err();
        assert!(e.message().contains("bogus"), "{}", e.message());
        let body = json!({"hosts": 5});
        let Value::Object(body) = body else { unreachable!() };
        let e = assemble(&message("SubmitBatchRequest"), &[], "", body).unwrap_err();
        assert!(e.message().contains("SubmitBatchRequest"), "{}", e.message());
    }

    #[test]
    fn answers_are_proto_json_with_field_names_and_numbers() {
        let b = pb::Batch { id: "x".into(), created_at_ms: 1_700_000_000_000, ..Default::default() };
        let v = to_json(&message("Batch"), &b.encode_to_vec()).unwrap();
        assert_eq!(v["created_at_ms"], json!(1_700_000_000_000_i64));
        assert_eq!(v["hosts"], json!([]));
        assert_eq!(v["id"], json!("x"));
    }
}
