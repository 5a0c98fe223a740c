//! `GET /docs`: the OpenAPI document rendered to one self-contained HTML page on the server.
//! No JavaScript and no external assets; every string taken from the document is
//! HTML-escaped. Descriptions get a little markdown: paragraphs, `* ` lists and `code`.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::schema::{AdditionalProperties, ArrayItems, Schema, SchemaType, Type};
use utoipa::openapi::{Content, OpenApi, RefOr, Required};

/// How deep inline objects are expanded into dotted field names.
const MAX_DEPTH: usize = 4;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:70rem;margin:0 auto;\
padding:1rem 2rem;line-height:1.45;color:#1d1d1f}code{font-family:ui-monospace,monospace;\
background:#f2f2f4;padding:0 .2em;border-radius:3px}table{border-collapse:collapse;\
width:100%;margin:.5rem 0 1rem}th,td{border:1px solid #d5d5da;padding:.3rem .5rem;\
text-align:left;vertical-align:top}th{background:#f7f7f9}section.op{border-top:2px solid \
#d5d5da;padding-top:.5rem;margin-top:2rem}.method{display:inline-block;min-width:4.5em;\
font-weight:bold;text-transform:uppercase}.get{color:#0a6b2d}.post{color:#0b4f9c}\
.delete{color:#a31515}.auth{color:#6b4f00}nav li{margin:.1rem 0}";

/// The whole page.
pub fn render(openapi: &OpenApi) -> String {
    let page = Page { openapi };
    let info = &openapi.info;
    let mut out = String::with_capacity(256 << 10);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str(&format!(
        "<title>{} {} API</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&info.title),
        esc(&info.version)
    ));
    out.push_str(&format!(
        "<header>\n<h1>{} <small>{}</small></h1>\n",
        esc(&info.title),
        esc(&info.version)
    ));
    if let Some(description) = &info.description {
        out.push_str(&prose(description));
    }
    out.push_str(
        "<p>The same description, machine-readable: <a href=\"openapi.json\">\
         <code>GET /openapi.json</code></a> (OpenAPI 3).</p>\n</header>\n",
    );
    page.security(&mut out);
    page.index(&mut out);
    out.push_str("<main>\n<h2 id=\"routes\">Routes</h2>\n");
    for (path, method, operation) in page.operations() {
        page.operation(&mut out, path, method, operation);
    }
    page.schemas(&mut out);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

struct Page<'a> {
    openapi: &'a OpenApi,
}

/// One row of a fields table; `kind` and `description` are HTML already.
struct Field {
    name: String,
    kind: String,
    required: bool,
    description: String,
}

impl<'a> Page<'a> {
    /// Every operation, in the document's order.
    fn operations(&self) -> Vec<(&'a str, &'static str, &'a Operation)> {
        let mut all = Vec::new();
        for (path, item) in &self.openapi.paths.paths {
            let methods = [
                ("get", &item.get),
                ("put", &item.put),
                ("post", &item.post),
                ("delete", &item.delete),
                ("options", &item.options),
                ("head", &item.head),
                ("patch", &item.patch),
                ("trace", &item.trace),
            ];
            for (method, operation) in methods {
                if let Some(operation) = operation {
                    all.push((path.as_str(), method, operation));
                }
            }
        }
        all
    }

    fn security(&self, out: &mut String) {
        let Some(components) = &self.openapi.components else {
            return;
        };
        for (name, scheme) in &components.security_schemes {
            if let utoipa::openapi::security::SecurityScheme::ApiKey(
                utoipa::openapi::security::ApiKey::Header(value),
            ) = scheme
            {
                out.push_str(&format!(
                    "<p class=\"auth\">Key (<code>{}</code>): the <code>{}</code> header.</p>\n",
                    esc(name),
                    esc(&value.name)
                ));
                if let Some(description) = &value.description {
                    out.push_str(&prose(description));
                }
            }
        }
    }

    fn index(&self, out: &mut String) {
        out.push_str("<nav>\n<h2>Contents</h2>\n<ul>\n");
        for (path, method, operation) in self.operations() {
            out.push_str(&format!(
                "<li><a href=\"#{}\"><span class=\"method {method}\">{}</span> <code>{}</code></a>{}</li>\n",
                operation_anchor(method, path),
                method.to_uppercase(),
                esc(path),
                operation
                    .summary
                    .as_deref()
                    .map(|s| format!(": {}", inline(s)))
                    .unwrap_or_default()
            ));
        }
        out.push_str("<li><a href=\"#schemas\">Schemas</a></li>\n</ul>\n</nav>\n");
    }

    fn operation(&self, out: &mut String, path: &str, method: &str, operation: &Operation) {
        out.push_str(&format!(
            "<section class=\"op\" id=\"{}\">\n<h3><span class=\"method {method}\">{}</span> <code>{}</code></h3>\n",
            operation_anchor(method, path),
            method.to_uppercase(),
            esc(path)
        ));
        if let Some(summary) = &operation.summary {
            out.push_str(&format!("<p><strong>{}</strong></p>\n", inline(summary)));
        }
        if let Some(description) = &operation.description {
            out.push_str(&prose(description));
        }
        let keyed = operation
            .security
            .as_ref()
            .is_some_and(|requirements| !requirements.is_empty());
        out.push_str(if keyed {
            "<p class=\"auth\">Needs the tenant's key (<code>X-API-Key</code>).</p>\n"
        } else {
            "<p class=\"auth\">Needs no key.</p>\n"
        });
        if let Some(parameters) = operation.parameters.as_ref().filter(|p| !p.is_empty()) {
            out.push_str("<h4>Parameters</h4>\n");
            let fields: Vec<Field> = parameters
                .iter()
                .map(|parameter| Field {
                    name: format!(
                        "{} ({})",
                        parameter.name,
                        match parameter.parameter_in {
                            ParameterIn::Path => "path",
                            ParameterIn::Query => "query",
                            ParameterIn::Header => "header",
                            ParameterIn::Cookie => "cookie",
                        }
                    ),
                    kind: parameter
                        .schema
                        .as_ref()
                        .map_or_else(|| "any JSON".to_owned(), |s| self.kind(s)),
                    required: matches!(parameter.required, Required::True),
                    description: parameter
                        .description
                        .as_deref()
                        .map(prose)
                        .unwrap_or_default(),
                })
                .collect();
            table(out, &fields);
        }
        self.request_body(out, method, operation.request_body.as_ref());
        self.responses(out, operation);
        out.push_str("</section>\n");
    }

    fn request_body(&self, out: &mut String, method: &str, body: Option<&RequestBody>) {
        let Some(body) = body else {
            if method != "get" && method != "delete" {
                out.push_str("<h4>Request body</h4>\n<p>None (any body is ignored).</p>\n");
            }
            return;
        };
        let required = matches!(body.required, Some(Required::True));
        out.push_str(&format!(
            "<h4>Request body ({})</h4>\n",
            if required { "required" } else { "optional" }
        ));
        if let Some(description) = &body.description {
            out.push_str(&prose(description));
        }
        for (media, content) in &body.content {
            self.content(out, media, content);
        }
    }

    /// A content's media type and schema, and the schema's fields.
    fn content(&self, out: &mut String, media: &str, content: &Content) {
        let Some(schema) = &content.schema else {
            out.push_str(&format!("<p><code>{}</code></p>\n", esc(media)));
            return;
        };
        out.push_str(&format!(
            "<p><code>{}</code>: {}</p>\n",
            esc(media),
            self.kind(schema)
        ));
        let mut fields = Vec::new();
        self.fields(schema, "", 0, &mut fields);
        if !fields.is_empty() {
            table(out, &fields);
        }
        if let Some(Schema::Object(object)) = self.resolve(schema)
            && matches!(
                object.additional_properties.as_deref(),
                Some(AdditionalProperties::FreeForm(false))
            )
        {
            out.push_str("<p>No other fields are accepted (<code>400 bad_request</code>).</p>\n");
        }
    }

    fn responses(&self, out: &mut String, operation: &Operation) {
        out.push_str(
            "<h4>Responses</h4>\n<table>\n<tr><th>status</th><th>meaning</th><th>body</th></tr>\n",
        );
        let mut successes = Vec::new();
        for (status, response) in &operation.responses.responses {
            let RefOr::T(response) = response else {
                continue;
            };
            let mut meaning = prose(&response.description);
            if !response.headers.is_empty() {
                let names: Vec<String> = response
                    .headers
                    .keys()
                    .map(|name| format!("<code>{}</code>", esc(name)))
                    .collect();
                meaning.push_str(&format!("<p>Headers: {}</p>", names.join(", ")));
            }
            let body: Vec<String> = response
                .content
                .iter()
                .map(|(media, content)| match &content.schema {
                    Some(schema) => format!("{} (<code>{}</code>)", self.kind(schema), esc(media)),
                    None => format!("<code>{}</code>", esc(media)),
                })
                .collect();
            out.push_str(&format!(
                "<tr><td><strong>{}</strong></td><td>{}</td><td>{}</td></tr>\n",
                esc(status),
                meaning,
                if body.is_empty() {
                    "–".to_owned()
                } else {
                    body.join("<br>")
                }
            ));
            if status.starts_with('2') {
                successes.push((status, response));
            }
        }
        out.push_str("</table>\n");
        for (status, response) in successes {
            for content in response.content.values() {
                let Some(schema) = &content.schema else {
                    continue;
                };
                let mut fields = Vec::new();
                self.fields(schema, "", 0, &mut fields);
                if !fields.is_empty() {
                    out.push_str(&format!("<h5>{} body</h5>\n", esc(status)));
                    table(out, &fields);
                }
            }
        }
    }

    fn schemas(&self, out: &mut String) {
        out.push_str("<h2 id=\"schemas\">Schemas</h2>\n");
        let Some(components) = &self.openapi.components else {
            return;
        };
        for (name, schema) in &components.schemas {
            out.push_str(&format!(
                "<section id=\"schema-{}\">\n<h3>{}</h3>\n",
                anchor(name),
                esc(name)
            ));
            if let Some(description) = self.resolve(schema).and_then(description) {
                out.push_str(&prose(description));
            }
            out.push_str(&format!(
                "<p>Type: {}</p>\n",
                self.kind_of_definition(schema)
            ));
            let mut fields = Vec::new();
            self.fields(schema, "", 0, &mut fields);
            if !fields.is_empty() {
                table(out, &fields);
            }
            out.push_str("</section>\n");
        }
    }

    /// `schema` itself, or the component a reference names.
    fn resolve(&self, schema: &'a RefOr<Schema>) -> Option<&'a Schema> {
        match schema {
            RefOr::T(schema) => Some(schema),
            RefOr::Ref(reference) => {
                let name = ref_name(&reference.ref_location);
                match self.openapi.components.as_ref()?.schemas.get(name)? {
                    RefOr::T(schema) => Some(schema),
                    RefOr::Ref(_) => None,
                }
            }
        }
    }

    /// A component's own type (its definition, not a link to itself).
    fn kind_of_definition(&self, schema: &RefOr<Schema>) -> String {
        match schema {
            RefOr::T(schema) => self.schema_kind(schema),
            RefOr::Ref(_) => self.kind(schema),
        }
    }

    /// A schema's type as HTML: a link for a reference.
    fn kind(&self, schema: &RefOr<Schema>) -> String {
        match schema {
            RefOr::Ref(reference) => {
                let name = ref_name(&reference.ref_location);
                format!("<a href=\"#schema-{}\">{}</a>", anchor(name), esc(name))
            }
            RefOr::T(schema) => self.schema_kind(schema),
        }
    }

    fn schema_kind(&self, schema: &Schema) -> String {
        let join = |items: &[RefOr<Schema>], separator: &str| {
            items
                .iter()
                .map(|item| self.kind(item))
                .collect::<Vec<_>>()
                .join(separator)
        };
        match schema {
            Schema::OneOf(one_of) => join(&one_of.items, " | "),
            Schema::AnyOf(any_of) => join(&any_of.items, " | "),
            Schema::AllOf(all_of) => join(&all_of.items, " &amp; "),
            Schema::Array(array) => {
                let items = match &array.items {
                    ArrayItems::RefOrSchema(items) => self.kind(items),
                    ArrayItems::False => "nothing".to_owned(),
                };
                let kind = format!("array of {items}");
                match &array.schema_type {
                    SchemaType::Array(types) if types.contains(&Type::Null) => {
                        format!("{kind} | null")
                    }
                    _ => kind,
                }
            }
            Schema::Object(object) => {
                if let Some(values) = &object.enum_values {
                    return values
                        .iter()
                        .map(|value| format!("<code>{}</code>", esc(&value.to_string())))
                        .collect::<Vec<_>>()
                        .join(" | ");
                }
                let types: Vec<&Type> = match &object.schema_type {
                    SchemaType::Type(kind) => vec![kind],
                    SchemaType::Array(kinds) => kinds.iter().collect(),
                    SchemaType::AnyValue => return "any JSON".to_owned(),
                };
                types
                    .into_iter()
                    .map(|kind| match kind {
                        Type::Object => match object.additional_properties.as_deref() {
                            Some(AdditionalProperties::RefOr(values)) => {
                                format!("map of string to {}", self.kind(values))
                            }
                            _ => "object".to_owned(),
                        },
                        other => type_name(other).to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            }
            _ => "any JSON".to_owned(),
        }
    }

    /// The fields of an object schema (following references and `allOf`), with inline
    /// objects expanded as dotted names.
    fn fields(&self, schema: &'a RefOr<Schema>, prefix: &str, depth: usize, out: &mut Vec<Field>) {
        if depth > MAX_DEPTH {
            return;
        }
        let Some(schema) = self.resolve(schema) else {
            return;
        };
        match schema {
            Schema::AllOf(all_of) => {
                for part in &all_of.items {
                    self.fields(part, prefix, depth + 1, out);
                }
            }
            Schema::Object(object) => {
                for (name, property) in &object.properties {
                    let full = format!("{prefix}{name}");
                    out.push(Field {
                        name: full.clone(),
                        kind: self.kind(property),
                        required: object.required.iter().any(|r| r == name),
                        description: property_description(property)
                            .map(prose)
                            .unwrap_or_default(),
                    });
                    let RefOr::T(inline) = property else {
                        continue;
                    };
                    match inline {
                        Schema::Object(_) | Schema::AllOf(_) => {
                            self.fields(property, &format!("{full}."), depth + 1, out);
                        }
                        Schema::Array(array) => {
                            if let ArrayItems::RefOrSchema(items) = &array.items
                                && matches!(items.as_ref(), RefOr::T(_))
                            {
                                self.fields(items, &format!("{full}[]."), depth + 1, out);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn description(schema: &Schema) -> Option<&str> {
    match schema {
        Schema::Object(object) => object.description.as_deref(),
        Schema::Array(array) => array.description.as_deref(),
        Schema::OneOf(one_of) => one_of.description.as_deref(),
        Schema::AllOf(all_of) => all_of.description.as_deref(),
        Schema::AnyOf(any_of) => any_of.description.as_deref(),
        _ => None,
    }
}

/// A property's description: its own, or (for an optional field, which utoipa writes as
/// `oneOf: [null, T]`) the one on its alternatives.
fn property_description(property: &RefOr<Schema>) -> Option<&str> {
    match property {
        RefOr::Ref(reference) => Some(reference.description.as_str()).filter(|d| !d.is_empty()),
        RefOr::T(schema) => description(schema).or_else(|| match schema {
            Schema::OneOf(one_of) => one_of.items.iter().find_map(property_description),
            _ => None,
        }),
    }
}

fn type_name(kind: &Type) -> &'static str {
    match kind {
        Type::Object => "object",
        Type::String => "string",
        Type::Integer => "integer",
        Type::Number => "number",
        Type::Boolean => "boolean",
        Type::Array => "array",
        Type::Null => "null",
    }
}

fn table(out: &mut String, fields: &[Field]) {
    out.push_str(
        "<table>\n<tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>\n",
    );
    for field in fields {
        out.push_str(&format!(
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(&field.name),
            field.kind,
            if field.required { "yes" } else { "no" },
            field.description
        ));
    }
    out.push_str("</table>\n");
}

/// `#/components/schemas/Name` -> `Name`.
fn ref_name(location: &str) -> &str {
    location.rsplit('/').next().unwrap_or(location)
}

fn operation_anchor(method: &str, path: &str) -> String {
    format!("op-{method}-{}", anchor(path))
}

/// An id attribute's text: ASCII letters and digits, anything else as `-`.
fn anchor(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// One line of text: escaped, with `code` spans (when the backticks pair up).
fn inline(text: &str) -> String {
    let parts: Vec<&str> = text.split('`').collect();
    if parts.len().is_multiple_of(2) {
        return esc(text);
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{}</code>", esc(part))
            } else {
                esc(part)
            }
        })
        .collect()
}

/// A description: paragraphs (blank-line separated) and `* ` / `- ` lists.
fn prose(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n") {
        let mut paragraph: Vec<&str> = Vec::new();
        let mut items: Vec<String> = Vec::new();
        for line in block.lines().map(str::trim).filter(|line| !line.is_empty()) {
            match line.strip_prefix("* ").or_else(|| line.strip_prefix("- ")) {
                Some(item) => items.push(item.to_owned()),
                None => match items.last_mut() {
                    Some(last) => {
                        last.push(' ');
                        last.push_str(line);
                    }
                    None => paragraph.push(line),
                },
            }
        }
        if !paragraph.is_empty() {
            out.push_str(&format!("<p>{}</p>\n", inline(&paragraph.join(" "))));
        }
        if !items.is_empty() {
            out.push_str("<ul>\n");
            for item in items {
                out.push_str(&format!("<li>{}</li>\n", inline(&item)));
            }
            out.push_str("</ul>\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_marks_up() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(inline("a `<b>` c"), "a <code>&lt;b&gt;</code> c");
        assert_eq!(inline("odd ` tick <"), "odd ` tick &lt;");
        assert_eq!(
            prose("One\nline.\n\n* `x`: first\n  more\n* second"),
            "<p>One line.</p>\n<ul>\n<li><code>x</code>: first more</li>\n<li>second</li>\n</ul>\n"
        );
        assert_eq!(anchor("/python/jobs/{id}"), "-python-jobs--id-");
    }
}
