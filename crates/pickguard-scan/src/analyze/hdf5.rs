//! HDF5 files as Keras, h5py and PyTables read them: the attributes of
//! every object. The root's `model_config` is the JSON Keras rebuilds a
//! `.h5` model from (judged as a `.keras` config is); a string attribute
//! that is a pickle is judged as one (PyTables unpickles string attributes
//! that end in `.` when they are read, as `tables.open_file` and
//! `pandas.read_hdf` do); a PyTables object array (`PSEUDOATOM = object`)
//! holds pickles in its data, which is not read, so it is inconclusive.
//! Other datasets are numbers to h5py, Keras and PyTables.

use super::*;
use pickguard_formats::hdf5::{self, Attribute, Value};

impl Scanner {
    pub(super) fn scan_hdf5(
        &self,
        ctx: &mut Ctx,
        data: &[u8],
        member: &Option<String>,
        depth: usize,
        top: bool,
    ) {
        let at = |m: &Option<String>| loc(m, None, None, ReadView::Linear);
        let attrs: Vec<(String, Attribute)> = match hdf5::attributes(data, true) {
            Ok(a) => a,
            Err(e) => {
                ctx.push(Finding::new(
                    Rule::UnsupportedFormat,
                    format!(
                        "HDF5 file partly unread ({e}): attributes there (a Keras model_config, pickles PyTables would load) were not analysed"
                    ),
                    at(member),
                ));
                // The root alone still carries what Keras reads.
                match hdf5::root_attributes(data) {
                    Ok(root) => root.into_iter().map(|a| ("/".to_owned(), a)).collect(),
                    Err(_) => {
                        if top {
                            ctx.set_format("hdf5");
                        }
                        return;
                    }
                }
            }
        };
        let keras = attrs
            .iter()
            .any(|(p, a)| p == "/" && a.name == "model_config");
        if top {
            ctx.set_format(if keras { "keras-h5" } else { "hdf5" });
        }
        for (path, a) in &attrs {
            let m = join_member(member, &format!("<attribute {} of {path}>", a.name));
            match (path.as_str(), a.name.as_str(), &a.value) {
                ("/", "model_config" | "training_config", v) => match v.as_str_bytes() {
                    Some(json) => self.check_keras(ctx, json, &m, depth),
                    None => ctx.push(Finding::new(
                        Rule::Unreadable,
                        format!(
                            "attribute {} is not one string, so the Keras config was not analysed",
                            a.name
                        ),
                        at(&m),
                    )),
                },
                (_, "PSEUDOATOM", v) if v.as_str_bytes() == Some(b"object") => {
                    ctx.push(Finding::new(
                        Rule::UnsupportedFormat,
                        format!(
                            "{path} is a PyTables object array: PyTables and pandas.read_hdf unpickle its rows, which are not analysed"
                        ),
                        at(&m),
                    ))
                }
                (_, _, Value::Strings(v)) => {
                    // PyTables unpickles a string attribute that ends in
                    // `.` (after numpy strips trailing NULs).
                    for s in v
                        .iter()
                        .filter(|s| s.ends_with(b".") && pk::is_plausible_start(s))
                    {
                        self.scan_pickle_region(ctx, s, 0, &m, Role::Generic, true);
                    }
                }
                _ => {}
            }
        }
    }
}
