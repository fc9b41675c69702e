//! What `torch.save` writes and `torch.load` reads, beyond the pickle
//! engine: the zip layout (root folder, records), the legacy magic number,
//! and the persistent ids that name storages.
//!
//! scan judges a checkpoint and convert rebuilds it from what scan called
//! clean; both read the layout and the persistent ids here, so the two can
//! never disagree about which record holds which storage.

use crate::dtype::DType;
use crate::zip::{Archive, Entry};
use pickguard_pickle::{Import, Node, NodeId, Stream};
use std::collections::HashMap;

/// The first pickle of a legacy (`_use_new_zipfile_serialization=False`)
/// checkpoint: `0x1950a86a20f9469cfc6c`.
pub const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;

/// Whether a stream's result is the legacy magic number.
pub fn is_legacy_magic(s: &Stream) -> bool {
    s.result.and_then(|r| match s.node(r) {
        Some(Node::Int(i)) => i.as_i128(),
        _ => None,
    }) == Some(LEGACY_MAGIC)
}

/// Bytes per element of a storage class torch pickles by reference
/// (`torch.FloatStorage`, `torch.storage.UntypedStorage`), including the
/// quantized and float8 kinds safetensors has no dtype for. Globals of any
/// other module are not storages, whatever their name.
pub fn storage_element_size(g: &Import) -> Option<u64> {
    if g.module == "torch" || g.module == "torch.storage" {
        storage_class_element_size(&g.name)
    } else {
        None
    }
}

/// [`storage_element_size`] by class name alone.
pub fn storage_class_element_size(name: &str) -> Option<u64> {
    if let Some(d) = DType::from_storage_name(name) {
        return Some(d.size());
    }
    Some(match name {
        "QInt32Storage" => 4,
        "QInt8Storage"
        | "QUInt8Storage"
        | "QUInt4x2Storage"
        | "QUInt2x4Storage"
        | "Float8_e4m3fnuzStorage"
        | "Float8_e5m2fnuzStorage" => 1,
        "ComplexDoubleStorage" => 16,
        _ => return None,
    })
}

/// The dtype safetensors can hold for a storage class of `torch` or
/// `torch.storage`.
pub fn storage_dtype(g: &Import) -> Option<DType> {
    (g.module == "torch" || g.module == "torch.storage")
        .then(|| DType::from_storage_name(&g.name))
        .flatten()
}

/// A torch zip checkpoint as torch's `PyTorchStreamReader` sees it: every
/// record lives under the folder that the *first* central-directory entry's
/// name begins with, and a record is looked up by `<root>/<name>` the way
/// miniz compares names: without ASCII case (`DATA.PKL` is `data.pkl`).
#[derive(Debug)]
pub struct Layout<'a> {
    /// The folder before the first `/` of the first entry.
    pub root: &'a str,
    /// `constants.pkl` is a record: `torch.load` hands the file to
    /// `torch.jit.load`, which compiles and runs its `code/`.
    pub torchscript: bool,
    /// Entries by their ASCII-lowercased name under the root (first one
    /// wins; names equal without case are a discrepancy scan reports and
    /// convert refuses).
    records: HashMap<String, &'a Entry>,
}

impl<'a> Layout<'a> {
    /// The layout, or `None` when the archive is not one torch would load:
    /// no entry, a first name without a folder, or neither `data.pkl` nor
    /// `constants.pkl` under the root.
    pub fn of(ar: &'a Archive) -> Option<Layout<'a>> {
        let (root, _) = ar.entries.first()?.name.split_once('/')?;
        let mut records = HashMap::new();
        for e in &ar.entries {
            if let Some(rel) = strip_root(&e.name, root) {
                records.entry(rel.to_ascii_lowercase()).or_insert(e);
            }
        }
        let torchscript = records.contains_key("constants.pkl");
        if !torchscript && !records.contains_key("data.pkl") {
            return None;
        }
        Some(Layout {
            root,
            torchscript,
            records,
        })
    }

    /// The record `<root>/<rel>`.
    pub fn record(&self, rel: &str) -> Option<&'a Entry> {
        self.records.get(&rel.to_ascii_lowercase()).copied()
    }

