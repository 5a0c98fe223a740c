//! JSON Schemas from Python annotations, as the driver reports them (`int`, `list[int]`,
//! `typing.Optional[str]`, `dict[str, float]`, `str | None`, ...). What is not understood
//! becomes an unconstrained value: a schema must never refuse what the function accepts.

use serde_json::{Map, Value, json};

/// The schema of one annotation (`None`: no annotation).
pub fn of(annotation: Option<&str>) -> Value {
    match annotation {
        None => json!({}),
        Some(text) => parse(text.trim(), 0),
    }
}

/// Deepest nesting followed; deeper is unconstrained.
const MAX_DEPTH: usize = 8;

fn parse(text: &str, depth: usize) -> Value {
    if depth > MAX_DEPTH || text.len() > 200 {
        return json!({});
    }
    let text = text.strip_prefix("typing.").unwrap_or(text);
    // `X | Y` at the top level
    let alternatives = split_top(text, '|');
    if alternatives.len() > 1 {
        return union(
            alternatives
                .iter()
                .map(|a| parse(a.trim(), depth + 1))
                .collect(),
        );
    }
    let (head, inner) = match text.find('[') {
        Some(open) if text.ends_with(']') => (&text[..open], Some(&text[open + 1..text.len() - 1])),
        _ => (text, None),
    };
    let head = head.strip_prefix("typing.").unwrap_or(head);
    let items: Vec<&str> = inner.map(|i| split_top(i, ',')).unwrap_or_default();
    let item = |i: usize| {
        items
            .get(i)
            .map_or(json!({}), |t| parse(t.trim(), depth + 1))
    };
    match (head, inner) {
        ("int", None) => json!({"type": "integer"}),
        ("float", None) => json!({"type": "number"}),
        ("str", None) => json!({"type": "string"}),
        ("bool", None) => json!({"type": "boolean"}),
        ("None" | "NoneType", None) => json!({"type": "null"}),
        ("list" | "List" | "Sequence" | "set" | "Set" | "frozenset", _) => {
            let mut schema = json!({"type": "array"});
            if inner.is_some() {
                schema["items"] = item(0);
            }
            schema
        }
        ("tuple" | "Tuple", Some(_)) if items.len() == 2 && items[1].trim() == "..." => {
            json!({"type": "array", "items": item(0)})
        }
        ("tuple" | "Tuple", Some(_)) => json!({
            "type": "array",
            "prefixItems": (0..items.len()).map(item).collect::<Vec<_>>(),
            "minItems": items.len(),
            "maxItems": items.len(),
        }),
        ("tuple" | "Tuple", None) => json!({"type": "array"}),
        ("dict" | "Dict" | "Mapping", _) => {
            let mut schema = json!({"type": "object"});
            if items.len() == 2 {
                schema["additionalProperties"] = item(1);
            }
            schema
        }
        ("Optional", Some(_)) => union(vec![item(0), json!({"type": "null"})]),
        ("Union", Some(_)) => union((0..items.len()).map(item).collect()),
        _ => json!({}),
    }
}

/// `anyOf` of the alternatives, or unconstrained if any alternative is.
fn union(alternatives: Vec<Value>) -> Value {
    if alternatives
        .iter()
        .any(|a| a.as_object().is_some_and(Map::is_empty))
    {
        return json!({});
    }
    json!({ "anyOf": alternatives })
}

