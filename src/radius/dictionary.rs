//! RADIUS dictionary: the FreeRADIUS-format dictionary grammar and the tables built from it.
//!
//! This module owns turning dictionary text (`ATTRIBUTE`, `VALUE`, `VENDOR`,
//! `BEGIN-VENDOR`/`END-VENDOR`, `$INCLUDE`) into O(1) lookups of attribute names, types,
//! flags and enumerated value names, keyed by `(vendor, code)`. It knows nothing about
//! packets. The dictionary files shipped in the repository's `dictionaries/` directory are
//! compiled into the binary ([`Dictionary::embedded`]) so the server works without any files
//! on disk; [`Dictionary::load_dir`] reads an operator-supplied directory instead.
//!
//! Semantics worth knowing:
//! * Names (attributes, values, vendors) are matched case-insensitively, as FreeRADIUS does.
//! * Redefining an attribute name with the same vendor and number replaces its type and flags
//!   (so a local file can override a shipped one); with a different number it is an error.
//! * When two names share one `(vendor, code)`, or two value names share one number, lookups
//!   by number return the most recent definition and the older name stays usable as an alias.
//! * `VALUE` lines may come before or after their `ATTRIBUTE`; they are resolved once every
//!   file has been read.
//! * A `BEGIN-VENDOR` block is scoped to the file it is opened in: included files start
//!   outside any block, and every block must be closed before its file ends.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// How deep `$INCLUDE` may nest below the root file. Real dictionaries nest two or three
/// levels; the limit only exists so a pathological tree cannot exhaust the stack.
const MAX_INCLUDE_DEPTH: usize = 16;

/// The repository's dictionary files, by the name `$INCLUDE` uses for them.
const EMBEDDED_FILES: &[(&str, &str)] = &[
    ("dictionary", include_str!("../../dictionaries/dictionary")),
    (
        "dictionary.rfc2865",
        include_str!("../../dictionaries/dictionary.rfc2865"),
    ),
    (
        "dictionary.rfc2866",
        include_str!("../../dictionaries/dictionary.rfc2866"),
    ),
    (
        "dictionary.rfc2869",
        include_str!("../../dictionaries/dictionary.rfc2869"),
    ),
    (
        "dictionary.rfc3162",
        include_str!("../../dictionaries/dictionary.rfc3162"),
    ),
    (
        "dictionary.rfc4818",
        include_str!("../../dictionaries/dictionary.rfc4818"),
    ),
    (
        "dictionary.rfc5176",
        include_str!("../../dictionaries/dictionary.rfc5176"),
    ),
    (
        "dictionary.rfc6911",
        include_str!("../../dictionaries/dictionary.rfc6911"),
    ),
    (
        "dictionary.mikrotik",
        include_str!("../../dictionaries/dictionary.mikrotik"),
    ),
];

/// Attribute names, types and value names loaded from dictionary files.
#[derive(Debug, Clone, Default)]
pub struct Dictionary {
    attributes: Vec<Attribute>,
    by_code: HashMap<(u32, u32), usize>,
    /// Keyed by the ASCII-lowercased name.
    by_name: HashMap<String, usize>,
    values: HashMap<(u32, u32), ValueTable>,
    /// Keyed by the ASCII-lowercased name.
    vendors: HashMap<String, Vendor>,
    vendor_names: HashMap<u32, String>,
}

/// One attribute definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    /// IANA private enterprise number of the vendor; 0 for standard attributes.
    pub vendor: u32,
    pub code: u32,
    pub kind: AttrType,
    pub has_tag: bool,
    /// FreeRADIUS `encrypt=` method: 0 none, 1 User-Password, 2 Tunnel-Password, 3 Ascend.
    pub encrypt: u8,
}

/// Data type of an attribute's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Octets,
    Integer,
    Signed,
    Byte,
    Short,
    Integer64,
    IpAddr,
    Ipv6Addr,
    Ipv6Prefix,
    Ifid,
    Date,
    Ether,
    Tlv,
    /// A type FreeRADIUS knows (e.g. `abinary`, `vsa`, `combo-ip`) that has no dedicated
    /// variant here; treat the value as opaque bytes.
    Other,
}

impl AttrType {
    /// The type for a dictionary type keyword (case-insensitive), accepting FreeRADIUS 3
    /// names and the FreeRADIUS 4 aliases (`uint32`, `ipv4addr`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        let kind = match lower.as_str() {
            "string" => Self::String,
            "octets" => Self::Octets,
            "integer" | "uint32" => Self::Integer,
            "signed" | "int32" => Self::Signed,
            "byte" | "uint8" => Self::Byte,
            "short" | "uint16" => Self::Short,
            "integer64" | "uint64" => Self::Integer64,
            "ipaddr" | "ipv4addr" => Self::IpAddr,
            "ipv6addr" => Self::Ipv6Addr,
            "ipv6prefix" => Self::Ipv6Prefix,
            "ifid" => Self::Ifid,
            "date" => Self::Date,
            "ether" => Self::Ether,
            "tlv" => Self::Tlv,
            "abinary" | "vsa" | "extended" | "long-extended" | "evs" | "ipv4prefix"
            | "combo-ip" | "combo-prefix" | "struct" | "bool" | "boolean" | "int8" | "int16"
            | "int64" | "float32" | "float64" | "time_delta" | "group" => Self::Other,
            _ => return None,
        };
        Some(kind)
    }

    /// Whether `VALUE` lines may name values of this type.
    fn is_enumerable(self) -> bool {
        matches!(
            self,
            Self::Integer | Self::Signed | Self::Byte | Self::Short | Self::Integer64
        )
    }
}

/// A dictionary that could not be loaded, located at `file:line` (line 0 when the problem
/// is the file as a whole, e.g. unreadable or not UTF-8).
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct DictionaryError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Default)]
struct ValueTable {
    by_number: HashMap<u32, String>,
    /// Keyed by the ASCII-lowercased name.
    by_name: HashMap<String, u32>,
}

#[derive(Debug, Clone)]
struct Vendor {
    id: u32,
    /// Octets used for the vendor attribute number inside Vendor-Specific (`format=T,L`).
    type_width: u8,
}

impl Dictionary {
    /// Parse `dir/dictionary`, following `$INCLUDE` relative to the including file
    /// (cycle-safe, depth-limited).
    ///
    /// # Errors
    /// Any unreadable, non-UTF-8 or malformed file, located by file and line.
    pub fn load_dir(dir: &Path) -> Result<Self, DictionaryError> {
        Parser::new(&FsLoader).run(dir.join("dictionary"))
    }

    /// Parse the dictionary files compiled into the binary, starting from `dictionary`.
    /// Each call parses afresh, so callers that look up often should keep the result.
    ///
    /// # Errors
    /// Only if the shipped files are broken, which the unit tests rule out.
    pub fn embedded() -> Result<Self, DictionaryError> {
        Self::parse_files("dictionary", &|name: &str| {
            EMBEDDED_FILES
                .iter()
                .find(|(file, _)| *file == name)
                .map(|(_, text)| Cow::Borrowed(*text))
        })
    }

