//! A small JSON Schema checker for the subset of draft 2020-12 that `docs/schema/*.json` use.
//!
//! No JSON-schema crate fits the daemon's dependency budget (the maintained ones pull an HTTP
//! client and a regex engine for remote `$ref`s and `pattern`), so this interprets the keywords
//! the committed schemas use: `type` (one or a list), `properties`, `required`,
//! `additionalProperties: false`, `items`, `enum`, `const`, `minimum`, `maximum`, `minLength`,
//! `$ref` to `#/$defs/...`, and `format` `uuid` / `date-time` (shape only). Any other keyword
//! in a schema is an error, so a schema cannot silently rely on an unchecked rule.

use serde_json::Value;

/// Keywords this checker understands; the rest are annotations it ignores.
const CHECKED: [&str; 12] = [
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "minLength",
    "$ref",
    "format",
];
const ANNOTATIONS: [&str; 5] = ["$schema", "$id", "title", "description", "$defs"];

/// Checks `doc` against `schema`; every violation is one line `"<json pointer>: <what>"`.
pub fn validate(schema: &Value, doc: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    check(schema, schema, doc, "", &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check(root: &Value, schema: &Value, doc: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(rules) = schema.as_object() else {
        if schema != &Value::Bool(true) {
            errors.push(format!("{at}: schema is not an object"));
        }
        return;
    };
    for key in rules.keys() {
        if !CHECKED.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
            errors.push(format!("{at}: schema keyword {key:?} is not supported"));
        }
    }
    if let Some(reference) = rules.get("$ref").and_then(Value::as_str) {
        let target = reference
            .strip_prefix("#/$defs/")
            .and_then(|name| root.get("$defs")?.get(name));
        match target {
            Some(target) => check(root, target, doc, at, errors),
            None => errors.push(format!("{at}: unresolvable $ref {reference:?}")),
        }
    }
    if let Some(types) = rules.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !allowed.iter().any(|t| type_matches(t, doc)) {
            errors.push(format!(
                "{at}: is {}, expected {}",
                type_name(doc),
                allowed.join(" or ")
            ));
            return;
        }
    }
    if let Some(options) = rules.get("enum").and_then(Value::as_array)
        && !options.contains(doc)
    {
        errors.push(format!(
            "{at}: {doc} is not one of {}",
            Value::Array(options.clone())
        ));
    }
    if let Some(expected) = rules.get("const")
        && expected != doc
    {
        errors.push(format!("{at}: {doc} is not {expected}"));
    }
    if let Some(n) = doc.as_f64() {
        if let Some(min) = rules.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            errors.push(format!("{at}: {n} is below the minimum {min}"));
        }
        if let Some(max) = rules.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            errors.push(format!("{at}: {n} is above the maximum {max}"));
        }
    }
    if let Some(s) = doc.as_str() {
        if let Some(min) = rules.get("minLength").and_then(Value::as_u64)
            && (s.chars().count() as u64) < min
        {
            errors.push(format!("{at}: {s:?} is shorter than {min}"));
        }
        match rules.get("format").and_then(Value::as_str) {
            Some("uuid") if !is_uuid(s) => errors.push(format!("{at}: {s:?} is not a UUID")),
            Some("date-time") if !is_date_time(s) => {
                errors.push(format!("{at}: {s:?} is not an RFC 3339 date-time"))
            }
            _ => {}
        }
    }
    if let Some(object) = doc.as_object() {
        let properties = rules.get("properties").and_then(Value::as_object);
        for name in rules
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                errors.push(format!("{at}: required property {name:?} is missing"));
            }
        }
        for (name, value) in object {
            let here = format!("{at}/{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check(root, sub, value, &here, errors),
                None => match rules.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{at}: property {name:?} is not allowed"))
                    }
                    Some(sub @ Value::Object(_)) => check(root, sub, value, &here, errors),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (rules.get("items"), doc.as_array()) {
        for (i, value) in array.iter().enumerate() {
            check(root, items, value, &format!("{at}/{i}"), errors);
        }
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_u64() || v.is_i64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, shape only.
fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if !(b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || rest == "z"
        || (rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_supported_keyword_can_fail() {
        let schema = json!({
            "$defs": {"pos": {"type": "number", "minimum": 0, "maximum": 1}},
            "type": "object",
            "required": ["a", "id"],
            "additionalProperties": false,
            "properties": {
                "a": {"$ref": "#/$defs/pos"},
                "b": {"type": ["string", "null"], "enum": ["x", null], "minLength": 1},
                "c": {"type": "array", "items": {"type": "integer"}},
                "k": {"const": "v1"},
                "id": {"type": "string", "format": "uuid"},
                "t": {"type": "string", "format": "date-time"}
            }
        });
        let good = json!({"a": 0.5, "b": null, "c": [1, 2], "k": "v1",
            "id": "01890a5d-ac96-774b-bcce-b302099a8057", "t": "2026-12-01T03:40:45.123Z"});
        assert_eq!(validate(&schema, &good), Ok(()));
        let bad = json!({"a": 1.5, "b": "y", "c": [1, "2"], "k": "v2", "id": "nope",
            "t": "yesterday", "z": 1});
        let errors = validate(&schema, &bad).unwrap_err();
        for expected in [
            "/a: 1.5 is above the maximum",
            "/b: \"y\" is not one of",
            "/c/1: is string, expected integer",
            "/k: \"v2\" is not",
            "/id: \"nope\" is not a UUID",
            "/t: \"yesterday\" is not an RFC 3339",
            "property \"z\" is not allowed",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{expected}: {errors:?}"
            );
        }
        let errors = validate(&schema, &json!({"a": -1})).unwrap_err();
        assert!(
            errors.iter().any(|e| e.contains("\"id\" is missing")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("below the minimum")),
            "{errors:?}"
        );
    }

    #[test]
    fn unsupported_keywords_are_refused() {
        let schema = json!({"type": "string", "pattern": "^a"});
        let errors = validate(&schema, &json!("b")).unwrap_err();
        assert!(
            errors[0].contains("\"pattern\" is not supported"),
            "{errors:?}"
        );
    }
}
