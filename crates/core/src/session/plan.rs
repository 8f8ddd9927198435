//! The orchestrator's model: how many sessions should be local, from what
//! the node measured.
//!
//! The paper's first scenario (local/remote-phases, section III) as a
//! queueing model with measured inputs. A local session keeps one instance
//! slot for itself and serves its calls one at a time (an M/M/1 queue with
//! the local service time); every other call shares the slots left (an
//! M/M/c queue with the remote service time, which includes moving the
//! state to and from the remote store). Service times are not assumed
//! exponential: their measured variability scales the waits (Allen–Cunneen's
//! M/G/c approximation, exact for M/G/1). Making a session local saves its
//! calls the remote-store cost but takes a slot from everyone else. The
//! plan is the number of local sessions that minimises the predicted mean
//! latency over all calls, the sessions being the busiest ones (those whose
//! client or guest asked for local-state first).

/// What the plan is made from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Instance slots on the node.
    pub slots: usize,
    /// Local places (`--max-local-sessions`).
    pub max_local: usize,
    /// Mean time a remote-state call holds its instance, seconds.
    pub remote_service: f64,
    /// Mean time a remote-state call takes after it let its instance go
    /// (its commit to the remote store), seconds.
    pub remote_after: f64,
    /// Mean time a local-state call holds its instance, seconds.
    pub local_service: f64,
    /// Squared coefficients of variation (variance / mean²) of the remote
    /// and the local service times: 1 for exponential ones, 0 for constant.
    pub remote_scv: f64,
    /// See `remote_scv`.
    pub local_scv: f64,
    /// Calls per second of calls that belong to no candidate session
    /// (stateless calls, sessions this node does not own).
    pub other_rate: f64,
    /// The candidates' call rates, in the order they would be made local.
    pub rates: Vec<f64>,
}

/// The plan: how many of the candidates should be local.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// The first `local` candidates should be local.
    pub local: usize,
    /// The predicted mean latency then, seconds (infinite: overloaded
    /// whatever is chosen).
    pub predicted: f64,
}

/// The predicted mean latency with the first `k` candidates local, seconds;
/// infinite when a queue would grow without bound.
pub fn mean_latency(inputs: &Inputs, k: usize) -> f64 {
    let total: f64 = inputs.rates.iter().sum::<f64>() + inputs.other_rate;
    if total <= 0.0 {
        return 0.0;
    }
    let k = k.min(inputs.rates.len());
    let mut weighted = 0.0;
    for &rate in &inputs.rates[..k] {
        let busy = rate * inputs.local_service;
        if busy >= 1.0 {
            return f64::INFINITY;
        }
        // M/G/1 (Pollaczek–Khinchine).
        let wait = busy * inputs.local_service * (1.0 + inputs.local_scv) / (2.0 * (1.0 - busy));
        weighted += rate * (inputs.local_service + wait);
    }
    let remote_rate: f64 = inputs.rates[k..].iter().sum::<f64>() + inputs.other_rate;
    if remote_rate > 0.0 {
        let servers = inputs.slots.saturating_sub(k);
        match queue_wait(servers, remote_rate, inputs.remote_service) {
            Some(wait) => {
                let wait = wait * (1.0 + inputs.remote_scv) / 2.0;
                weighted += remote_rate * (inputs.remote_service + inputs.remote_after + wait)
            }
            None => return f64::INFINITY,
        }
    }
    weighted / total
}

/// Calls per second the node could not keep up with, with the first `k`
/// candidates local: how fast its queues would grow (0 when stable).
pub fn backlog(inputs: &Inputs, k: usize) -> f64 {
    let k = k.min(inputs.rates.len());
    let over = |rate: f64, servers: usize, service: f64| {
        if service <= 0.0 {
            return 0.0;
        }
        (rate - servers as f64 / service).max(0.0)
    };
    let local: f64 = inputs.rates[..k]
        .iter()
        .map(|&r| over(r, 1, inputs.local_service))
        .sum();
    let remote_rate: f64 = inputs.rates[k..].iter().sum::<f64>() + inputs.other_rate;
    let servers = inputs.slots.saturating_sub(k);
    local + over(remote_rate, servers, inputs.remote_service)
}

