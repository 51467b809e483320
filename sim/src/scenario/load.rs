//! Reading a scenario file: the name check, [`parse`] and [`load`] into a [`Loaded`], and the
//! errors that name the line of the key at fault.

use std::path::{Path, PathBuf};

use super::Scenario;
use crate::error::toml_error_message;
use crate::error::{Result, SimError};

/// The longest scenario name (it names a directory).
pub const MAX_NAME_CHARS: usize = 100;

/// A scenario name is an identifier that becomes one directory, `results/<name>/`: letters,
/// digits and `-_.+@=,`, not starting with `.`, at most [`MAX_NAME_CHARS`] characters. So no path
/// separators, no `..`, no absolute path, no control characters.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let shown: String = name.chars().take(40).flat_map(char::escape_debug).collect();
    if name.is_empty() {
        return Err("the scenario name is empty; give an identifier such as \"my_study\"".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "the scenario name \"{shown}…\" is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "the scenario name \"{shown}\" starts with `.`; names become directories under results/ and must not be hidden or climb out (`..`)"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || "-_.+@=,".contains(*c)))
    {
        return Err(format!(
            "the scenario name \"{shown}\" contains {}; names become directories under results/: use letters, digits and - _ . + @ = , only",
            match c {
                '/' | '\\' => "a path separator".to_string(),
                c if c.is_control() => format!("the control character {}", c.escape_default()),
                c => format!("`{c}`"),
            }
        ));
    }
    Ok(())
}

/// 1-based line of a key in TOML `text`, by its path (tables, then the key): the key's line,
/// or the line of the deepest table of the path that is present (`None` when none is, or the
/// text does not parse).
pub fn line_of_key(text: &str, path: &[&str]) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut line = None;
    for seg in path {
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *seg) else {
            break;
        };
        let start = k.span().start.min(text.len());
        line = Some(text[..start].matches('\n').count() + 1);
        match v.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    line
}

/// The key of `table` that `check` rejects on its own (each key tried alone, the others left
/// at their defaults): names the key a parameter parser's message leaves out.
fn blame_key(table: &toml::Value, check: &dyn Fn(&toml::Value) -> Result<()>) -> Option<String> {
    table.as_table()?.iter().find_map(|(k, v)| {
        let mut one = toml::Table::new();
        one.insert(k.clone(), v.clone());
        check(&toml::Value::Table(one)).is_err().then(|| k.clone())
    })
}

/// A loaded scenario with its base directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub base_dir: PathBuf,
    pub scenario: Scenario,
    /// The scenario file's text (to name the line of a key in errors).
    pub text: std::sync::Arc<str>,
}

pub fn load(path: &Path) -> Result<Loaded> {
    let text = crate::input::read_text(path, crate::input::MAX_CONFIG_BYTES).map_err(|e| {
        SimError::Io {
            path: path.to_path_buf(),
            msg: format!("cannot read scenario: {e}"),
        }
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Loaded> {
    let scenario: Scenario = toml::from_str(text).map_err(|e| SimError::Scenario {
        path: path.to_path_buf(),
        msg: toml_error_message(text, &e),
    })?;
    if let Err(msg) = check_name(&scenario.name) {
        let line = line_of_key(text, &["name"])
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        return Err(SimError::Scenario {
            path: path.to_path_buf(),
            msg: format!("{line}field `name`: {msg}"),
        });
    }
    Ok(Loaded {
        path: path.to_path_buf(),
        base_dir: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        scenario,
        text: text.into(),
    })
}

impl Loaded {
    pub(super) fn err(&self, msg: impl Into<String>) -> SimError {
        SimError::Scenario {
            path: self.path.clone(),
            msg: msg.into(),
        }
    }

    /// A catalogue or parameter-parser error (`Config`) as an error of this scenario file.
    pub(super) fn wrap(&self, e: SimError) -> SimError {
        match e {
            SimError::Config(m) => self.err(m),
            other => other,
        }
    }

    /// An error about the key at `path` (tables, then the key): names its line when the file
    /// has it.
    pub(super) fn err_at(&self, path: &[&str], msg: impl Into<String>) -> SimError {
        match line_of_key(&self.text, path) {
            Some(line) => self.err(format!("line {line}: {}", msg.into())),
            None => self.err(msg),
        }
    }

    /// An error of a parameter table (`[SECTION.NAME]`) from its parser: the message with the
    /// line of the key at fault (found by [`blame_key`]) or of the table.
    pub(super) fn table_err(
        &self,
        section: &str,
        name: &str,
        table: &toml::Value,
        e: SimError,
        check: &dyn Fn(&toml::Value) -> Result<()>,
    ) -> SimError {
        let msg = match e {
            SimError::Config(m) | SimError::Scenario { msg: m, .. } => m,
            other => return other,
        };
        match blame_key(table, check) {
            Some(k) => {
                let msg = msg.replacen(
                    &format!("[{section}.{name}]:"),
                    &format!("[{section}.{name}] `{k}`:"),
                    1,
                );
                self.err_at(&[section, name, &k], msg)
            }
            None => self.err_at(&[section, name], msg),
        }
    }

    pub(super) fn rel(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}
