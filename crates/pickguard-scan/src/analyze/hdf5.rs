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
        let attrs: Vec<(std::rc::Rc<str>, Attribute)> = match hdf5::attributes(data, true) {
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
                    Ok(root) => root.into_iter().map(|a| ("/".into(), a)).collect(),
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
            .any(|(p, a)| &**p == "/" && a.name == "model_config");
        if top {
            ctx.set_format(if keras { "keras-h5" } else { "hdf5" });
        }
        let mut pickles = Pickles::default();
        for (path, a) in &attrs {
            let m = join_member(member, &format!("<attribute {} of {path}>", a.name));
            let is = |want: &[u8]| {
                a.value
                    .as_str_bytes()
                    .is_some_and(|v| hdf5::readings(v).any(|r| r == want))
            };
            match (&**path, a.name.as_str(), &a.value) {
                ("/", "model_config" | "training_config", v) => match v.as_str_bytes() {
                    // h5py hands Keras the string up to a NUL; judge every reading.
                    Some(json) => {
                        for r in hdf5::readings(json) {
                            self.check_keras(ctx, r, &m, depth);
                        }
                    }
                    None => ctx.push(Finding::new(
                        Rule::Unreadable,
                        format!(
                            "attribute {} is not one string, so the Keras config was not analysed",
                            a.name
                        ),
                        at(&m),
                    )),
                },
                // PyTables makes a VLArray an object array (rows unpickled)
                // for PSEUDOATOM "object", or FLAVOR "Object" in 1.x files.
                (_, "PSEUDOATOM", _) if is(b"object") => ctx.push(Finding::new(
                    Rule::UnsupportedFormat,
                    format!(
                        "{path} is a PyTables object array: PyTables and pandas.read_hdf unpickle its rows, which are not analysed"
                    ),
                    at(&m),
                )),
                (_, "FLAVOR", _) if is(b"Object") => ctx.push(Finding::new(
                    Rule::UnsupportedFormat,
                    format!(
                        "{path} is a PyTables 1.x object array (FLAVOR Object): PyTables unpickles its rows, which are not analysed"
                    ),
                    at(&m),
                )),
                (_, _, Value::Strings(v)) => {
                    // PyTables unpickles a string attribute that ends in
                    // `.`, read whole or (variable-length) up to a NUL.
                    for s in v {
                        pickles.offer(s, &m);
                    }
                }
                _ => {}
            }
        }
        for (r, m) in pickles.best.into_values() {
            self.scan_pickle_region(ctx, r, 0, &m, Role::Generic, true);
        }
    }
}

/// The string attributes PyTables would unpickle (ending in `.`, read whole
/// or up to a NUL), one per string start: references may share a heap
/// object at many lengths, and a pickle read from one start is the same
/// opcodes whatever its length, so the longest such reading shows what
/// every shorter one would do (a shorter one stops or breaks where the
/// longer goes on). Each byte is looked at once per start.
#[derive(Default)]
struct Pickles<'a> {
    /// String start -> (bytes searched for a NUL so far, the first NUL).
    nul: HashMap<usize, (usize, Option<usize>)>,
    /// String start -> its longest unpicklable reading and where it is
    /// (ordered, so reports come out alike every run).
    best: BTreeMap<usize, (&'a [u8], Option<String>)>,
}

impl<'a> Pickles<'a> {
    fn offer(&mut self, s: &'a [u8], member: &Option<String>) {
        let start = s.as_ptr() as usize;
        let (searched, found) = self.nul.entry(start).or_insert((0, None));
        if found.is_none() && *searched < s.len() {
            *found = s[*searched..]
                .iter()
                .position(|&b| b == 0)
                .map(|i| i + *searched);
            *searched = s.len();
        }
        let cut = found.filter(|&k| k < s.len()).map(|k| &s[..k]);
        for r in std::iter::once(s).chain(cut) {
            if !(r.ends_with(b".") && pk::is_plausible_start(r)) {
                continue;
            }
            let e = self.best.entry(start).or_insert((r, member.clone()));
            if r.len() > e.0.len() {
                *e = (r, member.clone());
            }
        }
    }
}