/// Local sessions beyond the fewest predicted within this fraction of the
/// best are not worth their slots: near its minimum the predicted latency
/// is flat, past it a cliff (the shared slots run short), so a split on the
/// flat's near side costs little and leaves room for a rise in the load.
pub const HEADROOM: f64 = 0.02;

/// Picks the number of local sessions: the fewest predicted within
/// [`HEADROOM`] of the lowest latency; when every choice overloads the
/// node, the one that leaves the fewest calls a second unserved.
/// `current` is kept unless another choice is better by more than `margin`
/// (a fraction: measurements are noisy and every move costs a state
/// transfer), or when it holds more local sessions than the choice.
pub fn choose(inputs: &Inputs, current: usize, margin: f64) -> Plan {
    // A session is never made local on its own slot if that leaves no slot
    // for anything else.
    let most = inputs
        .max_local
        .min(inputs.rates.len())
        .min(inputs.slots.saturating_sub(1));
    // Stable choices by latency, then unstable ones by how overloaded.
    let score = |k: usize| {
        let latency = mean_latency(inputs, k);
        if latency.is_finite() {
            (0, latency)
        } else {
            (1, backlog(inputs, k))
        }
    };
    let scores: Vec<(u8, f64)> = (0..=most).map(score).collect();
    let mut best = 0;
    for (k, s) in scores.iter().enumerate() {
        let b = scores[best];
        if s.0 < b.0 || (s.0 == b.0 && s.1 < b.1) {
            best = k;
        }
    }
    let (class, lowest) = scores[best];
    let chosen = if class == 0 {
        scores
            .iter()
            .position(|s| s.0 == 0 && s.1 <= lowest * (1.0 + HEADROOM))
            .unwrap_or(best)
    } else {
        best
    };
    let current = current.min(most);
    let now = scores[current];
    let good_enough = now.0 == class && now.1 <= lowest * (1.0 + margin);
    let local = if good_enough && (class == 1 || current <= chosen) {
        current
    } else {
        chosen
    };
    Plan {
        local,
        predicted: mean_latency(inputs, local),
    }
}

