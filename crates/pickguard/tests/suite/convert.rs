//! `pickguard convert` and `inspect` on the committed corpus (values are
//! checked against real torch in tests/suite/live_convert.rs).

use crate::common;

use serde_json::Value;
use std::path::Path;

/// The header and data section of a safetensors file.
fn read_st(p: &Path) -> (Value, Vec<u8>) {
    let b = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header padded to 8 bytes");
    let h: Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    (h, b[8 + n..].to_vec())
}

fn tensor<'a>(h: &Value, data: &'a [u8], name: &str) -> (&'a [u8], String, Vec<u64>) {
    let t = &h[name];
    let off = t["data_offsets"].as_array().unwrap();
    let (a, b) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    (
        &data[a..b],
        t["dtype"].as_str().unwrap().to_owned(),
        t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect(),
    )
}

#[test]
fn converts_a_state_dict_with_views_and_ties() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sd.safetensors");
    let r = common::run(&[
        "convert",
        common::corpus()
            .join("ok-torch-state-dict.pt")
            .to_str()
            .unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let (h, data) = read_st(&out);
    assert_eq!(h["__metadata__"]["format"], "pt");
    let aliases: Value =
        serde_json::from_str(h["__metadata__"]["pickguard.aliases"].as_str().unwrap()).unwrap();
    assert_eq!(aliases["tied"], "lin.weight");
    // Offsets tile the data section exactly.
    let mut spans: Vec<(u64, u64)> = h
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, t)| {
            let o = t["data_offsets"].as_array().unwrap();
            (o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
        })
        .collect();
    spans.sort();
    let mut pos = 0;
    for (a, b) in spans {
        assert_eq!(a, pos);
        pos = b;
    }
    assert_eq!(pos as usize, data.len());
    // Known values: i64 = arange(5), u8 = arange(4).
    let (b, d, s) = tensor(&h, &data, "i64");
    assert_eq!((d.as_str(), s), ("I64", vec![5]));
    let v: Vec<i64> = b
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(v, [0, 1, 2, 3, 4]);
    assert_eq!(tensor(&h, &data, "u8").0, &[0, 1, 2, 3]);
    // base = arange(24).reshape(4, 6); view.t is its transpose, made contiguous.
    let (b, _, s) = tensor(&h, &data, "view.t");
    assert_eq!(s, [6, 4]);
    let v: Vec<f32> = b
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(&v[..5], &[0.0, 6.0, 12.0, 18.0, 1.0]);
    // view.slice = base[1:, 2:]: rows 1..4, columns 2..6.
    let (b, _, s) = tensor(&h, &data, "view.slice");
    assert_eq!(s, [3, 4]);
    let v: Vec<f32> = b
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(&v[..5], &[8.0, 9.0, 10.0, 11.0, 14.0]);
    assert_eq!(tensor(&h, &data, "empty").2, [0, 3]);
    assert_eq!(tensor(&h, &data, "scalar").2, Vec::<u64>::new());
    assert_eq!(tensor(&h, &data, "f8").1, "F8_E4M3");
}

#[test]
fn refuses_malicious_and_trust_files_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    for (f, what) in [
        ("mal-torch-zip.pt", "posix.system"),
        ("trust-torch-whole-module.pt", "torch.nn.modules"),
        ("mal-torch-legacy.pt", "posix.system"),
    ] {
        let out = tmp.path().join(format!("{f}.safetensors"));
        let r = common::pickguard()
            .current_dir(tmp.path())
            .args([
                "convert",
                common::corpus().join(f).to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(r.status.code(), Some(1), "{f}");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains("refused") && err.contains(what), "{f}: {err}");
        assert!(!out.exists(), "{f}: nothing written");
    }
    assert!(!tmp.path().join("pickguard-marker").exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no partial files left"
    );
}

#[test]
fn never_overwrites_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.safetensors");
    std::fs::write(&out, b"keep me").unwrap();
    let input = common::corpus().join("ok-torch-legacy.pt");
    let r = common::run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let r = common::run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
        "--format",
        "json",
    ]);
    assert_eq!(r.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(doc["conversions"][0]["status"], "converted");
    assert_eq!(doc["conversions"][0]["tensors"], 13);
    assert_eq!(read_st(&out).0["lin.bias"]["dtype"], "F32");
}

#[test]
fn npz_and_extra_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("n.safetensors");
    let r = common::run(&[
        "convert",
        common::corpus().join("ok-numpy.npz").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let (h, data) = read_st(&out);
    assert_eq!(tensor(&h, &data, "b").2, [2, 2]);
    assert_eq!(tensor(&h, &data, "a").1, "I64");
    // Object arrays are not numeric: refused with a reason.
    let r = common::run(&[
        "convert",
        common::corpus()
            .join("mal-numpy-object.npz")
            .to_str()
            .unwrap(),
        "-o",
        tmp.path().join("m.st").to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));

    let out = tmp.path().join("t.safetensors");
    let js = tmp.path().join("t.json");
    let r = common::run(&[
        "convert",
        common::corpus()
            .join("ok-torch-training-checkpoint.pt")
            .to_str()
            .unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--extra-json",
        js.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(0));
    let extra: Value = serde_json::from_str(&std::fs::read_to_string(js).unwrap()).unwrap();
    assert_eq!(extra["epoch"], 3);
    assert_eq!(extra["config"]["name"], "run-1");
    assert_eq!(extra["model"]["0.weight"]["$tensor"], "model.0.weight");
}

#[test]
fn inspect_lists_tensors() {
    let r = common::run(&[
        "inspect",
        "--format",
        "json",
        common::corpus()
            .join("ok-torch-state-dict.pt")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(doc["verdict"], "clean");
    let t = doc["tensors"].as_array().unwrap();
    assert_eq!(t.len(), 16);
    let vt = t.iter().find(|x| x["name"] == "view.t").unwrap();
    assert_eq!(vt["contiguous"], false);
    assert_eq!(vt["shape"], serde_json::json!([6, 4]));
    let text = common::run(&[
        "inspect",
        common::corpus()
            .join("ok-torch-legacy.pt")
            .to_str()
            .unwrap(),
    ]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("lin.weight") && text.contains("14 tensors,"),
        "{text}"
    );
    let r = common::run(&[
        "inspect",
        common::corpus().join("mal-torch-zip.pt").to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stdout).contains("posix.system"));
}
