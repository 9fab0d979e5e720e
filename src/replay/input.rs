//! Reading past sends for `smsguard replay`: Twilio's Bulk Export of
//! Messages (JSON lines, also gzipped) and the Console's message log (CSV
//! with a header row), plus smsguard's own optional fields; and writing
//! records back as JSON lines (`smsguard demo --save`).
//!
//! Fields are matched by Twilio's names in either spelling, ignoring case
//! and underscores (`date_created`, `DateCreated`, `SentDate`, `to`, `To`,
//! `num_segments`, `NumSegments`, ...). Unknown fields are ignored. A record
//! that cannot be read is kept as a bad entry with its file and line, never
//! a reason to stop: a backtest of a million lines must not die on one.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::OffsetDateTime;

use super::Record;
use crate::base::clock::Millis;
use crate::twilio::routes::Product;

/// Everything read from the inputs, in input order.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The input files, as named on the command line.
    pub files: Vec<PathBuf>,
    pub entries: Vec<Entry>,
}

/// One input record: read, or why it could not be.
#[derive(Debug)]
pub struct Entry {
    /// Index into [`Loaded::files`].
    pub file: usize,
    /// 1-based line of the file where the record starts.
    pub line: usize,
    pub record: Result<Record, String>,
}

impl Loaded {
    pub fn bad(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.record.is_err())
    }

    /// Records made in memory (the demo's generated day), as one input.
    pub fn from_records(name: impl Into<PathBuf>, records: Vec<Record>) -> Loaded {
        let entries = records
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.line = i + 1;
                Entry {
                    file: 0,
                    line: i + 1,
                    record: Ok(r),
                }
            })
            .collect();
        Loaded {
            files: vec![name.into()],
            entries,
        }
    }
}

/// How a file is laid out, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

impl Format {
    /// `.csv` (or `.csv.gz`) is CSV; `.jsonl`, `.ndjson`, `.json`, `.gz`
    /// are JSON lines; anything else is guessed from its first byte.
    fn of(path: &Path) -> (Option<Format>, bool) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let (name, gz) = match name.strip_suffix(".gz") {
            Some(n) => (n.to_string(), true),
            None => (name, false),
        };
        let format = if name.ends_with(".csv") {
            Some(Format::Csv)
        } else if gz
            || [".jsonl", ".ndjson", ".json"]
                .iter()
                .any(|e| name.ends_with(e))
        {
            Some(Format::JsonLines)
        } else {
            None
        };
        (format, gz)
    }
}

/// Reads every file in order. Only a file that cannot be opened is an
/// error; bad records become bad entries.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    for (i, path) in paths.iter().enumerate() {
        let file = File::open(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let (format, gz) = Format::of(path);
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut reader = BufReader::with_capacity(256 * 1024, reader);
        let format = match format {
            Some(f) => f,
            None => {
                let first = reader
                    .fill_buf()
                    .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
                match first.iter().find(|b| !b.is_ascii_whitespace()) {
                    Some(b'{') | None => Format::JsonLines,
                    Some(_) => Format::Csv,
                }
            }
        };
        loaded.files.push(path.clone());
        match format {
            Format::JsonLines => read_json_lines(reader, i, &mut loaded.entries),
            Format::Csv => read_csv(reader, i, &mut loaded.entries),
        }
    }
    Ok(loaded)
}

/// One JSON object per line; blank lines are not records.
pub fn read_json_lines(mut reader: impl BufRead, file: usize, out: &mut Vec<Entry>) {
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        line += 1;
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                out.push(Entry {
                    file,
                    line,
                    record: Err(format!("the rest of the file cannot be read: {e}")),
                });
                return;
            }
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim(),
            Err(_) => {
                out.push(Entry {
                    file,
                    line,
                    record: Err("not UTF-8".into()),
                });
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        let record = match serde_json::from_str::<Fields>(text) {
            Ok(fields) => fields.record(line),
            Err(e) => Err(format!("not a JSON object: {}", json_error(&e))),
        };
        out.push(Entry { file, line, record });
    }
}

/// serde_json's message without its own "at line 1 column N" (the line is
/// the file's, reported separately).
fn json_error(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => format!("{} (column {})", &s[..i], e.column()),
        None => s,
    }
}

