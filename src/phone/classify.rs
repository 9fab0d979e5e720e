//! Classification (SPEC §4 step 4): the region and [`NumberType`] of an
//! E.164 number from libphonenumber's metadata, behind a bounded cache
//! ([`Classifier`]). A fast path matches the metadata's patterns, compiled
//! once per calling code; a number it cannot answer for certain goes to the
//! library itself, and what the library would rewrite is unreadable.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use phonenumber::metadata::{Descriptor, DATABASE};
use phonenumber::{Metadata, PhoneNumber, Type};
use regex::{Regex, RegexBuilder};

use super::normalize::MAX_DIGITS;
use super::{NumberType, Region};
use crate::base::Lru;

/// The library unwraps its metadata lookups and the mutex of its shared regex
/// cache: should that ever panic, the request gets "unreadable" (fail
/// closed) rather than a crashed handler.
pub(super) fn without_panic<T>(f: impl FnOnce() -> Option<T>) -> Option<T> {
    panic::catch_unwind(AssertUnwindSafe(f)).ok().flatten()
}

/// What the library's E.164 formatter writes, without calling it: it first
/// searches the region's display formats, which costs regex compilations in
/// its small shared cache, and its `to_string()` panics if the calling code
/// has no metadata.
pub(super) fn e164_of(number: &PhoneNumber) -> String {
    format!("+{}{}", number.code().value(), number.national())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Classification {
    pub calling_code: u16,
    /// None for non-geographic codes (+800, +882, +883, +979…) and for numbers
    /// no region claims.
    pub region: Option<Region>,
    pub kind: NumberType,
    pub valid: bool,
}

/// Classifies E.164 numbers with libphonenumber metadata, behind a bounded cache.
///
/// Cloning is cheap and shares the cache.
#[derive(Clone)]
pub struct Classifier {
    /// Keyed by the digits after the '+' as a number: E.164 has no leading
    /// zero, so this is one key per number, and a u64 costs the cache less to
    /// hash and store than a String.
    /// A sharded LRU: a lookup is a hash and an uncontended lock, an
    /// insert a slot reused in place, about a tenth of what a cache with
    /// frequency-based admission costs per new number.
    cache: Arc<Lru<Option<Classification>>>,
    capacity: u64,
}

impl Classifier {
    pub fn new(capacity: u64) -> Self {
        Classifier {
            cache: Arc::new(Lru::new(capacity)),
            capacity,
        }
    }

    /// Anything but a well-formed E.164 string is `valid: false`, `Unknown`.
    pub fn classify(&self, e164: &str) -> Classification {
        if !is_e164(e164) {
            // Not cached: rejecting it costs less than a cache lookup, and
            // junk must not push real numbers out.
            return unreadable(e164);
        }
        // Up to 15 digits, no leading zero: always a u64.
        let key = e164.get(1..).and_then(|digits| digits.parse::<u64>().ok());
        if let Some(cached) = key.and_then(|key| self.cache.get(&key).flatten()) {
            return cached;
        }
        // A panic is answered as unreadable but not cached, so the number is
        // looked at again next time. Two threads meeting the same new number
        // may both classify it: the answer is the same, and cheaper than the
        // cache's machinery to have one wait for the other.
        let Some(class) = without_panic(|| Some(classify_uncached(e164))) else {
            return unreadable(e164);
        };
        if let Some(key) = key {
            self.cache.with(&key, || None, |_| {}, |e| *e = Some(class));
        }
        class
    }

    /// Entries currently cached.
    pub fn cached(&self) -> u64 {
        self.cache.entries()
    }
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("capacity", &self.capacity)
            .field("entries", &self.cache.entries())
            .finish()
    }
}

pub(super) fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (1..=MAX_DIGITS).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

fn unreadable(e164: &str) -> Classification {
    Classification {
        calling_code: calling_code_of(e164),
        region: None,
        kind: NumberType::Unknown,
        valid: false,
    }
}

/// Country calling codes are prefix-free, so the first 1-, 2- or 3-digit
/// prefix that is a known code is the code.
fn calling_code_of(e164: &str) -> u16 {
    let digits = e164.strip_prefix('+').unwrap_or_default();
    split_calling_code(digits).map_or(0, |(code, _, _)| code)
}

/// The calling code at the start of `digits`, its metadata and the digits
/// after it.
fn split_calling_code(digits: &str) -> Option<(u16, &'static CallingCode, &str)> {
    (1..=3).find_map(|n| {
        let code = digits.get(..n)?.parse::<u16>().ok()?;
        let entry = calling_codes().get(usize::from(code))?.as_ref()?;
        Some((code, entry, digits.get(n..)?))
    })
}

/// Classifies a well-formed E.164 number (see [`Classifier::classify`]).
///
/// This reads the number itself, with patterns compiled once per process
/// ([`Pattern`]), and gives exactly the answer of [`classify_by_library`],
/// which costs `phonenumber::parse` and lookups through the library's small,
/// locked regex cache. The library path is only taken for input that is not
/// E.164, should a metadata pattern not compile, or where the library's
/// parser would panic (a transform rule whose first group did not take part):
/// none of these happens with the bundled metadata (see the tests).
fn classify_uncached(e164: &str) -> Classification {
    classify_fast(e164).unwrap_or_else(|| classify_by_library(e164))
}

