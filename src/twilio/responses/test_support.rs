//! Helpers the unit tests of the fakes share: fixed sids and times, JSON
//! read back (keys in their written order), the two usual message
//! requests, and the check of a fake against Twilio's OpenAPI schema.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use regex::Regex;
use serde_json::Value;

use super::MessageRequest;

pub(super) const AC: &str = "AC0123456789abcdef0123456789abcdef";
pub(super) const MG: &str = "MG0123456789abcdef0123456789abcdef";
pub(super) const VA: &str = "VA0123456789abcdef0123456789abcdef";

pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(super) fn parse(bytes: &Bytes) -> serde_json::Map<String, Value> {
    match serde_json::from_slice::<Value>(bytes).expect("valid JSON") {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// Keys of a JSON object in the order they appear in the text.
pub(super) fn top_level_keys(text: &str) -> Vec<String> {
    // serde_json's Map is sorted unless preserve_order is on, so read the
    // order from the raw text instead.
    let mut keys = Vec::new();
    let mut depth = 0;
    let mut chars = text.char_indices().peekable();
    let mut expect_key = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '{' | '[' => {
                depth += 1;
                expect_key = depth == 1 && c == '{';
            }
            '}' | ']' => depth -= 1,
            ',' if depth == 1 => expect_key = true,
            '"' => {
                let start = i + 1;
                let mut end = start;
                while let Some((j, d)) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == '"' {
                        end = j;
                        break;
                    }
                }
                if expect_key && depth == 1 {
                    keys.push(text[start..end].to_string());
                    expect_key = false;
                }
            }
            _ => {}
        }
    }
    keys
}

pub(super) fn queued_request() -> MessageRequest<'static> {
    MessageRequest {
        account_sid: AC,
        to: "+15558675310",
        from: Some("+15017122661"),
        messaging_service_sid: None,
        body: Some("Your code is 123456"),
        num_media: 0,
    }
}

pub(super) fn accepted_request() -> MessageRequest<'static> {
    MessageRequest {
        account_sid: AC,
        to: "whatsapp:+15558675310",
        from: None,
        messaging_service_sid: Some(MG),
        body: Some("Hello! 👍"),
        num_media: 0,
    }
}

pub(super) fn contract_dir() -> PathBuf {
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/twilio-contract");
    if beside.is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared/twilio-contract")
    }
}

pub(super) fn load_spec(file: &str) -> Value {
    let path = contract_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("OpenAPI file is JSON")
}

/// Every schema property is present with the right type, enum value and
/// pattern, and the fake has no key the schema lacks.
pub(super) fn check_against_schema(spec: &Value, schema_name: &str, body: &Bytes) {
    let schemas = &spec["components"]["schemas"];
    let props = schemas[schema_name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {schema_name} has no properties"));
    let fake = parse(body);
    for key in fake.keys() {
        assert!(
            props.contains_key(key),
            "{schema_name}: fake has key {key} the schema lacks"
        );
    }
    for (name, prop) in props {
        let value = fake
            .get(name)
            .unwrap_or_else(|| panic!("{schema_name}: fake lacks {name}"));
        let prop = match prop.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let target = reference.trim_start_matches("#/components/schemas/");
                let resolved = &schemas[target];
                let allowed = resolved["enum"].as_array().expect("ref to an enum");
                assert!(
                    allowed.contains(value),
                    "{schema_name}.{name} = {value} not in {allowed:?}"
                );
                resolved
            }
            None => prop,
        };
        if value.is_null() {
            assert_eq!(
                prop.get("nullable"),
                Some(&Value::Bool(true)),
                "{schema_name}.{name} is null but not nullable"
            );
            continue;
        }
        if let Some(ty) = prop.get("type").and_then(Value::as_str) {
            let ok = match ty {
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                "object" => value.is_object(),
                "array" => value.is_array(),
                other => panic!("unknown schema type {other}"),
            };
            assert!(ok, "{schema_name}.{name} = {value} is not a {ty}");
        }
        if let Some(pattern) = prop.get("pattern").and_then(Value::as_str) {
            let s = value.as_str().expect("patterns apply to strings");
            assert!(
                Regex::new(pattern).unwrap().is_match(s),
                "{schema_name}.{name} = {s} does not match {pattern}"
            );
        }
        if let (Some(min), Some(s)) = (prop.get("minLength"), value.as_str()) {
            assert!(s.len() as u64 >= min.as_u64().unwrap());
        }
        if let (Some(max), Some(s)) = (prop.get("maxLength"), value.as_str()) {
            assert!(s.len() as u64 <= max.as_u64().unwrap());
        }
    }
}
