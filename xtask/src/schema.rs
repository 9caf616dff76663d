//! A JSON Schema validator for the subset the connectors' schemas use (what schemars emits for
//! serde types): `type`, `enum`, `const`, `properties`, `required`, `additionalProperties`,
//! `items`, `minimum`/`maximum` (and the exclusive ones), `minLength`/`maxLength`,
//! `minItems`/`maxItems`, `oneOf`/`anyOf`/`allOf`, `not` and local `$ref`s. Annotations (`title`,
//! `description`, `default`, `format`, ...) are ignored. Any other keyword is an error, so a
//! schema using something this validator does not know is never silently accepted.
//!
//! `cargo xtask deploy` checks every sample document against its connector's class with it, and
//! the tests check that a broken sample is refused.

use crate::json::Json;

/// Keywords that do not constrain a value.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Validates `value` against `schema`; the problems found, each naming where (a JSON pointer).
pub fn validate(schema: &Json, value: &Json) -> Vec<String> {
    let mut errors = Vec::new();
    Validator { root: schema }.check(schema, value, "", &mut errors, 0);
    errors
}

struct Validator<'a> {
    root: &'a Json,
}

impl Validator<'_> {
    fn check(&self, schema: &Json, value: &Json, at: &str, errors: &mut Vec<String>, depth: usize) {
        let here = if at.is_empty() { "/" } else { at };
        if depth > 64 {
            errors.push(format!("{here}: the schema nests too deep"));
            return;
        }
        let entries = match schema {
            Json::Bool(true) => return,
            Json::Bool(false) => {
                errors.push(format!("{here}: no value is allowed here"));
                return;
            }
            Json::Object(entries) => entries,
            _ => {
                errors.push(format!("{here}: the schema is not an object"));
                return;
            }
        };
        for (keyword, arg) in entries {
            match keyword.as_str() {
                "type" => self.check_type(arg, value, here, errors),
                "enum" => {
                    if !matches!(arg, Json::Array(options) if options.contains(value)) {
                        errors.push(format!(
                            "{here}: {} is not one of {}",
                            value.compact(),
                            arg.compact()
                        ));
                    }
                }
                "const" => {
                    if arg != value {
                        errors.push(format!(
                            "{here}: {} is not {}",
                            value.compact(),
                            arg.compact()
                        ));
                    }
                }
                "properties" => {
                    if let (Json::Object(props), Json::Object(fields)) = (arg, value) {
                        for (name, field) in fields {
                            if let Some((_, sub)) = props.iter().find(|(p, _)| p == name) {
                                self.check(sub, field, &format!("{at}/{name}"), errors, depth + 1);
                            }
                        }
                    }
                }
                "required" => {
                    if let (Json::Array(names), Json::Object(fields)) = (arg, value) {
                        for name in names.iter().filter_map(Json::as_str) {
                            if !fields.iter().any(|(k, _)| k == name) {
                                errors.push(format!(
                                    "{here}: the required field `{name}` is missing"
                                ));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Json::Object(fields) = value {
                        let props = schema.get("properties");
                        for (name, field) in fields {
                            if props.and_then(|p| p.get(name)).is_some() {
                                continue;
                            }
                            match arg {
                                Json::Bool(false) => {
                                    errors.push(format!("{at}/{name}: unknown field `{name}`"))
                                }
                                sub => self.check(
                                    sub,
                                    field,
                                    &format!("{at}/{name}"),
                                    errors,
                                    depth + 1,
                                ),
                            }
                        }
                    }
                }
                "items" => {
                    if let Json::Array(items) = value {
                        for (i, item) in items.iter().enumerate() {
                            self.check(arg, item, &format!("{at}/{i}"), errors, depth + 1);
                        }
                    }
                }
                "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                    if let (Some(limit), Some(n)) = (arg.as_f64(), value.as_f64()) {
                        let ok = match keyword.as_str() {
                            "minimum" => n >= limit,
                            "maximum" => n <= limit,
                            "exclusiveMinimum" => n > limit,
                            _ => n < limit,
                        };
                        if !ok {
                            errors.push(format!("{here}: {n} breaks {keyword} {limit}"));
                        }
                    }
                }
                "minLength" | "maxLength" => {
                    if let (Some(limit), Some(s)) = (arg.as_f64(), value.as_str()) {
                        let len = s.chars().count() as f64;
                        if (keyword == "minLength" && len < limit)
                            || (keyword == "maxLength" && len > limit)
                        {
                            errors.push(format!(
                                "{here}: a length of {len} breaks {keyword} {limit}"
                            ));
                        }
                    }
                }
                "minItems" | "maxItems" => {
                    if let (Some(limit), Json::Array(items)) = (arg.as_f64(), value) {
                        let len = items.len() as f64;
                        if (keyword == "minItems" && len < limit)
                            || (keyword == "maxItems" && len > limit)
                        {
                            errors.push(format!("{here}: {len} items break {keyword} {limit}"));
                        }
                    }
                }
                "oneOf" | "anyOf" | "allOf" => {
                    let Json::Array(options) = arg else {
                        errors.push(format!("{here}: {keyword} is not an array"));
                        continue;
                    };
                    let results: Vec<Vec<String>> = options
                        .iter()
                        .map(|option| {
                            let mut found = Vec::new();
                            self.check(option, value, at, &mut found, depth + 1);
                            found
                        })
                        .collect();
                    let matching = results.iter().filter(|r| r.is_empty()).count();
                    match keyword.as_str() {
                        "allOf" => errors.extend(results.into_iter().flatten()),
                        "anyOf" if matching == 0 => errors.push(format!(
                            "{here}: {} matches none of anyOf ({})",
                            value.compact(),
                            results.into_iter().flatten().collect::<Vec<_>>().join("; ")
                        )),
                        "oneOf" if matching != 1 => errors.push(format!(
                            "{here}: {} matches {matching} of oneOf, not exactly one ({})",
                            value.compact(),
                            results.into_iter().flatten().collect::<Vec<_>>().join("; ")
                        )),
                        _ => {}
                    }
                }
                "not" => {
                    let mut found = Vec::new();
                    self.check(arg, value, at, &mut found, depth + 1);
                    if found.is_empty() {
                        errors.push(format!(
                            "{here}: {} matches a `not` schema",
                            value.compact()
                        ));
                    }
                }
                "$ref" => match arg.as_str().and_then(|r| self.resolve(r)) {
                    Some(target) => self.check(target, value, at, errors, depth + 1),
                    None => errors.push(format!("{here}: cannot resolve $ref {}", arg.compact())),
                },
                other if ANNOTATIONS.contains(&other) => {}
                other => errors.push(format!(
                    "{here}: the validator does not know the keyword `{other}`"
                )),
            }
        }
    }

    fn check_type(&self, arg: &Json, value: &Json, here: &str, errors: &mut Vec<String>) {
        let actual = value.type_name();
        let allowed: Vec<&str> = match arg {
            Json::String(name) => vec![name.as_str()],
            Json::Array(names) => names.iter().filter_map(Json::as_str).collect(),
            _ => Vec::new(),
        };
        let ok = allowed
            .iter()
            .any(|&t| t == actual || (t == "number" && actual == "integer"));
        if !ok {
            errors.push(format!(
                "{here}: expected {}, got {actual}",
                allowed.join(" or ")
            ));
        }
    }

    /// A local reference: `#`, `#/$defs/Name`, `#/definitions/Name` (any JSON pointer into the root).
    fn resolve(&self, reference: &str) -> Option<&Json> {
        let pointer = reference.strip_prefix('#')?;
        let mut node = self.root;
        for part in pointer.split('/').skip(1) {
            let part = part.replace("~1", "/").replace("~0", "~");
            node = node.get(&part)?;
        }
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Json {
        Json::parse(
            r##"{
              "type": "object",
              "additionalProperties": false,
              "required": ["path"],
              "properties": {
                "path": {"type": "string", "minLength": 1, "description": "the file"},
                "poll_interval_ms": {"type": "integer", "format": "uint64", "minimum": 1, "maximum": 60000},
                "ratio": {"type": ["number", "null"]},
                "start": {"oneOf": [{"type": "string", "const": "beginning"}, {"const": "end"}]},
                "mode": {"enum": ["a", "b"]},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                "node": {"$ref": "#/$defs/Node"}
              },
              "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}
            }"##,
        )
        .unwrap()
    }

    fn errors(value: &str) -> Vec<String> {
        validate(&schema(), &Json::parse(value).unwrap())
    }

    #[test]
    fn accepts_valid_documents() {
        for ok in [
            r#"{"path": "/x"}"#,
            r#"{"path": "/x", "poll_interval_ms": 200, "ratio": 0.5, "start": "end", "mode": "b"}"#,
            r#"{"path": "/x", "ratio": null, "tags": ["a"], "node": {"next": {"next": {}}}}"#,
        ] {
            assert_eq!(errors(ok), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn refuses_and_names_the_field() {
        for (bad, needle) in [
            (r#"{}"#, "required field `path`"),
            (r#"{"path": 1}"#, "/path: expected string"),
            (r#"{"path": ""}"#, "/path: a length of 0"),
            (
                r#"{"path": "/x", "colour": "red"}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"path": "/x", "poll_interval_ms": 0}"#,
                "/poll_interval_ms: 0 breaks minimum",
            ),
            (
                r#"{"path": "/x", "poll_interval_ms": 1.5}"#,
                "expected integer, got number",
            ),
            (
                r#"{"path": "/x", "start": "middle"}"#,
                "/start: \"middle\" matches 0 of oneOf",
            ),
            (r#"{"path": "/x", "mode": "c"}"#, "is not one of"),
            (
                r#"{"path": "/x", "tags": ["a", 2]}"#,
                "/tags/1: expected string",
            ),
            (
                r#"{"path": "/x", "tags": ["a", "b", "c"]}"#,
                "3 items break maxItems",
            ),
            (
                r#"{"path": "/x", "node": {"next": 1}}"#,
                "/node/next: expected object",
            ),
        ] {
            let found = errors(bad);
            assert!(found.iter().any(|e| e.contains(needle)), "{bad}: {found:?}");
        }
    }

    #[test]
    fn unknown_keywords_are_errors_not_silently_ignored() {
        let schema = Json::parse(r#"{"type": "string", "pattern": "^a"}"#).unwrap();
        let found = validate(&schema, &Json::str("b"));
        assert!(found.iter().any(|e| e.contains("`pattern`")), "{found:?}");
    }
}
