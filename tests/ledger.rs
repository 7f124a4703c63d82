//! The ledger against a real Redis (Debian's redis-server): every usage event is
//! applied exactly once however slow Redis is, sums are exact to the nano-USD,
//! charges travel in batches, and an event Redis can never apply is given up
//! (counted) without blocking the others.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use common::redis::{Redis, command};
use payi_operator::limits::ledger::{Ledger, LedgerKey, LedgerMetrics, Timeouts, UsageEvent};
use payi_operator::money::PicoUsd;

fn ledger(redis: &Redis, charge_ms: u64) -> Arc<Ledger> {
    let timeouts = Timeouts {
        check: Duration::from_millis(100),
        charge: Duration::from_millis(charge_ms),
        event_ttl: Duration::from_secs(3600),
    };
    let ledger = Ledger::new(&redis.url(), timeouts, Arc::new(LedgerMetrics::default())).unwrap();
    tokio::spawn(ledger.clone().run());
    ledger
}

fn counter(key: &str) -> Vec<LedgerKey> {
    vec![LedgerKey { key: key.to_string(), ttl: Some(86_400) }]
}

/// An event that charges `cost` to the money counters `money`.
fn charge(ledger: &Ledger, money: Vec<LedgerKey>, cost: PicoUsd) {
    ledger.record(UsageEvent { cost: Some(cost), money, ..UsageEvent::default() });
}