/// `None`: take the library path (see [`classify_uncached`]).
fn classify_fast(e164: &str) -> Option<Classification> {
    if !is_e164(e164) {
        return None;
    }
    let digits = e164.strip_prefix('+')?;
    let Some((code, entry, national)) = split_calling_code(digits) else {
        // `parse` knows no calling code either.
        return Some(unreadable(e164));
    };
    // What `parse` refuses: fewer than 3 digits after the '+' (not a "viable"
    // number), a national number of fewer than 2 digits, or one of zeros only
    // (its NationalNumber cannot hold it).
    if digits.len() < 3 || national.len() < 2 || national.bytes().all(|b| b == b'0') {
        return Some(unreadable(e164));
    }
    if entry.library_rewrites(national)? {
        return Some(unreadable(e164));
    }
    let claimed = entry.region_for(national)?;
    let kind = match claimed {
        Some(patterns) => patterns.kind(national)?,
        None => NumberType::Unknown,
    };
    Some(Classification {
        calling_code: code,
        region: claimed.and_then(|patterns| patterns.region),
        kind,
        // libphonenumber's own definition of a valid number.
        valid: kind != NumberType::Unknown,
    })
}

/// The classification as the `phonenumber` library reads the number: the
/// reference [`classify_uncached`] is held to, and its fallback.
fn classify_by_library(e164: &str) -> Classification {
    let Ok(number) = phonenumber::parse(None, e164) else {
        return unreadable(e164);
    };
    // The library strips a "national prefix" even after '+' (+7 800… becomes
    // +7 00…, +370 8… loses its 8): it would then classify another number
    // than the one Twilio is asked to reach.
    if e164_of(&number) != e164 {
        return unreadable(e164);
    }
    let national = number.national().to_string();
    let meta = metadata_for(number.code().value(), &national);
    let kind = meta.map_or(NumberType::Unknown, |meta| kind_in(meta, &national));
    Classification {
        calling_code: number.code().value(),
        region: meta.and_then(|meta| Region::known(meta.id())),
        kind,
        // libphonenumber's own definition of a valid number.
        valid: kind != NumberType::Unknown,
    }
}

/// The metadata (region) a number belongs to, with the library's matching.
///
/// The library's `number_type` and `country().id()` do this lookup on the
/// national number without its significant leading zeros, so Italian
/// landlines (+39 02…), Ivorian (+225 07…) or Beninese (+229 01…) numbers come
/// out Unknown (Italy's without a region) while `is_valid` accepts them; and
/// `number_type`, `country().id()` and `is_valid` each repeat the lookup under
/// the library's global regex lock. This and [`kind_in`] do it once, zeros
/// kept, over the same metadata and in the same order of precedence; tests
/// hold them to the library's answers wherever it has no zeros to lose.
/// [`CallingCode::region_for`] and [`RegionPatterns::kind`] are the same
/// lookups on patterns compiled once.
fn metadata_for(code: u16, national: &str) -> Option<&'static Metadata> {
    let regions = DATABASE.region(&code)?;
    if let [only] = regions.as_slice() {
        // Non-geographic entities all share the id "001": look them up by code.
        return if *only == "001" {
            DATABASE.by_code(&code)?.into_iter().next()
        } else {
            DATABASE.by_id(*only)
        };
    }
    regions.into_iter().find_map(|id| {
        let meta = DATABASE.by_id(id)?;
        let claims = match meta.leading_digits() {
            Some(leading) => leading.find(national).is_some_and(|m| m.start() == 0),
            None => kind_in(meta, national) != NumberType::Unknown,
        };
        claims.then_some(meta)
    })
}

/// Number types checked before fixed line and mobile, most specific first,
/// as libphonenumber's `number_type` does.
const BY_PRECEDENCE: [(Type, NumberType); 8] = [
    (Type::PremiumRate, NumberType::PremiumRate),
    (Type::TollFree, NumberType::TollFree),
    (Type::SharedCost, NumberType::SharedCost),
    (Type::Voip, NumberType::Voip),
    (Type::PersonalNumber, NumberType::PersonalNumber),
    (Type::Pager, NumberType::Pager),
    (Type::Uan, NumberType::Uan),
    (Type::Voicemail, NumberType::Voicemail),
];

/// libphonenumber's number type of `national` in one region's metadata.
fn kind_in(meta: &Metadata, national: &str) -> NumberType {
    let descriptors = meta.descriptors();
    if !descriptors.general().is_match(national) {
        return NumberType::Unknown;
    }
    let matches = |kind| descriptors.get(kind).is_some_and(|d| d.is_match(national));
    if let Some((_, kind)) = BY_PRECEDENCE.iter().find(|(t, _)| matches(*t)) {
        return *kind;
    }
    if matches(Type::FixedLine) {
        // Regions that cannot tell the two apart (NANP) give both the same
        // pattern.
        let same_pattern = match (descriptors.fixed_line(), descriptors.mobile()) {
            (Some(fixed), Some(mobile)) => {
                fixed.national_number().as_str() == mobile.national_number().as_str()
            }
            _ => false,
        };
        if same_pattern || matches(Type::Mobile) {
            NumberType::FixedLineOrMobile
        } else {
            NumberType::FixedLine
        }
    } else if matches(Type::Mobile) {
        NumberType::Mobile
    } else {
        NumberType::Unknown
    }
}

// --- metadata patterns compiled once ------------------------------------

/// Every calling code (index) the metadata knows, built on first use. Only
/// this table is built eagerly; the patterns in it compile when first needed.
fn calling_codes() -> &'static [Option<CallingCode>] {
    static CODES: OnceLock<Vec<Option<CallingCode>>> = OnceLock::new();
    CODES.get_or_init(|| (0..1000u16).map(CallingCode::new).collect())
}

