//! Training and export agree on the tensors: for every preset in `models/`, the
//! tch model's VarStore holds exactly the (name, shape) pairs the ONNX graph
//! reads (`vit::onnx::expected_tensors`), so any trained checkpoint exports.

mod common;

use std::collections::BTreeMap;

use common::repo_root;
use tch::{nn, Device};
use vit::ViTConfig;
use vit_train::model::ViT;

/// Every `models/*.toml`, sorted, with `num_classes` set where the preset leaves it to the data.
fn presets() -> Vec<(String, ViTConfig)> {
    let mut paths: Vec<_> = std::fs::read_dir(repo_root().join("models"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let mut cfg = ViTConfig::from_toml_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if cfg.num_classes == 0 {
                cfg.num_classes = 5;
            }
            (path.file_name().unwrap().to_string_lossy().into_owned(), cfg)
        })
        .collect()
}

/// The first name whose shape differs or that only one side has, described.
fn first_difference(model: &BTreeMap<String, Vec<usize>>, graph: &BTreeMap<String, Vec<usize>>) -> Option<String> {
    let names: std::collections::BTreeSet<&String> = model.keys().chain(graph.keys()).collect();
    names.into_iter().find_map(|name| match (model.get(name), graph.get(name)) {
        (Some(m), Some(g)) if m == g => None,
        (Some(m), Some(g)) => Some(format!("`{name}` is {m:?} in the model but {g:?} in the graph")),
        (Some(m), None) => Some(format!("`{name}` {m:?} is in the model but not in the graph")),
        (None, Some(g)) => Some(format!("`{name}` {g:?} is in the graph but not in the model")),
        (None, None) => None,
    })
}

#[test]
fn every_presets_model_holds_exactly_the_tensors_its_onnx_graph_reads() {
    let presets = presets();
    assert!(presets.len() >= 4, "expected the presets in models/, found {}", presets.len());
    for (name, cfg) in presets {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = ViT::new(&vs.root(), &cfg);
        let model: BTreeMap<String, Vec<usize>> =
            vs.variables().into_iter().map(|(n, t)| (n, t.size().into_iter().map(|d| d as usize).collect())).collect();
        let expected = vit::onnx::expected_tensors(&cfg);
        let graph: BTreeMap<String, Vec<usize>> = expected.iter().cloned().collect();
        assert_eq!(graph.len(), expected.len(), "{name}: the graph lists a tensor twice");
        if let Some(difference) = first_difference(&model, &graph) {
            panic!("{name}: training and export disagree: {difference}");
        }
    }
}
