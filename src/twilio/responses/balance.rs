//! The account's Balance resource.

use bytes::Bytes;

use super::json::JsonObject;

/// The JSON of an account balance, as `GET .../Balance.json` answers it.
pub fn balance(account_sid: &str, balance: &str, currency: &str) -> Bytes {
    let mut obj = JsonObject::new();
    obj.str("account_sid", account_sid);
    obj.str("balance", balance);
    obj.str("currency", currency);
    obj.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::responses::test_support::*;

    #[test]
    fn a_balance_has_its_three_keys() {
        let body = balance(AC, "0.05", "USD");
        assert_eq!(
            body,
            Bytes::from(format!(
                r#"{{"account_sid": "{AC}", "balance": "0.05", "currency": "USD"}}"#
            ))
        );
    }
}