    /// Parse from in-memory files: `files(name)` supplies `$INCLUDE` targets by file name and
    /// `root` is the first file's name. An include from a file named `dir/x` of `y` asks for
    /// `dir/y`, mirroring how includes are relative to the including file on disk.
    ///
    /// # Errors
    /// A missing root or include, or a malformed line, located by file and line.
    pub fn parse_files<'a>(
        root: &str,
        files: &dyn Fn(&str) -> Option<Cow<'a, str>>,
    ) -> Result<Self, DictionaryError> {
        Parser::new(&MemLoader { files }).run(root.to_owned())
    }

    /// The attribute with this number; `vendor` is 0 for standard attributes.
    pub fn attribute(&self, vendor: u32, code: u32) -> Option<&Attribute> {
        self.by_code
            .get(&(vendor, code))
            .and_then(|&idx| self.attributes.get(idx))
    }

    /// The attribute with this name, compared case-insensitively.
    pub fn attribute_by_name(&self, name: &str) -> Option<&Attribute> {
        self.by_name
            .get(&name.to_ascii_lowercase())
            .and_then(|&idx| self.attributes.get(idx))
    }

    /// Name of an enumerated VALUE, e.g. `(0, 49, 1)` -> `Some("User-Request")`.
    pub fn value_name(&self, vendor: u32, code: u32, value: u32) -> Option<&str> {
        self.values
            .get(&(vendor, code))
            .and_then(|table| table.by_number.get(&value))
            .map(String::as_str)
    }

    /// Number of an enumerated VALUE by its name, compared case-insensitively.
    pub fn value_by_name(&self, vendor: u32, code: u32, name: &str) -> Option<u32> {
        self.values
            .get(&(vendor, code))
            .and_then(|table| table.by_name.get(&name.to_ascii_lowercase()))
            .copied()
    }

    /// IANA enterprise number of a vendor declared with `VENDOR`, by case-insensitive name.
    pub fn vendor_id(&self, name: &str) -> Option<u32> {
        self.vendors
            .get(&name.to_ascii_lowercase())
            .map(|vendor| vendor.id)
    }

    /// Name of a vendor declared with `VENDOR`, by enterprise number.
    pub fn vendor_name(&self, id: u32) -> Option<&str> {
        self.vendor_names.get(&id).map(String::as_str)
    }

    /// Number of attribute names defined (aliases sharing a number count separately).
    pub fn len(&self) -> usize {
        self.attributes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    /// Every defined attribute, in definition order.
    pub fn attributes(&self) -> impl Iterator<Item = &Attribute> {
        self.attributes.iter()
    }

    fn define_attribute(&mut self, attr: Attribute) -> Result<(), String> {
        let key = attr.name.to_ascii_lowercase();
        let number = (attr.vendor, attr.code);
        match self.by_name.get(&key).copied() {
            Some(idx) => {
                let Some(existing) = self.attributes.get_mut(idx) else {
                    return Err(format!("internal error: lost attribute '{}'", attr.name));
                };
                if (existing.vendor, existing.code) != number {
                    return Err(format!(
                        "attribute '{}' is already defined with {}, not {}",
                        attr.name,
                        describe_number(existing.vendor, existing.code),
                        describe_number(attr.vendor, attr.code),
                    ));
                }
                *existing = attr;
                self.by_code.insert(number, idx);
            }
            None => {
                let idx = self.attributes.len();
                self.attributes.push(attr);
                self.by_name.insert(key, idx);
                self.by_code.insert(number, idx);
            }
        }
        Ok(())
    }

    fn define_vendor(&mut self, name: &str, id: u32, type_width: u8) -> Result<(), String> {
        let key = name.to_ascii_lowercase();
        if let Some(existing) = self.vendors.get(&key)
            && existing.id != id
        {
            return Err(format!(
                "vendor '{name}' is already defined with number {}, not {id}",
                existing.id
            ));
        }
        self.vendors.insert(key, Vendor { id, type_width });
        self.vendor_names.insert(id, name.to_owned());
        Ok(())
    }

    fn define_value(&mut self, pending: &PendingValue) -> Result<(), String> {
        let Some(attr) = self.attribute_by_name(&pending.attr) else {
            return Err(format!(
                "VALUE '{}' for attribute '{}', which is never defined",
                pending.name, pending.attr
            ));
        };
        let kind = attr.kind;
        let number_key = (attr.vendor, attr.code);
        if !kind.is_enumerable() {
            return Err(format!(
                "VALUE '{}' for attribute '{}' of type {kind:?}: only integer types have named values",
                pending.name, attr.name
            ));
        }
        let number = value_for_type(pending.number, kind).ok_or_else(|| {
            format!(
                "VALUE '{}' number {} does not fit attribute '{}' of type {kind:?}",
                pending.name, pending.number, attr.name
            )
        })?;
        let table = self.values.entry(number_key).or_default();
        let name_key = pending.name.to_ascii_lowercase();
        if let Some(&existing) = table.by_name.get(&name_key)
            && existing != number
        {
            return Err(format!(
                "VALUE '{}' of attribute '{}' is already defined as {existing}, not {number}",
                pending.name, pending.attr
            ));
        }
        table.by_name.insert(name_key, number);
        table.by_number.insert(number, pending.name.clone());
        Ok(())
    }
}

fn describe_number(vendor: u32, code: u32) -> String {
    if vendor == 0 {
        format!("number {code}")
    } else {
        format!("number {code} of vendor {vendor}")
    }
}

/// Converts a VALUE number to its wire representation, or `None` when it cannot be carried
/// by `kind`. Negative numbers are only meaningful for `signed`, as two's complement.
fn value_for_type(number: i64, kind: AttrType) -> Option<u32> {
    let max = match kind {
        AttrType::Byte => u64::from(u8::MAX),
        AttrType::Short => u64::from(u16::MAX),
        _ => u64::from(u32::MAX),
    };
    if number < 0 {
        if kind != AttrType::Signed {
            return None;
        }
        return i32::try_from(number).ok().map(i32::cast_unsigned);
    }
    let unsigned = u64::try_from(number).ok()?;
    if unsigned > max {
        return None;
    }
    u32::try_from(unsigned).ok()
}

/// Parses an unsigned dictionary number: decimal, or hex with a `0x` prefix. Done by hand
/// because `str::parse` also accepts a leading `+`, which FreeRADIUS does not.
fn parse_number(text: &str) -> Option<u32> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// Like [`parse_number`] but allowing a leading `-`, for VALUEs of signed attributes.
fn parse_value_number(text: &str) -> Option<i64> {
    match text.strip_prefix('-') {
        Some(magnitude) => parse_number(magnitude).map(|n| -i64::from(n)),
        None => parse_number(text).map(i64::from),
    }
}

/// FreeRADIUS restricts attribute and vendor names to this set so they can appear unquoted
/// in its configuration language; keeping the same rule keeps our files interchangeable.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
}

