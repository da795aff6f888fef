//! Generates the configuration reference of `docs/operations.md` from [`Config`]: its fields, their
//! doc comments and [`Config::default`]. The test fails when the document is stale; regenerate it
//! with `UPDATE_DOCS=1 cargo test -p bourse --bin bourse config_reference`.

use super::Config;

const SOURCE: &str = include_str!("config.rs");
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
const START: &str = "<!-- config-reference:start (generated from crates/bourse/src/config.rs) -->";
const END: &str = "<!-- config-reference:end -->";

/// `(field, doc comment)` of every field of `struct Config`, in source order.
fn fields() -> Vec<(String, String)> {
    let body = SOURCE
        .split_once("pub struct Config {")
        .and_then(|(_, rest)| rest.split_once("\n}"))
        .expect("struct Config in config.rs")
        .0;
    let mut doc = Vec::new();
    let mut out = Vec::new();
    for line in body.lines().map(str::trim) {
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim().to_string());
        } else if let Some(field) = line.strip_prefix("pub ") {
            let name = field.split(':').next().expect("field name").trim();
            out.push((name.to_string(), doc.join(" ")));
            doc.clear();
        }
    }
    out
}

fn render_default(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "unset".into(),
        serde_json::Value::String(s) if s.is_empty() => "empty".into(),
        serde_json::Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

/// The Markdown table: variable, default, meaning.
fn reference() -> String {
    let defaults = serde_json::to_value(Config::default()).expect("defaults as JSON");
    let mut table = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for (field, doc) in fields() {
        assert!(
            !doc.is_empty(),
            "config.rs: `{field}` needs a doc comment (it is the reference)"
        );
        let default = render_default(defaults.get(&field).expect("a serialized default"));
        let var = format!("BOURSE_{}", field.to_uppercase());
        table.push_str(&format!(
            "| `{var}` | {default} | {} |\n",
            doc.replace('|', "\\|")
        ));
    }
    table
}

#[test]
fn config_reference_in_operations_md_is_current() {
    let doc = std::fs::read_to_string(DOC).expect("docs/operations.md");
    let (head, rest) = doc
        .split_once(START)
        .expect("start marker in docs/operations.md");
    let (_, tail) = rest
        .split_once(END)
        .expect("end marker in docs/operations.md");
    let fresh = format!("{head}{START}\n{}{END}{tail}", reference());
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(DOC, &fresh).expect("write docs/operations.md");
    } else {
        assert!(
            doc == fresh,
            "docs/operations.md's configuration reference is stale: run \
             `UPDATE_DOCS=1 cargo test -p bourse --bin bourse config_reference`"
        );
    }
}

#[test]
fn every_field_is_found_with_its_doc() {
    let fields = fields();
    let defaults = serde_json::to_value(Config::default()).expect("defaults as JSON");
    assert_eq!(fields.len(), defaults.as_object().expect("an object").len());
    let (_, doc) = fields
        .iter()
        .find(|(f, _)| f == "read_cache_ms")
        .expect("read_cache_ms");
    assert_eq!(
        doc,
        "How long hot reads may be served from memory (milliseconds)."
    );
}
