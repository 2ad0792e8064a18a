//! The OpenAPI 3.1 document of the REST face, generated from the same two things the
//! routes are made of: [`crate::rest::ROUTES`] and the `maas.v1` descriptors. Paths,
//! methods, parameters and bodies come from the route table; schemas from the messages,
//! field by field, as the proto3 JSON mapping writes them (proto field names, enums by
//! name, 64-bit integers as numbers). maasd serves it at `/v1/openapi.json`.

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::rest::{Call, ROUTES, Reply, message, path_params};

/// The document.
pub fn document() -> Value {
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let op = operation(route, &mut schemas);
        let entry = paths.entry(route.path.to_string()).or_insert_with(|| json!({}));
        if let Value::Object(methods) = entry {
            methods.insert(route.method.to_ascii_lowercase(), op);
        }
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "status", "message", "details"],
                "properties": {
                    "code": {"type": "integer", "description": "The HTTP status code."},
                    "status": {"type": "string", "description": "The gRPC status code's name (FAILED_PRECONDITION)."},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "description": "A refused submission's Rejection, with \"@type\" type.googleapis.com/maas.v1.Rejection.",
                        "items": {"type": "object"}
                    }
                }
            }}
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "maas",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "maas.v1 over HTTPS + JSON: the same service as gRPC, the same mTLS identity and policy, the same errors."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {"Error": {
                "description": "The call failed: the status, and for a refused submission every conflict and problem.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            }}
        }
    })
}

fn operation(route: &crate::rest::Route, schemas: &mut BTreeMap<String, Value>) -> Value {
    let in_path = path_params(route.path);
    let mut parameters: Vec<Value> = in_path
        .iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    let (id, request, ok) = match route.call {
        Call::Unary(rpc) => {
            let response = message(rpc.response());
            let body = match route.reply {
                Reply::Message => schema_ref(&response, schemas),
                Reply::Field(f) => {
                    let field = response.get_field_by_name(f).map(|d| field_schema(&d, schemas)).unwrap_or(json!({}));
                    json!({"type": "object", "required": [f], "properties": {f: field}})
                }
            };
            let id = match route.reply {
                Reply::Message => format!("{rpc:?}"),
                Reply::Field(f) => format!("{rpc:?}_{f}"),
            };
            (id, Some(message(rpc.request())), json!({"application/json": {"schema": body}}))
        }
        Call::Events => {
            parameters.push(json!({
                "name": "Last-Event-ID", "in": "header", "required": false,
                "description": "Resume after this event sequence number (EventSource sends it when it reconnects).",
                "schema": {"type": "integer", "minimum": 0}
            }));
            let event = message("Event");
            let described = format!(
                "Server-sent events: `id` is the event's seq, `event` its kind, `data` a {} as JSON. A stream that fails ends with an `error` event holding an Error.",
                event.full_name()
            );
            schema_ref(&event, schemas);
            let id = if in_path.is_empty() { "WatchAll" } else { "WatchBatch" };
            (
                id.to_string(),
                Some(message("WatchBatchRequest")),
                json!({"text/event-stream": {"schema": {"type": "string", "description": described}}}),
            )
        }
        Call::OpenApi => ("OpenApi".into(), None, json!({"application/json": {"schema": {"type": "object"}}})),
    };
    let mut op = json!({
        "operationId": id,
        "summary": route.summary,
        "responses": {
            "200": {"description": "OK", "content": ok},
            "default": {"$ref": "#/components/responses/Error"}
        }
    });
    if let Some(request) = request {
        if route.body {
            op["requestBody"] = json!({
                "required": false,
                "content": {"application/json": {"schema": schema_ref(&request, schemas)}}
            });
        } else {
            for f in request.fields().filter(|f| !in_path.contains(&f.name())) {
                let schema = field_schema(&f, schemas);
                let mut p = json!({"name": f.name(), "in": "query", "required": false, "schema": schema});
                if f.is_list() {
                    p["explode"] = json!(true);
                    p["description"] = json!("Repeat the parameter for several values.");
                }
                parameters.push(p);
            }
        }
    }
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    op
}

/// A `$ref` to the message's schema, adding it (and every message it holds) to `schemas`.
fn schema_ref(desc: &MessageDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    let name = desc.name().to_string();
    if !schemas.contains_key(&name) {
        // A placeholder first: messages may hold themselves.
        schemas.insert(name.clone(), json!({}));
        let mut properties = Map::new();
        for f in desc.fields() {
            properties.insert(f.name().to_string(), field_schema(&f, schemas));
        }
        let mut schema = json!({"type": "object", "properties": properties, "additionalProperties": false});
        let oneofs: Vec<Vec<String>> = desc
            .oneofs()
            .filter(|o| !o.is_synthetic())
            .map(|o| o.fields().map(|f| f.name().to_string()).collect())
            .collect();
        if !oneofs.is_empty() {
            schema["description"] = json!(format!(
                "At most one of each group: {}.",
                oneofs.iter().map(|g| g.join(" | ")).collect::<Vec<_>>().join("; ")
            ));
        }
        schemas.insert(name.clone(), schema);
    }
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn field_schema(f: &FieldDescriptor, schemas: &mut BTreeMap<String, Value>) -> Value {
    if let (true, Kind::Message(entry)) = (f.is_map(), f.kind()) {
        let value = entry.map_entry_value_field();
        return json!({"type": "object", "additionalProperties": kind_schema(&value.kind(), schemas)});
    }
    let item = kind_schema(&f.kind(), schemas);
    if f.is_list() { json!({"type": "array", "items": item}) } else { item }
}

fn kind_schema(kind: &Kind, schemas: &mut BTreeMap<String, Value>) -> Value {
    match kind {
        Kind::String => json!({"type": "string"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "integer", "format": "int64"}),
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        Kind::Float => json!({"type": "number", "format": "float"}),
        Kind::Double => json!({"type": "number", "format": "double"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Enum(e) => {
            let names: Vec<Value> = e.values().map(|v| Value::String(v.name().to_string())).collect();
            json!({"type": "string", "enum": names})
        }
        Kind::Message(m) => schema_ref(m, schemas),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_and_every_path_is_a_route() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for r in ROUTES {
            assert!(paths[r.path].get(r.method.to_ascii_lowercase()).is_some(), "{} {} missing", r.method, r.path);
        }
        let documented: usize = paths.values().map(|m| m.as_object().unwrap().len()).sum();
        assert_eq!(documented, ROUTES.len());
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for (i, _) in text.match_indices("#/components/schemas/") {
            let rest = &text[i + "#/components/schemas/".len()..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name} is referenced but not defined");
        }
        let submit = &doc["components"]["schemas"]["SubmitBatchRequest"];
        assert_eq!(submit["properties"]["priority"]["enum"][3], json!("PRIORITY_HIGH"));
    }
}
