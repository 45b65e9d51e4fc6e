//! The Rust embedder against Python `onnxruntime` + `tokenizers` on the same model files
//! (`tests/data/embedding_reference.json`, made by `scripts/gen_embedding_reference.py`).
//! Needs the model and ONNX Runtime from `make setup`; fails (does not skip) without them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde::Deserialize;
use tollgate_cache_service::embed::{
    DEFAULT_MAX_TOKENS, Embedder, OnnxConfig, OnnxEmbedder, cosine,
};

#[derive(Deserialize)]
struct Reference {
    model_sha256: String,
    max_tokens: usize,
    dim: usize,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/embedding_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn model() -> OnnxEmbedder {
    let cfg = OnnxConfig {
        intra_threads: 2,
        ..OnnxConfig::default()
    };
    OnnxEmbedder::load(&cfg).unwrap_or_else(|e| {
        panic!("cannot load the embedding model ({e}); run `make setup` to fetch it")
    })
}

#[test]
fn matches_python_onnxruntime() {
    let reference = reference();
    let model = model();
    assert_eq!(reference.max_tokens, DEFAULT_MAX_TOKENS);
    assert_eq!(model.dim(), reference.dim);
    assert!(
        model.model_id().contains(&reference.model_sha256[..12]),
        "the reference was made with another model file: {} vs {}",
        model.model_id(),
        reference.model_sha256
    );
    assert!(reference.items.len() >= 12);
    assert!(reference.items.iter().any(|i| i.text.is_empty()));
    assert!(
        reference
            .items
            .iter()
            .any(|i| i.ids.len() == reference.max_tokens),
        "no item exercises truncation"
    );
    let mut worst = (f32::MAX, String::new());
    for item in &reference.items {
        assert_eq!(
            model.token_ids(&item.text).unwrap(),
            item.ids,
            "token ids differ for {:?}",
            item.text
        );
        let got = model.embed_batch(&[item.text.as_str()]).unwrap();
        assert_eq!(got.len(), 1);
        let c = cosine(&got[0], &item.embedding);
        if c < worst.0 {
            worst = (c, item.text.clone());
        }
        assert!(c > 0.9999, "cosine {c} for {:?}", item.text);
    }
    eprintln!("worst cosine vs Python: {} ({:?})", worst.0, worst.1);
}
