//! The last step of compiling a root: every template gets its content hash
//! (see [`crate::hash`] for what it covers), once every template it may
//! depend on is known.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::Parsed;
use crate::hash::{self, ContentHash};
use crate::memo::Memo;
use crate::registry::{Entry, FastMap, Index};

/// Entries with their hash set, by the entry's memo key and the hash.
static STAMPED: Memo<Arc<Entry>> = Memo::new(20_000);

/// `index` with every entry's hash set. An entry's memo key then covers
/// its hash too, so later memoised steps keyed by it see a change in what
/// it depends on.
pub(crate) fn stamp(index: Index, parsed: &Parsed) -> Index {
    let own: FastMap<String, ContentHash> = parsed
        .sources
        .iter()
        .map(|(key, src)| {
            let files = parsed.ref_files.get(key);
            let schema = match super::walk::ref_file(files, "input_schema") {
                Some(Ok((_, text))) => Some(text.as_str()),
                _ => None,
            };
            let others = files.into_iter().flatten().filter_map(|(field, read)| {
                let text = match read {
                    Ok((_, text)) => Ok(text.as_str()),
                    Err(why) => Err(why.as_str()),
                };
                (field != "input_schema").then_some((field.as_str(), text))
            });
            (
                format!("{}@{}", key.0, key.1),
                hash::own_digest(src.digest, schema, others),
            )
        })
        .collect();
    let mut out = Index::default();
    for entry in index.entries() {
        let Some(&mine) = own.get(&entry.id) else {
            out.insert(entry.clone());
            continue;
        };
        let dependencies: Vec<(&str, ContentHash)> = dependencies(entry, &index)
            .into_iter()
            .filter_map(|id| Some((id, *own.get(id)?)))
            .collect();
        let version_hash = hash::version_hash(mine, dependencies);
        if entry.template.hash == version_hash {
            out.insert(entry.clone());
            continue;
        }
        let key = crate::memo::key(&[&entry.memo_key.to_le_bytes(), version_hash.as_bytes()]);
        let stamped = STAMPED.get(key).unwrap_or_else(|| {
            let mut stamped = (**entry).clone();
            stamped.template.hash = version_hash;
            stamped.memo_key = key;
            let stamped = Arc::new(stamped);
            STAMPED.put(key, stamped.clone());
            stamped
        });
        out.insert(stamped);
    }
    out.sort();
    out
}

/// The ids of every template `entry` reaches through its parent and the
/// literal names its source includes, imports or extends (resolved as a
/// render resolves them), transitively, itself excluded.
pub(crate) fn dependencies<'a>(entry: &'a Entry, index: &'a Index) -> Vec<&'a str> {
    let mut seen: HashSet<&str> = HashSet::from([entry.id.as_str()]);
    let mut stack: Vec<&Entry> = vec![entry];
    let mut out = BTreeMap::new();
    while let Some(e) = stack.pop() {
        for dep in direct_dependencies(e, index) {
            if seen.insert(dep.id.as_str()) {
                out.insert(dep.id.as_str(), ());
                stack.push(dep);
            }
        }
    }
    out.into_keys().collect()
}

/// The templates `entry` names itself: its parent, then every include,
/// import or extends target that resolves, in source order. A name
/// computed at render time may give any template whose name starts with
/// its literal prefix: all of them count (so the hash covers whatever it
/// may include).
pub(crate) fn direct_dependencies<'a>(entry: &'a Entry, index: &'a Index) -> Vec<&'a Arc<Entry>> {
    use super::targets::Target;
    let parent = entry
        .template
        .extends
        .as_deref()
        .and_then(|id| index.resolve(id).ok());
    let mut out: Vec<&Arc<Entry>> = parent.into_iter().collect();
    let add = |dep: &'a Arc<Entry>, out: &mut Vec<&'a Arc<Entry>>| {
        if !out.iter().any(|d| d.id == dep.id) && dep.id != entry.id {
            out.push(dep);
        }
    };
    for r in super::targets::tag_refs(&entry.source).iter() {
        match &r.target {
            Target::Names(names) => {
                for name in names {
                    if let Ok(dep) = index.resolve(name) {
                        add(dep, &mut out);
                    }
                }
            }
            Target::Computed { prefix } => {
                for dep in index
                    .entries()
                    .filter(|e| e.template.name.starts_with(prefix.as_str()))
                {
                    add(dep, &mut out);
                }
            }
        }
    }
    out
}