/// The regions of one calling code, in the library's order of precedence.
struct CallingCode {
    /// A calling code of a single region (or non-geographic entity) is that
    /// region's, whatever the number; a shared one goes to the first region
    /// that claims the number.
    single: bool,
    regions: Vec<RegionPatterns>,
}

impl CallingCode {
    fn new(code: u16) -> Option<CallingCode> {
        let ids = DATABASE.region(&code)?;
        let metas: Vec<&'static Metadata> = match ids.as_slice() {
            // Non-geographic entities all share the id "001": look them up by
            // code, as `metadata_for` does.
            ["001"] => DATABASE
                .by_code(&code)
                .and_then(|metas| metas.into_iter().next())
                .into_iter()
                .collect(),
            _ => ids.iter().filter_map(|id| DATABASE.by_id(*id)).collect(),
        };
        Some(CallingCode {
            single: ids.len() == 1,
            regions: metas.into_iter().map(RegionPatterns::new).collect(),
        })
    }

    /// [`metadata_for`]. `None`: a pattern does not compile.
    fn region_for(&self, national: &str) -> Option<Option<&RegionPatterns>> {
        if self.single {
            return Some(self.regions.first());
        }
        for region in &self.regions {
            let claims = match &region.leading_digits {
                Some(leading) => leading.matches_start(national)?,
                None => region.kind(national)? != NumberType::Unknown,
            };
            if claims {
                return Some(Some(region));
            }
        }
        Some(None)
    }

    /// Whether `phonenumber::parse` of "+{code}{national}" comes back with
    /// another national number: it strips what it takes for a national
    /// (trunk) prefix even after a '+'. This is its parser step by step
    /// (`parser::parse_with` and `helper::national_number` in phonenumber
    /// 0.3), for a national number of at least 2 digits, not all zeros.
    /// `None`: take the library path.
    fn library_rewrites(&self, national: &str) -> Option<bool> {
        // The parser picks the region on the number without leading zeros.
        let Some(region) = self.region_for(national.trim_start_matches('0'))? else {
            return Some(false);
        };
        let mut potential = Cow::Borrowed(national);
        match &region.prefix_for_parsing {
            None => {
                if let Some(prefix) = region.national_prefix {
                    if let Some(rest) = national.strip_prefix(prefix) {
                        potential = Cow::Borrowed(rest);
                    }
                }
            }
            // The library takes an unanchored match that starts at 0; the
            // anchored pattern finds the same one.
            Some(pattern) => {
                if let Some(captures) = pattern.regex()?.captures(national) {
                    let end = captures.get(0).map_or(0, |m| m.end());
                    let last = captures.get(captures.len() - 1);
                    match region.transform_rule {
                        Some(rule) if last.is_some() => {
                            // The library unwraps the first group here: if
                            // it did not take part, let the library panic.
                            captures.get(1)?;
                            let viable = region.general.is_match(national)?;
                            let transformed = pattern.regex()?.replace(national, rule);
                            if !viable || region.general.is_match(&transformed)? {
                                potential = Cow::Owned(transformed.into_owned());
                            }
                        }
                        // The library would keep the number if it is viable
                        // and `national[start..]` is not, with start == 0:
                        // never. It always strips.
                        _ => potential = Cow::Borrowed(national.get(end..)?),
                    }
                }
            }
        }
        // The parser then strips the national prefix itself, once more.
        if let Some(prefix) = region.national_prefix {
            if let Some(rest) = potential.strip_prefix(prefix) {
                potential = Cow::Owned(rest.to_owned());
            }
        }
        Some(potential != national && !region.too_short(potential.len()))
    }
}

/// One region's metadata, with its patterns compiled on first use.
struct RegionPatterns {
    region: Option<Region>,
    general: Desc,
    /// In [`BY_PRECEDENCE`] order.
    by_precedence: [(Option<Desc>, NumberType); 8],
    fixed_line: Option<Desc>,
    mobile: Option<Desc>,
    /// Fixed line and mobile share one pattern (NANP).
    same_pattern: bool,
    leading_digits: Option<Pattern>,
    national_prefix: Option<&'static str>,
    prefix_for_parsing: Option<Pattern>,
    transform_rule: Option<&'static str>,
    /// Lengths of the general descriptor, for the parser's "too short".
    possible_length: &'static [u16],
    possible_local_length: &'static [u16],
}

impl RegionPatterns {
    fn new(meta: &'static Metadata) -> RegionPatterns {
        let descriptors = meta.descriptors();
        let general = descriptors.general();
        let same_pattern = match (descriptors.fixed_line(), descriptors.mobile()) {
            (Some(fixed), Some(mobile)) => {
                fixed.national_number().as_str() == mobile.national_number().as_str()
            }
            _ => false,
        };
        RegionPatterns {
            region: Region::known(meta.id()),
            general: Desc::new(general),
            by_precedence: BY_PRECEDENCE.map(|(t, kind)| (descriptors.get(t).map(Desc::new), kind)),
            fixed_line: descriptors.fixed_line().map(Desc::new),
            mobile: descriptors.mobile().map(Desc::new),
            same_pattern,
            leading_digits: meta.leading_digits().map(|re| Pattern::new(re.as_str())),
            national_prefix: meta.national_prefix(),
            prefix_for_parsing: meta
                .national_prefix_for_parsing()
                .map(|re| Pattern::new(re.as_str())),
            transform_rule: meta.national_prefix_transform_rule(),
            possible_length: general.possible_length(),
            possible_local_length: general.possible_local_length(),
        }
    }