/// A reader that notes where each line ends, so a CSV record's line is
/// told from its first byte whatever the line endings: the csv crate's own
/// count is one short per record after CRLF rows (what the Console, Excel
/// and Python write).
struct LineEnds<R> {
    inner: R,
    read: u64,
    ends: std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<u64>>>,
}

impl<R: Read> Read for LineEnds<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut ends = self.ends.borrow_mut();
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                ends.push_back(self.read + i as u64);
            }
        }
        self.read += n as u64;
        Ok(n)
    }
}

/// The 1-based line of a record starting at byte `at`, records asked for
/// in order: line ends before it are counted once and forgotten. After a
/// CRLF row the csv crate starts the next record at the row's `\n`: that
/// one ends the line before, too.
struct LineOf {
    ends: std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<u64>>>,
    passed: usize,
}

impl LineOf {
    fn line(&mut self, at: u64) -> usize {
        let mut ends = self.ends.borrow_mut();
        while ends.front().is_some_and(|e| *e <= at) {
            ends.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// CSV with a header row naming the fields.
pub fn read_csv(reader: impl Read, file: usize, out: &mut Vec<Entry>) {
    let ends = std::rc::Rc::default();
    let mut lines = LineOf {
        ends: std::rc::Rc::clone(&ends),
        passed: 0,
    };
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(LineEnds {
            inner: reader,
            read: 0,
            ends,
        });
    let columns: Vec<Option<Field>> = match csv.byte_headers() {
        Ok(h) => h
            .iter()
            .map(|name| Field::named(&String::from_utf8_lossy(name)))
            .collect(),
        Err(e) => {
            out.push(Entry {
                file,
                line: 1,
                record: Err(format!("the header row cannot be read: {e}")),
            });
            return;
        }
    };
    if !columns.contains(&Some(Field::To)) {
        out.push(Entry {
            file,
            line: 1,
            record: Err("the header row has no To column".into()),
        });
        return;
    }
    let mut row = csv::ByteRecord::new();
    loop {
        match csv.read_byte_record(&mut row) {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line(p.byte()));
                let fatal = matches!(e.kind(), csv::ErrorKind::Io(_));
                out.push(Entry {
                    file,
                    line,
                    record: Err(format!("not a CSV row: {e}")),
                });
                if fatal {
                    return;
                }
                continue;
            }
        }
        let line = row.position().map_or(0, |p| lines.line(p.byte()));
        if row.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        let mut fields = Fields::default();
        let mut bad = None;
        for (value, column) in row.iter().zip(&columns) {
            let Some(field) = column else { continue };
            match std::str::from_utf8(value) {
                Ok(v) => fields.set(*field, Some(Cow::Borrowed(v))),
                Err(_) => bad = Some(format!("{} is not UTF-8", field.name())),
            }
        }
        let record = match bad {
            Some(why) => Err(why),
            None => fields.record(line),
        };
        out.push(Entry { file, line, record });
    }
}

/// The fields smsguard reads; everything else in a record is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    DateCreated,
    DateSent,
    SentDate,
    To,
    From,
    Body,
    NumSegments,
    NumMedia,
    Price,
    Status,
    Direction,
    AccountSid,
    ClientIp,
    User,
    Product,
    Channel,
    ConfirmedAt,
    Label,
}

const FIELDS: usize = 18;