    /// `name` relative to the root, when it lies under it.
    pub fn relative<'n>(&self, name: &'n str) -> Option<&'n str> {
        strip_root(name, self.root)
    }

    /// `name` relative to the root, lowercased as torch compares it.
    pub fn relative_folded(&self, name: &str) -> Option<String> {
        self.relative(name).map(str::to_ascii_lowercase)
    }

    /// The record holding storage `key` (`<root>/data/<key>`).
    pub fn storage(&self, key: &str) -> Option<&'a Entry> {
        self.record(&format!("data/{key}"))
    }
}

/// `name` under `root/`, comparing the root without ASCII case.
fn strip_root<'n>(name: &'n str, root: &str) -> Option<&'n str> {
    let n = root.len();
    (name.len() > n + 1
        && name.as_bytes()[n] == b'/'
        && name.is_char_boundary(n)
        && name[..n].eq_ignore_ascii_case(root))
    .then(|| &name[n + 1..])
}

/// A persistent id `('storage', storage_type, key, location, numel, ...)`,
/// as `torch.load`'s `persistent_load` unpacks it (zip and legacy alike;
/// legacy ids add `view_metadata` at index 5).
#[derive(Clone, Debug)]
pub struct StoragePid {
    /// The storage class global, when index 1 is one.
    pub storage_type: Option<Import>,
    /// Bytes per element, when the class is a torch storage class.
    pub element_size: Option<u64>,
    pub key: String,
    /// The location string (index 3: `cpu`, `cuda:0`, `meta`...).
    pub location: Option<String>,
    /// Elements, when index 4 is an int.
    pub numel: Option<i64>,
    /// Items in the tuple (torch's zip loader unpacks exactly 5).
    pub len: usize,
    /// Index 5 (legacy `view_metadata`), when present.
    pub view: Option<NodeId>,
}

impl StoragePid {
    /// The dtype safetensors can hold, when there is one.
    pub fn dtype(&self) -> Option<DType> {
        self.storage_type.as_ref().and_then(storage_dtype)
    }
}

/// Why a persistent id is not a storage reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidError {
    NotTuple,
    /// A tuple, but not `('storage', type, key, location, numel, ...)`.
    NotStorage,
    /// The key at index 2 is not a string.
    KeyNotString,
}

impl std::fmt::Display for PidError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PidError::NotTuple => "is not a tuple",
            PidError::NotStorage => "is not ('storage', type, key, location, numel)",
            PidError::KeyNotString => "has a storage key that is not a string",
        })
    }
}

