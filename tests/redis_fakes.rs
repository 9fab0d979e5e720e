//! Shadow fakes shared between replicas through Redis
//! (`FakeStore::attach`, src/store/redis_fakes.rs) against real
//! `redis-server` processes (tests/common/redis.rs): two stores, each on
//! its own link to one Redis, stand for two guard replicas. What one
//! remembers the other answers, byte for byte; a forgotten verification is
//! forgotten by both; everything expires after the retention; Redis down
//! leaves each replica with its own fakes, quickly; a store not attached
//! behaves as before; and the same on a three-master Cluster.

mod common;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::redis::{link, RedisCluster, RedisServer, Target};
use smsguard::pipeline::shadow::FakeStore;
use smsguard::store::redis::RedisLink;
use smsguard::twilio::responses::{self, MessageRequest};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const SERVICE: &str = "VA0123456789abcdef0123456789abcdef";
/// How long an asynchronous write may take to be seen by the other store.
const SEEN_WITHIN: Duration = Duration::from_secs(5);

/// Two replicas' fake stores, each attached to its own link.
async fn replicas(a: RedisLink, b: RedisLink, retention: Duration) -> (FakeStore, FakeStore) {
    let (fa, fb) = (
        FakeStore::new(1_000, retention),
        FakeStore::new(1_000, retention),
    );
    fa.attach(a);
    fb.attach(b);
    (fa, fb)
}

