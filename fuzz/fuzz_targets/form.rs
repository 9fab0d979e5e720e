//! `form`: body (+ optional query) -> `smsguard::twilio::form::parse_send`,
//! and `remove_pair(body, "RiskCheck", "disable")`.
//!
//! Input: if it starts with `?`, the query is everything up to the first
//! `\n` (when UTF-8) and the body the rest; otherwise it is all body.
//!
//! Invariants (reference: `smsguard_fuzz::form`, independent and simple):
//! 1. `parse_send` Ok with To = N: the standard reading finds exactly one
//!    To-like key (`to`, `TO`, ` To`, ...) and its value is N; every
//!    lenient reading (`;` separators, double-decoded keys, `To[]`,
//!    invisible characters dropped) finds at most that one To, with value N;
//!    the query has no To-like key under any reading.
//! 2. If the standard reading sees two different To values, or a lenient
//!    reading sees a To with another value, `parse_send` fails.
//! 3. Completeness: a plain body (alphanumeric keys, values of
//!    alphanumerics, `+` and `%2B`) with exactly one To parses, to that To.
//! 4. `remove_pair`: afterwards no reading holds `RiskCheck=disable`, and a
//!    body that parsed still parses, to the same To.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smsguard::twilio::form::{parse_send, remove_pair, Form};
use smsguard_fuzz::form::{any_reading_has, lenient_values, standard_values};
use smsguard_fuzz::show;

fn plain_body(body: &[u8]) -> bool {
    !body.is_empty()
        && body.split(|&b| b == b'&').all(|piece| {
            let Some(i) = piece.iter().position(|&b| b == b'=') else {
                return false;
            };
            let (k, v) = (&piece[..i], &piece[i + 1..]);
            !k.is_empty()
                && k.iter().all(u8::is_ascii_alphanumeric)
                && v.iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'%')
                && v.split(|&b| b == b'%')
                    .skip(1)
                    .all(|rest| rest.starts_with(b"2B"))
        })
}

fn check(query: Option<&str>, body: &[u8]) {
    let parsed = parse_send(query, body);
    let std = standard_values(body, "to");
    let lenient = lenient_values(body, "to");

    match &parsed {
        Ok((form, to)) => {
            // 1.
            assert_eq!(
                std,
                vec![to.as_bytes().to_vec()],
                "body {:?}: parse_send took To={to:?}, the standard reading sees {:?}",
                show(body),
                std.iter().map(|v| show(v)).collect::<Vec<_>>()
            );
            for (i, r) in lenient.iter().enumerate() {
                assert!(
                    r.len() <= 1 && r.iter().all(|v| v == to.as_bytes()),
                    "AMBIGUOUS TO ACCEPTED: body {:?}: parse_send took To={to:?}, lenient reading #{i} sees {:?}",
                    show(body),
                    r.iter().map(|v| show(v)).collect::<Vec<_>>()
                );
            }
            if let Some(q) = query {
                let qs = standard_values(q.as_bytes(), "to");
                assert!(
                    qs.is_empty(),
                    "query {q:?} has a To the guard did not refuse"
                );
                for r in lenient_values(q.as_bytes(), "to") {
                    assert!(
                        r.is_empty(),
                        "query {q:?} has a (lenient) To the guard did not refuse"
                    );
                }
            }
            // The form keeps every pair; its To is the same.
            assert_eq!(form.count("To"), 1);
            assert_eq!(form.one("To"), Ok(Some(to.as_str())));
            // Parsing is deterministic and Form::parse agrees.
            let again = Form::parse(body).expect("parse_send accepted it");
            assert_eq!(again.pairs(), form.pairs());
        }
        Err(_) => {
            // 3. Completeness on plain bodies.
            if query.is_none() && plain_body(body) && std.len() == 1 {
                panic!(
                    "plain body {:?} with one To refused: {:?}",
                    show(body),
                    parsed.as_ref().err()
                );
            }
        }
    }
    // 2. (the contrapositive of 1, spelled out for the report)
    let distinct = {
        let mut v = std.clone();
        v.sort();
        v.dedup();
        v.len()
    };
    if distinct > 1 {
        assert!(
            parsed.is_err(),
            "two different To values accepted: {:?}",
            show(body)
        );
    }

    // 4. RiskCheck=disable removal.
    let removed = remove_pair(body, "RiskCheck", "disable");
    let after: &[u8] = removed.as_deref().unwrap_or(body);
    if Form::parse(body).is_ok() {
        assert!(
            !any_reading_has(after, "riskcheck", "disable"),
            "RiskCheck=disable survives removal: {:?} -> {:?}",
            show(body),
            show(after)
        );
    }
    if let (Some(new), Ok((_, to))) = (&removed, &parsed) {
        match parse_send(query, new) {
            Ok((_, to2)) => assert_eq!(
                &to2,
                to,
                "removing RiskCheck changed To: {:?} -> {:?}",
                show(body),
                show(new)
            ),
            // Known bug `form-riskcheck-reshapes` (fuzz/regressions/form/).
            Err(_) if smsguard_fuzz::tolerated("form-riskcheck-reshapes") => {}
            Err(e) => panic!(
                "removing RiskCheck made a readable send unreadable ({e}): {:?} -> {:?}",
                show(body),
                show(new)
            ),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 4096 {
        return;
    }
    if let Some(rest) = data.strip_prefix(b"?") {
        let (q, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        if let Ok(q) = std::str::from_utf8(q) {
            check(Some(q), body);
        }
    } else {
        check(None, data);
    }
});