impl Field {
    /// Twilio's snake_case and the Console's CamelCase alike: case and
    /// underscores do not matter.
    fn named(name: &str) -> Option<Field> {
        let mut key = [0u8; 24];
        let mut n = 0;
        for b in name
            .trim()
            .bytes()
            .filter(|b| !matches!(b, b'_' | b' ' | b'-'))
        {
            if n == key.len() {
                return None;
            }
            key[n] = b.to_ascii_lowercase();
            n += 1;
        }
        Some(match &key[..n] {
            b"datecreated" => Field::DateCreated,
            b"datesent" => Field::DateSent,
            b"sentdate" => Field::SentDate,
            b"to" => Field::To,
            b"from" => Field::From,
            b"body" => Field::Body,
            b"numsegments" => Field::NumSegments,
            b"nummedia" => Field::NumMedia,
            b"price" => Field::Price,
            b"status" => Field::Status,
            b"direction" => Field::Direction,
            b"accountsid" => Field::AccountSid,
            b"clientip" => Field::ClientIp,
            b"user" => Field::User,
            b"product" => Field::Product,
            b"channel" => Field::Channel,
            b"confirmedat" => Field::ConfirmedAt,
            b"label" => Field::Label,
            _ => return None,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Field::DateCreated => "date_created",
            Field::DateSent => "date_sent",
            Field::SentDate => "SentDate",
            Field::To => "to",
            Field::From => "from",
            Field::Body => "body",
            Field::NumSegments => "num_segments",
            Field::NumMedia => "num_media",
            Field::Price => "price",
            Field::Status => "status",
            Field::Direction => "direction",
            Field::AccountSid => "account_sid",
            Field::ClientIp => "client_ip",
            Field::User => "user",
            Field::Product => "product",
            Field::Channel => "channel",
            Field::ConfirmedAt => "confirmed_at",
            Field::Label => "label",
        }
    }
}

/// The known fields of one record, as text (empty values are absent).
#[derive(Debug, Default)]
struct Fields<'a> {
    values: [Option<Cow<'a, str>>; FIELDS],
    /// A known field that held something other than text or a number.
    wrong: Option<&'static str>,
}

impl<'a> Fields<'a> {
    fn set(&mut self, field: Field, value: Option<Cow<'a, str>>) {
        let slot = &mut self.values[field as usize];
        // The first spelling wins if a record names a field twice.
        if slot.is_none() {
            *slot = value.filter(|v| !v.trim().is_empty());
        }
    }

    fn get(&self, field: Field) -> Option<&str> {
        self.values[field as usize].as_deref().map(str::trim)
    }

    fn owned(&self, field: Field) -> Option<String> {
        self.get(field).map(str::to_string)
    }

