//! The documentation stays true to the binary: every route of the real server's `/openapi.json`
//! has its heading in `docs/api.md` (``### `METHOD /path` ``) and every such heading is a route;
//! and no document of the repository links outside it.

mod common;

use common::{database, Engine, ServeSpec, Server};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The routes documented in `docs/api.md`: its ``### `METHOD /path` `` headings.
fn documented_routes(api_md: &str) -> BTreeSet<String> {
    api_md
        .lines()
        .filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`'))
        .filter(|h| {
            let method = h.split(' ').next().unwrap_or_default();
            ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method)
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn api_md_names_exactly_the_routes_of_openapi_json() {
    let db = database(Engine::Sqlite).await;
    let server = Server::start(&ServeSpec::embedded(&db)).await;
    let openapi = server.get_json("/openapi.json").await;
    let paths = openapi["paths"].as_object().expect("openapi paths");
    let served: BTreeSet<String> = paths
        .iter()
        .flat_map(|(path, ops)| {
            let ops = ops.as_object().expect("path item").keys();
            ops.map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    assert!(
        served.len() >= 20,
        "too few routes in /openapi.json: {served:?}"
    );

    let api_md = std::fs::read_to_string(repo_root().join("docs/api.md")).expect("docs/api.md");
    let documented = documented_routes(&api_md);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "docs/api.md and /openapi.json disagree.\n  in /openapi.json, no `### `METHOD /path`` \
         heading in docs/api.md: {undocumented:?}\n  headings in docs/api.md that /openapi.json \
         does not serve: {unserved:?}"
    );
}

/// The bounds every route shares are in the document: the request deadline (408; a timed-out
/// `POST /orders` is a 503 naming its key instead) and the connection bound (503).
#[tokio::test(flavor = "multi_thread")]
async fn every_operation_documents_the_deadline_and_the_connection_bound() {
    let db = database(Engine::Sqlite).await;
    let server = Server::start(&ServeSpec::embedded(&db)).await;
    let openapi = server.get_json("/openapi.json").await;
    let mut checked = 0;
    for (path, ops) in openapi["paths"].as_object().expect("openapi paths") {
        for (method, op) in ops.as_object().expect("path item") {
            let responses = op["responses"].as_object().expect("responses");
            let placing = method == "post" && path == "/orders";
            assert_eq!(
                responses.contains_key("408"),
                !placing,
                "{method} {path}: 408 documented iff not POST /orders"
            );
            assert!(responses.contains_key("503"), "{method} {path}: no 503");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations");
}

#[test]
fn the_heading_convention_is_parsed_as_documented() {
    let md = "## Stocks\n### `GET /stocks/{stock_id}`\ntext `GET /x`\n### `The feed`\n\
              ### `POST /orders`\n#### `GET /nested`\n";
    let found: Vec<_> = documented_routes(md).into_iter().collect();
    assert_eq!(found, ["GET /stocks/{stock_id}", "POST /orders"]);
}

/// Markdown files of the repository (not `target/`, not hidden folders).
fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() && !name.starts_with('.') && name != "target" && name != "node_modules" {
            markdown_files(&path, out);
        } else if name.ends_with(".md") {
            out.push(path);
        }
    }
}

/// Every relative link of every Markdown file resolves to a file of the repository.
#[test]
fn markdown_links_stay_inside_the_repository() {
    let root = repo_root().canonicalize().expect("repository root");
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("docs/api.md")),
        "docs/api.md missing"
    );
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("markdown text");
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            let target = target.split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = file.parent().expect("parent").join(target);
            match resolved.canonicalize() {
                Ok(p) if p.starts_with(&root) => {}
                _ => broken.push(format!("{}: {target}", file.display())),
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that leave the repository or lead nowhere: {broken:?}"
    );
}
