//! `proto-docs/settings.md` lists every settings key of every service, and
//! nothing else: the keys each service's settings type reads (found by
//! walking its `Deserialize`, see `pulse_runtime::keys_of`) are compared with
//! the reference's table, both ways. Adding a setting without documenting
//! it, or documenting one that no longer exists, fails here.

use std::collections::{BTreeMap, BTreeSet};

use pulse_runtime::keys_of;

/// The services as the reference's "services" column names them.
fn services() -> BTreeMap<&'static str, Vec<String>> {
    BTreeMap::from([
        ("ingest", keys_of::<pulse_ingest::Settings>()),
        ("checker", keys_of::<pulse_heartbeat_checker::Settings>()),
        ("gateway", keys_of::<pulse_websocket_gateway::Settings>()),
        ("pulse", keys_of::<pulse::Settings>()),
    ])
}

/// `key → services` from the reference's table rows:
/// `` | `key` | services | default | meaning | ``.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto-docs/settings.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut keys = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // ["", "`key`", "services", "default", "meaning", ""]
        let [_, key, services, ..] = cells.as_slice() else { continue };
        let Some(key) = key.strip_prefix('`').and_then(|k| k.strip_suffix('`')) else { continue };
        // The table of renamed keys names a key, not services, in its
        // second column.
        if services.starts_with('`') {
            continue;
        }
        let services = match *services {
            "all" => ["ingest", "checker", "gateway", "pulse"].iter().map(|s| (*s).to_owned()).collect(),
            list => list.split(',').map(|s| s.trim().to_owned()).collect(),
        };
        assert!(keys.insert(key.to_owned(), services).is_none(), "{key} is listed twice");
    }
    keys
}

#[test]
fn the_settings_reference_lists_every_key_of_every_service() {
    let documented = documented();
    assert!(!documented.is_empty(), "no key rows found in proto-docs/settings.md");
    let mut problems = Vec::new();
    for (service, keys) in services() {
        let in_code: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
        let in_doc: BTreeSet<&str> =
            documented.iter().filter(|(_, s)| s.contains(service)).map(|(k, _)| k.as_str()).collect();
        for key in in_code.difference(&in_doc) {
            problems.push(format!("{service} reads `{key}`, which proto-docs/settings.md does not list for it"));
        }
        for key in in_doc.difference(&in_code) {
            problems.push(format!("proto-docs/settings.md lists `{key}` for {service}, which does not read it"));
        }
    }
    if std::env::var_os("PULSE_PRINT_SETTINGS_KEYS").is_some() {
        for (service, keys) in services() {
            println!("{service}: {keys:?}");
        }
    }
    assert!(problems.is_empty(), "the settings reference drifted from the code:\n{}", problems.join("\n"));
}