/// `text` split at `separator` outside brackets.
fn split_top(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            c if c == separator && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A function's input schema from the driver's description of its parameters
/// (`[{name, kind, annotation, default?}]`): an object with a property per parameter, the
/// ones without a default required; `**kwargs` allows other properties. `*args` cannot be
/// passed by name and is left out.
pub fn input(parameters: &[Value]) -> Map<String, Value> {
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut open = false;
    for p in parameters {
        let name = p["name"].as_str().unwrap_or("");
        match p["kind"].as_str() {
            Some("var_keyword") => {
                open = true;
                continue;
            }
            Some("var_positional") | Some("positional_only") | None => continue,
            _ => {}
        }
        let mut schema = of(p["annotation"].as_str());
        match p.get("default") {
            Some(default) => {
                if let Some(map) = schema.as_object_mut() {
                    map.insert("default".to_owned(), default.clone());
                }
            }
            None => required.push(json!(name)),
        }
        properties.insert(name.to_owned(), schema);
    }
    let mut schema = Map::new();
    schema.insert("type".to_owned(), json!("object"));
    schema.insert("properties".to_owned(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".to_owned(), Value::Array(required));
    }
    schema.insert("additionalProperties".to_owned(), json!(open));
    schema
}

/// The output schema for a return annotation: results are wrapped as `{"result": value}`
/// (structured content must be an object), so the schema describes that object. `None`
/// when the annotation says nothing.
pub fn output(returns: Option<&str>) -> Option<Map<String, Value>> {
    let schema = of(returns);
    if schema.as_object().is_some_and(Map::is_empty) {
        return None;
    }
    let mut out = Map::new();
    out.insert("type".to_owned(), json!("object"));
    out.insert("properties".to_owned(), json!({ "result": schema }));
    out.insert("required".to_owned(), json!(["result"]));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_map_to_schemas() {
        for (annotation, schema) in [
            (None, json!({})),
            (Some("int"), json!({"type": "integer"})),
            (Some("float"), json!({"type": "number"})),
            (Some("str"), json!({"type": "string"})),
            (Some("bool"), json!({"type": "boolean"})),
            (Some("list"), json!({"type": "array"})),
            (
                Some("list[int]"),
                json!({"type": "array", "items": {"type": "integer"}}),
            ),
            (
                Some("typing.List[str]"),
                json!({"type": "array", "items": {"type": "string"}}),
            ),
            (
                Some("list[list[float]]"),
                json!({"type": "array", "items": {"type": "array", "items": {"type": "number"}}}),
            ),
            (
                Some("dict[str, float]"),
                json!({"type": "object", "additionalProperties": {"type": "number"}}),
            ),
            (Some("dict"), json!({"type": "object"})),
            (
                Some("typing.Optional[int]"),
                json!({"anyOf": [{"type": "integer"}, {"type": "null"}]}),
            ),
            (
                Some("str | None"),
                json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
            ),
            (
                Some("typing.Union[int, str]"),
                json!({"anyOf": [{"type": "integer"}, {"type": "string"}]}),
            ),
            (
                Some("tuple[int, str]"),
                json!({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
                       "minItems": 2, "maxItems": 2}),
            ),
            (
                Some("tuple[int, ...]"),
                json!({"type": "array", "items": {"type": "integer"}}),
            ),
            (Some("numpy.ndarray"), json!({})),
            (Some("MyClass"), json!({})),
            (Some("typing.Optional[MyClass]"), json!({})),
            (Some("list[MyClass]"), json!({"type": "array", "items": {}})),
            (
                Some("dict[str, list[int]] | None"),
                json!({"anyOf": [
                {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}},
                {"type": "null"}]}),
            ),
        ] {
            assert_eq!(of(annotation), schema, "{annotation:?}");
        }
    }

    #[test]
    fn parameters_make_an_input_schema() {
        let parameters = vec![
            json!({"name": "a", "kind": "positional_or_keyword", "annotation": "int"}),
            json!({"name": "b", "kind": "positional_or_keyword", "annotation": null, "default": 2}),
            json!({"name": "rest", "kind": "var_positional", "annotation": null}),
            json!({"name": "flag", "kind": "keyword_only", "annotation": "bool", "default": false}),
        ];
        let schema = Value::Object(input(&parameters));
        assert_eq!(
            schema,
            json!({"type": "object", "properties": {
                "a": {"type": "integer"}, "b": {"default": 2},
                "flag": {"type": "boolean", "default": false}},
                "required": ["a"], "additionalProperties": false})
        );
        let open = input(&[json!({"name": "kw", "kind": "var_keyword", "annotation": null})]);
        assert_eq!(open["additionalProperties"], json!(true));
        assert_eq!(output(None), None);
        assert_eq!(
            output(Some("int")).map(Value::Object),
            Some(
                json!({"type": "object", "properties": {"result": {"type": "integer"}},
                        "required": ["result"]})
            )
        );
    }
}