/// Polls `f` every 10 ms until it holds; false after `bound`.
async fn until<F: Future<Output = bool>>(bound: Duration, mut f: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `f` until it answers Some, within [`SEEN_WITHIN`].
async fn seen<T, F: Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + SEEN_WITHIN;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {SEEN_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The message fakes a test remembers: with and without optional fields,
/// media, a body with non-ASCII text and separators the encoding uses.
fn messages() -> Vec<MessageRequest<'static>> {
    vec![
        MessageRequest {
            account_sid: ACCOUNT,
            to: "+15558675310",
            from: Some("+15017122661"),
            messaging_service_sid: None,
            body: Some("Your code: 1234 | café, 50% off: ok"),
            num_media: 0,
        },
        MessageRequest {
            account_sid: ACCOUNT,
            to: "whatsapp:+15558675310",
            from: None,
            messaging_service_sid: Some("MG9752274e9e519418a7406176694466fa"),
            body: None,
            num_media: 2,
        },
        MessageRequest {
            account_sid: ACCOUNT,
            to: "+447700900123",
            from: Some("ACME"),
            messaging_service_sid: Some("MG9752274e9e519418a7406176694466fa"),
            body: Some(""),
            num_media: 1,
        },
    ]
}

/// Everything a replica remembers is answered by the other, the same.
async fn share_everything(a: &FakeStore, b: &FakeStore) {
    // A fake message: B makes the same JSON A answered.
    let created = SystemTime::now();
    for req in messages() {
        let (sid, json) = responses::fake_message(&req, created);
        a.remember_message(&sid, &req, created);
        let got = seen("message", || b.get_shared(&sid)).await;
        assert_eq!(got, json, "{:?}", req.body);
        assert_eq!(a.get(&sid), Some(json.clone()));
        // Kept on B now: answered without Redis.
        assert_eq!(b.get(&sid), Some(json));
    }

    // A fake call, kept as its JSON.
    let (call_sid, call) = responses::fake_call(
        &responses::CallRequest {
            account_sid: ACCOUNT,
            to: "+15558675310",
            from: Some("+15017122661"),
        },
        created,
    );
    a.remember(&call_sid, call.clone());
    assert_eq!(seen("call", || b.get_shared(&call_sid)).await, call);

    // A fake participant, by each conference name and id, and its call.
    let p_call = Bytes::from_static(b"{\"sid\": \"CA1\", \"status\": \"queued\"}");
    let p_body = Bytes::from_static(b"{\"call_sid\": \"CA1\", \"label\": \"agent {7}\"}");
    let conference = "CF0123456789abcdef0123456789abcdef";
    let call_sid = format!("CA{:032x}", rand_u128());
    a.remember_participant(
        &call_sid,
        p_call.clone(),
        &[conference, "Room {7}: sales"],
        &[&call_sid, "agent {7}"],
        p_body.clone(),
    );
    for c in [conference, "Room {7}: sales"] {
        for id in [call_sid.as_str(), "agent {7}"] {
            let got = seen("participant", || b.participant_shared(c, id)).await;
            assert_eq!(got, p_body, "{c} {id}");
        }
    }
    assert_eq!(
        seen("participant call", || b.get_shared(&call_sid)).await,
        p_call
    );
    assert!(b.participant_shared("CF-other", &call_sid).await.is_none());

    // A shadowed verification, and its fake by sid.
    let to = format!("+1555{:07}", rand_u128() % 10_000_000);
    let (ve_sid, ve) = responses::fake_verification(
        &responses::VerificationRequest {
            account_sid: ACCOUNT,
            service_sid: SERVICE,
            to: &to,
            channel: "sms",
        },
        created,
    );
    a.remember(&ve_sid, ve.clone());
    a.remember_verification(SERVICE, &to, &ve_sid);
    let got = seen("verification", || {
        b.shadowed_verification_shared(SERVICE, &to)
    })
    .await;
    assert_eq!(got, ve_sid);
    assert_eq!(
        seen("verification by sid", || b.get_shared(&ve_sid)).await,
        ve
    );
    assert!(b
        .shadowed_verification_shared("VAother", &to)
        .await
        .is_none());

    // What nobody remembered is nowhere.
    assert!(b
        .get_shared("SM00000000000000000000000000000000")
        .await
        .is_none());
    assert!(a
        .get_shared("SM00000000000000000000000000000000")
        .await
        .is_none());
}

fn rand_u128() -> u128 {
    // Distinct enough between tests run in one process.
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    t.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_made_by_one_replica_is_answered_by_another() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = replicas(
        link(Target::Server(&server), "2s").await,
        link(Target::Server(&server), "2s").await,
        Duration::from_secs(60),
    )
    .await;
    share_everything(&a, &b).await;
    // And the other way round.
    share_everything(&b, &a).await;
    assert_eq!(a.shared_write_errors.load(Ordering::Relaxed), 0);
    assert_eq!(b.shared_write_errors.load(Ordering::Relaxed), 0);

    // Each fake is one key of its own, expiring with the retention.
    let (sid, _) = responses::fake_message(&messages()[0], SystemTime::now());
    a.remember_message(&sid, &messages()[0], SystemTime::now());
    seen("message", || b.get_shared(&sid)).await;
    let key = format!("smsguard:f:{{{sid}}}");
    let pttl: i64 = server.cli(&["pttl", &key]).parse().unwrap();
    assert!(pttl > 55_000 && pttl <= 60_000, "{pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_verification_is_forgotten_by_every_replica() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = replicas(
        link(Target::Server(&server), "2s").await,
        link(Target::Server(&server), "2s").await,
        Duration::from_secs(60),
    )
    .await;
    let to = "+15551230001";
    a.remember_verification(SERVICE, to, "VE1");
    // B has asked Redis, and keeps the answer.
    assert_eq!(
        seen("verification", || b
            .shadowed_verification_shared(SERVICE, to))
        .await,
        "VE1"
    );
    assert_eq!(b.shadowed_verification(SERVICE, to).as_deref(), Some("VE1"));
    // A real verification on A: B, which knew the fake, stops answering it.
    a.forget_verification(SERVICE, to);
    assert!(a.shadowed_verification_shared(SERVICE, to).await.is_none());
    assert!(
        until(SEEN_WITHIN, || async {
            b.shadowed_verification_shared(SERVICE, to).await.is_none()
        })
        .await,
        "B still answers a forgotten verification"
    );
    assert!(b.shadowed_verification(SERVICE, to).is_none());

    // Shadowed again, on B this time: A sees the new one.
    b.remember_verification(SERVICE, to, "VE2");
    assert_eq!(
        seen("verification", || a
            .shadowed_verification_shared(SERVICE, to))
        .await,
        "VE2"
    );

    // Remembered and at once forgotten: the two writes may reach Redis in
    // any order, and the forgetting wins all the same.
    let to = "+15551230002";
    for _ in 0..20 {
        a.remember_verification(SERVICE, to, "VE3");
        a.forget_verification(SERVICE, to);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.shadowed_verification_shared(SERVICE, to).await.is_none());
    assert!(a.shadowed_verification_shared(SERVICE, to).await.is_none());
    assert_eq!(a.shared_write_errors.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_fakes_expire_after_the_retention() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let retention = Duration::from_millis(600);
    let (a, b) = replicas(
        link(Target::Server(&server), "2s").await,
        link(Target::Server(&server), "2s").await,
        retention,
    )
    .await;
    let made = Instant::now();
    let req = &messages()[0];
    let (sid, json) = responses::fake_message(req, SystemTime::now());
    // Each write awaited, as the guard awaits them before answering.
    a.remember_message(&sid, req, SystemTime::now())
        .wait()
        .await;
    a.remember(
        "CA0123456789abcdef0123456789abcdef",
        Bytes::from_static(b"{}"),
    )
    .wait()
    .await;
    a.remember_verification(SERVICE, "+15551230003", "VE1")
        .wait()
        .await;
    assert_eq!(seen("message", || b.get_shared(&sid)).await, json);
    assert!(b
        .shadowed_verification_shared(SERVICE, "+15551230003")
        .await
        .is_some());
    assert!(made.elapsed() < retention, "too slow to test expiry");
    tokio::time::sleep(retention + Duration::from_millis(100)).await;
    // Gone here, there (B kept them only as long as Redis had left) and
    // in Redis.
    for f in [&a, &b] {
        assert!(f.get(&sid).is_none());
        assert!(f.get_shared(&sid).await.is_none());
        assert!(f
            .get_shared("CA0123456789abcdef0123456789abcdef")
            .await
            .is_none());
        assert!(f
            .shadowed_verification_shared(SERVICE, "+15551230003")
            .await
            .is_none());
    }
    assert_eq!(server.cli(&["dbsize"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_replica_answers_its_own_fakes_quickly() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (a, b) = replicas(
        link(Target::Server(&server), "200ms").await,
        link(Target::Server(&server), "200ms").await,
        Duration::from_secs(60),
    )
    .await;
    let req = &messages()[0];
    let (shared_sid, shared_json) = responses::fake_message(req, SystemTime::now());
    a.remember_message(&shared_sid, req, SystemTime::now());
    seen("message", || b.get_shared(&shared_sid)).await;

    server.kill();
    // Each lookup is bounded by the link's timeout (the first ones find
    // out Redis is gone; later ones fail at once): a miss, no panic.
    for i in 0..20 {
        let t = Instant::now();
        assert!(b.get_shared(&format!("SM{i:032}")).await.is_none());
        assert!(b
            .participant_shared("CF1", &format!("CA{i}"))
            .await
            .is_none());
        assert!(b
            .shadowed_verification_shared(SERVICE, "+15551230004")
            .await
            .is_none());
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    // What each replica holds itself is still answered.
    assert_eq!(a.get_shared(&shared_sid).await, Some(shared_json.clone()));
    assert_eq!(b.get_shared(&shared_sid).await, Some(shared_json));
    let (sid, json) = responses::fake_message(req, SystemTime::now());
    let before = a.shared_write_errors.load(Ordering::Relaxed);
    a.remember_message(&sid, req, SystemTime::now());
    a.remember_verification(SERVICE, "+15551230005", "VE5");
    a.forget_verification(SERVICE, "+15551230006");
    assert_eq!(a.get_shared(&sid).await, Some(json));
    assert_eq!(
        a.shadowed_verification_shared(SERVICE, "+15551230005")
            .await
            .as_deref(),
        Some("VE5")
    );
    assert!(b.get_shared(&sid).await.is_none());
    // The writes that could not be made are counted.
    assert!(
        until(SEEN_WITHIN, || async {
            a.shared_write_errors.load(Ordering::Relaxed) >= before + 3
        })
        .await,
        "{} write errors",
        a.shared_write_errors.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_not_attached_keeps_its_fakes_to_itself() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (
        FakeStore::new(100, Duration::from_secs(60)),
        FakeStore::new(100, Duration::from_secs(60)),
    );
    let req = &messages()[1];
    let (sid, json) = responses::fake_message(req, SystemTime::now());
    a.remember_message(&sid, req, SystemTime::now());
    a.remember("CA1", Bytes::from_static(b"{}"));
    a.remember_participant(
        "CA2",
        Bytes::from_static(b"{\"c\"}"),
        &["CF1"],
        &["CA2"],
        Bytes::from_static(b"{\"p\"}"),
    );
    a.remember_verification(SERVICE, "+15551230007", "VE7");
    assert_eq!(a.get_shared(&sid).await, Some(json.clone()));
    assert_eq!(a.get(&sid), Some(json));
    assert_eq!(a.get_shared("CA1").await, Some(Bytes::from_static(b"{}")));
    assert_eq!(
        a.participant_shared("CF1", "CA2").await,
        Some(Bytes::from_static(b"{\"p\"}"))
    );
    assert_eq!(
        a.shadowed_verification_shared(SERVICE, "+15551230007")
            .await
            .as_deref(),
        Some("VE7")
    );
    a.forget_verification(SERVICE, "+15551230007");
    assert!(a
        .shadowed_verification_shared(SERVICE, "+15551230007")
        .await
        .is_none());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(b.get_shared(&sid).await.is_none());
    assert!(b.get_shared("CA1").await.is_none());
    assert_eq!(a.shared_write_errors.load(Ordering::Relaxed), 0);
    // A Redis is running, and nothing was written to it.
    assert_eq!(server.cli(&["dbsize"]), "0");

    // Attached later: shares from then on.
    let (l1, l2) = (
        link(Target::Server(&server), "2s").await,
        link(Target::Server(&server), "2s").await,
    );
    a.attach(l1);
    b.attach(l2);
    a.remember("CA3", Bytes::from_static(b"{\"3\"}"));
    assert_eq!(
        seen("call", || b.get_shared("CA3")).await,
        Bytes::from_static(b"{\"3\"}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fakes_are_shared_on_a_cluster() {
    let Some(cluster) = RedisCluster::start(3) else {
        return;
    };
    let (a, b) = replicas(
        link(Target::Cluster(&cluster), "2s").await,
        link(Target::Cluster(&cluster), "2s").await,
        Duration::from_secs(60),
    )
    .await;
    share_everything(&a, &b).await;
    // Many sids, so many slots on all three masters.
    let req = &messages()[0];
    let mut made = Vec::new();
    for _ in 0..30 {
        let (sid, json) = responses::fake_message(req, SystemTime::now());
        a.remember_message(&sid, req, SystemTime::now());
        made.push((sid, json));
    }
    for (sid, json) in &made {
        assert_eq!(&seen("message", || b.get_shared(sid)).await, json);
    }
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| n.cli(&["dbsize"]).parse::<u64>().unwrap() > 0)
        .count();
    assert_eq!(holding, 3);
    // Forgetting works across slots too.
    a.remember_verification(SERVICE, "+15551230008", "VE8");
    seen("verification", || {
        b.shadowed_verification_shared(SERVICE, "+15551230008")
    })
    .await;
    a.forget_verification(SERVICE, "+15551230008");
    assert!(
        until(SEEN_WITHIN, || async {
            b.shadowed_verification_shared(SERVICE, "+15551230008")
                .await
                .is_none()
        })
        .await
    );
    assert_eq!(a.shared_write_errors.load(Ordering::Relaxed), 0);
    assert_eq!(b.shared_write_errors.load(Ordering::Relaxed), 0);
}
