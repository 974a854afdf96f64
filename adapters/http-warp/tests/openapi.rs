//! `GET /openapi.yaml` serves the repository's OpenAPI document, and the document names
//! every route of the contract.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn document() -> String {
    std::fs::read_to_string(repo_root().join("openapi.yaml")).expect("openapi.yaml at the repository root")
}

/// The routes SPEC.md promises, plus this document's own.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/user/profile"),
    ("patch", "/user/profile"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.yaml"),
];

/// The operations of the document's `paths` section, read from its layout: a path at
/// two spaces of indentation, its methods at four.
fn operations(doc: &str) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in doc.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if let (Some(p), Some(m)) =
            (&path, line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')))
            && !m.starts_with(' ')
        {
            ops.push((m.to_owned(), p.clone()));
        }
    }
    ops
}

/// `METHOD /path` pairs written in SPEC.md (route tables and headings), when the
/// contract sits beside the repository.
fn spec_routes() -> Option<Vec<(String, String)>> {
    let spec = std::fs::read_to_string(repo_root().join("../shared/SPEC.md")).ok()?;
    let mut found = Vec::new();
    for method in ["GET", "PATCH", "PUT", "POST", "DELETE"] {
        let needle = format!("{method} /");
        let mut rest = spec.as_str();
        while let Some(at) = rest.find(&needle) {
            let tail = &rest[at + method.len() + 1..];
            let end = tail.find(|c: char| c.is_whitespace() || c == '`' || c == '|').unwrap_or(tail.len());
            let path = &tail[..end];
            if path.len() > 1 {
                found.push((method.to_ascii_lowercase(), path.to_owned()));
            }
            rest = &tail[end..];
        }
    }
    found.sort();
    found.dedup();
    Some(found)
}

#[tokio::test]
async fn the_document_is_served_as_yaml() {
    let app = App::new();
    let res = warp::test::request().path("/openapi.yaml").reply(&app.routes()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), Some("application/yaml"));
    assert_eq!(header(&res, "x-content-type-options"), Some("nosniff"));
    assert!(header(&res, "x-request-id").is_some());
    let body = std::str::from_utf8(res.body()).expect("utf-8");
    assert_eq!(body, document(), "the served document is the repository's openapi.yaml");
    assert!(body.starts_with("openapi: 3.1."), "OpenAPI 3.1");
}

#[tokio::test]
async fn other_methods_on_the_document_are_405() {
    let app = App::new();
    let res = warp::test::request().method("POST").path("/openapi.yaml").reply(&app.routes()).await;
    assert_problem(&res, 405);
    assert_eq!(header(&res, "allow"), Some("GET, HEAD"));
}

#[test]
fn the_document_names_every_route() {
    let ops = operations(&document());
    for (method, path) in ROUTES {
        assert!(
            ops.iter().any(|(m, p)| m == method && p == path),
            "{} {path} is missing from openapi.yaml (it has {ops:?})",
            method.to_uppercase()
        );
    }
    assert_eq!(ops.len(), ROUTES.len(), "openapi.yaml describes a route the server does not have: {ops:?}");
}

#[test]
fn the_document_names_every_route_of_the_spec() {
    let Some(routes) = spec_routes() else {
        eprintln!("SPEC.md is not beside the repository; checked the built-in list only");
        return;
    };
    assert!(routes.len() >= 5, "too few routes found in SPEC.md: {routes:?}");
    let ops = operations(&document());
    for (method, path) in &routes {
        assert!(
            ops.iter().any(|(m, p)| m == method && p == path),
            "SPEC.md's {} {path} is missing from openapi.yaml",
            method.to_uppercase()
        );
    }
}

/// Every `pattern` of the document, as written (single-quoted YAML scalars).
fn patterns(doc: &str) -> Vec<String> {
    doc.lines()
        .filter_map(|l| l.split_once("pattern: ").map(|(_, p)| p))
        .filter_map(|p| p.trim().trim_start_matches("&single_line").trim().strip_prefix('\''))
        .filter_map(|p| p.strip_suffix('\'').or_else(|| p.strip_suffix("' }")))
        .map(|p| p.replace("''", "'"))
        .collect()
}

#[test]
fn patterns_read_alike_in_ecmascript_and_python() {
    let doc = document();
    let pats = patterns(&doc);
    assert!(pats.len() >= 15, "too few patterns found: {pats:?}");
    for p in &pats {
        // Characters beyond U+FFFF are one code point in Python and with the `u` flag,
        // two code units without it: none is written, literally or as an escape.
        assert!(p.is_ascii(), "a pattern holds a non-ASCII character: {p}");
        assert!(!p.contains("\\U") && !p.contains("\\u{") && !p.contains("\\p{"), "{p}");
        // `\s` means different sets in ECMAScript and Python; `[\s\S]` (anything) is safe.
        assert!(!p.replace("[\\s\\S]", "").contains("\\s"), "a pattern uses \\s: {p}");
        // Python's `$` also matches before a final newline: a pattern ending in `$` must
        // let its last part absorb a newline (the trimmed-whitespace class does).
        if let Some(body) = p.strip_suffix('$') {
            assert!(
                body.ends_with("]*") && body[body.rfind('[').unwrap_or(0)..].contains("\\u0009-\\u000D"),
                "a pattern ends in `$` after something that cannot take a newline: {p}"
            );
        }
    }
}

/// The code points a character class of `\uXXXX` items and `\uXXXX-\uXXXX` ranges names.
fn class_members(class: &str) -> Vec<u32> {
    let items: Vec<u32> = class
        .split("\\u")
        .filter(|s| !s.is_empty())
        .map(|s| u32::from_str_radix(s.trim_end_matches('-'), 16).expect("hex escape"))
        .collect();
    let dashes: Vec<bool> = class.split("\\u").filter(|s| !s.is_empty()).map(|s| s.ends_with('-')).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        if dashes[i] {
            out.extend(items[i]..=items[i + 1]);
            i += 2;
        } else {
            out.push(items[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn the_text_pattern_names_what_the_server_trims_and_refuses() {
    let doc = document();
    let single =
        patterns(&doc).into_iter().find(|p| p.contains("(?:[^")).expect("the single-line text pattern");
    // `^[W]*[^WC](?:[^C]*[^WC])?[W]*$`: W is trimmed whitespace, C the refused characters.
    let w = single.strip_prefix("^[").and_then(|s| s.split_once("]*")).map(|(w, _)| w).expect("W");
    let c = single.split_once("(?:[^").and_then(|(_, s)| s.split_once("]*")).map(|(c, _)| c).expect("C");
    let (w, c) = (class_members(w), class_members(c));
    // The first and the last character of the trimmed text: neither W nor C.
    let mut neither: Vec<u32> = w.iter().chain(&c).copied().collect();
    neither.sort_unstable();
    neither.dedup();
    let ends: Vec<&str> =
        single.split("[^").skip(1).map(|s| s.split_once(']').map_or(s, |(x, _)| x)).collect();
    assert_eq!(ends.len(), 3, "{single}");
    for class in [ends[0], ends[2]] {
        let mut got = class_members(class);
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, neither, "an end class of the text pattern is not W and C together");
    }
    for cp in (0..=0xFFFFu32).filter_map(char::from_u32) {
        let n = cp as u32;
        assert_eq!(w.contains(&n), cp.is_whitespace(), "U+{n:04X} in the pattern's whitespace");
        let refused = profile_core::domain::rules::text(&format!("a{cp}b"), 64)
            .err()
            .is_some_and(|e| e.code == "control_characters");
        assert_eq!(c.contains(&n), refused, "U+{n:04X}: pattern and server disagree");
    }
}