/// Mean time a call waits for one of `servers` slots (M/M/c, Erlang C):
/// `None` when the slots cannot keep up.
pub fn queue_wait(servers: usize, arrival: f64, service: f64) -> Option<f64> {
    let offered = arrival * service;
    if servers == 0 || offered >= servers as f64 {
        return None;
    }
    // Erlang B by its recursion (stable for any number of servers), then C.
    let mut blocking = 1.0;
    for n in 1..=servers {
        blocking = offered * blocking / (n as f64 + offered * blocking);
    }
    let load = offered / servers as f64;
    let waits = blocking / (1.0 - load * (1.0 - blocking));
    Some(waits * service / (servers as f64 - offered))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn one_server_is_mm1() {
        // M/M/1: Wq = rho * S / (1 - rho).
        let w = queue_wait(1, 0.5, 1.0).unwrap();
        assert!(close(w, 1.0), "{w}");
        assert_eq!(queue_wait(1, 1.0, 1.0), None);
        assert_eq!(queue_wait(0, 0.1, 1.0), None);
    }

    #[test]
    fn two_servers_match_the_closed_form() {
        // M/M/2 with a = 1: P(wait) = 1/3, Wq = P * S / (c - a) = 1/3.
        let w = queue_wait(2, 1.0, 1.0).unwrap();
        assert!(close(w, 1.0 / 3.0), "{w}");
    }

    /// The paper's scenario, in its units: local calls take 1 s, remote
    /// ones 3 s, 40 containers, 4.5 calls a minute per client.
    fn paper(clients: usize) -> Inputs {
        Inputs {
            slots: 40,
            max_local: 40,
            remote_service: 3.0,
            remote_after: 0.0,
            local_service: 1.0,
            remote_scv: 1.0,
            local_scv: 1.0,
            other_rate: 0.0,
            rates: vec![4.5 / 60.0; clients],
        }
    }

    /// The lowest predicted latency over every split.
    fn lowest(inputs: &Inputs) -> f64 {
        (0..=inputs.slots)
            .map(|k| mean_latency(inputs, k))
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn the_best_split_is_inside_and_shifts_with_the_population() {
        // Fig. 3: latency falls as sessions go local, reaches a minimum, then
        // rises sharply as the shared slots run out.
        let few = choose(&paper(60), 0, 0.0);
        let many = choose(&paper(100), 0, 0.0);
        for (clients, plan) in [(60, few), (100, many)] {
            let inputs = paper(clients);
            assert!(plan.local > 0 && plan.local < 40, "{clients}: {plan:?}");
            assert!(plan.predicted < mean_latency(&inputs, 0));
            assert!(plan.predicted <= lowest(&inputs) * (1.0 + HEADROOM));
            assert!(plan.predicted < mean_latency(&inputs, plan.local - 1));
        }
        // 100 clients cannot all be served remote on 40 slots (100 * 0.075 *
        // 3 = 22.5 busy), nor can too many be local.
        assert!(mean_latency(&paper(100), 0).is_finite());
        assert!(mean_latency(&paper(100), 39).is_infinite());
        assert_ne!(few.local, many.local);
    }

    #[test]
    fn a_flat_minimum_is_taken_at_its_near_side() {
        let inputs = paper(60);
        let lowest = lowest(&inputs);
        let plan = choose(&inputs, 0, 0.0);
        // The fewest local sessions within the headroom of the lowest…
        assert!(plan.predicted <= lowest * (1.0 + HEADROOM), "{plan:?}");
        assert!(mean_latency(&inputs, plan.local - 1) > lowest * (1.0 + HEADROOM));
        // …which is fewer than the lowest's own: the minimum is flat.
        let at_lowest = (0..40)
            .find(|&k| mean_latency(&inputs, k) == lowest)
            .unwrap();
        assert!(plan.local < at_lowest, "{plan:?}, lowest at {at_lowest}");
        // A node holding more local sessions than that gives the extra ones
        // up even when they are predicted a little better.
        let kept = choose(&inputs, at_lowest, 0.5);
        assert_eq!(kept.local, plan.local);
    }

    #[test]
    fn overloaded_whatever_it_does_it_overloads_least() {
        // Each session alone keeps 1.3 slots busy remote-state: the pool
        // cannot keep up however many are local, but each made local frees
        // more than the slot it takes.
        let inputs = Inputs {
            slots: 4,
            max_local: 10,
            remote_service: 0.052,
            remote_after: 0.0,
            local_service: 0.0015,
            remote_scv: 1.0,
            local_scv: 1.0,
            other_rate: 0.0,
            rates: vec![25.0; 4],
        };
        assert!((0..4).all(|k| mean_latency(&inputs, k).is_infinite()));
        assert!(backlog(&inputs, 3) < backlog(&inputs, 0));
        let plan = choose(&inputs, 0, 0.05);
        assert_eq!(plan.local, 3, "{plan:?}");
        assert!(plan.predicted.is_infinite());
    }

    #[test]
    fn steadier_service_times_wait_less() {
        let exponential = paper(100);
        let constant = Inputs {
            remote_scv: 0.0,
            local_scv: 0.0,
            ..paper(100)
        };
        let k = choose(&exponential, 0, 0.0).local;
        assert!(mean_latency(&constant, k) < mean_latency(&exponential, k));
        // Less waiting makes room for more local sessions before the shared
        // slots run out.
        assert!(choose(&constant, 0, 0.0).local >= k);
    }

    #[test]
    fn a_margin_keeps_a_good_enough_split() {
        let inputs = paper(60);
        let best = choose(&inputs, 0, 0.0);
        let near = best.local - 1;
        let kept = choose(&inputs, near, 0.5);
        assert_eq!(kept.local, near);
        // Without the margin the better split wins.
        assert_eq!(choose(&inputs, near, 0.0).local, best.local);
    }

    #[test]
    fn nothing_to_decide_without_calls() {
        let plan = choose(&Inputs::default(), 0, 0.0);
        assert_eq!(plan.local, 0);
        assert_eq!(plan.predicted, 0.0);
    }
}
