//! Unit tests of manifests, plans and cascades of segmented models.

use super::*;
use sieve_core::CascadeStep;

fn manifest(exits: &[u32]) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT.into(),
        name: None,
        max_length: 256,
        query_cap: 64,
        hidden_size: 8,
        max_windows: None,
        token_type_ids: None,
        exits: Vec::new(),
        segments: exits
            .iter()
            .enumerate()
            .map(|(i, &layer)| ManifestSegment {
                segment: i as u32 + 1,
                layers: Vec::new(),
                exit_layer: layer,
                widths: vec![96, 384],
                file: format!("seg{}.onnx", i + 1),
                file_int8: None,
                heads: Vec::new(),
            })
            .collect(),
        full: None,
        calibration: None,
        profiles: BTreeMap::new(),
        default_profile: None,
        blend: None,
    }
}

#[test]
fn plans_print_in_budget_syntax() {
    assert_eq!(Plan::exit(6, 384).to_string(), "6:384");
    let step = |keep, layer, width| PlanStep {
        keep: Some(keep),
        layer,
        width,
    };
    let cascade = Plan {
        steps: vec![step(100, 2, 384), step(30, 6, 96)],
    };
    assert_eq!(cascade.to_string(), "100@2:384,30@6:96");
    assert_eq!(
        Budget::parse(&cascade.to_string()),
        Ok(Budget::Cascade(vec![
            CascadeStep {
                keep: 100,
                layer: 2,
                width: Some(384)
            },
            CascadeStep {
                keep: 30,
                layer: 6,
                width: Some(96)
            },
        ]))
    );
    assert_eq!(cascade.reaching_last(500), 30);
    assert_eq!(cascade.reaching_last(10), 10);
    assert_eq!(Plan::exit(2, 8).reaching_last(7), 7);
}

#[test]
fn default_profiles_pick_first_middle_and_last_exits_at_the_widest_width() {
    let names = |exits: &[u32]| -> Vec<String> {
        manifest(exits)
            .profiles()
            .map(|p| p.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        names(&[2, 4, 6]),
        ["balanced=4:384", "fast=2:384", "full=6:384"]
    );
    assert_eq!(
        names(&[3, 6]),
        ["balanced=3:384", "fast=3:384", "full=6:384"]
    );
    assert_eq!(
        names(&[12]),
        ["balanced=12:384", "fast=12:384", "full=12:384"]
    );
    assert_eq!(manifest(&[2, 4]).validate(), Ok(()));
    assert!(
        manifest(&[])
            .validate()
            .is_err_and(|e| e.contains("no segments"))
    );
    assert!(
        manifest(&[4, 2])
            .validate()
            .is_err_and(|e| e.contains("exit_layer 2"))
    );
}

#[test]
fn manifest_paths_are_detected() {
    let dir = std::env::temp_dir().join(format!("sieve-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok();
    assert_eq!(manifest_in(&dir), None);
    std::fs::write(dir.join(MANIFEST_FILE), "{}").ok();
    assert_eq!(manifest_in(&dir), Some(dir.join(MANIFEST_FILE)));
    assert_eq!(
        manifest_in(&dir.join(MANIFEST_FILE)),
        Some(dir.join(MANIFEST_FILE))
    );
    assert_eq!(manifest_in(&dir.join("model.onnx")), None);
    std::fs::remove_dir_all(&dir).ok();
}