    /// [`kind_in`]. `None`: a pattern does not compile.
    fn kind(&self, national: &str) -> Option<NumberType> {
        if !self.general.is_match(national)? {
            return Some(NumberType::Unknown);
        }
        for (desc, kind) in &self.by_precedence {
            if Desc::matches(desc.as_ref(), national)? {
                return Some(*kind);
            }
        }
        Some(if Desc::matches(self.fixed_line.as_ref(), national)? {
            if self.same_pattern || Desc::matches(self.mobile.as_ref(), national)? {
                NumberType::FixedLineOrMobile
            } else {
                NumberType::FixedLine
            }
        } else if Desc::matches(self.mobile.as_ref(), national)? {
            NumberType::Mobile
        } else {
            NumberType::Unknown
        })
    }

    /// The parser's `validator::length(meta, number, Type::Unknown) ==
    /// TooShort`, for a national number of `len` digits.
    fn too_short(&self, len: usize) -> bool {
        let len = len as u16;
        match self.possible_length.first() {
            None => false,
            Some(&minimum) => !self.possible_local_length.contains(&len) && len < minimum,
        }
    }
}

/// A number type's descriptor: possible lengths and pattern.
struct Desc {
    possible_length: &'static [u16],
    pattern: Pattern,
}

impl Desc {
    fn new(descriptor: &'static Descriptor) -> Desc {
        Desc {
            possible_length: descriptor.possible_length(),
            pattern: Pattern::new(descriptor.national_number().as_str()),
        }
    }

    /// The library's `Descriptor::is_match`: one of the possible lengths (if
    /// any are listed), and a match of the pattern starting at the first
    /// digit (not necessarily the whole number).
    fn is_match(&self, national: &str) -> Option<bool> {
        let len = national.len() as u16;
        if !self.possible_length.is_empty() && !self.possible_length.contains(&len) {
            return Some(false);
        }
        self.pattern.matches_start(national)
    }

    fn matches(desc: Option<&Desc>, national: &str) -> Option<bool> {
        desc.map_or(Some(false), |desc| desc.is_match(national))
    }
}

/// A metadata pattern, compiled on first use, once per process, in verbose
/// mode as the library compiles it (but ASCII-only, see [`compile_anchored`]),
/// and anchored at the start: the library only ever asks for a match (or the
/// captures) starting at the first digit, and the leftmost-first match it
/// finds there is the anchored one.
struct Pattern {
    source: &'static str,
    compiled: OnceLock<Option<Regex>>,
}

impl Pattern {
    fn new(source: &'static str) -> Pattern {
        Pattern {
            source,
            compiled: OnceLock::new(),
        }
    }

    /// `None` if the pattern does not compile.
    fn regex(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| compile_anchored(self.source))
            .as_ref()
    }

    /// `find(text).start() == 0` on the library's pattern.
    fn matches_start(&self, text: &str) -> Option<bool> {
        Some(self.regex()?.is_match(text))
    }
}

