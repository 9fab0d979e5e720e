//! How to make each runtime trust the local CA ([`trust_instructions`]).

use std::path::Path;

// ---------------------------------------------------------------------------

/// Quotes `s` for a POSIX shell if it needs it.
fn sh(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/._-+:=@%,".contains(&c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Host and port of a proxy URL such as `http://127.0.0.1:8080`, for Java's
/// separate host/port properties.
fn proxy_host_port(url: &str) -> Option<(String, String)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.to_string()))
}

/// Text printed after `ca init`: how to make each runtime trust `ca_pem` and
/// send its Twilio traffic through the proxy at `proxy_url`.
///
/// Paths are shown as given: pass an absolute `ca_pem` so that the php.ini
/// and JVM lines work from any working directory. Bundles are placed next to
/// `ca_pem` (`bundle.pem`, `system-bundle.pem`, `truststore.jks`).
pub fn trust_instructions(ca_pem: &Path, proxy_url: &str) -> String {
    let dir = ca_pem.parent().unwrap_or_else(|| Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let ca = sh(&ca_pem.display().to_string());
    let bundle = sh(&dir.join("bundle.pem").display().to_string());
    let sys_bundle = sh(&dir.join("system-bundle.pem").display().to_string());
    let truststore = sh(&dir.join("truststore.jks").display().to_string());
    let proxy = sh(proxy_url);
    let (jhost, jport) =
        proxy_host_port(proxy_url).unwrap_or_else(|| ("PROXY_HOST".into(), "PROXY_PORT".into()));
    format!(
        r#"Local CA certificate: {ca}
Trust it ONLY in the application that talks to Twilio, and keep ca.key
secret: anyone holding it can impersonate any site to a client that trusts
ca.pem. smsguard only mints certificates for Twilio's hosts and names
you configured explicitly.

Every client: send HTTPS through the proxy
  export HTTPS_PROXY={proxy}

Python (twilio-python / requests)
  REQUESTS_CA_BUNDLE REPLACES certifi's public roots, so point it at a bundle
  of certifi's roots plus this CA (rebuild it when certifi is upgraded):
  cat "$(python -m certifi)" {ca} > {bundle}
  export REQUESTS_CA_BUNDLE={bundle}

Node.js (twilio-node)
  NODE_EXTRA_CA_CERTS ADDS to Node's roots (read once, at process start):
  export NODE_EXTRA_CA_CERTS={ca}
  twilio-node reads HTTP_PROXY, not HTTPS_PROXY, even for HTTPS requests:
  export HTTP_PROXY={proxy}

Go (twilio-go; net/http honours HTTPS_PROXY)
  SSL_CERT_FILE REPLACES the system roots, so use a bundle:
  cat /etc/ssl/certs/ca-certificates.crt {ca} > {sys_bundle}
  export SSL_CERT_FILE={sys_bundle}
  or add the CA to the system store (see C# below).

Java (twilio-java; the JVM ignores HTTPS_PROXY)
  Import the CA into a COPY of the JDK truststore:
  cp "$JAVA_HOME/lib/security/cacerts" {truststore}
  keytool -importcert -noprompt -alias smsguard -file {ca} \
    -keystore {truststore} -storepass changeit
  java -Djavax.net.ssl.trustStore={truststore} \
    -Djavax.net.ssl.trustStorePassword=changeit \
    -Dhttps.proxyHost={jhost} -Dhttps.proxyPort={jport} ...
  (If your HTTP client is built without system properties, set the proxy on
  it explicitly.)

Ruby (twilio-ruby; honours HTTPS_PROXY)
  SSL_CERT_FILE replaces OpenSSL's default roots, so use the system bundle:
  cat /etc/ssl/certs/ca-certificates.crt {ca} > {sys_bundle}
  export SSL_CERT_FILE={sys_bundle}

PHP (twilio-php / curl; honours HTTPS_PROXY)
  In php.ini: curl.cainfo = {sys_bundle}   (the bundle built above)
  or per handle: curl_setopt($ch, CURLOPT_CAINFO, '{sys_bundle_raw}');
  PHP-FPM's clear_env (on by default) drops HTTPS_PROXY: set it in the pool
  config: env[HTTPS_PROXY] = {proxy_raw}

C# / .NET on Linux (HttpClient honours HTTPS_PROXY)
  Add the CA to the system store:
  sudo cp {ca} /usr/local/share/ca-certificates/smsguard.crt
  sudo update-ca-certificates

Check (should print an HTTP status from Twilio, not a certificate error):
  curl -sS -o /dev/null -w '%{{http_code}}\n' --proxy {proxy} --cacert {ca} \
    https://api.twilio.com/2010-04-01.json
"#,
        sys_bundle_raw = dir.join("system-bundle.pem").display(),
        proxy_raw = proxy_url,
    )
}
#[cfg(test)]
mod tests {
    use super::*;

    // --- instructions

    #[test]
    fn trust_instructions_cover_each_runtime() {
        let t = trust_instructions(Path::new("certs/ca.pem"), "http://127.0.0.1:8080");
        for needle in [
            "export HTTPS_PROXY=http://127.0.0.1:8080",
            r#"cat "$(python -m certifi)" certs/ca.pem > certs/bundle.pem"#,
            "REQUESTS_CA_BUNDLE=certs/bundle.pem",
            "NODE_EXTRA_CA_CERTS=certs/ca.pem",
            "export HTTP_PROXY=http://127.0.0.1:8080",
            "SSL_CERT_FILE=certs/system-bundle.pem",
            "keytool -importcert",
            "-Djavax.net.ssl.trustStore=certs/truststore.jks",
            "-Dhttps.proxyHost=127.0.0.1 -Dhttps.proxyPort=8080",
            "curl.cainfo",
            "CURLOPT_CAINFO",
            "clear_env",
            "env[HTTPS_PROXY] = http://127.0.0.1:8080",
            "/usr/local/share/ca-certificates/smsguard.crt",
            "update-ca-certificates",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
        }
        // Paths with spaces are quoted for the shell.
        let t = trust_instructions(Path::new("/opt/my certs/ca.pem"), "http://[::1]:3128");
        assert!(
            t.contains("NODE_EXTRA_CA_CERTS='/opt/my certs/ca.pem'"),
            "{t}"
        );
        assert!(
            t.contains("-Dhttps.proxyHost=::1 -Dhttps.proxyPort=3128"),
            "{t}"
        );
        // An address without a port still gives usable text.
        let t = trust_instructions(Path::new("ca.pem"), "proxy");
        assert!(t.contains("-Dhttps.proxyPort=PROXY_PORT"), "{t}");
        assert!(
            t.contains("cat \"$(python -m certifi)\" ca.pem > ./bundle.pem"),
            "{t}"
        );
    }
}