    fn record(&self, line: usize) -> Result<Record, String> {
        if let Some(name) = self.wrong {
            return Err(format!("{name} must be text or a number"));
        }
        let to = self.get(Field::To).ok_or("no to")?;
        // date_created is when the application asked for the send; the
        // others are later or the Console's name for it.
        let (name, text) = [Field::DateCreated, Field::DateSent, Field::SentDate]
            .into_iter()
            .find_map(|f| self.get(f).map(|t| (f.name(), t)))
            .ok_or("no time (date_created, date_sent or SentDate)")?;
        let (at, mut zoneless) = parse_time_zoned(text).map_err(|e| format!("{name}: {e}"))?;
        let number = |f: Field| -> Result<Option<u32>, String> {
            self.get(f)
                .map(|v| {
                    v.parse::<u32>()
                        .map_err(|_| format!("{} {v:?} is not a count", f.name()))
                })
                .transpose()
        };
        let product = match self.get(Field::Product) {
            None => Product::Messaging,
            Some(p) if p.eq_ignore_ascii_case("messaging") || p.eq_ignore_ascii_case("sms") => {
                Product::Messaging
            }
            Some(p) if p.eq_ignore_ascii_case("voice") || p.eq_ignore_ascii_case("call") => {
                Product::Voice
            }
            Some(p) if p.eq_ignore_ascii_case("verify") => Product::Verify,
            Some(p) => {
                return Err(format!(
                    "product {p:?}: expected messaging, voice or verify"
                ))
            }
        };
        Ok(Record {
            line,
            at,
            to: to.to_string(),
            from: self.owned(Field::From),
            // The body is not trimmed: its length is what is billed.
            body: self.values[Field::Body as usize]
                .as_deref()
                .map(str::to_string),
            num_segments: number(Field::NumSegments)?,
            num_media: number(Field::NumMedia)?,
            price: self.get(Field::Price).map(parse_price).transpose()?,
            status: self.owned(Field::Status),
            direction: self.owned(Field::Direction),
            account: self.owned(Field::AccountSid),
            client_ip: self
                .get(Field::ClientIp)
                .map(|ip| {
                    ip.parse::<IpAddr>()
                        .map_err(|_| format!("client_ip {ip:?} is not an IP address"))
                })
                .transpose()?,
            user: self.owned(Field::User),
            product,
            channel: self.owned(Field::Channel),
            confirmed_at: match self.get(Field::ConfirmedAt) {
                Some(t) => {
                    let (at, no_zone) =
                        parse_time_zoned(t).map_err(|e| format!("confirmed_at: {e}"))?;
                    zoneless |= no_zone;
                    Some(at)
                }
                None => None,
            },
            label: self.owned(Field::Label),
            zoneless,
        })
    }
}

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    let Some(field) = Field::named(&key.0) else {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    let value = match map.next_value::<Scalar<'de>>()? {
                        Scalar::Text(t) => Some(t),
                        Scalar::Null => None,
                        Scalar::Other => {
                            fields.wrong.get_or_insert(field.name());
                            None
                        }
                    };
                    fields.set(field, value);
                }
                Ok(fields)
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON key, borrowed from the line when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A known field's value: text (numbers and booleans as written), null,
/// or something a record field cannot be.
enum Scalar<'a> {
    Text(Cow<'a, str>),
    Null,
    Other,
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Text(Cow::Borrowed(if v {
                    "true"
                } else {
                    "false"
                })))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A time as exports write it: RFC 2822 (`Tue, 21 Nov 2023 01:02:03
/// +0000`, Twilio's API and Bulk Export), RFC 3339 (`2023-11-21T01:02:03Z`),
/// or `2023-11-21 01:02:03` (taken as UTC). Milliseconds since the epoch.
pub fn parse_time(s: &str) -> Result<Millis, String> {
    parse_time_zoned(s).map(|(at, _)| at)
}

/// [`parse_time`], and whether the time had no zone (read as UTC).
pub fn parse_time_zoned(s: &str) -> Result<(Millis, bool), String> {
    let s = s.trim();
    let mut zoneless = false;
    let parsed = OffsetDateTime::parse(s, &Rfc2822)
        .or_else(|_| OffsetDateTime::parse(s, &Rfc3339))
        .or_else(|_| {
            // "2023-11-21 01:02:03": RFC 3339 with a space, offset left out.
            let t = s.replacen(' ', "T", 1);
            let tail = &t.as_bytes()[t.len().saturating_sub(6)..];
            let has_offset = t.ends_with(['Z', 'z']) || tail.contains(&b'+') || tail.contains(&b'-');
            zoneless = !has_offset;
            OffsetDateTime::parse(&if has_offset { t } else { t + "Z" }, &Rfc3339)
        })
        .map_err(|_| {
            format!("{s:?} is not a time like \"Tue, 21 Nov 2023 01:02:03 +0000\" or \"2023-11-21T01:02:03Z\"")
        })?;
    let ms = parsed.unix_timestamp_nanos() / 1_000_000;
    let at = Millis::try_from(ms).map_err(|_| format!("{s:?} is before 1970"))?;
    Ok((at, zoneless))
}

/// A price as exports write it (`"-0.00790"`: charges are negative), in
/// millionths of the currency, as an absolute value.
pub fn parse_price(s: &str) -> Result<u64, String> {
    let bad = || format!("price {s:?} is not an amount");
    let t = s.trim();
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    // Six decimals kept, the seventh rounds.
    let mut micros = 0u64;
    for (i, d) in frac.bytes().take(7).enumerate() {
        let d = u64::from(d - b'0');
        if i < 6 {
            micros = micros * 10 + d;
        } else if d >= 5 {
            micros += 1;
        }
    }
    for _ in frac.len()..6 {
        micros *= 10;
    }
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(micros))
        .ok_or_else(bad)
}

/// RFC 3339 with milliseconds, UTC: `2023-11-21T01:02:03.456Z`.
pub fn format_time(ms: Millis) -> String {
    crate::base::clock::rfc3339(ms)
}