async fn get(redis: &Redis, key: &str) -> u128 {
    let reply = redis.command(&["GET", key]).await;
    reply.lines().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn settled(ledger: &Ledger) {
    eventually("every queued usage event to reach the ledger", || async { (ledger.queued() == 0).then_some(()) }).await;
}

#[tokio::test]
async fn a_charge_whose_answer_comes_after_the_timeout_is_applied_once() {
    let redis = Redis::start().await;
    // Charges time out after 50 ms; Redis then stalls for 300 ms at a time, over and
    // over, so every early send of a batch is answered late and sent again.
    let ledger = ledger(&redis, 50);
    let key = "payi:nusd:test:slow";
    // One event first, so the script is loaded: a late EVALSHA then runs for real.
    let mut expected = PicoUsd(1);
    charge(&ledger, counter(key), expected);
    settled(&ledger).await;
    let slow = {
        let addr = redis.addr.clone();
        tokio::spawn(async move {
            for _ in 0..8 {
                command(&addr, &["DEBUG", "SLEEP", "0.3"]).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for i in 0..40u128 {
        let cost = PicoUsd(1_000_000 + i * 7_777);
        expected += cost;
        charge(&ledger, counter(key), cost);
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    slow.await.unwrap();
    settled(&ledger).await;
    let (nano, rest) = expected.split_nano();
    assert_eq!(get(&redis, key).await, nano, "each event charged exactly once");
    assert_eq!(get(&redis, &format!("{key}:p")).await, u128::from(rest));
    assert_eq!(ledger.metrics.applied.get(), 41);
    assert!(ledger.metrics.duplicates.get() > 0, "the late answers were sent again and recognised");
    assert!(ledger.metrics.errors.get() > 0, "the timeouts were counted");
}

#[tokio::test]
async fn thousands_of_odd_costs_sum_exactly_in_few_round_trips() {
    let redis = Redis::start().await;
    let ledger = ledger(&redis, 1000);
    let (org, app) = ("payi:nusd:test:org", "payi:nusd:test:app");
    let mut expected = PicoUsd::ZERO;
    let events = 5_000u128;
    for i in 0..events {
        // 480,000 pico-USD is 24 embedding tokens at USD 0.02 per million; the odd ones carry remainders.
        let cost = PicoUsd(if i % 2 == 0 { 480_000 } else { 1 + (i * 7919) % 999_999 });
        expected += cost;
        let counters = vec![LedgerKey { key: org.into(), ttl: None }, LedgerKey { key: app.into(), ttl: Some(3600) }];
        charge(&ledger, counters, cost);
    }
    settled(&ledger).await;
    let (nano, rest) = expected.split_nano();
    for key in [org, app] {
        assert_eq!(get(&redis, key).await, nano, "{key}");
        assert_eq!(get(&redis, &format!("{key}:p")).await, u128::from(rest), "{key}");
    }
    assert_eq!(ledger.metrics.applied.get(), events as u64);
    let batches = ledger.metrics.batches.get();
    assert!(batches * 10 <= events as u64, "{batches} round trips for {events} events: not batched");
    let ttl = redis.command(&["TTL", app]).await;
    assert!(ttl.starts_with(':') && !ttl.starts_with(":-"), "the window's counter expires: {ttl}");
}

#[tokio::test]
async fn an_event_redis_can_never_apply_is_given_up_and_the_others_go_on() {
    let redis = Redis::start().await;
    let ledger = ledger(&redis, 1000);
    // A key that is not a counter (a misconfiguration, another program's data).
    redis.command(&["HSET", "payi:nusd:test:hash", "f", "1"]).await;
    let good = "payi:nusd:test:good";
    charge(&ledger, counter(good), PicoUsd(5_000));
    charge(&ledger, counter("payi:nusd:test:hash"), PicoUsd(7_000));
    charge(&ledger, counter(good), PicoUsd(11_000));
    settled(&ledger).await;
    assert_eq!(get(&redis, good).await, 16);
    assert_eq!(ledger.metrics.applied.get(), 2);
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    ledger.metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("payi_limit_charges_failed_total{reason=\"wrongtype\"} 1"), "{text}");
}

#[tokio::test]
async fn charges_queued_while_redis_is_down_are_applied_once_when_it_returns() {
    let mut redis = Redis::start().await;
    let ledger = ledger(&redis, 200);
    let key = "payi:nusd:test:restart";
    charge(&ledger, counter(key), PicoUsd(3_000_000));
    settled(&ledger).await;
    redis.stop();
    for _ in 0..10 {
        charge(&ledger, counter(key), PicoUsd(3_000_000));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ledger.queued(), 10, "kept while Redis is down");
    redis.restart(Duration::ZERO).await;
    settled(&ledger).await;
    assert_eq!(get(&redis, key).await, 11 * 3_000);
    // What is left at shutdown is counted, never dropped silently.
    redis.stop();
    charge(&ledger, counter(key), PicoUsd(1));
    assert_eq!(ledger.drain(Duration::from_millis(300)).await, 1);
}

#[tokio::test]
async fn the_first_check_after_redis_returns_is_answered() {
    let mut redis = Redis::start().await;
    let ledger = ledger(&redis, 1000);
    let keys = vec!["payi:nusd:test:check".to_string()];
    assert_eq!(ledger.spent(&keys).await.unwrap(), [0]);
    redis.stop();
    // Calls while Redis is away fail (and leave the connection failed).
    for _ in 0..5 {
        assert!(ledger.spent(&keys).await.is_err());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.restart(Duration::ZERO).await;
    // The very first call after it is back: answered, not refused (issue 26).
    assert_eq!(ledger.spent(&keys).await.unwrap(), [0], "the first check after the outage failed");
}

#[tokio::test]
async fn counts_go_with_the_event_and_an_unknown_cost_charges_no_money() {
    let redis = Redis::start().await;
    let ledger = ledger(&redis, 1000);
    let (spend, tokens, requests) = ("payi:nusd:test:lvl", "payi:tokens:test:lvl", "payi:requests:test:lvl");
    let event = |cost| UsageEvent {
        cost,
        money: counter(spend),
        counts: vec![
            (LedgerKey { key: tokens.into(), ttl: Some(3600) }, 120),
            (LedgerKey { key: requests.into(), ttl: Some(3600) }, 1),
        ],
        ..UsageEvent::default()
    };
    ledger.record(event(Some(PicoUsd(2_500_000))));
    ledger.record(event(None));
    ledger.record(event(Some(PicoUsd::ZERO)));
    settled(&ledger).await;
    assert_eq!(get(&redis, spend).await, 2_500, "only the known cost is money");
    assert_eq!(get(&redis, tokens).await, 360);
    assert_eq!(get(&redis, requests).await, 3, "every request counts, whatever its cost");
}

use payi_operator::limits::ledger::{Bound, Reservation, event_id};

#[tokio::test]
async fn reservations_hold_a_maximum_across_replicas_and_settle_to_the_exact_cost() {
    let redis = Redis::start().await;
    // Two replicas sharing one ledger.
    let (a, b) = (ledger(&redis, 1000), ledger(&redis, 1000));
    let key = "payi:nusd:limit:test/max:0:all";
    let bounds = vec![Bound { key: key.into(), max_nano: 50_000 }];
    // 200 requests at once, each reserving 1,000 nano-USD, on a maximum of 50,000.
    let attempts: Vec<_> = (0..200)
        .map(|i| {
            let (ledger, bounds) = (if i % 2 == 0 { a.clone() } else { b.clone() }, bounds.clone());
            tokio::spawn(async move {
                let id = event_id();
                let answer = ledger.reserve(&id, &bounds, PicoUsd(1_000_000), Duration::from_secs(60)).await.unwrap();
                (id, answer, ledger)
            })
        })
        .collect();
    let mut held = vec![];
    for attempt in attempts {
        let (id, answer, ledger) = attempt.await.unwrap();
        match answer {
            Reservation::Held => held.push((id, ledger)),
            Reservation::Refused { index, spent_nano, reserved_nano } => {
                assert_eq!(index, 0);
                assert_eq!(spent_nano, 0);
                assert!(reserved_nano > 49_000, "refused with only {reserved_nano} held");
            }
        }
    }
    assert_eq!(held.len(), 50, "exactly as many as the maximum takes");
    // Each settles to its exact cost, a third of what it reserved.
    for (id, ledger) in &held {
        ledger.record(UsageEvent {
            cost: Some(PicoUsd(333_333)),
            money: counter(key),
            id: Some(id.clone()),
            reserved: vec![key.into()],
            ..UsageEvent::default()
        });
    }
    settled(&a).await;
    settled(&b).await;
    // 50 x 333,333 pico-USD = 16,666 nano-USD and 650 pico-USD beside.
    assert_eq!(get(&redis, key).await, 16_666, "the exact costs");
    assert_eq!(get(&redis, &format!("{key}:p")).await, 650);
    assert_eq!(get(&redis, &format!("{key}:reserved")).await, 0, "every reservation settled");
    // Room again: 16,666 spent of 50,000.
    let again = a.reserve(&event_id(), &bounds, PicoUsd(30_000_000), Duration::from_secs(60)).await.unwrap();
    assert_eq!(again, Reservation::Held);
}

#[tokio::test]
async fn a_reservation_never_settled_expires_by_redis_clock() {
    let redis = Redis::start().await;
    let ledger = ledger(&redis, 1000);
    let bounds = vec![Bound { key: "payi:nusd:limit:test/expiry:0:all".into(), max_nano: 10 }];
    let hold = Duration::from_millis(300);
    // A replica that dies mid-request leaves its reservation behind.
    assert_eq!(ledger.reserve(&event_id(), &bounds, PicoUsd(10_000), hold).await.unwrap(), Reservation::Held);
    assert!(matches!(
        ledger.reserve(&event_id(), &bounds, PicoUsd(1_000), hold).await.unwrap(),
        Reservation::Refused { .. }
    ));
    eventually("the abandoned reservation to expire", || async {
        (ledger.reserve(&event_id(), &bounds, PicoUsd(10_000), hold).await.unwrap() == Reservation::Held).then_some(())
    })
    .await;
}