/// Parses `format=T,L[,c]` from a VENDOR line and returns the type width T.
fn parse_vendor_format(text: &str) -> Result<u8, String> {
    let Some(spec) = text
        .strip_prefix("format=")
        .or_else(|| text.strip_prefix("FORMAT="))
    else {
        return Err(format!("expected format=T,L but found '{text}'"));
    };
    let mut parts = spec.split(',');
    let type_width = match parts.next() {
        Some("1") => 1,
        Some("2") => 2,
        Some("4") => 4,
        _ => {
            return Err(format!(
                "vendor format '{spec}': type width must be 1, 2 or 4"
            ));
        }
    };
    if !matches!(parts.next(), Some("0" | "1" | "2")) {
        return Err(format!(
            "vendor format '{spec}': length width must be 0, 1 or 2"
        ));
    }
    match parts.next() {
        None | Some("c") => {}
        Some(_) => return Err(format!("vendor format '{spec}': only ',c' may follow T,L")),
    }
    if parts.next().is_some() {
        return Err(format!("vendor format '{spec}' has too many fields"));
    }
    Ok(type_width)
}

#[derive(Debug, Default)]
struct Flags {
    has_tag: bool,
    encrypt: u8,
}

/// Parses the comma-separated flag field of an ATTRIBUTE line. `None` means the field is
/// not a flag list at all (so it may be an old-style vendor name); `Some(Err)` means it
/// looks like flags but one is invalid.
fn parse_flags(text: &str) -> Option<Result<Flags, String>> {
    let looks_like_flags = text.contains(',') || text.contains('=');
    let mut flags = Flags::default();
    for flag in text.split(',') {
        if let Some(method) = flag.strip_prefix("encrypt=") {
            match method {
                "0" | "1" | "2" | "3" => {
                    flags.encrypt = method.parse().unwrap_or_default();
                }
                _ => {
                    return Some(Err(format!(
                        "encrypt={method}: method must be 0, 1, 2 or 3"
                    )));
                }
            }
            continue;
        }
        match flag {
            "has_tag" => flags.has_tag = true,
            // Accepted for compatibility with FreeRADIUS files; they change how FreeRADIUS
            // encodes or stores the attribute, not what this dictionary answers.
            "concat" | "array" | "virtual" | "long" | "secret" | "internal" => {}
            _ if looks_like_flags => return Some(Err(format!("unknown flag '{flag}'"))),
            _ => return None,
        }
    }
    Some(Ok(flags))
}

/// A VALUE line waiting for every file to be read, so its attribute may be defined later.
struct PendingValue {
    file: Rc<str>,
    line: usize,
    attr: String,
    name: String,
    number: i64,
}

/// An open BEGIN-VENDOR block.
struct Block {
    name: String,
    id: u32,
    type_width: u8,
    line: usize,
}

enum ReadError {
    NotFound,
    NotUtf8(usize),
    Other(String),
}

/// Where dictionary files come from: the filesystem or an in-memory map.
trait Loader<'a> {
    type Loc;
    type Key: PartialEq;
    fn resolve(&self, including: &Self::Loc, target: &str) -> Self::Loc;
    /// Identity of a file for include-cycle detection.
    fn key(&self, loc: &Self::Loc) -> Self::Key;
    fn display(&self, loc: &Self::Loc) -> String;
    fn read(&self, loc: &Self::Loc) -> Result<Cow<'a, str>, ReadError>;
}

struct FsLoader;

impl Loader<'static> for FsLoader {
    type Loc = PathBuf;
    type Key = PathBuf;

    fn resolve(&self, including: &PathBuf, target: &str) -> PathBuf {
        // `join` keeps an absolute target as it is, which is what $INCLUDE /abs/path means.
        including
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(target)
    }

    fn key(&self, loc: &PathBuf) -> PathBuf {
        // Canonical paths make `a/../dictionary` and `dictionary` the same file; when the
        // file does not exist the read will fail anyway, so the raw path is good enough.
        std::fs::canonicalize(loc).unwrap_or_else(|_| loc.clone())
    }

    fn display(&self, loc: &PathBuf) -> String {
        loc.display().to_string()
    }

    fn read(&self, loc: &PathBuf) -> Result<Cow<'static, str>, ReadError> {
        let bytes = std::fs::read(loc).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => ReadError::NotFound,
            _ => ReadError::Other(err.to_string()),
        })?;
        String::from_utf8(bytes)
            .map(Cow::Owned)
            .map_err(|err| ReadError::NotUtf8(err.utf8_error().valid_up_to()))
    }
}

struct MemLoader<'f, 'a> {
    files: &'f dyn Fn(&str) -> Option<Cow<'a, str>>,
}

impl<'a> Loader<'a> for MemLoader<'_, 'a> {
    type Loc = String;
    type Key = String;

    fn resolve(&self, including: &String, target: &str) -> String {
        match including.rsplit_once('/') {
            Some((dir, _)) if !target.starts_with('/') => format!("{dir}/{target}"),
            _ => target.to_owned(),
        }
    }

    fn key(&self, loc: &String) -> String {
        loc.clone()
    }

    fn display(&self, loc: &String) -> String {
        loc.clone()
    }

    fn read(&self, loc: &String) -> Result<Cow<'a, str>, ReadError> {
        (self.files)(loc).ok_or(ReadError::NotFound)
    }
}

struct Parser<'l, 'a, L: Loader<'a>> {
    loader: &'l L,
    dict: Dictionary,
    pending: Vec<PendingValue>,
    /// Files currently being read, root first, for cycle detection.
    stack: Vec<L::Key>,
}