/// Read a storage persistent id.
pub fn parse_storage_pid(s: &Stream, pid: NodeId) -> Result<StoragePid, PidError> {
    let items = s.as_seq(pid).ok_or(PidError::NotTuple)?;
    if items.len() < 5 || items.first().and_then(|&i| s.as_str(i)) != Some("storage") {
        return Err(PidError::NotStorage);
    }
    let storage_type = s.as_global(items[1]).cloned();
    let key = s.as_str(items[2]).ok_or(PidError::KeyNotString)?.to_owned();
    Ok(StoragePid {
        element_size: storage_type.as_ref().and_then(storage_element_size),
        storage_type,
        key,
        location: s.as_str(items[3]).map(str::to_owned),
        numel: s.as_int(items[4]),
        len: items.len(),
        view: items.get(5).copied(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pickguard_pickle::{Options, ReadView, run_stream};

    fn entry(name: &str, size: u64) -> Entry {
        Entry {
            name: name.into(),
            method: 0,
            flags: 0,
            crc32: 0,
            compressed_size: size,
            size,
            local_header_offset: 0,
            data_offset: Some(0),
            external_attr: 0,
        }
    }

    fn archive(names: &[(&str, u64)]) -> Archive {
        Archive {
            entries: names.iter().map(|&(n, s)| entry(n, s)).collect(),
            ..Archive::default()
        }
    }

    #[test]
    fn the_root_is_the_first_entrys_folder() {
        let ar = archive(&[
            ("model/data.pkl", 10),
            ("other/data.pkl", 20),
            ("model/data/0", 16),
            ("modelx/data/1", 4),
            ("model/data/1", 8),
        ]);
        let l = Layout::of(&ar).expect("torch layout");
        assert_eq!(l.root, "model");
        assert!(!l.torchscript);
        assert_eq!(l.record("data.pkl").map(|e| e.size), Some(10));
        assert_eq!(l.storage("0").map(|e| e.size), Some(16));
        assert_eq!(l.storage("1").map(|e| e.size), Some(8));
        assert!(
            l.relative("modelx/data/1").is_none(),
            "modelx/ is not under model/"
        );
        assert_eq!(l.relative("model/data/0"), Some("data/0"));
        assert_eq!(l.relative("modelx/data/0"), None);
    }

    #[test]
    fn torchscript_and_non_torch_archives() {
        let ts = archive(&[("m/constants.pkl", 1), ("m/code/__torch__.py", 1)]);
        assert!(Layout::of(&ts).expect("torchscript").torchscript);
        // data.pkl under another folder than the first entry's: torch's
        // reader looks under the first folder and finds nothing.
        let moved = archive(&[("a/version", 1), ("b/data.pkl", 1)]);
        assert!(Layout::of(&moved).is_none());
        assert!(Layout::of(&archive(&[("data.pkl", 1)])).is_none());
        assert!(Layout::of(&archive(&[])).is_none());
    }

    #[test]
    fn records_are_found_without_case_as_miniz_compares() {
        let ar = archive(&[("m/version", 1), ("M/DATA.PKL", 7), ("m/Data/0", 4)]);
        let l = Layout::of(&ar).expect("DATA.PKL is data.pkl to torch");
        assert_eq!(l.record("data.pkl").map(|e| e.size), Some(7));
        assert_eq!(l.storage("0").map(|e| e.size), Some(4));
        assert_eq!(l.relative_folded("M/DATA.PKL").as_deref(), Some("data.pkl"));
    }

    #[test]
    fn duplicate_records_resolve_to_the_first() {
        let ar = archive(&[("m/data.pkl", 1), ("m/data/0", 4), ("m/data/0", 400)]);
        assert_eq!(
            Layout::of(&ar).and_then(|l| l.storage("0")).map(|e| e.size),
            Some(4)
        );
    }

    fn stream(pickle: &[u8]) -> Stream {
        run_stream(pickle, 0, 0, ReadView::Linear, &Options::default())
    }

    #[test]
    fn storage_pids_are_read_as_torch_reads_them() {
        // (storage, torch.FloatStorage, '0', 'cpu', 6) as a protocol-2 tuple.
        let p = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06t.";
        let s = stream(p);
        let pid = parse_storage_pid(&s, s.result.expect("result")).expect("storage pid");
        assert_eq!(pid.key, "0");
        assert_eq!(pid.numel, Some(6));
        assert_eq!(pid.element_size, Some(4));
        assert_eq!(pid.dtype(), Some(DType::F32));
        assert!(pid.view.is_none());
        // The same class name from another module is not a storage.
        let p = b"\x80\x02(X\x07\x00\x00\x00storagecevil\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06t.";
        let s = stream(p);
        let pid = parse_storage_pid(&s, s.result.expect("result")).expect("storage pid");
        assert_eq!((pid.element_size, pid.dtype()), (None, None));
    }

    #[test]
    fn other_pids_are_refused_with_a_reason() {
        let cases: [(&[u8], PidError); 3] = [
            (b"\x80\x02K\x01.", PidError::NotTuple),
            (
                b"\x80\x02(X\x06\x00\x00\x00moduleK\x01t.",
                PidError::NotStorage,
            ),
            (
                b"\x80\x02(X\x07\x00\x00\x00storageNK\x00NK\x01t.",
                PidError::KeyNotString,
            ),
        ];
        for (p, want) in cases {
            let s = stream(p);
            let got = parse_storage_pid(&s, s.result.expect("result")).map(|_| ());
            assert_eq!(got, Err(want), "{p:?}");
        }
    }
}