/// An amount in millionths as an export writes a charge: `"-0.007900"`.
fn format_price(micros: u64) -> String {
    format!("-{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Writes records as JSON lines that [`load`] reads back as the same
/// records (the demo's `--save`). Bodies are written: they are the
/// generator's own text, and the replay needs their length.
pub fn write_json_lines(out: &mut impl Write, records: &[Record]) -> std::io::Result<()> {
    for r in records {
        let mut o = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                o.insert(k.to_string(), v);
            }
        };
        put("date_created", Some(format_time(r.at).into()));
        put("to", Some(r.to.clone().into()));
        put("from", r.from.clone().map(Value::from));
        put("body", r.body.clone().map(Value::from));
        put("num_segments", r.num_segments.map(|n| n.to_string().into()));
        put("num_media", r.num_media.map(|n| n.to_string().into()));
        put("price", r.price.map(|p| format_price(p).into()));
        put("status", r.status.clone().map(Value::from));
        put("direction", r.direction.clone().map(Value::from));
        put("account_sid", r.account.clone().map(Value::from));
        put("client_ip", r.client_ip.map(|ip| ip.to_string().into()));
        put("user", r.user.clone().map(Value::from));
        put("product", Some(r.product.as_str().into()));
        put("channel", r.channel.clone().map(Value::from));
        put(
            "confirmed_at",
            r.confirmed_at.map(|t| format_time(t).into()),
        );
        put("label", r.label.clone().map(Value::from));
        serde_json::to_writer(&mut *out, &o)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_json(line: &str) -> Result<Record, String> {
        let mut out = Vec::new();
        read_json_lines(line.as_bytes(), 0, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        out.pop().unwrap().record
    }

    #[test]
    fn times_in_the_formats_exports_use() {
        let t = 1_700_528_523_000; // 2023-11-21T01:02:03Z
        assert_eq!(parse_time("Tue, 21 Nov 2023 01:02:03 +0000"), Ok(t));
        assert_eq!(parse_time("Mon, 20 Nov 2023 20:02:03 -0500"), Ok(t));
        assert_eq!(parse_time("2023-11-21T01:02:03Z"), Ok(t));
        assert_eq!(parse_time("2023-11-21T02:02:03+01:00"), Ok(t));
        assert_eq!(parse_time("2023-11-21T01:02:03.250Z"), Ok(t + 250));
        assert_eq!(parse_time("2023-11-21 01:02:03"), Ok(t));
        assert_eq!(parse_time_zoned("2023-11-21 01:02:03"), Ok((t, true)));
        assert_eq!(parse_time_zoned("2023-11-21 01:02:03Z"), Ok((t, false)));
        assert_eq!(
            parse_time_zoned("2023-11-21 02:02:03+01:00"),
            Ok((t, false))
        );
        assert_eq!(
            parse_time_zoned("Tue, 21 Nov 2023 01:02:03 +0000"),
            Ok((t, false))
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("1969-12-31T23:59:59Z").is_err());
        assert_eq!(parse_time(&format_time(t + 7)), Ok(t + 7));
    }

    #[test]
    fn prices_are_absolute_millionths() {
        assert_eq!(parse_price("-0.00790"), Ok(7_900));
        assert_eq!(parse_price("0.3"), Ok(300_000));
        assert_eq!(parse_price("-1"), Ok(1_000_000));
        assert_eq!(parse_price("0.0000005"), Ok(1));
        assert!(parse_price("-").is_err());
        assert!(parse_price("abc").is_err());
        assert_eq!(parse_price(&format_price(7_900)), Ok(7_900));
    }

    #[test]
    fn a_bulk_export_line_is_read_by_twilio_names() {
        let r = one_json(
            r#"{"account_sid":"AC1","api_version":"2010-04-01","body":"Your code is 1","date_created":"Tue, 21 Nov 2023 01:02:03 +0000","date_sent":null,"direction":"outbound-api","from":"+15017122661","num_media":"0","num_segments":"1","price":"-0.00790","price_unit":"USD","sid":"SM1","status":"delivered","subresource_uris":{"media":"/x"},"to":"+14155550101","uri":"/x"}"#,
        )
        .unwrap();
        assert_eq!(r.to, "+14155550101");
        assert_eq!(r.at, 1_700_528_523_000);
        assert_eq!(r.price, Some(7_900));
        assert_eq!(r.num_segments, Some(1));
        assert_eq!(r.account.as_deref(), Some("AC1"));
        assert_eq!(r.product, Product::Messaging);
        assert!(r.judged());
    }

    #[test]
    fn smsguard_fields_and_camel_case_names_are_read() {
        let r = one_json(
            r#"{"DateCreated":"2023-11-21T01:02:03Z","To":"+998993941234","Client_IP":"203.0.113.5","user":"u1","product":"verify","channel":"sms","confirmed_at":"2023-11-21T01:03:00Z","label":"attack: UZ","num_segments":2}"#,
        )
        .unwrap();
        assert_eq!(r.client_ip, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(r.product, Product::Verify);
        assert_eq!(r.confirmed_at, Some(1_700_528_580_000));
        assert_eq!(r.label.as_deref(), Some("attack: UZ"));
        assert_eq!(r.segments(), 2);
    }

    #[test]
    fn bad_lines_say_why_and_keep_their_line_numbers() {
        let text = "{\"to\":\"+1\",\"date_created\":\"2023-11-21T01:02:03Z\"}\n\nnot json\n{\"date_created\":\"2023-11-21T01:02:03Z\"}\n{\"to\":\"+1\",\"date_created\":\"soon\"}\n{\"to\":\"+1\",\"date_created\":\"2023-11-21T01:02:03Z\",\"client_ip\":\"300.1.1.1\"}\n{\"to\":{\"a\":1},\"date_created\":\"2023-11-21T01:02:03Z\"}\n";
        let mut out = Vec::new();
        read_json_lines(text.as_bytes(), 0, &mut out);
        let lines: Vec<usize> = out.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 3, 4, 5, 6, 7]);
        assert!(out[0].record.is_ok());
        let why: Vec<String> = out[1..]
            .iter()
            .map(|e| e.record.clone().unwrap_err())
            .collect();
        assert!(why[0].starts_with("not a JSON object"), "{why:?}");
        assert_eq!(why[1], "no to");
        assert!(why[2].starts_with("date_created: \"soon\""), "{why:?}");
        assert!(why[3].contains("not an IP address"), "{why:?}");
        assert_eq!(why[4], "to must be text or a number");
    }

    #[test]
    fn console_csv_is_read_by_its_header_row() {
        let text = "SentDate,To,From,Body,Status,Direction,Price,NumSegments,AccountSid\n\
            2023-11-21T01:02:03-08:00,+14155550101,+15017122661,\"Hello, there\",delivered,outbound-api,-0.0079,1,AC1\n\
            2023-11-21T01:02:04-08:00,+15017122661,+14155550101,STOP,received,inbound,-0.0079,1,AC1\n\
            bad-date,+14155550101,+15017122661,x,delivered,outbound-api,,1,AC1\n";
        let mut out = Vec::new();
        read_csv(text.as_bytes(), 0, &mut out);
        assert_eq!(out.len(), 3);
        let first = out[0].record.as_ref().unwrap();
        assert_eq!(out[0].line, 2);
        assert_eq!(first.body.as_deref(), Some("Hello, there"));
        assert_eq!(first.at, 1_700_557_323_000);
        assert!(!out[1].record.as_ref().unwrap().judged());
        assert_eq!(out[2].line, 4);
        assert!(out[2].record.as_ref().unwrap_err().starts_with("SentDate"));

        // The same with CRLF line endings and a body over two lines: each
        // record keeps the line it starts on.
        let crlf = text
            .replace("\"Hello, there\"", "\"Hello,\nthere\"")
            .replace('\n', "\r\n");
        let mut out = Vec::new();
        read_csv(crlf.as_bytes(), 0, &mut out);
        let lines: Vec<usize> = out.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 4, 5]);
        assert_eq!(
            out[0].record.as_ref().unwrap().body.as_deref(),
            Some("Hello,\r\nthere")
        );
    }

    #[test]
    fn saved_records_read_back_the_same() {
        let mut a = Record::new(1_700_528_523_456, "+14155550101", Product::Verify);
        a.client_ip = Some("198.51.100.7".parse().unwrap());
        a.user = Some("user-1".into());
        a.channel = Some("sms".into());
        a.confirmed_at = Some(1_700_528_583_000);
        a.label = Some("legitimate".into());
        let mut b = Record::new(1_700_528_524_000, "+998993941234", Product::Messaging);
        b.body = Some("Your code is 123456".into());
        b.price = Some(300_000);
        b.num_segments = Some(1);
        b.account = Some("AC1".into());
        let mut text = Vec::new();
        write_json_lines(&mut text, &[a.clone(), b.clone()]).unwrap();
        let mut out = Vec::new();
        read_json_lines(text.as_slice(), 0, &mut out);
        a.line = 1;
        b.line = 2;
        assert_eq!(out[0].record, Ok(a));
        assert_eq!(out[1].record, Ok(b));
    }
}
