//! `promptbook convert`: a `.prompty` file rewritten as a native
//! `.prompt.jinja` file.

use crate::error::{Error, ErrorKind};
use crate::load::parse::split_prompty_front_matter;
use crate::load::prompty::{add_native_defaults, map_front_matter, read_front_matter};

/// A Prompty body as a native `.prompt.jinja` body: role markers written
/// the native way (`# User:` -> `user:`), and text before the first marker
/// under an explicit `system:`. Native role lines carry no attributes, so a
/// marker's `name` is dropped, with a warning.
pub(crate) fn native_body(body: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(body.len() + 16);
    let mut warnings = Vec::new();
    let mut seen_role = false;
    let mut pending_text = false;
    for line in body.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        match crate::body::prompty_role_line(content.trim()) {
            Some((role, name)) => {
                if let Some(name) = name {
                    warnings.push(format!(
                        "the name `{name}` of a `{role}` marker is dropped: native role lines carry no attributes"
                    ));
                }
                seen_role = true;
                out.push_str(&format!("{role}:"));
                out.push_str(&line[content.len()..]);
            }
            None => {
                if !seen_role && !pending_text && !content.trim().is_empty() {
                    out.push_str("system:\n");
                    pending_text = true;
                }
                out.push_str(line);
            }
        }
    }
    (out, warnings)
}

/// A `.prompty` file converted to a native `.prompt.jinja` file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Converted {
    /// The native file's text.
    pub text: String,
    /// The version it carries (`0.0.0` when the Prompty file had none).
    pub version: semver::Version,
    /// What the conversion could not carry over.
    pub warnings: Vec<String>,
}

/// Converts the text of a `.prompty` file to the equivalent native
/// `.prompt.jinja` file: version, description, labels, parameters (mapped
/// from Prompty's input kinds) and model in the front matter; the body with
/// native role lines. The result renders the same messages under
/// promptbook's rules, except for blank lines around Jinja block tags
/// (native templates trim them) and the newline-only trimming of message
/// content (native messages are trimmed of all surrounding whitespace).
///
/// # Errors
/// [`ErrorKind::Syntax`](crate::ErrorKind::Syntax) when the front matter is
/// not YAML or not a Prompty front matter, or its version is not semver
/// (as the loader says of the same file).
pub fn convert_prompty(text: &str) -> Result<Converted, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (fm_text, body) = match split_prompty_front_matter(text) {
        Some((fm, body, ..)) => (fm, body),
        None => ("", text),
    };
    let fm = read_front_matter(fm_text).map_err(|e| {
        Error::new(
            ErrorKind::Syntax,
            format!(
                "the front matter is not valid YAML: {}",
                e.without_snippet()
            ),
        )
    })?;
    let mut mapped = map_front_matter(&fm, None, &Default::default())
        .map_err(|m| Error::new(ErrorKind::Syntax, m))?;
    add_native_defaults(&mut mapped);
    // The loader refuses a version that is not semver; so does convert
    // (an absent version is 0.0.0 for both, with a warning).
    let version_text = mapped.manifest["version"].as_str().unwrap_or("0.0.0");
    let version = semver::Version::parse(version_text.trim()).map_err(|e| {
        Error::new(
            ErrorKind::Syntax,
            format!("version `{version_text}` is not a semver version (MAJOR.MINOR.PATCH)"),
        )
        .with_source(e)
    })?;
    let mut manifest = mapped.manifest;
    if let Some(m) = manifest.as_object_mut() {
        m.insert("version".into(), version.to_string().into());
    }
    // The history-loop idiom becomes a splice of a `messages` parameter.
    let inputs: Vec<String> = manifest
        .get("parameters")
        .and_then(serde_json::Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let (body, lists) =
        crate::role_loop::rewrite_as_splices(body, &|n| inputs.iter().any(|i| i == n));
    // Loops of other shapes are left as written: the native file will not
    // load until they are replaced; say where.
    let tokens = crate::lex::tokenize(&body);
    let left: Vec<String> = crate::role_loop::find(&body, &tokens, crate::body::Grammar::Prompty)
        .into_iter()
        .map(|p| {
            let line = body[..p.at].matches('\n').count() + 1;
            format!(
                "body line {line}: `{}` prints role lines from data and was not rewritten (not \
                 the common shape of a loop over a whole input that prints the role and the \
                 content): the converted file will not load until that history is passed as a \
                 `messages` input and spliced alone on a line (docs/prompty.md)",
                p.line
            )
        })
        .collect();
    let mut spliced = Vec::new();
    for list in lists {
        if let Some(params) = manifest
            .as_object_mut()
            .map(|m| {
                m.entry("parameters")
                    .or_insert_with(|| serde_json::json!({}))
            })
            .and_then(serde_json::Value::as_object_mut)
        {
            let mut param = serde_json::json!({"type": "messages", "default": []});
            if let Some(old) = params.get(&list) {
                for key in ["description", "default"] {
                    if let Some(v) = old
                        .get(key)
                        .filter(|v| v.is_array() || key == "description")
                    {
                        param[key] = v.clone();
                    }
                }
            }
            params.insert(list.clone(), param);
            spliced.push(format!(
                "the loop printing `{list}` turn by turn is now a splice, `{{{{ {list} }}}}`, of the \
                 `messages` parameter `{list}`: each item becomes its own message"
            ));
        }
    }
    let (body, mut warnings) = native_body(&body);
    warnings.splice(0..0, spliced);
    warnings.extend(left);
    let yaml = serde_saphyr::to_string(&manifest).map_err(|e| {
        Error::new(
            ErrorKind::Syntax,
            format!("cannot write the front matter: {e}"),
        )
    })?;
    let mut all = mapped.warnings;
    all.append(&mut warnings);
    let mut out = String::from("---\n");
    out.push_str(&yaml);
    if !yaml.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("---\n");
    out.push_str(&body);
    Ok(Converted {
        text: out,
        version,
        warnings: all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_convert_to_native_role_lines() {
        let (body, warnings) =
            native_body("Intro text\n# User:\n{{q}}\nASSISTANT:\nok\nuser[name=\"Bob\"]:\nhi\n");
        assert_eq!(
            body,
            "system:\nIntro text\nuser:\n{{q}}\nassistant:\nok\nuser:\nhi\n"
        );
        assert_eq!(warnings.len(), 1);
    }
}
