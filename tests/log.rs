//! Decision events in the log: the rule and the number, never the auth
//! token or the message body. Alone in its binary: the log capture is a
//! thread-local subscriber, and tests in parallel threads of one process
//! could cache tracing's callsite interest before it is installed.

mod common;

use common::*;

const GEO: &str = "[geo]\nallow = [\"US\", \"CA\", \"GB\", \"IE\"]\n";

#[tokio::test]
async fn the_decision_log_names_the_rule_but_never_the_token_or_body() {
    // Capture this test's log: the server runs on this thread's runtime.
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .json()
        .with_writer(move || Writer(w.clone()))
        .finish();
    let _g = tracing::subscriber::set_default(sub);
    let env = start(GEO).await;
    env.post_form(MESSAGES, "To=%2B998993941234&Body=planted-secret-body-91c2")
        .await;
    env.post_form(MESSAGES, "To=%2B14155550123&Body=planted-secret-body-91c2")
        .await;
    let log = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert!(log.contains("geo:UZ"), "{log}");
    assert!(log.contains("+998993941234"), "{log}");
    assert!(log.contains("\"action\":\"shadow\""), "{log}");
    assert!(log.contains("\"action\":\"allow\""), "{log}");
    assert!(!log.contains("planted-secret-body"), "body leaked: {log}");
    assert!(!log.contains("planted-auth-token"), "token leaked: {log}");
    assert!(
        !log.contains("cGxhbnRlZC1hdXRoLXRva2Vu"),
        "token leaked: {log}"
    );
}

struct Writer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