/// Compiles `^(?:source)`, sharing the compiled program between metadata
/// entries that use the same pattern (many do: the NANP regions, for one).
/// The lock is only taken here, on a pattern's first use, never to match.
fn compile_anchored(source: &str) -> Option<Regex> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let compile = || {
        // The library compiles in verbose mode (white space and `#` comments
        // ignored), so end the pattern with a new line before the ')'.
        RegexBuilder::new(&format!("^(?:{source}\n)"))
            .ignore_whitespace(true)
            // The library compiles in Unicode mode, where `\d` is any decimal
            // digit. Numbers here are ASCII digits only, and the patterns are
            // made of digits, classes of digits, repetitions and
            // alternations: ASCII mode matches exactly the same, and compiles
            // much smaller and faster.
            .unicode(false)
            // regex_cache's defaults, which the library keeps.
            .size_limit(10 * (1 << 20))
            .dfa_size_limit(2 * (1 << 20))
            .build()
            .ok()
    };
    let Ok(mut compiled) = COMPILED.get_or_init(Mutex::default).lock() else {
        return compile();
    };
    if let Some(regex) = compiled.get(source) {
        // A clone shares the program and has its own match-time caches.
        return Some(regex.clone());
    }
    let regex = compile()?;
    compiled.insert(source.to_owned(), regex.clone());
    Some(regex)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use phonenumber::country::Id;

    use super::*;
    use crate::phone::normalize::MIN_DIGITS;

    fn region(s: &str) -> Region {
        s.parse().expect("test region")
    }

    // --- classification -------------------------------------------------

    fn classify(e164: &str) -> Classification {
        Classifier::new(100).classify(e164)
    }

    #[test]
    fn uzbek_mobile() {
        let c = classify("+998993941234");
        assert_eq!(
            c,
            Classification {
                calling_code: 998,
                region: Some(region("UZ")),
                kind: NumberType::Mobile,
                valid: true,
            }
        );
    }

    #[test]
    fn uk_mobile_range_7911_belongs_to_guernsey() {
        let c = classify("+447911123456");
        assert_eq!(c.region, Some(region("GG")));
        assert_eq!(c.calling_code, 44);
        assert_eq!(c.kind, NumberType::Mobile);
        assert!(c.valid);
    }

    #[test]
    fn uk_mobile_range_7400_is_gb() {
        let c = classify("+447400123456");
        assert_eq!(c.region, Some(region("GB")));
        assert_eq!(c.kind, NumberType::Mobile);
        assert!(c.valid);
    }

    #[test]
    fn nanp_numbers_are_fixed_line_or_mobile() {
        let c = classify("+14155550100");
        assert_eq!(c.region, Some(region("US")));
        assert_eq!(c.calling_code, 1);
        assert_eq!(c.kind, NumberType::FixedLineOrMobile);
        assert!(c.valid);
    }

    #[test]
    fn international_networks_have_no_region() {
        let c = classify("+882160000000");
        assert_eq!(c.calling_code, 882);
        assert_eq!(c.region, None);
        assert!(c.valid, "{c:?}");
        let toll_free = classify("+80012345678");
        assert_eq!(
            (toll_free.region, toll_free.kind),
            (None, NumberType::TollFree)
        );
    }

    #[test]
    fn uk_premium_rate() {
        let c = classify("+449091234567");
        assert_eq!(c.region, Some(region("GB")));
        assert_eq!(c.kind, NumberType::PremiumRate);
        assert!(c.valid);
    }

    #[test]
    fn significant_leading_zeros_keep_their_region_and_type() {
        // Milan landline, Vatican landline and an Ivorian mobile: the library
        // alone reports these as Unknown (and Italy without a region).
        let milan = classify("+390212345678");
        assert_eq!(
            (milan.region, milan.kind),
            (Some(region("IT")), NumberType::FixedLine)
        );
        assert!(milan.valid);
        let vatican = classify("+390669812345");
        assert_eq!(vatican.region, Some(region("VA")));
        assert!(vatican.valid);
        let abidjan = classify("+2250712345678");
        assert_eq!(
            (abidjan.region, abidjan.kind),
            (Some(region("CI")), NumberType::Mobile)
        );
        assert!(abidjan.valid);
    }

    #[test]
    fn a_number_the_library_would_rewrite_is_unreadable() {
        // The library drops the "8" after +7 as if it were a trunk prefix:
        // +7 8 916 123 45 67 (one digit too many) would be read as the valid
        // Moscow mobile +7 916 123 45 67.
        let library = phonenumber::parse(None, "+789161234567").unwrap();
        assert_eq!(e164_of(&library), "+79161234567");
        let c = classify("+789161234567");
        assert_eq!(
            c,
            Classification {
                calling_code: 7,
                region: None,
                kind: NumberType::Unknown,
                valid: false
            }
        );
        // Russian toll-free numbers are refused for the same reason.
        assert!(!classify("+78001234567").valid);
    }

    #[test]
    fn garbage_is_invalid_and_never_panics() {
        for junk in [
            "",
            "+",
            "+0",
            "+1",
            "+12",
            "+123",
            "+999999",
            "+99999999999999",
            "1415555010",
            "+1415555010a",
            "+1234567890123456",
            "+\u{0663}",
            "whatsapp:+14155550100",
        ] {
            let c = classify(junk);
            assert!(!c.valid, "{junk:?}");
            assert_eq!((c.region, c.kind), (None, NumberType::Unknown), "{junk:?}");
        }
        assert_eq!(classify("+999999").calling_code, 0);
        assert_eq!(classify("+12").calling_code, 1);
    }

    #[test]
    fn every_short_prefix_classifies_without_panic() {
        // Every possible calling code, followed by numbers of several lengths.
        let classifier = Classifier::new(10);
        for code in 1..1000u32 {
            for tail in ["", "00000", "99999999999"] {
                let number = format!("+{code}{tail}");
                let c = classifier.classify(&number);
                // The calling code is read from the digits even when the
                // rest of the number is junk.
                let known = DATABASE.region(&(code as u16)).is_some();
                let digits = number.len() - 1;
                if known && digits >= MIN_DIGITS.max(code.to_string().len() + 1) {
                    assert_eq!(u32::from(c.calling_code), code, "{number}: {c:?}");
                }
                assert!(
                    c.calling_code == 0 || number[1..].starts_with(&c.calling_code.to_string()),
                    "{number}: {c:?}"
                );
            }
        }
    }

    /// The library's own answers, for numbers it reads without losing
    /// anything: its number_type and country().id() drop leading zeros, and
    /// its parser rewrites +7 8…, +370 8… and +375 80….
    fn library_answer(e164: &str) -> Option<Classification> {
        let number = phonenumber::parse(None, e164).ok()?;
        if number.national().zeros() != 0 || e164_of(&number) != e164 {
            return None;
        }
        Some(Classification {
            calling_code: number.code().value(),
            region: number
                .country()
                .id()
                .and_then(|id| Region::known(id.as_ref())),
            kind: from_library(number.number_type(&DATABASE)),
            valid: phonenumber::is_valid(&number),
        })
    }

    #[test]
    fn metadata_examples_classify_as_their_own_type() {
        // Every example number in the metadata, for every type policy can
        // name, must come back valid with that type, and agree with the
        // library wherever the library reads it right.
        let (mut checked, mut compared) = (0, 0);
        for meta in DATABASE.iter() {
            for kind in NumberType::ALL {
                let Some(example) = library_type(kind)
                    .and_then(|t| meta.descriptors().get(t))
                    .and_then(|d| d.example())
                else {
                    continue;
                };
                let number = format!("+{}{example}", meta.country_code());
                let c = classify_uncached(&number);
                if ["+78", "+3708", "+37580"]
                    .iter()
                    .any(|p| number.starts_with(p))
                {
                    assert!(!c.valid, "{number}");
                    continue;
                }
                assert!(c.valid, "{} {kind} {number}: {c:?}", meta.id());
                let same = c.kind == kind
                    || (c.kind == NumberType::FixedLineOrMobile
                        && matches!(kind, NumberType::FixedLine | NumberType::Mobile));
                assert!(same, "{} {kind} {number}: {c:?}", meta.id());
                checked += 1;
                if let Some(library) = library_answer(&number) {
                    assert_eq!(c, library, "{number}");
                    compared += 1;
                }
            }
        }
        assert!(checked > 1000 && compared > 1000, "{checked} {compared}");
    }

    #[test]
    fn random_numbers_classify_as_the_library_does() {
        // Mostly invalid numbers under every calling code: the lookup must
        // refuse them exactly where the library does.
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut compared = 0;
        for code in (1..1000u16).filter(|code| DATABASE.region(code).is_some()) {
            for _ in 0..4 {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let tail = (seed >> 16) % 10_000_000_000;
                let width = 6 + (seed >> 8) as usize % 5;
                let mut number = format!("+{code}{tail:0width$}");
                number.truncate(MAX_DIGITS + 1);
                if let Some(library) = library_answer(&number) {
                    assert_eq!(classify_uncached(&number), library, "{number}");
                    compared += 1;
                }
            }
        }
        assert!(compared > 800, "{compared}");
    }

    fn from_library(kind: Type) -> NumberType {
        NumberType::ALL
            .into_iter()
            .find(|ours| library_type(*ours) == Some(kind))
            .unwrap_or(match kind {
                Type::FixedLineOrMobile => NumberType::FixedLineOrMobile,
                _ => NumberType::Unknown,
            })
    }

    fn library_type(kind: NumberType) -> Option<Type> {
        match kind {
            NumberType::FixedLine => Some(Type::FixedLine),
            NumberType::Mobile => Some(Type::Mobile),
            NumberType::TollFree => Some(Type::TollFree),
            NumberType::PremiumRate => Some(Type::PremiumRate),
            NumberType::SharedCost => Some(Type::SharedCost),
            NumberType::Voip => Some(Type::Voip),
            NumberType::PersonalNumber => Some(Type::PersonalNumber),
            NumberType::Pager => Some(Type::Pager),
            NumberType::Uan => Some(Type::Uan),
            NumberType::Voicemail => Some(Type::Voicemail),
            NumberType::FixedLineOrMobile | NumberType::Unknown => None,
        }
    }

    // --- the fast path against the library ---------------------------------

    /// xorshift64*: a fixed, dependency-free sequence.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        fn digits(&mut self, out: &mut String, n: usize) {
            for _ in 0..n {
                out.push(char::from(b'0' + self.below(10) as u8));
            }
        }
    }

    /// E.164 numbers under every calling code in the metadata, `per_length`
    /// of every national length E.164 leaves room for (0 to 14 digits):
    /// random digits, numbers that start like the metadata's example numbers,
    /// and numbers that start like national prefixes and the library's
    /// prefixes for parsing (so that the parser's rewriting is exercised).
    /// Plus every example number as is, and `per_length / 2` copies of each
    /// with its last 1 to 4 digits replaced (many of them valid, of every type
    /// and region).
    fn corpus(per_length: usize, seed: u64) -> Vec<String> {
        const STARTS: [&str; 14] = [
            "0", "00", "1", "8", "9", "15", "90", "80", "180020", "1001", "183", "19", "003768",
            "0002",
        ];
        let mut rng = Rng(seed);
        let mut numbers = Vec::new();
        for code in (1..1000u16).filter(|code| DATABASE.region(code).is_some()) {
            let metas = DATABASE.by_code(&code).unwrap_or_default();
            let mut examples: Vec<&str> = metas
                .iter()
                .flat_map(|meta| {
                    let d = meta.descriptors();
                    [Type::Unknown, Type::FixedLine, Type::Mobile]
                        .into_iter()
                        .chain(BY_PRECEDENCE.map(|(t, _)| t))
                        .filter_map(|t| d.get(t)?.example())
                })
                .collect();
            examples.sort_unstable();
            examples.dedup();
            let mut starts: Vec<&str> = STARTS.to_vec();
            starts.extend(metas.iter().filter_map(|meta| meta.national_prefix()));
            let room = MAX_DIGITS - code.to_string().len();
            for example in &examples {
                numbers.push(format!("+{code}{example}"));
                for _ in 0..per_length / 2 {
                    let keep = example.len().saturating_sub(1 + rng.below(4));
                    let mut national = example[..keep].to_owned();
                    rng.digits(&mut national, example.len() - keep);
                    national.truncate(room);
                    numbers.push(format!("+{code}{national}"));
                }
            }
            for len in 0..=room {
                for _ in 0..per_length {
                    let mut national = String::with_capacity(len);
                    match rng.below(3) {
                        0 => {}
                        1 if !examples.is_empty() => {
                            let example = examples[rng.below(examples.len())];
                            let keep = rng.below(example.len() + 1).min(len);
                            national.push_str(&example[..keep]);
                        }
                        _ => {
                            national.push_str(starts[rng.below(starts.len())]);
                            if !examples.is_empty() && rng.below(2) == 0 {
                                let example = examples[rng.below(examples.len())];
                                national.push_str(&example[..rng.below(example.len() + 1)]);
                            }
                            national.truncate(len);
                        }
                    }
                    let fill = len - national.len();
                    rng.digits(&mut national, fill);
                    numbers.push(format!("+{code}{national}"));
                }
            }
        }
        numbers
    }

    /// Compares every field of the fast classification with the library's,
    /// and checks the fast path answered itself (no fallback) and that the
    /// corpus reached every kind of answer.
    fn assert_same_as_library(numbers: &[String]) -> (usize, usize) {
        let (mut valid, mut rewritten, mut regions) = (0, 0, std::collections::HashSet::new());
        let mut kinds = std::collections::HashSet::new();
        for number in numbers {
            let fast = classify_fast(number);
            let library = classify_by_library(number);
            assert_eq!(fast, Some(library), "{number}");
            assert_eq!(classify_uncached(number), library, "{number}");
            valid += usize::from(library.valid);
            regions.insert(library.region);
            kinds.insert(library.kind);
            let digits = &number[1..];
            if let Some((_, entry, national)) = split_calling_code(digits) {
                if national.len() >= 2 && entry.library_rewrites(national) == Some(true) {
                    rewritten += 1;
                }
            }
        }
        let n = numbers.len();
        assert!(valid > n / 10, "{valid} valid of {n}");
        assert!(rewritten > n / 100, "{rewritten} rewritten of {n}");
        assert!(regions.len() > 240, "{} regions", regions.len());
        assert!(
            kinds.len() >= NumberType::ALL.len() - 1,
            "not every type reached: {kinds:?}"
        );
        (valid, rewritten)
    }

    #[test]
    fn fast_classification_is_the_library_classification() {
        // Sized for a debug build: the library path costs about 0.2 ms a
        // number there, plus some 5 s to compile every pattern of every
        // calling code (in Unicode mode, in its 100-entry cache). The test
        // below runs 3.3 million numbers.
        let numbers = corpus(4, 0x9E37_79B9_7F4A_7C15);
        assert!(numbers.len() > 14_000, "{}", numbers.len());
        let (valid, rewritten) = assert_same_as_library(&numbers);
        println!(
            "{} numbers, {valid} valid, {rewritten} rewritten by the parser",
            numbers.len()
        );
    }

    /// About 3.3 million numbers, half a minute in release:
    /// `cargo test --release --lib -- --ignored fast_classification_on_a_large_corpus`
    #[test]
    #[ignore]
    fn fast_classification_on_a_large_corpus() {
        for seed in 1..=5 {
            let numbers = corpus(200, seed);
            assert!(numbers.len() > 600_000, "{}", numbers.len());
            let (valid, rewritten) = assert_same_as_library(&numbers);
            println!(
                "seed {seed}: {} numbers, {valid} valid, {rewritten} rewritten by the parser",
                numbers.len()
            );
        }
    }

    #[test]
    fn short_numbers_classify_as_the_library_does() {
        // Every national number of up to 3 digits under calling codes of 1,
        // 2 and 3 digits, among them codes whose regions strip a national
        // prefix or take leading zeros.
        let mut numbers = vec!["+1".to_owned(), "+12".to_owned(), "+999".to_owned()];
        for code in ["1", "7", "39", "44", "54", "370", "800"] {
            for len in 0..=3 {
                for n in 0..10u32.pow(len) {
                    numbers.push(format!("+{code}{n:0width$}", width = len as usize));
                }
            }
        }
        for number in &numbers {
            let library = classify_by_library(number);
            assert_eq!(classify_fast(number), Some(library), "{number}");
        }
    }

    #[test]
    fn library_rewrites_match_the_parser() {
        // Known rewrites: a national (trunk) prefix after '+', and the
        // parser's transform rules.
        for number in [
            "+789161234567",
            "+78001234567",
            "+37080012345",
            "+375800123456",
        ] {
            let digits = &number[1..];
            let (_, entry, national) = split_calling_code(digits).unwrap();
            assert_eq!(entry.library_rewrites(national), Some(true), "{number}");
            let parsed = phonenumber::parse(None, number).unwrap();
            assert_ne!(e164_of(&parsed), number);
        }
        let (_, entry, national) = split_calling_code("998993941234").unwrap();
        assert_eq!(entry.library_rewrites(national), Some(false));
    }

    #[test]
    fn every_metadata_pattern_compiles() {
        // So the fast path never falls back to the library for want of one.
        let mut compiled = 0;
        for entry in calling_codes().iter().flatten() {
            for region in &entry.regions {
                let descriptors = std::iter::once(&region.general)
                    .chain(region.by_precedence.iter().filter_map(|(d, _)| d.as_ref()))
                    .chain(&region.fixed_line)
                    .chain(&region.mobile);
                let patterns = descriptors
                    .map(|d| &d.pattern)
                    .chain(&region.leading_digits)
                    .chain(&region.prefix_for_parsing);
                for pattern in patterns {
                    assert!(pattern.regex().is_some(), "{:?}", pattern.source);
                    compiled += 1;
                }
            }
        }
        assert!(compiled > 1000, "{compiled}");
    }

    #[test]
    fn every_region_is_a_library_country_id() {
        // The parser looks regions up through `country::Id`; the fast path
        // takes the metadata's ids as they are.
        for meta in DATABASE.iter().filter(|meta| meta.id() != "001") {
            let id = Id::from_str(meta.id()).unwrap_or_else(|_| panic!("{}", meta.id()));
            assert_eq!(id.as_ref(), meta.id());
        }
    }

    #[test]
    fn calling_codes_are_the_metadata_calling_codes() {
        for code in 0..1000u16 {
            assert_eq!(
                calling_codes()[usize::from(code)].is_some(),
                DATABASE.region(&code).is_some(),
                "{code}"
            );
        }
    }

    #[test]
    fn classification_is_cached() {
        let classifier = Classifier::new(100);
        assert_eq!(classifier.cached(), 0);
        let first = classifier.classify("+998993941234");
        assert_eq!(classifier.cached(), 1);
        assert_eq!(classifier.classify("+998993941234"), first);
        assert_eq!(classifier.cached(), 1);
        // Malformed input is answered without taking a cache slot.
        classifier.classify("+1415555010a");
        assert_eq!(classifier.cached(), 1);
    }

    #[test]
    fn the_cache_stays_bounded() {
        let classifier = Classifier::new(100);
        for i in 0..300u64 {
            classifier.classify(&format!("+1415555{:04}", i));
        }
        assert!(classifier.cached() <= 100, "{}", classifier.cached());
    }

    /// What the first number of each calling code costs (compiling the
    /// patterns it needs), against the next ones, in a fresh process:
    /// `cargo test --release --lib -- --ignored --nocapture first_number_timing`
    #[test]
    #[ignore]
    fn first_number_timing() {
        use std::time::{Duration, Instant};
        let started = Instant::now();
        let _ = (&*DATABASE, calling_codes());
        println!("metadata and calling code table: {:?}", started.elapsed());
        let mut rng = Rng(7);
        let (mut first, mut next) = (Vec::new(), Vec::new());
        for code in (1..1000u16).filter(|code| DATABASE.region(code).is_some()) {
            let number = |rng: &mut Rng| {
                let mut n = format!("+{code}");
                let extra = rng.below(MAX_DIGITS + 1 - n.len() - 5);
                rng.digits(&mut n, 6 + extra);
                n
            };
            let started = Instant::now();
            std::hint::black_box(classify_uncached(&number(&mut rng)));
            first.push(started.elapsed());
            for _ in 0..100 {
                let n = number(&mut rng);
                let started = Instant::now();
                std::hint::black_box(classify_uncached(&n));
                next.push(started.elapsed());
            }
        }
        for (label, mut times) in [
            ("first number of a calling code", first),
            ("next numbers", next),
        ] {
            times.sort_unstable();
            let mean = times.iter().sum::<Duration>() / times.len() as u32;
            let median = times[times.len() / 2];
            let p99 = times[times.len() * 99 / 100];
            let max = times[times.len() - 1];
            println!("{label:32} n {:>6}  mean {mean:>9.1?}  median {median:>9.1?}  p99 {p99:>9.1?}  max {max:>9.1?}", times.len());
        }
        let started = Instant::now();
        let mut compiled = 0;
        for entry in calling_codes().iter().flatten() {
            for region in &entry.regions {
                for d in std::iter::once(&region.general)
                    .chain(region.by_precedence.iter().filter_map(|(d, _)| d.as_ref()))
                    .chain(&region.fixed_line)
                    .chain(&region.mobile)
                {
                    compiled += usize::from(d.pattern.regex().is_some());
                }
            }
        }
        println!(
            "then every remaining descriptor pattern ({compiled} in all): {:?}",
            started.elapsed()
        );
        let codes: Vec<u16> = (1..1000u16)
            .filter(|code| DATABASE.region(code).is_some())
            .collect();
        let mut times: Vec<Duration> = (0..100_000)
            .map(|_| {
                let mut n = format!("+{}", codes[rng.below(codes.len())]);
                let extra = rng.below(MAX_DIGITS + 1 - n.len() - 5);
                rng.digits(&mut n, 6 + extra);
                let started = Instant::now();
                std::hint::black_box(classify_uncached(&n));
                started.elapsed()
            })
            .collect();
        times.sort_unstable();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "{:32} n {:>6}  mean {mean:>9.1?}  median {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}",
            "compiled, random calling code",
            times.len(),
            times[times.len() / 2],
            times[times.len() * 99 / 100],
            times[times.len() - 1]
        );
    }

    /// `cargo test --release --lib -- --ignored --nocapture classify_timing`
    #[test]
    #[ignore]
    fn classify_timing() {
        use std::time::{Duration, Instant};
        fn report(label: &str, numbers: impl Iterator<Item = String>, classifier: &Classifier) {
            let mut times: Vec<Duration> = numbers
                .map(|number| {
                    let started = Instant::now();
                    std::hint::black_box(classifier.classify(&number));
                    started.elapsed()
                })
                .collect();
            times.sort_unstable();
            let mean = times.iter().sum::<Duration>() / times.len().max(1) as u32;
            let p99 = times
                .get(times.len() * 99 / 100)
                .copied()
                .unwrap_or_default();
            let max = times.last().copied().unwrap_or_default();
            println!("{label:36} mean {mean:>10.1?}  p99 {p99:>10.1?}  max {max:>10.1?}");
        }

        let classifier = Classifier::new(1_000_000);
        let started = Instant::now();
        classifier.classify("+998993941234");
        println!("first classify (loads metadata): {:?}", started.elapsed());

        report(
            "new number, +1 415",
            (0..20_000).map(|i| format!("+1415{i:07}")),
            &classifier,
        );
        report(
            "new number, +998 99",
            (0..20_000).map(|i| format!("+99899{i:07}")),
            &classifier,
        );
        let codes = [
            "1", "44", "49", "33", "39", "998", "7", "91", "86", "55", "234", "225",
        ];
        report(
            "new number, 12 countries in turn",
            (0..20_000).map(|i| format!("+{}9{i:08}", codes[i % codes.len()])),
            &classifier,
        );
        // Every calling code in turn with random lengths: the library's
        // shared regex cache holds 100 compiled patterns, so this recompiles
        // patterns on almost every number. It is what an attacker spraying
        // random destinations costs.
        let mut seed: u64 = 1;
        let random = (0..60_000).map(move |i| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let width = 4 + (seed >> 40) as usize % 9;
            let tail = (seed >> 8) % 10u64.pow(width as u32);
            let mut number = format!("+{}{tail:0width$}", 1 + i % 999);
            number.truncate(MAX_DIGITS + 1);
            number
        });
        report("new number, random calling code", random, &classifier);
        report(
            "cached number",
            (0..20_000).map(|_| "+998993941234".to_owned()),
            &classifier,
        );
    }
}
