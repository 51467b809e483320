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
    let mut shown = String::new();
    for c in name.chars().take(40) {
        crate::error::push_escaped(&mut shown, c);
    }
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
                c if crate::error::is_unsafe_char(c) => format!(
                    "the control or formatting character {}",
                    crate::error::echo(&c.to_string())
                ),
                c => format!("`{c}`"),
            }
        ));
    }
    Ok(())
}

/// 1-based line of a key in TOML `text`, by its path (tables, then the key; a number steps into
/// an array of tables such as `[[replica_groups]]`, from 0): the key's line, or the line of the
/// deepest table of the path that is present (`None` when none is, or the text does not parse).
pub fn line_of_key(text: &str, path: &[&str]) -> Option<usize> {
    walk_key(text, path).map(|(line, _)| line)
}

/// [`line_of_key`] only when the whole path is present.
pub fn line_of_exact_key(text: &str, path: &[&str]) -> Option<usize> {
    walk_key(text, path).and_then(|(line, whole)| whole.then_some(line))
}

/// The line [`line_of_key`] gives, and whether every segment of `path` was found.
fn walk_key(text: &str, path: &[&str]) -> Option<(usize, bool)> {
    use toml::de::{DeTable, DeValue};
    type Found<'a, 'i> = Option<(Option<usize>, &'a DeValue<'i>)>;
    fn find<'a, 'i>(t: &'a DeTable<'i>, seg: &str) -> Found<'a, 'i> {
        let (k, v) = t.iter().find(|(k, _)| k.get_ref().as_ref() == seg)?;
        Some((Some(k.span().start), v.get_ref()))
    }
    let doc = DeTable::parse(text).ok()?;
    let line_at = |start: usize| text[..start.min(text.len())].matches('\n').count() + 1;
    let mut line = None;
    let mut cur: Option<&DeValue> = None;
    for seg in path {
        let next = match cur {
            None => find(doc.get_ref(), seg),
            Some(DeValue::Table(t)) => find(t, seg),
            // An entry of an array of tables: the line of its first key (a `[[…]]` header has
            // no span of its own).
            Some(DeValue::Array(items)) => {
                let item = seg.parse::<usize>().ok().and_then(|i| items.get(i));
                item.map(|item| {
                    let first = match item.get_ref() {
                        DeValue::Table(t) => t.iter().map(|(k, _)| k.span().start).min(),
                        _ => Some(item.span().start),
                    };
                    (first, item.get_ref())
                })
            }
            Some(_) => None,
        };
        let Some((start, v)) = next else {
            return line.map(|l| (l, false));
        };
        if let Some(start) = start {
            line = Some(line_at(start));
        }
        cur = Some(v);
    }
    line.map(|l| (l, true))
}

/// The key of `table` that `check` rejects on its own (each key tried alone, the others left
/// at their defaults): names the key a parameter parser's message leaves out. Of several, the
/// one whose own error is the table's error `msg` (`unknown field `skip_join`` blamed the
/// valid-alone-but-not-here `chunk_size` before it).
fn blame_key(
    table: &toml::Value,
    check: &dyn Fn(&toml::Value) -> Result<()>,
    msg: &str,
) -> Option<String> {
    let mut first = None;
    for (k, v) in table.as_table()? {
        let mut one = toml::Table::new();
        one.insert(k.clone(), v.clone());
        let Err(e) = check(&toml::Value::Table(one)) else {
            continue;
        };
        if e.to_string() == msg {
            return Some(k.clone());
        }
        first.get_or_insert_with(|| k.clone());
    }
    first
}

/// A loaded scenario with its base directory.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub base_dir: PathBuf,
    pub scenario: Scenario,
    /// The scenario file's text (to name the line of a key in errors).
    pub text: std::sync::Arc<str>,
    /// While one `[[replica_groups]]` entry is resolved: its index (from 0), so that errors
    /// about its `gpu`, `tp`, `pp` and `count` name the entry's lines.
    pub group: Option<usize>,
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
        group: None,
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
        match self.line_of(path) {
            Some(line) => self.err(format!("line {line}: {}", msg.into())),
            None => self.err(msg),
        }
    }

    /// A catalogue error (`Config`) about the key at `path`, with its line ([`Loaded::err_at`]).
    pub(super) fn wrap_at(&self, path: &[&str], e: SimError) -> SimError {
        match e {
            SimError::Config(m) => self.err_at(path, m),
            other => other,
        }
    }

    /// The line of the key at `path`; while a `[[replica_groups]]` entry is resolved, a
    /// top-level `gpu`, `tp`, `pp` or `replicas` is the entry's own key when it has one.
    fn line_of(&self, path: &[&str]) -> Option<usize> {
        if let (Some(i), [key]) = (self.group, path) {
            let key = if *key == "replicas" { "count" } else { *key };
            if matches!(key, "gpu" | "tp" | "pp" | "count") {
                let i = i.to_string();
                let own = line_of_exact_key(&self.text, &["replica_groups", &i, key]);
                if own.is_some() {
                    return own;
                }
            }
        }
        line_of_key(&self.text, path)
    }

    /// An error of a parameter table (`[SECTION.NAME]`) from its parser: the message with the
    /// line of the key at fault (found by [`blame_key`]) or of the table.
    /// `[SECTION.NAME]` must be a table: an array (`[[policies.vllm]]`) or a plain value there
    /// would otherwise be read positionally or fail with a type error about its first field.
    pub(super) fn expect_table(&self, section: &str, name: &str, v: &toml::Value) -> Result<()> {
        let got = match v {
            toml::Value::Table(_) => return Ok(()),
            toml::Value::Array(_) => format!(
                "an array (`[[{section}.{name}]]` or `{name} = [...]`: write one `[{section}.{name}]` table)"
            ),
            toml::Value::String(_) => "a string".to_string(),
            toml::Value::Boolean(_) => "a boolean".to_string(),
            toml::Value::Datetime(_) => "a date".to_string(),
            toml::Value::Integer(_) | toml::Value::Float(_) => "a number".to_string(),
        };
        Err(self.err_at(
            &[section, name],
            format!(
                "[{section}.{}]: expected a table of parameters, got {got}",
                crate::error::echo(name)
            ),
        ))
    }

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
        match blame_key(table, check, &msg) {
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
