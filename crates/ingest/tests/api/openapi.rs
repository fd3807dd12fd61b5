//! `proto-docs/openapi.yaml` documents exactly the routes the app serves.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use yaml_rust2::{Yaml, YamlLoader};

use crate::helpers::spawn_memory_app;

const DOCUMENT: &str = include_str!("../../../../proto-docs/openapi.yaml");
const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options", "trace"];

fn document() -> Yaml {
    let mut docs = YamlLoader::load_from_str(DOCUMENT).expect("openapi.yaml is valid YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

/// Every route the application serves: the API and the ops endpoints.
fn served_routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    pulse_ingest::ROUTES.iter().chain(pulse_ingest::OPS_ROUTES).copied()
}

fn documented_routes(doc: &Yaml) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_hash().expect("`paths` is a mapping");
    let mut routes = BTreeSet::new();
    for (path, item) in paths {
        let path = path.as_str().expect("paths are strings");
        for (method, _) in item.as_hash().expect("a path item is a mapping") {
            let method = method.as_str().expect("methods are strings");
            if METHODS.contains(&method) {
                routes.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    routes
}

#[test]
fn the_document_is_openapi_3_1_and_lists_exactly_the_served_routes() {
    let doc = document();
    assert_eq!(doc["openapi"].as_str(), Some("3.1.0"));
    assert!(doc["components"]["securitySchemes"]["apiKey"].as_hash().is_some());
    assert!(doc["components"]["securitySchemes"]["browserJwt"].as_hash().is_some());
    let served: BTreeSet<(String, String)> = served_routes().map(|(m, p)| (m.to_owned(), p.to_owned())).collect();
    assert_eq!(documented_routes(&doc), served);
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 20, "the document uses references");
    for reference in refs {
        let pointer = reference.strip_prefix("#/").unwrap_or_else(|| panic!("local reference: {reference}"));
        let mut node = &doc;
        for part in pointer.split('/') {
            node = &node[part];
        }
        assert!(!node.is_badvalue(), "{reference} resolves");
    }
}

fn collect_refs(node: &Yaml, refs: &mut Vec<String>) {
    match node {
        Yaml::Hash(map) => {
            for (key, value) in map {
                if key.as_str() == Some("$ref") {
                    refs.push(value.as_str().expect("$ref is a string").to_owned());
                } else {
                    collect_refs(value, refs);
                }
            }
        }
        Yaml::Array(items) => items.iter().for_each(|item| collect_refs(item, refs)),
        _ => {}
    }
}

/// Each listed route is really served: its answer is never a "no such
/// route" 404 or a 405.
#[tokio::test]
async fn every_listed_route_is_served() {
    let app = spawn_memory_app().await;
    for (method, path) in served_routes() {
        let concrete = path.replace("{agent_id}", "web-1").replace("{channel}", "alerts");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = app.client.request(method.clone(), app.url(&concrete)).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {body}");
        // The one 404 a served route gives here: the agent is unknown.
        let unknown_agent = body.contains(r#""field":"agent_id""#);
        assert!(status != StatusCode::NOT_FOUND || unknown_agent, "{method} {path} is not served: {status} {body}");
    }
}
