//! The semantics every [`StateStore`] backend must keep, as one suite each
//! backend's tests run against a real instance (sled on a temp dir, a real
//! Redis server, a real peer node): compare-and-swap commits that change
//! nothing on a conflict, versions that never repeat, sessions that never
//! see each other, and no lost update under concurrent read-modify-write.
//!
//! Enabled by the `testing` feature.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::store::{Commit, StateStore, StoreError};
use std::sync::Arc;

/// Runs every check against `store`; session ids start with `prefix` so
/// that runs against one shared server do not meet.
pub async fn run_all(store: Arc<dyn StateStore>, prefix: &str) {
    let s = |name: &str| format!("{prefix}-{name}");
    absent_keys_read_as_none(&*store, &s("absent")).await;
    commits_are_compare_and_swap(&*store, &s("cas")).await;
    versions_never_repeat(&*store, &s("versions")).await;
    sessions_do_not_see_each_other(&*store, &s("iso")).await;
    invalid_sessions_are_refused(&*store).await;
    no_update_is_lost_under_contention(store, &s("race")).await;
}

fn set(key: &str, value: &[u8]) -> Commit {
    Commit {
        reads: Vec::new(),
        writes: vec![(key.into(), Some(value.to_vec()))],
    }
}

async fn absent_keys_read_as_none(store: &dyn StateStore, session: &str) {
    assert!(store.get(session, "nothing").await.unwrap().is_none());
    assert!(store.keys(session).await.unwrap().is_empty());
    assert_eq!(store.delete_session(session).await.unwrap(), 0);
    // A read-only commit changes nothing and never conflicts.
    let read_only = Commit {
        reads: vec![("nothing".into(), Some(7))],
        writes: Vec::new(),
    };
    store.commit(session, &read_only).await.unwrap();
}

async fn commits_are_compare_and_swap(store: &dyn StateStore, session: &str) {
    store.commit(session, &set("k", b"1")).await.unwrap();
    let v1 = store.get(session, "k").await.unwrap().unwrap();
    assert_eq!(v1.value, b"1");
    assert!(v1.version >= 1);
    store.commit(session, &set("k", b"2")).await.unwrap();
    // A commit that read the old version changes nothing, not even its
    // other keys.
    let stale = Commit {
        reads: vec![("k".into(), Some(v1.version))],
        writes: vec![
            ("k".into(), Some(b"3".to_vec())),
            ("other".into(), Some(b"x".to_vec())),
        ],
    };
    match store.commit(session, &stale).await {
        Err(StoreError::Conflict { key }) => assert_eq!(key, "k"),
        r => panic!("a stale read must conflict, got {r:?}"),
    }
    assert_eq!(store.get(session, "k").await.unwrap().unwrap().value, b"2");
    assert!(store.get(session, "other").await.unwrap().is_none());
    // A key read as absent conflicts once it exists.
    let was_absent = Commit {
        reads: vec![("k".into(), None)],
        writes: vec![("k".into(), Some(b"4".to_vec()))],
    };
    assert!(matches!(
        store.commit(session, &was_absent).await,
        Err(StoreError::Conflict { .. })
    ));
    // The version read now is the one that wins.
    let now = store.get(session, "k").await.unwrap().unwrap().version;
    let fresh = Commit {
        reads: vec![("k".into(), Some(now))],
        writes: vec![("k".into(), Some(b"5".to_vec()))],
    };
    store.commit(session, &fresh).await.unwrap();
    assert_eq!(store.get(session, "k").await.unwrap().unwrap().value, b"5");
    store.delete_session(session).await.unwrap();
}

async fn versions_never_repeat(store: &dyn StateStore, session: &str) {
    let mut seen = Vec::new();
    for round in 0..3u8 {
        store.commit(session, &set("k", &[round])).await.unwrap();
        seen.push(store.get(session, "k").await.unwrap().unwrap().version);
        let delete = Commit {
            reads: Vec::new(),
            writes: vec![("k".into(), None)],
        };
        store.commit(session, &delete).await.unwrap();
        assert!(store.get(session, "k").await.unwrap().is_none());
    }
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "a key written again after a delete gets a newer version: {seen:?}"
    );
}

async fn sessions_do_not_see_each_other(store: &dyn StateStore, session: &str) {
    let (a, ab) = (session.to_owned(), format!("{session}b"));
    store.commit(&a, &set("k", b"a")).await.unwrap();
    store.commit(&ab, &set("k", b"ab")).await.unwrap();
    store.commit(&ab, &set("z", b"z")).await.unwrap();
    assert_eq!(store.get(&a, "k").await.unwrap().unwrap().value, b"a");
    let keys: Vec<String> = store
        .keys(&ab)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["k", "z"], "sorted, and only its own");
    assert_eq!(store.delete_session(&a).await.unwrap(), 1);
    assert_eq!(store.get(&ab, "k").await.unwrap().unwrap().value, b"ab");
    assert_eq!(store.delete_session(&ab).await.unwrap(), 2);
}

async fn invalid_sessions_are_refused(store: &dyn StateStore) {
    for bad in ["", "a\0b", "a/b", &"x".repeat(129)] {
        assert!(
            matches!(store.get(bad, "k").await, Err(StoreError::InvalidSession)),
            "{bad:?}"
        );
        assert!(matches!(
            store.commit(bad, &set("k", b"v")).await,
            Err(StoreError::InvalidSession)
        ));
    }
}

/// 16 writers each add 1 to one counter 10 times by read, then
/// compare-and-swap, retrying on a conflict: the counter ends at 160.
async fn no_update_is_lost_under_contention(store: Arc<dyn StateStore>, session: &str) {
    const WRITERS: u64 = 16;
    const EACH: u64 = 10;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, session) = (store.clone(), session.to_owned());
            tokio::spawn(async move {
                let mut conflicts = 0u64;
                for _ in 0..EACH {
                    loop {
                        let seen = store.get(&session, "n").await.unwrap();
                        let n = seen
                            .as_ref()
                            .map_or(0, |v| u64::from_le_bytes(v.value[..8].try_into().unwrap()));
                        let commit = Commit {
                            reads: vec![("n".into(), seen.map(|v| v.version))],
                            writes: vec![("n".into(), Some((n + 1).to_le_bytes().to_vec()))],
                        };
                        match store.commit(&session, &commit).await {
                            Ok(()) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let n = store.get(session, "n").await.unwrap().unwrap().value;
    assert_eq!(
        u64::from_le_bytes(n[..8].try_into().unwrap()),
        WRITERS * EACH,
        "no update lost"
    );
    store.delete_session(session).await.unwrap();
}