impl<'l, 'a, L: Loader<'a>> Parser<'l, 'a, L> {
    fn new(loader: &'l L) -> Self {
        Self {
            loader,
            dict: Dictionary::default(),
            pending: Vec::new(),
            stack: Vec::new(),
        }
    }

    fn run(mut self, root: L::Loc) -> Result<Dictionary, DictionaryError> {
        let display = self.loader.display(&root);
        let text = self.loader.read(&root).map_err(|err| DictionaryError {
            file: display.clone(),
            line: 0,
            message: match err {
                ReadError::NotFound => "cannot read dictionary: file not found".to_owned(),
                ReadError::NotUtf8(offset) => not_utf8_message(offset),
                ReadError::Other(why) => format!("cannot read dictionary: {why}"),
            },
        })?;
        self.stack.push(self.loader.key(&root));
        self.parse_text(&root, &display, &text, 0)?;
        self.stack.pop();

        let mut dict = self.dict;
        for pending in &self.pending {
            dict.define_value(pending)
                .map_err(|message| DictionaryError {
                    file: pending.file.to_string(),
                    line: pending.line,
                    message,
                })?;
        }
        Ok(dict)
    }

    fn parse_text(
        &mut self,
        loc: &L::Loc,
        display: &str,
        text: &str,
        depth: usize,
    ) -> Result<(), DictionaryError> {
        let file: Rc<str> = Rc::from(display);
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut block: Option<Block> = None;
        for (idx, raw) in text.split('\n').enumerate() {
            let line = idx + 1;
            let content = raw.split_once('#').map_or(raw, |(before, _)| before);
            let fields: Vec<&str> = content.split_whitespace().collect();
            let Some((&keyword, args)) = fields.split_first() else {
                continue;
            };
            let error = |message: String| DictionaryError {
                file: file.to_string(),
                line,
                message,
            };
            let upper = keyword.to_ascii_uppercase();
            match upper.as_str() {
                "ATTRIBUTE" => self.parse_attribute(args, block.as_ref()).map_err(error)?,
                "VALUE" => {
                    let [attr, name, number] = args else {
                        return Err(error(format!(
                            "VALUE expects: attribute value-name number; got {} field(s)",
                            args.len()
                        )));
                    };
                    let number = parse_value_number(number)
                        .ok_or_else(|| error(format!("bad VALUE number '{number}'")))?;
                    self.pending.push(PendingValue {
                        file: Rc::clone(&file),
                        line,
                        attr: (*attr).to_owned(),
                        name: (*name).to_owned(),
                        number,
                    });
                }
                "VENDOR" => self.parse_vendor(args).map_err(error)?,
                "BEGIN-VENDOR" => {
                    block = Some(
                        self.begin_vendor(args, block.as_ref(), line)
                            .map_err(error)?,
                    );
                }
                "END-VENDOR" => {
                    let [name] = args else {
                        return Err(error(format!(
                            "END-VENDOR expects: vendor-name; got {} field(s)",
                            args.len()
                        )));
                    };
                    match &block {
                        Some(open) if open.name.eq_ignore_ascii_case(name) => block = None,
                        Some(open) => {
                            return Err(error(format!(
                                "END-VENDOR {name} does not match BEGIN-VENDOR {} on line {}",
                                open.name, open.line
                            )));
                        }
                        None => {
                            return Err(error(format!(
                                "END-VENDOR {name} without matching BEGIN-VENDOR"
                            )));
                        }
                    }
                }
                "$INCLUDE" | "$INCLUDE-" => {
                    let [target] = args else {
                        return Err(error(format!(
                            "{keyword} expects: file-name; got {} field(s)",
                            args.len()
                        )));
                    };
                    self.include(loc, target, upper == "$INCLUDE-", depth, &file, line)?;
                }
                _ => return Err(error(format!("unknown keyword '{keyword}'"))),
            }
        }
        if let Some(open) = block {
            return Err(DictionaryError {
                file: file.to_string(),
                line: open.line,
                message: format!(
                    "BEGIN-VENDOR {} is not closed by END-VENDOR before the end of the file",
                    open.name
                ),
            });
        }
        Ok(())
    }

    fn include(
        &mut self,
        including: &L::Loc,
        target: &str,
        optional: bool,
        depth: usize,
        file: &str,
        line: usize,
    ) -> Result<(), DictionaryError> {
        let error = |message: String| DictionaryError {
            file: file.to_owned(),
            line,
            message,
        };
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(error(format!(
                "$INCLUDE {target}: includes nest deeper than {MAX_INCLUDE_DEPTH} levels"
            )));
        }
        let loc = self.loader.resolve(including, target);
        let display = self.loader.display(&loc);
        let key = self.loader.key(&loc);
        if self.stack.contains(&key) {
            return Err(error(format!(
                "$INCLUDE {target}: include cycle, {display} is already being read"
            )));
        }
        let text = match self.loader.read(&loc) {
            Ok(text) => text,
            Err(ReadError::NotFound) if optional => return Ok(()),
            Err(ReadError::NotFound) => {
                return Err(error(format!(
                    "$INCLUDE {target}: file {display} not found"
                )));
            }
            Err(ReadError::Other(why)) => {
                return Err(error(format!(
                    "$INCLUDE {target}: cannot read {display}: {why}"
                )));
            }
            Err(ReadError::NotUtf8(offset)) => {
                return Err(DictionaryError {
                    file: display,
                    line: 0,
                    message: not_utf8_message(offset),
                });
            }
        };
        self.stack.push(key);
        self.parse_text(&loc, &display, &text, depth + 1)?;
        self.stack.pop();
        Ok(())
    }

    fn parse_attribute(&mut self, args: &[&str], block: Option<&Block>) -> Result<(), String> {
        let (name, number, type_field, extra) = match args {
            [name, number, kind] => (*name, *number, *kind, None),
            [name, number, kind, extra] => (*name, *number, *kind, Some(*extra)),
            _ => {
                return Err(format!(
                    "ATTRIBUTE expects: name number type [flags]; got {} field(s)",
                    args.len()
                ));
            }
        };
        if !is_valid_name(name) {
            return Err(format!("invalid attribute name '{name}'"));
        }
        let code =
            parse_number(number).ok_or_else(|| format!("bad attribute number '{number}'"))?;
        let kind = parse_type(type_field)?;

        let (mut vendor, mut type_width) = block.map_or((0, 0), |b| (b.id, b.type_width));
        let mut flags = Flags::default();
        if let Some(extra) = extra {
            match parse_flags(extra) {
                Some(parsed) => flags = parsed?,
                // Pre-BEGIN-VENDOR files name the vendor as the fourth field instead.
                None => {
                    let found = self
                        .dict
                        .vendors
                        .get(&extra.to_ascii_lowercase())
                        .ok_or_else(|| format!("'{extra}' is neither a known flag nor a vendor"))?;
                    vendor = found.id;
                    type_width = found.type_width;
                }
            }
        }
        // Standard attributes are not range-checked: FreeRADIUS numbers its server-internal
        // attributes above 255, and those files should still load.
        let max_code = match type_width {
            1 => u32::from(u8::MAX),
            2 => u32::from(u16::MAX),
            _ => u32::MAX,
        };
        if code > max_code {
            return Err(format!(
                "attribute number {code} does not fit the {type_width}-octet type field of vendor {vendor}"
            ));
        }
        self.dict.define_attribute(Attribute {
            name: name.to_owned(),
            vendor,
            code,
            kind,
            has_tag: flags.has_tag,
            encrypt: flags.encrypt,
        })
    }

    fn parse_vendor(&mut self, args: &[&str]) -> Result<(), String> {
        let (name, number, format) = match args {
            [name, number] => (*name, *number, None),
            [name, number, format] => (*name, *number, Some(*format)),
            _ => {
                return Err(format!(
                    "VENDOR expects: name number [format=T,L]; got {} field(s)",
                    args.len()
                ));
            }
        };
        if !is_valid_name(name) {
            return Err(format!("invalid vendor name '{name}'"));
        }
        let id = parse_number(number).ok_or_else(|| format!("bad vendor number '{number}'"))?;
        let type_width = format.map_or(Ok(1), parse_vendor_format)?;
        self.dict.define_vendor(name, id, type_width)
    }

    fn begin_vendor(
        &self,
        args: &[&str],
        open: Option<&Block>,
        line: usize,
    ) -> Result<Block, String> {
        let name = match args {
            [name] => *name,
            // FreeRADIUS uses `format=Extended-Vendor-Specific-N` to place a block inside an
            // extended attribute; nothing here encodes those, so the option is only checked
            // for shape.
            [name, option] if option.starts_with("format=") => *name,
            _ => {
                return Err(format!(
                    "BEGIN-VENDOR expects: vendor-name [format=...]; got {} field(s)",
                    args.len()
                ));
            }
        };
        if let Some(open) = open {
            return Err(format!(
                "BEGIN-VENDOR {name} inside BEGIN-VENDOR {} from line {}, which is still open",
                open.name, open.line
            ));
        }
        let vendor = self
            .dict
            .vendors
            .get(&name.to_ascii_lowercase())
            .ok_or_else(|| format!("BEGIN-VENDOR of unknown vendor '{name}'"))?;
        Ok(Block {
            name: name.to_owned(),
            id: vendor.id,
            type_width: vendor.type_width,
            line,
        })
    }
}

