//! Picking an endpoint from a snapshot: power of two random choices (the default: avoids a
//! slow or stuck endpoint without global coordination), or round-robin.
//!
//! P2C compares a *cost*: requests in flight, multiplied by the endpoint's recent-failure
//! penalty (`Health::penalty`). On requests in flight alone an endpoint that fails at once
//! (a 503 while it starts, a reset) would look idle, hence best, and draw the traffic it
//! fails; with the penalty it draws almost none until the penalty has decayed (about two
//! seconds), and then a trickle that renews the penalty while it still fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::endpoints::{Endpoint, EndpointSet};
use crate::config::Balance;
use crate::runtime::random::random_below;

/// What P2C minimises: requests in flight (plus one, so that the penalty weighs on an idle
/// endpoint too), times one plus the recent-failure penalty.
pub fn cost(e: &Endpoint) -> u64 {
    let in_flight = e.in_flight.load(Ordering::Relaxed) as u64;
    (in_flight + 1).saturating_mul(1 + e.health.penalty())
}

/// The common case, O(1): the better of two random endpoints of the set (P2C), or the next
/// one in turn (round-robin), when `keep` accepts both (that one). `None` otherwise: the
/// caller then scans with `pick_where`. (Taking the one acceptable endpoint of a pair would
/// skip the comparison: paired with an ejected endpoint, a penalised one would win.)
pub fn pick(
    set: &EndpointSet,
    policy: Balance,
    rr: &AtomicUsize,
    keep: impl Fn(&Endpoint) -> bool,
) -> Option<Arc<Endpoint>> {
    let endpoints = &set.endpoints;
    let chosen = match endpoints.len() {
        0 => return None,
        1 => endpoints.first(),
        n => match policy {
            Balance::RoundRobin => endpoints.get(rr.fetch_add(1, Ordering::Relaxed) % n),
            Balance::P2c => {
                let a = random_below(n);
                let mut b = random_below(n - 1);
                if b >= a {
                    b += 1;
                }
                match (endpoints.get(a), endpoints.get(b)) {
                    (Some(x), Some(y)) if keep(x) && keep(y) => {
                        Some(if cost(y) < cost(x) { y } else { x })
                    }
                    _ => None,
                }
            }
        },
    }?;
    keep(chosen).then(|| Arc::clone(chosen))
}

/// Pick among the endpoints that `keep` accepts (not yet tried, not ejected...), or `None`
/// when there is none. Sets are small (tens), so scans are cheap; the common case of a
/// first try at a healthy backend goes through `pick` instead.
pub fn pick_where(
    set: &EndpointSet,
    policy: Balance,
    rr: &AtomicUsize,
    keep: impl Fn(&Endpoint) -> bool,
) -> Option<Arc<Endpoint>> {
    let fresh = |e: &&Arc<Endpoint>| keep(e);
    let count = set.endpoints.iter().filter(fresh).count();
    if count == 0 {
        return None;
    }
    let nth = |i: usize| set.endpoints.iter().filter(fresh).nth(i);
    let chosen = match policy {
        Balance::RoundRobin => nth(rr.fetch_add(1, Ordering::Relaxed) % count),
        Balance::P2c if count == 1 => nth(0),
        Balance::P2c => {
            let a = random_below(count);
            let mut b = random_below(count - 1);
            if b >= a {
                b += 1;
            }
            match (nth(a), nth(b)) {
                (Some(x), Some(y)) => Some(if cost(y) < cost(x) { y } else { x }),
                (x, y) => x.or(y),
            }
        }
    };
    chosen.map(Arc::clone)
}
