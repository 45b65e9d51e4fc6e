//! Differential exactness against tiktoken-rs on the committed real-text corpus.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use tollgate_bpe::Encoding;

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .filter(|p| {
            p.extension().is_some_and(|e| e != "md")
                || p.file_name().is_some_and(|n| n == "markdown.md")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 20, "corpus too small: {files:?}");
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("utf-8 corpus file");
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect()
}

fn check(name: &str, text: &str, failures: &mut Vec<String>) {
    for enc in Encoding::ALL {
        if let Some(m) = common::diff(enc, text) {
            failures.push(format!("[{name}] {m}"));
        }
    }
}

#[test]
fn whole_files() {
    let mut failures = Vec::new();
    for (name, text) in corpus() {
        check(&name, &text, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lines_and_windows() {
    let mut failures = Vec::new();
    for (name, text) in corpus() {
        for line in text.split_inclusive('\n') {
            check(&name, line, &mut failures);
        }
        // Sliding windows starting/ending at arbitrary char boundaries.
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let mut k = 0;
        while k < bounds.len() {
            let end = bounds[(k + 97).min(bounds.len() - 1)];
            check(&name, &text[bounds[k]..end], &mut failures);
            k += 41;
        }
        if failures.len() > 20 {
            break;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_files_concatenated() {
    let all: String = corpus()
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join("\n");
    let mut failures = Vec::new();
    check("all", &all, &mut failures);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Counts are consistent with encode().
    for enc in Encoding::ALL {
        assert_eq!(enc.count(&all), enc.encode(&all).len());
    }
}