/// Parses an ATTRIBUTE type, allowing FreeRADIUS's fixed-size suffix such as `octets[16]`.
fn parse_type(field: &str) -> Result<AttrType, String> {
    let base = match field.split_once('[') {
        Some((base, size)) => {
            let valid_size = size
                .strip_suffix(']')
                .is_some_and(|digits| parse_number(digits).is_some());
            if !valid_size {
                return Err(format!("bad size in type '{field}'"));
            }
            base
        }
        None => field,
    };
    AttrType::from_name(base).ok_or_else(|| format!("unknown type '{field}'"))
}

fn not_utf8_message(offset: usize) -> String {
    format!("file is not valid UTF-8 (first invalid byte at offset {offset})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn parse_map(files: &[(&str, &str)]) -> Result<Dictionary, DictionaryError> {
        let owned: Vec<(String, String)> = files
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        let root = owned.first().map(|(name, _)| name.clone()).unwrap();
        Dictionary::parse_files(&root, &|name: &str| {
            owned
                .iter()
                .find(|(file, _)| file == name)
                .map(|(_, text)| Cow::Owned(text.clone()))
        })
    }

    fn parse_one(text: &str) -> Result<Dictionary, DictionaryError> {
        parse_map(&[("dictionary", text)])
    }

    fn err_one(text: &str) -> DictionaryError {
        parse_one(text).expect_err("dictionary should be rejected")
    }

    /// A fresh directory under the system temp dir, unique per call so tests can run in
    /// parallel.
    fn scratch_dir(tag: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("radacctd-dict-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn embedded_dictionary_loads() {
        let dict = Dictionary::embedded().unwrap();
        assert!(dict.len() > 100, "only {} attributes", dict.len());
        assert!(!dict.is_empty());
    }

    #[test]
    fn embedded_dictionary_names_terminate_causes() {
        let dict = Dictionary::embedded().unwrap();
        let expected = [
            "User-Request",
            "Lost-Carrier",
            "Lost-Service",
            "Idle-Timeout",
            "Session-Timeout",
            "Admin-Reset",
            "Admin-Reboot",
            "Port-Error",
            "NAS-Error",
            "NAS-Request",
            "NAS-Reboot",
            "Port-Unneeded",
            "Port-Preempted",
            "Port-Suspended",
            "Service-Unavailable",
            "Callback",
            "User-Error",
            "Host-Request",
            "Supplicant-Restart",
            "Reauthentication-Failure",
            "Port-Reinitialized",
            "Port-Administratively-Disabled",
            "Lost-Power",
        ];
        for (number, name) in (1u32..).zip(expected) {
            assert_eq!(dict.value_name(0, 49, number), Some(name), "cause {number}");
            assert_eq!(dict.value_by_name(0, 49, name), Some(number));
        }
        assert_eq!(dict.value_name(0, 49, 0), None);
    }

    #[test]
    fn embedded_dictionary_types_core_accounting_attributes() {
        let dict = Dictionary::embedded().unwrap();
        let expected = [
            ("User-Name", 1, AttrType::String),
            ("NAS-IP-Address", 4, AttrType::IpAddr),
            ("NAS-Port", 5, AttrType::Integer),
            ("Framed-IP-Address", 8, AttrType::IpAddr),
            ("Class", 25, AttrType::Octets),
            ("Acct-Status-Type", 40, AttrType::Integer),
            ("Acct-Session-Id", 44, AttrType::String),
            ("Acct-Input-Gigawords", 52, AttrType::Integer),
            ("Event-Timestamp", 55, AttrType::Date),
            ("Message-Authenticator", 80, AttrType::Octets),
            ("NAS-Port-Id", 87, AttrType::String),
            ("NAS-IPv6-Address", 95, AttrType::Ipv6Addr),
            ("Framed-Interface-Id", 96, AttrType::Ifid),
            ("Framed-IPv6-Prefix", 97, AttrType::Ipv6Prefix),
            ("Error-Cause", 101, AttrType::Integer),
            ("Delegated-IPv6-Prefix", 123, AttrType::Ipv6Prefix),
            ("Framed-IPv6-Address", 168, AttrType::Ipv6Addr),
        ];
        for (name, code, kind) in expected {
            let attr = dict.attribute(0, code).unwrap();
            assert_eq!((attr.name.as_str(), attr.kind), (name, kind));
            assert_eq!(dict.attribute_by_name(name), Some(attr));
        }
        assert_eq!(dict.attribute_by_name("User-Password").unwrap().encrypt, 1);
    }

    #[test]
    fn embedded_dictionary_names_status_port_and_error_values() {
        let dict = Dictionary::embedded().unwrap();
        assert_eq!(dict.value_name(0, 40, 3), Some("Interim-Update"));
        assert_eq!(dict.value_name(0, 40, 7), Some("Accounting-On"));
        assert_eq!(dict.value_name(0, 45, 4), Some("Diameter"));
        assert_eq!(dict.value_name(0, 61, 19), Some("Wireless-802.11"));
        assert_eq!(dict.value_name(0, 61, 34), Some("PPPoEoQinQ"));
        assert_eq!(dict.value_name(0, 6, 2), Some("Framed-User"));
        // Defined in a different file from Service-Type itself.
        assert_eq!(dict.value_name(0, 6, 17), Some("Authorize-Only"));
        assert_eq!(
            dict.value_name(0, 101, 201),
            Some("Residual-Context-Removed")
        );
        assert_eq!(
            dict.value_name(0, 101, 508),
            Some("Multiple-Session-Selection-Unsupported")
        );
    }

    #[test]
    fn mikrotik_vendor_attribute_resolves() {
        let dict = Dictionary::embedded().unwrap();
        assert_eq!(dict.vendor_id("Mikrotik"), Some(14988));
        assert_eq!(dict.vendor_id("MIKROTIK"), Some(14988));
        assert_eq!(dict.vendor_name(14988), Some("Mikrotik"));
        let rate = dict.attribute(14988, 8).unwrap();
        assert_eq!(rate.name, "Mikrotik-Rate-Limit");
        assert_eq!(rate.kind, AttrType::String);
        assert_eq!(dict.attribute(14988, 10).unwrap().kind, AttrType::IpAddr);
        assert_eq!(
            dict.attribute(14988, 30).unwrap().name,
            "Mikrotik-Switching-Filter"
        );
        assert_eq!(dict.value_name(14988, 27, 1), Some("802.1ad"));
        assert_eq!(dict.value_by_name(14988, 6, "aes-ccm"), Some(3));
        // Vendor attribute numbers must not leak into the standard space.
        assert_eq!(dict.attribute(0, 8).unwrap().name, "Framed-IP-Address");
    }

    #[test]
    fn load_dir_reads_the_same_files_as_embedded() {
        let dir = scratch_dir("embedded-copy");
        for (name, text) in EMBEDDED_FILES {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let from_disk = Dictionary::load_dir(&dir).unwrap();
        let embedded = Dictionary::embedded().unwrap();
        assert_eq!(from_disk.len(), embedded.len());
        for attr in embedded.attributes() {
            assert_eq!(from_disk.attribute(attr.vendor, attr.code), Some(attr));
        }
        assert_eq!(from_disk.value_name(0, 49, 6), Some("Admin-Reset"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lookups_by_name_are_case_insensitive() {
        let dict = Dictionary::embedded().unwrap();
        assert_eq!(dict.attribute_by_name("acct-status-type").unwrap().code, 40);
        assert_eq!(dict.attribute_by_name("ACCT-STATUS-TYPE").unwrap().code, 40);
        assert_eq!(dict.value_by_name(0, 40, "interim-update"), Some(3));
        assert_eq!(dict.attribute_by_name("No-Such-Attribute"), None);
    }

    #[test]
    fn value_before_attribute_is_resolved() {
        let dict = parse_map(&[
            (
                "dictionary",
                "VALUE Late-Attr First 1\n$INCLUDE other\nVALUE Late-Attr Second 2\n",
            ),
            ("other", "ATTRIBUTE Late-Attr 200 integer\n"),
        ])
        .unwrap();
        assert_eq!(dict.value_name(0, 200, 1), Some("First"));
        assert_eq!(dict.value_name(0, 200, 2), Some("Second"));
    }

    #[test]
    fn value_for_undefined_attribute_reports_the_value_line() {
        let err = parse_map(&[
            ("dictionary", "ATTRIBUTE A 1 integer\n$INCLUDE sub\n"),
            ("sub", "# comment\n\nVALUE Missing-Attr X 1\n"),
        ])
        .unwrap_err();
        assert_eq!((err.file.as_str(), err.line), ("sub", 3));
        assert!(err.message.contains("Missing-Attr"), "{err}");
    }

    #[test]
    fn malformed_line_reports_file_and_line() {
        let cases = [
            ("ATTRIBUTE A 1 integer\nBOGUS x y\n", 2, "unknown keyword"),
            ("\n\nATTRIBUTE A 1\n", 3, "ATTRIBUTE expects"),
            (
                "ATTRIBUTE A 1 integer has_tag extra\n",
                1,
                "ATTRIBUTE expects",
            ),
            ("ATTRIBUTE A 12x integer\n", 1, "bad attribute number"),
            ("ATTRIBUTE A +12 integer\n", 1, "bad attribute number"),
            ("ATTRIBUTE A 0x integer\n", 1, "bad attribute number"),
            (
                "ATTRIBUTE A 4294967296 integer\n",
                1,
                "bad attribute number",
            ),
            (
                "ATTRIBUTE A 1 integer\nATTRIBUTE B 2 wibble\n",
                2,
                "unknown type",
            ),
            ("ATTRIBUTE A 1 octets[x]\n", 1, "bad size"),
            ("ATTRIBUTE A 1 integer encrypt=9\n", 1, "encrypt=9"),
            ("ATTRIBUTE A 1 integer has_tag,bogus\n", 1, "unknown flag"),
            (
                "ATTRIBUTE A 1 integer NoSuchVendor\n",
                1,
                "neither a known flag",
            ),
            ("ATTRIBUTE A 1 integer\nVALUE A B\n", 2, "VALUE expects"),
            (
                "ATTRIBUTE A 1 integer\nVALUE A B one\n",
                2,
                "bad VALUE number",
            ),
            ("VENDOR V\n", 1, "VENDOR expects"),
            ("VENDOR V 0xZZ\n", 1, "bad vendor number"),
            ("VENDOR V 9 format=3,1\n", 1, "type width"),
            ("VENDOR V 9 format=1,7\n", 1, "length width"),
            ("$INCLUDE\n", 1, "expects"),
            (
                "ATTRIBUTE Bad!Name 1 integer\n",
                1,
                "invalid attribute name",
            ),
        ];
        for (text, line, needle) in cases {
            let err = err_one(text);
            assert_eq!(err.file, "dictionary", "{text:?}");
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("dictionary:{line}: ")));
        }
    }

    #[test]
    fn error_in_included_file_names_that_file() {
        let err = parse_map(&[
            ("dictionary", "ATTRIBUTE A 1 integer\n$INCLUDE inner\n"),
            ("inner", "ATTRIBUTE B 2 integer\n\nATTRIBUTE C x integer\n"),
        ])
        .unwrap_err();
        assert_eq!((err.file.as_str(), err.line), ("inner", 3));
    }

    #[test]
    fn duplicate_attribute_name_with_different_number_is_rejected() {
        let err = err_one("ATTRIBUTE A 1 integer\nATTRIBUTE a 2 integer\n");
        assert_eq!(err.line, 2);
        assert!(err.message.contains("already defined"), "{err}");
    }

    #[test]
    fn redefinition_with_same_number_replaces_type_and_flags() {
        let dict = parse_one("ATTRIBUTE A 1 integer\nATTRIBUTE A 1 string has_tag\n").unwrap();
        assert_eq!(dict.len(), 1);
        let attr = dict.attribute(0, 1).unwrap();
        assert_eq!((attr.kind, attr.has_tag), (AttrType::String, true));
    }

    #[test]
    fn second_name_for_a_number_wins_by_number_and_both_names_resolve() {
        let dict =
            parse_one("ATTRIBUTE Old-Name 7 integer\nATTRIBUTE New-Name 7 integer\n").unwrap();
        assert_eq!(dict.attribute(0, 7).unwrap().name, "New-Name");
        assert_eq!(dict.attribute_by_name("Old-Name").unwrap().code, 7);
        assert_eq!(dict.len(), 2);
    }

    #[test]
    fn duplicate_value_name_with_different_number_is_rejected() {
        let err = err_one("ATTRIBUTE A 1 integer\nVALUE A X 1\nVALUE A x 2\n");
        assert_eq!(err.line, 3);
        let dict =
            parse_one("ATTRIBUTE A 1 integer\nVALUE A X 1\nVALUE A X 1\nVALUE A Y 1\n").unwrap();
        assert_eq!(dict.value_name(0, 1, 1), Some("Y"));
        assert_eq!(dict.value_by_name(0, 1, "X"), Some(1));
    }

    #[test]
    fn value_must_fit_its_attribute_type() {
        assert_eq!(err_one("ATTRIBUTE A 1 byte\nVALUE A Big 256\n").line, 2);
        assert_eq!(err_one("ATTRIBUTE A 1 short\nVALUE A Big 65536\n").line, 2);
        assert_eq!(err_one("ATTRIBUTE A 1 integer\nVALUE A Neg -1\n").line, 2);
        assert_eq!(err_one("ATTRIBUTE A 1 string\nVALUE A Word 1\n").line, 2);
        let dict = parse_one(
            "ATTRIBUTE A 1 byte\nVALUE A Max 255\nATTRIBUTE S 2 signed\nVALUE S Minus-One -1\n",
        )
        .unwrap();
        assert_eq!(dict.value_name(0, 1, 255), Some("Max"));
        assert_eq!(dict.value_by_name(0, 2, "Minus-One"), Some(u32::MAX));
    }

    #[test]
    fn hex_numbers_flags_and_sized_types_are_parsed() {
        let dict = parse_one(
            "ATTRIBUTE Tunnel-Password 0x45 string has_tag,encrypt=2\n\
             ATTRIBUTE Blob 0X2a octets[16]\n\
             ATTRIBUTE Msg 79 octets concat\n\
             VALUE Blob-Kind K 0x10\n\
             ATTRIBUTE Blob-Kind 50 uint32\n",
        )
        .unwrap();
        let tunnel = dict.attribute(0, 0x45).unwrap();
        assert_eq!((tunnel.has_tag, tunnel.encrypt), (true, 2));
        assert_eq!(dict.attribute(0, 42).unwrap().kind, AttrType::Octets);
        assert_eq!(dict.attribute(0, 79).unwrap().name, "Msg");
        assert_eq!(dict.attribute(0, 50).unwrap().kind, AttrType::Integer);
        assert_eq!(dict.value_name(0, 50, 16), Some("K"));
    }

    #[test]
    fn comments_blank_lines_crlf_and_keyword_case_are_tolerated() {
        let dict = parse_one(
            "\u{feff}# header\r\n\r\n   \t\r\nattribute A 1 integer # trailing\r\nValue A On 1\r\n",
        )
        .unwrap();
        assert_eq!(dict.value_name(0, 1, 1), Some("On"));
    }

    #[test]
    fn old_style_vendor_field_assigns_vendor() {
        let dict = parse_one("VENDOR Acme 9999\nATTRIBUTE Acme-Thing 3 string Acme\n").unwrap();
        let attr = dict.attribute_by_name("acme-thing").unwrap();
        assert_eq!((attr.vendor, attr.code), (9999, 3));
        assert!(dict.attribute(0, 3).is_none());
    }

    #[test]
    fn vendor_block_assigns_vendor_and_checks_number_width() {
        let dict = parse_one(
            "VENDOR Wide 77 format=2,1\nBEGIN-VENDOR Wide\nATTRIBUTE Wide-Big 300 integer\nEND-VENDOR Wide\n\
             ATTRIBUTE After-Block 300 integer\n",
        )
        .unwrap();
        assert_eq!(dict.attribute(77, 300).unwrap().name, "Wide-Big");
        assert_eq!(dict.attribute(0, 300).unwrap().name, "After-Block");
        let err = err_one(
            "VENDOR Narrow 78\nBEGIN-VENDOR Narrow\nATTRIBUTE N-Big 256 integer\nEND-VENDOR Narrow\n",
        );
        assert_eq!(err.line, 3);
    }

    #[test]
    fn vendor_redefined_with_different_number_is_rejected() {
        assert_eq!(err_one("VENDOR V 1\nVENDOR v 2\n").line, 2);
        assert!(parse_one("VENDOR V 1\nVENDOR V 1 format=4,0\n").is_ok());
    }

    #[test]
    fn end_vendor_without_matching_begin_is_rejected() {
        let err = err_one("VENDOR V 1\nEND-VENDOR V\n");
        assert_eq!(err.line, 2);
        assert!(
            err.message.contains("without matching BEGIN-VENDOR"),
            "{err}"
        );
        let err = err_one("VENDOR V 1\nVENDOR W 2\nBEGIN-VENDOR V\nEND-VENDOR W\n");
        assert_eq!(err.line, 4);
    }

    #[test]
    fn begin_vendor_of_unknown_vendor_is_rejected() {
        let err = err_one("BEGIN-VENDOR Nobody\nEND-VENDOR Nobody\n");
        assert_eq!(err.line, 1);
        assert!(err.message.contains("unknown vendor"), "{err}");
    }

    #[test]
    fn nested_begin_vendor_is_rejected() {
        let err = err_one("VENDOR V 1\nVENDOR W 2\nBEGIN-VENDOR V\nBEGIN-VENDOR W\n");
        assert_eq!(err.line, 4);
    }

    #[test]
    fn unterminated_begin_vendor_is_rejected_at_end_of_file() {
        let err = parse_map(&[
            (
                "dictionary",
                "VENDOR V 1\n$INCLUDE v\nATTRIBUTE A 1 integer\n",
            ),
            ("v", "\nBEGIN-VENDOR V\nATTRIBUTE V-A 1 integer\n"),
        ])
        .unwrap_err();
        assert_eq!((err.file.as_str(), err.line), ("v", 2));
        assert!(err.message.contains("not closed"), "{err}");
    }

    #[test]
    fn vendor_block_does_not_leak_into_included_file() {
        let dict = parse_map(&[
            (
                "dictionary",
                "VENDOR V 1\nBEGIN-VENDOR V\n$INCLUDE std\nEND-VENDOR V\n",
            ),
            ("std", "ATTRIBUTE Plain 5 integer\n"),
        ])
        .unwrap();
        assert_eq!(dict.attribute_by_name("Plain").unwrap().vendor, 0);
    }

    #[test]
    fn include_cycle_is_an_error_not_a_hang() {
        let err = parse_map(&[
            ("dictionary", "$INCLUDE a\n"),
            ("a", "ATTRIBUTE A 1 integer\n$INCLUDE b\n"),
            ("b", "\n$INCLUDE dictionary\n"),
        ])
        .unwrap_err();
        assert_eq!((err.file.as_str(), err.line), ("b", 2));
        assert!(err.message.contains("cycle"), "{err}");
        assert_eq!(err_one("$INCLUDE dictionary\n").line, 1);
    }

    #[test]
    fn same_file_included_twice_without_a_cycle_is_fine() {
        let dict = parse_map(&[
            ("dictionary", "$INCLUDE common\n$INCLUDE common\n"),
            ("common", "ATTRIBUTE A 1 integer\nVALUE A On 1\n"),
        ])
        .unwrap();
        assert_eq!(dict.value_name(0, 1, 1), Some("On"));
    }

    #[test]
    fn include_depth_over_limit_is_rejected() {
        let chain = |levels: usize| -> Vec<(String, String)> {
            (0..=levels)
                .map(|i| {
                    let name = if i == 0 {
                        "dictionary".to_owned()
                    } else {
                        format!("f{i}")
                    };
                    let text = if i == levels {
                        "ATTRIBUTE Deep 1 integer\n".to_owned()
                    } else {
                        format!("$INCLUDE f{}\n", i + 1)
                    };
                    (name, text)
                })
                .collect()
        };
        let as_refs = |files: &[(String, String)]| -> Result<Dictionary, DictionaryError> {
            let refs: Vec<(&str, &str)> = files
                .iter()
                .map(|(n, t)| (n.as_str(), t.as_str()))
                .collect();
            parse_map(&refs)
        };
        assert!(as_refs(&chain(MAX_INCLUDE_DEPTH)).is_ok());
        let err = as_refs(&chain(MAX_INCLUDE_DEPTH + 1)).unwrap_err();
        assert_eq!(err.file, format!("f{MAX_INCLUDE_DEPTH}"));
        assert_eq!(err.line, 1);
        assert!(err.message.contains("nest deeper"), "{err}");
    }

    #[test]
    fn missing_include_is_rejected_but_optional_include_is_skipped() {
        let err = err_one("ATTRIBUTE A 1 integer\n$INCLUDE nowhere\n");
        assert_eq!((err.file.as_str(), err.line), ("dictionary", 2));
        assert!(err.message.contains("not found"), "{err}");
        let dict = parse_one("$INCLUDE- nowhere\nATTRIBUTE A 1 integer\n").unwrap();
        assert_eq!(dict.len(), 1);
    }

    #[test]
    fn includes_resolve_relative_to_the_including_file() {
        let dict = parse_map(&[
            ("top/dictionary", "$INCLUDE sub/inner\n"),
            ("top/sub/inner", "$INCLUDE leaf\n"),
            ("top/sub/leaf", "ATTRIBUTE Leaf 9 integer\n"),
        ])
        .unwrap();
        assert_eq!(dict.attribute(0, 9).unwrap().name, "Leaf");

        let dir = scratch_dir("relative");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("dictionary"), "$INCLUDE sub/inner\n").unwrap();
        std::fs::write(dir.join("sub/inner"), "$INCLUDE leaf\n$INCLUDE- absent\n").unwrap();
        std::fs::write(dir.join("sub/leaf"), "ATTRIBUTE Leaf 9 integer\n").unwrap();
        let dict = Dictionary::load_dir(&dir).unwrap();
        assert_eq!(dict.attribute(0, 9).unwrap().name, "Leaf");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn filesystem_include_cycle_through_different_spellings_is_detected() {
        let dir = scratch_dir("fs-cycle");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("dictionary"), "$INCLUDE sub/loop\n").unwrap();
        std::fs::write(dir.join("sub/loop"), "$INCLUDE ../dictionary\n").unwrap();
        let err = Dictionary::load_dir(&dir).unwrap_err();
        assert!(err.message.contains("cycle"), "{err}");
        assert_eq!(err.line, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreadable_root_reports_line_zero() {
        let dir = scratch_dir("missing-root");
        let err = Dictionary::load_dir(&dir).unwrap_err();
        assert_eq!(err.line, 0);
        assert!(err.file.ends_with("dictionary"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        let err = Dictionary::parse_files("absent", &|_| None).unwrap_err();
        assert_eq!((err.file.as_str(), err.line), ("absent", 0));
    }

    #[test]
    fn empty_file_gives_an_empty_dictionary() {
        let dict = parse_map(&[("x", "")]).unwrap();
        assert!(dict.is_empty());
        assert_eq!(dict.attribute(0, 1), None);
    }

    #[test]
    fn non_utf8_file_reports_file_and_line_zero() {
        let dir = scratch_dir("non-utf8");
        std::fs::write(
            dir.join("dictionary"),
            "ATTRIBUTE A 1 integer\n$INCLUDE bad\n",
        )
        .unwrap();
        std::fs::write(dir.join("bad"), b"ATTRIBUTE B 2 integer\n\xff\xfe\n").unwrap();
        let err = Dictionary::load_dir(&dir).unwrap_err();
        assert!(err.file.ends_with("bad"), "{err}");
        assert_eq!(err.line, 0);
        assert!(err.message.contains("UTF-8"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// xorshift64*: deterministic, so a failure reproduces, and needs no external crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }

        fn pick<'t>(&mut self, items: &[&'t str]) -> &'t str {
            items[self.below(items.len())]
        }
    }

    #[rustfmt::skip]
    const TOKENS: &[&str] = &[
        "ATTRIBUTE", "VALUE", "VENDOR", "BEGIN-VENDOR", "END-VENDOR", "$INCLUDE", "$INCLUDE-",
        "attribute", "A", "B", "V", "W", "Mikrotik", "f0", "f1", "f2", "dictionary", "../f1",
        "/f2", "0", "1", "255", "256", "65536", "-1", "-2147483649", "0x", "0xffffffff",
        "4294967296", "99999999999999999999", "+1", "integer", "string", "byte", "short",
        "signed", "octets[", "octets[16]", "octets[]", "tlv", "bogus", "has_tag", "encrypt=1",
        "encrypt=", "encrypt=99", "has_tag,encrypt=2", ",", "=", "format=", "format=1,1",
        "format=4,0,c", "format=2,2,x", "#", "\u{0}", "\u{feff}", "é", "\u{1F980}", "\r", "\t",
    ];

    fn garbage_line(rng: &mut Rng) -> String {
        let mut line = String::new();
        for _ in 0..rng.below(7) {
            if rng.below(5) == 0 {
                for _ in 0..rng.below(6) {
                    let c =
                        char::from_u32(u32::try_from(rng.below(0x2_0000)).unwrap()).unwrap_or('?');
                    line.push(c);
                }
            } else {
                line.push_str(rng.pick(TOKENS));
            }
            line.push_str(rng.pick(&[" ", "  ", "\t", ""]));
        }
        line
    }

    #[test]
    fn random_garbage_lines_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0usize;
        for _ in 0..3000 {
            let files: Vec<(String, String)> = ["dictionary", "f0", "f1", "f2"]
                .iter()
                .map(|name| {
                    let text: Vec<String> =
                        (0..rng.below(12)).map(|_| garbage_line(&mut rng)).collect();
                    (
                        (*name).to_owned(),
                        text.join(if rng.below(2) == 0 { "\n" } else { "\r\n" }),
                    )
                })
                .collect();
            let refs: Vec<(&str, &str)> = files
                .iter()
                .map(|(n, t)| (n.as_str(), t.as_str()))
                .collect();
            match parse_map(&refs) {
                Ok(_) => accepted += 1,
                Err(err) => assert!(!err.message.is_empty()),
            }
        }
        // Sanity check that the generator is not so hostile that it only tests one path.
        assert!(accepted > 0);
    }

    #[test]
    fn random_bytes_on_disk_never_panic() {
        let dir = scratch_dir("random-bytes");
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..200 {
            let mut bytes = Vec::new();
            for _ in 0..rng.below(6) {
                bytes.extend_from_slice(garbage_line(&mut rng).as_bytes());
                for _ in 0..rng.below(4) {
                    bytes.push(u8::try_from(rng.below(256)).unwrap());
                }
                bytes.push(b'\n');
            }
            std::fs::write(dir.join("dictionary"), &bytes).unwrap();
            if let Err(err) = Dictionary::load_dir(&dir) {
                assert!(!err.message.is_empty());
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
